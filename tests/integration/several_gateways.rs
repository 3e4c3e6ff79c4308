//! Several gateways on one PostgreSQL, end to end: the real `resetgate
//! serve` processes on loopback ports, a real PostgreSQL cluster the test
//! starts (`resetgate_tests::postgres`), driven over HTTP the way portals
//! behind a load balancer drive them. Also PostgreSQL restarted under load,
//! and `resetgate store copy` from a sled installation to PostgreSQL.

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use resetgate::secret::Secret;
use resetgate::store::{
    AuditEntry, Item, PgTls, PgTlsMode, PostgresSpec, SledStore, Store, StoreSpec,
};
use resetgate_tests::postgres::Postgres;
use resetgate_tests::sink::Sink;
use resetgate_tests::{Gateway, Reply, run_cli, wasm, write_config};
use serde_json::{Value, json};

/// The data key every gateway of a cluster shares (sealed data written by
/// one opens on the others).
const DATA_KEY: &str = "4f2a0c7e9b3d5a1f8e6c4b2a0d9f7e5c3b1a0f8e6d4c2b0a9f7e5d3c1b0a8f6e";

/// Rate limits out of the way: the tests send bursts from one address.
const NO_RATE_LIMITS: &str = "api:\n  rate_limits:\n    anonymous: { per_minute: 1000000, burst: 100000 }\n    user: { per_minute: 1000000, burst: 100000 }\n";

/// A file holding `value`, mode 600 (as secrets must be).
fn secret_file(dir: &Path, name: &str, value: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, value).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

/// A portal's HTTP client (plain HTTP on loopback).
struct Client {
    agent: ureq::Agent,
}

impl Client {
    fn new() -> Client {
        Client {
            agent: ureq::Agent::config_builder()
                .http_status_as_error(false)
                .timeout_global(Some(Duration::from_secs(60)))
                .build()
                .new_agent(),
        }
    }

