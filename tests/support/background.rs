//! A background writer's lifecycle, whatever it writes: started as a task, counted by its
//! commits, waited for, and stopped after its current transaction, returning what it did.

use std::fmt::Debug;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use super::poll::wait_until;

/// A running writer task with a stop flag and a commit counter it shares with its loop.
pub struct Background<S> {
    stop: Arc<AtomicBool>,
    commits: Arc<AtomicU64>,
    handle: tokio::task::JoinHandle<S>,
}

impl<S: Debug + Send + 'static> Background<S> {
    /// Spawns `write(stop, commits)`: a loop that writes until `stop` is set, counting each
    /// commit in `commits`, and returns its stats.
    pub fn spawn<F, Fut>(write: F) -> Self
    where
        F: FnOnce(Arc<AtomicBool>, Arc<AtomicU64>) -> Fut,
        Fut: Future<Output = S> + Send + 'static,
    {
        let stop = Arc::new(AtomicBool::new(false));
        let commits = Arc::new(AtomicU64::new(0));
        let handle = tokio::spawn(write(stop.clone(), commits.clone()));
        Background {
            stop,
            commits,
            handle,
        }
    }

    /// Transactions committed so far.
    pub fn commits(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }

    /// Waits until at least `n` more transactions committed than when called; panics when the
    /// writer ends or makes no progress for 30 s.
    pub async fn wait_commits(&self, n: u64) {
        let target = self.commits() + n;
        let ok = wait_until(Duration::from_secs(30), async || {
            self.commits() >= target || self.handle.is_finished()
        })
        .await;
        assert!(
            ok && !self.handle.is_finished(),
            "writer made no progress: {} commits",
            self.commits()
        );
    }

    /// Stops after the current transaction and returns what it did.
    pub async fn stop(self) -> S {
        self.stop.store(true, Ordering::Relaxed);
        let stats = self.handle.await.expect("writer task panicked");
        eprintln!("writer: {stats:?}");
        stats
    }
}
