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
