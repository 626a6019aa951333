//! Configuration: the settings docs/reference.md lists, read from the
//! environment or the matching flags, validated once at start-up.
//!
//! Every setting arrives as text and is checked here, so a bad value stops
//! herald with one line that names the variable (`invalid PORT: ...`), never
//! with a panic or a half-started server.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::auth::{JwtConfig, JwtKeyError};
use crate::gateway::admission::Bounds;
use crate::gateway::limits::Rate;

/// A setting that is missing or malformed. The message names the variable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{var} is required: {hint}")]
    Missing {
        var: &'static str,
        hint: &'static str,
    },
    #[error("invalid {var}: {reason}")]
    Invalid { var: &'static str, reason: String },
}

impl ConfigError {
    pub fn invalid(var: &'static str, reason: impl Into<String>) -> Self {
        Self::Invalid {
            var,
            reason: reason.into(),
        }
    }
}

/// Where the database is.
#[derive(Debug, Clone, Args)]
pub struct DatabaseArgs {
    /// PostgreSQL URL for queries.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
}

impl DatabaseArgs {
    pub fn url(&self) -> Result<String, ConfigError> {
        let url = self.database_url.clone().ok_or(ConfigError::Missing {
            var: "DATABASE_URL",
            hint: "set it to a PostgreSQL URL, e.g. postgres://user@localhost/herald",
        })?;
        check_postgres_url("DATABASE_URL", &url)?;
        Ok(url)
    }
}

/// How tokens are checked (and, for `herald token`, signed).
#[derive(Debug, Clone, Args)]
pub struct JwtArgs {
    /// HS256 key; required unless JWT_PUBLIC_KEY_FILE is set.
    #[arg(long, env = "JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// PEM public key that verifies tokens (with JWT_ALGORITHM).
    #[arg(long, env = "JWT_PUBLIC_KEY_FILE")]
    pub jwt_public_key_file: Option<PathBuf>,
    /// PEM private key that `herald token` signs with when keys are asymmetric.
    #[arg(long, env = "JWT_PRIVATE_KEY_FILE")]
    pub jwt_private_key_file: Option<PathBuf>,
    /// RS256, ES256 or EdDSA (with JWT_PUBLIC_KEY_FILE).
    #[arg(long, env = "JWT_ALGORITHM")]
    pub jwt_algorithm: Option<String>,
    /// Required `iss` claim, when set.
    #[arg(long, env = "JWT_ISSUER")]
    pub jwt_issuer: Option<String>,
    /// Required `aud` claim, when set.
    #[arg(long, env = "JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,
    /// Clock leeway for `exp` and `nbf`.
    #[arg(long, env = "JWT_LEEWAY", default_value = "5s")]
    pub jwt_leeway: String,
}

impl JwtArgs {
    pub fn config(&self) -> Result<JwtConfig, ConfigError> {
        let leeway = parse_duration("JWT_LEEWAY", &self.jwt_leeway)?;
        let issuer = non_empty(self.jwt_issuer.as_deref());
        let audience = non_empty(self.jwt_audience.as_deref());
        let config = match (
            &self.jwt_public_key_file,
            non_empty(self.jwt_secret.as_deref()),
        ) {
            (Some(path), _) => {
                let algorithm = self.jwt_algorithm.as_deref().ok_or(ConfigError::Missing {
                    var: "JWT_ALGORITHM",
                    hint: "name the public key's algorithm: RS256, ES256 or EdDSA",
                })?;
                let public = read_key("JWT_PUBLIC_KEY_FILE", path)?;
                let private = match &self.jwt_private_key_file {
                    Some(path) => Some(read_key("JWT_PRIVATE_KEY_FILE", path)?),
                    None => None,
                };
                JwtConfig::asymmetric(algorithm, &public, private.as_deref()).map_err(
                    |e| match e {
                        JwtKeyError::Algorithm(reason) => {
                            ConfigError::invalid("JWT_ALGORITHM", reason)
                        }
                        JwtKeyError::PublicKey(reason) => {
                            ConfigError::invalid("JWT_PUBLIC_KEY_FILE", reason)
                        }
                        JwtKeyError::PrivateKey(reason) => {
                            ConfigError::invalid("JWT_PRIVATE_KEY_FILE", reason)
                        }
                    },
                )?
            }
            (None, Some(secret)) => {
                if let Some(algorithm) = non_empty(self.jwt_algorithm.as_deref())
                    && algorithm != "HS256"
                {
                    return Err(ConfigError::invalid(
                        "JWT_ALGORITHM",
                        format!("{algorithm} needs JWT_PUBLIC_KEY_FILE; JWT_SECRET is for HS256"),
                    ));
                }
                if secret.len() < 16 {
                    return Err(ConfigError::invalid(
                        "JWT_SECRET",
                        "use at least 16 bytes (32 random bytes recommended)",
                    ));
                }
                JwtConfig::hs256(secret.as_bytes())
            }
            (None, None) => {
                return Err(ConfigError::Missing {
                    var: "JWT_SECRET",
                    hint: "set JWT_SECRET (HS256) or JWT_PUBLIC_KEY_FILE with JWT_ALGORITHM",
                });
            }
        };
        Ok(config.with_claims(issuer, audience, leeway))
    }
}

