//! `authgate keys ...`: generate, activate, retire and list the token
//! signing keys in `[tokens] keys_dir`. The running gateway picks the
//! changes up on SIGHUP.

use std::path::Path;
use std::time::{Duration, SystemTime};

use clap::Subcommand;

use crate::audit::{Audit, AuditEvent, AuditKind};
use crate::auth::keys::assertion::ASSERTION_TTL;
use crate::auth::keys::dir::{KeyDir, KeyState};
use crate::auth::keys::material::{algorithm_name, parse_algorithm, ALGORITHMS};
use crate::config::Config;
use crate::service::error_chain;
use crate::timestamp::unix_seconds;

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Write a new key and print its kid. It is published (in the JWKS) and
    /// verifies at once, but signs only once activated.
    Generate {
        /// HS256, HS384, HS512, EdDSA, ES256 or RS256; default [tokens] algorithm.
        #[arg(long)]
        algorithm: Option<String>,
        /// Make it the signing key at once (a first key, or no verifier
        /// outside the gateway caches the JWKS).
        #[arg(long)]
        activate: bool,
    },
    /// Make KID the signing key; the previous one keeps verifying.
    Activate { kid: String },
    /// Stop KID verifying and delete it. Refused while tokens it signed can
    /// still be unexpired, unless --force.
    Retire {
        kid: String,
        #[arg(long)]
        force: bool,
    },
    /// Print every key: kid, algorithm, state, creation time.
    List,
}

/// Runs a `keys` command against the directory the config names.
pub fn run(config_path: &Path, command: KeysCommand) -> Result<(), String> {
    let config = Config::load(config_path).map_err(|e| error_chain(&e))?;
    let dir = KeyDir::new(&config.tokens.keys_dir);
    let now = unix_seconds(SystemTime::now());
    if std::env::var_os(crate::config::secret::SECRET_ENV).is_some()
        || config.tokens.secret_file.is_some()
    {
        eprintln!(
            "note: AUTHGATE_ACCESS_SECRET or [tokens] secret_file is set: the gateway uses that \
             one HMAC key and ignores {}",
            dir.path().display()
        );
    }
    let fail = |e: crate::auth::keys::dir::KeyDirError| error_chain(&e);
    // Activation and retirement are security events, written (and synced)
    // to [log] audit_file before success is printed.
    let audit = match &config.log.audit_file {
        Some(path) => Audit::open(path).map_err(|e| error_chain(&e))?,
        None => Audit::disabled(),
    };
    let record = |kind: AuditKind, kid: &str| {
        audit.record_blocking(AuditEvent::new(kind, SystemTime::now()).detail(kid));
    };
    match command {
        KeysCommand::Generate {
            algorithm,
            activate,
        } => {
            let algorithm = match algorithm {
                None => config.tokens.algorithm,
                Some(name) => parse_algorithm(&name).ok_or_else(|| {
                    format!("--algorithm {name:?}: use one of {}", ALGORITHMS.join(", "))
                })?,
            };
            let kid = dir.generate(algorithm, now).map_err(fail)?;
            record(AuditKind::KeyGenerated, &kid);
            if activate {
                dir.activate(&kid, now).map_err(fail)?;
                record(AuditKind::KeyActivation, &kid);
            }
            println!("{kid}");
            eprintln!(
                "{} key {kid} {} in {}; send SIGHUP to a running gateway to load it",
                algorithm_name(algorithm),
                if activate {
                    "is active"
                } else {
                    "is published (not signing yet)"
                },
                dir.path().display()
            );
        }
        KeysCommand::Activate { kid } => {
            dir.activate(&kid, now).map_err(fail)?;
            record(AuditKind::KeyActivation, &kid);
            println!("key {kid} now signs; send SIGHUP to a running gateway to switch");
        }
        KeysCommand::Retire { kid, force } => {
            // Access tokens and identity assertions are the tokens a key signs.
            let life = config
                .tokens
                .access_ttl
                .max(Duration::from_secs(ASSERTION_TTL))
                + config.tokens.leeway;
            dir.retire(&kid, now, life, force).map_err(fail)?;
            record(AuditKind::KeyRetirement, &kid);
            println!("key {kid} retired; send SIGHUP to a running gateway to stop accepting it");
        }
        KeysCommand::List => {
            let manifest = dir.read().map_err(fail)?;
            println!("KID\tALGORITHM\tSTATE\tCREATED_AT");
            for record in manifest.keys {
                let state = match record.state {
                    KeyState::Published => "published",
                    KeyState::Active => "active",
                    KeyState::Retired => "retired",
                };
                println!(
                    "{}\t{}\t{state}\t{}",
                    record.kid, record.algorithm, record.created_at
                );
            }
        }
    }
    Ok(())
}
