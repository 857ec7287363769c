//! The key directory (`[tokens] keys_dir`): one file per key id and
//! `keys.json`, the manifest of each key's algorithm and state. The
//! `authgate keys` commands change it; the gateway only reads it.
//!
//! The manifest is replaced atomically (write, fsync, rename, fsync the
//! directory), so a crash leaves the old or the new state, never half of one.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::material::{self, algorithm_name, is_hmac, parse_algorithm, MaterialError};

const MANIFEST: &str = "keys.json";

/// Where a key is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyState {
    /// Verifies (and is in the JWKS) but does not sign: verifiers fetch it first.
    Published,
    /// Signs new tokens, and verifies.
    Active,
    /// Neither signs nor verifies; its private key file is deleted.
    Retired,
}

/// One key in the manifest.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyRecord {
    pub kid: String,
    pub algorithm: String,
    pub state: KeyState,
    pub created_at: u64,
    /// When this key last stopped signing (another key was activated); tokens
    /// it signed are unexpired until this plus their lifetime.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signed_until: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retired_at: Option<u64>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub keys: Vec<KeyRecord>,
}

#[derive(Debug, thiserror::Error)]
pub enum KeyDirError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a valid key manifest: {source}")]
    Manifest {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{path}: key {kid:?}: {problem}")]
    Record {
        path: PathBuf,
        kid: String,
        problem: String,
    },
    #[error("key file {path}: {source}")]
    Material {
        path: PathBuf,
        #[source]
        source: MaterialError,
    },
    #[error("no key {0:?} in the key directory (see `authgate keys list`)")]
    UnknownKid(String),
    #[error("key {kid:?} is {state}")]
    WrongState { kid: String, state: &'static str },
    #[error(
        "key {kid:?} signed tokens that stay valid until {until} (unix time, {remaining}s from now); \
         retire it after that, or pass --force to log out the holders of those tokens"
    )]
    StillSigning {
        kid: String,
        until: u64,
        remaining: u64,
    },
}

/// A key directory on disk.
pub struct KeyDir {
    path: PathBuf,
}

