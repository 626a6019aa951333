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

use crate::auth::jwks::{JwksOptions, JwksUrl};
use crate::auth::{DEFAULT_USER_CLAIM, JwtConfig, JwtKeyError};

pub mod values;

pub use crate::audience::AdminRoles;
pub use values::{CorsOrigins, HandshakeBounds, Rate};
use values::{
    boolean, claim, count, duration, ip, port, positive_duration, postgres_url, refresh_period,
    secret, size,
};

/// Where the certificate chain and its key are read from (and reread on
/// SIGHUP).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

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
    #[arg(long, env = "DATABASE_URL", hide_env_values = true, value_parser = postgres_url)]
    pub database_url: Option<String>,
}

impl DatabaseArgs {
    pub fn url(&self) -> Result<String, ConfigError> {
        self.database_url.clone().ok_or(ConfigError::Missing {
            var: "DATABASE_URL",
            hint: "set it to a PostgreSQL URL, e.g. postgres://user@localhost/herald",
        })
    }
}

/// How tokens are checked (and, for `herald token`, signed).
#[derive(Debug, Clone, Args)]
pub struct JwtArgs {
    /// HS256 key; one of JWT_SECRET, JWT_PUBLIC_KEY_FILE, JWT_JWKS_URL.
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
    /// An identity provider's JWKS document (https://, http:// or file://).
    #[arg(long, env = "JWT_JWKS_URL")]
    pub jwt_jwks_url: Option<JwksUrl>,
    /// How often the JWKS document is fetched again.
    #[arg(long, env = "JWT_JWKS_REFRESH", default_value = "10m", value_parser = refresh_period)]
    pub jwt_jwks_refresh: Duration,
    /// The claim that holds the herald user id.
    #[arg(long, env = "JWT_USER_CLAIM", default_value = DEFAULT_USER_CLAIM, value_parser = claim)]
    pub jwt_user_claim: String,
    /// Required `iss` claim, when set.
    #[arg(long, env = "JWT_ISSUER")]
    pub jwt_issuer: Option<String>,
    /// Required `aud` claim, when set.
    #[arg(long, env = "JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,
    /// Clock leeway for `exp` and `nbf`.
    #[arg(long, env = "JWT_LEEWAY", default_value = "5s", value_parser = duration)]
    pub jwt_leeway: Duration,
}

impl JwtArgs {
    /// The keys: exactly one source of them must be set.
    pub fn config(&self) -> Result<JwtConfig, ConfigError> {
        let issuer = non_empty(self.jwt_issuer.as_deref());
        let audience = non_empty(self.jwt_audience.as_deref());
        let secret = non_empty(self.jwt_secret.as_deref());
        let sources = [
            ("JWT_SECRET", secret.is_some()),
            ("JWT_PUBLIC_KEY_FILE", self.jwt_public_key_file.is_some()),
            ("JWT_JWKS_URL", self.jwt_jwks_url.is_some()),
        ];
        let set: Vec<&str> = sources
            .iter()
            .filter(|(_, set)| *set)
            .map(|(name, _)| *name)
            .collect();
        let config = match (
            set.as_slice(),
            &self.jwt_jwks_url,
            &self.jwt_public_key_file,
            secret,
        ) {
            ([], ..) => {
                return Err(ConfigError::Missing {
                    var: "JWT_SECRET",
                    hint: "set JWT_SECRET (HS256), JWT_PUBLIC_KEY_FILE with JWT_ALGORITHM, or JWT_JWKS_URL",
                });
            }
            ([_], Some(url), ..) => self.jwks(url)?,
            ([_], _, Some(path), _) => self.public_key(path)?,
            ([_], _, _, Some(secret)) => self.secret(secret)?,
            (several, ..) => {
                return Err(ConfigError::invalid(
                    several[1],
                    format!("set one key source only, not {}", several.join(" and ")),
                ));
            }
        };
        Ok(config
            .with_claims(issuer, audience, self.jwt_leeway)
            .with_user_claim(&self.jwt_user_claim))
    }

    fn secret(&self, secret: &str) -> Result<JwtConfig, ConfigError> {
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
        Ok(JwtConfig::hs256(secret.as_bytes()))
    }

