//! The portal API end to end: the real `resetgate` binary on a loopback
//! port over TLS, driven the way a portal drives it.

use std::path::Path;
use std::time::Duration;

use resetgate_tests::pki::Pki;
use resetgate_tests::{Gateway, Reply, root, write_config};
use serde_json::{Value, json};

/// The test workflows: a reset with two cheap gates (a stand-in for
/// one-time codes), the FIM lockout with threshold 3, a sync target; and a
/// copy whose flows expire after one second idle.
fn workflows(dir: &Path) {
    let reset = |name: &str, idle: &str| {
        resetgate_tests::fixtures::reset_workflow(
            name,
            idle,
            &["alice", "bob", "carol", "dave"],
            true,
        )
    };
    std::fs::write(dir.join("api-reset.yaml"), reset("api-reset", "5m")).unwrap();
    std::fs::write(dir.join("short.yaml"), reset("short", "1s")).unwrap();
}

/// A running gateway (HTTPS, its own CA) and a client for it.
struct Portal {
    gw: Gateway,
    agent: ureq::Agent,
    pki: Pki,
    dir: tempfile::TempDir,
    /// Sent as `X-Api-Key` when set.
    key: Option<String>,
    config: std::path::PathBuf,
}

impl Portal {
    fn start() -> Portal {
        Portal::start_with("")
    }

    /// With `config` (YAML lines) added to the gateway config.
    fn start_with(config: &str) -> Portal {
        let dir = tempfile::tempdir().unwrap();
        for sub in ["plugins", "workflows"] {
            std::fs::create_dir_all(dir.path().join(sub)).unwrap();
        }
        resetgate_tests::fixtures::copy_plugins(&dir.path().join("plugins"));
        workflows(&dir.path().join("workflows"));
        let pki = Pki::new();
        let file = write_config(dir.path(), &format!("{}{config}", pki.tls_yaml(None)));
        let gw = Gateway::start_config(&file, &[]);
        assert!(gw.is_tls());
        let agent = pki.client(false);
        Portal {
            gw,
            agent,
            pki,
            dir,
            key: None,
            config: file,
        }
    }

    /// SIGKILLs the gateway and starts it again on the same data.
    fn crash_and_restart(&mut self) {
        self.gw.signal("KILL");
        // The dead process releases the store's lock as it goes.
        let mut tries = 0;
        let fresh = loop {
            std::thread::sleep(Duration::from_millis(100));
            match Gateway::try_start_config(&self.config, &[]) {
                Ok(gw) => break gw,
                Err(e) if tries < 50 => {
                    tries += 1;
                    let _ = e;
                }
                Err(e) => panic!("no restart: {e}"),
            }
        };
        drop(std::mem::replace(&mut self.gw, fresh));
    }

    fn data(&self) -> std::path::PathBuf {
        self.dir.path().join("data")
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.gw.base_url())
    }

    /// Sends `body` (raw) with `content_type`; `token` as the bearer.
    fn send(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        content_type: Option<&str>,
        body: Option<&[u8]>,
    ) -> Reply {
        let mut req = ureq::http::Request::builder()
            .method(method)
            .uri(self.url(path));
        if let Some(t) = token {
            req = req.header("Authorization", format!("Bearer {t}"));
        }
        if let Some(ct) = content_type {
            req = req.header("Content-Type", ct);
        }
        if let Some(key) = &self.key {
            req = req.header("X-Api-Key", key.as_str());
        }
        let sent = match body {
            Some(b) => self.agent.run(req.body(b.to_vec()).unwrap()),
            None => self.agent.run(req.body(()).unwrap()),
        };
        // No answer at all (the gateway was killed): status 0.
        Reply::of(sent)
    }

    fn post(&self, path: &str, token: Option<&str>, body: Value) -> Reply {
        let bytes = body.to_string().into_bytes();
        self.send("POST", path, token, Some("application/json"), Some(&bytes))
    }

    fn get(&self, path: &str, token: Option<&str>) -> Reply {
        self.send("GET", path, token, None, None)
    }

    /// Starts a flow; returns (id, token, reply).
    fn begin(&self, workflow: &str, user: &str) -> (String, String, Reply) {
        let r = self.post(
            "/v1/flows",
            None,
            json!({"workflow": workflow, "user": user}),
        );
        assert_eq!(r.status, 201, "{}", r.raw);
        let id = r.json["id"].as_str().unwrap().to_owned();
        let token = r.json["token"].as_str().unwrap().to_owned();
        (id, token, r)
    }

    /// Answers the flow's current prompt with `answer` in its one field.
    fn answer(&self, id: &str, token: &str, view: &Value, answer: &str) -> Reply {
        let prompt = &view["prompt"];
        self.post(
            &format!("/v1/flows/{id}/answers"),
            Some(token),
            json!({
                "gate": prompt["gate"],
                "round": prompt["round"],
                "answers": { "answer": answer },
            }),
        )
    }
}

fn problem(r: &Reply, status: u16, code: &str) {
    assert_eq!(r.status, status, "{}", r.raw);
    assert_eq!(
        r.header("content-type"),
        Some("application/problem+json"),
        "{r:?}"
    );
    assert_eq!(r.json["code"], code, "{}", r.raw);
    assert_eq!(r.json["status"], status);
    assert_eq!(r.json["type"], format!("urn:resetgate:problem:{code}"));
    assert!(r.json["title"].as_str().is_some_and(|t| !t.is_empty()));
}

