//! Per-key token buckets (per session, per client IP), sans I/O: time comes in as an argument.
//!
//! A bucket holds up to `burst` tokens and refills at `per_second`; a call takes one token or
//! is refused with the wait until the next one. Buckets that have refilled to full are
//! forgotten when the table grows past its bound, so a flood of distinct keys cannot grow
//! memory without limit (a full bucket and a missing one behave the same); the sweep runs again
//! only once the table has doubled, so a flood of new keys costs O(1) a call, not a scan each.
//! Anonymous callers are keyed by [`client_key`]: an IPv6 client by its /64, the block one
//! subscriber gets, so rotating addresses inside it buys no fresh buckets.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::Duration;

/// How fast a key may call.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    /// Tokens refilled per second.
    pub per_second: f64,
    /// Tokens a key may spend at once.
    pub burst: f64,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: f64,
}

/// Token buckets keyed by `K`.
#[derive(Debug)]
pub struct RateLimiter<K> {
    rate: Rate,
    max_keys: usize,
    buckets: HashMap<K, Bucket>,
    /// Buckets left after the last sweep.
    swept_to: usize,
}

impl<K: Hash + Eq + Clone> RateLimiter<K> {
    /// A limiter remembering at most about `max_keys` non-full buckets.
    pub fn new(rate: Rate, max_keys: usize) -> Self {
        Self {
            rate,
            max_keys,
            buckets: HashMap::new(),
            swept_to: 0,
        }
    }

    /// Takes a token for `key` at `now` (seconds on any monotonic clock); `Err(wait)` if none.
    pub fn check(&mut self, key: &K, now: f64) -> Result<(), Duration> {
        if self.buckets.len() >= self.max_keys.max(2 * self.swept_to)
            && !self.buckets.contains_key(key)
        {
            let rate = self.rate;
            self.buckets
                .retain(|_, bucket| refilled(rate, *bucket, now) < rate.burst);
            self.swept_to = self.buckets.len();
        }
        let bucket = self.buckets.entry(key.clone()).or_insert(Bucket {
            tokens: self.rate.burst,
            at: now,
        });
        let tokens = refilled(self.rate, *bucket, now);
        if tokens >= 1.0 {
            *bucket = Bucket {
                tokens: tokens - 1.0,
                at: now,
            };
            Ok(())
        } else {
            *bucket = Bucket { tokens, at: now };
            let wait = (1.0 - tokens) / self.rate.per_second;
            Err(Duration::from_secs_f64(wait.max(0.0)))
        }
    }

    /// Keys with a bucket now.
    pub fn tracked(&self) -> usize {
        self.buckets.len()
    }
}

/// The key an anonymous caller is limited by: an IPv4 address (also when mapped into IPv6), or
/// an IPv6 address's /64.
pub fn client_key(ip: std::net::IpAddr) -> std::net::IpAddr {
    match ip {
        std::net::IpAddr::V4(v4) => v4.into(),
        std::net::IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.into(),
            None => std::net::Ipv6Addr::from(u128::from(v6) & !((1u128 << 64) - 1)).into(),
        },
    }
}

fn refilled(rate: Rate, bucket: Bucket, now: f64) -> f64 {
    let elapsed = (now - bucket.at).max(0.0);
    (bucket.tokens + elapsed * rate.per_second).min(rate.burst)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const RATE: Rate = Rate {
        per_second: 10.0,
        burst: 5.0,
    };

    #[test]
    fn addresses_rotated_inside_one_ipv6_64_share_a_bucket() {
        let mut limiter = RateLimiter::new(
            Rate {
                per_second: 1.0,
                burst: 3.0,
            },
            1000,
        );
        let block: u128 = 0x2001_0db8_0000_0001 << 64;
        let refused = (0..100u128)
            .map(|n| std::net::IpAddr::from(std::net::Ipv6Addr::from(block | (n * 7919 + 1))))
            .filter(|ip| limiter.check(&client_key(*ip), 0.0).is_err())
            .count();
        assert_eq!(refused, 97, "one /64 is one client");
        assert_eq!(limiter.tracked(), 1);
        let mapped: std::net::IpAddr = "::ffff:192.0.2.7".parse().expect("ip");
        assert_eq!(
            client_key(mapped),
            "192.0.2.7".parse::<std::net::IpAddr>().expect("ip")
        );
    }

    #[test]
    fn a_flood_of_new_keys_sweeps_only_when_the_table_doubles() {
        let mut limiter = RateLimiter::new(
            Rate {
                per_second: 1.0,
                burst: 2.0,
            },
            100,
        );
        // Every key spends a token, so none is full and no sweep can free anything.
        for key in 0..1_000u32 {
            let _ = limiter.check(&key, 0.0);
        }
        assert_eq!(limiter.tracked(), 1_000, "nothing was forgotten early");
        assert!(limiter.swept_to >= 100 && limiter.swept_to <= 1_000);
    }

    #[test]
    fn a_burst_then_the_steady_rate() {
        let mut limiter = RateLimiter::new(RATE, 100);
        for _ in 0..5 {
            assert_eq!(limiter.check(&"a", 0.0), Ok(()));
        }
        let wait = limiter.check(&"a", 0.0).expect_err("burst spent");
        assert!((wait.as_secs_f64() - 0.1).abs() < 1e-9, "{wait:?}");
        assert_eq!(limiter.check(&"b", 0.0), Ok(()), "keys are independent");
        assert_eq!(limiter.check(&"a", 0.1), Ok(()), "one token per 100 ms");
        assert!(limiter.check(&"a", 0.1).is_err());
    }

    #[test]
    fn full_buckets_are_forgotten_when_the_table_is_at_its_bound() {
        let mut limiter = RateLimiter::new(RATE, 2);
        limiter.check(&1, 0.0).expect("1");
        limiter.check(&2, 0.0).expect("2");
        // At t = 1 s both have refilled: they are dropped to make room.
        limiter.check(&3, 1.0).expect("3");
        assert_eq!(limiter.tracked(), 1);
    }

    proptest! {
        /// Over any schedule of calls, a key never gets more than burst + rate × time.
        #[test]
        fn never_more_than_burst_plus_rate_times_time(gaps in proptest::collection::vec(0u32..200, 1..300)) {
            let mut limiter = RateLimiter::new(RATE, 10);
            let mut now = 0.0;
            let mut granted = 0u32;
            for gap in gaps {
                now += f64::from(gap) / 1000.0;
                if limiter.check(&"k", now).is_ok() {
                    granted += 1;
                }
            }
            prop_assert!(f64::from(granted) <= RATE.burst + RATE.per_second * now + 1e-9);
        }
    }
}
