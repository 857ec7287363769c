//! The HTTP/1 connections of one target, bounded by
//! `max_upstream_connections`. A request takes an idle connection of its
//! own worker, or the right to open one while under the cap, or another
//! worker's idle one, or waits in a bounded queue; a returned connection
//! goes straight to a waiter, of its own worker first (`waiters.rs`), and a
//! freed place to the oldest waiter. The pool only hands connections out:
//! the task that holds one drives it.
//!
//! Taking and returning an idle connection, what nearly every request
//! does, touches only its worker's part of the pool ([`WorkerPool`]): its
//! lock, its list and its reference count, on cache lines no other worker
//! writes. The count under the cap and the queue ([`Core`]) are locked only
//! to open or close a connection, or at the cap.

use std::sync::atomic::{fence, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

use super::h1::H1Conn;
use super::idle::IdleList;
use super::waiters::Waiters;
use crate::worker::PerWorker;

/// Idle connections older than this are closed rather than reused: most
/// servers close keep-alive connections after 60-75 s of silence.
pub(crate) const IDLE_TIMEOUT: Duration = Duration::from_secs(50);

pub(crate) struct H1Pool {
    core: Arc<Core>,
    workers: PerWorker<Arc<WorkerPool>>,
}

/// What the workers share: the count under the cap and the queue.
struct Core {
    state: Mutex<State>,
    /// The queue's length, read without the lock when a connection comes
    /// back; one more while a request at the cap looks at the idle lists
    /// before it queues. A connection returned while it is 0 goes to its
    /// worker's list without the lock (see [`WorkerPool::check_in`]).
    waiting: AtomicUsize,
    max: usize,
    max_waiters: usize,
}

struct State {
    /// Connections open or being opened, idle ones included.
    live: usize,
    waiters: Waiters<Grant>,
}

/// One worker's part of a pool: the idle connections its runtime drives.
/// Aligned so that no other worker's part shares its cache lines.
#[repr(align(128))]
pub struct WorkerPool {
    core: Arc<Core>,
    idle: Mutex<IdleList>,
    /// The worker, which the connections opened here carry.
    worker: usize,
}

/// What a waiter is given.
enum Grant {
    Conn(H1Conn),
    /// A place under the cap, already counted in `live`.
    Slot,
}

/// What a request gets from the pool.
pub(crate) enum Checkout {
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

/// One place under the cap, held by a connection of the worker `home`;
/// dropping it frees the place (for a waiter first).
pub struct Slot {
    home: Arc<WorkerPool>,
}

impl Slot {
    /// The part of the pool the connection returns to: its worker's, whose
    /// reference count only that worker's requests write.
    pub fn home(&self) -> Arc<WorkerPool> {
        Arc::clone(&self.home)
    }

    /// The worker whose runtime drives the connection.
    pub fn worker(&self) -> usize {
        self.home.worker
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.home.core.release_slot();
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl H1Pool {
    /// `max` connections at most; up to `max_waiters` requests wait beyond;
    /// a part per worker for `workers`.
    pub(crate) fn new(max: usize, max_waiters: usize, workers: usize) -> Self {
        let core = Arc::new(Core {
            state: Mutex::new(State {
                live: 0,
                waiters: Waiters::default(),
            }),
            waiting: AtomicUsize::new(0),
            max: max.max(1),
            max_waiters,
        });
        let mut next = 0;
        let workers = PerWorker::new(workers, || {
            let worker = next;
            next += 1;
            Arc::new(WorkerPool {
                core: Arc::clone(&core),
                idle: Mutex::default(),
                worker,
            })
        });
        Self { core, workers }
    }

    /// Open connections, idle or busy.
    pub(crate) fn live(&self) -> usize {
        self.core.lock().live
    }

    /// Idle connections, ready for a request.
    #[cfg(test)]
    pub(crate) fn idle(&self) -> usize {
        self.workers.iter().map(|part| lock(&part.idle).len()).sum()
    }

    /// A connection that was idle (which the target may have closed since),
    /// or the right to open one. Waits (cancel-safe) while the target is at
    /// its cap. `now` is the request's clock reading: a connection returned
    /// after it counts as fresh.
    pub(crate) async fn check_out(&self, now: Instant) -> Result<Checkout, PoolError> {
        let mine = self.workers.mine();
        loop {
            let own = lock(&mine.idle).take();
            let step = match own {
                Some(conn) => Step::Try(conn),
                None => self.open_or_queue(mine)?,
            };
            // Connections are checked and dropped outside the locks:
            // dropping one takes the core's.
            match step {
                Step::Ready(checkout) => return Ok(checkout),
                // Not polled to see whether the target closed it meanwhile:
                // the request's first poll of the connection finds that out,
                // and hyper then gives the request back unsent for another
                // connection (`UpstreamGroup::attempt_h1`).
                Step::Try(conn) => {
                    if now.saturating_duration_since(conn.idle_since) < IDLE_TIMEOUT {
                        return Ok(Checkout::Idle(conn));
                    }
                }
                Step::Wait(rx) => match rx.await {
                    Ok(Grant::Conn(conn)) => return Ok(Checkout::Idle(conn)),
                    Ok(Grant::Slot) => {
                        return Ok(Checkout::Connect(Slot {
                            home: Arc::clone(mine),
                        }))
                    }
                    // The pool never drops a waiter unanswered while it lives.
                    Err(_) => return Err(PoolError::QueueFull(0)),
                },
            }
        }
    }

    /// With no idle connection of its own: a place under the cap, another
    /// worker's idle connection, or a place in the queue.
    fn open_or_queue(&self, mine: &Arc<WorkerPool>) -> Result<Step, PoolError> {
        let core = &self.core;
        let mut state = core.lock();
        if state.live < core.max {
            state.live += 1;
            return Ok(Step::Ready(Checkout::Connect(Slot {
                home: Arc::clone(mine),
            })));
        }
        // Announced before looking: a connection returned from here on
        // either is in a list this looks at, or sees the announcement and
        // comes to the queue (see `WorkerPool::check_in`).
        core.waiting
            .store(state.waiters.len() + 1, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        if let Some(conn) = self.take_any(mine) {
            core.count_waiters(&state);
            return Ok(Step::Try(conn));
        }
        if state.waiters.len() >= core.max_waiters {
            state.waiters.retain_open();
            if state.waiters.len() >= core.max_waiters {
                core.count_waiters(&state);
                return Err(PoolError::QueueFull(state.waiters.len()));
            }
        }
        let (tx, rx) = oneshot::channel();
        state.waiters.push(mine.worker, Instant::now(), tx);
        core.count_waiters(&state);
        Ok(Step::Wait(rx))
    }

    /// An idle connection of any worker, `mine` first.
    fn take_any(&self, mine: &WorkerPool) -> Option<H1Conn> {
        // Each list is locked alone, in its own statement: a guard kept to
        // the end of a longer expression would still hold `mine` when the
        // search reaches it again.
        let own = lock(&mine.idle).take();
        own.or_else(|| {
            self.workers.iter().find_map(|part| {
                let taken = lock(&part.idle).take();
                taken
            })
        })
    }

    /// Closes the idle connections that have idled past [`IDLE_TIMEOUT`] or
    /// that the target has closed. Nobody drives an idle connection, so
    /// without this a burst's connections would hold their sockets (in
    /// CLOSE_WAIT once the target gives up on them) until traffic returns.
    pub(crate) fn close_idle(&self, now: Instant) {
        for part in self.workers.iter() {
            // Checked and dropped outside the lock: polling a connection
            // runs its driver, and dropping one frees its slot, which locks
            // the core. A request meanwhile finds no idle connection here
            // and may open one.
            let mut idle = std::mem::take(&mut *lock(&part.idle));
            idle.retain(|conn| {
                now.saturating_duration_since(conn.idle_since) < IDLE_TIMEOUT && conn.is_reusable()
            });
            let mut list = lock(&part.idle);
            // Returned meanwhile: more recently than the kept ones.
            idle.append(std::mem::take(&mut *list));
            *list = idle;
        }
    }
}

impl WorkerPool {
    /// Takes back a connection of this worker that finished its exchange
    /// cleanly.
    pub fn check_in(&self, mut conn: H1Conn) {
        conn.idle_since = Instant::now();
        if self.core.waiting.load(Ordering::SeqCst) > 0 {
            return self.core.hand_over(conn, &self.idle);
        }
        let stale = lock(&self.idle).put(conn, IDLE_TIMEOUT);
        drop(stale);
        // Pairs with the announcement in `H1Pool::open_or_queue`: a request
        // that announced itself after the load above, and looked before the
        // connection was in the list, is seen here.
        fence(Ordering::SeqCst);
        if self.core.waiting.load(Ordering::SeqCst) > 0 {
            let back = lock(&self.idle).take();
            if let Some(conn) = back {
                self.core.hand_over(conn, &self.idle);
            }
        }
    }
}

impl Core {
    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// Publishes the queue's length; called with the lock held after every
    /// change to the queue.
    fn count_waiters(&self, state: &State) {
        self.waiting.store(state.waiters.len(), Ordering::SeqCst);
    }

    /// Gives a returned connection to a waiter, of its own worker first;
    /// back to `home` (its worker's idle list) when nobody waits.
    fn hand_over(&self, conn: H1Conn, home: &Mutex<IdleList>) {
        let worker = conn.worker;
        let mut grant = Grant::Conn(conn);
        let mut state = self.lock();
        while let Some(waiter) = state.waiters.pop_for(worker) {
            match waiter.send(grant) {
                Ok(()) => {
                    self.count_waiters(&state);
                    return;
                }
                // That waiter gave up (its request was cancelled).
                Err(back) => grant = back,
            }
        }
        self.count_waiters(&state);
        // The coldest connection goes once it has idled too long.
        let stale = match grant {
            Grant::Conn(conn) => lock(home).put(conn, IDLE_TIMEOUT),
            Grant::Slot => None,
        };
        drop(state);
        drop(stale);
    }

    /// A connection closed (or was never opened): its place goes to the
    /// oldest waiter (who opens a connection on its own worker), or back to
    /// the count.
    fn release_slot(&self) {
        let mut grant = Grant::Slot;
        let mut state = self.lock();
        while let Some(waiter) = state.waiters.pop_oldest() {
            match waiter.send(grant) {
                Ok(()) => {
                    self.count_waiters(&state);
                    return;
                }
                Err(back) => grant = back,
            }
        }
        self.count_waiters(&state);
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
            let Ok(Checkout::Connect(slot)) = pool.check_out(Instant::now()).await else {
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
            conn.return_to_pool();
        }
        server_sides
    }

    #[tokio::test]
    async fn a_worker_takes_its_own_idle_connection_and_another_s_only_at_the_cap() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let pool = Arc::new(H1Pool::new(2, 4, 2));
        // Opened on worker 1, so driven by its runtime.
        crate::worker::enter(1);
        let _server_sides = idle_connections(&pool, &listener, 1).await;

        crate::worker::enter(0);
        let Ok(Checkout::Connect(slot)) = pool.check_out(Instant::now()).await else {
            panic!("under the cap, worker 0 opens a connection of its own");
        };
        let Ok(Checkout::Idle(conn)) = pool.check_out(Instant::now()).await else {
            panic!("at the cap, worker 0 takes worker 1's idle connection");
        };
        assert_eq!(conn.worker, 1);
        conn.return_to_pool();
        drop(slot);

        crate::worker::enter(1);
        let taken = pool.check_out(Instant::now()).await;
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
        let request = tokio::spawn(async move { pool.check_out(Instant::now()).await });
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
        let pool = Arc::new(H1Pool::new(1, 4, 2));
        crate::worker::enter(0);
        let _server_side = idle_connections(&pool, &listener, 1).await;
        let Ok(Checkout::Idle(conn)) = pool.check_out(Instant::now()).await else {
            panic!("the idle connection is taken");
        };

        let mut elsewhere = queued_check_out(&pool, 1).await;
        tokio::time::advance(FAIRNESS / 2).await;
        let own = queued_check_out(&pool, 0).await;
        conn.return_to_pool();
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
        conn.return_to_pool();
        let Ok(Checkout::Idle(conn)) = served(elsewhere).await else {
            panic!("worker 1's waiter is served once it waited the bound longer");
        };
        assert_eq!(conn.worker, 0);
        conn.return_to_pool();
        let Ok(Checkout::Idle(_conn)) = served(later_own).await else {
            panic!("the connection comes back for worker 0's next waiter");
        };
        assert_eq!(pool.live(), 1, "one connection served all three");
    }

    #[tokio::test]
    async fn idle_connections_are_closed_once_past_the_idle_timeout() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let pool = Arc::new(H1Pool::new(4, 4, 2));
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
        let pool = Arc::new(H1Pool::new(4, 4, 2));
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

    /// Two workers, each on its own thread and runtime, take and return
    /// the one connection a cap of 1 allows, over and over, so the other
    /// worker is often queued when it comes back: a connection left idle
    /// while a request waits hangs a worker (with returns that skip the
    /// queue, this fails). The narrower race, a return between a request's
    /// announcement and its queueing, is closed by the fences in
    /// `check_in` and `open_or_queue`; this test seldom lands in it.
    #[test]
    fn two_workers_share_one_connection_and_each_return_reaches_a_waiter() {
        const ROUNDS: usize = 2_000;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        // Accepts and holds the one connection (a second would break the cap).
        std::thread::spawn(move || {
            let held: Vec<_> = listener.incoming().take(2).collect();
            drop(held);
        });
        let pool = Arc::new(H1Pool::new(1, 16, 2));
        let workers: Vec<_> = (0..2)
            .map(|worker| {
                let pool = Arc::clone(&pool);
                std::thread::spawn(move || {
                    crate::worker::enter(worker);
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .unwrap();
                    runtime.block_on(async {
                        for _ in 0..ROUNDS {
                            let checkout = tokio::time::timeout(
                                Duration::from_secs(10),
                                pool.check_out(Instant::now()),
                            )
                            .await
                            .expect("a worker waited for a connection that sat idle")
                            .unwrap();
                            let conn = match checkout {
                                Checkout::Idle(conn) => conn,
                                Checkout::Connect(slot) => {
                                    let stream = TcpStream::connect(addr).await.unwrap();
                                    H1Conn::handshake(UpstreamIo::Plain(stream), slot)
                                        .await
                                        .unwrap()
                                }
                            };
                            tokio::task::yield_now().await;
                            conn.return_to_pool();
                        }
                    });
                })
            })
            .collect();
        for worker in workers {
            worker.join().unwrap();
        }
        assert_eq!(pool.live(), 1, "one connection served both workers");
        assert_eq!(pool.idle(), 1);
    }
}
