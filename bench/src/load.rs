//! Load generation: MQTT senders and receivers (rumqttc), the sending loop shared with the
//! WebSocket (`ws.rs`), XMPP (`xmpp.rs`) and component (`component.rs`) senders, and the recorder that checks every message arrived once and
//! measures its latency.
//!
//! Every message body is `m:<case>:<sender>:<seq>:<ns>`, `ns` being the send time in nanoseconds
//! since a process-wide origin, so the receiver (same process) computes the end-to-end latency;
//! `case` tells this case's messages from late ones of an earlier case. Warm-up messages are
//! `w:<case>:<sender>` and are not measured.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rumqttc::{AsyncClient, ConnectReturnCode, Event, MqttOptions, NetworkOptions, Packet, QoS, SubscribeReasonCode};
use serde::Deserialize;
use tokio::sync::{Notify, Semaphore, mpsc};
use tokio::task::JoinHandle;
use xmpp_parsers::jid::Jid;
use xmpp_parsers::message::{Lang, Message};
use xmpp_parsers::stanza::Stanza;

/// Bound on every connect/subscribe/warm-up step.
pub const SETUP_WAIT: Duration = Duration::from_secs(15);

static ORIGIN: OnceLock<Instant> = OnceLock::new();

pub fn now_ns() -> u64 {
    u64::try_from(ORIGIN.get_or_init(Instant::now).elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// `at` on the clock of `now_ns` (an instant taken in this process, by another task or thread).
pub fn ns_at(at: Instant) -> u64 {
    u64::try_from(at.saturating_duration_since(*ORIGIN.get_or_init(Instant::now)).as_nanos()).unwrap_or(u64::MAX)
}

pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The fields of a frame that the benchmark looks at.
#[derive(Deserialize)]
struct Frame {
    #[serde(rename = "type")]
    kind: String,
    body: Option<String>,
    code: Option<String>,
}

/// What the receiving side saw.
pub struct Recorder {
    inner: Mutex<RecorderInner>,
    /// Signalled once every measured message has arrived.
    pub all_received: Notify,
    /// Signalled once every sender's warm-up message has arrived.
    pub all_warm: Notify,
}

struct RecorderInner {
    /// The case tag its messages carry.
    tag: u64,
    seen: Vec<Vec<bool>>,
    warm: Vec<bool>,
    warm_count: usize,
    expected: usize,
    distinct: usize,
    duplicates: usize,
    other: usize,
    errors: Vec<String>,
    latencies_ns: Vec<u64>,
    last_ns: u64,
    /// Senders without a per-message ack (XMPP): each message received from sender `k` frees one
    /// place in `credit[k]`'s window.
    credit: Vec<Arc<SenderState>>,
}

impl Recorder {
    /// `counts[k]` = how many messages sender `k` will send; `tag` = the case tag in their bodies.
    pub fn new(counts: &[usize], tag: u64) -> Arc<Self> {
        let expected = counts.iter().sum();
        Arc::new(Self {
            inner: Mutex::new(RecorderInner {
                tag,
                seen: counts.iter().map(|&n| vec![false; n]).collect(),
                warm: vec![false; counts.len()],
                warm_count: 0,
                expected,
                distinct: 0,
                duplicates: 0,
                other: 0,
                errors: Vec::new(),
                latencies_ns: Vec::with_capacity(expected),
                last_ns: 0,
                credit: Vec::new(),
            }),
            all_received: Notify::new(),
            all_warm: Notify::new(),
        })
    }

    /// Lowers the number of messages awaited to `total` (the senders were stopped early); signals
    /// `all_received` if they are all in already.
    pub fn expect(&self, total: usize) {
        let mut inner = lock(&self.inner);
        inner.expected = total;
        if inner.distinct >= total {
            self.all_received.notify_one();
        }
    }

    /// Windows of senders that have no per-message ack, indexed like the senders.
    pub fn credit_senders(&self, senders: Vec<Arc<SenderState>>) {
        lock(&self.inner).credit = senders;
    }

    /// The body of a message that arrived as a stanza (XMPP).
    pub fn on_text(&self, body: &str) {
        let now = now_ns();
        let mut inner = lock(&self.inner);
        inner.on_body(body, now, self);
    }

    /// An error that reached the receiver instead of a message.
    pub fn on_error(&self, what: String) {
        let mut inner = lock(&self.inner);
        if inner.errors.len() < 10 {
            inner.errors.push(what);
        }
    }

    pub fn on_payload(&self, payload: &[u8]) {
        let now = now_ns();
        let Ok(frame) = serde_json::from_slice::<Frame>(payload) else {
            lock(&self.inner).other += 1;
            return;
        };
        let mut inner = lock(&self.inner);
        match (frame.kind.as_str(), frame.body.as_deref()) {
            ("message", Some(body)) => inner.on_body(body, now, self),
            ("error", _) => {
                let code = frame.code.unwrap_or_default();
                if inner.errors.len() < 10 {
                    inner.errors.push(code);
                }
            }
            _ => inner.other += 1,
        }
    }

    pub fn report(&self) -> Received {
        let inner = lock(&self.inner);
        let mut latencies = inner.latencies_ns.clone();
        latencies.sort_unstable();
        Received {
            distinct: inner.distinct,
            duplicates: inner.duplicates,
            errors: inner.errors.clone(),
            latencies_ns: latencies,
            last_ns: inner.last_ns,
        }
    }
}

impl RecorderInner {
    fn on_body(&mut self, body: &str, now: u64, recorder: &Recorder) {
        let mut parts = body.split(':');
        let kind = parts.next();
        if parts.next().and_then(|tag| tag.parse::<u64>().ok()) != Some(self.tag) {
            // Late, from an earlier case (or not ours at all).
            self.other += 1;
            return;
        }
        match kind {
            Some("w") => {
                if let Some(k) = parts.next().and_then(|k| k.parse::<usize>().ok())
                    && k < self.warm.len()
                    && !self.warm[k]
                {
                    self.warm[k] = true;
                    self.warm_count += 1;
                    if self.warm_count == self.warm.len() {
                        recorder.all_warm.notify_one();
                    }
                }
            }
            Some("m") => {
                let k = parts.next().and_then(|v| v.parse::<usize>().ok());
                let seq = parts.next().and_then(|v| v.parse::<usize>().ok());
                let sent = parts.next().and_then(|v| v.parse::<u64>().ok());
                let (Some(k), Some(seq), Some(sent)) = (k, seq, sent) else {
                    self.other += 1;
                    return;
                };
                let Some(slot) = self.seen.get_mut(k).and_then(|s| s.get_mut(seq)) else {
                    self.other += 1;
                    return;
                };
                if *slot {
                    self.duplicates += 1;
                    return;
                }
                *slot = true;
                self.distinct += 1;
                self.latencies_ns.push(now.saturating_sub(sent));
                self.last_ns = now;
                if let Some(sender) = self.credit.get(k) {
                    sender.window.add_permits(1);
                }
                if self.distinct == self.expected {
                    recorder.all_received.notify_one();
                }
            }
            _ => self.other += 1,
        }
    }
}

pub struct Received {
    pub distinct: usize,
    pub duplicates: usize,
    pub errors: Vec<String>,
    /// Sorted.
    pub latencies_ns: Vec<u64>,
    pub last_ns: u64,
}

impl Received {
    pub fn percentile_ms(&self, p: f64) -> Option<f64> {
        if self.latencies_ns.is_empty() {
            return None;
        }
        let len = self.latencies_ns.len();
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, clippy::cast_precision_loss)]
        let index = ((len as f64 * p / 100.0).ceil() as usize).clamp(1, len) - 1;
        #[allow(clippy::cast_precision_loss)]
        Some(self.latencies_ns[index] as f64 / 1e6)
    }
}

