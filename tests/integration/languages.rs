//! The contract from other languages than the Rust SDK: a gate built with
//! plain `wit-bindgen` (`tests/plugins/plain-gate`) and one in JavaScript
//! built with componentize-js (`tests/js-gate`, built by `cargo xtask test`
//! into `target/js-gate/`), both against the contract's own `gate` world.
//! Each is the gate of a workflow over `local-users`, driven through a whole
//! reset on the real binary over its HTTP API.

use std::path::{Path, PathBuf};

use std::sync::Arc;
use std::time::Duration;

use resetgate::contract::CallContext;
use resetgate::plugin::{Grants, LoadSpec};
use resetgate::secret::Secret;
use resetgate::store::SledStore;
use resetgate_tests::{Gateway, host, root, wasm};
use serde_json::{Value, json};

/// The JavaScript gate as `cargo xtask js-gate` (and `cargo xtask test`) builds it.
fn js_gate() -> PathBuf {
    let path = root().join("target/js-gate/phone-digits.wasm");
    assert!(
        path.exists(),
        "{} is missing: `cargo xtask test` builds it (or `cargo xtask js-gate`; needs Node.js 20 and npm)",
        path.display()
    );
    path
}

/// The compiled-plugin cache the gateways of these tests share, in
/// `target/`: the JavaScript gate is 13 MB of wasm whose first compile
/// takes tens of seconds in a debug build, so the suite pays it once, and
/// later runs not at all (the cache is keyed by the component's hash).
fn shared_cache() -> PathBuf {
    use std::os::unix::fs::DirBuilderExt;
    let dir = root().join("target/js-gate/plugin-cache");
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .unwrap();
    dir
}

/// A reset workflow named `name`: `local-users` as directory, the FIM
/// lockout (threshold 3), one gate `gate` of plugin `plugin` with `config`
/// (YAML flow mapping), and a password of 12 to 64 characters.
fn workflow(name: &str, plugin: &str, config: &str) -> String {
    format!(
        r#"version: 1
name: {name}
purpose: reset
limits: {{ idle: 5m, absolute: 15m }}
directory:
  plugin: local-users
  grants: {{ kv: true }}
  limits: {{ wall_time: 5s }}
lockout:
  plugin: example-lockout
  config: {{ threshold: 3, lockout_ms: [900000], max_lockouts: 3 }}
gates:
  - id: gate
    plugin: {plugin}
    enrollment: none
    config: {config}
password:
  min_length: 12
  max_length: 64
  reject_user_name: true
"#
    )
}

/// A gateway's folders: plugins (`local-users`, `example-lockout` and the
/// gate as `NAME.wasm`), one workflow, and a data folder whose plugin cache
/// is the shared one.
struct Setup {
    dir: tempfile::TempDir,
}

impl Setup {
    fn new(gate_name: &str, gate: &Path, workflow: &str) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        for sub in ["plugins", "workflows", "data"] {
            std::fs::create_dir_all(dir.path().join(sub)).unwrap();
        }
        let plugins = dir.path().join("plugins");
        for name in ["local-users", "example-lockout"] {
            std::fs::copy(wasm(name), plugins.join(format!("{name}.wasm"))).unwrap();
        }
        std::fs::copy(gate, plugins.join(format!("{gate_name}.wasm"))).unwrap();
        std::fs::write(dir.path().join("workflows/reset.yaml"), workflow).unwrap();
        std::os::unix::fs::symlink(shared_cache(), dir.path().join("data/plugin-cache")).unwrap();
        Setup { dir }
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// `resetgate users add NAME --attr ATTR --password-stdin` on the data folder.
    fn add_user(&self, name: &str, attr: &str, password: &str) {
        let data = self.data();
        resetgate_tests::fixtures::users_add(
            name,
            password,
            &[
                "--attr".as_ref(),
                attr.as_ref(),
                "--data-dir".as_ref(),
                data.as_os_str(),
            ],
        );
    }

    fn start(&self) -> Gateway {
        Gateway::start_with(
            &self.data(),
            &self.dir.path().join("plugins"),
            &self.dir.path().join("workflows"),
        )
    }

    /// Whether `password` is `name`'s password in `local-users` now (the
    /// gateway stopped): asks the directory plugin itself, on the data folder.
    fn is_password(&self, name: &str, password: &str) -> bool {
        let (host, _cache) = host();
        let store = Arc::new(SledStore::open(&self.data()).unwrap());
        host.set_capabilities(Arc::new(resetgate::plugin::Capabilities::with_kv(
            store.clone(),
        )));
        let plugin = host
            .load(
                &self.dir.path().join("plugins/local-users.wasm"),
                &LoadSpec {
                    kind: Some(resetgate::contract::PluginKind::Directory),
                    grants: Grants {
                        kv: true,
                        ..Grants::default()
                    },
                    ..LoadSpec::default()
                },
            )
            .unwrap();
        let dir = plugin.directory().unwrap();
        let ctx = CallContext {
            flow_id: "check".into(),
            workflow: "reset".into(),
            step: "directory".into(),
            config: "{}".into(),
            now_ms: 1_763_856_000_000,
            language: String::new(),
        };
        let user = dir.find_user(&ctx, name).unwrap().unwrap().unwrap();
        let ok = dir
            .verify_password(&ctx, &user, &Secret::from(password))
            .unwrap()
            .unwrap();
        drop(plugin);
        store.close();
        ok
    }
}

