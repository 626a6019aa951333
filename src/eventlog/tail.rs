//! The tail: herald's one reader of `herald.events`.
//!
//! It owns a dedicated connection (never a pooled one: the pool drives its
//! connections itself and drops notifications), issues `LISTEN` before it
//! reads anything, and then reads one *step* at a time: every event that
//! became visible since the previous snapshot (see [`super::snapshot`]). A
//! step runs on every NOTIFY and on a short tick, because a wake-up can be
//! lost; the tick's query doubles as the connection's heartbeat. When the
//! connection fails the tail reconnects with capped exponential backoff and
//! resumes from the snapshot it had reached, so nothing committed while it
//! was away is missed.
//!
//! Each step is handed to a [`Dispatch`] while the [`Progress`] lock is
//! held: a connecting socket takes the same lock to line its catch-up up
//! with the live stream. The tail must never dispatch out of order or skip a
//! step, and never holds the lock across a database round trip.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures_util::StreamExt;
use tokio::sync::{Mutex, Notify, watch};
use tokio_postgres::{AsyncMessage, NoTls};

use super::{Event, Snapshot};
use crate::db;
/// A step runs at least this often, NOTIFY or not.
pub const TICK: Duration = Duration::from_millis(500);
/// A step (or the initial LISTEN) that takes longer marks the connection dead.
const QUERY_TIMEOUT: Duration = Duration::from_secs(5);
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// Steps kept for connecting sockets to catch up from, bounded in events.
const RECENT_EVENTS: usize = 20_000;

/// The events that became visible between two snapshots, in (tx, id) order.
#[derive(Debug, Clone)]
pub struct Step {
    pub start: Snapshot,
    pub end: Snapshot,
    pub events: Vec<Event>,
}

/// Receives steps in order. Called with the [`Progress`] lock held.
pub trait Dispatch: Send + Sync + 'static {
    fn dispatch(&self, step: &Step) -> impl Future<Output = ()> + Send;
}

/// How far the log has been dispatched, and the recent steps.
#[derive(Debug)]
pub struct Progress {
    /// Everything visible in this snapshot has been dispatched, nothing else.
    pub position: Snapshot,
    /// The latest steps, oldest first; each starts where the previous ended.
    pub recent: VecDeque<Arc<Step>>,
    recent_events: usize,
}

impl Progress {
    fn record(&mut self, step: Step) {
        self.position = step.end.clone();
        if step.events.is_empty() {
            // An empty step changes nothing a catch-up needs; keep the chain
            // contiguous by extending the newest step instead. The first
            // step is kept even when empty: it is where the chain starts, so
            // a socket that synced since then catches up from memory.
            if let Some(last) = self.recent.back_mut() {
                Arc::make_mut(last).end = step.end;
                return;
            }
        }
        self.recent_events += step.events.len();
        self.recent.push_back(Arc::new(step));
        while self.recent_events > RECENT_EVENTS && self.recent.len() > 1 {
            if let Some(old) = self.recent.pop_front() {
                self.recent_events -= old.events.len();
            }
        }
    }

    /// The dispatched events a socket synced at `from` has not seen, or
    /// `None` when the recent steps do not reach back that far.
    pub fn since(&self, from: &Snapshot) -> Option<Vec<&Event>> {
        if from.includes(&self.position) {
            return Some(Vec::new());
        }
        let first = self
            .recent
            .iter()
            .position(|step| from.includes(&step.start))?;
        Some(
            self.recent
                .iter()
                .skip(first)
                .flat_map(|step| step.events.iter())
                .filter(|event| !from.is_visible(event.tx))
                .collect(),
        )
    }
}

/// Whether the tail is connected and keeping up; `/health/ready` reads it.
#[derive(Debug, Clone, Copy)]
pub struct Health {
    pub connected: bool,
    /// When the last step finished.
    pub last_step: Option<Instant>,
}

impl Health {
    pub fn is_ready(&self) -> bool {
        self.connected
            && self
                .last_step
                .is_some_and(|at| at.elapsed() < TICK * 4 + QUERY_TIMEOUT)
    }
}

/// The shared side of the tail: progress, health, and a signal on each step.
#[derive(Clone)]
pub struct TailHandle {
    pub progress: Arc<Mutex<Progress>>,
    pub health: watch::Receiver<Health>,
    /// Ticks after every step; connecting sockets wait on it.
    pub stepped: watch::Receiver<u64>,
    /// Asks the tail for a step now.
    pub poke: Arc<Notify>,
}

