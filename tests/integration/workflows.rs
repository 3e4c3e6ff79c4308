//! The workflow language: every example in `workflows/` loads; the golden
//! files in `tests/workflows/` produce exactly their diagnostics (`err/`:
//! refused, `ok/`: loaded, with the warnings their `.stderr` lists;
//! `config-err/`: gateway configs); `resetgate check` exit codes. Refresh
//! the goldens with `UPDATE_EXPECT=1`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use resetgate::config::GatewayConfig;
use resetgate::plugin::PluginHost;
use resetgate::workflow::{
    self, Diagnostic, Enrollment, OnFailure, Purpose, Severity, SyncMode, VpnMode,
};
use resetgate_tests::{FIRST_PARTY, host, root, run_cli, sha256_of, wasm};

/// Plugins the golden files use besides the first-party ones.
const TEST_PLUGINS: [&str; 2] = ["wants-http", "hostile"];

/// A plugins folder holding the built plugins under the names workflows use
/// (`example-question.wasm`, not the crate's `example_question.wasm`).
fn plugins_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for name in FIRST_PARTY.iter().chain(TEST_PLUGINS.iter()) {
        std::fs::copy(wasm(name), dir.path().join(format!("{name}.wasm"))).unwrap();
    }
    dir
}

/// `tests/workflows/gateway.yaml`, with its plugins in `plugins`.
fn test_config(plugins: &Path) -> GatewayConfig {
    let config = GatewayConfig::load(&root().join("tests/workflows/gateway.yaml"))
        .unwrap_or_else(|ds| panic!("{}", render(&ds, plugins)));
    GatewayConfig {
        plugins: plugins.to_owned(),
        ..config
    }
}

/// Diagnostics as `resetgate check` prints them, with the workspace root
/// and the temporary plugins folder written so that goldens are stable.
fn render(diagnostics: &[Diagnostic], plugins: &Path) -> String {
    let mut out = String::new();
    for d in diagnostics {
        out.push_str(&d.to_string());
        out.push('\n');
    }
    out.replace(&format!("{}/", plugins.display()), "$PLUGINS/")
        .replace(&format!("{}/", root().display()), "")
}

/// The `*.yaml` files of a folder under `tests/workflows/`, sorted.
fn goldens(folder: &str) -> Vec<PathBuf> {
    let dir = root().join("tests/workflows").join(folder);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no goldens in {}", dir.display());
    files
}

/// Compares `actual` with the golden `<file>.stderr` (absent = empty), or
/// rewrites it with `UPDATE_EXPECT=1`. Returns a description of a mismatch.
fn expect(file: &Path, actual: &str) -> Option<String> {
    let golden = file.with_extension("stderr");
    if std::env::var_os("UPDATE_EXPECT").is_some() {
        if actual.is_empty() {
            let _ = std::fs::remove_file(&golden);
        } else {
            std::fs::write(&golden, actual).unwrap();
        }
        return None;
    }
    let expected = std::fs::read_to_string(&golden).unwrap_or_default();
    (expected != actual).then(|| {
        format!(
            "--- {} (expected)\n{expected}--- actual\n{actual}",
            golden.strip_prefix(root()).unwrap_or(&golden).display()
        )
    })
}

fn check_goldens(mismatches: Vec<String>) {
    assert!(
        mismatches.is_empty(),
        "{} golden file(s) differ (refresh with UPDATE_EXPECT=1 if the change is intended):\n\n{}",
        mismatches.len(),
        mismatches.join("\n")
    );
}

/// Codes of the warnings, in order.
fn codes(diagnostics: &[Diagnostic]) -> Vec<&'static str> {
    diagnostics.iter().map(|d| d.code).collect()
}

