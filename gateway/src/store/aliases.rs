//! Message aliases, kept in memory for the messages in flight and written to the store behind
//! the traffic.
//!
//! An alias is needed when the peer answers: a receipt or an error stanza seconds later, rarely
//! after a restart. Waiting for its commit before each stanza goes out or comes in put a disk
//! sync on the XMPP link's path for every batch, and the link is one stream: the whole bridge
//! ran at the pace of the disk. So an alias is usable at once from memory, and one writer task
//! commits whatever has accumulated in one transaction. What a crash can lose is the aliases of
//! the last moments: a receipt for one of those messages after the restart is not matched (it
//! is dropped, as one for an unknown message), and the message itself is unaffected.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::mpsc;
use tokio::time::{Duration, Instant};
use tokio_util::task::TaskTracker;

use super::{MessageAlias, Store, StoreFuture};
use crate::address::Address;
use crate::id::MessageId;
use crate::prehashed::BuildPrehashed;

/// Aliases answered from memory: the newest ones, far more than are ever in flight at once.
const RECENT: usize = 65_536;
/// Aliases waiting for the writer; a full queue makes callers wait (the store is behind).
const PENDING: usize = 16_384;
/// Aliases per transaction at most.
const WRITE_BATCH: usize = 1_024;
/// How long the writer gathers aliases before a commit: each commit is a disk sync, and a sync
/// per handful of messages cost more than the rest of the bridge.
const GATHER: Duration = Duration::from_millis(100);

/// The part of the store adapters may use: message aliases. Everything else about messages goes
/// through the router.
#[derive(Clone)]
pub struct MessageAliases {
    store: Arc<dyn Store>,
    recent: Arc<Mutex<Recent>>,
    writer: mpsc::Sender<Vec<MessageAlias>>,
}

impl MessageAliases {
    /// The writer runs on `tasks` until every handle is dropped, then commits what is left.
    pub fn spawn(store: Arc<dyn Store>, tasks: &TaskTracker) -> Self {
        let (writer, pending) = mpsc::channel(PENDING);
        tasks.spawn(write_behind(store.clone(), pending));
        Self { store, recent: Arc::new(Mutex::new(Recent::default())), writer }
    }

    /// Usable by [`of`](Self::of) and [`resolve`](Self::resolve) as soon as this returns; durable
    /// a moment later.
    pub async fn save(&self, aliases: Vec<MessageAlias>) {
        if aliases.is_empty() {
            return;
        }
        self.recent.lock().unwrap_or_else(PoisonError::into_inner).insert_all(&aliases);
        let count = aliases.len();
        if self.writer.send(aliases).await.is_err() {
            tracing::warn!(count, "alias writer stopped; stanza ids kept in memory only");
        }
    }

    pub async fn of(&self, id: &MessageId) -> Result<Option<MessageAlias>, super::StoreError> {
        let known = self.recent.lock().unwrap_or_else(PoisonError::into_inner).of(id);
        match known {
            Some(alias) => Ok(Some(alias)),
            None => self.store.alias_of(id).await,
        }
    }

    pub async fn resolve(&self, peer: &Address, foreign_id: &str) -> Result<Option<MessageAlias>, super::StoreError> {
        let known = self.recent.lock().unwrap_or_else(PoisonError::into_inner).resolve(peer, foreign_id);
        match known {
            Some(alias) => Ok(Some(alias)),
            None => self.store.resolve_alias(peer, foreign_id).await,
        }
    }
}

async fn write_behind(store: Arc<dyn Store>, mut pending: mpsc::Receiver<Vec<MessageAlias>>) {
    while let Some(first) = pending.recv().await {
        let mut batch = first;
        let deadline = Instant::now() + GATHER;
        while batch.len() < WRITE_BATCH {
            match tokio::time::timeout_at(deadline, pending.recv()).await {
                Ok(Some(more)) => batch.extend(more),
                // Closed (shutdown: commit what is left) or time to commit.
                Ok(None) | Err(_) => break,
            }
        }
        let written: StoreFuture<'_, ()> = store.save_aliases(&batch);
        if let Err(error) = written.await {
            // Still answered from memory while they are recent; only a restart forgets them.
            tracing::warn!(%error, count = batch.len(), "cannot record stanza ids");
        }
    }
}

