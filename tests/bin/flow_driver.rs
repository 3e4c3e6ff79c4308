//! A child process for the crash-safety test: runs many flows through the
//! engine and a real store, and prints a line for every step the runtime
//! acknowledged (that is, made durable). The test SIGKILLs it mid-run and
//! restarts it in `check` mode on the same data folder.
//!
//! `flow-driver run DATA_DIR` — 8 threads run complete resets until killed;
//!   prints `ACK <flow> <passed> <state>` after each acknowledged request.
//! `flow-driver check DATA_DIR` — recovers (fails flows interrupted
//!   mid-commit), then prints `FLOW <flow> <passed> <state>` for every flow.

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
use resetgate::store::{SledStore, Store, Tree};

/// The password every flow sets; the test searches the data folder for it.
pub const CANARY: &str = "CANARY-9c1f-new-password";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn tag(flow: &Flow) -> String {
    match &flow.state {
        State::Gate { index, .. } => format!("gate{index}"),
        State::AwaitingPassword => "awaiting-password".into(),
        State::Committing { .. } => "committing".into(),
        State::Completed { .. } => "completed".into(),
        State::Failed { .. } => "failed".into(),
        State::Locked { .. } => "locked".into(),
        State::Expired => "expired".into(),
        other => format!("{other:?}"),
    }
}

fn main() {
    tracing_subscriber_init();
    let args: Vec<String> = std::env::args().collect();
    let (mode, dir) = (args[1].as_str(), PathBuf::from(&args[2]));
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
    let rt = Arc::new(Runtime::new(store.clone(), vec![Arc::new(wf)]));
    match mode {
        "run" => run(rt, names.len() as u64),
        "check" => {
            rt.recover(now()).unwrap();
            // The audit chain has no hole, and every stored step has its
            // audit records (they are committed first, in the same flush).
            let summary = store
                .verify_audit()
                .unwrap_or_else(|e| panic!("the audit log does not verify after the crash: {e}"));
            let mut audited: std::collections::HashMap<(String, String), usize> =
                Default::default();
            for entry in store.audit_entries(0, usize::MAX).unwrap() {
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
            for (_, bytes) in store.scan(Tree::Flows, b"", usize::MAX).unwrap() {
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
