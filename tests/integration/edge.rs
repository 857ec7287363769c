//! The gateway's edges toward its neighbours: route prefixes against every
//! spelling of a reserved character, the client-address headers upstreams
//! believe, and what a malformed body leaves in the log.

use std::time::Duration;

use serde_json::json;

use crate::accounts::FAST_HASHING;
use crate::support::gateway::{BinaryGateway, GatewayFiles};
use crate::support::{Behavior, GatewayOptions, TestGateway, Upstream};

const SHORT: Duration = Duration::from_secs(3);

fn get(target: &str) -> Vec<u8> {
    format!("GET {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").into_bytes()
}

fn get_with_token(target: &str, token: &str) -> Vec<u8> {
    format!(
        "GET {target} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    )
    .into_bytes()
}

/// A protected subtree inside a public one, each on its own upstream, so a
/// request routed to the wrong one is seen.
async fn nested_routes(protected: &Upstream, public: &Upstream) -> TestGateway {
    TestGateway::start_with(GatewayOptions::routes(format!(
        "[[route]]\nname = \"team\"\npath_prefix = \"/pub/team/\"\nupstream = \"{}\"\nroles = [\"admin\"]\n\
         [[route]]\nname = \"pub\"\npath_prefix = \"/pub/\"\nupstream = \"{}\"\nauth = \"public\"\n",
        protected.url(),
        public.url()
    )))
    .await
}

/// Every spelling of `c` inside the protected subtree, raw and encoded in
/// either case, is refused without a token and reaches neither upstream;
/// with an admin token the encoded spelling reaches the protected upstream.
async fn reserved_character_never_dodges_the_protected_prefix(c: char) {
    let protected = Upstream::start(Behavior::Ok).await;
    let public = Upstream::start(Behavior::Ok).await;
    let gw = nested_routes(&protected, &public).await;
    let client = gw.client();
    let upper = format!("%{:02X}", u32::from(c));
    let lower = upper.to_lowercase();
    let mut spellings = vec![upper.clone(), lower];
    // A raw '?' or '#' ends the path, and a raw '/' is a separator.
    if !matches!(c, '?' | '#' | '/') {
        spellings.push(c.to_string());
    }
    for spelling in &spellings {
        for target in [
            format!("/pub/team/x{spelling}y"),
            format!("/pub/team/{spelling}/x"),
            format!("/pub//team/x{spelling}"),
        ] {
            let exchange = client.raw(&get(&target), SHORT).await;
            let status = exchange.statuses().first().copied();
            assert!(
                matches!(status, Some(400 | 401)),
                "{target}: {}",
                exchange.text
            );
        }
    }
    assert!(
        protected.received().is_empty(),
        "{:#?}",
        protected.received()
    );
    assert!(public.received().is_empty(), "{:#?}", public.received());
    // The path works for its owner: encoded '/' and ';' are refused for
    // everyone (400), every other character reaches the protected upstream.
    let token = gw.token("admin-1", "admin");
    let target = format!("/pub/team/x{upper}y");
    let exchange = client.raw(&get_with_token(&target, &token), SHORT).await;
    if matches!(c, '/' | ';') {
        assert_eq!(exchange.statuses().first(), Some(&400), "{}", exchange.text);
        assert!(protected.received().is_empty());
    } else {
        assert_eq!(exchange.statuses().first(), Some(&200), "{}", exchange.text);
        assert_eq!(protected.only().target, target);
    }
    assert!(public.received().is_empty());
}

/// A prefix holding `c` is refused at load, naming file, line and key, so
/// the bypass of issue 8 item 7 (`/pub/team:admin/` dodged by
/// `/pub/team%3Aadmin/`) cannot be configured.
fn reserved_character_prefix_is_refused(c: char) {
    let files = GatewayFiles::create(&GatewayOptions::routes(format!(
        "[[route]]\nname = \"team\"\npath_prefix = \"/pub/team{c}admin/\"\nupstream = \"builtin:echo\"\n"
    )));
    let message = authgate::config::Config::load(&files.config_path)
        .unwrap_err()
        .to_string();
    let file = files.config_path.display().to_string();
    assert!(message.starts_with(&format!("{file}:")), "{message}");
    assert!(message.contains(": route[0].path_prefix: "), "{message}");
}

macro_rules! per_reserved_character {
    ($($name:ident: $c:literal,)*) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            if $c != '/' {
                reserved_character_prefix_is_refused($c);
            }
            reserved_character_never_dodges_the_protected_prefix($c).await;
        }
    )*};
}

// RFC 3986 §2.2: gen-delims, then sub-delims.
per_reserved_character! {
    reserved_colon: ':',
    reserved_slash: '/',
    reserved_question_mark: '?',
    reserved_hash: '#',
    reserved_open_bracket: '[',
    reserved_close_bracket: ']',
    reserved_at: '@',
    reserved_exclamation: '!',
    reserved_dollar: '$',
    reserved_ampersand: '&',
    reserved_apostrophe: '\'',
    reserved_open_paren: '(',
    reserved_close_paren: ')',
    reserved_asterisk: '*',
    reserved_plus: '+',
    reserved_comma: ',',
    reserved_semicolon: ';',
    reserved_equals: '=',
}

