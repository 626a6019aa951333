//! The accept loop: herald's own, so that what a client can make herald hold
//! open is bounded.
//!
//! - Every connection gets `idle_timeout` to send a request's head, whether
//!   it is new, half-sent, or idle between requests; then it is closed.
//!   Socket.IO sessions are not affected: a WebSocket leaves hyper once
//!   upgraded, and a long-poll has sent its head already.
//! - At most `max_connections` are served. The next [`HEALTH_RESERVE`]
//!   connections are answered only on `/health/*` (everything else gets 503)
//!   and closed after one request, so an orchestrator can still see the
//!   process while it is full; past those, a connection is closed on accept.
//! - Running out of file descriptors refuses connections instead of leaving
//!   them in the kernel's backlog: a spare descriptor is given up to accept
//!   and close one, then taken again.
//! - With TLS ([`super::tls`]) each connection's handshake runs in its own
//!   task, within `idle_timeout` like a request head, before HTTP begins.
//!
//! It must never do: a blocking wait in the loop, or an `accept` that a full
//! process can stall.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{ConnectInfo, Request};
use axum::http::StatusCode;
use axum::response::Response;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tower::ServiceExt;

use crate::telemetry::metrics;

/// Connections past the cap that are still answered, on `/health/*` only.
pub const HEALTH_RESERVE: usize = 32;
/// Descriptors kept for everything that is not an HTTP connection: the
/// database pool, the tail's LISTEN connection, files, the spare descriptor.
pub const DESCRIPTOR_RESERVE: usize = 128;
/// How long a connection in the health reserve may take to ask.
const RESERVE_TIMEOUT: Duration = Duration::from_secs(2);

/// What the loop allows each client.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Time to send a request head (first, or next on a kept-alive connection).
    pub idle_timeout: Duration,
    /// Connections served at once, Socket.IO sessions included.
    pub max_connections: usize,
}

/// The address herald was reached on, for checks that must not trust the
/// client's `Host` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalAddr(pub SocketAddr);

/// Raises the soft open-file limit to the hard one, as the cap on
/// connections is derived from it, and returns the limit in force.
pub fn raise_descriptor_limit() -> u64 {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    if let (Some(current), Some(maximum)) = (limit.current, limit.maximum)
        && current < maximum
    {
        let raised = Rlimit {
            current: Some(maximum),
            maximum: Some(maximum),
        };
        if setrlimit(Resource::Nofile, raised).is_ok() {
            return maximum;
        }
    }
    limit.current.unwrap_or(u64::MAX)
}

/// The default cap: what the descriptor limit leaves after herald's own.
pub fn default_max_connections(descriptor_limit: u64) -> usize {
    let limit = usize::try_from(descriptor_limit).unwrap_or(usize::MAX);
    limit
        .saturating_sub(DESCRIPTOR_RESERVE + HEALTH_RESERVE)
        .max(16)
}

/// Serves `app` on `listener` (over TLS when `tls` is set) until `shutdown`
/// resolves, then lets open requests finish and returns once every
/// connection has closed.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    // Turn the router's handlers into services once, here. Served as it is,
    // a router layers its fallback (where the Socket.IO service sits) on
    // every request, and each layering makes an Engine.IO engine of its
    // own: a long-polling session would be unknown to the next request.
    let app = app.with_state(());
    let local = listener.local_addr().ok();
    let served = Arc::new(Semaphore::new(
        limits.max_connections.min(Semaphore::MAX_PERMITS),
    ));
    let reserve = Arc::new(Semaphore::new(HEALTH_RESERVE));
    let health_only = health_only(app.clone());
    let (closing, _) = watch::channel(false);
    let (done, all_closed) = watch::channel(());
    let mut spare = Spare::open();
    let mut shutdown = std::pin::pin!(shutdown);

    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    spare.refuse_one(&listener, &error).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Small pushes must not wait for Nagle's algorithm.
        let _ = stream.set_nodelay(true);
        let local = LocalAddr(local.unwrap_or_else(|| stream.local_addr().unwrap_or(peer)));
        let connection = if let Ok(permit) = served.clone().try_acquire_owned() {
            Connection {
                app: app.clone(),
                timeout: limits.idle_timeout,
                keep_alive: true,
                _permit: permit,
            }
        } else if let Ok(permit) = reserve.clone().try_acquire_owned() {
            metrics::connection_refused("full");
            Connection {
                app: health_only.clone(),
                timeout: RESERVE_TIMEOUT.min(limits.idle_timeout),
                keep_alive: false,
                _permit: permit,
            }
        } else {
            metrics::connection_refused("full");
            drop(stream);
            continue;
        };
        let closing = closing.subscribe();
        let done = done.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            match tls {
                None => connection.serve(stream, peer, local, closing).await,
                Some(tls) => {
                    // Bounded like a request head: a client that never
                    // finishes its hello holds nothing for long.
                    match tokio::time::timeout(connection.timeout, tls.accept(stream)).await {
                        Ok(Ok(stream)) => connection.serve(stream, peer, local, closing).await,
                        Ok(Err(error)) => {
                            metrics::tls_handshake_failed();
                            tracing::debug!(%peer, %error, "TLS handshake failed");
                        }
                        Err(_) => {
                            metrics::tls_handshake_failed();
                            metrics::connection_timed_out();
                        }
                    }
                }
            }
            drop(done);
        });
    }

    drop(listener);
    let _ = closing.send(true);
    drop(done);
    let mut all_closed = all_closed;
    // Resolves once every connection task has dropped its sender.
    while all_closed.changed().await.is_ok() {}
}

