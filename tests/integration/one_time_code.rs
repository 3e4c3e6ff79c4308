//! The `one-time-code` gate, driven in process through the plugin host with
//! a fixed clock (every `now-ms` chosen by the test), its codes delivered
//! to a loopback sink; and one reset through the real binary's HTTP API.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::decoy::{Op, Recorder};
use resetgate::config::{GatewayConfig, HttpOrigin, SecretSource};
use resetgate::contract::{
    CallContext, FieldKind, FieldValue, PluginFailure, PluginKind, Round, User, Verdict,
};
use resetgate::plugin::{Capabilities, Grants, LoadSpec, Plugin, PluginHost};
use resetgate::secret::Secret;
use resetgate::store::SledStore;
use resetgate_tests::fixtures::users_add;
use resetgate_tests::hooked::Hooked;
use resetgate_tests::sink::{Recorded, Reply, Sink};
use resetgate_tests::{Gateway, assert_not_in_files, capture_logs, host, wasm, write_config};
use serde_json::{Value, json};

const T0: u64 = 1_763_856_000_000;
const MINUTE: u64 = 60_000;
/// The relay's API key: a canary that must reach the relay and nothing else.
const API_KEY: &str = "CANARY-sms-key-7f3e91";
/// The relay body the tests send: JSON with the three placeholders.
const BODY: &str = r#"{"to": "{{destination}}", "code": "{{code}}", "minutes": {{minutes}}}"#;

/// Writes a secret file the way the gateway accepts one (mode 0600).
pub fn write_secret(dir: &Path, name: &str, value: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, value).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

/// A plugin host with a store for `kv`, the `one-time-code` gate loaded
/// with a relay at the sink, and the sink.
struct Gate {
    sink: Sink,
    plugin: Plugin,
    config: String,
    _store: Arc<SledStore>,
    /// Every store op of the plugin's `kv` calls.
    ops: Arc<Hooked<Recorder>>,
    data: tempfile::TempDir,
    _host: PluginHost,
    _dir: tempfile::TempDir,
}

fn alice() -> User {
    User {
        id: "uid=alice,ou=people".into(),
        name: "alice".into(),
        attributes: vec![
            ("mail".into(), "alice@example.com".into()),
            ("mobile".into(), "+44 7700 900912".into()),
        ],
    }
}

fn decoy(name: &str) -> User {
    User {
        id: String::new(),
        name: name.into(),
        attributes: vec![],
    }
}

fn code(value: &str) -> Vec<FieldValue> {
    vec![FieldValue {
        name: "code".into(),
        value: Secret::from(value),
    }]
}

impl Gate {
    /// The gate with the tests' relay config, overridden by `extra`.
    fn new(extra: Value) -> Gate {
        let sink = Sink::http();
        sink.reply_with(Reply::status(202));
        let (host, dir) = host();
        let data = tempfile::tempdir().unwrap();
        let store = Arc::new(SledStore::open(data.path()).unwrap());
        let ops = Arc::new(Hooked {
            inner: store.clone(),
            hooks: Recorder::default(),
        });
        let key_file = write_secret(dir.path(), "sms-key", API_KEY);
        let config = GatewayConfig {
            http_origins: vec![HttpOrigin {
                origin: sink.origin(),
                plain_http: true,
                ca_file: None,
                max_concurrent: 4,
            }],
            secrets: [("sms-key".to_owned(), SecretSource::File(key_file))].into(),
            ..GatewayConfig::default()
        };
        let caps = Capabilities::from_config(&config, Some(ops.clone())).unwrap();
        host.set_capabilities(Arc::new(caps));
        let mut cfg = json!({
            "url": sink.url("/v1/send"),
            "body": BODY,
            "headers": {"Authorization": {"secret": "sms-key"}, "X-Client": "resetgate"},
            "destination_attribute": "mail",
            "decoy_domain": "example.com",
        });
        for (k, v) in extra.as_object().unwrap() {
            cfg[k] = v.clone();
        }
        let plugin = host
            .load(
                &wasm("one-time-code"),
                &LoadSpec {
                    kind: Some(PluginKind::Gate),
                    grants: Grants {
                        http: vec![sink.origin()],
                        secrets: vec!["sms-key".into()],
                        kv: true,
                        ..Grants::default()
                    },
                    ..LoadSpec::default()
                },
            )
            .unwrap();
        Gate {
            sink,
            plugin,
            config: cfg.to_string(),
            _store: store,
            ops,
            data,
            _host: host,
            _dir: dir,
        }
    }

