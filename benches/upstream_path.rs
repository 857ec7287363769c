//! Criterion benchmark of the upstream path: one proxied exchange (GET, a
//! 100-byte answer read whole) through authgate's own pool — the HTTP/1
//! connection driven in the request's task — against hyper-util's legacy
//! client (what authgate used before), both over keep-alive connections to
//! the same in-process hyper server on one current-thread runtime.
//!
//! Run by hand with `cargo bench --bench upstream_path`; read the ratio of
//! the two lines of one run, not the absolute times (they measure the machine).

// Benchmark fixtures are test code: a broken fixture should stop the run loudly.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};
use http::uri::PathAndQuery;
use http::{Request, Response};
use http_body_util::{BodyExt, Empty, Full};
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::runtime::Runtime;

use authgate::config::{Config, Upstream};
use authgate::proxy::forward_body::ForwardBody;
use authgate::proxy::headers::IdentityScrubber;
use authgate::proxy::upstream::UpstreamGroup;

const BODY: &[u8; 100] = &[b'a'; 100];

/// A keep-alive HTTP/1.1 server answering every request with 100 bytes.
async fn start_upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            stream.set_nodelay(true).unwrap();
            tokio::spawn(async move {
                let service = service_fn(|_req| async {
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(BODY))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

fn group(targets: &[SocketAddr]) -> UpstreamGroup {
    let list = targets
        .iter()
        .map(|a| format!("\"http://{a}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\ntls_cert = \"c.pem\"\ntls_key = \"k.pem\"\n\
         [[route]]\nname = \"b\"\npath_prefix = \"/\"\nupstreams = [{list}]\n"
    );
    let config = Config::parse(Path::new("bench.toml"), &text).unwrap();
    let Upstream::Http(set) = &config.routes[0].upstream else {
        panic!("expected http targets");
    };
    UpstreamGroup::new(set, 1).unwrap()
}

fn bench_upstream_path(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (a, b) = rt.block_on(async { (start_upstream().await, start_upstream().await) });
    let scrubber = IdentityScrubber::new("x-user-");
    let mut bench = c.benchmark_group("upstream_path");

    let one = group(&[a]);
    let two = group(&[a, b]);
    for (name, group) in [
        ("authgate_pool_h1", &one),
        ("authgate_pool_h1_two_targets", &two),
    ] {
        bench.bench_function(name, |bencher| {
            bencher.iter(|| {
                exchange_pool(&rt, group, &scrubber);
            })
        });
    }

    let legacy: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let uri: http::Uri = format!("http://{a}/").parse().unwrap();
    bench.bench_function("hyper_util_legacy_h1", |bencher| {
        bencher.iter(|| {
            rt.block_on(async {
                let response = legacy.get(uri.clone()).await.unwrap();
                let body = response.into_body().collect().await.unwrap().to_bytes();
                assert_eq!(body.len(), 100);
            })
        })
    });
    bench.finish();
}

fn exchange_pool(rt: &Runtime, group: &UpstreamGroup, scrubber: &IdentityScrubber) {
    rt.block_on(async {
        let request = Request::get("/")
            .header("host", "bench")
            .body(ForwardBody::empty(scrubber.clone()))
            .unwrap();
        let response = group
            .send(
                Box::new(request),
                PathAndQuery::from_static("/"),
                tokio::time::Instant::now(),
                std::time::Duration::from_secs(5),
            )
            .await
            .unwrap();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body.len(), 100);
    });
}

criterion_group!(benches, bench_upstream_path);
criterion_main!(benches);
