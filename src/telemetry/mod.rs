//! Logging: `tracing` to stderr, filtered by `RUST_LOG`, as readable lines or
//! one JSON object per line (`HERALD_LOG_FORMAT=json`).
//!
//! Tokens are never handed to `tracing`: the gateway logs user ids and
//! refusal reasons, and HTTP spans record the path without its query string.
//! The transport crates below herald do log raw packets and requests at
//! debug and trace (a Socket.IO CONNECT with its `auth`, an `auth.refresh`,
//! a WebSocket message, a request URI with `?token=`), so those crates are
//! held at info whatever `RUST_LOG` asks for: secrets stay out of the logs
//! at every level.

use tracing::{Level, Metadata};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, filter::FilterExt, fmt};

/// Crates that log packets, frames or request URIs verbatim below info.
const PACKET_LOGGERS: [&str; 4] = [
    "socketioxide",
    "engineioxide",
    "tungstenite",
    "tokio_tungstenite",
];

/// Installs the global subscriber. Safe to call more than once (tests do);
/// later calls keep the first subscriber.
pub fn init() -> anyhow::Result<()> {
    let filter = EnvFilter::try_from_default_env().or_else(|_| EnvFilter::try_new("info"))?;
    // The hint lets `tracing` and `log` skip a disabled callsite without
    // asking the filter each time it is reached: without one, every
    // `trace!` in the transport crates (several per packet) was evaluated.
    let max_level = filter.max_level_hint();
    let filter = filter.and(
        tracing_subscriber::filter::filter_fn(may_log)
            .with_max_level_hint(max_level.unwrap_or(LevelFilter::TRACE)),
    );
    let format = std::env::var("HERALD_LOG_FORMAT").unwrap_or_else(|_| "pretty".into());
    let layer = fmt::layer().with_writer(std::io::stderr);
    let result = match format.trim() {
        "json" => tracing_subscriber::registry()
            .with(
                layer
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_filter(filter),
            )
            .try_init(),
        "pretty" | "" => tracing_subscriber::registry()
            .with(layer.with_filter(filter))
            .try_init(),
        other => anyhow::bail!("invalid HERALD_LOG_FORMAT: {other:?} is not pretty or json"),
    };
    // Err only means a subscriber is installed already.
    drop(result);
    Ok(())
}

/// False for what a packet logger says below info.
pub fn may_log(metadata: &Metadata<'_>) -> bool {
    *metadata.level() <= Level::INFO || !is_packet_logger(metadata.target())
}

fn is_packet_logger(target: &str) -> bool {
    PACKET_LOGGERS.iter().any(|name| {
        target
            .strip_prefix(name)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with("::") || rest.starts_with('_'))
    })
}

pub mod metrics;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packet_loggers_and_their_modules_are_recognised() {
        for target in [
            "socketioxide",
            "socketioxide::client",
            "socketioxide_parser_common",
            "engineioxide::service::parser",
            "tungstenite::protocol",
            "tokio_tungstenite",
        ] {
            assert!(is_packet_logger(target), "{target}");
        }
        for target in ["herald", "herald::gateway", "tokio_postgres", "socketio"] {
            assert!(!is_packet_logger(target), "{target}");
        }
    }
}
