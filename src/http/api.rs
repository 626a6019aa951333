//! The REST API (docs/reference.md, "HTTP"): a user's notifications over
//! HTTP, with the same Bearer JWT verification as the socket and the same
//! queries.
//! Errors are `{error: {code, message}}` with a fitting status; a 500
//! carries no internal detail (the cause is logged where it happens).
//! The OpenAPI document at `/api/openapi.json` is generated from this code.

use axum::extract::{FromRef, FromRequestParts, Path, RawQuery, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;
use utoipa::{OpenApi, ToSchema};
use uuid::Uuid;

use crate::auth::TokenError;
use crate::db::{self, inbox::Inbox};
use crate::gateway::Gateway;
use crate::gateway::listing::{ListOptions, encode_cursor};
use crate::wire::{
    ArchiveAck, ArchiveReadAck, Count, ErrorBody, ErrorCode, ListedNotification, Page, ReadAck,
    ReadAllAck, UnarchiveAck,
};

pub fn router(gateway: Gateway) -> Router {
    Router::new()
        .route("/api/notifications", get(list))
        .route("/api/notifications/unread-count", get(unread_count))
        .route("/api/notifications/read-all", post(read_all))
        .route("/api/notifications/{id}/read", post(read))
        .route("/api/notifications/{id}/archive", post(archive))
        .route("/api/notifications/{id}/unarchive", post(unarchive))
        .route("/api/notifications/archive-read", post(archive_read))
        .route(
            "/api/preferences",
            get(preferences_get).put(preferences_put),
        )
        .route("/api/openapi.json", get(openapi))
        .with_state(gateway)
}

#[derive(OpenApi)]
#[openapi(
    info(title = "herald", description = "A user's notifications over HTTP. Live pushes are on Socket.IO (namespace /notifications)."),
    paths(list, unread_count, read, read_all, archive, unarchive, archive_read, preferences_get, preferences_put, super::push::public_key, super::push::subscribe, super::push::unsubscribe),
    components(schemas(Page, Count, ReadAck, ReadAllAck, ArchiveAck, UnarchiveAck, ArchiveReadAck, Preferences,
        crate::preferences::Preference, crate::preferences::Channel, ErrorResponse, ErrorDetail, ListedNotification, crate::wire::Notification,
        super::push::PublicKey, super::push::SubscriptionId, super::push::SubscriptionBody, super::push::SubscriptionKeys, super::push::EndpointBody)),
    modifiers(&BearerAuth),
    security(("bearer" = []))
)]
pub struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

/// A failed request; each variant documents its status.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: a malformed parameter.
    #[error("{0}")]
    BadRequest(String),
    /// 401: no token, or one that does not verify.
    #[error("{message}")]
    Unauthorized {
        code: ErrorCode,
        message: &'static str,
    },
    /// 403: the user is deactivated.
    #[error("the user is inactive")]
    Forbidden,
    /// 404: no such notification in this user's inbox.
    #[error("notification not found")]
    NotFound,
    /// 404: the caller holds no subscription to that endpoint.
    #[error("no such subscription")]
    SubscriptionNotFound,
    /// 404: Web Push is not configured.
    #[error("push is not configured on this server")]
    PushDisabled,
    /// 400: `HERALD_PUSH_ENDPOINTS` does not admit the endpoint.
    #[error("{0}")]
    EndpointNotAllowed(String),
    /// 429: too many requests from this user.
    #[error("too many requests")]
    RateLimited,
    /// 500: logged where it happened; the client learns nothing more.
    #[error("internal error")]
    Internal,
}

impl ApiError {
    fn status_and_code(&self) -> (StatusCode, ErrorCode) {
        match self {
            Self::BadRequest(_) => (StatusCode::BAD_REQUEST, ErrorCode::InvalidPayload),
            Self::Unauthorized { code, .. } => (StatusCode::UNAUTHORIZED, *code),
            Self::Forbidden => (StatusCode::FORBIDDEN, ErrorCode::UserInactive),
            Self::NotFound | Self::SubscriptionNotFound => {
                (StatusCode::NOT_FOUND, ErrorCode::NotFound)
            }
            Self::PushDisabled => (StatusCode::NOT_FOUND, ErrorCode::PushDisabled),
            Self::EndpointNotAllowed(_) => (StatusCode::BAD_REQUEST, ErrorCode::EndpointNotAllowed),
            Self::RateLimited => (StatusCode::TOO_MANY_REQUESTS, ErrorCode::RateLimited),
            Self::Internal => (StatusCode::INTERNAL_SERVER_ERROR, ErrorCode::Internal),
        }
    }

