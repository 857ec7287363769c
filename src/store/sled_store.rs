//! [`SledStore`]: the embedded [`Store`], one sled tree per record kind plus
//! the indexes that keep per-user, per-family and expiry work off full scans.
//!
//! Every multi-record change is one sled transaction (serialised by sled), so
//! a crash never leaves a user without its email index or a rotation half done.

mod api_keys;
mod export;
mod keys;
mod open;
mod sessions;

use std::ops::Bound;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Serialize;
use sled::transaction::{
    abort, ConflictableTransactionError, ConflictableTransactionResult, TransactionError,
    Transactional, TransactionalTree,
};
use sled::{IVec, Tree};

pub(crate) use export::Export;

use super::flush::FlushGroup;
use super::{
    hash_from_hex, hex, Chain, ChainStep, Family, FlushFuture, RecordCounts, RefreshRecord,
    Retired, RotateOutcome, StoreError, User, UserStamp, MAX_TRACKED_RETIRED,
};
use crate::private_files;
use api_keys::remove_api_key;
use keys::*;
use open::{check_format, classify_open_error, open_db, refuse_foreign_directory};
use sessions::*;

/// sled's page cache; the working set (users, live sessions) is far smaller.
const CACHE_BYTES: u64 = 64 * 1024 * 1024;

/// How many expired entries `sweep_expired` reads before acting on them, so
/// a sweep after long downtime does not load every key at once.
const SWEEP_BATCH: usize = 1024;

/// How many of a family's tokens one purge transaction removes, so purging
/// a family with a long history never holds all of it in one transaction.
const PURGE_BATCH: usize = 256;

/// Separates the two ids in a composite index key; ids never contain it.
const SEP: u8 = 0;

/// Written into every new database; its absence in an existing one means
/// sled lost the data.
const FORMAT_KEY: &[u8] = b"format";
const FORMAT: &[u8] = b"authgate-store-1";

/// Access lifetimes of this and earlier runs, see [`Store::note_access_lifetime`].
const LIFETIMES_KEY: &[u8] = b"access_lifetimes";

/// The value of index entries, whose information is all in the key.
const EMPTY: &[u8] = &[];

/// Kinds of entries in the expiry index.
const FAMILY: u8 = b'f';
const TOKEN: u8 = b'r';

/// The embedded database. Holds sled's exclusive file lock while open, so a
/// second process (or a second open in this one) gets [`StoreError::InUse`].
pub struct SledStore {
    path: PathBuf,
    /// The database itself, for its monotonic id generator.
    db: sled::Db,
    trees: Trees,
    flusher: FlushGroup,
}

/// The trees, named by what they map.
struct Trees {
    /// format marker, access lifetimes → their values.
    meta: Tree,
    /// user id → [`User`] JSON.
    users: Tree,
    /// canonical email → user id.
    emails: Tree,
    /// family id → [`Family`] JSON.
    families: Tree,
    /// user id, 0, family id → () or, once the session cap has seen it, a
    /// sequence number (big-endian) ordering the user's sessions by creation
    /// more finely than `created_at`'s seconds.
    user_families: Tree,
    /// SHA-256 of a refresh token → [`RefreshRecord`] JSON.
    refresh: Tree,
    /// family id, 0, token hash → (): a session's tokens.
    family_tokens: Tree,
    /// expires_at (big-endian), kind, id → (): what `sweep_expired` removes.
    expiry: Tree,
    /// revoked_at (big-endian), family id → (): recent revocations.
    revocations: Tree,
    /// user id → deleted_at (big-endian): deleted users.
    tombstones: Tree,
    /// family id → [`Chain`] JSON: rotation state, from a first rotation.
    chains: Tree,
    /// API key id → [`super::ApiKeyRecord`] JSON.
    api_keys: Tree,
    /// user id, 0, API key id → (): a user's keys.
    user_api_keys: Tree,
}

/// The trees as seen inside one transaction.
struct Tx<'a> {
    users: &'a TransactionalTree,
    emails: &'a TransactionalTree,
    families: &'a TransactionalTree,
    user_families: &'a TransactionalTree,
    refresh: &'a TransactionalTree,
    family_tokens: &'a TransactionalTree,
    expiry: &'a TransactionalTree,
    revocations: &'a TransactionalTree,
    tombstones: &'a TransactionalTree,
    chains: &'a TransactionalTree,
    api_keys: &'a TransactionalTree,
    user_api_keys: &'a TransactionalTree,
}

