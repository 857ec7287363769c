//! Header rewriting between client and upstream: hop-by-hop removal
//! (RFC 9110 §7.6.1), the identity scrub and injection, X-Forwarded-*, and
//! the gateway's own credentials (Authorization, its cookies) kept back.

use std::net::IpAddr;
use std::sync::Arc;

use http::header::{self, HeaderName};
use http::{HeaderMap, HeaderValue};

use crate::auth::sessions::cookies::GATEWAY_COOKIES;
use crate::auth::Identity;

/// Connection-specific headers a proxy must not forward (RFC 9110 §7.6.1,
/// plus the non-standard `Proxy-Connection` and the proxy credentials).
/// The name lists are `static`, not `const`: a `const` array is built anew,
/// and dropped, wherever it is used, here once per header of every request.
/// `Trailer` is end-to-end (RFC 9110 §6.6.2): it is kept so declared trailer
/// fields reach the upstream, after the identity scrub of the body.
static HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRANSFER_ENCODING,
];

/// Headers some backends use to re-route a request after the gateway decided
/// where it goes; a client must never be able to send them.
static REROUTING: [HeaderName; 5] = [
    HeaderName::from_static("x-original-url"),
    HeaderName::from_static("x-rewrite-url"),
    HeaderName::from_static("x-forwarded-prefix"),
    HeaderName::from_static("x-forwarded-uri"),
    HeaderName::from_static("x-http-method-override"),
];

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const FORWARDED: HeaderName = header::FORWARDED;
/// The single-address client header many backends (nginx `real_ip`, PHP,
/// Rails) believe without asking who set it: always the gateway's own answer.
static X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");

/// Other single-address client headers, set by particular CDNs and load
/// balancers. Believed only from trusted proxies; from anyone else dropped,
/// since a backend reading one would take a client's word for its address.
static CLIENT_ADDRESS: [HeaderName; 5] = [
    HeaderName::from_static("true-client-ip"),
    HeaderName::from_static("x-client-ip"),
    HeaderName::from_static("cf-connecting-ip"),
    HeaderName::from_static("fastly-client-ip"),
    HeaderName::from_static("x-cluster-client-ip"),
];

/// Removes every header in the identity namespace, however it is spelled.
#[derive(Clone)]
pub struct IdentityScrubber {
    /// Lower-case, `-`-separated (`x-user-`).
    prefix: Arc<str>,
}

impl IdentityScrubber {
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: Arc::from(prefix),
        }
    }

    /// True for names that some server would read as an identity header:
    /// `X-User-Id`, `x_user_id`, `X.User.Role`, ...
    pub fn is_identity(&self, name: &HeaderName) -> bool {
        let name = name.as_str().as_bytes();
        let prefix = self.prefix.as_bytes();
        name.len() >= prefix.len()
            && name.iter().zip(prefix).all(|(&n, &p)| {
                // Header names are already lower-case in `http`.
                let n = if n == b'_' || n == b'.' { b'-' } else { n };
                n == p
            })
    }

    pub fn scrub(&self, headers: &mut HeaderMap) {
        remove_where(headers, |name| self.is_identity(name));
    }

    /// Trailers cannot carry identity either (an HTTP/1 chunked trailer
    /// merged into headers by a backend would otherwise smuggle one).
    pub fn scrub_trailers(&self, trailers: &mut HeaderMap) {
        self.scrub(trailers);
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }
}

/// The names of the injected identity headers, built once from the prefix.
#[derive(Clone)]
pub struct IdentityHeaders {
    pub user_id: HeaderName,
    pub role: HeaderName,
    /// The signed identity assertion (`<prefix>assertion`) on routes that ask for it.
    pub assertion: HeaderName,
    /// The API key a request came with (`<prefix>key-id`).
    pub key_id: HeaderName,
}

impl IdentityHeaders {
    pub fn new(prefix: &str) -> Result<Self, http::header::InvalidHeaderName> {
        Ok(Self {
            user_id: HeaderName::from_bytes(format!("{prefix}id").as_bytes())?,
            role: HeaderName::from_bytes(format!("{prefix}role").as_bytes())?,
            assertion: HeaderName::from_bytes(format!("{prefix}assertion").as_bytes())?,
            key_id: HeaderName::from_bytes(format!("{prefix}key-id").as_bytes())?,
        })
    }
}

