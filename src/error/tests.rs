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

const BARE: Option<&str> = Some("Bearer realm=\"authgate\"");
const INVALID: Option<&str> = Some("Bearer realm=\"authgate\", error=\"invalid_token\"");

/// One row per variant: a pattern, an instance, and the status, code and
/// challenge it must answer with. The patterns also make an exhaustive
/// `match` with no wildcard, so a variant added without a row does not
/// compile, and each instance must match its own row's pattern.
macro_rules! error_table {
    ($($pattern:pat => $sample:expr => ($status:expr, $code:expr, $challenge:expr),)*) => {
        /// Exhaustive: the compiler names any variant without a row.
        fn expected(err: &GatewayError) -> (u16, &'static str, Option<&'static str>) {
            use GatewayError::*;
            match err {
                $($pattern => ($status, $code, $challenge),)*
            }
        }

        fn samples() -> Vec<(&'static str, GatewayError, fn(&GatewayError) -> bool)> {
            use GatewayError::*;
            vec![$((stringify!($pattern), $sample, |err| matches!(err, $pattern)),)*]
        }
    };
}

error_table! {
    MissingToken => MissingToken => (401, "MISSING_TOKEN", BARE),
    InvalidFormat => InvalidFormat => (401, "INVALID_FORMAT", INVALID),
    TokenExpired => TokenExpired => (401, "TOKEN_EXPIRED", INVALID),
    InvalidToken(_) => InvalidToken(TokenError::BadSignature) => (401, "INVALID_TOKEN", INVALID),
    TokenRevoked => TokenRevoked => (401, "TOKEN_REVOKED", INVALID),
    Forbidden => Forbidden => (403, "FORBIDDEN", None),
    InvalidApiKey => InvalidApiKey => (401, "INVALID_API_KEY", INVALID),
    ApiKeyExpired => ApiKeyExpired => (401, "API_KEY_EXPIRED", INVALID),
    ApiKeyNotAccepted => ApiKeyNotAccepted => (401, "API_KEY_NOT_ACCEPTED", INVALID),
    ApiKeyRoleTooHigh => ApiKeyRoleTooHigh => (403, "ROLE_EXCEEDS_OWNER", None),
    InvalidKeyName => InvalidKeyName => (400, "INVALID_KEY_NAME", None),
    InvalidExpiry => InvalidExpiry => (400, "INVALID_EXPIRY", None),
    ApiKeyNotFound => ApiKeyNotFound => (404, "API_KEY_NOT_FOUND", None),
    BadRequest(_) => BadRequest("x") => (400, "BAD_REQUEST", None),
    InvalidPath(_) => InvalidPath(crate::path::PathError::Backslash)
        => (400, "INVALID_PATH", None),
    NotFound => NotFound => (404, "NOT_FOUND", None),
    MethodNotAllowed => MethodNotAllowed => (405, "METHOD_NOT_ALLOWED", None),
    PayloadTooLarge => PayloadTooLarge => (413, "PAYLOAD_TOO_LARGE", None),
    RequestTimeout => RequestTimeout => (408, "REQUEST_TIMEOUT", None),
    UriTooLong => UriTooLong => (414, "URI_TOO_LONG", None),
    HeadersTooLarge => HeadersTooLarge => (431, "HEADERS_TOO_LARGE", None),
    MalformedJson(_) => MalformedJson("x".into()) => (400, "MALFORMED_JSON", None),
    UnsupportedMediaType => UnsupportedMediaType => (415, "UNSUPPORTED_MEDIA_TYPE", None),
    InvalidEmail(_) => InvalidEmail(EmailError::Shape) => (400, "INVALID_EMAIL", None),
    WeakPassword => WeakPassword => (400, "WEAK_PASSWORD", None),
    PasswordTooLong => PasswordTooLong => (400, "PASSWORD_TOO_LONG", None),
    InvalidRole(_) => InvalidRole(RoleError) => (400, "INVALID_ROLE", None),
    InvalidCredentials => InvalidCredentials => (401, "INVALID_CREDENTIALS", BARE),
    EmailTaken => EmailTaken => (409, "EMAIL_TAKEN", None),
    RegistrationClosed => RegistrationClosed => (403, "REGISTRATION_CLOSED", None),
    InvalidRefreshToken => InvalidRefreshToken => (401, "INVALID_REFRESH_TOKEN", BARE),
    TokenReuseDetected => TokenReuseDetected => (401, "TOKEN_REUSE_DETECTED", BARE),
    RefreshExpired => RefreshExpired => (401, "REFRESH_EXPIRED", BARE),
    CsrfFailed => CsrfFailed => (403, "CSRF_FAILED", None),
    CrossSite => CrossSite => (403, "CSRF_FAILED", None),
    UserNotFound => UserNotFound => (404, "USER_NOT_FOUND", None),
    TooManyRequests { .. } => TooManyRequests { retry_after: Duration::from_secs(1) }
        => (429, "TOO_MANY_REQUESTS", None),
    Busy { .. } => Busy { retry_after: Duration::from_secs(1) } => (503, "SERVICE_BUSY", None),
    RevocationsStale { .. } => RevocationsStale { stale_for: Duration::from_secs(31) }
        => (503, "REVOCATIONS_STALE", None),
    StoreUnavailable(_) => StoreUnavailable("pool timed out".into())
        => (503, "STORE_UNAVAILABLE", None),
    UpstreamUnavailable(_) => UpstreamUnavailable("refused".into())
        => (502, "UPSTREAM_UNAVAILABLE", None),
    UpstreamTimeout(_) => UpstreamTimeout(Duration::from_secs(1))
        => (504, "UPSTREAM_TIMEOUT", None),
    NoHealthyUpstream => NoHealthyUpstream => (502, "UPSTREAM_UNAVAILABLE", None),
    UpstreamBusy(_) => UpstreamBusy("full".into()) => (503, "UPSTREAM_BUSY", None),
    Internal(_) => GatewayError::internal("boom") => (500, "INTERNAL_ERROR", None),
}

