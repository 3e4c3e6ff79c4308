//! A decoy flow does the work of a real one: for the start and a wrong
//! first answer, a known user and an unknown name cost the same plugin calls
//! (per step and function) and the same store reads and writes (same trees,
//! same number, similar sizes), so the time a request takes does not tell
//! whether a name exists. `BENCHMARKS.md` ("Issue 11") has the timing side: the load
//! client's enumeration phase.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use resetgate::config::GatewayConfig;
use resetgate::contract::FieldValue;
use resetgate::engine::{Notice, State};
use resetgate::runtime::Runtime;
use resetgate::secret::Secret;
use resetgate::store::{AuditRecord, Change, Commit, SledStore};
use resetgate::users::{NewUser, Users};
use resetgate::workflow::Workflow;
use resetgate_tests::hooked::{Hooked, Hooks};
use resetgate_tests::{host, root};

const T0: u64 = 1_763_856_000_000;

/// How much an op of a known user's request may differ in size from the
/// decoy's (see [`assert_same_work`]): a quarter, or 64 bytes if more.
fn similar(a: usize, b: usize) -> bool {
    a.abs_diff(b) <= (a.max(b) / 4).max(64)
}

/// One thing a request did to the store: which tree, and how big.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Op {
    Get {
        tree: String,
        key_len: usize,
    },
    Put {
        tree: String,
        key_len: usize,
        value_len: usize,
    },
    Delete {
        tree: String,
        key_len: usize,
    },
    Audit {
        kind: String,
        detail: Vec<String>,
        len: usize,
    },
}

impl Op {
    /// The op without its sizes (and an audit record without its kind):
    /// what must be identical.
    pub(crate) fn shape(&self) -> String {
        match self {
            Op::Get { tree, .. } => format!("get {tree}"),
            Op::Put { tree, .. } => format!("put {tree}"),
            Op::Delete { tree, .. } => format!("delete {tree}"),
            // The kind may differ (`flow.user-found`, `flow.unknown-user`:
            // the audit log tells admins); the work may not.
            Op::Audit { detail, .. } => format!("audit {detail:?}"),
        }
    }

    pub(crate) fn size(&self) -> usize {
        match self {
            Op::Get { key_len, .. } | Op::Delete { key_len, .. } => *key_len,
            Op::Put {
                key_len, value_len, ..
            } => key_len + value_len,
            Op::Audit { len, .. } => *len,
        }
    }
}

/// Records every read and write of the store (the counting hook lives
/// here, in the test: the runtime knows nothing of it).
#[derive(Default)]
pub(crate) struct Recorder {
    ops: Mutex<Vec<Op>>,
}

impl Recorder {
    /// The ops recorded since the last call.
    pub(crate) fn take(&self) -> Vec<Op> {
        std::mem::take(&mut *self.ops.lock().unwrap())
    }

    fn push(&self, op: Op) {
        self.ops.lock().unwrap().push(op);
    }

    fn records(&self, records: &[AuditRecord]) {
        for r in records {
            let detail = r
                .detail
                .as_object()
                .map(|d| d.keys().cloned().collect())
                .unwrap_or_default();
            self.push(Op::Audit {
                kind: r.kind.clone(),
                detail,
                len: serde_json::to_vec(r).unwrap().len(),
            });
        }
    }
}

impl Hooks for Recorder {
    fn read(&self, repository: &'static str, key_len: usize) {
        self.push(Op::Get {
            tree: repository.into(),
            key_len,
        });
    }

    fn commit(&self, commit: &Commit) {
        self.records(&commit.audit);
        for change in &commit.changes {
            let put = |tree: &str, key_len: usize, value_len: usize| Op::Put {
                tree: tree.into(),
                key_len,
                value_len,
            };
            self.push(match change {
                Change::PutFlow(r) => put("flows", r.id.len(), r.body.len()),
                Change::PutLockout { user, history } => put("lockout", user.len(), history.len()),
                Change::PutEnrollment { user, gate, data } => {
                    put("enrollments", user.len() + 1 + gate.len(), data.len())
                }
                Change::PutKv {
                    namespace,
                    key,
                    value,
                } => put("kv", namespace.len() + 1 + key.len(), value.len()),
                other => Op::Delete {
                    tree: format!("{other:?}"),
                    key_len: 0,
                },
            });
        }
    }
}

