//! The Web Push routes (docs/reference.md, "Web Push"): the VAPID public
//! key browsers subscribe with, and a user's subscriptions, with the same
//! Bearer auth and error shape as the rest of `/api`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{FromRef, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use super::api::{ApiError, Caller, ErrorResponse};
use crate::db;
use crate::gateway::Gateway;
use crate::push::PushConfig;
use crate::push::endpoint::Refused;
use crate::push::subscription;

/// What the push routes share: the gateway (auth, the pool) and the push
/// configuration, `None` when push is off.
#[derive(Clone)]
pub struct PushState {
    pub gateway: Gateway,
    pub push: Option<Arc<PushConfig>>,
}

impl FromRef<PushState> for Gateway {
    fn from_ref(state: &PushState) -> Self {
        state.gateway.clone()
    }
}

pub fn router(state: PushState) -> Router {
    Router::new()
        .route("/api/push/public-key", get(public_key))
        .route(
            "/api/push/subscriptions",
            post(subscribe).delete(unsubscribe),
        )
        .with_state(state)
}

impl PushState {
    fn config(&self) -> Result<&PushConfig, ApiError> {
        self.push.as_deref().ok_or(ApiError::PushDisabled)
    }
}

/// `{publicKey}`: the VAPID key as `applicationServerKey`.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PublicKey {
    /// base64url of the uncompressed P-256 point (65 bytes).
    public_key: String,
}

/// `{id}` of a stored subscription.
#[derive(Serialize, ToSchema)]
pub struct SubscriptionId {
    id: Uuid,
}

/// A browser's `PushSubscription.toJSON()`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct SubscriptionBody {
    /// The push service URL herald POSTs to.
    #[schema(min_length = 1, max_length = 2048, pattern = "^https?://")]
    endpoint: String,
    /// When the browser says the subscription ends (milliseconds since the epoch).
    #[schema(rename = "expirationTime", nullable)]
    expiration_time: Option<f64>,
    keys: SubscriptionKeys,
}

/// The subscription's keys, base64url.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct SubscriptionKeys {
    /// The browser's P-256 public key, uncompressed (65 bytes).
    #[schema(pattern = "^[A-Za-z0-9_-]{87}$")]
    p256dh: String,
    /// The 16-byte authentication secret.
    #[schema(pattern = "^[A-Za-z0-9_-]{22}$")]
    auth: String,
}

/// `{endpoint}` of a subscription to delete.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct EndpointBody {
    #[schema(min_length = 1, max_length = 2048)]
    endpoint: String,
}

#[utoipa::path(
    get, path = "/api/push/public-key", security(()),
    responses(
        (status = 200, description = "The VAPID public key browsers subscribe with", body = PublicKey),
        (status = 404, description = "Push is off (push_disabled)", body = ErrorResponse),
    )
)]
pub async fn public_key(State(state): State<PushState>) -> Result<Json<PublicKey>, ApiError> {
    let config = state.config()?;
    Ok(Json(PublicKey {
        public_key: config.key.public_key().to_owned(),
    }))
}

#[utoipa::path(
    post, path = "/api/push/subscriptions",
    request_body(content = SubscriptionBody, content_type = "application/json"),
    responses(
        (status = 201, description = "Stored: new to the caller", body = SubscriptionId),
        (status = 200, description = "Already the caller's: the same id", body = SubscriptionId),
        (status = 400, description = "A field is malformed (invalid_payload, naming it) or the endpoint is refused (endpoint_not_allowed)", body = ErrorResponse),
        (status = 401, description = "Missing or invalid token", body = ErrorResponse),
        (status = 403, description = "Inactive user", body = ErrorResponse),
        (status = 404, description = "Push is off (push_disabled)", body = ErrorResponse),
        (status = 429, description = "Too many requests", body = ErrorResponse),
        (status = 500, description = "Internal error", body = ErrorResponse),
    )
)]
pub async fn subscribe(
    State(state): State<PushState>,
    caller: Caller,
    body: Bytes,
) -> Result<Response, ApiError> {
    let config = state.config()?;
    let subscription = subscription::parse(&body).map_err(ApiError::BadRequest)?;
    config
        .endpoints
        .check(&subscription.endpoint)
        .await
        .map_err(|refused| match refused {
            Refused::Malformed(_) => ApiError::BadRequest(refused.to_string()),
            Refused::NotAllowed(_) => ApiError::EndpointNotAllowed(refused.to_string()),
        })?;
    let mut client = state.gateway.pool.get().await.map_err(ApiError::internal)?;
    let stored = db::push::subscribe(
        &mut client,
        caller.user_id(),
        db::push::NewSubscription {
            endpoint: subscription.endpoint.as_str(),
            p256dh: &subscription.p256dh,
            auth: &subscription.auth,
        },
        config.max_subscriptions_per_user,
    )
    .await
    .map_err(ApiError::internal)?;
    let status = if stored.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(SubscriptionId { id: stored.id })).into_response())
}

#[utoipa::path(
    delete, path = "/api/push/subscriptions",
    request_body(content = EndpointBody, content_type = "application/json"),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, description = "The body is malformed", body = ErrorResponse),
        (status = 401, description = "Missing or invalid token", body = ErrorResponse),
        (status = 403, description = "Inactive user", body = ErrorResponse),
        (status = 404, description = "Not the caller's subscription (not_found), or push is off (push_disabled)", body = ErrorResponse),
        (status = 429, description = "Too many requests", body = ErrorResponse),
        (status = 500, description = "Internal error", body = ErrorResponse),
    )
)]
pub async fn unsubscribe(
    State(state): State<PushState>,
    caller: Caller,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    state.config()?;
    let endpoint = subscription::parse_endpoint(&body).map_err(ApiError::BadRequest)?;
    let client = state.gateway.pool.get().await.map_err(ApiError::internal)?;
    if db::push::unsubscribe(&client, caller.user_id(), &endpoint)
        .await
        .map_err(ApiError::internal)?
    {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::SubscriptionNotFound)
    }
}
