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
  run [ARGS...]   build the plugins and the gateway, then `resetgate serve ARGS...`
  test [ARGS...]  everything the test suite needs, then the whole suite
  plugins         build the first-party plugins into target/plugins/
  bench           run the criterion benchmarks (release)";

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let command = args.next().unwrap_or_default();
    let rest: Vec<String> = args.collect();
    let root = root()?;
    match command.as_str() {
        "run" => run(&root, &rest),
        "test" => test(&root, &rest),
        "plugins" => plugins(&root).map(|_| ()),
        "bench" => bench(&root, &rest),
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

fn root() -> anyhow::Result<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    Ok(dir
        .parent()
        .context("xtask lives in the workspace root")?
        .to_owned())
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

fn run(root: &Path, args: &[String]) -> anyhow::Result<()> {
    let plugins_dir = plugins(root)?;
    status(
        cargo()
            .args(["build", "--quiet", "-p", "resetgate", "--bin", "resetgate"])
            .current_dir(root),
    )?;
    let mut cmd = Command::new(root.join("target/debug/resetgate"));
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
        status(
            cargo()
                .args(["nextest", "run", "--workspace", "--no-fail-fast"])
                .args(args)
                .current_dir(root),
        )?;
        // nextest does not run doctests.
        status(
            cargo()
                .args(["test", "--workspace", "--doc", "--quiet"])
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
    )
}
