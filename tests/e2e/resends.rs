//! A message resent because its `ack` never arrived reaches the recipient once, and the resend
//! is answered as the first copy was.

use crate::common::{Gateway, message};

#[tokio::test]
async fn a_resend_on_a_new_connection_is_acked_with_the_first_id_and_not_delivered_twice() {
    let gateway = Gateway::start().await;
    let mut bob = gateway.ws_user("bob").await;
    let mut alice = gateway.ws_user("alice").await;
    alice.send(message("m1", "bob", "once")).await;
    let first = alice.recv_type("ack").await;
    assert_eq!(bob.recv_type("message").await["body"], "once");
    alice.close().await;

    // Her app lost the connection before it saw the ack, so it sends again from a new one.
    let mut alice = gateway.mqtt_user("alice").await;
    alice.send(message("m1", "bob", "once")).await;
    let again = alice.recv_type("ack").await;
    assert_eq!(again["id"], "m1");
    assert_eq!(again["msg"], first["msg"], "the resend is answered with the first copy's id");

    alice.send(message("m2", "bob", "next")).await;
    assert_eq!(alice.recv_type("ack").await["id"], "m2");
    assert_eq!(bob.recv_type("message").await["body"], "next", "the resend was not delivered again");
    assert!(gateway.metric("switchboard_resends_suppressed_total").await >= 1.0);
}

#[tokio::test]
async fn the_same_id_with_other_content_is_a_new_message() {
    let gateway = Gateway::start().await;
    let mut bob = gateway.ws_user("bob").await;
    let mut alice = gateway.ws_user("alice").await;
    alice.send(message("1", "bob", "before the reinstall")).await;
    let first = alice.recv_type("ack").await;
    alice.send(message("1", "bob", "after the reinstall")).await;
    let second = alice.recv_type("ack").await;
    assert_ne!(first["msg"], second["msg"]);
    assert_eq!(bob.recv_type("message").await["body"], "before the reinstall");
    assert_eq!(bob.recv_type("message").await["body"], "after the reinstall");
}

#[tokio::test]
async fn a_resend_to_an_offline_user_is_stored_once() {
    let gateway = Gateway::start().await;
    gateway.ws_user("bob").await.close().await;
    let mut alice = gateway.ws_user("alice").await;
    for _ in 0..3 {
        alice.send(message("o1", "bob", "kept once")).await;
        assert_eq!(alice.recv_type("ack").await["id"], "o1");
    }
    alice.send(message("o2", "bob", "then this")).await;
    alice.recv_type("ack").await;

    let mut bob = gateway.ws_user("bob").await;
    assert_eq!(bob.recv_type("message").await["body"], "kept once");
    assert_eq!(bob.recv_type("message").await["body"], "then this");
}

#[tokio::test]
async fn a_message_refused_the_first_time_is_routed_when_resent() {
    let gateway = Gateway::start_with("[limits]\noffline_max = 1\n").await;
    gateway.ws_user("bob").await.close().await;
    let mut alice = gateway.ws_user("alice").await;
    alice.send(message("f0", "bob", "fills the queue")).await;
    alice.recv_type("ack").await;
    alice.send(message("f1", "bob", "no room yet")).await;
    assert_eq!(alice.recv_type("error").await["code"], "unavailable");

    let mut bob = gateway.ws_user("bob").await;
    assert_eq!(bob.recv_type("message").await["body"], "fills the queue");
    alice.send(message("f1", "bob", "no room yet")).await;
    assert_eq!(alice.recv_type("ack").await["id"], "f1");
    assert_eq!(bob.recv_type("message").await["body"], "no room yet");
}
