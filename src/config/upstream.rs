//! A route's upstream keys (`upstream`/`upstreams`, `balance`, `health_check`,
//! `upstream_ca`, client certificate, `upstream_protocol`,
//! `max_upstream_connections`) validated into an [`Upstream`]. The proxy
//! (`proxy/upstream/`) builds its pools and balancer from it.

use std::path::PathBuf;
use std::time::Duration;

use http::uri::{Authority, Scheme};
use http::Uri;

use super::file::RouteFile;
pub use super::file::{Balance, UpstreamProtocol};

/// Where a route sends its traffic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Upstream {
    /// The built-in echo service: answers with what it received, as JSON.
    Echo,
    /// One or more HTTP(S) targets.
    Http(UpstreamSet),
}

/// The targets of one route and how they are spoken to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamSet {
    /// In file order, never empty, no duplicates.
    pub targets: Vec<Target>,
    pub balance: Balance,
    pub health_check: Option<HealthCheck>,
    pub tls: UpstreamTls,
    pub protocol: UpstreamProtocol,
    /// Connections to each target at most; h1 requests beyond wait in a queue.
    pub max_connections: usize,
}

/// One target URL, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub scheme: Scheme,
    pub authority: Authority,
    /// Prepended to the forwarded path; empty or without a trailing slash.
    pub base_path: String,
}

impl Target {
    pub fn is_https(&self) -> bool {
        self.scheme == Scheme::HTTPS
    }
}

/// Active health checking of every target of a route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    /// Requested with GET; any 2xx or 3xx answer is healthy.
    pub path: String,
    pub interval: Duration,
    pub timeout: Duration,
}

/// TLS settings for `https://` targets. Verification is always on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpstreamTls {
    /// PEM roots to trust instead of the system roots.
    pub ca: Option<PathBuf>,
    /// PEM certificate chain and key presented to targets (mTLS).
    pub client_auth: Option<(PathBuf, PathBuf)>,
}

/// The default of `max_upstream_connections`. Under HTTP/2 load a request
/// holds its connection until its task runs again, behind every other ready
/// stream, so an uncapped pool grows to the number of streams in flight:
/// 640 streams held 200-256 connections to a 100-byte upstream, against
/// 30-60 for nginx, and cost ~20 % more CPU per request than a cap of 32 or
/// 64 with the rest queued (bench/RESULTS.md). A streamed response (SSE,
/// long poll, download) holds one for its whole life: raise it on routes
/// that serve many at once.
pub(crate) const DEFAULT_MAX_CONNECTIONS: usize = 64;

