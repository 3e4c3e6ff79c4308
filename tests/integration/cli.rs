//! The real `resetgate` binary: `serve` as `cargo xtask run` starts it, and
//! `plugin inspect`.

use resetgate_tests::{FIRST_PARTY, Gateway, run_cli, sha256_of, wasm};

fn plugins_dir() -> tempfile::TempDir {
    let plugins = tempfile::tempdir().unwrap();
    for name in FIRST_PARTY {
        std::fs::copy(wasm(name), plugins.path().join(format!("{name}.wasm"))).unwrap();
    }
    plugins
}

fn served(gw: &Gateway) -> Vec<(String, String)> {
    let (status, body) = gw.get("/v1/workflows");
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["workflows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| {
            (
                w["name"].as_str().unwrap().to_owned(),
                w["version"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[test]
fn serve_answers_its_health_endpoint_and_stops_cleanly() {
    let data = tempfile::tempdir().unwrap();
    let plugins = plugins_dir();
    let gw = Gateway::start(data.path(), plugins.path());
    assert_eq!(gw.get("/healthz"), (200, "ok\n".to_owned()));
    let logs = gw.wait_for_log("ready");
    let names: Vec<String> = served(&gw).into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        names,
        [
            "demo",
            "enrollment",
            "reset-with-sync-and-vpn",
            "self-service-reset"
        ]
    );
    for name in &names {
        assert!(
            logs.contains(&format!("workflow={name}")),
            "{name} not loaded:\n{logs}"
        );
    }
    assert!(gw.stop(), "gateway did not exit cleanly on SIGTERM");
    // The compiled plugins were cached in the data folder for the next
    // start: the seven the example workflows use (local-users, totp,
    // questions, attribute-gate, example-lockout, example-sync, example-vpn).
    let cached = std::fs::read_dir(data.path().join("plugin-cache"))
        .unwrap()
        .count();
    assert_eq!(cached, 7);
    let gw = Gateway::start(data.path(), plugins.path());
    assert_eq!(gw.get("/healthz").0, 200);
    let logs = gw.wait_for_log("ready");
    assert!(logs.contains("compiled=0"), "{logs}");
}

#[test]
fn serve_refuses_to_start_with_a_broken_workflow() {
    let data = tempfile::tempdir().unwrap();
    let plugins = plugins_dir();
    let workflows = tempfile::tempdir().unwrap();
    let broken = workflows.path().join("broken.yaml");
    std::fs::write(
        &broken,
        "version: 1\nname: broken\ndirectory:\n  plugn: example-directory\n",
    )
    .unwrap();
    let out = std::process::Command::new(resetgate_tests::binary())
        .args(["serve", "--listen", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(data.path())
        .arg("--plugins")
        .arg(plugins.path())
        .arg("--workflows")
        .arg(workflows.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("{}:4:3: error[unknown-field]", broken.display())),
        "{err}"
    );
    assert!(
        err.contains("error: 1 workflow file(s) have errors"),
        "{err}"
    );
}

#[test]
fn sighup_reloads_workflows_and_a_broken_file_keeps_the_old_version() {
    let data = tempfile::tempdir().unwrap();
    let plugins = plugins_dir();
    let workflows = tempfile::tempdir().unwrap();
    let file = workflows.path().join("reset.yaml");
    let original = std::fs::read_to_string(
        resetgate_tests::root().join("workflows/reset-with-sync-and-vpn.yaml"),
    )
    .unwrap();
    std::fs::write(&file, &original).unwrap();
    std::fs::copy(
        resetgate_tests::root().join("workflows/blocklist.txt"),
        workflows.path().join("blocklist.txt"),
    )
    .unwrap();
    let gw = Gateway::start_with(data.path(), plugins.path(), workflows.path());
    let v1 = served(&gw);
    assert_eq!(v1.len(), 1);

    // A valid change is picked up.
    std::fs::write(
        &file,
        original.replace("description:", "description: (edited)"),
    )
    .unwrap();
    gw.signal("HUP");
    gw.wait_for_log("reloaded workflows");
    let v2 = served(&gw);
    assert_eq!(v2[0].0, v1[0].0);
    assert_ne!(v2[0].1, v1[0].1, "the edited file was not reloaded");

    // A broken change is refused with check's message; v2 keeps serving.
    std::fs::write(&file, original.replace("directory:", "directry:")).unwrap();
    gw.signal("HUP");
    let logs = gw.wait_for_log("refused=1");
    assert!(
        logs.contains("error[unknown-field]: unknown field `directry`"),
        "{logs}"
    );
    assert!(logs.contains(&format!("{}:", file.display())), "{logs}");
    assert_eq!(served(&gw), v2);
}

#[test]
fn audit_verify_checks_the_chain_of_a_data_folder() {
    let data = tempfile::tempdir().unwrap();
    {
        use resetgate::store::{AuditRecord, SledStore};
        let store = SledStore::open(data.path()).unwrap();
        for i in 0..3 {
            store
                .append_audit(AuditRecord {
                    at_ms: i,
                    kind: "test".into(),
                    flow: None,
                    user: None,
                    workflow: None,
                    detail: serde_json::json!({}),
                })
                .unwrap();
        }
    }
    let (ok, out, err) = run_cli(&[
        "audit",
        "verify",
        "--data-dir",
        data.path().to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    assert!(
        out.starts_with("audit chain local: 3 entries, head ")
            && out.contains("audit log intact: 3 entries in 1 chain(s)"),
        "{out}"
    );
}

#[test]
fn inspect_prints_kind_and_sha256_of_each_example_plugin() {
    let kinds = [
        ("example-question", "gate"),
        ("example-lockout", "lockout"),
        ("example-directory", "directory"),
        ("example-vpn", "vpn-hook"),
        ("example-sync", "sync-target"),
    ];
    for (name, kind) in kinds {
        let path = wasm(name);
        let (ok, out, err) = run_cli(&["plugin", "inspect", path.to_str().unwrap()]);
        assert!(ok, "{err}");
        assert!(out.contains(&format!("name:     {name}\n")), "{out}");
        assert!(out.contains(&format!("kind:     {kind}\n")), "{out}");
        assert!(
            out.contains(&format!("sha256:   {}\n", sha256_of(&path))),
            "{out}"
        );
        assert!(out.contains("config schema:\n{"), "{out}");

        let (ok, json, _) = run_cli(&["plugin", "inspect", "--json", path.to_str().unwrap()]);
        assert!(ok);
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["kind"], kind);
        assert_eq!(v["sha256"], sha256_of(&path));
        assert!(v["config_schema"].is_object());
    }
}

#[test]
fn inspect_shows_the_grants_a_plugin_needs() {
    let (ok, out, err) = run_cli(&["plugin", "inspect", wasm("wants-http").to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(
        out.contains("grants:   http (imported; each works only where the step grants it)\n"),
        "{out}"
    );
    assert!(out.contains("resetgate:plugin/http@0.2.1"), "{out}");
}

#[test]
fn inspect_of_a_missing_file_fails_with_the_path() {
    let (ok, _, err) = run_cli(&["plugin", "inspect", "/nonexistent/x.wasm"]);
    assert!(!ok);
    assert!(
        err.starts_with("error: cannot read plugin /nonexistent/x.wasm"),
        "{err}"
    );
}

#[test]
fn inspect_of_a_fifo_is_refused_without_waiting_for_a_writer() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("x.wasm");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    let (ok, _, err) = run_cli(&["plugin", "inspect", fifo.to_str().unwrap()]);
    assert!(!ok);
    assert!(
        err.contains("is not a regular file (it is a FIFO)"),
        "{err}"
    );
}
