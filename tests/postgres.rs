//! A real PostgreSQL 15 cluster, started by a test on a free loopback port
//! in a temporary folder, and stopped by its PID (fast shutdown, then
//! `wait`) when dropped.
//!
//! - The cluster runs with `fsync` on (the default): durability is part of
//!   what the store tests check.
//! - It holds a database `resetgate` owned by a role `resetgate` with the
//!   password [`Postgres::PASSWORD`] (SCRAM), reachable over TCP on
//!   `127.0.0.1` only; the superuser `postgres` is reachable only over the
//!   Unix socket in the cluster's folder, for the tests' own checks
//!   ([`Postgres::psql`]).
//! - [`Postgres::start_tls`] adds TLS with a certificate for `127.0.0.1`
//!   from a throwaway CA ([`Pki`]), and accepts the role over TLS only
//!   (`hostssl`).
//! - `initdb` refuses to run as root: when the tests run as root, initdb and
//!   the server run as the `postgres` system user (the folders are handed
//!   to it); otherwise as the tests' own user.
//! - `initdb` (about 1 s, more on a busy machine) runs once per build of
//!   the recipe: into a template under `target/postgres/`, guarded by a
//!   file lock across the test processes; each cluster is a copy of it
//!   (about 0.1 s), started in about 0.3 s.
//!
//! ```ignore
//! let pg = Postgres::start();
//! assert_eq!(pg.psql("SELECT current_database()"), "resetgate");
//! let url = pg.url(); // postgres://resetgate@127.0.0.1:PORT/resetgate
//! ```

use std::fs::File;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::pki::Pki;
use crate::slapd::free_port;

/// Where PostgreSQL 15's programs are (Debian's packages).
/// The newest PostgreSQL's programs the distribution installed
/// (`/usr/lib/postgresql/<version>/bin`; Debian's `postgresql` package).
fn bin() -> &'static str {
    static BIN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        let mut found: Vec<(u32, String)> = std::fs::read_dir("/usr/lib/postgresql")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let version: u32 = e.file_name().to_str()?.parse().ok()?;
                let bin = e.path().join("bin");
                bin.join("initdb")
                    .exists()
                    .then(|| (version, bin.display().to_string()))
            })
            .collect();
        found.sort();
        found.pop().map(|(_, bin)| bin).unwrap_or_else(|| {
            panic!("no PostgreSQL under /usr/lib/postgresql/*/bin; install postgresql (.ci/run)")
        })
    })
}

/// Bump when the template's recipe changes: a new template is built.
const RECIPE: &str = "1: initdb -E UTF8 --locale=C -U postgres; role and database resetgate";

/// A running PostgreSQL cluster, stopped when dropped.
pub struct Postgres {
    child: Option<Child>,
    dir: tempfile::TempDir,
    pki: Option<Pki>,
    port: u16,
}

impl Postgres {
    /// The role's password (SCRAM-SHA-256 on the server).
    pub const PASSWORD: &'static str = "pg-Canary-5b0e-secret";
    /// The role the gateway connects as, and the database it owns.
    pub const USER: &'static str = "resetgate";

    /// Starts a fresh cluster (plain TCP) and waits until it accepts
    /// connections.
    pub fn start() -> Postgres {
        Postgres::start_with(None)
    }

    /// Starts a fresh cluster that accepts the role over TLS only, with a
    /// certificate for `127.0.0.1` from a throwaway CA ([`Postgres::ca_file`]).
    pub fn start_tls() -> Postgres {
        Postgres::start_with(Some(Pki::new()))
    }

