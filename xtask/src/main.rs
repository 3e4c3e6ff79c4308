//! Build and test orchestration: `cargo xtask run`, `cargo xtask test`,
//! `cargo xtask plugins`, `cargo xtask bench`.
//!
//! The wasm plugins are a workspace of their own (`plugins/`) built for
//! `wasm32-wasip2`; xtask makes sure the target is installed, builds them,
//! and copies each component to `target/plugins/<crate-name>.wasm`.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

const USAGE: &str = "usage: cargo xtask <command>

commands:
  run [ARGS...]   build the plugins and the gateway, add the demo user if there
                  are no local users yet, then `resetgate serve ARGS...`
  test [ARGS...]  everything the test suite needs, then the whole suite
  plugins         build the first-party plugins into target/plugins/
  root            print the checkout xtask works on (found when it runs)
  js-gate         build the JavaScript test gate (tests/js-gate) into
                  target/js-gate/ if it is missing or older than its sources
  bench           run the criterion benchmarks (release), then `coldstart`
  coldstart       time `resetgate serve` (release) from spawn to a healthy answer
  loadtest [ARGS] complete resets against the release binary over loopback, with
                  the hello-world baseline (tests/bin/load.rs; ARGS: --flows N
                  --seconds S --tls --flood --enumeration[-only]; --directories[-only]
                  [--rounds R] [--users N]: ldap-directory + one-time-code against a
                  slapd it starts, alternating with local-users + attribute-gate;
                  --stores [--rounds R] [--gateways 3] [--pool 8]: sled beside one,
                  two and three gateways on one PostgreSQL it starts;
                  --export[-only] [--rounds R] [--records N]: resets with and
                  without an auditor exporting the whole audit log beside them)";

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let command = args.next().unwrap_or_default();
    // `cargo xtask run -- --listen ...`: the `--` is cargo's habit, not an argument.
    let rest: Vec<String> = args.skip_while(|a| a == "--").collect();
    let root = root()?;
    match command.as_str() {
        "run" => run(&root, &rest),
        "test" => test(&root, &rest),
        "plugins" => plugins(&root).map(|_| ()),
        "root" => {
            println!("{}", root.display());
            Ok(())
        }
        "js-gate" => js_gate(&root).map(|_| ()),
        "bench" => bench(&root, &rest),
        "coldstart" => coldstart(&root),
        "loadtest" => loadtest(&root, &rest),
        _ => {
            eprintln!("{USAGE}");
            if command.is_empty() || command == "help" || command == "--help" {
                Ok(())
            } else {
                bail!("unknown command {command:?}")
            }
        }
    }
}

/// The checkout xtask works on, found when it runs, never where it was
/// built: a checkout that was moved or copied (with its `target/`) keeps
/// a fresh xtask binary, and a path compiled into it (`env!`) would build,
/// seed and serve the old checkout's plugins and workflows.
fn root() -> anyhow::Result<PathBuf> {
    let cwd = std::env::current_dir().context("cannot tell the working folder")?;
    find_root(
        std::env::var_os("CARGO_MANIFEST_DIR").map(PathBuf::from),
        &cwd,
    )
}

/// `manifest_dir`: `CARGO_MANIFEST_DIR` as `cargo run` (so `cargo xtask`)
/// sets it when it starts xtask, this checkout's `xtask/`; without it
/// (the binary run directly), the nearest folder from `cwd` upwards that
/// holds `Cargo.toml` and `xtask/Cargo.toml`.
fn find_root(manifest_dir: Option<PathBuf>, cwd: &Path) -> anyhow::Result<PathBuf> {
    let is_root =
        |dir: &Path| dir.join("Cargo.toml").is_file() && dir.join("xtask/Cargo.toml").is_file();
    if let Some(dir) = manifest_dir
        && let Some(root) = dir.parent()
        && is_root(root)
    {
        return Ok(root.to_owned());
    }
    cwd.ancestors()
        .find(|dir| is_root(dir))
        .map(Path::to_owned)
        .with_context(|| {
            format!(
                "{} is not inside a resetgate checkout (no Cargo.toml beside xtask/ here or above); \
                 run `cargo xtask` from the checkout",
                cwd.display()
            )
        })
}

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

