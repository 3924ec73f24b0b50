//! Recognises a message its sender sends again because no answer reached her (her connection
//! dropped before the `ack`, the XMPP server restarted, her MQTT client resent an unacknowledged
//! PUBLISH). The resend is answered with the first copy's outcome and gateway id, and is not
//! routed again, so the recipient sees it once.
//!
//! Kept in memory, bounded: a resend is recognised within [`WINDOW`] and among roughly the
//! gateway's last [`CAPACITY`] messages (the record is split by sender and client id into
//! [`SHARDS`] parts, each of which forgets its own oldest first). A restart of the gateway forgets
//! it (docs/reliability.md says what that means). Only what the sender names the same way is a resend: the same sender, the same
//! client id and the same recipient and content. The same id with other content is a new message
//! (clients that number their messages from 1 again after a reinstall lose nothing).

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, Hash, RandomState};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::reply::{Reply, SharedOutcome, reply};
use crate::address::Address;
use crate::envelope::{Body, Envelope};
use crate::id::MessageId;
use crate::outcome::Outcome;
use crate::prehashed::BuildPrehashed;

/// How long a message's outcome is remembered for a resend.
pub const WINDOW: Duration = Duration::from_secs(600);
/// At most this many messages are remembered; beyond it each shard forgets its oldest first.
pub const CAPACITY: usize = 65_536;
/// Parts of the record, each behind a lock of its own: every sender's connection admits its
/// messages here, from whichever thread it runs on, and behind one lock they waited for each other.
const SHARDS: usize = 16;
const SHARD_CAPACITY: usize = CAPACITY / SHARDS;

/// What [`RecentMessages::admit`] decided.
pub(crate) enum Admission {
    /// Not seen before: route it; its outcome is also remembered for resends.
    New { outcome: SharedOutcome, reply: Reply },
    /// A resend: answer it with the first copy's id and outcome.
    Resend { msg: MessageId, outcome: SharedOutcome },
}

struct Entry {
    key: u64,
    content: u64,
    msg: MessageId,
    outcome: SharedOutcome,
    at: Instant,
}

/// A shard's index holds at most this many keys: then those of forgotten entries are swept out.
/// It is what a table sized for [`SHARD_CAPACITY`] live keys holds; a sweep leaves tombstones that
/// the table does not count as room, so it may double once (to about 256 KiB) and then stays.
const INDEX_SWEEP: usize = SHARD_CAPACITY * 2 / 8 * 7;

#[derive(Default)]
struct Recent {
    /// What is remembered, oldest first; `first` numbers the front entry, the others follow.
    entries: VecDeque<Entry>,
    first: u64,
    /// The number of the latest entry under each key. Forgetting an entry leaves its key here:
    /// removing it at once would mean one more lookup, usually a cache miss, on every message. A number below `first` is stale; stale keys are swept out together, in one
    /// pass over the table, when it reaches [`INDEX_SWEEP`].
    index: HashMap<u64, u64, BuildPrehashed>,
}

/// The messages routed lately, by sender and client id. Shared by every adapter's sessions.
#[derive(Default)]
pub(crate) struct RecentMessages {
    hasher: RandomState,
    shards: [Shard; SHARDS],
}

/// Aligned so that no two shards' locks share a cache line.
#[derive(Default)]
#[repr(align(128))]
struct Shard(Mutex<Recent>);

impl RecentMessages {
    /// Decides whether `envelope`, which its sender calls `client_id`, repeats a message she sent
    /// lately. Bodies other than messages are never treated as resends (a repeated presence or
    /// receipt does no harm).
    pub(crate) fn admit(&self, client_id: &str, envelope: &Envelope) -> Admission {
        let Body::Message(message) = &envelope.body else {
            return fresh().0;
        };
        let key = match &envelope.from {
            // A resend may come from another connection, or for an XMPP sender another resource.
            Address::Remote(remote) => self.hash_one((Address::Remote(remote.bare()), client_id)),
            local => self.hash_one((local, client_id)),
        };
        let content = self.hash_one((&envelope.to, &message.body, &message.thread, &message.subject));
        let now = Instant::now();
        // A poisoned lock only means another thread panicked mid-update; the map is still usable.
        let mut recent = self.shard(key).lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        recent.forget_old(now);
        if let Some(entry) = recent.get(key)
            && entry.content == content
            && entry.outcome.peek().as_ref().is_none_or(Outcome::is_accepted)
        {
            return Admission::Resend { msg: entry.msg.clone(), outcome: entry.outcome.clone() };
        }
        let (admission, outcome) = fresh();
        recent.remember(Entry { key, content, msg: envelope.id.clone(), outcome, at: now });
        admission
    }

