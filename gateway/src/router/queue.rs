//! A bounded FIFO from one or more senders to one receiver whose memory follows what it holds.
//!
//! Every live session has two of these (its mailbox's commands and its outgoing envelopes), and
//! most of them sit empty for hours. `tokio::sync::mpsc` allocates its first block of 32 slots and
//! two cache-line-padded halves when it is created: 1.2–1.4 KiB per channel before anything is
//! sent, a quarter of what an idle session may cost. This queue starts empty (about 150 bytes),
//! grows with its contents and gives a burst's room back once drained. It keeps tokio's error
//! types so that callers read the same.
//!
//! Wake-ups go through [`Notify`]: a send stores a permit for a receiver that is not waiting
//! yet, so an item pushed between the receiver's check and its wait is never missed.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;
pub use tokio::sync::mpsc::error::{SendTimeoutError, TryRecvError, TrySendError};

/// Room kept after the queue drains; a larger buffer, grown for a burst, is released.
const KEEP_SLOTS: usize = 16;

pub fn bounded<T>(capacity: usize) -> (Sender<T>, Receiver<T>) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State { items: VecDeque::new(), capacity: capacity.max(1), senders: 1, receiving: true }),
        readable: Notify::new(),
        writable: Notify::new(),
    });
    (Sender { shared: shared.clone() }, Receiver { shared })
}

struct Shared<T> {
    state: Mutex<State<T>>,
    /// An item arrived, or the last sender left.
    readable: Notify,
    /// Room was made, or the receiver left.
    writable: Notify,
}

struct State<T> {
    items: VecDeque<T>,
    capacity: usize,
    senders: usize,
    receiving: bool,
}

impl<T> Shared<T> {
    /// The queue's state stays consistent whatever a panicking holder did (every change is one
    /// push, pop or counter), so a poisoned lock is used as is.
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

pub struct Sender<T> {
    shared: Arc<Shared<T>>,
}

impl<T> Sender<T> {
    pub fn try_send(&self, item: T) -> Result<(), TrySendError<T>> {
        self.push(item, true)
    }

    /// Queued even beyond the capacity: for what must not be refused or overtaken (a session's
    /// opening and closing), and is bounded elsewhere (by the connections there are). `Err`
    /// gives the item back once the receiver is gone.
    pub fn force_send(&self, item: T) -> Result<(), T> {
        self.push(item, false).map_err(|(TrySendError::Closed(item) | TrySendError::Full(item))| item)
    }

    fn push(&self, item: T, within_capacity: bool) -> Result<(), TrySendError<T>> {
        {
            let mut state = self.shared.lock();
            if !state.receiving {
                return Err(TrySendError::Closed(item));
            }
            if within_capacity && state.items.len() >= state.capacity {
                return Err(TrySendError::Full(item));
            }
            state.items.push_back(item);
        }
        self.shared.readable.notify_one();
        Ok(())
    }

    /// Waits at most `timeout` for room. Meant for a queue's one producer: a sender waiting here
    /// has no precedence over another's `try_send`.
    pub async fn send_timeout(&self, mut item: T, timeout: Duration) -> Result<(), SendTimeoutError<T>> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let writable = self.shared.writable.notified();
            tokio::pin!(writable);
            // Registered before the check, so room made in between wakes this wait.
            writable.as_mut().enable();
            match self.try_send(item) {
                Ok(()) => return Ok(()),
                Err(TrySendError::Closed(back)) => return Err(SendTimeoutError::Closed(back)),
                Err(TrySendError::Full(back)) => item = back,
            }
            if tokio::time::timeout_at(deadline, writable).await.is_err() {
                return Err(SendTimeoutError::Timeout(item));
            }
        }
    }

    /// The receiver is gone: nothing sent from now on will be read.
    pub fn is_closed(&self) -> bool {
        !self.shared.lock().receiving
    }
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        self.shared.lock().senders += 1;
        Self { shared: self.shared.clone() }
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        let last = {
            let mut state = self.shared.lock();
            state.senders -= 1;
            state.senders == 0
        };
        if last {
            self.shared.readable.notify_one();
        }
    }
}

pub struct Receiver<T> {
    shared: Arc<Shared<T>>,
}

impl<T> Receiver<T> {
    /// The next item; `None` once the queue is drained and every sender is gone or the receiver
    /// closed. Cancel-safe: an item is taken only when this returns it.
    pub async fn recv(&mut self) -> Option<T> {
        loop {
            match self.try_recv() {
                Ok(item) => return Some(item),
                Err(TryRecvError::Disconnected) => return None,
                Err(TryRecvError::Empty) => self.shared.readable.notified().await,
            }
        }
    }

    pub fn try_recv(&mut self) -> Result<T, TryRecvError> {
        let item = {
            let mut state = self.shared.lock();
            match state.items.pop_front() {
                Some(item) => {
                    if state.items.is_empty() && state.items.capacity() > KEEP_SLOTS {
                        state.items = VecDeque::new();
                    }
                    item
                }
                None if state.senders == 0 || !state.receiving => return Err(TryRecvError::Disconnected),
                None => return Err(TryRecvError::Empty),
            }
        };
        self.shared.writable.notify_one();
        Ok(item)
    }

    pub fn is_empty(&self) -> bool {
        self.shared.lock().items.is_empty()
    }

