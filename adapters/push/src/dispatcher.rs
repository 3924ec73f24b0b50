//! Decides, per device, when to notify, and acts on what each provider answers.
//!
//! The outbox (in the store) says what waits for each user; each device remembers what it was
//! last told and when. A device is notified when something newer than it was told about waits
//! and its coalescing window has passed since its last notification; a burst within the window
//! becomes one notification at the window's end, carrying the count and the newest sender.
//! Everything a decision needs is read back from the store, so a restart resumes where it was.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use switchboard_config::PushContent;
use switchboard_gateway::health::Health;
use switchboard_gateway::wake::{Notified, WakeLookup, WakeOutbox, WakeSeq, WakeSignal, WakeSummary, WakeTarget};
use switchboard_gateway::{DeviceRegistration, Domain, Platform, Timestamp, UserId};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::{AbortHandle, Id as TaskId, JoinSet};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::notification::Notification;
use crate::provider::{Delivery, Provider};
use crate::timers::Timers;

/// Requests in flight per provider: enough to keep a provider's pipe full, few enough not to
/// look like abuse.
pub const MAX_IN_FLIGHT: usize = 64;
/// Attempts per notification when the provider keeps answering "later".
const MAX_ATTEMPTS: u32 = 6;
const FIRST_RETRY: Duration = Duration::from_secs(1);
/// However long a provider asks us to wait, a notification older than this is not worth much.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(600);
const FIRST_AUTH_PAUSE: Duration = Duration::from_secs(30);
const MAX_AUTH_PAUSE: Duration = Duration::from_secs(600);
/// Consecutive "later" answers after which a provider counts as down in `/healthz`.
const UNHEALTHY_AFTER: u32 = 3;
const STORE_RETRY: Duration = Duration::from_secs(5);
/// Lookups of due users' outboxes and devices under way at once. Each reads every user that was
/// due when it started, in two store round trips, so under load the batches grow instead of the
/// round trips.
const MAX_LOOKUPS: usize = 4;
/// Users per lookup, to bound the queries' size and the time before the first of them is sent.
const USERS_PER_LOOKUP: usize = 512;
/// At shutdown, sends already on the wire get this long to report, so they are not repeated.
const SHUTDOWN_SETTLE: Duration = Duration::from_secs(2);

pub const PUSH_TOTAL: &str = "switchboard_push_total";

type DeviceKey = (Platform, String);

pub struct Policy {
    pub window: Duration,
    pub content: PushContent,
    pub domain: Domain,
}

/// One configured provider, and whether it is paused.
struct Slot {
    provider: Arc<dyn Provider>,
    permits: Arc<Semaphore>,
    paused_until: Option<Instant>,
    auth_pause: Duration,
    failures_in_a_row: u32,
}

impl Slot {
    fn paused(&self) -> bool {
        self.paused_until.is_some_and(|until| until > Instant::now())
    }
}

/// Per-device state kept in memory, always with its user so it can be dropped when she is back.
struct Backoff {
    user: UserId,
    attempts: u32,
    retry_at: Instant,
}

/// What the store should say about a device but could not be written yet: applied on top of
/// the store's answer, so a failing write cannot turn into a resend loop.
struct Told {
    user: UserId,
    covered: WakeSeq,
    at: Timestamp,
}

struct InFlight {
    user: UserId,
    abort: AbortHandle,
}

/// A batch of marks and whether the store took it.
type Written = (Vec<Notified>, Result<(), String>);

/// What the store says about due users.
type Lookup = (Vec<UserId>, Result<Vec<WakeLookup>, String>);

struct Report {
    user: UserId,
    device: DeviceRegistration,
    covered: WakeSeq,
    delivery: Delivery,
}

