//! Unread counts: `notification:count` for every online user whose count
//! changed, and the database's part in keeping them.
//!
//! Most counts move in memory (crate::unread): dispatch applies each event
//! to the unread sets of the users it reaches and pushes the new counts in
//! the same step, with no query. What this module adds, in one task:
//!
//! - the counts of users with more unread than herald keeps, asked of the
//!   database for all of them in one statement per pass, coalesced while a
//!   pass runs (a broadcast to 10,000 such users is one query);
//! - reloads after a change of rooms: the user's unread set is read again
//!   and lined up with the tail as a connect is, so it is exact at the
//!   dispatched position;
//! - expiries: each second, sets drop what has expired (under the tail's
//!   progress lock, so a count never overtakes one dispatch pushes), and
//!   users the database counts are recounted when something of theirs
//!   expired.
//!
//! `herald_count_queries_total` counts every statement that reads an
//! unread count or set, by why it ran.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use socketioxide::SocketIo;
use socketioxide::socket::Sid;
use time::OffsetDateTime;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::outbox::{self, Sent};
use super::presence::Presence;
use crate::audience::{AdminRoles, Audience, room};
use crate::db::{self, Pool};
use crate::eventlog::tail::TailHandle;
use crate::fanout::{self, Decision};
use crate::names::{NAMESPACE, emit};
use crate::telemetry::metrics;
use crate::unread::{Change, Unread, View};
use crate::wire;

/// Users per count query.
const CHUNK: usize = 5_000;
/// The longest pause between two passes.
const MAX_REST: Duration = Duration::from_millis(500);
/// How often expiries are looked for.
const EXPIRY_TICK: Duration = Duration::from_secs(1);
/// How long a reload waits for the tail to reach its snapshot.
const TAIL_WAIT: Duration = Duration::from_secs(10);

/// The handle that asks for counts.
#[derive(Clone, Default)]
pub struct Counts {
    pending: Arc<Mutex<Pending>>,
    wake: Arc<Notify>,
}

#[derive(Default)]
struct Pending {
    /// Users the database counts whose count changed.
    queries: HashSet<Uuid>,
    /// Users whose rooms changed.
    reloads: HashSet<Uuid>,
}

impl Pending {
    fn is_empty(&self) -> bool {
        self.queries.is_empty() && self.reloads.is_empty()
    }
}

/// What the counts task needs.
pub struct Keeper {
    pub pool: Pool,
    pub io: SocketIo,
    pub presence: Arc<Presence>,
    pub tail: TailHandle,
    pub admin_roles: AdminRoles,
    /// `HERALD_UNREAD_TRACKED`.
    pub limit: usize,
}

impl Counts {
    /// Asks the database for these users' counts (those it still counts then).
    pub fn query(&self, users: impl IntoIterator<Item = Uuid>) {
        self.request(|pending| pending.queries.extend(users));
    }

    /// Asks for a user's unread set to be read again after a change of rooms.
    pub fn reload(&self, user: Uuid) {
        self.request(|pending| {
            pending.reloads.insert(user);
        });
    }

    fn request(&self, add: impl FnOnce(&mut Pending)) {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        let before = (pending.queries.len(), pending.reloads.len());
        add(&mut pending);
        if (pending.queries.len(), pending.reloads.len()) != before {
            self.wake.notify_one();
        }
    }