/// A problem with one upstream key: the key (as written in the route table)
/// and the message. The caller locates it.
pub(crate) type KeyError = (&'static str, String);

/// Validates the upstream keys of one route table.
pub(crate) fn build(raw: &RouteFile) -> Result<Upstream, KeyError> {
    let urls: Vec<&str> = match (&raw.upstream, &raw.upstreams) {
        (Some(_), Some(_)) => {
            return Err((
                "upstreams",
                "set either `upstream` or `upstreams`, not both".to_owned(),
            ))
        }
        (None, None) => {
            return Err((
                "upstream",
                "missing: set `upstream = \"http://...\"` or `upstreams = [...]`".to_owned(),
            ))
        }
        (Some(one), None) => vec![one.get_ref().as_str()],
        (None, Some(list)) => list
            .get_ref()
            .iter()
            .map(|u| u.get_ref().as_str())
            .collect(),
    };
    if urls == ["builtin:echo"] {
        return echo_only(raw);
    }
    if urls.is_empty() {
        return Err(("upstreams", "needs at least one URL".to_owned()));
    }
    let key = if raw.upstream.is_some() {
        "upstream"
    } else {
        "upstreams"
    };
    let mut targets: Vec<Target> = Vec::with_capacity(urls.len());
    for url in urls {
        let target = parse_target(url).map_err(|message| (key, message))?;
        if targets.contains(&target) {
            return Err((key, format!("{url:?} is listed twice")));
        }
        targets.push(target);
    }
    let any_https = targets.iter().any(Target::is_https);
    let client_auth = match (&raw.upstream_client_cert, &raw.upstream_client_key) {
        (None, None) => None,
        (Some(cert), Some(key)) => Some((cert.clone(), key.clone())),
        (Some(_), None) => {
            return Err((
                "upstream_client_key",
                "missing: upstream_client_cert needs its key".to_owned(),
            ))
        }
        (None, Some(_)) => {
            return Err((
                "upstream_client_cert",
                "missing: upstream_client_key needs its certificate".to_owned(),
            ))
        }
    };
    let tls = UpstreamTls {
        ca: raw.upstream_ca.clone(),
        client_auth,
    };
    if !any_https {
        if tls.ca.is_some() {
            return Err(("upstream_ca", HTTPS_ONLY.to_owned()));
        }
        if tls.client_auth.is_some() {
            return Err(("upstream_client_cert", HTTPS_ONLY.to_owned()));
        }
    }
    let max_connections = match &raw.max_upstream_connections {
        None => DEFAULT_MAX_CONNECTIONS,
        Some(n) if (1..=65_536).contains(n.get_ref()) => *n.get_ref(),
        Some(_) => {
            return Err((
                "max_upstream_connections",
                "must be between 1 and 65536".to_owned(),
            ))
        }
    };
    let health_check = match &raw.health_check {
        None => None,
        Some(check) => Some(health_check(check.get_ref())?),
    };
    Ok(Upstream::Http(UpstreamSet {
        targets,
        balance: raw.balance.unwrap_or_default(),
        health_check,
        tls,
        protocol: raw.upstream_protocol.unwrap_or_default(),
        max_connections,
    }))
}

const HTTPS_ONLY: &str = "only used for https:// targets, and this route has none";

/// `builtin:echo` takes none of the keys that describe real targets.
fn echo_only(raw: &RouteFile) -> Result<Upstream, KeyError> {
    let set: [(&'static str, bool); 8] = [
        ("upstreams", raw.upstreams.is_some()),
        ("balance", raw.balance.is_some()),
        ("health_check", raw.health_check.is_some()),
        ("upstream_ca", raw.upstream_ca.is_some()),
        ("upstream_client_cert", raw.upstream_client_cert.is_some()),
        ("upstream_client_key", raw.upstream_client_key.is_some()),
        ("upstream_protocol", raw.upstream_protocol.is_some()),
        (
            "max_upstream_connections",
            raw.max_upstream_connections.is_some(),
        ),
    ];
    // `upstreams = ["builtin:echo"]` is accepted like `upstream = "builtin:echo"`.
    match set.iter().skip(1).find(|(_, present)| *present) {
        Some((key, _)) => Err((key, "has no effect with \"builtin:echo\"".to_owned())),
        None => Ok(Upstream::Echo),
    }
}

fn health_check(raw: &super::file::HealthCheckFile) -> Result<HealthCheck, KeyError> {
    const KEY: &str = "health_check";
    if !raw.path.starts_with('/') || raw.path.contains(['#', '\\', ' ']) {
        return Err((
            KEY,
            format!(
                "path {:?} must be an absolute path such as \"/healthz\"",
                raw.path
            ),
        ));
    }
    let interval = raw.interval.map_or(Duration::from_secs(5), |d| d.0);
    let timeout = raw.timeout.map_or(Duration::from_secs(2), |d| d.0);
    if interval.is_zero() || timeout.is_zero() {
        return Err((KEY, "interval and timeout must be above zero".to_owned()));
    }
    Ok(HealthCheck {
        path: raw.path.clone(),
        interval,
        timeout,
    })
}

/// Parses one `http://` or `https://` target URL.
pub(crate) fn parse_target(text: &str) -> Result<Target, String> {
    if text == "builtin:echo" {
        return Err("\"builtin:echo\" cannot be combined with other targets".to_owned());
    }
    let uri: Uri = text
        .parse()
        .map_err(|_| format!("{text:?} is not a URL such as \"http://127.0.0.1:9000\""))?;
    let scheme = uri
        .scheme()
        .cloned()
        .ok_or_else(|| format!("{text:?} needs a scheme: \"http://...\" or \"https://...\""))?;
    if scheme != Scheme::HTTP && scheme != Scheme::HTTPS {
        return Err(format!(
            "{text:?}: only http:// and https:// upstreams (or \"builtin:echo\") are supported"
        ));
    }
    let authority = uri
        .authority()
        .cloned()
        .ok_or_else(|| format!("{text:?} has no host"))?;
    if authority.as_str().contains('@') {
        return Err(format!("{text:?} must not carry credentials"));
    }
    if uri.query().is_some() {
        return Err(format!("{text:?} must not have a query"));
    }
    Ok(Target {
        scheme,
        authority,
        base_path: uri.path().trim_end_matches('/').to_owned(),
    })
}
