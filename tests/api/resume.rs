//! Resuming with `auth.lastEventId`: exactly what was missed, in order.

use std::collections::HashSet;
use std::time::Duration;

use serde_json::{Value, json};
use uuid::Uuid;

use crate::client::{Connect, connect};
use crate::helpers::{TestApp, resume};

#[tokio::test]
async fn a_resume_replays_exactly_the_missed_events_in_order_and_nothing_twice() {
    let app = TestApp::spawn().await;
    let user = app.user("Ada", "USER", None).await;
    let other = app.user("Bob", "USER", None).await;
    let mut client = connect(app.address, Connect::token(&app.token(user)))
        .await
        .unwrap();
    client.connected().await;
    let n1 = app.notify(user, "n1").await;
    let seen = client.wait_for("notification:new").await;
    assert_eq!(seen["id"], json!(n1));
    let position = seen["eventId"].as_str().unwrap().to_owned();
    client.close();
    drop(client);

    let n2 = app.notify(user, "n2").await;
    let n3 = app.notify(user, "n3").await;
    app.notify(other, "not for ada").await;
    app.pg
        .execute(
            "insert into herald.notification_seen (notification_id, user_id) values ($1, $2)",
            &[&n1, &user],
        )
        .await
        .unwrap();
    app.pg
        .execute(
            "update herald.notifications set retracted_at = now() where id = $1",
            &[&n2],
        )
        .await
        .unwrap();

    let mut client = resume(&app, user, &position).await;
    assert_eq!(client.expect("notification:new").await["id"], json!(n2));
    assert_eq!(client.expect("notification:new").await["id"], json!(n3));
    assert_eq!(
        client.expect("notification:read").await["notificationId"],
        json!(n1)
    );
    assert_eq!(
        client.expect("notification:retracted").await["notificationId"],
        json!(n2)
    );
    assert_eq!(
        client.expect("notification:count").await,
        json!({"count": 1})
    );
    let success = client.expect("connection:success").await;
    assert_eq!(success["unreadCount"], 1);
    let marker = app.notify(user, "marker").await;
    let again = client.before(marker).await;
    assert!(
        again.is_empty(),
        "a replayed event came again live: {again:?}"
    );

    // From connection:success's position, a later resume replays only what
    // follows it: the marker and n4.
    let position = success["lastEventId"].as_str().unwrap().to_owned();
    client.close();
    drop(client);
    let n4 = app.notify(user, "n4").await;
    let mut client = resume(&app, user, &position).await;
    assert_eq!(client.expect("notification:new").await["id"], json!(marker));
    assert_eq!(client.expect("notification:new").await["id"], json!(n4));
    assert_eq!(
        client.expect("notification:count").await,
        json!({"count": 3}),
        "n3, the marker and n4"
    );
    client.expect("connection:success").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnecting_while_writes_are_in_flight_misses_and_doubles_nothing() {
    let app = TestApp::spawn().await;
    let user = app.user("Ada", "USER", None).await;
    let mut client = connect(app.address, Connect::token(&app.token(user)))
        .await
        .unwrap();
    let mut position = client.connected().await["lastEventId"]
        .as_str()
        .unwrap()
        .to_owned();

    // The writer keeps up to WINDOW rows ahead of what the client has
    // received, so every reconnect leaves rows in flight, whatever the pace.
    const ROWS: usize = 300;
    const WINDOW: usize = 40;
    let (received_tx, mut received_rx) = tokio::sync::watch::channel(0_usize);
    let writer = {
        let url = app.db.url.clone();
        tokio::spawn(async move {
            let pg = crate::helpers::connect(&url).await;
            let mut ids = HashSet::new();
            for i in 0..ROWS {
                let behind = received_rx.wait_for(|&got| got + WINDOW > i);
                tokio::time::timeout(crate::client::WAIT, behind)
                    .await
                    .expect("the client stopped receiving")
                    .expect("the client is gone");
                let id: Uuid = pg
                    .query_one("insert into herald.notifications (user_id, title) values ($1, $2) returning id", &[&user, &format!("w{i}")])
                    .await
                    .unwrap()
                    .get(0);
                ids.insert(id);
            }
            ids
        })
    };

    // The last row written is the last in the log: when it has arrived,
    // everything before it has (or is missing for good).
    let last = format!("w{}", ROWS - 1);
    let mut received: Vec<Uuid> = Vec::new();
    let mut reconnects = 0;
    let mut since_reconnect = 0;
    loop {
        let (event, data) = client.next().await;
        if event == "notification:new" {
            received.push(data["id"].as_str().unwrap().parse().unwrap());
            received_tx.send_replace(received.len());
            since_reconnect += 1;
            if data["title"] == last.as_str() {
                break;
            }
        }
        // Live events move the position; connection:success sets it.
        if event == "connection:success" {
            position = data["lastEventId"].as_str().unwrap().to_owned();
        } else if let Some(id) = data.get("eventId").and_then(Value::as_str) {
            position = id.to_owned();
        }
        if since_reconnect >= 37 {
            // Drop the connection abruptly, with unread events in flight.
            drop(client);
            client = resume(&app, user, &position).await;
            reconnects += 1;
            since_reconnect = 0;
        }
    }
    // Anything delivered twice would have arrived by a marker inserted now.
    let marker = app.notify(user, "marker").await;
    for (event, data) in client.before(marker).await {
        if event == "notification:new" {
            received.push(data["id"].as_str().unwrap().parse().unwrap());
        }
    }
    let written = writer.await.unwrap();
    let unique: HashSet<Uuid> = received.iter().copied().collect();
    assert!(reconnects >= 5, "only {reconnects} reconnects");
    assert_eq!(
        unique.len(),
        received.len(),
        "{} delivered twice",
        received.len() - unique.len()
    );
    assert_eq!(
        unique,
        written,
        "{} missing",
        written.difference(&unique).count()
    );
}

#[tokio::test]
async fn a_pruned_or_malformed_position_gets_sync_reset_then_the_pending_push() {
    let app = TestApp::spawn_with(|c| c.event_retention = Duration::from_millis(800)).await;
    let user = app.user("Ada", "USER", None).await;
    let mut client = connect(app.address, Connect::token(&app.token(user)))
        .await
        .unwrap();
    let position = client.connected().await["lastEventId"]
        .as_str()
        .unwrap()
        .to_owned();
    client.close();
    drop(client);
    let n = app.notify(user, "kept, its event pruned").await;
    // Pruning waits for the clock: events older than the retention (0.8 s)
    // go on the next pass (every 0.2 s). Polled for up to 10 s, far more
    // than the 1 s that takes, for a loaded machine.
    let mut left = 1;
    for _ in 0..200 {
        left = app
            .pg
            .query_one("select count(*) from herald.events", &[])
            .await
            .unwrap()
            .get::<_, i64>(0);
        if left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(left, 0, "retention did not prune");

    for stale in [position.as_str(), "garbage", "1:1:/2:2:/1/1"] {
        let mut client = resume(&app, user, stale).await;
        assert_eq!(client.expect("sync:reset").await, json!({}), "{stale}");
        let pushed = client.expect("notification:new").await;
        assert_eq!(pushed["id"], json!(n));
        assert_eq!(
            pushed["eventId"],
            Value::Null,
            "its creation event is pruned"
        );
        assert_eq!(
            client.expect("notification:count").await,
            json!({"count": 1})
        );
        client.expect("connection:success").await;
    }
}
