//! Web Push: subscriptions over the API, and pushes to a push service that
//! plays FCM's or autopush's part.

mod delivery;
mod plans;
mod service;
mod subscriptions;

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use p256::elliptic_curve::sec1::ToEncodedPoint as _;
use serde_json::{Value, json};

use crate::helpers::TestApp;

/// A browser's side of a subscription: its own P-256 key pair and auth
/// secret, as `PushManager.subscribe` makes them.
pub struct Browser {
    pub secret: p256::SecretKey,
    pub auth: [u8; 16],
}

impl Browser {
    pub fn new() -> Self {
        let mut auth = [0u8; 16];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut auth);
        Self {
            secret: p256::SecretKey::random(&mut rand_core::OsRng),
            auth,
        }
    }

    pub fn p256dh(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.secret.public_key().to_encoded_point(false).as_bytes())
    }

    /// `PushSubscription.toJSON()` for `endpoint`.
    pub fn subscription(&self, endpoint: &str) -> Value {
        json!({
            "endpoint": endpoint,
            "expirationTime": null,
            "keys": {"p256dh": self.p256dh(), "auth": URL_SAFE_NO_PAD.encode(self.auth)},
        })
    }
}

/// Push on, with a fresh key; `delay` as `HERALD_PUSH_DELAY`.
pub fn push_config(
    endpoints: herald::push::endpoint::EndpointPolicy,
    delay: Duration,
) -> herald::push::PushConfig {
    let (key, _) = herald::push::vapid::VapidKey::generate().unwrap();
    herald::push::PushConfig {
        key: Arc::new(key),
        subject: "mailto:ops@herald.test".into(),
        delay,
        min_importance: "normal".into(),
        ttl: Duration::from_secs(3600),
        endpoints,
        max_subscriptions_per_user: 20,
    }
}

/// Sends `body` to a push route as `token`; the status and JSON answer.
pub async fn call(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    token: Option<&str>,
    body: Option<Vec<u8>>,
) -> (reqwest::StatusCode, Value) {
    let mut request = reqwest::Client::new().request(method, app.url(path));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request
            .header("content-type", "application/json")
            .body(body);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, body)
}
