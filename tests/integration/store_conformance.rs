//! The store conformance suite: what every backend of the store port
//! promises (the module documentation of `gateway/src/store/mod.rs` and the
//! repositories' contracts), as one set of tests run against each backend.
//! Every test is a function of a [`Backend`] — where the data lives and how
//! to open stores on it — and `conformance!` instantiates all of them for a
//! backend: `store_conformance::sled::NAME` on a sled folder,
//! `store_conformance::postgres::NAME` on a PostgreSQL cluster of its own.
//!
//! Tests assert what a user of the store would notice: what reads return,
//! what survives a restart (closing and opening again), what two holders of
//! one user's lock or two claimers of due work see. Nothing is timed; where
//! a test gives a wrong implementation a chance to misbehave (another
//! thread trying a lock that is held), it waits a little and then asserts
//! the order of events, never a duration.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::Duration;

use resetgate::secret::Secret;
use resetgate::store::{
    self, AuditEntry, AuditError, AuditQuery, AuditRecord, AuditSummary, ChainSummary, Change,
    Claim, Commit, FlowRecord, GENESIS_HASH, Item, PgTls, PgTlsMode, PostgresSpec, Queue, Store,
    StoreError, StoreSpec, WorkItem,
};
use resetgate_tests::postgres::Postgres;
use serde_json::json;

/// Where a backend under test keeps its data, and how to open stores on it.
trait Backend {
    /// A store on the backend's data — the same data every time, so
    /// closing a store and opening again is a restart.
    fn open(&self) -> Arc<dyn Store>;
    /// Another store on the same data beside `store`, as a second gateway
    /// has it: a store of its own where several may share the data
    /// (PostgreSQL), `store` itself where one process holds it (sled, whose
    /// threads are then the several gateways).
    fn peer(&self, store: &Arc<dyn Store>) -> Arc<dyn Store>;
    /// A store on new, empty data of the same backend.
    fn empty(&self) -> Arc<dyn Store>;
    /// What the backend was opened with that no error may show (a
    /// database password).
    fn secrets(&self) -> Vec<String>;
}

/// sled in temporary folders.
struct Sled {
    dir: tempfile::TempDir,
    others: Mutex<Vec<tempfile::TempDir>>,
}

impl Sled {
    fn new() -> Sled {
        Sled {
            dir: tempfile::tempdir().unwrap(),
            others: Mutex::new(Vec::new()),
        }
    }

    fn open_in(dir: &std::path::Path) -> Arc<dyn Store> {
        store::open(&StoreSpec::Sled {
            dir: dir.to_owned(),
        })
        .expect("the sled store opens")
    }
}

impl Backend for Sled {
    fn open(&self) -> Arc<dyn Store> {
        Sled::open_in(self.dir.path())
    }

    fn peer(&self, store: &Arc<dyn Store>) -> Arc<dyn Store> {
        store.clone()
    }

    fn empty(&self) -> Arc<dyn Store> {
        let dir = tempfile::tempdir().unwrap();
        let store = Sled::open_in(dir.path());
        self.others.lock().unwrap().push(dir);
        store
    }

    fn secrets(&self) -> Vec<String> {
        Vec::new()
    }
}

/// A PostgreSQL cluster of the test's own, on a loopback port. Its
/// databases collate by ICU's `en-US`, not by bytes, so that a backend
/// that orders keys must ask for byte order.
struct Pg {
    cluster: Postgres,
    database: String,
    databases: AtomicUsize,
    peers: AtomicUsize,
}

impl Pg {
    fn start() -> Pg {
        let pg = Pg {
            cluster: Postgres::start(),
            database: String::new(),
            databases: AtomicUsize::new(0),
            peers: AtomicUsize::new(0),
        };
        let database = pg.new_database();
        Pg { database, ..pg }
    }

    /// A new, empty database owned by the gateway's role.
    fn new_database(&self) -> String {
        let name = format!(
            "conformance{}",
            self.databases.fetch_add(1, Ordering::SeqCst)
        );
        self.cluster.psql(&format!(
            "CREATE DATABASE {name} OWNER {} TEMPLATE template0 \
             LOCALE_PROVIDER icu ICU_LOCALE 'en-US'",
            Postgres::USER
        ));
        name
    }

    /// A store on `database`, as the gateway `node`.
    fn open_on(&self, database: &str, node: &str) -> Arc<dyn Store> {
        let url = self.cluster.url();
        let (server, _) = url.rsplit_once('/').unwrap();
        store::open(&StoreSpec::Postgres(PostgresSpec {
            url: format!("{server}/{database}"),
            password: Some(Secret::new(self.cluster.password().to_owned())),
            tls: PgTls {
                mode: PgTlsMode::Disable,
                ca_file: None,
            },
            pool: 4,
            node: node.to_owned(),
        }))
        .expect("the postgres store opens")
    }
}

impl Backend for Pg {
    fn open(&self) -> Arc<dyn Store> {
        self.open_on(&self.database, "gw-a")
    }

    fn peer(&self, _store: &Arc<dyn Store>) -> Arc<dyn Store> {
        let n = self.peers.fetch_add(1, Ordering::SeqCst);
        self.open_on(&self.database, &format!("gw-peer{n}"))
    }

    fn empty(&self) -> Arc<dyn Store> {
        let database = self.new_database();
        self.open_on(&database, "gw-copy")
    }

    fn secrets(&self) -> Vec<String> {
        vec![self.cluster.password().to_owned()]
    }
}

/// Every conformance test, instantiated for one backend: `$backend` names
/// the module, `$new` makes a fresh [`Backend`] for each test.
macro_rules! conformance {
    ($backend:ident, $new:expr) => {
        mod $backend {
            #[allow(unused_imports)]
            use super::*;
            conformance!(@each $new;
                flows_are_stored_replaced_and_deleted,
                flows_due_pages_in_due_then_id_order,
                replacing_a_flow_moves_it_in_the_due_index,
                deleted_flows_leave_the_due_index,
                versions_in_progress_follow_the_flows,
                lockout_histories_are_per_user,
                enrollments_are_per_user_and_gate,
                kv_namespaces_do_not_see_each_other,
                kv_scan_and_keys_are_in_byte_order_by_literal_prefix_with_a_limit,
                kv_holds_64_kib_values_of_any_bytes,
                a_later_change_in_one_commit_wins,
                a_commit_is_visible_when_it_returns_and_durable_when_awaited,
                every_kind_of_change_survives_reopening,
                a_refused_commit_leaves_nothing,
                readers_holding_the_user_s_lock_see_whole_commits,
                a_commit_s_audit_records_are_chained_with_it,
                audit_entries_page_in_global_order_without_gaps_or_repeats,
                audit_queries_filter_by_user_kind_and_time_and_page,
                concurrent_committers_lose_nothing_acknowledged,
                a_user_s_lock_holds_off_that_user_only,
                fifty_racers_under_a_user_s_lock_count_to_fifty,
                commits_through_a_user_s_lock_keep_it_until_the_last_is_visible,
                queues_lease_due_items_earliest_first,
                finish_removes_and_retry_makes_due_again,
                enqueue_replaces_and_schedule_does_not,
                concurrent_claimers_never_get_the_same_item,
                export_then_import_reproduces_everything,
                an_export_is_one_moment_of_a_store_being_written,
                errors_never_show_a_stored_value,
                a_closed_store_says_closed,
            );
        }
    };
    (@each $new:expr; $($test:ident),* $(,)?) => {
        $(
            #[test]
            fn $test() {
                let backend = $new;
                super::$test(&backend);
            }
        )*
    };
}

conformance!(sled, Sled::new());
conformance!(postgres, Pg::start());

// --- helpers -------------------------------------------------------------

/// Applies `changes` and `audit` as one commit and waits until durable.
fn commit_audited(store: &dyn Store, changes: Vec<Change>, audit: Vec<AuditRecord>) {
    store
        .commit(Commit { changes, audit })
        .expect("the commit is applied")
        .wait()
        .expect("the commit is durable");
}

/// Applies `changes` as one commit and waits until durable.
fn commit(store: &dyn Store, changes: Vec<Change>) {
    commit_audited(store, changes, Vec::new());
}

/// Closes `store` (the only handle left) and opens the backend again: a
/// restart.
fn reopen(backend: &dyn Backend, store: Arc<dyn Store>) -> Arc<dyn Store> {
    store.close();
    drop(store);
    backend.open()
}

fn flow(id: &str, due_ms: u64, version: &str, in_progress: bool, body: &[u8]) -> FlowRecord {
    FlowRecord {
        id: id.to_owned(),
        user: format!("user-of-{id}"),
        version: version.to_owned(),
        in_progress,
        due_ms,
        body: body.to_vec(),
    }
}

fn put_flow(id: &str, due_ms: u64, body: &[u8]) -> Change {
    Change::PutFlow(flow(id, due_ms, "v1", true, body))
}

fn work(queue: Queue, id: &str, due_ms: u64, payload: &[u8]) -> WorkItem {
    WorkItem {
        queue,
        id: id.to_owned(),
        due_ms,
        payload: payload.to_vec(),
    }
}

fn record(kind: &str, detail: serde_json::Value) -> AuditRecord {
    AuditRecord {
        at_ms: 1_800_000_000_000,
        kind: kind.to_owned(),
        flow: Some("flow-1".to_owned()),
        user: Some("0a1b2c".to_owned()),
        workflow: Some("default".to_owned()),
        detail,
    }
}

fn put_kv(namespace: &str, key: &str, value: &[u8]) -> Change {
    Change::PutKv {
        namespace: namespace.to_owned(),
        key: key.to_owned(),
        value: value.to_vec(),
    }
}

