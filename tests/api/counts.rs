//! Unread counts move in memory with each dispatched event (src/unread.rs).
//! A property test drives random interleavings of what changes a count —
//! creates to every audience, reads (addressed or not), mark-all, retractions,
//! expiries, moves between rooms, reconnects and second devices — against a
//! real herald and database, and after each step checks every client's
//! latest `notification:count` against the unread query.
//!
//! Each check waits on herald's own order, not on time: after a step, a
//! marker is created and read in one transaction for each user. Its
//! `notification:new` follows everything the step caused on that socket,
//! and it changes no count, so the last count before it is the count at
//! the position dispatched when the marker was.

use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::Value;
use uuid::Uuid;

use crate::client::{Connect, SioClient, connect};
use crate::helpers::TestApp;

const CASES: u32 = 6;
const SECTORS: usize = 3;

#[derive(Debug, Clone)]
enum Target {
    User(usize),
    Sector(usize),
    Admins,
    All,
}

#[derive(Debug, Clone)]
enum Op {
    /// `n` notifications in one transaction.
    Create(Target, usize),
    /// A notification that expires two seconds after it is created.
    Expiring(Target),
    /// A user reads the k-th notification created so far, addressed to
    /// them or not.
    Read(usize, usize),
    MarkAll(usize),
    Retract(usize),
    /// A user moves to a sector (or none) and role.
    Move(usize, Option<usize>, bool),
    Reconnect(usize),
    /// A second socket of the user connects, is checked, and leaves.
    SecondDevice(usize),
}

const USERS: usize = 3;

fn target() -> impl Strategy<Value = Target> {
    prop_oneof![
        (0..USERS).prop_map(Target::User),
        (0..SECTORS).prop_map(Target::Sector),
        Just(Target::Admins),
        Just(Target::All),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (target(), 1usize..4).prop_map(|(t, n)| Op::Create(t, n)),
        1 => target().prop_map(Op::Expiring),
        5 => (0..USERS, 0usize..40).prop_map(|(u, k)| Op::Read(u, k)),
        1 => (0..USERS).prop_map(Op::MarkAll),
        2 => (0usize..40).prop_map(Op::Retract),
        2 => (0..USERS, prop::option::of(0..SECTORS), any::<bool>())
            .prop_map(|(u, s, a)| Op::Move(u, s, a)),
        1 => (0..USERS).prop_map(Op::Reconnect),
        1 => (0..USERS).prop_map(Op::SecondDevice),
    ]
}

struct User {
    id: Uuid,
    sector: Option<usize>,
    admin: bool,
    client: SioClient,
    /// The latest count this user's socket was told.
    count: i64,
}

struct World {
    app: TestApp,
    sectors: Vec<Uuid>,
    users: Vec<User>,
    notifications: Vec<Uuid>,
}

impl World {
    async fn new() -> Self {
        let app = TestApp::spawn().await;
        let sectors: Vec<Uuid> = (0..SECTORS).map(|_| Uuid::new_v4()).collect();
        let mut users = Vec::new();
        for (i, (sector, admin)) in [(Some(0), false), (Some(1), true), (None, false)]
            .into_iter()
            .enumerate()
        {
            let role = if admin { "ADMIN" } else { "USER" };
            let id = app
                .user(&format!("u{i}"), role, sector.map(|s| sectors[s]))
                .await;
            let (client, count) = online(&app, id).await;
            users.push(User {
                id,
                sector,
                admin,
                client,
                count,
            });
        }
        Self {
            app,
            sectors,
            users,
            notifications: Vec::new(),
        }
    }

    fn columns(&self, target: &Target) -> (&'static str, Option<Uuid>, Option<Uuid>) {
        match target {
            Target::User(u) => ("user", Some(self.users[*u].id), None),
            Target::Sector(s) => ("sector", None, Some(self.sectors[*s])),
            Target::Admins => ("admin", None, None),
            Target::All => ("all", None, None),
        }
    }

    fn reaches(&self, target: &Target, user: usize) -> bool {
        let u = &self.users[user];
        match target {
            Target::User(v) => *v == user,
            Target::Sector(s) => u.sector == Some(*s),
            Target::Admins => u.admin,
            Target::All => true,
        }
    }

    async fn sql_count(&self, user: usize) -> i64 {
        let u = &self.users[user];
        self.app
            .unread_count(u.id, u.sector.map(|s| self.sectors[s]), u.admin)
            .await
    }

