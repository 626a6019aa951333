//! The delivery writer: records `SENT` rows for every (notification, user)
//! herald pushed to at least one socket, off the emit path.
//!
//! The fan-out only enqueues pairs; one task writes them in batches with a
//! single `unnest` insert. The queue is bounded: when PostgreSQL cannot keep
//! up, pairs beyond it are counted and logged as dropped audit rows rather
//! than stalling pushes to clients. Its depth is the writer's lag.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use time::OffsetDateTime;
use tokio::sync::mpsc;
use uuid::Uuid;

use tokio_util::sync::CancellationToken;

use crate::db::{self, Pool};

/// Pairs waiting at most; beyond this the oldest data is kept and new pairs dropped.
const QUEUE: usize = 200_000;
/// Rows per insert.
const BATCH: usize = 5_000;
/// Attempts per batch before its rows are given up (and counted).
const ATTEMPTS: u32 = 3;

type Sent = (Uuid, Uuid, OffsetDateTime);

/// The fan-out's handle: enqueue and move on.
#[derive(Clone)]
pub struct DeliveryQueue {
    tx: mpsc::Sender<Sent>,
    dropped: Arc<AtomicU64>,
}

impl DeliveryQueue {
    /// Queues a `SENT` record; never waits.
    pub fn sent(&self, notification_id: Uuid, user_id: Uuid, at: OffsetDateTime) {
        match self.tx.try_send((notification_id, user_id, at)) {
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
        QUEUE - self.tx.capacity()
    }
}

/// Starts the writer; it drains the queue and stops once every
/// [`DeliveryQueue`] is dropped or `stop` is cancelled.
pub fn spawn(pool: Pool, stop: CancellationToken) -> (DeliveryQueue, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(QUEUE);
    let handle = tokio::spawn(write_batches(pool, rx, stop));
    (
        DeliveryQueue {
            tx,
            dropped: Arc::default(),
        },
        handle,
    )
}

/// Writes until every queue handle is dropped or `stop` is cancelled; on
/// stop, what is already queued is still written.
async fn write_batches(pool: Pool, mut rx: mpsc::Receiver<Sent>, stop: CancellationToken) {
    let mut batch = Vec::with_capacity(BATCH);
    loop {
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
        write(&pool, &batch).await;
        batch.clear();
    }
}

async fn write(pool: &Pool, batch: &[Sent]) {
    let mut delay = Duration::from_millis(100);
    for attempt in 1..=ATTEMPTS {
        let result = async {
            let client = pool.get().await?;
            anyhow::Ok(db::deliveries::record_sent(&client, batch).await?)
        }
        .await;
        match result {
            Ok(_) => {
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
