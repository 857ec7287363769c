//! The listener: accepts TCP connections (bounded by `max_connections`),
//! performs the TLS handshake inside each connection's task under a timeout,
//! serves HTTP/1.1 or HTTP/2 as ALPN chose (closing quiet HTTP/2
//! connections, which hyper does not time out), lingers on closed
//! connections (`linger.rs`), and drains on shutdown.

mod h2_streams;
mod idle;
mod linger;
mod workers;

pub use workers::bind;

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use http::header::UPGRADE;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;

use crate::config::ServerConfig;
use crate::gateway::Gateway;
use crate::proxy::answer::AnswerBody;
use crate::service::{self, Connection};
use crate::tasks::{ConnectionTasks, StopSignal, Tasks};
use h2_streams::{StreamQueue, WithStreams};
use idle::{StreamGuard, Streams, Tracked};

/// How long an HTTP/2 connection asked to close (GOAWAY) may go on with no
/// open stream before it is dropped: one round trip for the client to
/// acknowledge the GOAWAY's PING, which a silent client never does. At most
/// the header timeout, so a short one stays short.
const GOAWAY_GRACE: Duration = Duration::from_secs(1);

/// Serves `listener` until `shutdown` completes, then lets in-flight
/// requests finish for up to `[server] shutdown_grace`.
pub async fn serve(
    listener: TcpListener,
    gateway: Arc<Gateway>,
    tls: Arc<rustls::ServerConfig>,
    shutdown: impl Future<Output = ()>,
) {
    Server::new(listener, gateway, tls).serve(shutdown).await;
}

/// A bound listener with what serving it needs; [`serve`] in two steps, for
/// a caller that wants to watch the connection slots.
pub struct Server {
    listener: TcpListener,
    gateway: Arc<Gateway>,
    tls: Arc<rustls::ServerConfig>,
    slots: ConnectionSlots,
}

/// The `max_connections` slots: one permit per open connection, held until
/// the connection and every tunnel it opened have ended.
#[derive(Clone)]
pub struct ConnectionSlots {
    permits: Arc<Semaphore>,
    limit: usize,
}

impl ConnectionSlots {
    /// How many slots are taken now.
    pub fn in_use(&self) -> usize {
        self.limit.saturating_sub(self.permits.available_permits())
    }
}

impl Server {
    pub fn new(
        listener: TcpListener,
        gateway: Arc<Gateway>,
        tls: Arc<rustls::ServerConfig>,
    ) -> Self {
        let limit = gateway.config().server.max_connections;
        Self {
            listener,
            gateway,
            tls,
            slots: ConnectionSlots {
                permits: Arc::new(Semaphore::new(limit)),
                limit,
            },
        }
    }

    /// The connection slots, readable while serving and after.
    pub fn slots(&self) -> ConnectionSlots {
        self.slots.clone()
    }

    /// Serves until `shutdown` completes, then lets in-flight requests and
    /// open tunnels finish for up to `[server] shutdown_grace`, aborts what
    /// is left, and returns once every task it started has ended.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) {
        let Self {
            listener,
            gateway,
            tls,
            slots,
        } = self;
        let settings = gateway.config().server.clone();
        let tasks = Tasks::default();
        // Dropping this future before it returns ends everything it started.
        let _abort_on_drop = tasks.abort_on_drop();
        // Fired when the shutdown begins: connections finish in-flight
        // requests and close; maintenance and the pacer stop.
        let stop = StopSignal::new();
        // The other workers' accept loops run on their own threads, not as
        // tasks: dropping this future must stop them too.
        let _stop_on_drop = stop.fire_on_drop();
        let accept = Accept {
            protocols: Arc::new(Protocols::new(&settings)),
            acceptor: TlsAcceptor::from(tls),
            gateway: Arc::clone(&gateway),
            slots,
            settings: Arc::new(settings.clone()),
            tasks: tasks.clone(),
            stop: stop.clone(),
        };
        gateway.spawn_maintenance(&tasks, stop.clone());
        spawn_timer_pacer(&tasks, stop.clone());
        crate::admin::listener::spawn(&gateway, &tasks, stop.clone());
        let workers = workers::start(&listener, settings.workers, &accept);

        tokio::select! {
            () = shutdown => {}
            () = accept.clone().run(&listener) => {}
        }