    fn public_key(&self, path: &std::path::Path) -> Result<JwtConfig, ConfigError> {
        let algorithm = self.jwt_algorithm.as_deref().ok_or(ConfigError::Missing {
            var: "JWT_ALGORITHM",
            hint: "name the public key's algorithm: RS256, ES256 or EdDSA",
        })?;
        let public = read_key("JWT_PUBLIC_KEY_FILE", path)?;
        let private = match &self.jwt_private_key_file {
            Some(path) => Some(read_key("JWT_PRIVATE_KEY_FILE", path)?),
            None => None,
        };
        JwtConfig::asymmetric(algorithm, &public, private.as_deref()).map_err(|e| match e {
            JwtKeyError::Algorithm(reason) => ConfigError::invalid("JWT_ALGORITHM", reason),
            JwtKeyError::PublicKey(reason) => ConfigError::invalid("JWT_PUBLIC_KEY_FILE", reason),
            JwtKeyError::PrivateKey(reason) => ConfigError::invalid("JWT_PRIVATE_KEY_FILE", reason),
        })
    }

    fn jwks(&self, url: &JwksUrl) -> Result<JwtConfig, ConfigError> {
        // Each JWK names its algorithm; a second source of truth could only disagree.
        if let Some(algorithm) = non_empty(self.jwt_algorithm.as_deref()) {
            return Err(ConfigError::invalid(
                "JWT_ALGORITHM",
                format!(
                    "{algorithm}: with JWT_JWKS_URL each key names its own algorithm; unset JWT_ALGORITHM"
                ),
            ));
        }
        JwtConfig::jwks(JwksOptions::new(url.clone(), self.jwt_jwks_refresh))
            .map_err(|e| ConfigError::invalid("JWT_JWKS_URL", e.to_string()))
    }
}

/// Everything `herald serve` reads, each setting parsed to its type.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// URL for the dedicated LISTEN connection (must bypass transaction pooling).
    #[arg(long, env = "HERALD_LISTEN_URL", hide_env_values = true, value_parser = postgres_url)]
    pub listen_url: Option<String>,
    /// HTTP bind address.
    #[arg(long, env = "HOST", default_value = "0.0.0.0", value_parser = ip)]
    pub host: IpAddr,
    /// HTTP port (0 picks a free one).
    #[arg(long, env = "PORT", default_value = "3030", value_parser = port)]
    pub port: u16,
    #[command(flatten)]
    pub jwt: JwtArgs,
    /// Comma-separated allowed origins; `*` allows any.
    #[arg(
        long,
        env = "CORS_ORIGINS",
        default_value = "http://localhost:3030,http://127.0.0.1:3030"
    )]
    pub cors_origins: CorsOrigins,
    /// Roles that join the `admin` room, comma-separated.
    #[arg(long, env = "HERALD_ADMIN_ROLES", default_value = "ADMIN,SUPER_ADMIN")]
    pub admin_roles: AdminRoles,
    /// Unread notifications pushed on connect.
    #[arg(long, env = "HERALD_PENDING_LIMIT", default_value = "50", value_parser = count::<0, 1000>)]
    pub pending_limit: u32,
    /// Unread notifications herald keeps per online user to move their
    /// count in memory; past it the database counts them.
    #[arg(long, env = "HERALD_UNREAD_TRACKED", default_value = "1000", value_parser = size::<0, 100_000>)]
    pub unread_tracked: usize,
    /// Sockets one user may hold on this instance.
    #[arg(long, env = "HERALD_MAX_SOCKETS_PER_USER", default_value = "10", value_parser = size::<1, 10_000>)]
    pub max_sockets_per_user: usize,
    /// Events a resume may replay; a client further behind gets sync:reset.
    #[arg(long, env = "HERALD_REPLAY_LIMIT", default_value = "1000", value_parser = count::<1, 100_000>)]
    pub replay_limit: u32,
    /// How long events are kept.
    #[arg(long, env = "HERALD_EVENT_RETENTION", default_value = "7d", value_parser = duration)]
    pub event_retention: Duration,
    /// Connects with a verified token allowed per client address, as N/period.
    #[arg(long, env = "HERALD_CONNECT_RATE_LIMIT", default_value = "120/1m")]
    pub connect_rate_limit: Rate,
    /// Failed authentications allowed per client address, as N/period;
    /// past it, failing attempts are answered rate_limited.
    #[arg(long, env = "HERALD_AUTH_FAILURE_LIMIT", default_value = "60/1m")]
    pub auth_failure_limit: Rate,
    /// Client events allowed per socket, as N/period.
    #[arg(long, env = "HERALD_EVENT_RATE_LIMIT", default_value = "20/1s")]
    pub event_rate_limit: Rate,
    /// SENT records waiting for the delivery writer at most.
    #[arg(long, env = "HERALD_DELIVERY_QUEUE", default_value = "1000000", value_parser = size::<1_000, 100_000_000>)]
    pub delivery_queue: usize,
    /// Take the client address from the last X-Forwarded-For entry (set it
    /// only behind a proxy that appends it, such as deploy/nginx.conf).
    #[arg(long, env = "HERALD_TRUST_PROXY", default_value = "false", value_parser = boolean, action = clap::ArgAction::Set)]
    pub trust_proxy: bool,
    /// Time a connection has to send a request head (new, or idle between
    /// requests) before it is closed.
    #[arg(long, env = "HERALD_HTTP_IDLE_TIMEOUT", default_value = "10s", value_parser = positive_duration)]
    pub http_idle_timeout: Duration,
    /// Connections served at once; default: the open-file limit less what
    /// herald keeps for itself.
    #[arg(long, env = "HERALD_MAX_CONNECTIONS", value_parser = size::<1, 10_000_000>)]
    pub max_connections: Option<usize>,
    /// New Engine.IO sessions allowed per client address, as N/period.
    #[arg(long, env = "HERALD_HANDSHAKE_RATE_LIMIT", default_value = "300/1m")]
    pub handshake_rate_limit: Rate,
    /// Sessions that have not sent CONNECT yet, in all.
    #[arg(long, env = "HERALD_MAX_PENDING_SESSIONS", default_value = "4096", value_parser = size::<1, 10_000_000>)]
    pub max_pending_sessions: usize,
    /// Sessions that have not sent CONNECT yet, per client address.
    #[arg(long, env = "HERALD_MAX_PENDING_PER_ADDRESS", default_value = "32", value_parser = size::<1, 10_000_000>)]
    pub max_pending_per_address: usize,
    /// Bearer token `/metrics` asks for; unset, `/metrics` is open.
    #[arg(long, env = "HERALD_METRICS_TOKEN", hide_env_values = true, value_parser = secret)]
    pub metrics_token: Option<String>,
    /// PEM certificate chain; with HERALD_TLS_KEY_FILE, herald serves HTTPS
    /// and WSS itself (reread on SIGHUP).
    #[arg(long, env = "HERALD_TLS_CERT_FILE")]
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key of HERALD_TLS_CERT_FILE's certificate.
    #[arg(long, env = "HERALD_TLS_KEY_FILE")]
    pub tls_key_file: Option<PathBuf>,
    #[command(flatten)]
    pub push: crate::push::PushArgs,
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
    pub admin_roles: AdminRoles,
    pub pending_limit: u32,
    /// Unread notifications kept in memory per online user.
    pub unread_tracked: usize,
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
    pub handshakes: HandshakeBounds,
    /// The Bearer token `/metrics` asks for, when set.
    pub metrics_token: Option<String>,
    /// HTTPS and WSS with this certificate, when set; plain HTTP otherwise.
    pub tls: Option<TlsFiles>,
    /// Web Push, when a VAPID key is configured.
    pub push: Option<crate::push::PushConfig>,
    pub migrate: bool,
}

