//! What an operator sees of a running gateway: its log (`--log-format
//! json`: one JSON object per line, each security event once, no secret)
//! and `/metrics` (parsed as Prometheus parses it; counters never go back,
//! across reloads too).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use resetgate_tests::{Gateway, fixtures, write_config};
use serde_json::{Value, json};

/// The canary secrets of the scripted session: none may reach the log.
const ANSWER: &str = "canary-answer-7731";
const PASSWORD: &str = "Canary-Password-5519!";
const API_KEY: &str = "rgk_canary-key-4410-0123456789abcdef";

/// A gateway on plain HTTP (loopback) serving `obs-reset` (FIM lockout
/// after 3 failures, gates answered `123456` then `654321`) and
/// `obs-extra` (the same over `other-answer`, a copy of `static-answer`,
/// so that its plugin has statistics of its own), with a portal key and a
/// user rate of 2 flow starts at once; started with `args`.
struct Setup {
    dir: tempfile::TempDir,
    gw: Gateway,
    agent: ureq::Agent,
}

impl Setup {
    fn start(args: &[&str]) -> Setup {
        Setup::start_with(args, None)
    }

    /// Like [`Setup::start`], with `RESETGATE_LOG` set to `filter`.
    fn start_logging(filter: &str) -> Setup {
        Setup::start_with(&[], Some(filter))
    }

    fn start_with(args: &[&str], filter: Option<&str>) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let plugins = dir.path().join("plugins");
        let workflows = dir.path().join("workflows");
        for d in [&plugins, &workflows] {
            std::fs::create_dir_all(d).unwrap();
        }
        fixtures::copy_plugins(&plugins);
        std::fs::copy(
            plugins.join("static-answer.wasm"),
            plugins.join("other-answer.wasm"),
        )
        .unwrap();
        let users = ["alice", "bob", "carol"];
        std::fs::write(
            workflows.join("obs-reset.yaml"),
            fixtures::reset_workflow("obs-reset", "5m", &users, false),
        )
        .unwrap();
        std::fs::write(
            workflows.join("obs-extra.yaml"),
            fixtures::reset_workflow("obs-extra", "5m", &users, false)
                .replace("plugin: static-answer", "plugin: other-answer"),
        )
        .unwrap();
        let digest = resetgate_tests::pki::sha256(API_KEY.as_bytes());
        let config = write_config(
            dir.path(),
            &format!(
                "api:\n  keys:\n    helpdesk-portal: {{ sha256: {digest} }}\n  rate_limits:\n    user: {{ per_minute: 1, burst: 2 }}\n"
            ),
        );
        let gw = match filter {
            Some(filter) => {
                assert!(args.is_empty(), "a log filter and arguments together");
                Gateway::start_config_logging(&config, filter)
            }
            None => Gateway::start_config(&config, args),
        };
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(10)))
            .build()
            .new_agent();
        Setup { dir, gw, agent }
    }

    fn workflows(&self) -> std::path::PathBuf {
        self.dir.path().join("workflows")
    }

    /// POSTs `body` as the portal (with the API key); (status, JSON).
    fn post(&self, path: &str, token: Option<&str>, body: Value) -> (u16, Value) {
        let mut req = self
            .agent
            .post(format!("http://{}{path}", self.gw.addr))
            .header("X-Api-Key", API_KEY);
        if let Some(t) = token {
            req = req.header("Authorization", format!("Bearer {t}"));
        }
        let mut resp = req
            .content_type("application/json")
            .send(body.to_string())
            .unwrap();
        let status = resp.status().as_u16();
        let text = resp.body_mut().read_to_string().unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// Starts a flow: (id, token, view).
    fn begin(&self, workflow: &str, user: &str) -> (String, String, Value) {
        let (status, v) = self.post(
            "/v1/flows",
            None,
            json!({"workflow": workflow, "user": user}),
        );
        assert_eq!(status, 201, "{v}");
        let id = v["id"].as_str().unwrap().to_owned();
        let token = v["token"].as_str().unwrap().to_owned();
        (id, token, v)
    }

    /// Answers the current prompt with `answer`.
    fn answer(&self, id: &str, token: &str, view: &Value, answer: &str) -> Value {
        let (status, v) = self.post(
            &format!("/v1/flows/{id}/answers"),
            Some(token),
            json!({
                "gate": view["prompt"]["gate"],
                "round": view["prompt"]["round"],
                "answers": { "answer": answer },
            }),
        );
        assert_eq!(status, 200, "{v}");
        v
    }

    /// A whole reset of `user` in `workflow`, ending `completed`.
    fn reset(&self, workflow: &str, user: &str) -> String {
        let (id, token, v) = self.begin(workflow, user);
        let v = self.answer(&id, &token, &v, "123456");
        let v = self.answer(&id, &token, &v, "654321");
        assert_eq!(v["state"], "awaiting-password", "{v}");
        let (status, v) = self.post(
            &format!("/v1/flows/{id}/password"),
            Some(&token),
            json!({ "password": PASSWORD }),
        );
        assert_eq!(
            (status, v["state"].as_str()),
            (200, Some("completed")),
            "{v}"
        );
        id
    }

    /// Sends SIGHUP and waits for the reload's summary line (the `n`th).
    fn reload(&self, n: usize) {
        self.gw.signal("HUP");
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.gw.logs().matches("reloaded workflows").count() < n {
            assert!(Instant::now() < deadline, "{}", self.gw.logs());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn metrics(&self) -> String {
        let (status, body) = self.gw.get("/metrics");
        assert_eq!(status, 200, "{body}");
        body
    }
}

/// Every stderr line as JSON: panics on a line that is not one object
/// with `timestamp`, `level`, `target` and `event`.
fn json_lines(logs: &str) -> Vec<Value> {
    logs.lines()
        .map(|line| {
            let v: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line:?}"));
            for key in ["timestamp", "level", "target", "event"] {
                assert!(v[key].is_string(), "no {key} in {line}");
            }
            v
        })
        .collect()
}

/// The lines whose `event` is `event` and whose fields include `fields`.
fn events<'a>(lines: &'a [Value], event: &str, fields: &[(&str, Value)]) -> Vec<&'a Value> {
    lines
        .iter()
        .filter(|l| l["event"] == event && fields.iter().all(|(k, v)| &l[*k] == v))
        .collect()
}

