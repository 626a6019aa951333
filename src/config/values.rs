//! The types of herald's settings and their parsers, as clap `value_parser`s.
//!
//! Each parser takes the text of one setting and returns its value or a
//! reason; [`crate::cli`] turns a refusal into one line naming the setting
//! (`invalid PORT: "eighty" is not a port number (0-65535)`). Checks that
//! need two settings together live in [`super`].

use std::net::IpAddr;
use std::str::FromStr;
use std::time::Duration;

/// `N/period`, e.g. `120/1m`: bursts of N, refilled N every period.
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

/// Bounds on Engine.IO sessions that have not sent their Socket.IO CONNECT.
#[derive(Debug, Clone, Copy)]
pub struct HandshakeBounds {
    /// New sessions per client address.
    pub rate: Rate,
    /// Sessions waiting for CONNECT, in all.
    pub pending: usize,
    /// Sessions waiting for CONNECT, per client address.
    pub pending_per_address: usize,
}

/// The origins browsers may connect from (CORS and WebSocket `Origin`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CorsOrigins {
    /// `*`, written explicitly: any origin.
    Any,
    /// Exact origins such as `https://app.example.com`.
    List(Vec<String>),
}

impl FromStr for CorsOrigins {
    type Err = String;

    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        let origins = list(raw);
        if origins.iter().any(|o| o == "*") {
            if origins.len() > 1 {
                return Err("`*` allows every origin and cannot be combined with others".into());
            }
            return Ok(Self::Any);
        }
        for origin in &origins {
            let valid = (origin.starts_with("http://") || origin.starts_with("https://"))
                && !origin.ends_with('/')
                && origin
                    .split("://")
                    .nth(1)
                    .is_some_and(|host| !host.is_empty() && !host.contains('/'));
            if !valid {
                return Err(format!(
                    "{origin:?} is not an origin like https://app.example.com"
                ));
            }
        }
        Ok(Self::List(origins))
    }
}

impl CorsOrigins {
    pub fn allows(&self, origin: &str) -> bool {
        match self {
            Self::Any => true,
            Self::List(list) => list
                .iter()
                .any(|allowed| allowed.eq_ignore_ascii_case(origin)),
        }
    }
}

/// Durations such as `5s`, `1h`, `7d` (humantime's syntax).
pub fn duration(raw: &str) -> Result<Duration, String> {
    humantime::parse_duration(raw.trim())
        .map_err(|_| format!("{raw:?} is not a duration like 5s, 1h or 7d"))
}

/// A duration above zero.
pub fn positive_duration(raw: &str) -> Result<Duration, String> {
    match duration(raw)? {
        zero if zero.is_zero() => Err("must be above zero".into()),
        duration => Ok(duration),
    }
}

/// How often a JWKS document is fetched: `1s` at least, so a typo cannot
/// make herald poll the provider in a loop.
pub fn refresh_period(raw: &str) -> Result<Duration, String> {
    match duration(raw)? {
        short if short < Duration::from_secs(1) => {
            Err("use at least 1s (the default is 10m)".into())
        }
        period => Ok(period),
    }
}

/// A claim name, such as `sub`.
pub fn claim(raw: &str) -> Result<String, String> {
    let name = raw.trim();
    if name.is_empty() || name.contains(char::is_whitespace) {
        return Err(format!("{raw:?} is not a claim name such as sub"));
    }
    Ok(name.to_owned())
}

/// A whole number from `MIN` to `MAX`.
pub fn count<const MIN: u32, const MAX: u32>(raw: &str) -> Result<u32, String> {
    raw.trim()
        .parse::<u32>()
        .ok()
        .filter(|n| (MIN..=MAX).contains(n))
        .ok_or_else(|| format!("{raw:?} is not a whole number from {MIN} to {MAX}"))
}

/// [`count`], as a size.
pub fn size<const MIN: u32, const MAX: u32>(raw: &str) -> Result<usize, String> {
    count::<MIN, MAX>(raw).map(|n| n as usize)
}

pub fn port(raw: &str) -> Result<u16, String> {
    raw.trim()
        .parse()
        .map_err(|_| format!("{raw:?} is not a port number (0-65535)"))
}

pub fn ip(raw: &str) -> Result<IpAddr, String> {
    raw.trim()
        .parse()
        .map_err(|_| format!("{raw:?} is not an IP address"))
}

/// `true`/`false` (or `1`/`0`, `yes`/`no`).
pub fn boolean(raw: &str) -> Result<bool, String> {
    match raw.trim() {
        "true" | "1" | "yes" => Ok(true),
        "false" | "0" | "no" | "" => Ok(false),
        other => Err(format!("{other:?} is not true or false")),
    }
}

/// A PostgreSQL URL, checked by the driver that will use it.
pub fn postgres_url(raw: &str) -> Result<String, String> {
    raw.parse::<tokio_postgres::Config>()
        .map(|_| raw.to_owned())
        .map_err(|e| format!("not a PostgreSQL URL ({e})"))
}

/// A secret a client must present: long enough not to be guessed.
pub fn secret(raw: &str) -> Result<String, String> {
    if raw.trim().len() < 16 {
        return Err("use at least 16 characters".into());
    }
    Ok(raw.trim().to_owned())
}

fn list(raw: &str) -> Vec<String> {
    raw.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cors_star_must_stand_alone() {
        assert_eq!("*".parse::<CorsOrigins>().unwrap(), CorsOrigins::Any);
        assert!("*,http://a.example".parse::<CorsOrigins>().is_err());
    }

    #[test]
    fn cors_rejects_paths_and_trailing_slashes() {
        assert!("http://a.example/".parse::<CorsOrigins>().is_err());
        assert!("a.example".parse::<CorsOrigins>().is_err());
        let list: CorsOrigins = " http://a.example , https://b.example:8443 "
            .parse()
            .unwrap();
        assert!(list.allows("http://a.example"));
        assert!(list.allows("https://b.example:8443"));
        assert!(!list.allows("http://evil.example"));
    }

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
    fn counts_durations_and_booleans_are_bounded_and_strict() {
        assert_eq!(count::<1, 10>("10"), Ok(10));
        assert!(count::<1, 10>("0").is_err());
        assert!(count::<1, 10>("-1").is_err());
        assert_eq!(positive_duration("1s"), Ok(Duration::from_secs(1)));
        assert!(positive_duration("0s").is_err());
        assert!(duration("soon").is_err());
        assert_eq!(boolean("yes"), Ok(true));
        assert!(boolean("maybe").is_err());
        assert!(secret("short").is_err());
        assert_eq!(refresh_period("1s"), Ok(Duration::from_secs(1)));
        assert!(refresh_period("100ms").is_err());
        assert_eq!(claim(" uid "), Ok("uid".to_owned()));
        assert!(claim(" ").is_err() && claim("a b").is_err());
    }
}
