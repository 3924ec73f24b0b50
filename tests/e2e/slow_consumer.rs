//! A client that stops reading is cut off; the others go on, and what it had not read waits
//! for its return.

use std::collections::HashSet;
use std::time::Duration;

use crate::common::{Gateway, message};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_client_that_stops_reading_is_cut_off_without_slowing_others_or_losing_anything() {
    let gateway = Gateway::start_with("[limits]\nmessages_per_second = 100000\n").await;
    // bob connects and then reads nothing: his socket buffers fill, then his session queue.
    let mut stalled_bob = gateway.ws_user("bob").await;
    let mut carol = gateway.ws_user("carol").await;
    let mut alice = gateway.ws_user("alice").await;
    let body = "x".repeat(60_000);
    let total = 400;
    for i in 0..total {
        alice.send(message(&format!("b{i}"), "bob", &format!("{i} {body}"))).await;
    }
    // Meanwhile carol is served as usual.
    let started = tokio::time::Instant::now();
    for i in 0..20 {
        alice.send(message(&format!("c{i}"), "carol", "for carol")).await;
        assert_eq!(carol.recv_type("message").await["body"], "for carol");
    }
    assert!(started.elapsed() < Duration::from_secs(5), "carol waited {:?} behind bob", started.elapsed());

    // Every message for bob is acknowledged: written to his socket before he stalled, or kept
    // for him once he was cut off.
    let mut acked = HashSet::new();
    while acked.len() < total + 20 {
        let frame = tokio::time::timeout(Duration::from_secs(60), alice.recv()).await.expect("acks keep coming");
        assert_eq!(frame["type"], "ack", "{frame}");
        acked.insert(frame["id"].as_str().expect("id").to_owned());
    }

    // His stalled connection was closed; what it had been given before is still in it.
    let mut seen = HashSet::new();
    while let Some(frame) = stalled_bob.try_recv().await {
        if frame["type"] == "message" {
            seen.insert(frame["body"].as_str().expect("body").split(' ').next().expect("number").to_owned());
        }
    }
    assert!(seen.len() < total, "he was cut off before everything was written to him");
    let mut bob = gateway.ws_user("bob").await;
    while seen.len() < total {
        let frame = bob.recv_type("message").await;
        seen.insert(frame["body"].as_str().expect("body").split(' ').next().expect("number").to_owned());
    }
    assert!(gateway.metric("switchboard_errors_total{adapter=\"websocket\",code=\"slow-consumer\"}").await >= 1.0);
}