impl ServeArgs {
    /// The configuration: each setting is already parsed; what is left are
    /// the checks that involve several (the keys, the TLS pair, the LISTEN
    /// URL's default).
    pub fn config(&self) -> Result<Config, ConfigError> {
        let database_url = self.database.url()?;
        Ok(Config {
            listen_url: self
                .listen_url
                .clone()
                .unwrap_or_else(|| database_url.clone()),
            database_url,
            host: self.host,
            port: self.port,
            jwt: self.jwt.config()?,
            cors: self.cors_origins.clone(),
            admin_roles: self.admin_roles.clone(),
            pending_limit: self.pending_limit,
            unread_tracked: self.unread_tracked,
            max_sockets_per_user: self.max_sockets_per_user,
            replay_limit: self.replay_limit,
            event_retention: self.event_retention,
            connect_rate: self.connect_rate_limit,
            auth_failure_rate: self.auth_failure_limit,
            event_rate: self.event_rate_limit,
            delivery_queue: self.delivery_queue,
            trust_proxy: self.trust_proxy,
            http_idle_timeout: self.http_idle_timeout,
            max_connections: self.max_connections,
            handshakes: HandshakeBounds {
                rate: self.handshake_rate_limit,
                pending: self.max_pending_sessions,
                pending_per_address: self.max_pending_per_address,
            },
            metrics_token: self.metrics_token.clone(),
            tls: self.tls()?,
            push: self.push.config()?,
            migrate: !self.no_migrate,
        })
    }

    /// Both TLS files or neither; the server loads them, and a pair that
    /// does not load names its file.
    fn tls(&self) -> Result<Option<TlsFiles>, ConfigError> {
        match (&self.tls_cert_file, &self.tls_key_file) {
            (None, None) => Ok(None),
            (Some(cert), Some(key)) => Ok(Some(TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
            })),
            (Some(_), None) => Err(ConfigError::Missing {
                var: "HERALD_TLS_KEY_FILE",
                hint: "HERALD_TLS_CERT_FILE needs the certificate's private key beside it",
            }),
            (None, Some(_)) => Err(ConfigError::Missing {
                var: "HERALD_TLS_CERT_FILE",
                hint: "HERALD_TLS_KEY_FILE needs its certificate chain beside it",
            }),
        }
    }
}

