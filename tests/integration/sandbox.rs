//! The sandbox seen from outside, on the real binary: plugins that sleep in
//! a WASI wait cannot starve the request workers, and every plugin failure
//! reaches the server's log and `/metrics`, across reloads.

use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use resetgate_tests::{Gateway, wasm, write_config};

/// A reset workflow over the example directory whose single gate is the
/// hostile plugin in `mode` (or `static-answer` when `mode` is `None`).
fn workflow(dir: &Path, name: &str, gate: &str) {
    let users: Vec<String> = (0..=sleepers())
        .map(|i| format!("{{name: user{i}}}"))
        .collect();
    let text = format!(
        "version: 1\nname: {name}\ndirectory:\n  plugin: example-directory\n  config: {{ users: [{}] }}\nlockout:\n  plugin: example-lockout\ngates:\n  - id: code\n{gate}\n",
        users.join(", ")
    );
    std::fs::write(dir.join(format!("{name}.yaml")), text).unwrap();
}

fn start(dir: &Path) -> Gateway {
    let plugins = dir.join("plugins");
    let workflows = dir.join("workflows");
    std::fs::create_dir_all(&plugins).unwrap();
    std::fs::create_dir_all(&workflows).unwrap();
    for name in [
        "example-directory",
        "example-lockout",
        "static-answer",
        "hostile",
    ] {
        std::fs::copy(wasm(name), plugins.join(format!("{name}.wasm"))).unwrap();
    }
    workflow(
        &workflows,
        "sleeper",
        "    plugin: hostile\n    config: { mode: sleep }",
    );
    workflow(
        &workflows,
        "big-output",
        "    plugin: hostile\n    config: { mode: output-8mb }\n    limits: { wall_time: 5s }",
    );
    workflow(
        &workflows,
        "good",
        "    plugin: static-answer\n    config: { answer: \"123456\" }",
    );
    let config = write_config(dir, "");
    Gateway::start_config(&config, &[])
}

/// How many sleeping flows: twice the request workers (one per core), at
/// least four.
fn sleepers() -> usize {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    (2 * cores).max(4)
}

/// `POST /v1/flows` over plain HTTP/1.1; the status.
fn start_flow(addr: std::net::SocketAddr, workflow: &str, user: &str) -> u16 {
    use std::io::{Read, Write};
    let body = format!("{{\"workflow\":\"{workflow}\",\"user\":\"{user}\"}}");
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "POST /v1/flows HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    raw.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// The value of the series `name{labels}` in a Prometheus text page.
fn series(metrics: &str, name_and_labels: &str) -> Option<f64> {
    metrics.lines().find_map(|l| {
        let (key, value) = l.rsplit_once(' ')?;
        (key == name_and_labels).then(|| value.parse().ok())?
    })
}

#[test]
fn sleeping_plugins_do_not_starve_other_flows_and_every_failure_is_logged_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let gw = start(dir.path());
    let addr = gw.addr;
    // Flows of different users whose gate sleeps 10 s in a WASI wait:
    // twice as many as the gateway has request workers (one per core).
    let (done, finished) = mpsc::channel();
    for i in 1..=sleepers() {
        let done = done.clone();
        let user = format!("user{i}");
        std::thread::spawn(move || done.send(("sleeper", start_flow(addr, "sleeper", &user))));
    }
    std::thread::sleep(Duration::from_millis(200));
    // A well-behaved flow is answered while the sleepers are still asleep
    // (on the old code it waited for one of them to end, 10 s).
    let good = done.clone();
    std::thread::spawn(move || good.send(("good", start_flow(addr, "good", "user0"))));
    let first = finished.recv_timeout(Duration::from_secs(60)).unwrap();
    assert_eq!(first, ("good", 201));
    for _ in 0..sleepers() {
        let (which, _) = finished.recv_timeout(Duration::from_secs(60)).unwrap();
        assert_eq!(which, "sleeper");
    }
    start_flow(addr, "big-output", "user0");

    let logs = gw.wait_for_log("kind=output-too-large");
    let failed: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("plugin call failed"))
        .collect();
    assert_eq!(failed.len(), sleepers() + 1, "{logs}");
    for line in &failed[..sleepers()] {
        for part in [
            "plugin=hostile.wasm",
            "step=gates[0]",
            "flow=",
            "kind=timeout",
            "at its time limit of 1000 ms, while waiting in wasi:io/poll",
        ] {
            assert!(line.contains(part), "{part} missing in {line}");
        }
    }
    let (_, metrics) = gw.get("/metrics");
    let timeouts = "resetgate_plugin_call_failures_total{plugin=\"hostile\",kind=\"timeout\"}";
    let too_large =
        "resetgate_plugin_call_failures_total{plugin=\"hostile\",kind=\"output-too-large\"}";
    let slept = sleepers() as f64;
    assert_eq!(series(&metrics, timeouts), Some(slept), "{metrics}");
    assert_eq!(series(&metrics, too_large), Some(1.0), "{metrics}");

    // A reload loads every plugin again; the counters carry on.
    gw.signal("HUP");
    let reloaded = gw.wait_for_log("reloaded workflows");
    assert!(reloaded.contains("reloaded workflows"), "{reloaded}");
    let (_, metrics) = gw.get("/metrics");
    assert_eq!(series(&metrics, timeouts), Some(slept), "{metrics}");
    assert_eq!(series(&metrics, too_large), Some(1.0), "{metrics}");
}
