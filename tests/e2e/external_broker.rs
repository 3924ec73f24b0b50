//! The MQTT adapter as a client of a real Mosquitto, configured with the documented password and
//! ACL files.

use serde_json::json;

use crate::common::{Gateway, MqttClient, WAIT, message};
use crate::mosquitto::Mosquitto;

pub(crate) const USERS: &[(&str, &str)] = &[("gateway", "gw-secret"), ("alice", "alice-pw"), ("bob", "bob-pw")];

async fn gateway_on(broker: &Mosquitto) -> Gateway {
    gateway_on_with(broker, "").await
}

/// Senders in a burst are not held back by the per-user rate limit.
const UNLIMITED: &str = "[limits]\nmessages_per_second = 1000000\n";

async fn gateway_on_with(broker: &Mosquitto, extra: &str) -> Gateway {
    let gateway = Gateway::start_with(&format!(
        "[mqtt]\nurl = \"mqtt://gateway:gw-secret@{}\"\nclient_id = \"gw-test\"\n{extra}",
        broker.address
    ))
    .await;
    healthy(&gateway).await;
    gateway
}

pub(crate) async fn healthy(gateway: &Gateway) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (status, _) = gateway.http_get("/healthz").await;
        if status == 200 {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "the gateway never reached the broker");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// A user of the broker: password login, her `in` subscribed, her presence retained with a
/// Last Will, as the contract asks of clients.
pub(crate) async fn broker_user(broker: &Mosquitto, user: &str, password: &str) -> MqttClient {
    let mut client = MqttClient::connect_with(broker.address, user, password, true, &format!("{user}-app"), |options| {
        options.set_last_will(rumqttc::LastWill::new(
            format!("im/{user}/presence"),
            json!({"type":"presence","show":"unavailable"}).to_string(),
            rumqttc::QoS::AtLeastOnce,
            true,
        ));
    })
    .await
    .expect("the broker accepts her");
    client.subscribe_in().await;
    client
        .client
        .publish(format!("im/{user}/presence"), rumqttc::QoS::AtLeastOnce, true, json!({"type":"presence","show":"available"}).to_string())
        .await
        .expect("presence queued");
    client
}

