//! A child process for the crash-safety test: runs many flows through the
//! engine and a real store, and prints a line for every step the runtime
//! acknowledged (that is, made durable). The test SIGKILLs it mid-run and
//! restarts it in `check` mode on the same data folder.
//!
//! `flow-driver run DATA_DIR` — 8 threads run complete resets until killed;
//!   prints `ACK <flow> <passed> <state>` after each acknowledged request.
//! `flow-driver check DATA_DIR` — recovers (ends flows interrupted
//!   mid-commit as `interrupted`), then prints `FLOW <flow> <passed> <state>`
//!   for every flow.
//! `flow-driver interrupt DATA_DIR` — one reset of a local user (the
//!   `local-users` directory, which keeps its users in the store) to
//!   [`INTERRUPTED`]; the request's final commit never happens: once the
//!   directory has set the password it prints `CHANGED <flow>` and waits to
//!   be killed.
//! `flow-driver check-interrupted DATA_DIR` — recovers, then prints
//!   `VIEW <json>` for every flow (as `GET /v1/flows/{id}` shows it) and
//!   `VERIFY <bool>`: whether the directory takes [`INTERRUPTED`].

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use resetgate::contract::FieldValue;
use resetgate::engine::{Flow, State};
use resetgate::runtime::Runtime;
use resetgate::secret::Secret;
use resetgate::store::{Commit, SledStore, Store};
use resetgate_tests::hooked::{Hooked, Hooks, audit_entries, flow_bodies};

/// The password every flow sets; the test searches the data folder for it.
pub const CANARY: &str = "CANARY-9c1f-new-password";

/// The password the interrupted reset sets; the test searches for it too.
pub const INTERRUPTED: &str = "CANARY-4be0-interrupted";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn tag(flow: &Flow) -> String {
    match &flow.state {
        State::Gate { index, .. } => format!("gate{index}"),
        // The state's name as stored: `awaiting-password`, `completed`…
        other => serde_json::to_value(other).unwrap()["at"]
            .as_str()
            .unwrap()
            .to_owned(),
    }
}

fn main() {
    tracing_subscriber_init();
    let args: Vec<String> = std::env::args().collect();
    let (mode, dir) = (args[1].as_str(), PathBuf::from(&args[2]));
    if mode == "interrupt" || mode == "check-interrupted" {
        return interrupted(mode, &dir);
    }
    let (host, _cache) = resetgate_tests::host();
    let users: Vec<String> = (0..20).map(|i| format!("user{i}")).collect();
    let names: Vec<&str> = users.iter().map(String::as_str).collect();
    let wf = resetgate_tests::test_workflow(
        &host,
        &names,
        serde_json::json!({"threshold": 5, "lockout_ms": [60000]}),
        &["first answer", "second answer"],
    );
    let store: Arc<dyn Store> = Arc::new(SledStore::open(&dir).unwrap());
    let rt = Arc::new(Runtime::new(
        store.clone(),
        Arc::new(resetgate::seal::DataKey::load_or_create(&dir).unwrap().0),
        vec![Arc::new(wf)],
    ));
    match mode {
        "run" => run(rt, names.len() as u64),
        "check" => {
            rt.recover(now()).unwrap();
            // The audit chain has no hole, and every stored step has its
            // audit records (they are committed first, in the same flush).
            let summary = store
                .audit()
                .verify()
                .unwrap_or_else(|e| panic!("the audit log does not verify after the crash: {e}"));
            let mut audited: std::collections::HashMap<(String, String), usize> =
                Default::default();
            for entry in audit_entries(store.as_ref()) {
                if let Some(flow) = entry.record.flow {
                    *audited.entry((flow, entry.record.kind)).or_default() += 1;
                }
            }
            let count = |flow: &Flow, kind: &str| {
                audited
                    .get(&(flow.id.clone(), kind.to_owned()))
                    .copied()
                    .unwrap_or(0)
            };
            let out = std::io::stdout();
            let mut out = out.lock();
            for bytes in flow_bodies(store.as_ref()) {
                let flow: Flow = serde_json::from_slice(&bytes).unwrap();
                assert!(
                    count(&flow, "flow.started") == 1
                        && count(&flow, "gate.passed") >= flow.passed.len()
                        && (tag(&flow) != "completed" || count(&flow, "flow.completed") == 1),
                    "flow {} is stored as {} but its audit records are missing",
                    flow.id,
                    tag(&flow)
                );
                writeln!(out, "FLOW {} {} {}", flow.id, flow.passed.len(), tag(&flow)).unwrap();
            }
            writeln!(out, "AUDIT {}", summary.entries).unwrap();
        }
        _ => panic!("usage: flow-driver run|check DATA_DIR"),
    }
}

/// Everything the runtime and plugins log goes to stderr at debug level, so
/// the test can search it for the canary.
fn tracing_subscriber_init() {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("debug"))
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
}

