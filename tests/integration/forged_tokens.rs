//! Every bearer failure is a 401 with its code and challenge, and the
//! upstream never sees the request.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

use crate::support::gateway::SECRET;
use crate::support::{Behavior, Response, TestGateway, Upstream};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

async fn setup() -> (Upstream, TestGateway) {
    let upstream = Upstream::start(Behavior::Ok).await;
    let routes = format!(
        "[[route]]\nname = \"api\"\npath_prefix = \"/api/\"\nupstream = \"{}\"\n",
        upstream.url()
    );
    (upstream, TestGateway::start(&routes).await)
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn good_claims() -> Value {
    json!({
        "sub": "u1", "role": "admin", "iss": "authgate", "aud": "authgate",
        "iat": now(), "exp": now() + 600, "jti": "j1"
    })
}

fn access_header(alg: Algorithm) -> Header {
    let mut header = Header::new(alg);
    header.typ = Some("at+jwt".to_owned());
    header
}

fn sign(header: &Header, claims: &Value, key: &[u8]) -> String {
    jsonwebtoken::encode(header, claims, &EncodingKey::from_secret(key)).unwrap()
}

/// A token with a hand-written header and no or arbitrary signature.
fn raw_token(header: &Value, claims: &Value, signature: &str) -> String {
    format!(
        "{}.{}.{signature}",
        B64.encode(header.to_string()),
        B64.encode(claims.to_string())
    )
}

fn assert_rejected(response: &Response, code: &str) {
    assert_eq!(response.status, 401, "{code}: {:?}", response.body);
    assert_eq!(response.code(), code);
    let challenge = response.header("www-authenticate").unwrap_or_default();
    assert!(challenge.starts_with("Bearer"), "challenge {challenge:?}");
    if code != "MISSING_TOKEN" {
        assert!(challenge.contains("error=\"invalid_token\""), "{challenge}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_and_malformed_authorization() {
    let (upstream, gw) = setup().await;
    let client = gw.client();
    assert_rejected(&client.get("/api/x").send().await, "MISSING_TOKEN");
    for value in [
        "Basic dXNlcjpwYXNz",
        "Bearer",
        "Token abc",
        "Bearer a.b.c, Bearer d.e.f",
    ] {
        let response = client
            .get("/api/x")
            .header("authorization", value)
            .send()
            .await;
        assert_rejected(&response, "INVALID_FORMAT");
    }
    let token = gw.token("u1", "admin");
    let twice = client
        .get("/api/x")
        .bearer(&token)
        .bearer(&token)
        .send()
        .await;
    assert_rejected(&twice, "INVALID_FORMAT");
    // Never from the query string.
    let query = client
        .get(&format!("/api/x?access_token={token}"))
        .send()
        .await;
    assert_rejected(&query, "MISSING_TOKEN");
    assert_eq!(upstream.count(), 0);

    assert_eq!(client.get("/api/x").bearer(&token).send().await.status, 200);
    assert_eq!(upstream.count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_tokens_are_refused_before_the_upstream() {
    let (upstream, gw) = setup().await;
    let client = gw.client();
    let claims = good_claims();
    let hs256 = access_header(Algorithm::HS256);

    let mut cases: Vec<(&str, String, &str)> = Vec::new();
    for alg in ["none", "None", "NONE", "nOnE"] {
        let header = json!({"alg": alg, "typ": "at+jwt"});
        cases.push(("alg none", raw_token(&header, &claims, ""), "INVALID_TOKEN"));
    }
    let header = json!({"alg": "HS256", "typ": "at+jwt"});
    cases.push((
        "empty signature",
        raw_token(&header, &claims, ""),
        "INVALID_TOKEN",
    ));
    cases.push((
        "other key",
        sign(&hs256, &claims, b"another-secret-another-secret-0123456789"),
        "INVALID_TOKEN",
    ));
    cases.push(("empty key", sign(&hs256, &claims, b""), "INVALID_TOKEN"));
    cases.push((
        "HS384 with our key",
        sign(&access_header(Algorithm::HS384), &claims, SECRET),
        "INVALID_TOKEN",
    ));
    let mut expired = claims.clone();
    expired["iat"] = json!(now() - 7200);
    expired["exp"] = json!(now() - 3600);
    cases.push(("expired", sign(&hs256, &expired, SECRET), "TOKEN_EXPIRED"));
    let mut no_exp = claims.clone();
    no_exp.as_object_mut().unwrap().remove("exp");
    cases.push((
        "missing exp",
        sign(&hs256, &no_exp, SECRET),
        "INVALID_TOKEN",
    ));
    let mut wrong_iss = claims.clone();
    wrong_iss["iss"] = json!("someone-else");
    cases.push((
        "wrong iss",
        sign(&hs256, &wrong_iss, SECRET),
        "INVALID_TOKEN",
    ));
    let mut wrong_aud = claims.clone();
    wrong_aud["aud"] = json!("another-service");
    cases.push((
        "wrong aud",
        sign(&hs256, &wrong_aud, SECRET),
        "INVALID_TOKEN",
    ));
    let mut no_iss = claims.clone();
    no_iss.as_object_mut().unwrap().remove("iss");
    cases.push((
        "missing iss",
        sign(&hs256, &no_iss, SECRET),
        "INVALID_TOKEN",
    ));
    let mut future_nbf = claims.clone();
    future_nbf["nbf"] = json!(now() + 3600);
    cases.push((
        "nbf in future",
        sign(&hs256, &future_nbf, SECRET),
        "INVALID_TOKEN",
    ));
    let mut future_iat = claims.clone();
    future_iat["iat"] = json!(now() + 3600);
    cases.push((
        "iat in future",
        sign(&hs256, &future_iat, SECRET),
        "INVALID_TOKEN",
    ));
    cases.push((
        "no typ",
        sign(&Header::new(Algorithm::HS256), &claims, SECRET),
        "INVALID_TOKEN",
    ));
    // Signed with our key, but naming a user id or role that cannot be
    // written as the identity header as it stands.
    for (name, claim, value) in [
        ("sub with surrounding space", "sub", " u1"),
        ("sub with CR LF", "sub", "u1\r\nx-user-role: admin"),
        ("role outside the alphabet", "role", "admin\n"),
    ] {
        let mut unsafe_claims = claims.clone();
        unsafe_claims[claim] = json!(value);
        cases.push((name, sign(&hs256, &unsafe_claims, SECRET), "INVALID_TOKEN"));
    }
    // Edited payload: a valid token whose claims are swapped for a higher role.
    let valid = gw.token("u1", "viewer");
    let parts: Vec<&str> = valid.split('.').collect();
    let mut elevated: Value = serde_json::from_slice(&B64.decode(parts[1]).unwrap()).unwrap();
    elevated["role"] = json!("admin");
    let edited = format!(
        "{}.{}.{}",
        parts[0],
        B64.encode(elevated.to_string()),
        parts[2]
    );
    cases.push(("edited payload", edited, "INVALID_TOKEN"));
    let mut kid_header = hs256.clone();
    kid_header.kid = Some("../../dev/null".to_owned());
    cases.push((
        "kid header",
        sign(&kid_header, &claims, SECRET),
        "INVALID_TOKEN",
    ));
    let mut jku_header = hs256.clone();
    jku_header.jku = Some("https://attacker.example/jwks".to_owned());
    cases.push((
        "jku with attacker key",
        sign(
            &jku_header,
            &claims,
            b"attacker-key-attacker-key-attacker-key!!",
        ),
        "INVALID_TOKEN",
    ));
    cases.push((
        "not a jwt",
        "opaque-refresh-token-value".to_owned(),
        "INVALID_TOKEN",
    ));
    cases.push(("oversized", "a".repeat(10_000), "INVALID_TOKEN"));

    // Twice each: the second answer comes from the verified-token cache,
    // which keeps a refusal found after the signature with the token.
    for (name, token, code) in &cases {
        for attempt in 1..=2 {
            let response = client.get("/api/x").bearer(token).send().await;
            assert_eq!(response.status, 401, "{name}, attempt {attempt}");
            assert_eq!(response.code(), *code, "{name}, attempt {attempt}");
        }
    }
    assert_eq!(upstream.count(), 0, "a forged token reached the upstream");

    // The gateway is still serving and the check is not vacuous.
    assert_eq!(client.get("/api/x").bearer(&valid).send().await.status, 200);
    assert_eq!(upstream.count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leeway_tolerates_small_clock_skew() {
    let (upstream, gw) = setup().await;
    let skewed = gw.token_at("u1", "viewer", SystemTime::now() + Duration::from_secs(10));
    let response = gw.client().get("/api/x").bearer(&skewed).send().await;
    assert_eq!(response.status, 200);
    assert_eq!(upstream.count(), 1);
}
