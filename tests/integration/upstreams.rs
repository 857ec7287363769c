//! Several targets per route, their health, TLS and HTTP/2 upstreams, gRPC
//! end to end, and the per-target connection cap — all against real
//! upstream servers.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};

use crate::support::client::Alpn;
use crate::support::pki::TestPki;
use crate::support::upstream::UpstreamOptions;
use crate::support::{Behavior, GatewayOptions, TestGateway, Upstream};

fn route(prefix: &str, urls: &[String], extra: &str) -> String {
    let list = urls
        .iter()
        .map(|u| format!("{u:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    let name = prefix.trim_matches('/');
    format!(
        "[[route]]\nname = \"{name}\"\npath_prefix = \"{prefix}\"\nupstreams = [{list}]\nauth = \"public\"\n{extra}\n"
    )
}

/// Waits (bounded) until `done` holds, checking every few milliseconds.
async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_spreads_requests_evenly_over_three_targets() {
    let ups = [
        Upstream::start(Behavior::Ok).await,
        Upstream::start(Behavior::Ok).await,
        Upstream::start(Behavior::Ok).await,
    ];
    let urls: Vec<String> = ups.iter().map(Upstream::url).collect();
    let gw = TestGateway::start(&route("/api/", &urls, "balance = \"round_robin\"")).await;

    for _ in 0..30 {
        assert_eq!(gw.client().get("/api/x").send().await.status, 200);
    }

    let counts: Vec<usize> = ups.iter().map(Upstream::count).collect();
    assert_eq!(counts, [10, 10, 10]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_requests_avoids_the_target_that_is_still_busy() {
    // The first target holds every request it gets; the other two answer.
    let busy = Upstream::start(Behavior::Hang).await;
    let quick = [
        Upstream::start(Behavior::Ok).await,
        Upstream::start(Behavior::Ok).await,
    ];
    let urls = vec![busy.url(), quick[0].url(), quick[1].url()];
    let gw = TestGateway::start(&route("/api/", &urls, "balance = \"least_requests\"")).await;

    let mut held = Vec::new();
    for sent in 1..=30 {
        let client = gw.client();
        let busy_before = busy.count();
        let request = tokio::spawn(async move { client.get("/api/x").send().await });
        // One request at a time: each is held by the busy target or
        // answered before the next is sent.
        until("the request to be held or answered", || {
            busy.count() > busy_before || request.is_finished()
        })
        .await;
        held.push(request);
        assert_eq!(busy.count() + quick[0].count() + quick[1].count(), sent);
    }

    // With one request in flight on the busy target and none on the
    // others, two distinct choices never pick it again (round robin would
    // have sent it 10).
    assert!(busy.count() <= 1, "busy target got {}", busy.count());
    assert!(quick[0].count() > 0 && quick[1].count() > 0);
    for request in held {
        request.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_target_is_ejected_and_probed_back() {
    let live = Upstream::start(Behavior::Ok).await;
    let dead = Upstream::refused_addr().await;
    let urls = vec![format!("http://{dead}"), live.url()];
    let gw = TestGateway::start(&route("/api/", &urls, "")).await;

    // The dead target refuses: the GET is retried on the live one, and the
    // dead target is left out from then on.
    for _ in 0..6 {
        assert_eq!(gw.client().get("/api/x").send().await.status, 200);
    }
    assert_eq!(live.count(), 6);

    // It comes back on the same address; once its back-off ends, the next
    // request that picks it finds it alive and it is in rotation again.
    let revived = Upstream::start_with(
        Behavior::Ok,
        UpstreamOptions {
            addr: Some(dead),
            ..UpstreamOptions::default()
        },
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while revived.count() == 0 {
        assert!(
            Instant::now() < deadline,
            "the revived target never got a request"
        );
        assert_eq!(gw.client().get("/api/x").send().await.status, 200);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Back in rotation: round robin alternates again.
    let before = revived.count();
    for _ in 0..4 {
        assert_eq!(gw.client().get("/api/x").send().await.status, 200);
    }
    assert_eq!(revived.count() - before, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsent_get_is_retried_on_another_target_and_a_post_is_not() {
    let live = Upstream::start(Behavior::Ok).await;
    let dead = Upstream::refused_addr().await;
    let urls = vec![format!("http://{dead}"), live.url()];
    // Two routes over the same targets, each with its own balancer and
    // health, so each first request goes to the dead target.
    let routes = format!(
        "{}{}",
        route("/get/", &urls, ""),
        route("/post/", &urls, "")
    );
    let gw = TestGateway::start(&routes).await;

    let post = gw.client().post("/post/x").body("payload").send().await;
    assert_eq!(post.status, 502);
    assert_eq!(post.code(), "UPSTREAM_UNAVAILABLE");
    assert!(live.received().is_empty(), "a POST must never be retried");

    let get = gw.client().get("/get/x").send().await;
    assert_eq!(get.status, 200);
    let seen = live.only();
    assert_eq!(seen.method, Method::GET);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_targets_down_is_answered_502_at_once() {
    let dead = [
        Upstream::refused_addr().await,
        Upstream::refused_addr().await,
    ];
    let urls: Vec<String> = dead.iter().map(|a| format!("http://{a}")).collect();
    let gw = TestGateway::start(&route("/api/", &urls, "timeout = \"20s\"")).await;

    // Both refuse: the GET and its retry fail, and both are ejected.
    let first = gw.client().get("/api/x").send().await;
    assert_eq!(first.status, 502);
    assert_eq!(first.code(), "UPSTREAM_UNAVAILABLE");

    // Now no target is even tried.
    let started = Instant::now();
    let second = gw.client().get("/api/x").send().await;
    assert_eq!(second.status, 502);
    assert_eq!(second.code(), "UPSTREAM_UNAVAILABLE");
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_health_check_takes_a_target_out_of_rotation() {
    let healthy = Upstream::start(Behavior::Ok).await;
    let failing = Upstream::start(Behavior::Status(503)).await;
    let urls = vec![healthy.url(), failing.url()];
    let gw = TestGateway::start(&route(
        "/api/",
        &urls,
        "health_check = { path = \"/healthz\", interval = \"50ms\", timeout = \"1s\" }",
    ))
    .await;

    until("a failed health check", || {
        failing.received().iter().any(|r| r.target == "/healthz")
    })
    .await;
    // Let the verdict land: the next check's arrival proves the first ended.
    let checks = failing.count();
    until("a second health check", || failing.count() > checks).await;

    for _ in 0..6 {
        assert_eq!(gw.client().get("/api/x").send().await.status, 200);
    }
    assert!(failing.received().iter().all(|r| r.target == "/healthz"));
    assert_eq!(
        healthy
            .received()
            .iter()
            .filter(|r| r.target == "/api/x")
            .count(),
        6
    );
}

/// A CA directory for TLS upstreams; the leaf is valid for 127.0.0.1.
fn pki() -> (tempfile::TempDir, TestPki) {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::create(dir.path());
    (dir, pki)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_upstream_is_verified_against_upstream_ca() {
    let (_dir, internal) = pki();
    let (_other_dir, other) = pki();
    let trusted = Upstream::start_with(
        Behavior::Ok,
        UpstreamOptions {
            tls: Some(internal.server_config()),
            ..UpstreamOptions::default()
        },
    )
    .await;
    // Same names, but signed by a CA the route does not trust.
    let impostor = Upstream::start_with(
        Behavior::Ok,
        UpstreamOptions {
            tls: Some(other.server_config()),
            ..UpstreamOptions::default()
        },
    )
    .await;
    let ca = format!("upstream_ca = {:?}", internal.ca_path);
    let routes = format!(
        "{}{}",
        route("/good/", &[format!("https://{}", trusted.addr)], &ca),
        route("/bad/", &[format!("https://{}", impostor.addr)], &ca),
    );
    let gw = TestGateway::start(&routes).await;

    let refused = gw.client().get("/bad/x").send().await;
    assert_eq!(refused.status, 502);
    assert_eq!(refused.code(), "UPSTREAM_UNAVAILABLE");
    assert!(impostor.received().is_empty());

    let ok = gw.client().get("/good/x").send().await;
    assert_eq!(ok.status, 200);
    assert_eq!(&ok.body[..], b"upstream-ok");
    assert_eq!(trusted.only().target, "/good/x");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mtls_upstream_gets_the_configured_client_certificate() {
    let (_dir, internal) = pki();
    let (_client_dir, gateway_identity) = pki();
    let upstream = Upstream::start_with(
        Behavior::Ok,
        UpstreamOptions {
            tls: Some(internal.server_config_requiring(&gateway_identity)),
            ..UpstreamOptions::default()
        },
    )
    .await;
    let url = [format!("https://{}", upstream.addr)];
    let ca = format!("upstream_ca = {:?}", internal.ca_path);
    let with_cert = format!(
        "{ca}\nupstream_client_cert = {:?}\nupstream_client_key = {:?}",
        gateway_identity.cert_path, gateway_identity.key_path
    );
    let routes = format!(
        "{}{}",
        route("/nocert/", &url, &ca),
        route("/mtls/", &url, &with_cert)
    );
    let gw = TestGateway::start(&routes).await;

    let refused = gw.client().get("/nocert/x").send().await;
    assert_eq!(refused.status, 502);
    assert!(upstream.received().is_empty());

    let ok = gw.client().get("/mtls/x").send().await;
    assert_eq!(ok.status, 200);
    assert_eq!(upstream.only().target, "/mtls/x");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2_upstream_is_spoken_to_with_prior_knowledge() {
    let upstream = Upstream::start_with(
        Behavior::Ok,
        UpstreamOptions {
            h2: true,
            ..UpstreamOptions::default()
        },
    )
    .await;
    let gw = TestGateway::start(&route(
        "/api/",
        &[upstream.url()],
        "upstream_protocol = \"h2\"",
    ))
    .await;

    for _ in 0..3 {
        let response = gw.client().get("/api/x?q=1").send().await;
        assert_eq!(response.status, 200);
        assert_eq!(&response.body[..], b"upstream-ok");
    }
    let seen = upstream.received();
    assert_eq!(seen.len(), 3);
    assert_eq!(seen[0].target, "/api/x?q=1");
    // One multiplexed connection carries them all.
    assert_eq!(upstream.connections(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_over_an_h2_tls_upstream_keeps_its_trailers() {
    let (_dir, internal) = pki();
    let upstream = Upstream::start_with(
        Behavior::Grpc,
        UpstreamOptions {
            h2: true,
            tls: Some(internal.server_config()),
            ..UpstreamOptions::default()
        },
    )
    .await;
    let gw = TestGateway::start(&route(
        "/pkg.Greeter/",
        &[format!("https://{}", upstream.addr)],
        &format!(
            "upstream_protocol = \"h2\"\nupstream_ca = {:?}",
            internal.ca_path
        ),
    ))
    .await;

    let call = gw
        .client()
        .post("/pkg.Greeter/SayHello")
        .http2()
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Bytes::from_static(b"\x00\x00\x00\x00\x02hi"))
        .send()
        .await;

    assert_eq!(call.status, 200);
    assert_eq!(call.header("content-type"), Some("application/grpc"));
    assert_eq!(&call.body[..], b"\x00\x00\x00\x00\x05hello");
    let trailers = call.trailers.expect("gRPC trailers reach the client");
    assert_eq!(trailers["grpc-status"], "0");
    assert_eq!(trailers["grpc-message"], "done");
    let seen = upstream.only();
    assert_eq!(seen.target, "/pkg.Greeter/SayHello");
    assert_eq!(seen.headers["te"], "trailers");
    assert_eq!(seen.body_len, 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pool_stays_within_its_cap_under_640_concurrent_h2_streams() {
    const STREAMS: usize = 640;
    const CAP: usize = 8;
    let upstream = Upstream::start(Behavior::Target).await;
    let gw = TestGateway::start_with(GatewayOptions {
        server: "h2_max_concurrent_streams = 1000".to_owned(),
        routes: route(
            "/api/",
            &[upstream.url()],
            &format!("max_upstream_connections = {CAP}"),
        ),
        ..GatewayOptions::default()
    })
    .await;

    let tls = gw.client().tls(Alpn::Http2).await;
    let (sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(connection);
    let mut streams = Vec::with_capacity(STREAMS);
    for i in 0..STREAMS {
        let mut sender = sender.clone();
        streams.push(tokio::spawn(async move {
            let request = Request::get(format!("https://localhost/api/{i}"))
                .body(Full::new(Bytes::new()))
                .unwrap();
            let response = sender.send_request(request).await.unwrap();
            let status = response.status();
            let body = response.into_body().collect().await.unwrap().to_bytes();
            (status, body)
        }));
    }
    // Most requests wait at the cap and go out on a connection another
    // request returned: each still gets its own answer.
    for (i, stream) in streams.into_iter().enumerate() {
        let (status, body) = stream.await.unwrap();
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, format!("/api/{i}"), "stream {i} got another's answer");
    }

    assert_eq!(upstream.count(), STREAMS);
    assert!(
        upstream.connections() <= CAP,
        "{} upstream connections for a cap of {CAP}",
        upstream.connections()
    );
    assert!(upstream.max_in_flight() <= CAP);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateways_own_refusals_of_grpc_calls_are_grpc_shaped() {
    let upstream = Upstream::start_with(
        Behavior::Grpc,
        UpstreamOptions {
            h2: true,
            ..UpstreamOptions::default()
        },
    )
    .await;
    let gw = TestGateway::start(&format!(
        "[[route]]\nname = \"grpc\"\npath_prefix = \"/pkg.Admin/\"\nupstream = \"{}\"\n\
         upstream_protocol = \"h2\"\nroles = [\"admin\"]\n",
        upstream.url()
    ))
    .await;
    let call = |token: Option<String>| {
        let mut call = gw
            .client()
            .post("/pkg.Admin/Reset")
            .http2()
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(Bytes::from_static(b"\x00\x00\x00\x00\x00"));
        if let Some(token) = token {
            call = call.bearer(&token);
        }
        call.send()
    };

    let anonymous = call(None).await;
    assert_eq!(anonymous.status, 200);
    assert_eq!(anonymous.header("content-type"), Some("application/grpc"));
    assert_eq!(anonymous.header("grpc-status"), Some("16"));
    assert!(anonymous.header("grpc-message").is_some());
    let viewer = call(Some(gw.token("u1", "viewer"))).await;
    assert_eq!(viewer.status, 200);
    assert_eq!(viewer.header("grpc-status"), Some("7"));
    assert!(upstream.received().is_empty());

    let admin = call(Some(gw.token("u2", "admin"))).await;
    assert_eq!(admin.status, 200);
    assert_eq!(admin.trailers.unwrap()["grpc-status"], "0");
    assert_eq!(upstream.only().headers["x-user-role"], "admin");
}
