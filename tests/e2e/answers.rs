//! The answers that depend on the gateway's state rather than on the frame: every error code of
//! the contract is reachable, and /healthz tells what is down.

use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::{Gateway, MqttClient, WAIT, message};
use crate::mosquitto::free_port;

#[tokio::test]
async fn remote_addresses_are_unavailable_without_a_federating_adapter() {
    let gateway = Gateway::start().await;
    let mut alice = gateway.ws_user("alice").await;
    alice.send(message("x1", "carol@xmpp.example.org", "hi")).await;
    let error = alice.recv_type("error").await;
    assert_eq!((error["id"].as_str(), error["code"].as_str()), (Some("x1"), Some("unavailable")));
}

#[tokio::test]
async fn a_full_offline_queue_answers_unavailable() {
    let gateway = Gateway::start_with("[limits]\noffline_max = 3\n").await;
    gateway.ws_user("bob").await.close().await;
    let mut alice = gateway.ws_user("alice").await;
    for i in 0..3 {
        alice.send(message(&format!("q{i}"), "bob", "queued")).await;
        assert_eq!(alice.recv_type("ack").await["id"], format!("q{i}"));
    }
    alice.send(message("q3", "bob", "one too many")).await;
    let error = alice.recv_type("error").await;
    assert_eq!((error["id"].as_str(), error["code"].as_str()), (Some("q3"), Some("unavailable")));
}

#[tokio::test]
async fn a_store_that_fails_answers_internal_and_the_gateway_goes_on() {
    let gateway = Gateway::start().await;
    gateway.ws_user("bob").await.close().await;
    // Break the store under the running gateway.
    let data = gateway.data.as_ref().expect("data dir").path().join("switchboard.db");
    let store = switchboard_gateway::store::SqlStore::connect(&format!("sqlite://{}", data.display())).await.expect("open");
    sqlx::query("DROP TABLE offline").execute(store.pool()).await.expect("drop table");

    let mut alice = gateway.ws_user("alice").await;
    alice.send(message("s1", "bob", "nowhere to keep this")).await;
    let error = alice.recv_type("error").await;
    assert_eq!((error["id"].as_str(), error["code"].as_str()), (Some("s1"), Some("internal")));
    // Live delivery needs no store: the gateway still works for online users.
    let mut bob = gateway.ws_user("bob").await;
    alice.send(message("s2", "bob", "live")).await;
    assert_eq!(bob.recv_type("message").await["body"], "live");
}

