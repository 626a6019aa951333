//! One user's inbox: what is addressed to them (`herald.inbox`), what they
//! have read, and the writes clients make to it.

use deadpool_postgres::GenericClient;
use tokio_postgres::Row;
use uuid::Uuid;

use crate::unread::{Subject, View};
use crate::wire::{ListedNotification, Notification};

/// Whose inbox: the user and the rooms their notifications come through;
/// the queries below pass it to `herald.inbox()`, the SQL twin of
/// [`crate::audience::Audience::reaches`].
pub use crate::audience::Inbox;

/// A notification of the pending push, with its creation event's id.
#[derive(Debug, Clone)]
pub struct Unread {
    pub notification: Notification,
    pub event_id: Option<i64>,
}

/// What a page lists: after `before` (a previous page's cursor), at most
/// `limit`, from one shelf, through a view's filters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing {
    pub before: Option<(i64, Uuid)>,
    pub limit: u32,
    pub unread_only: bool,
    pub shelf: Shelf,
    pub view: View,
}

/// Where a notification is for its user: in the inbox, or put aside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shelf {
    /// Neither archived nor snoozed.
    Inbox,
    Archived,
    Snoozed,
}

impl Shelf {
    /// As sql/inbox_list.sql names it.
    fn as_str(self) -> &'static str {
        match self {
            Shelf::Inbox => "inbox",
            Shelf::Archived => "archived",
            Shelf::Snoozed => "snoozed",
        }
    }
}

/// A page of `notifications.list`.
#[derive(Debug, Clone)]
pub struct Page {
    pub items: Vec<ListedNotification>,
    /// The keyset cursor of the last item, when more items follow.
    pub next: Option<(i64, Uuid)>,
}

fn notification(row: &Row) -> Result<Notification, tokio_postgres::Error> {
    Ok(Notification {
        id: row.try_get("id")?,
        audience: row.try_get("audience")?,
        kind: row.try_get("kind")?,
        importance: row.try_get("importance")?,
        title: row.try_get("title")?,
        message: row.try_get("message")?,
        action_url: row.try_get("action_url")?,
        data: row.try_get("data")?,
        created_at: row.try_get("created_at")?,
        expires_at: row.try_get("expires_at")?,
    })
}

impl Inbox {
    /// The newest unread notifications, at most `limit`.
    #[tracing::instrument(skip_all, fields(user.id = %self.user_id))]
    pub async fn unread(
        &self,
        client: &impl GenericClient,
        limit: u32,
    ) -> Result<Vec<Unread>, tokio_postgres::Error> {
        let statement = client
            .prepare_cached(include_str!("../../sql/inbox_unread.sql"))
            .await?;
        let rows = client
            .query(
                &statement,
                &[
                    &self.user_id,
                    &self.sector_id,
                    &self.is_admin,
                    &i64::from(limit),
                ],
            )
            .await?;
        rows.iter()
            .map(|row| {
                Ok(Unread {
                    notification: notification(row)?,
                    event_id: row.try_get("event_id")?,
                })
            })
            .collect()
    }

    /// The ids of what they have unread and shows, when each expires and
    /// its kind and importance, at most `limit` (sql/inbox_unread_ids.sql).
    #[tracing::instrument(skip_all, fields(user.id = %self.user_id))]
    pub async fn unread_ids(
        &self,
        client: &impl GenericClient,
        limit: usize,
    ) -> Result<Vec<(Uuid, Option<time::OffsetDateTime>, Subject)>, tokio_postgres::Error> {
        let statement = client
            .prepare_cached(include_str!("../../sql/inbox_unread_ids.sql"))
            .await?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = client
            .query(
                &statement,
                &[&self.user_id, &self.sector_id, &self.is_admin, &limit],
            )
            .await?;
        rows.iter()
            .map(|row| {
                let subject = Subject::new(row.try_get("kind")?, row.try_get("importance")?);
                Ok((row.try_get("id")?, row.try_get("expires_at")?, subject))
            })
            .collect()
    }

    #[tracing::instrument(skip_all, fields(user.id = %self.user_id))]
    pub async fn unread_count(
        &self,
        client: &impl GenericClient,
    ) -> Result<i64, tokio_postgres::Error> {
        let statement = client
            .prepare_cached(include_str!("../../sql/inbox_unread_count.sql"))
            .await?;
        client
            .query_one(
                &statement,
                &[&self.user_id, &self.sector_id, &self.is_admin],
            )
            .await?
            .try_get(0)
    }