/// Everything `prepare_request_headers` needs to know about the client side.
pub struct ClientSide<'a> {
    pub peer: IpAddr,
    /// `peer` written out as a header value (once per connection).
    pub peer_header: &'a HeaderValue,
    pub peer_trusted: bool,
    /// The client behind any trusted proxies ([`super::client_addr`]); the peer otherwise.
    pub client: IpAddr,
    /// The host the client asked for, as it sent it.
    pub host: Option<HeaderValue>,
}

/// Options of the route the request matched.
pub struct RouteHeaderPolicy {
    pub forward_authorization: bool,
}

/// Rewrites a client's request headers into what the upstream receives.
/// `Host` is left for the upstream group, which overwrites it with the
/// target's (`UpstreamGroup::aim`): one write where a removal here and an
/// insertion there cost two.
pub fn prepare_request_headers(
    headers: &mut HeaderMap,
    client: &ClientSide<'_>,
    identity: Option<&Identity>,
    policy: &RouteHeaderPolicy,
    scrubber: &IdentityScrubber,
    names: &IdentityHeaders,
) {
    remove_connection_named(headers);
    // One pass over the few headers a request has, rather than a removal
    // (a hash and a probe) for each of the ~25 names that may not pass.
    remove_where(headers, |name| {
        HOP_BY_HOP.contains(name)
            || name == header::UPGRADE
            || REROUTING.contains(name)
            || (!policy.forward_authorization && name == header::AUTHORIZATION)
            || (!client.peer_trusted && is_client_claim(name))
            || scrubber.is_identity(name)
    });
    remove_gateway_cookies(headers);
    set_forwarded(headers, client);
    if let Some(identity) = identity {
        // Header values by construction: authentication refuses a token
        // whose user id or role is not one.
        let user_id = identity.user_id.header_value().clone();
        headers.insert(names.user_id.clone(), user_id);
        headers.insert(names.role.clone(), identity.role.header_value().clone());
        // Any client copy went with the scrub above: only the gateway's stays.
        if let Some(assertion) = &identity.assertion {
            headers.insert(names.assertion.clone(), assertion.clone());
        }
        // Likewise: a client's own key-id header went with the scrub.
        if let Some(key_id) = &identity.key_id {
            headers.insert(names.key_id.clone(), key_id.clone());
        }
    }
}

/// Removes the fixed hop-by-hop headers and every header the `Connection`
/// header names (RFC 9110 §7.6.1). Runs before identity injection, so a
/// client naming `X-User-Id` in `Connection` removes only its own copy.
pub fn remove_hop_by_hop(headers: &mut HeaderMap) {
    remove_connection_named(headers);
    remove_where(headers, |name| HOP_BY_HOP.contains(name));
}

/// Removes the headers the `Connection` header names. Only names that are
/// present and not hop-by-hop anyway are collected, so the usual
/// `Connection: keep-alive` or `close` costs no allocation.
fn remove_connection_named(headers: &mut HeaderMap) {
    // What nearly every upstream answers, told by its bytes alone: walking
    // the list (text check, split, trim) cost ~500 instructions a response.
    let mut fields = headers.get_all(header::CONNECTION).iter();
    match (fields.next(), fields.next()) {
        (None, _) => return,
        (Some(only), None) if only.as_bytes().eq_ignore_ascii_case(b"keep-alive") => return,
        _ => {}
    }
    let named: Vec<HeaderName> = list_items(headers, header::CONNECTION, ',')
        // What nearly every upstream answers with names a hop-by-hop header,
        // removed anyway: told by its text, before a lookup in the map
        // (which lowercases and hashes the name).
        .filter(|name| !name.eq_ignore_ascii_case("keep-alive"))
        .filter(|name| headers.contains_key(*name))
        .filter_map(|name| HeaderName::from_bytes(name.as_bytes()).ok())
        .filter(|name| !HOP_BY_HOP.contains(name))
        .collect();
    for name in named {
        headers.remove(&name);
    }
}

/// The items of a list-valued header over all its fields (`Connection` by
/// `,`, `Cookie` by `;`), trimmed; a field that is not text contributes none.
fn list_items(
    headers: &HeaderMap,
    name: HeaderName,
    separator: char,
) -> impl Iterator<Item = &str> {
    headers
        .get_all(name)
        .into_iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(move |v| v.split(separator))
        .map(str::trim)
}

/// Removes every header whose name `doomed` picks, all its values, without
/// allocating: each round finds the next such name among the ones left.
fn remove_where(headers: &mut HeaderMap, doomed: impl Fn(&HeaderName) -> bool) {
    while let Some(name) = headers.keys().find(|name| doomed(name)).cloned() {
        headers.remove(&name);
    }
}