        drop(listener);
        tracing::info!("shutting down: draining connections");
        stop.fire();
        match tokio::time::timeout(settings.shutdown_grace, tasks.wait()).await {
            Ok(()) => tracing::info!("all connections closed"),
            Err(_) => {
                tracing::warn!(
                    grace = ?settings.shutdown_grace,
                    "shutdown grace elapsed; closing remaining connections"
                );
                tasks.abort();
                tasks.wait().await;
            }
        }
        workers.join();
        // Every task is gone, and with them their hold on the gateway.
        // Whatever was acknowledged is already durable; this covers the rest.
        if let Err(err) = gateway.accounts().store().flush().await {
            tracing::error!(error = %err, "final flush failed");
        }
    }
}

/// What an accept loop needs; one per worker, all sharing the gateway, the
/// connection slots, the task tracker and the stop signal.
#[derive(Clone)]
struct Accept {
    protocols: Arc<Protocols>,
    acceptor: TlsAcceptor,
    gateway: Arc<Gateway>,
    slots: ConnectionSlots,
    settings: Arc<ServerConfig>,
    tasks: Tasks,
    stop: StopSignal,
}

impl Accept {
    /// Accepts connections on `listener` and starts each one's task on the
    /// runtime this runs on, until `stop` (or forever: the caller decides).
    async fn run(self, listener: &TcpListener) {
        let mut backoff = Duration::from_millis(5);
        // One wait for the whole loop: it registers once, not per connection.
        let stopped = self.stop.fired();
        tokio::pin!(stopped);
        loop {
            let (stream, peer) = tokio::select! {
                () = &mut stopped => return,
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => {
                        backoff = Duration::from_millis(5);
                        accepted
                    }
                    Err(err) => {
                        // Usually EMFILE: back off instead of spinning, never stop serving.
                        tracing::warn!(error = %err, "accept failed; retrying");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(1));
                        continue;
                    }
                },
            };
            let Ok(permit) = Arc::clone(&self.slots.permits).try_acquire_owned() else {
                // At capacity: close at once rather than queue work we cannot do.
                tracing::warn!(%peer, "connection limit reached; closing new connection");
                drop(stream);
                continue;
            };
            let settings = &self.settings;
            let task = ConnectionTask {
                stream,
                connection: Connection::new(
                    peer,
                    // From the live config: a reload may change the list.
                    self.gateway
                        .live()
                        .config
                        .server
                        .trusted_proxies
                        .iter()
                        .any(|cidr| cidr.contains(peer.ip())),
                    Arc::clone(&self.gateway),
                ),
                acceptor: self.acceptor.clone(),
                protocols: Arc::clone(&self.protocols),
                handshake_timeout: settings.handshake_timeout,
                header_read_timeout: settings.header_read_timeout,
                h2_limits: H2Limits {
                    first_request: settings.header_read_timeout,
                    idle: settings.idle_timeout,
                    close_grace: GOAWAY_GRACE.min(settings.header_read_timeout),
                },
                // Shared by every connection of every worker: waiting on it
                // reads its flag, written once (tasks::stop).
                stop: self.stop.clone(),
                tasks: ConnectionTasks::new(self.tasks.clone(), permit),
            };
            self.tasks.spawn(task.run());
        }
    }
}

/// Keeps one timer always due within 250 ms, until `stop`. Tokio's timer
/// driver wakes its I/O driver (an eventfd write, a system call) whenever a
/// new timer is due earlier than every pending one; with this pacer that
/// almost never happens, so the per-request timers (header timeout, upstream
/// timeout) are free of syscalls. It costs four wakeups a second.
fn spawn_timer_pacer(tasks: &Tasks, stop: StopSignal) {
    tasks.spawn(async move {
        let mut ticks = tokio::time::interval(Duration::from_millis(250));
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let stopped = stop.fired();
        tokio::pin!(stopped);
        loop {
            tokio::select! {
                biased;
                () = &mut stopped => return,
                _ = ticks.tick() => {}
            }
        }
    });
}

/// The HTTP/1.1 and HTTP/2 server settings, built once.
struct Protocols {
    http1: http1::Builder,
    http2: Http2Settings,
}

/// What every HTTP/2 connection is built with. Its builder is made per
/// connection: the executor in it queues the streams of that connection.
struct Http2Settings {
    max_concurrent_streams: u32,
    max_header_list_size: u32,
    keep_alive_interval: Duration,
}

