//! The store on sled 0.34: one sled tree per repository (and its indexes),
//! one for the audit log and one for commit intents, in `<data dir>/db`.
//!
//! Order inside, all or nothing outside: a commit's writes are applied one
//! by one, as single sled inserts and removes, and a crash keeps a prefix of
//! them (sled recovers a prefix of its log, and one thread's writes reach
//! the log in the order they are made). sled 0.34's batches and
//! transactions are never used: the first one switches sled, for the rest
//! of the process, from a lock-free counter to a global reader-writer lock
//! that every read and insert then takes, and each transaction stops every
//! other reader and writer while it commits. Measured here: a flow write
//! with an audit record cost 29 µs of CPU; once a transaction had run,
//! 36 µs; with one write in four a two-tree transaction, 55–79 µs.
//!
//! What makes a commit all or nothing after a crash is its *intent*: a
//! commit of more than one write first inserts the whole commit (its audit
//! group and every write) as one value in the `intents` tree, then its
//! audit group, then its writes, then removes the intent. A prefix that
//! holds any of the writes holds the intent; [`SledStore::open`] applies
//! every intent it finds again (each write is idempotent) before anything
//! else reads the store. Intents are numbered under the audit chain's lock,
//! so they are replayed in chain order. (Naming the commit's flow record
//! in the intent by digest instead of copying it, and writing it under the
//! chain-head lock, was measured and is slower: BENCHMARKS.md, issue 13.)
//!
//! Most commits need no intent: a commit of one flow record, its index
//! entries and an audit group (every commit of a reset but the one that
//! begins the password change, which has no group and is carried too as
//! long as it writes no lockout history) is
//! *carried* by the flow record, which holds the group's key beside its
//! body ([`Carried`]), and the group names the flow. Under the chain-head
//! lock the group goes in, then the record; the due-index entries after. `meta/open` is present while the
//! store is open; an open that finds it (a crash) reads every flow
//! record, files each carrying flow again, and takes the newest group
//! away if it is carried and no record carries it (the crash came between
//! the two: the commit was never acknowledged). A carried commit
//! may also write its user's lockout history (the last step of a reset
//! does); histories are stamped with their commit's sequence number
//! ([`Stamped`]), so recovery writes one again only over an older one. A
//! flow a carried commit files as due at once is held in memory
//! ([`Inner::held_due`]) instead of `due_now`.
//!
//! Every flow record holds the flow's index entry (where its `flows_due`
//! entry is, state, workflow version, user) and where it was filed before
//! its last commit ([`Filing`]): a commit writes no index entry of its
//! own, and a crash cut short is filed again from the record. Schema 6
//! and older kept the entries in `flow_index`; they are read there until
//! the flow's next commit removes them.
//!
//! The due index is lazy: a flow whose due time moves later (every step
//! of a flow in progress) keeps its `flows_due` entry until that entry is
//! due; the sweep then finds the flow not due and files it again. A flow
//! that becomes due at once (committing) is filed in the small `due_now`
//! tree instead of moving its entry. So `flows_due` may name a flow
//! early, never late.
//!
//! A user's requests are serialised by in-process striped mutexes: sled
//! allows one process per database, so the process is the whole store.
//!
//! Durability (group commit): sled only syncs by itself every 500 ms, so a
//! writer applies its writes, takes a *ticket* — the number of the first
//! flush that will begin after its writes — and waits for that flush. One
//! thread, `store-flusher`, flushes whenever someone waits: it bumps the
//! generation, calls sled's blocking `flush`, and releases every waiter whose
//! ticket that flush covers. Concurrent writers therefore share one fsync.
//! sled's `flush_async` is never used (sled issue 1308: it deadlocks with
//! eight or more concurrent callers).
//!
//! Closing: [`SledStore::close`] (or dropping the last handle) refuses new
//! writes, lets writes already applied reach their ticket, flushes once more
//! and stops the flusher. A waiter never outlives the flusher: if the flusher
//! is gone before its flush, it gets [`StoreError::Closed`].
//!
//! Schema versions (`meta/schema`): 1 had no flow indexes; 2 adds
//! `flow_index` (id → where the flow is filed, state, version, user),
//! `flows_due` (due ‖ id), `work`/`work_due` (the queues) and `intents`;
//! 3 adds `audit_users` (bucket ‖ 12 bytes of the user's digest ‖ the
//! group's first sequence number: the audit log's groups by user, one
//! entry per user and group); 4 adds `due_now` (flow id → due time: the
//! flows filed as due at once, which are the flows being committed; their
//! `flows_due` entry stays put, see [`Trees::index_flow`]); 5 lets an
//! `audit_users` entry name several groups (its value lists the user's
//! other groups of the indexer's batch, 8 bytes BE each; an entry of 4,
//! with an empty value, names one); 6 inserts a carried commit's group
//! before its flow record, which no longer holds the group's bytes, and
//! marks the group as carried (format `0x02`, the flow's id at its end;
//! a 5 could not read it); 7 moves each flow's index entry from
//! `flow_index` into its record (format `0x02`, see [`Carried`]) at the
//! flow's next commit. `audit_users` is built off the commit path: the
//! `store-indexer` thread catches it up from a watermark (`meta/
//! audit_indexed`) once a second, and a query catches it up first. Opening a version-1 store indexes its
//! flows as due at once (the first sweep puts each where it belongs), an
//! older store's audit log by user; a newer version is refused.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use std::task::{Context, Poll, Waker};

use super::audit::{self, ChainVerifier, Head, LOCAL_CHAIN};
use super::{
    AuditEntry, AuditError, AuditLog, AuditQuery, AuditRecord, AuditSummary, Change, Claim, Commit,
    Durable, FlowRecord, Held, Item, Pending, Queue, Store, StoreError, UserLock, WorkItem,
};

/// The sled tree that holds the audit log.
const AUDIT_TREE: &str = "audit";

/// The schema version this binary writes.
pub const SCHEMA: u32 = 7;

/// How many mutexes share out the users' locks.
const STRIPES: usize = 1024;

/// The sled trees (besides the audit log).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Tree {
    /// Flow records by flow id.
    Flows,
    /// Per flow, as schema 6 and older kept it: due time, whether in
    /// progress, version, user. Since 7 the flow's record holds it; only
    /// read (and emptied) for flows last written by 6.
    FlowIndex,
    /// Due time (8 bytes BE) ‖ flow id, empty values.
    FlowsDue,
    /// Enrollment data by `user/gate`.
    Enrollments,
    /// Failure history by user key.
    Lockout,
    /// Work items by queue byte ‖ id.
    Work,
    /// Queue byte ‖ due time (8 bytes BE) ‖ id, empty values.
    WorkDue,
    /// Small settings (the schema version).
    Meta,
    /// Plugins' key-value namespaces: namespace, 0x00, the plugin's key.
    Kv,
    /// Commits being applied (see the module documentation).
    Intents,
    /// The audit log by user: user key, 0x00, sequence number (8 bytes
    /// BE); empty values.
    AuditUsers,
    /// Flows filed as due at once (a flow committing) by id: their due
    /// time (8 bytes BE). Beside `flows_due`, whose entry stays put.
    DueNow,
}

impl Tree {
    /// Every tree.
    pub(crate) const ALL: [Tree; 12] = [
        Tree::Flows,
        Tree::FlowIndex,
        Tree::FlowsDue,
        Tree::Enrollments,
        Tree::Lockout,
        Tree::Work,
        Tree::WorkDue,
        Tree::Meta,
        Tree::Kv,
        Tree::Intents,
        Tree::AuditUsers,
        Tree::DueNow,
    ];

    /// The tree's name on disk.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Tree::Flows => "flows",
            Tree::FlowIndex => "flow_index",
            Tree::FlowsDue => "flows_due",
            Tree::Enrollments => "enrollments",
            Tree::Lockout => "lockout",
            Tree::Work => "work",
            Tree::WorkDue => "work_due",
            Tree::Meta => "meta",
            Tree::Kv => "kv",
            Tree::Intents => "intents",
            Tree::AuditUsers => "audit_users",
            Tree::DueNow => "due_now",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// One raw write of a commit.
#[derive(Clone, PartialEq, Eq)]
pub(crate) enum Write {
    /// Sets `key` to `value`.
    Put {
        /// The tree.
        tree: Tree,
        /// The key.
        key: Vec<u8>,
        /// The value.
        value: Vec<u8>,
    },
    /// Removes `key`.
    Delete {
        /// The tree.
        tree: Tree,
        /// The key.
        key: Vec<u8>,
    },
}

/// Values may hold secrets (queued passwords, hashes): never print them.
impl fmt::Debug for Write {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Write::Put { tree, key, value } => f
                .debug_struct("Put")
                .field("tree", tree)
                .field("key_len", &key.len())
                .field("value_len", &value.len())
                .finish(),
            Write::Delete { tree, key } => f
                .debug_struct("Delete")
                .field("tree", tree)
                .field("key_len", &key.len())
                .finish(),
        }
    }
}

/// A key and its value.
pub(crate) type KeyValue = (Vec<u8>, Vec<u8>);

/// A commit's raw writes as they are built, with the value each leaves
/// under a work or `due_now` key and the index entry it leaves each flow:
/// a later change to the same record in one commit replaces the entry the
/// earlier one wrote, not the stored one.
struct Staged {
    writes: Vec<Write>,
    latest: HashMap<(Tree, Vec<u8>), Option<Vec<u8>>>,
    /// The index entry each written flow is left with ([`FlowIndex`]
    /// encoded; `None`: the flow is deleted). Flow records carry their
    /// entries ([`Carried`]); this is what the commit leaves in
    /// [`FiledCache`].
    indexes: HashMap<String, Option<Vec<u8>>>,
    /// How many flow records the commit writes: a commit of one can be
    /// carried by it (see [`Carried`]).
    carry: Carry,
    /// Flows this commit files as due at once (with their due time) or
    /// no longer: see [`Inner::held_due`].
    held: Vec<(String, Option<u64>)>,
}

/// Whether a commit's flow record can carry the commit.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Carry {
    /// No flow written.
    None,
    /// One flow written.
    One,
    /// More than one.
    Many,
}

impl Staged {
    fn with_capacity(capacity: usize) -> Staged {
        Staged {
            writes: Vec::with_capacity(capacity),
            latest: HashMap::new(),
            indexes: HashMap::new(),
            carry: Carry::None,
            held: Vec::new(),
        }
    }

    /// Raw writes as they are (tests and the store's own bookkeeping).
    fn of(writes: Vec<Write>) -> Staged {
        Staged {
            writes,
            ..Staged::with_capacity(0)
        }
    }

    fn push(&mut self, write: Write) {
        match &write {
            Write::Put { tree, key, value } if matches!(tree, Tree::Work | Tree::DueNow) => {
                self.latest
                    .insert((*tree, key.clone()), Some(value.clone()));
            }
            Write::Delete { tree, key } if matches!(tree, Tree::Work | Tree::DueNow) => {
                self.latest.insert((*tree, key.clone()), None);
            }
            _ => {}
        }
        self.writes.push(write);
    }
}

/// The last known index entry of each flow (a commit reads it for the
/// flow it writes; [`FiledCache::index_due`]) and the last known value of
/// `due_now` keys, so that a step reads neither from sled (BENCHMARKS.md,
/// issue 13). Filled by those reads and by every commit. A flow's entries
/// are read and written only under its user's lock (or by its first
/// commit, before its id is known), so a value read from sled is never
/// older than one a commit noted meanwhile. A shard that grows past
/// [`FiledCache::SHARD_LIMIT`] is emptied: the cache only saves reads.
struct FiledCache {
    shards: Vec<Mutex<Shard>>,
}

/// One shard of [`FiledCache`]: flow id → value (`None`: known absent).
#[derive(Default)]
struct Shard {
    /// `due_now` values.
    due_now: HashMap<Box<[u8]>, Option<Vec<u8>>>,
    /// Index entries.
    index: HashMap<Box<[u8]>, Option<IndexEntry>>,
}

/// A flow's index entry as [`FiledCache`] keeps it: the encoded
/// [`FlowIndex`], and whether it is a `flow_index` entry of schema 6 or
/// older (the flow's record does not carry it).
#[derive(Clone, Debug, PartialEq)]
struct IndexEntry {
    legacy: bool,
    bytes: Vec<u8>,
}

impl FiledCache {
    const SHARDS: usize = 64;
    const SHARD_LIMIT: usize = 4096;

    fn new() -> FiledCache {
        FiledCache {
            shards: (0..Self::SHARDS)
                .map(|_| Mutex::new(Shard::default()))
                .collect(),
        }
    }

    fn shard(&self, key: &[u8]) -> MutexGuard<'_, Shard> {
        // Flow ids are random: any mix of their bytes spreads them.
        let index = key.iter().fold(0usize, |h, b| {
            h.wrapping_mul(31).wrapping_add(usize::from(*b))
        });
        lock(&self.shards[index % Self::SHARDS])
    }

    /// The `due_now` value of flow `id` if known: `Some(None)` if known
    /// to be absent.
    fn due_now(&self, id: &[u8]) -> Option<Option<Vec<u8>>> {
        self.shard(id).due_now.get(id).cloned()
    }

    /// Where flow `id`'s `flows_due` entry is and whether its index entry
    /// is a legacy one, if its entry is known: `Some(None)` if the flow is
    /// known not to be indexed.
    fn index_due(&self, id: &[u8]) -> Option<Option<(u64, bool)>> {
        let shard = self.shard(id);
        let entry = shard.index.get(id)?;
        Some(
            entry
                .as_ref()
                .map(|e| (FlowIndex::due_ms_of(&e.bytes), e.legacy)),
        )
    }

    /// Notes `value` as flow `id`'s `due_now` value.
    fn note_due_now(&self, id: &[u8], value: Option<&[u8]>) {
        let mut shard = self.shard(id);
        shard.make_room();
        shard.due_now.insert(id.into(), value.map(<[u8]>::to_vec));
    }

    /// Notes flow `id`'s index entry.
    fn note_index(&self, id: Box<[u8]>, entry: Option<IndexEntry>) {
        let mut shard = self.shard(&id);
        shard.make_room();
        shard.index.insert(id, entry);
    }

    /// Notes what a commit left (it was applied): its `due_now` writes
    /// and its flows' index entries. A deleted flow is forgotten.
    fn applied<'w>(
        &self,
        writes: impl IntoIterator<Item = &'w Write>,
        indexes: HashMap<String, Option<Vec<u8>>>,
    ) {
        for write in writes {
            match write {
                Write::Put {
                    tree: Tree::DueNow,
                    key,
                    value,
                } => self.note_due_now(key, Some(value)),
                Write::Delete {
                    tree: Tree::DueNow,
                    key,
                } => self.note_due_now(key, None),
                _ => {}
            }
        }
        for (id, index) in indexes {
            let id = id.into_bytes().into_boxed_slice();
            match index {
                Some(bytes) => self.note_index(
                    id,
                    Some(IndexEntry {
                        legacy: false,
                        bytes,
                    }),
                ),
                None => {
                    let mut shard = self.shard(&id);
                    shard.index.remove(&id);
                    shard.due_now.remove(&id);
                }
            }
        }
    }

    /// Forgets everything (after writes that may be applied in part).
    fn clear(&self) {
        for shard in &self.shards {
            let mut shard = lock(shard);
            shard.due_now.clear();
            shard.index.clear();
        }
    }
}

impl Shard {
    /// Empties the shard if it is full: the cache only saves reads.
    fn make_room(&mut self) {
        if self.due_now.len() + self.index.len() >= FiledCache::SHARD_LIMIT {
            self.due_now.clear();
            self.index.clear();
        }
    }
}

/// The store on sled. Cheap to clone: every clone is a handle on the same
/// database; the database closes when [`close`](SledStore::close) is called
/// or the last handle is dropped.
#[derive(Clone)]
pub struct SledStore {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    trees: Trees,
    audit: ::sled::Tree,
    /// The end of the audit chain. Held across "read head, write intent and
    /// entry" so that concurrent appends never fork the chain.
    head: Mutex<Head>,
    /// The next intent's number (taken under `head`).
    next_intent: AtomicU64,
    /// Users' locks, by a hash of the user key.
    stripes: Vec<Mutex<()>>,
    /// Held by claims and by commits that change work items.
    work: Mutex<()>,
    /// `true` once closed. Writers hold it for reading while they apply
    /// their writes and take their ticket; `close` takes it for writing, so
    /// every write either happens before the final flush or not at all.
    closed: RwLock<bool>,
    flush: Arc<Flush>,
    /// The flusher thread, until it is joined.
    flusher: Mutex<Option<JoinHandle<()>>>,
    /// Held while `audit_users` is caught up.
    indexer: Mutex<()>,
    /// Flows' index entries and `due_now` entries as last read or written.
    filed: FiledCache,
    /// Flows a carried commit filed as due at once (id → due time): a
    /// flow being committed, whose `due_now` entry lives here instead of
    /// in the tree (two sled writes a reset fewer). `flows_due` reads both;
    /// `close` writes these to the tree, and an open after a crash files
    /// the flows again from the records that carry their commits.
    held_due: Mutex<HashMap<String, u64>>,
    /// The flow whose record carries the commit of the newest audit group,
    /// and that group's key, if that commit was carried; else `None`.
    /// Locked only under `head` or on its own (never the other way round).
    /// A commit without an audit group that changes this flow's record
    /// first notes the group in `meta` ([`CARRIED_THEN_CHANGED`]), so that
    /// the recovery does not take the group's commit for one a crash cut
    /// short (see [`Carried`]).
    tail_carried: Mutex<Option<(Vec<u8>, [u8; 8])>>,
    /// The audit groups appended since the indexer last took them, with
    /// their users, oldest first (see [`Appended`]).
    appended: Mutex<Appended>,
}

/// Audit groups as the commits appended them, for the indexer: each
/// group's first sequence number, its number of records and its users, so
/// that `audit_users` is built without reading the groups back from the
/// log and decoding them (BENCHMARKS.md, issue 13). Pushed under the
/// chain-head lock, so in sequence order; the indexer uses them from its
/// watermark on as long as they follow each other, and reads the log
/// where they do not (after an open, an import, or past
/// [`Appended::LIMIT`]).
#[derive(Default)]
struct Appended {
    groups: std::collections::VecDeque<(u64, u64, Vec<String>)>,
}

impl Appended {
    /// Most groups kept; past it the oldest go (the indexer reads them
    /// from the log).
    const LIMIT: usize = 1 << 16;

    fn push(&mut self, first: u64, len: u64, users: Vec<String>) {
        if self.groups.len() >= Self::LIMIT {
            self.groups.pop_front();
        }
        self.groups.push_back((first, len, users));
    }

    /// The groups from `from` on that follow each other and start before
    /// `end`, at most `limit`; drops every group before `from`.
    fn take(&mut self, from: u64, end: u64, limit: usize) -> Vec<(u64, u64, Vec<String>)> {
        while self.groups.front().is_some_and(|g| g.0 < from) {
            self.groups.pop_front();
        }
        let mut out = Vec::new();
        let mut next = from;
        while out.len() < limit
            && let Some(group) = self.groups.front()
            && group.0 == next
            && group.0 < end
        {
            next = group.0.saturating_add(group.1);
            out.extend(self.groups.pop_front());
        }
        out
    }
}

/// One sled tree per [`Tree`], in [`Tree::ALL`] order.
struct Trees(Vec<::sled::Tree>);

impl Trees {
    fn open(db: &::sled::Db) -> Result<Trees, ::sled::Error> {
        Tree::ALL
            .iter()
            .map(|t| db.open_tree(t.name()))
            .collect::<Result<_, _>>()
            .map(Trees)
    }

    fn get(&self, tree: Tree) -> &::sled::Tree {
        &self.0[tree.index()]
    }
}

/// Group-commit bookkeeping shared by writers and the flusher thread.
struct Flush {
    state: Mutex<FlushState>,
    /// The flusher waits here for work or shutdown.
    work: Condvar,
    /// `FlushState::finished`, readable without the lock by parked writers.
    finished: AtomicU64,
    /// `FlushState::stopped`, likewise.
    stopped: AtomicBool,
    /// How long each `db.flush()` took (for `/metrics`).
    latency: crate::metrics::Histogram,
}

/// Generations count flushes: flush `g` is the `g`-th one to begin.
#[derive(Default)]
struct FlushState {
    /// The latest flush that has begun.
    started: u64,
    /// The highest ticket anyone waits for.
    wanted: u64,
    /// The latest flush that has ended, well or not.
    finished: u64,
    /// The latest flush that succeeded.
    succeeded: u64,
    /// Why the latest failed flush failed.
    last_error: Option<String>,
    /// Successful flushes so far.
    flushes: u64,
    /// The store is closing: flush what is wanted, then stop.
    shutdown: bool,
    /// The flusher thread has stopped.
    stopped: bool,
    /// Writers waiting for a flush: each is woken alone, when the flush it
    /// needs has ended (waking every writer at every flush made 64 writers
    /// fight over this lock and cost a third of the CPU).
    waiters: Vec<(u64, Waiter)>,
}

/// A parked thread or an async task waiting for a flush.
enum Waiter {
    Thread(std::thread::Thread),
    Task(Waker),
}

impl Waiter {
    fn wake(self) {
        match self {
            Waiter::Thread(thread) => thread.unpark(),
            Waiter::Task(waker) => waker.wake(),
        }
    }
}