#[test]
fn every_example_workflow_loads_without_errors() {
    let (host, _cache) = host();
    let plugins = plugins_dir();
    let config = GatewayConfig {
        plugins: plugins.path().to_owned(),
        ..GatewayConfig::default()
    };
    let expected_warnings: [(&str, Vec<&str>); 4] = [
        ("demo.yaml", vec![]),
        ("enrollment.yaml", vec![]),
        ("reset-with-sync-and-vpn.yaml", vec![]),
        ("self-service-reset.yaml", vec![]),
    ];
    let files = workflow::workflow_files(&root().join("workflows")).unwrap();
    let names: Vec<String> = files
        .iter()
        .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        expected_warnings
            .iter()
            .map(|(n, _)| *n)
            .collect::<Vec<_>>()
    );
    for (file, (name, warnings)) in files.iter().zip(expected_warnings) {
        let text = std::fs::read_to_string(file).unwrap();
        assert!(
            text.starts_with("# yaml-language-server: $schema=../schemas/workflow.schema.json\n"),
            "{name} does not start with the schema modeline"
        );
        match workflow::load_file(&host, &config, file) {
            Ok((_, found)) => assert_eq!(
                codes(&found),
                warnings,
                "{name}:\n{}",
                render(&found, plugins.path())
            ),
            Err(ds) => panic!("{name} does not load:\n{}", render(&ds, plugins.path())),
        }
    }
    let (loaded, diagnostics) = workflow::load_dir(&host, &config, &root().join("workflows"));
    assert_eq!(loaded.len(), 4);
    assert!(diagnostics.iter().all(|d| d.severity == Severity::Warning));
}

#[test]
fn examples_build_the_model_the_engine_runs() {
    let (host, _cache) = host();
    let plugins = plugins_dir();
    let config = GatewayConfig {
        plugins: plugins.path().to_owned(),
        ..GatewayConfig::default()
    };
    let file = root().join("workflows/self-service-reset.yaml");
    let (w, _) = workflow::load_file(&host, &config, &file).unwrap();
    assert_eq!(w.name, "self-service-reset");
    assert_eq!(
        w.description.as_deref(),
        Some("Reset a forgotten password with your authenticator app and your security questions.")
    );
    assert_eq!(w.version, sha256_of(&file));
    assert_eq!(w.purpose, Purpose::Reset);
    assert_eq!(w.limits.idle, Duration::from_secs(300));
    assert_eq!(w.limits.absolute, Duration::from_secs(900));
    let ids: Vec<&str> = w.gates.iter().map(|g| g.step.id.as_str()).collect();
    assert_eq!(ids, ["authenticator", "security-questions"]);
    let gate = &w.gates[1];
    assert_eq!(gate.step.path, "gates[1]");
    assert_eq!(gate.step.plugin_name, "questions");
    assert_eq!(gate.step.plugin.info().name, "questions");
    assert_eq!(gate.enrollment, Enrollment::Required);
    assert_eq!(gate.max_rounds, 3, "default max_rounds");
    let config_json: serde_json::Value = serde_json::from_str(&gate.step.config).unwrap();
    assert_eq!(config_json["asked_at_reset"], 2);
    assert_eq!(config_json["questions"].as_array().unwrap().len(), 5);
    let lockout = w.lockout.as_ref().unwrap();
    let ladder: serde_json::Value = serde_json::from_str(&lockout.config).unwrap();
    assert_eq!(
        ladder,
        serde_json::json!({"threshold": 5, "lockout_ms": [900000, 3600000], "max_lockouts": 3})
    );
    assert_eq!(w.password.min_length, 15);
    assert_eq!(w.password.max_length, 64);
    assert!(w.password.reject_user_name);
    assert!(w.password.blocklist.contains("correcthorsebatterystaple"));
    assert!(!w.password.blocklist.iter().any(|p| p.starts_with('#')));
    assert!(w.sync.is_empty() && w.vpn.is_none());
    assert_eq!(w.steps().count(), 4);

    let file = root().join("workflows/reset-with-sync-and-vpn.yaml");
    let (w, _) = workflow::load_file(&host, &config, &file).unwrap();
    assert_eq!(w.directory.limits.wall_time, Duration::from_secs(5));
    assert_eq!(w.gates[0].max_rounds, 3, "default max_rounds");
    assert_eq!(w.password.min_length, 15, "default min_length");
    let sync = &w.sync[0];
    assert_eq!(sync.step.id, "hr-system");
    assert_eq!(
        sync.mode,
        SyncMode::Sync {
            timeout: Duration::from_secs(5),
            on_failure: OnFailure::Deny
        }
    );
    assert_eq!(
        sync.step.limits.wall_time,
        Duration::from_secs(5),
        "a sync push may use its timeout"
    );
    assert_eq!(w.vpn.as_ref().unwrap().mode, VpnMode::Partial);

    let file = root().join("workflows/enrollment.yaml");
    let (w, _) = workflow::load_file(&host, &config, &file).unwrap();
    assert_eq!(w.purpose, Purpose::Enrollment);
    assert_eq!(w.gates.len(), 2);
}