    /// One page, newest first, of what `listing` asks for.
    #[tracing::instrument(skip_all, fields(user.id = %self.user_id))]
    pub async fn list(
        &self,
        client: &impl GenericClient,
        listing: &Listing,
    ) -> Result<Page, tokio_postgres::Error> {
        let statement = client
            .prepare_cached(include_str!("../../sql/inbox_list.sql"))
            .await?;
        let (cursor_us, cursor_id) = listing.before.unzip();
        let kinds = listing.view.kind_patterns();
        let limit = listing.limit as usize;
        // One row more than asked tells whether another page follows.
        let rows = client
            .query(
                &statement,
                &[
                    &self.user_id,
                    &self.sector_id,
                    &self.is_admin,
                    &cursor_us,
                    &cursor_id,
                    &listing.unread_only,
                    &(limit as i64 + 1),
                    &listing.shelf.as_str(),
                    &kinds,
                    &listing.view.importance,
                ],
            )
            .await?;
        let more = rows.len() > limit;
        let mut items = Vec::with_capacity(rows.len().min(limit));
        let mut next = None;
        for row in rows.iter().take(limit) {
            let item = ListedNotification {
                notification: notification(row)?,
                read_at: row.try_get("read_at")?,
                archived_at: row.try_get("archived_at")?,
                snoozed_until: row.try_get("snoozed_until")?,
                muted: row.try_get("muted")?,
            };
            next = Some((row.try_get("cursor_us")?, item.notification.id));
            items.push(item);
        }
        Ok(Page {
            items,
            next: if more { next } else { None },
        })
    }

    /// Marks one notification read. `None`: it is not in this inbox.
    /// Otherwise the time it was (first) read.
    #[tracing::instrument(skip_all, fields(user.id = %self.user_id, notification.id = %id))]
    pub async fn mark_read(
        &self,
        client: &impl GenericClient,
        id: Uuid,
    ) -> Result<Option<String>, tokio_postgres::Error> {
        let statement = client
            .prepare_cached(include_str!("../../sql/inbox_mark_read.sql"))
            .await?;
        client
            .query_opt(
                &statement,
                &[&self.user_id, &self.sector_id, &self.is_admin, &id],
            )
            .await?
            .map(|row| row.try_get("read_at"))
            .transpose()
    }

    /// Marks everything unread read; how many became read.
    #[tracing::instrument(skip_all, fields(user.id = %self.user_id))]
    pub async fn mark_all_read(
        &self,
        client: &impl GenericClient,
    ) -> Result<u64, tokio_postgres::Error> {
        let statement = client
            .prepare_cached(include_str!("../../sql/inbox_mark_all_read.sql"))
            .await?;
        client
            .execute(
                &statement,
                &[&self.user_id, &self.sector_id, &self.is_admin],
            )
            .await
    }

    /// Records the client's acknowledgement; false: not in this inbox.
    #[tracing::instrument(skip_all, fields(user.id = %self.user_id, notification.id = %id))]
    pub async fn mark_delivered(
        &self,
        client: &impl GenericClient,
        id: Uuid,
    ) -> Result<bool, tokio_postgres::Error> {
        let statement = client
            .prepare_cached(include_str!("../../sql/delivery_mark_delivered.sql"))
            .await?;
        Ok(client
            .execute(
                &statement,
                &[&self.user_id, &self.sector_id, &self.is_admin, &id],
            )
            .await?
            > 0)
    }
}

/// Unread counts for many inboxes in one statement.
#[tracing::instrument(skip_all, fields(users = inboxes.len()))]
pub async fn unread_counts(
    client: &impl GenericClient,
    inboxes: &[Inbox],
) -> Result<Vec<(Uuid, i64)>, tokio_postgres::Error> {
    let statement = client
        .prepare_cached(include_str!("../../sql/inbox_unread_counts.sql"))
        .await?;
    let users: Vec<Uuid> = inboxes.iter().map(|i| i.user_id).collect();
    let sectors: Vec<Option<Uuid>> = inboxes.iter().map(|i| i.sector_id).collect();
    let admins: Vec<bool> = inboxes.iter().map(|i| i.is_admin).collect();
    let rows = client
        .query(&statement, &[&users, &sectors, &admins])
        .await?;
    rows.iter()
        .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
        .collect()
}

