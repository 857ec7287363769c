//! A fresh PostgreSQL database per test, created on the server named by
//! `AUTHGATE_TEST_DATABASE_URL` (`.ci/run` starts one), so tests run in
//! parallel without seeing each other's rows. Dropped when the test ends.
//! `cluster.rs` runs a whole server of a test's own, for restarting it.

pub mod cluster;

use std::str::FromStr;

use tokio_postgres::NoTls;

/// The variable `.ci/run` exports.
pub const TEST_DATABASE_URL_ENV: &str = "AUTHGATE_TEST_DATABASE_URL";

/// One database of its own, with a URL a gateway can be pointed at.
pub struct TestDatabase {
    /// Connection string of the new database (no TLS, test credentials).
    pub url: String,
    /// Its name, random per test.
    pub name: String,
    /// The server's admin URL, to drop the database afterwards.
    admin_url: String,
}

impl TestDatabase {
    /// Creates a fresh database, or `None` when no server is configured
    /// (the test is then skipped with a line on stderr). Under `CI=true` a
    /// missing server fails the test instead: CI never skips these.
    pub async fn create() -> Option<Self> {
        let Some(admin_url) = server_url() else {
            eprintln!("skipped: {TEST_DATABASE_URL_ENV} is not set (no PostgreSQL server)");
            return None;
        };
        let name = format!("authgate_test_{}", uuid::Uuid::new_v4().simple());
        let client = connect(&admin_url).await;
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap_or_else(|err| panic!("CREATE DATABASE {name}: {err}"));
        let mut config = tokio_postgres::Config::from_str(&admin_url).unwrap_or_else(|err| {
            panic!("{TEST_DATABASE_URL_ENV} is not a connection string: {err}")
        });
        config.dbname(&name);
        let url = url_of(&config);
        Some(Self {
            url,
            name,
            admin_url,
        })
    }

    /// Lets new connections in (or keeps them out), as a database that is
    /// down would; connections already open stay until terminated.
    pub async fn set_connections_allowed(&self, allowed: bool) {
        connect(&self.admin_url)
            .await
            .batch_execute(&format!(
                "ALTER DATABASE {} ALLOW_CONNECTIONS {allowed}",
                self.name
            ))
            .await
            .unwrap();
    }

    /// Ends the sessions on this database matching the SQL `condition` over
    /// pg_stat_activity, as a database restart would.
    pub async fn terminate(&self, condition: &str) {
        connect(&self.admin_url)
            .await
            .batch_execute(&format!(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE datname = '{}' AND pid <> pg_backend_pid() AND ({condition})",
                self.name
            ))
            .await
            .unwrap();
    }

    /// A plain client on this database, for assertions on its rows.
    pub async fn client(&self) -> tokio_postgres::Client {
        connect(&self.url).await
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        // Drop runs outside any runtime (or inside one we must not block),
        // so the DROP gets a thread and a runtime of its own.
        let admin_url = self.admin_url.clone();
        let name = self.name.clone();
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let client = connect(&admin_url).await;
                // FORCE: a gateway killed with -9 may leave sessions behind.
                let _ = client
                    .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .await;
            });
        })
        .join();
        if dropped.is_err() {
            eprintln!("could not drop test database {}", self.name);
        }
    }
}

/// The server URL, or `None` outside CI when unset; panics under `CI=true`.
pub fn server_url() -> Option<String> {
    match std::env::var(TEST_DATABASE_URL_ENV) {
        Ok(url) if !url.is_empty() => Some(url),
        _ if std::env::var("CI").as_deref() == Ok("true") => panic!(
            "{TEST_DATABASE_URL_ENV} is not set and CI=true: the PostgreSQL tests must run \
             (.ci/run starts a server)"
        ),
        _ => None,
    }
}

async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .unwrap_or_else(|err| panic!("cannot connect to the test PostgreSQL server: {err}"));
    tokio::spawn(connection);
    client
}

/// A `postgres://` URL for `config` (tests use trust auth or a password in
/// the server URL, copied as given).
fn url_of(config: &tokio_postgres::Config) -> String {
    let mut url = String::from("postgres://");
    if let Some(user) = config.get_user() {
        url.push_str(user);
        if let Some(password) = config.get_password() {
            url.push(':');
            url.push_str(&String::from_utf8_lossy(password));
        }
        url.push('@');
    }
    if let Some(tokio_postgres::config::Host::Tcp(host)) = config.get_hosts().first() {
        url.push_str(host);
    }
    if let Some(port) = config.get_ports().first() {
        url.push_str(&format!(":{port}"));
    }
    if let Some(db) = config.get_dbname() {
        url.push('/');
        url.push_str(db);
    }
    url.push_str("?sslmode=disable");
    url
}
