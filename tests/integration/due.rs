//! Due work: the cluster's timers run on one gateway at a time. Two
//! [`DueWork`] loops on one store stand for two gateways (the PostgreSQL
//! end-to-end test runs three real gateways).

use std::sync::Arc;
use std::time::Duration;

use resetgate::due::{DueSettings, DueWork, SWEEP};
use resetgate::runtime::Runtime;
use resetgate::store::{Queue, SledStore, Store};
use resetgate_tests::{host, test_workflow};

const T0: u64 = 1_763_856_000_000;

fn settings() -> DueSettings {
    DueSettings {
        sweep_every: Duration::from_secs(30),
        poll_every: Duration::from_millis(10),
        lease: Duration::from_secs(120),
    }
}

/// Two "gateways" (runtimes and loops) on one store.
fn two_gateways(store: &Arc<dyn Store>) -> (Vec<Arc<Runtime>>, Vec<DueWork>) {
    let (host, cache) = host();
    std::mem::forget(cache);
    let runtimes: Vec<Arc<Runtime>> = (0..2)
        .map(|_| {
            let wf = test_workflow(&host, &["alice"], serde_json::json!({}), &["open sesame"]);
            Arc::new(Runtime::new(
                store.clone(),
                Arc::new(resetgate::seal::DataKey::generate().unwrap()),
                vec![Arc::new(wf)],
            ))
        })
        .collect();
    let loops = runtimes
        .iter()
        .map(|rt| DueWork::new(store.clone(), rt.clone(), settings()))
        .collect();
    (runtimes, loops)
}

fn sweeps(rt: &Runtime) -> String {
    let mut out = String::new();
    rt.metrics.timers.render(&mut out, "t");
    out
}

#[test]
fn the_sweep_timer_runs_once_per_period_whichever_gateway_claims_it() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SledStore::open(dir.path()).unwrap());
    let (runtimes, loops) = two_gateways(&store);
    // Both gateways start and ensure the timer: there is one.
    for l in &loops {
        l.ensure_timers(T0).unwrap();
    }
    // A flow that will be idle past its limit by T0 + 10 minutes.
    let flow = runtimes[0].start("test-reset", "alice", T0).unwrap().flow;
    // Not due before its period.
    assert_eq!(loops[0].run_due(T0 + 29_999).unwrap(), 0);
    // Both poll at the same moment, from two threads: one runs it.
    let now = T0 + 600_000;
    let ran: usize = std::thread::scope(|s| {
        let handles: Vec<_> = loops
            .iter()
            .map(|l| s.spawn(move || l.run_due(now)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap().unwrap())
            .sum()
    });
    assert_eq!(ran, 1, "the sweep ran on {ran} gateways");
    let runs: Vec<String> = runtimes.iter().map(|rt| sweeps(rt)).collect();
    assert_eq!(
        runs.iter()
            .filter(|r| r.contains(r#"t{kind="sweep",result="ok"} 1"#))
            .count(),
        1,
        "{runs:?}"
    );
    // It swept: the idle flow is gone, with one `flow.expired` record.
    assert!(runtimes[1].flow(&flow.id).is_err());
    let expired = resetgate_tests::hooked::audit_entries(store.as_ref())
        .into_iter()
        .filter(|e| e.record.kind == "flow.expired")
        .count();
    assert_eq!(expired, 1);
    // And it is due again one period later, not before.
    assert_eq!(loops[1].run_due(now + 29_999).unwrap(), 0);
    assert_eq!(loops[1].run_due(now + 30_000).unwrap(), 1);
}

#[test]
fn a_timer_whose_gateway_died_mid_run_runs_elsewhere_when_its_lease_ends() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SledStore::open(dir.path()).unwrap());
    let (_runtimes, loops) = two_gateways(&store);
    loops[0].ensure_timers(T0).unwrap();
    // Gateway A claims the sweep and dies before finishing it.
    let claimed = store
        .claim_due(Queue::Timers, T0 + 30_000, 120_000, 16)
        .unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].item.id, SWEEP);
    // While A's lease lasts, B does not get it.
    assert_eq!(loops[1].run_due(T0 + 30_000 + 119_999).unwrap(), 0);
    // Then B does, and runs it.
    assert_eq!(loops[1].run_due(T0 + 30_000 + 120_000).unwrap(), 1);
    // Ensuring the timers again (a gateway restarting) adds no second one.
    loops[0].ensure_timers(T0 + 200_000).unwrap();
    let mut timers = 0;
    store
        .export(&mut |item| {
            if let resetgate::store::Item::Work { item, .. } = item {
                assert_eq!(item.id, SWEEP);
                timers += 1;
            }
            Ok(())
        })
        .unwrap();
    assert_eq!(timers, 1);
}
