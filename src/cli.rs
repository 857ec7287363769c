//! Command-line interface: `serve` (the default), `check-config`, `token`,
//! `user`, `keys` and `store` for operators, and the global `--config`,
//! accepted before or after the subcommand. Each operator command group's
//! body is its own file below `cli/`.

pub mod api_key;
pub mod check;
pub mod keys;
pub mod store;
pub mod token;
pub mod user;

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
        command: user::UserCommand,
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
        command: store::StoreCommand,
    },
}
