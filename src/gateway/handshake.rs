//! The handshake: a connect middleware that authenticates every socket
//! before it joins the namespace.
//!
//! The token comes from `auth.token`, then the `token` query parameter, then
//! `Authorization: Bearer`. A refusal reaches the client as `connect_error`
//! whose message is the refusal's code; it is logged once, at info, with
//! the reason and never the token.

use serde_json::Value;
use socketioxide::extract::{SocketRef, State, TryData};

use super::Gateway;
use super::session::{Resume, Session, SocketUser};
use crate::auth::TokenError;
use crate::db;
use crate::eventlog::Position;
use crate::wire::ErrorCode;

/// Why a connection was refused; `Display` is the `connect_error` message:
/// the refusal's code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    MissingToken,
    InvalidToken,
    TokenExpired,
    UserNotFound,
    UserInactive,
    TooManyConnections,
    RateLimited,
    /// The database could not be asked; the client should retry.
    Internal,
}

impl Refusal {
    pub fn code(self) -> ErrorCode {
        match self {
            Self::MissingToken => ErrorCode::MissingToken,
            Self::InvalidToken => ErrorCode::InvalidToken,
            Self::TokenExpired => ErrorCode::TokenExpired,
            Self::UserNotFound => ErrorCode::UserNotFound,
            Self::UserInactive => ErrorCode::UserInactive,
            Self::TooManyConnections => ErrorCode::TooManyConnections,
            Self::RateLimited => ErrorCode::RateLimited,
            Self::Internal => ErrorCode::Internal,
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.code().as_str())
    }
}

impl std::error::Error for Refusal {}

impl Refusal {
    /// Whether the credentials themselves were refused: what
    /// `HERALD_AUTH_FAILURE_LIMIT` counts.
    pub fn is_credential_failure(self) -> bool {
        match self {
            Self::MissingToken
            | Self::InvalidToken
            | Self::TokenExpired
            | Self::UserNotFound
            | Self::UserInactive => true,
            Self::TooManyConnections | Self::RateLimited | Self::Internal => false,
        }
    }
}

impl From<TokenError> for Refusal {
    fn from(error: TokenError) -> Self {
        match error {
            TokenError::Invalid => Self::InvalidToken,
            TokenError::Expired => Self::TokenExpired,
        }
    }
}

/// The connect middleware.
pub async fn authenticate(
    socket: SocketRef,
    TryData(auth): TryData<Value>,
    State(gateway): State<Gateway>,
) -> Result<(), Refusal> {
    // The session sent CONNECT: it no longer holds a pending place.
    if let Some(ticket) = socket
        .req_parts()
        .extensions
        .get::<super::admission::Ticket>()
    {
        ticket.settle();
    }
    let auth = auth.ok();
    match admit(&socket, auth.as_ref(), &gateway).await {
        Ok(session) => {
            tracing::debug!(socket.id = %socket.id, user.id = %session.user_id, "socket authenticated");
            socket.extensions.insert(SocketUser(session.user_id));
            socket.extensions.insert(session);
            Ok(())
        }
        Err(refusal) => {
            crate::telemetry::metrics::refused(refusal.code().as_str());
            tracing::info!(socket.id = %socket.id, reason = refusal.code().as_str(), "connection refused");
            Err(refusal)
        }
    }
}

/// Admits the socket or says why not; see [`super::limits`] for which
/// per-address limit each attempt is charged to.
async fn admit(
    socket: &SocketRef,
    auth: Option<&Value>,
    gateway: &Gateway,
) -> Result<Session, Refusal> {
    let peer = client_address(socket.req_parts(), gateway.trust_proxy);
    match verify(socket, auth, gateway, peer).await {
        Err(refusal) if refusal.is_credential_failure() => {
            if let Some(peer) = peer
                && !gateway.auth_failures.allow(peer)
            {
                crate::telemetry::metrics::rate_limited("auth_failure");
                return Err(Refusal::RateLimited);
            }
            Err(refusal)
        }
        outcome => outcome,
    }
}

