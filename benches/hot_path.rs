//! Criterion micro-benchmarks of the work authgate does on every proxied
//! request: token verification (valid and forged), the revocation lookup,
//! path decision + route match, the request-header rewrite, and counting
//! the request in the metrics.
//!
//! CI only builds these (`cargo bench --no-run`); run them by hand with
//! `cargo bench --bench hot_path`. Absolute times measure the machine; compare
//! runs of the same machine, or `valid` against `forged` within one run.

// Benchmark fixtures are test code: a broken fixture should stop the run loudly.
#![allow(clippy::panic)]

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use http::header::{HeaderName, HeaderValue};
use http::HeaderMap;

use authgate::account::{Role, UserId};
use authgate::auth::claims::TokenError;
use authgate::auth::jwt::{TokenIssuer, TokenVerifier};
use authgate::auth::revocation::RevocationList;
use authgate::auth::{AuthError, Authenticator, Identity};
use authgate::config::secret::AccessSecret;
use authgate::config::Config;
use authgate::observe::metrics::Metrics;
use authgate::path;
use authgate::proxy::headers::{
    prepare_request_headers, ClientSide, IdentityHeaders, IdentityScrubber, RouteHeaderPolicy,
};
use authgate::router::Router;

/// A gateway config shaped like a real deployment: a dozen routes, some
/// host-specific, so route matching walks more than one entry.
const CONFIG: &str = r#"
[server]
listen = "127.0.0.1:8443"
tls_cert = "unused.pem"
tls_key = "unused-key.pem"
access_log = false

[tokens]
issuer = "authgate"
audience = "authgate"
access_ttl = "15m"
leeway = "30s"

[[route]]
name = "admin"
path_prefix = "/admin/"
host = "admin.example.com"
upstream = "http://127.0.0.1:9001"
roles = ["admin"]

[[route]]
name = "admin-api"
path_prefix = "/api/"
host = "admin.example.com"
upstream = "http://127.0.0.1:9001"

[[route]]
name = "api-v1-users"
path_prefix = "/api/v1/users/"
upstream = "http://127.0.0.1:9002"

[[route]]
name = "api-v1-orders"
path_prefix = "/api/v1/orders/"
upstream = "http://127.0.0.1:9003"

[[route]]
name = "api-v1"
path_prefix = "/api/v1/"
upstream = "http://127.0.0.1:9004"

[[route]]
name = "api-v2"
path_prefix = "/api/v2/"
upstream = "http://127.0.0.1:9005"

[[route]]
name = "reports"
path_prefix = "/reports/"
upstream = "http://127.0.0.1:9006"

[[route]]
name = "uploads"
path_prefix = "/uploads/"
upstream = "http://127.0.0.1:9007"

[[route]]
name = "static"
path_prefix = "/static/"
upstream = "http://127.0.0.1:9008"
auth = "public"

[[route]]
name = "health"
path_prefix = "/healthz"
upstream = "http://127.0.0.1:9009"
auth = "public"

[[route]]
name = "root"
path_prefix = "/"
upstream = "http://127.0.0.1:9010"
"#;

const SECRET: &[u8] = b"bench-secret-bench-secret-bench-secret-0123456789";
const OTHER_SECRET: &[u8] = b"not-the-gateway-secret-not-the-gateway-secret-xyz";
const USERS: usize = 10_000;

fn config() -> Config {
    match Config::parse(Path::new("bench.toml"), CONFIG) {
        Ok(config) => config,
        Err(err) => panic!("bench config does not parse: {err}"),
    }
}

fn secret(bytes: &[u8]) -> AccessSecret {
    match AccessSecret::from_bytes(bytes.to_vec()) {
        Ok(secret) => secret,
        Err(err) => panic!("bench secret refused: {err}"),
    }
}

fn mint(config: &Config, key: &[u8], sub: &str, session: Option<&str>) -> String {
    let issuer = TokenIssuer::new(&config.tokens, &secret(key));
    match issuer.mint(sub, "editor", 3, session, SystemTime::now()) {
        Ok(minted) => minted.token,
        Err(err) => panic!("cannot mint a bench token: {err}"),
    }
}

/// A revocation list as a busy gateway holds it: every user has bumped their
/// token version once, and as many sessions were logged out early.
fn loaded_revocations() -> RevocationList {
    let list = RevocationList::default();
    for i in 0..USERS {
        list.set_min_version(&format!("user-{i:05}"), 2);
        list.revoke_session(&format!("session-{i:05}"), u64::MAX);
    }
    list
}

