//! The `questions` and `totp` gates, in process through the plugin host
//! with a fixed clock (`now-ms` chosen in the call context): every count
//! of `questions`, normalisation, the subset kept until answered, decoys;
//! TOTP drift, replay and enrollment; no answer or key in a log line. Then
//! both through the real binary and the HTTP API: an enrollment and a
//! reset, and no answer or key in any file of the data folder.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Arc, Mutex};

use resetgate::config::GatewayConfig;
use resetgate::contract::{
    CallContext, Display, FieldKind, FieldValue, PluginFailure, PluginKind, Round, User, Verdict,
};
use resetgate::plugin::{Capabilities, Grants, Limits, LoadSpec, Plugin, PluginHost};
use resetgate::secret::Secret;
use resetgate::store::SledStore;
use resetgate_tests::{host, wasm};

/// A Tuesday in 2026, on a 30 s boundary.
const T0: u64 = 1_763_856_000_000;

// ---------------------------------------------------------------------------
// Counting argon2id runs: each one (hash or verify, with the host's
// parameters) allocates its 19 MiB of blocks in one piece, on the thread
// that makes the plugin call. This binary's allocator counts them per
// thread, so a test can tell how many slow hashes a call cost.
// ---------------------------------------------------------------------------

/// argon2id's memory with the host's parameters: 19456 blocks of 1 KiB.
const ARGON2_BYTES: usize = 19 * 1024 * 1024;

thread_local! {
    static ARGON2_RUNS: Cell<u64> = const { Cell::new(0) };
}

struct CountingAlloc;

#[allow(unsafe_code)] // a global allocator is unsafe by definition
mod counting {
    use super::*;

    impl CountingAlloc {
        fn note(layout: Layout) {
            if layout.size() == ARGON2_BYTES {
                let _ = ARGON2_RUNS.try_with(|c| c.set(c.get() + 1));
            }
        }
    }

    // SAFETY: every call is forwarded to `System` unchanged.
    unsafe impl GlobalAlloc for CountingAlloc {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            Self::note(layout);
            // SAFETY: forwarded as is.
            unsafe { System.alloc(layout) }
        }
        unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
            Self::note(layout);
            // SAFETY: forwarded as is.
            unsafe { System.alloc_zeroed(layout) }
        }
        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            // SAFETY: forwarded as is.
            unsafe { System.dealloc(ptr, layout) }
        }
        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            // SAFETY: forwarded as is.
            unsafe { System.realloc(ptr, layout, new_size) }
        }
    }

    #[global_allocator]
    static ALLOC: CountingAlloc = CountingAlloc;
}

/// How many argon2id runs `f` caused on this thread.
fn argon2_runs<T>(f: impl FnOnce() -> T) -> (T, u64) {
    let before = ARGON2_RUNS.with(Cell::get);
    let out = f();
    (out, ARGON2_RUNS.with(Cell::get) - before)
}

// ---------------------------------------------------------------------------
// Capturing the log lines the host writes (the plugins' own included) on
// this thread.
// ---------------------------------------------------------------------------

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    /// Every line logged on this thread (at every level) while the guard lives.
    fn start() -> (Captured, impl Drop) {
        use tracing_subscriber::util::SubscriberInitExt as _;
        let captured = Captured::default();
        let writer = captured.clone();
        let guard = tracing_subscriber::fmt()
            .with_max_level(tracing_subscriber::filter::LevelFilter::TRACE)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish()
            .set_default();
        (captured, guard)
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

// ---------------------------------------------------------------------------
// Set-up
// ---------------------------------------------------------------------------

/// A host with a store for `kv`, and the gate `name` loaded with `kv`.
struct Bench {
    plugin: Plugin,
    _host: PluginHost,
    _store: Arc<SledStore>,
    _dirs: (tempfile::TempDir, tempfile::TempDir),
}

fn bench(name: &str) -> Bench {
    let data = tempfile::tempdir().unwrap();
    let (host, cache) = host();
    let store = Arc::new(SledStore::open(data.path()).unwrap());
    host.set_capabilities(Arc::new(Capabilities::with_kv(store.clone())));
    let spec = LoadSpec {
        kind: Some(PluginKind::Gate),
        grants: Grants {
            kv: true,
            ..Grants::default()
        },
        // Registering eight answers is eight argon2id hashes: room for a
        // loaded machine (as a workflow gives with `limits.wall_time`).
        limits: Limits {
            wall_time: std::time::Duration::from_secs(30),
            ..Limits::default()
        },
    };
    let plugin = host.load(&wasm(name), &spec).unwrap();
    Bench {
        plugin,
        _host: host,
        _store: store,
        _dirs: (data, cache),
    }
}

fn ctx(config: &serde_json::Value, now_ms: u64) -> CallContext {
    CallContext {
        flow_id: "flow-1".into(),
        workflow: "test".into(),
        step: "gates[0]".into(),
        config: config.to_string(),
        now_ms,
        language: String::new(),
    }
}

fn user(id: &str) -> User {
    User {
        id: format!("uid={id},ou=people"),
        name: id.into(),
        attributes: vec![],
    }
}

/// A decoy: the typed name, no id.
fn decoy(name: &str) -> User {
    User {
        id: String::new(),
        name: name.into(),
        attributes: vec![],
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

fn labels(round: &Round) -> Vec<String> {
    round
        .prompt
        .fields
        .iter()
        .map(|f| f.label.clone())
        .collect()
}

// ---------------------------------------------------------------------------
// questions
// ---------------------------------------------------------------------------

/// Eight admin questions, each with the answer a test user gives.
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

fn questions_config(
    count: usize,
    shown: usize,
    user_questions: usize,
    required: usize,
    asked: usize,
    right: usize,
) -> serde_json::Value {
    let questions: Vec<&str> = QA.iter().take(count).map(|(q, _)| *q).collect();
    serde_json::json!({
        "questions": questions,
        "user_questions": user_questions,
        "shown_at_registration": shown,
        "required_at_registration": required,
        "asked_at_reset": asked,
        "required_at_reset": right,
    })
}

fn answer_of(question: &str) -> &'static str {
    QA.iter()
        .find(|(q, _)| *q == question)
        .map(|(_, a)| *a)
        .unwrap_or_else(|| panic!("not an admin question: {question}"))
}

/// Registers `user`, answering every admin question the prompt shows with
/// its answer from [`QA`]; returns the enrollment data.
fn register_all(b: &Bench, c: &CallContext, user: &User) -> Vec<u8> {
    let gate = b.plugin.gate().unwrap();
    let round = gate.enroll_prompt(c, user).unwrap().unwrap();
    let input: Vec<(String, String)> = round
        .prompt
        .fields
        .iter()
        .filter(|f| f.name.starts_with("question-"))
        .map(|f| (f.name.clone(), answer_of(&f.label).to_owned()))
        .collect();
    let pairs: Vec<(&str, &str)> = input
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    gate.enroll(c, user, &round.state, &values(&pairs))
        .unwrap()
        .unwrap()
}

/// Answers a reset round: every field right if `right(i)` (by position), a
/// wrong answer otherwise. `own` gives the answers of the user's own
/// questions by question text.
fn reply(
    round: &Round,
    right: impl Fn(usize) -> bool,
    own: &BTreeMap<&str, &str>,
) -> Vec<FieldValue> {
    let answers: Vec<(String, String)> = round
        .prompt
        .fields
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let value = if right(i) {
                own.get(f.label.as_str())
                    .copied()
                    .unwrap_or_else(|| answer_of(&f.label))
                    .to_owned()
            } else {
                "certainly wrong".to_owned()
            };
            (f.name.clone(), value)
        })
        .collect();
    let pairs: Vec<(&str, &str)> = answers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    values(&pairs)
}