/// Sends from a WebSocket user until the gateway knows the recipient (her presence has been
/// seen), returning the ack.
pub(crate) async fn send_until_known(sender: &mut crate::common::WsClient, to: &str, body: &str) -> serde_json::Value {
    for attempt in 0..200 {
        sender.send(message(&format!("try{attempt}"), to, body)).await;
        let answer = sender.recv().await;
        if answer["type"] == "ack" {
            return answer;
        }
        assert_eq!(answer["code"], "not-found", "{answer}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("{to} never became known");
}

#[tokio::test]
async fn broker_users_chat_with_websocket_users_both_ways() {
    let broker = Mosquitto::start(USERS).await;
    let gateway = gateway_on(&broker).await;
    let mut carol = gateway.ws_user("carol").await;

    let mut bob = broker_user(&broker, "bob", "bob-pw").await;
    send_until_known(&mut carol, "bob", "hello bob").await;
    assert_eq!(bob.recv_type("message").await["body"], "hello bob");

    let mut alice = broker_user(&broker, "alice", "alice-pw").await;
    alice.send(message("a1", "carol", "hello carol")).await;
    let received = carol.recv_type("message").await;
    assert_eq!((received["body"].as_str(), received["from"].as_str()), (Some("hello carol"), Some("alice@localhost")));
    let ack = alice.recv_type("ack").await;
    assert_eq!((ack["id"].as_str(), ack["msg"].as_str()), (Some("a1"), received["id"].as_str()));
}

#[tokio::test]
async fn the_broker_acl_refuses_foreign_topics() {
    let broker = Mosquitto::start(USERS).await;
    let gateway = gateway_on(&broker).await;
    let mut carol = gateway.ws_user("carol").await;
    let mut alice = broker_user(&broker, "alice", "alice-pw").await;

    // Writing as bob is dropped by Mosquitto, so the gateway never sees it.
    alice.publish("im/bob/out", message("spoof", "carol", "i am bob").to_string()).await;
    alice.send(message("a1", "carol", "honest")).await;
    assert_eq!(carol.recv_type("message").await["body"], "honest", "the spoofed frame never arrived first");

    // Reading bob's frames: Mosquitto 2.0 grants the SUBACK but delivers nothing the ACL denies.
    alice.subscribe("im/bob/in").await;
    let mut bob = broker_user(&broker, "bob", "bob-pw").await;
    send_until_known(&mut carol, "bob", "for bob only").await;
    assert_eq!(bob.recv_type("message").await["body"], "for bob only");
    carol.send(message("c2", "alice", "for alice")).await;
    let first = alice.recv_type("message").await;
    assert_eq!(first["body"], "for alice", "alice never saw bob's frame: {first}");
}

#[tokio::test]
async fn a_user_who_went_away_gets_her_messages_on_return() {
    let broker = Mosquitto::start(USERS).await;
    let gateway = gateway_on(&broker).await;
    let mut carol = gateway.ws_user("carol").await;
    let bob = broker_user(&broker, "bob", "bob-pw").await;
    send_until_known(&mut carol, "bob", "first").await;
    // The socket dies: Mosquitto publishes bob's Last Will, so he is offline for the gateway.
    drop(bob);
    // His app, back, first sees the Will it left (retained), then says it is available again —
    // without that wait the Will could overtake the new presence, in the broker as here.
    let mut watcher = MqttClient::connect(broker.address, "bob", "bob-pw", true, "bob-watch").await.expect("connects");
    watcher.client.subscribe("im/bob/presence", rumqttc::QoS::AtLeastOnce).await.expect("subscribe");
    while watcher.recv().await["show"] != "unavailable" {}

    let mut bob = broker_user(&broker, "bob", "bob-pw").await;
    let mut bodies = Vec::new();
    for i in 0..5 {
        carol.send(message(&format!("c{i}"), "bob", &format!("m{i}"))).await;
        assert_eq!(carol.recv_type("ack").await["id"], format!("c{i}"));
    }
    while bodies.len() < 5 {
        let frame = bob.recv_type("message").await;
        let body = frame["body"].as_str().unwrap_or_default().to_owned();
        if body.starts_with('m') {
            bodies.push(body);
        }
    }
    assert_eq!(bodies, ["m0", "m1", "m2", "m3", "m4"]);
}

#[tokio::test]
async fn the_gateway_reconnects_and_resubscribes_after_a_broker_restart() {
    let mut broker = Mosquitto::start(USERS).await;
    let gateway = gateway_on(&broker).await;
    let mut carol = gateway.ws_user("carol").await;

    broker.restart().await;
    // The broker forgot every session and subscription: traffic flows again only if the gateway
    // reconnected and subscribed anew.
    healthy(&gateway).await;
    let alice = broker_user(&broker, "alice", "alice-pw").await;
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut attempt = 0;
    loop {
        attempt += 1;
        alice.send(message(&format!("a{attempt}"), "carol", "after the restart")).await;
        let frame = tokio::time::timeout(std::time::Duration::from_millis(500), carol.recv_type("message")).await;
        if let Ok(frame) = frame {
            assert_eq!(frame["body"], "after the restart");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no traffic after the broker restart");
    }
}

/// A burst fills the gateway's request queue to the broker with acknowledgements and ack frames;
/// none may be dropped, or the broker's in-flight window fills and it stops delivering.
#[tokio::test]
async fn a_burst_through_the_broker_is_delivered_and_acknowledged_whole() {
    const BURST: usize = 3_000;
    let broker = Mosquitto::start(USERS).await;
    let gateway = gateway_on_with(&broker, UNLIMITED).await;
    let mut carol = gateway.ws_user("carol").await;
    let mut alice = broker_user(&broker, "alice", "alice-pw").await;
    // Known to the gateway once her first frame is answered.
    alice.send(message("warm-up", "carol", "hi")).await;
    assert_eq!(alice.recv_type("ack").await["id"], "warm-up");
    assert_eq!(carol.recv_type("message").await["body"], "hi");

    for n in 0..BURST {
        alice.send(message(&format!("b{n}"), "carol", &format!("burst {n}"))).await;
    }
    let mut bodies = std::collections::HashSet::new();
    while bodies.len() < BURST {
        let frame = carol.recv_type("message").await;
        bodies.insert(frame["body"].as_str().unwrap_or_default().to_owned());
    }
    let mut acked = std::collections::HashSet::new();
    while acked.len() < BURST {
        let ack = alice.recv_type("ack").await;
        acked.insert(ack["id"].as_str().unwrap_or_default().to_owned());
    }
    assert_eq!((bodies.len(), acked.len()), (BURST, BURST));
}

/// A broker that stops taking traffic while its connection stays up (here SIGSTOP, shorter than
/// the bridge's 30 s keep-alive) backs up the bridge until the router cuts bob's bridged session
/// off as a slow consumer (after 10 s). He is still online at the broker, so the bridge opens a new
/// session: everything the gateway acknowledged reaches him once the broker takes traffic again,
/// including what was kept for him while he had no session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bridged_session_cut_off_behind_a_stalled_broker_is_opened_again() {
    // More than the bridge holds before it stops taking deliveries (broker window, rumqttc's
    // queue, its own backlog and channel) plus bob's session queue.
    const SENT: usize = 4_000;
    let broker = Mosquitto::start(USERS).await;
    let gateway = gateway_on_with(&broker, UNLIMITED).await;
    let mut carol = gateway.ws_user("carol").await;
    let mut bob = broker_user(&broker, "bob", "bob-pw").await;
    send_until_known(&mut carol, "bob", "before").await;
    assert_eq!(bob.recv_type("message").await["body"], "before");

    broker.pause().await;
    for n in 0..SENT {
        carol.send(message(&format!("s{n}"), "bob", &format!("stalled {n}"))).await;
    }
    // Until the router has cut bob's session off (10 s after his queue filled), well inside the
    // bridge's keep-alive.
    let stalled_at = tokio::time::Instant::now();
    while gateway.metric(SLOW_CONSUMERS).await < 1.0 {
        assert!(stalled_at.elapsed() < std::time::Duration::from_secs(25), "bob's bridged session was never cut off");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    broker.resume().await;

    // Each frame is answered: acknowledged, or refused while bob's mailbox was full.
    let mut acked = std::collections::HashSet::new();
    let mut answered = 0;
    while answered < SENT {
        let frame = tokio::time::timeout(std::time::Duration::from_secs(60), carol.recv()).await.expect("every frame is answered");
        match frame["type"].as_str() {
            Some("ack") => {
                acked.insert(frame["id"].as_str().unwrap_or_default().trim_start_matches('s').to_owned());
            }
            Some("error") => assert_eq!(frame["code"], "unavailable", "{frame}"),
            _ => continue,
        }
        answered += 1;
    }
    assert!(acked.len() > 2_000, "only {} acknowledged: the bridge was not backed up", acked.len());
    let mut seen = std::collections::HashSet::new();
    while !acked.iter().all(|n| seen.contains(n)) {
        let frame = tokio::time::timeout(std::time::Duration::from_secs(60), bob.recv_type("message"))
            .await
            .unwrap_or_else(|_| panic!("{} of {} acknowledged messages reached bob", seen.len(), acked.len()));
        if let Some(number) = frame["body"].as_str().and_then(|body| body.strip_prefix("stalled ")) {
            seen.insert(number.to_owned());
        }
    }
}

const SLOW_CONSUMERS: &str = "switchboard_errors_total{adapter=\"mqtt\",code=\"slow-consumer\"}";
