use std::sync::Arc;

use tokio_util::task::TaskTracker;

use super::*;
use crate::envelope::{MessageBody, MessageKind};
use crate::store::SqlStore;

fn user(name: &str) -> UserId {
    UserId::parse(name).expect("valid user")
}

fn chat(from: &str, to: &str, text: &str) -> Envelope {
    Envelope::new(
        Address::user(user(from)),
        Address::user(user(to)),
        Body::Message(MessageBody { body: text.into(), thread: None, subject: None, kind: MessageKind::Chat }),
    )
}

fn text_of(outbound: &Outbound) -> String {
    match &outbound.envelope.body {
        Body::Message(m) => m.body.clone(),
        other => panic!("unexpected {other:?}"),
    }
}

async fn router(dir: &std::path::Path) -> RouterHandle {
    let store = SqlStore::open_embedded(dir).await.expect("store");
    spawn(Arc::new(store), RouterSettings::new(Domain::new("localhost")), &TaskTracker::new())
        .await
        .expect("router")
}

#[tokio::test]
async fn a_never_seen_user_is_not_found() {
    let dir = tempfile::tempdir().expect("tempdir");
    let router = router(dir.path()).await;
    let outcome = router.submit(chat("alice", "nobody", "hi")).await.await;
    assert_eq!(outcome, Outcome::Rejected(Rejection::UnknownUser));
}

#[tokio::test]
async fn offline_messages_are_stored_then_replayed_in_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let router = router(dir.path()).await;
    drop(router.open_session(user("bob"), "test").await.expect("bob once"));
    for i in 0..5 {
        let outcome = router.submit(chat("alice", "bob", &format!("m{i}"))).await.await;
        assert_eq!(outcome, Outcome::Stored);
    }
    let mut bob = router.open_session(user("bob"), "test").await.expect("bob back");
    bob.set_deliverable().await;
    // A live message sent during the replay must come after the backlog.
    let live = router.submit(chat("alice", "bob", "live")).await;
    let mut seen = Vec::new();
    for _ in 0..6 {
        let outbound = bob.outbound.recv().await.expect("frame");
        seen.push(text_of(&outbound));
        if let Some(proof) = outbound.delivered {
            proof.confirm();
        }
    }
    assert_eq!(seen, ["m0", "m1", "m2", "m3", "m4", "live"]);
    assert_eq!(live.await, Outcome::Delivered);
}

#[tokio::test]
async fn every_session_of_a_user_gets_every_frame() {
    let dir = tempfile::tempdir().expect("tempdir");
    let router = router(dir.path()).await;
    let mut one = router.open_session(user("bob"), "test").await.expect("one");
    let mut two = router.open_session(user("bob"), "test").await.expect("two");
    one.set_deliverable().await;
    two.set_deliverable().await;
    let pending = router.submit(chat("alice", "bob", "hello")).await;
    for session in [&mut one, &mut two] {
        let outbound = session.outbound.recv().await.expect("frame");
        assert_eq!(text_of(&outbound), "hello");
        outbound.delivered.expect("proof wanted").confirm();
    }
    assert_eq!(pending.await, Outcome::Delivered);
}

#[tokio::test]
async fn a_session_that_dies_before_confirming_leaves_the_message_stored() {
    let dir = tempfile::tempdir().expect("tempdir");
    let router = router(dir.path()).await;
    let mut bob = router.open_session(user("bob"), "test").await.expect("bob");
    bob.set_deliverable().await;
    let pending = router.submit(chat("alice", "bob", "fragile")).await;
    let outbound = bob.outbound.recv().await.expect("frame");
    drop(outbound);
    drop(bob);
    assert_eq!(pending.await, Outcome::Stored);

    let mut bob = router.open_session(user("bob"), "test").await.expect("bob again");
    bob.set_deliverable().await;
    let outbound = bob.outbound.recv().await.expect("replayed");
    assert_eq!(text_of(&outbound), "fragile");
}

