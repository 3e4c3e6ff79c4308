//! The `http` capability through the plugin host: a test plugin
//! (`http-probe`, a sync target) sends the request its config describes to
//! loopback sinks, and reports what came back.

use std::sync::Arc;
use std::time::Duration;

use resetgate::config::{GatewayConfig, HttpOrigin, SecretSource};
use resetgate::contract::{CallContext, Change, PluginKind, PushFailure, User};
use resetgate::plugin::{CallError, Capabilities, Grants, Limits, LoadSpec, Plugin, PluginHost};
use resetgate::secret::Secret;
use resetgate_tests::pki::Pki;
use resetgate_tests::sink::{Reply, Sink};
use resetgate_tests::{capture_logs, host, wasm};
use serde_json::{Value, json};

use crate::one_time_code::write_secret;

const TOKEN: &str = "CANARY-api-token-c41d";
const PASSWORD: &str = "CANARY-pw \"quoted\" & spaced+é";

/// Origins in the gateway config: `(sink origin, plain_http, ca_file, max_concurrent)`.
struct Setup {
    host: PluginHost,
    _dir: tempfile::TempDir,
}

impl Setup {
    fn new(origins: Vec<HttpOrigin>) -> Setup {
        let (host, dir) = host();
        let token = write_secret(dir.path(), "api-token", TOKEN);
        let bad = write_secret(dir.path(), "bad-token", "line\nbreak");
        let config = GatewayConfig {
            http_origins: origins,
            secrets: [
                ("api-token".to_owned(), SecretSource::File(token)),
                ("bad-token".to_owned(), SecretSource::File(bad)),
            ]
            .into(),
            ..GatewayConfig::default()
        };
        let caps = Capabilities::from_config(&config, None).unwrap();
        host.set_capabilities(Arc::new(caps));
        Setup { host, _dir: dir }
    }

    /// `http-probe` loaded with grants for `origins` (and the `api-token`
    /// secret) and a wall time of `wall`.
    fn probe(&self, origins: &[&str], wall: Duration) -> Plugin {
        self.host
            .load(
                &wasm("http-probe"),
                &LoadSpec {
                    kind: Some(PluginKind::SyncTarget),
                    grants: Grants {
                        http: origins.iter().map(|o| (*o).to_owned()).collect(),
                        // `undefined` is granted but not in the config.
                        secrets: vec!["api-token".into(), "bad-token".into(), "undefined".into()],
                        ..Grants::default()
                    },
                    limits: Limits {
                        wall_time: wall,
                        ..Limits::default()
                    },
                },
            )
            .unwrap()
    }
}

fn plain(sink: &Sink) -> HttpOrigin {
    HttpOrigin {
        origin: sink.origin(),
        plain_http: true,
        ca_file: None,
        max_concurrent: 4,
    }
}

/// Sends the request `request` describes through `plugin`; what the plugin
/// saw, as JSON (`{"status", ...}` or `{"error"}`), or the call's failure.
fn send(plugin: &Plugin, request: Value) -> Result<Value, CallError> {
    let ctx = CallContext {
        flow_id: "flow-1".into(),
        workflow: "test".into(),
        step: "sync[0]".into(),
        config: request.to_string(),
        now_ms: 1_763_856_000_000,
        language: String::new(),
    };
    let change = Change {
        idempotency_key: "k".into(),
        user: User {
            id: "uid=alice".into(),
            name: "alice".into(),
            attributes: vec![],
        },
        changed_at_ms: 0,
    };
    match plugin
        .sync_target()
        .unwrap()
        .push(&ctx, &change, &Secret::from(PASSWORD))?
    {
        Err(PushFailure::Permanent(json)) => Ok(serde_json::from_str(&json).unwrap()),
        other => panic!("{other:?}"),
    }
}

fn error(v: &Value) -> &str {
    v["error"]
        .as_str()
        .unwrap_or_else(|| panic!("not an error: {v}"))
}

