use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::reply::{self, SharedOutcome};
use super::resends::{Admission, RecentMessages};
use super::session::{SessionEntry, SessionLease};
use super::{Command, Owner, RouterSettings};
use crate::address::UserId;
use crate::envelope::Envelope;
use crate::id::{MessageId, SessionId};
use crate::metrics;
use crate::outcome::Outcome;
use crate::store::StoreError;
use crate::wake::{WakeSignal, WakeSignals};

#[derive(Debug, thiserror::Error)]
pub enum RouterError {
    #[error("the router has stopped")]
    Stopped,
    #[error("cannot record the user: {0}")]
    Store(#[from] StoreError),
    /// She already has as many live sessions as `limits.sessions_per_user` allows.
    #[error("too many sessions for this user (at most {max}: limits.sessions_per_user)")]
    TooManySessions { max: usize },
}

/// How adapters talk to the router. Cheap to clone.
#[derive(Clone)]
pub struct RouterHandle {
    commands: mpsc::Sender<Command>,
    settings: Arc<RouterSettings>,
    wakes: WakeSignals,
    recent: Arc<RecentMessages>,
}

impl RouterHandle {
    pub(crate) fn new(commands: mpsc::Sender<Command>, settings: Arc<RouterSettings>, wakes: WakeSignals) -> Self {
        Self { commands, settings, wakes, recent: Arc::default() }
    }

    /// For the waking adapter: who is to be woken, and who came back. Only the latest
    /// subscriber receives signals.
    pub fn subscribe_wakes(&self) -> mpsc::UnboundedReceiver<WakeSignal> {
        self.wakes.subscribe()
    }

    pub fn settings(&self) -> &RouterSettings {
        &self.settings
    }

    /// Hands an envelope to the router. Waits only for room in the router's queue; the returned
    /// [`Pending`] resolves once the envelope is delivered, stored or refused.
    ///
    /// Envelopes submitted one after another from one task are routed in that order.
    ///
    /// The command is made before the returned future first waits, so that only it (a few words)
    /// and not the envelope sits in that future, and so in every connection task that awaits one.
    pub fn submit(&self, envelope: Envelope) -> impl Future<Output = Pending> + Send + '_ {
        let (reply, outcome) = reply::reply();
        let command = Command::Submit { envelope: Arc::new(envelope), reply };
        // Yielding the outcome still to come, not waiting for it, is the point of this future.
        #[allow(clippy::async_yields_async)]
        async move {
            // Refused, the command is dropped with its reply, which settles the outcome as
            // retryable.
            let _ = self.commands.send(command).await;
            Pending(outcome)
        }
    }

