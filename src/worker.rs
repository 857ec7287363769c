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
