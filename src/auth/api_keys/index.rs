//! The in-memory API-key index every use is checked against: loaded from
//! the store at start, changed by the endpoints, the CLI's effects through
//! the PostgreSQL feed, and owner changes. No database read per request.
//!
//! Lookup goes by the first 8 bytes of the key's hash, then compares the
//! whole hash in constant time: timing can at most tell whether some key's
//! hash shares a prefix with the presented one's, which says nothing about
//! any key (finding such an input is a preimage search on SHA-256).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use http::HeaderValue;
use tokio::sync::mpsc;

use super::key;
use crate::account::{Role, UserId};
use crate::store::{hash_from_hex, ApiKeyRecord};

/// `last_used_at` is written at most this often per key.
pub(crate) const TOUCH_INTERVAL_SECS: u64 = 60;
/// Uses waiting to be written; beyond this a use is not recorded (the next
/// one a minute later is).
const TOUCH_QUEUE: usize = 1024;

/// Why a presented key was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyRefusal {
    /// Not a key this gateway made, or revoked, or its owner deleted.
    #[error("unknown or revoked API key")]
    Unknown,
    #[error("API key expired")]
    Expired,
}

/// A key that matched, as the request acts with it.
#[derive(Debug, Clone)]
pub struct KeyMatch {
    pub id: String,
    pub id_header: HeaderValue,
    pub user_id: UserId,
    /// The key's role, capped by its owner's current role.
    pub role: Role,
    pub expires_at: Option<u64>,
}

/// A use of a key to record: (key id, unix seconds).
pub(crate) type Touch = (String, u64);

pub struct ApiKeyIndex {
    inner: RwLock<Inner>,
    /// The least role: every account has at least it (`[auth] default_role`).
    default_role: Role,
    touches: mpsc::Sender<Touch>,
    /// Taken once by the task that writes `last_used_at`.
    touch_receiver: Mutex<Option<mpsc::Receiver<Touch>>>,
}

#[derive(Default)]
struct Inner {
    /// First 8 bytes of the hash → the keys whose hash starts so.
    by_prefix: HashMap<u64, Vec<Arc<Entry>>>,
    by_id: HashMap<String, Arc<Entry>>,
    /// Current role of each user owning a key in the index.
    owners: HashMap<String, Role>,
}

struct Entry {
    id: String,
    id_header: HeaderValue,
    user_id: UserId,
    role: Role,
    hash: [u8; 32],
    expires_at: Option<u64>,
    /// Unix seconds of the last use sent to be written.
    last_touch: AtomicU64,
}

/// The role a key acts with. Roles are names with no order among them but
/// one: the default role is what every account holds at least, so it is
/// below every role. A key may carry its owner's role or the default role
/// (nothing else is "not above" the owner's); when the owner's role has
/// changed away from the key's since, the key falls to the default role.
pub(crate) fn effective_role(key_role: &Role, owner_role: &Role, default_role: &Role) -> Role {
    if key_role == owner_role || key_role == default_role {
        key_role.clone()
    } else {
        default_role.clone()
    }
}

/// Whether the owner may give a new key `role`.
pub(crate) fn may_carry(role: &Role, owner_role: &Role, default_role: &Role) -> bool {
    role == owner_role || role == default_role
}

impl ApiKeyIndex {
    pub fn new(default_role: Role) -> Self {
        let (touches, receiver) = mpsc::channel(TOUCH_QUEUE);
        Self {
            inner: RwLock::default(),
            default_role,
            touches,
            touch_receiver: Mutex::new(Some(receiver)),
        }
    }

    pub fn default_role(&self) -> &Role {
        &self.default_role
    }

    /// The queue of uses to write, for the one task that writes them.
    pub fn take_touches(&self) -> Option<mpsc::Receiver<Touch>> {
        self.touch_receiver
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }

    /// Adds (or replaces) a key; a revoked one is removed instead. A record
    /// that cannot be used as stored (a field that is no header value) is
    /// left out and logged: refusing it is the safe answer.
    pub fn insert(&self, record: &ApiKeyRecord, owner_role: &str) {
        if record.revoked_at.is_some() {
            self.remove(&record.id);
            return;
        }
        let Some(entry) = entry_of(record) else {
            tracing::error!(key = %record.id, "unusable API key record left out of the index");
            return;
        };
        let Ok(owner_role) = Role::parse(owner_role) else {
            tracing::error!(user = %record.user_id, "owner of an API key has an unusable role");
            return;
        };
        let mut inner = self.write();
        inner.remove(&record.id);
        inner.owners.insert(record.user_id.clone(), owner_role);
        let entry = Arc::new(entry);
        inner
            .by_prefix
            .entry(prefix(&entry.hash))
            .or_default()
            .push(Arc::clone(&entry));
        inner.by_id.insert(entry.id.clone(), entry);
    }