/// Every flow in the due index.
fn all_due(store: &dyn Store) -> Vec<(u64, String)> {
    store.flows_due(u64::MAX, None, usize::MAX).unwrap()
}

fn due(pairs: &[(u64, &str)]) -> Vec<(u64, String)> {
    pairs.iter().map(|(d, id)| (*d, (*id).to_owned())).collect()
}

fn versions(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|v| (*v).to_owned()).collect()
}

fn ids(claims: &[Claim]) -> Vec<&str> {
    claims.iter().map(|c| c.item.id.as_str()).collect()
}

/// Every item `store` exports, in a fixed order (repository, then key).
fn exported(store: &dyn Store) -> Vec<Item> {
    let mut items = Vec::new();
    store
        .export(&mut |item| {
            items.push(item);
            Ok(())
        })
        .expect("the store exports");
    items.sort_by_key(item_key);
    items
}

fn item_key(item: &Item) -> String {
    match item {
        Item::Flow(r) => format!("flow {}", r.id),
        Item::Lockout { user, .. } => format!("lockout {user}"),
        Item::Enrollment { user, gate, .. } => format!("enrollment {user} {gate}"),
        Item::Kv { namespace, key, .. } => format!("kv {namespace} {key}"),
        Item::Work { item, .. } => format!("work {} {}", item.queue.name(), item.id),
        Item::Audit(e) => format!("audit {} {:020}", e.chain, e.seq),
    }
}

/// The work items of `store`'s `queue` as exported: id → (attempts, lease,
/// payload).
fn queue_state(store: &dyn Store, queue: Queue) -> BTreeMap<String, (u32, Option<u64>, Vec<u8>)> {
    exported(store)
        .into_iter()
        .filter_map(|item| match item {
            Item::Work {
                item,
                attempts,
                lease_until_ms,
            } if item.queue == queue => Some((item.id, (attempts, lease_until_ms, item.payload))),
            _ => None,
        })
        .collect()
}

/// Asserts that `found` holds what `expected` does, audit positions aside
/// (a copy may number them afresh); names what differs without printing
/// values (some are 64 KiB).
fn assert_same_items(found: &[Item], expected: &[Item]) {
    let keys = |items: &[Item]| items.iter().map(item_key).collect::<Vec<_>>();
    assert_eq!(keys(found), keys(expected));
    let unpositioned = |item: &Item| match item {
        Item::Audit(e) => Item::Audit(AuditEntry {
            position: 0,
            ..e.clone()
        }),
        other => other.clone(),
    };
    for (f, e) in found.iter().zip(expected) {
        assert!(
            unpositioned(f) == unpositioned(e),
            "{} differs: {}",
            item_key(f),
            match (f, e) {
                (Item::Audit(f), Item::Audit(e)) => format!("{f:?} != {e:?}"),
                (Item::Work { .. }, _) | (Item::Flow(_), _) => format!("{f:?} != {e:?}"),
                _ => "(values not shown)".to_owned(),
            }
        );
    }
}

fn all_entries(store: &dyn Store) -> Vec<AuditEntry> {
    store
        .audit()
        .entries(0, usize::MAX)
        .expect("the audit log reads")
}

/// What `verify` must say of `entries`: per chain, how many and the last
/// hash; and that each chain links from the genesis hash without gaps.
fn summary_of(entries: &[AuditEntry]) -> AuditSummary {
    let mut chains: BTreeMap<&str, Vec<&AuditEntry>> = BTreeMap::new();
    for e in entries {
        chains.entry(&e.chain).or_default().push(e);
    }
    AuditSummary::of(
        chains
            .into_iter()
            .map(|(chain, entries)| {
                let mut prev = GENESIS_HASH.to_owned();
                for (i, e) in entries.iter().enumerate() {
                    assert_eq!(e.seq, i as u64, "chain {chain} has a gap or a repeat");
                    assert_eq!(e.prev_hash, prev, "chain {chain} is not linked at {i}");
                    prev = e.hash.clone();
                }
                ChainSummary {
                    chain: chain.to_owned(),
                    entries: entries.len() as u64,
                    head: prev,
                }
            })
            .collect(),
    )
}

fn is_closed<T: std::fmt::Debug>(result: Result<T, StoreError>) -> bool {
    matches!(result, Err(StoreError::Closed))
}

// --- repositories ----------------------------------------------------------

fn flows_are_stored_replaced_and_deleted(b: &dyn Backend) {
    let store = b.open();
    assert_eq!(store.flow("f1").unwrap(), None);
    commit(&*store, vec![put_flow("f1", 10, b"one")]);
    assert_eq!(store.flow("f1").unwrap(), Some(b"one".to_vec()));
    commit(&*store, vec![put_flow("f1", 10, b"two")]);
    assert_eq!(store.flow("f1").unwrap(), Some(b"two".to_vec()));
    let every_byte: Vec<u8> = (0..=255).collect();
    commit(&*store, vec![put_flow("f2", 20, &every_byte)]);
    commit(
        &*store,
        vec![Change::DeleteFlow {
            id: "f1".to_owned(),
        }],
    );
    assert_eq!(store.flow("f1").unwrap(), None);
    assert_eq!(store.flow("f2").unwrap(), Some(every_byte.clone()));
    // Deleting what is not there is no error.
    commit(
        &*store,
        vec![Change::DeleteFlow {
            id: "never-stored".to_owned(),
        }],
    );
    let store = reopen(b, store);
    assert_eq!(store.flow("f1").unwrap(), None);
    assert_eq!(store.flow("f2").unwrap(), Some(every_byte));
}

/// 2100-01-01 in milliseconds since the Unix epoch.
const YEAR_2100_MS: u64 = 4_102_444_800_000;

fn flows_due_pages_in_due_then_id_order(b: &dyn Backend) {
    let store = b.open();
    assert_eq!(all_due(&*store), []);
    commit(
        &*store,
        vec![
            put_flow("c", 300, b"c"),
            put_flow("b", 100, b"b"),
            put_flow("a9", 100, b"a9"),
            put_flow("a10", 100, b"a10"),
            put_flow("a", 100, b"a"),
            put_flow("d", 200, b"d"),
            put_flow("late", YEAR_2100_MS, b"late"),
            put_flow("never", u64::MAX, b"never"),
        ],
    );
    let in_order = due(&[
        (100, "a"),
        (100, "a10"),
        (100, "a9"),
        (100, "b"),
        (200, "d"),
        (300, "c"),
    ]);
    assert_eq!(store.flows_due(1_000, None, 100).unwrap(), in_order);
    // Due means due at or before `now`.
    assert_eq!(store.flows_due(99, None, 100).unwrap(), []);
    assert_eq!(store.flows_due(100, None, 100).unwrap(), in_order[..4]);
    assert_eq!(store.flows_due(1_000, None, 0).unwrap(), []);
    assert_eq!(store.flows_due(1_000, None, 3).unwrap(), in_order[..3]);
    // A cursor inside a group of equal due times, and one on no flow.
    assert_eq!(
        store
            .flows_due(1_000, Some((100, "a10".to_owned())), 100)
            .unwrap(),
        in_order[2..]
    );
    assert_eq!(
        store
            .flows_due(1_000, Some((150, "zzz".to_owned())), 100)
            .unwrap(),
        in_order[4..]
    );
    // Paging by the last one seen visits each once.
    let mut pages = Vec::new();
    let mut after = None;
    loop {
        let page = store.flows_due(u64::MAX, after.clone(), 2).unwrap();
        assert!(page.len() <= 2);
        let Some(last) = page.last() else { break };
        after = Some(last.clone());
        pages.extend(page);
    }
    let mut everything = in_order.clone();
    everything.push((YEAR_2100_MS, "late".to_owned()));
    assert_eq!(
        store.flows_due(YEAR_2100_MS, None, 100).unwrap(),
        everything
    );
    // `u64::MAX` is never: due only at the end of time.
    everything.push((u64::MAX, "never".to_owned()));
    assert_eq!(pages, everything);
    assert_eq!(all_due(&*store), everything);
}

fn replacing_a_flow_moves_it_in_the_due_index(b: &dyn Backend) {
    let store = b.open();
    commit(
        &*store,
        vec![put_flow("f", 100, b"1"), put_flow("g", 300, b"1")],
    );
    commit(&*store, vec![put_flow("f", 500, b"2")]);
    assert_eq!(store.flows_due(400, None, 10).unwrap(), due(&[(300, "g")]));
    assert_eq!(all_due(&*store), due(&[(300, "g"), (500, "f")]));
    commit(&*store, vec![put_flow("f", 50, b"3")]);
    assert_eq!(store.flows_due(60, None, 10).unwrap(), due(&[(50, "f")]));
    assert_eq!(all_due(&*store), due(&[(50, "f"), (300, "g")]));
    // The same due time again: still once.
    commit(&*store, vec![put_flow("f", 50, b"4")]);
    assert_eq!(all_due(&*store), due(&[(50, "f"), (300, "g")]));
    let store = reopen(b, store);
    assert_eq!(all_due(&*store), due(&[(50, "f"), (300, "g")]));
    assert_eq!(store.flow("f").unwrap(), Some(b"4".to_vec()));
}

fn deleted_flows_leave_the_due_index(b: &dyn Backend) {
    let store = b.open();
    commit(
        &*store,
        vec![
            Change::PutFlow(flow("f1", 10, "v1", true, b"1")),
            Change::PutFlow(flow("f2", 20, "v2", true, b"2")),
            Change::PutFlow(flow("f3", 30, "v3", false, b"3")),
        ],
    );
    commit(
        &*store,
        vec![
            Change::DeleteFlow {
                id: "f1".to_owned(),
            },
            Change::DeleteFlow {
                id: "f3".to_owned(),
            },
        ],
    );
    assert_eq!(all_due(&*store), due(&[(20, "f2")]));
    assert_eq!(store.versions_in_progress().unwrap(), versions(&["v2"]));
    let store = reopen(b, store);
    assert_eq!(all_due(&*store), due(&[(20, "f2")]));
    assert_eq!(store.versions_in_progress().unwrap(), versions(&["v2"]));
}