fn tokens(c: &mut Criterion) {
    let config = config();
    let verifier = TokenVerifier::new(&config.tokens, &secret(SECRET));
    let valid = mint(&config, SECRET, "user-04242", Some("live-session"));
    let forged = mint(&config, OTHER_SECRET, "user-04242", Some("live-session"));
    // A valid token with its payload swapped for another user's: the
    // signature no longer matches, the classic tampering attempt.
    let tampered = {
        let other = mint(&config, SECRET, "user-00001", Some("live-session"));
        let mut parts: Vec<&str> = valid.split('.').collect();
        let other_parts: Vec<&str> = other.split('.').collect();
        if let (Some(slot), Some(payload)) = (parts.get_mut(1), other_parts.get(1)) {
            *slot = payload;
        }
        parts.join(".")
    };
    let garbage = "not-a-jwt-at-all.just-noise.really";
    let now = SystemTime::now();
    assert!(verifier.verify(&valid, now).is_ok(), "valid token refused");
    // Refused for the reason each case is meant to measure, so the numbers
    // below are those of the signature check, not of an earlier refusal.
    assert_eq!(
        verifier.verify(&forged, now).err(),
        Some(TokenError::BadSignature),
        "forged token"
    );
    assert_eq!(
        verifier.verify(&tampered, now).err(),
        Some(TokenError::BadSignature),
        "tampered token"
    );

    let mut group = c.benchmark_group("verify");
    // A valid token's signature is verified once, then served from the
    // verified-token cache: "valid" measures that cached path (digest, map
    // lookup, time checks); the refused ones below verify every time.
    group.bench_function("valid", |b| {
        b.iter(|| verifier.verify(black_box(&valid), black_box(now)))
    });
    group.bench_function("forged_key", |b| {
        b.iter(|| verifier.verify(black_box(&forged), black_box(now)))
    });
    group.bench_function("tampered_payload", |b| {
        b.iter(|| verifier.verify(black_box(&tampered), black_box(now)))
    });
    group.bench_function("garbage", |b| {
        b.iter(|| verifier.verify(black_box(garbage), black_box(now)))
    });
    group.finish();

    // The whole per-request auth step: bearer parse, verify, revocation.
    let authenticator = Authenticator::new(
        TokenVerifier::new(&config.tokens, &secret(SECRET)),
        Arc::new(loaded_revocations()),
    );
    let with = |token: &str| {
        let mut headers = HeaderMap::new();
        if let Ok(value) = HeaderValue::from_str(&format!("Bearer {token}")) {
            headers.insert(http::header::AUTHORIZATION, value);
        }
        headers
    };
    let valid_headers = with(&valid);
    let forged_headers = with(&forged);
    assert!(authenticator.authenticate(&valid_headers, now).is_ok());
    assert_eq!(
        authenticator.authenticate(&forged_headers, now).err(),
        Some(AuthError::Token(TokenError::BadSignature)),
        "forged token"
    );
    let mut group = c.benchmark_group("authenticate");
    group.bench_function("valid", |b| {
        b.iter(|| authenticator.authenticate(black_box(&valid_headers), now))
    });
    group.bench_function("forged_key", |b| {
        b.iter(|| authenticator.authenticate(black_box(&forged_headers), now))
    });
    group.finish();
}

fn revocation(c: &mut Criterion) {
    let list = loaded_revocations();
    let mut group = c.benchmark_group("revocation_10k");
    // The common case: an unknown user with a live session (two misses).
    group.bench_function("allowed_unlisted", |b| {
        b.iter(|| {
            list.allows(
                black_box("user-99999"),
                black_box(0),
                black_box(Some("live")),
            )
        })
    });
    // A listed user at the current version, session still live (hit + miss).
    group.bench_function("allowed_listed", |b| {
        b.iter(|| {
            list.allows(
                black_box("user-04242"),
                black_box(2),
                black_box(Some("live")),
            )
        })
    });
    group.bench_function("revoked_version", |b| {
        b.iter(|| list.allows(black_box("user-04242"), black_box(1), black_box(None)))
    });
    group.bench_function("revoked_session", |b| {
        b.iter(|| {
            list.allows(
                black_box("user-99999"),
                black_box(0),
                black_box(Some("session-04242")),
            )
        })
    });
    group.finish();
}

fn routing(c: &mut Criterion) {
    let config = config();
    let router = Router::new(&config.routes);
    let cases = [
        ("plain", None, "/api/v1/users/42/profile"),
        (
            "escapes_and_dots",
            None,
            "/api/v1/orders/./2024/%7Ebob/../caf%C3%A9//items",
        ),
        (
            "host_route",
            Some("admin.example.com"),
            "/admin/settings/users",
        ),
        (
            "fallthrough_root",
            Some("www.example.com"),
            "/some/deep/page/that/nothing/names",
        ),
    ];
    for (_, host, raw) in &cases {
        let decided = path::decide(raw);
        assert!(decided.is_ok(), "bench path {raw:?} refused");
        if let Ok(decided) = decided {
            assert!(
                router.route(*host, decided.as_str()).is_some(),
                "no route for {raw:?}"
            );
        }
    }
    let mut group = c.benchmark_group("decide_and_route");
    for (name, host, raw) in cases {
        group.bench_function(name, |b| {
            b.iter(|| {
                let decided = path::decide(black_box(raw)).ok()?;
                router
                    .route(black_box(host), decided.as_str())
                    .map(|route| route.name.len())
            })
        });
    }
    group.finish();
}

