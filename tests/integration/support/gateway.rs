//! Starting the gateway for a test: in-process on an ephemeral port
//! ([`TestGateway`]) or as the real binary ([`BinaryGateway`]), each with its
//! own temp dir holding the config, TLS files, secret and sled store.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use authgate::auth::keys::dir::KeyDir;
use authgate::auth::keys::material::parse_algorithm;
use authgate::config::Config;
use authgate::server::{ConnectionSlots, Server};
use authgate::timestamp::unix_seconds;
use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use super::client::TestClient;
use super::pki::TestPki;

pub const SECRET: &[u8] = b"integration-test-secret-0123456789abcdef";

/// Extra TOML for each section, and the `[[route]]` tables.
#[derive(Default, Clone)]
pub struct GatewayOptions {
    pub server: String,
    pub tokens: String,
    pub auth: String,
    pub routes: String,
    /// Sign with keys from a `keys_dir` holding one active key of this
    /// algorithm (as `authgate keys generate --activate` leaves it) instead
    /// of the `secret_file` HMAC shortcut.
    pub keys: Option<&'static str>,
    /// Further tables (`[admin]`, `[log]`), after the routes; `{dir}` is
    /// replaced by the gateway's temp dir.
    pub extra: String,
    /// The whole `[store]` table body; empty: sled in the temp dir.
    pub store: String,
}

impl GatewayOptions {
    pub fn routes(routes: impl Into<String>) -> Self {
        Self {
            routes: routes.into(),
            ..Self::default()
        }
    }
}

/// Everything on disk a gateway needs, in one temp dir.
pub struct GatewayFiles {
    pub dir: TempDir,
    pub config_path: PathBuf,
    pub ca_pem: String,
}

impl GatewayFiles {
    pub fn create(options: &GatewayOptions) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let pki = TestPki::create(dir.path());
        std::fs::write(dir.path().join("access.secret"), SECRET).unwrap();
        if let Some(algorithm) = options.keys {
            let keys = KeyDir::new(&dir.path().join("keys"));
            let kid = keys
                .generate(
                    parse_algorithm(algorithm).unwrap(),
                    unix_seconds(SystemTime::now()),
                )
                .unwrap();
            keys.activate(&kid, unix_seconds(SystemTime::now()))
                .unwrap();
        }
        let text = config_text(dir.path(), options);
        let config_path = dir.path().join("authgate.toml");
        std::fs::write(&config_path, text).unwrap();
        Self {
            dir,
            config_path,
            ca_pem: pki.ca_pem,
        }
    }

    pub fn config(&self) -> Config {
        Config::load(&self.config_path).unwrap()
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// The config file for the files in `dir` ([`TestPki`]'s leaf, the secret,
/// the store) with `options` added.
pub fn config_text(dir: &Path, options: &GatewayOptions) -> String {
    let cert = dir.join("leaf.pem");
    let key = dir.join("leaf-key.pem");
    let secret_path = dir.join("access.secret");
    let store_path = dir.join("store.sled");
    let key_source = match options.keys {
        None => format!("secret_file = {secret_path:?}"),
        Some(algorithm) => {
            let keys_dir = dir.join("keys");
            format!("algorithm = {algorithm:?}\nkeys_dir = {keys_dir:?}")
        }
    };
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\ntls_cert = {cert:?}\ntls_key = {key:?}\n{server}\n\
             [tokens]\n{key_source}\n{tokens}\n\
             [store]\n{store}\n\
             [auth]\n{auth}\n\
             {routes}\n{extra}\n",
        cert = cert,
        key = key,
        store = if options.store.is_empty() {
            format!("path = {store_path:?}")
        } else {
            options.store.clone()
        },
        server = options.server,
        tokens = options.tokens,
        auth = options.auth,
        routes = options.routes,
        extra = options.extra.replace("{dir}", &dir.display().to_string()),
    )
}

/// The gateway running inside the test process.
pub struct TestGateway {
    pub addr: SocketAddr,
    pub files: GatewayFiles,
    config: Config,
    gateway: Arc<authgate::gateway::Gateway>,
    reloader: authgate::reload::Reloader,
    slots: ConnectionSlots,
    running: Running,
}

/// The serving task; dropping it stops the gateway.
struct Running {
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl TestGateway {
    pub async fn start(routes: &str) -> Self {
        Self::start_with(GatewayOptions::routes(routes)).await
    }

    pub async fn start_with(options: GatewayOptions) -> Self {
        Self::start_files(GatewayFiles::create(&options)).await
    }

    /// Starts (or restarts) a gateway over existing files.
    pub async fn start_files(files: GatewayFiles) -> Self {
        let config = files.config();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel();
        // After a stop in this process, sled's background threads may hold the
        // database lock a moment longer: poll (bounded) until it is free.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let authgate::Prepared {
            gateway,
            tls,
            certs,
        } = loop {
            match authgate::prepare(config.clone()).await {
                Ok(prepared) => break prepared,
                Err(authgate::StartupError::Build(authgate::gateway::BuildError::Store(
                    authgate::store::StoreError::InUse { .. },
                ))) if std::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(err) => panic!("gateway did not start: {err}"),
            }
        };
        let shared = Arc::clone(&gateway);
        let reloader =
            authgate::reload::Reloader::new(Arc::clone(&gateway), certs, files.config_path.clone());
        let server = Server::new(listener, gateway, tls);
        let slots = server.slots();
        let task = tokio::spawn(server.serve(async {
            let _ = rx.await;
        }));
        Self {
            addr,
            files,
            config,
            gateway: shared,
            reloader,
            slots,
            running: Running {
                shutdown: Some(tx),
                task: Some(task),
            },
        }
    }

