//! What was acknowledged survives a crash; a clean stop exits 0; a second
//! process on the same database gets a clear error.

use std::process::Command;
use std::time::Duration;

use serde_json::json;

use crate::accounts::FAST_HASHING;
use crate::support::gateway::{BinaryGateway, GatewayFiles, GatewayOptions};
use crate::support::{Behavior, TestClient, Upstream};

/// The binary on one worker: tokio's current-thread scheduler (the other
/// binary-driven tests run the multi-thread one on the machine's cores).
fn files() -> GatewayFiles {
    GatewayFiles::create(&GatewayOptions {
        server: "workers = 1\n".to_owned(),
        auth: FAST_HASHING.to_owned(),
        routes:
            "[[route]]\nname = \"echo\"\npath_prefix = \"/echo/\"\nupstream = \"builtin:echo\"\n"
                .to_owned(),
        ..GatewayOptions::default()
    })
}

async fn post(
    client: &TestClient,
    path: &str,
    body: serde_json::Value,
) -> crate::support::Response {
    client.post(path).json(&body).send().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_kill_9() {
    let files = files();
    let mut gateway = BinaryGateway::start(&files, "info");
    let client = gateway.client(&files);
    let credentials = json!({"email": "kate@example.com", "password": "password-1"});
    let registered = post(&client, "/auth/register", credentials.clone()).await;
    assert_eq!(registered.status, 201);
    let first = registered.json()["refreshToken"]
        .as_str()
        .unwrap()
        .to_owned();
    let rotated = post(&client, "/auth/refresh", json!({"refreshToken": first})).await;
    assert_eq!(rotated.status, 200);
    let second = rotated.json()["refreshToken"].as_str().unwrap().to_owned();
    gateway.kill9();

    let gateway = BinaryGateway::start(&files, "info");
    let client = gateway.client(&files);
    // The registration survived: the account logs in.
    assert_eq!(post(&client, "/auth/login", credentials).await.status, 200);
    // The rotation survived: the successor works...
    let onward = post(&client, "/auth/refresh", json!({"refreshToken": second})).await;
    assert_eq!(onward.status, 200);
    // ...and the rotated original is recognised as reuse, not as new.
    let reuse = post(&client, "/auth/refresh", json!({"refreshToken": first})).await;
    assert_eq!(reuse.status, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_and_exits_zero() {
    let files = files();
    let mut gateway = BinaryGateway::start(&files, "info");
    let client = gateway.client(&files);
    let registered = post(
        &client,
        "/auth/register",
        json!({"email": "leo@example.com", "password": "password-1"}),
    )
    .await;
    assert_eq!(registered.status, 201);
    gateway.signal("TERM");
    assert_eq!(gateway.wait(Duration::from_secs(30)), Some(0));
    assert!(gateway.log().contains("shutting down"), "{}", gateway.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_process_on_the_same_database_is_refused_clearly() {
    let files = files();
    let _running = BinaryGateway::start(&files, "info");
    let output = Command::new(env!("CARGO_BIN_EXE_authgate"))
        .arg("--config")
        .arg(&files.config_path)
        .args(["user", "list"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("database in use"), "{stderr}");
    assert!(stderr.contains("store.sled"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_database_stops_the_start_with_its_path() {
    let files = files();
    let store = files.path().join("store.sled");
    std::fs::create_dir_all(&store).unwrap();
    std::fs::write(store.join("conf"), b"\xff\xfe garbage").unwrap();
    std::fs::write(store.join("db"), vec![0xAB; 4096]).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_authgate"))
        .arg("serve")
        .arg("--config")
        .arg(&files.config_path)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("store.sled"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_bootstraps_an_admin_on_the_stopped_database() {
    let files = files();
    let mut add = Command::new(env!("CARGO_BIN_EXE_authgate"))
        .args([
            "user",
            "add",
            "--email",
            "Ops@Example.com",
            "--role",
            "admin",
            "--config",
        ])
        .arg(&files.config_path)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    add.stdin
        .take()
        .unwrap()
        .write_all(b"operator-password\n")
        .unwrap();
    let output = add.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    let gateway = BinaryGateway::start(&files, "info");
    let client = gateway.client(&files);
    let login = post(
        &client,
        "/auth/login",
        json!({"email": "ops@example.com", "password": "operator-password"}),
    )
    .await;
    assert_eq!(login.status, 200);
    assert_eq!(login.json()["user"]["role"], "admin");
    let access = login.json()["accessToken"].as_str().unwrap().to_owned();
    let users = client.get("/auth/users").bearer(&access).send().await;
    assert_eq!(users.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_workers_share_the_port_and_drain_on_sigterm() {
    let upstream = Upstream::start(Behavior::Ok).await;
    let files = GatewayFiles::create(&GatewayOptions {
        server: "workers = 3\n".to_owned(),
        auth: FAST_HASHING.to_owned(),
        routes: format!(
            "[[route]]\nname = \"echo\"\npath_prefix = \"/echo/\"\nupstream = \"builtin:echo\"\n\
             auth = \"public\"\n\
             [[route]]\nname = \"api\"\npath_prefix = \"/api/\"\nupstream = \"{}\"\n\
             auth = \"public\"\nmax_upstream_connections = 1\n",
            upstream.url()
        ),
        ..GatewayOptions::default()
    });
    let mut gateway = BinaryGateway::start(&files, "info");
    // New connections, spread by the kernel over the three listeners: every
    // one is served, and the upstream requests of all workers share the one
    // connection the target's cap allows (a worker takes another's idle
    // connection at the cap).
    for n in 0..24 {
        let client = gateway.client(&files);
        let response = client.get(&format!("/echo/{n}")).send().await;
        assert_eq!(response.status, 200, "connection {n}");
        let response = client.get(&format!("/api/{n}")).send().await;
        assert_eq!(response.status, 200, "upstream request {n}");
    }
    assert_eq!(upstream.count(), 24);
    assert_eq!(upstream.connections(), 1, "the cap counts every worker's");
    gateway.wait_for_line("each worker accepts on its own listener");
    let names: Vec<String> = std::fs::read_dir(format!("/proc/{}/task", gateway.pid()))
        .unwrap()
        .filter_map(|task| std::fs::read_to_string(task.unwrap().path().join("comm")).ok())
        .map(|name| name.trim().to_owned())
        .collect();
    for worker in ["ag-worker-1", "ag-worker-2"] {
        assert!(names.iter().any(|n| n == worker), "{worker} in {names:?}");
    }
    gateway.signal("TERM");
    assert_eq!(gateway.wait(Duration::from_secs(30)), Some(0));
    gateway.wait_for_line("all connections closed");
}
