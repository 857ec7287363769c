//! `authgate user ...`: the operator's account tools, run directly against
//! the store the config names.

use std::io::{BufRead, IsTerminal, Write};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use clap::Subcommand;

use crate::account::{Email, NewPassword, Role};
use crate::audit::{Audit, AuditEvent, AuditKind};
use crate::auth::password::PasswordPool;
use crate::config::{Config, StoreBackend};
use crate::service::error_chain;
use crate::store::{PostgresStore, SledStore, Store, User};
use crate::timestamp::utc_timestamp;

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

/// Runs a `user` command against the store named in the config. Arguments
/// are checked before the store is opened, the store before a password is
/// asked for, and every change is flushed to disk before success is printed.
pub fn run(config_path: &Path, command: UserCommand) -> Result<(), String> {
    let config = Config::load(config_path).map_err(|e| error_chain(&e))?;
    // Operator changes are security events like the endpoints' own.
    let audit = match &config.log.audit_file {
        Some(path) => Audit::open(path).map_err(|e| error_chain(&e))?,
        None => Audit::disabled(),
    };
    // The flush group and the password pool answer through tokio.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    let open = || runtime.block_on(open_store(&config));
    match command {
        UserCommand::Add { email, role } => {
            let email = email_arg(&email)?;
            let role = role_arg(&role)?;
            let store = open()?;
            runtime.block_on(add_user(&config, store.as_ref(), &audit, email, role))
        }
        UserCommand::List => runtime.block_on(list_users(open()?.as_ref())),
        UserCommand::SetRole { email, role } => {
            let email = email_arg(&email)?;
            let role = role_arg(&role)?;
            runtime.block_on(set_role(open()?.as_ref(), &audit, &email, &role))
        }
        UserCommand::Delete { email } => {
            let email = email_arg(&email)?;
            runtime.block_on(delete_user(open()?.as_ref(), &audit, &email))
        }
        UserCommand::RevokeSessions { email } => {
            let email = email_arg(&email)?;
            runtime.block_on(revoke_sessions(open()?.as_ref(), &audit, &email))
        }
    }
}

/// The store the config names: the sled directory (only while no gateway
/// holds it) or the shared PostgreSQL database, whose running gateways apply
/// the changes made here through the revocation feed.
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

async fn set_role(
    store: &dyn Store,
    audit: &Audit,
    email: &Email,
    role: &Role,
) -> Result<(), String> {
    let found = existing(store, email).await?;
    let updated = store
        .set_role(&found.id, role.as_str())
        .await
        .map_err(|e| error_chain(&e))?
        .ok_or_else(|| no_such_user(email))?;
    flush(store).await?;
    audit
        .record(cli_event(AuditKind::RoleChange, &updated).detail(&updated.role))
        .await;
    println!(
        "role of {email} changed from {} to {}; its existing tokens are refused",
        found.role, updated.role
    );
    Ok(())
}

async fn delete_user(store: &dyn Store, audit: &Audit, email: &Email) -> Result<(), String> {
    let found = existing(store, email).await?;
    store
        .delete_user(&found.id, unix_now())
        .await
        .map_err(|e| error_chain(&e))?
        .ok_or_else(|| no_such_user(email))?;
    flush(store).await?;
    audit
        .record(cli_event(AuditKind::UserDeletion, &found))
        .await;
    println!("deleted user {} ({email}) and all its sessions", found.id);
    Ok(())
}

async fn revoke_sessions(store: &dyn Store, audit: &Audit, email: &Email) -> Result<(), String> {
    let found = existing(store, email).await?;
    let revoked = store
        .revoke_user_families(&found.id, None, unix_now())
        .await
        .map_err(|e| error_chain(&e))?;
    // Revoked sessions cannot refresh; the version bump also ends the access
    // tokens already handed out.
    store
        .bump_token_version(&found.id)
        .await
        .map_err(|e| error_chain(&e))?
        .ok_or_else(|| no_such_user(email))?;
    flush(store).await?;
    audit.record(cli_event(AuditKind::LogoutAll, &found)).await;
    println!(
        "revoked {} session(s) of {email}; its access tokens are refused",
        revoked.len()
    );
    Ok(())
}