/// The client-address claims only a trusted proxy may make: `Forwarded`,
/// `X-Forwarded-Host` and the CDN headers. (`X-Forwarded-For`,
/// `X-Forwarded-Proto` and `X-Real-IP` are always set by the gateway.)
fn is_client_claim(name: &HeaderName) -> bool {
    *name == FORWARDED || *name == X_FORWARDED_HOST || CLIENT_ADDRESS.contains(name)
}

/// X-Forwarded-*, Forwarded (RFC 7239) and the client-address headers are
/// believed only from trusted proxies; from anyone else they are replaced
/// with what the gateway saw or dropped (the caller removed them,
/// [`is_client_claim`]). `X-Real-IP` is always the client address the
/// gateway itself decided on, the one its throttle keys on.
fn set_forwarded(headers: &mut HeaderMap, client: &ClientSide<'_>) {
    // Usually the client is the peer, whose address is written out already.
    let real_ip = if client.client == client.peer {
        Some(client.peer_header.clone())
    } else {
        HeaderValue::try_from(client.client.to_string()).ok()
    };
    if let Some(value) = real_ip {
        headers.insert(&X_REAL_IP, value);
    }
    if client.peer_trusted {
        let mut chain = headers
            .get_all(&X_FORWARDED_FOR)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect::<Vec<_>>();
        let peer = client.peer_header.to_str().unwrap_or_default();
        chain.push(peer);
        if let Ok(value) = HeaderValue::try_from(chain.join(", ")) {
            headers.insert(&X_FORWARDED_FOR, value);
        }
        if !headers.contains_key(&X_FORWARDED_PROTO) {
            headers.insert(&X_FORWARDED_PROTO, HeaderValue::from_static("https"));
        }
        if !headers.contains_key(&X_FORWARDED_HOST) {
            insert_host(headers, client.host.as_ref());
        }
        return;
    }
    headers.insert(&X_FORWARDED_FOR, client.peer_header.clone());
    headers.insert(&X_FORWARDED_PROTO, HeaderValue::from_static("https"));
    insert_host(headers, client.host.as_ref());
}

fn insert_host(headers: &mut HeaderMap, host: Option<&HeaderValue>) {
    if let Some(value) = host {
        headers.insert(&X_FORWARDED_HOST, value.clone());
    }
}

/// Drops the gateway's own cookies from `Cookie`, keeping the rest.
fn remove_gateway_cookies(headers: &mut HeaderMap) {
    if !headers.contains_key(header::COOKIE) {
        return;
    }
    let kept: Vec<String> = list_items(headers, header::COOKIE, ';')
        .filter(|pair| {
            let name = pair.split('=').next().unwrap_or_default().trim();
            !pair.is_empty() && !GATEWAY_COOKIES.contains(&name)
        })
        .map(str::to_owned)
        .collect();
    headers.remove(header::COOKIE);
    if !kept.is_empty() {
        if let Ok(value) = HeaderValue::from_str(&kept.join("; ")) {
            headers.insert(header::COOKIE, value);
        }
    }
}

/// Cleans an upstream's response headers: hop-by-hop removed, and any
/// `Set-Cookie` that would overwrite the gateway's own cookies dropped.
pub fn prepare_response_headers(headers: &mut HeaderMap) {
    remove_hop_by_hop(headers);
    if !headers.contains_key(header::SET_COOKIE) {
        return;
    }
    let kept: Vec<HeaderValue> = headers
        .get_all(header::SET_COOKIE)
        .iter()
        .filter(|v| !sets_gateway_cookie(v.as_bytes()))
        .cloned()
        .collect();
    headers.remove(header::SET_COOKIE);
    for value in kept {
        headers.append(header::SET_COOKIE, value);
    }
}

fn sets_gateway_cookie(set_cookie: &[u8]) -> bool {
    let name_end = set_cookie
        .iter()
        .position(|&b| b == b'=')
        .unwrap_or(set_cookie.len());
    let name = set_cookie.get(..name_end).unwrap_or_default();
    let name = String::from_utf8_lossy(name);
    let name = name.trim();
    // Cookie names are case-sensitive, but browsers' prefix checks are not
    // everywhere; refuse any spelling of ours.
    GATEWAY_COOKIES
        .iter()
        .any(|ours| name.eq_ignore_ascii_case(ours))
}

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;