    pub fn remove(&self, id: &str) {
        self.write().remove(id);
    }

    /// The owner's role changed: its keys are capped by it from now on.
    pub fn set_owner_role(&self, user: &str, role: &Role) {
        let mut inner = self.write();
        if let Some(current) = inner.owners.get_mut(user) {
            *current = role.clone();
        }
    }

    /// The owner is gone, and its keys with it.
    pub fn owner_deleted(&self, user: &str) {
        let mut inner = self.write();
        let ids: Vec<String> = inner
            .by_id
            .values()
            .filter(|entry| entry.user_id.as_str() == user)
            .map(|entry| entry.id.clone())
            .collect();
        for id in ids {
            inner.remove(&id);
        }
        inner.owners.remove(user);
    }

    pub fn owns_keys(&self, user: &str) -> bool {
        self.read().owners.contains_key(user)
    }

    /// Replaces everything with `keys` (each with its owner's role).
    pub fn replace_all(&self, keys: &[(ApiKeyRecord, String)]) {
        *self.write() = Inner::default();
        for (record, role) in keys {
            self.insert(record, role);
        }
    }

    pub fn len(&self) -> usize {
        self.read().by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The key `presented` stands for, as of `now` (unix seconds). A use
    /// is queued to be recorded at most once a minute per key; the caller
    /// never waits for it.
    pub fn find(&self, presented: &str, now: u64) -> Result<KeyMatch, KeyRefusal> {
        if !key::well_formed(presented) {
            return Err(KeyRefusal::Unknown);
        }
        let hash = key::hash(presented);
        let inner = self.read();
        let entry = inner
            .by_prefix
            .get(&prefix(&hash))
            .and_then(|candidates| {
                candidates.iter().find(|entry| {
                    aws_lc_rs::constant_time::verify_slices_are_equal(&entry.hash, &hash).is_ok()
                })
            })
            .ok_or(KeyRefusal::Unknown)?;
        if entry.expires_at.is_some_and(|at| now >= at) {
            return Err(KeyRefusal::Expired);
        }
        let owner_role = inner
            .owners
            .get(entry.user_id.as_str())
            .ok_or(KeyRefusal::Unknown)?;
        let found = KeyMatch {
            id: entry.id.clone(),
            id_header: entry.id_header.clone(),
            user_id: entry.user_id.clone(),
            role: effective_role(&entry.role, owner_role, &self.default_role),
            expires_at: entry.expires_at,
        };
        let last = entry.last_touch.load(Ordering::Relaxed);
        if now >= last.saturating_add(TOUCH_INTERVAL_SECS)
            && entry
                .last_touch
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            // Full queue: this use goes unrecorded, never the request delayed.
            let _ = self.touches.try_send((entry.id.clone(), now));
        }
        Ok(found)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// The maps hold no invariant a panic could break halfway that a
    /// lookup would trust: a poisoned lock is used as it is.
    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Inner {
    fn remove(&mut self, id: &str) {
        let Some(entry) = self.by_id.remove(id) else {
            return;
        };
        let slot = prefix(&entry.hash);
        if let Some(candidates) = self.by_prefix.get_mut(&slot) {
            candidates.retain(|other| other.id != id);
            if candidates.is_empty() {
                self.by_prefix.remove(&slot);
            }
        }
        let owner = entry.user_id.as_str();
        if !self.by_id.values().any(|e| e.user_id.as_str() == owner) {
            self.owners.remove(owner);
        }
    }
}

fn entry_of(record: &ApiKeyRecord) -> Option<Entry> {
    Some(Entry {
        id_header: HeaderValue::from_str(&record.id).ok()?,
        id: record.id.clone(),
        user_id: UserId::parse(&record.user_id).ok()?,
        role: Role::parse(&record.role).ok()?,
        hash: hash_from_hex(&record.hash)?,
        expires_at: record.expires_at,
        last_touch: AtomicU64::new(record.last_used_at.unwrap_or(0)),
    })
}

fn prefix(hash: &[u8; 32]) -> u64 {
    let mut first = [0u8; 8];
    first.copy_from_slice(hash.get(..8).unwrap_or(&[0; 8]));
    u64::from_be_bytes(first)
}

#[cfg(test)]
mod tests;
