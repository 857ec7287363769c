//! Forwarding: identity injection, header hygiene, routing, upstream failures.

use crate::support::{Behavior, GatewayOptions, TestGateway, Upstream};

fn route(name: &str, prefix: &str, upstream: &str, extra: &str) -> String {
    format!(
        "[[route]]\nname = \"{name}\"\npath_prefix = \"{prefix}\"\nupstream = \"{upstream}\"\n{extra}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn valid_token_reaches_upstream_with_identity_and_without_authorization() {
    let upstream = Upstream::start(Behavior::Ok).await;
    let gw = TestGateway::start(&route("api", "/api/", &upstream.url(), "")).await;
    let token = gw.token("user-42", "editor");

    let response = gw
        .client()
        .get("/api/items?page=2")
        .bearer(&token)
        .header("x-forwarded-for", "203.0.113.9")
        .send()
        .await;

    assert_eq!(response.status, 200);
    assert_eq!(&response.body[..], b"upstream-ok");
    let seen = upstream.only();
    assert_eq!(seen.target, "/api/items?page=2");
    assert_eq!(seen.headers["x-user-id"], "user-42");
    assert_eq!(seen.headers["x-user-role"], "editor");
    assert!(seen.headers.get("authorization").is_none());
    assert_eq!(seen.headers["x-forwarded-for"], "127.0.0.1");
    assert_eq!(seen.headers["x-forwarded-proto"], "https");
    assert_eq!(seen.headers["x-forwarded-host"], "localhost");
    // The client's Host is replaced with the target's.
    let target = upstream.url();
    assert_eq!(seen.headers["host"], target.trim_start_matches("http://"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spoofed_identity_headers_never_reach_upstream() {
    let upstream = Upstream::start(Behavior::Ok).await;
    let routes = format!(
        "{}{}",
        route("api", "/api/", &upstream.url(), ""),
        route("open", "/open/", &upstream.url(), "auth = \"public\"")
    );
    let gw = TestGateway::start(&routes).await;
    let token = gw.token("real-user", "viewer");
    let spoof = |builder: crate::support::client::RequestBuilder| {
        builder
            .header("X-User-Id", "admin")
            .header("x-user-id", "admin2")
            .header("X_User_Id", "admin3")
            .header("x-USER-role", "admin")
            .header("X.User.Role", "admin")
            .header("x-user-email", "root@example.com")
            .header("connection", "x-user-id, x-user-role")
    };

    let protected = spoof(gw.client().get("/api/x").bearer(&token)).send().await;
    assert_eq!(protected.status, 200);
    let public = spoof(gw.client().get("/open/x")).send().await;
    assert_eq!(public.status, 200);
    let h2 = spoof(gw.client().get("/open/y").http2()).send().await;
    assert_eq!(h2.status, 200);

    let seen = upstream.received();
    assert_eq!(seen.len(), 3);
    let protected = &seen[0].headers;
    assert_eq!(
        protected.get_all("x-user-id").iter().collect::<Vec<_>>(),
        ["real-user"]
    );
    assert_eq!(
        protected.get_all("x-user-role").iter().collect::<Vec<_>>(),
        ["viewer"]
    );
    for request in &seen[1..] {
        for (name, _) in &request.headers {
            let normalized = name.as_str().replace(['_', '.'], "-");
            assert!(
                !normalized.starts_with("x-user-"),
                "{name} reached a public route"
            );
        }
    }
    for request in &seen {
        assert!(request.headers.get("x-user-email").is_none());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn role_not_allowed_is_403_and_never_forwarded() {
    let upstream = Upstream::start(Behavior::Ok).await;
    let gw = TestGateway::start(&route(
        "admin",
        "/admin/",
        &upstream.url(),
        "roles = [\"admin\", \"editor\"]",
    ))
    .await;

    let refused = gw
        .client()
        .get("/admin/panel")
        .bearer(&gw.token("u1", "viewer"))
        .send()
        .await;
    assert_eq!(refused.status, 403);
    assert_eq!(refused.code(), "FORBIDDEN");
    assert_eq!(upstream.count(), 0);

    let allowed = gw
        .client()
        .get("/admin/panel")
        .bearer(&gw.token("u2", "editor"))
        .send()
        .await;
    assert_eq!(allowed.status, 200);
    assert_eq!(upstream.only().headers["x-user-id"], "u2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_by_host_then_longest_prefix_and_404s_the_rest() {
    let general = Upstream::start(Behavior::Ok).await;
    let admin = Upstream::start(Behavior::Ok).await;
    let tenant = Upstream::start(Behavior::Ok).await;
    let routes = format!(
        "{}{}{}",
        route("api", "/api/", &general.url(), "auth = \"public\""),
        route(
            "api-admin",
            "/api/admin/",
            &admin.url(),
            "auth = \"public\""
        ),
        route(
            "tenant",
            "/api/",
            &tenant.url(),
            "auth = \"public\"\nhost = \"tenant.example\""
        ),
    );
    let gw = TestGateway::start(&routes).await;
    let client = gw.client();

    assert_eq!(client.get("/api/list").send().await.status, 200);
    assert_eq!(client.get("/api/admin/users").send().await.status, 200);
    assert_eq!(client.get("/api/adminx").send().await.status, 200);
    let tenant_response = client.get("/api/list").host("Tenant.Example.").send().await;
    assert_eq!(tenant_response.status, 200);
    let tenant_h2 = client
        .get("/api/list")
        .host("tenant.example")
        .http2()
        .send()
        .await;
    assert_eq!(tenant_h2.status, 200);
    let missing = client.get("/elsewhere").send().await;
    assert_eq!(missing.status, 404);
    assert_eq!(missing.code(), "NOT_FOUND");

    let general_paths: Vec<_> = general.received().into_iter().map(|r| r.target).collect();
    assert_eq!(general_paths, ["/api/list", "/api/adminx"]);
    assert_eq!(admin.only().target, "/api/admin/users");
    assert_eq!(tenant.received().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strip_prefix_and_base_path_shape_the_forwarded_path() {
    let upstream = Upstream::start(Behavior::Ok).await;
    let base = format!("{}/v2", upstream.url());
    let gw = TestGateway::start(&route(
        "svc",
        "/svc/",
        &base,
        "auth = \"public\"\nstrip_prefix = true",
    ))
    .await;
    assert_eq!(gw.client().get("/svc/items/7?q=1").send().await.status, 200);
    assert_eq!(upstream.only().target, "/v2/items/7?q=1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_upstream_is_502_and_slow_upstream_is_504() {
    let refused = Upstream::refused_addr().await;
    let hanging = Upstream::start(Behavior::Hang).await;
    let routes = format!(
        "{}{}",
        route(
            "down",
            "/down/",
            &format!("http://{refused}"),
            "auth = \"public\""
        ),
        route(
            "slow",
            "/slow/",
            &hanging.url(),
            "auth = \"public\"\ntimeout = \"300ms\""
        ),
    );
    let gw = TestGateway::start(&routes).await;

    let down = gw.client().get("/down/x").send().await;
    assert_eq!(down.status, 502);
    assert_eq!(down.code(), "UPSTREAM_UNAVAILABLE");

    let slow = gw.client().get("/slow/x").send().await;
    assert_eq!(slow.status, 504);
    assert_eq!(slow.code(), "UPSTREAM_TIMEOUT");
    assert_eq!(hanging.count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorization_is_forwarded_only_when_the_route_opts_in() {
    let upstream = Upstream::start(Behavior::Ok).await;
    let gw = TestGateway::start(&route(
        "pass",
        "/pass/",
        &upstream.url(),
        "forward_authorization = true",
    ))
    .await;
    let token = gw.token("u1", "viewer");
    assert_eq!(
        gw.client()
            .get("/pass/x")
            .bearer(&token)
            .send()
            .await
            .status,
        200
    );
    assert_eq!(
        upstream.only().headers["authorization"],
        format!("Bearer {token}").as_str()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_is_negotiated_by_alpn_and_proxied() {
    let upstream = Upstream::start(Behavior::Ok).await;
    let gw = TestGateway::start(&route("api", "/api/", &upstream.url(), "")).await;
    let response = gw
        .client()
        .get("/api/h2")
        .bearer(&gw.token("h2-user", "viewer"))
        .http2()
        .send()
        .await;
    assert_eq!(response.version, http::Version::HTTP_2);
    assert_eq!(response.status, 200);
    let seen = upstream.only();
    assert_eq!(seen.headers["x-user-id"], "h2-user");
    assert_eq!(seen.target, "/api/h2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn builtin_echo_shows_the_injected_identity() {
    let gw = TestGateway::start_with(GatewayOptions::routes(
        "[[route]]\nname = \"echo\"\npath_prefix = \"/echo/\"\nupstream = \"builtin:echo\"\n",
    ))
    .await;
    let response = gw
        .client()
        .get("/echo/hi?x=1")
        .bearer(&gw.token("alice", "editor"))
        .header("x-user-id", "mallory")
        .send()
        .await;
    assert_eq!(response.status, 200);
    let echoed = response.json();
    assert_eq!(echoed["path"], "/echo/hi");
    assert_eq!(echoed["query"], "x=1");
    assert_eq!(echoed["headers"]["x-user-id"], "alice");
    assert_eq!(echoed["headers"]["x-user-role"], "editor");
    assert!(echoed["headers"].get("authorization").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_cannot_set_the_gateway_cookies() {
    let upstream = Upstream::start(Behavior::SetGatewayCookies).await;
    let gw = TestGateway::start(&route("c", "/c/", &upstream.url(), "auth = \"public\"")).await;
    let response = gw.client().get("/c/x").send().await;
    let cookies: Vec<_> = response.headers.get_all("set-cookie").iter().collect();
    assert_eq!(cookies, ["app=1; Path=/"]);
}
