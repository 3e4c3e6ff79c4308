//! Loading and calling one example plugin of each kind through the host.

use resetgate::contract::{
    CallContext, Change, Decision, FieldKind, FieldValue, History, PluginKind, SetPasswordFailure,
    User, Verdict,
};
use resetgate::plugin::{LoadError, LoadSpec};
use resetgate::secret::Secret;
use resetgate_tests::{host, wasm};

fn ctx(config: serde_json::Value) -> CallContext {
    CallContext {
        flow_id: "flow-1".into(),
        workflow: "test".into(),
        step: "step".into(),
        config: config.to_string(),
        now_ms: 1_700_000_000_000,
        language: String::new(),
    }
}

fn alice() -> User {
    User {
        id: "uid=alice".into(),
        name: "alice".into(),
        attributes: vec![],
    }
}

fn spec(kind: PluginKind) -> LoadSpec {
    LoadSpec {
        kind: Some(kind),
        ..LoadSpec::default()
    }
}

#[test]
fn gate_enrolls_and_checks_an_answer_with_a_host_made_hash() {
    let (host, _dir) = host();
    let plugin = host
        .load(&wasm("example-question"), &spec(PluginKind::Gate))
        .unwrap();
    assert_eq!(plugin.info().name, "example-question");
    assert_eq!(plugin.info().kind, PluginKind::Gate);
    let gate = plugin.gate().unwrap();
    let c = ctx(serde_json::json!({"question": "Your first pet?"}));

    let answer = |v: &str| {
        vec![FieldValue {
            name: "answer".into(),
            value: Secret::from(v),
        }]
    };
    let enrollment = gate
        .enroll(&c, &alice(), &[], &answer("  Rex  the Dog "))
        .unwrap()
        .unwrap();
    let stored = String::from_utf8(enrollment.clone()).unwrap();
    assert!(
        stored.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
        "{stored}"
    );
    assert!(
        !stored.contains("rex"),
        "the answer must be stored only as a hash"
    );

    let round = gate
        .begin(&c, &alice(), Some(&enrollment))
        .unwrap()
        .unwrap();
    assert_eq!(round.prompt.fields[0].kind, FieldKind::Secret);
    assert_eq!(round.prompt.fields[0].label, "Your first pet?");

    let right = gate
        .answer(
            &c,
            &alice(),
            Some(&enrollment),
            &round.state,
            &answer("rex the dog"),
        )
        .unwrap()
        .unwrap();
    assert_eq!(right, Verdict::Passed);
    let wrong = gate
        .answer(
            &c,
            &alice(),
            Some(&enrollment),
            &round.state,
            &answer("fluffy"),
        )
        .unwrap()
        .unwrap();
    assert!(matches!(wrong, Verdict::Failed(_)));
    let unenrolled = gate
        .answer(&c, &alice(), None, &round.state, &answer("rex the dog"))
        .unwrap()
        .unwrap();
    assert!(matches!(unenrolled, Verdict::Failed(_)));
}

#[test]
fn lockout_follows_the_fim_ladder() {
    let (host, _dir) = host();
    let plugin = host
        .load(&wasm("example-lockout"), &spec(PluginKind::Lockout))
        .unwrap();
    let lockout = plugin.lockout().unwrap();
    let mut c = ctx(
        serde_json::json!({"threshold": 3, "lockout_ms": [60_000, 600_000], "max_lockouts": 3}),
    );
    let t0 = c.now_ms;
    let history = |n: u64| History {
        failures_ms: (0..n).map(|i| t0 - 10 + i).collect(),
        last_success_ms: None,
    };

    assert_eq!(
        lockout.decide(&c, &history(2)).unwrap().unwrap(),
        Decision::Allowed
    );
    assert_eq!(
        lockout.decide(&c, &history(3)).unwrap().unwrap(),
        Decision::LockedUntil(t0 - 8 + 60_000)
    );
    c.now_ms = t0 + 60_000;
    assert_eq!(
        lockout.decide(&c, &history(3)).unwrap().unwrap(),
        Decision::Allowed,
        "first lockout has expired"
    );
    c.now_ms = t0;
    assert_eq!(
        lockout.decide(&c, &history(6)).unwrap().unwrap(),
        Decision::LockedUntil(t0 - 5 + 600_000)
    );
    assert_eq!(
        lockout.decide(&c, &history(9)).unwrap().unwrap(),
        Decision::LockedPermanently
    );
}

#[test]
fn directory_finds_users_and_reports_its_own_password_rule() {
    let (host, _dir) = host();
    let plugin = host
        .load(&wasm("example-directory"), &spec(PluginKind::Directory))
        .unwrap();
    let dir = plugin.directory().unwrap();
    let c = ctx(
        serde_json::json!({"users": [{"name": "alice", "mail": "alice@example.test"}], "min_length": 10}),
    );

    let user = dir.find_user(&c, " Alice ").unwrap().unwrap().unwrap();
    assert_eq!(user.name, "alice");
    assert_eq!(
        user.attributes,
        vec![("mail".to_owned(), "alice@example.test".to_owned())]
    );
    assert_eq!(dir.find_user(&c, "mallory").unwrap().unwrap(), None);

    dir.set_password(&c, &user, &Secret::from("correct horse battery"), true)
        .unwrap()
        .unwrap();
    let short = dir
        .set_password(&c, &user, &Secret::from("short"), false)
        .unwrap();
    assert!(
        matches!(short, Err(SetPasswordFailure::RejectedByPolicy(ref m)) if m.contains("10 characters")),
        "{short:?}"
    );
    assert!(dir.reachable(&c).unwrap());
    dir.unlock(&c, &user).unwrap().unwrap();
    dir.expire_password(&c, &user).unwrap().unwrap();
}