fn status(cmd: &mut Command) -> anyhow::Result<()> {
    let shown = format!("{cmd:?}");
    let st = cmd
        .status()
        .with_context(|| format!("cannot run {shown}"))?;
    if !st.success() {
        bail!("{shown} failed with {st}");
    }
    Ok(())
}

/// Installs the wasm32-wasip2 target if the toolchain lacks it.
fn ensure_wasm_target(root: &Path) -> anyhow::Result<()> {
    let out = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .current_dir(root)
        .output();
    match out {
        Ok(out)
            if String::from_utf8_lossy(&out.stdout)
                .lines()
                .any(|l| l.trim() == "wasm32-wasip2") =>
        {
            Ok(())
        }
        Ok(_) => status(
            Command::new("rustup")
                .args(["target", "add", "wasm32-wasip2"])
                .current_dir(root),
        ),
        Err(_) => {
            eprintln!("xtask: rustup not found; assuming the wasm32-wasip2 target is installed");
            Ok(())
        }
    }
}

/// Builds the first-party plugins and copies them to target/plugins/.
fn plugins(root: &Path) -> anyhow::Result<PathBuf> {
    ensure_wasm_target(root)?;
    let dir = root.join("plugins");
    status(
        cargo()
            .args(["build", "--release", "--quiet"])
            .current_dir(&dir)
            .env_remove("CARGO_TARGET_DIR"),
    )?;
    let built = root.join("target/wasm/wasm32-wasip2/release");
    let out = root.join("target/plugins");
    std::fs::create_dir_all(&out)?;
    let mut count = 0;
    for entry in std::fs::read_dir(&dir)? {
        let entry = entry?;
        if !entry.path().join("Cargo.toml").exists() {
            continue;
        }
        let name = entry.file_name().to_string_lossy().into_owned();
        let from = built.join(format!("{}.wasm", name.replace('-', "_")));
        std::fs::copy(&from, out.join(format!("{name}.wasm")))
            .with_context(|| format!("copy {}", from.display()))?;
        count += 1;
    }
    eprintln!("xtask: {count} plugins in {}", out.display());
    Ok(out)
}

/// Where `js-gate` puts the JavaScript test gate; `tests/integration/languages.rs` loads it from here.
const JS_GATE: &str = "target/js-gate/phone-digits.wasm";

/// Node.js majors older than this cannot run componentize-js (its parser,
/// `oxc-parser`, needs Node 20).
const NODE_MIN_MAJOR: u32 = 20;

/// The modification time of `path`, if it exists.
fn modified(path: &Path) -> Option<std::time::SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// Builds the JavaScript gate in `tests/js-gate/` into [`JS_GATE`] when the
/// component is missing or older than its sources: `npm ci` from the lock
/// file (when `node_modules` is missing or older than the lock file), then
/// `node build.mjs`, which runs componentize-js. Needs Node.js 20 or newer
/// and npm (`.ci/run` installs them).
fn js_gate(root: &Path) -> anyhow::Result<PathBuf> {
    let dir = root.join("tests/js-gate");
    let out = root.join(JS_GATE);
    let sources = [
        dir.join("gate.js"),
        dir.join("build.mjs"),
        dir.join("package-lock.json"),
        root.join("plugin-sdk/wit/plugin.wit"),
    ];
    let newest = sources.iter().filter_map(|p| modified(p)).max();
    if let (Some(built), Some(newest)) = (modified(&out), newest)
        && built >= newest
    {
        return Ok(out);
    }
    let version = Command::new("node").arg("--version").output();
    let version = match version {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).trim().to_owned(),
        _ => bail!(
            "building {} needs Node.js {NODE_MIN_MAJOR} or newer and npm, and `node` is not on the PATH; \
             install them (`.ci/run` shows how) or put a built component there",
            out.display()
        ),
    };
    let major: u32 = version
        .trim_start_matches('v')
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or(0);
    if major < NODE_MIN_MAJOR {
        bail!(
            "building {} needs Node.js {NODE_MIN_MAJOR} or newer; `node` is {version} (`.ci/run` shows how to get a newer one)",
            out.display()
        );
    }
    let installed = dir.join("node_modules/.package-lock.json");
    if modified(&installed) < modified(&dir.join("package-lock.json")) {
        status(
            Command::new("npm")
                .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
                .current_dir(&dir),
        )?;
    }
    if let Some(parent) = out.parent() {
        std::fs::create_dir_all(parent)?;
        // The tests' shared plugin cache (tests/integration/languages.rs)
        // holds 37 MB per build of the gate; a new build makes it stale.
        let _ = std::fs::remove_dir_all(parent.join("plugin-cache"));
    }
    status(
        Command::new("node")
            .arg("build.mjs")
            .arg(&out)
            .current_dir(&dir),
    )?;
    Ok(out)
}

