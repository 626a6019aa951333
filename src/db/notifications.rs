//! Writing notifications the way a producer does (`herald send`), finding
//! the ones whose expiry just passed, and the housekeeping that removes the
//! ones nobody needs any more (`herald prune --read-older-than`).

use deadpool_postgres::GenericClient;
use uuid::Uuid;

/// A notification to insert; `None` keeps the column's default.
#[derive(Debug, Clone, Default)]
pub struct NewNotification {
    pub audience: String,
    pub user_id: Option<Uuid>,
    pub sector_id: Option<Uuid>,
    pub kind: Option<String>,
    pub importance: Option<String>,
    pub title: String,
    pub message: Option<String>,
    pub action_url: Option<String>,
    pub data: Option<serde_json::Value>,
}

/// Inserts one notification; the triggers log and announce it.
#[tracing::instrument(skip_all, fields(notification.audience = %n.audience))]
pub async fn insert(
    client: &impl GenericClient,
    n: &NewNotification,
) -> Result<Uuid, tokio_postgres::Error> {
    let statement = client
        .prepare_cached(include_str!("../../sql/notification_insert.sql"))
        .await?;
    let row = client
        .query_one(
            &statement,
            &[
                &n.audience,
                &n.user_id,
                &n.sector_id,
                &n.kind,
                &n.importance,
                &n.title,
                &n.message,
                &n.action_url,
                &n.data,
            ],
        )
        .await?;
    row.try_get("id")
}

/// (audience, user_id, sector_id) of a notification whose expiry passed.
pub type Expired = (String, Option<Uuid>, Option<Uuid>);

/// The notifications that expired in (after, until].
#[tracing::instrument(skip_all)]
pub async fn expired_between(
    client: &impl GenericClient,
    after: time::OffsetDateTime,
    until: time::OffsetDateTime,
) -> Result<Vec<Expired>, tokio_postgres::Error> {
    let statement = client
        .prepare_cached(include_str!("../../sql/notifications_expired.sql"))
        .await?;
    let rows = client.query(&statement, &[&after, &until]).await?;
    rows.iter()
        .map(|row| Ok((row.try_get(0)?, row.try_get(1)?, row.try_get(2)?)))
        .collect()
}

/// Notifications removed per call of `herald.prune_notifications`.
const PRUNE_BATCH: i32 = 1_000;

/// What [`prune`] removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Removed {
    pub notifications: u64,
    pub receipts: u64,
    pub deliveries: u64,
}

/// Deletes notifications read, retracted or expired more than `older_than`
/// ago, with their receipts and delivery rows, a batch per connection
/// checkout so no delete holds locks for long.
pub async fn prune(pool: &super::Pool, older_than: std::time::Duration) -> anyhow::Result<Removed> {
    let mut total = Removed::default();
    loop {
        let client = pool.get().await?;
        let batch = prune_batch(&client, older_than, PRUNE_BATCH).await?;
        total.notifications += batch.notifications;
        total.receipts += batch.receipts;
        total.deliveries += batch.deliveries;
        if batch.notifications < PRUNE_BATCH as u64 {
            return Ok(total);
        }
    }
}

/// One batch of `herald.prune_notifications`.
#[tracing::instrument(skip_all, fields(batch = batch))]
async fn prune_batch(
    client: &impl GenericClient,
    older_than: std::time::Duration,
    batch: i32,
) -> Result<Removed, tokio_postgres::Error> {
    let statement = client
        .prepare_cached("select * from herald.prune_notifications(make_interval(secs => $1), $2)")
        .await?;
    let row = client
        .query_one(&statement, &[&older_than.as_secs_f64(), &batch])
        .await?;
    let count = |column: &str| row.try_get::<_, i32>(column).map(|n| n.max(0) as u64);
    Ok(Removed {
        notifications: count("notifications")?,
        receipts: count("receipts")?,
        deliveries: count("deliveries")?,
    })
}