pub struct Dispatcher {
    outbox: WakeOutbox,
    slots: HashMap<Platform, Slot>,
    policy: Policy,
    health: Health,
    timers: Timers,
    inflight: HashMap<DeviceKey, InFlight>,
    tasks: HashMap<TaskId, DeviceKey>,
    backoff: HashMap<DeviceKey, Backoff>,
    told: HashMap<DeviceKey, Told>,
    /// Settled sends to record, in one transaction per batch of answers.
    marks: Vec<Notified>,
    /// The batch being written, beside the loop: one write at a time, and the loop goes on
    /// settling answers and starting sends meanwhile (what it settles waits for the next one).
    marking: Option<tokio::task::JoinHandle<Written>>,
    /// Users with a send in flight, and how many.
    busy: HashMap<UserId, usize>,
    /// Users for whom a wake arrived while a send was in flight: visited again once it settles.
    dirty: HashSet<UserId>,
    /// Users being read from the store; a user is read by one lookup at a time, and never while
    /// a send of hers is in flight, so what is read is never older than what was sent.
    looking_up: HashSet<UserId>,
    lookups: JoinSet<Lookup>,
    lookup_ids: HashMap<TaskId, Vec<UserId>>,
    /// Due users waiting for the next lookup, in the order they became due.
    waiting: indexmap::IndexSet<UserId>,
    sends: JoinSet<Report>,
}

impl Dispatcher {
    pub fn new(outbox: WakeOutbox, providers: crate::Providers, policy: Policy, health: Health) -> Self {
        let slots = providers
            .into_iter()
            .map(|(platform, provider)| {
                let slot = Slot {
                    provider,
                    permits: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
                    paused_until: None,
                    auth_pause: FIRST_AUTH_PAUSE,
                    failures_in_a_row: 0,
                };
                (platform, slot)
            })
            .collect();
        Self {
            outbox,
            slots,
            policy,
            health,
            timers: Timers::default(),
            inflight: HashMap::new(),
            tasks: HashMap::new(),
            backoff: HashMap::new(),
            told: HashMap::new(),
            marks: Vec::new(),
            marking: None,
            busy: HashMap::new(),
            dirty: HashSet::new(),
            looking_up: HashSet::new(),
            lookups: JoinSet::new(),
            lookup_ids: HashMap::new(),
            waiting: indexmap::IndexSet::new(),
            sends: JoinSet::new(),
        }
    }

