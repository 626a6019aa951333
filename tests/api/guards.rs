//! The database's own guards, tried as the tables' owner (a superuser, as
//! the test connects): the event log refuses every write but its triggers'
//! and herald's pruning, explicit nulls are refused by name, and every
//! refusal a trigger raises names its constraint in its message.

use std::collections::BTreeMap;

use tokio_postgres::error::SqlState;
use uuid::Uuid;

use crate::helpers::{TestDb, column, insert_user, refused_by};

async fn count(pg: &tokio_postgres::Client, sql: &str) -> i64 {
    pg.query_one(sql, &[]).await.unwrap().get(0)
}

async fn horizon(pg: &tokio_postgres::Client) -> u64 {
    pg.query_one(
        "select pruned_through_tx::text from herald.event_retention",
        &[],
    )
    .await
    .unwrap()
    .get::<_, String>(0)
    .parse()
    .unwrap()
}

#[tokio::test]
async fn the_event_log_refuses_every_direct_write_even_from_its_owner() {
    let db = TestDb::migrated().await;
    let pg = db.client().await;
    let user = insert_user(&pg, "Ada", "USER", None).await;
    pg.execute(
        "insert into herald.notifications (user_id, title) values ($1, 'real')",
        &[&user],
    )
    .await
    .unwrap();
    let forged = format!(
        "insert into herald.events (kind, notification_id, user_id, audience, payload)
         values ('notification.created', gen_random_uuid(), '{user}', 'user', '{{\"title\": \"forged\"}}')"
    );
    let cases = [
        ("events_written_by_triggers", forged.clone()),
        // A copy of a real event is no less forged.
        (
            "events_written_by_triggers",
            "insert into herald.events (kind, notification_id, user_id, sector_id, audience, payload)
             select kind, notification_id, user_id, sector_id, audience, payload from herald.events"
                .to_owned(),
        ),
        // Nor is one written from a function or a DO block.
        (
            "events_written_by_triggers",
            format!("do $$ begin {forged}; end $$"),
        ),
        (
            "events_immutable",
            "update herald.events set payload = '{}'".to_owned(),
        ),
        (
            "events_pruned_only",
            "delete from herald.events".to_owned(),
        ),
        ("events_pruned_only", "truncate herald.events".to_owned()),
        (
            "event_retention_forward_only",
            "update herald.event_retention set pruned_through_tx = '1'".to_owned(),
        ),
    ];
    // The horizon has to have moved for moving it back to mean anything.
    pg.batch_execute("update herald.event_retention set pruned_through_tx = '2'")
        .await
        .unwrap();
    for (constraint, sql) in &cases {
        let error = pg.batch_execute(sql).await.expect_err(constraint);
        assert_eq!(refused_by(&error), *constraint, "{sql}");
        assert_eq!(
            error.code(),
            Some(&SqlState::CHECK_VIOLATION),
            "{constraint}"
        );
    }
    assert_eq!(count(&pg, "select count(*) from herald.events").await, 1);
    assert_eq!(
        count(
            &pg,
            "select count(*) from herald.events where payload ->> 'title' = 'real'"
        )
        .await,
        1
    );
}