    /// Logs the cause once, here where it is handled, and hides it.
    pub(crate) fn internal(error: impl Into<anyhow::Error>) -> Self {
        tracing::error!(error = format!("{:#}", error.into()), "API request failed");
        Self::Internal
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        ErrorResponse::new(code, self.to_string()).into_response(status)
    }
}

// `{error: {code, message}}`: every REST error body, and the other routes'.
#[derive(Serialize, ToSchema)]
pub struct ErrorResponse {
    #[schema(value_type = ErrorDetail)]
    error: ErrorBody,
}

impl ErrorResponse {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            error: ErrorBody {
                code,
                message: message.into(),
            },
        }
    }

    pub fn into_response(self, status: StatusCode) -> Response {
        (status, Json(self)).into_response()
    }
}

// The OpenAPI name of wire::ErrorBody, as the document has always called it
// (comments, not docs: a doc comment would change the published document).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ErrorDetail {
    /// invalid_payload, missing_token, invalid_token, token_expired, user_not_found, user_inactive, not_found, rate_limited, push_disabled, endpoint_not_allowed or internal.
    code: String,
    message: String,
}

/// The authenticated caller's inbox.
pub struct Caller(Inbox);

impl Caller {
    pub fn user_id(&self) -> Uuid {
        self.0.user_id
    }
}

impl<S> FromRequestParts<S> for Caller
where
    Gateway: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let gateway = Gateway::from_ref(state);
        let gateway = &gateway;
        let header =
            parts
                .headers
                .get(axum::http::header::AUTHORIZATION)
                .ok_or(ApiError::Unauthorized {
                    code: ErrorCode::MissingToken,
                    message: "send Authorization: Bearer <token>",
                })?;
        let invalid = ApiError::Unauthorized {
            code: ErrorCode::InvalidToken,
            message: "the token does not verify",
        };
        let token = crate::gateway::handshake::bearer(header).map_err(|_| invalid)?;
        let verified = gateway.jwt.verify(&token).await.map_err(|e| match e {
            TokenError::Expired => ApiError::Unauthorized {
                code: ErrorCode::TokenExpired,
                message: "the token has expired",
            },
            TokenError::Invalid => ApiError::Unauthorized {
                code: ErrorCode::InvalidToken,
                message: "the token does not verify",
            },
        })?;
        if !gateway.api_calls.allow(verified.user_id) {
            return Err(ApiError::RateLimited);
        }
        let client = gateway.pool.get().await.map_err(ApiError::internal)?;
        let user = db::users::find(&client, verified.user_id)
            .await
            .map_err(ApiError::internal)?
            .ok_or(ApiError::Unauthorized {
                code: ErrorCode::UserNotFound,
                message: "no such user",
            })?;
        if !user.is_active {
            return Err(ApiError::Forbidden);
        }
        Ok(Self(gateway.inbox_of(&user)))
    }
}

#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// How many, default 20.
    #[param(value_type = Option<u32>, minimum = 1, maximum = 100)]
    limit: Option<String>,
    /// A `nextCursor` from the previous page.
    #[param(
        pattern = "^[0-9]{1,17}_[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
    )]
    before: Option<String>,
    /// true: unread notifications only.
    #[param(value_type = Option<bool>)]
    unread: Option<String>,
    /// true: archived notifications only (otherwise they are left out).
    #[param(value_type = Option<bool>)]
    archived: Option<String>,
    /// true: snoozed notifications only (otherwise they are left out).
    #[param(value_type = Option<bool>)]
    snoozed: Option<String>,
    /// Comma-separated kind patterns (`order.shipped`, `order.*`, `*`), at
    /// most 20 of at most 102 characters each: kinds matching any.
    #[param(
        example = "order.*,billing.*",
        pattern = r"^(\*|[a-z0-9_-]+(\.[a-z0-9_-]+)*(\.\*)?)(,(\*|[a-z0-9_-]+(\.[a-z0-9_-]+)*(\.\*)?))*$"
    )]
    kinds: Option<String>,
    /// Comma-separated importance levels (low, normal, high, urgent), at
    /// most 4: any of them.
    #[param(
        example = "high,urgent",
        pattern = "^(low|normal|high|urgent)(,(low|normal|high|urgent)){0,3}$"
    )]
    importance: Option<String>,
}

