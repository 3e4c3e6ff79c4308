//! The PostgreSQL store backend against a real PostgreSQL 15 cluster
//! (`resetgate_tests::postgres`), started per test on a free loopback port:
//! what is specific to PostgreSQL (migrations, connection errors, TLS,
//! advisory locks across stores, leases, the lanes' audit chains). The
//! behaviour both backends share is the conformance suite's.

use resetgate_tests::postgres::Postgres;

fn connect(pg: &Postgres, password: &str) -> Result<postgres::Client, postgres::Error> {
    let mut config: postgres::Config = pg.url().parse().unwrap();
    config.password(password);
    config.connect(postgres::NoTls)
}

/// Why connecting fails; panics if it does not.
fn refused(pg: &Postgres, password: &str) -> String {
    match connect(pg, password) {
        Ok(_) => panic!("connected with {password:?}"),
        Err(e) => match e.as_db_error() {
            Some(db) => db.to_string(),
            None => e.to_string(),
        },
    }
}

#[test]
fn the_harness_gives_a_durable_cluster_with_a_password_role_that_restarts() {
    let mut pg = Postgres::start();
    assert_eq!(pg.psql("SHOW fsync"), "on");
    assert_eq!(
        pg.psql("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'resetgate'"),
        "resetgate"
    );
    let mut client = connect(&pg, Postgres::PASSWORD).unwrap();
    client
        .batch_execute("CREATE TABLE t (v text); INSERT INTO t VALUES ('kept')")
        .unwrap();
    let wrong = refused(&pg, "not-the-password");
    assert!(wrong.contains("password authentication failed"), "{wrong}");
    drop(client);
    pg.stop();
    assert!(connect(&pg, Postgres::PASSWORD).is_err());
    pg.start_again();
    assert_eq!(pg.psql("SELECT v FROM t"), "kept");
    pg.stop_immediately();
    pg.start_again();
    assert_eq!(pg.psql("SELECT v FROM t"), "kept");
}

#[test]
fn the_tls_harness_accepts_the_role_over_tls_only() {
    let pg = Postgres::start_tls();
    assert_eq!(pg.psql("SHOW ssl"), "on");
    let err = refused(&pg, Postgres::PASSWORD);
    assert!(err.contains("no pg_hba.conf entry"), "{err}");
    assert!(pg.ca_file().exists());
}

// ---------------------------------------------------------------------------
// The store on PostgreSQL.

use std::sync::mpsc;
use std::sync::{Arc, Barrier};

use resetgate::secret::Secret;
use resetgate::store::postgres::PostgresStore;
use resetgate::store::{
    AuditError, AuditRecord, Change, Commit, FlowRecord, PgTls, PgTlsMode, PostgresSpec, Queue,
    Store, StoreError, WorkItem,
};
use resetgate_tests::pki::Pki;

fn spec(pg: &Postgres, node: &str) -> PostgresSpec {
    PostgresSpec {
        url: pg.url(),
        password: Some(Secret::new(Postgres::PASSWORD.to_owned())),
        tls: PgTls {
            mode: PgTlsMode::Disable,
            ca_file: None,
        },
        pool: 2,
        node: node.to_owned(),
    }
}

fn open(pg: &Postgres, node: &str) -> PostgresStore {
    PostgresStore::open(&spec(pg, node)).unwrap()
}

/// Why opening fails; panics if it does not.
fn open_error(spec: &PostgresSpec) -> StoreError {
    match PostgresStore::open(spec) {
        Ok(_) => panic!("opened {}", spec.location()),
        Err(e) => e,
    }
}

fn record(kind: &str, n: usize) -> AuditRecord {
    AuditRecord {
        at_ms: 1_700_000_000_000 + n as u64,
        kind: kind.to_owned(),
        flow: Some(format!("flow-{n}")),
        user: Some("u".to_owned()),
        workflow: None,
        detail: serde_json::json!({ "n": n }),
    }
}

fn flow(id: &str, due_ms: u64) -> FlowRecord {
    FlowRecord {
        id: id.to_owned(),
        user: "u".to_owned(),
        version: "v1".to_owned(),
        in_progress: true,
        due_ms,
        body: format!("body of {id}").into_bytes(),
    }
}

