//! Rate limits: connects and failed authentications per client address,
//! and client events per socket. Token buckets: `N/period` allows bursts of
//! N and refills N every period. Past a limit a connect is refused with
//! `rate_limited` and an event is answered with a `rate_limited` ack;
//! neither costs a database round trip.
//!
//! The two per-address buckets compose so that anonymous garbage cannot
//! lock out good tokens behind the same address (an office NAT, a proxy):
//! a connect whose token verifies takes from `HERALD_CONNECT_RATE_LIMIT`;
//! an attempt whose credentials are refused takes from
//! `HERALD_AUTH_FAILURE_LIMIT`, and once that is empty further *failing*
//! attempts are answered `rate_limited` instead of their reason. Neither
//! bucket is charged by the other's attempts.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Instant;

pub use crate::config::Rate;

/// One bucket of tokens.
#[derive(Debug, Clone)]
pub struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    pub fn full(rate: Rate) -> Self {
        Self {
            tokens: f64::from(rate.burst),
            at: Instant::now(),
        }
    }

    /// Takes a token if there is one.
    pub fn take(&mut self, rate: Rate, now: Instant) -> bool {
        let refill = now.duration_since(self.at).as_secs_f64() / rate.period.as_secs_f64()
            * f64::from(rate.burst);
        self.tokens = (self.tokens + refill).min(f64::from(rate.burst));
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    fn is_full(&self, rate: Rate, now: Instant) -> bool {
        let refill = now.duration_since(self.at).as_secs_f64() / rate.period.as_secs_f64()
            * f64::from(rate.burst);
        self.tokens + refill >= f64::from(rate.burst)
    }
}

/// A rate limit per key: client address, user.
#[derive(Debug)]
pub struct Limiter<K> {
    rate: Rate,
    buckets: Mutex<HashMap<K, Bucket>>,
}

/// Connects, or failed authentications, per client address.
pub type ConnectLimiter = Limiter<IpAddr>;

/// Addresses tracked before full buckets are forgotten.
const TRACKED: usize = 10_000;

impl<K: std::hash::Hash + Eq> Limiter<K> {
    pub fn new(rate: Rate) -> Self {
        Self {
            rate,
            buckets: Mutex::default(),
        }
    }

    pub fn allow(&self, key: K) -> bool {
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() >= TRACKED {
            // A full bucket says nothing a new one would not.
            buckets.retain(|_, bucket| !bucket.is_full(self.rate, now));
        }
        buckets
            .entry(key)
            .or_insert_with(|| Bucket::full(self.rate))
            .take(self.rate, now)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_bucket_allows_its_burst_then_refills() {
        let rate = Rate {
            burst: 3,
            period: Duration::from_secs(3),
        };
        let start = Instant::now();
        let mut bucket = Bucket::full(rate);
        assert!((0..3).all(|_| bucket.take(rate, start)));
        assert!(!bucket.take(rate, start));
        assert!(bucket.take(rate, start + Duration::from_secs(1)));
        assert!(!bucket.take(rate, start + Duration::from_secs(1)));
    }

    #[test]
    fn addresses_are_limited_separately() {
        let limiter = ConnectLimiter::new(Rate {
            burst: 1,
            period: Duration::from_secs(60),
        });
        let (a, b): (IpAddr, IpAddr) = ("127.0.0.1".parse().unwrap(), "127.0.0.2".parse().unwrap());
        assert!(limiter.allow(a));
        assert!(!limiter.allow(a));
        assert!(limiter.allow(b));
    }
}