fn versions_in_progress_follow_the_flows(b: &dyn Backend) {
    let store = b.open();
    assert_eq!(store.versions_in_progress().unwrap(), versions(&[]));
    commit(
        &*store,
        vec![
            Change::PutFlow(flow("f1", 1, "v1", true, b"")),
            Change::PutFlow(flow("f2", 1, "v1", true, b"")),
            Change::PutFlow(flow("f3", 1, "v2", true, b"")),
            Change::PutFlow(flow("f4", 1, "v3", false, b"")),
        ],
    );
    assert_eq!(
        store.versions_in_progress().unwrap(),
        versions(&["v1", "v2"])
    );
    // A flow that ends no longer holds its version.
    commit(
        &*store,
        vec![Change::PutFlow(flow("f3", 1, "v2", false, b""))],
    );
    assert_eq!(store.versions_in_progress().unwrap(), versions(&["v1"]));
    // One of two flows on a version goes: the version stays.
    commit(
        &*store,
        vec![Change::DeleteFlow {
            id: "f1".to_owned(),
        }],
    );
    assert_eq!(store.versions_in_progress().unwrap(), versions(&["v1"]));
    commit(
        &*store,
        vec![
            Change::DeleteFlow {
                id: "f2".to_owned(),
            },
            Change::PutFlow(flow("f5", 1, "v4", true, b"")),
        ],
    );
    assert_eq!(store.versions_in_progress().unwrap(), versions(&["v4"]));
    let store = reopen(b, store);
    assert_eq!(store.versions_in_progress().unwrap(), versions(&["v4"]));
}

fn lockout_histories_are_per_user(b: &dyn Backend) {
    let store = b.open();
    assert_eq!(store.lockout("u1").unwrap(), None);
    commit(
        &*store,
        vec![
            Change::PutLockout {
                user: "u1".to_owned(),
                history: b"h1".to_vec(),
            },
            Change::PutLockout {
                user: "u2".to_owned(),
                history: b"h2".to_vec(),
            },
        ],
    );
    commit(
        &*store,
        vec![Change::PutLockout {
            user: "u1".to_owned(),
            history: b"h1 again".to_vec(),
        }],
    );
    assert_eq!(store.lockout("u1").unwrap(), Some(b"h1 again".to_vec()));
    assert_eq!(store.lockout("u2").unwrap(), Some(b"h2".to_vec()));
    assert_eq!(store.lockout("u3").unwrap(), None);
    let store = reopen(b, store);
    assert_eq!(store.lockout("u1").unwrap(), Some(b"h1 again".to_vec()));
    assert_eq!(store.lockout("u2").unwrap(), Some(b"h2".to_vec()));
}

fn enrollments_are_per_user_and_gate(b: &dyn Backend) {
    let (u1, u2) = ("5d41402abc4b2a76", "7d793037a0760186");
    let put = |user: &str, gate: &str, data: &[u8]| Change::PutEnrollment {
        user: user.to_owned(),
        gate: gate.to_owned(),
        data: data.to_vec(),
    };
    let store = b.open();
    commit(
        &*store,
        vec![
            put(u1, "totp", b"u1 totp"),
            put(u1, "questions", b"u1 questions"),
            put(u2, "totp", b"u2 totp"),
        ],
    );
    assert_eq!(
        store.enrollment(u1, "totp").unwrap(),
        Some(b"u1 totp".to_vec())
    );
    assert_eq!(
        store.enrollment(u1, "questions").unwrap(),
        Some(b"u1 questions".to_vec())
    );
    assert_eq!(
        store.enrollment(u2, "totp").unwrap(),
        Some(b"u2 totp".to_vec())
    );
    assert_eq!(store.enrollment(u2, "questions").unwrap(), None);
    commit(
        &*store,
        vec![
            Change::DeleteEnrollment {
                user: u1.to_owned(),
                gate: "totp".to_owned(),
            },
            put(u2, "totp", b"u2 totp again"),
        ],
    );
    assert_eq!(store.enrollment(u1, "totp").unwrap(), None);
    assert_eq!(
        store.enrollment(u1, "questions").unwrap(),
        Some(b"u1 questions".to_vec())
    );
    assert_eq!(
        store.enrollment(u2, "totp").unwrap(),
        Some(b"u2 totp again".to_vec())
    );
    let store = reopen(b, store);
    assert_eq!(store.enrollment(u1, "totp").unwrap(), None);
    assert_eq!(
        store.enrollment(u2, "totp").unwrap(),
        Some(b"u2 totp again".to_vec())
    );
}

fn kv_namespaces_do_not_see_each_other(b: &dyn Backend) {
    let store = b.open();
    commit(
        &*store,
        vec![
            put_kv("alpha", "key", b"alpha's"),
            put_kv("alpha2", "key", b"alpha2's"),
            put_kv("beta", "key", b"beta's"),
            put_kv("ns", "x/y", b"ns x/y"),
            put_kv("ns/x", "y", b"ns/x y"),
        ],
    );
    assert_eq!(
        store.kv_get("alpha", "key").unwrap(),
        Some(b"alpha's".to_vec())
    );
    assert_eq!(
        store.kv_get("alpha2", "key").unwrap(),
        Some(b"alpha2's".to_vec())
    );
    assert_eq!(
        store.kv_get("beta", "key").unwrap(),
        Some(b"beta's".to_vec())
    );
    assert_eq!(store.kv_get("gamma", "key").unwrap(), None);
    assert_eq!(store.kv_get("ns", "x/y").unwrap(), Some(b"ns x/y".to_vec()));
    assert_eq!(store.kv_get("ns/x", "y").unwrap(), Some(b"ns/x y".to_vec()));
    assert_eq!(
        store.kv_scan("alpha", "", 100).unwrap(),
        [("key".to_owned(), b"alpha's".to_vec())]
    );
    assert_eq!(
        store.kv_scan("ns", "", 100).unwrap(),
        [("x/y".to_owned(), b"ns x/y".to_vec())]
    );
    commit(
        &*store,
        vec![Change::DeleteKv {
            namespace: "alpha".to_owned(),
            key: "key".to_owned(),
        }],
    );
    assert_eq!(store.kv_get("alpha", "key").unwrap(), None);
    assert_eq!(
        store.kv_get("alpha2", "key").unwrap(),
        Some(b"alpha2's".to_vec())
    );
    assert_eq!(store.kv_scan("alpha", "", 100).unwrap(), []);
    let store = reopen(b, store);
    assert_eq!(store.kv_get("alpha", "key").unwrap(), None);
    assert_eq!(
        store.kv_get("beta", "key").unwrap(),
        Some(b"beta's".to_vec())
    );
}

fn kv_scan_and_keys_are_in_byte_order_by_literal_prefix_with_a_limit(b: &dyn Backend) {
    let store = b.open();
    // Inserted out of order; `_` and `%` are wildcards to SQL's LIKE, and
    // byte order is not a locale's collation.
    let keys = [
        "user/é", "user/a/b", "user/B", "userA", "user%", "user/_x", "usex", "user", "user/a",
        "other", "user/Z1",
    ];
    commit(
        &*store,
        keys.iter()
            .map(|k| put_kv("p", k, format!("value of {k}").as_bytes()))
            .collect(),
    );
    let scan = |prefix: &str, limit: usize| -> Vec<String> {
        let found = store.kv_scan("p", prefix, limit).unwrap();
        for (key, value) in &found {
            assert_eq!(value, format!("value of {key}").as_bytes());
        }
        let keys: Vec<String> = found.into_iter().map(|(k, _)| k).collect();
        // The keys alone: the same.
        assert_eq!(store.kv_keys("p", prefix, limit).unwrap(), keys);
        keys
    };
    assert_eq!(
        scan("user/", 100),
        [
            "user/B", "user/Z1", "user/_x", "user/a", "user/a/b", "user/é"
        ]
    );
    assert_eq!(scan("user/", 3), ["user/B", "user/Z1", "user/_x"]);
    assert_eq!(scan("user/", 0), Vec::<String>::new());
    assert_eq!(
        scan("user", 100),
        [
            "user", "user%", "user/B", "user/Z1", "user/_x", "user/a", "user/a/b", "user/é",
            "userA"
        ]
    );
    assert_eq!(scan("user_", 100), Vec::<String>::new());
    assert_eq!(scan("user%", 100), ["user%"]);
    assert_eq!(scan("user/_", 100), ["user/_x"]);
    let mut sorted = keys.to_vec();
    sorted.sort_unstable();
    assert_eq!(scan("", usize::MAX), sorted);
    assert_eq!(scan("nothing", 100), Vec::<String>::new());
}

fn kv_holds_64_kib_values_of_any_bytes(b: &dyn Backend) {
    let big: Vec<u8> = (0..64 * 1024).map(|i: u32| (i * 7 % 256) as u8).collect();
    let store = b.open();
    commit(&*store, vec![put_kv("ns", "big", &big)]);
    assert!(store.kv_get("ns", "big").unwrap() == Some(big.clone()));
    assert!(store.kv_scan("ns", "b", 10).unwrap() == [("big".to_owned(), big.clone())]);
    let store = reopen(b, store);
    assert!(store.kv_get("ns", "big").unwrap() == Some(big));
    commit(&*store, vec![put_kv("ns", "big", b"small")]);
    assert_eq!(store.kv_get("ns", "big").unwrap(), Some(b"small".to_vec()));
}