    fn ctx(&self, flow: &str, now: u64) -> CallContext {
        CallContext {
            flow_id: flow.into(),
            workflow: "reset".into(),
            step: "gates[0]".into(),
            config: self.config.clone(),
            now_ms: now,
            language: String::new(),
        }
    }

    fn begin(&self, flow: &str, user: &User, now: u64) -> Result<Round, PluginFailure> {
        self.plugin
            .gate()
            .unwrap()
            .begin(&self.ctx(flow, now), user, None)
            .unwrap()
    }

    fn answer(&self, flow: &str, user: &User, round: &Round, typed: &str, now: u64) -> Verdict {
        self.plugin
            .gate()
            .unwrap()
            .answer(&self.ctx(flow, now), user, None, &round.state, &code(typed))
            .unwrap()
            .unwrap()
    }

    /// The code in the relay's last request.
    fn last_code(&self) -> String {
        let sent = self.sink.requests();
        let last = sent.last().expect("no code was sent");
        relay_body(last)["code"].as_str().unwrap().to_owned()
    }
}

/// The same store ops in the same order, of the same sizes.
fn assert_same_ops(real: &[Op], decoy: &[Op]) {
    let shapes = |ops: &[Op]| ops.iter().map(Op::shape).collect::<Vec<_>>();
    assert_eq!(shapes(real), shapes(decoy));
    assert!(!real.is_empty());
    for (a, b) in real.iter().zip(decoy) {
        assert_eq!(a.size(), b.size(), "{a:?} / {b:?}");
    }
}

fn relay_body(r: &Recorded) -> Value {
    serde_json::from_slice(&r.body).unwrap_or_else(|e| panic!("{e}: {}", r.body_text()))
}

fn failed(v: &Verdict) -> &str {
    match v {
        Verdict::Failed(reason) => reason,
        other => panic!("expected a failure, got {other:?}"),
    }
}

/// A code other than `code` with as many digits.
fn wrong(code: &str) -> String {
    code.chars()
        .map(|c| char::from(b'0' + (c as u8 - b'0' + 1) % 10))
        .collect()
}

#[test]
fn a_code_goes_to_the_relay_with_the_secret_and_passes_once() {
    let g = Gate::new(json!({}));
    let round = g.begin("f1", &alice(), T0).unwrap();
    let sent = g.sink.wait_for_requests(1);
    assert_eq!(sent.len(), 1);
    let r = &sent[0];
    assert_eq!((r.method.as_str(), r.path.as_str()), ("POST", "/v1/send"));
    assert_eq!(r.header("authorization"), Some(API_KEY));
    assert_eq!(r.header("x-client"), Some("resetgate"));
    assert_eq!(r.header("content-type"), Some("application/json"));
    let body = relay_body(r);
    assert_eq!(body["to"], "alice@example.com");
    assert_eq!(body["minutes"], 10);
    let c = g.last_code();
    assert_eq!(c.len(), 6);
    assert!(c.chars().all(|ch| ch.is_ascii_digit()), "{c}");

    // The prompt: the destination masked, how to get a new code.
    let p = &round.prompt;
    assert_eq!(p.title, "Enter the code we sent you");
    let help = p.help.as_deref().unwrap();
    assert!(help.contains("a•••@example.com"), "{help}");
    assert!(!help.contains("alice@"), "{help}");
    assert!(help.contains("Leave the field empty and submit"), "{help}");
    assert_eq!(p.fields.len(), 1);
    assert_eq!(p.fields[0].name, "code");
    assert_eq!(p.fields[0].kind, FieldKind::Code);
    // Only a hash in the state.
    assert!(
        !String::from_utf8_lossy(&round.state).contains(&c),
        "the code is in the round state"
    );

    assert_eq!(
        failed(&g.answer("f1", &alice(), &round, &wrong(&c), T0 + MINUTE)),
        "wrong code"
    );
    // Typed with a space, it passes.
    let spaced = format!("{} {}", &c[..3], &c[3..]);
    assert_eq!(
        g.answer("f1", &alice(), &round, &spaced, T0 + 2 * MINUTE),
        Verdict::Passed
    );
    // Single use: the same code, the same state, again.
    assert_eq!(
        failed(&g.answer("f1", &alice(), &round, &c, T0 + 3 * MINUTE)),
        "the code is no longer valid (used, or replaced by a newer one)"
    );
    // The state of one flow is no good in another.
    let round = g.begin("f2", &alice(), T0 + 4 * MINUTE).unwrap();
    let c = g.last_code();
    assert_eq!(
        failed(&g.answer("f3", &alice(), &round, &c, T0 + 5 * MINUTE)),
        "wrong code"
    );
}

