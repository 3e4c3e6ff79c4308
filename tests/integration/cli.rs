//! The real `resetgate` binary: `serve` as `cargo xtask run` starts it, and
//! `plugin inspect`.

use resetgate_tests::{FIRST_PARTY, Gateway, run_cli, sha256_of, wasm};

#[test]
fn serve_answers_its_health_endpoint_and_stops_cleanly() {
    let data = tempfile::tempdir().unwrap();
    let plugins = tempfile::tempdir().unwrap();
    for name in FIRST_PARTY {
        std::fs::copy(wasm(name), plugins.path().join(format!("{name}.wasm"))).unwrap();
    }
    let gw = Gateway::start(data.path(), plugins.path());
    assert_eq!(gw.get("/healthz"), (200, "ok\n".to_owned()));
    let logs = gw.wait_for_log("ready");
    for name in FIRST_PARTY {
        assert!(
            logs.contains(&format!("plugin={name}")),
            "{name} not loaded:\n{logs}"
        );
    }
    assert!(gw.stop(), "gateway did not exit cleanly on SIGTERM");
    // The compiled plugins were cached in the data folder for the next start.
    let cached = std::fs::read_dir(data.path().join("plugin-cache"))
        .unwrap()
        .count();
    assert_eq!(cached, FIRST_PARTY.len());
    let gw = Gateway::start(data.path(), plugins.path());
    assert_eq!(gw.get("/healthz").0, 200);
    assert!(
        gw.logs().contains("compiled=0 from_cache=5"),
        "{}",
        gw.logs()
    );
}

#[test]
fn serve_refuses_a_bad_plugin_with_a_clear_error() {
    let data = tempfile::tempdir().unwrap();
    let plugins = tempfile::tempdir().unwrap();
    std::fs::copy(wasm("wants-http"), plugins.path().join("wants-http.wasm")).unwrap();
    let out = std::process::Command::new(resetgate_tests::binary())
        .args(["serve", "--listen", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(data.path())
        .arg("--plugins")
        .arg(plugins.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("error: plugin wants-http.wasm imports resetgate:plugin/http"),
        "{err}"
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
    assert!(out.contains("grants:   http\n"), "{out}");
    assert!(out.contains("resetgate:plugin/http@0.1.0"), "{out}");
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
