//! One task per active user: delivery to her sessions, her offline queue, her presence.
//!
//! Everything about one user happens here in arrival order, so her messages keep their order
//! without locks: an envelope that arrives while her backlog is being replayed simply waits in the
//! mailbox's queue until the replay has been handed to her session.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use super::awaiting::{Awaiting, Delivery, Gathering, InFlight, Proofs};
use super::queue;
use super::reply::Reply;
use super::session::{Delivered, Outbound, SessionEntry};
use super::{Command, RouterSettings};
use crate::address::{Address, UserId};
use crate::envelope::{Body, DeviceAction, Envelope, PresenceBody, Show, SubscriptionAction, Timestamp};
use crate::roster::{self, Direction};
use crate::id::SessionId;
use crate::metrics;
use crate::outcome::{Outcome, Rejection};
use super::RouterError;
use crate::store::{BoundedAppend, QueueName, QueueSeq, Store};
use crate::wake::{Wake, WakeSignal, WakeSignals};

const REPLAY_PAGE: u32 = 128;
const DEQUEUE_BATCH: usize = 64;

/// Kept to a few words: tokio allocates a channel's slots 32 at a time, at once, so every
/// mailbox (one per user with a live session) pays for 32 commands even when idle. A delivery
/// carries its envelope already shared, as its sessions will (no extra allocation per message);
/// rare commands box what is large.
pub(crate) enum MailboxCommand {
    Deliver {
        envelope: Arc<Envelope>,
        reply: Reply,
    },
    Open {
        entry: Box<SessionEntry>,
        newly_known: bool,
        reply: oneshot::Sender<Result<(), RouterError>>,
    },
    Deliverable {
        session: SessionId,
    },
    /// The session can no longer receive (an MQTT client unsubscribed from its `in` topic).
    Undeliverable {
        session: SessionId,
    },
    Close {
        session: SessionId,
    },
    /// She sent a subscription stanza to `contact`.
    Sent {
        contact: Box<Address>,
        action: SubscriptionAction,
    },
}

/// Whose mailbox: a gateway user's, or a route's (a federating adapter's link, which carries
/// every remote address).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Owner {
    User(UserId),
    Route(&'static str),
}

impl std::fmt::Display for Owner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::User(user) => write!(f, "{user}"),
            Self::Route(route) => write!(f, "route:{route}"),
        }
    }
}

pub(crate) struct Mailbox {
    owner: Owner,
    queue: QueueName,
    store: Arc<dyn Store>,
    settings: Arc<RouterSettings>,
    router: mpsc::WeakSender<Command>,
    wakes: WakeSignals,
    sessions: Vec<SessionEntry>,
    /// In delivery order, so that envelopes a dying session never confirmed are stored back in the
    /// order they were sent.
    inflight: InFlight,
    /// Length of the offline queue, loaded on first use.
    queue_len: Option<u64>,
    presence: Option<PresenceBody>,
    processed: u64,
    /// Replayed envelopes confirmed by the client, to delete from the store in one batch.
    confirmed: Vec<QueueSeq>,
    /// Stored envelopes handed to a session and not yet settled: a replay skips them.
    handed_out: std::collections::HashSet<QueueSeq>,
    /// Something was stored while she had a deliverable session (it died before confirming, or a
    /// session just became deliverable): replay once the current event is handled.
    replay_due: bool,
    /// The newest replayed envelope a session failed to confirm: recorded as a wake if her last
    /// session closes with it still waiting.
    missed: Option<Wake>,
    /// [`metrics::MAILBOX_QUEUE`], looked up once.
    depth: ::metrics::Gauge,
}

impl Mailbox {
    pub(crate) fn new(
        owner: Owner,
        store: Arc<dyn Store>,
        settings: Arc<RouterSettings>,
        router: mpsc::WeakSender<Command>,
        wakes: WakeSignals,
        depth: ::metrics::Gauge,
    ) -> Self {
        let queue = match &owner {
            Owner::User(user) => QueueName::user(user),
            Owner::Route(route) => QueueName::route(route),
        };
        Self {
            owner,
            queue,
            store,
            settings,
            router,
            wakes,
            sessions: Vec::new(),
            inflight: InFlight::default(),
            queue_len: None,
            presence: None,
            processed: 0,
            confirmed: Vec::new(),
            handed_out: std::collections::HashSet::new(),
            replay_due: false,
            missed: None,
            depth,
        }
    }