impl FlushState {
    /// How a wait for flush `needed` ends, if it has ended.
    fn outcome(&self, needed: u64) -> Option<Result<(), StoreError>> {
        if self.succeeded >= needed {
            Some(Ok(()))
        } else if self.finished >= needed {
            Some(Err(StoreError::Io {
                op: "flush",
                what: "*",
                reason: self
                    .last_error
                    .clone()
                    .unwrap_or_else(|| "unknown error".to_owned()),
            }))
        } else if self.stopped {
            Some(Err(StoreError::Closed))
        } else {
            None
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Flush {
    /// Flushes sled, timing it.
    fn flush_db(&self, db: &::sled::Db) -> Result<usize, ::sled::Error> {
        let started = std::time::Instant::now();
        let result = db.flush();
        self.latency.observe(started.elapsed());
        result
    }

    /// The ticket for writes that have already been applied: the number of
    /// the first flush that will begin after them. Asks for that flush.
    fn register(&self) -> Result<u64, StoreError> {
        let mut state = lock(&self.state);
        if state.stopped {
            return Err(StoreError::Closed);
        }
        // The flush in progress (if any) may have begun before our writes;
        // the next one cannot have.
        let needed = state.started + 1;
        if needed > state.wanted {
            state.wanted = needed;
            self.work.notify_one();
        }
        Ok(needed)
    }

    fn ended(&self, needed: u64) -> bool {
        self.finished.load(Ordering::Acquire) >= needed || self.stopped.load(Ordering::Acquire)
    }

    /// The flusher thread's loop.
    fn run(&self, db: &::sled::Db) {
        let mut state = lock(&self.state);
        loop {
            if state.wanted > state.finished {
                state.started += 1;
                let generation = state.started;
                drop(state);
                let result = self.flush_db(db);
                state = lock(&self.state);
                state.finished = generation;
                match result {
                    Ok(_) => {
                        state.succeeded = generation;
                        state.flushes += 1;
                    }
                    Err(e) => {
                        let reason = describe(&e);
                        tracing::error!(%reason, "flushing the store failed");
                        state.last_error = Some(reason);
                    }
                }
                self.finished.store(generation, Ordering::Release);
                let (served, waiting) = std::mem::take(&mut state.waiters)
                    .into_iter()
                    .partition(|(needed, _)| *needed <= generation);
                state.waiters = waiting;
                drop(state);
                for (_, waiter) in served {
                    waiter.wake();
                }
                state = lock(&self.state);
            } else if state.shutdown {
                break;
            } else {
                state = self
                    .work
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner);
            }
        }
        drop(state);
        // Every ticket is served; one last flush for anything written by
        // other means, so that closing leaves nothing unsynced.
        match self.flush_db(db) {
            Ok(_) => lock(&self.state).flushes += 1,
            Err(e) => {
                tracing::error!(reason = %describe(&e), "the final flush of the store failed")
            }
        }
    }
}

/// Marks the flusher stopped and wakes every waiter when the flusher thread
/// ends, even by unwinding, so that no waiter hangs.
struct StoppedOnExit(Arc<Flush>);

impl Drop for StoppedOnExit {
    fn drop(&mut self) {
        let waiters = {
            let mut state = lock(&self.0.state);
            state.stopped = true;
            std::mem::take(&mut state.waiters)
        };
        self.0.stopped.store(true, Ordering::Release);
        for (_, waiter) in waiters {
            waiter.wake();
        }
    }
}

/// A wait for flush `needed` of `flush`.
struct Ticket {
    flush: Arc<Flush>,
    needed: u64,
}

impl Pending for Ticket {
    fn wait(&mut self) -> Result<(), StoreError> {
        let needed = self.needed;
        {
            let mut state = lock(&self.flush.state);
            if let Some(outcome) = state.outcome(needed) {
                return outcome;
            }
            state
                .waiters
                .push((needed, Waiter::Thread(std::thread::current())));
        }
        // Parked until the flusher unparks this thread; unpark before park
        // makes park return at once, and spurious wake-ups loop.
        while !self.flush.ended(needed) {
            std::thread::park();
        }
        lock(&self.flush.state)
            .outcome(needed)
            .unwrap_or(Err(StoreError::Closed))
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), StoreError>> {
        let mut state = lock(&self.flush.state);
        if let Some(outcome) = state.outcome(self.needed) {
            return Poll::Ready(outcome);
        }
        // A task polled again before its flush is registered twice and
        // woken twice: harmless.
        state
            .waiters
            .push((self.needed, Waiter::Task(cx.waker().clone())));
        Poll::Pending
    }
}

/// What sled said, without anything that could be a stored value.
fn describe(error: &::sled::Error) -> String {
    match error {
        ::sled::Error::Io(e) => format!("i/o error: {e}"),
        ::sled::Error::Corruption { at: Some(at), .. } => format!("corruption detected at {at:?}"),
        ::sled::Error::Corruption { at: None, .. } => "corruption detected".to_owned(),
        ::sled::Error::CollectionNotFound(_) => "the tree does not exist".to_owned(),
        ::sled::Error::Unsupported(why) => format!("unsupported operation: {why}"),
        ::sled::Error::ReportableBug(what) => format!("sled bug: {what}"),
    }
}

/// Maps a sled error of `op` on `tree` to a [`StoreError`].
fn io(op: &'static str, what: &'static str) -> impl FnOnce(::sled::Error) -> StoreError {
    move |e| StoreError::Io {
        op,
        what,
        reason: describe(&e),
    }
}

/// At most `limit` entries of a sled iterator over `tree`, copied out.
fn entries(tree: Tree, iter: ::sled::Iter, limit: usize) -> Result<Vec<KeyValue>, StoreError> {
    iter.take(limit)
        .map(|item| {
            let (key, value) = item.map_err(io("scan", tree.name()))?;
            Ok((key.to_vec(), value.to_vec()))
        })
        .collect()
}

/// Creates the database folder, private to this user, if it is missing.
fn create_private_dir(path: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(path)
}

/// Whether sled failed to open because another holder has the database's
/// file lock (sled 0.34.7 reports it as `Io(Other)` with this text).
fn is_lock_error(error: &::sled::Error) -> bool {
    matches!(error, ::sled::Error::Io(e) if e.to_string().starts_with("could not acquire lock"))
}

/// How long [`open_db`] waits for another holder of the database's lock.
const LOCK_WAIT: Duration = Duration::from_secs(2);

/// Opens the sled database in `path`, waiting up to [`LOCK_WAIT`] for its
/// file lock. sled releases the lock only when its own background tasks let
/// go of the file, a moment after the last handle is dropped, so reopening
/// in the same process right after closing can find it still held.
fn open_db(path: &Path) -> Result<::sled::Db, ::sled::Error> {
    let deadline = Instant::now() + LOCK_WAIT;
    loop {
        // We flush ourselves (group commit), so sled's own 500 ms flusher
        // only competes; HighThroughput trades disk space for less
        // compaction (LowSpace rewrote ~17 KB per flushed request here).
        let config = ::sled::Config::new()
            .path(path)
            .mode(::sled::Mode::HighThroughput)
            .flush_every_ms(None);
        match config.open() {
            Err(e) if is_lock_error(&e) && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            other => return other,
        }
    }
}

impl SledStore {
    /// The schema version stored in `<dir>/db`, read without migrating
    /// anything (`resetgate store migrate` prints it before opening):
    /// `None` when there is no store yet; 1 for a store from before
    /// versions were recorded. Takes the database's lock for the moment
    /// it reads, so it fails with [`StoreError::InUse`] beside a running
    /// gateway.
    pub fn stored_schema(dir: &Path) -> Result<Option<u32>, StoreError> {
        let path = dir.join("db");
        if !path.join("conf").exists() {
            return Ok(None);
        }
        let db = open_db(&path).map_err(|e| {
            if is_lock_error(&e) {
                StoreError::InUse {
                    location: path.display().to_string(),
                }
            } else {
                StoreError::Open {
                    location: path.display().to_string(),
                    reason: describe(&e),
                }
            }
        })?;
        let meta = db
            .open_tree(Tree::Meta.name())
            .map_err(io("open", "meta"))?;
        let stored = meta
            .get(b"schema")
            .map_err(io("open", "meta"))?
            .and_then(|v| <[u8; 4]>::try_from(v.as_ref()).ok())
            .map_or(1, u32::from_be_bytes);
        Ok(Some(stored))
    }

    /// Opens (creating if needed) the store in `<dir>/db` and starts its
    /// flusher thread. Waits up to two seconds if the database is locked
    /// (for example, closed a moment ago in this process). Applies the
    /// intents a crash left (see the module documentation) before anything
    /// reads the store.
    ///
    /// Refuses to open when the last audit entry cannot be read, since the
    /// chain could not be continued, and a schema newer than [`SCHEMA`].
    pub fn open(dir: &Path) -> Result<SledStore, StoreError> {
        let path = dir.join("db");
        let location = path.display().to_string();
        let open_error = |reason: String| StoreError::Open {
            location: location.clone(),
            reason,
        };
        create_private_dir(&path)
            .map_err(|e| open_error(format!("cannot create the folder: {e}")))?;
        let db = open_db(&path).map_err(|e| {
            if is_lock_error(&e) {
                StoreError::InUse {
                    location: location.clone(),
                }
            } else {
                open_error(describe(&e))
            }
        })?;
        let trees = Trees::open(&db).map_err(|e| open_error(describe(&e)))?;
        let audit = db
            .open_tree(AUDIT_TREE)
            .map_err(|e| open_error(describe(&e)))?;
        migrate(&trees).map_err(|e| match e {
            e @ StoreError::Newer { .. } => e,
            e => open_error(e.to_string()),
        })?;
        let next_intent = replay_intents(&trees, &audit).map_err(|e| open_error(e.to_string()))?;
        let head = Self::read_head(&audit).map_err(open_error)?;

        let flush = Arc::new(Flush {
            state: Mutex::new(FlushState::default()),
            finished: AtomicU64::new(0),
            stopped: AtomicBool::new(false),
            work: Condvar::new(),
            latency: crate::metrics::Histogram::default(),
        });
        let flusher = {
            let flush = Arc::clone(&flush);
            std::thread::Builder::new()
                .name("store-flusher".to_owned())
                .spawn(move || {
                    let _stopped = StoppedOnExit(Arc::clone(&flush));
                    flush.run(&db);
                })
                .map_err(|e| open_error(format!("cannot start the flusher thread: {e}")))?
        };

        let store = SledStore {
            inner: Arc::new(Inner {
                path,
                trees,
                audit,
                head: Mutex::new(head),
                next_intent: AtomicU64::new(next_intent),
                stripes: (0..STRIPES).map(|_| Mutex::new(())).collect(),
                work: Mutex::new(()),
                closed: RwLock::new(false),
                flush,
                flusher: Mutex::new(Some(flusher)),
                indexer: Mutex::new(()),
                filed: FiledCache::new(),
                held_due: Mutex::new(HashMap::new()),
                tail_carried: Mutex::new(None),
                appended: Mutex::new(Appended::default()),
            }),
        };
        store
            .recover_carried()
            .and_then(|()| store.note_tail())
            .and_then(|()| store.mark_open())
            .map_err(|e| {
                store.close();
                open_error(e.to_string())
            })?;
        store.start_indexer().map_err(|e| {
            store.close();
            open_error(format!("cannot start the audit indexer thread: {e}"))
        })?;
        Ok(store)
    }

    /// After a crash (the store was not closed), completes every commit a
    /// flow record carries ([`Carried`]) that the crash cut short: puts
    /// its audit group at the end of the chain if it is missing (schema
    /// 5), and files the flow again ([`file_again`](Self::file_again)). Reads every flow record, so an open
    /// after a crash takes time in proportion to the flows kept; a store
    /// that was closed is not read.
    fn recover_carried(&self) -> Result<(), StoreError> {
        let meta = self.inner.trees.get(Tree::Meta);
        if !meta.contains_key(OPEN_MARK).map_err(io("open", "meta"))? {
            return Ok(());
        }
        let started = Instant::now();
        let mut flows = 0u64;
        let mut groups = 0u64;
        for item in self.inner.trees.get(Tree::Flows).iter() {
            let (id, stored) = item.map_err(io("recover", "flows"))?;
            let Some(carried) = Carried::decode(&stored) else {
                continue;
            };
            let Ok(id) = std::str::from_utf8(&id) else {
                continue;
            };
            flows += 1;
            if !carried.group.is_empty()
                && !self
                    .inner
                    .audit
                    .contains_key(carried.group_key)
                    .map_err(io("recover", AUDIT_TREE))?
            {
                let mut head = lock(&self.inner.head);
                let at_end = audit::key_seq(carried.group_key) == Some(head.next_seq);
                if !at_end {
                    tracing::error!(flow = %id, "a flow record carries an audit group that is neither in the log nor next in it; left as it is");
                    continue;
                }
                self.inner
                    .audit
                    .insert(carried.group_key, carried.group)
                    .map_err(io("recover", AUDIT_TREE))?;
                *head = Self::read_head(&self.inner.audit).map_err(|reason| StoreError::Io {
                    op: "recover",
                    what: AUDIT_TREE,
                    reason,
                })?;
                groups += 1;
            }
            match carried.filing {
                Some(filing) => self.file_again(id, &carried.index(), filing)?,
                // Schema 5 or 6: its index entries as its commit would
                // have left them; the record is written as 7 stores it.
                None => {
                    let index = carried.index();
                    let record = FlowRecord {
                        id: id.to_owned(),
                        user: index.user,
                        version: index.version,
                        in_progress: index.in_progress,
                        due_ms: index.due_ms,
                        body: carried.body.to_vec(),
                    };
                    let mut writes = self.staged_of(vec![Change::PutFlow(record)])?.writes;
                    // It still carries its commit.
                    for write in &mut writes {
                        if let Write::Put {
                            tree: Tree::Flows,
                            value,
                            ..
                        } = write
                            && let Some(staged) = Carried::decode(value)
                            && let Some(filing) = staged.filing
                        {
                            *value = Carried::encode(
                                staged.index_bytes,
                                filing,
                                carried.group_key,
                                carried.lockout,
                                staged.body,
                            );
                        }
                    }
                    apply_writes(&self.inner.trees, &writes)?;
                }
            }
            // The user's history, unless what is stored is as new.
            let (user, history) = carried.lockout;
            if !user.is_empty() {
                let lockout = self.inner.trees.get(Tree::Lockout);
                let stored = lockout.get(user).map_err(io("recover", "lockout"))?;
                let stamp = Stamped::stamp(history);
                if stored.is_none_or(|v| Stamped::stamp(&v) < stamp) {
                    lockout
                        .insert(user, history)
                        .map_err(io("recover", "lockout"))?;
                }
            }
        }
        let dropped = self.drop_cut_short_group()?;
        self.inner.filed.clear();
        // Flushes every tree (sled's flush is the whole database's).
        meta.flush().map_err(io("recover", "meta"))?;
        if dropped {
            tracing::warn!(
                "the store was not closed: the newest audit group belonged to a commit the crash cut short (never acknowledged); removed"
            );
        }
        if flows > 0 {
            tracing::warn!(
                flows,
                groups,
                ms = started.elapsed().as_millis() as u64,
                "the store was not closed: filed every flow again from its record"
            );
        }
        Ok(())
    }

    /// After a crash: files flow `id` again as its record (schema 7) says,
    /// whatever of its commit's index writes the crash cut short: its
    /// `flows_due` entry where the record says (the one it moved from
    /// removed), a `due_now` entry if it is due before that, and no
    /// `flow_index` entry. Each write is idempotent.
    fn file_again(&self, id: &str, index: &FlowIndex, filing: Filing) -> Result<(), StoreError> {
        let trees = &self.inner.trees;
        let mut writes = Vec::with_capacity(4);
        if filing.was_ms != index.due_ms {
            writes.push(delete(Tree::FlowsDue, due_key(filing.was_ms, id)));
        }
        writes.push(put(Tree::FlowsDue, due_key(index.due_ms, id), Vec::new()));
        if filing.due_ms < index.due_ms {
            writes.push(put(
                Tree::DueNow,
                id.as_bytes().to_vec(),
                filing.due_ms.to_be_bytes().to_vec(),
            ));
        } else if trees
            .get(Tree::DueNow)
            .contains_key(id)
            .map_err(io("recover", "due_now"))?
        {
            writes.push(delete(Tree::DueNow, id.as_bytes().to_vec()));
        }
        if trees
            .get(Tree::FlowIndex)
            .contains_key(id)
            .map_err(io("recover", "flow_index"))?
        {
            writes.push(delete(Tree::FlowIndex, id.as_bytes().to_vec()));
        }
        apply_writes(trees, &writes)
    }

    /// After a crash: takes the newest audit group away if its commit was
    /// carried ([`audit::carried_flow`]) and the crash came between the
    /// group and the record carrying it. Only the newest group can be so
    /// (the two inserts are made under the chain-head lock, and the log
    /// keeps a prefix of what was inserted). Its commit was whole if the
    /// flow's record carries it, or if a later commit without a group
    /// changed that record ([`CARRIED_THEN_CHANGED`]); else it was never
    /// acknowledged, and nothing else of it is stored. Whether it removed
    /// the group.
    fn drop_cut_short_group(&self) -> Result<bool, StoreError> {
        let inner = &self.inner;
        let Some((key, value)) = inner.audit.last().map_err(io("recover", AUDIT_TREE))? else {
            return Ok(false);
        };
        let Some(flow) = audit::carried_flow(&value) else {
            return Ok(false);
        };
        let meta = inner.trees.get(Tree::Meta);
        let changed = meta
            .get(CARRIED_THEN_CHANGED)
            .map_err(io("recover", "meta"))?
            .is_some_and(|k| k == key);
        let carried = inner
            .trees
            .get(Tree::Flows)
            .get(flow)
            .map_err(io("recover", "flows"))?
            .is_some_and(|stored| {
                Carried::decode(&stored).is_some_and(|c| c.group_key == &key[..])
            });
        if changed || carried {
            return Ok(false);
        }
        let mut head = lock(&inner.head);
        inner
            .audit
            .remove(&key)
            .map_err(io("recover", AUDIT_TREE))?;
        *head = Self::read_head(&inner.audit).map_err(|reason| StoreError::Io {
            op: "recover",
            what: AUDIT_TREE,
            reason,
        })?;
        Ok(true)
    }

    /// Notes which flow's record carries the commit of the newest audit
    /// group, if one does ([`Inner::tail_carried`]).
    fn note_tail(&self) -> Result<(), StoreError> {
        let inner = &self.inner;
        let _head = lock(&inner.head);
        let tail = inner
            .audit
            .last()
            .map_err(io("open", AUDIT_TREE))?
            .and_then(|(key, value)| {
                let key = <[u8; 8]>::try_from(key.as_ref()).ok()?;
                Some((audit::carried_flow(&value)?.to_vec(), key))
            });
        *lock(&inner.tail_carried) = tail;
        Ok(())
    }

    /// Notes, durably, that the store is open (until [`Inner::close`]).
    fn mark_open(&self) -> Result<(), StoreError> {
        let meta = self.inner.trees.get(Tree::Meta);
        meta.insert(OPEN_MARK, &[]).map_err(io("open", "meta"))?;
        meta.flush().map_err(io("open", "meta"))?;
        Ok(())
    }

    /// Starts the thread that keeps `audit_users` caught up with the audit
    /// log, off the commit path: once a second, batch by batch. It ends
    /// when the store closes or is dropped.
    fn start_indexer(&self) -> std::io::Result<()> {
        let weak = Arc::downgrade(&self.inner);
        std::thread::Builder::new()
            .name("store-indexer".to_owned())
            .spawn(move || {
                loop {
                    std::thread::sleep(INDEX_EVERY);
                    let Some(inner) = weak.upgrade() else { return };
                    match inner.catch_up_index() {
                        Ok(_) => {}
                        Err(StoreError::Closed) => return,
                        Err(e) => {
                            tracing::warn!(target: "resetgate::store", error = %e, "indexing the audit log by user failed; it is tried again");
                        }
                    }
                }
            })
            .map(|_| ())
    }

    /// The head of the audit chain as stored: after the last entry of the
    /// last group.
    fn read_head(audit: &::sled::Tree) -> Result<Head, String> {
        let Some((key, value)) = audit.last().map_err(|e| describe(&e))? else {
            return Ok(Head::empty());
        };
        let Some(seq) = audit::key_seq(&key) else {
            return Err("the last key of the audit log is not a sequence number".to_owned());
        };
        Head::from_last_group(&value).map_err(|why| match why {
            audit::Unreadable::OldFormat => format!(
                "the last audit entry ({seq}) is in the audit log format of an older resetgate \
                 (one entry per key), which this version does not read"
            ),
            audit::Unreadable::Undecodable => {
                format!("the last audit entry ({seq}) cannot be read")
            }
        })
    }

    /// Closes the store: refuses new writes and reads, lets writes already
    /// applied become durable, flushes and stops the flusher thread. Every
    /// handle is closed; closing again does nothing. Dropping the last
    /// handle closes too.
    pub fn close(&self) {
        self.inner.close();
    }

    /// How many flushes have succeeded since the store was opened. Each
    /// durable write waited for one; concurrent writers share them.
    pub fn flushes(&self) -> u64 {
        lock(&self.inner.flush.state).flushes
    }

    /// Fails with [`StoreError::Closed`] once the store is closed.
    fn check_open(&self) -> Result<(), StoreError> {
        if *self
            .inner
            .closed
            .read()
            .unwrap_or_else(PoisonError::into_inner)
        {
            Err(StoreError::Closed)
        } else {
            Ok(())
        }
    }

    /// The raw audit tree, for tests that tamper with it.
    #[cfg(test)]
    fn raw_audit(&self) -> ::sled::Tree {
        self.inner.audit.clone()
    }

    /// Raw writes as one commit, durable when it returns (tests).
    #[cfg(test)]
    fn raw_commit_vec(&self, writes: Vec<Write>) -> Result<(), StoreError> {
        self.raw_commit(writes, Vec::new())
    }

    /// Raw writes and records as one commit, visible when it returns
    /// (tests).
    #[cfg(test)]
    fn stage_audited(
        &self,
        writes: Vec<Write>,
        records: Vec<AuditRecord>,
    ) -> Result<Durable, StoreError> {
        Ok(self.stage(writes, &records)?.1)
    }

    /// The value under `key` of `tree`.
    pub(crate) fn raw_get(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.get_as(tree, key, |v| v)
    }

    /// The part `part` picks of the value under `key` of `tree` (a stored
    /// record's body).
    fn get_as(
        &self,
        tree: Tree,
        key: &[u8],
        part: fn(&[u8]) -> &[u8],
    ) -> Result<Option<Vec<u8>>, StoreError> {
        self.check_open()?;
        let value = self
            .inner
            .trees
            .get(tree)
            .get(key)
            .map_err(io("get", tree.name()))?;
        Ok(value.map(|v| part(&v).to_vec()))
    }

    /// Every entry of `tree` whose key starts with `prefix`, in key order,
    /// at most `limit`.
    pub(crate) fn raw_scan(
        &self,
        tree: Tree,
        prefix: &[u8],
        limit: usize,
    ) -> Result<Vec<KeyValue>, StoreError> {
        self.check_open()?;
        entries(tree, self.inner.trees.get(tree).scan_prefix(prefix), limit)
    }

    /// Applies raw `writes` (and `records`) as one commit; durable when it
    /// returns.
    #[cfg(test)]
    pub(crate) fn raw_commit(
        &self,
        writes: Vec<Write>,
        records: Vec<AuditRecord>,
    ) -> Result<(), StoreError> {
        self.stage(writes, &records)?.1.wait()
    }

    /// The raw writes of `changes`, reading the indexes they replace.
    #[cfg(test)]
    fn writes_of(&self, changes: Vec<Change>) -> Result<Vec<Write>, StoreError> {
        Ok(self.staged_of(changes)?.writes)
    }

    /// The raw writes of `changes`, with what they leave of the indexes
    /// (for more writes of the same commit).
    fn staged_of(&self, changes: Vec<Change>) -> Result<Staged, StoreError> {
        let mut writes = Staged::with_capacity(changes.len() * 3);
        for change in changes {
            match change {
                Change::PutFlow(r) => {
                    let (index, filing) = self.index_flow(&r, &mut writes)?;
                    writes.carry = match writes.carry {
                        Carry::None => Carry::One,
                        _ => Carry::Many,
                    };
                    let record = Carried::encode(&index, filing, &[], (&[], &[]), &r.body);
                    writes.indexes.insert(r.id.clone(), Some(index));
                    writes.push(put(Tree::Flows, r.id.into_bytes(), record));
                }
                Change::DeleteFlow { id } => {
                    self.unindex_flow(&id, &mut writes)?;
                    writes.indexes.insert(id.clone(), None);
                    writes.push(delete(Tree::Flows, id.into_bytes()));
                }
                Change::PutLockout { user, history } => {
                    // Stamped when the commit is applied (`stamp_lockouts`).
                    writes.push(put(
                        Tree::Lockout,
                        user.into_bytes(),
                        Stamped::encode(0, &history),
                    ));
                }
                Change::PutEnrollment { user, gate, data } => {
                    writes.push(put(Tree::Enrollments, enrollment_key(&user, &gate), data));
                }
                Change::DeleteEnrollment { user, gate } => {
                    writes.push(delete(Tree::Enrollments, enrollment_key(&user, &gate)));
                }
                Change::PutKv {
                    namespace,
                    key,
                    value,
                } => writes.push(put(Tree::Kv, kv_key(&namespace, &key), value)),
                Change::DeleteKv { namespace, key } => {
                    writes.push(delete(Tree::Kv, kv_key(&namespace, &key)));
                }
                Change::Enqueue(item) => {
                    self.put_work(
                        &item.queue,
                        &item.id,
                        StoredWork {
                            due_ms: item.due_ms,
                            attempts: 0,
                            lease_until_ms: None,
                            payload: item.payload,
                        },
                        &mut writes,
                    )?;
                }
                Change::Schedule(item) => {
                    if self.staged_work(&writes, item.queue, &item.id)?.is_none() {
                        self.put_work(
                            &item.queue,
                            &item.id,
                            StoredWork {
                                due_ms: item.due_ms,
                                attempts: 0,
                                lease_until_ms: None,
                                payload: item.payload,
                            },
                            &mut writes,
                        )?;
                    }
                }
                Change::Finish { queue, id } => {
                    if let Some(old) = self.staged_work(&writes, queue, &id)? {
                        writes.push(delete(
                            Tree::WorkDue,
                            work_due_key(queue, old.next_ms(), &id),
                        ));
                        writes.push(delete(Tree::Work, work_key(queue, &id)));
                    }
                }
                Change::Retry { queue, id, due_ms } => {
                    if let Some(old) = self.staged_work(&writes, queue, &id)? {
                        let item = StoredWork {
                            due_ms,
                            lease_until_ms: None,
                            ..old
                        };
                        self.put_work(&queue, &id, item, &mut writes)?;
                    }
                }
            }
        }
        Ok(writes)
    }

    /// The value of `key` in `tree` once `staged` is applied.
    fn staged_get(
        &self,
        staged: &Staged,
        tree: Tree,
        key: &[u8],
    ) -> Result<Option<Vec<u8>>, StoreError> {
        if let Some(value) = staged.latest.get(&(tree, key.to_vec())) {
            return Ok(value.clone());
        }
        if tree != Tree::DueNow {
            return self.raw_get(tree, key);
        }
        if let Some(value) = self.inner.filed.due_now(key) {
            return Ok(value);
        }
        let value = self.raw_get(tree, key)?;
        self.inner.filed.note_due_now(key, value.as_deref());
        Ok(value)
    }

    /// Where flow `id`'s `flows_due` entry is once `staged` is applied,
    /// and whether its index entry is one of `flow_index` (a flow last
    /// written by schema 6 or older, whose record does not carry its entry;
    /// its next commit removes it); `None` if the flow is not indexed.
    fn staged_index(&self, staged: &Staged, id: &str) -> Result<Option<(u64, bool)>, StoreError> {
        if let Some(index) = staged.indexes.get(id) {
            return Ok(index.as_deref().map(|i| (FlowIndex::due_ms_of(i), false)));
        }
        if let Some(known) = self.inner.filed.index_due(id.as_bytes()) {
            return Ok(known);
        }
        let entry = self.read_index(id)?;
        let known = entry
            .as_ref()
            .map(|e| (FlowIndex::due_ms_of(&e.bytes), e.legacy));
        self.inner.filed.note_index(id.as_bytes().into(), entry);
        Ok(known)
    }

    /// Flow `id`'s index entry as stored: from its record, or from
    /// `flow_index` for a record of schema 6 or older.
    fn read_index(&self, id: &str) -> Result<Option<IndexEntry>, StoreError> {
        self.check_open()?;
        let trees = &self.inner.trees;
        let Some(stored) = trees
            .get(Tree::Flows)
            .get(id.as_bytes())
            .map_err(io("get", "flows"))?
        else {
            return Ok(None);
        };
        if let Some(carried) = Carried::decode(&stored)
            && carried.filing.is_some()
        {
            return Ok(Some(IndexEntry {
                legacy: false,
                bytes: carried.index_bytes.to_vec(),
            }));
        }
        Ok(trees
            .get(Tree::FlowIndex)
            .get(id.as_bytes())
            .map_err(io("get", "flow_index"))?
            .map(|index| IndexEntry {
                legacy: true,
                bytes: index.to_vec(),
            }))
    }

    /// Files flow `r` in the due index, lazily: an entry that is earlier
    /// than `r`'s due time but not yet due stays where it is, so a flow
    /// answered step by step, whose due time moves later with every step,
    /// moves its entry once instead of at every step. The sweep reads the
    /// flow under its user's lock, finds it not due and files it again
    /// (its entry is due then, so it moves).
    ///
    /// A flow already filed that is due at once (a flow committing: the
    /// sweep must find it if its request dies) goes into `due_now`, and
    /// its `flows_due` entry stays put, so the commit that starts a
    /// password change and the one that ends it each write one small
    /// entry instead of moving the due entry twice (BENCHMARKS.md, issue
    /// 13). `flows_due` reads both.
    ///
    /// The flow's index entry (encoded [`FlowIndex`]: where its `flows_due`
    /// entry is, state, version, user) and [`Filing`] go into its record
    /// ([`Carried`]), which is the only place they are kept.
    fn index_flow(
        &self,
        r: &FlowRecord,
        writes: &mut Staged,
    ) -> Result<(Vec<u8>, Filing), StoreError> {
        let old = self.staged_index(writes, &r.id)?;
        let now = now_ms();
        let Some((old_due_ms, legacy)) = old else {
            // Only an indexed flow has a `due_now` entry: the flow's next
            // commit need not look for one.
            self.inner.filed.note_due_now(r.id.as_bytes(), None);
            writes.push(put(Tree::FlowsDue, due_key(r.due_ms, &r.id), Vec::new()));
            let filing = Filing {
                due_ms: r.due_ms,
                was_ms: r.due_ms,
            };
            return Ok((FlowIndex::encode_of(r, r.due_ms), filing));
        };
        if legacy {
            writes.push(delete(Tree::FlowIndex, r.id.as_bytes().to_vec()));
        }
        let due_now = r.due_ms <= now;
        if due_now {
            // In memory instead if the flow record carries the commit.
            writes.push(put(
                Tree::DueNow,
                r.id.as_bytes().to_vec(),
                r.due_ms.to_be_bytes().to_vec(),
            ));
            writes.held.push((r.id.clone(), Some(r.due_ms)));
        } else {
            self.undue_now(&r.id, writes)?;
        }
        let filed_ms = if due_now || (old_due_ms <= r.due_ms && old_due_ms > now) {
            old_due_ms
        } else {
            writes.push(delete(Tree::FlowsDue, due_key(old_due_ms, &r.id)));
            writes.push(put(Tree::FlowsDue, due_key(r.due_ms, &r.id), Vec::new()));
            r.due_ms
        };
        let filing = Filing {
            due_ms: r.due_ms,
            was_ms: old_due_ms,
        };
        Ok((FlowIndex::encode_of(r, filed_ms), filing))
    }

    /// Removes flow `id`'s `due_now` entry, if it has one (and its entry
    /// in memory, once the commit is applied).
    fn undue_now(&self, id: &str, writes: &mut Staged) -> Result<(), StoreError> {
        writes.held.push((id.to_owned(), None));
        if self
            .staged_get(writes, Tree::DueNow, id.as_bytes())?
            .is_some()
        {
            writes.push(delete(Tree::DueNow, id.as_bytes().to_vec()));
        }
        Ok(())
    }

    /// Removes the due-index entries of flow `id`, if it is indexed.
    fn unindex_flow(&self, id: &str, writes: &mut Staged) -> Result<(), StoreError> {
        if let Some((old_due_ms, legacy)) = self.staged_index(writes, id)? {
            writes.push(delete(Tree::FlowsDue, due_key(old_due_ms, id)));
            self.undue_now(id, writes)?;
            if legacy {
                writes.push(delete(Tree::FlowIndex, id.as_bytes().to_vec()));
            }
        }
        Ok(())
    }

    fn work_item(&self, queue: Queue, id: &str) -> Result<Option<StoredWork>, StoreError> {
        Ok(self
            .raw_get(Tree::Work, &work_key(queue, id))?
            .and_then(|v| StoredWork::decode(&v)))
    }

    /// Work item `id` of `queue` once `staged` is applied.
    fn staged_work(
        &self,
        staged: &Staged,
        queue: Queue,
        id: &str,
    ) -> Result<Option<StoredWork>, StoreError> {
        Ok(self
            .staged_get(staged, Tree::Work, &work_key(queue, id))?
            .and_then(|v| StoredWork::decode(&v)))
    }

    /// Writes `item` as work item `id` of `queue`, replacing its index entry.
    fn put_work(
        &self,
        queue: &Queue,
        id: &str,
        item: StoredWork,
        writes: &mut Staged,
    ) -> Result<(), StoreError> {
        if let Some(old) = self.staged_work(writes, *queue, id)? {
            writes.push(delete(
                Tree::WorkDue,
                work_due_key(*queue, old.next_ms(), id),
            ));
        }
        writes.push(put(
            Tree::WorkDue,
            work_due_key(*queue, item.next_ms(), id),
            Vec::new(),
        ));
        writes.push(put(Tree::Work, work_key(*queue, id), item.encode()));
        Ok(())
    }
}

/// Brings a store of an older schema to [`SCHEMA`]; refuses a newer one.
fn migrate(trees: &Trees) -> Result<(), StoreError> {
    let meta = trees.get(Tree::Meta);
    let stored = meta
        .get(b"schema")
        .map_err(io("open", "meta"))?
        .and_then(|v| <[u8; 4]>::try_from(v.as_ref()).ok())
        .map(u32::from_be_bytes);
    match stored {
        Some(v) if v > SCHEMA => {
            return Err(StoreError::Newer {
                found: v,
                supported: SCHEMA,
            });
        }
        Some(v) if v == SCHEMA => return Ok(()),
        // 3 to 4 adds `due_now`, empty; 4 to 5 lets an `audit_users`
        // entry name several groups (an entry of 4 names one, and reads
        // the same); 5 to 6 changes how new carried commits are stored
        // (what 5 stored reads the same); 6 to 7 moves each flow's index
        // entry from `flow_index` into its record at its next commit (what
        // 6 stored reads the same).
        Some(3..=6) => return finish_migration(trees),
        _ => {}
    }
    // Older than 3: `audit_users` is built from the start of the log by
    // the indexer (see `catch_up_audit_index`).
    meta.remove(AUDIT_INDEXED).map_err(io("migrate", "meta"))?;
    if stored.is_some_and(|v| v >= 2) {
        return finish_migration(trees);
    }
    // Version 1 (or new): index every flow as due at once; the first sweep
    // reads each and puts it where it belongs.
    let flows = trees.get(Tree::Flows);
    let index = trees.get(Tree::FlowIndex);
    let due = trees.get(Tree::FlowsDue);
    for item in flows.iter() {
        let (id, _) = item.map_err(io("migrate", "flows"))?;
        let Ok(id) = std::str::from_utf8(&id) else {
            continue;
        };
        if index.contains_key(id).map_err(io("migrate", "flows"))? {
            continue;
        }
        let entry = FlowIndex {
            due_ms: 0,
            in_progress: true,
            version: String::new(),
            user: String::new(),
        };
        due.insert(due_key(0, id), Vec::new())
            .map_err(io("migrate", "flows"))?;
        index
            .insert(id, entry.encode())
            .map_err(io("migrate", "flows"))?;
    }
    finish_migration(trees)
}

/// Records the schema version, durably.
fn finish_migration(trees: &Trees) -> Result<(), StoreError> {
    let meta = trees.get(Tree::Meta);
    meta.insert(b"schema", &SCHEMA.to_be_bytes())
        .map_err(io("migrate", "meta"))?;
    meta.flush().map_err(io("migrate", "meta"))?;
    Ok(())
}

/// Present in `meta` while the store is open: found at open, the store
/// was not closed (a crash), and [`SledStore::recover_carried`] runs.
const OPEN_MARK: &[u8] = b"open";

/// Where `meta` keeps the key of the last audit group whose carried commit
/// was followed by a commit without a group that changed the carrying
/// flow's record (see [`Inner::note_carried_then_changed`]).
const CARRIED_THEN_CHANGED: &[u8] = b"carried_then_changed";

/// Where `meta` keeps how far `audit_users` is built: the sequence number
/// after the last indexed group (8 bytes BE).
const AUDIT_INDEXED: &[u8] = b"audit_indexed";

/// Groups indexed at a time (between them, exports and closing may go on).
/// A user's groups in one batch share one `audit_users` entry, so a larger
/// batch writes fewer entries (BENCHMARKS.md, issue 13).
const INDEX_BATCH: usize = 4096;

/// Files the audit groups that start before `end` and are not yet in
/// `audit_users`, at most [`INDEX_BATCH`] of them; whether it got to `end`.
/// A user's groups of the batch (in one bucket) make one entry: the key
/// names the first, the value lists the others (8 bytes BE each, in
/// order). Entries are filed again after a crash (the watermark may lag
/// the index): the batch starts where it did, so each user's entry has the
/// same key and is replaced by one naming every group it named before
/// that is still in the log.
fn catch_up_audit_index(
    trees: &Trees,
    audit_tree: &::sled::Tree,
    end: u64,
    appended: Option<&Mutex<Appended>>,
) -> Result<bool, StoreError> {
    let meta = trees.get(Tree::Meta);
    let users = trees.get(Tree::AuditUsers);
    let from = meta
        .get(AUDIT_INDEXED)
        .map_err(io("index", "meta"))?
        .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
        .map_or(0, u64::from_be_bytes);
    if from >= end {
        return Ok(true);
    }
    let mut reached = from;
    // (bucket, user) → the first group's number, then the others'.
    let mut filed: HashMap<(u64, String), (u64, Vec<u8>)> = HashMap::new();
    // As the commits appended them, or else as the log has them.
    let mut groups = appended.map_or_else(Vec::new, |a| lock(a).take(from, end, INDEX_BATCH));
    if groups.is_empty() {
        let range = audit_tree.range(audit::seq_key(from)..audit::seq_key(end));
        for item in range.take(INDEX_BATCH) {
            let (key, value) = item.map_err(io("index", AUDIT_TREE))?;
            let unreadable = |why: audit::Unreadable| StoreError::Io {
                op: "index",
                what: AUDIT_TREE,
                reason: why.describe(audit::key_seq(&key)),
            };
            let first =
                audit::key_seq(&key).ok_or_else(|| unreadable(audit::Unreadable::Undecodable))?;
            let group = audit::decode_group(&value).map_err(unreadable)?;
            let users: BTreeSet<String> = group.iter().filter_map(|s| s.user()).collect();
            groups.push((first, group.len() as u64, users.into_iter().collect()));
        }
    }
    for (first, len, users) in groups {
        for user in users {
            match filed.entry((first >> AUDIT_BUCKET_BITS, user)) {
                std::collections::hash_map::Entry::Occupied(mut e) => {
                    e.get_mut().1.extend_from_slice(&first.to_be_bytes());
                }
                std::collections::hash_map::Entry::Vacant(e) => {
                    e.insert((first, Vec::new()));
                }
            }
        }
        reached = first.saturating_add(len);
    }
    for ((_, user), (first, others)) in filed {
        users
            .insert(audit_user_key(&user, first), others)
            .map_err(io("index", "audit_users"))?;
    }
    let done = reached >= end || reached == from;
    let reached = if done { end } else { reached };
    meta.insert(AUDIT_INDEXED, &reached.to_be_bytes())
        .map_err(io("index", "meta"))?;
    Ok(done)
}

/// The groups an `audit_users` entry names: the one in its key (`first`),
/// then those its value lists.
fn filed_groups(first: u64, others: &[u8]) -> impl Iterator<Item = u64> + '_ {
    std::iter::once(first).chain(
        others
            .chunks_exact(8)
            .filter_map(|c| <[u8; 8]>::try_from(c).ok())
            .map(u64::from_be_bytes),
    )
}

/// Applies every intent a crash left, in order, and removes it; returns the
/// next intent's number.
fn replay_intents(trees: &Trees, audit: &::sled::Tree) -> Result<u64, StoreError> {
    let intents = trees.get(Tree::Intents);
    let mut next = 0;
    let mut replayed = 0;
    for item in intents.iter() {
        let (key, value) = item.map_err(io("replay", "intents"))?;
        let intent = Intent::decode(&value).ok_or_else(|| StoreError::Io {
            op: "replay",
            what: "intents",
            reason: "an intent cannot be decoded".to_owned(),
        })?;
        if let Some((group_key, group)) = intent.audit {
            audit
                .insert(group_key, group)
                .map_err(io("replay", AUDIT_TREE))?;
        }
        apply_writes(trees, &intent.writes)?;
        intents.remove(&key).map_err(io("replay", "intents"))?;
        next = u64::from_be_bytes(<[u8; 8]>::try_from(key.as_ref()).unwrap_or_default()) + 1;
        replayed += 1;
    }
    if replayed > 0 {
        intents.flush().map_err(io("replay", "intents"))?;
        tracing::warn!(
            commits = replayed,
            "completed commits a crash interrupted (all or nothing)"
        );
    }
    Ok(next)
}

/// Applies `writes` one by one, in order (not yet durably).
fn apply_writes<'a>(
    trees: &Trees,
    writes: impl IntoIterator<Item = &'a Write>,
) -> Result<(), StoreError> {
    for write in writes {
        match write {
            Write::Put { tree, key, value } => trees
                .get(*tree)
                .insert(key.as_slice(), value.as_slice())
                .map(|_| ())
                .map_err(io("commit", tree.name()))?,
            Write::Delete { tree, key } => trees
                .get(*tree)
                .remove(key.as_slice())
                .map(|_| ())
                .map_err(io("commit", tree.name()))?,
        }
    }
    Ok(())
}

