//! Plugins that misbehave: each failure is a typed error, never a panic or a
//! hang, and the host keeps serving well-behaved calls afterwards.

use std::time::{Duration, Instant};

use resetgate::contract::{CallContext, PluginKind, User};
use resetgate::plugin::{CallError, Grants, Limits, LoadError, LoadSpec, Plugin, PluginHost};
use resetgate_tests::{host, wasm};

/// The hostile plugin with tight limits: 200 ms, 16 MiB, 1 MiB of output.
fn load(host: &PluginHost) -> Plugin {
    load_with(
        host,
        Limits {
            wall_time: Duration::from_millis(200),
            memory: 16 << 20,
            output: 1 << 20,
        },
    )
}

fn load_with(host: &PluginHost, limits: Limits) -> Plugin {
    host.load(
        &wasm("hostile"),
        &LoadSpec {
            kind: Some(PluginKind::Gate),
            limits,
            ..LoadSpec::default()
        },
    )
    .unwrap()
}

fn begin(plugin: &Plugin, mode: &str) -> Result<String, CallError> {
    let ctx = CallContext {
        flow_id: "f".into(),
        config: format!("\"{mode}\""),
        ..CallContext::default()
    };
    let round = plugin.gate().unwrap().begin(&ctx, &User::default(), None)?;
    Ok(round.unwrap().prompt.title)
}

/// After a failure, a well-behaved call on the same host succeeds, both on
/// the misbehaving plugin and on another.
fn still_serves(host: &PluginHost, plugin: &Plugin) {
    assert_eq!(begin(plugin, "ok").unwrap(), "fine");
    let other = host
        .load(&wasm("example-vpn"), &LoadSpec::default())
        .unwrap();
    assert!(
        other
            .vpn_hook()
            .unwrap()
            .probe(&CallContext {
                config: "{}".into(),
                ..CallContext::default()
            })
            .unwrap()
    );
}

#[test]
fn an_infinite_loop_is_stopped_at_the_deadline() {
    let (host, _dir) = host();
    let plugin = load(&host);
    let started = Instant::now();
    let err = begin(&plugin, "loop").unwrap_err();
    assert!(matches!(err, CallError::Timeout { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        "plugin hostile.wasm ran past its time limit of 200ms and was stopped"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the loop was not stopped"
    );
    still_serves(&host, &plugin);
}

#[test]
fn a_memory_bomb_is_refused_at_the_limit() {
    let (host, _dir) = host();
    let plugin = load(&host);
    let err = begin(&plugin, "membomb").unwrap_err();
    match &err {
        CallError::MemoryLimit { limit, wanted, .. } => {
            assert_eq!(*limit, 16 << 20);
            assert!(*wanted > 16 << 20);
        }
        other => panic!("expected a memory limit error, got {other}"),
    }
    assert!(err.to_string().contains("its limit is 16777216"), "{err}");
    still_serves(&host, &plugin);
}

#[test]
fn unbounded_recursion_overflows_the_stack_cleanly() {
    let (host, _dir) = host();
    let plugin = load(&host);
    let err = begin(&plugin, "recursion").unwrap_err();
    assert!(matches!(err, CallError::StackOverflow { .. }), "{err}");
    still_serves(&host, &plugin);
}

#[test]
fn a_100_mb_return_value_is_refused() {
    let (host, _dir) = host();
    let plugin = load(&host);
    // 100 MB does not even fit in the plugin's 16 MiB of memory.
    let err = begin(&plugin, "output-100mb").unwrap_err();
    assert!(matches!(err, CallError::MemoryLimit { .. }), "{err}");
    still_serves(&host, &plugin);
}

#[test]
fn an_output_over_the_output_limit_is_refused() {
    let (host, _dir) = host();
    let limits = Limits {
        wall_time: Duration::from_secs(2),
        memory: 64 << 20,
        output: 1 << 20,
    };
    let plugin = load_with(&host, limits);
    let err = begin(&plugin, "output-8mb").unwrap_err();
    assert_eq!(
        err,
        CallError::OutputTooLarge {
            plugin: "hostile.wasm".into(),
            size: (8 << 20) + 3,
            limit: 1 << 20
        }
    );
    still_serves(&host, &plugin);
}

#[test]
fn a_guest_panic_is_a_crash_error() {
    let (host, _dir) = host();
    let plugin = load(&host);
    let err = begin(&plugin, "panic").unwrap_err();
    assert!(matches!(err, CallError::Trap { .. }), "{err}");
    assert!(err.to_string().contains("unreachable"), "{err}");
    still_serves(&host, &plugin);
}

#[test]
fn an_ungranted_http_import_is_refused_at_load_naming_the_grant() {
    let (host, _dir) = host();
    let err = host
        .load(&wasm("wants-http"), &LoadSpec::default())
        .err()
        .unwrap();
    assert!(
        matches!(
            err,
            LoadError::NotGranted {
                interface: "http",
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        "plugin wants_http.wasm imports resetgate:plugin/http, which this step does not grant; \
         add `grants: { http: [\"https://sms.example.com\"] }` to the step if the plugin should have it"
    );
    // Granting it is refused too, until the host implements HTTP.
    let grants = Grants {
        http: vec!["https://sms.example.com".into()],
        ..Grants::default()
    };
    let err = host
        .load(
            &wasm("wants-http"),
            &LoadSpec {
                grants,
                ..LoadSpec::default()
            },
        )
        .err()
        .unwrap();
    assert!(
        matches!(
            err,
            LoadError::CapabilityUnavailable {
                interface: "http",
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("not available yet"), "{err}");
}

#[test]
fn files_environment_arguments_and_sockets_give_nothing() {
    let (host, _dir) = host();
    let plugin = load(&host);
    let seen = begin(&plugin, "snoop").unwrap();
    assert_eq!(
        seen,
        // wasi-libc reports "/" when no directory is preopened; listing it is still denied.
        "file=denied dir=denied env=0 home=unset args=0 cwd=/ net=denied"
    );
}

#[test]
fn a_log_flood_is_capped_and_the_call_completes() {
    let (host, _dir) = host();
    let limits = Limits {
        wall_time: Duration::from_secs(5),
        ..Limits::default()
    };
    let plugin = load_with(&host, limits);
    assert_eq!(begin(&plugin, "log-flood").unwrap(), "flooded");
}

#[test]
fn failures_are_counted_and_every_instance_is_fresh() {
    let (host, _dir) = host();
    let plugin = load(&host);
    let before = host.stats();
    for mode in ["loop", "membomb", "panic", "ok", "ok"] {
        let _ = begin(&plugin, mode);
    }
    let after = host.stats();
    assert_eq!(after.calls - before.calls, 5);
    assert_eq!(after.failures - before.failures, 3);
}