impl ListParams {
    /// Parsed by hand so that every mistake is a JSON 400, duplicates too.
    fn parse(query: &str) -> Result<Self, ApiError> {
        let mut params = Self {
            limit: None,
            before: None,
            unread: None,
            archived: None,
            snoozed: None,
            kinds: None,
            importance: None,
        };
        for (key, value) in form_urlencoded::parse(query.as_bytes()) {
            let slot = match key.as_ref() {
                "limit" => &mut params.limit,
                "before" => &mut params.before,
                "unread" => &mut params.unread,
                "archived" => &mut params.archived,
                "snoozed" => &mut params.snoozed,
                "kinds" => &mut params.kinds,
                "importance" => &mut params.importance,
                _ => continue,
            };
            if slot.replace(value.into_owned()).is_some() {
                return Err(ApiError::BadRequest(format!("{key} is given twice")));
            }
        }
        Ok(params)
    }

    /// The same options `notifications.list` takes, checked by the same rule.
    fn options(self) -> Result<ListOptions, ApiError> {
        fn flag(name: &str, value: Option<String>) -> Result<Option<bool>, ApiError> {
            match value.as_deref() {
                None => Ok(None),
                Some("true") => Ok(Some(true)),
                Some("false") => Ok(Some(false)),
                Some(_) => Err(ApiError::BadRequest(format!(
                    "{name} must be true or false"
                ))),
            }
        }
        fn list(value: Option<String>) -> Option<Vec<String>> {
            value.map(|v| v.split(',').map(str::to_owned).collect())
        }
        // Not a number is refused as out of range is, by listing().
        let limit = self.limit.map(|text| text.parse::<i64>().unwrap_or(0));
        Ok(ListOptions {
            before: self.before,
            limit,
            unread_only: flag("unread", self.unread)?,
            archived: flag("archived", self.archived)?,
            snoozed: flag("snoozed", self.snoozed)?,
            kinds: list(self.kinds),
            importance: list(self.importance),
        })
    }
}

#[utoipa::path(
    get, path = "/api/notifications", params(ListParams),
    responses(
        (status = 200, description = "A page of the caller's notifications, newest first", body = Page),
        (status = 400, description = "A malformed parameter", body = ErrorResponse),
        (status = 401, description = "Missing or invalid token", body = ErrorResponse),
        (status = 403, description = "Inactive user", body = ErrorResponse),
        (status = 429, description = "Too many requests", body = ErrorResponse),
        (status = 500, description = "Internal error", body = ErrorResponse),
    )
)]
async fn list(
    State(gateway): State<Gateway>,
    caller: Caller,
    RawQuery(query): RawQuery,
) -> Result<Json<Page>, ApiError> {
    let listing = ListParams::parse(query.as_deref().unwrap_or_default())?
        .options()?
        .listing()
        .map_err(ApiError::BadRequest)?;
    let client = gateway.pool.get().await.map_err(ApiError::internal)?;
    let page = caller
        .0
        .list(&client, &listing)
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(Page {
        items: page.items,
        next_cursor: page.next.map(encode_cursor),
    }))
}

#[utoipa::path(
    get, path = "/api/notifications/unread-count",
    responses(
        (status = 200, description = "How many notifications the caller has not read", body = Count),
        (status = 401, description = "Missing or invalid token", body = ErrorResponse),
        (status = 403, description = "Inactive user", body = ErrorResponse),
        (status = 429, description = "Too many requests", body = ErrorResponse),
        (status = 500, description = "Internal error", body = ErrorResponse),
    )
)]
async fn unread_count(
    State(gateway): State<Gateway>,
    caller: Caller,
) -> Result<Json<Count>, ApiError> {
    let client = gateway.pool.get().await.map_err(ApiError::internal)?;
    let count = caller
        .0
        .unread_count(&client)
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(Count { count }))
}