    fn take(&self) -> Pending {
        std::mem::take(&mut *self.pending.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Runs the database's part until `stop` is cancelled.
    pub async fn run(self, keeper: Arc<Keeper>, stop: CancellationToken) {
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                () = self.wake.notified() => {}
            }
            let started = tokio::time::Instant::now();
            let pending = self.take();
            if pending.is_empty() {
                continue;
            }
            if !pending.reloads.is_empty() {
                let users: Vec<Uuid> = pending.reloads.iter().copied().collect();
                if let Err(error) = self.reload_sets(&keeper, &users).await {
                    tracing::warn!(
                        error = format!("{error:#}"),
                        users = users.len(),
                        "unread sets not reloaded"
                    );
                    users.iter().for_each(|user| self.reload(*user));
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
            let inboxes: Vec<_> = pending
                .queries
                .into_iter()
                .filter_map(|user| keeper.presence.untracked(user))
                .collect();
            for chunk in inboxes.chunks(CHUNK) {
                if let Err(error) = query_counts(&keeper, chunk).await {
                    tracing::warn!(
                        error = format!("{error:#}"),
                        users = chunk.len(),
                        "unread counts not refreshed"
                    );
                    // Ask again once the database answers.
                    self.query(chunk.iter().map(|i| i.user_id));
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
            // Rest as long as the pass took: under a flood of changes the
            // task keeps a database connection busy half the time, not all
            // of it, and the users changed meanwhile are counted once in
            // the next pass. Idle, a pass takes a millisecond or two.
            let rest = started.elapsed().min(MAX_REST);
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(rest) => {}
            }
        }
    }

    /// Reads the unread sets of users whose rooms changed, in one snapshot,
    /// and installs each once the tail has dispatched that snapshot, with
    /// the events dispatched since applied: exact at the dispatched
    /// position, as a connect is.
    async fn reload_sets(&self, keeper: &Keeper, users: &[Uuid]) -> anyhow::Result<()> {
        let waiting: Vec<_> = users
            .iter()
            .filter_map(|user| keeper.presence.reloading(*user))
            .collect();
        if waiting.is_empty() {
            return Ok(());
        }
        let mut client = keeper.pool.get().await?;
        let (tx, snapshot) = db::snapshot_transaction(&mut client).await?;
        let mut sets = Vec::with_capacity(waiting.len());
        for (inbox, reload) in waiting {
            metrics::count_query("reload");
            let ids = inbox.unread_ids(&tx, keeper.limit + 1).await?;
            sets.push((inbox, reload, ids));
        }
        tx.commit().await?;
        drop(client);

        let deadline = tokio::time::Instant::now() + TAIL_WAIT;
        let progress = keeper.tail.reached(&snapshot, deadline).await?;
        let Some(missed) = progress.since(&snapshot) else {
            // Older than the steps kept in memory: read them again.
            drop(progress);
            users.iter().for_each(|user| self.reload(*user));
            return Ok(());
        };
        let now = OffsetDateTime::now_utc();
        for (inbox, reload, ids) in sets {
            let mut unread = Unread::load(ids, keeper.limit);
            let mut rules = keeper.presence.in_app(inbox.user_id).unwrap_or_default();
            for event in &missed {
                // Another change of rooms or of what shows among them
                // starts another reload, which makes this one's result
                // outdated.
                let decision = fanout::decide(event, &inbox, now, &keeper.admin_roles, String::new);
                if let Decision::Emit(emission) = decision {
                    if let crate::unread::Effect::Rules(new) = &emission.unread {
                        rules = new.clone();
                    }
                    unread.apply(&emission.unread, &rules, keeper.limit);
                }
            }
            match keeper.presence.reloaded(reload, inbox, unread) {
                Some(Change::Count(count)) => {
                    push(&keeper.io, &keeper.presence, inbox.user_id, count)
                }
                Some(Change::Query) => self.query([inbox.user_id]),
                Some(Change::Unchanged | Change::Reload) | None => {}
            }
        }
        Ok(())
    }

    /// Lowers counts as notifications expire, within about a second.
    pub async fn watch_notification_expiry(self, keeper: Arc<Keeper>, stop: CancellationToken) {
        let mut checked = OffsetDateTime::now_utc();
        let mut tick = tokio::time::interval(EXPIRY_TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            let now = OffsetDateTime::now_utc();
            {
                // Under the progress lock: between two dispatches, so this
                // count and theirs go out in the order they were taken.
                let _dispatching = keeper.tail.progress.lock().await;
                for (user, count) in keeper.presence.expire(now) {
                    push(&keeper.io, &keeper.presence, user, count);
                }
            }
            if !keeper.presence.has_untracked() {
                checked = now;
                continue;
            }
            let expired = async {
                let client = keeper.pool.get().await?;
                anyhow::Ok(db::notifications::expired_between(&client, checked, now).await?)
            }
            .await;
            match expired {
                Ok(rows) => {
                    checked = now;
                    for (audience, user_id, sector_id) in rows {
                        if let Some(audience) =
                            Audience::from_columns(&audience, user_id, sector_id)
                        {
                            let users = keeper.presence.addressed(audience);
                            self.query(users.into_iter().map(|inbox| inbox.user_id));
                        }
                    }
                }
                Err(error) => tracing::debug!(error = format!("{error:#}"), "expiry check failed"),
            }
        }
    }
}

/// Asks the database for the counts of users it counts, and pushes them.
async fn query_counts(keeper: &Keeper, inboxes: &[db::inbox::Inbox]) -> anyhow::Result<()> {
    let client = keeper.pool.get().await?;
    metrics::count_query("untracked");
    let counts = db::inbox::unread_counts(&client, inboxes).await?;
    for (user_id, count) in counts {
        push(&keeper.io, &keeper.presence, user_id, count);
    }
    // Their watched views too, one statement per socket that watches.
    for inbox in inboxes {
        for (sid, views) in keeper.presence.watches(inbox.user_id) {
            metrics::count_query("views");
            let counts = view_counts(&client, inbox, &views).await?;
            push_views(&keeper.io, &keeper.presence, inbox.user_id, [(sid, counts)]);
        }
    }
    Ok(())
}

/// A socket's watched views, counted by the database.
pub async fn view_counts(
    client: &impl deadpool_postgres::GenericClient,
    inbox: &db::inbox::Inbox,
    views: &[(String, View)],
) -> Result<BTreeMap<String, i64>, tokio_postgres::Error> {
    let mut counts = BTreeMap::new();
    for (name, view) in views {
        counts.insert(name.clone(), inbox.view_count(client, view).await?);
    }
    Ok(counts)
}

/// Queues `notification:count` for every socket of `user` on this instance,
/// and `notification:counts` for those whose watched views moved with it.
///
/// Never waits: it runs in dispatch, under the tail's progress lock. A
/// socket whose queue is full is evicted, as dispatch does, so it resumes
/// with a fresh count rather than keep a stale one.
pub fn push(io: &SocketIo, presence: &Presence, user: Uuid, count: i64) {
    let Some(ns) = io.of(NAMESPACE) else {
        return;
    };
    let payload = wire::Count { count };
    for socket in ns.to(room::user(user)).local().sockets() {
        match outbox::send(&socket, emit::NOTIFICATION_COUNT, &payload) {
            Sent::Queued | Sent::Closed => {}
            Sent::Full => outbox::evict(socket),
        }
    }
    metrics::pushed(emit::NOTIFICATION_COUNT);
    push_views(io, presence, user, presence.moved_views(user));
}

/// Queues `notification:counts` for each socket with the counts of its
/// views; a socket that left has its watch forgotten.
pub fn push_views(
    io: &SocketIo,
    presence: &Presence,
    user: Uuid,
    views: impl IntoIterator<Item = (Sid, BTreeMap<String, i64>)>,
) {
    let Some(ns) = io.of(NAMESPACE) else {
        return;
    };
    for (sid, counts) in views {
        let Some(socket) = ns.get_socket(sid) else {
            presence.unwatch(user, sid);
            continue;
        };
        match outbox::send(&socket, emit::NOTIFICATION_COUNTS, &wire::Counts { counts }) {
            Sent::Queued | Sent::Closed => {}
            Sent::Full => outbox::evict(socket),
        }
        metrics::pushed(emit::NOTIFICATION_COUNTS);
    }
}

#[cfg(test)]
mod tests {
    use futures_util::FutureExt;

    use super::*;

    #[test]
    fn requests_coalesce_into_sets_taken_whole() {
        let counts = Counts::default();
        let (a, b, c) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        counts.query([a, b]);
        counts.query([a]);
        counts.clone().query([c, b]);
        counts.reload(a);
        counts.reload(a);
        let taken = counts.take();
        assert_eq!(taken.queries, HashSet::from([a, b, c]));
        assert_eq!(taken.reloads, HashSet::from([a]));
        assert!(
            counts.take().is_empty(),
            "a pass takes the sets and empties them"
        );
    }

    #[test]
    fn the_task_is_woken_once_per_new_request_not_per_call() {
        let counts = Counts::default();
        let a = Uuid::new_v4();
        counts.query([a]);
        assert!(counts.wake.notified().now_or_never().is_some(), "woken");
        counts.query([a]);
        counts.query([]);
        assert!(
            counts.wake.notified().now_or_never().is_none(),
            "a user already waiting wakes nobody"
        );
        counts.reload(a);
        assert!(
            counts.wake.notified().now_or_never().is_some(),
            "a reload is a new request"
        );
        counts.take();
        counts.query([a]);
        assert!(
            counts.wake.notified().now_or_never().is_some(),
            "taken, then asked again"
        );
    }
}
