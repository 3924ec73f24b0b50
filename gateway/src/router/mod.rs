//! The router: the only owner of routing state.
//!
//! One router task keeps the map from user to mailbox and the set of known users; it never waits
//! on I/O, so one slow user cannot stall the others. Each active user has a mailbox task that
//! serialises everything about her — delivery to her live sessions, her offline queue, her
//! presence — which keeps her traffic in order without locks. Adapters reach the router only
//! through a [`RouterHandle`] (bounded channels) and see each other never.

mod awaiting;
mod handle;
mod mailbox;
mod queue;
mod reply;
mod resends;
mod session;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio_util::task::TaskTracker;

pub use handle::{Pending, RouterError, RouterHandle, Submitted};
pub use resends::{CAPACITY as RESEND_CAPACITY, WINDOW as RESEND_WINDOW};
pub use session::{Delivered, Outbound, SessionLease};

use crate::address::{Address, Domain, UserId};
use crate::envelope::{Body, Envelope, Timestamp};
use crate::metrics;
use crate::outcome::{Outcome, Rejection};
use crate::store::{Store, StoreError};
use crate::wake::WakeSignals;
pub(crate) use mailbox::Owner;
use mailbox::{Mailbox, MailboxCommand};
use reply::Reply;
use session::SessionEntry;

/// Tuning and limits the router applies to every user.
#[derive(Clone, Debug)]
pub struct RouterSettings {
    pub domain: Domain,
    /// Envelopes queued per user mailbox before senders are told `unavailable`.
    pub mailbox_capacity: usize,
    /// Envelopes queued per live session before the session counts as a slow consumer.
    pub session_capacity: usize,
    /// How long a session may leave its queue full before it is cut off.
    pub slow_consumer_timeout: Duration,
    pub offline_max: u64,
    pub offline_ttl: Duration,
    /// How long an idle mailbox of an offline user lingers before it is dropped.
    pub mailbox_idle: Duration,
    /// Answer every subscription request with `subscribed` on the user's behalf.
    pub auto_accept_subscriptions: bool,
    /// Live sessions per user; one more is refused.
    pub max_sessions_per_user: usize,
    /// Record a wake for messages and subscription requests stored while their user has no live
    /// session (a waking adapter is configured).
    pub wake_offline_users: bool,
}

impl RouterSettings {
    pub fn new(domain: Domain) -> Self {
        Self {
            domain,
            mailbox_capacity: 1024,
            session_capacity: 256,
            slow_consumer_timeout: Duration::from_secs(10),
            offline_max: 10_000,
            offline_ttl: Duration::from_secs(30 * 86_400),
            mailbox_idle: Duration::from_secs(30),
            auto_accept_subscriptions: false,
            wake_offline_users: false,
            max_sessions_per_user: 16,
        }
    }
}

/// Small on purpose: every send to the router keeps one in its future, and so in the task of each
/// connection that awaits it. The envelope is shared from here on (mailbox, sessions), so
/// routing it allocates nothing more.
pub(crate) enum Command {
    Submit {
        envelope: Arc<Envelope>,
        reply: Reply,
    },
    Open {
        owner: Owner,
        entry: Box<SessionEntry>,
        reply: oneshot::Sender<Result<(), RouterError>>,
    },
    ToMailbox {
        owner: Owner,
        command: MailboxCommand,
    },
    /// From now on, envelopes for remote addresses go to this route's mailbox.
    RegisterRoute {
        route: &'static str,
    },
    /// A mailbox that had nothing to do for a while; `processed` lets the router tell whether
    /// something is still on its way to it.
    Idle {
        owner: Owner,
        processed: u64,
    },
}

struct MailboxRef {
    commands: queue::Sender<MailboxCommand>,
    sent: u64,
}

/// Loads the known users, drops expired offline envelopes and starts the router task.
pub async fn spawn(
    store: Arc<dyn Store>,
    settings: RouterSettings,
    tracker: &TaskTracker,
) -> Result<RouterHandle, StoreError> {
    let known: HashSet<UserId> = store.known_users().await?.into_iter().collect();
    let cutoff = Timestamp::now().0 - i64::try_from(settings.offline_ttl.as_millis()).unwrap_or(i64::MAX);
    let expired = store.expire_queued(Timestamp(cutoff)).await?;
    if expired > 0 {
        tracing::info!(expired, "dropped offline envelopes older than limits.offline_ttl");
    }
    let settings = Arc::new(settings);
    let (commands, inbox) = mpsc::channel(4096);
    let wakes = WakeSignals::default();
    let router = Router {
        store,
        settings: settings.clone(),
        wakes: wakes.clone(),
        known,
        mailboxes: HashMap::new(),
        remote_route: None,
        commands: commands.downgrade(),
        tracker: tracker.clone(),
        queue_depth: ::metrics::gauge!(metrics::ROUTER_QUEUE),
        mailbox_depth: ::metrics::gauge!(metrics::MAILBOX_QUEUE),
    };
    tracker.spawn(router.run(inbox));
    Ok(RouterHandle::new(commands, settings, wakes))
}