#[test]
fn the_json_log_tells_each_security_event_once_without_a_secret() {
    let s = Setup::start(&["--log-format", "json"]);

    // A complete reset.
    let bob_flow = s.reset("obs-reset", "bob");
    // Three wrong answers: the third locks alice out.
    let (alice_flow, token, mut v) = s.begin("obs-reset", "alice");
    for _ in 0..3 {
        v = s.answer(&alice_flow, &token, &v, ANSWER);
    }
    assert_eq!(v["state"], "locked", "{v}");
    // An unknown workflow.
    let (status, _) = s.post(
        "/v1/flows",
        None,
        json!({"workflow": "no-such-workflow", "user": "carol"}),
    );
    assert_eq!(status, 404);
    // Two starts for one name are allowed at once, the next four are 429.
    for i in 0..6 {
        let (status, v) = s.post(
            "/v1/flows",
            None,
            json!({"workflow": "obs-reset", "user": "mallory"}),
        );
        assert_eq!(status, if i < 2 { 201 } else { 429 }, "{v}");
    }
    // A reload that takes everything, then one that refuses a broken file.
    s.reload(1);
    std::fs::write(s.workflows().join("obs-extra.yaml"), "version: 1\nnme: x\n").unwrap();
    s.reload(2);

    let logs = s.gw.logs();
    for secret in [ANSWER, PASSWORD, API_KEY, token.as_str()] {
        assert!(!logs.contains(secret), "{secret:?} is in the log:\n{logs}");
    }
    let lines = json_lines(&logs);
    let once = |event: &str, fields: &[(&str, Value)]| {
        let found = events(&lines, event, fields);
        assert_eq!(found.len(), 1, "{event} {fields:?}: {found:#?}\n{logs}");
        found[0].clone()
    };
    let count = |event: &str, fields: &[(&str, Value)]| events(&lines, event, fields).len();

    // The listening line is an event like the rest.
    let listening = once("listening", &[]);
    assert_eq!(listening["url"], format!("http://{}", s.gw.addr));

    let wf = || ("workflow", json!("obs-reset"));
    let started = once("flow started", &[("flow", json!(bob_flow))]);
    assert_eq!(started["level"], "INFO");
    assert_eq!(started["principal"], "portal:helpdesk-portal");
    assert!(
        started["request_id"]
            .as_str()
            .is_some_and(|r| r.len() == 16)
    );
    assert_eq!(
        count("flow started", &[wf()]),
        4,
        "bob, alice, mallory twice"
    );
    once(
        "flow ended",
        &[
            ("flow", json!(bob_flow)),
            ("outcome", json!("completed")),
            wf(),
        ],
    );

    let failed = events(&lines, "gate failed", &[("flow", json!(alice_flow)), wf()]);
    assert_eq!(failed.len(), 3, "{logs}");
    assert!(
        failed
            .iter()
            .all(|l| l["gate"] == "code" && l["level"] == "INFO")
    );
    let locked = once("lockout applied", &[("flow", json!(alice_flow)), wf()]);
    assert_eq!(locked["level"], "WARN");
    assert_eq!(locked["principal"], "portal:helpdesk-portal");
    once(
        "flow ended",
        &[("flow", json!(alice_flow)), ("outcome", json!("locked"))],
    );

    let unknown = once("request refused", &[("code", json!("workflow-not-found"))]);
    assert_eq!(unknown["workflow"], "no-such-workflow");
    assert_eq!(unknown["route"], "/v1/flows");
    assert_eq!(unknown["status"], 404);

    // Four 429s, one line.
    let hit = once("rate limit hit", &[("limit", json!("user"))]);
    assert_eq!(hit["level"], "WARN");
    assert_eq!(hit["suppressed"], 0);

    once("reloaded workflows", &[("refused", json!(0))]);
    let refused = once("workflow reload refused", &[]);
    assert!(
        refused["file"]
            .as_str()
            .is_some_and(|f| f.ends_with("obs-extra.yaml")),
        "{refused}"
    );
    assert_eq!(
        refused["kept"].as_str().map(str::len),
        Some(12),
        "{refused}"
    );
    once("reloaded workflows", &[("refused", json!(1))]);
    // The file's diagnostic is one event too, its help a field.
    assert!(
        lines.iter().any(|l| l["level"] == "ERROR"
            && l["event"]
                .as_str()
                .is_some_and(|e| e.contains("obs-extra.yaml:"))),
        "{logs}"
    );
}