fn run(rt: Arc<Runtime>, users: u64) {
    let counter = Arc::new(AtomicU64::new(0));
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let (rt, counter) = (rt.clone(), counter.clone());
            std::thread::spawn(move || {
                let ack = |flow: &Flow| {
                    let mut out = std::io::stdout().lock();
                    writeln!(out, "ACK {} {} {}", flow.id, flow.passed.len(), tag(flow)).unwrap();
                    out.flush().unwrap();
                };
                let answer = |v: &str| {
                    vec![FieldValue {
                        name: "answer".into(),
                        value: Secret::from(v),
                    }]
                };
                loop {
                    let i = counter.fetch_add(1, Ordering::Relaxed);
                    let user = format!("user{}", i % users);
                    let flow = rt.start("test-reset", &user, now()).unwrap().flow;
                    ack(&flow);
                    let flow = rt
                        .answer(&flow.id, answer("first answer"), now())
                        .unwrap()
                        .flow;
                    ack(&flow);
                    let flow = rt
                        .answer(&flow.id, answer("second answer"), now())
                        .unwrap()
                        .flow;
                    ack(&flow);
                    let flow = rt
                        .password(&flow.id, Secret::from(CANARY), now())
                        .unwrap()
                        .flow;
                    ack(&flow);
                }
            })
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
}

/// The store, except that the commit that would record a password change
/// never happens: the runtime hangs there, after the directory changed the
/// password and before the flow's record says so, until it is killed.
struct HangAfterDirectory;

impl Hooks for HangAfterDirectory {
    fn commit(&self, commit: &Commit) {
        if let Some(r) = commit.audit.iter().find(|r| r.kind == "password.changed") {
            let mut out = std::io::stdout().lock();
            writeln!(out, "CHANGED {}", r.flow.as_deref().unwrap_or("")).unwrap();
            out.flush().unwrap();
            loop {
                std::thread::park();
            }
        }
    }
}

/// `interrupt` and `check-interrupted` (see the module's docs).
fn interrupted(mode: &str, dir: &std::path::Path) {
    use resetgate::contract::{CallContext, PluginKind};
    use resetgate::plugin::{Grants, LoadSpec};
    let sled = Arc::new(SledStore::open(dir).unwrap());
    let store: Arc<dyn Store> = if mode == "interrupt" {
        Arc::new(Hooked {
            inner: sled.clone(),
            hooks: HangAfterDirectory,
        })
    } else {
        sled.clone()
    };
    let (host, _cache) = resetgate_tests::host();
    host.set_capabilities(Arc::new(resetgate::plugin::Capabilities::with_kv(
        sled.clone(),
    )));
    // The namespace is the file's stem, as for any plugin granted `kv`.
    let namespace = "local_users";
    let users = resetgate::users::Users::new(sled.clone(), namespace).unwrap();
    let mut wf = resetgate_tests::test_workflow(
        &host,
        &[],
        serde_json::json!({"threshold": 5, "lockout_ms": [60000]}),
        &["first answer", "second answer"],
    );
    wf.directory.plugin_name = "local-users".into();
    wf.directory.config = "{}".into();
    // Setting a password hashes it and writes it durably.
    wf.directory.limits.wall_time = std::time::Duration::from_secs(10);
    let limits = wf.directory.limits;
    wf.directory.grants = Grants {
        kv: true,
        ..Grants::default()
    };
    wf.directory.plugin = host
        .load(
            &resetgate_tests::wasm("local-users"),
            &LoadSpec {
                kind: Some(PluginKind::Directory),
                grants: wf.directory.grants.clone(),
                limits,
            },
        )
        .unwrap();
    let wf = Arc::new(wf);
    let rt = Runtime::new(
        store,
        Arc::new(resetgate::seal::DataKey::generate().unwrap()),
        vec![wf.clone()],
    );
    let answer = |v: &str| {
        vec![FieldValue {
            name: "answer".into(),
            value: Secret::from(v),
        }]
    };
    if mode == "interrupt" {
        users
            .add(
                resetgate::users::NewUser {
                    name: "carol".into(),
                    password: Some(Secret::from("carol's old password")),
                    ..Default::default()
                },
                false,
            )
            .unwrap();
        let flow = rt.start("test-reset", "carol", now()).unwrap().flow;
        rt.answer(&flow.id, answer("first answer"), now()).unwrap();
        let out = rt.answer(&flow.id, answer("second answer"), now()).unwrap();
        assert_eq!(out.flow.state, State::AwaitingPassword);
        // Hangs once the directory has the new password.
        let out = rt.password(&flow.id, Secret::from(INTERRUPTED), now());
        panic!("the commit was not held back: {out:?}");
    }
    rt.recover(now()).unwrap();
    let mut out = std::io::stdout().lock();
    for bytes in flow_bodies(sled.as_ref()) {
        let flow: Flow = serde_json::from_slice(&bytes).unwrap();
        let view = resetgate::api::wire::view(&flow, &wf, None);
        writeln!(out, "VIEW {}", serde_json::to_string(&view).unwrap()).unwrap();
    }
    let directory = wf.directory.plugin.directory().unwrap();
    let ctx = CallContext {
        flow_id: "check".into(),
        workflow: "test-reset".into(),
        step: "directory".into(),
        config: "{}".into(),
        now_ms: now(),
        language: String::new(),
    };
    let carol = directory
        .find_user(&ctx, "carol")
        .unwrap()
        .unwrap()
        .unwrap();
    let takes = directory
        .verify_password(&ctx, &carol, &Secret::from(INTERRUPTED))
        .unwrap()
        .unwrap();
    writeln!(out, "VERIFY {takes}").unwrap();
    for entry in audit_entries(sled.as_ref()) {
        if entry.record.kind == "flow.interrupted" {
            writeln!(out, "AUDIT {}", entry.record.detail).unwrap();
        }
    }
}