#[test]
fn every_variant_has_its_status_code_and_challenge() {
    for (pattern, err, matches_row) in samples() {
        assert!(
            matches_row(&err),
            "the sample of row {pattern} is another variant"
        );
        let (status, code, challenge) = expected(&err);
        assert_eq!(
            row(err),
            (status, code, challenge.map(str::to_owned)),
            "{pattern}"
        );
    }
}

/// Each typed error of `auth` against the row it becomes: status, code and
/// challenge, through the one `From` in `error.rs`.
#[test]
fn auth_errors_become_their_rows() {
    let bare = Some("Bearer realm=\"authgate\"".to_owned());
    let invalid = Some("Bearer realm=\"authgate\", error=\"invalid_token\"".to_owned());
    let bearer = [
        (BearerError::Missing, "MISSING_TOKEN", &bare),
        (BearerError::Malformed, "INVALID_FORMAT", &invalid),
        (BearerError::Oversized, "INVALID_TOKEN", &invalid),
    ];
    for (err, code, challenge) in bearer {
        let expected = (401, code, challenge.clone());
        assert_eq!(row(err.into()), expected, "{err:?}");
        assert_eq!(row(AuthError::from(err).into()), expected, "{err:?}");
    }
    use TokenError::*;
    let token = [
        (Oversized, "INVALID_TOKEN"),
        (BadSignature, "INVALID_TOKEN"),
        (AlgorithmNotAllowed, "INVALID_TOKEN"),
        (WrongIssuer, "INVALID_TOKEN"),
        (WrongAudience, "INVALID_TOKEN"),
        (MissingClaim, "INVALID_TOKEN"),
        (Malformed, "INVALID_TOKEN"),
        (NotAccessToken, "INVALID_TOKEN"),
        (KeySelectingHeader, "INVALID_TOKEN"),
        (Expired, "TOKEN_EXPIRED"),
        (NotYetValid, "INVALID_TOKEN"),
        (IssuedInFuture, "INVALID_TOKEN"),
        (UnsafeSubject, "INVALID_TOKEN"),
        (UnsafeRole, "INVALID_TOKEN"),
    ];
    for (err, code) in token {
        let expected = (401, code, invalid.clone());
        assert_eq!(row(err.into()), expected, "{err:?}");
        assert_eq!(row(AuthError::from(err).into()), expected, "{err:?}");
    }
    assert_eq!(
        row(AuthError::Revoked.into()),
        (401, "TOKEN_REVOKED", invalid.clone())
    );
}

