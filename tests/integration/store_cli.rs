//! The store's admin commands through the real binary: `store migrate`,
//! `store check`, `store copy` and `audit verify`, their output, exit
//! statuses and refusals. The data is made by real resets through the
//! runtime and, for the repositories no reset here fills (enrollments, kv,
//! the outbox, timers), by commits through the store port.

use std::path::Path;
use std::sync::Arc;

use resetgate::contract::FieldValue;
use resetgate::runtime::Runtime;
use resetgate::secret::Secret;
use resetgate::store::{AuditRecord, Change, Commit, Item, Queue, Store, StoreSpec, WorkItem};
use resetgate_tests::{host, run_cli, test_workflow, write_config};

const T0: u64 = 1_763_856_000_000;

fn answer(v: &str) -> Vec<FieldValue> {
    vec![FieldValue {
        name: "answer".into(),
        value: Secret::from(v),
    }]
}

fn sled(dir: &Path) -> Arc<dyn Store> {
    resetgate::store::open(&StoreSpec::Sled {
        dir: dir.to_owned(),
    })
    .unwrap()
}

/// Fills a sled store in `dir` with a record of every kind: a completed
/// reset and one with two failed answers (flows, lockout history, audit),
/// then an enrollment, kv entries, an outbox item (claimed, so a lease
/// travels too) and a timer. Returns everything the store holds.
fn populate(dir: &Path) -> Vec<Item> {
    let (host, _cache) = host();
    let wf = test_workflow(
        &host,
        &["alice", "bob"],
        serde_json::json!({"threshold": 5}),
        &["open sesame"],
    );
    let store = sled(dir);
    {
        let rt = Runtime::new(
            store.clone(),
            Arc::new(resetgate::seal::DataKey::generate().unwrap()),
            vec![Arc::new(wf)],
        );
        let flow = rt.start("test-reset", "alice", T0).unwrap().flow;
        rt.answer(&flow.id, answer("open sesame"), T0 + 1).unwrap();
        rt.password(&flow.id, Secret::from("a brand new passphrase"), T0 + 2)
            .unwrap();
        let flow = rt.start("test-reset", "bob", T0 + 3).unwrap().flow;
        rt.answer(&flow.id, answer("wrong"), T0 + 4).unwrap();
        rt.answer(&flow.id, answer("wrong again"), T0 + 5).unwrap();
    }
    let work = |queue, id: &str, due_ms| {
        Change::Enqueue(WorkItem {
            queue,
            id: id.to_owned(),
            due_ms,
            payload: vec![1, 2, 3],
        })
    };
    store
        .commit(Commit {
            changes: vec![
                Change::PutEnrollment {
                    user: "ab12".into(),
                    gate: "questions".into(),
                    data: b"sealed".to_vec(),
                },
                Change::PutKv {
                    namespace: "local-users".into(),
                    key: "user/carol".into(),
                    value: b"{}".to_vec(),
                },
                Change::PutKv {
                    namespace: "totp".into(),
                    key: "used/1".into(),
                    value: vec![0],
                },
                work(Queue::Outbox, "sync-1", T0),
                work(Queue::Timers, "expire-1", T0 + 86_400_000),
            ],
            audit: vec![AuditRecord {
                at_ms: T0 + 6,
                kind: "test.seeded".into(),
                flow: None,
                user: None,
                workflow: None,
                detail: serde_json::json!({"note": "seeded by the test"}),
            }],
        })
        .unwrap()
        .wait()
        .unwrap();
    assert_eq!(
        store
            .claim_due(Queue::Outbox, T0, 60_000, 10)
            .unwrap()
            .len(),
        1
    );
    let items = export(&*store);
    store.close();
    items
}

fn export(store: &dyn Store) -> Vec<Item> {
    let mut items = Vec::new();
    store
        .export(&mut |item| {
            items.push(item);
            Ok(())
        })
        .unwrap();
    items
}

fn repositories(items: &[Item]) -> Vec<&'static str> {
    let mut names: Vec<&'static str> = items.iter().map(Item::repository).collect();
    names.sort_unstable();
    names.dedup();
    names
}

/// The lines `store check` and `store copy` print for `items`' counts.
fn count_lines(items: &[Item]) -> String {
    [
        "flows",
        "lockout",
        "enrollments",
        "kv",
        "outbox",
        "timers",
        "audit",
    ]
    .iter()
    .map(|r| {
        let n = items.iter().filter(|i| i.repository() == *r).count();
        format!("{r}: {n}\n")
    })
    .collect()
}

