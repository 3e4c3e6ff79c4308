//! Flows through the runtime with real plugins and a real store: the
//! lockout race, the FIM ladder, crash safety and the canary password.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use resetgate::contract::FieldValue;
use resetgate::engine::{Notice, State};
use resetgate::runtime::Runtime;
use resetgate::secret::Secret;
use resetgate::store::{SledStore, Store};
use resetgate_tests::{host, test_workflow};

const T0: u64 = 1_763_856_000_000;

fn answer(v: &str) -> Vec<FieldValue> {
    vec![FieldValue {
        name: "answer".into(),
        value: Secret::from(v),
    }]
}

fn runtime(
    dir: &Path,
    lockout: serde_json::Value,
) -> (Runtime, Arc<SledStore>, resetgate::plugin::PluginHost) {
    let (host, cache) = host();
    std::mem::forget(cache);
    let wf = test_workflow(&host, &["alice", "bob"], lockout, &["open sesame"]);
    let store = Arc::new(SledStore::open(dir).unwrap());
    let rt = Runtime::new(
        store.clone(),
        Arc::new(resetgate::seal::DataKey::generate().unwrap()),
        vec![Arc::new(wf)],
    );
    (rt, store, host)
}

fn audit_kinds(store: &SledStore, kind: &str) -> usize {
    resetgate_tests::hooked::audit_entries(store)
        .iter()
        .filter(|e| e.record.kind == kind)
        .count()
}

