//! What the bridge hands to rumqttc, in order, without ever waiting for room in its queue.
//!
//! rumqttc's request queue is bounded, and it stops draining while the broker is away or its
//! in-flight window is full. The bridge must keep reading rumqttc's events meanwhile (they are
//! what make room), so a request that does not fit waits here, behind those before it, and goes
//! as soon as an event says rumqttc took something.

use std::collections::VecDeque;

use rumqttc::{AsyncClient, ClientError, EventLoop, Publish, QoS, Request};
use switchboard_gateway::router::Delivered;

/// Requests waiting beyond this many tell the bridge to stop taking new work (deliveries from
/// the router, settled inbound frames) until the broker has caught up.
const BACKLOG_LIMIT: usize = 1024;

/// `P` is the proof a publish carries (a delivery's, in the bridge; a marker in tests).
pub(super) struct Requests<P = Delivered> {
    client: AsyncClient,
    /// Requests that found rumqttc's queue full. Dropping an acknowledgement would leave its
    /// message in the broker's in-flight window until the next reconnect (a full window stops the
    /// broker sending anything at all); dropping a reply frame would lose the `ack` or `error` a
    /// user is waiting for.
    unsent: VecDeque<Unsent<P>>,
    /// Proofs for publishes handed to rumqttc, in order, until it tells their packet id.
    awaiting_pkid: VecDeque<Option<P>>,
    /// Publish events still to come, on a resumed session, for what rumqttc sends again before
    /// anything handed to it since: they carry none of the proofs waiting above, which belong to
    /// publishes made after the loss (the proofs of those sent again were dropped with it).
    resent: usize,
}

enum Unsent<P> {
    Ack(Publish),
    Frame { topic: String, payload: Vec<u8>, delivered: Option<P> },
}

impl<P> Requests<P> {
    pub fn new(client: AsyncClient) -> Self {
        Self { client, unsent: VecDeque::new(), awaiting_pkid: VecDeque::new(), resent: 0 }
    }

    pub fn client(&self) -> &AsyncClient {
        &self.client
    }

    /// Whether the bridge may take new work.
    pub fn has_room(&self) -> bool {
        self.unsent.len() < BACKLOG_LIMIT
    }

    /// Acknowledges an inbound PUBLISH.
    pub fn ack(&mut self, publish: Publish) {
        self.send(Unsent::Ack(publish));
    }

    /// Publishes at QoS 1; `delivered` is confirmed once the broker PUBACKs (see
    /// [`Self::published`]).
    pub fn publish(&mut self, topic: String, payload: Vec<u8>, delivered: Option<P>) {
        if !rumqttc::valid_topic(&topic) {
            // rumqttc would refuse it on every retry; user ids never make one.
            tracing::error!(topic, "cannot publish to an invalid topic");
            return;
        }
        self.send(Unsent::Frame { topic, payload, delivered });
    }

    /// rumqttc sent a publish under this packet id: the proof of the oldest it was handed, if
    /// any, unless it was one it sends again.
    pub fn published(&mut self) -> Option<P> {
        if self.resent > 0 {
            self.resent -= 1;
            return None;
        }
        self.awaiting_pkid.pop_front().flatten()
    }

    /// `poll` failed. If a live connection was lost, proofs of publishes already handed to
    /// rumqttc are dropped, so their envelopes go back to the store (rumqttc sends those publishes
    /// again only on a resumed session). A failed attempt to connect changed nothing in rumqttc:
    /// what was handed to it since waits in its queue and keeps its proof.
    pub fn connection_lost(&mut self, was_connected: bool) {
        if was_connected {
            self.awaiting_pkid.clear();
            self.resent = 0;
        }
    }

    /// A new connection, on which rumqttc first sends `resent` publishes again (a resumed
    /// session; see [`resent_publishes`]). Acknowledgements still waiting name packet ids of the
    /// last connection, and the broker sends those messages again.
    pub fn connected(&mut self, resent: usize) {
        self.resent = resent;
        self.unsent.retain(|request| !matches!(request, Unsent::Ack(_)));
    }

    /// Hands over what waits, in order, while rumqttc has room; call after each of its events.
    pub fn send_unsent(&mut self) {
        while let Some(request) = self.unsent.pop_front() {
            if let Err(request) = self.try_send(request) {
                self.unsent.push_front(request);
                return;
            }
        }
    }

    fn send(&mut self, request: Unsent<P>) {
        if !self.unsent.is_empty() {
            self.unsent.push_back(request);
            return;
        }
        if let Err(request) = self.try_send(request) {
            self.unsent.push_back(request);
        }
    }