#[test]
fn a_full_reset_through_the_api_then_the_token_is_spent() {
    let p = Portal::start();
    let (id, token, started) = p.begin("api-reset", "alice");
    assert_eq!(
        started.header("location"),
        Some(&*format!("/v1/flows/{id}"))
    );
    assert_eq!((id.len(), token.len()), (32, 32), "128 bits each, hex");
    let v = &started.json;
    assert_eq!(v["state"], "gate");
    assert_eq!(v["prompt"]["gate"], "code");
    assert_eq!(v["prompt"]["round"], 1);
    assert_eq!(v["prompt"]["fields"][0]["name"], "answer");
    assert_eq!(v["prompt"]["fields"][0]["kind"], "code");
    assert!(v["expires_at"].as_str().unwrap().ends_with('Z'));

    // Reading the flow shows the same prompt, and never the token again.
    let read = p.get(&format!("/v1/flows/{id}"), Some(&token));
    assert_eq!(read.status, 200, "{}", read.raw);
    assert_eq!(read.json["prompt"], v["prompt"]);
    assert!(read.json.get("token").is_none());

    let r = p.answer(&id, &token, v, "123456");
    assert_eq!(r.json["prompt"]["gate"], "second", "{}", r.raw);
    let r = p.answer(&id, &token, &r.json, "654321");
    assert_eq!(r.json["state"], "awaiting-password", "{}", r.raw);
    let policy = &r.json["password_policy"];
    assert_eq!(policy["min_length"], 12);
    assert!(policy["rules"].as_array().unwrap().len() >= 2);

    // A password breaking two rules: each is explained; the flow waits.
    let r = p.post(
        &format!("/v1/flows/{id}/password"),
        Some(&token),
        json!({"password": "alice"}),
    );
    assert_eq!(r.status, 200, "{}", r.raw);
    assert_eq!(r.json["state"], "awaiting-password");
    assert_eq!(r.json["notice"]["code"], "password-rejected");
    let codes: Vec<&str> = r.json["violations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["code"].as_str().unwrap())
        .collect();
    assert_eq!(codes, ["too-short", "contains-user-name"]);

    let r = p.post(
        &format!("/v1/flows/{id}/password"),
        Some(&token),
        json!({"password": "purple monkey dishwasher"}),
    );
    assert_eq!(r.json["state"], "completed", "{}", r.raw);
    assert_eq!(r.json["receipt"]["directory"], "ok");
    assert_eq!(r.json["receipt"]["sync"][0]["id"], "mail");
    assert_eq!(r.json["receipt"]["sync"][0]["status"], "ok");

    // The token is spent: replaying the last call changes nothing.
    let again = p.post(
        &format!("/v1/flows/{id}/password"),
        Some(&token),
        json!({"password": "another password entirely"}),
    );
    problem(&again, 409, "flow-ended");
    let again = p.post(
        &format!("/v1/flows/{id}/answers"),
        Some(&token),
        json!({"gate": "code", "round": 1, "answers": {"answer": "123456"}}),
    );
    problem(&again, 409, "flow-ended");
    assert_eq!(
        p.get(&format!("/v1/flows/{id}"), Some(&token)).json["state"],
        "completed"
    );
}

/// The body with the per-flow values blanked: id, token, expiry.
fn masked(r: &Reply) -> String {
    let mut v = r.json.clone();
    for k in ["id", "token", "expires_at"] {
        v[k] = json!("*");
    }
    v.to_string()
}

/// Headers that must match, with per-flow values blanked.
fn header_shape(r: &Reply) -> Vec<(String, String)> {
    let mut h: Vec<(String, String)> = r
        .headers
        .iter()
        .map(|(k, v)| match k.as_str() {
            "location" => (k.clone(), "/v1/flows/*".into()),
            // Every response has its own; its length is fixed.
            "date" | "x-request-id" => (k.clone(), "*".into()),
            _ => (k.clone(), v.clone()),
        })
        .collect();
    h.sort();
    h
}

#[test]
fn known_unknown_and_locked_users_get_identical_answers() {
    let p = Portal::start();
    // Lock bob: three wrong answers.
    let (id, token, r) = p.begin("api-reset", "bob");
    let mut view = r.json;
    for _ in 0..3 {
        view = p.answer(&id, &token, &view, "wrong").json;
    }
    assert_eq!(view["state"], "locked");

    let (_, _, known) = p.begin("api-reset", "alice");
    let (_, _, unknown) = p.begin("api-reset", "nobody-by-this-name");
    let (lid, ltoken, locked) = p.begin("api-reset", "bob");
    for (name, r) in [("unknown", &unknown), ("locked", &locked)] {
        assert_eq!(r.status, known.status, "{name}");
        assert_eq!(header_shape(r), header_shape(&known), "{name}");
        assert_eq!(masked(r), masked(&known), "{name}");
        assert_eq!(r.raw.len(), known.raw.len(), "{name}");
    }
    // The right answer does not get a locked user through.
    let r = p.answer(&lid, &ltoken, &locked.json, "123456");
    assert_eq!(r.json["state"], "locked", "{}", r.raw);
}

#[test]
fn wrong_answers_get_one_generic_message_then_lock_the_user_out() {
    let p = Portal::start();
    for user in ["carol", "no-such-user"] {
        let (id, token, r) = p.begin("api-reset", user);
        let mut view = r.json;
        let mut notices = vec![];
        for _ in 0..3 {
            let r = p.answer(&id, &token, &view, "000000");
            assert_eq!(r.status, 200, "{}", r.raw);
            view = r.json;
            notices.push(view["notice"]["code"].as_str().unwrap().to_owned());
        }
        assert_eq!(
            notices,
            ["not-verified", "not-verified", "locked"],
            "{user}"
        );
        assert_eq!(view["state"], "locked");
        assert!(view["prompt"].is_null());
        // A new flow for the locked name fails at its first answer.
        let (id, token, r) = p.begin("api-reset", user);
        let r = p.answer(&id, &token, &r.json, "123456");
        assert_eq!(r.json["state"], "locked", "{user}");
    }
}

#[test]
fn an_idle_flow_expires_and_then_refuses_everything() {
    let p = Portal::start();
    let (id, token, r) = p.begin("short", "alice");
    std::thread::sleep(Duration::from_millis(1100));
    let r = p.answer(&id, &token, &r.json, "123456");
    assert_eq!(r.status, 200, "{}", r.raw);
    assert_eq!(r.json["state"], "expired");
    assert_eq!(r.json["notice"]["code"], "expired");
    let again = p.post(
        &format!("/v1/flows/{id}/answers"),
        Some(&token),
        json!({"gate": "code", "round": 1, "answers": {"answer": "123456"}}),
    );
    problem(&again, 409, "flow-ended");
}

#[test]
fn tokens_gates_and_states_are_checked() {
    let p = Portal::start();
    let (a, a_token, a_view) = p.begin("api-reset", "alice");
    let (b, b_token, _) = p.begin("api-reset", "dave");

    // Another flow's token, a made-up token, no token, a made-up flow: all
    // the same answer.
    let other = p.get(&format!("/v1/flows/{b}"), Some(&a_token));
    problem(&other, 404, "flow-not-found");
    for r in [
        p.get(&format!("/v1/flows/{b}"), Some(&"0".repeat(32))),
        p.get(&format!("/v1/flows/{b}"), None),
        p.get(&format!("/v1/flows/{}", "f".repeat(32)), Some(&b_token)),
    ] {
        assert_eq!(r.raw, other.raw);
    }
    // Answering flow b's gate with flow a's token changes nothing.
    let r = p.answer(&b, &a_token, &a_view.json, "123456");
    problem(&r, 404, "flow-not-found");

    // An answer naming a gate or round the flow is not at: stale, nothing changes.
    for (gate, round) in [("second", 1), ("code", 2)] {
        let r = p.post(
            &format!("/v1/flows/{a}/answers"),
            Some(&a_token),
            json!({"gate": gate, "round": round, "answers": {"answer": "654321"}}),
        );
        problem(&r, 409, "stale-step");
    }
    // A password before the gates are passed.
    let r = p.post(
        &format!("/v1/flows/{a}/password"),
        Some(&a_token),
        json!({"password": "purple monkey dishwasher"}),
    );
    problem(&r, 409, "wrong-state");
    let r = p.post(
        &format!("/v1/flows/{a}/authenticate"),
        Some(&a_token),
        json!({"password": "purple monkey dishwasher"}),
    );
    problem(&r, 409, "wrong-state");
    // Replaying the first answer after it was accepted is stale.
    let r = p.answer(&a, &a_token, &a_view.json, "123456");
    assert_eq!(r.json["prompt"]["gate"], "second");
    let replay = p.answer(&a, &a_token, &a_view.json, "123456");
    problem(&replay, 409, "stale-step");
    assert_eq!(
        p.get(&format!("/v1/flows/{a}"), Some(&a_token)).json["prompt"]["gate"],
        "second"
    );
    problem(
        &p.post(
            "/v1/flows",
            None,
            json!({"workflow": "nope", "user": "alice"}),
        ),
        404,
        "workflow-not-found",
    );
}

#[test]
fn bad_requests_get_problem_documents_with_stable_codes() {
    let p = Portal::start();
    let big = vec![b' '; 17 * 1024];
    problem(
        &p.send(
            "POST",
            "/v1/flows",
            None,
            Some("application/json"),
            Some(&big),
        ),
        413,
        "body-too-large",
    );
    let r = p.send(
        "POST",
        "/v1/flows",
        None,
        Some("application/json"),
        Some(b"{\"workflow\": "),
    );
    problem(&r, 400, "bad-json");
    problem(
        &p.send(
            "POST",
            "/v1/flows",
            None,
            Some("text/plain"),
            Some(b"{\"workflow\":\"api-reset\",\"user\":\"alice\"}"),
        ),
        415,
        "unsupported-media-type",
    );
    problem(
        &p.send("POST", "/v1/flows", None, None, Some(b"{}")),
        415,
        "unsupported-media-type",
    );
    let r = p.post("/v1/flows", None, json!({"workflow": "api-reset"}));
    problem(&r, 400, "invalid-request");
    assert!(
        r.json["detail"].as_str().unwrap().contains("user"),
        "{}",
        r.raw
    );
    let r = p.post(
        "/v1/flows",
        None,
        json!({"workflow": "api-reset", "user": "alice", "extra": 1}),
    );
    problem(&r, 400, "invalid-request");
    // A value of the wrong type is named by position, never echoed.
    let r = p.post(
        "/v1/flows",
        None,
        json!({"workflow": "api-reset", "user": ["SECRET-ECHO"]}),
    );
    problem(&r, 400, "invalid-request");
    assert!(!r.raw.contains("SECRET-ECHO"), "{}", r.raw);
    problem(&p.get("/v1/nothing-here", None), 404, "not-found");
    problem(&p.get("/v1/flows", None), 405, "method-not-allowed");
    // Every response carries the security headers.
    let page = p.get("/", None);
    assert_eq!(page.status, 200);
    for r in [&page, &p.get("/v1/nothing-here", None)] {
        assert_eq!(r.header("referrer-policy"), Some("no-referrer"));
        assert!(
            r.header("content-security-policy")
                .unwrap()
                .contains("default-src 'none'")
        );
        assert_eq!(r.header("cache-control"), Some("no-store"));
    }
}

#[test]
fn starts_per_user_name_are_rate_limited_with_retry_after() {
    let p = Portal::start();
    let mut statuses = vec![];
    for _ in 0..6 {
        statuses.push(
            p.post(
                "/v1/flows",
                None,
                json!({"workflow": "api-reset", "user": "Alice "}),
            )
            .status,
        );
    }
    assert_eq!(statuses, [201, 201, 201, 201, 201, 429]);
    let r = p.post(
        "/v1/flows",
        None,
        json!({"workflow": "api-reset", "user": "alice"}),
    );
    problem(&r, 429, "rate-limited");
    let secs: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&secs), "{secs}");
    // Another user is not affected.
    p.begin("api-reset", "dave");
}