async fn add_user(
    config: &Config,
    store: &dyn Store,
    audit: &Audit,
    email: Email,
    role: Role,
) -> Result<(), String> {
    if store
        .user_by_email(email.as_str())
        .await
        .map_err(|e| error_chain(&e))?
        .is_some()
    {
        return Err(format!("a user with email {email} already exists"));
    }
    let password = read_password(&email)?;
    // One thread is plenty for one hash.
    let mut params = config.auth.password.clone();
    params.hash_workers = 1;
    let pool = PasswordPool::new(&params).map_err(|e| error_chain(&e))?;
    let password_hash = pool
        .hash(password.into_string())
        .await
        .map_err(|e| error_chain(&e))?;
    let user = User {
        id: uuid::Uuid::new_v4().to_string(),
        email: email.into_string(),
        role: role.as_str().to_owned(),
        password_hash,
        created_at: unix_now(),
        token_version: 0,
    };
    store
        .create_user(&user)
        .await
        .map_err(|e| error_chain(&e))?;
    flush(store).await?;
    audit
        .record(cli_event(AuditKind::Registration, &user))
        .await;
    println!(
        "created user {} ({}) with role {}",
        user.id, user.email, user.role
    );
    Ok(())
}

async fn list_users(store: &dyn Store) -> Result<(), String> {
    const PAGE: usize = 256;
    let mut out = std::io::stdout().lock();
    let mut print = |line: String| {
        writeln!(out, "{line}").map_err(|e| format!("cannot write to standard output: {e}"))
    };
    print("ID\tEMAIL\tROLE\tCREATED_AT".to_owned())?;
    let mut after: Option<String> = None;
    loop {
        let page = store
            .list_users(after.as_deref(), PAGE)
            .await
            .map_err(|e| error_chain(&e))?;
        for user in &page {
            print(format!(
                "{}\t{}\t{}\t{}",
                user.id,
                user.email,
                user.role,
                utc_timestamp(user.created_at)
            ))?;
        }
        match page.last() {
            Some(last) if page.len() == PAGE => after = Some(last.id.clone()),
            _ => return Ok(()),
        }
    }
}

/// An event an operator caused from the command line, about `user`.
fn cli_event(kind: AuditKind, user: &User) -> AuditEvent<'_> {
    AuditEvent::new(kind, SystemTime::now())
        .user(&user.id)
        .email(&user.email)
        .actor("cli")
}

fn email_arg(email: &str) -> Result<Email, String> {
    Email::parse(email).map_err(|e| format!("--email {email:?}: {e}"))
}

fn role_arg(role: &str) -> Result<Role, String> {
    Role::parse(role).map_err(|e| format!("--role {role:?}: {e}"))
}

async fn existing(store: &dyn Store, email: &Email) -> Result<User, String> {
    store
        .user_by_email(email.as_str())
        .await
        .map_err(|e| error_chain(&e))?
        .ok_or_else(|| no_such_user(email))
}

fn no_such_user(email: &Email) -> String {
    format!("no user with email {email}")
}

async fn flush(store: &dyn Store) -> Result<(), String> {
    store.flush().await.map_err(|e| error_chain(&e))
}

/// One line from standard input, without its line ending, held to the same
/// policy as `/auth/register`. On a terminal the prompt goes to stderr so
/// stdout stays clean for scripts.
fn read_password(email: &Email) -> Result<NewPassword, String> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprint!("Password for {email}: ");
        let _ = std::io::stderr().flush();
    }
    let mut line = String::new();
    let read = stdin
        .lock()
        .read_line(&mut line)
        .map_err(|e| format!("cannot read the password from standard input: {e}"))?;
    if read == 0 {
        return Err("no password given on standard input".to_owned());
    }
    let password = line
        .strip_suffix('\n')
        .map_or(line.as_str(), |l| l.strip_suffix('\r').unwrap_or(l));
    NewPassword::parse(password.to_owned()).map_err(|e| e.to_string())
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}