impl Protocols {
    fn new(settings: &ServerConfig) -> Self {
        let mut http1 = http1::Builder::new();
        // No timer, so no header timeout of hyper's: it arms a timer on the
        // runtime's wheel for every request and cancels it once the head is
        // in (a boxed sleep, the wheel's lock taken twice). `serve_h1`
        // enforces the same deadline with one timer per connection.
        http1
            .max_buf_size(settings.max_header_bytes.max(8192))
            .max_headers(settings.max_headers)
            .keep_alive(true)
            .half_close(false);
        let http2 = Http2Settings {
            max_concurrent_streams: settings.h2_max_concurrent_streams,
            max_header_list_size: u32::try_from(settings.max_header_bytes).unwrap_or(u32::MAX),
            keep_alive_interval: settings.idle_timeout / 2,
        };
        Self { http1, http2 }
    }

    /// An HTTP/2 server whose streams `queue` collects for the connection's task.
    fn http2(&self, queue: StreamQueue) -> http2::Builder<StreamQueue> {
        let settings = &self.http2;
        let mut http2 = http2::Builder::new(queue);
        http2
            .timer(TokioTimer::new())
            .max_concurrent_streams(settings.max_concurrent_streams)
            .max_header_list_size(settings.max_header_list_size)
            // Rapid reset (CVE-2023-44487): cap streams reset before being served,
            // and streams the server had to reset for protocol errors.
            .max_pending_accept_reset_streams(Some(50))
            .max_local_error_reset_streams(Some(256))
            .keep_alive_interval(Some(settings.keep_alive_interval))
            .keep_alive_timeout(Duration::from_secs(20));
        http2
    }
}

/// One accepted connection, from TLS handshake to its last response.
struct ConnectionTask {
    stream: TcpStream,
    connection: Connection,
    acceptor: TlsAcceptor,
    protocols: Arc<Protocols>,
    handshake_timeout: Duration,
    /// An HTTP/1 request's head must be in within this of the connection
    /// being ready or of the previous response's end.
    header_read_timeout: Duration,
    h2_limits: H2Limits,
    /// Fired when the gateway stops: finish in-flight work, then close.
    stop: StopSignal,
    /// Holds the connection's slot; a tunnel it opens runs here and keeps
    /// the slot until the tunnel ends.
    tasks: ConnectionTasks,
}

impl ConnectionTask {
    async fn run(self) {
        let peer = self.connection.peer;
        let _open = self
            .connection
            .gateway
            .observability()
            .metrics()
            .connection_opened();
        let _ = self.stream.set_nodelay(true);
        let (stream, mut returned) = linger::LingeringStream::new(self.stream);
        let handshake = tokio::time::timeout(self.handshake_timeout, self.acceptor.accept(stream));
        let tls = match handshake.await {
            Ok(Ok(tls)) => tls,
            Ok(Err(err)) => {
                tracing::debug!(%peer, error = %err, "TLS handshake failed");
                return;
            }
            Err(_) => {
                tracing::debug!(%peer, "TLS handshake timed out");
                return;
            }
        };
        // ALPN decided the protocol; nothing is sniffed from the stream, so
        // the HTTP/1 header timeout also covers a client that sends nothing.
        let is_h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
        let connection = Arc::new(self.connection);
        let io = TokioIo::new(tls);
        let result = if is_h2 {
            let streams = Streams::new(Instant::now());
            let counted = streams.clone();
            let service = service_fn(move |request| {
                // Taken before the request is handled, so a stream counts
                // while it waits on the upstream too, and ends if reset.
                let guard = counted.open();
                // Boxed: the handler's state (~1.3 KiB) is large, and each
                // stream's future is moved into the connection's stream
                // queue (`h2_streams`), copied whole.
                let handling = Box::pin(service::handle(Arc::clone(&connection), request));
                counted_until_sent(handling, guard)
            });
            let queue = StreamQueue::default();
            let conn = self
                .protocols
                .http2(queue.clone())
                .serve_connection(io, service);
            serve_h2(
                WithStreams::new(conn, queue),
                |conn| conn.connection().graceful_shutdown(),
                &self.stop,
                &streams,
                self.h2_limits,
            )
            .await
        } else {
            let tunnels = self.tasks;
            let requests = Streams::new(Instant::now());
            let counted = requests.clone();
            let service = service_fn(move |mut request: Request<Incoming>| {
                // The head is in: the request counts until its answer ends.
                let guard = counted.open();
                // Only a protocol switch outlives its request: it gets the
                // connection's tasks to run its tunnel on.
                if request.headers().contains_key(UPGRADE) {
                    request.extensions_mut().insert(tunnels.clone());
                }
                // Not boxed: hyper keeps one box per connection for the
                // request in flight and moves this future into it, so a box
                // of our own would only add an allocation (of more than
                // malloc's per-thread cache takes) and its free per request.
                counted_until_sent(service::handle(Arc::clone(&connection), request), guard)
            });
            let conn = self
                .protocols
                .http1
                .serve_connection(io, service)
                .with_upgrades();
            serve_h1(
                conn,
                |conn| conn.graceful_shutdown(),
                &self.stop,
                &requests,
                self.header_read_timeout,
            )
            .await
        };
        if let Err(err) = result {
            tracing::debug!(%peer, error = %err, "connection ended with an error");
        }
        // hyper has dropped the connection (an upgraded one lives on in its
        // tunnel and is not returned): discard what the client still sends
        // so it reads the answer instead of a reset. The connection's slot is
        // held meanwhile, so lingering is bounded by the connection limit too.
        if let Ok(stream) = returned.try_recv() {
            linger::linger(stream).await;
        }
    }
}

