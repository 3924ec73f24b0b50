//! Gateway → client frames.

use std::fmt::Write;

use serde::Serialize;
use switchboard_gateway::{Address, ChatState, Domain, Envelope, MessageBody, MessageKind, ReceiptStatus, Show};

use crate::code::ErrorCode;
use crate::json;

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
        if let Self::Ack { id, msg } = self {
            return ack_json(id, msg.as_deref());
        }
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
    let mut json = String::with_capacity(160 + message.body.len());
    json.push_str(r#"{"type":"message","id":"#);
    json::push_string(&mut json, envelope.id.as_str());
    json.push_str(r#","from":"#);
    push_address(&mut json, &envelope.from, domain);
    json.push_str(r#","to":"#);
    push_address(&mut json, &envelope.to, domain);
    json.push_str(r#","body":"#);
    json::push_string(&mut json, &message.body);
    // The timestamp's digits and punctuation need no escaping.
    json.push_str(r#","ts":""#);
    envelope.ts.push_rfc3339(&mut json);
    json.push('"');
    if let Some(thread) = &message.thread {
        json.push_str(r#","thread":"#);
        json::push_string(&mut json, thread);
    }
    if let Some(subject) = &message.subject {
        json.push_str(r#","subject":"#);
        json::push_string(&mut json, subject);
    }
    // Only `normal` is written: `chat` is the default every client assumes.
    if message.kind == MessageKind::Normal {
        json.push_str(r#","kind":"normal""#);
    }
    json.push('}');
    json
}

/// The `ack` frame, the answer to every message a client sends.
fn ack_json(id: &str, msg: Option<&str>) -> String {
    let mut json = String::with_capacity(64 + id.len());
    json.push_str(r#"{"type":"ack","id":"#);
    json::push_string(&mut json, id);
    if let Some(msg) = msg {
        json.push_str(r#","msg":"#);
        json::push_string(&mut json, msg);
    }
    json.push('}');
    json
}

/// An address as clients see it (`Address::display`), written without an intermediate string.
fn push_address(json: &mut String, address: &Address, domain: &Domain) {
    json.push('"');
    match address {
        Address::User { user } => {
            // A user's name is only `[a-z0-9._-]`, nothing JSON escapes: every frame names two.
            json.push_str(user.as_str());
            json.push('@');
            json::push_escaped(json, domain.as_str());
        }
        Address::Remote(remote) => {
            // Writing into a `String` cannot fail.
            let _ = write!(json::Escaping(json), "{remote}");
        }
    }
    json.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::convert::envelope_to_frame;
    use switchboard_gateway::{Body, UserId};

    #[test]
    fn an_ack_written_directly_is_what_serde_writes() {
        for (id, msg) in [("c1", Some("01J")), ("c1", None), ("q\"uo\\te\n", Some("m\u{1}")), ("", None)] {
            let frame = ServerFrame::Ack { id: id.into(), msg: msg.map(str::to_owned) };
            assert_eq!(frame.to_json(), serde_json::to_string(&frame).expect("an ack serialises"));
        }
    }

    #[test]
    fn a_message_written_directly_is_the_frame_clients_always_got() {
        let domain = Domain::new("im.example.com");
        let alice = Address::user(UserId::parse("alice").expect("valid"));
        let remote = Address::parse("juliet@capulet.example/balcony", &domain).expect("valid");
        // A resource may hold what JSON escapes.
        let awkward = Address::parse("romeo@montague.example/\"quoted\"\\res", &domain).expect("valid");
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
            for (from, to) in [(alice.clone(), remote.clone()), (remote.clone(), alice.clone()), (awkward.clone(), alice.clone())] {
                let envelope = Envelope::new(from, to, Body::Message(body.clone()));
                let expected = envelope_to_frame(&envelope, &domain).expect("a frame").to_json();
                assert_eq!(message_json(&envelope, &body, &domain), expected);
            }
        }
    }
}