#[test]
fn a_canary_password_leaves_no_trace_in_logs_or_data() {
    let canary = "CANARY-api-7f3a-horse-battery";
    let p = Portal::start();
    let _keep = &p.pki;
    let (id, token, r) = p.begin("api-reset", "alice");
    let r = p.answer(&id, &token, &r.json, "123456");
    let r = p.answer(&id, &token, &r.json, "654321");
    assert_eq!(r.json["state"], "awaiting-password");
    let r = p.post(
        &format!("/v1/flows/{id}/password"),
        Some(&token),
        json!({"password": canary}),
    );
    assert_eq!(r.json["state"], "completed", "{}", r.raw);
    assert!(!r.raw.contains(canary));
    let logs = p.gw.logs();
    assert!(!logs.contains(canary));
    assert!(!logs.contains(&token), "tokens are not logged");
    let data = p.data();
    assert!(p.gw.stop());
    for entry in walk(&data) {
        let bytes = std::fs::read(&entry).unwrap();
        for needle in [canary.as_bytes(), token.as_bytes()] {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle),
                "{} holds a secret in clear",
                entry.display()
            );
        }
    }
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = vec![];
    for e in std::fs::read_dir(dir).unwrap() {
        let path = e.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[test]
fn metrics_count_flows_gates_lockouts_plugin_calls_and_flushes() {
    let p = Portal::start();
    let (id, token, r) = p.begin("api-reset", "alice");
    let r = p.answer(&id, &token, &r.json, "123456");
    p.answer(&id, &token, &r.json, "000000");
    let m = p.get("/metrics", None);
    assert_eq!(m.status, 200);
    assert!(
        m.header("content-type")
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    for line in [
        "resetgate_flows_started_total{workflow=\"api-reset\"} 1",
        "resetgate_gate_results_total{workflow=\"api-reset\",gate=\"code\",result=\"passed\"} 1",
        "resetgate_gate_results_total{workflow=\"api-reset\",gate=\"second\",result=\"failed\"} 1",
        "resetgate_plugin_call_seconds_count{plugin=\"static-answer\"}",
        "resetgate_store_flush_seconds_count",
        "resetgate_http_responses_total{route=\"/v1/flows\",status=\"201\"} 1",
        "# TYPE resetgate_lockouts_total counter",
    ] {
        assert!(m.raw.contains(line), "missing {line:?} in\n{}", m.raw);
    }
    assert!(!m.raw.contains(&id), "no flow ids in metrics");
}

#[test]
fn the_committed_openapi_document_is_current() {
    let p = Portal::start();
    let served = p.get("/v1/openapi.json", None);
    assert_eq!(served.status, 200);
    assert_eq!(served.json["openapi"], "3.1.0");
    let path = root().join("schemas/openapi.json");
    if std::env::var_os("UPDATE_EXPECT").is_some() {
        std::fs::write(&path, &served.raw).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == served.raw,
        "schemas/openapi.json is stale: run `UPDATE_EXPECT=1 cargo xtask test` and commit it"
    );
    for route in [
        "/v1/flows",
        "/v1/flows/{id}",
        "/v1/flows/{id}/answers",
        "/v1/flows/{id}/password",
        "/v1/flows/{id}/authenticate",
    ] {
        assert!(served.json["paths"].get(route).is_some(), "{route}");
    }
}

#[test]
fn portals_authenticate_with_keys_and_anonymous_access_can_be_turned_off() {
    let key = "rgk_test-portal-key-0123456789";
    let digest = resetgate_tests::pki::sha256(key.as_bytes());
    let mut p = Portal::start_with(&format!(
        "api:\n  anonymous: false\n  keys:\n    helpdesk: {{ sha256: {digest} }}\n"
    ));
    // No key: refused, the page's API too.
    problem(
        &p.post(
            "/v1/flows",
            None,
            json!({"workflow": "api-reset", "user": "alice"}),
        ),
        401,
        "anonymous-not-allowed",
    );
    p.key = Some("rgk_wrong".into());
    problem(
        &p.post(
            "/v1/flows",
            None,
            json!({"workflow": "api-reset", "user": "alice"}),
        ),
        401,
        "invalid-api-key",
    );
    p.key = Some(key.into());
    let (id, token, r) = p.begin("api-reset", "alice");
    let r = p.answer(&id, &token, &r.json, "123456");
    assert_eq!(r.json["prompt"]["gate"], "second");
    // Operational routes need no key; metrics are served to loopback.
    p.key = None;
    assert_eq!(p.get("/healthz", None).status, 200);
    assert_eq!(p.get("/readyz", None).status, 200);
    assert_eq!(p.get("/metrics", None).status, 200);
    assert!(!p.gw.logs().contains(key), "keys are not logged");
}

/// How far a flow is, as a rank: gate `code`, gate `second`, awaiting the
/// password, ended.
fn rank(view: &Value) -> u8 {
    match (view["state"].as_str(), view["prompt"]["gate"].as_str()) {
        (Some("gate"), Some("code")) => 0,
        (Some("gate"), Some("second")) => 1,
        (Some("awaiting-password"), _) => 2,
        (Some("completed" | "failed" | "interrupted"), _) => 3,
        other => panic!("unexpected {other:?} in {view}"),
    }
}

#[test]
fn every_acknowledged_step_survives_a_sigkill_under_load() {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let key = "rgk_crash-test";
    let digest = resetgate_tests::pki::sha256(key.as_bytes());
    let mut p = Portal::start_with(&format!(
        "api:\n  keys:\n    load: {{ sha256: {digest} }}\n  rate_limits:\n    user: {{ per_minute: 1000000, burst: 100000 }}\n"
    ));
    p.key = Some(key.into());
    // Every acknowledged answer: (flow, token, rank it acknowledged).
    let acked: Mutex<Vec<(String, String, u8)>> = Mutex::new(vec![]);
    let count = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        for t in 0..8 {
            let (p, acked, count, stop) = (&p, &acked, &count, &stop);
            s.spawn(move || {
                let users = ["alice", "bob", "carol", "dave"];
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    let user = users[(t + i) % users.len()];
                    let r = p.post(
                        "/v1/flows",
                        None,
                        json!({"workflow": "api-reset", "user": user}),
                    );
                    if r.status != 201 {
                        return; // the gateway is gone
                    }
                    let id = r.json["id"].as_str().unwrap().to_owned();
                    let token = r.json["token"].as_str().unwrap().to_owned();
                    let mut view = r.json;
                    let record = |view: &Value| {
                        acked
                            .lock()
                            .unwrap()
                            .push((id.clone(), token.clone(), rank(view)));
                        count.fetch_add(1, Ordering::Relaxed);
                    };
                    record(&view);
                    for answer in ["123456", "654321"] {
                        let r = p.answer(&id, &token, &view, answer);
                        if r.status != 200 {
                            return;
                        }
                        view = r.json;
                        record(&view);
                    }
                    let r = p.post(
                        &format!("/v1/flows/{id}/password"),
                        Some(&token),
                        json!({"password": "purple monkey dishwasher"}),
                    );
                    if r.status != 200 {
                        return;
                    }
                    record(&r.json);
                }
            });
        }
        while count.load(Ordering::Relaxed) < 400 {
            std::thread::sleep(Duration::from_millis(5));
        }
        p.gw.signal("KILL");
        stop.store(true, Ordering::Relaxed);
    });
    let acked = acked.into_inner().unwrap();
    assert!(acked.len() >= 400);
    p.crash_and_restart();
    // The last acknowledged step of each flow is still there; a flow may be
    // one step further (a request under way when the process died), never
    // more, and an interrupted commit reads `interrupted` (outcome
    // unknown), not completed.
    let mut last: std::collections::HashMap<String, (String, u8)> = Default::default();
    for (id, token, rank) in acked {
        let e = last.entry(id).or_insert((token, rank));
        e.1 = e.1.max(rank);
    }
    let mut ahead = 0;
    for (id, (token, acked_rank)) in &last {
        let r = p.get(&format!("/v1/flows/{id}"), Some(token));
        assert_eq!(r.status, 200, "acknowledged flow {id} lost: {}", r.raw);
        let now = rank(&r.json);
        assert!(
            now == *acked_rank || now == acked_rank + 1,
            "flow {id}: acknowledged rank {acked_rank}, found {}",
            r.raw
        );
        if now > *acked_rank {
            ahead += 1;
        }
        if r.json["state"] == "interrupted" {
            // A portal retrying the password the crash cut off is told
            // the outcome is unknown, not that the flow failed.
            assert_eq!(r.json["receipt"]["directory"], "unknown", "{}", r.raw);
            let again = p.post(
                &format!("/v1/flows/{id}/password"),
                Some(token),
                json!({"password": "purple monkey dishwasher"}),
            );
            problem(&again, 409, "outcome-unknown");
        }
    }
    assert!(
        ahead <= 8,
        "at most one request under way per client thread"
    );
}

