//! The gateway as a client of an external broker (Mosquitto, EMQX, …).
//!
//! The broker authenticates users and enforces the per-user topic ACL (docs/mosquitto.md); the
//! gateway's own account reads every `out` and `presence` topic and writes every `in` topic.
//! Delivery is at least once both ways:
//! - inbound PUBLISHes are acked by hand, only once the router has settled the frame;
//! - outbound PUBLISHes count as delivered when the broker PUBACKs them. A user's retained
//!   presence tells whether she is online; while she is not, her messages wait in the store.
//!
//! rumqttc reconnects immediately and forever; the poll task adds the backoff, and every CONNACK
//! re-subscribes, which also makes the broker send the retained presences again.
//!
//! `mqtts://` (or `ssl://`) connects with TLS, trusting the system's CAs and `mqtt.ca_file`. A
//! certificate the gateway does not trust is a failed connection like any other: retried with
//! backoff, `mqtt` failing in `/healthz` meanwhile.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Outgoing, Packet, Publish, QoS, TlsConfiguration, Transport};
use switchboard_frames::{ClientFrame, FrameCounters, FrameSession, ServerFrame, parse_client_frame};
use switchboard_gateway::router::{Delivered, Outbound, RouterError, RouterHandle, SessionLease};
use switchboard_gateway::tls::{self, TlsError, rustls::ClientConfig};
use switchboard_gateway::{AdapterContext, AdapterError, Show, UserId};
use tokio::sync::mpsc;
use tokio::task::AbortHandle;

use crate::adapter::NAME;
use crate::config::MqttSettings;
use crate::topics::TopicKind;

mod collision;
#[cfg(test)]
mod fake_broker;
mod requests;
use requests::Requests;

pub(crate) const HEALTH: &str = "mqtt";
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Why the external broker cannot be used, naming the configuration key.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BrokerError {
    #[error("mqtt.url: cannot read the broker address")]
    Url,
    #[error(transparent)]
    Tls(#[from] TlsError),
}

/// The broker to connect to, and how.
pub(crate) struct Broker {
    url: BrokerUrl,
    /// Present for `mqtts://`.
    tls: Option<Arc<ClientConfig>>,
}

impl Broker {
    pub fn new(url: &str, ca_file: Option<&Path>) -> Result<Self, BrokerError> {
        let url = BrokerUrl::parse(url).ok_or(BrokerError::Url)?;
        let tls = match url.tls {
            true => Some(tls::client_config(ca_file.map(|path| ("mqtt.ca_file", path)))?),
            false => None,
        };
        Ok(Self { url, tls })
    }
}

/// `mqtt://user:password@host:port`, with `%XX` escapes in user and password; `mqtts://` for TLS.
#[derive(Debug, PartialEq, Eq)]
struct BrokerUrl {
    host: String,
    port: u16,
    credentials: Option<(String, String)>,
    tls: bool,
}

impl BrokerUrl {
    fn parse(url: &str) -> Option<Self> {
        let (rest, tls) = match url.split_once("://")? {
            ("mqtt" | "tcp", rest) => (rest, false),
            ("mqtts" | "ssl", rest) => (rest, true),
            _ => return None,
        };
        let rest = rest.trim_end_matches('/');
        let (credentials, address) = match rest.rsplit_once('@') {
            Some((credentials, address)) => {
                let (user, password) = credentials.split_once(':').unwrap_or((credentials, ""));
                (Some((percent_decode(user)?, percent_decode(password)?)), address)
            }
            None => (None, rest),
        };
        let (host, port) = match address.rsplit_once(':') {
            Some((host, port)) => (host, port.parse().ok()?),
            None => (address, if tls { 8883 } else { 1883 }),
        };
        if host.is_empty() {
            return None;
        }
        Some(Self { host: host.to_owned(), port, credentials, tls })
    }
}

fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'%' {
            let hex = text.get(index + 1..index + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            index += 3;
        } else {
            out.push(bytes[index]);
            index += 1;
        }
    }
    String::from_utf8(out).ok()
}

