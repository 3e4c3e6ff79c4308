//! Support for resetgate's integration tests: where the built plugins are,
//! a plugin host in a temporary folder, and the real `resetgate` binary
//! started on a free loopback port (plain HTTP, or HTTPS with a throwaway
//! PKI from [`pki`]); a loopback HTTP(S) sink that records what plugins
//! send ([`sink`]); a headless Chromium to drive the self-service
//! page with ([`webdriver`]); and a Samba AD DC on 127.0.0.1 ([`samba`]).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use resetgate::plugin::{HostConfig, PluginHost};

pub mod fixtures;
pub mod hooked;
pub mod pki;
pub mod postgres;
pub mod relay;
pub mod samba;
pub mod sink;
pub mod slapd;
pub mod webdriver;

/// The workspace root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("RESETGATE_WORKSPACE_ROOT"))
}

/// A built plugin by crate name, e.g. `example-question` or `hostile`.
pub fn wasm(name: &str) -> PathBuf {
    let path =
        Path::new(env!("RESETGATE_TEST_WASM_DIR")).join(format!("{}.wasm", name.replace('-', "_")));
    assert!(
        path.exists(),
        "{} is missing; tests/build.rs builds it",
        path.display()
    );
    path
}

/// The first-party plugins, by crate name.
pub const FIRST_PARTY: [&str; 12] = [
    "example-question",
    "example-lockout",
    "example-directory",
    "example-vpn",
    "example-sync",
    "local-users",
    "attribute-gate",
    "questions",
    "totp",
    "one-time-code",
    "ldap-directory",
    "active-directory",
];

/// A plugin host whose cache lives in a fresh temporary folder.
pub fn host() -> (PluginHost, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let host = PluginHost::new(HostConfig::new(dir.path().join("cache"))).unwrap();
    (host, dir)
}

pub use resetgate::metrics::cpu_seconds;

