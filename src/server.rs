//! The server: builds herald's parts from the configuration, then serves
//! them on a bound listener until a shutdown future resolves, so tests own
//! both (port 0, and a signal of their choosing).
//!
//! Background tasks run under a [`Supervisor`]: one that ends early or
//! panics stops the server, and `run` returns its error.
//!
//! [`Server`] is `run` in its two halves, for callers (tests) that need a
//! part in between: the tail's handle says how far the log has been
//! dispatched, which is what "nothing else arrived" waits on.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use socketioxide::SocketIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, ConfigError};
use crate::eventlog::tail::TailHandle;
use crate::gateway::admission::Admission;
use crate::gateway::counts::{Counts, Keeper};
use crate::gateway::dispatch::Dispatcher;
use crate::gateway::limits::Limiter;
use crate::gateway::presence::Presence;
use crate::gateway::session_expiry::SessionExpiries;
use crate::gateway::{self, Gateway, Shared};
use crate::http::listen;
use crate::http::tls::Certificates;
use crate::supervisor::Supervisor;
use crate::{db, deliveries, http};

/// Query connections: handlers, counts, deliveries. The tail has its own.
const POOL_SIZE: usize = 16;
/// How long a request other than Socket.IO's may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long open connections, then background tasks, get to finish once
/// shutdown begins.
const DRAIN: Duration = Duration::from_secs(10);

/// Serves until `shutdown` resolves (or a background task fails), then
/// closes every socket, stops the background tasks and flushes queued
/// delivery records.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let server = Server::build(&config).await?;
    server.serve(listener, shutdown).await
}

/// herald's parts, built and started, not yet serving.
pub struct Server {
    app: Router,
    io: SocketIo,
    limits: listen::Limits,
    /// HTTPS and WSS when set; plain HTTP otherwise.
    tls: Option<tokio_rustls::TlsAcceptor>,
    supervisor: Supervisor,
    tail: TailHandle,
}

