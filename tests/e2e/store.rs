//! The durable store behaves the same on both backends: every test body below runs once on
//! SQLite (a file in a temporary directory, as the embedded default) and once on PostgreSQL (a
//! new database on the test binary's own server, see `postgres.rs`), as `store::on_sqlite::<name>`
//! and `store::on_postgres::<name>`.

use std::time::Duration;

use switchboard_gateway::roster::RosterItem;
use switchboard_gateway::store::{BoundedAppend, MessageAlias, QueueName, QueueSeq, SqlStore, Store};
use switchboard_gateway::wake::{Notified, Wake, WakeKind, WakeSeq};
use switchboard_gateway::{
    Address, Body, DeviceAction, DeviceRegistration, Envelope, FailureBody, FailureReason, MessageBody, MessageId,
    MessageKind, Platform, PresenceBody, ReceiptBody, ReceiptStatus, RemoteAddress, Show, SubscriptionAction,
    Timestamp, UserId,
};

/// Where a test's store lives; opening it again is a gateway restart (or another node).
enum Db {
    Sqlite(tempfile::TempDir),
    Postgres(String),
}

impl Db {
    async fn sqlite() -> Self {
        Self::Sqlite(tempfile::tempdir().expect("tempdir"))
    }

    async fn postgres() -> Self {
        Self::Postgres(crate::postgres::database_url().await)
    }

    /// Opens the store, running the migrations (again, if it was opened before).
    async fn open(&self) -> SqlStore {
        match self {
            Self::Sqlite(dir) => SqlStore::open_embedded(dir.path()).await.expect("open the SQLite store"),
            Self::Postgres(url) => SqlStore::connect(url).await.expect("connect the PostgreSQL store"),
        }
    }
}

/// Emits `on_sqlite::<test>` and `on_postgres::<test>` for each generic test body.
macro_rules! on_both_backends {
    ($($test:ident),* $(,)?) => {
        mod on_sqlite {
            $(
                #[tokio::test]
                async fn $test() {
                    super::$test(super::Db::sqlite().await).await;
                }
            )*
        }
        mod on_postgres {
            $(
                #[tokio::test]
                async fn $test() {
                    super::$test(super::Db::postgres().await).await;
                }
            )*
        }
    };
}

on_both_backends!(
    users_are_known_once,
    presence_is_kept_per_user,
    queue_pages_in_order,
    dequeue_removes_only_the_given_seqs,
    queues_are_separate,
    expiry_drops_what_is_older_than_the_cutoff,
    devices_register_move_and_unregister,
    roster_items_are_saved_and_deleted_when_empty,
    aliases_resolve_only_for_their_peer,
    an_alias_by_our_own_id_resolves_for_its_peer_only,
    a_batch_of_aliases_spanning_several_statements_keeps_each_row_whole,
    ping_answers,
    reopening_keeps_everything,
    wakes_are_recorded_with_their_envelope_and_cleared_on_return,
    devices_remember_what_they_were_told,
    a_user_keeps_at_most_twenty_devices,
    concurrent_appends_are_committed_together_and_each_in_order,
    one_lookup_reads_the_outboxes_and_devices_of_many_users,
    a_bounded_append_counts_the_queue_in_its_own_transaction,
);

fn user(name: &str) -> UserId {
    UserId::parse(name).expect("valid user")
}

fn remote(local: &str, domain: &str) -> Address {
    Address::Remote(RemoteAddress { local: Some(local.to_owned()), domain: domain.to_owned(), resource: None })
}

fn message(to: &UserId, text: &str) -> Envelope {
    Envelope::new(
        Address::user(user("sender")),
        Address::user(to.clone()),
        Body::Message(MessageBody { body: text.to_owned(), thread: None, subject: None, kind: MessageKind::Chat }),
    )
}

/// One envelope of every kind that waits offline, with text that must survive the round trip.
fn assorted(to: &UserId) -> Vec<Envelope> {
    let to_address = Address::user(to.clone());
    let carol = remote("carol", "xmpp.example.org");
    vec![
        message(to, "héllo ✓ 😀 \"quoted\" 'single' \\ back\nnew line\ttab"),
        Envelope::new(
            carol.clone(),
            to_address.clone(),
            Body::Message(MessageBody {
                body: "with thread".into(),
                thread: Some("t-1".into()),
                subject: Some("Subject".into()),
                kind: MessageKind::Normal,
            }),
        ),
        Envelope::new(carol.clone(), to_address.clone(), Body::Subscription { action: SubscriptionAction::Subscribe }),
        Envelope::new(
            Address::user(user("bob")),
            to_address.clone(),
            Body::Receipt(ReceiptBody { of: MessageId::generate(), status: ReceiptStatus::Displayed }),
        ),
        Envelope::new(
            to_address.clone(),
            to_address,
            Body::Failure(FailureBody { of: MessageId::generate(), reason: FailureReason::Unavailable, text: None }),
        ),
    ]
}

fn device(platform: Platform, token: &str, app: Option<&str>, os: Option<&str>) -> DeviceRegistration {
    DeviceRegistration {
        action: DeviceAction::Register,
        platform,
        token: token.to_owned(),
        app: app.map(str::to_owned),
        os: os.map(str::to_owned),
    }
}

/// The roster in a fixed order: which order the database returns it in is its collation's.
fn sorted(mut roster: Vec<RosterItem>) -> Vec<RosterItem> {
    roster.sort_by_key(|item| format!("{:?}", item.contact));
    roster
}

fn alias(peer: &Address, foreign_id: &str, user_name: &str) -> MessageAlias {
    MessageAlias { id: MessageId::generate(), peer: peer.clone(), foreign_id: foreign_id.to_owned(), user: user(user_name) }
}

