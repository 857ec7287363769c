//! PostgreSQL restarted under two running gateways (a cluster of the test's
//! own, `pg_ctl stop -m fast` then start on the same socket): while it is
//! down account endpoints answer 503 with Retry-After at once and proxied
//! requests go on; once it is back both gateways reconnect by themselves,
//! apply what they missed, and revocations cross within a second again.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{field, login, options_at, probe, probe_until, proxied, refresh, register};
use crate::support::postgres::cluster::PrivateCluster;
use crate::support::{Behavior, Response, TestGateway, Upstream};

/// What "at once" means for a 503 while the database is down: a refused
/// connection is reported, never waited on up to the pool's timeouts.
const PROMPTLY: Duration = Duration::from_secs(2);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_database_is_rejoined_without_help() {
    let Some(cluster) = blocking(PrivateCluster::start).await else {
        return;
    };
    let cluster = Arc::new(cluster);
    let upstream = Upstream::start(Behavior::Ok).await;
    let url = cluster.url();
    let a = TestGateway::start_with(options_at(&url, &upstream, "", "")).await;
    let b = TestGateway::start_with(options_at(&url, &upstream, "", "")).await;
    assert_eq!(register(&a, "joe@example.com").await.status, 201);
    let on_a = login(&a, "joe@example.com").await;
    let on_b = login(&b, "joe@example.com").await;
    let access_a = field(&on_a, "accessToken");
    let access_b = field(&on_b, "accessToken");

    let stopping = Arc::clone(&cluster);
    blocking(move || stopping.stop()).await;
    for gw in [&a, &b] {
        let start = Instant::now();
        let down = login(gw, "joe@example.com").await;
        assert_unavailable(&down, start.elapsed());
        let start = Instant::now();
        let down = refresh(gw, &field(&on_b, "refreshToken")).await;
        assert_unavailable(&down, start.elapsed());
    }
    // The proxied path needs no database within the staleness bound.
    assert_eq!(proxied(&a, &access_a).await.status, 200);
    assert_eq!(proxied(&b, &access_b).await.status, 200);
    assert_eq!(upstream.count(), 2);

    let starting = Arc::clone(&cluster);
    blocking(move || starting.start_again()).await;
    // A's pool reconnects at its next checkout.
    let logout =
        poll_until_ok(|| a.client().post("/auth/logout-all").bearer(&access_a).send()).await;
    assert_eq!(logout.status, 204, "{:?}", logout.body);
    // Written while B's listener may still be reconnecting: B applies it
    // from the event table when it catches up (its retry delay is at most
    // 2 s), or from the NOTIFY if it is back already.
    probe_until(&b, &access_b, 401, Duration::from_secs(5)).await;

    // Once both listeners are back, a revocation crosses within a second.
    listeners_until(&url, 2).await;
    let fresh = poll_until_ok(|| login(&b, "joe@example.com")).await;
    let fresh = field(&fresh, "accessToken");
    assert_eq!(probe(&b, &fresh).await.status, 403);
    let logout = a
        .client()
        .post("/auth/logout-all")
        .bearer(&field(&login(&a, "joe@example.com").await, "accessToken"))
        .send()
        .await;
    assert_eq!(logout.status, 204, "{:?}", logout.body);
    probe_until(&b, &fresh, 401, Duration::from_secs(1)).await;
    assert_eq!(proxied(&b, &fresh).await.code(), "TOKEN_REVOKED");
    assert_eq!(proxied(&b, &access_b).await.code(), "TOKEN_REVOKED");
    assert_eq!(upstream.count(), 2, "a revoked token reached the upstream");
    // Logins work on both again.
    assert_eq!(login(&a, "joe@example.com").await.status, 200);
    assert_eq!(login(&b, "joe@example.com").await.status, 200);
}

fn assert_unavailable(response: &Response, took: Duration) {
    assert_eq!(
        (response.status.as_u16(), response.code().as_str()),
        (503, "STORE_UNAVAILABLE"),
        "{:?}",
        response.body
    );
    assert!(response.header("retry-after").is_some());
    assert!(took < PROMPTLY, "the 503 took {took:?}");
}

/// Repeats `request` until it is not a 503 (the database is coming back),
/// for at most 15 s, and returns that answer.
async fn poll_until_ok<F, Fut>(request: F) -> Response
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Response>,
{
    let start = Instant::now();
    loop {
        let response = request().await;
        if response.status != 503 {
            return response;
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "still 503 after 15 s: {:?}",
            response.body
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits (at most 10 s) until `count` revocation listeners are connected.
async fn listeners_until(url: &str, count: i64) {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let start = Instant::now();
    loop {
        let connected: i64 = client
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1",
                &[&authgate::store::postgres::LISTENER_NAME],
            )
            .await
            .unwrap()
            .get(0);
        if connected == count {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{connected} listeners connected after 10 s, expected {count}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs a blocking harness step (`initdb`, `pg_ctl`) off the runtime's
/// workers, which serve both gateways meanwhile.
async fn blocking<T: Send + 'static>(step: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(step).await.unwrap()
}
