//! The `kv` capability, the `local-users` directory and `resetgate users`
//! (which share one record format), the attribute gate, and a whole reset
//! through the demo workflow with a user the CLI added.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

use resetgate::config::GatewayConfig;
use resetgate::contract::{
    CallContext, FieldKind, FieldValue, PluginFailure, PluginKind, SetPasswordFailure, User,
    Verdict,
};
use resetgate::engine::{Notice, State};
use resetgate::plugin::{CallError, Grants, LoadSpec, Plugin, PluginHost};
use resetgate::runtime::Runtime;
use resetgate::secret::Secret;
use resetgate::store::SledStore;
use resetgate::users::{NewUser, Users, parse_attributes, record};
use resetgate_tests::{FIRST_PARTY, Gateway, binary, host, root, wasm};

const T0: u64 = 1_763_856_000_000;

/// A plugins folder with the first-party plugins under the names workflows
/// use, and `kv-probe` twice, as `probe-a` and `probe-b`.
fn plugins_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for name in FIRST_PARTY {
        std::fs::copy(wasm(name), dir.path().join(format!("{name}.wasm"))).unwrap();
    }
    for name in ["probe-a", "probe-b"] {
        std::fs::copy(wasm("kv-probe"), dir.path().join(format!("{name}.wasm"))).unwrap();
    }
    dir
}

/// A plugin host given the store in `data` for `kv`.
fn host_with_store(data: &Path) -> (PluginHost, Arc<SledStore>, tempfile::TempDir) {
    let (host, cache) = host();
    let store = Arc::new(SledStore::open(data).unwrap());
    host.set_capabilities(Arc::new(resetgate::plugin::Capabilities::with_kv(
        store.clone(),
    )));
    (host, store, cache)
}

fn kv_spec(kind: PluginKind) -> LoadSpec {
    LoadSpec {
        kind: Some(kind),
        grants: Grants {
            kv: true,
            ..Grants::default()
        },
        ..LoadSpec::default()
    }
}

/// Runs one `kv-probe` command (see the plugin's docs); its answer.
fn probe(plugin: &Plugin, command: &str) -> Result<String, CallError> {
    let ctx = CallContext {
        config: serde_json::to_string(command).unwrap(),
        ..CallContext::default()
    };
    plugin
        .gate()
        .unwrap()
        .begin(&ctx, &User::default(), None)
        .map(|r| r.unwrap().prompt.title)
}

