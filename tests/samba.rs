//! A real Samba 4 Active Directory domain controller on 127.0.0.1 for the
//! tests, following `shared/notes/directories.md`.
//!
//! Provisioning a domain takes about 5 s, so it is done once: a template
//! (domain `EXAMPLE.TEST`, our own TLS certificate for 127.0.0.1, the
//! password settings and the users below) is built under
//! `target/samba/template-KEY/`, keyed by [`TEMPLATE_VERSION`] and Samba's
//! version, and every [`SambaDc::start`] clones it (`cp -a` and a rewrite of
//! the paths in `smb.conf`: about 0.03 s) and starts `samba` on the clone.
//!
//! The DC listens on fixed ports (389, 636, 88, 464), so only one may run on
//! the machine at a time: `SambaDc` holds an exclusive lock on
//! `target/samba/dc.lock` from before the template is built until the DC
//! has exited (this covers parallel test processes and threads; nextest's
//! `samba` test group in `.config/nextest.toml` keeps them from waiting on
//! each other). The DC is stopped by its PID (SIGTERM, then `wait`) when the
//! `SambaDc` is stopped or dropped; its standard input is a pipe held by the
//! test, and `samba -i` exits when that closes, so a test process that dies
//! takes its DC with it.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use crate::root;

/// Bump when the template's contents change (users, settings, config).
pub const TEMPLATE_VERSION: &str = "1";
/// The domain's DNS name (realm in lower case).
pub const DOMAIN: &str = "example.test";
/// The domain's base DN.
pub const BASE_DN: &str = "DC=example,DC=test";
/// The administrator, in UPN form (what the gateway binds as).
pub const ADMIN: &str = "Administrator@example.test";
/// The administrator's password.
pub const ADMIN_PASSWORD: &str = "Admin-Passw0rd!";
/// The LDAPS URL of the DC.
pub const LDAPS_URL: &str = "ldaps://127.0.0.1:636";

/// An enabled user: `jdoe`, John Doe, `jdoe@example.test`.
pub const JDOE_DN: &str = "CN=John Doe,CN=Users,DC=example,DC=test";
/// `jdoe`'s password in the template.
pub const JDOE_PASSWORD: &str = "Initial-Passw0rd1!";
/// A disabled user (`userAccountControl` has bit 2): `mdis`, Mary Disabled.
pub const MDIS_DN: &str = "CN=Mary Disabled,CN=Users,DC=example,DC=test";
/// `mdis`'s password in the template.
pub const MDIS_PASSWORD: &str = "Initial-Passw0rd1!";
/// Failed binds after which AD locks an account (the domain's policy).
pub const LOCKOUT_THRESHOLD: u32 = 3;

/// A running Samba AD DC on a clone of the template.
pub struct SambaDc {
    child: Child,
    /// `samba -i` exits when its standard input closes: our lifeline.
    stdin: Option<ChildStdin>,
    dir: tempfile::TempDir,
    /// Held until the DC has exited.
    _lock: File,
    /// How long `start` waited for LDAPS to answer.
    pub started_in: Duration,
}

fn lab() -> PathBuf {
    root().join("target/samba")
}

