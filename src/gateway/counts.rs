//! Unread counts: `notification:count` for every online user whose count
//! may have changed.
//!
//! Requests from the fan-out, the connect sequence and the expiry watcher
//! are coalesced into a set; one task takes the whole set, asks PostgreSQL
//! for all of those counts in one statement, and emits each, then rests as
//! long as that took before the next pass. A broadcast to
//! a sector of 10,000 online users is one query, not 10,000. Being one task,
//! it never emits an older count after a newer one. The value a client sees
//! is what the unread query returns at that moment.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use socketioxide::SocketIo;
use time::OffsetDateTime;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::presence::Presence;
use crate::audience::{Audience, room};
use crate::db::{self, Pool};
use crate::names::{NAMESPACE, emit};
use crate::wire;

/// Users per count query.
const CHUNK: usize = 5_000;
/// The longest pause between two refresh passes.
const MAX_REST: Duration = Duration::from_millis(500);
/// How often expiries are looked for.
const EXPIRY_TICK: Duration = Duration::from_secs(1);

/// The handle that asks for counts.
#[derive(Clone, Default)]
pub struct Counts {
    pending: Arc<Mutex<HashSet<Uuid>>>,
    wake: Arc<Notify>,
}

impl Counts {
    /// Asks for a fresh count for these users (those still online then).
    pub fn refresh(&self, users: impl IntoIterator<Item = Uuid>) {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        let before = pending.len();
        pending.extend(users);
        if pending.len() > before {
            self.wake.notify_one();
        }
    }

    fn take(&self) -> HashSet<Uuid> {
        std::mem::take(&mut *self.pending.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Runs the refresher until `stop` is cancelled.
    pub async fn run(
        self,
        pool: Pool,
        io: SocketIo,
        presence: Arc<Presence>,
        stop: CancellationToken,
    ) {
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                () = self.wake.notified() => {}
            }
            let started = tokio::time::Instant::now();
            let users = self.take();
            let inboxes: Vec<_> = users
                .into_iter()
                .filter_map(|user| presence.inbox(user))
                .collect();
            for chunk in inboxes.chunks(CHUNK) {
                if let Err(error) = emit_counts(&pool, &io, chunk).await {
                    tracing::warn!(
                        error = format!("{error:#}"),
                        users = chunk.len(),
                        "unread counts not refreshed"
                    );
                    // Ask again once the database answers.
                    self.refresh(chunk.iter().map(|i| i.user_id));
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
            // Rest as long as the pass took: under a flood of changes the
            // refresher keeps a database connection busy half the time, not
            // all of it, and the users changed meanwhile are counted once in
            // the next pass. Idle, a pass takes a millisecond or two.
            let rest = started.elapsed().min(MAX_REST);
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(rest) => {}
            }
        }
    }

    /// Refreshes the counts of online users whose unread notifications
    /// expired, within about a second of the expiry.
    pub async fn watch_notification_expiry(
        self,
        pool: Pool,
        presence: Arc<Presence>,
        stop: CancellationToken,
    ) {
        let mut checked = OffsetDateTime::now_utc();
        let mut tick = tokio::time::interval(EXPIRY_TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            let now = OffsetDateTime::now_utc();
            let expired = async {
                let client = pool.get().await?;
                anyhow::Ok(db::notifications::expired_between(&client, checked, now).await?)
            }
            .await;
            match expired {
                Ok(rows) => {
                    checked = now;
                    for (audience, user_id, sector_id) in rows {
                        let audience = Audience::from_columns(&audience, user_id, sector_id);
                        if let Some(audience) = audience {
                            self.refresh(
                                presence.addressed(audience).into_iter().map(|i| i.user_id),
                            );
                        }
                    }
                }
                Err(error) => tracing::debug!(error = format!("{error:#}"), "expiry check failed"),
            }
        }
    }
}

async fn emit_counts(
    pool: &Pool,
    io: &SocketIo,
    inboxes: &[db::inbox::Inbox],
) -> anyhow::Result<()> {
    let client = pool.get().await?;
    let counts = db::inbox::unread_counts(&client, inboxes).await?;
    let Some(ns) = io.of(NAMESPACE) else {
        return Ok(());
    };
    for (user_id, count) in counts {
        let result = ns
            .clone()
            .to(room::user(user_id))
            .local()
            .emit(emit::NOTIFICATION_COUNT, &wire::Count { count })
            .await;
        if let Err(error) = result {
            tracing::debug!(error = %error, user.id = %user_id, "count not delivered to every socket");
        }
        crate::telemetry::metrics::pushed(emit::NOTIFICATION_COUNT);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use futures_util::FutureExt;

    use super::*;

    #[test]
    fn requests_coalesce_into_one_set_taken_whole() {
        let counts = Counts::default();
        let (a, b, c) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        counts.refresh([a, b]);
        counts.refresh([a]);
        counts.clone().refresh([c, b]);
        assert_eq!(counts.take(), HashSet::from([a, b, c]));
        assert!(
            counts.take().is_empty(),
            "a pass takes the set and empties it"
        );
    }

    #[test]
    fn the_refresher_is_woken_once_per_new_user_not_per_request() {
        let counts = Counts::default();
        let a = Uuid::new_v4();
        counts.refresh([a]);
        assert!(counts.wake.notified().now_or_never().is_some(), "woken");
        counts.refresh([a]);
        counts.refresh([]);
        assert!(
            counts.wake.notified().now_or_never().is_none(),
            "a user already waiting wakes nobody"
        );
        counts.take();
        counts.refresh([a]);
        assert!(
            counts.wake.notified().now_or_never().is_some(),
            "taken, then asked again"
        );
    }
}
