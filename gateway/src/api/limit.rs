//! Rate limits: one token bucket per key (client address, portal key or
//! certificate, user name), kept by `governor`'s keyed limiter (GCRA over a
//! sharded concurrent map). A check touches only its key's shard; keys whose
//! bucket is full again are dropped by [`Limiter::sweep`], which the API
//! runs on a timer, so a flood from many addresses costs memory only for as
//! long as its buckets are not full and never slows a check down.

use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, MonotonicClock};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DashMapStateStore;
use governor::{Quota, RateLimiter};

/// How often the API drops the buckets that are full again.
pub const SWEEP_EVERY: Duration = Duration::from_secs(10);

/// The Retry-After of a rate of 0 (no refill once the burst is spent).
const NEVER_SECS: u64 = 3600;

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

    /// The GCRA quota: one token every `60 s / per_minute`, `burst` at once.
    /// A rate of 0 refills one token per the longest period the limiter's
    /// nanosecond clock can add up for this burst (at least hours, years
    /// for ordinary bursts): in practice never, as the config promises.
    fn quota(self) -> Quota {
        let burst = NonZeroU32::new(self.burst.max(1)).unwrap_or(NonZeroU32::MIN);
        let period = match self.per_minute {
            0 => {
                // GCRA adds `period * burst` to a nanosecond count since the
                // limiter started: keep that far from u64::MAX.
                let cap = u64::MAX / 4 / (u64::from(burst.get()) + 1);
                Duration::from_nanos(cap.min(100 * 365 * 24 * 3600 * 1_000_000_000))
            }
            n => Duration::from_secs(60) / n,
        };
        Quota::with_period(period)
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
            .allow_burst(burst)
    }
}

/// governor's keyed limiter over a `DashMap`, keys as bytes.
type Buckets<C> =
    RateLimiter<Vec<u8>, DashMapStateStore<Vec<u8>>, C, NoOpMiddleware<<C as Clock>::Instant>>;

/// Token buckets by key.
pub struct Limiter<C: Clock = MonotonicClock> {
    rate: Rate,
    clock: C,
    buckets: Buckets<C>,
}

impl Limiter {
    /// A limiter applying `rate` to every key, on the monotonic clock.
    pub fn new(rate: Rate) -> Limiter {
        Limiter::with_clock(rate, MonotonicClock)
    }
}

impl<C: Clock + Clone> Limiter<C> {
    /// A limiter applying `rate` to every key, reading time from `clock`.
    pub fn with_clock(rate: Rate, clock: C) -> Limiter<C> {
        Limiter {
            rate,
            buckets: RateLimiter::dashmap_with_clock(rate.quota(), clock.clone()),
            clock,
        }
    }

    /// Takes a token for `key` now: `Ok` if there was one, else the seconds
    /// until there will be (rounded up, at least 1).
    pub fn take(&self, key: &[u8]) -> Result<(), u64> {
        match self.buckets.check_key(&key.to_vec()) {
            Ok(()) => Ok(()),
            Err(_) if self.rate.per_minute == 0 => Err(NEVER_SECS),
            Err(not_until) => {
                let wait = not_until.wait_time_from(self.clock.now());
                Err(wait.as_secs_f64().ceil().max(1.0) as u64)
            }
        }
    }

    /// Drops the buckets that are full again (they are the same as no
    /// bucket) and gives their memory back.
    pub fn sweep(&self) {
        self.buckets.retain_recent();
        self.buckets.shrink_to_fit();
    }

    /// How many keys have a bucket.
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    /// Whether no key has a bucket.
    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }
}

/// How long one key's rate-limit hits are summed into one log line.
pub const LOG_EVERY: std::time::Duration = Duration::from_secs(60);

/// Keys whose hits are sampled at once; beyond, hits are only counted.
const LOG_KEYS: usize = 10_000;

/// What to log of a rate-limit hit (see [`HitLog`]).
#[derive(Debug, PartialEq, Eq)]
pub enum Hit {
    /// The first hit of the key in its interval: log it, with the hits of
    /// the interval before that were not logged.
    Log {
        /// Hits of the key not logged since the last logged one.
        suppressed: u64,
    },
    /// Counted, not logged.
    Suppressed,
}

/// Samples rate-limit hits for the log, so a flood does not flood it: the
/// first hit per limit and key in each [`LOG_EVERY`] is logged, the rest
/// are counted and reported with the next logged one, or by
/// [`HitLog::expired`] when the interval ends quietly.
#[derive(Debug, Default)]
pub struct HitLog {
    keys: std::sync::Mutex<std::collections::HashMap<(&'static str, String), Window>>,
    /// Hits of keys beyond [`LOG_KEYS`], not logged one by one.
    overflow: std::sync::atomic::AtomicU64,
}

#[derive(Debug)]
struct Window {
    started: std::time::Instant,
    suppressed: u64,
}

impl HitLog {
    /// A hit of `limit` (`client`, `portal`, `user`) for `key` at `now`.
    pub fn hit(&self, limit: &'static str, key: &str, now: std::time::Instant) -> Hit {
        let Ok(mut keys) = self.keys.lock() else {
            return Hit::Suppressed;
        };
        if let Some(w) = keys.get_mut(&(limit, key.to_owned())) {
            if now.saturating_duration_since(w.started) < LOG_EVERY {
                w.suppressed += 1;
                return Hit::Suppressed;
            }
            let suppressed = std::mem::take(&mut w.suppressed);
            w.started = now;
            return Hit::Log { suppressed };
        }
        if keys.len() >= LOG_KEYS {
            self.overflow
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return Hit::Suppressed;
        }
        keys.insert(
            (limit, key.to_owned()),
            Window {
                started: now,
                suppressed: 0,
            },
        );
        Hit::Log { suppressed: 0 }
    }