/// Lets the clock move on, for what the store orders or expires by its millisecond timestamps.
async fn next_millisecond() {
    tokio::time::sleep(Duration::from_millis(5)).await;
}

async fn users_are_known_once(db: Db) {
    let store = db.open().await;
    assert_eq!(store.known_users().await.expect("users"), Vec::<UserId>::new());
    assert!(store.ensure_user(&user("alice")).await.expect("alice"), "alice is new");
    assert!(!store.ensure_user(&user("alice")).await.expect("alice again"), "alice is known");
    assert!(store.ensure_user(&user("bob.smith")).await.expect("bob"), "bob is new");
    assert!(!store.ensure_user(&user("Alice")).await.expect("alice folded"), "names are case-folded");
    let mut known = store.known_users().await.expect("users");
    known.sort();
    assert_eq!(known, [user("alice"), user("bob.smith")]);
}

async fn presence_is_kept_per_user(db: Db) {
    let store = db.open().await;
    let (alice, bob) = (user("alice"), user("bob"));
    store.ensure_user(&alice).await.expect("alice");
    store.ensure_user(&bob).await.expect("bob");
    assert_eq!(store.last_presence(&alice).await.expect("none yet"), None);
    assert_eq!(store.last_presence(&user("nobody")).await.expect("unknown user"), None);

    let away = PresenceBody { show: Show::Away, status: Some("at lunch — back at 2 ☕".into()) };
    store.save_presence(&alice, &away).await.expect("save");
    assert_eq!(store.last_presence(&alice).await.expect("read"), Some(away));
    assert_eq!(store.last_presence(&bob).await.expect("bob's"), None, "only alice's changed");

    // A later presence replaces it, and no status means none, not the old one.
    let dnd = PresenceBody { show: Show::Dnd, status: None };
    store.save_presence(&alice, &dnd).await.expect("save again");
    assert_eq!(store.last_presence(&alice).await.expect("read again"), Some(dnd));

    // Only users the store knows have a presence to restore.
    let chat = PresenceBody { show: Show::Chat, status: Some("hi".into()) };
    store.save_presence(&user("nobody"), &chat).await.expect("save for an unknown user");
    assert_eq!(store.last_presence(&user("nobody")).await.expect("unknown user"), None);
    assert_eq!(store.known_users().await.expect("users").len(), 2, "saving presence creates no user");
}

async fn queue_pages_in_order(db: Db) {
    let store = db.open().await;
    let alice = user("alice");
    let queue = QueueName::user(&alice);
    assert_eq!(store.queue_len(&queue).await.expect("len"), 0);
    assert!(store.queued(&queue, None, 10).await.expect("empty").is_empty());

    let envelopes = assorted(&alice);
    let mut seqs = Vec::new();
    for envelope in &envelopes {
        seqs.push(store.enqueue(&queue, envelope).await.expect("enqueue"));
    }
    assert!(seqs.windows(2).all(|pair| pair[0] < pair[1]), "seqs increase: {seqs:?}");
    assert_eq!(store.queue_len(&queue).await.expect("len"), 5);

    let all = store.queued(&queue, None, 100).await.expect("all");
    assert_eq!(all.iter().map(|q| q.seq).collect::<Vec<_>>(), seqs);
    assert_eq!(all.iter().map(|q| q.envelope.clone()).collect::<Vec<_>>(), envelopes, "envelopes read back whole");

    let first = store.queued(&queue, None, 2).await.expect("first page");
    assert_eq!(first.iter().map(|q| q.seq).collect::<Vec<_>>(), seqs[..2]);
    let second = store.queued(&queue, Some(first[1].seq), 2).await.expect("second page");
    assert_eq!(second.iter().map(|q| q.seq).collect::<Vec<_>>(), seqs[2..4]);
    let last = store.queued(&queue, Some(second[1].seq), 2).await.expect("last page");
    assert_eq!(last.iter().map(|q| q.seq).collect::<Vec<_>>(), seqs[4..]);
    assert!(store.queued(&queue, Some(seqs[4]), 2).await.expect("past the end").is_empty());
    assert!(store.queued(&queue, None, 0).await.expect("limit 0").is_empty());
    assert_eq!(store.queued(&queue, Some(QueueSeq(0)), 1).await.expect("after 0")[0].seq, seqs[0]);
}

async fn dequeue_removes_only_the_given_seqs(db: Db) {
    let store = db.open().await;
    let (alice, bob) = (user("alice"), user("bob"));
    let (queue, bobs) = (QueueName::user(&alice), QueueName::user(&bob));
    let mut seqs = Vec::new();
    for text in ["0", "1", "2", "3", "4"] {
        seqs.push(store.enqueue(&queue, &message(&alice, text)).await.expect("enqueue"));
    }
    let bob_seq = store.enqueue(&bobs, &message(&bob, "bob's")).await.expect("enqueue bob");

    store.dequeue(&queue, &[seqs[1], seqs[3]]).await.expect("dequeue");
    let left: Vec<_> = store.queued(&queue, None, 10).await.expect("queued").into_iter().map(|q| q.seq).collect();
    assert_eq!(left, [seqs[0], seqs[2], seqs[4]]);
    assert_eq!(store.queue_len(&queue).await.expect("len"), 3);

    // Nothing, already gone, and another queue's seq: no error, nothing removed.
    store.dequeue(&queue, &[]).await.expect("dequeue nothing");
    store.dequeue(&queue, &[seqs[1], bob_seq]).await.expect("dequeue gone and foreign");
    assert_eq!(store.queue_len(&queue).await.expect("len"), 3);
    assert_eq!(store.queue_len(&bobs).await.expect("bob's len"), 1, "a seq only removes from its own queue");

    store.dequeue(&queue, &left).await.expect("dequeue the rest");
    assert_eq!(store.queue_len(&queue).await.expect("len"), 0);
    assert!(store.queued(&queue, None, 10).await.expect("empty").is_empty());
}

