//! The frame counters of one adapter, each looked up in the metrics registry once.
//!
//! `metrics::counter!` with labels builds a key and searches the registry on every call; on the
//! path of every frame that search cost more than the counting itself.

use std::sync::{Arc, OnceLock};

use metrics::Counter;
use switchboard_gateway::metrics::{ERRORS, FRAMES_IN, FRAMES_OUT};

use crate::code::ErrorCode;

/// Every `type` label a frame counter takes; anything else is counted without the cache.
const TYPES: [&str; 14] = [
    "message",
    "ack",
    "error",
    "presence",
    "receipt",
    "chatstate",
    "subscribe",
    "subscribed",
    "unsubscribe",
    "unsubscribed",
    "ready",
    "device.register",
    "device.unregister",
    "invalid",
];
const CODES: usize = 7;

/// Cheap to clone; one per adapter, shared by its sessions.
#[derive(Clone)]
pub struct FrameCounters(Arc<Slots>);

struct Slots {
    adapter: &'static str,
    frames_in: [OnceLock<Counter>; TYPES.len()],
    frames_out: [OnceLock<Counter>; TYPES.len()],
    errors: [OnceLock<Counter>; CODES],
}

impl FrameCounters {
    pub fn new(adapter: &'static str) -> Self {
        Self(Arc::new(Slots {
            adapter,
            frames_in: Default::default(),
            frames_out: Default::default(),
            errors: Default::default(),
        }))
    }

    pub fn adapter(&self) -> &'static str {
        self.0.adapter
    }

    /// A frame received, by its `type` (`invalid` when it could not be read).
    pub fn frame_in(&self, type_name: &'static str) {
        let adapter = self.0.adapter;
        match slot(type_name) {
            Some(index) => self.0.frames_in[index]
                .get_or_init(|| metrics::counter!(FRAMES_IN, "adapter" => adapter, "type" => type_name))
                .increment(1),
            None => metrics::counter!(FRAMES_IN, "adapter" => adapter, "type" => type_name).increment(1),
        }
    }

    /// A frame sent, by its `type`.
    pub fn frame_out(&self, type_name: &'static str) {
        let adapter = self.0.adapter;
        match slot(type_name) {
            Some(index) => self.0.frames_out[index]
                .get_or_init(|| metrics::counter!(FRAMES_OUT, "adapter" => adapter, "type" => type_name))
                .increment(1),
            None => metrics::counter!(FRAMES_OUT, "adapter" => adapter, "type" => type_name).increment(1),
        }
    }

    /// An error answered to a client, by its code.
    pub fn error(&self, code: ErrorCode) {
        let adapter = self.0.adapter;
        self.0.errors[code as usize]
            .get_or_init(|| metrics::counter!(ERRORS, "adapter" => adapter, "code" => code.as_str()))
            .increment(1);
    }
}

fn slot(type_name: &str) -> Option<usize> {
    TYPES.iter().position(|known| *known == type_name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_code_has_a_slot() {
        for code in [
            ErrorCode::BadRequest,
            ErrorCode::Forbidden,
            ErrorCode::NotFound,
            ErrorCode::TooLarge,
            ErrorCode::RateLimited,
            ErrorCode::Unavailable,
            ErrorCode::Internal,
        ] {
            assert!((code as usize) < CODES, "{code:?}");
        }
    }
}