#[test]
fn a_code_expires_after_its_ttl_on_the_flows_clock() {
    let g = Gate::new(json!({}));
    // Valid until the last millisecond of its 10 minutes...
    let round = g.begin("f1", &alice(), T0).unwrap();
    let c = g.last_code();
    assert_eq!(
        g.answer("f1", &alice(), &round, &c, T0 + 10 * MINUTE - 1),
        Verdict::Passed
    );
    // ...and not at 10 minutes.
    let round = g.begin("f2", &alice(), T0).unwrap();
    let c = g.last_code();
    assert_eq!(
        failed(&g.answer("f2", &alice(), &round, &c, T0 + 10 * MINUTE)),
        "the code expired"
    );
    // A shorter ttl, said in the message and the prompt.
    let g = Gate::new(json!({"ttl": "3m"}));
    let round = g.begin("f1", &alice(), T0).unwrap();
    assert_eq!(relay_body(&g.sink.requests()[0])["minutes"], 3);
    assert!(
        round
            .prompt
            .help
            .as_deref()
            .unwrap()
            .contains("valid for 3 minutes"),
        "{:?}",
        round.prompt.help
    );
    let c = g.last_code();
    assert_eq!(
        failed(&g.answer("f1", &alice(), &round, &c, T0 + 3 * MINUTE)),
        "the code expired"
    );
}

#[test]
fn a_code_allows_five_tries() {
    let g = Gate::new(json!({}));
    let round = g.begin("f1", &alice(), T0).unwrap();
    let c = g.last_code();
    for i in 0..5 {
        assert_eq!(
            failed(&g.answer("f1", &alice(), &round, &wrong(&c), T0 + i)),
            "wrong code",
            "try {i}"
        );
    }
    // The sixth try fails even with the right code.
    assert_eq!(
        failed(&g.answer("f1", &alice(), &round, &c, T0 + 6)),
        "too many tries for this code"
    );
    // Fewer tries configured: the fourth of three fails.
    let g = Gate::new(json!({"max_tries": 3}));
    let round = g.begin("f1", &alice(), T0).unwrap();
    let c = g.last_code();
    for _ in 0..2 {
        failed(&g.answer("f1", &alice(), &round, &wrong(&c), T0));
    }
    assert_eq!(g.answer("f1", &alice(), &round, &c, T0), Verdict::Passed);
    let round = g.begin("f2", &alice(), T0).unwrap();
    let c = g.last_code();
    for _ in 0..3 {
        failed(&g.answer("f2", &alice(), &round, &wrong(&c), T0));
    }
    assert_eq!(
        failed(&g.answer("f2", &alice(), &round, &c, T0)),
        "too many tries for this code"
    );
}