/// How a sender learns that a message left its window.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum AckKind {
    /// The broker's PUBACK (plain MQTT broker).
    PubAck,
    /// The gateway's `ack` (or `error`) frame on the sender's own `in` topic.
    Frame,
    /// None: the window is freed by the receiver's progress (XMPP c2s has no per-message ack), or
    /// by an error stanza bounced to the sender.
    Receiver,
}

/// Sender-side counters, fed by the connection's event loop.
pub struct SenderState {
    pub ack_kind: AckKind,
    /// Closed-loop window: one permit per message that may be outstanding.
    pub window: Semaphore,
    pub acks: AtomicUsize,
    pub puback: AtomicUsize,
    pub error_count: AtomicUsize,
    pub errors: Mutex<Vec<String>>,
    pub all_acked: Notify,
    pub expected_acks: AtomicUsize,
}

impl SenderState {
    pub fn new(ack_kind: AckKind, window: usize) -> Arc<Self> {
        Arc::new(Self {
            ack_kind,
            window: Semaphore::new(window),
            acks: AtomicUsize::new(0),
            puback: AtomicUsize::new(0),
            error_count: AtomicUsize::new(0),
            errors: Mutex::new(Vec::new()),
            all_acked: Notify::new(),
            expected_acks: AtomicUsize::new(usize::MAX),
        })
    }