/// The user `cargo xtask run` adds for the demo workflow, and the employee
/// id the person types at its gate.
const DEMO_USER: &str = "demo";
const DEMO_EMPLOYEE_ID: &str = "12345";

/// The value of `--flag VALUE` or `--flag=VALUE` in `args`, the last one given.
fn flag_value(args: &[String], flag: &str) -> Option<String> {
    let mut found = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == flag {
            found = it.next().cloned();
        } else if let Some(v) = a.strip_prefix(flag).and_then(|r| r.strip_prefix('=')) {
            found = Some(v.to_owned());
        }
    }
    found
}

/// Adds the demo user (`workflows/demo.yaml`) to the data folder `serve`
/// will use, if it has no local users yet, and tells the person how to try
/// the demo. The password is random and never shown: a reset is the way in.
fn seed_demo_user(bin: &Path, root: &Path, args: &[String]) -> anyhow::Result<()> {
    // `users` reads the same `--config` / `--data-dir` (and environment) as `serve`.
    let mut store_args = Vec::new();
    for flag in ["--config", "--data-dir"] {
        if let Some(v) = flag_value(args, flag) {
            store_args.push(flag.to_owned());
            store_args.push(v);
        }
    }
    let list = Command::new(bin)
        .args(["users", "list", "--json"])
        .args(&store_args)
        .current_dir(root)
        .output()
        .context("cannot run `resetgate users list`")?;
    if !list.status.success() {
        bail!(
            "`resetgate users list` failed: {}",
            String::from_utf8_lossy(&list.stderr).trim()
        );
    }
    let users: Vec<serde_json::Value> = serde_json::from_slice(&list.stdout)
        .context("`resetgate users list --json` printed something else than JSON")?;
    let mut employee_id = users
        .iter()
        .find(|u| u["name"] == DEMO_USER)
        .map(|u| u["attributes"]["employee_id"].as_str().map(str::to_owned));
    if users.is_empty() {
        status(
            Command::new(bin)
                .args(["users", "add", DEMO_USER, "--random-password"])
                .arg("--attr")
                .arg(format!("employee_id={DEMO_EMPLOYEE_ID}"))
                .args(&store_args)
                .current_dir(root),
        )?;
        employee_id = Some(Some(DEMO_EMPLOYEE_ID.to_owned()));
    }
    if let Some(Some(id)) = employee_id {
        let listen = flag_value(args, "--listen")
            .or_else(|| std::env::var("RESETGATE_LISTEN").ok())
            .unwrap_or_else(|| "127.0.0.1:8080".to_owned());
        eprintln!(
            "xtask: try it: open http://{listen}/, choose the workflow `demo`, type the user name `{DEMO_USER}` and the employee id `{id}`, then choose a new password"
        );
    }
    Ok(())
}

fn run(root: &Path, args: &[String]) -> anyhow::Result<()> {
    let plugins_dir = plugins(root)?;
    status(
        cargo()
            .args(["build", "--quiet", "-p", "resetgate", "--bin", "resetgate"])
            .current_dir(root),
    )?;
    let bin = root.join("target/debug/resetgate");
    seed_demo_user(&bin, root, args)?;
    let mut cmd = Command::new(&bin);
    cmd.arg("serve")
        .current_dir(root)
        .env("RESETGATE_PLUGINS", &plugins_dir);
    cmd.args(args);
    status(&mut cmd)
}

