//! Reloading the gateway config file while the gateway runs (`SIGHUP` and
//! `POST /v1/admin/workflows/reload`), and keep-alive connections that
//! outlive a refused request: the real `resetgate` binary on a loopback
//! port, its config file rewritten between reloads.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use resetgate_tests::{Gateway, pki::sha256, write_config};
use serde_json::Value;

const OLD_KEY: &str = "rgk_old-portal-key-of-the-reload-tests";
const NEW_KEY: &str = "rgk_new-portal-key-of-the-reload-tests";
const ADMIN_KEY: &str = "rgk_admin-key-of-the-reload-tests";
const OPERATOR_KEY: &str = "rgk_operator-key-of-ann";

/// The `api:` section: the portal keys `portals` (name, key), the admin
/// `root` and the operator `ann` with `role`.
fn api_section(portals: &[(&str, &str)], role: &str) -> String {
    let mut text = String::from("api:\n  keys:\n");
    for (name, key) in portals {
        text.push_str(&format!(
            "    {name}: {{ sha256: {} }}\n",
            sha256(key.as_bytes())
        ));
    }
    text.push_str(&format!(
        "  operators:\n    root: {{ role: admin, sha256: {} }}\n    ann: {{ role: {role}, sha256: {} }}\n",
        sha256(ADMIN_KEY.as_bytes()),
        sha256(OPERATOR_KEY.as_bytes())
    ));
    text
}

/// A gateway started with `dir/gateway.yaml` holding `body`.
struct Site {
    gw: Gateway,
    dir: tempfile::TempDir,
    config: PathBuf,
    agent: ureq::Agent,
}

impl Site {
    fn start(body: &str) -> Site {
        let dir = tempfile::tempdir().unwrap();
        let config = write_config(dir.path(), body);
        let gw = Gateway::start_config(&config, &[]);
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .new_agent();
        Site {
            gw,
            dir,
            config,
            agent,
        }
    }

    /// Rewrites the config file with `body` (as [`write_config`] does).
    fn rewrite(&self, body: &str) {
        let written = write_config(self.dir.path(), body);
        assert_eq!(written, self.config);
    }

    /// Sends SIGHUP and waits until its reload has ended (its summary line
    /// is one more than before).
    fn hup(&self) {
        let before = self.gw.logs().matches("reloaded workflows").count();
        self.gw.signal("HUP");
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.gw.logs().matches("reloaded workflows").count() <= before {
            assert!(Instant::now() < deadline, "{}", self.gw.logs());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `method path` with `key` as `X-Api-Key`: (status, JSON body).
    fn call(&self, method: &str, path: &str, key: Option<&str>) -> (u16, Value) {
        let mut req = ureq::http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.gw.base_url()));
        if let Some(k) = key {
            req = req.header("X-Api-Key", k);
        }
        let req = if method == "POST" {
            req.header("Content-Type", "application/json")
                .body("{}".to_owned())
                .unwrap()
        } else {
            req.body(String::new()).unwrap()
        };
        let mut response = self.agent.run(req).unwrap();
        let status = response.status().as_u16();
        let raw = response.body_mut().read_to_string().unwrap_or_default();
        (status, serde_json::from_str(&raw).unwrap_or(Value::Null))
    }

    /// The status `GET /v1/workflows` gets with `key`.
    fn status_with(&self, key: &str) -> u16 {
        self.call("GET", "/v1/workflows", Some(key)).0
    }

    /// The value of the unlabelled metric `name`.
    fn metric(&self, name: &str) -> f64 {
        let (status, body) = self.gw.get("/metrics");
        assert_eq!(status, 200, "{body}");
        body.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no {name} in\n{body}"))
            .trim()
            .parse()
            .unwrap()
    }

    fn reloads(&self, result: &str) -> f64 {
        let (_, body) = self.gw.get("/metrics");
        let prefix = format!("resetgate_reloads_total{{result=\"{result}\"}} ");
        body.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .unwrap_or_else(|| panic!("no {prefix} in\n{body}"))
            .trim()
            .parse()
            .unwrap()
    }
}