const CLIENT_ADDRESS_HEADERS: [&str; 5] = [
    "true-client-ip",
    "x-client-ip",
    "cf-connecting-ip",
    "fastly-client-ip",
    "x-cluster-client-ip",
];

async fn send_spoofed(gw: &TestGateway, http2: bool) -> u16 {
    let mut request = gw
        .client()
        .get("/x")
        .header("x-real-ip", "198.51.100.66")
        .header("x-forwarded-for", "203.0.113.5")
        .header("forwarded", "for=198.51.100.66;proto=http");
    for name in CLIENT_ADDRESS_HEADERS {
        request = request.header(name, "198.51.100.66");
    }
    if http2 {
        request = request.http2();
    }
    let response = request.send().await;
    let expected = if http2 {
        http::Version::HTTP_2
    } else {
        http::Version::HTTP_11
    };
    assert_eq!(response.version, expected);
    response.status.as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_address_headers_from_untrusted_clients_never_reach_the_upstream() {
    let upstream = Upstream::start(Behavior::Ok).await;
    let gw = TestGateway::start(&format!(
        "[[route]]\nname = \"p\"\npath_prefix = \"/\"\nupstream = \"{}\"\nauth = \"public\"\n",
        upstream.url()
    ))
    .await;
    for http2 in [false, true] {
        assert_eq!(send_spoofed(&gw, http2).await, 200);
        let seen = upstream.only();
        upstream.clear();
        let h = &seen.headers;
        assert_eq!(h["x-real-ip"], "127.0.0.1", "h2 {http2}: {h:?}");
        assert_eq!(h.get_all("x-real-ip").iter().count(), 1);
        assert_eq!(h["x-forwarded-for"], "127.0.0.1", "h2 {http2}");
        assert!(!h.contains_key("forwarded"), "h2 {http2}");
        for name in CLIENT_ADDRESS_HEADERS {
            assert!(
                !h.contains_key(name),
                "h2 {http2}: {name} reached the upstream"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_address_headers_from_trusted_proxies_are_derived_consistently() {
    let upstream = Upstream::start(Behavior::Ok).await;
    let gw = TestGateway::start_with(GatewayOptions {
        server: "trusted_proxies = [\"127.0.0.0/8\"]".to_owned(),
        routes: format!(
            "[[route]]\nname = \"p\"\npath_prefix = \"/\"\nupstream = \"{}\"\nauth = \"public\"\n",
            upstream.url()
        ),
        ..GatewayOptions::default()
    })
    .await;
    for http2 in [false, true] {
        assert_eq!(send_spoofed(&gw, http2).await, 200);
        let seen = upstream.only();
        upstream.clear();
        let h = &seen.headers;
        // X-Real-IP is what the throttle keys on: the forwarded client, not
        // the X-Real-IP the proxy passed along.
        assert_eq!(h["x-real-ip"], "203.0.113.5", "h2 {http2}: {h:?}");
        assert_eq!(h["x-forwarded-for"], "203.0.113.5, 127.0.0.1");
        assert_eq!(h["forwarded"], "for=198.51.100.66;proto=http");
        for name in CLIENT_ADDRESS_HEADERS {
            assert_eq!(h[name], "198.51.100.66", "h2 {http2}: {name}");
        }
    }
}

/// serde's messages quote the offending input; the body of a login is a
/// password. Every kind of malformed body is sent to the real binary at
/// debug level, and the marker never appears in its log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_body_never_puts_its_content_in_the_log() {
    let files = GatewayFiles::create(&GatewayOptions {
        auth: FAST_HASHING.to_owned(),
        ..GatewayOptions::default()
    });
    let gateway = BinaryGateway::start(&files, "debug");
    let client = gateway.client(&files);
    let marker = "pw-marker-Zq8vX31";
    let bodies = [
        // A bare string where an object belongs: serde quotes it whole.
        format!(r#""{marker}""#),
        // An unknown key (the requests deny them): serde quotes the key.
        format!(r#"{{"email": "a@example.com", "{marker}": "x"}}"#),
        // Syntax errors, wrong types, truncation, trailing bytes.
        format!(r#"{{"email": {marker}, "password": "x"}}"#),
        json!({"email": "a@example.com", "password": [marker]}).to_string(),
        format!(r#"{{"email": "a@example.com", "password": "{marker}"#),
        format!(r#"{{"email": "a@example.com", "password": "{marker}"}} {marker}"#),
    ];
    for endpoint in ["/auth/login", "/auth/register"] {
        for body in &bodies {
            let response = client
                .post(endpoint)
                .header("content-type", "application/json")
                .body(body.clone())
                .send()
                .await;
            assert_eq!(response.status, 400, "{endpoint} {body}");
            assert_eq!(response.code(), "MALFORMED_JSON", "{endpoint} {body}");
        }
    }
    let log = gateway.log();
    // The refusals were logged at debug, with their position.
    assert!(
        log.contains("MALFORMED_JSON") || log.contains("malformed JSON"),
        "{log}"
    );
    assert!(log.contains("line 1 column"), "{log}");
    assert!(!log.contains(marker), "the body reached the log:\n{log}");
}