#[test]
fn migrations_are_applied_once_and_a_newer_schema_is_refused() {
    let pg = Postgres::start();
    let stored = || {
        resetgate::store::stored_schema(&resetgate::store::StoreSpec::Postgres(spec(&pg, "a")))
            .unwrap()
    };
    assert_eq!(stored(), None);
    let store = open(&pg, "a");
    assert_eq!(store.schema_version().unwrap(), 3);
    assert_eq!(stored(), Some(3));
    // A second gateway (and a restarted one) finds the schema in place.
    let again = open(&pg, "b");
    drop(again);
    drop(store);
    open(&pg, "a");
    assert_eq!(
        pg.psql("SELECT string_agg(version || ' ' || name, ',') FROM resetgate_schema"),
        "1 schema,2 audit_users,3 lock_round_trips"
    );
    assert_eq!(
        pg.psql("SELECT count(*) FROM pg_proc WHERE proname = 'resetgate_commit'"),
        "1"
    );

    // A newer resetgate migrated the database: this one refuses it.
    pg.psql("INSERT INTO resetgate_schema (version, name) VALUES (4, 'from the future')");
    assert_eq!(stored(), Some(4));
    let err = open_error(&spec(&pg, "a"));
    assert!(
        matches!(
            err,
            StoreError::Newer {
                found: 4,
                supported: 3
            }
        ),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("newer than this resetgate's"),
        "{err}"
    );
}

#[test]
fn a_schema_1_database_gets_its_audit_log_indexed_by_user() {
    use resetgate::store::{AuditLog as _, AuditQuery};
    let pg = Postgres::start();
    let store = open(&pg, "a");
    let mut records: Vec<_> = (0..5).map(|n| record("old", n)).collect();
    records[3].user = Some("other".to_owned());
    records[4].user = None;
    store.append(records).unwrap().wait().unwrap();
    drop(store);
    // Back to schema 1, as a gateway of that version left it.
    pg.psql("ALTER TABLE audit_groups DROP COLUMN users");
    pg.psql(
        "DROP FUNCTION resetgate_commit(smallint[], text[], text[], text[], bigint[], \
         boolean[], bytea[], text, bigint, bytea, bigint, bytea, bigint[], integer[], bytea[], \
         text[])",
    );
    let schema_1 = include_str!("../../gateway/src/store/postgres/0001_schema.sql");
    let function = &schema_1[schema_1.find("CREATE FUNCTION resetgate_commit(").unwrap()..];
    pg.psql(function);
    pg.psql("DROP FUNCTION resetgate_lock(bigint, text, text)");
    pg.psql(
        "DROP FUNCTION resetgate_commit_unlock(smallint[], text[], text[], text[], bigint[], \
         boolean[], bytea[], text, bigint, bytea, bigint, bytea, bigint[], integer[], bytea[], \
         text[], bigint)",
    );
    pg.psql("DELETE FROM resetgate_schema WHERE version >= 2");

    let store = open(&pg, "a");
    assert_eq!(store.schema_version().unwrap(), 3);
    let query = |user: &str| {
        let query = AuditQuery {
            user: Some(user.to_owned()),
            limit: 100,
            ..AuditQuery::default()
        };
        let found = store.query(&query).unwrap();
        found
            .iter()
            .map(|e| e.record.detail["n"].as_u64().unwrap())
            .collect::<Vec<_>>()
    };
    assert_eq!(query("u"), [0, 1, 2]);
    assert_eq!(query("other"), [3]);
    // New commits list their users too.
    store
        .append(vec![record("new", 5)])
        .unwrap()
        .wait()
        .unwrap();
    assert_eq!(query("u"), [0, 1, 2, 5]);
    assert!(store.verify().is_ok());
}