fn refusal(result: Result<String, CallError>) -> String {
    match result {
        Err(CallError::Refused { reason, .. }) => reason,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn kv_is_durable_across_a_host_restart_and_scoped_per_plugin_name() {
    let data = tempfile::tempdir().unwrap();
    let plugins = plugins_dir();
    let a_path = plugins.path().join("probe-a.wasm");
    let b_path = plugins.path().join("probe-b.wasm");
    {
        let (host, store, _cache) = host_with_store(data.path());
        let a = host.load(&a_path, &kv_spec(PluginKind::Gate)).unwrap();
        let b = host.load(&b_path, &kv_spec(PluginKind::Gate)).unwrap();
        for command in ["set user/alice one", "set user/bob two", "set other x"] {
            assert_eq!(probe(&a, command).unwrap(), "ok");
        }
        assert_eq!(probe(&a, "get user/alice").unwrap(), "some:one");
        assert_eq!(probe(&a, "keys user/ 1000").unwrap(), "user/alice,user/bob");
        assert_eq!(probe(&a, "keys user/ 1").unwrap(), "user/alice");
        assert_eq!(
            probe(&a, "keys  1000").unwrap(),
            "other,user/alice,user/bob"
        );
        assert_eq!(probe(&a, "delete user/bob").unwrap(), "true");
        assert_eq!(probe(&a, "delete user/bob").unwrap(), "false");
        // The same component under another name has a namespace of its own.
        assert_eq!(probe(&b, "get user/alice").unwrap(), "none");
        assert_eq!(probe(&b, "keys  1000").unwrap(), "");
        assert_eq!(probe(&b, "set user/alice b-one").unwrap(), "ok");
        assert_eq!(probe(&a, "get user/alice").unwrap(), "some:one");
        store.close();
    }
    // A new host on the same data folder: what was set is there.
    let (host, _store, _cache) = host_with_store(data.path());
    let a = host.load(&a_path, &kv_spec(PluginKind::Gate)).unwrap();
    let b = host.load(&b_path, &kv_spec(PluginKind::Gate)).unwrap();
    assert_eq!(probe(&a, "get user/alice").unwrap(), "some:one");
    assert_eq!(probe(&a, "get user/bob").unwrap(), "none");
    assert_eq!(probe(&a, "keys  1000").unwrap(), "other,user/alice");
    assert_eq!(probe(&b, "keys  1000").unwrap(), "user/alice");
    assert_eq!(probe(&b, "get user/alice").unwrap(), "some:b-one");
}

#[test]
fn kv_out_of_bounds_stops_the_call_without_showing_the_value() {
    let data = tempfile::tempdir().unwrap();
    let plugins = plugins_dir();
    let (host, _store, _cache) = host_with_store(data.path());
    let a = host
        .load(
            &plugins.path().join("probe-a.wasm"),
            &kv_spec(PluginKind::Gate),
        )
        .unwrap();
    let reason = refusal(probe(&a, "set-big k 65537"));
    assert_eq!(reason, "kv value is 65537 bytes; the limit is 65536");
    assert_eq!(probe(&a, "set-big k 65536").unwrap(), "ok");
    let reason = refusal(probe(&a, "get-long 257"));
    assert_eq!(reason, "kv key is 257 bytes; the limit is 256");
    assert_eq!(probe(&a, "get-long 256").unwrap(), "None");
    let reason = refusal(probe(&a, "keys  1001"));
    assert!(reason.contains("the limit is 1000 per call"), "{reason}");
    // The host keeps serving the plugin; the large value is intact.
    let title = probe(&a, "get k").unwrap();
    assert_eq!(title.len(), "some:".len() + 65536);
    assert!(title.starts_with("some:SECRETVALUESECRETVALUE"));
    let failed = probe(&a, "set-big k 70000").unwrap_err().to_string();
    assert!(!failed.contains("SECRETVALUE"), "{failed}");
}

#[test]
fn kv_needs_its_grant_and_without_a_store_stops_the_call() {
    let plugins = plugins_dir();
    let (host, _cache) = host();
    // Not granted: it loads with a warning naming the grant, and a call that
    // uses kv is stopped with the same advice.
    let a = host
        .load(
            &plugins.path().join("probe-a.wasm"),
            &LoadSpec {
                kind: Some(PluginKind::Gate),
                ..LoadSpec::default()
            },
        )
        .unwrap();
    let warnings: Vec<String> = a.warnings().iter().map(ToString::to_string).collect();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].contains("kv, which this step does not grant"),
        "{warnings:?}"
    );
    assert!(warnings[0].contains("grants: { kv: true }"), "{warnings:?}");
    let reason = refusal(probe(&a, "get k"));
    assert!(reason.contains("does not grant"), "{reason}");
    assert!(reason.contains("grants: { kv: true }"), "{reason}");
    // Granted, on a host that was given no store (`resetgate check`): it
    // loads, and a call that uses kv is stopped.
    let a = host
        .load(
            &plugins.path().join("probe-a.wasm"),
            &kv_spec(PluginKind::Gate),
        )
        .unwrap();
    let reason = refusal(probe(&a, "get k"));
    assert!(reason.contains("no store"), "{reason}");
}

// ----- local-users and its records -------------------------------------------

fn ctx() -> CallContext {
    CallContext {
        flow_id: "flow-1".into(),
        workflow: "demo".into(),
        step: "directory".into(),
        config: "{}".into(),
        now_ms: T0,
        language: String::new(),
    }
}

