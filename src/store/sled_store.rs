//! [`SledStore`]: the embedded [`Store`], one sled tree per record kind plus
//! the indexes that keep per-user, per-family and expiry work off full scans.
//!
//! Every multi-record change is one sled transaction (serialised by sled), so
//! a crash never leaves a user without its email index or a rotation half done.

mod export;

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

pub use export::Export;

use super::flush::FlushGroup;
use super::{
    hash_from_hex, hex, Chain, ChainStep, Family, FlushFuture, RecordCounts, RefreshRecord,
    Retired, RotateOutcome, StoreError, User, UserStamp, MAX_TRACKED_RETIRED,
};
use crate::private_files;

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

    pub fn create_family(
        &self,
        family: &Family,
        first_token: &[u8; 32],
        record: &RefreshRecord,
        verified: &UserStamp,
    ) -> Result<(), StoreError> {
        check_id(&family.id)?;
        if record.family_id != family.id || record.user_id != family.user_id {
            return Err(StoreError::Invalid(
                "the first refresh token must belong to the new family and its user",
            ));
        }
        let family_bytes = encode(family)?;
        let record = RefreshRecord {
            expires_at: record.expires_at.min(family.expires_at),
            ..record.clone()
        };
        let record_bytes = encode(&record)?;
        self.transact(|tx| {
            // Read inside the transaction so a concurrent delete_user either
            // sees this family or makes this call fail, and a concurrent
            // password change, logout-all or role change either revokes
            // this family or makes this call fail.
            let Some(bytes) = tx.users.get(family.user_id.as_bytes())? else {
                return abort(StoreError::UnknownUser(family.user_id.clone()));
            };
            let user: User = decode_tx("user", family.user_id.as_bytes(), &bytes)?;
            if !verified.matches(&user) {
                return abort(StoreError::UserChanged(user.id));
            }
            if tx.families.get(family.id.as_bytes())?.is_some() {
                return abort(StoreError::Invalid("a family with this id already exists"));
            }
            if tx.refresh.get(first_token)?.is_some() {
                return abort(StoreError::Invalid("this refresh token is already stored"));
            }
            tx.families
                .insert(family.id.as_bytes(), family_bytes.clone())?;
            tx.user_families.insert(
                composite(family.user_id.as_bytes(), family.id.as_bytes()),
                EMPTY,
            )?;
            tx.expiry.insert(
                expiry_key(family.expires_at, &[FAMILY], family.id.as_bytes()),
                EMPTY,
            )?;
            insert_token(tx, first_token, &record, record_bytes.clone())?;
            Ok(())
        })
    }

    pub fn refresh_record(
        &self,
        token_hash: &[u8; 32],
    ) -> Result<Option<RefreshRecord>, StoreError> {
        match self.trees.refresh.get(token_hash)? {
            Some(bytes) => decode("refresh record", token_hash, &bytes).map(Some),
            None => Ok(None),
        }
    }

    pub fn family(&self, id: &str) -> Result<Option<Family>, StoreError> {
        match self.trees.families.get(id)? {
            Some(bytes) => decode("family", id.as_bytes(), &bytes).map(Some),
            None => Ok(None),
        }
    }

    pub fn chain(&self, family_id: &str) -> Result<Option<Chain>, StoreError> {
        match self.trees.chains.get(family_id)? {
            Some(bytes) => decode("chain", family_id.as_bytes(), &bytes).map(Some),
            None => Ok(None),
        }
    }

    pub fn rotate(
        &self,
        presented: &[u8; 32],
        new_hash: &[u8; 32],
        new_record: &RefreshRecord,
        step: &ChainStep,
        now: u64,
    ) -> Result<RotateOutcome, StoreError> {
        let tag_key = hex(&step.tag_key);
        self.transact(|tx| {
            let Some(bytes) = tx.refresh.get(presented)? else {
                return Ok(RotateOutcome::Unknown);
            };
            let mut record: RefreshRecord = decode_tx("refresh record", presented, &bytes)?;
            let Some(bytes) = tx.families.get(record.family_id.as_bytes())? else {
                return Ok(RotateOutcome::Unknown);
            };
            let family: Family = decode_tx("family", record.family_id.as_bytes(), &bytes)?;
            // Reuse is checked first: a second use of a token is the signal
            // of theft whatever else is true of its family.
            if let Some(rotated_at) = record.rotated_at {
                return Ok(RotateOutcome::AlreadyRotated {
                    rotated_at,
                    family_id: record.family_id,
                });
            }
            if family.revoked_at.is_some() {
                return Ok(RotateOutcome::FamilyRevoked {
                    family_id: family.id,
                });
            }
            if now >= family.expires_at {
                return Ok(RotateOutcome::FamilyExpired {
                    family_id: family.id,
                });
            }
            if now >= record.expires_at {
                return Ok(RotateOutcome::Expired);
            }
            if new_record.family_id != record.family_id || new_record.user_id != record.user_id {
                return abort(StoreError::Invalid(
                    "a rotated token must stay in its family and with its user",
                ));
            }
            if tx.refresh.get(new_hash)?.is_some() {
                return abort(StoreError::Invalid("this refresh token is already stored"));
            }
            let family_key = record.family_id.as_bytes();
            let previous: Option<Chain> = match tx.chains.get(family_key)? {
                Some(bytes) => Some(decode_tx("chain", family_key, &bytes)?),
                None => None,
            };
            let expected = previous
                .as_ref()
                .map_or(1, |c| c.generation.saturating_add(1));
            if step.generation != expected
                || previous.as_ref().is_some_and(|c| c.tag_key != tag_key)
            {
                // Only one token of a family is ever unrotated, so a step
                // computed from a stale chain means a caller bug.
                return abort(StoreError::Invalid(
                    "a rotation must advance its family's chain by one, with its key",
                ));
            }
            let mut retired = Vec::new();
            for entry in previous.map(|chain| chain.retired).unwrap_or_default() {
                let Some(old) = hash_from_hex(&entry.hash) else {
                    return abort(StoreError::Corrupt("chain retired hash".to_owned()));
                };
                if entry.keep_until <= now {
                    remove_tokens(tx, &record.family_id, &[old])?;
                } else {
                    retired.push(entry);
                }
            }
            match step.keep_presented_until {
                Some(keep_until) if keep_until <= now => {
                    remove_tokens(tx, &record.family_id, &[*presented])?;
                }
                keep => {
                    let old_expiry = record.expires_at;
                    record.rotated_at = Some(now);
                    record.replaced_by = Some(hex(new_hash));
                    if let Some(keep_until) = keep {
                        // The expiry index then drops it after the grace,
                        // should no later rotation come to do it.
                        record.expires_at = record.expires_at.min(keep_until);
                        retired.push(Retired {
                            hash: hex(presented),
                            keep_until: record.expires_at,
                        });
                    }
                    tx.refresh.insert(&presented[..], encode_tx(&record)?)?;
                    tx.expiry
                        .remove(expiry_key(old_expiry, &[TOKEN], presented))?;
                    tx.expiry
                        .insert(expiry_key(record.expires_at, &[TOKEN], presented), EMPTY)?;
                }
            }
            // Untracked ones still leave at their `keep_until`, by the sweep.
            let excess = retired.len().saturating_sub(MAX_TRACKED_RETIRED);
            retired.drain(..excess);
            let chain = Chain {
                generation: step.generation,
                tag_key: tag_key.clone(),
                retired,
            };
            tx.chains.insert(family_key, encode_tx(&chain)?)?;
            let successor = RefreshRecord {
                family_id: record.family_id.clone(),
                user_id: record.user_id.clone(),
                expires_at: new_record.expires_at.min(family.expires_at),
                rotated_at: None,
                replaced_by: None,
            };
            let successor_bytes = encode_tx(&successor)?;
            insert_token(tx, new_hash, &successor, successor_bytes)?;
            Ok(RotateOutcome::Rotated { family })
        })
    }

    pub fn revoke_family(&self, family_id: &str, now: u64) -> Result<bool, StoreError> {
        self.transact(|tx| revoke_in(tx, family_id, now))
    }

    pub fn revoke_user_families(
        &self,
        user_id: &str,
        except_family: Option<&str>,
        now: u64,
    ) -> Result<Vec<String>, StoreError> {
        let candidates: Vec<String> = self
            .user_family_ids(user_id)?
            .into_iter()
            .filter(|id| Some(id.as_str()) != except_family)
            .collect();
        self.transact(|tx| {
            let mut revoked = Vec::new();
            for id in &candidates {
                if revoke_in(tx, id, now)? {
                    revoked.push(id.clone());
                }
            }
            Ok(revoked)
        })
    }

    pub fn cap_user_families(
        &self,
        user_id: &str,
        max: usize,
        now: u64,
    ) -> Result<Vec<String>, StoreError> {
        let mut occupying = Vec::new();
        for (id, seq) in self.user_family_order(user_id)? {
            if let Some(family) = self.family(&id)? {
                if family.expires_at > now {
                    occupying.push((seq, family));
                }
            }
        }
        let Some(excess) = occupying.len().checked_sub(max).filter(|n| *n > 0) else {
            return Ok(Vec::new());
        };
        // Revoked sessions only take room: they go first, then the oldest.
        occupying.sort_by_key(|(seq, f)| (f.revoked_at.is_none(), f.created_at, *seq));
        let victims: Vec<String> = occupying
            .into_iter()
            .take(excess)
            .map(|(_, f)| f.id)
            .collect();
        self.transact(|tx| {
            let mut revoked = Vec::new();
            for id in &victims {
                if revoke_in(tx, id, now)? {
                    revoked.push(id.clone());
                }
                expire_in(tx, id, now)?;
            }
            Ok(revoked)
        })
    }

    pub fn record_counts(&self) -> Result<RecordCounts, StoreError> {
        let t = &self.trees;
        Ok(RecordCounts {
            users: t.users.len(),
            families: t.families.len(),
            chains: t.chains.len(),
            refresh_tokens: t.refresh.len(),
            index_entries: t.family_tokens.len() + t.expiry.len(),
        })
    }

    pub fn revoked_families_since(&self, since: u64) -> Result<Vec<(String, u64)>, StoreError> {
        let mut revoked = Vec::new();
        for entry in self.trees.revocations.range(since.to_be_bytes()..) {
            let (key, _) = entry?;
            let (at, id) = split_timed_key(&key)
                .ok_or_else(|| StoreError::Corrupt("revocations key".to_owned()))?;
            revoked.push((utf8("revocations key", id)?, at));
        }
        Ok(revoked)
    }

    pub fn sweep_expired(&self, now: u64) -> Result<usize, StoreError> {
        // Keys are `expires_at` first, so everything due sorts below this.
        let due = now.saturating_add(1).to_be_bytes();
        let mut removed = 0;
        loop {
            let batch: Vec<IVec> = self
                .trees
                .expiry
                .range(..due)
                .keys()
                .take(SWEEP_BATCH)
                .collect::<Result<_, _>>()?;
            if batch.is_empty() {
                return Ok(removed);
            }
            for key in batch {
                let (_, rest) = split_timed_key(&key)
                    .ok_or_else(|| StoreError::Corrupt("expiry key".to_owned()))?;
                match rest.split_first() {
                    Some((&FAMILY, id)) => {
                        removed += self.purge_family(&utf8("expiry key", id)?)?
                    }
                    Some((&TOKEN, hash)) => {
                        if let Ok(hash) = <[u8; 32]>::try_from(hash) {
                            removed += self.purge_token(&hash)?;
                        }
                    }
                    _ => {}
                }
                // Whatever the entry pointed at is gone (or was never
                // readable); the entry must go too or the sweep would loop.
                self.trees.expiry.remove(&key)?;
            }
        }
    }

    pub fn prune_revocations(&self, before: u64) -> Result<usize, StoreError> {
        let mut removed = 0;
        let old: Vec<IVec> = self
            .trees
            .revocations
            .range(..before.to_be_bytes())
            .keys()
            .collect::<Result<_, _>>()?;
        for key in old {
            if self.trees.revocations.remove(key)?.is_some() {
                removed += 1;
            }
        }
        for entry in self.trees.tombstones.iter() {
            let (key, value) = entry?;
            let deleted_at = <[u8; 8]>::try_from(value.as_ref())
                .map(u64::from_be_bytes)
                .unwrap_or(0);
            if deleted_at < before && self.trees.tombstones.remove(key)?.is_some() {
                removed += 1;
            }
        }
        Ok(removed)
    }

    pub fn note_access_lifetime(&self, lifetime: u64, now: u64) -> Result<u64, StoreError> {
        let earlier: Vec<LifetimeInUse> = match self.trees.meta.get(LIFETIMES_KEY)? {
            Some(bytes) => decode("meta", LIFETIMES_KEY, &bytes)?,
            None => Vec::new(),
        };
        let (longest, kept) = lifetimes_in_use(earlier, lifetime, now);
        self.trees.meta.insert(LIFETIMES_KEY, encode(&kept)?)?;
        // At start, before any token of this run exists: durable at once.
        self.trees.meta.flush()?;
        Ok(longest)
    }

    pub fn flush(&self) -> FlushFuture<'_> {
        Box::pin(self.flusher.flush())
    }
}

