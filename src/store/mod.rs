//! Persistence behind the account endpoints: the [`Store`] trait, the records
//! it keeps (users, refresh-token families, refresh tokens) and [`StoreError`].
//!
//! `sled_store.rs` is the embedded default; `flush.rs` batches durability
//! requests so a burst of writes costs one fsync, not one each.

mod api_keys;
pub(crate) mod flush;
pub mod postgres;
mod sled_async;
pub use sled_async::STORE_PROBE_FILE;
pub(crate) mod sled_store;

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

pub use api_keys::ApiKeyRecord;
pub use postgres::PostgresStore;
pub use sled_store::SledStore;

/// An account. Lives until `delete_user`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// A UUID v4, assigned at creation and never reused.
    pub id: String,
    /// Canonical form (see `account::Email`); unique.
    pub email: String,
    pub role: String,
    /// An argon2 PHC string; never the password.
    pub password_hash: String,
    /// Unix seconds.
    pub created_at: u64,
    /// Access tokens carrying a lower version are refused. Bumped by role
    /// changes, password changes and logout-all.
    pub token_version: u32,
}

/// What a slow check (an argon2 verification) read about a user. A session
/// is created, and a password rewritten, only while the user still carries
/// exactly this version and hash: a password change, logout-all, role change
/// or deletion committed during the check makes the write fail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserStamp {
    pub token_version: u32,
    pub password_hash: String,
}

impl UserStamp {
    pub fn of(user: &User) -> Self {
        Self {
            token_version: user.token_version,
            password_hash: user.password_hash.clone(),
        }
    }

    fn matches(&self, user: &User) -> bool {
        self.token_version == user.token_version && self.password_hash == user.password_hash
    }
}

/// One login session: the chain of refresh tokens descending from one login.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Family {
    pub id: String,
    pub user_id: String,
    /// Unix seconds.
    pub created_at: u64,
    /// Absolute session end (`created_at + session_max_age`); rotation never
    /// extends it. Swept after this.
    pub expires_at: u64,
    /// Set once by logout or reuse detection; the family then refuses rotation.
    pub revoked_at: Option<u64>,
}

/// A refresh token, stored under the SHA-256 of the token (the raw token is
/// never stored). After rotation it is kept only while a retry may still be
/// answered from the grace (its `expires_at` is lowered to that moment);
/// reuse after that is recognised from the family's [`Chain`] instead.
/// Tokens of the first generation (from login) carry no tag and are kept
/// until their own expiry, as before.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefreshRecord {
    pub family_id: String,
    pub user_id: String,
    /// Unix seconds; never later than the family's `expires_at`.
    pub expires_at: u64,
    /// When this token was exchanged for its successor.
    pub rotated_at: Option<u64>,
    /// Hex of the successor's hash, set together with `rotated_at`.
    pub replaced_by: Option<String>,
}

/// The rotation state of a family, created by its first rotation: which
/// generation its live token is, and the key its tokens' tags are made with,
/// so a token dropped from the store is still recognised as one this family
/// issued (reuse) without keeping a record per rotation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chain {
    /// Generation of the family's live token; tokens from login are 0.
    pub generation: u64,
    /// Hex of the 32-byte key the tags of this family's tokens are made
    /// with. Reading it lets one forge a reuse (a logout), never a token.
    pub tag_key: String,
    /// Rotated tokens still kept for the grace, oldest first: each
    /// rotation drops those whose `keep_until` has passed. At most
    /// [`MAX_TRACKED_RETIRED`]; any beyond are left to the sweep.
    pub retired: Vec<Retired>,
}

/// Most retired tokens a [`Chain`] tracks: only a session rotating faster
/// than its grace has more than one or two.
pub const MAX_TRACKED_RETIRED: usize = 16;

/// A rotated token still kept for the reuse grace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retired {
    /// Hex of the token's hash.
    pub hash: String,
    /// Unix seconds after which it may go.
    pub keep_until: u64,
}