type TxResult<T> = ConflictableTransactionResult<T, StoreError>;

impl SledStore {
    /// Opens (or creates) the database directory at `path`, creating its
    /// parent if missing. Refuses a database another process holds and one
    /// that sled finds corrupt, naming the path; never starts empty over
    /// existing data it cannot read.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        // It holds password hashes and emails: created readable by the owner
        // only (0700, parents included); sled would follow the umask.
        let created = !path.exists();
        if created {
            private_files::create_dir_all(path).map_err(|source| StoreError::CreateDir {
                path: path.to_owned(),
                source,
            })?;
        }
        refuse_foreign_directory(path)?;
        // sled 0.34 recovers a damaged or missing log as an empty database
        // without complaint; the format marker tells the two apart.
        let existed = path.join("db").exists() || path.join("conf").exists();
        let db = open_db(path)?;
        let open = |name: &str| {
            db.open_tree(name)
                .map_err(|source| classify_open_error(path, source))
        };
        let meta = open("meta")?;
        check_format(path, &db, &meta, existed)?;
        if created {
            private_files::restrict_contents(path).map_err(|source| StoreError::CreateDir {
                path: path.to_owned(),
                source,
            })?;
        }
        let trees = Trees {
            meta,
            users: open("users")?,
            emails: open("emails")?,
            families: open("families")?,
            user_families: open("user_families")?,
            refresh: open("refresh")?,
            family_tokens: open("family_tokens")?,
            expiry: open("expiry")?,
            revocations: open("revocations")?,
            tombstones: open("tombstones")?,
            chains: open("chains")?,
            api_keys: open("api_keys")?,
            user_api_keys: open("user_api_keys")?,
        };
        let flush_db = db.clone();
        let flusher = FlushGroup::new(Box::new(move || flush_db.flush().map(|_| ())));
        Ok(Self {
            path: path.to_owned(),
            db,
            trees,
            flusher,
        })
    }

    /// The directory this store lives in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `body` as one transaction over every tree. sled may run it more
    /// than once on conflict, so it must only read and write through `Tx`.
    fn transact<A>(&self, body: impl Fn(&Tx) -> TxResult<A>) -> Result<A, StoreError> {
        let t = &self.trees;
        let trees = (
            &t.users,
            &t.emails,
            &t.families,
            &t.user_families,
            &t.refresh,
            &t.family_tokens,
            &t.expiry,
            &t.revocations,
            &t.tombstones,
            &t.chains,
            &t.api_keys,
            &t.user_api_keys,
        );
        let result = trees.transaction(
            |(
                users,
                emails,
                families,
                user_families,
                refresh,
                family_tokens,
                expiry,
                revocations,
                tombstones,
                chains,
                api_keys,
                user_api_keys,
            )| {
                body(&Tx {
                    users,
                    emails,
                    families,
                    user_families,
                    refresh,
                    family_tokens,
                    expiry,
                    revocations,
                    tombstones,
                    chains,
                    api_keys,
                    user_api_keys,
                })
            },
        );
        result.map_err(|error| match error {
            TransactionError::Abort(error) => error,
            TransactionError::Storage(error) => StoreError::Sled(error),
        })
    }

    /// Applies `change` to the user `id`, if it exists; an error from
    /// `change` aborts the transaction and is returned.
    fn update_user(
        &self,
        id: &str,
        change: impl Fn(&mut User) -> Result<(), StoreError>,
    ) -> Result<Option<User>, StoreError> {
        self.transact(|tx| {
            let Some(bytes) = tx.users.get(id)? else {
                return Ok(None);
            };
            let mut user: User = decode_tx("user", id.as_bytes(), &bytes)?;
            change(&mut user).map_err(ConflictableTransactionError::Abort)?;
            tx.users.insert(id, encode_tx(&user)?)?;
            Ok(Some(user))
        })
    }

    /// The ids of a user's families, from the index.
    fn user_family_ids(&self, user_id: &str) -> Result<Vec<String>, StoreError> {
        let prefix = composite(user_id.as_bytes(), b"");
        let mut ids = Vec::new();
        for entry in self.trees.user_families.scan_prefix(&prefix) {
            let (key, _) = entry?;
            let rest = key.get(prefix.len()..).unwrap_or_default();
            ids.push(utf8("user_families key", rest)?);
        }
        Ok(ids)
    }

    /// The user's family ids with their creation sequence. A family not yet
    /// numbered (new since the last cap, which runs after every creation)
    /// gets the next number now; only an entry still unnumbered is changed,
    /// so a family purged meanwhile is not brought back into the index.
    fn user_family_order(&self, user_id: &str) -> Result<Vec<(String, u64)>, StoreError> {
        let prefix = composite(user_id.as_bytes(), b"");
        let mut order = Vec::new();
        for entry in self.trees.user_families.scan_prefix(&prefix) {
            let (key, value) = entry?;
            let id = utf8(
                "user_families key",
                key.get(prefix.len()..).unwrap_or_default(),
            )?;
            let seq = match <[u8; 8]>::try_from(value.as_ref()) {
                Ok(bytes) => u64::from_be_bytes(bytes),
                Err(_) => {
                    let seq = self.db.generate_id()?;
                    let numbered = self.trees.user_families.compare_and_swap(
                        &key,
                        Some(value),
                        Some(&seq.to_be_bytes()[..]),
                    )?;
                    match numbered {
                        Ok(()) => seq,
                        // Numbered by a concurrent cap: take its number.
                        Err(sled::CompareAndSwapError {
                            current: Some(current),
                            ..
                        }) => match <[u8; 8]>::try_from(current.as_ref()) {
                            Ok(bytes) => u64::from_be_bytes(bytes),
                            Err(_) => continue,
                        },
                        // Purged meanwhile.
                        Err(_) => continue,
                    }
                }
            };
            order.push((id, seq));
        }
        Ok(order)
    }

    /// Up to `limit` hashes of a family's refresh tokens, from the index.
    fn family_hashes_batch(
        &self,
        family_id: &str,
        limit: usize,
    ) -> Result<Vec<[u8; 32]>, StoreError> {
        let prefix = composite(family_id.as_bytes(), b"");
        let mut hashes = Vec::new();
        for entry in self.trees.family_tokens.scan_prefix(&prefix).take(limit) {
            let (key, _) = entry?;
            let rest = key.get(prefix.len()..).unwrap_or_default();
            let hash = <[u8; 32]>::try_from(rest)
                .map_err(|_| StoreError::Corrupt(format!("family_tokens key for {family_id:?}")))?;
            hashes.push(hash);
        }
        Ok(hashes)
    }

    /// Deletes a family and all its tokens; returns how many records went.
    /// The family record goes first (so no rotation can add a token), then
    /// its tokens in transactions of at most [`PURGE_BATCH`]: a crash in
    /// between leaves tokens whose family is gone, which refuse rotation and
    /// which the sweep removes at their expiry.
    fn purge_family(&self, family_id: &str) -> Result<usize, StoreError> {
        let first = self.family_hashes_batch(family_id, PURGE_BATCH)?;
        let removed = self.transact(|tx| remove_family(tx, family_id, &first))?;
        Ok(removed + self.purge_tokens(family_id)?)
    }

    /// Deletes what tokens a family still has in the index, in transactions
    /// of at most [`PURGE_BATCH`]; counts records.
    fn purge_tokens(&self, family_id: &str) -> Result<usize, StoreError> {
        let mut removed = 0;
        loop {
            let batch = self.family_hashes_batch(family_id, PURGE_BATCH)?;
            if batch.is_empty() {
                return Ok(removed);
            }
            removed += self.transact(|tx| remove_tokens(tx, family_id, &batch))?;
        }
    }

    /// Removes one refresh token found expired; 1 if it still existed.
    fn purge_token(&self, hash: &[u8; 32]) -> Result<usize, StoreError> {
        self.transact(|tx| {
            let Some(bytes) = tx.refresh.get(hash)? else {
                return Ok(0);
            };
            match decode_tx::<RefreshRecord>("refresh record", hash, &bytes) {
                Ok(record) => remove_tokens(tx, &record.family_id, std::slice::from_ref(hash)),
                Err(_) => {
                    // Unreadable, but expired by its index entry: let it go.
                    tx.refresh.remove(&hash[..])?;
                    Ok(1)
                }
            }
        })
    }
}