/// Runs `f` with every log event of this thread (all levels, every target)
/// written to a buffer; returns the text and `f`'s result. Plugin calls run
/// on the calling thread, so their host's and plugin's lines are caught.
pub fn capture_logs<T>(f: impl FnOnce() -> T) -> (String, T) {
    use tracing_subscriber::util::SubscriberInitExt;
    #[derive(Clone, Default)]
    struct Buffer(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
    impl Write for Buffer {
        fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(data);
            Ok(data.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buffer = Buffer::default();
    let writer = buffer.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing_subscriber::filter::LevelFilter::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let out = {
        let _guard = subscriber.set_default();
        f()
    };
    let text = String::from_utf8_lossy(&buffer.0.lock().unwrap()).into_owned();
    (text, out)
}

/// Every file under `dir`, recursively.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![];
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// Panics if any file under `dir` holds `canary`'s bytes.
pub fn assert_not_in_files(dir: &Path, canary: &str) {
    for file in files_under(dir) {
        let bytes = std::fs::read(&file).unwrap();
        assert!(
            !bytes.windows(canary.len()).any(|w| w == canary.as_bytes()),
            "{} holds `{canary}` in clear",
            file.display()
        );
    }
}

/// sha256 of a file, hex.
pub fn sha256_of(path: &Path) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(std::fs::read(path).unwrap()))
}

/// The `resetgate` binary built from this workspace (debug), or the one
/// `RESETGATE_BINARY` names (the load benchmark runs the release build).
pub fn binary() -> PathBuf {
    let path = std::env::var_os("RESETGATE_BINARY")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target/debug/resetgate"));
    assert!(
        path.exists(),
        "{} is missing: run the suite with `cargo xtask test` (or `cargo build -p resetgate` first)",
        path.display()
    );
    path
}

/// Runs `resetgate ARGS...` to completion; returns (status ok, stdout, stderr).
pub fn run_cli(args: &[&str]) -> (bool, String, String) {
    run_cli_env(args, &[])
}

/// [`run_cli`] with extra environment variables.
pub fn run_cli_env(args: &[&str], env: &[(&str, &std::ffi::OsStr)]) -> (bool, String, String) {
    let out = Command::new(binary())
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Writes a gateway config for [`Gateway::start_config`] to
/// `dir/gateway.yaml` and returns its path: `version: 1`, then `body` (YAML
/// lines, e.g. `pki.tls_yaml(None)`), then a default for each of these keys
/// that `body` does not set: `listen: 127.0.0.1:0`, and `data_dir`,
/// `plugins`, `workflows` as folders `data`, `plugins`, `workflows` in `dir`
/// (created; the last two empty, so the gateway serves no workflow and
/// starts at once).
pub fn write_config(dir: &Path, body: &str) -> PathBuf {
    let sets = |key: &str| body.lines().any(|l| l.starts_with(&format!("{key}:")));
    let mut text = format!("version: 1\n{body}");
    if !text.ends_with('\n') {
        text.push('\n');
    }
    if !sets("listen") {
        text.push_str("listen: \"127.0.0.1:0\"\n");
    }
    for (key, folder) in [
        ("data_dir", "data"),
        ("plugins", "plugins"),
        ("workflows", "workflows"),
    ] {
        if !sets(key) {
            let path = dir.join(folder);
            std::fs::create_dir_all(&path).unwrap();
            text.push_str(&format!("{key}: {:?}\n", path));
        }
    }
    let file = dir.join("gateway.yaml");
    std::fs::write(&file, text).unwrap();
    file
}

/// `resetgate serve --config CONFIG`, not yet started.
fn serve_command(config: &Path) -> Command {
    let mut command = Command::new(binary());
    command.args(["serve", "--config"]).arg(config);
    command
}

/// A running `resetgate serve`, stopped (SIGTERM, then kill) when dropped.
pub struct Gateway {
    child: Child,
    pub addr: SocketAddr,
    pub started_in: Duration,
    stderr: std::sync::Arc<std::sync::Mutex<String>>,
    tls: bool,
}

impl Gateway {
    /// Starts `resetgate serve` the way `cargo xtask run` does, on a free
    /// loopback port, with its data in `data_dir`; waits until it listens.
    pub fn start(data_dir: &Path, plugins: &Path) -> Gateway {
        Gateway::start_with(data_dir, plugins, &root().join("workflows"))
    }

    /// Like [`Gateway::start`], with the workflows from `workflows`.
    pub fn start_with(data_dir: &Path, plugins: &Path, workflows: &Path) -> Gateway {
        let mut command = Command::new(binary());
        command
            .args(["serve", "--listen", "127.0.0.1:0"])
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--plugins")
            .arg(plugins)
            .arg("--workflows")
            .arg(workflows);
        Gateway::spawn(command).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Starts `resetgate serve --config CONFIG EXTRA_ARGS...` (see
    /// [`write_config`]) and waits until it listens, over HTTP or HTTPS as
    /// the config says; panics with its stderr if it does not start.
    pub fn start_config(config: &Path, extra_args: &[&str]) -> Gateway {
        Gateway::try_start_config(config, extra_args).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Like [`Gateway::start_config`]; if the gateway does not start,
    /// returns everything it wrote to stderr.
    pub fn try_start_config(config: &Path, extra_args: &[&str]) -> Result<Gateway, String> {
        let mut command = serve_command(config);
        command.args(extra_args);
        Gateway::spawn(command)
    }

    /// Like [`Gateway::start_config`], with `RESETGATE_LOG` set to `filter`
    /// (e.g. to have the listener's debug lines in [`Gateway::logs`]).
    pub fn start_config_logging(config: &Path, filter: &str) -> Gateway {
        let mut command = serve_command(config);
        command.env("RESETGATE_LOG", filter);
        Gateway::spawn(command).unwrap_or_else(|e| panic!("{e}"))
    }

    /// `http://ADDR` or `https://ADDR`, as the gateway announced it.
    pub fn base_url(&self) -> String {
        format!(
            "{}://{}",
            if self.tls { "https" } else { "http" },
            self.addr
        )
    }

    /// Whether the gateway serves HTTPS.
    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// The gateway's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Spawns `command` (a `resetgate serve`) and waits for its `listening`
    /// event on stderr (text or JSON: see [`listening_url`]). Err:
    /// everything it wrote to stderr when it exited without one.
    fn spawn(mut command: Command) -> Result<Gateway, String> {
        let started = Instant::now();
        let mut child = command
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let err_pipe = child.stderr.take().unwrap();
        let sink = stderr.clone();
        let (found, url) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            let mut found = Some(found);
            let mut lines = BufReader::new(err_pipe);
            let mut line = Vec::new();
            while let Ok(n) = lines.read_until(b'\n', &mut line) {
                if n == 0 {
                    break;
                }
                let text = String::from_utf8_lossy(&line);
                sink.lock().unwrap().push_str(&text);
                if found.is_some()
                    && let Some(url) = listening_url(&text)
                    && let Some(tx) = found.take()
                {
                    let _ = tx.send(url);
                }
                line.clear();
            }
        });
        // The sender goes when stderr closes: the gateway exited.
        let Ok(url) = url.recv() else {
            let deadline = Instant::now() + Duration::from_secs(10);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
            let _ = reader.join();
            return Err(format!(
                "gateway did not start:\n{}",
                stderr.lock().unwrap()
            ));
        };
        let (tls, addr) = match (url.strip_prefix("https://"), url.strip_prefix("http://")) {
            (Some(addr), _) => (true, addr),
            (None, Some(addr)) => (false, addr),
            (None, None) => panic!("the gateway listens on {url:?}"),
        };
        let addr: SocketAddr = addr.trim().parse().unwrap();
        Ok(Gateway {
            child,
            addr,
            started_in: started.elapsed(),
            stderr,
            tls,
        })
    }

    /// Everything the gateway wrote to stderr so far, once its log has
    /// settled: the gateway writes its lines in batches, at most every
    /// `resetgate::logging::LINES_DELAY` (10 ms) under load, so this waits
    /// until nothing new came for five times that (at most 2 s).
    pub fn logs(&self) -> String {
        let quiet = resetgate::logging::LINES_DELAY * 5;
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut seen = self.stderr.lock().unwrap().len();
        let mut since = Instant::now();
        while Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
            let now = self.stderr.lock().unwrap().len();
            if now != seen {
                seen = now;
                since = Instant::now();
            } else if since.elapsed() >= quiet {
                break;
            }
        }
        self.stderr.lock().unwrap().clone()
    }

    /// Waits (up to 10 s) until the gateway's stderr contains `needle`;
    /// returns everything it wrote so far.
    pub fn wait_for_log(&self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let logs = self.stderr.lock().unwrap().clone();
            if logs.contains(needle) || Instant::now() > deadline {
                return logs;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// A plain HTTP/1.1 GET; returns (status, body). Plain HTTP only: over
    /// HTTPS use `pki.client(..)` with [`Gateway::base_url`].
    pub fn get(&self, path: &str) -> (u16, String) {
        let mut s = TcpStream::connect_timeout(&self.addr, Duration::from_secs(5)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            self.addr
        )
        .unwrap();
        let mut raw = String::new();
        s.read_to_string(&mut raw).unwrap();
        status_and_body(&raw)
    }

    /// Sends a signal (`HUP`, `TERM`, ...) to the gateway.
    pub fn signal(&self, name: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
    }

    /// Kills the gateway with SIGKILL (no chance to flush or clean up) and
    /// waits until it is gone.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Stops the gateway with SIGTERM and waits for it; returns whether it exited cleanly.
    pub fn stop(mut self) -> bool {
        self.terminate()
    }

    fn terminate(&mut self) -> bool {
        stop_child(&mut self.child).is_some_and(|s| s.success())
    }
}

/// The URL of a `resetgate serve` log line announcing where it listens:
/// `... listening url=http://ADDR` (text) or `{"event":"listening",
/// "url":"http://ADDR",...}` (JSON).
pub fn listening_url(line: &str) -> Option<String> {
    if let Ok(json) = serde_json::from_str::<serde_json::Value>(line) {
        return (json["event"] == "listening")
            .then(|| json["url"].as_str().map(str::to_owned))
            .flatten();
    }
    let (_, rest) = line.split_once(" listening url=")?;
    Some(rest.split_whitespace().next()?.to_owned())
}

/// The status code and the body of a raw HTTP/1.1 response (0 and empty
/// when it has none).
pub fn status_and_body(raw: &str) -> (u16, String) {
    let status = raw
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = raw
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// Stops a server the tests started: SIGTERM, then up to 10 s for it to
/// exit (its status), else SIGKILL (`None`). Always reaped.
pub fn stop_child(child: &mut Child) -> Option<std::process::ExitStatus> {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.terminate();
        }
    }
}

/// A reset workflow built by hand (no YAML) for engine tests: the example
/// directory with `users`, the example FIM lockout with `lockout` config,
/// and one `static-answer` gate per answer in `gates`, plus the example sync
/// target. Plugins come from the suite's build.
pub fn test_workflow(
    host: &PluginHost,
    users: &[&str],
    lockout: serde_json::Value,
    gates: &[&str],
) -> resetgate::workflow::Workflow {
    use resetgate::contract::PluginKind;
    use resetgate::plugin::{Grants, Limits, LoadSpec};
    use resetgate::workflow::*;
    let step =
        |id: &str, path: &str, plugin: &str, kind: PluginKind, config: serde_json::Value| Step {
            id: id.to_owned(),
            path: path.to_owned(),
            plugin_name: plugin.to_owned(),
            plugin: host
                .load(
                    &wasm(plugin),
                    &LoadSpec {
                        kind: Some(kind),
                        ..LoadSpec::default()
                    },
                )
                .unwrap(),
            config: config.to_string(),
            grants: Grants::default(),
            limits: Limits::default(),
        };
    let users: Vec<serde_json::Value> = users
        .iter()
        .map(|u| serde_json::json!({"name": u}))
        .collect();
    Workflow {
        name: "test-reset".into(),
        description: None,
        title: None,
        version: "test-v1".into(),
        source: "(built in tests)".into(),
        purpose: Purpose::Reset,
        directory: step(
            "dir",
            "directory",
            "example-directory",
            PluginKind::Directory,
            serde_json::json!({"users": users}),
        ),
        lockout: Some(step(
            "lockout",
            "lockout",
            "example-lockout",
            PluginKind::Lockout,
            lockout,
        )),
        gates: gates
            .iter()
            .enumerate()
            .map(|(i, answer)| Gate {
                step: step(
                    &format!("gate{i}"),
                    &format!("gates[{i}]"),
                    "static-answer",
                    PluginKind::Gate,
                    serde_json::json!(answer),
                ),
                enrollment: Enrollment::None,
                max_rounds: 3,
            })
            .collect(),
        password: PasswordPolicy {
            min_length: 12,
            max_length: 64,
            blocklist: std::sync::Arc::default(),
            blocklist_source: None,
            reject_user_name: true,
            must_change: false,
        },
        sync: vec![SyncTarget {
            step: step(
                "mail",
                "sync[0]",
                "example-sync",
                PluginKind::SyncTarget,
                serde_json::json!({}),
            ),
            mode: SyncMode::Sync {
                timeout: Duration::from_secs(5),
                on_failure: OnFailure::Allow,
            },
        }],
        vpn: None,
        limits: FlowLimits {
            idle: Duration::from_secs(300),
            absolute: Duration::from_secs(900),
        },
    }
}

/// One HTTP response, as the integration tests look at it.
#[derive(Debug)]
pub struct Reply {
    /// The status; 0 when no answer came at all (the gateway was killed).
    pub status: u16,
    /// The headers, in order.
    pub headers: Vec<(String, String)>,
    /// The body as text.
    pub raw: String,
    /// The body as JSON (`Null` if it is not).
    pub json: serde_json::Value,
}

impl Reply {
    /// The response to a request `ureq` sent (status 0 if none came).
    pub fn of(sent: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> Reply {
        let Ok(mut resp) = sent else {
            return Reply {
                status: 0,
                headers: vec![],
                raw: format!("{sent:?}"),
                json: serde_json::Value::Null,
            };
        };
        let status = resp.status().as_u16();
        let headers = resp
            .headers()
            .iter()
            .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
            .collect();
        let raw = resp.body_mut().read_to_string().unwrap_or_default();
        let json = serde_json::from_str(&raw).unwrap_or(serde_json::Value::Null);
        Reply {
            status,
            headers,
            raw,
            json,
        }
    }

    /// The first header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Makes `commits` on `store`, at most 256 of them waiting for their flush
/// at a time; every one is durable when it returns (the benchmarks' way of
/// filling a store quickly).
pub fn commit_all(
    store: &dyn resetgate::store::Store,
    commits: impl IntoIterator<Item = resetgate::store::Commit>,
) {
    let mut pending = Vec::new();
    for commit in commits {
        pending.push(store.commit(commit).unwrap());
        if pending.len() >= 256 {
            for d in pending.drain(..) {
                d.wait().unwrap();
            }
        }
    }
    for d in pending {
        d.wait().unwrap();
    }
}
