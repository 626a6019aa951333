//! The server: wires configuration, database, tail, gateway and HTTP
//! together around a bound listener and a shutdown future, so tests own
//! both (port 0, and a signal of their choosing).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::gateway::admission::Admission;
use crate::gateway::counts::Counts;
use crate::gateway::dispatch::Dispatcher;
use crate::gateway::presence::Presence;
use crate::gateway::{self, Gateway, Shared};
use crate::http::listen;
use crate::{db, deliveries, http};

/// Query connections: handlers, counts, deliveries. The listener has its own.
const POOL_SIZE: usize = 16;
/// How long open connections get to finish once shutdown begins.
const DRAIN: Duration = Duration::from_secs(10);

/// Serves until `shutdown` resolves, then closes every socket, stops the
/// background tasks and flushes queued delivery records.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    // Counted from the first event on, not from the first scrape.
    crate::telemetry::metrics::handle();
    if config.migrate {
        db::migrate(&config.database_url).await?;
    }
    let pool = db::pool(&config.database_url, POOL_SIZE)?;
    let (tail, tail_handle) = crate::log::tail::start(&config.listen_url).await?;
    let stop = CancellationToken::new();
    let (delivery_queue, delivery_writer) =
        deliveries::spawn(pool.clone(), config.delivery_queue, stop.clone());
    let presence = Arc::new(Presence::default());
    let counts = Counts::default();
    let expiries = Arc::new(crate::gateway::expiry::Expiries::default());

    let gateway = Gateway::new(Shared {
        pool: pool.clone(),
        jwt: config.jwt.clone(),
        admin_roles: config.admin_roles.clone(),
        pending_limit: config.pending_limit,
        max_sockets_per_user: config.max_sockets_per_user,
        connects: crate::gateway::limits::ConnectLimiter::new(config.connect_rate),
        event_rate: config.event_rate,
        api_calls: crate::gateway::limits::Limiter::new(config.event_rate),
        trust_proxy: config.trust_proxy,
        presence: presence.clone(),
        tail: tail_handle.clone(),
        counts: counts.clone(),
        expiries: expiries.clone(),
        deliveries: delivery_queue.clone(),
    });
    let (socket_layer, io) = gateway::layer(gateway.clone());

    let dispatcher = Arc::new(Dispatcher {
        io: io.clone(),
        presence: presence.clone(),
        deliveries: delivery_queue.clone(),
        counts: counts.clone(),
        admin_roles: config.admin_roles.clone(),
    });
    let tail_task = tokio::spawn(tail.run(dispatcher, stop.clone().cancelled_owned()));
    tokio::spawn(
        counts
            .clone()
            .run(pool.clone(), io.clone(), presence.clone(), stop.clone()),
    );
    tokio::spawn(counts.watch_expiries(pool.clone(), presence, stop.clone()));
    {
        let (io, leeway, stop) = (io.clone(), config.jwt.leeway(), stop.clone());
        tokio::spawn(async move { expiries.run(io, leeway, stop).await });
    }
    tokio::spawn(crate::log::retention::run(
        pool.clone(),
        config.event_retention,
        stop.clone(),
    ));

    let guard = http::SocketIoGuard {
        cors: Arc::new(config.cors.clone()),
        admission: Admission::new(config.handshakes),
        trust_proxy: config.trust_proxy,
    };
    let api = http::api::router(gateway);
    let app = http::router(http::HttpState {
        pool,
        listener: tail_handle.health.clone(),
        metrics_token: config.metrics_token.as_deref().map(Arc::from),
    });
    let app =
        http::guard_socket_io(app.merge(api).layer(socket_layer), guard).layer(http::trace_layer());

    let descriptors = listen::raise_descriptor_limit();
    let limits = listen::Limits {
        idle_timeout: config.http_idle_timeout,
        max_connections: config
            .max_connections
            .unwrap_or_else(|| listen::default_max_connections(descriptors)),
    };
    let address = listener.local_addr()?;
    tracing::info!(%address, max_connections = limits.max_connections, "herald listening");

    let closing = {
        let stop = stop.clone();
        let io = io.clone();
        async move {
            shutdown.await;
            tracing::info!("shutting down");
            stop.cancel();
            io.close().await;
        }
    };
    let served = listen::serve(listener, app, limits, closing);
    let result = tokio::select! {
        () = served => Ok(()),
        () = async { stop.cancelled().await; tokio::time::sleep(DRAIN).await } => {
            tracing::warn!("connections still open after the drain period; closing anyway");
            Ok(())
        }
    };
    stop.cancel();
    // The tail owns the dispatcher and with it the delivery queue's sender;
    // once it ends the writer drains what is queued and stops.
    let _ = tail_task.await;
    if tokio::time::timeout(DRAIN, delivery_writer).await.is_err() {
        tracing::warn!("delivery writer did not finish in time");
    }
    tracing::info!("herald stopped");
    result
}
