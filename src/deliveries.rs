//! The delivery writer: records `SENT` rows for every (notification, user)
//! herald pushed to at least one socket, off the emit path.
//!
//! The fan-out only enqueues pairs; one task gathers them into batches and
//! [`WRITERS`] connections write batches side by side, each in one
//! transaction (one insert, `on conflict do nothing` only while pairs
//! recorded already are about; see [`Methods`] and
//! [`db::deliveries::record_sent`]). The queue is bounded: when PostgreSQL cannot keep up,
//! pairs beyond it are counted and logged as dropped audit rows rather than
//! stalling pushes to clients. Its depth is the writer's lag.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use time::OffsetDateTime;
use tokio::sync::mpsc;
use uuid::Uuid;

use tokio_util::sync::CancellationToken;

use crate::db::deliveries::{Method, Recorded};
use crate::db::{self, Pool};

/// Rows per insert.
const BATCH: usize = 5_000;
/// Batches written at once. A broadcast to 10,000 online users is 10,000
/// rows; one connection inserting them falls behind 15 broadcasts a second.
const WRITERS: usize = 2;
/// Attempts per batch before its rows are given up (and counted).
const ATTEMPTS: u32 = 3;
/// Batches written `on conflict`, after one met a pair recorded already,
/// before a plain insert is tried again: the first time, and at most
/// (doubling while plain inserts keep meeting such pairs).
const ON_CONFLICT_STREAK: u32 = 64;
const LONGEST_ON_CONFLICT_STREAK: u32 = 4_096;

type Sent = (Uuid, Uuid, OffsetDateTime);

/// A pair to record, and whether herald pushed it again: a connect sends
/// a user their unread notifications, replays and catch-ups, most of which
/// reached one of their sockets before and have a row already.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Queued {
    sent: Sent,
    again: bool,
}

/// What a writer writes in one transaction: pairs in key order, once each,
/// and whether any was pushed again.
#[derive(Debug, Default, PartialEq, Eq)]
struct Batch {
    pairs: Vec<Sent>,
    again: bool,
}

/// The fan-out's handle: enqueue and move on.
#[derive(Clone)]
pub struct DeliveryQueue {
    tx: mpsc::Sender<Queued>,
    /// Pairs waiting at most (`HERALD_DELIVERY_QUEUE`); beyond it new pairs
    /// are dropped, counted and logged.
    capacity: usize,
    dropped: Arc<AtomicU64>,
}

impl DeliveryQueue {
    /// Queues a `SENT` record for a live push; never waits.
    pub fn sent(&self, notification_id: Uuid, user_id: Uuid, at: OffsetDateTime) {
        self.queue(Queued {
            sent: (notification_id, user_id, at),
            again: false,
        });
    }

    /// Queues a `SENT` record for a push a connect made (its user's unread
    /// notifications, a replay, a catch-up); never waits.
    pub fn sent_again(&self, notification_id: Uuid, user_id: Uuid, at: OffsetDateTime) {
        self.queue(Queued {
            sent: (notification_id, user_id, at),
            again: true,
        });
    }

    fn queue(&self, queued: Queued) {
        match self.tx.try_send(queued) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                let dropped = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                crate::telemetry::metrics::deliveries_dropped(1);
                // One line per 10,000 rather than a flood.
                if dropped % 10_000 == 1 {
                    tracing::warn!(dropped, "delivery queue full: SENT records dropped");
                }
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }

    /// Records waiting to be written.
    pub fn lag(&self) -> usize {
        self.capacity - self.tx.capacity()
    }
}

/// The queue and its writer, for the caller to run: the writer drains the
/// queue and ends once every [`DeliveryQueue`] is dropped or `stop` is
/// cancelled.
pub fn start(
    pool: Pool,
    capacity: usize,
    stop: CancellationToken,
) -> (DeliveryQueue, impl Future<Output = ()> + Send + 'static) {
    let (tx, rx) = mpsc::channel(capacity);
    (
        DeliveryQueue {
            tx,
            capacity,
            dropped: Arc::default(),
        },
        write_batches(pool, rx, stop),
    )
}

