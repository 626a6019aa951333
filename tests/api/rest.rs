//! The REST API: the same inbox over HTTP with a Bearer token.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::client::{Connect, connect};
use crate::helpers::{SECRET, TestApp};

async fn call(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    token: Option<&str>,
) -> (StatusCode, Value) {
    let mut request = reqwest::Client::new().request(method, app.url(path));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, body)
}

#[tokio::test]
async fn the_inbox_is_listed_counted_and_read_over_http() {
    let app = TestApp::spawn().await;
    let user = app.user("Ada", "USER", None).await;
    let token = app.token(user);
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(app.notify(user, &format!("n{i}")).await);
    }
    let (status, page) = call(
        &app,
        reqwest::Method::GET,
        "/api/notifications?limit=3",
        Some(&token),
    )
    .await;
    assert_eq!(status, 200);
    let titles: Vec<&str> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["title"].as_str().unwrap())
        .collect();
    assert_eq!(titles, ["n4", "n3", "n2"]);
    let cursor = page["nextCursor"].as_str().unwrap();
    let (_, rest) = call(
        &app,
        reqwest::Method::GET,
        &format!("/api/notifications?limit=3&before={cursor}"),
        Some(&token),
    )
    .await;
    assert_eq!(rest["items"].as_array().unwrap().len(), 2);
    assert_eq!(rest["nextCursor"], Value::Null);

    let (_, count) = call(
        &app,
        reqwest::Method::GET,
        "/api/notifications/unread-count",
        Some(&token),
    )
    .await;
    assert_eq!(count, json!({"count": 5}));

    // A read over HTTP reaches the user's sockets like one over the socket.
    let mut socket = connect(app.address, Connect::token(&token)).await.unwrap();
    socket.connected().await;
    let (status, ack) = call(
        &app,
        reqwest::Method::POST,
        &format!("/api/notifications/{}/read", ids[0]),
        Some(&token),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(ack["success"], true);
    assert_eq!(ack["notificationId"], json!(ids[0]));
    assert_eq!(
        socket.wait_for("notification:read").await["readAt"],
        ack["readAt"]
    );
    let (_, again) = call(
        &app,
        reqwest::Method::POST,
        &format!("/api/notifications/{}/read", ids[0]),
        Some(&token),
    )
    .await;
    assert_eq!(again["readAt"], ack["readAt"]);

    let (_, unread) = call(
        &app,
        reqwest::Method::GET,
        "/api/notifications?unread=true",
        Some(&token),
    )
    .await;
    assert_eq!(unread["items"].as_array().unwrap().len(), 4);
    let (status, all) = call(
        &app,
        reqwest::Method::POST,
        "/api/notifications/read-all",
        Some(&token),
    )
    .await;
    assert_eq!(
        (status, all),
        (StatusCode::OK, json!({"success": true, "count": 4}))
    );
    // Counts arrive after each change; the last one is zero.
    while socket.wait_for("notification:count").await["count"] != 0 {}
}

