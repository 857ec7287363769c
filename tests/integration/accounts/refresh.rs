//! Refresh rotation end to end: reuse of a rotated token revokes the
//! family, parallel refreshes share one rotation (or are reuse in strict
//! mode), and the cookie path needs its CSRF header.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reuse_of_a_rotated_token_revokes_the_family() {
    let upstream = Upstream::start(Behavior::Ok).await;
    let gw = accounts_gateway(&upstream, "refresh_reuse_grace = \"0s\"", "").await;
    let first = register(&gw, "eve@example.com", "password-1").await;
    let original = field(&first, "refreshToken");

    let second = refresh(&gw, &original).await;
    assert_eq!(second.status, 200);
    let successor = field(&second, "refreshToken");
    let successor_access = field(&second, "accessToken");

    let reuse = refresh(&gw, &original).await;
    assert_eq!(
        (reuse.status.as_u16(), reuse.code().as_str()),
        (401, "TOKEN_REUSE_DETECTED")
    );
    // The whole family is dead: the legitimate successor too, and its access token.
    let successor_refresh = refresh(&gw, &successor).await;
    assert_eq!(successor_refresh.status, 401);
    let access = proxied(&gw, "/api/x", &successor_access).await;
    assert_eq!(access.code(), "TOKEN_REVOKED");
    assert_eq!(upstream.count(), 0);

    let unknown = refresh(&gw, "definitely-not-a-token").await;
    assert_eq!(unknown.code(), "INVALID_REFRESH_TOKEN");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_refreshes_share_one_rotation() {
    let upstream = Upstream::start(Behavior::Ok).await;
    let gw = Arc::new(accounts_gateway(&upstream, "refresh_reuse_grace = \"30s\"", "").await);
    let registered = register(&gw, "frank@example.com", "password-1").await;
    let token = field(&registered, "refreshToken");

    let mut tasks = Vec::new();
    for _ in 0..40 {
        let gw = Arc::clone(&gw);
        let token = token.clone();
        tasks.push(tokio::spawn(async move { refresh(&gw, &token).await }));
    }
    let mut pairs = Vec::new();
    for task in tasks {
        let response = task.await.unwrap();
        assert_eq!(response.status, 200, "{:?}", response.body);
        pairs.push((
            field(&response, "refreshToken"),
            field(&response, "accessToken"),
        ));
    }
    pairs.sort();
    pairs.dedup();
    assert_eq!(pairs.len(), 1, "more than one pair was minted");
    let (new_refresh, new_access) = pairs.remove(0);
    assert_eq!(proxied(&gw, "/api/x", &new_access).await.status, 200);
    let onward = refresh(&gw, &new_refresh).await;
    assert_eq!(onward.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_mode_treats_parallel_refreshes_as_reuse() {
    let upstream = Upstream::start(Behavior::Ok).await;
    let gw = Arc::new(accounts_gateway(&upstream, "refresh_reuse_grace = \"0s\"", "").await);
    let registered = register(&gw, "grace@example.com", "password-1").await;
    let token = field(&registered, "refreshToken");
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let gw = Arc::clone(&gw);
        let token = token.clone();
        tasks.push(tokio::spawn(async move { refresh(&gw, &token).await }));
    }
    let mut ok = 0;
    let mut reuse = 0;
    for task in tasks {
        let response = task.await.unwrap();
        match response.status.as_u16() {
            200 => ok += 1,
            401 if response.code() == "TOKEN_REUSE_DETECTED" => reuse += 1,
            other => panic!("unexpected {other}: {:?}", response.body),
        }
    }
    assert_eq!(ok, 1, "exactly one rotation wins");
    assert_eq!(reuse, 19);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cookie_refresh_needs_the_csrf_header() {
    let upstream = Upstream::start(Behavior::Ok).await;
    let gw = accounts_gateway(&upstream, "", "").await;
    let registered = register(&gw, "heidi@example.com", "password-1").await;
    let all = cookies(&registered);
    let refresh_cookie = all
        .iter()
        .find(|c| c.starts_with("__Secure-authgate_refresh="))
        .unwrap();
    for attribute in [
        "HttpOnly",
        "Secure",
        "SameSite=Strict",
        "Path=/auth",
        "Max-Age=604800",
    ] {
        assert!(
            refresh_cookie.contains(attribute),
            "{refresh_cookie} lacks {attribute}"
        );
    }
    let csrf_cookie = all
        .iter()
        .find(|c| c.starts_with("authgate_csrf="))
        .unwrap();
    assert!(!csrf_cookie.contains("HttpOnly"));
    let pair = cookie_pair(&registered, "__Secure-authgate_refresh");
    let csrf = field(&registered, "csrfToken");

    let cookie_only = |builder: RequestBuilder| builder.header("cookie", &pair);
    let without = cookie_only(gw.client().post("/auth/refresh")).send().await;
    assert_eq!(
        (without.status.as_u16(), without.code().as_str()),
        (403, "CSRF_FAILED")
    );
    let wrong = cookie_only(gw.client().post("/auth/refresh"))
        .header("x-csrf-token", "forged")
        .send()
        .await;
    assert_eq!(wrong.code(), "CSRF_FAILED");
    let good = cookie_only(gw.client().post("/auth/refresh"))
        .header("x-csrf-token", &csrf)
        .send()
        .await;
    assert_eq!(good.status, 200);

    let next_pair = cookie_pair(&good, "__Secure-authgate_refresh");
    let next_csrf = field(&good, "csrfToken");
    let logout_without = gw
        .client()
        .post("/auth/logout")
        .header("cookie", &next_pair)
        .send()
        .await;
    assert_eq!(logout_without.code(), "CSRF_FAILED");
    let logout = gw
        .client()
        .post("/auth/logout")
        .header("cookie", &next_pair)
        .header("x-csrf-token", &next_csrf)
        .send()
        .await;
    assert_eq!(logout.status, 204);
}
