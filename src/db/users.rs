//! Reads of `herald.users`, the directory the gateway authenticates against.

use deadpool_postgres::GenericClient;
use tokio_postgres::Row;
use uuid::Uuid;

/// A user as the gateway needs them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: Uuid,
    pub name: String,
    pub role: String,
    pub sector_id: Option<Uuid>,
    pub is_active: bool,
}

impl TryFrom<&Row> for User {
    type Error = tokio_postgres::Error;

    fn try_from(row: &Row) -> Result<Self, Self::Error> {
        Ok(Self {
            id: row.try_get("id")?,
            name: row.try_get("name")?,
            role: row.try_get("role")?,
            sector_id: row.try_get("sector_id")?,
            is_active: row.try_get("is_active")?,
        })
    }
}

#[tracing::instrument(skip_all, fields(user.id = %id))]
pub async fn find(
    client: &impl GenericClient,
    id: Uuid,
) -> Result<Option<User>, tokio_postgres::Error> {
    let statement = client
        .prepare_cached(include_str!("../../sql/user_by_id.sql"))
        .await?;
    client
        .query_opt(&statement, &[&id])
        .await?
        .as_ref()
        .map(User::try_from)
        .transpose()
}
