use super::*;
use crate::account::{Role, UserId};

fn map(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (name, value) in pairs {
        headers.append(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    headers
}

fn identity() -> Identity {
    Identity {
        user_id: UserId::parse("u-1").unwrap(),
        role: Role::parse("editor").unwrap(),
        session: None,
        version: 0,
        expires_at: 0,
        assertion: None,
        key_id: None,
    }
}

fn prepare(headers: &mut HeaderMap, trusted: bool, forward_authorization: bool) {
    let scrubber = IdentityScrubber::new("x-user-");
    let names = IdentityHeaders::new("x-user-").unwrap();
    let client = ClientSide {
        peer: "192.0.2.7".parse().unwrap(),
        peer_header: &HeaderValue::from_static("192.0.2.7"),
        peer_trusted: trusted,
        client: "192.0.2.7".parse().unwrap(),
        host: Some(HeaderValue::from_static("gw.example")),
    };
    prepare_request_headers(
        headers,
        &client,
        Some(&identity()),
        &RouteHeaderPolicy {
            forward_authorization,
        },
        &scrubber,
        &names,
    );
}

#[test]
fn identity_spellings_are_scrubbed_then_injected() {
    let mut headers = map(&[
        ("x-user-id", "evil"),
        ("X_User_Id", "evil"),
        ("x.user.role", "admin"),
        ("x-user-anything", "evil"),
        ("x-userid", "kept"),
        ("connection", "x-user-id, x-user-role, keep-alive"),
    ]);
    prepare(&mut headers, false, false);
    assert_eq!(
        headers.get_all("x-user-id").iter().collect::<Vec<_>>(),
        ["u-1"]
    );
    assert_eq!(
        headers.get_all("x-user-role").iter().collect::<Vec<_>>(),
        ["editor"]
    );
    assert!(headers.get("x_user_id").is_none());
    assert!(headers.get("x.user.role").is_none());
    assert!(headers.get("x-user-anything").is_none());
    assert_eq!(headers.get("x-userid").unwrap(), "kept");
    assert!(headers.get("connection").is_none());
}

#[test]
fn hop_by_hop_and_connection_named_headers_are_removed() {
    let mut headers = map(&[
        ("connection", "close, x-custom"),
        ("x-custom", "1"),
        ("keep-alive", "timeout=5"),
        ("te", "trailers"),
        ("proxy-authorization", "Basic x"),
        ("upgrade", "h2c"),
        ("x-other", "2"),
    ]);
    prepare(&mut headers, false, false);
    for gone in [
        "connection",
        "x-custom",
        "keep-alive",
        "te",
        "proxy-authorization",
        "upgrade",
    ] {
        assert!(headers.get(gone).is_none(), "{gone}");
    }
    assert_eq!(headers.get("x-other").unwrap(), "2");
}

#[test]
fn credentials_and_rerouting_headers_are_kept_back() {
    let mut headers = map(&[
        ("authorization", "Bearer t"),
        (
            "cookie",
            "a=1; __Secure-authgate_refresh=r; authgate_csrf=c; b=2",
        ),
        ("x-original-url", "/admin"),
        ("x-rewrite-url", "/admin"),
    ]);
    prepare(&mut headers, false, false);
    assert!(headers.get("authorization").is_none());
    assert_eq!(headers.get("cookie").unwrap(), "a=1; b=2");
    assert!(headers.get("x-original-url").is_none());
    assert!(headers.get("x-rewrite-url").is_none());

    let mut opted_in = map(&[("authorization", "Bearer t")]);
    prepare(&mut opted_in, false, true);
    assert_eq!(opted_in.get("authorization").unwrap(), "Bearer t");
}

#[test]
fn forwarded_headers_depend_on_trust() {
    let client_sent = [
        ("x-forwarded-for", "203.0.113.9"),
        ("x-forwarded-proto", "http"),
        ("x-forwarded-host", "spoofed.example"),
        ("forwarded", "for=203.0.113.9"),
        ("x-real-ip", "203.0.113.9"),
        ("true-client-ip", "203.0.113.9"),
        ("x-client-ip", "203.0.113.9"),
        ("cf-connecting-ip", "203.0.113.9"),
    ];
    let mut untrusted = map(&client_sent);
    prepare(&mut untrusted, false, false);
    assert_eq!(untrusted.get("x-forwarded-for").unwrap(), "192.0.2.7");
    assert_eq!(untrusted.get("x-forwarded-proto").unwrap(), "https");
    assert_eq!(untrusted.get("x-forwarded-host").unwrap(), "gw.example");
    assert!(untrusted.get("forwarded").is_none());
    // X-Real-IP is the client address the gateway decided on; the others
    // are a client's word and are dropped.
    assert_eq!(untrusted.get_all("x-real-ip").iter().count(), 1);
    assert_eq!(untrusted.get("x-real-ip").unwrap(), "192.0.2.7");
    for name in ["true-client-ip", "x-client-ip", "cf-connecting-ip"] {
        assert!(untrusted.get(name).is_none(), "{name}");
    }

    let mut trusted = map(&client_sent);
    prepare(&mut trusted, true, false);
    assert_eq!(
        trusted.get("x-forwarded-for").unwrap(),
        "203.0.113.9, 192.0.2.7"
    );
    assert_eq!(trusted.get("x-forwarded-proto").unwrap(), "http");
    assert_eq!(trusted.get("x-forwarded-host").unwrap(), "spoofed.example");
    // The client the caller derived (here the peer itself), never the header.
    assert_eq!(trusted.get("x-real-ip").unwrap(), "192.0.2.7");
    assert_eq!(trusted.get("true-client-ip").unwrap(), "203.0.113.9");
}

#[test]
fn upstream_cannot_set_gateway_cookies() {
    let mut headers = map(&[
        ("set-cookie", "__Secure-authgate_refresh=x; Path=/"),
        ("set-cookie", "AUTHGATE_CSRF=y"),
        ("set-cookie", "app=1; Path=/"),
        ("connection", "x-internal"),
        ("x-internal", "1"),
    ]);
    prepare_response_headers(&mut headers);
    let cookies: Vec<_> = headers.get_all("set-cookie").iter().collect();
    assert_eq!(cookies, ["app=1; Path=/"]);
    assert!(headers.get("x-internal").is_none());
}