/// Checks the token, then (once it verifies, before any query) the connect
/// limit, then the user.
async fn verify(
    socket: &SocketRef,
    auth: Option<&Value>,
    gateway: &Gateway,
    peer: Option<std::net::IpAddr>,
) -> Result<Session, Refusal> {
    let token = token(auth, socket.req_parts())?;
    let verified = gateway.jwt.verify(&token).await?;
    if let Some(peer) = peer
        && !gateway.connects.allow(peer)
    {
        crate::telemetry::metrics::rate_limited("connect");
        return Err(Refusal::RateLimited);
    }
    let user = async {
        let client = gateway.pool.get().await?;
        anyhow::Ok(db::users::find(&client, verified.user_id).await?)
    }
    .await
    .map_err(|error| {
        tracing::warn!(
            error = format!("{error:#}"),
            "cannot look the connecting user up"
        );
        Refusal::Internal
    })?
    .ok_or(Refusal::UserNotFound)?;
    if !user.is_active {
        return Err(Refusal::UserInactive);
    }
    let slot = gateway
        .presence
        .reserve(user.id, gateway.max_sockets_per_user)
        .map_err(|_| Refusal::TooManyConnections)?;
    let inbox = gateway.inbox_of(&user);
    Ok(Session::new(
        user.name,
        inbox,
        verified.expires_at,
        resume(auth),
        slot,
        gateway.event_rate,
    ))
}

/// The client's address: the TCP peer, or behind a trusted proxy the last
/// X-Forwarded-For entry (the one the proxy itself appended).
pub fn client_address(parts: &http::request::Parts, trust_proxy: bool) -> Option<std::net::IpAddr> {
    if trust_proxy {
        let forwarded = parts
            .headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .last()
            .and_then(|last| last.trim().parse().ok());
        if forwarded.is_some() {
            return forwarded;
        }
    }
    parts
        .extensions
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|info| info.0.ip())
}

/// The token, from the first place that has one.
pub fn token(auth: Option<&Value>, parts: &http::request::Parts) -> Result<String, Refusal> {
    if let Some(value) = auth.and_then(|a| a.get("token")) {
        match value {
            Value::String(token) if !token.trim().is_empty() => return Ok(token.trim().to_owned()),
            Value::String(_) | Value::Null => {}
            _ => return Err(Refusal::InvalidToken),
        }
    }
    if let Some(query) = parts.uri.query() {
        let from_query = form_urlencoded::parse(query.as_bytes())
            .find(|(key, value)| key == "token" && !value.trim().is_empty())
            .map(|(_, value)| value.trim().to_owned());
        if let Some(token) = from_query {
            return Ok(token);
        }
    }
    match parts.headers.get(http::header::AUTHORIZATION) {
        Some(header) => bearer(header),
        None => Err(Refusal::MissingToken),
    }
}

/// The token of an `Authorization: Bearer <token>` header (the socket's
/// handshake and the REST API read it alike).
pub fn bearer(header: &http::HeaderValue) -> Result<String, Refusal> {
    let header = header.to_str().map_err(|_| Refusal::InvalidToken)?;
    let (scheme, token) = header.trim().split_once(' ').ok_or(Refusal::InvalidToken)?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(Refusal::InvalidToken);
    }
    Ok(token.trim().to_owned())
}

