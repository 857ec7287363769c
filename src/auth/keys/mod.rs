//! The keys that sign and verify tokens, held as one immutable [`KeySet`]
//! that [`KeyRing::reload_keys`] swaps whole (on SIGHUP), so a request sees
//! either the old keys or the new ones, never a mix.
//!
//! A token names its key by `kid`; the key alone decides the algorithm,
//! whatever the token's header says, and nothing outside the configured keys
//! is ever consulted (no `jku`, `x5u` or embedded `jwk`).

pub(crate) mod assertion;
pub mod dir;
pub mod material;
pub(crate) mod session_key;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::{ArcSwap, Guard};

use bytes::Bytes;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Validation};
use serde_json::{json, Value};

use super::token_cache::{VerifiedCache, DEFAULT_CAPACITY};
use crate::config::secret::{self, AccessSecret, SecretError};
use crate::config::{Config, TokensConfig};
use assertion::{AssertionCache, AssertionError};
use dir::{KeyDir, KeyDirError, KeyState};
use material::{algorithm_name, is_hmac, parse_algorithm, MaterialError};
use session_key::SessionKey;

/// Where the JWKS is served, ahead of every route (RFC 8615 well-known URI).
pub const JWKS_PATH: &str = "/.well-known/jwks.json";

/// How long verifiers may cache the JWKS. A new key is published (and so
/// fetched) before it is activated, and an old one stays published until
/// its tokens expire, so a verifier never needs a key it has not seen.
pub const JWKS_MAX_AGE_SECS: u64 = 300;

/// The kid of the one-key HMAC shortcut (`AUTHGATE_ACCESS_SECRET` or
/// `[tokens] secret_file`).
pub const SHORTCUT_KID: &str = "env";

/// A key that verifies tokens naming its kid.
pub struct VerifyingKey {
    pub kid: String,
    pub algorithm: Algorithm,
    pub key: DecodingKey,
    /// Pinned to this key's algorithm, issuer and audience.
    pub validation: Validation,
}

/// Signing a token failed (a key the backend refuses): a fault of ours.
/// Also the identity assertion's signing error.
/// Transparent, so a log line showing only this error's text still says why.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct MintError(pub(crate) jsonwebtoken::errors::Error);

/// The key new tokens are signed with.
pub struct SigningKey {
    pub kid: String,
    pub algorithm: Algorithm,
    pub key: EncodingKey,
}

/// One consistent generation of keys, with the caches that depend on them.
pub struct KeySet {
    verifying: HashMap<String, Arc<VerifyingKey>>,
    signing: Arc<SigningKey>,
    /// Tokens minted before kids existed carry none: they verify with the
    /// shortcut key alone, never with a key from the directory.
    kidless: Option<Arc<VerifyingKey>>,
    /// `GET /.well-known/jwks.json`, rendered once.
    jwks: Bytes,
    /// Per kid, the key browser-session cookies are sealed under, derived
    /// from that key's secret material (`auth::browser_session`).
    session_keys: HashMap<String, SessionKey>,
    pub verified: VerifiedCache,
    pub assertions: AssertionCache,
}

impl KeySet {
    pub fn verifying(&self, kid: &str) -> Option<&Arc<VerifyingKey>> {
        self.verifying.get(kid)
    }

    pub fn kidless(&self) -> Option<&Arc<VerifyingKey>> {
        self.kidless.as_ref()
    }

    /// The browser-session cookie key of `kid`.
    pub fn session_key(&self, kid: &str) -> Option<&SessionKey> {
        self.session_keys.get(kid)
    }

    pub fn signing(&self) -> &Arc<SigningKey> {
        &self.signing
    }

    /// The signing key when it can sign identity assertions (asymmetric).
    pub fn asserting(&self) -> Option<&Arc<SigningKey>> {
        (!is_hmac(self.signing.algorithm)).then_some(&self.signing)
    }

    /// The identity assertion for `route`, signed with the asserting key
    /// unless a fresh one is at hand ([`AssertionCache`]).
    pub fn assertion(
        &self,
        issuer: &str,
        route: &str,
        identity: &super::Identity,
        now: u64,
    ) -> Result<http::HeaderValue, AssertionError> {
        let key = self.asserting().ok_or(AssertionError::NoAsymmetricKey)?;
        self.assertions.assertion(key, issuer, route, identity, now)
    }

    /// The JWK Set (RFC 7517 §5) of the public keys that verify.
    pub fn jwks(&self) -> &Bytes {
        &self.jwks
    }

    pub fn kids(&self) -> impl Iterator<Item = &str> {
        self.verifying.keys().map(String::as_str)
    }
}

