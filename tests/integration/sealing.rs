//! Secrets at rest, through the real binary: the data key (`data.key` made
//! 0600 and reused, a key file others may read refused with the fix, a key
//! from a config secret), enrollment rounds and enrollment data sealed so
//! that a canary a gate registers is in no file of the data folder, and the
//! prompt's display items (text, code, QR code with its modules) on the
//! wire. The `canary-gate` test plugin registers a random canary, shows it
//! as a `code` item and inside a `qr-code` one, keeps it in the round's
//! state and returns it as the enrollment; a reset then asks for it.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use resetgate_tests::fixtures::{self, canary_uri, qr_rows};
use resetgate_tests::{Gateway, write_config};
use serde_json::{Value, json};

const PASSWORD: &str = "the current password";

/// A folder with the plugins, the canary workflows, a config (plain HTTP on
/// loopback, plus `extra` YAML lines) and the local user `erin`.
struct Setup {
    dir: tempfile::TempDir,
    config: PathBuf,
}

impl Setup {
    fn new(extra: &str) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        for sub in ["plugins", "workflows"] {
            std::fs::create_dir_all(dir.path().join(sub)).unwrap();
        }
        let plugins = dir.path().join("plugins");
        fixtures::copy_plugins(&plugins);
        fixtures::copy_canary_gate(&plugins);
        fixtures::canary_workflows(&dir.path().join("workflows"));
        let config = write_config(dir.path(), extra);
        fixtures::add_local_user(&config, "erin", PASSWORD);
        Setup { dir, config }
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn start(&self) -> Client {
        Client {
            gw: Gateway::start_config(&self.config, &[]),
        }
    }
}

struct Client {
    gw: Gateway,
}

impl Client {
    fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let mut req = ureq::http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.gw.base_url()))
            .header("Content-Type", "application/json");
        if let Some(t) = token {
            req = req.header("Authorization", format!("Bearer {t}"));
        }
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let mut resp = agent.run(req.body(body).unwrap()).unwrap();
        let status = resp.status().as_u16();
        let raw = resp.body_mut().read_to_string().unwrap_or_default();
        (status, serde_json::from_str(&raw).unwrap_or(Value::Null))
    }

    /// Starts `workflow` for erin; (id, token, view).
    fn begin(&self, workflow: &str) -> (String, String, Value) {
        let (status, v) = self.call(
            "POST",
            "/v1/flows",
            None,
            Some(json!({"workflow": workflow, "user": "erin"})),
        );
        assert_eq!(status, 201, "{v}");
        let id = v["id"].as_str().unwrap().to_owned();
        let token = v["token"].as_str().unwrap().to_owned();
        (id, token, v)
    }

    fn answer(&self, id: &str, token: &str, view: &Value, name: &str, value: &str) -> (u16, Value) {
        self.call(
            "POST",
            &format!("/v1/flows/{id}/answers"),
            Some(token),
            Some(json!({
                "gate": view["prompt"]["gate"],
                "round": view["prompt"]["round"],
                "answers": { name: value },
            })),
        )
    }

    /// An enrollment flow up to the canary's prompt: (id, token, view).
    fn enrolling(&self) -> (String, String, Value) {
        let (id, token, v) = self.begin("enroll-canary");
        assert_eq!(v["state"], "authenticating", "{v}");
        let (status, v) = self.call(
            "POST",
            &format!("/v1/flows/{id}/authenticate"),
            Some(&token),
            Some(json!({"password": PASSWORD})),
        );
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["state"], "enrolling", "{v}");
        (id, token, v)
    }
}

/// The canary a prompt shows in its `code` item.
fn canary_of(view: &Value) -> String {
    let display = view["prompt"]["display"].as_array().unwrap();
    let code = display.iter().find(|d| d["type"] == "code").unwrap();
    let canary = code["text"].as_str().unwrap().to_owned();
    assert!(
        canary.starts_with("canary-") && canary.len() == 39,
        "{canary}"
    );
    canary
}

