//! The systemd unit `dist/systemd/resetgate.service` and what `resetgate
//! serve` tells a service manager: `systemd-analyze verify` accepts the
//! unit without a warning, and the unit's own `ExecStart` command line,
//! started with `NOTIFY_SOCKET` on a socket this test binds (as systemd
//! does for `Type=notify`), says `READY=1` only once its port accepts
//! connections, `RELOADING=1` (with `MONOTONIC_USEC`) then `READY=1`
//! around a `SIGHUP` reload, and `STOPPING=1` at `SIGTERM`.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use resetgate_tests::{binary, root, stop_child, write_config};

/// Where the unit expects the binary and the config.
const UNIT_BINARY: &str = "/usr/local/bin/resetgate";
const UNIT_CONFIG: &str = "/etc/resetgate/gateway.yaml";

fn unit_text() -> String {
    std::fs::read_to_string(root().join("dist/systemd/resetgate.service")).unwrap()
}

/// The `[Service]` settings of the unit, each key with its values in order.
fn service_settings(unit: &str) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut section = "";
    for line in unit.lines().map(str::trim) {
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        if line.starts_with('[') {
            section = line;
            continue;
        }
        if section == "[Service]"
            && let Some((k, v)) = line.split_once('=')
        {
            out.entry(k.to_owned()).or_default().push(v.to_owned());
        }
    }
    out
}

#[test]
fn systemd_analyze_verify_accepts_the_unit_without_a_warning() {
    // The unit as installed, with the binary where this build put it
    // (verify checks that `ExecStart` is an executable).
    let dir = tempfile::tempdir().unwrap();
    let unit = unit_text().replace(UNIT_BINARY, &binary().to_string_lossy());
    let path = dir.path().join("resetgate.service");
    std::fs::write(&path, unit).unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&path)
        .output()
        .expect("systemd-analyze (Debian package `systemd`; .ci/run installs it)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    // Unknown keys and bad values are only warnings to verify.
    assert!(stderr.trim().is_empty(), "{stderr}");
    // And the sandbox is as tight as `systemd-analyze security` can tell
    // offline ("OK" is below 5; the unit scores 1.1 with systemd 252).
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--man=no", "--threshold=20"])
        .arg(&path)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{report}");
    let exposure: f64 = report
        .split("Overall exposure level for resetgate.service: ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in:\n{report}"));
    // Other systemd versions weigh settings a little differently: below 2
    // is what the unit's hardening is for ("OK" starts below 5).
    assert!(exposure < 2.0, "exposure {exposure}:\n{report}");
}

#[test]
fn the_unit_sets_the_documented_sandbox_but_not_memory_deny_write_execute() {
    let s = service_settings(&unit_text());
    let one = |k: &str| -> &str {
        let v = s
            .get(k)
            .unwrap_or_else(|| panic!("the unit does not set {k}"));
        v.last().unwrap()
    };
    assert_eq!(one("Type"), "notify");
    assert_eq!(one("ExecReload"), "/bin/kill -HUP $MAINPID");
    assert_eq!(one("User"), "resetgate");
    assert_eq!(one("ProtectSystem"), "strict");
    assert_eq!(one("NoNewPrivileges"), "yes");
    assert_eq!(one("StateDirectory"), "resetgate");
    // The only writable place is the data folder.
    assert_eq!(s["ReadWritePaths"], ["/var/lib/resetgate"]);
    // wasmtime maps the compiled plugins as executable memory.
    assert!(!s.contains_key("MemoryDenyWriteExecute"));
    // The sysusers.d file makes the user the unit runs as.
    let sysusers = std::fs::read_to_string(root().join("dist/systemd/resetgate.sysusers")).unwrap();
    assert!(
        sysusers
            .lines()
            .any(|l| l.starts_with("u resetgate ") && l.ends_with(" /var/lib/resetgate")),
        "{sysusers}"
    );
}

/// Notifications received on the socket, one datagram each.
struct Notifications {
    socket: UnixDatagram,
    path: PathBuf,
}

impl Notifications {
    fn bind(dir: &Path) -> Notifications {
        let path = dir.join("notify.sock");
        let socket = UnixDatagram::bind(&path).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        Notifications { socket, path }
    }

    /// The next datagram's `KEY=VALUE` lines.
    fn next(&self) -> BTreeMap<String, String> {
        let mut buf = vec![0u8; 4096];
        let n = self
            .socket
            .recv(&mut buf)
            .expect("no notification within 60 s");
        let text = String::from_utf8(buf[..n].to_vec()).unwrap();
        text.lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    }
}

/// The command line of the unit's `ExecStart`, split as systemd splits it
/// (the unit quotes nothing).
fn exec_start() -> Vec<String> {
    let s = service_settings(&unit_text());
    let line = s["ExecStart"].last().unwrap().clone();
    line.split_whitespace().map(str::to_owned).collect()
}

#[test]
fn serve_from_the_units_command_line_notifies_ready_reloading_and_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "");
    let notifications = Notifications::bind(dir.path());
    let argv = exec_start();
    assert_eq!(argv[0], UNIT_BINARY);
    assert!(argv.iter().any(|a| a == UNIT_CONFIG), "{argv:?}");
    let args: Vec<PathBuf> = argv[1..]
        .iter()
        .map(|a| {
            if a == UNIT_CONFIG {
                config.clone()
            } else {
                PathBuf::from(a)
            }
        })
        .collect();
    let mut child = Command::new(binary())
        .args(&args)
        .env("NOTIFY_SOCKET", &notifications.path)
        .env("RESETGATE_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();

    let ready = notifications.next();
    assert_eq!(
        ready.get("READY").map(String::as_str),
        Some("1"),
        "{ready:?}"
    );
    let status = &ready["STATUS"];
    let url = status
        .strip_prefix("listening on http://")
        .unwrap_or_else(|| panic!("{status}"));
    let addr: SocketAddr = url.parse().unwrap();
    // Ready means the port takes connections now.
    TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .expect("READY=1 before the port accepts connections");

    // A reload: RELOADING=1 with the monotonic time, then READY=1.
    let signal = |name: &str| {
        let ok = Command::new("kill")
            .args([&format!("-{name}"), &child.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
    };
    signal("HUP");
    let reloading = notifications.next();
    assert_eq!(
        reloading.get("RELOADING").map(String::as_str),
        Some("1"),
        "{reloading:?}"
    );
    let usec: u64 = reloading["MONOTONIC_USEC"].parse().unwrap();
    assert!(usec > 0);
    let reloaded = notifications.next();
    assert_eq!(
        reloaded.get("READY").map(String::as_str),
        Some("1"),
        "{reloaded:?}"
    );
    assert!(reloaded["STATUS"].ends_with("; reloaded"), "{reloaded:?}");

    // A reload that refuses a file still ends with READY=1 (the old
    // workflows serve), and the status says so.
    std::fs::write(dir.path().join("workflows/broken.yaml"), "version: [\n").unwrap();
    signal("HUP");
    assert_eq!(
        notifications.next().get("RELOADING").map(String::as_str),
        Some("1")
    );
    let refused = notifications.next();
    assert_eq!(
        refused.get("READY").map(String::as_str),
        Some("1"),
        "{refused:?}"
    );
    assert!(refused["STATUS"].contains("refused"), "{refused:?}");

    signal("TERM");
    let stopping = notifications.next();
    assert_eq!(
        stopping.get("STOPPING").map(String::as_str),
        Some("1"),
        "{stopping:?}"
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            stop_child(&mut child);
            panic!("the gateway did not stop within 30 s of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status}");
}
