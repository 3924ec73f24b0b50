//! The answers to a client's frames, sent in the order the frames came.

use std::collections::VecDeque;
use std::task::Poll;

use crate::outbound::ServerFrame;
use crate::session::Reply;

/// Only the oldest reply is polled: the answers go out in order, so a later one that is settled
/// first waits anyway, and is found settled when its turn comes. A `FuturesOrdered` gave every
/// frame's answer a task of its own: an allocation, and a wake-up of its own when it settled.
///
/// `T` travels with each reply and comes back with its answer (an MQTT connection's PUBACK).
pub struct Replies<T = ()>(VecDeque<(T, Reply)>);

impl<T> Default for Replies<T> {
    fn default() -> Self {
        Self(VecDeque::new())
    }
}

impl Replies<()> {
    pub fn push_back(&mut self, reply: Reply) {
        self.push_back_with((), reply);
    }
}

impl<T> Replies<T> {
    pub fn push_back_with(&mut self, with: T, reply: Reply) {
        self.0.push_back((with, reply));
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The next answer (`Some(None)` for a frame that gets none); `None` when none is waiting.
    /// Cancel-safe: a reply is taken only when this returns its answer.
    pub async fn next(&mut self) -> Option<Option<ServerFrame>> {
        self.next_with().await.map(|(_, answer)| answer)
    }

    /// Like [`Self::next`], with what was pushed beside the reply.
    pub async fn next_with(&mut self) -> Option<(T, Option<ServerFrame>)> {
        std::future::poll_fn(|cx| {
            let Some((_, oldest)) = self.0.front_mut() else { return Poll::Ready(None) };
            let answer = std::task::ready!(oldest.poll_answer(cx));
            let Some((with, _)) = self.0.pop_front() else { return Poll::Ready(None) };
            if self.0.is_empty() {
                // A connection that sits idle keeps no room for replies.
                self.0 = VecDeque::new();
            }
            Poll::Ready(Some((with, answer)))
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use switchboard_gateway::router::{self, RouterSettings};
    use switchboard_gateway::store::SqlStore;
    use switchboard_gateway::{Domain, UserId};
    use tokio_util::task::TaskTracker;

    use super::*;
    use crate::{ErrorCode, FrameCounters, FrameSession, RateLimiter};

    #[tokio::test]
    async fn an_answer_ready_at_once_waits_for_the_one_before_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqlStore::open_embedded(dir.path()).await.expect("store");
        let router = router::spawn(Arc::new(store), RouterSettings::new(Domain::new("localhost")), &TaskTracker::new())
            .await
            .expect("router");
        let mut bob = router.open_session(UserId::parse("bob").expect("valid"), "test").await.expect("session");
        bob.set_deliverable().await;
        let alice = UserId::parse("alice").expect("valid");
        let alice = FrameSession::new(alice, router.clone(), RateLimiter::new(100), 65_536, FrameCounters::new("test"));

        let mut replies = Replies::default();
        replies.push_back_with(1, alice.accept(br#"{"type":"message","id":"m1","to":"bob","body":"hi"}"#).await);
        replies.push_back_with(2, alice.accept(b"{not json").await);
        let outbound = bob.outbound.recv().await.expect("the message reaches bob's session");
        let early = tokio::time::timeout(Duration::from_millis(200), replies.next()).await;
        assert!(early.is_err(), "nothing is answered before bob's session has the message: {early:?}");

        outbound.delivered.expect("a delivery to confirm").confirm();
        match replies.next_with().await {
            Some((1, Some(ServerFrame::Ack { id, msg }))) => assert_eq!((id.as_str(), msg.is_some()), ("m1", true)),
            other => panic!("expected the ack of m1 first, got {other:?}"),
        }
        match replies.next_with().await {
            Some((2, Some(ServerFrame::Error { code, .. }))) => assert_eq!(code, ErrorCode::BadRequest),
            other => panic!("expected the error second, got {other:?}"),
        }
        assert!(replies.is_empty());
        assert!(replies.next().await.is_none());
    }
}