    /// Not an `async fn`: one copies its arguments into the future beside the originals, and
    /// this future is kept by every user with a live session. Captured by the block, the
    /// mailbox is held once.
    #[allow(clippy::manual_async_fn)]
    pub(crate) fn run(mut self, mut inbox: queue::Receiver<MailboxCommand>) -> impl Future<Output = ()> + Send {
        async move {
            loop {
                let idle = self.sessions.is_empty() && self.inflight.is_empty();
                let idle_for = self.settings.mailbox_idle;
                tokio::select! {
                    biased;
                    Some((delivery, delivered)) = self.inflight.next(), if !self.inflight.is_empty() => {
                        self.complete(delivery, delivered).await;
                    }
                    command = inbox.recv() => {
                        let Some(command) = command else { break };
                        self.depth.decrement(1.0);
                        self.processed += 1;
                        self.handle(command).await;
                    }
                    // Made only when polled: `select!` makes a disabled branch's future too, and a
                    // timer made on every turn reads the clock once more per message.
                    () = async move { tokio::time::sleep(idle_for).await }, if idle => {
                        self.flush_confirmed().await;
                        if let Some(router) = self.router.upgrade() {
                            let idle = Command::Idle { owner: self.owner.clone(), processed: self.processed };
                            let _ = router.send(idle).await;
                        }
                    }
                }
                if self.replay_due {
                    self.replay_due = false;
                    if let Some(session) = self.sessions.iter().rev().find(|s| s.deliverable).map(|s| s.id) {
                        Box::pin(self.replay(session)).await;
                    }
                }
                if self.confirmed.len() >= DEQUEUE_BATCH || (inbox.is_empty() && self.inflight.is_empty()) {
                    self.flush_confirmed().await;
                }
            }
            // The router is gone (shutdown): settle what is still in flight so nothing is lost.
            while let Some((delivery, delivered)) = self.inflight.next().await {
                self.complete(delivery, delivered).await;
            }
            self.flush_confirmed().await;
        }
    }

    async fn handle(&mut self, command: MailboxCommand) {
        match command {
            MailboxCommand::Deliver { envelope, reply } => self.deliver(envelope, reply).await,
            MailboxCommand::Open {
                entry,
                newly_known,
                reply,
            } => {
                let result = Box::pin(self.open(entry, newly_known)).await;
                let _ = reply.send(result);
            }
            MailboxCommand::Deliverable { session } => Box::pin(self.make_deliverable(session)).await,
            MailboxCommand::Undeliverable { session } => self.make_undeliverable(session),
            MailboxCommand::Close { session } => Box::pin(self.close(session)).await,
            MailboxCommand::Sent { contact, action } => Box::pin(self.sent_subscription(*contact, action)).await,
        }
    }

    async fn open(&mut self, entry: Box<SessionEntry>, newly_known: bool) -> Result<(), RouterError> {
        let user = self.me();
        let max = self.settings.max_sessions_per_user;
        if user.is_some() && self.sessions.len() >= max {
            tracing::info!(owner = %self.owner, max, "session refused: too many");
            return Err(RouterError::TooManySessions { max });
        }
        if let (true, Some(user)) = (newly_known, &user) {
            self.store.ensure_user(user).await?;
        }
        if let (true, Some(user)) = (self.sessions.is_empty(), &user) {
            // Her first session makes her available, as she last said she was.
            let last = self.store.last_presence(user).await.unwrap_or_else(|error| {
                tracing::warn!(owner = %self.owner, %error, "cannot read last presence");
                None
            });
            let presence = last.unwrap_or(PresenceBody { show: Show::Available, status: None });
            self.broadcast_presence(presence).await;
            self.probe_contacts().await;
            if self.settings.wake_offline_users {
                // Cleared here, in order with the wakes this mailbox records, so a wake recorded
                // after she leaves again is never swept away with the old ones.
                if let Err(error) = self.store.clear_wakes(user).await {
                    tracing::warn!(owner = %self.owner, %error, "cannot clear wakes");
                }
                self.missed = None;
                self.wakes.send(WakeSignal::Online(user.clone()));
            }
        }
        ::metrics::gauge!(metrics::SESSIONS, "adapter" => entry.adapter).increment(1.0);
        tracing::debug!(owner = %self.owner, session = %entry.id, adapter = entry.adapter, "session opened");
        self.sessions.push(*entry);
        Ok(())
    }