#[test]
fn a_text_log_has_one_line_per_event() {
    let s = Setup::start(&[]);
    // A diagnostic with a help line, logged at a reload.
    std::fs::write(s.workflows().join("obs-extra.yaml"), "version: 1\nnme: x\n").unwrap();
    s.reload(1);
    let logs = s.gw.logs();
    let diagnostic = logs
        .lines()
        .find(|l| l.contains("obs-extra.yaml:") && l.contains("ERROR"))
        .unwrap_or_else(|| panic!("{logs}"));
    assert!(diagnostic.contains("help="), "{diagnostic}");
    // Every line starts with a timestamp and a level: nothing continues a
    // record on the next line.
    for line in logs.lines() {
        let mut words = line.split_whitespace();
        let stamp = words.next().unwrap_or("");
        let level = words.next().unwrap_or("");
        assert!(
            stamp.len() > 20 && stamp.ends_with('Z'),
            "a line without a timestamp: {line:?}\n{logs}"
        );
        assert!(
            ["TRACE", "DEBUG", "INFO", "WARN", "ERROR"].contains(&level),
            "{line:?}"
        );
    }
    assert!(logs.contains(" listening url=http://"), "{logs}");
}

#[test]
fn a_text_line_names_the_request_s_flow_and_workflow_once() {
    let s = Setup::start_logging("info,resetgate::api=debug");
    let flow = s.reset("obs-reset", "bob");
    let logs = s.gw.logs();
    // The debug line each request ends with, after the handler and the
    // flush have filled in the request span.
    let lines: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains(" DEBUG ") && l.contains(&format!("flow=\"{flow}\"")))
        .filter(|l| l.contains(": request ") || l.ends_with(": request"))
        .collect();
    assert_eq!(lines.len(), 4, "start, two answers, password:\n{logs}");
    for line in lines {
        assert_eq!(line.matches(" flow=").count(), 1, "{line}");
        assert_eq!(line.matches(" workflow=").count(), 1, "{line}");
    }
}

