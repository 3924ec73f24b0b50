//! Harness shared by the end-to-end tests: a whole gateway started in-process on free ports,
//! MQTT clients (rumqttc) and WebSocket clients (tokio-tungstenite) that wait on events, never on
//! sleeps.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use metrics_exporter_prometheus::PrometheusHandle;
use rumqttc::{AsyncClient, ConnectReturnCode, Event, MqttOptions, Packet, QoS};
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_rustls::rustls::ClientConfig;
use tokio_tungstenite::tungstenite::Message as WsMessage;

pub const WAIT: Duration = Duration::from_secs(15);

fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            metrics_exporter_prometheus::PrometheusBuilder::new()
                .install_recorder()
                .expect("one recorder per test process")
        })
        .clone()
}

/// A gateway running in this process with its own data directory.
pub struct Gateway {
    pub running: Option<switchboard::Running>,
    pub mqtt: SocketAddr,
    /// The embedded endpoint's TLS listener, when `mqtt.tls_cert` is configured.
    pub mqtt_tls: Option<SocketAddr>,
    pub http: SocketAddr,
    pub data: Option<tempfile::TempDir>,
    pub auth: switchboard_gateway::auth::Authenticator,
    extra: String,
}

impl Gateway {
    pub async fn start() -> Self {
        Self::start_with("").await
    }

    /// `extra` is TOML appended to the test configuration (its own sections only).
    pub async fn start_with(extra: &str) -> Self {
        let data = tempfile::tempdir().expect("tempdir");
        Self::start_in(data, extra).await
    }

    fn config(data: &tempfile::TempDir, extra: &str) -> switchboard_config::Config {
        // RUST_LOG=debug shows the gateway's logs for a failing test.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let base = format!(
            "[gateway]\ndata_dir = \"{}\"\nshutdown_grace = \"5s\"\n[http]\nlisten = \"127.0.0.1:0\"\n[mqtt]\nlisten = \"127.0.0.1:0\"\n",
            data.path().display()
        );
        let toml = merge_toml(&base, extra);
        switchboard_config::load_from_str(&toml).expect("test configuration")
    }

    async fn start_in(data: tempfile::TempDir, extra: &str) -> Self {
        let config = Self::config(&data, extra);
        let auth = switchboard_gateway::auth::Authenticator::from_config(&config.auth, data.path()).expect("auth");
        let running = switchboard::start(config, Some(metrics_handle())).await.expect("gateway starts");
        // No embedded endpoint with an external broker: nothing to connect to here then.
        let mqtt = running.addresses.get("mqtt").copied().unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 9)));
        let mqtt_tls = running.addresses.get("mqtt-tls").copied();
        let http = running.addresses.get("websocket").copied().expect("http bound");
        Self { running: Some(running), mqtt, mqtt_tls, http, data: Some(data), auth, extra: extra.to_owned() }
    }

    /// The error that stops a gateway with `extra` from starting (the configuration itself must
    /// be valid).
    pub async fn start_error(extra: &str) -> String {
        let data = tempfile::tempdir().expect("tempdir");
        let config = Self::config(&data, extra);
        match switchboard::start(config, Some(metrics_handle())).await {
            Ok(running) => {
                running.shutdown().await;
                panic!("the gateway started with {extra}");
            }
            Err(error) => format!("{error:#}"),
        }
    }

    pub fn token(&self, user: &str) -> String {
        let user = switchboard_gateway::UserId::parse(user).expect("valid user");
        self.auth.mint(&user, Duration::from_secs(3600)).expect("mint")
    }

    pub async fn stop(&mut self) {
        if let Some(running) = self.running.take() {
            assert!(running.shutdown().await, "shutdown within its deadline");
        }
    }

    /// Stops and starts again on the same data directory (new ports).
    pub async fn restart(mut self) -> Self {
        self.stop().await;
        let extra = self.extra.clone();
        let data = self.data.take().expect("data directory");
        Self::start_in(data, &extra).await
    }

    pub async fn http_get(&self, path: &str) -> (u16, String) {
        http_get(self.http, path).await
    }

    pub async fn http_request(&self, method: &str, path: &str, bearer: Option<&str>, body: &str) -> (u16, String) {
        http_request(self.http, method, path, bearer, body).await
    }

    /// The value of one Prometheus sample, 0 when absent.
    pub async fn metric(&self, name_and_labels: &str) -> f64 {
        let (_, body) = self.http_get("/metrics").await;
        body.lines()
            .find_map(|line| line.strip_prefix(name_and_labels).and_then(|rest| rest.trim().parse().ok()))
            .unwrap_or(0.0)
    }

    /// Connects a user over MQTT, subscribed to her `in` topic.
    pub async fn mqtt_user(&self, user: &str) -> MqttClient {
        let mut client = MqttClient::connect(self.mqtt, user, &self.token(user), true, user).await.expect("connects");
        client.subscribe_in().await;
        client
    }

    pub async fn ws_user(&self, user: &str) -> WsClient {
        WsClient::connect(self.http, &self.token(user)).await
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(running) = &self.running {
            running.shutdown_token().cancel();
        }
    }
}

