//! The fault suite: while 1,000 messages flow on each of WS→MQTT, MQTT→WS, MQTT→XMPP and
//! XMPP→MQTT, something breaks: the gateway is killed with SIGKILL and started again, Prosody
//! restarts, Mosquitto restarts (external broker mode), the MQTT clients' sockets drop. Senders
//! do what real clients do: resend, under the same id, what was not acknowledged. Receivers
//! count what arrives.
//!
//! Counted per flow: messages acknowledged to their sender (an `ack` frame; for an XMPP sender a
//! XEP-0184 receipt, since a component link has no acknowledgement of its own), acknowledged but
//! never received (lost), and received twice — under the same gateway id (an MQTT QoS 1
//! redelivery, which the client recognises by `id`) or under a new one (the gateway routed it
//! twice). Each test prints one line per flow (`--nocapture`); docs/reliability.md quotes them.
//! `FAULT_DEBUG=1` also names the messages missing or doubled; `FAULT_GATEWAY_LOG` is the
//! gateway process's `RUST_LOG` (default: warnings, and the external-broker link's connections). A
//! failed test also prints the end of its Mosquitto's log (connections, errors).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use rumqttc::{AsyncClient, Event, LastWill, MqttOptions, Packet, QoS};
use serde_json::{Value, json};
use tokio::process::{Child, Command};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_xmpp::connect::{DnsConfig, TcpServerConnector};
use tokio_xmpp::stanzastream::{Event as StreamEvent, StanzaStream};
use tokio_xmpp::xmlstream::Timeouts;
use tokio_xmpp::Stanza;
use xmpp_parsers::jid::{BareJid, Jid};

use crate::common::{WAIT, http_get};
use crate::mosquitto::{Mosquitto, ReservedPort};
use crate::prosody::{COMPONENT, Prosody, password};

const TOTAL: u32 = 1_000;
/// Messages a sender has out without an answer before it waits (an app's send window).
const WINDOW: usize = 100;
/// A message sent this long ago without an answer is sent again.
const RESEND_AFTER: Duration = Duration::from_secs(3);
const PACE: Duration = Duration::from_millis(3);
const DEADLINE: Duration = Duration::from_secs(60);
const SECRET: &str = "fault-suite-secret";
/// Warnings, and the external-broker link's (re)connections, which a stalled flow is read against.
const DEFAULT_GATEWAY_LOG: &str = "warn,switchboard_mqtt::external=info";

// ---------------------------------------------------------------------------------------------
// The tally of one flow.

struct Tally {
    name: &'static str,
    acked: Mutex<HashSet<u32>>,
    /// Per message number, the gateway ids it arrived under.
    received: Mutex<HashMap<u32, Vec<String>>>,
}

#[derive(Debug)]
struct Report {
    acked: usize,
    received: usize,
    lost: usize,
    redelivered: usize,
    routed_twice: usize,
}

impl Tally {
    fn new(name: &'static str) -> Arc<Self> {
        Arc::new(Self { name, acked: Mutex::default(), received: Mutex::default() })
    }

    fn ack(&self, n: u32) {
        self.acked.lock().expect("lock").insert(n);
    }

    fn receive(&self, n: u32, id: &str) {
        self.received.lock().expect("lock").entry(n).or_default().push(id.to_owned());
    }

    fn progress(&self) -> usize {
        self.acked.lock().expect("lock").len().min(self.received.lock().expect("lock").len())
    }

    fn done(&self) -> bool {
        self.acked.lock().expect("lock").len() == TOTAL as usize && self.received.lock().expect("lock").len() == TOTAL as usize
    }

    fn report(&self) -> Report {
        let acked = self.acked.lock().expect("lock");
        let received = self.received.lock().expect("lock");
        let mut redelivered = 0;
        let mut routed_twice = 0;
        for (n, ids) in received.iter() {
            let distinct: HashSet<&String> = ids.iter().collect();
            if distinct.len() > 1 && std::env::var_os("FAULT_DEBUG").is_some() {
                eprintln!("{}: m{n} arrived as {ids:?}", self.name);
            }
            routed_twice += distinct.len() - 1;
            redelivered += ids.len() - distinct.len();
        }
        Report {
            acked: acked.len(),
            received: received.len(),
            lost: acked.iter().filter(|n| !received.contains_key(n)).count(),
            redelivered,
            routed_twice,
        }
    }
}