/// Runs the binary; returns (exit status, stdout, stderr).
fn cli(args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(resetgate_tests::binary())
        .args(args)
        .env_remove("RESETGATE_CONFIG")
        .env_remove("RESETGATE_DATA_DIR")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn copy_sled_to_sled_carries_every_record_and_the_copy_verifies() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    let items = populate(&src);
    assert_eq!(
        repositories(&items),
        [
            "audit",
            "enrollments",
            "flows",
            "kv",
            "lockout",
            "outbox",
            "timers"
        ],
        "the source lacks a kind of record"
    );
    let audit = items.iter().filter(|i| matches!(i, Item::Audit(_))).count();
    assert!(audit >= 6, "{audit} audit entries");

    let from = format!("sled:{}", path(&src));
    let to = format!("sled:{}", path(&dst));
    let (status, out, err) = cli(&["store", "copy", "--from", &from, "--to", &to]);
    assert_eq!(status, 0, "{out}{err}");
    assert!(out.contains(&count_lines(&items)), "{out}");
    assert!(
        out.contains("flows: 2\nlockout: 2\nenrollments: 1\nkv: 2\n"),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "audit log intact: {audit} entries in 1 chain(s)\n"
        )),
        "{out}"
    );
    assert!(err.contains("note: enrollment data stays sealed"), "{err}");

    // Every record arrived as it was: flows with their index facts, the
    // outbox item with its claim, audit entries with their hashes.
    let copy = sled(&dst);
    assert_eq!(export(&*copy), items);
    copy.close();
    drop(copy);

    let (status, out, err) = cli(&["audit", "verify", "--data-dir", path(&dst)]);
    assert_eq!(status, 0, "{err}");
    assert!(
        out.starts_with("audit chain local: ")
            && out.ends_with(&format!(
                "audit log intact: {audit} entries in 1 chain(s)\n"
            )),
        "{out}"
    );

    // Copying again into the now full destination is refused, unchanged.
    let (status, _, err) = cli(&["store", "copy", "--from", &from, "--to", &to]);
    assert_eq!(status, 2, "{err}");
    assert_eq!(
        err,
        format!(
            "error: the destination {} is not empty\nhelp: copy into a new folder \
             (`sled:NEW-DIR`) or a new database (`createdb`); a store copy never merges two stores\n",
            dst.join("db").display()
        )
    );
    let copy = sled(&dst);
    assert_eq!(export(&*copy), items);
    copy.close();
}

#[test]
fn copy_refuses_a_sled_source_a_gateway_holds() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    let held = sled(&src);
    let (status, out, err) = cli(&[
        "store",
        "copy",
        "--from",
        &format!("sled:{}", path(&src)),
        "--to",
        &format!("sled:{}", path(&dst)),
    ]);
    assert_eq!(status, 3, "{out}{err}");
    assert_eq!(
        err,
        format!(
            "error: the store at {} is in use by another process (a running gateway?)\n\
             help: a running gateway holds it (a sled store is opened by one process at a time): \
             `resetgate admin audit verify|query|export` work through the running gateway \
             (its URL and an operator's key from RESETGATE_URL and RESETGATE_ADMIN_KEY); \
             stop the gateway for `store` commands\n",
            src.join("db").display()
        )
    );
    assert!(out.is_empty(), "{out}");
    // Nothing was created at the destination.
    assert!(!dst.exists());
    held.close();
}

#[test]
fn migrate_reports_the_schema_before_and_after_and_check_reports_the_store() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    // Check and verify do not create a store that is not there.
    for args in [
        vec!["store", "check", "--data-dir", path(&data)],
        vec!["audit", "verify", "--data-dir", path(&data)],
    ] {
        let (status, out, err) = cli(&args);
        assert_eq!(status, 3, "{out}{err}");
        assert!(
            err.starts_with(&format!(
                "error: there is no store at {} (nothing has been stored there yet)\n",
                data.join("db").display()
            )),
            "{err}"
        );
    }
    assert!(!data.exists());

    let (status, out, err) = cli(&["store", "migrate", "--data-dir", path(&data)]);
    assert_eq!(status, 0, "{err}");
    assert_eq!(
        out,
        format!(
            "backend: sled\nlocation: {}\nschema before: none (new store)\nschema after: 7\n",
            data.join("db").display()
        )
    );
    let (status, out, _) = cli(&["store", "migrate", "--data-dir", path(&data)]);
    assert_eq!(status, 0);
    assert!(
        out.ends_with("schema before: 7\nschema after: 7\n"),
        "{out}"
    );

    // The config's data folder, and the store's own folder when set.
    let items = populate(&tmp.path().join("state"));
    let config = write_config(
        tmp.path(),
        &format!(
            "store: {{backend: sled, dir: {:?}}}",
            tmp.path().join("state")
        ),
    );
    let (status, out, err) = cli(&["store", "check", "--config", path(&config)]);
    assert_eq!(status, 0, "{err}");
    let audit = items.iter().filter(|i| matches!(i, Item::Audit(_))).count();
    let expected = format!(
        "backend: sled\nlocation: {}\nschema: 7\n{}audit chain local: {audit} entries, head ",
        tmp.path().join("state/db").display(),
        count_lines(&items)
    );
    assert!(out.starts_with(&expected), "{out}");
    assert!(
        out.ends_with(&format!(
            "audit log intact: {audit} entries in 1 chain(s)\n"
        )),
        "{out}"
    );
}

