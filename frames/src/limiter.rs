//! The per-user token bucket of CONTRACT §8: `limits.messages_per_second` sustained, bursts of
//! twice that, shared by all of a user's sessions.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use switchboard_gateway::UserId;

/// Buckets that no session holds and that have refilled completely carry no information; they are
/// dropped when there are more than this many (or twice as many as were kept the last time).
const PRUNE_ABOVE: usize = 10_000;

#[derive(Clone)]
pub struct RateLimiter {
    rate: Rate,
    buckets: Arc<Mutex<Buckets>>,
}

#[derive(Clone, Copy)]
struct Rate {
    per_second: f64,
    burst: f64,
}

struct Buckets {
    by_user: HashMap<UserId, Arc<Mutex<Bucket>>>,
    prune_above: usize,
}

struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// One user's bucket, kept by each of her sessions: a frame takes its token without looking the
/// user up among all the others behind one lock.
pub struct UserBucket {
    rate: Rate,
    bucket: Arc<Mutex<Bucket>>,
}

impl RateLimiter {
    pub fn new(per_second: u32) -> Self {
        let rate = Rate { per_second: f64::from(per_second), burst: f64::from(per_second) * 2.0 };
        let buckets = Buckets { by_user: HashMap::new(), prune_above: PRUNE_ABOVE };
        Self { rate, buckets: Arc::new(Mutex::new(buckets)) }
    }

    /// `user`'s bucket, the same for every session of hers that holds it.
    pub fn bucket(&self, user: &UserId) -> UserBucket {
        let now = Instant::now();
        // A poisoned lock only means a thread panicked mid-update; the buckets are still whole.
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(bucket) = buckets.by_user.get(user) {
            return UserBucket { rate: self.rate, bucket: bucket.clone() };
        }
        if buckets.by_user.len() >= buckets.prune_above {
            buckets.prune(self.rate, now);
        }
        let bucket = Arc::new(Mutex::new(Bucket { tokens: self.rate.burst, updated: now }));
        buckets.by_user.insert(user.clone(), bucket.clone());
        UserBucket { rate: self.rate, bucket }
    }

    /// Takes one token for `user`; false when she is over her rate. For a single request: a
    /// session keeps its [`UserBucket`].
    pub fn allow(&self, user: &UserId) -> bool {
        self.bucket(user).allow()
    }
}

impl Buckets {
    fn prune(&mut self, rate: Rate, now: Instant) {
        // A bucket a session still holds must stay: another session of the same user must find
        // the same one, or she would get a second burst.
        self.by_user.retain(|_, bucket| {
            Arc::strong_count(bucket) > 1
                || bucket.lock().unwrap_or_else(PoisonError::into_inner).refilled(rate, now) < rate.burst
        });
        // Pruning walks every bucket: when most are kept, it waits until there are twice as many.
        self.prune_above = PRUNE_ABOVE.max(self.by_user.len() * 2);
    }
}

impl Bucket {
    fn refilled(&self, rate: Rate, now: Instant) -> f64 {
        let refill = now.duration_since(self.updated).as_secs_f64() * rate.per_second;
        (self.tokens + refill).min(rate.burst)
    }
}

impl UserBucket {
    /// Takes one token; false when the user is over her rate.
    pub fn allow(&self) -> bool {
        let now = Instant::now();
        let mut bucket = self.bucket.lock().unwrap_or_else(PoisonError::into_inner);
        bucket.tokens = bucket.refilled(self.rate, now);
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

    fn user(name: &str) -> UserId {
        UserId::parse(name).expect("valid")
    }

    #[test]
    fn allows_a_burst_of_twice_the_rate_then_refuses() {
        let limiter = RateLimiter::new(5);
        let alice = user("alice");
        let allowed = (0..20).filter(|_| limiter.allow(&alice)).count();
        assert_eq!(allowed, 10);
        assert!(limiter.allow(&user("bob")), "users have their own buckets");
    }

    #[test]
    fn a_users_sessions_share_one_burst() {
        let limiter = RateLimiter::new(5);
        let (phone, laptop) = (limiter.bucket(&user("alice")), limiter.bucket(&user("alice")));
        let allowed = (0..10).filter(|_| phone.allow()).count() + (0..10).filter(|_| laptop.allow()).count();
        assert_eq!(allowed, 10);
        assert!(!limiter.allow(&user("alice")), "a request of hers draws on the same bucket");
    }

    #[test]
    fn pruning_keeps_the_buckets_sessions_hold() {
        let limiter = RateLimiter::new(5);
        // Full, so only the session holding it keeps it through pruning.
        let phone = limiter.bucket(&user("alice"));
        for n in 0..=PRUNE_ABOVE {
            limiter.bucket(&user(&format!("u{n}")));
        }
        let kept = limiter.buckets.lock().expect("not poisoned").by_user.len();
        assert!(kept < PRUNE_ABOVE, "full buckets nobody holds are dropped ({kept} kept)");
        let laptop = limiter.bucket(&user("alice"));
        let allowed = (0..10).filter(|_| phone.allow()).count() + (0..10).filter(|_| laptop.allow()).count();
        assert_eq!(allowed, 10, "her second session found the first one's bucket");
    }
}
