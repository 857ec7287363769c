//! The tasks the server starts — connections (their HTTP/2 streams run
//! inside them), WebSocket tunnels, maintenance — tracked so that shutdown
//! can wait for every one of them, and cancellable so that it can end what
//! outlives the grace.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::OwnedSemaphorePermit;
use tokio::task::JoinHandle;
use tokio_util::task::TaskTracker;

mod stop;

pub(crate) use stop::{FireOnDrop, StopSignal};

/// Where `serve` starts its tasks. Cheap to clone: every clone starts tasks
/// in the same set.
#[derive(Clone, Default)]
pub struct Tasks {
    /// Every task started here; shutdown waits until it is empty.
    tracker: TaskTracker,
    /// Fired when the shutdown grace has elapsed (or `serve` is
    /// dropped): every async task is dropped at its next await.
    abort: StopSignal,
}

impl Tasks {
    /// Starts `task`, which ends at the latest when the set is aborted.
    pub fn spawn<F>(&self, task: F)
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let aborted = self.abort.fired();
        self.tracker.spawn(async move {
            // The abort first: an aborted task is not polled again.
            tokio::select! {
                biased;
                () = aborted => None,
                output = task => Some(output),
            }
        });
    }

    /// Runs `work` on the blocking pool. It cannot be cancelled, but it is
    /// tracked: shutdown waits for it even when its awaiting task was aborted.
    pub fn spawn_blocking<F, T>(&self, work: F) -> JoinHandle<T>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        self.tracker.spawn_blocking(work)
    }

    /// Aborts every task when dropped: held by `serve`, so dropping `serve`
    /// before it returns ends everything it started.
    pub fn abort_on_drop(&self) -> FireOnDrop {
        self.abort.fire_on_drop()
    }

    /// Ends every async task at its next await.
    pub fn abort(&self) {
        self.abort.fire();
    }

    /// Completes once every task has ended. Tasks may still be started
    /// meanwhile (a connection's streams and tunnels); they are waited for too.
    pub async fn wait(&self) {
        self.tracker.close();
        self.tracker.wait().await;
    }
}

/// The tasks one connection starts that may outlive it (a WebSocket tunnel
/// outlives the HTTP/1.1 connection it was upgraded from). Each holds the
/// connection's permit, so the connection counts against `max_connections`
/// until the last of them ends.
#[derive(Clone)]
pub(crate) struct ConnectionTasks {
    tasks: Tasks,
    /// The connection's slot, returned when the connection and every task
    /// it started have ended.
    permit: Arc<OwnedSemaphorePermit>,
}

impl ConnectionTasks {
    pub(crate) fn new(tasks: Tasks, permit: OwnedSemaphorePermit) -> Self {
        Self {
            tasks,
            permit: Arc::new(permit),
        }
    }

    /// Starts `task`, holding the connection's permit until it ends.
    pub(crate) fn spawn<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let permit = Arc::clone(&self.permit);
        self.tasks.spawn(async move {
            task.await;
            drop(permit);
        });
    }
}