/// The operations, synchronous; [`super::Store`] is implemented over them
/// in `sled_async.rs`.
impl SledStore {
    pub fn create_user(&self, user: &User) -> Result<(), StoreError> {
        check_id(&user.id)?;
        let record = encode(user)?;
        self.transact(|tx| {
            if tx.emails.get(user.email.as_bytes())?.is_some() {
                return abort(StoreError::EmailTaken);
            }
            if tx.users.get(user.id.as_bytes())?.is_some() {
                return abort(StoreError::Invalid("a user with this id already exists"));
            }
            tx.users.insert(user.id.as_bytes(), record.clone())?;
            tx.emails
                .insert(user.email.as_bytes(), user.id.as_bytes())?;
            Ok(())
        })
    }

    pub fn user_by_id(&self, id: &str) -> Result<Option<User>, StoreError> {
        match self.trees.users.get(id)? {
            Some(bytes) => decode("user", id.as_bytes(), &bytes).map(Some),
            None => Ok(None),
        }
    }

    pub fn user_by_email(&self, email: &str) -> Result<Option<User>, StoreError> {
        match self.trees.emails.get(email)? {
            Some(id) => self.user_by_id(&utf8("emails value", &id)?),
            None => Ok(None),
        }
    }

    pub fn list_users(
        &self,
        after_id: Option<&str>,
        limit: usize,
    ) -> Result<Vec<User>, StoreError> {
        let start = match after_id {
            Some(id) => Bound::Excluded(id.as_bytes()),
            None => Bound::Unbounded,
        };
        let range = self
            .trees
            .users
            .range::<&[u8], _>((start, Bound::Unbounded));
        let mut users = Vec::new();
        for entry in range.take(limit) {
            let (key, bytes) = entry?;
            users.push(decode("user", &key, &bytes)?);
        }
        Ok(users)
    }