    /// Drops the keys whose interval ended by `now`; returns those with
    /// hits not logged (limit, key, count), and the count of hits of keys
    /// that did not fit (as key `*`).
    pub fn expired(&self, now: std::time::Instant) -> Vec<(&'static str, String, u64)> {
        let mut out = Vec::new();
        if let Ok(mut keys) = self.keys.lock() {
            keys.retain(|(limit, key), w| {
                let over = now.saturating_duration_since(w.started) >= LOG_EVERY;
                if over && w.suppressed > 0 {
                    out.push((*limit, key.clone(), w.suppressed));
                }
                !over
            });
        }
        let overflow = self.overflow.swap(0, std::sync::atomic::Ordering::Relaxed);
        if overflow > 0 {
            out.push(("any", "*".to_owned(), overflow));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use governor::clock::FakeRelativeClock;

    fn limiter(rate: Rate) -> (Limiter<FakeRelativeClock>, FakeRelativeClock) {
        let clock = FakeRelativeClock::default();
        (Limiter::with_clock(rate, clock.clone()), clock)
    }

    #[test]
    fn a_bucket_allows_its_burst_then_refills_at_its_rate() {
        let (l, clock) = limiter(Rate::per_minute(120, 3));
        for _ in 0..3 {
            l.take(b"a").unwrap();
        }
        assert_eq!(l.take(b"a"), Err(1));
        // Another key is not affected.
        l.take(b"b").unwrap();
        // Half a second later one token is back.
        clock.advance(Duration::from_millis(500));
        l.take(b"a").unwrap();
        assert!(l.take(b"a").is_err());
    }

    #[test]
    fn retry_after_is_the_wait_for_the_next_token_rounded_up() {
        // 10 a minute: one token every 6 s.
        let (l, clock) = limiter(Rate::per_minute(10, 5));
        for _ in 0..5 {
            l.take(b"alice").unwrap();
        }
        assert_eq!(l.take(b"alice"), Err(6));
        clock.advance(Duration::from_millis(4500));
        assert_eq!(l.take(b"alice"), Err(2));
        clock.advance(Duration::from_millis(1500));
        l.take(b"alice").unwrap();
    }

    #[test]
    fn a_rate_of_zero_never_refills() {
        let (l, clock) = limiter(Rate::per_minute(0, 2));
        l.take(b"k").unwrap();
        l.take(b"k").unwrap();
        assert_eq!(l.take(b"k"), Err(NEVER_SECS));
        clock.advance(Duration::from_secs(30 * 24 * 3600));
        assert_eq!(l.take(b"k"), Err(NEVER_SECS));
        // Even the largest burst the config allows adds up without overflow.
        let (l, clock) = limiter(Rate::per_minute(0, 1_000_000));
        l.take(b"k").unwrap();
        clock.advance(Duration::from_secs(3600));
        l.take(b"k").unwrap();
    }

    #[test]
    fn a_sweep_drops_full_buckets_and_keeps_the_ones_still_limited() {
        // One token a second, ten at once.
        let (l, clock) = limiter(Rate::per_minute(60, 10));
        for i in 0u32..100_000 {
            l.take(&i.to_be_bytes()).unwrap();
        }
        for _ in 0..10 {
            l.take(b"flooder").unwrap();
        }
        assert!(l.take(b"flooder").is_err());
        assert_eq!(l.len(), 100_001);
        // 2.5 s later the one-request buckets are full again and go; the
        // flooder's is not (2 tokens back of 10), so it stays.
        clock.advance(Duration::from_millis(2500));
        l.sweep();
        assert_eq!(l.len(), 1);
        l.take(b"flooder").unwrap();
        l.take(b"flooder").unwrap();
        assert!(l.take(b"flooder").is_err(), "the flooder kept its state");
        clock.advance(Duration::from_secs(20));
        l.sweep();
        assert!(l.is_empty());
    }

    #[test]
    fn the_log_gets_the_first_hit_per_key_and_interval_and_a_count_of_the_rest() {
        let log = HitLog::default();
        let t0 = std::time::Instant::now();
        assert_eq!(
            log.hit("client", "10.0.0.1", t0),
            Hit::Log { suppressed: 0 }
        );
        for _ in 0..1000 {
            assert_eq!(log.hit("client", "10.0.0.1", t0), Hit::Suppressed);
        }
        // Another key, or another limit, is logged on its own.
        assert_eq!(log.hit("user", "10.0.0.1", t0), Hit::Log { suppressed: 0 });
        assert_eq!(
            log.hit("client", "10.0.0.2", t0),
            Hit::Log { suppressed: 0 }
        );
        // The next interval's first hit reports the ones not logged.
        let t1 = t0 + LOG_EVERY;
        assert_eq!(
            log.hit("client", "10.0.0.1", t1),
            Hit::Log { suppressed: 1000 }
        );
        log.hit("client", "10.0.0.1", t1);
        // An interval that ends quietly is reported by `expired`.
        assert!(log.expired(t1).iter().all(|(_, k, _)| k != "10.0.0.1"));
        assert_eq!(
            log.expired(t1 + LOG_EVERY),
            vec![("client", "10.0.0.1".to_owned(), 1)]
        );
        assert!(log.expired(t1 + LOG_EVERY).is_empty());
    }
}
