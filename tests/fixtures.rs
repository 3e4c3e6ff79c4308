//! Setups several test modules share: the plugins a test gateway loads,
//! enrollment workflows over local users, and adding a local user.

use std::path::Path;

use crate::{FIRST_PARTY, binary, wasm};

/// Copies the first-party plugins and the `static-answer` test gate into
/// `dir` as `NAME.wasm`, the way a gateway's plugin folder holds them.
pub fn copy_plugins(dir: &Path) {
    for name in FIRST_PARTY.iter().chain(["static-answer"].iter()) {
        std::fs::copy(wasm(name), dir.join(format!("{name}.wasm"))).unwrap();
    }
}

/// A reset workflow named `name` over the example directory with `users`:
/// the FIM lockout with threshold 3, two `static-answer` gates (`code`
/// answered by `123456`, `second` by `654321`: one-time-code-style checks
/// without slow hashing), a password of 12 to 64 characters without the user
/// name, flows idle-expiring after `idle` (e.g. `5m`), and with `sync` the
/// example sync target `mail` (`on_failure: allow`).
pub fn reset_workflow(name: &str, idle: &str, users: &[&str], sync: bool) -> String {
    let users: Vec<String> = users.iter().map(|u| format!("{{ name: {u} }}")).collect();
    let mut text = format!(
        r#"version: 1
name: {name}
purpose: reset
limits: {{ idle: {idle}, absolute: 15m }}
directory:
  plugin: example-directory
  config: {{ users: [{}] }}
lockout:
  plugin: example-lockout
  config: {{ threshold: 3, lockout_ms: [900000], max_lockouts: 3 }}
gates:
  - id: code
    plugin: static-answer
    config: {{ answer: "123456" }}
  - id: second
    plugin: static-answer
    config: {{ answer: "654321" }}
password:
  min_length: 12
  max_length: 64
  reject_user_name: true
"#,
        users.join(", ")
    );
    if sync {
        text.push_str(
            "sync:\n  - id: mail\n    plugin: example-sync\n    mode: sync\n    timeout: 5s\n    on_failure: allow\n",
        );
    }
    text
}

/// Writes `enroll.yaml` (purpose enrollment) and `reset.yaml` (purpose
/// reset) into `dir`: the `local-users` directory, the FIM lockout with
/// threshold 3, and two security questions (`first-pet`, `birth-city`)
/// registered by the first and asked by the second.
pub fn enrollment_workflows(dir: &Path) {
    let common = r#"
limits: { idle: 5m, absolute: 15m }
directory:
  plugin: local-users
  grants: { kv: true }
  limits: { wall_time: 5s }
lockout:
  plugin: example-lockout
  config: { threshold: 3, lockout_ms: [900000], max_lockouts: 3 }
gates:
  - id: first-pet
    plugin: example-question
    enrollment: required
    config: { question: "What was the name of your first pet?" }
  - id: birth-city
    plugin: example-question
    enrollment: required
    config: { question: "In which city were you born?" }
"#;
    std::fs::write(
        dir.join("enroll.yaml"),
        format!(
            "version: 1\nname: enroll\ndescription: Set up your security questions\npurpose: enrollment\n{common}"
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("reset.yaml"),
        format!(
            "version: 1\nname: reset\npurpose: reset\n{common}password: {{ min_length: 12, max_length: 64 }}\n"
        ),
    )
    .unwrap();
}

/// `resetgate users add NAME --password-stdin --config CONFIG` (the gateway
/// must be stopped).
pub fn add_local_user(config: &Path, name: &str, password: &str) {
    users_add(name, password, &["--config".as_ref(), config.as_os_str()]);
}

/// `resetgate users add NAME --password-stdin EXTRA...` with `password` on
/// its standard input; panics if it fails.
pub fn users_add(name: &str, password: &str, extra: &[&std::ffi::OsStr]) {
    use std::io::Write as _;
    let mut add = std::process::Command::new(binary())
        .args(["users", "add", name, "--password-stdin"])
        .args(extra)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    add.stdin
        .take()
        .unwrap()
        .write_all(format!("{password}\n").as_bytes())
        .unwrap();
    assert!(add.wait().unwrap().success(), "users add {name} failed");
}

/// Writes `enroll-canary.yaml` (purpose enrollment) and `reset-canary.yaml`
/// (purpose reset) into `dir`: the `local-users` directory and the
/// `canary-gate` test gate (copy it with [`copy_canary_gate`]), which
/// registers a random canary shown as a `code` and a `qr-code` display item
/// and asks for it at a reset.
pub fn canary_workflows(dir: &Path) {
    let common = r#"
limits: { idle: 5m, absolute: 15m }
directory:
  plugin: local-users
  grants: { kv: true }
  limits: { wall_time: 5s }
gates:
  - id: canary
    plugin: canary-gate
    enrollment: required
    config: {}
"#;
    std::fs::write(
        dir.join("enroll-canary.yaml"),
        format!(
            "version: 1\nname: enroll-canary\ndescription: Register a canary\npurpose: enrollment\n{common}"
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("reset-canary.yaml"),
        format!(
            "version: 1\nname: reset-canary\npurpose: reset\n{common}password: {{ min_length: 12, max_length: 64 }}\n"
        ),
    )
    .unwrap();
}

/// Copies the `canary-gate` test plugin into the plugin folder `dir`.
pub fn copy_canary_gate(dir: &Path) {
    std::fs::copy(wasm("canary-gate"), dir.join("canary-gate.wasm")).unwrap();
}

/// What the `canary-gate` plugin's QR code encodes for `user` and `canary`.
pub fn canary_uri(user: &str, canary: &str) -> String {
    format!("otpauth://totp/resetgate:{user}?secret={canary}&issuer=resetgate")
}

/// `text` as a QR code the way the `qrcode` crate draws it (error
/// correction M, the smallest version): rows of `1` (dark) and `0` (light),
/// no quiet zone.
pub fn qr_rows(text: &str) -> Vec<String> {
    let code = qrcode::QrCode::new(text.as_bytes()).unwrap();
    code.to_debug_str('1', '0')
        .lines()
        .map(str::to_owned)
        .collect()
}

/// LDIF of `n` people under `ou=people,dc=example,dc=test` (the slapd
/// harness's suffix) for benchmarks: `uid=PREFIXi`, password
/// `PREFIXi-old-1`, mail `PREFIXi@example.test`.
pub fn ldap_people(prefix: &str, n: usize) -> String {
    let mut ldif = String::new();
    for i in 0..n {
        let uid = format!("{prefix}{i}");
        ldif.push_str(&format!(
            "dn: uid={uid},ou=people,dc=example,dc=test\nobjectClass: inetOrgPerson\nuid: {uid}\n\
             cn: {uid}\nsn: {uid}\nmail: {uid}@example.test\ndisplayName: {uid} Example\n\
             userPassword: {uid}-old-1\n\n"
        ));
    }
    ldif
}
