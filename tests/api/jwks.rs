//! Keys from an identity provider: a JWKS endpoint started by the test on
//! port 0, serving real keys (tests/fixtures/jwt), the way Keycloak or
//! Auth0 publish theirs.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use herald::auth::JwtConfig;
use herald::auth::jwks::JwksOptions;
use herald::config::Config;
use jsonwebtoken::jwk::{Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::client::{Connect, SioClient, connect};
use crate::helpers::{TestApp, TestDb};

const AUDIENCE: &str = "herald";

/// A signing key of the provider's, and its public half as a JWK.
struct ProviderKey {
    kid: String,
    algorithm: Algorithm,
    encoding: EncodingKey,
    jwk: Value,
}

impl ProviderKey {
    /// `name` is a fixture pair: tests/fixtures/jwt/{name}.key.pem and .pub.pem.
    fn fixture(name: &str, kid: &str, algorithm: Algorithm) -> Self {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/jwt");
        let private = std::fs::read(format!("{dir}/{name}.key.pem")).unwrap();
        let public = std::fs::read(format!("{dir}/{name}.pub.pem")).unwrap();
        let (encoding, decoding) = match algorithm {
            Algorithm::RS256 => (
                EncodingKey::from_rsa_pem(&private).unwrap(),
                DecodingKey::from_rsa_pem(&public).unwrap(),
            ),
            Algorithm::ES256 => (
                EncodingKey::from_ec_pem(&private).unwrap(),
                DecodingKey::from_ec_pem(&public).unwrap(),
            ),
            Algorithm::EdDSA => (
                EncodingKey::from_ed_pem(&private).unwrap(),
                DecodingKey::from_ed_pem(&public).unwrap(),
            ),
            other => panic!("no fixture for {other:?}"),
        };
        let mut jwk = Jwk::from_decoding_key(&decoding, Some(algorithm)).unwrap();
        jwk.common.key_id = Some(kid.to_owned());
        jwk.common.public_key_use = Some(PublicKeyUse::Signature);
        Self {
            kid: kid.to_owned(),
            algorithm,
            encoding,
            jwk: serde_json::to_value(jwk).unwrap(),
        }
    }

    fn rsa() -> Self {
        Self::fixture("rsa", "rsa-2024", Algorithm::RS256)
    }

    fn ec() -> Self {
        Self::fixture("es256", "ec-2024", Algorithm::ES256)
    }

    fn ed() -> Self {
        Self::fixture("ed25519", "ed-2024", Algorithm::EdDSA)
    }

    fn rsa_next() -> Self {
        Self::fixture("rsa-next", "rsa-2025", Algorithm::RS256)
    }

    /// A token for `user` as the provider issues it.
    fn token(&self, issuer: &str, user: Uuid) -> String {
        self.token_with(issuer, json!({ "sub": user }), Some(&self.kid))
    }

    fn token_with(&self, issuer: &str, claims: Value, kid: Option<&str>) -> String {
        let mut header = Header::new(self.algorithm);
        header.kid = kid.map(str::to_owned);
        let mut claims = claims;
        let now = herald::auth::unix_now();
        claims["iss"] = issuer.into();
        claims["aud"] = AUDIENCE.into();
        claims["exp"] = (now + 600).into();
        claims["iat"] = now.into();
        jsonwebtoken::encode(&header, &claims, &self.encoding).unwrap()
    }
}

/// What the provider answers.
#[derive(Clone)]
enum Answer {
    /// `{"keys": [...]}`, labelled so the test can tell which version a
    /// request was served.
    Keys(&'static str, Value),
    Status(u16),
}

/// The provider's JWKS endpoint, `/realms/herald/protocol/openid-connect/certs`
/// as Keycloak names it.
struct Provider {
    address: SocketAddr,
    answer: Arc<Mutex<Answer>>,
    /// The label of every answer given, in order.
    served: Arc<Mutex<Vec<&'static str>>>,
    tls: bool,
    task: tokio::task::JoinHandle<()>,
}

const CERTS: &str = "/realms/herald/protocol/openid-connect/certs";

impl Provider {
    async fn start(answer: Answer) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::serve(listener, Arc::new(Mutex::new(answer)), Arc::default(), None)
    }

    /// The endpoint over HTTPS with this certificate.
    async fn start_tls(answer: Answer, cert: &std::path::Path, key: &std::path::Path) -> Self {
        let certificates = herald::http::tls::Certificates::load(cert.into(), key.into()).unwrap();
        let acceptor = Arc::new(certificates).acceptor().unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::serve(
            listener,
            Arc::new(Mutex::new(answer)),
            Arc::default(),
            Some(acceptor),
        )
    }

    fn serve(
        listener: tokio::net::TcpListener,
        answer: Arc<Mutex<Answer>>,
        served: Arc<Mutex<Vec<&'static str>>>,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> Self {
        use axum::http::{StatusCode, header};
        use axum::response::IntoResponse;
        let address = listener.local_addr().unwrap();
        let app = {
            let (answer, served) = (answer.clone(), served.clone());
            axum::Router::new()
                .route(
                    "/moved",
                    axum::routing::get(
                        |axum::extract::Query(to): axum::extract::Query<
                            HashMap<String, String>,
                        >| async move {
                            axum::response::Redirect::temporary(&to["to"])
                        },
                    ),
                )
                .route(
                    CERTS,
                    axum::routing::get(move || {
                        let answer = answer.lock().unwrap().clone();
                        let served = served.clone();
                        async move {
                            // No keep-alive: a stopped provider refuses the next fetch.
                            let close = [(header::CONNECTION, "close")];
                            match answer {
                                Answer::Keys(label, keys) => {
                                    served.lock().unwrap().push(label);
                                    (close, axum::Json(json!({ "keys": keys }))).into_response()
                                }
                                Answer::Status(code) => {
                                    served.lock().unwrap().push("status");
                                    (close, StatusCode::from_u16(code).unwrap()).into_response()
                                }
                            }
                        }
                    }),
                )
        };
        let https = tls.is_some();
        let task = tokio::spawn(async move {
            match tls {
                None => {
                    let _ = axum::serve(listener, app).await;
                }
                Some(tls) => {
                    let limits = herald::http::listen::Limits {
                        idle_timeout: Duration::from_secs(10),
                        max_connections: 64,
                    };
                    herald::http::listen::serve(
                        listener,
                        app,
                        limits,
                        Some(tls),
                        std::future::pending(),
                    )
                    .await;
                }
            }
        });
        Self {
            address,
            answer,
            served,
            tls: https,
            task,
        }
    }

    fn base(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.address)
    }

    fn url(&self) -> String {
        format!("{}{CERTS}", self.base())
    }

    fn issuer(&self) -> String {
        format!("{}/realms/herald", self.base())
    }

    fn set(&self, answer: Answer) {
        *self.answer.lock().unwrap() = answer;
    }

    fn requests(&self) -> usize {
        self.served.lock().unwrap().len()
    }

    /// The 1-based number of the first request answered with `label`.
    fn first_served(&self, label: &str) -> Option<usize> {
        self.served
            .lock()
            .unwrap()
            .iter()
            .position(|l| *l == label)
            .map(|i| i + 1)
    }

    /// Stops listening: fetches are refused from now on.
    async fn stop(self) -> StoppedProvider {
        self.task.abort();
        let _ = self.task.await;
        StoppedProvider {
            address: self.address,
            answer: self.answer,
            served: self.served,
        }
    }
}

