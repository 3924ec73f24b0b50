//! The MQTT adapter (CONTRACT §4), in one of two modes:
//! - `embedded`: an MQTT 3.1.1 endpoint inside the gateway, on rumqttc's packet codec, that
//!   authenticates every client with a JWT and authorizes every topic per user;
//! - `external`: a rumqttc client of an existing broker (Mosquitto, …) that reads every user's
//!   `out` and `presence` topics and writes their `in` topics.
//!
//! `topics` maps topic names to users and back; `config` reconciles the configuration keys.

#![forbid(unsafe_code)]

mod adapter;
mod config;
mod embedded;
mod external;
mod topics;

pub use adapter::MqttAdapter;
pub use config::MqttSettings;
pub use topics::{TopicKind, Topics};