/// What `auth.lastEventId` asks for.
pub fn resume(auth: Option<&Value>) -> Resume {
    match auth.and_then(|a| a.get("lastEventId")) {
        None | Some(Value::Null) => Resume::Fresh,
        Some(Value::String(id)) => match id.parse::<Position>() {
            Ok(position) => Resume::From(position),
            Err(_) => Resume::Reset,
        },
        Some(_) => Resume::Reset,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parts(uri: &str, authorization: Option<&str>) -> http::request::Parts {
        let mut request = http::Request::builder().uri(uri);
        if let Some(value) = authorization {
            request = request.header("authorization", value);
        }
        request.body(()).unwrap().into_parts().0
    }

    #[test]
    fn auth_token_comes_first_then_query_then_header() {
        let p = parts(
            "/socket.io/?EIO=4&token=from-query",
            Some("Bearer from-header"),
        );
        assert_eq!(
            token(Some(&json!({"token": "from-auth"})), &p).unwrap(),
            "from-auth"
        );
        assert_eq!(token(Some(&json!({})), &p).unwrap(), "from-query");
        let p = parts("/socket.io/?EIO=4", Some("Bearer from-header"));
        assert_eq!(token(None, &p).unwrap(), "from-header");
    }

    #[test]
    fn query_tokens_are_url_decoded() {
        let p = parts("/socket.io/?token=a%2Bb.c", None);
        assert_eq!(token(None, &p).unwrap(), "a+b.c");
    }

    #[test]
    fn missing_and_malformed_tokens_are_refused() {
        assert_eq!(
            token(None, &parts("/socket.io/?EIO=4", None)),
            Err(Refusal::MissingToken)
        );
        assert_eq!(
            token(Some(&json!({"token": ""})), &parts("/", None)),
            Err(Refusal::MissingToken)
        );
        assert_eq!(
            token(Some(&json!({"token": 42})), &parts("/", None)),
            Err(Refusal::InvalidToken)
        );
        assert_eq!(
            token(None, &parts("/", Some("Basic abc"))),
            Err(Refusal::InvalidToken)
        );
        assert_eq!(
            token(None, &parts("/", Some("Bearer"))),
            Err(Refusal::InvalidToken)
        );
    }

    #[test]
    fn the_client_address_comes_from_the_proxy_only_when_trusted() {
        let mut p = parts("/", None);
        p.headers.insert(
            "x-forwarded-for",
            "203.0.113.9, 198.51.100.7".parse().unwrap(),
        );
        p.extensions
            .insert(axum::extract::ConnectInfo(std::net::SocketAddr::from((
                [10, 0, 0, 1],
                4000,
            ))));
        assert_eq!(client_address(&p, false), Some([10, 0, 0, 1].into()));
        assert_eq!(client_address(&p, true), Some([198, 51, 100, 7].into()));
        p.headers
            .insert("x-forwarded-for", "garbage".parse().unwrap());
        assert_eq!(client_address(&p, true), Some([10, 0, 0, 1].into()));
    }

    #[test]
    fn refusal_messages_are_the_documented_codes() {
        assert_eq!(
            Refusal::TooManyConnections.to_string(),
            "too_many_connections"
        );
        assert_eq!(
            Refusal::TokenExpired.to_string(),
            Refusal::TokenExpired.code().as_str()
        );
    }

    #[test]
    fn last_event_id_is_parsed_or_reset() {
        assert_eq!(resume(None), Resume::Fresh);
        assert_eq!(resume(Some(&json!({"lastEventId": null}))), Resume::Fresh);
        assert_eq!(
            resume(Some(&json!({"lastEventId": "garbage"}))),
            Resume::Reset
        );
        assert_eq!(resume(Some(&json!({"lastEventId": 5}))), Resume::Reset);
        assert!(matches!(
            resume(Some(&json!({"lastEventId": "100:100:"}))),
            Resume::From(_)
        ));
    }
}

#[cfg(test)]
mod fuzz {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Any auth payload, query string and Authorization header yields a
        /// token or one of the documented refusals, never a panic.
        #[test]
        fn token_extraction_answers_every_input(auth in proptest::option::of(crate::fuzzing::json(&["token", "lastEventId"])), query in ".{0,80}", header in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..60))) {
            let mut request = http::Request::builder();
            if let Ok(uri) = format!("/socket.io/?{query}").parse::<http::Uri>() {
                request = request.uri(uri);
            }
            if let Some(bytes) = header
                && let Ok(value) = http::HeaderValue::from_bytes(&bytes)
            {
                request = request.header(http::header::AUTHORIZATION, value);
            }
            let parts = request.body(()).map(|r| r.into_parts().0).unwrap_or_else(|_| http::Request::new(()).into_parts().0);
            match token(auth.as_ref(), &parts) {
                Ok(token) => prop_assert!(!token.trim().is_empty()),
                Err(refusal) => prop_assert!(matches!(refusal, Refusal::MissingToken | Refusal::InvalidToken)),
            }
            let _ = resume(auth.as_ref());
        }

        /// Any text as lastEventId parses or is refused.
        #[test]
        fn positions_parse_or_refuse(text in ".{0,60}", digits in "[0-9:,/]{0,40}") {
            let _ = text.parse::<Position>();
            if let Ok(position) = digits.parse::<Position>() {
                prop_assert_eq!(position.to_string().parse::<Position>().ok(), Some(position));
            }
        }
    }
}