// --- commits -----------------------------------------------------------------

fn a_later_change_in_one_commit_wins(b: &dyn Backend) {
    let store = b.open();
    commit(&*store, vec![put_flow("old", 5, b"old")]);
    // A flow stored twice in one commit: the second one, indexed once.
    commit(
        &*store,
        vec![
            put_flow("new", 10, b"first"),
            put_flow("new", 20, b"second"),
            put_flow("old", 30, b"first"),
            put_flow("old", 40, b"second"),
        ],
    );
    assert_eq!(store.flow("new").unwrap(), Some(b"second".to_vec()));
    assert_eq!(store.flow("old").unwrap(), Some(b"second".to_vec()));
    assert_eq!(all_due(&*store), due(&[(20, "new"), (40, "old")]));
    // Stored, then deleted: gone, also from the index.
    commit(
        &*store,
        vec![
            Change::PutFlow(flow("brief", 30, "v9", true, b"")),
            Change::DeleteFlow {
                id: "brief".to_owned(),
            },
        ],
    );
    assert_eq!(store.flow("brief").unwrap(), None);
    assert_eq!(all_due(&*store), due(&[(20, "new"), (40, "old")]));
    assert_eq!(store.versions_in_progress().unwrap(), versions(&["v1"]));
    // Deleted, then stored again.
    commit(
        &*store,
        vec![
            Change::DeleteFlow {
                id: "old".to_owned(),
            },
            put_flow("old", 50, b"third"),
        ],
    );
    assert_eq!(store.flow("old").unwrap(), Some(b"third".to_vec()));
    assert_eq!(all_due(&*store), due(&[(20, "new"), (50, "old")]));
    // The other repositories.
    commit(
        &*store,
        vec![
            put_kv("ns", "x", b"1"),
            Change::DeleteKv {
                namespace: "ns".to_owned(),
                key: "x".to_owned(),
            },
            Change::DeleteKv {
                namespace: "ns".to_owned(),
                key: "y".to_owned(),
            },
            put_kv("ns", "y", b"2"),
            Change::PutEnrollment {
                user: "u".to_owned(),
                gate: "g".to_owned(),
                data: b"d".to_vec(),
            },
            Change::DeleteEnrollment {
                user: "u".to_owned(),
                gate: "g".to_owned(),
            },
            Change::PutLockout {
                user: "u".to_owned(),
                history: b"1".to_vec(),
            },
            Change::PutLockout {
                user: "u".to_owned(),
                history: b"2".to_vec(),
            },
        ],
    );
    assert_eq!(store.kv_get("ns", "x").unwrap(), None);
    assert_eq!(store.kv_get("ns", "y").unwrap(), Some(b"2".to_vec()));
    assert_eq!(store.enrollment("u", "g").unwrap(), None);
    assert_eq!(store.lockout("u").unwrap(), Some(b"2".to_vec()));
    // Work enqueued twice: the second, claimed once; enqueued and finished:
    // never handed out.
    commit(
        &*store,
        vec![
            Change::Enqueue(work(Queue::Outbox, "w", 10, b"first")),
            Change::Enqueue(work(Queue::Outbox, "w", 20, b"second")),
            Change::Enqueue(work(Queue::Outbox, "v", 5, b"v")),
            Change::Finish {
                queue: Queue::Outbox,
                id: "v".to_owned(),
            },
        ],
    );
    assert_eq!(store.claim_due(Queue::Outbox, 15, 1_000, 10).unwrap(), []);
    let claims = store.claim_due(Queue::Outbox, 20, 1_000, 10).unwrap();
    assert_eq!(ids(&claims), ["w"]);
    assert_eq!(claims[0].item.payload, b"second");
    assert_eq!(
        store
            .claim_due(Queue::Outbox, 5_000, 1_000, 10)
            .unwrap()
            .len(),
        1
    );
    let store = reopen(b, store);
    assert_eq!(all_due(&*store), due(&[(20, "new"), (50, "old")]));
}

fn a_commit_is_visible_when_it_returns_and_durable_when_awaited(b: &dyn Backend) {
    let store = b.open();
    // On a thread: seen before the wait.
    let durable = store
        .commit(Commit {
            changes: vec![put_flow("f", 1, b"thread")],
            audit: vec![record("flow.started", json!({}))],
        })
        .unwrap();
    assert_eq!(store.flow("f").unwrap(), Some(b"thread".to_vec()));
    durable.wait().unwrap();
    // As a future, on one thread with many commits waiting together.
    let exec = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    exec.block_on(async {
        let mut pending = Vec::new();
        for i in 0..16 {
            let key = format!("k{i:02}");
            let durable = store
                .commit(Commit {
                    changes: vec![put_kv("ns", &key, b"v")],
                    audit: vec![],
                })
                .unwrap();
            assert_eq!(store.kv_get("ns", &key).unwrap(), Some(b"v".to_vec()));
            pending.push(tokio::spawn(durable));
        }
        for p in pending {
            p.await.unwrap().unwrap();
        }
    });
    // An empty commit is no error.
    store.commit(Commit::default()).unwrap().wait().unwrap();
    let store = reopen(b, store);
    assert_eq!(store.flow("f").unwrap(), Some(b"thread".to_vec()));
    assert_eq!(store.kv_scan("ns", "k", 100).unwrap().len(), 16);
    assert_eq!(store.audit().verify().unwrap().entries, 1);
}

fn every_kind_of_change_survives_reopening(b: &dyn Backend) {
    let store = b.open();
    commit(
        &*store,
        vec![
            Change::Enqueue(work(Queue::Timers, "gone", 1, b"")),
            Change::PutEnrollment {
                user: "u".to_owned(),
                gate: "gone".to_owned(),
                data: b"".to_vec(),
            },
            put_kv("ns", "gone", b""),
            put_flow("gone", 1, b""),
        ],
    );
    commit_audited(
        &*store,
        vec![
            Change::PutFlow(flow("f", 100, "v7", true, b"flow body")),
            Change::DeleteFlow {
                id: "gone".to_owned(),
            },
            Change::PutLockout {
                user: "u".to_owned(),
                history: b"history".to_vec(),
            },
            Change::PutEnrollment {
                user: "u".to_owned(),
                gate: "totp".to_owned(),
                data: b"sealed".to_vec(),
            },
            Change::DeleteEnrollment {
                user: "u".to_owned(),
                gate: "gone".to_owned(),
            },
            put_kv("ns", "k", b"kv value"),
            Change::DeleteKv {
                namespace: "ns".to_owned(),
                key: "gone".to_owned(),
            },
            Change::Enqueue(work(Queue::Outbox, "o", 200, b"outbox payload")),
            Change::Schedule(work(Queue::Timers, "t", 300, b"timer payload")),
            Change::Finish {
                queue: Queue::Timers,
                id: "gone".to_owned(),
            },
        ],
        vec![
            record("flow.started", json!({"n": 1})),
            record("flow.step", json!({"n": 2})),
        ],
    );
    let store = reopen(b, store);
    assert_eq!(store.flow("f").unwrap(), Some(b"flow body".to_vec()));
    assert_eq!(store.flow("gone").unwrap(), None);
    assert_eq!(all_due(&*store), due(&[(100, "f")]));
    assert_eq!(store.versions_in_progress().unwrap(), versions(&["v7"]));
    assert_eq!(store.lockout("u").unwrap(), Some(b"history".to_vec()));
    assert_eq!(
        store.enrollment("u", "totp").unwrap(),
        Some(b"sealed".to_vec())
    );
    assert_eq!(store.enrollment("u", "gone").unwrap(), None);
    assert_eq!(store.kv_get("ns", "k").unwrap(), Some(b"kv value".to_vec()));
    assert_eq!(store.kv_get("ns", "gone").unwrap(), None);
    let outbox = store.claim_due(Queue::Outbox, 1_000, 10, 10).unwrap();
    assert_eq!(ids(&outbox), ["o"]);
    assert_eq!(
        outbox[0].item,
        work(Queue::Outbox, "o", 200, b"outbox payload")
    );
    let timers = store.claim_due(Queue::Timers, 1_000, 10, 10).unwrap();
    assert_eq!(ids(&timers), ["t"]);
    assert_eq!(timers[0].item.payload, b"timer payload");
    let entries = all_entries(&*store);
    assert_eq!(
        entries
            .iter()
            .map(|e| e.record.kind.as_str())
            .collect::<Vec<_>>(),
        ["flow.started", "flow.step"]
    );
    assert_eq!(store.audit().verify().unwrap(), summary_of(&entries));
}

fn a_refused_commit_leaves_nothing(b: &dyn Backend) {
    let store = b.open();
    commit(&*store, vec![put_kv("ns", "before", b"1")]);
    store.close();
    let refused = store.commit(Commit {
        changes: vec![
            put_flow("f", 1, b"body"),
            put_kv("ns", "after", b"2"),
            Change::PutLockout {
                user: "u".to_owned(),
                history: b"h".to_vec(),
            },
            Change::Enqueue(work(Queue::Outbox, "o", 1, b"p")),
        ],
        audit: vec![record("flow.started", json!({}))],
    });
    assert!(is_closed(refused));
    drop(store);
    let store = b.open();
    assert_eq!(store.kv_get("ns", "before").unwrap(), Some(b"1".to_vec()));
    assert_eq!(store.kv_get("ns", "after").unwrap(), None);
    assert_eq!(store.flow("f").unwrap(), None);
    assert_eq!(store.lockout("u").unwrap(), None);
    assert_eq!(all_due(&*store), []);
    assert_eq!(store.claim_due(Queue::Outbox, 10, 10, 10).unwrap(), []);
    assert_eq!(store.audit().verify().unwrap().entries, 0);
    assert_eq!(all_entries(&*store), []);
}

