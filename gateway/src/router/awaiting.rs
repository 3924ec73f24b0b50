//! A delivery handed to sessions, waiting for their proofs of delivery.
//!
//! A named future rather than a boxed `async` block: the mailbox keeps one per delivery in
//! flight, and with one live session (the common case) it waits on a single proof without
//! `join_all` and without a heap allocation of its own.

use std::collections::VecDeque;
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

/// The deliveries in flight, oldest first; they are settled in that order.
///
/// Only the oldest is polled: a later one that is confirmed first waits for its turn anyway, and
/// is found confirmed when it comes. A `FuturesOrdered` made every delivery a task of its own, an
/// allocation per message and a wake-up of its own when its proof came.
#[derive(Default)]
pub(super) struct InFlight(VecDeque<Awaiting>);

/// Places for deliveries in flight that a mailbox keeps once they are settled.
const KEEP_ROOM: usize = 8;

impl InFlight {
    pub(super) fn push_back(&mut self, awaiting: Awaiting) {
        self.0.push_back(awaiting);
    }

    pub(super) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The oldest delivery, once all its proofs are in; `None` when none is in flight.
    /// Cancel-safe: a delivery leaves only in the poll that returns it.
    pub(super) async fn next(&mut self) -> Option<(Delivery, bool)> {
        std::future::poll_fn(|cx| {
            let Some(oldest) = self.0.front_mut() else { return Poll::Ready(None) };
            let settled = ready!(Pin::new(oldest).poll(cx));
            self.0.pop_front();
            if self.0.is_empty() && self.0.capacity() > KEEP_ROOM {
                // A burst's room goes when it is over; a few places stay, so that one message at
                // a time does not allocate and free them each time.
                self.0 = VecDeque::new();
            }
            Poll::Ready(Some(settled))
        })
        .await
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
            // Polled again after completion: `InFlight` never does.
            None => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::address::{Address, UserId};
    use crate::envelope::{Body, ChatState};
    use crate::outcome::Outcome;

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
    async fn deliveries_settle_oldest_first_even_when_a_later_one_is_confirmed_first() {
        let mut inflight = InFlight::default();
        let mut senders = Vec::new();
        let mut outcomes = Vec::new();
        for _ in 0..3 {
            let (proof, receiver) = oneshot::channel::<()>();
            let (delivery, outcome) = delivery();
            inflight.push_back(Awaiting::new(delivery, Proofs::One(receiver)));
            senders.push(proof);
            outcomes.push(outcome);
        }
        let mut senders = senders.into_iter();
        let (first, second, third) = (senders.next(), senders.next(), senders.next());
        let _ = third.map(|proof| proof.send(()));
        let _ = second.map(|proof| proof.send(()));
        assert!(
            futures::FutureExt::now_or_never(inflight.next()).is_none(),
            "the oldest is not confirmed yet, so nothing is settled"
        );
        drop(first);
        let mut settled = Vec::new();
        while let Some((delivery, delivered)) = inflight.next().await {
            let Delivery::Live { reply, .. } = delivery else { panic!("a live delivery") };
            reply.send(if delivered { Outcome::Delivered } else { Outcome::Stored });
            settled.push(delivered);
        }
        assert_eq!(settled, [false, true, true], "in the order they were handed out");
        for (outcome, expected) in outcomes.into_iter().zip([Outcome::Stored, Outcome::Delivered, Outcome::Delivered]) {
            assert_eq!(outcome.await, expected);
        }
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
