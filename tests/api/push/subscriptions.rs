//! Subscribing: the routes, what they refuse, and `herald vapid-keys`.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use herald::push::endpoint::EndpointPolicy;
use reqwest::Method;
use serde_json::{Value, json};

use super::{Browser, call, push_config};
use crate::helpers::TestApp;

async fn subscribe(app: &TestApp, token: &str, body: &Value) -> (reqwest::StatusCode, Value) {
    call(
        app,
        Method::POST,
        "/api/push/subscriptions",
        Some(token),
        Some(body.to_string().into_bytes()),
    )
    .await
}

async fn stored(app: &TestApp, user: uuid::Uuid) -> Vec<String> {
    app.pg
        .query(
            "select endpoint from herald.push_subscriptions where user_id = $1 order by endpoint",
            &[&user],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect()
}

#[tokio::test]
async fn without_a_key_push_is_off() {
    let app = TestApp::spawn().await;
    let user = app.user("Ada", "USER", None).await;
    let (status, body) = call(&app, Method::GET, "/api/push/public-key", None, None).await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], "push_disabled");
    let browser = Browser::new();
    let (status, body) = subscribe(
        &app,
        &app.token(user),
        &browser.subscription("https://push.example/x"),
    )
    .await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], "push_disabled");
}

#[tokio::test]
async fn a_subscription_is_stored_once_per_endpoint_and_moves_with_the_browser() {
    let config = push_config(EndpointPolicy::Any, Duration::from_secs(10));
    let public_key = config.key.public_key().to_owned();
    let app = TestApp::spawn_with(|c| c.push = Some(config)).await;
    let (status, body) = call(&app, Method::GET, "/api/push/public-key", None, None).await;
    assert_eq!(status, 200);
    assert_eq!(body, json!({"publicKey": public_key}));

    let (ada, bob) = (
        app.user("Ada", "USER", None).await,
        app.user("Bob", "USER", None).await,
    );
    let browser = Browser::new();
    let subscription = browser.subscription("http://127.0.0.1:9/push/ada");
    let (status, first) = subscribe(&app, &app.token(ada), &subscription).await;
    assert_eq!(status, 201, "{first}");
    let (status, again) = subscribe(&app, &app.token(ada), &subscription).await;
    assert_eq!(status, 200);
    assert_eq!(again["id"], first["id"]);

    // The browser profile changed hands: Bob has it now, Ada does not.
    let (status, taken) = subscribe(&app, &app.token(bob), &subscription).await;
    assert_eq!(status, 201);
    assert_ne!(taken["id"], first["id"]);
    assert!(stored(&app, ada).await.is_empty());
    assert_eq!(stored(&app, bob).await, ["http://127.0.0.1:9/push/ada"]);

    let endpoint = json!({"endpoint": "http://127.0.0.1:9/push/ada"}).to_string();
    let (status, body) = call(
        &app,
        Method::DELETE,
        "/api/push/subscriptions",
        Some(&app.token(ada)),
        Some(endpoint.clone().into_bytes()),
    )
    .await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (404.try_into().unwrap(), &json!("not_found"))
    );
    let (status, _) = call(
        &app,
        Method::DELETE,
        "/api/push/subscriptions",
        Some(&app.token(bob)),
        Some(endpoint.into_bytes()),
    )
    .await;
    assert_eq!(status, 204);
    assert!(stored(&app, bob).await.is_empty());

    // An endpoint no URL could be (PostgreSQL's text cannot even hold NUL)
    // is refused before any statement.
    let (status, body) = call(
        &app,
        Method::DELETE,
        "/api/push/subscriptions",
        Some(&app.token(bob)),
        Some(
            json!({"endpoint": "https://push.example/\u{0}x"})
                .to_string()
                .into_bytes(),
        ),
    )
    .await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (400.try_into().unwrap(), &json!("invalid_payload")),
        "{body}"
    );
}

#[tokio::test]
async fn a_user_keeps_the_most_recent_subscriptions_up_to_the_limit() {
    let mut config = push_config(EndpointPolicy::Any, Duration::from_secs(10));
    config.max_subscriptions_per_user = 2;
    let app = TestApp::spawn_with(|c| c.push = Some(config)).await;
    let ada = app.user("Ada", "USER", None).await;
    for name in ["one", "two", "three"] {
        let body = Browser::new().subscription(&format!("https://push.example/{name}"));
        let (status, _) = subscribe(&app, &app.token(ada), &body).await;
        assert_eq!(status, 201);
    }
    assert_eq!(
        stored(&app, ada).await,
        ["https://push.example/three", "https://push.example/two"]
    );
}

