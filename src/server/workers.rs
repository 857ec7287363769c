//! Workers beyond the first: with `[server] workers` above one, each further
//! worker is an OS thread with its own current-thread runtime and its own
//! accept loop, on a listener sharing the first one's port (SO_REUSEPORT:
//! the kernel spreads new connections over the listeners). A connection and
//! every task it starts stay on the thread that accepted it, so nothing is
//! stolen between threads or woken across them (the multi-thread scheduler
//! cost HTTP/2 about 2× the CPU per request on two cores, bench/RESULTS.md).
//! The gateway's state (keys, revocations, pools, store) is shared.

use std::net::SocketAddr;
use std::thread::JoinHandle;

use tokio::net::{TcpListener, TcpSocket};

use super::{spawn_timer_pacer, Accept};

/// The threads of the workers beyond the first.
pub(super) struct Workers {
    threads: Vec<JoinHandle<()>>,
}

impl Workers {
    /// Waits for the threads, which end once every task has ended.
    pub(super) fn join(self) {
        for thread in self.threads {
            if thread.join().is_err() {
                tracing::error!("a worker thread panicked");
            }
        }
    }
}

/// Starts `workers - 1` workers beside the caller's, each accepting on a
/// listener that shares `listener`'s port. When the port cannot be shared
/// (a listener bound without SO_REUSEPORT, as an embedding caller's may be),
/// the caller's accept loop serves alone.
pub(super) fn start(listener: &TcpListener, workers: usize, accept: &Accept) -> Workers {
    let mut threads = Vec::new();
    let Ok(addr) = listener.local_addr() else {
        return Workers { threads };
    };
    for n in 1..workers {
        let shared = match share_port(addr) {
            Ok(shared) => shared,
            Err(err) => {
                tracing::info!(
                    error = %err,
                    "the listener's port cannot be shared; serving with {n} worker(s)"
                );
                break;
            }
        };
        let accept = accept.clone();
        let spawned = std::thread::Builder::new()
            // At most 15 bytes: what Linux keeps of a thread's name.
            .name(format!("ag-worker-{n}"))
            .spawn(move || run(n, shared, accept));
        match spawned {
            Ok(thread) => threads.push(thread),
            Err(err) => {
                tracing::warn!(error = %err, "cannot start a worker thread; serving with {n}");
                break;
            }
        }
    }
    if !threads.is_empty() {
        tracing::info!(
            workers = threads.len() + 1,
            "each worker accepts on its own listener"
        );
    }
    Workers { threads }
}

/// The public listener on `addr`, ready to share its port with the other
/// workers' listeners when there are several (`workers` above one).
pub fn bind(addr: SocketAddr, workers: usize) -> std::io::Result<TcpListener> {
    listen(addr, workers > 1)
}

/// A listener on `addr` beside the others, for another worker's runtime.
fn share_port(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    listen(addr, true)?.into_std()
}

/// A listener on `addr`; `shared`: with SO_REUSEPORT, which Linux allows
/// only among sockets of the same user.
fn listen(addr: SocketAddr, shared: bool) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    // As `TcpListener::bind` does: a restart need not wait for TIME_WAIT.
    #[cfg(unix)]
    socket.set_reuseaddr(true)?;
    #[cfg(unix)]
    if shared {
        socket.set_reuseport(true)?;
    }
    #[cfg(not(unix))]
    if shared {
        return Err(std::io::Error::other("SO_REUSEPORT is not available here"));
    }
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// The accept backlog of every listener (tokio's default).
const LISTEN_BACKLOG: u32 = 1024;

/// One worker's life: accept until the gateway stops, then keep the runtime
/// turning until every task has ended (its connections run on it).
fn run(index: usize, listener: std::net::TcpListener, accept: Accept) {
    crate::worker::enter(index);
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            tracing::warn!(error = %err, "cannot start a worker's runtime");
            return;
        }
    };
    runtime.block_on(async move {
        let listener = match TcpListener::from_std(listener) {
            Ok(listener) => listener,
            Err(err) => {
                tracing::warn!(error = %err, "cannot register a worker's listener");
                return;
            }
        };
        spawn_timer_pacer(&accept.tasks, accept.stop.clone());
        let tasks = accept.tasks.clone();
        accept.run(&listener).await;
        drop(listener);
        tasks.wait().await;
    });
}