#[test]
fn connection_errors_are_clear_and_never_carry_the_password() {
    const CANARY: &str = "pw-Canary-93d1";
    let pg = Postgres::start();

    // A wrong password.
    let mut wrong = spec(&pg, "a");
    wrong.password = Some(Secret::new(CANARY.to_owned()));
    let err = open_error(&wrong);
    let said = format!("{err} {err:?}");
    assert!(said.contains("password authentication failed"), "{said}");
    assert!(said.contains(&format!("127.0.0.1:{}", pg.port())), "{said}");
    assert!(!said.contains(CANARY), "{said}");

    // A password in the URL is refused, and not repeated.
    let mut in_url = spec(&pg, "a");
    in_url.url = format!(
        "postgres://resetgate:{CANARY}@127.0.0.1:{}/resetgate",
        pg.port()
    );
    let said = open_error(&in_url).to_string();
    assert!(said.contains("the URL carries a password"), "{said}");
    assert!(!said.contains(CANARY), "{said}");

    // Nothing listening.
    let mut nowhere = spec(&pg, "a");
    let port = resetgate_tests::slapd::free_port();
    nowhere.url = format!("postgres://resetgate@127.0.0.1:{port}/resetgate");
    nowhere.password = Some(Secret::new(CANARY.to_owned()));
    let err = open_error(&nowhere);
    let said = format!("{err} {err:?}");
    assert!(said.contains("cannot connect to postgres"), "{said}");
    assert!(said.contains("onnection refused"), "{said}");
    assert!(!said.contains(CANARY), "{said}");
}

#[test]
fn a_store_fails_cleanly_while_the_server_is_down_and_recovers_by_itself() {
    let mut pg = Postgres::start();
    let store = open(&pg, "a");
    let put = |id: &str| Commit {
        changes: vec![Change::PutFlow(flow(id, 10))],
        audit: vec![record("flow.started", 0)],
    };
    store.commit(put("before")).unwrap().wait().unwrap();
    pg.stop();
    let err = store.commit(put("during")).unwrap_err();
    assert!(matches!(err, StoreError::Unavailable { .. }), "{err:?}");
    let err = store.flow("before").unwrap_err();
    assert!(matches!(err, StoreError::Unavailable { .. }), "{err:?}");
    assert!(!format!("{err} {err:?}").contains(Postgres::PASSWORD));
    let lock = store.lock_user("u").map(|_| ()).unwrap_err();
    assert!(matches!(lock, StoreError::Unavailable { .. }), "{lock:?}");
    pg.start_again();
    // The pooled connections died with the server; the pool makes new ones
    // (retrying in the background; until it has one, reads are refused).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let before = loop {
        match store.flow("before") {
            Ok(body) => break body,
            Err(StoreError::Unavailable { .. }) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(50))
            }
            Err(e) => panic!("the store did not recover: {e}"),
        }
    };
    assert_eq!(before, Some(b"body of before".to_vec()));
    store.commit(put("after")).unwrap().wait().unwrap();
    assert!(store.flow("during").unwrap().is_none());
    drop(store.lock_user("u").unwrap());
    assert_eq!(store.audit().verify().unwrap().entries, 2);
}

/// `f` until it stops failing with `Unavailable` (the pools reconnect in
/// the background after the server restarts), for up to a minute.
fn once_back<T>(what: &str, mut f: impl FnMut() -> Result<T, StoreError>) -> T {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        match f() {
            Ok(out) => return out,
            Err(StoreError::Unavailable { .. }) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(50))
            }
            Err(e) => panic!("{what}: {e}"),
        }
    }
}

