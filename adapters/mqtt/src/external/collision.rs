//! A publish rumqttc stashed on a packet-id collision, released when the connection is lost.
//!
//! When the packet id rumqttc 0.25 picks for a publish is still in flight, it stashes the publish
//! and takes no further request until that id's PUBACK arrives. Its reconnection keeps the stash
//! (`MqttState::clean` leaves it; bytebeamio/rumqtt#1056): on a resumed session the id's publish
//! is sent again and its PUBACK releases the stash, but when the broker starts a new session
//! rumqttc drops what it would have sent again, that PUBACK never comes, and the bridge stalls
//! until rumqttc gives up on the collision two keep-alives later (and again after each
//! reconnection). Put back with the publishes it would send again, it goes out on a resumed
//! session and is dropped with them on a new one; its delivery, unconfirmed, is back in the
//! store by then and is routed again.

use rumqttc::{EventLoop, Request};

/// Call after `EventLoop::poll` failed (rumqttc has moved what it will send again to `pending`).
pub(super) fn release(eventloop: &mut EventLoop) {
    let Some(publish) = eventloop.state.collision.take() else { return };
    // `pending` holds the publishes to send again (they have packet ids), then the requests that
    // were still in rumqttc's queue (none yet): the stashed one was taken before those.
    let resend = eventloop
        .pending
        .iter()
        .position(|request| !matches!(request, Request::Publish(p) if p.pkid != 0) && !matches!(request, Request::PubRel(_)))
        .unwrap_or(eventloop.pending.len());
    eventloop.pending.insert(resend, Request::Publish(publish));
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::BytesMut;
    use rumqttc::mqttbytes::v4::{ConnAck, ConnectReturnCode, Packet, PubAck};
    use rumqttc::{AsyncClient, Event, MqttOptions, QoS};
    use tokio::net::{TcpListener, TcpStream};

    use super::*;
    use crate::external::fake_broker::{read_packet, write_packet};

    async fn accept_new_session(listener: &TcpListener) -> (TcpStream, BytesMut) {
        let (mut socket, _) = listener.accept().await.expect("the client connects");
        let mut buffer = BytesMut::new();
        assert!(matches!(read_packet(&mut socket, &mut buffer).await, Some(Packet::Connect(..))));
        write_packet(&mut socket, Packet::ConnAck(ConnAck::new(ConnectReturnCode::Success, false))).await;
        (socket, buffer)
    }

    /// Acknowledges the client's publishes out of order, so that its next publish collides with
    /// one still in flight; hangs up; answers the reconnection with a new session; reports the
    /// payloads it receives on it.
    async fn broker_losing_the_session(listener: TcpListener, received: tokio::sync::mpsc::UnboundedSender<String>) {
        let (mut socket, mut buffer) = accept_new_session(&listener).await;
        let mut pkids = Vec::new();
        while pkids.len() < 3 {
            if let Some(Packet::Publish(publish)) = read_packet(&mut socket, &mut buffer).await {
                pkids.push(publish.pkid);
            }
        }
        // The oldest stays unanswered: the client's fourth publish takes its packet id again.
        for pkid in &pkids[1..] {
            write_packet(&mut socket, Packet::PubAck(PubAck::new(*pkid))).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        drop(socket);

        let (mut socket, mut buffer) = accept_new_session(&listener).await;
        while let Some(packet) = read_packet(&mut socket, &mut buffer).await {
            if let Packet::Publish(publish) = packet {
                write_packet(&mut socket, Packet::PubAck(PubAck::new(publish.pkid))).await;
                let _ = received.send(String::from_utf8_lossy(&publish.payload).into_owned());
            }
        }
    }

    /// Polls as the bridge does, releasing a collision whenever the connection is lost; tells
    /// each CONNACK.
    async fn poll(mut eventloop: rumqttc::EventLoop, connected: tokio::sync::mpsc::UnboundedSender<()>) {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(rumqttc::Packet::ConnAck(_))) => {
                    let _ = connected.send(());
                }
                Ok(_) => {}
                Err(_) => {
                    release(&mut eventloop);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    #[tokio::test]
    async fn a_publish_stashed_on_a_collision_does_not_stall_a_new_session() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("a free port");
        let port = listener.local_addr().expect("its address").port();
        let (received_tx, mut received) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(broker_losing_the_session(listener, received_tx));

        let mut options = MqttOptions::new("bridge", "127.0.0.1", port);
        options.set_inflight(3);
        options.set_clean_session(false);
        options.set_keep_alive(Duration::from_secs(30));
        let (client, eventloop) = AsyncClient::new(options, 16);
        let (connected_tx, mut connected) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(poll(eventloop, connected_tx));

        connected.recv().await.expect("the first connection");
        for n in 1..=4 {
            client.publish("users/bob/in", QoS::AtLeastOnce, false, format!("before {n}")).await.expect("queued");
        }
        tokio::time::timeout(Duration::from_secs(5), connected.recv())
            .await
            .expect("the client reconnects")
            .expect("a second connection");
        client.publish("users/bob/in", QoS::AtLeastOnce, false, "after").await.expect("queued");
        let arrived = tokio::time::timeout(Duration::from_secs(5), async {
            while let Some(payload) = received.recv().await {
                if payload == "after" {
                    return true;
                }
            }
            false
        })
        .await;
        assert_eq!(arrived, Ok(true), "a publish made on the new session reaches the broker");
    }
}