fn readers_holding_the_user_s_lock_see_whole_commits(b: &dyn Backend) {
    const USER: &str = "9f86d081884c7d65";
    let store = b.open();
    let peer = b.peer(&store);
    let done = AtomicBool::new(false);
    let seen = AtomicUsize::new(0);
    std::thread::scope(|s| {
        s.spawn(|| {
            for n in 1..=150u32 {
                let value = n.to_string().into_bytes();
                let _lock = store.lock_user(USER).unwrap();
                commit(
                    &*store,
                    vec![
                        Change::PutLockout {
                            user: USER.to_owned(),
                            history: value.clone(),
                        },
                        put_kv("ns", USER, &value),
                        Change::PutEnrollment {
                            user: USER.to_owned(),
                            gate: "g".to_owned(),
                            data: value.clone(),
                        },
                        put_flow(USER, u64::from(n), &value),
                    ],
                );
            }
            done.store(true, Ordering::SeqCst);
        });
        for reader in [&store, &peer] {
            let (done, seen) = (&done, &seen);
            s.spawn(move || {
                while !done.load(Ordering::SeqCst) {
                    let _lock = reader.lock_user(USER).unwrap();
                    let values = [
                        reader.lockout(USER).unwrap(),
                        reader.kv_get("ns", USER).unwrap(),
                        reader.enrollment(USER, "g").unwrap(),
                        reader.flow(USER).unwrap(),
                    ];
                    assert!(
                        values.iter().all(|v| *v == values[0]),
                        "a reader holding the user's lock saw part of a commit: {values:?}"
                    );
                    seen.fetch_add(1, Ordering::SeqCst);
                }
            });
        }
    });
    assert!(seen.load(Ordering::SeqCst) > 0);
    assert_eq!(store.lockout(USER).unwrap(), Some(b"150".to_vec()));
}

// --- the audit log -------------------------------------------------------------

fn a_commit_s_audit_records_are_chained_with_it(b: &dyn Backend) {
    let store = b.open();
    let empty = store.audit().verify().unwrap();
    assert_eq!(empty.entries, 0);
    assert_eq!(all_entries(&*store), []);

    let records: Vec<AuditRecord> = (0..3)
        .map(|i| {
            record(
                "flow.step",
                json!({"step": i, "nested": {"b": 1, "a": [true, null]}}),
            )
        })
        .collect();
    commit_audited(&*store, vec![put_flow("f", 1, b"")], records.clone());
    let entries = all_entries(&*store);
    assert_eq!(
        entries.iter().map(|e| &e.record).collect::<Vec<_>>(),
        records.iter().collect::<Vec<_>>()
    );
    assert!(entries.iter().all(|e| e.chain == entries[0].chain));
    assert_eq!(entries[0].prev_hash, GENESIS_HASH);

    // Records alone, and a commit without records.
    let appended = record("flow.ended", json!({"outcome": "reset"}));
    store
        .audit()
        .append(vec![appended.clone()])
        .unwrap()
        .wait()
        .unwrap();
    commit(&*store, vec![put_flow("f", 2, b"")]);
    let entries = all_entries(&*store);
    assert_eq!(entries.len(), 4);
    assert_eq!(entries[3].record, appended);
    let summary = store.audit().verify().unwrap();
    assert_eq!(summary, summary_of(&entries));
    assert_eq!(summary.entries, 4);

    let store = reopen(b, store);
    assert_eq!(all_entries(&*store), entries);
    assert_eq!(store.audit().verify().unwrap(), summary);
    // The log goes on from where it was.
    commit_audited(
        &*store,
        vec![],
        vec![record("flow.started", json!({"after": "restart"}))],
    );
    let after = all_entries(&*store);
    assert_eq!(after[..4], entries[..]);
    assert_eq!(after.len(), 5);
    let new = &after[4];
    match summary.chains.iter().find(|c| c.chain == new.chain) {
        Some(chain) => {
            assert_eq!(new.seq, chain.entries);
            assert_eq!(new.prev_hash, chain.head);
        }
        None => {
            assert_eq!(new.seq, 0);
            assert_eq!(new.prev_hash, GENESIS_HASH);
        }
    }
    assert_eq!(store.audit().verify().unwrap(), summary_of(&after));
}

fn audit_entries_page_in_global_order_without_gaps_or_repeats(b: &dyn Backend) {
    let store = b.open();
    let peer = b.peer(&store);
    // Sequential commits through both stores: global order is their order.
    for i in 0..6 {
        let s = if i % 2 == 0 { &store } else { &peer };
        commit_audited(&**s, vec![], vec![record("sequential", json!({"i": i}))]);
    }
    // Concurrent committers, each with groups of one to three records.
    std::thread::scope(|scope| {
        for t in 0..6u32 {
            let s = if t % 2 == 0 { &store } else { &peer };
            scope.spawn(move || {
                for i in 0..12u32 {
                    let records = (0..=(i % 3))
                        .map(|j| record("concurrent", json!({"t": t, "i": i, "j": j})))
                        .collect();
                    commit_audited(&**s, vec![], records);
                }
            });
        }
    });
    let all = all_entries(&*store);
    // 6 sequential, 6 threads × 12 commits × (1 + 2 + 3) / 3 × ... records.
    let concurrent: usize = 6 * (0..12).map(|i| 1 + i % 3).sum::<usize>();
    assert_eq!(all.len(), 6 + concurrent);
    assert!(
        all.windows(2).all(|w| w[0].position < w[1].position),
        "positions do not increase"
    );
    let sequential: Vec<_> = all
        .iter()
        .filter(|e| e.record.kind == "sequential")
        .map(|e| e.record.detail["i"].as_u64().unwrap())
        .collect();
    assert_eq!(sequential, [0, 1, 2, 3, 4, 5]);
    // Each thread's records in the order it committed them, each once.
    for t in 0..6u64 {
        let mine: Vec<(u64, u64)> = all
            .iter()
            .filter(|e| e.record.kind == "concurrent" && e.record.detail["t"] == t)
            .map(|e| {
                (
                    e.record.detail["i"].as_u64().unwrap(),
                    e.record.detail["j"].as_u64().unwrap(),
                )
            })
            .collect();
        let expected: Vec<(u64, u64)> = (0..12u64)
            .flat_map(|i| (0..=(i % 3)).map(move |j| (i, j)))
            .collect();
        assert_eq!(mine, expected, "thread {t}'s records");
    }
    // Paging by the position after the last one seen.
    for limit in [1, 7, 50] {
        let mut paged = Vec::new();
        let mut from = 0;
        loop {
            let page = store.audit().entries(from, limit).unwrap();
            assert!(page.len() <= limit);
            let Some(last) = page.last() else { break };
            from = last.position + 1;
            paged.extend(page);
        }
        assert_eq!(paged, all, "paging {limit} at a time");
    }
    let middle = &all[all.len() / 2];
    assert_eq!(
        store.audit().entries(middle.position, 3).unwrap(),
        all[all.len() / 2..all.len() / 2 + 3]
    );
    assert_eq!(store.audit().entries(0, 0).unwrap(), []);
    let end = all.last().unwrap().position + 1;
    assert_eq!(store.audit().entries(end, 10).unwrap(), []);
    assert_eq!(peer.audit().entries(0, usize::MAX).unwrap(), all);
    assert_eq!(store.audit().verify().unwrap(), summary_of(&all));
}

fn audit_queries_filter_by_user_kind_and_time_and_page(b: &dyn Backend) {
    let store = b.open();
    let peer = b.peer(&store);
    let users = [Some("u-1"), Some("u-2"), None, Some("u-10")];
    let kinds = ["flow.started", "gate.failed", "flow.ended"];
    let entry = |i: u64| AuditRecord {
        at_ms: 1_800_000_000_000 + i * 1_000,
        kind: kinds[(i % 3) as usize].to_owned(),
        flow: Some(format!("flow-{}", i % 5)),
        user: users[(i % 4) as usize].map(str::to_owned),
        workflow: Some("default".to_owned()),
        detail: json!({"i": i}),
    };
    // Groups of one to three records, through both stores, some with a
    // change beside them.
    let mut i = 0;
    for n in 0..40u64 {
        let s = if n % 2 == 0 { &store } else { &peer };
        let records: Vec<_> = (0..=(n % 3)).map(|k| entry(i + k)).collect();
        i += records.len() as u64;
        let changes = if n % 4 == 0 {
            vec![put_kv("ns", &format!("k{n}"), b"v")]
        } else {
            vec![]
        };
        commit_audited(&**s, changes, records);
    }
    let check = |store: &dyn Store, all: &[AuditEntry]| {
        let queries = [
            AuditQuery {
                user: Some("u-1".to_owned()),
                limit: 1000,
                ..AuditQuery::default()
            },
            // `u-10` starts with `u-1`: a user is matched whole.
            AuditQuery {
                user: Some("u-10".to_owned()),
                limit: 1000,
                ..AuditQuery::default()
            },
            AuditQuery {
                user: Some("nobody".to_owned()),
                limit: 1000,
                ..AuditQuery::default()
            },
            AuditQuery {
                user: Some("u-2".to_owned()),
                kinds: vec!["gate.failed".to_owned(), "flow.ended".to_owned()],
                limit: 1000,
                ..AuditQuery::default()
            },
            AuditQuery {
                from_ms: Some(1_800_000_010_000),
                to_ms: Some(1_800_000_040_000),
                limit: 1000,
                ..AuditQuery::default()
            },
            AuditQuery {
                user: Some("u-1".to_owned()),
                from_ms: Some(1_800_000_020_000),
                limit: 1000,
                ..AuditQuery::default()
            },
            AuditQuery {
                kinds: vec!["flow.started".to_owned()],
                limit: 1000,
                ..AuditQuery::default()
            },
        ];
        for query in queries {
            let expected: Vec<_> = all.iter().filter(|e| query.selects(e)).cloned().collect();
            assert_eq!(store.audit().query(&query).unwrap(), expected, "{query:?}");
            // Page by page, after the last position seen.
            for limit in [1, 4] {
                let mut paged = Vec::new();
                let mut after = None;
                loop {
                    let page = store
                        .audit()
                        .query(&AuditQuery {
                            after,
                            limit,
                            ..query.clone()
                        })
                        .unwrap();
                    assert!(page.len() <= limit);
                    let Some(last) = page.last() else { break };
                    after = Some(last.position);
                    paged.extend(page);
                }
                assert_eq!(paged, expected, "{query:?} {limit} at a time");
            }
        }
    };
    let all = all_entries(&*store);
    assert_eq!(all.len() as u64, i);
    assert!(all.iter().any(|e| e.record.user.as_deref() == Some("u-10")));
    check(&*store, &all);
    check(&*peer, &all);
    drop(peer);
    let store = reopen(b, store);
    check(&*store, &all);
    // A copy answers the same queries (its index is built on import).
    let copy = b.empty();
    copy.import(exported(&*store)).unwrap();
    let copied = all_entries(&*copy);
    check(&*copy, &copied);
}