/// An access lifetime some run minted tokens with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct LifetimeInUse {
    /// Seconds, leeway included.
    lifetime: u64,
    /// When the last token minted with it expires; `None` while the run
    /// using it may still be minting (it is closed at the next start).
    until: Option<u64>,
}

/// Closes the entries of earlier runs (they stopped minting by `now`), drops
/// those whose tokens have all expired or that `lifetime` covers anyway, and
/// opens one for this run. Returns the longest lifetime still in use.
fn lifetimes_in_use(
    earlier: Vec<LifetimeInUse>,
    lifetime: u64,
    now: u64,
) -> (u64, Vec<LifetimeInUse>) {
    let mut kept: Vec<LifetimeInUse> = earlier
        .into_iter()
        .map(|entry| LifetimeInUse {
            until: Some(
                entry
                    .until
                    .unwrap_or_else(|| now.saturating_add(entry.lifetime)),
            ),
            ..entry
        })
        .filter(|entry| entry.lifetime > lifetime && entry.until.is_some_and(|u| u > now))
        .collect();
    let longest = kept
        .iter()
        .map(|entry| entry.lifetime)
        .fold(lifetime, u64::max);
    kept.push(LifetimeInUse {
        lifetime,
        until: None,
    });
    (longest, kept)
}

/// Marks a family revoked inside a transaction; true if this call did.
fn revoke_in(tx: &Tx, family_id: &str, now: u64) -> TxResult<bool> {
    let Some(bytes) = tx.families.get(family_id.as_bytes())? else {
        return Ok(false);
    };
    let mut family: Family = decode_tx("family", family_id.as_bytes(), &bytes)?;
    if family.revoked_at.is_some() {
        return Ok(false);
    }
    family.revoked_at = Some(now);
    tx.families
        .insert(family_id.as_bytes(), encode_tx(&family)?)?;
    tx.revocations
        .insert(expiry_key(now, b"", family_id.as_bytes()), EMPTY)?;
    Ok(true)
}

