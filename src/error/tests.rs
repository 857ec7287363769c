use super::*;

fn row(err: GatewayError) -> (u16, &'static str, Option<String>) {
    let code = err.code();
    let response = err.into_response();
    let challenge = response
        .headers()
        .get(WWW_AUTHENTICATE)
        .map(|v| v.to_str().unwrap().to_owned());
    (response.status().as_u16(), code, challenge)
}

#[test]
fn token_failures_are_401_with_a_challenge() {
    let invalid = Some("Bearer realm=\"authgate\", error=\"invalid_token\"".to_owned());
    assert_eq!(
        row(GatewayError::MissingToken),
        (
            401,
            "MISSING_TOKEN",
            Some("Bearer realm=\"authgate\"".to_owned())
        )
    );
    assert_eq!(
        row(GatewayError::InvalidFormat),
        (401, "INVALID_FORMAT", invalid.clone())
    );
    assert_eq!(
        row(GatewayError::TokenExpired),
        (401, "TOKEN_EXPIRED", invalid.clone())
    );
    assert_eq!(
        row(GatewayError::InvalidToken("x")),
        (401, "INVALID_TOKEN", invalid.clone())
    );
    assert_eq!(
        row(GatewayError::TokenRevoked),
        (401, "TOKEN_REVOKED", invalid)
    );
}

#[test]
fn every_other_outcome_has_its_status_and_code() {
    let rows: Vec<(GatewayError, u16, &str)> = vec![
        (GatewayError::Forbidden, 403, "FORBIDDEN"),
        (GatewayError::NotFound, 404, "NOT_FOUND"),
        (GatewayError::MethodNotAllowed, 405, "METHOD_NOT_ALLOWED"),
        (GatewayError::BadRequest("x"), 400, "BAD_REQUEST"),
        (
            GatewayError::InvalidPath(crate::path::PathError::Backslash),
            400,
            "INVALID_PATH",
        ),
        (GatewayError::PayloadTooLarge, 413, "PAYLOAD_TOO_LARGE"),
        (GatewayError::UriTooLong, 414, "URI_TOO_LONG"),
        (GatewayError::RequestTimeout, 408, "REQUEST_TIMEOUT"),
        (
            GatewayError::MalformedJson("x".into()),
            400,
            "MALFORMED_JSON",
        ),
        (GatewayError::InvalidCredentials, 401, "INVALID_CREDENTIALS"),
        (GatewayError::EmailTaken, 409, "EMAIL_TAKEN"),
        (GatewayError::RegistrationClosed, 403, "REGISTRATION_CLOSED"),
        (
            GatewayError::InvalidRefreshToken,
            401,
            "INVALID_REFRESH_TOKEN",
        ),
        (
            GatewayError::TokenReuseDetected,
            401,
            "TOKEN_REUSE_DETECTED",
        ),
        (GatewayError::RefreshExpired, 401, "REFRESH_EXPIRED"),
        (GatewayError::CsrfFailed, 403, "CSRF_FAILED"),
        (
            GatewayError::UpstreamUnavailable("refused".into()),
            502,
            "UPSTREAM_UNAVAILABLE",
        ),
        (
            GatewayError::UpstreamTimeout(Duration::from_secs(1)),
            504,
            "UPSTREAM_TIMEOUT",
        ),
        (GatewayError::internal("boom"), 500, "INTERNAL_ERROR"),
    ];
    for (err, status, code) in rows {
        let (got_status, got_code, _) = row(err);
        assert_eq!((got_status, got_code), (status, code));
    }
}

#[test]
fn waits_carry_retry_after_rounded_up() {
    let response = GatewayError::TooManyRequests {
        retry_after: Duration::from_millis(1500),
    }
    .into_response();
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers().get(RETRY_AFTER).unwrap(), "2");
    let response = GatewayError::Busy {
        retry_after: Duration::ZERO,
    }
    .into_response();
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers().get(RETRY_AFTER).unwrap(), "1");
}

#[test]
fn internal_detail_never_reaches_the_body() {
    let response = GatewayError::internal("secret database path /x").into_response();
    let crate::body::ResponseBody::Full { inner } = response.into_body() else {
        panic!("expected a full body");
    };
    let bytes = futures_body(inner);
    assert!(!String::from_utf8_lossy(&bytes).contains("/x"));
}

fn futures_body(body: http_body_util::Full<bytes::Bytes>) -> bytes::Bytes {
    use http_body_util::BodyExt;
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(async { body.collect().await.unwrap().to_bytes() })
}

#[test]
fn store_outages_are_503_with_retry_after() {
    for (err, code) in [
        (
            GatewayError::RevocationsStale {
                stale_for: Duration::from_secs(31),
            },
            "REVOCATIONS_STALE",
        ),
        (
            GatewayError::StoreUnavailable("pool timed out".into()),
            "STORE_UNAVAILABLE",
        ),
    ] {
        assert_eq!(err.code(), code);
        let response = err.into_response();
        assert_eq!(response.status(), 503);
        assert_eq!(response.headers().get(RETRY_AFTER).unwrap(), "2");
        assert!(response.headers().get(WWW_AUTHENTICATE).is_none());
    }
}

#[test]
fn an_unreachable_store_is_503_not_500() {
    let down = crate::store::StoreError::Unavailable("connection refused".into());
    assert_eq!(GatewayError::internal(down).status(), 503);
    let bug = crate::store::StoreError::Invalid("x");
    assert_eq!(GatewayError::internal(bug).status(), 500);
}
