//! The notification's shape, defined twice: built in SQL
//! (`herald.notification_json`, the payload of every `notification.created`
//! event) and parsed in Rust (`herald::wire::Notification`). If the two
//! drift, every push is skipped as malformed; these tests catch the drift
//! before a release does.

use std::collections::BTreeSet;

use herald::wire::{self, Notification};
use serde_json::json;
use uuid::Uuid;

use crate::helpers::{TestDb, insert_user};

/// Keys `herald.notification_json` writes that `wire::Notification` does
/// not read: the routing columns, which herald takes from the event row's
/// own columns and never sends to clients.
const ROUTING_ONLY: [&str; 2] = ["userId", "sectorId"];

/// A notification as its columns say it should reach a client.
const COLUMNS: &str = "select id, audience, kind, importance, title, message, action_url, data,
                              created_at, expires_at
                         from herald.notifications where id = $1";

/// Every column, read back and formatted the way herald formats it.
fn expected(row: &tokio_postgres::Row) -> Notification {
    Notification {
        id: row.get("id"),
        audience: row.get("audience"),
        kind: row.get("kind"),
        importance: row.get("importance"),
        title: row.get("title"),
        message: row.get("message"),
        action_url: row.get("action_url"),
        data: row.get("data"),
        created_at: wire::rfc3339(row.get("created_at")),
        expires_at: row
            .get::<_, Option<time::OffsetDateTime>>("expires_at")
            .map(wire::rfc3339),
    }
}

#[tokio::test]
async fn the_sql_payload_parses_as_the_wire_notification_with_every_field_set_or_null() {
    let db = TestDb::migrated().await;
    let pg = db.client().await;
    let user = insert_user(&pg, "Ada", "USER", None).await;
    let sector = Uuid::new_v4();

    let full: Uuid = pg
        .query_one(
            "insert into herald.notifications
                 (audience, user_id, kind, importance, title, message, action_url, data,
                  created_at, expires_at)
             values ('user', $1, 'billing', 'urgent', 'Invoice', 'Due \"soon\" ✓',
                     'https://example.com/a?b=c', $2,
                     '2026-11-27 09:18:14.123456+00', now() + interval '1 day')
             returning id",
            &[
                &user,
                &json!({"n": 1, "nested": {"list": [1, "two", null]}, "text": "é"}),
            ],
        )
        .await
        .unwrap()
        .get(0);
    // Every optional column left to its default or null.
    let sparse: Uuid = pg
        .query_one(
            "insert into herald.notifications (audience, sector_id, title)
             values ('sector', $1, 'Defaults') returning id",
            &[&sector],
        )
        .await
        .unwrap()
        .get(0);

    for id in [full, sparse] {
        let row = pg.query_one(COLUMNS, &[&id]).await.unwrap();
        let want = expected(&row);

        let built: serde_json::Value = pg
            .query_one(
                "select herald.notification_json(n) from herald.notifications n where id = $1",
                &[&id],
            )
            .await
            .unwrap()
            .get(0);
        let parsed: Notification = serde_json::from_value(built.clone()).unwrap_or_else(|error| {
            panic!("{built} does not parse as wire::Notification: {error}")
        });
        assert_eq!(parsed, want, "notification_json of {id}");

        // The event the triggers logged carries the same payload.
        let logged: serde_json::Value = pg
            .query_one(
                "select payload from herald.events
                  where notification_id = $1 and kind = 'notification.created'",
                &[&id],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(logged, built, "event payload of {id}");
    }
}

#[tokio::test]
async fn the_sql_payload_has_exactly_the_wire_fields_and_the_routing_columns() {
    let db = TestDb::migrated().await;
    let pg = db.client().await;
    let user = insert_user(&pg, "Ada", "USER", None).await;
    let id: Uuid = pg
        .query_one(
            "insert into herald.notifications (audience, user_id, title, action_url, expires_at)
             values ('user', $1, 'Keys', 'https://example.com', now() + interval '1 hour')
             returning id",
            &[&user],
        )
        .await
        .unwrap()
        .get(0);
    let sql_keys: Vec<String> = pg
        .query_one(
            "select array(select jsonb_object_keys(herald.notification_json(n)))
               from herald.notifications n where id = $1",
            &[&id],
        )
        .await
        .unwrap()
        .get(0);
    let sql_keys: BTreeSet<String> = sql_keys.into_iter().collect();

    // wire::Notification writes every field, null ones included, so its
    // serialization lists its fields.
    let row = pg.query_one(COLUMNS, &[&id]).await.unwrap();
    let wire_value = serde_json::to_value(expected(&row)).unwrap();
    let mut wire_keys: BTreeSet<String> = wire_value
        .as_object()
        .expect("a notification serializes as an object")
        .keys()
        .cloned()
        .collect();
    wire_keys.extend(ROUTING_ONLY.map(str::to_owned));

    assert_eq!(
        sql_keys, wire_keys,
        "herald.notification_json and wire::Notification disagree on the fields"
    );
}
