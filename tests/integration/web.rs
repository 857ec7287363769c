//! Browser sign-in over plain HTTP (no browser): the redirect or 401 a
//! `browser = true` route gives, the sign-in form and its token, the
//! session cookie's attributes and its lifetimes, CSRF on cookie requests,
//! the cookie kept from upstreams, sign-up, and a second gateway on the
//! same PostgreSQL store accepting the cookie. `browser.rs` drives the same
//! flows through a real Chromium.

use std::time::{Duration, Instant};

use crate::accounts::{login, register, FAST_HASHING};
use crate::support::postgres::TestDatabase;
use crate::support::{Behavior, GatewayOptions, Response, TestGateway, Upstream};

pub const PASSWORD: &str = "correct horse battery";

pub fn web_options(upstream: &Upstream, tokens: &str, extra: &str) -> GatewayOptions {
    GatewayOptions {
        tokens: tokens.to_owned(),
        auth: FAST_HASHING.to_owned(),
        routes: format!(
            "[[route]]\nname = \"dash\"\npath_prefix = \"/dash/\"\nupstream = \"{0}\"\n\
             browser = true\n\
             [[route]]\nname = \"api\"\npath_prefix = \"/api/\"\nupstream = \"{0}\"\n",
            upstream.url()
        ),
        extra: format!("[web]\ntitle = \"Example Corp\"\n{extra}"),
        ..GatewayOptions::default()
    }
}

pub async fn web_gateway(upstream: &Upstream, tokens: &str, extra: &str) -> TestGateway {
    TestGateway::start_with(web_options(upstream, tokens, extra)).await
}

/// The `value` of the hidden input `name` in a page.
fn hidden(page: &Response, name: &str) -> String {
    let html = std::str::from_utf8(&page.body).unwrap();
    let marker = format!("name=\"{name}\" value=\"");
    let start = html
        .find(&marker)
        .unwrap_or_else(|| panic!("no {name} in {html}"))
        + marker.len();
    let len = html[start..].find('"').unwrap();
    html[start..start + len].to_owned()
}

/// `name=value` of the Set-Cookie for `name`, if any.
pub fn set_cookie(response: &Response, name: &str) -> Option<String> {
    response
        .headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap())
        .find(|c| c.starts_with(&format!("{name}=")))
        .map(str::to_owned)
}

fn pair(line: &str) -> String {
    line.split(';').next().unwrap().to_owned()
}