/// Enrollment then reset through the API, against the `local-users`
/// directory (a user added with `resetgate users add`) and two security
/// questions whose answers are registered in the enrollment flow.
#[test]
fn enrollment_registers_answers_that_a_reset_then_asks_for() {
    let dir = tempfile::tempdir().unwrap();
    let (plugins_dir, workflows_dir) = (dir.path().join("plugins"), dir.path().join("workflows"));
    std::fs::create_dir_all(&plugins_dir).unwrap();
    std::fs::create_dir_all(&workflows_dir).unwrap();
    resetgate_tests::fixtures::copy_plugins(&plugins_dir);
    resetgate_tests::fixtures::enrollment_workflows(&workflows_dir);
    let pki = Pki::new();
    let config = write_config(dir.path(), &pki.tls_yaml(None));
    // The user, added while the gateway is stopped.
    resetgate_tests::fixtures::add_local_user(&config, "erin", "the current password");

    let gw = Gateway::start_config(&config, &[]);
    let p = Portal {
        gw,
        agent: pki.client(false),
        pki,
        dir,
        key: None,
        config,
    };
    // Enrollment: the current password first (a wrong one is not accepted).
    let (id, token, r) = p.begin("enroll", "erin");
    assert_eq!(r.json["state"], "authenticating", "{}", r.raw);
    let auth = |pw: &str| {
        p.post(
            &format!("/v1/flows/{id}/authenticate"),
            Some(&token),
            json!({"password": pw}),
        )
    };
    let r = auth("not the password");
    assert_eq!(r.json["state"], "authenticating", "{}", r.raw);
    assert_eq!(r.json["notice"]["code"], "not-verified");
    let r = auth("the current password");
    assert_eq!(r.json["state"], "enrolling", "{}", r.raw);
    assert_eq!(r.json["prompt"]["gate"], "first-pet");
    let r = p.answer(&id, &token, &r.json, "Rex the dog");
    assert_eq!(r.json["prompt"]["gate"], "birth-city", "{}", r.raw);
    let r = p.answer(&id, &token, &r.json, "Lisbon");
    assert_eq!(r.json["state"], "completed", "{}", r.raw);

    // A reset asks for the registered answers (normalised: case, spaces).
    let (id, token, r) = p.begin("reset", "erin");
    let wrong = p.answer(&id, &token, &r.json, "Fido");
    assert_eq!(
        wrong.json["notice"]["code"], "not-verified",
        "{}",
        wrong.raw
    );
    let r = p.answer(&id, &token, &wrong.json, "  rex THE dog ");
    assert_eq!(r.json["prompt"]["gate"], "birth-city", "{}", r.raw);
    let r = p.answer(&id, &token, &r.json, "lisbon");
    assert_eq!(r.json["state"], "awaiting-password", "{}", r.raw);
    let r = p.post(
        &format!("/v1/flows/{id}/password"),
        Some(&token),
        json!({"password": "a brand new password"}),
    );
    assert_eq!(r.json["state"], "completed", "{}", r.raw);
    assert_eq!(r.json["receipt"]["directory"], "ok");

    // The directory now takes the new password, not the old one.
    let (id, token, _) = p.begin("enroll", "erin");
    let r = p.post(
        &format!("/v1/flows/{id}/authenticate"),
        Some(&token),
        json!({"password": "the current password"}),
    );
    assert_eq!(r.json["notice"]["code"], "not-verified", "{}", r.raw);
    let r = p.post(
        &format!("/v1/flows/{id}/authenticate"),
        Some(&token),
        json!({"password": "a brand new password"}),
    );
    assert_eq!(r.json["state"], "enrolling", "{}", r.raw);
}