#[test]
fn a_commit_under_a_user_s_lock_lost_in_a_restart_is_refused_and_writes_nothing() {
    let mut pg = Postgres::start();
    let a = open(&pg, "a");
    let b = open(&pg, "b");
    let put = |id: &str, n: usize| Commit {
        changes: vec![Change::PutFlow(flow(id, 10))],
        audit: vec![record("flow.answered", n)],
    };
    let mut held = a.lock_user("u").unwrap();
    held.commit(put("before", 0)).unwrap().wait().unwrap();
    // The server restarts: the session holding u's lock ends, and the lock
    // with it, without the holder knowing.
    pg.stop();
    pg.start_again();
    // Gateway a is otherwise healthy again (its pools reconnected), and
    // gateway b now holds u's lock.
    assert!(once_back("a reads again", || a.flow("before")).is_some());
    let other = once_back("b locks u", || b.lock_user("u"));
    // a's commit under its lost lock is refused, cleanly, and writes nothing:
    // two gateways never both act for one user.
    let err = held.commit(put("stale", 1)).unwrap_err();
    assert!(matches!(err, StoreError::Unavailable { .. }), "{err:?}");
    assert!(!format!("{err} {err:?}").contains(Postgres::PASSWORD));
    let err = held.commit_and_release(put("stale too", 2)).unwrap_err();
    assert!(matches!(err, StoreError::Unavailable { .. }), "{err:?}");
    assert!(b.flow("stale").unwrap().is_none());
    assert!(b.flow("stale too").unwrap().is_none());
    // b's holder goes on; then a fresh lock of a's works.
    other
        .commit_and_release(put("b's step", 3))
        .unwrap()
        .wait()
        .unwrap();
    let mut again = once_back("a locks u again", || a.lock_user("u"));
    again.commit(put("a's step", 4)).unwrap().wait().unwrap();
    again
        .commit_and_release(put("a's last step", 5))
        .unwrap()
        .wait()
        .unwrap();
    for id in ["before", "b's step", "a's step", "a's last step"] {
        assert!(a.flow(id).unwrap().is_some(), "{id}");
    }
    assert_eq!(a.audit().verify().unwrap().entries, 4);
    assert_eq!(
        pg.psql("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"),
        "0"
    );
}

