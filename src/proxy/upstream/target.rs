//! One target of a route at run time: how to reach it, its connections, its
//! health, and how many requests it is serving now (for least-requests).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use http::HeaderValue;

use super::connector::Connector;
use super::h2::H2Shared;
use super::health::Health;
use super::pool::H1Pool;
use crate::config::upstream::Target;
use crate::worker::PerWorker;

pub(crate) struct TargetState {
    pub target: Target,
    /// `scheme://authority`, for logs and errors.
    pub name: String,
    /// The authority as a `Host` header value, for HTTP/1 requests that
    /// came without one; validated once here, not on every request.
    pub host: HeaderValue,
    pub connector: Connector,
    pub connections: Connections,
    pub health: Health,
    /// Counted per worker: a request writes its own worker's count (and
    /// reference count) only, and least-requests reads the sum.
    in_flight: PerWorker<Arc<AtomicUsize>>,
}

/// The connections of a target, by protocol.
pub(crate) enum Connections {
    Http1(Box<H1Pool>),
    Http2(H2Shared),
}

impl TargetState {
    /// Fails when the authority is not a valid header value.
    pub(crate) fn new(
        target: Target,
        connector: Connector,
        connections: Connections,
        workers: usize,
    ) -> Result<Self, http::header::InvalidHeaderValue> {
        let name = format!("{}://{}", target.scheme, target.authority);
        let host = HeaderValue::from_str(target.authority.as_str())?;
        Ok(Self {
            target,
            name,
            host,
            connector,
            connections,
            health: Health::default(),
            in_flight: PerWorker::new(workers, Arc::default),
        })
    }

    /// Requests sent to this target whose response has not ended.
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight
            .iter()
            .map(|count| count.load(Ordering::Relaxed))
            .sum()
    }

    /// Open connections to this target.
    pub(crate) fn live_connections(&self) -> usize {
        match &self.connections {
            Connections::Http1(pool) => pool.live(),
            Connections::Http2(shared) => shared.live(),
        }
    }

    /// Counts one request until the guard is dropped (its response ended).
    pub(crate) fn start_request(&self) -> InFlight {
        let count = self.in_flight.mine();
        count.fetch_add(1, Ordering::Relaxed);
        InFlight(Arc::clone(count))
    }
}

/// One request in flight to a target; holds the count it was added to.
pub struct InFlight(Arc<AtomicUsize>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}
