//! Health, readiness and shutdown.

use std::collections::BTreeMap;
use std::time::Duration;

use herald::auth::JwtConfig;
use serde_json::{Value, json};

use crate::client::{Connect, connect};
use crate::helpers::{HeraldProcess, SECRET, TestApp, TestDb, insert_user};

#[tokio::test]
async fn serve_on_port_zero_answers_health_and_stops_cleanly_on_its_signal() {
    let app = TestApp::spawn().await;
    let http = reqwest::Client::new();
    let live = http.get(app.url("/health/live")).send().await.unwrap();
    assert_eq!(live.status(), 200);
    assert_eq!(
        live.json::<serde_json::Value>().await.unwrap(),
        serde_json::json!({"status": "ok"})
    );
    let ready = http.get(app.url("/health/ready")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    let body: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(body["database"], "up");
    assert_eq!(body["listener"], "up");
    let address = app.address;
    app.stop().await.expect("clean stop");
    assert!(
        tokio::net::TcpStream::connect(address).await.is_err(),
        "still accepting after shutdown"
    );
}

#[tokio::test]
async fn readiness_fails_while_the_listener_is_down() {
    let app = TestApp::spawn().await;
    let http = reqwest::Client::new();
    // Keep killing the listener's connection; readiness must notice.
    let mut saw_unready = false;
    for _ in 0..40 {
        app.pg
            .execute("select pg_terminate_backend(pid) from pg_stat_activity where application_name = 'herald-tail' and datname = current_database()", &[])
            .await
            .unwrap();
        let status = http
            .get(app.url("/health/ready"))
            .send()
            .await
            .unwrap()
            .status();
        if status == 503 {
            saw_unready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        saw_unready,
        "/health/ready never reported the listener down"
    );
    // And it recovers by itself.
    let mut recovered = false;
    for _ in 0..100 {
        if http
            .get(app.url("/health/ready"))
            .send()
            .await
            .unwrap()
            .status()
            == 200
        {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(recovered, "the listener did not reconnect within 5 s");
    app.stop().await.unwrap();
}

/// A herald process of its own: its `/metrics` holds what this test made
/// it do and nothing another test did.
#[tokio::test]
async fn the_grafana_dashboard_plots_only_metrics_herald_exports() {
    let db = TestDb::migrated().await;
    let pg = db.client().await;
    let herald = HeraldProcess::spawn(&db.url, &[]);
    herald.wait_ready().await;
    // Exercise enough that every metric family has been written once.
    let user = insert_user(&pg, "Ada", "USER", None).await;
    let token = JwtConfig::hs256(SECRET.as_bytes())
        .sign(user, Duration::from_secs(600))
        .unwrap();
    let mut client = connect(herald.address, Connect::token(&token))
        .await
        .unwrap();
    client.connected().await;
    let id: uuid::Uuid = pg
        .query_one(
            "insert into herald.notifications (user_id, title) values ($1, 'metrics') returning id",
            &[&user],
        )
        .await
        .unwrap()
        .get(0);
    client.wait_for("notification:new").await;
    client
        .ack("mark.read", Some(json!({"notificationId": id})))
        .await;
    client
        .ack("mark.delivered", Some(json!({"notificationId": id})))
        .await;
    let _ = connect(herald.address, Connect::token("garbage")).await;

    let dashboard: Value =
        serde_json::from_str(include_str!("../../deploy/grafana-dashboard.json")).unwrap();
    let mut plotted = BTreeMap::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            for name in expr
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .filter(|w| w.starts_with("herald_"))
            {
                let family = name.trim_end_matches("_bucket").to_owned();
                plotted.insert(family, panel["title"].clone());
            }
        }
    }
    assert!(
        plotted.len() >= 16,
        "only {} families plotted",
        plotted.len()
    );
    // Some families are written after the acks (the delivery writer's
    // batch, the refresh of counts): wait for /metrics to show them all.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let exported = herald.metrics().await;
        let missing: Vec<_> = plotted
            .iter()
            .filter(|(family, _)| !exported.contains(family.as_str()))
            .collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the dashboard plots families /metrics does not export (family, panel): {missing:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
