//! A user's preferences (`herald.notification_preferences`).

use deadpool_postgres::GenericClient;
use uuid::Uuid;

use crate::preferences::{Channel, Preference};

/// The user's whole list, in the order the log's payloads give it.
#[tracing::instrument(skip_all, fields(user.id = %user))]
pub async fn list(
    client: &impl GenericClient,
    user: Uuid,
) -> Result<Vec<Preference>, tokio_postgres::Error> {
    let statement = client
        .prepare_cached(include_str!("../../sql/preferences_list.sql"))
        .await?;
    let rows = client.query(&statement, &[&user]).await?;
    let mut preferences = Vec::with_capacity(rows.len());
    for row in &rows {
        let channel: String = row.try_get("channel")?;
        // The table's check names every channel; one herald does not know
        // yet (written by a newer version) applies to no channel here.
        let Some(channel) = Channel::parse(&channel) else {
            continue;
        };
        preferences.push(Preference {
            kind_pattern: row.try_get("kind_pattern")?,
            channel,
            enabled: row.try_get("enabled")?,
        });
    }
    Ok(preferences)
}

/// Writes one preference.
#[tracing::instrument(skip_all, fields(user.id = %user))]
pub async fn set(
    client: &impl GenericClient,
    user: Uuid,
    preference: &Preference,
) -> Result<(), tokio_postgres::Error> {
    let statement = client
        .prepare_cached(include_str!("../../sql/preferences_set.sql"))
        .await?;
    client
        .execute(
            &statement,
            &[
                &user,
                &preference.kind_pattern,
                &preference.channel.as_str(),
                &preference.enabled,
            ],
        )
        .await?;
    Ok(())
}

/// Replaces the whole list (empty: removes them all). Each (pattern,
/// channel) must appear once.
#[tracing::instrument(skip_all, fields(user.id = %user, preferences = preferences.len()))]
pub async fn replace(
    client: &impl GenericClient,
    user: Uuid,
    preferences: &[Preference],
) -> Result<(), tokio_postgres::Error> {
    let statement = client
        .prepare_cached(include_str!("../../sql/preferences_replace.sql"))
        .await?;
    let patterns: Vec<&str> = preferences
        .iter()
        .map(|p| p.kind_pattern.as_str())
        .collect();
    let channels: Vec<&str> = preferences.iter().map(|p| p.channel.as_str()).collect();
    let enabled: Vec<bool> = preferences.iter().map(|p| p.enabled).collect();
    client
        .execute(&statement, &[&user, &patterns, &channels, &enabled])
        .await?;
    Ok(())
}
