//! The audience rule is written twice: in Rust (`herald::audience`, which
//! live dispatch and the connect sequence apply) and in SQL (`herald.inbox()`
//! and sql/inbox_unread_counts.sql, which the pending push, lists, marks and
//! counts apply). A property test over random users (sectors, roles) and
//! random notifications (audiences, reads) shows that they agree on every
//! (user, notification) pair, against a real database.

use std::collections::{HashMap, HashSet};

use herald::audience::{AdminRoles, Audience, Inbox};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use uuid::Uuid;

use crate::helpers::{TestDb, column};

/// Cases per run: each is one rolled-back transaction, well under a second in all.
const CASES: u32 = 48;
const SECTORS: usize = 3;
const ROLES: [&str; 3] = ["USER", "ADMIN", "OPS"];

/// Who a generated notification is for; indices into the case's users and sectors.
#[derive(Debug, Clone)]
enum Target {
    User(usize),
    Sector(usize),
    Admins,
    All,
}

#[derive(Debug, Clone)]
struct Case {
    /// Each user's sector (an index, or none) and role (an index into ROLES).
    users: Vec<(Option<usize>, usize)>,
    /// Each notification's audience and which users have read it.
    notifications: Vec<(Target, Vec<bool>)>,
}

fn case() -> impl Strategy<Value = Case> {
    let target = prop_oneof![
        (0usize..6).prop_map(Target::User),
        (0..SECTORS).prop_map(Target::Sector),
        Just(Target::Admins),
        Just(Target::All),
    ];
    (
        prop::collection::vec((prop::option::of(0..SECTORS), 0..ROLES.len()), 1..6),
        prop::collection::vec((target, prop::collection::vec(any::<bool>(), 6)), 0..10),
    )
        .prop_map(|(users, notifications)| Case {
            users,
            notifications,
        })
}

#[test]
fn the_rust_and_sql_audience_rules_agree_on_every_user_and_notification() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let pool = runtime.block_on(async {
        let db = TestDb::migrated().await;
        herald::db::pool(&db.url, 1).unwrap()
    });
    let admins = AdminRoles::new(vec!["ADMIN".into(), "OPS".into()]);
    let sectors: Vec<Uuid> = (0..SECTORS).map(|_| Uuid::new_v4()).collect();
    let mut runner = TestRunner::new(Config {
        cases: CASES,
        max_shrink_iters: 256,
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(&case(), |case| {
        runtime.block_on(async {
            let mut client = pool.get().await.unwrap();
            // Rolled back when dropped: every case starts from an empty inbox.
            let tx = client.transaction().await.unwrap();
            let mut inboxes = Vec::new();
            for (sector, role) in &case.users {
                let (id, sector, role) = (Uuid::new_v4(), sector.map(|s| sectors[s]), ROLES[*role]);
                tx.execute(
                    "insert into herald.users (id, name, role, sector_id) values ($1, 'u', $2, $3)",
                    &[&id, &role, &sector],
                )
                .await
                .unwrap();
                inboxes.push(admins.inbox(id, sector, role));
            }
            let mut addressed: Vec<(Uuid, Audience)> = Vec::new();
            let mut read: HashSet<(Uuid, Uuid)> = HashSet::new();
            for (target, readers) in &case.notifications {
                let audience = match *target {
                    Target::User(i) => Audience::User(inboxes[i % inboxes.len()].user_id),
                    Target::Sector(s) => Audience::Sector(sectors[s]),
                    Target::Admins => Audience::Admins,
                    Target::All => Audience::All,
                };
                let (word, user, sector) = audience.columns();
                let id: Uuid = tx
                    .query_one(
                        "insert into herald.notifications (audience, user_id, sector_id, title) values ($1, $2, $3, 'n') returning id",
                        &[&word, &user, &sector],
                    )
                    .await
                    .unwrap()
                    .get(0);
                // Reads by anyone, addressed or not: a receipt of a
                // notification not addressed to its reader must not count.
                for (inbox, _) in inboxes.iter().zip(readers).filter(|(_, r)| **r) {
                    tx.execute(
                        "insert into herald.notification_seen (notification_id, user_id) values ($1, $2)",
                        &[&id, &inbox.user_id],
                    )
                    .await
                    .unwrap();
                    read.insert((id, inbox.user_id));
                }
                addressed.push((id, audience));
            }
            let reaching = |inbox: &Inbox| -> HashSet<Uuid> {
                addressed
                    .iter()
                    .filter(|(_, audience)| audience.reaches(inbox))
                    .map(|(id, _)| *id)
                    .collect()
            };
            let counts: HashMap<Uuid, i64> = herald::db::inbox::unread_counts(&tx, &inboxes)
                .await
                .unwrap()
                .into_iter()
                .collect();
            for inbox in &inboxes {
                let rust = reaching(inbox);
                let sql: HashSet<Uuid> = column(
                    &*tx,
                    "select id from herald.inbox($1, $2, $3)",
                    &[&inbox.user_id, &inbox.sector_id, &inbox.is_admin],
                )
                .await
                .into_iter()
                .collect();
                prop_assert_eq!(&sql, &rust, "herald.inbox() for {:?}", inbox);
                let unread = rust
                    .iter()
                    .filter(|id| !read.contains(&(**id, inbox.user_id)))
                    .count() as i64;
                prop_assert_eq!(counts.get(&inbox.user_id).copied(), Some(unread), "unread counts for {:?}", inbox);
                let single = inbox.unread_count(&tx).await.unwrap();
                prop_assert_eq!(single, unread, "unread count for {:?}", inbox);
            }
            Ok(())
        })
    });
    if let Err(error) = result {
        panic!("{error}");
    }
}
