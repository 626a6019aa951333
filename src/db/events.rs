//! Reads of the event log outside the tail: replays for resuming clients.

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

/// (audience, user_id, sector_id) of notifications that expired in (after, until].
pub async fn expired_between(
    client: &impl GenericClient,
    after: time::OffsetDateTime,
    until: time::OffsetDateTime,
) -> Result<Vec<(String, Option<uuid::Uuid>, Option<uuid::Uuid>)>, tokio_postgres::Error> {
    let statement = client
        .prepare_cached(include_str!("../../sql/notifications_expired.sql"))
        .await?;
    let rows = client.query(&statement, &[&after, &until]).await?;
    rows.iter()
        .map(|row| Ok((row.try_get(0)?, row.try_get(1)?, row.try_get(2)?)))
        .collect()
}
