//! Group commit: turns many concurrent "make my writes durable" requests into
//! as few disk flushes as possible, run on the blocking pool.
//!
//! A success answer (200/201/204) is only sent once its write is durable, and
//! sled on its own flushes only every 500 ms. A flush covers every write made
//! before it *started*, so a caller needs the first flush that starts after
//! its call: if none is running it starts one; if one is running (it may have
//! started before the caller's write) the caller waits for the next one, which
//! starts as soon as the running one ends and serves every caller that
//! arrived meanwhile. So N concurrent callers cost at most two flushes each
//! "round", not N.

use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::watch;

use super::StoreError;

/// The blocking operation that makes every earlier write durable.
pub(crate) type FlushFn = dyn Fn() -> Result<(), sled::Error> + Send + Sync;

/// Shares disk flushes between concurrent callers. Lives as long as its store.
pub(crate) struct FlushGroup {
    shared: Arc<Shared>,
}

struct Shared {
    flush: Box<FlushFn>,
    state: Mutex<State>,
    /// The outcome of the most recent finished flush. One slot is enough: a
    /// later successful flush also covers the writes an earlier one was for.
    done: watch::Sender<Outcome>,
}

#[derive(Default)]
struct State {
    /// Generation of the latest flush started (the first is 1).
    started: u64,
    /// A flush is on the blocking pool right now.
    running: bool,
    /// The highest generation some caller waits for.
    wanted: u64,
}

#[derive(Clone)]
struct Outcome {
    generation: u64,
    error: Option<Arc<sled::Error>>,
}

impl FlushGroup {
    pub(crate) fn new(flush: Box<FlushFn>) -> Self {
        let (done, _) = watch::channel(Outcome {
            generation: 0,
            error: None,
        });
        Self {
            shared: Arc::new(Shared {
                flush,
                state: Mutex::new(State::default()),
                done,
            }),
        }
    }

    /// Completes once a flush that started after this call has finished.
    pub(crate) async fn flush(&self) -> Result<(), StoreError> {
        // Subscribe before deciding, so no completion can slip past unseen.
        let mut done = self.shared.done.subscribe();
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|e| StoreError::FlushTask(format!("no async runtime: {e}")))?;
        let target = {
            let mut state = self
                .shared
                .state
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let target = state.started + 1;
            state.wanted = state.wanted.max(target);
            if !state.running {
                state.started = target;
                state.running = true;
                // A task of its own, not this future: if the caller is
                // cancelled (client gone), the others still get their flush.
                runtime.spawn(run(Arc::clone(&self.shared), target));
            }
            target
        };
        loop {
            {
                let outcome = done.borrow_and_update();
                if outcome.generation >= target {
                    return match &outcome.error {
                        None => Ok(()),
                        Some(error) => Err(StoreError::Flush(Arc::clone(error))),
                    };
                }
            }
            if done.changed().await.is_err() {
                // Unreachable while `self` holds the sender; answer safely anyway.
                return Err(StoreError::FlushTask("flush group dropped".to_owned()));
            }
        }
    }
}

/// Runs flush `generation`, then keeps going while callers wait for a later one.
async fn run(shared: Arc<Shared>, mut generation: u64) {
    loop {
        let task = Arc::clone(&shared);
        let error = match tokio::task::spawn_blocking(move || (task.flush)()).await {
            Ok(Ok(())) => None,
            Ok(Err(error)) => Some(Arc::new(error)),
            Err(join) => Some(Arc::new(sled::Error::Io(std::io::Error::other(format!(
                "flush task failed: {join}"
            ))))),
        };
        if let Some(error) = &error {
            tracing::error!(%error, "database flush failed");
        }
        let next = {
            let mut state = shared.state.lock().unwrap_or_else(PoisonError::into_inner);
            shared.done.send_replace(Outcome { generation, error });
            if state.wanted > generation {
                state.started = generation + 1;
                Some(state.started)
            } else {
                state.running = false;
                None
            }
        };
        match next {
            Some(later) => generation = later,
            None => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;

    fn counting(delay: Duration) -> (FlushGroup, Arc<AtomicUsize>) {
        let count = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&count);
        let group = FlushGroup::new(Box::new(move || {
            counter.fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(delay);
            Ok(())
        }));
        (group, count)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_callers_share_flushes() {
        let (group, count) = counting(Duration::from_millis(20));
        let group = Arc::new(group);
        let callers: Vec<_> = (0..50)
            .map(|_| {
                let group = Arc::clone(&group);
                tokio::spawn(async move { group.flush().await })
            })
            .collect();
        for caller in callers {
            caller.await.unwrap().unwrap();
        }
        let flushes = count.load(Ordering::SeqCst);
        assert!(
            (1..=10).contains(&flushes),
            "50 callers caused {flushes} flushes"
        );
    }

    #[tokio::test]
    async fn a_later_call_gets_a_later_flush() {
        let (group, count) = counting(Duration::ZERO);
        group.flush().await.unwrap();
        group.flush().await.unwrap();
        assert_eq!(count.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn failures_reach_the_caller_and_the_next_call_retries() {
        let calls = Arc::new(AtomicUsize::new(0));
        let seen = Arc::clone(&calls);
        let group = FlushGroup::new(Box::new(move || {
            if seen.fetch_add(1, Ordering::SeqCst) == 0 {
                Err(sled::Error::Io(std::io::Error::other("disk full")))
            } else {
                Ok(())
            }
        }));
        let error = group.flush().await.unwrap_err();
        assert!(error.to_string().contains("disk full"), "{error}");
        group.flush().await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_cancelled_leader_does_not_strand_waiters() {
        let (started, mut flushing) = tokio::sync::mpsc::unbounded_channel();
        let (release, gate) = std::sync::mpsc::channel::<()>();
        let gate = Mutex::new(gate);
        let group = Arc::new(FlushGroup::new(Box::new(move || {
            let _ = started.send(());
            let _ = gate.lock().unwrap().recv();
            Ok(())
        })));
        let leader = {
            let group = Arc::clone(&group);
            tokio::spawn(async move { group.flush().await })
        };
        // The leader's flush is on the disk; its caller gives up.
        flushing.recv().await.unwrap();
        leader.abort();
        let follower = {
            let group = Arc::clone(&group);
            tokio::spawn(async move { group.flush().await })
        };
        release.send(()).unwrap();
        // The follower's own flush (the second) starts without any caller driving it.
        flushing.recv().await.unwrap();
        release.send(()).unwrap();
        follower.await.unwrap().unwrap();
    }
}