impl TailHandle {
    /// Waits until the tail has dispatched everything visible in `snapshot`
    /// (asking it for steps meanwhile), and returns the progress lock held:
    /// under it, nothing is dispatched until the caller has lined itself up
    /// with the live stream. Fails past `deadline`.
    pub async fn reached(
        &self,
        snapshot: &Snapshot,
        deadline: tokio::time::Instant,
    ) -> anyhow::Result<tokio::sync::MutexGuard<'_, Progress>> {
        let mut stepped = self.stepped.clone();
        loop {
            let progress = self.progress.lock().await;
            if progress.position.includes(snapshot) {
                return Ok(progress);
            }
            drop(progress);
            self.poke.notify_one();
            tokio::time::timeout_at(deadline, stepped.changed())
                .await
                .context("the event log tail did not catch up")?
                .context("the event log tail stopped")?;
        }
    }
}

/// The tail's own side.
pub struct Tail {
    url: String,
    progress: Arc<Mutex<Progress>>,
    health: watch::Sender<Health>,
    stepped: watch::Sender<u64>,
    poke: Arc<Notify>,
}

/// Starts reading at the current snapshot: history is not replayed to live
/// sockets (the connect sequence covers what a user missed).
pub async fn start(url: &str) -> anyhow::Result<(Tail, TailHandle)> {
    let client = crate::db::connect(url, "herald-tail")
        .await
        .context("connecting the LISTEN connection")?;
    let position = crate::db::current_snapshot(&client).await?;
    let progress = Arc::new(Mutex::new(Progress {
        position,
        recent: VecDeque::new(),
        recent_events: 0,
    }));
    let (health, health_rx) = watch::channel(Health {
        connected: false,
        last_step: None,
    });
    let (stepped, stepped_rx) = watch::channel(0);
    let poke = Arc::new(Notify::new());
    let handle = TailHandle {
        progress: progress.clone(),
        health: health_rx,
        stepped: stepped_rx,
        poke: poke.clone(),
    };
    Ok((
        Tail {
            url: url.to_owned(),
            progress,
            health,
            stepped,
            poke,
        },
        handle,
    ))
}

