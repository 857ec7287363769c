//! The stored form of an API key ([`ApiKeyRecord`]): who owns it, what role
//! it carries, when it ends. The key itself is never stored, only its hash;
//! `auth::api_keys` makes and checks keys, both stores keep these records.

use serde::{Deserialize, Serialize};

/// One API key. Lives until its owner is deleted; a revoked key stays (with
/// `revoked_at`) so its owner still sees it in the list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKeyRecord {
    /// A UUID v4: what the key is listed, revoked and announced upstream by.
    pub id: String,
    /// The owner; the key acts as this user.
    pub user_id: String,
    /// The owner's label for it.
    pub name: String,
    /// The role it was created with (see `auth::api_keys` for the cap by the
    /// owner's current role).
    pub role: String,
    /// Lower-case hex of the SHA-256 of the whole key text.
    pub hash: String,
    /// Unix seconds.
    pub created_at: u64,
    /// Unix seconds; `None`: until revoked.
    pub expires_at: Option<u64>,
    /// Unix seconds, recorded at most once a minute.
    pub last_used_at: Option<u64>,
    /// Unix seconds; set once.
    pub revoked_at: Option<u64>,
}

#[cfg(test)]
mod tests;
