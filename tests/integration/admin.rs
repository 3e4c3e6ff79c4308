//! Principals, roles and the admin API end to end: the real `resetgate`
//! binary on a loopback port with a portal key and one operator per role,
//! driven over HTTP and through `resetgate admin`.

use resetgate::api::roles;
use resetgate_tests::{Gateway, binary, write_config};
use serde_json::{Value, json};

/// Keys of the test's clients (the config holds only their digests).
const PORTAL_KEY: &str = "rgk_portal-key-for-the-admin-tests";
const HELPDESK_KEY: &str = "rgk_helpdesk-key-of-ann";
const AUDITOR_KEY: &str = "rgk_auditor-key-of-ida";
const ADMIN_KEY: &str = "rgk_admin-key-of-root";

/// A reset workflow over the example directory (alice, bob, carol) whose
/// lockout is permanent after three failures.
fn workflow(name: &str) -> String {
    resetgate_tests::fixtures::reset_workflow(name, "5m", &["alice", "bob", "carol"], false)
        .replace("max_lockouts: 3", "max_lockouts: 1")
}

/// A running gateway with a portal and three operators, and an HTTP client.
struct Site {
    gw: Gateway,
    agent: ureq::Agent,
    dir: tempfile::TempDir,
}

/// One response.
#[derive(Debug)]
struct Reply {
    status: u16,
    raw: String,
    json: Value,
}