pub(crate) async fn run(broker: Broker, settings: MqttSettings, context: AdapterContext) -> Result<(), AdapterError> {
    let Broker { url: broker, tls } = broker;
    let mut options = MqttOptions::new(settings.client_id.clone(), broker.host.clone(), broker.port);
    if let Some((user, password)) = &broker.credentials {
        options.set_credentials(user.clone(), password.clone());
    }
    if let Some(config) = tls {
        // The certificate is checked against the URL's host name (or IP address).
        options.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(config)));
    }
    // A persistent session, so the broker keeps queueing users' frames while the gateway is away.
    options.set_clean_session(false);
    options.set_manual_acks(true);
    options.set_keep_alive(Duration::from_secs(30));
    options.set_max_packet_size(settings.max_packet_bytes, settings.max_packet_bytes);
    options.set_inflight(100);
    let (client, eventloop) = AsyncClient::new(options, 256);

    // Unbounded on purpose: the poll task must never wait on the bridge, or a bridge waiting for
    // room in rumqttc's request queue would deadlock with it. Its growth is bounded by the
    // broker's in-flight window (manual acks) and by the bridge's own publishes.
    let (events_tx, events) = mpsc::unbounded_channel::<Polled>();
    let poller = tokio::spawn(poll(eventloop, events_tx));
    let (deliveries_tx, deliveries) = mpsc::channel(1024);
    let mut bridge = Bridge {
        requests: Requests::new(client),
        settings,
        context,
        sessions: HashMap::new(),
        counters: FrameCounters::new(NAME),
        online: HashMap::new(),
        deliveries_tx,
        inflight: HashMap::new(),
    };
    bridge.run(events, deliveries).await;
    poller.abort();
    Ok(())
}

/// What the poll task tells the bridge.
enum Polled {
    Event(Event),
    /// A CONNACK, and how many publishes rumqttc sends again on it before anything new.
    Connected { ack: rumqttc::ConnAck, resent: usize },
    /// `poll` failed; `was_connected` if a live connection was lost (rather than an attempt to
    /// connect failing), which is when rumqttc moves what it will send again to `pending`.
    Lost { error: String, was_connected: bool },
}