#[test]
fn lock_user_serialises_requests_across_two_stores() {
    let pg = Postgres::start();
    let a = open(&pg, "a");
    let b = Arc::new(open(&pg, "b"));
    let held = a.lock_user("alice").unwrap();
    // Another user is not held up.
    drop(b.lock_user("bob").unwrap());

    let (tx, rx) = mpsc::channel();
    let waiter = {
        let b = b.clone();
        std::thread::spawn(move || {
            let lock = b.lock_user("alice").unwrap();
            tx.send(()).unwrap();
            drop(lock);
        })
    };
    // Wait until b's session is queued on the advisory lock.
    loop {
        assert!(
            rx.try_recv().is_err(),
            "b took alice's lock while a held it"
        );
        let waiting =
            pg.psql("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted");
        if waiting == "1" {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert!(
        rx.try_recv().is_err(),
        "b took alice's lock while a held it"
    );
    drop(held);
    rx.recv().unwrap();
    waiter.join().unwrap();
    // Both unlocked: no advisory lock is left.
    assert_eq!(
        pg.psql("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"),
        "0"
    );
}

#[test]
fn a_commit_is_all_or_nothing_audit_records_included() {
    let pg = Postgres::start();
    let store = open(&pg, "a");
    store
        .commit(Commit {
            changes: vec![Change::PutFlow(flow("f0", 5))],
            audit: vec![record("flow.started", 0)],
        })
        .unwrap()
        .wait()
        .unwrap();
    // The server refuses one change of the next commit.
    pg.psql(
        "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS \
         $$ BEGIN RAISE EXCEPTION 'refused by the test'; END $$; \
         CREATE TRIGGER refuse BEFORE INSERT ON kv FOR EACH ROW \
         WHEN (NEW.key = 'poison') EXECUTE FUNCTION refuse();",
    );
    let failing = Commit {
        changes: vec![
            Change::PutFlow(flow("f1", 5)),
            Change::DeleteFlow { id: "f0".into() },
            Change::PutLockout {
                user: "u".into(),
                history: b"h".to_vec(),
            },
            Change::PutKv {
                namespace: "ns".into(),
                key: "poison".into(),
                value: b"v".to_vec(),
            },
        ],
        audit: vec![record("flow.answered", 1), record("flow.answered", 2)],
    };
    let err = store.commit(failing.clone()).unwrap_err();
    assert!(matches!(err, StoreError::Io { .. }), "{err:?}");
    assert!(err.to_string().contains("refused by the test"), "{err}");
    assert!(store.flow("f1").unwrap().is_none());
    assert!(store.flow("f0").unwrap().is_some());
    assert!(store.lockout("u").unwrap().is_none());
    let entries = store.audit().entries(0, 100).unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(pg.psql("SELECT count(*) FROM audit_groups"), "1");

    // The lane goes on from its real head.
    pg.psql("DROP TRIGGER refuse ON kv");
    store.commit(failing).unwrap().wait().unwrap();
    assert!(store.flow("f0").unwrap().is_none());
    assert_eq!(store.kv_get("ns", "poison").unwrap(), Some(b"v".to_vec()));
    let summary = store.audit().verify().unwrap();
    assert_eq!(summary.entries, 3);
    assert_eq!(summary.chains.len(), 1);
    assert_eq!(summary.chains[0].chain, "a/0");
}

#[test]
fn claim_due_never_hands_one_item_to_two_stores() {
    let pg = Postgres::start();
    let stores: Vec<Arc<PostgresStore>> = (0..3)
        .map(|i| Arc::new(open(&pg, &format!("g{i}"))))
        .collect();
    let items: Vec<Change> = (0..150)
        .map(|i| {
            Change::Enqueue(WorkItem {
                queue: Queue::Outbox,
                id: format!("item-{i:03}"),
                due_ms: 100 + i,
                payload: vec![1, 2, 3],
            })
        })
        .collect();
    stores[0]
        .commit(Commit {
            changes: items,
            audit: vec![],
        })
        .unwrap()
        .wait()
        .unwrap();
    let barrier = Arc::new(Barrier::new(stores.len()));
    let claimers: Vec<_> = stores
        .iter()
        .map(|s| {
            let s = s.clone();
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                let mut got = Vec::new();
                loop {
                    let claims = s.claim_due(Queue::Outbox, 1_000, 60_000, 7).unwrap();
                    if claims.is_empty() {
                        return got;
                    }
                    for c in claims {
                        assert_eq!(c.attempt, 1);
                        assert_eq!(c.lease_until_ms, 61_000);
                        got.push(c.item.id);
                    }
                }
            })
        })
        .collect();
    let mut all: Vec<String> = claimers
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    assert_eq!(all.len(), 150, "an item was handed out twice or not at all");
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 150);
    // Nothing is claimable while leased, not even by another queue's caller.
    assert!(
        stores[1]
            .claim_due(Queue::Outbox, 60_999, 1, 10)
            .unwrap()
            .is_empty()
    );
    assert!(
        stores[1]
            .claim_due(Queue::Timers, 60_999, 1, 10)
            .unwrap()
            .is_empty()
    );
    // Scheduling an item that exists (leased) changes nothing; a new one is
    // added.
    let schedule = |id: &str| {
        Change::Schedule(WorkItem {
            queue: Queue::Outbox,
            id: id.to_owned(),
            due_ms: 0,
            payload: vec![9],
        })
    };
    stores[1]
        .commit(Commit {
            changes: vec![schedule("item-000"), schedule("periodic")],
            audit: vec![],
        })
        .unwrap()
        .wait()
        .unwrap();
    let scheduled = stores[1]
        .claim_due(Queue::Outbox, 60_999, 100_000, 10)
        .unwrap();
    assert_eq!(
        scheduled
            .iter()
            .map(|c| c.item.id.as_str())
            .collect::<Vec<_>>(),
        ["periodic"]
    );
    // Once a lease ends, the item is claimed again (a second attempt).
    let again = stores[2]
        .claim_due(Queue::Outbox, 61_000, 1_000, 1)
        .unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].item.id, "item-000");
    assert_eq!(again[0].attempt, 2);
    // Finished items are gone; retried ones come back unleased when due.
    stores[2]
        .commit(Commit {
            changes: vec![
                Change::Finish {
                    queue: Queue::Outbox,
                    id: "item-000".into(),
                },
                Change::Retry {
                    queue: Queue::Outbox,
                    id: "item-001".into(),
                    due_ms: 5_000,
                },
            ],
            audit: vec![],
        })
        .unwrap()
        .wait()
        .unwrap();
    let retried = stores[0]
        .claim_due(Queue::Outbox, 5_000, 1_000, 10)
        .unwrap();
    assert_eq!(
        retried
            .iter()
            .map(|c| c.item.id.as_str())
            .collect::<Vec<_>>(),
        ["item-001"]
    );
}