struct StoppedProvider {
    address: SocketAddr,
    answer: Arc<Mutex<Answer>>,
    served: Arc<Mutex<Vec<&'static str>>>,
}

impl StoppedProvider {
    /// Listens again on the same address.
    async fn restart(self, answer: Answer) -> Provider {
        *self.answer.lock().unwrap() = answer;
        let listener = tokio::net::TcpListener::bind(self.address).await.unwrap();
        Provider::serve(listener, self.answer, self.served, None)
    }
}

/// A Keycloak realm's key set: the signing keys plus the RSA-OAEP
/// encryption key Keycloak publishes beside them (herald ignores it).
fn document(keys: &[&ProviderKey]) -> Value {
    let mut keys: Vec<Value> = keys.iter().map(|k| k.jwk.clone()).collect();
    let mut encryption = ProviderKey::rsa_next().jwk;
    encryption["kid"] = "enc-2024".into();
    encryption["use"] = "enc".into();
    encryption["alg"] = "RSA-OAEP".into();
    keys.push(encryption);
    Value::Array(keys)
}

fn jwks(config: &mut Config, provider: &Provider, refresh: Duration, min_refetch: Duration) {
    let mut options = JwksOptions::new(provider.url().parse().unwrap(), refresh);
    options.min_refetch = min_refetch;
    config.jwt = JwtConfig::jwks(options).unwrap().with_claims(
        Some(&provider.issuer()),
        Some(AUDIENCE),
        Duration::from_secs(5),
    );
}

