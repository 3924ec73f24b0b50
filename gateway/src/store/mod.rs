//! The durable store: known users, offline queues, devices.
//!
//! Behind a trait so the router does not care where data lives. [`SqlStore`] implements it for
//! SQLite (the embedded default, a file under `gateway.data_dir`) and PostgreSQL (shared by
//! several gateway nodes) through one code path.

mod aliases;
mod group_commit;
mod migrate;
mod params;
mod sql;

use std::future::Future;
use std::pin::Pin;

pub use aliases::MessageAliases;
pub use sql::SqlStore;

use crate::address::{Address, UserId};
use crate::id::MessageId;
use crate::roster::RosterItem;
use crate::envelope::{DeviceRegistration, Envelope, Platform, PresenceBody, Timestamp};
use crate::wake::{Notified, Wake, WakeLookup, WakeSeq, WakeSummary, WakeTarget};

pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("stored envelope cannot be read: {0}")]
    Corrupt(#[from] serde_json::Error),
    #[error("cannot prepare the data directory {path}: {source}")]
    DataDir {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the write was not committed: {0}")]
    Batch(String),
    #[error("migration {version} failed: {source}")]
    Migration {
        version: i64,
        #[source]
        source: sqlx::Error,
    },
}

/// Whose offline queue: a user's, or a route's (envelopes for remote addresses waiting for
/// their link). Route names start with `#`, which no user name can.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct QueueName(String);

impl QueueName {
    pub fn user(user: &UserId) -> Self {
        Self(user.as_str().to_owned())
    }

    pub fn route(route: &str) -> Self {
        Self(format!("#{route}"))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for QueueName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// How a message exchanged with someone outside the gateway is known on both sides, so that
/// receipts and errors always name the right message, across restarts, and a peer can only refer
/// to messages it is party to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MessageAlias {
    /// The gateway's id.
    pub id: MessageId,
    /// The other party (bare address).
    pub peer: Address,
    /// The id the other party knows it by (an XMPP stanza id).
    pub foreign_id: String,
    /// The gateway user on this side of the conversation.
    pub user: UserId,
}

/// Position of an envelope in an offline queue; increases with every append.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct QueueSeq(pub i64);

/// What [`Store::append_bounded`] did, and how long her queue is after it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BoundedAppend {
    Stored { queue_len: u64 },
    Full { queue_len: u64 },
}

#[derive(Clone, Debug, PartialEq)]
pub struct QueuedEnvelope {
    pub seq: QueueSeq,
    pub envelope: Envelope,
}

pub trait Store: Send + Sync + 'static {
    /// Every user who has ever connected.
    fn known_users(&self) -> StoreFuture<'_, Vec<UserId>>;
    /// Records that `user` exists. Returns true when she is new.
    fn ensure_user<'a>(&'a self, user: &'a UserId) -> StoreFuture<'a, bool>;
    /// Appends to an offline queue; durable when the future resolves.
    fn enqueue<'a>(&'a self, queue: &'a QueueName, envelope: &'a Envelope) -> StoreFuture<'a, QueueSeq>;
    /// [`Store::enqueue`], and records in the same transaction that her devices are to be woken.
    fn enqueue_waking<'a>(
        &'a self,
        queue: &'a QueueName,
        envelope: &'a Envelope,
        wake: &'a Wake,
    ) -> StoreFuture<'a, (QueueSeq, WakeSeq)>;
    /// Appends, with its wake if any, unless her queue already holds `limit` envelopes (counted in
    /// the same transaction); durable when the future resolves. For a mailbox that does not know
    /// her queue's length yet: one round trip where a count and then an append would take two.
    fn append_bounded<'a>(
        &'a self,
        queue: &'a QueueName,
        envelope: &'a Envelope,
        wake: Option<&'a Wake>,
        limit: u64,
    ) -> StoreFuture<'a, BoundedAppend>;
    /// Up to `limit` queued envelopes after `after`, oldest first.
    fn queued<'a>(
        &'a self,
        queue: &'a QueueName,
        after: Option<QueueSeq>,
        limit: u32,
    ) -> StoreFuture<'a, Vec<QueuedEnvelope>>;
    fn queue_len<'a>(&'a self, queue: &'a QueueName) -> StoreFuture<'a, u64>;
    fn dequeue<'a>(&'a self, queue: &'a QueueName, seqs: &'a [QueueSeq]) -> StoreFuture<'a, ()>;
    /// Drops queued envelopes (and wakes) stored before `cutoff`; returns how many envelopes.
    fn expire_queued(&self, cutoff: Timestamp) -> StoreFuture<'_, u64>;
    /// The last presence a user set, to restore when she comes back.
    fn save_presence<'a>(&'a self, user: &'a UserId, presence: &'a PresenceBody) -> StoreFuture<'a, ()>;
    fn last_presence<'a>(&'a self, user: &'a UserId) -> StoreFuture<'a, Option<PresenceBody>>;
    fn register_device<'a>(&'a self, user: &'a UserId, device: &'a DeviceRegistration) -> StoreFuture<'a, ()>;
    /// Returns false when `user` had no such device.
    fn unregister_device<'a>(&'a self, user: &'a UserId, device: &'a DeviceRegistration) -> StoreFuture<'a, bool>;
    fn devices<'a>(&'a self, user: &'a UserId) -> StoreFuture<'a, Vec<DeviceRegistration>>;
    /// Her item for `contact`, empty when she has none.
    fn roster_item<'a>(&'a self, owner: &'a UserId, contact: &'a Address) -> StoreFuture<'a, RosterItem>;
    /// Writes an item; an empty item is deleted.
    fn save_roster_item<'a>(&'a self, owner: &'a UserId, item: &'a RosterItem) -> StoreFuture<'a, ()>;
    fn roster<'a>(&'a self, owner: &'a UserId) -> StoreFuture<'a, Vec<RosterItem>>;
    /// Records other systems' ids for messages, in one transaction.
    fn save_aliases<'a>(&'a self, aliases: &'a [MessageAlias]) -> StoreFuture<'a, ()>;
    fn alias_of<'a>(&'a self, id: &'a MessageId) -> StoreFuture<'a, Option<MessageAlias>>;
    /// The message `peer` knows as `foreign_id`, if `peer` is party to it.
    fn resolve_alias<'a>(&'a self, peer: &'a Address, foreign_id: &'a str) -> StoreFuture<'a, Option<MessageAlias>>;
    /// Records a wake for an envelope already stored (one a dying session never confirmed).
    fn record_wake<'a>(&'a self, wake: &'a Wake) -> StoreFuture<'a, WakeSeq>;
    /// She is online: nothing is to be woken any more. Returns how many wakes were dropped.
    fn clear_wakes<'a>(&'a self, user: &'a UserId) -> StoreFuture<'a, u64>;
    fn users_with_wakes(&self) -> StoreFuture<'_, Vec<UserId>>;
    fn wake_summary<'a>(&'a self, user: &'a UserId) -> StoreFuture<'a, Option<WakeSummary>>;
    fn wake_targets<'a>(&'a self, user: &'a UserId) -> StoreFuture<'a, Vec<WakeTarget>>;
    /// For each of `users` with wakes recorded: what waits and her devices. Users with none
    /// are left out.
    fn wake_lookups<'a>(&'a self, users: &'a [UserId]) -> StoreFuture<'a, Vec<WakeLookup>>;
    /// Records what devices were told, in one transaction (one disk sync for many sends).
    fn mark_notified<'a>(&'a self, notified: &'a [Notified]) -> StoreFuture<'a, ()>;
    /// Removes a device whoever it belongs to; false when there was none.
    fn remove_device<'a>(&'a self, platform: Platform, token: &'a str) -> StoreFuture<'a, bool>;
    /// A cheap round trip, for `/healthz`.
    fn ping(&self) -> StoreFuture<'_, ()>;
}
