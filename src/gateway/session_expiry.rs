//! Session expiry: `session:expired` and a disconnect once a socket's token
//! `exp` (plus leeway) passes without an `auth.refresh`.
//!
//! One task watches every socket of this instance, rather than a timer task
//! per socket: idle sockets are herald's memory, and a task per socket
//! outlived its socket until the token's `exp`. Deadlines are whole seconds
//! (`exp` is), so the watcher wakes at most once a second.

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::Duration;

use socketioxide::SocketIo;
use socketioxide::socket::Sid;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::session::Session;
use crate::names::{NAMESPACE, emit};
use crate::wire;

/// The sockets to end, by deadline (unix seconds, leeway included).
#[derive(Default)]
pub struct SessionExpiries {
    due: Mutex<BTreeSet<(u64, Sid)>>,
    wake: Notify,
}

impl SessionExpiries {
    /// Watches a socket whose session ends at `deadline`.
    pub fn watch(&self, sid: Sid, deadline: u64) {
        let mut due = self.due.lock().unwrap_or_else(|p| p.into_inner());
        let earliest = due.first().is_none_or(|&(first, _)| deadline < first);
        due.insert((deadline, sid));
        if earliest {
            self.wake.notify_one();
        }
    }

    fn next(&self) -> Option<(u64, Sid)> {
        self.due
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .first()
            .copied()
    }

    fn take_due(&self, now: u64) -> Vec<Sid> {
        let mut due = self.due.lock().unwrap_or_else(|p| p.into_inner());
        let later = due.split_off(&(now.saturating_add(1), Sid::ZERO));
        std::mem::replace(&mut *due, later)
            .into_iter()
            .map(|(_, sid)| sid)
            .collect()
    }

    /// Ends sessions as they expire, until `stop` is cancelled.
    pub async fn run(&self, io: SocketIo, leeway: Duration, stop: CancellationToken) {
        loop {
            let now = crate::auth::unix_now();
            let wait = match self.next() {
                Some((deadline, _)) if deadline <= now => Duration::ZERO,
                Some((deadline, _)) => Duration::from_secs(deadline - now),
                None => Duration::MAX,
            };
            if !wait.is_zero() {
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = self.wake.notified() => {}
                    () = sleep(wait) => {}
                }
                continue;
            }
            let Some(ns) = io.of(NAMESPACE) else {
                return;
            };
            for sid in self.take_due(now) {
                // Gone already: nothing to end.
                let Some(socket) = ns.get_socket(sid) else {
                    continue;
                };
                let Some(session) = socket.extensions.get::<Session>() else {
                    continue;
                };
                // Refreshed meanwhile: watch the new deadline instead.
                let deadline = session.expires_at().saturating_add(leeway.as_secs());
                if deadline > now {
                    self.watch(sid, deadline);
                    continue;
                }
                tracing::info!(socket.id = %sid, user.id = %session.user_id, "session expired");
                let _ = socket.emit(emit::SESSION_EXPIRED, &wire::Empty {});
                let _ = socket.disconnect();
            }
        }
    }
}

/// `tokio::time::sleep`, for durations up to "forever".
async fn sleep(duration: Duration) {
    match tokio::time::Instant::now().checked_add(duration) {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_are_due_at_their_deadline_second_and_not_before() {
        let expiries = SessionExpiries::default();
        let (a, b, c) = (Sid::new(), Sid::new(), Sid::new());
        expiries.watch(a, 100);
        expiries.watch(b, 101);
        expiries.watch(c, 99);
        assert_eq!(expiries.next(), Some((99, c)));
        assert_eq!(expiries.take_due(98), vec![]);
        let mut due = expiries.take_due(100);
        due.sort();
        let mut expected = vec![a, c];
        expected.sort();
        assert_eq!(due, expected);
        assert_eq!(expiries.next(), Some((101, b)));
        assert_eq!(expiries.take_due(u64::MAX - 1), vec![b]);
        assert_eq!(expiries.next(), None);
    }
}