#[tokio::test]
async fn errors_are_json_with_fitting_statuses() {
    let app = TestApp::spawn().await;
    let user = app.user("Ada", "USER", None).await;
    let other = app.user("Bob", "USER", None).await;
    let gone = app.user("Gone", "USER", None).await;
    app.pg
        .execute(
            "update herald.users set is_active = false where id = $1",
            &[&gone],
        )
        .await
        .unwrap();
    let theirs = app.notify(other, "theirs").await;
    let token = app.token(user);
    let expired = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({"sub": user, "exp": herald::auth::unix_now() - 60}),
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap();

    let get = reqwest::Method::GET;
    let post = reqwest::Method::POST;
    let cases: Vec<(reqwest::Method, String, Option<String>, u16, &str)> = vec![
        (
            get.clone(),
            "/api/notifications".into(),
            None,
            401,
            "missing_token",
        ),
        (
            get.clone(),
            "/api/notifications".into(),
            Some("garbage".into()),
            401,
            "invalid_token",
        ),
        (
            get.clone(),
            "/api/notifications".into(),
            Some(expired),
            401,
            "token_expired",
        ),
        (
            get.clone(),
            "/api/notifications".into(),
            Some(app.token(uuid::Uuid::new_v4())),
            401,
            "user_not_found",
        ),
        (
            get.clone(),
            "/api/notifications".into(),
            Some(app.token(gone)),
            403,
            "user_inactive",
        ),
        (
            get.clone(),
            "/api/notifications?limit=0".into(),
            Some(token.clone()),
            400,
            "invalid_payload",
        ),
        (
            get.clone(),
            "/api/notifications?limit=ten".into(),
            Some(token.clone()),
            400,
            "invalid_payload",
        ),
        (
            get.clone(),
            "/api/notifications?before=nope".into(),
            Some(token.clone()),
            400,
            "invalid_payload",
        ),
        (
            get.clone(),
            "/api/notifications?unread=maybe".into(),
            Some(token.clone()),
            400,
            "invalid_payload",
        ),
        (
            post.clone(),
            "/api/notifications/not-a-uuid/read".into(),
            Some(token.clone()),
            400,
            "invalid_payload",
        ),
        (
            post.clone(),
            format!("/api/notifications/{theirs}/read"),
            Some(token.clone()),
            404,
            "not_found",
        ),
        (
            get.clone(),
            "/api/nothing-here".into(),
            Some(token.clone()),
            404,
            "not_found",
        ),
    ];
    for (method, path, token, status, code) in cases {
        let (got, body) = call(&app, method, &path, token.as_deref()).await;
        assert_eq!(
            (got.as_u16(), body["error"]["code"].as_str()),
            (status, Some(code)),
            "{path}: {body}"
        );
        assert!(body["error"]["message"].is_string());
    }
}

#[tokio::test]
async fn reading_a_retracted_or_expired_notification_is_not_found_and_writes_nothing() {
    let app = TestApp::spawn().await;
    let user = app.user("Ada", "USER", None).await;
    let token = app.token(user);
    let retracted = app.notify(user, "withdrawn").await;
    app.pg
        .execute(
            "update herald.notifications set retracted_at = now() where id = $1",
            &[&retracted],
        )
        .await
        .unwrap();
    let expired: uuid::Uuid = app
        .pg
        .query_one(
            "insert into herald.notifications (user_id, title, created_at, expires_at)
             values ($1, 'expired', now() - interval '2 hours', now() - interval '1 hour') returning id",
            &[&user],
        )
        .await
        .unwrap()
        .get(0);
    for id in [retracted, expired] {
        let (status, body) = call(
            &app,
            reqwest::Method::POST,
            &format!("/api/notifications/{id}/read"),
            Some(&token),
        )
        .await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (StatusCode::NOT_FOUND, Some("not_found")),
            "{id}: {body}"
        );
    }
    let written: i64 = app
        .pg
        .query_one(
            "select (select count(*) from herald.notification_seen)
                  + (select count(*) from herald.events where kind = 'notification.read')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(written, 0);
}

#[tokio::test]
async fn the_api_is_rate_limited_per_user() {
    let app = TestApp::spawn_with(|c| c.event_rate = "3/1m".parse().unwrap()).await;
    let user = app.user("Ada", "USER", None).await;
    let token = app.token(user);
    for _ in 0..3 {
        assert_eq!(
            call(
                &app,
                reqwest::Method::GET,
                "/api/notifications/unread-count",
                Some(&token)
            )
            .await
            .0,
            200
        );
    }
    let (status, body) = call(
        &app,
        reqwest::Method::GET,
        "/api/notifications/unread-count",
        Some(&token),
    )
    .await;
    assert_eq!(
        (status.as_u16(), body["error"]["code"].as_str()),
        (429, Some("rate_limited"))
    );
}

#[tokio::test]
async fn the_openapi_document_describes_every_route() {
    let app = TestApp::spawn().await;
    let (status, doc) = call(&app, reqwest::Method::GET, "/api/openapi.json", None).await;
    assert_eq!(status, 200);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    for path in [
        "/api/notifications",
        "/api/notifications/unread-count",
        "/api/notifications/{id}/read",
        "/api/notifications/read-all",
    ] {
        assert!(doc["paths"].get(path).is_some(), "{path} missing");
    }
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
}