#[utoipa::path(
    post, path = "/api/notifications/{id}/read",
    params(("id" = Uuid, Path, description = "The notification's id")),
    responses(
        (status = 200, description = "Read; reading again answers the first time", body = ReadAck),
        (status = 400, description = "The id is not a UUID", body = ErrorResponse),
        (status = 401, description = "Missing or invalid token", body = ErrorResponse),
        (status = 403, description = "Inactive user", body = ErrorResponse),
        (status = 404, description = "Not in the caller's inbox", body = ErrorResponse),
        (status = 429, description = "Too many requests", body = ErrorResponse),
        (status = 500, description = "Internal error", body = ErrorResponse),
    )
)]
async fn read(
    State(gateway): State<Gateway>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<ReadAck>, ApiError> {
    let id: Uuid = id
        .parse()
        .map_err(|_| ApiError::BadRequest("the id is not a UUID".into()))?;
    let client = gateway.pool.get().await.map_err(ApiError::internal)?;
    let read_at = caller
        .0
        .mark_read(&client, id)
        .await
        .map_err(ApiError::internal)?
        .ok_or(ApiError::NotFound)?;
    crate::telemetry::metrics::reads(1);
    Ok(Json(ReadAck {
        success: true,
        notification_id: id,
        read_at,
    }))
}

#[utoipa::path(
    post, path = "/api/notifications/read-all",
    responses(
        (status = 200, description = "Everything unread is now read", body = ReadAllAck),
        (status = 401, description = "Missing or invalid token", body = ErrorResponse),
        (status = 403, description = "Inactive user", body = ErrorResponse),
        (status = 429, description = "Too many requests", body = ErrorResponse),
        (status = 500, description = "Internal error", body = ErrorResponse),
    )
)]
async fn read_all(
    State(gateway): State<Gateway>,
    caller: Caller,
) -> Result<Json<ReadAllAck>, ApiError> {
    let client = gateway.pool.get().await.map_err(ApiError::internal)?;
    let count = caller
        .0
        .mark_all_read(&client)
        .await
        .map_err(ApiError::internal)?;
    crate::telemetry::metrics::reads(count);
    Ok(Json(ReadAllAck {
        success: true,
        count,
    }))
}

fn notification_id(id: &str) -> Result<Uuid, ApiError> {
    id.parse()
        .map_err(|_| ApiError::BadRequest("the id is not a UUID".into()))
}

#[utoipa::path(
    post, path = "/api/notifications/{id}/archive",
    params(("id" = String, Path, description = "The notification's id")),
    responses(
        (status = 200, description = "Archived, and read; archiving again answers the first time", body = ArchiveAck),
        (status = 400, description = "The id is not a UUID", body = ErrorResponse),
        (status = 401, description = "Missing or invalid token", body = ErrorResponse),
        (status = 403, description = "Inactive user", body = ErrorResponse),
        (status = 404, description = "Not in the caller's inbox", body = ErrorResponse),
        (status = 429, description = "Too many requests", body = ErrorResponse),
        (status = 500, description = "Internal error", body = ErrorResponse),
    )
)]
async fn archive(
    State(gateway): State<Gateway>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<ArchiveAck>, ApiError> {
    let id = notification_id(&id)?;
    let client = gateway.pool.get().await.map_err(ApiError::internal)?;
    let archived_at = caller
        .0
        .archive(&client, id)
        .await
        .map_err(ApiError::internal)?
        .ok_or(ApiError::NotFound)?;
    Ok(Json(ArchiveAck {
        success: true,
        notification_id: id,
        archived_at,
    }))
}

#[utoipa::path(
    post, path = "/api/notifications/{id}/unarchive",
    params(("id" = String, Path, description = "The notification's id")),
    responses(
        (status = 200, description = "Not archived (it stays read)", body = UnarchiveAck),
        (status = 400, description = "The id is not a UUID", body = ErrorResponse),
        (status = 401, description = "Missing or invalid token", body = ErrorResponse),
        (status = 403, description = "Inactive user", body = ErrorResponse),
        (status = 404, description = "Not in the caller's inbox", body = ErrorResponse),
        (status = 429, description = "Too many requests", body = ErrorResponse),
        (status = 500, description = "Internal error", body = ErrorResponse),
    )
)]
async fn unarchive(
    State(gateway): State<Gateway>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<UnarchiveAck>, ApiError> {
    let id = notification_id(&id)?;
    let client = gateway.pool.get().await.map_err(ApiError::internal)?;
    if !caller
        .0
        .unarchive(&client, id)
        .await
        .map_err(ApiError::internal)?
    {
        return Err(ApiError::NotFound);
    }
    Ok(Json(UnarchiveAck {
        success: true,
        notification_id: id,
    }))
}

#[utoipa::path(
    post, path = "/api/notifications/archive-read",
    responses(
        (status = 200, description = "Every read, live, unarchived notification is archived", body = ArchiveReadAck),
        (status = 401, description = "Missing or invalid token", body = ErrorResponse),
        (status = 403, description = "Inactive user", body = ErrorResponse),
        (status = 429, description = "Too many requests", body = ErrorResponse),
        (status = 500, description = "Internal error", body = ErrorResponse),
    )
)]
async fn archive_read(
    State(gateway): State<Gateway>,
    caller: Caller,
) -> Result<Json<ArchiveReadAck>, ApiError> {
    let client = gateway.pool.get().await.map_err(ApiError::internal)?;
    let count = caller
        .0
        .archive_read(&client)
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(ArchiveReadAck {
        success: true,
        count,
    }))
}

