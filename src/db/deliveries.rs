//! Delivery records: the batch write behind `SENT` rows.

use std::collections::HashSet;

use time::OffsetDateTime;
use tokio_postgres::error::SqlState;
use uuid::Uuid;

/// How a batch's insert treats pairs recorded already.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// A plain insert: the rows at their own cost. One pair recorded
    /// already fails it (a unique violation, and nothing of it is
    /// written), and the batch is then written by [`Method::OnConflict`].
    Insert,
    /// The same insert `on conflict do nothing`: each row is a speculative
    /// insertion (a check for a conflict, then a confirmation), which keeps
    /// the rows recorded already and costs every row more.
    OnConflict,
}

impl Method {
    fn sql(self) -> &'static str {
        match self {
            Method::Insert => include_str!("../../sql/delivery_record_sent.sql"),
            Method::OnConflict => concat!(
                include_str!("../../sql/delivery_record_sent.sql"),
                "on conflict (notification_id, user_id, channel) do nothing"
            ),
        }
    }
}

/// What a batch wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recorded {
    pub rows: u64,
    /// How the rows went in: [`Method::OnConflict`] when asked for, or when
    /// an [`Method::Insert`] met a pair recorded already.
    pub method: Method,
}

/// Records that each (notification, user) was pushed at the given time, in
/// one transaction: after the lock that keeps deletes out until the commit
/// (migration V10), the batch's distinct notifications and users are looked
/// up once each, the pairs whose notification or user is gone are left
/// out, and the rest are inserted by `method`. Pairs recorded already keep
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
    if method == Method::Insert {
        match write(client, sent, Method::Insert).await {
            Err(error) if error.code() == Some(&SqlState::UNIQUE_VIOLATION) => {}
            written => return written.map(|rows| Recorded { rows, method }),
        }
    }
    let rows = write(client, sent, Method::OnConflict).await?;
    Ok(Recorded {
        rows,
        method: Method::OnConflict,
    })
}

/// One attempt at a batch, in a transaction of its own; the rows written.
async fn write(
    client: &mut deadpool_postgres::Client,
    sent: &[(Uuid, Uuid, OffsetDateTime)],
    method: Method,
) -> Result<u64, tokio_postgres::Error> {
    let transaction = client.transaction().await?;
    let lock = transaction
        .prepare_cached(include_str!("../../sql/delivery_lock_parents.sql"))
        .await?;
    let notifications = distinct(sent.iter().map(|&(notification, _, _)| notification));
    let users = distinct(sent.iter().map(|&(_, user, _)| user));
    // One round trip for the three: PostgreSQL runs a connection's
    // statements in the order they were sent, so each lookup starts, and
    // takes its snapshot, after the lock is held.
    let (_, notifications, users) = tokio::try_join!(
        transaction.execute(&lock, &[]),
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
    let live = sent.iter().filter(|(notification, user, _)| {
        notifications.contains(notification) && users.contains(user)
    });
    let (mut notification_ids, mut user_ids, mut times) = (Vec::new(), Vec::new(), Vec::new());
    for &(notification, user, at) in live {
        notification_ids.push(notification);
        user_ids.push(user);
        times.push(at);
    }
    if notification_ids.is_empty() {
        transaction.commit().await?;
        return Ok(0);
    }
    let insert = transaction.prepare_cached(method.sql()).await?;
    let written = transaction
        .execute(&insert, &[&notification_ids, &user_ids, &times])
        .await?;
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