/// Where the keys come from, decided once at startup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// `AUTHGATE_ACCESS_SECRET` or `[tokens] secret_file`: one HMAC key.
    Secret(secret::SecretOrigin),
    /// `[tokens] keys_dir`.
    Dir(PathBuf),
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(transparent)]
    Secret(#[from] SecretError),
    #[error(transparent)]
    Dir(#[from] KeyDirError),
    #[error("key {kid} ({path}): {source}")]
    Material {
        kid: String,
        path: PathBuf,
        #[source]
        source: MaterialError,
    },
    #[error(
        "no active signing key in {dir} ([tokens] keys_dir); create one with \
         `authgate keys generate --algorithm {algorithm} --activate`, or set \
         AUTHGATE_ACCESS_SECRET to a single HMAC secret (`openssl rand -base64 48`)"
    )]
    NoActiveKey {
        dir: PathBuf,
        algorithm: &'static str,
    },
    #[error(
        "a route asks for identity_assertion, but the active key {kid} is {algorithm} (HMAC): \
         backends could not verify it without the secret; activate an EdDSA, ES256 or RS256 key"
    )]
    AssertionNeedsAsymmetricKey {
        kid: String,
        algorithm: &'static str,
    },
}

/// The current [`KeySet`] and how to build the next one.
pub struct KeyRing {
    /// Swapped whole by a reload; read on every request without a lock.
    current: ArcSwap<KeySet>,
    source: KeySource,
    tokens: TokensConfig,
    /// A route signs identity assertions: the active key must be asymmetric.
    needs_asymmetric: bool,
}

impl KeyRing {
    /// Loads the keys the config names: the HMAC shortcut when
    /// `AUTHGATE_ACCESS_SECRET` or `secret_file` is set, else `keys_dir`
    /// (in dev mode, a first key is generated and activated there).
    pub fn load(config: &Config) -> Result<Self, KeyError> {
        let needs_asymmetric = config.routes.iter().any(|r| r.identity_assertion);
        let shortcut =
            std::env::var_os(secret::SECRET_ENV).is_some() || config.tokens.secret_file.is_some();
        let (source, set) = if shortcut {
            let (secret, origin) = secret::resolve(config)?;
            let algorithm = shortcut_algorithm(config.tokens.algorithm);
            let set = shortcut_set(&config.tokens, algorithm, secret.bytes());
            (KeySource::Secret(origin), set)
        } else {
            let dir = config.tokens.keys_dir.clone();
            if config.server.dev {
                ensure_dev_key(&dir, config.tokens.algorithm)?;
            }
            let set = build_from_dir(&dir, &config.tokens)?;
            (KeySource::Dir(dir), set)
        };
        check_assertion_key(&set, needs_asymmetric)?;
        Ok(Self {
            current: ArcSwap::from_pointee(set),
            source,
            tokens: config.tokens.clone(),
            needs_asymmetric,
        })
    }

    /// One HMAC key from a secret, with the shortcut kid (tests, tools).
    pub fn from_secret(tokens: &TokensConfig, secret: &AccessSecret) -> Self {
        let algorithm = shortcut_algorithm(tokens.algorithm);
        let set = shortcut_set(tokens, algorithm, secret.bytes());
        Self {
            current: ArcSwap::from_pointee(set),
            source: KeySource::Secret(secret::SecretOrigin::Environment),
            tokens: tokens.clone(),
            needs_asymmetric: false,
        }
    }

    /// The keys in force now.
    pub fn current(&self) -> Arc<KeySet> {
        self.current.load_full()
    }

    /// The keys in force now, borrowed for the length of one request's
    /// check (no reference count taken).
    pub fn in_force(&self) -> Guard<Arc<KeySet>> {
        self.current.load()
    }

    pub fn source(&self) -> &KeySource {
        &self.source
    }

    /// Re-reads the key directory and swaps the key set in one step. On any
    /// error the keys in force stay as they were. Returns the kids that now
    /// verify and the one that signs.
    pub fn reload_keys(&self) -> Result<(Vec<String>, String), KeyError> {
        let KeySource::Dir(dir) = &self.source else {
            let set = self.current();
            return Ok((
                set.kids().map(str::to_owned).collect(),
                set.signing.kid.clone(),
            ));
        };
        let set = build_from_dir(dir, &self.tokens)?;
        check_assertion_key(&set, self.needs_asymmetric)?;
        let summary = (
            set.kids().map(str::to_owned).collect(),
            set.signing.kid.clone(),
        );
        self.current.store(Arc::new(set));
        Ok(summary)
    }
}

fn check_assertion_key(set: &KeySet, needs_asymmetric: bool) -> Result<(), KeyError> {
    if needs_asymmetric && set.asserting().is_none() {
        return Err(KeyError::AssertionNeedsAsymmetricKey {
            kid: set.signing.kid.clone(),
            algorithm: algorithm_name(set.signing.algorithm),
        });
    }
    Ok(())
}

/// The shortcut is always HMAC: the configured HMAC algorithm, else HS256.
fn shortcut_algorithm(configured: Algorithm) -> Algorithm {
    if is_hmac(configured) {
        configured
    } else {
        Algorithm::HS256
    }
}

