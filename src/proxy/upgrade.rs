//! WebSocket tunnelling (RFC 6455 §4) on routes with `websocket = true`:
//! the handshake is authorized and forwarded like any request, and only
//! when the upstream answers 101 are the two connections joined. Any other
//! answer (426, 401, ...) is returned as is and opens no tunnel.

use http::header::{CONNECTION, UPGRADE};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Version};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

use crate::tasks::ConnectionTasks;

/// True for a well-formed HTTP/1.1 WebSocket handshake request.
pub fn is_websocket_handshake<B>(request: &Request<B>) -> bool {
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
pub struct ClientUpgrade {
    upgrade: OnUpgrade,
    /// Put on the request by the server; a tunnel runs there so it keeps
    /// the connection's slot and ends with the gateway.
    tasks: Option<ConnectionTasks>,
}

/// Takes the client side's pending upgrade before the request is consumed.
pub fn take_client_upgrade(request: &mut Request<Incoming>) -> ClientUpgrade {
    ClientUpgrade {
        upgrade: hyper::upgrade::on(&mut *request),
        tasks: request.extensions_mut().remove::<ConnectionTasks>(),
    }
}

/// Hop-by-hop removal strips these; a WebSocket handshake needs them back.
pub fn restore_handshake_headers(headers: &mut HeaderMap) {
    headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
}

/// When the upstream switched protocols, joins the two upgraded connections
/// in a task of the client's connection; otherwise does nothing.
pub fn tunnel_if_switched<B>(client: ClientUpgrade, upstream: &mut Response<B>) {
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
    tasks.spawn(async move {
        let (client, upstream) = match tokio::try_join!(client, upstream_upgrade) {
            Ok(pair) => pair,
            Err(err) => {
                tracing::debug!(error = %err, "websocket upgrade did not complete");
                return;
            }
        };
        let mut client = TokioIo::new(client);
        let mut upstream = TokioIo::new(upstream);
        match tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
            Ok((up, down)) => tracing::debug!(up, down, "websocket tunnel closed"),
            Err(err) => tracing::debug!(error = %err, "websocket tunnel ended"),
        }
    });
}