    /// Senders are refused from now on; what is queued can still be read.
    pub fn close(&mut self) {
        self.shared.lock().receiving = false;
        self.shared.writable.notify_waiters();
    }
}

impl<T> Drop for Receiver<T> {
    /// What is still queued is dropped with the receiver, as with tokio's channels: a reply or a
    /// proof of delivery inside it then tells its waiter that nobody will answer. Dropped outside
    /// the lock, since an item's drop may wake other tasks.
    fn drop(&mut self) {
        self.close();
        let items = std::mem::take(&mut self.shared.lock().items);
        drop(items);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn items_arrive_in_order_and_the_receiver_ends_after_the_last_sender() {
        let (tx, mut rx) = bounded(8);
        let second = tx.clone();
        tx.try_send(1).expect("room");
        second.try_send(2).expect("room");
        drop(tx);
        drop(second);
        assert_eq!(rx.recv().await, Some(1));
        assert_eq!(rx.recv().await, Some(2));
        assert_eq!(rx.recv().await, None);
    }

    #[tokio::test]
    async fn a_full_queue_refuses_and_a_waiting_sender_gets_the_room_made() {
        let (tx, mut rx) = bounded(2);
        tx.try_send(1).expect("room");
        tx.try_send(2).expect("room");
        assert!(matches!(tx.try_send(3), Err(TrySendError::Full(3))));
        let waiting = tokio::spawn(async move { tx.send_timeout(3, Duration::from_secs(60)).await.map(|()| tx) });
        tokio::task::yield_now().await;
        assert_eq!(rx.recv().await, Some(1));
        let tx = waiting.await.expect("joined").expect("sent once there was room");
        drop(tx);
        assert_eq!(rx.recv().await, Some(2));
        assert_eq!(rx.recv().await, Some(3));
        assert_eq!(rx.recv().await, None);
    }

    #[tokio::test]
    async fn a_forced_send_goes_in_beyond_the_capacity_and_in_order() {
        let (tx, mut rx) = bounded(1);
        tx.try_send(1).expect("room");
        tx.force_send(2).expect("receiver alive");
        assert!(matches!(tx.try_send(3), Err(TrySendError::Full(3))));
        assert_eq!(rx.try_recv(), Ok(1));
        assert_eq!(rx.try_recv(), Ok(2));
        drop(rx);
        assert_eq!(tx.force_send(4), Err(4));
    }

    #[tokio::test]
    async fn a_closed_receiver_ends_once_drained_though_senders_live() {
        let (tx, mut rx) = bounded(4);
        tx.try_send(1).expect("room");
        rx.close();
        assert_eq!(rx.recv().await, Some(1));
        let after = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await;
        assert_eq!(after, Ok(None), "recv ends instead of waiting for senders that may never stop");
        drop(tx);
    }

    #[test]
    fn what_is_queued_is_dropped_with_the_receiver() {
        let (tx, rx) = bounded(4);
        let (reply, mut answer) = tokio::sync::oneshot::channel::<()>();
        tx.try_send(reply).expect("room");
        drop(rx);
        assert_eq!(answer.try_recv(), Err(tokio::sync::oneshot::error::TryRecvError::Closed), "the waiter learns nobody will answer");
        drop(tx);
    }

    #[tokio::test]
    async fn a_receiver_waiting_on_an_empty_queue_wakes_for_a_send() {
        let (tx, mut rx) = bounded(4);
        let reading = tokio::spawn(async move { rx.recv().await });
        tokio::task::yield_now().await;
        tx.try_send("hello").expect("room");
        assert_eq!(reading.await.expect("joined"), Some("hello"));
    }

    #[tokio::test(start_paused = true)]
    async fn send_timeout_gives_the_item_back_when_no_room_comes() {
        let (tx, _rx) = bounded(1);
        tx.try_send(1).expect("room");
        let result = tx.send_timeout(2, Duration::from_secs(10)).await;
        assert!(matches!(result, Err(SendTimeoutError::Timeout(2))));
    }

    #[tokio::test]
    async fn a_closed_receiver_refuses_senders_but_keeps_what_was_queued() {
        let (tx, mut rx) = bounded(4);
        tx.try_send(1).expect("room");
        rx.close();
        assert!(tx.is_closed());
        assert!(matches!(tx.try_send(2), Err(TrySendError::Closed(2))));
        assert!(matches!(tx.send_timeout(3, Duration::from_secs(1)).await, Err(SendTimeoutError::Closed(3))));
        assert_eq!(rx.try_recv(), Ok(1));
    }

    #[tokio::test]
    async fn a_sender_waiting_for_room_learns_that_the_receiver_left() {
        let (tx, rx) = bounded(1);
        tx.try_send(1).expect("room");
        let waiting = tokio::spawn(async move { tx.send_timeout(2, Duration::from_secs(60)).await });
        tokio::task::yield_now().await;
        drop(rx);
        assert!(matches!(waiting.await.expect("joined"), Err(SendTimeoutError::Closed(2))));
    }

    #[test]
    fn a_drained_queue_gives_back_the_room_a_burst_took() {
        let (tx, mut rx) = bounded(1024);
        for n in 0..500 {
            tx.try_send(n).expect("room");
        }
        while rx.try_recv().is_ok() {}
        assert!(rx.shared.lock().items.capacity() <= KEEP_SLOTS);
    }
}