/// `extra`'s keys win over `base`'s, section by section.
pub fn merge_toml(base: &str, extra: &str) -> String {
    let mut merged: toml::Table = base.parse().expect("base TOML");
    let extra: toml::Table = extra.parse().expect("extra TOML");
    for (section, values) in extra {
        match (merged.get_mut(&section), values) {
            (Some(toml::Value::Table(into)), toml::Value::Table(values)) => into.extend(values),
            (_, values) => {
                merged.insert(section, values);
            }
        }
    }
    merged.to_string()
}

/// A minimal HTTP/1.1 GET, to keep the tests free of an HTTP client dependency.
pub async fn http_get(address: SocketAddr, path: &str) -> (u16, String) {
    http_request(address, "GET", path, None, "").await
}

/// A minimal HTTP/1.1 request with an optional bearer token and a JSON body; the body of a
/// chunked answer is returned raw (the tests look for substrings or parse small bodies).
pub async fn http_request(address: SocketAddr, method: &str, path: &str, bearer: Option<&str>, body: &str) -> (u16, String) {
    let stream = tokio::net::TcpStream::connect(address).await.expect("http connect");
    http_exchange(stream, method, path, bearer, body).await
}

/// One HTTP/1.1 request over TLS, trusting what `config` trusts; also returns the protocol
/// negotiated by ALPN. `Err` when the handshake fails.
pub async fn https_request(
    address: SocketAddr,
    config: Arc<ClientConfig>,
    method: &str,
    path: &str,
    body: &str,
) -> Result<(u16, String, Option<Vec<u8>>), String> {
    let tcp = tokio::net::TcpStream::connect(address).await.expect("https connect");
    let name = tokio_rustls::rustls::pki_types::ServerName::IpAddress(address.ip().into());
    let stream = tokio::time::timeout(WAIT, tokio_rustls::TlsConnector::from(config).connect(name, tcp))
        .await
        .expect("a TLS handshake in time")
        .map_err(|error| error.to_string())?;
    let alpn = stream.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
    let (status, body) = http_exchange(stream, method, path, None, body).await;
    Ok((status, body, alpn))
}

async fn http_exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    method: &str,
    path: &str,
    bearer: Option<&str>,
    body: &str,
) -> (u16, String) {
    let authorization = bearer.map(|token| format!("Authorization: Bearer {token}\r\n")).unwrap_or_default();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n{authorization}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.expect("http write");
    stream.flush().await.expect("http flush");
    let mut response = String::new();
    tokio::time::timeout(WAIT, stream.read_to_string(&mut response)).await.expect("http in time").expect("http read");
    let status = response.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, body)
}

