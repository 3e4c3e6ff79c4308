//! Builds the wasm plugins the tests load: the first-party ones in
//! `plugins/` and the test suite's own (hostile ones included) in
//! `tests/plugins/`, and tells the tests where they are.

#![allow(clippy::panic)] // a build script reports failure by panicking

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default());
    let root = manifest.parent().unwrap_or(&manifest).to_owned();
    for dir in [
        "plugin-sdk/src",
        "plugin-sdk/wit",
        "plugin-sdk/Cargo.toml",
        "plugins",
        "tests/plugins",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(dir).display());
    }
    build(&root.join("plugins"));
    build(&root.join("tests/plugins"));
    let out = root.join("target/wasm/wasm32-wasip2/release");
    println!("cargo:rustc-env=RESETGATE_TEST_WASM_DIR={}", out.display());
    println!(
        "cargo:rustc-env=RESETGATE_WORKSPACE_ROOT={}",
        root.display()
    );
}

/// Runs `cargo build --release` in a wasm workspace, with none of the outer
/// build's settings leaking in (its target dir, flags or profile).
fn build(dir: &Path) {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--release", "--quiet"]).current_dir(dir);
    for (key, _) in std::env::vars() {
        let inherited =
            key.starts_with("CARGO_") && key != "CARGO_HOME" && key != "CARGO_MAKEFLAGS";
        let flags = matches!(
            key.as_str(),
            "RUSTFLAGS"
                | "RUSTC"
                | "RUSTC_WRAPPER"
                | "RUSTC_WORKSPACE_WRAPPER"
                | "RUSTDOC"
                | "TARGET"
                | "HOST"
                | "PROFILE"
                | "OPT_LEVEL"
                | "DEBUG"
                | "OUT_DIR"
                | "NUM_JOBS"
                | "RUSTC_LINKER"
        );
        if inherited || flags {
            cmd.env_remove(key);
        }
    }
    let status = cmd.status();
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => panic!(
            "building the wasm plugins in {} failed ({s}); is the wasm32-wasip2 target installed? \
             `rustup target add wasm32-wasip2`, or run `cargo xtask test`",
            dir.display()
        ),
        Err(e) => panic!("cannot run cargo to build {}: {e}", dir.display()),
    }
}