/// A user's preferences: `GET` answers them, `PUT` replaces them.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Preferences {
    /// At most 100, each (kindPattern, channel) once.
    #[schema(max_items = 100)]
    pub preferences: Vec<crate::preferences::Preference>,
}

/// The largest `PUT /api/preferences` body.
const MAX_PREFERENCES_BODY: usize = 16 * 1024;

#[utoipa::path(
    get, path = "/api/preferences",
    responses(
        (status = 200, description = "The caller's preferences", body = Preferences),
        (status = 401, description = "Missing or invalid token", body = ErrorResponse),
        (status = 403, description = "Inactive user", body = ErrorResponse),
        (status = 429, description = "Too many requests", body = ErrorResponse),
        (status = 500, description = "Internal error", body = ErrorResponse),
    )
)]
async fn preferences_get(
    State(gateway): State<Gateway>,
    caller: Caller,
) -> Result<Json<Preferences>, ApiError> {
    let client = gateway.pool.get().await.map_err(ApiError::internal)?;
    let preferences = crate::db::preferences::list(&client, caller.user_id())
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(Preferences { preferences }))
}

#[utoipa::path(
    put, path = "/api/preferences",
    request_body(content = Preferences, content_type = "application/json"),
    responses(
        (status = 200, description = "Replaced; the list as stored", body = Preferences),
        (status = 400, description = "A pattern or channel is invalid, one appears twice, or there are more than 100 (invalid_payload)", body = ErrorResponse),
        (status = 401, description = "Missing or invalid token", body = ErrorResponse),
        (status = 403, description = "Inactive user", body = ErrorResponse),
        (status = 429, description = "Too many requests", body = ErrorResponse),
        (status = 500, description = "Internal error", body = ErrorResponse),
    )
)]
async fn preferences_put(
    State(gateway): State<Gateway>,
    caller: Caller,
    body: axum::body::Bytes,
) -> Result<Json<Preferences>, ApiError> {
    let wanted = parse_preferences(&body).map_err(ApiError::BadRequest)?;
    let client = gateway.pool.get().await.map_err(ApiError::internal)?;
    crate::db::preferences::replace(&client, caller.user_id(), &wanted)
        .await
        .map_err(ApiError::internal)?;
    let preferences = crate::db::preferences::list(&client, caller.user_id())
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(Preferences { preferences }))
}

/// A `PUT /api/preferences` body, checked: each pattern and channel valid,
/// no (pattern, channel) twice, at most 100.
fn parse_preferences(body: &[u8]) -> Result<Vec<crate::preferences::Preference>, String> {
    use crate::gateway::inbox_state::{MAX_PREFERENCES, preference};
    if body.len() > MAX_PREFERENCES_BODY {
        return Err(format!(
            "the body is larger than {MAX_PREFERENCES_BODY} bytes"
        ));
    }
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    struct Item {
        kind_pattern: String,
        channel: String,
        enabled: bool,
    }
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Body {
        preferences: Vec<Item>,
    }
    let body: Body = serde_json::from_slice(body).map_err(|e| {
        format!("{e}; expected {{preferences: [{{kindPattern, channel: IN_APP|PUSH, enabled}}]}}")
    })?;
    if body.preferences.len() > MAX_PREFERENCES {
        return Err(format!("at most {MAX_PREFERENCES} preferences"));
    }
    let mut seen = std::collections::HashSet::new();
    let mut wanted = Vec::with_capacity(body.preferences.len());
    for item in body.preferences {
        let preference = preference(&item.kind_pattern, &item.channel, item.enabled)?;
        if !seen.insert((preference.kind_pattern.clone(), preference.channel)) {
            return Err(format!(
                "{} for {} appears twice",
                preference.kind_pattern,
                preference.channel.as_str()
            ));
        }
        wanted.push(preference);
    }
    Ok(wanted)
}