fn refusal(result: Result<Result<Vec<u8>, PluginFailure>, resetgate::plugin::CallError>) -> String {
    match result.unwrap() {
        Err(PluginFailure::Refused(reason)) => reason,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn questions_registration_shows_and_requires_the_configured_counts() {
    let b = bench("questions");
    let gate = b.plugin.gate().unwrap();
    // 8 questions, 3 shown, 1 of the user's own, 3 answers required.
    let c = ctx(&questions_config(8, 3, 1, 3, 2, 2), T0);
    let alice = user("alice");

    let round = gate.enroll_prompt(&c, &alice).unwrap().unwrap();
    let names: Vec<&str> = round
        .prompt
        .fields
        .iter()
        .map(|f| f.name.as_str())
        .collect();
    assert_eq!(
        names,
        [
            "question-1",
            "question-2",
            "question-3",
            "own-question-1",
            "own-answer-1"
        ]
    );
    let shown: BTreeSet<String> = labels(&round).into_iter().take(3).collect();
    assert_eq!(shown.len(), 3, "three different admin questions");
    for q in &shown {
        answer_of(q);
    }
    assert_eq!(round.prompt.fields[0].kind, FieldKind::Secret);
    assert_eq!(round.prompt.fields[3].kind, FieldKind::Text);
    assert_eq!(round.prompt.fields[4].kind, FieldKind::Secret);
    let help = round.prompt.help.clone().unwrap();
    assert!(help.contains("at least 3"), "{help}");
    // The three shown are chosen at random: other prompts show others.
    let mut seen = BTreeSet::new();
    for _ in 0..20 {
        let r = gate.enroll_prompt(&c, &alice).unwrap().unwrap();
        seen.extend(labels(&r).into_iter().take(3));
    }
    assert!(seen.len() > 3, "the shown questions vary: {seen:?}");

    let q = |n: usize| answer_of(&round.prompt.fields[n].label);
    let enroll = |pairs: &[(&str, &str)]| gate.enroll(&c, &alice, &round.state, &values(pairs));
    // Two answers of three required.
    let reason = refusal(enroll(&[
        ("question-1", q(0)),
        ("question-2", q(1)),
        ("question-3", ""),
        ("own-question-1", ""),
        ("own-answer-1", ""),
    ]));
    assert_eq!(reason, "2 questions answered, 3 required");
    // An own question without its answer.
    let reason = refusal(enroll(&[
        ("question-1", q(0)),
        ("question-2", q(1)),
        ("question-3", q(2)),
        ("own-question-1", "What did I break in 1999?"),
        ("own-answer-1", ""),
    ]));
    assert!(reason.contains("both a question and an answer"), "{reason}");
    // The same answer twice, once in other case and spacing.
    let reason = refusal(enroll(&[
        ("question-1", "Rex the dog"),
        ("question-2", "  REX   the DOG "),
        ("question-3", q(2)),
        ("own-question-1", ""),
        ("own-answer-1", ""),
    ]));
    assert_eq!(reason, "two questions have the same answer");
    // An answer shorter than the minimum (3) once normalised.
    let reason = refusal(enroll(&[
        ("question-1", q(0)),
        ("question-2", q(1)),
        ("question-3", "  Ab  "),
        ("own-question-1", ""),
        ("own-answer-1", ""),
    ]));
    assert!(reason.contains("shorter than 3"), "{reason}");

    // Two admin answers and an own question: three, enough.
    let data = enroll(&[
        ("question-1", q(0)),
        ("question-2", ""),
        ("question-3", q(2)),
        ("own-question-1", "What did I  break in 1999?"),
        ("own-answer-1", "the kitchen window"),
    ])
    .unwrap()
    .unwrap();
    let stored = String::from_utf8(data).unwrap();
    let parsed: serde_json::Value = serde_json::from_str(&stored).unwrap();
    let answers = parsed["answers"].as_array().unwrap();
    assert_eq!(answers.len(), 3);
    for a in answers {
        assert!(
            a["hash"]
                .as_str()
                .unwrap()
                .starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{a}"
        );
    }
    assert_eq!(answers[2]["question"], "What did I break in 1999?");
    assert_eq!(answers[2]["own"], true);
    for clear in [q(0), q(2), "kitchen", "window"] {
        assert!(
            !stored.to_lowercase().contains(&clear.to_lowercase()),
            "an answer in clear in the enrollment data: {clear}"
        );
    }
}

#[test]
fn questions_config_refuses_impossible_counts_naming_the_setting_that_limits_them() {
    let dir = tempfile::tempdir().unwrap();
    let plugins = dir.path().join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    for name in ["questions", "example-directory", "example-lockout"] {
        std::fs::copy(wasm(name), plugins.join(format!("{name}.wasm"))).unwrap();
    }
    let (host, _cache) = host();
    let config = GatewayConfig {
        plugins: plugins.clone(),
        data_dir: dir.path().join("data"),
        ..GatewayConfig::default()
    };
    let load = |counts: serde_json::Value| {
        let file = dir.path().join("reset.yaml");
        std::fs::write(
            &file,
            format!(
                "version: 1\nname: reset\npurpose: reset\n\
                 directory: {{ plugin: example-directory, config: {{ users: [{{ name: alice }}] }} }}\n\
                 lockout: {{ plugin: example-lockout, config: {{ threshold: 3, lockout_ms: [60000], max_lockouts: 3 }} }}\n\
                 gates:\n  - id: q\n    plugin: questions\n    grants: {{ kv: true }}\n    config: {counts}\n\
                 password: {{ min_length: 12 }}\n"
            ),
        )
        .unwrap();
        match resetgate::workflow::load_file(&host, &config, &file) {
            Ok(_) => String::new(),
            Err(diags) => diags
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n"),
        }
    };
    // Possible: loads.
    assert_eq!(load(questions_config(5, 4, 1, 5, 3, 2)), "");
    assert_eq!(load(questions_config(1, 1, 0, 1, 1, 1)), "");

    // (config, the message, the help naming the limit)
    let cases = [
        (
            questions_config(5, 4, 0, 5, 3, 2),
            "required_at_registration` must be at most 4, found 5",
            "`shown_at_registration` plus `user_questions`",
        ),
        (
            questions_config(5, 4, 2, 7, 3, 2),
            "required_at_registration` must be at most 6, found 7",
            "`shown_at_registration` plus `user_questions`",
        ),
        (
            questions_config(3, 4, 0, 3, 2, 2),
            "shown_at_registration` must be at most 3, found 4",
            "the questions listed in `questions`",
        ),
        (
            questions_config(5, 5, 1, 3, 4, 2),
            "asked_at_reset` must be at most 3, found 4",
            "`required_at_registration`",
        ),
        (
            questions_config(2, 2, 3, 5, 3, 2),
            "asked_at_reset` must be at most 2, found 3",
            "decoys and users who have not registered",
        ),
        (
            questions_config(5, 5, 0, 5, 3, 4),
            "required_at_reset` must be at most 3, found 4",
            "cannot be more than `asked_at_reset`",
        ),
        (
            {
                let mut c = questions_config(8, 8, 13, 9, 8, 8);
                c["questions"] =
                    serde_json::json!((0..20).map(|i| format!("q{i}")).collect::<Vec<_>>());
                c["shown_at_registration"] = serde_json::json!(8);
                c
            },
            "shown_at_registration` must be at most 6, found 8",
            "at most 32 fields",
        ),
    ];
    for (counts, message, help) in cases {
        let out = load(counts.clone());
        assert!(out.contains(message), "{counts}:\n{out}");
        assert!(out.contains(help), "{counts}:\n{out}");
        assert!(out.contains("error[plugin-config]"), "{out}");
    }
}

#[test]
fn questions_reset_asks_the_configured_number_and_needs_the_configured_right_answers() {
    let b = bench("questions");
    let gate = b.plugin.gate().unwrap();
    // 6 registered, 4 asked, 3 must be right.
    let c = ctx(&questions_config(8, 6, 0, 6, 4, 3), T0);
    let alice = user("alice");
    let data = register_all(&b, &c, &alice);

    let round = gate.begin(&c, &alice, Some(&data)).unwrap().unwrap();
    assert_eq!(round.prompt.fields.len(), 4);
    assert!(
        round
            .prompt
            .fields
            .iter()
            .all(|f| f.kind == FieldKind::Secret)
    );
    assert_eq!(
        labels(&round).into_iter().collect::<BTreeSet<_>>().len(),
        4,
        "four different questions"
    );
    let help = round.prompt.help.clone().unwrap();
    assert!(help.contains("3 of 4"), "{help}");
    let none = BTreeMap::new();
    // Two right of four: not enough, and every answer costs one verification.
    let (verdict, runs) = argon2_runs(|| {
        gate.answer(
            &c,
            &alice,
            Some(&data),
            &round.state,
            &reply(&round, |i| i < 2, &none),
        )
        .unwrap()
        .unwrap()
    });
    assert_eq!(
        verdict,
        Verdict::Failed("2 of 4 answers right, 3 required".into())
    );
    assert_eq!(runs, 4);
    // Three right: passed (the same round, as after a failure).
    let (verdict, runs) = argon2_runs(|| {
        gate.answer(
            &c,
            &alice,
            Some(&data),
            &round.state,
            &reply(&round, |i| i != 1, &none),
        )
        .unwrap()
        .unwrap()
    });
    assert_eq!(verdict, Verdict::Passed);
    assert_eq!(runs, 4);
}

#[test]
fn questions_a_reset_asks_the_users_own_questions_too() {
    let b = bench("questions");
    let gate = b.plugin.gate().unwrap();
    // 1 admin question shown (of 3), 2 own; all 3 asked and required.
    let c = ctx(&questions_config(3, 1, 2, 3, 3, 3), T0);
    let alice = user("alice");
    let round = gate.enroll_prompt(&c, &alice).unwrap().unwrap();
    let own = BTreeMap::from([
        ("Name of my imaginary friend?", "Bartolomeu"),
        ("My first concert?", "Madredeus 1994"),
    ]);
    let data = gate
        .enroll(
            &c,
            &alice,
            &round.state,
            &values(&[
                ("question-1", answer_of(&round.prompt.fields[0].label)),
                ("own-question-1", "Name of my imaginary friend?"),
                ("own-answer-1", "Bartolomeu"),
                ("own-question-2", "My first concert?"),
                ("own-answer-2", "Madredeus 1994"),
            ]),
        )
        .unwrap()
        .unwrap();
    let round = gate.begin(&c, &alice, Some(&data)).unwrap().unwrap();
    let asked: BTreeSet<String> = labels(&round).into_iter().collect();
    assert!(asked.contains("Name of my imaginary friend?"), "{asked:?}");
    assert!(asked.contains("My first concert?"), "{asked:?}");
    let verdict = gate
        .answer(
            &c,
            &alice,
            Some(&data),
            &round.state,
            &reply(&round, |_| true, &own),
        )
        .unwrap()
        .unwrap();
    assert_eq!(verdict, Verdict::Passed);
}

#[test]
fn questions_answers_are_compared_after_nfkc_case_folding_and_whitespace() {
    let b = bench("questions");
    let gate = b.plugin.gate().unwrap();
    let c = ctx(
        &serde_json::json!({
            "questions": ["Where?"],
            "shown_at_registration": 1,
            "required_at_registration": 1,
            "asked_at_reset": 1,
            "required_at_reset": 1,
        }),
        T0,
    );
    let alice = user("alice");
    let round = gate.enroll_prompt(&c, &alice).unwrap().unwrap();
    // Full-width letters, a ligature, a sharp s, a non-breaking space, a tab.
    let data = gate
        .enroll(
            &c,
            &alice,
            &round.state,
            &values(&[("question-1", "Ｇroße\u{a0}Oﬃce\tTower")]),
        )
        .unwrap()
        .unwrap();
    let round = gate.begin(&c, &alice, Some(&data)).unwrap().unwrap();
    let check = |typed: &str| {
        gate.answer(
            &c,
            &alice,
            Some(&data),
            &round.state,
            &values(&[("answer-1", typed)]),
        )
        .unwrap()
        .unwrap()
    };
    for same in [
        "grosse office tower",
        "  GROSSE   OFFICE TOWER ",
        "Große Office Tower",
        "ｇｒｏｓｓｅ ｏｆｆｉｃｅ ｔｏｗｅｒ",
        "GROSSE\u{2003}OFFICE\nTOWER",
    ] {
        // Passing ends the subset; it is the only question, asked again.
        assert_eq!(check(same), Verdict::Passed, "{same:?}");
    }
    for other in [
        "grose office tower",
        "grosseoffice tower",
        "grosse office towers",
        "",
    ] {
        assert!(matches!(check(other), Verdict::Failed(_)), "{other:?}");
    }
}

#[test]
fn questions_a_restarted_reset_asks_the_same_subset_until_answered_right_then_a_new_one() {
    let b = bench("questions");
    let gate = b.plugin.gate().unwrap();
    // 8 registered, 2 asked, both required.
    let c = ctx(&questions_config(8, 8, 0, 8, 2, 2), T0);
    let alice = user("alice");
    let data = register_all(&b, &c, &alice);
    let none = BTreeMap::new();
    let begin = || gate.begin(&c, &alice, Some(&data)).unwrap().unwrap();

    let first = begin();
    // Restarting the flow (a new `begin`) asks the same questions, in the
    // same order, however often; so does a wrong or half-right answer.
    for attempt in 0..6 {
        let again = begin();
        assert_eq!(labels(&again), labels(&first), "restart {attempt}");
        if attempt % 2 == 0 {
            let v = gate
                .answer(
                    &c,
                    &alice,
                    Some(&data),
                    &again.state,
                    &reply(&again, |i| i == 0, &none),
                )
                .unwrap()
                .unwrap();
            assert!(matches!(v, Verdict::Failed(_)));
        }
    }
    // Answered right: the next reset asks a new subset (drawn at random,
    // so it may repeat once by chance: 1 in 56; not five times in a row).
    let mut current = first;
    let mut changed = false;
    for _ in 0..5 {
        let v = gate
            .answer(
                &c,
                &alice,
                Some(&data),
                &current.state,
                &reply(&current, |_| true, &none),
            )
            .unwrap()
            .unwrap();
        assert_eq!(v, Verdict::Passed);
        let next = begin();
        assert_eq!(
            labels(&begin()),
            labels(&next),
            "the new subset is kept too"
        );
        changed |= labels(&next) != labels(&current);
        current = next;
        if changed {
            break;
        }
    }
    assert!(changed, "a new subset after a success");

    // Registering again replaces the answers (the host replaces the data):
    // the old ones no longer pass, the new ones do.
    let round = gate.enroll_prompt(&c, &alice).unwrap().unwrap();
    let input: Vec<(String, String)> = round
        .prompt
        .fields
        .iter()
        .map(|f| (f.name.clone(), format!("new {}", answer_of(&f.label))))
        .collect();
    let pairs: Vec<(&str, &str)> = input
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    let renewed = gate
        .enroll(&c, &alice, &round.state, &values(&pairs))
        .unwrap()
        .unwrap();
    let round = gate.begin(&c, &alice, Some(&renewed)).unwrap().unwrap();
    let old = gate
        .answer(
            &c,
            &alice,
            Some(&renewed),
            &round.state,
            &reply(&round, |_| true, &none),
        )
        .unwrap()
        .unwrap();
    assert!(matches!(old, Verdict::Failed(_)), "{old:?}");
    let new_answers: Vec<(String, String)> = round
        .prompt
        .fields
        .iter()
        .map(|f| (f.name.clone(), format!("new {}", answer_of(&f.label))))
        .collect();
    let pairs: Vec<(&str, &str)> = new_answers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    let new = gate
        .answer(&c, &alice, Some(&renewed), &round.state, &values(&pairs))
        .unwrap()
        .unwrap();
    assert_eq!(new, Verdict::Passed);
}

#[test]
fn questions_a_decoy_gets_the_same_prompt_the_same_pinned_subset_and_the_same_work() {
    let b = bench("questions");
    let gate = b.plugin.gate().unwrap();
    let c = ctx(&questions_config(8, 8, 0, 6, 3, 2), T0);
    let alice = user("alice");
    let data = register_all(&b, &c, &alice);
    let none = BTreeMap::new();

    let real = gate.begin(&c, &alice, Some(&data)).unwrap().unwrap();
    let bob = user("bob"); // known, never registered
    let ghost = decoy("ghost");
    for (who, enrollment) in [(&bob, None), (&ghost, None)] {
        let round = gate.begin(&c, who, enrollment).unwrap().unwrap();
        // The same shape: title, help, field names, kinds, lengths.
        assert_eq!(round.prompt.title, real.prompt.title);
        assert_eq!(round.prompt.help, real.prompt.help);
        assert_eq!(round.prompt.display, real.prompt.display);
        let shape = |r: &Round| {
            r.prompt
                .fields
                .iter()
                .map(|f| (f.name.clone(), f.kind.clone(), f.max_length))
                .collect::<Vec<_>>()
        };
        assert_eq!(shape(&round), shape(&real));
        for q in labels(&round) {
            answer_of(&q);
        }
        // Pinned like a real user's: a restart asks the same.
        let again = gate.begin(&c, who, enrollment).unwrap().unwrap();
        assert_eq!(labels(&again), labels(&round), "{}", who.name);
        assert_eq!(again.state.len(), round.state.len());
        // Three verifications, as for a registered user, and a failure even
        // with the admin questions' "right" answers.
        let (verdict, runs) = argon2_runs(|| {
            gate.answer(
                &c,
                who,
                enrollment,
                &round.state,
                &reply(&round, |_| true, &none),
            )
            .unwrap()
            .unwrap()
        });
        assert!(matches!(verdict, Verdict::Failed(_)), "{verdict:?}");
        assert_eq!(runs, 3, "{}", who.name);
    }
    // A decoy's subset is kept by the name typed (case and spaces aside).
    let a = gate.begin(&c, &decoy("ghost"), None).unwrap().unwrap();
    let b2 = gate.begin(&c, &decoy("  GHOST "), None).unwrap().unwrap();
    assert_eq!(labels(&a), labels(&b2));
    let (_, runs) = argon2_runs(|| {
        gate.answer(
            &c,
            &alice,
            Some(&data),
            &real.state,
            &reply(&real, |_| false, &none),
        )
        .unwrap()
        .unwrap()
    });
    assert_eq!(runs, 3, "a registered user's wrong answers cost the same");
}

#[test]
fn questions_and_totp_never_log_an_answer_or_a_key() {
    const CANARY: &str = "Canary Answer 7f3e";
    let (captured, _guard) = Captured::start();
    let q = bench("questions");
    let t = bench("totp");
    let c = ctx(
        &serde_json::json!({
            "questions": ["Canary question?", "Other?"],
            "shown_at_registration": 2,
            "required_at_registration": 2,
            "asked_at_reset": 2,
            "required_at_reset": 2,
            "min_answer_length": 3,
        }),
        T0,
    );
    let alice = user("alice");
    let gate = q.plugin.gate().unwrap();
    let round = gate.enroll_prompt(&c, &alice).unwrap().unwrap();
    let input = values(&[("question-1", CANARY), ("question-2", CANARY)]);
    // Refused (same answer twice), then registered.
    let _ = gate.enroll(&c, &alice, &round.state, &input).unwrap();
    let data_q = gate
        .enroll(
            &c,
            &alice,
            &round.state,
            &values(&[("question-1", CANARY), ("question-2", "second canary")]),
        )
        .unwrap()
        .unwrap();
    let reset = gate.begin(&c, &alice, Some(&data_q)).unwrap().unwrap();
    for typed in [CANARY, "wrong"] {
        let _ = gate
            .answer(
                &c,
                &alice,
                Some(&data_q),
                &reset.state,
                &values(&[("answer-1", typed), ("answer-2", typed)]),
            )
            .unwrap();
    }
    let tc = ctx(&serde_json::json!({}), T0);
    let totp = t.plugin.gate().unwrap();
    let round = totp.enroll_prompt(&tc, &alice).unwrap().unwrap();
    let key = round.state[1..].to_vec();
    let b32 = base32(&key);
    let good = code(&key, T0 / 1000 / 30);
    let _ = totp
        .enroll(&tc, &alice, &round.state, &values(&[("code", "000000")]))
        .unwrap();
    let data = totp
        .enroll(&tc, &alice, &round.state, &values(&[("code", &good)]))
        .unwrap()
        .unwrap();
    let r = totp.begin(&tc, &alice, Some(&data)).unwrap().unwrap();
    let later = ctx(&serde_json::json!({}), T0 + 30_000);
    let next = code(&key, T0 / 1000 / 30 + 1);
    for typed in [good.as_str(), next.as_str(), next.as_str(), "123456"] {
        let _ = totp
            .answer(
                &later,
                &alice,
                Some(&data),
                &r.state,
                &values(&[("code", typed)]),
            )
            .unwrap();
    }
    // A registration that no longer fits the config: the plugin says so in
    // the log (which shows that the capture sees the plugins' lines).
    let stricter = ctx(
        &serde_json::json!({
            "questions": ["Canary question?", "Other?", "Third?"],
            "shown_at_registration": 3,
            "required_at_registration": 3,
            "asked_at_reset": 3,
            "required_at_reset": 3,
        }),
        T0,
    );
    let _ = gate
        .begin(&stricter, &alice, Some(&data_q))
        .unwrap()
        .unwrap();
    let logs = captured.text();
    assert!(
        logs.contains("they must register again"),
        "the capture works: {logs}"
    );
    for secret in [
        CANARY,
        "second canary",
        b32.as_str(),
        good.as_str(),
        next.as_str(),
    ] {
        assert!(!logs.contains(secret), "{secret:?} in the log:\n{logs}");
    }
    assert!(!logs.to_lowercase().contains("canary answer"), "{logs}");
}

// ---------------------------------------------------------------------------
// totp
// ---------------------------------------------------------------------------

/// RFC 4648 base32 without padding, as authenticator apps take keys.
fn base32(bytes: &[u8]) -> String {
    data_encoding::BASE32_NOPAD.encode(bytes)
}

/// The RFC 6238 code (HMAC-SHA1, 6 digits) of `key` for time step `step`:
/// the test's own implementation, over `ring`.
fn code(key: &[u8], step: u64) -> String {
    let k = ring::hmac::Key::new(ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, key);
    let mac = ring::hmac::sign(&k, &step.to_be_bytes());
    let mac = mac.as_ref();
    let offset = usize::from(mac[19] & 0x0f);
    let bin = u32::from_be_bytes(mac[offset..offset + 4].try_into().unwrap()) & 0x7fff_ffff;
    format!("{:06}", bin % 1_000_000)
}

/// The RFC 6238 appendix B key for SHA-1, as enrollment data (format 1).
fn rfc_enrollment() -> Vec<u8> {
    let mut data = vec![1u8];
    data.extend_from_slice(b"12345678901234567890");
    data
}

#[test]
fn totp_codes_match_rfc_6238s_test_vectors() {
    let b = bench("totp");
    let gate = b.plugin.gate().unwrap();
    // The appendix's 8-digit values, cut to the 6 digits used here.
    for (i, (seconds, expected)) in [
        (59u64, "287082"),
        (1_111_111_109, "081804"),
        (1_111_111_111, "050471"),
        (1_234_567_890, "005924"),
        (2_000_000_000, "279037"),
        (20_000_000_000, "353130"),
    ]
    .into_iter()
    .enumerate()
    {
        assert_eq!(code(b"12345678901234567890", seconds / 30), expected);
        let c = ctx(&serde_json::json!({}), seconds * 1000);
        // A user each: each vector's step is new to them.
        let alice = user(&format!("user{i}"));
        let data = rfc_enrollment();
        let round = gate.begin(&c, &alice, Some(&data)).unwrap().unwrap();
        let v = gate
            .answer(
                &c,
                &alice,
                Some(&data),
                &round.state,
                &values(&[("code", expected)]),
            )
            .unwrap()
            .unwrap();
        assert_eq!(v, Verdict::Passed, "at {seconds}");
    }
}

#[test]
fn totp_accepts_one_step_of_drift_either_side_and_not_two() {
    let data = rfc_enrollment();
    let key = &data[1..];
    let alice = user("alice");
    let b = bench("totp");
    let gate = b.plugin.gate().unwrap();
    // Steps 37037036 and 37037037 hold the appendix's 1111111109 and 1111111111.
    let step = 37_037_037u64;
    for (offset, passes) in [(-2i64, false), (-1, true), (0, true), (1, true), (2, false)] {
        // A user each, so that no step is used yet.
        let alice = user(&format!("drift{offset}"));
        // The flow's clock anywhere inside `step`: here 29 s into it.
        let c = ctx(&serde_json::json!({}), step * 30_000 + 29_000);
        let round = gate.begin(&c, &alice, Some(&data)).unwrap().unwrap();
        let typed = code(key, step.checked_add_signed(offset).unwrap());
        let v = gate
            .answer(
                &c,
                &alice,
                Some(&data),
                &round.state,
                &values(&[("code", &typed)]),
            )
            .unwrap()
            .unwrap();
        if passes {
            assert_eq!(v, Verdict::Passed, "offset {offset}");
        } else {
            assert_eq!(v, Verdict::Failed("wrong code".into()), "offset {offset}");
        }
    }
    // Typed as apps show it, with a space.
    let c = ctx(&serde_json::json!({}), 1_111_111_111_000);
    let round = gate.begin(&c, &alice, Some(&data)).unwrap().unwrap();
    let v = gate
        .answer(
            &c,
            &alice,
            Some(&data),
            &round.state,
            &values(&[("code", "050 471")]),
        )
        .unwrap()
        .unwrap();
    assert_eq!(v, Verdict::Passed);
}

#[test]
fn totp_accepts_a_code_once_per_time_step() {
    let b = bench("totp");
    let gate = b.plugin.gate().unwrap();
    let data = rfc_enrollment();
    let key = &data[1..];
    let alice = user("alice");
    let step = T0 / 30_000;
    let at = |ms: u64| ctx(&serde_json::json!({}), ms);
    let round = gate.begin(&at(T0), &alice, Some(&data)).unwrap().unwrap();
    let check = |now: u64, typed: &str| {
        gate.answer(
            &at(now),
            &alice,
            Some(&data),
            &round.state,
            &values(&[("code", typed)]),
        )
        .unwrap()
        .unwrap()
    };
    let used = Verdict::Failed("code of a time step already used".into());
    assert_eq!(check(T0 + 1_000, &code(key, step)), Verdict::Passed);
    // The same code again in the same step, and later while still in the
    // drift window: refused.
    assert_eq!(check(T0 + 2_000, &code(key, step)), used);
    assert_eq!(check(T0 + 31_000, &code(key, step)), used);
    // The previous step's code (within drift) is older than the one used.
    assert_eq!(check(T0 + 3_000, &code(key, step - 1)), used);
    // The next step's code is new: accepted once.
    assert_eq!(check(T0 + 31_000, &code(key, step + 1)), Verdict::Passed);
    assert_eq!(check(T0 + 32_000, &code(key, step + 1)), used);
    // Another user with the same key is not affected by alice's steps.
    let bob = user("bob");
    let v = gate
        .answer(
            &at(T0 + 40_000),
            &bob,
            Some(&data),
            &round.state,
            &values(&[("code", &code(key, step + 1))]),
        )
        .unwrap()
        .unwrap();
    assert_eq!(v, Verdict::Passed);
}

#[test]
fn totp_enrollment_shows_the_key_and_is_confirmed_only_by_a_valid_code() {
    let b = bench("totp");
    let gate = b.plugin.gate().unwrap();
    let c = ctx(&serde_json::json!({"issuer": "ACME Corp"}), T0);
    let alice = User {
        id: "uid=alice".into(),
        name: "alice@example.com".into(),
        attributes: vec![],
    };
    let round = gate.enroll_prompt(&c, &alice).unwrap().unwrap();
    assert_eq!(round.state.len(), 21, "format byte and a 20-byte key");
    let key = round.state[1..].to_vec();
    let b32 = base32(&key);
    assert_eq!(b32.len(), 32);
    assert_eq!(
        round.prompt.display,
        vec![
            Display::QrCode(format!(
                "otpauth://totp/ACME%20Corp:alice%40example.com?secret={b32}&issuer=ACME%20Corp&period=30&digits=6&algorithm=SHA1"
            )),
            Display::Code(b32.clone()),
        ]
    );
    assert_eq!(round.prompt.fields.len(), 1);
    assert_eq!(round.prompt.fields[0].name, "code");
    assert_eq!(round.prompt.fields[0].kind, FieldKind::Code);
    // Each enrollment draws a new key.
    let other = gate.enroll_prompt(&c, &alice).unwrap().unwrap();
    assert_ne!(other.state, round.state);

    let step = T0 / 30_000;
    let enroll = |typed: &str| gate.enroll(&c, &alice, &round.state, &values(&[("code", typed)]));
    // A wrong code, a code of another key, a code two steps off, no code.
    for typed in [
        "000000".to_owned(),
        code(&other.state[1..], step),
        code(&key, step + 2),
        String::new(),
        "12345".to_owned(),
    ] {
        let reason = refusal(enroll(&typed));
        assert!(reason.contains("does not match"), "{typed:?}: {reason}");
    }
    // The right code: the enrollment data is the key.
    let data = enroll(&code(&key, step)).unwrap().unwrap();
    assert_eq!(data, round.state);
    // The code that confirmed the enrollment does not open a reset.
    let reset = gate.begin(&c, &alice, Some(&data)).unwrap().unwrap();
    let v = gate
        .answer(
            &c,
            &alice,
            Some(&data),
            &reset.state,
            &values(&[("code", &code(&key, step))]),
        )
        .unwrap()
        .unwrap();
    assert_eq!(
        v,
        Verdict::Failed("code of a time step already used".into())
    );
    let later = ctx(&serde_json::json!({"issuer": "ACME Corp"}), T0 + 30_000);
    let v = gate
        .answer(
            &later,
            &alice,
            Some(&data),
            &reset.state,
            &values(&[("code", &code(&key, step + 1))]),
        )
        .unwrap()
        .unwrap();
    assert_eq!(v, Verdict::Passed);
}

#[test]
fn totp_a_decoy_or_unenrolled_user_gets_the_same_prompt_and_fails() {
    let b = bench("totp");
    let gate = b.plugin.gate().unwrap();
    let c = ctx(&serde_json::json!({}), T0);
    let data = rfc_enrollment();
    let alice = user("alice");
    let real = gate.begin(&c, &alice, Some(&data)).unwrap().unwrap();
    // A code that is right for the enrolled key, and for the all-zero key.
    let step = T0 / 30_000;
    for (who, typed) in [
        (decoy("ghost"), code(&data[1..], step)),
        (user("bob"), code(&[0; 20], step)),
    ] {
        let round = gate.begin(&c, &who, None).unwrap().unwrap();
        assert_eq!(round, real);
        let v = gate
            .answer(&c, &who, None, &round.state, &values(&[("code", &typed)]))
            .unwrap()
            .unwrap();
        assert_eq!(v, Verdict::Failed("not enrolled".into()));
    }
}

// ---------------------------------------------------------------------------
// End to end: the real binary, the HTTP API, the data folder.
// ---------------------------------------------------------------------------

/// Every string in `v`, depth first.
fn strings(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::String(s) => out.push(s.clone()),
        serde_json::Value::Array(a) => a.iter().for_each(|x| strings(x, out)),
        serde_json::Value::Object(m) => m.values().for_each(|x| strings(x, out)),
        _ => {}
    }
}

/// Whether any file under `dir` holds `needle` (as bytes).
fn files_holding(dir: &Path, needle: &[u8]) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if let Ok(bytes) = std::fs::read(&path)
                && bytes.windows(needle.len()).any(|w| w == needle)
            {
                found.push(path.display().to_string());
            }
        }
    }
    found
}

