//! Rate limits: token buckets keyed by client (address or API key) and by
//! user name. Sharded so that one client's flood contends on one shard's
//! lock only briefly and never waits for another client's work.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::Mutex;
use std::time::Instant;

const SHARDS: usize = 64;
/// Buckets kept per shard before idle (full) ones are dropped.
const SHARD_CAPACITY: usize = 4096;

/// A rate: `per_minute` tokens refill evenly over a minute, up to `burst`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    /// Sustained requests per minute.
    pub per_minute: u32,
    /// Requests allowed at once after a quiet period.
    pub burst: u32,
}

impl Rate {
    /// `per_minute` requests a minute, `burst` at once.
    pub const fn per_minute(per_minute: u32, burst: u32) -> Rate {
        Rate { per_minute, burst }
    }

    fn per_second(self) -> f64 {
        f64::from(self.per_minute) / 60.0
    }

    fn burst(self) -> f64 {
        f64::from(self.burst.max(1))
    }
}

#[derive(Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Token buckets by key.
pub struct Limiter {
    rate: Rate,
    hasher: std::collections::hash_map::RandomState,
    shards: Vec<Mutex<HashMap<Vec<u8>, Bucket>>>,
}

impl Limiter {
    /// A limiter applying `rate` to every key.
    pub fn new(rate: Rate) -> Limiter {
        Limiter {
            rate,
            hasher: Default::default(),
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
        }
    }

    /// Takes a token for `key` at `now`: `Ok` if there was one, else the
    /// seconds until there will be (rounded up, at least 1).
    pub fn take(&self, key: &[u8], now: Instant) -> Result<(), u64> {
        let shard = &self.shards[self.hasher.hash_one(key) as usize % SHARDS];
        let mut map = shard.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= SHARD_CAPACITY && !map.contains_key(key) {
            let rate = self.rate;
            map.retain(|_, b| refill(rate, *b, now) < rate.burst());
        }
        let bucket = map.entry(key.to_vec()).or_insert(Bucket {
            tokens: self.rate.burst(),
            at: now,
        });
        let tokens = refill(self.rate, *bucket, now);
        if tokens >= 1.0 {
            *bucket = Bucket {
                tokens: tokens - 1.0,
                at: now,
            };
            Ok(())
        } else {
            *bucket = Bucket { tokens, at: now };
            let wait = if self.rate.per_minute > 0 {
                ((1.0 - tokens) / self.rate.per_second()).ceil() as u64
            } else {
                3600
            };
            Err(wait.max(1))
        }
    }
}

fn refill(rate: Rate, b: Bucket, now: Instant) -> f64 {
    let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
    (b.tokens + elapsed * rate.per_second()).min(rate.burst())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_bucket_allows_its_burst_then_refills_at_its_rate() {
        let l = Limiter::new(Rate::per_minute(120, 3));
        let t = Instant::now();
        for _ in 0..3 {
            l.take(b"a", t).unwrap();
        }
        assert_eq!(l.take(b"a", t), Err(1));
        // Another key is not affected.
        l.take(b"b", t).unwrap();
        // Half a second later one token is back.
        l.take(b"a", t + Duration::from_millis(500)).unwrap();
        assert!(l.take(b"a", t + Duration::from_millis(500)).is_err());
    }
}
