//! One plugin call end to end, against the same logic as a native function.
//!
//! Criterion part (latency a caller sees):
//! - `native`: the example gate's `begin` written as a plain Rust function
//!   (parse the step config, build the prompt);
//! - `isolated`: the same through the plugin host: a fresh store and
//!   instance per call, the call, and the teardown, all on the caller's
//!   thread.
//!
//! Throughput part (printed after criterion): calls per second with 1 and 2
//! caller threads, and the process's CPU time per call. Run it under
//! `taskset -c 0` for one core.
//!
//! `cargo xtask bench` builds the plugins and runs both.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::path::PathBuf;
use std::time::Instant;

use criterion::Criterion;
use resetgate::contract::{CallContext, Field, FieldKind, Prompt, Round, User};
use resetgate::plugin::{HostConfig, LoadSpec, Plugin, PluginHost};

/// The same allocator as the `resetgate` binary.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn plugin_path() -> PathBuf {
    let p =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/plugins/example-question.wasm");
    assert!(
        p.exists(),
        "{} is missing: run `cargo xtask bench` (it builds the plugins)",
        p.display()
    );
    p
}

fn ctx() -> CallContext {
    CallContext {
        flow_id: "0f8e9d2c4b6a81735e1d0c9b8a7f6e5d".into(),
        workflow: "self-service-reset".into(),
        step: "gates[0]".into(),
        config: r#"{"question":"What was the name of your first school?","max_length":128}"#.into(),
        now_ms: 1_763_856_000_000,
        language: String::new(),
    }
}

fn user() -> User {
    User {
        id: "uid=alice,ou=people,dc=example,dc=test".into(),
        name: "alice".into(),
        attributes: vec![
            ("mail".into(), "alice@example.test".into()),
            ("displayName".into(), "Alice Example".into()),
        ],
    }
}

/// The example gate's `begin`, natively.
fn native_begin(ctx: &CallContext, _user: &User) -> Round {
    #[derive(serde::Deserialize)]
    struct Config {
        question: String,
        max_length: u32,
    }
    let c: Config = serde_json::from_str(&ctx.config).unwrap();
    Round {
        prompt: Prompt {
            title: "Answer your security question".into(),
            help: Some(c.question.clone()),
            display: vec![],
            fields: vec![Field {
                name: "answer".into(),
                label: c.question,
                kind: FieldKind::Secret,
                max_length: c.max_length,
            }],
        },
        state: b"q1".to_vec(),
    }
}

fn host() -> (PluginHost, Plugin, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let host = PluginHost::new(HostConfig::new(dir.path())).unwrap();
    let plugin = host.load(&plugin_path(), &LoadSpec::default()).unwrap();
    (host, plugin, dir)
}

fn call(plugin: &Plugin, ctx: &CallContext, user: &User) -> Round {
    plugin
        .gate()
        .unwrap()
        .begin(ctx, user, None)
        .unwrap()
        .unwrap()
}

fn latency(c: &mut Criterion) {
    let (ctx, user) = (ctx(), user());
    let mut g = c.benchmark_group("gate-begin");
    g.bench_function("native", |b| {
        b.iter(|| black_box(native_begin(black_box(&ctx), black_box(&user))))
    });

    let (_h, plugin, _d) = host();
    assert_eq!(call(&plugin, &ctx, &user), native_begin(&ctx, &user));
    g.bench_function("isolated", |b| {
        b.iter(|| black_box(call(&plugin, &ctx, &user)))
    });
    g.finish();
}

/// Calls per second with `threads` callers, teardown included, and the
/// CPU time per call in µs.
fn throughput(threads: usize, calls_per_thread: usize) -> (f64, f64) {
    let (host, plugin, _dir) = host();
    let (ctx, user) = (ctx(), user());
    for _ in 0..1000 {
        call(&plugin, &ctx, &user);
    }
    let cpu = resetgate::metrics::cpu_seconds("self");
    let start = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                for _ in 0..calls_per_thread {
                    black_box(call(&plugin, &ctx, &user));
                }
            });
        }
    });
    let calls = (threads * calls_per_thread) as f64;
    let rate = calls / start.elapsed().as_secs_f64();
    let cpu = (resetgate::metrics::cpu_seconds("self") - cpu) * 1e6 / calls;
    drop(plugin);
    drop(host);
    (rate, cpu)
}

fn main() {
    let throughput_only = std::env::args().any(|a| a == "--throughput-only");
    if !throughput_only {
        let mut c = Criterion::default().configure_from_args();
        latency(&mut c);
        c.final_summary();
    }
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    for threads in [1, 2] {
        let mut runs: Vec<(f64, f64)> = (0..5).map(|_| throughput(threads, 100_000)).collect();
        runs.sort_by(|a, b| a.0.total_cmp(&b.0));
        println!(
            "throughput: {threads} caller thread(s) on {cores} core(s): median {:.0} calls/s, {:.1} µs CPU per call (runs: {})",
            runs[2].0,
            runs[2].1,
            runs.iter()
                .map(|r| format!("{:.0}", r.0))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
}
