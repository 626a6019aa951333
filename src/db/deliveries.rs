//! Delivery records: the batch write behind `SENT` rows.

use time::OffsetDateTime;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{ToSql, Type};
use uuid::Uuid;

/// Records that each (notification, user) was pushed at the given time, in
/// one transaction: the batch is sent by binary COPY into the session's
/// staging table, then moved into `herald.notification_deliveries` by one
/// insert that skips pairs recorded already and pairs whose notification
/// or user is gone, after the lock that keeps deletes from racing it
/// (migration V10). Returns the rows written. On error nothing is written.
#[tracing::instrument(skip_all, fields(rows = sent.len()))]
pub async fn record_sent(
    client: &mut deadpool_postgres::Client,
    sent: &[(Uuid, Uuid, OffsetDateTime)],
) -> Result<u64, tokio_postgres::Error> {
    let transaction = client.transaction().await?;
    // A notice per batch that the table exists already would be noise.
    transaction
        .batch_execute(concat!(
            "set local client_min_messages = warning;\n",
            include_str!("../../sql/delivery_batch_staging.sql")
        ))
        .await?;
    let copy = transaction
        .prepare_cached(include_str!("../../sql/delivery_copy_batch.sql"))
        .await?;
    let sink = transaction.copy_in(&copy).await?;
    let mut writer = std::pin::pin!(BinaryCopyInWriter::new(
        sink,
        &[Type::UUID, Type::UUID, Type::TIMESTAMPTZ]
    ));
    for (notification, user, at) in sent {
        writer
            .as_mut()
            .write(&[notification as &(dyn ToSql + Sync), user, at])
            .await?;
    }
    writer.finish().await?;
    transaction
        .batch_execute(include_str!("../../sql/delivery_lock_parents.sql"))
        .await?;
    let insert = transaction
        .prepare_cached(include_str!("../../sql/delivery_record_sent.sql"))
        .await?;
    let written = transaction.execute(&insert, &[]).await?;
    transaction.commit().await?;
    Ok(written)
}