/// Calls made so far by each step's plugin, by step path. Every step has a
/// plugin of its own, and within an answer a step's plugin is called for
/// one function only (a lockout rule `decide`, a gate `answer`), so the
/// counts are per step and function.
fn calls(wf: &Workflow) -> BTreeMap<String, u64> {
    let function = |kind: &str| match kind {
        "lockout" => "decide",
        "directory" => "directory",
        _ => "call",
    };
    let mut steps = vec![(&wf.directory, "directory")];
    steps.extend(wf.lockout.iter().map(|s| (s, "lockout")));
    steps.extend(wf.gates.iter().map(|g| (&g.step, "gate")));
    steps.extend(wf.sync.iter().map(|s| (&s.step, "sync")));
    steps.extend(wf.vpn.iter().map(|v| (&v.step, "vpn")));
    steps
        .into_iter()
        .map(|(s, kind)| {
            (
                format!("{} {}", s.path, function(kind)),
                s.plugin.stats().duration.count(),
            )
        })
        .collect()
}

fn delta(before: &BTreeMap<String, u64>, after: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0)))
        .filter(|(_, v)| *v > 0)
        .collect()
}

/// What one request did: plugin calls by step, store ops.
#[derive(Debug)]
struct Work {
    calls: BTreeMap<String, u64>,
    ops: Vec<Op>,
}

/// Starts a flow for `user` and answers its first gate wrongly; what the
/// start did, and what the answer did.
fn wrong_first_answer(
    rt: &Runtime,
    store: &Hooked<Recorder>,
    wf: &Workflow,
    user: &str,
    field: &str,
    now: u64,
) -> (Work, Work) {
    store.hooks.take();
    let before = calls(wf);
    let flow = rt.start(&wf.name, user, now).unwrap().flow;
    assert!(matches!(flow.state, State::Gate { .. }), "{:?}", flow.state);
    let start = Work {
        calls: delta(&before, &calls(wf)),
        ops: store.hooks.take(),
    };
    let before = calls(wf);
    let answers = vec![FieldValue {
        name: field.into(),
        value: Secret::from("certainly wrong"),
    }];
    let out = rt.answer(&flow.id, answers, now + 1).unwrap();
    assert_eq!(
        out.notice,
        Some(Notice::WrongAnswer),
        "{:?}",
        out.flow.state
    );
    let answer = Work {
        calls: delta(&before, &calls(wf)),
        ops: store.hooks.take(),
    };
    (start, answer)
}

/// The known user's and the unknown name's work are the same: the same
/// plugin calls, the same store ops in the same order, and each op's size
/// [`similar`]. Sizes cannot be equal: a known user's flow record
/// holds the directory's user (id, attributes), which a decoy cannot know,
/// and a gate's failure reason (in the audit record) is the plugin's text.
/// Their cost is a few nanoseconds per byte; a missing read, write or call
/// costs microseconds.
fn assert_same_work(known: &Work, unknown: &Work) {
    assert_eq!(
        known.calls, unknown.calls,
        "plugin calls differ: known user {:?}, unknown name {:?}",
        known.calls, unknown.calls
    );
    let shapes = |w: &Work| w.ops.iter().map(Op::shape).collect::<Vec<_>>();
    assert_eq!(
        shapes(known),
        shapes(unknown),
        "store ops differ:\nknown user   {:#?}\nunknown name {:#?}",
        known.ops,
        unknown.ops
    );
    for (k, u) in known.ops.iter().zip(&unknown.ops) {
        assert!(
            similar(k.size(), u.size()),
            "sizes differ too much: known user {k:?}, unknown name {u:?}"
        );
    }
}

fn recorder(data: &Path) -> Arc<Hooked<Recorder>> {
    Arc::new(Hooked {
        inner: Arc::new(SledStore::open(data).unwrap()),
        hooks: Recorder::default(),
    })
}

/// A plugins folder with the first-party plugins and `static-answer`.
fn plugins_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    resetgate_tests::fixtures::copy_plugins(dir.path());
    dir
}

