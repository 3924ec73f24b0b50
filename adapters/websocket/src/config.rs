use std::net::SocketAddr;
use std::time::Duration;

use metrics_exporter_prometheus::PrometheusHandle;
use switchboard_config::TlsFiles;

/// What the HTTP/WebSocket adapter takes from the configuration.
#[derive(Clone)]
pub struct WebSocketSettings {
    pub listen: SocketAddr,
    pub max_frame_bytes: usize,
    pub messages_per_second: u32,
    /// How long a client without `?token=` has to send its `auth` frame (CONTRACT §8: 10 s).
    pub auth_timeout: Duration,
    /// How long a write to a client may block before it counts as a slow consumer.
    pub write_timeout: Duration,
    /// Renders `/metrics`; absent, the endpoint answers 404.
    pub metrics: Option<PrometheusHandle>,
    /// Certificate and key: the listener then serves HTTPS (and `wss://`) only.
    pub tls: Option<TlsFiles>,
    /// How long a client has to finish its TLS handshake.
    pub handshake_timeout: Duration,
}

impl WebSocketSettings {
    pub fn new(listen: SocketAddr, max_frame_bytes: usize, messages_per_second: u32) -> Self {
        Self {
            listen,
            max_frame_bytes,
            messages_per_second,
            auth_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(10),
            metrics: None,
            tls: None,
            handshake_timeout: switchboard_gateway::tls::HANDSHAKE_TIMEOUT,
        }
    }

    /// The largest message the WebSocket layer reads at all. Frames between `max_frame_bytes`
    /// and this are answered `too-large` and the session goes on; beyond it the socket is
    /// dropped, because the bytes would have to be buffered first.
    pub(crate) fn hard_limit(&self) -> usize {
        (self.max_frame_bytes * 4).max(1 << 20)
    }
}