#[test]
fn invalid_workflows_produce_exactly_their_golden_diagnostics() {
    let (host, _cache) = host();
    let plugins = plugins_dir();
    let config = test_config(plugins.path());
    let mut mismatches = Vec::new();
    for file in goldens("err") {
        let actual = match workflow::load_file(&host, &config, &file) {
            Ok((w, _)) => format!("unexpectedly loaded workflow {}\n", w.name),
            Err(ds) => {
                assert!(ds.iter().any(Diagnostic::is_error), "{}", file.display());
                render(&ds, plugins.path())
            }
        };
        mismatches.extend(expect(&file, &actual));
    }
    check_goldens(mismatches);
}

#[test]
fn valid_workflows_load_with_exactly_their_golden_warnings() {
    let (host, _cache) = host();
    let plugins = plugins_dir();
    let config = test_config(plugins.path());
    let mut mismatches = Vec::new();
    for file in goldens("ok") {
        let actual = match workflow::load_file(&host, &config, &file) {
            Ok((_, warnings)) => {
                assert!(warnings.iter().all(|d| !d.is_error()));
                render(&warnings, plugins.path())
            }
            Err(ds) => format!("does not load:\n{}", render(&ds, plugins.path())),
        };
        mismatches.extend(expect(&file, &actual));
    }
    check_goldens(mismatches);
}

#[test]
fn invalid_gateway_configs_produce_exactly_their_golden_diagnostics() {
    let mut mismatches = Vec::new();
    for file in goldens("config-err") {
        let actual = match GatewayConfig::load(&file) {
            Ok(_) => "unexpectedly loaded\n".to_owned(),
            Err(ds) => render(&ds, Path::new("/nonexistent")),
        };
        mismatches.extend(expect(&file, &actual));
    }
    check_goldens(mismatches);
}

#[test]
fn every_golden_output_has_its_input() {
    for folder in ["ok", "err", "config-err"] {
        let dir = root().join("tests/workflows").join(folder);
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|x| x == "stderr") {
                assert!(
                    path.with_extension("yaml").exists(),
                    "{} has no .yaml",
                    path.display()
                );
            }
        }
    }
}

#[test]
fn two_workflows_with_one_name_keep_the_first() {
    let (host, _cache) = host();
    let plugins = plugins_dir();
    let config = test_config(plugins.path());
    let dir = tempfile::tempdir().unwrap();
    let text = "version: 1\nname: same\ndirectory: {plugin: example-directory, config: {users: []}}\n\
                lockout: {plugin: example-lockout}\ngates: [{id: code, plugin: hostile}]\n";
    std::fs::write(dir.path().join("a.yaml"), text).unwrap();
    std::fs::write(dir.path().join("b.yml"), text).unwrap();
    std::fs::write(dir.path().join("notes.txt"), "not a workflow").unwrap();
    let (loaded, diagnostics) = workflow::load_dir(&host, &config, dir.path());
    assert_eq!(loaded.len(), 1);
    assert!(loaded[0].source.ends_with("a.yaml"));
    assert_eq!(diagnostics.len(), 1, "{diagnostics:?}");
    assert_eq!(diagnostics[0].code, "duplicate-name");
    assert_eq!((diagnostics[0].line, diagnostics[0].column), (2, 7));
    assert!(diagnostics[0].file.ends_with("b.yml"));
}

