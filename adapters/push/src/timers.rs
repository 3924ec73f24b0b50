//! When each user's devices are next due: at most one deadline per user, the earliest asked for.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use switchboard_gateway::UserId;
use tokio::time::Instant;

#[derive(Default)]
pub struct Timers {
    heap: BinaryHeap<Reverse<(Instant, u64, UserId)>>,
    due: HashMap<UserId, Instant>,
    pushed: u64,
}

impl Timers {
    /// Keeps the earlier of `at` and what was already scheduled for her.
    pub fn schedule(&mut self, user: UserId, at: Instant) {
        if self.due.get(&user).is_some_and(|existing| *existing <= at) {
            return;
        }
        self.due.insert(user.clone(), at);
        self.pushed += 1;
        self.heap.push(Reverse((at, self.pushed, user)));
    }

    pub fn cancel(&mut self, user: &UserId) {
        self.due.remove(user);
    }

    /// Waits for the next due user; never resolves while nothing is scheduled. Cancel-safe:
    /// nothing changes before the deadline has passed.
    pub async fn next_due(&mut self) -> UserId {
        loop {
            let Some(Reverse((at, _, _))) = self.heap.peek() else {
                return std::future::pending().await;
            };
            tokio::time::sleep_until(*at).await;
            let Some(Reverse((at, _, user))) = self.heap.pop() else { continue };
            // Entries superseded by an earlier deadline or a cancel are skipped.
            if self.due.get(&user) == Some(&at) {
                self.due.remove(&user);
                return user;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_earliest_deadline_wins_and_cancel_forgets() {
        let (alice, bob) = (UserId::parse("alice").expect("valid"), UserId::parse("bob").expect("valid"));
        let now = Instant::now();
        let mut timers = Timers::default();
        timers.schedule(alice.clone(), now + Duration::from_secs(30));
        timers.schedule(alice.clone(), now + Duration::from_secs(10));
        timers.schedule(alice.clone(), now + Duration::from_secs(20));
        timers.schedule(bob.clone(), now + Duration::from_secs(5));
        timers.cancel(&bob);
        assert_eq!(timers.next_due().await, alice);
        assert_eq!(Instant::now() - now, Duration::from_secs(10));
        let nothing = tokio::time::timeout(Duration::from_secs(3600), timers.next_due()).await;
        assert!(nothing.is_err(), "alice fired once, bob was cancelled");
    }
}