#[test]
fn audit_chains_of_several_gateways_verify_together_and_tampering_is_found() {
    let pg = Postgres::start();
    // Two gateways, and a third misconfigured with the first one's name:
    // their commits meet on the same chains (compare-and-swap, retried).
    let stores: Vec<Arc<PostgresStore>> = ["a", "b", "a"]
        .iter()
        .map(|n| Arc::new(open(&pg, n)))
        .collect();
    let threads: Vec<_> = (0..6)
        .map(|t| {
            let s = stores[t % stores.len()].clone();
            std::thread::spawn(move || {
                for i in 0..20 {
                    let records = (0..1 + i % 3)
                        .map(|j| record("t", t * 100 + i * 3 + j))
                        .collect();
                    s.audit().append(records).unwrap().wait().unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let expected: u64 = 6 * (0..20u64).map(|i| 1 + i % 3).sum::<u64>();
    let summary = stores[1].audit().verify().unwrap();
    assert_eq!(summary.entries, expected);
    assert!(
        summary
            .chains
            .iter()
            .all(|c| c.chain.starts_with("a/") || c.chain.starts_with("b/"))
    );
    assert!(summary.chains.iter().any(|c| c.chain.starts_with("b/")));
    // Every entry once, in one global order, each chain without gaps.
    let entries = stores[0].audit().entries(0, 10_000).unwrap();
    assert_eq!(entries.len() as u64, expected);
    assert!(entries.windows(2).all(|w| w[0].position < w[1].position));
    for chain in &summary.chains {
        let seqs: Vec<u64> = entries
            .iter()
            .filter(|e| e.chain == chain.chain)
            .map(|e| e.seq)
            .collect();
        assert_eq!(seqs, (0..chain.entries).collect::<Vec<_>>());
    }
    // Paging from a position gives the rest.
    let tail = stores[0].audit().entries(entries[10].position, 5).unwrap();
    assert_eq!(tail, entries[10..15].to_vec());

    // A record changed in the database.
    let victim = &entries[7];
    pg.psql(&format!(
        "UPDATE audit_groups SET bytes = overlay(bytes PLACING '\\x20'::bytea \
         FROM length(bytes) - 1 FOR 1) WHERE chain = '{}' AND first_seq <= {} \
         AND first_seq + entries > {}",
        victim.chain, victim.seq, victim.seq
    ));
    match stores[2].audit().verify() {
        Err(AuditError::Broken { chain, .. }) => assert_eq!(chain, victim.chain),
        other => panic!("tampering not found: {other:?}"),
    }
}

#[test]
fn a_deleted_tail_of_a_chain_is_found_against_its_head() {
    let pg = Postgres::start();
    let store = open(&pg, "a");
    for i in 0..3 {
        store
            .audit()
            .append(vec![record("t", i)])
            .unwrap()
            .wait()
            .unwrap();
    }
    store.audit().verify().unwrap();
    pg.psql("DELETE FROM audit_groups WHERE first_seq = 2");
    match store.audit().verify() {
        Err(AuditError::Broken { chain, seq, .. }) => assert_eq!((chain.as_str(), seq), ("a/0", 2)),
        other => panic!("a deleted tail was not found: {other:?}"),
    }
}

fn tls_spec(pg: &Postgres, mode: PgTlsMode, ca_file: Option<std::path::PathBuf>) -> PostgresSpec {
    PostgresSpec {
        tls: PgTls { mode, ca_file },
        ..spec(pg, "a")
    }
}

#[test]
fn tls_verify_full_trusts_the_ca_and_refuses_another() {
    let pg = Postgres::start_tls();
    let store =
        PostgresStore::open(&tls_spec(&pg, PgTlsMode::VerifyFull, Some(pg.ca_file()))).unwrap();
    store
        .commit(Commit {
            changes: vec![Change::PutFlow(flow("f", 1))],
            audit: vec![record("t", 0)],
        })
        .unwrap()
        .wait()
        .unwrap();
    assert!(store.flow("f").unwrap().is_some());
    assert_eq!(
        pg.psql(
            "SELECT bool_and(ssl) FROM pg_stat_ssl JOIN pg_stat_activity USING (pid) \
                 WHERE usename = 'resetgate'"
        ),
        "t"
    );

    let other = Pki::new();
    let err = open_error(&tls_spec(&pg, PgTlsMode::VerifyFull, Some(other.ca_file())));
    let said = err.to_string();
    // The other CA has the same name: its key does not verify the server's
    // certificate.
    assert!(
        said.contains("invalid peer certificate: BadSignature"),
        "{said}"
    );
    assert!(!said.contains(Postgres::PASSWORD), "{said}");

    // `require` encrypts without checking; `disable` is refused (hostssl).
    PostgresStore::open(&tls_spec(&pg, PgTlsMode::Require, None)).unwrap();
    let said = open_error(&tls_spec(&pg, PgTlsMode::Disable, None)).to_string();
    assert!(said.contains("no pg_hba.conf entry"), "{said}");
}

/// A loopback TCP proxy in front of a server that counts *turns*: the
/// times a client sends a statement to execute after the server has
/// answered (or first), i.e. the client's round trips, over every
/// connection through it.
struct TurnCounter {
    port: u16,
    turns: Arc<std::sync::atomic::AtomicU64>,
}

impl TurnCounter {
    fn start(target: u16) -> TurnCounter {
        use std::io::{Read, Write};
        use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let turns = Arc::new(AtomicU64::new(0));
        let counted = turns.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let server = std::net::TcpStream::connect(("127.0.0.1", target)).unwrap();
                client.set_nodelay(true).unwrap();
                server.set_nodelay(true).unwrap();
                // Whether the client's next bytes start a turn.
                let answered = Arc::new(AtomicBool::new(true));
                let pipe = |mut from: std::net::TcpStream,
                            mut to: std::net::TcpStream,
                            upstream: bool,
                            answered: Arc<AtomicBool>,
                            turns: Arc<AtomicU64>| {
                    std::thread::spawn(move || {
                        let mut buf = [0u8; 65536];
                        loop {
                            let n = match from.read(&mut buf) {
                                Ok(0) | Err(_) => break,
                                Ok(n) => n,
                            };
                            // Executions only (a simple query, or a bind of
                            // a prepared statement), not the handshakes and
                            // preparations of connections the pools open in
                            // the background.
                            if upstream && matches!(buf[0], b'Q' | b'B') {
                                if answered.swap(false, Ordering::SeqCst) {
                                    turns.fetch_add(1, Ordering::SeqCst);
                                }
                            } else if !upstream {
                                answered.store(true, Ordering::SeqCst);
                            }
                            if to.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                };
                pipe(
                    client.try_clone().unwrap(),
                    server.try_clone().unwrap(),
                    true,
                    answered.clone(),
                    counted.clone(),
                );
                pipe(server, client, false, answered, counted.clone());
            }
        });
        TurnCounter { port, turns }
    }

    fn turns(&self) -> u64 {
        self.turns.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The round trips `f` makes.
    fn count(&self, f: impl FnOnce()) -> u64 {
        let before = self.turns();
        f();
        self.turns() - before
    }
}

/// A store of one connection on `pg` through a [`TurnCounter`].
fn counted_store(pg: &Postgres) -> (TurnCounter, PostgresStore) {
    let proxy = TurnCounter::start(pg.port());
    let mut spec = spec(pg, "a");
    spec.pool = 1;
    spec.url = format!("postgres://resetgate@127.0.0.1:{}/resetgate", proxy.port);
    let store = PostgresStore::open(&spec).unwrap();
    (proxy, store)
}

/// What a request step costs: its lock with the flow and lockout history
/// read under it is one round trip, a commit under the lock one, and its
/// last commit, which releases the lock, one.
#[test]
fn a_step_is_a_round_trip_for_the_lock_and_its_reads_and_one_per_commit() {
    let pg = Postgres::start();
    let (proxy, store) = counted_store(&pg);
    let step = |i: usize, history: u8| Commit {
        changes: vec![
            Change::PutFlow(flow("f", 10 + i as u64)),
            Change::PutLockout {
                user: "u".into(),
                history: vec![history; 10],
            },
        ],
        audit: vec![record("flow.answered", i)],
    };
    // A lane's first commit reads its head (one at a time, the commits
    // take lane 0).
    store
        .lock_user("u")
        .unwrap()
        .commit_and_release(step(0, 0))
        .unwrap()
        .wait()
        .unwrap();
    for i in 1..4u8 {
        let mut locked = None;
        assert_eq!(
            proxy.count(|| locked = Some(store.lock_user_and_read("u", Some("f")).unwrap())),
            1
        );
        let locked = locked.unwrap();
        // What the previous step committed, read under the lock.
        assert_eq!(locked.flow, Some(b"body of f".to_vec()));
        assert_eq!(locked.lockout, Some(vec![i - 1; 10]));
        let mut lock = locked.lock;
        assert_eq!(
            proxy.count(|| lock.commit(step(10, i - 1)).unwrap().wait().unwrap()),
            1
        );
        assert_eq!(
            proxy.count(|| lock
                .commit_and_release(step(20, i))
                .unwrap()
                .wait()
                .unwrap()),
            1
        );
        // Released by that commit: no advisory lock is left.
        assert_eq!(
            pg.psql("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"),
            "0"
        );
    }
    // A lock given up without a commit: one round trip to unlock.
    let locked = store.lock_user_and_read("u", None).unwrap();
    assert_eq!(locked.flow, None);
    assert_eq!(proxy.count(|| drop(locked)), 1);
    assert_eq!(store.audit().verify().unwrap().entries, 1 + 6);
}

/// The commit that releases a user's lock checks, in its transaction,
/// that its session holds the lock: a session that does not (the lock lost
/// with an earlier session of the same client) writes nothing.
#[test]
fn a_commit_that_releases_a_lock_its_session_does_not_hold_writes_nothing() {
    let pg = Postgres::start();
    let store = open(&pg, "a");
    let call = r"SELECT resetgate_commit_unlock(ARRAY[1]::smallint[], ARRAY['f'], ARRAY['u'],
        ARRAY['v1'], ARRAY[10]::bigint[], ARRAY[true], ARRAY['\x00'::bytea], NULL, NULL, NULL,
        NULL, NULL, NULL, NULL, NULL, NULL, 42)";
    let err = pg.try_psql(call).unwrap_err();
    assert!(err.contains("does not hold the user's lock"), "{err}");
    assert!(store.flow("f").unwrap().is_none());
    // Holding it, the same call commits and releases it.
    pg.psql(&format!("SELECT pg_advisory_lock(42); {call}"));
    assert!(store.flow("f").unwrap().is_some());
    assert_eq!(
        pg.psql("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"),
        "0"
    );
}

#[test]
fn a_commit_is_one_round_trip_and_a_users_lock_two() {
    let pg = Postgres::start();
    let (proxy, store) = counted_store(&pg);
    let step = |i: usize| Commit {
        changes: vec![
            Change::PutFlow(flow(&format!("f{i}"), 10)),
            Change::PutLockout {
                user: "u".into(),
                history: vec![1; 100],
            },
            Change::PutKv {
                namespace: "ns".into(),
                key: format!("k{i}"),
                value: vec![2; 100],
            },
        ],
        audit: vec![record("flow.answered", i), record("flow.passed", i)],
    };
    // The first commit of a connection prepares its statement and reads
    // its lane's head; then each is one round trip.
    store.commit(step(0)).unwrap().wait().unwrap();
    drop(store.lock_user("u").unwrap());
    for i in 1..4 {
        assert_eq!(
            proxy.count(|| store.commit(step(i)).unwrap().wait().unwrap()),
            1
        );
    }
    assert_eq!(proxy.count(|| drop(store.lock_user("u").unwrap())), 2);
    assert_eq!(store.audit().verify().unwrap().entries, 8);
}

#[test]
fn the_store_can_be_used_and_closed_on_an_async_runtime() {
    // The synchronous client runs a runtime of its own, which must never be
    // entered (nor a client closed) on a thread of another: the gateway
    // closes its store at the end of its async serve loop.
    let pg = Postgres::start();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let store = open(&pg, "a");
        let durable = store
            .commit(Commit {
                changes: vec![Change::PutFlow(flow("f", 1))],
                audit: vec![record("t", 0)],
            })
            .unwrap();
        durable.await.unwrap();
        drop(store.lock_user("u").unwrap());
        assert!(store.flow("f").unwrap().is_some());
        assert_eq!(store.audit().verify().unwrap().entries, 1);
        store.close();
        assert!(matches!(store.flow("f"), Err(StoreError::Closed)));
        drop(store);
        let reopened = open(&pg, "a");
        drop(reopened);
    });
}
