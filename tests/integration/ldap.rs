//! The `ldap` capability and the `ldap-directory` plugin against a real
//! OpenLDAP slapd with ppolicy (`resetgate_tests::slapd`), started per test
//! on free loopback ports: the plugin through the plugin host, and whole
//! flows through the HTTP API of the real binary (a reset, an enrollment,
//! a refused certificate, hostile names, a directory that never answers).

use std::io::Read as _;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use resetgate::config::GatewayConfig;
use resetgate::contract::{CallContext, PluginFailure, PluginKind, SetPasswordFailure, User};
use resetgate::plugin::{Capabilities, Grants, Limits, LoadSpec, Plugin, PluginHost};
use resetgate::secret::Secret;
use resetgate_tests::pki::Pki;
use resetgate_tests::slapd::Slapd;
use resetgate_tests::{Gateway, host, wasm, write_config};
use serde_json::{Value, json};

const PEOPLE: &str = "ou=people,dc=example,dc=test";

/// Two entries with the same mail: a name that finds both is ambiguous.
const TWINS: &str = "dn: uid=twin1,ou=people,dc=example,dc=test\nobjectClass: inetOrgPerson\n\
uid: twin1\ncn: twin1\nsn: twin1\nmail: twin@example.test\n\n\
dn: uid=twin2,ou=people,dc=example,dc=test\nobjectClass: inetOrgPerson\n\
uid: twin2\ncn: twin2\nsn: twin2\nmail: twin@example.test\n\n";

/// The `ldap:` and `secrets:` lines of a gateway config for one connection
/// `name` to `url`, bound as the slapd's service account with its password
/// in a 0600 file in `dir`; `extra` adds settings (`ca_file: ...`).
fn connection_yaml(dir: &Path, name: &str, url: &str, extra: &str) -> String {
    connection_yaml_with(dir, name, url, extra, Slapd::BIND_PASSWORD)
}

/// [`connection_yaml`] with the bind password `password`.
fn connection_yaml_with(dir: &Path, name: &str, url: &str, extra: &str, password: &str) -> String {
    let secret = dir.join("ldap-bind.secret");
    std::fs::write(&secret, format!("{password}\n")).unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    format!(
        "secrets:\n  ldap-bind: {{ file: {secret:?} }}\nldap:\n  {name}: {{ url: \"{url}\", bind_dn: \"{}\", bind_secret: ldap-bind{extra} }}\n",
        Slapd::BIND_DN
    )
}

/// The `ldap-directory` step of a workflow over `connection`.
fn directory_yaml(connection: &str, base: &str, wall_time: &str) -> String {
    format!(
        "directory:\n  plugin: ldap-directory\n  grants: {{ ldap: [{connection}] }}\n  limits: {{ wall_time: {wall_time} }}\n  \
         config: {{ connection: {connection}, base: \"{base}\", user_attributes: [uid, mail] }}\n"
    )
}

/// A reset workflow `name`: the directory step, the FIM lockout
/// (threshold 3) and the attribute gate on `mail`.
fn reset_workflow(name: &str, directory: &str) -> String {
    format!(
        "version: 1\nname: {name}\npurpose: reset\nlimits: {{ idle: 5m, absolute: 15m }}\n{directory}\
         lockout:\n  plugin: example-lockout\n  config: {{ threshold: 3, lockout_ms: [900000], max_lockouts: 3 }}\n\
         gates:\n  - id: mail\n    plugin: attribute-gate\n    config: {{ attribute: mail, label: Your e-mail address }}\n\
         password: {{ min_length: 12, max_length: 64 }}\n"
    )
}

/// A gateway folder: plugins (the first-party ones, `ldap-directory`,
/// `static-answer`), workflows, data; the config is `body` plus rate
/// limits no test here reaches.
struct Lab {
    dir: tempfile::TempDir,
}