#[test]
fn a_client_certificate_identifies_a_portal() {
    let dir = tempfile::tempdir().unwrap();
    for sub in ["plugins", "workflows"] {
        std::fs::create_dir_all(dir.path().join(sub)).unwrap();
    }
    resetgate_tests::fixtures::copy_plugins(&dir.path().join("plugins"));
    workflows(&dir.path().join("workflows"));
    let pki = Pki::new();
    let config = write_config(
        dir.path(),
        &format!(
            "{}api:\n  anonymous: false\n",
            pki.tls_yaml(Some("optional"))
        ),
    );
    let gw = Gateway::start_config(&config, &[]);
    let mut p = Portal {
        gw,
        agent: pki.client(false),
        pki,
        dir,
        key: None,
        config,
    };
    problem(
        &p.post(
            "/v1/flows",
            None,
            json!({"workflow": "api-reset", "user": "alice"}),
        ),
        401,
        "anonymous-not-allowed",
    );
    p.agent = p.pki.client(true);
    let (id, token, _) = p.begin("api-reset", "alice");
    assert_eq!(p.get(&format!("/v1/flows/{id}"), Some(&token)).status, 200);
}

#[test]
fn answers_that_do_not_fit_the_prompt_are_refused_and_change_nothing() {
    let p = Portal::start();
    let (id, token, r) = p.begin("api-reset", "alice");
    let path = format!("/v1/flows/{id}/answers");
    let long = "9".repeat(65);
    for (answers, says) in [
        (json!({}), "`answer` is missing"),
        (
            json!({"answer": "123456", "other": "x"}),
            "no field `other`",
        ),
        (json!({"answer": long}), "`answer` is longer than 64"),
    ] {
        let r = p.post(
            &path,
            Some(&token),
            json!({"gate": "code", "round": 1, "answers": answers}),
        );
        problem(&r, 400, "invalid-request");
        assert!(
            r.json["detail"].as_str().unwrap().contains(says),
            "{}",
            r.raw
        );
        assert!(!r.raw.contains(&long));
    }
    // Nothing was counted: three refusals would have locked at threshold 3.
    let r = p.answer(&id, &token, &r.json, "123456");
    assert_eq!(r.json["prompt"]["gate"], "second", "{}", r.raw);
}

