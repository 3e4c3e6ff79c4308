//! Engine steps per second in process: flows of two gates and a password
//! commit (directory + one sync target) against real plugins and a real,
//! durably flushing store, 64 flows at once.
//!
//! `cargo bench -p resetgate-tests --bench engine` (or `cargo xtask bench`).
//! A step is one request the runtime acknowledges (start, answer, answer,
//! password): durable before it returns.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use resetgate::contract::FieldValue;
use resetgate::engine::State;
use resetgate::runtime::Runtime;
use resetgate::secret::Secret;
use resetgate::store::SledStore;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn run(rt: &Runtime, concurrency: usize, duration: Duration) -> (u64, Duration) {
    let steps = AtomicU64::new(0);
    let answer = |v: &str| {
        vec![FieldValue {
            name: "answer".into(),
            value: Secret::from(v),
        }]
    };
    let start = Instant::now();
    std::thread::scope(|s| {
        for t in 0..concurrency {
            let steps = &steps;
            s.spawn(move || {
                let mut i = 0u64;
                while start.elapsed() < duration {
                    // Each thread has its own users: requests of one user are
                    // serialised, and this measures concurrent users.
                    let user = format!("user{}", t as u64 + 64 * (i % 3));
                    i += 1;
                    let flow = rt.start("test-reset", &user, now()).unwrap().flow;
                    let flow = rt
                        .answer(&flow.id, answer("first answer"), now())
                        .unwrap()
                        .flow;
                    let flow = rt
                        .answer(&flow.id, answer("second answer"), now())
                        .unwrap()
                        .flow;
                    let out = rt
                        .password(&flow.id, Secret::from("purple monkey dishwasher"), now())
                        .unwrap();
                    assert!(
                        matches!(out.flow.state, State::Completed { .. }),
                        "{:?}",
                        out.flow.state
                    );
                    steps.fetch_add(4, Ordering::Relaxed);
                }
            });
        }
    });
    (steps.load(Ordering::Relaxed), start.elapsed())
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let (host, _cache) = resetgate_tests::host();
    let users: Vec<String> = (0..200).map(|i| format!("user{i}")).collect();
    let names: Vec<&str> = users.iter().map(String::as_str).collect();
    let wf = resetgate_tests::test_workflow(
        &host,
        &names,
        serde_json::json!({"threshold": 5, "lockout_ms": [60000]}),
        &["first answer", "second answer"],
    );
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SledStore::open(dir.path()).unwrap());
    let rt = Runtime::new(
        store.clone(),
        Arc::new(resetgate::seal::DataKey::generate().unwrap()),
        vec![Arc::new(wf)],
    );
    run(&rt, 64, Duration::from_secs(2)); // warm up
    for concurrency in [1, 64] {
        let mut rates = vec![];
        for _ in 0..3 {
            let before = rt.timings();
            let flushes_before = store.flushes();
            let cpu_before = resetgate_tests::cpu_seconds("self");
            let (steps, elapsed) = run(&rt, concurrency, Duration::from_secs(5));
            let cpu = resetgate_tests::cpu_seconds("self") - cpu_before;
            let t = rt.timings().since(&before);
            let flushes = store.flushes() - flushes_before;
            let rate = steps as f64 / elapsed.as_secs_f64();
            rates.push(rate);
            let total = t.request_ns as f64;
            println!(
                "engine: {concurrency:>2} flows at once: {rate:>8.0} durable steps/s ({:.0} engine transitions/s), {:.0} flushes/s \
                 ({:.1} steps per flush), {:.0} µs CPU per step; of request time: plugin calls {:.0}%, store (commit + flush wait \
                 + audit) {:.0}%, engine and runtime {:.0}%",
                t.transitions as f64 / elapsed.as_secs_f64(),
                flushes as f64 / elapsed.as_secs_f64(),
                steps as f64 / flushes.max(1) as f64,
                cpu * 1e6 / steps.max(1) as f64,
                100.0 * t.plugin_ns as f64 / total,
                100.0 * t.store_ns as f64 / total,
                100.0 * (total - t.plugin_ns as f64 - t.store_ns as f64) / total,
            );
        }
        rates.sort_by(f64::total_cmp);
        println!(
            "engine: {concurrency:>2} flows at once: median {:.0} durable steps/s",
            rates[1]
        );
    }
}
