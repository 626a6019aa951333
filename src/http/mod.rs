//! HTTP: health, metrics, and the guard in front of the Socket.IO endpoint.
//!
//! `/health/live` says the process runs; `/health/ready` that the database
//! answers and the event log tail is connected and caught up. The
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
pub mod listen;
pub mod push;
pub mod tls;

use crate::config::CorsOrigins;
use crate::db::Pool;
use crate::eventlog::tail::Health;
use crate::gateway::admission::{self, Admission};
use crate::wire::ErrorCode;
use listen::LocalAddr;

#[derive(Clone)]
pub struct HttpState {
    pub pool: Pool,
    /// The event log tail's health, for readiness.
    pub tail: watch::Receiver<Health>,
    /// `HERALD_METRICS_TOKEN`: when set, `/metrics` wants it as a Bearer token.
    pub metrics_token: Option<Arc<str>>,
}

/// The routes herald serves beside Socket.IO.
pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/health/live", get(live))
        .route("/health/ready", get(ready))
        .route("/metrics", get(metrics))
        .route("/", get(inbox_page))
        .route("/assets/socket.io.min.js", get(socket_io_client))
        .route("/assets/inbox.js", get(inbox_script))
        .route("/assets/inbox.css", get(inbox_style))
        .route("/sw.js", get(service_worker))
        .with_state(state)
        .fallback(|| async { error(StatusCode::NOT_FOUND, ErrorCode::NotFound, "no such route") })
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

/// What is checked before a request reaches socketioxide.
#[derive(Clone)]
pub struct SocketIoGuard {
    pub cors: Arc<CorsOrigins>,
    pub admission: Arc<Admission>,
    /// Whether X-Forwarded-For names the client.
    pub trust_proxy: bool,
}

/// Wraps the Socket.IO service: origin check and handshake admission first,
/// then CORS headers.
pub fn guard_socket_io(router: Router, guard: SocketIoGuard) -> Router {
    let allowed = guard.cors.clone();
    let cors_layer = CorsLayer::new()
        .allow_origin(AllowOrigin::predicate(
            move |origin: &HeaderValue, parts| {
                let local = parts.extensions.get::<LocalAddr>().copied();
                origin
                    .to_str()
                    .is_ok_and(|o| allowed.allows(o) || reached_at(o, local))
            },
        ))
        .allow_methods([
            axum::http::Method::GET,
            axum::http::Method::POST,
            axum::http::Method::OPTIONS,
        ])
        .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE]);
    router
        .layer(cors_layer)
        .layer(middleware::from_fn(move |request: Request, next: Next| {
            let guard = guard.clone();
            async move { check_socket_io(&guard, request, next).await }
        }))
}

async fn check_socket_io(guard: &SocketIoGuard, mut request: Request, next: Next) -> Response {
    let socket_io = request.uri().path().starts_with("/socket.io");
    if !socket_io {
        return next.run(request).await;
    }
    if let Some(origin) = request.headers().get(header::ORIGIN) {
        let local = request.extensions().get::<LocalAddr>().copied();
        let allowed = origin
            .to_str()
            .is_ok_and(|o| guard.cors.allows(o) || reached_at(o, local));
        if !allowed {
            tracing::info!(origin = ?origin, "request from a foreign origin refused");
            return error(
                StatusCode::FORBIDDEN,
                ErrorCode::OriginNotAllowed,
                "this origin is not in CORS_ORIGINS",
            );
        }
    }
    if request.method() != axum::http::Method::OPTIONS
        && admission::is_handshake(request.uri().query())
    {
        let (parts, body) = request.into_parts();
        let address = crate::gateway::handshake::client_address(&parts, guard.trust_proxy);
        let mut parts = parts;
        if let Some(address) = address {
            match guard.admission.admit(address) {
                Ok(ticket) => {
                    parts.extensions.insert(ticket);
                }
                Err(refused) => {
                    crate::telemetry::metrics::handshake_refused(refused.reason());
                    return handshake_refused(refused);
                }
            }
        }
        request = Request::from_parts(parts, body);
    }
    next.run(own_head(request)).await
}

/// The cheap answer to a handshake past a bound; no session is made.
fn handshake_refused(refused: admission::Refused) -> Response {
    let (status, message) = match refused {
        admission::Refused::RateLimited => (
            StatusCode::TOO_MANY_REQUESTS,
            "too many new sessions from this address",
        ),
        admission::Refused::AddressPending => (
            StatusCode::TOO_MANY_REQUESTS,
            "too many sessions from this address have not connected yet",
        ),
        admission::Refused::ServerPending => (
            StatusCode::SERVICE_UNAVAILABLE,
            "too many sessions are connecting; try again shortly",
        ),
    };
    let mut response = error(status, ErrorCode::RateLimited, message);
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    response
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

/// Whether `origin` is the address herald was reached on (its own inbox
/// page opened by address, or as `localhost` on a loopback address). The
/// `Host` header is not consulted: the client writes it, and a page on a
/// rebound name would name itself there.
fn reached_at(origin: &str, local: Option<LocalAddr>) -> bool {
    let Some(LocalAddr(local)) = local else {
        return false;
    };
    let (authority, default_port) = if let Some(rest) = origin.strip_prefix("http://") {
        (rest, 80)
    } else if let Some(rest) = origin.strip_prefix("https://") {
        (rest, 443)
    } else {
        return false;
    };
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) if !port.contains(']') => match port.parse::<u16>() {
            Ok(port) => (host, port),
            Err(_) => return false,
        },
        _ => (authority, default_port),
    };
    if port != local.port() {
        return false;
    }
    let host = host.trim_start_matches('[').trim_end_matches(']');
    match host.parse::<std::net::IpAddr>() {
        Ok(ip) => ip == local.ip(),
        Err(_) => host.eq_ignore_ascii_case("localhost") && local.ip().is_loopback(),
    }
}

