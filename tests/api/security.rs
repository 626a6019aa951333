//! The gateway's defences: session expiry and refresh, rate limits, payload
//! limits, and answers to every input however malformed.

use std::time::Duration;

use serde_json::{Value, json};

use crate::client::{Connect, connect};
use crate::helpers::{HeraldProcess, SECRET, TestApp, TestDb, insert_user};

/// A herald with no clock leeway, so a short token expires on time.
async fn without_leeway() -> TestApp {
    TestApp::spawn_with(|c| {
        c.jwt = herald::auth::JwtConfig::hs256(SECRET.as_bytes()).with_claims(
            None,
            None,
            Duration::ZERO,
        )
    })
    .await
}

#[tokio::test]
async fn an_expired_session_is_told_and_disconnected() {
    let app = without_leeway().await;
    let user = app.user("Ada", "USER", None).await;
    let token = app.jwt.sign(user, Duration::from_secs(2)).unwrap();
    let mut client = connect(app.address, Connect::token(&token)).await.unwrap();
    client.connected().await;
    // Expiry is a matter of the clock: the token lives two seconds, and the
    // wait allows far more for a loaded machine.
    let told = client.next_within(Duration::from_secs(15)).await;
    assert_eq!(told, Some(("session:expired".to_owned(), json!({}))));
    client.closed().await;
}

#[tokio::test]
async fn auth_refresh_keeps_a_session_past_its_first_token() {
    let app = without_leeway().await;
    let user = app.user("Ada", "USER", None).await;
    let short = app.jwt.sign(user, Duration::from_secs(2)).unwrap();
    let mut client = connect(app.address, Connect::token(&short)).await.unwrap();
    client.connected().await;
    let ack = client
        .ack("auth.refresh", Some(json!({"token": app.token(user)})))
        .await;
    assert_eq!(ack["success"], true);
    // A witness that does not refresh, its token signed later so it ends at
    // least a second after the first one. Expiry is a matter of the clock,
    // so this waits for it; herald ends sessions in deadline order, so once
    // the witness is told, the refreshed socket's first deadline is behind.
    let bob = app.user("Bob", "USER", None).await;
    let witness = app.jwt.sign(bob, Duration::from_secs(3)).unwrap();
    let mut witness = connect(app.address, Connect::token(&witness))
        .await
        .unwrap();
    witness.connected().await;
    let told = witness.next_within(Duration::from_secs(15)).await;
    assert_eq!(told, Some(("session:expired".to_owned(), json!({}))));
    // Anything the expiry sent the refreshed socket precedes this push.
    let n = app.notify(user, "still live").await;
    let before = client.before(n).await;
    assert!(
        before.iter().all(|(e, _)| e != "session:expired"),
        "expired despite the refresh: {before:?}"
    );
    assert!(client.is_open());
}

