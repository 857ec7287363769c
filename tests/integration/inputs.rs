//! Inputs parsed once, with one rule for every entry point: `authgate user
//! add` and `/auth/register` take the same passwords, and a signed token
//! whose identity cannot be passed on as a header is refused, not forwarded
//! anonymously.

use std::io::Write;
use std::process::{Command, Output, Stdio};

use serde_json::json;

use crate::accounts::FAST_HASHING;
use crate::support::gateway::{GatewayFiles, GatewayOptions};
use crate::support::{Behavior, TestGateway, Upstream};

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_token_whose_identity_is_no_header_value_never_reaches_the_upstream() {
    let upstream = Upstream::start(Behavior::Ok).await;
    let routes = format!(
        "[[route]]\nname = \"api\"\npath_prefix = \"/api/\"\nupstream = \"{}\"\n",
        upstream.url()
    );
    let gw = TestGateway::start(&routes).await;
    let client = gw.client();
    // Correctly signed with the gateway's own key: only the values are bad.
    for (sub, role) in [
        ("u1\n", "admin"),
        ("u1\r\nx-user-role: admin", "viewer"),
        ("u1\u{7f}", "admin"),
        ("u\u{0}1", "admin"),
        ("u1\u{1b}[0m", "admin"),
        (" u1", "admin"),
        ("u1", "admin\n"),
        ("u1", "admin\u{7f}"),
    ] {
        let token = gw.token(sub, role);
        let response = client.get("/api/x").bearer(&token).send().await;
        assert_eq!(response.status, 401, "{sub:?} {role:?}");
        assert_eq!(response.code(), "INVALID_TOKEN", "{sub:?} {role:?}");
        let challenge = response.header("www-authenticate").unwrap_or_default();
        assert!(challenge.contains("error=\"invalid_token\""), "{challenge}");
        let me = client.get("/auth/me").bearer(&token).send().await;
        assert_eq!(me.status, 401, "/auth/me {sub:?} {role:?}");
        assert_eq!(me.code(), "INVALID_TOKEN", "/auth/me {sub:?} {role:?}");
    }
    assert!(
        upstream.received().is_empty(),
        "a token without a header-safe identity was forwarded"
    );

    let valid = client
        .get("/api/x")
        .bearer(&gw.token("u1", "admin"))
        .send()
        .await;
    assert_eq!(valid.status, 200);
    let seen = upstream.only();
    assert_eq!(seen.headers.get("x-user-id").unwrap(), "u1");
    assert_eq!(seen.headers.get("x-user-role").unwrap(), "admin");
}