impl KeyDir {
    pub fn new(path: &Path) -> Self {
        Self {
            path: path.to_owned(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The manifest; an absent directory or manifest is an empty one.
    pub fn read(&self) -> Result<Manifest, KeyDirError> {
        let path = self.path.join(MANIFEST);
        let text = match std::fs::read(&path) {
            Ok(text) => text,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Manifest::default())
            }
            Err(source) => return Err(KeyDirError::Read { path, source }),
        };
        let manifest: Manifest =
            serde_json::from_slice(&text).map_err(|source| KeyDirError::Manifest {
                path: path.clone(),
                source,
            })?;
        let mut active = 0;
        for record in &manifest.keys {
            let fail = |problem: &str| KeyDirError::Record {
                path: path.clone(),
                kid: record.kid.clone(),
                problem: problem.to_owned(),
            };
            if !is_valid_kid(&record.kid) {
                return Err(fail(
                    "a kid is 1-64 characters of A-Z, a-z, 0-9, '-' and '_'",
                ));
            }
            if parse_algorithm(&record.algorithm).is_none() {
                return Err(fail("unsupported algorithm"));
            }
            if manifest.keys.iter().filter(|r| r.kid == record.kid).count() > 1 {
                return Err(fail("listed twice"));
            }
            if record.state == KeyState::Active {
                active += 1;
            }
        }
        if active > 1 {
            return Err(KeyDirError::Record {
                path,
                kid: String::new(),
                problem: "more than one key is active".to_owned(),
            });
        }
        Ok(manifest)
    }

    /// The file holding a key's private material. The kid was checked to be
    /// a plain name, so this never leaves the directory.
    pub fn key_file(&self, record: &KeyRecord) -> PathBuf {
        let hmac = parse_algorithm(&record.algorithm).is_some_and(is_hmac);
        let extension = if hmac { "secret" } else { "pem" };
        self.path.join(format!("{}.{extension}", record.kid))
    }

    /// Writes a new key (mode 0600, directory 0700) in the published state;
    /// returns its kid.
    pub fn generate(
        &self,
        algorithm: jsonwebtoken::Algorithm,
        now: u64,
    ) -> Result<String, KeyDirError> {
        let mut manifest = self.read()?;
        // Led by the algorithm, so no kid starts with '-' (read as an option
        // on the command line) and `keys list` is easier to read.
        let kid = format!(
            "{}-{}",
            algorithm_name(algorithm).to_ascii_lowercase(),
            crate::auth::claims::random_id()
        );
        let record = KeyRecord {
            kid: kid.clone(),
            algorithm: algorithm_name(algorithm).to_owned(),
            state: KeyState::Published,
            created_at: now,
            signed_until: None,
            retired_at: None,
        };
        let path = self.key_file(&record);
        let content = material::generate(algorithm).map_err(|source| KeyDirError::Material {
            path: path.clone(),
            source,
        })?;
        let write_err = |source| KeyDirError::Write {
            path: path.clone(),
            source,
        };
        crate::private_files::create_dir_all(&self.path).map_err(write_err)?;
        let mut file = crate::config::secret::create_private(&path).map_err(write_err)?;
        file.write_all(&content).map_err(write_err)?;
        file.sync_all().map_err(write_err)?;
        manifest.keys.push(record);
        self.write(&manifest)?;
        Ok(kid)
    }

    /// Makes `kid` the signing key; the key that signed before stays
    /// published, so the tokens it signed keep verifying.
    pub fn activate(&self, kid: &str, now: u64) -> Result<(), KeyDirError> {
        let mut manifest = self.read()?;
        let target = find(&manifest, kid)?;
        match manifest.keys.get(target).map(|r| r.state) {
            Some(KeyState::Retired) => {
                return Err(KeyDirError::WrongState {
                    kid: kid.to_owned(),
                    state: "retired; generate a new key",
                })
            }
            Some(KeyState::Active) => return Ok(()),
            _ => {}
        }
        for record in &mut manifest.keys {
            if record.state == KeyState::Active {
                record.state = KeyState::Published;
                record.signed_until = Some(now);
            }
        }
        if let Some(record) = manifest.keys.get_mut(target) {
            record.state = KeyState::Active;
        }
        self.write(&manifest)
    }

    /// Stops `kid` verifying and deletes its private key. Refused for the
    /// active key, and while tokens it signed (living `token_life` at most)
    /// can still be unexpired, unless `force`.
    pub fn retire(
        &self,
        kid: &str,
        now: u64,
        token_life: Duration,
        force: bool,
    ) -> Result<(), KeyDirError> {
        let mut manifest = self.read()?;
        let target = find(&manifest, kid)?;
        let Some(record) = manifest.keys.get_mut(target) else {
            return Err(KeyDirError::UnknownKid(kid.to_owned()));
        };
        match record.state {
            KeyState::Active => {
                return Err(KeyDirError::WrongState {
                    kid: kid.to_owned(),
                    state: "active; activate another key first",
                })
            }
            KeyState::Retired => return Ok(()),
            KeyState::Published => {}
        }
        if let Some(signed_until) = record.signed_until {
            let until = signed_until.saturating_add(token_life.as_secs());
            if until > now && !force {
                return Err(KeyDirError::StillSigning {
                    kid: kid.to_owned(),
                    until,
                    remaining: until - now,
                });
            }
        }
        record.state = KeyState::Retired;
        record.retired_at = Some(now);
        let file = self.key_file(record);
        self.write(&manifest)?;
        // The manifest no longer lists it: the material has no use left.
        match std::fs::remove_file(&file) {
            Ok(()) => Ok(()),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(KeyDirError::Write { path: file, source }),
        }
    }

    fn write(&self, manifest: &Manifest) -> Result<(), KeyDirError> {
        let path = self.path.join(MANIFEST);
        let temp = self.path.join(format!("{MANIFEST}.tmp"));
        let write_err = |source| KeyDirError::Write {
            path: path.clone(),
            source,
        };
        crate::private_files::create_dir_all(&self.path).map_err(write_err)?;
        let mut text =
            serde_json::to_vec_pretty(manifest).map_err(|source| KeyDirError::Manifest {
                path: path.clone(),
                source,
            })?;
        text.push(b'\n');
        match std::fs::remove_file(&temp) {
            Err(err) if err.kind() != std::io::ErrorKind::NotFound => return Err(write_err(err)),
            _ => {}
        }
        let mut file = crate::config::secret::create_private(&temp).map_err(write_err)?;
        file.write_all(&text).map_err(write_err)?;
        file.sync_all().map_err(write_err)?;
        std::fs::rename(&temp, &path).map_err(write_err)?;
        // The rename is durable once the directory entry is.
        std::fs::File::open(&self.path)
            .and_then(|dir| dir.sync_all())
            .map_err(write_err)
    }
}

fn find(manifest: &Manifest, kid: &str) -> Result<usize, KeyDirError> {
    manifest
        .keys
        .iter()
        .position(|r| r.kid == kid)
        .ok_or_else(|| KeyDirError::UnknownKid(kid.to_owned()))
}

/// A kid names a file, so it is a plain name: no separators, no dots.
pub fn is_valid_kid(kid: &str) -> bool {
    (1..=64).contains(&kid.len())
        && kid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}
