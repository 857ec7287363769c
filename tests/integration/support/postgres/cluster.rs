//! A PostgreSQL cluster of a test's own (initdb into a temp dir), for tests
//! that stop and start the server itself under running gateways. It listens
//! on a Unix socket in its directory only, so its port is free by
//! construction and the same across restarts, with no port to probe for.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The port the socket is named after (`.s.PGSQL.<port>`): any number
/// works, as nothing else listens in the cluster's private directory.
const PORT: u16 = 5432;

/// A running cluster; stopped (immediately) and removed on drop.
pub struct PrivateCluster {
    /// Holds `data/`, the socket and `server.log`; owned by the server's
    /// user.
    dir: tempfile::TempDir,
    /// Where `initdb` and `pg_ctl` are.
    bindir: PathBuf,
    /// The unprivileged user the server runs as when the tests run as root
    /// (PostgreSQL refuses to run as root), as `.ci/run` does.
    run_as: Option<&'static str>,
}

impl PrivateCluster {
    /// Initialises and starts a cluster, or `None` (the test is skipped,
    /// with a line on stderr) when PostgreSQL is not installed. Under
    /// `CI=true` a missing installation fails the test instead.
    pub fn start() -> Option<Self> {
        let Some(bindir) = bindir() else {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "initdb not found and CI=true: PostgreSQL must be installed"
            );
            eprintln!("skipped: initdb not found (PostgreSQL is not installed)");
            return None;
        };
        let dir = tempfile::Builder::new()
            .prefix("authgate-pg-")
            .tempdir()
            .unwrap();
        let run_as = is_root().then_some("postgres");
        if let Some(user) = run_as {
            ensure_user(user);
            let status = Command::new("chown")
                .arg(user)
                .arg(dir.path())
                .status()
                .unwrap();
            assert!(status.success(), "chown {user} failed");
        }
        let cluster = Self {
            dir,
            bindir,
            run_as,
        };
        cluster.run(
            cluster
                .command("initdb")
                .arg("-D")
                .arg(cluster.data())
                .args(["-U", "authgate", "--auth=trust"])
                .args(["--encoding=UTF8", "--no-locale"]),
        );
        cluster.start_again();
        Some(cluster)
    }

    /// A connection string for the `postgres` database, as a gateway's
    /// `[store] url` takes it.
    pub fn url(&self) -> String {
        format!(
            "host={} port={PORT} user=authgate dbname=postgres sslmode=disable",
            self.dir.path().display()
        )
    }

    /// `pg_ctl stop -m fast`: sessions are ended, the socket removed, and
    /// the call returns once the server is down.
    pub fn stop(&self) {
        self.run(self.pg_ctl().args(["-w", "-m", "fast", "stop"]));
    }

    /// Starts the server (again) on the same socket; returns once it
    /// accepts connections.
    pub fn start_again(&self) {
        let options = format!(
            "-c listen_addresses= -p {PORT} -k {} -c max_connections=100 -c fsync=off",
            self.dir.path().display()
        );
        let log = self.dir.path().join("server.log");
        self.run(
            self.pg_ctl()
                .args(["-w", "-t", "60", "-l"])
                .arg(&log)
                .args(["-o", &options, "start"]),
        );
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn pg_ctl(&self) -> Command {
        let mut command = self.command("pg_ctl");
        command.arg("-D").arg(self.data());
        command
    }

    /// `program` from the installation, as the server's user.
    fn command(&self, program: &str) -> Command {
        let path = self.bindir.join(program);
        match self.run_as {
            Some(user) => {
                let mut command = Command::new("runuser");
                command.args(["-u", user, "--"]).arg(path);
                command
            }
            None => Command::new(path),
        }
    }

    /// Runs `command` to completion; a failure shows the server log.
    fn run(&self, command: &mut Command) {
        let output = command.output().unwrap();
        if !output.status.success() {
            let log =
                std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default();
            panic!(
                "{command:?} failed: {}{}\nserver.log:\n{log}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        // Already stopped is fine: the test may end with the server down.
        let _ = self
            .pg_ctl()
            .args(["-w", "-m", "immediate", "stop"])
            .output();
    }
}

/// The directory of `initdb` and `pg_ctl`: on `PATH`, else Debian's
/// versioned directories, newest first (as `.ci/run` looks).
fn bindir() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join("initdb"))
            .find(|initdb| initdb.is_file())
    });
    if let Some(initdb) = on_path {
        let initdb = std::fs::canonicalize(&initdb).unwrap_or(initdb);
        return initdb.parent().map(Path::to_path_buf);
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

fn is_root() -> bool {
    let output = Command::new("id").arg("-u").output().unwrap();
    String::from_utf8_lossy(&output.stdout).trim() == "0"
}

/// Creates the system user the server runs as, unless it exists.
fn ensure_user(user: &str) {
    let exists = Command::new("id")
        .arg(user)
        .output()
        .is_ok_and(|o| o.status.success());
    if !exists {
        let status = Command::new("useradd")
            .args(["--system", "--no-create-home", user])
            .status()
            .unwrap();
        assert!(status.success(), "useradd {user} failed");
    }
}