/// Ends a family at `now` (never later than it would have), moving its
/// expiry index entry so the sweep purges it.
fn expire_in(tx: &Tx, family_id: &str, now: u64) -> TxResult<()> {
    let Some(bytes) = tx.families.get(family_id.as_bytes())? else {
        return Ok(());
    };
    let mut family: Family = decode_tx("family", family_id.as_bytes(), &bytes)?;
    if family.expires_at <= now {
        return Ok(());
    }
    tx.expiry.remove(expiry_key(
        family.expires_at,
        &[FAMILY],
        family_id.as_bytes(),
    ))?;
    family.expires_at = now;
    tx.families
        .insert(family_id.as_bytes(), encode_tx(&family)?)?;
    tx.expiry
        .insert(expiry_key(now, &[FAMILY], family_id.as_bytes()), EMPTY)?;
    Ok(())
}

/// Stores a refresh token with its family and expiry index entries.
fn insert_token(tx: &Tx, hash: &[u8; 32], record: &RefreshRecord, bytes: Vec<u8>) -> TxResult<()> {
    tx.refresh.insert(&hash[..], bytes)?;
    tx.family_tokens
        .insert(composite(record.family_id.as_bytes(), hash), EMPTY)?;
    tx.expiry
        .insert(expiry_key(record.expires_at, &[TOKEN], hash), EMPTY)?;
    Ok(())
}

