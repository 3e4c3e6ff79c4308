//! The load client: complete password resets against the real `resetgate`
//! binary over loopback, with the store flushing for real, and the
//! hello-world route of the same server (`GET /healthz`) measured in the same
//! run as the baseline.
//!
//! `cargo xtask loadtest` builds the release binary and runs this; by hand:
//! `RESETGATE_BINARY=target/release/resetgate cargo run --release -p
//! resetgate-tests --bin load -- [--flows 64] [--seconds 10] [--tls]
//! [--flood] [--enumeration | --enumeration-only] [--samples 5000]
//! [--directories | --directories-only] [--rounds 3] [--users 3200]
//! [--stores [--gateways 3] [--pool 8]] [--export | --export-only]
//! [--records 200000]`.
//!
//! `--directories` adds the directories phase (issue 12): complete resets
//! with the `ldap-directory` directory (an OpenLDAP slapd the client starts
//! with `--users` people, over LDAPS) and a `one-time-code` gate whose codes
//! go to a loopback relay in this process ([`CodeRelay`]: the client reads
//! its user's code there), alternating `--rounds` times with the
//! `local-users` directory and the `attribute-gate` gate (the same number
//! of users, in the gateway's store), same server, same client. Each flow
//! cycles through its own share of the users (the one-time-code gate sends
//! at most 100 codes per user per hour). Reports resets/s, step latencies
//! and the CPU per reset of the gateway, of slapd and of this client.
//! `--directories-only` runs that phase alone.
//!
//! `--stores` runs the stores phase alone (issue 13, [`stores`]): the reset
//! phase against a gateway on the sled store and against one, two and
//! three gateways (`--gateways 3`, each with a pool of `--pool 8`) on one
//! PostgreSQL cluster the client starts, `--rounds` times in turn, with
//! database transactions and statements per request.
//!
//! `--export` adds the export phase (issue 14, [`export`]): the log filled
//! with resets to at least `--records` records, then `--rounds` pairs of
//! the reset phase without and with an operator (role `auditor`) exporting
//! the whole audit log in a loop beside it: resets/s, step latency p50 and
//! p99, the export's records/s and time per complete export, the gateway's
//! CPU per reset, medians and the with/without ratio. `--export-only` runs
//! that phase alone.
//!
//! `--enumeration` adds the enumeration phase: start latency for a known,
//! an unknown and a locked-out user, and the latency of a wrong *first
//! answer* for known users against unknown names (and unknown against
//! unknown, the control), `--samples` of each, every name used once, with
//! Welch's t over all samples and with the slowest 5% of each dropped.
//! `--enumeration-only` runs that phase alone.
//!
//! Each of `--flows` clients holds one keep-alive connection and runs resets
//! back to back: start, answer gate 1, answer gate 2 (the `static-answer`
//! test gate: a one-time-code-style check, no slow hashing), set the
//! password. Prints a Markdown table for BENCHMARKS.md.
//!
//! Over plain HTTP the hello-world and reset phases use a lean client: the
//! flows are tasks on one thread, each with its own connection, writing
//! requests and reading `Content-Length` responses by hand — about the cost
//! of `wrk`, so that the client, which shares the machine, takes as little
//! of it as it can. Over HTTPS (`--tls`), and in the flood and enumeration
//! phases, each flow is a thread with a `ureq` agent.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

#[path = "load_export.rs"]
mod export;
#[path = "load_stores.rs"]
mod stores;

use std::time::{Duration, Instant};

use resetgate_tests::pki::Pki;
use resetgate_tests::relay::CodeRelay;
use resetgate_tests::slapd::Slapd;
use resetgate_tests::{Gateway, write_config};
use serde_json::{Value, json};

const KEY: &str = "rgk_load-client";
/// The export phase's operator (role `auditor`).
const AUDITOR_KEY: &str = "rgk_load-auditor";
const STEPS: [&str; 4] = ["start", "answer 1", "answer 2", "password"];

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Client {
    agent: ureq::Agent,
    base: String,
}

impl Client {
    fn call(&self, method: &str, path: &str, token: Option<&str>, body: Option<&Value>) -> Value {
        let mut req = ureq::http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header("X-Api-Key", KEY);
        if let Some(t) = token {
            req = req.header("Authorization", format!("Bearer {t}"));
        }
        let mut resp = match body {
            Some(b) => self.agent.run(
                req.header("Content-Type", "application/json")
                    .body(b.to_string())
                    .unwrap(),
            ),
            None => self.agent.run(req.body(()).unwrap()),
        }
        .unwrap();
        assert!(
            resp.status().is_success(),
            "{method} {path}: {}",
            resp.status()
        );
        let text = resp.body_mut().read_to_string().unwrap();
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }
}

/// The lean client: one keep-alive HTTP/1.1 connection, driven by hand.
struct Lean {
    stream: tokio::net::TcpStream,
    host: String,
    buf: Vec<u8>,
}

/// The parts of a flow view the resets need.
#[derive(serde::Deserialize)]
struct View {
    id: Option<String>,
    token: Option<String>,
    state: Option<String>,
    prompt: Option<ViewPrompt>,
}

