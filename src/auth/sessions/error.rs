//! Why starting, rotating or ending a session failed. The responses are
//! chosen in `error.rs`; the store's and the signer's causes stay attached
//! for the log.

use std::sync::Arc;

use crate::auth::keys::MintError;
use crate::auth::throttle::Throttled;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// At login: the user changed (password, logout-all, role) or was
    /// deleted since the caller read it for the password check.
    #[error("the user changed during the login")]
    UserChanged,
    /// The refresh token is not one the gateway knows (or may still honour).
    #[error("unknown refresh token")]
    UnknownToken,
    #[error("refresh token expired")]
    Expired,
    /// A refresh token presented again after its rotation: the session has
    /// been revoked.
    #[error("refresh token reused; family revoked")]
    Reused,
    /// The session made its rotations for this minute.
    #[error("refresh rate limit reached")]
    Throttled(Throttled),
    /// Transparent, so the log line of a failed rotation, which shows only
    /// the error's own text, still names the store's cause.
    #[error(transparent)]
    Store(StoreError),
    #[error(transparent)]
    Mint(#[from] MintError),
    #[error("a session chain holds an unreadable tag key")]
    UnreadableTagKey,
    /// A shared rotation failed; every waiter on the rotation receives this
    /// same answer, with the same cause for its log line.
    #[error("refresh rotation failed")]
    RotationFailed(#[source] RotationCause),
    /// A shared rotation found the database unreachable (the cause says
    /// so): the client retries.
    #[error("refresh rotation failed")]
    StoreUnavailable(#[source] RotationCause),
}

/// Why a shared rotation failed, shared by every request that waited on it.
pub type RotationCause = Arc<dyn std::error::Error + Send + Sync>;

impl From<Throttled> for SessionError {
    fn from(refusal: Throttled) -> Self {
        Self::Throttled(refusal)
    }
}

impl From<StoreError> for SessionError {
    fn from(err: StoreError) -> Self {
        Self::Store(err)
    }
}