struct Api {
    gw: resetgate_tests::Gateway,
    agent: ureq::Agent,
}

impl Api {
    fn post(&self, path: &str, token: Option<&str>, body: serde_json::Value) -> serde_json::Value {
        let mut req = ureq::http::Request::builder()
            .method("POST")
            .uri(format!("{}{path}", self.gw.base_url()))
            .header("Content-Type", "application/json");
        if let Some(t) = token {
            req = req.header("Authorization", format!("Bearer {t}"));
        }
        let mut resp = self
            .agent
            .run(req.body(body.to_string().into_bytes()).unwrap())
            .unwrap();
        let raw = resp.body_mut().read_to_string().unwrap();
        serde_json::from_str(&raw).unwrap_or(serde_json::Value::Null)
    }

    fn answers(
        &self,
        id: &str,
        token: &str,
        view: &serde_json::Value,
        answers: serde_json::Value,
    ) -> serde_json::Value {
        self.post(
            &format!("/v1/flows/{id}/answers"),
            Some(token),
            serde_json::json!({
                "gate": view["prompt"]["gate"],
                "round": view["prompt"]["round"],
                "answers": answers,
            }),
        )
    }
}

fn now_step() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        / 30
}

#[test]
fn enrolled_totp_key_and_answers_are_in_no_file_of_the_data_folder_nor_the_log() {
    const ANSWER: &str = "Canary Ferret 51c2";
    let dir = tempfile::tempdir().unwrap();
    let plugins = dir.path().join("plugins");
    let workflows = dir.path().join("workflows");
    std::fs::create_dir_all(&plugins).unwrap();
    std::fs::create_dir_all(&workflows).unwrap();
    for name in ["questions", "totp", "local-users", "example-lockout"] {
        std::fs::copy(wasm(name), plugins.join(format!("{name}.wasm"))).unwrap();
    }
    let common = r#"
limits: { idle: 5m, absolute: 15m }
directory:
  plugin: local-users
  grants: { kv: true }
  limits: { wall_time: 5s }
lockout:
  plugin: example-lockout
  config: { threshold: 5, lockout_ms: [900000], max_lockouts: 3 }
gates:
  - id: authenticator
    plugin: totp
    grants: { kv: true }
    limits: { wall_time: 5s }
    config: { issuer: Canary Corp }
  - id: questions
    plugin: questions
    grants: { kv: true }
    limits: { wall_time: 10s }
    config:
      questions: ["What was the name of your first pet?", "In which city were you born?"]
      shown_at_registration: 2
      required_at_registration: 2
      asked_at_reset: 2
      required_at_reset: 2
"#;
    std::fs::write(
        workflows.join("enroll.yaml"),
        format!("version: 1\nname: enroll\npurpose: enrollment\n{common}"),
    )
    .unwrap();
    std::fs::write(
        workflows.join("reset.yaml"),
        format!("version: 1\nname: reset\npurpose: reset\n{common}password: {{ min_length: 12, max_length: 64 }}\n"),
    )
    .unwrap();
    let config = resetgate_tests::write_config(dir.path(), "");
    resetgate_tests::fixtures::add_local_user(&config, "erin", "the current password");
    let gw = resetgate_tests::Gateway::start_config(&config, &[]);
    let api = Api {
        gw,
        agent: ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(std::time::Duration::from_secs(60)))
            .build()
            .new_agent(),
    };

    // Enrollment: the password, then the authenticator, then the questions.
    let started = api.post(
        "/v1/flows",
        None,
        serde_json::json!({"workflow": "enroll", "user": "erin"}),
    );
    let id = started["id"].as_str().unwrap().to_owned();
    let token = started["token"].as_str().unwrap().to_owned();
    let view = api.post(
        &format!("/v1/flows/{id}/authenticate"),
        Some(&token),
        serde_json::json!({"password": "the current password"}),
    );
    assert_eq!(view["state"], "enrolling", "{view}");
    assert_eq!(view["prompt"]["gate"], "authenticator", "{view}");
    let mut shown = Vec::new();
    strings(&view["prompt"]["display"], &mut shown);
    let uri = shown
        .iter()
        .find(|s| s.starts_with("otpauth://totp/"))
        .unwrap_or_else(|| panic!("no otpauth URI in the prompt's display: {view}"))
        .clone();
    let b32 = uri
        .split(['?', '&'])
        .find_map(|p| p.strip_prefix("secret="))
        .unwrap()
        .to_owned();
    assert!(shown.contains(&b32), "the key is shown as text too: {view}");
    let key = data_encoding::BASE32_NOPAD.decode(b32.as_bytes()).unwrap();
    let view = api.answers(
        &id,
        &token,
        &view,
        serde_json::json!({"code": code(&key, now_step())}),
    );
    assert_eq!(view["prompt"]["gate"], "questions", "{view}");
    let fields = view["prompt"]["fields"].as_array().unwrap().clone();
    let mut answers = serde_json::Map::new();
    for f in &fields {
        // Shown in a random order: answered by question.
        let value = if f["label"] == "What was the name of your first pet?" {
            ANSWER.to_owned()
        } else {
            format!("{ANSWER} the second")
        };
        answers.insert(f["name"].as_str().unwrap().to_owned(), value.into());
    }
    let view = api.answers(
        &id,
        &token,
        &view,
        serde_json::Value::Object(answers.clone()),
    );
    assert_eq!(view["state"], "completed", "{view}");

    // A reset through both gates, with the next time step's code (the one
    // used at enrollment is spent).
    let started = api.post(
        "/v1/flows",
        None,
        serde_json::json!({"workflow": "reset", "user": "erin"}),
    );
    let id = started["id"].as_str().unwrap().to_owned();
    let token = started["token"].as_str().unwrap().to_owned();
    assert_eq!(started["prompt"]["gate"], "authenticator", "{started}");
    let view = api.answers(
        &id,
        &token,
        &started,
        serde_json::json!({"code": code(&key, now_step() + 1)}),
    );
    assert_eq!(view["prompt"]["gate"], "questions", "{view}");
    let mut reset_answers = serde_json::Map::new();
    for f in view["prompt"]["fields"].as_array().unwrap() {
        let value = if f["label"] == "What was the name of your first pet?" {
            ANSWER.to_lowercase()
        } else {
            format!("{ANSWER} THE SECOND")
        };
        reset_answers.insert(f["name"].as_str().unwrap().to_owned(), value.into());
    }
    let view = api.answers(&id, &token, &view, serde_json::Value::Object(reset_answers));
    assert_eq!(view["state"], "awaiting-password", "{view}");

    let logs = api.gw.logs();
    let Api { gw, .. } = api;
    assert!(gw.stop(), "the gateway stops cleanly");
    let data = dir.path().join("data");
    for (what, needle) in [
        ("the TOTP key (base32)", b32.as_bytes().to_vec()),
        ("the TOTP key (raw)", key.clone()),
        ("the answer", ANSWER.as_bytes().to_vec()),
        (
            "the answer (normalised)",
            ANSWER.to_lowercase().into_bytes(),
        ),
    ] {
        let found = files_holding(&data, &needle);
        assert!(found.is_empty(), "{what} in clear in {found:?}");
        assert!(
            !logs
                .as_bytes()
                .windows(needle.len())
                .any(|w| w == needle.as_slice()),
            "{what} in the gateway's log"
        );
    }
}