impl Server {
    /// Migrates (when configured), connects and starts the background tasks.
    pub async fn build(config: &Config) -> anyhow::Result<Self> {
        // Before anything else, so a bad file stops herald with one line
        // naming its setting and nothing migrated.
        let certificates = match &config.tls {
            Some(files) => Some(Arc::new(
                Certificates::load(files.cert.clone(), files.key.clone())
                    .map_err(|e| ConfigError::invalid(e.var(), e.reason()))?,
            )),
            None => None,
        };
        // Counted from the first event on, not from the first scrape.
        crate::telemetry::metrics::handle();
        // Keys from an identity provider first: without them nobody can connect.
        config.jwt.load_keys().await?;
        if config.migrate {
            db::migrate(&config.database_url).await?;
        }
        let pool = db::pool(&config.database_url, POOL_SIZE)?;
        let (tail, tail_handle) = crate::eventlog::tail::start(&config.listen_url).await?;
        let mut supervisor = Supervisor::new(CancellationToken::new());
        let stop = supervisor.stop().clone();

        let (delivery_queue, delivery_writer) =
            deliveries::start(pool.clone(), config.delivery_queue, stop.clone());
        supervisor.spawn("delivery-writer", delivery_writer);
        if let Some(refresh) = config.jwt.refresh_keys(stop.clone()) {
            supervisor.spawn("jwks-refresh", refresh);
        }
        let presence = Arc::new(Presence::default());
        let counts = Counts::default();
        let expiries = Arc::new(SessionExpiries::default());
        let gateway = Gateway::new(Shared {
            pool: pool.clone(),
            jwt: config.jwt.clone(),
            admin_roles: config.admin_roles.clone(),
            pending_limit: config.pending_limit,
            unread_tracked: config.unread_tracked,
            max_sockets_per_user: config.max_sockets_per_user,
            replay_limit: crate::gateway::replay::ReplayLimit::new(config.replay_limit),
            connects: Limiter::new(config.connect_rate),
            auth_failures: Limiter::new(config.auth_failure_rate),
            event_rate: config.event_rate,
            api_calls: Limiter::new(config.event_rate),
            trust_proxy: config.trust_proxy,
            presence: presence.clone(),
            tail: tail_handle.clone(),
            counts: counts.clone(),
            expiries: expiries.clone(),
            deliveries: delivery_queue.clone(),
        });
        let (socket_layer, io) = gateway::layer(gateway.clone());
        let snoozed = Arc::new(tokio::sync::Notify::new());
        supervisor.spawn(
            "snooze-wake",
            gateway::snoozes::run(pool.clone(), snoozed.clone(), stop.clone()),
        );

        let dispatcher = Arc::new(Dispatcher {
            io: io.clone(),
            presence: presence.clone(),
            deliveries: delivery_queue,
            counts: counts.clone(),
            admin_roles: config.admin_roles.clone(),
            unread_tracked: config.unread_tracked,
            snoozed,
        });
        supervisor.spawn("tail", tail.run(dispatcher, stop.clone().cancelled_owned()));
        let keeper = Arc::new(Keeper {
            pool: pool.clone(),
            io: io.clone(),
            presence,
            tail: tail_handle.clone(),
            admin_roles: config.admin_roles.clone(),
            limit: config.unread_tracked,
        });
        supervisor.spawn(
            "unread-counts",
            counts.clone().run(keeper.clone(), stop.clone()),
        );
        supervisor.spawn(
            "notification-expiry",
            counts.watch_notification_expiry(keeper, stop.clone()),
        );
        {
            let (io, leeway, stop) = (io.clone(), config.jwt.leeway(), stop.clone());
            supervisor.spawn("session-expiry", async move {
                expiries.run(io, leeway, stop).await;
            });
        }
        if let Some(push) = &config.push {
            let worker = crate::push::worker::Worker::new(
                pool.clone(),
                Arc::new(push.clone()),
                &config.admin_roles,
            )?;
            supervisor.spawn("push-worker", Arc::new(worker).run(stop.clone()));
        }
        supervisor.spawn(
            "retention",
            crate::eventlog::retention::run(pool.clone(), config.event_retention, stop),
        );

        let guard = http::SocketIoGuard {
            cors: Arc::new(config.cors.clone()),
            admission: Admission::new(config.handshakes),
            trust_proxy: config.trust_proxy,
        };
        let routes = http::router(http::HttpState {
            pool,
            tail: tail_handle.health.clone(),
            metrics_token: config.metrics_token.as_deref().map(Arc::from),
        })
        .merge(http::push::router(http::push::PushState {
            gateway: gateway.clone(),
            push: config.push.clone().map(Arc::new),
        }))
        .merge(http::api::router(gateway))
        // Every route but Socket.IO's answers in bounded time, so a request
        // stuck on the database cannot hold shutdown's drain open.
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            REQUEST_TIMEOUT,
        ));
        let app =
            http::guard_socket_io(routes.layer(socket_layer), guard).layer(http::trace_layer());

        let tls = match certificates {
            Some(certificates) => {
                supervisor.spawn(
                    "tls-reload",
                    certificates
                        .clone()
                        .reload_on_hangup(supervisor.stop().clone()),
                );
                Some(
                    certificates
                        .acceptor()
                        .map_err(|e| anyhow::anyhow!("setting TLS up: {e}"))?,
                )
            }
            None => None,
        };
        let descriptors = listen::raise_descriptor_limit();
        let limits = listen::Limits {
            idle_timeout: config.http_idle_timeout,
            max_connections: config
                .max_connections
                .unwrap_or_else(|| listen::default_max_connections(descriptors)),
        };
        Ok(Self {
            app,
            io,
            limits,
            tls,
            supervisor,
            tail: tail_handle,
        })
    }

    /// The tail's shared side: its dispatched position and step signal.
    pub fn tail(&self) -> &TailHandle {
        &self.tail
    }

    /// Serves on `listener` until `shutdown` resolves or a task fails.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let Self {
            app,
            io,
            limits,
            tls,
            mut supervisor,
            tail: _,
        } = self;
        let stop = supervisor.stop().clone();
        let address = listener.local_addr()?;
        tracing::info!(
            %address,
            max_connections = limits.max_connections,
            tls = tls.is_some(),
            "herald listening"
        );

        // Stop accepting on the signal or on a task's failure, whichever
        // comes first; closing the sockets lets their connections end.
        let closing = {
            let stop = stop.clone();
            async move {
                tokio::select! {
                    () = shutdown => tracing::info!("shutting down"),
                    () = stop.cancelled() => {}
                }
                stop.cancel();
                io.close().await;
            }
        };
        let served = listen::serve(listener, app, limits, tls, closing);
        let drained = async {
            stop.cancelled().await;
            tokio::time::sleep(DRAIN).await;
        };
        tokio::pin!(served, drained);
        let (mut watching, mut failure) = (true, None);
        loop {
            tokio::select! {
                () = &mut served => break,
                () = &mut drained => {
                    tracing::warn!("connections still open after the drain period; closing anyway");
                    break;
                }
                ended = supervisor.watch(), if watching => {
                    watching = false;
                    failure = ended;
                }
            }
        }
        // The tail and the delivery writer stop on the same token; the
        // writer still writes what was queued before it stopped.
        supervisor.shutdown(DRAIN).await;
        tracing::info!("herald stopped");
        match failure {
            Some(failure) => Err(failure.into()),
            None => Ok(()),
        }
    }
}
