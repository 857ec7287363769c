//! The HTTP/1 connections of one target, bounded by
//! `max_upstream_connections`. A request takes an idle connection of its
//! own worker (`idle.rs`), or the right to open one while under the cap, or
//! another worker's idle one, or waits in a bounded queue; a returned
//! connection goes straight to a waiter, of its own worker first
//! (`waiters.rs`), and a freed place to the oldest waiter. The pool only
//! hands connections out: the task that holds one drives it.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

use super::h1::H1Conn;
use super::idle::IdleLists;
use super::waiters::Waiters;

/// Idle connections older than this are closed rather than reused: most
/// servers close keep-alive connections after 60-75 s of silence.
pub(crate) const IDLE_TIMEOUT: Duration = Duration::from_secs(50);

pub struct H1Pool {
    state: Mutex<State>,
    max: usize,
    max_waiters: usize,
}

struct State {
    idle: IdleLists,
    /// Connections open or being opened, idle ones included.
    live: usize,
    waiters: Waiters<Grant>,
}

/// What a waiter is given.
enum Grant {
    Conn(H1Conn),
    /// A place under the cap, already counted in `live`.
    Slot,
}

/// What a request gets from the pool.
pub enum Checkout {
    Idle(H1Conn),
    /// Open a new connection; the slot holds its place under the cap.
    Connect(Slot),
}

/// Why the pool could not serve a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    #[error("every connection is busy and {0} requests are already waiting")]
    QueueFull(usize),
}

/// One place under the cap; dropping it frees the place (for a waiter first).
pub struct Slot {
    pool: Arc<H1Pool>,
}

impl Slot {
    pub fn pool(&self) -> Arc<H1Pool> {
        Arc::clone(&self.pool)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.pool.release_slot();
    }
}

impl H1Pool {
    /// `max` connections at most; up to `max_waiters` requests wait beyond.
    pub fn new(max: usize, max_waiters: usize) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(State {
                idle: IdleLists::default(),
                live: 0,
                waiters: Waiters::default(),
            }),
            max: max.max(1),
            max_waiters,
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Open connections, idle or busy.
    pub fn live(&self) -> usize {
        self.lock().live
    }

    /// Idle connections, ready for a request.
    #[cfg(test)]
    pub(crate) fn idle(&self) -> usize {
        self.lock().idle.len()
    }

    /// A connection that was idle (which the target may have closed since),
    /// or the right to open one. Waits (cancel-safe) while the target is at
    /// its cap.
    pub async fn check_out(self: &Arc<Self>) -> Result<Checkout, PoolError> {
        let worker = crate::worker::index();
        loop {
            let step = {
                let mut state = self.lock();
                if let Some(conn) = state.idle.take_own(worker) {
                    Step::Try(conn)
                } else if state.live < self.max {
                    state.live += 1;
                    Step::Ready(Checkout::Connect(Slot {
                        pool: Arc::clone(self),
                    }))
                } else if let Some(conn) = state.idle.take_any(worker) {
                    Step::Try(conn)
                } else {
                    if state.waiters.len() >= self.max_waiters {
                        state.waiters.retain_open();
                        if state.waiters.len() >= self.max_waiters {
                            return Err(PoolError::QueueFull(state.waiters.len()));
                        }
                    }
                    let (tx, rx) = oneshot::channel();
                    state.waiters.push(worker, Instant::now(), tx);
                    Step::Wait(rx)
                }
            };
            // Connections are checked and dropped outside the lock: dropping
            // one takes it again.
            match step {
                Step::Ready(checkout) => return Ok(checkout),
                // Not polled to see whether the target closed it meanwhile:
                // the request's first poll of the connection finds that out,
                // and hyper then gives the request back unsent for another
                // connection (`UpstreamGroup::attempt_h1`).
                Step::Try(conn) => {
                    if conn.idle_since.elapsed() < IDLE_TIMEOUT {
                        return Ok(Checkout::Idle(conn));
                    }
                }
                Step::Wait(rx) => match rx.await {
                    Ok(Grant::Conn(conn)) => return Ok(Checkout::Idle(conn)),
                    Ok(Grant::Slot) => {
                        return Ok(Checkout::Connect(Slot {
                            pool: Arc::clone(self),
                        }))
                    }
                    // The pool never drops a waiter unanswered while it lives.
                    Err(_) => return Err(PoolError::QueueFull(0)),
                },
            }
        }
    }

