//! The canonical envelope: what travels between adapters, whatever protocol it came in on.

use std::fmt::Write;

use serde::{Deserialize, Serialize};

use crate::address::Address;
use crate::id::MessageId;

/// Milliseconds since the Unix epoch, UTC.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timestamp(pub i64);

impl Timestamp {
    pub fn now() -> Self {
        Self::at(std::time::SystemTime::now())
    }

    pub fn at(time: std::time::SystemTime) -> Self {
        // Milliseconds counted from the epoch directly: every envelope is stamped, and a calendar
        // date is only needed when one is written out.
        let millis = |since: std::time::Duration| i64::try_from(since.as_millis()).unwrap_or(i64::MAX);
        match time.duration_since(std::time::UNIX_EPOCH) {
            Ok(since) => Self(millis(since)),
            Err(before) => Self(-millis(before.duration())),
        }
    }

    /// RFC 3339 in UTC with millisecond precision, e.g. `2026-11-21T10:00:00.123Z`.
    pub fn to_rfc3339(self) -> String {
        let mut text = String::with_capacity(24);
        self.push_rfc3339(&mut text);
        text
    }

    /// Appends [`Self::to_rfc3339`]'s text to `text`: every delivered frame carries a timestamp,
    /// and is written without a string of its own for it.
    pub fn push_rfc3339(self, text: &mut String) {
        let nanos = i128::from(self.0) * 1_000_000;
        match time::OffsetDateTime::from_unix_timestamp_nanos(nanos) {
            // Digits are pushed directly, as `format!` with seven padded fields cost more than
            // the rest of the frame's rendering.
            Ok(at) if (0..=9999).contains(&at.year()) => {
                push_digits(text, at.year().unsigned_abs(), 4);
                text.push('-');
                push_digits(text, u32::from(u8::from(at.month())), 2);
                text.push('-');
                push_digits(text, u32::from(at.day()), 2);
                text.push('T');
                push_digits(text, u32::from(at.hour()), 2);
                text.push(':');
                push_digits(text, u32::from(at.minute()), 2);
                text.push(':');
                push_digits(text, u32::from(at.second()), 2);
                text.push('.');
                push_digits(text, u32::from(at.millisecond()), 3);
                text.push('Z');
            }
            Ok(at) => {
                let (y, mo, d) = (at.year(), u8::from(at.month()), at.day());
                let (h, mi, s, ms) = (at.hour(), at.minute(), at.second(), at.millisecond());
                // Writing into a `String` cannot fail.
                let _ = write!(text, "{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{ms:03}Z");
            }
            Err(_) => text.push_str("1970-01-01T00:00:00.000Z"),
        }
    }
}

/// `value` in exactly `width` decimal digits, zero-padded (the caller keeps it in range).
fn push_digits(text: &mut String, value: u32, width: u32) {
    let mut divisor = 10u32.pow(width - 1);
    while divisor > 0 {
        let digit = (value / divisor) % 10;
        text.push(char::from(b'0' + digit as u8));
        divisor /= 10;
    }
}

/// One unit of traffic: who sends what to whom.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// The gateway's id for this envelope, minted when it entered the gateway.
    pub id: MessageId,
    pub from: Address,
    pub to: Address,
    pub ts: Timestamp,
    pub body: Body,
}

impl Envelope {
    pub fn new(from: Address, to: Address, body: Body) -> Self {
        // One reading of the clock for both: every message is an envelope.
        let now = std::time::SystemTime::now();
        Self {
            id: MessageId::generate_at(now),
            from,
            to,
            ts: Timestamp::at(now),
            body,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Body {
    Message(MessageBody),
    Presence(PresenceBody),
    Subscription { action: SubscriptionAction },
    Receipt(ReceiptBody),
    ChatState { state: ChatState },
    Device(DeviceRegistration),
    /// A request for the recipient's current presence, on behalf of someone who may see it.
    Probe,
    /// A message the recipient sent could not be delivered beyond the gateway.
    Failure(FailureBody),
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FailureBody {
    /// The gateway id of the message that failed.
    pub of: MessageId,
    pub reason: FailureReason,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FailureReason {
    NotFound,
    Unavailable,
    Forbidden,
    BadRequest,
    Internal,
}

impl Body {
    /// Whether an envelope with this body waits in the store for a user who is away
    /// (CONTRACT §8 "Offline"): messages, subscription traffic and receipts do; presence and chat
    /// states do not, because they are stale by the time she returns.
    pub fn is_queued_offline(&self) -> bool {
        matches!(
            self,
            Self::Message(_) | Self::Subscription { .. } | Self::Receipt(_) | Self::Failure(_)
        )
    }

    pub fn kind_name(&self) -> &'static str {
        match self {
            Self::Message(_) => "message",
            Self::Presence(_) => "presence",
            Self::Subscription { .. } => "subscription",
            Self::Receipt(_) => "receipt",
            Self::ChatState { .. } => "chatstate",
            Self::Device(_) => "device",
            Self::Probe => "probe",
            Self::Failure(_) => "failure",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MessageBody {
    pub body: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thread: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    pub kind: MessageKind,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MessageKind {
    #[default]
    Chat,
    Normal,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PresenceBody {
    pub show: Show,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Show {
    Available,
    Away,
    Chat,
    Dnd,
    Xa,
    Unavailable,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SubscriptionAction {
    Subscribe,
    Subscribed,
    Unsubscribe,
    Unsubscribed,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReceiptBody {
    /// The id of the message this receipt is about, as its recipient saw it.
    pub of: MessageId,
    pub status: ReceiptStatus,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReceiptStatus {
    Received,
    Displayed,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChatState {
    Active,
    Composing,
    Paused,
    Inactive,
    Gone,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeviceRegistration {
    pub action: DeviceAction,
    pub platform: Platform,
    pub token: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceAction {
    Register,
    Unregister,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Platform {
    Fcm,
    Apns,
    Baidu,
}

impl Platform {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Fcm => "fcm",
            Self::Apns => "apns",
            Self::Baidu => "baidu",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_envelopes_id_is_minted_at_its_timestamp() {
        let user = |name: &str| Address::user(crate::address::UserId::parse(name).expect("valid user"));
        for _ in 0..1000 {
            let envelope = Envelope::new(user("alice"), user("bob"), Body::Presence(PresenceBody { show: Show::Away, status: None }));
            let minted = ulid::Ulid::from_string(envelope.id.as_str()).expect("a ULID").timestamp_ms();
            assert_eq!(i64::try_from(minted).expect("fits"), envelope.ts.0, "{}", envelope.id);
        }
    }

    #[test]
    fn timestamps_count_whole_milliseconds_from_the_epoch() {
        use std::time::{Duration, UNIX_EPOCH};
        let later = UNIX_EPOCH + Duration::from_nanos(1_795_000_000_123_999_999);
        assert_eq!(Timestamp::at(later), Timestamp(1_795_000_000_123));
        assert_eq!(Timestamp::at(UNIX_EPOCH), Timestamp(0));
        assert_eq!(Timestamp::at(UNIX_EPOCH - Duration::from_micros(1_500)), Timestamp(-1));
    }

    #[test]
    fn timestamps_print_as_rfc3339_utc() {
        assert_eq!(Timestamp(0).to_rfc3339(), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            Timestamp(1_795_000_000_123).to_rfc3339(),
            "2026-11-18T11:06:40.123Z"
        );
        assert_eq!(Timestamp(951_782_400_007).to_rfc3339(), "2000-02-29T00:00:00.007Z");
        assert_eq!(Timestamp(-1).to_rfc3339(), "1969-12-31T23:59:59.999Z");
    }
}