/// Rotating a portal key with one reload each step: the new key added
/// works beside the old one; the old one removed gets 401 while the new one
/// works; a broken config is refused whole, the keys in force stay, the
/// metrics and the log say so, and the admin reload answers with the file's
/// diagnostics at file:line:column.
#[test]
fn sighup_rotates_a_portal_key_and_refuses_a_broken_config_whole() {
    let site = Site::start(&api_section(&[("web", OLD_KEY)], "auditor"));
    assert_eq!(site.status_with(OLD_KEY), 200);
    assert_eq!(site.status_with(NEW_KEY), 401);

    // Add the new key: both work.
    site.rewrite(&api_section(
        &[("web", OLD_KEY), ("web-next", NEW_KEY)],
        "auditor",
    ));
    site.hup();
    assert_eq!(site.status_with(OLD_KEY), 200, "{}", site.gw.logs());
    assert_eq!(site.status_with(NEW_KEY), 200, "{}", site.gw.logs());
    assert_eq!(site.metric("resetgate_reload_success"), 1.0);
    assert!(site.gw.logs().contains("reloaded the gateway config"));

    // Remove the old key: it is refused, the new one works.
    site.rewrite(&api_section(&[("web-next", NEW_KEY)], "auditor"));
    site.hup();
    assert_eq!(site.status_with(OLD_KEY), 401);
    assert_eq!(site.status_with(NEW_KEY), 200);
    assert_eq!(site.reloads("refused"), 0.0);

    // A broken config (a key that is not a digest, an unknown setting):
    // refused whole, even its valid part (the old key back) is not taken.
    let broken = format!(
        "{}    web: {{ sha256: not-a-digest }}\n  colour: blue\n",
        api_section(&[("web-next", NEW_KEY), ("web-old", OLD_KEY)], "auditor")
    );
    site.rewrite(&broken);
    site.hup();
    assert_eq!(site.status_with(NEW_KEY), 200);
    assert_eq!(site.status_with(OLD_KEY), 401);
    assert_eq!(site.metric("resetgate_reload_success"), 0.0);
    assert_eq!(site.reloads("refused"), 1.0);
    let logs = site.gw.logs();
    assert!(
        logs.contains("gateway config reload refused"),
        "no refusal logged:\n{logs}"
    );
    let file = site.config.display().to_string();
    assert!(
        logs.lines()
            .any(|l| l.contains(&format!("{file}:")) && l.contains("error[")),
        "no file:line:column diagnostic logged:\n{logs}"
    );
    for key in [OLD_KEY, NEW_KEY, ADMIN_KEY, OPERATOR_KEY] {
        assert!(!logs.contains(key), "a key in the log");
    }

    // The admin reload reports the diagnostics, and the CLI exits 1.
    let (status, report) = site.call("POST", "/v1/admin/workflows/reload", Some(ADMIN_KEY));
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["accepted"], false, "{report}");
    assert_eq!(report["config"]["applied"], false, "{report}");
    assert_eq!(report["config"]["file"], file.as_str(), "{report}");
    let diagnostics = report["config"]["diagnostics"].as_array().unwrap();
    assert!(!diagnostics.is_empty(), "{report}");
    for d in diagnostics {
        assert_eq!(d["severity"], "error", "{d}");
        assert!(d["line"].as_u64().unwrap() > 0, "{d}");
        assert!(d["column"].as_u64().unwrap() > 0, "{d}");
        assert!(
            d["text"].as_str().unwrap().starts_with(&format!("{file}:")),
            "{d}"
        );
    }
    let out = std::process::Command::new(resetgate_tests::binary())
        .args(["admin", "workflows", "reload"])
        .env("RESETGATE_URL", site.gw.base_url())
        .env("RESETGATE_ADMIN_KEY", ADMIN_KEY)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("refused the gateway config"), "{stderr}");
    assert_eq!(site.status_with(NEW_KEY), 200);

    // Fixed: taken again.
    site.rewrite(&api_section(&[("web-next", NEW_KEY)], "auditor"));
    site.hup();
    assert_eq!(site.metric("resetgate_reload_success"), 1.0);
    assert_eq!(site.status_with(NEW_KEY), 200);
}

