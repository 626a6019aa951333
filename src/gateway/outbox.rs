//! Sending to sockets without losing anything silently.
//!
//! Every socket has a bounded queue (socketioxide's `max_buffer_size`).
//! Two callers meet a full one differently:
//!
//! - the connect sequence serves one socket from its own task, so it waits
//!   for room ([`send_waiting`]): backpressure, not loss;
//! - live dispatch serves everyone from the tail, so it must not wait: a
//!   socket whose queue is full is *evicted* ([`evict`]): it leaves its
//!   rooms at once (so it can never see a later event after a gap) and is
//!   disconnected as soon as its queue has room for the packet, so its
//!   client reconnects and resumes from its last `eventId`. A client that
//!   never reads again is closed by the transport's ping.
//!
//! Dispatch also yields every few sockets ([`Pacer`]), so socket writers
//! keep draining while a large step is being emitted; each socket is handed
//! all its events of a run before that, so its writer sends them at once.

use std::time::Duration;

use serde::Serialize;
use socketioxide::extract::SocketRef;
use socketioxide::{SendError, SocketError};

use crate::telemetry::metrics;

/// How long the connect sequence waits for room in a socket's queue.
const WAIT_FOR_ROOM: Duration = Duration::from_secs(10);
/// How long an evicted socket's disconnect is retried; the transport's own
/// ping closes a socket that stays full longer.
const EVICTION_RETRY: Duration = Duration::from_secs(90);

/// The outcome of one send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    Queued,
    /// The socket is gone; nothing to do.
    Closed,
    /// The queue was full.
    Full,
}

pub fn send<T: ?Sized + Serialize>(socket: &SocketRef, event: &str, data: &T) -> Sent {
    match socket.emit(event, data) {
        Ok(()) => Sent::Queued,
        Err(SendError::Socket(SocketError::InternalChannelFull)) => Sent::Full,
        Err(SendError::Socket(SocketError::Closed)) => Sent::Closed,
        Err(SendError::Serialize(error)) => {
            // herald's payloads are plain JSON; this is a bug, not a client's doing.
            tracing::error!(error = %error, event, "payload did not serialize");
            Sent::Closed
        }
    }
}

/// Sends, waiting while the socket's queue is full. `Err` when the socket
/// closed or stayed full too long.
pub async fn send_waiting<T: ?Sized + Serialize>(
    socket: &SocketRef,
    event: &str,
    data: &T,
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + WAIT_FOR_ROOM;
    let mut pause = Duration::from_millis(1);
    loop {
        match send(socket, event, data) {
            Sent::Queued => return Ok(()),
            Sent::Closed => anyhow::bail!("socket closed"),
            Sent::Full if tokio::time::Instant::now() >= deadline => {
                anyhow::bail!("socket queue stayed full")
            }
            Sent::Full => {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(100));
            }
        }
    }
}

/// Takes a socket that fell behind out of the live stream; see the module
/// documentation.
pub fn evict(socket: SocketRef) {
    metrics::queue_overflow(1);
    socket.leave_all();
    static LAST_WARNING: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let now = crate::auth::unix_now();
    if LAST_WARNING.swap(now, std::sync::atomic::Ordering::Relaxed) != now {
        tracing::warn!(socket.id = %socket.id, "socket queue full: disconnecting it so its client resumes");
    }
    tokio::spawn(async move {
        let deadline = tokio::time::Instant::now() + EVICTION_RETRY;
        while socket.connected() && tokio::time::Instant::now() < deadline {
            match socket.clone().disconnect() {
                Err(SocketError::InternalChannelFull) => {
                    tokio::time::sleep(Duration::from_millis(100)).await
                }
                _ => return,
            }
        }
    });
}

/// Yields to the scheduler every so many sockets served, or sends made.
///
/// Sockets: each woken writer waits in the worker's run queue (256 tasks)
/// until dispatch yields; past that, wake-ups spill to the shared queue and
/// a broadcast's fan-out slows. Sends: one socket handed a long run (a
/// large transaction for one user) must see its writer drain its queue
/// before the queue fills.
#[derive(Debug, Default)]
pub struct Pacer {
    sockets: usize,
    sends: usize,
}

impl Pacer {
    const SOCKETS: usize = 64;
    const SENDS: usize = 512;

    /// One more packet queued.
    pub async fn sent(&mut self) {
        if self.count_send() {
            tokio::task::yield_now().await;
        }
    }

    /// One more socket served.
    pub async fn served(&mut self) {
        if self.count_socket() {
            tokio::task::yield_now().await;
        }
    }

    /// Counts a send; true when it is time to yield.
    fn count_send(&mut self) -> bool {
        self.sends += 1;
        self.sends >= Self::SENDS && self.reset()
    }

    /// Counts a socket; true when it is time to yield.
    fn count_socket(&mut self) -> bool {
        self.sockets += 1;
        self.sockets >= Self::SOCKETS && self.reset()
    }

    /// A yield drains both: the counts start again after it.
    fn reset(&mut self) -> bool {
        (self.sockets, self.sends) = (0, 0);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dispatch_yields_every_64_sockets() {
        let mut pacer = Pacer::default();
        let at: Vec<usize> = (1..=200).filter(|_| pacer.count_socket()).collect();
        assert_eq!(at, vec![64, 128, 192]);
    }

    #[test]
    fn dispatch_yields_every_512_sends_to_one_socket() {
        let mut pacer = Pacer::default();
        let at: Vec<usize> = (1..=1100).filter(|_| pacer.count_send()).collect();
        assert_eq!(at, vec![512, 1024]);
    }

    #[test]
    fn a_yield_for_either_reason_restarts_both_counts() {
        let mut pacer = Pacer::default();
        for _ in 0..500 {
            assert!(!pacer.count_send());
        }
        for _ in 0..63 {
            assert!(!pacer.count_socket());
        }
        assert!(pacer.count_socket(), "the 64th socket");
        // The sends before that yield no longer count.
        for _ in 0..511 {
            assert!(!pacer.count_send());
        }
        assert!(pacer.count_send());
    }
}
