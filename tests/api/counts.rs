//! Unread counts move in memory with each dispatched event (src/unread.rs).
//! A property test drives random interleavings of what changes a count —
//! creates of several kinds and importances to every audience, reads
//! (addressed or not), mark-all, archives, snoozes (ended early or woken),
//! preference changes, retractions, expiries, moves between rooms,
//! reconnects and second devices — against a real herald and database, and
//! after each step checks every client's latest `notification:count`
//! against the unread query, and its latest `notification:counts` for two
//! watched views against the view query.
//!
//! Each check waits on herald's own order, not on time: after a step, a
//! marker is created and read in one transaction for each user. Its
//! `notification:new` follows everything the step caused on that socket,
//! and it changes no count, so the last count before it is the count at
//! the position dispatched when the marker was.

use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{Value, json};
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

/// The kinds notifications are created with, and the patterns users set
/// preferences for.
const KINDS: [&str; 3] = ["order.shipped", "order.late", "billing.due"];
const PATTERNS: [&str; 4] = ["order.*", "order.late", "*", "billing.due"];
const IMPORTANCE: [&str; 4] = ["low", "normal", "high", "urgent"];

/// The views every socket watches.
fn views() -> Value {
    json!({"orders": {"kinds": ["order.*"]}, "loud": {"importance": ["high", "urgent"]}})
}

#[derive(Debug, Clone)]
enum Op {
    /// `n` notifications of one kind and importance in one transaction.
    Create(Target, usize, usize, usize),
    /// A user archives the k-th notification created so far.
    Archive(usize, usize),
    /// A user snoozes the k-th notification: for an hour, or for a second
    /// (and the step waits for its wake-up in the log).
    Snooze(usize, usize, bool),
    /// A user ends the k-th notification's snooze early.
    Unsnooze(usize, usize),
    /// A user enables or disables a pattern in the inbox (`IN_APP`).
    Prefer(usize, usize, bool),
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
        6 => (target(), 1usize..4, 0..KINDS.len(), 0..IMPORTANCE.len())
            .prop_map(|(t, n, k, i)| Op::Create(t, n, k, i)),
        2 => (0..USERS, 0usize..40).prop_map(|(u, k)| Op::Archive(u, k)),
        2 => (0..USERS, 0usize..40, any::<bool>()).prop_map(|(u, k, b)| Op::Snooze(u, k, b)),
        1 => (0..USERS, 0usize..40).prop_map(|(u, k)| Op::Unsnooze(u, k)),
        2 => (0..USERS, 0..PATTERNS.len(), any::<bool>()).prop_map(|(u, p, e)| Op::Prefer(u, p, e)),
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
    /// The latest counts of its watched views.
    views: Value,
}

impl User {
    /// Waits for `name`, keeping the counts pushed on the way.
    async fn wait_for(&mut self, name: &str) -> Value {
        loop {
            let (event, data) = self.client.next().await;
            self.keep(&event, &data);
            if event == name {
                return data;
            }
        }
    }

    fn keep(&mut self, event: &str, data: &Value) {
        match event {
            "notification:count" => self.count = data["count"].as_i64().expect("count"),
            "notification:counts" => self.views = data["counts"].clone(),
            _ => {}
        }
    }