    /// Gives the request back when rumqttc's queue has no room for it.
    fn try_send(&mut self, request: Unsent<P>) -> Result<(), Unsent<P>> {
        match request {
            Unsent::Ack(publish) => match self.client.try_ack(&publish) {
                Ok(()) => Ok(()),
                Err(_) => Err(Unsent::Ack(publish)),
            },
            Unsent::Frame { topic, payload, delivered } => match self.client.try_publish(topic, QoS::AtLeastOnce, false, payload) {
                Ok(()) => {
                    self.awaiting_pkid.push_back(delivered);
                    Ok(())
                }
                Err(ClientError::TryRequest(Request::Publish(publish))) => {
                    Err(Unsent::Frame { topic: publish.topic, payload: publish.payload.into(), delivered })
                }
                // rumqttc hands back what it was given; anything else means its event loop is
                // gone, and the bridge with it.
                Err(error) => {
                    tracing::debug!(%error, "frame not handed to rumqttc");
                    Ok(())
                }
            },
        }
    }
}

/// How many publishes rumqttc will send before anything handed to it after a CONNACK: on a
/// resumed session, those of the last connection that were not acknowledged (and the requests it
/// had not yet taken from its queue); on a new session it has dropped them. Call when `poll` has
/// just returned the CONNACK.
pub(super) fn resent_publishes(eventloop: &EventLoop) -> usize {
    eventloop.pending.iter().filter(|request| matches!(request, Request::Publish(_))).count()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    use bytes::BytesMut;
    use rumqttc::mqttbytes::v4::{ConnAck, ConnectReturnCode, Packet, PubAck};
    use rumqttc::{Event, MqttOptions, Outgoing};
    use tokio::net::{TcpListener, TcpStream};
    use tokio::sync::{mpsc, oneshot};

    use super::*;
    use crate::external::Polled;
    use crate::external::fake_broker::{read_packet, write_packet};

    const PUBLISHES: usize = 300;
    const ACKS: u16 = 75;

    /// What a broker that holds back its PUBACKs for a while receives, in order.
    #[derive(Default, Debug)]
    struct Received {
        payloads: Vec<String>,
        acked_pkids: Vec<u16>,
    }

    /// Accepts one client, lets its in-flight window fill, and only then answers every publish.
    async fn stalling_broker(listener: TcpListener, done: oneshot::Sender<Received>) {
        let (mut socket, _) = listener.accept().await.expect("the client connects");
        let mut buffer = BytesMut::new();
        assert!(matches!(read_packet(&mut socket, &mut buffer).await, Some(Packet::Connect(..))));
        write_packet(&mut socket, Packet::ConnAck(ConnAck::new(ConnectReturnCode::Success, false))).await;
        let mut received = Received::default();
        let mut unanswered = Vec::new();
        while received.payloads.len() < PUBLISHES || received.acked_pkids.len() < usize::from(ACKS) {
            match read_packet(&mut socket, &mut buffer).await.expect("the client stays connected") {
                Packet::Publish(publish) => {
                    received.payloads.push(String::from_utf8_lossy(&publish.payload).into_owned());
                    unanswered.push(publish.pkid);
                }
                Packet::PubAck(ack) => received.acked_pkids.push(ack.pkid),
                _ => {}
            }
            if received.payloads.len() == 1 {
                // Long enough for the client's window and request queue to fill behind it.
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            for pkid in unanswered.drain(..) {
                write_packet(&mut socket, Packet::PubAck(PubAck::new(pkid))).await;
            }
        }
        let _ = done.send(received);
    }

    fn inbound(pkid: u16) -> Publish {
        let mut publish = Publish::new("users/alice/out", QoS::AtLeastOnce, "{}");
        publish.pkid = pkid;
        publish
    }

    #[tokio::test]
    async fn nothing_is_dropped_or_reordered_while_rumqttc_has_no_room() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("a free port");
        let port = listener.local_addr().expect("its address").port();
        let (done_tx, done) = oneshot::channel();
        tokio::spawn(stalling_broker(listener, done_tx));

        let mut options = MqttOptions::new("bridge", "127.0.0.1", port);
        options.set_inflight(5);
        options.set_manual_acks(true);
        let (client, eventloop) = AsyncClient::new(options, 4);
        let (events_tx, mut events) = mpsc::unbounded_channel();
        tokio::spawn(poll_forever(eventloop, events_tx));

        let mut requests = Requests::<()>::new(client);
        let mut next_ack = 1;
        for n in 0..PUBLISHES {
            requests.publish("users/bob/in".to_owned(), format!("frame {n}").into_bytes(), None);
            if n % 4 == 0 && next_ack <= ACKS {
                requests.ack(inbound(next_ack));
                next_ack += 1;
            }
        }
        assert!(!requests.unsent.is_empty(), "the test must fill rumqttc's queue");

        let received = tokio::time::timeout(Duration::from_secs(10), async {
            tokio::pin!(done);
            loop {
                tokio::select! {
                    received = &mut done => break received.expect("the broker's report"),
                    Some(()) = events.recv() => requests.send_unsent(),
                }
            }
        })
        .await
        .expect("everything reached the broker in time");

        let expected: Vec<String> = (0..PUBLISHES).map(|n| format!("frame {n}")).collect();
        assert_eq!(received.payloads, expected);
        assert_eq!(received.acked_pkids, (1..=ACKS).collect::<Vec<_>>());
    }

    /// Resumes the session on a connection whose CONNECT was read; answers the publishes that
    /// come again (those made before the loss), leaves the others unanswered, and reports each as
    /// (packet id, payload).
    async fn resume_and_report(mut socket: TcpStream, mut buffer: BytesMut, report: mpsc::UnboundedSender<(u16, String)>) {
        write_packet(&mut socket, Packet::ConnAck(ConnAck::new(ConnectReturnCode::Success, true))).await;
        while let Some(packet) = read_packet(&mut socket, &mut buffer).await {
            if let Packet::Publish(publish) = packet {
                if publish.payload.starts_with(b"before") {
                    write_packet(&mut socket, Packet::PubAck(PubAck::new(publish.pkid))).await;
                }
                let _ = report.send((publish.pkid, String::from_utf8_lossy(&publish.payload).into_owned()));
            }
        }
    }

    /// First connection: takes two publishes without answering them and hangs up. Second: resumes
    /// the session, answers those two when they come again, leaves the new publish unanswered and
    /// reports each publish as (packet id, payload).
    async fn broker_resuming_the_session(listener: TcpListener, report: mpsc::UnboundedSender<(u16, String)>) {
        let (mut socket, _) = listener.accept().await.expect("the client connects");
        let mut buffer = BytesMut::new();
        assert!(matches!(read_packet(&mut socket, &mut buffer).await, Some(Packet::Connect(..))));
        write_packet(&mut socket, Packet::ConnAck(ConnAck::new(ConnectReturnCode::Success, false))).await;
        let mut taken = 0;
        while taken < 2 {
            if let Some(Packet::Publish(_)) = read_packet(&mut socket, &mut buffer).await {
                taken += 1;
            }
        }
        drop(socket);

        let (mut socket, _) = listener.accept().await.expect("the client reconnects");
        let mut buffer = BytesMut::new();
        assert!(matches!(read_packet(&mut socket, &mut buffer).await, Some(Packet::Connect(..))));
        resume_and_report(socket, buffer, report).await;
    }

    /// A persistent-session client of the broker on `port`, polled by the bridge's own poll task;
    /// its proofs are names.
    fn bridge_client(port: u16) -> (Requests<&'static str>, mpsc::UnboundedReceiver<Polled>) {
        let mut options = MqttOptions::new("bridge", "127.0.0.1", port);
        options.set_clean_session(false);
        let (client, eventloop) = AsyncClient::new(options, 16);
        let (events_tx, events) = mpsc::unbounded_channel();
        tokio::spawn(crate::external::poll(eventloop, events_tx));
        (Requests::new(client), events)
    }

    #[tokio::test]
    async fn on_a_resumed_session_what_is_sent_again_takes_no_proof_of_a_newer_publish() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("a free port");
        let port = listener.local_addr().expect("its address").port();
        let (report_tx, mut report) = mpsc::unbounded_channel();
        tokio::spawn(broker_resuming_the_session(listener, report_tx));

        let (mut requests, mut events) = bridge_client(port);
        let mut proofs = std::collections::HashMap::new();
        let mut connections = 0;
        let outcome = tokio::time::timeout(Duration::from_secs(10), async {
            while let Some(polled) = events.recv().await {
                match polled {
                    Polled::Connected { resent, .. } => {
                        connections += 1;
                        requests.connected(resent);
                        if connections == 1 {
                            requests.publish("users/bob/in".into(), b"before 1".to_vec(), Some("before 1"));
                            requests.publish("users/bob/in".into(), b"before 2".to_vec(), Some("before 2"));
                        } else {
                            assert_eq!(resent, 2, "both unanswered publishes are sent again");
                        }
                    }
                    Polled::Lost { was_connected, .. } => {
                        assert!(was_connected, "the broker hung up a live connection");
                        requests.connection_lost(was_connected);
                        proofs.clear();
                        // Handed over while the broker is away: it goes out after what is sent again.
                        requests.publish("users/bob/in".into(), b"after".to_vec(), Some("after"));
                    }
                    Polled::Event(Event::Outgoing(Outgoing::Publish(pkid))) => {
                        proofs.insert(pkid, requests.published());
                        if connections == 2 && proofs.len() == 3 {
                            return;
                        }
                    }
                    Polled::Event(_) => {}
                }
                requests.send_unsent();
            }
        })
        .await;
        assert!(outcome.is_ok(), "three publishes on the resumed session in time");

        let mut sent = Vec::new();
        while sent.len() < 3 {
            let publish = tokio::time::timeout(Duration::from_secs(5), report.recv()).await;
            sent.push(publish.expect("the broker reports in time").expect("the broker runs"));
        }
        let after = sent.iter().find(|(_, payload)| payload == "after").expect("the new publish reached the broker");
        assert_eq!(proofs.get(&after.0), Some(&Some("after")), "the new publish's proof goes with its own packet id");
        let resent: Vec<_> = sent.iter().filter(|(_, payload)| payload != "after").collect();
        assert_eq!(resent.len(), 2, "{sent:?}");
        for (pkid, _) in resent {
            assert_eq!(proofs.get(pkid), Some(&None), "a publish sent again confirms nothing (its proof went with the loss)");
        }
    }

    /// First connection: takes one publish without answering it and hangs up. Then hangs up on
    /// every attempt to connect before answering it, so that they fail, until `back` is set;
    /// then resumes the session, answers what comes again and reports every publish as
    /// (packet id, payload).
    async fn broker_away_for_a_while(listener: TcpListener, back: Arc<AtomicBool>, report: mpsc::UnboundedSender<(u16, String)>) {
        let (mut socket, _) = listener.accept().await.expect("the client connects");
        let mut buffer = BytesMut::new();
        assert!(matches!(read_packet(&mut socket, &mut buffer).await, Some(Packet::Connect(..))));
        write_packet(&mut socket, Packet::ConnAck(ConnAck::new(ConnectReturnCode::Success, false))).await;
        while !matches!(read_packet(&mut socket, &mut buffer).await, Some(Packet::Publish(_))) {}
        drop(socket);

        let (socket, buffer) = loop {
            let (mut socket, _) = listener.accept().await.expect("the client tries again");
            let mut buffer = BytesMut::new();
            assert!(matches!(read_packet(&mut socket, &mut buffer).await, Some(Packet::Connect(..))));
            if back.load(Ordering::SeqCst) {
                break (socket, buffer);
            }
        };
        resume_and_report(socket, buffer, report).await;
    }

    #[tokio::test]
    async fn a_failed_attempt_to_reconnect_keeps_the_proofs_of_what_waits_in_the_queue() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("a free port");
        let port = listener.local_addr().expect("its address").port();
        let (report_tx, mut report) = mpsc::unbounded_channel();
        let back = Arc::new(AtomicBool::new(false));
        tokio::spawn(broker_away_for_a_while(listener, back.clone(), report_tx));

        let (mut requests, mut events) = bridge_client(port);
        let mut proofs = std::collections::HashMap::new();
        let mut away = true;
        let outcome = tokio::time::timeout(Duration::from_secs(10), async {
            while let Some(polled) = events.recv().await {
                match polled {
                    Polled::Connected { resent, .. } => {
                        requests.connected(resent);
                        if away {
                            requests.publish("users/bob/in".into(), b"before".to_vec(), Some("before"));
                        }
                    }
                    Polled::Lost { was_connected: true, .. } => {
                        requests.connection_lost(true);
                        proofs.clear();
                        requests.publish("users/bob/in".into(), b"while away".to_vec(), Some("while away"));
                    }
                    Polled::Lost { was_connected: false, .. } => {
                        requests.connection_lost(false);
                        if away {
                            away = false;
                            requests.publish("users/bob/in".into(), b"still away".to_vec(), Some("still away"));
                            back.store(true, Ordering::SeqCst);
                        }
                    }
                    Polled::Event(Event::Outgoing(Outgoing::Publish(pkid))) => {
                        proofs.insert(pkid, requests.published());
                        if !away && proofs.len() == 3 {
                            return;
                        }
                    }
                    Polled::Event(_) => {}
                }
                requests.send_unsent();
            }
        })
        .await;
        assert!(outcome.is_ok(), "three publishes on the resumed session in time");

        let mut sent = std::collections::HashMap::new();
        while sent.len() < 3 {
            let publish = tokio::time::timeout(Duration::from_secs(5), report.recv()).await;
            let (pkid, payload) = publish.expect("the broker reports in time").expect("the broker runs");
            sent.insert(payload, pkid);
        }
        for payload in ["while away", "still away"] {
            let pkid = sent.get(payload).expect("it reached the broker");
            assert_eq!(proofs.get(pkid), Some(&Some(payload)), "{payload:?} keeps its proof across the failed attempts");
        }
        assert_eq!(proofs.get(&sent["before"]), Some(&None));
    }

    async fn poll_forever(mut eventloop: EventLoop, events: mpsc::UnboundedSender<()>) {
        while eventloop.poll().await.is_ok() {
            if events.send(()).is_err() {
                return;
            }
        }
    }
}
