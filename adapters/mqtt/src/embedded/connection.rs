//! One MQTT client of the embedded endpoint: CONNECT and authentication, then packets both ways
//! in one `select!` loop until either side ends. The same code serves the plain and the TLS
//! listener: it only sees the two halves of a stream.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::Poll;
use std::time::Duration;

use rumqttc::mqttbytes::Protocol;
use rumqttc::{
    ConnAck, Connect, ConnectReturnCode, Packet, PubAck, PubComp, PubRec, Publish, QoS, SubAck,
    SubscribeReasonCode, UnsubAck,
};
use switchboard_frames::{ClientFrame, Dormant, ErrorCode, FrameSession, Replies, Reply, ServerFrame, parse_client_frame};
use switchboard_gateway::metrics::ERRORS;
use switchboard_gateway::router::{Delivered, Outbound, SessionLease};
use switchboard_gateway::UserId;
use switchboard_gateway::auth::Login;
use tokio::io::{AsyncRead, AsyncWrite};

use super::Shared;
use super::io::{IoError, PacketReader, PacketWriter};
use crate::adapter::NAME;
use crate::topics::{self, TopicKind};

static NEXT_CONNECTION: AtomicU64 = AtomicU64::new(1);

/// Queued bytes, or loop turns, after which the buffer is written even if more work is ready.
const FLUSH_BYTES: usize = 32 * 1024;
const FLUSH_EVENTS: usize = 64;

pub(crate) async fn serve<R, W>(read_half: R, write_half: W, peer: SocketAddr, shared: Arc<Shared>)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut reader = PacketReader::new(read_half, shared.settings.max_packet_bytes);
    let mut writer = PacketWriter::new(write_half, shared.settings.write_timeout);
    // The handshake and the ending are boxed, and so gone while the session runs: a task is as
    // large as its largest await for its whole life, and these happen once.
    let Some(Opened { mut client, lease, connect, taken_over, valid_until, connection_id }) =
        Box::pin(open(&mut reader, &mut writer, peer, &shared)).await
    else {
        writer.shutdown().await;
        return;
    };
    let end = client.run(&mut reader, &mut writer, lease, &connect, taken_over, valid_until).await;
    Box::pin(close(client, end, &connect, writer, connection_id)).await;
}

/// A client that has its CONNACK and a session with the router.
struct Opened {
    client: Client,
    lease: SessionLease,
    connect: Connect,
    taken_over: tokio_util::sync::CancellationToken,
    valid_until: std::time::SystemTime,
    connection_id: u64,
}