#[test]
fn questions_and_totp_prompt_in_the_language_of_the_call() {
    let q = bench("questions");
    let t = bench("totp");
    let in_lang = |c: &CallContext, language: &str| CallContext {
        language: language.into(),
        ..c.clone()
    };
    let alice = user("alice");
    let qc = ctx(&questions_config(4, 3, 1, 3, 2, 2), T0);
    let tc = ctx(&serde_json::json!({"issuer": "ACME Corp"}), T0);
    let texts = |language: &str| {
        let qg = q.plugin.gate().unwrap();
        let tg = t.plugin.gate().unwrap();
        let registration = qg
            .enroll_prompt(&in_lang(&qc, language), &alice)
            .unwrap()
            .unwrap();
        let own = registration.prompt.fields.last().unwrap().label.clone();
        let setup = tg
            .enroll_prompt(&in_lang(&tc, language), &alice)
            .unwrap()
            .unwrap();
        let reset = tg
            .begin(&in_lang(&tc, language), &alice, None)
            .unwrap()
            .unwrap();
        vec![
            registration.prompt.title,
            own,
            setup.prompt.title,
            reset.prompt.title,
            reset.prompt.help.unwrap(),
        ]
    };
    assert_eq!(
        texts("de"),
        [
            "Wählen Sie Ihre Sicherheitsfragen",
            "Antwort auf Ihre eigene Frage 1",
            "Richten Sie Ihre Authenticator-App ein",
            "Geben Sie den Code aus Ihrer Authenticator-App ein",
            "Der 6-stellige Code, den Ihre Authenticator-App für ACME Corp anzeigt.",
        ]
    );
    let english = [
        "Choose your security questions",
        "Answer to your own question 1",
        "Set up your authenticator app",
        "Enter the code from your authenticator app",
        "The 6-digit code your authenticator app shows for ACME Corp.",
    ];
    assert_eq!(texts("en"), english);
    // Outside a flow's language (empty) and for a language the plugins do
    // not have: English.
    assert_eq!(texts(""), english);
    assert_eq!(texts("fr"), english);
}