#[tokio::test]
async fn connects_per_address_and_events_per_socket_are_rate_limited() {
    let app = TestApp::spawn_with(|c| {
        c.connect_rate = "3/1m".parse().unwrap();
        c.event_rate = "5/1m".parse().unwrap();
    })
    .await;
    let user = app.user("Ada", "USER", None).await;
    let mut first = connect(app.address, Connect::token(&app.token(user)))
        .await
        .expect("first");
    first.connected().await;
    // A refused token counts against the failure limit, not this one.
    assert_eq!(
        connect(app.address, Connect::token("garbage"))
            .await
            .err()
            .as_deref(),
        Some("invalid_token")
    );
    let _second = connect(app.address, Connect::token(&app.token(user)))
        .await
        .expect("second");
    let _third = connect(app.address, Connect::token(&app.token(user)))
        .await
        .expect("third");
    assert_eq!(
        connect(app.address, Connect::token(&app.token(user)))
            .await
            .err()
            .as_deref(),
        Some("rate_limited")
    );

    for _ in 0..5 {
        assert_eq!(first.ack("mark.all_read", None).await["success"], true);
    }
    let limited = first.ack("mark.all_read", None).await;
    assert_eq!(limited["success"], false);
    assert_eq!(limited["error"]["code"], "rate_limited");
    let limited = first.ack("mark.read", Some(json!("malformed too"))).await;
    assert_eq!(limited["error"]["code"], "rate_limited");
    // The socket and the server are fine.
    let n = app.notify(user, "after the limit").await;
    assert_eq!(first.wait_for("notification:new").await["id"], json!(n));
    assert_eq!(
        reqwest::get(app.url("/health/ready"))
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test]
async fn a_flood_of_bad_tokens_trips_its_own_limit_and_good_tokens_behind_the_address_still_connect()
 {
    // Hour-long periods: nothing refills while the test runs. A herald
    // process of the test's own, so the limit counters it reads count this
    // test's refusals and no other's.
    let db = TestDb::migrated().await;
    let app = HeraldProcess::spawn(
        &db.url,
        &[
            ("HERALD_CONNECT_RATE_LIMIT", "5/1h"),
            ("HERALD_AUTH_FAILURE_LIMIT", "10/1h"),
        ],
    );
    app.wait_ready().await;
    let user = insert_user(&db.client().await, "Ada", "USER", None).await;
    let jwt = herald::auth::JwtConfig::hs256(SECRET.as_bytes());
    let token = || jwt.sign(user, Duration::from_secs(600)).unwrap();
    let expired = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({"sub": user, "exp": herald::auth::unix_now() - 60}),
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap();
    let mut refusals = std::collections::BTreeMap::<String, u32>::new();
    // Garbage, a token signed with another key, an expired one, none at all:
    // 130 attempts from 127.0.0.1, the address the good client shares.
    let forged = herald::auth::JwtConfig::hs256(b"another-secret-entirely-0123")
        .sign(user, Duration::from_secs(600))
        .unwrap();
    for i in 0..130 {
        let options = match i % 4 {
            0 => Connect::token(&format!("garbage-{i}")),
            1 => Connect::token(&forged),
            2 => Connect::token(&expired),
            _ => Connect::default(),
        };
        let refusal = connect(app.address, options).await.err().expect("refused");
        *refusals.entry(refusal).or_default() += 1;
    }
    assert_eq!(refusals.get("rate_limited"), Some(&120), "{refusals:?}");
    assert_eq!(refusals.values().sum::<u32>(), 130);
    assert_eq!(
        app.metric("herald_rate_limited_total{limit=\"auth_failure\"}")
            .await,
        120.0
    );

    // A good token from the same address is untouched by the flood...
    let mut good = connect(app.address, Connect::token(&token()))
        .await
        .expect("a valid token connects after the flood");
    good.connected().await;
    // ...while the flood stays limited.
    assert_eq!(
        connect(app.address, Connect::token("garbage-again"))
            .await
            .err()
            .as_deref(),
        Some("rate_limited")
    );
    // Good tokens have their own limit: 5 connects, then rate_limited.
    let mut kept = Vec::new();
    for _ in 1..5 {
        kept.push(
            connect(app.address, Connect::token(&token()))
                .await
                .expect("within the connect limit"),
        );
    }
    assert_eq!(
        connect(app.address, Connect::token(&token()))
            .await
            .err()
            .as_deref(),
        Some("rate_limited")
    );
    assert_eq!(
        app.metric("herald_rate_limited_total{limit=\"connect\"}")
            .await,
        1.0
    );
}

#[tokio::test]
async fn an_oversize_payload_closes_only_its_own_connection() {
    let app = TestApp::spawn().await;
    let user = app.user("Ada", "USER", None).await;
    let mut bystander = connect(app.address, Connect::token(&app.token(user)))
        .await
        .unwrap();
    bystander.connected().await;
    let mut offender = connect(app.address, Connect::token(&app.token(user)))
        .await
        .unwrap();
    offender.connected().await;
    let huge = "x".repeat(200 * 1024);
    offender.raw(&format!(
        "42/notifications,1[\"mark.read\",{{\"notificationId\":\"{huge}\"}}]"
    ));
    offender.closed().await;
    let n = app.notify(user, "unharmed").await;
    assert_eq!(bystander.wait_for("notification:new").await["id"], json!(n));
}

/// A small deterministic generator of arbitrary JSON.
struct Noise(u64);

impl Noise {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn value(&mut self, depth: u32) -> Value {
        let choice = self.next() % if depth > 2 { 6 } else { 8 };
        match choice {
            0 => Value::Null,
            1 => Value::Bool(self.next().is_multiple_of(2)),
            2 => json!(self.next() as i64),
            3 => json!(f64::from(self.next() as u32) / 7.0),
            4 => json!(self.string()),
            5 => json!(uuid::Uuid::from_u128(
                u128::from(self.next()) << 64 | u128::from(self.next())
            )),
            6 => Value::Array(
                (0..self.next() % 4)
                    .map(|_| self.value(depth + 1))
                    .collect(),
            ),
            _ => {
                let keys = [
                    "notificationId",
                    "token",
                    "before",
                    "limit",
                    "unreadOnly",
                    "x",
                    "",
                ];
                let mut object = serde_json::Map::new();
                for _ in 0..self.next() % 4 {
                    let key = keys[(self.next() % keys.len() as u64) as usize];
                    object.insert(key.to_owned(), self.value(depth + 1));
                }
                Value::Object(object)
            }
        }
    }

    fn string(&mut self) -> String {
        let pieces = [
            "",
            "a",
            "ü",
            "\u{0}",
            "\"",
            "\\",
            "0",
            "-1",
            "1e999",
            "😀",
            "12_00000000-0000-0000-0000-000000000000",
            "eyJ",
        ];
        (0..self.next() % 5)
            .map(|_| pieces[(self.next() % pieces.len() as u64) as usize])
            .collect()
    }
}

#[tokio::test]
async fn every_client_event_answers_every_input_and_the_socket_survives() {
    let app = TestApp::spawn().await;
    let user = app.user("Ada", "USER", None).await;
    let mut client = connect(app.address, Connect::token(&app.token(user)))
        .await
        .unwrap();
    client.connected().await;
    let mut noise = Noise(0x9E37_79B9_7F4A_7C15);
    let events = [
        "mark.read",
        "mark.delivered",
        "mark.all_read",
        "notifications.list",
        "auth.refresh",
    ];
    for round in 0..400 {
        let event = events[round % events.len()];
        let payload = if round % 17 == 0 {
            None
        } else {
            Some(noise.value(0))
        };
        let ack = client.ack(event, payload.clone()).await;
        let success = ack["success"].as_bool();
        assert!(success.is_some(), "{event} {payload:?} answered {ack}");
        if success == Some(false) {
            let code = ack["error"]["code"].as_str().unwrap_or_default();
            assert!(
                ["invalid_payload", "not_found", "invalid_token"].contains(&code),
                "{event} {payload:?}: {ack}"
            );
        }
    }
    assert!(client.is_open());
}
