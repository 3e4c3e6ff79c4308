//! What sealing costs an enrollment, in process against a real, durably
//! flushing store: the `canary-gate` enrollment over `local-users` (one
//! user per flow, one flow at a time). Reported, as medians:
//! - `read`: `Runtime::flow` of a flow waiting at the enrollment prompt
//!   (parsing it and, with sealing, opening its round);
//! - `enroll`: the step that registers (the answer to the enrollment
//!   prompt: read and open the round, call `enroll`, seal the enrollment,
//!   commit durably).
//!
//! `cargo bench -p resetgate-tests --bench enrollment`. Without sealing is
//! the same file on the commit before it (the runtime there takes no key;
//! see BENCHMARKS.md for the command).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use resetgate::config::GatewayConfig;
use resetgate::contract::FieldValue;
use resetgate::engine::State;
use resetgate::runtime::Runtime;
use resetgate::secret::Secret;
use resetgate::store::SledStore;
use resetgate::users::{NewUser, Users};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const FLOWS: usize = 200;
const READS: usize = 2000;

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let data = tempfile::tempdir().unwrap();
    let plugins = tempfile::tempdir().unwrap();
    let workflows = tempfile::tempdir().unwrap();
    resetgate_tests::fixtures::copy_plugins(plugins.path());
    resetgate_tests::fixtures::copy_canary_gate(plugins.path());
    resetgate_tests::fixtures::canary_workflows(workflows.path());
    let store = Arc::new(SledStore::open(data.path()).unwrap());
    // A cheap password for the directory is not possible (argon2id), but
    // the authentication is not what is measured.
    let users = Users::new(store.clone(), "local-users").unwrap();
    for i in 0..FLOWS {
        users
            .add(
                NewUser {
                    name: format!("user{i}"),
                    password: Some(Secret::from("the current password")),
                    ..NewUser::default()
                },
                false,
            )
            .unwrap();
    }
    let (host, _cache) = resetgate_tests::host();
    host.set_capabilities(Arc::new(resetgate::plugin::Capabilities::with_kv(
        store.clone(),
    )));
    let config = GatewayConfig {
        plugins: plugins.path().to_owned(),
        data_dir: data.path().to_owned(),
        ..GatewayConfig::default()
    };
    let wf = Arc::new(
        resetgate::workflow::load_file(
            &host,
            &config,
            &workflows.path().join("enroll-canary.yaml"),
        )
        .unwrap()
        .0,
    );
    let rt = Runtime::new(
        store.clone(),
        Arc::new(resetgate::seal::DataKey::generate().unwrap()),
        vec![wf],
    );
    let mut reads = vec![];
    let mut enrolls = vec![];
    let mut round = None;
    for i in 0..FLOWS {
        let flow = rt
            .start("enroll-canary", &format!("user{i}"), now())
            .unwrap()
            .flow;
        let out = rt
            .password(&flow.id, Secret::from("the current password"), now())
            .unwrap();
        assert!(matches!(out.flow.state, State::Enrolling { .. }));
        for _ in 0..READS / FLOWS {
            let t = Instant::now();
            let read = rt.flow(&flow.id).unwrap();
            reads.push(t.elapsed());
            let State::Enrolling { prompt, state, .. } = read.state else {
                panic!("not enrolling");
            };
            round.get_or_insert((prompt, state));
        }
        let t = Instant::now();
        let out = rt
            .answer(
                &flow.id,
                vec![FieldValue {
                    name: "confirm".into(),
                    value: Secret::from("OK"),
                }],
                now(),
            )
            .unwrap();
        enrolls.push(t.elapsed());
        assert!(matches!(out.flow.state, State::Completed { .. }));
    }
    // The sealing work alone, on the same bytes: the round as the runtime
    // seals it (its prompt and hex state as JSON), and the enrollment (the
    // canary, 39 bytes).
    let (prompt, state) = round.unwrap();
    let plain =
        serde_json::to_vec(&serde_json::json!({"prompt": prompt, "state": hex::encode(&state)}))
            .unwrap();
    let key = resetgate::seal::DataKey::generate().unwrap();
    let sealed = key.seal(b"flows/x/enrolling/0", &plain).unwrap();
    let mut work = vec![];
    for _ in 0..READS {
        let t = Instant::now();
        let opened = key.open(b"flows/x/enrolling/0", &sealed).unwrap();
        let again = key.seal(b"enrollments/x", &state).unwrap();
        work.push(t.elapsed());
        assert_eq!(opened.len() + again.len(), plain.len() + state.len() + 41);
    }
    println!(
        "enrollment: read of an enrolling flow median {:.1} µs ({READS} reads); enroll step median {:.0} µs ({FLOWS} flows); \
         its sealing alone (open a {}-byte round, seal a {}-byte enrollment) median {:.1} µs",
        median(reads).as_secs_f64() * 1e6,
        median(enrolls).as_secs_f64() * 1e6,
        plain.len(),
        state.len(),
        median(work).as_secs_f64() * 1e6,
    );
}
