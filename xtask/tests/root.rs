//! `cargo xtask` works on the checkout it runs in, never on the one it was
//! built in: a moved or copied checkout keeps its xtask binary fresh, and
//! a path compiled into it would serve the old checkout's plugins.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// The checkout this xtask binary was built in.
fn built_in() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

/// A folder that looks like a checkout: `Cargo.toml` beside `xtask/`.
fn fake_checkout() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("Cargo.toml"), "[workspace]\n").unwrap();
    std::fs::create_dir_all(dir.path().join("xtask")).unwrap();
    std::fs::write(dir.path().join("xtask/Cargo.toml"), "[package]\n").unwrap();
    std::fs::create_dir_all(dir.path().join("target/plugins")).unwrap();
    dir
}

/// `xtask root` run in `cwd`, with `CARGO_MANIFEST_DIR` as given
/// (`cargo xtask` sets it to the running checkout's `xtask/`).
fn xtask_root(cwd: &Path, manifest_dir: Option<&Path>) -> (bool, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_xtask"));
    // No backtrace: it would name this crate's source files.
    cmd.arg("root")
        .current_dir(cwd)
        .env_remove("CARGO_MANIFEST_DIR")
        .env("RUST_BACKTRACE", "0")
        .env("RUST_LIB_BACKTRACE", "0");
    if let Some(dir) = manifest_dir {
        cmd.env("CARGO_MANIFEST_DIR", dir);
    }
    let out = cmd.output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn cargo_xtask_in_a_moved_checkout_works_on_that_checkout() {
    let moved = fake_checkout();
    let elsewhere = tempfile::tempdir().unwrap();
    // As `cargo xtask` starts it: cargo says which checkout it runs.
    let (ok, root, err) = xtask_root(elsewhere.path(), Some(&moved.path().join("xtask")));
    assert!(ok, "{err}");
    assert_eq!(Path::new(&root), moved.path());
    assert_ne!(Path::new(&root), built_in());
}

#[test]
fn xtask_run_directly_finds_the_checkout_above_its_working_folder() {
    let moved = fake_checkout();
    let deeper = moved.path().join("target/plugins");
    let (ok, root, err) = xtask_root(&deeper, None);
    assert!(ok, "{err}");
    assert_eq!(Path::new(&root), moved.path());
}

#[test]
fn outside_a_checkout_xtask_says_so_instead_of_using_the_one_it_was_built_in() {
    let elsewhere = tempfile::tempdir().unwrap();
    let (ok, root, err) = xtask_root(elsewhere.path(), None);
    assert!(!ok);
    assert!(root.is_empty(), "{root}");
    assert!(err.contains("is not inside a resetgate checkout"), "{err}");
    let built = built_in();
    assert!(!err.contains(&*built.to_string_lossy()), "{err}");
    // A stale CARGO_MANIFEST_DIR that is not a checkout (the old one,
    // removed) does not win over the working folder either.
    let moved = fake_checkout();
    let gone = elsewhere.path().join("old-checkout/xtask");
    let (ok, root, err) = xtask_root(moved.path(), Some(&gone));
    assert!(ok, "{err}");
    assert_eq!(Path::new(&root), moved.path());
}