struct Router {
    store: Arc<dyn Store>,
    settings: Arc<RouterSettings>,
    wakes: WakeSignals,
    known: HashSet<UserId>,
    mailboxes: HashMap<Owner, MailboxRef>,
    /// The route that carries remote addresses, once a federating adapter registered it.
    remote_route: Option<&'static str>,
    /// Weak, so the router's own copy does not keep it alive once every adapter is gone.
    commands: mpsc::WeakSender<Command>,
    tracker: TaskTracker,
    /// Looked up once: these change with every command.
    queue_depth: ::metrics::Gauge,
    mailbox_depth: ::metrics::Gauge,
}

impl Router {
    /// Runs until every [`RouterHandle`] is gone: at shutdown the adapters drain their in-flight
    /// work through the router first, then drop their handles.
    async fn run(mut self, mut inbox: mpsc::Receiver<Command>) {
        while let Some(command) = inbox.recv().await {
            self.queue_depth.set(inbox.len() as f64);
            self.handle(command);
        }
        tracing::debug!("router stopped");
    }

    fn handle(&mut self, command: Command) {
        match command {
            Command::Submit { envelope, reply } => self.route(envelope, reply),
            Command::Open { owner, entry, reply } => {
                let newly_known = match &owner {
                    Owner::User(user) => self.known.insert(user.clone()),
                    Owner::Route(_) => false,
                };
                self.forward(
                    owner,
                    MailboxCommand::Open {
                        entry,
                        newly_known,
                        reply,
                    },
                );
            }
            Command::ToMailbox { owner, command } => self.forward(owner, command),
            Command::RegisterRoute { route } => self.remote_route = Some(route),
            Command::Idle { owner, processed } => {
                let keep = matches!(owner, Owner::Route(_));
                if !keep && self.mailboxes.get(&owner).is_some_and(|m| m.sent == processed) {
                    // Dropping the sender ends the mailbox task once it has read everything.
                    self.mailboxes.remove(&owner);
                }
            }
        }
    }

    fn route(&mut self, envelope: Arc<Envelope>, reply: Reply) {
        let to = match &envelope.to {
            Address::User { user } => user.clone(),
            Address::Remote(_) => {
                let Some(route) = self.remote_route else {
                    reply.send(Outcome::Rejected(Rejection::NoRoute));
                    return;
                };
                self.note_sent_subscription(&envelope, None);
                self.forward(Owner::Route(route), MailboxCommand::Deliver { envelope, reply });
                return;
            }
        };
        if matches!(envelope.body, Body::Device(_)) && envelope.from.as_user() != Some(&to) {
            reply.send(Outcome::Rejected(Rejection::Forbidden(
                "devices are registered by their owner".into(),
            )));
            return;
        }
        if !self.known.contains(&to) {
            reply.send(Outcome::Rejected(Rejection::UnknownUser));
            return;
        }
        self.note_sent_subscription(&envelope, Some(&to));
        self.forward(Owner::User(to), MailboxCommand::Deliver { envelope, reply });
    }

    /// A subscription stanza changes its sender's roster too; her mailbox keeps it.
    fn note_sent_subscription(&mut self, envelope: &Envelope, to: Option<&UserId>) {
        if let (Body::Subscription { action }, Some(sender)) = (&envelope.body, envelope.from.as_user())
            && Some(sender) != to {
                let command = MailboxCommand::Sent { contact: Box::new(envelope.to.clone()), action: *action };
                self.forward(Owner::User(sender.clone()), command);
            }
    }

    fn forward(&mut self, owner: Owner, command: MailboxCommand) {
        let user = owner.clone();
        let mailbox = self
            .mailboxes
            .entry(owner)
            .or_insert_with(|| {
                let (commands, inbox) = queue::bounded(self.settings.mailbox_capacity);
                let mailbox = Mailbox::new(
                    user.clone(),
                    self.store.clone(),
                    self.settings.clone(),
                    self.commands.clone(),
                    self.wakes.clone(),
                    self.mailbox_depth.clone(),
                );
                self.tracker.spawn(mailbox.run(inbox));
                MailboxRef { commands, sent: 0 }
            });
        match mailbox.commands.try_send(command) {
            Ok(()) => {
                mailbox.sent += 1;
                self.mailbox_depth.increment(1.0);
            }
            Err(queue::TrySendError::Full(command) | queue::TrySendError::Closed(command)) => {
                // Policy: chat is never dropped silently. The sender hears `unavailable` and may
                // retry; session bookkeeping goes in beyond the capacity so it is never lost.
                match command {
                    MailboxCommand::Deliver { reply, envelope } => {
                        // Counted, and logged below warning: under overload this happens per message.
                        ::metrics::counter!(metrics::ERRORS, "adapter" => "router", "code" => "mailbox-full").increment(1);
                        tracing::debug!(user = %user, msg = %envelope.id, "mailbox full, refusing");
                        reply.send(Outcome::Retryable("the recipient is overloaded".into()));
                    }
                    // In order, beyond the capacity: there is one per session opened or closed.
                    other => {
                        if mailbox.commands.force_send(other).is_ok() {
                            mailbox.sent += 1;
                            self.mailbox_depth.increment(1.0);
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
