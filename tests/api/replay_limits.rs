//! What a resume may make herald read: `HERALD_REPLAY_LIMIT`, the replay's
//! byte budget, and positions herald could never have issued. Each reset
//! must be decided before the backlog is loaded, which the tests see in
//! `herald_replay_rows_read_total` and in what the client is sent.

use std::collections::HashSet;
use std::time::Duration;

use herald::auth::JwtConfig;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::client::{Connect, SioClient, connect};
use crate::helpers::{HeraldProcess, SECRET, TestDb, insert_user, resume_at};

const ROWS_READ: &str = "herald_replay_rows_read_total";

/// A herald process of the test's own: the metrics these tests read are
/// process-wide, and in one process with other tests' heralds they would
/// count those tests' resumes too.
struct Herald {
    process: HeraldProcess,
    pg: tokio_postgres::Client,
    jwt: JwtConfig,
    address: std::net::SocketAddr,
}

impl Herald {
    async fn start(replay_limit: Option<&str>) -> Self {
        let db = TestDb::migrated().await;
        let pg = db.client().await;
        let settings: Vec<_> = replay_limit
            .map(|limit| ("HERALD_REPLAY_LIMIT", limit))
            .into_iter()
            .collect();
        let process = HeraldProcess::spawn(&db.url, &settings);
        process.wait_ready().await;
        Self {
            address: process.address,
            process,
            pg,
            jwt: JwtConfig::hs256(SECRET.as_bytes()),
        }
    }

    async fn user(&self, name: &str) -> Uuid {
        insert_user(&self.pg, name, "USER", None).await
    }

    fn token(&self, user: Uuid) -> String {
        self.jwt.sign(user, Duration::from_secs(600)).unwrap()
    }

    async fn metric(&self, name: &str) -> f64 {
        self.process.metric(name).await
    }
}

async fn resume(app: &Herald, user: Uuid, last_event_id: &str) -> SioClient {
    resume_at(app.address, &app.token(user), last_event_id).await
}

/// A fresh connection's `connection:success.lastEventId`.
async fn position(app: &Herald, user: Uuid) -> String {
    let mut client = connect(app.address, Connect::token(&app.token(user)))
        .await
        .unwrap();
    let position = client.connected().await["lastEventId"]
        .as_str()
        .unwrap()
        .to_owned();
    client.close();
    position
}

/// `count` notifications for `user` in one statement, titled `{prefix}1`...
async fn notify_many(app: &Herald, user: Uuid, prefix: &str, count: i32, data_bytes: i32) {
    app.pg
        .execute(
            "insert into herald.notifications (user_id, title, data)
             select $1, $2 || n, jsonb_build_object('blob', repeat('x', $4))
               from generate_series(1, $3) as n",
            &[&user, &prefix, &count, &data_bytes],
        )
        .await
        .unwrap();
}

/// A resume answered with `sync:reset`: the pending push (newest first, at
/// most the pending limit), the count and `connection:success`, and nothing
/// replayed. The titles pushed (rows of one statement share `created_at`,
/// so their order among themselves is the ids', which are random).
async fn expect_reset(client: &mut SioClient, pending: usize, count: i64) -> HashSet<String> {
    assert_eq!(client.expect("sync:reset").await, json!({}));
    let mut titles = HashSet::new();
    for _ in 0..pending {
        let pushed = client.expect("notification:new").await;
        titles.insert(pushed["title"].as_str().unwrap().to_owned());
    }
    assert_eq!(
        client.expect("notification:count").await,
        json!({"count": count})
    );
    client.expect("connection:success").await;
    titles
}

/// The `xmax` of a position's base snapshot.
fn xmax(position: &str) -> u64 {
    position.split(':').nth(1).unwrap().parse().unwrap()
}