pub struct MqttClient {
    pub client: AsyncClient,
    pub user: String,
    events: mpsc::UnboundedReceiver<Result<Event, String>>,
    pub session_present: bool,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for MqttClient {
    /// Dropping a client drops its socket at once, as a crashed app would.
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl MqttClient {
    /// Connects and waits for CONNACK; `Err` carries the refusal.
    pub async fn connect(
        address: SocketAddr,
        user: &str,
        password: &str,
        clean: bool,
        client_id: &str,
    ) -> Result<Self, String> {
        Self::connect_with(address, user, password, clean, client_id, |_| {}).await
    }

    pub async fn connect_with(
        address: SocketAddr,
        user: &str,
        password: &str,
        clean: bool,
        client_id: &str,
        tweak: impl FnOnce(&mut MqttOptions),
    ) -> Result<Self, String> {
        let mut options = MqttOptions::new(client_id, address.ip().to_string(), address.port());
        options.set_credentials(user, password);
        options.set_clean_session(clean);
        options.set_keep_alive(Duration::from_secs(30));
        options.set_max_packet_size(1 << 20, 1 << 20);
        tweak(&mut options);
        let (client, mut eventloop) = AsyncClient::new(options, 64);
        let (tx, mut events) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(event) => {
                        if tx.send(Ok(event)).is_err() {
                            return;
                        }
                    }
                    Err(error) => {
                        let _ = tx.send(Err(error.to_string()));
                        return;
                    }
                }
            }
        });
        loop {
            match tokio::time::timeout(WAIT, events.recv()).await.map_err(|_| "no CONNACK".to_owned())? {
                Some(Ok(Event::Incoming(Packet::ConnAck(ack)))) => {
                    if ack.code != ConnectReturnCode::Success {
                        return Err(format!("{:?}", ack.code));
                    }
                    return Ok(Self { client, user: user.to_owned(), events, session_present: ack.session_present, task });
                }
                Some(Ok(_)) => {}
                Some(Err(error)) => {
                    task.abort();
                    return Err(error);
                }
                None => return Err("event loop ended".into()),
            }
        }
    }

    pub fn in_topic(&self) -> String {
        format!("im/{}/in", self.user)
    }

    pub async fn subscribe_in(&mut self) {
        let topic = self.in_topic();
        let codes = self.subscribe(&topic).await;
        assert_eq!(codes, vec![true], "own in topic granted");
    }

    /// Subscribes and returns, per filter, whether it was granted.
    pub async fn subscribe(&mut self, filter: &str) -> Vec<bool> {
        self.client.subscribe(filter, QoS::AtLeastOnce).await.expect("subscribe queued");
        loop {
            if let Event::Incoming(Packet::SubAck(ack)) = self.next_event().await {
                return ack
                    .return_codes
                    .iter()
                    .map(|c| matches!(c, rumqttc::SubscribeReasonCode::Success(_)))
                    .collect();
            }
        }
    }

    pub async fn publish(&self, topic: &str, payload: impl Into<Vec<u8>>) {
        self.client.publish(topic, QoS::AtLeastOnce, false, payload).await.expect("publish queued");
    }

    pub async fn send(&self, frame: Value) {
        self.publish(&format!("im/{}/out", self.user), frame.to_string()).await;
    }

    async fn next_event(&mut self) -> Event {
        match tokio::time::timeout(WAIT, self.events.recv()).await {
            Ok(Some(Ok(event))) => event,
            Ok(Some(Err(error))) => panic!("{}: connection failed: {error}", self.user),
            Ok(None) => panic!("{}: event loop ended", self.user),
            Err(_) => panic!("{}: nothing arrived in time", self.user),
        }
    }

    /// The next frame, or `None` once the connection has ended.
    pub async fn try_recv(&mut self) -> Option<Value> {
        loop {
            match tokio::time::timeout(WAIT, self.events.recv()).await.expect("an event in time") {
                Some(Ok(Event::Incoming(Packet::Publish(publish)))) => {
                    return Some(serde_json::from_slice(&publish.payload).expect("frames are JSON"));
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return None,
            }
        }
    }

    /// The next frame published to this client.
    pub async fn recv(&mut self) -> Value {
        loop {
            if let Event::Incoming(Packet::Publish(publish)) = self.next_event().await {
                return serde_json::from_slice(&publish.payload).expect("frames are JSON");
            }
        }
    }

    /// The next frame of the given type, skipping others (acks while waiting for a message...).
    pub async fn recv_type(&mut self, frame_type: &str) -> Value {
        loop {
            let frame = self.recv().await;
            if frame["type"] == frame_type {
                return frame;
            }
        }
    }

    pub async fn disconnect(mut self) {
        let _ = self.client.disconnect().await;
        loop {
            match tokio::time::timeout(WAIT, self.events.recv()).await {
                Ok(Some(Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)))) | Ok(Some(Err(_))) | Ok(None) | Err(_) => return,
                Ok(Some(Ok(_))) => {}
            }
        }
    }
}

pub struct WsClient {
    stream: tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    pub jid: String,
}

