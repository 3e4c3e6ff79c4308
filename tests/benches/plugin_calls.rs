//! Median and p99 of one call of each first-party plugin, through the
//! plugin host with the real capabilities: `Capabilities::from_config`
//! with a sled store behind `kv`, a loopback relay ([`CodeRelay`], plain
//! HTTP) as the one-time-code gate's SMS relay, and an OpenLDAP slapd
//! ([`Slapd`], LDAPS with its CA) for `ldap-directory`. Each call is timed
//! on its own (a fresh instance per call, as in a flow), one caller, after
//! a warm-up; the samples are sorted and the median and p99 printed as a
//! Markdown table for BENCHMARKS.md.
//!
//! Baselines in the same run: the example gate's `begin` (the issue #2
//! call: the host's floor for a call that does no host work) and the
//! host's own argon2id hash and verify, natively (what `local-users` and
//! `questions` spend most of their time in).
//!
//! ```text
//! cargo bench -p resetgate-tests --bench plugin_calls [-- --scale 0.5]
//! ```
//!
//! `--scale` multiplies every sample count (default 1).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::hint::black_box;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use resetgate::config::GatewayConfig;
use resetgate::contract::{CallContext, FieldValue, History, PluginKind, User, Verdict};
use resetgate::plugin::{Capabilities, Grants, Limits, LoadSpec, Plugin, PluginHost};
use resetgate::secret::Secret;
use resetgate::store::SledStore;
use resetgate::users::{NewUser, Users};
use resetgate_tests::relay::CodeRelay;
use resetgate_tests::slapd::Slapd;
use resetgate_tests::wasm;

/// The same allocator as the `resetgate` binary.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const T0: u64 = 1_763_856_000_000;
const PEOPLE: &str = "ou=people,dc=example,dc=test";
/// Directory entries besides the harness's own, so that a search has
/// something to search.
const EXTRA_PEOPLE: usize = 2000;

fn scale() -> f64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == "--scale")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(1.0)
}

