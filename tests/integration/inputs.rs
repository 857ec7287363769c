//! Inputs parsed once, with one rule for every entry point: `authgate user
//! add` and `/auth/register` take the same passwords.

use std::io::Write;
use std::process::{Command, Output, Stdio};

use serde_json::json;

use crate::accounts::FAST_HASHING;
use crate::support::gateway::{GatewayFiles, GatewayOptions};
use crate::support::TestGateway;

/// Runs `authgate user add` on the stopped store, the password on stdin.
fn user_add(files: &GatewayFiles, email: &str, password: &str) -> Output {
    let mut add = Command::new(env!("CARGO_BIN_EXE_authgate"))
        .args([
            "user", "add", "--email", email, "--role", "viewer", "--config",
        ])
        .arg(&files.config_path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = add.stdin.take().unwrap();
    stdin.write_all(format!("{password}\n").as_bytes()).unwrap();
    drop(stdin);
    add.wait_with_output().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_and_api_agree_on_the_shortest_password() {
    // Seven characters in fourteen bytes: the CLI counted bytes and took it,
    // `/auth/register` counted characters and refused it. Eight are enough
    // for both.
    let seven = "é".repeat(7);
    let eight = "é".repeat(8);
    let files = GatewayFiles::create(&GatewayOptions {
        auth: FAST_HASHING.to_owned(),
        ..GatewayOptions::default()
    });
    let refused = user_add(&files, "short@example.com", &seven);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success(),
        "the CLI took a 7-character password"
    );
    assert!(stderr.contains("at least 8 characters"), "{stderr}");
    let added = user_add(&files, "cli@example.com", &eight);
    assert!(
        added.status.success(),
        "{}",
        String::from_utf8_lossy(&added.stderr)
    );

    let gw = TestGateway::start_files(files).await;
    let client = gw.client();
    let register = |email: &str, password: &str| {
        client
            .post("/auth/register")
            .json(&json!({"email": email, "password": password}))
    };
    let short = register("short@example.com", &seven).send().await;
    assert_eq!(short.status, 400);
    assert_eq!(short.code(), "WEAK_PASSWORD");
    let enough = register("api@example.com", &eight).send().await;
    assert_eq!(enough.status, 201, "{:?}", enough.body);

    // The CLI's account logs in with the password it was given; the
    // refused one was never created.
    let login = |email: &str, password: &str| {
        client
            .post("/auth/login")
            .json(&json!({"email": email, "password": password}))
    };
    assert_eq!(login("cli@example.com", &eight).send().await.status, 200);
    let never = login("short@example.com", &seven).send().await;
    assert_eq!(never.status, 401);
    assert_eq!(never.code(), "INVALID_CREDENTIALS");
}