async fn queues_are_separate(db: Db) {
    let store = db.open().await;
    let (alice, bob) = (user("alice"), user("bob"));
    let queues = [
        QueueName::user(&alice),
        QueueName::user(&bob),
        QueueName::route("xmpp"),
        // A route named like a user is still not her queue.
        QueueName::route("alice"),
    ];
    let mut expected = Vec::new();
    for (n, queue) in queues.iter().enumerate() {
        let mut envelopes = Vec::new();
        for i in 0..=n {
            let envelope = message(&alice, &format!("{queue} {i}"));
            store.enqueue(queue, &envelope).await.expect("enqueue");
            envelopes.push(envelope);
        }
        expected.push(envelopes);
    }
    for (queue, envelopes) in queues.iter().zip(&expected) {
        assert_eq!(store.queue_len(queue).await.expect("len"), envelopes.len() as u64, "{queue}");
        let queued: Vec<_> =
            store.queued(queue, None, 100).await.expect("queued").into_iter().map(|q| q.envelope).collect();
        assert_eq!(&queued, envelopes, "{queue}");
    }
    assert_eq!(store.queue_len(&QueueName::route("nowhere")).await.expect("len"), 0);
}

async fn expiry_drops_what_is_older_than_the_cutoff(db: Db) {
    let store = db.open().await;
    let alice = user("alice");
    let (queue, route) = (QueueName::user(&alice), QueueName::route("xmpp"));
    store.enqueue(&queue, &message(&alice, "old 1")).await.expect("enqueue");
    store.enqueue(&route, &message(&alice, "old 2")).await.expect("enqueue");
    next_millisecond().await;
    let cutoff = Timestamp::now();
    next_millisecond().await;
    let young = message(&alice, "young");
    let young_seq = store.enqueue(&queue, &young).await.expect("enqueue");

    assert_eq!(store.expire_queued(Timestamp(0)).await.expect("expire nothing"), 0);
    assert_eq!(store.expire_queued(cutoff).await.expect("expire"), 2, "the old ones, in every queue");
    let left = store.queued(&queue, None, 10).await.expect("queued");
    assert_eq!(left.len(), 1);
    assert_eq!((left[0].seq, &left[0].envelope), (young_seq, &young));
    assert_eq!(store.queue_len(&route).await.expect("route len"), 0);
    assert_eq!(store.expire_queued(cutoff).await.expect("expire again"), 0);
}

async fn devices_register_move_and_unregister(db: Db) {
    let store = db.open().await;
    let (alice, bob) = (user("alice"), user("bob"));
    assert!(store.devices(&alice).await.expect("none").is_empty());

    let phone = device(Platform::Fcm, "fcm-token-1", Some("com.example.chat"), Some("android 15"));
    let tablet = device(Platform::Apns, "apns-token-1", None, None);
    // The same token on another platform is another device.
    let other = device(Platform::Baidu, "fcm-token-1", Some("cn.example.chat"), None);
    for registration in [&phone, &tablet, &other] {
        store.register_device(&alice, registration).await.expect("register");
        next_millisecond().await;
    }
    assert_eq!(store.devices(&alice).await.expect("alice's"), [phone.clone(), tablet.clone(), other.clone()], "oldest first");

    // Registering again updates it in place.
    let updated = device(Platform::Apns, "apns-token-1", Some("com.example.chat"), Some("ios 19"));
    store.register_device(&alice, &updated).await.expect("register again");
    assert_eq!(store.devices(&alice).await.expect("alice's"), [phone.clone(), updated.clone(), other.clone()]);

    // The phone changes hands: the token now belongs to bob alone.
    let bobs_phone = device(Platform::Fcm, "fcm-token-1", Some("com.example.chat"), Some("android 16"));
    store.register_device(&bob, &bobs_phone).await.expect("bob registers it");
    assert_eq!(store.devices(&bob).await.expect("bob's"), std::slice::from_ref(&bobs_phone));
    assert_eq!(store.devices(&alice).await.expect("alice's"), [updated.clone(), other.clone()]);

    // Only its owner unregisters a device; the request's app and os do not matter.
    assert!(!store.unregister_device(&alice, &phone).await.expect("not hers any more"));
    assert_eq!(store.devices(&bob).await.expect("bob's"), std::slice::from_ref(&bobs_phone));
    let mut request = device(Platform::Fcm, "fcm-token-1", None, None);
    request.action = DeviceAction::Unregister;
    assert!(store.unregister_device(&bob, &request).await.expect("bob unregisters"));
    assert!(!store.unregister_device(&bob, &request).await.expect("already gone"));
    assert!(store.devices(&bob).await.expect("bob's").is_empty());
    assert!(!store.unregister_device(&alice, &device(Platform::Fcm, "never", None, None)).await.expect("unknown"));
    assert_eq!(store.devices(&alice).await.expect("alice's"), [updated, other]);
}

