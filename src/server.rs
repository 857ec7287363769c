//! The listener: accepts TCP connections (bounded by `max_connections`),
//! performs the TLS handshake inside each connection's task under a timeout,
//! serves HTTP/1.1 or HTTP/2 (by ALPN) with hyper-util, and drains
//! connections on shutdown.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;

use crate::config::ServerConfig;
use crate::gateway::Gateway;
use crate::service::{self, Connection};

/// Serves `listener` until `shutdown` completes, then waits up to
/// `[server] shutdown_grace` for in-flight requests.
pub async fn serve(
    listener: TcpListener,
    gateway: Arc<Gateway>,
    tls: Arc<rustls::ServerConfig>,
    shutdown: impl Future<Output = ()>,
) {
    let settings = gateway.config().server.clone();
    let http = Arc::new(http_builder(&settings));
    let acceptor = TlsAcceptor::from(tls);
    let slots = Arc::new(Semaphore::new(settings.max_connections));
    let graceful = GracefulShutdown::new();
    let maintenance = gateway.spawn_maintenance();
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
        let connection = Connection {
            peer,
            peer_trusted: settings
                .trusted_proxies
                .iter()
                .any(|cidr| cidr.contains(peer.ip())),
        };
        let task = ConnectionTask {
            stream,
            connection,
            acceptor: acceptor.clone(),
            http: Arc::clone(&http),
            gateway: Arc::clone(&gateway),
            handshake_timeout: settings.handshake_timeout,
        };
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let _permit = permit;
            task.run(watcher).await;
        });
    }

    drop(listener);
    maintenance.abort();
    tracing::info!("shutting down: draining connections");
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("all connections closed"),
        () = tokio::time::sleep(settings.shutdown_grace) => {
            tracing::warn!(grace = ?settings.shutdown_grace, "shutdown grace elapsed; closing remaining connections");
        }
    }
    // Whatever was acknowledged is already durable; this covers the rest.
    if let Err(err) = gateway.accounts().store().flush().await {
        tracing::error!(error = %err, "final flush failed");
    }
}

fn http_builder(settings: &ServerConfig) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        // Without a timer hyper's header timeout silently does nothing.
        .timer(TokioTimer::new())
        .header_read_timeout(settings.header_read_timeout)
        .max_buf_size(settings.max_header_bytes.max(8192))
        .max_headers(settings.max_headers)
        .keep_alive(true)
        .half_close(false);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(settings.h2_max_concurrent_streams)
        .max_header_list_size(u32::try_from(settings.max_header_bytes).unwrap_or(u32::MAX))
        // Rapid reset (CVE-2023-44487): cap streams reset before being served.
        .max_pending_accept_reset_streams(Some(50))
        .max_local_error_reset_streams(Some(256))
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(20));
    builder
}

/// One accepted connection, from TLS handshake to its last response.
struct ConnectionTask {
    stream: TcpStream,
    connection: Connection,
    acceptor: TlsAcceptor,
    http: Arc<auto::Builder<TokioExecutor>>,
    gateway: Arc<Gateway>,
    handshake_timeout: Duration,
}

impl ConnectionTask {
    async fn run(self, watcher: hyper_util::server::graceful::Watcher) {
        let peer = self.connection.peer;
        let _ = self.stream.set_nodelay(true);
        let tls =
            match tokio::time::timeout(self.handshake_timeout, self.acceptor.accept(self.stream))
                .await
            {
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
        let gateway = self.gateway;
        let connection = self.connection;
        let service =
            service_fn(move |request| service::handle(Arc::clone(&gateway), connection, request));
        let conn = self
            .http
            .serve_connection_with_upgrades(TokioIo::new(tls), service);
        if let Err(err) = watcher.watch(conn).await {
            tracing::debug!(%peer, error = %err, "connection ended with an error");
        }
    }
}