#[test]
fn a_tampered_audit_log_fails_check_and_verify_with_status_1() {
    let tmp = tempfile::tempdir().unwrap();
    let mut items = populate(&tmp.path().join("good"));
    // The same log, one record changed after it was hashed.
    let entry = items
        .iter_mut()
        .find_map(|i| match i {
            Item::Audit(e) if e.seq == 2 => Some(e),
            _ => None,
        })
        .unwrap();
    entry.record.kind = "flow.forged".into();
    let bad = tmp.path().join("bad");
    let store = sled(&bad);
    store.import(items).unwrap();
    store.close();
    drop(store);

    let (status, out, err) = cli(&["audit", "verify", "--data-dir", path(&bad)]);
    assert_eq!(status, 1, "{out}{err}");
    assert!(out.is_empty(), "{out}");
    assert!(
        err.starts_with("error: the audit chain `local` is broken at entry 2: "),
        "{err}"
    );
    assert_eq!(err.matches("error:").count(), 1, "{err}");

    let (status, out, err) = cli(&["store", "check", "--data-dir", path(&bad)]);
    assert_eq!(status, 1, "{out}{err}");
    assert!(out.contains("flows: 2\n"), "{out}");
    assert!(
        err.starts_with("error: the audit chain `local` is broken at entry 2"),
        "{err}"
    );
    // And a copy of it is refused before anything is written.
    let dst = tmp.path().join("dst");
    let (status, _, err) = cli(&[
        "store",
        "copy",
        "--from",
        &format!("sled:{}", path(&bad)),
        "--to",
        &format!("sled:{}", path(&dst)),
    ]);
    assert_eq!(status, 1, "{err}");
    assert!(!dst.exists());
}

#[test]
fn store_commands_report_config_and_argument_mistakes_with_status_2() {
    let tmp = tempfile::tempdir().unwrap();
    // A config with a store mistake: its diagnostic, then one error line.
    let config = write_config(
        tmp.path(),
        "store: {backend: postgres, url: \"postgres://rg:canary-pw@db.example/rg\"}",
    );
    for command in ["check", "migrate"] {
        let (status, out, err) = cli(&["store", command, "--config", path(&config)]);
        assert_eq!(status, 2, "{out}{err}");
        assert_eq!(
            err,
            format!(
                "{c}:2:33: error[password-in-url]: `store.url` holds a password\n  help: remove the \
                 password from the URL (`postgres://USER@HOST:PORT/DATABASE`) and name a secret \
                 holding it: `password_secret: NAME`, with `secrets: {{ NAME: {{ file: FILE }} }}` \
                 (mode 600)\nerror: the gateway config {c} has errors (listed above)\n",
                c = config.display()
            )
        );
    }
    // `resetgate check` reports it the same way.
    let (ok, _, err) = run_cli(&["check", "--config", path(&config)]);
    assert!(!ok);
    assert!(err.contains(":2:33: error[password-in-url]"), "{err}");
    assert!(!err.contains("canary"), "{err}");

    // A password secret that cannot be read: named, not shown.
    let config = write_config(
        tmp.path(),
        "secrets: {db: {env: RESETGATE_TEST_DB_PASSWORD_UNSET}}\n\
         store: {backend: postgres, url: \"postgres://rg@db.example/rg\", password_secret: db}",
    );
    let (status, _, err) = cli(&["audit", "verify", "--config", path(&config)]);
    assert_eq!(status, 2, "{err}");
    assert_eq!(
        err,
        "error: the database password: secret `db`: the environment variable \
         `RESETGATE_TEST_DB_PASSWORD_UNSET` is not set (or not UTF-8)\n"
    );

    // Bad endpoints never echo what was given.
    let (status, _, err) = cli(&[
        "store",
        "copy",
        "--from",
        "mysql://rg:canary-pw@db/rg",
        "--to",
        "sled:x",
    ]);
    assert_eq!(status, 2);
    assert_eq!(
        err,
        "error: --from must be `sled:DIR`, `postgres:postgres://USER@HOST:PORT/DB` or `config:FILE`\n"
    );
    let (status, _, err) = cli(&[
        "store",
        "copy",
        "--from",
        "sled:x",
        "--to",
        "postgres://rg:canary-pw@db/rg",
    ]);
    assert_eq!(status, 2);
    assert!(!err.contains("canary"), "{err}");
    assert!(
        err.starts_with(
            "error: the --to URL holds a password: remove it, and give it with \
             `--to-password-file FILE` (mode 600) or the environment variable RESETGATE_TO_PASSWORD"
        ),
        "{err}"
    );
    // A password file others may read is refused, naming the fix.
    let file = tmp.path().join("pw");
    std::fs::write(&file, "canary-pw\n").unwrap();
    let (status, _, err) = cli(&[
        "store",
        "copy",
        "--from",
        "sled:x",
        "--to",
        "postgres://rg@127.0.0.1:1/rg?sslmode=disable",
        "--to-password-file",
        path(&file),
    ]);
    assert_eq!(status, 2);
    assert!(err.contains("chmod 600"), "{err}");
    assert!(!err.contains("canary"), "{err}");
}