impl Tail {
    /// Runs until `shutdown` resolves, reconnecting as often as it takes.
    pub async fn run<D: Dispatch>(self, dispatch: Arc<D>, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut backoff = BACKOFF_MIN;
        loop {
            let session = self.session(&dispatch, &mut backoff);
            let error = tokio::select! {
                () = &mut shutdown => return,
                result = session => match result {
                    Ok(never) => match never {},
                    Err(error) => error,
                },
            };
            self.health.send_modify(|h| h.connected = false);
            crate::telemetry::metrics::tail_reconnect();
            tracing::warn!(error = format!("{error:#}"), retry_in = ?backoff, "event log tail disconnected");
            tokio::select! {
                () = &mut shutdown => return,
                () = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    /// One connection's life: LISTEN, then step on every wake-up and tick.
    async fn session<D: Dispatch>(
        &self,
        dispatch: &Arc<D>,
        backoff: &mut Duration,
    ) -> anyhow::Result<std::convert::Infallible> {
        let config = db::config(
            &self.url,
            db::Name::Fixed("herald-tail"),
            Some(QUERY_TIMEOUT),
        )
        .context("HERALD_LISTEN_URL")?;
        let (client, mut connection) = config.connect(NoTls).await.context("connecting")?;

        // tokio-postgres hands out notifications only through poll_message,
        // so this task drives the connection and turns them into wake-ups.
        let wake = Arc::new(Notify::new());
        let driver = {
            let wake = wake.clone();
            let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
            tokio::spawn(async move {
                while let Some(message) = messages.next().await {
                    match message {
                        Ok(AsyncMessage::Notification(_)) => wake.notify_one(),
                        Ok(AsyncMessage::Notice(notice)) => {
                            tracing::debug!(notice = notice.message(), "tail connection notice")
                        }
                        Ok(_) => {}
                        Err(error) => return Err(error),
                    }
                }
                Ok(())
            })
        };
        let _abort_driver = AbortOnDrop(driver.abort_handle());

        // LISTEN first: a commit after this point wakes us; one before it is
        // found by the first step.
        tokio::time::timeout(QUERY_TIMEOUT, db::events::listen(&client))
            .await
            .context("LISTEN timed out")??;
        let statement = db::events::prepare_step(&client).await?;
        tracing::info!("event log tail connected");

        let mut driver = driver;
        loop {
            let started = Instant::now();
            let from = self.progress.lock().await.position.clone();
            let step = tokio::time::timeout(QUERY_TIMEOUT, read_step(&client, &statement, from))
                .await
                .context("reading the event log timed out")??;
            let events = step.events.len();
            if events > 0 {
                tracing::debug!(events, "dispatching step");
            }
            {
                let mut progress = self.progress.lock().await;
                if !step.events.is_empty() {
                    dispatch.dispatch(&step).await;
                }
                progress.record(step);
            }
            crate::telemetry::metrics::step_finished(events, started.elapsed());
            self.health.send_modify(|h| {
                h.connected = true;
                h.last_step = Some(Instant::now());
            });
            self.stepped.send_modify(|n| *n = n.wrapping_add(1));
            *backoff = BACKOFF_MIN;

            tokio::select! {
                () = wake.notified() => {}
                () = self.poke.notified() => {}
                () = tokio::time::sleep(TICK) => {}
                ended = &mut driver => {
                    return Err(match ended {
                        Ok(Ok(())) => anyhow::anyhow!("connection closed"),
                        Ok(Err(error)) => anyhow::Error::new(error).context("connection failed"),
                        Err(join) => anyhow::Error::new(join).context("connection task failed"),
                    });
                }
            }
        }
    }
}

/// Reads the events that became visible since `from`, and the new snapshot.
async fn read_step(
    client: &tokio_postgres::Client,
    statement: &tokio_postgres::Statement,
    from: Snapshot,
) -> anyhow::Result<Step> {
    let (end, rows) = db::events::step(client, statement, &from).await?;
    let mut events = Vec::with_capacity(rows.len());
    for row in rows {
        match row {
            Ok(event) => events.push(event),
            // Only triggers write events, and a constraint checks kinds;
            // a row herald cannot read is logged and passed over, not
            // allowed to stall the log for everyone.
            Err(error) => {
                let (id, kind) = error.event().unzip();
                let label = kind
                    .and_then(super::Kind::parse)
                    .map_or("unknown", super::Kind::as_str);
                crate::telemetry::metrics::event_skipped(label, "unreadable");
                tracing::error!(event.id = id, event.kind = kind, error = %error, "skipping unreadable event row");
            }
        }
    }
    Ok(Step {
        start: from,
        end,
        events,
    })
}

struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(s: &str) -> Snapshot {
        s.parse().unwrap()
    }

    fn event(id: i64, tx: u64) -> Event {
        Event {
            id,
            tx,
            created_at: time::OffsetDateTime::UNIX_EPOCH,
            kind: super::super::Kind::NotificationCreated,
            notification_id: None,
            user_id: None,
            sector_id: None,
            audience: None,
            payload: crate::wire::RawJson::of(&serde_json::Value::Null),
        }
    }

    #[test]
    fn since_returns_what_a_snapshot_has_not_seen() {
        let mut progress = Progress {
            position: snap("10:10:"),
            recent: VecDeque::new(),
            recent_events: 0,
        };
        progress.record(Step {
            start: snap("10:10:"),
            end: snap("10:13:10"),
            events: vec![event(1, 11), event(2, 12)],
        });
        progress.record(Step {
            start: snap("10:13:10"),
            end: snap("14:14:"),
            events: vec![event(3, 10), event(4, 13)],
        });
        let ids = |events: Vec<&Event>| events.iter().map(|e| e.id).collect::<Vec<_>>();
        assert_eq!(
            ids(progress.since(&snap("10:10:")).unwrap()),
            vec![1, 2, 3, 4]
        );
        // Synced at 10:12:10: saw tx 11 only.
        assert_eq!(
            ids(progress.since(&snap("10:12:10")).unwrap()),
            vec![2, 3, 4]
        );
        assert_eq!(
            ids(progress.since(&snap("14:14:")).unwrap()),
            Vec::<i64>::new()
        );
        // Older than anything kept.
        assert!(progress.since(&snap("5:5:")).is_none());
    }

    #[test]
    fn steps_without_events_since_the_start_still_reach_back_to_it() {
        let mut progress = Progress {
            position: snap("10:10:"),
            recent: VecDeque::new(),
            recent_events: 0,
        };
        for (start, end) in [("10:10:", "12:12:"), ("12:12:", "15:15:")] {
            progress.record(Step {
                start: snap(start),
                end: snap(end),
                events: vec![],
            });
        }
        assert_eq!(progress.recent.len(), 1, "one chain, not one step each");
        // A socket that synced between the empty steps has missed nothing,
        // and knows it from memory rather than from the log.
        assert_eq!(progress.since(&snap("11:11:")).map(|e| e.len()), Some(0));
        progress.record(Step {
            start: snap("15:15:"),
            end: snap("17:17:"),
            events: vec![event(1, 16)],
        });
        let ids: Vec<i64> = progress
            .since(&snap("11:11:"))
            .unwrap()
            .iter()
            .map(|e| e.id)
            .collect();
        assert_eq!(ids, vec![1]);
        assert!(progress.since(&snap("5:5:")).is_none());
    }
}
