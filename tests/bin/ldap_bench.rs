//! LDAP set-password operations per second against a local slapd
//! (`resetgate_tests::slapd`), through the `ldap` capability: the
//! `ldap-directory` plugin's `set-password` (the Password Modify extended
//! operation, then deleting `pwdReset`) called through the plugin host, one
//! fresh instance per call, with 1 and 4 callers at once. The baseline, in
//! the same run against the same server: the same two operations sent with
//! `ldap3` directly on one bound connection (no plugin, no host).
//!
//! ```text
//! cargo run --release -p resetgate-tests --bin ldap-bench -- [CALLS]
//! ```
//!
//! Prints, per setup: calls, callers, calls/s, median and p99 of one call.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::collections::HashSet;
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use resetgate::config::GatewayConfig;
use resetgate::contract::{CallContext, PluginKind, User};
use resetgate::plugin::{Capabilities, Grants, HostConfig, Limits, LoadSpec, PluginHost};
use resetgate::secret::Secret;
use resetgate_tests::slapd::Slapd;
use resetgate_tests::wasm;
use rustls::pki_types::pem::PemObject as _;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn report(what: &str, callers: usize, wall: Duration, mut times: Vec<Duration>) {
    times.sort();
    let n = times.len();
    println!(
        "| {what} | {callers} | {n} | {:.0} | {:.2} ms | {:.2} ms |",
        n as f64 / wall.as_secs_f64(),
        percentile(&times, 0.5).as_secs_f64() * 1e3,
        percentile(&times, 0.99).as_secs_f64() * 1e3,
    );
}

fn main() {
    let calls: usize = std::env::args()
        .nth(1)
        .map_or(2000, |a| a.parse().expect("CALLS is a number"));
    let slapd = Slapd::start();
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("bind.secret");
    std::fs::write(&secret, Slapd::BIND_PASSWORD).unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let yaml = format!(
        "version: 1\nsecrets:\n  bind: {{ file: {secret:?} }}\nldap:\n  corp: {{ url: \"{}\", bind_dn: \"{}\", bind_secret: bind, ca_file: {:?} }}\n",
        slapd.ldaps_url(),
        Slapd::BIND_DN,
        slapd.ca_file()
    );
    let config = GatewayConfig::from_bytes(&dir.path().join("gateway.yaml"), yaml.as_bytes())
        .unwrap_or_else(|e| panic!("{e:?}"));
    let host = PluginHost::new(HostConfig::new(dir.path().join("cache"))).unwrap();
    host.set_capabilities(Arc::new(Capabilities::from_config(&config, None).unwrap()));
    let plugin = host
        .load(
            &wasm("ldap-directory"),
            &LoadSpec {
                kind: Some(PluginKind::Directory),
                grants: Grants {
                    ldap: vec!["corp".into()],
                    ..Grants::default()
                },
                limits: Limits {
                    wall_time: Duration::from_secs(5),
                    ..Limits::default()
                },
            },
        )
        .unwrap();
    let ctx = CallContext {
        flow_id: "bench".into(),
        workflow: "bench".into(),
        step: "directory".into(),
        config: serde_json::json!({"connection": "corp", "base": "ou=people,dc=example,dc=test"})
            .to_string(),
        now_ms: 0,
        language: String::new(),
    };
    let users: Vec<User> = Slapd::PEOPLE
        .iter()
        .map(|u| {
            plugin
                .directory()
                .unwrap()
                .find_user(&ctx, u)
                .unwrap()
                .unwrap()
                .unwrap()
        })
        .collect();

    println!("| setup | callers | calls | calls/s | median | p99 |");
    println!("|---|---|---|---|---|---|");
    // Warm-up: connections made, component instantiated once.
    for i in 0..50 {
        let pw = Secret::new(format!("warm-up-{i}-harbour"));
        plugin
            .directory()
            .unwrap()
            .set_password(&ctx, &users[0], &pw, false)
            .unwrap()
            .unwrap();
    }
    for callers in [1usize, 4] {
        let started = Instant::now();
        let times: Vec<Duration> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..callers)
                .map(|c| {
                    let (plugin, ctx, user) = (&plugin, &ctx, &users[c]);
                    s.spawn(move || {
                        let mut times = Vec::with_capacity(calls / callers);
                        for i in 0..calls / callers {
                            let pw = Secret::new(format!("bench-{c}-{i}-harbour-lantern"));
                            let t = Instant::now();
                            plugin
                                .directory()
                                .unwrap()
                                .set_password(ctx, user, &pw, false)
                                .unwrap()
                                .unwrap();
                            times.push(t.elapsed());
                        }
                        times
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().unwrap())
                .collect()
        });
        report(
            "ldap-directory set-password via the capability",
            callers,
            started.elapsed(),
            times,
        );
    }

    // Baseline: the same two operations with ldap3, no plugin host.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls::pki_types::CertificateDer::pem_file_iter(slapd.ca_file()).unwrap() {
            roots.add(cert.unwrap()).unwrap();
        }
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        let settings = ldap3::LdapConnSettings::new().set_config(Arc::new(tls));
        let (conn, mut ldap) = ldap3::LdapConnAsync::with_settings(settings, &slapd.ldaps_url())
            .await
            .unwrap();
        tokio::spawn(async move { conn.drive().await });
        ldap.simple_bind(Slapd::BIND_DN, Slapd::BIND_PASSWORD)
            .await
            .unwrap()
            .success()
            .unwrap();
        for callers in [1usize, 4] {
            let started = Instant::now();
            let tasks: Vec<_> = (0..callers)
                .map(|c| {
                    let mut ldap = ldap.clone();
                    let dn = users[c].id.clone();
                    tokio::spawn(async move {
                        let mut times = Vec::with_capacity(calls / callers);
                        for i in 0..calls / callers {
                            let pw = format!("direct-{c}-{i}-harbour-lantern");
                            let t = Instant::now();
                            let exop = ldap3::exop::PasswordModify {
                                user_id: Some(&dn),
                                old_pass: None,
                                new_pass: Some(&pw),
                            };
                            ldap.extended(exop).await.unwrap().success().unwrap();
                            let done = ldap
                                .modify(&dn, vec![ldap3::Mod::Delete("pwdReset", HashSet::new())])
                                .await
                                .unwrap();
                            assert!(done.rc == 0 || done.rc == 16, "{done}");
                            times.push(t.elapsed());
                        }
                        times
                    })
                })
                .collect();
            let mut times = Vec::new();
            for t in tasks {
                times.extend(t.await.unwrap());
            }
            report(
                "baseline: ldap3 directly, one connection",
                callers,
                started.elapsed(),
                times,
            );
        }
    });
    assert!(slapd.stop());
}