    fn start_with(pki: Option<Pki>) -> Postgres {
        let template = template();
        let dir = tempfile::Builder::new().prefix("pg").tempdir().unwrap();
        owned_by_server(dir.path());
        let copy = Command::new("cp")
            .arg("-a")
            .arg(template.join("data"))
            .arg(dir.path().join("data"))
            .output()
            .unwrap();
        assert!(
            copy.status.success(),
            "copying the template: {}",
            text(&copy)
        );
        let hba = if let Some(pki) = &pki {
            for (from, to) in [
                (pki.cert_file(), "server.pem"),
                (pki.key_file(), "server.key"),
            ] {
                let to = dir.path().join(to);
                std::fs::copy(from, &to).unwrap();
                std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o600)).unwrap();
                owned_by_server(&to);
            }
            "hostssl all resetgate 127.0.0.1/32 scram-sha-256\n"
        } else {
            "host all resetgate 127.0.0.1/32 scram-sha-256\n"
        };
        let hba_file = dir.path().join("data/pg_hba.conf");
        std::fs::write(&hba_file, format!("local all postgres trust\n{hba}")).unwrap();
        owned_by_server(&hba_file);
        let mut pg = Postgres {
            child: None,
            dir,
            pki,
            port: 0,
        };
        // A port picked free can be taken before the server binds it.
        let mut last = String::new();
        for _ in 0..5 {
            pg.port = free_port();
            match pg.spawn() {
                Ok(()) => return pg,
                Err(e) => last = e,
            }
        }
        panic!("postgres did not start: {last}");
    }

    /// Starts the server on the cluster's folder and port; waits until it
    /// accepts connections.
    fn spawn(&mut self) -> Result<(), String> {
        let b = self.dir.path();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(b.join("postgres.log"))
            .unwrap();
        let _ = std::fs::remove_file(b.join("data/postmaster.pid"));
        let mut cmd = server_command("postgres");
        cmd.arg("-D")
            .arg(b.join("data"))
            .args(["-c", &format!("port={}", self.port)])
            .args(["-c", "listen_addresses=127.0.0.1"])
            .args(["-c", &format!("unix_socket_directories={}", b.display())])
            .args(["-c", "fsync=on", "-c", "synchronous_commit=on"])
            .args(["-c", "shared_buffers=16MB", "-c", "max_connections=100"])
            .args(["-c", "log_min_messages=warning"]);
        if self.pki.is_some() {
            cmd.args(["-c", "ssl=on"])
                .args([
                    "-c",
                    &format!("ssl_cert_file={}", b.join("server.pem").display()),
                ])
                .args([
                    "-c",
                    &format!("ssl_key_file={}", b.join("server.key").display()),
                ]);
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("{}/postgres: {e}; install postgresql (.ci/run)", bin()));
        self.child = Some(child);
        let pid_file = b.join("data/postmaster.pid");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(child) = &mut self.child
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                return Err(format!("postgres exited with {status}: {}", self.log()));
            }
            // The 8th line of postmaster.pid is the server's state.
            if std::fs::read_to_string(&pid_file)
                .is_ok_and(|s| s.lines().nth(7).is_some_and(|l| l.trim() == "ready"))
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "postgres was not ready within 30 s: {}",
                    self.log()
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// `postgres://resetgate@127.0.0.1:PORT/resetgate` (no password).
    pub fn url(&self) -> String {
        format!(
            "postgres://{}@127.0.0.1:{}/resetgate",
            Postgres::USER,
            self.port
        )
    }

    /// The role's password.
    pub fn password(&self) -> &'static str {
        Postgres::PASSWORD
    }

    /// The CA certificate (PEM) the server's certificate chains to, for a
    /// cluster started with [`Postgres::start_tls`].
    pub fn ca_file(&self) -> PathBuf {
        self.pki
            .as_ref()
            .expect("ca_file: this cluster was started without TLS (Postgres::start_tls)")
            .ca_file()
    }

    /// The TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The cluster's folder (`data/`, the socket, `postgres.log`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The postmaster's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// What the server has logged (warnings and errors).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("postgres.log")).unwrap_or_default()
    }

    /// Runs `sql` as the superuser in the database `resetgate` (over the
    /// Unix socket) and returns what it printed, unaligned, tuples only,
    /// without the last newline. Panics if it fails.
    pub fn psql(&self, sql: &str) -> String {
        self.try_psql(sql)
            .unwrap_or_else(|e| panic!("psql {sql:?} failed: {e}"))
    }

    /// Like [`Postgres::psql`], returning the error text instead.
    pub fn try_psql(&self, sql: &str) -> Result<String, String> {
        let out = Command::new(format!("{}/psql", bin()))
            .arg("-h")
            .arg(self.dir.path())
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                "resetgate",
            ])
            .args(["-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-c", sql])
            .env_remove("PGPASSWORD")
            .env_remove("PGSERVICE")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        if out.status.success() {
            let mut s = String::from_utf8_lossy(&out.stdout).into_owned();
            if s.ends_with('\n') {
                s.pop();
            }
            Ok(s)
        } else {
            Err(text(&out))
        }
    }

    /// Stops the server (fast shutdown: clients are disconnected, a
    /// checkpoint is written) and waits for it. The folder and port are kept
    /// for [`Postgres::start_again`].
    pub fn stop(&mut self) {
        self.signal_and_wait("INT");
    }

    /// Stops the server as a crash would (immediate shutdown: no checkpoint;
    /// the next start replays the WAL) and waits for it.
    pub fn stop_immediately(&mut self) {
        self.signal_and_wait("QUIT");
    }

    /// Starts the stopped server again on the same folder and port.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "start_again: the server is running");
        if let Err(e) = self.spawn() {
            panic!("postgres did not start again on port {}: {e}", self.port);
        }
    }

    fn signal_and_wait(&mut self, signal: &str) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .args([&format!("-{signal}"), &child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        // Immediate shutdown, then the hard way.
        let _ = Command::new("kill")
            .args(["-QUIT", &child.id().to_string()])
            .status();
        std::thread::sleep(Duration::from_secs(1));
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.signal_and_wait("INT");
    }
}