/// What a rotation changes besides the tokens: the successor's generation,
/// the family's tag key, and how long the presented token is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainStep {
    /// Must be the family's generation plus one (1 on a first rotation).
    pub generation: u64,
    /// Must equal the family's key, or start its chain on a first rotation.
    pub tag_key: [u8; 32],
    /// `Some(t)`: drop the presented token at `t` (at once when `t <= now`).
    /// `None`: keep it until its own expiry (an untagged token, whose reuse
    /// could not be recognised once it is gone).
    pub keep_presented_until: Option<u64>,
}

/// How many records of each kind the store holds (operators and tests).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecordCounts {
    pub users: usize,
    pub families: usize,
    pub chains: usize,
    pub refresh_tokens: usize,
    /// Entries of the per-family token index and of the expiry index.
    pub index_entries: usize,
}

/// The account lockout of `[auth.throttle]`, in seconds, as a shared store
/// applies it: `failures` within `window` lock the account for `base`,
/// doubling with each lockout in a row, at most `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockoutPolicy {
    pub failures: u32,
    pub window: u64,
    pub base: u64,
    pub max: u64,
}

/// What [`Store::rotate`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RotateOutcome {
    /// The presented token is now rotated and the new one stored.
    Rotated {
        family: Family,
    },
    /// The presented token was used before: reuse, unless within the grace.
    AlreadyRotated {
        rotated_at: u64,
        family_id: String,
    },
    /// No such token (or its family no longer exists).
    Unknown,
    /// The presented token itself is past its `expires_at`.
    Expired,
    FamilyRevoked {
        family_id: String,
    },
    /// The session reached its absolute end.
    FamilyExpired {
        family_id: String,
    },
}

impl RotateOutcome {
    /// What a presented token's `record` and its `family` decide before
    /// anything is written, the same for every backend: `Some` answers the
    /// presentation now, `None` lets the rotation to `new_record` go on.
    /// Reuse is checked first: a second use of a token is the signal of
    /// theft whatever else is true of its family.
    pub(crate) fn before_rotation(
        record: &RefreshRecord,
        family: &Family,
        new_record: &RefreshRecord,
        now: u64,
    ) -> Result<Option<Self>, StoreError> {
        if let Some(rotated_at) = record.rotated_at {
            return Ok(Some(Self::AlreadyRotated {
                rotated_at,
                family_id: record.family_id.clone(),
            }));
        }
        if family.revoked_at.is_some() {
            return Ok(Some(Self::FamilyRevoked {
                family_id: family.id.clone(),
            }));
        }
        if now >= family.expires_at {
            return Ok(Some(Self::FamilyExpired {
                family_id: family.id.clone(),
            }));
        }
        if now >= record.expires_at {
            return Ok(Some(Self::Expired));
        }
        if new_record.family_id != record.family_id || new_record.user_id != record.user_id {
            return Err(StoreError::Invalid(
                "a rotated token must stay in its family and with its user",
            ));
        }
        Ok(None)
    }
}