/// Removes a family record, its index entries and the given tokens.
fn remove_family(tx: &Tx, family_id: &str, hashes: &[[u8; 32]]) -> TxResult<usize> {
    let mut removed = remove_tokens(tx, family_id, hashes)?;
    if tx.chains.remove(family_id.as_bytes())?.is_some() {
        removed += 1;
    }
    if let Some(bytes) = tx.families.remove(family_id.as_bytes())? {
        removed += 1;
        // An unreadable record still goes; only its index entries may stay
        // behind, and the sweep and scans skip entries whose record is gone.
        if let Ok(family) = decode::<Family>("family", family_id.as_bytes(), &bytes) {
            tx.user_families
                .remove(composite(family.user_id.as_bytes(), family_id.as_bytes()))?;
            tx.expiry.remove(expiry_key(
                family.expires_at,
                &[FAMILY],
                family_id.as_bytes(),
            ))?;
        }
    }
    Ok(removed)
}

/// Removes tokens of `family_id` with their index entries; counts records.
fn remove_tokens(tx: &Tx, family_id: &str, hashes: &[[u8; 32]]) -> TxResult<usize> {
    let mut removed = 0;
    for hash in hashes {
        tx.family_tokens
            .remove(composite(family_id.as_bytes(), hash))?;
        if let Some(bytes) = tx.refresh.remove(&hash[..])? {
            removed += 1;
            if let Ok(record) = decode::<RefreshRecord>("refresh record", hash, &bytes) {
                tx.expiry
                    .remove(expiry_key(record.expires_at, &[TOKEN], hash))?;
            }
        }
    }
    Ok(removed)
}

