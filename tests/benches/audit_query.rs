//! Audit queries over a large log: a user's entries read from the index
//! by user, beside the same query answered by reading the whole log (what
//! every query cost before the index).
//!
//! `cargo bench -p resetgate-tests --bench audit_query [-- RECORDS]`
//! (default 1,000,000 records). The log is built in a temporary folder on
//! the sled store the gateway uses: 10,000 users, requests of four records
//! each (`flow.started`, two `gate.failed`, `flow.ended`) committed from
//! four threads, then the store is closed and opened again (the queries
//! run on a store as a restarted gateway finds it).

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::{Duration, Instant};

use resetgate::store::{self, AuditQuery, AuditRecord, Commit, StoreSpec, scan_query};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const USERS: u64 = 10_000;
const KINDS: [&str; 4] = ["flow.started", "gate.failed", "gate.failed", "flow.ended"];

fn user(i: u64) -> String {
    // User keys are hex digests in the gateway; any distinct strings do.
    format!("{:064x}", i.wrapping_mul(0x9e37_79b9_7f4a_7c15))
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn main() {
    let records: u64 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let dir = tempfile::tempdir().unwrap();
    let spec = StoreSpec::Sled {
        dir: dir.path().to_owned(),
    };
    let store = store::open(&spec).unwrap();
    let started = Instant::now();
    let requests = records / 4;
    std::thread::scope(|s| {
        for t in 0..4u64 {
            let store = &store;
            s.spawn(move || {
                let commits = (t..requests).step_by(4).map(|r| {
                    let who = user(r % USERS);
                    let audit = KINDS
                        .iter()
                        .map(|kind| AuditRecord {
                            at_ms: 1_800_000_000_000 + r * 10,
                            kind: (*kind).to_owned(),
                            flow: Some(format!("flow-{r}")),
                            user: Some(who.clone()),
                            workflow: Some("default".to_owned()),
                            detail: serde_json::json!({"request": r}),
                        })
                        .collect();
                    Commit {
                        changes: Vec::new(),
                        audit,
                    }
                });
                resetgate_tests::commit_all(&**store, commits);
            });
        }
    });
    println!(
        "built: {} records for {USERS} users in {:.1} s",
        requests * 4,
        started.elapsed().as_secs_f64()
    );
    store.close();
    drop(store);
    let store = store::open(&spec).unwrap();
    let log = store.audit();

    let by_user = |i: u64, kinds: Vec<String>| AuditQuery {
        user: Some(user(i)),
        kinds,
        limit: 100,
        ..AuditQuery::default()
    };
    let mut times = Vec::new();
    let mut found = 0;
    for i in 0..200u64 {
        let query = by_user(i * 37 % USERS, Vec::new());
        let t = Instant::now();
        found += log.query(&query).unwrap().len();
        times.push(t.elapsed());
    }
    println!(
        "query by user (limit 100), 200 users: median {:.2} ms, max {:.2} ms, {} entries each",
        median(times.clone()).as_secs_f64() * 1e3,
        times.iter().max().unwrap().as_secs_f64() * 1e3,
        found / 200
    );
    let mut times = Vec::new();
    for i in 0..200u64 {
        let query = by_user(i * 41 % USERS, vec!["flow.ended".to_owned()]);
        let t = Instant::now();
        log.query(&query).unwrap();
        times.push(t.elapsed());
    }
    println!(
        "query by user and kind (flow.ended), 200 users: median {:.2} ms",
        median(times).as_secs_f64() * 1e3
    );
    // The same query without the index: the whole log read (3 runs).
    let mut times = Vec::new();
    for i in 0..3u64 {
        let query = by_user(i * 53 % USERS, Vec::new());
        let t = Instant::now();
        scan_query(log, &query).unwrap();
        times.push(t.elapsed());
    }
    println!(
        "the same query reading the whole log (before the index), 3 runs: median {:.0} ms",
        median(times).as_secs_f64() * 1e3
    );
    store.close();
}