async fn roster_items_are_saved_and_deleted_when_empty(db: Db) {
    let store = db.open().await;
    let (alice, bob) = (user("alice"), user("bob"));
    let bob_address = Address::user(bob.clone());
    let carol = remote("carol", "xmpp.example.org");
    let dave = Address::Remote(RemoteAddress { local: None, domain: "transport.example.net".into(), resource: None });

    assert_eq!(store.roster_item(&alice, &bob_address).await.expect("none"), RosterItem::new(bob_address.clone()));
    assert!(store.roster(&alice).await.expect("empty").is_empty());

    let asked = RosterItem { ask: true, ..RosterItem::new(bob_address.clone()) };
    store.save_roster_item(&alice, &asked).await.expect("save");
    assert_eq!(store.roster_item(&alice, &bob_address).await.expect("read"), asked);
    let mutual = RosterItem { contact: bob_address.clone(), to: true, from: true, ask: false };
    store.save_roster_item(&alice, &mutual).await.expect("update");
    assert_eq!(store.roster_item(&alice, &bob_address).await.expect("read"), mutual);

    let carol_item = RosterItem { from: true, ..RosterItem::new(carol.clone()) };
    let dave_item = RosterItem { to: true, ..RosterItem::new(dave.clone()) };
    store.save_roster_item(&alice, &carol_item).await.expect("save carol");
    store.save_roster_item(&alice, &dave_item).await.expect("save dave");
    let bobs_item = RosterItem { to: true, ..RosterItem::new(Address::user(alice.clone())) };
    store.save_roster_item(&bob, &bobs_item).await.expect("bob's own");
    assert_eq!(
        sorted(store.roster(&alice).await.expect("alice's")),
        sorted(vec![mutual.clone(), carol_item.clone(), dave_item.clone()])
    );
    assert_eq!(store.roster(&bob).await.expect("bob's"), [bobs_item]);
    assert_eq!(store.roster_item(&bob, &carol).await.expect("not bob's"), RosterItem::new(carol.clone()));

    // A remote contact is kept by its bare address: a full one is another contact.
    let carol_phone = Address::Remote(RemoteAddress {
        local: Some("carol".into()),
        domain: "xmpp.example.org".into(),
        resource: Some("phone".into()),
    });
    assert_eq!(store.roster_item(&alice, &carol_phone).await.expect("full"), RosterItem::new(carol_phone));

    // An item with nothing left is deleted.
    store.save_roster_item(&alice, &RosterItem::new(bob_address.clone())).await.expect("empty bob");
    assert_eq!(store.roster_item(&alice, &bob_address).await.expect("gone"), RosterItem::new(bob_address));
    assert_eq!(sorted(store.roster(&alice).await.expect("alice's")), sorted(vec![carol_item, dave_item]));
    store.save_roster_item(&alice, &RosterItem::new(remote("eve", "never.example"))).await.expect("empty, never saved");
    assert_eq!(store.roster(&alice).await.expect("alice's").len(), 2);
}

async fn aliases_resolve_only_for_their_peer(db: Db) {
    let store = db.open().await;
    let carol = remote("carol", "xmpp.example.org");
    let dave = remote("dave", "jabber.example.net");
    let to_carol = alias(&carol, "stanza-1", "alice");
    let to_dave = alias(&dave, "stanza-1", "bob");
    store.save_aliases(&[to_carol.clone(), to_dave.clone()]).await.expect("save");
    store.save_aliases(&[]).await.expect("save none");

    assert_eq!(store.alias_of(&to_carol.id).await.expect("of"), Some(to_carol.clone()));
    assert_eq!(store.alias_of(&to_dave.id).await.expect("of"), Some(to_dave.clone()));
    assert_eq!(store.alias_of(&MessageId::generate()).await.expect("unknown"), None);

    // The same foreign id from two peers names two messages; a third peer names none.
    assert_eq!(store.resolve_alias(&carol, "stanza-1").await.expect("resolve"), Some(to_carol.clone()));
    assert_eq!(store.resolve_alias(&dave, "stanza-1").await.expect("resolve"), Some(to_dave.clone()));
    let eve = remote("eve", "xmpp.example.org");
    assert_eq!(store.resolve_alias(&eve, "stanza-1").await.expect("not party"), None);
    assert_eq!(store.resolve_alias(&Address::user(user("alice")), "stanza-1").await.expect("user"), None);
    assert_eq!(store.resolve_alias(&carol, "stanza-2").await.expect("unknown id"), None);
    assert_eq!(store.resolve_alias(&carol, &to_carol.id.to_string()).await.expect("gateway id"), None);

    // An id keeps its first alias.
    let rewrite = MessageAlias { foreign_id: "stanza-9".into(), ..to_carol.clone() };
    store.save_aliases(&[rewrite]).await.expect("save again");
    assert_eq!(store.alias_of(&to_carol.id).await.expect("of"), Some(to_carol.clone()));
    assert_eq!(store.resolve_alias(&carol, "stanza-9").await.expect("not saved"), None);

    // A peer reusing a foreign id means its latest message.
    next_millisecond().await;
    let reused = alias(&carol, "stanza-1", "alice");
    store.save_aliases(std::slice::from_ref(&reused)).await.expect("save reused");
    assert_eq!(store.resolve_alias(&carol, "stanza-1").await.expect("resolve"), Some(reused));
    assert_eq!(store.alias_of(&to_carol.id).await.expect("older still known"), Some(to_carol));
}