    async fn make_deliverable(&mut self, session: SessionId) {
        let Some(entry) = self.sessions.iter_mut().find(|s| s.id == session) else {
            return;
        };
        if entry.deliverable {
            return;
        }
        entry.deliverable = true;
        // Whatever waits in the store goes to this session first (and what is already on its way
        // to another session is skipped).
        Box::pin(self.replay(session)).await;
    }

    fn make_undeliverable(&mut self, session: SessionId) {
        if let Some(entry) = self.sessions.iter_mut().find(|s| s.id == session) {
            entry.deliverable = false;
        }
    }

    /// Hands the offline queue to the session, oldest first. Entries are deleted from the store
    /// only once the client confirms them.
    async fn replay(&mut self, session: SessionId) {
        // Confirmed but not yet deleted entries must not go out twice.
        self.flush_confirmed().await;
        let ttl_ms = i64::try_from(self.settings.offline_ttl.as_millis()).unwrap_or(i64::MAX);
        let cutoff = Timestamp::now().0.saturating_sub(ttl_ms);
        let mut after = None;
        loop {
            let page = match self.store.queued(&self.queue, after, REPLAY_PAGE).await {
                Ok(page) => page,
                Err(error) => {
                    tracing::error!(owner = %self.owner, %error, "cannot read the offline queue");
                    return;
                }
            };
            if page.is_empty() {
                return;
            }
            for queued in page {
                after = Some(queued.seq);
                if self.handed_out.contains(&queued.seq) {
                    continue;
                }
                if queued.envelope.ts.0 < cutoff {
                    self.confirmed.push(queued.seq);
                    continue;
                }
                let (delivered, proof) = Delivered::new();
                let envelope = Arc::new(queued.envelope);
                let outbound = Outbound {
                    envelope: envelope.clone(),
                    delivered: Some(delivered),
                };
                if !self.send_to(session, outbound).await {
                    return;
                }
                let seq = queued.seq;
                self.handed_out.insert(seq);
                self.inflight.push_back(Awaiting::new(Delivery::Replayed { seq, envelope }, Proofs::One(proof)));
            }
        }
    }

    async fn deliver(&mut self, envelope: Arc<Envelope>, reply: Reply) {
        let to_self = matches!((&self.owner, envelope.from.as_user()), (Owner::User(me), Some(from)) if me == from);
        match &envelope.body {
            Body::Presence(presence) if to_self => {
                let outcome = Box::pin(self.set_presence(presence.clone())).await;
                reply.send(outcome);
                return;
            }
            Body::Probe if matches!(self.owner, Owner::User(_)) => {
                Box::pin(self.answer_probe(envelope.from.clone())).await;
                reply.send(Outcome::Accepted);
                return;
            }
            Body::Device(device) => {
                let Some(user) = self.me() else {
                    reply.send(Outcome::Rejected(Rejection::BadRequest("devices belong to users".into())));
                    return;
                };
                let result = match device.action {
                    DeviceAction::Register => self.store.register_device(&user, device).await.map(|()| true),
                    DeviceAction::Unregister => self.store.unregister_device(&user, device).await,
                };
                let outcome = match result {
                    Ok(true) => Outcome::Accepted,
                    Ok(false) => Outcome::Rejected(Rejection::UnknownDevice),
                    Err(error) => {
                        tracing::error!(owner = %self.owner, %error, "cannot update devices");
                        Outcome::Failed("the gateway could not store it".into())
                    }
                };
                reply.send(outcome);
                return;
            }
            _ => {}
        }

        if let (Body::Subscription { action }, false) = (&envelope.body, to_self) {
            Box::pin(self.received_subscription(envelope.from.clone(), *action)).await;
        }
        let queued_offline = envelope.body.is_queued_offline();
        // Her deliverable sessions; with one (the common case) no list is allocated.
        let mut deliverable = self.sessions.iter().filter(|s| s.deliverable).map(|s| s.id);
        let Some(first) = deliverable.next() else {
            if queued_offline {
                // Boxed here and below: storing waits on the store, and inline it would size every
                // mailbox's task for it; beside a store write the allocation is nothing.
                let outcome = Box::pin(self.store_for_later(&envelope)).await;
                reply.send(outcome);
            } else {
                reply.send(Outcome::Accepted);
            }
            return;
        };
        let others: Vec<SessionId> = deliverable.collect();
        let targets = std::iter::once(first).chain(others);

        if !queued_offline {
            // Presence and chat states are worth nothing late: a full session queue drops them.
            for session in targets {
                if let Some(entry) = self.sessions.iter().find(|s| s.id == session) {
                    let _ = entry.outbound.try_send(Outbound { envelope: envelope.clone(), delivered: None });
                }
            }
            reply.send(Outcome::Accepted);
            return;
        }

        let mut proofs = Gathering::default();
        for session in targets {
            let (delivered, proof) = Delivered::new();
            let outbound = Outbound { envelope: envelope.clone(), delivered: Some(delivered) };
            if self.send_to(session, outbound).await {
                proofs.push(proof);
            }
        }
        let Some(proofs) = proofs.finish() else {
            let outcome = Box::pin(self.store_for_later(&envelope)).await;
            reply.send(outcome);
            return;
        };
        self.inflight.push_back(Awaiting::new(Delivery::Live { envelope, reply }, proofs));
    }