/// A portal's client over plain HTTP to a test gateway.
struct Portal<'a> {
    gw: &'a Gateway,
    agent: ureq::Agent,
}

impl Portal<'_> {
    fn new(gw: &Gateway) -> Portal<'_> {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .new_agent();
        Portal { gw, agent }
    }

    /// POSTs `body` with `token` as the bearer; (status, JSON body).
    fn post(&self, path: &str, token: Option<&str>, body: Value) -> (u16, Value) {
        let mut req = ureq::http::Request::builder()
            .method("POST")
            .uri(format!("{}{path}", self.gw.base_url()))
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
        (status, serde_json::from_str(&raw).unwrap_or(Value::Null))
    }
}

/// Alice's password before the reset.
const OLD: &str = "CANARY-old-3f9d-kettle";

/// The reset the two gates go through: `alice` starts a flow, a wrong
/// answer fails (the flow stays at the gate), the right one passes, the new
/// password is set, and it is then alice's password in the directory.
/// Returns what the gateway logged.
fn reset_through_the_api(setup: &Setup, field: &str, wrong: &str, right: &str) -> String {
    let new = "CANARY-new-b81c-teapot-lantern";
    let gw = setup.start();
    let p = Portal::new(&gw);

    let (status, started) = p.post(
        "/v1/flows",
        None,
        json!({"workflow": "reset", "user": "alice"}),
    );
    assert_eq!(status, 201, "{started}");
    assert_eq!(started["state"], "gate", "{started}");
    assert_eq!(started["prompt"]["gate"], "gate");
    assert_eq!(started["prompt"]["fields"][0]["name"], field, "{started}");
    let id = started["id"].as_str().unwrap().to_owned();
    let token = started["token"].as_str().unwrap().to_owned();
    let answer = |view: &Value, value: &str| {
        p.post(
            &format!("/v1/flows/{id}/answers"),
            Some(&token),
            json!({
                "gate": view["prompt"]["gate"],
                "round": view["prompt"]["round"],
                "answers": { field: value },
            }),
        )
    };

    let (status, view) = answer(&started, wrong);
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["notice"]["code"], "not-verified", "{view}");
    assert_eq!(view["state"], "gate", "{view}");

    let (status, view) = answer(&view, right);
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["state"], "awaiting-password", "{view}");

    let (status, view) = p.post(
        &format!("/v1/flows/{id}/password"),
        Some(&token),
        json!({"password": new}),
    );
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["state"], "completed", "{view}");
    assert_eq!(view["receipt"]["directory"], "ok", "{view}");

    let logs = gw.logs();
    assert!(
        !logs.contains(new) && !logs.contains(right),
        "a secret in the log:\n{logs}"
    );
    assert!(gw.stop());
    assert!(
        setup.is_password("alice", new),
        "the new password is refused"
    );
    assert!(
        !setup.is_password("alice", OLD),
        "the old password still works"
    );
    logs
}

#[test]
fn a_reset_through_a_gate_built_with_plain_wit_bindgen() {
    let setup = Setup::new(
        "plain-gate",
        &wasm("plain-gate"),
        &workflow(
            "reset",
            "plain-gate",
            "{ attribute: employee_id, label: Employee ID, kind: code }",
        ),
    );
    setup.add_user("alice", "employee_id=E-4711", OLD);
    let logs = reset_through_the_api(&setup, "value", "E-4712", " e-4711 ");
    // wit-bindgen imports only what the code calls: nothing to warn about.
    assert!(!logs.contains("warning["), "{logs}");
}

#[test]
fn a_reset_through_a_gate_written_in_javascript() {
    let setup = Setup::new(
        "phone-digits",
        &js_gate(),
        &workflow(
            "reset",
            "phone-digits",
            "{ label: Your phone, attribute: mobile, digits: 4 }",
        ),
    );
    setup.add_user("alice", "mobile=+49 170 555 0142", OLD);
    let logs = reset_through_the_api(&setup, "digits", "0143", "01-42");
    // componentize-js keeps every import of the world: the gateway links the
    // capabilities the step does not grant to stand-ins and says so at load.
    assert!(
        logs.contains(
            "warning[ungranted-import]: plugin `phone-digits` imports `http`, `ldap`, `secrets`, \
             `commands`, `probe`, `kv`, which `gates[0]` does not grant"
        ),
        "{logs}"
    );
    // The gate's own line through `log` on the wrong answer, never the answer.
    assert!(logs.contains("phone-digits: wrong digits"), "{logs}");
    assert!(!logs.contains("wasi-not-provided"), "{logs}");
}

#[test]
fn a_gate_built_against_contract_0_2_0_keeps_working_on_this_gateway() {
    // The plain gate built against the 0.2.0 WIT as released, before the
    // additive 0.2.1 (`locale`): the gateway links and runs it.
    let setup = Setup::new(
        "old-gate",
        &wasm("contract-0-2-0"),
        &workflow(
            "reset",
            "old-gate",
            "{ attribute: employee_id, label: Employee ID, kind: code }",
        ),
    );
    setup.add_user("alice", "employee_id=E-4711", OLD);
    let logs = reset_through_the_api(&setup, "value", "E-4712", " e-4711 ");
    assert!(!logs.contains("warning["), "{logs}");
}
