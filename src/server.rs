//! The listener: accepts TCP connections (bounded by `max_connections`),
//! performs the TLS handshake inside each connection's task under a timeout,
//! serves HTTP/1.1 or HTTP/2 as ALPN chose (closing quiet HTTP/2
//! connections, which hyper does not time out), and drains on shutdown.

mod idle;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;

use crate::config::ServerConfig;
use crate::gateway::Gateway;
use crate::service::{self, Connection};
use idle::{Streams, Tracked};

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
    let settings = gateway.config().server.clone();
    let protocols = Arc::new(Protocols::new(&settings));
    let acceptor = TlsAcceptor::from(tls);
    // One permit per open connection: when all are back, every connection
    // has ended, which is what the drain waits for.
    let slots = Arc::new(Semaphore::new(settings.max_connections));
    let (stop_tx, stop_rx) = watch::channel(false);
    let maintenance = gateway.spawn_maintenance();
    let pacer = spawn_timer_pacer();
    let mut backoff = Duration::from_millis(5);
    tokio::pin!(shutdown);

    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
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
        let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
            // At capacity: close at once rather than queue work we cannot do.
            tracing::warn!(%peer, "connection limit reached; closing new connection");
            drop(stream);
            continue;
        };
        let task = ConnectionTask {
            stream,
            connection: Connection {
                peer,
                peer_trusted: settings
                    .trusted_proxies
                    .iter()
                    .any(|cidr| cidr.contains(peer.ip())),
            },
            acceptor: acceptor.clone(),
            protocols: Arc::clone(&protocols),
            gateway: Arc::clone(&gateway),
            handshake_timeout: settings.handshake_timeout,
            h2_limits: H2Limits {
                first_request: settings.header_read_timeout,
                idle: settings.idle_timeout,
                close_grace: GOAWAY_GRACE.min(settings.header_read_timeout),
            },
            stop: stop_rx.clone(),
        };
        tokio::spawn(async move {
            let _permit = permit;
            task.run().await;
        });
    }

    drop(listener);
    maintenance.abort();
    pacer.abort();
    // Wait for the abort, so the task's hold on the gateway (and its
    // database) is gone when serve returns.
    let _ = maintenance.await;
    tracing::info!("shutting down: draining connections");
    let _ = stop_tx.send(true);
    let all = u32::try_from(settings.max_connections).unwrap_or(u32::MAX);
    match tokio::time::timeout(settings.shutdown_grace, slots.acquire_many(all)).await {
        Ok(_) => tracing::info!("all connections closed"),
        Err(_) => tracing::warn!(
            grace = ?settings.shutdown_grace,
            "shutdown grace elapsed; closing remaining connections"
        ),
    }
    // Whatever was acknowledged is already durable; this covers the rest.
    if let Err(err) = gateway.accounts().store().flush().await {
        tracing::error!(error = %err, "final flush failed");
    }
}

/// Keeps one timer always due within 250 ms. Tokio's timer driver wakes its
/// I/O driver (an eventfd write, a system call) whenever a new timer is due
/// earlier than every pending one; with this pacer that almost never happens,
/// so the per-request timers (header timeout, upstream timeout) are free of
/// syscalls. It costs four wakeups a second.
fn spawn_timer_pacer() -> tokio::task::JoinHandle<()> {
    tokio::spawn(async {
        let mut ticks = tokio::time::interval(Duration::from_millis(250));
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
        }
    })
}

/// The HTTP/1.1 and HTTP/2 server settings, built once.
struct Protocols {
    http1: http1::Builder,
    http2: http2::Builder<TokioExecutor>,
}

impl Protocols {
    fn new(settings: &ServerConfig) -> Self {
        let mut http1 = http1::Builder::new();
        http1
            // Without a timer hyper's header timeout silently does nothing.
            .timer(TokioTimer::new())
            .header_read_timeout(settings.header_read_timeout)
            .max_buf_size(settings.max_header_bytes.max(8192))
            .max_headers(settings.max_headers)
            .keep_alive(true)
            .half_close(false);
        let mut http2 = http2::Builder::new(TokioExecutor::new());
        http2
            .timer(TokioTimer::new())
            .max_concurrent_streams(settings.h2_max_concurrent_streams)
            .max_header_list_size(u32::try_from(settings.max_header_bytes).unwrap_or(u32::MAX))
            // Rapid reset (CVE-2023-44487): cap streams reset before being served,
            // and streams the server had to reset for protocol errors.
            .max_pending_accept_reset_streams(Some(50))
            .max_local_error_reset_streams(Some(256))
            .keep_alive_interval(Some(settings.idle_timeout / 2))
            .keep_alive_timeout(Duration::from_secs(20));
        Self { http1, http2 }
    }
}

/// One accepted connection, from TLS handshake to its last response.
struct ConnectionTask {
    stream: TcpStream,
    connection: Connection,
    acceptor: TlsAcceptor,
    protocols: Arc<Protocols>,
    gateway: Arc<Gateway>,
    handshake_timeout: Duration,
    h2_limits: H2Limits,
    /// Becomes true when the gateway stops: finish in-flight work, then close.
    stop: watch::Receiver<bool>,
}

impl ConnectionTask {
    async fn run(mut self) {
        let peer = self.connection.peer;
        let _ = self.stream.set_nodelay(true);
        let handshake =
            tokio::time::timeout(self.handshake_timeout, self.acceptor.accept(self.stream));
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
        let gateway = self.gateway;
        let connection = self.connection;
        let io = TokioIo::new(tls);
        let result = if is_h2 {
            let streams = Streams::new(Instant::now());
            let counted = streams.clone();
            let service = service_fn(move |request| {
                // Taken before the request is handled, so a stream counts
                // while it waits on the upstream too, and ends if reset.
                let guard = counted.open();
                let response = service::handle(Arc::clone(&gateway), connection, request);
                async move {
                    response
                        .await
                        .map(|response| response.map(|body| Tracked::new(body, guard)))
                }
            });
            let conn = self.protocols.http2.serve_connection(io, service);
            serve_h2(
                conn,
                |conn| conn.graceful_shutdown(),
                &mut self.stop,
                &streams,
                self.h2_limits,
            )
            .await
        } else {
            let service = service_fn(move |request| {
                service::handle(Arc::clone(&gateway), connection, request)
            });
            let conn = self
                .protocols
                .http1
                .serve_connection(io, service)
                .with_upgrades();
            until_stopped(conn, &mut self.stop, |conn| conn.graceful_shutdown()).await
        };
        if let Err(err) = result {
            tracing::debug!(%peer, error = %err, "connection ended with an error");
        }
    }
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
    stop: &mut watch::Receiver<bool>,
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
        () = stopped(stop) => {}
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

/// Drives a connection to its end; when the gateway stops first, asks it to
/// finish in-flight requests (`begin_shutdown`) and then drives it to its end.
async fn until_stopped<C: Future>(
    conn: C,
    stop: &mut watch::Receiver<bool>,
    begin_shutdown: impl FnOnce(std::pin::Pin<&mut C>),
) -> C::Output {
    tokio::pin!(conn);
    tokio::select! {
        output = conn.as_mut() => output,
        () = stopped(stop) => {
            begin_shutdown(conn.as_mut());
            conn.await
        }
    }
}

/// Completes once the gateway is stopping (or the sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    // The borrow the receiver hands back is dropped here, before any await
    // of the caller, so the connection future stays `Send`.
    let _ = stop.wait_for(|stop| *stop).await;
}