/// A message the gateway sends is known to its peer by the gateway's own id.
async fn an_alias_by_our_own_id_resolves_for_its_peer_only(db: Db) {
    let store = db.open().await;
    let carol = remote("carol", "xmpp.example.org");
    let eve = remote("eve", "xmpp.example.org");
    let mut sent = alias(&carol, "", "alice");
    sent.foreign_id = sent.id.to_string();
    store.save_aliases(std::slice::from_ref(&sent)).await.expect("save");
    let stored: String = sqlx::query_scalar("SELECT foreign_id FROM message_aliases WHERE id = $1")
        .bind(sent.id.as_str())
        .fetch_one(store.pool())
        .await
        .expect("the row");
    assert_eq!(stored, "", "our own id is not written twice, nor indexed");
    assert_eq!(store.alias_of(&sent.id).await.expect("of"), Some(sent.clone()));
    assert_eq!(store.resolve_alias(&carol, &sent.foreign_id).await.expect("resolve"), Some(sent.clone()));
    assert_eq!(store.resolve_alias(&eve, &sent.foreign_id).await.expect("not party"), None);
    assert_eq!(store.resolve_alias(&carol, "").await.expect("empty"), None);

    // An empty foreign id names nothing: such an alias is not kept.
    let unnamed = alias(&carol, "", "alice");
    store.save_aliases(std::slice::from_ref(&unnamed)).await.expect("save");
    assert_eq!(store.alias_of(&unnamed.id).await.expect("of"), None);

    // A row written before migration 5 kept our id in full, and is still found.
    let older = alias(&remote("dave", "jabber.example.net"), "", "bob");
    sqlx::query("INSERT INTO message_aliases (id, peer, foreign_id, user_name, created_ms) VALUES ($1, $2, $1, $3, 1)")
        .bind(older.id.as_str())
        .bind(serde_json::to_string(&older.peer).expect("peer"))
        .bind(older.user.as_str())
        .execute(store.pool())
        .await
        .expect("an older row");
    let older = MessageAlias { foreign_id: older.id.to_string(), ..older };
    assert_eq!(store.resolve_alias(&older.peer, &older.foreign_id).await.expect("resolve"), Some(older.clone()));
    assert_eq!(store.alias_of(&older.id).await.expect("of"), Some(older));

    // Carol naming one of her own messages with our id: the newer of the two is meant, either way.
    next_millisecond().await;
    let named = alias(&carol, &sent.foreign_id, "alice");
    store.save_aliases(std::slice::from_ref(&named)).await.expect("save");
    assert_eq!(store.resolve_alias(&carol, &sent.foreign_id).await.expect("newest"), Some(named.clone()));
    let mut ours = alias(&carol, "", "alice");
    ours.foreign_id = ours.id.to_string();
    let theirs = alias(&carol, &ours.foreign_id, "alice");
    store.save_aliases(std::slice::from_ref(&theirs)).await.expect("save");
    next_millisecond().await;
    store.save_aliases(std::slice::from_ref(&ours)).await.expect("save");
    assert_eq!(store.resolve_alias(&carol, &ours.foreign_id).await.expect("newest"), Some(ours));
}

/// The write-behind hands the store a thousand aliases at a time, written many rows per
/// statement: every row must come back with its own peer, foreign id and user.
async fn a_batch_of_aliases_spanning_several_statements_keeps_each_row_whole(db: Db) {
    let store = db.open().await;
    // Runs of rows share a peer, as a conversation's messages do, and a run may cross statements.
    let aliases: Vec<MessageAlias> = (0..300)
        .map(|n| alias(&remote(&format!("peer{}", n / 5), "xmpp.example.org"), &format!("stanza-{n}"), &format!("user{n}")))
        .collect();
    store.save_aliases(&aliases).await.expect("save");
    for alias in &aliases {
        assert_eq!(store.alias_of(&alias.id).await.expect("of").as_ref(), Some(alias));
        assert_eq!(store.resolve_alias(&alias.peer, &alias.foreign_id).await.expect("resolve").as_ref(), Some(alias));
    }
}

async fn ping_answers(db: Db) {
    let store = db.open().await;
    store.ping().await.expect("ping");
    store.ping().await.expect("ping again");
}

async fn reopening_keeps_everything(db: Db) {
    let (alice, bob) = (user("alice"), user("bob"));
    let queue = QueueName::user(&alice);
    let carol = remote("carol", "xmpp.example.org");
    let presence = PresenceBody { show: Show::Xa, status: Some("away for a while".into()) };
    let phone = device(Platform::Fcm, "token", Some("app"), None);
    let item = RosterItem { contact: carol.clone(), to: true, from: false, ask: false };
    let known = alias(&carol, "stanza-1", "alice");
    let envelopes = assorted(&alice);
    let mut seqs = Vec::new();
    {
        let store = db.open().await;
        store.ensure_user(&alice).await.expect("alice");
        store.save_presence(&alice, &presence).await.expect("presence");
        for envelope in &envelopes {
            seqs.push(store.enqueue(&queue, envelope).await.expect("enqueue"));
        }
        store.register_device(&alice, &phone).await.expect("device");
        store.save_roster_item(&alice, &item).await.expect("roster");
        store.save_aliases(std::slice::from_ref(&known)).await.expect("alias");
        store.pool().close().await;
    }

    // Opened again, twice: the migrations find their work done.
    for _ in 0..2 {
        let store = db.open().await;
        assert_eq!(store.known_users().await.expect("users"), std::slice::from_ref(&alice));
        assert!(!store.ensure_user(&alice).await.expect("alice"), "still known");
        assert_eq!(store.last_presence(&alice).await.expect("presence"), Some(presence.clone()));
        let queued = store.queued(&queue, None, 100).await.expect("queued");
        assert_eq!(queued.iter().map(|q| q.seq).collect::<Vec<_>>(), seqs);
        assert_eq!(queued.into_iter().map(|q| q.envelope).collect::<Vec<_>>(), envelopes);
        assert_eq!(store.devices(&alice).await.expect("devices"), std::slice::from_ref(&phone));
        assert_eq!(store.roster(&alice).await.expect("roster"), std::slice::from_ref(&item));
        assert_eq!(store.resolve_alias(&carol, "stanza-1").await.expect("alias"), Some(known.clone()));
        store.ping().await.expect("ping");
        store.pool().close().await;
    }

    // Seqs never go back, even once the queue is empty and the store restarted: a replay cursor
    // from before must not skip what comes after.
    let store = db.open().await;
    store.dequeue(&queue, &seqs).await.expect("dequeue all");
    store.pool().close().await;
    let store = db.open().await;
    let next = store.enqueue(&QueueName::user(&bob), &message(&bob, "after")).await.expect("enqueue");
    assert!(next > seqs[seqs.len() - 1], "{next:?} after {seqs:?}");
    assert!(store.queued(&queue, None, 10).await.expect("alice's").is_empty());
}