/// Turns sled's open failures into the errors an operator can act on.
fn classify_open_error(path: &Path, source: sled::Error) -> StoreError {
    match source {
        // sled reports a held lock as a plain io error with this wording.
        sled::Error::Io(ref io) if io.to_string().contains("could not acquire lock") => {
            StoreError::InUse {
                path: path.to_owned(),
            }
        }
        sled::Error::Corruption { at, .. } => StoreError::CorruptDatabase {
            path: path.to_owned(),
            detail: match at {
                Some(at) => format!("sled found corruption at {at:?}"),
                None => "sled found corruption".to_owned(),
            },
        },
        source => StoreError::Open {
            path: path.to_owned(),
            source,
        },
    }
}

/// Opens sled itself, turning every failure into an error naming `path`.
fn open_db(path: &Path) -> Result<sled::Db, StoreError> {
    let config = sled::Config::new().path(path).cache_capacity(CACHE_BYTES);
    // sled 0.34 can panic on some damaged files instead of returning
    // Corruption; an operator needs an error naming the file, not a crash.
    match catch_unwind(AssertUnwindSafe(|| config.open())) {
        Ok(Ok(db)) => Ok(db),
        Ok(Err(source)) => Err(classify_open_error(path, source)),
        Err(panic) => {
            let detail = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_else(|| "sled panicked while recovering".to_owned());
            Err(StoreError::CorruptDatabase {
                path: path.to_owned(),
                detail,
            })
        }
    }
}