#[test]
fn only_granted_and_configured_origins_are_reached() {
    let listed = Sink::http();
    let unlisted = Sink::http();
    let setup = Setup::new(vec![plain(&listed)]);
    let p = setup.probe(&[&listed.origin()], Duration::from_secs(5));
    let v = send(
        &p,
        json!({"url": listed.url("/a?b=1"), "headers": [["X-A", "1"]]}),
    )
    .unwrap();
    assert_eq!(v["status"], 200, "{v}");
    let got = listed.wait_for_requests(1);
    assert_eq!(
        (got[0].method.as_str(), got[0].path.as_str()),
        ("GET", "/a?b=1")
    );
    assert_eq!(got[0].header("x-a"), Some("1"));

    // Default port spelled out, case: the same origin.
    let spelled = listed.url("/").replace("http://", "HTTP://");
    assert_eq!(send(&p, json!({"url": spelled})).unwrap()["status"], 200);

    // Granted to no step here / listed nowhere.
    let v = send(&p, json!({"url": unlisted.url("/")})).unwrap();
    assert_eq!(
        error(&v),
        format!(
            "origin-not-granted: `{}` is not granted to this step",
            unlisted.origin()
        )
    );
    let p2 = setup.probe(&[&unlisted.origin()], Duration::from_secs(5));
    let v = send(&p2, json!({"url": unlisted.url("/")})).unwrap();
    assert!(error(&v).starts_with("origin-not-granted"), "{v}");
    // Listed in the config, but this step grants another origin.
    let other = setup.probe(&["https://sms.example.com"], Duration::from_secs(5));
    let v = send(&other, json!({"url": listed.url("/")})).unwrap();
    assert!(error(&v).starts_with("origin-not-granted"), "{v}");
    for url in ["ftp://127.0.0.1/", "/relative", "not a url"] {
        let v = send(&p, json!({"url": url})).unwrap();
        assert!(error(&v).starts_with("origin-not-granted"), "{url}: {v}");
    }
    assert!(unlisted.requests().is_empty());
    assert_eq!(listed.requests().len(), 2);

    // Without the grant, the call stops with the grant to add.
    let ungranted = setup.probe(&[], Duration::from_secs(5));
    let err = send(&ungranted, json!({"url": listed.url("/")})).unwrap_err();
    assert!(
        err.to_string()
            .contains("grants: { http: [\"https://sms.example.com\"] }"),
        "{err}"
    );
}

#[test]
fn https_is_verified_and_plain_http_needs_the_config_to_say_so() {
    let pki = Pki::new();
    let tls = Sink::https(&pki);
    let other_ca = Pki::new();
    let plain_sink = Sink::http();
    let setup = Setup::new(vec![
        HttpOrigin {
            origin: tls.origin(),
            plain_http: false,
            ca_file: Some(pki.ca_file()),
            max_concurrent: 4,
        },
        // The same server as plain http on a port the config says is https.
        HttpOrigin {
            origin: plain_sink.origin().replace("http://", "https://"),
            plain_http: false,
            ca_file: Some(pki.ca_file()),
            max_concurrent: 4,
        },
    ]);
    let p = setup.probe(
        &[
            &tls.origin(),
            &plain_sink.origin().replace("http://", "https://"),
        ],
        Duration::from_secs(5),
    );
    let v = send(&p, json!({"url": tls.url("/x")})).unwrap();
    assert_eq!(v["status"], 200, "{v}");
    assert_eq!(tls.requests().len(), 1);
    // Plain http to an origin the config lists as https: not granted.
    let v = send(&p, json!({"url": plain_sink.url("/x")})).unwrap();
    assert!(error(&v).starts_with("origin-not-granted"), "{v}");
    // An https server whose certificate another CA signed: refused.
    let setup = Setup::new(vec![HttpOrigin {
        origin: tls.origin(),
        plain_http: false,
        ca_file: Some(other_ca.ca_file()),
        max_concurrent: 4,
    }]);
    let p = setup.probe(&[&tls.origin()], Duration::from_secs(5));
    let v = send(&p, json!({"url": tls.url("/x")})).unwrap();
    assert!(error(&v).starts_with("connect: TLS"), "{v}");
    assert_eq!(tls.requests().len(), 1);
}

