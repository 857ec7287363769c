//! Picks the route for a request: routes naming the request's host first,
//! then routes for any host; within each, the longest matching path prefix.
//! Pure: it sees a normalized host and a decided path, nothing else.

use std::borrow::Cow;
use std::sync::Arc;

use crate::config::RouteConfig;

/// Routes ordered for matching.
pub struct Router {
    /// Host-specific routes, longest prefix first.
    with_host: Vec<Arc<RouteConfig>>,
    /// Routes for any host, longest prefix first.
    any_host: Vec<Arc<RouteConfig>>,
}

impl Router {
    pub fn new(routes: &[RouteConfig]) -> Self {
        let mut with_host = Vec::new();
        let mut any_host = Vec::new();
        for route in routes {
            let list = if route.host.is_some() {
                &mut with_host
            } else {
                &mut any_host
            };
            list.push(Arc::new(route.clone()));
        }
        // Stable sort keeps file order among equal prefixes.
        with_host.sort_by_key(|r| std::cmp::Reverse(r.path_prefix.len()));
        any_host.sort_by_key(|r| std::cmp::Reverse(r.path_prefix.len()));
        Self {
            with_host,
            any_host,
        }
    }

    /// The route for `host` (normalized: lower-case, no port, no trailing dot)
    /// and `path` (decided). A host no route names falls to the any-host routes.
    pub fn route(&self, host: Option<&str>, path: &str) -> Option<&Arc<RouteConfig>> {
        if let Some(host) = host {
            let found = self
                .with_host
                .iter()
                .find(|r| r.host.as_deref() == Some(host) && prefix_matches(&r.path_prefix, path));
            if found.is_some() {
                return found;
            }
        }
        self.any_host
            .iter()
            .find(|r| prefix_matches(&r.path_prefix, path))
    }
}

/// Segment-aware prefix match: "/admin" and "/admin/" both cover "/admin" and
/// "/admin/x" but never "/adminx".
pub fn prefix_matches(prefix: &str, path: &str) -> bool {
    if prefix == "/" {
        return true;
    }
    let bare = prefix.trim_end_matches('/');
    match path.strip_prefix(bare) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

/// The host a request is for, normalized, from the HTTP/2 `:authority` or
/// the single HTTP/1 `Host` header; `Err` when they disagree or repeat.
pub fn request_host<'a>(
    authority: Option<&'a str>,
    host_headers: &mut dyn Iterator<Item = &'a str>,
) -> Result<Option<Cow<'a, str>>, &'static str> {
    let first = host_headers.next();
    if host_headers.next().is_some() {
        return Err("more than one Host header");
    }
    let chosen = match (authority, first) {
        (Some(a), Some(h)) if !host_eq(a, h) => {
            return Err("Host header disagrees with :authority")
        }
        (Some(a), _) => Some(a),
        (None, h) => h,
    };
    Ok(chosen.map(|h| crate::config::normalize_host(strip_port(h))))
}

fn host_eq(a: &str, b: &str) -> bool {
    crate::config::normalize_host(strip_port(a)) == crate::config::normalize_host(strip_port(b))
}

/// "example.com:8443" → "example.com"; "[::1]:8443" → "[::1]".
fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return match host.find(']') {
            Some(end) => host.get(..=end).unwrap_or(host),
            None => host,
        };
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    }
}

#[cfg(test)]
mod tests;
