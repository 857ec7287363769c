//! Fuzzes the request- and response-header rewriting in
//! `authgate::proxy::headers` and checks what an upstream (or client) would
//! receive: one injected identity, nothing client-spelled in its namespace,
//! no credentials or hop-by-hop headers, no re-routing headers.
//!
//! Input: the first byte holds flags (bit 0 peer trusted, bit 1 route forwards
//! Authorization, bit 2 a Host is known); the rest is `name: value` lines.
//! Lines whose name or value `http` refuses are skipped.

#![no_main]

use std::net::{IpAddr, Ipv4Addr};

use authgate::account::{Role, UserId};
use authgate::auth::sessions::cookies::{CSRF_COOKIE, REFRESH_COOKIE};
use authgate::auth::Identity;
use authgate::proxy::headers::{
    prepare_request_headers, prepare_response_headers, ClientSide, IdentityHeaders,
    IdentityScrubber, RouteHeaderPolicy,
};
use http::header::{self, HeaderName};
use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;

const PREFIX: &str = "x-user-";
const USER_ID: &str = "fuzz-user-7";
const ROLE: &str = "fuzz-role";
const PEER: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7));
/// `PEER` as the gateway writes it out once per connection.
const PEER_HEADER: &str = "192.0.2.7";
const HOST: &str = "gw.example";

/// Names that must never leave the gateway towards an upstream.
const NEVER_FORWARDED: [&str; 14] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "transfer-encoding",
    "upgrade",
    "host",
    "x-original-url",
    "x-rewrite-url",
    "x-forwarded-prefix",
    "x-forwarded-uri",
    "x-http-method-override",
];

/// Headers the gateway itself sets after honouring `Connection`.
const GATEWAY_SET: [&str; 6] = [
    "x-real-ip",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-user-id",
    "x-user-role",
];

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let peer_trusted = flags & 1 != 0;
    let forward_authorization = flags & 2 != 0;
    let host = (flags & 4 != 0).then_some(HOST);
    let original = parse_headers(rest);

    let mut request = original.clone();
    let (Ok(user_id), Ok(role)) = (UserId::parse(USER_ID), Role::parse(ROLE)) else {
        panic!("fixed identity refused");
    };
    let identity = Identity {
        user_id,
        role,
        session: None,
        version: 0,
        expires_at: 0,
        assertion: None,
        key_id: None,
    };
    let names = match IdentityHeaders::new(PREFIX) {
        Ok(names) => names,
        Err(err) => panic!("default prefix refused: {err}"),
    };
    prepare_request_headers(
        &mut request,
        &ClientSide {
            peer: PEER,
            peer_header: &HeaderValue::from_static(PEER_HEADER),
            peer_trusted,
            client: PEER,
            host: host.map(HeaderValue::from_static),
        },
        Some(&identity),
        &RouteHeaderPolicy {
            forward_authorization,
        },
        &IdentityScrubber::new(PREFIX),
        &names,
    );
    check_request(
        &original,
        &request,
        peer_trusted,
        forward_authorization,
        host,
    );

    let mut response = original.clone();
    prepare_response_headers(&mut response);
    check_response(&response);
});

fn parse_headers(bytes: &[u8]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for line in bytes.split(|&b| b == b'\n') {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (name, value) = line.split_at(colon);
        let value = value.get(1..).unwrap_or_default();
        let value = value.strip_prefix(b" ").unwrap_or(value);
        if let (Ok(name), Ok(value)) =
            (HeaderName::from_bytes(name), HeaderValue::from_bytes(value))
        {
            map.append(name, value);
        }
    }
    map
}

fn check_request(
    original: &HeaderMap,
    out: &HeaderMap,
    peer_trusted: bool,
    forward_authorization: bool,
    host: Option<&str>,
) {
    let ids: Vec<_> = out.get_all("x-user-id").iter().collect();
    assert_eq!(ids, [USER_ID], "x-user-id: {ids:?}");
    let roles: Vec<_> = out.get_all("x-user-role").iter().collect();
    assert_eq!(roles, [ROLE], "x-user-role: {roles:?}");
    for name in out.keys() {
        let folded = identity_fold(name.as_str());
        assert!(
            !folded.starts_with(PREFIX) || name == "x-user-id" || name == "x-user-role",
            "client identity header survived: {name}"
        );
    }
    if !forward_authorization {
        assert!(
            !out.contains_key(header::AUTHORIZATION),
            "Authorization forwarded"
        );
    }
    for name in NEVER_FORWARDED {
        assert!(!out.contains_key(name), "{name} forwarded");
    }
    // RFC 9110 §7.6.1: what the client's Connection names is not forwarded,
    // except headers the gateway sets afterwards with its own values.
    for listed in original
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
    {
        if !GATEWAY_SET.contains(&listed.as_str()) {
            assert!(
                !out.contains_key(&listed),
                "{listed} named in Connection but forwarded"
            );
        }
    }
    for cookie in out
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
    {
        let name = cookie.split('=').next().unwrap_or_default().trim();
        assert!(
            name != REFRESH_COOKIE && name != CSRF_COOKIE,
            "gateway cookie forwarded: {cookie:?}"
        );
    }
    if !peer_trusted {
        let xff: Vec<_> = out.get_all("x-forwarded-for").iter().collect();
        assert_eq!(xff, [PEER.to_string().as_str()], "x-forwarded-for: {xff:?}");
        let proto: Vec<_> = out.get_all("x-forwarded-proto").iter().collect();
        assert_eq!(proto, ["https"], "x-forwarded-proto: {proto:?}");
        let xfh: Vec<_> = out.get_all("x-forwarded-host").iter().collect();
        assert_eq!(
            xfh,
            host.into_iter().collect::<Vec<_>>(),
            "x-forwarded-host"
        );
        assert!(!out.contains_key(header::FORWARDED), "Forwarded kept");
        for name in [
            "true-client-ip",
            "x-client-ip",
            "cf-connecting-ip",
            "fastly-client-ip",
            "x-cluster-client-ip",
        ] {
            assert!(
                !out.contains_key(name),
                "{name} kept from an untrusted peer"
            );
        }
    }
    // The one client address, trusted peer or not (`client` is PEER here).
    let real: Vec<_> = out.get_all("x-real-ip").iter().collect();
    assert_eq!(real, [PEER.to_string().as_str()], "x-real-ip: {real:?}");
}

fn check_response(out: &HeaderMap) {
    for name in ["connection", "keep-alive", "transfer-encoding", "te"] {
        assert!(!out.contains_key(name), "{name} in response");
    }
    for set_cookie in out.get_all(header::SET_COOKIE) {
        let bytes = set_cookie.as_bytes();
        let end = bytes.iter().position(|&b| b == b'=').unwrap_or(bytes.len());
        let name = String::from_utf8_lossy(bytes.get(..end).unwrap_or_default());
        let name = name.trim();
        assert!(
            !name.eq_ignore_ascii_case(REFRESH_COOKIE) && !name.eq_ignore_ascii_case(CSRF_COOKIE),
            "upstream overwrote a gateway cookie: {set_cookie:?}"
        );
    }
}

/// Lower-case, with `_` and `.` read as `-`: how the issue defines the namespace.
fn identity_fold(name: &str) -> String {
    name.chars()
        .map(|c| match c {
            '_' | '.' => '-',
            c => c.to_ascii_lowercase(),
        })
        .collect()
}
