use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::duration::Duration;
use crate::secret::Secret;

/// The whole configuration: one struct per `[section]` of CONTRACT §7.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub gateway: GatewayConfig,
    pub auth: AuthConfig,
    pub http: HttpConfig,
    pub mqtt: MqttConfig,
    /// Absent: no XMPP.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub xmpp: Option<XmppConfig>,
    /// Absent: no push.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub push: Option<PushConfig>,
    pub limits: LimitsConfig,
}

/// Waking phones that have no live session. Each provider section is optional.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PushConfig {
    /// At most one notification per device per window.
    #[serde(default = "default_coalesce_window")]
    pub coalesce_window: Duration,
    /// An extra CA trusted for the push endpoints (tests, corporate proxies).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// What a notification shows: the message text, only who sent it, or nothing but "new message".
    #[serde(default)]
    pub content: PushContent,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fcm: Option<FcmConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub apns: Option<ApnsConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baidu: Option<BaiduConfig>,
}

fn default_coalesce_window() -> Duration {
    Duration::from_secs(30)
}

/// Notifications pass through Google's, Apple's or Baidu's servers: the operator chooses how
/// much of a message they carry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PushContent {
    /// Sender and message text.
    Full,
    /// Sender only.
    #[default]
    Sender,
    /// A bare "new message".
    None,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FcmConfig {
    pub project_id: String,
    /// The service-account JSON; its `token_uri` is where access tokens are fetched.
    pub service_account: PathBuf,
    /// Base URL; the standard path `/v1/projects/{id}/messages:send` is appended.
    #[serde(default = "default_fcm_endpoint")]
    pub endpoint: String,
}

fn default_fcm_endpoint() -> String {
    "https://fcm.googleapis.com".into()
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ApnsConfig {
    pub team_id: String,
    pub key_id: String,
    /// The `.p8` signing key (PKCS#8 PEM).
    pub key: PathBuf,
    /// The app's bundle id (`apns-topic`).
    pub topic: String,
    /// Use Apple's development host.
    #[serde(default)]
    pub sandbox: bool,
    /// Base URL; defaults to Apple's production or sandbox host. `/3/device/{token}` is appended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
}

impl ApnsConfig {
    pub fn base_url(&self) -> String {
        match (&self.endpoint, self.sandbox) {
            (Some(endpoint), _) => endpoint.clone(),
            (None, true) => "https://api.sandbox.push.apple.com".into(),
            (None, false) => "https://api.push.apple.com".into(),
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BaiduConfig {
    pub api_key: String,
    pub secret_key: Secret,
    /// Base URL; `/rest/3.0/push/single_device` is appended.
    #[serde(default = "default_baidu_endpoint")]
    pub endpoint: String,
}

fn default_baidu_endpoint() -> String {
    "https://api.tuisong.baidu.com".into()
}

/// The XEP-0114 component link to an XMPP server.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct XmppConfig {
    /// The server's component port, `host:port`.
    #[serde(default = "default_xmpp_server")]
    pub server: String,
    /// The component's domain; gateway users are `user@<domain>` on XMPP. Defaults to
    /// `gateway.domain`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    pub secret: Secret,
}

fn default_xmpp_server() -> String {
    "127.0.0.1:5347".into()
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct GatewayConfig {
    /// Gateway users are `user@domain`.
    pub domain: String,
    /// Home of the embedded store and of the generated JWT secret.
    pub data_dir: PathBuf,
    /// A shared store (`postgres://…`) instead of the embedded SQLite file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database_url: Option<Secret>,
    /// How long `SIGINT`/`SIGTERM` may take to drain in-flight work before the process exits.
    pub shutdown_grace: Duration,
    /// Answer every presence subscription request with `subscribed` on the user's behalf.
    pub auto_accept_subscriptions: bool,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            domain: "localhost".into(),
            data_dir: "./data".into(),
            database_url: None,
            shutdown_grace: Duration::from_secs(10),
            auto_accept_subscriptions: false,
        }
    }
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// HS256 secret. Absent together with `jwt_public_key`: one is generated in `data_dir`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jwt_secret: Option<Secret>,
    /// PEM public key: RS256 or ES256 by the key's type, never HS256.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jwt_public_key: Option<PathBuf>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    pub listen: SocketAddr,
    /// PEM certificate chain; with `tls_key`, `listen` serves HTTPS (and `wss://`) only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<PathBuf>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            tls_cert: None,
            tls_key: None,
        }
    }
}