/// Polls rumqttc alone in its task (its `poll` is not cancel-safe), with a backoff between
/// reconnection attempts.
async fn poll(mut eventloop: EventLoop, events: mpsc::UnboundedSender<Polled>) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let was_connected = eventloop.network.is_some();
        match eventloop.poll().await {
            Ok(event) => {
                let polled = match event {
                    Event::Incoming(Packet::ConnAck(ack)) => {
                        backoff = Duration::from_millis(100);
                        Polled::Connected { ack, resent: requests::resent_publishes(&eventloop) }
                    }
                    event => Polled::Event(event),
                };
                if events.send(polled).is_err() {
                    return;
                }
            }
            Err(error) => {
                collision::release(&mut eventloop);
                // Announcements of the dead connection not yet returned: those publishes are in
                // `pending`, counted in `resent`, and announced again when sent.
                eventloop.state.events.retain(|event| !matches!(event, Event::Outgoing(Outgoing::Publish(_))));
                if events.send(Polled::Lost { error: error.to_string(), was_connected }).is_err() {
                    return;
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

type Settled = BoxFuture<'static, (Publish, UserId, Option<ServerFrame>)>;

struct Bridge {
    requests: Requests,
    settings: MqttSettings,
    context: AdapterContext,
    /// Frame handling per user who has published.
    sessions: HashMap<UserId, FrameSession>,
    counters: FrameCounters,
    /// Users whose retained presence says they are online, with the task that forwards their
    /// deliveries.
    online: HashMap<UserId, AbortHandle>,
    deliveries_tx: mpsc::Sender<(UserId, Outbound)>,
    /// Proofs by packet id until the broker PUBACKs.
    inflight: HashMap<u16, Option<Delivered>>,
}

impl Bridge {
    async fn run(
        &mut self,
        mut events: mpsc::UnboundedReceiver<Polled>,
        mut deliveries: mpsc::Receiver<(UserId, Outbound)>,
    ) {
        let mut settling: FuturesUnordered<Settled> = FuturesUnordered::new();
        let shutdown = self.context.shutdown.clone();
        loop {
            // While the broker is behind, new work waits where it is: deliveries in the router's
            // queues, inbound frames unacknowledged in the broker's in-flight window. Its events
            // are always read, since they are what make room.
            let room = self.requests.has_room();
            tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                Some((publish, user, frame)) = settling.next(), if room && !settling.is_empty() => {
                    if let Some(frame) = frame {
                        self.publish_frame(&user, &frame, None);
                    }
                    // Acked only now: a crash before this point makes the broker send it again.
                    self.requests.ack(publish);
                }
                Some((user, Outbound { envelope, delivered })) = deliveries.recv(), if room => {
                    let frame = self.session(&user).frame_for(&envelope);
                    match frame {
                        Some(frame) => self.publish_frame(&user, &frame, delivered),
                        None => if let Some(delivered) = delivered { delivered.confirm() },
                    }
                }
                event = events.recv() => {
                    let Some(event) = event else { break };
                    if let Some(settle) = self.on_event(event).await {
                        settling.push(settle);
                    }
                }
            }
            // Every request rumqttc takes from its queue comes back as an event: room again.
            self.requests.send_unsent();
        }
        // Settle what was accepted before shutdown, within the gateway's grace period.
        while let Some((publish, user, frame)) = settling.next().await {
            if let Some(frame) = frame {
                self.publish_frame(&user, &frame, None);
            }
            self.requests.ack(publish);
        }
        self.go_offline_all();
        let _ = self.requests.client().disconnect().await;
    }

    fn session(&mut self, user: &UserId) -> &FrameSession {
        self.sessions.entry(user.clone()).or_insert_with(|| {
            FrameSession::new(
                user.clone(),
                self.context.router.clone(),
                switchboard_frames::RateLimiter::new(self.settings.messages_per_second),
                self.settings.max_frame_bytes,
                self.counters.clone(),
            )
        })
    }

    async fn on_event(&mut self, event: Polled) -> Option<Settled> {
        match event {
            Polled::Lost { error, was_connected } => {
                tracing::warn!(%error, "external broker connection lost; retrying");
                self.context.health.set(HEALTH, false);
                // Unconfirmed deliveries go back to the store, and users count as offline until
                // the broker tells their presence again.
                self.requests.connection_lost(was_connected);
                self.inflight.clear();
                self.go_offline_all();
                None
            }
            Polled::Connected { ack, resent } => {
                tracing::info!(session_present = ack.session_present, resent, "connected to the external broker");
                // Those packet ids belonged to the last connection: the broker sends their
                // messages again (same id, so the resend record answers them) and they are acked
                // then.
                self.requests.connected(resent);
                self.context.health.set(HEALTH, true);
                let topics = &self.settings.topics;
                for filter in [topics.all(TopicKind::Out), topics.all(TopicKind::Presence)] {
                    if let Err(error) = self.requests.client().try_subscribe(filter, QoS::AtLeastOnce) {
                        tracing::warn!(%error, "cannot subscribe on the external broker");
                    }
                }
                None
            }
            Polled::Event(Event::Outgoing(Outgoing::Publish(pkid))) => {
                let proof = self.requests.published();
                if pkid != 0 {
                    self.inflight.insert(pkid, proof);
                }
                None
            }
            Polled::Event(Event::Incoming(Packet::PubAck(ack))) => {
                if let Some(Some(delivered)) = self.inflight.remove(&ack.pkid) {
                    delivered.confirm();
                }
                None
            }
            Polled::Event(Event::Incoming(Packet::Publish(publish))) => self.on_publish(publish).await,
            Polled::Event(_) => None,
        }
    }

    async fn on_publish(&mut self, publish: Publish) -> Option<Settled> {
        let Some((user, kind)) = self.settings.topics.parse(&publish.topic) else {
            self.requests.ack(publish);
            return None;
        };
        match kind {
            TopicKind::Out => {
                let reply = self.session(&user).accept(&publish.payload).await;
                Some(Box::pin(async move { (publish, user, reply.settle().await) }))
            }
            TopicKind::Presence => {
                let show = match parse_client_frame(&publish.payload, self.settings.max_frame_bytes) {
                    Ok(ClientFrame::Presence(presence)) => Some(presence.show),
                    _ => None,
                };
                match show {
                    Some(Show::Unavailable) => self.go_offline(&user),
                    Some(_) => self.go_online(&user).await,
                    // An empty retained message (cleared presence) or garbage: nothing to do.
                    None => {}
                }
                let reply = match show {
                    Some(_) => Some(self.session(&user).accept(&publish.payload).await),
                    None => None,
                };
                Some(Box::pin(async move {
                    if let Some(reply) = reply {
                        let _ = reply.settle().await;
                    }
                    (publish, user, None)
                }))
            }
            TopicKind::In => {
                self.requests.ack(publish);
                None
            }
        }
    }

    async fn go_online(&mut self, user: &UserId) {
        if self.online.contains_key(user) {
            return;
        }
        let lease = match self.context.router.open_session(user.clone(), NAME).await {
            Ok(lease) => lease,
            Err(error) => {
                tracing::error!(user = %user, %error, "cannot open session");
                return;
            }
        };
        lease.set_deliverable().await;
        let task = tokio::spawn(forward_session(lease, user.clone(), self.context.router.clone(), self.deliveries_tx.clone()));
        self.online.insert(user.clone(), task.abort_handle());
    }

    fn go_offline(&mut self, user: &UserId) {
        if let Some(task) = self.online.remove(user) {
            task.abort();
        }
    }

    fn go_offline_all(&mut self) {
        for (_, task) in self.online.drain() {
            task.abort();
        }
    }

    fn publish_frame(&mut self, user: &UserId, frame: &ServerFrame, delivered: Option<Delivered>) {
        let text = self.session(user).render(frame);
        let topic = self.settings.topics.topic(user, TopicKind::In);
        self.requests.publish(topic, text.into_bytes(), delivered);
    }
}

/// Hands the session's deliveries to the bridge while she is online at the broker. The router
/// ends a session the bridge does not keep up with (a broker that takes nothing for
/// `slow_consumer_timeout`); she is still online, so a new session takes over and is given first
/// what was stored for her meanwhile. Ends when the bridge or the router stops, or when she goes
/// offline (the task is aborted).
async fn forward_session(
    mut lease: SessionLease,
    user: UserId,
    router: RouterHandle,
    forward: mpsc::Sender<(UserId, Outbound)>,
) {
    loop {
        while let Some(outbound) = lease.outbound.recv().await {
            if forward.send((user.clone(), outbound)).await.is_err() {
                return;
            }
        }
        drop(lease);
        tracing::info!(user = %user, "bridged session ended by the router; opening a new one");
        // Not at once: the broker that was too slow a moment ago gets a breath first. A refusal
        // (too many sessions, the store) is tried again, or she would stay online without one.
        let mut pause = Duration::from_secs(1);
        lease = loop {
            tokio::time::sleep(pause).await;
            match router.open_session(user.clone(), NAME).await {
                Ok(lease) => break lease,
                Err(RouterError::Stopped) => return,
                Err(error) => {
                    pause = (pause * 2).min(Duration::from_secs(30));
                    tracing::warn!(user = %user, %error, retry_in = ?pause, "cannot reopen bridged session");
                }
            }
        };
        lease.set_deliverable().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_urls_are_read_with_credentials_and_defaults() {
        assert_eq!(
            BrokerUrl::parse("mqtt://gw:p%40ss@127.0.0.1:1884"),
            Some(BrokerUrl { host: "127.0.0.1".into(), port: 1884, credentials: Some(("gw".into(), "p@ss".into())), tls: false })
        );
        assert_eq!(
            BrokerUrl::parse("mqtt://broker.example"),
            Some(BrokerUrl { host: "broker.example".into(), port: 1883, credentials: None, tls: false })
        );
        assert_eq!(BrokerUrl::parse("http://x"), None);
        assert_eq!(BrokerUrl::parse("mqtt://:1883"), None);
    }

    #[test]
    fn tls_urls_default_to_port_8883() {
        assert_eq!(
            BrokerUrl::parse("mqtts://gw:pw@broker.example"),
            Some(BrokerUrl { host: "broker.example".into(), port: 8883, credentials: Some(("gw".into(), "pw".into())), tls: true })
        );
        assert_eq!(
            BrokerUrl::parse("ssl://127.0.0.1:9883"),
            Some(BrokerUrl { host: "127.0.0.1".into(), port: 9883, credentials: None, tls: true })
        );
        assert_eq!(BrokerUrl::parse("mqtt://broker.example").map(|url| url.tls), Some(false));
    }

    #[test]
    fn an_unreadable_ca_file_is_named() {
        let error = Broker::new("mqtts://broker.example", Some(Path::new("/nonexistent/ca.pem"))).err().map(|e| e.to_string());
        assert!(error.as_deref().is_some_and(|e| e.starts_with("mqtt.ca_file")), "{error:?}");
        assert!(Broker::new("mqtts://broker.example", None).is_ok_and(|broker| broker.tls.is_some()));
        assert!(Broker::new("mqtt://broker.example", None).is_ok_and(|broker| broker.tls.is_none()));
    }
}