#[test]
fn invisible_passwords_are_refused_and_a_good_one_can_still_be_set() {
    let p = Portal::start();
    let (id, token, r) = p.begin("api-reset", "alice");
    let r = p.answer(&id, &token, &r.json, "123456");
    let r = p.answer(&id, &token, &r.json, "654321");
    assert_eq!(r.json["state"], "awaiting-password", "{}", r.raw);
    let rules = r.json["password_policy"]["rules"].to_string();

    let nul_inside = "purple\0monkey dishwasher".to_owned();
    for (password, expected) in [
        (" ".repeat(20), vec!["only-invisible"]),
        ("\u{200b}".repeat(20), vec!["only-invisible"]),
        (
            "\u{200c}\u{200d}\u{2060}\u{feff}".repeat(4),
            vec!["only-invisible"],
        ),
        (
            "\t\n".repeat(10),
            vec!["control-characters", "only-invisible"],
        ),
        (
            (1u8..=20).map(char::from).collect::<String>(),
            vec!["control-characters", "only-invisible"],
        ),
        (nul_inside, vec!["control-characters"]),
        (
            "purple monkey\r\ndishwasher".to_owned(),
            vec!["control-characters"],
        ),
    ] {
        let r = p.post(
            &format!("/v1/flows/{id}/password"),
            Some(&token),
            json!({ "password": password }),
        );
        assert_eq!(r.status, 200, "{}", r.raw);
        assert_eq!(r.json["state"], "awaiting-password", "{}", r.raw);
        assert_eq!(r.json["notice"]["code"], "password-rejected", "{}", r.raw);
        assert!(r.json["receipt"].is_null(), "the directory was not touched");
        let violations = r.json["violations"].as_array().unwrap();
        let codes: Vec<&str> = violations
            .iter()
            .map(|v| v["code"].as_str().unwrap())
            .collect();
        assert_eq!(codes, expected, "{password:?}");
        for v in violations {
            let message = v["message"].as_str().unwrap();
            assert!(
                message.contains("spaces inside a password stay allowed"),
                "{message}"
            );
        }
    }
    // The rules shown before say so too.
    assert!(rules.contains("control characters"), "{rules}");
    // The flow still waits for a password, and a good one (spaces inside
    // are fine) is set.
    let read = p.get(&format!("/v1/flows/{id}"), Some(&token));
    assert_eq!(read.json["state"], "awaiting-password");
    let r = p.post(
        &format!("/v1/flows/{id}/password"),
        Some(&token),
        json!({"password": " purple monkey dishwasher "}),
    );
    assert_eq!(r.json["state"], "completed", "{}", r.raw);
    assert_eq!(r.json["receipt"]["directory"], "ok");
}

