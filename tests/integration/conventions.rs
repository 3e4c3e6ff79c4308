//! The command line's conventions, on the real binary: shell completions
//! and the manual page, `-v`/`-q` (and `RESETGATE_LOG` over them),
//! `plugin list`, `--config` on every subcommand that reads state, and
//! error texts that are printed once.

use std::collections::BTreeSet;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use resetgate_tests::{FIRST_PARTY, binary, root, run_cli, run_cli_env, sha256_of, wasm};

fn plugins_dir() -> tempfile::TempDir {
    let plugins = tempfile::tempdir().unwrap();
    for name in FIRST_PARTY {
        std::fs::copy(wasm(name), plugins.path().join(format!("{name}.wasm"))).unwrap();
    }
    plugins
}

#[test]
fn bash_completion_completes_subcommands_and_flags() {
    let (ok, script, err) = run_cli(&["completions", "bash"]);
    assert!(ok, "{err}");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("resetgate.bash");
    std::fs::write(&file, &script).unwrap();
    // Loaded into bash and asked, as the shell asks at a Tab.
    let complete = |words: &str| -> String {
        let words_array: Vec<String> = words.split(' ').map(|w| format!("'{w}'")).collect();
        let cword = words.split(' ').count() - 1;
        let probe = format!(
            "source '{}'; COMP_WORDS=({}); COMP_CWORD={cword}; COMP_LINE='{words}'; COMP_POINT=${{#COMP_LINE}}; \
             _resetgate resetgate \"${{COMP_WORDS[COMP_CWORD]}}\" \"${{COMP_WORDS[COMP_CWORD-1]}}\"; \
             printf '%s\\n' \"${{COMPREPLY[@]}}\"",
            file.display(),
            words_array.join(" ")
        );
        let out = Command::new("bash").args(["-c", &probe]).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let top = complete("resetgate se");
    assert_eq!(top.trim(), "serve", "{top}");
    let flags = complete("resetgate serve --log");
    assert!(flags.lines().any(|l| l == "--log-format"), "{flags}");
    let plugin = complete("resetgate plugin ");
    for sub in ["inspect", "list"] {
        assert!(plugin.lines().any(|l| l == sub), "{plugin}");
    }
}

#[test]
fn zsh_and_fish_completions_name_every_subcommand() {
    for shell in ["zsh", "fish"] {
        let (ok, script, err) = run_cli(&["completions", shell]);
        assert!(ok, "{err}");
        for sub in [
            "serve",
            "check",
            "plugin",
            "store",
            "backup",
            "restore",
            "audit",
            "users",
            "admin",
            "api-key",
            "completions",
            "man",
        ] {
            assert!(script.contains(sub), "{shell} lacks {sub}");
        }
    }
    let (ok, _, err) = run_cli(&["completions", "tcsh"]);
    assert!(!ok);
    assert!(err.contains("tcsh"), "{err}");
}

#[test]
fn man_prints_the_page_and_writes_one_per_command() {
    let (ok, page, err) = run_cli(&["man"]);
    assert!(ok, "{err}");
    assert!(page.contains(".TH resetgate 1"), "{page}");
    for section in [".SH NAME", ".SH SYNOPSIS", ".SH OPTIONS", ".SH SUBCOMMANDS"] {
        assert!(page.contains(section), "{section} missing");
    }
    assert!(page.contains("resetgate\\-serve"), "{page}");
    assert!(page.contains("\\-\\-verbose"), "{page}");
    let dir = tempfile::tempdir().unwrap();
    let (ok, _, err) = run_cli(&["man", "--dir", &dir.path().to_string_lossy()]);
    assert!(ok, "{err}");
    for name in [
        "resetgate.1",
        "resetgate-serve.1",
        "resetgate-plugin-list.1",
        "resetgate-admin-lockout-clear.1",
    ] {
        let text = std::fs::read_to_string(dir.path().join(name))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(text.contains(".TH "), "{name}");
    }
}

/// Runs `resetgate ARGS serve` on a config in `dir` until it is ready
/// (told on a notify socket, as systemd is told: `-q` silences the
/// `listening` line), asks `/healthz` once, stops it; its stderr.
fn serve_log(dir: &Path, global: &[&str], env: &[(&str, &str)]) -> String {
    let config = resetgate_tests::write_config(dir, "");
    let sock_path = dir.join(format!("notify-{}.sock", global.join("")));
    let _ = std::fs::remove_file(&sock_path);
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut command = Command::new(binary());
    command
        .args(global)
        .arg("serve")
        .arg("--config")
        .arg(&config)
        .env_remove("RESETGATE_LOG")
        .env("NOTIFY_SOCKET", &sock_path)
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let child = command.spawn().unwrap();
    let mut buf = [0u8; 1024];
    let n = sock.recv(&mut buf).expect("not ready within 60 s");
    let text = String::from_utf8_lossy(&buf[..n]).into_owned();
    let addr = text
        .lines()
        .find_map(|l| l.strip_prefix("STATUS=listening on http://"))
        .unwrap()
        .to_owned();
    {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        write!(
            s,
            "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    }
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn levels(log: &str) -> BTreeSet<&'static str> {
    ["TRACE", "DEBUG", " INFO", " WARN", "ERROR"]
        .into_iter()
        .filter(|l| log.contains(&format!("{l} ")))
        .map(str::trim_start)
        .collect()
}

#[test]
fn verbose_and_quiet_set_the_log_level_and_resetgate_log_wins() {
    let dir = tempfile::tempdir().unwrap();
    let normal = serve_log(dir.path(), &[], &[]);
    assert!(levels(&normal).contains("INFO"), "{normal}");
    assert!(!levels(&normal).contains("DEBUG"), "{normal}");
    assert!(normal.contains(" listening url="), "{normal}");

    let verbose = serve_log(dir.path(), &["-v"], &[]);
    assert!(levels(&verbose).contains("DEBUG"), "{verbose}");
    assert!(!levels(&verbose).contains("TRACE"), "{verbose}");

    let quiet = serve_log(dir.path(), &["-q"], &[]);
    assert!(!levels(&quiet).contains("INFO"), "{quiet}");
    assert!(!quiet.contains("listening"), "{quiet}");

    // The environment (a unit's `Environment=RESETGATE_LOG=...`) decides
    // over the flags.
    let env_wins = serve_log(dir.path(), &["-q"], &[("RESETGATE_LOG", "info")]);
    assert!(env_wins.contains(" listening url="), "{env_wins}");

    let (ok, _, err) = run_cli(&["-v", "-q", "check"]);
    assert!(!ok);
    assert!(err.contains("cannot be used with"), "{err}");
}

#[test]
fn plugin_list_shows_what_the_workflows_use_offline() {
    let plugins = plugins_dir();
    // The demo workflow (compiling every example's plugins in memory
    // takes a while in a debug build).
    let demo = tempfile::tempdir().unwrap();
    for file in ["demo.yaml", "blocklist.txt"] {
        std::fs::copy(root().join("workflows").join(file), demo.path().join(file)).unwrap();
    }
    let workflows = demo.path().to_owned();
    let args = |json: bool| {
        let mut a = vec![
            "plugin".to_owned(),
            "list".to_owned(),
            "--plugins".to_owned(),
            plugins.path().to_string_lossy().into_owned(),
            "--workflows".to_owned(),
            workflows.to_string_lossy().into_owned(),
        ];
        if json {
            a.push("--json".to_owned());
        }
        a
    };
    let json_args = args(true);
    let json_args: Vec<&str> = json_args.iter().map(String::as_str).collect();
    let (ok, out, err) = run_cli(&json_args);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let list = v["plugins"].as_array().unwrap();
    let names: Vec<&str> = list.iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert!(names.is_sorted(), "{names:?}");
    let local = list.iter().find(|p| p["name"] == "local-users").unwrap();
    let file = plugins.path().join("local-users.wasm");
    assert_eq!(local["file"], file.to_string_lossy().as_ref());
    assert_eq!(local["sha256"], sha256_of(&file));
    assert_eq!(local["kind"], "directory");
    assert!(!local["version"].as_str().unwrap().is_empty());
    let steps = local["steps"].as_array().unwrap();
    let demo = steps
        .iter()
        .find(|s| s["workflow"] == "demo")
        .expect("demo uses local-users");
    assert_eq!(demo["grants"]["kv"], true, "{demo}");
    // Offline there are no call counts to show.
    assert!(local.get("calls").is_none());

    let text_args = args(false);
    let text_args: Vec<&str> = text_args.iter().map(String::as_str).collect();
    let (ok, text, err) = run_cli(&text_args);
    assert!(ok, "{err}");
    assert!(text.contains("local-users (directory "), "{text}");
    assert!(
        text.contains(&format!("sha256:  {}", sha256_of(&file))),
        "{text}"
    );
    assert!(
        text.contains("used by: demo directory (grants: kv)"),
        "{text}"
    );

    // A broken workflow: the others' plugins are listed, the status says so.
    let broken = tempfile::tempdir().unwrap();
    for file in ["demo.yaml", "blocklist.txt"] {
        std::fs::copy(workflows.join(file), broken.path().join(file)).unwrap();
    }
    std::fs::write(broken.path().join("bad.yaml"), "version: [\n").unwrap();
    let (ok, out, err) = run_cli(&[
        "plugin",
        "list",
        "--plugins",
        &plugins.path().to_string_lossy(),
        "--workflows",
        &broken.path().to_string_lossy(),
    ]);
    assert!(!ok);
    assert!(out.contains("local-users"), "{out}");
    assert!(err.contains("bad.yaml has errors"), "{err}");
}

/// A config whose second line is wrong.
fn broken_config(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("broken.yaml");
    std::fs::write(&path, "version: 1\nno_such_setting: true\n").unwrap();
    path
}

#[test]
fn every_subcommand_that_reads_state_takes_config() {
    let dir = tempfile::tempdir().unwrap();
    let broken = broken_config(dir.path());
    let broken = broken.to_string_lossy();
    let backup = dir.path().join("backup.jsonl");
    let backup = backup.to_string_lossy();
    // `restore` opens its file first.
    let some_file = dir.path().join("some.jsonl");
    std::fs::write(&some_file, "").unwrap();
    let some_file = some_file.to_string_lossy();
    let commands: Vec<Vec<&str>> = vec![
        vec!["store", "migrate"],
        vec!["store", "check"],
        vec!["backup", "--to", &backup],
        vec!["restore", "--from", &some_file],
        vec!["audit", "verify"],
        vec!["users", "list"],
        vec!["users", "add", "ann", "--random-password"],
        vec!["plugin", "list"],
        vec!["check"],
        vec!["serve"],
    ];
    for command in &commands {
        let mut args = command.clone();
        args.extend(["--config", &broken]);
        let (ok, _, err) = run_cli(&args);
        assert!(!ok, "{command:?} ignored a broken config");
        assert!(
            err.contains(&format!("{broken}:2:1")),
            "{command:?} did not read the config:\n{err}"
        );
    }

    // And with a good one, each works on the config's data folder
    // (relative to the config file).
    let config = dir.path().join("gateway.yaml");
    std::fs::write(&config, "version: 1\ndata_dir: state\n").unwrap();
    let config = config.to_string_lossy();
    let (ok, _, err) = run_cli(&[
        "users",
        "add",
        "ann",
        "--random-password",
        "--config",
        &config,
    ]);
    assert!(ok, "{err}");
    assert!(dir.path().join("state/db").exists());
    let (ok, out, err) = run_cli(&["store", "check", "--config", &config]);
    assert!(ok, "{err}");
    assert!(
        out.contains(&*dir.path().join("state").to_string_lossy()),
        "{out}"
    );
    let (ok, _, err) = run_cli(&["audit", "verify", "--config", &config]);
    assert!(ok, "{err}");
    let (ok, _, err) = run_cli(&["backup", "--to", &backup, "--config", &config]);
    assert!(ok, "{err}");
    let restored = dir.path().join("restored.yaml");
    std::fs::write(&restored, "version: 1\ndata_dir: restored\n").unwrap();
    let (ok, _, err) = run_cli(&[
        "restore",
        "--from",
        &backup,
        "--config",
        &restored.to_string_lossy(),
    ]);
    assert!(ok, "{err}");
    let (ok, out, err) = run_cli(&["users", "list", "--config", &restored.to_string_lossy()]);
    assert!(ok, "{err}");
    assert!(out.contains("ann"), "{out}");
}

/// Failing commands print each message once: no line twice, and no cause
/// repeated inside a line (`cannot read X: No such file: No such file`).
#[test]
fn failing_commands_print_each_message_once() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let broken = broken_config(d);
    let missing_cert = d.join("tls.yaml");
    std::fs::write(
        &missing_cert,
        format!(
            "version: 1\nlisten: \"127.0.0.1:0\"\ndata_dir: {:?}\ntls:\n  cert: {:?}\n  key: {:?}\n",
            d.join("data"),
            d.join("missing.crt"),
            d.join("missing.key")
        ),
    )
    .unwrap();
    let bad_workflows = d.join("workflows");
    std::fs::create_dir_all(&bad_workflows).unwrap();
    std::fs::write(bad_workflows.join("bad.yaml"), "version: [\n").unwrap();
    let existing = d.join("exists.jsonl");
    std::fs::write(&existing, "").unwrap();
    let s = |p: &Path| p.to_string_lossy().into_owned();
    let cases: Vec<Vec<String>> = vec![
        vec![
            "plugin".into(),
            "inspect".into(),
            s(&d.join("missing.wasm")),
        ],
        vec!["serve".into(), "--config".into(), s(&missing_cert)],
        vec!["serve".into(), "--config".into(), s(&broken)],
        vec![
            "serve".into(),
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--data-dir".into(),
            s(&d.join("data2")),
            "--plugins".into(),
            s(d),
            "--workflows".into(),
            s(&bad_workflows),
        ],
        vec!["check".into(), s(&bad_workflows)],
        vec!["users".into(), "list".into(), "--config".into(), s(&broken)],
        vec![
            "users".into(),
            "remove".into(),
            "nobody".into(),
            "--data-dir".into(),
            s(&d.join("data3")),
        ],
        vec![
            "backup".into(),
            "--to".into(),
            s(&existing),
            "--data-dir".into(),
            s(&d.join("none")),
        ],
        vec![
            "restore".into(),
            "--from".into(),
            s(&d.join("missing.jsonl")),
            "--data-dir".into(),
            s(&d.join("r")),
        ],
        vec![
            "store".into(),
            "check".into(),
            "--data-dir".into(),
            s(&d.join("none")),
        ],
        vec!["api-key".into(), "new".into(), "Not A Name".into()],
        vec![
            "plugin".into(),
            "list".into(),
            "--workflows".into(),
            s(&bad_workflows),
            "--plugins".into(),
            s(d),
        ],
        vec![
            "admin".into(),
            "--url".into(),
            "http://127.0.0.1:9".into(),
            "--key".into(),
            "k".into(),
            "whoami".into(),
        ],
    ];
    for args in &cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (ok, _, err) = run_cli_env(&args, &[("RESETGATE_LOG", std::ffi::OsStr::new("info"))]);
        assert!(!ok, "{args:?} succeeded");
        assert!(!err.trim().is_empty(), "{args:?} printed nothing");
        let mut seen = BTreeSet::new();
        for line in err.lines().filter(|l| !l.trim().is_empty()) {
            // Log lines differ by their timestamp; compare what they say.
            let message = line
                .split_once("Z ")
                .filter(|(t, _)| t.starts_with("20"))
                .map_or(line, |(_, m)| m);
            assert!(
                seen.insert(message),
                "{args:?} printed twice: {message}\n{err}"
            );
            let parts: Vec<&str> = message.split(": ").filter(|p| p.len() > 8).collect();
            let distinct: BTreeSet<&str> = parts.iter().copied().collect();
            assert_eq!(
                parts.len(),
                distinct.len(),
                "{args:?} repeats a cause: {message}"
            );
        }
    }
}