    pub fn set_role(&self, id: &str, role: &str) -> Result<Option<User>, StoreError> {
        self.update_user(id, |user| {
            role.clone_into(&mut user.role);
            user.token_version = next_version(user.token_version);
            Ok(())
        })
    }

    pub fn set_password(
        &self,
        id: &str,
        verified: &str,
        hash: &str,
        bump_version: bool,
    ) -> Result<Option<User>, StoreError> {
        self.update_user(id, |user| {
            if user.password_hash != verified {
                return Err(StoreError::UserChanged(user.id.clone()));
            }
            hash.clone_into(&mut user.password_hash);
            if bump_version {
                user.token_version = next_version(user.token_version);
            }
            Ok(())
        })
    }

    pub fn bump_token_version(&self, id: &str) -> Result<Option<User>, StoreError> {
        self.update_user(id, |user| {
            user.token_version = next_version(user.token_version);
            Ok(())
        })
    }

    pub fn delete_user(&self, id: &str, now: u64) -> Result<Option<User>, StoreError> {
        // Family records go in the transaction, their tokens after it in
        // bounded batches: a session's history is never held at once.
        let families = self.user_family_ids(id)?;
        let keys = self.user_api_key_ids(id)?;
        let deleted = self.transact(|tx| {
            let Some(bytes) = tx.users.remove(id.as_bytes())? else {
                return Ok(None);
            };
            let user: User = decode_tx("user", id.as_bytes(), &bytes)?;
            // Only drop the email entry if it still points at this user.
            if tx.emails.get(user.email.as_bytes())?.as_deref() == Some(id.as_bytes()) {
                tx.emails.remove(user.email.as_bytes())?;
            }
            for family in &families {
                remove_family(tx, family, &[])?;
            }
            // The keys go in the same transaction; one created since the
            // scan saw the user and is purged below.
            for key in &keys {
                remove_api_key(tx, id, key)?;
            }
            tx.tombstones
                .insert(id.as_bytes(), &now.to_be_bytes()[..])?;
            Ok(Some(user))
        })?;
        if deleted.is_some() {
            // Sessions created or rotated between the scans and the
            // transaction; `create_family` and `rotate` refuse from now on.
            for family in self.user_family_ids(id)? {
                self.purge_family(&family)?;
            }
            for family in &families {
                self.purge_tokens(family)?;
            }
            self.purge_api_keys(id)?;
        }
        Ok(deleted)
    }

    pub fn deleted_user_ids(&self) -> Result<Vec<String>, StoreError> {
        let mut ids = Vec::new();
        for entry in self.trees.tombstones.iter() {
            let (key, _) = entry?;
            ids.push(utf8("tombstones key", &key)?);
        }
        Ok(ids)
    }

    pub fn token_versions(&self) -> Result<Vec<(String, u32)>, StoreError> {
        let mut versions = Vec::new();
        for entry in self.trees.users.iter() {
            let (key, bytes) = entry?;
            let user: User = decode("user", &key, &bytes)?;
            if user.token_version > 0 {
                versions.push((user.id, user.token_version));
            }
        }
        Ok(versions)
    }

    pub fn flush(&self) -> FlushFuture<'_> {
        Box::pin(self.flusher.flush())
    }
}