#[tokio::test]
async fn remote_addresses_wait_for_their_route_in_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let router = router(dir.path()).await;
    let carol = Address::parse("carol@xmpp.example.org", &Domain::new("localhost")).expect("jid");
    let to_carol = |text: &str| {
        Envelope::new(
            Address::user(user("alice")),
            carol.clone(),
            Body::Message(MessageBody { body: text.into(), thread: None, subject: None, kind: MessageKind::Chat }),
        )
    };
    assert_eq!(router.submit(to_carol("no route")).await.await, Outcome::Rejected(Rejection::NoRoute));

    router.register_route("xmpp").await.expect("register");
    for text in ["r0", "r1", "r2"] {
        assert_eq!(router.submit(to_carol(text)).await.await, Outcome::Stored, "queued while the link is down");
    }
    let mut link = router.open_route_session("xmpp").await.expect("link");
    assert_eq!(link.user(), None);
    link.set_deliverable().await;
    let live = router.submit(to_carol("live")).await;
    for expected in ["r0", "r1", "r2", "live"] {
        let outbound = link.outbound.recv().await.expect("frame");
        assert_eq!(text_of(&outbound), expected);
        outbound.delivered.expect("proof").confirm();
    }
    assert_eq!(live.await, Outcome::Delivered);
}

#[tokio::test]
async fn what_a_dying_session_never_confirmed_goes_to_her_other_session() {
    let dir = tempfile::tempdir().expect("tempdir");
    let router = router(dir.path()).await;
    let mut old = router.open_session(user("bob"), "test").await.expect("old");
    old.set_deliverable().await;
    let pending = router.submit(chat("alice", "bob", "in flight")).await;
    let in_flight = old.outbound.recv().await.expect("frame");
    // A reconnect: the new session is deliverable before the old one has gone.
    let mut new = router.open_session(user("bob"), "test").await.expect("new");
    new.set_deliverable().await;
    drop(in_flight);
    drop(old);
    assert_eq!(pending.await, Outcome::Stored);
    let again = new.outbound.recv().await.expect("replayed to the live session");
    assert_eq!(text_of(&again), "in flight");
}

#[tokio::test]
async fn an_undeliverable_session_gets_what_waited_once_deliverable_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    let router = router(dir.path()).await;
    let mut bob = router.open_session(user("bob"), "test").await.expect("bob");
    bob.set_deliverable().await;
    bob.set_undeliverable().await;
    assert_eq!(router.submit(chat("alice", "bob", "meanwhile")).await.await, Outcome::Stored);
    bob.set_deliverable().await;
    assert_eq!(text_of(&bob.outbound.recv().await.expect("frame")), "meanwhile");
}

async fn waking_router(dir: &std::path::Path) -> (RouterHandle, Arc<SqlStore>) {
    let store = Arc::new(SqlStore::open_embedded(dir).await.expect("store"));
    let mut settings = RouterSettings::new(Domain::new("localhost"));
    settings.wake_offline_users = true;
    let router = spawn(store.clone(), settings, &TaskTracker::new()).await.expect("router");
    (router, store)
}

async fn next_signal(signals: &mut mpsc::UnboundedReceiver<crate::wake::WakeSignal>) -> crate::wake::WakeSignal {
    tokio::time::timeout(std::time::Duration::from_secs(5), signals.recv()).await.expect("a signal in time").expect("open")
}

#[tokio::test]
async fn a_message_her_dying_connection_never_confirmed_wakes_her() {
    use crate::wake::WakeSignal;
    let dir = tempfile::tempdir().expect("tempdir");
    let (router, store) = waking_router(dir.path()).await;
    let mut signals = router.subscribe_wakes();
    let mut bob = router.open_session(user("bob"), "test").await.expect("bob");
    assert_eq!(next_signal(&mut signals).await, WakeSignal::Online(user("bob")));
    bob.set_deliverable().await;

    // The phone loses its network: the message reached the session, never the phone.
    let pending = router.submit(chat("alice", "bob", "are you there")).await;
    let outbound = bob.outbound.recv().await.expect("handed to the session");
    drop(outbound);
    drop(bob);
    assert_eq!(pending.await, Outcome::Stored);
    assert_eq!(next_signal(&mut signals).await, WakeSignal::Pending(user("bob")));
    let summary = store.wake_summary(&user("bob")).await.expect("summary").expect("a wake");
    assert_eq!(summary.newest.text.as_deref(), Some("are you there"));
}

