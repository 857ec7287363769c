//! The pooled HTTP/1.1 client that carries requests to upstreams: keep-alive
//! connections reused across requests, Nagle off, bounded connect time.

use std::time::Duration;

use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::body::ForwardBody;

pub type UpstreamClient = Client<HttpConnector, ForwardBody>;

pub fn build() -> UpstreamClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(Duration::from_secs(5)));
    connector.set_keepalive(Some(Duration::from_secs(60)));
    connector.enforce_http(true);
    Client::builder(TokioExecutor::new())
        .timer(TokioTimer::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(1024)
        // Every request is rewritten by us; keep the client from adding its own Host
        // only when the upstream URI has none (it always has one here).
        .set_host(true)
        .build(connector)
}
