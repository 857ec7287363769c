//! The audit file end to end: one line per security event, none holding a
//! secret.

use super::*;

fn audit_lines(gw: &TestGateway) -> Vec<Value> {
    let text = std::fs::read_to_string(gw.files.path().join("audit.log")).unwrap_or_default();
    text.lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect()
}

/// The events recorded since `seen` lines, read right after the answer:
/// each was durable before the answer was sent, so no waiting.
fn new_events(gw: &TestGateway, seen: &mut usize) -> Vec<String> {
    let lines = audit_lines(gw);
    let events = lines[*seen..]
        .iter()
        .map(|l| l["event"].as_str().unwrap().to_owned())
        .collect();
    *seen = lines.len();
    events
}

fn field(response: &crate::support::Response, name: &str) -> String {
    response.json()[name].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_security_event_is_one_audit_line_without_secrets() {
    let upstream = Upstream::start(Behavior::Ok).await;
    let gw = TestGateway::start_with(GatewayOptions {
        tokens: "refresh_reuse_grace = \"0s\"\n".to_owned(),
        auth: format!("{FAST_HASHING}[auth.throttle]\naccount_failures = 2\n"),
        routes: format!(
            "[[route]]\nname = \"api\"\npath_prefix = \"/api/\"\nupstream = \"{}\"\n",
            upstream.url()
        ),
        extra: "[log]\naudit_file = \"{dir}/audit.log\"\n".to_owned(),
        ..GatewayOptions::default()
    })
    .await;
    let mut seen = 0;
    // Everything a line must never hold.
    let mut secrets: Vec<String> = vec![
        "password-1".into(),
        "wrong-pass-1".into(),
        "password-2".into(),
    ];

    let bob = register(&gw, "bob@example.com", "password-1").await;
    assert_eq!(bob.status, 201);
    let bob_id = bob.json()["user"]["id"].as_str().unwrap().to_owned();
    let bob_request = bob.header("x-request-id").unwrap().to_owned();
    assert_eq!(new_events(&gw, &mut seen), ["registration"]);

    assert_eq!(
        login(&gw, "bob@example.com", "wrong-pass-1").await.status,
        401
    );
    assert_eq!(new_events(&gw, &mut seen), ["login_failure"]);
    assert_eq!(
        login(&gw, "bob@example.com", "wrong-pass-1").await.status,
        401
    );
    assert_eq!(new_events(&gw, &mut seen), ["login_failure", "lockout"]);
    // An unknown account fails the same way, with no user id.
    assert_eq!(
        login(&gw, "eve@example.com", "wrong-pass-1").await.status,
        401
    );
    assert_eq!(new_events(&gw, &mut seen), ["login_failure"]);

    let carol = register(&gw, "carol@example.com", "password-1").await;
    new_events(&gw, &mut seen);
    let session = login(&gw, "carol@example.com", "password-1").await;
    assert_eq!(session.status, 200);
    assert_eq!(new_events(&gw, &mut seen), ["login_success"]);
    let carol_id = carol.json()["user"]["id"].as_str().unwrap().to_owned();
    let refresh_token = field(&session, "refreshToken");
    let access = field(&session, "accessToken");
    secrets.extend([
        refresh_token.clone(),
        access.clone(),
        field(&carol, "refreshToken"),
    ]);
    secrets.extend(
        session
            .headers
            .get_all("set-cookie")
            .iter()
            .filter_map(|c| {
                c.to_str()
                    .ok()?
                    .split(';')
                    .next()?
                    .split_once('=')
                    .map(|(_, v)| v.to_owned())
            }),
    );

    // Refreshing twice with one token: the second is reuse.
    for _ in 0..2 {
        gw.client()
            .post("/auth/refresh")
            .json(&json!({"refreshToken": refresh_token}))
            .send()
            .await;
    }
    assert_eq!(new_events(&gw, &mut seen), ["refresh_reuse_detected"]);

    let session = login(&gw, "carol@example.com", "password-1").await;
    new_events(&gw, &mut seen);
    let logged_out = gw
        .client()
        .post("/auth/logout")
        .json(&json!({"refreshToken": field(&session, "refreshToken")}))
        .send()
        .await;
    assert_eq!(logged_out.status, 204);
    assert_eq!(new_events(&gw, &mut seen), ["logout"]);

    let session = login(&gw, "carol@example.com", "password-1").await;
    new_events(&gw, &mut seen);
    let access = field(&session, "accessToken");
    secrets.push(access.clone());
    let changed = gw
        .client()
        .post("/auth/password")
        .bearer(&access)
        .json(&json!({"currentPassword": "password-1", "newPassword": "password-2"}))
        .send()
        .await;
    assert_eq!(changed.status, 204);
    assert_eq!(new_events(&gw, &mut seen), ["password_change"]);

    let session = login(&gw, "carol@example.com", "password-2").await;
    new_events(&gw, &mut seen);
    let all = gw
        .client()
        .post("/auth/logout-all")
        .bearer(&field(&session, "accessToken"))
        .send()
        .await;
    assert_eq!(all.status, 204);
    assert_eq!(new_events(&gw, &mut seen), ["logout_all"]);

    register(&gw, "root@example.com", "password-1").await;
    promote(&gw, "root@example.com").await;
    let root = login(&gw, "root@example.com", "password-1").await;
    let root_access = field(&root, "accessToken");
    secrets.push(root_access.clone());
    let root_id = root.json()["user"]["id"].as_str().unwrap().to_owned();
    new_events(&gw, &mut seen);
    let listed = gw
        .client()
        .get("/auth/users")
        .bearer(&root_access)
        .send()
        .await;
    assert_eq!(listed.status, 200);
    let role = gw
        .client()
        .request(http::Method::PATCH, &format!("/auth/users/{carol_id}"))
        .bearer(&root_access)
        .json(&json!({"role": "editor"}))
        .send()
        .await;
    assert_eq!(role.status, 200);
    let deleted = gw
        .client()
        .request(http::Method::DELETE, &format!("/auth/users/{bob_id}"))
        .bearer(&root_access)
        .send()
        .await;
    assert_eq!(deleted.status, 204);
    assert_eq!(
        new_events(&gw, &mut seen),
        ["admin_list_users", "role_change", "user_deletion"]
    );

    let lines = audit_lines(&gw);
    let role_change = lines.iter().find(|l| l["event"] == "role_change").unwrap();
    assert_eq!(role_change["user_id"], carol_id.as_str());
    assert_eq!(role_change["email"], "carol@example.com");
    assert_eq!(role_change["actor"], root_id.as_str());
    assert_eq!(role_change["detail"], "editor");
    let registration = lines.iter().find(|l| l["event"] == "registration").unwrap();
    assert_eq!(registration["request_id"], bob_request.as_str());
    let lockout = lines.iter().find(|l| l["event"] == "lockout").unwrap();
    assert_eq!(lockout["user_id"], bob_id.as_str());
    let unknown = lines
        .iter()
        .find(|l| l["email"] == "eve@example.com")
        .unwrap();
    assert_eq!(unknown["email"], "eve@example.com");
    assert_eq!(unknown["user_id"], Value::Null);
    for line in &lines {
        assert_eq!(line["peer"], "127.0.0.1", "{line}");
        // The id the answer carried in X-Request-Id, so an audit line can be
        // matched with the request's log lines.
        assert!(
            line["request_id"].as_str().is_some_and(|id| !id.is_empty()),
            "{line}"
        );
        assert!(line["time"].as_str().unwrap().ends_with('Z'), "{line}");
        for key in [
            "event",
            "user_id",
            "email",
            "peer",
            "request_id",
            "actor",
            "detail",
        ] {
            assert!(line.get(key).is_some(), "{key} missing from {line}");
        }
    }
    let text = std::fs::read_to_string(gw.files.path().join("audit.log")).unwrap();
    for secret in &secrets {
        assert!(!secret.is_empty());
        assert!(
            !text.contains(secret.as_str()),
            "a secret is in the audit file"
        );
    }
    // Nothing here reached the upstream: no proxied request was made.
    assert!(upstream.received().is_empty());
}
