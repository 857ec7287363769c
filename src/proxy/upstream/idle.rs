//! The idle connections of one worker for one target: a connection is
//! driven by the runtime of the worker that opened it, so it waits with that
//! worker's others. The most recently returned is taken first: the warmest.

use std::time::Duration;

use super::h1::H1Conn;

#[derive(Default)]
pub(super) struct IdleList {
    /// Most recently returned last.
    conns: Vec<H1Conn>,
}

impl IdleList {
    /// The most recently returned connection.
    pub(super) fn take(&mut self) -> Option<H1Conn> {
        self.conns.pop()
    }

    /// Puts `conn` back, stamped idle as of the present. Returns the coldest
    /// connection when it has idled `timeout` or longer by then, for the
    /// caller to close outside its lock.
    pub(super) fn put(&mut self, conn: H1Conn, timeout: Duration) -> Option<H1Conn> {
        // The stamp stands for the clock: no second reading.
        let now = conn.idle_since;
        self.conns.push(conn);
        match self.conns.first() {
            Some(oldest) if now.saturating_duration_since(oldest.idle_since) >= timeout => {
                Some(self.conns.remove(0))
            }
            _ => None,
        }
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.conns.len()
    }

    /// Keeps the connections `keep` accepts, in their order.
    pub(super) fn retain(&mut self, keep: impl FnMut(&mut H1Conn) -> bool) {
        self.conns.retain_mut(keep);
    }

    /// Adds `newer`'s connections after this one's: they were returned more
    /// recently.
    pub(super) fn append(&mut self, mut newer: Self) {
        self.conns.append(&mut newer.conns);
    }
}