#[tokio::test]
async fn a_forged_position_is_reset_without_loading_the_backlog() {
    let app = Herald::start(None).await;
    let user = app.user("Ada").await;
    let issued = position(&app, user).await;
    notify_many(&app, user, "n", 1200, 0).await;
    let ahead = xmax(&issued) + 1000;

    let before = app.metric(ROWS_READ).await;
    for forged in [
        // Not a snapshot PostgreSQL can take: xmin below its first transaction.
        "1:1:".to_owned(),
        // A real-looking position at the start of time: 1,200 events follow it.
        "3:3:".to_owned(),
        // Ahead of the log, and a step that ends ahead of it.
        format!("{ahead}:{ahead}:"),
        format!("{issued}/{ahead}:{ahead}:/{}/1", ahead - 1),
    ] {
        let mut client = resume(&app, user, &forged).await;
        let titles = expect_reset(&mut client, 50, 1200).await;
        assert_eq!(titles.len(), 50, "{forged}: the pending push, each once");
        client.close();
    }
    assert_eq!(
        app.metric(ROWS_READ).await - before,
        0.0,
        "a reset loaded event rows"
    );
    assert!(
        app.metric("herald_resumes_total{outcome=\"malformed\"}")
            .await
            >= 3.0
    );
}

#[tokio::test]
async fn a_resume_just_past_the_limit_is_reset_and_one_at_it_replays_in_order() {
    let app = Herald::start(Some("20")).await;
    let user = app.user("Ada").await;

    let from = position(&app, user).await;
    notify_many(&app, user, "over", 21, 0).await;
    let before = app.metric(ROWS_READ).await;
    let mut client = resume(&app, user, &from).await;
    let titles = expect_reset(&mut client, 21, 21).await;
    assert_eq!(titles, (1..=21).map(|i| format!("over{i}")).collect());
    assert_eq!(
        app.metric(ROWS_READ).await - before,
        0.0,
        "decided by the count"
    );
    client.close();

    let from = position(&app, user).await;
    notify_many(&app, user, "at", 20, 0).await;
    let mut client = resume(&app, user, &from).await;
    for i in 1..=20 {
        let replayed = client.expect("notification:new").await;
        assert_eq!(replayed["title"], format!("at{i}"));
    }
    assert_eq!(
        client.expect("notification:count").await,
        json!({"count": 41})
    );
    client.expect("connection:success").await;
    assert_eq!(app.metric(ROWS_READ).await - before, 20.0);
}

#[tokio::test]
async fn a_replay_past_its_byte_budget_or_far_behind_the_log_is_reset() {
    // Limit 4: a budget of 16 KiB of payloads, and 400 log entries read at most.
    let app = Herald::start(Some("4")).await;
    let user = app.user("Ada").await;
    let other = app.user("Bob").await;

    let from = position(&app, user).await;
    notify_many(&app, user, "big", 3, 8 * 1024).await;
    let mut client = resume(&app, user, &from).await;
    expect_reset(&mut client, 3, 3).await;
    client.close();
    assert_eq!(
        app.metric("herald_resumes_total{outcome=\"too_large\"}")
            .await,
        1.0
    );

    // Nothing new for Ada, but the log moved past what the decision reads.
    let from = position(&app, user).await;
    notify_many(&app, other, "busy", 401, 0).await;
    let mut client = resume(&app, user, &from).await;
    expect_reset(&mut client, 3, 3).await;
    client.close();
    assert_eq!(
        app.metric("herald_resumes_total{outcome=\"too_far_behind\"}")
            .await,
        1.0
    );

    // Within both bounds it replays.
    let from = position(&app, user).await;
    notify_many(&app, other, "quiet", 300, 0).await;
    notify_many(&app, user, "small", 4, 1024).await;
    let mut client = resume(&app, user, &from).await;
    for i in 1..=4 {
        let replayed = client.expect("notification:new").await;
        assert_eq!(replayed["title"], format!("small{i}"));
        assert_ne!(replayed["eventId"], Value::Null);
    }
    assert_eq!(
        client.expect("notification:count").await,
        json!({"count": 7})
    );
    client.expect("connection:success").await;
}