/// Why a snooze was refused: its until, or the notification is read.
#[derive(Debug)]
pub enum SnoozeRefused {
    /// The named check of migration V7 it failed, and its message.
    Check {
        constraint: String,
        message: String,
    },
    Database(tokio_postgres::Error),
}

impl From<tokio_postgres::Error> for SnoozeRefused {
    fn from(error: tokio_postgres::Error) -> Self {
        match error.as_db_error() {
            Some(db) if db.code() == &tokio_postgres::error::SqlState::CHECK_VIOLATION => {
                Self::Check {
                    constraint: db.constraint().unwrap_or_default().to_owned(),
                    message: db.message().to_owned(),
                }
            }
            _ => Self::Database(error),
        }
    }
}

impl Inbox {
    /// Archives one notification (and reads it). `None`: it is not in this
    /// inbox. Otherwise when it was (first) archived.
    #[tracing::instrument(skip_all, fields(user.id = %self.user_id, notification.id = %id))]
    pub async fn archive(
        &self,
        client: &impl GenericClient,
        id: Uuid,
    ) -> Result<Option<String>, tokio_postgres::Error> {
        self.about(client, include_str!("../../sql/inbox_archive.sql"), id)
            .await?
            .map(|row| row.try_get("archived_at"))
            .transpose()
    }

    /// Takes one notification out of the archive; false: not in this inbox.
    #[tracing::instrument(skip_all, fields(user.id = %self.user_id, notification.id = %id))]
    pub async fn unarchive(
        &self,
        client: &impl GenericClient,
        id: Uuid,
    ) -> Result<bool, tokio_postgres::Error> {
        let sql = include_str!("../../sql/inbox_unarchive.sql");
        Ok(self.about(client, sql, id).await?.is_some())
    }

    /// Archives everything read and not yet archived; how many.
    #[tracing::instrument(skip_all, fields(user.id = %self.user_id))]
    pub async fn archive_read(
        &self,
        client: &impl GenericClient,
    ) -> Result<u64, tokio_postgres::Error> {
        let statement = client
            .prepare_cached(include_str!("../../sql/inbox_archive_read.sql"))
            .await?;
        client
            .execute(
                &statement,
                &[&self.user_id, &self.sector_id, &self.is_admin],
            )
            .await
    }

    /// Snoozes one notification until `until`. `None`: not in this inbox.
    #[tracing::instrument(skip_all, fields(user.id = %self.user_id, notification.id = %id))]
    pub async fn snooze(
        &self,
        client: &impl GenericClient,
        id: Uuid,
        until: time::OffsetDateTime,
    ) -> Result<Option<String>, SnoozeRefused> {
        let statement = client
            .prepare_cached(include_str!("../../sql/inbox_snooze.sql"))
            .await?;
        let row = client
            .query_opt(
                &statement,
                &[&self.user_id, &self.sector_id, &self.is_admin, &id, &until],
            )
            .await?;
        Ok(row.map(|row| row.try_get("until")).transpose()?)
    }

    /// Ends a snooze early; false: not in this inbox.
    #[tracing::instrument(skip_all, fields(user.id = %self.user_id, notification.id = %id))]
    pub async fn unsnooze(
        &self,
        client: &impl GenericClient,
        id: Uuid,
    ) -> Result<bool, tokio_postgres::Error> {
        let sql = include_str!("../../sql/inbox_unsnooze.sql");
        Ok(self.about(client, sql, id).await?.is_some())
    }

    /// How many of what shows a view selects (sql/inbox_view_count.sql).
    #[tracing::instrument(skip_all, fields(user.id = %self.user_id))]
    pub async fn view_count(
        &self,
        client: &impl GenericClient,
        view: &View,
    ) -> Result<i64, tokio_postgres::Error> {
        let statement = client
            .prepare_cached(include_str!("../../sql/inbox_view_count.sql"))
            .await?;
        let kinds = view.kind_patterns();
        client
            .query_one(
                &statement,
                &[
                    &self.user_id,
                    &self.sector_id,
                    &self.is_admin,
                    &kinds,
                    &view.importance,
                ],
            )
            .await?
            .try_get(0)
    }

    /// Runs a statement about one notification of this inbox.
    async fn about(
        &self,
        client: &impl GenericClient,
        sql: &str,
        id: Uuid,
    ) -> Result<Option<Row>, tokio_postgres::Error> {
        let statement = client.prepare_cached(sql).await?;
        client
            .query_opt(
                &statement,
                &[&self.user_id, &self.sector_id, &self.is_admin, &id],
            )
            .await
    }
}