fn number(body: &str) -> Option<u32> {
    body.strip_prefix('m')?.parse().ok()
}

/// What a sender still owes: numbers sent without an answer, and when each last went out.
#[derive(Default)]
struct Outstanding {
    next: u32,
    sent_at: BTreeMap<u32, Instant>,
}

impl Outstanding {
    /// The next number to send for the first time, if the window has room.
    fn take_new(&mut self) -> Option<u32> {
        if self.next >= TOTAL || self.sent_at.len() >= WINDOW {
            return None;
        }
        let n = self.next;
        self.next += 1;
        self.sent_at.insert(n, Instant::now());
        Some(n)
    }

    /// Numbers to send again: all of them after a reconnect, else those unanswered for long.
    fn due(&mut self, all: bool) -> Vec<u32> {
        let now = Instant::now();
        let due: Vec<u32> =
            self.sent_at.iter().filter(|(_, at)| all || now.duration_since(**at) >= RESEND_AFTER).map(|(n, _)| *n).collect();
        for n in &due {
            self.sent_at.insert(*n, now);
        }
        due
    }

    fn answered(&mut self, n: u32) {
        self.sent_at.remove(&n);
    }

    /// Answered with an error: send again at the next resend tick.
    fn refused(&mut self, n: u32) {
        if let Some(at) = self.sent_at.get_mut(&n) {
            *at = Instant::now() - RESEND_AFTER;
        }
    }

    fn finished(&self) -> bool {
        self.next >= TOTAL && self.sent_at.is_empty()
    }
}

fn client_id(n: u32) -> String {
    format!("s{n}")
}

fn frame_number(frame: &Value) -> Option<u32> {
    frame["id"].as_str()?.strip_prefix('s')?.parse().ok()
}

// ---------------------------------------------------------------------------------------------
// The gateway as a separate process, so that it can be killed.

struct GatewayProcess {
    child: Option<Child>,
    dir: tempfile::TempDir,
    http: SocketAddr,
    mqtt: SocketAddr,
    auth: switchboard_gateway::auth::Authenticator,
    /// Kept across restarts (see [`ReservedPort`]).
    _ports: [ReservedPort; 2],
}

impl GatewayProcess {
    async fn start(extra: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let ports = [ReservedPort::new(), ReservedPort::new()];
        let (http, mqtt) = (ports[0].address, ports[1].address);
        let base = format!(
            "[gateway]\ndata_dir = \"{}\"\n[auth]\njwt_secret = \"{SECRET}\"\n[http]\nlisten = \"{http}\"\n[mqtt]\nlisten = \"{mqtt}\"\n[limits]\nmessages_per_second = 100000\n",
            dir.path().join("data").display()
        );
        let toml = crate::common::merge_toml(&base, extra);
        std::fs::write(dir.path().join("switchboard.toml"), &toml).expect("config");
        let config = switchboard_config::load_from_str(&toml).expect("configuration");
        let auth = switchboard_gateway::auth::Authenticator::from_config(&config.auth, dir.path()).expect("auth");
        let mut gateway = Self { child: None, dir, http, mqtt, auth, _ports: ports };
        gateway.spawn().await;
        gateway
    }

