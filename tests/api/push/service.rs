//! A push service for the tests, playing the part FCM or Mozilla's autopush
//! play: it checks each push's VAPID token (ES256 against `k`, `aud`,
//! `exp`), decrypts the body with the subscription's private key and auth
//! secret, and answers as the test scripts it (201 unless told otherwise).

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::Value;
use tokio::sync::watch;

use super::Browser;

/// One push the service accepted, verified and decrypted.
#[derive(Debug, Clone)]
pub struct Received {
    pub subscription: String,
    pub ttl: u64,
    pub urgency: String,
    pub topic: String,
    pub body: Value,
    pub at: Instant,
    /// What the service answered.
    pub status: u16,
}

/// An answer the test scripts for the next request to a subscription.
#[derive(Debug, Clone, Copy)]
pub enum Script {
    Status(u16),
    /// 429 with `Retry-After: seconds`.
    TooMany(u64),
}

#[derive(Default)]
struct Inner {
    browsers: HashMap<String, Browser>,
    scripts: HashMap<String, VecDeque<Script>>,
    received: Vec<Received>,
    /// Requests that broke the protocol, with why.
    violations: Vec<String>,
}

#[derive(Clone)]
pub struct PushService {
    pub address: SocketAddr,
    /// The VAPID public key herald must sign with.
    server_key: String,
    inner: Arc<Mutex<Inner>>,
    requests: watch::Sender<usize>,
}

impl PushService {
    pub async fn start(server_key: &str) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let service = Self {
            address,
            server_key: server_key.to_owned(),
            inner: Arc::default(),
            requests: watch::channel(0).0,
        };
        let app = axum::Router::new()
            .route("/push/{name}", axum::routing::post(receive))
            .with_state(service.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        service
    }

    /// A new browser subscription on this service: its endpoint and its
    /// `PushSubscription.toJSON()`.
    pub fn subscription(&self, name: &str) -> (String, Value) {
        let endpoint = format!("http://{}/push/{name}", self.address);
        let browser = Browser::new();
        let json = browser.subscription(&endpoint);
        self.inner
            .lock()
            .unwrap()
            .browsers
            .insert(name.to_owned(), browser);
        (endpoint, json)
    }

    pub fn script(&self, name: &str, answers: &[Script]) {
        self.inner
            .lock()
            .unwrap()
            .scripts
            .entry(name.to_owned())
            .or_default()
            .extend(answers);
    }

    pub fn received(&self) -> Vec<Received> {
        let inner = self.inner.lock().unwrap();
        assert!(inner.violations.is_empty(), "{:?}", inner.violations);
        inner.received.clone()
    }

    /// Waits until the service has answered `count` requests in all.
    pub async fn wait_for(&self, count: usize) -> Vec<Received> {
        let mut requests = self.requests.subscribe();
        tokio::time::timeout(Duration::from_secs(20), requests.wait_for(|n| *n >= count))
            .await
            .unwrap_or_else(|_| panic!("fewer than {count} pushes arrived: {:?}", self.received()))
            .unwrap();
        self.received()
    }
}

async fn receive(
    State(service): State<PushService>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let checked = check(&service, &name, &headers, &body);
    let mut inner = service.inner.lock().unwrap();
    let (status, retry_after) = match inner.scripts.get_mut(&name).and_then(VecDeque::pop_front) {
        None => (201, None),
        Some(Script::Status(status)) => (status, None),
        Some(Script::TooMany(seconds)) => (429, Some(seconds)),
    };
    let answer = match checked {
        Ok(mut received) => {
            received.status = status;
            inner.received.push(received);
            let mut response = StatusCode::from_u16(status).unwrap().into_response();
            if let Some(seconds) = retry_after {
                response
                    .headers_mut()
                    .insert("retry-after", HeaderValue::from(seconds));
            }
            response
        }
        Err(why) => {
            inner.violations.push(format!("{name}: {why}"));
            StatusCode::BAD_REQUEST.into_response()
        }
    };
    drop(inner);
    service.requests.send_modify(|n| *n += 1);
    answer
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Result<&'a str, String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .ok_or(format!("no {name} header"))
}

/// Everything RFC 8030, 8291 and 8292 ask of the request.
fn check(
    service: &PushService,
    name: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Received, String> {
    if header(headers, "content-encoding")? != "aes128gcm" {
        return Err("Content-Encoding is not aes128gcm".into());
    }
    let ttl: u64 = header(headers, "ttl")?
        .parse()
        .map_err(|_| "TTL is not a number")?;
    let urgency = header(headers, "urgency")?.to_owned();
    if !["very-low", "low", "normal", "high"].contains(&urgency.as_str()) {
        return Err(format!("Urgency {urgency}"));
    }
    let topic = header(headers, "topic")?.to_owned();
    if topic.len() > 32
        || !topic
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(format!(
            "Topic {topic:?} is not 32 base64url characters at most"
        ));
    }
    // Authorization: vapid t=<JWT>, k=<public key>
    let authorization = header(headers, "authorization")?;
    let (token, k) = authorization
        .strip_prefix("vapid t=")
        .and_then(|rest| rest.split_once(", k="))
        .ok_or("Authorization is not vapid t=..., k=...")?;
    if k != service.server_key {
        return Err("k is not the server's key".into());
    }
    let point = URL_SAFE_NO_PAD
        .decode(k)
        .map_err(|_| "k is not base64url")?;
    if point.len() != 65 || point[0] != 4 {
        return Err("k is not an uncompressed P-256 point".into());
    }
    let key = jsonwebtoken::DecodingKey::from_ec_components(
        &URL_SAFE_NO_PAD.encode(&point[1..33]),
        &URL_SAFE_NO_PAD.encode(&point[33..]),
    )
    .map_err(|e| format!("k: {e}"))?;
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
    validation.set_audience(&[format!("http://{}", service.address)]);
    validation.set_required_spec_claims(&["exp", "aud", "sub"]);
    let claims = jsonwebtoken::decode::<Value>(token, &key, &validation)
        .map_err(|e| format!("the VAPID token does not verify: {e}"))?
        .claims;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    if claims["exp"]
        .as_u64()
        .is_none_or(|exp| exp > now + 24 * 3600)
    {
        return Err("exp is more than 24 h ahead".into());
    }
    if claims["sub"] != "mailto:ops@herald.test" {
        return Err(format!("sub is {}", claims["sub"]));
    }
    let inner = service.inner.lock().unwrap();
    let browser = inner.browsers.get(name).ok_or("no such subscription")?;
    let auth = web_push_native::Auth::from(browser.auth);
    let plain = web_push_native::decrypt(body.to_vec(), &browser.secret, &auth)
        .map_err(|e| format!("the body does not decrypt: {e}"))?;
    if plain.len() > 3000 {
        return Err(format!("the payload is {} bytes", plain.len()));
    }
    let body = serde_json::from_slice(&plain).map_err(|_| "the payload is not JSON")?;
    Ok(Received {
        subscription: name.to_owned(),
        ttl,
        urgency,
        topic,
        body,
        at: Instant::now(),
        status: 0,
    })
}