#[test]
fn an_empty_code_sends_a_new_one_and_voids_the_old() {
    let g = Gate::new(json!({}));
    let first = g.begin("f1", &alice(), T0).unwrap();
    let old = g.last_code();
    let Verdict::AnotherRound(second) = g.answer("f1", &alice(), &first, "", T0 + MINUTE) else {
        panic!("an empty code did not start another round")
    };
    assert_eq!(g.sink.requests().len(), 2);
    let new = g.last_code();
    assert_ne!(first.state, second.state);
    assert_eq!(second.prompt.fields, first.prompt.fields);
    // The old code, with its own state, is void.
    assert_eq!(
        failed(&g.answer("f1", &alice(), &first, &old, T0 + 2 * MINUTE)),
        "the code is no longer valid (used, or replaced by a newer one)"
    );
    // The new one's ten minutes run from its own sending.
    assert_eq!(
        g.answer("f1", &alice(), &second, &new, T0 + 11 * MINUTE - 1),
        Verdict::Passed
    );
    // A new flow's code voids an older flow's too (one code per user).
    let a = g.begin("f2", &alice(), T0 + 20 * MINUTE).unwrap();
    let a_code = g.last_code();
    let _b = g.begin("f3", &alice(), T0 + 21 * MINUTE).unwrap();
    assert_eq!(
        failed(&g.answer("f2", &alice(), &a, &a_code, T0 + 22 * MINUTE)),
        "the code is no longer valid (used, or replaced by a newer one)"
    );
}

