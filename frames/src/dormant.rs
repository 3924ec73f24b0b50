//! A connection's rare events (its token expiring, a kick, shutdown, a keep-alive deadline),
//! looked at only once one of them has woken the connection.
//!
//! A connection's loop turns several times per message. Each `select!` turn polled every one of
//! those futures: a cancellation token's future locks its token and its notifier's waiter list,
//! a timer checks its entry, and the shutdown token is one for all connections. That was about a
//! tenth of the embedded MQTT endpoint's instructions per message. Here they are polled with a
//! waker of their own, which marks them woken and wakes the connection; a turn in which none
//! was woken costs one flag.
//!
//! Written here rather than with `FuturesUnordered`, which also polls only what was woken: that
//! would box each future in a task of its own, and a timer could no longer be reset in place.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};

use futures::task::AtomicWaker;

/// Polls a set of rarely ready futures only when one of them has woken it (or when told to).
pub struct Dormant {
    signal: Arc<Signal>,
    /// The signal as a waker, made once: the futures compare it with the one they hold.
    waker: Waker,
}

struct Signal {
    woken: AtomicBool,
    connection: AtomicWaker,
}

impl Wake for Signal {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.connection.wake();
    }
}

impl Default for Dormant {
    fn default() -> Self {
        // Woken at first, so that the first poll registers every future.
        let signal = Arc::new(Signal { woken: AtomicBool::new(true), connection: AtomicWaker::new() });
        let waker = Waker::from(signal.clone());
        Self { signal, waker }
    }
}

impl Dormant {
    /// Calls `poll`, which polls the rare futures with the context it is given, if one of them
    /// has woken since the last call; else `Pending`, with the caller's task to be woken when
    /// one does.
    pub fn poll<T>(&self, cx: &mut Context<'_>, poll: impl FnOnce(&mut Context<'_>) -> Poll<T>) -> Poll<T> {
        // Registered before the flag is read: a wake between the two is then not lost.
        self.signal.connection.register(cx.waker());
        if !self.signal.woken.swap(false, Ordering::AcqRel) {
            return Poll::Pending;
        }
        let answer = poll(&mut Context::from_waker(&self.waker));
        if answer.is_ready() {
            // Another of them may be ready too, or this one again after its handler.
            self.rouse();
        }
        answer
    }

    /// Has the futures polled at the next call: for a change made to one outside a poll (a timer
    /// reset), or a condition under which one is polled at all that has changed.
    pub fn rouse(&self) {
        self.signal.woken.store(true, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use std::pin::pin;
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    use super::*;

    /// A future that counts its polls and is ready once `ready` is set and it has been woken.
    struct Counted<'a> {
        polls: &'a AtomicUsize,
        ready: &'a AtomicBool,
        waker: &'a std::sync::Mutex<Option<Waker>>,
    }

    impl std::future::Future for Counted<'_> {
        type Output = ();
        fn poll(self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            self.polls.fetch_add(1, Ordering::SeqCst);
            if self.ready.load(Ordering::SeqCst) {
                return Poll::Ready(());
            }
            *self.waker.lock().expect("not poisoned") = Some(cx.waker().clone());
            Poll::Pending
        }
    }

    #[test]
    fn a_future_is_polled_again_only_after_it_woke() {
        let (polls, ready, waker) = (AtomicUsize::new(0), AtomicBool::new(false), std::sync::Mutex::new(None));
        let mut future = pin!(Counted { polls: &polls, ready: &ready, waker: &waker });
        let dormant = Dormant::default();
        let connection = futures::task::noop_waker();
        let mut cx = Context::from_waker(&connection);
        for _ in 0..5 {
            assert!(dormant.poll(&mut cx, |cx| future.as_mut().poll(cx)).is_pending());
        }
        assert_eq!(polls.load(Ordering::SeqCst), 1, "registered once, then left alone");
        ready.store(true, Ordering::SeqCst);
        assert!(dormant.poll(&mut cx, |cx| future.as_mut().poll(cx)).is_pending(), "not woken yet");
        let registered = waker.lock().expect("not poisoned").take().expect("it registered a waker");
        registered.wake();
        assert!(dormant.poll(&mut cx, |cx| future.as_mut().poll(cx)).is_ready());
        assert_eq!(polls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_timer_wakes_the_connection_and_is_then_seen() {
        let dormant = Dormant::default();
        let mut timer = pin!(tokio::time::sleep(Duration::from_secs(30)));
        let mut other = pin!(std::future::pending::<()>());
        let fired = std::future::poll_fn(|cx| {
            dormant.poll(cx, |cx| {
                if other.as_mut().poll(cx).is_ready() {
                    return Poll::Ready("other");
                }
                timer.as_mut().poll(cx).map(|()| "timer")
            })
        });
        assert_eq!(tokio::time::timeout(Duration::from_secs(31), fired).await, Ok("timer"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_timer_reset_in_place_still_fires() {
        let dormant = Dormant::default();
        let mut timer = pin!(tokio::time::sleep(Duration::from_secs(10)));
        let start = tokio::time::Instant::now();
        let mut resets = 0;
        loop {
            std::future::poll_fn(|cx| dormant.poll(cx, |cx| timer.as_mut().poll(cx))).await;
            if resets == 2 {
                break;
            }
            resets += 1;
            // No `rouse`: a future that was ready is polled at the next call anyway.
            timer.as_mut().reset(tokio::time::Instant::now() + Duration::from_secs(10));
        }
        assert_eq!(start.elapsed(), Duration::from_secs(30));
    }
}