#[derive(serde::Deserialize)]
struct ViewPrompt {
    gate: String,
}

impl Lean {
    async fn connect(addr: &str) -> Lean {
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream.set_nodelay(true).unwrap();
        Lean {
            stream,
            host: addr.to_owned(),
            buf: Vec::with_capacity(8192),
        }
    }

    /// One request; the response's body (the status must be a success).
    async fn call(
        &mut self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: &[u8],
    ) -> Vec<u8> {
        use std::fmt::Write as _;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nX-Api-Key: {KEY}\r\n",
            self.host
        );
        if let Some(t) = token {
            let _ = write!(head, "Authorization: Bearer {t}\r\n");
        }
        if !body.is_empty() {
            let _ = write!(
                head,
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                body.len()
            );
        }
        head.push_str("\r\n");
        let mut request = head.into_bytes();
        request.extend_from_slice(body);
        self.stream.write_all(&request).await.unwrap();
        loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = std::str::from_utf8(&self.buf[..end]).unwrap().to_owned();
                let status = head.get(9..12).unwrap_or("");
                assert!(status.starts_with('2'), "{method} {path}: {head}");
                let mut length = None;
                for line in head.lines().skip(1) {
                    let (name, value) = line.split_once(':').unwrap();
                    if name.eq_ignore_ascii_case("content-length") {
                        length = value.trim().parse::<usize>().ok();
                    }
                    assert!(
                        !name.eq_ignore_ascii_case("transfer-encoding"),
                        "the lean client reads Content-Length bodies only: {head}"
                    );
                }
                let total = end + 4 + length.expect("a Content-Length");
                while self.buf.len() < total {
                    assert!(
                        self.stream.read_buf(&mut self.buf).await.unwrap() > 0,
                        "closed"
                    );
                }
                let body = self.buf[end + 4..total].to_vec();
                self.buf.drain(..total);
                return body;
            }
            assert!(
                self.stream.read_buf(&mut self.buf).await.unwrap() > 0,
                "closed"
            );
        }
    }
}

/// [`run_resets`] with the lean client.
async fn lean_resets(addr: String, user: String, deadline: Instant) -> (u64, [Vec<u32>; 4]) {
    let mut c = Lean::connect(&addr).await;
    let mut lat: [Vec<u32>; 4] = Default::default();
    let mut done = 0u64;
    let start = format!(r#"{{"workflow":"load","user":"{user}"}}"#).into_bytes();
    while Instant::now() < deadline {
        let t = Instant::now();
        let v: View =
            serde_json::from_slice(&c.call("POST", "/v1/flows", None, &start).await).unwrap();
        lat[0].push(t.elapsed().as_micros() as u32);
        let (id, token) = (v.id.unwrap(), v.token.unwrap());
        let path = format!("/v1/flows/{id}/answers");
        let t = Instant::now();
        let v: View = serde_json::from_slice(
            &c.call(
                "POST",
                &path,
                Some(&token),
                br#"{"gate":"code","round":1,"answers":{"answer":"123456"}}"#,
            )
            .await,
        )
        .unwrap();
        lat[1].push(t.elapsed().as_micros() as u32);
        assert_eq!(v.prompt.map(|p| p.gate).as_deref(), Some("second"));
        let t = Instant::now();
        c.call(
            "POST",
            &path,
            Some(&token),
            br#"{"gate":"second","round":1,"answers":{"answer":"654321"}}"#,
        )
        .await;
        lat[2].push(t.elapsed().as_micros() as u32);
        let t = Instant::now();
        let v: View = serde_json::from_slice(
            &c.call(
                "POST",
                &format!("/v1/flows/{id}/password"),
                Some(&token),
                br#"{"password":"purple monkey dishwasher"}"#,
            )
            .await,
        )
        .unwrap();
        lat[3].push(t.elapsed().as_micros() as u32);
        assert_eq!(v.state.as_deref(), Some("completed"));
        done += 1;
    }
    (done, lat)
}

/// Runs the lean client's `flows` tasks on one thread until they are done.
fn lean_run<T: 'static>(
    tasks: Vec<std::pin::Pin<Box<dyn std::future::Future<Output = T>>>>,
) -> Vec<T> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async move {
        let handles: Vec<_> = tasks.into_iter().map(tokio::task::spawn_local).collect();
        let mut out = Vec::with_capacity(handles.len());
        for h in handles {
            out.push(h.await.unwrap());
        }
        out
    })
}