    fn hash_one(&self, value: impl Hash) -> u64 {
        self.hasher.hash_one(value)
    }

    /// Chosen by bits of the key its shard's index does not look at (it places a key by the low
    /// bits and tags it with the top seven), so that the keys of one shard still differ there.
    fn shard(&self, key: u64) -> &Mutex<Recent> {
        &self.shards[(key >> 32) as usize % SHARDS].0
    }
}

impl Recent {
    fn get(&self, key: u64) -> Option<&Entry> {
        let number = *self.index.get(&key)?;
        let position = usize::try_from(number.checked_sub(self.first)?).ok()?;
        // The numbering makes this the key's entry; checked all the same, since the content hash
        // alone does not name the sender, and another sender's entry must never answer.
        self.entries.get(position).filter(|entry| entry.key == key)
    }

    fn remember(&mut self, entry: Entry) {
        if self.index.len() >= INDEX_SWEEP {
            let first = self.first;
            self.index.retain(|_, number| *number >= first);
        }
        self.index.insert(entry.key, self.first + self.entries.len() as u64);
        self.entries.push_back(entry);
    }

    fn forget_old(&mut self, now: Instant) {
        while let Some(oldest) = self.entries.front() {
            let expired = now.duration_since(oldest.at) > WINDOW;
            if !expired && self.entries.len() < SHARD_CAPACITY {
                break;
            }
            self.entries.pop_front();
            self.first += 1;
        }
    }
}