#[tokio::test]
async fn pruning_deletes_below_the_horizon_it_moves_and_so_may_a_dba() {
    let db = TestDb::migrated().await;
    let pg = db.client().await;
    let user = insert_user(&pg, "Ada", "USER", None).await;
    for title in ["a", "b"] {
        pg.execute(
            "insert into herald.notifications (user_id, title) values ($1, $2)",
            &[&user, &title],
        )
        .await
        .unwrap();
    }
    let newest: u64 = pg
        .query_one("select max(tx)::text from herald.events", &[])
        .await
        .unwrap()
        .get::<_, String>(0)
        .parse()
        .unwrap();
    let pruned: i32 = pg
        .query_one("select herald.prune_events(interval '0 seconds', 1)", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(pruned, 1, "one batch of one");
    let pruned: i32 = pg
        .query_one(
            "select herald.prune_events(interval '0 seconds', 1000)",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(pruned, 1);
    assert_eq!(count(&pg, "select count(*) from herald.events").await, 0);
    assert_eq!(horizon(&pg).await, newest + 1);

    // By hand: move the horizon past what is to go, then delete it.
    insert_user(&pg, "Grace", "USER", None).await;
    pg.execute(
        "update herald.users set is_active = false where id = $1",
        &[&user],
    )
    .await
    .unwrap();
    pg.batch_execute(
        "begin;
         update herald.event_retention set pruned_through_tx = pg_current_xact_id();
         delete from herald.events;
         commit;",
    )
    .await
    .unwrap();
    assert_eq!(count(&pg, "select count(*) from herald.events").await, 0);
}

/// A row for `table` in which every column producers must fill is set,
/// as (column, SQL literal).
fn valid_row(table: &str) -> BTreeMap<String, String> {
    let row: &[(&str, &str)] = match table {
        "notifications" => &[("audience", "'all'"), ("title", "'t'")],
        "users" => &[("id", "gen_random_uuid()"), ("name", "'n'")],
        _ => unreachable!("no producer table {table}"),
    };
    row.iter()
        .map(|(c, v)| ((*c).to_owned(), (*v).to_owned()))
        .collect()
}

#[tokio::test]
async fn every_not_null_column_producers_write_refuses_an_explicit_null_by_name() {
    let db = TestDb::migrated().await;
    let pg = db.client().await;
    let ada = insert_user(&pg, "Ada", "USER", None).await;
    for table in ["notifications", "users"] {
        let columns: Vec<String> = column(
            &pg,
            "select attname::text from pg_attribute
                  where attrelid = ('herald.' || $1)::regclass
                    and attnum > 0 and not attisdropped and attnotnull
                  order by attnum",
            &[&table],
        )
        .await;
        assert!(columns.len() >= 6, "{table}: {columns:?}");
        for column in &columns {
            let mut row = valid_row(table);
            row.insert(column.clone(), "null".to_owned());
            let names: Vec<&str> = row.keys().map(String::as_str).collect();
            let values: Vec<&str> = row.values().map(String::as_str).collect();
            let sql = format!(
                "insert into herald.{table} ({}) values ({})",
                names.join(", "),
                values.join(", ")
            );
            let error = pg.batch_execute(&sql).await.expect_err(&sql);
            assert_eq!(
                refused_by(&error),
                format!("{table}_{column}_required"),
                "{sql}"
            );
            let db_error = error.as_db_error().unwrap();
            if column != "audience" {
                // PostgreSQL's own not-null error, with a name added.
                assert_eq!(db_error.code(), &SqlState::NOT_NULL_VIOLATION, "{sql}");
                assert_eq!(
                    db_error.message(),
                    format!(
                        "null value in column \"{column}\" of relation \"{table}\" violates not-null constraint \"{table}_{column}_required\""
                    )
                );
            }
            assert_eq!(db_error.column(), Some(column.as_str()), "{sql}");
        }
    }
    // A sync job may null a column of an existing user: refused the same way;
    // updated_at alone is filled in again by the touch trigger.
    for column in ["id", "name", "role", "is_active", "created_at"] {
        let sql = format!("update herald.users set {column} = null where id = '{ada}'");
        let error = pg.batch_execute(&sql).await.expect_err(&sql);
        assert_eq!(refused_by(&error), format!("users_{column}_required"));
    }
    let touched: bool = pg
        .query_one(
            "update herald.users set updated_at = null where id = $1 returning updated_at is not null",
            &[&ada],
        )
        .await
        .unwrap()
        .get(0);
    assert!(touched);
    assert_eq!(
        count(&pg, "select count(*) from herald.notifications").await,
        0
    );
    assert_eq!(count(&pg, "select count(*) from herald.users").await, 1);
}

/// Every message given to `raise exception` in herald's functions.
async fn raised_messages(pg: &tokio_postgres::Client) -> Vec<(String, String)> {
    pg.query(
        "select p.proname::text, m[1]
           from pg_proc p
           cross join lateral regexp_matches(p.prosrc, 'raise\\s+exception\\s+''((?:[^'']|'''')*)''', 'gi') as m
          where p.pronamespace = 'herald'::regnamespace
          order by 1, 2",
        &[],
    )
    .await
    .unwrap()
    .iter()
    .map(|row| (row.get(0), row.get(1)))
    .collect()
}

#[tokio::test]
async fn every_refusal_a_trigger_raises_names_its_constraint_in_its_message() {
    let db = TestDb::migrated().await;
    let pg = db.client().await;
    // In the source: each raise's message names a constraint, as
    // PostgreSQL's own messages do...
    let messages = raised_messages(&pg).await;
    assert!(messages.len() >= 10, "{messages:?}");
    for (function, message) in &messages {
        assert!(
            message.contains("constraint \""),
            "herald.{function}() raises a message that names no constraint: {message}"
        );
    }
    // ...and when raised, the name in the message is the constraint field's.
    let user = insert_user(&pg, "Ada", "USER", None).await;
    let n: Uuid = pg
        .query_one(
            "insert into herald.notifications (user_id, title, retracted_at) values ($1, 't', now()) returning id",
            &[&user],
        )
        .await
        .unwrap()
        .get(0);
    for (constraint, sql) in [
        (
            "notifications_audience_required",
            "insert into herald.notifications (title) values ('t')".to_owned(),
        ),
        (
            "notifications_immutable",
            format!("update herald.notifications set title = 'u' where id = '{n}'"),
        ),
        (
            "notifications_retraction_final",
            format!(
                "update herald.notifications set retracted_at = now() + interval '1 minute' where id = '{n}'"
            ),
        ),
        (
            "notifications_title_required",
            "insert into herald.notifications (audience, title) values ('all', null)".to_owned(),
        ),
        (
            "users_name_required",
            "insert into herald.users (id, name) values (gen_random_uuid(), null)".to_owned(),
        ),
        (
            "users_deletes_logged",
            "truncate herald.users cascade".to_owned(),
        ),
        (
            "events_written_by_triggers",
            "insert into herald.events (kind, payload) values ('user.updated', '{}')".to_owned(),
        ),
    ] {
        let error = pg.batch_execute(&sql).await.expect_err(&sql);
        assert_eq!(refused_by(&error), constraint, "{sql}");
    }
}
