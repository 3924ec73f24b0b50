//! A delivery handed to sessions, waiting for their proofs of delivery.
//!
//! A named future rather than a boxed `async` block: the mailbox keeps one per delivery in
//! flight, and with one live session (the common case) it waits on a single proof without
//! `join_all` and without a heap allocation of its own.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use futures::future::JoinAll;
use tokio::sync::oneshot;

use super::reply::Reply;
use crate::envelope::Envelope;
use crate::store::QueueSeq;

/// What a delivery was, to settle once its proofs are in.
pub(super) enum Delivery {
    /// Routed live: its sender waits for the outcome.
    Live { envelope: Arc<Envelope>, reply: Reply },
    /// Replayed from the offline queue.
    Replayed { seq: QueueSeq, envelope: Arc<Envelope> },
}

/// Proofs from the sessions a delivery was handed to; delivered once any of them confirms, known
/// once all have answered (or were dropped).
pub(super) enum Proofs {
    One(oneshot::Receiver<()>),
    Many(JoinAll<oneshot::Receiver<()>>),
}

/// Proofs gathered one session at a time. With one live session, the common case, no list is
/// made: the mailbox does this for every message.
#[derive(Default)]
pub(super) struct Gathering {
    first: Option<oneshot::Receiver<()>>,
    more: Vec<oneshot::Receiver<()>>,
}

impl Gathering {
    pub(super) fn push(&mut self, proof: oneshot::Receiver<()>) {
        match self.first {
            None => self.first = Some(proof),
            Some(_) => self.more.push(proof),
        }
    }

    /// `None` when no session took the delivery.
    pub(super) fn finish(self) -> Option<Proofs> {
        let first = self.first?;
        if self.more.is_empty() {
            return Some(Proofs::One(first));
        }
        let mut all = self.more;
        all.push(first);
        Some(Proofs::Many(futures::future::join_all(all)))
    }
}

pub(super) struct Awaiting {
    proofs: Proofs,
    delivery: Option<Delivery>,
}

impl Awaiting {
    pub(super) fn new(delivery: Delivery, proofs: Proofs) -> Self {
        Self { proofs, delivery: Some(delivery) }
    }
}

impl Future for Awaiting {
    /// The delivery, and whether a session confirmed it.
    type Output = (Delivery, bool);

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let delivered = match &mut self.proofs {
            Proofs::One(proof) => ready!(Pin::new(proof).poll(cx)).is_ok(),
            Proofs::Many(proofs) => ready!(Pin::new(proofs).poll(cx)).iter().any(Result::is_ok),
        };
        match self.delivery.take() {
            Some(delivery) => Poll::Ready((delivery, delivered)),
            // Polled again after completion: FuturesOrdered never does.
            None => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::address::{Address, UserId};
    use crate::envelope::{Body, ChatState};

    fn delivery() -> (Delivery, crate::router::reply::SharedOutcome) {
        let user = Address::user(UserId::parse("bob").expect("valid"));
        let envelope = Envelope::new(user.clone(), user, Body::ChatState { state: ChatState::Active });
        let (reply, outcome) = crate::router::reply::reply();
        (Delivery::Live { envelope: Arc::new(envelope), reply }, outcome)
    }

    #[tokio::test]
    async fn delivered_when_any_session_confirms_once_all_have_answered() {
        let (first, first_proof) = oneshot::channel();
        let (second, second_proof) = oneshot::channel::<()>();
        let (delivery, _outcome) = delivery();
        let mut gathering = Gathering::default();
        gathering.push(first_proof);
        gathering.push(second_proof);
        let proofs = gathering.finish().expect("two proofs");
        let awaiting = tokio::spawn(Awaiting::new(delivery, proofs));
        drop(second);
        let _ = first.send(());
        let (_, delivered) = awaiting.await.expect("joins");
        assert!(delivered);
    }

    #[tokio::test]
    async fn not_delivered_when_the_only_proof_is_dropped() {
        let (proof, receiver) = oneshot::channel::<()>();
        let (delivery, _outcome) = delivery();
        drop(proof);
        let mut gathering = Gathering::default();
        gathering.push(receiver);
        let proofs = gathering.finish().expect("one proof");
        assert!(matches!(proofs, Proofs::One(_)), "one proof needs no list");
        let (_, delivered) = Awaiting::new(delivery, proofs).await;
        assert!(!delivered);
    }
}
