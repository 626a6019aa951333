//! Client events: `mark.read`, `mark.delivered`, `mark.all_read`,
//! `notifications.list` and `auth.refresh`, each answered through its
//! acknowledgement.
//!
//! Payloads are parsed here, never trusted: a malformed one is answered with
//! `invalid_payload` and the socket stays up. Writes go to the database
//! only; the triggers and the tail tell every device, this one included.

use serde::Deserialize;
use serde_json::{Value, json};
use socketioxide::extract::{AckSender, SocketRef, State, TryData};
use time::OffsetDateTime;
use tracing::Instrument;
use uuid::Uuid;

use super::Gateway;
use super::listing::{LIST_SHAPE, ListOptions, encode_cursor};
use super::session::Session;
use crate::db::inbox::Inbox;
use crate::names::on;
use crate::telemetry::metrics;
use crate::wire::{self, ErrorCode, Failure};

/// Why a client event failed; each variant is an ack error code.
#[derive(Debug, thiserror::Error)]
pub enum AckError {
    #[error("{0}")]
    InvalidPayload(String),
    #[error("notification not found")]
    NotFound,
    #[error("{0}")]
    InvalidToken(&'static str),
    #[error("too many requests")]
    RateLimited,
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl AckError {
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::InvalidPayload(_) => ErrorCode::InvalidPayload,
            Self::NotFound => ErrorCode::NotFound,
            Self::InvalidToken(_) => ErrorCode::InvalidToken,
            Self::RateLimited => ErrorCode::RateLimited,
            Self::Internal(_) => ErrorCode::Internal,
        }
    }
}

impl From<tokio_postgres::Error> for AckError {
    fn from(error: tokio_postgres::Error) -> Self {
        Self::Internal(error.into())
    }
}

impl From<deadpool_postgres::PoolError> for AckError {
    fn from(error: deadpool_postgres::PoolError) -> Self {
        Self::Internal(error.into())
    }
}

pub(super) type AckResult = Result<Value, AckError>;

/// A successful ack as the JSON value sent. Going through a `Value` orders
/// its keys (serde_json's map is sorted), as acks have always been sent;
/// the REST API sends the same types in field order.
pub(super) fn succeeded(answer: impl serde::Serialize) -> AckResult {
    serde_json::to_value(answer).map_err(|error| AckError::Internal(error.into()))
}

pub fn register(socket: &SocketRef) {
    socket.on(on::MARK_READ, mark_read);
    socket.on(on::MARK_DELIVERED, mark_delivered);
    socket.on(on::MARK_ALL_READ, mark_all_read);
    socket.on(on::NOTIFICATIONS_LIST, list);
    socket.on(on::AUTH_REFRESH, refresh);
    super::inbox_state::register(socket);
}

/// The payload, or `null` when the client sent none.
pub(super) fn payload(data: Result<Value, impl std::fmt::Display>) -> Value {
    data.unwrap_or(Value::Null)
}

pub(super) fn parse<T: serde::de::DeserializeOwned>(
    data: Value,
    expected: &str,
) -> Result<T, AckError> {
    if !data.is_object() {
        return Err(AckError::InvalidPayload(format!(
            "expected an object {expected}"
        )));
    }
    serde_json::from_value(data)
        .map_err(|e| AckError::InvalidPayload(format!("{e}; expected {expected}")))
}

pub(super) fn answer(socket: &SocketRef, ack: AckSender, event: &'static str, result: AckResult) {
    let sent = match result {
        Ok(value) => {
            metrics::client_event(event, "ok");
            ack.send(&value)
        }
        Err(error) => {
            metrics::client_event(event, error.code().as_str());
            match &error {
                AckError::Internal(cause) => {
                    tracing::error!(socket.id = %socket.id, event, error = format!("{cause:#}"), "client event failed")
                }
                _ => {
                    tracing::debug!(socket.id = %socket.id, event, code = error.code().as_str(), "client event refused")
                }
            }
            ack.send(&Failure::new(error.code(), error.to_string()))
        }
    };
    // The client asked for no acknowledgement, or left meanwhile.
    drop(sent);
}