/// What a browser behind a load balancer sends: ~20 headers, a bearer token,
/// cookies including the gateway's own, and a forged identity header.
fn browser_headers(token: &str) -> HeaderMap {
    let pairs: [(&str, String); 20] = [
        ("host", "app.example.com".to_owned()),
        ("user-agent", "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0".to_owned()),
        ("accept", "application/json, text/plain, */*".to_owned()),
        ("accept-language", "en-GB,en;q=0.7,de;q=0.3".to_owned()),
        ("accept-encoding", "gzip, deflate, br, zstd".to_owned()),
        ("authorization", format!("Bearer {token}")),
        ("content-type", "application/json".to_owned()),
        ("origin", "https://app.example.com".to_owned()),
        ("referer", "https://app.example.com/dashboard".to_owned()),
        ("cookie", "theme=dark; __Secure-authgate_refresh=abcdef0123456789; authgate_csrf=xyz; _ga=GA1.2.3.4".to_owned()),
        ("connection", "keep-alive".to_owned()),
        ("sec-fetch-dest", "empty".to_owned()),
        ("sec-fetch-mode", "cors".to_owned()),
        ("sec-fetch-site", "same-origin".to_owned()),
        ("x-request-id", "7f1c7d0e-3b7a-4c1e-9d5e-2a6f0b9c8d7e".to_owned()),
        ("x-forwarded-for", "203.0.113.9".to_owned()),
        ("x-user-id", "admin".to_owned()),
        ("x_user_role", "admin".to_owned()),
        ("pragma", "no-cache".to_owned()),
        ("cache-control", "no-cache".to_owned()),
    ];
    let mut headers = HeaderMap::with_capacity(pairs.len());
    for (name, value) in pairs {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            headers.append(name, value);
        }
    }
    headers
}

fn headers(c: &mut Criterion) {
    let config = config();
    let token = mint(&config, SECRET, "user-04242", Some("live-session"));
    let template = browser_headers(&token);
    let prefix = &config.server.identity_header_prefix;
    let scrubber = IdentityScrubber::new(prefix);
    let names = match IdentityHeaders::new(prefix) {
        Ok(names) => names,
        Err(err) => panic!("bad identity prefix: {err}"),
    };
    let (Ok(user_id), Ok(role)) = (UserId::parse("user-04242"), Role::parse("editor")) else {
        panic!("bench identity refused");
    };
    let identity = Identity {
        user_id,
        role,
        session: Some("live-session".into()),
        version: 0,
        expires_at: 0,
        assertion: None,
        key_id: None,
    };
    let client = ClientSide {
        peer: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10)),
        peer_header: &HeaderValue::from_static("192.0.2.10"),
        peer_trusted: false,
        client: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10)),
        host: Some(HeaderValue::from_static("app.example.com")),
    };
    let policy = RouteHeaderPolicy {
        forward_authorization: false,
    };
    let mut group = c.benchmark_group("request_headers");
    // The clone is setup; only the rewrite is timed.
    group.bench_function("browser_20", |b| {
        b.iter_batched_ref(
            || template.clone(),
            |headers| {
                prepare_request_headers(
                    headers,
                    &client,
                    Some(&identity),
                    &policy,
                    &scrubber,
                    &names,
                )
            },
            BatchSize::SmallInput,
        )
    });
    let minimal = {
        let mut h = HeaderMap::new();
        h.insert(
            http::header::HOST,
            HeaderValue::from_static("app.example.com"),
        );
        if let Ok(v) = HeaderValue::from_str(&format!("Bearer {token}")) {
            h.insert(http::header::AUTHORIZATION, v);
        }
        h.insert(http::header::ACCEPT, HeaderValue::from_static("*/*"));
        h
    };
    // What wrk/h2load send: the load-test shape of the same work.
    group.bench_function("minimal_3", |b| {
        b.iter_batched_ref(
            || minimal.clone(),
            |headers| {
                prepare_request_headers(
                    headers,
                    &client,
                    Some(&identity),
                    &policy,
                    &scrubber,
                    &names,
                )
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

/// What every answered proxied request adds: its result looked at, one
/// status counter, two latency histograms. No lock but the histograms'.
fn metrics(c: &mut Criterion) {
    let config = config();
    let metrics = Metrics::new(&config.routes, config.server.workers);
    let Some(route) = config.routes.first() else {
        panic!("the bench config has routes");
    };
    let ok: Result<http::Response<()>, authgate::error::GatewayError> = Ok(http::Response::new(()));
    let total = std::time::Duration::from_micros(900);
    let upstream = Some(std::time::Duration::from_micros(700));
    c.bench_function("metrics/proxied_request", |b| {
        b.iter(|| {
            metrics.record_result(black_box(&ok), None);
            metrics.record_request(
                Some(black_box(route)),
                false,
                http::StatusCode::OK,
                black_box(total),
                black_box(upstream),
            );
        })
    });
}

criterion_group!(benches, tokens, revocation, routing, headers, metrics);
criterion_main!(benches);
