//! The schema: migrations, event-log triggers, NOTIFY, and every producer
//! rule as a named constraint.

use std::time::Duration;

use futures_util::StreamExt;
use herald::db::deliveries::{Method, Recorded};
use serde_json::json;
use tokio_postgres::AsyncMessage;
use uuid::Uuid;

use crate::helpers::{TestDb, column, insert_user, refused_by};

/// Everything in schema herald that a migration could change.
const CATALOG: &str = "
    select string_agg(format('%s %s %s', c.relkind, c.relname, coalesce(pg_get_constraintdef(k.oid), '')), E'\\n' order by 1)
      from pg_class c
      join pg_namespace n on n.oid = c.relnamespace and n.nspname = 'herald'
      left join pg_constraint k on k.conrelid = c.oid";

#[tokio::test]
async fn migrations_apply_to_an_empty_database_and_a_second_run_changes_nothing() {
    let db = TestDb::empty().await;
    assert_eq!(herald::db::migrate(&db.url).await.unwrap(), 12);
    let pg = db.client().await;
    let before: String = pg.query_one(CATALOG, &[]).await.unwrap().get(0);
    for table in [
        "users",
        "notifications",
        "notification_seen",
        "notification_deliveries",
        "events",
        "delivery_audit",
        "push_subscriptions",
        "push_due",
        "push_sends",
        "notification_archived",
        "notification_snoozed",
        "notification_preferences",
    ] {
        assert!(before.contains(&format!(" {table} ")), "missing {table}");
    }
    assert_eq!(herald::db::migrate(&db.url).await.unwrap(), 0);
    let after: String = pg.query_one(CATALOG, &[]).await.unwrap().get(0);
    assert_eq!(before, after);
}

