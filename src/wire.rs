//! What travels to clients: the JSON payloads of socket events, acks and
//! REST answers, in camelCase, with `null` for every field
//! that has no value (never omitted).

use serde::Serialize;
use serde_json::value::RawValue;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

/// JSON kept as its text: an event row's payload as PostgreSQL sent it, read
/// straight into the struct its kind needs, and a socket event's payload,
/// serialized once and copied as it is into every packet. No tree of
/// values is built in between.
#[derive(Debug, Clone)]
pub struct RawJson(Box<RawValue>);

impl RawJson {
    pub fn of<T: Serialize + ?Sized>(value: &T) -> Self {
        // herald's payloads are plain structs of strings, ids and JSON
        // values, which always serialize.
        Self(serde_json::value::to_raw_value(value).unwrap_or_else(|_| RawValue::NULL.to_owned()))
    }

    pub fn get(&self) -> &str {
        self.0.get()
    }

    /// The JSON as a value, for tests to look into.
    #[cfg(test)]
    pub fn value(&self) -> serde_json::Value {
        serde_json::from_str(self.get()).unwrap_or_default()
    }
}

impl PartialEq for RawJson {
    fn eq(&self, other: &Self) -> bool {
        self.get() == other.get()
    }
}

impl Serialize for RawJson {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

impl<'a> tokio_postgres::types::FromSql<'a> for RawJson {
    fn from_sql(
        ty: &tokio_postgres::types::Type,
        raw: &'a [u8],
    ) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        let tokio_postgres::types::Json(json) =
            tokio_postgres::types::Json::<Box<RawValue>>::from_sql(ty, raw)?;
        Ok(Self(json))
    }

    fn accepts(ty: &tokio_postgres::types::Type) -> bool {
        <tokio_postgres::types::Json<Box<RawValue>> as tokio_postgres::types::FromSql>::accepts(ty)
    }
}

/// A notification as `notification:new` carries it. The event log's
/// payload is built in SQL (`herald.notification_json`) and parsed into
/// this; tests/api/payload.rs fails when the two disagree on a field.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Notification {
    pub id: Uuid,
    pub audience: String,
    pub kind: String,
    pub importance: String,
    pub title: String,
    pub message: String,
    pub action_url: Option<String>,
    #[schema(value_type = Object)]
    pub data: serde_json::Value,
    /// RFC 3339, UTC.
    pub created_at: String,
    pub expires_at: Option<String>,
}

/// `notification:new`: the notification and the event that announced it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NewNotification<'a> {
    #[serde(flatten)]
    pub notification: &'a Notification,
    pub event_id: Option<&'a str>,
}

/// An item of `notifications.list`: the notification and its state for the
/// user.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ListedNotification {
    #[serde(flatten)]
    pub notification: Notification,
    /// When the user (first) read it.
    pub read_at: Option<String>,
    /// When the user archived it.
    pub archived_at: Option<String>,
    /// Until when it is snoozed.
    pub snoozed_until: Option<String>,
    /// Whether the user's preferences mute its kind in the inbox (`IN_APP`):
    /// listed, but never pushed or counted.
    pub muted: bool,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NotificationRead<'a> {
    pub notification_id: Uuid,
    pub read_at: &'a str,
    pub event_id: &'a str,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NotificationRetracted<'a> {
    pub notification_id: Uuid,
    pub event_id: &'a str,
}

/// `notification:archived`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NotificationArchived<'a> {
    pub notification_id: Uuid,
    pub archived_at: &'a str,
    pub event_id: &'a str,
}

/// `notification:snoozed`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NotificationSnoozed<'a> {
    pub notification_id: Uuid,
    pub until: &'a str,
    pub event_id: &'a str,
}

/// `preferences:updated`: the user's whole list.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PreferencesUpdated<'a> {
    pub preferences: &'a [crate::preferences::Preference],
    pub event_id: &'a str,
}