/// Entries per bucket of `audit_users` (see [`audit_user_key`]).
const AUDIT_BUCKET_BITS: u32 = 16;

/// Where the group starting at entry `first` is filed for `user`: its
/// bucket (`first` >> 16, 4 bytes BE), 12 bytes of the user's digest, then
/// `first` (8 bytes BE). New entries all fall in the last bucket, so the
/// index grows at one end instead of all over; a query reads one short
/// range per bucket. Digests may collide: a query checks each entry's user.
fn audit_user_key(user: &str, first: u64) -> Vec<u8> {
    let mut key = audit_user_prefix(user, first >> AUDIT_BUCKET_BITS);
    key.extend_from_slice(&first.to_be_bytes());
    key
}

/// The part of [`audit_user_key`] shared by `user`'s groups in `bucket`.
fn audit_user_prefix(user: &str, bucket: u64) -> Vec<u8> {
    use sha2::Digest as _;
    let digest: [u8; 32] = sha2::Sha256::digest(user.as_bytes()).into();
    let mut key = Vec::with_capacity(24);
    key.extend_from_slice(&u32::try_from(bucket).unwrap_or(u32::MAX).to_be_bytes());
    key.extend_from_slice(&digest[..12]);
    key
}

fn put(tree: Tree, key: Vec<u8>, value: Vec<u8>) -> Write {
    Write::Put { tree, key, value }
}

