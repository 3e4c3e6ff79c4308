//! A real OpenLDAP slapd 2.5 with the ppolicy overlay, started by a test on
//! free loopback ports (plain LDAP with StartTLS, and LDAPS) in a temporary
//! folder, and stopped by its PID (SIGTERM, then `wait`) when dropped.
//! The recipe is `../shared/notes/directories.md` (section 1): a static
//! `slapd.conf`, `slapadd` of the entries offline, `slapd -d 0 -h ...` in
//! the foreground, polled until it answers. The server certificate comes
//! from a throwaway CA ([`Pki`]) for `127.0.0.1`.
//!
//! The directory (`dc=example,dc=test`):
//! - `cn=pwreset,ou=services,...` ([`Slapd::BIND_DN`], password
//!   [`Slapd::BIND_PASSWORD`]): the gateway's bind account, with `manage`
//!   on every entry and password (it sets passwords, `pwdReset`, and
//!   deletes `pwdAccountLockedTime`).
//! - `uid=NAME,ou=people,...` for each of [`Slapd::PEOPLE`], password
//!   `NAME-old-1`, mail `NAME@example.test`.
//! - `uid=solo,ou=solo,...`: the only entry of its subtree, so that a
//!   filter a user's input could widen (`*`) would find exactly it.
//! - the default policy `cn=default,ou=policies,...`: lockout after 3 bad
//!   binds until an admin unlocks, a history of 3, and `pwdMustChange:
//!   FALSE`, so that a `pwdReset` on an entry is the gateway's doing.
//!
//! ```ignore
//! let slapd = Slapd::start();
//! assert!(slapd.binds(&Slapd::user_dn("alice"), "alice-old-1"));
//! ```

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::pki::Pki;

/// A running slapd, stopped (SIGTERM, `wait`) when dropped.
pub struct Slapd {
    child: Child,
    dir: tempfile::TempDir,
    pki: Pki,
    /// The plain LDAP port (StartTLS available) on 127.0.0.1.
    pub ldap_port: u16,
    /// The LDAPS port on 127.0.0.1.
    pub ldaps_port: u16,
}

impl Slapd {
    /// The suffix.
    pub const BASE: &'static str = "dc=example,dc=test";
    /// The gateway's bind account.
    pub const BIND_DN: &'static str = "cn=pwreset,ou=services,dc=example,dc=test";
    /// Its password.
    pub const BIND_PASSWORD: &'static str = "resetsecret";
    /// The rootdn (not subject to ACLs or ppolicy), for the tests' own checks.
    pub const ROOT_DN: &'static str = "cn=admin,dc=example,dc=test";
    /// Its password.
    pub const ROOT_PASSWORD: &'static str = "adminsecret";
    /// The people under `ou=people`: `uid=NAME`, password `NAME-old-1`.
    pub const PEOPLE: [&'static str; 8] = [
        "alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi",
    ];

    /// Starts a fresh slapd (about 0.2 s) and waits until it answers.
    pub fn start() -> Slapd {
        Slapd::start_with("")
    }

    /// Like [`Slapd::start`], with `extra` (LDIF) loaded after the standard
    /// entries.
    pub fn start_with(extra: &str) -> Slapd {
        // A port picked free can be taken before slapd binds it: try again.
        let mut last = String::new();
        for _ in 0..5 {
            match Slapd::try_start(extra) {
                Ok(slapd) => return slapd,
                Err(e) => last = e,
            }
        }
        panic!("slapd did not start: {last}");
    }

