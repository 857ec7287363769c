//! Command-line interface: `serve` (the default), `check-config`, `token`,
//! `user` and `keys` for operators, and the global `--config`, accepted
//! before or after the subcommand.

pub mod api_key;
pub mod keys;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::config::DEFAULT_CONFIG_PATH;

#[derive(Debug, Parser)]
#[command(
    name = "authgate",
    version,
    about = "Authenticating reverse-proxy gateway"
)]
pub struct Cli {
    /// Path of the TOML configuration file.
    #[arg(long, global = true, default_value = DEFAULT_CONFIG_PATH, value_name = "PATH")]
    pub config: PathBuf,

    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway (the default when no command is given).
    Serve,
    /// Validate the configuration file (and the certificate, key and CA
    /// files it names) without starting anything: exit 0 when it is valid,
    /// 1 with the file:line:key error otherwise. For CI and deploy hooks.
    CheckConfig,
    /// Print a signed access token for a subject and role.
    Token {
        /// The user id the token asserts (becomes X-User-Id upstream).
        #[arg(long)]
        sub: String,
        /// The role the token asserts (becomes X-User-Role upstream).
        #[arg(long)]
        role: String,
    },
    /// Manage accounts directly in the store. Works only while the gateway
    /// is stopped: the running gateway holds the database lock.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Manage the token signing keys in [tokens] keys_dir.
    Keys {
        #[command(subcommand)]
        command: keys::KeysCommand,
    },
    /// Manage users' API keys in the store (with sled, only while the
    /// gateway is stopped).
    ApiKey {
        #[command(subcommand)]
        command: api_key::ApiKeyCommand,
    },
    /// Move data between store backends.
    Store {
        #[command(subcommand)]
        command: StoreCommand,
    },
}

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

/// `authgate user ...`: the operator's account tools.
#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create an account. The password is read from standard input (one
    /// line), or prompted for when standard input is a terminal.
    Add {
        #[arg(long)]
        email: String,
        #[arg(long)]
        role: String,
    },
    /// Print every account: id, email, role and creation time.
    List,
    /// Change an account's role; its existing tokens stop working.
    SetRole {
        #[arg(long)]
        email: String,
        #[arg(long)]
        role: String,
    },
    /// Delete an account with all its sessions.
    Delete {
        #[arg(long)]
        email: String,
    },
    /// Log an account out everywhere: revoke its sessions and access tokens.
    RevokeSessions {
        #[arg(long)]
        email: String,
    },
}