/// `notification:counts`: every view the socket watches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub counts: std::collections::BTreeMap<String, i64>,
}

#[derive(Debug, Clone, Copy, Serialize, utoipa::ToSchema)]
pub struct Count {
    pub count: i64,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionSuccess {
    pub user_id: Uuid,
    pub user_name: String,
    pub timestamp: String,
    pub unread_count: i64,
    pub last_event_id: String,
}

/// One page of notifications, newest first.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Page {
    pub items: Vec<ListedNotification>,
    /// Pass as `before` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

// The acks below answer the socket's client events, and ReadAck and
// ReadAllAck the REST API too. `success` is always true in them; a failure
// is a `Failure`. Their doc comments are the OpenAPI descriptions, so which
// request each answers is said in plain comments.

// `mark.read`, and `POST /api/notifications/{id}/read`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReadAck {
    pub success: bool,
    pub notification_id: Uuid,
    /// When the caller (first) read it, RFC 3339.
    pub read_at: String,
}

// `mark.archived`, and `POST /api/notifications/{id}/archive`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ArchiveAck {
    pub success: bool,
    pub notification_id: Uuid,
    /// When the caller (first) archived it, RFC 3339.
    pub archived_at: String,
}

// `mark.unarchived` and `mark.unsnoozed`, and
// `POST /api/notifications/{id}/unarchive`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UnarchiveAck {
    pub success: bool,
    pub notification_id: Uuid,
}

// `archive.all_read`, and `POST /api/notifications/archive-read`.
#[derive(Debug, Clone, Copy, Serialize, utoipa::ToSchema)]
pub struct ArchiveReadAck {
    pub success: bool,
    /// How many read notifications it archived.
    pub count: u64,
}

// `mark.snoozed`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SnoozeAck {
    pub success: bool,
    pub notification_id: Uuid,
    pub until: String,
}

// `preferences.get` and `preferences.set`.
#[derive(Debug, Clone, Serialize)]
pub struct PreferencesAck {
    pub success: bool,
    pub preferences: Vec<crate::preferences::Preference>,
}

// `counts.watch`.
#[derive(Debug, Clone, Serialize)]
pub struct CountsAck {
    pub success: bool,
    pub counts: std::collections::BTreeMap<String, i64>,
}

// `mark.all_read`, and `POST /api/notifications/read-all`.
#[derive(Debug, Clone, Copy, Serialize, utoipa::ToSchema)]
pub struct ReadAllAck {
    pub success: bool,
    /// How many became read.
    pub count: u64,
}

/// `mark.delivered`.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeliveredAck {
    pub success: bool,
    pub notification_id: Uuid,
}

/// `notifications.list`: a [`Page`] with `success`.
#[derive(Debug, Clone, Serialize)]
pub struct ListAck {
    pub success: bool,
    #[serde(flatten)]
    pub page: Page,
}

/// `auth.refresh`: when the refreshed session now expires.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RefreshAck {
    pub success: bool,
    pub expires_at: String,
}

/// `{}`: the payload of `sync:reset` and `session:expired`.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Empty {}

/// Every error code herald answers with: in failed acks, as the message of
/// `connect_error`, and in REST error bodies (docs/reference.md lists them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    InvalidPayload,
    MissingToken,
    InvalidToken,
    TokenExpired,
    UserNotFound,
    UserInactive,
    TooManyConnections,
    NotFound,
    RateLimited,
    Unauthorized,
    OriginNotAllowed,
    ServerBusy,
    PushDisabled,
    EndpointNotAllowed,
    Internal,
}

impl ErrorCode {
    pub const ALL: [Self; 15] = [
        Self::InvalidPayload,
        Self::MissingToken,
        Self::InvalidToken,
        Self::TokenExpired,
        Self::UserNotFound,
        Self::UserInactive,
        Self::TooManyConnections,
        Self::NotFound,
        Self::RateLimited,
        Self::Unauthorized,
        Self::OriginNotAllowed,
        Self::ServerBusy,
        Self::PushDisabled,
        Self::EndpointNotAllowed,
        Self::Internal,
    ];