async fn spawn(provider: &Provider, refresh: Duration, min_refetch: Duration) -> TestApp {
    TestApp::spawn_with(|c| jwks(c, provider, refresh, min_refetch)).await
}

/// Connects and waits for `connection:success`; the refusal's code otherwise.
async fn try_connect(app: &TestApp, token: &str) -> Result<SioClient, String> {
    let mut client = connect(app.address, Connect::token(token)).await?;
    client.connected().await;
    Ok(client)
}

/// Waits (bounded) until herald has put in force the answer labelled
/// `label`: fetches never overlap and each is counted once its keys are in
/// place, so the fetch count reaching that answer's request number means so.
async fn wait_applied(app: &TestApp, provider: &Provider, label: &str) {
    for _ in 0..500 {
        if let Some(n) = provider.first_served(label)
            && app.metric("herald_jwks_fetches_total").await >= n as f64
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("herald did not apply key set {label} within 10 s");
}

#[tokio::test]
async fn rs256_es256_and_eddsa_tokens_from_the_provider_connect_call_the_api_and_refresh() {
    let (rsa, ec, ed) = (ProviderKey::rsa(), ProviderKey::ec(), ProviderKey::ed());
    let provider = Provider::start(Answer::Keys("v1", document(&[&rsa, &ec, &ed]))).await;
    let app = spawn(&provider, Duration::from_secs(600), Duration::from_secs(30)).await;
    let user = app.user("Ada", "USER", None).await;
    let issuer = provider.issuer();
    for key in [&rsa, &ec, &ed] {
        let client = try_connect(&app, &key.token(&issuer, user))
            .await
            .unwrap_or_else(|e| panic!("{:?} refused: {e}", key.algorithm));
        let response = reqwest::Client::new()
            .get(app.url("/api/notifications/unread-count"))
            .bearer_auth(key.token(&issuer, user))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{:?}", key.algorithm);
        // auth.refresh on the open socket, with a token of another key.
        for other in [&rsa, &ec, &ed] {
            let ack = client
                .ack(
                    "auth.refresh",
                    Some(json!({"token": other.token(&issuer, user)})),
                )
                .await;
            assert_eq!(ack["success"], true, "{:?}: {ack}", other.algorithm);
        }
        let ack = client
            .ack(
                "auth.refresh",
                Some(json!({"token": key.token("https://elsewhere.example", user)})),
            )
            .await;
        assert_eq!(ack["error"]["code"], "invalid_token");
    }
    // Three keys: a token must say which one signed it.
    let unnamed = rsa.token_with(&issuer, json!({ "sub": user }), None);
    assert_eq!(
        try_connect(&app, &unnamed).await.err().as_deref(),
        Some("invalid_token")
    );
    // A kid of one key on a token signed by another.
    let swapped = ec.token_with(&issuer, json!({ "sub": user }), Some(&ed.kid));
    assert_eq!(
        try_connect(&app, &swapped).await.err().as_deref(),
        Some("invalid_token")
    );
    assert_eq!(app.metric("herald_jwks_keys").await, 3.0);
    // Everything above came from the one fetch at start.
    assert_eq!(provider.requests(), 1);
}

#[tokio::test]
async fn a_single_key_document_accepts_tokens_without_kid_and_file_urls_work() {
    let rsa = ProviderKey::rsa();
    let dir = std::env::temp_dir().join(format!("herald-jwks-{}", Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("jwks.json");
    std::fs::write(&path, json!({ "keys": [rsa.jwk] }).to_string()).unwrap();
    let url = format!("file://{}", path.display());
    let app = TestApp::spawn_with(|c| {
        let options = JwksOptions::new(url.parse().unwrap(), Duration::from_secs(600));
        c.jwt = JwtConfig::jwks(options)
            .unwrap()
            .with_user_claim("herald_user");
    })
    .await;
    let user = app.user("Ada", "USER", None).await;
    // JWT_USER_CLAIM: the provider's `sub` is its own id, herald's is another claim.
    let claims = json!({ "sub": "f:1234:ada", "herald_user": user });
    let unnamed = rsa.token_with("", claims.clone(), None);
    let mut client = connect(app.address, Connect::token(&unnamed))
        .await
        .unwrap();
    assert_eq!(client.connected().await["userId"], json!(user));
    let named = rsa.token_with("", claims, Some(&rsa.kid));
    assert!(try_connect(&app, &named).await.is_ok());
    let without = rsa.token_with("", json!({ "sub": user }), Some(&rsa.kid));
    assert_eq!(
        try_connect(&app, &without).await.err().as_deref(),
        Some("invalid_token")
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn hs256_tokens_keyed_with_a_jwks_public_material_are_refused() {
    let rsa = ProviderKey::rsa();
    let mut keys = document(&[&rsa]);
    // A symmetric key in the document is ignored, never used for HS256.
    keys.as_array_mut()
        .unwrap()
        .push(json!({"kty": "oct", "kid": "shared", "alg": "HS256", "k": "c2hhcmVkLXNlY3JldC1vZi1lbm91Z2gtbGVuZ3Ro"}));
    let provider = Provider::start(Answer::Keys("v1", keys)).await;
    let app = spawn(&provider, Duration::from_secs(600), Duration::from_secs(30)).await;
    let user = app.user("Ada", "USER", None).await;
    let issuer = provider.issuer();
    assert!(try_connect(&app, &rsa.token(&issuer, user)).await.is_ok());
    let pem = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/jwt/rsa.pub.pem"
    ))
    .unwrap();
    let n = rsa.jwk["n"].as_str().unwrap().to_owned();
    let secrets: [(&str, &str, Vec<u8>); 5] = [
        ("pem", rsa.kid.as_str(), pem),
        ("n", rsa.kid.as_str(), n.clone().into_bytes()),
        ("jwk", rsa.kid.as_str(), rsa.jwk.to_string().into_bytes()),
        (
            "oct key",
            "shared",
            b"shared-secret-of-enough-length".to_vec(),
        ),
        ("unknown kid", "forged", n.into_bytes()),
    ];
    let claims =
        json!({"sub": user, "iss": issuer, "aud": AUDIENCE, "exp": herald::auth::unix_now() + 600});
    for (what, kid, secret) in secrets {
        for alg in [Algorithm::HS256, Algorithm::HS512] {
            let mut header = Header::new(alg);
            header.kid = Some(kid.to_owned());
            let forged =
                jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(&secret)).unwrap();
            assert_eq!(
                try_connect(&app, &forged).await.err().as_deref(),
                Some("invalid_token"),
                "{alg:?} keyed with the {what}"
            );
        }
    }
    // HS256 is never worth a fetch, whatever the kid.
    assert_eq!(provider.requests(), 1);
}

#[tokio::test]
async fn a_rotated_key_works_within_one_refresh_and_the_retired_one_stops() {
    let (old, new) = (ProviderKey::rsa(), ProviderKey::rsa_next());
    let provider = Provider::start(Answer::Keys("old only", document(&[&old]))).await;
    let refresh = Duration::from_secs(1);
    let app = spawn(&provider, refresh, Duration::from_secs(30)).await;
    let t0 = Instant::now();
    let at = || format!("{:>6.3}s", t0.elapsed().as_secs_f64());
    let mut timeline = vec![format!(
        "{} herald up, provider publishes [{}]",
        at(),
        old.kid
    )];
    let user = app.user("Ada", "USER", None).await;
    let issuer = provider.issuer();

    let kept = try_connect(&app, &old.token(&issuer, user)).await.unwrap();
    assert_eq!(
        try_connect(&app, &new.token(&issuer, user))
            .await
            .err()
            .as_deref(),
        Some("invalid_token")
    );
    timeline.push(format!(
        "{} {} accepted, {} refused (not published)",
        at(),
        old.kid,
        new.kid
    ));

    provider.set(Answer::Keys("both", document(&[&old, &new])));
    let published = Instant::now();
    timeline.push(format!(
        "{} provider publishes [{}, {}]",
        at(),
        old.kid,
        new.kid
    ));
    wait_applied(&app, &provider, "both").await;
    let took = published.elapsed();
    timeline.push(format!(
        "{} herald's scheduled fetch brings {} in: it works from here, {:.3}s after publication",
        at(),
        new.kid,
        took.as_secs_f64()
    ));
    assert!(try_connect(&app, &new.token(&issuer, user)).await.is_ok());
    assert!(try_connect(&app, &old.token(&issuer, user)).await.is_ok());
    timeline.push(format!(
        "{} checked: {} and {} tokens both connect",
        at(),
        new.kid,
        old.kid
    ));
    assert!(
        took < refresh + Duration::from_secs(2),
        "new key took {took:?}"
    );

    provider.set(Answer::Keys("new only", document(&[&new])));
    let retired = Instant::now();
    timeline.push(format!(
        "{} provider retires {}, publishes [{}]",
        at(),
        old.kid,
        new.kid
    ));
    wait_applied(&app, &provider, "new only").await;
    let took = retired.elapsed();
    timeline.push(format!(
        "{} herald's scheduled fetch drops {}: it stops working here, {:.3}s after retirement",
        at(),
        old.kid,
        took.as_secs_f64()
    ));
    assert_eq!(
        try_connect(&app, &old.token(&issuer, user))
            .await
            .err()
            .as_deref(),
        Some("invalid_token")
    );
    assert!(try_connect(&app, &new.token(&issuer, user)).await.is_ok());
    let ack = kept
        .ack(
            "auth.refresh",
            Some(json!({"token": old.token(&issuer, user)})),
        )
        .await;
    assert_eq!(ack["error"]["code"], "invalid_token");
    let ack = kept
        .ack(
            "auth.refresh",
            Some(json!({"token": new.token(&issuer, user)})),
        )
        .await;
    assert_eq!(ack["success"], true);
    timeline.push(format!(
        "{} checked: {} refused (invalid_token), {} connects; the socket opened with {} refuses auth.refresh with {} and accepts it with {}",
        at(),
        old.kid,
        new.kid,
        old.kid,
        old.kid,
        new.kid
    ));
    assert!(
        took < refresh + Duration::from_secs(2),
        "old key lasted {took:?}"
    );
    println!(
        "rotation timeline (JWT_JWKS_REFRESH=1s):\n  {}",
        timeline.join("\n  ")
    );
}

#[tokio::test]
async fn a_thousand_forged_kids_cost_the_provider_one_fetch() {
    let rsa = ProviderKey::rsa();
    let attacker = ProviderKey::rsa_next();
    let provider = Provider::start(Answer::Keys("v1", document(&[&rsa]))).await;
    let app = spawn(
        &provider,
        Duration::from_secs(600),
        herald::auth::jwks::MIN_REFETCH,
    )
    .await;
    let user = app.user("Ada", "USER", None).await;
    let issuer = provider.issuer();
    // One token signed by the attacker's key; each forgery gives it another
    // kid (herald refuses an unknown kid before it looks at the signature).
    let signed = attacker.token_with(&issuer, json!({ "sub": user }), Some("attacker"));
    let (_, rest) = signed.split_once('.').unwrap();
    let refusals: Vec<Option<String>> = futures_util::stream::iter(0..1000)
        .map(|_| {
            let header = json!({"alg": "RS256", "typ": "JWT", "kid": Uuid::new_v4().to_string()});
            let forged = format!("{}.{rest}", base64_url(header.to_string().as_bytes()));
            let app = &app;
            async move { try_connect(app, &forged).await.err() }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    assert!(
        refusals
            .iter()
            .all(|r| r.as_deref() == Some("invalid_token"))
    );
    // The fetch at start, and one for the first unknown kid.
    assert_eq!(provider.requests(), 2);
    assert_eq!(
        app.metric("herald_jwks_refetches_skipped_total").await,
        999.0
    );
    // The real key still works, without another fetch.
    assert!(try_connect(&app, &rsa.token(&issuer, user)).await.is_ok());
    assert_eq!(provider.requests(), 2);
}

#[tokio::test]
async fn an_unknown_kid_fetches_at_once_then_not_again_until_the_interval_passed() {
    let (rsa, next, ec) = (
        ProviderKey::rsa(),
        ProviderKey::rsa_next(),
        ProviderKey::ec(),
    );
    let provider = Provider::start(Answer::Keys("v1", document(&[&rsa]))).await;
    // The production interval is 30 s; the rule is the same at 500 ms.
    let interval = Duration::from_millis(500);
    let app = spawn(&provider, Duration::from_secs(600), interval).await;
    let user = app.user("Ada", "USER", None).await;
    let issuer = provider.issuer();
    // A key published after start works on its first use: one fetch.
    provider.set(Answer::Keys("v2", document(&[&rsa, &next])));
    assert!(try_connect(&app, &next.token(&issuer, user)).await.is_ok());
    assert_eq!(provider.requests(), 2);
    // Within the interval another new key waits: no fetch, refused.
    provider.set(Answer::Keys("v3", document(&[&rsa, &next, &ec])));
    let refused_at = Instant::now();
    assert_eq!(
        try_connect(&app, &ec.token(&issuer, user))
            .await
            .err()
            .as_deref(),
        Some("invalid_token")
    );
    assert_eq!(provider.requests(), 2);
    // Once the interval has passed since that fetch, the next unknown kid fetches.
    tokio::time::sleep(interval.saturating_sub(refused_at.elapsed()) + Duration::from_millis(50))
        .await;
    assert!(try_connect(&app, &ec.token(&issuer, user)).await.is_ok());
    assert_eq!(provider.requests(), 3);
}

#[tokio::test]
async fn a_provider_down_later_leaves_herald_its_keys_and_the_failures_counted() {
    let (rsa, ec, next) = (
        ProviderKey::rsa(),
        ProviderKey::ec(),
        ProviderKey::rsa_next(),
    );
    let provider = Provider::start(Answer::Keys("v1", document(&[&rsa, &ec]))).await;
    let app = spawn(
        &provider,
        Duration::from_millis(200),
        Duration::from_secs(30),
    )
    .await;
    let user = app.user("Ada", "USER", None).await;
    let issuer = provider.issuer();
    assert_eq!(app.metric("herald_jwks_fetch_failures_total").await, 0.0);

    let wait_failures = |at_least: f64| {
        let app = &app;
        async move {
            for _ in 0..500 {
                if app.metric("herald_jwks_fetch_failures_total").await >= at_least {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            panic!("fewer than {at_least} failed fetches counted");
        }
    };
    // The provider answers 503.
    provider.set(Answer::Status(503));
    wait_failures(2.0).await;
    for key in [&rsa, &ec] {
        assert!(try_connect(&app, &key.token(&issuer, user)).await.is_ok());
    }
    // The provider is gone: connections refused.
    let stopped = provider.stop().await;
    let failures = app.metric("herald_jwks_fetch_failures_total").await;
    wait_failures(failures + 2.0).await;
    for key in [&rsa, &ec] {
        assert!(try_connect(&app, &key.token(&issuer, user)).await.is_ok());
    }
    assert_eq!(app.metric("herald_jwks_keys").await, 2.0);
    // Back, with a new key: herald takes it at the next refresh.
    let provider = stopped
        .restart(Answer::Keys("back", document(&[&rsa, &ec, &next])))
        .await;
    wait_applied(&app, &provider, "back").await;
    assert!(try_connect(&app, &next.token(&issuer, user)).await.is_ok());
    assert_eq!(app.metric("herald_jwks_keys").await, 3.0);
}

/// `herald serve` exits within a bound; its status and standard error.
fn serve_once(env: &[(&str, String)]) -> (bool, String) {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_herald"))
        .arg("serve")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs([("HOST", "127.0.0.1"), ("PORT", "0"), ("RUST_LOG", "info")])
        .envs(env.iter().map(|(name, value)| (name, value)))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("herald serve still running after 30 s with {env:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = child.wait_with_output().unwrap();
    (
        output.status.success(),
        String::from_utf8(output.stderr).unwrap(),
    )
}

#[tokio::test]
async fn a_provider_down_at_start_stops_serve_with_one_line_naming_jwt_jwks_url() {
    let db = TestDb::empty().await;
    let failing = Provider::start(Answer::Status(503)).await;
    let symmetric = Provider::start(Answer::Keys(
        "oct",
        json!([{"kty": "oct", "kid": "k", "k": "c2VjcmV0"}]),
    ))
    .await;
    // Taken after the providers took theirs, so it is nobody's.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let cases = [
        (format!("http://{closed}{CERTS}"), "cannot fetch it"),
        (failing.url(), "HTTP 503"),
        (symmetric.url(), "no RS256, ES256 or EdDSA signing key"),
        ("file:///nonexistent/jwks.json".to_owned(), "cannot read it"),
    ];
    for (url, reason) in cases {
        let env = [
            ("DATABASE_URL", db.url.clone()),
            ("JWT_JWKS_URL", url.clone()),
        ];
        // The providers answer on this runtime while herald runs.
        let (ok, stderr) = tokio::task::spawn_blocking(move || serve_once(&env))
            .await
            .unwrap();
        assert!(!ok, "{url}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{url}: {stderr}");
        assert!(
            stderr.contains("JWT_JWKS_URL") && stderr.contains(&url) && stderr.contains(reason),
            "{url}: {stderr}"
        );
    }
    // Nothing was migrated: the keys are checked before the database is touched.
    let tables: i64 = db
        .client()
        .await
        .query_one(
            "select count(*) from information_schema.tables where table_schema = 'herald'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(tables, 0);
}

fn base64_url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, b)| acc | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

// Two workers: HeraldProcess::spawn blocks one while the provider answers on the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_provider_is_trusted_through_the_system_roots_or_ssl_cert_file() {
    let ca = crate::tls::TestCa::new();
    let (cert, key) = ca.issue("provider", "3001");
    let rsa = ProviderKey::rsa();
    let provider = Provider::start_tls(Answer::Keys("v1", document(&[&rsa])), &cert, &key).await;
    let db = TestDb::migrated().await;
    let pg = db.client().await;
    let user = crate::helpers::insert_user(&pg, "Ada", "USER", None).await;
    let (url, issuer) = (provider.url(), provider.issuer());
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");

    // Signed by a CA nobody told herald to trust: serve does not start.
    let env = [
        ("DATABASE_URL", db.url.clone()),
        ("JWT_JWKS_URL", url.clone()),
    ];
    let (ok, stderr) = tokio::task::spawn_blocking(move || serve_once(&env))
        .await
        .unwrap();
    assert!(!ok && stderr.lines().count() == 1, "{stderr}");
    assert!(
        stderr.contains("JWT_JWKS_URL") && stderr.contains("certificate"),
        "{stderr}"
    );

    // SSL_CERT_FILE names the bundle to trust, as for any rustls-native-certs program.
    let ca_file = ca.ca_file().display().to_string();

    // Trusted, but redirected to plain HTTP: refused, not followed.
    let plain = Provider::start(Answer::Keys("plain", document(&[&rsa]))).await;
    let moved = format!("{}/moved?to={}", provider.base(), plain.url());
    let env = [
        ("DATABASE_URL", db.url.clone()),
        ("JWT_JWKS_URL", moved),
        ("SSL_CERT_FILE", ca_file.clone()),
    ];
    let (ok, stderr) = tokio::task::spawn_blocking(move || serve_once(&env))
        .await
        .unwrap();
    assert!(
        !ok && stderr.contains("refusing a redirect from https://"),
        "{stderr}"
    );
    assert_eq!(plain.requests(), 0);

    let herald = crate::helpers::HeraldProcess::spawn(
        &db.url,
        &[
            ("JWT_SECRET", ""),
            ("JWT_JWKS_URL", &url),
            ("JWT_ISSUER", &issuer),
            ("JWT_AUDIENCE", AUDIENCE),
            ("SSL_CERT_FILE", &ca_file),
        ],
    );
    herald.wait_ready().await;
    let mut client = connect(herald.address, Connect::token(&rsa.token(&issuer, user)))
        .await
        .expect("an RS256 token from the HTTPS provider connects");
    assert_eq!(client.connected().await["userId"], json!(user));
    assert_eq!(provider.requests(), 1);
}
