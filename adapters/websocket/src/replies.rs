//! The answers to a client's frames, sent in the order the frames came.

use std::future::Future;

use futures::StreamExt;
use futures::stream::FuturesOrdered;

/// Made on the first frame and dropped once every answer is out: a `FuturesOrdered` allocates
/// room for one future of its kind when made (about half a kilobyte for these), which a
/// connection that sits idle should not pay for.
pub(crate) struct Replies<F: Future>(Option<FuturesOrdered<F>>);

impl<F: Future> Default for Replies<F> {
    fn default() -> Self {
        Self(None)
    }
}

impl<F: Future> Replies<F> {
    pub fn push_back(&mut self, reply: F) {
        self.0.get_or_insert_with(FuturesOrdered::new).push_back(reply);
    }

    pub fn is_empty(&self) -> bool {
        self.0.as_ref().is_none_or(FuturesOrdered::is_empty)
    }

    /// The next answer; `None` when none is waiting. Cancel-safe, as `FuturesOrdered::next` is.
    pub async fn next(&mut self) -> Option<F::Output> {
        let replies = self.0.as_mut()?;
        let reply = replies.next().await;
        if replies.is_empty() {
            self.0 = None;
        }
        reply
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn answers_come_in_order_and_the_queue_is_released_when_drained() {
        let mut replies = Replies::default();
        assert!(replies.is_empty());
        let (first, second) = (tokio::sync::oneshot::channel::<u8>(), tokio::sync::oneshot::channel::<u8>());
        replies.push_back(first.1);
        replies.push_back(second.1);
        let _ = second.0.send(2);
        let _ = first.0.send(1);
        assert_eq!(replies.next().await.map(Result::ok), Some(Some(1)));
        assert!(replies.0.is_some(), "one answer still waits");
        assert_eq!(replies.next().await.map(Result::ok), Some(Some(2)));
        assert!(replies.0.is_none(), "released once drained");
        assert!(replies.next().await.is_none());
    }
}
