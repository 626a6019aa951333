//! Waking snoozed notifications: when a snooze's `until` passes, one
//! instance ends it.
//!
//! Every instance runs this task. Each wakes when the next snooze is due
//! (asked of the database, by its clock), when a new snooze is logged (it
//! may end sooner), and once a minute in case it missed one, then deletes
//! the due rows it can lock (sql/snoozes_wake.sql, `skip locked`). A row
//! is deleted once, so its `notification.unsnoozed` is logged once, and
//! every instance then pushes the notification again from the log like any
//! other event. A snooze that ended while herald was down is woken on
//! start, by the first pass.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::db::{self, Pool};

/// The longest wait between two looks.
const MAX_WAIT: Duration = Duration::from_secs(60);
/// The wait after a failed pass.
const RETRY: Duration = Duration::from_secs(1);

/// Runs until `stop` is cancelled; `snoozed` is notified by dispatch for
/// each snooze logged.
pub async fn run(pool: Pool, snoozed: Arc<Notify>, stop: CancellationToken) {
    loop {
        let wait = match pass(&pool).await {
            Ok(wait) => wait.unwrap_or(MAX_WAIT).min(MAX_WAIT),
            Err(error) => {
                tracing::warn!(error = format!("{error:#}"), "snoozes not woken; retrying");
                RETRY
            }
        };
        tokio::select! {
            () = stop.cancelled() => return,
            () = snoozed.notified() => {}
            () = tokio::time::sleep(wait) => {}
        }
    }
}

/// Ends every due snooze it can claim; how long until the next one ends.
async fn pass(pool: &Pool) -> anyhow::Result<Option<Duration>> {
    let client = pool.get().await?;
    loop {
        let woken = db::snoozes::wake(&client).await?;
        if woken > 0 {
            tracing::debug!(woken, "snoozes ended");
        }
        if !db::snoozes::more_due(woken) {
            break;
        }
    }
    // A snooze another instance holds locked counts as due here (zero
    // wait); the pause below keeps this from spinning while it finishes.
    let next = db::snoozes::next(&client).await?;
    Ok(next.map(|wait| wait.max(Duration::from_millis(20))))
}
