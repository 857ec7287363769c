//! The access-token signing secret: from `AUTHGATE_ACCESS_SECRET`, from
//! `[tokens] secret_file`, or (dev mode only) generated once and kept beside
//! the database.

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

use base64::Engine;
use rand::RngCore;

use super::Config;

pub const SECRET_ENV: &str = "AUTHGATE_ACCESS_SECRET";
/// HS256 needs a key at least as long as its output (RFC 7518 §3.2).
pub const MIN_SECRET_BYTES: usize = 32;
const HOW_TO_GENERATE: &str = "generate one with `openssl rand -base64 48` and export it as \
AUTHGATE_ACCESS_SECRET, or write it to the file named by [tokens] secret_file";

/// Signing key bytes; never printed.
#[derive(Clone)]
pub struct AccessSecret(Vec<u8>);

impl AccessSecret {
    pub fn bytes(&self) -> &[u8] {
        &self.0
    }

    pub fn from_bytes(bytes: Vec<u8>) -> Result<Self, SecretError> {
        if bytes.len() < MIN_SECRET_BYTES {
            return Err(SecretError::TooShort {
                origin: "the given secret".to_owned(),
                length: bytes.len(),
            });
        }
        Ok(Self(bytes))
    }
}

impl fmt::Debug for AccessSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AccessSecret({} bytes, redacted)", self.0.len())
    }
}

/// Where the secret came from, for the startup log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretOrigin {
    Environment,
    File(PathBuf),
    GeneratedForDev(PathBuf),
}

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("no access-token secret: set {SECRET_ENV} or [tokens] secret_file in {config}; {HOW_TO_GENERATE}")]
    Missing { config: PathBuf },
    #[error(
        "{origin} is {length} bytes; at least {MIN_SECRET_BYTES} are required; {HOW_TO_GENERATE}"
    )]
    TooShort { origin: String, length: usize },
    #[error("cannot read secret file {path} (from [tokens] secret_file): {source}")]
    ReadFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write the generated dev secret to {path}: {source}")]
    WriteDev {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Finds the secret: the environment wins, then `secret_file`, then in dev mode
/// a generated secret kept at `<store dir>/access.secret`.
pub fn resolve(config: &Config) -> Result<(AccessSecret, SecretOrigin), SecretError> {
    if let Some(value) = std::env::var_os(SECRET_ENV) {
        let bytes = value.into_encoded_bytes();
        let secret = checked(trim_line_end(bytes), SECRET_ENV.to_owned())?;
        return Ok((secret, SecretOrigin::Environment));
    }
    if let Some(path) = &config.tokens.secret_file {
        let bytes = std::fs::read(path).map_err(|source| SecretError::ReadFile {
            path: path.clone(),
            source,
        })?;
        let secret = checked(
            trim_line_end(bytes),
            format!("secret file {}", path.display()),
        )?;
        return Ok((secret, SecretOrigin::File(path.clone())));
    }
    if !config.server.dev {
        return Err(SecretError::Missing {
            config: config.source.clone(),
        });
    }
    let path = dev_secret_path(&config.store.path);
    let secret = load_or_create_dev_secret(&path)?;
    Ok((secret, SecretOrigin::GeneratedForDev(path)))
}

fn checked(bytes: Vec<u8>, origin: String) -> Result<AccessSecret, SecretError> {
    if bytes.len() < MIN_SECRET_BYTES {
        return Err(SecretError::TooShort {
            origin,
            length: bytes.len(),
        });
    }
    Ok(AccessSecret(bytes))
}

/// Files written by editors and `echo` end in a newline that is not part of the secret.
fn trim_line_end(mut bytes: Vec<u8>) -> Vec<u8> {
    while matches!(bytes.last(), Some(b'\n' | b'\r')) {
        bytes.pop();
    }
    bytes
}

/// The dev secret lives beside the database, in the data directory.
pub fn dev_secret_path(store_path: &Path) -> PathBuf {
    store_path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or_else(|| Path::new("."))
        .join("access.secret")
}

fn load_or_create_dev_secret(path: &Path) -> Result<AccessSecret, SecretError> {
    if let Ok(bytes) = std::fs::read(path) {
        return checked(
            trim_line_end(bytes),
            format!("dev secret file {}", path.display()),
        );
    }
    let mut raw = [0u8; 48];
    rand::rng().fill_bytes(&mut raw);
    let encoded = base64::engine::general_purpose::STANDARD.encode(raw);
    let write_err = |source| SecretError::WriteDev {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent() {
        // The data directory, which the database shares: private from the start.
        crate::private_files::create_dir_all(dir).map_err(write_err)?;
    }
    let mut file = create_private(path).map_err(write_err)?;
    file.write_all(encoded.as_bytes()).map_err(write_err)?;
    file.sync_all().map_err(write_err)?;
    Ok(AccessSecret(encoded.into_bytes()))
}

/// Creates a file only its owner can read (mode 0600 on Unix).
pub fn create_private(path: &Path) -> std::io::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)
}
