//! Logging: `tracing` to stderr, filtered by `RUST_LOG`, as readable lines or
//! one JSON object per line (`HERALD_LOG_FORMAT=json`).
//!
//! Tokens are never handed to `tracing`: the gateway logs user ids and
//! refusal reasons, and HTTP spans record the path without its query string.

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber. Safe to call more than once (tests do);
/// later calls keep the first subscriber.
pub fn init() -> anyhow::Result<()> {
    let filter = EnvFilter::try_from_default_env().or_else(|_| EnvFilter::try_new("info"))?;
    let format = std::env::var("HERALD_LOG_FORMAT").unwrap_or_else(|_| "pretty".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = match format.trim() {
        "json" => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init(),
        "pretty" | "" => builder.try_init(),
        other => anyhow::bail!("invalid HERALD_LOG_FORMAT: {other:?} is not pretty or json"),
    };
    // Err only means a subscriber is installed already.
    drop(result);
    Ok(())
}

pub mod metrics;
