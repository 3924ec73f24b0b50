//! A message for a user with no live session is stored before it is acked, and delivered in
//! order when she returns, whichever protocol she returns on — also across a gateway restart.

use crate::common::{Gateway, MqttClient, message};

async fn introduce(gateway: &Gateway, user: &str) {
    // A user exists once she has connected (CONTRACT §2).
    gateway.ws_user(user).await.close().await;
}

#[tokio::test]
async fn offline_mqtt_user_gets_her_messages_in_order_on_return() {
    let gateway = Gateway::start().await;
    introduce(&gateway, "bob").await;
    let mut alice = gateway.ws_user("alice").await;
    let mut acked = Vec::new();
    for i in 0..30 {
        alice.send(message(&format!("w{i}"), "bob", &format!("m{i}"))).await;
        let ack = alice.recv_type("ack").await;
        assert_eq!(ack["id"], format!("w{i}"));
        acked.push(ack["msg"].clone());
    }
    let mut bob = gateway.mqtt_user("bob").await;
    for (i, msg) in acked.iter().enumerate() {
        let received = bob.recv_type("message").await;
        assert_eq!(received["body"], format!("m{i}"));
        assert_eq!(&received["id"], msg);
    }
}

#[tokio::test]
async fn offline_websocket_user_gets_her_messages_after_a_restart() {
    let gateway = Gateway::start().await;
    introduce(&gateway, "bob").await;
    let mut alice = gateway.mqtt_user("alice").await;
    for i in 0..10 {
        alice.send(message(&format!("c{i}"), "bob", &format!("m{i}"))).await;
    }
    for i in 0..10 {
        assert_eq!(alice.recv_type("ack").await["id"], format!("c{i}"));
    }
    alice.disconnect().await;
    let gateway = gateway.restart().await;
    let mut bob = gateway.ws_user("bob").await;
    for i in 0..10 {
        assert_eq!(bob.recv_type("message").await["body"], format!("m{i}"));
    }
}

#[tokio::test]
async fn a_persistent_mqtt_session_resumes_without_subscribing_again() {
    let gateway = Gateway::start().await;
    let token = gateway.token("bob");
    let mut bob = MqttClient::connect(gateway.mqtt, "bob", &token, false, "bob-phone").await.expect("connects");
    assert!(!bob.session_present);
    bob.subscribe_in().await;
    bob.disconnect().await;

    let mut alice = gateway.ws_user("alice").await;
    alice.send(message("w1", "bob", "while you were away")).await;
    assert_eq!(alice.recv_type("ack").await["id"], "w1");

    let mut bob = MqttClient::connect(gateway.mqtt, "bob", &token, false, "bob-phone").await.expect("reconnects");
    assert!(bob.session_present, "the broker kept the session");
    assert_eq!(bob.recv_type("message").await["body"], "while you were away");
}

#[tokio::test]
async fn messages_and_presence_for_never_seen_users_are_refused() {
    let gateway = Gateway::start().await;
    let mut alice = gateway.ws_user("alice").await;
    alice.send(message("w1", "nobody", "hello?")).await;
    let error = alice.recv_type("error").await;
    assert_eq!((error["id"].as_str(), error["code"].as_str()), (Some("w1"), Some("not-found")));
    alice.send(serde_json::json!({"type":"subscribe","id":"s1","to":"ghost"})).await;
    let error = alice.recv_type("error").await;
    assert_eq!((error["id"].as_str(), error["code"].as_str()), (Some("s1"), Some("not-found")));
}

#[tokio::test]
async fn unsubscribing_and_subscribing_again_loses_nothing() {
    let gateway = Gateway::start().await;
    let mut bob = gateway.mqtt_user("bob").await;
    bob.client.unsubscribe("im/bob/in").await.expect("unsubscribe queued");
    let mut alice = gateway.ws_user("alice").await;
    // Until the UNSUBSCRIBE has been handled the message may still go out live; either way it
    // must reach bob once he subscribes again.
    alice.send(message("w1", "bob", "while unsubscribed")).await;
    assert_eq!(alice.recv_type("ack").await["id"], "w1");
    bob.subscribe_in().await;
    assert_eq!(bob.recv_type("message").await["body"], "while unsubscribed");
}