#[test]
fn fifty_parallel_wrong_answers_count_exactly_up_to_the_threshold() {
    let dir = tempfile::tempdir().unwrap();
    let (rt, store, _host) = runtime(
        dir.path(),
        serde_json::json!({"threshold": 5, "lockout_ms": [900000]}),
    );
    let flows: Vec<String> = (0..50)
        .map(|_| rt.start("test-reset", "alice", T0).unwrap().flow.id)
        .collect();
    let rt = Arc::new(rt);
    let outcomes: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = flows
            .iter()
            .map(|id| {
                let rt = rt.clone();
                s.spawn(move || rt.answer(id, answer("wrong"), T0 + 1).unwrap())
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(
        audit_kinds(&store, "gate.failed"),
        5,
        "exactly five answers were judged"
    );
    let wrong = outcomes
        .iter()
        .filter(|o| o.notice == Some(Notice::WrongAnswer))
        .count();
    let locked = outcomes
        .iter()
        .filter(|o| matches!(o.flow.state, State::Locked { .. }))
        .count();
    assert_eq!((wrong, locked), (4, 46));
    // A new flow for alice looks like any other (no enumeration) but the
    // lockout answers its first attempt; bob is not affected.
    let again = rt.start("test-reset", "ALICE ", T0 + 2).unwrap().flow;
    assert!(matches!(again.state, State::Gate { .. }));
    assert!(matches!(
        rt.answer(&again.id, answer("first answer"), T0 + 3)
            .unwrap()
            .flow
            .state,
        State::Locked { .. }
    ));
    assert!(matches!(
        rt.start("test-reset", "bob", T0 + 2).unwrap().flow.state,
        State::Gate { .. }
    ));
}

#[test]
fn the_fim_ladder_locks_for_a_while_then_permanently() {
    let dir = tempfile::tempdir().unwrap();
    let ladder = serde_json::json!({"threshold": 2, "lockout_ms": [60000], "max_lockouts": 2});
    let (rt, _store, _host) = runtime(dir.path(), ladder);
    let flow = rt.start("test-reset", "alice", T0).unwrap().flow;
    rt.answer(&flow.id, answer("no"), T0).unwrap();
    let out = rt.answer(&flow.id, answer("no"), T0 + 1).unwrap();
    assert_eq!(
        out.flow.state,
        State::Locked {
            until: Some(T0 + 1 + 60_000)
        }
    );
    // Still locked a millisecond before the end; free again at the end.
    // (A flow started while locked is a decoy that can never pass.)
    assert!(
        rt.start("test-reset", "alice", T0 + 60_000)
            .unwrap()
            .flow
            .decoy
    );
    let flow = rt.start("test-reset", "alice", T0 + 60_001).unwrap().flow;
    assert!(matches!(flow.state, State::Gate { .. }));
    assert!(!flow.decoy);
    rt.answer(&flow.id, answer("no"), T0 + 60_002).unwrap();
    let out = rt.answer(&flow.id, answer("no"), T0 + 60_003).unwrap();
    assert_eq!(
        out.flow.state,
        State::Locked { until: None },
        "second lockout is permanent"
    );
    let late = rt
        .start("test-reset", "alice", T0 + 999_999_999)
        .unwrap()
        .flow;
    assert!(late.decoy, "permanently locked");
    assert_eq!(
        rt.answer(&late.id, answer("no"), T0 + 999_999_999)
            .unwrap()
            .flow
            .state,
        State::Locked { until: None }
    );
}

#[test]
fn a_success_in_one_workflow_does_not_clear_another_workflows_failures() {
    let dir = tempfile::tempdir().unwrap();
    let (host, _cache) = host();
    let lockout = serde_json::json!({"threshold": 3, "lockout_ms": [900000]});
    let strict = test_workflow(&host, &["alice"], lockout.clone(), &["open sesame"]);
    let mut weak = test_workflow(&host, &["alice"], lockout, &["open sesame"]);
    weak.name = "weak-reset".into();
    weak.version = "test-weak".into();
    let store = Arc::new(SledStore::open(dir.path()).unwrap());
    let rt = Runtime::new(
        store,
        Arc::new(resetgate::seal::DataKey::generate().unwrap()),
        vec![Arc::new(strict), Arc::new(weak)],
    );

    // Two failures in the strict workflow: one short of its threshold.
    let flow = rt.start("test-reset", "alice", T0).unwrap().flow;
    for t in 1..=2 {
        let out = rt.answer(&flow.id, answer("guess"), T0 + t).unwrap();
        assert_eq!(out.notice, Some(Notice::WrongAnswer));
    }
    // A complete reset through the other workflow...
    let other = rt.start("weak-reset", "alice", T0 + 3).unwrap().flow;
    rt.answer(&other.id, answer("open sesame"), T0 + 4).unwrap();
    let done = rt
        .password(&other.id, Secret::from("purple monkey dishwasher"), T0 + 5)
        .unwrap();
    assert!(matches!(done.flow.state, State::Completed { .. }));
    // ...does not launder them: the next failure is the third.
    let flow = rt.start("test-reset", "alice", T0 + 6).unwrap().flow;
    let out = rt.answer(&flow.id, answer("guess"), T0 + 7).unwrap();
    assert_eq!(
        out.flow.state,
        State::Locked {
            until: Some(T0 + 7 + 900_000)
        },
        "the strict workflow's failures survived the other workflow's success"
    );
}

#[test]
fn a_complete_reset_with_a_canary_leaves_no_trace_of_it() {
    let dir = tempfile::tempdir().unwrap();
    let canary = "CANARY-5d2e-horse-battery";
    {
        let (rt, store, _host) = runtime(dir.path(), serde_json::json!({"threshold": 5}));
        let flow = rt.start("test-reset", "alice", T0).unwrap().flow;
        rt.answer(&flow.id, answer("open sesame"), T0 + 1).unwrap();
        let out = rt.password(&flow.id, Secret::from(canary), T0 + 2).unwrap();
        let State::Completed { receipt } = out.flow.state else {
            panic!("{:?}", out.flow.state)
        };
        assert_eq!(
            receipt.sync,
            vec![("mail".to_owned(), resetgate::engine::Outcome::Ok)]
        );
        assert!(store.audit().verify().unwrap().entries >= 5);
    }
    for entry in walk(dir.path()) {
        let bytes = std::fs::read(&entry).unwrap();
        assert!(
            !bytes.windows(canary.len()).any(|w| w == canary.as_bytes()),
            "{} holds the password in clear",
            entry.display()
        );
        assert!(
            !bytes.windows(11).any(|w| w == b"open sesame"),
            "{} holds an answer in clear",
            entry.display()
        );
    }
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
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

fn progress(passed: usize, state: &str) -> u32 {
    match state {
        "completed" => 4,
        "failed" | "interrupted" | "committing" => 3,
        "awaiting-password" => 2,
        _ => passed as u32,
    }
}

#[test]
fn a_sigkill_mid_run_loses_no_acknowledged_step() {
    let dir = tempfile::tempdir().unwrap();
    let driver = env!("CARGO_BIN_EXE_flow-driver");
    let mut child = Command::new(driver)
        .args(["run", dir.path().to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let logs = std::thread::spawn(move || std::io::read_to_string(stderr).unwrap_or_default());
    let mut acked: std::collections::HashMap<String, (usize, String)> = Default::default();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let started = Instant::now();
    while acked.len() < 400 && started.elapsed() < Duration::from_secs(60) {
        let Some(Ok(line)) = lines.next() else { break };
        let parts: Vec<&str> = line.split_whitespace().collect();
        if let ["ACK", id, passed, state] = parts[..] {
            acked.insert(id.to_owned(), (passed.parse().unwrap(), state.to_owned()));
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let logs = logs.join().unwrap();
    assert!(
        acked.len() >= 100,
        "the driver acknowledged only {} flows",
        acked.len()
    );
    assert!(acked.values().any(|(_, s)| s == "completed"));

    let out = Command::new(driver)
        .args(["check", dir.path().to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stored: std::collections::HashMap<String, (usize, String)> =
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| match l.split_whitespace().collect::<Vec<_>>()[..] {
                ["FLOW", id, passed, state] => {
                    Some((id.to_owned(), (passed.parse().unwrap(), state.to_owned())))
                }
                _ => None,
            })
            .collect();
    for (id, (passed, state)) in &acked {
        let (s_passed, s_state) = stored
            .get(id)
            .unwrap_or_else(|| panic!("acknowledged flow {id} is gone"));
        assert!(
            progress(*s_passed, s_state) >= progress(*passed, state),
            "flow {id}: acknowledged {state} with {passed} gates passed, stored {s_state} with {s_passed}"
        );
        if state == "completed" {
            assert_eq!(s_state, "completed");
        }
    }
    for (id, (passed, state)) in &stored {
        // No flow is past a gate it had not passed.
        let ok = match state.as_str() {
            "gate0" => *passed == 0,
            "gate1" => *passed == 1,
            "awaiting-password" | "completed" | "failed" | "interrupted" => *passed == 2,
            "committing" => false, // recovery ends every interrupted commit
            _ => false,
        };
        assert!(ok, "flow {id} is {state} with {passed} gates passed");
    }
    // The canary password reached neither the data folder nor the logs.
    let canary = "CANARY-9c1f";
    assert!(!logs.contains(canary), "the driver logged the password");
    for path in walk(dir.path()) {
        let bytes = std::fs::read(&path).unwrap();
        assert!(
            !bytes.windows(canary.len()).any(|w| w == canary.as_bytes()),
            "{} holds the password",
            path.display()
        );
    }
}

/// Searches every file under `dir` for `needle`; the files holding it.
fn files_holding(dir: &Path, needle: &str) -> Vec<std::path::PathBuf> {
    walk(dir)
        .into_iter()
        .filter(|path| {
            let bytes = std::fs::read(path).unwrap();
            bytes.windows(needle.len()).any(|w| w == needle.as_bytes())
        })
        .collect()
}

#[test]
fn a_reset_killed_after_the_directory_changed_the_password_reads_unknown_not_failed() {
    let dir = tempfile::tempdir().unwrap();
    let driver = env!("CARGO_BIN_EXE_flow-driver");
    let mut child = Command::new(driver)
        .args(["interrupt", dir.path().to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let logs = std::thread::spawn(move || std::io::read_to_string(stderr).unwrap_or_default());
    // The directory has set the password; the request has not ended.
    let line = BufReader::new(child.stdout.take().unwrap())
        .lines()
        .next()
        .and_then(Result::ok)
        .unwrap_or_default();
    child.kill().unwrap();
    child.wait().unwrap();
    let logs = logs.join().unwrap();
    assert!(line.starts_with("CHANGED "), "{line:?}\n{logs}");
    let flow_id = line["CHANGED ".len()..].to_owned();

    let out = Command::new(driver)
        .args(["check-interrupted", dir.path().to_str().unwrap()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The directory did take the new password...
    assert!(stdout.lines().any(|l| l == "VERIFY true"), "{stdout}");
    // ...so the flow must not say it failed: it says the outcome is unknown.
    let view: serde_json::Value = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("VIEW "))
        .map(|v| serde_json::from_str::<serde_json::Value>(v).unwrap())
        .find(|v| v["id"] == flow_id.as_str())
        .unwrap_or_else(|| panic!("flow {flow_id} is gone: {stdout}"));
    assert_eq!(view["state"], "interrupted", "{view}");
    assert_eq!(view["receipt"]["directory"], "unknown", "{view}");
    assert_eq!(
        view["receipt"]["sync"],
        serde_json::json!([{"id": "mail", "status": "unknown"}]),
        "{view}"
    );
    // The audit log says so too.
    let audit = stdout
        .lines()
        .find_map(|l| l.strip_prefix("AUDIT "))
        .unwrap_or_else(|| panic!("no flow.interrupted record: {stdout}"));
    let audit: serde_json::Value = serde_json::from_str(audit).unwrap();
    assert_eq!(audit["outcome"], "unknown", "{audit}");
    assert_eq!(audit["directory"], "unknown", "{audit}");
    // The password was never stored or logged in clear.
    let canary = "CANARY-4be0";
    assert!(!logs.contains(canary), "the driver logged the password");
    let holding = files_holding(dir.path(), canary);
    assert!(holding.is_empty(), "{holding:?} hold the password");
}

#[test]
fn a_running_flow_finishes_on_the_version_it_started_with() {
    let dir = tempfile::tempdir().unwrap();
    let (host, _cache) = host();
    let v1 = test_workflow(&host, &["alice"], serde_json::json!({}), &["old answer"]);
    let mut v2 = test_workflow(&host, &["alice"], serde_json::json!({}), &["new answer"]);
    v2.version = "test-v2".into();
    let store = Arc::new(SledStore::open(dir.path()).unwrap());
    let rt = Runtime::new(
        store,
        Arc::new(resetgate::seal::DataKey::generate().unwrap()),
        vec![Arc::new(v1)],
    );
    let running = rt.start("test-reset", "alice", T0).unwrap().flow;
    rt.reload(vec![Arc::new(v2)]);
    let out = rt
        .answer(&running.id, answer("old answer"), T0 + 1)
        .unwrap();
    assert_eq!(
        out.flow.state,
        State::AwaitingPassword,
        "the running flow kept its version"
    );
    let fresh = rt.start("test-reset", "alice", T0 + 2).unwrap().flow;
    assert_eq!(fresh.version, "test-v2");
    let out = rt.answer(&fresh.id, answer("old answer"), T0 + 3).unwrap();
    assert_eq!(out.notice, Some(Notice::WrongAnswer));
    let out = rt.answer(&fresh.id, answer("new answer"), T0 + 4).unwrap();
    assert_eq!(out.flow.state, State::AwaitingPassword);
}

#[test]
fn the_sweep_removes_expired_flows_after_their_limits() {
    let dir = tempfile::tempdir().unwrap();
    let (rt, store, _host) = runtime(dir.path(), serde_json::json!({}));
    let idle = rt.start("test-reset", "alice", T0).unwrap().flow;
    let done = rt.start("test-reset", "bob", T0).unwrap().flow;
    rt.answer(&done.id, answer("open sesame"), T0 + 1).unwrap();
    rt.password(&done.id, Secret::from("purple monkey dishwasher"), T0 + 2)
        .unwrap();
    assert_eq!(rt.sweep(T0 + 299_999).unwrap(), 0, "nothing is due yet");
    // 5 minutes idle: the unfinished flow goes; the completed one is kept
    // 10 minutes so the portal can still read its receipt.
    assert_eq!(rt.sweep(T0 + 300_000).unwrap(), 1);
    assert!(matches!(
        rt.flow(&idle.id),
        Err(resetgate::runtime::RuntimeError::UnknownFlow)
    ));
    assert!(rt.flow(&done.id).is_ok());
    assert_eq!(rt.sweep(T0 + 2 + 600_000).unwrap(), 1);
    assert_eq!(audit_kinds(&store, "flow.expired"), 1);
    // `/metrics` counts the sweep's expiry as an end, once.
    let ended = |outcome: &str| rt.metrics.ended.get(&["test-reset", outcome]);
    assert_eq!((ended("expired"), ended("completed")), (1, 1));
    assert_eq!(rt.metrics.started.get(&["test-reset"]), 2);
}

#[test]
fn the_sweep_and_recovery_reach_every_flow_however_many_are_stored() {
    // More flows than one batch of the walk (10,000): the 25 interrupted
    // commits sort after the first batch, so a walk that stopped after it
    // would leave them committing forever and the store would only grow.
    use resetgate::store::{Change, Commit, FlowRecord};
    let dir = tempfile::tempdir().unwrap();
    let (rt, store, _host) = runtime(dir.path(), serde_json::json!({}));
    let record = |id: &str, due_ms: u64, body: Vec<u8>| Commit {
        changes: vec![Change::PutFlow(FlowRecord {
            id: id.to_owned(),
            user: "u".to_owned(),
            version: String::new(),
            in_progress: true,
            due_ms,
            body,
        })],
        audit: vec![],
    };
    let template = rt.start("test-reset", "alice", T0).unwrap().flow;
    let mut staged = Vec::new();
    for i in 0..10_050u32 {
        let mut flow = template.clone();
        flow.id = format!("{i:032x}");
        flow.user_name = format!("user{i}");
        flow.user = None;
        if i >= 10_025 {
            flow.state = State::Committing {
                receipt: Default::default(),
            };
        }
        let due = match flow.state {
            State::Committing { .. } => flow.touched_ms,
            _ => flow.expires_at(),
        };
        let put = record(&flow.id, due, serde_json::to_vec(&flow).unwrap());
        staged.push(store.commit(put).unwrap());
    }
    // Unreadable records (not JSON; a flow's times and state but not the
    // rest) are left alone and stop nothing.
    for (key, value) in [
        ("zz-not-json", "garbage".to_owned()),
        (
            "zz-half-a-flow",
            r#"{"created_ms":0,"touched_ms":0,"idle_ms":1,"absolute_ms":1,"state":{"at":"committing"}}"#
                .to_owned(),
        ),
    ] {
        staged.push(store.commit(record(key, 0, value.into_bytes())).unwrap());
    }
    for durable in staged {
        durable.wait().unwrap();
    }
    assert_eq!(rt.recover(T0 + 5).unwrap(), 25);
    assert!(matches!(
        rt.flow(&format!("{:032x}", 10_049)).unwrap().state,
        State::Interrupted { .. }
    ));
    // Idle for 5 minutes: every unfinished flow goes (the template too);
    // the 25 interrupted ones are kept 10 minutes from the recovery for
    // their receipts.
    assert_eq!(rt.sweep(T0 + 300_000).unwrap(), 10_026);
    assert_eq!(audit_kinds(&store, "flow.expired"), 10_026);
    assert_eq!(rt.sweep(T0 + 5 + 600_000 - 1).unwrap(), 0);
    assert_eq!(rt.sweep(T0 + 5 + 600_000).unwrap(), 25);
    let mut left = Vec::new();
    store
        .export(&mut |item| {
            if let resetgate::store::Item::Flow(r) = item {
                left.push(r.id);
            }
            Ok(())
        })
        .unwrap();
    assert_eq!(left, ["zz-half-a-flow", "zz-not-json"]);
}

#[test]
fn recovery_ends_a_flow_a_crash_interrupted_mid_commit_as_interrupted() {
    use resetgate::store::{Change, Commit, FlowRecord};
    let dir = tempfile::tempdir().unwrap();
    let (rt, store, _host) = runtime(dir.path(), serde_json::json!({}));
    let flow = rt.start("test-reset", "alice", T0).unwrap().flow;
    let mut stored = rt.flow(&flow.id).unwrap();
    stored.state = State::Committing {
        receipt: Default::default(),
    };
    let value = serde_json::to_vec(&stored).unwrap();
    store
        .commit(Commit {
            changes: vec![Change::PutFlow(FlowRecord {
                id: flow.id.clone(),
                user: "u".to_owned(),
                version: stored.version.clone(),
                in_progress: true,
                due_ms: T0,
                body: value,
            })],
            audit: vec![],
        })
        .unwrap()
        .wait()
        .unwrap();
    assert_eq!(rt.recover(T0 + 5).unwrap(), 1);
    assert!(matches!(
        rt.flow(&flow.id).unwrap().state,
        State::Interrupted { receipt } if receipt.directory == resetgate::engine::Outcome::Unknown
    ));
    assert_eq!(audit_kinds(&store, "flow.interrupted"), 1);
    assert_eq!(rt.recover(T0 + 6).unwrap(), 0, "recovery is idempotent");
}

/// A flow left committing by a request that died (its gateway crashed, or
/// the database went away under its last commit) is decided by the next
/// request that takes its user's lock, not only by the next sweep: the
/// portal hears `outcome-unknown` at once.
#[test]
fn a_request_to_a_flow_whose_commit_died_ends_it_interrupted_at_once() {
    use resetgate::store::{Change, Commit, FlowRecord};
    let dir = tempfile::tempdir().unwrap();
    let (rt, store, _host) = runtime(dir.path(), serde_json::json!({}));
    let flow = rt.start("test-reset", "alice", T0).unwrap().flow;
    let mut stored = rt.flow(&flow.id).unwrap();
    stored.state = State::Committing {
        receipt: Default::default(),
    };
    let value = serde_json::to_vec(&stored).unwrap();
    store
        .commit(Commit {
            changes: vec![Change::PutFlow(FlowRecord {
                id: flow.id.clone(),
                user: "u".to_owned(),
                version: stored.version.clone(),
                in_progress: true,
                due_ms: T0,
                body: value,
            })],
            audit: vec![],
        })
        .unwrap()
        .wait()
        .unwrap();
    let out = rt.password(&flow.id, Secret::from("Another-password-1"), T0 + 5);
    assert!(
        matches!(
            out,
            Err(resetgate::runtime::RuntimeError::Refused(
                resetgate::engine::Refusal::Interrupted
            ))
        ),
        "{out:?}"
    );
    assert!(matches!(
        rt.flow(&flow.id).unwrap().state,
        State::Interrupted { .. }
    ));
    assert_eq!(audit_kinds(&store, "flow.interrupted"), 1);
    assert_eq!(rt.recover(T0 + 6).unwrap(), 0);
}
