//! `herald.push_subscriptions`: the browsers a user subscribed for Web Push.

use deadpool_postgres::GenericClient;
use uuid::Uuid;

/// The stored subscription and whether it is new to the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stored {
    pub id: Uuid,
    pub created: bool,
}

/// A browser's subscription, validated by the caller.
#[derive(Debug, Clone, Copy)]
pub struct NewSubscription<'a> {
    pub endpoint: &'a str,
    pub p256dh: &'a str,
    pub auth: &'a str,
}

/// Stores `subscription` for `user` in one transaction: takes it over from
/// another user who held the endpoint, then keeps the user's `keep` most
/// recently used subscriptions.
#[tracing::instrument(skip_all, fields(user.id = %user))]
pub async fn subscribe(
    client: &mut deadpool_postgres::Client,
    user: Uuid,
    subscription: NewSubscription<'_>,
    keep: usize,
) -> anyhow::Result<Stored> {
    let transaction = client.transaction().await?;
    let endpoint = subscription.endpoint;
    transaction
        .execute(
            include_str!("../../sql/push_subscription_release.sql"),
            &[&user, &endpoint],
        )
        .await?;
    let row = transaction
        .query_opt(
            include_str!("../../sql/push_subscribe.sql"),
            &[&user, &endpoint, &subscription.p256dh, &subscription.auth],
        )
        .await?
        .ok_or_else(|| anyhow::anyhow!("another user subscribed the endpoint at the same time"))?;
    let stored = Stored {
        id: row.try_get("id")?,
        created: row.try_get("created")?,
    };
    let keep = i64::try_from(keep)?;
    transaction
        .execute(
            include_str!("../../sql/push_subscriptions_trim.sql"),
            &[&user, &stored.id, &keep],
        )
        .await?;
    transaction.commit().await?;
    Ok(stored)
}

/// Deletes `user`'s subscription to `endpoint`; false when they had none.
#[tracing::instrument(skip_all, fields(user.id = %user))]
pub async fn unsubscribe(
    client: &impl GenericClient,
    user: Uuid,
    endpoint: &str,
) -> Result<bool, tokio_postgres::Error> {
    let statement = client
        .prepare_cached(include_str!("../../sql/push_unsubscribe.sql"))
        .await?;
    Ok(client.execute(&statement, &[&user, &endpoint]).await? > 0)
}
