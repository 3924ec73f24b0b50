//! Typed configuration for Switchboard: one serde struct per section, read from a TOML file and
//! `SWITCHBOARD_<SECTION>__<KEY>` environment variables (CONTRACT §7).
//!
//! - `sections` holds the structs and their defaults;
//! - `load` merges the sources and turns figment's errors into ones that name the key;
//! - `validate` holds the cross-field checks serde cannot express;
//! - `duration` and `secret` are the two value types every section shares.

#![forbid(unsafe_code)]

mod duration;
mod error;
mod load;
mod secret;
mod sections;
mod validate;

pub use duration::Duration;
pub use error::ConfigError;
pub use load::{ENV_PREFIX, load, load_from_str};
pub use secret::Secret;
pub use sections::{
    ApnsConfig, AuthConfig, BaiduConfig, Config, FcmConfig, GatewayConfig, HttpConfig, LimitsConfig, MqttConfig,
    MqttMode, PushConfig, PushContent, TlsFiles, XmppConfig,
};