/// An operator whose role the config changes from auditor to helpdesk may
/// use a helpdesk route after the reload (and not before); page branding
/// changes with the same reload; a changed setting that only a restart
/// applies (`timers`) keeps its running value and is reported as waiting,
/// without refusing the rest; a config whose secret cannot be read is
/// refused whole.
#[test]
fn an_admin_reload_applies_an_operator_s_new_role_and_reports_what_needs_a_restart() {
    let site = Site::start(&api_section(&[("web", OLD_KEY)], "auditor"));
    let lockouts = "/v1/admin/lockouts/alice";
    let (status, body) = site.call("GET", lockouts, Some(OPERATOR_KEY));
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("forbidden")),
        "{body}"
    );
    let (status, page) = site.gw.get("/");
    assert_eq!(status, 200);
    assert!(!page.contains("Reloaded Corp"));

    site.rewrite(&format!(
        "{}page:\n  name: Reloaded Corp\ntimers:\n  sweep_every: 5s\n",
        api_section(&[("web", OLD_KEY)], "helpdesk")
    ));
    let (status, report) = site.call("POST", "/v1/admin/workflows/reload", Some(ADMIN_KEY));
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["config"]["applied"], true, "{report}");
    assert_eq!(
        report["config"]["needs_restart"],
        serde_json::json!(["timers"]),
        "{report}"
    );
    assert_eq!(report["accepted"], true, "{report}");
    assert_eq!(site.metric("resetgate_reload_success"), 1.0);
    assert_eq!(site.metric("resetgate_reload_restart_needed"), 1.0);
    assert!(
        site.gw
            .wait_for_log("setting=\"timers\"")
            .contains("takes effect at the next restart"),
        "{}",
        site.gw.logs()
    );

    let (status, body) = site.call("GET", lockouts, Some(OPERATOR_KEY));
    assert_eq!(status, 200, "{body}");
    let (status, who) = site.call("GET", "/v1/admin/whoami", Some(OPERATOR_KEY));
    assert_eq!(
        (status, who["role"].as_str()),
        (200, Some("helpdesk")),
        "{who}"
    );
    let (_, page) = site.gw.get("/");
    assert!(page.contains("Reloaded Corp"), "{page}");

    // A config whose secret cannot be read is refused whole: the key it
    // adds does not work, the role it changes stays.
    site.rewrite(&format!(
        "{}secrets:\n  bind: {{ file: {:?} }}\n",
        api_section(&[("web", OLD_KEY), ("web-next", NEW_KEY)], "auditor"),
        site.dir.path().join("no-such-secret")
    ));
    let (status, report) = site.call("POST", "/v1/admin/workflows/reload", Some(ADMIN_KEY));
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["config"]["applied"], false, "{report}");
    assert!(report["capabilities_error"].is_string(), "{report}");
    assert_eq!(report["accepted"], false, "{report}");
    assert_eq!(site.metric("resetgate_reload_success"), 0.0);
    assert_eq!(site.status_with(NEW_KEY), 401);
    assert_eq!(site.call("GET", lockouts, Some(OPERATOR_KEY)).0, 200);

    // Back as it runs: nothing waits for a restart any more.
    site.rewrite(&api_section(&[("web", OLD_KEY)], "helpdesk"));
    let (status, report) = site.call("POST", "/v1/admin/workflows/reload", Some(ADMIN_KEY));
    assert_eq!(status, 200, "{report}");
    assert_eq!(
        report["config"]["needs_restart"],
        serde_json::json!([]),
        "{report}"
    );
    assert_eq!(site.metric("resetgate_reload_restart_needed"), 0.0);
}

/// Reads one HTTP/1.1 response from `reader`: (status, head, body). The
/// body is read by its Content-Length, so the connection stays usable.
fn read_response(reader: &mut BufReader<TcpStream>) -> (u16, String, String) {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        let n = reader.read_line(&mut line).unwrap();
        assert!(n > 0, "the connection closed; read so far: {head:?}");
        head.push_str(&line);
        if line == "\r\n" {
            break;
        }
    }
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().unwrap())
        })
        .unwrap_or_else(|| panic!("no Content-Length in {head}"));
    let mut body = vec![0; length];
    reader.read_exact(&mut body).unwrap();
    (status, head, String::from_utf8(body).unwrap())
}

/// Sends a POST with a JSON body on `stream`: the head first, the body
/// a moment later, so that a refusal decided from the head alone is
/// ready before the body has arrived.
fn post_in_two_parts(stream: &mut TcpStream, path: &str, headers: &str, body: &str) {
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nHost: resetgate\r\n{headers}Content-Length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    stream.flush().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    stream.write_all(body.as_bytes()).unwrap();
    stream.flush().unwrap();
}

/// Requests refused before their handler reads the body — a wrong key
/// (401), a portal on an admin route (403), a wrong media type (415), an
/// unknown route (404) — leave the keep-alive connection usable: each next
/// request on the same TCP connection gets its answer.
#[test]
fn refused_requests_with_a_body_keep_their_keep_alive_connection() {
    let site = Site::start(&api_section(&[("web", OLD_KEY)], "auditor"));
    let mut stream = TcpStream::connect(site.gw.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let body = r#"{"workflow":"none","user":"alice","padding":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}"#;
    let json = "Content-Type: application/json\r\n";
    let cases = [
        (
            "/v1/flows",
            format!("X-Api-Key: rgk_wrong\r\n{json}"),
            401,
            "invalid-api-key",
        ),
        (
            "/v1/admin/workflows/validate",
            format!("X-Api-Key: {OLD_KEY}\r\n{json}"),
            403,
            "forbidden",
        ),
        (
            "/v1/flows",
            "Content-Type: text/plain\r\n".to_owned(),
            415,
            "unsupported-media-type",
        ),
        ("/v1/nowhere", json.to_owned(), 404, "not-found"),
    ];
    for (path, headers, status, code) in &cases {
        post_in_two_parts(&mut stream, path, headers, body);
        let (got, head, answer) = read_response(&mut reader);
        assert_eq!(got, *status, "{head}{answer}");
        assert!(answer.contains(code), "{answer}");
        assert!(
            !head.to_ascii_lowercase().contains("connection: close"),
            "{head}"
        );
    }
    // The same connection still answers.
    write!(stream, "GET /healthz HTTP/1.1\r\nHost: resetgate\r\n\r\n").unwrap();
    let (status, _, answer) = read_response(&mut reader);
    assert_eq!((status, answer.as_str()), (200, "ok\n"));
}