/// Resolves a local `$ref` (`#/components/...`) against `doc`.
fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    match schema.get("$ref").and_then(Value::as_str) {
        Some(r) => doc
            .pointer(r.trim_start_matches('#'))
            .unwrap_or_else(|| panic!("dangling {r}")),
        None => schema,
    }
}

/// Candidate values for `schema`: typical ones and edge values around what
/// it declares (lengths, bounds, integers written as floats, unicode,
/// control characters, empty maps). Not all are valid: the caller keeps
/// those the document's own schema accepts.
fn candidates(doc: &Value, schema: &Value) -> Vec<Value> {
    let schema = resolve(doc, schema);
    let ty = schema.get("type").and_then(Value::as_str).unwrap_or("");
    let num = |k: &str| schema.get(k).and_then(Value::as_u64);
    match ty {
        "string" => {
            let mut out: Vec<String> = [
                "",
                "a",
                "alice",
                "Alice ",
                "  bob  ",
                "ALICE",
                "api-reset",
                "short",
                "code",
                "second",
                "self-service-reset",
                "0day",
                "a-b_c",
                "-x",
                "_",
                " ",
                "\u{200b}",
                "a\tb",
                "a\nb",
                "\0",
                "a\u{7f}",
                "a\u{85}b",
                "\u{2028}",
                "Zoë",
                "ユーザー",
                "🔑 key",
                "123456",
                "654321",
                "purple monkey dishwasher",
                "x\"y\\z",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            if let Some(e) = schema.get("example").and_then(Value::as_str) {
                out.push(e.to_owned());
            }
            for n in [64, 65, 256, 257] {
                out.push("u".repeat(n));
            }
            for n in [num("minLength"), num("maxLength")].into_iter().flatten() {
                let n = n as usize;
                for unit in ["z", "é", "🔑", "\u{200b}"] {
                    out.push(unit.repeat(n));
                    out.push(unit.repeat(n + 1));
                    out.push(unit.repeat(n.saturating_sub(1)));
                }
            }
            out.into_iter().map(Value::from).collect()
        }
        "integer" => {
            let mut out: Vec<Value> = vec![
                json!(0),
                json!(1),
                json!(2),
                json!(-1),
                json!(1.0),
                json!(3.0),
                json!(25289.0),
                json!(1e3),
                json!(2.5),
                json!(u64::MAX),
            ];
            for n in [num("minimum"), num("maximum")].into_iter().flatten() {
                out.extend([
                    json!(n),
                    json!(n as f64),
                    json!(n + 1),
                    json!(n.saturating_sub(1)),
                ]);
            }
            out
        }
        "object" => {
            let mut out = Vec::new();
            let props = schema.get("properties").and_then(Value::as_object);
            match props {
                Some(props) => {
                    // A typical value for each property (the first
                    // candidate valid on its own), then one property at a
                    // time through its candidates.
                    let base: serde_json::Map<String, Value> = props
                        .iter()
                        .filter_map(|(k, s)| {
                            let check = validator(doc, s);
                            candidates(doc, s)
                                .into_iter()
                                .find(|c| check.is_valid(c) && c != "" && c != &json!({}))
                                .map(|c| (k.clone(), c))
                        })
                        .collect();
                    out.push(Value::Object(base.clone()));
                    for (k, s) in props {
                        for c in candidates(doc, s) {
                            let mut body = base.clone();
                            body.insert(k.clone(), c);
                            out.push(Value::Object(body));
                        }
                        let mut without = base.clone();
                        without.remove(k);
                        out.push(Value::Object(without));
                    }
                }
                None => {
                    // A map: empty, one entry per candidate value, several.
                    out.push(json!({}));
                    let values = schema
                        .get("additionalProperties")
                        .map(|s| candidates(doc, s))
                        .unwrap_or_default();
                    for v in &values {
                        out.push(json!({ "answer": v }));
                    }
                    out.push(json!({"answer": "123456", "other": "x", "ü": ""}));
                    out.push(json!({ "a".repeat(300): "x" }));
                }
            }
            out
        }
        other => panic!("no generator for type {other:?} in {schema}"),
    }
}

/// A validator for `schema` (a document's schema, `$ref`s into the
/// document resolved).
fn validator(doc: &Value, schema: &Value) -> jsonschema::Validator {
    let mut root = schema.clone();
    if let Some(obj) = root.as_object_mut() {
        obj.insert("components".into(), doc["components"].clone());
    }
    jsonschema::validator_for(&root).unwrap_or_else(|e| panic!("{e}: {schema}"))
}

/// The schemathesis property: every request body the served OpenAPI
/// document allows, for every operation that takes one, is understood by
/// the server — never a 5xx, never `bad-json`, never a wrong-type, missing
/// or unknown field, never a field rule the document does not state. (For
/// `answers`, a `400` naming a field of the prompt is the flow's own rule,
/// which no static document can state.)
#[test]
fn every_body_the_openapi_document_allows_is_understood() {
    let p = Portal::start_with(
        "api:\n  rate_limits:\n    anonymous: { per_minute: 10000000, burst: 1000000 }\n    user: { per_minute: 10000000, burst: 1000000 }\n",
    );
    let doc = p.get("/v1/openapi.json", None).json;
    let (id, token, _) = p.begin("api-reset", "carol");
    let mut sent = 0;
    let mut operations = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        // The portal's bodies; operators' are tests/integration/admin.rs's.
        if path.starts_with("/v1/admin") {
            continue;
        }
        for (method, op) in item.as_object().unwrap() {
            let Some(schema) = op.pointer("/requestBody/content/application~1json/schema") else {
                continue;
            };
            operations.push(format!("{} {path}", method.to_uppercase()));
            let check = validator(&doc, schema);
            let bodies: Vec<Value> = candidates(&doc, schema)
                .into_iter()
                .filter(|b| check.is_valid(b))
                .collect();
            assert!(
                bodies.len() >= 10,
                "{path}: only {} valid bodies",
                bodies.len()
            );
            let url = path.replace("{id}", &id);
            for body in &bodies {
                let r = p.send(
                    &method.to_uppercase(),
                    &url,
                    Some(&token),
                    Some("application/json"),
                    Some(body.to_string().as_bytes()),
                );
                sent += 1;
                let detail = r.json["detail"].as_str().unwrap_or("");
                let flows_own_rule = path.ends_with("/answers")
                    && [
                        "the prompt has no field",
                        "is longer than",
                        "must be one of its choices",
                        "a value for",
                    ]
                    .iter()
                    .any(|m| detail.contains(m));
                assert!(
                    r.status != 0 && r.status < 500 && r.status != 429 && r.status != 413,
                    "{method} {path} {body}: {}",
                    r.raw
                );
                assert!(
                    r.status != 400 || flows_own_rule,
                    "{method} {path} {body}: the document allows this body, the server refused it: {}",
                    r.raw
                );
            }
            // The edges the document allows are among them.
            if path.ends_with("/answers") {
                assert!(bodies.iter().any(|b| b["round"] == json!(25289.0)));
                assert!(bodies.iter().any(|b| b["answers"] == json!({})));
            }
            if path == "/v1/flows" {
                let longest = |b: &Value| b["user"].as_str().map_or(0, |u| u.chars().count());
                assert!(bodies.iter().any(|b| longest(b) == 256));
                assert!(bodies.iter().all(|b| longest(b) <= 256));
            }
        }
    }
    operations.sort();
    assert_eq!(
        operations,
        [
            "POST /v1/flows",
            "POST /v1/flows/{id}/answers",
            "POST /v1/flows/{id}/authenticate",
            "POST /v1/flows/{id}/password",
        ]
    );
    assert!(sent > 150, "{sent}");

    // What the document allows also means what it says: `round: 1.0` is
    // round 1, and a 256-character user name starts a flow.
    let (id, token, _) = p.begin("api-reset", "dave");
    let r = p.post(
        &format!("/v1/flows/{id}/answers"),
        Some(&token),
        json!({"gate": "code", "round": 1.0, "answers": {"answer": "123456"}}),
    );
    assert_eq!(r.status, 200, "{}", r.raw);
    assert_eq!(r.json["prompt"]["gate"], "second", "{}", r.raw);
    p.begin("api-reset", &"é".repeat(256));
}