#[tokio::test]
async fn healthz_names_a_configured_peer_that_is_down() {
    let unreachable = free_port();
    let gateway = Gateway::start_with(&format!("[mqtt]\nurl = \"mqtt://gw:pw@127.0.0.1:{unreachable}\"\n")).await;
    let (status, body) = gateway.http_get("/healthz").await;
    assert_eq!(status, 503, "{body}");
    let body: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(body, serde_json::json!({"status": "degraded", "failing": ["mqtt"]}));

    let healthy = Gateway::start().await;
    let (status, body) = healthy.http_get("/healthz").await;
    assert_eq!((status, body.as_str()), (200, r#"{"status":"ok"}"#));
}

/// A raw MQTT 3.1.1 CONNECT, so the test controls what the client does (nothing, here).
fn connect_packet(user: &str, password: &str, keep_alive: u16) -> BytesMut {
    connect_packet_as("silent", user, password, keep_alive)
}

fn connect_packet_as(client_id: &str, user: &str, password: &str, keep_alive: u16) -> BytesMut {
    let mut connect = rumqttc::Connect::new(client_id);
    connect.keep_alive = keep_alive;
    connect.set_login(user, password);
    let mut buffer = BytesMut::new();
    rumqttc::Packet::Connect(connect).write(&mut buffer, usize::MAX).expect("encode");
    buffer
}

#[tokio::test]
async fn a_client_silent_past_its_keep_alive_is_disconnected() {
    let gateway = Gateway::start().await;
    let mut socket = tokio::net::TcpStream::connect(gateway.mqtt).await.expect("connect");
    socket.write_all(&connect_packet("alice", &gateway.token("alice"), 1)).await.expect("write");
    let mut connack = [0u8; 4];
    socket.read_exact(&mut connack).await.expect("CONNACK");
    assert_eq!(connack, [0x20, 0x02, 0x00, 0x00], "accepted");
    // One and a half keep-alive periods of silence, then the endpoint hangs up.
    let started = tokio::time::Instant::now();
    let mut rest = Vec::new();
    let read = tokio::time::timeout(WAIT, socket.read_to_end(&mut rest)).await.expect("closed in time");
    assert!(read.is_ok() || rest.is_empty());
    assert!(started.elapsed() >= Duration::from_millis(1400), "not before the keep-alive: {:?}", started.elapsed());
}

/// Connects over a raw socket and reads the CONNACK.
async fn raw_mqtt(gateway: &Gateway, client_id: &str, keep_alive: u16) -> tokio::net::TcpStream {
    let mut socket = tokio::net::TcpStream::connect(gateway.mqtt).await.expect("connect");
    let connect = connect_packet_as(client_id, "alice", &gateway.token("alice"), keep_alive);
    socket.write_all(&connect).await.expect("write");
    let mut connack = [0u8; 4];
    socket.read_exact(&mut connack).await.expect("CONNACK");
    assert_eq!(connack, [0x20, 0x02, 0x00, 0x00], "accepted");
    socket
}

#[tokio::test]
async fn a_client_that_pings_stays_past_its_keep_alive_and_is_dropped_once_silent() {
    let gateway = Gateway::start().await;
    let mut socket = raw_mqtt(&gateway, "pinging", 1).await;
    // Four keep-alive periods and a half of PINGREQs, each answered: the deadline moves on each
    // time it comes round.
    let started = tokio::time::Instant::now();
    while started.elapsed() < Duration::from_millis(4500) {
        socket.write_all(&[0xc0, 0x00]).await.expect("PINGREQ");
        let mut pingresp = [0u8; 2];
        tokio::time::timeout(WAIT, socket.read_exact(&mut pingresp)).await.expect("answered in time").expect("PINGRESP");
        assert_eq!(pingresp, [0xd0, 0x00]);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let silent = tokio::time::Instant::now();
    let mut rest = Vec::new();
    let read = tokio::time::timeout(WAIT, socket.read_to_end(&mut rest)).await.expect("closed in time");
    assert!(read.is_ok() || rest.is_empty());
    assert!(silent.elapsed() >= Duration::from_millis(900), "not before the keep-alive: {:?}", silent.elapsed());
}

#[tokio::test]
async fn a_second_connection_with_the_same_client_id_takes_over() {
    let gateway = Gateway::start().await;
    let mut first = raw_mqtt(&gateway, "phone", 60).await;
    let mut second = raw_mqtt(&gateway, "phone", 60).await;
    let mut rest = Vec::new();
    let read = tokio::time::timeout(WAIT, first.read_to_end(&mut rest)).await.expect("the first is closed");
    assert!(read.is_ok() || rest.is_empty());
    second.write_all(&[0xc0, 0x00]).await.expect("PINGREQ");
    let mut pingresp = [0u8; 2];
    tokio::time::timeout(WAIT, second.read_exact(&mut pingresp)).await.expect("answered in time").expect("PINGRESP");
    assert_eq!(pingresp, [0xd0, 0x00], "the second goes on");
}

#[tokio::test]
async fn a_qos0_subscriber_receives_too() {
    let gateway = Gateway::start().await;
    let mut bob = MqttClient::connect(gateway.mqtt, "bob", &gateway.token("bob"), true, "bob-q0").await.expect("connects");
    bob.client.subscribe("im/bob/in", rumqttc::QoS::AtMostOnce).await.expect("subscribe");
    let mut alice = gateway.ws_user("alice").await;
    // bob is deliverable once the SUBACK went out; until then messages are stored and replayed.
    alice.send(message("w1", "bob", "at most once")).await;
    assert_eq!(bob.recv_type("message").await["body"], "at most once");
    assert_eq!(alice.recv_type("ack").await["id"], "w1");
}
