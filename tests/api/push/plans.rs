//! Deciding who gets a push (`sql/push_plan.sql`), run the way the worker
//! runs it: every audience reaches its own members, and what a tick costs
//! grows with the recipients, never with every subscription there is.

use serde_json::Value;
use uuid::Uuid;

use crate::helpers::{TestDb, column, insert_user};

/// Runs the plan as the worker does (no delay, `ADMIN` as the admin role,
/// every importance, a day's TTL, 200 notifications at most), under
/// `explain` when `explain` is given; returns its one row as JSON.
async fn plan(pg: &tokio_postgres::Client, explain: &str) -> Value {
    let sql = format!("{explain} {}", include_str!("../../../sql/push_plan.sql"));
    let row = pg
        .query_one(&sql, &[&0f64, &vec!["ADMIN"], &1i32, &86_400f64, &200i64])
        .await
        .unwrap_or_else(|error| panic!("push_plan.sql: {error}"));
    if explain.is_empty() {
        serde_json::json!({"decided": row.get::<_, i64>(0), "planned": row.get::<_, i64>(1)})
    } else {
        row.get(0)
    }
}

/// `count` subscriptions for `user`, with keys of the lengths the table
/// checks (their contents are never read here).
async fn subscribe(pg: &tokio_postgres::Client, user: Uuid, count: i32) {
    pg.execute(
        "insert into herald.push_subscriptions (user_id, endpoint, p256dh, auth)
         select $1, 'https://push.herald.test/' || gen_random_uuid(), repeat('k', 87), repeat('a', 22)
           from generate_series(1, $2)",
        &[&user, &count],
    )
    .await
    .unwrap();
}

/// A notification to `audience`: `to` is its user or its sector.
async fn notify(pg: &tokio_postgres::Client, audience: &str, to: Option<Uuid>) -> Uuid {
    let user = to.filter(|_| audience == "user");
    let sector = to.filter(|_| audience == "sector");
    pg.query_one(
        "insert into herald.notifications (audience, user_id, sector_id, title)
         values ($1, $2, $3, 'Hi') returning id",
        &[&audience, &user, &sector],
    )
    .await
    .unwrap()
    .get(0)
}

#[tokio::test]
async fn each_audience_is_planned_for_its_active_subscribed_members_only() {
    let db = TestDb::migrated().await;
    let pg = db.client().await;
    let (north, south) = (Uuid::new_v4(), Uuid::new_v4());
    let ada = insert_user(&pg, "Ada", "USER", Some(north)).await;
    let away = insert_user(&pg, "Away", "USER", Some(north)).await;
    // In the sector, with no subscription.
    insert_user(&pg, "Quiet", "USER", Some(north)).await;
    let bob = insert_user(&pg, "Bob", "USER", Some(south)).await;
    let root = insert_user(&pg, "Root", "ADMIN", Some(south)).await;
    let cy = insert_user(&pg, "Cy", "USER", None).await;
    for user in [ada, away, bob, root] {
        subscribe(&pg, user, 1).await;
    }
    subscribe(&pg, cy, 2).await;
    pg.execute(
        "update herald.users set is_active = false where id = $1",
        &[&away],
    )
    .await
    .unwrap();

    let personal = notify(&pg, "user", Some(cy)).await;
    let sector = notify(&pg, "sector", Some(north)).await;
    let admins = notify(&pg, "admin", None).await;
    let everyone = notify(&pg, "all", None).await;

    assert_eq!(
        plan(&pg, "").await,
        serde_json::json!({"decided": 4, "planned": 9})
    );
    let planned: Vec<String> = column(
        &pg,
        "select notification_id::text || ' ' || user_id::text || ' ' || count(*)
           from herald.push_sends group by notification_id, user_id order by 1",
        &[],
    )
    .await;
    let mut expected: Vec<String> = [
        (personal, cy, 2),
        (sector, ada, 1),
        (admins, root, 1),
        (everyone, ada, 1),
        (everyone, bob, 1),
        (everyone, root, 1),
        (everyone, cy, 2),
    ]
    .iter()
    .map(|(notification, user, sends)| format!("{notification} {user} {sends}"))
    .collect();
    expected.sort();
    assert_eq!(planned, expected);
}

/// Rows a plan node and everything under it read or produced, over all
/// its loops: a measure of the work, which the planner's choices move.
fn rows_touched(node: &Value) -> f64 {
    let field = |name: &str| node.get(name).and_then(Value::as_f64).unwrap_or(0.0);
    let own = (field("Actual Rows")
        + field("Rows Removed by Filter")
        + field("Rows Removed by Join Filter"))
        * field("Actual Loops");
    let children = node
        .get("Plans")
        .and_then(Value::as_array)
        .map_or(0.0, |plans| plans.iter().map(rows_touched).sum());
    own + children
}

/// When PostgreSQL last analyzed the tables, for the plan test below.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Statistics {
    /// Never: a new database, or the first minute of a busy one.
    None,
    /// While there were no notifications yet, as after a deployment's
    /// first hour: the table has grown since.
    BeforeTheNotifications,
    Current,
}

