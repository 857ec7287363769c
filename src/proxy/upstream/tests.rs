//! The upstream group against a real HTTP/1.1 server on loopback: when a
//! connection goes back to the pool.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::time::Instant;

use super::target::Connections;
use super::UpstreamGroup;
use crate::config::{Config, Upstream};
use crate::proxy::forward_body::ForwardBody;
use crate::proxy::headers::IdentityScrubber;

const SMALL: usize = 100;
const LARGE: usize = 256 * 1024;

/// A keep-alive server answering `/small` with 100 bytes and anything else
/// with 256 KiB, each with a Content-Length.
async fn start_upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service = service_fn(|req: Request<hyper::body::Incoming>| async move {
                    let len = if req.uri().path() == "/small" {
                        SMALL
                    } else {
                        LARGE
                    };
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(vec![b'a'; len]))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

fn group(target: SocketAddr) -> UpstreamGroup {
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\ntls_cert = \"c.pem\"\ntls_key = \"k.pem\"\n\
         [[route]]\nname = \"b\"\npath_prefix = \"/\"\nupstreams = [\"http://{target}\"]\n"
    );
    let config = Config::parse(Path::new("t.toml"), &text).unwrap();
    let Upstream::Http(set) = &config.routes[0].upstream else {
        panic!("expected an http target");
    };
    UpstreamGroup::new(set).unwrap()
}

fn idle(group: &UpstreamGroup) -> usize {
    match &group.targets[0].connections {
        Connections::Http1(pool) => pool.idle(),
        Connections::Http2(_) => panic!("an HTTP/1 target"),
    }
}

async fn send(group: &UpstreamGroup, path: &str) -> Response<super::body::UpstreamBody> {
    let request = Request::get(path)
        .header("host", "t")
        .body(ForwardBody::empty(IdentityScrubber::new("x-user-")))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let target = http::uri::PathAndQuery::try_from(path).unwrap();
    group.send(request, &target, deadline).await.unwrap()
}

#[tokio::test]
async fn a_small_body_is_read_whole_and_its_connection_is_back_before_the_answer() {
    let group = group(start_upstream().await);
    let response = send(&group, "/small").await;
    assert_eq!(
        idle(&group),
        1,
        "the connection is idle while the body is unsent"
    );
    assert_eq!(response.body().size_hint().exact(), Some(SMALL as u64));
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body.len(), SMALL);
    assert_eq!(group.live_connections(), vec![1]);
}

#[tokio::test]
async fn a_large_body_streams_and_holds_its_connection_until_it_ends() {
    let group = group(start_upstream().await);
    let response = send(&group, "/large").await;
    assert_eq!(idle(&group), 0, "the connection carries the body still");
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body.len(), LARGE);
    assert_eq!(idle(&group), 1, "back once the body ended");
}
