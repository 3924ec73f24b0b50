use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

/// A message's id as the gateway knows it. Ids the gateway mints are ULIDs (time-ordered);
/// ids that arrive from elsewhere (a client's receipt `of`, an XMPP stanza id) are kept as given.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct MessageId(Arc<str>);

impl MessageId {
    pub fn generate() -> Self {
        Self::generate_at(std::time::SystemTime::now())
    }

    /// A new id whose time part is `time`.
    pub fn generate_at(time: std::time::SystemTime) -> Self {
        // Encoded on the stack and copied once into the shared string: every message gets one.
        let mut text = [0; ulid::ULID_LEN];
        Self(Arc::from(&*ulid::Ulid::from_datetime(time).array_to_str(&mut text)))
    }

    pub fn from_string(id: impl Into<Arc<str>>) -> Self {
        Self(id.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MessageId({})", self.0)
    }
}

/// One live connection of a user (an MQTT connection, a WebSocket). Unique within a process.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(u64);

impl SessionId {
    pub fn next() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        Self(NEXT.fetch_add(1, Ordering::Relaxed))
    }

    pub fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minted_ids_are_ulids_in_time_order() {
        let first = MessageId::generate();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let second = MessageId::generate();
        for id in [&first, &second] {
            assert_eq!(id.as_str().len(), ulid::ULID_LEN);
            assert!(ulid::Ulid::from_string(id.as_str()).is_ok(), "{id}");
        }
        assert!(first < second, "{first} then {second}");
    }
}