/// The sector of the subscribed users in the plan tests below.
const SUBSCRIBED: &str = "5ec70000-0000-4000-8000-000000000001";

/// 2,000 users in the sector [`SUBSCRIBED`], named `subscribed 1` to
/// `subscribed 2000`, with a subscription each; the sector's id.
async fn subscribed_sector(pg: &tokio_postgres::Client) -> Uuid {
    pg.batch_execute(&format!(
        "insert into herald.users (id, name, sector_id)
           select gen_random_uuid(), 'subscribed ' || i, '{SUBSCRIBED}' from generate_series(1, 2000) i;
         insert into herald.push_subscriptions (user_id, endpoint, p256dh, auth)
           select id, 'https://push.herald.test/' || id, repeat('k', 87), repeat('a', 22)
             from herald.users;"
    ))
    .await
    .unwrap();
    SUBSCRIBED.parse().unwrap()
}

/// 150 personal notifications for users with no subscription, and one for
/// a user with one, while 2,000 users in a sector have subscriptions, 1,000
/// others have 5,000 earlier notifications and their delivery records, and
/// the sector had a broadcast: the plan takes each notification
/// by key, finds its user and their subscriptions by key, and checks only
/// a pair with a subscription, by key, whatever the statistics say. Plans
/// it replaced compared each notification with every subscription
/// (302,000 rows for this tick), hashed every delivery record for the
/// checks, or found every notification's recipients to keep the taken
/// ones' (each fails the bound below).
#[tokio::test]
async fn deciding_personal_notifications_costs_their_recipients_not_every_subscription() {
    for statistics in [
        Statistics::None,
        Statistics::BeforeTheNotifications,
        Statistics::Current,
    ] {
        let db = TestDb::migrated().await;
        let pg = db.client().await;
        subscribed_sector(&pg).await;
        pg.batch_execute(
            "insert into herald.users (id, name)
               select gen_random_uuid(), 'unsubscribed ' || i from generate_series(1, 1000) i;",
        )
        .await
        .unwrap();
        if statistics == Statistics::BeforeTheNotifications {
            pg.batch_execute("analyze").await.unwrap();
        }
        pg.batch_execute(
            &format!("insert into herald.notifications (user_id, title)
               select u.id, 'Before' from herald.users u, generate_series(1, 5) where u.name like 'unsubscribed %';
             insert into herald.notification_deliveries (notification_id, user_id, status, sent_at)
               select id, user_id, 'SENT', now() from herald.notifications;
             insert into herald.notifications (sector_id, title) values ('{SUBSCRIBED}', 'Before');
             delete from herald.push_due;
             insert into herald.notifications (user_id, title)
               select id, 'Hi' from herald.users where name like 'unsubscribed %' limit 150;"),
        )
        .await
        .unwrap();
        let subscribed: Uuid = pg
            .query_one(
                "select id from herald.users where name = 'subscribed 1'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        notify(&pg, "user", Some(subscribed)).await;
        if statistics == Statistics::Current {
            pg.batch_execute("analyze").await.unwrap();
        }

        let explained = plan(&pg, "explain (analyze, format json)").await;
        let touched = rows_touched(&explained[0]["Plan"]);
        let sends: Vec<i64> = column(&pg, "select count(*) from herald.push_sends", &[]).await;
        assert_eq!(
            sends,
            vec![1],
            "one send, to the one subscribed user ({statistics:?})"
        );
        assert!(
            touched < 10_000.0,
            "{touched} rows touched deciding 151 personal notifications ({statistics:?}):\n{explained:#}"
        );
    }
}

/// An answer locks its user's sends of the notification
/// (`sql/push_sends_lock_user.sql`) by both keys, also for a broadcast that
/// came after the last analyze: statistics that saw only earlier
/// broadcasts would say the new one has no sends, and the primary key,
/// which also gives their order, would read all of them for each answer.
#[tokio::test]
async fn an_answer_locks_its_users_sends_by_key_after_an_analyze() {
    let db = TestDb::migrated().await;
    let pg = db.client().await;
    let sector = subscribed_sector(&pg).await;
    notify(&pg, "sector", Some(sector)).await;
    plan(&pg, "").await;
    pg.batch_execute("analyze").await.unwrap();
    let broadcast = notify(&pg, "sector", Some(sector)).await;
    assert_eq!(
        plan(&pg, "").await,
        serde_json::json!({"decided": 1, "planned": 2000})
    );
    let user: Uuid = pg
        .query_one(
            "select id from herald.users where name = 'subscribed 1000'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    // A plan for these values, as the worker's connection makes its first
    // five (and keeps making while it costs less than the generic one).
    pg.batch_execute(&format!(
        "set plan_cache_mode = force_custom_plan;
         prepare lock_user as {}",
        include_str!("../../../sql/push_sends_lock_user.sql")
    ))
    .await
    .unwrap();
    let explained: Value = pg
        .query_one(
            &format!("explain (analyze, format json) execute lock_user('{broadcast}', '{user}')"),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let touched = rows_touched(&explained[0]["Plan"]);
    assert!(
        touched < 20.0,
        "{touched} rows touched locking one user's sends of a 2,000-send broadcast:\n{explained:#}"
    );
}