/// Everything `herald serve` reads.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// URL for the dedicated LISTEN connection (must bypass transaction pooling).
    #[arg(long, env = "HERALD_LISTEN_URL", hide_env_values = true)]
    pub listen_url: Option<String>,
    /// HTTP bind address.
    #[arg(long, env = "HOST", default_value = "0.0.0.0")]
    pub host: String,
    /// HTTP port (0 picks a free one).
    #[arg(long, env = "PORT", default_value = "3030")]
    pub port: String,
    #[command(flatten)]
    pub jwt: JwtArgs,
    /// Comma-separated allowed origins; `*` allows any.
    #[arg(
        long,
        env = "CORS_ORIGINS",
        default_value = "http://localhost:3030,http://127.0.0.1:3030"
    )]
    pub cors_origins: String,
    /// Roles that join the `admin` room.
    #[arg(long, env = "HERALD_ADMIN_ROLES", default_value = "ADMIN,SUPER_ADMIN")]
    pub admin_roles: String,
    /// Unread notifications pushed on connect.
    #[arg(long, env = "HERALD_PENDING_LIMIT", default_value = "50")]
    pub pending_limit: String,
    /// Sockets one user may hold on this instance.
    #[arg(long, env = "HERALD_MAX_SOCKETS_PER_USER", default_value = "10")]
    pub max_sockets_per_user: String,
    /// Events a resume may replay; a client further behind gets sync:reset.
    #[arg(long, env = "HERALD_REPLAY_LIMIT", default_value = "1000")]
    pub replay_limit: String,
    /// How long events are kept.
    #[arg(long, env = "HERALD_EVENT_RETENTION", default_value = "7d")]
    pub event_retention: String,
    /// Connects with a verified token allowed per client address, as N/period.
    #[arg(long, env = "HERALD_CONNECT_RATE_LIMIT", default_value = "120/1m")]
    pub connect_rate_limit: String,
    /// Failed authentications allowed per client address, as N/period;
    /// past it, failing attempts are answered rate_limited.
    #[arg(long, env = "HERALD_AUTH_FAILURE_LIMIT", default_value = "60/1m")]
    pub auth_failure_limit: String,
    /// Client events allowed per socket, as N/period.
    #[arg(long, env = "HERALD_EVENT_RATE_LIMIT", default_value = "20/1s")]
    pub event_rate_limit: String,
    /// SENT records waiting for the delivery writer at most.
    #[arg(long, env = "HERALD_DELIVERY_QUEUE", default_value = "1000000")]
    pub delivery_queue: String,
    /// Take the client address from the last X-Forwarded-For entry (set it
    /// only behind a proxy that appends it, such as deploy/nginx.conf).
    #[arg(long, env = "HERALD_TRUST_PROXY", default_value = "false")]
    pub trust_proxy: String,
    /// Time a connection has to send a request head (new, or idle between
    /// requests) before it is closed.
    #[arg(long, env = "HERALD_HTTP_IDLE_TIMEOUT", default_value = "10s")]
    pub http_idle_timeout: String,
    /// Connections served at once; default: the open-file limit less what
    /// herald keeps for itself.
    #[arg(long, env = "HERALD_MAX_CONNECTIONS")]
    pub max_connections: Option<String>,
    /// New Engine.IO sessions allowed per client address, as N/period.
    #[arg(long, env = "HERALD_HANDSHAKE_RATE_LIMIT", default_value = "300/1m")]
    pub handshake_rate_limit: String,
    /// Sessions that have not sent CONNECT yet, in all.
    #[arg(long, env = "HERALD_MAX_PENDING_SESSIONS", default_value = "4096")]
    pub max_pending_sessions: String,
    /// Sessions that have not sent CONNECT yet, per client address.
    #[arg(long, env = "HERALD_MAX_PENDING_PER_ADDRESS", default_value = "32")]
    pub max_pending_per_address: String,
    /// Bearer token `/metrics` asks for; unset, `/metrics` is open.
    #[arg(long, env = "HERALD_METRICS_TOKEN", hide_env_values = true)]
    pub metrics_token: Option<String>,
    /// Skip the migrations on start.
    #[arg(long)]
    pub no_migrate: bool,
}