#[test]
fn a_wrong_first_answer_costs_a_decoy_what_it_costs_a_known_user() {
    // The demo: local users (directory over `kv`), an attribute gate.
    let data = tempfile::tempdir().unwrap();
    let plugins = plugins_dir();
    let store = recorder(data.path());
    Users::new(store.clone(), "local-users")
        .unwrap()
        .add(
            NewUser {
                name: "alice".into(),
                display_name: Some("Alice Example".into()),
                attributes: [("employee_id".to_owned(), "E-4711".to_owned())].into(),
                password: Some(Secret::from("an old password of hers")),
                ..NewUser::default()
            },
            false,
        )
        .unwrap();
    let (host, _cache) = host();
    host.set_capabilities(Arc::new(resetgate::plugin::Capabilities::with_kv(
        store.clone(),
    )));
    let config = GatewayConfig {
        plugins: plugins.path().to_owned(),
        data_dir: data.path().to_owned(),
        ..GatewayConfig::default()
    };
    let (demo, _) =
        resetgate::workflow::load_file(&host, &config, &root().join("workflows/demo.yaml"))
            .unwrap();
    let demo = Arc::new(demo);
    let rt = Runtime::new(
        store.clone(),
        Arc::new(resetgate::seal::DataKey::generate().unwrap()),
        vec![demo.clone()],
    );

    // Twice each, so that the second known answer meets a history with a
    // failure in it, as the second unknown one does.
    for round in 0..2u64 {
        let now = T0 + round * 10;
        let known = wrong_first_answer(&rt, &store, &demo, "alice", "value", now);
        let unknown = wrong_first_answer(&rt, &store, &demo, "alicf", "value", now + 5);
        assert_same_work(&known.0, &unknown.0);
        assert_same_work(&known.1, &unknown.1);
        assert!(
            known.1.calls.keys().any(|k| k.starts_with("gates[0]")),
            "the gate was not called: {:?}",
            known.1.calls
        );
    }
}

#[test]
fn a_wrong_first_answer_to_an_enrolled_question_costs_a_decoy_the_same() {
    // Security questions over local users: the known user has registered
    // answers (read from the store and verified with a slow hash).
    let data = tempfile::tempdir().unwrap();
    let plugins = plugins_dir();
    let workflows = tempfile::tempdir().unwrap();
    resetgate_tests::fixtures::enrollment_workflows(workflows.path());
    let store = recorder(data.path());
    let password = "bob's current password";
    Users::new(store.clone(), "local-users")
        .unwrap()
        .add(
            NewUser {
                name: "bob".into(),
                password: Some(Secret::from(password)),
                ..NewUser::default()
            },
            false,
        )
        .unwrap();
    let (host, _cache) = host();
    host.set_capabilities(Arc::new(resetgate::plugin::Capabilities::with_kv(
        store.clone(),
    )));
    let config = GatewayConfig {
        plugins: plugins.path().to_owned(),
        data_dir: data.path().to_owned(),
        ..GatewayConfig::default()
    };
    let load = |name: &str| {
        Arc::new(
            resetgate::workflow::load_file(&host, &config, &workflows.path().join(name))
                .unwrap()
                .0,
        )
    };
    let (enroll, reset) = (load("enroll.yaml"), load("reset.yaml"));
    let rt = Runtime::new(
        store.clone(),
        Arc::new(resetgate::seal::DataKey::generate().unwrap()),
        vec![enroll.clone(), reset.clone()],
    );

    // Bob registers his answers.
    let flow = rt.start("enroll", "bob", T0).unwrap().flow;
    let out = rt
        .password(&flow.id, Secret::from(password), T0 + 1)
        .unwrap();
    assert!(matches!(out.flow.state, State::Enrolling { .. }), "{out:?}");
    for (i, answer) in ["rex the dog", "springfield"].iter().enumerate() {
        let out = rt
            .answer(
                &flow.id,
                vec![FieldValue {
                    name: "answer".into(),
                    value: Secret::from(*answer),
                }],
                T0 + 2 + i as u64,
            )
            .unwrap();
        assert!(out.notice.is_none(), "{out:?}");
    }
    assert!(matches!(
        rt.flow(&flow.id).unwrap().state,
        State::Completed { .. }
    ));

    let known = wrong_first_answer(&rt, &store, &reset, "bob", "answer", T0 + 10);
    let unknown = wrong_first_answer(&rt, &store, &reset, "bop", "answer", T0 + 20);
    assert_same_work(&known.0, &unknown.0);
    assert_same_work(&known.1, &unknown.1);
}
