//! Client → gateway frames.
//!
//! Parsing goes in steps so that every error carries as much as could be read: the size first
//! (`too-large`, no id), then JSON syntax, then the `id`, then the `type`, then the fields.

use serde::Deserialize;
use serde::de::DeserializeOwned;
use switchboard_gateway::{ChatState, MessageKind, Platform, ReceiptStatus, Show, SubscriptionAction};

use crate::code::ErrorCode;

/// Why a frame was refused, with the client's id when it could be read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FrameError {
    pub id: Option<String>,
    pub code: ErrorCode,
    pub text: String,
}

impl FrameError {
    pub fn new(id: Option<String>, code: ErrorCode, text: impl Into<String>) -> Self {
        Self { id, code, text: text.into() }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum ClientFrame {
    Message(MessageFrame),
    Presence(PresenceFrame),
    Subscription(SubscriptionFrame),
    Receipt(ReceiptFrame),
    ChatState(ChatStateFrame),
    DeviceRegister(DeviceFrame),
    DeviceUnregister(DeviceFrame),
}

impl ClientFrame {
    pub fn id(&self) -> Option<&str> {
        match self {
            Self::Message(f) => Some(&f.id),
            Self::Presence(f) => f.id.as_deref(),
            Self::Subscription(f) => f.id.as_deref(),
            Self::Receipt(f) => f.id.as_deref(),
            Self::ChatState(f) => f.id.as_deref(),
            Self::DeviceRegister(f) | Self::DeviceUnregister(f) => f.id.as_deref(),
        }
    }

    /// Moves the client's `id` out of the frame (leaving it empty), for a caller that answers
    /// with it after the frame has become an envelope.
    pub fn take_id(&mut self) -> Option<String> {
        match self {
            Self::Message(f) => Some(std::mem::take(&mut f.id)),
            Self::Presence(f) => f.id.take(),
            Self::Subscription(f) => f.id.take(),
            Self::Receipt(f) => f.id.take(),
            Self::ChatState(f) => f.id.take(),
            Self::DeviceRegister(f) | Self::DeviceUnregister(f) => f.id.take(),
        }
    }

    /// The `from` the client claimed, if any; it must be the client herself.
    pub fn claimed_from(&self) -> Option<&str> {
        match self {
            Self::Message(f) => f.from.as_deref(),
            Self::Presence(f) => f.from.as_deref(),
            Self::Subscription(f) => f.from.as_deref(),
            Self::Receipt(f) => f.from.as_deref(),
            Self::ChatState(f) => f.from.as_deref(),
            Self::DeviceRegister(f) | Self::DeviceUnregister(f) => f.from.as_deref(),
        }
    }

    pub fn type_name(&self) -> &'static str {
        match self {
            Self::Message(_) => "message",
            Self::Presence(_) => "presence",
            Self::Subscription(f) => match f.action {
                SubscriptionAction::Subscribe => "subscribe",
                SubscriptionAction::Subscribed => "subscribed",
                SubscriptionAction::Unsubscribe => "unsubscribe",
                SubscriptionAction::Unsubscribed => "unsubscribed",
            },
            Self::Receipt(_) => "receipt",
            Self::ChatState(_) => "chatstate",
            Self::DeviceRegister(_) => "device.register",
            Self::DeviceUnregister(_) => "device.unregister",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct MessageFrame {
    pub id: String,
    pub to: String,
    pub body: String,
    #[serde(default)]
    pub thread: Option<String>,
    #[serde(default)]
    pub subject: Option<String>,
    #[serde(default)]
    pub kind: MessageKind,
    #[serde(default)]
    pub from: Option<String>,
}

/// A `message` frame, `type` included, for the one-pass reading of [`parse_client_frame`].
/// Not `#[serde(flatten)]` over [`MessageFrame`]: that buffers every field first, which is the
/// cost this pass avoids. Unknown fields send the frame the careful way: skipping them here would
/// not apply its limits (nesting depth) to what they hold.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TaggedMessage {
    #[serde(rename = "type")]
    _type: MessageTag,
    id: String,
    to: String,
    body: String,
    #[serde(default)]
    thread: Option<String>,
    #[serde(default)]
    subject: Option<String>,
    #[serde(default)]
    kind: MessageKind,
    #[serde(default)]
    from: Option<String>,
}

#[derive(Deserialize)]
enum MessageTag {
    #[serde(rename = "message")]
    Message,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct PresenceFrame {
    #[serde(default)]
    pub id: Option<String>,
    pub show: Show,
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub from: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct SubscriptionFrame {
    /// Set from `type` after the fields are read.
    #[serde(skip, default = "placeholder_action")]
    pub action: SubscriptionAction,
    #[serde(default)]
    pub id: Option<String>,
    pub to: String,
    #[serde(default)]
    pub from: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct ReceiptFrame {
    #[serde(default)]
    pub id: Option<String>,
    pub to: String,
    pub of: String,
    pub status: ReceiptStatus,
    #[serde(default)]
    pub from: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct ChatStateFrame {
    #[serde(default)]
    pub id: Option<String>,
    pub to: String,
    pub state: ChatState,
    #[serde(default)]
    pub from: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct DeviceFrame {
    #[serde(default)]
    pub id: Option<String>,
    pub platform: Platform,
    pub token: String,
    #[serde(default)]
    pub app: Option<String>,
    #[serde(default)]
    pub os: Option<String>,
    #[serde(default)]
    pub from: Option<String>,
}

/// Reads one client frame of at most `max_bytes`.
pub fn parse_client_frame(payload: &[u8], max_bytes: usize) -> Result<ClientFrame, FrameError> {
    // Most frames are well-formed messages: read those in one pass. Anything else, or anything
    // this pass refuses (duplicate keys, a missing field, another type), goes the careful way
    // below, which finds the same frame or the precise error.
    // The text is checked as UTF-8 once, here, rather than string by string as `from_slice` does.
    if payload.len() <= max_bytes
        && let Ok(text) = std::str::from_utf8(payload)
        && let Ok(TaggedMessage { id, to, body, thread, subject, kind, from, .. }) = serde_json::from_str(text)
        && !id.is_empty()
    {
        return Ok(ClientFrame::Message(MessageFrame { id, to, body, thread, subject, kind, from }));
    }
    parse_carefully(payload, max_bytes)
}

/// Reads any frame in steps, so that an error says as much as could be read.
fn parse_carefully(payload: &[u8], max_bytes: usize) -> Result<ClientFrame, FrameError> {
    let (object, id) = parse_object(payload, max_bytes)?;
    let type_name = match object.get("type") {
        Some(serde_json::Value::String(t)) => t.clone(),
        Some(_) => return Err(FrameError::new(id, ErrorCode::BadRequest, "`type` must be a string")),
        None => return Err(FrameError::new(id, ErrorCode::BadRequest, "missing field `type`")),
    };
    let value = serde_json::Value::Object(object);
    let frame = match type_name.as_str() {
        "message" => ClientFrame::Message(fields(value, &id)?),
        "presence" => ClientFrame::Presence(fields(value, &id)?),
        "subscribe" | "subscribed" | "unsubscribe" | "unsubscribed" => {
            let mut frame: SubscriptionFrame = fields(value, &id)?;
            frame.action = match type_name.as_str() {
                "subscribe" => SubscriptionAction::Subscribe,
                "subscribed" => SubscriptionAction::Subscribed,
                "unsubscribe" => SubscriptionAction::Unsubscribe,
                _ => SubscriptionAction::Unsubscribed,
            };
            ClientFrame::Subscription(frame)
        }
        "receipt" => ClientFrame::Receipt(fields(value, &id)?),
        "chatstate" => ClientFrame::ChatState(fields(value, &id)?),
        "device.register" => ClientFrame::DeviceRegister(fields(value, &id)?),
        "device.unregister" => ClientFrame::DeviceUnregister(fields(value, &id)?),
        other => {
            return Err(FrameError::new(
                id,
                ErrorCode::BadRequest,
                format!("unknown frame type `{}`", truncate(other, 64)),
            ));
        }
    };
    if let ClientFrame::Message(m) = &frame
        && m.id.is_empty() {
            return Err(FrameError::new(None, ErrorCode::BadRequest, "`id` must not be empty"));
        }
    Ok(frame)
}

/// Reads the `{"type":"auth","token":"…"}` frame a WebSocket client may open with; returns the
/// token.
pub fn parse_auth_frame(payload: &[u8], max_bytes: usize) -> Result<String, FrameError> {
    let (object, id) = parse_object(payload, max_bytes)?;
    if object.get("type").and_then(|t| t.as_str()) != Some("auth") {
        return Err(FrameError::new(id, ErrorCode::Forbidden, "authenticate first: {\"type\":\"auth\",\"token\":\"…\"}"));
    }
    match object.get("token") {
        Some(serde_json::Value::String(token)) => Ok(token.clone()),
        _ => Err(FrameError::new(id, ErrorCode::Forbidden, "missing field `token`")),
    }
}

fn parse_object(
    payload: &[u8],
    max_bytes: usize,
) -> Result<(serde_json::Map<String, serde_json::Value>, Option<String>), FrameError> {
    if payload.len() > max_bytes {
        return Err(FrameError::new(
            None,
            ErrorCode::TooLarge,
            format!("frame of {} bytes exceeds the limit of {max_bytes}", payload.len()),
        ));
    }
    let value: serde_json::Value = serde_json::from_slice(payload)
        .map_err(|e| FrameError::new(None, ErrorCode::BadRequest, format!("malformed JSON: {e}")))?;
    let serde_json::Value::Object(object) = value else {
        return Err(FrameError::new(None, ErrorCode::BadRequest, "a frame must be a JSON object"));
    };
    let id = match object.get("id") {
        Some(serde_json::Value::String(id)) => Some(id.clone()),
        Some(serde_json::Value::Number(n)) => Some(n.to_string()),
        _ => None,
    };
    Ok((object, id))
}

fn placeholder_action() -> SubscriptionAction {
    SubscriptionAction::Subscribe
}

fn fields<T: DeserializeOwned>(value: serde_json::Value, id: &Option<String>) -> Result<T, FrameError> {
    serde_json::from_value(value).map_err(|e| FrameError::new(id.clone(), ErrorCode::BadRequest, e.to_string()))
}

fn truncate(text: &str, max: usize) -> &str {
    match text.char_indices().nth(max) {
        Some((index, _)) => &text[..index],
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = 65_536;

    fn error(payload: &str) -> FrameError {
        parse_client_frame(payload.as_bytes(), MAX).expect_err("should be refused")
    }

    #[test]
    fn a_full_message_frame_is_read() {
        let frame = parse_client_frame(
            br#"{"type":"message","id":"c1","to":"bob","body":"hi <&>","thread":"t","subject":"s","kind":"normal","extra":1}"#,
            MAX,
        )
        .expect("valid");
        let ClientFrame::Message(m) = frame else { panic!("not a message") };
        assert_eq!((m.id.as_str(), m.to.as_str(), m.body.as_str()), ("c1", "bob", "hi <&>"));
        assert_eq!(m.kind, MessageKind::Normal);
        assert_eq!(m.thread.as_deref(), Some("t"));
    }

    #[test]
    fn the_one_pass_reading_of_messages_agrees_with_the_careful_one() {
        let deep = format!(r#"{{"type":"message","id":"d","to":"bob","body":"b","extra":{}1{}}}"#, "[".repeat(200), "]".repeat(200));
        for payload in [
            r#"{"type":"message","id":"1","to":"bob","body":"hi"}"#,
            r#"{"body":"h\u00e9\"","to":"bob","type":"message","id":"2","thread":null,"kind":"normal","extra":{"a":[1,2]}}"#,
            r#"{"type":"message","id":"3","to":"bob","body":"first","body":"second"}"#,
            r#"{"type":"message","id":"","to":"bob","body":"hi"}"#,
            r#"{"type":"message","id":4,"to":"bob","body":"hi"}"#,
            r#"{"type":"message","id":"5","to":"bob"}"#,
            r#"{"type":"message","id":"6","to":"bob","body":"hi","kind":"shout"}"#,
            r#"{"type":"message","id":"7","to":"bob","body":"hi"} trailing"#,
            r#"{"type":"presence","id":"8","show":"away"}"#,
            deep.as_str(),
        ] {
            assert_eq!(
                parse_client_frame(payload.as_bytes(), MAX),
                parse_carefully(payload.as_bytes(), MAX),
                "{payload}"
            );
        }
        let oversize = format!(r#"{{"type":"message","id":"9","to":"bob","body":"{}"}}"#, "x".repeat(MAX));
        assert_eq!(parse_client_frame(oversize.as_bytes(), MAX).map_err(|e| e.code), Err(ErrorCode::TooLarge));
    }

    #[test]
    fn every_client_type_is_read() {
        for (payload, name) in [
            (r#"{"type":"presence","show":"dnd","status":"busy"}"#, "presence"),
            (r#"{"type":"subscribe","to":"bob"}"#, "subscribe"),
            (r#"{"type":"subscribed","to":"bob"}"#, "subscribed"),
            (r#"{"type":"unsubscribe","to":"bob"}"#, "unsubscribe"),
            (r#"{"type":"unsubscribed","to":"bob"}"#, "unsubscribed"),
            (r#"{"type":"receipt","to":"bob","of":"01J","status":"displayed"}"#, "receipt"),
            (r#"{"type":"chatstate","to":"bob","state":"composing"}"#, "chatstate"),
            (r#"{"type":"device.register","platform":"fcm","token":"t","app":"a"}"#, "device.register"),
            (r#"{"type":"device.unregister","platform":"apns","token":"t"}"#, "device.unregister"),
        ] {
            let frame = parse_client_frame(payload.as_bytes(), MAX).expect(payload);
            assert_eq!(frame.type_name(), name);
        }
    }

    #[test]
    fn a_message_whose_text_is_not_utf8_is_malformed() {
        let mut payload = br#"{"type":"message","id":"u1","to":"bob","body":""#.to_vec();
        payload.extend_from_slice(b"caf\xe9\"}");
        let e = parse_client_frame(&payload, 65_536).expect_err("refused");
        assert_eq!(e.code, ErrorCode::BadRequest);
        assert!(e.text.contains("malformed JSON"), "{}", e.text);
    }

    #[test]
    fn errors_carry_the_id_whenever_it_could_be_read() {
        let e = error(r#"{"type":"message","id":"c9","to":"bob"}"#);
        assert_eq!((e.code, e.id.as_deref()), (ErrorCode::BadRequest, Some("c9")));
        assert!(e.text.contains("body"), "{}", e.text);

        let e = error(r#"{"type":"teleport","id":"c2"}"#);
        assert_eq!((e.code, e.id.as_deref()), (ErrorCode::BadRequest, Some("c2")));

        let e = error(r#"{"id":"c3"}"#);
        assert_eq!((e.code, e.id.as_deref()), (ErrorCode::BadRequest, Some("c3")));

        let e = error(r#"{"type":"presence","id":"c4","show":"sleeping"}"#);
        assert_eq!((e.code, e.id.as_deref()), (ErrorCode::BadRequest, Some("c4")));

        let e = error(r#"{"type":"message","to":"bob","body":"no id"}"#);
        assert_eq!(e.code, ErrorCode::BadRequest);
    }

    #[test]
    fn malformed_and_non_object_json_is_a_bad_request() {
        for payload in ["{", "[]", "42", "\"message\"", "", "\u{0}"] {
            let e = error(payload);
            assert_eq!((e.code, e.id), (ErrorCode::BadRequest, None), "{payload:?}");
        }
    }

    #[test]
    fn oversize_frames_are_too_large_without_an_id() {
        let body = "x".repeat(MAX);
        let payload = format!(r#"{{"type":"message","id":"c1","to":"bob","body":"{body}"}}"#);
        let e = error(&payload);
        assert_eq!((e.code, e.id), (ErrorCode::TooLarge, None));
    }

    #[test]
    fn the_auth_frame_yields_its_token() {
        assert_eq!(parse_auth_frame(br#"{"type":"auth","token":"abc"}"#, MAX), Ok("abc".into()));
        let e = parse_auth_frame(br#"{"type":"message","id":"x"}"#, MAX).expect_err("not auth");
        assert_eq!(e.code, ErrorCode::Forbidden);
    }
}
