//! The capability framework: what a call sees of the capabilities built
//! from the gateway config (`secrets`), the flow's clock, and a reload that
//! swaps the capabilities under a running host.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;

use resetgate::config::{GatewayConfig, SecretSource};
use resetgate::contract::{CallContext, PluginKind, User};
use resetgate::plugin::{CallError, Capabilities, Grants, LoadSpec, Plugin, PluginHost};
use resetgate_tests::{host, wasm};

/// Runs one `kv-probe` command in a call whose context is `ctx`.
fn probe_in(plugin: &Plugin, ctx: CallContext, command: &str) -> Result<String, CallError> {
    let ctx = CallContext {
        config: serde_json::to_string(command).unwrap(),
        ..ctx
    };
    plugin
        .gate()
        .unwrap()
        .begin(&ctx, &User::default(), None)
        .map(|r| r.unwrap().prompt.title)
}

fn probe(plugin: &Plugin, command: &str) -> Result<String, CallError> {
    probe_in(plugin, CallContext::default(), command)
}

fn load(host: &PluginHost, grants: Grants) -> Plugin {
    host.load(
        &wasm("kv-probe"),
        &LoadSpec {
            kind: Some(PluginKind::Gate),
            grants,
            ..LoadSpec::default()
        },
    )
    .unwrap()
}

fn secrets_grant(names: &[&str]) -> Grants {
    Grants {
        secrets: names.iter().map(|n| (*n).to_owned()).collect(),
        ..Grants::default()
    }
}

/// A config whose `secrets` are files in `dir` with these values.
fn config_with_secrets(dir: &std::path::Path, values: &[(&str, &str)]) -> GatewayConfig {
    let mut secrets = BTreeMap::new();
    for (name, value) in values {
        let path = dir.join(name);
        std::fs::write(&path, value).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        secrets.insert((*name).to_owned(), SecretSource::File(path));
    }
    GatewayConfig {
        secrets,
        ..GatewayConfig::default()
    }
}

#[test]
fn clock_now_is_the_flows_clock_inside_a_flow_and_the_wall_clock_outside() {
    let (host, _cache) = host();
    let plugin = load(&host, Grants::default());
    let in_flow = CallContext {
        flow_id: "f-1".into(),
        now_ms: 1_234_567,
        ..CallContext::default()
    };
    assert_eq!(probe_in(&plugin, in_flow, "now").unwrap(), "1234567");
    let wall: u64 = probe(&plugin, "now").unwrap().parse().unwrap();
    let system = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    assert!(wall.abs_diff(system) < 60_000, "{wall} vs {system}");
}

#[test]
fn a_plugin_sees_only_the_secrets_its_step_grants_and_never_their_values() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_with_secrets(
        dir.path(),
        &[
            ("sms-key", "canary-sms-7781\n"),
            ("empty", ""),
            ("other", "x"),
        ],
    );
    let (host, _cache) = host();
    host.set_capabilities(Arc::new(Capabilities::from_config(&config, None).unwrap()));
    let plugin = load(&host, secrets_grant(&["sms-key", "empty", "undefined"]));
    assert_eq!(probe(&plugin, "secret sms-key").unwrap(), "true");
    // Granted but empty, granted but not defined, defined but not granted.
    assert_eq!(probe(&plugin, "secret empty").unwrap(), "false");
    assert_eq!(probe(&plugin, "secret undefined").unwrap(), "false");
    assert_eq!(probe(&plugin, "secret other").unwrap(), "false");

    // A step that grants no secrets at all: the call stops with the grant to add.
    let ungranted = load(&host, Grants::default());
    match probe(&ungranted, "secret sms-key") {
        Err(CallError::Refused { reason, .. }) => {
            assert!(reason.contains("secrets.available"), "{reason}");
            assert!(reason.contains("grants: { secrets: ["), "{reason}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert!(!format!("{:?}", host.capabilities()).contains("canary-sms-7781"));
}

#[test]
fn new_capabilities_apply_to_calls_that_start_after_them() {
    let dir = tempfile::tempdir().unwrap();
    let (host, _cache) = host();
    let plugin = load(&host, secrets_grant(&["rotated"]));
    assert_eq!(probe(&plugin, "secret rotated").unwrap(), "false");
    let config = config_with_secrets(dir.path(), &[("rotated", "v1")]);
    host.set_capabilities(Arc::new(Capabilities::from_config(&config, None).unwrap()));
    assert_eq!(probe(&plugin, "secret rotated").unwrap(), "true");
    host.set_capabilities(Arc::new(Capabilities::none()));
    assert_eq!(probe(&plugin, "secret rotated").unwrap(), "false");
}

#[test]
fn a_secret_file_others_can_read_fails_the_capabilities_with_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_with_secrets(dir.path(), &[("bind", "canary-bind-9912")]);
    let path = dir.path().join("bind");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = Capabilities::from_config(&config, None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("secret `bind`"), "{err}");
    assert!(
        err.contains(&format!("chmod 600 {}", path.display())),
        "{err}"
    );
    assert!(!err.contains("canary-bind-9912"), "{err}");
}

#[test]
fn serve_refuses_to_start_with_a_secret_others_can_read_and_names_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("bind.secret");
    std::fs::write(&secret, "canary-serve-5531\n").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
    let config = resetgate_tests::write_config(
        dir.path(),
        &format!("secrets:\n  ldap-bind: {{file: {secret:?}}}\n"),
    );
    let err = match resetgate_tests::Gateway::try_start_config(&config, &[]) {
        Err(stderr) => stderr,
        Ok(_) => panic!("serve started with a secret others can read"),
    };
    assert!(err.contains("secret `ldap-bind`"), "{err}");
    assert!(err.contains("chmod 600"), "{err}");
    assert!(!err.contains("canary-serve-5531"), "{err}");

    // Fixed, it starts; a SIGHUP re-reads the secrets (here: one gone bad
    // again), and the gateway keeps the ones it had and says why.
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let gateway = resetgate_tests::Gateway::start_config(&config, &[]);
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o640)).unwrap();
    gateway.signal("HUP");
    let logs = gateway.wait_for_log("capabilities reload refused");
    assert!(logs.contains("secret `ldap-bind`"), "{logs}");
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    gateway.signal("HUP");
    let logs = gateway.wait_for_log("reloaded secrets, LDAP connections and HTTP origins");
    assert!(!logs.contains("canary-serve-5531"), "{logs}");
    assert_eq!(gateway.get("/healthz").0, 200);
}
