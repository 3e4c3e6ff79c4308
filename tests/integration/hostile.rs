//! Plugins that misbehave: each failure is a typed error, never a panic or a
//! hang, and the host keeps serving well-behaved calls afterwards.

use std::time::{Duration, Instant};

use resetgate::contract::{CallContext, PluginKind, User};
use resetgate::plugin::{CallError, Grants, Limits, LoadSpec, Plugin, PluginHost};
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
    let CallError::Timeout {
        elapsed,
        waiting_in,
        ..
    } = &err
    else {
        panic!("expected a timeout, got {err}");
    };
    assert_eq!(*waiting_in, None);
    assert!(*elapsed >= Duration::from_millis(200), "{err}");
    assert!(
        err.to_string()
            .starts_with("plugin hostile.wasm was stopped after ")
            && err.to_string().ends_with(" ms at its time limit of 200 ms"),
        "{err}"
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
            // The state's bytes, the title's, and 16 each for the title,
            // the prompt and the round.
            size: (8 << 20) + 3 + 3 * 16,
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
fn an_ungranted_http_import_loads_with_a_warning_and_its_call_is_stopped() {
    let (host, _dir) = host();
    let plugin = host
        .load(&wasm("wants-http"), &LoadSpec::default())
        .unwrap();
    let warnings: Vec<String> = plugin.warnings().iter().map(ToString::to_string).collect();
    assert_eq!(
        warnings,
        [
            "plugin wants_http.wasm imports http, which this step does not grant: its calls to them \
          will fail; add grants: { http: [\"https://sms.example.com\"] } to the step if the plugin \
          needs them"
        ]
    );
    let err = begin(&plugin, "ok").unwrap_err();
    assert_eq!(
        err,
        CallError::Refused {
            plugin: "wants_http.wasm".into(),
            reason: "it called http.send, which this step does not grant; add \
                     `grants: { http: [\"https://sms.example.com\"] }` to the step if the plugin \
                     should have it"
                .into()
        }
    );
    // Granted, the call reaches the capability, which sends nothing to an
    // origin the gateway config does not list.
    let grants = Grants {
        http: vec!["https://sms.example.com".into()],
        ..Grants::default()
    };
    let plugin = host
        .load(
            &wasm("wants-http"),
            &LoadSpec {
                grants,
                ..LoadSpec::default()
            },
        )
        .unwrap();
    assert!(plugin.warnings().is_empty(), "{:?}", plugin.warnings());
    assert_eq!(begin(&plugin, "ok").unwrap(), "failed");
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

#[test]
fn a_sleep_in_a_wasi_clock_wait_ends_at_the_deadline_and_says_where() {
    let (host, _dir) = host();
    let plugin = load(&host);
    let started = Instant::now();
    let err = begin(&plugin, "sleep").unwrap_err();
    let CallError::Timeout {
        elapsed,
        waiting_in,
        limit,
        ..
    } = &err
    else {
        panic!("expected a timeout, got {err}");
    };
    assert_eq!(*limit, Duration::from_millis(200));
    assert!(
        waiting_in
            .as_deref()
            .is_some_and(|w| w.starts_with("wasi:io/poll")),
        "{err}"
    );
    // Stopped at its limit, not after its 10 s sleep; the message tells
    // how long it really ran.
    assert!(started.elapsed() < Duration::from_secs(9), "{err}");
    assert!(*elapsed >= Duration::from_millis(200), "{err}");
    assert!(
        err.to_string()
            .contains("at its time limit of 200 ms, while waiting in wasi:io/poll"),
        "{err}"
    );
    still_serves(&host, &plugin);
}

#[test]
fn slow_hash_verify_refuses_a_costlier_phc_string_without_hashing() {
    let (host, _dir) = host();
    let plugin = load(&host);
    let err = begin(&plugin, "argon2-bomb").unwrap_err();
    let CallError::Refused { reason, .. } = &err else {
        panic!("expected a refusal, got {err}");
    };
    assert_eq!(
        reason,
        "slow-hash verify refused the PHC string: its parameters m=1048576, t=16, p=1 exceed \
         the host's m=19456, t=2, p=1"
    );
    still_serves(&host, &plugin);
}

#[test]
fn slow_hash_verify_accepts_the_hosts_own_strings_and_refuses_others() {
    use resetgate::plugin::{SlowHashError, hash_secret, verify_secret};
    use resetgate::secret::Secret;
    let secret = Secret::new("correct horse".to_owned());
    let phc = hash_secret(&secret).unwrap();
    assert!(verify_secret(&secret, &phc).unwrap());
    assert!(!verify_secret(&Secret::new("wrong".to_owned()), &phc).unwrap());
    // Cheaper parameters (an older default) still verify.
    let weak = "$argon2id$v=19$m=8,t=1,p=1$c29tZXNhbHQ$LB8q/rOCqXXA6ctGoi0+7w";
    assert!(verify_secret(&Secret::new("x".to_owned()), weak).is_ok());
    for (phc, why) in [
        (
            "$argon2id$v=19$m=262144,t=16,p=1$c29tZXNhbHQ$LB8q/rOCqXXA6ctGoi0+7w",
            "exceed",
        ),
        (
            "$argon2i$v=19$m=8,t=1,p=1$c29tZXNhbHQ$LB8q/rOCqXXA6ctGoi0+7w",
            "not argon2id",
        ),
        ("not a phc string", "not a PHC string"),
    ] {
        let err = verify_secret(&secret, phc).unwrap_err();
        assert!(matches!(err, SlowHashError::BadPhc(_)), "{err}");
        assert!(err.to_string().contains(why), "{err}");
    }
}

#[test]
fn empty_fields_and_choices_count_toward_the_output_limit() {
    let (host, _dir) = host();
    let limits = Limits {
        wall_time: Duration::from_secs(5),
        memory: 64 << 20,
        output: 1 << 20,
    };
    let plugin = load_with(&host, limits);
    for mode in ["fields-300k", "choices-1m"] {
        let err = begin(&plugin, mode).unwrap_err();
        let CallError::OutputTooLarge { size, limit, .. } = err else {
            panic!("{mode}: expected output-too-large, got {err}");
        };
        assert_eq!(limit, 1 << 20);
        assert!(size > 10 << 20, "{mode}: counted only {size} bytes");
    }
    still_serves(&host, &plugin);
}

#[test]
fn prompts_are_bounded_in_fields_and_choices_and_names_are_unique() {
    let (host, _dir) = host();
    // Even with a generous output limit, the shape of a prompt is bounded.
    let limits = Limits {
        wall_time: Duration::from_secs(5),
        memory: 64 << 20,
        output: 64 << 20,
    };
    let plugin = load_with(&host, limits);
    for (mode, why) in [
        (
            "fields-300k",
            "a prompt has 300000 fields; at most 32 are allowed",
        ),
        (
            "fields-33",
            "a prompt has 33 fields; at most 32 are allowed",
        ),
        (
            "choices-1m",
            "field \"0\" has 1000000 choices; at most 256 are allowed",
        ),
        (
            "duplicate-fields",
            "a prompt has two fields named \"0\"; field names must be unique",
        ),
    ] {
        let err = begin(&plugin, mode).unwrap_err();
        assert_eq!(
            err,
            CallError::BadOutput {
                plugin: "hostile.wasm".into(),
                reason: why.into()
            },
            "{mode}"
        );
    }
    // A round heavier than what a flow keeps is refused whatever the limit.
    let err = begin(&plugin, "output-8mb").unwrap_err();
    assert!(
        err.to_string()
            .contains("at most 262144 are kept with a flow"),
        "{err}"
    );
    still_serves(&host, &plugin);
}