    pub fn client(&self) -> TestClient {
        TestClient::new(self.addr, self.files.ca_pem.clone())
    }

    /// Where the admin listener (`[admin] listen`) is bound.
    pub fn admin_addr(&self) -> SocketAddr {
        self.gateway
            .observability()
            .admin_addr()
            .expect("the gateway has an admin listener")
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The gateway's connection slots, readable after it stopped.
    pub fn slots(&self) -> ConnectionSlots {
        self.slots.clone()
    }

    /// The gateway's own store, for arranging state as an operator would.
    pub fn store(&self) -> Arc<dyn authgate::store::Store> {
        Arc::clone(self.gateway.accounts().store())
    }

    /// A valid access token, minted with the gateway's secret.
    pub fn token(&self, sub: &str, role: &str) -> String {
        self.token_at(sub, role, SystemTime::now())
    }

    pub fn token_at(&self, sub: &str, role: &str, now: SystemTime) -> String {
        self.gateway
            .issuer()
            .mint(sub, role, 0, None, now)
            .unwrap()
            .token
    }

    /// Rewrites the config file with `options` (same TLS files, secret and
    /// store) and reloads it, as SIGHUP would.
    pub fn reload_with(
        &self,
        options: &GatewayOptions,
    ) -> Result<(), authgate::reload::ReloadError> {
        std::fs::write(
            &self.files.config_path,
            config_text(self.files.path(), options),
        )
        .unwrap();
        self.reloader.reload()
    }

    /// What SIGHUP does in the binary: re-reads the key directory.
    pub fn reload_keys(&self) {
        self.gateway.keys().reload_keys().unwrap();
    }

    /// The key directory, for arranging keys as an operator would.
    pub fn key_dir(&self) -> KeyDir {
        KeyDir::new(&self.config.tokens.keys_dir)
    }

    /// Stops serving and waits for the drain; the files stay for a restart.
    pub async fn stop(self) -> GatewayFiles {
        let Self {
            files,
            mut running,
            gateway,
            reloader,
            ..
        } = self;
        drop(reloader);
        if let Some(tx) = running.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = running.task.take() {
            task.await.unwrap();
        }
        // `serve` returns only once every task it started has ended, and
        // with them every other holder of the gateway (and its database).
        assert!(
            Arc::try_unwrap(gateway).is_ok(),
            "gateway still held after serve returned"
        );
        files
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// The real `authgate` binary, started on an ephemeral port.
pub struct BinaryGateway {
    pub addr: SocketAddr,
    child: Child,
    log: Arc<Mutex<String>>,
}

impl BinaryGateway {
    /// Starts the binary on `files` with `AUTHGATE_LOG=level` and waits for
    /// its "listening on" line (bounded).
    pub fn start(files: &GatewayFiles, level: &str) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_authgate"))
            .arg("serve")
            .arg("--config")
            .arg(&files.config_path)
            .env("AUTHGATE_LOG", level)
            .env_remove("AUTHGATE_ACCESS_SECRET")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        {
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                let mut tx = Some(tx);
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    if let Some(addr) = line
                        .split("listening on ")
                        .nth(1)
                        // Text lines end the address with a space, JSON ones with a quote.
                        .and_then(|rest| rest.split([' ', '"']).next())
                        .and_then(|a| a.parse::<SocketAddr>().ok())
                    {
                        if let Some(tx) = tx.take() {
                            let _ = tx.send(addr);
                        }
                    }
                    let mut log = log.lock().unwrap();
                    log.push_str(&line);
                    log.push('\n');
                }
            });
        }
        let addr = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(addr) => addr,
            Err(_) => {
                let _ = child.kill();
                panic!("gateway did not start: {}", log.lock().unwrap());
            }
        };
        Self { addr, child, log }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// The first log line containing `needle`, waiting (bounded) for the
    /// reader thread to see it: a line is written before the answer, but
    /// read from the pipe by another thread.
    pub fn wait_for_line(&self, needle: &str) -> String {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(line) = self.log().lines().find(|l| l.contains(needle)) {
                return line.to_owned();
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no log line with {needle:?}: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// A field of /proc/PID/status in KiB (VmRSS, VmHWM).
    pub fn status_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find(|l| l.starts_with(field))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap()
    }

    /// Resets the peak-RSS counter (VmHWM) so it measures from now on.
    pub fn reset_peak_memory(&self) {
        std::fs::write(format!("/proc/{}/clear_refs", self.pid()), "5").unwrap();
    }

    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits (bounded) for the process to exit and returns its exit code.
    pub fn wait(&mut self, limit: Duration) -> Option<i32> {
        let deadline = std::time::Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            assert!(std::time::Instant::now() < deadline, "gateway did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn kill9(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    pub fn client(&self, files: &GatewayFiles) -> TestClient {
        TestClient::new(self.addr, files.ca_pem.clone())
    }
}

impl Drop for BinaryGateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
