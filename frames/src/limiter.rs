//! The per-user token bucket of CONTRACT §8: `limits.messages_per_second` sustained, bursts of
//! twice that, shared by all of a user's sessions.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use switchboard_gateway::UserId;

/// Buckets that have refilled completely carry no information and are dropped past this size.
const PRUNE_ABOVE: usize = 10_000;

#[derive(Clone)]
pub struct RateLimiter {
    per_second: f64,
    burst: f64,
    buckets: Arc<Mutex<HashMap<UserId, Bucket>>>,
}

#[derive(Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

impl RateLimiter {
    pub fn new(per_second: u32) -> Self {
        Self {
            per_second: f64::from(per_second),
            burst: f64::from(per_second) * 2.0,
            buckets: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// Takes one token for `user`; false when she is over her rate.
    pub fn allow(&self, user: &UserId) -> bool {
        let now = Instant::now();
        let Ok(mut buckets) = self.buckets.lock() else { return true };
        if buckets.len() > PRUNE_ABOVE {
            let (rate, burst) = (self.per_second, self.burst);
            buckets.retain(|_, b| b.tokens + now.duration_since(b.updated).as_secs_f64() * rate < burst);
        }
        // Looked up before it is entered: `entry` takes a key of its own, a clone of the user's
        // shared name on every frame.
        let bucket = match buckets.get_mut(user) {
            Some(bucket) => bucket,
            None => buckets.entry(user.clone()).or_insert(Bucket { tokens: self.burst, updated: now }),
        };
        let refill = now.duration_since(bucket.updated).as_secs_f64() * self.per_second;
        bucket.tokens = (bucket.tokens + refill).min(self.burst);
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_a_burst_of_twice_the_rate_then_refuses() {
        let limiter = RateLimiter::new(5);
        let alice = UserId::parse("alice").expect("valid");
        let allowed = (0..20).filter(|_| limiter.allow(&alice)).count();
        assert_eq!(allowed, 10);
        let bob = UserId::parse("bob").expect("valid");
        assert!(limiter.allow(&bob), "users have their own buckets");
    }
}