#[test]
fn redirects_are_returned_on_the_origin_and_refused_off_it() {
    let sink = Sink::http();
    let setup = Setup::new(vec![plain(&sink)]);
    let p = setup.probe(&[&sink.origin()], Duration::from_secs(5));
    sink.reply_with(Reply::status(302).with_header("Location", "/next"));
    let v = send(&p, json!({"url": sink.url("/start")})).unwrap();
    assert_eq!(v["status"], 302, "{v}");
    assert_eq!(sink.requests().len(), 1, "the redirect was followed");
    let location = v["headers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h[0] == "location")
        .unwrap();
    assert_eq!(location[1], "/next");
    sink.reply_with(Reply::status(307).with_header("Location", "http://127.0.0.2:9/steal"));
    let v = send(
        &p,
        json!({"url": sink.url("/start"), "method": "POST", "body": "x"}),
    )
    .unwrap();
    assert_eq!(error(&v), "protocol: redirect to another origin refused");
    assert_eq!(sink.requests().len(), 2);
}

#[test]
fn bodies_and_headers_are_bounded() {
    let sink = Sink::http();
    let setup = Setup::new(vec![plain(&sink)]);
    let p = setup.probe(&[&sink.origin()], Duration::from_secs(5));
    // A response of 100 KiB is cut at 64 KiB; 40 headers become 32.
    let mut reply = Reply::status(200).with_body(vec![b'x'; 100 * 1024]);
    for i in 0..40 {
        reply = reply.with_header(&format!("X-H{i}"), "v");
    }
    sink.reply_with(reply);
    let v = send(&p, json!({"url": sink.url("/big")})).unwrap();
    assert_eq!(v["body_len"], 64 * 1024, "{}", v["body_len"]);
    assert_eq!(v["headers"].as_array().unwrap().len(), 32);
    // A request body of 64 KiB goes; one byte more does not.
    sink.reply_with(Reply::status(204));
    let v = send(
        &p,
        json!({"url": sink.url("/up"), "method": "POST", "body": "y".repeat(64 * 1024)}),
    )
    .unwrap();
    assert_eq!(v["status"], 204, "{v}");
    assert_eq!(sink.requests()[1].body.len(), 64 * 1024);
    let v = send(
        &p,
        json!({"url": sink.url("/up"), "method": "POST", "body": "y".repeat(64 * 1024 + 1)}),
    )
    .unwrap();
    assert_eq!(
        error(&v),
        "protocol: the request body is 65537 bytes, more than 65536"
    );
    assert_eq!(sink.requests().len(), 2);
    // Headers the host writes are refused.
    let v = send(
        &p,
        json!({"url": sink.url("/"), "headers": [["Host", "evil"]]}),
    )
    .unwrap();
    assert_eq!(
        error(&v),
        "protocol: the header `host` is written by the host"
    );
}

#[test]
fn secrets_reach_the_wire_and_nothing_else() {
    let sink = Sink::http();
    let down = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let down_origin = format!("http://{}", down.local_addr().unwrap());
    drop(down);
    let setup = Setup::new(vec![
        plain(&sink),
        HttpOrigin {
            origin: down_origin.clone(),
            plain_http: true,
            ca_file: None,
            max_concurrent: 4,
        },
    ]);
    let p = setup.probe(&[&sink.origin(), &down_origin], Duration::from_secs(5));
    let (logs, results) = capture_logs(|| {
        let mut out = vec![];
        // A secret header, and the password in a JSON body.
        out.push(send(
            &p,
            json!({
                "url": sink.url("/json"), "method": "POST", "with_password": true,
                "headers": [["Content-Type", "application/json"]],
                "secret_headers": [["Authorization", "api-token"]],
                "body": r#"{"user": "alice", "password": "{{password}}"}"#,
            }),
        ));
        // The password in a form body.
        out.push(send(
            &p,
            json!({
                "url": sink.url("/form"), "method": "POST", "with_password": true,
                "headers": [["Content-Type", "application/x-www-form-urlencoded"]],
                "body": "user=alice&password={{password}}",
            }),
        ));
        // Failures with a secret and the password on board.
        out.push(send(
            &p,
            json!({
                "url": format!("{down_origin}/x"), "method": "POST", "with_password": true,
                "secret_headers": [["Authorization", "api-token"]],
                "body": "{{password}}",
            }),
        ));
        out.push(send(
            &p,
            json!({"url": sink.url("/"), "secret_headers": [["Authorization", "not-granted"]]}),
        ));
        out.push(send(
            &p,
            json!({"url": sink.url("/"), "secret_headers": [["Authorization", "bad-token"]]}),
        ));
        out.push(send(
            &p,
            json!({"url": sink.url("/"), "secret_headers": [["Authorization", "undefined"]]}),
        ));
        out
    });
    let results: Vec<Value> = results.into_iter().map(Result::unwrap).collect();
    assert_eq!(results[0]["status"], 200, "{}", results[0]);
    assert_eq!(results[1]["status"], 200, "{}", results[1]);
    assert!(error(&results[2]).starts_with("connect:"), "{}", results[2]);
    assert_eq!(
        error(&results[3]),
        "origin-not-granted: header `authorization` names secret `not-granted`, which this step does not grant"
    );
    assert_eq!(
        error(&results[4]),
        "protocol: secret `bad-token` is not a valid header value"
    );
    assert_eq!(
        error(&results[5]),
        "origin-not-granted: header `authorization` names secret `undefined`, which has no value"
    );
    let got = sink.requests();
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got[0].header("authorization"), Some(TOKEN));
    let body: Value = serde_json::from_slice(&got[0].body).unwrap();
    assert_eq!(body["password"], PASSWORD);
    assert_eq!(
        got[1].body_text(),
        "user=alice&password=CANARY-pw%20%22quoted%22%20%26%20spaced%2B%C3%A9"
    );
    // The plugin logged every failure; neither secret is anywhere.
    assert!(logs.contains("request failed: connect:"), "{logs}");
    let everything = format!("{logs}{results:?}");
    for canary in [TOKEN, "CANARY-pw", "line\nbreak"] {
        assert!(
            !everything.contains(canary),
            "`{canary}` leaked:\n{everything}"
        );
    }
}

