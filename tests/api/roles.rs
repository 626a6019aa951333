//! deploy/roles.sql, for real: herald serves as its own role, a producer
//! writes as theirs, an auditor only reads, and the event log refuses a
//! forgery even from the owner.
//!
//! Roles are cluster-wide, so this test gives them names of its own and
//! drops them when it ends, however it ends.

use std::panic::AssertUnwindSafe;

use futures_util::FutureExt;
use serde_json::json;
use tokio_postgres::error::SqlState;
use uuid::Uuid;

use crate::client::{Connect, connect};
use crate::helpers::{TestApp, TestDb, config, refused_by};

const PASSWORD: &str = "roles-test-password";

/// The three group roles of deploy/roles.sql under this test's names, each
/// with a login role in it, the way docs/dbas.md says to connect.
struct Roles {
    producer: String,
    service: String,
    auditor: String,
}

impl Roles {
    async fn create(owner: &tokio_postgres::Client) -> Self {
        let suffix = &Uuid::new_v4().simple().to_string()[..12];
        let roles = Self {
            producer: format!("herald_producer_{suffix}"),
            service: format!("herald_service_{suffix}"),
            auditor: format!("herald_auditor_{suffix}"),
        };
        let script = include_str!("../../deploy/roles.sql")
            .replace("herald_producer", &roles.producer)
            .replace("herald_service", &roles.service)
            .replace("herald_auditor", &roles.auditor);
        owner
            .batch_execute(&script)
            .await
            .expect("deploy/roles.sql");
        // Idempotent: a second run after an upgrade changes nothing and fails nothing.
        owner
            .batch_execute(&script)
            .await
            .expect("deploy/roles.sql again");
        for group in roles.groups() {
            owner
                .batch_execute(&format!(
                    "create role {group}_login login password '{PASSWORD}' in role {group}"
                ))
                .await
                .unwrap();
        }
        roles
    }

    fn groups(&self) -> [&str; 3] {
        [&self.producer, &self.service, &self.auditor]
    }

    /// `url` with the login role of `group` as its user.
    fn url(url: &str, group: &str) -> String {
        let (scheme, rest) = url.split_once("://").expect("a postgres:// URL");
        let host = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
        format!("{scheme}://{group}_login:{PASSWORD}@{host}")
    }

