//! One plugin call end to end, against the same logic as a native function.
//!
//! Criterion part (latency a caller sees):
//! - `native`: the example gate's `begin` written as a plain Rust function
//!   (parse the step config, build the prompt);
//! - `isolated/caller-wait`: the same through the plugin host: a fresh
//!   instance per call (warm, never used before), the call, and the spent
//!   store handed to the reaper; calls are paced so the warmer keeps up, as
//!   under any load below saturation;
//! - `isolated/inline`: no warm pool: store, instantiate, call on the
//!   caller's thread (teardown still on the reaper).
//!
//! Throughput part (printed after criterion): calls per second with 1 and 2
//! caller threads, teardown included (the clock stops only when the reaper
//! has dropped every store). Run it under `taskset -c 0` for one core.
//!
//! `cargo xtask bench` builds the plugins and runs both.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::path::PathBuf;
use std::time::{Duration, Instant};

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

fn host(warm: usize) -> (PluginHost, Plugin, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let host = PluginHost::new(HostConfig {
        warm_instances: warm,
        ..HostConfig::new(dir.path())
    })
    .unwrap();
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

    let (_h, plugin, _d) = host(16);
    assert_eq!(call(&plugin, &ctx, &user), native_begin(&ctx, &user));
    g.bench_function("isolated/caller-wait", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                // Pace the calls so the warmer keeps up (below saturation).
                let pause = Instant::now();
                while pause.elapsed() < Duration::from_micros(40) {
                    std::hint::spin_loop();
                }
                let t = Instant::now();
                black_box(call(&plugin, &ctx, &user));
                total += t.elapsed();
            }
            total
        })
    });
    drop(plugin);

    let (_h, plugin, _d) = host(0);
    g.bench_function("isolated/inline", |b| {
        b.iter(|| black_box(call(&plugin, &ctx, &user)))
    });
    g.finish();
}

/// Calls per second with `threads` callers, teardown included.
fn throughput(threads: usize, calls_per_thread: usize) -> f64 {
    let (host, plugin, _dir) = host(16);
    let (ctx, user) = (ctx(), user());
    for _ in 0..1000 {
        call(&plugin, &ctx, &user);
    }
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
    // Dropping the host waits for the reaper to drop every spent store.
    drop(plugin);
    drop(host);
    (threads * calls_per_thread) as f64 / start.elapsed().as_secs_f64()
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
        let mut runs: Vec<f64> = (0..5).map(|_| throughput(threads, 100_000)).collect();
        runs.sort_by(f64::total_cmp);
        println!(
            "throughput: {threads} caller thread(s) on {cores} core(s): median {:.0} calls/s (runs: {})",
            runs[2],
            runs.iter()
                .map(|r| format!("{r:.0}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
}