#[test]
fn a_request_ends_at_its_timeout_or_the_calls_deadline() {
    let slow = Sink::http();
    slow.hold();
    let setup = Setup::new(vec![plain(&slow)]);
    // The request's own timeout, shorter than the call's.
    let p = setup.probe(&[&slow.origin()], Duration::from_secs(10));
    let v = send(&p, json!({"url": slow.url("/"), "timeout_ms": 200})).unwrap();
    assert_eq!(error(&v), "timeout");
    // No timeout of its own: the call's wall time bounds it. The plugin
    // gets `timeout` back, or is stopped at its limit.
    let p = setup.probe(&[&slow.origin()], Duration::from_millis(300));
    match send(&p, json!({"url": slow.url("/")})) {
        Ok(v) => assert_eq!(error(&v), "timeout"),
        Err(CallError::Timeout { .. }) => {}
        Err(e) => panic!("{e}"),
    }
    assert_eq!(slow.wait_for_requests(2).len(), 2);
    slow.release();
}

#[test]
fn a_slow_origin_takes_only_its_own_slots() {
    let slow = Sink::http();
    let fast = Sink::http();
    slow.hold();
    let setup = Arc::new(Setup::new(vec![
        HttpOrigin {
            max_concurrent: 2,
            ..plain(&slow)
        },
        plain(&fast),
    ]));
    let to_slow = Arc::new(setup.probe(&[&slow.origin()], Duration::from_secs(20)));
    let to_fast = setup.probe(&[&fast.origin()], Duration::from_secs(5));
    // Four calls to the slow origin: two reach it, two wait for a slot.
    let waiting: Vec<_> = (0..4)
        .map(|_| {
            let p = to_slow.clone();
            let url = slow.url("/slow");
            std::thread::spawn(move || send(&p, json!({"url": url})))
        })
        .collect();
    slow.wait_in_flight(2);
    // Another plugin's calls to another origin go through meanwhile.
    for _ in 0..10 {
        let v = send(&to_fast, json!({"url": fast.url("/fast")})).unwrap();
        assert_eq!(v["status"], 200, "{v}");
    }
    assert_eq!(
        slow.in_flight(),
        2,
        "more than max_concurrent reached the slow origin"
    );
    // A call to the slow origin whose time ends while it waits for a slot
    // gets `timeout`, without reaching the server.
    let short = setup.probe(&[&slow.origin()], Duration::from_secs(5));
    let v = send(&short, json!({"url": slow.url("/late"), "timeout_ms": 100})).unwrap();
    assert_eq!(error(&v), "timeout");
    assert_eq!(slow.requests().len(), 2);
    // Released, every waiting call completes.
    slow.release();
    for t in waiting {
        assert_eq!(t.join().unwrap().unwrap()["status"], 200);
    }
    assert_eq!(slow.requests().len(), 4);
}