/// Writes until every queue handle is dropped or `stop` is cancelled; on
/// stop, what is already queued is still written.
async fn write_batches(pool: Pool, rx: mpsc::Receiver<Queued>, stop: CancellationToken) {
    let (batches, ready) = mpsc::channel::<Batch>(WRITERS);
    let ready = Arc::new(tokio::sync::Mutex::new(ready));
    let methods = Arc::new(Methods::default());
    let writers = (0..WRITERS).map(|_| {
        let (pool, ready, methods) = (pool.clone(), ready.clone(), methods.clone());
        async move {
            loop {
                let batch = ready.lock().await.recv().await;
                match batch {
                    Some(batch) => write(&pool, &batch, &methods).await,
                    None => return,
                }
            }
        }
    });
    tokio::join!(
        gather(rx, batches, stop),
        futures_util::future::join_all(writers)
    );
}

/// Gathers queued pairs into batches for the writers, until the queue
/// closes or `stop` is cancelled.
async fn gather(
    mut rx: mpsc::Receiver<Queued>,
    batches: mpsc::Sender<Batch>,
    stop: CancellationToken,
) {
    loop {
        let mut batch = Vec::with_capacity(BATCH);
        let received = tokio::select! {
            received = rx.recv_many(&mut batch, BATCH) => received,
            () = stop.cancelled() => {
                rx.close();
                rx.recv_many(&mut batch, BATCH).await
            }
        };
        if received == 0 {
            return;
        }
        // Pushes often come in bursts (a broadcast); a moment's wait lets one
        // insert carry the whole burst.
        if batch.len() < BATCH {
            tokio::time::sleep(Duration::from_millis(5)).await;
            while batch.len() < BATCH {
                match rx.try_recv() {
                    Ok(sent) => batch.push(sent),
                    Err(_) => break,
                }
            }
        }
        let again = batch.iter().any(|queued| queued.again);
        let mut pairs: Vec<Sent> = batch.into_iter().map(|queued| queued.sent).collect();
        // In key order: concurrent batches that share a pair then take its
        // index entry in the same order and cannot deadlock. Once each: a
        // pair twice in a batch would fail its plain insert.
        pairs.sort_unstable_by_key(|&(notification, user, _)| (notification, user));
        pairs.dedup_by_key(|&mut (notification, user, _)| (notification, user));
        if batches.send(Batch { pairs, again }).await.is_err() {
            return;
        }
    }
}

/// Which method a batch of live pushes is written by: [`Method::Insert`],
/// the rows at their own cost, unless recent batches met pairs recorded
/// already. (A batch with pairs a connect pushed again always goes
/// [`Method::OnConflict`]: most of those have a row.)
///
/// Recorded pairs among live pushes come in streaks, not alone: clients
/// that acknowledge every push (their `mark.delivered` lands before
/// herald's `SENT`), users with sockets on two instances (each records the
/// pair). A plain insert that meets one fails and is run again
/// [`Method::OnConflict`], so during a streak trying it first would cost
/// each batch twice (and log an error in PostgreSQL's log each time); the
/// next [`ON_CONFLICT_STREAK`] batches go `on conflict` at once, twice as
/// many each time a plain insert meets such a pair again, up to
/// [`LONGEST_ON_CONFLICT_STREAK`], and half as many after a plain insert
/// that goes through, so a steady mix of clients settles rather than
/// failing a plain insert every few batches. Only what a batch costs
/// depends on it: either method writes the same rows.
#[derive(Debug, Default)]
struct Methods {
    on_conflict_left: AtomicU32,
    /// The batches the last conflict was answered with, halved by each
    /// plain insert that went through since.
    streak: AtomicU32,
}

impl Methods {
    fn next(&self) -> Method {
        match self
            .on_conflict_left
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
        {
            Ok(_) => Method::OnConflict,
            Err(_) => Method::Insert,
        }
    }

