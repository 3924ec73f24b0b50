//! What the bridge hands to rumqttc, in order, without ever waiting for room in its queue.
//!
//! rumqttc's request queue is bounded, and it stops draining while the broker is away or its
//! in-flight window is full. The bridge must keep reading rumqttc's events meanwhile (they are
//! what make room), so a request that does not fit waits here, behind those before it, and goes
//! as soon as an event says rumqttc took something.

use std::collections::VecDeque;

use rumqttc::{AsyncClient, ClientError, Publish, QoS, Request};
use switchboard_gateway::router::Delivered;

/// Requests waiting beyond this many tell the bridge to stop taking new work (deliveries from
/// the router, settled inbound frames) until the broker has caught up.
const BACKLOG_LIMIT: usize = 1024;

pub(super) struct Requests {
    client: AsyncClient,
    /// Requests that found rumqttc's queue full. Dropping an acknowledgement would leave its
    /// message in the broker's in-flight window until the next reconnect (a full window stops the
    /// broker sending anything at all); dropping a reply frame would lose the `ack` or `error` a
    /// user is waiting for.
    unsent: VecDeque<Unsent>,
    /// Proofs for publishes handed to rumqttc, in order, until it tells their packet id.
    awaiting_pkid: VecDeque<Option<Delivered>>,
}

enum Unsent {
    Ack(Publish),
    Frame { topic: String, payload: Vec<u8>, delivered: Option<Delivered> },
}

impl Requests {
    pub fn new(client: AsyncClient) -> Self {
        Self { client, unsent: VecDeque::new(), awaiting_pkid: VecDeque::new() }
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
    pub fn publish(&mut self, topic: String, payload: Vec<u8>, delivered: Option<Delivered>) {
        if !rumqttc::valid_topic(&topic) {
            // rumqttc would refuse it on every retry; user ids never make one.
            tracing::error!(topic, "cannot publish to an invalid topic");
            return;
        }
        self.send(Unsent::Frame { topic, payload, delivered });
    }

    /// rumqttc sent the oldest publish it was handed under this packet id: its proof, if any.
    pub fn published(&mut self) -> Option<Delivered> {
        self.awaiting_pkid.pop_front().flatten()
    }

    /// The connection is gone: proofs of publishes already handed to rumqttc are dropped, so their
    /// envelopes go back to the store.
    pub fn connection_lost(&mut self) {
        self.awaiting_pkid.clear();
    }

    /// A new connection: acknowledgements still waiting name packet ids of the last one, and
    /// the broker sends those messages again.
    pub fn connected(&mut self) {
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

    fn send(&mut self, request: Unsent) {
        if !self.unsent.is_empty() {
            self.unsent.push_back(request);
            return;
        }
        if let Err(request) = self.try_send(request) {
            self.unsent.push_back(request);
        }
    }

    /// Gives the request back when rumqttc's queue has no room for it.
    fn try_send(&mut self, request: Unsent) -> Result<(), Unsent> {
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::BytesMut;
    use rumqttc::mqttbytes::v4::{ConnAck, ConnectReturnCode, Packet, PubAck};
    use rumqttc::{EventLoop, MqttOptions};
    use tokio::net::TcpListener;
    use tokio::sync::{mpsc, oneshot};

    use super::*;
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

        let mut requests = Requests::new(client);
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

    async fn poll_forever(mut eventloop: EventLoop, events: mpsc::UnboundedSender<()>) {
        while eventloop.poll().await.is_ok() {
            if events.send(()).is_err() {
                return;
            }
        }
    }
}
