//! Gateway → client frames.

use serde::{Serialize, Serializer};
use switchboard_gateway::{Address, ChatState, Domain, Envelope, MessageBody, MessageKind, ReceiptStatus, Show};

use crate::code::ErrorCode;

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "type")]
pub enum ServerFrame {
    #[serde(rename = "ready")]
    Ready { jid: String },
    #[serde(rename = "ack")]
    Ack {
        id: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        msg: Option<String>,
    },
    #[serde(rename = "error")]
    Error {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        code: ErrorCode,
        text: String,
        /// For a message that failed after its `ack` (e.g. refused by a remote server): the
        /// gateway id from that `ack`.
        #[serde(skip_serializing_if = "Option::is_none")]
        msg: Option<String>,
    },
    #[serde(rename = "message")]
    Message {
        id: String,
        from: String,
        to: String,
        body: String,
        ts: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        thread: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        subject: Option<String>,
        /// Only written for `normal`: `chat` is the default every client assumes.
        #[serde(skip_serializing_if = "is_chat")]
        kind: MessageKind,
    },
    #[serde(rename = "presence")]
    Presence {
        from: String,
        show: Show,
        #[serde(skip_serializing_if = "Option::is_none")]
        status: Option<String>,
    },
    #[serde(rename = "subscribe")]
    Subscribe { id: String, from: String, to: String },
    #[serde(rename = "subscribed")]
    Subscribed { id: String, from: String, to: String },
    #[serde(rename = "unsubscribe")]
    Unsubscribe { id: String, from: String, to: String },
    #[serde(rename = "unsubscribed")]
    Unsubscribed { id: String, from: String, to: String },
    #[serde(rename = "receipt")]
    Receipt {
        id: String,
        from: String,
        to: String,
        of: String,
        status: ReceiptStatus,
    },
    #[serde(rename = "chatstate")]
    ChatState { from: String, to: String, state: ChatState },
}

fn is_chat(kind: &MessageKind) -> bool {
    *kind == MessageKind::Chat
}

impl ServerFrame {
    pub fn error(id: Option<String>, code: ErrorCode, text: impl Into<String>) -> Self {
        Self::Error { id, code, text: text.into(), msg: None }
    }

    pub fn type_name(&self) -> &'static str {
        match self {
            Self::Ready { .. } => "ready",
            Self::Ack { .. } => "ack",
            Self::Error { .. } => "error",
            Self::Message { .. } => "message",
            Self::Presence { .. } => "presence",
            Self::Subscribe { .. } => "subscribe",
            Self::Subscribed { .. } => "subscribed",
            Self::Unsubscribe { .. } => "unsubscribe",
            Self::Unsubscribed { .. } => "unsubscribed",
            Self::Receipt { .. } => "receipt",
            Self::ChatState { .. } => "chatstate",
        }
    }

    pub fn to_json(&self) -> String {
        // Serialising these plain structs cannot fail; fall back to an `internal` error frame
        // rather than panicking if it ever does.
        serde_json::to_string(self).unwrap_or_else(|_| {
            r#"{"type":"error","code":"internal","text":"cannot encode frame"}"#.to_owned()
        })
    }
}

/// The `message` frame for an envelope, written straight from it: the same JSON as
/// [`ServerFrame::Message`] from `envelope_to_frame`, without copying its fields into one first.
/// Every delivered message goes through here.
pub(crate) fn message_json(envelope: &Envelope, message: &MessageBody, domain: &Domain) -> String {
    let view = MessageView {
        id: envelope.id.as_str(),
        from: Shown(&envelope.from, domain),
        to: Shown(&envelope.to, domain),
        body: &message.body,
        ts: envelope.ts.to_rfc3339(),
        thread: message.thread.as_deref(),
        subject: message.subject.as_deref(),
        kind: message.kind,
    };
    let mut json = Vec::with_capacity(160 + message.body.len());
    match serde_json::to_writer(&mut json, &view) {
        // serde_json writes UTF-8 only; the check is a formality.
        Ok(()) => String::from_utf8(json).unwrap_or_default(),
        Err(_) => r#"{"type":"error","code":"internal","text":"cannot encode frame"}"#.to_owned(),
    }
}

#[derive(Serialize)]
#[serde(tag = "type", rename = "message")]
struct MessageView<'a> {
    id: &'a str,
    from: Shown<'a>,
    to: Shown<'a>,
    body: &'a str,
    ts: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    thread: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    subject: Option<&'a str>,
    #[serde(skip_serializing_if = "is_chat")]
    kind: MessageKind,
}

/// An address as clients see it (`Address::display`), written without an intermediate string.
struct Shown<'a>(&'a Address, &'a Domain);

impl Serialize for Shown<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Address::User { user } => serializer.collect_str(&format_args!("{user}@{}", self.1.as_str())),
            Address::Remote(remote) => serializer.collect_str(remote),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::convert::envelope_to_frame;
    use switchboard_gateway::{Body, UserId};

    #[test]
    fn a_message_written_directly_is_the_frame_clients_always_got() {
        let domain = Domain::new("im.example.com");
        let alice = Address::user(UserId::parse("alice").expect("valid"));
        let remote = Address::parse("juliet@capulet.example/balcony", &domain).expect("valid");
        let bodies = [
            MessageBody { body: "hi".into(), thread: None, subject: None, kind: MessageKind::Chat },
            MessageBody {
                body: "h\u{e9}llo \"<b>\"\n\u{1F44B} \\ \u{7f}".into(),
                thread: Some("t\"1".into()),
                subject: Some("s".into()),
                kind: MessageKind::Normal,
            },
        ];
        for body in bodies {
            for (from, to) in [(alice.clone(), remote.clone()), (remote.clone(), alice.clone())] {
                let envelope = Envelope::new(from, to, Body::Message(body.clone()));
                let expected = envelope_to_frame(&envelope, &domain).expect("a frame").to_json();
                assert_eq!(message_json(&envelope, &body, &domain), expected);
            }
        }
    }
}