    async fn drop(&self, owner: &tokio_postgres::Client) {
        for group in self.groups() {
            let _ = owner
                .execute(
                    "select pg_terminate_backend(pid) from pg_stat_activity where usename = $1",
                    &[&format!("{group}_login")],
                )
                .await;
            // Privileges live in this database; the roles themselves in the cluster.
            for role in [format!("{group}_login"), group.to_owned()] {
                let _ = owner
                    .batch_execute(&format!("drop owned by {role}; drop role {role}"))
                    .await;
            }
        }
        let left: i64 = owner
            .query_one(
                "select count(*) from pg_roles where rolname = any ($1)",
                &[&self
                    .groups()
                    .iter()
                    .flat_map(|g| [g.to_string(), format!("{g}_login")])
                    .collect::<Vec<_>>()],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(left, 0, "the test's roles were not dropped");
    }
}

/// Runs `statement` and expects PostgreSQL to refuse it for want of privilege.
async fn denied(pg: &tokio_postgres::Client, statement: &str) {
    let error = pg.batch_execute(statement).await.expect_err(statement);
    assert_eq!(
        error.code(),
        Some(&SqlState::INSUFFICIENT_PRIVILEGE),
        "{statement}: {error:?}"
    );
}

#[tokio::test]
async fn each_role_can_do_its_part_only_and_the_log_refuses_even_its_owner() {
    let db = TestDb::migrated().await;
    let owner = db.client().await;
    // A database locked down the way a DBA may, with no TEMPORARY for
    // PUBLIC: herald needs none (it creates nothing, not even for a
    // session).
    owner
        .batch_execute(
            "do $$ begin
               execute format('revoke temporary on database %I from public', current_database());
             end $$",
        )
        .await
        .unwrap();
    let roles = Roles::create(&owner).await;
    let outcome = AssertUnwindSafe(exercise(&db, &owner, &roles))
        .catch_unwind()
        .await;
    roles.drop(&owner).await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

async fn exercise(db: &TestDb, owner: &tokio_postgres::Client, roles: &Roles) {
    let producer = crate::helpers::connect(&Roles::url(&db.url, &roles.producer)).await;
    let auditor = crate::helpers::connect(&Roles::url(&db.url, &roles.auditor)).await;

    // herald serves as its own role; the owner migrated the schema.
    let service_url = Roles::url(&db.url, &roles.service);
    let mut settings = config(db);
    settings.database_url = service_url.clone();
    settings.listen_url = service_url.clone();
    settings.migrate = false;
    let app = TestApp::spawn_on(TestDb { url: service_url }, settings).await;

    // The producer keeps users in sync and sends notifications.
    let user = Uuid::new_v4();
    producer
        .execute(
            "insert into herald.users (id, email, name) values ($1, $2, 'Ada')",
            &[&user, &format!("{user}@example.com")],
        )
        .await
        .unwrap();
    let mut socket = connect(app.address, Connect::token(&app.token(user)))
        .await
        .expect("connects");
    socket.connected().await;
    let id: Uuid = producer
        .query_one(
            "insert into herald.notifications (user_id, title) values ($1, 'from the producer') returning id",
            &[&user],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(socket.wait_for("notification:new").await["id"], json!(id));

    // herald's role writes delivery records and receipts.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while app.metric("herald_deliveries_recorded_total").await < 1.0 {
        assert!(
            std::time::Instant::now() < deadline,
            "no SENT record written as herald's role"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let sent: String = owner
        .query_one(
            "select status from herald.notification_deliveries where notification_id = $1 and user_id = $2",
            &[&id, &user],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(sent, "SENT");
    let ack = socket
        .ack("mark.delivered", Some(json!({"notificationId": id})))
        .await;
    assert_eq!(ack["success"], true, "{ack}");
    let ack = socket
        .ack("mark.read", Some(json!({"notificationId": id})))
        .await;
    assert_eq!(ack["success"], true, "{ack}");
    socket.wait_for("notification:read").await;

    // The owner (a superuser here) cannot forge an event either, and
    // nothing reaches the socket: the next notification is the producer's.
    let error = owner
        .batch_execute(&format!(
            "insert into herald.events (kind, notification_id, user_id, audience, payload)
             values ('notification.created', gen_random_uuid(), '{user}', 'user',
                     '{{\"id\": \"{}\", \"title\": \"forged\"}}')",
            Uuid::new_v4()
        ))
        .await
        .unwrap_err();
    assert_eq!(refused_by(&error), "events_written_by_triggers");
    let next: Uuid = producer
        .query_one(
            "insert into herald.notifications (user_id, title) values ($1, 'after the forgery') returning id",
            &[&user],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(socket.wait_for("notification:new").await["id"], json!(next));

    // The producer retracts, and can do nothing else to a notification.
    producer
        .execute(
            "update herald.notifications set retracted_at = now() where id = $1",
            &[&next],
        )
        .await
        .unwrap();
    assert_eq!(
        socket.wait_for("notification:retracted").await["notificationId"],
        json!(next)
    );
    for statement in [
        format!("update herald.notifications set title = 'changed' where id = '{id}'"),
        format!("delete from herald.notifications where id = '{id}'"),
        "insert into herald.events (kind, payload) values ('user.updated', '{}')".to_owned(),
        "delete from herald.events".to_owned(),
        format!(
            "insert into herald.notification_seen (notification_id, user_id) values ('{next}', '{user}')"
        ),
        format!(
            "insert into herald.notification_deliveries (notification_id, user_id, status) values ('{next}', '{user}', 'DELIVERED')"
        ),
        "update herald.notification_deliveries set status = 'FAILED'".to_owned(),
        "update herald.event_retention set pruned_through_tx = '1'".to_owned(),
    ] {
        denied(&producer, &statement).await;
    }
    // herald's role cannot write the log directly either.
    denied(
        &app.pg,
        "insert into herald.events (kind, payload) values ('user.updated', '{}')",
    )
    .await;
    denied(
        &app.pg,
        &format!("update herald.notifications set retracted_at = now() where id = '{id}'"),
    )
    .await;
    // Nor create anything, even for its session: it wrote its delivery
    // records above without TEMPORARY.
    denied(&app.pg, "create temp table herald_scratch (id uuid)").await;

    // The auditor reads everything and writes nothing.
    for table in [
        "users",
        "notifications",
        "notification_seen",
        "notification_deliveries",
        "events",
        "event_retention",
        "delivery_audit",
        "schema_migrations",
    ] {
        auditor
            .query_one(&format!("select count(*) from herald.{table}"), &[])
            .await
            .unwrap_or_else(|e| panic!("auditor reading {table}: {e:?}"));
    }
    for statement in [
        "insert into herald.notifications (audience, title) values ('all', 'audited')".to_owned(),
        format!("update herald.notifications set retracted_at = now() where id = '{id}'"),
        format!("update herald.users set is_active = false where id = '{user}'"),
        "delete from herald.users".to_owned(),
        "delete from herald.notification_seen".to_owned(),
        "delete from herald.notification_deliveries".to_owned(),
        "insert into herald.events (kind, payload) values ('user.updated', '{}')".to_owned(),
    ] {
        denied(&auditor, &statement).await;
    }

    // Deleting the user disconnects them, through triggers that need no
    // privilege of the producer's on the log or the delivery records.
    producer
        .execute("delete from herald.users where id = $1", &[&user])
        .await
        .unwrap();
    socket.closed().await;

    // herald's pruning works through the log's guard under its own role.
    let events: i64 = app
        .pg
        .query_one("select count(*) from herald.events", &[])
        .await
        .unwrap()
        .get(0);
    let pruned: i32 = app
        .pg
        .query_one(
            "select herald.prune_events(interval '0 seconds', 1000)",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(i64::from(pruned), events);
    app.pg
        .query_one(
            "select * from herald.prune_notifications(interval '0 seconds', 1000)",
            &[],
        )
        .await
        .unwrap();
    app.stop().await.expect("herald stopped cleanly");
}