/// The user the server runs as: `Some((uid, gid))` of `postgres` when the
/// tests run as root, `None` (the tests' own user) otherwise.
fn server_user() -> Option<(u32, u32)> {
    static USER: OnceLock<Option<(u32, u32)>> = OnceLock::new();
    *USER.get_or_init(|| {
        let id = |args: &[&str]| -> u32 {
            let out = Command::new("id").args(args).output().unwrap();
            String::from_utf8_lossy(&out.stdout)
                .trim()
                .parse()
                .unwrap_or_else(|_| panic!("id {args:?}: {}", text(&out)))
        };
        (id(&["-u"]) == 0).then(|| (id(&["-u", "postgres"]), id(&["-g", "postgres"])))
    })
}

/// Hands `path` to the server's user (when the tests run as root).
fn owned_by_server(path: &Path) {
    if let Some((uid, gid)) = server_user() {
        std::os::unix::fs::chown(path, Some(uid), Some(gid)).unwrap();
    }
}

/// A PostgreSQL program, run as the server's user.
fn server_command(program: &str) -> Command {
    let mut cmd = Command::new(format!("{}/{program}", bin()));
    if let Some((uid, gid)) = server_user() {
        cmd.uid(uid).gid(gid);
    }
    for var in [
        "PGDATA",
        "PGHOST",
        "PGPORT",
        "PGUSER",
        "PGPASSWORD",
        "PGDATABASE",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("LC_ALL", "C");
    cmd
}

/// The template cluster (a folder holding `data/`), built once per recipe
/// and server version, under a file lock shared by the test processes.
fn template() -> PathBuf {
    static TEMPLATE: OnceLock<PathBuf> = OnceLock::new();
    TEMPLATE
        .get_or_init(|| {
            let version = server_command("postgres").arg("--version").output();
            let version = match version {
                Ok(out) if out.status.success() => text(&out),
                Ok(out) => panic!("{}/postgres --version: {}", bin(), text(&out)),
                Err(e) => panic!("{}/postgres: {e}; install postgresql (.ci/run)", bin()),
            };
            let key = crate::pki::sha256(format!("{RECIPE}\n{version}").as_bytes());
            let base = crate::root().join("target/postgres");
            std::fs::create_dir_all(&base).unwrap();
            let path = base.join(format!("template-{}", &key[..16]));
            let lock = File::create(base.join("template.lock")).unwrap();
            lock.lock().unwrap();
            if !path.join("data/PG_VERSION").exists() {
                build_template(&base, &path);
            }
            drop(lock);
            path
        })
        .clone()
}

fn build_template(base: &Path, path: &Path) {
    let building = base.join(format!("building-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&building);
    std::fs::create_dir_all(&building).unwrap();
    owned_by_server(&building);
    let data = building.join("data");
    let init = server_command("initdb")
        .arg("-D")
        .arg(&data)
        .args(["-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C"])
        .arg("--no-instructions")
        .output()
        .unwrap();
    assert!(init.status.success(), "initdb failed: {}", text(&init));
    // Single-user mode: no server, no port; one statement per line.
    let mut single = server_command("postgres")
        .args(["--single", "-D"])
        .arg(&data)
        .args(["-c", "fsync=on", "postgres"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write as _;
        let mut stdin = single.stdin.take().unwrap();
        writeln!(
            stdin,
            "CREATE ROLE {} LOGIN PASSWORD '{}';",
            Postgres::USER,
            Postgres::PASSWORD
        )
        .unwrap();
        writeln!(stdin, "CREATE DATABASE resetgate OWNER {};", Postgres::USER).unwrap();
    }
    let out = single.wait_with_output().unwrap();
    let said = text(&out);
    assert!(
        out.status.success() && !said.contains("ERROR"),
        "creating the role and database: {said}"
    );
    let _ = std::fs::remove_dir_all(path);
    std::fs::rename(&building, path).unwrap();
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