/// One accepted connection and what it may use.
struct Connection {
    app: Router,
    timeout: Duration,
    keep_alive: bool,
    /// Held for the connection's life: its place under the cap.
    _permit: OwnedSemaphorePermit,
}

impl Connection {
    async fn serve<S>(
        self,
        stream: S,
        peer: SocketAddr,
        local: LocalAddr,
        mut closing: watch::Receiver<bool>,
    ) where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        metrics::connection_opened();
        let service = self.app.map_request(move |mut request: Request<Incoming>| {
            let extensions = request.extensions_mut();
            extensions.insert(ConnectInfo(peer));
            extensions.insert(local);
            request.map(axum::body::Body::new)
        });
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(self.timeout)
            .keep_alive(self.keep_alive);
        let connection = builder
            .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service))
            .with_upgrades();
        let mut connection = std::pin::pin!(connection);
        let mut shutting_down = false;
        loop {
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(error) = result
                        && error.is_timeout()
                    {
                        metrics::connection_timed_out();
                    }
                    break;
                }
                changed = closing.changed(), if !shutting_down => {
                    if changed.is_err() || *closing.borrow() {
                        shutting_down = true;
                        connection.as_mut().graceful_shutdown();
                    }
                }
            }
        }
        metrics::connection_closed();
    }
}

/// The router for connections past the cap: health only.
fn health_only(app: Router) -> Router {
    Router::new()
        .route("/health/live", axum::routing::any_service(app.clone()))
        .route("/health/ready", axum::routing::any_service(app))
        .fallback(|| async {
            let mut response: Response = super::error(
                StatusCode::SERVICE_UNAVAILABLE,
                crate::wire::ErrorCode::ServerBusy,
                "herald is serving as many connections as it may; try again shortly",
            );
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from_static("5"),
            );
            response
        })
}

/// A descriptor held back so that, when the process has none left, one
/// pending connection can still be accepted and closed rather than left
/// waiting in the backlog.
struct Spare(Option<std::fs::File>);

impl Spare {
    fn open() -> Self {
        Self(std::fs::File::open("/dev/null").ok())
    }

    async fn refuse_one(&mut self, listener: &TcpListener, error: &io::Error) {
        let out_of_descriptors = matches!(
            error.raw_os_error(),
            Some(code) if code == rustix::io::Errno::MFILE.raw_os_error()
                || code == rustix::io::Errno::NFILE.raw_os_error()
        );
        if !out_of_descriptors {
            // Aborted handshakes and the like concern one connection only.
            tracing::debug!(error = %error, "accept failed");
            return;
        }
        metrics::connection_refused("descriptors");
        tracing::warn!("out of file descriptors: refusing a connection");
        if self.0.take().is_some() {
            if let Ok(Ok((stream, _))) =
                tokio::time::timeout(Duration::from_millis(1), listener.accept()).await
            {
                drop(stream);
            }
            *self = Self::open();
        } else {
            // No spare to give up: wait for a descriptor to be freed.
            tokio::time::sleep(Duration::from_millis(20)).await;
            *self = Self::open();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_cap_leaves_descriptors_for_herald_itself() {
        assert_eq!(
            default_max_connections(20_000),
            20_000 - DESCRIPTOR_RESERVE - HEALTH_RESERVE
        );
        // A tiny limit still serves a few connections rather than none.
        assert_eq!(default_max_connections(64), 16);
        assert!(default_max_connections(u64::MAX) > 1_000_000);
    }
}
