//! The gateway's Prometheus metrics: defined and registered once, updated by
//! one-line hooks where events happen, encoded by `/metrics`. Per-route
//! handles are resolved ahead, so counting a request takes no lock and no
//! allocation: an index, an atomic load and atomic adds to cells of its own
//! worker (`per_worker.rs`).

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use http::StatusCode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::per_worker::{CountersOf, HistogramsOf, WorkerCounter, WorkerHistogram};

use crate::config::RouteConfig;
use crate::error::GatewayError;
use crate::proxy::upstream::UpstreamError;

/// Latency buckets in seconds: 250 µs to 10 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];
/// Statuses 100 to 599 each get a pre-resolved counter slot per route.
const FIRST_STATUS: u16 = 100;
const STATUS_SLOTS: usize = 500;

/// Which account endpoint a request was, for the outcome counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccountAction {
    Register,
    Login,
    Refresh,
    Password,
    Other,
}

impl AccountAction {
    fn label(self) -> &'static str {
        match self {
            Self::Register => "register",
            Self::Login => "login",
            Self::Refresh => "refresh",
            Self::Password => "password",
            Self::Other => "other",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RequestLabels {
    route: RouteName,
    status: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RouteLabel {
    route: RouteName,
}

/// A route's name, shared by its label sets rather than copied.
type RouteName = Arc<String>;

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct CodeLabel {
    code: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct EndpointLabel {
    endpoint: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

/// Every metric the gateway keeps, for one gateway's lifetime.
pub struct Metrics {
    registry: Registry,
    /// One entry per configured route (by `RouteConfig::index`), then the
    /// account endpoints (`auth`), then requests no route matched (`-`).
    routes: Vec<RouteMetrics>,
    auth_failures: Family<CodeLabel, Counter>,
    logins: Family<OutcomeLabel, Counter>,
    registrations: Family<OutcomeLabel, Counter>,
    refreshes: Family<OutcomeLabel, Counter>,
    reuse_detected: Counter,
    throttled: Family<EndpointLabel, Counter>,
    upstream_errors: Family<KindLabel, Counter>,
    connections: Gauge,
    accepted: Counter,
    tunnels: Gauge,
    hash_queue: Gauge,
}

/// The handles of one route, resolved at start.
struct RouteMetrics {
    name: RouteName,
    requests: Family<RequestLabels, WorkerCounter, CountersOf>,
    /// `requests` for each status, created on first use.
    statuses: Box<[OnceLock<WorkerCounter>]>,
    gateway_time: WorkerHistogram,
    upstream_time: WorkerHistogram,
}

impl RouteMetrics {
    fn count(&self, status: StatusCode) {
        let slot = usize::from(status.as_u16().saturating_sub(FIRST_STATUS));
        let Some(cell) = self.statuses.get(slot) else {
            return;
        };
        cell.get_or_init(|| {
            let labels = RequestLabels {
                route: self.name.clone(),
                status: status.as_u16(),
            };
            self.requests.get_or_create_owned(&labels)
        })
        .inc();
    }
}

impl Metrics {
    /// `workers`: the request workers, each of which counts its requests
    /// in cells of its own.
    pub fn new(routes: &[RouteConfig], workers: usize) -> Self {
        let mut registry = Registry::default();
        let requests = Family::new_with_constructor(CountersOf { workers });
        registry.register(
            "authgate_requests",
            "Requests answered, by route (`auth` for the account endpoints, `-` for none) and status",
            requests.clone(),
        );
        let histograms = HistogramsOf {
            bounds: LATENCY_BUCKETS,
            workers,
        };
        let gateway_time = Family::<RouteLabel, _, _>::new_with_constructor(histograms);
        registry.register(
            "authgate_gateway_duration_seconds",
            "Time the gateway itself spent on a request until its answer's headers, the upstream's wait excluded",
            gateway_time.clone(),
        );
        let upstream_time = Family::<RouteLabel, _, _>::new_with_constructor(histograms);
        registry.register(
            "authgate_upstream_duration_seconds",
            "Time from handing a request to the upstream until its response headers arrived",
            upstream_time.clone(),
        );
        let names = routes.iter().map(|r| r.name.as_str()).chain(["auth", "-"]);
        let routes = names
            .map(|name| {
                let name: RouteName = Arc::new(name.to_owned());
                let label = RouteLabel {
                    route: name.clone(),
                };
                RouteMetrics {
                    requests: requests.clone(),
                    statuses: (0..STATUS_SLOTS).map(|_| OnceLock::new()).collect(),
                    gateway_time: gateway_time.get_or_create_owned(&label),
                    upstream_time: upstream_time.get_or_create_owned(&label),
                    name,
                }
            })
            .collect();

        let auth_failures = Family::<CodeLabel, Counter>::default();
        registry.register(
            "authgate_auth_failures",
            "Requests refused for authentication or authorization (401, 403), by error code",
            auth_failures.clone(),
        );
        let logins = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "authgate_logins",
            "Login attempts by outcome (`success` or the error code)",
            logins.clone(),
        );
        let registrations = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "authgate_registrations",
            "Registrations by outcome (`success` or the error code)",
            registrations.clone(),
        );
        let refreshes = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "authgate_refreshes",
            "Refresh-token rotations by outcome (`success` or the error code)",
            refreshes.clone(),
        );
        let reuse_detected = Counter::default();
        registry.register(
            "authgate_refresh_reuse_detected",
            "Refresh tokens presented again after rotation; each revoked its session",
            reuse_detected.clone(),
        );
        let throttled = Family::<EndpointLabel, Counter>::default();
        registry.register(
            "authgate_throttled",
            "Requests refused with 429 by the login, registration or refresh limits, by endpoint",
            throttled.clone(),
        );
        let upstream_errors = Family::<KindLabel, Counter>::default();
        registry.register(
            "authgate_upstream_errors",
            "Failed upstream exchanges by kind (`timeout`, `connect`, `exchange`, `busy`, `no_healthy_target`, `other`)",
            upstream_errors.clone(),
        );
        let connections = Gauge::default();
        registry.register(
            "authgate_open_connections",
            "Client connections open on the public listener, TLS handshakes included",
            connections.clone(),
        );
        let accepted = Counter::default();
        registry.register(
            "authgate_connections",
            "Client connections accepted on the public listener",
            accepted.clone(),
        );
        let tunnels = Gauge::default();
        registry.register(
            "authgate_open_tunnels",
            "WebSocket tunnels open",
            tunnels.clone(),
        );
        let hash_queue = Gauge::default();
        registry.register(
            "authgate_password_hash_queue_depth",
            "Password hashing jobs waiting for an argon2 thread; at [auth.password] hash_queue, logins answer 503",
            hash_queue.clone(),
        );
        Self {
            registry,
            routes,
            auth_failures,
            logins,
            registrations,
            refreshes,
            reuse_detected,
            throttled,
            upstream_errors,
            connections,
            accepted,
            tunnels,
            hash_queue,
        }
    }

    /// Counts one answered request and its latencies. `route` is `None` for
    /// the account endpoints (`account`) and for requests no route matched;
    /// `upstream` is the upstream's share of `total`, when it was asked.
    pub fn record_request(
        &self,
        route: Option<&RouteConfig>,
        account: bool,
        status: StatusCode,
        total: Duration,
        upstream: Option<Duration>,
    ) {
        let named = self.routes.len().saturating_sub(2);
        let slot = match route {
            Some(route) => route.index.min(named),
            None if account => named,
            None => named + 1,
        };
        let Some(metrics) = self.routes.get(slot) else {
            return;
        };
        metrics.count(status);
        let upstream = upstream.unwrap_or_default();
        metrics.gateway_time.observe(total.saturating_sub(upstream));
        if !upstream.is_zero() {
            metrics.upstream_time.observe(upstream);
        }
    }

    /// Counts what a request's result says about authentication, accounts,
    /// throttling and the upstream. `action` is set for account endpoints.
    pub fn record_result<B>(
        &self,
        result: &Result<http::Response<B>, GatewayError>,
        action: Option<AccountAction>,
    ) {
        let outcome = match result {
            Ok(_) => "success",
            Err(err) => err.code(),
        };
        match action {
            Some(AccountAction::Login) => {
                self.logins.get_or_create(&OutcomeLabel { outcome }).inc()
            }
            Some(AccountAction::Register) => self
                .registrations
                .get_or_create(&OutcomeLabel { outcome })
                .inc(),
            Some(AccountAction::Refresh) => self
                .refreshes
                .get_or_create(&OutcomeLabel { outcome })
                .inc(),
            _ => 0,
        };
        let Err(err) = result else {
            return;
        };
        let status = err.status();
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            self.auth_failures
                .get_or_create(&CodeLabel { code: err.code() })
                .inc();
        }
        match err {
            GatewayError::TokenReuseDetected => {
                self.reuse_detected.inc();
            }
            GatewayError::TooManyRequests { .. } => {
                let endpoint = action.unwrap_or(AccountAction::Other).label();
                self.throttled
                    .get_or_create(&EndpointLabel { endpoint })
                    .inc();
            }
            GatewayError::UpstreamTimeout(_) => {
                self.upstream_errors
                    .get_or_create(&KindLabel { kind: "timeout" })
                    .inc();
            }
            GatewayError::UpstreamUnavailable(cause) => {
                let kind = upstream_error_kind(cause.as_ref());
                self.upstream_errors
                    .get_or_create(&KindLabel { kind })
                    .inc();
            }
            GatewayError::NoHealthyUpstream => {
                let kind = "no_healthy_target";
                self.upstream_errors
                    .get_or_create(&KindLabel { kind })
                    .inc();
            }
            GatewayError::UpstreamBusy(_) => {
                let kind = "busy";
                self.upstream_errors
                    .get_or_create(&KindLabel { kind })
                    .inc();
            }
            _ => {}
        }
    }

    /// Counts an open client connection until the guard is dropped.
    pub fn connection_opened(&self) -> GaugeGuard {
        self.accepted.inc();
        GaugeGuard::new(&self.connections)
    }

    /// Client connections open now.
    pub fn open_connections(&self) -> u64 {
        u64::try_from(self.connections.get()).unwrap_or(0)
    }

    /// Client connections accepted since the start.
    pub fn accepted_connections(&self) -> u64 {
        self.accepted.get()
    }

    /// The gauge of open WebSocket tunnels, for the proxy.
    pub fn tunnels(&self) -> &Gauge {
        &self.tunnels
    }

    /// The registry in the text exposition format (OpenMetrics 1.0), with
    /// sampled values (`hash_queue_depth`) set first.
    pub fn encode(&self, hash_queue_depth: usize) -> Result<String, std::fmt::Error> {
        self.hash_queue
            .set(i64::try_from(hash_queue_depth).unwrap_or(i64::MAX));
        let mut text = String::with_capacity(16 * 1024);
        prometheus_client::encoding::text::encode(&mut text, &self.registry)?;
        Ok(text)
    }
}

/// `connect` (refused, unreachable, TLS refused) or `exchange` (the
/// connection failed mid-request), from the upstream layer's error.
fn upstream_error_kind(cause: &(dyn std::error::Error + Send + Sync + 'static)) -> &'static str {
    match cause.downcast_ref::<UpstreamError>() {
        Some(UpstreamError::Connect { .. }) => "connect",
        Some(UpstreamError::Exchange { .. }) => "exchange",
        _ => "other",
    }
}

/// Holds a gauge one higher while it lives.
pub struct GaugeGuard(Gauge);

impl GaugeGuard {
    pub fn new(gauge: &Gauge) -> Self {
        gauge.inc();
        Self(gauge.clone())
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(text: &str, name: &str) -> Option<f64> {
        text.lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }

    #[test]
    fn a_request_counts_under_its_route_and_status() {
        let metrics = Metrics::new(&[], 2);
        for _ in 0..3 {
            metrics.record_request(None, true, StatusCode::OK, Duration::from_millis(2), None);
        }
        metrics.record_request(None, false, StatusCode::NOT_FOUND, Duration::ZERO, None);
        let text = metrics.encode(4).unwrap();
        assert_eq!(
            series(
                &text,
                "authgate_requests_total{route=\"auth\",status=\"200\"}"
            ),
            Some(3.0),
            "{text}"
        );
        assert_eq!(
            series(&text, "authgate_requests_total{route=\"-\",status=\"404\"}"),
            Some(1.0)
        );
        assert_eq!(
            series(&text, "authgate_password_hash_queue_depth"),
            Some(4.0)
        );
    }

    #[test]
    fn errors_count_by_code_outcome_and_kind() {
        let metrics = Metrics::new(&[], 2);
        let failed: Result<http::Response<()>, _> = Err(GatewayError::InvalidCredentials);
        metrics.record_result(&failed, Some(AccountAction::Login));
        let throttled: Result<http::Response<()>, _> = Err(GatewayError::TooManyRequests {
            retry_after: Duration::from_secs(1),
        });
        metrics.record_result(&throttled, Some(AccountAction::Refresh));
        let timeout: Result<http::Response<()>, _> =
            Err(GatewayError::UpstreamTimeout(Duration::from_secs(1)));
        metrics.record_result(&timeout, None);
        let text = metrics.encode(0).unwrap();
        for (name, value) in [
            (
                "authgate_logins_total{outcome=\"INVALID_CREDENTIALS\"}",
                1.0,
            ),
            (
                "authgate_auth_failures_total{code=\"INVALID_CREDENTIALS\"}",
                1.0,
            ),
            ("authgate_throttled_total{endpoint=\"refresh\"}", 1.0),
            (
                "authgate_refreshes_total{outcome=\"TOO_MANY_REQUESTS\"}",
                1.0,
            ),
            ("authgate_upstream_errors_total{kind=\"timeout\"}", 1.0),
        ] {
            assert_eq!(series(&text, name), Some(value), "{name} in {text}");
        }
    }
}