/// Every file under `dir`.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![];
    for e in std::fs::read_dir(dir).unwrap() {
        let path = e.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// The files under `dir` that hold `needle`.
fn holding(dir: &Path, needle: &str) -> Vec<PathBuf> {
    walk(dir)
        .into_iter()
        .filter(|f| {
            let bytes = std::fs::read(f).unwrap();
            bytes.windows(needle.len()).any(|w| w == needle.as_bytes())
        })
        .collect()
}

#[test]
fn an_enrolled_secret_is_in_no_file_of_the_data_folder() {
    let setup = Setup::new("");
    let c = setup.start();
    let (id, token, v) = c.enrolling();

    // The prompt's display items, the QR code with its modules.
    let canary = canary_of(&v);
    let display = v["prompt"]["display"].as_array().unwrap();
    let types: Vec<&str> = display
        .iter()
        .map(|d| d["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["text", "code", "qr-code"]);
    assert_eq!(
        display[0].get("modules"),
        None,
        "only QR codes have modules"
    );
    let qr = &display[2];
    let text = qr["text"].as_str().unwrap();
    assert_eq!(text, canary_uri("erin", &canary));
    let modules: Vec<String> = serde_json::from_value(qr["modules"].clone()).unwrap();
    assert_eq!(
        modules,
        qr_rows(text),
        "the modules of the QR code of its text"
    );
    assert!(modules.len() >= 21 && modules.iter().all(|r| r.len() == modules.len()));

    // While the flow waits at the enrollment prompt, the canary (shown by
    // the prompt and kept in the round's state) is in no file.
    let hex = &canary["canary-".len()..];
    assert_eq!(holding(&setup.data(), hex), Vec::<PathBuf>::new());
    // The round opens again from the store, after a restart too (the data
    // key is reused).
    let (_, again) = c.call("GET", &format!("/v1/flows/{id}"), Some(&token), None);
    assert_eq!(again["prompt"], v["prompt"]);
    assert!(c.gw.stop());
    let key = setup.data().join("data.key");
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let key_text = std::fs::read_to_string(&key).unwrap();
    let c = setup.start();
    assert_eq!(std::fs::read_to_string(&key).unwrap(), key_text, "reused");
    let (_, again) = c.call("GET", &format!("/v1/flows/{id}"), Some(&token), None);
    assert_eq!(again["prompt"], v["prompt"]);

    // Registered: the round's state came back to `enroll`, and the canary is
    // the stored enrollment.
    let (status, done) = c.answer(&id, &token, &v, "confirm", "OK");
    assert_eq!(status, 200, "{done}");
    assert_eq!(done["state"], "completed", "{done}");
    assert_eq!(holding(&setup.data(), hex), Vec::<PathBuf>::new());

    // A reset after a restart asks for it: the sealed enrollment opened and
    // reached the gate.
    assert!(c.gw.stop());
    let c = setup.start();
    let (id, token, v) = c.begin("reset-canary");
    assert_eq!(v["state"], "gate", "{v}");
    let (_, wrong) = c.answer(&id, &token, &v, "canary", "canary-not-it");
    assert_eq!(wrong["notice"]["code"], "not-verified", "{wrong}");
    let (_, passed) = c.answer(&id, &token, &v, "canary", &canary);
    assert_eq!(passed["state"], "awaiting-password", "{passed}");

    let logs = c.gw.logs();
    assert!(!logs.contains(hex), "the canary is never logged");
    assert!(c.gw.stop());
    for file in [&key, &setup.data().join("db")] {
        assert!(file.exists(), "{}", file.display());
    }
    assert_eq!(
        holding(&setup.data(), hex),
        Vec::<PathBuf>::new(),
        "no file of the data folder holds the canary"
    );
}

#[test]
fn a_key_file_others_may_read_stops_the_start_with_the_fix() {
    let setup = Setup::new("");
    let c = setup.start();
    assert!(c.gw.stop());
    let key = setup.data().join("data.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o640)).unwrap();
    let err = Gateway::try_start_config(&setup.config, &[])
        .err()
        .expect("the gateway must not start");
    assert!(
        err.contains(&format!("chmod 600 {}", key.display())) && err.contains("mode 640"),
        "{err}"
    );
    // Fixed as told, it starts with the same key.
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let c = setup.start();
    assert!(c.gw.logs().contains("read the data key"), "{}", c.gw.logs());
}

#[test]
fn a_data_key_from_a_secret_seals_and_another_key_does_not_open() {
    let secret = |dir: &Path, text: &str| {
        let file = dir.join("data-key.hex");
        std::fs::write(&file, text).unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    };
    let setup = Setup::new("secrets:\n  dk: { file: data-key.hex }\ndata_key_secret: dk\n");
    secret(setup.dir.path(), &format!("{}\n", "5a".repeat(32)));
    let c = setup.start();
    let (id, token, v) = c.enrolling();
    let canary = canary_of(&v);
    let (_, done) = c.answer(&id, &token, &v, "confirm", "OK");
    assert_eq!(done["state"], "completed", "{done}");
    assert!(c.gw.logs().contains("the secret `dk`"), "{}", c.gw.logs());
    assert!(c.gw.stop());
    assert!(
        !setup.data().join("data.key").exists(),
        "no key file when the config gives the key"
    );
    assert_eq!(holding(&setup.data(), &canary), Vec::<PathBuf>::new());

    // Another key: the enrollment does not open, and the admin is told why.
    secret(setup.dir.path(), &"a5".repeat(32));
    let c = setup.start();
    // The gate reads the enrollment when the flow reaches it, at the start.
    let (status, body) = c.call(
        "POST",
        "/v1/flows",
        None,
        Some(json!({"workflow": "reset-canary", "user": "erin"})),
    );
    assert_eq!((status, &body["code"]), (500, &json!("internal")), "{body}");
    let logs = c.gw.wait_for_log("sealed with another data key?");
    assert!(
        logs.contains("sealed with another data key?") && logs.contains("the secret `dk`"),
        "{logs}"
    );
    assert!(!logs.contains(&canary["canary-".len()..]));
    assert!(c.gw.stop());

    // A secret that is not a key stops the start, naming it, not showing it.
    secret(setup.dir.path(), "not-a-key-at-all");
    let err = Gateway::try_start_config(&setup.config, &[])
        .err()
        .expect("the gateway must not start");
    assert!(
        err.contains("`dk`") && err.contains("64 hexadecimal"),
        "{err}"
    );
    assert!(!err.contains("not-a-key-at-all"), "{err}");
}
