//! The one place a client-visible failure becomes a status, a machine-readable
//! code, a fixed message and (for 401) a `WWW-Authenticate` challenge — or,
//! for a gRPC request, an HTTP 200 carrying `grpc-status` and `grpc-message`.
//!
//! Handlers return [`GatewayError`]; `service.rs` logs it once and calls
//! [`GatewayError::into_response_for`]. Internal causes stay in the log. The
//! typed errors of `auth` (which knows nothing of HTTP) become a
//! [`GatewayError`] here, one `From` each.

use std::time::Duration;

use http::header::{CACHE_CONTROL, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{HeaderValue, Response, StatusCode};

use crate::account::{EmailError, NewPasswordError, RoleError};
use crate::auth::bearer::BearerError;
use crate::auth::browser_session::BrowserError;
use crate::auth::claims::TokenError;
use crate::auth::keys::assertion::AssertionError;
use crate::auth::keys::MintError;
use crate::auth::sessions::SessionError;
use crate::auth::throttle::Throttled;
use crate::auth::AuthError;
use crate::body::{BoxError, ResponseBody};

/// Retry-After of the answers given while the shared store is unreachable.
const STORE_RETRY_AFTER: Duration = Duration::from_secs(2);

/// Every outcome a client can be told about, other than success.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    // Bearer-token failures on protected routes and account endpoints.
    #[error("no bearer token")]
    MissingToken,
    #[error("malformed Authorization header")]
    InvalidFormat,
    #[error("access token expired")]
    TokenExpired,
    #[error("access token rejected: {0}")]
    InvalidToken(TokenError),
    #[error("access token revoked")]
    TokenRevoked,
    #[error("role not allowed on this route")]
    Forbidden,

    // API keys (`auth::api_keys`).
    #[error("unknown or revoked API key")]
    InvalidApiKey,
    #[error("API key expired")]
    ApiKeyExpired,
    /// An API key on a route without `api_keys = true`, or where only an
    /// access token will do (the account endpoints).
    #[error("API keys are not accepted here")]
    ApiKeyNotAccepted,
    #[error("API key role above the owner's")]
    ApiKeyRoleTooHigh,
    #[error("invalid API key name")]
    InvalidKeyName,
    #[error("invalid API key expiry")]
    InvalidExpiry,
    #[error("API key not found")]
    ApiKeyNotFound,

    // Request-shape failures.
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    #[error("request path rejected: {0}")]
    InvalidPath(#[from] crate::path::PathError),
    #[error("no route matches")]
    NotFound,
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("request body too large")]
    PayloadTooLarge,
    #[error("request body not received in time")]
    RequestTimeout,
    #[error("request URI too long")]
    UriTooLong,
    #[error("request headers too large")]
    HeadersTooLarge,
    #[error("malformed JSON body: {0}")]
    MalformedJson(String),
    #[error("request body must be application/json")]
    UnsupportedMediaType,
    #[error("invalid email: {0}")]
    InvalidEmail(#[from] EmailError),
    #[error("new password too short")]
    WeakPassword,
    #[error("password too long")]
    PasswordTooLong,
    #[error("invalid role: {0}")]
    InvalidRole(#[from] RoleError),

    // Account outcomes.
    #[error("invalid credentials")]
    InvalidCredentials,
    #[error("email already registered")]
    EmailTaken,
    #[error("registration is closed")]
    RegistrationClosed,
    #[error("unknown refresh token")]
    InvalidRefreshToken,
    #[error("refresh token reused; family revoked")]
    TokenReuseDetected,
    #[error("refresh token expired")]
    RefreshExpired,
    #[error("CSRF token missing or wrong")]
    CsrfFailed,
    /// A request carrying the browser session cookie that changes state
    /// without proof it comes from this origin, or a sign-in form posted
    /// without its own token.
    #[error("cross-site request refused")]
    CrossSite,
    #[error("user not found")]
    UserNotFound,
    #[error("too many attempts")]
    TooManyRequests { retry_after: Duration },
    #[error("overloaded")]
    Busy { retry_after: Duration },
    /// The shared store's revocation feed has been down longer than
    /// `[store] revocation_max_staleness`: fail closed until it catches up.
    #[error("revocation state is {stale_for:?} old, beyond the allowed staleness")]
    RevocationsStale { stale_for: Duration },
    /// The database behind the account endpoints cannot be reached.
    #[error("store unavailable: {0}")]
    StoreUnavailable(#[source] BoxError),

    // Upstream and internal failures.
    #[error("upstream unavailable: {0}")]
    UpstreamUnavailable(#[source] BoxError),
    #[error("upstream did not answer within {0:?}")]
    UpstreamTimeout(Duration),
    /// Every target of the route is ejected or failed its health check.
    #[error("no healthy upstream target")]
    NoHealthyUpstream,
    /// The target is at `max_upstream_connections` with a full wait queue.
    #[error("upstream busy: {0}")]
    UpstreamBusy(#[source] BoxError),
    #[error("internal error: {0}")]
    Internal(#[source] BoxError),
}

impl GatewayError {
    /// A failure of ours (500), unless it is the database being unreachable,
    /// which the client may retry (503): the store's errors reach the
    /// handlers through here, so this is where the two are told apart.
    pub fn internal(err: impl Into<BoxError>) -> Self {
        let err = err.into();
        if matches!(
            err.downcast_ref::<crate::store::StoreError>(),
            Some(crate::store::StoreError::Unavailable(_))
        ) {
            return Self::StoreUnavailable(err);
        }
        Self::Internal(err)
    }

    pub fn status(&self) -> StatusCode {
        use GatewayError::*;
        match self {
            MissingToken | InvalidFormat | TokenExpired | InvalidToken(_) | TokenRevoked => {
                StatusCode::UNAUTHORIZED
            }
            InvalidCredentials | InvalidRefreshToken | TokenReuseDetected | RefreshExpired => {
                StatusCode::UNAUTHORIZED
            }
            InvalidApiKey | ApiKeyExpired | ApiKeyNotAccepted => StatusCode::UNAUTHORIZED,
            ApiKeyRoleTooHigh => StatusCode::FORBIDDEN,
            InvalidKeyName | InvalidExpiry => StatusCode::BAD_REQUEST,
            ApiKeyNotFound => StatusCode::NOT_FOUND,
            Forbidden | RegistrationClosed | CsrfFailed | CrossSite => StatusCode::FORBIDDEN,
            BadRequest(_) | InvalidPath(_) | MalformedJson(_) => StatusCode::BAD_REQUEST,
            InvalidEmail(_) | WeakPassword | PasswordTooLong | InvalidRole(_) => {
                StatusCode::BAD_REQUEST
            }
            NotFound | UserNotFound => StatusCode::NOT_FOUND,
            MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            UriTooLong => StatusCode::URI_TOO_LONG,
            RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            EmailTaken => StatusCode::CONFLICT,
            TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            Busy { .. } | RevocationsStale { .. } | StoreUnavailable(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            UpstreamUnavailable(_) | NoHealthyUpstream => StatusCode::BAD_GATEWAY,
            UpstreamBusy(_) => StatusCode::SERVICE_UNAVAILABLE,
            UpstreamTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> &'static str {
        use GatewayError::*;
        match self {
            MissingToken => "MISSING_TOKEN",
            InvalidFormat => "INVALID_FORMAT",
            TokenExpired => "TOKEN_EXPIRED",
            InvalidToken(_) => "INVALID_TOKEN",
            TokenRevoked => "TOKEN_REVOKED",
            Forbidden => "FORBIDDEN",
            InvalidApiKey => "INVALID_API_KEY",
            ApiKeyExpired => "API_KEY_EXPIRED",
            ApiKeyNotAccepted => "API_KEY_NOT_ACCEPTED",
            ApiKeyRoleTooHigh => "ROLE_EXCEEDS_OWNER",
            InvalidKeyName => "INVALID_KEY_NAME",
            InvalidExpiry => "INVALID_EXPIRY",
            ApiKeyNotFound => "API_KEY_NOT_FOUND",
            BadRequest(_) => "BAD_REQUEST",
            InvalidPath(_) => "INVALID_PATH",
            NotFound => "NOT_FOUND",
            MethodNotAllowed => "METHOD_NOT_ALLOWED",
            PayloadTooLarge => "PAYLOAD_TOO_LARGE",
            UriTooLong => "URI_TOO_LONG",
            RequestTimeout => "REQUEST_TIMEOUT",
            HeadersTooLarge => "HEADERS_TOO_LARGE",
            MalformedJson(_) => "MALFORMED_JSON",
            UnsupportedMediaType => "UNSUPPORTED_MEDIA_TYPE",
            InvalidEmail(_) => "INVALID_EMAIL",
            WeakPassword => "WEAK_PASSWORD",
            PasswordTooLong => "PASSWORD_TOO_LONG",
            InvalidRole(_) => "INVALID_ROLE",
            InvalidCredentials => "INVALID_CREDENTIALS",
            EmailTaken => "EMAIL_TAKEN",
            RegistrationClosed => "REGISTRATION_CLOSED",
            InvalidRefreshToken => "INVALID_REFRESH_TOKEN",
            TokenReuseDetected => "TOKEN_REUSE_DETECTED",
            RefreshExpired => "REFRESH_EXPIRED",
            CsrfFailed | CrossSite => "CSRF_FAILED",
            UserNotFound => "USER_NOT_FOUND",
            TooManyRequests { .. } => "TOO_MANY_REQUESTS",
            Busy { .. } => "SERVICE_BUSY",
            RevocationsStale { .. } => "REVOCATIONS_STALE",
            StoreUnavailable(_) => "STORE_UNAVAILABLE",
            UpstreamUnavailable(_) | NoHealthyUpstream => "UPSTREAM_UNAVAILABLE",
            UpstreamBusy(_) => "UPSTREAM_BUSY",
            UpstreamTimeout(_) => "UPSTREAM_TIMEOUT",
            Internal(_) => "INTERNAL_ERROR",
        }
    }

    /// Fixed text for the client; never an internal error's own words.
    pub fn message(&self) -> &'static str {
        use GatewayError::*;
        match self {
            MissingToken => "This route requires a bearer token in the Authorization header.",
            InvalidFormat => "The Authorization header must be `Bearer <token>`.",
            TokenExpired => "The access token has expired; refresh it.",
            InvalidToken(_) => "The access token is not valid.",
            TokenRevoked => "The access token has been revoked; log in or refresh again.",
            Forbidden => "Your role does not allow this request.",
            InvalidApiKey => "The API key is not valid.",
            ApiKeyExpired => "The API key has expired.",
            ApiKeyNotAccepted => {
                "API keys are not accepted here; use an access token or a route with api_keys."
            }
            ApiKeyRoleTooHigh => "An API key may carry only your own role or the default role.",
            InvalidKeyName => "An API key name is 1-100 characters, without control characters.",
            InvalidExpiry => "expiresIn is seconds (1 to 3650 days) or a duration such as \"90d\".",
            ApiKeyNotFound => "No such API key.",
            BadRequest(reason) => reason,
            InvalidPath(_) => "The request path is ambiguous or malformed.",
            NotFound => "No route matches this request.",
            MethodNotAllowed => "This method is not allowed here.",
            PayloadTooLarge => "The request body is too large.",
            UriTooLong => "The request URI is too long.",
            RequestTimeout => "The request body was not received in time.",
            HeadersTooLarge => "The request headers are too large.",
            MalformedJson(_) => "The request body is not valid JSON of the expected shape.",
            UnsupportedMediaType => "The request body must be application/json.",
            InvalidEmail(_) => "The email address is not valid.",
            // Both stated in `account::new_password`; a test keeps them equal.
            WeakPassword => "The password must be at least 8 characters long.",
            PasswordTooLong => "The password must be at most 256 bytes long.",
            InvalidRole(_) => "A role is 1-64 characters of letters, digits, '-', '_', '.' or ':'.",
            InvalidCredentials => "Email or password is incorrect.",
            EmailTaken => "An account with this email already exists.",
            RegistrationClosed => "Registration is closed.",
            InvalidRefreshToken => "The refresh token is not valid.",
            TokenReuseDetected => {
                "This refresh token was already used; the session has been revoked."
            }
            RefreshExpired => "The refresh token has expired; log in again.",
            CsrfFailed => "The X-CSRF-Token header is missing or does not match.",
            CrossSite => "This request did not come from this site's own pages; reload the page and try again.",
            UserNotFound => "No such user.",
            TooManyRequests { .. } => "Too many attempts; try again later.",
            Busy { .. } => "The server is busy; try again shortly.",
            RevocationsStale { .. } => {
                "The gateway cannot confirm that this token is still valid; try again shortly."
            }
            StoreUnavailable(_) => "The account database is unavailable; try again shortly.",
            UpstreamUnavailable(_) | NoHealthyUpstream => "The upstream service is unavailable.",
            UpstreamBusy(_) => "The upstream service is busy; try again shortly.",
            UpstreamTimeout(_) => "The upstream service did not answer in time.",
            Internal(_) => "Internal error.",
        }
    }

    /// The RFC 6750 §3 challenge for a 401, or `None`.
    fn challenge(&self) -> Option<&'static str> {
        use GatewayError::*;
        match self {
            // §3.1: a request with no credentials gets no error code.
            MissingToken => Some("Bearer realm=\"authgate\""),
            InvalidFormat | TokenExpired | InvalidToken(_) | TokenRevoked | InvalidApiKey
            | ApiKeyExpired | ApiKeyNotAccepted => {
                Some("Bearer realm=\"authgate\", error=\"invalid_token\"")
            }
            InvalidCredentials | InvalidRefreshToken | TokenReuseDetected | RefreshExpired => {
                Some("Bearer realm=\"authgate\"")
            }
            _ => None,
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::TooManyRequests { retry_after } | Self::Busy { retry_after } => {
                Some(*retry_after)
            }
            // Reconnection is retried every few seconds; a client should not
            // hammer a gateway that is waiting for its database.
            Self::RevocationsStale { .. } | Self::StoreUnavailable(_) => Some(STORE_RETRY_AFTER),
            Self::UpstreamBusy(_) => Some(Duration::from_secs(1)),
            _ => None,
        }
    }

    /// Server-side failures are logged at error level with their cause.
    pub fn is_server_fault(&self) -> bool {
        self.status().is_server_error()
    }

    /// The gRPC status code (grpc/doc/statuscodes.md) for this outcome, as
    /// gRPC's own HTTP-to-gRPC mapping would give it, refined where the
    /// gateway knows more (an expired token is UNAUTHENTICATED, a slow
    /// upstream DEADLINE_EXCEEDED).
    pub fn grpc_status(&self) -> u8 {
        use GatewayError::*;
        const INVALID_ARGUMENT: u8 = 3;
        const DEADLINE_EXCEEDED: u8 = 4;
        const ALREADY_EXISTS: u8 = 6;
        const PERMISSION_DENIED: u8 = 7;
        const RESOURCE_EXHAUSTED: u8 = 8;
        const UNIMPLEMENTED: u8 = 12;
        const INTERNAL: u8 = 13;
        const UNAVAILABLE: u8 = 14;
        const UNAUTHENTICATED: u8 = 16;
        const NOT_FOUND: u8 = 5;
        match self {
            MissingToken | InvalidFormat | TokenExpired | InvalidToken(_) | TokenRevoked
            | InvalidCredentials | InvalidRefreshToken | TokenReuseDetected | RefreshExpired
            | InvalidApiKey | ApiKeyExpired | ApiKeyNotAccepted => UNAUTHENTICATED,
            Forbidden | RegistrationClosed | CsrfFailed | CrossSite | ApiKeyRoleTooHigh => {
                PERMISSION_DENIED
            }
            InvalidKeyName | InvalidExpiry => INVALID_ARGUMENT,
            ApiKeyNotFound => NOT_FOUND,
            BadRequest(_) | InvalidPath(_) | MalformedJson(_) | UnsupportedMediaType
            | InvalidEmail(_) | WeakPassword | PasswordTooLong | InvalidRole(_) | UriTooLong
            | HeadersTooLarge => INVALID_ARGUMENT,
            // No route: the method does not exist behind this gateway.
            NotFound | MethodNotAllowed => UNIMPLEMENTED,
            UserNotFound => NOT_FOUND,
            EmailTaken => ALREADY_EXISTS,
            PayloadTooLarge | TooManyRequests { .. } => RESOURCE_EXHAUSTED,
            RequestTimeout | UpstreamTimeout(_) => DEADLINE_EXCEEDED,
            Busy { .. }
            | RevocationsStale { .. }
            | StoreUnavailable(_)
            | UpstreamUnavailable(_)
            | NoHealthyUpstream
            | UpstreamBusy(_) => UNAVAILABLE,
            Internal(_) => INTERNAL,
        }
    }

    /// The answer for a request: gRPC-shaped when the request was gRPC
    /// (`content-type: application/grpc...`), JSON otherwise.
    pub fn into_response_for(self, grpc: bool) -> Response<ResponseBody> {
        if grpc {
            self.into_grpc_response()
        } else {
            self.into_response()
        }
    }

    /// A gRPC "Trailers-Only" answer: HTTP 200, no body, the status in the
    /// headers (gRPC over HTTP/2 spec), so gRPC clients see a real status
    /// instead of a protocol error. The challenge and Retry-After stay.
    pub fn into_grpc_response(self) -> Response<ResponseBody> {
        let mut response = Response::new(ResponseBody::empty());
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
        headers.insert(
            "grpc-status",
            HeaderValue::from(u16::from(self.grpc_status())),
        );
        if let Ok(message) = HeaderValue::from_str(&grpc_percent_encode(self.message())) {
            headers.insert("grpc-message", message);
        }
        self.add_hints(headers);
        response
    }

    pub fn into_response(self) -> Response<ResponseBody> {
        let body = serde_json::json!({ "error": self.code(), "message": self.message() });
        let mut response = Response::new(ResponseBody::full(body.to_string()));
        *response.status_mut() = self.status();
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        self.add_hints(headers);
        response
    }

    /// The challenge of a 401 and the Retry-After of a wait.
    fn add_hints(&self, headers: &mut http::HeaderMap) {
        if let Some(challenge) = self.challenge() {
            headers.insert(WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
        }
        if let Some(wait) = self.retry_after() {
            // Round up: "Retry-After: 0" would invite an immediate retry.
            let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            headers.insert(RETRY_AFTER, HeaderValue::from(seconds.max(1)));
        }
    }
}

impl From<BearerError> for GatewayError {
    fn from(err: BearerError) -> Self {
        match err {
            BearerError::Missing => Self::MissingToken,
            BearerError::Malformed => Self::InvalidFormat,
            BearerError::Oversized => Self::InvalidToken(TokenError::Oversized),
        }
    }
}

impl From<TokenError> for GatewayError {
    fn from(err: TokenError) -> Self {
        match err {
            TokenError::Expired => Self::TokenExpired,
            reason => Self::InvalidToken(reason),
        }
    }
}

impl From<AuthError> for GatewayError {
    fn from(err: AuthError) -> Self {
        match err {
            AuthError::Bearer(err) => err.into(),
            AuthError::Token(err) => err.into(),
            AuthError::Revoked => Self::TokenRevoked,
            AuthError::Stale { stale_for } => Self::RevocationsStale { stale_for },
        }
    }
}

impl From<crate::auth::api_keys::ApiKeyError> for GatewayError {
    fn from(err: crate::auth::api_keys::ApiKeyError) -> Self {
        use crate::auth::api_keys::{ApiKeyError, KeyRefusal};
        match err {
            ApiKeyError::Refused(KeyRefusal::Unknown) => Self::InvalidApiKey,
            ApiKeyError::Refused(KeyRefusal::Expired) => Self::ApiKeyExpired,
            ApiKeyError::Stale { stale_for } => Self::RevocationsStale { stale_for },
        }
    }
}

impl From<SessionError> for GatewayError {
    fn from(err: SessionError) -> Self {
        match err {
            // The same answer as a wrong password: the check raced a change.
            SessionError::UserChanged => Self::InvalidCredentials,
            SessionError::UnknownToken => Self::InvalidRefreshToken,
            SessionError::Expired => Self::RefreshExpired,
            SessionError::Reused => Self::TokenReuseDetected,
            SessionError::Throttled(refusal) => refusal.into(),
            // The database being unreachable is retried by the client.
            SessionError::Store(err) => Self::internal(err),
            err @ SessionError::StoreUnavailable(_) => Self::StoreUnavailable(Box::new(err)),
            err @ (SessionError::Mint(_)
            | SessionError::UnreadableTagKey
            | SessionError::RotationFailed(_)) => Self::internal(err),
        }
    }
}

/// A session cookie that is not a credential answers like the bearer
/// token it stands in for.
impl From<BrowserError> for GatewayError {
    fn from(err: BrowserError) -> Self {
        match err {
            BrowserError::Unreadable => Self::MissingToken,
            BrowserError::Expired | BrowserError::Idle => Self::TokenExpired,
            BrowserError::Revoked => Self::TokenRevoked,
            BrowserError::Stale { stale_for } => Self::RevocationsStale { stale_for },
            BrowserError::Store(err) => Self::internal(err),
            err @ BrowserError::Seal => Self::internal(err),
        }
    }
}

impl From<MintError> for GatewayError {
    fn from(err: MintError) -> Self {
        Self::internal(err)
    }
}

/// The gateway could not sign an identity assertion: its own fault.
impl From<AssertionError> for GatewayError {
    fn from(err: AssertionError) -> Self {
        Self::internal(err)
    }
}

impl From<Throttled> for GatewayError {
    fn from(refusal: Throttled) -> Self {
        Self::TooManyRequests {
            retry_after: refusal.retry_after,
        }
    }
}

/// The two ways a new password fails the policy are two outcomes.
impl From<NewPasswordError> for GatewayError {
    fn from(err: NewPasswordError) -> Self {
        match err {
            NewPasswordError::TooShort => Self::WeakPassword,
            NewPasswordError::TooLong => Self::PasswordTooLong,
        }
    }
}

/// True for a gRPC request (`application/grpc`, `application/grpc+proto`, ...).
pub fn is_grpc(headers: &http::HeaderMap) -> bool {
    headers.get(CONTENT_TYPE).is_some_and(|v| {
        let v = v.as_bytes();
        v.get(..16)
            .is_some_and(|head| head.eq_ignore_ascii_case(b"application/grpc"))
            && matches!(v.get(16), None | Some(b'+' | b';'))
    })
}

/// grpc-message is percent-encoded: bytes outside printable ASCII, and '%'.
fn grpc_percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if (0x20..=0x7e).contains(&byte) && byte != b'%' {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests;
