//! No loss and no duplicates on bad days: the listener's connection killed,
//! PostgreSQL restarted, a huge transaction, a client that stops reading.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use uuid::Uuid;

use crate::client::{Connect, SioClient, connect};
use crate::helpers::{
    HeraldProcess, PrivateCluster, SECRET, TestApp, TestDb, connect as pg_connect, insert_user,
};

/// Reads `notification:new` ids until `expected` are all in, or nothing new
/// arrives for `quiet` (then the caller's assertion tells what is missing).
async fn collect(client: &mut SioClient, expected: usize, quiet: Duration) -> Vec<Uuid> {
    collect_with_count(client, expected, quiet).await.0
}

/// As [`collect`], with the last `notification:count` seen.
async fn collect_with_count(
    client: &mut SioClient,
    expected: usize,
    quiet: Duration,
) -> (Vec<Uuid>, Option<i64>) {
    let mut ids = Vec::new();
    let mut count = None;
    loop {
        let wait = if ids.len() >= expected {
            Duration::from_millis(500)
        } else {
            quiet
        };
        match tokio::time::timeout(wait, client.next()).await {
            Ok((event, data)) if event == "notification:new" => {
                ids.push(data["id"].as_str().unwrap().parse().unwrap())
            }
            Ok((event, data)) if event == "notification:count" => count = data["count"].as_i64(),
            Ok(_) => {}
            Err(_) => return (ids, count),
        }
    }
}

fn assert_exactly_once(received: &[Uuid], expected: &HashSet<Uuid>, who: &str) {
    let unique: HashSet<Uuid> = received.iter().copied().collect();
    assert_eq!(
        unique.len(),
        received.len(),
        "{who}: {} duplicates",
        received.len() - unique.len()
    );
    let missing = expected.difference(&unique).count();
    let extra = unique.difference(expected).count();
    assert!(
        missing == 0 && extra == 0,
        "{who}: {missing} missing, {extra} unexpected of {}",
        expected.len()
    );
}

async fn online(app: &TestApp, user: Uuid) -> SioClient {
    let mut client = connect(app.address, Connect::token(&app.token(user)))
        .await
        .unwrap();
    client.connected().await;
    client
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_listener_every_300ms_loses_and_doubles_nothing() {
    let app = TestApp::spawn().await;
    let mut users = Vec::new();
    let mut clients = Vec::new();
    for i in 0..8 {
        let user = app.user(&format!("user {i}"), "USER", None).await;
        clients.push(online(&app, user).await);
        users.push(user);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let killer = {
        let stop = stop.clone();
        let url = app.db.url.clone();
        tokio::spawn(async move {
            let pg = pg_connect(&url).await;
            let mut kills = 0;
            while !stop.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(300)).await;
                kills += pg
                    .query(
                        "select pg_terminate_backend(pid) from pg_stat_activity
                          where application_name = 'herald-listener' and datname = current_database()",
                        &[],
                    )
                    .await
                    .unwrap()
                    .len();
            }
            kills
        })
    };
    let mut writers = Vec::new();
    for w in 0..4 {
        let url = app.db.url.clone();
        let users = users.clone();
        writers.push(tokio::spawn(async move {
            let mut pg = pg_connect(&url).await;
            let mut written: Vec<(Uuid, Uuid)> = Vec::new();
            let mut n = 0;
            while written.len() < 500 {
                // Transactions of one to four rows.
                let size = 1 + (n % 4);
                let tx = pg.transaction().await.unwrap();
                for _ in 0..size.min(500 - written.len()) {
                    let user = users[(w * 7 + n) % users.len()];
                    let id: Uuid = tx
                        .query_one("insert into herald.notifications (user_id, title) values ($1, 'load') returning id", &[&user])
                        .await
                        .unwrap()
                        .get(0);
                    written.push((user, id));
                    n += 1;
                }
                tx.commit().await.unwrap();
            }
            written
        }));
    }
    let mut expected: HashMap<Uuid, HashSet<Uuid>> = HashMap::new();
    for writer in writers {
        for (user, id) in writer.await.unwrap() {
            expected.entry(user).or_default().insert(id);
        }
    }
    stop.store(true, Ordering::SeqCst);
    let kills = killer.await.unwrap();
    assert!(kills >= 2, "the listener was killed only {kills} times");
    let total: usize = expected.values().map(HashSet::len).sum();
    assert_eq!(total, 2000);
    for (client, user) in clients.iter_mut().zip(&users) {
        let want = &expected[user];
        let got = collect(client, want.len(), Duration::from_secs(10)).await;
        assert_exactly_once(&got, want, &format!("user {user}"));
    }
    println!("2,000 notifications delivered exactly once through {kills} listener kills");
}