    async fn apply(&mut self, op: &Op) {
        let pg = &self.app.pg;
        match op {
            Op::Create(target, n) => {
                let (audience, user, sector) = self.columns(target);
                let rows = pg
                    .query(
                        "insert into herald.notifications (audience, user_id, sector_id, title)
                         select $1, $2, $3, 'n' from generate_series(1, $4) returning id",
                        &[&audience, &user, &sector, &(*n as i32)],
                    )
                    .await
                    .unwrap();
                self.notifications
                    .extend(rows.iter().map(|r| r.get::<_, Uuid>(0)));
            }
            Op::Expiring(target) => {
                let (audience, user, sector) = self.columns(target);
                let row = pg
                    .query_one(
                        "insert into herald.notifications (audience, user_id, sector_id, title, expires_at)
                         values ($1, $2, $3, 'brief', now() + interval '2 seconds') returning id, expires_at",
                        &[&audience, &user, &sector],
                    )
                    .await
                    .unwrap();
                self.notifications.push(row.get(0));
                let id: Uuid = row.get(0);
                let expires_at: time::OffsetDateTime = row.get(1);
                // Each socket it reaches is told of it and +1, then -1 once
                // it expires.
                let reached: Vec<usize> = (0..USERS).filter(|u| self.reaches(target, *u)).collect();
                for u in &reached {
                    let client = &mut self.users[*u].client;
                    while client.wait_for("notification:new").await["id"] != serde_json::json!(id) {
                    }
                    let up = client.wait_for("notification:count").await;
                    assert_eq!(up["count"], self.users[*u].count + 1, "user {u}");
                }
                let left = expires_at - time::OffsetDateTime::now_utc();
                tokio::time::sleep(Duration::try_from(left).unwrap_or_default()).await;
                for u in reached {
                    let fell = self.users[u].client.wait_for("notification:count").await;
                    let expected = self.sql_count(u).await;
                    assert_eq!(fell["count"], expected, "user {u} after an expiry");
                    self.users[u].count = expected;
                }
            }
            Op::Read(user, k) => {
                if let Some(n) = self.notifications.get(*k) {
                    // A read of a notification not addressed to the reader is
                    // a receipt that must not count; one of a retracted
                    // notification changes nothing either.
                    pg.execute(
                        "insert into herald.notification_seen (notification_id, user_id) values ($1, $2) on conflict do nothing",
                        &[n, &self.users[*user].id],
                    )
                    .await
                    .unwrap();
                }
            }
            Op::MarkAll(user) => {
                let ack = self.users[*user].client.ack("mark.all_read", None).await;
                assert_eq!(ack["success"], true, "{ack}");
            }
            Op::Retract(k) => {
                if let Some(n) = self.notifications.get(*k) {
                    pg.execute(
                        "update herald.notifications set retracted_at = now() where id = $1 and retracted_at is null",
                        &[n],
                    )
                    .await
                    .unwrap();
                }
            }
            Op::Move(user, sector, admin) => {
                let u = &self.users[*user];
                if u.sector == *sector && u.admin == *admin {
                    return;
                }
                let role = if *admin { "ADMIN" } else { "USER" };
                pg.execute(
                    "update herald.users set sector_id = $2, role = $3 where id = $1",
                    &[&u.id, &sector.map(|s| self.sectors[s]), &role],
                )
                .await
                .unwrap();
                let u = &mut self.users[*user];
                (u.sector, u.admin) = (*sector, *admin);
                // A move reads the user's unread set again; its count is
                // pushed once that is done.
                let count = u.client.wait_for("notification:count").await;
                let expected = self.sql_count(*user).await;
                assert_eq!(count["count"], expected, "user {user} after a move");
                self.users[*user].count = expected;
            }
            Op::Reconnect(user) => {
                let id = self.users[*user].id;
                self.users[*user].client.close();
                self.users[*user].client.closed().await;
                let (client, count) = online(&self.app, id).await;
                assert_eq!(
                    count,
                    self.sql_count(*user).await,
                    "user {user} reconnected"
                );
                (self.users[*user].client, self.users[*user].count) = (client, count);
            }
            Op::SecondDevice(user) => {
                let (mut second, count) = online(&self.app, self.users[*user].id).await;
                assert_eq!(
                    count,
                    self.sql_count(*user).await,
                    "user {user}'s second device"
                );
                let marker = self.marker().await;
                let seen = last_count(&second.before(marker[*user]).await);
                let expected = self.sql_count(*user).await;
                assert_eq!(
                    seen.unwrap_or(count),
                    expected,
                    "user {user}'s second device"
                );
                second.close();
                second.closed().await;
                for (u, marker) in marker.iter().enumerate() {
                    let pushed = self.users[u].client.before(*marker).await;
                    if let Some(count) = last_count(&pushed) {
                        self.users[u].count = count;
                    }
                }
            }
        }
    }