#[test]
fn local_users_reads_and_writes_the_records_users_writes() {
    let data = tempfile::tempdir().unwrap();
    let plugins = plugins_dir();
    let (host, store, _cache) = host_with_store(data.path());
    let users = Users::new(store.clone(), record::NAMESPACE).unwrap();
    let added = users
        .add(
            NewUser {
                name: "  Alice ".into(),
                display_name: Some("Alice Liddell".into()),
                attributes: parse_attributes(&["employee_id=4711".into()]).unwrap(),
                password: Some(Secret::from("old-password-0001")),
                ..NewUser::default()
            },
            false,
        )
        .unwrap();
    users
        .add(
            NewUser {
                name: "dave".into(),
                password: Some(Secret::from("daves-password-01")),
                disabled: true,
                ..NewUser::default()
            },
            false,
        )
        .unwrap();
    let plugin = host
        .load(
            &plugins.path().join("local-users.wasm"),
            &kv_spec(PluginKind::Directory),
        )
        .unwrap();
    let dir = plugin.directory().unwrap();
    let alice = dir.find_user(&ctx(), " ALICE").unwrap().unwrap().unwrap();
    assert_eq!(alice.id, added.id);
    assert_eq!(alice.name, "alice");
    assert_eq!(
        alice.attributes,
        [
            ("employee_id".to_owned(), "4711".to_owned()),
            ("display_name".to_owned(), "Alice Liddell".to_owned())
        ]
    );
    // Disabled, unknown, and a name too long to be a key: all unknown.
    for name in ["dave", "nobody", &"x".repeat(300)] {
        assert_eq!(
            dir.find_user(&ctx(), name).unwrap().unwrap(),
            None,
            "{name}"
        );
    }
    assert!(dir.reachable(&ctx()).unwrap());
    let verify = |user: &User, p: &str| {
        dir.verify_password(&ctx(), user, &Secret::from(p))
            .unwrap()
            .unwrap()
    };
    assert!(verify(&alice, "old-password-0001"));
    assert!(!verify(&alice, "old-password-0002"));

    dir.set_password(&ctx(), &alice, &Secret::from("new-password-0001"), true)
        .unwrap()
        .unwrap();
    let stored = users.get("alice").unwrap().unwrap();
    assert_eq!(stored.id, added.id);
    assert!(stored.must_change);
    assert_eq!(stored.attributes, added.attributes);
    let phc = stored.password.unwrap();
    assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
    assert!(resetgate::plugin::verify_secret(&Secret::from("new-password-0001"), &phc).unwrap());
    assert!(verify(&alice, "new-password-0001"));
    assert!(!verify(&alice, "old-password-0001"));
    // Setting it again clears must-change unless asked; expiring sets it.
    dir.set_password(&ctx(), &alice, &Secret::from("new-password-0002"), false)
        .unwrap()
        .unwrap();
    assert!(!users.get("alice").unwrap().unwrap().must_change);
    dir.expire_password(&ctx(), &alice).unwrap().unwrap();
    assert!(users.get("alice").unwrap().unwrap().must_change);
    dir.unlock(&ctx(), &alice).unwrap().unwrap();

    // A user replaced (new id) or removed since it was found is not written.
    users
        .add(
            NewUser {
                name: "alice".into(),
                ..NewUser::default()
            },
            true,
        )
        .unwrap();
    assert!(!verify(&alice, "new-password-0002"));
    let refused = dir
        .set_password(&ctx(), &alice, &Secret::from("new-password-0003"), false)
        .unwrap();
    assert!(
        matches!(
            refused,
            Err(SetPasswordFailure::Other(PluginFailure::Refused(_)))
        ),
        "{refused:?}"
    );
    assert_eq!(users.get("alice").unwrap().unwrap().password, None);
}

// ----- resetgate users ---------------------------------------------------------