    /// Takes back a connection that finished its exchange cleanly.
    pub fn check_in(&self, mut conn: H1Conn) {
        conn.idle_since = Instant::now();
        let home = conn.worker;
        let mut grant = Grant::Conn(conn);
        let mut state = self.lock();
        while let Some(waiter) = state.waiters.pop_for(home) {
            match waiter.send(grant) {
                Ok(()) => return,
                // That waiter gave up (its request was cancelled).
                Err(back) => grant = back,
            }
        }
        // The coldest connection goes once it has idled too long.
        let stale = match grant {
            Grant::Conn(conn) => state.idle.put(conn, IDLE_TIMEOUT),
            Grant::Slot => None,
        };
        drop(state);
        drop(stale);
    }

    /// Closes the idle connections that have idled past [`IDLE_TIMEOUT`] or
    /// that the target has closed. Nobody drives an idle connection, so
    /// without this a burst's connections would hold their sockets (in
    /// CLOSE_WAIT once the target gives up on them) until traffic returns.
    pub fn close_idle(&self, now: Instant) {
        // Checked and dropped outside the lock: polling a connection runs
        // its driver, and dropping one frees its slot, which locks. A
        // request meanwhile finds no idle connection and may open one.
        let mut idle = std::mem::take(&mut self.lock().idle);
        idle.retain(|conn| {
            now.saturating_duration_since(conn.idle_since) < IDLE_TIMEOUT && conn.is_reusable()
        });
        let mut state = self.lock();
        // Returned meanwhile: more recently than the kept ones.
        idle.append(std::mem::take(&mut state.idle));
        state.idle = idle;
    }

    /// A connection closed (or was never opened): its place goes to the
    /// oldest waiter (who opens a connection on its own worker), or back to
    /// the count.
    fn release_slot(&self) {
        let mut grant = Grant::Slot;
        let mut state = self.lock();
        while let Some(waiter) = state.waiters.pop_oldest() {
            match waiter.send(grant) {
                Ok(()) => return,
                Err(back) => grant = back,
            }
        }
        state.live = state.live.saturating_sub(1);
    }
}

enum Step {
    Ready(Checkout),
    Try(H1Conn),
    Wait(oneshot::Receiver<Grant>),
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncReadExt;
    use tokio::net::{TcpListener, TcpStream};

    use super::*;
    use crate::proxy::upstream::io::UpstreamIo;
    use crate::proxy::upstream::waiters::FAIRNESS;

    /// `n` idle connections to `listener`, checked into `pool`; returns the
    /// listener's sides of them.
    async fn idle_connections(
        pool: &Arc<H1Pool>,
        listener: &TcpListener,
        n: usize,
    ) -> Vec<TcpStream> {
        let mut conns = Vec::new();
        let mut server_sides = Vec::new();
        for _ in 0..n {
            let Ok(Checkout::Connect(slot)) = pool.check_out().await else {
                panic!("a pool with nothing idle grants a slot");
            };
            let stream = TcpStream::connect(listener.local_addr().unwrap())
                .await
                .unwrap();
            server_sides.push(listener.accept().await.unwrap().0);
            conns.push(
                H1Conn::handshake(UpstreamIo::Plain(stream), slot)
                    .await
                    .unwrap(),
            );
        }
        for conn in conns {
            pool.check_in(conn);
        }
        server_sides
    }

    #[tokio::test]
    async fn a_worker_takes_its_own_idle_connection_and_another_s_only_at_the_cap() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let pool = H1Pool::new(2, 4);
        // Opened on worker 1, so driven by its runtime.
        crate::worker::enter(1);
        let _server_sides = idle_connections(&pool, &listener, 1).await;

        crate::worker::enter(0);
        let Ok(Checkout::Connect(slot)) = pool.check_out().await else {
            panic!("under the cap, worker 0 opens a connection of its own");
        };
        let Ok(Checkout::Idle(conn)) = pool.check_out().await else {
            panic!("at the cap, worker 0 takes worker 1's idle connection");
        };
        assert_eq!(conn.worker, 1);
        pool.check_in(conn);
        drop(slot);