    fn settled(&self) {
        let done = self.acks.load(Ordering::Relaxed) + self.error_count.load(Ordering::Relaxed);
        if done == self.expected_acks.load(Ordering::Relaxed) {
            self.all_acked.notify_one();
        }
    }

    fn on_puback(&self) {
        self.puback.fetch_add(1, Ordering::Relaxed);
        if self.ack_kind == AckKind::PubAck {
            self.acks.fetch_add(1, Ordering::Relaxed);
            self.window.add_permits(1);
            self.settled();
        }
    }

    /// An error stanza bounced back to an XMPP sender: that message will not arrive.
    pub fn on_error_stanza(&self, text: String) {
        self.error_count.fetch_add(1, Ordering::Relaxed);
        let mut errors = lock(&self.errors);
        if errors.len() < 5 {
            errors.push(text);
        }
        drop(errors);
        self.window.add_permits(1);
    }

    pub fn on_frame(&self, payload: &[u8]) {
        let Ok(frame) = serde_json::from_slice::<Frame>(payload) else { return };
        match frame.kind.as_str() {
            "ack" => {
                self.acks.fetch_add(1, Ordering::Relaxed);
                self.window.add_permits(1);
                self.settled();
            }
            "error" => {
                self.error_count.fetch_add(1, Ordering::Relaxed);
                let mut errors = lock(&self.errors);
                if errors.len() < 5 {
                    errors.push(String::from_utf8_lossy(payload).into_owned());
                }
                drop(errors);
                self.window.add_permits(1);
                self.settled();
            }
            _ => {}
        }
    }
}

enum Role {
    Sender(Arc<SenderState>),
    Receiver(Arc<Recorder>),
}

/// One rumqttc connection whose event loop runs in its own task.
pub struct MqttConn {
    pub client: AsyncClient,
    task: JoinHandle<()>,
    failure: Arc<Mutex<Option<String>>>,
    presence: Option<String>,
}

impl Drop for MqttConn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub struct MqttSpec<'a> {
    pub port: u16,
    pub client_id: String,
    /// (username, password)
    pub credentials: Option<(&'a str, &'a str)>,
    pub subscribe: Option<String>,
    /// A user of an external broker: her retained presence topic, `available` once subscribed and
    /// `unavailable` before a clean DISCONNECT, as docs/mosquitto.md asks of clients.
    pub presence: Option<String>,
}

impl MqttConn {
    pub async fn sender(spec: MqttSpec<'_>, state: Arc<SenderState>) -> anyhow::Result<Self> {
        Self::connect(spec, Role::Sender(state)).await
    }

    pub async fn receiver(spec: MqttSpec<'_>, recorder: Arc<Recorder>) -> anyhow::Result<Self> {
        Self::connect(spec, Role::Receiver(recorder)).await
    }

    pub fn failure(&self) -> Option<String> {
        lock(&self.failure).clone()
    }

