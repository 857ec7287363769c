//! Why an upstream exchange failed, typed so `proxy/mod.rs` can tell our own
//! body limits from upstream faults and `src/error.rs` can answer each.

use super::connector::ConnectError;
use super::pool::PoolError;

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// Every target is ejected or failed its health check.
    #[error("no healthy upstream target")]
    NoHealthyTarget,
    #[error("connecting to {target}: {source}")]
    Connect {
        target: String,
        #[source]
        source: ConnectError,
    },
    #[error("exchange with {target} failed: {source}")]
    Exchange {
        target: String,
        #[source]
        source: hyper::Error,
    },
    #[error("{target} is at max_upstream_connections: {source}")]
    Busy {
        target: String,
        #[source]
        source: PoolError,
    },
    /// The route's timeout passed before the response head (or a small
    /// body read whole) arrived.
    #[error("no answer before the route's timeout")]
    Timeout,
    #[error("cannot build the upstream request: {0}")]
    Request(#[source] http::Error),
}