fn delete(tree: Tree, key: Vec<u8>) -> Write {
    Write::Delete { tree, key }
}

fn due_key(due_ms: u64, id: &str) -> Vec<u8> {
    [&due_ms.to_be_bytes()[..], id.as_bytes()].concat()
}

fn enrollment_key(user: &str, gate: &str) -> Vec<u8> {
    format!("{user}/{gate}").into_bytes()
}

fn kv_key(namespace: &str, key: &str) -> Vec<u8> {
    [namespace.as_bytes(), &[0], key.as_bytes()].concat()
}

fn queue_byte(queue: Queue) -> u8 {
    match queue {
        Queue::Outbox => b'o',
        Queue::Timers => b't',
    }
}

fn byte_queue(byte: u8) -> Option<Queue> {
    Queue::ALL.into_iter().find(|q| queue_byte(*q) == byte)
}

fn work_key(queue: Queue, id: &str) -> Vec<u8> {
    [&[queue_byte(queue)][..], id.as_bytes()].concat()
}

fn work_due_key(queue: Queue, due_ms: u64, id: &str) -> Vec<u8> {
    [
        &[queue_byte(queue)][..],
        &due_ms.to_be_bytes(),
        id.as_bytes(),
    ]
    .concat()
}

/// Reads a length-prefixed field.
fn take_field<'a>(bytes: &mut &'a [u8]) -> Option<&'a [u8]> {
    let (len, rest) = bytes.split_first_chunk::<4>()?;
    let len = u32::from_be_bytes(*len) as usize;
    let field = rest.get(..len)?;
    *bytes = rest.get(len..)?;
    Some(field)
}

fn push_field(out: &mut Vec<u8>, field: &[u8]) {
    out.extend_from_slice(&(field.len() as u32).to_be_bytes());
    out.extend_from_slice(field);
}

fn take_u64(bytes: &mut &[u8]) -> Option<u64> {
    let (n, rest) = bytes.split_first_chunk::<8>()?;
    *bytes = rest;
    Some(u64::from_be_bytes(*n))
}

/// A flow's index entry (in its record since schema 7, in `flow_index`
/// before): where its `flows_due` entry is (never later than the flow is
/// due) and what `versions_in_progress` needs.
#[derive(Debug, PartialEq)]
struct FlowIndex {
    due_ms: u64,
    in_progress: bool,
    version: String,
    user: String,
}

impl FlowIndex {
    #[cfg(test)]
    fn of(r: &FlowRecord) -> FlowIndex {
        FlowIndex {
            due_ms: r.due_ms,
            in_progress: r.in_progress,
            version: r.version.clone(),
            user: r.user.clone(),
        }
    }

    fn encode(&self) -> Vec<u8> {
        Self::encode_parts(self.due_ms, self.in_progress, &self.version, &self.user)
    }

    /// The entry of flow `r`, filed at `due_ms`, encoded.
    fn encode_of(r: &FlowRecord, due_ms: u64) -> Vec<u8> {
        Self::encode_parts(due_ms, r.in_progress, &r.version, &r.user)
    }

    fn encode_parts(due_ms: u64, in_progress: bool, version: &str, user: &str) -> Vec<u8> {
        let mut out = Vec::with_capacity(17 + version.len() + user.len() + 8);
        out.extend_from_slice(&due_ms.to_be_bytes());
        out.push(u8::from(in_progress));
        push_field(&mut out, version.as_bytes());
        push_field(&mut out, user.as_bytes());
        out
    }

    /// Where an encoded entry is filed, as [`FlowIndex::decode`] reads it,
    /// without copying its strings.
    fn due_ms_of(bytes: &[u8]) -> u64 {
        Self::parse(bytes).map_or(0, |(due_ms, ..)| due_ms)
    }

    /// An encoded entry's fields, borrowed.
    fn parse(mut bytes: &[u8]) -> Option<(u64, bool, &str, &str)> {
        let due_ms = take_u64(&mut bytes)?;
        let (flag, rest) = bytes.split_first()?;
        bytes = rest;
        let version = std::str::from_utf8(take_field(&mut bytes)?).ok()?;
        let user = std::str::from_utf8(take_field(&mut bytes)?).ok()?;
        Some((due_ms, *flag != 0, version, user))
    }

    /// An unreadable entry reads as due at once (the sweep looks at the
    /// flow itself).
    fn decode(bytes: &[u8]) -> FlowIndex {
        match Self::parse(bytes) {
            Some((due_ms, in_progress, version, user)) => FlowIndex {
                due_ms,
                in_progress,
                version: version.to_owned(),
                user: user.to_owned(),
            },
            None => FlowIndex {
                due_ms: 0,
                in_progress: true,
                version: String::new(),
                user: String::new(),
            },
        }
    }
}

/// A work item as `work` keeps it.
struct StoredWork {
    due_ms: u64,
    attempts: u32,
    lease_until_ms: Option<u64>,
    payload: Vec<u8>,
}

impl StoredWork {
    /// When it can next be claimed: at its due time, or when its lease ends.
    fn next_ms(&self) -> u64 {
        self.lease_until_ms.unwrap_or(self.due_ms)
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(24 + self.payload.len());
        out.extend_from_slice(&self.due_ms.to_be_bytes());
        out.extend_from_slice(&self.attempts.to_be_bytes());
        out.extend_from_slice(&self.lease_until_ms.unwrap_or(0).to_be_bytes());
        push_field(&mut out, &self.payload);
        out
    }

    fn decode(mut bytes: &[u8]) -> Option<StoredWork> {
        let due_ms = take_u64(&mut bytes)?;
        let (attempts, rest) = bytes.split_first_chunk::<4>()?;
        bytes = rest;
        let lease = take_u64(&mut bytes)?;
        let payload = take_field(&mut bytes)?.to_vec();
        Some(StoredWork {
            due_ms,
            attempts: u32::from_be_bytes(*attempts),
            lease_until_ms: (lease != 0).then_some(lease),
            payload,
        })
    }
}

/// A commit as its intent keeps it: its audit group (key and bytes) and its
/// writes.
struct Intent {
    audit: Option<(Vec<u8>, Vec<u8>)>,
    writes: Vec<Write>,
}

impl Intent {
    const FORMAT: u8 = 1;

    fn encode(audit: Option<(&[u8], &[u8])>, writes: &[Write]) -> Vec<u8> {
        let size: usize = writes
            .iter()
            .map(|w| match w {
                Write::Put { key, value, .. } => 10 + key.len() + value.len(),
                Write::Delete { key, .. } => 6 + key.len(),
            })
            .sum::<usize>()
            + audit.map_or(0, |(k, v)| 8 + k.len() + v.len());
        let mut out = Vec::with_capacity(6 + size);
        out.push(Self::FORMAT);
        match audit {
            Some((key, group)) => {
                out.push(1);
                push_field(&mut out, key);
                push_field(&mut out, group);
            }
            None => out.push(0),
        }
        for write in writes {
            match write {
                Write::Put { tree, key, value } => {
                    out.push(0);
                    out.push(tree.index() as u8);
                    push_field(&mut out, key);
                    push_field(&mut out, value);
                }
                Write::Delete { tree, key } => {
                    out.push(1);
                    out.push(tree.index() as u8);
                    push_field(&mut out, key);
                }
            }
        }
        out
    }

    fn decode(mut bytes: &[u8]) -> Option<Intent> {
        let (&format, rest) = bytes.split_first()?;
        if format != Self::FORMAT {
            return None;
        }
        let (&has_audit, rest) = rest.split_first()?;
        bytes = rest;
        let audit = if has_audit == 1 {
            let key = take_field(&mut bytes)?.to_vec();
            let group = take_field(&mut bytes)?.to_vec();
            Some((key, group))
        } else {
            None
        };
        let mut writes = Vec::new();
        while let Some((&op, rest)) = bytes.split_first() {
            let (&tree, rest) = rest.split_first()?;
            let tree = *Tree::ALL.get(usize::from(tree))?;
            bytes = rest;
            let key = take_field(&mut bytes)?.to_vec();
            writes.push(match op {
                0 => Write::Put {
                    tree,
                    key,
                    value: take_field(&mut bytes)?.to_vec(),
                },
                1 => Write::Delete { tree, key },
                _ => return None,
            });
        }
        Some(Intent { audit, writes })
    }
}

/// The body of a stored flow record: a record of schema 7 or a carrying
/// one of 5 or 6 ([`Carried`]), or a plain body of 6 or older (escaped
/// with a `0x00` byte if it started with `0x00` or `0x01`; the
/// runtime's bodies are JSON objects and never do).
fn flow_body(stored: &[u8]) -> &[u8] {
    match stored.first() {
        Some(0x00) => stored.get(1..).unwrap_or_default(),
        Some(&(Carried::FORMAT | Carried::INDEXED)) => {
            Carried::decode(stored).map_or(stored, |c| c.body)
        }
        _ => stored,
    }
}

/// A lockout history as stored: format byte `0x01`, the *stamp* (the
/// sequence number of the audit group of the commit that wrote it, or the
/// next one when the commit had none: 8 bytes BE), then the history. A
/// commit its flow record carries ([`Carried`]) may write its user's
/// history; after a crash the history is written again only if the one
/// stored has an older stamp (the write did not land, and nothing of the
/// user's came after it). A history of schema 4 (no stamp) is stamped 0.
struct Stamped;

impl Stamped {
    const FORMAT: u8 = 0x01;

    fn encode(stamp: u64, value: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(9 + value.len());
        out.push(Self::FORMAT);
        out.extend_from_slice(&stamp.to_be_bytes());
        out.extend_from_slice(value);
        out
    }

    /// The stamp of a stored history.
    fn stamp(stored: &[u8]) -> u64 {
        match stored.split_first() {
            Some((&Self::FORMAT, rest)) => rest
                .first_chunk::<8>()
                .map_or(0, |b| u64::from_be_bytes(*b)),
            _ => 0,
        }
    }

    /// The history of a stored value.
    fn value(stored: &[u8]) -> &[u8] {
        match stored.split_first() {
            Some((&Self::FORMAT, rest)) => rest.get(8..).unwrap_or_default(),
            _ => stored,
        }
    }

    /// Whether `write` puts a history.
    fn writes(write: &Write) -> bool {
        matches!(
            write,
            Write::Put {
                tree: Tree::Lockout,
                ..
            }
        )
    }

    /// Stamps every history `writes` put with `stamp`.
    fn stamp_all(writes: &mut [Write], stamp: u64) {
        for write in writes {
            if let Write::Put {
                tree: Tree::Lockout,
                value,
                ..
            } = write
                && let Some(slot) = value.get_mut(1..9)
            {
                slot.copy_from_slice(&stamp.to_be_bytes());
            }
        }
    }
}

/// Where the one flow record of `writes` is, if every other write is one
/// of its index entries or one lockout history: a commit the record can
/// carry.
fn carried_flow(writes: &[Write]) -> Option<usize> {
    let mut at = None;
    let mut lockout = false;
    for (i, write) in writes.iter().enumerate() {
        match write {
            Write::Put {
                tree: Tree::Flows, ..
            } if at.is_none() => at = Some(i),
            Write::Put {
                tree: Tree::Lockout,
                ..
            } if !lockout => lockout = true,
            Write::Put { tree, .. } | Write::Delete { tree, .. }
                if matches!(tree, Tree::FlowIndex | Tree::FlowsDue | Tree::DueNow) => {}
            _ => return None,
        }
    }
    at
}

/// A flow record as schema 7 stores it: format byte `0x02`, the flow's
/// [`Filing`], its index entry (where its `flows_due` entry is, state,
/// version, user: the only place the entry is kept), the key of the audit
/// group of the commit that wrote it if that commit was carried (else
/// empty), the lockout history that commit wrote, then the body. Records
/// of schema 5 and 6 (format `0x01`, or a plain body) are still read;
/// their index entries are in `flow_index`, until the flow's next commit.
///
/// Most of a reset's commits write one flow, its index entries and an
/// audit group. Such a commit is *carried* by the flow record and needs
/// no intent: under the chain-head lock the group is inserted, marked as
/// carried and naming the flow ([`audit::mark_carried`]), then the flow
/// record carrying the group's key; its `flows_due` and `due_now` entries
/// and the history follow after the lock. A crash can cut it short in two
/// places, and an open after a crash finds both
/// ([`SledStore::recover_carried`]):
/// - the group without the record: only the newest group can be so (the
///   record is the next insert under the lock). Nothing else of the
///   commit is stored and it was never acknowledged, so the group is
///   taken away ([`SledStore::drop_cut_short_group`]). The newest group
///   is also not carried by its flow's record if a later commit without
///   a group changed or removed that record; such a commit notes the
///   group first ([`CARRIED_THEN_CHANGED`]), so it is kept;
/// - the group and the record without all of the index entries or the
///   user's lockout history: the entries are filed again from the
///   record's index entry and [`Filing`], the history written again
///   unless the stored one is stamped as new (see [`Stamped`]).
///
/// A record of schema 5 also holds the group's bytes (5 inserted the
/// record first, then the group, and recovery put a missing group back).
struct Carried<'a> {
    /// The flow's index entry as stored ([`Carried::index`]).
    index_bytes: &'a [u8],
    /// Schema 7: the flow's due time, and where it was filed before.
    filing: Option<Filing>,
    group_key: &'a [u8],
    /// The group's bytes, in a record of schema 5 (which inserted the
    /// record before the group); empty since.
    group: &'a [u8],
    /// The lockout history the commit wrote: user key and stored value
    /// (stamped with the group's sequence number); an empty key if none.
    lockout: (&'a [u8], &'a [u8]),
    body: &'a [u8],
}

/// Where a flow is due and was filed, beside its index entry in its
/// record (schema 7): its due time, and where its `flows_due` entry was
/// before the commit that wrote the record (the entry's place now, if the
/// commit left it there). An open after a crash removes the entry at
/// `was_ms` if the commit moved it, and files the flow in `due_now` if it
/// is due before its entry ([`SledStore::recover_carried`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Filing {
    due_ms: u64,
    was_ms: u64,
}

impl<'a> Carried<'a> {
    /// Schema 5 and 6.
    const FORMAT: u8 = 0x01;
    /// Schema 7.
    const INDEXED: u8 = 0x02;

    /// The flow's index entry: in a record of schema 7 its `due_ms` is
    /// where its `flows_due` entry is; in one of 5 or 6 the flow's due
    /// time (where it is filed is in `flow_index`).
    fn index(&self) -> FlowIndex {
        FlowIndex::decode(self.index_bytes)
    }

    /// A record of schema 7.
    fn encode(
        index: &[u8],
        filing: Filing,
        group_key: &[u8],
        lockout: (&[u8], &[u8]),
        body: &[u8],
    ) -> Vec<u8> {
        let mut out = Vec::with_capacity(
            1 + 16
                + 16
                + index.len()
                + group_key.len()
                + lockout.0.len()
                + lockout.1.len()
                + body.len(),
        );
        out.push(Self::INDEXED);
        out.extend_from_slice(&filing.due_ms.to_be_bytes());
        out.extend_from_slice(&filing.was_ms.to_be_bytes());
        push_field(&mut out, index);
        push_field(&mut out, group_key);
        push_field(&mut out, lockout.0);
        push_field(&mut out, lockout.1);
        out.extend_from_slice(body);
        out
    }

    /// The flow key and carrying record of the flow `writes[at]` puts,
    /// with the commit's group key (empty without a group) and the lockout
    /// history the commit writes, if any.
    fn record<'w>(writes: &'w [Write], at: usize, group_key: &[u8]) -> Option<(&'w [u8], Vec<u8>)> {
        let Some(Write::Put { key, value, .. }) = writes.get(at) else {
            return None;
        };
        let staged = Carried::decode(value)?;
        let filing = staged.filing?;
        let lockout = writes
            .iter()
            .find_map(|w| match w {
                Write::Put {
                    tree: Tree::Lockout,
                    key,
                    value,
                } => Some((key.as_slice(), value.as_slice())),
                _ => None,
            })
            .unwrap_or_default();
        Some((
            key,
            Self::encode(staged.index_bytes, filing, group_key, lockout, staged.body),
        ))
    }

    fn decode(stored: &'a [u8]) -> Option<Carried<'a>> {
        let (&format, mut rest) = stored.split_first()?;
        // Schema 7 puts the filing first; 5 and 6 had a group field
        // between the group key and the history.
        let filing = match format {
            Self::INDEXED => Some(Filing {
                due_ms: take_u64(&mut rest)?,
                was_ms: take_u64(&mut rest)?,
            }),
            Self::FORMAT => None,
            _ => return None,
        };
        let index_bytes = take_field(&mut rest)?;
        let group_key = take_field(&mut rest)?;
        let group = match filing {
            Some(_) => &[][..],
            None => take_field(&mut rest)?,
        };
        let lockout = (take_field(&mut rest)?, take_field(&mut rest)?);
        Some(Carried {
            index_bytes,
            filing,
            group_key,
            group,
            lockout,
            body: rest,
        })
    }
}

/// How often the indexer catches `audit_users` up.
const INDEX_EVERY: Duration = Duration::from_secs(1);

impl Inner {
    /// Brings `audit_users` up to the end of the audit log as it is now,
    /// batch by batch (each under the read side of `closed`, so exports
    /// and closing wait at most a batch); that end.
    fn catch_up_index(&self) -> Result<u64, StoreError> {
        let _one = lock(&self.indexer);
        let end = lock(&self.head).next_seq;
        loop {
            let closed = self.closed.read().unwrap_or_else(PoisonError::into_inner);
            if *closed {
                return Err(StoreError::Closed);
            }
            if catch_up_audit_index(&self.trees, &self.audit, end, Some(&self.appended))? {
                return Ok(end);
            }
        }
    }

    fn close(&self) {
        // Held throughout, so that a second caller returns only once the
        // flusher is gone.
        let mut flusher = lock(&self.flusher);
        *self.closed.write().unwrap_or_else(PoisonError::into_inner) = true;
        // No commit is applying now: the due entries held in memory go to
        // the tree, before the last flush.
        let held = std::mem::take(&mut *lock(&self.held_due));
        let due_now = self.trees.get(Tree::DueNow);
        for (id, due) in held {
            if let Err(e) = due_now.insert(id.as_bytes(), &due.to_be_bytes()) {
                tracing::error!(error = %describe(&e), "cannot file a flow being committed as due; the sweep finds it at its earlier due time");
            }
        }
        lock(&self.flush.state).shutdown = true;
        self.flush.work.notify_all();
        if let Some(handle) = flusher.take() {
            if handle.join().is_err() {
                tracing::error!("the store's flusher thread panicked");
            }
            // Every write is on disk: the next open has nothing to recover.
            let meta = self.trees.get(Tree::Meta);
            if let Err(e) = meta.remove(OPEN_MARK).and_then(|_| meta.flush()) {
                tracing::error!(error = %describe(&e), "cannot note that the store closed; the next open reads every flow");
            }
        }
    }