/// The validated configuration of a running server.
#[derive(Debug, Clone)]
pub struct Config {
    pub database_url: String,
    /// The LISTEN connection's URL: a session-pooled or direct connection.
    pub listen_url: String,
    pub host: IpAddr,
    pub port: u16,
    pub jwt: JwtConfig,
    pub cors: CorsOrigins,
    pub admin_roles: Vec<String>,
    pub pending_limit: u32,
    pub max_sockets_per_user: usize,
    /// Events a resume may replay before it is answered with `sync:reset`.
    pub replay_limit: u32,
    pub event_retention: Duration,
    /// Connects with a verified token per client address.
    pub connect_rate: Rate,
    /// Failed authentications per client address, counted apart from
    /// `connect_rate` so that garbage cannot use up a good token's allowance.
    pub auth_failure_rate: Rate,
    /// Client events per socket.
    pub event_rate: Rate,
    /// Whether X-Forwarded-For names the client (behind a trusted proxy).
    pub trust_proxy: bool,
    /// SENT records waiting for the delivery writer at most.
    pub delivery_queue: usize,
    /// Time to send a request head before the connection is closed.
    pub http_idle_timeout: Duration,
    /// Connections served at once; `None`: derived from the open-file limit.
    pub max_connections: Option<usize>,
    /// Bounds on Engine.IO sessions that have not sent CONNECT.
    pub handshakes: Bounds,
    /// The Bearer token `/metrics` asks for, when set.
    pub metrics_token: Option<String>,
    pub migrate: bool,
}

impl ServeArgs {
    pub fn config(&self) -> Result<Config, ConfigError> {
        let database_url = self.database.url()?;
        let listen_url = match non_empty(self.listen_url.as_deref()) {
            Some(url) => {
                check_postgres_url("HERALD_LISTEN_URL", url)?;
                url.to_owned()
            }
            None => database_url.clone(),
        };
        let host = self.host.trim().parse().map_err(|_| {
            ConfigError::invalid("HOST", format!("{:?} is not an IP address", self.host))
        })?;
        let port = self.port.trim().parse().map_err(|_| {
            ConfigError::invalid(
                "PORT",
                format!("{:?} is not a port number (0-65535)", self.port),
            )
        })?;
        let admin_roles: Vec<String> = split_list(&self.admin_roles);
        if admin_roles.is_empty() {
            return Err(ConfigError::invalid(
                "HERALD_ADMIN_ROLES",
                "name at least one role",
            ));
        }
        Ok(Config {
            database_url,
            listen_url,
            host,
            port,
            jwt: self.jwt.config()?,
            cors: CorsOrigins::parse(&self.cors_origins)?,
            admin_roles,
            pending_limit: parse_count("HERALD_PENDING_LIMIT", &self.pending_limit, 0, 1000)?,
            max_sockets_per_user: parse_count(
                "HERALD_MAX_SOCKETS_PER_USER",
                &self.max_sockets_per_user,
                1,
                10_000,
            )? as usize,
            replay_limit: parse_count("HERALD_REPLAY_LIMIT", &self.replay_limit, 1, 100_000)?,
            event_retention: parse_duration("HERALD_EVENT_RETENTION", &self.event_retention)?,
            connect_rate: self
                .connect_rate_limit
                .parse()
                .map_err(|reason| ConfigError::invalid("HERALD_CONNECT_RATE_LIMIT", reason))?,
            auth_failure_rate: self
                .auth_failure_limit
                .parse()
                .map_err(|reason| ConfigError::invalid("HERALD_AUTH_FAILURE_LIMIT", reason))?,
            event_rate: self
                .event_rate_limit
                .parse()
                .map_err(|reason| ConfigError::invalid("HERALD_EVENT_RATE_LIMIT", reason))?,
            delivery_queue: parse_count(
                "HERALD_DELIVERY_QUEUE",
                &self.delivery_queue,
                1_000,
                100_000_000,
            )? as usize,
            trust_proxy: match self.trust_proxy.trim() {
                "true" | "1" | "yes" => true,
                "false" | "0" | "no" | "" => false,
                other => {
                    return Err(ConfigError::invalid(
                        "HERALD_TRUST_PROXY",
                        format!("{other:?} is not true or false"),
                    ));
                }
            },
            http_idle_timeout: positive(
                "HERALD_HTTP_IDLE_TIMEOUT",
                parse_duration("HERALD_HTTP_IDLE_TIMEOUT", &self.http_idle_timeout)?,
            )?,
            max_connections: match non_empty(self.max_connections.as_deref()) {
                Some(raw) => {
                    Some(parse_count("HERALD_MAX_CONNECTIONS", raw, 1, 10_000_000)? as usize)
                }
                None => None,
            },
            handshakes: Bounds {
                rate: self.handshake_rate_limit.parse().map_err(|reason| {
                    ConfigError::invalid("HERALD_HANDSHAKE_RATE_LIMIT", reason)
                })?,
                pending: parse_count(
                    "HERALD_MAX_PENDING_SESSIONS",
                    &self.max_pending_sessions,
                    1,
                    10_000_000,
                )? as usize,
                pending_per_address: parse_count(
                    "HERALD_MAX_PENDING_PER_ADDRESS",
                    &self.max_pending_per_address,
                    1,
                    10_000_000,
                )? as usize,
            },
            metrics_token: match non_empty(self.metrics_token.as_deref()) {
                Some(token) if token.len() < 16 => {
                    return Err(ConfigError::invalid(
                        "HERALD_METRICS_TOKEN",
                        "use at least 16 characters",
                    ));
                }
                token => token.map(str::to_owned),
            },
            migrate: !self.no_migrate,
        })
    }
}

