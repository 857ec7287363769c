//! `authgate api-key ...`: create (the key printed once, on stdout alone),
//! list and revoke a user's API keys in the configured store, for service
//! accounts. With sled only while the gateway is stopped (it holds the
//! database); with PostgreSQL the running gateways learn of each change
//! through the revocation feed within a second.

use std::io::Write;
use std::path::Path;
use std::time::SystemTime;

use clap::Subcommand;

use crate::account::{Email, Role};
use crate::audit::{Audit, AuditEvent, AuditKind};
use crate::auth::api_keys::index::may_carry;
use crate::auth::api_keys::key;
use crate::config::{Config, ConfigDuration, StoreBackend};
use crate::service::error_chain;
use crate::store::{hex, ApiKeyRecord, PostgresStore, SledStore, Store};
use crate::timestamp::unix_seconds;
use crate::timestamp::utc_timestamp;

#[derive(Debug, Subcommand)]
pub enum ApiKeyCommand {
    /// Create a key for the account and print it (shown this once).
    Create {
        #[arg(long)]
        email: String,
        /// A label for the key (1-100 characters).
        #[arg(long)]
        name: String,
        /// The account's own role (the default) or `[auth] default_role`.
        #[arg(long)]
        role: Option<String>,
        /// How long it lives, such as 90d or 12h; default: until revoked.
        #[arg(long, value_name = "DURATION")]
        expires_in: Option<String>,
    },
    /// Print the account's keys (never a secret).
    List {
        #[arg(long)]
        email: String,
    },
    /// Revoke the key with this id.
    Revoke { id: String },
}

/// Runs an `api-key` command against the store the config names.
pub fn run(config_path: &Path, command: ApiKeyCommand) -> Result<(), String> {
    let config = Config::load(config_path).map_err(|e| error_chain(&e))?;
    let audit = match &config.log.audit_file {
        Some(path) => Audit::open(path).map_err(|e| error_chain(&e))?,
        None => Audit::disabled(),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    runtime.block_on(async {
        let store = open_store(&config).await?;
        match command {
            ApiKeyCommand::Create {
                email,
                name,
                role,
                expires_in,
            } => {
                let request = CreateRequest::parse(&email, name, role, expires_in)?;
                create(&config, store.as_ref(), &audit, request).await
            }
            ApiKeyCommand::List { email } => list(store.as_ref(), &email_arg(&email)?).await,
            ApiKeyCommand::Revoke { id } => revoke(store.as_ref(), &audit, &id).await,
        }
    })
}

struct CreateRequest {
    email: Email,
    name: String,
    role: Option<Role>,
    expires_in: Option<u64>,
}

impl CreateRequest {
    fn parse(
        email: &str,
        name: String,
        role: Option<String>,
        expires_in: Option<String>,
    ) -> Result<Self, String> {
        let email = email_arg(email)?;
        if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
            return Err("--name: 1-100 characters, without control characters".to_owned());
        }
        let role = role
            .map(|role| Role::parse(&role).map_err(|e| format!("--role {role:?}: {e}")))
            .transpose()?;
        let expires_in = expires_in
            .map(|text| {
                ConfigDuration::parse(&text)
                    .map(|d| d.0.as_secs())
                    .map_err(|e| format!("--expires-in: {e}"))
            })
            .transpose()?;
        Ok(Self {
            email,
            name,
            role,
            expires_in,
        })
    }
}

