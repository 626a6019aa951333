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
use std::str::FromStr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// `N/period`, e.g. `120/1m`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    pub burst: u32,
    pub period: Duration,
}

impl FromStr for Rate {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (count, period) = s
            .trim()
            .split_once('/')
            .ok_or_else(|| format!("{s:?} is not N/period, e.g. 120/1m"))?;
        let burst: u32 = count
            .trim()
            .parse()
            .map_err(|_| format!("{count:?} is not a whole number"))?;
        let period = humantime::parse_duration(period.trim())
            .map_err(|_| format!("{period:?} is not a duration"))?;
        if burst == 0 || period.is_zero() {
            return Err("both N and the period must be above zero".into());
        }
        Ok(Self { burst, period })
    }
}

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
    use super::*;

    #[test]
    fn rates_parse_and_reject_nonsense() {
        assert_eq!(
            "120/1m".parse::<Rate>().unwrap(),
            Rate {
                burst: 120,
                period: Duration::from_secs(60)
            }
        );
        for bad in ["", "120", "0/1s", "5/0s", "x/1s", "5/soon"] {
            assert!(bad.parse::<Rate>().is_err(), "{bad}");
        }
    }

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
