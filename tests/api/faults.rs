//! No loss and no duplicates on bad days: the listener's connection killed,
//! PostgreSQL restarted, a huge transaction, a client that stops reading.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use uuid::Uuid;

use crate::client::{Connect, SioClient, connect};
use crate::helpers::{
    HeraldProcess, PrivateCluster, SECRET, TestApp, TestDb, column, connect as pg_connect,
    insert_user,
};

/// Reads `notification:new` ids until `expected` have arrived and, when
/// `count` is given, a `notification:count` says it; or until nothing has
/// arrived for `patience` (then the caller's assertion tells what is
/// missing). Returns the ids and the last count seen.
async fn collect(
    client: &mut SioClient,
    expected: usize,
    count: Option<i64>,
    patience: Duration,
) -> (Vec<Uuid>, Option<i64>) {
    let mut ids = Vec::new();
    let mut last = None;
    while ids.len() < expected || (count.is_some() && last != count) {
        match client.next_within(patience).await {
            Some((event, data)) if event == "notification:new" => {
                ids.push(data["id"].as_str().unwrap().parse().unwrap())
            }
            Some((event, data)) if event == "notification:count" => last = data["count"].as_i64(),
            Some(_) => {}
            None => break,
        }
    }
    (ids, last)
}

/// The notifications pushed to `user`'s socket before a marker inserted
/// now: herald pushes in log order, so any copy of an earlier one that is
/// still to come arrives before the marker, and the marker proves that
/// nothing else is on its way.
async fn rest_before_marker(
    client: &mut SioClient,
    pg: &tokio_postgres::Client,
    user: Uuid,
) -> Vec<Uuid> {
    let marker: Uuid = pg
        .query_one(
            "insert into herald.notifications (user_id, title) values ($1, 'marker') returning id",
            &[&user],
        )
        .await
        .unwrap()
        .get(0);
    client
        .before(marker)
        .await
        .into_iter()
        .filter(|(event, _)| event == "notification:new")
        .map(|(_, data)| data["id"].as_str().unwrap().parse().unwrap())
        .collect()
}