/// The newest aliases, by gateway id and by what the peer calls them.
///
/// Every message on the XMPP link passes through here, so an alias is held once: what the peer
/// calls it is kept as a keyed hash of (peer, foreign id), checked against the alias on lookup. Two
/// names sharing a hash (one chance in 2⁶⁴ per pair) leave the older one to the store, where it
/// is found once the writer has committed it (within `GATHER`).
#[derive(Default)]
struct Recent {
    hasher: RandomState,
    by_id: HashMap<MessageId, MessageAlias>,
    by_foreign: HashMap<u64, MessageId, BuildPrehashed>,
    /// Oldest first, each with its key in `by_foreign`, so that forgetting it hashes only its id.
    order: VecDeque<(MessageId, u64)>,
}

impl Recent {
    fn insert_all(&mut self, aliases: &[MessageAlias]) {
        for alias in aliases {
            // An empty id names nothing a peer could answer about; the store keeps none either.
            if alias.foreign_id.is_empty() {
                continue;
            }
            let Entry::Vacant(slot) = self.by_id.entry(alias.id.clone()) else { continue };
            slot.insert(alias.clone());
            // Before the new one joins `order`, which so never grows past `RECENT` places.
            if self.order.len() >= RECENT {
                self.forget_oldest();
            }
            // The newest message with that id from that peer is the one it means.
            let key = self.foreign_key(&alias.peer, &alias.foreign_id);
            self.by_foreign.insert(key, alias.id.clone());
            self.order.push_back((alias.id.clone(), key));
        }
    }

    fn foreign_key(&self, peer: &Address, foreign_id: &str) -> u64 {
        self.hasher.hash_one((peer, foreign_id))
    }

    fn forget_oldest(&mut self) {
        let Some((id, key)) = self.order.pop_front() else { return };
        self.by_id.remove(&id);
        if self.by_foreign.get(&key) == Some(&id) {
            self.by_foreign.remove(&key);
        }
    }

    fn of(&self, id: &MessageId) -> Option<MessageAlias> {
        self.by_id.get(id).cloned()
    }

    fn resolve(&self, peer: &Address, foreign_id: &str) -> Option<MessageAlias> {
        let id = self.by_foreign.get(&self.foreign_key(peer, foreign_id))?;
        self.by_id.get(id).filter(|alias| alias.peer == *peer && alias.foreign_id == foreign_id).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::address::{Domain, UserId};

    fn peer(text: &str) -> Address {
        Address::parse(text, &Domain::new("gw.example.org")).expect("address")
    }

    fn alias(id: &str, from: &str, foreign: &str) -> MessageAlias {
        MessageAlias {
            id: MessageId::from_string(id),
            peer: peer(from),
            foreign_id: foreign.to_owned(),
            user: UserId::parse("alice").expect("user"),
        }
    }

    #[test]
    fn the_newest_message_a_peer_calls_by_an_id_is_the_one_it_means() {
        let mut recent = Recent::default();
        recent.insert_all(&[alias("m1", "bob@example.org", "1"), alias("m2", "bob@example.org", "1")]);
        assert_eq!(recent.resolve(&peer("bob@example.org"), "1").map(|a| a.id.to_string()), Some("m2".to_owned()));
        assert!(recent.resolve(&peer("carol@example.org"), "1").is_none(), "another peer cannot name bob's message");
    }

    #[test]
    fn an_empty_foreign_id_is_not_kept() {
        let mut recent = Recent::default();
        recent.insert_all(&[alias("m1", "bob@example.org", "")]);
        assert!(recent.of(&MessageId::from_string("m1")).is_none());
        assert!(recent.resolve(&peer("bob@example.org"), "").is_none());
    }

    #[test]
    fn the_oldest_are_forgotten_first_and_a_newer_alias_survives_its_namesake() {
        let mut recent = Recent::default();
        recent.insert_all(&[alias("first", "bob@example.org", "same")]);
        recent.insert_all(&[alias("second", "bob@example.org", "same")]);
        let filler: Vec<MessageAlias> =
            (0..RECENT - 1).map(|n| alias(&format!("f{n}"), "carol@example.org", &format!("c{n}"))).collect();
        recent.insert_all(&filler);
        assert!(recent.of(&MessageId::from_string("first")).is_none());
        assert_eq!(recent.resolve(&peer("bob@example.org"), "same").map(|a| a.id.to_string()), Some("second".to_owned()));
        assert_eq!(recent.order.len(), RECENT);
        assert_eq!(recent.by_id.len(), RECENT);
        assert!(recent.order.capacity() < 2 * RECENT, "never grown past its place count");
    }
}