#[test]
fn serve_keeps_its_state_where_the_store_section_says() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let config = write_config(
        tmp.path(),
        &format!("store: {{backend: sled, dir: {state:?}}}"),
    );
    let gw = resetgate_tests::Gateway::start_config(&config, &[]);
    assert_eq!(gw.get("/healthz").0, 200);
    // Held by the running gateway: the store commands say so, status 3.
    let (status, _, err) = cli(&["store", "check", "--config", path(&config)]);
    assert_eq!(status, 3, "{err}");
    assert!(err.contains("is in use by another process"), "{err}");
    assert!(gw.stop(), "the gateway did not stop cleanly");
    assert!(state.join("db").is_dir());
    // The data folder keeps the data key, not the store.
    let data = tmp.path().join("data");
    assert!(data.join("data.key").is_file());
    assert!(!data.join("db").exists());
    let (status, out, err) = cli(&["store", "check", "--config", path(&config)]);
    assert_eq!(status, 0, "{err}");
    assert!(
        out.starts_with(&format!(
            "backend: sled\nlocation: {}\n",
            state.join("db").display()
        )),
        "{out}"
    );
}

#[test]
fn a_backup_restores_every_record_and_a_damaged_one_restores_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    let items = populate(&src);
    let audit = items.iter().filter(|i| matches!(i, Item::Audit(_))).count();
    let file = tmp.path().join("nightly.jsonl");

    let (status, out, err) = cli(&["backup", "--to", path(&file), "--data-dir", path(&src)]);
    assert_eq!(status, 0, "{out}{err}");
    assert_eq!(
        out,
        format!(
            "backed up {} records of sled {} to {}\n",
            items.len(),
            src.join("db").display(),
            file.display()
        )
    );
    assert!(err.contains("keep the key"), "{err}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    // A backup never overwrites a file.
    let (status, _, err) = cli(&["backup", "--to", path(&file), "--data-dir", path(&src)]);
    assert_eq!(status, 2, "{err}");
    assert!(err.contains("exists already"), "{err}");

    // Restored into a new folder: every record as it was, the log intact.
    let (status, out, err) = cli(&["restore", "--from", path(&file), "--data-dir", path(&dst)]);
    assert_eq!(status, 0, "{out}{err}");
    assert!(out.contains(&count_lines(&items)), "{out}");
    assert!(
        out.contains(&format!(
            "audit log intact: {audit} entries in 1 chain(s)\n"
        )),
        "{out}"
    );
    assert!(
        out.contains("restored a backup of sled (schema 7)"),
        "{out}"
    );
    let copy = sled(&dst);
    assert_eq!(export(&*copy), items);
    copy.close();
    drop(copy);
    // Not over a store that holds records.
    let (status, _, err) = cli(&["restore", "--from", path(&file), "--data-dir", path(&dst)]);
    assert_eq!(status, 2, "{err}");
    assert!(err.contains("is not empty"), "{err}");

    // A file cut short, or changed, restores nothing and says where.
    let text = std::fs::read_to_string(&file).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let cut = tmp.path().join("cut.jsonl");
    std::fs::write(&cut, lines[..lines.len() - 1].join("\n") + "\n").unwrap();
    let changed = tmp.path().join("changed.jsonl");
    let mut edited = lines.clone();
    edited[2] = "{\"flow\": 42}";
    std::fs::write(&changed, edited.join("\n") + "\n").unwrap();
    for (damaged, says) in [
        (
            &cut,
            format!("line {}: the file ends without its end line", lines.len()),
        ),
        (&changed, "line 3: not a backup record".to_owned()),
    ] {
        let into = tmp.path().join("into");
        let (status, out, err) = cli(&[
            "restore",
            "--from",
            path(damaged),
            "--data-dir",
            path(&into),
        ]);
        assert_eq!(status, 1, "{out}{err}");
        assert!(err.contains(&says), "{err}");
        assert!(err.contains("help: nothing was restored"), "{err}");
        assert!(!into.join("db").exists(), "a half-restored store was left");
    }
}
