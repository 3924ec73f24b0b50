use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::session::{SessionEntry, SessionLease};
use super::{Command, Owner, RouterSettings};
use crate::address::UserId;
use crate::envelope::Envelope;
use crate::id::SessionId;
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
}

impl RouterHandle {
    pub(crate) fn new(commands: mpsc::Sender<Command>, settings: Arc<RouterSettings>, wakes: WakeSignals) -> Self {
        Self { commands, settings, wakes }
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
    pub async fn submit(&self, envelope: Envelope) -> Pending {
        let (reply, outcome) = oneshot::channel();
        let command = Command::Submit { envelope, reply };
        if self.commands.send(command).await.is_err() {
            return Pending::ready(Outcome::Retryable("the gateway is shutting down".into()));
        }
        Pending { outcome: Some(outcome), ready: None }
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
        let (outbound_tx, outbound_rx) = mpsc::channel(self.settings.session_capacity);
        let kick = CancellationToken::new();
        let entry = SessionEntry {
            id,
            adapter,
            outbound: outbound_tx,
            kick: kick.clone(),
            deliverable: false,
        };
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

/// The outcome of a submitted envelope, once the router knows it.
pub struct Pending {
    outcome: Option<oneshot::Receiver<Outcome>>,
    ready: Option<Outcome>,
}

impl Pending {
    fn ready(outcome: Outcome) -> Self {
        Self { outcome: None, ready: Some(outcome) }
    }
}

impl Future for Pending {
    type Output = Outcome;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Outcome> {
        if let Some(outcome) = self.ready.take() {
            return Poll::Ready(outcome);
        }
        match self.outcome.as_mut() {
            Some(receiver) => Pin::new(receiver).poll(cx).map(|result| {
                // A resolver dropped unresolved means nobody took responsibility: retry.
                result.unwrap_or_else(|_| Outcome::Retryable("the gateway is shutting down".into()))
            }),
            None => Poll::Ready(Outcome::Retryable("already resolved".into())),
        }
    }
}
