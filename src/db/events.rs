//! Reads of the event log: the tail's LISTEN and steps, replays for
//! resuming clients, and the deletes behind the log's retention.

use deadpool_postgres::GenericClient;
use tokio_postgres::types::{FromSql, ToSql, Type};

use super::event::{Event, Kind, RowError};
use super::inbox::Inbox;
use super::position::Position;
use super::snapshot::Snapshot;

/// The NOTIFY channel the triggers wake herald on.
pub const CHANNEL: &str = "herald_events";

/// Subscribes the tail's connection to [`CHANNEL`].
#[tracing::instrument(skip_all)]
pub async fn listen(client: &tokio_postgres::Client) -> Result<(), tokio_postgres::Error> {
    client.batch_execute(&format!("listen {CHANNEL}")).await
}

/// Prepares sql/events_step.sql once per tail connection.
#[tracing::instrument(skip_all)]
pub async fn prepare_step(
    client: &tokio_postgres::Client,
) -> Result<tokio_postgres::Statement, tokio_postgres::Error> {
    client
        .prepare(include_str!("../../sql/events_step.sql"))
        .await
}

/// One step of the tail: the current snapshot and every event that became
/// visible since `from`, in (tx, id) order, each read or refused on its own
/// so that one bad row cannot hide the others.
#[tracing::instrument(skip_all)]
pub async fn step(
    client: &tokio_postgres::Client,
    statement: &tokio_postgres::Statement,
    from: &Snapshot,
) -> anyhow::Result<(Snapshot, Vec<Result<Event, RowError>>)> {
    let rows = client.query(statement, &[&from.to_string()]).await?;
    // The step's left join yields a row (with a null id) even when no
    // event is new, so the snapshot always comes back.
    let first = rows
        .first()
        .ok_or_else(|| anyhow::anyhow!("the step query returned no snapshot"))?;
    let end = super::snapshot_column(first, "snapshot")?;
    let mut events = Vec::with_capacity(rows.len());
    for row in &rows {
        let id: Option<i64> = row.try_get("id")?;
        if id.is_some() {
            events.push(Event::from_row(row));
        }
    }
    Ok((end, events))
}

/// The events of `(from, at]` a connecting socket's catch-up decides, read
/// from the log (sql/events_catch_up.sql): those addressed to `inbox`'s
/// rooms and the changes to its user, in (tx, id) order.
///
/// A change may move the user to rooms the first read did not look in, so
/// when one is among them the range is read again with every sector's and
/// the admin room's events: the catch-up decides each against the rooms the
/// user had at that event, and a move is rare enough that the wider read
/// costs nothing on the common path.
#[tracing::instrument(skip_all, fields(user.id = %inbox.user_id))]
pub async fn catch_up(
    client: &impl GenericClient,
    inbox: &Inbox,
    from: &Position,
    at: &Snapshot,
) -> anyhow::Result<Vec<Event>> {
    let statement = client
        .prepare_cached(include_str!("../../sql/events_catch_up.sql"))
        .await?;
    let params = ReplayParams::new(inbox, from, at);
    let read = |wide: bool| {
        let statement = &statement;
        let params = &params;
        async move {
            let rows = client.query(statement, &params.with(&wide)).await?;
            rows.iter()
                .map(|row| Event::from_row(row).map_err(anyhow::Error::from))
                .collect::<anyhow::Result<Vec<Event>>>()
        }
    };
    let events = read(false).await?;
    if events.iter().any(|event| event.kind == Kind::UserUpdated) {
        return read(true).await;
    }
    Ok(events)
}

/// What follows a position, counted without loading an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backlog {
    /// Log entries the position has not seen, counted up to the scan's cap.
    pub unseen: i64,
    /// Of those, the events a replay would send.
    pub addressed: i64,
}

/// Counts what a replay from `from` would send, reading at most `scan` log
/// entries and no payload (sql/events_replay_backlog.sql).
#[tracing::instrument(skip_all, fields(user.id = %inbox.user_id))]
pub async fn backlog(
    client: &impl GenericClient,
    inbox: &Inbox,
    from: &Position,
    at: &Snapshot,
    scan: i64,
) -> anyhow::Result<Backlog> {
    let statement = client
        .prepare_cached(include_str!("../../sql/events_replay_backlog.sql"))
        .await?;
    let params = ReplayParams::new(inbox, from, at);
    let row = client.query_one(&statement, &params.with(&scan)).await?;
    Ok(Backlog {
        unseen: row.try_get("unseen")?,
        addressed: row.try_get("addressed")?,
    })
}

