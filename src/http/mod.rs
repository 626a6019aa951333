//! HTTP: health, metrics, and the guard in front of the Socket.IO endpoint.
//!
//! `/health/live` says the process runs; `/health/ready` that the database
//! answers and the event log listener is connected and caught up. The
//! Socket.IO endpoint checks the `Origin` of every request (polling and the
//! WebSocket upgrade alike) against `CORS_ORIGINS`, because browsers enforce
//! CORS on polling but nothing on WebSockets.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use tokio::sync::watch;
use tower_http::cors::{AllowOrigin, CorsLayer};

pub mod api;

use crate::config::CorsOrigins;
use crate::db::Pool;
use crate::log::tail::Health;

#[derive(Clone)]
pub struct HttpState {
    pub pool: Pool,
    pub listener: watch::Receiver<Health>,
    pub cors: Arc<CorsOrigins>,
}

/// The routes herald serves beside Socket.IO.
pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/health/live", get(live))
        .route("/health/ready", get(ready))
        .route("/metrics", get(metrics))
        .route("/", get(inbox_page))
        .route("/assets/socket.io.min.js", get(socket_io_client))
        .with_state(state)
        .fallback(|| async { error(StatusCode::NOT_FOUND, "not_found", "no such route") })
}

/// A span per HTTP request with its method and path; never the query
/// string, which may carry a token.
pub fn trace_layer<B>() -> tower_http::trace::TraceLayer<
    tower_http::classify::SharedClassifier<tower_http::classify::ServerErrorsAsFailures>,
    impl Fn(&axum::http::Request<B>) -> tracing::Span + Clone,
> {
    tower_http::trace::TraceLayer::new_for_http().make_span_with(|request: &axum::http::Request<B>| {
        tracing::info_span!("http", method = %request.method(), path = request.uri().path())
    })
}

/// Wraps the Socket.IO service: origin check first, then CORS headers.
pub fn guard_socket_io(router: Router, cors: Arc<CorsOrigins>) -> Router {
    let allowed = cors.clone();
    let cors_layer = CorsLayer::new()
        .allow_origin(AllowOrigin::predicate(move |origin: &HeaderValue, _| {
            origin.to_str().is_ok_and(|o| allowed.allows(o))
        }))
        .allow_methods([
            axum::http::Method::GET,
            axum::http::Method::POST,
            axum::http::Method::OPTIONS,
        ])
        .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE]);
    router
        .layer(cors_layer)
        .layer(middleware::from_fn(move |request: Request, next: Next| {
            let cors = cors.clone();
            async move { check_origin(&cors, request, next).await }
        }))
}

async fn check_origin(cors: &CorsOrigins, request: Request, next: Next) -> Response {
    let socket_io = request.uri().path().starts_with("/socket.io");
    if socket_io && let Some(origin) = request.headers().get(header::ORIGIN) {
        let host = request
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok());
        let allowed = origin
            .to_str()
            .is_ok_and(|o| cors.allows(o) || same_origin(o, host));
        if !allowed {
            tracing::info!(origin = ?origin, "request from a foreign origin refused");
            return error(
                StatusCode::FORBIDDEN,
                "origin_not_allowed",
                "this origin is not in CORS_ORIGINS",
            );
        }
    }
    let request = if socket_io {
        own_head(request)
    } else {
        request
    };
    next.run(request).await
}

/// Gives a Socket.IO request's URI and header values allocations of their
/// own. hyper parses them as slices of the connection's read buffer (8 to 16
/// KiB), and socketioxide keeps every socket's request head for the
/// socket's life, so each idle socket would hold that whole buffer: measured
/// with valgrind massif, 16 KiB of the 37 KiB of heap per socket.
fn own_head(request: Request) -> Request {
    let (mut parts, body) = request.into_parts();
    if let Ok(uri) = axum::http::Uri::try_from(parts.uri.to_string()) {
        // axum's copy of the URI, in the extensions, shares the buffer too.
        parts
            .extensions
            .insert(axum::extract::OriginalUri(uri.clone()));
        parts.uri = uri;
    }
    let mut headers = axum::http::HeaderMap::with_capacity(parts.headers.len());
    for (name, value) in &parts.headers {
        // `from_bytes` copies; the bytes were a valid value already.
        if let Ok(copied) = HeaderValue::from_bytes(value.as_bytes()) {
            headers.append(name.clone(), copied);
        }
    }
    parts.headers = headers;
    Request::from_parts(parts, body)
}

/// Whether `origin` is the site the request was sent to (herald's own
/// inbox page): a browser never sends another site's origin, so such a
/// request is not cross-site whatever CORS_ORIGINS says.
fn same_origin(origin: &str, host: Option<&str>) -> bool {
    let Some(host) = host else { return false };
    origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
        .is_some_and(|rest| rest.eq_ignore_ascii_case(host))
}

/// `{error: {code, message}}` with a status.
pub fn error(status: StatusCode, code: &'static str, message: &str) -> Response {
    (
        status,
        Json(json!({"error": {"code": code, "message": message}})),
    )
        .into_response()
}

/// The demo inbox page: plain HTML, CSS and JS in the binary.
async fn inbox_page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        include_str!("../../assets/inbox.html"),
    )
        .into_response()
}

/// socket.io-client's browser build (4.8.4, MIT), served from here so the
/// page loads nothing from the internet. Not under /socket.io/: that path
/// belongs to the Socket.IO endpoint.
async fn socket_io_client() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=86400"),
        ],
        include_str!("../../assets/socket.io.min.js"),
    )
        .into_response()
}

async fn live() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

async fn ready(State(state): State<HttpState>) -> Response {
    let database = async {
        let client = state.pool.get().await?;
        client.simple_query("select 1").await?;
        anyhow::Ok(())
    };
    let database_up = matches!(
        tokio::time::timeout(Duration::from_secs(2), database).await,
        Ok(Ok(()))
    );
    let listener_up = state.listener.borrow().is_ready();
    let status = if database_up && listener_up {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let word = |up: bool| if up { "up" } else { "down" };
    let body = json!({
        "status": if status == StatusCode::OK { "ok" } else { "unavailable" },
        "database": word(database_up),
        "listener": word(listener_up),
    });
    (status, Json(body)).into_response()
}

async fn metrics(State(state): State<HttpState>) -> Response {
    let pool = state.pool.status();
    crate::telemetry::metrics::pool(pool.size, pool.available, pool.waiting);
    match crate::telemetry::metrics::handle() {
        Some(handle) => (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            handle.render(),
        )
            .into_response(),
        None => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "metrics are unavailable",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::same_origin;

    #[test]
    fn only_the_requested_host_is_the_same_origin() {
        assert!(same_origin("http://127.0.0.1:4000", Some("127.0.0.1:4000")));
        assert!(same_origin(
            "https://notifications.example.com",
            Some("notifications.example.com")
        ));
        assert!(!same_origin("http://evil.example", Some("127.0.0.1:4000")));
        assert!(!same_origin(
            "http://127.0.0.1:4000.evil.example",
            Some("127.0.0.1:4000")
        ));
        assert!(!same_origin("http://127.0.0.1:4000", None));
    }
}