fn concurrent_committers_lose_nothing_acknowledged(b: &dyn Backend) {
    const THREADS: u32 = 8;
    const EACH: u32 = 40;
    let store = b.open();
    {
        let peer = b.peer(&store);
        std::thread::scope(|scope| {
            for t in 0..THREADS {
                let s = if t % 2 == 0 { &store } else { &peer };
                scope.spawn(move || {
                    for i in 0..EACH {
                        let id = format!("{t:02}-{i:03}");
                        commit_audited(
                            &**s,
                            vec![
                                put_flow(&id, u64::from(i), id.as_bytes()),
                                put_kv("ns", &id, id.as_bytes()),
                            ],
                            vec![record("committed", json!({"id": id}))],
                        );
                    }
                });
            }
        });
        peer.close();
    }
    let store = reopen(b, store);
    let flows: BTreeSet<String> = all_due(&*store).into_iter().map(|(_, id)| id).collect();
    let kv: BTreeSet<String> = store
        .kv_scan("ns", "", usize::MAX)
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    let audited: BTreeSet<String> = all_entries(&*store)
        .iter()
        .map(|e| e.record.detail["id"].as_str().unwrap().to_owned())
        .collect();
    let expected: BTreeSet<String> = (0..THREADS)
        .flat_map(|t| (0..EACH).map(move |i| format!("{t:02}-{i:03}")))
        .collect();
    assert_eq!(flows, expected);
    assert_eq!(kv, expected);
    assert_eq!(audited, expected);
    for id in &expected {
        assert_eq!(store.flow(id).unwrap(), Some(id.clone().into_bytes()));
    }
    assert_eq!(
        store.audit().verify().unwrap().entries,
        u64::from(THREADS * EACH)
    );
}

// --- users' locks ------------------------------------------------------------

