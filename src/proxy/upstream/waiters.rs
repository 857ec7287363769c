//! The requests waiting at a target's cap, queued per worker. A connection
//! is driven by the runtime of the worker that opened it: handed to a
//! request of another worker, every read of its answer wakes two threads
//! (the opener's, whose reactor sees the socket, and the requester's). So a
//! returned connection goes to the oldest waiter of its own worker, unless
//! another worker's oldest has waited [`FAIRNESS`] longer: no worker's
//! requests wait more than that beyond first-come-first-served order. A
//! freed place (a connection closed) goes to the oldest waiter of any
//! worker, which opens a connection on its own.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

/// How much longer than the first waiter of a connection's own worker
/// another worker's first waiter may wait before the connection crosses to
/// it. Large beside how far two busy workers' queue heads drift apart on
/// their own: at 5 ms, connections crossed on most returns in bench/run.sh's
/// HTTP/2 scenario with two workers sharing cores with the upstream, and
/// the extra wake-ups cost a third more CPU per request (bench/RESULTS.md,
/// "Issue 12, fourteenth round"). Small beside a request's `timeout`.
pub(super) const FAIRNESS: Duration = Duration::from_millis(100);

pub(super) struct Waiters<T> {
    /// Indexed by worker; oldest first.
    by_worker: Vec<VecDeque<Waiter<T>>>,
    len: usize,
}

struct Waiter<T> {
    since: Instant,
    tx: oneshot::Sender<T>,
}

impl<T> Default for Waiters<T> {
    fn default() -> Self {
        Self {
            by_worker: Vec::new(),
            len: 0,
        }
    }
}

impl<T> Waiters<T> {
    /// Waiters queued, including any that gave up since.
    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// Queues a request of `worker` that began waiting at `since`.
    pub(super) fn push(&mut self, worker: usize, since: Instant, tx: oneshot::Sender<T>) {
        if self.by_worker.len() <= worker {
            self.by_worker.resize_with(worker + 1, VecDeque::new);
        }
        if let Some(queue) = self.by_worker.get_mut(worker) {
            queue.push_back(Waiter { since, tx });
            self.len += 1;
        }
    }

    /// Forgets the waiters that gave up (their requests were cancelled).
    pub(super) fn retain_open(&mut self) {
        for queue in &mut self.by_worker {
            queue.retain(|waiter| !waiter.tx.is_closed());
        }
        self.len = self.by_worker.iter().map(VecDeque::len).sum();
    }

    /// The waiter a connection of `worker` goes to (see the module's doc).
    pub(super) fn pop_for(&mut self, worker: usize) -> Option<oneshot::Sender<T>> {
        let own = self
            .by_worker
            .get(worker)
            .and_then(VecDeque::front)
            .map(|waiter| waiter.since);
        let chosen = match (own, self.oldest()) {
            (Some(own), Some((other, since))) if since + FAIRNESS <= own => other,
            (Some(_), _) => worker,
            (None, Some((other, _))) => other,
            (None, None) => return None,
        };
        self.pop_from(chosen)
    }

    /// The oldest waiter of any worker.
    pub(super) fn pop_oldest(&mut self) -> Option<oneshot::Sender<T>> {
        let (worker, _) = self.oldest()?;
        self.pop_from(worker)
    }

    /// The worker whose first waiter has waited longest, and since when.
    fn oldest(&self) -> Option<(usize, Instant)> {
        self.by_worker
            .iter()
            .enumerate()
            .filter_map(|(worker, queue)| Some((worker, queue.front()?.since)))
            .min_by_key(|&(_, since)| since)
    }

    fn pop_from(&mut self, worker: usize) -> Option<oneshot::Sender<T>> {
        let waiter = self.by_worker.get_mut(worker)?.pop_front()?;
        self.len -= 1;
        Some(waiter.tx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Queues a waiter of `worker` that began at `start + after`; returns
    /// the receiving end, which tells who was served.
    fn wait(
        waiters: &mut Waiters<&'static str>,
        worker: usize,
        start: Instant,
        after: Duration,
    ) -> oneshot::Receiver<&'static str> {
        let (tx, rx) = oneshot::channel();
        waiters.push(worker, start + after, tx);
        rx
    }

    #[test]
    fn a_connection_goes_to_its_own_worker_s_waiter_within_the_fairness_bound() {
        let start = Instant::now();
        let mut waiters = Waiters::default();
        let mut older_elsewhere = wait(&mut waiters, 1, start, Duration::ZERO);
        let mut own = wait(&mut waiters, 0, start, FAIRNESS / 2);

        let tx = waiters.pop_for(0).unwrap();
        tx.send("conn of worker 0").unwrap();
        assert_eq!(own.try_recv().unwrap(), "conn of worker 0");
        assert!(older_elsewhere.try_recv().is_err(), "not served yet");
        assert_eq!(waiters.len(), 1);
    }

    #[test]
    fn a_waiter_of_another_worker_is_served_once_it_has_waited_the_bound_longer() {
        let start = Instant::now();
        let mut waiters = Waiters::default();
        let mut starved = wait(&mut waiters, 1, start, Duration::ZERO);
        let mut own = wait(&mut waiters, 0, start, FAIRNESS);

        waiters.pop_for(0).unwrap().send("crosses").unwrap();
        assert_eq!(starved.try_recv().unwrap(), "crosses");
        assert!(own.try_recv().is_err());
    }

    #[test]
    fn with_no_waiter_of_its_own_a_connection_goes_to_the_oldest_elsewhere() {
        let start = Instant::now();
        let mut waiters = Waiters::default();
        let mut newer = wait(&mut waiters, 2, start, Duration::from_millis(1));
        let mut older = wait(&mut waiters, 1, start, Duration::ZERO);

        waiters.pop_for(0).unwrap().send("first").unwrap();
        assert_eq!(older.try_recv().unwrap(), "first");
        waiters.pop_for(0).unwrap().send("second").unwrap();
        assert_eq!(newer.try_recv().unwrap(), "second");
        assert!(waiters.pop_for(0).is_none());
        assert_eq!(waiters.len(), 0);
    }

    #[test]
    fn a_freed_place_goes_to_the_oldest_waiter_of_any_worker() {
        let start = Instant::now();
        let mut waiters = Waiters::default();
        let mut own = wait(&mut waiters, 0, start, Duration::from_millis(1));
        let mut oldest = wait(&mut waiters, 1, start, Duration::ZERO);

        waiters.pop_oldest().unwrap().send("place").unwrap();
        assert_eq!(oldest.try_recv().unwrap(), "place");
        assert!(own.try_recv().is_err());
    }

    #[test]
    fn waiters_that_gave_up_are_forgotten() {
        let start = Instant::now();
        let mut waiters = Waiters::default();
        let gave_up = wait(&mut waiters, 0, start, Duration::ZERO);
        let _kept = wait(&mut waiters, 1, start, Duration::ZERO);
        drop(gave_up);

        waiters.retain_open();
        assert_eq!(waiters.len(), 1);
    }
}
