//! What an adapter holds for one live connection of a user, and what flows to it.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::Command;
use super::queue;
use super::mailbox::MailboxCommand;
use super::mailbox::Owner;
use crate::address::UserId;
use crate::envelope::Envelope;
use crate::id::SessionId;

/// An envelope for a session to write to its client.
#[derive(Debug)]
pub struct Outbound {
    pub envelope: Arc<Envelope>,
    /// Present when the sender waits for proof of delivery: resolve it once the client has the
    /// frame (written to a WebSocket, PUBACKed over MQTT QoS 1). Dropping it unresolved means
    /// "not delivered", and the router keeps the envelope for later.
    pub delivered: Option<Delivered>,
}

/// Proof of delivery for one [`Outbound`].
#[derive(Debug)]
pub struct Delivered(oneshot::Sender<()>);

impl Delivered {
    pub(crate) fn new() -> (Self, oneshot::Receiver<()>) {
        let (tx, rx) = oneshot::channel();
        (Self(tx), rx)
    }

    pub fn confirm(self) {
        let _ = self.0.send(());
    }
}

/// The router's side of a session.
pub(crate) struct SessionEntry {
    pub id: SessionId,
    pub adapter: &'static str,
    pub outbound: queue::Sender<Outbound>,
    pub kick: CancellationToken,
    pub deliverable: bool,
}

/// A live connection of a user, registered with the router. Dropping it closes the session.
pub struct SessionLease {
    pub id: SessionId,
    owner: Owner,
    pub outbound: queue::Receiver<Outbound>,
    kick: CancellationToken,
    commands: mpsc::Sender<Command>,
}

impl SessionLease {
    pub(crate) fn new(
        id: SessionId,
        owner: Owner,
        outbound: queue::Receiver<Outbound>,
        kick: CancellationToken,
        commands: mpsc::Sender<Command>,
    ) -> Self {
        Self {
            id,
            owner,
            outbound,
            kick,
            commands,
        }
    }

    /// From now on the session receives the user's traffic, starting with what waited for her
    /// in the offline queue. A WebSocket is deliverable at once; an MQTT client once it has
    /// subscribed to its `in` topic.
    pub async fn set_deliverable(&self) {
        let _ = self
            .commands
            .send(Command::ToMailbox {
                owner: self.owner.clone(),
                command: MailboxCommand::Deliverable { session: self.id },
            })
            .await;
    }

    /// The user this session belongs to; `None` for a route's link.
    pub fn user(&self) -> Option<&UserId> {
        match &self.owner {
            Owner::User(user) => Some(user),
            Owner::Route(_) => None,
        }
    }

    /// The session stops receiving; what arrives meanwhile waits in the store until it (or
    /// another session) is deliverable again.
    pub async fn set_undeliverable(&self) {
        let _ = self
            .commands
            .send(Command::ToMailbox {
                owner: self.owner.clone(),
                command: MailboxCommand::Undeliverable { session: self.id },
            })
            .await;
    }

    /// Resolves when the router cuts this session off (a slow consumer); the adapter then closes
    /// the connection.
    pub fn kicked(&self) -> tokio_util::sync::WaitForCancellationFutureOwned {
        self.kick.clone().cancelled_owned()
    }
}

impl Drop for SessionLease {
    fn drop(&mut self) {
        // Whatever is still queued for this session was not delivered: dropping it releases its
        // proof-of-delivery, so the mailbox stores it for the user's return.
        self.outbound.close();
        while self.outbound.try_recv().is_ok() {}
        let close = Command::ToMailbox {
            owner: self.owner.clone(),
            command: MailboxCommand::Close { session: self.id },
        };
        if let Err(mpsc::error::TrySendError::Full(close)) = self.commands.try_send(close) {
            let commands = self.commands.clone();
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(async move {
                    let _ = commands.send(close).await;
                });
            }
        }
    }
}