    /// What a batch asked for `asked` did.
    fn written(&self, asked: Method, recorded: Recorded) {
        let method = match (asked, recorded.method) {
            (Method::Insert, Method::Insert) => {
                let streak = self.streak.load(Ordering::Relaxed);
                self.streak.store(streak / 2, Ordering::Relaxed);
                "insert"
            }
            (Method::Insert, Method::OnConflict) => {
                let batches = (self.streak.load(Ordering::Relaxed) * 2)
                    .clamp(ON_CONFLICT_STREAK, LONGEST_ON_CONFLICT_STREAK);
                self.streak.store(batches, Ordering::Relaxed);
                self.on_conflict_left.store(batches, Ordering::Relaxed);
                "insert_then_on_conflict"
            }
            (Method::OnConflict, _) => "on_conflict",
        };
        crate::telemetry::metrics::delivery_batch(method);
    }
}

async fn write(pool: &Pool, batch: &Batch, methods: &Methods) {
    let (batch, again) = (&batch.pairs, batch.again);
    let mut delay = Duration::from_millis(100);
    for attempt in 1..=ATTEMPTS {
        let method = if again {
            Method::OnConflict
        } else {
            methods.next()
        };
        let result = async {
            let mut client = pool.get().await?;
            anyhow::Ok(db::deliveries::record_sent(&mut client, batch, method).await?)
        }
        .await;
        match result {
            Ok(recorded) => {
                methods.written(method, recorded);
                crate::telemetry::metrics::deliveries_recorded(batch.len());
                return;
            }
            Err(error) if attempt < ATTEMPTS => {
                tracing::debug!(
                    error = format!("{error:#}"),
                    attempt,
                    "retrying delivery batch"
                );
                tokio::time::sleep(delay).await;
                delay *= 4;
            }
            Err(error) => {
                crate::telemetry::metrics::deliveries_dropped(batch.len());
                tracing::error!(
                    error = format!("{error:#}"),
                    rows = batch.len(),
                    "delivery records lost"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(n: u128, u: u128) -> Sent {
        (
            Uuid::from_u128(n),
            Uuid::from_u128(u),
            OffsetDateTime::UNIX_EPOCH,
        )
    }

    fn live(n: u128, u: u128) -> Queued {
        Queued {
            sent: pair(n, u),
            again: false,
        }
    }

    fn batch(pairs: Vec<Sent>) -> Batch {
        Batch {
            pairs,
            again: false,
        }
    }

    /// Runs `gather` over what `fill` queued, after the queue closed.
    async fn gathered(capacity: usize, fill: impl FnOnce(&mpsc::Sender<Queued>)) -> Vec<Batch> {
        let (tx, rx) = mpsc::channel(capacity);
        fill(&tx);
        drop(tx);
        let (batches, mut out) = mpsc::channel(16);
        gather(rx, batches, CancellationToken::new()).await;
        let mut all = Vec::new();
        while let Ok(batch) = out.try_recv() {
            all.push(batch);
        }
        all
    }

    #[tokio::test]
    async fn a_burst_is_one_insert_in_key_order() {
        let batches = gathered(8, |tx| {
            for p in [live(2, 1), live(1, 2), live(1, 1)] {
                tx.try_send(p).unwrap();
            }
        })
        .await;
        assert_eq!(
            batches,
            vec![batch(vec![pair(1, 1), pair(1, 2), pair(2, 1)])]
        );
    }

    #[tokio::test]
    async fn a_pair_queued_twice_is_written_once() {
        let batches = gathered(8, |tx| {
            for p in [live(1, 2), live(1, 1), live(1, 2)] {
                tx.try_send(p).unwrap();
            }
        })
        .await;
        assert_eq!(batches, vec![batch(vec![pair(1, 1), pair(1, 2)])]);
    }

    #[tokio::test]
    async fn a_batch_with_a_pair_pushed_again_says_so() {
        let batches = gathered(8, |tx| {
            tx.try_send(live(1, 1)).unwrap();
            tx.try_send(Queued {
                sent: pair(2, 1),
                again: true,
            })
            .unwrap();
        })
        .await;
        assert_eq!(
            batches,
            vec![Batch {
                pairs: vec![pair(1, 1), pair(2, 1)],
                again: true
            }]
        );
    }

    /// The batches `methods` writes `on conflict` before a plain insert.
    fn on_conflict_batches(methods: &Methods) -> u32 {
        let skipped = Recorded {
            rows: 1,
            method: Method::OnConflict,
        };
        let mut batches = 0;
        while methods.next() == Method::OnConflict {
            methods.written(Method::OnConflict, skipped);
            batches += 1;
        }
        batches
    }

    #[test]
    fn after_an_insert_meets_a_recorded_pair_more_batches_go_on_conflict_while_inserts_keep_meeting_them()
     {
        let methods = Methods::default();
        let (inserted, skipped) = (
            Recorded {
                rows: 1,
                method: Method::Insert,
            },
            Recorded {
                rows: 1,
                method: Method::OnConflict,
            },
        );
        assert_eq!(
            on_conflict_batches(&methods),
            0,
            "a new writer inserts plainly"
        );
        methods.written(Method::Insert, inserted);
        assert_eq!(
            on_conflict_batches(&methods),
            0,
            "a clean insert changes nothing"
        );

        let mut expected = Vec::new();
        let mut seen = Vec::new();
        for _ in 0..8 {
            methods.written(Method::Insert, skipped);
            seen.push(on_conflict_batches(&methods));
            expected.push((ON_CONFLICT_STREAK << expected.len()).min(LONGEST_ON_CONFLICT_STREAK));
        }
        assert_eq!(seen, expected);
        assert_eq!(seen.last(), Some(&LONGEST_ON_CONFLICT_STREAK));

        // Each plain insert that goes through halves the next streak: one
        // alone does not undo a run of conflicts, seven in a row do.
        methods.written(Method::Insert, inserted);
        methods.written(Method::Insert, skipped);
        assert_eq!(on_conflict_batches(&methods), LONGEST_ON_CONFLICT_STREAK);
        for _ in 0..7 {
            methods.written(Method::Insert, inserted);
        }
        methods.written(Method::Insert, skipped);
        assert_eq!(on_conflict_batches(&methods), ON_CONFLICT_STREAK);
    }

    #[tokio::test]
    async fn no_insert_carries_more_than_a_batch() {
        let batches = gathered(BATCH + 3, |tx| {
            for u in 0..(BATCH as u128 + 3) {
                tx.try_send(live(1, u)).unwrap();
            }
        })
        .await;
        let sizes: Vec<usize> = batches.iter().map(|b| b.pairs.len()).collect();
        assert_eq!(sizes, vec![BATCH, 3]);
    }

    #[tokio::test]
    async fn on_stop_what_is_queued_is_still_handed_to_the_writers() {
        let (tx, rx) = mpsc::channel(8);
        tx.try_send(live(1, 1)).unwrap();
        let stop = CancellationToken::new();
        stop.cancel();
        let (batches, mut out) = mpsc::channel(4);
        // Returns although a queue handle (tx) is still alive.
        gather(rx, batches, stop).await;
        assert_eq!(out.try_recv().ok(), Some(batch(vec![pair(1, 1)])));
        assert!(tx.try_send(live(2, 2)).is_err(), "the queue is closed");
    }

    #[test]
    fn a_full_queue_drops_and_counts_instead_of_waiting() {
        let (tx, _rx) = mpsc::channel(2);
        let queue = DeliveryQueue {
            tx,
            capacity: 2,
            dropped: Arc::default(),
        };
        for u in 0..5 {
            queue.sent(Uuid::nil(), Uuid::from_u128(u), OffsetDateTime::UNIX_EPOCH);
        }
        assert_eq!(queue.lag(), 2);
        assert_eq!(queue.dropped.load(Ordering::Relaxed), 3);
    }
}