impl Site {
    fn start() -> Site {
        let dir = tempfile::tempdir().unwrap();
        for sub in ["plugins", "workflows"] {
            std::fs::create_dir_all(dir.path().join(sub)).unwrap();
        }
        resetgate_tests::fixtures::copy_plugins(&dir.path().join("plugins"));
        std::fs::write(
            dir.path().join("workflows/admin-reset.yaml"),
            workflow("admin-reset"),
        )
        .unwrap();
        let d = |k: &str| resetgate_tests::pki::sha256(k.as_bytes());
        let config = write_config(
            dir.path(),
            &format!(
                "api:\n  keys:\n    web: {{ sha256: {} }}\n  operators:\n    \
                 ann: {{ role: helpdesk, sha256: {} }}\n    \
                 ida: {{ role: auditor, sha256: {} }}\n    \
                 root: {{ role: admin, sha256: {} }}\n  rate_limits:\n    \
                 anonymous: {{ per_minute: 100000, burst: 10000 }}\n",
                d(PORTAL_KEY),
                d(HELPDESK_KEY),
                d(AUDITOR_KEY),
                d(ADMIN_KEY)
            ),
        );
        // The listener's debug lines say why a connection ended.
        let gw = Gateway::start_config_logging(&config, "info,resetgate::listen=debug");
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(std::time::Duration::from_secs(30)))
            .build()
            .new_agent();
        Site { gw, agent, dir }
    }

    fn send(&self, method: &str, path: &str, key: Option<&str>, body: Option<Value>) -> Reply {
        let mut req = ureq::http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.gw.base_url()));
        if let Some(k) = key {
            req = req.header("X-Api-Key", k);
        }
        let result = match body {
            Some(b) => self.agent.run(
                req.header("Content-Type", "application/json")
                    .body(b.to_string())
                    .unwrap(),
            ),
            None => self.agent.run(req.body(()).unwrap()),
        };
        // On a failure, what the gateway logged says why (a connection the
        // gateway closed under the client, as seen once under full load).
        let mut response = result.unwrap_or_else(|e| {
            panic!(
                "{method} {path}: {e}\n--- gateway log ---\n{}",
                self.gw.logs()
            )
        });
        let status = response.status().as_u16();
        let raw = response.body_mut().read_to_string().unwrap_or_default();
        let json = serde_json::from_str(&raw).unwrap_or(Value::Null);
        Reply { status, raw, json }
    }

    /// Starts a flow for `user` as the portal and answers its first gate
    /// with `answer` three times, or until it ends; returns the last view.
    fn fail_three_times(&self, user: &str) -> Value {
        let r = self.send(
            "POST",
            "/v1/flows",
            Some(PORTAL_KEY),
            Some(json!({"workflow": "admin-reset", "user": user})),
        );
        assert_eq!(r.status, 201, "{}", r.raw);
        let (id, token) = (
            r.json["id"].as_str().unwrap(),
            r.json["token"].as_str().unwrap(),
        );
        let mut view = r.json.clone();
        for _ in 0..3 {
            let r = self.answer(id, token, &view, "000000");
            assert_eq!(r.status, 200, "{}", r.raw);
            view = r.json;
        }
        view
    }

    fn answer(&self, id: &str, token: &str, view: &Value, answer: &str) -> Reply {
        let url = format!("{}/v1/flows/{id}/answers", self.gw.base_url());
        let body = json!({
            "gate": view["prompt"]["gate"],
            "round": view["prompt"]["round"],
            "answers": { "answer": answer },
        });
        let req = ureq::http::Request::builder()
            .method("POST")
            .uri(url)
            .header("X-Api-Key", PORTAL_KEY)
            .header("Authorization", format!("Bearer {token}"))
            .header("Content-Type", "application/json")
            .body(body.to_string())
            .unwrap();
        let mut response = self.agent.run(req).unwrap();
        let status = response.status().as_u16();
        let raw = response.body_mut().read_to_string().unwrap();
        let json = serde_json::from_str(&raw).unwrap_or(Value::Null);
        Reply { status, raw, json }
    }

    /// `resetgate admin ARGS...` against this gateway with `key`; returns
    /// (exit status, stdout, stderr).
    fn cli(&self, key: &str, args: &[&str], stdin: &str) -> (i32, String, String) {
        use std::io::Write as _;
        let mut child = std::process::Command::new(binary())
            .arg("admin")
            .args(args)
            .env("RESETGATE_URL", self.gw.base_url())
            .env("RESETGATE_ADMIN_KEY", key)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

fn assert_problem(r: &Reply, status: u16, code: &str) {
    assert_eq!(r.status, status, "{}", r.raw);
    assert_eq!(r.json["code"], code, "{}", r.raw);
}

/// The route table test, against the real binary: every route the router
/// serves (the list it is built from) is asked by every kind of principal,
/// and answers `403 forbidden` exactly where the role table says no. A
/// portal key gets 403 on every admin route.
#[test]
fn every_route_answers_every_principal_as_the_role_table_says() {
    let site = Site::start();
    let principals: [(&str, Option<&str>, resetgate::api::Principal); 5] = [
        ("anonymous", None, resetgate::api::Principal::anonymous()),
        (
            "portal",
            Some(PORTAL_KEY),
            resetgate::api::Principal::portal("web"),
        ),
        (
            "helpdesk",
            Some(HELPDESK_KEY),
            resetgate::api::Principal::operator("ann", resetgate::api::Role::Helpdesk),
        ),
        (
            "auditor",
            Some(AUDITOR_KEY),
            resetgate::api::Principal::operator("ida", resetgate::api::Role::Auditor),
        ),
        (
            "admin",
            Some(ADMIN_KEY),
            resetgate::api::Principal::operator("root", resetgate::api::Role::Admin),
        ),
    ];
    let routes = resetgate::api::routes();
    let mut admin_routes = 0;
    for (method, path) in &routes {
        let rule = roles::rule_for(method.as_str(), path)
            .unwrap_or_else(|| panic!("{method} {path} has no rule in api::roles::RULES"));
        let url = path
            .replace("{id}", &"0".repeat(32))
            .replace("{user}", "nobody")
            .replace("{name}", "nobody");
        if path.starts_with("/v1/admin") {
            admin_routes += 1;
        }
        for (who, key, principal) in &principals {
            let body = (method.as_str() == "POST").then(|| json!({}));
            let r = site.send(method.as_str(), &url, *key, body);
            if rule.access.allows(principal) {
                assert!(
                    r.status != 403 && r.status != 401,
                    "{who} may use {method} {path} but got {}",
                    r.raw
                );
            } else {
                assert_problem(&r, 403, "forbidden");
                if *who == "portal" {
                    assert!(!path.starts_with("/v1/flows"), "{path}");
                }
            }
        }
    }
    assert!(admin_routes >= 14, "{routes:?}");
    // A portal key never reaches an operator route, whatever the method.
    for (method, path) in routes.iter().filter(|(_, p)| p.starts_with("/v1/admin")) {
        let url = path.replace("{user}", "alice").replace("{name}", "alice");
        let r = site.send(method.as_str(), &url, Some(PORTAL_KEY), None);
        assert_problem(&r, 403, "forbidden");
    }
    // A key nobody was given is refused before any rule.
    assert_problem(
        &site.send("GET", "/v1/admin/whoami", Some("rgk_nobody"), None),
        401,
        "invalid-api-key",
    );
    let me = site.send("GET", "/v1/admin/whoami", Some(HELPDESK_KEY), None);
    assert_eq!(me.json, json!({"name": "ann", "role": "helpdesk"}));
    for key in [PORTAL_KEY, HELPDESK_KEY, AUDITOR_KEY, ADMIN_KEY] {
        assert!(!site.gw.logs().contains(key), "a key was logged");
    }
}

#[test]
fn a_helpdesk_operator_ends_a_permanent_lockout_and_the_audit_log_names_them() {
    let site = Site::start();
    let view = site.fail_three_times("alice");
    assert_eq!(view["state"], "locked", "{view}");
    let lockout = site.send("GET", "/v1/admin/lockouts/alice", Some(HELPDESK_KEY), None);
    assert_eq!(lockout.status, 200, "{}", lockout.raw);
    assert_eq!(lockout.json["locked"], true, "{}", lockout.raw);
    let w = &lockout.json["workflows"][0];
    assert_eq!(w["workflow"], "admin-reset");
    assert_eq!(w["state"], "locked-permanently", "{}", lockout.raw);
    assert_eq!(w["known"], true);
    assert_eq!(w["failures"].as_array().unwrap().len(), 3);

    // An auditor reads the audit log but cannot unlock.
    let refused = site.send(
        "DELETE",
        "/v1/admin/lockouts/alice",
        Some(AUDITOR_KEY),
        None,
    );
    assert_problem(&refused, 403, "forbidden");
    let still = site.send("GET", "/v1/admin/lockouts/alice", Some(ADMIN_KEY), None);
    assert_eq!(still.json["workflows"][0]["state"], "locked-permanently");

    // The helpdesk unlocks: the failures go, the directory is asked too.
    let unlocked = site.send(
        "DELETE",
        "/v1/admin/lockouts/alice",
        Some(HELPDESK_KEY),
        None,
    );
    assert_eq!(unlocked.status, 200, "{}", unlocked.raw);
    assert_eq!(unlocked.json["failures_cleared"], 3, "{}", unlocked.raw);
    assert_eq!(
        unlocked.json["directories"],
        json!([{"directory": "example-directory", "workflow": "admin-reset", "result": "ok"}])
    );
    // The example directory logs its `unlock` of the user's id.
    let logs = site.gw.wait_for_log("uid=alice,ou=example unlocked");
    assert!(logs.contains("uid=alice,ou=example unlocked"), "{logs}");
    let after = site.send("GET", "/v1/admin/lockouts/alice", Some(HELPDESK_KEY), None);
    assert_eq!(after.json["locked"], false, "{}", after.raw);
    assert_eq!(after.json["workflows"][0]["state"], "allowed");

    // And alice gets through her gate again.
    let r = site.send(
        "POST",
        "/v1/flows",
        Some(PORTAL_KEY),
        Some(json!({"workflow": "admin-reset", "user": "alice"})),
    );
    let (id, token) = (
        r.json["id"].as_str().unwrap(),
        r.json["token"].as_str().unwrap(),
    );
    let r = site.answer(id, token, &r.json, "123456");
    assert_eq!(r.json["prompt"]["gate"], "second", "{}", r.raw);

    // The audit log names the operator, by user and by kind.
    let audit = site.send(
        "GET",
        "/v1/admin/audit?user=alice&kind=operator.unlock",
        Some(AUDITOR_KEY),
        None,
    );
    assert_eq!(audit.status, 200, "{}", audit.raw);
    let entries = audit.json["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "{}", audit.raw);
    let record = &entries[0]["record"];
    assert_eq!(record["kind"], "operator.unlock");
    assert_eq!(record["detail"]["operator"], "ann");
    assert_eq!(record["detail"]["role"], "helpdesk");
    assert_eq!(record["detail"]["failures_cleared"], 3);
    // Under the same user key as her lockout.
    let flows = site.send(
        "GET",
        "/v1/admin/audit?user=alice&kind=lockout.locked",
        Some(AUDITOR_KEY),
        None,
    );
    assert_eq!(flows.json["entries"][0]["record"]["user"], record["user"]);

    // Her recent flows, newest first, with outcomes.
    let flows = site.send(
        "GET",
        "/v1/admin/flows?user=alice",
        Some(HELPDESK_KEY),
        None,
    );
    assert_eq!(flows.status, 200, "{}", flows.raw);
    let list = flows.json["flows"].as_array().unwrap();
    assert_eq!(list.len(), 2, "{}", flows.raw);
    assert_eq!(list[0]["outcome"], "in-progress", "{}", flows.raw);
    assert_eq!(list[1]["locked_out"], true, "{}", flows.raw);
    // Nobody else's.
    let bob = site.send("GET", "/v1/admin/flows?user=bob", Some(HELPDESK_KEY), None);
    assert_eq!(bob.json["flows"], json!([]), "{}", bob.raw);
}

#[test]
fn the_admin_cli_manages_local_users_lockouts_the_audit_log_and_reloads() {
    let site = Site::start();
    let canary = "canary-password-7c1e5f";
    // Users: add (password from stdin), list, remove.
    let (status, out, err) = site.cli(
        ADMIN_KEY,
        &[
            "users",
            "add",
            "Erin",
            "--attr",
            "employee_id=4711",
            "--password-stdin",
        ],
        &format!("{canary}\n"),
    );
    assert_eq!(status, 0, "{out}{err}");
    assert!(out.starts_with("added user erin (u-"), "{out}");
    let (status, out, err) = site.cli(ADMIN_KEY, &["users", "list", "--json"], "");
    assert_eq!(status, 0, "{err}");
    let listed: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(listed["users"][0]["name"], "erin", "{out}");
    assert_eq!(listed["users"][0]["attributes"]["employee_id"], "4711");
    assert_eq!(listed["users"][0]["has_password"], true);
    let (status, _, err) = site.cli(
        ADMIN_KEY,
        &["users", "add", "erin", "--random-password"],
        "",
    );
    assert_eq!(status, 5, "an existing user: {err}");
    assert!(
        err.starts_with("error: A local user of that name exists"),
        "{err}"
    );
    let (status, out, err) = site.cli(ADMIN_KEY, &["users", "remove", "erin"], "");
    assert_eq!(status, 0, "{out}{err}");
    let (status, _, err) = site.cli(ADMIN_KEY, &["users", "remove", "erin"], "");
    assert_eq!(status, 5, "{err}");
    let (_, out, _) = site.cli(ADMIN_KEY, &["users", "list"], "");
    assert!(out.is_empty(), "{out}");
    // The helpdesk may not manage users; its status says so.
    let (status, _, err) = site.cli(HELPDESK_KEY, &["users", "list"], "");
    assert_eq!(status, 4, "{err}");
    assert!(
        err.contains("help: this needs an operator whose role allows it"),
        "{err}"
    );

    // Lockout: show and clear.
    site.fail_three_times("bob");
    let (status, out, err) = site.cli(HELPDESK_KEY, &["lockout", "show", "bob"], "");
    assert_eq!(status, 0, "{err}");
    assert_eq!(out, "admin-reset  locked-permanently  failures:3\n");
    let (status, out, err) = site.cli(HELPDESK_KEY, &["lockout", "clear", "bob"], "");
    assert_eq!(status, 0, "{err}");
    assert_eq!(
        out,
        "cleared 3 failure(s) of bob\ndirectory example-directory (admin-reset): unlock ok\n"
    );
    let (_, out, _) = site.cli(HELPDESK_KEY, &["lockout", "show", "bob"], "");
    assert_eq!(out, "admin-reset  allowed  failures:0\n");

    // Audit: query, export, verify.
    let (status, out, err) = site.cli(
        AUDITOR_KEY,
        &[
            "audit",
            "query",
            "--user",
            "bob",
            "--kind",
            "operator.unlock",
            "--json",
        ],
        "",
    );
    assert_eq!(status, 0, "{err}");
    let page: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(page["entries"][0]["record"]["detail"]["operator"], "ann");
    let export = site.dir.path().join("audit.jsonl");
    let (status, out, err) = site.cli(
        AUDITOR_KEY,
        &["audit", "export", "--out", export.to_str().unwrap()],
        "",
    );
    assert_eq!(status, 0, "{out}{err}");
    let lines: Vec<Value> = std::fs::read_to_string(&export)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let kinds: Vec<&str> = lines
        .iter()
        .map(|e| e["record"]["kind"].as_str().unwrap())
        .collect();
    for kind in [
        "operator.local-user-add",
        "operator.local-user-remove",
        "flow.started",
        "lockout.locked",
        "operator.unlock",
    ] {
        assert!(kinds.contains(&kind), "{kind} not in {kinds:?}");
    }
    let positions: Vec<u64> = lines
        .iter()
        .map(|e| e["position"].as_u64().unwrap())
        .collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{positions:?}");
    let (status, out, err) = site.cli(AUDITOR_KEY, &["audit", "verify"], "");
    assert_eq!(status, 0, "{err}");
    assert!(
        out.ends_with(&format!("verified {} entries\n", lines.len())),
        "{out}"
    );

    // Reload with a broken file: refused, the running version kept.
    let file = site.dir.path().join("workflows/admin-reset.yaml");
    let before = site.send("GET", "/v1/admin/workflows", Some(ADMIN_KEY), None);
    let version = before.json["workflows"][0]["version"].clone();
    std::fs::write(
        &file,
        "version: 1\nname: admin-reset\npurpose: reset\nbogus: 1\n",
    )
    .unwrap();
    let (status, out, err) = site.cli(ADMIN_KEY, &["workflows", "reload"], "");
    assert_eq!(status, 1, "{out}{err}");
    assert!(
        out.contains("admin-reset.yaml:4:1: error[unknown-field]"),
        "{out}"
    );
    assert!(
        err.contains(
            "reload refused 1 file(s) with errors; kept the running version of: admin-reset"
        ),
        "{err}"
    );
    let after = site.send("GET", "/v1/admin/workflows", Some(ADMIN_KEY), None);
    assert_eq!(after.json["workflows"][0]["version"], version);
    // The old version still serves flows.
    let r = site.send(
        "POST",
        "/v1/flows",
        Some(PORTAL_KEY),
        Some(json!({"workflow": "admin-reset", "user": "carol"})),
    );
    assert_eq!(r.status, 201, "{}", r.raw);
    // Validate names the same mistake without changing anything; a good
    // file validates and then reloads.
    let (status, out, _) = site.cli(
        ADMIN_KEY,
        &["workflows", "validate", file.to_str().unwrap()],
        "",
    );
    assert_eq!(status, 1);
    assert!(
        out.contains("admin-reset.yaml:4:1: error[unknown-field]"),
        "{out}"
    );
    std::fs::write(
        &file,
        workflow("admin-reset").replace("threshold: 3", "threshold: 4"),
    )
    .unwrap();
    let (status, out, err) = site.cli(
        ADMIN_KEY,
        &["workflows", "validate", file.to_str().unwrap()],
        "",
    );
    assert_eq!(status, 0, "{out}{err}");
    assert!(out.starts_with("valid: workflow admin-reset"), "{out}");
    let (status, out, err) = site.cli(ADMIN_KEY, &["workflows", "reload"], "");
    assert_eq!(status, 0, "{out}{err}");
    let reloaded = site.send("GET", "/v1/admin/workflows", Some(ADMIN_KEY), None);
    assert_ne!(reloaded.json["workflows"][0]["version"], version);
    let reloads = site.send(
        "GET",
        "/v1/admin/audit?kind=operator.reload",
        Some(AUDITOR_KEY),
        None,
    );
    assert_eq!(
        reloads.json["entries"].as_array().unwrap().len(),
        2,
        "{}",
        reloads.raw
    );

    // Plugins: sha256, kind, version and call counts.
    let (status, out, err) = site.cli(ADMIN_KEY, &["plugins", "--json"], "");
    assert_eq!(status, 0, "{err}");
    let plugins: Value = serde_json::from_str(&out).unwrap();
    let gate = plugins["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "static-answer")
        .unwrap();
    assert_eq!(gate["kind"], "gate");
    assert_eq!(
        gate["sha256"],
        resetgate_tests::sha256_of(&resetgate_tests::wasm("static-answer"))
    );

    // No password or key in any log line or in the store in clear.
    let logs = site.gw.logs();
    for secret in [canary, ADMIN_KEY, HELPDESK_KEY, AUDITOR_KEY] {
        assert!(!logs.contains(secret), "{secret} was logged");
    }
    resetgate_tests::assert_not_in_files(&site.dir.path().join("data"), canary);
}

/// Without a key the CLI says what to set; an unreachable gateway is
/// status 3.
#[test]
fn the_admin_cli_explains_a_missing_key_and_an_unreachable_gateway() {
    let (ok, _, err) = resetgate_tests::run_cli_env(
        &["admin", "whoami"],
        &[
            ("RESETGATE_ADMIN_KEY", "".as_ref()),
            ("RESETGATE_URL", "http://127.0.0.1:9".as_ref()),
        ],
    );
    assert!(!ok);
    assert!(
        err.starts_with("error: no operator key: set RESETGATE_ADMIN_KEY"),
        "{err}"
    );
    let out = std::process::Command::new(binary())
        .args(["admin", "whoami", "--url", "http://127.0.0.1:9"])
        .env("RESETGATE_ADMIN_KEY", "rgk_x")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with("error: cannot reach the gateway"), "{err}");
    assert_eq!(err.matches("error:").count(), 1, "{err}");
}

/// `resetgate users` and `resetgate audit verify` on a store a running
/// gateway holds point to `resetgate admin`.
#[test]
fn offline_commands_point_to_admin_while_the_gateway_runs() {
    let site = Site::start();
    let config = site.dir.path().join("gateway.yaml");
    let config = config.to_str().unwrap();
    let (ok, _, err) = resetgate_tests::run_cli(&["users", "list", "--config", config]);
    assert!(!ok);
    assert!(err.contains("use `resetgate admin users ...`"), "{err}");
    let (ok, _, err) = resetgate_tests::run_cli(&["audit", "verify", "--config", config]);
    assert!(!ok);
    assert!(
        err.contains("`resetgate admin audit verify|query|export`"),
        "{err}"
    );
}

/// An operator identified by a client certificate (by its sha256 or its
/// subject), through `resetgate admin` over HTTPS; the same certificate is
/// a portal where no operator is mapped to it.
#[test]
fn a_client_certificate_identifies_an_operator() {
    let pki = resetgate_tests::pki::Pki::new();
    for (matcher, expect_operator) in [
        (format!("{{ sha256: {} }}", pki.client_cert_sha256()), true),
        (
            "{ subject: \"CN=test-portal,O=resetgate tests\" }".to_owned(),
            true,
        ),
        ("{ subject: \"CN=someone-else\" }".to_owned(), false),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let config = write_config(
            dir.path(),
            &format!(
                "{}api:\n  operators:\n    ivy: {{ role: auditor, client_certificate: {matcher} }}\n",
                pki.tls_yaml(Some("optional"))
            ),
        );
        let gw = Gateway::start_config(&config, &[]);
        let out = std::process::Command::new(binary())
            .args(["admin", "whoami", "--url", &gw.base_url(), "--ca-file"])
            .arg(pki.ca_file())
            .arg("--client-cert")
            .arg(pki.client_cert_file())
            .arg("--client-key")
            .arg(pki.client_key_file())
            .env_remove("RESETGATE_ADMIN_KEY")
            .output()
            .unwrap();
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        if expect_operator {
            assert_eq!(out.status.code(), Some(0), "{matcher}: {stderr}");
            assert_eq!(stdout, "ivy (auditor)\n");
        } else {
            // A portal's certificate: refused on every operator route.
            assert_eq!(out.status.code(), Some(4), "{matcher}: {stdout}{stderr}");
            assert!(
                stderr.starts_with("error: This client may not use this route"),
                "{stderr}"
            );
        }
    }
}

#[test]
fn a_backup_taken_under_load_restores_every_acknowledged_flow() {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, Ordering};
    let site = Site::start();
    let stop = AtomicBool::new(false);
    let acknowledged: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let file = site.dir.path().join("backup.jsonl");
    let before = std::thread::scope(|scope| {
        for t in 0..4 {
            let (site, stop, acknowledged) = (&site, &stop, &acknowledged);
            scope.spawn(move || {
                // A user of its own each time: a user's starts are rate
                // limited. A refused start (the portal's rate) is not
                // acknowledged, and is tried again.
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    let user = format!("load-{t}-{i}");
                    let r = site.send(
                        "POST",
                        "/v1/flows",
                        Some(PORTAL_KEY),
                        Some(json!({"workflow": "admin-reset", "user": user})),
                    );
                    if r.status == 201 {
                        acknowledged
                            .lock()
                            .unwrap()
                            .push(r.json["id"].as_str().unwrap().to_owned());
                        i += 1;
                    } else {
                        assert_eq!(r.status, 429, "{}", r.raw);
                        std::thread::sleep(std::time::Duration::from_millis(100));
                    }
                }
            });
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while acknowledged.lock().unwrap().len() < 40 {
            if std::time::Instant::now() > deadline {
                stop.store(true, Ordering::Relaxed);
                panic!("the load made no 40 flows in a minute");
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        // Everything acknowledged before the backup starts must be in it.
        let before = acknowledged.lock().unwrap().clone();
        let (status, out, err) = site.cli(ADMIN_KEY, &["backup", "--to", path(&file)], "");
        assert_eq!(status, 0, "{out}{err}");
        assert!(
            out.starts_with("backed up the gateway's sled store (schema 7) to "),
            "{out}"
        );
        // An auditor may read the log, not take the store.
        let refused = site.cli(AUDITOR_KEY, &["backup", "--to", path(&file)], "");
        assert_ne!(refused.0, 0);
        std::thread::sleep(std::time::Duration::from_millis(200));
        stop.store(true, Ordering::Relaxed);
        before
    });

    let restored = site.dir.path().join("restored");
    let out = std::process::Command::new(binary())
        .args([
            "restore",
            "--from",
            path(&file),
            "--data-dir",
            path(&restored),
        ])
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("audit log intact: "), "{stdout}");
    let store =
        resetgate::store::open(&resetgate::store::StoreSpec::Sled { dir: restored }).unwrap();
    for id in &before {
        assert!(store.flow(id).unwrap().is_some(), "flow {id} is missing");
    }
    // The backup itself was audited, with the operator's name.
    let entries = store.audit().entries(0, usize::MAX).unwrap();
    assert!(
        entries
            .iter()
            .any(|e| e.record.kind == "operator.backup" && e.record.detail["operator"] == "root"),
        "no operator.backup entry"
    );
    store.close();
}

fn path(p: &std::path::Path) -> &str {
    p.to_str().unwrap()
}
