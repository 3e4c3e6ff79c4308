//! How long opening a sled store takes after a crash, when it reads every
//! flow record to complete commits a crash cut short (see
//! `gateway/src/store/sled.rs`, carried commits), beside opening the same
//! store after a clean close.
//!
//! `cargo bench -p resetgate-tests --bench recovery [-- FLOWS]` (default
//! 100,000). A child process (this binary, `--build DIR FLOWS`) writes the
//! flows, each with a body of about 2 KB (a flow in progress is 1–3 KB)
//! and an audit record, through commits its flow record carries, waits
//! for all of them to be durable, and exits without closing the store:
//! what a crash leaves. The parent then opens it (the recovery), closes
//! it, and opens it again (a clean open), three times each.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::path::Path;
use std::time::{Duration, Instant};

use resetgate::store::{self, AuditRecord, Change, Commit, FlowRecord, StoreSpec};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn spec(dir: &Path) -> StoreSpec {
    StoreSpec::Sled {
        dir: dir.to_owned(),
    }
}

/// Writes `flows` flows and exits without closing the store.
fn build(dir: &Path, flows: u64) -> ! {
    let store = store::open(&spec(dir)).unwrap();
    let body = format!("{{\"pad\":\"{}\"}}", "x".repeat(2_000)).into_bytes();
    std::thread::scope(|s| {
        for t in 0..4u64 {
            let store = &store;
            let body = &body;
            s.spawn(move || {
                let commits = (t..flows).step_by(4).map(|i| {
                    let id = format!("flow-{i:08}");
                    let user = format!("{:064x}", i % 10_000);
                    let record = FlowRecord {
                        id: id.clone(),
                        user: user.clone(),
                        version: "v1".to_owned(),
                        in_progress: true,
                        due_ms: 1_900_000_000_000 + i,
                        body: body.clone(),
                    };
                    let audit = vec![AuditRecord {
                        at_ms: 1_800_000_000_000 + i,
                        kind: "flow.started".to_owned(),
                        flow: Some(id),
                        user: Some(user),
                        workflow: Some("default".to_owned()),
                        detail: serde_json::json!({}),
                    }];
                    Commit {
                        changes: vec![Change::PutFlow(record)],
                        audit,
                    }
                });
                resetgate_tests::commit_all(&**store, commits);
            });
        }
    });
    // Durable, not closed: the store stays marked open, as after a crash.
    std::process::exit(0);
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list") {
        return;
    }
    if let Some(at) = args.iter().position(|a| a == "--build") {
        build(Path::new(&args[at + 1]), args[at + 2].parse().unwrap());
    }
    let flows: u64 = args
        .iter()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(100_000);
    let dir = tempfile::tempdir().unwrap();
    let mut crashed = Vec::new();
    let mut clean = Vec::new();
    for round in 0..3 {
        let status = std::process::Command::new(&args[0])
            .args([
                "--build",
                &dir.path().display().to_string(),
                &flows.to_string(),
            ])
            .status()
            .unwrap();
        assert!(status.success());
        let t = Instant::now();
        let store = store::open(&spec(dir.path())).unwrap();
        crashed.push(t.elapsed());
        store.close();
        drop(store);
        let t = Instant::now();
        let store = store::open(&spec(dir.path())).unwrap();
        clean.push(t.elapsed());
        store.close();
        drop(store);
        println!(
            "recovery: round {round}: {flows} flows, open after a crash {:.0} ms, after a close {:.0} ms",
            crashed[round].as_secs_f64() * 1e3,
            clean[round].as_secs_f64() * 1e3
        );
    }
    println!(
        "recovery: {flows} flows: median open after a crash {:.0} ms, after a close {:.0} ms",
        median(crashed).as_secs_f64() * 1e3,
        median(clean).as_secs_f64() * 1e3
    );
}