/// `{error: {code, message}}` with a status.
pub fn error(status: StatusCode, code: ErrorCode, message: &str) -> Response {
    api::ErrorResponse::new(code, message).into_response(status)
}

/// The inbox page's policy: its own scripts, styles and socket, nothing
/// inline, no frames around it, and no referrer (the token arrives in the
/// URL fragment; the page moves it out of the address bar at once).
const PAGE_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'";

/// The demo inbox page: plain HTML, CSS and JS in the binary.
async fn inbox_page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
            (header::CONTENT_SECURITY_POLICY, PAGE_POLICY),
            (header::X_FRAME_OPTIONS, "DENY"),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        include_str!("../../assets/inbox.html"),
    )
        .into_response()
}

/// A script or style sheet of the page, from the binary.
fn asset(content_type: &'static str, cache: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, cache),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}

async fn inbox_script() -> Response {
    asset(
        "text/javascript; charset=utf-8",
        "no-cache",
        include_str!("../../assets/inbox.js"),
    )
}

async fn inbox_style() -> Response {
    asset(
        "text/css; charset=utf-8",
        "no-cache",
        include_str!("../../assets/inbox.css"),
    )
}

/// The inbox's service worker: it shows Web Push notifications and closes
/// them on a dismiss. At the root, so that its scope is the whole site.
async fn service_worker() -> Response {
    asset(
        "text/javascript; charset=utf-8",
        "no-cache",
        include_str!("../../assets/sw.js"),
    )
}

/// socket.io-client's browser build (4.8.4, MIT), served from here so the
/// page loads nothing from the internet. Not under /socket.io/: that path
/// belongs to the Socket.IO endpoint.
async fn socket_io_client() -> Response {
    asset(
        "text/javascript; charset=utf-8",
        "public, max-age=86400",
        include_str!("../../assets/socket.io.min.js"),
    )
}

async fn live() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

async fn ready(State(state): State<HttpState>) -> Response {
    let database = async {
        let client = state.pool.get().await?;
        crate::db::ping(&client).await?;
        anyhow::Ok(())
    };
    let database_up = matches!(
        tokio::time::timeout(Duration::from_secs(2), database).await,
        Ok(Ok(()))
    );
    let tail_up = state.tail.borrow().is_ready();
    let status = if database_up && tail_up {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let word = |up: bool| if up { "up" } else { "down" };
    let body = json!({
        "status": if status == StatusCode::OK { "ok" } else { "unavailable" },
        "database": word(database_up),
        // The key monitors already read; it reports the tail's LISTEN connection.
        "listener": word(tail_up),
    });
    (status, Json(body)).into_response()
}

async fn metrics(State(state): State<HttpState>, headers: axum::http::HeaderMap) -> Response {
    if let Some(expected) = &state.metrics_token
        && !bearer_matches(&headers, expected)
    {
        let mut response = error(
            StatusCode::UNAUTHORIZED,
            ErrorCode::Unauthorized,
            "/metrics needs HERALD_METRICS_TOKEN as a Bearer token",
        );
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return response;
    }
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
            ErrorCode::Internal,
            "metrics are unavailable",
        ),
    }
}

/// Whether the request carries `Authorization: Bearer <expected>`, compared
/// in time that does not depend on where the two first differ.
fn bearer_matches(headers: &axum::http::HeaderMap, expected: &str) -> bool {
    let Some(given) = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| crate::gateway::handshake::bearer(value).ok())
    else {
        return false;
    };
    let (given, expected) = (given.as_bytes(), expected.as_bytes());
    given.len() == expected.len()
        && given
            .iter()
            .zip(expected)
            .fold(0u8, |diff, (a, b)| diff | (a ^ b))
            == 0
}

#[cfg(test)]
mod tests {
    use super::{LocalAddr, bearer_matches, reached_at};

    #[test]
    fn the_metrics_token_must_match_exactly() {
        let mut headers = axum::http::HeaderMap::new();
        assert!(!bearer_matches(&headers, "s3cret"));
        headers.insert("authorization", "Bearer s3cret".parse().unwrap());
        assert!(bearer_matches(&headers, "s3cret"));
        assert!(!bearer_matches(&headers, "s3cre"));
        assert!(!bearer_matches(&headers, "s3creT"));
        headers.insert("authorization", "Basic s3cret".parse().unwrap());
        assert!(!bearer_matches(&headers, "s3cret"));
    }

    fn at(address: &str) -> Option<LocalAddr> {
        Some(LocalAddr(address.parse().unwrap()))
    }

    #[test]
    fn only_the_address_herald_was_reached_on_is_its_own_origin() {
        assert!(reached_at("http://127.0.0.1:4000", at("127.0.0.1:4000")));
        assert!(reached_at("http://localhost:4000", at("127.0.0.1:4000")));
        assert!(reached_at("http://[::1]:4000", at("[::1]:4000")));
        assert!(reached_at("https://10.0.0.5", at("10.0.0.5:443")));
        // A name the client chose, even one that resolves here (rebinding).
        assert!(!reached_at(
            "http://evil.example:4000",
            at("127.0.0.1:4000")
        ));
        assert!(!reached_at("http://localhost:4000", at("10.0.0.5:4000")));
        assert!(!reached_at("http://127.0.0.1:4001", at("127.0.0.1:4000")));
        assert!(!reached_at(
            "http://127.0.0.1:4000.evil.example",
            at("127.0.0.1:4000")
        ));
        assert!(!reached_at("http://127.0.0.1:4000", None));
        assert!(!reached_at("ftp://127.0.0.1:4000", at("127.0.0.1:4000")));
    }
}