    /// A subscription stanza for her: her roster changes, and she may answer it at once.
    async fn received_subscription(&mut self, from: Address, action: SubscriptionAction) {
        let Some(user) = self.me() else { return };
        self.update_roster(from.clone(), action, Direction::Received).await;
        if action == SubscriptionAction::Subscribe && self.settings.auto_accept_subscriptions {
            let contact = match from {
                Address::Remote(remote) => Address::Remote(remote.bare()),
                other => other,
            };
            let answer = Body::Subscription { action: SubscriptionAction::Subscribed };
            self.submit(Envelope::new(Address::user(user), contact, answer)).await;
        }
    }

    /// Queues `outbound` for one session. A session that leaves its queue full for too long is a
    /// slow consumer: it is cut off, so it cannot hold the user's other sessions back.
    async fn send_to(&mut self, session: SessionId, outbound: Outbound) -> bool {
        let Some(entry) = self.sessions.iter().find(|s| s.id == session) else {
            return false;
        };
        // Room in the queue is the common case: no timer is armed for it.
        let outbound = match entry.outbound.try_send(outbound) {
            Ok(()) => return true,
            Err(queue::TrySendError::Full(outbound)) => outbound,
            Err(queue::TrySendError::Closed(_)) => {
                self.remove_session(session);
                return false;
            }
        };
        // Boxed: the wait holds a timer, and inline it would size every mailbox's task for it.
        match Box::pin(entry.outbound.send_timeout(outbound, self.settings.slow_consumer_timeout)).await {
            Ok(()) => true,
            Err(queue::SendTimeoutError::Timeout(_)) => {
                tracing::warn!(owner = %self.owner, session = %session, "slow consumer cut off");
                ::metrics::counter!(metrics::ERRORS, "adapter" => entry.adapter, "code" => "slow-consumer").increment(1);
                entry.kick.cancel();
                self.remove_session(session);
                false
            }
            Err(queue::SendTimeoutError::Closed(_)) => {
                self.remove_session(session);
                false
            }
        }
    }

    async fn complete(&mut self, delivery: Delivery, delivered: bool) {
        match (delivery, delivered) {
            (Delivery::Live { reply, .. }, true) => {
                reply.send(Outcome::Delivered);
            }
            (Delivery::Live { envelope, reply }, false) => {
                // Her connection died before she had it (a phone losing its network): if no
                // session is left, her phone is woken as if she had been offline all along.
                let outcome = Box::pin(self.store_for_later(&envelope)).await;
                reply.send(outcome);
                self.replay_due |= self.sessions.iter().any(|s| s.deliverable);
            }
            (Delivery::Replayed { seq, .. }, true) => {
                self.handed_out.remove(&seq);
                self.confirmed.push(seq);
            }
            // Still in the store: replayed to another session if she has one, else on her return.
            (Delivery::Replayed { seq, envelope }, false) => {
                self.handed_out.remove(&seq);
                // Her wakes were cleared when she connected: if no session is left to take it,
                // she is woken for it when the last one closes.
                if let (Owner::User(user), true) = (&self.owner, self.settings.wake_offline_users) {
                    self.missed = Wake::for_envelope(user, &envelope).or(self.missed.take());
                }
                self.replay_due |= self.sessions.iter().any(|s| s.deliverable);
            }
        }
    }

