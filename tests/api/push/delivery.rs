//! Pushes, end to end: herald on a real database, a push service that
//! verifies and decrypts what it gets, and browsers' keys made as
//! `PushManager.subscribe` makes them.

use std::time::Duration;

use herald::push::endpoint::EndpointPolicy;
use reqwest::Method;
use serde_json::Value;
use uuid::Uuid;

use super::service::{PushService, Script};
use super::{call, push_config};
use crate::client::{Connect, connect};
use crate::helpers::{TestApp, TestDb, config};

/// herald with push on (`any` endpoints, so the local push service is
/// allowed), and a push service that trusts its key.
async fn setup(delay: Duration) -> (TestApp, PushService, herald::push::PushConfig) {
    let push = push_config(EndpointPolicy::Any, delay);
    let service = PushService::start(push.key.public_key()).await;
    let app = TestApp::spawn_with(|c| c.push = Some(push.clone())).await;
    (app, service, push)
}

async fn subscribe(app: &TestApp, service: &PushService, user: Uuid, name: &str) -> String {
    let (endpoint, json) = service.subscription(name);
    let (status, body) = call(
        app,
        Method::POST,
        "/api/push/subscriptions",
        Some(&app.token(user)),
        Some(json.to_string().into_bytes()),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    endpoint
}

/// The states of the sends planned for a notification, by subscription endpoint.
async fn sends(pg: &tokio_postgres::Client, notification: Uuid) -> Vec<(String, String)> {
    pg.query(
        "select s.endpoint, p.state from herald.push_sends p
           join herald.push_subscriptions s on s.id = p.subscription_id
          where p.notification_id = $1 order by 1",
        &[&notification],
    )
    .await
    .unwrap()
    .iter()
    .map(|row| (row.get(0), row.get(1)))
    .collect()
}

async fn push_row(
    pg: &tokio_postgres::Client,
    notification: Uuid,
    user: Uuid,
) -> Option<(String, Option<String>)> {
    pg.query_opt(
        "select status, error from herald.notification_deliveries
          where notification_id = $1 and user_id = $2 and channel = 'PUSH'",
        &[&notification, &user],
    )
    .await
    .unwrap()
    .map(|row| (row.get(0), row.get(1)))
}

/// Waits until `done` holds of the database, polling what herald wrote.
async fn until<F, Fut>(what: &str, mut done: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !done().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Whether herald has decided the notification (its delay passed).
async fn decided(pg: &tokio_postgres::Client, notification: Uuid) -> bool {
    pg.query_opt(
        "select 1 from herald.push_due where notification_id = $1",
        &[&notification],
    )
    .await
    .unwrap()
    .is_none()
}

/// Nothing can be sent again for it: decided, and no send pending or under way.
async fn settled(pg: &tokio_postgres::Client, notification: Uuid) -> bool {
    decided(pg, notification).await
        && pg
            .query_one(
                "select count(*) from herald.push_sends where notification_id = $1 and state in ('pending', 'sending')",
                &[&notification],
            )
            .await
            .unwrap()
            .get::<_, i64>(0)
            == 0
}

#[tokio::test]
async fn an_offline_user_gets_one_push_per_subscription_with_what_it_says() {
    let (app, service, _) = setup(Duration::from_millis(300)).await;
    let ada = app.user("Ada", "USER", None).await;
    subscribe(&app, &service, ada, "laptop").await;
    subscribe(&app, &service, ada, "phone").await;
    let id: Uuid = app
        .pg
        .query_one(
            "insert into herald.notifications (user_id, title, message, importance, kind, action_url)
             values ($1, 'Shipped', 'Your order is on its way', 'urgent', 'order.shipped', 'https://shop.example/o/1')
             returning id",
            &[&ada],
        )
        .await
        .unwrap()
        .get(0);
    service.wait_for(2).await;
    until("the PUSH row", || async {
        push_row(&app.pg, id, ada).await.is_some()
    })
    .await;
    until("the sends to settle", || settled(&app.pg, id)).await;
    let received = service.received();
    assert_eq!(received.len(), 2, "{received:?}");
    let mut names: Vec<&str> = received.iter().map(|r| r.subscription.as_str()).collect();
    names.sort();
    assert_eq!(names, ["laptop", "phone"]);
    for push in &received {
        assert_eq!(push.topic, id.simple().to_string());
        assert_eq!(push.urgency, "high");
        assert!(push.ttl > 3500 && push.ttl <= 3600, "TTL {}", push.ttl);
        assert_eq!(push.body["type"], "notification");
        let shown = &push.body["notification"];
        assert_eq!(shown["id"], id.to_string());
        assert_eq!(shown["title"], "Shipped");
        assert_eq!(shown["message"], "Your order is on its way");
        assert_eq!(shown["kind"], "order.shipped");
        assert_eq!(shown["importance"], "urgent");
        assert_eq!(shown["actionUrl"], "https://shop.example/o/1");
        assert!(shown["createdAt"].as_str().unwrap().ends_with('Z'));
    }
    assert_eq!(
        push_row(&app.pg, id, ada).await,
        Some(("SENT".into(), None))
    );
    let audit: String = app
        .pg
        .query_one(
            "select string_agg(channel || ':' || status, ',' order by channel) from herald.delivery_audit where notification_id = $1",
            &[&id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(audit, "PUSH:SENT");
    // A low one is below HERALD_PUSH_MIN_IMPORTANCE (normal): never pushed.
    let low: Uuid = app
        .pg
        .query_one(
            "insert into herald.notifications (user_id, title, importance) values ($1, 'fyi', 'low') returning id",
            &[&ada],
        )
        .await
        .unwrap()
        .get(0);
    until("the low one to be decided", || decided(&app.pg, low)).await;
    assert!(sends(&app.pg, low).await.is_empty());
    assert_eq!(service.received().len(), 2);
}

#[tokio::test]
async fn a_kind_muted_for_push_is_never_sent_unless_urgent_and_in_app_muting_leaves_push_alone() {
    let (app, service, _) = setup(Duration::from_millis(200)).await;
    let ada = app.user("Ada", "USER", None).await;
    subscribe(&app, &service, ada, "phone").await;
    app.pg
        .execute(
            "insert into herald.notification_preferences (user_id, kind_pattern, channel, enabled)
             values ($1, 'order.*', 'PUSH', false), ($1, 'order.late', 'PUSH', true),
                    ($1, 'billing.*', 'IN_APP', false)",
            &[&ada],
        )
        .await
        .unwrap();
    let notify = |kind: &'static str, importance: &'static str| {
        let pg = &app.pg;
        async move {
            pg.query_one(
                "insert into herald.notifications (user_id, title, kind, importance)
                 values ($1, $2, $2, $3) returning id",
                &[&ada, &kind, &importance],
            )
            .await
            .unwrap()
            .get::<_, Uuid>(0)
        }
    };
    let muted = notify("order.shipped", "high").await;
    let urgent = notify("order.cancelled", "urgent").await;
    let exact = notify("order.late", "normal").await;
    let in_app_only = notify("billing.due", "normal").await;
    until("all four to be decided", || async {
        decided(&app.pg, muted).await
            && decided(&app.pg, urgent).await
            && decided(&app.pg, exact).await
            && decided(&app.pg, in_app_only).await
    })
    .await;
    assert!(
        sends(&app.pg, muted).await.is_empty(),
        "order.* is muted for PUSH"
    );
    let received = service.wait_for(3).await;
    let mut pushed: Vec<String> = received
        .iter()
        .map(|push| push.body["notification"]["id"].as_str().unwrap().to_owned())
        .collect();
    pushed.sort();
    let mut expected = vec![
        urgent.to_string(),
        exact.to_string(),
        in_app_only.to_string(),
    ];
    expected.sort();
    assert_eq!(
        pushed, expected,
        "urgent ignores preferences, the exact kind beats order.*, and IN_APP muting is not PUSH muting"
    );
    assert_eq!(push_row(&app.pg, muted, ada).await, None);
}

#[tokio::test]
async fn a_user_whose_socket_got_it_or_who_read_it_in_time_gets_no_push() {
    let (app, service, _) = setup(Duration::from_secs(2)).await;
    let (online, reader) = (
        app.user("Online", "USER", None).await,
        app.user("Reader", "USER", None).await,
    );
    subscribe(&app, &service, online, "online").await;
    subscribe(&app, &service, reader, "reader").await;
    let mut socket = connect(app.address, Connect::token(&app.token(online)))
        .await
        .unwrap();
    socket.connected().await;
    let to_online = app.notify(online, "live").await;
    socket.wait_for("notification:new").await;
    let to_reader = app.notify(reader, "read quickly").await;
    let (status, _) = call(
        &app,
        Method::POST,
        &format!("/api/notifications/{to_reader}/read"),
        Some(&app.token(reader)),
        None,
    )
    .await;
    assert_eq!(status, 200);
    until("both to be decided", || async {
        decided(&app.pg, to_online).await && decided(&app.pg, to_reader).await
    })
    .await;
    assert!(sends(&app.pg, to_online).await.is_empty());
    assert!(sends(&app.pg, to_reader).await.is_empty());
    assert!(service.received().is_empty());
    assert_eq!(push_row(&app.pg, to_online, online).await, None);
}

#[tokio::test]
async fn a_gone_subscription_is_deleted_and_the_push_recorded_failed() {
    let (app, service, _) = setup(Duration::from_millis(200)).await;
    let ada = app.user("Ada", "USER", None).await;
    subscribe(&app, &service, ada, "old").await;
    service.script("old", &[Script::Status(410)]);
    let id = app.notify(ada, "hello").await;
    service.wait_for(1).await;
    until("the FAILED row", || async {
        push_row(&app.pg, id, ada).await.is_some()
    })
    .await;
    let (status, error) = push_row(&app.pg, id, ada).await.unwrap();
    assert_eq!(status, "FAILED");
    assert!(error.unwrap().contains("410"));
    let left: i64 = app
        .pg
        .query_one("select count(*) from herald.push_subscriptions", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 0);
}

#[tokio::test]
async fn too_many_requests_is_retried_after_retry_after_and_delivered_once() {
    let (app, service, _) = setup(Duration::from_millis(200)).await;
    let ada = app.user("Ada", "USER", None).await;
    subscribe(&app, &service, ada, "busy").await;
    service.script("busy", &[Script::TooMany(2), Script::Status(201)]);
    let id = app.notify(ada, "hello").await;
    service.wait_for(2).await;
    until("the sends to settle", || settled(&app.pg, id)).await;
    let received = service.received();
    assert_eq!(received.len(), 2);
    assert_eq!((received[0].status, received[1].status), (429, 201));
    let waited = received[1].at - received[0].at;
    assert!(waited >= Duration::from_secs(2), "retried after {waited:?}");
    assert_eq!(received[0].body, received[1].body);
    assert_eq!(
        push_row(&app.pg, id, ada).await,
        Some(("SENT".into(), None))
    );
    assert_eq!(sends(&app.pg, id).await.len(), 1);
}

#[tokio::test]
async fn two_instances_push_each_subscription_exactly_once() {
    let push = push_config(EndpointPolicy::Any, Duration::from_millis(500));
    let service = PushService::start(push.key.public_key()).await;
    let first = TestApp::spawn_with(|c| c.push = Some(push.clone())).await;
    let db = TestDb {
        url: first.db.url.clone(),
    };
    let mut second_config = config(&db);
    second_config.push = Some(push.clone());
    let second = TestApp::spawn_on(db, second_config).await;
    let mut users = Vec::new();
    for i in 0..5 {
        let user = first.user(&format!("u{i}"), "USER", None).await;
        subscribe(&first, &service, user, &format!("u{i}")).await;
        users.push(user);
    }
    let id = first.broadcast("all", None, "to everyone").await;
    service.wait_for(5).await;
    until("the sends to settle", || settled(&first.pg, id)).await;
    let received = service.received();
    let mut names: Vec<String> = received.iter().map(|r| r.subscription.clone()).collect();
    names.sort();
    assert_eq!(names, ["u0", "u1", "u2", "u3", "u4"]);
    for user in users {
        assert_eq!(
            push_row(&first.pg, id, user).await,
            Some(("SENT".into(), None))
        );
    }
    drop(second);
}

#[tokio::test]
async fn a_push_due_while_herald_was_stopped_is_sent_once_after_it_starts() {
    let push = push_config(EndpointPolicy::Any, Duration::from_secs(2));
    let service = PushService::start(push.key.public_key()).await;
    let app = TestApp::spawn_with(|c| c.push = Some(push.clone())).await;
    let ada = app.user("Ada", "USER", None).await;
    subscribe(&app, &service, ada, "laptop").await;
    let id = app.notify(ada, "while you were away").await;
    let url = app.db.url.clone();
    app.stop().await.unwrap();
    let pg = crate::helpers::connect(&url).await;
    assert!(!decided(&pg, id).await, "decided before its delay");
    let db = TestDb { url };
    let mut again = config(&db);
    again.push = Some(push);
    let app = TestApp::spawn_on(db, again).await;
    service.wait_for(1).await;
    until("the sends to settle", || settled(&app.pg, id)).await;
    assert_eq!(service.received().len(), 1);
    assert_eq!(
        push_row(&app.pg, id, ada).await,
        Some(("SENT".into(), None))
    );
}

#[tokio::test]
async fn a_pushed_notification_read_or_retracted_is_dismissed_with_its_topic() {
    let (app, service, _) = setup(Duration::from_millis(200)).await;
    let ada = app.user("Ada", "USER", None).await;
    subscribe(&app, &service, ada, "laptop").await;
    let read = app.notify(ada, "read me").await;
    let retracted = app.notify(ada, "never mind").await;
    service.wait_for(2).await;
    until("both sent", || async {
        settled(&app.pg, read).await && settled(&app.pg, retracted).await
    })
    .await;
    let (status, _) = call(
        &app,
        Method::POST,
        &format!("/api/notifications/{read}/read"),
        Some(&app.token(ada)),
        None,
    )
    .await;
    assert_eq!(status, 200);
    app.pg
        .execute(
            "update herald.notifications set retracted_at = now() where id = $1",
            &[&retracted],
        )
        .await
        .unwrap();
    let received = service.wait_for(4).await;
    let dismisses: Vec<_> = received
        .iter()
        .filter(|r| r.body["type"] == "dismiss")
        .collect();
    assert_eq!(dismisses.len(), 2, "{received:?}");
    for id in [read, retracted] {
        let dismiss = dismisses
            .iter()
            .find(|r| r.body["notificationId"] == Value::String(id.to_string()))
            .unwrap_or_else(|| panic!("no dismiss for {id}"));
        assert_eq!(dismiss.topic, id.simple().to_string());
    }
}

#[tokio::test]
async fn a_dismiss_the_push_service_turns_away_is_retried_after_retry_after() {
    let (app, service, _) = setup(Duration::from_millis(200)).await;
    let ada = app.user("Ada", "USER", None).await;
    subscribe(&app, &service, ada, "laptop").await;
    // The push is accepted; its dismiss is refused once with 429.
    service.script(
        "laptop",
        &[Script::Status(201), Script::TooMany(1), Script::Status(201)],
    );
    let id = app.notify(ada, "read me elsewhere").await;
    service.wait_for(1).await;
    until("the push to settle", || settled(&app.pg, id)).await;
    app.pg
        .execute(
            "insert into herald.notification_seen (notification_id, user_id) values ($1, $2)",
            &[&id, &ada],
        )
        .await
        .unwrap();
    let received = service.wait_for(3).await;
    let statuses: Vec<(String, u16)> = received
        .iter()
        .map(|r| (r.body["type"].as_str().unwrap().to_owned(), r.status))
        .collect();
    assert_eq!(
        statuses,
        [
            ("notification".into(), 201),
            ("dismiss".into(), 429),
            ("dismiss".into(), 201)
        ]
    );
    let waited = received[2].at - received[1].at;
    assert!(waited >= Duration::from_secs(1), "retried after {waited:?}");
    assert_eq!(received[1].body, received[2].body);
    until("the dismiss recorded sent", || async {
        app.pg
            .query_one(
                "select dismiss_state from herald.push_sends where notification_id = $1",
                &[&id],
            )
            .await
            .unwrap()
            .get::<_, Option<String>>(0)
            .as_deref()
            == Some("sent")
    })
    .await;
}

/// How many failures in a row herald has counted for the subscription at
/// `endpoint`; `None` once it is deleted.
async fn failures(pg: &tokio_postgres::Client, endpoint: &str) -> Option<i32> {
    pg.query_opt(
        "select failures from herald.push_subscriptions where endpoint = $1",
        &[&endpoint],
    )
    .await
    .unwrap()
    .map(|row| row.get(0))
}

#[tokio::test]
async fn five_failures_in_a_row_delete_a_subscription_and_a_success_starts_the_count_again() {
    let (app, service, _) = setup(Duration::from_millis(100)).await;
    let ada = app.user("Ada", "USER", None).await;
    let endpoint = subscribe(&app, &service, ada, "flaky").await;
    let answers = [400, 400, 400, 400, 201, 400, 400, 400, 400, 400];
    service.script("flaky", &answers.map(Script::Status));
    let mut counted = Vec::new();
    for (i, answer) in answers.iter().enumerate() {
        let id = app.notify(ada, &format!("number {i}")).await;
        service.wait_for(i + 1).await;
        until("the send to settle", || settled(&app.pg, id)).await;
        let expected = if *answer == 201 { "SENT" } else { "FAILED" };
        until("the PUSH row", || async {
            push_row(&app.pg, id, ada)
                .await
                .map(|(status, _)| status)
                .as_deref()
                == Some(expected)
        })
        .await;
        counted.push(failures(&app.pg, &endpoint).await);
    }
    assert_eq!(
        counted,
        [
            Some(1),
            Some(2),
            Some(3),
            Some(4),
            Some(0),
            Some(1),
            Some(2),
            Some(3),
            Some(4),
            None
        ]
    );
    // Gone for good: the next notification plans no send.
    let after = app.notify(ada, "nobody to push to").await;
    until("it to be decided", || decided(&app.pg, after)).await;
    assert!(sends(&app.pg, after).await.is_empty());
    assert_eq!(service.received().len(), answers.len());
}

#[tokio::test]
async fn an_endpoint_that_now_leads_inside_is_refused_when_sending_and_never_connected_to() {
    // A listener where the endpoints lead: it counts every connection.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (connections, seen) = tokio::sync::watch::channel(0usize);
    tokio::spawn(async move {
        while listener.accept().await.is_ok() {
            connections.send_modify(|n| *n += 1);
        }
    });
    let push = push_config(EndpointPolicy::Public, Duration::from_millis(100));
    let app = TestApp::spawn_with(|c| c.push = Some(push.clone())).await;
    let ada = app.user("Ada", "USER", None).await;
    // Endpoints that passed the policy when they were stored but lead to
    // loopback now: a name whose address changed (localhost stands in for
    // it), and a literal written in SQL past the routes.
    let by_name = format!("https://localhost:{port}/push/renamed");
    let literal = format!("https://127.0.0.1:{port}/push/literal");
    for endpoint in [&by_name, &literal] {
        let browser = super::Browser::new();
        let keys = &browser.subscription(endpoint)["keys"];
        app.pg
            .execute(
                "insert into herald.push_subscriptions (user_id, endpoint, p256dh, auth) values ($1, $2, $3, $4)",
                &[&ada, endpoint, &keys["p256dh"].as_str().unwrap(), &keys["auth"].as_str().unwrap()],
            )
            .await
            .unwrap();
    }
    let id = app.notify(ada, "must not leave").await;
    until("the FAILED row", || async {
        push_row(&app.pg, id, ada).await.is_some()
    })
    .await;
    until("the sends to settle", || settled(&app.pg, id)).await;
    let (status, error) = push_row(&app.pg, id, ada).await.unwrap();
    assert_eq!(status, "FAILED");
    assert!(error.unwrap().contains("not a public address"));
    let errors: Vec<String> = app
        .pg
        .query(
            "select p.error from herald.push_sends p where p.notification_id = $1 order by p.error",
            &[&id],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(
        errors.iter().all(|e| e.contains("not a public address")),
        "{errors:?}"
    );
    assert_eq!(*seen.borrow(), 0, "herald connected to a refused address");
}
