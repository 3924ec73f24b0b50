use futures::future::BoxFuture;
use switchboard_config::{LimitsConfig, MqttConfig, MqttMode};
use switchboard_gateway::{Adapter, AdapterContext, AdapterError, Listening, bind_listener};
use tokio::net::TcpListener;

use crate::config::MqttSettings;
use crate::{embedded, external};

pub const NAME: &str = "mqtt";

pub struct MqttAdapter {
    settings: MqttSettings,
    listener: Option<TcpListener>,
}

impl MqttAdapter {
    pub fn new(mqtt: &MqttConfig, limits: &LimitsConfig) -> Self {
        Self::with_settings(MqttSettings::new(mqtt, limits))
    }

    pub fn with_settings(settings: MqttSettings) -> Self {
        Self { settings, listener: None }
    }
}

impl Adapter for MqttAdapter {
    fn name(&self) -> &'static str {
        NAME
    }

    fn bind(&mut self) -> BoxFuture<'_, Result<Listening, AdapterError>> {
        Box::pin(async move {
            let Some(address) = self.settings.embedded_listen() else {
                return Ok(Listening::new());
            };
            let (listener, bound) = bind_listener(NAME, "mqtt.listen", address).await?;
            self.listener = Some(listener);
            Ok(bound.map(|address| (NAME, address)).into_iter().collect())
        })
    }

    fn peers(&self) -> Vec<&'static str> {
        match self.settings.mode {
            MqttMode::External { .. } => vec![crate::external::HEALTH],
            MqttMode::Embedded { .. } => Vec::new(),
        }
    }

    fn run(self: Box<Self>, context: AdapterContext) -> BoxFuture<'static, Result<(), AdapterError>> {
        Box::pin(async move {
            match (&self.settings.mode, self.listener) {
                (MqttMode::Embedded { .. }, Some(listener)) => {
                    embedded::serve(listener, self.settings, context).await;
                    Ok(())
                }
                (MqttMode::External { url }, _) => {
                    let url = url.clone();
                    external::run(&url, self.settings, context).await
                }
                (MqttMode::Embedded { .. }, None) => {
                    Err(AdapterError::Fatal { adapter: NAME, message: "run before bind".into() })
                }
            }
        })
    }
}