        crate::worker::enter(1);
        let taken = pool.check_out().await;
        crate::worker::enter(0);
        let Ok(Checkout::Idle(conn)) = taken else {
            panic!("worker 1 takes back its idle connection");
        };
        assert_eq!(conn.worker, 1);
        assert_eq!(pool.live(), 1);
    }

    /// Starts a request of `worker` on the pool and lets it queue.
    async fn queued_check_out(
        pool: &Arc<H1Pool>,
        worker: usize,
    ) -> tokio::task::JoinHandle<Result<Checkout, PoolError>> {
        crate::worker::enter(worker);
        let pool = Arc::clone(pool);
        let request = tokio::spawn(async move { pool.check_out().await });
        // Polled here, on the same thread, so it reads `worker`.
        tokio::task::yield_now().await;
        crate::worker::enter(0);
        request
    }

    /// What a queued request got; fails the test if it is still waiting
    /// once nothing else can run (the clock is paused, so this is at once).
    async fn served(
        request: tokio::task::JoinHandle<Result<Checkout, PoolError>>,
    ) -> Result<Checkout, PoolError> {
        tokio::time::timeout(Duration::from_secs(1), request)
            .await
            .expect("the request was not served")
            .unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn at_the_cap_a_returned_connection_goes_to_a_waiter_of_its_own_worker_first() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let pool = H1Pool::new(1, 4);
        crate::worker::enter(0);
        let _server_side = idle_connections(&pool, &listener, 1).await;
        let Ok(Checkout::Idle(conn)) = pool.check_out().await else {
            panic!("the idle connection is taken");
        };

        let mut elsewhere = queued_check_out(&pool, 1).await;
        tokio::time::advance(FAIRNESS / 2).await;
        let own = queued_check_out(&pool, 0).await;
        pool.check_in(conn);
        let Ok(Checkout::Idle(conn)) = served(own).await else {
            panic!("worker 0's waiter gets worker 0's connection");
        };
        tokio::task::yield_now().await;
        assert!(
            tokio::time::timeout(Duration::from_millis(1), &mut elsewhere)
                .await
                .is_err(),
            "the older waiter of worker 1 still waits"
        );

        // Past the bound, the connection crosses to the starved waiter.
        tokio::time::advance(FAIRNESS).await;
        let later_own = queued_check_out(&pool, 0).await;
        pool.check_in(conn);
        let Ok(Checkout::Idle(conn)) = served(elsewhere).await else {
            panic!("worker 1's waiter is served once it waited the bound longer");
        };
        assert_eq!(conn.worker, 0);
        pool.check_in(conn);
        let Ok(Checkout::Idle(_conn)) = served(later_own).await else {
            panic!("the connection comes back for worker 0's next waiter");
        };
        assert_eq!(pool.live(), 1, "one connection served all three");
    }

    #[tokio::test]
    async fn idle_connections_are_closed_once_past_the_idle_timeout() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let pool = H1Pool::new(4, 4);
        let mut server_side = idle_connections(&pool, &listener, 1).await.remove(0);

        pool.close_idle(Instant::now());
        assert_eq!(pool.live(), 1, "a fresh idle connection is kept");

        pool.close_idle(Instant::now() + IDLE_TIMEOUT);
        assert_eq!(pool.live(), 0, "its slot is freed");
        let mut byte = [0u8; 1];
        assert_eq!(
            server_side.read(&mut byte).await.unwrap(),
            0,
            "the target sees the close"
        );
    }

    #[tokio::test]
    async fn idle_connections_the_target_closed_are_dropped() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let pool = H1Pool::new(4, 4);
        let mut server_sides = idle_connections(&pool, &listener, 2).await;
        drop(server_sides.pop());

        // The close reaches the gateway's socket within moments; each pass
        // polls every idle connection once.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while pool.live() > 1 && std::time::Instant::now() < deadline {
            pool.close_idle(Instant::now());
            tokio::task::yield_now().await;
        }
        assert_eq!(
            pool.live(),
            1,
            "only the connection the target closed is gone"
        );
    }
}
