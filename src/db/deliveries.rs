//! Delivery records: the batch insert behind `SENT` rows.

use deadpool_postgres::GenericClient;
use time::OffsetDateTime;
use uuid::Uuid;

/// Records that each (notification, user) was pushed at the given time.
#[tracing::instrument(skip_all, fields(rows = sent.len()))]
pub async fn record_sent(
    client: &impl GenericClient,
    sent: &[(Uuid, Uuid, OffsetDateTime)],
) -> Result<u64, tokio_postgres::Error> {
    let statement = client
        .prepare_cached(include_str!("../../sql/delivery_record_sent.sql"))
        .await?;
    let notifications: Vec<Uuid> = sent.iter().map(|s| s.0).collect();
    let users: Vec<Uuid> = sent.iter().map(|s| s.1).collect();
    let times: Vec<OffsetDateTime> = sent.iter().map(|s| s.2).collect();
    client
        .execute(&statement, &[&notifications, &users, &times])
        .await
}