    /// Appends `records` as one group and applies `writes`, all or nothing
    /// across a crash (see the module documentation); not yet durable.
    /// Returns the last record's sequence number.
    ///
    /// The group is laid out (records serialised, buffer allocated) before
    /// the chain-head lock is taken; under it, only each entry's hash is
    /// computed and written into place, and the intent (or the flow record
    /// that carries the commit, see [`Carried`]) and the group inserted.
    /// Inserting under the lock, in sequence order, is what keeps
    /// the log free of holes on disk: sled recovers a prefix of its log,
    /// and groups reach the log in the order they are inserted, so whatever
    /// prefix survives a crash holds entry `n - 1` whenever it holds entry
    /// `n`. The writes are applied after the lock is released.
    fn apply(&self, staged: Staged, records: &[AuditRecord]) -> Result<Option<u64>, StoreError> {
        let Staged {
            mut writes,
            indexes,
            carry,
            held,
            ..
        } = staged;
        let encode_error = |reason: String| StoreError::Io {
            op: "append",
            what: AUDIT_TREE,
            reason,
        };
        let mut prepared = audit::prepare(records)
            .map_err(|e| encode_error(format!("cannot encode the entry: {e}")))?;
        // A commit of one flow, its index entries and an audit group is
        // carried by the flow record instead of an intent; its group names
        // the flow.
        let carried = match (&mut prepared, carry) {
            (Some((bytes, _)), Carry::One) => carried_flow(&writes).filter(|&at| {
                matches!(writes.get(at), Some(Write::Put { key, .. }) if audit::mark_carried(bytes, key))
            }),
            // Without a group, a commit that writes no lockout history (a
            // history's stamp would not order it after an earlier commit
            // without a group: recovery could not tell which is newer).
            (None, Carry::One) => {
                carried_flow(&writes).filter(|_| !writes.iter().any(Stamped::writes))
            }
            _ => None,
        };
        // Only a record `Carried::record` can rewrite (every record
        // `staged_of` builds); any other goes in as it is, with an intent.
        let carried = carried.filter(|&at| {
            matches!(writes.get(at), Some(Write::Put { value, .. })
                if Carried::decode(value).is_some_and(|c| c.filing.is_some()))
        });
        let needs_intent = carried.is_none() && writes.len() + usize::from(prepared.is_some()) > 1;
        let mut seq = None;
        let mut intent_key = None;
        if let Some((bytes, layout)) = prepared {
            let mut users: Vec<String> = records.iter().filter_map(|r| r.user.clone()).collect();
            users.sort_unstable();
            users.dedup();
            // Converted before the lock: this copies the bytes once more.
            let mut value = ::sled::IVec::from(bytes);
            let mut head = lock(&self.head);
            // Link a copy, so that a failed insert leaves the head where the
            // stored chain ends.
            let mut next = *head;
            let first = layout.link(&mut next, &mut value).ok_or_else(|| {
                encode_error("internal error: the group lost its layout".to_owned())
            })?;
            let group_key = audit::seq_key(first);
            let first_seq = Some(first);
            Stamped::stamp_all(&mut writes, first);
            if needs_intent {
                intent_key = Some(self.insert_intent(Some((&group_key, &value)), &writes)?);
            }
            // The group first, then the record that carries its commit: a
            // crash in between leaves the group at the end of the chain
            // and no record carrying it, which recovery takes away.
            self.audit
                .insert(group_key, value)
                .map_err(io("append", AUDIT_TREE))?;
            let mut tail = None;
            if let Some((key, record)) =
                carried.and_then(|at| Carried::record(&writes, at, &group_key))
            {
                if let Err(e) = self.trees.get(Tree::Flows).insert(key, record) {
                    // Not applied: the group goes too, if it can.
                    if self.audit.remove(group_key).is_err() {
                        *head = next;
                    }
                    return Err(io("commit", "flows")(e));
                }
                tail = Some((key.to_vec(), group_key));
            }
            *head = next;
            *lock(&self.tail_carried) = tail;
            if let Some(first) = first_seq {
                lock(&self.appended).push(first, records.len() as u64, users);
            }
            drop(head);
            seq = next.next_seq.checked_sub(1);
        } else {
            self.note_carried_then_changed(&writes)?;
            if let Some((key, record)) = carried.and_then(|at| Carried::record(&writes, at, &[])) {
                self.trees
                    .get(Tree::Flows)
                    .insert(key, record)
                    .map_err(io("commit", "flows"))?;
            }
            if needs_intent || writes.iter().any(Stamped::writes) {
                // No group: a history written now is stamped after every
                // group so far (a lone write of anything else takes no lock).
                let order = lock(&self.head);
                Stamped::stamp_all(&mut writes, order.next_seq);
                if needs_intent {
                    intent_key = Some(self.insert_intent(None, &writes)?);
                }
            }
        }
        let carried_at = carried;
        // A carried commit's `due_now` entries are kept in memory.
        let in_memory = |w: &Write| {
            carried_at.is_some()
                && matches!(
                    w,
                    Write::Put {
                        tree: Tree::DueNow,
                        ..
                    }
                )
        };
        let rest = || {
            writes
                .iter()
                .enumerate()
                .filter(|&(i, w)| Some(i) != carried_at && !in_memory(w))
                .map(|(_, w)| w)
        };
        if let Err(e) = apply_writes(&self.trees, rest()) {
            self.filed.clear();
            return Err(e);
        }
        self.filed.applied(rest(), indexes);
        if !held.is_empty() {
            let mut in_memory = lock(&self.held_due);
            for (id, due) in held {
                match due {
                    Some(due) if carried_at.is_some() => in_memory.insert(id, due),
                    _ => in_memory.remove(&id),
                };
            }
        }
        if let Some(key) = intent_key {
            self.trees
                .get(Tree::Intents)
                .remove(key)
                .map_err(io("commit", "intents"))?;
        }
        Ok(seq)
    }

    /// Before a commit without an audit group changes or removes the record
    /// of the flow whose record carries the newest group's commit
    /// ([`Inner::tail_carried`]): notes that group in `meta`
    /// ([`CARRIED_THEN_CHANGED`]). The note goes into the log after the
    /// record that carried the group and before this commit's writes, so
    /// an open after a crash that finds the record changed (or gone) and
    /// the note knows the group's commit was whole.
    fn note_carried_then_changed(&self, writes: &[Write]) -> Result<(), StoreError> {
        let mut tail = lock(&self.tail_carried);
        let Some((flow, group)) = tail.as_ref() else {
            return Ok(());
        };
        let changes = writes.iter().any(|w| match w {
            Write::Put {
                tree: Tree::Flows,
                key,
                ..
            }
            | Write::Delete {
                tree: Tree::Flows,
                key,
            } => key == flow,
            _ => false,
        });
        if changes {
            self.trees
                .get(Tree::Meta)
                .insert(CARRIED_THEN_CHANGED, &group[..])
                .map_err(io("commit", "meta"))?;
            *tail = None;
        }
        Ok(())
    }

    /// Inserts a commit's intent; its key. The caller holds the head lock.
    fn insert_intent(
        &self,
        audit: Option<(&[u8], &[u8])>,
        writes: &[Write],
    ) -> Result<[u8; 8], StoreError> {
        let key = self
            .next_intent
            .fetch_add(1, Ordering::Relaxed)
            .to_be_bytes();
        self.trees
            .get(Tree::Intents)
            .insert(key, Intent::encode(audit, writes))
            .map_err(io("commit", "intents"))?;
        Ok(key)
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.close();
    }
}

impl fmt::Debug for SledStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SledStore")
            .field("path", &self.inner.path)
            .finish_non_exhaustive()
    }
}

impl SledStore {
    /// Appends `records` to the audit log and applies `writes` (all or
    /// nothing); returns the last record's sequence number and the
    /// [`Durable`] that resolves once both are on disk.
    fn stage(
        &self,
        writes: Vec<Write>,
        records: &[AuditRecord],
    ) -> Result<(Option<u64>, Durable), StoreError> {
        self.stage_staged(Staged::of(writes), records)
    }

    /// [`stage`](Self::stage) of writes [`staged_of`](Self::staged_of)
    /// built: its one flow record may carry the commit (see [`Carried`]).
    fn stage_staged(
        &self,
        staged: Staged,
        records: &[AuditRecord],
    ) -> Result<(Option<u64>, Durable), StoreError> {
        let (seq, needed) = {
            let closed = self
                .inner
                .closed
                .read()
                .unwrap_or_else(PoisonError::into_inner);
            if *closed {
                return Err(StoreError::Closed);
            }
            if staged.writes.is_empty() && records.is_empty() {
                return Ok((None, Durable::ready()));
            }
            let seq = self.inner.apply(staged, records)?;
            (seq, self.inner.flush.register()?)
        };
        let ticket = Ticket {
            flush: self.inner.flush.clone(),
            needed,
        };
        Ok((seq, Durable::pending(Box::new(ticket))))
    }

    /// Every record but the audit log's, to `visit`.
    fn export_records(
        &self,
        visit: &mut dyn FnMut(Item) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let trees = &self.inner.trees;
        for item in trees.get(Tree::Flows).iter() {
            let (id, body) = item.map_err(io("export", "flows"))?;
            let Ok(id) = String::from_utf8(id.to_vec()) else {
                continue;
            };
            let (index, due_ms) = match Carried::decode(&body) {
                Some(
                    c @ Carried {
                        filing: Some(filing),
                        ..
                    },
                ) => (c.index(), filing.due_ms),
                // Schema 6 or older: `flow_index` has its entry; a flow due
                // at once is due when its `due_now` entry says.
                _ => {
                    // Not `raw_get`: the caller holds `closed` for writing.
                    let index = match trees
                        .get(Tree::FlowIndex)
                        .get(id.as_bytes())
                        .map_err(io("export", "flow_index"))?
                    {
                        Some(bytes) => FlowIndex::decode(&bytes),
                        None => FlowIndex::decode(&[]),
                    };
                    let held = lock(&self.inner.held_due).get(&id).copied();
                    let due_ms = match held {
                        Some(due) => due,
                        None => trees
                            .get(Tree::DueNow)
                            .get(id.as_bytes())
                            .map_err(io("export", "due_now"))?
                            .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
                            .map_or(index.due_ms, u64::from_be_bytes),
                    };
                    (index, due_ms)
                }
            };
            visit(Item::Flow(FlowRecord {
                id,
                user: index.user,
                version: index.version,
                in_progress: index.in_progress,
                due_ms,
                body: flow_body(&body).to_vec(),
            }))?;
        }
        for item in trees.get(Tree::Lockout).iter() {
            let (user, history) = item.map_err(io("export", "lockout"))?;
            if let Ok(user) = String::from_utf8(user.to_vec()) {
                visit(Item::Lockout {
                    user,
                    history: Stamped::value(&history).to_vec(),
                })?;
            }
        }
        for item in trees.get(Tree::Enrollments).iter() {
            let (key, data) = item.map_err(io("export", "enrollments"))?;
            // `user/gate`: a user key is a hex digest, so the first `/` ends it.
            let Some((user, gate)) = std::str::from_utf8(&key)
                .ok()
                .and_then(|k| k.split_once('/'))
            else {
                continue;
            };
            visit(Item::Enrollment {
                user: user.to_owned(),
                gate: gate.to_owned(),
                data: data.to_vec(),
            })?;
        }
        for item in trees.get(Tree::Kv).iter() {
            let (key, value) = item.map_err(io("export", "kv"))?;
            let Some(at) = key.iter().position(|b| *b == 0) else {
                continue;
            };
            let (Ok(namespace), Ok(k)) = (
                String::from_utf8(key[..at].to_vec()),
                String::from_utf8(key[at + 1..].to_vec()),
            ) else {
                continue;
            };
            visit(Item::Kv {
                namespace,
                key: k,
                value: value.to_vec(),
            })?;
        }
        for item in trees.get(Tree::Work).iter() {
            let (key, value) = item.map_err(io("export", "work"))?;
            let (Some((&q, id)), Some(work)) = (key.split_first(), StoredWork::decode(&value))
            else {
                continue;
            };
            let (Some(queue), Ok(id)) = (byte_queue(q), String::from_utf8(id.to_vec())) else {
                continue;
            };
            visit(Item::Work {
                item: WorkItem {
                    queue,
                    id,
                    due_ms: work.due_ms,
                    payload: work.payload,
                },
                attempts: work.attempts,
                lease_until_ms: work.lease_until_ms,
            })?;
        }
        Ok(())
    }

    /// Appends one record; durable when it returns, with its sequence
    /// number.
    pub fn append_audit(&self, record: AuditRecord) -> Result<u64, StoreError> {
        let (seq, durable) = self.stage(Vec::new(), std::slice::from_ref(&record))?;
        durable.wait()?;
        Ok(seq.unwrap_or_default())
    }
}

/// A user's lock: an in-process stripe (one process owns a sled store, so
/// it cannot be lost while held). Commits go to the store as they are.
struct SledLock<'a> {
    store: &'a SledStore,
    _stripe: MutexGuard<'a, ()>,
}

impl Held for SledLock<'_> {
    fn commit(&mut self, commit: Commit) -> Result<Durable, StoreError> {
        self.store.commit(commit)
    }

    fn commit_and_release(self: Box<Self>, commit: Commit) -> Result<Durable, StoreError> {
        // Visible when `commit` returns; the stripe is released after it.
        self.store.commit(commit)
    }
}

impl Store for SledStore {
    fn backend(&self) -> &'static str {
        "sled"
    }

    fn location(&self) -> String {
        self.inner.path.display().to_string()
    }

    fn schema_version(&self) -> Result<u32, StoreError> {
        Ok(self
            .raw_get(Tree::Meta, b"schema")?
            .and_then(|v| <[u8; 4]>::try_from(v.as_slice()).ok())
            .map_or(1, u32::from_be_bytes))
    }

    /// Always, until closed: the store is in this process.
    fn ready(&self) -> Result<(), StoreError> {
        self.check_open()
    }

    fn lock_user(&self, user: &str) -> Result<UserLock<'_>, StoreError> {
        use sha2::{Digest, Sha256};
        self.check_open()?;
        let h = Sha256::digest(user.as_bytes());
        let i =
            u64::from_be_bytes([h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7]]) as usize % STRIPES;
        let stripe = &self.inner.stripes[i];
        // A poisoned stripe only means another request panicked; the data
        // it guards is in the store.
        let guard = match stripe.try_lock() {
            Ok(guard) => guard,
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => {
                crate::workers::waiting(|| stripe.lock().unwrap_or_else(PoisonError::into_inner))
            }
        };
        Ok(UserLock::new(SledLock {
            store: self,
            _stripe: guard,
        }))
    }

    fn flow(&self, id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.get_as(Tree::Flows, id.as_bytes(), flow_body)
    }

    fn flows_due(
        &self,
        now_ms: u64,
        after: Option<(u64, String)>,
        limit: usize,
    ) -> Result<Vec<(u64, String)>, StoreError> {
        use std::ops::Bound;
        self.check_open()?;
        let tree = self.inner.trees.get(Tree::FlowsDue);
        let start = match &after {
            Some((due, id)) => Bound::Excluded(due_key(*due, id)),
            None => Bound::Unbounded,
        };
        let end = match now_ms.checked_add(1) {
            Some(end) => Bound::Excluded(end.to_be_bytes().to_vec()),
            None => Bound::Unbounded,
        };
        // The flows due at once first (few: the flows being committed),
        // then `flows_due`, merged in (due, id) order; a flow in both is
        // named by its `due_now` entry only (that is its due time).
        let mut in_due_now = std::collections::HashSet::new();
        let mut now_due = Vec::new();
        let mut due_now: HashMap<String, u64> = lock(&self.inner.held_due).clone();
        for item in self.inner.trees.get(Tree::DueNow).iter() {
            let (id, due) = item.map_err(io("scan", "due_now"))?;
            let (Ok(due), Ok(id)) = (<[u8; 8]>::try_from(due.as_ref()), std::str::from_utf8(&id))
            else {
                continue;
            };
            due_now
                .entry(id.to_owned())
                .or_insert(u64::from_be_bytes(due));
        }
        for (id, due) in due_now {
            in_due_now.insert(id.clone());
            let entry = (due, id);
            if entry.0 <= now_ms && after.as_ref().is_none_or(|a| entry > *a) {
                now_due.push(entry);
            }
        }
        now_due.sort_unstable();
        let mut out = Vec::new();
        for item in tree.range::<Vec<u8>, _>((start, end)) {
            if out.len() >= limit {
                break;
            }
            let (key, _) = item.map_err(io("scan", "flows_due"))?;
            let mut bytes = key.as_ref();
            let (Some(due), Ok(id)) = (take_u64(&mut bytes), std::str::from_utf8(bytes)) else {
                continue;
            };
            if in_due_now.contains(id) {
                continue;
            }
            out.push((due, id.to_owned()));
        }
        out.extend(now_due);
        out.sort_unstable();
        out.truncate(limit);
        Ok(out)
    }

    fn versions_in_progress(&self) -> Result<BTreeSet<String>, StoreError> {
        self.check_open()?;
        let mut out = BTreeSet::new();
        let trees = &self.inner.trees;
        for item in trees.get(Tree::Flows).iter() {
            let (id, stored) = item.map_err(io("scan", "flows"))?;
            let index = match Carried::decode(&stored) {
                Some(
                    c @ Carried {
                        filing: Some(_), ..
                    },
                ) => c.index(),
                // Schema 6 or older: `flow_index` has its entry.
                _ => match trees
                    .get(Tree::FlowIndex)
                    .get(&id)
                    .map_err(io("scan", "flow_index"))?
                {
                    Some(bytes) => FlowIndex::decode(&bytes),
                    None => continue,
                },
            };
            if index.in_progress {
                out.insert(index.version);
            }
        }
        Ok(out)
    }

    fn lockout(&self, user: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.get_as(Tree::Lockout, user.as_bytes(), Stamped::value)
    }

    fn enrollment(&self, user: &str, gate: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.raw_get(Tree::Enrollments, &enrollment_key(user, gate))
    }

    fn kv_get(&self, namespace: &str, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.raw_get(Tree::Kv, &kv_key(namespace, key))
    }

    fn kv_scan(
        &self,
        namespace: &str,
        prefix: &str,
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let ns = kv_key(namespace, "");
        Ok(self
            .raw_scan(Tree::Kv, &kv_key(namespace, prefix), limit)?
            .into_iter()
            .filter_map(|(k, v)| {
                let key = String::from_utf8(k.get(ns.len()..)?.to_vec()).ok()?;
                Some((key, v))
            })
            .collect())
    }

    fn kv_keys(
        &self,
        namespace: &str,
        prefix: &str,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        self.check_open()?;
        let ns = kv_key(namespace, "").len();
        let mut out = Vec::new();
        for key in self
            .inner
            .trees
            .get(Tree::Kv)
            .scan_prefix(kv_key(namespace, prefix))
            .keys()
            .take(limit)
        {
            let key = key.map_err(io("scan", "kv"))?;
            if let Some(k) = key.get(ns..).and_then(|k| std::str::from_utf8(k).ok()) {
                out.push(k.to_owned());
            }
        }
        Ok(out)
    }

    fn commit(&self, commit: Commit) -> Result<Durable, StoreError> {
        self.check_open()?;
        let touches_work = commit.changes.iter().any(|c| {
            matches!(
                c,
                Change::Enqueue(_)
                    | Change::Schedule(_)
                    | Change::Finish { .. }
                    | Change::Retry { .. }
            )
        });
        let _work = touches_work.then(|| lock(&self.inner.work));
        let staged = self.staged_of(commit.changes)?;
        Ok(self.stage_staged(staged, &commit.audit)?.1)
    }

    fn claim_due(
        &self,
        queue: Queue,
        now_ms: u64,
        lease_ms: u64,
        limit: usize,
    ) -> Result<Vec<Claim>, StoreError> {
        self.check_open()?;
        let durable = {
            let _work = lock(&self.inner.work);
            let tree = self.inner.trees.get(Tree::WorkDue);
            let end = [
                &[queue_byte(queue)][..],
                &now_ms.saturating_add(1).to_be_bytes(),
            ]
            .concat();
            let mut claims = Vec::new();
            let mut writes = Vec::new();
            for item in tree.range(vec![queue_byte(queue)]..end).keys().take(limit) {
                let key = item.map_err(io("claim", "work_due"))?;
                let Some(id) = key.get(9..).and_then(|id| std::str::from_utf8(id).ok()) else {
                    continue;
                };
                let Some(old) = self.work_item(queue, id)? else {
                    continue;
                };
                let lease_until_ms = now_ms.saturating_add(lease_ms);
                let leased = StoredWork {
                    attempts: old.attempts.saturating_add(1),
                    lease_until_ms: Some(lease_until_ms),
                    ..old
                };
                claims.push(Claim {
                    item: WorkItem {
                        queue,
                        id: id.to_owned(),
                        due_ms: leased.due_ms,
                        payload: leased.payload.clone(),
                    },
                    attempt: leased.attempts,
                    lease_until_ms,
                });
                writes.push(delete(Tree::WorkDue, key.to_vec()));
                writes.push(put(
                    Tree::WorkDue,
                    work_due_key(queue, lease_until_ms, id),
                    Vec::new(),
                ));
                writes.push(put(Tree::Work, work_key(queue, id), leased.encode()));
            }
            if claims.is_empty() {
                return Ok(claims);
            }
            let durable = self.stage(writes, &[])?.1;
            (claims, durable)
        };
        let (claims, durable) = durable;
        durable.wait()?;
        Ok(claims)
    }

    fn export(
        &self,
        visit: &mut (dyn FnMut(Item) -> Result<(), StoreError> + Send),
    ) -> Result<(), StoreError> {
        // One cut: no commit is being applied while the records are read
        // (commits apply under the read side of `closed`) and the audit
        // log is read up to where its head was then. Entries are never
        // changed once written, so they are read after the barrier.
        let (records, end) = {
            let closed = self
                .inner
                .closed
                .write()
                .unwrap_or_else(PoisonError::into_inner);
            if *closed {
                return Err(StoreError::Closed);
            }
            let mut records = Vec::new();
            self.export_records(&mut |item| {
                records.push(item);
                Ok(())
            })?;
            (records, lock(&self.inner.head).next_seq)
        };
        for item in records {
            visit(item)?;
        }
        let mut from = 0;
        while from < end {
            let batch = self.entries(from, 1000)?;
            let Some(last) = batch.last() else {
                break;
            };
            from = last.seq + 1;
            for entry in batch.into_iter().filter(|e| e.seq < end) {
                visit(Item::Audit(entry))?;
            }
        }
        Ok(())
    }

    fn import(&self, items: Vec<Item>) -> Result<(), StoreError> {
        self.check_open()?;
        let super::Sorted {
            changes,
            work,
            audit: mut entries,
        } = super::Sorted::of(items);
        let mut writes = self.staged_of(changes)?;
        for (item, attempts, lease_until_ms) in work {
            let stored = StoredWork {
                due_ms: item.due_ms,
                attempts,
                lease_until_ms,
                payload: item.payload,
            };
            self.put_work(&item.queue, &item.id, stored, &mut writes)?;
        }
        if !entries.is_empty() {
            let import_error = |reason: String| StoreError::Io {
                op: "import",
                what: AUDIT_TREE,
                reason,
            };
            if let Some(other) = entries.iter().find(|e| e.chain != entries[0].chain) {
                return Err(import_error(format!(
                    "sled keeps one audit chain, and the entries come from several (`{}` and `{}`)",
                    entries[0].chain, other.chain
                )));
            }
            let mut head = lock(&self.inner.head);
            if head.next_seq != 0 {
                return Err(import_error(
                    "the destination's audit log is not empty".to_owned(),
                ));
            }
            entries.sort_by_key(|e| e.seq);
            for chunk in entries.chunks(256) {
                let group = audit::encode_entries(chunk).map_err(import_error)?;
                let first = chunk.first().map_or(0, |e| e.seq);
                self.inner
                    .audit
                    .insert(audit::seq_key(first), group)
                    .map_err(io("import", AUDIT_TREE))?;
            }
            *head = Self::read_head(&self.inner.audit).map_err(import_error)?;
        }
        // With its flows' index entries, for what the store remembers.
        self.stage_staged(writes, &[])?.1.wait()
    }

    fn audit(&self) -> &dyn AuditLog {
        self
    }

    fn commit_latency(&self) -> Option<&crate::metrics::Histogram> {
        Some(&self.inner.flush.latency)
    }

    fn close(&self) {
        self.inner.close();
    }
}