    /// The code as clients see it (and as metric labels carry it).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidPayload => "invalid_payload",
            Self::MissingToken => "missing_token",
            Self::InvalidToken => "invalid_token",
            Self::TokenExpired => "token_expired",
            Self::UserNotFound => "user_not_found",
            Self::UserInactive => "user_inactive",
            Self::TooManyConnections => "too_many_connections",
            Self::NotFound => "not_found",
            Self::RateLimited => "rate_limited",
            Self::Unauthorized => "unauthorized",
            Self::OriginNotAllowed => "origin_not_allowed",
            Self::ServerBusy => "server_busy",
            Self::PushDisabled => "push_disabled",
            Self::EndpointNotAllowed => "endpoint_not_allowed",
            Self::Internal => "internal",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `{code, message}`: the error of a failed ack and of a REST error body.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// invalid_payload, missing_token, invalid_token, token_expired, user_not_found, user_inactive, not_found, rate_limited, unauthorized, origin_not_allowed, server_busy, push_disabled, endpoint_not_allowed or internal.
    #[schema(value_type = String)]
    pub code: ErrorCode,
    pub message: String,
}

/// A failed ack: `{success: false, error: {code, message}}`.
#[derive(Debug, Clone, Serialize)]
pub struct Failure {
    pub success: bool,
    pub error: ErrorBody,
}

impl Failure {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            success: false,
            error: ErrorBody {
                code,
                message: message.into(),
            },
        }
    }
}

/// Formats a time as clients see every time: RFC 3339, UTC, microseconds.
pub fn rfc3339(at: OffsetDateTime) -> String {
    let at = at.to_offset(time::UtcOffset::UTC);
    let micros = at.microsecond();
    let whole = at.replace_nanosecond(0).unwrap_or(at);
    // Rfc3339 prints `Z` for UTC; splice microseconds in front of it.
    match whole.format(&Rfc3339) {
        Ok(text) => match text.strip_suffix('Z') {
            Some(base) => format!("{base}.{micros:06}Z"),
            None => text,
        },
        Err(_) => String::new(),
    }
}

/// The current time, formatted as [`rfc3339`] does.
pub fn now() -> String {
    rfc3339(OffsetDateTime::now_utc())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_utc_with_microseconds() {
        let at = time::macros::datetime!(2026-11-27 10:18:14.123456789 +01:00);
        assert_eq!(rfc3339(at), "2026-11-27T09:18:14.123456Z");
        let whole = time::macros::datetime!(2026-11-27 09:18:14 UTC);
        assert_eq!(rfc3339(whole), "2026-11-27T09:18:14.000000Z");
    }

    #[test]
    fn error_codes_serialize_as_their_names() {
        let mut seen = std::collections::HashSet::new();
        for code in ErrorCode::ALL {
            assert_eq!(
                serde_json::to_value(code).unwrap(),
                serde_json::json!(code.as_str())
            );
            assert!(seen.insert(code.as_str()), "{code} twice");
        }
    }

    #[test]
    fn absent_fields_are_null_not_omitted() {
        let n = Notification {
            id: Uuid::nil(),
            audience: "user".into(),
            kind: "general".into(),
            importance: "normal".into(),
            title: "t".into(),
            message: String::new(),
            action_url: None,
            data: serde_json::json!({}),
            created_at: "2026-11-27T09:18:14.000000Z".into(),
            expires_at: None,
        };
        let json = serde_json::to_value(NewNotification {
            notification: &n,
            event_id: None,
        })
        .unwrap();
        for field in ["actionUrl", "expiresAt", "eventId"] {
            assert_eq!(json.get(field), Some(&serde_json::Value::Null), "{field}");
        }
    }
}