/// Reads CONNECT, authenticates, opens the session and queues the CONNACK; `None` once a
/// refusal is queued or the client is gone.
async fn open<R, W>(
    reader: &mut PacketReader<R>,
    writer: &mut PacketWriter<W>,
    peer: SocketAddr,
    shared: &Arc<Shared>,
) -> Option<Opened>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut connect = match tokio::time::timeout(shared.settings.connect_timeout, read_connect(reader)).await {
        Ok(Ok(connect)) => connect,
        Ok(Err(ConnectError::Refuse(code))) => {
            writer.queue(&Packet::ConnAck(ConnAck::new(code, false)));
            return None;
        }
        Ok(Err(ConnectError::Io(error))) => {
            tracing::debug!(%peer, %error, "mqtt connection ended before CONNECT");
            return None;
        }
        Err(_) => {
            tracing::debug!(%peer, "no CONNECT in time");
            return None;
        }
    };
    let (user, valid_until) = match authenticate(&connect, shared) {
        Ok(login) => (login.user, login.valid_until),
        Err(code) => {
            tracing::info!(%peer, ?code, "mqtt login refused");
            metrics::counter!(ERRORS, "adapter" => NAME, "code" => "forbidden").increment(1);
            writer.queue(&Packet::ConnAck(ConnAck::new(code, false)));
            return None;
        }
    };
    // The CONNECT stays for its keep-alive and Will; the token in it is not kept that long.
    connect.login = None;
    // The Will's message is a slice of the read buffer, which it would keep whole (a read's
    // room, kilobytes) for the connection's life: it keeps a copy of its own bytes instead.
    if let Some(will) = &mut connect.last_will {
        will.message = bytes::Bytes::copy_from_slice(&will.message);
    }
    if connect.client_id.is_empty() && !connect.clean_session {
        writer.queue(&Packet::ConnAck(ConnAck::new(ConnectReturnCode::BadClientId, false)));
        return None;
    }
    let connection_id = NEXT_CONNECTION.fetch_add(1, Ordering::Relaxed);
    let client_id = if connect.client_id.is_empty() {
        format!("\0anonymous-{connection_id}")
    } else {
        connect.client_id.clone()
    };

    let lease = match shared.context.router.open_session(user.clone(), NAME).await {
        Ok(lease) => lease,
        Err(error) => {
            // Too many sessions, or the gateway cannot record her: "server unavailable" is the
            // MQTT 3.1.1 answer either way.
            tracing::info!(user = %user, %error, "cannot open session");
            metrics::counter!(ERRORS, "adapter" => NAME, "code" => "unavailable").increment(1);
            writer.queue(&Packet::ConnAck(ConnAck::new(ConnectReturnCode::ServiceUnavailable, false)));
            return None;
        }
    };
    let attached = shared.registry.attach(&user, &client_id, connection_id, connect.clean_session);
    writer.queue(&Packet::ConnAck(ConnAck::new(ConnectReturnCode::Success, attached.session_present)));
    tracing::debug!(user = %user, client_id = %connect.client_id, session_present = attached.session_present, "mqtt client connected");

    let session = FrameSession::new(
        user.clone(),
        shared.context.router.clone(),
        shared.limiter.clone(),
        shared.settings.max_frame_bytes,
        shared.counters.clone(),
    );
    let client = Client {
        shared: shared.clone(),
        session,
        in_topic: shared.settings.topics.topic(&user, TopicKind::In),
        user,
        client_id,
        subscription: attached.subscription,
        inflight: HashMap::new(),
        next_pkid: 0,
        awaiting_release: HashSet::new(),
        unconfirmed_writes: Vec::new(),
    };
    if client.subscription.is_some() {
        lease.set_deliverable().await;
    }
    Some(Opened { client, lease, connect, taken_over: attached.taken_over, valid_until, connection_id })
}

/// Releases what the session still holds, publishes the Will of a lost connection and closes.
async fn close<W: AsyncWrite + Unpin>(mut client: Client, end: End, connect: &Connect, mut writer: PacketWriter<W>, connection_id: u64) {
    // Unconfirmed deliveries are released now, so the mailbox stores them at once instead of
    // waiting for this task to end.
    client.inflight.clear();
    client.unconfirmed_writes.clear();
    match &end {
        End::Disconnect | End::Shutdown | End::TakenOver => {}
        End::Lost(reason) => {
            tracing::debug!(user = %client.user, %reason, "mqtt connection lost");
            client.publish_will(connect).await;
        }
    }
    writer.shutdown().await;
    client.shared.registry.detach(&client.user, &client.client_id, connection_id);
}

enum ConnectError {
    Refuse(ConnectReturnCode),
    Io(IoError),
}

async fn read_connect<R: AsyncRead + Unpin>(reader: &mut PacketReader<R>) -> Result<Connect, ConnectError> {
    // MQTT 3.1 ("MQIsdp", level 3) and MQTT 5 (level 5) clients get "unacceptable protocol
    // version", which they understand, rather than a dropped socket.
    match reader.peek_protocol_level().await.map_err(ConnectError::Io)? {
        Some(4) => {}
        _ => return Err(ConnectError::Refuse(ConnectReturnCode::RefusedProtocolVersion)),
    }
    match reader.next().await {
        Ok(Packet::Connect(connect)) if connect.protocol == Protocol::V4 => Ok(connect),
        Ok(Packet::Connect(_)) => Err(ConnectError::Refuse(ConnectReturnCode::RefusedProtocolVersion)),
        Ok(_) => Err(ConnectError::Io(IoError::Closed)),
        Err(error) => Err(ConnectError::Io(error)),
    }
}

/// username = user, password = a JWT for that user (CONTRACT §4).
fn authenticate(connect: &Connect, shared: &Shared) -> Result<Login, ConnectReturnCode> {
    let credentials = connect.login.as_ref().ok_or(ConnectReturnCode::BadUserNamePassword)?;
    let claimed = UserId::parse(&credentials.username).map_err(|_| ConnectReturnCode::BadUserNamePassword)?;
    let login = shared
        .context
        .auth
        .login(&credentials.password)
        .map_err(|_| ConnectReturnCode::BadUserNamePassword)?;
    if login.user != claimed {
        return Err(ConnectReturnCode::NotAuthorized);
    }
    Ok(login)
}

