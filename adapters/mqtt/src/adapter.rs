use futures::future::BoxFuture;
use switchboard_config::{LimitsConfig, MqttConfig, MqttMode};
use switchboard_gateway::tls::{self, TlsAcceptor};
use switchboard_gateway::{Adapter, AdapterContext, AdapterError, Listening, bind_listener};

use crate::config::MqttSettings;
use crate::embedded::Listeners;
use crate::external::Broker;
use crate::{embedded, external};

pub const NAME: &str = "mqtt";
/// The name of the embedded endpoint's TLS listener among the gateway's addresses.
pub const TLS_LISTENER: &str = "mqtt-tls";

pub struct MqttAdapter {
    settings: MqttSettings,
    listeners: Option<Listeners>,
    broker: Option<Broker>,
}

impl MqttAdapter {
    pub fn new(mqtt: &MqttConfig, limits: &LimitsConfig) -> Self {
        Self::with_settings(MqttSettings::new(mqtt, limits))
    }

    pub fn with_settings(settings: MqttSettings) -> Self {
        Self { settings, listeners: None, broker: None }
    }
}

fn fatal(error: impl ToString) -> AdapterError {
    AdapterError::Fatal { adapter: NAME, message: error.to_string() }
}

impl Adapter for MqttAdapter {
    fn name(&self) -> &'static str {
        NAME
    }

    /// Embedded: opens the listeners. External: reads the broker's address and, for `mqtts://`,
    /// the trusted CAs, so that a bad `mqtt.ca_file` stops the start.
    fn bind(&mut self) -> BoxFuture<'_, Result<Listening, AdapterError>> {
        Box::pin(async move {
            let listen = match &self.settings.mode {
                MqttMode::External { url } => {
                    self.broker = Some(Broker::new(url, self.settings.ca_file.as_deref()).map_err(fatal)?);
                    return Ok(Listening::new());
                }
                MqttMode::Embedded { listen } => *listen,
            };
            // Files first: an unusable certificate is the thing to fix, whatever the ports.
            let acceptor = match &self.settings.tls {
                Some(files) => Some(TlsAcceptor::from(tls::server_config(files, &[]).map_err(fatal)?)),
                None => None,
            };
            let mut listening = Listening::new();
            let (plain, bound) = bind_listener(NAME, "mqtt.listen", listen).await?;
            listening.extend(bound.map(|address| (NAME, address)));
            let tls = match acceptor {
                Some(acceptor) => {
                    let (listener, bound) = bind_listener(NAME, "mqtt.tls_listen", self.settings.tls_listen).await?;
                    listening.extend(bound.map(|address| (TLS_LISTENER, address)));
                    Some((listener, acceptor))
                }
                None => None,
            };
            self.listeners = Some(Listeners { plain, tls });
            Ok(listening)
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
            match (self.listeners, self.broker) {
                (Some(listeners), _) => {
                    embedded::serve(listeners, self.settings, context).await;
                    Ok(())
                }
                (None, Some(broker)) => external::run(broker, self.settings, context).await,
                (None, None) => Err(fatal("run before bind")),
            }
        })
    }
}