fn form_encode(value: &str) -> String {
    percent_encoding::utf8_percent_encode(value, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// Fetches the form at `page` (`sign-in` or `sign-up`) and posts it.
pub async fn submit(
    gw: &TestGateway,
    page: &str,
    email: &str,
    password: &str,
    rd: &str,
) -> Response {
    let form = gw.client().get(&format!("/auth/{page}")).send().await;
    assert_eq!(form.status, 200);
    let form_cookie = pair(&set_cookie(&form, "__Host-authgate_form").unwrap());
    let body = format!(
        "csrf={}&rd={}&email={}&password={}",
        hidden(&form, "csrf"),
        form_encode(rd),
        form_encode(email),
        form_encode(password)
    );
    gw.client()
        .post(&format!("/auth/{page}"))
        .header("cookie", &form_cookie)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
}

/// Registers `email` through the API and signs in with the form; returns
/// the session cookie pair.
pub async fn signed_in(gw: &TestGateway, email: &str) -> String {
    assert_eq!(register(gw, email, PASSWORD).await.status, 201);
    let response = submit(gw, "sign-in", email, PASSWORD, "/dash/").await;
    assert_eq!(response.status, 303, "{:?}", response.body);
    pair(&set_cookie(&response, "__Host-authgate_session").expect("a session cookie"))
}

async fn get(gw: &TestGateway, path: &str, cookie: &str, accept: &str) -> Response {
    gw.client()
        .get(path)
        .header("cookie", cookie)
        .header("accept", accept)
        .send()
        .await
}

const HTML: &str = "text/html,application/xhtml+xml,*/*;q=0.8";

#[tokio::test]
async fn navigations_are_sent_to_sign_in_and_other_requests_get_401_json() {
    let upstream = Upstream::start(Behavior::Ok).await;
    let gw = web_gateway(&upstream, "", "").await;
    let navigation = get(&gw, "/dash/report?id=7&q=a%20b", "", HTML).await;
    assert_eq!(navigation.status, 303);
    assert_eq!(
        navigation.header("location"),
        Some("/auth/sign-in?rd=/dash/report%3Fid%3D7%26q%3Da%2520b")
    );
    let head = gw
        .client()
        .request(http::Method::HEAD, "/dash/")
        .header("accept", "text/html")
        .send()
        .await;
    assert_eq!(head.status, 303);
    let json = get(&gw, "/dash/report", "", "application/json").await;
    assert_eq!(
        (json.status.as_u16(), json.code()),
        (401, "MISSING_TOKEN".to_owned())
    );
    assert!(json.header("www-authenticate").is_some());
    let post = gw
        .client()
        .post("/dash/report")
        .header("accept", "text/html")
        .send()
        .await;
    assert_eq!(
        (post.status.as_u16(), post.code()),
        (401, "MISSING_TOKEN".to_owned())
    );
    // A forged cookie is no credential either.
    let forged = get(&gw, "/dash/", "__Host-authgate_session=env.AAAA", HTML).await;
    assert_eq!(forged.status, 303);
    // A route without `browser` never redirects.
    let plain = get(&gw, "/api/x", "", HTML).await;
    assert_eq!(plain.status, 401);
    assert!(upstream.received().is_empty());
    // A bearer token still works on a browser route.
    let ok = gw
        .client()
        .get("/dash/report")
        .header("accept", HTML)
        .bearer(&gw.token("5f0c7a8e-1b2d-4c3e-9f4a-0b1c2d3e4f5a", "viewer"))
        .send()
        .await;
    assert_eq!(ok.status, 200);
    assert_eq!(upstream.count(), 1);
}

#[tokio::test]
async fn the_sign_in_page_is_strict_and_self_contained() {
    let upstream = Upstream::start(Behavior::Ok).await;
    let gw = web_gateway(&upstream, "", "").await;
    let page = gw.client().get("/auth/sign-in?rd=%2Fdash%2F").send().await;
    assert_eq!(page.status, 200);
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    let csp = page.header("content-security-policy").unwrap();
    assert!(
        csp.starts_with("default-src 'none'; style-src 'sha256-"),
        "{csp}"
    );
    assert!(csp.contains("form-action 'self'") && csp.contains("frame-ancestors 'none'"));
    assert_eq!(page.header("cache-control"), Some("no-store"));
    let html = std::str::from_utf8(&page.body).unwrap();
    assert!(html.contains("<h1>Example Corp</h1>"));
    assert!(
        !html.contains("<script") && !html.contains("src="),
        "{html}"
    );
    assert_eq!(hidden(&page, "rd"), "/dash/");
    let form = set_cookie(&page, "__Host-authgate_form").unwrap();
    assert!(form.contains("; Path=/;") && form.contains("HttpOnly") && form.contains("Secure"));
    assert!(!form.to_ascii_lowercase().contains("domain="));
}

#[tokio::test]
async fn sign_in_sets_a_host_only_cookie_and_the_upstream_sees_the_user_not_the_cookie() {
    let upstream = Upstream::start(Behavior::Ok).await;
    let gw = web_gateway(&upstream, "", "").await;
    let registered = register(&gw, "ada@example.com", PASSWORD).await;
    let user_id = registered.json()["user"]["id"].as_str().unwrap().to_owned();
    let response = submit(
        &gw,
        "sign-in",
        "ada@example.com",
        PASSWORD,
        "/dash/report?id=7",
    )
    .await;
    assert_eq!(response.status, 303);
    assert_eq!(response.header("location"), Some("/dash/report?id=7"));
    let line = set_cookie(&response, "__Host-authgate_session").unwrap();
    for attribute in [
        "; Path=/;",
        "; HttpOnly",
        "; Secure",
        "; SameSite=Lax",
        "; Max-Age=28800",
    ] {
        assert!(line.contains(attribute), "{attribute}: {line}");
    }
    assert!(!line.to_ascii_lowercase().contains("domain="), "{line}");
    let cookie = format!("theme=dark; {}", pair(&line));
    let page = get(&gw, "/dash/report", &cookie, HTML).await;
    assert_eq!(page.status, 200);
    let seen = upstream.only();
    assert_eq!(seen.headers["x-user-id"], user_id.as_str());
    assert_eq!(seen.headers["x-user-role"], "viewer");
    // The gateway's own cookies never reach the upstream; the app's do.
    assert_eq!(seen.headers["cookie"], "theme=dark");
}

#[tokio::test]
async fn a_wrong_password_and_an_unknown_email_get_the_same_page() {
    let upstream = Upstream::start(Behavior::Ok).await;
    let gw = web_gateway(&upstream, "", "").await;
    register(&gw, "ada@example.com", PASSWORD).await;
    let wrong = submit(
        &gw,
        "sign-in",
        "ada@example.com",
        "not the password",
        "/dash/",
    )
    .await;
    let unknown = submit(
        &gw,
        "sign-in",
        "nobody@example.com",
        "not the password",
        "/dash/",
    )
    .await;
    for response in [&wrong, &unknown] {
        assert_eq!(response.status, 401);
        assert!(set_cookie(response, "__Host-authgate_session").is_none());
        let html = std::str::from_utf8(&response.body).unwrap();
        assert!(html.contains("Email or password is incorrect."), "{html}");
        assert!(response.header("content-security-policy").is_some());
    }
    // The throttle is the login endpoint's: the JSON API sees the failures.
    let again = login(&gw, "ada@example.com", PASSWORD).await;
    assert_eq!(again.status, 200);
    assert!(upstream.received().is_empty());
}

#[tokio::test]
async fn a_sign_in_form_without_its_token_is_refused() {
    let upstream = Upstream::start(Behavior::Ok).await;
    let gw = web_gateway(&upstream, "", "").await;
    register(&gw, "ada@example.com", PASSWORD).await;
    let body = format!(
        "csrf=guess&rd=%2F&email=ada%40example.com&password={}",
        form_encode(PASSWORD)
    );
    for cookie in [
        "",
        "__Host-authgate_form=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    ] {
        let response = gw
            .client()
            .post("/auth/sign-in")
            .header("cookie", cookie)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body.clone())
            .send()
            .await;
        assert_eq!(response.status, 403, "{cookie}");
        assert!(set_cookie(&response, "__Host-authgate_session").is_none());
    }
}

#[tokio::test]
async fn cookie_requests_that_change_state_must_come_from_this_origin() {
    let upstream = Upstream::start(Behavior::Ok).await;
    let gw = web_gateway(&upstream, "", "").await;
    let cookie = signed_in(&gw, "ada@example.com").await;
    let host = format!("localhost:{}", gw.addr.port());
    let post = |headers: Vec<(&'static str, String)>| {
        let mut request = gw
            .client()
            .post("/dash/items")
            .host(&host)
            .header("cookie", &cookie);
        for (name, value) in headers {
            request = request.header(name, &value);
        }
        request.send()
    };
    for refused in [
        vec![],
        vec![("origin", "https://evil.example".to_owned())],
        vec![("origin", format!("http://{host}"))],
        vec![("sec-fetch-site", "cross-site".to_owned())],
        vec![("sec-fetch-site", "same-site".to_owned())],
    ] {
        let response = post(refused.clone()).await;
        assert_eq!(
            (response.status.as_u16(), response.code()),
            (403, "CSRF_FAILED".to_owned()),
            "{refused:?}"
        );
    }
    assert!(upstream.received().is_empty());
    assert_eq!(
        post(vec![("sec-fetch-site", "same-origin".to_owned())])
            .await
            .status,
        200
    );
    assert_eq!(
        post(vec![("origin", format!("https://{host}"))])
            .await
            .status,
        200
    );
    assert_eq!(upstream.count(), 2);
}

#[tokio::test]
async fn sign_out_and_logout_all_end_the_browser_session_at_once() {
    let upstream = Upstream::start(Behavior::Ok).await;
    let gw = web_gateway(&upstream, "", "").await;
    let cookie = signed_in(&gw, "ada@example.com").await;
    assert_eq!(get(&gw, "/dash/", &cookie, HTML).await.status, 200);
    upstream.clear();
    // Sign-out from another site is refused and ends nothing.
    let forged = gw
        .client()
        .post("/auth/sign-out")
        .header("cookie", &cookie)
        .send()
        .await;
    assert_eq!(forged.status, 403);
    assert_eq!(get(&gw, "/dash/", &cookie, HTML).await.status, 200);
    upstream.clear();
    let out = gw
        .client()
        .post("/auth/sign-out")
        .header("cookie", &cookie)
        .header("sec-fetch-site", "same-origin")
        .send()
        .await;
    assert_eq!(out.status, 303);
    assert_eq!(out.header("location"), Some("/auth/sign-in"));
    assert!(set_cookie(&out, "__Host-authgate_session")
        .unwrap()
        .contains("Max-Age=0"));
    let replayed = get(&gw, "/dash/", &cookie, "application/json").await;
    assert_eq!(
        (replayed.status.as_u16(), replayed.code()),
        (401, "TOKEN_REVOKED".to_owned())
    );
    let navigation = get(&gw, "/dash/", &cookie, HTML).await;
    assert_eq!(navigation.status, 303);
    assert!(set_cookie(&navigation, "__Host-authgate_session")
        .unwrap()
        .contains("Max-Age=0"));
    assert!(upstream.received().is_empty());

    // Logout-all through the API ends a browser session of the same user.
    let cookie = {
        let response = submit(&gw, "sign-in", "ada@example.com", PASSWORD, "/").await;
        pair(&set_cookie(&response, "__Host-authgate_session").unwrap())
    };
    assert_eq!(get(&gw, "/dash/", &cookie, HTML).await.status, 200);
    upstream.clear();
    let token = login(&gw, "ada@example.com", PASSWORD).await.json()["accessToken"]
        .as_str()
        .unwrap()
        .to_owned();
    let all = gw
        .client()
        .post("/auth/logout-all")
        .bearer(&token)
        .send()
        .await;
    assert_eq!(all.status, 204);
    assert_eq!(get(&gw, "/dash/", &cookie, HTML).await.status, 303);
    assert!(upstream.received().is_empty());
}

/// Polls `GET /dash/` with the cookie (taking each re-issued one) until it
/// is refused; returns how long that took and the refusal.
async fn use_until_refused(
    gw: &TestGateway,
    mut cookie: String,
    limit: Duration,
) -> (Duration, Response) {
    let started = Instant::now();
    loop {
        let response = get(gw, "/dash/", &cookie, "application/json").await;
        if response.status != 200 {
            return (started.elapsed(), response);
        }
        if let Some(line) = set_cookie(&response, "__Host-authgate_session") {
            cookie = pair(&line);
        }
        assert!(started.elapsed() < limit, "still accepted after {limit:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test]
async fn use_slides_the_idle_timeout_but_never_past_the_absolute_end() {
    let upstream = Upstream::start(Behavior::Ok).await;
    // Idle 4s, re-issued every second of use; the whole session lives 6s.
    let gw = web_gateway(
        &upstream,
        "session_max_age = \"6s\"",
        "session_idle_timeout = \"4s\"",
    )
    .await;
    let cookie = signed_in(&gw, "ada@example.com").await;
    let (lived, refused) = use_until_refused(&gw, cookie, Duration::from_secs(10)).await;
    // Used all along, it outlived its idle timeout, up to its absolute end.
    assert!(lived >= Duration::from_secs(4), "{lived:?}");
    assert_eq!(
        (refused.status.as_u16(), refused.code()),
        (401, "TOKEN_EXPIRED".to_owned())
    );
}

#[tokio::test]
async fn an_unused_session_ends_after_its_idle_timeout() {
    let upstream = Upstream::start(Behavior::Ok).await;
    let gw = web_gateway(&upstream, "", "session_idle_timeout = \"2s\"").await;
    let cookie = signed_in(&gw, "ada@example.com").await;
    assert_eq!(
        get(&gw, "/dash/", &cookie, "application/json").await.status,
        200
    );
    // Not re-issued (the same cookie each time): it ends 2s after sign-in.
    let started = Instant::now();
    let refused = loop {
        let response = get(&gw, "/dash/", &cookie, "application/json").await;
        if response.status != 200 {
            break response;
        }
        assert!(started.elapsed() < Duration::from_secs(5));
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(
        (refused.status.as_u16(), refused.code()),
        (401, "TOKEN_EXPIRED".to_owned())
    );
    let navigation = get(&gw, "/dash/", &cookie, HTML).await;
    assert_eq!(navigation.status, 303);
}

#[tokio::test]
async fn sign_up_is_offered_only_while_registration_is_open() {
    let upstream = Upstream::start(Behavior::Ok).await;
    let gw = web_gateway(&upstream, "", "").await;
    let response = submit(&gw, "sign-up", "new@example.com", PASSWORD, "/dash/").await;
    assert_eq!(response.status, 303);
    let cookie = pair(&set_cookie(&response, "__Host-authgate_session").unwrap());
    assert_eq!(get(&gw, "/dash/", &cookie, HTML).await.status, 200);
    let weak = submit(&gw, "sign-up", "weak@example.com", "short", "/").await;
    assert_eq!(weak.status, 400);
    assert!(std::str::from_utf8(&weak.body)
        .unwrap()
        .contains("at least 8 characters"));

    let closed = TestGateway::start_with(GatewayOptions {
        auth: format!("registration = \"closed\"\n{FAST_HASHING}"),
        ..web_options(&upstream, "", "")
    })
    .await;
    assert_eq!(
        closed.client().get("/auth/sign-up").send().await.status,
        404
    );
    assert_eq!(
        closed.client().post("/auth/sign-up").send().await.status,
        404
    );
    let page = closed.client().get("/auth/sign-in").send().await;
    assert!(!std::str::from_utf8(&page.body).unwrap().contains("sign-up"));
}

#[tokio::test]
async fn a_second_gateway_on_the_same_postgres_store_accepts_the_cookie() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let upstream = Upstream::start(Behavior::Ok).await;
    let options = GatewayOptions {
        store: format!(
            "backend = \"postgres\"\nurl = \"{}\"\nmax_connections = 4\n",
            db.url
        ),
        ..web_options(&upstream, "", "")
    };
    let a = TestGateway::start_with(options.clone()).await;
    let b = TestGateway::start_with(options).await;
    let cookie = signed_in(&a, "ada@example.com").await;
    assert_eq!(get(&b, "/dash/", &cookie, HTML).await.status, 200);
    // Signed out on A: B refuses the cookie within the revocation feed's delay.
    let out = a
        .client()
        .post("/auth/sign-out")
        .header("cookie", &cookie)
        .header("sec-fetch-site", "same-origin")
        .send()
        .await;
    assert_eq!(out.status, 303);
    upstream.clear();
    let started = Instant::now();
    while get(&b, "/dash/", &cookie, "application/json").await.status == 200 {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "B still accepts the cookie"
        );
        upstream.clear();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    upstream.clear();
    assert_eq!(
        get(&b, "/dash/", &cookie, "application/json").await.status,
        401
    );
    assert!(upstream.received().is_empty());
}

#[tokio::test]
async fn a_signed_out_cookie_stays_refused_after_a_restart() {
    // The revocation list is rebuilt from the store at start: a
    // signed-out session stays out across a restart.
    let upstream = Upstream::start(Behavior::Ok).await;
    let gw = web_gateway(&upstream, "", "session_idle_timeout = \"1h\"").await;
    let cookie = signed_in(&gw, "ada@example.com").await;
    let out = gw
        .client()
        .post("/auth/sign-out")
        .header("cookie", &cookie)
        .header("origin", &format!("https://localhost:{}", gw.addr.port()))
        .host(&format!("localhost:{}", gw.addr.port()))
        .send()
        .await;
    assert_eq!(out.status, 303);
    let files = gw.stop().await;
    let gw = TestGateway::start_files(files).await;
    let replayed = get(&gw, "/dash/", &cookie, "application/json").await;
    assert_eq!(replayed.status, 401);
    assert!(upstream.received().is_empty());
}