impl Lab {
    fn new() -> Lab {
        let dir = tempfile::tempdir().unwrap();
        let plugins = dir.path().join("plugins");
        std::fs::create_dir_all(&plugins).unwrap();
        std::fs::create_dir_all(dir.path().join("workflows")).unwrap();
        resetgate_tests::fixtures::copy_plugins(&plugins);
        std::fs::copy(wasm("ldap-directory"), plugins.join("ldap-directory.wasm")).unwrap();
        Lab { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn workflow(&self, name: &str, text: &str) {
        std::fs::write(
            self.path().join("workflows").join(format!("{name}.yaml")),
            text,
        )
        .unwrap();
    }

    fn start(&self, body: &str) -> Gateway {
        let body = format!(
            "{body}api: {{ rate_limits: {{ anonymous: {{ per_minute: 100000, burst: 10000 }}, \
             user: {{ per_minute: 100000, burst: 10000 }} }} }}\n"
        );
        let config: PathBuf = write_config(self.path(), &body);
        Gateway::start_config(&config, &[])
    }
}

/// A portal's client over plain HTTP.
struct Portal {
    base: String,
    agent: ureq::Agent,
}

impl Portal {
    fn new(gw: &Gateway) -> Portal {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .build()
            .new_agent();
        Portal {
            base: gw.base_url(),
            agent,
        }
    }

    /// POSTs `body` with `token` as the bearer; (status, JSON body, raw body).
    fn post(&self, path: &str, token: Option<&str>, body: Value) -> (u16, Value, String) {
        let mut req = ureq::http::Request::builder()
            .method("POST")
            .uri(format!("{}{path}", self.base))
            .header("Content-Type", "application/json");
        if let Some(t) = token {
            req = req.header("Authorization", format!("Bearer {t}"));
        }
        let mut resp = self
            .agent
            .run(req.body(body.to_string().into_bytes()).unwrap())
            .unwrap();
        let status = resp.status().as_u16();
        let raw = resp.body_mut().read_to_string().unwrap();
        (
            status,
            serde_json::from_str(&raw).unwrap_or(Value::Null),
            raw,
        )
    }

    /// Starts a flow; (status, view).
    fn begin(&self, workflow: &str, user: &str) -> (u16, Value) {
        let (status, view, _) = self.post(
            "/v1/flows",
            None,
            json!({"workflow": workflow, "user": user}),
        );
        (status, view)
    }

    /// Answers the flow's current prompt with `value` in `field`.
    fn answer(&self, view: &Value, field: &str, value: &str) -> (u16, Value) {
        let (status, next, _) = self.post(
            &format!("/v1/flows/{}/answers", view["id"].as_str().unwrap()),
            view["token"].as_str(),
            json!({
                "gate": view["prompt"]["gate"],
                "round": view["prompt"]["round"],
                "answers": { field: value },
            }),
        );
        (status, next)
    }
}

/// Carries the token of the flow's first view over to a later one.
fn with_token(view: Value, token: &Value) -> Value {
    let mut view = view;
    view["token"] = token.clone();
    view
}

// ----- the plugin through the plugin host ------------------------------------

/// A plugin host whose capabilities come from a config with the
/// connection `corp` to `slapd` (LDAPS, verified against its CA).
fn ldap_host(slapd: &Slapd, dir: &Path) -> (PluginHost, tempfile::TempDir, Plugin) {
    ldap_host_with(slapd, dir, Slapd::BIND_PASSWORD)
}

/// [`ldap_host`] with the bind password `password`.
fn ldap_host_with(
    slapd: &Slapd,
    dir: &Path,
    password: &str,
) -> (PluginHost, tempfile::TempDir, Plugin) {
    let yaml = format!(
        "version: 1\n{}",
        connection_yaml_with(
            dir,
            "corp",
            &slapd.ldaps_url(),
            &format!(", ca_file: {:?}", slapd.ca_file()),
            password,
        )
    );
    let config = GatewayConfig::from_bytes(&dir.join("gateway.yaml"), yaml.as_bytes()).unwrap();
    let (host, cache) = host();
    host.set_capabilities(Arc::new(Capabilities::from_config(&config, None).unwrap()));
    let plugin = host
        .load(
            &wasm("ldap-directory"),
            &LoadSpec {
                kind: Some(PluginKind::Directory),
                grants: Grants {
                    ldap: vec!["corp".into()],
                    ..Grants::default()
                },
                limits: Limits {
                    wall_time: Duration::from_secs(5),
                    ..Limits::default()
                },
            },
        )
        .unwrap();
    (host, cache, plugin)
}

fn ctx(base: &str) -> CallContext {
    CallContext {
        flow_id: "f-ldap".into(),
        workflow: "reset".into(),
        step: "directory".into(),
        config: json!({
            "connection": "corp",
            "base": base,
            "user_attributes": ["uid", "mail"],
        })
        .to_string(),
        now_ms: 1_763_856_000_000,
        language: String::new(),
    }
}

fn find(plugin: &Plugin, base: &str, name: &str) -> Option<User> {
    plugin
        .directory()
        .unwrap()
        .find_user(&ctx(base), name)
        .unwrap()
        .unwrap()
}

#[test]
fn the_ldap_directory_finds_binds_sets_expires_and_unlocks_on_slapd() {
    let slapd = Slapd::start_with(TWINS);
    let dir = tempfile::tempdir().unwrap();
    let (_host, _cache, plugin) = ldap_host(&slapd, dir.path());
    let d = plugin.directory().unwrap();
    let c = ctx(PEOPLE);

    // Found by uid or by mail: the id is the DN, the attributes the
    // configured ones.
    let bob = find(&plugin, PEOPLE, "bob").unwrap();
    assert_eq!(bob.id, Slapd::user_dn("bob"));
    assert_eq!(bob.name, "bob");
    assert_eq!(
        bob.attributes,
        [
            ("mail".to_owned(), "bob@example.test".to_owned()),
            ("mobile".to_owned(), "+1 555 0100".to_owned()),
            ("displayName".to_owned(), "bob Example".to_owned()),
        ]
    );
    assert_eq!(find(&plugin, PEOPLE, "bob@example.test"), Some(bob.clone()));
    assert_eq!(find(&plugin, PEOPLE, "nobody"), None);
    // Two entries share the mail: unknown, not either of them.
    assert_eq!(find(&plugin, PEOPLE, "twin@example.test"), None);
    assert_eq!(
        find(&plugin, PEOPLE, "twin1").unwrap().id,
        Slapd::user_dn("twin1")
    );

    // The password binds; a wrong one and an empty one do not.
    let verify = |user: &User, pw: &str| {
        d.verify_password(&c, user, &Secret::from(pw))
            .unwrap()
            .unwrap()
    };
    assert!(verify(&bob, "bob-old-1"));
    assert!(!verify(&bob, "bob-wrong"));
    assert!(!verify(&bob, ""));

    // A reset that forces a change: the new password binds, the old does
    // not, and pwdReset is set (the test policy does not set it by itself).
    d.set_password(&c, &bob, &Secret::from("bob-new-2-harbour"), true)
        .unwrap()
        .unwrap();
    assert!(slapd.binds(&bob.id, "bob-new-2-harbour"));
    assert_eq!(slapd.bind(&bob.id, "bob-old-1").0, 49);
    assert_eq!(slapd.attribute(&bob.id, "pwdReset"), ["TRUE"]);
    // One that does not: pwdReset is gone.
    d.set_password(&c, &bob, &Secret::from("bob-new-3-lantern"), false)
        .unwrap()
        .unwrap();
    assert!(slapd.attribute(&bob.id, "pwdReset").is_empty());
    assert!(slapd.binds(&bob.id, "bob-new-3-lantern"));

    // Expire: pwdReset TRUE.
    let carol = find(&plugin, PEOPLE, "carol").unwrap();
    d.expire_password(&c, &carol).unwrap().unwrap();
    assert_eq!(slapd.attribute(&carol.id, "pwdReset"), ["TRUE"]);

    // Unlock: three bad binds lock dave out (ppolicy); unlock clears the
    // lock and his password binds again; unlocking an unlocked account is
    // fine.
    let dave = find(&plugin, PEOPLE, "dave").unwrap();
    for _ in 0..3 {
        assert_eq!(slapd.bind(&dave.id, "not-his").0, 49);
    }
    assert_eq!(slapd.attribute(&dave.id, "pwdAccountLockedTime").len(), 1);
    assert!(!slapd.binds(&dave.id, "dave-old-1"), "locked, yet it binds");
    d.unlock(&c, &dave).unwrap().unwrap();
    assert!(slapd.attribute(&dave.id, "pwdAccountLockedTime").is_empty());
    assert!(slapd.binds(&dave.id, "dave-old-1"));
    d.unlock(&c, &dave).unwrap().unwrap();

    assert!(d.reachable(&c).unwrap());

    // An entry that is gone: the plugin reports the directory's refusal.
    let ghost = User {
        id: Slapd::user_dn("ghost"),
        ..bob.clone()
    };
    match d.set_password(&c, &ghost, &Secret::from("whatever-long-1"), false) {
        Ok(Err(SetPasswordFailure::Other(PluginFailure::Refused(reason)))) => {
            assert!(reason.contains("LDAP result 32"), "{reason}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    // A base that does not exist is the admin's to fix.
    match d.find_user(&ctx("ou=nowhere,dc=example,dc=test"), "bob") {
        Ok(Err(PluginFailure::BadConfig(reason))) => {
            assert!(reason.contains("ou=nowhere,dc=example,dc=test"), "{reason}")
        }
        other => panic!("expected bad config, got {other:?}"),
    }
    assert!(slapd.stop());
}

#[test]
fn a_stopped_directory_is_unavailable_with_the_connection_named() {
    let slapd = Slapd::start();
    let dir = tempfile::tempdir().unwrap();
    let (_host, _cache, plugin) = ldap_host(&slapd, dir.path());
    let d = plugin.directory().unwrap();
    let c = ctx(PEOPLE);
    assert!(find(&plugin, PEOPLE, "erin").is_some());
    // The pooled connections break with the server: the next operation
    // says the directory is unavailable, with the connection named.
    let ports = (slapd.ldap_port, slapd.ldaps_port);
    assert!(slapd.stop());
    match d.find_user(&c, "erin") {
        Ok(Err(PluginFailure::Unavailable(reason))) => {
            assert!(reason.contains("connection `corp`"), "{reason}");
            assert!(
                reason.contains(&format!("ldaps://127.0.0.1:{}", ports.1)),
                "{reason}"
            );
        }
        other => panic!("expected unavailable, got {other:?}"),
    }
    assert!(!d.reachable(&c).unwrap());
}

#[test]
fn a_refused_bind_of_the_gateways_account_says_so() {
    let slapd = Slapd::start();
    let dir = tempfile::tempdir().unwrap();
    let wrong = "not-the-bind-password";
    let (_host, _cache, plugin) = ldap_host_with(&slapd, dir.path(), wrong);
    match plugin.directory().unwrap().find_user(&ctx(PEOPLE), "erin") {
        Ok(Err(PluginFailure::Refused(reason))) => {
            assert!(
                reason.contains(&format!(
                    "LDAP result 49: the bind as `{}` on {} (connection `corp`) was refused \
                     with LDAP result 49 (invalidCredentials)",
                    Slapd::BIND_DN,
                    slapd.ldaps_url()
                )),
                "{reason}"
            );
            assert!(!reason.contains(wrong), "{reason}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn hostile_names_never_find_another_entry() {
    let slapd = Slapd::start();
    let dir = tempfile::tempdir().unwrap();
    let (_host, _cache, plugin) = ldap_host(&slapd, dir.path());
    let solo = "ou=solo,dc=example,dc=test";
    // `solo` is the only entry under its base: a filter widened by a name
    // would find it.
    assert_eq!(
        find(&plugin, solo, "solo").unwrap().id,
        "uid=solo,ou=solo,dc=example,dc=test"
    );
    let long = "a".repeat(10_000);
    let stars = "*".repeat(10_000);
    for name in hostile_names()
        .iter()
        .map(String::as_str)
        .chain([long.as_str(), stars.as_str()])
    {
        assert_eq!(find(&plugin, solo, name), None, "{name:?} found an entry");
    }
}

/// Names that would widen or break an unescaped filter, or mean something
/// in a DN. (Not `" solo"`: LDAP's matching rules ignore leading and
/// trailing spaces, so that one is `solo` by the directory's own rules.)
fn hostile_names() -> Vec<String> {
    [
        "*",
        "s*",
        "*o*",
        "(",
        ")",
        "\\",
        "\0",
        "solo\0",
        ",",
        "=",
        "+",
        "#solo",
        "#",
        "*)(uid=*",
        "solo)(|(uid=*",
        "*)(|(objectClass=*",
        "\\2a",
        "solo,ou=solo",
        "uid=solo",
        "solo+cn=solo",
        "solo\\",
        "\\*",
    ]
    .map(str::to_owned)
    .to_vec()
}

// ----- whole flows through the HTTP API --------------------------------------

#[test]
fn a_reset_through_the_api_changes_the_ldap_password() {
    reset_through_the_api(false);
}

#[test]
fn a_reset_whose_workflow_forces_a_change_sets_pwd_reset() {
    reset_through_the_api(true);
}

/// A whole reset of alice through the HTTP API; with `must_change` the
/// workflow says `password.must_change: true`.
fn reset_through_the_api(must_change: bool) {
    let slapd = Slapd::start();
    let lab = Lab::new();
    let alice = Slapd::user_dn("alice");
    // An expired password before: the reset (no forced change) clears it.
    slapd.modify(&format!(
        "dn: {alice}\nchangetype: modify\nreplace: pwdReset\npwdReset: TRUE\n"
    ));
    let mut workflow = reset_workflow("reset", &directory_yaml("corp", PEOPLE, "5s"));
    if must_change {
        workflow = workflow.replace("max_length: 64 }", "max_length: 64, must_change: true }");
        assert!(workflow.contains("must_change: true"));
    }
    lab.workflow("reset", &workflow);
    let gw = lab.start(&connection_yaml(
        lab.path(),
        "corp",
        &slapd.ldaps_url(),
        &format!(", ca_file: {:?}", slapd.ca_file()),
    ));
    let p = Portal::new(&gw);
    let new = "CANARY-ldap-new-7c1e-harbour";

    let (status, started) = p.begin("reset", "alice");
    assert_eq!(status, 201, "{started}");
    assert_eq!(started["state"], "gate", "{started}");
    let token = started["token"].clone();
    let (status, view) = p.answer(&started, "value", "bob@example.test");
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["notice"]["code"], "not-verified", "{view}");
    let (_, view) = p.answer(&with_token(view, &token), "value", "Alice@Example.test");
    assert_eq!(view["state"], "awaiting-password", "{view}");
    let (status, view, _) = p.post(
        &format!("/v1/flows/{}/password", view["id"].as_str().unwrap()),
        token.as_str(),
        json!({ "password": new }),
    );
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["state"], "completed", "{view}");
    assert_eq!(view["receipt"]["directory"], "ok", "{view}");

    let logs = gw.logs();
    assert!(gw.stop());
    assert!(slapd.binds(&alice, new), "the new password does not bind");
    // Checked once: every failed bind counts towards the lockout.
    assert_eq!(
        slapd.bind(&alice, "alice-old-1").0,
        49,
        "the old one still binds"
    );
    if must_change {
        assert_eq!(slapd.attribute(&alice, "pwdReset"), ["TRUE"]);
    } else {
        assert!(slapd.attribute(&alice, "pwdReset").is_empty());
    }
    for secret in [new, Slapd::BIND_PASSWORD] {
        assert!(!logs.contains(secret), "a password in the log:\n{logs}");
    }
}

#[test]
fn enrollment_proves_the_current_password_by_a_bind_over_starttls() {
    let slapd = Slapd::start();
    let lab = Lab::new();
    let directory = directory_yaml("corp", PEOPLE, "5s");
    lab.workflow(
        "enroll",
        &format!(
            "version: 1\nname: enroll\npurpose: enrollment\nlimits: {{ idle: 5m, absolute: 15m }}\n{directory}\
             lockout:\n  plugin: example-lockout\n  config: {{ threshold: 3, lockout_ms: [900000], max_lockouts: 3 }}\n\
             gates:\n  - id: pet\n    plugin: example-question\n    enrollment: required\n    \
             config: {{ question: \"What was the name of your first pet?\" }}\n"
        ),
    );
    // `ldap://` with a CA: StartTLS, verified.
    let gw = lab.start(&connection_yaml(
        lab.path(),
        "corp",
        &slapd.ldap_url(),
        &format!(", ca_file: {:?}", slapd.ca_file()),
    ));
    let p = Portal::new(&gw);
    let (status, started) = p.begin("enroll", "frank");
    assert_eq!(status, 201, "{started}");
    assert_eq!(started["state"], "authenticating", "{started}");
    let id = started["id"].as_str().unwrap().to_owned();
    let token = started["token"].as_str().unwrap().to_owned();
    let auth = |pw: &str| {
        p.post(
            &format!("/v1/flows/{id}/authenticate"),
            Some(&token),
            json!({ "password": pw }),
        )
    };
    let (status, view, _) = auth("frank-wrong-1");
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["state"], "authenticating", "{view}");
    assert_eq!(view["notice"]["code"], "not-verified", "{view}");
    let (_, view, _) = auth("frank-old-1");
    assert_eq!(view["state"], "enrolling", "{view}");
    let view = with_token(view, &json!(token));
    let (_, view) = p.answer(&view, "answer", "Rex");
    assert_eq!(view["state"], "completed", "{view}");
    let logs = gw.logs();
    assert!(gw.stop());
    assert!(!logs.contains("frank-old-1"), "{logs}");
}

#[test]
fn a_certificate_from_another_ca_fails_with_a_clear_message_for_the_admin_only() {
    let slapd = Slapd::start();
    let lab = Lab::new();
    let other = Pki::new();
    lab.workflow(
        "reset",
        &reset_workflow("reset", &directory_yaml("corp", PEOPLE, "5s")),
    );
    lab.workflow(
        "starttls",
        &reset_workflow("starttls", &directory_yaml("tls", PEOPLE, "5s")),
    );
    let mut body = connection_yaml(
        lab.path(),
        "corp",
        &slapd.ldaps_url(),
        &format!(", ca_file: {:?}", other.ca_file()),
    );
    // StartTLS on the operating system's roots, which do not have the test CA.
    body.push_str(&format!(
        "  tls: {{ url: \"{}\", bind_dn: \"{}\", bind_secret: ldap-bind }}\n",
        slapd.ldap_url(),
        Slapd::BIND_DN
    ));
    let gw = lab.start(&body);
    let p = Portal::new(&gw);
    for (workflow, url) in [("reset", slapd.ldaps_url()), ("starttls", slapd.ldap_url())] {
        let connection = if workflow == "reset" { "corp" } else { "tls" };
        let (status, view, raw) = p.post(
            "/v1/flows",
            None,
            json!({"workflow": workflow, "user": "grace"}),
        );
        assert_eq!(status, 201, "{raw}");
        assert_eq!(view["state"], "failed", "{raw}");
        for word in ["TLS", "ldap", "certificate", "UnknownIssuer", "corp"] {
            assert!(!raw.contains(word), "{word} reached the user: {raw}");
        }
        // The other CA has the same name as the server's: its signature
        // does not verify. The system's roots do not know the CA at all.
        let reason = if workflow == "reset" {
            "BadSignature"
        } else {
            "UnknownIssuer"
        };
        let wanted = format!(
            "TLS handshake with {url} (connection `{connection}`) failed: invalid peer \
             certificate: {reason}; check `ca_file`"
        );
        let logs = gw.wait_for_log(&wanted);
        assert!(logs.contains(&wanted), "{wanted} not in:\n{logs}");
    }
    assert!(gw.stop());
}

#[test]
fn hostile_names_through_the_api_are_unknown_users_and_never_a_server_error() {
    let slapd = Slapd::start_with(TWINS);
    let lab = Lab::new();
    lab.workflow(
        "solo",
        &reset_workflow(
            "solo",
            &directory_yaml("corp", "ou=solo,dc=example,dc=test", "5s"),
        ),
    );
    lab.workflow(
        "people",
        &reset_workflow("people", &directory_yaml("corp", PEOPLE, "5s")),
    );
    let gw = lab.start(&connection_yaml(
        lab.path(),
        "corp",
        &slapd.ldaps_url(),
        &format!(", ca_file: {:?}", slapd.ca_file()),
    ));
    let p = Portal::new(&gw);
    // The control: `solo` is found, and its mail passes the gate.
    let (status, view) = p.begin("solo", "solo");
    assert_eq!(status, 201, "{view}");
    let (_, passed) = p.answer(&view, "value", "solo@example.test");
    assert_eq!(passed["state"], "awaiting-password", "{passed}");

    let mut names = hostile_names();
    names.push("a".repeat(10_000));
    names.push("*".repeat(10_000));
    for name in &names {
        let (status, view) = p.begin("solo", name);
        assert!(status < 500, "{name:?}: {status} {view}");
        if status != 201 {
            // Refused by the API (control characters, too long).
            assert_eq!(status, 400, "{name:?}: {view}");
            continue;
        }
        assert_eq!(view["state"], "gate", "{name:?}: {view}");
        // Had the name matched `solo`, its mail would pass the gate.
        let (status, next) = p.answer(&view, "value", "solo@example.test");
        assert_eq!(status, 200, "{name:?}: {next}");
        assert_eq!(
            next["notice"]["code"], "not-verified",
            "{name:?} passed as solo: {next}"
        );
    }
    // A name two entries share: unknown for the person, an error for the admin.
    let (status, view) = p.begin("people", "twin@example.test");
    assert_eq!(status, 201, "{view}");
    assert_eq!(view["state"], "gate", "{view}");
    let (_, next) = p.answer(&view, "value", "twin@example.test");
    assert_eq!(next["notice"]["code"], "not-verified", "{next}");
    let logs = gw.wait_for_log("several entries under");
    assert!(
        logs.contains(&format!("several entries under `{PEOPLE}` match")),
        "{logs}"
    );
    assert!(
        logs.contains("uid=twin1,ou=people,dc=example,dc=test and uid=twin2"),
        "{logs}"
    );
    assert!(gw.stop());
}

/// A TCP listener on loopback that accepts connections and never answers.
fn silent_listener() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming() {
            match stream {
                Ok(mut s) => {
                    // Read and drop whatever comes, answer nothing.
                    let mut sink = [0u8; 1024];
                    let _ = s.set_read_timeout(Some(Duration::from_millis(1)));
                    let _ = s.read(&mut sink);
                    held.push(s);
                }
                Err(_) => break,
            }
        }
    });
    port
}

/// `POST /v1/flows`; (status, body), on a connection of its own.
fn start_flow(addr: std::net::SocketAddr, workflow: &str, user: &str) -> (u16, String) {
    use std::io::Write as _;
    let body = json!({"workflow": workflow, "user": user}).to_string();
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    write!(
        s,
        "POST /v1/flows HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    resetgate_tests::status_and_body(&raw)
}

#[test]
fn a_directory_that_never_answers_ends_its_flows_at_the_deadline_and_slows_no_other_workflow() {
    let port = silent_listener();
    let lab = Lab::new();
    let pki = Pki::new();
    lab.workflow(
        "slow",
        &reset_workflow("slow", &directory_yaml("slow", PEOPLE, "3s")),
    );
    lab.workflow(
        "good",
        "version: 1\nname: good\ndirectory:\n  plugin: example-directory\n  config: { users: [{name: someone}] }\n\
         lockout:\n  plugin: example-lockout\ngates:\n  - id: code\n    plugin: static-answer\n    config: { answer: \"123456\" }\n",
    );
    let url = format!("ldaps://127.0.0.1:{port}");
    // The gateway starts although its directory does not answer.
    let gw = lab.start(&connection_yaml(
        lab.path(),
        "slow",
        &url,
        &format!(", ca_file: {:?}", pki.ca_file()),
    ));
    let addr = gw.addr;
    // Twice as many flows of the slow workflow as there are request
    // workers (one per core), of different users.
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let slow = (2 * cores).max(4);
    let (done, finished) = mpsc::channel();
    for i in 0..slow {
        let done = done.clone();
        std::thread::spawn(move || {
            let _ = done.send(("slow", start_flow(addr, "slow", &format!("user{i}"))));
        });
    }
    std::thread::sleep(Duration::from_millis(300));
    // Another workflow's flow is answered while they wait for the directory.
    let good = done.clone();
    std::thread::spawn(move || {
        let _ = good.send(("good", start_flow(addr, "good", "someone")));
    });
    let (first, (status, body)) = finished.recv_timeout(Duration::from_secs(60)).unwrap();
    assert_eq!((first, status), ("good", 201), "{body}");
    for _ in 0..slow {
        let (which, (status, body)) = finished.recv_timeout(Duration::from_secs(60)).unwrap();
        assert_eq!((which, status), ("slow", 201), "{body}");
        let view: Value = serde_json::from_str(&body).unwrap();
        // The generic end of a flow; nothing about the directory.
        assert_eq!(view["state"], "failed", "{body}");
        assert!(
            !body.contains("ldap") && !body.contains("127.0.0.1"),
            "{body}"
        );
    }
    let wanted = format!("no answer from {url} (connection `slow`)");
    let logs = gw.wait_for_log(&wanted);
    assert!(logs.contains(&wanted), "{logs}");
    assert!(gw.stop());
}
