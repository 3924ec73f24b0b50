//! Waking a user who has no live session: her phones are to be told that something waits.
//!
//! The router decides *when* (a message or subscription request stored while she has no live
//! session) and records a [`Wake`] in the store's outbox in the same transaction that stores the
//! envelope, so a restart loses none. A waking adapter (push) decides *how*: it subscribes to
//! [`WakeSignal`]s, reads the outbox through [`WakeOutbox`] and records what it sent per device.
//! Nothing here knows a push provider.

use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::address::{Address, UserId};
use crate::envelope::{Body, DeviceRegistration, Envelope, Platform, SubscriptionAction, Timestamp};
use crate::id::MessageId;
use crate::store::{Store, StoreFuture};

/// Why she is to be woken.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WakeKind {
    Message,
    /// Someone asks to see her presence.
    Subscribe,
}

impl WakeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Message => "message",
            Self::Subscribe => "subscribe",
        }
    }
}

/// One envelope that waits for her, as a notification may describe it.
#[derive(Clone, Debug, PartialEq)]
pub struct Wake {
    pub user: UserId,
    pub from: Address,
    pub kind: WakeKind,
    /// The message text, for operators who let notifications show it.
    pub text: Option<String>,
    pub msg: MessageId,
    pub at: Timestamp,
}

impl Wake {
    /// The wake an envelope for `user` calls for, if any: messages and subscription requests
    /// wake her; receipts, answers and errors wait quietly.
    pub fn for_envelope(user: &UserId, envelope: &Envelope) -> Option<Self> {
        let (kind, text) = match &envelope.body {
            Body::Message(message) => (WakeKind::Message, Some(preview(&message.body))),
            Body::Subscription { action: SubscriptionAction::Subscribe } => (WakeKind::Subscribe, None),
            _ => return None,
        };
        Some(Self {
            user: user.clone(),
            from: envelope.from.clone(),
            kind,
            text,
            msg: envelope.id.clone(),
            at: envelope.ts,
        })
    }
}

/// Enough text for a lock screen. NUL is dropped: PostgreSQL refuses it in a text column, and a
/// message must not be refused only because its recipient has a phone.
const PREVIEW_CHARS: usize = 256;

fn preview(text: &str) -> String {
    text.chars().filter(|c| *c != '\0').take(PREVIEW_CHARS).collect()
}

/// Position in the outbox; increases with every wake recorded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WakeSeq(pub i64);

/// What waits for a user: how many wakes since she was last online, and the newest.
#[derive(Clone, Debug, PartialEq)]
pub struct WakeSummary {
    pub count: u64,
    pub newest_seq: WakeSeq,
    pub newest: Wake,
}

/// A registered device and what it was last told.
#[derive(Clone, Debug, PartialEq)]
pub struct WakeTarget {
    pub device: DeviceRegistration,
    /// The newest wake this device has been notified of (or given up on).
    pub covered: WakeSeq,
    /// When it was last notified; the coalescing window runs from here.
    pub notified_at: Option<Timestamp>,
}

/// What a waking adapter needs to decide about one user.
#[derive(Clone, Debug, PartialEq)]
pub struct WakeLookup {
    /// Its `newest.user` is hers.
    pub summary: WakeSummary,
    /// Oldest registration first.
    pub targets: Vec<WakeTarget>,
}

/// A device of `user` has been told of every wake up to `covered`, at `at`.
#[derive(Clone, Debug, PartialEq)]
pub struct Notified {
    pub user: UserId,
    pub platform: Platform,
    pub token: String,
    pub covered: WakeSeq,
    pub at: Timestamp,
}

/// What the router tells a waking adapter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WakeSignal {
    /// A wake was recorded for her.
    Pending(UserId),
    /// She has a live session again; her outbox has been cleared.
    Online(UserId),
}

/// The router's side of the signal channel. At most one waking adapter subscribes; signals sent
/// before it does are not kept (it reads the outbox when it starts).
#[derive(Clone, Default)]
pub struct WakeSignals(Arc<Mutex<Option<mpsc::UnboundedSender<WakeSignal>>>>);

impl WakeSignals {
    /// Signals are tiny and the subscriber only marks users as due, so the channel is
    /// unbounded: a bounded one would have to drop a signal and leave a user unwoken.
    pub fn subscribe(&self) -> mpsc::UnboundedReceiver<WakeSignal> {
        let (sender, receiver) = mpsc::unbounded_channel();
        if let Ok(mut slot) = self.0.lock() {
            *slot = Some(sender);
        }
        receiver
    }

    pub(crate) fn send(&self, signal: WakeSignal) {
        if let Ok(slot) = self.0.lock()
            && let Some(sender) = slot.as_ref()
        {
            let _ = sender.send(signal);
        }
    }
}

/// The part of the store a waking adapter may use: the outbox and the devices it wakes.
#[derive(Clone)]
pub struct WakeOutbox(Arc<dyn Store>);

impl WakeOutbox {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self(store)
    }

    /// Users with wakes recorded, to resume after a restart.
    pub fn waiting_users(&self) -> StoreFuture<'_, Vec<UserId>> {
        self.0.users_with_wakes()
    }

    /// What waits for each of `users`, and her devices; users with nothing waiting are left out.
    pub fn look_up<'a>(&'a self, users: &'a [UserId]) -> StoreFuture<'a, Vec<WakeLookup>> {
        self.0.wake_lookups(users)
    }

    /// Records, in one transaction, that each device has been told of every wake up to its
    /// `covered`.
    pub fn mark_notified<'a>(&'a self, notified: &'a [Notified]) -> StoreFuture<'a, ()> {
        self.0.mark_notified(notified)
    }

    /// A device its provider says is gone (uninstalled app, expired token).
    pub fn remove_device<'a>(&'a self, platform: Platform, token: &'a str) -> StoreFuture<'a, bool> {
        self.0.remove_device(platform, token)
    }
}
