//! Retention: prunes events older than `HERALD_EVENT_RETENTION` in small
//! batches, so the log stays small and the tail is never blocked. Every
//! instance runs it; batches skip rows another instance is deleting.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::db::{self, Pool};

/// Rows per delete.
const BATCH: i32 = 1_000;

/// How often to prune: often enough that the log overshoots retention by a
/// small fraction of it, at most once a minute.
pub fn interval(retention: Duration) -> Duration {
    (retention / 4).clamp(Duration::from_millis(100), Duration::from_secs(60))
}

/// Deletes every event past retention; how many.
pub async fn prune(pool: &Pool, retention: Duration) -> anyhow::Result<u64> {
    let mut total = 0;
    loop {
        let client = pool.get().await?;
        let deleted = db::events::prune(&client, retention, BATCH).await?;
        total += deleted as u64;
        if deleted < BATCH {
            return Ok(total);
        }
        drop(client);
        tokio::task::yield_now().await;
    }
}

/// Prunes on a timer until `stop` is cancelled.
pub async fn run(pool: Pool, retention: Duration, stop: CancellationToken) {
    let mut tick = tokio::time::interval(interval(retention));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        match prune(&pool, retention).await {
            Ok(0) => {}
            Ok(deleted) => tracing::info!(events.deleted = deleted, "pruned events past retention"),
            Err(error) => tracing::warn!(error = format!("{error:#}"), "pruning events failed"),
        }
    }
}
