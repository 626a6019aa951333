//! Health, readiness and shutdown.

use crate::helpers::TestApp;

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
            .execute("select pg_terminate_backend(pid) from pg_stat_activity where application_name = 'herald-listener' and datname = current_database()", &[])
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
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
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
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(recovered, "the listener did not reconnect within 5 s");
    app.stop().await.unwrap();
}

#[tokio::test]
async fn the_grafana_dashboard_plots_only_metrics_herald_exports() {
    let app = TestApp::spawn().await;
    // Exercise enough that every metric family has been written once.
    let user = app.user("Ada", "USER", None).await;
    let mut client =
        crate::client::connect(app.address, crate::client::Connect::token(&app.token(user)))
            .await
            .unwrap();
    client.connected().await;
    let id = app.notify(user, "metrics").await;
    client.wait_for("notification:new").await;
    client
        .ack("mark.read", Some(serde_json::json!({"notificationId": id})))
        .await;
    client
        .ack(
            "mark.delivered",
            Some(serde_json::json!({"notificationId": id})),
        )
        .await;
    let _ = crate::client::connect(app.address, crate::client::Connect::token("garbage")).await;
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let exported = reqwest::get(app.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();

    let dashboard: serde_json::Value =
        serde_json::from_str(include_str!("../../deploy/grafana-dashboard.json")).unwrap();
    let mut checked = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            for name in expr
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .filter(|w| w.starts_with("herald_"))
            {
                let family = name.trim_end_matches("_bucket");
                assert!(
                    exported.contains(family),
                    "{} plots {family}, which /metrics does not export",
                    panel["title"]
                );
                checked += 1;
            }
        }
    }
    assert!(checked >= 16);
}
