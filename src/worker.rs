//! Which worker thread the running code is on. Each worker has its own
//! current-thread runtime (`server::workers`), and a socket is driven by the
//! runtime it was opened on: state that holds sockets across requests (the
//! upstream pools' idle connections) keeps them per worker, so a request
//! reuses one its own runtime drives instead of waking another thread.

use std::cell::Cell;

thread_local! {
    /// 0 for the first worker and for every thread that is not a worker.
    static INDEX: Cell<usize> = const { Cell::new(0) };
}

/// Marks the current thread as worker `index`; called once as it starts.
pub(crate) fn enter(index: usize) {
    INDEX.with(|cell| cell.set(index));
}

/// The worker the current thread is.
pub(crate) fn index() -> usize {
    INDEX.with(Cell::get)
}

/// One `T` per worker, each on cache lines of its own: what a worker writes
/// on every request stays in its core's cache instead of moving between
/// cores on each write. A thread that is not a worker, or a worker past the
/// cells, uses the first.
pub(crate) struct PerWorker<T> {
    first: Padded<T>,
    rest: Box<[Padded<T>]>,
}

/// Aligned to two cache lines (the unit adjacent-line prefetching pulls in),
/// so two workers' cells never share one.
#[repr(align(128))]
struct Padded<T>(T);

impl<T> PerWorker<T> {
    /// One cell per worker, and one at least.
    pub(crate) fn new(workers: usize, mut cell: impl FnMut() -> T) -> Self {
        Self {
            first: Padded(cell()),
            rest: (1..workers).map(|_| Padded(cell())).collect(),
        }
    }

    /// The current worker's cell.
    pub(crate) fn mine(&self) -> &T {
        match index().checked_sub(1).and_then(|i| self.rest.get(i)) {
            Some(cell) => &cell.0,
            None => &self.first.0,
        }
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &T> {
        std::iter::once(&self.first.0).chain(self.rest.iter().map(|cell| &cell.0))
    }
}
