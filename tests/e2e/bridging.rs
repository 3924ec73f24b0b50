//! A chat message travels between every pair of client protocols, with the sender's `ack`
//! naming the id the recipient sees.

use crate::common::{Gateway, message};

#[tokio::test]
async fn mqtt_to_websocket() {
    let gateway = Gateway::start().await;
    let mut bob = gateway.ws_user("bob").await;
    let mut alice = gateway.mqtt_user("alice").await;
    alice.send(message("c1", "bob", "hello from mqtt")).await;

    let ack = alice.recv_type("ack").await;
    assert_eq!(ack["id"], "c1");
    let received = bob.recv_type("message").await;
    assert_eq!(received["body"], "hello from mqtt");
    assert_eq!(received["from"], "alice@localhost");
    assert_eq!(received["to"], "bob@localhost");
    assert_eq!(received["id"], ack["msg"], "the recipient sees the id the sender was acked with");
}

#[tokio::test]
async fn websocket_to_mqtt() {
    let gateway = Gateway::start().await;
    let mut bob = gateway.mqtt_user("bob").await;
    let mut alice = gateway.ws_user("alice").await;
    alice.send(serde_json::json!({"type":"message","id":"w1","to":"bob@localhost","body":"ünïcødé <&> \"q\"","thread":"t1","subject":"s"})).await;

    let received = bob.recv_type("message").await;
    assert_eq!(received["body"], "ünïcødé <&> \"q\"");
    assert_eq!(received["thread"], "t1");
    assert_eq!(received["subject"], "s");
    assert_eq!(received["from"], "alice@localhost");
    let ack = alice.recv_type("ack").await;
    assert_eq!((ack["id"].as_str(), ack["msg"].as_str()), (Some("w1"), received["id"].as_str()));
}

#[tokio::test]
async fn mqtt_to_mqtt() {
    let gateway = Gateway::start().await;
    let mut bob = gateway.mqtt_user("bob").await;
    let mut alice = gateway.mqtt_user("alice").await;
    for i in 0..20 {
        alice.send(message(&format!("c{i}"), "bob", &format!("n{i}"))).await;
    }
    for i in 0..20 {
        assert_eq!(bob.recv_type("message").await["body"], format!("n{i}"), "in order");
    }
    for i in 0..20 {
        assert_eq!(alice.recv_type("ack").await["id"], format!("c{i}"));
    }
}

#[tokio::test]
async fn websocket_to_websocket() {
    let gateway = Gateway::start().await;
    let mut bob = gateway.ws_user("bob").await;
    let mut alice = gateway.ws_user("alice").await;
    alice.send(message("w1", "bob", "hi")).await;
    assert_eq!(bob.recv_type("message").await["body"], "hi");
    assert_eq!(alice.recv_type("ack").await["id"], "w1");
}

#[tokio::test]
async fn every_session_of_a_user_receives_every_frame() {
    let gateway = Gateway::start().await;
    let mut bob_web = gateway.ws_user("bob").await;
    let mut bob_phone = gateway.mqtt_user("bob").await;
    let mut bob_tab = gateway.ws_user("bob").await;
    let mut alice = gateway.ws_user("alice").await;
    alice.send(message("w1", "bob", "to all of you")).await;
    assert_eq!(bob_web.recv_type("message").await["body"], "to all of you");
    assert_eq!(bob_phone.recv_type("message").await["body"], "to all of you");
    assert_eq!(bob_tab.recv_type("message").await["body"], "to all of you");
    assert_eq!(alice.recv_type("ack").await["id"], "w1");
}

#[tokio::test]
async fn receipts_and_chat_states_reach_the_other_side() {
    let gateway = Gateway::start().await;
    let mut bob = gateway.mqtt_user("bob").await;
    let mut alice = gateway.ws_user("alice").await;
    alice.send(serde_json::json!({"type":"chatstate","to":"bob","state":"composing"})).await;
    let state = bob.recv_type("chatstate").await;
    assert_eq!((state["state"].as_str(), state["from"].as_str()), (Some("composing"), Some("alice@localhost")));

    alice.send(message("w1", "bob", "read me")).await;
    let msg = bob.recv_type("message").await;
    bob.send(serde_json::json!({"type":"receipt","id":"r1","to":"alice","of":msg["id"],"status":"displayed"})).await;
    let receipt = alice.recv_type("receipt").await;
    assert_eq!(receipt["of"], msg["id"]);
    assert_eq!(receipt["status"], "displayed");
    assert_eq!(receipt["from"], "bob@localhost");
}
