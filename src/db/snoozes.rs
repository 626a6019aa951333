//! Snoozes ending: the wake-up every instance races for.

use std::time::Duration;

use deadpool_postgres::GenericClient;

/// Snoozes ended per statement.
const WAKE_BATCH: i64 = 500;

/// Ends the snoozes whose time has come that no other instance is ending;
/// how many it ended (each logs its `notification.unsnoozed`).
#[tracing::instrument(skip_all)]
pub async fn wake(client: &impl GenericClient) -> Result<u64, tokio_postgres::Error> {
    let statement = client
        .prepare_cached(include_str!("../../sql/snoozes_wake.sql"))
        .await?;
    client.execute(&statement, &[&WAKE_BATCH]).await
}

/// Whether a full batch was ended, so more may be due.
pub fn more_due(woken: u64) -> bool {
    woken >= WAKE_BATCH as u64
}

/// How long until the next snooze ends, by the database's clock; `None`
/// when nothing is snoozed. Zero when one is already due.
#[tracing::instrument(skip_all)]
pub async fn next(client: &impl GenericClient) -> Result<Option<Duration>, tokio_postgres::Error> {
    let statement = client
        .prepare_cached(include_str!("../../sql/snoozes_next.sql"))
        .await?;
    let row = client.query_one(&statement, &[]).await?;
    let wait: Option<i64> = row.try_get("wait_us")?;
    Ok(wait.map(|us| Duration::from_micros(u64::try_from(us).unwrap_or(0))))
}