/// Every pushed notification, `expected` of them and anything after them
/// up to a marker.
async fn received(
    client: &mut SioClient,
    pg: &tokio_postgres::Client,
    user: Uuid,
    expected: usize,
    patience: Duration,
) -> Vec<Uuid> {
    let (mut ids, _) = collect(client, expected, None, patience).await;
    ids.extend(rest_before_marker(client, pg, user).await);
    ids
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

/// Writers and kills take turns: each writer writes `ROUND` rows, then
/// waits for the next kill, and the killer kills once every writer is
/// through the round and the listener is back. So every round's rows meet
/// a tail that has just lost its connection, however fast the machine is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_listener_every_round_of_writes_loses_and_doubles_nothing() {
    const WRITERS: usize = 4;
    const ROWS: usize = 500;
    const ROUND: usize = 50;
    let app = TestApp::spawn().await;
    let mut users = Vec::new();
    let mut clients = Vec::new();
    for i in 0..8 {
        let user = app.user(&format!("user {i}"), "USER", None).await;
        clients.push(online(&app, user).await);
        users.push(user);
    }
    let (progress, mut written) = tokio::sync::watch::channel(0_usize);
    let progress = Arc::new(progress);
    let (killed, kills) = tokio::sync::watch::channel(0_usize);
    let killer = {
        let url = app.db.url.clone();
        tokio::spawn(async move {
            let pg = pg_connect(&url).await;
            let mut terminated = 0;
            for round in 1..ROWS / ROUND {
                written
                    .wait_for(|&n| n >= round * ROUND * WRITERS)
                    .await
                    .unwrap();
                listener_connected(&pg).await;
                terminated += pg
                    .query(
                        "select pg_terminate_backend(pid) from pg_stat_activity
                          where application_name = 'herald-tail' and datname = current_database()",
                        &[],
                    )
                    .await
                    .unwrap()
                    .len();
                killed.send_replace(round);
            }
            terminated
        })
    };
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let url = app.db.url.clone();
        let users = users.clone();
        let progress = progress.clone();
        let mut kills = kills.clone();
        writers.push(tokio::spawn(async move {
            let mut pg = pg_connect(&url).await;
            let mut written: Vec<(Uuid, Uuid)> = Vec::new();
            let mut n = 0;
            while written.len() < ROWS {
                let round = written.len() / ROUND;
                kills.wait_for(|&k| k >= round).await.unwrap();
                // Transactions of one to four rows, none across a round.
                let size = (1 + (n % 4)).min((round + 1) * ROUND - written.len());
                let tx = pg.transaction().await.unwrap();
                for _ in 0..size {
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
                progress.send_modify(|total| *total += size);
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
    let kills = killer.await.unwrap();
    assert!(
        kills >= ROWS / ROUND - 1,
        "the listener was killed only {kills} times"
    );
    let total: usize = expected.values().map(HashSet::len).sum();
    assert_eq!(total, WRITERS * ROWS);
    for (client, user) in clients.iter_mut().zip(&users) {
        let want = &expected[user];
        let got = received(client, &app.pg, *user, want.len(), Duration::from_secs(10)).await;
        assert_exactly_once(&got, want, &format!("user {user}"));
    }
    println!("2,000 notifications delivered exactly once through {kills} listener kills");
}

/// Waits until herald's listener is connected to the test's database again.
async fn listener_connected(pg: &tokio_postgres::Client) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let connected: i64 = pg
            .query_one(
                "select count(*) from pg_stat_activity
                  where application_name = 'herald-tail' and datname = current_database()",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if connected > 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the listener did not reconnect within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
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

    // The writer writes as fast as PostgreSQL lets it: 100 rows, then the
    // restart is asked for; it writes on until the restart has been felt
    // and 300 rows are in. After a failure it waits for the restart to be
    // over, then reconnects.
    let (hundred, at_hundred) = tokio::sync::oneshot::channel();
    let (restarted, restart_over) = tokio::sync::watch::channel(false);
    let writer = tokio::spawn(async move {
        let mut restart_over = restart_over;
        let mut hundred = Some(hundred);
        let mut pg: Option<tokio_postgres::Client> = None;
        let (mut committed, mut felt) = (0, false);
        let started = Instant::now();
        while committed < 300 || !felt {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "the writer could not get through"
            );
            if pg.as_ref().is_none_or(|c| c.is_closed()) {
                pg = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                    .await
                    .ok()
                    .map(|(client, connection)| {
                        tokio::spawn(connection);
                        client
                    });
            }
            let written = match &pg {
                Some(client) => client.execute("insert into herald.notifications (user_id, title) values ($1, 'through a restart')", &[&user]).await.is_ok(),
                None => false,
            };
            if written {
                committed += 1;
                if committed == 100
                    && let Some(hundred) = hundred.take()
                {
                    let _ = hundred.send(());
                }
            } else {
                felt = true;
                pg = None;
                restart_over.wait_for(|&over| over).await.unwrap();
            }
        }
    });
    at_hundred.await.expect("the writer reached 100 rows");
    let restart = tokio::task::spawn_blocking(move || {
        cluster.restart();
        cluster
    });
    // Keep the cluster (dropping it stops it) until the end of the test.
    let _cluster = restart.await.unwrap();
    restarted.send_replace(true);
    writer.await.unwrap();

    // The truth is what PostgreSQL committed (a commit whose answer was lost
    // to the restart is there even though the writer retried it).
    let pg = pg_connect(&app.db.url).await;
    let expected: HashSet<Uuid> = column(&pg, "select id from herald.notifications", &[])
        .await
        .into_iter()
        .collect();
    assert!(expected.len() >= 300);
    let got = received(
        &mut client,
        &pg,
        user,
        expected.len(),
        Duration::from_secs(15),
    )
    .await;
    assert_exactly_once(&got, &expected, "through the restart");
}

/// One transaction of `rows` notifications for one online user: each
/// arrives once, the count follows, and the socket stays.
async fn one_transaction_delivered_whole(rows: i32) {
    let app = TestApp::spawn().await;
    let user = app.user("Ada", "USER", None).await;
    let mut client = online(&app, user).await;
    let ids: HashSet<Uuid> = column(
        &app.pg,
        "insert into herald.notifications (user_id, title) select $1, 'bulk ' || i from generate_series(1, $2) i returning id",
        &[&user, &rows],
    )
    .await
    .into_iter()
    .collect();
    let want = Some(i64::from(rows));
    let (mut got, count) = collect(&mut client, rows as usize, want, Duration::from_secs(20)).await;
    assert_eq!(count, want);
    got.extend(rest_before_marker(&mut client, &app.pg, user).await);
    assert_exactly_once(&got, &ids, "bulk");
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

/// In a herald process of its own, whose overflow counter only this test
/// can move.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_bounded_and_delays_no_one_else() {
    let db = TestDb::migrated().await;
    let pg = db.client().await;
    let herald = HeraldProcess::spawn(&db.url, &[]);
    herald.wait_ready().await;
    let slow_user = insert_user(&pg, "Slow", "USER", None).await;
    let fast_user = insert_user(&pg, "Fast", "USER", None).await;
    let jwt = herald::auth::JwtConfig::hs256(SECRET.as_bytes());
    let token = |user| jwt.sign(user, Duration::from_secs(600)).unwrap();
    let mut fast = connect(herald.address, Connect::token(&token(fast_user)))
        .await
        .unwrap();
    fast.connected().await;
    let stalled = crate::client::stalled(herald.address, &token(slow_user)).await;

    // ~36 MB for the slow socket: more than its queue and the kernel hold.
    let blob = "x".repeat(15_000);
    for _ in 0..24 {
        pg.execute(
            "insert into herald.notifications (user_id, title, data)
             select $1, 'flood', jsonb_build_object('blob', $2::text) from generate_series(1, 100)",
            &[&slow_user, &blob],
        )
        .await
        .unwrap();
    }
    // Each fast push follows the flood in the log: a dispatch that waited
    // for the stalled socket would hold it back until that socket's ping
    // timeout (85 s) closed it. The first one waits for the flood's 36 MB
    // to be read and dispatched, which on a busy machine takes seconds.
    const BEHIND_THE_FLOOD: Duration = Duration::from_secs(30);
    let mut took = Vec::new();
    for i in 0..10 {
        let started = Instant::now();
        pg.execute(
            "insert into herald.notifications (user_id, title) values ($1, $2)",
            &[&fast_user, &format!("fast {i}")],
        )
        .await
        .unwrap();
        let n = fast
            .wait_for_within("notification:new", BEHIND_THE_FLOOD)
            .await;
        assert_eq!(n["title"], format!("fast {i}"));
        took.push(started.elapsed());
    }
    took.sort();
    println!(
        "the fast client's pushes behind the flood: p50 {:?}, max {:?}",
        took[5], took[9]
    );

    // The slow socket's queue is bounded: what did not fit was counted.
    let deadline = Instant::now() + Duration::from_secs(10);
    while herald.metric("herald_socket_queue_overflows_total").await == 0.0 {
        assert!(Instant::now() < deadline, "no overflow was counted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
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
    // Counted too, in this process's own /metrics (the push above came
    // after the skip, so the count is already there). The socket's connect
    // catch-up may have covered the row as well and counted it again.
    let metrics = reqwest::get(format!("http://{}/metrics", herald.address))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.lines().any(|line| line
            .strip_prefix(
                r#"herald_events_skipped_total{kind="notification.created",reason="malformed"} "#
            )
            .and_then(|n| n.parse::<f64>().ok())
            .is_some_and(|n| n >= 1.0)),
        "not counted:\n{metrics}"
    );
}

/// The delivery writer's connection killed with a batch in flight, waiting
/// for a lock the test holds before it looks the batch's parents up. The writer retries
/// on a new connection, and every `SENT` row lands, once.
#[tokio::test]
async fn killing_the_delivery_writer_mid_batch_loses_and_doubles_nothing() {
    let app = TestApp::spawn().await;
    let sector = Uuid::new_v4();
    let mut users = Vec::new();
    let mut clients = Vec::new();
    for i in 0..5 {
        let user = app.user(&format!("member {i}"), "USER", Some(sector)).await;
        clients.push(online(&app, user).await);
        users.push(user);
    }
    // The lock a delete holds (migration V10): the batch waits for it
    // before it looks its parents up.
    let mut locker = pg_connect(&app.db.url).await;
    let lock = locker.transaction().await.unwrap();
    lock.execute(
        "select pg_advisory_xact_lock(herald.delivery_parents_key())",
        &[],
    )
    .await
    .unwrap();
    let locker_pid: i32 = lock
        .query_one("select pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);

    let first = app.broadcast("sector", Some(sector), "mid-batch").await;
    for client in &mut clients {
        assert_eq!(
            client.wait_for("notification:new").await["id"],
            first.to_string()
        );
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let writer = loop {
        let waiting = app
            .pg
            .query_opt(
                // Only the delivery writer takes that lock.
                "select pid from pg_stat_activity
                  where $1 = any (pg_blocking_pids(pid)) and application_name = 'herald'",
                &[&locker_pid],
            )
            .await
            .unwrap();
        if let Some(row) = waiting {
            break row.get::<_, i32>(0);
        }
        assert!(
            Instant::now() < deadline,
            "no delivery batch waited for the lock"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let killed: bool = app
        .pg
        .query_one("select pg_terminate_backend($1)", &[&writer])
        .await
        .unwrap()
        .get(0);
    assert!(killed);
    lock.rollback().await.unwrap();

    // A second broadcast, after the kill, goes the same way.
    let second = app
        .broadcast("sector", Some(sector), "after the kill")
        .await;
    for client in &mut clients {
        assert_eq!(
            client.wait_for("notification:new").await["id"],
            second.to_string()
        );
    }
    app.metric_reaches("herald_deliveries_recorded_total", 10.0)
        .await;
    let rows: HashSet<(Uuid, Uuid)> = app
        .pg
        .query(
            "select notification_id, user_id from herald.notification_deliveries
              where status = 'SENT' and sent_at is not null",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    let expected: HashSet<(Uuid, Uuid)> = [first, second]
        .iter()
        .flat_map(|&n| users.iter().map(move |&u| (n, u)))
        .collect();
    assert_eq!(rows, expected);
    // Written once each: the killed attempt counted nothing, nothing was given up.
    assert_eq!(app.metric("herald_deliveries_recorded_total").await, 10.0);
    assert_eq!(app.metric("herald_deliveries_dropped_total").await, 0.0);
}
