//! What operators rely on: the gateway refuses to start without a proper
//! secret or certificate outside dev mode, and never writes a credential to
//! its log, at any level.

use std::process::Command;

use serde_json::json;

use crate::accounts::FAST_HASHING;
use crate::support::gateway::{BinaryGateway, GatewayFiles, GatewayOptions};

fn start_output(files: &GatewayFiles, secret_env: Option<&str>) -> (bool, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_authgate"));
    // Run in the test's own directory: a `data/keys` left in the working
    // directory by a development run would otherwise let the gateway start.
    command
        .current_dir(files.path())
        .arg("--config")
        .arg(&files.config_path)
        .arg("serve")
        .env_remove("AUTHGATE_ACCESS_SECRET");
    if let Some(secret) = secret_env {
        command.env("AUTHGATE_ACCESS_SECRET", secret);
    }
    let output = command.output().unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Rewrites the config to drop the secret file line (the harness writes one).
fn without_secret_file(files: &GatewayFiles) {
    let text = std::fs::read_to_string(&files.config_path).unwrap();
    let kept: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with("secret_file"))
        .collect();
    std::fs::write(&files.config_path, kept.join("\n")).unwrap();
}

#[test]
fn refuses_to_start_without_a_proper_secret_or_certificate() {
    let files = GatewayFiles::create(&GatewayOptions::default());
    without_secret_file(&files);
    let (ok, stderr) = start_output(&files, None);
    assert!(!ok);
    assert!(stderr.contains("AUTHGATE_ACCESS_SECRET"), "{stderr}");
    assert!(stderr.contains("openssl rand"), "{stderr}");

    let (ok, stderr) = start_output(&files, Some("too-short"));
    assert!(!ok);
    assert!(stderr.contains("at least 32"), "{stderr}");

    let files = GatewayFiles::create(&GatewayOptions::default());
    std::fs::remove_file(files.path().join("leaf.pem")).unwrap();
    let (ok, stderr) = start_output(&files, None);
    assert!(!ok);
    assert!(stderr.contains("leaf.pem"), "{stderr}");
    assert!(stderr.contains("tls_cert"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn config_errors_name_file_line_and_key() {
    let files = GatewayFiles::create(&GatewayOptions {
        tokens: "access_ttl = \"fifteen minutes\"".to_owned(),
        ..GatewayOptions::default()
    });
    let (ok, stderr) = start_output(&files, None);
    assert!(!ok);
    let config = files.config_path.display().to_string();
    assert!(stderr.contains(&format!("{config}:")), "{stderr}");
    assert!(stderr.contains("access_ttl"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_credential_ever_reaches_the_log_even_at_debug() {
    let files = GatewayFiles::create(&GatewayOptions {
        auth: FAST_HASHING.to_owned(),
        routes:
            "[[route]]\nname = \"echo\"\npath_prefix = \"/echo/\"\nupstream = \"builtin:echo\"\n"
                .to_owned(),
        ..GatewayOptions::default()
    });
    let gateway = BinaryGateway::start(&files, "debug");
    let client = gateway.client(&files);
    let password = "unmistakable-password-7731";
    let registered = client
        .post("/auth/register")
        .json(&json!({"email": "log@example.com", "password": password}))
        .send()
        .await;
    assert_eq!(registered.status, 201);
    let body = registered.json();
    let access = body["accessToken"].as_str().unwrap().to_owned();
    let refresh = body["refreshToken"].as_str().unwrap().to_owned();
    let csrf = body["csrfToken"].as_str().unwrap().to_owned();
    let wrong = client
        .post("/auth/login")
        .json(&json!({"email": "log@example.com", "password": "wrong-password-5512"}))
        .send()
        .await;
    assert_eq!(wrong.status, 401);
    let echoed = client.get("/echo/x").bearer(&access).send().await;
    assert_eq!(echoed.status, 200);
    let rotated = client
        .post("/auth/refresh")
        .header("cookie", &format!("__Secure-authgate_refresh={refresh}"))
        .header("x-csrf-token", &csrf)
        .send()
        .await;
    assert_eq!(rotated.status, 200);
    let forged = client
        .get("/echo/x")
        .bearer("eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.")
        .send()
        .await;
    assert_eq!(forged.status, 401);

    let log = gateway.log();
    assert!(
        log.contains("authgate::access"),
        "no access log at debug: {log}"
    );
    for secret in [
        password,
        "wrong-password-5512",
        access.as_str(),
        refresh.as_str(),
        csrf.as_str(),
        rotated.json()["refreshToken"].as_str().unwrap(),
        "eyJhbGciOiJub25lIn0",
    ] {
        assert!(!log.contains(secret), "a credential appeared in the log");
    }
    // The JWT signature part alone is not logged either.
    let signature = access.rsplit('.').next().unwrap();
    assert!(!log.contains(signature));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_fault_is_logged_with_the_request_it_belongs_to() {
    let dead = crate::support::upstream::Upstream::refused_addr().await;
    let files = GatewayFiles::create(&GatewayOptions {
        routes: format!(
            "[[route]]\nname = \"deadend\"\npath_prefix = \"/dead/\"\n\
             upstream = \"http://{dead}\"\nauth = \"public\"\n"
        ),
        ..GatewayOptions::default()
    });
    let gateway = BinaryGateway::start(&files, "info");
    let answer = gateway.client(&files).get("/dead/x").send().await;
    assert_eq!(answer.status, 502);
    let line = gateway.wait_for_line("request failed");
    for field in ["method=GET", "peer=127.0.0.1", "route=deadend"] {
        assert!(line.contains(field), "{field} missing from {line:?}");
    }
}

/// Starts the binary on `files` and waits (bounded) for it to exit; a
/// gateway that starts serving instead fails the test.
fn exit_of_start(files: &GatewayFiles) -> (Option<i32>, String) {
    use std::io::Read;
    let mut child = Command::new(env!("CARGO_BIN_EXE_authgate"))
        .arg("--config")
        .arg(&files.config_path)
        .arg("serve")
        .env_remove("AUTHGATE_ACCESS_SECRET")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the gateway started instead of refusing its config");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    (status.code(), stderr)
}

#[test]
fn absurd_durations_and_counts_stop_the_start_at_their_line_without_a_panic() {
    for (options, line, key) in [
        (
            GatewayOptions {
                tokens: "access_ttl = \"18446744073709551615s\"".to_owned(),
                ..GatewayOptions::default()
            },
            8,
            "access_ttl",
        ),
        (
            GatewayOptions {
                // One past tokio's semaphore maximum on 64-bit targets.
                server: "max_connections = 2305843009213693952".to_owned(),
                ..GatewayOptions::default()
            },
            5,
            "max_connections",
        ),
    ] {
        let files = GatewayFiles::create(&options);
        let (code, stderr) = exit_of_start(&files);
        assert_eq!(code, Some(1), "{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
        let config = files.config_path.display().to_string();
        assert!(
            stderr.contains(&format!("{config}:{line}:")),
            "expected {config}:{line}: in {stderr}"
        );
        assert!(stderr.contains(&format!(": {key}: ")), "{stderr}");
        assert!(stderr.contains("out of range"), "{stderr}");
    }
}

#[cfg(unix)]
#[test]
fn the_database_is_created_private_and_exposed_secrets_are_warned_about() {
    use std::os::unix::fs::PermissionsExt;
    let mode =
        |path: &std::path::Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    let chmod = |path: &std::path::Path, mode: u32| {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    };
    let files = GatewayFiles::create(&GatewayOptions::default());
    let key = files.path().join("leaf-key.pem");
    let secret = files.path().join("access.secret");
    let store = files.path().join("store.sled");
    chmod(&key, 0o644);
    chmod(&secret, 0o644);
    let gateway = BinaryGateway::start(&files, "info");
    // Created by the gateway (sled would follow the umask, 0755 under 022).
    assert_eq!(mode(&store), 0o700);
    for name in ["db", "conf"] {
        let file = store.join(name);
        assert_eq!(
            mode(&file) & 0o077,
            0,
            "{} is {:o}",
            file.display(),
            mode(&file)
        );
    }
    let log = gateway.log();
    let warned = |path: &std::path::Path| {
        log.lines().any(|l| {
            l.contains("WARN")
                && l.contains("readable by other users")
                && l.contains(&path.display().to_string())
        })
    };
    assert!(warned(&key), "no warning for a 0644 TLS key: {log}");
    assert!(warned(&secret), "no warning for a 0644 secret file: {log}");
    assert!(
        !warned(&store),
        "a private database directory was warned about: {log}"
    );
    drop(gateway);

    // An operator-made directory open to others is kept, and warned about.
    chmod(&store, 0o755);
    let gateway = BinaryGateway::start(&files, "info");
    assert_eq!(mode(&store), 0o755);
    let log = gateway.log();
    assert!(
        log.lines().any(|l| l.contains("WARN")
            && l.contains("database directory")
            && l.contains(&store.display().to_string())),
        "no warning for a 0755 database directory: {log}"
    );
}
