//! Presence follows connections and subscriptions: a contact who may see it hears when a user
//! comes, changes her status, and goes — including through her MQTT Last Will.

use serde_json::json;

use crate::common::{Gateway, MqttClient, WsClient};

/// alice subscribes to bob's presence and bob accepts.
async fn befriend(alice: &mut WsClient, bob: &mut WsClient) {
    alice.send(json!({"type":"subscribe","id":"s1","to":"bob"})).await;
    assert_eq!(alice.recv_type("ack").await["id"], "s1");
    let request = bob.recv_type("subscribe").await;
    assert_eq!(request["from"], "alice@localhost");
    bob.send(json!({"type":"subscribed","id":"s2","to":"alice"})).await;
    assert_eq!(bob.recv_type("ack").await["id"], "s2");
    assert_eq!(alice.recv_type("subscribed").await["from"], "bob@localhost");
}

#[tokio::test]
async fn a_subscriber_sees_presence_come_change_and_go() {
    let gateway = Gateway::start().await;
    let mut alice = gateway.ws_user("alice").await;
    let mut bob = gateway.ws_user("bob").await;
    befriend(&mut alice, &mut bob).await;
    // Accepting shows bob's current presence at once.
    let presence = alice.recv_type("presence").await;
    assert_eq!((presence["from"].as_str(), presence["show"].as_str()), (Some("bob@localhost"), Some("available")));

    bob.send(json!({"type":"presence","show":"dnd","status":"in a meeting"})).await;
    let presence = alice.recv_type("presence").await;
    assert_eq!((presence["show"].as_str(), presence["status"].as_str()), (Some("dnd"), Some("in a meeting")));

    bob.close().await;
    assert_eq!(alice.recv_type("presence").await["show"], "unavailable");

    // Back, bob is as he last said he was.
    let _bob = gateway.ws_user("bob").await;
    let presence = alice.recv_type("presence").await;
    assert_eq!((presence["show"].as_str(), presence["status"].as_str()), (Some("dnd"), Some("in a meeting")));
}

#[tokio::test]
async fn a_returning_user_learns_her_contacts_presence() {
    let gateway = Gateway::start().await;
    let mut alice = gateway.ws_user("alice").await;
    let mut bob = gateway.ws_user("bob").await;
    befriend(&mut alice, &mut bob).await;
    alice.close().await;
    bob.send(json!({"type":"presence","show":"away"})).await;

    let mut alice = gateway.ws_user("alice").await;
    let presence = alice.recv_type("presence").await;
    assert_eq!((presence["from"].as_str(), presence["show"].as_str()), (Some("bob@localhost"), Some("away")));
}

#[tokio::test]
async fn presence_goes_only_to_those_allowed_to_see_it() {
    let gateway = Gateway::start().await;
    let mut alice = gateway.ws_user("alice").await;
    let mut bob = gateway.ws_user("bob").await;
    let mut eve = gateway.ws_user("eve").await;
    befriend(&mut alice, &mut bob).await;
    bob.send(json!({"type":"presence","show":"xa"})).await;
    assert_eq!(alice.recv_type("presence").await["from"], "bob@localhost");
    // eve, who never subscribed, sees none of it: her next frame is the message below.
    bob.send(crate::common::message("m1", "eve", "hi eve")).await;
    let next = eve.recv().await;
    assert_eq!(next["type"], "message", "eve saw {next}");
}

#[tokio::test]
async fn an_mqtt_last_will_makes_her_unavailable_to_her_contacts() {
    let gateway = Gateway::start().await;
    let mut alice = gateway.ws_user("alice").await;
    let mut bob_web = gateway.ws_user("bob").await;
    befriend(&mut alice, &mut bob_web).await;
    assert_eq!(alice.recv_type("presence").await["show"], "available");
    bob_web.close().await;
    assert_eq!(alice.recv_type("presence").await["show"], "unavailable");

    let token = gateway.token("bob");
    let bob = MqttClient::connect_with(gateway.mqtt, "bob", &token, true, "bob-phone", |options| {
        options.set_last_will(rumqttc::LastWill::new(
            "im/bob/presence",
            json!({"type":"presence","show":"unavailable"}).to_string(),
            rumqttc::QoS::AtLeastOnce,
            true,
        ));
    })
    .await
    .expect("connects");
    bob.client
        .publish("im/bob/presence", rumqttc::QoS::AtLeastOnce, true, json!({"type":"presence","show":"chat"}).to_string())
        .await
        .expect("presence queued");
    // Connecting made him available; his retained presence says how.
    while alice.recv_type("presence").await["show"] != "chat" {}
    drop(bob);
    assert_eq!(alice.recv_type("presence").await["show"], "unavailable");
}