/// A span for one client event, with the socket's and the user's ids.
pub(super) fn span(socket: &SocketRef, event: &'static str) -> tracing::Span {
    let user = socket.extensions.get::<Session>().map(|s| s.user_id);
    tracing::info_span!("client_event", socket.id = %socket.id, user.id = ?user, event)
}

/// The socket's session, if it may send another event now.
pub(super) fn admit(socket: &SocketRef) -> Result<Session, AckError> {
    let session = socket
        .extensions
        .get::<Session>()
        .ok_or_else(|| AckError::Internal(anyhow::anyhow!("socket without a session")))?;
    if !session.allow_event() {
        return Err(AckError::RateLimited);
    }
    Ok(session)
}

/// The user's current rooms: the live ones once the socket has joined.
pub(super) fn inbox(gateway: &Gateway, session: &Session) -> Inbox {
    gateway
        .presence
        .inbox(session.user_id)
        .unwrap_or(session.inbox)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ByNotification {
    pub(super) notification_id: Uuid,
}

async fn mark_read(
    socket: SocketRef,
    TryData(data): TryData<Value>,
    ack: AckSender,
    State(gateway): State<Gateway>,
) {
    let result = async {
        let session = admit(&socket)?;
        let request: ByNotification = parse(payload(data), "{notificationId: uuid}")?;
        let client = gateway.pool.get().await?;
        let read_at = inbox(&gateway, &session)
            .mark_read(&client, request.notification_id)
            .await?
            .ok_or(AckError::NotFound)?;
        metrics::reads(1);
        succeeded(wire::ReadAck {
            success: true,
            notification_id: request.notification_id,
            read_at,
        })
    }
    .instrument(span(&socket, on::MARK_READ))
    .await;
    answer(&socket, ack, on::MARK_READ, result);
}

async fn mark_delivered(
    socket: SocketRef,
    TryData(data): TryData<Value>,
    ack: AckSender,
    State(gateway): State<Gateway>,
) {
    let result = async {
        let session = admit(&socket)?;
        let request: ByNotification = parse(payload(data), "{notificationId: uuid}")?;
        let client = gateway.pool.get().await?;
        if !inbox(&gateway, &session)
            .mark_delivered(&client, request.notification_id)
            .await?
        {
            return Err(AckError::NotFound);
        }
        metrics::deliveries_acknowledged();
        succeeded(wire::DeliveredAck {
            success: true,
            notification_id: request.notification_id,
        })
    }
    .instrument(span(&socket, on::MARK_DELIVERED))
    .await;
    answer(&socket, ack, on::MARK_DELIVERED, result);
}

async fn mark_all_read(
    socket: SocketRef,
    TryData(data): TryData<Value>,
    ack: AckSender,
    State(gateway): State<Gateway>,
) {
    let result = async {
        let session = admit(&socket)?;
        match payload(data) {
            Value::Null => {}
            Value::Object(_) => {}
            _ => return Err(AckError::InvalidPayload("expected an object {}".into())),
        }
        let client = gateway.pool.get().await?;
        let count = inbox(&gateway, &session).mark_all_read(&client).await?;
        metrics::reads(count);
        succeeded(wire::ReadAllAck {
            success: true,
            count,
        })
    }
    .instrument(span(&socket, on::MARK_ALL_READ))
    .await;
    answer(&socket, ack, on::MARK_ALL_READ, result);
}

async fn list(
    socket: SocketRef,
    TryData(data): TryData<Value>,
    ack: AckSender,
    State(gateway): State<Gateway>,
) {
    let result = async {
        let session = admit(&socket)?;
        let data = match payload(data) {
            Value::Null => json!({}),
            other => other,
        };
        let listing = parse::<ListOptions>(data, LIST_SHAPE)?
            .listing()
            .map_err(AckError::InvalidPayload)?;
        let client = gateway.pool.get().await?;
        let page = inbox(&gateway, &session).list(&client, &listing).await?;
        succeeded(wire::ListAck {
            success: true,
            page: wire::Page {
                items: page.items,
                next_cursor: page.next.map(encode_cursor),
            },
        })
    }
    .instrument(span(&socket, on::NOTIFICATIONS_LIST))
    .await;
    answer(&socket, ack, on::NOTIFICATIONS_LIST, result);
}

#[derive(Deserialize)]
struct RefreshRequest {
    token: String,
}

async fn refresh(
    socket: SocketRef,
    TryData(data): TryData<Value>,
    ack: AckSender,
    State(gateway): State<Gateway>,
) {
    let result = async {
        let session = admit(&socket)?;
        let request: RefreshRequest = parse(payload(data), "{token: string}")?;
        let verified = gateway.jwt.verify(&request.token).await.map_err(|e| {
            AckError::InvalidToken(match e {
                crate::auth::TokenError::Expired => "token expired",
                crate::auth::TokenError::Invalid => "token invalid",
            })
        })?;
        if verified.user_id != session.user_id {
            return Err(AckError::InvalidToken("token belongs to another user"));
        }
        session.extend(verified.expires_at);
        let expires_at = OffsetDateTime::from_unix_timestamp(verified.expires_at as i64)
            .map_err(|_| AckError::InvalidToken("exp out of range"))?;
        succeeded(wire::RefreshAck {
            success: true,
            expires_at: wire::rfc3339(expires_at),
        })
    }
    .instrument(span(&socket, on::AUTH_REFRESH))
    .await;
    answer(&socket, ack, on::AUTH_REFRESH, result);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The acks' text, byte for byte as clients have always received it.
    #[test]
    fn acks_keep_their_bytes() {
        let id = Uuid::nil();
        let text = |result: AckResult| result.unwrap().to_string();
        let nil = "00000000-0000-0000-0000-000000000000";
        assert_eq!(
            text(succeeded(wire::ReadAck {
                success: true,
                notification_id: id,
                read_at: "t".into(),
            })),
            format!(r#"{{"notificationId":"{nil}","readAt":"t","success":true}}"#)
        );
        assert_eq!(
            text(succeeded(wire::DeliveredAck {
                success: true,
                notification_id: id,
            })),
            format!(r#"{{"notificationId":"{nil}","success":true}}"#)
        );
        assert_eq!(
            text(succeeded(wire::ReadAllAck {
                success: true,
                count: 3,
            })),
            r#"{"count":3,"success":true}"#
        );
        assert_eq!(
            text(succeeded(wire::ListAck {
                success: true,
                page: wire::Page {
                    items: Vec::new(),
                    next_cursor: None,
                },
            })),
            r#"{"items":[],"nextCursor":null,"success":true}"#
        );
        assert_eq!(
            text(succeeded(wire::RefreshAck {
                success: true,
                expires_at: "t".into(),
            })),
            r#"{"expiresAt":"t","success":true}"#
        );
        assert_eq!(
            serde_json::to_string(&Failure::new(ErrorCode::NotFound, "m")).unwrap(),
            r#"{"success":false,"error":{"code":"not_found","message":"m"}}"#
        );
    }

    #[test]
    fn payloads_must_be_objects_with_the_right_fields() {
        assert!(parse::<ByNotification>(json!("x"), "").is_err());
        assert!(parse::<ByNotification>(Value::Null, "").is_err());
        assert!(parse::<ByNotification>(json!({}), "").is_err());
        assert!(parse::<ByNotification>(json!({"notificationId": "nope"}), "").is_err());
        assert!(parse::<ByNotification>(json!({"notificationId": Uuid::nil()}), "").is_ok());
    }
}

#[cfg(test)]
mod fuzz {
    use super::*;
    use crate::gateway::listing::decode_cursor;
    use proptest::prelude::*;

    proptest! {
        /// Every payload parses or is refused as invalid_payload.
        #[test]
        fn payload_parsing_answers_every_input(data in crate::fuzzing::json(&["notificationId", "before", "limit", "unreadOnly", "archived", "snoozed", "kinds", "importance", "token"])) {
            for result in [
                parse::<ByNotification>(data.clone(), "").map(|_| ()),
                parse::<ListOptions>(data.clone(), "").map(|_| ()),
                parse::<RefreshRequest>(data.clone(), "").map(|_| ()),
            ] {
                if let Err(error) = result {
                    prop_assert_eq!(error.code(), ErrorCode::InvalidPayload);
                }
            }
            if let Ok(options) = parse::<ListOptions>(data.clone(), "") {
                let _ = options.listing();
            }
            if let Some(cursor) = data.as_str() {
                let _ = decode_cursor(cursor);
            }
        }
    }
}