/// Two gateway nodes on one PostgreSQL database, started at the same moment: both migrate
/// without tripping over each other, and each sees what the other writes.
#[tokio::test]
async fn postgres_nodes_share_one_database() {
    let url = crate::postgres::database_url().await;
    let (one, two) = tokio::join!(SqlStore::connect(&url), SqlStore::connect(&url));
    let (one, two) = (one.expect("node one"), two.expect("node two"));
    let (alice, bob) = (user("alice"), user("bob"));
    let queue = QueueName::user(&alice);

    assert!(one.ensure_user(&alice).await.expect("alice on one"));
    assert!(!two.ensure_user(&alice).await.expect("alice on two"), "node two knows her from node one");
    assert!(two.ensure_user(&bob).await.expect("bob on two"));
    let mut known = one.known_users().await.expect("users");
    known.sort();
    assert_eq!(known, [alice.clone(), bob.clone()]);

    let presence = PresenceBody { show: Show::Away, status: None };
    two.save_presence(&alice, &presence).await.expect("presence on two");
    assert_eq!(one.last_presence(&alice).await.expect("presence on one"), Some(presence));

    // Both append to her queue at once; one order, one set of seqs.
    let (mut from_one, mut from_two) = (Vec::new(), Vec::new());
    for i in 0..10 {
        let (a, b) = (message(&alice, &format!("one {i}")), message(&alice, &format!("two {i}")));
        let (sa, sb) = tokio::join!(one.enqueue(&queue, &a), two.enqueue(&queue, &b));
        from_one.push((sa.expect("enqueue on one"), a));
        from_two.push((sb.expect("enqueue on two"), b));
    }
    let mut all: Vec<_> = from_one.into_iter().chain(from_two).collect();
    all.sort_by_key(|(seq, _)| *seq);
    for node in [&one, &two] {
        let queued: Vec<_> =
            node.queued(&queue, None, 100).await.expect("queued").into_iter().map(|q| (q.seq, q.envelope)).collect();
        assert_eq!(queued, all);
    }
    let seqs: Vec<_> = all.iter().map(|(seq, _)| *seq).collect();
    two.dequeue(&queue, &seqs[..15]).await.expect("dequeue on two");
    assert_eq!(one.queue_len(&queue).await.expect("len on one"), 5);

    let phone = device(Platform::Apns, "token", None, None);
    one.register_device(&alice, &phone).await.expect("device on one");
    two.register_device(&bob, &phone).await.expect("bob takes it on two");
    assert!(one.devices(&alice).await.expect("alice's on one").is_empty());
    assert_eq!(one.devices(&bob).await.expect("bob's on one"), std::slice::from_ref(&phone));
    assert!(one.unregister_device(&bob, &phone).await.expect("unregister on one"));
    assert!(two.devices(&bob).await.expect("bob's on two").is_empty());

    let carol = remote("carol", "xmpp.example.org");
    let item = RosterItem { from: true, ..RosterItem::new(carol.clone()) };
    one.save_roster_item(&alice, &item).await.expect("roster on one");
    assert_eq!(two.roster(&alice).await.expect("roster on two"), [item]);

    let known = alias(&carol, "stanza-1", "alice");
    two.save_aliases(std::slice::from_ref(&known)).await.expect("alias on two");
    assert_eq!(one.resolve_alias(&carol, "stanza-1").await.expect("alias on one"), Some(known.clone()));
    assert_eq!(one.alias_of(&known.id).await.expect("alias of on one"), Some(known));
}

/// Several nodes starting together against a new database: each applies no migration twice and
/// none fails.
#[tokio::test]
async fn postgres_nodes_starting_together_migrate_once() {
    for _ in 0..5 {
        let url = crate::postgres::database_url().await;
        let nodes = futures::future::join_all((0..4).map(|_| SqlStore::connect(&url))).await;
        let nodes: Vec<_> = nodes.into_iter().map(|node| node.expect("a node starts")).collect();
        for node in &nodes {
            node.ping().await.expect("ping");
        }
        let applied: Vec<i64> = sqlx::query_scalar("SELECT version FROM schema_migrations ORDER BY version")
            .fetch_all(nodes[0].pool())
            .await
            .expect("schema_migrations");
        assert!(!applied.is_empty());
        assert_eq!(applied, (1..=applied.len() as i64).collect::<Vec<_>>(), "each once, in order");
    }
}

