//! A submitted envelope's outcome: settled once by whoever takes responsibility for it (the
//! router, a mailbox), awaited by its sender and, for a message, by every resend of it.
//!
//! One allocation per envelope. A tokio oneshot made shareable with `futures`' `Shared` took
//! five (the channel, a boxed future, `Shared`'s state, its notifier and the notifier's waker
//! slab) on every message, for the rare resend that waits on the same outcome.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};

use crate::outcome::Outcome;

/// A new outcome, not yet settled.
pub(crate) fn reply() -> (Reply, SharedOutcome) {
    let slot = Arc::new(Slot { state: Mutex::new(State::Waiting(Vec::new())) });
    (Reply(Some(slot.clone())), SharedOutcome { slot, waiter: None })
}

/// Settles the outcome. Dropped unsettled, it settles it as `Retryable`: nobody took
/// responsibility for the envelope, so its sender may send it again.
pub(crate) struct Reply(Option<Arc<Slot>>);

impl Reply {
    pub(crate) fn send(mut self, outcome: Outcome) {
        if let Some(slot) = self.0.take() {
            slot.settle(outcome);
        }
    }
}

impl Drop for Reply {
    fn drop(&mut self) {
        if let Some(slot) = self.0.take() {
            slot.settle(Outcome::Retryable("the gateway is shutting down".into()));
        }
    }
}

/// Resolves to the outcome once it is settled; clones wait for the same one.
pub(crate) struct SharedOutcome {
    slot: Arc<Slot>,
    /// This waiter's place among the wakers, once it has waited: a poll replaces its own waker
    /// instead of searching the list (a peer may resend one message many times while it waits).
    waiter: Option<usize>,
}

impl Clone for SharedOutcome {
    fn clone(&self) -> Self {
        Self { slot: self.slot.clone(), waiter: None }
    }
}

impl SharedOutcome {
    /// The outcome, if it is settled.
    pub(crate) fn peek(&self) -> Option<Outcome> {
        match &*self.slot.lock() {
            State::Settled(outcome) => Some(outcome.clone()),
            State::Waiting(_) => None,
        }
    }
}

impl Future for SharedOutcome {
    type Output = Outcome;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Outcome> {
        let this = &mut *self;
        match &mut *this.slot.lock() {
            State::Settled(outcome) => Poll::Ready(outcome.clone()),
            State::Waiting(wakers) => {
                match this.waiter.and_then(|index| wakers.get_mut(index)) {
                    Some(Some(waker)) if waker.will_wake(cx.waker()) => {}
                    Some(place) => *place = Some(cx.waker().clone()),
                    None => {
                        this.waiter = Some(wakers.len());
                        wakers.push(Some(cx.waker().clone()));
                    }
                }
                Poll::Pending
            }
        }
    }
}

impl Drop for SharedOutcome {
    fn drop(&mut self) {
        // A waiter gone before the outcome: its waker (and the task it keeps alive) goes now.
        if let Some(index) = self.waiter
            && let State::Waiting(wakers) = &mut *self.slot.lock()
            && let Some(place) = wakers.get_mut(index)
        {
            *place = None;
        }
    }
}

struct Slot {
    state: Mutex<State>,
}

enum State {
    /// The tasks waiting: the sender's, and those of resends while the first copy is in flight;
    /// `None` where a waiter has gone.
    Waiting(Vec<Option<Waker>>),
    Settled(Outcome),
}

impl Slot {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A poisoned lock only means a thread panicked while holding it; the state is whole.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn settle(&self, outcome: Outcome) {
        let waiting = std::mem::replace(&mut *self.lock(), State::Settled(outcome));
        if let State::Waiting(wakers) = waiting {
            wakers.into_iter().flatten().for_each(Waker::wake);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_waiter_gets_the_outcome_settled_once() {
        let (reply, outcome) = reply();
        let waiters: Vec<_> = (0..3).map(|_| tokio::spawn(outcome.clone())).collect();
        tokio::task::yield_now().await;
        assert!(outcome.peek().is_none());
        reply.send(Outcome::Delivered);
        for waiter in waiters {
            assert_eq!(waiter.await.expect("joins"), Outcome::Delivered);
        }
        assert_eq!(outcome.peek(), Some(Outcome::Delivered));
        assert_eq!(outcome.await, Outcome::Delivered, "a late waiter gets it too");
    }

    #[tokio::test]
    async fn a_waiter_polled_again_keeps_one_place_and_gives_it_up_when_dropped() {
        let (reply, outcome) = reply();
        let mut first = outcome.clone();
        let waker = futures::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        for _ in 0..3 {
            assert!(Pin::new(&mut first).poll(&mut cx).is_pending());
        }
        let second = tokio::spawn(outcome.clone());
        tokio::task::yield_now().await;
        let waiting = |slot: &Slot| match &*slot.lock() {
            State::Waiting(wakers) => (wakers.len(), wakers.iter().flatten().count()),
            State::Settled(_) => (0, 0),
        };
        assert_eq!(waiting(&outcome.slot), (2, 2), "one place per waiter, however often polled");
        drop(first);
        assert_eq!(waiting(&outcome.slot), (2, 1), "a dropped waiter's waker is released");
        reply.send(Outcome::Stored);
        assert_eq!(second.await.expect("joins"), Outcome::Stored);
    }

    #[tokio::test]
    async fn dropped_unsettled_it_says_retry() {
        let (reply, outcome) = reply();
        let waiter = tokio::spawn(outcome);
        tokio::task::yield_now().await;
        drop(reply);
        assert!(matches!(waiter.await.expect("joins"), Outcome::Retryable(_)));
    }
}
