//! Signing keys through the real gateway: a token of each algorithm, the
//! JWKS, rotation without logging anyone out, the forged-key cases refused
//! before the upstream, and the `authgate keys` commands with SIGHUP.

use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::signature::KeyPair as _;
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rustls_pki_types::pem::PemObject;
use serde_json::{json, Value};

use crate::support::gateway::{BinaryGateway, GatewayFiles};
use crate::support::{Behavior, GatewayOptions, TestClient, TestGateway, Upstream};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;
const ALGORITHMS: [&str; 6] = ["HS256", "HS384", "HS512", "EdDSA", "ES256", "RS256"];

fn options(upstream: &Upstream, algorithm: &'static str) -> GatewayOptions {
    GatewayOptions {
        routes: format!(
            "[[route]]\nname = \"api\"\npath_prefix = \"/api/\"\nupstream = \"{}\"\n",
            upstream.url()
        ),
        keys: Some(algorithm),
        ..GatewayOptions::default()
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

async fn status(client: &TestClient, token: &str) -> u16 {
    client
        .get("/api/x")
        .bearer(token)
        .send()
        .await
        .status
        .as_u16()
}

async fn jwks(client: &TestClient) -> Value {
    let response = client.get("/.well-known/jwks.json").send().await;
    assert_eq!(response.status, 200);
    response.json()
}

fn kids(jwks: &Value) -> Vec<String> {
    let mut kids: Vec<String> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_owned())
        .collect();
    kids.sort();
    kids
}

fn kid_of(token: &str) -> String {
    jsonwebtoken::decode_header(token).unwrap().kid.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_of_each_algorithm_is_verified() {
    for algorithm in ALGORITHMS {
        let upstream = Upstream::start(Behavior::Ok).await;
        let gw = TestGateway::start_with(options(&upstream, algorithm)).await;
        let token = gw.token("u1", "admin");
        let header = jsonwebtoken::decode_header(&token).unwrap();
        assert_eq!(format!("{:?}", header.alg), algorithm);
        assert!(header.kid.is_some());
        assert_eq!(status(&gw.client(), &token).await, 200, "{algorithm}");
        assert_eq!(upstream.count(), 1, "{algorithm}");
        assert_eq!(upstream.only().headers["x-user-id"], "u1");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwks_publishes_the_public_keys_that_verify_with_a_cache_lifetime() {
    let upstream = Upstream::start(Behavior::Ok).await;
    let gw = TestGateway::start_with(options(&upstream, "EdDSA")).await;
    let active = kid_of(&gw.token("u1", "admin"));
    let dir = gw.key_dir();
    let es = dir.generate(Algorithm::ES256, now()).unwrap();
    let rs = dir.generate(Algorithm::RS256, now()).unwrap();
    let hs = dir.generate(Algorithm::HS512, now()).unwrap();
    gw.reload_keys();

    let response = gw.client().get("/.well-known/jwks.json").send().await;
    assert_eq!(response.status, 200);
    assert_eq!(
        response.header("content-type"),
        Some("application/jwk-set+json")
    );
    let cache = response.header("cache-control").unwrap();
    assert!(cache.contains("max-age=300"), "{cache}");
    let set = response.json();
    let mut expected = vec![active.clone(), es.clone(), rs.clone()];
    expected.sort();
    assert_eq!(kids(&set), expected, "HMAC key {hs} never published");
    for key in set["keys"].as_array().unwrap() {
        assert_eq!(key["use"], "sig");
        for private in ["d", "p", "q", "dp", "dq", "qi", "k"] {
            assert!(key.get(private).is_none(), "{private} in {key}");
        }
        // Each one is a key a verifier can build (RFC 7517 §4).
        let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(key.clone()).unwrap();
        jsonwebtoken::DecodingKey::from_jwk(&jwk).unwrap();
    }
    let ed = set["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == json!(active))
        .unwrap();
    assert_eq!(
        (ed["kty"].as_str(), ed["crv"].as_str()),
        (Some("OKP"), Some("Ed25519"))
    );
    assert_eq!(ed["alg"], "EdDSA");
    // The well-known path is the gateway's, not a route's.
    assert_eq!(upstream.count(), 0);
    let post = gw.client().post("/.well-known/jwks.json").send().await;
    assert_eq!(post.status, 405);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_publishes_then_activates_and_old_tokens_verify_until_retired() {
    let upstream = Upstream::start(Behavior::Ok).await;
    let gw = TestGateway::start_with(options(&upstream, "EdDSA")).await;
    let client = gw.client();
    let old_token = gw.token("u1", "admin");
    let old = kid_of(&old_token);

    // 1. Publish: the new key is in the JWKS, but the old one still signs.
    let dir = gw.key_dir();
    let new = dir.generate(Algorithm::EdDSA, now()).unwrap();
    gw.reload_keys();
    assert_eq!(kids(&jwks(&client).await).len(), 2);
    assert_eq!(kid_of(&gw.token("u1", "admin")), old);

    // 2. Activate: new tokens carry the new kid; the old ones keep working.
    dir.activate(&new, now()).unwrap();
    gw.reload_keys();
    let new_token = gw.token("u2", "admin");
    assert_eq!(kid_of(&new_token), new);
    assert_eq!(status(&client, &old_token).await, 200);
    assert_eq!(status(&client, &new_token).await, 200);

    // 3. Retire: refused while the old key's tokens can be unexpired.
    let life = gw.config().tokens.access_ttl + gw.config().tokens.leeway;
    assert!(dir.retire(&old, now(), life, false).is_err());
    dir.retire(&old, now(), life, true).unwrap();
    gw.reload_keys();
    assert_eq!(kids(&jwks(&client).await), vec![new.clone()]);
    upstream.clear();
    let refused = client.get("/api/x").bearer(&old_token).send().await;
    assert_eq!(refused.status, 401);
    assert_eq!(refused.code(), "INVALID_TOKEN");
    assert!(upstream.received().is_empty());
    assert_eq!(status(&client, &new_token).await, 200);
    assert_eq!(upstream.count(), 1);
}

/// A token with a hand-written header, signed with `sign` over its input.
fn token_with(header: &Value, claims: &Value, sign: impl Fn(&[u8]) -> String) -> String {
    let input = format!(
        "{}.{}",
        B64.encode(header.to_string()),
        B64.encode(claims.to_string())
    );
    let signature = sign(input.as_bytes());
    format!("{input}.{signature}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_key_choices_never_reach_the_upstream() {
    let upstream = Upstream::start(Behavior::Ok).await;
    let gw = TestGateway::start_with(options(&upstream, "RS256")).await;
    let rsa = kid_of(&gw.token("u1", "admin"));
    let es = gw.key_dir().generate(Algorithm::ES256, now()).unwrap();
    gw.reload_keys();
    let client = gw.client();
    let claims = json!({
        "sub": "attacker", "role": "admin", "iss": "authgate", "aud": "authgate",
        "iat": now(), "exp": now() + 600, "jti": "x"
    });

    // The RSA public key, as an attacker finds it: SPKI PEM from the JWKS.
    let dir = gw.key_dir();
    let record = dir
        .read()
        .unwrap()
        .keys
        .into_iter()
        .find(|r| r.kid == rsa)
        .unwrap();
    let pem = std::fs::read(dir.key_file(&record)).unwrap();
    let der = rustls_pki_types::PrivatePkcs8KeyDer::from_pem_slice(&pem).unwrap();
    let pair = aws_lc_rs::rsa::KeyPair::from_pkcs8(der.secret_pkcs8_der()).unwrap();
    let spki: aws_lc_rs::encoding::PublicKeyX509Der<'static> = pair.public_key().as_der().unwrap();
    let public_pem = format!(
        "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
        base64::engine::general_purpose::STANDARD.encode(spki.as_ref())
    );
    let hmac_with = |secret: Vec<u8>, kid: &str| {
        let mut header = Header::new(Algorithm::HS256);
        header.typ = Some("at+jwt".to_owned());
        header.kid = Some(kid.to_owned());
        jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(&secret)).unwrap()
    };
    let attacker = jsonwebtoken::EncodingKey::from_ed_pem(&ed25519_pem()).unwrap();
    let attacker_jwk = attacker_public_jwk();
    let ed_signed = |header: Value| {
        token_with(&header, &claims, |input| {
            jsonwebtoken::crypto::sign(input, &attacker, Algorithm::EdDSA).unwrap()
        })
    };

    let forged = [
        (
            "RS256 -> HS256 with the PEM public key",
            hmac_with(public_pem.into_bytes(), &rsa),
        ),
        (
            "RS256 -> HS256 with the DER public key",
            hmac_with(spki.as_ref().to_vec(), &rsa),
        ),
        (
            "ES256 with r = s = 0 (CVE-2022-21449)",
            token_with(
                &json!({"alg": "ES256", "typ": "at+jwt", "kid": es}),
                &claims,
                |_| B64.encode([0u8; 64]),
            ),
        ),
        (
            "jku",
            ed_signed(json!({"alg": "EdDSA", "typ": "at+jwt", "kid": "a",
                             "jku": "https://attacker.example/jwks.json"})),
        ),
        (
            "x5u",
            ed_signed(json!({"alg": "EdDSA", "typ": "at+jwt", "kid": "a",
                             "x5u": "https://attacker.example/cert.pem"})),
        ),
        (
            "embedded jwk",
            ed_signed(json!({"alg": "EdDSA", "typ": "at+jwt", "jwk": attacker_jwk})),
        ),
        (
            "kid path traversal",
            hmac_with(b"0123456789abcdef0123456789abcdef".to_vec(), "../keys.json"),
        ),
        (
            "kid path traversal to a key file",
            hmac_with(pem.clone(), &format!("../keys/{rsa}")),
        ),
        (
            "unknown kid",
            ed_signed(json!({"alg": "EdDSA", "typ": "at+jwt", "kid": "nope"})),
        ),
        (
            "no kid",
            ed_signed(json!({"alg": "EdDSA", "typ": "at+jwt"})),
        ),
    ];
    for (case, token) in &forged {
        let response = client.get("/api/x").bearer(token).send().await;
        assert_eq!(response.status, 401, "{case}: {:?}", response.body);
        assert_eq!(response.code(), "INVALID_TOKEN", "{case}");
    }
    assert!(upstream.received().is_empty());
    assert_eq!(status(&client, &gw.token("u1", "admin")).await, 200);
    assert_eq!(upstream.count(), 1);
}

fn ed25519_pem() -> Vec<u8> {
    authgate::auth::keys::material::generate(Algorithm::EdDSA).unwrap()
}

fn attacker_public_jwk() -> Value {
    let pem = ed25519_pem();
    authgate::auth::keys::material::load(Algorithm::EdDSA, &pem)
        .unwrap()
        .public_jwk
        .unwrap()
}

fn authgate(files: &GatewayFiles, args: &[&str]) -> (bool, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_authgate"))
        .arg("--config")
        .arg(&files.config_path)
        .args(args)
        .env_remove("AUTHGATE_ACCESS_SECRET")
        .output()
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).trim().to_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Polls (bounded) until a request with `token` gets `expected`.
async fn eventually(client: &TestClient, token: &str, expected: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if status(client, token).await == expected {
            return;
        }
        assert!(Instant::now() < deadline, "never answered {expected}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_commands_rotate_a_running_gateway_on_sighup() {
    let upstream = Upstream::start(Behavior::Ok).await;
    let files = GatewayFiles::create(&GatewayOptions {
        extra: "[log]\naudit_file = \"{dir}/audit.log\"\n".to_owned(),
        ..options(&upstream, "EdDSA")
    });
    let gateway = BinaryGateway::start(&files, "info");
    let client = gateway.client(&files);
    let token = |files: &GatewayFiles| {
        let (ok, token, stderr) = authgate(files, &["token", "--sub", "u1", "--role", "admin"]);
        assert!(ok, "{stderr}");
        token
    };
    let old_token = token(&files);
    let old = kid_of(&old_token);
    assert_eq!(status(&client, &old_token).await, 200);

    let (ok, new, stderr) = authgate(&files, &["keys", "generate", "--algorithm", "ES256"]);
    assert!(ok, "{stderr}");
    let (ok, list, _) = authgate(&files, &["keys", "list"]);
    assert!(ok);
    assert!(list.contains(&format!("{new}\tES256\tpublished")), "{list}");
    assert!(list.contains(&format!("{old}\tEdDSA\tactive")), "{list}");
    let (ok, _, stderr) = authgate(&files, &["keys", "activate", &new]);
    assert!(ok, "{stderr}");
    let new_token = token(&files);
    assert_eq!(kid_of(&new_token), new);
    // The running gateway learns the new key on SIGHUP, not before.
    assert_eq!(status(&client, &new_token).await, 401);
    gateway.signal("HUP");
    eventually(&client, &new_token, 200).await;
    assert_eq!(status(&client, &old_token).await, 200, "nobody logged out");

    let (ok, _, stderr) = authgate(&files, &["keys", "retire", &old]);
    assert!(!ok);
    assert!(stderr.contains("--force"), "{stderr}");
    let (ok, _, stderr) = authgate(&files, &["keys", "retire", &new]);
    assert!(!ok, "the active key cannot be retired");
    assert!(stderr.contains("activate another key first"), "{stderr}");
    let (ok, _, stderr) = authgate(&files, &["keys", "retire", &old, "--force"]);
    assert!(ok, "{stderr}");
    gateway.signal("HUP");
    eventually(&client, &old_token, 401).await;
    assert_eq!(status(&client, &new_token).await, 200);
    assert!(gateway.log().contains("signing keys reloaded"));
    // Each change is an audit line naming the kid, and nothing more secret.
    let audit = std::fs::read_to_string(files.path().join("audit.log")).unwrap();
    let events: Vec<(String, String)> = audit
        .lines()
        .map(|line| serde_json::from_str::<Value>(line).unwrap())
        .filter(|line| line["event"].as_str().unwrap().starts_with("key_"))
        .map(|line| {
            (
                line["event"].as_str().unwrap().to_owned(),
                line["detail"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        events,
        [
            ("key_generated".to_owned(), new.clone()),
            ("key_activation".to_owned(), new.clone()),
            ("key_retirement".to_owned(), old.clone()),
        ]
    );
    assert!(!audit.contains("PRIVATE KEY"));
}

#[test]
fn outside_dev_mode_a_missing_key_stops_the_start_with_the_command() {
    let upstream_url = "http://127.0.0.1:9";
    let files = GatewayFiles::create(&GatewayOptions {
        routes: format!(
            "[[route]]\nname = \"api\"\npath_prefix = \"/api/\"\nupstream = \"{upstream_url}\"\n"
        ),
        keys: Some("EdDSA"),
        ..GatewayOptions::default()
    });
    std::fs::remove_dir_all(files.path().join("keys")).unwrap();
    let (ok, _, stderr) = authgate(&files, &["serve"]);
    assert!(!ok);
    assert!(
        stderr.contains("authgate keys generate --algorithm EdDSA --activate"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// A gateway with EdDSA keys in front of `upstream`, and the access and
/// refresh tokens of an account registered and logged in on it.
async fn signed_in(upstream: &Upstream) -> (TestGateway, String, String) {
    let gw = TestGateway::start_with(GatewayOptions {
        auth: crate::accounts::FAST_HASHING.to_owned(),
        ..options(upstream, "EdDSA")
    })
    .await;
    assert_eq!(
        crate::accounts::register(&gw, "a@example.com", "correct horse")
            .await
            .status,
        201
    );
    let logged_in = crate::accounts::login(&gw, "a@example.com", "correct horse").await;
    let token = |name: &str| logged_in.json()[name].as_str().unwrap().to_owned();
    let (access, refresh) = (token("accessToken"), token("refreshToken"));
    (gw, access, refresh)
}

/// The verified-token cache holds signatures, never decisions: a token seen
/// (and cached) before its session ends is refused after, and one seen
/// before it expires is refused after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cached_token_is_refused_once_revoked_or_expired() {
    let upstream = Upstream::start(Behavior::Ok).await;
    let (gw, access, refresh) = signed_in(&upstream).await;
    let client = gw.client();
    assert_eq!(status(&client, &access).await, 200);
    assert_eq!(status(&client, &access).await, 200);
    assert_eq!(crate::accounts::logout(&gw, &refresh).await.status, 204);
    upstream.clear();
    let revoked = client.get("/api/x").bearer(&access).send().await;
    assert_eq!(revoked.status, 401);
    assert_eq!(revoked.code(), "TOKEN_REVOKED");
    assert!(upstream.received().is_empty());

    // Expiry: a one-second token, cached on first use, then refused.
    let gw = TestGateway::start_with(GatewayOptions {
        tokens: "access_ttl = \"1s\"\nleeway = \"0s\"".to_owned(),
        ..options(&upstream, "EdDSA")
    })
    .await;
    let client = gw.client();
    let token = gw.token("u1", "admin");
    assert_eq!(status(&client, &token).await, 200);
    let deadline = Instant::now() + Duration::from_secs(10);
    let expired = loop {
        let response = client.get("/api/x").bearer(&token).send().await;
        if response.status == 401 {
            break response;
        }
        assert!(Instant::now() < deadline, "never expired");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(expired.code(), "TOKEN_EXPIRED");
    upstream.clear();
    assert_eq!(status(&client, &token).await, 401);
    assert!(upstream.received().is_empty());
}

/// Status and error code of `GET /api/x` with `token` on `sender`'s connection.
async fn on_connection(
    sender: &mut hyper::client::conn::http1::SendRequest<http_body_util::Full<bytes::Bytes>>,
    token: &str,
) -> (u16, String) {
    use http_body_util::BodyExt;
    sender.ready().await.unwrap();
    let request = http::Request::get("/api/x")
        .header("host", "localhost")
        .header("authorization", format!("Bearer {token}"))
        .body(http_body_util::Full::default())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let code = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|json| json["error"].as_str().map(str::to_owned))
        .unwrap_or_default();
    (status, code)
}

/// The error code of a 401 for `token` on `sender`'s connection, after
/// checking that the refused request never reached `upstream`.
async fn refused_on_connection(
    upstream: &Upstream,
    sender: &mut hyper::client::conn::http1::SendRequest<http_body_util::Full<bytes::Bytes>>,
    token: &str,
) -> String {
    upstream.clear();
    let (status, code) = on_connection(sender, token).await;
    assert_eq!(status, 401);
    assert!(upstream.received().is_empty());
    code
}

/// A keep-alive connection whose gateway remembers `access`: two requests
/// with it, both answered 200.
async fn remembering(
    gw: &TestGateway,
    access: &str,
) -> hyper::client::conn::http1::SendRequest<http_body_util::Full<bytes::Bytes>> {
    let mut connection = gw.client().keep_alive().await;
    assert_eq!(on_connection(&mut connection, access).await.0, 200);
    assert_eq!(on_connection(&mut connection, access).await.0, 200);
    connection
}

/// The bytes a connection remembers skip the character check and the
/// signature check; any other bytes on that connection get both, and the
/// same answers as on a fresh connection, before the upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_other_than_the_remembered_token_are_checked_afresh() {
    let upstream = Upstream::start(Behavior::Ok).await;
    let (gw, access, _refresh) = signed_in(&upstream).await;
    let mut connection = remembering(&gw, &access).await;
    // A byte outside the b64token set after the remembered token.
    assert_eq!(
        refused_on_connection(&upstream, &mut connection, &format!("{access}%")).await,
        "INVALID_FORMAT"
    );
    // The remembered token less its last byte: well formed, wrong signature.
    let shortened = access.get(..access.len() - 1).unwrap();
    assert_eq!(
        refused_on_connection(&upstream, &mut connection, shortened).await,
        "INVALID_TOKEN"
    );
    assert_eq!(on_connection(&mut connection, &access).await.0, 200);
}

/// A connection remembers the token it presented last, verified: the same
/// token on the same connection is refused the moment its session is
/// revoked or its key retired, and never reaches the upstream after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_its_connection_remembers_is_refused_once_revoked_or_its_key_retired() {
    let upstream = Upstream::start(Behavior::Ok).await;
    let (gw, access, refresh) = signed_in(&upstream).await;
    let mut connection = remembering(&gw, &access).await;
    assert_eq!(crate::accounts::logout(&gw, &refresh).await.status, 204);
    assert_eq!(
        refused_on_connection(&upstream, &mut connection, &access).await,
        "TOKEN_REVOKED"
    );

    // The key: remembered under the old key set, refused under the new.
    let old_token = gw.token("u1", "admin");
    assert_eq!(on_connection(&mut connection, &old_token).await.0, 200);
    assert_eq!(on_connection(&mut connection, &old_token).await.0, 200);
    let dir = gw.key_dir();
    let new = dir.generate(Algorithm::EdDSA, now()).unwrap();
    dir.activate(&new, now()).unwrap();
    let life = gw.config().tokens.access_ttl + gw.config().tokens.leeway;
    dir.retire(&kid_of(&old_token), now(), life, true).unwrap();
    gw.reload_keys();
    assert_eq!(
        refused_on_connection(&upstream, &mut connection, &old_token).await,
        "INVALID_TOKEN"
    );
    let new_token = gw.token("u2", "admin");
    assert_eq!(on_connection(&mut connection, &new_token).await.0, 200);
    assert_eq!(upstream.count(), 1);
}
