//! Inbox state over Socket.IO: archive, snooze, preferences and watched
//! view counts, each written through a client event and seen by every
//! socket of the user through the log.

use std::time::Duration;

use serde_json::{Value, json};
use uuid::Uuid;

use crate::client::{Connect, SioClient, connect};
use crate::helpers::{TestApp, TwoInstances, column, insert_user, resume};

async fn online(app: &TestApp, user: Uuid) -> SioClient {
    let mut client = connect(app.address, Connect::token(&app.token(user)))
        .await
        .expect("connects");
    client.connected().await;
    client
}

async fn notify_kind(
    pg: &tokio_postgres::Client,
    user: Uuid,
    kind: &str,
    importance: &str,
) -> Uuid {
    pg.query_one(
        "insert into herald.notifications (user_id, title, kind, importance)
         values ($1, 't', $2, $3) returning id",
        &[&user, &kind, &importance],
    )
    .await
    .expect("insert notification")
    .get(0)
}

fn code(ack: &Value) -> &str {
    ack["error"]["code"].as_str().unwrap_or("none")
}

#[tokio::test]
async fn archiving_reads_it_on_every_device_and_unarchiving_leaves_it_read() {
    let app = TestApp::spawn().await;
    let user = app.user("Ada", "USER", None).await;
    let other = app.user("Bob", "USER", None).await;
    let (mut phone, mut laptop) = (online(&app, user).await, online(&app, user).await);
    let id = app.notify(user, "to archive").await;
    for device in [&mut phone, &mut laptop] {
        device.wait_for("notification:new").await;
        device.settles_at(1).await;
    }

    let ack = phone
        .ack("mark.archived", Some(json!({"notificationId": id})))
        .await;
    assert_eq!(ack["success"], true, "{ack}");
    assert_eq!(ack["notificationId"], id.to_string());
    let archived_at = ack["archivedAt"].as_str().expect("archivedAt").to_owned();
    for device in [&mut phone, &mut laptop] {
        let read = device.wait_for("notification:read").await;
        assert_eq!(read["notificationId"], id.to_string());
        let archived = device.wait_for("notification:archived").await;
        assert_eq!(archived["notificationId"], id.to_string());
        assert_eq!(archived["archivedAt"], archived_at.as_str());
        assert!(archived["eventId"].is_string());
        device.settles_at(0).await;
    }
    let again = phone
        .ack("mark.archived", Some(json!({"notificationId": id})))
        .await;
    assert_eq!(
        again["archivedAt"],
        archived_at.as_str(),
        "the first archive's time"
    );

    let ack = laptop
        .ack("mark.unarchived", Some(json!({"notificationId": id})))
        .await;
    assert_eq!(ack, json!({"success": true, "notificationId": id}));
    let unarchived = phone.wait_for("notification:unarchived").await;
    assert_eq!(unarchived["notificationId"], id.to_string());
    let read: i64 = app
        .pg
        .query_one(
            "select count(*) from herald.notification_seen where notification_id = $1",
            &[&id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(read, 1, "unarchiving leaves it read");

    // archive.all_read archives the read ones only.
    let unread = app.notify(user, "still unread").await;
    phone.wait_for("notification:new").await;
    let ack = phone.ack("archive.all_read", Some(json!({}))).await;
    assert_eq!(ack, json!({"success": true, "count": 1}));
    let archived: Vec<Uuid> = column(
        &app.pg,
        "select notification_id from herald.notification_archived",
        &[],
    )
    .await;
    assert_eq!(archived, vec![id], "{unread} is unread and stays");

    let theirs = app.notify(other, "not Ada's").await;
    let refused = phone
        .ack("mark.archived", Some(json!({"notificationId": theirs})))
        .await;
    assert_eq!(code(&refused), "not_found");
    let refused = phone.ack("mark.archived", Some(json!({"id": 1}))).await;
    assert_eq!(code(&refused), "invalid_payload");
}

#[tokio::test]
async fn a_snooze_hides_it_everywhere_and_its_end_shows_it_again_once() {
    let app = TestApp::spawn().await;
    let user = app.user("Ada", "USER", None).await;
    let (mut phone, mut laptop) = (online(&app, user).await, online(&app, user).await);
    let id = app.notify(user, "later").await;
    for device in [&mut phone, &mut laptop] {
        device.wait_for("notification:new").await;
        device.settles_at(1).await;
    }

    let now = time::OffsetDateTime::now_utc();
    let rfc = |at: time::OffsetDateTime| herald::wire::rfc3339(at);
    for (until, why) in [
        ("tomorrow".to_owned(), "not a time"),
        (rfc(now - time::Duration::minutes(1)), "in the past"),
        (rfc(now + time::Duration::days(91)), "beyond 90 days"),
    ] {
        let refused = phone
            .ack(
                "mark.snoozed",
                Some(json!({"notificationId": id, "until": until})),
            )
            .await;
        assert_eq!(code(&refused), "invalid_payload", "{why}: {refused}");
    }

    // Long enough to see it hidden first; the wake-up is herald's own.
    let until = rfc(time::OffsetDateTime::now_utc() + time::Duration::seconds(2));
    let ack = phone
        .ack(
            "mark.snoozed",
            Some(json!({"notificationId": id, "until": until})),
        )
        .await;
    assert_eq!(ack["success"], true, "{ack}");
    for device in [&mut phone, &mut laptop] {
        let snoozed = device.wait_for("notification:snoozed").await;
        assert_eq!(snoozed["notificationId"], id.to_string());
        assert!(snoozed["eventId"].is_string());
        device.settles_at(0).await;
    }
    let count: i64 = app
        .pg
        .query_one(
            "select count(*) from herald.notification_snoozed where notification_id = $1",
            &[&id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, 1);

    for device in [&mut phone, &mut laptop] {
        let again = device
            .wait_for_within("notification:new", Duration::from_secs(10))
            .await;
        assert_eq!(
            again["id"],
            id.to_string(),
            "shown again when the snooze ends"
        );
        device.settles_at(1).await;
    }
    let woke: Vec<Value> = column(
        &app.pg,
        "select payload from herald.events where kind = 'notification.unsnoozed'",
        &[],
    )
    .await;
    assert_eq!(woke.len(), 1, "one wake-up");
    assert_eq!(woke[0]["woke"], true);

    // An early end shows it at once; a read one cannot be snoozed.
    let until = rfc(time::OffsetDateTime::now_utc() + time::Duration::hours(1));
    phone
        .ack(
            "mark.snoozed",
            Some(json!({"notificationId": id, "until": until})),
        )
        .await;
    phone.wait_for("notification:snoozed").await;
    phone.settles_at(0).await;
    let ack = laptop
        .ack("mark.unsnoozed", Some(json!({"notificationId": id})))
        .await;
    assert_eq!(ack, json!({"success": true, "notificationId": id}));
    let again = phone.wait_for("notification:new").await;
    assert_eq!(again["id"], id.to_string());
    phone.settles_at(1).await;
    phone
        .ack("mark.read", Some(json!({"notificationId": id})))
        .await;
    let refused = phone
        .ack(
            "mark.snoozed",
            Some(json!({"notificationId": id, "until": until})),
        )
        .await;
    assert_eq!(code(&refused), "invalid_payload", "{refused}");
}

#[tokio::test]
async fn a_muted_kind_is_stored_but_not_pushed_or_counted_unless_urgent() {
    let app = TestApp::spawn().await;
    let user = app.user("Ada", "USER", None).await;
    let mut phone = online(&app, user).await;
    let mut laptop = online(&app, user).await;

    let ack = phone
        .ack(
            "preferences.set",
            Some(json!({"kindPattern": "order.*", "channel": "IN_APP", "enabled": false})),
        )
        .await;
    let list = json!([{"kindPattern": "order.*", "channel": "IN_APP", "enabled": false}]);
    assert_eq!(ack, json!({"success": true, "preferences": list}));
    let updated = laptop.wait_for("preferences:updated").await;
    assert_eq!(updated["preferences"], list);
    phone.wait_for("preferences:updated").await;

    let muted = notify_kind(&app.pg, user, "order.shipped", "high").await;
    let urgent = notify_kind(&app.pg, user, "order.late", "urgent").await;
    let marker = notify_kind(&app.pg, user, "billing.due", "normal").await;
    let before = phone.before(marker).await;
    let shown: Vec<&Value> = before
        .iter()
        .filter(|(event, _)| event == "notification:new")
        .map(|(_, data)| &data["id"])
        .collect();
    assert_eq!(shown, vec![&json!(urgent)], "{muted} is muted: {before:?}");
    phone.settles_at(2).await;

    // A reconnect leaves it out too, and its count.
    let mut tablet = connect(app.address, Connect::token(&app.token(user)))
        .await
        .unwrap();
    let success = tablet.connected().await;
    assert_eq!(success["unreadCount"], 2);

    let refused = phone
        .ack(
            "preferences.set",
            Some(json!({"kindPattern": "Order", "channel": "IN_APP", "enabled": false})),
        )
        .await;
    assert_eq!(code(&refused), "invalid_payload");
    let refused = phone
        .ack(
            "preferences.set",
            Some(json!({"kindPattern": "order.*", "channel": "SMS", "enabled": false})),
        )
        .await;
    assert_eq!(code(&refused), "invalid_payload");

    // Unmuting applies to what is stored: the count takes it back.
    let ack = phone
        .ack("preferences.set", Some(json!({"reset": true})))
        .await;
    assert_eq!(ack, json!({"success": true, "preferences": []}));
    phone.settles_at(3).await;
    let got = phone.ack("preferences.get", None).await;
    assert_eq!(got, json!({"success": true, "preferences": []}));
}

#[tokio::test]
async fn watched_views_are_counted_and_pushed_when_they_move() {
    let app = TestApp::spawn().await;
    let user = app.user("Ada", "USER", None).await;
    notify_kind(&app.pg, user, "order.shipped", "low").await;
    let mut phone = online(&app, user).await;

    let views = json!({"views": {
        "orders": {"kinds": ["order.*"]},
        "loud": {"importance": ["high", "urgent"]},
    }});
    let ack = phone.ack("counts.watch", Some(views)).await;
    assert_eq!(
        ack,
        json!({"success": true, "counts": {"orders": 1, "loud": 0}})
    );

    let loud = notify_kind(&app.pg, user, "order.late", "urgent").await;
    let counts = phone.wait_for("notification:counts").await;
    assert_eq!(counts, json!({"counts": {"orders": 2, "loud": 1}}));
    phone
        .ack("mark.read", Some(json!({"notificationId": loud})))
        .await;
    let counts = phone.wait_for("notification:counts").await;
    assert_eq!(counts, json!({"counts": {"orders": 1, "loud": 0}}));

    for bad in [
        json!({"views": {"": {}}}),
        json!({"views": {"x": {"kinds": ["Order"]}}}),
        json!({"views": {"x": {"importance": ["loud"]}}}),
        json!({"views": {"x": {"colour": "red"}}}),
        json!({"views": (0..11).map(|i| (format!("v{i}"), json!({}))).collect::<serde_json::Map<_, _>>()}),
    ] {
        let refused = phone.ack("counts.watch", Some(bad.clone())).await;
        assert_eq!(code(&refused), "invalid_payload", "{bad}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_log_one_wake_up_and_each_shows_it_once() {
    let herald = TwoInstances::start().await;
    let pg = &herald.pg;
    let user = insert_user(pg, "Ada", "USER", None).await;
    let mut on_first = herald.online(&herald.first, user).await;
    let mut on_second = herald.online(&herald.second, user).await;

    let id = notify_kind(pg, user, "general", "normal").await;
    pg.execute(
        "insert into herald.notification_snoozed (notification_id, user_id, until)
         values ($1, $2, now() + interval '1 second')",
        &[&id, &user],
    )
    .await
    .unwrap();
    for client in [&mut on_first, &mut on_second] {
        client.wait_for("notification:snoozed").await;
        let again = client
            .wait_for_within("notification:new", Duration::from_secs(10))
            .await;
        assert_eq!(again["id"], id.to_string());
    }
    // Everything after the wake-up reaches each socket after it: a second
    // notification:new of it would come before the marker's.
    let marker = notify_kind(pg, user, "general", "normal").await;
    for client in [&mut on_first, &mut on_second] {
        let before = client.before(marker).await;
        let repeats = before
            .iter()
            .filter(|(event, data)| event == "notification:new" && data["id"] == json!(id))
            .count();
        assert_eq!(repeats, 0, "{before:?}");
    }
    let woke: i64 = pg
        .query_one(
            "select count(*) from herald.events where kind = 'notification.unsnoozed'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(woke, 1, "one instance claimed the wake-up");
}

async fn http(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    user: Uuid,
    body: Option<Value>,
) -> (reqwest::StatusCode, Value) {
    let mut request = reqwest::Client::new()
        .request(method, app.url(path))
        .bearer_auth(app.token(user));
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn get(app: &TestApp, path: &str, user: Uuid) -> (reqwest::StatusCode, Value) {
    http(app, reqwest::Method::GET, path, user, None).await
}

#[tokio::test]
async fn archive_and_preferences_over_http_write_what_the_socket_events_do() {
    use reqwest::{Method, StatusCode};
    let app = TestApp::spawn().await;
    let user = app.user("Ada", "USER", None).await;
    let other = app.user("Bob", "USER", None).await;
    let mut phone = online(&app, user).await;
    let id = app.notify(user, "to archive").await;
    phone.wait_for("notification:new").await;

    let (status, body) = http(
        &app,
        Method::POST,
        &format!("/api/notifications/{id}/archive"),
        user,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["notificationId"], id.to_string());
    assert!(body["archivedAt"].is_string());
    let archived = phone.wait_for("notification:archived").await;
    assert_eq!(archived["archivedAt"], body["archivedAt"]);
    let path = format!("/api/notifications/{id}/archive");
    assert_eq!(
        http(&app, Method::POST, &path, other, None).await.0,
        StatusCode::NOT_FOUND
    );
    let (status, _) = http(
        &app,
        Method::POST,
        "/api/notifications/nope/archive",
        user,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, body) = http(
        &app,
        Method::POST,
        &format!("/api/notifications/{id}/unarchive"),
        user,
        None,
    )
    .await;
    assert_eq!(
        (status, body),
        (
            StatusCode::OK,
            json!({"success": true, "notificationId": id})
        )
    );
    phone.wait_for("notification:unarchived").await;
    let (status, body) = http(
        &app,
        Method::POST,
        "/api/notifications/archive-read",
        user,
        None,
    )
    .await;
    assert_eq!(
        (status, body),
        (StatusCode::OK, json!({"success": true, "count": 1}))
    );

    let list = json!({"preferences": [
        {"kindPattern": "order.*", "channel": "IN_APP", "enabled": false},
        {"kindPattern": "*", "channel": "PUSH", "enabled": false},
    ]});
    let (status, body) = http(&app, Method::PUT, "/api/preferences", user, Some(list)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let stored = json!({"preferences": [
        {"kindPattern": "*", "channel": "PUSH", "enabled": false},
        {"kindPattern": "order.*", "channel": "IN_APP", "enabled": false},
    ]});
    assert_eq!(body, stored);
    let pushed = phone.wait_for("preferences:updated").await;
    assert_eq!(pushed["preferences"], stored["preferences"]);
    for bad in [
        json!({"preferences": [{"kindPattern": "Order", "channel": "IN_APP", "enabled": true}]}),
        json!({"preferences": [{"kindPattern": "order", "channel": "SMS", "enabled": true}]}),
        json!({"preferences": [
            {"kindPattern": "order", "channel": "PUSH", "enabled": true},
            {"kindPattern": "order", "channel": "PUSH", "enabled": false},
        ]}),
        json!({"preferences": (0..101).map(|i| json!({"kindPattern": format!("k{i}"), "channel": "PUSH", "enabled": true})).collect::<Vec<_>>()}),
        json!({"list": []}),
    ] {
        let (status, body) = http(
            &app,
            Method::PUT,
            "/api/preferences",
            user,
            Some(bad.clone()),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
        assert_eq!(body["error"]["code"], "invalid_payload");
    }
    let (status, body) = get(&app, "/api/preferences", user).await;
    assert_eq!(
        (status, body),
        (StatusCode::OK, stored),
        "nothing written by a refused PUT"
    );
    let (_, body) = http(
        &app,
        Method::PUT,
        "/api/preferences",
        user,
        Some(json!({"preferences": []})),
    )
    .await;
    assert_eq!(body, json!({"preferences": []}));
}

/// The ids of a page, from a socket's ack or REST's body.
fn ids(page: &Value) -> Vec<Value> {
    page["items"]
        .as_array()
        .map(|items| items.iter().map(|item| item["id"].clone()).collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn lists_show_one_shelf_through_filters_alike_on_the_socket_and_http() {
    use reqwest::StatusCode;
    let app = TestApp::spawn().await;
    let user = app.user("Ada", "USER", None).await;
    let phone = online(&app, user).await;
    let shipped = notify_kind(&app.pg, user, "order.shipped", "normal").await;
    let late = notify_kind(&app.pg, user, "order.late", "urgent").await;
    let due = notify_kind(&app.pg, user, "billing.due", "high").await;
    let mention = notify_kind(&app.pg, user, "mention.pr", "low").await;
    let ack = phone
        .ack("mark.archived", Some(json!({"notificationId": shipped})))
        .await;
    assert_eq!(ack["success"], true, "{ack}");
    let until = herald::wire::rfc3339(time::OffsetDateTime::now_utc() + time::Duration::hours(1));
    let ack = phone
        .ack(
            "mark.snoozed",
            Some(json!({"notificationId": due, "until": until})),
        )
        .await;
    assert_eq!(ack["success"], true, "{ack}");
    let ack = phone
        .ack(
            "preferences.set",
            Some(json!({"kindPattern": "mention.*", "channel": "IN_APP", "enabled": false})),
        )
        .await;
    assert_eq!(ack["success"], true, "{ack}");

    // Each case: the socket's options, REST's query, the ids listed.
    let cases = [
        (json!({}), "", vec![json!(mention), json!(late)]),
        (
            json!({"archived": true}),
            "archived=true",
            vec![json!(shipped)],
        ),
        (json!({"snoozed": true}), "snoozed=true", vec![json!(due)]),
        (
            json!({"kinds": ["order.*"]}),
            "kinds=order.*",
            vec![json!(late)],
        ),
        (
            json!({"kinds": ["mention.pr", "order.*"], "importance": ["low", "normal"]}),
            "kinds=mention.pr,order.*&importance=low,normal",
            vec![json!(mention)],
        ),
        (
            json!({"archived": true, "kinds": ["billing.*"]}),
            "archived=true&kinds=billing.*",
            vec![],
        ),
        (
            json!({"importance": ["high", "urgent"], "unreadOnly": true}),
            "importance=high,urgent&unread=true",
            vec![json!(late)],
        ),
    ];
    for (options, query, expected) in cases {
        let ack = phone.ack("notifications.list", Some(options.clone())).await;
        assert_eq!(ack["success"], true, "{options}: {ack}");
        assert_eq!(ids(&ack), expected, "{options}");
        let (status, body) = get(&app, &format!("/api/notifications?{query}"), user).await;
        assert_eq!(status, StatusCode::OK, "{query}: {body}");
        assert_eq!(body["items"], ack["items"], "{query}: the same page");
    }

    // Each item says where it is and whether it is muted.
    let all = |ack: Value| ack["items"][0].clone();
    let archived = all(phone
        .ack("notifications.list", Some(json!({"archived": true})))
        .await);
    assert!(
        archived["archivedAt"].is_string() && archived["readAt"].is_string(),
        "{archived}"
    );
    assert_eq!(
        (archived["snoozedUntil"].clone(), archived["muted"].clone()),
        (Value::Null, json!(false))
    );
    let snoozed = all(phone
        .ack("notifications.list", Some(json!({"snoozed": true})))
        .await);
    assert!(snoozed["snoozedUntil"].is_string(), "{snoozed}");
    assert_eq!(snoozed["readAt"], Value::Null);
    let muted = all(phone
        .ack("notifications.list", Some(json!({"kinds": ["mention.*"]})))
        .await);
    assert_eq!(muted["muted"], true, "{muted}");

    for (options, query) in [
        (
            json!({"archived": true, "snoozed": true}),
            "archived=true&snoozed=true",
        ),
        (json!({"kinds": []}), "kinds="),
        (json!({"kinds": ["Order.*"]}), "kinds=Order.*"),
        (json!({"importance": ["loud"]}), "importance=loud"),
        (json!({"archived": "yes"}), "archived=yes"),
    ] {
        let ack = phone.ack("notifications.list", Some(options.clone())).await;
        assert_eq!(code(&ack), "invalid_payload", "{options}: {ack}");
        let (status, body) = get(&app, &format!("/api/notifications?{query}"), user).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {body}");
        assert_eq!(body["error"]["code"], "invalid_payload", "{query}");
    }
}

#[tokio::test]
async fn a_user_keeps_at_most_a_hundred_preferences() {
    let app = TestApp::spawn().await;
    let user = app.user("Ada", "USER", None).await;
    let phone = online(&app, user).await;
    for i in 0..100 {
        let ack = phone
            .ack(
                "preferences.set",
                Some(json!({"kindPattern": format!("kind{i}.*"), "channel": "IN_APP", "enabled": false})),
            )
            .await;
        assert_eq!(ack["success"], true, "preference {i}: {ack}");
    }
    let refused = phone
        .ack(
            "preferences.set",
            Some(json!({"kindPattern": "kind100.*", "channel": "IN_APP", "enabled": false})),
        )
        .await;
    assert_eq!(code(&refused), "invalid_payload", "{refused}");
    // Changing one already kept is not a new one.
    let ack = phone
        .ack(
            "preferences.set",
            Some(json!({"kindPattern": "kind7.*", "channel": "IN_APP", "enabled": true})),
        )
        .await;
    assert_eq!(ack["success"], true, "{ack}");
    let kept: i64 = app
        .pg
        .query_one(
            "select count(*) from herald.notification_preferences where user_id = $1",
            &[&user],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(kept, 100);
}

#[tokio::test]
async fn a_resume_replays_every_inbox_state_change_in_order() {
    let app = TestApp::spawn().await;
    let user = app.user("Ada", "USER", None).await;
    let mut phone = online(&app, user).await;
    let archived = notify_kind(&app.pg, user, "order.shipped", "normal").await;
    let snoozed = notify_kind(&app.pg, user, "billing.due", "normal").await;
    phone.wait_for("notification:new").await;
    let position = phone.wait_for("notification:new").await["eventId"]
        .as_str()
        .expect("eventId")
        .to_owned();
    phone.close();
    drop(phone);

    // Written in SQL while the user is away, as a DBA or producer may.
    for statement in [
        "insert into herald.notification_archived (notification_id, user_id) values ($1, $2)",
        "delete from herald.notification_archived where notification_id = $1 and user_id = $2",
    ] {
        app.pg
            .execute(statement, &[&archived, &user])
            .await
            .unwrap();
    }
    for statement in [
        "insert into herald.notification_snoozed (notification_id, user_id, until)
         values ($1, $2, now() + interval '1 hour')",
        "delete from herald.notification_snoozed where notification_id = $1 and user_id = $2",
    ] {
        app.pg.execute(statement, &[&snoozed, &user]).await.unwrap();
    }
    app.pg
        .execute(
            "insert into herald.notification_preferences (user_id, kind_pattern, channel, enabled)
             values ($1, 'order.*', 'PUSH', false)",
            &[&user],
        )
        .await
        .unwrap();
    let marker = notify_kind(&app.pg, user, "general", "normal").await;

    let mut tablet = resume(&app, user, &position).await;
    let replayed: Vec<(String, Value)> = tablet
        .before(marker)
        .await
        .into_iter()
        .map(|(event, data)| {
            let about = data
                .get("notificationId")
                .or_else(|| data.get("id"))
                .or_else(|| data.get("preferences"))
                .cloned()
                .unwrap_or(Value::Null);
            (event, about)
        })
        .collect();
    let (a, s) = (json!(archived), json!(snoozed));
    let pushed = json!([{"kindPattern": "order.*", "channel": "PUSH", "enabled": false}]);
    assert_eq!(
        replayed,
        vec![
            ("notification:read".to_owned(), a.clone()),
            ("notification:archived".to_owned(), a.clone()),
            ("notification:unarchived".to_owned(), a),
            ("notification:snoozed".to_owned(), s.clone()),
            ("notification:new".to_owned(), s),
            ("preferences:updated".to_owned(), pushed),
        ],
        "every change, once, in the log's order"
    );
    // The snooze ended early and the archived one was read: the snoozed
    // one and the marker are unread.
    assert_eq!(
        tablet.expect("notification:count").await,
        json!({"count": 2})
    );
    tablet.expect("connection:success").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbox_state_written_through_one_instance_reaches_sockets_on_another() {
    let herald = TwoInstances::start().await;
    let pg = &herald.pg;
    let user = insert_user(pg, "Ada", "USER", None).await;
    let mut writer = herald.online(&herald.first, user).await;
    let mut watcher = herald.online(&herald.second, user).await;
    let archived = notify_kind(pg, user, "order.shipped", "normal").await;
    let snoozed = notify_kind(pg, user, "billing.due", "normal").await;
    for client in [&mut writer, &mut watcher] {
        client.settles_at(2).await;
    }
    let watched = watcher
        .ack(
            "counts.watch",
            Some(json!({"views": {"orders": {"kinds": ["order.*"]}}})),
        )
        .await;
    assert_eq!(watched, json!({"success": true, "counts": {"orders": 1}}));

    let ack = writer
        .ack("mark.archived", Some(json!({"notificationId": archived})))
        .await;
    assert_eq!(ack["success"], true, "{ack}");
    let pushed = watcher.wait_for("notification:archived").await;
    assert_eq!(pushed["archivedAt"], ack["archivedAt"]);
    assert_eq!(
        watcher.wait_for("notification:counts").await,
        json!({"counts": {"orders": 0}})
    );

    let until = herald::wire::rfc3339(time::OffsetDateTime::now_utc() + time::Duration::hours(1));
    let ack = writer
        .ack(
            "mark.snoozed",
            Some(json!({"notificationId": snoozed, "until": until})),
        )
        .await;
    assert_eq!(ack["success"], true, "{ack}");
    let pushed = watcher.wait_for("notification:snoozed").await;
    assert_eq!(pushed["notificationId"], json!(snoozed));
    watcher.settles_at(0).await;
    let ack = writer
        .ack("mark.unsnoozed", Some(json!({"notificationId": snoozed})))
        .await;
    assert_eq!(ack["success"], true, "{ack}");
    assert_eq!(
        watcher.wait_for("notification:new").await["id"],
        json!(snoozed)
    );
    watcher.settles_at(1).await;

    let ack = writer
        .ack(
            "preferences.set",
            Some(json!({"kindPattern": "billing.*", "channel": "IN_APP", "enabled": false})),
        )
        .await;
    assert_eq!(ack["success"], true, "{ack}");
    let pushed = watcher.wait_for("preferences:updated").await;
    assert_eq!(pushed["preferences"], ack["preferences"]);
    watcher.settles_at(0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snooze_that_ended_while_herald_was_down_is_woken_when_it_starts() {
    let db = crate::helpers::TestDb::migrated().await;
    let pg = db.client().await;
    let user = insert_user(&pg, "Ada", "USER", None).await;
    let id = notify_kind(&pg, user, "general", "normal").await;
    pg.execute(
        "insert into herald.notification_snoozed (notification_id, user_id, until)
         values ($1, $2, now() + interval '300 milliseconds')",
        &[&id, &user],
    )
    .await
    .unwrap();
    // No herald runs while the snooze ends, by the database's clock.
    while !pg
        .query_one(
            "select until <= now() from herald.notification_snoozed where notification_id = $1",
            &[&id],
        )
        .await
        .unwrap()
        .get::<_, bool>(0)
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let herald = crate::helpers::HeraldProcess::spawn(&db.url, &[]);
    herald.wait_ready().await;
    let token = herald::auth::JwtConfig::hs256(crate::helpers::SECRET.as_bytes())
        .sign(user, Duration::from_secs(600))
        .unwrap();
    let mut tablet = connect(herald.address, Connect::token(&token))
        .await
        .unwrap();
    // Its first pass woke it: shown again, by the pending push or live.
    let shown = tablet.wait_for("notification:new").await;
    assert_eq!(shown["id"], json!(id));
    tablet.settles_at(1).await;
    let woke: Vec<bool> = column(
        &pg,
        "select (payload->>'woke')::boolean from herald.events
              where kind = 'notification.unsnoozed' and notification_id = $1",
        &[&id],
    )
    .await;
    assert_eq!(
        woke,
        [true],
        "one wake-up, logged by the instance that started"
    );
}
