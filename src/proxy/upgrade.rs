//! WebSocket tunnelling (RFC 6455 §4) on routes with `websocket = true`:
//! the handshake is authorized and forwarded like any request, and only
//! when the upstream answers 101 are the two connections joined. Any other
//! answer (426, 401, ...) is returned as is and opens no tunnel. A tunnel
//! ends with the session that opened it.

use http::header::{CONNECTION, UPGRADE};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Version};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt;
use tracing::Instrument;

use crate::auth::session_watch::SessionWatch;
use crate::tasks::ConnectionTasks;

/// Longest an ended tunnel waits for an orderly close before dropping both ends.
const CLOSE_GRACE: std::time::Duration = std::time::Duration::from_millis(500);

/// True for a well-formed HTTP/1.1 WebSocket handshake request.
pub(crate) fn is_websocket_handshake<B>(request: &Request<B>) -> bool {
    request.method() == Method::GET
        && request.version() == Version::HTTP_11
        && request
            .headers()
            .get(UPGRADE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("websocket"))
}

/// The client side of a handshake: its pending upgrade, and the tasks of
/// the connection it came on, where the tunnel will run.
pub(crate) struct ClientUpgrade {
    upgrade: OnUpgrade,
    /// Put on the request by the server; a tunnel runs there so it keeps
    /// the connection's slot and ends with the gateway.
    tasks: Option<ConnectionTasks>,
}

/// Takes the client side's pending upgrade before the request is consumed.
pub(crate) fn take_client_upgrade(request: &mut Request<Incoming>) -> ClientUpgrade {
    ClientUpgrade {
        upgrade: hyper::upgrade::on(&mut *request),
        tasks: request.extensions_mut().remove::<ConnectionTasks>(),
    }
}

/// Hop-by-hop removal strips these; a WebSocket handshake needs them back.
pub(crate) fn restore_handshake_headers(headers: &mut HeaderMap) {
    headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
}

/// When the upstream switched protocols, joins the two upgraded connections
/// in a task of the client's connection; otherwise does nothing. With a
/// `watch`, the tunnel is closed at both ends when the session that opened
/// it ends.
pub(crate) fn tunnel_if_switched<B>(
    client: ClientUpgrade,
    upstream: &mut Response<B>,
    tunnels: &prometheus_client::metrics::gauge::Gauge,
    watch: Option<SessionWatch>,
) {
    if upstream.status() != StatusCode::SWITCHING_PROTOCOLS {
        return;
    }
    let Some(tasks) = client.tasks else {
        // Not a request of the server's: with nowhere tracked to run, the
        // upgrades are dropped, which closes both connections.
        tracing::error!("websocket handshake outside a server connection; tunnel not opened");
        return;
    };
    let client = client.upgrade;
    let upstream_upgrade = hyper::upgrade::on(upstream);
    let open = TunnelOpen::new(tunnels);
    tasks.spawn(
        async move {
            let _open = open;
            let (client, upstream) = match tokio::try_join!(client, upstream_upgrade) {
                Ok(pair) => pair,
                Err(err) => {
                    tracing::debug!(error = %err, "websocket upgrade did not complete");
                    return;
                }
            };
            let mut client = TokioIo::new(client);
            let mut upstream = TokioIo::new(upstream);
            let ended = async move {
                match watch {
                    Some(watch) => watch.ended().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                copied = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {
                    match copied {
                        Ok((up, down)) => tracing::debug!(up, down, "websocket tunnel closed"),
                        Err(err) => tracing::debug!(error = %err, "websocket tunnel ended"),
                    }
                    return;
                }
                () = ended => {}
            }
            tracing::info!("closing a websocket tunnel: its session ended");
            // An orderly close of both ends (TLS close_notify and FIN to the
            // client, FIN to the upstream), bounded: a peer that does not read
            // cannot hold the tunnel open; dropping both then closes them.
            let _ = tokio::time::timeout(CLOSE_GRACE, async {
                let _ = client.shutdown().await;
                let _ = upstream.shutdown().await;
            })
            .await;
        }
        // The tunnel's log lines keep the request's id.
        .in_current_span(),
    );
}

/// Holds the open-tunnels gauge one higher while the tunnel lives.
struct TunnelOpen(prometheus_client::metrics::gauge::Gauge);

impl TunnelOpen {
    fn new(gauge: &prometheus_client::metrics::gauge::Gauge) -> Self {
        gauge.inc();
        Self(gauge.clone())
    }
}

impl Drop for TunnelOpen {
    fn drop(&mut self) {
        self.0.dec();
    }
}
