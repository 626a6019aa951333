//! Inbox state beyond read, in the schema: archive, snooze and preference
//! rows, the events their triggers log, and the rules SQL writers meet as
//! named constraints.

use serde_json::json;
use uuid::Uuid;

use crate::helpers::{TestDb, column, insert_user, refused_by};

async fn kinds(pg: &tokio_postgres::Client) -> Vec<(String, serde_json::Value)> {
    pg.query("select kind, payload from herald.events order by id", &[])
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect()
}

async fn personal(pg: &tokio_postgres::Client, user: Uuid) -> Uuid {
    pg.query_one(
        "insert into herald.notifications (user_id, title) values ($1, 't') returning id",
        &[&user],
    )
    .await
    .unwrap()
    .get(0)
}

#[tokio::test]
async fn archiving_in_sql_reads_ends_the_snooze_and_logs_each_change_in_order() {
    let db = TestDb::migrated().await;
    let pg = db.client().await;
    let user = insert_user(&pg, "Ada", "USER", None).await;
    let n = personal(&pg, user).await;
    pg.execute(
        "insert into herald.notification_snoozed (notification_id, user_id, until)
         values ($1, $2, now() + interval '1 hour')",
        &[&n, &user],
    )
    .await
    .unwrap();
    pg.execute(
        "insert into herald.notification_archived (notification_id, user_id) values ($1, $2)",
        &[&n, &user],
    )
    .await
    .unwrap();
    let seen: i64 = pg
        .query_one(
            "select count(*) from herald.notification_seen where notification_id = $1 and user_id = $2",
            &[&n, &user],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(seen, 1, "archiving reads");
    let snoozed: i64 = pg
        .query_one("select count(*) from herald.notification_snoozed", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(snoozed, 0, "archiving ends the snooze");
    pg.execute("delete from herald.notification_archived", &[])
        .await
        .unwrap();
    let seen_after: i64 = pg
        .query_one("select count(*) from herald.notification_seen", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(seen_after, 1, "unarchiving leaves it read");

    let events = kinds(&pg).await;
    let names: Vec<&str> = events.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        names,
        [
            "notification.created",
            "notification.snoozed",
            "notification.read",
            "notification.unsnoozed",
            "notification.archived",
            "notification.unarchived"
        ]
    );
    assert_eq!(events[3].1["woke"], json!(false), "ended early, not woken");
    assert_eq!(events[4].1["notificationId"], json!(n));
    assert!(events[4].1["archivedAt"].as_str().unwrap().ends_with('Z'));
    assert_eq!(events[5].1, json!({"notificationId": n, "userId": user}));
}

#[tokio::test]
async fn a_snooze_must_end_within_ninety_days_and_only_an_unread_one_is_snoozed() {
    let db = TestDb::migrated().await;
    let pg = db.client().await;
    let user = insert_user(&pg, "Ada", "USER", None).await;
    let n = personal(&pg, user).await;
    let snooze = |until: &'static str| {
        let pg = &pg;
        async move {
            pg.execute(
                &format!(
                    "insert into herald.notification_snoozed (notification_id, user_id, until)
                     values ($1, $2, {until})"
                ),
                &[&n, &user],
            )
            .await
        }
    };
    for (until, constraint) in [
        (
            "now() - interval '1 second'",
            "notification_snoozed_until_future",
        ),
        (
            "now() + interval '91 days'",
            "notification_snoozed_until_bounded",
        ),
    ] {
        let error = snooze(until).await.unwrap_err();
        assert_eq!(refused_by(&error), constraint, "{until}");
    }
    snooze("now() + interval '90 days'").await.unwrap();
    let error = pg
        .execute(
            "update herald.notification_snoozed set until = now() - interval '1 day'",
            &[],
        )
        .await
        .unwrap_err();
    assert_eq!(refused_by(&error), "notification_snoozed_until_future");
    pg.execute("delete from herald.notification_snoozed", &[])
        .await
        .unwrap();
    pg.execute(
        "insert into herald.notification_seen (notification_id, user_id) values ($1, $2)",
        &[&n, &user],
    )
    .await
    .unwrap();
    let error = snooze("now() + interval '1 hour'").await.unwrap_err();
    assert_eq!(refused_by(&error), "notification_snoozed_unread_only");
}

#[tokio::test]
async fn preferences_take_valid_patterns_and_channels_and_log_the_whole_list() {
    let db = TestDb::migrated().await;
    let pg = db.client().await;
    let user = insert_user(&pg, "Ada", "USER", None).await;
    let set = |pattern: &'static str, channel: &'static str| {
        let pg = &pg;
        async move {
            pg.execute(
                "insert into herald.notification_preferences (user_id, kind_pattern, channel, enabled)
                 values ($1, $2, $3, false)",
                &[&user, &pattern, &channel],
            )
            .await
        }
    };
    for pattern in ["order.shipped", "order.*", "*", "order.eu-1.late_2"] {
        set(pattern, "IN_APP").await.unwrap();
    }
    for pattern in [
        "",
        "order.",
        "Order.x",
        "order.*.x",
        "*.*",
        ".x",
        "order..x",
        "**",
    ] {
        let error = set(pattern, "PUSH").await.unwrap_err();
        assert_eq!(
            refused_by(&error),
            "notification_preferences_kind_pattern_valid",
            "{pattern:?}"
        );
    }
    let error = set("*", "EMAIL").await.unwrap_err();
    assert_eq!(refused_by(&error), "notification_preferences_channel_valid");
    pg.execute(
        "delete from herald.notification_preferences where kind_pattern <> '*'",
        &[],
    )
    .await
    .unwrap();
    let events = kinds(&pg).await;
    assert_eq!(events.len(), 5, "four inserts and one delete statement");
    assert!(events.iter().all(|(k, _)| k == "preferences.updated"));
    assert_eq!(
        events[4].1,
        json!({"userId": user, "preferences": [{"kindPattern": "*", "channel": "IN_APP", "enabled": false}]})
    );
}

/// The preference rule in Rust (src/preferences.rs, what dispatch and the
/// in-memory counts apply) and in SQL (herald.kind_enabled, what the
/// count queries, the connect push and Web Push apply) agree on every
/// subset of a set of overlapping patterns, each enabled or not, for kinds
/// on each side of every pattern's edge.
#[tokio::test]
async fn the_rust_and_sql_preference_rules_agree() {
    use herald::preferences::{Channel, Preference, Rules};
    let db = TestDb::migrated().await;
    let pg = db.client().await;
    let user = insert_user(&pg, "Ada", "USER", None).await;
    let patterns = [
        "*",
        "order.*",
        "order.eu.*",
        "order.shipped",
        "order",
        "orders.*",
        "a-b_c.*",
    ];
    let kinds = [
        "order",
        "order.shipped",
        "order.eu.late",
        "order.eu",
        "orders.x",
        "billing",
        "a-b_c.d",
    ];
    let mut checked = 0;
    for subset in 0u32..(1 << patterns.len()) {
        let preferences: Vec<Preference> = patterns
            .iter()
            .enumerate()
            .filter(|(i, _)| subset & (1 << i) != 0)
            .map(|(i, pattern)| Preference {
                kind_pattern: (*pattern).into(),
                channel: Channel::InApp,
                // Enabled or not, varied across subsets.
                enabled: (subset.count_ones() + i as u32).is_multiple_of(2),
            })
            .collect();
        pg.execute("delete from herald.notification_preferences", &[])
            .await
            .unwrap();
        for p in &preferences {
            pg.execute(
                "insert into herald.notification_preferences (user_id, kind_pattern, channel, enabled)
                 values ($1, $2, 'IN_APP', $3)",
                &[&user, &p.kind_pattern, &p.enabled],
            )
            .await
            .unwrap();
        }
        let rules = Rules::of(&preferences, Channel::InApp);
        for importance in ["normal", "urgent"] {
            let kinds: Vec<&str> = kinds.to_vec();
            let sql: Vec<bool> = column(
                &pg,
                "select herald.kind_enabled($1, k, $2, 'IN_APP')
                       from unnest($3::text[]) with ordinality as t(k, i) order by i",
                &[&user, &importance, &kinds],
            )
            .await;
            let rust: Vec<bool> = kinds.iter().map(|k| rules.enabled(k, importance)).collect();
            assert_eq!(rust, sql, "{preferences:?} {importance}");
            checked += kinds.len();
        }
    }
    assert_eq!(checked, 128 * 2 * 7);
}