#[test]
fn session_errors_become_their_rows() {
    let bare = Some("Bearer realm=\"authgate\"".to_owned());
    let mint = || {
        MintError(jsonwebtoken::errors::Error::from(
            jsonwebtoken::errors::ErrorKind::InvalidKeyFormat,
        ))
    };
    let rows: Vec<(SessionError, u16, &str, Option<String>)> = vec![
        (
            SessionError::UserChanged,
            401,
            "INVALID_CREDENTIALS",
            bare.clone(),
        ),
        (
            SessionError::UnknownToken,
            401,
            "INVALID_REFRESH_TOKEN",
            bare.clone(),
        ),
        (SessionError::Expired, 401, "REFRESH_EXPIRED", bare.clone()),
        (SessionError::Reused, 401, "TOKEN_REUSE_DETECTED", bare),
        (
            SessionError::Throttled(Throttled {
                retry_after: Duration::from_secs(3),
            }),
            429,
            "TOO_MANY_REQUESTS",
            None,
        ),
        (
            SessionError::Store(crate::store::StoreError::Invalid("x")),
            500,
            "INTERNAL_ERROR",
            None,
        ),
        (SessionError::Mint(mint()), 500, "INTERNAL_ERROR", None),
        (SessionError::UnreadableTagKey, 500, "INTERNAL_ERROR", None),
        (
            SessionError::RotationFailed(std::sync::Arc::new(crate::store::StoreError::Invalid(
                "x",
            ))),
            500,
            "INTERNAL_ERROR",
            None,
        ),
        (
            SessionError::StoreUnavailable(std::sync::Arc::new(
                crate::store::StoreError::Unavailable("pool timed out".into()),
            )),
            503,
            "STORE_UNAVAILABLE",
            None,
        ),
    ];
    for (err, status, code, challenge) in rows {
        let what = format!("{err:?}");
        assert_eq!(row(err.into()), (status, code, challenge), "{what}");
    }
    assert_eq!(row(mint().into()), (500, "INTERNAL_ERROR", None));
    let throttled = GatewayError::from(Throttled {
        retry_after: Duration::from_secs(3),
    })
    .into_response();
    assert_eq!(throttled.status(), 429);
    assert_eq!(throttled.headers().get(RETRY_AFTER).unwrap(), "3");
}

#[test]
fn new_password_failures_are_two_outcomes() {
    use crate::account::new_password::{MAX_PASSWORD_BYTES, MIN_PASSWORD_CHARS};
    let short = GatewayError::from(NewPasswordError::TooShort);
    assert_eq!(short.code(), "WEAK_PASSWORD");
    assert!(short.message().contains(&format!(" {MIN_PASSWORD_CHARS} ")));
    let long = GatewayError::from(NewPasswordError::TooLong);
    assert_eq!(long.code(), "PASSWORD_TOO_LONG");
    assert!(long.message().contains(&format!(" {MAX_PASSWORD_BYTES} ")));
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

#[test]
fn grpc_requests_get_a_grpc_status_in_an_http_200() {
    let rows: Vec<(GatewayError, &str)> = vec![
        (GatewayError::MissingToken, "16"),
        (GatewayError::TokenExpired, "16"),
        (GatewayError::Forbidden, "7"),
        (GatewayError::NotFound, "12"),
        (GatewayError::BadRequest("x"), "3"),
        (GatewayError::PayloadTooLarge, "8"),
        (
            GatewayError::TooManyRequests {
                retry_after: Duration::from_secs(1),
            },
            "8",
        ),
        (GatewayError::UpstreamTimeout(Duration::from_secs(1)), "4"),
        (GatewayError::UpstreamUnavailable("refused".into()), "14"),
        (GatewayError::NoHealthyUpstream, "14"),
        (GatewayError::UpstreamBusy("full".into()), "14"),
        (GatewayError::internal("boom"), "13"),
    ];
    for (err, status) in rows {
        let message = err.message();
        let response = err.into_response_for(true);
        assert_eq!(response.status(), 200);
        let headers = response.headers();
        assert_eq!(headers[CONTENT_TYPE], "application/grpc");
        assert_eq!(headers["grpc-status"], status);
        assert_eq!(headers["grpc-message"], message);
    }
    let missing = GatewayError::MissingToken.into_response_for(true);
    assert!(missing.headers().contains_key(WWW_AUTHENTICATE));
    assert_eq!(
        GatewayError::Forbidden.into_response_for(false).status(),
        403
    );
}

#[test]
fn grpc_is_recognised_by_content_type() {
    let with = |value: &str| {
        let mut headers = http::HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_str(value).unwrap());
        is_grpc(&headers)
    };
    assert!(with("application/grpc"));
    assert!(with("application/grpc+proto"));
    assert!(with("Application/GRPC; charset=utf-8"));
    assert!(!with("application/grpc-web"));
    assert!(!with("application/json"));
    assert!(!is_grpc(&http::HeaderMap::new()));
    assert_eq!(grpc_percent_encode("50% off\n"), "50%25 off%0A");
}