    pub async fn run(mut self, mut signals: mpsc::UnboundedReceiver<WakeSignal>, shutdown: CancellationToken) {
        // Subscribed before reading the outbox, so nothing recorded in between is missed.
        self.resume().await;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                Some(signal) = signals.recv() => match signal {
                    // Her send in flight comes back first; then she is visited again.
                    WakeSignal::Pending(user) if self.busy.contains_key(&user) || self.looking_up.contains(&user) => {
                        self.dirty.insert(user);
                    }
                    WakeSignal::Pending(user) => self.timers.schedule(user, Instant::now()),
                    WakeSignal::Online(user) => self.forget(&user),
                },
                user = self.timers.next_due() => self.look_up(user),
                Some(joined) = self.lookups.join_next_with_id(), if !self.lookups.is_empty() => match joined {
                    Ok((id, (users, found))) => {
                        self.lookup_ids.remove(&id);
                        self.found(users, found);
                    }
                    // A bug, not the store: they are looked up again later.
                    Err(error) => {
                        for user in self.lookup_ids.remove(&error.id()).unwrap_or_default() {
                            self.looking_up.remove(&user);
                            self.timers.schedule(user, Instant::now() + STORE_RETRY);
                        }
                    }
                },
                Some(joined) = self.sends.join_next_with_id(), if !self.sends.is_empty() => {
                    self.joined(joined).await;
                    // Every answer already in is settled before one write records them all.
                    while let Some(joined) = self.sends.try_join_next_with_id() {
                        self.joined(joined).await;
                    }
                }
                written = written(&mut self.marking) => {
                    self.marking = None;
                    self.marked(written);
                }
            }
            self.start_lookups();
            self.start_marking();
        }
        let deadline = Instant::now() + SHUTDOWN_SETTLE;
        while let Ok(Some(joined)) = tokio::time::timeout_at(deadline, self.sends.join_next_with_id()).await {
            self.joined(joined).await;
        }
        // The write under way, then one for what settled meanwhile.
        self.finish_marking().await;
        self.start_marking();
        self.finish_marking().await;
    }

    async fn finish_marking(&mut self) {
        if let Some(marking) = self.marking.take() {
            let written = marking.await.map_err(|error| error.to_string());
            self.marked(written);
        }
    }

    /// Writes what was settled since the last write, unless a write is under way.
    fn start_marking(&mut self) {
        if self.marking.is_some() || self.marks.is_empty() {
            return;
        }
        let marks = std::mem::take(&mut self.marks);
        let outbox = self.outbox.clone();
        self.marking = Some(tokio::spawn(async move {
            let result = outbox.mark_notified(&marks).await.map_err(|error| error.to_string());
            (marks, result)
        }));
    }

    fn marked(&mut self, written: Result<Written, String>) {
        match written {
            Ok((marks, Ok(()))) => self.forget_told(marks),
            // Kept in memory, so the devices are not notified again, and written with the next batch.
            Ok((mut marks, Err(error))) => {
                tracing::error!(devices = marks.len(), %error, "cannot record notifications; kept in memory");
                marks.append(&mut self.marks);
                self.marks = marks;
            }
            Err(error) => tracing::error!(%error, "recording notifications failed; kept in memory until a restart"),
        }
    }

    /// The store now says what memory did.
    fn forget_told(&mut self, marks: Vec<Notified>) {
        for mark in marks {
            let key = (mark.platform, mark.token);
            if self.told.get(&key).is_some_and(|t| t.covered == mark.covered) {
                self.told.remove(&key);
            }
        }
    }

    async fn resume(&mut self) {
        match self.outbox.waiting_users().await {
            Ok(users) => {
                if !users.is_empty() {
                    tracing::info!(users = users.len(), "resuming notifications recorded before the restart");
                }
                for user in users {
                    self.timers.schedule(user, Instant::now());
                }
            }
            Err(error) => tracing::error!(%error, "cannot read the push outbox; it is read again on the next message"),
        }
    }

    /// She is online: nothing more goes to her phones, not even what waits for a permit.
    fn forget(&mut self, user: &UserId) {
        self.timers.cancel(user);
        self.dirty.remove(user);
        // A lookup on its way may have read the outbox before she came back: its answer is dropped.
        self.looking_up.remove(user);
        self.waiting.shift_remove(user);
        for flight in self.inflight.values().filter(|f| &f.user == user) {
            flight.abort.abort();
        }
        self.backoff.retain(|_, b| &b.user != user);
        self.told.retain(|_, t| &t.user != user);
    }

    /// Marks her to be read from the store with the next lookup, unless that is already under way
    /// or a send of hers is in flight (she is then visited again when it settles).
    fn look_up(&mut self, user: UserId) {
        if self.looking_up.contains(&user) || self.busy.contains_key(&user) {
            self.dirty.insert(user);
            return;
        }
        self.waiting.insert(user);
    }

    /// Reads the outbox and devices of waiting users in the background, while lookups are free.
    fn start_lookups(&mut self) {
        while !self.waiting.is_empty() && self.lookups.len() < MAX_LOOKUPS {
            let take = self.waiting.len().min(USERS_PER_LOOKUP);
            let users: Vec<UserId> = self.waiting.drain(..take).collect();
            self.looking_up.extend(users.iter().cloned());
            let outbox = self.outbox.clone();
            let batch = users.clone();
            let handle = self.lookups.spawn(async move {
                let found = outbox.look_up(&batch).await.map_err(|e| e.to_string());
                (batch, found)
            });
            self.lookup_ids.insert(handle.id(), users);
        }
    }

    fn found(&mut self, users: Vec<UserId>, found: Result<Vec<WakeLookup>, String>) {
        match found {
            Ok(lookups) => {
                let mut waiting: HashMap<UserId, WakeLookup> =
                    lookups.into_iter().map(|lookup| (lookup.summary.newest.user.clone(), lookup)).collect();
                for user in users {
                    let lookup = waiting.remove(&user);
                    self.found_one(user, Ok(lookup));
                }
            }
            Err(error) => {
                for user in users {
                    self.found_one(user, Err(&error));
                }
            }
        }
    }

    fn found_one(&mut self, user: UserId, found: Result<Option<WakeLookup>, &str>) {
        if !self.looking_up.remove(&user) {
            return;
        }
        match found {
            Ok(Some(WakeLookup { summary, targets })) => {
                for target in targets {
                    match self.due_at(target, &summary) {
                        Some((at, _)) if at > Instant::now() => self.timers.schedule(user.clone(), at),
                        Some((_, target)) => self.send(&user, target.device, &summary),
                        None => {}
                    }
                }
            }
            // She came back, or nothing was ever recorded.
            Ok(None) => {
                self.backoff.retain(|_, b| b.user != user);
                self.told.retain(|_, t| t.user != user);
            }
            Err(error) => {
                tracing::warn!(%user, %error, "cannot read the push outbox or devices; retrying");
                self.timers.schedule(user.clone(), Instant::now() + STORE_RETRY);
            }
        }
        if !self.busy.contains_key(&user) && self.dirty.remove(&user) {
            self.timers.schedule(user, Instant::now());
        }
    }

    /// When `target` should be told about `summary`; `None` when it has nothing new to hear or
    /// a notification to it is on its way.
    fn due_at(&self, mut target: WakeTarget, summary: &WakeSummary) -> Option<(Instant, WakeTarget)> {
        let key = (target.device.platform, target.device.token.clone());
        if let Some(told) = self.told.get(&key)
            && told.covered >= target.covered
        {
            target.covered = told.covered;
            target.notified_at = Some(told.at);
        }
        if target.covered >= summary.newest_seq || self.inflight.contains_key(&key) {
            return None;
        }
        let Some(slot) = self.slots.get(&target.device.platform) else {
            tracing::debug!(platform = target.device.platform.as_str(), "no provider configured for this device");
            return None;
        };
        let now = Instant::now();
        let mut due = now;
        if let Some(paused) = slot.paused_until {
            due = due.max(paused);
        }
        if let Some(backoff) = self.backoff.get(&key) {
            due = due.max(backoff.retry_at);
        }
        if let Some(notified) = target.notified_at {
            let window_ms = i64::try_from(self.policy.window.as_millis()).unwrap_or(i64::MAX);
            let wait_ms = notified.0.saturating_add(window_ms).saturating_sub(Timestamp::now().0);
            if wait_ms > 0 {
                // Capped: a clock stepped back (or another node's) must not silence a phone.
                let wait = Duration::from_millis(wait_ms.unsigned_abs()).min(self.policy.window);
                due = due.max(now + wait);
            }
        }
        Some((due, target))
    }

    fn send(&mut self, user: &UserId, device: DeviceRegistration, summary: &WakeSummary) {
        let Some(slot) = self.slots.get(&device.platform) else { return };
        let notification = Notification::new(summary, self.policy.content, &self.policy.domain);
        let provider = slot.provider.clone();
        let permits = slot.permits.clone();
        let key = (device.platform, device.token.clone());
        let (owner, covered) = (user.clone(), summary.newest_seq);
        let abort = self.sends.spawn(async move {
            let delivery = match permits.acquire_owned().await {
                Ok(_permit) => provider.send(&device, &notification).await,
                Err(_) => Delivery::Retry { after: None, reason: "shutting down".into() },
            };
            Report { user: owner, device, covered, delivery }
        });
        self.tasks.insert(abort.id(), key.clone());
        self.inflight.insert(key, InFlight { user: user.clone(), abort });
        *self.busy.entry(user.clone()).or_default() += 1;
    }

    fn landed(&mut self, key: &DeviceKey) {
        if let Some(flight) = self.inflight.remove(key)
            && let Some(count) = self.busy.get_mut(&flight.user)
        {
            *count -= 1;
            if *count == 0 {
                self.busy.remove(&flight.user);
            }
        }
    }

    async fn joined(&mut self, joined: Result<(TaskId, Report), tokio::task::JoinError>) {
        match joined {
            Ok((id, report)) => {
                self.tasks.remove(&id);
                self.settle(report).await;
            }
            // Aborted because she came online, or a bug in a provider: the device must not
            // stay marked as in flight.
            Err(error) => {
                let Some(key) = self.tasks.remove(&error.id()) else { return };
                let user = self.inflight.get(&key).map(|f| f.user.clone());
                self.landed(&key);
                if let (Some(user), true) = (user, error.is_panic()) {
                    tracing::error!(%user, platform = key.0.as_str(), "a notification send panicked");
                    self.timers.schedule(user, Instant::now() + STORE_RETRY);
                }
            }
        }
    }

    async fn settle(&mut self, report: Report) {
        let Report { user, device, covered, delivery } = report;
        let key = (device.platform, device.token.clone());
        self.landed(&key);
        // Something newer may have arrived while this one was on its way.
        let mut next = self.dirty.remove(&user).then(Instant::now);
        let Some(slot) = self.slots.get_mut(&device.platform) else { return };
        let provider = slot.provider.name();
        let platform = device.platform.as_str();
        match delivery {
            Delivery::Sent => {
                self.backoff.remove(&key);
                slot.auth_pause = FIRST_AUTH_PAUSE;
                slot.failures_in_a_row = 0;
                self.health.set(provider, true);
                count(provider, "sent");
                tracing::debug!(%user, platform, "notified");
                self.note_notified(&user, &device, covered);
            }
            Delivery::DeviceGone(reason) => {
                self.backoff.remove(&key);
                count(provider, "device_removed");
                tracing::info!(%user, platform, %reason, "device removed: its provider says the token is gone");
                if let Err(error) = self.outbox.remove_device(device.platform, &device.token).await {
                    tracing::error!(%user, platform, %error, "cannot remove a dead device; not notifying it");
                    self.told.insert(key, Told { user: user.clone(), covered: WakeSeq(i64::MAX), at: Timestamp::now() });
                }
            }
            Delivery::Retry { after, reason } => {
                slot.failures_in_a_row += 1;
                if slot.failures_in_a_row >= UNHEALTHY_AFTER {
                    self.health.set(provider, false);
                }
                let attempts = self.backoff.get(&key).map_or(0, |b| b.attempts) + 1;
                if attempts >= MAX_ATTEMPTS {
                    self.backoff.remove(&key);
                    count(provider, "failed");
                    tracing::warn!(%user, platform, attempts, %reason, "giving up on a notification");
                    self.note_notified(&user, &device, covered);
                } else {
                    // Never sooner than the provider asked, never sooner than our own backoff.
                    let delay = after.unwrap_or_default().max(exponential(attempts)).min(MAX_RETRY_DELAY) + jitter();
                    let retry_at = Instant::now() + delay;
                    if after.is_some() {
                        // Retry-After speaks for the provider, not only for this device.
                        slot.paused_until = Some(slot.paused_until.map_or(retry_at, |p| p.max(retry_at)));
                    }
                    count(provider, "retried");
                    tracing::debug!(%user, platform, attempts, ?delay, %reason, "provider asks for later");
                    self.backoff.insert(key, Backoff { user: user.clone(), attempts, retry_at });
                    next = Some(retry_at);
                }
            }
            Delivery::Unauthorized(reason) => {
                // Requests in flight when the credentials broke all come back refused: one
                // incident pauses (and doubles the pause) once.
                if !slot.paused() {
                    slot.paused_until = Some(Instant::now() + slot.auth_pause);
                    slot.auth_pause = (slot.auth_pause * 2).min(MAX_AUTH_PAUSE);
                    tracing::error!(provider, %reason, "credentials refused; fix the configuration. Paused");
                }
                self.health.set(provider, false);
                count(provider, "unauthorized");
                next = slot.paused_until.or(next);
            }
            Delivery::Refused(reason) => {
                self.backoff.remove(&key);
                count(provider, "failed");
                tracing::warn!(%user, platform, %reason, "notification refused by the provider");
                self.note_notified(&user, &device, covered);
            }
        }
        if let Some(next) = next {
            self.timers.schedule(user, next);
        }
    }

    /// What the device was told: applied at once in memory, written with the batch.
    fn note_notified(&mut self, user: &UserId, device: &DeviceRegistration, covered: WakeSeq) {
        let at = Timestamp::now();
        let key = (device.platform, device.token.clone());
        self.told.insert(key, Told { user: user.clone(), covered, at });
        self.marks.push(Notified { user: user.clone(), platform: device.platform, token: device.token.clone(), covered, at });
    }
}

