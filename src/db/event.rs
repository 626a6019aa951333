//! One row of `herald.events`, as every reader of the log (the tail's
//! steps, replays) reads it.

use time::OffsetDateTime;
use tokio_postgres::Row;
use uuid::Uuid;

use crate::names::kind;

/// What happened, by the `kind` column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    NotificationCreated,
    NotificationRead,
    NotificationRetracted,
    UserUpdated,
    NotificationArchived,
    NotificationUnarchived,
    NotificationSnoozed,
    NotificationUnsnoozed,
    PreferencesUpdated,
}

impl Kind {
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            kind::NOTIFICATION_CREATED => Some(Self::NotificationCreated),
            kind::NOTIFICATION_READ => Some(Self::NotificationRead),
            kind::NOTIFICATION_RETRACTED => Some(Self::NotificationRetracted),
            kind::USER_UPDATED => Some(Self::UserUpdated),
            kind::NOTIFICATION_ARCHIVED => Some(Self::NotificationArchived),
            kind::NOTIFICATION_UNARCHIVED => Some(Self::NotificationUnarchived),
            kind::NOTIFICATION_SNOOZED => Some(Self::NotificationSnoozed),
            kind::NOTIFICATION_UNSNOOZED => Some(Self::NotificationUnsnoozed),
            kind::PREFERENCES_UPDATED => Some(Self::PreferencesUpdated),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotificationCreated => kind::NOTIFICATION_CREATED,
            Self::NotificationRead => kind::NOTIFICATION_READ,
            Self::NotificationRetracted => kind::NOTIFICATION_RETRACTED,
            Self::UserUpdated => kind::USER_UPDATED,
            Self::NotificationArchived => kind::NOTIFICATION_ARCHIVED,
            Self::NotificationUnarchived => kind::NOTIFICATION_UNARCHIVED,
            Self::NotificationSnoozed => kind::NOTIFICATION_SNOOZED,
            Self::NotificationUnsnoozed => kind::NOTIFICATION_UNSNOOZED,
            Self::PreferencesUpdated => kind::PREFERENCES_UPDATED,
        }
    }
}

/// One row of `herald.events`.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub id: i64,
    /// The writing transaction (`xid8`).
    pub tx: u64,
    pub created_at: OffsetDateTime,
    pub kind: Kind,
    pub notification_id: Option<Uuid>,
    pub user_id: Option<Uuid>,
    pub sector_id: Option<Uuid>,
    pub audience: Option<String>,
    pub payload: crate::wire::RawJson,
}

/// Why a row could not be read as an event.
#[derive(Debug, thiserror::Error)]
pub enum RowError {
    /// The row lacks the columns that name it (`id`, `kind`).
    #[error("events row without an id or kind: {0}")]
    Column(#[from] tokio_postgres::Error),
    /// The event is named, so whoever reads the log can find it.
    #[error("events row {id} (kind {kind:?}): {reason}")]
    Invalid {
        id: i64,
        kind: String,
        reason: String,
    },
}

impl RowError {
    /// The unreadable event's id and kind, when the row had them.
    pub fn event(&self) -> Option<(i64, &str)> {
        match self {
            Self::Column(_) => None,
            Self::Invalid { id, kind, .. } => Some((*id, kind)),
        }
    }
}

impl Event {
    /// Reads an event from a row with the columns of `sql/events_*.sql`
    /// (`tx` as text: tokio-postgres has no `xid8` type). Every error after
    /// the id and kind are read names them.
    pub fn from_row(row: &Row) -> Result<Self, RowError> {
        let id: i64 = row.try_get("id")?;
        let kind_name: String = row.try_get("kind")?;
        let column = |error: tokio_postgres::Error| RowError::Invalid {
            id,
            kind: kind_name.clone(),
            reason: error.to_string(),
        };
        let tx: String = row.try_get("tx").map_err(column)?;
        let (tx, kind) = Self::header(id, &tx, &kind_name)?;
        Ok(Self {
            id,
            tx,
            created_at: row.try_get("created_at").map_err(column)?,
            kind,
            notification_id: row.try_get("notification_id").map_err(column)?,
            user_id: row.try_get("user_id").map_err(column)?,
            sector_id: row.try_get("sector_id").map_err(column)?,
            audience: row.try_get("audience").map_err(column)?,
            payload: row.try_get("payload").map_err(column)?,
        })
    }

    /// The transaction and kind of event `id`, from their text.
    fn header(id: i64, tx: &str, kind: &str) -> Result<(u64, Kind), RowError> {
        let invalid = |reason: String| RowError::Invalid {
            id,
            kind: kind.to_owned(),
            reason,
        };
        let tx = tx
            .parse()
            .map_err(|_| invalid(format!("tx {tx:?} is not an xid8")))?;
        let parsed = Kind::parse(kind).ok_or_else(|| invalid("unknown kind".into()))?;
        Ok((tx, parsed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unreadable_row_is_named_by_its_id_and_kind() {
        assert_eq!(
            Event::header(7, "1234", "notification.read").unwrap(),
            (1234, Kind::NotificationRead)
        );
        for (tx, kind) in [("1234", "notification.exploded"), ("x", "user.updated")] {
            let error = Event::header(7, tx, kind).unwrap_err();
            assert_eq!(error.event(), Some((7, kind)));
            let message = error.to_string();
            assert!(
                message.contains("row 7") && message.contains(kind),
                "{message}"
            );
        }
    }
}