impl HttpConfig {
    /// The listener's certificate and key, when it serves TLS.
    pub fn tls(&self) -> Option<TlsFiles> {
        TlsFiles::pair(&self.tls_cert, &self.tls_key, "http.tls_cert", "http.tls_key")
    }
}

/// A certificate chain and its private key (PEM files), with the keys that name them, so that a
/// file that cannot be used is reported by its key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub cert_key: &'static str,
    pub key_key: &'static str,
}

impl TlsFiles {
    fn pair(
        cert: &Option<PathBuf>,
        key: &Option<PathBuf>,
        cert_key: &'static str,
        key_key: &'static str,
    ) -> Option<Self> {
        match (cert, key) {
            (Some(cert), Some(key)) => Some(Self { cert: cert.clone(), key: key.clone(), cert_key, key_key }),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MqttConfig {
    /// Run the built-in MQTT endpoint. Left unset it follows `url`: embedded unless a broker is given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub embedded: Option<bool>,
    pub listen: SocketAddr,
    /// An existing broker, `mqtt://user:pass@host:port`; the user is the gateway's own account.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<Secret>,
    /// Client id of the gateway's own session on an external broker; it must be stable across
    /// restarts for the broker to keep the persistent session.
    pub client_id: String,
    pub topic_prefix: String,
    /// PEM certificate chain; with `tls_key`, the embedded endpoint also listens with TLS on
    /// `tls_listen`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<PathBuf>,
    /// Address of the embedded endpoint's TLS listener, beside the plain `listen`.
    pub tls_listen: SocketAddr,
    /// An extra CA (PEM) trusted for an external broker reached with `mqtts://`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
}

impl Default for MqttConfig {
    fn default() -> Self {
        Self {
            embedded: None,
            listen: SocketAddr::from(([127, 0, 0, 1], 1883)),
            url: None,
            client_id: "switchboard".into(),
            topic_prefix: "im".into(),
            tls_cert: None,
            tls_key: None,
            tls_listen: SocketAddr::from(([127, 0, 0, 1], 8883)),
            ca_file: None,
        }
    }
}

/// What the MQTT adapter does, once `embedded` and `url` have been reconciled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MqttMode {
    Embedded { listen: SocketAddr },
    External { url: String },
}

impl MqttConfig {
    /// The embedded endpoint's TLS certificate and key, when it has a TLS listener.
    pub fn tls(&self) -> Option<TlsFiles> {
        TlsFiles::pair(&self.tls_cert, &self.tls_key, "mqtt.tls_cert", "mqtt.tls_key")
    }

    pub fn mode(&self) -> MqttMode {
        match &self.url {
            Some(url) if self.embedded != Some(true) => MqttMode::External {
                url: url.expose().to_owned(),
            },
            _ => MqttMode::Embedded {
                listen: self.listen,
            },
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    pub max_frame_bytes: usize,
    /// Sustained rate per user; bursts of twice this are allowed.
    pub messages_per_second: u32,
    /// Queued frames per offline user.
    pub offline_max: u32,
    pub offline_ttl: Duration,
    /// Live sessions (MQTT connections and WebSockets) per user; one more is refused.
    pub sessions_per_user: u32,
    /// Open MQTT and WebSocket connections per client IP address; 0 for no limit.
    pub connections_per_ip: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_frame_bytes: 65_536,
            messages_per_second: 20,
            offline_max: 10_000,
            offline_ttl: Duration::from_secs(30 * 86_400),
            sessions_per_user: 16,
            connections_per_ip: 1024,
        }
    }
}
