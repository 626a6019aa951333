//! Delivery records: the batch write behind `SENT` rows.

use std::collections::HashSet;

use time::OffsetDateTime;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{ToSql, Type};
use uuid::Uuid;

/// How a batch's rows reach `herald.notification_deliveries`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// Binary `COPY` straight into the table: the rows at their own cost.
    /// `COPY` cannot skip a pair recorded already; one such pair fails it
    /// (a unique violation, and nothing of it is written), and the batch is
    /// then merged instead.
    Copy,
    /// Binary `COPY` into the session's staging table, then one insert that
    /// skips the pairs recorded already.
    Merge,
}

/// The channel and status of the rows this writer copies straight in, as
/// sql/delivery_record_sent.sql writes them.
const CHANNEL: &str = "IN_APP";
const STATUS: &str = "SENT";

/// What a batch wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recorded {
    pub rows: u64,
    /// How the rows went in: [`Method::Merge`] when asked for, or when a
    /// [`Method::Copy`] met a pair recorded already.
    pub method: Method,
}

/// Records that each (notification, user) was pushed at the given time, in
/// one transaction: after the lock that keeps deletes out until the commit
/// (migration V10), the batch's distinct notifications and users are looked
/// up once each, the pairs whose notification or user is gone are left
/// out, and the rest are written by `method`. Pairs recorded already keep
/// their row (another instance's `SENT`, or a `DELIVERED` a client sent
/// first, is never downgraded). On error nothing is written.
///
/// One lookup per distinct parent, not a probe per row: a broadcast batch
/// of 5,000 rows has one notification, and each probe ran as a subplan of
/// its own (5,000 rows: 15.0 ms with the probes, 11.9 ms this way).
#[tracing::instrument(skip_all, fields(rows = sent.len()))]
pub async fn record_sent(
    client: &mut deadpool_postgres::Client,
    sent: &[(Uuid, Uuid, OffsetDateTime)],
    method: Method,
) -> Result<Recorded, tokio_postgres::Error> {
    if method == Method::Copy {
        match write(client, sent, Method::Copy).await {
            Err(error) if error.code() == Some(&SqlState::UNIQUE_VIOLATION) => {}
            written => return written.map(|rows| Recorded { rows, method }),
        }
    }
    let rows = write(client, sent, Method::Merge).await?;
    Ok(Recorded {
        rows,
        method: Method::Merge,
    })
}

/// One attempt at a batch, in a transaction of its own; the rows written.
async fn write(
    client: &mut deadpool_postgres::Client,
    sent: &[(Uuid, Uuid, OffsetDateTime)],
    method: Method,
) -> Result<u64, tokio_postgres::Error> {
    let transaction = client.transaction().await?;
    let lock = include_str!("../../sql/delivery_lock_parents.sql");
    match method {
        Method::Copy => transaction.batch_execute(lock).await?,
        // A notice per batch that the table exists already would be noise.
        Method::Merge => {
            transaction
                .batch_execute(&format!(
                    "set local client_min_messages = warning;\n{};\n{lock}",
                    include_str!("../../sql/delivery_batch_staging.sql"),
                ))
                .await?
        }
    }
    let notifications = distinct(sent.iter().map(|&(notification, _, _)| notification));
    let users = distinct(sent.iter().map(|&(_, user, _)| user));
    let (notifications, users) = tokio::try_join!(
        existing(
            &transaction,
            include_str!("../../sql/delivery_live_notifications.sql"),
            &notifications
        ),
        existing(
            &transaction,
            include_str!("../../sql/delivery_live_users.sql"),
            &users
        ),
    )?;
    let live: Vec<_> = sent
        .iter()
        .filter(|(notification, user, _)| {
            notifications.contains(notification) && users.contains(user)
        })
        .collect();
    if live.is_empty() {
        transaction.commit().await?;
        return Ok(0);
    }
    let (copy, types): (_, &[Type]) = match method {
        Method::Copy => (
            include_str!("../../sql/delivery_copy_sent.sql"),
            &[
                Type::UUID,
                Type::UUID,
                Type::TEXT,
                Type::TEXT,
                Type::TIMESTAMPTZ,
            ],
        ),
        Method::Merge => (
            include_str!("../../sql/delivery_copy_batch.sql"),
            &[Type::UUID, Type::UUID, Type::TIMESTAMPTZ],
        ),
    };
    let copy = transaction.prepare_cached(copy).await?;
    let sink = transaction.copy_in(&copy).await?;
    let mut writer = std::pin::pin!(BinaryCopyInWriter::new(sink, types));
    for (notification, user, at) in live {
        let row: &[&(dyn ToSql + Sync)] = match method {
            Method::Copy => &[notification, user, &CHANNEL, &STATUS, at],
            Method::Merge => &[notification, user, at],
        };
        writer.as_mut().write(row).await?;
    }
    let copied = writer.finish().await?;
    let written = match method {
        Method::Copy => copied,
        Method::Merge => {
            let insert = transaction
                .prepare_cached(include_str!("../../sql/delivery_record_sent.sql"))
                .await?;
            transaction.execute(&insert, &[]).await?
        }
    };
    transaction.commit().await?;
    Ok(written)
}

fn distinct(ids: impl Iterator<Item = Uuid>) -> Vec<Uuid> {
    ids.collect::<HashSet<_>>().into_iter().collect()
}

/// Which of `ids` the lookup `sql` finds (its `$1` is the array of them).
async fn existing(
    transaction: &deadpool_postgres::Transaction<'_>,
    sql: &str,
    ids: &[Uuid],
) -> Result<HashSet<Uuid>, tokio_postgres::Error> {
    let statement = transaction.prepare_cached(sql).await?;
    Ok(transaction
        .query(&statement, &[&ids])
        .await?
        .iter()
        .map(|row| row.get(0))
        .collect())
}