#[tokio::test]
async fn a_postgres_restart_mid_stream_loses_and_doubles_nothing() {
    let cluster = PrivateCluster::start();
    let db = cluster.database().await;
    let config = crate::helpers::config(&db);
    let app = TestApp::spawn_on(db, config).await;
    let user = app.user("Ada", "USER", None).await;
    let mut client = online(&app, user).await;
    let url = app.db.url.clone();

    let writer = tokio::spawn(async move {
        let mut pg: Option<tokio_postgres::Client> = None;
        let mut committed = 0;
        let mut attempts = 0;
        while committed < 300 {
            attempts += 1;
            assert!(attempts < 5000, "the writer could not get through");
            if pg.as_ref().is_none_or(|c| c.is_closed()) {
                pg = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                    .await
                    .ok()
                    .map(|(client, connection)| {
                        tokio::spawn(connection);
                        client
                    });
            }
            let Some(client) = &pg else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            match client.execute("insert into herald.notifications (user_id, title) values ($1, 'through a restart')", &[&user]).await {
                Ok(_) => committed += 1,
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
            tokio::time::sleep(Duration::from_millis(3)).await;
        }
    });
    // Restart once a good part of the stream is through.
    let started = Instant::now();
    loop {
        let count: i64 = app
            .pg
            .query_one("select count(*) from herald.notifications", &[])
            .await
            .unwrap()
            .get(0);
        if count >= 100 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(20));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let restarted = tokio::task::spawn_blocking(move || {
        cluster.restart();
        cluster
    });
    writer.await.unwrap();
    // Keep the cluster (dropping it stops it) until the end of the test.
    let _cluster = restarted.await.unwrap();

    // The truth is what PostgreSQL committed (a commit whose answer was lost
    // to the restart is there even though the writer retried it).
    let pg = pg_connect(&app.db.url).await;
    let expected: HashSet<Uuid> = pg
        .query("select id from herald.notifications", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(expected.len() >= 300);
    let got = collect(&mut client, expected.len(), Duration::from_secs(15)).await;
    assert_exactly_once(&got, &expected, "through the restart");
}

/// One transaction of `rows` notifications for one online user: each
/// arrives once, the count follows, and the socket stays.
async fn one_transaction_delivered_whole(rows: i32) {
    let app = TestApp::spawn().await;
    let user = app.user("Ada", "USER", None).await;
    let mut client = online(&app, user).await;
    let ids: HashSet<Uuid> = app
        .pg
        .query(
            "insert into herald.notifications (user_id, title) select $1, 'bulk ' || i from generate_series(1, $2) i returning id",
            &[&user, &rows],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let (got, count) =
        collect_with_count(&mut client, rows as usize, Duration::from_secs(20)).await;
    assert_exactly_once(&got, &ids, "bulk");
    assert_eq!(count, Some(i64::from(rows)));
    assert!(client.is_open(), "the socket was evicted");
}

#[tokio::test]
async fn one_transaction_of_a_thousand_rows_is_delivered_whole() {
    one_transaction_delivered_whole(1000).await;
}

#[tokio::test]
async fn a_transaction_larger_than_a_socket_queue_is_delivered_whole() {
    // Three times the socket's queue: dispatch hands the rows to the socket
    // in one run and must let its writer drain meanwhile.
    one_transaction_delivered_whole(3000).await;
}

#[tokio::test]
async fn a_client_that_stops_reading_is_bounded_and_delays_no_one_else() {
    let app = TestApp::spawn().await;
    let slow_user = app.user("Slow", "USER", None).await;
    let fast_user = app.user("Fast", "USER", None).await;
    let mut fast = online(&app, fast_user).await;
    let stalled = crate::client::stalled(app.address, &app.token(slow_user)).await;

    // ~36 MB for the slow socket: more than its queue and the kernel hold.
    let blob = "x".repeat(15_000);
    for _ in 0..24 {
        app.pg
            .execute(
                "insert into herald.notifications (user_id, title, data)
                 select $1, 'flood', jsonb_build_object('blob', $2::text) from generate_series(1, 100)",
                &[&slow_user, &blob],
            )
            .await
            .unwrap();
    }
    let mut took = Vec::new();
    for i in 0..10 {
        let started = Instant::now();
        app.notify(fast_user, &format!("fast {i}")).await;
        let n = fast.wait_for("notification:new").await;
        assert_eq!(n["title"], format!("fast {i}"));
        took.push(started.elapsed());
    }
    took.sort();
    assert!(
        took[5] < Duration::from_millis(250),
        "the fast client waited {:?}",
        took[5]
    );

    // The slow socket's queue is bounded: what did not fit was counted.
    let mut overflows = 0.0;
    for _ in 0..100 {
        overflows = app.metric("herald_socket_queue_overflows_total").await;
        if overflows > 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(overflows > 0.0, "no overflow was counted");
    drop(stalled);
}

/// A row herald cannot push (written by hand, past the triggers) is logged
/// as an error naming its id and kind, and the log is read on past it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_event_row_is_logged_by_id_and_kind_and_the_log_goes_on() {
    let db = TestDb::migrated().await;
    let pg = db.client().await;
    let herald = HeraldProcess::spawn(&db.url, &[]);
    herald.wait_ready().await;
    let user = insert_user(&pg, "Ada", "USER", None).await;
    let jwt = herald::auth::JwtConfig::hs256(SECRET.as_bytes());
    let token = jwt.sign(user, Duration::from_secs(600)).unwrap();
    let mut client = connect(herald.address, Connect::token(&token))
        .await
        .unwrap();
    client.connected().await;

    // Only triggers write the log; a corrupt row needs them switched off.
    pg.batch_execute("set session_replication_role = replica")
        .await
        .unwrap();
    let bad: i64 = pg
        .query_one(
            r#"insert into herald.events (kind, audience, user_id, payload)
               values ('notification.created', 'user', $1, '{"title": 1}') returning id"#,
            &[&user],
        )
        .await
        .unwrap()
        .get(0);
    pg.batch_execute("reset session_replication_role")
        .await
        .unwrap();
    let good: Uuid = pg
        .query_one(
            "insert into herald.notifications (user_id, title) values ($1, 'after it') returning id",
            &[&user],
        )
        .await
        .unwrap()
        .get(0);
    // The first push is the good one: the bad row was passed over, not sent.
    assert_eq!(
        client.wait_for("notification:new").await["id"],
        serde_json::json!(good)
    );

    // herald wrote the line before that push; its reader thread may lag.
    let mut logged = None;
    for _ in 0..100 {
        logged = herald
            .log
            .lock()
            .unwrap()
            .iter()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .find(|entry| entry["message"] == "event not pushed: malformed event row");
        if logged.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let entry = logged.unwrap_or_else(|| panic!("not logged:\n{}", herald.log_text()));
    assert_eq!(entry["level"], "ERROR");
    assert_eq!(entry["event.id"], bad);
    assert_eq!(entry["event.kind"], "notification.created");
    assert!(
        entry["reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("notification payload: ")),
        "{entry}"
    );
}
