//! `authgate store ...`: moving an installation between store backends.

use std::path::Path;

use clap::Subcommand;

use crate::service::error_chain;
use crate::store::{PostgresStore, SledStore};

/// `authgate store ...`: moving an installation between backends.
#[derive(Debug, Subcommand)]
pub enum StoreCommand {
    /// Copy every user, session and revocation from a sled database (no
    /// gateway may be using it) into PostgreSQL, printing what was added.
    /// Records already there are kept, so running it twice adds nothing.
    Copy {
        /// `sled:PATH`, the database directory.
        #[arg(long, value_name = "sled:PATH")]
        from: String,
        /// `postgres:URL`; `postgres:` alone takes the URL from
        /// AUTHGATE_DATABASE_URL, keeping the password off the command line.
        #[arg(long, value_name = "postgres:URL")]
        to: String,
    },
}

/// `authgate store copy`: sled into PostgreSQL, idempotently.
pub fn run(command: StoreCommand) -> Result<(), String> {
    let StoreCommand::Copy { from, to } = command;
    let Some(path) = from.strip_prefix("sled:").filter(|p| !p.is_empty()) else {
        return Err(format!("--from {from:?}: expected sled:PATH"));
    };
    let url = match to.strip_prefix("postgres:") {
        Some("") => std::env::var(crate::config::DATABASE_URL_ENV).map_err(|_| {
            format!(
                "--to postgres: takes the URL from {}, which is not set",
                crate::config::DATABASE_URL_ENV
            )
        })?,
        Some(rest) if rest.starts_with("//") => to.clone(),
        Some(rest) => rest.to_owned(),
        None => return Err("--to: expected postgres:URL".to_owned()),
    };
    let url = crate::config::DatabaseUrl::parse(&url).map_err(|e| format!("--to: {e}"))?;
    let target = crate::config::PostgresConfig {
        url,
        max_connections: 2,
        tls_ca: None,
    };
    let source = SledStore::open(Path::new(path)).map_err(|e| error_chain(&e))?;
    let export = source.export().map_err(|e| error_chain(&e))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    let done = runtime.block_on(async {
        let store = PostgresStore::open(&target)
            .await
            .map_err(|e| error_chain(&e))?;
        store.import(&export).await.map_err(|e| error_chain(&e))
    })?;
    println!("copied from sled:{path} to {}:", target.url);
    for (kind, read, added) in [
        ("users", export.users.len(), done.users),
        ("deleted users", export.tombstones.len(), done.tombstones),
        ("sessions", export.families.len(), done.families),
        ("session chains", export.chains.len(), done.chains),
        (
            "refresh tokens",
            export.refresh_tokens.len(),
            done.refresh_tokens,
        ),
        ("revocations", export.revocations.len(), done.revocations),
        ("API keys", export.api_keys.len(), done.api_keys),
    ] {
        println!("  {kind}: {read} read, {added} added");
    }
    Ok(())
}