#[test]
fn a_broken_file_is_skipped_and_the_rest_load() {
    let (host, _cache) = host();
    let plugins = plugins_dir();
    let config = test_config(plugins.path());
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        root().join("workflows/self-service-reset.yaml"),
        dir.path().join("good.yaml"),
    )
    .unwrap();
    std::fs::copy(
        root().join("workflows/blocklist.txt"),
        dir.path().join("blocklist.txt"),
    )
    .unwrap();
    std::fs::write(dir.path().join("bad.yaml"), "version: 1\nname: [\n").unwrap();
    let (loaded, diagnostics) = workflow::load_dir(&host, &config, dir.path());
    assert_eq!(loaded.len(), 1);
    assert_eq!(loaded[0].name, "self-service-reset");
    assert_eq!(codes(&diagnostics), ["yaml"]);
}

#[test]
fn check_paths_reports_every_file() {
    let (host, _cache) = host();
    let plugins = plugins_dir();
    let config = test_config(plugins.path());
    let paths = [
        root().join("workflows"),
        root().join("tests/workflows/err/max-length.yaml"),
        root().join("tests/workflows/no-such-file.yaml"),
    ];
    let report = workflow::check_report(&host, &config, &paths);
    assert_eq!(report.workflows, 6);
    assert_eq!(report.warnings(), 0);
    assert_eq!(
        report.errors(),
        3,
        "{}",
        render(&report.diagnostics, plugins.path())
    );
    assert_eq!(
        workflow::check_paths(&host, &config, &paths),
        report.diagnostics
    );
}

/// The schemas an editor uses: JSON Schema 2020-12 with an `$id`, and every
/// property documented (hover text) either itself or through `$ref`. (That
/// they compile is checked by the gateway's unit tests.)
#[test]
fn schemas_document_every_property() {
    fn walk(
        schema: &serde_json::Value,
        node: &serde_json::Value,
        at: &str,
        missing: &mut Vec<String>,
    ) {
        match node {
            serde_json::Value::Object(map) => {
                if let Some(serde_json::Value::Object(props)) = map.get("properties") {
                    for (name, prop) in props {
                        let target = prop
                            .get("$ref")
                            .and_then(|r| r.as_str())
                            .and_then(|r| schema.pointer(r.trim_start_matches('#')));
                        let documented = |key: &str| {
                            prop.get(key).is_some() || target.is_some_and(|t| t.get(key).is_some())
                        };
                        let in_condition = at.contains("/then") || at.contains("/if");
                        let ok = in_condition || (documented("description") && documented("title"));
                        if !ok {
                            missing.push(format!("{at}/properties/{name}"));
                        }
                    }
                }
                for (key, child) in map {
                    walk(schema, child, &format!("{at}/{key}"), missing);
                }
            }
            serde_json::Value::Array(items) => {
                for (i, child) in items.iter().enumerate() {
                    walk(schema, child, &format!("{at}/{i}"), missing);
                }
            }
            _ => {}
        }
    }
    for name in ["workflow", "config"] {
        let path = root().join(format!("schemas/{name}.schema.json"));
        let schema: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(
            schema["$schema"],
            "https://json-schema.org/draft/2020-12/schema"
        );
        assert!(
            schema["$id"]
                .as_str()
                .unwrap()
                .ends_with(&format!("/schemas/{name}.schema.json"))
        );
        let mut missing = Vec::new();
        walk(&schema, &schema, "", &mut missing);
        assert!(missing.is_empty(), "{name}: undocumented: {missing:?}");
    }
    assert_eq!(
        workflow::load::SCHEMA,
        std::fs::read_to_string(root().join("schemas/workflow.schema.json")).unwrap()
    );
}

fn write_config(dir: &Path, plugins: &Path) -> PathBuf {
    let path = dir.join("gateway.yaml");
    std::fs::write(
        &path,
        format!(
            "version: 1\nplugins: {}\ndata_dir: {}\n",
            plugins.display(),
            dir.join("data").display()
        ),
    )
    .unwrap();
    path
}