/// Every sample of a `/metrics` page that must never go down — counters,
/// and histograms' buckets, counts and sums — by name and labels, after
/// checking that the page parses as Prometheus text.
fn counters(page: &str) -> BTreeMap<String, f64> {
    use openmetrics_parser::{PrometheusType, PrometheusValue};
    let exposition = openmetrics_parser::prometheus::parse_prometheus(page)
        .unwrap_or_else(|e| panic!("/metrics does not parse: {e:?}\n{page}"));
    let mut out = BTreeMap::new();
    for (name, family) in &exposition.families {
        if !matches!(
            family.family_type,
            PrometheusType::Counter | PrometheusType::Histogram
        ) {
            continue;
        }
        for sample in family.iter_samples() {
            let mut labels: Vec<String> = sample
                .get_labelset()
                .unwrap()
                .iter()
                .map(|(k, v)| format!("{k}={v:?}"))
                .collect();
            labels.sort();
            let series = format!("{name}{{{}}}", labels.join(","));
            match &sample.value {
                PrometheusValue::Counter(c) => {
                    out.insert(series, c.value.as_f64());
                }
                PrometheusValue::Histogram(h) => {
                    let mut last = 0.0;
                    for b in &h.buckets {
                        let n = b.count.as_f64();
                        assert!(n >= last, "{series}: buckets not cumulative");
                        last = n;
                        out.insert(format!("{series} le={}", b.upper_bound), n);
                    }
                    out.insert(format!("{series} count"), h.count.unwrap_or(0) as f64);
                    out.insert(
                        format!("{series} sum"),
                        h.sum.as_ref().map_or(0.0, |s| s.as_f64()),
                    );
                }
                _ => {}
            }
        }
    }
    out
}

/// Every series of `before` is in `after`, none smaller.
fn never_back(before: &BTreeMap<String, f64>, after: &BTreeMap<String, f64>, when: &str) {
    for (series, old) in before {
        let new = after.get(series);
        assert!(
            new.is_some_and(|n| n >= old),
            "{when}: {series} went from {old} to {new:?}"
        );
    }
}

fn value(page: &str, series: &str) -> Option<f64> {
    page.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn metrics_parse_and_no_counter_goes_back_across_reloads() {
    let s = Setup::start(&[]);
    let flow = s.reset("obs-extra", "bob");
    s.reset("obs-reset", "carol");
    let (status, _) = s.post(
        "/v1/flows",
        None,
        json!({"workflow": "no-such-workflow", "user": "carol"}),
    );
    assert_eq!(status, 404);
    let first = s.metrics();
    assert!(!first.contains(&flow), "no flow ids in metrics");
    for series in [
        "resetgate_flows_started_total{workflow=\"obs-extra\"} 1",
        "resetgate_flows_ended_total{workflow=\"obs-extra\",outcome=\"completed\"} 1",
        "resetgate_http_request_duration_seconds_count{route=\"/v1/flows/{id}/answers\",class=\"2xx\"} 4",
        "resetgate_http_responses_total{route=\"/v1/flows/{id}/password\",status=\"200\"} 2",
        "resetgate_http_responses_total{route=\"/v1/flows\",status=\"404\"} 1",
        "resetgate_plugin_call_seconds_count{plugin=\"other-answer\"} ",
        "resetgate_build_info{version=\"",
        "resetgate_reload_success 1",
        "resetgate_reloads_total{result=\"accepted\"} 0",
        "resetgate_store_flush_seconds_count",
    ] {
        assert!(first.contains(series), "no {series:?} in\n{first}");
    }
    for gauge in [
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_start_time_seconds",
    ] {
        assert!(
            value(&first, gauge).is_some_and(|v| v > 0.0),
            "{gauge}\n{first}"
        );
    }
    let before = counters(&first);

    // A reload that drops `obs-extra` (and with it the only user of
    // `other-answer`): its counters stay.
    std::fs::remove_file(s.workflows().join("obs-extra.yaml")).unwrap();
    s.reload(1);
    let second = s.metrics();
    let after = counters(&second);
    never_back(&before, &after, "after a reload that dropped a workflow");
    assert_eq!(value(&second, "resetgate_reload_success"), Some(1.0));
    assert_eq!(
        value(&second, "resetgate_reloads_total{result=\"accepted\"}"),
        Some(1.0)
    );
    let reloaded_at = value(&second, "resetgate_reload_timestamp_seconds").unwrap();
    assert!(reloaded_at > value(&second, "process_start_time_seconds").unwrap() - 1.0);

    // A refused reload: success 0, counters still never back.
    std::fs::write(s.workflows().join("broken.yaml"), "version: 1\nnme: x\n").unwrap();
    s.reset("obs-reset", "alice");
    s.reload(2);
    let third = s.metrics();
    never_back(&after, &counters(&third), "after a refused reload");
    assert_eq!(value(&third, "resetgate_reload_success"), Some(0.0));
    assert_eq!(
        value(&third, "resetgate_reloads_total{result=\"refused\"}"),
        Some(1.0)
    );
    assert_eq!(
        value(
            &third,
            "resetgate_flows_started_total{workflow=\"obs-reset\"}"
        ),
        Some(2.0)
    );
}