/// `resetgate_workflow_versions` from `/metrics`.
fn versions_loaded(p: &Portal) -> u64 {
    let r = p.get("/metrics", None);
    r.raw
        .lines()
        .find_map(|l| l.strip_prefix("resetgate_workflow_versions "))
        .unwrap_or_else(|| panic!("no resetgate_workflow_versions in {}", r.raw))
        .trim()
        .parse()
        .unwrap()
}

/// Edits `api-reset.yaml` (a new version) and reloads; waits until the
/// gateway has reloaded `reloads` times in all.
fn edit_and_reload(p: &Portal, reloads: usize) {
    let text = resetgate_tests::fixtures::reset_workflow(
        "api-reset",
        "5m",
        &["alice", "bob", "carol", "dave"],
        true,
    );
    std::fs::write(
        p.dir.path().join("workflows/api-reset.yaml"),
        format!("{text}description: \"edit {reloads}\"\n"),
    )
    .unwrap();
    p.gw.signal("HUP");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while p.gw.logs().matches("reloaded workflows").count() < reloads {
        assert!(std::time::Instant::now() < deadline, "{}", p.gw.logs());
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn reloads_keep_only_the_versions_running_flows_use() {
    let p = Portal::start();
    assert_eq!(versions_loaded(&p), 2, "api-reset and short");
    // A flow in progress on the first version of api-reset.
    let (id, token, r) = p.begin("api-reset", "alice");
    let r = p.answer(&id, &token, &r.json, "123456");
    assert_eq!(r.json["prompt"]["gate"], "second");

    for n in 1..=5 {
        edit_and_reload(&p, n);
        // The two current versions and the running flow's; none of the
        // versions in between.
        assert_eq!(versions_loaded(&p), 3, "after reload {n}");
    }
    // The flow started before the reloads still completes on its version.
    let r = p.answer(&id, &token, &r.json, "654321");
    assert_eq!(r.json["state"], "awaiting-password", "{}", r.raw);
    let r = p.post(
        &format!("/v1/flows/{id}/password"),
        Some(&token),
        json!({"password": "purple monkey dishwasher"}),
    );
    assert_eq!(r.json["state"], "completed", "{}", r.raw);

    // With no flow in progress, a reload leaves only the current versions,
    // and the ended flow can still be read.
    for n in 6..=8 {
        edit_and_reload(&p, n);
        assert_eq!(versions_loaded(&p), 2, "after reload {n}");
    }
    let read = p.get(&format!("/v1/flows/{id}"), Some(&token));
    assert_eq!(read.status, 200, "{}", read.raw);
    assert_eq!(read.json["state"], "completed");
    assert_eq!(read.json["receipt"]["directory"], "ok");
    // A new flow runs on the current version.
    let (id, token, r) = p.begin("api-reset", "bob");
    let r = p.answer(&id, &token, &r.json, "123456");
    assert_eq!(r.json["prompt"]["gate"], "second", "{}", r.raw);
}