fn fresh() -> (Admission, SharedOutcome) {
    let (reply, outcome) = reply();
    (Admission::New { outcome: outcome.clone(), reply }, outcome)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::address::UserId;
    use crate::envelope::{MessageBody, MessageKind};

    fn message(from: &str, to: &str, text: &str) -> Envelope {
        let user = |name: &str| Address::user(UserId::parse(name).expect("valid user"));
        let body = MessageBody { body: text.into(), thread: None, subject: None, kind: MessageKind::Chat };
        Envelope::new(user(from), user(to), Body::Message(body))
    }

    fn settle(admission: Admission, outcome: Outcome) -> MessageId {
        match admission {
            Admission::New { reply, .. } => {
                reply.send(outcome);
                MessageId::generate()
            }
            Admission::Resend { msg, .. } => msg,
        }
    }

    #[tokio::test]
    async fn a_resend_gets_the_first_copys_id_and_outcome() {
        let recent = RecentMessages::default();
        let first = message("alice", "bob", "hi");
        let Admission::New { reply, .. } = recent.admit("c1", &first) else { panic!("first copy is new") };
        reply.send(Outcome::Delivered);
        let resend = message("alice", "bob", "hi");
        let Admission::Resend { msg, outcome } = recent.admit("c1", &resend) else { panic!("a resend") };
        assert_eq!(msg, first.id);
        assert_eq!(outcome.await, Outcome::Delivered);
    }

    #[tokio::test]
    async fn a_resend_while_the_first_is_in_flight_waits_for_its_outcome() {
        let recent = RecentMessages::default();
        let Admission::New { reply, .. } = recent.admit("c1", &message("alice", "bob", "hi")) else { panic!("new") };
        let Admission::Resend { outcome, .. } = recent.admit("c1", &message("alice", "bob", "hi")) else { panic!("resend") };
        let waiting = tokio::spawn(outcome);
        reply.send(Outcome::Stored);
        assert_eq!(waiting.await.expect("joins"), Outcome::Stored);
    }

    #[test]
    fn the_same_id_with_other_content_or_another_sender_is_new() {
        let recent = RecentMessages::default();
        settle(recent.admit("1", &message("alice", "bob", "hi")), Outcome::Delivered);
        assert!(matches!(recent.admit("1", &message("alice", "bob", "hello again")), Admission::New { .. }));
        assert!(matches!(recent.admit("1", &message("alice", "carol", "hi")), Admission::New { .. }));
        assert!(matches!(recent.admit("1", &message("dave", "bob", "hi")), Admission::New { .. }));
    }

    #[tokio::test]
    async fn a_failed_message_is_routed_again_when_resent() {
        let recent = RecentMessages::default();
        let Admission::New { reply, outcome } = recent.admit("c1", &message("alice", "bob", "hi")) else { panic!("new") };
        reply.send(Outcome::Retryable("busy".into()));
        assert!(!outcome.await.is_accepted());
        assert!(matches!(recent.admit("c1", &message("alice", "bob", "hi")), Admission::New { .. }));
    }

    #[test]
    fn only_messages_are_remembered() {
        let recent = RecentMessages::default();
        let user = Address::user(UserId::parse("alice").expect("valid"));
        let presence = Envelope::new(
            user.clone(),
            user,
            Body::Presence(crate::envelope::PresenceBody { show: crate::envelope::Show::Away, status: None }),
        );
        assert!(matches!(recent.admit("p", &presence), Admission::New { .. }));
        assert!(matches!(recent.admit("p", &presence), Admission::New { .. }));
    }

    fn shards(recent: &RecentMessages) -> impl Iterator<Item = std::sync::MutexGuard<'_, Recent>> {
        recent.shards.iter().map(|shard| shard.0.lock().expect("lock"))
    }

    #[test]
    fn memory_is_bounded_oldest_forgotten_first() {
        let recent = RecentMessages::default();
        // Enough for every shard to have forgotten its first messages.
        for n in 0..2 * CAPACITY {
            settle(recent.admit(&n.to_string(), &message("alice", "bob", "hi")), Outcome::Delivered);
        }
        let entries: usize = shards(&recent).map(|shard| shard.entries.len()).sum();
        assert!(entries <= CAPACITY, "{entries} remembered");
        assert!(matches!(recent.admit("0", &message("alice", "bob", "hi")), Admission::New { .. }), "the oldest is forgotten");
        assert!(matches!(
            recent.admit(&(2 * CAPACITY - 1).to_string(), &message("alice", "bob", "hi")),
            Admission::Resend { .. }
        ));
    }

    #[test]
    fn keys_of_forgotten_messages_are_swept_and_never_answer_for_new_ones() {
        let recent = RecentMessages::default();
        // The same few ids again and again, among many that are used once, over several sweeps.
        for n in 0..3 * CAPACITY {
            let id = if n % 1000 == 0 { "reused".to_owned() } else { n.to_string() };
            settle(recent.admit(&id, &message("alice", "bob", &format!("text {n}"))), Outcome::Delivered);
        }
        for shard in shards(&recent) {
            assert!(shard.index.len() <= INDEX_SWEEP, "{} keys indexed", shard.index.len());
        }
        let last_reuse = (3 * CAPACITY - 1) / 1000 * 1000;
        let resend = |text: String| recent.admit("reused", &message("alice", "bob", &text));
        assert!(matches!(resend(format!("text {last_reuse}")), Admission::Resend { .. }), "the latest under a key answers");
        assert!(matches!(resend(format!("text {}", last_reuse - 1000)), Admission::New { .. }), "an earlier one does not");
        // An id last used long ago, its entry forgotten and its key swept out since.
        assert!(matches!(recent.admit("1", &message("alice", "bob", "text 1")), Admission::New { .. }));
    }

    #[tokio::test]
    async fn a_key_whose_entry_was_forgotten_but_not_yet_swept_finds_nothing() {
        let mut shard = Recent::default();
        let remember = |shard: &mut Recent, key: u64| {
            let (_, outcome) = fresh();
            shard.remember(Entry { key, content: 7, msg: MessageId::generate(), outcome, at: Instant::now() });
        };
        remember(&mut shard, 1);
        assert!(shard.get(1).is_some());
        for key in 2..=SHARD_CAPACITY as u64 {
            shard.forget_old(Instant::now());
            remember(&mut shard, key);
        }
        shard.forget_old(Instant::now());
        assert!(shard.index.contains_key(&1), "not swept yet");
        assert!(shard.get(1).is_none(), "its number is below the first remembered");
        assert!(shard.get(SHARD_CAPACITY as u64).is_some());
    }
}