/// Runs `f(i)` for each of `n` flows on a thread of its own; the results in
/// flow order.
fn on_threads<T: Send>(n: usize, f: impl Fn(usize) -> T + Sync) -> Vec<T> {
    std::thread::scope(|s| {
        let f = &f;
        let handles: Vec<_> = (0..n).map(|i| s.spawn(move || f(i))).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

/// Runs complete resets for `user` until `deadline`; returns how many and
/// each step's latencies (µs).
fn run_resets(c: &Client, user: &str, deadline: Instant) -> (u64, [Vec<u32>; 4]) {
    let mut lat: [Vec<u32>; 4] = Default::default();
    let mut done = 0u64;
    let timed = |lat: &mut Vec<u32>, f: &mut dyn FnMut() -> Value| {
        let t = Instant::now();
        let v = f();
        lat.push(t.elapsed().as_micros() as u32);
        v
    };
    while Instant::now() < deadline {
        let v = timed(&mut lat[0], &mut || {
            c.call(
                "POST",
                "/v1/flows",
                None,
                Some(&json!({"workflow": "load", "user": user})),
            )
        });
        let id = v["id"].as_str().unwrap().to_owned();
        let token = v["token"].as_str().unwrap().to_owned();
        let path = format!("/v1/flows/{id}/answers");
        let v = timed(&mut lat[1], &mut || {
            c.call(
                "POST",
                &path,
                Some(&token),
                Some(&json!({"gate": "code", "round": 1, "answers": {"answer": "123456"}})),
            )
        });
        assert_eq!(v["prompt"]["gate"], "second", "{v}");
        timed(&mut lat[2], &mut || {
            c.call(
                "POST",
                &path,
                Some(&token),
                Some(&json!({"gate": "second", "round": 1, "answers": {"answer": "654321"}})),
            )
        });
        let v = timed(&mut lat[3], &mut || {
            c.call(
                "POST",
                &format!("/v1/flows/{id}/password"),
                Some(&token),
                Some(&json!({"password": "purple monkey dishwasher"})),
            )
        });
        assert_eq!(v["state"], "completed", "{v}");
        done += 1;
    }
    (done, lat)
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    f64::from(sorted[i]) / 1000.0
}

/// Welch's t statistic of two samples (µs).
fn welch_t(a: &[u32], b: &[u32]) -> f64 {
    let stats = |x: &[u32]| {
        let n = x.len() as f64;
        let mean = x.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
        let var = x
            .iter()
            .map(|&v| (f64::from(v) - mean).powi(2))
            .sum::<f64>()
            / (n - 1.0);
        (n, mean, var)
    };
    let ((na, ma, va), (nb, mb, vb)) = (stats(a), stats(b));
    (ma - mb) / (va / na + vb / nb).sqrt()
}

/// `x` sorted, without its slowest `share`.
fn trimmed(x: &[u32], share: f64) -> Vec<u32> {
    let mut x = x.to_vec();
    x.sort_unstable();
    x.truncate(((x.len() as f64) * (1.0 - share)).round() as usize);
    x
}

fn mean(x: &[u32]) -> f64 {
    x.iter().map(|&v| f64::from(v)).sum::<f64>() / x.len().max(1) as f64
}

/// Starts a flow of the `enum` workflow for `name`; the wrong first
/// answer's latency (µs) and the start's.
fn first_answer(c: &Client, name: &str) -> (u32, u32) {
    let t = Instant::now();
    let v = c.call(
        "POST",
        "/v1/flows",
        None,
        Some(&json!({"workflow": "enum", "user": name})),
    );
    let start = t.elapsed().as_micros() as u32;
    let path = format!("/v1/flows/{}/answers", v["id"].as_str().unwrap());
    let t = Instant::now();
    let v = c.call(
        "POST",
        &path,
        v["token"].as_str(),
        Some(&json!({"gate": "code", "round": 1, "answers": {"answer": "000000"}})),
    );
    let answer = t.elapsed().as_micros() as u32;
    assert_eq!(v["notice"]["code"], "not-verified", "{v}");
    (answer, start)
}

/// The enumeration phase's first answers: `samples` known users (each
/// once) against as many unknown names, and a second set of unknown names
/// as the control, interleaved so that drift affects all three alike.
fn first_answers(c: &Client, samples: usize) {
    // Warm up: the first requests pay for lazily built things.
    for i in 0..50 {
        first_answer(c, &format!("warm{i}"));
    }
    let mut answers: [Vec<u32>; 3] = Default::default();
    let mut starts: [Vec<u32>; 3] = Default::default();
    // A fixed-seed xorshift: each round's order is shuffled, so that no set
    // of names is more often first, or more often after another set (a
    // request can pay for what the one before it left behind).
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for i in 0..samples {
        let names = [
            format!("known{i}"),
            format!("unknown-a{i}"),
            format!("unknown-b{i}"),
        ];
        let mut order = [0, 1, 2];
        for k in (1..3).rev() {
            order.swap(k, (next() % (k as u64 + 1)) as usize);
        }
        for j in order {
            let (a, s) = first_answer(c, &names[j]);
            answers[j].push(a);
            starts[j].push(s);
        }
    }
    let row = |what: &str, lat: &[Vec<u32>; 3]| {
        let median = |x: &[u32]| percentile(&trimmed(x, 0.0), 0.5);
        let (k, u, v) = (&lat[0], &lat[1], &lat[2]);
        let (kt, ut, vt) = (trimmed(k, 0.05), trimmed(u, 0.05), trimmed(v, 0.05));
        println!(
            "| {what}, {samples} each: known / unknown / unknown (control) | p50 {:.3} / {:.3} / {:.3} ms; mean {:.1} / {:.1} / {:.1} µs |",
            median(k),
            median(u),
            median(v),
            mean(k),
            mean(u),
            mean(v)
        );
        println!(
            "| {what}: Welch \\|t\\| known vs unknown / control (unknown vs unknown) | all samples {:.2} / {:.2}; slowest 5% dropped {:.2} / {:.2} |",
            welch_t(k, u).abs(),
            welch_t(u, v).abs(),
            welch_t(&kt, &ut).abs(),
            welch_t(&ut, &vt).abs()
        );
    };
    row("wrong first answer", &answers);
    row("`POST /v1/flows`", &starts);
}

/// Start latency for a known, an unknown and a locked-out user.
fn starts(c: &Client, known: &str, locked: &str) {
    for _ in 0..3 {
        let v = c.call(
            "POST",
            "/v1/flows",
            None,
            Some(&json!({"workflow": "load", "user": locked})),
        );
        let id = v["id"].as_str().unwrap();
        c.call(
            "POST",
            &format!("/v1/flows/{id}/answers"),
            v["token"].as_str(),
            Some(&json!({"gate": "code", "round": 1, "answers": {"answer": "000000"}})),
        );
    }
    let names = [known, "nobody-by-this-name", locked];
    let mut lat: [Vec<u32>; 3] = Default::default();
    for _ in 0..1000 {
        for (i, name) in names.iter().enumerate() {
            let t = Instant::now();
            c.call(
                "POST",
                "/v1/flows",
                None,
                Some(&json!({"workflow": "load", "user": name})),
            );
            lat[i].push(t.elapsed().as_micros() as u32);
        }
    }
    let mut row = vec![];
    for (label, l) in ["known", "unknown", "locked out"]
        .iter()
        .zip(lat.iter_mut())
    {
        l.sort_unstable();
        row.push(format!("{label} p50 {:.3} ms", percentile(l, 0.5)));
    }
    println!(
        "| `POST /v1/flows` latency, 1000 each, one client | {} |",
        row.join(", ")
    );
}

/// The two workflows of the directories phase.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Directory {
    /// `local-users` and `attribute-gate` (the answer: the user's mail).
    Local,
    /// `ldap-directory` and `one-time-code` (the code: from the relay).
    Ldap,
}

impl Directory {
    fn workflow(self) -> &'static str {
        match self {
            Directory::Local => "local",
            Directory::Ldap => "ldap",
        }
    }
}

/// The directories phase's workflows and gateway config lines.
fn directories_setup(dir: &std::path::Path, slapd: &Slapd, relay: &CodeRelay) -> String {
    let common = "purpose: reset\nlimits: { idle: 5m, absolute: 15m }\n\
                  lockout:\n  plugin: example-lockout\n  config: { threshold: 3, lockout_ms: [900000], max_lockouts: 3 }\n\
                  password: { min_length: 12, max_length: 64 }\n";
    std::fs::write(
        dir.join("workflows/local.yaml"),
        format!(
            "version: 1\nname: local\n{common}\
             directory:\n  plugin: local-users\n  grants: {{ kv: true }}\n  limits: {{ wall_time: 5s }}\n\
             gates:\n  - id: mail\n    plugin: attribute-gate\n    config: {{ attribute: mail, label: Your e-mail address }}\n"
        ),
    )
    .unwrap();
    let origin = relay.origin();
    std::fs::write(
        dir.join("workflows/ldap.yaml"),
        format!(
            "version: 1\nname: ldap\n{common}\
             directory:\n  plugin: ldap-directory\n  grants: {{ ldap: [corp] }}\n  limits: {{ wall_time: 5s }}\n  \
             config: {{ connection: corp, base: \"ou=people,dc=example,dc=test\", user_attributes: [uid] }}\n\
             gates:\n  - id: code\n    plugin: one-time-code\n    enrollment: none\n    \
             grants: {{ http: [\"{origin}\"], secrets: [sms-key], kv: true }}\n    limits: {{ wall_time: 5s }}\n    \
             config:\n      url: \"{origin}/send\"\n      headers: {{ Authorization: {{ secret: sms-key }} }}\n      \
             body: '{}'\n      destination_attribute: mail\n      decoy_domain: example.test\n      max_sends_per_hour: 100\n",
            CodeRelay::BODY
        ),
    )
    .unwrap();
    let secret = |name: &str, value: &str| {
        use std::os::unix::fs::PermissionsExt as _;
        let path = dir.join(name);
        std::fs::write(&path, value).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        path
    };
    format!(
        "secrets:\n  ldap-bind: {{ file: {:?} }}\n  sms-key: {{ file: {:?} }}\n\
         ldap:\n  corp: {{ url: \"{}\", bind_dn: \"{}\", bind_secret: ldap-bind, ca_file: {:?} }}\n\
         http_origins:\n  - {{ origin: \"{origin}\", plain_http: true }}\n",
        secret("ldap-bind.secret", Slapd::BIND_PASSWORD),
        secret("sms-key.secret", "load-relay-key"),
        slapd.ldaps_url(),
        Slapd::BIND_DN,
        slapd.ca_file(),
    )
}

/// Adds `load0` … `load{n-1}` (mail `loadI@example.test`, no password: a
/// reset sets one) to the `local-users` namespace of the store in `data`.
fn add_local_users(data: &std::path::Path, n: usize) {
    use resetgate::users::{NewUser, Users, open_store};
    let store = std::sync::Arc::new(open_store(data).unwrap());
    let users = Users::new(store, "local-users").unwrap();
    for i in 0..n {
        users
            .add(
                NewUser {
                    name: format!("load{i}"),
                    attributes: [("mail".to_owned(), format!("load{i}@example.test"))].into(),
                    ..NewUser::default()
                },
                false,
            )
            .unwrap();
    }
}

/// One flow of the directories phase: complete resets of `which` until
/// `deadline`, cycling through `users`; (resets, the three steps' latencies).
async fn directory_resets(
    addr: String,
    which: Directory,
    users: Vec<String>,
    relay: std::sync::Arc<CodeRelay>,
    deadline: Instant,
) -> (u64, [Vec<u32>; 3]) {
    let mut c = Lean::connect(&addr).await;
    let mut lat: [Vec<u32>; 3] = Default::default();
    let mut done = 0u64;
    let workflow = which.workflow();
    while Instant::now() < deadline {
        let user = &users[done as usize % users.len()];
        let mail = format!("{user}@example.test");
        let t = Instant::now();
        let start = format!(r#"{{"workflow":"{workflow}","user":"{user}"}}"#);
        let v: View =
            serde_json::from_slice(&c.call("POST", "/v1/flows", None, start.as_bytes()).await)
                .unwrap();
        lat[0].push(t.elapsed().as_micros() as u32);
        let (id, token) = (v.id.unwrap(), v.token.unwrap());
        let answer = match which {
            Directory::Local => {
                format!(r#"{{"gate":"mail","round":1,"answers":{{"value":"{mail}"}}}}"#)
            }
            Directory::Ldap => {
                // Sent before the start was answered.
                let code = relay
                    .take_code(&mail)
                    .unwrap_or_else(|| panic!("no code was sent to {mail}"));
                format!(r#"{{"gate":"code","round":1,"answers":{{"code":"{code}"}}}}"#)
            }
        };
        let t = Instant::now();
        let v: View = serde_json::from_slice(
            &c.call(
                "POST",
                &format!("/v1/flows/{id}/answers"),
                Some(&token),
                answer.as_bytes(),
            )
            .await,
        )
        .unwrap();
        lat[1].push(t.elapsed().as_micros() as u32);
        assert_eq!(v.state.as_deref(), Some("awaiting-password"), "{workflow}");
        let t = Instant::now();
        let password = format!(r#"{{"password":"reset-{done}-harbour-lantern"}}"#);
        let v: View = serde_json::from_slice(
            &c.call(
                "POST",
                &format!("/v1/flows/{id}/password"),
                Some(&token),
                password.as_bytes(),
            )
            .await,
        )
        .unwrap();
        lat[2].push(t.elapsed().as_micros() as u32);
        assert_eq!(v.state.as_deref(), Some("completed"), "{workflow}");
        done += 1;
    }
    (done, lat)
}

/// What one run of the directories phase measured.
struct DirectoryRun {
    which: Directory,
    resets_per_s: f64,
    /// p50, p99 of each step and of every step (ms).
    steps: [(f64, f64); 4],
    /// CPU per reset (µs): gateway, slapd, this client (with the relay).
    cpu: (f64, f64, f64),
}

/// The directories phase: `rounds` alternating pairs of `local` and
/// `ldap` runs of `seconds` each with `flows` flows.
#[allow(clippy::too_many_arguments)]
fn directories_phase(
    addr: &str,
    flows: usize,
    seconds: u64,
    rounds: usize,
    users: usize,
    relay: &std::sync::Arc<CodeRelay>,
    gateway_pid: u32,
    slapd_pid: u32,
) {
    let (gw, sl) = (gateway_pid.to_string(), slapd_pid.to_string());
    let cpu = || {
        (
            resetgate_tests::cpu_seconds(&gw),
            resetgate_tests::cpu_seconds(&sl),
            resetgate_tests::cpu_seconds("self"),
        )
    };
    // Flow f's users: loadF, loadF+flows, ...
    let shares: Vec<Vec<String>> = (0..flows)
        .map(|f| {
            (f..users)
                .step_by(flows)
                .map(|i| format!("load{i}"))
                .collect()
        })
        .collect();
    let run = |which: Directory, seconds: u64| -> DirectoryRun {
        let before = cpu();
        let started = Instant::now();
        let deadline = started + Duration::from_secs(seconds);
        let per_flow = lean_run(
            shares
                .iter()
                .map(|share| {
                    Box::pin(directory_resets(
                        addr.to_owned(),
                        which,
                        share.clone(),
                        relay.clone(),
                        deadline,
                    ))
                        as std::pin::Pin<
                            Box<dyn std::future::Future<Output = (u64, [Vec<u32>; 3])>>,
                        >
                })
                .collect(),
        );
        let elapsed = started.elapsed().as_secs_f64();
        let after = cpu();
        let resets: u64 = per_flow.iter().map(|(d, _)| d).sum();
        let mut lat: [Vec<u32>; 3] = Default::default();
        for (_, mine) in per_flow {
            for (all, m) in lat.iter_mut().zip(mine) {
                all.extend(m);
            }
        }
        let mut steps = [(0.0, 0.0); 4];
        for (i, l) in lat.iter_mut().enumerate() {
            l.sort_unstable();
            steps[i] = (percentile(l, 0.5), percentile(l, 0.99));
        }
        let mut all: Vec<u32> = lat.into_iter().flatten().collect();
        all.sort_unstable();
        steps[3] = (percentile(&all, 0.5), percentile(&all, 0.99));
        let n = resets.max(1) as f64;
        DirectoryRun {
            which,
            resets_per_s: resets as f64 / elapsed,
            steps,
            cpu: (
                (after.0 - before.0) * 1e6 / n,
                (after.1 - before.1) * 1e6 / n,
                (after.2 - before.2) * 1e6 / n,
            ),
        }
    };
    // Warm-up: connections made, plugins compiled and instantiated once.
    run(Directory::Local, 1);
    run(Directory::Ldap, 1);
    let mut runs = Vec::new();
    for _ in 0..rounds {
        runs.push(run(Directory::Local, seconds));
        runs.push(run(Directory::Ldap, seconds));
    }
    println!();
    println!(
        "directories: {flows} flows, {users} users, {rounds} alternating pairs of {seconds} s; relay received {} codes",
        relay.sent()
    );
    println!();
    println!(
        "| run | workflow | resets/s | start p50 / p99 | answer p50 / p99 | password p50 / p99 | every step p50 / p99 | CPU per reset: gateway / slapd / client |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for (i, r) in runs.iter().enumerate() {
        let ms = |(a, b): (f64, f64)| format!("{a:.2} / {b:.2} ms");
        println!(
            "| {} | {} | **{:.0}** | {} | {} | {} | {} | {:.0} / {:.0} / {:.0} µs |",
            i / 2 + 1,
            match r.which {
                Directory::Local => "local-users + attribute-gate",
                Directory::Ldap => "ldap-directory + one-time-code",
            },
            r.resets_per_s,
            ms(r.steps[0]),
            ms(r.steps[1]),
            ms(r.steps[2]),
            ms(r.steps[3]),
            r.cpu.0,
            r.cpu.1,
            r.cpu.2,
        );
    }
    let median = |which: Directory| {
        let mut x: Vec<f64> = runs
            .iter()
            .filter(|r| r.which == which)
            .map(|r| r.resets_per_s)
            .collect();
        x.sort_by(f64::total_cmp);
        x[x.len() / 2]
    };
    let ratios: Vec<String> = runs
        .chunks(2)
        .map(|p| format!("{:.2}", p[1].resets_per_s / p[0].resets_per_s))
        .collect();
    println!(
        "| median | | local {:.0}, ldap {:.0} resets/s: ldap / local = {:.2} (pairs: {}) | | | | | |",
        median(Directory::Local),
        median(Directory::Ldap),
        median(Directory::Ldap) / median(Directory::Local),
        ratios.join(", ")
    );
}

fn main() {
    let flows = arg("--flows", 64) as usize;
    let seconds = arg("--seconds", 10);
    let samples = arg("--samples", 5000) as usize;
    let tls = std::env::args().any(|a| a == "--tls");
    let enumeration_only = std::env::args().any(|a| a == "--enumeration-only");
    let directories_only = std::env::args().any(|a| a == "--directories-only");
    let export_only = std::env::args().any(|a| a == "--export-only");
    let directories =
        !export_only && (directories_only || std::env::args().any(|a| a == "--directories"));
    let export = export_only || std::env::args().any(|a| a == "--export");
    let only = enumeration_only || directories_only || export_only;
    let enumeration = !directories_only
        && !export_only
        && (enumeration_only || std::env::args().any(|a| a == "--enumeration"));
    let rounds = arg("--rounds", 3) as usize;
    let directory_users = arg("--users", flows as u64 * 50) as usize;
    let stores = std::env::args().any(|a| a == "--stores");

    let dir = tempfile::tempdir().unwrap();
    let (plugins, workflows) = (dir.path().join("plugins"), dir.path().join("workflows"));
    std::fs::create_dir_all(&plugins).unwrap();
    std::fs::create_dir_all(&workflows).unwrap();
    resetgate_tests::fixtures::copy_plugins(&plugins);
    let users: Vec<String> = (0..flows).map(|i| format!("user{i}")).collect();
    let names: Vec<&str> = users.iter().map(String::as_str).collect();
    std::fs::write(
        workflows.join("load.yaml"),
        resetgate_tests::fixtures::reset_workflow("load", "5m", &names, false),
    )
    .unwrap();
    if enumeration {
        // Known users for the first answers, each used once (a wrong answer
        // counts toward the lockout, as it does for an unknown name).
        let known: Vec<String> = (0..samples).map(|i| format!("known{i}")).collect();
        let known: Vec<&str> = known.iter().map(String::as_str).collect();
        std::fs::write(
            workflows.join("enum.yaml"),
            resetgate_tests::fixtures::reset_workflow("enum", "5m", &known, false),
        )
        .unwrap();
    }
    // The directories phase: slapd with the users, the relay, their config.
    let directory_setup = directories.then(|| {
        for name in ["ldap-directory", "one-time-code"] {
            std::fs::copy(
                resetgate_tests::wasm(name),
                plugins.join(format!("{name}.wasm")),
            )
            .unwrap();
        }
        let slapd = Slapd::start_with(&resetgate_tests::fixtures::ldap_people(
            "load",
            directory_users,
        ));
        let relay = std::sync::Arc::new(CodeRelay::start());
        let yaml = directories_setup(dir.path(), &slapd, &relay);
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        add_local_users(&data, directory_users);
        (slapd, relay, yaml)
    });
    let pki = Pki::new();
    let digest = resetgate_tests::pki::sha256(KEY.as_bytes());
    let auditor = resetgate_tests::pki::sha256(AUDITOR_KEY.as_bytes());
    let api_yaml = format!(
        "api:\n  keys:\n    load: {{ sha256: {digest} }}\n  operators:\n    exporter: {{ role: auditor, sha256: {auditor} }}\n  rate_limits:\n    portal: {{ per_minute: 10000000, burst: 1000000 }}\n    user: {{ per_minute: 10000000, burst: 1000000 }}\n"
    );
    if stores {
        stores::run(&stores::Options {
            dir: dir.path(),
            plugins: &plugins,
            workflows: &workflows,
            api_yaml: &api_yaml,
            users: &users,
            seconds,
            rounds,
            gateways: arg("--gateways", 3) as usize,
            pool: arg("--pool", 8),
        });
        return;
    }
    let config = write_config(
        dir.path(),
        &format!(
            "{}{}{api_yaml}",
            if tls {
                pki.tls_yaml(None)
            } else {
                String::new()
            },
            directory_setup
                .as_ref()
                .map_or(String::new(), |(_, _, yaml)| yaml.clone()),
        ),
    );
    let gw = Gateway::start_config(&config, &[]);
    let base = gw.base_url();
    let client = |_: usize| Client {
        agent: if tls {
            pki.client(false)
        } else {
            ureq::Agent::config_builder()
                .http_status_as_error(false)
                .build()
                .new_agent()
        },
        base: base.clone(),
    };
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "resetgate load client: {flows} concurrent flows, {seconds} s per phase, {} over loopback, {cores} cores",
        if tls { "HTTPS" } else { "HTTP" }
    );

    let server_pid = gw.pid().to_string();
    let cpu = || {
        (
            resetgate_tests::cpu_seconds(&server_pid),
            resetgate_tests::cpu_seconds("self"),
        )
    };

    if !only {
        // Phase 1: the hello-world baseline, same server, same client.
        let cpu_before = cpu();
        let deadline = Instant::now() + Duration::from_secs(seconds);
        let addr = base.trim_start_matches("http://").to_owned();
        let hello: Vec<Vec<u32>> = if !tls {
            lean_run(
                (0..flows)
                    .map(|_| {
                        let addr = addr.clone();
                        Box::pin(async move {
                            let mut c = Lean::connect(&addr).await;
                            let mut lat = vec![];
                            while Instant::now() < deadline {
                                let t = Instant::now();
                                c.call("GET", "/healthz", None, b"").await;
                                lat.push(t.elapsed().as_micros() as u32);
                            }
                            lat
                        })
                            as std::pin::Pin<Box<dyn std::future::Future<Output = Vec<u32>>>>
                    })
                    .collect(),
            )
        } else {
            on_threads(flows, |i| {
                let c = client(i);
                let mut lat = vec![];
                while Instant::now() < deadline {
                    let t = Instant::now();
                    let mut r = c
                        .agent
                        .get(format!("{}/healthz", c.base))
                        .header("X-Api-Key", KEY)
                        .call()
                        .unwrap();
                    let _ = r.body_mut().read_to_string();
                    lat.push(t.elapsed().as_micros() as u32);
                }
                lat
            })
        };
        let mut hello: Vec<u32> = hello.into_iter().flatten().collect();
        hello.sort_unstable();
        let hello_rps = hello.len() as f64 / seconds as f64;
        let cpu_after = cpu();
        let hello_cpu = (
            (cpu_after.0 - cpu_before.0) / hello.len().max(1) as f64,
            (cpu_after.1 - cpu_before.1) / hello.len().max(1) as f64,
        );

        // Phase 2: complete resets.
        let cpu_before = cpu();
        let started = Instant::now();
        let deadline = started + Duration::from_secs(seconds);
        let per_thread: Vec<(u64, [Vec<u32>; 4])> = if !tls {
            lean_run(
                users
                    .iter()
                    .map(|user| {
                        Box::pin(lean_resets(addr.clone(), user.clone(), deadline))
                            as std::pin::Pin<
                                Box<dyn std::future::Future<Output = (u64, [Vec<u32>; 4])>>,
                            >
                    })
                    .collect(),
            )
        } else {
            on_threads(flows, |i| run_resets(&client(i), &users[i], deadline))
        };
        let elapsed = started.elapsed().as_secs_f64();
        let cpu_after = cpu();
        let resets: u64 = per_thread.iter().map(|(d, _)| d).sum();
        let mut steps: [Vec<u32>; 4] = Default::default();
        for (_, lat) in per_thread {
            for (all, mine) in steps.iter_mut().zip(lat) {
                all.extend(mine);
            }
        }
        let requests: usize = steps.iter().map(Vec::len).sum();
        let rps = requests as f64 / elapsed;
        let reset_cpu = (
            (cpu_after.0 - cpu_before.0) / requests.max(1) as f64,
            (cpu_after.1 - cpu_before.1) / requests.max(1) as f64,
        );
        println!();
        println!("| measure | value |");
        println!("|---|---|");
        println!(
            "| hello-world `GET /healthz` | {hello_rps:.0} req/s, p50 {:.2} ms, p99 {:.2} ms |",
            percentile(&hello, 0.5),
            percentile(&hello, 0.99)
        );
        println!(
            "| completed resets | **{:.0} /s** ({resets} in {elapsed:.1} s) |",
            resets as f64 / elapsed
        );
        println!(
            "| API requests (4 per reset) | {rps:.0} req/s = {:.2} × hello-world |",
            rps / hello_rps
        );
        for (name, lat) in STEPS.iter().zip(steps.iter_mut()) {
            lat.sort_unstable();
            println!(
                "| step `{name}` | p50 {:.2} ms, p99 {:.2} ms |",
                percentile(lat, 0.5),
                percentile(lat, 0.99)
            );
        }
        let mut all: Vec<u32> = steps.into_iter().flatten().collect();
        all.sort_unstable();
        println!(
            "| every step | p50 {:.2} ms, p99 {:.2} ms |",
            percentile(&all, 0.5),
            percentile(&all, 0.99)
        );
        println!(
            "| CPU per request, server / client | API steps {:.0} / {:.0} µs; hello-world {:.0} / {:.0} µs |",
            reset_cpu.0 * 1e6,
            reset_cpu.1 * 1e6,
            hello_cpu.0 * 1e6,
            hello_cpu.1 * 1e6
        );

        if std::env::args().any(|a| a == "--flood") {
            // One portal's resets alone, then while 32 anonymous clients flood
            // the gateway (all from 127.0.0.1: rate-limited to 429s).
            let victim = client(0);
            let steps_p50 = |lat: [Vec<u32>; 4]| {
                let mut all: Vec<u32> = lat.into_iter().flatten().collect();
                all.sort_unstable();
                (percentile(&all, 0.5), percentile(&all, 0.99))
            };
            let (alone_n, alone) = run_resets(
                &victim,
                &users[0],
                Instant::now() + Duration::from_secs(seconds),
            );
            let stop = std::sync::atomic::AtomicBool::new(false);
            let flooded: std::sync::atomic::AtomicU64 = Default::default();
            let (flood_n, during) = std::thread::scope(|s| {
                for i in 0..32 {
                    let (stop, flooded, base, pki) = (&stop, &flooded, base.clone(), &pki);
                    s.spawn(move || {
                        let agent: ureq::Agent = ureq::Agent::config_builder()
                            .http_status_as_error(false)
                            .build()
                            .new_agent();
                        let agent = if tls { pki.client(false) } else { agent };
                        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                            let _ = agent
                                .post(format!("{base}/v1/flows"))
                                .header("Content-Type", "application/json")
                                .send(format!("{{\"workflow\":\"load\",\"user\":\"flood{i}\"}}"));
                            flooded.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                    });
                }
                let r = run_resets(
                    &victim,
                    &users[0],
                    Instant::now() + Duration::from_secs(seconds),
                );
                stop.store(true, std::sync::atomic::Ordering::Relaxed);
                r
            });
            let (a50, a99) = steps_p50(alone);
            let (d50, d99) = steps_p50(during);
            println!(
                "| one portal's steps, alone | p50 {a50:.2} ms, p99 {a99:.2} ms ({:.0} resets/s) |",
                alone_n as f64 / seconds as f64
            );
            println!(
                "| same, while 32 anonymous clients flood ({:.0} req/s, answered 429) | p50 {d50:.2} ms, p99 {d99:.2} ms ({:.0} resets/s); p50 ratio {:.2} |",
                flooded.load(std::sync::atomic::Ordering::Relaxed) as f64 / seconds as f64,
                flood_n as f64 / seconds as f64,
                d50 / a50
            );
        }
    }
    if enumeration {
        let c = client(0);
        if only {
            println!();
            println!("| measure | value |");
            println!("|---|---|");
        }
        starts(&c, &users[0], &users[1]);
        first_answers(&c, samples);
    }
    if export {
        assert!(!tls, "the export phase runs over plain HTTP");
        export::run(&export::Options {
            base: &base,
            gateway_pid: gw.pid(),
            users: &users,
            seconds,
            rounds,
            records: arg("--records", 200_000),
            operator_key: AUDITOR_KEY,
        });
    }
    if let Some((slapd, relay, _)) = directory_setup {
        assert!(!tls, "the directories phase runs over plain HTTP");
        directories_phase(
            base.trim_start_matches("http://"),
            flows,
            seconds,
            rounds,
            directory_users,
            &relay,
            gw.pid(),
            slapd.pid(),
        );
        assert!(gw.stop(), "the gateway did not stop cleanly");
        drop(relay);
        assert!(slapd.stop(), "slapd did not stop cleanly");
        return;
    }
    assert!(gw.stop(), "the gateway did not stop cleanly");
}