    async fn connect(spec: MqttSpec<'_>, role: Role) -> anyhow::Result<Self> {
        let mut options = MqttOptions::new(spec.client_id.clone(), "127.0.0.1", spec.port);
        if let Some((user, password)) = spec.credentials {
            options.set_credentials(user, password);
        }
        options.set_keep_alive(Duration::from_secs(30));
        options.set_clean_session(true);
        options.set_max_packet_size(1 << 16, 1 << 16);
        options.set_inflight(100);
        // A short request queue: the send timestamp is taken close to the wire (NOTES.md).
        let (client, mut eventloop) = AsyncClient::new(options, 16);
        let mut network = NetworkOptions::new();
        network.set_tcp_nodelay(true);
        network.set_connection_timeout(10);
        eventloop.set_network_options(network);

        let connected = Arc::new(Notify::new());
        let subscribed = Arc::new(Notify::new());
        let failure = Arc::new(Mutex::new(None::<String>));
        let task = {
            let (connected, subscribed, failure) = (connected.clone(), subscribed.clone(), failure.clone());
            tokio::spawn(async move {
                loop {
                    match eventloop.poll().await {
                        Ok(Event::Incoming(Packet::Publish(publish))) => match &role {
                            Role::Receiver(recorder) => recorder.on_payload(&publish.payload),
                            Role::Sender(state) => state.on_frame(&publish.payload),
                        },
                        Ok(Event::Incoming(Packet::PubAck(_))) => {
                            if let Role::Sender(state) = &role {
                                state.on_puback();
                            }
                        }
                        Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                            if ack.code == ConnectReturnCode::Success {
                                connected.notify_one();
                            } else {
                                *lock(&failure) = Some(format!("CONNACK {:?}", ack.code));
                                return;
                            }
                        }
                        Ok(Event::Incoming(Packet::SubAck(ack))) => {
                            if ack.return_codes.iter().all(|c| matches!(c, SubscribeReasonCode::Success(_))) {
                                subscribed.notify_one();
                            } else {
                                *lock(&failure) = Some(format!("SUBACK {:?}", ack.return_codes));
                                return;
                            }
                        }
                        Ok(_) => {}
                        Err(error) => {
                            // No reconnection: a broken connection must show up as lost messages.
                            *lock(&failure) = Some(error.to_string());
                            return;
                        }
                    }
                }
            })
        };
        let conn = Self { client, task, failure, presence: spec.presence };
        if tokio::time::timeout(SETUP_WAIT, connected.notified()).await.is_err() || conn.failure().is_some() {
            bail!("{}: no CONNACK ({})", spec.client_id, conn.failure().unwrap_or_else(|| "timeout".into()));
        }
        if let Some(topic) = spec.subscribe {
            tokio::time::timeout(SETUP_WAIT, conn.client.subscribe(topic.clone(), QoS::AtLeastOnce))
                .await
                .context("subscribe request timed out")??;
            if tokio::time::timeout(SETUP_WAIT, subscribed.notified()).await.is_err() || conn.failure().is_some() {
                bail!(
                    "{}: no SUBACK for {topic} ({})",
                    spec.client_id,
                    conn.failure().unwrap_or_else(|| "timeout".into())
                );
            }
        }
        if let Some(topic) = &conn.presence {
            tokio::time::timeout(SETUP_WAIT, conn.client.publish(topic, QoS::AtLeastOnce, true, presence("available")))
                .await
                .context("presence request timed out")??;
        }
        Ok(conn)
    }

    pub async fn close(self) {
        if let Some(topic) = &self.presence {
            let unavailable = self.client.publish(topic, QoS::AtLeastOnce, true, presence("unavailable"));
            let _ = tokio::time::timeout(Duration::from_secs(1), unavailable).await;
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), self.client.disconnect()).await;
        // Give the event loop a moment to write DISCONNECT; Drop aborts the task.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn presence(show: &str) -> String {
    format!(r#"{{"type":"presence","show":"{show}"}}"#)
}

/// How a sender paces itself.
#[derive(Clone, Copy)]
pub enum Pace {
    /// As fast as its window of unacknowledged messages allows.
    Closed,
    /// Open loop: the whole group sends `rate` messages per second, senders interleaved.
    Rate { rate: f64, senders: usize },
}