#[tokio::test]
async fn bad_subscriptions_are_refused_naming_the_field() {
    let app = TestApp::spawn_with(|c| {
        c.push = Some(push_config(EndpointPolicy::Public, Duration::from_secs(10)))
    })
    .await;
    let ada = app.user("Ada", "USER", None).await;
    let token = app.token(ada);
    let browser = Browser::new();
    let good = browser.subscription("https://push.example/x");
    let mut cases: Vec<(Value, &str, &str)> = Vec::new();
    let mut with = |pointer: &str, value: Value, code: &'static str, named: &'static str| {
        let mut body = good.clone();
        *body.pointer_mut(pointer).unwrap() = value;
        cases.push((body, code, named));
    };
    with(
        "/endpoint",
        json!("not a url"),
        "invalid_payload",
        "endpoint",
    );
    with("/endpoint", json!(42), "invalid_payload", "endpoint");
    with(
        "/keys/p256dh",
        json!("AAAA"),
        "invalid_payload",
        "keys.p256dh",
    );
    let mut off_curve = URL_SAFE_NO_PAD.decode(browser.p256dh()).unwrap();
    off_curve[64] ^= 1;
    with(
        "/keys/p256dh",
        json!(URL_SAFE_NO_PAD.encode(off_curve)),
        "invalid_payload",
        "keys.p256dh",
    );
    with(
        "/keys/auth",
        json!("c2hvcnQ"),
        "invalid_payload",
        "keys.auth",
    );
    with("/keys", json!([]), "invalid_payload", "keys");
    with(
        "/expirationTime",
        json!("tomorrow"),
        "invalid_payload",
        "expirationTime",
    );
    // Under the default policy: no loopback, no plain http, no private names.
    with(
        "/endpoint",
        json!("https://127.0.0.1:8443/push"),
        "endpoint_not_allowed",
        "127.0.0.1",
    );
    with(
        "/endpoint",
        json!("https://[::1]/push"),
        "endpoint_not_allowed",
        "::1",
    );
    with(
        "/endpoint",
        json!("https://localhost/push"),
        "endpoint_not_allowed",
        "localhost",
    );
    with(
        "/endpoint",
        json!("http://push.example/x"),
        "endpoint_not_allowed",
        "https",
    );
    for (body, code, named) in cases {
        let (status, answer) = subscribe(&app, &token, &body).await;
        assert_eq!(status, 400, "{body}: {answer}");
        assert_eq!(answer["error"]["code"], code, "{body}");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(message.contains(named), "{message:?} should name {named}");
    }
    let (status, answer) = call(
        &app,
        Method::POST,
        "/api/push/subscriptions",
        Some(&token),
        Some(vec![b'x'; 5000]),
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("larger than")
    );
    let (status, answer) = call(
        &app,
        Method::POST,
        "/api/push/subscriptions",
        None,
        Some(good.to_string().into_bytes()),
    )
    .await;
    assert_eq!(status, 401);
    assert_eq!(answer["error"]["code"], "missing_token");
    let count: i64 = app
        .pg
        .query_one("select count(*) from herald.push_subscriptions", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, 0);
}

#[test]
fn vapid_keys_writes_a_private_key_only_its_owner_reads() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = std::env::temp_dir().join(format!("herald-vapid-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir(&dir).unwrap();
    let out = dir.join("vapid.pem");
    let run = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_herald"))
            .args(["vapid-keys", "--out"])
            .arg(&out)
            .env_clear()
            .output()
            .unwrap()
    };
    let first = run();
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let public = String::from_utf8(first.stdout).unwrap();
    let pem = std::fs::read_to_string(&out).unwrap();
    let key = herald::push::vapid::VapidKey::from_pem(&pem).unwrap();
    assert_eq!(key.public_key(), public.trim());
    assert_eq!(
        std::fs::metadata(&out).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // Never over an existing key.
    let second = run();
    assert!(!second.status.success());
    assert_eq!(std::fs::read_to_string(&out).unwrap(), pem);
    std::fs::remove_dir_all(dir).unwrap();
}
