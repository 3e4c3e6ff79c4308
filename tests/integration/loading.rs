//! Loader bombs against the real binary: a small workflow file whose
//! positions used to cost memory by depth times size, read by `check` and
//! dropped into a running gateway's folder on `SIGHUP`; and a FIFO, which
//! must be refused without being opened (opening one for reading blocks).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use resetgate_tests::{Gateway, binary, write_config};

/// An 81 KB file: keys of a thousand `/` nested 60 deep, then a list of
/// 10,000 numbers. Each key's JSON pointer segment is 2,000 characters, so
/// a full pointer per node made 10,000 pointers of 120 KB (1.26 GB).
fn amplifier(dir: &Path) -> PathBuf {
    let mut text = String::from("version: 1\n");
    for depth in 0..60 {
        text.push_str(&" ".repeat(depth));
        text.push_str(&"/".repeat(1000));
        text.push_str(":\n");
    }
    text.push_str(&" ".repeat(60));
    text.push('[');
    text.push_str(&vec!["1"; 10_000].join(","));
    text.push_str("]\n");
    assert!(text.len() < 90_000, "{}", text.len());
    let path = dir.join("amplifier.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

/// A value in kB from `/proc/PID/status` (`VmRSS`, `VmHWM`).
fn status_kb(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Runs `command` to completion (killing it after `limit`), sampling its
/// peak resident memory (`VmHWM`) every few milliseconds. Returns whether
/// it finished in time, its stderr, and the peak in MB.
fn run_sampled(mut command: Command, limit: Duration) -> (bool, String, u64) {
    let mut child = command
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err_pipe = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut err_pipe, &mut s);
        s
    });
    let started = Instant::now();
    let mut peak_kb = 0;
    let finished = loop {
        if let Some(kb) = status_kb(child.id(), "VmHWM") {
            peak_kb = peak_kb.max(kb);
        }
        if child.try_wait().unwrap().is_some() {
            break true;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            break false;
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    (finished, reader.join().unwrap(), peak_kb / 1024)
}

#[test]
fn check_refuses_the_amplifier_in_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    let file = amplifier(dir.path());
    let mut command = Command::new(binary());
    command.arg("check").arg(&file).current_dir(dir.path());
    let (finished, err, peak_mb) = run_sampled(command, Duration::from_secs(60));
    assert!(finished, "check ran for a minute on an 81 KB file:\n{err}");
    assert!(
        err.contains("amplifier.yaml:2:1: error[unknown-field]: unknown field `//////"),
        "{err}"
    );
    assert!(
        peak_mb < 200,
        "check of an 81 KB file peaked at {peak_mb} MB of resident memory"
    );
}

#[test]
fn a_refused_amplifier_on_sighup_leaves_the_gateway_s_memory_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "");
    let gw = Gateway::start_config(&config, &[]);
    let pid = gw.pid();
    // Warm up what a reload allocates anyway (an empty folder's reload).
    gw.signal("HUP");
    gw.wait_for_log("reloaded workflows");
    let before = status_kb(pid, "VmRSS").unwrap();

    let amplifier = amplifier(dir.path());
    std::fs::rename(&amplifier, dir.path().join("workflows/amplifier.yaml")).unwrap();
    let seen = gw.logs().len();
    gw.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !gw.logs()[seen..].contains("reloaded workflows") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let logs = gw.logs();
    assert!(
        logs[seen..].contains("refused=1"),
        "the reload did not finish (or did not refuse the file) within a minute:\n{logs}"
    );
    assert!(logs.contains("error[unknown-field]"), "{logs}");

    let peak = status_kb(pid, "VmHWM").unwrap() / 1024;
    let after = status_kb(pid, "VmRSS").unwrap();
    assert!(
        peak < 200,
        "the gateway peaked at {peak} MB reloading an 81 KB file"
    );
    let grew = after.saturating_sub(before) / 1024;
    assert!(
        grew < 32,
        "the gateway kept {grew} MB more after refusing the file ({} MB before, {} MB after)",
        before / 1024,
        after / 1024
    );
    // Still serving.
    assert_eq!(gw.get("/healthz").0, 200);
}

#[test]
fn a_fifo_is_refused_without_blocking() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("workflow.yaml");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());

    // As a workflow, and as the gateway config: nobody ever writes to the
    // FIFO, so opening it for reading would block for good.
    for args in [
        vec!["check".to_owned(), fifo.display().to_string()],
        vec![
            "check".to_owned(),
            "--config".to_owned(),
            fifo.display().to_string(),
        ],
    ] {
        let mut command = Command::new(binary());
        command.args(&args).current_dir(dir.path());
        let (finished, err, _) = run_sampled(command, Duration::from_secs(20));
        assert!(finished, "`resetgate {}` blocked on a FIFO", args.join(" "));
        assert!(
            err.contains(&format!(
                "{}:1:1: error[io]: {} is not a regular file",
                fifo.display(),
                fifo.display()
            )),
            "{err}"
        );
    }
}