impl AuditLog for SledStore {
    fn append(&self, records: Vec<AuditRecord>) -> Result<Durable, StoreError> {
        Ok(self.stage(Vec::new(), &records)?.1)
    }

    fn entries(&self, from: u64, limit: usize) -> Result<Vec<AuditEntry>, StoreError> {
        self.check_open()?;
        let mut out = Vec::new();
        if limit == 0 {
            return Ok(out);
        }
        let unreadable = |why: audit::Unreadable, seq: Option<u64>| StoreError::Io {
            op: "read",
            what: AUDIT_TREE,
            reason: why.describe(seq),
        };
        // Entry `from` is in the last group that starts at or before it.
        let start = match self.inner.audit.range(..=audit::seq_key(from)).next_back() {
            Some(item) => item.map_err(io("read", AUDIT_TREE))?.0,
            None => ::sled::IVec::from(&audit::seq_key(from)),
        };
        for item in self.inner.audit.range(start..) {
            let (key, value) = item.map_err(io("read", AUDIT_TREE))?;
            let group =
                audit::decode_group(&value).map_err(|why| unreadable(why, audit::key_seq(&key)))?;
            for stored in group.iter().filter(|s| s.seq >= from) {
                let entry = stored
                    .entry(LOCAL_CHAIN, stored.seq)
                    .ok_or_else(|| unreadable(audit::Unreadable::Undecodable, Some(stored.seq)))?;
                out.push(entry);
                if out.len() >= limit {
                    return Ok(out);
                }
            }
        }
        Ok(out)
    }

    fn query(&self, query: &AuditQuery) -> Result<Vec<AuditEntry>, StoreError> {
        let Some(user) = &query.user else {
            return super::scan_query(self, query);
        };
        self.check_open()?;
        // The user's groups, bucket by bucket from `audit_users`, each read
        // and its entries checked.
        let from = query.after.map_or(0, |a| a.saturating_add(1));
        let end = self.inner.catch_up_index()?;
        let index = self.inner.trees.get(Tree::AuditUsers);
        let unreadable = |why: audit::Unreadable, seq: u64| StoreError::Io {
            op: "read",
            what: AUDIT_TREE,
            reason: why.describe(Some(seq)),
        };
        let mut found = Vec::new();
        // The group holding entry `from` may start in an earlier bucket.
        let first_bucket = (from >> AUDIT_BUCKET_BITS).saturating_sub(1);
        for bucket in first_bucket..=(end >> AUDIT_BUCKET_BITS) {
            let prefix = audit_user_prefix(user, bucket);
            // In order, once each: an entry a crash left behind may name a
            // group a later entry names too (see `catch_up_audit_index`).
            let mut groups = BTreeSet::new();
            for item in index.scan_prefix(&prefix) {
                let (key, others) = item.map_err(io("read", "audit_users"))?;
                let Some(first) = key
                    .get(prefix.len()..)
                    .and_then(|b| <[u8; 8]>::try_from(b).ok())
                    .map(u64::from_be_bytes)
                else {
                    continue;
                };
                groups.extend(filed_groups(first, &others));
            }
            // Of the groups before `from`, only the last may hold it.
            let start = groups.range(..=from).next_back().copied().unwrap_or(0);
            for &first in groups.range(start..) {
                let Some(value) = self
                    .inner
                    .audit
                    .get(audit::seq_key(first))
                    .map_err(io("read", AUDIT_TREE))?
                else {
                    continue;
                };
                let group = audit::decode_group(&value).map_err(|why| unreadable(why, first))?;
                for stored in group.iter().filter(|s| s.seq >= from) {
                    let entry = stored
                        .entry(LOCAL_CHAIN, stored.seq)
                        .ok_or_else(|| unreadable(audit::Unreadable::Undecodable, stored.seq))?;
                    if entry.record.user.as_deref() == Some(user) && query.selects(&entry) {
                        found.push(entry);
                        if found.len() >= query.limit {
                            return Ok(found);
                        }
                    }
                }
            }
        }
        Ok(found)
    }

    fn verify(&self) -> Result<AuditSummary, AuditError> {
        self.check_open()?;
        // Groups that start before the head are written whole (the head
        // moves past a group after its insert), so the walk up to it sees a
        // settled chain.
        let head = *lock(&self.inner.head);
        let mut verifier = ChainVerifier::new(LOCAL_CHAIN);
        for item in self.inner.audit.range(..audit::seq_key(head.next_seq)) {
            let (key, value) = item.map_err(io("verify", AUDIT_TREE))?;
            verifier.feed(&key, &value)?;
        }
        Ok(AuditSummary::of(vec![verifier.finish(Some(&head))?]))
    }
}