/// Checks the format marker of an existing database, or writes (and
/// flushes) it into a new one.
fn check_format(path: &Path, db: &sled::Db, meta: &Tree, existed: bool) -> Result<(), StoreError> {
    let corrupt = |detail: String| StoreError::CorruptDatabase {
        path: path.to_owned(),
        detail,
    };
    let marker = meta
        .get(FORMAT_KEY)
        .map_err(|source| classify_open_error(path, source))?;
    match marker {
        Some(format) if format == FORMAT => Ok(()),
        Some(other) => Err(corrupt(format!(
            "written in format {:?}, this version reads {:?}",
            String::from_utf8_lossy(&other),
            String::from_utf8_lossy(FORMAT)
        ))),
        None if existed => Err(corrupt(
            "sled recovered no data from the existing files: its log is damaged, \
             truncated or missing"
                .to_owned(),
        )),
        None => {
            // Durable at once: a crash before the first flush would
            // otherwise look like a damaged database at the next start.
            meta.insert(FORMAT_KEY, FORMAT)
                .and_then(|_| db.flush())
                .map_err(|source| classify_open_error(path, source))?;
            Ok(())
        }
    }
}

/// A non-empty directory without sled's files is somebody else's data (a
/// mistyped `[store] path`); sled would quietly start a new database in it.
fn refuse_foreign_directory(path: &Path) -> Result<(), StoreError> {
    let Ok(mut entries) = std::fs::read_dir(path) else {
        return Ok(()); // Missing (sled creates it) or not a directory (sled reports it).
    };
    let non_empty = entries.next().is_some();
    if non_empty && !path.join("conf").exists() && !path.join("db").exists() {
        return Err(StoreError::CorruptDatabase {
            path: path.to_owned(),
            detail: "the directory holds files but no sled database".to_owned(),
        });
    }
    Ok(())
}

/// Tokens from a version bump are refused below it; `u32::MAX` is reserved
/// for deleted users, so the version stops one short.
fn next_version(version: u32) -> u32 {
    version.saturating_add(1).min(u32::MAX - 1)
}

/// Ids are joined with a 0 byte in index keys, so they must not contain one.
fn check_id(id: &str) -> Result<(), StoreError> {
    if id.is_empty() || id.as_bytes().contains(&SEP) {
        return Err(StoreError::Invalid("ids must be non-empty and free of NUL"));
    }
    Ok(())
}

fn composite(first: &[u8], second: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(first.len() + 1 + second.len());
    key.extend_from_slice(first);
    key.push(SEP);
    key.extend_from_slice(second);
    key
}

/// A key that sorts by time: `at` big-endian, then `kind`, then `id`.
fn expiry_key(at: u64, kind: &[u8], id: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(8 + kind.len() + id.len());
    key.extend_from_slice(&at.to_be_bytes());
    key.extend_from_slice(kind);
    key.extend_from_slice(id);
    key
}

fn split_timed_key(key: &[u8]) -> Option<(u64, &[u8])> {
    let (at, rest) = key.split_first_chunk::<8>()?;
    Some((u64::from_be_bytes(*at), rest))
}

fn encode(value: &impl Serialize) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(|_| StoreError::Invalid("record cannot be encoded"))
}

fn encode_tx(value: &impl Serialize) -> TxResult<Vec<u8>> {
    encode(value).map_err(ConflictableTransactionError::Abort)
}

fn decode<T: DeserializeOwned>(what: &str, key: &[u8], bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|error| {
        let key = match std::str::from_utf8(key) {
            Ok(text) => text.to_owned(),
            Err(_) => hex(key),
        };
        StoreError::Corrupt(format!("{what} {key}: {error}"))
    })
}

fn decode_tx<T: DeserializeOwned>(what: &str, key: &[u8], bytes: &[u8]) -> TxResult<T> {
    decode(what, key, bytes).map_err(ConflictableTransactionError::Abort)
}

fn utf8(what: &str, bytes: &[u8]) -> Result<String, StoreError> {
    String::from_utf8(bytes.to_vec())
        .map_err(|_| StoreError::Corrupt(format!("{what} is not UTF-8")))
}
