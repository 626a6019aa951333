//! The guides' SQL, run as written: every ```sql block of docs/producers.md
//! and docs/dbas.md, in order, against a fresh database with the demo users.

use uuid::Uuid;

use crate::helpers::TestDb;

fn sql_blocks(markdown: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in markdown.lines() {
        match (&mut current, line.trim_start()) {
            (None, "```sql") => current = Some(String::new()),
            (Some(_), "```") => blocks.extend(current.take()),
            (Some(block), _) => {
                block.push_str(line);
                block.push('\n');
            }
            (None, _) => {}
        }
    }
    blocks
}

async fn demo_database() -> (TestDb, tokio_postgres::Client) {
    let db = TestDb::migrated().await;
    let pg = db.client().await;
    pg.batch_execute(
        "insert into herald.users (id, email, name, role, sector_id) values
           ('11111111-1111-4111-8111-111111111111', 'ada@example.com', 'Ada Lovelace', 'USER', '5e000000-0000-4000-8000-000000000001'),
           ('22222222-2222-4222-8222-222222222222', 'grace@example.com', 'Grace Hopper', 'ADMIN', null)",
    )
    .await
    .unwrap();
    (db, pg)
}

#[tokio::test]
async fn every_sql_block_of_the_producer_guide_runs_and_the_user_sync_trigger_syncs() {
    let (_db, pg) = demo_database().await;
    let blocks = sql_blocks(include_str!("../../docs/producers.md"));
    assert!(blocks.len() >= 6, "found only {} blocks", blocks.len());
    for block in &blocks {
        pg.batch_execute(block)
            .await
            .unwrap_or_else(|e| panic!("{e:?}\n{block}"));
    }
    let retracted: i64 = pg
        .query_one(
            "select count(*) from herald.notifications where retracted_at is not null",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(retracted, 1, "the retraction example withdrew the invoice");

    // The sync trigger mirrors inserts, updates and deletes.
    let id = Uuid::new_v4();
    pg.execute(
        "insert into app.users (id, email, full_name, role, department_id) values ($1, 'kat@example.com', 'Katherine Johnson', 'USER', $2)",
        &[&id, &Uuid::nil()],
    )
    .await
    .unwrap();
    let row = pg
        .query_one(
            "select name, sector_id, is_active from herald.users where id = $1",
            &[&id],
        )
        .await
        .unwrap();
    assert_eq!(
        (
            row.get::<_, String>(0),
            row.get::<_, Option<Uuid>>(1),
            row.get::<_, bool>(2)
        ),
        ("Katherine Johnson".into(), Some(Uuid::nil()), true)
    );
    pg.execute(
        "update app.users set active = false, role = 'ADMIN' where id = $1",
        &[&id],
    )
    .await
    .unwrap();
    let row = pg
        .query_one(
            "select role, is_active from herald.users where id = $1",
            &[&id],
        )
        .await
        .unwrap();
    assert_eq!(
        (row.get::<_, String>(0), row.get::<_, bool>(1)),
        ("ADMIN".into(), false)
    );
    let changes: i64 = pg
        .query_one(
            "select count(*) from herald.events where kind = 'user.updated' and user_id = $1",
            &[&id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        changes, 1,
        "deactivation reaches herald as a user.updated event"
    );
    pg.execute("delete from app.users where id = $1", &[&id])
        .await
        .unwrap();
    let left: i64 = pg
        .query_one("select count(*) from herald.users where id = $1", &[&id])
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 0);
}

#[tokio::test]
async fn every_audit_query_of_the_dba_guide_runs() {
    let (_db, pg) = demo_database().await;
    // Something to audit: a notification sent, acknowledged and read.
    pg.batch_execute(
        "insert into herald.notifications (user_id, title) values ('11111111-1111-4111-8111-111111111111', 'audited');
         insert into herald.notification_deliveries (notification_id, user_id, status, sent_at, delivered_at)
           select id, user_id, 'DELIVERED', now(), now() + interval '1 second' from herald.notifications;
         insert into herald.notification_seen (notification_id, user_id) select id, user_id from herald.notifications;",
    )
    .await
    .unwrap();
    let blocks = sql_blocks(include_str!("../../docs/dbas.md"));
    assert!(blocks.len() >= 5, "found only {} blocks", blocks.len());
    for block in &blocks {
        let rows = pg
            .simple_query(block)
            .await
            .unwrap_or_else(|e| panic!("{e:?}\n{block}"));
        assert!(!rows.is_empty(), "{block}");
    }
}