/// Milliseconds since the Unix epoch, by this machine's clock.
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::store::AuditLog;
    use crate::store::ChainBreak;

    fn put(tree: Tree, key: &[u8], value: &[u8]) -> Write {
        Write::Put {
            tree,
            key: key.to_vec(),
            value: value.to_vec(),
        }
    }

    fn record(i: u64) -> AuditRecord {
        AuditRecord {
            at_ms: 1_700_000_000_000 + i,
            kind: "flow.started".to_owned(),
            flow: Some(format!("flow-{i}")),
            user: Some("alice".to_owned()),
            workflow: Some("default".to_owned()),
            detail: serde_json::json!({ "i": i }),
        }
    }

    fn broken_at(result: Result<AuditSummary, AuditError>) -> (u64, ChainBreak) {
        match result {
            Err(AuditError::Broken { seq, why, .. }) => (seq, why),
            other => panic!("expected a broken chain, got {other:?}"),
        }
    }

    /// `bytes` with the first `from` replaced by `to` (of the same length).
    fn replaced(bytes: &[u8], from: &str, to: &str) -> Vec<u8> {
        assert_eq!(from.len(), to.len());
        let at = bytes
            .windows(from.len())
            .position(|w| w == from.as_bytes())
            .unwrap();
        let mut out = bytes.to_vec();
        out[at..at + to.len()].copy_from_slice(to.as_bytes());
        out
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

    /// Commits `changes` (with one audit record if `audited`) and waits.
    fn commit(store: &SledStore, changes: Vec<Change>, audited: bool) {
        store
            .commit(Commit {
                changes,
                audit: if audited { vec![record(0)] } else { vec![] },
            })
            .unwrap()
            .wait()
            .unwrap();
    }

    /// Drops a closed `store` marked as still open, as a crash leaves it.
    fn left_as_by_a_crash(store: SledStore) {
        let meta = store.inner.trees.get(Tree::Meta);
        meta.insert(OPEN_MARK, &[]).unwrap();
        meta.flush().unwrap();
        drop(store);
    }

    #[test]
    fn a_flow_and_audit_commit_is_carried_by_the_flow_record_with_no_intent() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        let before = store.inner.next_intent.load(Ordering::Relaxed);
        let soon = now_ms() + 60_000;
        for due in [soon, soon - 1_000] {
            store
                .commit(Commit {
                    changes: vec![Change::PutFlow(flow("f", due))],
                    audit: vec![record(0)],
                })
                .unwrap()
                .wait()
                .unwrap();
        }
        // No intent was numbered, the record carries the last group.
        assert_eq!(store.inner.next_intent.load(Ordering::Relaxed), before);
        let stored = store.raw_get(Tree::Flows, b"f").unwrap().unwrap();
        let carried = Carried::decode(&stored).unwrap();
        assert_eq!(audit::key_seq(carried.group_key), Some(1));
        assert_eq!(carried.index(), FlowIndex::of(&flow("f", soon - 1_000)));
        assert_eq!(store.flow("f").unwrap().unwrap(), b"body of f");
        // With the user's lockout history too; with an enrollment, an
        // intent.
        for (changes, intents) in [
            (
                Change::PutLockout {
                    user: "u".to_owned(),
                    history: b"h".to_vec(),
                },
                0,
            ),
            (
                Change::PutEnrollment {
                    user: "u".to_owned(),
                    gate: "g".to_owned(),
                    data: b"e".to_vec(),
                },
                1,
            ),
        ] {
            store
                .commit(Commit {
                    changes: vec![Change::PutFlow(flow("f", soon)), changes],
                    audit: vec![record(1)],
                })
                .unwrap()
                .wait()
                .unwrap();
            assert_eq!(
                store.inner.next_intent.load(Ordering::Relaxed),
                before + intents
            );
        }
        assert_eq!(store.lockout("u").unwrap().unwrap(), b"h");
        assert_eq!(store.flow("f").unwrap().unwrap(), b"body of f");
    }

    #[test]
    fn flow_bodies_that_look_like_a_carried_record_are_kept_as_they_are() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        for (i, body) in [vec![0x01, 0, 0, 0, 9], vec![0x00], vec![], b"{}".to_vec()]
            .into_iter()
            .enumerate()
        {
            let id = format!("f{i}");
            for audit in [vec![], vec![record(0)]] {
                let mut r = flow(&id, 5);
                r.body = body.clone();
                store
                    .commit(Commit {
                        changes: vec![Change::PutFlow(r)],
                        audit,
                    })
                    .unwrap()
                    .wait()
                    .unwrap();
                assert_eq!(store.flow(&id).unwrap().unwrap(), body, "{id}");
            }
        }
        let exported: Vec<Vec<u8>> = exported_flows(&store).into_iter().map(|r| r.body).collect();
        assert_eq!(
            exported,
            [vec![0x01, 0, 0, 0, 9], vec![0x00], vec![], b"{}".to_vec()]
        );
    }

    #[test]
    fn a_carried_commit_a_crash_cut_short_is_undone_or_completed_on_open() {
        let soon = now_ms() + 60_000;
        let history = |store: &SledStore| store.lockout("u").unwrap();
        // 0: nothing of the second commit; 1: its group only; 2: and its
        // flow record; 3: and its index entries and lockout history
        // (whole); 4: whole, and the user's history written again since.
        // The store is then dropped as by a crash.
        for landed in 0..=4 {
            let dir = tempfile::tempdir().unwrap();
            let store = SledStore::open(dir.path()).unwrap();
            assert!(index_has(&store, Tree::Meta, OPEN_MARK));
            store
                .commit(Commit {
                    changes: vec![
                        Change::PutFlow(flow("f", soon)),
                        Change::PutLockout {
                            user: "u".to_owned(),
                            history: b"before".to_vec(),
                        },
                    ],
                    audit: vec![record(0)],
                })
                .unwrap()
                .wait()
                .unwrap();
            let first_body = store.flow("f").unwrap().unwrap();
            // The next step: due earlier, so its entry moves; it writes the
            // user's history.
            let mut next = flow("f", soon - 5_000);
            next.body = b"step two".to_vec();
            let mut staged = store
                .staged_of(vec![
                    Change::PutFlow(next.clone()),
                    Change::PutLockout {
                        user: "u".to_owned(),
                        history: b"after".to_vec(),
                    },
                ])
                .unwrap();
            let (mut group, layout) = audit::prepare(&[record(1)]).unwrap().unwrap();
            assert!(audit::mark_carried(&mut group, b"f"));
            let mut head = *lock(&store.inner.head);
            let first = layout.link(&mut head, &mut group).unwrap();
            let key = audit::seq_key(first);
            Stamped::stamp_all(&mut staged.writes, first);
            let at = staged
                .writes
                .iter()
                .position(|w| {
                    matches!(
                        w,
                        Write::Put {
                            tree: Tree::Flows,
                            ..
                        }
                    )
                })
                .unwrap();
            let (_, carried) = Carried::record(&staged.writes, at, &key).unwrap();
            store.close();
            let trees = &store.inner.trees;
            if landed >= 1 {
                store.inner.audit.insert(key, group.as_slice()).unwrap();
            }
            if landed >= 2 {
                trees.get(Tree::Flows).insert("f", carried).unwrap();
            }
            if landed >= 3 {
                let rest: Vec<&Write> = staged
                    .writes
                    .iter()
                    .filter(|w| {
                        !matches!(
                            w,
                            Write::Put {
                                tree: Tree::Flows,
                                ..
                            }
                        )
                    })
                    .collect();
                apply_writes(trees, rest).unwrap();
            }
            if landed >= 4 {
                // A later request of the user's (a later stamp).
                trees
                    .get(Tree::Lockout)
                    .insert("u", Stamped::encode(first + 1, b"later"))
                    .unwrap();
            }
            // Not closed: the mark stays, as after a crash.
            trees.get(Tree::Meta).insert(OPEN_MARK, &[]).unwrap();
            trees.get(Tree::Meta).flush().unwrap();
            drop(store);

            let store = SledStore::open(dir.path()).unwrap();
            let summary = store.verify().unwrap();
            if landed < 2 {
                // Never acknowledged: as if it had not begun.
                assert_eq!(store.flow("f").unwrap().unwrap(), first_body, "{landed}");
                assert_eq!(
                    store.flows_due(u64::MAX, None, 10).unwrap(),
                    [(soon, "f".to_owned())],
                    "{landed}"
                );
                assert_eq!(history(&store).as_deref(), Some(&b"before"[..]), "{landed}");
                assert_eq!(summary.entries, 1, "{landed}");
                // The chain goes on where it ends now.
                store
                    .commit(Commit {
                        changes: vec![],
                        audit: vec![record(2)],
                    })
                    .unwrap()
                    .wait()
                    .unwrap();
                assert_eq!(store.verify().unwrap().entries, 2, "{landed}");
                assert_eq!(
                    store.entries(0, 10).unwrap()[1].record,
                    record(2),
                    "{landed}"
                );
            } else {
                assert_eq!(store.flow("f").unwrap().unwrap(), b"step two", "{landed}");
                assert_eq!(
                    store.flows_due(u64::MAX, None, 10).unwrap(),
                    [(soon - 5_000, "f".to_owned())],
                    "{landed}"
                );
                let expected: &[u8] = if landed >= 4 { b"later" } else { b"after" };
                assert_eq!(history(&store).as_deref(), Some(expected), "{landed}");
                assert_eq!(summary.entries, 2, "{landed}");
                assert_eq!(
                    store.entries(0, 10).unwrap()[1].record,
                    record(1),
                    "{landed}"
                );
            }
            store.close();
            assert!(!index_has(&store, Tree::Meta, OPEN_MARK), "{landed}");
        }
    }

    /// The newest group's commit was carried and whole, then a commit
    /// without a group removed (or rewrote) the flow: after a crash the
    /// group is kept, though no record carries it.
    #[test]
    fn a_carried_group_whose_flow_a_later_commit_without_a_group_changed_is_kept_after_a_crash() {
        for remove in [true, false] {
            let dir = tempfile::tempdir().unwrap();
            let store = SledStore::open(dir.path()).unwrap();
            for (i, id) in ["f", "g"].into_iter().enumerate() {
                store
                    .commit(Commit {
                        changes: vec![Change::PutFlow(flow(id, 5))],
                        audit: vec![record(i as u64)],
                    })
                    .unwrap()
                    .wait()
                    .unwrap();
            }
            // `f`'s commit is not the newest group's: changing `f` notes
            // nothing.
            commit(&store, vec![Change::PutFlow(flow("f", 6))], false);
            assert!(!index_has(&store, Tree::Meta, CARRIED_THEN_CHANGED));
            let change = if remove {
                Change::DeleteFlow { id: "g".to_owned() }
            } else {
                Change::PutFlow(flow("g", 7))
            };
            commit(&store, vec![change], false);
            assert!(index_has(&store, Tree::Meta, CARRIED_THEN_CHANGED));
            store.close();
            left_as_by_a_crash(store);

            let store = SledStore::open(dir.path()).unwrap();
            assert_eq!(store.verify().unwrap().entries, 2, "{remove}");
            assert_eq!(
                store.entries(0, 10).unwrap()[1].record,
                record(1),
                "{remove}"
            );
            assert_eq!(store.flow("g").unwrap().is_none(), remove);
        }
    }

    #[test]
    fn a_commit_a_crash_cut_short_after_its_intent_is_completed_on_open() {
        // What `apply` does up to the crash: the intent is in, then the
        // audit group and the first `applied` writes, the rest is not.
        let changes = || {
            vec![
                Change::PutLockout {
                    user: "u".to_owned(),
                    history: b"h".to_vec(),
                },
                Change::PutFlow(flow("f", 5)),
            ]
        };
        for applied in 0..=2 {
            let dir = tempfile::tempdir().unwrap();
            let store = SledStore::open(dir.path()).unwrap();
            let writes = store.writes_of(changes()).unwrap();
            let (mut group, layout) = audit::prepare(&[record(0)]).unwrap().unwrap();
            let first = layout.link(&mut Head::empty(), &mut group).unwrap();
            let key = audit::seq_key(first);
            let trees = &store.inner.trees;
            trees
                .get(Tree::Intents)
                .insert(
                    0u64.to_be_bytes(),
                    Intent::encode(Some((&key, &group)), &writes),
                )
                .unwrap();
            if applied > 0 {
                store.inner.audit.insert(key, group.as_slice()).unwrap();
                apply_writes(trees, &writes[..applied - 1]).unwrap();
            }
            store.close();
            drop(store);

            let store = SledStore::open(dir.path()).unwrap();
            assert_eq!(
                store.lockout("u").unwrap(),
                Some(b"h".to_vec()),
                "{applied}"
            );
            assert_eq!(
                store.flow("f").unwrap(),
                Some(b"body of f".to_vec()),
                "{applied}"
            );
            assert_eq!(store.flows_due(5, None, 10).unwrap(), [(5, "f".to_owned())]);
            assert_eq!(store.verify().unwrap().entries, 1, "{applied}");
            assert!(store.inner.trees.get(Tree::Intents).is_empty());
            // The chain goes on after the replayed group.
            assert_eq!(store.append_audit(record(1)).unwrap(), 1, "{applied}");
            assert_eq!(store.verify().unwrap().entries, 2, "{applied}");
        }
    }

    #[test]
    fn a_flow_keeps_its_earlier_due_entry_until_it_is_due() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        let soon = now_ms() + 60_000;
        let commit = |due_ms: u64| {
            store
                .commit(Commit {
                    changes: vec![Change::PutFlow(flow("f", due_ms))],
                    audit: vec![],
                })
                .unwrap()
                .wait()
                .unwrap();
        };
        commit(soon);
        // Later: the entry stays where it is (found early by the sweep,
        // which checks the flow itself); earlier: it moves.
        commit(soon + 1_000);
        assert_eq!(
            store.flows_due(u64::MAX, None, 10).unwrap(),
            [(soon, "f".to_owned())]
        );
        commit(soon - 1_000);
        assert_eq!(
            store.flows_due(u64::MAX, None, 10).unwrap(),
            [(soon - 1_000, "f".to_owned())]
        );
        // An entry that is due moves to the new time (the sweep files a
        // flow it found not due again).
        let index = store.inner.trees.get(Tree::FlowsDue);
        index.clear().unwrap();
        index.insert(due_key(5, "f"), Vec::new()).unwrap();
        let filing = Filing {
            due_ms: 5,
            was_ms: 5,
        };
        let record = Carried::encode(
            &FlowIndex::of(&flow("f", 5)).encode(),
            filing,
            &[],
            (&[], &[]),
            b"body of f",
        );
        store
            .inner
            .trees
            .get(Tree::Flows)
            .insert("f", record)
            .unwrap();
        // Written behind the store's back: what it remembers goes too.
        store.inner.filed.clear();
        commit(soon);
        assert_eq!(
            store.flows_due(u64::MAX, None, 10).unwrap(),
            [(soon, "f".to_owned())]
        );
    }

    #[test]
    fn a_flow_due_at_once_is_found_without_moving_its_due_entry() {
        let dir = tempfile::tempdir().unwrap();
        let soon = now_ms() + 60_000;
        let commit = |store: &SledStore, changes: Vec<Change>| {
            store
                .commit(Commit {
                    changes,
                    audit: vec![],
                })
                .unwrap()
                .wait()
                .unwrap();
        };
        let store = SledStore::open(dir.path()).unwrap();
        commit(
            &store,
            vec![
                Change::PutFlow(flow("f", soon)),
                Change::PutFlow(flow("g", soon + 1)),
            ],
        );
        // Committing: due at once (its touched time, in the past). The
        // sweep finds it at once, by that time, and only once; its
        // `flows_due` entry has not moved.
        commit(&store, vec![Change::PutFlow(flow("f", 7))]);
        assert_eq!(
            store.flows_due(now_ms(), None, 10).unwrap(),
            [(7, "f".to_owned())]
        );
        assert_eq!(
            store.flows_due(u64::MAX, None, 10).unwrap(),
            [(7, "f".to_owned()), (soon + 1, "g".to_owned())]
        );
        assert_eq!(
            store
                .flows_due(u64::MAX, Some((7, "f".to_owned())), 10)
                .unwrap(),
            [(soon + 1, "g".to_owned())]
        );
        assert_eq!(store.flows_due(6, None, 10).unwrap(), []);
        assert!(index_has(&store, Tree::FlowsDue, &due_key(soon, "f")));
        // An export says when the flow is due.
        assert_eq!(
            exported_dues(&store),
            [("f".to_owned(), 7), ("g".to_owned(), soon + 1)]
        );
        // It survives a reopen (a crash mid-commit is what it is for).
        store.close();
        drop(store);
        let store = SledStore::open(dir.path()).unwrap();
        assert_eq!(
            store.flows_due(now_ms(), None, 10).unwrap(),
            [(7, "f".to_owned())]
        );
        // Ended: due later again; the `due_now` entry goes and the old
        // entry, not yet due, stays.
        commit(&store, vec![Change::PutFlow(flow("f", soon + 5))]);
        assert_eq!(store.flows_due(now_ms(), None, 10).unwrap(), []);
        assert!(store.inner.trees.get(Tree::DueNow).is_empty());
        assert_eq!(
            store.flows_due(u64::MAX, None, 10).unwrap(),
            [(soon, "f".to_owned()), (soon + 1, "g".to_owned())]
        );
        // Removed while due at once: both entries go.
        commit(&store, vec![Change::PutFlow(flow("g", 9))]);
        commit(&store, vec![Change::DeleteFlow { id: "g".to_owned() }]);
        assert!(store.inner.trees.get(Tree::DueNow).is_empty());
        assert_eq!(
            store.flows_due(u64::MAX, None, 10).unwrap(),
            [(soon, "f".to_owned())]
        );
    }

    #[test]
    fn a_flow_a_carried_commit_files_as_due_at_once_is_found_after_a_close_and_after_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        let soon = now_ms() + 60_000;
        let due_now = |store: &SledStore| store.flows_due(now_ms(), None, 10).unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        commit(&store, vec![Change::PutFlow(flow("f", soon))], true);
        // Committing, carried: filed in memory, not in the tree.
        commit(&store, vec![Change::PutFlow(flow("f", 7))], true);
        assert!(store.inner.trees.get(Tree::DueNow).is_empty());
        assert_eq!(due_now(&store), [(7, "f".to_owned())]);
        assert_eq!(exported_dues(&store), [("f".to_owned(), 7)]);
        // Closed: still found after the open.
        store.close();
        drop(store);
        let store = SledStore::open(dir.path()).unwrap();
        assert_eq!(due_now(&store), [(7, "f".to_owned())]);
        // Ended: gone.
        commit(&store, vec![Change::PutFlow(flow("f", soon + 5))], true);
        assert_eq!(due_now(&store), []);
        // Committing again, then a crash (nothing of memory is written,
        // the store is not marked closed): found after the open.
        commit(&store, vec![Change::PutFlow(flow("f", 8))], true);
        store.close();
        let trees = &store.inner.trees;
        trees.get(Tree::DueNow).clear().unwrap();
        left_as_by_a_crash(store);
        let store = SledStore::open(dir.path()).unwrap();
        assert_eq!(due_now(&store), [(8, "f".to_owned())]);
        // Deleted while filed in memory: gone.
        commit(&store, vec![Change::PutFlow(flow("g", soon))], true);
        commit(&store, vec![Change::PutFlow(flow("g", 9))], true);
        assert_eq!(due_now(&store), [(8, "f".to_owned()), (9, "g".to_owned())]);
        commit(
            &store,
            vec![Change::DeleteFlow { id: "g".to_owned() }],
            false,
        );
        assert_eq!(due_now(&store), [(8, "f".to_owned())]);
        assert!(!lock(&store.inner.held_due).contains_key("g"));
    }

    /// A commit of one flow and its index entries without an audit group
    /// (the commit that begins a password change) is carried too: no
    /// intent, its due-at-once entry in memory, and found after a crash.
    #[test]
    fn a_flow_commit_without_a_group_is_carried_and_found_due_after_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        let soon = now_ms() + 60_000;
        let store = SledStore::open(dir.path()).unwrap();
        commit(&store, vec![Change::PutFlow(flow("f", soon))], true);
        let mut committing = flow("f", 7);
        committing.body = b"committing".to_vec();
        commit(&store, vec![Change::PutFlow(committing)], false);
        let stored = store
            .inner
            .trees
            .get(Tree::Flows)
            .get("f")
            .unwrap()
            .unwrap();
        let carried = Carried::decode(&stored).expect("carried");
        assert!(carried.group_key.is_empty());
        assert_eq!(carried.body, b"committing");
        // Due at once; its `flows_due` entry stays where it was.
        assert_eq!(carried.filing.map(|f| f.due_ms), Some(7));
        assert_eq!(carried.index().due_ms, soon);
        assert!(store.inner.trees.get(Tree::Intents).is_empty());
        assert!(store.inner.trees.get(Tree::DueNow).is_empty());
        assert_eq!(
            store.flows_due(now_ms(), None, 10).unwrap(),
            [(7, "f".to_owned())]
        );
        // A crash: what was in memory is lost, the store not marked closed.
        store.close();
        let trees = &store.inner.trees;
        trees.get(Tree::DueNow).clear().unwrap();
        left_as_by_a_crash(store);
        let store = SledStore::open(dir.path()).unwrap();
        assert_eq!(
            store.flows_due(now_ms(), None, 10).unwrap(),
            [(7, "f".to_owned())]
        );
        assert_eq!(store.flow("f").unwrap().unwrap(), b"committing");
        // The audit group of the first commit is kept: the flow's record
        // changed by a commit without a group since.
        assert_eq!(store.verify().unwrap().entries, 1);
    }

    #[test]
    fn a_store_of_schema_3_is_brought_to_5_keeping_its_indexes() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        store
            .raw_commit(vec![], (0..3).map(record).collect())
            .unwrap();
        store
            .commit(Commit {
                changes: vec![Change::PutFlow(flow("f", 40))],
                audit: vec![],
            })
            .unwrap()
            .wait()
            .unwrap();
        store.inner.catch_up_index().unwrap();
        let meta = store.inner.trees.get(Tree::Meta);
        meta.insert(b"schema", &3u32.to_be_bytes()).unwrap();
        let indexed = meta.get(AUDIT_INDEXED).unwrap();
        assert!(indexed.is_some());
        store.close();
        drop(store);

        let store = SledStore::open(dir.path()).unwrap();
        assert_eq!(store.schema_version().unwrap(), SCHEMA);
        // The audit log by user is not built again, the flow stays filed.
        assert_eq!(
            store
                .inner
                .trees
                .get(Tree::Meta)
                .get(AUDIT_INDEXED)
                .unwrap(),
            indexed
        );
        assert_eq!(
            store.flows_due(u64::MAX, None, 10).unwrap(),
            [(40, "f".to_owned())]
        );
    }

    /// The flows an export of `store` holds.
    fn exported_flows(store: &SledStore) -> Vec<FlowRecord> {
        let mut out = Vec::new();
        store
            .export(&mut |item| {
                if let Item::Flow(r) = item {
                    out.push(r);
                }
                Ok(())
            })
            .unwrap();
        out
    }

    /// Each exported flow's id and due time.
    fn exported_dues(store: &SledStore) -> Vec<(String, u64)> {
        exported_flows(store)
            .into_iter()
            .map(|r| (r.id, r.due_ms))
            .collect()
    }

    fn index_has(store: &SledStore, tree: Tree, key: &[u8]) -> bool {
        store.inner.trees.get(tree).contains_key(key).unwrap()
    }

    /// The indexer files the groups the commits hand it
    /// ([`Appended`]) exactly as it files them from the log, and reads
    /// the log where the groups it was handed do not follow on.
    #[test]
    fn the_indexer_files_the_groups_commits_hand_it_as_it_files_them_from_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        for i in 0..40u64 {
            let mut records = vec![record(i), record(i + 100)];
            records[0].user = Some(format!("user{}", i % 3));
            if i % 4 == 0 {
                records[1].user = None;
            }
            store.raw_commit(vec![], records).unwrap();
        }
        let snapshot = |store: &SledStore| -> Vec<(Vec<u8>, Vec<u8>)> {
            store
                .inner
                .trees
                .get(Tree::AuditUsers)
                .iter()
                .map(|kv| {
                    let (k, v) = kv.unwrap();
                    (k.to_vec(), v.to_vec())
                })
                .collect()
        };
        assert_eq!(lock(&store.inner.appended).groups.len(), 40);
        assert_eq!(store.inner.catch_up_index().unwrap(), 80);
        assert!(lock(&store.inner.appended).groups.is_empty());
        let handed = snapshot(&store);
        assert!(!handed.is_empty());
        // Not indexed at all.
        let unindexed = |store: &SledStore| {
            store.inner.trees.get(Tree::AuditUsers).clear().unwrap();
            let meta = store.inner.trees.get(Tree::Meta);
            meta.remove(AUDIT_INDEXED).unwrap();
        };
        // Again from the log alone.
        unindexed(&store);
        assert_eq!(store.inner.catch_up_index().unwrap(), 80);
        assert_eq!(snapshot(&store), handed);
        // Handed groups that do not start at the watermark: the log first.
        unindexed(&store);
        {
            let mut appended = lock(&store.inner.appended);
            appended.push(60, 2, vec!["user0".to_owned()]);
            appended.push(70, 2, vec!["user1".to_owned()]);
        }
        assert_eq!(store.inner.catch_up_index().unwrap(), 80);
        assert_eq!(snapshot(&store), handed);
    }

    #[test]
    fn appended_groups_are_taken_only_where_they_follow_on() {
        let mut appended = Appended::default();
        appended.push(3, 2, vec![]);
        appended.push(5, 1, vec![]);
        appended.push(7, 1, vec![]);
        let firsts =
            |v: Vec<(u64, u64, Vec<String>)>| v.into_iter().map(|g| g.0).collect::<Vec<_>>();
        assert_eq!(firsts(appended.take(0, 100, 10)), Vec::<u64>::new());
        assert_eq!(firsts(appended.take(3, 100, 10)), [3, 5]);
        assert_eq!(firsts(appended.take(6, 100, 10)), Vec::<u64>::new());
        assert_eq!(firsts(appended.take(7, 7, 10)), Vec::<u64>::new());
        assert_eq!(firsts(appended.take(7, 8, 10)), [7]);
        assert!(appended.groups.is_empty());
    }

    /// A flow record as schema 6 stored a carrying one (`0x01`): its
    /// index entry with the flow's due time, the group key, no group
    /// bytes, no history, the body.
    fn schema_6_carried(r: &FlowRecord, group_key: &[u8]) -> Vec<u8> {
        let mut out = vec![Carried::FORMAT];
        push_field(&mut out, &FlowIndex::of(r).encode());
        push_field(&mut out, group_key);
        for _ in 0..3 {
            push_field(&mut out, &[]);
        }
        out.extend_from_slice(&r.body);
        out
    }

    /// A whole reset's commits write no `flow_index` entry: each flow's
    /// record carries its own, and the sweep, the workflow versions in
    /// progress and an export read it there.
    #[test]
    fn flow_records_carry_their_index_entries_and_flow_index_stays_empty() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        let soon = now_ms() + 60_000;
        commit(&store, vec![Change::PutFlow(flow("f", soon))], true);
        let mut other = flow("g", soon + 5);
        other.version = "v2".to_owned();
        commit(&store, vec![Change::PutFlow(other.clone())], true);
        commit(&store, vec![Change::PutFlow(flow("f", soon + 1_000))], true);
        let mut committing = flow("f", 7);
        committing.body = b"committing".to_vec();
        commit(&store, vec![Change::PutFlow(committing)], false);
        assert_eq!(
            store.versions_in_progress().unwrap(),
            BTreeSet::from(["v1".to_owned(), "v2".to_owned()])
        );
        let mut done = flow("f", soon + 600_000);
        done.in_progress = false;
        commit(&store, vec![Change::PutFlow(done)], true);
        assert_eq!(
            store.versions_in_progress().unwrap(),
            BTreeSet::from(["v2".to_owned()])
        );
        assert!(store.inner.trees.get(Tree::FlowIndex).is_empty());
        // Its entry stayed where it was (earlier than its due time).
        assert_eq!(
            store.flows_due(u64::MAX, None, 10).unwrap(),
            [(soon, "f".to_owned()), (soon + 5, "g".to_owned())]
        );
        assert_eq!(
            exported_dues(&store),
            [("f".to_owned(), soon + 600_000), ("g".to_owned(), soon + 5)]
        );
        // Read from the records, not from what the store remembers.
        store.inner.filed.clear();
        commit(
            &store,
            vec![Change::DeleteFlow { id: "f".to_owned() }],
            false,
        );
        assert_eq!(
            store.flows_due(u64::MAX, None, 10).unwrap(),
            [(soon + 5, "g".to_owned())]
        );
        assert!(store.inner.trees.get(Tree::FlowIndex).is_empty());
    }

    /// An imported flow's index entry is what the store remembers, so its
    /// next commit moves its due entry instead of adding a second one.
    #[test]
    fn a_flow_imported_then_changed_keeps_one_due_entry() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        store.import(vec![Item::Flow(flow("f", 5))]).unwrap();
        let soon = now_ms() + 60_000;
        commit(&store, vec![Change::PutFlow(flow("f", soon))], true);
        assert_eq!(
            store.flows_due(u64::MAX, None, 10).unwrap(),
            [(soon, "f".to_owned())]
        );
    }

    /// A store of schema 6 keeps its flows' index entries in `flow_index`:
    /// opened by 7 they are read there until each flow's next commit moves
    /// its entry into its record; after a crash, a record of 6 that
    /// carries its commit is filed again and written as 7 stores it.
    #[test]
    fn a_store_of_schema_6_is_read_and_its_flows_carry_their_entries_from_their_next_commit() {
        for crashed in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let store = SledStore::open(dir.path()).unwrap();
            let soon = now_ms() + 60_000;
            store.raw_commit(vec![], vec![record(0)]).unwrap();
            let group_key = audit::seq_key(0);
            // As 6 left them: `p` plain, `c` carried; `c` due earlier than
            // its `flow_index` entry says, as a crash after its record
            // leaves it.
            let plain = flow("p", soon);
            let mut carried = flow("c", soon - 5_000);
            carried.version = "v0".to_owned();
            let mut filed_as = FlowIndex::of(&carried);
            filed_as.due_ms = soon;
            let trees = &store.inner.trees;
            apply_writes(
                trees,
                &[
                    put(Tree::Flows, b"p", &plain.body),
                    put(Tree::FlowIndex, b"p", &FlowIndex::of(&plain).encode()),
                    put(Tree::FlowsDue, &due_key(soon, "p"), b""),
                    put(Tree::Flows, b"c", &schema_6_carried(&carried, &group_key)),
                    put(Tree::FlowIndex, b"c", &filed_as.encode()),
                    put(Tree::FlowsDue, &due_key(soon, "c"), b""),
                ],
            )
            .unwrap();
            trees
                .get(Tree::Meta)
                .insert(b"schema", &6u32.to_be_bytes())
                .unwrap();
            store.close();
            if crashed {
                left_as_by_a_crash(store);
            } else {
                drop(store);
            }

            let store = SledStore::open(dir.path()).unwrap();
            assert_eq!(store.schema_version().unwrap(), SCHEMA);
            assert_eq!(store.flow("p").unwrap().unwrap(), b"body of p");
            assert_eq!(store.flow("c").unwrap().unwrap(), b"body of c");
            assert_eq!(
                store.versions_in_progress().unwrap(),
                BTreeSet::from(["v0".to_owned(), "v1".to_owned()])
            );
            let c_due = if crashed { soon - 5_000 } else { soon };
            let mut due = vec![(c_due, "c".to_owned()), (soon, "p".to_owned())];
            due.sort();
            assert_eq!(
                store.flows_due(u64::MAX, None, 10).unwrap(),
                due,
                "{crashed}"
            );
            // After the crash `c`'s record was written as 7 stores it, still
            // carrying its commit's group (kept by the open).
            let stored = store.raw_get(Tree::Flows, b"c").unwrap().unwrap();
            let c = Carried::decode(&stored).unwrap();
            assert_eq!(c.filing.is_some(), crashed);
            assert_eq!(c.group_key, &group_key[..]);
            assert_eq!(store.verify().unwrap().entries, 1);
            assert_eq!(index_has(&store, Tree::FlowIndex, b"c"), !crashed);

            // The next commits: each flow's entry moves into its record.
            commit(&store, vec![Change::PutFlow(flow("p", soon - 9_000))], true);
            commit(
                &store,
                vec![Change::DeleteFlow { id: "c".to_owned() }],
                false,
            );
            assert!(store.inner.trees.get(Tree::FlowIndex).is_empty());
            assert_eq!(
                store.flows_due(u64::MAX, None, 10).unwrap(),
                [(soon - 9_000, "p".to_owned())]
            );
            assert_eq!(
                store.versions_in_progress().unwrap(),
                BTreeSet::from(["v1".to_owned()])
            );
            store.close();
        }
    }

    #[test]
    fn a_store_of_schema_1_is_indexed_and_a_newer_one_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        assert_eq!(store.schema_version().unwrap(), SCHEMA);
        // A version-1 store: flows without an index, no schema key.
        store
            .raw_commit_vec(vec![put(Tree::Flows, b"old", b"{}")])
            .unwrap();
        store.inner.trees.get(Tree::Meta).remove(b"schema").unwrap();
        store.close();
        drop(store);

        let store = SledStore::open(dir.path()).unwrap();
        assert_eq!(store.schema_version().unwrap(), SCHEMA);
        assert_eq!(
            store.flows_due(0, None, 10).unwrap(),
            [(0, "old".to_owned())]
        );
        store
            .inner
            .trees
            .get(Tree::Meta)
            .insert(b"schema", &99u32.to_be_bytes())
            .unwrap();
        store.close();
        drop(store);
        match SledStore::open(dir.path()) {
            Err(StoreError::Newer { found, supported }) => {
                assert_eq!((found, supported), (99, SCHEMA));
            }
            other => panic!("expected a newer schema to be refused, got {other:?}"),
        }
    }

    #[test]
    fn a_store_of_schema_2_gets_its_audit_log_indexed_by_user() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        let mut records: Vec<_> = (0..4).map(record).collect();
        records[1].user = Some("other".to_owned());
        records[2].user = None;
        store.raw_commit(vec![], records).unwrap();
        // Version 2: no `audit_users`.
        store.inner.trees.get(Tree::AuditUsers).clear().unwrap();
        store
            .inner
            .trees
            .get(Tree::Meta)
            .insert(b"schema", &2u32.to_be_bytes())
            .unwrap();
        store.close();
        drop(store);

        let store = SledStore::open(dir.path()).unwrap();
        assert_eq!(store.schema_version().unwrap(), SCHEMA);
        let seqs = |user: &str| -> Vec<u64> {
            let query = AuditQuery {
                user: Some(user.to_owned()),
                limit: 10,
                ..AuditQuery::default()
            };
            store.query(&query).unwrap().iter().map(|e| e.seq).collect()
        };
        let user_of_record = record(0).user.unwrap();
        assert_eq!(seqs(&user_of_record), [0, 3]);
        assert_eq!(seqs("other"), [1]);
    }

    /// The user's entries `query` finds, by sequence number, page by page
    /// (`page` at a time).
    fn user_seqs(store: &SledStore, user: &str, page: usize) -> Vec<u64> {
        let mut out: Vec<u64> = Vec::new();
        loop {
            let query = AuditQuery {
                user: Some(user.to_owned()),
                after: out.last().copied(),
                limit: page,
                ..AuditQuery::default()
            };
            let found: Vec<u64> = store.query(&query).unwrap().iter().map(|e| e.seq).collect();
            out.extend(&found);
            if found.len() < page {
                return out;
            }
        }
    }

    /// A group of one record about `user` (and `flow-i`).
    fn about(user: &str, i: u64) -> Vec<AuditRecord> {
        let mut r = record(i);
        r.user = Some(user.to_owned());
        vec![r]
    }

    #[test]
    fn a_user_s_groups_of_one_indexer_batch_share_one_entry_and_are_found_once_each_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        // Interleaved: alice 0, 2, 4, ..., bob 1, 3, 5, ...
        for i in 0..20 {
            let user = if i % 2 == 0 { "alice" } else { "bob" };
            store.raw_commit(vec![], about(user, i)).unwrap();
        }
        store.inner.catch_up_index().unwrap();
        // One entry per user for the whole batch.
        assert_eq!(store.inner.trees.get(Tree::AuditUsers).len(), 2);
        let evens: Vec<u64> = (0..20).filter(|i| i % 2 == 0).collect();
        let odds: Vec<u64> = (0..20).filter(|i| i % 2 == 1).collect();
        for page in [1, 3, 100] {
            assert_eq!(user_seqs(&store, "alice", page), evens, "page {page}");
            assert_eq!(user_seqs(&store, "bob", page), odds, "page {page}");
        }
        // A later batch adds an entry; a query reads both, in order.
        for i in 20..24 {
            store.raw_commit(vec![], about("alice", i)).unwrap();
        }
        store.inner.catch_up_index().unwrap();
        assert_eq!(store.inner.trees.get(Tree::AuditUsers).len(), 3);
        let mut all = evens.clone();
        all.extend(20..24);
        assert_eq!(user_seqs(&store, "alice", 2), all);
    }

    #[test]
    fn index_entries_of_schema_4_and_entries_a_crash_left_naming_a_group_twice_read_once_in_order()
    {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        for i in 0..6 {
            store.raw_commit(vec![], about("alice", i)).unwrap();
        }
        // Caught up already: the entries below are all the index holds.
        store.inner.catch_up_index().unwrap();
        let index = store.inner.trees.get(Tree::AuditUsers);
        index.clear().unwrap();
        // Schema 4: one entry per group, empty values (groups 0, 1, 2).
        for first in 0..3u64 {
            index
                .insert(audit_user_key("alice", first), Vec::new())
                .unwrap();
        }
        // An entry naming group 4 and 2 again (out of order, as an entry of
        // a batch a crash cut short may), and one naming 3, 4 and 5.
        let list = |seqs: &[u64]| {
            seqs.iter()
                .flat_map(|s| s.to_be_bytes())
                .collect::<Vec<u8>>()
        };
        index
            .insert(audit_user_key("alice", 1), list(&[4, 2]))
            .unwrap();
        index
            .insert(audit_user_key("alice", 3), list(&[4, 5]))
            .unwrap();
        for page in [1, 2, 10] {
            assert_eq!(
                user_seqs(&store, "alice", page),
                [0, 1, 2, 3, 4, 5],
                "page {page}"
            );
        }
    }

    #[test]
    fn the_stored_schema_is_read_without_migrating() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(SledStore::stored_schema(dir.path()).unwrap(), None);
        // Nothing was created by looking.
        assert!(!dir.path().join("db").exists());
        let store = SledStore::open(dir.path()).unwrap();
        // Beside an open store (a running gateway): in use.
        assert!(matches!(
            SledStore::stored_schema(dir.path()),
            Err(StoreError::InUse { .. })
        ));
        store.inner.trees.get(Tree::Meta).remove(b"schema").unwrap();
        store.close();
        drop(store);
        // A version-1 store stays version 1 until it is opened.
        assert_eq!(SledStore::stored_schema(dir.path()).unwrap(), Some(1));
        assert_eq!(SledStore::stored_schema(dir.path()).unwrap(), Some(1));
        let store = SledStore::open(dir.path()).unwrap();
        store.close();
        drop(store);
        assert_eq!(SledStore::stored_schema(dir.path()).unwrap(), Some(SCHEMA));
    }

    #[test]
    fn commit_waits_for_a_flush() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        let before = store.flushes();
        for i in 0..20u32 {
            store
                .raw_commit_vec(vec![put(Tree::Flows, &i.to_be_bytes(), b"v")])
                .unwrap();
        }
        // Each commit needed a flush that began after its write.
        assert!(
            store.flushes() - before >= 20,
            "{} flushes for 20 commits",
            store.flushes() - before
        );
        let before = store.flushes();
        store.append_audit(record(0)).unwrap();
        assert!(store.flushes() > before);
    }

    #[test]
    fn concurrent_commits_share_flushes_and_all_survive() {
        const THREADS: u32 = 16;
        const EACH: u32 = 200;
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        let before = store.flushes();
        let threads: Vec<_> = (0..THREADS)
            .map(|t| {
                let store = store.clone();
                std::thread::spawn(move || {
                    for i in 0..EACH {
                        let key = format!("{t:02}/{i:03}");
                        store
                            .raw_commit_vec(vec![put(
                                Tree::Flows,
                                key.as_bytes(),
                                &i.to_be_bytes(),
                            )])
                            .unwrap();
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        let flushes = store.flushes() - before;
        let commits = u64::from(THREADS * EACH);
        assert!(flushes >= 1);
        assert!(
            flushes < commits,
            "{flushes} flushes for {commits} commits: no grouping"
        );
        drop(store);

        let store = SledStore::open(dir.path()).unwrap();
        let keys: BTreeSet<Vec<u8>> = store
            .raw_scan(Tree::Flows, b"", 10_000)
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(keys.len(), 3_200);
        for t in 0..THREADS {
            for i in 0..EACH {
                assert!(keys.contains(format!("{t:02}/{i:03}").as_bytes()));
            }
        }
    }

    #[test]
    fn staged_writes_are_visible_at_once_and_durable_when_awaited() {
        const TASKS: u32 = 64;
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        let before = store.flushes();
        let exec = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        // One thread, 64 tasks each waiting for its flush: no task holds
        // the thread while it waits.
        exec.block_on(async {
            let mut pending = Vec::new();
            for t in 0..TASKS {
                let key = format!("task/{t:02}");
                let durable = store
                    .stage_audited(
                        vec![put(Tree::Flows, key.as_bytes(), b"v")],
                        vec![record(t.into())],
                    )
                    .unwrap();
                // Applied, so readers see it before it is durable.
                assert_eq!(
                    store.raw_get(Tree::Flows, key.as_bytes()).unwrap().unwrap(),
                    b"v"
                );
                pending.push(tokio::spawn(durable));
            }
            for p in pending {
                p.await.unwrap().unwrap();
            }
        });
        // Each resolved only after a flush (how many is up to the disk).
        assert!(store.flushes() > before);
        // Waiting on a thread works the same way.
        store
            .stage_audited(vec![put(Tree::Flows, b"thread", b"v")], vec![])
            .unwrap()
            .wait()
            .unwrap();
        drop(store);

        let store = SledStore::open(dir.path()).unwrap();
        assert_eq!(store.raw_scan(Tree::Flows, b"", 100).unwrap().len(), 65);
        assert_eq!(store.verify().unwrap().entries, u64::from(TASKS));
    }

    #[test]
    fn a_task_waiting_for_a_flush_is_woken_when_the_store_closes() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        let exec = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let durable = store
            .stage_audited(vec![put(Tree::Flows, b"k", b"v")], vec![])
            .unwrap();
        let closer = {
            let store = store.clone();
            std::thread::spawn(move || store.close())
        };
        // Closing flushes what was applied, then stops: the wait ends well.
        exec.block_on(durable).unwrap();
        closer.join().unwrap();
        let late = store.stage_audited(vec![put(Tree::Flows, b"late", b"v")], vec![]);
        assert!(matches!(late, Err(StoreError::Closed)), "{late:?}");
    }

    #[test]
    fn closing_rejects_new_work_and_never_strands_a_writer() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        let threads: Vec<_> = (0..8u32)
            .map(|t| {
                let store = store.clone();
                std::thread::spawn(move || {
                    let mut acknowledged = Vec::new();
                    for i in 0..100_000u32 {
                        let key = format!("{t}/{i}");
                        match store.raw_commit_vec(vec![put(Tree::Flows, key.as_bytes(), b"v")]) {
                            Ok(()) => acknowledged.push(key),
                            Err(StoreError::Closed) => break,
                            Err(e) => panic!("{e}"),
                        }
                    }
                    acknowledged
                })
            })
            .collect();
        std::thread::sleep(std::time::Duration::from_millis(50));
        store.close();
        store.close();
        let acknowledged: Vec<String> = threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect();
        assert!(matches!(
            store.raw_commit_vec(vec![put(Tree::Flows, b"late", b"v")]),
            Err(StoreError::Closed)
        ));
        assert!(matches!(
            store.append_audit(record(0)),
            Err(StoreError::Closed)
        ));
        assert!(matches!(
            store.raw_get(Tree::Flows, b"late"),
            Err(StoreError::Closed)
        ));
        drop(store);

        // Everything acknowledged is there.
        let store = SledStore::open(dir.path()).unwrap();
        for key in &acknowledged {
            assert!(
                store
                    .raw_get(Tree::Flows, key.as_bytes())
                    .unwrap()
                    .is_some(),
                "{key} was acknowledged but is gone"
            );
        }
        assert_eq!(store.raw_get(Tree::Flows, b"late").unwrap(), None);
    }

    #[test]
    fn concurrent_audit_appends_form_one_chain_that_continues_after_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        let threads: Vec<_> = (0..8u64)
            .map(|t| {
                let store = store.clone();
                // 8 threads, 100 entries: four take 13, four take 12.
                let count = if t < 4 { 13 } else { 12 };
                std::thread::spawn(move || {
                    (0..count)
                        .map(|i| store.append_audit(record(t * 100 + i)).unwrap())
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut seqs: Vec<u64> = threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect();
        seqs.sort_unstable();
        assert_eq!(seqs, (0..100).collect::<Vec<_>>());

        let entries = store.entries(0, 1_000).unwrap();
        assert_eq!(
            entries.iter().map(|e| e.seq).collect::<Vec<_>>(),
            (0..100).collect::<Vec<_>>()
        );
        assert_eq!(entries[0].prev_hash, audit::GENESIS_HASH);
        for pair in entries.windows(2) {
            assert_eq!(pair[1].prev_hash, pair[0].hash);
        }
        let summary = store.verify().unwrap();
        assert_eq!(
            summary,
            AuditSummary::of(vec![crate::store::ChainSummary {
                chain: LOCAL_CHAIN.to_owned(),
                entries: 100,
                head: entries[99].hash.clone()
            }])
        );
        assert_eq!(store.entries(98, 10).unwrap().len(), 2);
        assert_eq!(
            store
                .entries(10, 3)
                .unwrap()
                .iter()
                .map(|e| e.seq)
                .collect::<Vec<_>>(),
            vec![10, 11, 12]
        );
        drop(store);

        let store = SledStore::open(dir.path()).unwrap();
        assert_eq!(store.verify().unwrap(), summary);
        assert_eq!(store.append_audit(record(1_000)).unwrap(), 100);
        assert_eq!(store.append_audit(record(1_001)).unwrap(), 101);
        let tail = store.entries(100, 10).unwrap();
        assert_eq!(tail[0].prev_hash, summary.chains[0].head);
        assert_eq!(tail[0].record, record(1_000));
        assert_eq!(
            store.verify().unwrap(),
            AuditSummary::of(vec![crate::store::ChainSummary {
                chain: LOCAL_CHAIN.to_owned(),
                entries: 102,
                head: tail[1].hash.clone()
            }])
        );
    }

    #[test]
    fn tampering_with_the_audit_tree_is_reported_at_the_entry() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        for i in 0..60 {
            store.append_audit(record(i)).unwrap();
        }
        let raw = store.raw_audit();
        store.verify().unwrap();

        // Change one byte of entry 37's record, keeping it valid JSON.
        let key = audit::seq_key(37);
        let original = raw.get(key).unwrap().unwrap().to_vec();
        raw.insert(key, replaced(&original, "flow.started", "flow.stopped"))
            .unwrap();
        assert_eq!(broken_at(store.verify()), (37, ChainBreak::HashMismatch));
        // Garbage instead.
        raw.insert(key, b"\x00\x01garbage".to_vec()).unwrap();
        assert_eq!(broken_at(store.verify()), (37, ChainBreak::Undecodable));
        raw.insert(key, original).unwrap();
        store.verify().unwrap();

        // Swap two entries.
        let (a, b) = (
            raw.get(audit::seq_key(20)).unwrap().unwrap(),
            raw.get(audit::seq_key(21)).unwrap().unwrap(),
        );
        raw.insert(audit::seq_key(20), b.clone()).unwrap();
        raw.insert(audit::seq_key(21), a.clone()).unwrap();
        assert_eq!(
            broken_at(store.verify()),
            (20, ChainBreak::SeqMismatch { found: 21 })
        );
        raw.insert(audit::seq_key(20), a).unwrap();
        raw.insert(audit::seq_key(21), b).unwrap();
        store.verify().unwrap();

        // Delete the last entry: only the recorded head can tell.
        let last = raw.remove(audit::seq_key(59)).unwrap().unwrap();
        assert_eq!(broken_at(store.verify()), (59, ChainBreak::Missing));
        raw.insert(audit::seq_key(59), last).unwrap();

        // Delete one in the middle, and check it is still reported after reopening.
        raw.remove(audit::seq_key(50)).unwrap();
        assert_eq!(broken_at(store.verify()), (50, ChainBreak::Missing));
        drop(raw);
        drop(store);
        let store = SledStore::open(dir.path()).unwrap();
        assert_eq!(broken_at(store.verify()), (50, ChainBreak::Missing));
    }

    #[test]
    fn a_request_s_records_are_one_group_of_individually_chained_entries() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        store.append_audit(record(0)).unwrap();
        store
            .raw_commit(
                vec![put(Tree::Flows, b"f", b"v")],
                vec![record(1), record(2), record(3), record(4)],
            )
            .unwrap();
        store
            .raw_commit(vec![], vec![record(5), record(6)])
            .unwrap();
        assert_eq!(store.append_audit(record(7)).unwrap(), 7);
        let raw = store.raw_audit();
        assert_eq!(
            raw.iter()
                .keys()
                .map(|k| audit::key_seq(&k.unwrap()).unwrap())
                .collect::<Vec<_>>(),
            vec![0, 1, 5, 7]
        );
        let entries = store.entries(0, 100).unwrap();
        assert_eq!(
            entries.iter().map(|e| e.record.clone()).collect::<Vec<_>>(),
            (0..8).map(record).collect::<Vec<_>>()
        );
        for pair in entries.windows(2) {
            assert_eq!(pair[1].prev_hash, pair[0].hash);
        }
        // Reading from the middle of a group, and limits across groups.
        let seqs = |from, limit| {
            store
                .entries(from, limit)
                .unwrap()
                .iter()
                .map(|e| e.seq)
                .collect::<Vec<_>>()
        };
        assert_eq!(seqs(3, 100), vec![3, 4, 5, 6, 7]);
        assert_eq!(seqs(2, 4), vec![2, 3, 4, 5]);
        assert_eq!(seqs(6, 1), vec![6]);
        assert_eq!(seqs(8, 10), Vec::<u64>::new());
        assert_eq!(seqs(0, 0), Vec::<u64>::new());
        let summary = store.verify().unwrap();
        assert_eq!(summary.entries, 8);
        assert_eq!(summary.chains[0].head, entries[7].hash);

        // A tampered middle record of a group is found, also after reopening.
        let original = raw.get(audit::seq_key(1)).unwrap().unwrap();
        let text = serde_json::to_vec(&serde_json::json!({ "i": 2 })).unwrap();
        let text = String::from_utf8(text).unwrap();
        raw.insert(
            audit::seq_key(1),
            replaced(&original, &text, &text.replace('2', "9")),
        )
        .unwrap();
        assert_eq!(broken_at(store.verify()), (2, ChainBreak::HashMismatch));
        drop(raw);
        drop(store);
        let store = SledStore::open(dir.path()).unwrap();
        assert_eq!(broken_at(store.verify()), (2, ChainBreak::HashMismatch));
        // The chain goes on after the last group.
        assert_eq!(store.append_audit(record(8)).unwrap(), 8);
        assert_eq!(
            store.entries(8, 1).unwrap()[0].prev_hash,
            summary.chains[0].head
        );
        store
            .raw_audit()
            .insert(audit::seq_key(1), original)
            .unwrap();
        assert_eq!(store.verify().unwrap().entries, 9);
    }

    #[test]
    fn an_audit_log_of_the_format_before_groups_is_refused_clearly() {
        // One JSON object per key, as resetgate stored entries before.
        let entry = AuditEntry {
            chain: String::new(),
            position: 0,
            seq: 0,
            prev_hash: audit::GENESIS_HASH.to_owned(),
            hash: audit::entry_hash(audit::GENESIS_HASH, 0, &record(0)).unwrap(),
            record: record(0),
        };
        let old = serde_json::to_vec(&entry).unwrap();

        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        store
            .raw_audit()
            .insert(audit::seq_key(0), old.clone())
            .unwrap();
        let err = store.entries(0, 10).unwrap_err().to_string();
        assert!(err.contains("entry 0") && err.contains("older"), "{err}");
        drop(store);
        match SledStore::open(dir.path()) {
            Err(StoreError::Open { reason, .. }) => {
                assert!(
                    reason.contains("(0)") && reason.contains("older"),
                    "{reason}"
                )
            }
            other => panic!("expected a refusal, got {other:?}"),
        }

        // An old entry in the middle of new ones.
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        for i in 0..3 {
            store.append_audit(record(i)).unwrap();
        }
        store.raw_audit().insert(audit::seq_key(1), old).unwrap();
        assert_eq!(broken_at(store.verify()), (1, ChainBreak::OldFormat));
    }

    #[test]
    fn errors_never_carry_stored_values() {
        const CANARY: &str = "CANARY-3f9a";
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        store
            .raw_commit_vec(vec![put(
                Tree::Work,
                b"job",
                format!("password={CANARY}").as_bytes(),
            )])
            .unwrap();
        let mut canary_record = record(0);
        canary_record.detail = serde_json::json!({ "note": CANARY });
        store.append_audit(canary_record.clone()).unwrap();
        store.append_audit(record(1)).unwrap();

        let mut errors: Vec<String> = Vec::new();
        let mut keep = |debug: String, display: String| {
            errors.push(debug);
            errors.push(display);
        };

        // An undecodable entry that still holds the canary.
        let raw = store.raw_audit();
        let stored = raw.get(audit::seq_key(0)).unwrap().unwrap().to_vec();
        let mut damaged = stored.clone();
        damaged.truncate(damaged.len() - 1);
        raw.insert(audit::seq_key(0), damaged).unwrap();
        let err = store.entries(0, 10).unwrap_err();
        keep(format!("{err:?}"), err.to_string());
        let err = store.verify().unwrap_err();
        keep(format!("{err:?}"), err.to_string());
        // A modified entry that holds the canary.
        raw.insert(
            audit::seq_key(0),
            replaced(&stored, "flow.started", "flow.stopped"),
        )
        .unwrap();
        let err = store.verify().unwrap_err();
        keep(format!("{err:?}"), err.to_string());

        // After closing.
        store.close();
        let err = store
            .raw_commit_vec(vec![put(Tree::Work, b"job", CANARY.as_bytes())])
            .unwrap_err();
        keep(format!("{err:?}"), err.to_string());
        let err = store.append_audit(canary_record).unwrap_err();
        keep(format!("{err:?}"), err.to_string());
        let err = store.raw_get(Tree::Work, b"job").unwrap_err();
        keep(format!("{err:?}"), err.to_string());

        assert_eq!(errors.len(), 12);
        for error in &errors {
            assert!(
                !error.contains(CANARY),
                "an error carries a stored value: {error}"
            );
        }
    }

    #[test]
    fn opening_refuses_an_unreadable_audit_tail() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        store.append_audit(record(0)).unwrap();
        store
            .raw_audit()
            .insert(audit::seq_key(1), b"not an entry".to_vec())
            .unwrap();
        drop(store);
        match SledStore::open(dir.path()) {
            Err(StoreError::Open { reason, .. }) => assert!(reason.contains("(1)"), "{reason}"),
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    /// Not a test of speed (nothing is asserted): prints durable commits per
    /// second with 1 and 64 writers. Run with
    /// `cargo test --release -p resetgate --lib store::sled::tests::throughput -- --nocapture`.
    #[test]
    fn throughput() {
        for threads in [1u32, 64] {
            let dir = tempfile::tempdir().unwrap();
            let store = SledStore::open(dir.path()).unwrap();
            let each: u32 = match (cfg!(debug_assertions), threads) {
                (true, 1) => 50,
                (true, _) => 10,
                (false, 1) => 3_000,
                (false, _) => 1_000,
            };
            let before = store.flushes();
            let start = Instant::now();
            let workers: Vec<_> = (0..threads)
                .map(|t| {
                    let store = store.clone();
                    std::thread::spawn(move || {
                        for i in 0..each {
                            let key = format!("{t}/{i}");
                            store
                                .raw_commit_vec(vec![put(Tree::Flows, key.as_bytes(), &[0u8; 64])])
                                .unwrap();
                        }
                    })
                })
                .collect();
            for worker in workers {
                worker.join().unwrap();
            }
            let elapsed = start.elapsed();
            let commits = u64::from(threads * each);
            println!(
                "{threads:>2} writer(s): {commits} durable commits in {elapsed:?} = {:.0}/s, {} flushes",
                commits as f64 / elapsed.as_secs_f64(),
                store.flushes() - before
            );
        }
    }
}