impl WsClient {
    /// Connects over `wss://`, trusting what `config` trusts; `Err` when the connection or the
    /// handshake fails.
    pub async fn connect_tls(address: SocketAddr, token: &str, config: Arc<ClientConfig>) -> Result<Self, String> {
        let url = format!("wss://{address}/ws?token={token}");
        let connector = tokio_tungstenite::Connector::Rustls(config);
        let (stream, _) = tokio_tungstenite::connect_async_tls_with_config(url, None, true, Some(connector))
            .await
            .map_err(|error| error.to_string())?;
        let mut client = Self { stream, jid: String::new() };
        let ready = client.recv().await;
        assert_eq!(ready["type"], "ready", "{ready}");
        client.jid = ready["jid"].as_str().expect("jid").to_owned();
        Ok(client)
    }

    pub async fn connect(address: SocketAddr, token: &str) -> Self {
        let url = format!("ws://{address}/ws?token={token}");
        let (stream, _) = tokio_tungstenite::connect_async(url).await.expect("websocket connects");
        let mut client = Self { stream, jid: String::new() };
        let ready = client.recv().await;
        assert_eq!(ready["type"], "ready", "{ready}");
        client.jid = ready["jid"].as_str().expect("jid").to_owned();
        client
    }

    /// Connects without a token and authenticates with a first frame.
    pub async fn connect_raw(address: SocketAddr) -> Self {
        let (stream, _) = tokio_tungstenite::connect_async(format!("ws://{address}/ws")).await.expect("websocket connects");
        Self { stream, jid: String::new() }
    }

    pub async fn send(&mut self, frame: Value) {
        self.send_text(frame.to_string()).await;
    }

    pub async fn send_text(&mut self, text: String) {
        self.stream.send(WsMessage::Text(text.into())).await.expect("websocket send");
    }

    pub async fn send_raw(&mut self, message: WsMessage) {
        self.stream.send(message).await.expect("websocket send");
    }

    /// The next frame; panics if the socket closes first.
    pub async fn recv(&mut self) -> Value {
        self.try_recv().await.expect("a frame, not a close")
    }

    /// The next frame, or `None` when the server closed the socket.
    pub async fn try_recv(&mut self) -> Option<Value> {
        loop {
            let message = tokio::time::timeout(WAIT, self.stream.next()).await.expect("a frame in time");
            match message {
                Some(Ok(WsMessage::Text(text))) => return Some(serde_json::from_str(&text).expect("frames are JSON")),
                Some(Ok(WsMessage::Close(_))) | None | Some(Err(_)) => return None,
                Some(Ok(_)) => {}
            }
        }
    }

    pub async fn recv_type(&mut self, frame_type: &str) -> Value {
        loop {
            let frame = self.recv().await;
            if frame["type"] == frame_type {
                return frame;
            }
        }
    }

    pub async fn close(mut self) {
        let _ = self.stream.close(None).await;
    }

    /// The code of the close frame the server ends with, skipping frames before it; `None` when
    /// the socket ends without one.
    pub async fn close_code(&mut self) -> Option<u16> {
        loop {
            let message = tokio::time::timeout(WAIT, self.stream.next()).await.expect("the end in time");
            match message {
                Some(Ok(WsMessage::Close(frame))) => return frame.map(|frame| u16::from(frame.code)),
                None | Some(Err(_)) => return None,
                Some(Ok(_)) => {}
            }
        }
    }
}

/// A test key or certificate of push-fakes/fixtures (README there): `ca.pem` signed `server.pem`
/// (127.0.0.1 and localhost); `other-ca.pem` signed nothing.
pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/push-fakes/fixtures")).join(name)
}

/// A TLS client trusting only the CA of fixture `ca`, offering `alpn`.
pub fn tls_client(ca: &str, alpn: &[&[u8]]) -> Arc<ClientConfig> {
    use tokio_rustls::rustls::pki_types::CertificateDer;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    let mut roots = tokio_rustls::rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_file(fixture(ca)).expect("a CA fixture")).expect("a usable CA");
    let provider = Arc::new(tokio_rustls::rustls::crypto::aws_lc_rs::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("aws-lc-rs supports the default TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|protocol| protocol.to_vec()).collect();
    Arc::new(config)
}

/// rumqttc options for a TLS connection trusting only the CA of fixture `ca`.
pub fn mqtt_tls(ca: &str) -> impl FnOnce(&mut MqttOptions) {
    let config = tls_client(ca, &[]);
    move |options| {
        options.set_transport(rumqttc::Transport::tls_with_config(rumqttc::TlsConfiguration::Rustls(config)));
    }
}

pub fn message(id: &str, to: &str, body: &str) -> Value {
    json!({"type": "message", "id": id, "to": to, "body": body})
}