/// A replay read against a byte budget.
#[derive(Debug)]
pub enum Bounded {
    /// Every event, in order.
    Fits(Vec<Event>),
    /// The payloads passed the budget after this many rows; the rest were
    /// never read.
    OverBudget { rows: usize },
}

/// Rows fetched per round trip while a replay is read.
const REPLAY_PAGE: i32 = 100;

/// As [`replay`], but read a page at a time through a portal of `tx`, and
/// abandoned once the payloads read pass `budget` bytes: what is held in
/// memory stays within one page of the budget however large the events.
#[tracing::instrument(skip_all, fields(user.id = %inbox.user_id))]
pub async fn replay_bounded(
    tx: &deadpool_postgres::Transaction<'_>,
    inbox: &Inbox,
    from: &Position,
    at: &Snapshot,
    limit: i64,
    budget: usize,
) -> anyhow::Result<Bounded> {
    let statement = tx
        .prepare_cached(include_str!("../../sql/events_replay.sql"))
        .await?;
    let params = ReplayParams::new(inbox, from, at);
    let portal = tx.bind(&statement, &params.with(&limit)).await?;
    let mut events = Vec::new();
    let mut bytes = 0usize;
    loop {
        let page = tx.query_portal(&portal, REPLAY_PAGE).await?;
        let last = page.len() < REPLAY_PAGE as usize;
        for row in &page {
            bytes = bytes.saturating_add(row.try_get::<_, EncodedLen>("payload")?.0);
            events.push(Event::from_row(row)?);
        }
        if bytes > budget {
            return Ok(Bounded::OverBudget { rows: events.len() });
        }
        if last {
            return Ok(Bounded::Fits(events));
        }
    }
}

/// The parameters events_replay.sql, events_replay_backlog.sql and
/// events_catch_up.sql share,
/// as owned values the statements borrow.
struct ReplayParams {
    base: String,
    step_end: String,
    tx: String,
    id: i64,
    at: String,
    user_id: uuid::Uuid,
    sector_id: Option<uuid::Uuid>,
    is_admin: bool,
}

impl ReplayParams {
    fn new(inbox: &Inbox, from: &Position, at: &Snapshot) -> Self {
        let (base, step_end, tx, id) = from.sql_parts();
        Self {
            base,
            step_end,
            tx: tx.to_string(),
            id,
            at: at.to_string(),
            user_id: inbox.user_id,
            sector_id: inbox.sector_id,
            is_admin: inbox.is_admin,
        }
    }

    /// $1 to $8, then `last` as $9.
    fn with<'a>(&'a self, last: &'a (dyn ToSql + Sync)) -> [&'a (dyn ToSql + Sync); 9] {
        [
            &self.base,
            &self.step_end,
            &self.tx,
            &self.id,
            &self.at,
            &self.user_id,
            &self.sector_id,
            &self.is_admin,
            last,
        ]
    }
}

/// How many bytes a column's value took on the wire, whatever its type.
struct EncodedLen(usize);

impl<'a> FromSql<'a> for EncodedLen {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Self(raw.len()))
    }

    fn from_sql_null(_: &Type) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Self(0))
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

/// Deletes up to `batch` events older than `older_than`; how many.
#[tracing::instrument(skip_all, fields(batch = batch))]
pub async fn prune(
    client: &impl GenericClient,
    older_than: std::time::Duration,
    batch: i32,
) -> Result<i32, tokio_postgres::Error> {
    let statement = client
        .prepare_cached("select herald.prune_events(make_interval(secs => $1), $2)")
        .await?;
    client
        .query_one(&statement, &[&older_than.as_secs_f64(), &batch])
        .await?
        .try_get(0)
}

/// Events of transactions below this may have been pruned: a position whose
/// snapshot's `xmin` lies below it can no longer be replayed.
#[tracing::instrument(skip_all)]
pub async fn pruned_through(client: &impl GenericClient) -> anyhow::Result<u64> {
    let statement = client
        .prepare_cached("select pruned_through_tx::text from herald.event_retention")
        .await?;
    let text: String = client.query_one(&statement, &[]).await?.try_get(0)?;
    Ok(text.parse()?)
}