/// The origins browsers may connect from (CORS and WebSocket `Origin`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CorsOrigins {
    /// `*`, written explicitly: any origin.
    Any,
    /// Exact origins such as `https://app.example.com`.
    List(Vec<String>),
}

impl CorsOrigins {
    pub fn parse(raw: &str) -> Result<Self, ConfigError> {
        let origins = split_list(raw);
        if origins.iter().any(|o| o == "*") {
            if origins.len() > 1 {
                return Err(ConfigError::invalid(
                    "CORS_ORIGINS",
                    "`*` allows every origin and cannot be combined with others",
                ));
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
                return Err(ConfigError::invalid(
                    "CORS_ORIGINS",
                    format!("{origin:?} is not an origin like https://app.example.com"),
                ));
            }
        }
        Ok(Self::List(origins))
    }

    pub fn allows(&self, origin: &str) -> bool {
        match self {
            Self::Any => true,
            Self::List(list) => list
                .iter()
                .any(|allowed| allowed.eq_ignore_ascii_case(origin)),
        }
    }
}

fn split_list(raw: &str) -> Vec<String> {
    raw.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

fn non_empty(value: Option<&str>) -> Option<&str> {
    value.map(str::trim).filter(|v| !v.is_empty())
}

fn check_postgres_url(var: &'static str, url: &str) -> Result<(), ConfigError> {
    url.parse::<tokio_postgres::Config>()
        .map(|_| ())
        .map_err(|e| ConfigError::invalid(var, format!("not a PostgreSQL URL ({e})")))
}

/// Parses durations such as `5s`, `1h`, `7d` (humantime's syntax).
pub fn parse_duration(var: &'static str, raw: &str) -> Result<Duration, ConfigError> {
    humantime::parse_duration(raw.trim()).map_err(|_| {
        ConfigError::invalid(var, format!("{raw:?} is not a duration like 5s, 1h or 7d"))
    })
}

fn positive(var: &'static str, duration: Duration) -> Result<Duration, ConfigError> {
    if duration.is_zero() {
        return Err(ConfigError::invalid(var, "must be above zero"));
    }
    Ok(duration)
}

fn parse_count(var: &'static str, raw: &str, min: u32, max: u32) -> Result<u32, ConfigError> {
    raw.trim()
        .parse::<u32>()
        .ok()
        .filter(|n| (min..=max).contains(n))
        .ok_or_else(|| {
            ConfigError::invalid(
                var,
                format!("{raw:?} is not a whole number from {min} to {max}"),
            )
        })
}

fn read_key(var: &'static str, path: &std::path::Path) -> Result<Vec<u8>, ConfigError> {
    std::fs::read(path)
        .map_err(|e| ConfigError::invalid(var, format!("cannot read {}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cors_star_must_stand_alone() {
        assert_eq!(CorsOrigins::parse("*").unwrap(), CorsOrigins::Any);
        assert!(CorsOrigins::parse("*,http://a.example").is_err());
    }

    #[test]
    fn cors_rejects_paths_and_trailing_slashes() {
        assert!(CorsOrigins::parse("http://a.example/").is_err());
        assert!(CorsOrigins::parse("a.example").is_err());
        let list = CorsOrigins::parse(" http://a.example , https://b.example:8443 ").unwrap();
        assert!(list.allows("http://a.example"));
        assert!(list.allows("https://b.example:8443"));
        assert!(!list.allows("http://evil.example"));
    }

    #[test]
    fn errors_name_the_variable() {
        let err = parse_duration("JWT_LEEWAY", "soon")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("invalid JWT_LEEWAY:"), "{err}");
        let err = parse_count("HERALD_PENDING_LIMIT", "-1", 0, 1000)
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("invalid HERALD_PENDING_LIMIT:"), "{err}");
    }
}