    async fn spawn(&mut self) {
        let child = Command::new(env!("CARGO_BIN_EXE_switchboard"))
            .arg("run")
            .arg("--config")
            .arg(self.dir.path().join("switchboard.toml"))
            .current_dir(self.dir.path())
            .env("RUST_LOG", std::env::var("FAULT_GATEWAY_LOG").unwrap_or_else(|_| DEFAULT_GATEWAY_LOG.into()))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("switchboard starts");
        self.child = Some(child);
        let deadline = Instant::now() + WAIT;
        loop {
            if tokio::net::TcpStream::connect(self.http).await.is_ok() && http_get(self.http, "/healthz").await.0 == 200 {
                return;
            }
            assert!(Instant::now() < deadline, "the gateway did not become healthy");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGKILL: nothing is flushed, nothing is drained.
    async fn kill_and_restart(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().await.expect("SIGKILL");
        }
        self.spawn().await;
    }

    fn token(&self, user: &str) -> String {
        let user = switchboard_gateway::UserId::parse(user).expect("valid user");
        self.auth.mint(&user, Duration::from_secs(3600)).expect("mint")
    }
}

// ---------------------------------------------------------------------------------------------
// Clients. Each runs until its flow is done, reconnecting whenever its connection ends or the
// test drops it (`drops` changes).

#[derive(Clone)]
enum Broker {
    /// The gateway's embedded endpoint: password = a JWT.
    Embedded(SocketAddr, Arc<dyn Fn(&str) -> String + Send + Sync>),
    /// Mosquitto: the user's broker password.
    External(SocketAddr),
}

impl Broker {
    fn options(&self, user: &str, client_id: &str, clean: bool) -> MqttOptions {
        let (address, password) = match self {
            Self::Embedded(address, token) => (*address, token(user)),
            Self::External(address) => (*address, broker_password(user)),
        };
        let mut options = MqttOptions::new(client_id, address.ip().to_string(), address.port());
        options.set_credentials(user, password);
        options.set_clean_session(clean);
        options.set_keep_alive(Duration::from_secs(5));
        options.set_inflight(WINDOW as u16 * 2);
        if matches!(self, Self::External(_)) {
            // The contract's presence convention, which tells the gateway she is online.
            let unavailable = json!({"type":"presence","show":"unavailable"}).to_string();
            options.set_last_will(LastWill::new(format!("im/{user}/presence"), unavailable, QoS::AtLeastOnce, true));
        }
        options
    }
}

fn broker_password(user: &str) -> String {
    format!("{user}-pw")
}

async fn mqtt_sender(broker: Broker, user: &'static str, to: String, tally: Arc<Tally>, mut drops: watch::Receiver<u32>) {
    let mut outstanding = Outstanding::default();
    let in_topic = format!("im/{user}/in");
    let out_topic = format!("im/{user}/out");
    while !outstanding.finished() {
        let (client, mut events) = AsyncClient::new(broker.options(user, &format!("{user}-sender"), true), 4 * WINDOW);
        let _ = client.try_subscribe(&in_topic, QoS::AtLeastOnce);
        let send = |n: u32| {
            let frame = json!({"type":"message","id":client_id(n),"to":to,"body":format!("m{n}")}).to_string();
            client.try_publish(&out_topic, QoS::AtLeastOnce, false, frame).is_ok()
        };
        for n in outstanding.due(true) {
            send(n);
        }
        let mut pace = tokio::time::interval(PACE);
        let mut resend = tokio::time::interval(Duration::from_millis(500));
        loop {
            tokio::select! {
                event = events.poll() => match event {
                    Ok(Event::Incoming(Packet::Publish(publish))) => {
                        let Ok(frame) = serde_json::from_slice::<Value>(&publish.payload) else { continue };
                        let Some(n) = frame_number(&frame) else { continue };
                        match frame["type"].as_str() {
                            Some("ack") => { tally.ack(n); outstanding.answered(n); }
                            _ => outstanding.refused(n),
                        }
                        if outstanding.finished() { return; }
                    }
                    Ok(_) => {}
                    Err(_) => break,
                },
                _ = pace.tick() => if let Some(n) = outstanding.take_new() { send(n); },
                _ = resend.tick() => for n in outstanding.due(false) { send(n); },
                _ = drops.changed() => break,
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn mqtt_receiver(broker: Broker, user: &'static str, tally: Arc<Tally>, receipts: bool, mut drops: watch::Receiver<u32>) {
    let in_topic = format!("im/{user}/in");
    loop {
        // A phone's app: a persistent session, so QoS 1 messages wait for it while it is away.
        let mut options = broker.options(user, &format!("{user}-app"), false);
        // Acknowledged by the app as it counts (one step), as a careful app does: rumqttc's automatic PUBACK would
        // confirm messages still in its buffer when the socket is cut, and they would be gone.
        options.set_manual_acks(true);
        let (client, mut events) = AsyncClient::new(options, 4 * WINDOW);
        loop {
            tokio::select! {
                event = events.poll() => match event {
                    Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                        if !ack.session_present {
                            let _ = client.try_subscribe(&in_topic, QoS::AtLeastOnce);
                        }
                        if matches!(broker, Broker::External(_)) {
                            let available = json!({"type":"presence","show":"available"}).to_string();
                            let _ = client.try_publish(format!("im/{user}/presence"), QoS::AtLeastOnce, true, available);
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(publish))) => {
                        let _ = client.try_ack(&publish);
                        let Ok(frame) = serde_json::from_slice::<Value>(&publish.payload) else { continue };
                        if frame["type"] != "message" {
                            if std::env::var_os("FAULT_DEBUG").is_some() && frame["type"] == "error" { eprintln!("{user}: {frame}"); }
                            continue
                        }
                        let (Some(n), Some(id)) = (frame["body"].as_str().and_then(number), frame["id"].as_str()) else { continue };
                        tally.receive(n, id);
                        if receipts {
                            let receipt = json!({"type":"receipt","to":frame["from"],"of":id,"status":"received"}).to_string();
                            let _ = client.try_publish(format!("im/{user}/out"), QoS::AtLeastOnce, false, receipt);
                        }
                    }
                    Ok(_) => {}
                    Err(_) => break,
                },
                _ = drops.changed() => break,
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

type WsStream = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn ws_connect(http: SocketAddr, token: &str) -> Option<WsStream> {
    let (mut stream, _) = tokio_tungstenite::connect_async(format!("ws://{http}/ws?token={token}")).await.ok()?;
    match tokio::time::timeout(WAIT, stream.next()).await {
        Ok(Some(Ok(WsMessage::Text(text)))) if text.contains("\"ready\"") => Some(stream),
        _ => None,
    }
}

async fn ws_sender(http: SocketAddr, token: String, to: String, tally: Arc<Tally>) {
    let mut outstanding = Outstanding::default();
    while !outstanding.finished() {
        let Some(stream) = ws_connect(http, &token).await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let (mut sink, mut stream) = stream.split();
        let frame = |n: u32| WsMessage::Text(json!({"type":"message","id":client_id(n),"to":to,"body":format!("m{n}")}).to_string().into());
        let mut alive = true;
        for n in outstanding.due(true) {
            alive &= sink.send(frame(n)).await.is_ok();
        }
        let mut pace = tokio::time::interval(PACE);
        let mut resend = tokio::time::interval(Duration::from_millis(500));
        while alive {
            tokio::select! {
                message = stream.next() => match message {
                    Some(Ok(WsMessage::Text(text))) => {
                        let Ok(frame) = serde_json::from_str::<Value>(&text) else { continue };
                        let Some(n) = frame_number(&frame) else { continue };
                        match frame["type"].as_str() {
                            Some("ack") => { tally.ack(n); outstanding.answered(n); }
                            _ => outstanding.refused(n),
                        }
                        if outstanding.finished() { return; }
                    }
                    Some(Ok(_)) => {}
                    Some(Err(_)) | None => alive = false,
                },
                _ = pace.tick() => if let Some(n) = outstanding.take_new() { alive = sink.send(frame(n)).await.is_ok(); },
                _ = resend.tick() => for n in outstanding.due(false) { alive &= sink.send(frame(n)).await.is_ok(); },
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn ws_receiver(http: SocketAddr, token: String, tally: Arc<Tally>) {
    loop {
        let Some(mut stream) = ws_connect(http, &token).await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        while let Some(Ok(message)) = stream.next().await {
            let WsMessage::Text(text) = message else { continue };
            let Ok(frame) = serde_json::from_str::<Value>(&text) else { continue };
            if frame["type"] != "message" {
                continue;
            }
            if let (Some(n), Some(id)) = (frame["body"].as_str().and_then(number), frame["id"].as_str()) {
                tally.receive(n, id);
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A c2s stream that logs in again by itself after a disconnection. Its `send` only enqueues
/// (tokio-xmpp's `Client::send_stanza` waits for each stanza to be written, which stalls a task
/// that must also read).
fn xmpp_stream(c2s: SocketAddr, name: &str) -> StanzaStream {
    let jid = BareJid::new(&format!("{name}@localhost")).expect("jid");
    let timeouts = Timeouts { read_timeout: Duration::from_secs(10), response_timeout: Duration::from_secs(5) };
    let connector = TcpServerConnector(DnsConfig::addr(&c2s.to_string()));
    StanzaStream::new_c2s(connector, Jid::from(jid), password(name), timeouts, 256)
}

fn element(xml: &str) -> Box<Stanza> {
    let element: tokio_xmpp::minidom::Element = xml.parse().expect("test XML");
    Box::new(Stanza::try_from(element).expect("a stanza"))
}

/// An XMPP user who asks for a receipt with every message and sends again what got none, or
/// got an error back (the server bounces messages while the gateway is away).
async fn xmpp_sender(c2s: SocketAddr, name: &'static str, to: String, tally: Arc<Tally>) {
    let mut stream = xmpp_stream(c2s, name);
    let mut outstanding = Outstanding::default();
    let mut online = false;
    let mut pace = tokio::time::interval(PACE);
    let mut resend = tokio::time::interval(Duration::from_millis(500));
    let stanza = |n: u32| {
        element(&format!(
            "<message xmlns='jabber:client' type='chat' to='{to}' id='x{n}'><body>m{n}</body><request xmlns='urn:xmpp:receipts'/></message>"
        ))
    };
    while !outstanding.finished() {
        let mut sends = Vec::new();
        tokio::select! {
            event = stream.next() => match event {
                Some(StreamEvent::Stream(tokio_xmpp::stanzastream::StreamEvent::Reset { .. })) => {
                    online = true;
                    sends.push(element("<presence xmlns='jabber:client'/>"));
                    sends.extend(outstanding.due(true).into_iter().map(stanza));
                }
                Some(StreamEvent::Stanza(stanza)) => {
                    let element = tokio_xmpp::minidom::Element::from(stanza);
                    if element.name() != "message" { continue }
                    let id = element.attr("id").unwrap_or_default().to_owned();
                    if element.attr("type") == Some("error") {
                        if let Some(n) = id.strip_prefix('x').and_then(|n| n.parse().ok()) { outstanding.refused(n); }
                    } else if let Some(received) = element.get_child("received", "urn:xmpp:receipts")
                        && let Some(n) = received.attr("id").and_then(|id| id.strip_prefix('x')).and_then(|n| n.parse().ok()) {
                        tally.ack(n);
                        outstanding.answered(n);
                    }
                }
                Some(_) => {}
                None => return,
            },
            _ = pace.tick(), if online => sends.extend(outstanding.take_new().map(stanza)),
            _ = resend.tick(), if online => sends.extend(outstanding.due(false).into_iter().map(stanza)),
        }
        for stanza in sends {
            stream.send(stanza).await;
        }
    }
}

/// An XMPP user who counts the messages that reach her; her server keeps them while she is
/// away (Prosody's mod_offline).
async fn xmpp_receiver(c2s: SocketAddr, name: &'static str, tally: Arc<Tally>) {
    let mut stream = xmpp_stream(c2s, name);
    while let Some(event) = stream.next().await {
        match event {
            StreamEvent::Stream(tokio_xmpp::stanzastream::StreamEvent::Reset { .. }) => {
                stream.send(element("<presence xmlns='jabber:client'/>")).await;
            }
            StreamEvent::Stanza(stanza) => {
                let element = tokio_xmpp::minidom::Element::from(stanza);
                if element.name() != "message" || element.attr("type") == Some("error") {
                    continue;
                }
                let body = element.get_child("body", "jabber:client").map(|b| b.text()).unwrap_or_default();
                if let Some(n) = number(&body) {
                    tally.receive(n, element.attr("id").unwrap_or_default());
                }
            }
            _ => {}
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The four flows, started together.

struct Flows {
    tallies: Vec<Arc<Tally>>,
    tasks: JoinSet<()>,
    drops: watch::Sender<u32>,
}

impl Flows {
    /// Receivers connect first (a message to a never-seen user is refused), then senders.
    async fn start(gateway: &GatewayProcess, broker: Broker, prosody: Option<&Prosody>) -> Self {
        let (drops, _) = watch::channel(0);
        let mut tasks = JoinSet::new();
        let mut tallies = Vec::new();
        let token = |user: &str| gateway.token(user);
        let http = gateway.http;

        let ws_to_mqtt = Tally::new("WS→MQTT");
        let mqtt_to_ws = Tally::new("MQTT→WS");
        tasks.spawn(mqtt_receiver(broker.clone(), "mqb", ws_to_mqtt.clone(), false, drops.subscribe()));
        tasks.spawn(ws_receiver(http, token("wsb"), mqtt_to_ws.clone()));
        tallies.extend([ws_to_mqtt.clone(), mqtt_to_ws.clone()]);
        let mut xmpp = None;
        if let Some(prosody) = prosody {
            let mqtt_to_xmpp = Tally::new("MQTT→XMPP");
            let xmpp_to_mqtt = Tally::new("XMPP→MQTT");
            tasks.spawn(xmpp_receiver(prosody.c2s, "xr", mqtt_to_xmpp.clone()));
            tasks.spawn(mqtt_receiver(broker.clone(), "mqr", xmpp_to_mqtt.clone(), true, drops.subscribe()));
            tallies.extend([mqtt_to_xmpp.clone(), xmpp_to_mqtt.clone()]);
            xmpp = Some((prosody.c2s, mqtt_to_xmpp, xmpp_to_mqtt));
        }
        wait_known(gateway, &["mqb", "wsb"]).await;
        if xmpp.is_some() {
            wait_known(gateway, &["mqr"]).await;
        }
        tasks.spawn(ws_sender(http, token("wsa"), "mqb".into(), ws_to_mqtt));
        tasks.spawn(mqtt_sender(broker.clone(), "mqa", "wsb".into(), mqtt_to_ws, drops.subscribe()));
        if let Some((c2s, mqtt_to_xmpp, xmpp_to_mqtt)) = xmpp {
            tasks.spawn(mqtt_sender(broker, "mqx", "xr@localhost".into(), mqtt_to_xmpp, drops.subscribe()));
            tasks.spawn(xmpp_sender(c2s, "xs", format!("mqr@{COMPONENT}"), xmpp_to_mqtt));
        }
        Self { tallies, tasks, drops }
    }

    /// Waits until every flow has about `share` of its messages through.
    async fn wait_progress(&self, share: f64) {
        let target = (f64::from(TOTAL) * share) as usize;
        let deadline = Instant::now() + DEADLINE;
        while self.tallies.iter().any(|t| t.progress() < target) {
            assert!(Instant::now() < deadline, "no progress: {}", self.summary());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Cuts every MQTT client's connection at once, without DISCONNECT, as a lost network does.
    fn drop_mqtt_sockets(&self) {
        self.drops.send_modify(|generation| *generation += 1);
    }

    /// Waits for every flow to finish (or the deadline), prints the tallies and checks that no
    /// acknowledged message was lost. Returns the reports for further checks.
    async fn finish(mut self, fault: &str) -> Vec<(&'static str, Report)> {
        let deadline = Instant::now() + DEADLINE;
        while !self.tallies.iter().all(|t| t.done()) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Late duplicates (a redelivery after the last ack) would show within a moment.
        tokio::time::sleep(Duration::from_millis(300)).await;
        self.tasks.abort_all();
        let reports: Vec<_> = self.tallies.iter().map(|t| (t.name, t.report())).collect();
        for (name, report) in &reports {
            println!(
                "fault: {fault}: {name}: sent {TOTAL}, acked {}, received {}, lost {}, redelivered (same id) {}, routed twice (new id) {}",
                report.acked, report.received, report.lost, report.redelivered, report.routed_twice
            );
        }
        if std::env::var_os("FAULT_DEBUG").is_some() {
            for tally in &self.tallies {
                let received = tally.received.lock().expect("lock");
                let missing: Vec<u32> = (0..TOTAL).filter(|n| !received.contains_key(n)).collect();
                eprintln!("{}: missing {missing:?}", tally.name);
            }
        }
        for (name, report) in &reports {
            assert_eq!(report.lost, 0, "{fault}: {name}: acknowledged messages lost: {report:?}");
            assert_eq!(report.received, TOTAL as usize, "{fault}: {name}: not everything arrived: {report:?}");
            assert_eq!(report.acked, TOTAL as usize, "{fault}: {name}: not everything was acknowledged: {report:?}");
        }
        reports
    }

    fn summary(&self) -> String {
        self.tallies.iter().map(|t| format!("{} {:?}", t.name, t.report())).collect::<Vec<_>>().join("; ")
    }
}

/// Until a receiver has connected once, a message to her is `not-found`.
async fn wait_known(gateway: &GatewayProcess, users: &[&str]) {
    let probe = gateway.token("probe");
    let mut stream = loop {
        if let Some(stream) = ws_connect(gateway.http, &probe).await {
            break stream;
        }
    };
    let deadline = Instant::now() + WAIT;
    for user in users {
        loop {
            let frame = json!({"type":"chatstate","id":"probe","to":user,"state":"active"}).to_string();
            stream.send(WsMessage::Text(frame.into())).await.expect("probe sends");
            let answer = loop {
                match tokio::time::timeout(WAIT, stream.next()).await {
                    Ok(Some(Ok(WsMessage::Text(text)))) => break serde_json::from_str::<Value>(&text).expect("JSON"),
                    Ok(Some(Ok(_))) => {}
                    other => panic!("probe connection ended: {other:?}"),
                }
            };
            if answer["type"] == "ack" {
                break;
            }
            assert!(Instant::now() < deadline, "{user} never connected: {answer}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn embedded(gateway: &GatewayProcess) -> Broker {
    let auth = gateway.auth.clone();
    Broker::Embedded(
        gateway.mqtt,
        Arc::new(move |user| {
            let user = switchboard_gateway::UserId::parse(user).expect("valid user");
            auth.mint(&user, Duration::from_secs(3600)).expect("mint")
        }),
    )
}

// ---------------------------------------------------------------------------------------------
// The faults.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_killed_with_sigkill_and_restarted_loses_no_acknowledged_message() {
    let prosody = Prosody::start(&["xs", "xr"]).await;
    let mut gateway = GatewayProcess::start(&prosody.gateway_config()).await;
    let flows = Flows::start(&gateway, embedded(&gateway), Some(&prosody)).await;
    flows.wait_progress(0.3).await;
    gateway.kill_and_restart().await;
    flows.finish("gateway SIGKILL").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prosody_restarting_loses_no_acknowledged_message_and_duplicates_none() {
    let mut prosody = Prosody::start(&["xs", "xr"]).await;
    let gateway = GatewayProcess::start(&prosody.gateway_config()).await;
    let flows = Flows::start(&gateway, embedded(&gateway), Some(&prosody)).await;
    flows.wait_progress(0.3).await;
    prosody.restart().await;
    let reports = flows.finish("Prosody restart").await;
    for (name, report) in reports {
        assert_eq!(report.routed_twice, 0, "{name}: the gateway itself did not restart, so no resend is routed twice");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_restarting_loses_no_acknowledged_message_and_duplicates_none() {
    let users: Vec<(String, String)> = ["gateway", "mqa", "mqb", "mqr", "mqx"]
        .iter()
        .map(|user| (user.to_string(), if *user == "gateway" { "gw-secret".into() } else { broker_password(user) }))
        .collect();
    let users: Vec<(&str, &str)> = users.iter().map(|(u, p)| (u.as_str(), p.as_str())).collect();
    let mut mosquitto = Mosquitto::start_persistent(&users).await;
    let gateway = GatewayProcess::start(&format!(
        "[mqtt]\nurl = \"mqtt://gateway:gw-secret@{}\"\nclient_id = \"gw-fault\"\n",
        mosquitto.address
    ))
    .await;
    let flows = Flows::start(&gateway, Broker::External(mosquitto.address), None).await;
    flows.wait_progress(0.3).await;
    mosquitto.restart_gracefully().await;
    let reports = flows.finish("Mosquitto restart").await;
    for (name, report) in reports {
        assert_eq!(report.routed_twice, 0, "{name}: the gateway itself did not restart, so no resend is routed twice");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_sockets_dropping_lose_no_acknowledged_message_and_duplicate_none() {
    let prosody = Prosody::start(&["xs", "xr"]).await;
    let gateway = GatewayProcess::start(&prosody.gateway_config()).await;
    let flows = Flows::start(&gateway, embedded(&gateway), Some(&prosody)).await;
    for share in [0.2, 0.4, 0.6, 0.8] {
        flows.wait_progress(share).await;
        flows.drop_mqtt_sockets();
    }
    let reports = flows.finish("MQTT sockets dropped 4 times").await;
    for (name, report) in reports {
        assert_eq!(report.routed_twice, 0, "{name}: the gateway itself did not restart, so no resend is routed twice");
    }
}
