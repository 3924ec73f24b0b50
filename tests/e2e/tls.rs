//! TLS: HTTPS and `wss://` on the HTTP listener, MQTT over TLS on the embedded endpoint's second
//! listener, and `mqtts://` to a real Mosquitto. The certificates are the test CA's of
//! push-fakes/fixtures (`server.pem` for 127.0.0.1, signed by `ca.pem`).

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use crate::common::{Gateway, MqttClient, WAIT, WsClient, fixture, https_request, message, mqtt_tls, tls_client};
use crate::external_broker::{USERS, broker_user, healthy, send_until_known};
use crate::mosquitto::Mosquitto;

const HTTP_1_1: &[u8] = b"http/1.1";

fn server_files(section: &str) -> String {
    format!(
        "[{section}]\ntls_cert = \"{}\"\ntls_key = \"{}\"\n",
        fixture("server.pem").display(),
        fixture("server.key.pem").display()
    )
}

#[tokio::test]
async fn websocket_clients_chat_over_wss_and_http_is_served_over_tls_only() {
    let gateway = Gateway::start_with(&server_files("http")).await;
    let trusting = tls_client("ca.pem", &[HTTP_1_1]);

    // A client that opened TCP and never speaks holds up no one.
    let _silent = TcpStream::connect(gateway.http).await.expect("connects");
    let (status, body, alpn) = https_request(gateway.http, trusting.clone(), "GET", "/healthz", "").await.expect("https");
    assert_eq!(status, 200, "{body}");
    assert_eq!(alpn.as_deref(), Some(HTTP_1_1), "HTTP/1.1 by ALPN, so that WebSocket upgrades work");
    let (status, _, _) = https_request(gateway.http, trusting.clone(), "POST", "/api/v1/devices", "{}").await.expect("https");
    assert_eq!(status, 401, "the device API is served over TLS too (and wants a token)");

    // Plain HTTP gets no HTTP answer at all from a TLS listener.
    let mut plain = TcpStream::connect(gateway.http).await.expect("connects");
    plain.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").await.expect("write");
    let mut answer = Vec::new();
    // A reset instead of a close is fine: only what arrived matters.
    let _ = tokio::time::timeout(WAIT, plain.read_to_end(&mut answer)).await.expect("closed in time");
    assert!(!answer.starts_with(b"HTTP/"), "{}", String::from_utf8_lossy(&answer));

    // A client that does not trust the certificate's CA does not get through.
    let refused = WsClient::connect_tls(gateway.http, &gateway.token("alice"), tls_client("other-ca.pem", &[HTTP_1_1])).await;
    assert!(refused.as_ref().is_err_and(|error| error.contains("certificate")), "{:?}", refused.err());

    let mut alice = WsClient::connect_tls(gateway.http, &gateway.token("alice"), trusting).await.expect("wss");
    assert_eq!(alice.jid, "alice@localhost");
    let mut bob = gateway.mqtt_user("bob").await;
    alice.send(message("w1", "bob", "over wss")).await;
    assert_eq!(bob.recv_type("message").await["body"], "over wss");
    assert_eq!(alice.recv_type("ack").await["id"], "w1");
    bob.send(message("m1", "alice", "back over wss")).await;
    let received = alice.recv_type("message").await;
    assert_eq!((received["body"].as_str(), received["from"].as_str()), (Some("back over wss"), Some("bob@localhost")));
}

#[tokio::test]
async fn the_per_address_limit_sees_the_address_of_a_tls_client() {
    let gateway = Gateway::start_with(&format!("{}[limits]\nconnections_per_ip = 1\n", server_files("http"))).await;
    let trusting = tls_client("ca.pem", &[HTTP_1_1]);
    let _alice = WsClient::connect_tls(gateway.http, &gateway.token("alice"), trusting.clone()).await.expect("wss");
    let refused = WsClient::connect_tls(gateway.http, &gateway.token("bob"), trusting).await.err();
    assert!(refused.as_deref().is_some_and(|error| error.contains("429")), "{refused:?}");
}