/// The write under way, once it is done; never resolves while there is none.
async fn written(marking: &mut Option<tokio::task::JoinHandle<Written>>) -> Result<Written, String> {
    match marking {
        Some(handle) => handle.await.map_err(|error| error.to_string()),
        None => std::future::pending().await,
    }
}

fn count(provider: &'static str, result: &'static str) {
    metrics::counter!(PUSH_TOTAL, "provider" => provider, "result" => result).increment(1);
}

/// 1 s, 2 s, 4 s… for the first, second, third retry.
fn exponential(attempts: u32) -> Duration {
    FIRST_RETRY.saturating_mul(1 << attempts.saturating_sub(1).min(10))
}

/// Spreads retries so devices throttled together do not come back together.
fn jitter() -> Duration {
    Duration::from_millis(rand::random_range(0..250))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use futures::future::BoxFuture;
    use switchboard_gateway::store::{QueueName, SqlStore, Store};
    use switchboard_gateway::wake::Wake;
    use switchboard_gateway::{Address, Body, DeviceAction, Envelope, MessageBody, MessageKind};

    use super::*;

    /// A provider that takes a while per request and remembers how many it had at once.
    #[derive(Default)]
    struct Slow {
        now: AtomicUsize,
        most: AtomicUsize,
        done: AtomicUsize,
    }

    impl Provider for Slow {
        fn name(&self) -> &'static str {
            "push.fcm"
        }

        fn check(&self) -> BoxFuture<'_, Result<(), String>> {
            Box::pin(async { Ok(()) })
        }

        fn send<'a>(&'a self, _: &'a DeviceRegistration, _: &'a Notification) -> BoxFuture<'a, Delivery> {
            Box::pin(async move {
                let now = self.now.fetch_add(1, Ordering::SeqCst) + 1;
                self.most.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(30)).await;
                self.now.fetch_sub(1, Ordering::SeqCst);
                self.done.fetch_add(1, Ordering::SeqCst);
                Delivery::Sent
            })
        }
    }

    #[tokio::test]
    async fn a_provider_never_has_more_than_its_share_of_requests_in_flight() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(SqlStore::open_embedded(dir.path()).await.expect("store"));
        // Users keep at most 20 devices: several users, all offline, each with a message.
        let users: Vec<UserId> = (0..7).map(|n| UserId::parse(&format!("user{n}")).expect("valid")).collect();
        let per_user = 20;
        let devices = users.len() * per_user;
        assert!(devices > MAX_IN_FLIGHT * 2);
        for user in &users {
            store.ensure_user(user).await.expect("user");
            for n in 0..per_user {
                let device = DeviceRegistration {
                    action: DeviceAction::Register,
                    platform: Platform::Fcm,
                    token: format!("{user}-token-{n}"),
                    app: None,
                    os: None,
                };
                store.register_device(user, &device).await.expect("device");
            }
            let body = MessageBody { body: "hi".into(), thread: None, subject: None, kind: MessageKind::Chat };
            let envelope =
                Envelope::new(Address::user(UserId::parse("alice").expect("valid")), Address::user(user.clone()), Body::Message(body));
            let wake = Wake::for_envelope(user, &envelope).expect("a message wakes");
            store.enqueue_waking(&QueueName::user(user), &envelope, &wake).await.expect("stored");
        }

        let slow = Arc::new(Slow::default());
        let policy = Policy { window: Duration::from_secs(30), content: PushContent::Sender, domain: Domain::new("d") };
        let store: Arc<dyn Store> = store;
        let dispatcher = Dispatcher::new(WakeOutbox::new(store), vec![(Platform::Fcm, slow.clone())], policy, Health::default());
        let (signals, receiver) = mpsc::unbounded_channel();
        let shutdown = CancellationToken::new();
        let running = tokio::spawn(dispatcher.run(receiver, shutdown.clone()));
        for user in users {
            signals.send(WakeSignal::Pending(user)).expect("running");
        }

        let deadline = Instant::now() + Duration::from_secs(20);
        while slow.done.load(Ordering::SeqCst) < devices {
            assert!(Instant::now() < deadline, "only {} of {devices} notified", slow.done.load(Ordering::SeqCst));
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(slow.most.load(Ordering::SeqCst), MAX_IN_FLIGHT, "bounded, and the bound is used");
        shutdown.cancel();
        running.await.expect("dispatcher ends");
        assert_eq!(slow.done.load(Ordering::SeqCst), devices, "one notification per device");
    }
}