/// One row of the table.
struct Row {
    plugin: &'static str,
    call: &'static str,
    samples: usize,
    median: Duration,
    p99: Duration,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Runs `f(i)` for `warm` rounds, then times `samples` calls of it.
/// `f` returns the time of the part that is the call (a setup outside
/// the call, e.g. a `begin` before an `answer`, is not counted).
fn measure(
    rows: &mut Vec<Row>,
    plugin: &'static str,
    call: &'static str,
    samples: usize,
    mut f: impl FnMut(usize) -> Duration,
) {
    let samples = ((samples as f64) * scale()).max(10.0) as usize;
    let warm = (samples / 10).max(3);
    for i in 0..warm {
        f(i);
    }
    let mut times: Vec<Duration> = (0..samples).map(|i| f(warm + i)).collect();
    times.sort();
    let row = Row {
        plugin,
        call,
        samples,
        median: percentile(&times, 0.5),
        p99: percentile(&times, 0.99),
    };
    eprintln!(
        "{plugin} {call}: median {:?}, p99 {:?} ({samples})",
        row.median, row.p99
    );
    rows.push(row);
}

/// Times `f` alone.
fn timed<T>(f: impl FnOnce() -> T) -> (Duration, T) {
    let t = Instant::now();
    let out = f();
    (t.elapsed(), out)
}

fn ctx(config: &serde_json::Value) -> CallContext {
    CallContext {
        flow_id: "0f8e9d2c4b6a81735e1d0c9b8a7f6e5d".into(),
        workflow: "bench".into(),
        step: "gates[0]".into(),
        config: config.to_string(),
        now_ms: T0,
        language: String::new(),
    }
}

fn values(pairs: &[(&str, &str)]) -> Vec<FieldValue> {
    pairs
        .iter()
        .map(|(n, v)| FieldValue {
            name: (*n).to_owned(),
            value: Secret::from(*v),
        })
        .collect()
}

fn person(name: &str) -> User {
    User {
        id: format!("uid={name},{PEOPLE}"),
        name: name.into(),
        attributes: vec![
            ("mail".into(), format!("{name}@example.test")),
            ("displayName".into(), format!("{name} Example")),
        ],
    }
}

fn write_secret(dir: &Path, name: &str, value: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, value).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

/// What every plugin of the bench shares: one host, one store, one set of
/// capabilities built from a gateway config.
struct Lab {
    host: PluginHost,
    store: Arc<SledStore>,
    relay: CodeRelay,
    slapd: Slapd,
    _dirs: Vec<tempfile::TempDir>,
}

impl Lab {
    fn new() -> Lab {
        let slapd = Slapd::start_with(&resetgate_tests::fixtures::ldap_people(
            "bench",
            EXTRA_PEOPLE,
        ));
        let relay = CodeRelay::start();
        let dir = tempfile::tempdir().unwrap();
        let data = tempfile::tempdir().unwrap();
        let bind = write_secret(dir.path(), "ldap-bind", Slapd::BIND_PASSWORD);
        let sms = write_secret(dir.path(), "sms-key", "bench-relay-key");
        let yaml = format!(
            "version: 1\nsecrets:\n  ldap-bind: {{ file: {bind:?} }}\n  sms-key: {{ file: {sms:?} }}\n\
             ldap:\n  corp: {{ url: \"{}\", bind_dn: \"{}\", bind_secret: ldap-bind, ca_file: {:?} }}\n\
             http_origins:\n  - {{ origin: \"{}\", plain_http: true }}\n",
            slapd.ldaps_url(),
            Slapd::BIND_DN,
            slapd.ca_file(),
            relay.origin(),
        );
        let config = GatewayConfig::from_bytes(&dir.path().join("gateway.yaml"), yaml.as_bytes())
            .unwrap_or_else(|e| panic!("{e:?}"));
        let store = Arc::new(SledStore::open(data.path()).unwrap());
        let host =
            PluginHost::new(resetgate::plugin::HostConfig::new(dir.path().join("cache"))).unwrap();
        host.set_capabilities(Arc::new(
            Capabilities::from_config(&config, Some(store.clone())).unwrap(),
        ));
        Lab {
            host,
            store,
            relay,
            slapd,
            _dirs: vec![dir, data],
        }
    }