async fn events(pg: &tokio_postgres::Client) -> Vec<tokio_postgres::Row> {
    pg.query(
        "select kind, notification_id, user_id, sector_id, audience, payload, tx::text as tx
           from herald.events order by id",
        &[],
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn inserting_a_notification_logs_one_created_event_with_its_fields() {
    let db = TestDb::migrated().await;
    let pg = db.client().await;
    let user = insert_user(&pg, "Ada", "USER", None).await;
    let id: Uuid = pg
        .query_one(
            "insert into herald.notifications (user_id, kind, importance, title, message, action_url, data)
             values ($1, 'order.shipped', 'high', 'Shipped', 'Your order left', '/orders/7', '{\"order\": 7}')
             returning id",
            &[&user],
        )
        .await
        .unwrap()
        .get(0);
    let rows = events(&pg).await;
    assert_eq!(rows.len(), 1);
    let row = &rows[0];
    assert_eq!(row.get::<_, String>("kind"), "notification.created");
    assert_eq!(row.get::<_, Option<Uuid>>("notification_id"), Some(id));
    assert_eq!(row.get::<_, Option<Uuid>>("user_id"), Some(user));
    assert_eq!(row.get::<_, Option<Uuid>>("sector_id"), None);
    assert_eq!(
        row.get::<_, Option<String>>("audience").as_deref(),
        Some("user")
    );
    let payload: serde_json::Value = row.get("payload");
    assert_eq!(payload["id"], json!(id));
    assert_eq!(payload["audience"], "user");
    assert_eq!(payload["kind"], "order.shipped");
    assert_eq!(payload["importance"], "high");
    assert_eq!(payload["title"], "Shipped");
    assert_eq!(payload["message"], "Your order left");
    assert_eq!(payload["actionUrl"], "/orders/7");
    assert_eq!(payload["data"], json!({"order": 7}));
    assert_eq!(payload["expiresAt"], serde_json::Value::Null);
    let created = payload["createdAt"].as_str().unwrap();
    assert!(
        created.ends_with('Z') && created.len() == "2026-11-27T09:18:14.123456Z".len(),
        "{created}"
    );
    // The event's transaction is the inserting one.
    let tx: String = pg
        .query_one("select pg_current_xact_id()::text", &[])
        .await
        .unwrap()
        .get(0);
    assert!(row.get::<_, String>("tx").parse::<u64>().unwrap() < tx.parse::<u64>().unwrap());
}

#[tokio::test]
async fn notification_ids_are_version_7_and_lead_with_their_creation_millisecond() {
    let db = TestDb::migrated().await;
    let pg = db.client().await;
    let user = insert_user(&pg, "Ada", "USER", None).await;
    let mut previous: Option<(i64, Uuid)> = None;
    for _ in 0..5 {
        let row = pg
            .query_one(
                "with before as (select clock_timestamp() as t)
                 insert into herald.notifications (user_id, title)
                 select $1, 'v7' from before
                 returning id,
                   (select (extract(epoch from t) * 1000)::bigint from before) as not_before,
                   (extract(epoch from clock_timestamp()) * 1000)::bigint + 1 as not_after",
                &[&user],
            )
            .await
            .unwrap();
        let id: Uuid = row.get("id");
        assert_eq!(id.get_version_num(), 7, "{id}");
        assert_eq!(id.get_variant(), uuid::Variant::RFC4122, "{id}");
        let (seconds, nanos) = id.get_timestamp().unwrap().to_unix();
        let millis = seconds as i64 * 1000 + i64::from(nanos / 1_000_000);
        assert!(
            (row.get::<_, i64>("not_before") - 1..=row.get::<_, i64>("not_after"))
                .contains(&millis),
            "{id} says {millis} ms"
        );
        // Ids sort by creation time; within one millisecond, by chance.
        if let Some((earlier, previous)) = previous {
            assert!(millis >= earlier, "{id} is older than {previous}");
            assert!(
                millis == earlier || id > previous,
                "{id} sorts before {previous}"
            );
        }
        previous = Some((millis, id));
    }
    // A producer's own id is kept as it is.
    let own = Uuid::new_v4();
    let kept: Uuid = pg
        .query_one(
            "insert into herald.notifications (id, user_id, title) values ($1, $2, 'own') returning id",
            &[&own, &user],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(kept, own);
}

#[tokio::test]
async fn audience_is_inferred_from_user_or_sector() {
    let db = TestDb::migrated().await;
    let pg = db.client().await;
    let user = insert_user(&pg, "Ada", "USER", None).await;
    let sector = Uuid::new_v4();
    pg.execute(
        "insert into herald.notifications (user_id, title) values ($1, 'a')",
        &[&user],
    )
    .await
    .unwrap();
    pg.execute(
        "insert into herald.notifications (sector_id, title) values ($1, 'b')",
        &[&sector],
    )
    .await
    .unwrap();
    let audiences: Vec<String> = column(
        &pg,
        "select audience from herald.notifications order by title",
        &[],
    )
    .await;
    assert_eq!(audiences, ["user", "sector"]);
    let error = pg
        .execute("insert into herald.notifications (title) values ('c')", &[])
        .await
        .unwrap_err();
    assert_eq!(refused_by(&error), "notifications_audience_required");
}

#[tokio::test]
async fn reads_retractions_and_user_changes_log_their_events() {
    let db = TestDb::migrated().await;
    let pg = db.client().await;
    let sector = Uuid::new_v4();
    let user = insert_user(&pg, "Ada", "USER", Some(sector)).await;
    let n: Uuid = pg
        .query_one(
            "insert into herald.notifications (sector_id, title) values ($1, 't') returning id",
            &[&sector],
        )
        .await
        .unwrap()
        .get(0);
    pg.execute(
        "insert into herald.notification_seen (notification_id, user_id) values ($1, $2)",
        &[&n, &user],
    )
    .await
    .unwrap();
    pg.execute(
        "update herald.notifications set retracted_at = now() where id = $1",
        &[&n],
    )
    .await
    .unwrap();
    // Changing nothing that matters, or the name, logs nothing.
    pg.execute(
        "update herald.users set name = 'Ada L.' where id = $1",
        &[&user],
    )
    .await
    .unwrap();
    let new_sector = Uuid::new_v4();
    pg.execute(
        "update herald.users set sector_id = $2, role = 'ADMIN' where id = $1",
        &[&user, &new_sector],
    )
    .await
    .unwrap();
    pg.execute(
        "update herald.users set is_active = false where id = $1",
        &[&user],
    )
    .await
    .unwrap();

    let rows = events(&pg).await;
    let kinds: Vec<String> = rows.iter().map(|r| r.get("kind")).collect();
    assert_eq!(
        kinds,
        [
            "notification.created",
            "notification.read",
            "notification.retracted",
            "user.updated",
            "user.updated"
        ]
    );

    let read = &rows[1];
    assert_eq!(read.get::<_, Option<Uuid>>("user_id"), Some(user));
    assert_eq!(
        read.get::<_, Option<String>>("audience").as_deref(),
        Some("user")
    );
    let payload: serde_json::Value = read.get("payload");
    assert_eq!(payload["notificationId"], json!(n));
    assert!(payload["readAt"].as_str().unwrap().ends_with('Z'));

    let retracted = &rows[2];
    assert_eq!(retracted.get::<_, Option<Uuid>>("sector_id"), Some(sector));
    assert_eq!(
        retracted.get::<_, Option<String>>("audience").as_deref(),
        Some("sector")
    );
    assert_eq!(
        retracted.get::<_, serde_json::Value>("payload")["notificationId"],
        json!(n)
    );

    let moved: serde_json::Value = rows[3].get("payload");
    assert_eq!(
        moved,
        json!({"userId": user, "isActive": true, "role": "ADMIN", "sectorId": new_sector, "previousRole": "USER", "previousSectorId": sector})
    );
    let deactivated: serde_json::Value = rows[4].get("payload");
    assert_eq!(deactivated["isActive"], false);
}

#[tokio::test]
async fn a_notification_inserted_already_retracted_or_expired_is_never_logged_as_created() {
    let db = TestDb::migrated().await;
    let pg = db.client().await;
    let user = insert_user(&pg, "Ada", "USER", None).await;
    // One statement: a backfill of history beside one live row.
    let live: Uuid = pg
        .query(
            "insert into herald.notifications (user_id, title, created_at, expires_at, retracted_at)
             values ($1, 'retracted', now(), null, now()),
                    ($1, 'expired', now() - interval '2 hours', now() - interval '1 hour', null),
                    ($1, 'expiring this instant', now() - interval '1 hour', now(), null),
                    ($1, 'live', now(), now() + interval '1 hour', null)
             returning id, title",
            &[&user],
        )
        .await
        .unwrap()
        .iter()
        .find(|row| row.get::<_, String>("title") == "live")
        .map(|row| row.get("id"))
        .unwrap();
    let rows = events(&pg).await;
    let logged: Vec<(String, Option<Uuid>)> = rows
        .iter()
        .map(|r| (r.get("kind"), r.get("notification_id")))
        .collect();
    assert_eq!(logged, [("notification.created".to_owned(), Some(live))]);
}

#[tokio::test]
async fn deleting_a_user_logs_a_deactivation_and_truncating_users_is_refused() {
    let db = TestDb::migrated().await;
    let pg = db.client().await;
    let sector = Uuid::new_v4();
    let ada = insert_user(&pg, "Ada", "ADMIN", Some(sector)).await;
    let gone = insert_user(&pg, "Gone", "USER", None).await;
    pg.execute(
        "update herald.users set is_active = false where id = $1",
        &[&gone],
    )
    .await
    .unwrap();
    let before = events(&pg).await.len();
    // An inactive user has no sockets: deleting them tells herald nothing new.
    pg.execute(
        "delete from herald.users where id = any ($1)",
        &[&vec![ada, gone]],
    )
    .await
    .unwrap();
    let rows = events(&pg).await;
    assert_eq!(rows.len(), before + 1);
    let deleted = &rows[before];
    assert_eq!(deleted.get::<_, String>("kind"), "user.updated");
    assert_eq!(deleted.get::<_, Option<Uuid>>("user_id"), Some(ada));
    assert_eq!(
        deleted.get::<_, Option<String>>("audience").as_deref(),
        Some("user")
    );
    assert_eq!(
        deleted.get::<_, serde_json::Value>("payload"),
        json!({"userId": ada, "isActive": false, "deleted": true, "role": "ADMIN", "sectorId": sector, "previousRole": "ADMIN", "previousSectorId": sector})
    );

    // TRUNCATE fires no delete trigger, so it would leave sockets connected.
    insert_user(&pg, "Grace", "USER", None).await;
    let error = pg
        .batch_execute("truncate herald.users cascade")
        .await
        .unwrap_err();
    assert_eq!(refused_by(&error), "users_deletes_logged");
    let users: i64 = pg
        .query_one("select count(*) from herald.users", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(users, 1);
}

#[tokio::test]
async fn a_retraction_is_final_and_content_is_immutable() {
    let db = TestDb::migrated().await;
    let pg = db.client().await;
    let n: Uuid = pg
        .query_one(
            "insert into herald.notifications (audience, title) values ('all', 't') returning id",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let error = pg
        .execute(
            "update herald.notifications set title = 'changed' where id = $1",
            &[&n],
        )
        .await
        .unwrap_err();
    assert_eq!(refused_by(&error), "notifications_immutable");
    pg.execute(
        "update herald.notifications set retracted_at = now() where id = $1",
        &[&n],
    )
    .await
    .unwrap();
    let error = pg
        .execute("update herald.notifications set retracted_at = now() + interval '1 minute' where id = $1", &[&n])
        .await
        .unwrap_err();
    assert_eq!(refused_by(&error), "notifications_retraction_final");
    let retractions: i64 = pg
        .query_one(
            "select count(*) from herald.events where kind = 'notification.retracted'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(retractions, 1);
}

#[tokio::test]
async fn one_insert_select_of_a_thousand_rows_logs_a_thousand_events_and_wakes_a_listener_once() {
    let db = TestDb::migrated().await;
    let pg = db.client().await;
    let user = insert_user(&pg, "Ada", "USER", None).await;

    let (listener, mut connection) = tokio_postgres::connect(&db.url, tokio_postgres::NoTls)
        .await
        .unwrap();
    let (tx, mut notifications) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(Ok(message)) = messages.next().await {
            if let AsyncMessage::Notification(n) = message {
                let _ = tx.send((n.channel().to_owned(), n.payload().to_owned()));
            }
        }
    });
    listener
        .batch_execute("listen herald_events")
        .await
        .unwrap();

    pg.execute(
        "insert into herald.notifications (user_id, title) select $1, 'n' || i from generate_series(1, 1000) i",
        &[&user],
    )
    .await
    .unwrap();
    let count: i64 = pg
        .query_one("select count(*) from herald.events", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, 1000);

    // PostgreSQL delivers notifications in commit order, so a marker sent
    // in a later transaction arrives after every wake-up the insert made.
    async fn next(
        notifications: &mut tokio::sync::mpsc::UnboundedReceiver<(String, String)>,
    ) -> (String, String) {
        tokio::time::timeout(Duration::from_secs(5), notifications.recv())
            .await
            .expect("a notification within 5 s")
            .expect("the listening connection is up")
    }
    let wake = ("herald_events".to_owned(), String::new());
    let marker = |payload: &str| ("herald_events".to_owned(), payload.to_owned());
    pg.batch_execute("notify herald_events, 'after the insert'")
        .await
        .unwrap();
    assert_eq!(next(&mut notifications).await, wake);
    assert_eq!(
        next(&mut notifications).await,
        marker("after the insert"),
        "a second wake-up arrived"
    );

    // A statement that writes nothing wakes nobody.
    pg.execute(
        "insert into herald.notifications (user_id, title) select $1, 'x' where false",
        &[&user],
    )
    .await
    .unwrap();
    pg.batch_execute("notify herald_events, 'after nothing'")
        .await
        .unwrap();
    assert_eq!(
        next(&mut notifications).await,
        marker("after nothing"),
        "an empty insert woke the listener"
    );
}

#[tokio::test]
async fn every_rule_refuses_its_bad_row_with_a_named_constraint_and_leaves_nothing_behind() {
    let db = TestDb::migrated().await;
    let pg = db.client().await;
    let user = insert_user(&pg, "Ada", "USER", None).await;
    let sector = Uuid::new_v4();
    let long_title = "x".repeat(201);
    let big_data = format!("{{\"blob\": \"{}\"}}", "x".repeat(17 * 1024));
    let cases: Vec<(&str, String)> = vec![
        (
            "notifications_title_length",
            format!("insert into herald.notifications (user_id, title) values ('{user}', '')"),
        ),
        (
            "notifications_title_length",
            format!(
                "insert into herald.notifications (user_id, title) values ('{user}', '{long_title}')"
            ),
        ),
        (
            "notifications_importance_valid",
            format!(
                "insert into herald.notifications (user_id, title, importance) values ('{user}', 't', 'critical')"
            ),
        ),
        (
            "notifications_audience_valid",
            "insert into herald.notifications (audience, title) values ('everyone', 't')".into(),
        ),
        (
            "notifications_user_audience",
            format!(
                "insert into herald.notifications (audience, user_id, sector_id, title) values ('sector', '{user}', '{sector}', 't')"
            ),
        ),
        (
            "notifications_sector_audience",
            format!(
                "insert into herald.notifications (audience, user_id, sector_id, title) values ('user', '{user}', '{sector}', 't')"
            ),
        ),
        (
            "notifications_data_object",
            format!(
                "insert into herald.notifications (user_id, title, data) values ('{user}', 't', '[1, 2]')"
            ),
        ),
        (
            "notifications_data_size",
            format!(
                "insert into herald.notifications (user_id, title, data) values ('{user}', 't', '{big_data}')"
            ),
        ),
        (
            "notifications_expires_after_created",
            format!(
                "insert into herald.notifications (user_id, title, expires_at) values ('{user}', 't', now() - interval '1 hour')"
            ),
        ),
        (
            "notifications_message_length",
            format!(
                "insert into herald.notifications (user_id, title, message) values ('{user}', 't', repeat('m', 4001))"
            ),
        ),
    ];
    for (constraint, sql) in &cases {
        let error = pg.batch_execute(sql).await.expect_err(constraint);
        assert_eq!(refused_by(&error), *constraint, "{sql:.120}: {error:?}");
    }
    // A multi-row insert with one bad row writes nothing at all.
    let error = pg
        .execute(
            "insert into herald.notifications (user_id, title) values ($1, 'fine'), ($1, '')",
            &[&user],
        )
        .await
        .unwrap_err();
    assert_eq!(refused_by(&error), "notifications_title_length");
    let left: (i64, i64) = {
        let row = pg
            .query_one("select (select count(*) from herald.notifications), (select count(*) from herald.events)", &[])
            .await
            .unwrap();
        (row.get(0), row.get(1))
    };
    assert_eq!(left, (0, 0));
}

#[tokio::test]
async fn the_delivery_audit_view_joins_sends_and_reads() {
    let db = TestDb::migrated().await;
    let pg = db.client().await;
    let user = insert_user(&pg, "Ada", "USER", None).await;
    let n: Uuid = pg
        .query_one("insert into herald.notifications (user_id, title) values ($1, 'Audit me') returning id", &[&user])
        .await
        .unwrap()
        .get(0);
    pg.execute(
        "insert into herald.notification_deliveries (notification_id, user_id, status, sent_at, delivered_at)
         values ($1, $2, 'DELIVERED', now(), now() + interval '2 seconds')",
        &[&n, &user],
    )
    .await
    .unwrap();
    pg.execute(
        "insert into herald.notification_seen (notification_id, user_id, seen_at) values ($1, $2, now() + interval '5 seconds')",
        &[&n, &user],
    )
    .await
    .unwrap();
    let row = pg
        .query_one(
            "select title, audience, channel, extract(epoch from delivery_delay)::int, extract(epoch from read_delay)::int
               from herald.delivery_audit where notification_id = $1",
            &[&n],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "Audit me");
    assert_eq!(row.get::<_, String>(1), "user");
    assert_eq!(row.get::<_, String>(2), "IN_APP");
    assert_eq!(row.get::<_, i32>(3), 2);
    assert_eq!(row.get::<_, i32>(4), 3);
}

async fn delivery_rows(pg: &tokio_postgres::Client) -> Vec<(Uuid, Uuid)> {
    pg.query(
        "select notification_id, user_id from herald.notification_deliveries order by 1, 2",
        &[],
    )
    .await
    .unwrap()
    .iter()
    .map(|row| (row.get(0), row.get(1)))
    .collect()
}

async fn insert_notification(pg: &tokio_postgres::Client, column: &str, id: Uuid) -> Uuid {
    pg.query_one(
        &format!(
            "insert into herald.notifications ({column}, title) values ($1, 'Hi') returning id"
        ),
        &[&id],
    )
    .await
    .unwrap()
    .get(0)
}

/// Ada and Grace in one sector, and a broadcast to it.
struct Sector {
    db: TestDb,
    id: Uuid,
    pg: tokio_postgres::Client,
    pool: herald::db::Pool,
    ada: Uuid,
    grace: Uuid,
    broadcast: Uuid,
}

impl Sector {
    async fn with_a_broadcast() -> Self {
        let db = TestDb::migrated().await;
        let pg = db.client().await;
        let sector = Uuid::new_v4();
        let ada = insert_user(&pg, "Ada", "USER", Some(sector)).await;
        let grace = insert_user(&pg, "Grace", "USER", Some(sector)).await;
        let broadcast = insert_notification(&pg, "sector_id", sector).await;
        let pool = herald::db::pool(&db.url, 2).unwrap();
        Self {
            db,
            id: sector,
            pg,
            pool,
            ada,
            grace,
            broadcast,
        }
    }
}

/// The plans PostgreSQL makes for a delivery batch's parent lookups before
/// anything was analyzed (a new database, or the first minute of a busy
/// one): each distinct notification and user is found by its key, never by
/// scanning a table whose size grows, as a join once did (it hashed both
/// tables for every batch). Both the plan for the batch at hand and the
/// generic one a connection keeps from its sixth batch on, which assumes
/// ten ids and on a small table would otherwise scan it, comparing each
/// row with every id.
#[tokio::test]
async fn a_delivery_batch_looks_up_its_parents_by_index_before_any_analyze() {
    let db = TestDb::migrated().await;
    let pg = db.client().await;
    pg.batch_execute(
        "insert into herald.users (id, name) select gen_random_uuid(), 'u' || i from generate_series(1, 1000) i;
         insert into herald.notifications (user_id, title)
           select u.id, 'Hi' from herald.users u, generate_series(1, 20);",
    )
    .await
    .unwrap();
    for (table, sql, ids) in [
        (
            "notifications",
            include_str!("../../sql/delivery_live_notifications.sql"),
            "select array_agg(id) from (select id from herald.notifications limit 500) n",
        ),
        (
            "users",
            include_str!("../../sql/delivery_live_users.sql"),
            "select array_agg(id) from (select id from herald.users limit 500) u",
        ),
    ] {
        let ids: String = pg
            .query_one(&format!("select ({ids})::text"), &[])
            .await
            .unwrap()
            .get(0);
        for mode in ["force_custom_plan", "force_generic_plan"] {
            pg.batch_execute(&format!(
                "set plan_cache_mode = {mode}; prepare lookup as {sql}"
            ))
            .await
            .unwrap();
            let plan: Vec<String> =
                column(&pg, &format!("explain execute lookup('{ids}')"), &[]).await;
            let plan = plan.join("\n");
            pg.batch_execute("deallocate lookup").await.unwrap();
            assert!(
                plan.contains(&format!("Index Only Scan using {table}_pkey"))
                    || plan.contains(&format!("Bitmap Index Scan on {table}_pkey")),
                "{table} looked up by its key ({mode}):\n{plan}"
            );
            assert!(
                !plan.contains(&format!("Seq Scan on {table}")),
                "no scan of {table} ({mode}):\n{plan}"
            );
        }
    }
}

#[tokio::test]
async fn delivery_records_skip_and_follow_deleted_notifications_and_users() {
    let sector = Sector::with_a_broadcast().await;
    let (pg, ada, grace, broadcast) = (&sector.pg, sector.ada, sector.grace, sector.broadcast);
    let personal = insert_notification(pg, "user_id", ada).await;
    let now = time::OffsetDateTime::now_utc();

    // Pairs whose notification or user does not exist are skipped, the rest written.
    let written = herald::db::deliveries::record_sent(
        &mut sector.pool.get().await.unwrap(),
        &[
            (broadcast, ada, now),
            (broadcast, grace, now),
            (personal, ada, now),
            (Uuid::new_v4(), ada, now),
            (broadcast, Uuid::new_v4(), now),
        ],
        Method::Insert,
    )
    .await
    .unwrap();
    assert_eq!(
        written,
        Recorded {
            rows: 3,
            method: Method::Insert
        }
    );
    let mut expected = vec![(broadcast, ada), (broadcast, grace), (personal, ada)];
    expected.sort();
    assert_eq!(delivery_rows(pg).await, expected);

    // Deleting a notification or a user deletes their delivery records.
    pg.execute(
        "delete from herald.notifications where id = $1",
        &[&personal],
    )
    .await
    .unwrap();
    pg.execute("delete from herald.users where id = $1", &[&grace])
        .await
        .unwrap();
    assert_eq!(delivery_rows(pg).await, vec![(broadcast, ada)]);
}

/// A batch as the writer sends it: thousands of rows, pairs repeated
/// within it and recorded before, pairs of a deleted notification and of a
/// deleted user, and a pair acknowledged already. Exactly the new pairs of
/// live notifications and users land, with their times; the acknowledged
/// one is not downgraded. A second batch on the same connection carries
/// nothing of the first.
#[tokio::test]
async fn a_mixed_batch_of_thousands_lands_exactly_its_new_live_pairs() {
    const USERS: usize = 1_500;
    let sector = Sector::with_a_broadcast().await;
    let (pg, broadcast) = (&sector.pg, sector.broadcast);
    let users: Vec<Uuid> = column(
        pg,
        "insert into herald.users (id, name, sector_id)
             select gen_random_uuid(), 'member ' || i, $1 from generate_series(1, $2::int) as i
             returning id",
        &[&sector.id, &(USERS as i32)],
    )
    .await;
    let second = insert_notification(pg, "sector_id", sector.id).await;
    let deleted_notification = insert_notification(pg, "sector_id", sector.id).await;
    let (deleted_user, acknowledged, recorded) = (users[0], users[1], users[2]);
    let earlier = time::macros::datetime!(2026-01-01 00:00 UTC);
    pg.execute(
        "insert into herald.notification_deliveries (notification_id, user_id, status, sent_at, delivered_at)
         values ($1, $2, 'DELIVERED', $3, $3), ($1, $4, 'SENT', $3, null)",
        &[&broadcast, &acknowledged, &earlier, &recorded],
    )
    .await
    .unwrap();
    pg.execute(
        "delete from herald.notifications where id = $1",
        &[&deleted_notification],
    )
    .await
    .unwrap();
    pg.execute("delete from herald.users where id = $1", &[&deleted_user])
        .await
        .unwrap();

    let now = time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .unwrap();
    let mut batch = Vec::new();
    for notification in [broadcast, second, deleted_notification] {
        for &user in &users {
            batch.push((notification, user, now));
        }
    }
    // Every tenth pair of the broadcast twice in the same batch.
    batch.extend(users.iter().step_by(10).map(|&user| (broadcast, user, now)));
    batch.sort_unstable_by_key(|&(notification, user, _)| (notification, user));

    // Asked for a plain insert, the batch meets the pairs recorded before
    // (and its own repeats) and goes `on conflict` instead.
    let mut writer = sector.pool.get().await.unwrap();
    let written = herald::db::deliveries::record_sent(&mut writer, &batch, Method::Insert)
        .await
        .unwrap();
    // Both notifications to every member but the deleted one, less the two
    // broadcast pairs recorded before.
    let live = USERS - 1;
    assert_eq!(
        written,
        Recorded {
            rows: (2 * live - 2) as u64,
            method: Method::OnConflict
        }
    );

    let rows: Vec<(Uuid, Uuid, String, time::OffsetDateTime)> = pg
        .query(
            "select notification_id, user_id, status, sent_at from herald.notification_deliveries
              where channel = 'IN_APP' order by 1, 2",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1), row.get(2), row.get(3)))
        .collect();
    let mut expected: Vec<(Uuid, Uuid, String, time::OffsetDateTime)> = Vec::new();
    for notification in [broadcast, second] {
        for &user in &users[1..] {
            let (status, at) = match (notification == broadcast, user) {
                (true, user) if user == acknowledged => ("DELIVERED", earlier),
                (true, user) if user == recorded => ("SENT", earlier),
                _ => ("SENT", now),
            };
            expected.push((notification, user, status.to_owned(), at));
        }
    }
    expected.sort_by_key(|row| (row.0, row.1));
    assert_eq!(rows.len(), expected.len());
    assert!(rows == expected, "the rows differ from the expected ones");

    // Nothing of the first batch's failed insert is left on the connection:
    // this batch's plain insert goes through.
    pg.execute("delete from herald.notification_deliveries", &[])
        .await
        .unwrap();
    let only = insert_notification(pg, "user_id", users[5]).await;
    for method in [Method::Insert, Method::OnConflict] {
        let written =
            herald::db::deliveries::record_sent(&mut writer, &[(only, users[5], now)], method)
                .await
                .unwrap();
        let rows = u64::from(method == Method::Insert);
        assert_eq!(written, Recorded { rows, method });
        assert_eq!(delivery_rows(pg).await, vec![(only, users[5])]);
    }
}

#[tokio::test]
async fn a_delivery_batch_waits_for_a_delete_in_flight_and_leaves_no_orphan() {
    let sector = Sector::with_a_broadcast().await;
    let (pg, ada, grace, broadcast) = (&sector.pg, sector.ada, sector.grace, sector.broadcast);
    let other = insert_notification(pg, "sector_id", sector.id).await;

    let mut after_first = vec![(other, ada), (other, grace)];
    after_first.sort();
    for (delete, expected) in [
        (
            format!("delete from herald.notifications where id = '{broadcast}'"),
            after_first,
        ),
        (
            format!("delete from herald.users where id = '{grace}'"),
            vec![(other, ada)],
        ),
    ] {
        let mut deleter = sector.db.client().await;
        let transaction = deleter.transaction().await.unwrap();
        transaction.batch_execute(&delete).await.unwrap();
        let deleter_pid: i32 = transaction
            .query_one("select pg_backend_pid()", &[])
            .await
            .unwrap()
            .get(0);

        let mut writer = sector.pool.get().await.unwrap();
        let now = time::OffsetDateTime::now_utc();
        let batch = tokio::spawn(async move {
            herald::db::deliveries::record_sent(
                &mut writer,
                &[
                    (broadcast, ada, now),
                    (other, grace, now),
                    (other, ada, now),
                ],
                Method::Insert,
            )
            .await
        });
        // The batch takes the lock deletes hold (migration V10), so it waits:
        // PostgreSQL shows a backend blocked by the deleter's...
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let blocked: i64 = pg
                .query_one(
                    "select count(*) from pg_stat_activity where $1 = any (pg_blocking_pids(pid))",
                    &[&deleter_pid],
                )
                .await
                .unwrap()
                .get(0);
            if blocked > 0 {
                break;
            }
            assert!(!batch.is_finished(), "batch did not wait for: {delete}");
            assert!(
                tokio::time::Instant::now() < deadline,
                "batch neither finished nor waited for: {delete}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(!batch.is_finished(), "batch did not wait for: {delete}");
        transaction.commit().await.unwrap();
        // ...and then skips the rows the delete removed.
        batch.await.unwrap().unwrap();
        assert_eq!(delivery_rows(pg).await, expected, "after: {delete}");
    }
}

/// The other order: a delete that comes while a batch is in flight waits
/// for the batch's commit, then deletes what it wrote.
#[tokio::test]
async fn a_delete_waits_for_a_delivery_batch_in_flight_and_removes_what_it_wrote() {
    let sector = Sector::with_a_broadcast().await;
    let (pg, ada, broadcast) = (&sector.pg, sector.ada, sector.broadcast);
    for delete in [
        format!("delete from herald.notifications where id = '{broadcast}'"),
        format!("delete from herald.users where id = '{ada}'"),
    ] {
        // A batch between its lock and its commit, as the writer runs it.
        let mut writer = sector.db.client().await;
        let batch = writer.transaction().await.unwrap();
        batch
            .batch_execute(include_str!("../../sql/delivery_lock_parents.sql"))
            .await
            .unwrap();
        batch
            .execute(
                "insert into herald.notification_deliveries (notification_id, user_id, status, sent_at)
                 select $1, $2, 'SENT', now()
                  where exists (select from herald.notifications where id = $1)
                    and exists (select from herald.users where id = $2)
                 on conflict do nothing",
                &[&broadcast, &ada],
            )
            .await
            .unwrap();
        let writer_pid: i32 = batch
            .query_one("select pg_backend_pid()", &[])
            .await
            .unwrap()
            .get(0);

        let url = sector.db.url.clone();
        let statement = delete.clone();
        let deleting = tokio::spawn(async move {
            let deleter = crate::helpers::connect(&url).await;
            deleter.batch_execute(&statement).await
        });
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let blocked: i64 = pg
                .query_one(
                    "select count(*) from pg_stat_activity where $1 = any (pg_blocking_pids(pid))",
                    &[&writer_pid],
                )
                .await
                .unwrap()
                .get(0);
            if blocked > 0 {
                break;
            }
            assert!(!deleting.is_finished(), "the delete did not wait: {delete}");
            assert!(
                tokio::time::Instant::now() < deadline,
                "the delete neither finished nor waited: {delete}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        batch.commit().await.unwrap();
        deleting.await.unwrap().unwrap();
        assert_eq!(delivery_rows(pg).await, vec![], "an orphan after: {delete}");
    }
}