fn shortcut_set(tokens: &TokensConfig, algorithm: Algorithm, secret: &[u8]) -> KeySet {
    let verifying = Arc::new(VerifyingKey {
        kid: SHORTCUT_KID.to_owned(),
        algorithm,
        key: DecodingKey::from_secret(secret),
        validation: validation(tokens, algorithm),
    });
    let signing = Arc::new(SigningKey {
        kid: SHORTCUT_KID.to_owned(),
        algorithm,
        key: EncodingKey::from_secret(secret),
    });
    KeySet {
        verifying: HashMap::from([(SHORTCUT_KID.to_owned(), Arc::clone(&verifying))]),
        signing,
        kidless: Some(verifying),
        jwks: render_jwks(Vec::new()),
        session_keys: SessionKey::derive(secret)
            .map(|key| (SHORTCUT_KID.to_owned(), key))
            .into_iter()
            .collect(),
        verified: VerifiedCache::new(DEFAULT_CAPACITY),
        assertions: AssertionCache::default(),
    }
}

fn build_from_dir(path: &Path, tokens: &TokensConfig) -> Result<KeySet, KeyError> {
    let dir = KeyDir::new(path);
    let manifest = dir.read()?;
    let mut verifying = HashMap::new();
    let mut signing = None;
    let mut published = Vec::new();
    let mut session_keys = HashMap::new();
    for record in &manifest.keys {
        if record.state == KeyState::Retired {
            continue;
        }
        let Some(algorithm) = parse_algorithm(&record.algorithm) else {
            continue; // `read` refused unknown algorithms already.
        };
        let file = dir.key_file(record);
        let fail = |source| KeyError::Material {
            kid: record.kid.clone(),
            path: file.clone(),
            source,
        };
        let content = std::fs::read(&file).map_err(|source| KeyDirError::Read {
            path: file.clone(),
            source,
        })?;
        let material = material::load(algorithm, &content).map_err(fail)?;
        if let Some(key) = SessionKey::derive(&content) {
            session_keys.insert(record.kid.clone(), key);
        }
        if let Some(mut jwk) = material.public_jwk {
            if let Value::Object(members) = &mut jwk {
                members.insert("kid".to_owned(), json!(record.kid));
                members.insert("alg".to_owned(), json!(record.algorithm));
                members.insert("use".to_owned(), json!("sig"));
            }
            published.push(jwk);
        }
        if record.state == KeyState::Active {
            signing = Some(Arc::new(SigningKey {
                kid: record.kid.clone(),
                algorithm,
                key: material.signing,
            }));
        }
        verifying.insert(
            record.kid.clone(),
            Arc::new(VerifyingKey {
                kid: record.kid.clone(),
                algorithm,
                key: material.verifying,
                validation: validation(tokens, algorithm),
            }),
        );
    }
    let signing = signing.ok_or_else(|| KeyError::NoActiveKey {
        dir: path.to_owned(),
        algorithm: algorithm_name(tokens.algorithm),
    })?;
    Ok(KeySet {
        verifying,
        signing,
        kidless: None,
        jwks: render_jwks(published),
        session_keys,
        verified: VerifiedCache::new(DEFAULT_CAPACITY),
        assertions: AssertionCache::default(),
    })
}

/// Dev mode's first start: a key of the configured algorithm, active at once.
fn ensure_dev_key(path: &Path, algorithm: Algorithm) -> Result<(), KeyError> {
    let dir = KeyDir::new(path);
    let manifest = dir.read()?;
    if manifest.keys.iter().any(|r| r.state == KeyState::Active) {
        return Ok(());
    }
    let now = crate::timestamp::unix_seconds(std::time::SystemTime::now());
    let kid = dir.generate(algorithm, now)?;
    dir.activate(&kid, now)?;
    tracing::warn!(
        dir = %path.display(),
        %kid,
        algorithm = algorithm_name(algorithm),
        "DEV MODE: generated and activated a signing key"
    );
    Ok(())
}

/// jsonwebtoken checks only what it is told to: one algorithm (the key's),
/// `exp`/`iss`/`aud`/`sub` required, `iss`/`aud` matched. Times are checked
/// by the caller against its own clock.
fn validation(tokens: &TokensConfig, algorithm: Algorithm) -> Validation {
    let mut validation = Validation::new(algorithm);
    validation.algorithms = vec![algorithm];
    validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    validation.set_issuer(&[tokens.issuer.as_str()]);
    validation.set_audience(&[tokens.audience.as_str()]);
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = true;
    validation.leeway = tokens.leeway.as_secs();
    validation
}

fn render_jwks(keys: Vec<Value>) -> Bytes {
    Bytes::from(json!({ "keys": keys }).to_string())
}

#[cfg(test)]
mod tests;