pub struct SendPlan {
    pub index: usize,
    pub count: usize,
    /// The case tag.
    pub tag: u64,
    pub outlet: Outlet,
    pub pace: Pace,
    pub start: tokio::time::Instant,
    /// Closed loop: no message is started after this (a saturation case's sending time budget, so
    /// that a slow path sends fewer messages instead of running into the deadline).
    pub stop_sending: tokio::time::Instant,
    pub deadline: tokio::time::Instant,
}

/// What a sender did.
#[derive(Clone, Copy, Default)]
pub struct Sent {
    /// Messages handed to the connection.
    pub count: usize,
    /// It stopped early because the sending time budget was over (not a failure).
    pub cut: bool,
    /// It sent its whole plan.
    pub complete: bool,
}

/// Where a sender's messages go.
#[derive(Clone)]
pub enum Outlet {
    /// A gateway `message` frame to `to`, published QoS 1 on `topic` (Mosquitto gets the same JSON
    /// as an opaque payload).
    Mqtt { client: AsyncClient, topic: String, to: String },
    /// A `<message type='chat'>` to `to`, into an XMPP connection's outgoing queue.
    Xmpp { queue: mpsc::Sender<Box<Stanza>>, to: Jid },
    /// A gateway `message` frame to `to`, as a WebSocket text frame (the bare relay gets the same).
    Ws { queue: mpsc::Sender<String>, to: String },
    /// A `<message type='chat'>` to `to` from the bare component's sender of this index.
    Component { queue: mpsc::Sender<String>, to: String },
}

impl Outlet {
    /// Hands one message (`seq`, or the warm-up one) to the connection; false if it is gone.
    pub async fn send(&self, tag: u64, index: usize, seq: Option<usize>) -> bool {
        match self {
            Self::Mqtt { client, topic, to } => {
                let payload = frame(tag, index, seq, to);
                client.publish(topic.clone(), QoS::AtLeastOnce, false, payload).await.is_ok()
            }
            Self::Xmpp { queue, to } => {
                let message = Message::chat(Some(to.clone())).with_body(Lang::new(), body(tag, index, seq));
                queue.send(Box::new(Stanza::Message(message))).await.is_ok()
            }
            Self::Ws { queue, to } => queue.send(frame(tag, index, seq, to)).await.is_ok(),
            Self::Component { queue, to } => {
                queue.send(crate::component::message(index, to, &body(tag, index, seq))).await.is_ok()
            }
        }
    }
}

pub fn body(tag: u64, index: usize, seq: Option<usize>) -> String {
    match seq {
        Some(seq) => format!("m:{tag}:{index}:{seq}:{}", now_ns()),
        None => format!("w:{tag}:{index}"),
    }
}

pub fn frame(tag: u64, index: usize, seq: Option<usize>, to: &str) -> String {
    let body = body(tag, index, seq);
    let id = seq.map_or_else(|| format!("w{index}"), |seq| format!("{index}-{seq}"));
    format!(r#"{{"type":"message","id":"{id}","to":"{to}","body":"{body}"}}"#)
}

/// Sends `plan.count` messages (closed loop: fewer if its time budget runs out).
pub async fn send(state: Arc<SenderState>, plan: SendPlan) -> Sent {
    let mut sent = Sent::default();
    for seq in 0..plan.count {
        match plan.pace {
            Pace::Closed => {
                let budget = plan.stop_sending.min(plan.deadline);
                match tokio::time::timeout_at(budget, state.window.acquire()).await {
                    Ok(Ok(permit)) => permit.forget(),
                    Err(_) if budget < plan.deadline => {
                        sent.cut = true;
                        return sent;
                    }
                    _ => return sent,
                }
            }
            Pace::Rate { rate, senders } => {
                #[allow(clippy::cast_precision_loss)]
                let slot = (seq * senders + plan.index) as f64 / rate;
                let at = plan.start + Duration::from_secs_f64(slot);
                if at >= plan.deadline {
                    break;
                }
                tokio::time::sleep_until(at).await;
            }
        }
        match tokio::time::timeout_at(plan.deadline, plan.outlet.send(plan.tag, plan.index, Some(seq))).await {
            Ok(true) => sent.count += 1,
            _ => return sent,
        }
    }
    sent.complete = true;
    sent
}