#[test]
fn check_cli_passes_the_examples_and_fails_on_errors() {
    let plugins = plugins_dir();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), plugins.path());
    let config = config.to_str().unwrap();
    let examples = root().join("workflows");
    let examples = examples.to_str().unwrap();

    let (ok, _, err) = run_cli(&["check", "--config", config, examples]);
    assert!(ok, "{err}");
    assert!(
        err.ends_with("checked 4 workflows: 0 errors, 0 warnings\n"),
        "{err}"
    );

    let warns = root().join("tests/workflows/ok/minimal.yaml");
    let warns = warns.to_str().unwrap();
    let (ok, _, err) = run_cli(&["check", "--config", config, warns]);
    assert!(ok, "{err}");
    let (ok, _, err) = run_cli(&["check", "--config", config, "--deny-warnings", warns]);
    assert!(!ok, "--deny-warnings must fail on warnings:\n{err}");

    let enrollment = root().join("workflows/enrollment.yaml");
    let (ok, _, err) = run_cli(&[
        "check",
        "--config",
        config,
        "--deny-warnings",
        enrollment.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    assert_eq!(err, "checked 1 workflow: 0 errors, 0 warnings\n");

    let bad = root().join("tests/workflows/err/several-errors.yaml");
    let (ok, _, err) = run_cli(&["check", "--config", config, bad.to_str().unwrap(), examples]);
    assert!(!ok);
    assert!(
        err.contains(
            "several-errors.yaml:15:13: error[plugin-missing]: plugin `example-questoin` not found"
        ),
        "{err}"
    );
    assert!(
        err.ends_with("checked 5 workflows: 9 errors, 1 warning\n"),
        "{err}"
    );
}

/// Every gateway config in `examples/` passes `resetgate check` with the
/// workflows it names and no warning: the examples are documentation that
/// must keep working (their plugins, configs and grants load for real).
#[test]
fn every_example_config_checks_without_warnings() {
    // The configs name `../target/plugins`, where `cargo xtask plugins`
    // (and `cargo xtask test`) put the first-party plugins.
    let examples = root().join("examples");
    let mut configs: Vec<PathBuf> = std::fs::read_dir(&examples)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    configs.sort();
    let names: Vec<String> = configs
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, EXAMPLE_CONFIGS);
    for config in &configs {
        let (ok, _, err) = run_cli(&[
            "check",
            "--deny-warnings",
            "--config",
            config.to_str().unwrap(),
        ]);
        assert!(ok, "{}: {err}", config.display());
        assert!(
            err.ends_with("checked 2 workflows: 0 errors, 0 warnings\n"),
            "{}: {err}",
            config.display()
        );
    }
}

/// The gateway configs in `examples/`, each with its folder of workflows.
const EXAMPLE_CONFIGS: [&str; 3] = ["active-directory.yaml", "gateway.yaml", "openldap.yaml"];

#[test]
fn check_cli_reports_a_broken_config_and_uses_the_config_folders() {
    let plugins = plugins_dir();
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "version: 1\nplugin: x\n").unwrap();
    let (ok, _, err) = run_cli(&["check", "--config", bad.to_str().unwrap()]);
    assert!(!ok);
    assert!(
        err.contains("bad.yaml:2:1: error[unknown-field]: unknown field `plugin` at the top level\n  help: did you mean `plugins`?"),
        "{err}"
    );
    assert!(
        err.contains("checked 0 workflows: 1 error, 0 warnings"),
        "{err}"
    );

    // Without paths, the config's workflows folder is checked.
    let workflows = dir.path().join("flows");
    std::fs::create_dir(&workflows).unwrap();
    std::fs::copy(
        root().join("workflows/enrollment.yaml"),
        workflows.join("enrollment.yaml"),
    )
    .unwrap();
    let config = dir.path().join("gateway.yaml");
    std::fs::write(
        &config,
        format!(
            "version: 1\nplugins: {}\nworkflows: flows\ndata_dir: data\n",
            plugins.path().display()
        ),
    )
    .unwrap();
    let (ok, _, err) = run_cli(&["check", "--config", config.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert_eq!(err, "checked 1 workflow: 0 errors, 0 warnings\n");
    assert!(dir.path().join("data/plugin-cache").is_dir());
}

#[test]
fn a_plugin_host_is_shared_across_loads() {
    // Loading the same plugin for many steps and files reuses the compiled component.
    let (host, _cache): (PluginHost, _) = host();
    let plugins = plugins_dir();
    let config = test_config(plugins.path());
    for _ in 0..2 {
        workflow::load_dir(&host, &config, &root().join("workflows"));
    }
    let stats = host.stats();
    assert_eq!(stats.compiles, 7, "{stats:?}");
}