    /// Loads the plugin `name` from a copy named `NAME.wasm`, as in a
    /// gateway's plugin folder (its `kv` namespace is its file's name).
    fn load(&self, name: &str, kind: PluginKind, grants: Grants) -> Plugin {
        let path = self._dirs[0].path().join(format!("{name}.wasm"));
        std::fs::copy(wasm(name), &path).unwrap();
        self.host
            .load(
                &path,
                &LoadSpec {
                    kind: Some(kind),
                    grants,
                    // Room for argon2id on a loaded machine, as workflows give.
                    limits: Limits {
                        wall_time: Duration::from_secs(30),
                        ..Limits::default()
                    },
                },
            )
            .unwrap_or_else(|e| panic!("{name}: {e}"))
    }
}

fn kv() -> Grants {
    Grants {
        kv: true,
        ..Grants::default()
    }
}

fn baselines(lab: &Lab, rows: &mut Vec<Row>) {
    let p = lab.load("example-question", PluginKind::Gate, Grants::default());
    let c = ctx(&serde_json::json!({"question": "What was the name of your first school?"}));
    let u = person("alice");
    let gate = p.gate().unwrap();
    measure(rows, "baseline: example-question", "begin", 20_000, |_| {
        timed(|| black_box(gate.begin(&c, &u, None).unwrap().unwrap())).0
    });
    let pw = Secret::from("correct horse battery staple");
    let phc = resetgate::plugin::hash_secret(&pw).unwrap();
    measure(rows, "baseline: native argon2id", "hash", 200, |_| {
        timed(|| black_box(resetgate::plugin::hash_secret(&pw).unwrap())).0
    });
    measure(rows, "baseline: native argon2id", "verify", 200, |_| {
        timed(|| assert!(resetgate::plugin::verify_secret(&pw, &phc).unwrap())).0
    });
}

fn local_users(lab: &Lab, rows: &mut Vec<Row>) {
    let users = Users::new(lab.store.clone(), "local-users").unwrap();
    let password = "alice-correct-horse-1";
    users
        .add(
            NewUser {
                name: "alice".into(),
                attributes: [("mail".to_owned(), "alice@example.test".to_owned())].into(),
                password: Some(Secret::from(password)),
                ..NewUser::default()
            },
            false,
        )
        .unwrap();
    let p = lab.load("local-users", PluginKind::Directory, kv());
    let d = p.directory().unwrap();
    let c = ctx(&serde_json::json!({}));
    let alice = d.find_user(&c, "alice").unwrap().unwrap().unwrap();
    measure(rows, "local-users", "find-user", 5000, |_| {
        timed(|| black_box(d.find_user(&c, "alice").unwrap().unwrap())).0
    });
    let pw = Secret::from(password);
    measure(rows, "local-users", "verify-password", 200, |_| {
        timed(|| assert!(d.verify_password(&c, &alice, &pw).unwrap().unwrap())).0
    });
    measure(rows, "local-users", "set-password", 200, |i| {
        let pw = Secret::new(format!("bench-{i}-harbour-lantern"));
        timed(|| d.set_password(&c, &alice, &pw, false).unwrap().unwrap()).0
    });
}

fn attribute_gate(lab: &Lab, rows: &mut Vec<Row>) {
    let p = lab.load("attribute-gate", PluginKind::Gate, Grants::default());
    let g = p.gate().unwrap();
    let c = ctx(&serde_json::json!({"attribute": "mail", "label": "Your e-mail address"}));
    let u = person("alice");
    let round = g.begin(&c, &u, None).unwrap().unwrap();
    measure(rows, "attribute-gate", "begin", 20_000, |_| {
        timed(|| black_box(g.begin(&c, &u, None).unwrap().unwrap())).0
    });
    let answer = values(&[("value", "Alice@Example.test")]);
    measure(rows, "attribute-gate", "answer", 20_000, |_| {
        timed(|| {
            assert_eq!(
                g.answer(&c, &u, None, &round.state, &answer)
                    .unwrap()
                    .unwrap(),
                Verdict::Passed
            )
        })
        .0
    });
}

/// Eight admin questions and their answers.
const QA: [(&str, &str); 8] = [
    ("What was the name of your first pet?", "Rex the dog"),
    ("In which city were you born?", "Lisbon"),
    ("What was your first car?", "a blue beetle"),
    ("What is your oldest cousin's name?", "Margarida"),
    ("What was your first school?", "Escola 12"),
    ("What street did you grow up on?", "Rua Augusta"),
    ("What was your childhood nickname?", "Pipoca"),
    ("Who was your first teacher?", "Senhora Silva"),
];

fn answer_of(question: &str) -> &'static str {
    QA.iter().find(|(q, _)| *q == question).unwrap().1
}

/// Every field of `fields` answered right (fields labelled by question).
fn right_answers(fields: &[resetgate::contract::Field]) -> Vec<FieldValue> {
    fields
        .iter()
        .map(|f| FieldValue {
            name: f.name.clone(),
            value: Secret::from(answer_of(&f.label)),
        })
        .collect()
}

