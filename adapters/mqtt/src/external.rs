//! The gateway as a client of an external broker. Written in a later step.

use switchboard_gateway::{AdapterContext, AdapterError};

use crate::config::MqttSettings;

pub(crate) async fn run(_url: &str, _settings: MqttSettings, _context: AdapterContext) -> Result<(), AdapterError> {
    Err(AdapterError::Fatal { adapter: crate::adapter::NAME, message: "external broker not built yet".into() })
}