async fn wakes_are_recorded_with_their_envelope_and_cleared_on_return(db: Db) {
    let store = db.open().await;
    let bob = user("bob");
    let queue = QueueName::user(&bob);
    assert_eq!(store.wake_summary(&bob).await.expect("summary"), None);

    let first = message(&bob, "first");
    let wake = Wake::for_envelope(&bob, &first).expect("a message wakes");
    let (queued, woken) = store.enqueue_waking(&queue, &first, &wake).await.expect("enqueue");
    assert_eq!(store.queued(&queue, None, 10).await.expect("queued")[0].seq, queued);

    let request = Envelope::new(remote("carol", "xmpp.example.org"), Address::user(bob.clone()), Body::Subscription { action: SubscriptionAction::Subscribe });
    let newest = Wake::for_envelope(&bob, &request).expect("a request wakes");
    let (_, newer) = store.enqueue_waking(&queue, &request, &newest).await.expect("enqueue");
    assert!(newer > woken);
    let summary = store.wake_summary(&bob).await.expect("summary").expect("waiting");
    assert_eq!((summary.count, summary.newest_seq), (2, newer));
    assert_eq!(summary.newest, newest, "sender, kind and id come back as recorded");
    assert_eq!(summary.newest.kind, WakeKind::Subscribe);
    assert_eq!(store.users_with_wakes().await.expect("users"), std::slice::from_ref(&bob));

    // A message with NUL is stored and wakes on both backends (PostgreSQL refuses NUL in text).
    let nul = message(&bob, "a\0b");
    let nul_wake = Wake::for_envelope(&bob, &nul).expect("wakes");
    assert_eq!(nul_wake.text.as_deref(), Some("ab"));
    store.enqueue_waking(&queue, &nul, &nul_wake).await.expect("NUL in a message is fine");
    store.record_wake(&wake).await.expect("record");
    assert_eq!(store.wake_summary(&bob).await.expect("summary").expect("waiting").count, 4);

    assert_eq!(store.clear_wakes(&bob).await.expect("clear"), 4);
    assert_eq!(store.wake_summary(&bob).await.expect("summary"), None);
    assert_eq!(store.queue_len(&queue).await.expect("len"), 3, "clearing wakes keeps the messages");
    assert!(store.users_with_wakes().await.expect("users").is_empty());
}

async fn devices_remember_what_they_were_told(db: Db) {
    let store = db.open().await;
    let (alice, bob) = (user("alice"), user("bob"));
    let phone = device(Platform::Apns, "abcdef", None, None);
    store.register_device(&bob, &phone).await.expect("register");
    let targets = store.wake_targets(&bob).await.expect("targets");
    assert_eq!((targets[0].covered, targets[0].notified_at), (WakeSeq(0), None));

    let told = |user: &UserId, covered: i64, at: i64| Notified {
        user: user.clone(),
        platform: Platform::Apns,
        token: "abcdef".into(),
        covered: WakeSeq(covered),
        at: Timestamp(at),
    };
    store.mark_notified(&[told(&bob, 7, 1_000)]).await.expect("mark");
    let targets = store.wake_targets(&bob).await.expect("targets");
    assert_eq!((targets[0].covered, targets[0].notified_at), (WakeSeq(7), Some(Timestamp(1_000))));
    store.register_device(&bob, &phone).await.expect("register again");
    assert_eq!(store.wake_targets(&bob).await.expect("targets")[0].covered, WakeSeq(7), "re-registering keeps it");

    // The phone changes hands: the new owner starts afresh, and a late mark for bob is ignored.
    store.register_device(&alice, &phone).await.expect("moves");
    store.mark_notified(&[told(&bob, 9, 2_000)]).await.expect("mark");
    let targets = store.wake_targets(&alice).await.expect("targets");
    assert_eq!((targets[0].covered, targets[0].notified_at), (WakeSeq(0), None));
    assert!(store.wake_targets(&bob).await.expect("targets").is_empty());

    assert!(store.remove_device(Platform::Apns, "abcdef").await.expect("remove"));
    assert!(!store.remove_device(Platform::Apns, "abcdef").await.expect("remove again"));
    assert!(store.wake_targets(&alice).await.expect("targets").is_empty());

    // Many devices in one write, one of them twice (a batch kept after a failed write): the
    // newest mark counts.
    for token in ["fa", "fb"] {
        store.register_device(&bob, &device(Platform::Fcm, token, None, None)).await.expect("register");
    }
    let mark = |token: &str, covered: i64, at: i64| Notified {
        user: bob.clone(),
        platform: Platform::Fcm,
        token: token.into(),
        covered: WakeSeq(covered),
        at: Timestamp(at),
    };
    store.mark_notified(&[mark("fa", 3, 10), mark("fb", 4, 11), mark("fa", 5, 12)]).await.expect("mark");
    let mut told: Vec<(String, WakeSeq, Option<Timestamp>)> =
        store.wake_targets(&bob).await.expect("targets").into_iter().map(|t| (t.device.token, t.covered, t.notified_at)).collect();
    told.sort();
    assert_eq!(told, vec![("fa".into(), WakeSeq(5), Some(Timestamp(12))), ("fb".into(), WakeSeq(4), Some(Timestamp(11)))]);
}

async fn one_lookup_reads_the_outboxes_and_devices_of_many_users(db: Db) {
    let store = db.open().await;
    // More users than one query takes, so the lookup is split and put together again.
    let users: Vec<UserId> = (0..300).map(|n| user(&format!("w{n}"))).collect();
    for (n, who) in users.iter().enumerate() {
        let queue = QueueName::user(who);
        // Every third user has a device but nothing waiting; of the others, some have nothing at
        // all and the rest 1, 2 or 3 wakes and as many devices.
        let waiting = n % 4;
        if n % 3 == 0 {
            store.register_device(who, &device(Platform::Fcm, &format!("idle-{n}"), None, None)).await.expect("register");
            continue;
        }
        for k in 0..waiting {
            store.register_device(who, &device(Platform::Fcm, &format!("t{n}-{k}"), None, None)).await.expect("register");
            let envelope = message(who, &format!("{n}-{k}"));
            let wake = Wake::for_envelope(who, &envelope).expect("a message wakes");
            store.enqueue_waking(&queue, &envelope, &wake).await.expect("enqueue");
        }
    }
    let mut asked = users.clone();
    asked.push(user("nobody"));
    let found = store.wake_lookups(&asked).await.expect("lookups");

    let mut expected = 0;
    for who in &users {
        let Some(summary) = store.wake_summary(who).await.expect("summary") else { continue };
        expected += 1;
        let lookup = found.iter().find(|l| &l.summary.newest.user == who).expect("every user with wakes is found");
        assert_eq!(lookup.summary, summary, "{who}: the same summary as read alone");
        assert_eq!(lookup.targets, store.wake_targets(who).await.expect("targets"), "{who}: her devices, oldest first");
    }
    assert!(expected >= 100, "the test covers many users: {expected}");
    assert_eq!(found.len(), expected, "users with nothing waiting are left out");
    assert!(store.wake_lookups(&[]).await.expect("empty").is_empty());
}

