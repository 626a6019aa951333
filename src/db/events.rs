//! Reads of the event log outside the tail (replays for resuming clients)
//! and its retention.

use deadpool_postgres::GenericClient;

use super::inbox::Inbox;
use crate::log::{Event, Position, Snapshot};

/// The events addressed to `inbox` that a client at `from` has not been
/// sent, as visible in `at`, in (tx, id) order; at most `limit`.
#[tracing::instrument(skip_all, fields(user.id = %inbox.user_id))]
pub async fn replay(
    client: &impl GenericClient,
    inbox: &Inbox,
    from: &Position,
    at: &Snapshot,
    limit: i64,
) -> anyhow::Result<Vec<Event>> {
    let statement = client
        .prepare_cached(include_str!("../../sql/events_replay.sql"))
        .await?;
    let (base, step_end, tx, id) = from.sql_parts();
    let tx = tx.to_string();
    let at = at.to_string();
    let rows = client
        .query(
            &statement,
            &[
                &base,
                &step_end,
                &tx,
                &id,
                &at,
                &inbox.user_id,
                &inbox.sector_id,
                &inbox.is_admin,
                &limit,
            ],
        )
        .await?;
    rows.iter()
        .map(|row| Event::from_row(row).map_err(anyhow::Error::from))
        .collect()
}

/// Deletes up to `batch` events older than `older_than`; how many.
pub async fn prune(
    client: &impl GenericClient,
    older_than: std::time::Duration,
    batch: i32,
) -> Result<i32, tokio_postgres::Error> {
    let statement = client
        .prepare_cached("select herald.prune_events(make_interval(secs => $1), $2)")
        .await?;
    client
        .query_one(&statement, &[&older_than.as_secs_f64(), &batch])
        .await?
        .try_get(0)
}

/// Events of transactions below this may have been pruned: a position whose
/// snapshot's `xmin` lies below it can no longer be replayed.
pub async fn pruned_through(client: &impl GenericClient) -> anyhow::Result<u64> {
    let statement = client
        .prepare_cached("select pruned_through_tx::text from herald.event_retention")
        .await?;
    let text: String = client.query_one(&statement, &[]).await?.try_get(0)?;
    Ok(text.parse()?)
}

/// One batch of `herald.prune_notifications`.
pub async fn prune_notifications(
    client: &impl GenericClient,
    older_than: std::time::Duration,
    batch: i32,
) -> Result<crate::log::retention::Removed, tokio_postgres::Error> {
    let statement = client
        .prepare_cached("select * from herald.prune_notifications(make_interval(secs => $1), $2)")
        .await?;
    let row = client
        .query_one(&statement, &[&older_than.as_secs_f64(), &batch])
        .await?;
    let count = |column: &str| row.try_get::<_, i32>(column).map(|n| n.max(0) as u64);
    Ok(crate::log::retention::Removed {
        notifications: count("notifications")?,
        receipts: count("receipts")?,
        deliveries: count("deliveries")?,
    })
}
