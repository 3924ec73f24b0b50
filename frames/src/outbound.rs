//! Gateway → client frames.

use serde::Serialize;
use switchboard_gateway::{ChatState, MessageKind, ReceiptStatus, Show};

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
