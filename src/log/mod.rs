//! The event log, `herald.events`: its rows, the snapshots and positions
//! that say how far it has been read, and the tail that reads it.

pub mod position;
pub mod retention;
pub mod snapshot;
pub mod tail;

use time::OffsetDateTime;
use tokio_postgres::Row;
use uuid::Uuid;

pub use position::Position;
pub use snapshot::Snapshot;

use crate::names::kind;

/// What happened, by the `kind` column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    NotificationCreated,
    NotificationRead,
    NotificationRetracted,
    UserUpdated,
}

impl Kind {
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            kind::NOTIFICATION_CREATED => Some(Self::NotificationCreated),
            kind::NOTIFICATION_READ => Some(Self::NotificationRead),
            kind::NOTIFICATION_RETRACTED => Some(Self::NotificationRetracted),
            kind::USER_UPDATED => Some(Self::UserUpdated),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotificationCreated => kind::NOTIFICATION_CREATED,
            Self::NotificationRead => kind::NOTIFICATION_READ,
            Self::NotificationRetracted => kind::NOTIFICATION_RETRACTED,
            Self::UserUpdated => kind::USER_UPDATED,
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
    pub payload: serde_json::Value,
}

/// Why a row could not be read as an event.
#[derive(Debug, thiserror::Error)]
pub enum RowError {
    #[error(transparent)]
    Column(#[from] tokio_postgres::Error),
    #[error("events row {id}: {reason}")]
    Invalid { id: i64, reason: String },
}

impl Event {
    /// Reads an event from a row with the columns of `sql/events_*.sql`
    /// (`tx` as text: tokio-postgres has no `xid8` type).
    pub fn from_row(row: &Row) -> Result<Self, RowError> {
        let id: i64 = row.try_get("id")?;
        let tx: String = row.try_get("tx")?;
        let tx = tx.parse().map_err(|_| RowError::Invalid {
            id,
            reason: format!("tx {tx:?} is not an xid8"),
        })?;
        let kind: String = row.try_get("kind")?;
        let kind = Kind::parse(&kind).ok_or_else(|| RowError::Invalid {
            id,
            reason: format!("unknown kind {kind:?}"),
        })?;
        Ok(Self {
            id,
            tx,
            created_at: row.try_get("created_at")?,
            kind,
            notification_id: row.try_get("notification_id")?,
            user_id: row.try_get("user_id")?,
            sector_id: row.try_get("sector_id")?,
            audience: row.try_get("audience")?,
            payload: row.try_get("payload")?,
        })
    }
}