fn questions(lab: &Lab, rows: &mut Vec<Row>) {
    let p = lab.load("questions", PluginKind::Gate, kv());
    let g = p.gate().unwrap();
    // FIM's five counts: 8 defined, 6 shown and required at registration,
    // 3 asked at a reset, all 3 required.
    let questions: Vec<&str> = QA.iter().map(|(q, _)| *q).collect();
    let c = ctx(&serde_json::json!({
        "questions": questions,
        "user_questions": 0,
        "shown_at_registration": 6,
        "required_at_registration": 6,
        "asked_at_reset": 3,
        "required_at_reset": 3,
    }));
    let u = person("alice");
    let round = g.enroll_prompt(&c, &u).unwrap().unwrap();
    let enrollment = g
        .enroll(&c, &u, &round.state, &right_answers(&round.prompt.fields))
        .unwrap()
        .unwrap();
    // `begin` pins the subset until it is answered right: answer it each
    // time so that every `begin` draws (and stores) a new one.
    measure(rows, "questions", "begin", 300, |_| {
        let (t, round) = timed(|| g.begin(&c, &u, Some(&enrollment)).unwrap().unwrap());
        let v = g
            .answer(
                &c,
                &u,
                Some(&enrollment),
                &round.state,
                &right_answers(&round.prompt.fields),
            )
            .unwrap()
            .unwrap();
        assert_eq!(v, Verdict::Passed);
        t
    });
    measure(rows, "questions", "answer (3 right)", 100, |_| {
        let round = g.begin(&c, &u, Some(&enrollment)).unwrap().unwrap();
        let answers = right_answers(&round.prompt.fields);
        let (t, v) = timed(|| {
            g.answer(&c, &u, Some(&enrollment), &round.state, &answers)
                .unwrap()
                .unwrap()
        });
        assert_eq!(v, Verdict::Passed);
        t
    });
}

/// The RFC 6238 code (SHA-1, 6 digits) of `key` for time step `step`.
fn totp_code(key: &[u8], step: u64) -> String {
    let k = ring::hmac::Key::new(ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, key);
    let mac = ring::hmac::sign(&k, &step.to_be_bytes());
    let mac = mac.as_ref();
    let offset = usize::from(mac[19] & 0x0f);
    let bin = u32::from_be_bytes(mac[offset..offset + 4].try_into().unwrap()) & 0x7fff_ffff;
    format!("{:06}", bin % 1_000_000)
}

fn totp(lab: &Lab, rows: &mut Vec<Row>) {
    let p = lab.load("totp", PluginKind::Gate, kv());
    let g = p.gate().unwrap();
    let c = ctx(&serde_json::json!({}));
    let key = b"12345678901234567890";
    let mut enrollment = vec![1u8];
    enrollment.extend_from_slice(key);
    let code = values(&[("code", &totp_code(key, T0 / 30_000))]);
    let u = person("alice");
    measure(rows, "totp", "begin", 20_000, |_| {
        timed(|| black_box(g.begin(&c, &u, Some(&enrollment)).unwrap().unwrap())).0
    });
    // A code is accepted once per time step and user: a user per call.
    measure(rows, "totp", "answer (right code)", 5000, |i| {
        let u = person(&format!("totp{i}"));
        let round = g.begin(&c, &u, Some(&enrollment)).unwrap().unwrap();
        let (t, v) = timed(|| {
            g.answer(&c, &u, Some(&enrollment), &round.state, &code)
                .unwrap()
                .unwrap()
        });
        assert_eq!(v, Verdict::Passed);
        t
    });
}

fn one_time_code(lab: &Lab, rows: &mut Vec<Row>) {
    let p = lab.load(
        "one-time-code",
        PluginKind::Gate,
        Grants {
            http: vec![lab.relay.origin()],
            secrets: vec!["sms-key".into()],
            kv: true,
            ..Grants::default()
        },
    );
    let g = p.gate().unwrap();
    let c = ctx(&serde_json::json!({
        "url": lab.relay.url("/send"),
        "body": CodeRelay::BODY,
        "headers": {"Authorization": {"secret": "sms-key"}},
        "destination_attribute": "mail",
        "decoy_domain": "example.test",
    }));
    // At most 5 sends per user per hour: a user per code.
    measure(
        rows,
        "one-time-code",
        "begin (code sent to the relay)",
        3000,
        |i| {
            let u = person(&format!("otc-begin{i}"));
            timed(|| black_box(g.begin(&c, &u, None).unwrap().unwrap())).0
        },
    );
    measure(rows, "one-time-code", "answer (right code)", 3000, |i| {
        let u = person(&format!("otc-answer{i}"));
        let round = g.begin(&c, &u, None).unwrap().unwrap();
        let mail = format!("otc-answer{i}@example.test");
        let code = values(&[("code", &lab.relay.take_code(&mail).unwrap())]);
        let (t, v) = timed(|| {
            g.answer(&c, &u, None, &round.state, &code)
                .unwrap()
                .unwrap()
        });
        assert_eq!(v, Verdict::Passed);
        t
    });
}