    /// The events until `marker`'s `notification:new`, their counts kept.
    async fn until(&mut self, marker: Uuid) -> Vec<(String, Value)> {
        let events = self.client.before(marker).await;
        for (event, data) in &events {
            self.keep(event, data);
        }
        events
    }
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
            let (client, count, views) = online(&app, id).await;
            users.push(User {
                id,
                sector,
                admin,
                client,
                count,
                views,
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

    /// The watched views' counts by the view query.
    async fn sql_views(&self, user: usize) -> Value {
        let u = &self.users[user];
        let sector = u.sector.map(|s| self.sectors[s]);
        let query = include_str!("../../sql/inbox_view_count.sql");
        let orders: i64 = self
            .app
            .pg
            .query_one(
                query,
                &[
                    &u.id,
                    &sector,
                    &u.admin,
                    &Some(vec!["order.*"]),
                    &None::<Vec<&str>>,
                ],
            )
            .await
            .unwrap()
            .get(0);
        let loud: i64 = self
            .app
            .pg
            .query_one(
                query,
                &[
                    &u.id,
                    &sector,
                    &u.admin,
                    &None::<Vec<&str>>,
                    &Some(vec!["high", "urgent"]),
                ],
            )
            .await
            .unwrap()
            .get(0);
        json!({"orders": orders, "loud": loud})
    }

    async fn apply(&mut self, op: &Op) {
        let pg = &self.app.pg;
        match op {
            Op::Create(target, n, kind, importance) => {
                let (audience, user, sector) = self.columns(target);
                let rows = pg
                    .query(
                        "insert into herald.notifications (audience, user_id, sector_id, title, kind, importance)
                         select $1, $2, $3, 'n', $5, $6 from generate_series(1, $4) returning id",
                        &[&audience, &user, &sector, &(*n as i32), &KINDS[*kind], &IMPORTANCE[*importance]],
                    )
                    .await
                    .unwrap();
                self.notifications
                    .extend(rows.iter().map(|r| r.get::<_, Uuid>(0)));
            }
            Op::Archive(user, k) => {
                if let Some(n) = self.notifications.get(*k) {
                    let ack = self.users[*user]
                        .client
                        .ack("mark.archived", Some(json!({"notificationId": n})))
                        .await;
                    answered(&ack, &["not_found"]);
                }
            }
            Op::Snooze(user, k, brief) => {
                if let Some(n) = self.notifications.get(*k) {
                    let length = if *brief {
                        time::Duration::seconds(1)
                    } else {
                        time::Duration::hours(1)
                    };
                    let until = herald::wire::rfc3339(time::OffsetDateTime::now_utc() + length);
                    let ack = self.users[*user]
                        .client
                        .ack(
                            "mark.snoozed",
                            Some(json!({"notificationId": n, "until": until})),
                        )
                        .await;
                    // Refused when read, retracted, expired or not theirs.
                    answered(&ack, &["not_found", "invalid_payload"]);
                    if *brief && ack["success"] == true {
                        self.woken(*n, *user).await;
                    }
                }
            }
            Op::Unsnooze(user, k) => {
                if let Some(n) = self.notifications.get(*k) {
                    let ack = self.users[*user]
                        .client
                        .ack("mark.unsnoozed", Some(json!({"notificationId": n})))
                        .await;
                    answered(&ack, &["not_found"]);
                }
            }
            Op::Prefer(user, pattern, enabled) => {
                let ack = self.users[*user]
                    .client
                    .ack(
                        "preferences.set",
                        Some(json!({"kindPattern": PATTERNS[*pattern], "channel": "IN_APP", "enabled": enabled})),
                    )
                    .await;
                answered(&ack, &[]);
            }
            Op::Expiring(target) => {
                let (audience, user, sector) = self.columns(target);
                let row = pg
                    .query_one(
                        // Urgent, so no preference keeps it from a socket.
                        "insert into herald.notifications (audience, user_id, sector_id, title, importance, expires_at)
                         values ($1, $2, $3, 'brief', 'urgent', now() + interval '2 seconds') returning id, expires_at",
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
                    let user = &mut self.users[*u];
                    while user.wait_for("notification:new").await["id"] != json!(id) {}
                    let before = user.count;
                    let up = user.wait_for("notification:count").await;
                    assert_eq!(up["count"], before + 1, "user {u}");
                }
                let left = expires_at - time::OffsetDateTime::now_utc();
                tokio::time::sleep(Duration::try_from(left).unwrap_or_default()).await;
                for u in reached {
                    let fell = self.users[u].wait_for("notification:count").await;
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
                let count = u.wait_for("notification:count").await;
                let expected = self.sql_count(*user).await;
                assert_eq!(count["count"], expected, "user {user} after a move");
                self.users[*user].count = expected;
            }
            Op::Reconnect(user) => {
                let id = self.users[*user].id;
                self.users[*user].client.close();
                self.users[*user].client.closed().await;
                let (client, count, views) = online(&self.app, id).await;
                assert_eq!(
                    count,
                    self.sql_count(*user).await,
                    "user {user} reconnected"
                );
                assert_eq!(
                    views,
                    self.sql_views(*user).await,
                    "user {user} reconnected"
                );
                let u = &mut self.users[*user];
                (u.client, u.count, u.views) = (client, count, views);
            }
            Op::SecondDevice(user) => {
                let (mut second, count, _) = online(&self.app, self.users[*user].id).await;
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
                    self.users[u].until(*marker).await;
                }
            }
        }
    }

    /// One marker per user, each created and read at once in one
    /// transaction, so that its two events are dispatched together and
    /// leave every count as it was.
    async fn marker(&self) -> Vec<Uuid> {
        let mut pg = crate::helpers::connect(&self.app.db.url).await;
        let tx = pg.transaction().await.unwrap();
        let mut markers = Vec::new();
        for user in &self.users {
            let id: Uuid = tx
                .query_one(
                    // Urgent, so that no preference keeps it from the socket.
                    "insert into herald.notifications (user_id, title, importance) values ($1, 'marker', 'urgent') returning id",
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

    /// Waits until the snooze of `notification` by `user` is woken: its
    /// `notification.unsnoozed` is in the log.
    async fn woken(&self, notification: Uuid, user: usize) {
        let user = self.users[user].id;
        for _ in 0..600 {
            let logged: i64 = self
                .app
                .pg
                .query_one(
                    "select count(*) from herald.events
                      where kind = 'notification.unsnoozed' and notification_id = $1 and user_id = $2",
                    &[&notification, &user],
                )
                .await
                .unwrap()
                .get(0);
            if logged > 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("the snooze of {notification} was not woken within 12 s");
    }

    /// Every socket's latest count equals the unread query, and its latest
    /// view counts the view query.
    async fn check(&mut self, after: &Op) {
        let markers = self.marker().await;
        for (u, marker) in markers.into_iter().enumerate() {
            self.users[u].until(marker).await;
            let expected = self.sql_count(u).await;
            assert_eq!(self.users[u].count, expected, "user {u} after {after:?}");
            let expected = self.sql_views(u).await;
            assert_eq!(
                self.users[u].views, expected,
                "user {u}'s views after {after:?}"
            );
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

/// A refusal is one of `allowed`; anything else must have succeeded.
fn answered(ack: &Value, allowed: &[&str]) {
    let code = ack["error"]["code"].as_str();
    assert!(
        ack["success"] == true || code.is_some_and(|c| allowed.contains(&c)),
        "{ack}"
    );
}

/// A connected socket watching [`views`], the count its connect sequence
/// announced and the views' counts its watch answered.
async fn online(app: &TestApp, user: Uuid) -> (SioClient, i64, Value) {
    let mut client = connect(app.address, Connect::token(&app.token(user)))
        .await
        .expect("connects");
    let success = client.connected().await;
    let count = success["unreadCount"].as_i64().expect("unreadCount");
    let watched = client
        .ack("counts.watch", Some(json!({"views": views()})))
        .await;
    assert_eq!(watched["success"], true, "{watched}");
    (client, count, watched["counts"].clone())
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
            let watches = world
                .app
                .metric("herald_count_queries_total{reason=\"views\"}")
                .await;
            assert_eq!(
                queries,
                connects + reloads + watches,
                "only connects, reloads and watches ask"
            );
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
    let (mut client, count, _) = online(&app, user).await;
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
    let (mut client, count, _) = online(&app, user).await;
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