    /// One marker per user, each created and read at once in one
    /// transaction, so that its two events are dispatched together and
    /// leave the count as it was.
    async fn marker(&self) -> Vec<Uuid> {
        let mut pg = crate::helpers::connect(&self.app.db.url).await;
        let tx = pg.transaction().await.unwrap();
        let mut markers = Vec::new();
        for user in &self.users {
            let id: Uuid = tx
                .query_one(
                    "insert into herald.notifications (user_id, title) values ($1, 'marker') returning id",
                    &[&user.id],
                )
                .await
                .unwrap()
                .get(0);
            tx.execute(
                "insert into herald.notification_seen (notification_id, user_id) values ($1, $2)",
                &[&id, &user.id],
            )
            .await
            .unwrap();
            markers.push(id);
        }
        tx.commit().await.unwrap();
        markers
    }

    /// Every socket's latest count equals the unread query.
    async fn check(&mut self, after: &Op) {
        let markers = self.marker().await;
        for (u, marker) in markers.into_iter().enumerate() {
            let pushed = self.users[u].client.before(marker).await;
            if let Some(count) = last_count(&pushed) {
                self.users[u].count = count;
            }
            let expected = self.sql_count(u).await;
            assert_eq!(self.users[u].count, expected, "user {u} after {after:?}");
        }
    }
}

fn last_count(events: &[(String, Value)]) -> Option<i64> {
    events
        .iter()
        .rev()
        .find(|(event, _)| event == "notification:count")
        .and_then(|(_, data)| data["count"].as_i64())
}

/// A connected socket and the count its connect sequence announced.
async fn online(app: &TestApp, user: Uuid) -> (SioClient, i64) {
    let mut client = connect(app.address, Connect::token(&app.token(user)))
        .await
        .expect("connects");
    let success = client.connected().await;
    let count = success["unreadCount"].as_i64().expect("unreadCount");
    (client, count)
}

#[test]
fn every_pushed_count_equals_the_unread_query_at_its_position() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut runner = TestRunner::new(Config {
        cases: CASES,
        // Each case is a herald and a database; shrinking re-runs them.
        max_shrink_iters: 32,
        failure_persistence: None,
        ..Config::default()
    });
    let ops = prop::collection::vec(op(), 10..30);
    let result = runner.run(&ops, |ops| {
        runtime.block_on(async {
            let mut world = World::new().await;
            for op in &ops {
                world.apply(op).await;
                world.check(op).await;
            }
            // herald ran no count query for a tracked user after connect.
            let queries = world.app.metric("herald_count_queries_total").await;
            let connects = world
                .app
                .metric("herald_count_queries_total{reason=\"connect\"}")
                .await;
            let reloads = world
                .app
                .metric("herald_count_queries_total{reason=\"reload\"}")
                .await;
            assert_eq!(queries, connects + reloads, "only connects and reloads ask");
        });
        Ok(())
    });
    if let Err(error) = result {
        panic!("{error}");
    }
}

/// A user with more unread than herald keeps is counted by the database,
/// and their count is still right.
#[tokio::test]
async fn a_user_past_the_kept_limit_is_counted_by_the_database() {
    let app = TestApp::spawn_with(|config| config.unread_tracked = 2).await;
    let user = app.user("Ada", "USER", None).await;
    let (mut client, count) = online(&app, user).await;
    assert_eq!(count, 0);
    let mut ids = Vec::new();
    for title in ["a", "b", "c"] {
        ids.push(app.notify(user, title).await);
    }
    client.settles_at(3).await;
    assert!(
        app.metric("herald_count_queries_total{reason=\"untracked\"}")
            .await
            >= 1.0
    );
    app.pg
        .execute(
            "insert into herald.notification_seen (notification_id, user_id) values ($1, $2)",
            &[&ids[0], &user],
        )
        .await
        .unwrap();
    client.settles_at(2).await;
    assert_eq!(app.unread_count(user, None, false).await, 2);
    // Reconnected below the limit, the set is kept again.
    client.close();
    client.closed().await;
    let (mut client, count) = online(&app, user).await;
    assert_eq!(count, 2);
    let before = app
        .metric("herald_count_queries_total{reason=\"untracked\"}")
        .await;
    app.pg
        .execute(
            "insert into herald.notification_seen (notification_id, user_id) values ($1, $2)",
            &[&ids[1], &user],
        )
        .await
        .unwrap();
    client.settles_at(1).await;
    assert_eq!(
        app.metric("herald_count_queries_total{reason=\"untracked\"}")
            .await,
        before
    );
}