    /// `method` `base` + `path` with a JSON `body`; status 0 when nothing
    /// answered (a gateway killed).
    fn send(
        &self,
        method: &str,
        base: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> Reply {
        let mut req = ureq::http::Request::builder()
            .method(method)
            .uri(format!("{base}{path}"));
        if let Some(t) = token {
            req = req.header("Authorization", format!("Bearer {t}"));
        }
        let sent = match body {
            Some(b) => self.agent.run(
                req.header("Content-Type", "application/json")
                    .body(b.to_string().into_bytes())
                    .unwrap(),
            ),
            None => self.agent.run(req.body(()).unwrap()),
        };
        Reply::of(sent)
    }

    fn post(&self, gw: &Gateway, path: &str, token: Option<&str>, body: Value) -> Reply {
        self.send("POST", &gw.base_url(), path, token, Some(&body))
    }

    fn get(&self, gw: &Gateway, path: &str, token: Option<&str>) -> Reply {
        self.send("GET", &gw.base_url(), path, token, None)
    }

    /// Starts a flow on `gw`; the reply.
    fn begin(&self, gw: &Gateway, workflow: &str, user: &str) -> Reply {
        self.post(
            gw,
            "/v1/flows",
            None,
            json!({"workflow": workflow, "user": user}),
        )
    }

    /// Answers the flow's current prompt (in `view`) with `answer`.
    fn answer(&self, gw: &Gateway, id: &str, token: &str, view: &Value, answer: &str) -> Reply {
        self.post(
            gw,
            &format!("/v1/flows/{id}/answers"),
            Some(token),
            json!({
                "gate": view["prompt"]["gate"],
                "round": view["prompt"]["round"],
                "answers": { "answer": answer },
            }),
        )
    }

    fn password(&self, gw: &Gateway, id: &str, token: &str, password: &str) -> Reply {
        self.post(
            gw,
            &format!("/v1/flows/{id}/password"),
            Some(token),
            json!({ "password": password }),
        )
    }
}

/// `r` is an RFC 9457 problem with `status` and `code`.
fn problem(r: &Reply, status: u16, code: &str) {
    assert_eq!(r.status, status, "{}", r.raw);
    assert_eq!(
        r.header("content-type"),
        Some("application/problem+json"),
        "{r:?}"
    );
    assert_eq!(r.json["code"], code, "{}", r.raw);
    assert_eq!(r.json["status"], status, "{}", r.raw);
}

/// How far a flow is: gate `code`, gate `second`, awaiting the password,
/// then committing or ended (one more step either way).
fn rank(view: &Value) -> u8 {
    match (view["state"].as_str(), view["prompt"]["gate"].as_str()) {
        (Some("gate"), Some("code")) => 0,
        (Some("gate"), Some("second")) => 1,
        (Some("awaiting-password"), _) => 2,
        (Some("committing" | "completed" | "failed" | "interrupted"), _) => 3,
        other => panic!("unexpected {other:?} in {view}"),
    }
}

/// A store-spec for the test's own reads of the cluster's database.
fn pg_spec(pg: &Postgres) -> StoreSpec {
    StoreSpec::Postgres(PostgresSpec {
        url: pg.url(),
        password: Some(Secret::from(pg.password())),
        tls: PgTls {
            mode: PgTlsMode::Disable,
            ca_file: None,
        },
        pool: 2,
        node: "test-reader".into(),
    })
}

/// Every audit entry of the store (every chain, in global order).
fn audit_entries(store: &dyn Store) -> Vec<AuditEntry> {
    store
        .audit()
        .entries(0, usize::MAX)
        .expect("the audit log reads")
}

/// `resetgate audit verify --config CONFIG` passes; its output.
fn audit_verifies(config: &Path) -> String {
    let (ok, out, err) = run_cli(&["audit", "verify", "--config", config.to_str().unwrap()]);
    assert!(ok, "audit verify failed:\n{out}\n{err}");
    assert!(out.contains("audit log intact"), "{out}\n{err}");
    out
}

/// The `resetgate_timers_total` samples of a `/metrics` page for `kind`,
/// summed over results.
fn timer_runs(metrics: &str, kind: &str) -> u64 {
    metrics
        .lines()
        .filter(|l| l.starts_with("resetgate_timers_total{"))
        .filter(|l| l.contains(&format!("kind=\"{kind}\"")))
        .map(|l| {
            l.rsplit(' ')
                .next()
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or_else(|| panic!("unreadable sample {l:?}")) as u64
        })
        .sum()
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Waits (up to `secs`) until `done` says yes; panics with `what` if not.
fn wait_until(secs: u64, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !done() {
        assert!(Instant::now() < deadline, "{what} (waited {secs} s)");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Nothing in a gateway's log says it panicked.
fn no_panic(gw: &Gateway, name: &str) {
    let logs = gw.logs();
    assert!(!logs.contains("panicked"), "{name} panicked:\n{logs}");
}

/// The workflows a cluster serves: `api-reset` (the example directory with
/// `users`, FIM lockout at threshold 3, gates `code` = 123456 and `second`
/// = 654321, the example sync target) and `short` (the same, idle flows
/// expire after 1 s).
fn reset_workflows(dir: &Path, users: &[&str]) {
    let reset =
        |name: &str, idle: &str| resetgate_tests::fixtures::reset_workflow(name, idle, users, true);
    std::fs::write(dir.join("api-reset.yaml"), reset("api-reset", "5m")).unwrap();
    std::fs::write(dir.join("short.yaml"), reset("short", "1s")).unwrap();
}

/// Gateways sharing one PostgreSQL database, with shared plugin and
/// workflow folders and one data key; each with its own data folder.
struct Cluster {
    gws: Vec<Gateway>,
    configs: Vec<PathBuf>,
    /// Dropped after the gateways (fields drop in order).
    pg: Postgres,
    _dir: tempfile::TempDir,
}

impl Cluster {
    /// `n` gateways, nodes `g0`, `g1`, ...; `workflows` writes the
    /// workflow files into the shared folder; `extra` (YAML lines) is added
    /// to every gateway's config.
    fn start(n: usize, workflows: impl FnOnce(&Path), extra: &str) -> Cluster {
        let pg = Postgres::start();
        let dir = tempfile::tempdir().unwrap();
        let (plugins, flows) = (dir.path().join("plugins"), dir.path().join("workflows"));
        std::fs::create_dir_all(&plugins).unwrap();
        std::fs::create_dir_all(&flows).unwrap();
        resetgate_tests::fixtures::copy_plugins(&plugins);
        std::fs::copy(wasm("http-probe"), plugins.join("http-probe.wasm")).unwrap();
        workflows(&flows);
        let pw = secret_file(dir.path(), "pg-password", pg.password());
        let key = secret_file(dir.path(), "data-key", DATA_KEY);
        let mut configs = vec![];
        for i in 0..n {
            let own = dir.path().join(format!("g{i}"));
            std::fs::create_dir_all(&own).unwrap();
            configs.push(write_config(
                &own,
                &format!(
                    "store:\n  backend: postgres\n  url: \"{url}\"\n  password_secret: pg-password\n  \
                     tls: {{ mode: disable }}\n  pool: 4\n  node: g{i}\n\
                     secrets:\n  pg-password: {{ file: {pw:?} }}\n  data-key: {{ file: {key:?} }}\n\
                     data_key_secret: data-key\n\
                     plugins: {plugins:?}\nworkflows: {flows:?}\n\
                     timers: {{ sweep_every: 1s }}\n{NO_RATE_LIMITS}{extra}",
                    url = pg.url(),
                ),
            ));
        }
        let gws = configs
            .iter()
            .map(|c| Gateway::start_config(c, &[]))
            .collect();
        Cluster {
            gws,
            configs,
            pg,
            _dir: dir,
        }
    }

    /// The test's own connection to the database.
    fn store(&self) -> std::sync::Arc<dyn Store> {
        resetgate::store::open(&pg_spec(&self.pg)).expect("the test opens the database")
    }

    /// Audit records of `kind` (every chain).
    fn audit_kinds(&self, kind: &str) -> Vec<AuditEntry> {
        let store = self.store();
        let out = audit_entries(&*store)
            .into_iter()
            .filter(|e| e.record.kind == kind)
            .collect();
        store.close();
        out
    }
}

/// The 50-way lockout race of `flows.rs`, spread over three gateways on
/// one database: 50 flows of one user, each answered wrongly once, all at
/// the same time, round-robin over the gateways. The user's requests are
/// serialised across the gateways, so exactly the threshold's count of
/// answers is judged; the rest find the user locked. Then one flow travels
/// across the three gateways.
#[test]
fn three_gateways_count_a_lockout_race_exactly_and_share_their_flows() {
    let c = Cluster::start(
        3,
        |dir| reset_workflows(dir, &["alice", "bob", "carol", "dave"]),
        "",
    );
    let client = Client::new();
    let flows: Vec<(String, String, Value)> = (0..50)
        .map(|i| {
            let r = client.begin(&c.gws[i % 3], "api-reset", "alice");
            assert_eq!(r.status, 201, "{}", r.raw);
            (
                r.json["id"].as_str().unwrap().to_owned(),
                r.json["token"].as_str().unwrap().to_owned(),
                r.json,
            )
        })
        .collect();
    let replies: Vec<Reply> = std::thread::scope(|s| {
        let handles: Vec<_> = flows
            .iter()
            .enumerate()
            .map(|(i, (id, token, view))| {
                let (client, gw) = (&client, &c.gws[i % 3]);
                s.spawn(move || client.answer(gw, id, token, view, "wrong"))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for r in &replies {
        assert_eq!(
            r.status, 200,
            "every answer is judged or refused: {}",
            r.raw
        );
    }
    let wrong = replies
        .iter()
        .filter(|r| r.json["state"] == "gate" && r.json["notice"]["code"] == "not-verified")
        .count();
    let locked = replies
        .iter()
        .filter(|r| r.json["state"] == "locked")
        .count();
    assert_eq!(
        (wrong, locked),
        (2, 48),
        "two answers told `not-verified`, the third locked the user, the other 47 found her locked"
    );
    assert_eq!(
        c.audit_kinds("gate.failed").len(),
        3,
        "exactly the threshold's count of answers was judged, across the three gateways"
    );
    assert_eq!(
        c.audit_kinds("lockout.locked").len(),
        48,
        "each flow that ended locked says so once"
    );
    // Every gateway sees her locked: the right answer does not get through.
    for gw in &c.gws {
        let r = client.begin(gw, "api-reset", "alice");
        let r = client.answer(
            gw,
            r.json["id"].as_str().unwrap(),
            r.json["token"].as_str().unwrap(),
            &r.json,
            "123456",
        );
        assert_eq!(r.json["state"], "locked", "{}", r.raw);
    }

    // A flow started on one gateway, answered on another, completed on the
    // third, read back on the first.
    let (g0, g1, g2) = (&c.gws[0], &c.gws[1], &c.gws[2]);
    let r = client.begin(g0, "api-reset", "bob");
    assert_eq!(r.status, 201, "{}", r.raw);
    let id = r.json["id"].as_str().unwrap().to_owned();
    let token = r.json["token"].as_str().unwrap().to_owned();
    let read = client.get(g1, &format!("/v1/flows/{id}"), Some(&token));
    assert_eq!(read.status, 200, "{}", read.raw);
    assert_eq!(read.json["prompt"], r.json["prompt"]);
    let r = client.answer(g1, &id, &token, &read.json, "123456");
    assert_eq!(r.json["prompt"]["gate"], "second", "{}", r.raw);
    let r = client.answer(g1, &id, &token, &r.json, "654321");
    assert_eq!(r.json["state"], "awaiting-password", "{}", r.raw);
    let r = client.password(g2, &id, &token, "purple monkey dishwasher");
    assert_eq!(r.json["state"], "completed", "{}", r.raw);
    assert_eq!(r.json["receipt"]["directory"], "ok", "{}", r.raw);
    let read = client.get(g0, &format!("/v1/flows/{id}"), Some(&token));
    assert_eq!(read.json["state"], "completed", "{}", read.raw);
    // The token is spent on every gateway.
    let again = client.password(g1, &id, &token, "another password entirely");
    problem(&again, 409, "flow-ended");

    for (i, gw) in c.gws.iter().enumerate() {
        no_panic(gw, &format!("g{i}"));
    }
    let out = audit_verifies(&c.configs[1]);
    // Each gateway appended to chains of its own.
    for node in ["g0/", "g1/", "g2/"] {
        assert!(out.contains(&format!("audit chain {node}")), "{out}");
    }
}

/// The flow sweep is the cluster's timer, not each gateway's: with a one
/// second period, the three gateways together run it at most once a
/// second, and idle flows expire with one `flow.expired` record each.
#[test]
fn the_flow_sweep_runs_once_per_period_for_the_whole_cluster() {
    let c = Cluster::start(
        3,
        |dir| reset_workflows(dir, &["alice", "bob", "carol", "dave"]),
        "",
    );
    // The sweeps the gateways ran, together and each.
    let runs_each = |c: &Cluster| -> Vec<u64> {
        c.gws
            .iter()
            .map(|gw| {
                let (status, body) = gw.get("/metrics");
                assert_eq!(status, 200);
                timer_runs(&body, "sweep")
            })
            .collect()
    };
    let runs = |c: &Cluster| -> u64 { runs_each(c).iter().sum() };
    let (window_start, runs_before) = (now_ms(), runs(&c));
    let client = Client::new();
    // Flows left idle past their 1 s limit, started on every gateway.
    let users = ["alice", "bob", "carol", "dave"];
    let mut ids = vec![];
    for i in 0..12 {
        let r = client.begin(&c.gws[i % 3], "short", users[i % 4]);
        assert_eq!(r.status, 201, "{}", r.raw);
        ids.push(r.json["id"].as_str().unwrap().to_owned());
    }
    let expired_ids = || -> Vec<String> {
        c.audit_kinds("flow.expired")
            .into_iter()
            .filter_map(|e| e.record.flow)
            .collect()
    };
    wait_until(
        60,
        "the idle flows were not all expired by the sweep",
        || {
            let expired = expired_ids();
            ids.iter().all(|id| expired.contains(id))
        },
    );
    // Let a few more sweeps pass (and the window grow to 12 s at least):
    // none expires a flow again.
    let seen = runs(&c);
    wait_until(60, "the sweep stopped running", || {
        runs(&c) >= seen + 3 && now_ms() - window_start >= 12_000
    });
    let expired = expired_ids();
    for id in &ids {
        assert_eq!(
            expired.iter().filter(|e| *e == id).count(),
            1,
            "flow {id} expired once, by one gateway"
        );
    }
    assert_eq!(expired.len(), ids.len(), "{expired:?}");
    // The timer comes due once per period after its last run, and one
    // gateway claims it each time: in the window the three together ran
    // it at most once per period (plus a run under way at each end);
    // three gateways each running their own would run it about twice as
    // often.
    let per_gateway = runs_each(&c);
    let periods = (now_ms() - window_start) / 1000;
    let total = per_gateway.iter().sum::<u64>() - runs_before;
    assert!(
        (3..=periods + 2).contains(&total),
        "{total} sweeps (now {per_gateway:?} per gateway) in {periods} periods of 1 s: \
         the gateways ran the cluster's timer more than once per period"
    );
    for (i, gw) in c.gws.iter().enumerate() {
        no_panic(gw, &format!("g{i}"));
    }
    audit_verifies(&c.configs[0]);
}

/// A workflow whose password step waits on a sync target the test holds:
/// the users `u0`..`u7`; the sync target `http-probe` posts to `sink` and
/// the reset completes whatever it answers.
fn held_workflow(dir: &Path, sink: &Sink) {
    let users: Vec<String> = (0..8).map(|i| format!("{{ name: u{i} }}")).collect();
    std::fs::write(
        dir.join("held-reset.yaml"),
        format!(
            r#"version: 1
name: held-reset
purpose: reset
limits: {{ idle: 5m, absolute: 15m }}
directory:
  plugin: example-directory
  config: {{ users: [{users}] }}
lockout:
  plugin: example-lockout
  config: {{ threshold: 3, lockout_ms: [900000], max_lockouts: 3 }}
gates:
  - id: code
    plugin: static-answer
    config: {{ answer: "123456" }}
  - id: second
    plugin: static-answer
    config: {{ answer: "654321" }}
password:
  min_length: 12
  max_length: 64
  reject_user_name: true
sync:
  - id: held
    plugin: http-probe
    mode: sync
    timeout: 60s
    on_failure: allow
    grants: {{ http: ["{origin}"] }}
    config: {{ method: POST, url: "{url}", timeout_ms: 60000 }}
"#,
            users = users.join(", "),
            origin = sink.origin(),
            url = sink.url("/push"),
        ),
    )
    .unwrap();
}

/// SIGKILL of one gateway of three while its clients' password steps are
/// in flight: every step a client was told was done is still there, read
/// through another gateway; the other two carry on serving; the flows the
/// dead gateway left committing end `interrupted` (outcome unknown), not
/// stuck; the audit log verifies.
#[test]
fn a_gateway_killed_mid_flow_loses_no_acknowledged_step_and_the_others_carry_on() {
    let sink = Sink::http();
    let c = Cluster::start(
        3,
        |dir| held_workflow(dir, &sink),
        &format!(
            "http_origins:\n  - {{ origin: \"{}\", plain_http: true }}\n",
            sink.origin()
        ),
    );
    let client = Client::new();
    // Every acknowledged step: (flow, token, rank it acknowledged).
    let acked: Mutex<Vec<(String, String, u8)>> = Mutex::new(vec![]);
    // The flow each client is driving, and whether it is past the kill.
    let current: Mutex<HashMap<usize, (String, String)>> = Mutex::new(HashMap::new());
    let count = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let killed_at = AtomicUsize::new(usize::MAX);
    let threads = 8;
    std::thread::scope(|s| {
        for t in 0..threads {
            let (c, client, acked, current, count, stop) =
                (&c, &client, &acked, &current, &count, &stop);
            s.spawn(move || {
                // Client t talks to gateway t % 3, as user u{t}.
                let gw = &c.gws[t % 3];
                let user = format!("u{t}");
                while !stop.load(Ordering::Relaxed) {
                    let r = client.begin(gw, "held-reset", &user);
                    if r.status != 201 {
                        assert_eq!(r.status, 0, "{}", r.raw);
                        return; // its gateway is gone
                    }
                    let id = r.json["id"].as_str().unwrap().to_owned();
                    let token = r.json["token"].as_str().unwrap().to_owned();
                    let record = |view: &Value| {
                        acked
                            .lock()
                            .unwrap()
                            .push((id.clone(), token.clone(), rank(view)));
                        count.fetch_add(1, Ordering::Relaxed);
                    };
                    record(&r.json);
                    let mut view = r.json;
                    for answer in ["123456", "654321"] {
                        let r = client.answer(gw, &id, &token, &view, answer);
                        if r.status != 200 {
                            assert_eq!(r.status, 0, "{}", r.raw);
                            return;
                        }
                        view = r.json;
                        record(&view);
                    }
                    current
                        .lock()
                        .unwrap()
                        .insert(t, (id.clone(), token.clone()));
                    let r = client.password(gw, &id, &token, "purple monkey dishwasher");
                    if r.status != 200 {
                        assert_eq!(r.status, 0, "{}", r.raw);
                        return;
                    }
                    assert_eq!(r.json["state"], "completed", "{}", r.raw);
                    record(&r.json);
                    current.lock().unwrap().remove(&t);
                }
            });
        }
        wait_until(120, "the clients made no progress", || {
            count.load(Ordering::Relaxed) >= 150
        });
        // Hold the sync target: every client ends up waiting in a password
        // step, gateway 0's three among them. Then kill gateway 0.
        sink.hold();
        sink.wait_in_flight(threads);
        c.gws[0].signal("KILL");
        killed_at.store(count.load(Ordering::Relaxed), Ordering::Relaxed);
        sink.release();
        // The other two carry on.
        let at_kill = killed_at.load(Ordering::Relaxed);
        wait_until(
            120,
            "the surviving gateways stopped serving after one was killed",
            || count.load(Ordering::Relaxed) >= at_kill + 60,
        );
        stop.store(true, Ordering::Relaxed);
    });
    let (g1, g2) = (&c.gws[1], &c.gws[2]);

    // Every acknowledged step is there, read through a surviving gateway;
    // a flow may be one step further (a request under way), never more.
    let acked = acked.into_inner().unwrap();
    let mut last: HashMap<String, (String, u8)> = HashMap::new();
    for (id, token, rank) in acked {
        let e = last.entry(id).or_insert((token, rank));
        e.1 = e.1.max(rank);
    }
    for (i, (id, (token, acked_rank))) in last.iter().enumerate() {
        let gw = if i % 2 == 0 { g1 } else { g2 };
        let r = client.get(gw, &format!("/v1/flows/{id}"), Some(token));
        assert_eq!(r.status, 200, "acknowledged flow {id} lost: {}", r.raw);
        let now = rank(&r.json);
        assert!(
            now == *acked_rank || now == acked_rank + 1,
            "flow {id}: acknowledged rank {acked_rank}, found {}",
            r.raw
        );
    }

    // The dead gateway's clients were each in a password step; their flows
    // were committing. Nobody knows whether the password changed: the flow
    // says so (not completed, not stuck committing).
    let current = current.into_inner().unwrap();
    let dead: Vec<&(String, String)> = current
        .iter()
        .filter(|(t, _)| *t % 3 == 0)
        .map(|(_, f)| f)
        .collect();
    assert_eq!(dead.len(), 3, "gateway 0's three clients were cut off");
    for (id, token) in dead {
        let r = client.get(g1, &format!("/v1/flows/{id}"), Some(token));
        assert!(
            r.json["state"] == "committing" || r.json["state"] == "interrupted",
            "{}",
            r.raw
        );
        // A portal retrying the password is told the outcome is unknown;
        // the flow has ended `interrupted`.
        let again = client.password(g2, id, token, "purple monkey dishwasher");
        problem(&again, 409, "outcome-unknown");
        let r = client.get(g1, &format!("/v1/flows/{id}"), Some(token));
        assert_eq!(r.json["state"], "interrupted", "{}", r.raw);
    }
    assert!(
        !c.audit_kinds("flow.interrupted").is_empty(),
        "the interruptions are audited"
    );
    no_panic(g1, "g1");
    no_panic(g2, "g2");
    audit_verifies(&c.configs[2]);
}

/// PostgreSQL stopped (fast shutdown) while clients run resets through a
/// gateway, and started again on the same port and data: meanwhile every
/// request gets a clean `503 store-unavailable` problem with Retry-After
/// (never a 500; the gateway stays up and does not panic); afterwards
/// requests succeed again; no acknowledged step is lost.
#[test]
fn requests_get_a_clean_503_while_postgres_restarts_and_succeed_after() {
    let mut c = Cluster::start(
        1,
        |dir| reset_workflows(dir, &["alice", "bob", "carol", "dave"]),
        "",
    );
    let client = Client::new();
    let acked: Mutex<Vec<(String, String, u8)>> = Mutex::new(vec![]);
    let refusals: Mutex<Vec<Reply>> = Mutex::new(vec![]);
    let count = AtomicUsize::new(0);
    let refused = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let gw = &c.gws[0];
    let mut stopped_pg = None;
    std::thread::scope(|s| {
        for t in 0..4 {
            let (client, acked, refusals, count, refused, stop) =
                (&client, &acked, &refusals, &count, &refused, &stop);
            s.spawn(move || {
                let users = ["alice", "bob", "carol", "dave"];
                let user = users[t];
                // A step that is refused ends the client's flow: it starts
                // a new one.
                let refuse = |r: Reply| {
                    refused.fetch_add(1, Ordering::Relaxed);
                    refusals.lock().unwrap().push(r);
                    std::thread::sleep(Duration::from_millis(20));
                };
                'flows: while !stop.load(Ordering::Relaxed) {
                    let r = client.begin(gw, "api-reset", user);
                    if r.status != 201 {
                        refuse(r);
                        continue;
                    }
                    let id = r.json["id"].as_str().unwrap().to_owned();
                    let token = r.json["token"].as_str().unwrap().to_owned();
                    let record = |view: &Value| {
                        acked
                            .lock()
                            .unwrap()
                            .push((id.clone(), token.clone(), rank(view)));
                        count.fetch_add(1, Ordering::Relaxed);
                    };
                    record(&r.json);
                    let mut view = r.json;
                    for answer in ["123456", "654321"] {
                        let r = client.answer(gw, &id, &token, &view, answer);
                        if r.status != 200 {
                            refuse(r);
                            continue 'flows;
                        }
                        view = r.json;
                        record(&view);
                    }
                    let r = client.password(gw, &id, &token, "purple monkey dishwasher");
                    if r.status != 200 {
                        refuse(r);
                        continue;
                    }
                    assert_eq!(r.json["state"], "completed", "{}", r.raw);
                    record(&r.json);
                }
            });
        }
        wait_until(60, "no resets before the database stopped", || {
            count.load(Ordering::Relaxed) >= 40
        });
        assert_eq!(refused.load(Ordering::Relaxed), 0, "{:?}", refusals.lock());
        c.pg.stop();
        stopped_pg = Some(count.load(Ordering::Relaxed));
        // Keep sending for a while: every request is refused.
        wait_until(
            60,
            "requests were not refused while the database was down",
            || refused.load(Ordering::Relaxed) >= 40,
        );
        std::thread::sleep(Duration::from_secs(2));
        let during = count.load(Ordering::Relaxed);
        c.pg.start_again();
        wait_until(
            90,
            "requests did not succeed again after the database came back",
            || count.load(Ordering::Relaxed) >= during + 40,
        );
        stop.store(true, Ordering::Relaxed);
    });
    let refusals = refusals.into_inner().unwrap();
    assert!(refusals.len() >= 40);
    for r in &refusals {
        problem(r, 503, "store-unavailable");
        let retry: u64 = r
            .header("retry-after")
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no Retry-After: {r:?}"));
        assert!(retry >= 1, "{r:?}");
    }
    assert!(stopped_pg.is_some());
    no_panic(gw, "the gateway");
    // The process stayed up and serves: it answered after the outage, and
    // still does.
    assert_eq!(gw.get("/readyz").0, 200);

    // No acknowledged step is lost: each flow is where the client was told
    // it was, or one step further.
    let mut last: HashMap<String, (String, u8)> = HashMap::new();
    for (id, token, rank) in acked.into_inner().unwrap() {
        let e = last.entry(id).or_insert((token, rank));
        e.1 = e.1.max(rank);
    }
    for (id, (token, acked_rank)) in &last {
        let r = client.get(gw, &format!("/v1/flows/{id}"), Some(token));
        assert_eq!(r.status, 200, "acknowledged flow {id} lost: {}", r.raw);
        let now = rank(&r.json);
        assert!(
            now == *acked_rank || now == acked_rank + 1,
            "flow {id}: acknowledged rank {acked_rank}, found {}",
            r.raw
        );
    }
    audit_verifies(&c.configs[0]);
}

/// `/readyz` follows the database: 503 `store-unavailable` while
/// PostgreSQL is down (a load balancer takes the gateway out), 200 again
/// once it is back; `/healthz` (liveness: the process serves) stays 200.
#[test]
fn readyz_says_503_while_postgres_is_down_and_200_after_and_healthz_stays_200() {
    let mut c = Cluster::start(1, |dir| reset_workflows(dir, &["alice"]), "");
    let client = Client::new();
    let gw = &c.gws[0];
    assert_eq!(gw.get("/readyz"), (200, "ready\n".to_owned()));
    c.pg.stop();
    wait_until(
        60,
        "/readyz kept saying ready with the database down",
        || client.get(gw, "/readyz", None).status == 503,
    );
    // Probed again (the answer is reused for a second only): still down.
    std::thread::sleep(Duration::from_millis(1500));
    let r = client.get(gw, "/readyz", None);
    problem(&r, 503, "store-unavailable");
    assert_eq!(gw.get("/healthz").0, 200);
    c.pg.start_again();
    wait_until(60, "/readyz did not say ready again", || {
        gw.get("/readyz").0 == 200
    });
    assert_eq!(gw.get("/healthz").0, 200);
    // And it serves.
    let r = client.begin(gw, "api-reset", "alice");
    assert_eq!(r.status, 201, "{}", r.raw);
    no_panic(gw, "the gateway");
}

/// A store's every record, comparable: repository and a canonical text of
/// each item, sorted.
fn export_of(store: &dyn Store) -> BTreeMap<&'static str, Vec<String>> {
    let mut out: BTreeMap<&'static str, Vec<String>> = BTreeMap::new();
    store
        .export(&mut |item| {
            let text = match &item {
                Item::Flow(r) => format!(
                    "{} {} {} {} {} {}",
                    r.id,
                    r.user,
                    r.version,
                    r.in_progress,
                    r.due_ms,
                    hex::encode(&r.body)
                ),
                Item::Lockout { user, history } => format!("{user} {}", hex::encode(history)),
                Item::Enrollment { user, gate, data } => {
                    format!("{user} {gate} {}", hex::encode(data))
                }
                Item::Kv {
                    namespace,
                    key,
                    value,
                } => format!("{namespace} {key} {}", hex::encode(value)),
                Item::Work {
                    item,
                    attempts,
                    lease_until_ms,
                } => format!(
                    "{} {} {} {attempts} {lease_until_ms:?}",
                    item.id,
                    item.due_ms,
                    hex::encode(&item.payload)
                ),
                Item::Audit(e) => format!(
                    "{} {} {} {} {}",
                    e.chain,
                    e.seq,
                    e.prev_hash,
                    e.hash,
                    serde_json::to_string(&e.record).unwrap()
                ),
            };
            out.entry(item.repository()).or_default().push(text);
            Ok(())
        })
        .expect("the store exports");
    for items in out.values_mut() {
        items.sort();
    }
    out
}

/// `resetgate store copy` moves a sled installation that has served real
/// resets, enrollments and lockouts to PostgreSQL: every record arrives as
/// it was, the audit log verifies there, and a gateway on PostgreSQL keeps
/// the users' lockouts, enrollments and passwords.
#[test]
fn store_copy_moves_a_sled_installation_to_postgres_and_it_keeps_working() {
    let pg = Postgres::start();
    let dir = tempfile::tempdir().unwrap();
    let (plugins, flows) = (dir.path().join("plugins"), dir.path().join("workflows"));
    std::fs::create_dir_all(&plugins).unwrap();
    std::fs::create_dir_all(&flows).unwrap();
    resetgate_tests::fixtures::copy_plugins(&plugins);
    resetgate_tests::fixtures::enrollment_workflows(&flows);
    reset_workflows(&flows, &["dave", "frank"]);
    let pw = secret_file(dir.path(), "pg-password", pg.password());
    let key = secret_file(dir.path(), "data-key", DATA_KEY);
    let common = format!(
        "secrets:\n  data-key: {{ file: {key:?} }}\n  pg-password: {{ file: {pw:?} }}\n\
         data_key_secret: data-key\nplugins: {plugins:?}\nworkflows: {flows:?}\n{NO_RATE_LIMITS}"
    );
    let sled_dir = dir.path().join("sled");
    std::fs::create_dir_all(&sled_dir).unwrap();
    let sled_config = write_config(&sled_dir, &common);
    let sled_data = sled_dir.join("data");
    let pg_dir = dir.path().join("pg");
    std::fs::create_dir_all(&pg_dir).unwrap();
    let pg_config = write_config(
        &pg_dir,
        &format!(
            "store:\n  backend: postgres\n  url: \"{}\"\n  password_secret: pg-password\n  \
             tls: {{ mode: disable }}\n  pool: 4\n  node: after-copy\n{common}",
            pg.url()
        ),
    );
    // Local users, added while the sled gateway is stopped (kv entries).
    for (user, password) in [
        ("erin", "erin's first password"),
        ("gina", "gina's old password"),
    ] {
        resetgate_tests::fixtures::add_local_user(&sled_config, user, password);
    }

    let client = Client::new();
    let enroll = |gw: &Gateway, user: &str, password: &str, pet: &str, city: &str| {
        let r = client.begin(gw, "enroll", user);
        let id = r.json["id"].as_str().unwrap().to_owned();
        let token = r.json["token"].as_str().unwrap().to_owned();
        let r = client.post(
            gw,
            &format!("/v1/flows/{id}/authenticate"),
            Some(&token),
            json!({ "password": password }),
        );
        assert_eq!(r.json["state"], "enrolling", "{}", r.raw);
        let r = client.answer(gw, &id, &token, &r.json, pet);
        let r = client.answer(gw, &id, &token, &r.json, city);
        assert_eq!(r.json["state"], "completed", "{}", r.raw);
    };
    let lock_out = |gw: &Gateway, user: &str| {
        let r = client.begin(gw, "api-reset", user);
        let (id, token) = (
            r.json["id"].as_str().unwrap().to_owned(),
            r.json["token"].as_str().unwrap().to_owned(),
        );
        let mut view = r.json;
        for _ in 0..3 {
            view = client.answer(gw, &id, &token, &view, "wrong").json;
        }
        assert_eq!(view["state"], "locked", "{view}");
    };
    let is_locked = |gw: &Gateway, user: &str| -> bool {
        let r = client.begin(gw, "api-reset", user);
        let r = client.answer(
            gw,
            r.json["id"].as_str().unwrap(),
            r.json["token"].as_str().unwrap(),
            &r.json,
            "123456",
        );
        match r.json["state"].as_str() {
            Some("locked") => true,
            Some("gate") => false,
            _ => panic!("{}", r.raw),
        }
    };

    // On sled: erin enrolls and resets her password; gina enrolls; dave
    // gets locked out; frank's reset is left half done.
    let sled = Gateway::start_config(&sled_config, &[]);
    enroll(&sled, "erin", "erin's first password", "Rex", "Lisbon");
    enroll(&sled, "gina", "gina's old password", "Tom", "Porto");
    let r = client.begin(&sled, "reset", "erin");
    let (id, token) = (
        r.json["id"].as_str().unwrap().to_owned(),
        r.json["token"].as_str().unwrap().to_owned(),
    );
    let r = client.answer(&sled, &id, &token, &r.json, "rex");
    let r = client.answer(&sled, &id, &token, &r.json, "lisbon");
    assert_eq!(r.json["state"], "awaiting-password", "{}", r.raw);
    let r = client.password(&sled, &id, &token, "second secret phrase of E");
    assert_eq!(r.json["state"], "completed", "{}", r.raw);
    lock_out(&sled, "dave");
    let r = client.begin(&sled, "api-reset", "frank");
    let (frank_id, frank_token) = (
        r.json["id"].as_str().unwrap().to_owned(),
        r.json["token"].as_str().unwrap().to_owned(),
    );
    let r = client.answer(&sled, &frank_id, &frank_token, &r.json, "123456");
    assert_eq!(r.json["prompt"]["gate"], "second", "{}", r.raw);
    assert!(sled.stop(), "the sled gateway stops cleanly");

    let (ok, out, err) = run_cli(&[
        "store",
        "copy",
        "--from",
        &format!("sled:{}", sled_data.display()),
        "--to",
        &format!("postgres:{}?sslmode=disable", pg.url()),
        "--to-password-file",
        pw.to_str().unwrap(),
    ]);
    assert!(ok, "store copy failed:\n{out}\n{err}");
    assert!(
        !out.contains(pg.password()) && !err.contains(pg.password()),
        "the database password is never printed"
    );

    // Every record arrived as it was.
    let from = export_of(&SledStore::open(&sled_data).expect("the sled store opens"));
    let to = {
        let store = resetgate::store::open(&pg_spec(&pg)).unwrap();
        let out = export_of(&*store);
        store.close();
        out
    };
    for repository in ["flows", "lockout", "enrollments", "kv", "audit"] {
        assert!(
            from.get(repository).is_some_and(|items| !items.is_empty()),
            "the sled store has {repository} to copy: {:?}",
            from.keys()
        );
    }
    assert_eq!(
        from.keys().collect::<Vec<_>>(),
        to.keys().collect::<Vec<_>>()
    );
    for (repository, items) in &from {
        assert_eq!(
            items.len(),
            to[repository].len(),
            "{repository}: {} copied of {}",
            to[repository].len(),
            items.len()
        );
        assert_eq!(items, &to[repository], "{repository} arrived changed");
    }
    let out = audit_verifies(&pg_config);
    assert!(
        out.contains("audit chain local"),
        "sled's chain came along: {out}"
    );

    // A gateway on PostgreSQL carries on where sled left off.
    let gw = Gateway::start_config(&pg_config, &[]);
    // dave is still locked; frank is not, and his flow goes on.
    assert!(is_locked(&gw, "dave"), "dave's lockout came along");
    let read = client.get(&gw, &format!("/v1/flows/{frank_id}"), Some(&frank_token));
    assert_eq!(read.json["prompt"]["gate"], "second", "{}", read.raw);
    let r = client.answer(&gw, &frank_id, &frank_token, &read.json, "654321");
    assert_eq!(r.json["state"], "awaiting-password", "{}", r.raw);
    let r = client.password(&gw, &frank_id, &frank_token, "a fresh passphrase for F");
    assert_eq!(r.json["state"], "completed", "{}", r.raw);
    // erin's password changed on sled (local users' kv) and her answers
    // (enrollments, sealed with the data key) are asked for and accepted.
    let r = client.begin(&gw, "enroll", "erin");
    let r = client.post(
        &gw,
        &format!("/v1/flows/{}/authenticate", r.json["id"].as_str().unwrap()),
        r.json["token"].as_str(),
        json!({ "password": "second secret phrase of E" }),
    );
    assert_eq!(r.json["state"], "enrolling", "{}", r.raw);
    let r = client.begin(&gw, "reset", "gina");
    let (id, token) = (
        r.json["id"].as_str().unwrap().to_owned(),
        r.json["token"].as_str().unwrap().to_owned(),
    );
    let r = client.answer(&gw, &id, &token, &r.json, "tom");
    assert_eq!(r.json["prompt"]["gate"], "birth-city", "{}", r.raw);
    let r = client.answer(&gw, &id, &token, &r.json, "porto");
    assert_eq!(r.json["state"], "awaiting-password", "{}", r.raw);
    let r = client.password(&gw, &id, &token, "a fresh passphrase for G");
    assert_eq!(r.json["state"], "completed", "{}", r.raw);
    // Lockouts keep counting on PostgreSQL.
    assert!(!is_locked(&gw, "frank"));
    lock_out(&gw, "frank");
    assert!(is_locked(&gw, "frank"));
    no_panic(&gw, "the gateway on PostgreSQL");
    assert!(gw.stop());
    // Both the copied chain and the new gateway's verify.
    let out = audit_verifies(&pg_config);
    assert!(out.contains("audit chain local"), "{out}");
    assert!(out.contains("audit chain after-copy/"), "{out}");
}