#[tokio::test]
async fn mqtt_clients_connect_over_tls_beside_the_plain_listener() {
    let gateway = Gateway::start_with(&format!("{}tls_listen = \"127.0.0.1:0\"\n", server_files("mqtt"))).await;
    let tls = gateway.mqtt_tls.expect("a TLS listener");
    assert_ne!(tls, gateway.mqtt);

    // A client that opened TCP and never starts the handshake holds up no one.
    let _silent = TcpStream::connect(tls).await.expect("connects");
    let mut bob = gateway.mqtt_user("bob").await;
    let mut alice = MqttClient::connect_with(tls, "alice", &gateway.token("alice"), true, "alice", mqtt_tls("ca.pem"))
        .await
        .expect("MQTT over TLS with a JWT");
    alice.subscribe_in().await;
    alice.send(message("a1", "bob", "over tls")).await;
    let received = bob.recv_type("message").await;
    assert_eq!((received["body"].as_str(), received["from"].as_str()), (Some("over tls"), Some("alice@localhost")));
    assert_eq!(alice.recv_type("ack").await["id"], "a1");
    bob.send(message("b1", "alice", "back over tls")).await;
    assert_eq!(alice.recv_type("message").await["body"], "back over tls");

    // The same topic rules as on the plain listener.
    alice.publish("im/bob/out", message("spoof", "carol", "as bob").to_string()).await;
    assert_eq!(alice.recv_type("error").await["code"], "forbidden");
    assert_eq!(alice.subscribe("im/bob/in").await, vec![false]);

    // The same authentication.
    let refused = MqttClient::connect_with(tls, "carol", "not-a-token", true, "carol", mqtt_tls("ca.pem")).await.err();
    assert!(refused.is_some(), "a bad token is refused over TLS too");
    // No way in without trusting the certificate's CA, nor in the clear.
    let untrusted = MqttClient::connect_with(tls, "carol", &gateway.token("carol"), true, "carol", mqtt_tls("other-ca.pem")).await.err();
    assert!(untrusted.as_deref().is_some_and(|error| error.contains("certificate")), "{untrusted:?}");
    let clear = MqttClient::connect(tls, "carol", &gateway.token("carol"), true, "carol").await.err();
    assert!(clear.is_some(), "plain MQTT on the TLS listener is refused");

    // Still serving after all that.
    let carol = MqttClient::connect_with(tls, "carol", &gateway.token("carol"), true, "carol", mqtt_tls("ca.pem")).await;
    assert!(carol.is_ok(), "{:?}", carol.err());
}

#[tokio::test]
async fn both_mqtt_listeners_share_the_per_address_limit() {
    let extra = format!("{}tls_listen = \"127.0.0.1:0\"\n[limits]\nconnections_per_ip = 2\n", server_files("mqtt"));
    let gateway = Gateway::start_with(&extra).await;
    let tls = gateway.mqtt_tls.expect("a TLS listener");
    let _plain = gateway.mqtt_user("bob").await;
    let _secure = MqttClient::connect_with(tls, "alice", &gateway.token("alice"), true, "alice", mqtt_tls("ca.pem"))
        .await
        .expect("the second connection");
    let third = MqttClient::connect_with(tls, "carol", &gateway.token("carol"), true, "carol", mqtt_tls("ca.pem")).await;
    assert!(third.is_err(), "a third connection from 127.0.0.1 is refused");
    let third = MqttClient::connect(gateway.mqtt, "carol", &gateway.token("carol"), true, "carol").await;
    assert!(third.is_err(), "on either listener");
}