/// Runs `resetgate users ARGS... --data-dir DATA`, writing `stdin` to its
/// standard input; returns (status ok, stdout, stderr).
fn users_cli(data: &Path, args: &[&str], stdin: &str) -> (bool, String, String) {
    let mut child = Command::new(binary())
        .arg("users")
        .args(args)
        .arg("--data-dir")
        .arg(data)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
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
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn listed(data: &Path) -> Vec<serde_json::Value> {
    let (ok, out, err) = users_cli(data, &["list", "--json"], "");
    assert!(ok, "{err}");
    assert!(!out.contains("argon2"), "{out}");
    serde_json::from_str(&out).unwrap()
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![];
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

fn assert_not_in_files(dir: &Path, secret: &str) {
    for file in walk(dir) {
        let bytes = std::fs::read(&file).unwrap();
        assert!(
            !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "{} holds a password in clear",
            file.display()
        );
    }
}

#[test]
fn users_add_list_and_remove_through_the_binary() {
    let data = tempfile::tempdir().unwrap();
    // Nothing there yet: an empty list, and no database created for it.
    assert!(listed(data.path()).is_empty());
    assert!(!data.path().join("db").exists());

    let old = "CANARY-old-7c1e-stapler";
    let (ok, out, err) = users_cli(
        data.path(),
        &[
            "add",
            "Alice",
            "--display-name",
            "Alice Liddell",
            "--attr",
            "employee_id=4711",
            "--attr",
            "dept=IT",
            "--password-stdin",
        ],
        &format!("{old}\n"),
    );
    assert!(ok, "{err}");
    assert!(out.starts_with("added user alice (u-"), "{out}");
    let (ok, _, err) = users_cli(data.path(), &["add", "ALICE"], "");
    assert!(!ok);
    assert!(
        err.contains("user \"alice\" already exists; use --replace"),
        "{err}"
    );
    let (ok, out, err) = users_cli(data.path(), &["add", "bob", "--random-password"], "");
    assert!(ok, "{err}");
    assert!(!out.contains("password"), "{out}");
    let (ok, out, err) = users_cli(
        data.path(),
        &["add", "carol", "--random-password", "--print-password"],
        "",
    );
    assert!(ok, "{err}");
    let printed = out
        .lines()
        .find_map(|l| l.strip_prefix("password: "))
        .unwrap();
    assert_eq!(printed.len(), 20);
    let (ok, _, err) = users_cli(data.path(), &["add", "dave", "--attr", "novalue"], "");
    assert!(!ok);
    assert!(err.contains("attribute \"novalue\" is invalid"), "{err}");

    let (ok, table, err) = users_cli(data.path(), &["list"], "");
    assert!(ok, "{err}");
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("NAME"), "{table}");
    assert!(lines[1].starts_with("alice "), "{table}");
    assert!(
        lines[1].ends_with("Alice Liddell  dept=IT employee_id=4711"),
        "{table}"
    );
    assert!(lines[2].starts_with("bob "), "{table}");
    assert!(lines[3].starts_with("carol "), "{table}");
    assert!(!table.contains("argon2") && !table.contains(printed));

    let users = listed(data.path());
    let alice = &users[0];
    assert_eq!(alice["name"], "alice");
    assert!(alice["id"].as_str().unwrap().starts_with("u-"));
    assert_eq!(alice["attributes"]["employee_id"], "4711");
    assert_eq!(alice["has_password"], true);
    assert_eq!(alice["disabled"], false);
    assert_eq!(alice["must_change"], false);

    let (ok, out, err) = users_cli(data.path(), &["remove", " Bob "], "");
    assert!(ok, "{err}");
    assert_eq!(out, "removed user bob\n");
    let (ok, _, err) = users_cli(data.path(), &["remove", "bob"], "");
    assert!(!ok);
    assert!(err.contains("no user \"bob\""), "{err}");
    let names: Vec<String> = listed(data.path())
        .iter()
        .map(|u| u["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["alice", "carol"]);
    assert_not_in_files(data.path(), old);
    assert_not_in_files(data.path(), printed);
}

#[test]
fn users_refuse_a_data_dir_held_by_a_running_gateway() {
    let data = tempfile::tempdir().unwrap();
    let plugins = plugins_dir();
    let gw = Gateway::start(data.path(), plugins.path());
    for args in [&["list"][..], &["add", "erin", "--random-password"][..]] {
        let (ok, out, err) = users_cli(data.path(), args, "");
        assert!(!ok, "{args:?}: {out}");
        assert!(
            err.contains(&format!(
                "error: the gateway is running on this data directory ({}); use `resetgate admin users ...` to manage the users through it (or stop it first)",
                data.path().display()
            )),
            "{err}"
        );
    }
    assert!(gw.stop());
    let (ok, _, err) = users_cli(data.path(), &["add", "erin", "--random-password"], "");
    assert!(ok, "{err}");
}

// ----- a whole reset through the demo workflow -----------------------------------

fn value(v: &str) -> Vec<FieldValue> {
    vec![FieldValue {
        name: "value".into(),
        value: Secret::from(v),
    }]
}

#[test]
fn a_reset_through_the_demo_workflow_for_a_user_the_cli_added() {
    let data = tempfile::tempdir().unwrap();
    let plugins = plugins_dir();
    let old = "CANARY-old-4d2a-lantern";
    let new = "CANARY-new-91b7-horse-battery";
    let (ok, _, err) = users_cli(
        data.path(),
        &[
            "add",
            "Alice",
            "--attr",
            "employee_id=E-4711",
            "--password-stdin",
        ],
        &format!("{old}\n"),
    );
    assert!(ok, "{err}");
    let id = listed(data.path())[0]["id"].as_str().unwrap().to_owned();
    {
        let (host, store, _cache) = host_with_store(data.path());
        let config = GatewayConfig {
            plugins: plugins.path().to_owned(),
            data_dir: data.path().to_owned(),
            ..GatewayConfig::default()
        };
        let (wf, warnings) =
            resetgate::workflow::load_file(&host, &config, &root().join("workflows/demo.yaml"))
                .unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        let wf = Arc::new(wf);
        let rt = Runtime::new(
            store.clone(),
            Arc::new(resetgate::seal::DataKey::generate().unwrap()),
            vec![wf.clone()],
        );

        // A wrong employee id fails the gate.
        let flow = rt.start("demo", "alice", T0).unwrap().flow;
        let State::Gate { prompt, .. } = &flow.state else {
            panic!("{:?}", flow.state)
        };
        assert_eq!(prompt.fields[0].name, "value");
        assert_eq!(prompt.fields[0].kind, FieldKind::Text);
        let out = rt.answer(&flow.id, value("E-4712"), T0 + 1).unwrap();
        assert_eq!(
            out.notice,
            Some(Notice::WrongAnswer),
            "{:?}",
            out.flow.state
        );
        assert!(!matches!(out.flow.state, State::AwaitingPassword));

        // The right one, typed sloppily, passes; the new password is set.
        let flow = rt.start("demo", " ALICE ", T0 + 2).unwrap().flow;
        let out = rt.answer(&flow.id, value("  e-4711 "), T0 + 3).unwrap();
        assert_eq!(out.flow.state, State::AwaitingPassword, "{:?}", out.notice);
        let out = rt.password(&flow.id, Secret::from(new), T0 + 4).unwrap();
        assert!(
            matches!(out.flow.state, State::Completed { .. }),
            "{:?}",
            out.flow.state
        );

        let dir = wf.directory.plugin.directory().unwrap();
        let user = dir.find_user(&ctx(), "alice").unwrap().unwrap().unwrap();
        assert_eq!(user.id, id);
        let verify = |p: &str| {
            dir.verify_password(&ctx(), &user, &Secret::from(p))
                .unwrap()
                .unwrap()
        };
        assert!(verify(new), "the new password is refused");
        assert!(!verify(old), "the old password still works");
        drop(rt);
        store.close();
    }
    // The CLI reads what the plugin wrote: same user, same id, a password,
    // no must-change.
    let users = listed(data.path());
    assert_eq!(users.len(), 1);
    assert_eq!(users[0]["id"], id.as_str());
    assert_eq!(users[0]["attributes"]["employee_id"], "E-4711");
    assert_eq!(users[0]["has_password"], true);
    assert_eq!(users[0]["must_change"], false);
    assert_not_in_files(data.path(), new);
    assert_not_in_files(data.path(), old);
}

#[test]
fn a_workflow_that_forces_a_change_at_next_logon_tells_the_directory() {
    let data = tempfile::tempdir().unwrap();
    let plugins = plugins_dir();
    let (ok, _, err) = users_cli(
        data.path(),
        &[
            "add",
            "bob",
            "--attr",
            "employee_id=E-5",
            "--random-password",
        ],
        "",
    );
    assert!(ok, "{err}");
    assert_eq!(listed(data.path())[0]["must_change"], false);
    let flows = tempfile::tempdir().unwrap();
    let demo = std::fs::read_to_string(root().join("workflows/demo.yaml")).unwrap();
    let forced = demo.replace(
        "  reject_user_name: true\n",
        "  reject_user_name: true\n  must_change: true\n",
    );
    assert_ne!(forced, demo);
    std::fs::write(flows.path().join("demo.yaml"), forced).unwrap();
    std::fs::copy(
        root().join("workflows/blocklist.txt"),
        flows.path().join("blocklist.txt"),
    )
    .unwrap();
    {
        let (host, store, _cache) = host_with_store(data.path());
        let config = GatewayConfig {
            plugins: plugins.path().to_owned(),
            data_dir: data.path().to_owned(),
            ..GatewayConfig::default()
        };
        let (wf, _) =
            resetgate::workflow::load_file(&host, &config, &flows.path().join("demo.yaml"))
                .unwrap();
        assert!(wf.password.must_change);
        let rt = Runtime::new(
            store.clone(),
            Arc::new(resetgate::seal::DataKey::generate().unwrap()),
            vec![Arc::new(wf)],
        );
        let flow = rt.start("demo", "bob", T0).unwrap().flow;
        let out = rt.answer(&flow.id, value("E-5"), T0 + 1).unwrap();
        assert_eq!(out.flow.state, State::AwaitingPassword, "{:?}", out.notice);
        let out = rt
            .password(&flow.id, Secret::from("a temporary one 4417"), T0 + 2)
            .unwrap();
        assert!(matches!(out.flow.state, State::Completed { .. }));
        drop(rt);
        store.close();
    }
    assert_eq!(listed(data.path())[0]["must_change"], true);
}

// ----- the attribute gate ------------------------------------------------------------

#[test]
fn the_attribute_gate_compares_trimmed_case_insensitively_and_fails_without_the_attribute() {
    let (host, _cache) = host();
    let plugin = host
        .load(
            &wasm("attribute-gate"),
            &LoadSpec {
                kind: Some(PluginKind::Gate),
                ..LoadSpec::default()
            },
        )
        .unwrap();
    assert_eq!(plugin.info().name, "attribute-gate");
    let schema = &plugin.info().config_schema;
    assert_eq!(
        schema["required"],
        serde_json::json!(["attribute", "label"])
    );
    let gate = plugin.gate().unwrap();
    let c = CallContext {
        config: serde_json::json!({
            "attribute": "employee_id", "label": "Employee ID", "help": "On your badge", "kind": "code"
        })
        .to_string(),
        ..ctx()
    };
    let user = |attributes: &[(&str, &str)]| User {
        id: "u-1".into(),
        name: "alice".into(),
        attributes: attributes
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    };
    let with = user(&[("mail", "a@example.com"), ("Employee_ID", " AB-12 ")]);
    let round = gate.begin(&c, &with, None).unwrap().unwrap();
    assert_eq!(round.prompt.title, "Employee ID");
    assert_eq!(round.prompt.help.as_deref(), Some("On your badge"));
    assert_eq!(round.prompt.fields.len(), 1);
    assert_eq!(round.prompt.fields[0].name, "value");
    assert_eq!(round.prompt.fields[0].label, "Employee ID");
    assert_eq!(round.prompt.fields[0].kind, FieldKind::Code);
    // The prompt does not depend on the user.
    let without = user(&[("mail", "a@example.com")]);
    assert_eq!(
        gate.begin(&c, &without, None).unwrap().unwrap().prompt,
        round.prompt
    );
    let judge = |u: &User, v: &str| {
        gate.answer(&c, u, None, &round.state, &value(v))
            .unwrap()
            .unwrap()
    };
    for right in ["AB-12", "ab-12", "  aB-12\t"] {
        assert_eq!(judge(&with, right), Verdict::Passed, "{right:?}");
    }
    for wrong in ["AB-13", "AB-1", "AB-123", "", "AB 12"] {
        assert!(
            matches!(judge(&with, wrong), Verdict::Failed(_)),
            "{wrong:?}"
        );
    }
    // No attribute, an empty one, or a decoy (unknown) user: nothing passes.
    let empty = user(&[("employee_id", "  ")]);
    for u in [&without, &empty, &User::default()] {
        for v in ["", "AB-12", "\u{0}"] {
            assert!(matches!(judge(u, v), Verdict::Failed(_)), "{v:?}");
        }
    }
    // A state the gate did not make is an error, not a pass.
    let bad = gate
        .answer(&c, &with, None, b"other", &value("AB-12"))
        .unwrap();
    assert!(matches!(bad, Err(PluginFailure::Internal(_))), "{bad:?}");
}
