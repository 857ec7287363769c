//! The identity assertion: a backend that verifies it with nothing but the
//! gateway's JWKS knows who the gateway let through, for which route.

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{DecodingKey, Validation};
use serde_json::Value;

use crate::support::gateway::GatewayFiles;
use crate::support::{Behavior, GatewayOptions, TestClient, TestGateway, Upstream};

fn route(name: &str, prefix: &str, upstream: &Upstream) -> String {
    format!(
        "[[route]]\nname = \"{name}\"\npath_prefix = \"{prefix}\"\nupstream = \"{}\"\n\
         identity_assertion = true\n",
        upstream.url()
    )
}

async fn jwks(client: &TestClient) -> JwkSet {
    let response = client.get("/.well-known/jwks.json").send().await;
    assert_eq!(response.status, 200);
    serde_json::from_slice(&response.body).unwrap()
}

/// What a backend does: pick the key by kid from the JWKS, and demand its
/// own route name as the audience and the gateway as the issuer.
fn backend_verify(
    jwks: &JwkSet,
    assertion: &str,
    audience: &str,
) -> jsonwebtoken::errors::Result<Value> {
    let header = jsonwebtoken::decode_header(assertion)?;
    let jwk = jwks
        .find(header.kid.as_deref().unwrap_or_default())
        .expect("kid in the JWKS");
    let key = DecodingKey::from_jwk(jwk)?;
    let mut validation = Validation::new(jwk.common.key_algorithm.unwrap().to_string().parse()?);
    validation.set_audience(&[audience]);
    validation.set_issuer(&["authgate"]);
    validation.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
    Ok(jsonwebtoken::decode::<Value>(assertion, &key, &validation)?.claims)
}

fn assertion_of(upstream: &Upstream, index: usize) -> String {
    upstream.received()[index].headers["x-user-assertion"]
        .to_str()
        .unwrap()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backends_verify_the_assertion_with_the_jwks_alone() {
    let api = Upstream::start(Behavior::Ok).await;
    let other = Upstream::start(Behavior::Ok).await;
    for algorithm in ["EdDSA", "ES256", "RS256"] {
        api.clear();
        other.clear();
        let gw = TestGateway::start_with(GatewayOptions {
            routes: route("api", "/api/", &api) + &route("other", "/other/", &other),
            keys: Some(algorithm),
            ..GatewayOptions::default()
        })
        .await;
        let client = gw.client();
        let token = gw.token("u1", "editor");
        // A client's own assertion, in any spelling, is scrubbed.
        let response = client
            .get("/api/x")
            .bearer(&token)
            .header("x-user-assertion", "forged.by.client")
            .header("x_user_assertion", "forged.by.client")
            .send()
            .await;
        assert_eq!(response.status, 200);
        let headers = &api.only().headers;
        assert_eq!(headers.get_all("x-user-assertion").iter().count(), 1);
        assert!(headers.get("x_user_assertion").is_none());
        let assertion = assertion_of(&api, 0);
        assert_ne!(assertion, "forged.by.client");

        let keys = jwks(&client).await;
        let claims = backend_verify(&keys, &assertion, "api").unwrap();
        assert_eq!(claims["sub"], "u1", "{algorithm}");
        assert_eq!(claims["role"], "editor");
        assert_eq!(claims["iss"], "authgate");
        assert_eq!(claims["aud"], "api");
        let (iat, exp) = (
            claims["iat"].as_u64().unwrap(),
            claims["exp"].as_u64().unwrap(),
        );
        assert!(exp > iat && exp - iat <= 60, "{claims}");
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        assert!(iat.abs_diff(now) < 60);

        // The assertion for "api" means nothing to the backend of "other".
        let wrong = backend_verify(&keys, &assertion, "other").unwrap_err();
        assert!(
            matches!(
                wrong.kind(),
                jsonwebtoken::errors::ErrorKind::InvalidAudience
            ),
            "{wrong:?}"
        );
        // Nor is it an access token for the gateway.
        let replayed = client.get("/api/x").bearer(&assertion).send().await;
        assert_eq!(replayed.status, 401);
        assert_eq!(api.count(), 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_assertion_is_reused_for_the_same_user_and_route_never_across_users() {
    let api = Upstream::start(Behavior::Ok).await;
    let other = Upstream::start(Behavior::Ok).await;
    let gw = TestGateway::start_with(GatewayOptions {
        routes: route("api", "/api/", &api) + &route("other", "/other/", &other),
        keys: Some("EdDSA"),
        ..GatewayOptions::default()
    })
    .await;
    let client = gw.client();
    let alice = gw.token("alice", "editor");
    let bob = gw.token("bob", "editor");
    for token in [&alice, &alice, &bob] {
        assert_eq!(client.get("/api/x").bearer(token).send().await.status, 200);
    }
    assert_eq!(
        client.get("/other/x").bearer(&alice).send().await.status,
        200
    );
    let (first, second, bobs) = (
        assertion_of(&api, 0),
        assertion_of(&api, 1),
        assertion_of(&api, 2),
    );
    assert_eq!(first, second, "signed once, reused");
    assert_ne!(first, bobs);
    let keys = jwks(&client).await;
    assert_eq!(backend_verify(&keys, &bobs, "api").unwrap()["sub"], "bob");
    let others = assertion_of(&other, 0);
    assert_ne!(others, first);
    assert_eq!(
        backend_verify(&keys, &others, "other").unwrap()["sub"],
        "alice"
    );
}

#[tokio::test]
async fn asking_for_an_assertion_with_only_hmac_keys_is_a_config_error() {
    let upstream = "http://127.0.0.1:9";
    let routes = format!(
        "[[route]]\nname = \"api\"\npath_prefix = \"/api/\"\nupstream = \"{upstream}\"\n\
         identity_assertion = true\n"
    );
    // Configured HMAC algorithm: refused when the config is read.
    let files = GatewayFiles::create(&GatewayOptions {
        routes: routes.clone(),
        keys: Some("HS256"),
        ..GatewayOptions::default()
    });
    let err = authgate::config::Config::load(&files.config_path)
        .unwrap_err()
        .to_string();
    assert!(err.contains("identity_assertion"), "{err}");
    assert!(err.contains("EdDSA"), "{err}");
    // The HMAC shortcut (secret_file) with an asymmetric algorithm configured.
    let files = GatewayFiles::create(&GatewayOptions {
        routes,
        tokens: "algorithm = \"EdDSA\"".to_owned(),
        ..GatewayOptions::default()
    });
    let err = authgate::prepare(files.config())
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("identity_assertion"), "{err}");
}