async fn create(
    config: &Config,
    store: &dyn Store,
    audit: &Audit,
    request: CreateRequest,
) -> Result<(), String> {
    let owner = store
        .user_by_email(request.email.as_str())
        .await
        .map_err(|e| error_chain(&e))?
        .ok_or_else(|| format!("no user with email {}", request.email))?;
    let owner_role =
        Role::parse(&owner.role).map_err(|e| format!("the account's role is unusable: {e}"))?;
    let role = request.role.unwrap_or_else(|| owner_role.clone());
    if !may_carry(&role, &owner_role, &config.auth.default_role) {
        return Err(format!(
            "--role {role}: a key may carry only the account's role ({owner_role}) or {}",
            config.auth.default_role
        ));
    }
    let now = SystemTime::now();
    let now_secs = unix_seconds(now);
    let new_key = key::generate().map_err(|e| e.to_string())?;
    let record = ApiKeyRecord {
        id: uuid::Uuid::new_v4().to_string(),
        user_id: owner.id.clone(),
        name: request.name,
        role: role.as_str().to_owned(),
        hash: hex(&new_key.hash),
        created_at: now_secs,
        expires_at: request.expires_in.map(|secs| now_secs.saturating_add(secs)),
        last_used_at: None,
        revoked_at: None,
    };
    store
        .create_api_key(&record)
        .await
        .map_err(|e| error_chain(&e))?;
    store.flush().await.map_err(|e| error_chain(&e))?;
    audit
        .record(
            AuditEvent::new(AuditKind::ApiKeyCreated, now)
                .user(&owner.id)
                .email(&owner.email)
                .actor("cli")
                .detail(&record.id),
        )
        .await;
    // The key alone on stdout, for `KEY=$(authgate api-key create ...)`.
    println!("{}", new_key.text);
    eprintln!(
        "created API key {} ({}) for {} with role {}{}; it is shown only this once",
        record.id,
        record.name,
        owner.email,
        record.role,
        record
            .expires_at
            .map(|at| format!(", expiring {}", utc_timestamp(at)))
            .unwrap_or_default()
    );
    Ok(())
}

async fn list(store: &dyn Store, email: &Email) -> Result<(), String> {
    let owner = store
        .user_by_email(email.as_str())
        .await
        .map_err(|e| error_chain(&e))?
        .ok_or_else(|| format!("no user with email {email}"))?;
    let keys = store
        .user_api_keys(&owner.id)
        .await
        .map_err(|e| error_chain(&e))?;
    let mut out = std::io::stdout().lock();
    let shown = |at: Option<u64>| at.map_or_else(|| "-".to_owned(), utc_timestamp);
    let mut lines =
        vec!["ID\tNAME\tROLE\tCREATED_AT\tEXPIRES_AT\tLAST_USED_AT\tREVOKED_AT".to_owned()];
    for key in &keys {
        lines.push(format!(
            "{}\t{}\t{}\t{}\t{}\t{}\t{}",
            key.id,
            key.name,
            key.role,
            utc_timestamp(key.created_at),
            shown(key.expires_at),
            shown(key.last_used_at),
            shown(key.revoked_at),
        ));
    }
    for line in lines {
        writeln!(out, "{line}").map_err(|e| format!("cannot write to standard output: {e}"))?;
    }
    Ok(())
}

async fn revoke(store: &dyn Store, audit: &Audit, id: &str) -> Result<(), String> {
    let now = SystemTime::now();
    let key = store
        .revoke_api_key(id, unix_seconds(now))
        .await
        .map_err(|e| error_chain(&e))?
        .ok_or_else(|| format!("no API key with id {id}"))?;
    store.flush().await.map_err(|e| error_chain(&e))?;
    audit
        .record(
            AuditEvent::new(AuditKind::ApiKeyRevoked, now)
                .user(&key.user_id)
                .actor("cli")
                .detail(&key.id),
        )
        .await;
    println!("revoked API key {} ({})", key.id, key.name);
    Ok(())
}

fn email_arg(email: &str) -> Result<Email, String> {
    Email::parse(email).map_err(|e| format!("--email {email:?}: {e}"))
}

async fn open_store(config: &Config) -> Result<Box<dyn Store>, String> {
    match &config.store.backend {
        StoreBackend::Sled => SledStore::open(&config.store.path)
            .map(|store| Box::new(store) as Box<dyn Store>)
            .map_err(|e| error_chain(&e)),
        StoreBackend::Postgres(postgres) => PostgresStore::open(postgres)
            .await
            .map(|store| Box::new(store) as Box<dyn Store>)
            .map_err(|e| error_chain(&e)),
    }
}