/// The answer of `handling` with `guard` in its body, so the request counts
/// as open until its last byte is sent (or its stream is reset).
fn counted_until_sent<F>(
    handling: F,
    guard: StreamGuard,
) -> impl Future<Output = Result<Response<Tracked<AnswerBody>>, Infallible>> + Send + 'static
where
    F: Future<Output = Result<Response<AnswerBody>, Infallible>> + Send + 'static,
{
    // A `Map`, not an `async` block awaiting `handling`: that would keep
    // room for `handling` twice (rust-lang/rust#62958).
    handling
        .map(move |answer| answer.map(|response| response.map(|body| Tracked::new(body, guard))))
}

/// The deadlines hyper does not enforce on HTTP/2 connections.
#[derive(Debug, Clone, Copy)]
struct H2Limits {
    /// The preface and the first request's headers must arrive within this
    /// (`header_read_timeout`), as on HTTP/1.
    first_request: Duration,
    /// A connection with no open stream for this long is closed (`idle_timeout`).
    idle: Duration,
    /// After GOAWAY, how long without an open stream before the connection
    /// is dropped outright.
    close_grace: Duration,
}

/// Drives an HTTP/2 connection to its end. It is asked to close (GOAWAY,
/// letting open streams finish) when the gateway stops, when no request
/// arrived within `first_request`, or after `idle` without an open stream;
/// once asked, it is dropped if it stays without an open stream for
/// `close_grace` (a client that sent no preface, or ignores the GOAWAY).
async fn serve_h2<C>(
    conn: C,
    begin_shutdown: impl FnOnce(std::pin::Pin<&mut C>),
    stop: &StopSignal,
    streams: &Streams,
    limits: H2Limits,
) -> C::Output
where
    C: Future<Output = hyper::Result<()>>,
{
    tokio::pin!(conn);
    let start = Instant::now();
    tokio::select! {
        output = conn.as_mut() => return output,
        () = stop.fired() => {}
        () = streams.quiet(start, limits.first_request, limits.idle) => {
            tracing::debug!("closing a quiet HTTP/2 connection");
        }
    }
    begin_shutdown(conn.as_mut());
    let asked = Instant::now();
    tokio::select! {
        output = conn => output,
        () = streams.quiet(asked, limits.close_grace, limits.close_grace) => {
            tracing::debug!("dropping an HTTP/2 connection that did not close after GOAWAY");
            Ok(())
        }
    }
}

/// Drives an HTTP/1 connection to its end. It is dropped once it has gone
/// `head_timeout` without a request in progress: from the moment it was
/// ready, or from its last answer's end, to the next head in full (a
/// client that sends nothing, a head that never ends, a keep-alive
/// connection gone quiet). When the gateway stops first, it is asked to
/// finish the request in progress (`begin_shutdown`), under the same
/// deadline.
async fn serve_h1<C>(
    conn: C,
    begin_shutdown: impl FnOnce(std::pin::Pin<&mut C>),
    stop: &StopSignal,
    requests: &Streams,
    head_timeout: Duration,
) -> C::Output
where
    C: Future<Output = hyper::Result<()>>,
{
    tokio::pin!(conn);
    let start = Instant::now();
    let quiet = requests.quiet(start, head_timeout, head_timeout);
    tokio::pin!(quiet);
    tokio::select! {
        output = conn.as_mut() => return output,
        () = stop.fired() => begin_shutdown(conn.as_mut()),
        () = quiet.as_mut() => {
            tracing::debug!("dropping an HTTP/1 connection without a request in time");
            return Ok(());
        }
    }
    tokio::select! {
        output = conn => output,
        () = quiet => Ok(()),
    }
}