#[test]
fn sends_per_user_per_hour_are_limited() {
    let g = Gate::new(json!({"max_sends_per_hour": 3}));
    let round = g.begin("f1", &alice(), T0).unwrap();
    let c1 = g.last_code();
    let Verdict::AnotherRound(round) = g.answer("f1", &alice(), &round, "", T0 + MINUTE) else {
        panic!()
    };
    let round2 = round.clone();
    let Verdict::AnotherRound(round) = g.answer("f1", &alice(), &round, "", T0 + 2 * MINUTE) else {
        panic!()
    };
    let c3 = g.last_code();
    assert_eq!(g.sink.requests().len(), 3);
    // A fourth within the hour: refused, nothing sent, the current code stays.
    let v = g.answer("f1", &alice(), &round, "", T0 + 3 * MINUTE);
    assert!(failed(&v).contains("3 codes in the last hour"), "{v:?}");
    assert_eq!(g.sink.requests().len(), 3);
    assert_eq!(
        failed(&g.answer("f1", &alice(), &round2, &c1, T0 + 4 * MINUTE)),
        "the code is no longer valid (used, or replaced by a newer one)"
    );
    // A new flow for the same user is refused too (the flow fails).
    match g.begin("f2", &alice(), T0 + 30 * MINUTE) {
        Err(PluginFailure::Refused(reason)) => {
            assert!(reason.contains("max_sends_per_hour"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(g.sink.requests().len(), 3);
    // Another user is not limited by alice's sends.
    let mut bob = alice();
    bob.id = "uid=bob,ou=people".into();
    bob.name = "bob".into();
    g.begin("f3", &bob, T0 + 30 * MINUTE).unwrap();
    assert_eq!(g.sink.requests().len(), 4);
    // The window slides: an hour after the first send, one more.
    assert!(g.begin("f4", &alice(), T0 + 60 * MINUTE - 1).is_err());
    let round = g.begin("f4", &alice(), T0 + 60 * MINUTE).unwrap();
    assert_eq!(g.sink.requests().len(), 5);
    assert!(g.begin("f5", &alice(), T0 + 61 * MINUTE - 1).is_err());
    let _ = (round, c3);
}

#[test]
fn digits_phones_and_form_bodies() {
    let g = Gate::new(json!({
        "digits": 8,
        "destination_attribute": "mobile",
        "destination_kind": "phone",
        "content_type": "application/x-www-form-urlencoded",
        "body": "to={{destination}}&text=Code+{{code}}+for+{{minutes}}+min",
        "api_key_secret": "sms-key",
        "api_key_header": "X-Api-Key",
    }));
    let round = g.begin("f1", &alice(), T0).unwrap();
    let r = &g.sink.wait_for_requests(1)[0];
    assert_eq!(r.header("x-api-key"), Some(API_KEY));
    let body = r.body_text();
    let (to, text) = body.split_once('&').unwrap();
    assert_eq!(to, "to=%2B44%207700%20900912");
    let c = text
        .strip_prefix("text=Code+")
        .and_then(|t| t.strip_suffix("+for+10+min"))
        .unwrap_or_else(|| panic!("{text}"));
    assert_eq!(c.len(), 8);
    let help = round.prompt.help.as_deref().unwrap();
    assert!(
        help.contains("We sent a 8-digit code to •••• ••12."),
        "{help}"
    );
    assert_eq!(g.answer("f1", &alice(), &round, c, T0), Verdict::Passed);
}

#[test]
fn a_relay_failure_fails_the_flow_for_the_admin() {
    let g = Gate::new(json!({}));
    g.sink
        .reply_with(Reply::status(500).with_body("quota exceeded"));
    match g.begin("f1", &alice(), T0) {
        Err(PluginFailure::Unavailable(reason)) => {
            assert_eq!(reason, "the code relay answered HTTP 500")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn decoys_get_the_same_prompt_the_same_kv_work_and_no_message() {
    let g = Gate::new(json!({"destination_attribute": "mobile", "destination_kind": "phone"}));
    // A first call makes the decoy key: not part of either.
    g.begin("f0", &decoy("warm-up"), T0).unwrap();
    g.ops.hooks.take();
    let real = g.begin("f1", &alice(), T0).unwrap();
    assert_eq!(g.sink.requests().len(), 1);
    let real_ops = g.ops.hooks.take();
    let fake = g.begin("f2", &decoy("mallory"), T0).unwrap();
    assert_eq!(g.sink.requests().len(), 1, "a decoy was sent a message");
    let fake_ops = g.ops.hooks.take();
    assert_same_ops(&real_ops, &fake_ops);
    // And the answers: a wrong code each.
    failed(&g.answer("f1", &alice(), &real, "000000", T0 + 1));
    let real_ops = g.ops.hooks.take();
    failed(&g.answer("f2", &decoy("mallory"), &fake, "000000", T0 + 1));
    assert_same_ops(&real_ops, &g.ops.hooks.take());
    // Same shape: only the masked digits differ.
    let shape = |r: &Round| {
        let mut p = r.prompt.clone();
        p.help = p
            .help
            .map(|h| h.chars().filter(|c| !c.is_ascii_digit()).collect());
        p
    };
    assert_eq!(shape(&real), shape(&fake));
    assert_eq!(real.state.len(), fake.state.len());
    // The same name shows the same digits every time; answers fail alike.
    let again = g.begin("f3", &decoy("mallory"), T0 + 1).unwrap();
    assert_eq!(again.prompt.help, fake.prompt.help);
    assert_eq!(
        failed(&g.answer("f3", &decoy("mallory"), &again, "123456", T0 + 2)),
        "wrong code"
    );
    // A decoy's empty code is another round, as for a real user.
    assert!(matches!(
        g.answer("f3", &decoy("mallory"), &again, "", T0 + 3),
        Verdict::AnotherRound(_)
    ));
    assert_eq!(g.sink.requests().len(), 1);

    // E-mail: the typed name's first letter and the decoy domain.
    let g = Gate::new(json!({}));
    let fake = g.begin("f1", &decoy("Zed"), T0).unwrap();
    assert!(
        fake.prompt
            .help
            .as_deref()
            .unwrap()
            .contains(" z•••@example.com."),
        "{:?}",
        fake.prompt.help
    );
    assert!(g.sink.requests().is_empty());
}

#[test]
fn the_code_is_in_no_log_line_and_no_file() {
    let g = Gate::new(json!({"digits": 8}));
    let (logs, code) = capture_logs(|| {
        let round = g.begin("f1", &alice(), T0).unwrap();
        let c = g.last_code();
        failed(&g.answer("f1", &alice(), &round, &wrong(&c), T0 + 1));
        let Verdict::AnotherRound(round) = g.answer("f1", &alice(), &round, "", T0 + 2) else {
            panic!()
        };
        let c2 = g.last_code();
        assert_eq!(
            g.answer("f1", &alice(), &round, &c2, T0 + 3),
            Verdict::Passed
        );
        // A relay that fails, the code in its answer.
        g.sink
            .reply_with(Reply::status(400).with_body(format!("bad code {c2}")));
        let _ = g.begin("f2", &alice(), T0 + 4);
        (c, c2)
    });
    let (c1, c2) = code;
    for canary in [c1.as_str(), c2.as_str(), API_KEY] {
        assert!(!logs.contains(canary), "{canary} logged:\n{logs}");
    }
    // `kv.set` is durable when it returns: everything is on disk.
    for canary in [c1.as_str(), c2.as_str(), API_KEY] {
        assert_not_in_files(g.data.path(), canary);
    }
}

/// POSTs JSON to the gateway; (status, JSON body).
fn post(agent: &ureq::Agent, url: &str, token: Option<&str>, body: Value) -> (u16, Value) {
    let mut req = ureq::http::Request::builder()
        .method("POST")
        .uri(url)
        .header("Content-Type", "application/json");
    if let Some(t) = token {
        req = req.header("Authorization", format!("Bearer {t}"));
    }
    let mut resp = agent
        .run(req.body(body.to_string().into_bytes()).unwrap())
        .unwrap();
    let status = resp.status().as_u16();
    let raw = resp.body_mut().read_to_string().unwrap();
    (status, serde_json::from_str(&raw).unwrap_or(Value::Null))
}

#[test]
fn a_reset_through_the_api_with_a_code_read_from_the_relay() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::http();
    sink.reply_with(Reply::status(202));
    let key_file = write_secret(dir.path(), "sms-key", API_KEY);
    let config = write_config(
        dir.path(),
        &format!(
            "http_origins:\n  - {{ origin: \"{}\", plain_http: true }}\n\
             secrets:\n  sms-key: {{ file: {:?} }}\n",
            sink.origin(),
            key_file
        ),
    );
    for name in ["local-users", "one-time-code", "example-lockout"] {
        std::fs::copy(
            wasm(name),
            dir.path().join("plugins").join(format!("{name}.wasm")),
        )
        .unwrap();
    }
    std::fs::write(
        dir.path().join("workflows/reset.yaml"),
        format!(
            r#"version: 1
name: reset
purpose: reset
limits: {{ idle: 5m, absolute: 15m }}
directory:
  plugin: local-users
  grants: {{ kv: true }}
  limits: {{ wall_time: 5s }}
lockout:
  plugin: example-lockout
  config: {{ threshold: 5, lockout_ms: [900000], max_lockouts: 3 }}
gates:
  - id: code
    plugin: one-time-code
    enrollment: none
    grants: {{ http: ["{origin}"], secrets: [sms-key], kv: true }}
    limits: {{ wall_time: 5s }}
    config:
      url: "{origin}/send"
      headers: {{ Authorization: {{ secret: sms-key }} }}
      body: '{body}'
      destination_attribute: mail
      decoy_domain: example.com
      digits: 8
password: {{ min_length: 12, max_length: 64 }}
"#,
            origin = sink.origin(),
            body = BODY,
        ),
    )
    .unwrap();
    let old = "CANARY-old-51c2-quill";
    let new = "CANARY-new-0d7e-harbour-lamp";
    users_add(
        "alice",
        old,
        &[
            "--config".as_ref(),
            config.as_os_str(),
            "--attr".as_ref(),
            "mail=alice@example.com".as_ref(),
        ],
    );

    let gw = Gateway::start_config(&config, &[]);
    let agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(std::time::Duration::from_secs(30)))
        .build()
        .new_agent();
    let url = |path: &str| format!("{}{path}", gw.base_url());
    let (status, view) = post(
        &agent,
        &url("/v1/flows"),
        None,
        json!({"workflow": "reset", "user": "alice"}),
    );
    assert_eq!(status, 201, "{view}");
    assert!(
        view["prompt"]["help"]
            .as_str()
            .unwrap()
            .contains("a•••@example.com"),
        "{view}"
    );
    let id = view["id"].as_str().unwrap().to_owned();
    let token = view["token"].as_str().unwrap().to_owned();
    let sent = sink.wait_for_requests(1);
    assert_eq!(sent[0].header("authorization"), Some(API_KEY));
    let code = relay_body(&sent[0])["code"].as_str().unwrap().to_owned();
    let answer = |view: &Value, value: &str| {
        post(
            &agent,
            &url(&format!("/v1/flows/{id}/answers")),
            Some(&token),
            json!({
                "gate": view["prompt"]["gate"],
                "round": view["prompt"]["round"],
                "answers": { "code": value },
            }),
        )
    };
    let (status, view) = answer(&view, &wrong(&code));
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["notice"]["code"], "not-verified", "{view}");
    let (status, view) = answer(&view, &code);
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["state"], "awaiting-password", "{view}");
    let (status, view) = post(
        &agent,
        &url(&format!("/v1/flows/{id}/password")),
        Some(&token),
        json!({"password": new}),
    );
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["state"], "completed", "{view}");

    // An unknown name: the same prompt, nothing sent.
    let (status, view) = post(
        &agent,
        &url("/v1/flows"),
        None,
        json!({"workflow": "reset", "user": "nobody"}),
    );
    assert_eq!(status, 201, "{view}");
    assert!(
        view["prompt"]["help"]
            .as_str()
            .unwrap()
            .contains("n•••@example.com"),
        "{view}"
    );
    assert_eq!(sink.requests().len(), 1);

    let logs = gw.logs();
    assert!(gw.stop());
    for canary in [code.as_str(), API_KEY, new, old] {
        assert!(!logs.contains(canary), "`{canary}` logged:\n{logs}");
        assert_not_in_files(&dir.path().join("data"), canary);
    }
}

#[test]
fn the_prompt_and_the_relay_body_follow_the_language_of_the_call() {
    let g = Gate::new(json!({
        "body": r#"{"to": "{{destination}}", "code": "{{code}}", "lang": "{{language}}"}"#,
        "max_tries": 1,
        "ttl": "1m",
    }));
    let begin = |language: &str, flow: &str| {
        let ctx = CallContext {
            language: language.into(),
            ..g.ctx(flow, T0)
        };
        g.plugin
            .gate()
            .unwrap()
            .begin(&ctx, &alice(), None)
            .unwrap()
            .unwrap()
    };
    let round = begin("de", "f1");
    assert_eq!(
        round.prompt.title,
        "Geben Sie den Code ein, den wir Ihnen gesendet haben"
    );
    assert_eq!(
        round.prompt.help.as_deref(),
        Some(
            "Wir haben einen 6-stelligen Code an a•••@example.com gesendet. Er gilt 1 Minute, \
             für 1 Versuch, und nur einmal. Kein Code, oder zu oft ein falscher? Lassen Sie das \
             Feld leer und senden Sie es ab, um einen neuen Code zu erhalten; der vorige gilt \
             dann nicht mehr."
        )
    );
    // The relay is told the language, so the message can be in it.
    assert_eq!(
        relay_body(g.sink.wait_for_requests(1).last().unwrap())["lang"],
        "de"
    );
    let round = begin("", "f2");
    assert_eq!(round.prompt.title, "Enter the code we sent you");
    assert_eq!(
        relay_body(g.sink.wait_for_requests(2).last().unwrap())["lang"],
        "en"
    );
}
