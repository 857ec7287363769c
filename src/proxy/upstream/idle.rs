//! The idle connections of one target, kept per worker: a connection is
//! driven by the runtime of the worker that opened it, so a request takes
//! one of its own worker's first. Another worker's is taken only when the
//! target is at its cap (a wake across threads beats waiting). Within a
//! worker, the most recently returned is taken first: the warmest.

use std::time::Duration;

use super::h1::H1Conn;

#[derive(Default)]
pub(super) struct IdleLists {
    /// Indexed by worker; most recently returned last.
    by_worker: Vec<Vec<H1Conn>>,
}

impl IdleLists {
    /// An idle connection opened on `worker`.
    pub(super) fn take_own(&mut self, worker: usize) -> Option<H1Conn> {
        self.by_worker.get_mut(worker)?.pop()
    }

    /// An idle connection of any worker, `worker`'s first.
    pub(super) fn take_any(&mut self, worker: usize) -> Option<H1Conn> {
        self.take_own(worker)
            .or_else(|| self.by_worker.iter_mut().find_map(Vec::pop))
    }

    /// Puts `conn` back with its worker's idle connections. Returns the
    /// coldest of them when it has idled `timeout` or longer, for the caller
    /// to close outside its lock.
    pub(super) fn put(&mut self, conn: H1Conn, timeout: Duration) -> Option<H1Conn> {
        let worker = conn.worker;
        if self.by_worker.len() <= worker {
            self.by_worker.resize_with(worker + 1, Vec::new);
        }
        let list = self.by_worker.get_mut(worker)?;
        list.push(conn);
        match list.first() {
            Some(oldest) if oldest.idle_since.elapsed() >= timeout => Some(list.remove(0)),
            _ => None,
        }
    }

    /// How many connections are idle, on every worker.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.by_worker.iter().map(Vec::len).sum()
    }

    /// Keeps the connections `keep` accepts, in their order.
    pub(super) fn retain(&mut self, mut keep: impl FnMut(&mut H1Conn) -> bool) {
        for list in &mut self.by_worker {
            list.retain_mut(&mut keep);
        }
    }

    /// Adds `newer`'s connections after this one's, worker by worker: they
    /// were returned more recently.
    pub(super) fn append(&mut self, newer: Self) {
        if self.by_worker.len() < newer.by_worker.len() {
            self.by_worker.resize_with(newer.by_worker.len(), Vec::new);
        }
        for (list, mut newer) in self.by_worker.iter_mut().zip(newer.by_worker) {
            list.append(&mut newer);
        }
    }
}