#[tokio::test]
async fn unusable_tls_files_and_a_taken_tls_port_stop_the_start_naming_their_key() {
    let missing = fixture("no-such-key.pem");
    let error = Gateway::start_error(&format!(
        "[http]\ntls_cert = \"{}\"\ntls_key = \"{}\"\n",
        fixture("server.pem").display(),
        missing.display()
    ))
    .await;
    assert!(error.contains("http.tls_key") && error.contains("no-such-key.pem"), "{error}");

    // A key where the certificate chain should be.
    let error = Gateway::start_error(&format!(
        "[mqtt]\ntls_cert = \"{}\"\ntls_key = \"{}\"\ntls_listen = \"127.0.0.1:0\"\n",
        fixture("server.key.pem").display(),
        fixture("server.key.pem").display()
    ))
    .await;
    assert!(error.contains("mqtt.tls_cert"), "{error}");

    let error = Gateway::start_error(&format!(
        "[mqtt]\nurl = \"mqtts://gw:pw@127.0.0.1:9\"\nca_file = \"{}\"\n",
        fixture("no-such-ca.pem").display()
    ))
    .await;
    assert!(error.contains("mqtt.ca_file"), "{error}");

    let taken = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = taken.local_addr().expect("addr").to_string();
    let error = Gateway::start_error(&format!("{}tls_listen = \"{port}\"\n", server_files("mqtt"))).await;
    assert!(error.contains("mqtt.tls_listen") && error.contains(&port), "{error}");
}

async fn gateway_on_tls(address: SocketAddr, ca: &str) -> Gateway {
    Gateway::start_with(&format!(
        "[mqtt]\nurl = \"mqtts://gateway:gw-secret@{address}\"\nclient_id = \"gw-tls\"\nca_file = \"{}\"\n",
        fixture(ca).display()
    ))
    .await
}

#[tokio::test]
async fn the_gateway_reaches_mosquitto_over_tls() {
    let broker = Mosquitto::start_tls(USERS).await;
    let gateway = gateway_on_tls(broker.tls_address.expect("a TLS listener"), "ca.pem").await;
    healthy(&gateway).await;
    let mut carol = gateway.ws_user("carol").await;

    // The broker's users are on its plain listener; only the gateway's link is TLS.
    let mut bob = broker_user(&broker, "bob", "bob-pw").await;
    send_until_known(&mut carol, "bob", "hello bob").await;
    assert_eq!(bob.recv_type("message").await["body"], "hello bob");

    let mut alice = broker_user(&broker, "alice", "alice-pw").await;
    alice.send(message("a1", "carol", "hello carol")).await;
    let received = carol.recv_type("message").await;
    assert_eq!((received["body"].as_str(), received["from"].as_str()), (Some("hello carol"), Some("alice@localhost")));
    assert_eq!(alice.recv_type("ack").await["id"], "a1");
}

/// A TCP relay to `target` that reports every connection it accepts.
struct Relay {
    address: SocketAddr,
    connections: mpsc::UnboundedReceiver<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Relay {
    async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("addr");
        let (tx, connections) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let _ = tx.send(());
                tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        Self { address, connections, task }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test]
async fn a_broker_certificate_the_gateway_does_not_trust_is_a_failing_peer() {
    let broker = Mosquitto::start_tls(USERS).await;
    // Through a relay, to see the gateway try again: it only does so after a failed connection.
    let mut relay = Relay::start(broker.tls_address.expect("a TLS listener")).await;
    let gateway = gateway_on_tls(relay.address, "other-ca.pem").await;
    for _ in 0..3 {
        tokio::time::timeout(WAIT, relay.connections.recv()).await.expect("the gateway tries again").expect("relay running");
    }
    let (status, body) = gateway.http_get("/healthz").await;
    assert_eq!(status, 503, "{body}");
    let failing: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert!(failing["failing"].as_array().is_some_and(|names| names.iter().any(|n| n == "mqtt")), "{body}");

    // Still running: WebSocket users are served, and the broker is tried again and again.
    let carol = gateway.ws_user("carol").await;
    assert_eq!(carol.jid, "carol@localhost");
    tokio::time::timeout(WAIT, relay.connections.recv()).await.expect("the gateway keeps trying").expect("relay running");
}