/// Why a connection ended; only a lost connection publishes the Last Will.
enum End {
    Disconnect,
    Shutdown,
    TakenOver,
    Lost(String),
}

/// The rare events looked at after deliveries.
enum Later {
    Shutdown,
    KeepAlive,
}

struct Client {
    shared: Arc<Shared>,
    session: FrameSession,
    user: UserId,
    client_id: String,
    in_topic: String,
    subscription: Option<QoS>,
    /// QoS 1 publishes to the client awaiting PUBACK, with the proof to resolve.
    inflight: HashMap<u16, Option<Delivered>>,
    next_pkid: u16,
    /// QoS 2 publishes from the client answered with PUBREC, awaiting PUBREL.
    awaiting_release: HashSet<u16>,
    /// QoS 0 deliveries, confirmed once the bytes are written.
    unconfirmed_writes: Vec<Delivered>,
}

impl Client {
    /// Not an `async fn`: one copies its arguments into its future beside the originals, and
    /// this future is kept by every connection for its whole life.
    #[allow(clippy::manual_async_fn)]
    fn run<'a, R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
        &'a mut self,
        reader: &'a mut PacketReader<R>,
        writer: &'a mut PacketWriter<W>,
        mut lease: SessionLease,
        connect: &'a Connect,
        taken_over: tokio_util::sync::CancellationToken,
        valid_until: std::time::SystemTime,
    ) -> impl Future<Output = End> + 'a {
        async move {
            // The connection ends with its token, as a WebSocket session does.
            let expiry = tokio::time::sleep(valid_until.duration_since(std::time::SystemTime::now()).unwrap_or_default());
            tokio::pin!(expiry);
            let keep_alive = (connect.keep_alive > 0).then(|| Duration::from_millis(u64::from(connect.keep_alive) * 1500));
            // One timer for the connection's life, moved only when it fires: re-arming a timer for
            // every packet would cost a timer-wheel update per message.
            let keep_alive_timer = tokio::time::sleep(keep_alive.unwrap_or(Duration::from_secs(86_400)));
            tokio::pin!(keep_alive_timer);
            let mut last_packet = tokio::time::Instant::now();
            // The PUBACK (or PUBREC) of each PUBLISH, sent with its frame's answer, in order.
            let mut answers: Replies<Option<PublishAck>> = Replies::default();
            // Created once, not per loop turn: each `cancelled()` future registers with its token.
            let taken_over = taken_over.cancelled_owned();
            tokio::pin!(taken_over);
            let shutdown = self.shared.context.shutdown.clone().cancelled_owned();
            tokio::pin!(shutdown);
            let kicked = lease.kicked();
            tokio::pin!(kicked);
            // The five above are polled only once one of them has woken the connection: those that
            // end it at once first, shutdown and the keep-alive after deliveries, as they were
            // (the keep-alive must not outrank a delivery that is keeping the reader from a PINGREQ).
            let urgent = Dormant::default();
            let later = Dormant::default();
            let mut reading = true;
            let mut unflushed_events = 0usize;
            let end = loop {
                // Packets that are ready together leave together: the buffer is written once nothing
                // else is ready (the last branch below), or after a bounded batch so that a client
                // that never stops sending still gets its acknowledgements.
                if writer.queued() >= FLUSH_BYTES || unflushed_events >= FLUSH_EVENTS {
                    if let Err(end) = self.flush(writer).await {
                        break end;
                    }
                    unflushed_events = 0;
                }
                if !reading && answers.is_empty() {
                    break End::Shutdown;
                }
                unflushed_events += 1;
                let window_open = self.inflight.len() < self.shared.settings.max_inflight;
                let watch_keep_alive = reading && keep_alive.is_some();
                tokio::select! {
                    biased;
                    event = std::future::poll_fn(|cx| urgent.poll(cx, |cx| {
                        if taken_over.as_mut().poll(cx).is_ready() {
                            return Poll::Ready(End::TakenOver);
                        }
                        if kicked.as_mut().poll(cx).is_ready() {
                            return Poll::Ready(End::Lost("slow consumer".into()));
                        }
                        // MQTT 3.1.1 has no way for a server to say why it disconnects: the
                        // connection is closed, as for a lost one (her Will tells her contacts).
                        expiry.as_mut().poll(cx).map(|()| {
                            tracing::info!(user = %self.user, "mqtt connection closed: its token expired");
                            metrics::counter!(ERRORS, "adapter" => NAME, "code" => "forbidden").increment(1);
                            End::Lost("token expired".into())
                        })
                    })) => break event,
                    Some((ack, frame)) = answers.next_with(), if !answers.is_empty() => {
                        if let Some(frame) = frame {
                            self.publish_frame(writer, &frame, None);
                        }
                        if let Some(ack) = ack {
                            writer.queue(&ack.packet());
                        }
                    }
                    outbound = lease.outbound.recv(), if window_open => {
                        let Some(Outbound { envelope, delivered }) = outbound else {
                            break End::Lost("session closed by the router".into());
                        };
                        // Not subscribed (any more): leave the proof unresolved so the router keeps
                        // the envelope for later. Nothing to show the client: nothing to wait for.
                        if self.subscription.is_some() {
                            match self.session.render_envelope(&envelope) {
                                Some(text) => self.publish_text(writer, text, delivered),
                                None => delivered.into_iter().for_each(Delivered::confirm),
                            }
                        }
                    }
                    event = std::future::poll_fn(|cx| later.poll(cx, |cx| {
                        if reading && shutdown.as_mut().poll(cx).is_ready() {
                            return Poll::Ready(Later::Shutdown);
                        }
                        if watch_keep_alive && keep_alive_timer.as_mut().poll(cx).is_ready() {
                            return Poll::Ready(Later::KeepAlive);
                        }
                        Poll::Pending
                    })) => match event {
                        Later::Shutdown => reading = false,
                        Later::KeepAlive => {
                            let due = last_packet + keep_alive.unwrap_or_default();
                            if due <= tokio::time::Instant::now() {
                                break End::Lost("keep-alive expired".into());
                            }
                            keep_alive_timer.as_mut().reset(due);
                        }
                    },
                    packet = reader.next(), if reading => {
                        last_packet = tokio::time::Instant::now();
                        let packet = match packet {
                            Ok(packet) => packet,
                            Err(IoError::Malformed(error)) => {
                                metrics::counter!(ERRORS, "adapter" => NAME, "code" => "bad-request").increment(1);
                                break End::Lost(format!("malformed packet: {error}"));
                            }
                            Err(error) => break End::Lost(error.to_string()),
                        };
                        let step = match packet {
                            // The packet of every delivery, handled without a wait: not boxed.
                            Packet::PubAck(ack) => {
                                self.on_puback(&ack);
                                Step::Continue
                            }
                            // Boxed: handling a packet (routing a PUBLISH, flushing a SUBACK) needs
                            // more room than the rest of this loop, and unboxed every idle
                            // connection would keep it.
                            packet => Box::pin(self.handle(packet, writer, &lease)).await,
                        };
                        match step {
                            Step::Continue => {}
                            Step::Answer { ack, reply } => answers.push_back_with(ack, reply),
                            Step::End(end) => break end,
                        }
                    }
                    // Nothing else is ready: write what the turns before queued, in one go.
                    () = std::future::ready(()), if writer.queued() > 0 || !self.unconfirmed_writes.is_empty() => {
                        if let Err(end) = self.flush(writer).await {
                            break end;
                        }
                        unflushed_events = 0;
                    }
                }
            };
            let _ = writer.flush().await;
            end
        }
    }

    /// Writes what is queued; QoS 0 deliveries count as delivered once written.
    async fn flush<W: AsyncWrite + Unpin>(&mut self, writer: &mut PacketWriter<W>) -> Result<(), End> {
        if let Err(error) = writer.flush().await {
            if matches!(error, IoError::WriteTimeout(_)) {
                tracing::warn!(user = %self.user, %error, "slow consumer cut off: the client stopped reading");
                metrics::counter!(ERRORS, "adapter" => NAME, "code" => "slow-consumer").increment(1);
            }
            return Err(End::Lost(error.to_string()));
        }
        for delivered in self.unconfirmed_writes.drain(..) {
            delivered.confirm();
        }
        Ok(())
    }

    async fn handle<W: AsyncWrite + Unpin>(&mut self, packet: Packet, writer: &mut PacketWriter<W>, lease: &SessionLease) -> Step {
        match packet {
            Packet::Publish(publish) => return self.on_publish(publish, writer).await,
            Packet::PubAck(ack) => self.on_puback(&ack),
            Packet::PubRel(release) => {
                self.awaiting_release.remove(&release.pkid);
                writer.queue(&Packet::PubComp(PubComp::new(release.pkid)));
            }
            Packet::Subscribe(subscribe) => {
                if let Some(filter) = subscribe.filters.iter().find(|f| !topics::valid_filter(&f.path)) {
                    metrics::counter!(ERRORS, "adapter" => NAME, "code" => "bad-request").increment(1);
                    return Step::End(End::Lost(format!("protocol violation: SUBSCRIBE to {:?}", filter.path)));
                }
                let mut codes = Vec::with_capacity(subscribe.filters.len());
                let mut granted = None;
                for filter in &subscribe.filters {
                    if filter.path == self.in_topic {
                        let qos = if filter.qos == QoS::AtMostOnce { QoS::AtMostOnce } else { QoS::AtLeastOnce };
                        granted = Some(qos);
                        codes.push(SubscribeReasonCode::Success(qos));
                    } else {
                        tracing::info!(user = %self.user, filter = %filter.path, "subscription refused");
                        metrics::counter!(ERRORS, "adapter" => NAME, "code" => "forbidden").increment(1);
                        codes.push(SubscribeReasonCode::Failure);
                    }
                }
                writer.queue(&Packet::SubAck(SubAck::new(subscribe.pkid, codes)));
                if let Some(qos) = granted {
                    let first = self.subscription.is_none();
                    self.subscription = Some(qos);
                    self.shared.registry.set_subscription(&self.user, &self.client_id, Some(qos));
                    if first {
                        // The SUBACK must reach the client before the backlog does.
                        if let Err(error) = writer.flush().await {
                            return Step::End(End::Lost(error.to_string()));
                        }
                        lease.set_deliverable().await;
                    }
                }
            }
            Packet::Unsubscribe(unsubscribe) => {
                if unsubscribe.topics.contains(&self.in_topic) && self.subscription.is_some() {
                    self.subscription = None;
                    self.shared.registry.set_subscription(&self.user, &self.client_id, None);
                    lease.set_undeliverable().await;
                }
                writer.queue(&Packet::UnsubAck(UnsubAck::new(unsubscribe.pkid)));
            }
            Packet::PingReq => writer.queue(&Packet::PingResp),
            Packet::Disconnect => return Step::End(End::Disconnect),
            Packet::PubRec(_) | Packet::PubComp(_) => {}
            Packet::Connect(_) | Packet::ConnAck(_) | Packet::SubAck(_) | Packet::UnsubAck(_) | Packet::PingResp => {
                metrics::counter!(ERRORS, "adapter" => NAME, "code" => "bad-request").increment(1);
                return Step::End(End::Lost("protocol violation: unexpected packet".into()));
            }
        }
        Step::Continue
    }

    fn on_puback(&mut self, ack: &PubAck) {
        if let Some(Some(delivered)) = self.inflight.remove(&ack.pkid) {
            delivered.confirm();
        }
    }

    async fn on_publish<W: AsyncWrite + Unpin>(&mut self, publish: Publish, writer: &mut PacketWriter<W>) -> Step {
        // MQTT 3.1.1 §4.8: a protocol violation closes the connection, unanswered; a foreign but
        // valid topic is refused below, and the session goes on.
        if !topics::valid_name(&publish.topic) {
            metrics::counter!(ERRORS, "adapter" => NAME, "code" => "bad-request").increment(1);
            return Step::End(End::Lost(format!("protocol violation: PUBLISH to {:?}", publish.topic)));
        }
        let ack = match publish.qos {
            QoS::AtMostOnce => None,
            QoS::AtLeastOnce => Some(PublishAck::Ack(publish.pkid)),
            QoS::ExactlyOnce => {
                if !self.awaiting_release.insert(publish.pkid) {
                    // A resend before PUBREL: already processed once.
                    writer.queue(&Packet::PubRec(PubRec::new(publish.pkid)));
                    return Step::Continue;
                }
                Some(PublishAck::Received(publish.pkid))
            }
        };
        let frame_reply = match self.shared.settings.topics.own(&publish.topic, &self.user) {
            Some(TopicKind::Out) => self.session.accept(&publish.payload).await,
            Some(TopicKind::Presence) => {
                if publish.payload.is_empty() {
                    // Clearing the retained presence: nothing to tell anyone.
                    return answer_now(ack, None);
                }
                match parse_client_frame(&publish.payload, self.shared.settings.max_frame_bytes) {
                    Ok(ClientFrame::Presence(_)) => self.session.accept(&publish.payload).await,
                    _ => {
                        let frame = ServerFrame::error(None, ErrorCode::BadRequest, "the presence topic takes presence frames only");
                        return answer_now(ack, Some(frame));
                    }
                }
            }
            _ => {
                // Dropped and counted (CONTRACT §4); MQTT 3.1.1 has no negative PUBACK, so the
                // client hears of it through an error frame on its own `in` topic.
                tracing::info!(user = %self.user, topic = %publish.topic, "publish to a foreign topic dropped");
                metrics::counter!(ERRORS, "adapter" => NAME, "code" => "forbidden").increment(1);
                let frame = ServerFrame::error(None, ErrorCode::Forbidden, format!("you may not publish to {}", publish.topic));
                return answer_now(ack, Some(frame));
            }
        };
        Step::Answer { ack, reply: frame_reply }
    }

    /// Publishes a frame on the user's `in` topic at her subscription's QoS.
    fn publish_frame<W: AsyncWrite + Unpin>(&mut self, writer: &mut PacketWriter<W>, frame: &ServerFrame, delivered: Option<Delivered>) {
        if self.subscription.is_some() {
            let text = self.session.render(frame);
            self.publish_text(writer, text, delivered);
        }
    }

    /// Publishes a rendered frame on the user's `in` topic at her subscription's QoS.
    fn publish_text<W: AsyncWrite + Unpin>(&mut self, writer: &mut PacketWriter<W>, text: String, delivered: Option<Delivered>) {
        let Some(qos) = self.subscription else {
            return;
        };
        let mut publish = Publish::new(self.in_topic.clone(), qos, text);
        if qos == QoS::AtLeastOnce {
            let pkid = self.allocate_pkid();
            publish.pkid = pkid;
            self.inflight.insert(pkid, delivered);
        } else if let Some(delivered) = delivered {
            self.unconfirmed_writes.push(delivered);
        }
        writer.queue(&Packet::Publish(publish));
    }

    fn allocate_pkid(&mut self) -> u16 {
        loop {
            self.next_pkid = self.next_pkid.wrapping_add(1);
            if self.next_pkid != 0 && !self.inflight.contains_key(&self.next_pkid) {
                return self.next_pkid;
            }
        }
    }

    /// A Last Will on the user's own presence topic is her presence; anything else is dropped.
    async fn publish_will(&self, connect: &Connect) {
        let Some(will) = &connect.last_will else { return };
        match self.shared.settings.topics.parse(&will.topic) {
            Some((owner, TopicKind::Presence)) if owner == self.user => {
                if let Ok(ClientFrame::Presence(_)) = parse_client_frame(&will.message, self.shared.settings.max_frame_bytes) {
                    let _ = tokio::time::timeout(Duration::from_secs(5), self.session.accept(&will.message).await.settle()).await;
                }
            }
            _ => {
                tracing::info!(user = %self.user, topic = %will.topic, "last will to a foreign topic dropped");
                metrics::counter!(ERRORS, "adapter" => NAME, "code" => "forbidden").increment(1);
            }
        }
    }
}

enum Step {
    Continue,
    /// What the client gets back for one PUBLISH once its frame is settled.
    Answer { ack: Option<PublishAck>, reply: Reply },
    End(End),
}

/// How a PUBLISH of QoS 1 or 2 is acknowledged once its frame is settled.
#[derive(Clone, Copy)]
enum PublishAck {
    Ack(u16),
    Received(u16),
}

impl PublishAck {
    fn packet(self) -> Packet {
        match self {
            Self::Ack(pkid) => Packet::PubAck(PubAck::new(pkid)),
            Self::Received(pkid) => Packet::PubRec(PubRec::new(pkid)),
        }
    }
}

fn answer_now(ack: Option<PublishAck>, frame: Option<ServerFrame>) -> Step {
    Step::Answer { ack, reply: Reply::Now(frame) }
}