    /// Stores an envelope she could not have now; with no live session at all, her devices are
    /// to be woken for it (recorded in the same transaction).
    async fn store_for_later(&mut self, envelope: &Envelope) -> Outcome {
        let wake = match &self.owner {
            // A session whose connection is gone but whose close is still on its way counts as
            // gone: that is the phone that just lost its network.
            Owner::User(user)
                if self.settings.wake_offline_users && self.sessions.iter().all(|s| s.outbound.is_closed()) =>
            {
                Wake::for_envelope(user, envelope)
            }
            _ => None,
        };
        let outcome = self.enqueue(envelope, wake.as_ref()).await;
        if let (Outcome::Stored, Some(wake)) = (&outcome, wake) {
            self.wakes.send(WakeSignal::Pending(wake.user));
        }
        outcome
    }

    async fn enqueue(&mut self, envelope: &Envelope, wake: Option<&Wake>) -> Outcome {
        let limit = self.settings.offline_max;
        let stored = match self.queue_len {
            // Her queue's length is known: checked here, appended without a count.
            Some(len) if len >= limit => Ok(BoundedAppend::Full { queue_len: len }),
            Some(len) => {
                let appended = match wake {
                    Some(wake) => self.store.enqueue_waking(&self.queue, envelope, wake).await.map(|_| ()),
                    None => self.store.enqueue(&self.queue, envelope).await.map(|_| ()),
                };
                appended.map(|()| BoundedAppend::Stored { queue_len: len + 1 })
            }
            // Not yet: the store counts it in the transaction that appends.
            None => self.store.append_bounded(&self.queue, envelope, wake, limit).await,
        };
        match stored {
            Ok(BoundedAppend::Stored { queue_len }) => {
                self.queue_len = Some(queue_len);
                ::metrics::counter!(metrics::STORED).increment(1);
                Outcome::Stored
            }
            Ok(BoundedAppend::Full { queue_len }) => {
                tracing::warn!(owner = %self.owner, msg = %envelope.id, "offline queue full");
                self.queue_len = Some(queue_len);
                Outcome::Rejected(Rejection::QueueFull)
            }
            Err(error) => {
                tracing::error!(owner = %self.owner, msg = %envelope.id, %error, "cannot store for later");
                self.queue_len = None;
                Outcome::Failed("the gateway could not store it".into())
            }
        }
    }

    async fn flush_confirmed(&mut self) {
        if self.confirmed.is_empty() {
            return;
        }
        let seqs = std::mem::take(&mut self.confirmed);
        match self.store.dequeue(&self.queue, &seqs).await {
            Ok(()) => {
                self.queue_len = self.queue_len.map(|len| len.saturating_sub(seqs.len() as u64));
            }
            Err(error) => {
                // They were delivered; at worst they are delivered again after a restart.
                tracing::error!(owner = %self.owner, %error, "cannot delete delivered envelopes");
                self.queue_len = None;
            }
        }
    }

    async fn set_presence(&mut self, presence: PresenceBody) -> Outcome {
        let Some(user) = self.me() else { return Outcome::Accepted };
        if presence.show != Show::Unavailable
            && let Err(error) = self.store.save_presence(&user, &presence).await {
                tracing::warn!(owner = %self.owner, %error, "cannot save presence");
            }
        self.broadcast_presence(presence).await;
        Outcome::Accepted
    }

    async fn close(&mut self, session: SessionId) {
        let was_deliverable = self.sessions.iter().any(|s| s.id == session && s.deliverable);
        self.remove_session(session);
        if self.sessions.is_empty() {
            self.broadcast_presence(PresenceBody { show: Show::Unavailable, status: None }).await;
        }
        if was_deliverable && !self.sessions.iter().any(|s| s.deliverable) {
            // Settle what that session had not confirmed before anything newer is stored, so the
            // offline queue keeps the original order.
            while let Some((delivery, delivered)) = self.inflight.next().await {
                self.complete(delivery, delivered).await;
            }
        }
        if self.sessions.is_empty()
            && let Some(wake) = self.missed.take()
        {
            match self.store.record_wake(&wake).await {
                Ok(_) => self.wakes.send(WakeSignal::Pending(wake.user)),
                Err(error) => tracing::error!(owner = %self.owner, msg = %wake.msg, %error, "cannot record a wake"),
            }
        }
    }

