//! The Socket.IO gateway, driven by real clients over WebSocket.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use herald::eventlog::tail::TICK;

use serde_json::{Value, json};
use uuid::Uuid;

use crate::client::{Connect, SioClient, connect};
use crate::helpers::{ORIGIN, SECRET, TestApp, column};

/// The delivery row of (notification, user) once the writer has written
/// it, as (status, whether sent_at is set); `None` after two seconds.
async fn delivery_row(app: &TestApp, notification: Uuid, user: Uuid) -> Option<(String, bool)> {
    for _ in 0..100 {
        let row = app
            .pg
            .query_opt("select status, sent_at is not null from herald.notification_deliveries where notification_id = $1 and user_id = $2", &[&notification, &user])
            .await
            .unwrap();
        if let Some(row) = row {
            return Some((row.get(0), row.get(1)));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

async fn online(app: &TestApp, user: Uuid) -> SioClient {
    let mut client = connect(app.address, Connect::token(&app.token(user)))
        .await
        .expect("connects");
    client.connected().await;
    client
}

fn sign(claims: Value, secret: &str) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

fn titles(events: &[(String, Value)], name: &str) -> Vec<String> {
    events
        .iter()
        .filter(|(e, _)| e == name)
        .map(|(_, d)| d["title"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[tokio::test]
async fn the_token_is_read_from_auth_then_query_then_authorization_header() {
    let app = TestApp::spawn().await;
    let user = app.user("Ada", "USER", None).await;
    let token = app.token(user);
    let ways = [
        Connect::token(&token),
        Connect {
            query: Some(format!("token={token}")),
            ..Connect::default()
        },
        Connect {
            headers: vec![("authorization".into(), format!("Bearer {token}"))],
            ..Connect::default()
        },
        // auth wins over a bad query token
        Connect {
            auth: Some(json!({"token": token})),
            query: Some("token=garbage".into()),
            ..Connect::default()
        },
    ];
    for way in ways {
        let mut client = connect(app.address, way).await.expect("connects");
        let success = client.connected().await;
        assert_eq!(success["userId"], json!(user));
    }
}

#[tokio::test]
async fn every_refusal_reaches_the_client_with_its_code_as_the_message() {
    let app = TestApp::spawn_with(|c| c.max_sockets_per_user = 2).await;
    let user = app.user("Ada", "USER", None).await;
    let inactive = app.user("Gone", "USER", None).await;
    app.pg
        .execute(
            "update herald.users set is_active = false where id = $1",
            &[&inactive],
        )
        .await
        .unwrap();
    let now = herald::auth::unix_now();
    let cases = [
        (Connect::default(), "missing_token"),
        (Connect::token("not-a-jwt"), "invalid_token"),
        (
            Connect::token(&sign(
                json!({"sub": user, "exp": now + 60}),
                "another-secret-entirely",
            )),
            "invalid_token",
        ),
        (
            Connect::token(&sign(
                json!({"sub": user, "exp": now + 60, "nbf": now + 600}),
                SECRET,
            )),
            "invalid_token",
        ),
        (
            Connect::token(&sign(json!({"sub": user, "exp": now - 60}), SECRET)),
            "token_expired",
        ),
        (Connect::token(&app.token(Uuid::new_v4())), "user_not_found"),
        (Connect::token(&app.token(inactive)), "user_inactive"),
    ];
    for (way, expected) in cases {
        let error = connect(app.address, way).await.err();
        assert_eq!(error.as_deref(), Some(expected));
    }
    let _first = online(&app, user).await;
    let _second = online(&app, user).await;
    let third = connect(app.address, Connect::token(&app.token(user)))
        .await
        .err();
    assert_eq!(third.as_deref(), Some("too_many_connections"));
    // A slot comes free when a socket leaves.
    _first.close();
    drop(_first);
    let mut again = None;
    for _ in 0..50 {
        if let Ok(client) = connect(app.address, Connect::token(&app.token(user))).await {
            again = Some(client);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(again.is_some(), "the freed slot was not reusable");
}

#[tokio::test]
async fn the_connect_sequence_pushes_unread_newest_first_then_count_then_success() {
    let app = TestApp::spawn_with(|c| c.pending_limit = 3).await;
    let user = app.user("Ada Lovelace", "USER", None).await;
    let other = app.user("Bob", "USER", None).await;
    let mut ids = Vec::new();
    for title in ["one", "two", "three", "four"] {
        ids.push(app.notify(user, title).await);
    }
    let read = app.notify(user, "read").await;
    app.pg
        .execute(
            "insert into herald.notification_seen (notification_id, user_id) values ($1, $2)",
            &[&read, &user],
        )
        .await
        .unwrap();
    let retracted = app.notify(user, "retracted").await;
    app.pg
        .execute(
            "update herald.notifications set retracted_at = now() where id = $1",
            &[&retracted],
        )
        .await
        .unwrap();
    app.pg
        .execute(
            "insert into herald.notifications (user_id, title, created_at, expires_at) values ($1, 'expired', now() - interval '1 hour', now() - interval '1 minute')",
            &[&user],
        )
        .await
        .unwrap();
    app.notify(other, "not yours").await;

    let mut client = connect(app.address, Connect::token(&app.token(user)))
        .await
        .unwrap();
    let mut pushed = Vec::new();
    for _ in 0..3 {
        let n = client.expect("notification:new").await;
        assert!(
            n["eventId"].is_string(),
            "pending pushes carry their creation event: {n}"
        );
        for field in [
            "id",
            "audience",
            "kind",
            "importance",
            "title",
            "message",
            "actionUrl",
            "data",
            "createdAt",
            "expiresAt",
            "eventId",
        ] {
            assert!(n.get(field).is_some(), "{field} missing from {n}");
        }
        pushed.push(n["title"].as_str().unwrap().to_owned());
    }
    assert_eq!(pushed, ["four", "three", "two"]);
    assert_eq!(
        client.expect("notification:count").await,
        json!({"count": 4})
    );
    let success = client.expect("connection:success").await;
    assert_eq!(success["userId"], json!(user));
    assert_eq!(success["userName"], "Ada Lovelace");
    assert_eq!(success["unreadCount"], 4);
    assert!(success["lastEventId"].is_string());
    assert!(success["timestamp"].as_str().unwrap().ends_with('Z'));
    // Nothing follows the sequence: the next push is one inserted after it.
    let marker = app.notify(user, "marker").await;
    assert_eq!(client.before(marker).await, []);
}

#[tokio::test]
async fn each_audience_reaches_exactly_its_sockets() {
    let app = TestApp::spawn().await;
    let (s1, s2) = (Uuid::new_v4(), Uuid::new_v4());
    let ada = app.user("Ada", "USER", Some(s1)).await;
    let bob = app.user("Bob", "USER", Some(s2)).await;
    let grace = app.user("Grace", "ADMIN", None).await;
    let mut clients = [
        online(&app, ada).await,
        online(&app, bob).await,
        online(&app, grace).await,
    ];

    app.notify(ada, "for ada").await;
    app.broadcast("sector", Some(s1), "for sector one").await;
    app.broadcast("sector", Some(Uuid::new_v4()), "for nobody online")
        .await;
    app.broadcast("admin", None, "for admins").await;
    app.broadcast("all", None, "for all").await;

    // A personal marker to each, inserted after them: what reaches a socket
    // before its marker is all those five broadcasts brought it.
    let mut markers = Vec::new();
    for user in [ada, bob, grace] {
        markers.push(app.notify(user, "marker").await);
    }

    let expected = [
        vec!["for ada", "for sector one", "for all"],
        vec!["for all"],
        vec!["for admins", "for all"],
    ];
    for ((client, marker), expected) in clients.iter_mut().zip(markers).zip(expected) {
        let pushed = client.before(marker).await;
        for (_, data) in pushed.iter().filter(|(e, _)| e == "notification:new") {
            assert!(data["eventId"].as_str().is_some_and(|id| !id.is_empty()));
        }
        assert_eq!(titles(&pushed, "notification:new"), expected);
    }
}

#[tokio::test]
async fn a_committed_row_reaches_the_socket_within_milliseconds() {
    let app = TestApp::spawn().await;
    let user = app.user("Ada", "USER", None).await;
    let mut client = online(&app, user).await;
    let mut took = Vec::new();
    for i in 0..20 {
        // Each insert follows a step at once, so a push that waited for the
        // tail's tick instead of its NOTIFY would take a whole tick.
        app.step().await;
        let started = Instant::now();
        app.notify(user, &format!("n{i}")).await;
        client.wait_for("notification:new").await;
        took.push(started.elapsed());
    }
    took.sort();
    println!(
        "insert+commit -> notification:new: p50 {:?}, max {:?}",
        took[10], took[19]
    );
    // A latency is a claim about the clock; the bound only has to tell a
    // NOTIFY (milliseconds) from a tick (TICK), with room for a busy machine.
    assert!(took[10] < TICK / 2, "median {:?}", took[10]);
}

#[tokio::test]
async fn a_transaction_left_open_delays_only_itself_and_is_delivered_at_its_commit() {
    let app = TestApp::spawn().await;
    let user = app.user("Ada", "USER", None).await;
    let mut client = online(&app, user).await;

    let mut early = crate::helpers::connect(&app.db.url).await;
    let t1 = early.transaction().await.unwrap();
    t1.execute(
        "insert into herald.notifications (user_id, title) values ($1, 'early')",
        &[&user],
    )
    .await
    .unwrap();

    // T1 commits only after T2 arrived: a tail that waited for T1 would
    // never deliver T2, and this wait would fail.
    app.notify(user, "late").await;
    let n = client.wait_for("notification:new").await;
    assert_eq!(n["title"], "late");

    // More steps pass over T1 while it is open; each must keep it pending.
    for _ in 0..3 {
        app.step().await;
    }
    // Straight after a step, so only its NOTIFY, not the tick, can push it soon.
    app.step().await;
    let committed = Instant::now();
    t1.commit().await.unwrap();
    let n = client.wait_for("notification:new").await;
    assert_eq!(n["title"], "early");
    assert!(
        committed.elapsed() < TICK / 2,
        "T1 arrived {:?} after its commit",
        committed.elapsed()
    );

    // A rolled-back insert is never delivered and stalls nothing.
    let t3 = early.transaction().await.unwrap();
    t3.execute(
        "insert into herald.notifications (user_id, title) values ($1, 'rolled back')",
        &[&user],
    )
    .await
    .unwrap();
    t3.rollback().await.unwrap();
    let after = app.notify(user, "after rollback").await;
    let pushed = client.before(after).await;
    assert!(
        titles(&pushed, "notification:new").is_empty(),
        "pushed before the row after the rollback: {pushed:?}"
    );
}

#[tokio::test]
async fn two_devices_both_receive_and_a_read_on_one_reaches_both() {
    let app = TestApp::spawn().await;
    let user = app.user("Ada", "USER", None).await;
    let mut phone = online(&app, user).await;
    let mut laptop = online(&app, user).await;
    let id = app.notify(user, "hello").await;
    for device in [&mut phone, &mut laptop] {
        assert_eq!(device.wait_for("notification:new").await["id"], json!(id));
        assert_eq!(
            device.wait_for("notification:count").await,
            json!({"count": 1})
        );
    }
    let ack = phone
        .ack("mark.read", Some(json!({"notificationId": id})))
        .await;
    assert_eq!(ack["success"], true);
    for device in [&mut phone, &mut laptop] {
        let read = device.wait_for("notification:read").await;
        assert_eq!(read["notificationId"], json!(id));
        assert_eq!(read["readAt"], ack["readAt"]);
        assert!(read["eventId"].is_string());
        assert_eq!(
            device.wait_for("notification:count").await,
            json!({"count": 0})
        );
    }
}

#[tokio::test]
async fn mark_read_acks_success_is_idempotent_and_refuses_what_is_not_yours() {
    let app = TestApp::spawn().await;
    let user = app.user("Ada", "USER", None).await;
    let other = app.user("Bob", "USER", None).await;
    let mine = app.notify(user, "mine").await;
    let theirs = app.notify(other, "theirs").await;
    let client = online(&app, user).await;

    let first = client
        .ack("mark.read", Some(json!({"notificationId": mine})))
        .await;
    assert_eq!(first["success"], true);
    assert_eq!(first["notificationId"], json!(mine));
    assert!(first["readAt"].as_str().unwrap().ends_with('Z'));
    let second = client
        .ack("mark.read", Some(json!({"notificationId": mine})))
        .await;
    assert_eq!(
        second, first,
        "a second read changes nothing and answers the first readAt"
    );
    let seen: i64 = app
        .pg
        .query_one("select count(*) from herald.notification_seen", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(seen, 1);

    for id in [theirs, Uuid::new_v4()] {
        let ack = client
            .ack("mark.read", Some(json!({"notificationId": id})))
            .await;
        assert_eq!(ack["success"], false);
        assert_eq!(ack["error"]["code"], "not_found");
        assert!(ack["error"]["message"].is_string());
    }
    let ack = client
        .ack("mark.delivered", Some(json!({"notificationId": theirs})))
        .await;
    assert_eq!(ack["error"]["code"], "not_found");
}

#[tokio::test]
async fn malformed_payloads_get_invalid_payload_and_the_socket_stays_up() {
    let app = TestApp::spawn().await;
    let user = app.user("Ada", "USER", None).await;
    let mut client = online(&app, user).await;
    let bad = [
        Some(json!("a string")),
        Some(Value::Null),
        None,
        Some(json!({})),
        Some(json!({"notificationId": "not-a-uuid"})),
        Some(json!({"notificationId": 42})),
        Some(json!([1, 2, 3])),
    ];
    for event in ["mark.read", "mark.delivered"] {
        for payload in &bad {
            let ack = client.ack(event, payload.clone()).await;
            assert_eq!(ack["success"], false, "{event} {payload:?}");
            assert_eq!(
                ack["error"]["code"], "invalid_payload",
                "{event} {payload:?}"
            );
        }
    }
    for payload in [
        json!({"limit": 0}),
        json!({"limit": 101}),
        json!({"limit": "ten"}),
        json!({"before": "garbage"}),
        json!({"unreadOnly": "yes"}),
        json!("x"),
    ] {
        let ack = client
            .ack("notifications.list", Some(payload.clone()))
            .await;
        assert_eq!(ack["error"]["code"], "invalid_payload", "{payload}");
    }
    for payload in [json!("x"), json!({}), json!({"token": 5})] {
        let ack = client.ack("auth.refresh", Some(payload.clone())).await;
        assert_eq!(ack["error"]["code"], "invalid_payload", "{payload}");
    }
    assert_eq!(
        client.ack("mark.all_read", Some(json!("x"))).await["error"]["code"],
        "invalid_payload"
    );
    // An unknown event is ignored: the socket answers the next one on it.
    client.raw("42/notifications,99[\"no.such.event\",{}]");
    assert_eq!(
        client.ack("mark.all_read", None).await["success"],
        true,
        "after an unknown event"
    );
    let id = app.notify(user, "still here").await;
    assert_eq!(client.wait_for("notification:new").await["id"], json!(id));
    // A packet that is not Socket.IO at all is a protocol error: like the
    // reference server, herald closes that one connection and nothing else.
    for garbage in [
        "42/notifications,[\"mark.read\",",
        "42/notifications,\"just a string\"",
    ] {
        let broken = online(&app, user).await;
        broken.raw(garbage);
        broken.closed().await;
    }
    assert!(client.is_open());
    let ack = client
        .ack("mark.read", Some(json!({"notificationId": id})))
        .await;
    assert_eq!(ack["success"], true);
}

#[tokio::test]
async fn mark_all_read_and_counts_match_the_unread_query() {
    let app = TestApp::spawn().await;
    let sector = Uuid::new_v4();
    let user = app.user("Ada", "USER", Some(sector)).await;
    let mut client = online(&app, user).await;
    app.notify(user, "a").await;
    app.broadcast("sector", Some(sector), "b").await;
    app.broadcast("all", None, "c").await;
    for _ in 0..3 {
        client.wait_for("notification:new").await;
    }
    // Counts may be coalesced; they settle at what the database says.
    client.settles_at(3).await;
    assert_eq!(app.unread_count(user, Some(sector), false).await, 3);

    let ack = client.ack("mark.all_read", Some(json!({}))).await;
    assert_eq!(ack, json!({"success": true, "count": 3}));
    client.settles_at(0).await;
    let again = client.ack("mark.all_read", None).await;
    assert_eq!(again["count"], 0);

    // A retraction of an unread notification lowers the count.
    let n = app.notify(user, "soon retracted").await;
    client.settles_at(1).await;
    app.pg
        .execute(
            "update herald.notifications set retracted_at = now() where id = $1",
            &[&n],
        )
        .await
        .unwrap();
    assert_eq!(
        client.wait_for("notification:retracted").await["notificationId"],
        json!(n)
    );
    client.settles_at(0).await;
    assert_eq!(app.unread_count(user, Some(sector), false).await, 0);

    // So does an expiry. Expiry is a matter of the clock: the row lives two
    // seconds (time for its count to go out first), and the watcher looks
    // once a second, so the wait for the fall is generous.
    app.pg
        .execute("insert into herald.notifications (user_id, title, expires_at) values ($1, 'brief', now() + interval '2 seconds')", &[&user])
        .await
        .unwrap();
    client.settles_at(1).await;
    client.settles_within(0, Duration::from_secs(15)).await;
}

#[tokio::test]
async fn notifications_list_pages_with_a_cursor_and_filters_unread() {
    let app = TestApp::spawn().await;
    let user = app.user("Ada", "USER", None).await;
    let mut ids = Vec::new();
    for i in 0..25 {
        ids.push(app.notify(user, &format!("n{i:02}")).await);
    }
    let client = online(&app, user).await;
    client
        .ack("mark.read", Some(json!({"notificationId": ids[24]})))
        .await;

    let mut seen = Vec::new();
    let mut cursor = Value::Null;
    let mut pages = 0;
    loop {
        let mut request = json!({"limit": 10});
        if !cursor.is_null() {
            request["before"] = cursor.clone();
        }
        let page = client.ack("notifications.list", Some(request)).await;
        assert_eq!(page["success"], true);
        pages += 1;
        for item in page["items"].as_array().unwrap() {
            assert!(item.get("readAt").is_some());
            seen.push(item["title"].as_str().unwrap().to_owned());
        }
        cursor = page["nextCursor"].clone();
        if cursor.is_null() {
            break;
        }
    }
    assert_eq!(pages, 3);
    let expected: Vec<String> = (0..25).rev().map(|i| format!("n{i:02}")).collect();
    assert_eq!(seen, expected);

    // A page that ends exactly at the last item has no next cursor.
    let page = client
        .ack("notifications.list", Some(json!({"limit": 25})))
        .await;
    assert_eq!(page["items"].as_array().unwrap().len(), 25);
    assert_eq!(page["nextCursor"], Value::Null);
    let first = client
        .ack("notifications.list", Some(json!({"limit": 1})))
        .await;
    assert!(first["items"][0]["readAt"].is_string(), "n24 was read");

    let unread = client
        .ack(
            "notifications.list",
            Some(json!({"unreadOnly": true, "limit": 100})),
        )
        .await;
    let items = unread["items"].as_array().unwrap();
    assert_eq!(items.len(), 24);
    assert!(items.iter().all(|i| i["readAt"].is_null()));
    let default = client.ack("notifications.list", None).await;
    assert_eq!(default["items"].as_array().unwrap().len(), 20);
}

#[tokio::test]
async fn mark_delivered_records_delivery_and_pushes_are_recorded_as_sent() {
    let app = TestApp::spawn().await;
    let user = app.user("Ada", "USER", None).await;
    let mut client = online(&app, user).await;
    let id = app.notify(user, "track me").await;
    client.wait_for("notification:new").await;

    let status = delivery_row(&app, id, user).await;
    assert_eq!(status, Some(("SENT".to_owned(), true)));

    let ack = client
        .ack("mark.delivered", Some(json!({"notificationId": id})))
        .await;
    assert_eq!(ack, json!({"success": true, "notificationId": id}));
    let row = app
        .pg
        .query_one("select status, sent_at is not null, delivered_at is not null from herald.notification_deliveries where notification_id = $1", &[&id])
        .await
        .unwrap();
    assert_eq!(
        (
            row.get::<_, String>(0),
            row.get::<_, bool>(1),
            row.get::<_, bool>(2)
        ),
        ("DELIVERED".to_owned(), true, true)
    );

    // A broadcast records one row per online recipient.
    let bob = app.user("Bob", "USER", None).await;
    let mut bob_client = online(&app, bob).await;
    let all = app.broadcast("all", None, "everyone").await;
    client.wait_for("notification:new").await;
    bob_client.wait_for("notification:new").await;
    let mut recipients: HashSet<Uuid> = HashSet::new();
    for _ in 0..100 {
        recipients = column(
            &app.pg,
            "select user_id from herald.notification_deliveries where notification_id = $1 and status = 'SENT'",
            &[&all],
        )
        .await
        .into_iter()
        .collect();
        if recipients.len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(recipients, HashSet::from([user, bob]));
}

/// A pair can be recorded before herald's `SENT` for it: a client that
/// acknowledges on receipt, another instance, or (here) a row written with
/// the notification itself. The writer's plain insert meets it and the
/// batch goes `on conflict do nothing` instead: that row keeps its status,
/// the other recipient's `SENT` lands, and the next batch goes `on
/// conflict` without trying a plain insert first.
#[tokio::test]
async fn a_pair_recorded_before_its_sent_keeps_its_row_and_the_next_batch_skips_recorded_pairs_at_once()
 {
    let app = TestApp::spawn().await;
    let (ada, bob) = (
        app.user("Ada", "USER", None).await,
        app.user("Bob", "USER", None).await,
    );
    let (mut ada_client, mut bob_client) = (online(&app, ada).await, online(&app, bob).await);

    let mut producer = app.db.client().await;
    let transaction = producer.transaction().await.unwrap();
    let all: Uuid = transaction
        .query_one(
            "insert into herald.notifications (audience, title) values ('all', 'everyone') returning id",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    transaction
        .execute(
            "insert into herald.notification_deliveries (notification_id, user_id, status, delivered_at)
             values ($1, $2, 'DELIVERED', now())",
            &[&all, &ada],
        )
        .await
        .unwrap();
    transaction.commit().await.unwrap();
    ada_client.wait_for("notification:new").await;
    bob_client.wait_for("notification:new").await;

    app.metric_reaches(
        r#"herald_delivery_batches_total{method="insert_then_on_conflict"}"#,
        1.0,
    )
    .await;
    let rows: Vec<(Uuid, String, bool)> = app
        .pg
        .query(
            "select user_id, status, sent_at is not null from herald.notification_deliveries
              where notification_id = $1 order by status",
            &[&all],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1), row.get(2)))
        .collect();
    assert_eq!(
        rows,
        vec![
            (ada, "DELIVERED".to_owned(), false),
            (bob, "SENT".to_owned(), true)
        ]
    );

    let next = app.notify(bob, "after").await;
    bob_client.wait_for("notification:new").await;
    assert_eq!(
        delivery_row(&app, next, bob).await,
        Some(("SENT".to_owned(), true))
    );
    app.metric_reaches(
        r#"herald_delivery_batches_total{method="on_conflict"}"#,
        1.0,
    )
    .await;
    assert_eq!(
        app.metric(r#"herald_delivery_batches_total{method="insert"}"#)
            .await,
        0.0,
        "no plain insert was tried after the conflict"
    );
}

/// A connect pushes its user's unread notifications again, and those that
/// reached another of their sockets have a row already: their batch goes
/// `on conflict do nothing` at once, without a plain insert failing first,
/// and the first `SENT` row stays as it was.
#[tokio::test]
async fn pushes_a_connect_repeats_are_recorded_on_conflict_at_once() {
    let app = TestApp::spawn().await;
    let ada = app.user("Ada", "USER", None).await;
    let mut first_tab = online(&app, ada).await;
    let id = app.notify(ada, "seen live").await;
    first_tab.wait_for("notification:new").await;
    app.metric_reaches(r#"herald_delivery_batches_total{method="insert"}"#, 1.0)
        .await;
    let first_sent = sent_at(&app, id, ada).await;

    let _second_tab = online(&app, ada).await;
    app.metric_reaches(
        r#"herald_delivery_batches_total{method="on_conflict"}"#,
        1.0,
    )
    .await;
    assert_eq!(
        app.metric(r#"herald_delivery_batches_total{method="insert_then_on_conflict"}"#)
            .await,
        0.0,
        "no plain insert failed"
    );
    assert_eq!(sent_at(&app, id, ada).await, first_sent);
}

async fn sent_at(app: &TestApp, notification: Uuid, user: Uuid) -> time::OffsetDateTime {
    app.pg
        .query_one(
            "select sent_at from herald.notification_deliveries
              where notification_id = $1 and user_id = $2",
            &[&notification, &user],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn auth_refresh_extends_the_session_only_for_the_same_user() {
    let app = TestApp::spawn().await;
    let user = app.user("Ada", "USER", None).await;
    let other = app.user("Bob", "USER", None).await;
    let client = online(&app, user).await;
    let fresh = app.jwt.sign(user, Duration::from_secs(7200)).unwrap();
    let ack = client
        .ack("auth.refresh", Some(json!({"token": fresh})))
        .await;
    assert_eq!(ack["success"], true);
    let expires = time::OffsetDateTime::parse(
        ack["expiresAt"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    let remaining = expires - time::OffsetDateTime::now_utc();
    assert!(remaining > time::Duration::minutes(110), "{remaining}");
    let ack = client
        .ack("auth.refresh", Some(json!({"token": app.token(other)})))
        .await;
    assert_eq!(ack["error"]["code"], "invalid_token");
    let ack = client
        .ack("auth.refresh", Some(json!({"token": "garbage"})))
        .await;
    assert_eq!(ack["error"]["code"], "invalid_token");
}

#[tokio::test]
async fn deactivation_disconnects_and_a_sector_change_moves_rooms() {
    let app = TestApp::spawn().await;
    let (old_sector, new_sector) = (Uuid::new_v4(), Uuid::new_v4());
    let user = app.user("Ada", "USER", Some(old_sector)).await;
    let mut client = online(&app, user).await;

    app.pg
        .execute(
            "update herald.users set sector_id = $2 where id = $1",
            &[&user, &new_sector],
        )
        .await
        .unwrap();
    // The move is applied in log order: anything inserted after it is routed by it.
    app.broadcast("sector", Some(old_sector), "old sector")
        .await;
    app.broadcast("sector", Some(new_sector), "new sector")
        .await;
    let marker = app.notify(user, "marker").await;
    let pushed = client.before(marker).await;
    assert_eq!(titles(&pushed, "notification:new"), ["new sector"]);
    assert!(client.is_open(), "a sector change must not reconnect");

    app.pg
        .execute(
            "update herald.users set role = 'ADMIN' where id = $1",
            &[&user],
        )
        .await
        .unwrap();
    app.broadcast("admin", None, "for admins").await;
    assert_eq!(
        client.wait_for("notification:new").await["title"],
        "for admins"
    );

    app.pg
        .execute(
            "update herald.users set is_active = false where id = $1",
            &[&user],
        )
        .await
        .unwrap();
    client.closed().await;
    let again = connect(app.address, Connect::token(&app.token(user)))
        .await
        .err();
    assert_eq!(again.as_deref(), Some("user_inactive"));
}

/// A socket whose snapshot is older than the tail's recent steps catches
/// up from the log; that read must keep the changes to its user and what a
/// move lets them see, or a socket connecting while its user is moved or
/// deactivated would join the wrong rooms or stay connected.
#[tokio::test]
async fn a_catch_up_read_from_the_log_keeps_the_changes_to_its_user() {
    let app = TestApp::spawn().await;
    let (old_sector, new_sector) = (Uuid::new_v4(), Uuid::new_v4());
    let user = app.user("Ada", "USER", Some(old_sector)).await;
    let other = app.user("Bob", "USER", Some(old_sector)).await;
    let pool = herald::db::pool(&app.db.url, 2).unwrap();
    let client = pool.get().await.unwrap();
    let inbox = herald::db::inbox::Inbox {
        user_id: user,
        sector_id: Some(old_sector),
        is_admin: false,
    };
    let snapshot = || async {
        let client = pool.get().await.unwrap();
        herald::db::current_snapshot(&**client).await.unwrap()
    };
    let titles_between = |from: herald::db::Snapshot, to: herald::db::Snapshot| {
        let client = &client;
        async move {
            let from = herald::eventlog::Position::at(from);
            herald::db::events::catch_up(client, &inbox, &from, &to)
                .await
                .unwrap()
                .iter()
                .map(|e| {
                    let payload: serde_json::Value = serde_json::from_str(e.payload.get()).unwrap();
                    let title = payload["title"].as_str().map(str::to_owned);
                    title.unwrap_or_else(|| e.kind.as_str().to_owned())
                })
                .collect::<Vec<_>>()
        }
    };

    let start = snapshot().await;
    app.broadcast("sector", Some(old_sector), "old sector")
        .await;
    app.broadcast("sector", Some(new_sector), "new sector")
        .await;
    app.broadcast("admin", None, "for admins").await;
    app.notify(other, "for Bob").await;
    // Without a change to the user, only what their rooms reach.
    assert_eq!(
        titles_between(start.clone(), snapshot().await).await,
        ["old sector"]
    );

    let moved = snapshot().await;
    app.pg
        .execute(
            "update herald.users set sector_id = $2 where id = $1",
            &[&user, &new_sector],
        )
        .await
        .unwrap();
    app.pg
        .execute(
            "update herald.users set role = 'USER' where id = $1",
            &[&other],
        )
        .await
        .unwrap();
    app.broadcast("sector", Some(new_sector), "after the move")
        .await;
    app.broadcast("admin", None, "admins after the move").await;
    // The change to the user, and every room's events after it: the
    // catch-up decides them against the rooms the move left the user in.
    // Bob's change is not Ada's business.
    assert_eq!(
        titles_between(moved, snapshot().await).await,
        ["user.updated", "after the move", "admins after the move"]
    );

    let deactivated = snapshot().await;
    app.pg
        .execute(
            "update herald.users set is_active = false where id = $1",
            &[&user],
        )
        .await
        .unwrap();
    assert_eq!(
        titles_between(deactivated, snapshot().await).await,
        ["user.updated"]
    );
}

#[tokio::test]
async fn nothing_is_lost_or_doubled_between_the_pending_push_and_the_live_stream() {
    let app = TestApp::spawn().await;
    let user = app.user("Ada", "USER", None).await;
    // A writer inserts while clients connect; each client must see every
    // notification exactly once, through the pending push or live. Client
    // `i` connects once `25 * i` rows are in, so the connects are spread
    // over the stream by what has been written, not by a clock.
    const ROWS: usize = 150;
    let (progress, written) = tokio::sync::watch::channel(0_usize);
    let writer = {
        let url = app.db.url.clone();
        tokio::spawn(async move {
            let pg = crate::helpers::connect(&url).await;
            let mut ids = Vec::new();
            for i in 0..ROWS {
                let id: Uuid = pg
                    .query_one("insert into herald.notifications (user_id, title) values ($1, $2) returning id", &[&user, &format!("w{i}")])
                    .await
                    .unwrap()
                    .get(0);
                ids.push(id);
                progress.send_replace(ids.len());
            }
            ids
        })
    };
    let last = format!("w{}", ROWS - 1);
    let app = std::sync::Arc::new(app);
    let mut readers = Vec::new();
    for i in 0..6 {
        let app = app.clone();
        let mut written = written.clone();
        let last = last.clone();
        readers.push(tokio::spawn(async move {
            written.wait_for(|&n| n >= 25 * i).await.unwrap();
            let mut client = connect(app.address, Connect::token(&app.token(user)))
                .await
                .unwrap();
            let (mut pending, mut live) = (Vec::new(), Vec::new());
            let (mut synced, mut seen_last) = (false, false);
            // The pending push counts other readers' markers among its 50.
            let mut pushed_on_connect = 0;
            // The last row written is the last in the log: once it and
            // connection:success are in, everything else has been pushed.
            // (Other readers' markers pass by too; they are not the writer's.)
            let written_row =
                |data: &Value| data["title"].as_str().is_some_and(|t| t.starts_with('w'));
            while !(synced && seen_last) {
                let (event, data) = client.next().await;
                if event == "notification:new" && !synced {
                    pushed_on_connect += 1;
                }
                if event == "notification:new" && written_row(&data) {
                    let id: Uuid = data["id"].as_str().unwrap().parse().unwrap();
                    seen_last |= data["title"] == last.as_str();
                    if synced {
                        live.push(id)
                    } else {
                        pending.push(id)
                    }
                } else if event == "connection:success" {
                    synced = true;
                }
            }
            // Anything the pending push and the stream both carried would
            // have arrived by a marker inserted now.
            let marker = app.notify(user, "marker").await;
            for (event, data) in client.before(marker).await {
                if event == "notification:new" && written_row(&data) {
                    live.push(data["id"].as_str().unwrap().parse().unwrap());
                }
            }
            (pending, live, pushed_on_connect)
        }));
    }
    let written: Vec<Uuid> = writer.await.unwrap();
    for reader in readers {
        let (pending, live, pushed_on_connect) = reader.await.unwrap();
        let received: Vec<Uuid> = pending.iter().chain(&live).copied().collect();
        let unique: HashSet<Uuid> = received.iter().copied().collect();
        assert_eq!(
            unique.len(),
            received.len(),
            "a notification was delivered twice"
        );
        // The pending push holds the 50 newest unread at connect; everything
        // from the oldest of them on must have arrived, in one way or the other.
        let from = if pushed_on_connect < 50 {
            0
        } else {
            pending
                .iter()
                .filter_map(|id| written.iter().position(|w| w == id))
                .min()
                .unwrap()
        };
        let expected: HashSet<Uuid> = written[from..].iter().copied().collect();
        assert_eq!(
            unique,
            expected,
            "pending {} + live {} != written[{from}..]",
            pending.len(),
            live.len()
        );
    }
}

#[tokio::test]
async fn websocket_upgrades_and_polling_from_foreign_origins_are_refused() {
    let app = TestApp::spawn().await;
    let user = app.user("Ada", "USER", None).await;
    let token = app.token(user);
    let foreign = connect(
        app.address,
        Connect {
            headers: vec![("origin".into(), "http://evil.example".into())],
            ..Connect::token(&token)
        },
    )
    .await;
    assert!(
        foreign.err().is_some_and(|e| e.contains("403")),
        "a foreign origin was let in"
    );
    let mut allowed = connect(
        app.address,
        Connect {
            headers: vec![("origin".into(), ORIGIN.into())],
            ..Connect::token(&token)
        },
    )
    .await
    .expect("allowed origin");
    allowed.connected().await;

    let http = reqwest::Client::new();
    let polling = app.url("/socket.io/?EIO=4&transport=polling");
    let refused = http
        .get(&polling)
        .header("origin", "http://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);
    let body: Value = refused.json().await.unwrap();
    assert!(body["error"]["code"].is_string());
    let ok = http
        .get(&polling)
        .header("origin", ORIGIN)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(
        ok.headers().get("access-control-allow-origin").unwrap(),
        ORIGIN
    );
    // Non-browser clients send no Origin and are let through.
    assert_eq!(http.get(&polling).send().await.unwrap().status(), 200);
}

#[tokio::test]
async fn batched_counts_equal_the_per_user_unread_query() {
    let app = TestApp::spawn().await;
    let (s1, s2) = (Uuid::new_v4(), Uuid::new_v4());
    let mut inboxes = Vec::new();
    for (i, (sector, role)) in [
        (Some(s1), "USER"),
        (Some(s1), "ADMIN"),
        (Some(s2), "USER"),
        (None, "USER"),
        (None, "SUPER_ADMIN"),
    ]
    .into_iter()
    .enumerate()
    {
        let user = app.user(&format!("u{i}"), role, sector).await;
        inboxes.push(herald::db::inbox::Inbox {
            user_id: user,
            sector_id: sector,
            is_admin: role != "USER",
        });
    }
    // A mix: personal, sector, admin and all notifications; some read,
    // retracted, expired; reads of broadcasts and of other sectors' ones.
    let mut ids = Vec::new();
    for (i, inbox) in inboxes.iter().enumerate() {
        for k in 0..=i {
            ids.push(app.notify(inbox.user_id, &format!("p{k}")).await);
        }
    }
    for (audience, sector) in [
        ("sector", Some(s1)),
        ("sector", Some(s1)),
        ("sector", Some(s2)),
        ("admin", None),
        ("all", None),
        ("all", None),
    ] {
        ids.push(app.broadcast(audience, sector, "b").await);
    }
    app.pg
        .execute(
            "update herald.notifications set retracted_at = now() where id = $1",
            &[&ids[ids.len() - 1]],
        )
        .await
        .unwrap();
    app.pg
        .execute("insert into herald.notifications (audience, title, created_at, expires_at) values ('all', 'gone', now() - interval '2 hours', now() - interval '1 hour')", &[])
        .await
        .unwrap();
    for (n, inbox) in ids.iter().zip(inboxes.iter().cycle()).step_by(3) {
        // Some of these are not addressed to the reader: receipts that must not count.
        app.pg
            .execute("insert into herald.notification_seen (notification_id, user_id) values ($1, $2) on conflict do nothing", &[n, &inbox.user_id])
            .await
            .unwrap();
    }
    let pool = herald::db::pool(&app.db.url, 1).unwrap();
    let client = pool.get().await.unwrap();
    let batched: std::collections::HashMap<Uuid, i64> =
        herald::db::inbox::unread_counts(&client, &inboxes)
            .await
            .unwrap()
            .into_iter()
            .collect();
    for inbox in &inboxes {
        let single = inbox.unread_count(&client).await.unwrap();
        assert_eq!(batched[&inbox.user_id], single, "{inbox:?}");
    }
}

#[tokio::test]
async fn pushes_made_by_the_connect_sequence_are_recorded_as_sent_too() {
    let app = TestApp::spawn().await;
    let user = app.user("Ada", "USER", None).await;
    let pending = app.notify(user, "waiting for Ada").await;
    let mut client = connect(app.address, Connect::token(&app.token(user)))
        .await
        .unwrap();
    assert_eq!(
        client.expect("notification:new").await["id"],
        json!(pending)
    );
    let recorded = delivery_row(&app, pending, user)
        .await
        .is_some_and(|(status, _)| status == "SENT");
    assert!(recorded, "the pending push left no SENT row");
}

#[tokio::test]
async fn one_transaction_to_several_audiences_reaches_each_socket_in_commit_order() {
    let app = TestApp::spawn().await;
    let sector = Uuid::new_v4();
    let ada = app.user("Ada", "USER", Some(sector)).await;
    let grace = app.user("Grace", "USER", Some(sector)).await;
    let mut ada_client = online(&app, ada).await;
    let mut grace_client = online(&app, grace).await;

    // Broadcasts, one personal notification between them, more broadcasts:
    // herald sends consecutive events to one audience together, and must
    // keep each socket's order the log's.
    let titles = ["s1", "s2", "ada", "s3", "s4"];
    app.pg
        .batch_execute(&format!(
            "begin;
             insert into herald.notifications (sector_id, title) values ('{sector}', 's1');
             insert into herald.notifications (sector_id, title) values ('{sector}', 's2');
             insert into herald.notifications (user_id, title) values ('{ada}', 'ada');
             insert into herald.notifications (sector_id, title) values ('{sector}', 's3');
             insert into herald.notifications (sector_id, title) values ('{sector}', 's4');
             commit;"
        ))
        .await
        .unwrap();
    let mut seen = Vec::new();
    while seen.len() < titles.len() {
        let n = ada_client.wait_for("notification:new").await;
        seen.push(n["title"].as_str().unwrap().to_owned());
    }
    assert_eq!(seen, titles);
    let mut seen = Vec::new();
    while seen.len() < 4 {
        let n = grace_client.wait_for("notification:new").await;
        seen.push(n["title"].as_str().unwrap().to_owned());
    }
    assert_eq!(seen, ["s1", "s2", "s3", "s4"]);
}

/// A long-polling session lives across requests: the handshake makes it,
/// and the requests that carry its sid afterwards find it.
#[tokio::test]
async fn a_polling_session_is_found_by_the_requests_after_its_handshake() {
    let app = TestApp::spawn().await;
    let user = app.user("Ada", "USER", None).await;
    let http = reqwest::Client::new();
    let open = http
        .get(app.url("/socket.io/?EIO=4&transport=polling"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let handshake: Value = serde_json::from_str(open.trim_start_matches('0')).unwrap();
    let sid = handshake["sid"].as_str().unwrap();
    let session = app.url(&format!("/socket.io/?EIO=4&transport=polling&sid={sid}"));
    let posted = http
        .post(&session)
        .body(format!(
            "40/notifications,{}",
            json!({"token": app.token(user)})
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(posted.status(), 200, "{}", posted.text().await.unwrap());
    // Each poll answers with what is queued; the sequence ends with connection:success.
    let mut received = String::new();
    for _ in 0..20 {
        let polled = http.get(&session).send().await.unwrap();
        assert_eq!(polled.status(), 200);
        received.push_str(&polled.text().await.unwrap());
        if received.contains("connection:success") {
            break;
        }
    }
    assert!(received.contains("connection:success"), "{received}");
}

/// Inserts, in one statement, notifications to `user` that are dead on
/// arrival: personal and to everyone, already retracted or already expired.
async fn insert_dead_on_arrival(app: &TestApp, user: Uuid) {
    app.pg
        .execute(
            "insert into herald.notifications (audience, user_id, title, created_at, expires_at, retracted_at)
             values ('user', $1, 'retracted', now(), null, now()),
                    ('all', null, 'retracted broadcast', now(), null, now()),
                    ('user', $1, 'expired', now() - interval '2 hours', now() - interval '1 hour', null),
                    ('all', null, 'expired broadcast', now() - interval '2 hours', now() - interval '1 hour', null)",
            &[&user],
        )
        .await
        .unwrap();
}

/// The ids of the `notification:new` events before `connection:success`.
async fn pushed_on_connect(client: &mut SioClient) -> Vec<Value> {
    let mut ids = Vec::new();
    loop {
        let (event, data) = client.next().await;
        match event.as_str() {
            "notification:new" => ids.push(data["id"].clone()),
            "connection:success" => return ids,
            _ => {}
        }
    }
}

#[tokio::test]
async fn a_notification_inserted_already_retracted_or_expired_is_never_pushed() {
    let app = TestApp::spawn().await;
    let user = app.user("Ada", "USER", None).await;
    let mut live = online(&app, user).await;
    let mut earlier = connect(app.address, Connect::token(&app.token(user)))
        .await
        .unwrap();
    let position = earlier.connected().await["lastEventId"]
        .as_str()
        .unwrap()
        .to_owned();
    earlier.close();
    drop(earlier);

    insert_dead_on_arrival(&app, user).await;
    let marker = app.notify(user, "alive").await;

    // Live: the first push after them is the live row inserted after them.
    assert_eq!(live.wait_for("notification:new").await["id"], json!(marker));
    // Replay: resuming from before them replays the live row only.
    let mut resumed = connect(
        app.address,
        Connect {
            auth: Some(json!({"token": app.token(user), "lastEventId": position})),
            ..Connect::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(pushed_on_connect(&mut resumed).await, [json!(marker)]);
    // The pending push of a fresh connect: the same.
    let mut fresh = connect(app.address, Connect::token(&app.token(user)))
        .await
        .unwrap();
    assert_eq!(pushed_on_connect(&mut fresh).await, [json!(marker)]);
}

#[tokio::test]
async fn a_retracted_or_expired_notification_cannot_be_read_or_acknowledged() {
    let app = TestApp::spawn().await;
    let user = app.user("Ada", "USER", None).await;
    let mut client = online(&app, user).await;
    let retracted = app.notify(user, "withdrawn").await;
    assert_eq!(
        client.wait_for("notification:new").await["id"],
        json!(retracted)
    );
    assert_eq!(
        delivery_row(&app, retracted, user).await,
        Some(("SENT".to_owned(), true))
    );
    app.pg
        .execute(
            "update herald.notifications set retracted_at = now() where id = $1",
            &[&retracted],
        )
        .await
        .unwrap();
    client.wait_for("notification:retracted").await;
    let expired: Uuid = app
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
        for event in ["mark.read", "mark.delivered"] {
            let ack = client.ack(event, Some(json!({"notificationId": id}))).await;
            assert_eq!(ack["success"], false, "{event} {id}: {ack}");
            assert_eq!(ack["error"]["code"], "not_found", "{event} {id}: {ack}");
        }
    }
    // Nothing was written: no receipt, no read event, no acknowledgement.
    let ids = vec![retracted, expired];
    let written = app
        .pg
        .query_one(
            "select (select count(*) from herald.notification_seen where notification_id = any ($1)),
                    (select count(*) from herald.events where kind = 'notification.read'),
                    (select count(*) from herald.notification_deliveries
                      where notification_id = any ($1) and (status <> 'SENT' or delivered_at is not null)),
                    (select count(*) from herald.notification_deliveries where notification_id = $2)",
            &[&ids, &expired],
        )
        .await
        .unwrap();
    assert_eq!(
        (0..4).map(|i| written.get::<_, i64>(i)).collect::<Vec<_>>(),
        [0, 0, 0, 0]
    );
    assert!(client.is_open());
}
