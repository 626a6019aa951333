//! herald's background tasks, each named and watched.
//!
//! A task that ends before shutdown, or panics, is logged as an error and
//! stops the server: a herald whose tail or delivery writer is gone would
//! still answer health checks while pushing nothing. On shutdown every task
//! is awaited, within a bound, and one that does not finish is named.
//!
//! It must never do: swallow a task's panic, or let shutdown wait forever.

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use tokio::task::{Id, JoinError, JoinSet};
use tokio_util::sync::CancellationToken;

/// How a supervised task ended before it was asked to.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    #[error("background task {0} ended before shutdown")]
    Ended(&'static str),
    #[error("background task {0} panicked")]
    Panicked(&'static str),
}

pub struct Supervisor {
    tasks: JoinSet<()>,
    names: HashMap<Id, &'static str>,
    /// Cancelled to stop every task; a failure cancels it too.
    stop: CancellationToken,
}

impl Supervisor {
    pub fn new(stop: CancellationToken) -> Self {
        Self {
            tasks: JoinSet::new(),
            names: HashMap::new(),
            stop,
        }
    }

    /// The token every task stops on.
    pub fn stop(&self) -> &CancellationToken {
        &self.stop
    }

    pub fn spawn(&mut self, name: &'static str, task: impl Future<Output = ()> + Send + 'static) {
        let handle = self.tasks.spawn(task);
        self.names.insert(handle.id(), name);
    }

    /// Resolves when a task ends before stop was asked for (logged, and
    /// stop cancelled), or once stop is cancelled from outside.
    pub async fn watch(&mut self) -> Option<Failure> {
        loop {
            let next = tokio::select! {
                () = self.stop.cancelled() => return None,
                next = self.tasks.join_next_with_id() => next,
            };
            let Some(ended) = next else {
                // No tasks: nothing can fail.
                self.stop.cancelled().await;
                return None;
            };
            if self.stop.is_cancelled() {
                // Stopping already; shutdown collects the rest.
                continue;
            }
            let failure = match ended {
                Ok((id, ())) => Failure::Ended(self.name(id)),
                Err(error) => Failure::Panicked(self.name(error.id())),
            };
            tracing::error!(error = %failure, "stopping herald");
            self.stop.cancel();
            return Some(failure);
        }
    }

    /// Cancels stop and waits up to `within` for every task; those still
    /// running then are named in a warning and aborted.
    pub async fn shutdown(mut self, within: Duration) {
        self.stop.cancel();
        let collected = tokio::time::timeout(within, async {
            while let Some(ended) = self.tasks.join_next_with_id().await {
                match ended {
                    Ok((id, ())) => {
                        self.names.remove(&id);
                    }
                    Err(error) => self.log_panic(&error),
                }
            }
        })
        .await;
        if collected.is_err() {
            let mut waiting: Vec<&str> = self.names.values().copied().collect();
            waiting.sort_unstable();
            tracing::warn!(
                tasks = ?waiting,
                "background tasks did not stop in time; aborting them"
            );
            self.tasks.abort_all();
        }
    }

    fn name(&mut self, id: Id) -> &'static str {
        self.names.remove(&id).unwrap_or("unnamed")
    }

    fn log_panic(&mut self, error: &JoinError) {
        let name = self.name(error.id());
        if error.is_panic() {
            tracing::error!(task = name, "background task panicked during shutdown");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;

    /// A task that runs until stop, then notes that it finished.
    async fn well_behaved(stop: CancellationToken, finished: Arc<AtomicBool>) {
        stop.cancelled().await;
        finished.store(true, Ordering::SeqCst);
    }

    #[tokio::test]
    async fn a_task_that_ends_early_stops_the_others_and_is_named() {
        let stop = CancellationToken::new();
        let mut supervisor = Supervisor::new(stop.clone());
        let finished = Arc::new(AtomicBool::new(false));
        supervisor.spawn("tail", well_behaved(stop.clone(), finished.clone()));
        supervisor.spawn("counts", async {});
        let failure = supervisor.watch().await;
        assert!(
            matches!(failure, Some(Failure::Ended("counts"))),
            "{failure:?}"
        );
        assert!(stop.is_cancelled());
        supervisor.shutdown(Duration::from_secs(5)).await;
        assert!(finished.load(Ordering::SeqCst), "the tail was awaited");
    }

    #[tokio::test]
    async fn a_panic_is_a_failure_not_a_silent_exit() {
        let stop = CancellationToken::new();
        let mut supervisor = Supervisor::new(stop.clone());
        supervisor.spawn("delivery-writer", async { panic!("boom") });
        let failure = supervisor.watch().await;
        assert!(
            matches!(failure, Some(Failure::Panicked("delivery-writer"))),
            "{failure:?}"
        );
        assert_eq!(
            failure.unwrap().to_string(),
            "background task delivery-writer panicked"
        );
    }

    #[tokio::test]
    async fn shutdown_from_outside_is_no_failure_and_awaits_every_task() {
        let stop = CancellationToken::new();
        let mut supervisor = Supervisor::new(stop.clone());
        let flags: Vec<_> = (0..3).map(|_| Arc::new(AtomicBool::new(false))).collect();
        for (name, flag) in ["a", "b", "c"].into_iter().zip(&flags) {
            supervisor.spawn(name, well_behaved(stop.clone(), flag.clone()));
        }
        stop.cancel();
        assert!(supervisor.watch().await.is_none());
        supervisor.shutdown(Duration::from_secs(5)).await;
        assert!(flags.iter().all(|f| f.load(Ordering::SeqCst)));
    }

    #[tokio::test]
    async fn a_task_that_ignores_stop_is_aborted_after_the_bound() {
        let stop = CancellationToken::new();
        let mut supervisor = Supervisor::new(stop);
        let dropped = Arc::new(AtomicBool::new(false));
        struct Flag(Arc<AtomicBool>);
        impl Drop for Flag {
            fn drop(&mut self) {
                self.0.store(true, Ordering::SeqCst);
            }
        }
        let flag = Flag(dropped.clone());
        supervisor.spawn("stubborn", async move {
            let _flag = flag;
            std::future::pending::<()>().await;
        });
        supervisor.shutdown(Duration::from_millis(50)).await;
        // Aborted tasks are dropped when the runtime next polls them.
        tokio::task::yield_now().await;
        assert!(
            dropped.load(Ordering::SeqCst),
            "the stubborn task was aborted"
        );
    }
}