fn a_user_s_lock_holds_off_that_user_only(b: &dyn Backend) {
    let store = b.open();
    let peer = b.peer(&store);
    let events = Mutex::new(Vec::new());
    let held = store.lock_user("alice").unwrap();
    std::thread::scope(|s| {
        // Other users are not held off, in this store or the peer.
        let (tx, rx) = std::sync::mpsc::channel();
        for (name, other) in [("same store", &store), ("peer", &peer)] {
            let tx = tx.clone();
            s.spawn(move || {
                let _bob = other.lock_user("bob").unwrap();
                tx.send(name).unwrap();
            });
        }
        for _ in 0..2 {
            rx.recv_timeout(Duration::from_secs(60))
                .expect("locking bob waited for alice's lock");
        }
        // The same user is, from another thread and from the peer.
        let waiters: Vec<_> = [("same store", &store), ("peer", &peer)]
            .into_iter()
            .map(|(name, other)| {
                let events = &events;
                s.spawn(move || {
                    let _alice = other.lock_user("alice").unwrap();
                    events.lock().unwrap().push(format!("{name} got alice"));
                    std::thread::sleep(Duration::from_millis(20));
                    events.lock().unwrap().push(format!("{name} let alice go"));
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(300));
        events.lock().unwrap().push("first let alice go".to_owned());
        drop(held);
        for waiter in waiters {
            waiter.join().unwrap();
        }
    });
    let events = events.into_inner().unwrap();
    assert_eq!(events[0], "first let alice go", "{events:?}");
    // The two waiters held it one after the other.
    assert!(events[1].ends_with("got alice"), "{events:?}");
    assert_eq!(
        events[2],
        events[1].replace("got alice", "let alice go"),
        "{events:?}"
    );
    // Released on drop: taking it again works at once.
    drop(store.lock_user("alice").unwrap());
    drop(peer.lock_user("alice").unwrap());
}

fn fifty_racers_under_a_user_s_lock_count_to_fifty(b: &dyn Backend) {
    const RACERS: usize = 50;
    const USER: &str = "racer";
    let store = b.open();
    let peer = b.peer(&store);
    let start = Barrier::new(RACERS);
    std::thread::scope(|s| {
        for i in 0..RACERS {
            let racer = if i % 2 == 0 { &store } else { &peer };
            let start = &start;
            s.spawn(move || {
                start.wait();
                let mut lock = racer.lock_user(USER).unwrap();
                let count: u32 = racer
                    .lockout(USER)
                    .unwrap()
                    .map_or(0, |v| String::from_utf8(v).unwrap().parse().unwrap());
                // Give a racer that is not held off time to read the same count.
                std::thread::yield_now();
                let step = Commit {
                    changes: vec![Change::PutLockout {
                        user: USER.to_owned(),
                        history: (count + 1).to_string().into_bytes(),
                    }],
                    audit: Vec::new(),
                };
                // Both ways a holder commits: keeping the lock (then
                // dropping it), or releasing it with the commit.
                let durable = if i % 4 < 2 {
                    lock.commit(step)
                } else {
                    lock.commit_and_release(step)
                };
                durable.unwrap().wait().unwrap();
            });
        }
    });
    assert_eq!(store.lockout(USER).unwrap(), Some(b"50".to_vec()));
    assert_eq!(peer.lockout(USER).unwrap(), Some(b"50".to_vec()));
}

/// A holder's commits go through its lock: each is applied (and visible)
/// with the lock still held, and the last one releases it only once it is
/// visible, so the next holder reads it whole.
fn commits_through_a_user_s_lock_keep_it_until_the_last_is_visible(b: &dyn Backend) {
    let store = b.open();
    let peer = b.peer(&store);
    let history = |n: u32| Change::PutLockout {
        user: "alice".to_owned(),
        history: n.to_string().into_bytes(),
    };
    let mut held = store.lock_user("alice").unwrap();
    // An empty commit is nothing, and keeps the lock.
    held.commit(Commit::default()).unwrap().wait().unwrap();
    held.commit(Commit {
        changes: vec![history(1)],
        audit: vec![record("step", json!({"n": 1}))],
    })
    .unwrap()
    .wait()
    .unwrap();
    assert_eq!(peer.lockout("alice").unwrap(), Some(b"1".to_vec()));
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::scope(|s| {
        let (peer, tx) = (&peer, tx);
        s.spawn(move || {
            // Read with the lock: what the holder committed last is there,
            // whole.
            let locked = peer.lock_user_and_read("alice", Some("f")).unwrap();
            let seen = (
                locked.lockout.clone(),
                locked.flow.clone(),
                peer.kv_get("ns", "k").unwrap(),
            );
            tx.send(seen).unwrap();
            drop(locked);
        });
        // Still held after a commit: the peer waits.
        assert!(rx.recv_timeout(Duration::from_millis(300)).is_err());
        held.commit_and_release(Commit {
            changes: vec![history(2), put_kv("ns", "k", b"v"), put_flow("f", 1, b"f2")],
            audit: vec![record("step", json!({"n": 2}))],
        })
        .unwrap()
        .wait()
        .unwrap();
        let seen = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("the peer got the lock once it was released");
        assert_eq!(
            seen,
            (
                Some(b"2".to_vec()),
                Some(b"f2".to_vec()),
                Some(b"v".to_vec())
            )
        );
    });
    assert_eq!(store.audit().verify().unwrap().entries, 2);
    // Released: the holder's store takes it again at once; a flow that is
    // not stored reads as none.
    let locked = store.lock_user_and_read("alice", Some("none")).unwrap();
    assert_eq!(locked.flow, None);
    assert_eq!(locked.lockout, Some(b"2".to_vec()));
}

// --- queues ------------------------------------------------------------------

fn queues_lease_due_items_earliest_first(b: &dyn Backend) {
    let store = b.open();
    commit(
        &*store,
        vec![
            Change::Enqueue(work(Queue::Outbox, "a", 100, b"pa")),
            Change::Enqueue(work(Queue::Outbox, "b", 50, b"pb")),
            Change::Enqueue(work(Queue::Outbox, "c", 300, b"pc")),
            Change::Enqueue(work(Queue::Outbox, "d", 150, b"pd")),
            Change::Enqueue(work(Queue::Timers, "t", 10, b"pt")),
        ],
    );
    assert_eq!(store.claim_due(Queue::Outbox, 49, 1_000, 10).unwrap(), []);
    let first = store.claim_due(Queue::Outbox, 200, 1_000, 10).unwrap();
    assert_eq!(
        first,
        [
            Claim {
                item: work(Queue::Outbox, "b", 50, b"pb"),
                attempt: 1,
                lease_until_ms: 1_200,
            },
            Claim {
                item: work(Queue::Outbox, "a", 100, b"pa"),
                attempt: 1,
                lease_until_ms: 1_200,
            },
            Claim {
                item: work(Queue::Outbox, "d", 150, b"pd"),
                attempt: 1,
                lease_until_ms: 1_200,
            },
        ]
    );
    // Leased: not handed out again before the lease ends; `c` is not due.
    assert_eq!(store.claim_due(Queue::Outbox, 250, 1_000, 10).unwrap(), []);
    // The queues are apart.
    assert_eq!(
        ids(&store.claim_due(Queue::Timers, 250, 1_000, 10).unwrap()),
        ["t"]
    );
    // A limit takes the earliest.
    let c = store.claim_due(Queue::Outbox, 400, 100, 1).unwrap();
    assert_eq!(ids(&c), ["c"]);
    assert_eq!(c[0].lease_until_ms, 500);
    assert_eq!(store.claim_due(Queue::Outbox, 499, 100, 10).unwrap(), []);
    // Leases survive a restart.
    let store = reopen(b, store);
    assert_eq!(store.claim_due(Queue::Outbox, 450, 100, 10).unwrap(), []);
    // Once the leases ended, handed out again, one more attempt each.
    let again = store.claim_due(Queue::Outbox, 1_201, 1_000, 10).unwrap();
    let mut attempts: Vec<(&str, u32, u64)> = again
        .iter()
        .map(|c| (c.item.id.as_str(), c.attempt, c.lease_until_ms))
        .collect();
    attempts.sort_unstable();
    assert_eq!(
        attempts,
        [
            ("a", 2, 2_201),
            ("b", 2, 2_201),
            ("c", 2, 2_201),
            ("d", 2, 2_201)
        ]
    );
    for claim in &again {
        assert_eq!(
            claim.item.payload,
            format!("p{}", claim.item.id).into_bytes()
        );
    }
}

fn finish_removes_and_retry_makes_due_again(b: &dyn Backend) {
    let store = b.open();
    commit(
        &*store,
        vec![
            Change::Enqueue(work(Queue::Outbox, "a", 10, b"pa")),
            Change::Enqueue(work(Queue::Outbox, "b", 20, b"pb")),
            Change::Enqueue(work(Queue::Outbox, "c", 30, b"pc")),
        ],
    );
    assert_eq!(
        ids(&store.claim_due(Queue::Outbox, 100, 1_000, 10).unwrap()),
        ["a", "b", "c"]
    );
    commit(
        &*store,
        vec![
            Change::Finish {
                queue: Queue::Outbox,
                id: "a".to_owned(),
            },
            Change::Retry {
                queue: Queue::Outbox,
                id: "b".to_owned(),
                due_ms: 5_000,
            },
            // Neither is an error for an item that is not there; neither
            // creates one.
            Change::Finish {
                queue: Queue::Outbox,
                id: "missing".to_owned(),
            },
            Change::Retry {
                queue: Queue::Outbox,
                id: "missing too".to_owned(),
                due_ms: 1,
            },
            // The queue matters.
            Change::Finish {
                queue: Queue::Timers,
                id: "c".to_owned(),
            },
        ],
    );
    let state = queue_state(&*store, Queue::Outbox);
    assert_eq!(state.keys().collect::<Vec<_>>(), ["b", "c"]);
    assert_eq!(state["b"].1, None, "a retried item is no longer leased");
    // `b` is due again at 5 000, not when its lease would have ended.
    assert_eq!(
        ids(&store.claim_due(Queue::Outbox, 4_999, 100_000, 10).unwrap()),
        ["c"]
    );
    let b_again = store.claim_due(Queue::Outbox, 5_000, 100_000, 10).unwrap();
    assert_eq!(ids(&b_again), ["b"]);
    assert_eq!(b_again[0].attempt, 2);
    assert_eq!(b_again[0].item.due_ms, 5_000);
    // A finished item is never handed out again.
    let store = reopen(b, store);
    let late = store.claim_due(Queue::Outbox, 1_000_000, 10, 10).unwrap();
    let mut late = ids(&late);
    late.sort_unstable();
    assert_eq!(late, ["b", "c"]);
    commit(
        &*store,
        vec![
            Change::Finish {
                queue: Queue::Outbox,
                id: "b".to_owned(),
            },
            Change::Finish {
                queue: Queue::Outbox,
                id: "c".to_owned(),
            },
        ],
    );
    assert_eq!(
        store
            .claim_due(Queue::Outbox, u64::MAX / 2, 10, 10)
            .unwrap(),
        []
    );
    assert!(queue_state(&*store, Queue::Outbox).is_empty());
}

fn enqueue_replaces_and_schedule_does_not(b: &dyn Backend) {
    let store = b.open();
    commit(
        &*store,
        vec![
            Change::Enqueue(work(Queue::Timers, "sweep", 100, b"first")),
            Change::Enqueue(work(Queue::Timers, "expiry", 100, b"first")),
        ],
    );
    assert_eq!(
        store
            .claim_due(Queue::Timers, 100, 1_000, 10)
            .unwrap()
            .len(),
        2
    );
    // Schedule leaves an item that is there alone, leased or not.
    commit(
        &*store,
        vec![
            Change::Schedule(work(Queue::Timers, "sweep", 5, b"second")),
            Change::Schedule(work(Queue::Timers, "new", 7, b"new")),
        ],
    );
    let state = queue_state(&*store, Queue::Timers);
    assert_eq!(state["sweep"], (1, Some(1_100), b"first".to_vec()));
    assert_eq!(
        ids(&store.claim_due(Queue::Timers, 200, 1_000, 10).unwrap()),
        ["new"]
    );
    // Enqueue replaces, lease and all.
    commit(
        &*store,
        vec![Change::Enqueue(work(
            Queue::Timers,
            "expiry",
            150,
            b"second",
        ))],
    );
    let claims = store.claim_due(Queue::Timers, 200, 1_000, 10).unwrap();
    assert_eq!(ids(&claims), ["expiry"]);
    assert_eq!(
        claims[0].item,
        work(Queue::Timers, "expiry", 150, b"second")
    );
    // Schedule of an item not there adds it, in the queue it names.
    commit(
        &*store,
        vec![Change::Schedule(work(Queue::Outbox, "sweep", 1, b"outbox"))],
    );
    let claims = store.claim_due(Queue::Outbox, 200, 1_000, 10).unwrap();
    assert_eq!(claims[0].item, work(Queue::Outbox, "sweep", 1, b"outbox"));
    assert_eq!(
        queue_state(&*store, Queue::Timers)["sweep"].2,
        b"first".to_vec()
    );
}

fn concurrent_claimers_never_get_the_same_item(b: &dyn Backend) {
    const ITEMS: usize = 120;
    let store = b.open();
    let peer = b.peer(&store);
    for chunk in (0..ITEMS).collect::<Vec<_>>().chunks(40) {
        commit(
            &*store,
            chunk
                .iter()
                .map(|i| {
                    Change::Enqueue(work(Queue::Outbox, &format!("item-{i:03}"), *i as u64, b""))
                })
                .collect(),
        );
    }
    let claimed = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for t in 0..4 {
            let claimer = if t % 2 == 0 { &store } else { &peer };
            let claimed = &claimed;
            s.spawn(move || {
                loop {
                    let claims = claimer
                        .claim_due(Queue::Outbox, 1_000, 1_000_000, 3)
                        .unwrap();
                    let mut claimed = claimed.lock().unwrap();
                    claimed.extend(claims.iter().map(|c| c.item.id.clone()));
                    // Done when nothing is left, or (a store that hands
                    // out leased items) when more was handed out than
                    // there is.
                    if claims.is_empty() || claimed.len() > 2 * ITEMS {
                        break;
                    }
                }
            });
        }
    });
    let mut claimed = claimed.into_inner().unwrap();
    let count = claimed.len();
    claimed.sort_unstable();
    claimed.dedup();
    assert_eq!(count, claimed.len(), "an item was handed out twice");
    assert_eq!(claimed.len(), ITEMS);
    assert_eq!(
        store.claim_due(Queue::Outbox, 1_000, 1_000, 10).unwrap(),
        []
    );
}

// --- copying -----------------------------------------------------------------

fn export_then_import_reproduces_everything(b: &dyn Backend) {
    let big: Vec<u8> = (0..64 * 1024).map(|i: u32| (i % 251) as u8).collect();
    let store = b.open();
    let peer = b.peer(&store);
    commit_audited(
        &*store,
        vec![
            Change::PutFlow(flow("f1", 100, "v1", true, b"flow one")),
            Change::PutFlow(flow("f2", 200, "v2", false, b"flow two")),
            Change::PutLockout {
                user: "u1".to_owned(),
                history: b"h1".to_vec(),
            },
            Change::PutLockout {
                user: "u2".to_owned(),
                history: b"h2".to_vec(),
            },
            Change::PutEnrollment {
                user: "u1".to_owned(),
                gate: "totp".to_owned(),
                data: b"e1".to_vec(),
            },
            Change::PutEnrollment {
                user: "u2".to_owned(),
                gate: "questions".to_owned(),
                data: b"e2".to_vec(),
            },
            put_kv("one", "k", b"v"),
            put_kv("one", "big", &big),
            put_kv("two", "k", b"w"),
            Change::Enqueue(work(Queue::Outbox, "leased", 10, b"o")),
            Change::Enqueue(work(Queue::Timers, "waiting", 20, b"t")),
        ],
        vec![
            record("one", json!({"i": 1})),
            record("two", json!({"i": 2})),
        ],
    );
    commit_audited(&*peer, vec![], vec![record("three", json!({"i": 3}))]);
    commit_audited(&*store, vec![], vec![record("four", json!({"i": 4}))]);
    assert_eq!(
        ids(&store.claim_due(Queue::Outbox, 50, 10_000, 10).unwrap()),
        ["leased"]
    );
    let original = exported(&*store);
    let summary = store.audit().verify().unwrap();
    assert_eq!(summary.entries, 4);
    assert_eq!(
        original
            .iter()
            .map(Item::repository)
            .collect::<BTreeSet<_>>(),
        [
            "audit",
            "enrollments",
            "flows",
            "kv",
            "lockout",
            "outbox",
            "timers"
        ]
        .into_iter()
        .collect()
    );

    let copy = b.empty();
    copy.import(original.clone()).unwrap();
    assert_same_items(&exported(&*copy), &original);
    assert_eq!(copy.audit().verify().unwrap(), summary);
    // The log's global order too (positions themselves may be numbered
    // afresh).
    let order = |s: &dyn Store| -> Vec<(String, u64, String)> {
        all_entries(s)
            .into_iter()
            .map(|e| (e.chain, e.seq, e.record.kind))
            .collect()
    };
    assert_eq!(order(&*copy), order(&*store));
    // The copy behaves as the original.
    assert_eq!(copy.flow("f1").unwrap(), Some(b"flow one".to_vec()));
    assert_eq!(all_due(&*copy), all_due(&*store));
    assert_eq!(copy.versions_in_progress().unwrap(), versions(&["v1"]));
    assert_eq!(copy.lockout("u2").unwrap(), Some(b"h2".to_vec()));
    assert_eq!(copy.enrollment("u1", "totp").unwrap(), Some(b"e1".to_vec()));
    assert!(copy.kv_get("one", "big").unwrap() == Some(big));
    assert_eq!(
        copy.kv_scan("two", "", 10).unwrap(),
        [("k".to_owned(), b"w".to_vec())]
    );
    assert_eq!(copy.claim_due(Queue::Outbox, 9_000, 10, 10).unwrap(), []);
    let again = copy.claim_due(Queue::Outbox, 10_051, 10, 10).unwrap();
    assert_eq!((ids(&again), again[0].attempt), (vec!["leased"], 2));
    let timer = copy.claim_due(Queue::Timers, 50, 10, 10).unwrap();
    assert_eq!((ids(&timer), timer[0].attempt), (vec!["waiting"], 1));
    // Its audit log goes on.
    commit_audited(&*copy, vec![], vec![record("five", json!({"i": 5}))]);
    let entries = all_entries(&*copy);
    assert_eq!(entries.len(), 5);
    assert_eq!(copy.audit().verify().unwrap(), summary_of(&entries));
}

// --- errors and closing --------------------------------------------------------

fn an_export_is_one_moment_of_a_store_being_written(b: &dyn Backend) {
    let store = b.open();
    let writer = b.peer(&store);
    let done = AtomicBool::new(false);
    let commits = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            // Commit i: the lockout history, a kv value and an audit
            // record, all saying i.
            let mut i = 0u64;
            while !done.load(Ordering::Relaxed) || i < 20 {
                let says = i.to_string().into_bytes();
                commit_audited(
                    &*writer,
                    vec![
                        Change::PutLockout {
                            user: "u".to_owned(),
                            history: says.clone(),
                        },
                        put_kv("ns", "k", &says),
                    ],
                    vec![record("step", json!({"i": i}))],
                );
                i += 1;
                commits.store(i as usize, Ordering::Relaxed);
            }
        });
        let mut seen = 0;
        while seen < 8 {
            if commits.load(Ordering::Relaxed) == 0 {
                std::thread::yield_now();
                continue;
            }
            let items = exported(&*store);
            let lockout = items.iter().find_map(|item| match item {
                Item::Lockout { history, .. } => Some(history.clone()),
                _ => None,
            });
            let kv = items.iter().find_map(|item| match item {
                Item::Kv { value, .. } => Some(value.clone()),
                _ => None,
            });
            let audited: Vec<u64> = items
                .iter()
                .filter_map(|item| match item {
                    Item::Audit(e) => e.record.detail["i"].as_u64(),
                    _ => None,
                })
                .collect();
            let Some(lockout) = lockout else { continue };
            let i: u64 = String::from_utf8(lockout).unwrap().parse().unwrap();
            assert_eq!(
                kv,
                Some(i.to_string().into_bytes()),
                "a commit seen in part"
            );
            assert_eq!(
                audited,
                (0..=i).collect::<Vec<_>>(),
                "the audit log at another moment"
            );
            seen += 1;
        }
        done.store(true, Ordering::Relaxed);
    });
}