#[tokio::test]
async fn a_backlog_her_dying_connection_never_confirmed_wakes_her_again() {
    use crate::wake::WakeSignal;
    let dir = tempfile::tempdir().expect("tempdir");
    let (router, store) = waking_router(dir.path()).await;
    let mut signals = router.subscribe_wakes();
    drop(router.open_session(user("bob"), "test").await.expect("bob once"));
    assert_eq!(next_signal(&mut signals).await, WakeSignal::Online(user("bob")));
    assert_eq!(router.submit(chat("alice", "bob", "while away")).await.await, Outcome::Stored);
    assert_eq!(next_signal(&mut signals).await, WakeSignal::Pending(user("bob")));

    // She comes back (her wakes are cleared), takes the replay, and drops before confirming.
    let mut bob = router.open_session(user("bob"), "test").await.expect("bob back");
    assert_eq!(next_signal(&mut signals).await, WakeSignal::Online(user("bob")));
    assert_eq!(store.wake_summary(&user("bob")).await.expect("summary"), None);
    bob.set_deliverable().await;
    let replayed = bob.outbound.recv().await.expect("replayed");
    assert_eq!(text_of(&replayed), "while away");
    drop(replayed);
    drop(bob);
    assert_eq!(next_signal(&mut signals).await, WakeSignal::Pending(user("bob")));
    let summary = store.wake_summary(&user("bob")).await.expect("summary").expect("woken again");
    assert_eq!(summary.newest.text.as_deref(), Some("while away"));
}

#[tokio::test]
async fn with_the_router_gone_a_submission_is_to_be_retried() {
    let (commands, inbox) = tokio::sync::mpsc::channel(1);
    drop(inbox);
    let router = RouterHandle::new(commands, Arc::new(RouterSettings::new(Domain::new("localhost"))), WakeSignals::default());
    let outcome = router.submit(chat("alice", "bob", "hi")).await.await;
    assert!(matches!(outcome, Outcome::Retryable(_)), "{outcome:?}");
    let submitted = router.submit_message("c1", chat("alice", "bob", "hi")).await;
    let outcome = submitted.pending.await;
    assert!(matches!(outcome, Outcome::Retryable(_)), "{outcome:?}");
    let Ok(submitted) = router.submit_message_now("c2", chat("alice", "bob", "hi")) else {
        panic!("a closed queue is not a full one: nothing to wait for");
    };
    let outcome = submitted.pending.await;
    assert!(matches!(outcome, Outcome::Retryable(_)), "{outcome:?}");
}

#[tokio::test]
async fn a_message_submitted_while_the_routers_queue_is_full_waits_and_keeps_its_place() {
    const COUNT: usize = 5_000;
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqlStore::open_embedded(dir.path()).await.expect("store");
    // Room enough behind the router that only its own queue (4,096 commands) fills up.
    let mut settings = RouterSettings::new(Domain::new("localhost"));
    settings.mailbox_capacity = 2 * COUNT;
    settings.session_capacity = 2 * COUNT;
    let router = spawn(Arc::new(store), settings, &TaskTracker::new()).await.expect("router");
    let mut bob = router.open_session(user("bob"), "test").await.expect("bob");
    bob.set_deliverable().await;
    let reader = tokio::spawn(async move {
        let mut seen = Vec::new();
        while seen.len() < COUNT {
            let outbound = bob.outbound.recv().await.expect("frame");
            seen.push(text_of(&outbound));
            if let Some(proof) = outbound.delivered {
                proof.confirm();
            }
        }
        seen
    });
    // On this test's single thread the router runs only when the loop waits: the queue fills.
    let (mut waited, mut pending) = (0, Vec::new());
    for i in 0..COUNT {
        let submitted = match router.submit_message_now(&format!("c{i}"), chat("alice", "bob", &format!("m{i}"))) {
            Ok(submitted) => submitted,
            Err(waiting) => {
                waited += 1;
                waiting.await
            }
        };
        pending.push(submitted.pending);
    }
    assert!(waited > 0, "the router's queue never filled up");
    let seen = reader.await.expect("joins");
    assert_eq!(seen, (0..COUNT).map(|i| format!("m{i}")).collect::<Vec<_>>(), "in the order submitted");
    for outcome in pending {
        assert_eq!(outcome.await, Outcome::Delivered);
    }
}
