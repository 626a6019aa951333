//! The Web Push settings. Push is off until `HERALD_VAPID_PRIVATE_KEY_FILE`
//! names a key; with it, `HERALD_VAPID_SUBJECT` is required.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;

use super::endpoint::EndpointPolicy;
use super::vapid::VapidKey;
use crate::config::ConfigError;
use crate::config::values::{duration, positive_duration, size};
use crate::names::IMPORTANCE;

#[derive(Debug, Clone, Args)]
pub struct PushArgs {
    /// PEM file with the VAPID EC P-256 private key (SEC1 or PKCS#8); unset, push is off.
    #[arg(long, env = "HERALD_VAPID_PRIVATE_KEY_FILE")]
    pub vapid_private_key_file: Option<PathBuf>,
    /// mailto: or https: contact put in the VAPID token's `sub`.
    #[arg(long, env = "HERALD_VAPID_SUBJECT", value_parser = subject)]
    pub vapid_subject: Option<String>,
    /// How long after a notification appears herald waits for an IN_APP
    /// delivery or a read before pushing it.
    #[arg(long, env = "HERALD_PUSH_DELAY", default_value = "10s", value_parser = duration)]
    pub push_delay: Duration,
    /// Notifications below this importance are never pushed.
    #[arg(long, env = "HERALD_PUSH_MIN_IMPORTANCE", default_value = "normal", value_parser = importance)]
    pub push_min_importance: String,
    /// TTL of a push for notifications without expires_at.
    #[arg(long, env = "HERALD_PUSH_TTL", default_value = "1d", value_parser = ttl)]
    pub push_ttl: Duration,
    /// `public`: only https endpoints on public addresses; `any`: any http(s) endpoint.
    #[arg(long, env = "HERALD_PUSH_ENDPOINTS", default_value = "public")]
    pub push_endpoints: EndpointPolicy,
    /// Subscriptions one user may hold; a new one beyond it replaces the least recently used.
    #[arg(long, env = "HERALD_MAX_PUSH_SUBSCRIPTIONS_PER_USER", default_value = "20", value_parser = size::<1, 1000>)]
    pub max_push_subscriptions_per_user: usize,
}

/// Push, configured and on.
#[derive(Debug, Clone)]
pub struct PushConfig {
    pub key: Arc<VapidKey>,
    pub subject: String,
    pub delay: Duration,
    /// The lowest importance pushed, one of [`IMPORTANCE`].
    pub min_importance: String,
    pub ttl: Duration,
    pub endpoints: EndpointPolicy,
    pub max_subscriptions_per_user: usize,
}

impl PushArgs {
    /// `None` when push is off; the key file is read and checked here.
    pub fn config(&self) -> Result<Option<PushConfig>, ConfigError> {
        let Some(path) = &self.vapid_private_key_file else {
            return Ok(None);
        };
        let pem = std::fs::read_to_string(path).map_err(|e| {
            ConfigError::invalid(
                "HERALD_VAPID_PRIVATE_KEY_FILE",
                format!("cannot read {}: {e}", path.display()),
            )
        })?;
        let key = VapidKey::from_pem(&pem)
            .map_err(|reason| ConfigError::invalid("HERALD_VAPID_PRIVATE_KEY_FILE", reason))?;
        let subject = self.vapid_subject.clone().ok_or(ConfigError::Missing {
            var: "HERALD_VAPID_SUBJECT",
            hint: "push services need a contact: mailto:ops@example.com or https://example.com/contact",
        })?;
        Ok(Some(PushConfig {
            key: Arc::new(key),
            subject,
            delay: self.push_delay,
            min_importance: self.push_min_importance.clone(),
            ttl: self.push_ttl,
            endpoints: self.push_endpoints,
            max_subscriptions_per_user: self.max_push_subscriptions_per_user,
        }))
    }
}

/// `mailto:` or `https:` contact, as RFC 8292 asks.
fn subject(raw: &str) -> Result<String, String> {
    let raw = raw.trim();
    let valid = (raw
        .strip_prefix("mailto:")
        .is_some_and(|rest| rest.contains('@'))
        || raw
            .strip_prefix("https://")
            .is_some_and(|rest| !rest.is_empty()))
        && raw.len() <= 512
        && !raw.chars().any(char::is_control);
    if valid {
        Ok(raw.to_owned())
    } else {
        Err(format!(
            "{raw:?} is not a mailto: or https: contact, e.g. mailto:ops@example.com"
        ))
    }
}

fn importance(raw: &str) -> Result<String, String> {
    let raw = raw.trim();
    if IMPORTANCE.contains(&raw) {
        Ok(raw.to_owned())
    } else {
        Err(format!("{raw:?} is not one of low, normal, high, urgent"))
    }
}

/// Push services keep a message 28 days at most.
fn ttl(raw: &str) -> Result<Duration, String> {
    match positive_duration(raw)? {
        long if long > Duration::from_secs(28 * 86_400) => Err("use at most 28d".into()),
        ttl => Ok(ttl),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_importances_and_ttls_are_checked() {
        assert!(subject("mailto:ops@example.com").is_ok());
        assert!(subject("https://example.com/contact").is_ok());
        assert!(subject("ops@example.com").is_err());
        assert!(subject("mailto:nobody").is_err());
        assert!(importance("urgent").is_ok());
        assert!(importance("critical").is_err());
        assert!(ttl("29d").is_err());
        assert!(ttl("0s").is_err());
        assert_eq!(ttl("1d"), Ok(Duration::from_secs(86_400)));
    }
}
