//! The JSON frames of CONTRACT §3: one format for MQTT payloads and WebSocket text frames.
//!
//! Shared by the MQTT and WebSocket adapters, which differ only in how bytes reach them:
//! - `code`: the error codes clients see;
//! - `inbound`: client → gateway frames, parsed with an error for every way they can be wrong;
//! - `outbound`: gateway → client frames (`json`: the two written once per message, by hand);
//! - `convert`: frames ⇄ canonical envelopes, pure;
//! - `session`: what one authenticated client connection does with a frame (rate limit, parse,
//!   submit, answer);
//! - `replies`: the answers to a connection's frames, in order, held only while some are due;
//! - `limiter`: the per-user token bucket;
//! - `dormant`: a connection's rare events, looked at only once one has happened;
//! - `counters`: an adapter's frame counters, looked up once.

#![forbid(unsafe_code)]

mod code;
mod convert;
mod counters;
mod dormant;
mod inbound;
mod json;
mod limiter;
mod outbound;
mod replies;
mod session;

pub use code::ErrorCode;
pub use counters::FrameCounters;
pub use dormant::Dormant;
pub use convert::{envelope_to_frame, frame_to_envelope, outcome_to_answer};
pub use inbound::{ClientFrame, FrameError, parse_client_frame, parse_auth_frame};
pub use limiter::{RateLimiter, UserBucket};
pub use outbound::ServerFrame;
pub use replies::Replies;
pub use session::{FrameSession, Reply, count_error};