    fn try_start(extra: &str) -> Result<Slapd, String> {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::new();
        let b = dir.path();
        std::fs::create_dir_all(b.join("data")).unwrap();
        std::fs::create_dir_all(b.join("run")).unwrap();
        std::fs::write(b.join("slapd.conf"), config(b, &pki)).unwrap();
        std::fs::write(b.join("base.ldif"), format!("{}{extra}", base_ldif())).unwrap();
        let conf = b.join("slapd.conf");
        let load = Command::new("slapadd")
            .arg("-q")
            .arg("-f")
            .arg(&conf)
            .arg("-l")
            .arg(b.join("base.ldif"))
            .output()
            .unwrap_or_else(|e| panic!("slapadd: {e}; install slapd and ldap-utils (.ci/run)"));
        assert!(load.status.success(), "slapadd failed: {}", text(&load));
        let (ldap_port, ldaps_port) = (free_port(), free_port());
        let log = std::fs::File::create(b.join("run/slapd.log")).unwrap();
        let child = Command::new("slapd")
            .args(["-d", "0", "-f"])
            .arg(&conf)
            .arg("-h")
            .arg(format!(
                "ldap://127.0.0.1:{ldap_port}/ ldaps://127.0.0.1:{ldaps_port}/"
            ))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("slapd: {e}; install slapd (.ci/run)"));
        let mut slapd = Slapd {
            child,
            dir,
            pki,
            ldap_port,
            ldaps_port,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = slapd.child.try_wait() {
                let log = std::fs::read_to_string(slapd.dir.path().join("run/slapd.log"));
                return Err(format!("slapd exited with {status}: {log:?}"));
            }
            let probe = Command::new("ldapsearch")
                .args(["-x", "-H", &slapd.ldap_url(), "-s", "base", "-b", ""])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .unwrap();
            if probe.success() {
                return Ok(slapd);
            }
            if Instant::now() > deadline {
                return Err("slapd did not answer within 20 s".to_owned());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `ldap://127.0.0.1:PORT` (StartTLS available).
    pub fn ldap_url(&self) -> String {
        format!("ldap://127.0.0.1:{}", self.ldap_port)
    }

    /// `ldaps://127.0.0.1:PORT`.
    pub fn ldaps_url(&self) -> String {
        format!("ldaps://127.0.0.1:{}", self.ldaps_port)
    }

    /// The CA certificate (PEM) the server's certificate chains to.
    pub fn ca_file(&self) -> PathBuf {
        self.pki.ca_file()
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The folder slapd runs in (config, database, log).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `uid=NAME,ou=people,dc=example,dc=test`.
    pub fn user_dn(uid: &str) -> String {
        format!("uid={uid},ou=people,{}", Slapd::BASE)
    }

    /// Runs an ldap-utils tool against the LDAPS port, verifying the server
    /// against the test CA.
    fn tool(&self, program: &str, args: &[&str], stdin: Option<&str>) -> Output {
        use std::io::Write as _;
        let mut child = Command::new(program)
            .args(["-x", "-H", &self.ldaps_url()])
            .args(args)
            .env("LDAPTLS_CACERT", self.ca_file())
            .env_remove("LDAPNOINIT")
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        if let Some(input) = stdin {
            child
                .stdin
                .take()
                .unwrap()
                .write_all(input.as_bytes())
                .unwrap();
        }
        child.wait_with_output().unwrap()
    }

    /// Binds as `dn` with `password` (`ldapwhoami` over LDAPS, with the
    /// ppolicy control); the exit code (0 bound, 49 invalid credentials)
    /// and what the tool printed. Every failed bind counts towards the
    /// lockout (3), so check a refused password once.
    pub fn bind(&self, dn: &str, password: &str) -> (i32, String) {
        let out = self.tool(
            "ldapwhoami",
            &["-e", "ppolicy", "-D", dn, "-w", password],
            None,
        );
        (out.status.code().unwrap_or(-1), text(&out))
    }

    /// Whether `password` binds as `dn` (see [`Slapd::bind`]).
    pub fn binds(&self, dn: &str, password: &str) -> bool {
        self.bind(dn, password).0 == 0
    }

    /// The values of `attribute` (operational ones too, e.g. `pwdReset`) of
    /// the entry `dn`, read as the rootdn.
    pub fn attribute(&self, dn: &str, attribute: &str) -> Vec<String> {
        let out = self.tool(
            "ldapsearch",
            &[
                "-LLL",
                "-o",
                "ldif-wrap=no",
                "-D",
                Slapd::ROOT_DN,
                "-w",
                Slapd::ROOT_PASSWORD,
                "-b",
                dn,
                "-s",
                "base",
                "(objectClass=*)",
                attribute,
            ],
            None,
        );
        assert!(out.status.success(), "ldapsearch {dn}: {}", text(&out));
        let prefix = format!("{}: ", attribute.to_ascii_lowercase());
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| {
                let lower = l.to_ascii_lowercase();
                lower
                    .starts_with(&prefix)
                    .then(|| l[prefix.len()..].to_owned())
            })
            .collect()
    }

    /// Applies `ldif` (changetype records) as the rootdn; panics if it fails.
    pub fn modify(&self, ldif: &str) {
        let out = self.tool(
            "ldapmodify",
            &["-D", Slapd::ROOT_DN, "-w", Slapd::ROOT_PASSWORD],
            Some(ldif),
        );
        assert!(out.status.success(), "ldapmodify: {}", text(&out));
    }

    /// Stops slapd (SIGTERM) and waits for it; returns whether it exited
    /// cleanly.
    pub fn stop(mut self) -> bool {
        self.terminate()
    }

    fn terminate(&mut self) -> bool {
        crate::stop_child(&mut self.child).is_some_and(|s| s.success())
    }
}

impl Drop for Slapd {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.terminate();
        }
    }
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A port free on 127.0.0.1 right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn config(b: &Path, pki: &Pki) -> String {
    let b = b.display();
    format!(
        r#"include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
include /etc/ldap/schema/nis.schema
modulepath /usr/lib/ldap
moduleload back_mdb
moduleload ppolicy
pidfile {b}/run/slapd.pid
argsfile {b}/run/slapd.args
TLSCertificateFile {cert}
TLSCertificateKeyFile {key}
TLSCACertificateFile {ca}
password-hash {{SSHA}}
database mdb
maxsize 104857600
suffix "{base}"
rootdn "{root}"
rootpw {rootpw}
directory {b}/data
index objectClass eq
index uid eq
index mail eq
overlay ppolicy
ppolicy_default "cn=default,ou=policies,{base}"
ppolicy_hash_cleartext
ppolicy_use_lockout
access to attrs=userPassword
    by self write
    by dn.exact="{bind}" manage
    by anonymous auth
    by * none
access to *
    by dn.exact="{bind}" manage
    by self read
    by users read
    by * none
"#,
        cert = pki.cert_file().display(),
        key = pki.key_file().display(),
        ca = pki.ca_file().display(),
        base = Slapd::BASE,
        root = Slapd::ROOT_DN,
        rootpw = Slapd::ROOT_PASSWORD,
        bind = Slapd::BIND_DN,
    )
}

fn base_ldif() -> String {
    let base = Slapd::BASE;
    let mut ldif = format!(
        "dn: {base}\nobjectClass: top\nobjectClass: dcObject\nobjectClass: organization\no: Example Test\ndc: example\n\n"
    );
    for ou in ["people", "services", "policies", "solo"] {
        ldif.push_str(&format!(
            "dn: ou={ou},{base}\nobjectClass: organizationalUnit\nou: {ou}\n\n"
        ));
    }
    ldif.push_str(&format!(
        "dn: cn=default,ou=policies,{base}\nobjectClass: device\nobjectClass: pwdPolicy\ncn: default\n\
         pwdAttribute: userPassword\npwdMustChange: FALSE\npwdAllowUserChange: TRUE\npwdSafeModify: FALSE\n\
         pwdInHistory: 3\npwdCheckQuality: 0\npwdMinLength: 0\npwdLockout: TRUE\npwdMaxFailure: 3\n\
         pwdLockoutDuration: 0\npwdFailureCountInterval: 0\npwdMaxAge: 0\n\n"
    ));
    ldif.push_str(&format!(
        "dn: {}\nobjectClass: applicationProcess\nobjectClass: simpleSecurityObject\ncn: pwreset\nuserPassword: {}\n\n",
        Slapd::BIND_DN,
        Slapd::BIND_PASSWORD
    ));
    let person = |dn: &str, uid: &str| {
        format!(
            "dn: {dn}\nobjectClass: inetOrgPerson\nuid: {uid}\ncn: {uid}\nsn: {uid}\n\
             mail: {uid}@example.test\nmobile: +1 555 0100\ndisplayName: {uid} Example\n\
             userPassword: {uid}-old-1\n\n"
        )
    };
    for uid in Slapd::PEOPLE {
        ldif.push_str(&person(&Slapd::user_dn(uid), uid));
    }
    ldif.push_str(&person(&format!("uid=solo,ou=solo,{base}"), "solo"));
    ldif
}
