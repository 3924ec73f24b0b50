//! The embedded endpoint with Debian's mosquitto command-line clients, unchanged.

use std::process::Stdio;

use tokio::process::Command;

use crate::common::{Gateway, message};

#[tokio::test]
async fn mosquitto_clients_chat_with_a_websocket_user() {
    let gateway = Gateway::start().await;
    let port = gateway.mqtt.port().to_string();
    let mut web = gateway.ws_user("web").await;

    // mosquitto_sub as bob, waiting for exactly one frame.
    let sub = Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &port, "-u", "bob", "-P", &gateway.token("bob")])
        .args(["-i", "bob-cli", "-t", "im/bob/in", "-q", "1", "-C", "1", "-W", "15"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("mosquitto_sub (Debian's mosquitto-clients) is installed");
    // The SUBACK has been sent once bob is deliverable; wait for it through the gateway itself.
    loop {
        web.send(message("probe", "bob", "ping")).await;
        let answer = web.recv().await;
        if answer["type"] == "ack" {
            break;
        }
    }
    let output = tokio::time::timeout(crate::common::WAIT, sub.wait_with_output())
        .await
        .expect("mosquitto_sub ends")
        .expect("mosquitto_sub output");
    let frame: serde_json::Value = serde_json::from_slice(&output.stdout).expect("one JSON frame");
    assert_eq!(frame["body"], "ping");
    assert_eq!(frame["from"], "web@localhost");

    // mosquitto_pub as alice, to the WebSocket user.
    let status = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &port, "-u", "alice", "-P", &gateway.token("alice")])
        .args(["-t", "im/alice/out", "-q", "1", "-m", &message("c1", "web", "from the shell").to_string()])
        .status()
        .await
        .expect("mosquitto_pub runs");
    assert!(status.success());
    assert_eq!(web.recv_type("message").await["body"], "from the shell");
}

#[tokio::test]
async fn mosquitto_clients_are_refused_the_contract_way() {
    let gateway = Gateway::start().await;
    let port = gateway.mqtt.port().to_string();
    let output = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &port, "-u", "alice", "-P", "bad-token", "-t", "im/alice/out", "-m", "{}"])
        .output()
        .await
        .expect("mosquitto_pub runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("bad user name or password"), "refused by CONNACK: {stderr}");

    let output = Command::new("mosquitto_pub")
        .args(["-V", "5", "-h", "127.0.0.1", "-p", &port, "-u", "alice", "-P", &gateway.token("alice")])
        .args(["-t", "im/alice/out", "-m", "{}"])
        .output()
        .await
        .expect("mosquitto_pub runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr).to_lowercase();
    assert!(stderr.contains("protocol") || stderr.contains("version"), "MQTT 5 gets a version refusal: {stderr}");

    let output = Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &port, "-u", "alice", "-P", &gateway.token("alice")])
        .args(["-t", "im/bob/in", "-C", "1", "-W", "5"])
        .output()
        .await
        .expect("mosquitto_sub runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("denied"), "SUBACK failure: {stderr}");
}

#[tokio::test]
async fn a_lost_connection_leaves_unconfirmed_messages_queued() {
    let gateway = Gateway::start().await;
    let mut alice = gateway.ws_user("alice").await;
    // bob never PUBACKs: manual acks on, and he never acks.
    let token = gateway.token("bob");
    let mut bob = crate::common::MqttClient::connect_with(gateway.mqtt, "bob", &token, true, "bob-1", |o| {
        o.set_manual_acks(true);
    })
    .await
    .expect("connects");
    bob.subscribe_in().await;
    alice.send(message("w1", "bob", "unconfirmed")).await;
    assert_eq!(bob.recv_type("message").await["body"], "unconfirmed");
    drop(bob);
    // Without a PUBACK the gateway counts the message as not delivered: it is stored...
    let ack = alice.recv_type("ack").await;
    assert_eq!(ack["id"], "w1");
    // ...and delivered again when bob comes back.
    let mut bob = gateway.mqtt_user("bob").await;
    let again = bob.recv_type("message").await;
    assert_eq!((again["body"].as_str(), again["id"].as_str()), (Some("unconfirmed"), ack["msg"].as_str()));
}