    async fn update_roster(&mut self, contact: Address, action: SubscriptionAction, direction: Direction) {
        let Some(user) = self.me() else { return };
        let contact = match contact {
            Address::Remote(remote) => Address::Remote(remote.bare()),
            user => user,
        };
        let item = match self.store.roster_item(&user, &contact).await {
            Ok(item) => item,
            Err(error) => {
                tracing::error!(owner = %self.owner, %error, "cannot read roster");
                roster::RosterItem::new(contact)
            }
        };
        let item = roster::apply(item, action, direction);
        if let Err(error) = self.store.save_roster_item(&user, &item).await {
            tracing::error!(owner = %self.owner, %error, "cannot save roster");
        }
    }

    async fn sent_subscription(&mut self, contact: Address, action: SubscriptionAction) {
        let Some(user) = self.me() else { return };
        self.update_roster(contact.clone(), action, Direction::Sent).await;
        let presence = match action {
            // She lets the contact see her presence: show it now, as it is.
            SubscriptionAction::Subscribed => self.presence.clone(),
            SubscriptionAction::Unsubscribed => Some(PresenceBody { show: Show::Unavailable, status: None }),
            _ => None,
        };
        if let Some(presence) = presence.filter(|p| p.show != Show::Unavailable || action == SubscriptionAction::Unsubscribed) {
            self.submit(Envelope::new(Address::user(user), contact, Body::Presence(presence))).await;
        }
    }

    /// Tells every contact allowed to see her presence that it changed.
    async fn broadcast_presence(&mut self, presence: PresenceBody) {
        let Some(user) = self.me() else { return };
        if self.presence.as_ref() == Some(&presence) {
            return;
        }
        let first_unavailable = self.presence.is_none() && presence.show == Show::Unavailable;
        self.presence = Some(presence.clone());
        if first_unavailable {
            return;
        }
        let roster = match self.store.roster(&user).await {
            Ok(roster) => roster,
            Err(error) => {
                tracing::warn!(owner = %self.owner, %error, "cannot read roster; presence not sent");
                return;
            }
        };
        for item in roster.into_iter().filter(|item| item.from) {
            let envelope = Envelope::new(Address::user(user.clone()), item.contact, Body::Presence(presence.clone()));
            self.submit(envelope).await;
        }
    }

    /// On her return, asks each contact whose presence she may see for it; those online answer
    /// with their presence (for remote contacts, their server does).
    async fn probe_contacts(&mut self) {
        let Some(user) = self.me() else { return };
        let Ok(roster) = self.store.roster(&user).await else { return };
        for item in roster.into_iter().filter(|item| item.to) {
            self.submit(Envelope::new(Address::user(user.clone()), item.contact, Body::Probe)).await;
        }
    }

    async fn answer_probe(&mut self, requester: Address) {
        let Some(user) = self.me() else { return };
        // Silence means unavailable (RFC 6121 §4.3.2 allows either).
        let Some(presence) = self.presence.clone().filter(|p| p.show != Show::Unavailable) else { return };
        let contact = match requester {
            Address::Remote(remote) => Address::Remote(remote.bare()),
            user => user,
        };
        match self.store.roster_item(&user, &contact).await {
            Ok(item) if item.from => {
                self.submit(Envelope::new(Address::user(user), contact, Body::Presence(presence))).await;
            }
            _ => {}
        }
    }

    fn me(&self) -> Option<UserId> {
        match &self.owner {
            Owner::User(user) => Some(user.clone()),
            Owner::Route(_) => None,
        }
    }

    /// Routes an envelope she emits (presence to her contacts); nobody waits for its outcome.
    async fn submit(&mut self, envelope: Envelope) {
        if let Some(router) = self.router.upgrade() {
            let (reply, _) = super::reply::reply();
            let _ = router.send(Command::Submit { envelope: Arc::new(envelope), reply }).await;
        }
    }

    fn remove_session(&mut self, session: SessionId) {
        if let Some(index) = self.sessions.iter().position(|s| s.id == session) {
            let entry = self.sessions.swap_remove(index);
            ::metrics::gauge!(metrics::SESSIONS, "adapter" => entry.adapter).decrement(1.0);
            tracing::debug!(owner = %self.owner, session = %session, "session closed");
        }
    }
}