/// The SDK must never depend on wasmtime or the gateway.
fn check_sdk_deps(root: &Path) -> anyhow::Result<()> {
    let out = cargo()
        .args([
            "tree",
            "-p",
            "resetgate-plugin-sdk",
            "-e",
            "normal,build",
            "--prefix",
            "none",
            "--quiet",
        ])
        .current_dir(root)
        .output()
        .context("cargo tree")?;
    if !out.status.success() {
        bail!(
            "cargo tree failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let tree = String::from_utf8_lossy(&out.stdout);
    for line in tree.lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        if name.starts_with("wasmtime") || name == "resetgate" {
            bail!("resetgate-plugin-sdk depends on {name}; the SDK must stay free of the host");
        }
    }
    eprintln!("xtask: resetgate-plugin-sdk depends on neither wasmtime nor the gateway");
    Ok(())
}

fn test(root: &Path, args: &[String]) -> anyhow::Result<()> {
    plugins(root)?;
    js_gate(root)?;
    check_sdk_deps(root)?;
    // The end-to-end tests start the real binary.
    status(
        cargo()
            .args(["build", "--quiet", "-p", "resetgate", "--bin", "resetgate"])
            .current_dir(root),
    )?;
    let nextest = cargo()
        .args(["nextest", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if nextest {
        // nextest does not run doctests; run them first so that the suite's
        // closing summary is nextest's.
        status(
            cargo()
                .args(["test", "--workspace", "--doc", "--quiet"])
                .current_dir(root),
        )?;
        status(
            cargo()
                .args(["nextest", "run", "--workspace", "--no-fail-fast"])
                .args(args)
                .current_dir(root),
        )
    } else {
        status(
            cargo()
                .args(["test", "--workspace", "--no-fail-fast"])
                .args(args)
                .current_dir(root),
        )
    }
}

fn bench(root: &Path, args: &[String]) -> anyhow::Result<()> {
    plugins(root)?;
    status(
        cargo()
            .args(["bench", "-p", "resetgate"])
            .args(args)
            .current_dir(root),
    )?;
    coldstart(root)
}

/// Builds the release `resetgate` binary; its path.
fn release_binary(root: &Path) -> anyhow::Result<PathBuf> {
    status(
        cargo()
            .args([
                "build",
                "--quiet",
                "--release",
                "-p",
                "resetgate",
                "--bin",
                "resetgate",
            ])
            .current_dir(root),
    )?;
    Ok(root.join("target/release/resetgate"))
}

/// Builds the release binary and runs the load client against it.
fn loadtest(root: &Path, args: &[String]) -> anyhow::Result<()> {
    let binary = release_binary(root)?;
    status(
        cargo()
            .args([
                "run",
                "--release",
                "-p",
                "resetgate-tests",
                "--bin",
                "load",
                "--",
            ])
            .args(args)
            .env("RESETGATE_BINARY", binary)
            .current_dir(root),
    )
}

/// Starts the release binary 21 times on one data folder (the first start
/// compiles the plugins, the others load them from the cache) and reports
/// the time from spawn to the first healthy `GET /healthz`.
fn coldstart(root: &Path) -> anyhow::Result<()> {
    use std::io::{Read, Write};
    use std::time::{Duration, Instant};
    let plugins_dir = plugins(root)?;
    let binary = release_binary(root)?;
    let data = std::env::temp_dir().join(format!("resetgate-coldstart-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    let addr: std::net::SocketAddr = "127.0.0.1:18099".parse()?;
    let healthy = || -> bool {
        let Ok(mut s) = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(50))
        else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
        if s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .is_err()
        {
            return false;
        }
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out.starts_with("HTTP/1.1 200")
    };
    let mut times = Vec::new();
    for _ in 0..21 {
        let started = Instant::now();
        let mut child = Command::new(&binary)
            .args(["serve", "--listen", &addr.to_string()])
            .arg("--data-dir")
            .arg(&data)
            .arg("--plugins")
            .arg(&plugins_dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()?;
        while !healthy() {
            if started.elapsed() > Duration::from_secs(30) {
                let _ = child.kill();
                bail!("resetgate did not become healthy within 30 s");
            }
            std::thread::sleep(Duration::from_micros(500));
        }
        times.push(started.elapsed());
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        child.wait()?;
    }
    let first = times.remove(0);
    times.sort();
    eprintln!(
        "coldstart: first start (compiles the plugins) {:.1} ms; cached: median {:.1} ms, min {:.1}, max {:.1} ({} runs)",
        first.as_secs_f64() * 1e3,
        times[times.len() / 2].as_secs_f64() * 1e3,
        times[0].as_secs_f64() * 1e3,
        times[times.len() - 1].as_secs_f64() * 1e3,
        times.len()
    );
    let _ = std::fs::remove_dir_all(&data);
    Ok(())
}