/// A store failure, worded for the operator who reads the log.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("email already registered")]
    EmailTaken,
    #[error("no user with id {0:?}")]
    UnknownUser(String),
    /// A compare-and-fail write found the user changed since it was read.
    #[error("user {0:?} changed since it was read")]
    UserChanged(String),
    #[error("cannot open the database at {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: sled::Error,
    },
    #[error(
        "cannot open the database at {path}: database in use by another process \
         (stop the running gateway before using this command)"
    )]
    InUse { path: PathBuf },
    #[error(
        "the database at {path} is corrupt ({detail}); restore it from a backup \
         or move it aside to start empty"
    )]
    CorruptDatabase { path: PathBuf, detail: String },
    #[error("cannot create the database directory {path}: {source}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the database cannot take a write ({path}): {source}")]
    NotWritable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the database accepts no writes: {0}")]
    ReadOnly(&'static str),
    #[error("database error: {0}")]
    Sled(#[from] sled::Error),
    #[error("cannot make writes durable: {0}")]
    Flush(#[source] Arc<sled::Error>),
    #[error("the durability task stopped: {0}")]
    FlushTask(String),
    #[error("undecodable record in the database: {0}")]
    Corrupt(String),
    /// The caller asked for something the store's invariants forbid.
    #[error("invalid store request: {0}")]
    Invalid(&'static str),
    /// The database cannot be reached (refused, reset, timed out, pool
    /// exhausted): answered 503, retried by the client.
    #[error("database unavailable: {0}")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The database answered with an error (SQL state in the cause).
    #[error("database error: {0}")]
    Postgres(#[source] tokio_postgres::Error),
    #[error(
        "the database schema is at version {found}, newer than this authgate \
         understands (version {supported}); run the newer authgate, or restore \
         a backup taken before the upgrade"
    )]
    SchemaTooNew { found: i64, supported: i64 },
    #[error(transparent)]
    Tls(#[from] postgres::tls::TlsSetupError),
}

/// The future [`Store::flush`] returns; boxed so `dyn Store` works.
pub type FlushFuture<'a> = Pin<Box<dyn Future<Output = Result<(), StoreError>> + Send + 'a>>;

/// Everything the gateway persists. Methods are async: the shared
/// PostgreSQL store waits on the network (the embedded sled store answers
/// at once); [`Store::flush`] waits for the disk. Time is always a parameter (`now`, unix seconds), so
/// expiry is testable. Emails are compared byte for byte: callers pass the
/// canonical form.
#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    /// Fails with [`StoreError::EmailTaken`] when the email is registered.
    async fn create_user(&self, user: &User) -> Result<(), StoreError>;
    async fn user_by_id(&self, id: &str) -> Result<Option<User>, StoreError>;
    async fn user_by_email(&self, email: &str) -> Result<Option<User>, StoreError>;
    /// Up to `limit` users ordered by id, starting after `after_id`.
    async fn list_users(
        &self,
        after_id: Option<&str>,
        limit: usize,
    ) -> Result<Vec<User>, StoreError>;
    /// Sets the role and bumps `token_version`.
    async fn set_role(&self, id: &str, role: &str) -> Result<Option<User>, StoreError>;
    /// Replaces the password hash, but only if it is still `verified` (the
    /// hash the caller checked the password against): otherwise fails with
    /// [`StoreError::UserChanged`], so a change committed meanwhile is never
    /// reverted. `bump_version`: true for a password change (other sessions'
    /// access tokens die), false for a transparent rehash at login.
    async fn set_password(
        &self,
        id: &str,
        verified: &str,
        hash: &str,
        bump_version: bool,
    ) -> Result<Option<User>, StoreError>;
    /// Logout-all: every access token issued so far is refused.
    async fn bump_token_version(&self, id: &str) -> Result<Option<User>, StoreError>;
    /// Removes the user, its email, its families and refresh tokens, and
    /// leaves a tombstone (id → `now`) for the revocation list.
    async fn delete_user(&self, id: &str, now: u64) -> Result<Option<User>, StoreError>;
    /// Ids of deleted users still tombstoned, for the revocation list at start.
    async fn deleted_user_ids(&self) -> Result<Vec<String>, StoreError>;
    /// `(user id, token_version)` for every user with a version above 0.
    async fn token_versions(&self) -> Result<Vec<(String, u32)>, StoreError>;
    /// Stores a new session and its first refresh token, atomically, if the
    /// user is still as `verified` (same token version and password hash).
    /// Fails with [`StoreError::UnknownUser`] when the user was deleted
    /// meanwhile and [`StoreError::UserChanged`] when it changed.
    async fn create_family(
        &self,
        family: &Family,
        first_token: &[u8; 32],
        record: &RefreshRecord,
        verified: &UserStamp,
    ) -> Result<(), StoreError>;
    async fn refresh_record(
        &self,
        token_hash: &[u8; 32],
    ) -> Result<Option<RefreshRecord>, StoreError>;
    async fn family(&self, id: &str) -> Result<Option<Family>, StoreError>;
    /// The family's rotation state; `None` before its first rotation.
    async fn chain(&self, family_id: &str) -> Result<Option<Chain>, StoreError>;
    /// Atomic compare-and-swap rotation: succeeds only if the presented
    /// token exists, was not rotated, its family exists, is not revoked, and
    /// neither is expired at `now`. Then, in one transaction, marks it
    /// rotated (`rotated_at = now`, `replaced_by = hex(new_hash)`, kept until
    /// `step.keep_presented_until`, or dropped at once when that has
    /// passed), drops the previously retired token once its time has passed,
    /// advances the family's [`Chain`] to `step`, and stores `new_record`
    /// under `new_hash`. `new_record` must name the presented token's family
    /// and user; its `expires_at` is capped at the family's.
    async fn rotate(
        &self,
        presented: &[u8; 32],
        new_hash: &[u8; 32],
        new_record: &RefreshRecord,
        step: &ChainStep,
        now: u64,
    ) -> Result<RotateOutcome, StoreError>;
    /// Idempotent; true when this call revoked it.
    async fn revoke_family(&self, family_id: &str, now: u64) -> Result<bool, StoreError>;
    /// Revokes every live family of the user but `except_family`; returns
    /// the ids this call revoked.
    async fn revoke_user_families(
        &self,
        user_id: &str,
        except_family: Option<&str>,
        now: u64,
    ) -> Result<Vec<String>, StoreError>;
    /// Keeps at most `max` sessions of the user occupying the store: past
    /// that, revoked ones go first, then the oldest live ones are revoked.
    /// Either kind is marked expired at `now`, so the sweep purges it off
    /// the request path. Returns the ids this call revoked.
    async fn cap_user_families(
        &self,
        user_id: &str,
        max: usize,
        now: u64,
    ) -> Result<Vec<String>, StoreError>;
    /// Counts records by kind; walks every tree, so not for the request path.
    async fn record_counts(&self) -> Result<RecordCounts, StoreError>;
    /// `(family id, revoked_at)` for revocations at or after `since`, for
    /// the revocation list at start. Entries outlive their swept family
    /// until [`Store::prune_revocations`].
    async fn revoked_families_since(&self, since: u64) -> Result<Vec<(String, u64)>, StoreError>;
    /// Deletes refresh tokens and families whose `expires_at <= now` (a
    /// family with its tokens, in bounded batches); returns how many records
    /// it removed. Blocking: run it off the async workers.
    async fn sweep_expired(&self, now: u64) -> Result<usize, StoreError>;
    /// Forgets revocation entries and user tombstones older than `before`:
    /// once every access token issued before them has expired (`before =
    /// now -` the longest access lifetime in use, see
    /// [`Store::note_access_lifetime`]), they no longer matter.
    async fn prune_revocations(&self, before: u64) -> Result<usize, StoreError>;
    /// Records, durably, that this run mints access tokens living up to
    /// `lifetime` seconds (leeway included), and returns the longest
    /// lifetime a token minted by this or an earlier run may still have at
    /// `now`. Revocations must be kept (and reloaded) for that long: after
    /// `access_ttl` is lowered across a restart, tokens minted under the old
    /// value live on until their own expiry.
    async fn note_access_lifetime(&self, lifetime: u64, now: u64) -> Result<u64, StoreError>;
    /// True when other gateway instances share this store, so a refresh
    /// retried on another instance within the reuse grace must find the
    /// pair there ([`Store::rotate_sealed`], [`Store::sealed_pair`]).
    fn shared(&self) -> bool {
        false
    }
    /// [`Store::rotate`], also keeping `sealed_pair` (the new pair, sealed
    /// under a key only the presented token yields) until `sealed_until`,
    /// in the same transaction. A store no other instance reads keeps
    /// nothing: the instance's memory serves retries.
    #[allow(clippy::too_many_arguments)]
    async fn rotate_sealed(
        &self,
        presented: &[u8; 32],
        new_hash: &[u8; 32],
        new_record: &RefreshRecord,
        step: &ChainStep,
        now: u64,
        sealed_pair: &[u8],
        sealed_until: u64,
    ) -> Result<RotateOutcome, StoreError> {
        let _ = (sealed_pair, sealed_until);
        self.rotate(presented, new_hash, new_record, step, now)
            .await
    }
    /// The pair [`Store::rotate_sealed`] kept for `presented`, while `now`
    /// is before its `sealed_until`.
    async fn sealed_pair(
        &self,
        presented: &[u8; 32],
        now: u64,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let _ = (presented, now);
        Ok(None)
    }
    /// With instances sharing the store: the end of the account's lockout
    /// (by its throttle key) if it is locked at `now`. A store no other
    /// instance reads answers `None`: the in-memory throttle decides.
    async fn account_locked_until(
        &self,
        account: &[u8; 32],
        now: u64,
    ) -> Result<Option<u64>, StoreError> {
        let _ = (account, now);
        Ok(None)
    }
    /// Counts a failed login of the account for every instance; returns the
    /// end of the lockout this failure started, if it started one.
    async fn account_failed(
        &self,
        account: &[u8; 32],
        policy: &LockoutPolicy,
        now: u64,
    ) -> Result<Option<u64>, StoreError> {
        let _ = (account, policy, now);
        Ok(None)
    }
    /// A successful login ends the account's shared failure streak.
    async fn account_succeeded(&self, account: &[u8; 32]) -> Result<(), StoreError> {
        let _ = account;
        Ok(())
    }
    /// Stores a new API key, if its owner still exists (otherwise
    /// [`StoreError::UnknownUser`]): a deletion committed meanwhile either
    /// sees the key and removes it, or makes this call fail.
    async fn create_api_key(&self, key: &ApiKeyRecord) -> Result<(), StoreError>;
    async fn api_key(&self, id: &str) -> Result<Option<ApiKeyRecord>, StoreError>;
    /// The user's keys, revoked ones included, oldest first.
    async fn user_api_keys(&self, user_id: &str) -> Result<Vec<ApiKeyRecord>, StoreError>;
    /// Every key not revoked, with its owner's current role: the in-memory
    /// index at start.
    async fn live_api_keys(&self) -> Result<Vec<(ApiKeyRecord, String)>, StoreError>;
    /// Marks the key revoked at `now` (kept if it already was); the record
    /// as it now is, `None` for no such key.
    async fn revoke_api_key(&self, id: &str, now: u64) -> Result<Option<ApiKeyRecord>, StoreError>;
    /// Records a use at `at` (never moves `last_used_at` back). Not flushed:
    /// losing the last minute of it in a crash is harmless.
    async fn touch_api_key(&self, id: &str, at: u64) -> Result<(), StoreError>;
    /// Whether the store can take a durable write right now, for `/readyz`:
    /// the reason when it cannot. Writes nothing a client could see.
    async fn check_writable(&self) -> Result<(), StoreError>;
    /// Completes when every write made before the call is on disk.
    /// Concurrent callers share one disk flush.
    fn flush(&self) -> FlushFuture<'_>;
}

/// Lower-case hex, as stored in [`RefreshRecord::replaced_by`].
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut text = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        // Writing to a String cannot fail.
        let _ = write!(text, "{byte:02x}");
    }
    text
}

/// The 32 bytes a 64-digit hex string (as [`hex`] writes it) stands for.
pub fn hash_from_hex(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 {
        return None;
    }
    let mut hash = [0u8; 32];
    for (byte, pair) in hash.iter_mut().zip(text.as_bytes().chunks(2)) {
        let pair = std::str::from_utf8(pair).ok()?;
        *byte = u8::from_str_radix(pair, 16).ok()?;
    }
    Some(hash)
}

#[cfg(test)]
mod tests;
