//! Writing notifications the way a producer does (`herald send`).

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
