//! What a resuming client is sent: the events it missed, or `sync:reset`
//! and the pending push (CONTRACT §3, `HERALD_REPLAY_LIMIT`).
//!
//! A `lastEventId` comes from the client, so it decides how much herald
//! reads on the client's behalf. The decision therefore comes first and is
//! cheap, and only a replay that fits is ever loaded:
//!
//! 1. a position herald could not have issued (ahead of the log) or whose
//!    events may have been pruned is reset without reading the log; text
//!    that is not a position at all (`1:1:` included, see
//!    [`crate::db::snapshot::FIRST_NORMAL_XID`]) never got this far;
//! 2. one count over ids and routing columns, never payloads, reads at most
//!    [`SCAN_FACTOR`] × limit log entries and says how many events for this
//!    user follow the position: past the limit, or when the scan filled up
//!    (the log moved that far since), it is a reset;
//! 3. the replay is read a page at a time and abandoned for a reset once its
//!    payloads pass [`BYTES_PER_EVENT`] × limit bytes.
//!
//! A budget that resets, rather than a replay paged out to the socket, keeps
//! the connect sequence one short read-only transaction: paging the replay
//! while it is sent would hold a pooled connection for as long as the
//! slowest client takes to read, or re-read pages at a snapshot that
//! retention may prune under them. The client that is reset gets the
//! bounded pending push and pages `notifications.list` at its own pace.
//!
//! This module reads and decides; it never sends.

use crate::db::events::{self, Backlog, Bounded};
use crate::db::inbox::Inbox;
use crate::eventlog::{Event, Position, Snapshot};
use crate::telemetry::metrics;

/// The decision reads at most this many log entries per event of the
/// limit: enough for a client whose own events are a small share of a
/// busy log, while a position a whole retention period old still costs a
/// bounded index scan.
pub const SCAN_FACTOR: i64 = 100;
/// The byte budget per event of the limit: a replay of typical
/// notifications fits, one of the largest rows the schema allows (16 KiB of
/// `data`, 4,000 characters of message) resets at about a quarter of it.
pub const BYTES_PER_EVENT: usize = 4 * 1024;

/// How much one resume may replay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplayLimit {
    /// Events addressed to the client, at most (`HERALD_REPLAY_LIMIT`).
    events: u32,
}

impl ReplayLimit {
    pub fn new(events: u32) -> Self {
        Self { events }
    }

    fn events(self) -> i64 {
        i64::from(self.events)
    }

    /// Log entries the decision may read.
    fn scan(self) -> i64 {
        self.events().saturating_mul(SCAN_FACTOR)
    }

    /// Payload bytes the replay may load.
    fn bytes(self) -> usize {
        (self.events as usize).saturating_mul(BYTES_PER_EVENT)
    }
}

/// Why a resume is answered with `sync:reset`; the metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reset {
    /// Not a position, or not one herald could have issued.
    Malformed,
    /// Events it has not seen may have been pruned.
    Pruned,
    /// More than the limit of events for this user follow it.
    TooManyEvents,
    /// The log moved more than the decision reads since.
    TooFarBehind,
    /// The events fit the limit but their payloads do not fit the budget.
    TooLarge,
}

impl Reset {
    pub fn label(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::Pruned => "pruned",
            Self::TooManyEvents => "too_many_events",
            Self::TooFarBehind => "too_far_behind",
            Self::TooLarge => "too_large",
        }
    }
}

/// The answer to a resume.
#[derive(Debug)]
pub enum Plan {
    Replay(Vec<Event>),
    Reset(Reset),
}

/// Decides, inside the connect sequence's transaction (snapshot `now`),
/// what a client at `position` gets, and loads the replay when it fits.
pub async fn plan(
    tx: &deadpool_postgres::Transaction<'_>,
    inbox: &Inbox,
    position: &Position,
    now: &Snapshot,
    limit: ReplayLimit,
) -> anyhow::Result<Plan> {
    if !position.is_issuable_at(now) {
        return Ok(reset(Reset::Malformed));
    }
    if position.base().xmin() < events::pruned_through(tx).await? {
        return Ok(reset(Reset::Pruned));
    }
    let backlog = events::backlog(tx, inbox, position, now, limit.scan() + 1).await?;
    if let Some(why) = judge(backlog, limit) {
        return Ok(reset(why));
    }
    match events::replay_bounded(tx, inbox, position, now, limit.events(), limit.bytes()).await? {
        Bounded::Fits(events) => {
            metrics::replay_rows_read(events.len());
            metrics::resumed("replayed");
            Ok(Plan::Replay(events))
        }
        Bounded::OverBudget { rows } => {
            metrics::replay_rows_read(rows);
            Ok(reset(Reset::TooLarge))
        }
    }
}

/// A reset, counted in `/metrics` by its reason.
pub fn reset(why: Reset) -> Plan {
    metrics::resumed(why.label());
    Plan::Reset(why)
}

/// What the count says, before anything is loaded.
fn judge(backlog: Backlog, limit: ReplayLimit) -> Option<Reset> {
    if backlog.unseen > limit.scan() {
        Some(Reset::TooFarBehind)
    } else if backlog.addressed > limit.events() {
        Some(Reset::TooManyEvents)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_count_decides_before_anything_is_loaded() {
        let limit = ReplayLimit::new(10);
        let backlog = |unseen, addressed| Backlog { unseen, addressed };
        assert_eq!(judge(backlog(0, 0), limit), None);
        assert_eq!(judge(backlog(1000, 10), limit), None);
        assert_eq!(judge(backlog(1000, 11), limit), Some(Reset::TooManyEvents));
        assert_eq!(judge(backlog(1001, 0), limit), Some(Reset::TooFarBehind));
    }

    #[test]
    fn the_budgets_follow_the_limit() {
        let limit = ReplayLimit::new(1000);
        assert_eq!(limit.scan(), 100_000);
        assert_eq!(limit.bytes(), 4 * 1024 * 1000);
    }
}