fn ldap_directory(lab: &Lab, rows: &mut Vec<Row>) {
    let p = lab.load(
        "ldap-directory",
        PluginKind::Directory,
        Grants {
            ldap: vec!["corp".into()],
            ..Grants::default()
        },
    );
    let d = p.directory().unwrap();
    let c = ctx(&serde_json::json!({
        "connection": "corp",
        "base": PEOPLE,
        "user_attributes": ["uid", "mail"],
    }));
    measure(rows, "ldap-directory", "find-user", 3000, |i| {
        let name = format!("bench{}", i % EXTRA_PEOPLE);
        let (t, u) = timed(|| d.find_user(&c, &name).unwrap().unwrap());
        assert!(u.is_some());
        t
    });
    let bob = d.find_user(&c, "bob").unwrap().unwrap().unwrap();
    let bob_pw = Secret::from("bob-old-1");
    measure(
        rows,
        "ldap-directory",
        "verify-password (bind)",
        1000,
        |_| timed(|| assert!(d.verify_password(&c, &bob, &bob_pw).unwrap().unwrap())).0,
    );
    let alice = d.find_user(&c, "alice").unwrap().unwrap().unwrap();
    measure(rows, "ldap-directory", "set-password", 2000, |i| {
        let pw = Secret::new(format!("bench-{i}-harbour-lantern"));
        timed(|| d.set_password(&c, &alice, &pw, false).unwrap().unwrap()).0
    });
}

fn example_lockout(lab: &Lab, rows: &mut Vec<Row>) {
    let p = lab.load("example-lockout", PluginKind::Lockout, Grants::default());
    let l = p.lockout().unwrap();
    let c = ctx(&serde_json::json!({"threshold": 3, "lockout_ms": [900000], "max_lockouts": 3}));
    let history = History {
        failures_ms: vec![T0 - 60_000, T0 - 30_000],
        last_success_ms: Some(T0 - 86_400_000),
    };
    measure(
        rows,
        "example-lockout",
        "decide (2 failures)",
        20_000,
        |_| timed(|| black_box(l.decide(&c, &history).unwrap().unwrap())).0,
    );
}

fn main() {
    // `cargo bench` passes `--bench`, which is ignored; `--scale` is read by `measure`.
    let lab = Lab::new();
    let mut rows = Vec::new();
    let started = Instant::now();
    let cpu = resetgate::metrics::cpu_seconds("self");
    let slapd_cpu = resetgate::metrics::cpu_seconds(&lab.slapd.pid().to_string());
    baselines(&lab, &mut rows);
    example_lockout(&lab, &mut rows);
    attribute_gate(&lab, &mut rows);
    totp(&lab, &mut rows);
    local_users(&lab, &mut rows);
    questions(&lab, &mut rows);
    one_time_code(&lab, &mut rows);
    ldap_directory(&lab, &mut rows);
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "\nplugin calls, one caller, {cores} cores, {:.0} s ({:.1} s CPU here, {:.1} s in slapd); relay sent {} codes\n",
        started.elapsed().as_secs_f64(),
        resetgate::metrics::cpu_seconds("self") - cpu,
        resetgate::metrics::cpu_seconds(&lab.slapd.pid().to_string()) - slapd_cpu,
        lab.relay.sent(),
    );
    println!("| plugin | call | samples | median | p99 |");
    println!("|---|---|---|---|---|");
    for r in &rows {
        println!(
            "| {} | {} | {} | {} | {} |",
            r.plugin,
            r.call,
            r.samples,
            show(r.median),
            show(r.p99)
        );
    }
    let Lab {
        host,
        store,
        relay,
        slapd,
        _dirs,
    } = lab;
    drop((host, store, relay));
    assert!(slapd.stop(), "slapd did not stop cleanly");
}

fn show(d: Duration) -> String {
    if d < Duration::from_millis(1) {
        format!("{:.1} µs", d.as_secs_f64() * 1e6)
    } else {
        format!("{:.2} ms", d.as_secs_f64() * 1e3)
    }
}