#[test]
fn vpn_hook_connects_and_probes() {
    let (host, _dir) = host();
    let plugin = host
        .load(&wasm("example-vpn"), &spec(PluginKind::VpnHook))
        .unwrap();
    let vpn = plugin.vpn_hook().unwrap();
    vpn.connect(&ctx(serde_json::json!({})), Some(&alice()))
        .unwrap()
        .unwrap();
    vpn.disconnect(&ctx(serde_json::json!({})))
        .unwrap()
        .unwrap();
    assert!(
        vpn.probe(&ctx(serde_json::json!({"reachable": true})))
            .unwrap()
    );
    assert!(
        !vpn.probe(&ctx(serde_json::json!({"reachable": false})))
            .unwrap()
    );
}

#[test]
fn sync_target_takes_a_change_with_the_password_as_a_handle() {
    let (host, _dir) = host();
    let plugin = host
        .load(&wasm("example-sync"), &spec(PluginKind::SyncTarget))
        .unwrap();
    let sync = plugin.sync_target().unwrap();
    let change = |name: &str| Change {
        idempotency_key: "k-1".into(),
        user: User {
            id: format!("uid={name}"),
            name: name.into(),
            attributes: vec![],
        },
        changed_at_ms: 1,
    };
    let c = ctx(serde_json::json!({"refuse": ["bob"]}));
    sync.push(&c, &change("alice"), &Secret::from("new password 1"))
        .unwrap()
        .unwrap();
    let refused = sync
        .push(&c, &change("bob"), &Secret::from("new password 1"))
        .unwrap();
    assert!(
        matches!(refused, Err(resetgate::contract::PushFailure::Permanent(_))),
        "{refused:?}"
    );
}

#[test]
fn a_plugin_of_another_kind_is_refused_for_a_step() {
    let (host, _dir) = host();
    let err = host
        .load(&wasm("example-lockout"), &spec(PluginKind::Gate))
        .err()
        .unwrap();
    assert!(matches!(
        err,
        LoadError::WrongKind {
            expected: PluginKind::Gate,
            actual: PluginKind::Lockout,
            ..
        }
    ));
    assert_eq!(
        err.to_string(),
        "plugin example_lockout.wasm is a lockout plugin but is used as a gate"
    );
    // The typed accessors follow the world.
    let plugin = host
        .load(&wasm("example-lockout"), &LoadSpec::default())
        .unwrap();
    assert!(plugin.gate().is_none() && plugin.lockout().is_some());
}

#[test]
fn another_contract_version_is_refused_naming_both_versions() {
    let (host, _dir) = host();
    let err = host
        .load(&wasm("future-version"), &LoadSpec::default())
        .err()
        .unwrap();
    let msg = err.to_string();
    assert!(matches!(err, LoadError::ContractVersion { .. }), "{msg}");
    assert!(
        msg.contains("@0.3.0")
            && msg.contains(&format!(
                "resetgate:plugin@{}",
                resetgate::contract::CONTRACT_VERSION
            )),
        "{msg}"
    );
}

#[test]
fn a_plugin_built_against_contract_0_1_is_refused_naming_both_versions() {
    let (host, _dir) = host();
    let err = host
        .load(&wasm("past-version"), &LoadSpec::default())
        .err()
        .unwrap();
    let msg = err.to_string();
    assert!(matches!(err, LoadError::ContractVersion { .. }), "{msg}");
    assert!(
        msg.contains("@0.1.0")
            && msg.contains(&format!(
                "resetgate:plugin@{}",
                resetgate::contract::CONTRACT_VERSION
            )),
        "{msg}"
    );
}

#[test]
fn a_plugin_that_lies_about_its_kind_is_refused() {
    let (host, _dir) = host();
    let err = host
        .load(&wasm("liar"), &LoadSpec::default())
        .err()
        .unwrap();
    assert!(
        matches!(
            err,
            LoadError::DescribeMismatch {
                world: PluginKind::Lockout,
                described: PluginKind::Gate,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn a_file_that_is_not_a_component_is_refused_clearly() {
    let (host, dir) = host();
    let bogus = dir.path().join("bogus.wasm");
    std::fs::write(&bogus, b"definitely not wasm").unwrap();
    let err = host.load(&bogus, &LoadSpec::default()).err().unwrap();
    assert!(matches!(err, LoadError::Compile { .. }), "{err}");
    assert!(
        err.to_string().contains("is not a WebAssembly component"),
        "{err}"
    );
}

#[test]
fn an_exhausted_instance_pool_makes_callers_wait_instead_of_failing() {
    use resetgate::plugin::{HostConfig, PluginHost};
    let dir = tempfile::tempdir().unwrap();
    // Fewer slots than calls at once (with their store's own slots): a
    // call that finds every slot taken waits for one to be given back.
    let host = PluginHost::new(HostConfig {
        max_instances: 2,
        ..HostConfig::new(dir.path())
    })
    .unwrap();
    let plugin = host
        .load(&wasm("example-vpn"), &spec(PluginKind::VpnHook))
        .unwrap();
    let c = ctx(serde_json::json!({"reachable": true}));
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                for _ in 0..50 {
                    assert!(plugin.vpn_hook().unwrap().probe(&c).unwrap());
                }
            });
        }
    });
    assert_eq!(host.stats().failures, 0);
}