fn non_empty(value: Option<&str>) -> Option<&str> {
    value.map(str::trim).filter(|v| !v.is_empty())
}

fn read_key(var: &'static str, path: &std::path::Path) -> Result<Vec<u8>, ConfigError> {
    std::fs::read(path)
        .map_err(|e| ConfigError::invalid(var, format!("cannot read {}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Serve {
        #[command(flatten)]
        args: ServeArgs,
    }

    #[test]
    fn every_setting_has_a_default_that_parses() {
        let serve = Serve::try_parse_from(["serve", "--database-url", "postgres://localhost/x"])
            .expect("the defaults parse");
        assert_eq!(serve.args.port, 3030);
        assert_eq!(serve.args.pending_limit, 50);
        assert!(!serve.args.trust_proxy);
        assert_eq!(serve.args.handshake_rate_limit.burst, 300);
        assert_eq!(serve.args.admin_roles.names(), ["ADMIN", "SUPER_ADMIN"]);
    }

    fn jwt_args(pairs: &[(&str, &str)]) -> Result<JwtArgs, clap::Error> {
        #[derive(Debug, Parser)]
        struct Jwt {
            #[command(flatten)]
            jwt: JwtArgs,
        }
        let mut argv = vec!["herald".to_owned()];
        for (flag, value) in pairs {
            argv.push(format!("--{flag}={value}"));
        }
        Jwt::try_parse_from(argv).map(|parsed| parsed.jwt)
    }

    fn jwt_error(pairs: &[(&str, &str)]) -> String {
        jwt_args(pairs).unwrap().config().unwrap_err().to_string()
    }

    #[test]
    fn exactly_one_key_source() {
        let secret = ("jwt-secret", "0123456789abcdef0123");
        let jwks = ("jwt-jwks-url", "https://id.example/certs");
        let public = ("jwt-public-key-file", "/nonexistent.pem");
        assert!(jwt_args(&[secret]).unwrap().config().is_ok());
        assert!(jwt_args(&[jwks]).unwrap().config().is_ok());
        let err = jwt_error(&[secret, jwks]);
        assert!(
            err.starts_with(
                "invalid JWT_JWKS_URL: set one key source only, not JWT_SECRET and JWT_JWKS_URL"
            ),
            "{err}"
        );
        let err = jwt_error(&[public, jwks]);
        assert!(err.starts_with("invalid JWT_JWKS_URL:"), "{err}");
        let err = jwt_error(&[]);
        assert!(err.starts_with("JWT_SECRET is required"), "{err}");
        // With JWKS each key names its algorithm.
        let err = jwt_error(&[jwks, ("jwt-algorithm", "RS256")]);
        assert!(err.starts_with("invalid JWT_ALGORITHM:"), "{err}");
    }

    #[test]
    fn jwks_settings_are_parsed_to_their_types() {
        let jwks = ("jwt-jwks-url", "https://id.example/certs");
        for pairs in [
            vec![("jwt-jwks-url", "ftp://id.example/certs")],
            vec![("jwt-jwks-url", "certs.json")],
            vec![jwks, ("jwt-jwks-refresh", "often")],
            vec![jwks, ("jwt-jwks-refresh", "100ms")],
            vec![jwks, ("jwt-user-claim", " ")],
        ] {
            let error = jwt_args(&pairs).unwrap_err();
            assert_eq!(
                error.kind(),
                clap::error::ErrorKind::ValueValidation,
                "{pairs:?}"
            );
        }
        let args = jwt_args(&[("jwt-jwks-url", "file:///etc/herald/jwks.json")]).unwrap();
        assert_eq!(args.jwt_jwks_refresh, Duration::from_secs(600));
        assert_eq!(args.jwt_user_claim, "sub");
        assert!(args.config().is_ok());
    }

    #[test]
    fn a_bad_value_is_refused_with_the_parser_reason() {
        for (flag, value) in [
            ("--port", "eighty"),
            ("--pending-limit", "1001"),
            ("--trust-proxy", "maybe"),
            ("--connect-rate-limit", "0/1s"),
            ("--http-idle-timeout", "0s"),
            ("--cors-origins", "example.com"),
            ("--metrics-token", "short"),
        ] {
            let error = Serve::try_parse_from(["serve", flag, value]).unwrap_err();
            assert_eq!(
                error.kind(),
                clap::error::ErrorKind::ValueValidation,
                "{flag}"
            );
        }
    }
}
