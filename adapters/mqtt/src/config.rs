use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use switchboard_config::{LimitsConfig, MqttConfig, MqttMode, TlsFiles};

use crate::topics::Topics;

/// What the MQTT adapter takes from the configuration.
#[derive(Clone, Debug)]
pub struct MqttSettings {
    pub mode: MqttMode,
    pub topics: Topics,
    pub client_id: String,
    pub max_frame_bytes: usize,
    pub messages_per_second: u32,
    /// The largest packet read at all. Payloads between `max_frame_bytes` and this are answered
    /// `too-large` and the connection goes on; a bigger packet ends the connection.
    pub max_packet_bytes: usize,
    /// How long a new connection has to send CONNECT.
    pub connect_timeout: Duration,
    /// How long a write to a client may block before it counts as a slow consumer.
    pub write_timeout: Duration,
    /// QoS 1 messages sent to one client and not yet PUBACKed.
    pub max_inflight: usize,
    /// Certificate and key of the embedded endpoint's TLS listener, when it has one.
    pub tls: Option<TlsFiles>,
    /// Where the TLS listener is, beside the plain one.
    pub tls_listen: SocketAddr,
    /// How long a client has to finish its TLS handshake, before the CONNECT timeout starts.
    pub handshake_timeout: Duration,
    /// An extra CA trusted for an external broker reached over TLS (`mqtts://`).
    pub ca_file: Option<PathBuf>,
}

impl MqttSettings {
    pub fn new(mqtt: &MqttConfig, limits: &LimitsConfig) -> Self {
        Self {
            mode: mqtt.mode(),
            topics: Topics::new(&mqtt.topic_prefix),
            client_id: mqtt.client_id.clone(),
            max_frame_bytes: limits.max_frame_bytes,
            messages_per_second: limits.messages_per_second,
            max_packet_bytes: (limits.max_frame_bytes * 4).max(1 << 20),
            connect_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(10),
            max_inflight: 64,
            tls: mqtt.tls(),
            tls_listen: mqtt.tls_listen,
            handshake_timeout: switchboard_gateway::tls::HANDSHAKE_TIMEOUT,
            ca_file: mqtt.ca_file.clone(),
        }
    }

    pub fn embedded_listen(&self) -> Option<SocketAddr> {
        match self.mode {
            MqttMode::Embedded { listen } => Some(listen),
            MqttMode::External { .. } => None,
        }
    }
}
