//! The precompiled-component cache.

use resetgate::plugin::{HostConfig, LoadSpec, PluginHost};
use resetgate_tests::wasm;

#[test]
fn a_second_load_does_not_recompile_and_a_changed_file_does() {
    let dir = tempfile::tempdir().unwrap();
    let plugin = dir.path().join("plugin.wasm");
    std::fs::copy(wasm("example-vpn"), &plugin).unwrap();
    let config = HostConfig::new(dir.path().join("cache"));

    let host = PluginHost::new(config.clone()).unwrap();
    host.load(&plugin, &LoadSpec::default()).unwrap();
    assert_eq!((host.stats().compiles, host.stats().cache_hits), (1, 0));
    host.load(&plugin, &LoadSpec::default()).unwrap();
    assert_eq!(
        (host.stats().compiles, host.stats().cache_hits),
        (1, 1),
        "second load compiled again"
    );

    // A new host (a restart) finds the artifact on disk.
    drop(host);
    let host = PluginHost::new(config).unwrap();
    let loaded = host.load(&plugin, &LoadSpec::default()).unwrap();
    assert_eq!(
        (host.stats().compiles, host.stats().cache_hits),
        (0, 1),
        "restart compiled again"
    );
    assert_eq!(loaded.info().name, "example-vpn");

    // Same file name, different component: compiled anew, and it is the new one.
    std::fs::copy(wasm("example-sync"), &plugin).unwrap();
    let loaded = host.load(&plugin, &LoadSpec::default()).unwrap();
    assert_eq!((host.stats().compiles, host.stats().cache_hits), (1, 1));
    assert_eq!(loaded.info().name, "example-sync");
}

#[test]
fn a_corrupt_cache_entry_is_replaced_not_trusted() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let host = PluginHost::new(HostConfig::new(&cache)).unwrap();
    host.load(&wasm("example-vpn"), &LoadSpec::default())
        .unwrap();
    // Artifacts are mapped into memory while in use, so only a stopped host's
    // cache may be changed (the host itself only ever replaces files by rename).
    drop(host);
    for entry in std::fs::read_dir(&cache).unwrap() {
        std::fs::write(entry.unwrap().path(), b"garbage").unwrap();
    }
    let host = PluginHost::new(HostConfig::new(&cache)).unwrap();
    let loaded = host
        .load(&wasm("example-vpn"), &LoadSpec::default())
        .unwrap();
    assert_eq!(loaded.info().name, "example-vpn");
    assert_eq!(host.stats().compiles, 1);
}

/// `plugin inspect` of plugin B once another local user has planted plugin
/// A's compiled form under B's name in a shared temporary folder: inspect
/// must report B, and write nothing a later run could be made to trust.
#[test]
fn inspect_never_loads_native_code_from_a_shared_temporary_folder() {
    use resetgate_tests::{run_cli_env, sha256_of};
    let tmp = tempfile::tempdir().unwrap();
    let tmpdir = [("TMPDIR", tmp.path().as_os_str())];
    let (a, b) = (wasm("example-vpn"), wasm("example-sync"));
    let (ok, _, err) = run_cli_env(&["plugin", "inspect", a.to_str().unwrap()], &tmpdir);
    assert!(ok, "{err}");
    // Plant every artifact it left under the name B's would have.
    let (sha_a, sha_b) = (sha256_of(&a), sha256_of(&b));
    let mut planted = 0;
    for entry in walk(tmp.path()) {
        let name = entry.file_name().unwrap().to_string_lossy().into_owned();
        if let Some(rest) = name.strip_prefix(&sha_a) {
            std::fs::copy(&entry, entry.with_file_name(format!("{sha_b}{rest}"))).unwrap();
            planted += 1;
        }
    }
    let (ok, out, err) = run_cli_env(&["plugin", "inspect", b.to_str().unwrap()], &tmpdir);
    assert!(ok, "{err}");
    assert!(
        out.contains("name:     example-sync\n"),
        "planted {planted}: {out}"
    );
    assert_eq!(walk(tmp.path()), Vec::<std::path::PathBuf>::new());
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}

#[test]
fn a_cache_folder_others_can_write_or_another_user_owns_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    std::fs::create_dir(&cache).unwrap();
    std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o777)).unwrap();
    let err = PluginHost::new(HostConfig::new(&cache)).err().unwrap();
    assert!(
        err.to_string()
            .contains("writable by group or others (mode 777)"),
        "{err}"
    );
    std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o755)).unwrap();
    assert!(PluginHost::new(HostConfig::new(&cache)).is_ok());
    // Owned by another user (the suite runs as root in CI; elsewhere the
    // chown fails and this part is what the mode check already shows).
    if std::os::unix::fs::chown(&cache, Some(65534), Some(65534)).is_ok() {
        let err = PluginHost::new(HostConfig::new(&cache)).err().unwrap();
        assert!(err.to_string().contains("is owned by user 65534"), "{err}");
    }
    // A folder the host creates is the gateway's alone.
    let fresh = dir.path().join("fresh");
    PluginHost::new(HostConfig::new(&fresh)).unwrap();
    let mode = std::fs::metadata(&fresh).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700);
}
