//! Writing notifications the way a producer does (`herald send`), and
//! finding the ones whose expiry just passed.

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