fn errors_never_show_a_stored_value(b: &dyn Backend) {
    const CANARY: &str = "CANARY-7e1d5b";
    let canary = format!("secret={CANARY}").into_bytes();
    let store = b.open();
    let everything = |suffix: &str| -> Vec<Change> {
        vec![
            put_flow(&format!("f{suffix}"), 1, &canary),
            Change::PutLockout {
                user: format!("u{suffix}"),
                history: canary.clone(),
            },
            Change::PutEnrollment {
                user: format!("u{suffix}"),
                gate: "g".to_owned(),
                data: canary.clone(),
            },
            put_kv("ns", &format!("k{suffix}"), &canary),
            Change::Enqueue(work(Queue::Outbox, &format!("w{suffix}"), 1, &canary)),
        ]
    };
    let canary_record = record("stored", json!({ "note": CANARY }));
    commit_audited(&*store, everything(""), vec![canary_record.clone()]);

    let mut errors: Vec<String> = Vec::new();
    let mut keep = |error: &dyn std::fmt::Debug, shown: String| {
        errors.push(format!("{error:?}"));
        errors.push(shown);
    };
    // What a backend may refuse while open: a copy into a store that is not
    // empty, names a database cannot hold.
    if let Err(e) = store.import(exported(&*store)) {
        keep(&e, e.to_string());
    }
    let odd = vec![
        put_kv("ns", "nul\0key", &canary),
        put_flow("nul\0id", 1, &canary),
    ];
    if let Err(e) = store
        .commit(Commit {
            changes: odd,
            audit: vec![canary_record.clone()],
        })
        .and_then(|d| d.wait())
    {
        keep(&e, e.to_string());
    }
    // Everything after closing.
    store.close();
    let closed: Vec<StoreError> = vec![
        store
            .commit(Commit {
                changes: everything("2"),
                audit: vec![canary_record.clone()],
            })
            .unwrap_err(),
        store.audit().append(vec![canary_record]).unwrap_err(),
        store
            .import(vec![Item::Kv {
                namespace: "ns".to_owned(),
                key: "k3".to_owned(),
                value: canary.clone(),
            }])
            .unwrap_err(),
        store.flow("f").unwrap_err(),
        store.lockout("u").unwrap_err(),
        store.enrollment("u", "g").unwrap_err(),
        store.kv_get("ns", "k").unwrap_err(),
        store.kv_scan("ns", "", 10).unwrap_err(),
        store.claim_due(Queue::Outbox, 10, 10, 10).unwrap_err(),
        store.export(&mut |_| Ok(())).unwrap_err(),
        store.audit().entries(0, 10).unwrap_err(),
    ];
    for e in &closed {
        keep(e, e.to_string());
    }
    let e = store.audit().verify().unwrap_err();
    keep(&e, e.to_string());
    let secrets = b.secrets();
    for error in &errors {
        assert!(
            !error.contains(CANARY),
            "an error shows a stored value: {error}"
        );
        for secret in &secrets {
            assert!(
                !error.contains(secret.as_str()),
                "an error shows a secret: {error}"
            );
        }
    }
    for secret in &secrets {
        assert!(!store.location().contains(secret.as_str()));
    }
}

fn a_closed_store_says_closed(b: &dyn Backend) {
    let store = b.open();
    commit_audited(
        &*store,
        vec![put_flow("f", 1, b"body")],
        vec![record("flow.started", json!({}))],
    );
    store.close();
    assert!(is_closed(store.commit(Commit {
        changes: vec![put_kv("ns", "k", b"v")],
        audit: vec![],
    })));
    assert!(is_closed(
        store.audit().append(vec![record("x", json!({}))])
    ));
    assert!(is_closed(store.flow("f")));
    assert!(is_closed(store.flows_due(10, None, 10)));
    assert!(is_closed(store.versions_in_progress()));
    assert!(is_closed(store.lockout("u")));
    assert!(is_closed(store.enrollment("u", "g")));
    assert!(is_closed(store.kv_get("ns", "k")));
    assert!(is_closed(store.kv_scan("ns", "", 10)));
    assert!(is_closed(store.kv_keys("ns", "", 10)));
    assert!(is_closed(store.claim_due(Queue::Outbox, 10, 10, 10)));
    assert!(is_closed(store.export(&mut |_| Ok(()))));
    assert!(is_closed(store.import(Vec::new())));
    assert!(is_closed(store.audit().entries(0, 10)));
    assert!(
        matches!(
            store.audit().verify(),
            Err(AuditError::Store(StoreError::Closed))
        ),
        "verify after closing"
    );
    // Closing again does nothing; the data is there after opening again.
    store.close();
    let store = reopen(b, store);
    assert_eq!(store.flow("f").unwrap(), Some(b"body".to_vec()));
    assert_eq!(store.kv_get("ns", "k").unwrap(), None);
    assert_eq!(store.audit().verify().unwrap().entries, 1);
}