async fn a_bounded_append_counts_the_queue_in_its_own_transaction(db: Db) {
    let store = std::sync::Arc::new(db.open().await);
    let bob = user("bob");
    let queue = QueueName::user(&bob);
    store.enqueue(&queue, &message(&bob, "already there")).await.expect("enqueue");
    let first = message(&bob, "first");
    let appended = store.append_bounded(&queue, &first, None, 3).await.expect("append");
    assert_eq!(appended, BoundedAppend::Stored { queue_len: 2 });

    // Many at once, so they share group commits: the bound holds across a batch, and only what
    // was stored woke her.
    let racers = (0..10).map(|n| {
        let (store, bob, queue) = (store.clone(), bob.clone(), queue.clone());
        tokio::spawn(async move {
            let envelope = message(&bob, &format!("racer {n}"));
            let wake = Wake::for_envelope(&bob, &envelope).expect("a message wakes");
            store.append_bounded(&queue, &envelope, Some(&wake), 5).await.expect("append")
        })
    });
    let outcomes: Vec<BoundedAppend> = futures::future::join_all(racers).await.into_iter().map(|r| r.expect("joined")).collect();
    let mut stored_lengths: Vec<u64> = outcomes
        .iter()
        .filter_map(|outcome| match outcome {
            BoundedAppend::Stored { queue_len } => Some(*queue_len),
            BoundedAppend::Full { .. } => None,
        })
        .collect();
    stored_lengths.sort_unstable();
    assert_eq!(stored_lengths, vec![3, 4, 5], "each stored append learns its own length: {outcomes:?}");
    assert!(outcomes.iter().all(|o| matches!(o, BoundedAppend::Stored { .. } | BoundedAppend::Full { queue_len: 5 })), "{outcomes:?}");
    assert_eq!(store.queue_len(&queue).await.expect("len"), 5);
    assert_eq!(store.wake_summary(&bob).await.expect("summary").expect("woken").count, 3, "refused appends record no wake");

    // Other writers at the same time (a dispatcher recording what it sent, mailboxes deleting
    // what was delivered) must not make a bounded append fail: it counts, then writes, in one
    // transaction that has to hold the write lock from its start.
    let carol = user("carol");
    store.ensure_user(&carol).await.expect("user");
    let writer = {
        let store = store.clone();
        let carol = carol.clone();
        tokio::spawn(async move {
            for n in 0..300 {
                let presence = PresenceBody { show: Show::Away, status: Some(format!("{n}")) };
                store.save_presence(&carol, &presence).await.expect("another writer's write");
            }
        })
    };
    let appenders = (0..300).map(|n| {
        let store = store.clone();
        tokio::spawn(async move {
            let who = user(&format!("busy{n}"));
            let envelope = message(&who, "hi");
            store.append_bounded(&QueueName::user(&who), &envelope, None, 10).await
        })
    });
    for appended in futures::future::join_all(appenders).await {
        assert_eq!(appended.expect("joined").expect("stored beside another writer"), BoundedAppend::Stored { queue_len: 1 });
    }
    writer.await.expect("the other writer finished");
}

async fn a_user_keeps_at_most_twenty_devices(db: Db) {
    let store = db.open().await;
    let bob = user("bob");
    for n in 0..23 {
        store.register_device(&bob, &device(Platform::Fcm, &format!("t{n}"), None, None)).await.expect("register");
        next_millisecond().await;
    }
    let tokens: Vec<String> = store.devices(&bob).await.expect("devices").into_iter().map(|d| d.token).collect();
    assert_eq!(tokens.len(), 20);
    assert_eq!(tokens.first().map(String::as_str), Some("t3"), "the oldest went first");
}

async fn concurrent_appends_are_committed_together_and_each_in_order(db: Db) {
    let store = std::sync::Arc::new(db.open().await);
    let users: Vec<UserId> = (0..40).map(|n| user(&format!("u{n}"))).collect();
    // Each user's mailbox appends one after another; the users append at the same time.
    let writers = users.iter().cloned().map(|to| {
        let store = store.clone();
        tokio::spawn(async move {
            let mut seqs = Vec::new();
            for i in 0..10 {
                let envelope = message(&to, &format!("{to}-{i}"));
                let seq = if i % 2 == 0 {
                    store.enqueue(&QueueName::user(&to), &envelope).await.expect("enqueue")
                } else {
                    let wake = Wake::for_envelope(&to, &envelope).expect("wakes");
                    store.enqueue_waking(&QueueName::user(&to), &envelope, &wake).await.expect("enqueue").0
                };
                seqs.push(seq);
            }
            seqs
        })
    });
    let results = futures::future::join_all(writers).await;
    for (to, seqs) in users.iter().zip(results) {
        let seqs = seqs.expect("writer");
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "appends keep their order");
        let queued = store.queued(&QueueName::user(to), None, 100).await.expect("queued");
        let texts: Vec<String> = queued
            .iter()
            .map(|q| match &q.envelope.body {
                Body::Message(m) => m.body.clone(),
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert_eq!(texts, (0..10).map(|i| format!("{to}-{i}")).collect::<Vec<_>>());
        assert_eq!(store.wake_summary(to).await.expect("summary").expect("woken").count, 5);
    }
}