    /// Like [`Self::submit`], for what a sender names with her own id (a frame's `id`, a stanza's
    /// `id`): a resend of a message she sent lately is answered with the first copy's id and
    /// outcome instead of being routed again (see `resends`). Like `submit`, the returned future
    /// holds the command only.
    pub fn submit_message(&self, client_id: &str, envelope: Envelope) -> impl Future<Output = Submitted> + Send + '_ {
        let admitted = self.admit_message(client_id, envelope);
        self.enqueue(admitted)
    }

    /// Like [`Self::submit_message`], done at once when the router's queue has room (nearly
    /// always); only when it has none does a future come back, to be awaited for it. A connection
    /// then needs no room of its own for the wait, which `submit_message`'s future takes.
    #[allow(clippy::result_large_err)]
    pub fn submit_message_now(
        &self,
        client_id: &str,
        envelope: Envelope,
    ) -> Result<Submitted, impl Future<Output = Submitted> + Send + '_> {
        let mut admitted = self.admit_message(client_id, envelope);
        match admitted.command.take().map(|command| self.commands.try_send(command)) {
            Some(Err(mpsc::error::TrySendError::Full(command))) => {
                admitted.command = Some(command);
                Err(self.enqueue(admitted))
            }
            Some(Err(mpsc::error::TrySendError::Closed(_))) => {
                // The reply is dropped with the command: the shared outcome says retry.
                tracing::debug!(msg = %admitted.msg, "router stopped before the message was routed");
                Ok(admitted.submitted())
            }
            Some(Ok(())) | None => Ok(admitted.submitted()),
        }
    }

    fn admit_message(&self, client_id: &str, envelope: Envelope) -> Admitted {
        match self.recent.admit(client_id, &envelope) {
            Admission::Resend { msg, outcome } => {
                tracing::debug!(msg = %msg, client_id, "resend of a message already routed");
                ::metrics::counter!(metrics::RESENDS).increment(1);
                Admitted { msg, outcome, command: None, resent: Some(envelope) }
            }
            Admission::New { outcome, reply } => {
                let msg = envelope.id.clone();
                let command = Command::Submit { envelope: Arc::new(envelope), reply };
                Admitted { msg, outcome, command: Some(command), resent: None }
            }
        }
    }

    /// Waits for room in the router's queue for an admitted message's command, if it has one.
    async fn enqueue(&self, mut admitted: Admitted) -> Submitted {
        if let Some(command) = admitted.command.take()
            && self.commands.send(command).await.is_err()
        {
            // The reply is dropped with the command: the shared outcome says retry.
            tracing::debug!(msg = %admitted.msg, "router stopped before the message was routed");
        }
        admitted.submitted()
    }

    /// Registers a live connection of `user`, recording her as known. The session receives
    /// nothing until [`SessionLease::set_deliverable`].
    pub async fn open_session(
        &self,
        user: UserId,
        adapter: &'static str,
    ) -> Result<SessionLease, RouterError> {
        self.open(Owner::User(user), adapter).await
    }

    /// Declares that `route` carries every remote address. Until a session is open on it,
    /// envelopes for remote addresses wait in the route's offline queue, in order.
    pub async fn register_route(&self, route: &'static str) -> Result<(), RouterError> {
        self.commands.send(Command::RegisterRoute { route }).await.map_err(|_| RouterError::Stopped)
    }

    /// A live link of `route` (e.g. a connected XMPP component stream). Like a user's session,
    /// it receives nothing until [`SessionLease::set_deliverable`], then first what was queued.
    pub async fn open_route_session(&self, route: &'static str) -> Result<SessionLease, RouterError> {
        self.open(Owner::Route(route), route).await
    }

    async fn open(&self, owner: Owner, adapter: &'static str) -> Result<SessionLease, RouterError> {
        let id = SessionId::next();
        let (outbound_tx, outbound_rx) = super::queue::bounded(self.settings.session_capacity);
        let kick = CancellationToken::new();
        let entry = Box::new(SessionEntry {
            id,
            adapter,
            outbound: outbound_tx,
            kick: kick.clone(),
            deliverable: false,
        });
        let (reply, opened) = oneshot::channel();
        self.commands
            .send(Command::Open {
                owner: owner.clone(),
                entry,
                reply,
            })
            .await
            .map_err(|_| RouterError::Stopped)?;
        // The lease exists before the answer so that a failure below still closes the session.
        let lease = SessionLease::new(id, owner, outbound_rx, kick, self.commands.clone());
        opened.await.map_err(|_| RouterError::Stopped)??;
        Ok(lease)
    }
}

/// The outcome of a submitted envelope, once the router knows it: settled by the router or a
/// mailbox (for a message, resends of it wait for the same one).
pub struct Pending(SharedOutcome);

impl Future for Pending {
    type Output = Outcome;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Outcome> {
        Pin::new(&mut self.0).poll(cx)
    }
}

/// A message the resend record has seen, with the command that routes it unless it is a resend.
struct Admitted {
    msg: MessageId,
    outcome: SharedOutcome,
    command: Option<Command>,
    resent: Option<Envelope>,
}

impl Admitted {
    fn submitted(self) -> Submitted {
        Submitted { msg: self.msg, pending: Pending(self.outcome), resent: self.resent }
    }
}

/// A message handed to the router by [`RouterHandle::submit_message`].
pub struct Submitted {
    /// The gateway's id for it: the first copy's when this was a resend.
    pub msg: MessageId,
    pub pending: Pending,
    /// A resend of a message routed lately: it was not routed again, and comes back for an
    /// adapter whose senders learn of delivery only from the recipient (XMPP receipts).
    pub resent: Option<Envelope>,
}