fn run(command: &mut Command) -> Output {
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    assert!(
        out.status.success(),
        "{command:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `samba --version`, e.g. `Version 4.17.12-Debian`.
fn samba_version() -> String {
    let out = run(Command::new("samba").arg("--version"));
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .trim_start_matches("Version ")
        .replace(
            |c: char| !c.is_ascii_alphanumeric() && c != '.' && c != '-',
            "_",
        )
}

/// Makes a test CA and a server certificate for 127.0.0.1 in `dir`
/// (`ca.pem`, `cert.pem`, `key.pem` with mode 0600): Samba refuses a key
/// others can read, and rustls refuses a CA certificate used as the
/// server's.
fn mkcert(dir: &Path) {
    const SCRIPT: &str = r#"
set -eu
D=$1; umask 077; mkdir -p "$D"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$D/ca.key" -out "$D/ca.pem" \
  -days 3650 -subj "/CN=resetgate samba test CA" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$D/key.pem" -subj "/CN=dc1.example.test" \
  -out "$D/req.pem"
printf '%s\n' "subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:dc1.example.test" "basicConstraints=critical,CA:FALSE" \
  "keyUsage=critical,digitalSignature" "extendedKeyUsage=serverAuth" > "$D/ext.cnf"
openssl x509 -req -in "$D/req.pem" -CA "$D/ca.pem" -CAkey "$D/ca.key" -set_serial 0x$(openssl rand -hex 8) \
  -days 3650 -out "$D/cert.pem" -extfile "$D/ext.cnf"
rm -f "$D/req.pem" "$D/ext.cnf" "$D/ca.key"
chmod 600 "$D/key.pem"; chmod 644 "$D/cert.pem" "$D/ca.pem"
"#;
    run(Command::new("bash").args(["-c", SCRIPT, "mkcert"]).arg(dir));
}

/// The lines added to `[global]` of the provisioned `smb.conf` (the
/// generated `server services` line is removed): only LDAP, CLDAP and the
/// KDC; every path inside `base`; no NetBIOS; and the old password stops
/// binding at once after a reset (the default keeps it valid for 60 min).
fn global_lines(base: &Path) -> String {
    let b = base.display();
    format!(
        "\tserver services = ldap, cldap, kdc\n\
         \tpid directory = {b}/run\n\
         \tncalrpc dir = {b}/run/ncalrpc\n\
         \twinbindd socket directory = {b}/run/winbindd\n\
         \tntp signd socket directory = {b}/run/ntp_signd\n\
         \tusershare path = {b}/run/usershares\n\
         \tsmb passwd file = {b}/private/smbpasswd\n\
         \tlog file = {b}/log/%m.log\n\
         \tdisable netbios = yes\n\
         \told password allowed period = 0\n\
         \ttls keyfile = {b}/tls/key.pem\n\
         \ttls certfile = {b}/tls/cert.pem\n\
         \ttls cafile = {b}/tls/ca.pem\n"
    )
}

/// Provisions the template in `base` (which must not exist): the domain,
/// the certificate, the config, the password settings and the users.
fn provision(base: &Path) {
    run(Command::new("samba-tool")
        .args(["domain", "provision", "-s", "/dev/null"])
        .arg(format!("--targetdir={}", base.display()))
        .args([
            "--realm=EXAMPLE.TEST",
            "--domain=EXAMPLE",
            "--server-role=dc",
            "--dns-backend=NONE",
            "--host-name=dc1",
            "--host-ip=127.0.0.1",
        ])
        .arg(format!("--adminpass={ADMIN_PASSWORD}"))
        .args([
            "--option=interfaces=127.0.0.1",
            "--option=bind interfaces only=yes",
        ]));
    mkcert(&base.join("tls"));
    for sub in ["run", "log"] {
        std::fs::create_dir_all(base.join(sub)).unwrap();
    }
    let conf = base.join("etc/smb.conf");
    let text = std::fs::read_to_string(&conf).unwrap();
    let mut out = String::new();
    for line in text.lines() {
        if line.trim_start().starts_with("server services =") {
            continue;
        }
        out.push_str(line);
        out.push('\n');
        if line.trim() == "[global]" {
            out.push_str(&global_lines(base));
        }
    }
    std::fs::write(&conf, out).unwrap();
    let tool = |args: &[&str]| {
        run(Command::new("samba-tool")
            .args(args)
            .arg("-s")
            .arg(&conf)
            .arg("-H")
            .arg(format!("tdb://{}/private/sam.ldb", base.display())));
    };
    let threshold = LOCKOUT_THRESHOLD.to_string();
    tool(&[
        "domain",
        "passwordsettings",
        "set",
        "--min-pwd-age=0",
        "--account-lockout-threshold",
        &threshold,
        "--account-lockout-duration=30",
        "--reset-account-lockout-after=30",
    ]);
    tool(&[
        "user",
        "create",
        "jdoe",
        JDOE_PASSWORD,
        "--given-name=John",
        "--surname=Doe",
        "--mail-address=jdoe@example.test",
    ]);
    tool(&[
        "user",
        "create",
        "mdis",
        MDIS_PASSWORD,
        "--given-name=Mary",
        "--surname=Disabled",
        "--mail-address=mdis@example.test",
    ]);
    tool(&["user", "disable", "mdis"]);
}

/// The template's folder, provisioned if it is missing or incomplete. The
/// caller holds the lab's lock.
fn template() -> PathBuf {
    let base = lab().join(format!("template-{TEMPLATE_VERSION}-{}", samba_version()));
    let done = base.join(".complete");
    if !done.exists() {
        if base.exists() {
            std::fs::remove_dir_all(&base).unwrap();
        }
        provision(&base);
        std::fs::write(&done, "").unwrap();
    }
    base
}

impl SambaDc {
    /// Takes the lab's lock (waiting for another test's DC to stop),
    /// clones the template (provisioning it first if needed) and starts
    /// `samba` on the clone; returns once LDAPS answers with our
    /// certificate. Panics with Samba's output if it does not start within
    /// 60 s.
    pub fn start() -> SambaDc {
        std::fs::create_dir_all(lab()).unwrap();
        let lock = File::create(lab().join("dc.lock")).unwrap();
        lock.lock().unwrap();
        // Under the lock no DC runs: a clone left behind by a test process
        // that was killed is garbage.
        for entry in std::fs::read_dir(lab()).unwrap().flatten() {
            if entry.file_name().to_string_lossy().starts_with("dc-") {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
        let template = template();
        let dir = tempfile::Builder::new()
            .prefix("dc-")
            .tempdir_in(lab())
            .unwrap();
        // `cp -a` keeps modes (the key's 0600), owners and ACLs.
        let clone = dir.path().join("dc");
        run(Command::new("cp").arg("-a").arg(&template).arg(&clone));
        let conf = clone.join("etc/smb.conf");
        let text = std::fs::read_to_string(&conf).unwrap();
        let from = template.display().to_string();
        std::fs::write(&conf, text.replace(&from, &clone.display().to_string())).unwrap();

        let started = Instant::now();
        let log = File::create(clone.join("log/samba.out")).unwrap();
        let mut child = Command::new("samba")
            .args(["-i", "-M", "single", "-s"])
            .arg(&conf)
            // A safety net: the lifeline below already ends an orphan.
            .arg("--maximum-runtime=900")
            .stdin(Stdio::piped())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let stdin = child.stdin.take();
        let mut dc = SambaDc {
            child,
            stdin,
            dir,
            _lock: lock,
            started_in: Duration::ZERO,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if dc
                .search_as(ADMIN, ADMIN_PASSWORD, "", "base", "(objectClass=*)", &[])
                .is_ok()
            {
                break;
            }
            if let Ok(Some(status)) = dc.child.try_wait() {
                panic!(
                    "samba exited ({status}) before LDAPS answered:\n{}",
                    dc.log()
                );
            }
            if Instant::now() > deadline {
                panic!("samba did not answer on LDAPS within 60 s:\n{}", dc.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        dc.started_in = started.elapsed();
        dc
    }

    /// The DC's PID.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The clone's folder.
    pub fn dir(&self) -> PathBuf {
        self.dir.path().join("dc")
    }

    /// The test CA that signed the DC's certificate (PEM).
    pub fn ca(&self) -> PathBuf {
        self.dir().join("tls/ca.pem")
    }

    /// What samba wrote to its standard output and error.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir().join("log/samba.out")).unwrap_or_default()
    }

    fn ldap_tool(&self, tool: &str) -> Command {
        let mut command = Command::new(tool);
        command
            .env("LDAPTLS_CACERT", self.ca())
            .env_remove("LDAPNOINIT")
            .env_remove("LDAPTLS_REQCERT")
            .args(["-x", "-H", LDAPS_URL]);
        command
    }

    /// `ldapsearch` over LDAPS (verified against the test CA) bound as
    /// `who` (UPN or DN) with `password`; the LDIF it printed (`-LLL`), or
    /// its error output (with AD's `data 52e` / `data 775` part) and exit code.
    pub fn search_as(
        &self,
        who: &str,
        password: &str,
        base: &str,
        scope: &str,
        filter: &str,
        attrs: &[&str],
    ) -> Result<String, String> {
        let out = self
            .ldap_tool("ldapsearch")
            .args(["-LLL", "-o", "ldif-wrap=no", "-D", who, "-w", password])
            .args(["-b", base, "-s", scope, filter])
            .args(attrs)
            .output()
            .unwrap();
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!(
                "ldapsearch exit {:?}: {}",
                out.status.code(),
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }

    /// Whether `password` binds as `who`, proved by a search of the
    /// account's own entry (Samba has no WhoAmI). Err: the bind was not
    /// refused as invalid credentials (code 49) but failed otherwise.
    pub fn binds(&self, who: &str, password: &str) -> Result<bool, String> {
        match self.search_as(who, password, BASE_DN, "base", "(objectClass=*)", &["dn"]) {
            Ok(_) => Ok(true),
            Err(e) if e.contains("Invalid credentials (49)") => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The values of `attr` of the entry `dn`, read as the administrator.
    pub fn values(&self, dn: &str, attr: &str) -> Vec<String> {
        let ldif = self
            .search_as(
                ADMIN,
                ADMIN_PASSWORD,
                dn,
                "base",
                "(objectClass=*)",
                &[attr],
            )
            .unwrap_or_else(|e| panic!("reading {attr} of {dn}: {e}"));
        let prefix = format!("{}: ", attr.to_ascii_lowercase());
        ldif.lines()
            .filter_map(|l| {
                let (name, value) = l.split_once(": ")?;
                (format!("{}: ", name.to_ascii_lowercase()) == prefix).then(|| value.to_owned())
            })
            .collect()
    }

    /// The one value of `attr` of `dn`, if it has one.
    pub fn value(&self, dn: &str, attr: &str) -> Option<String> {
        self.values(dn, attr).into_iter().next()
    }

    /// Applies an LDIF change as the administrator (`ldapmodify`).
    pub fn modify(&self, ldif: &str) {
        let mut child = self
            .ldap_tool("ldapmodify")
            .args(["-D", ADMIN, "-w", ADMIN_PASSWORD])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(ldif.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "ldapmodify failed: {}\n{ldif}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Locks `who` out the AD way: [`LOCKOUT_THRESHOLD`] binds with a wrong
    /// password.
    pub fn lock_out(&self, who: &str) {
        for _ in 0..LOCKOUT_THRESHOLD {
            assert_eq!(self.binds(who, "Wrong-Passw0rd-9!"), Ok(false));
        }
    }

    /// Stops the DC (SIGTERM, then `wait`) and returns how it exited; Samba
    /// exits with 127 on SIGTERM.
    pub fn stop(mut self) -> ExitStatus {
        self.terminate()
    }

    fn terminate(&mut self) -> ExitStatus {
        if let Ok(Some(status)) = self.child.try_wait() {
            return status;
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                self.stdin = None;
                return status;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        self.stdin = None;
        self.child.wait().unwrap()
    }
}

impl Drop for SambaDc {
    fn drop(&mut self) {
        // The lock (a field) is released only after this: no other DC
        // starts before this one has exited.
        self.terminate();
    }
}
