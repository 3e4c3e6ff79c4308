//! The store on sled 0.34: one sled tree per [`Tree`] and one for the audit
//! log, in `<data dir>/db`.
//!
//! Order, not transactions: a commit is its writes applied one by one, in
//! order, as single sled inserts and removes, and a crash keeps a prefix of
//! them (sled recovers a prefix of its log, and one thread's writes reach
//! the log in the order they are made). sled 0.34's batches and
//! transactions are never used: the first one switches sled, for the rest
//! of the process, from a lock-free counter to a global reader-writer lock
//! that every read and insert then takes, and each transaction stops every
//! other reader and writer while it commits. Measured here: a flow write
//! with an audit record cost 29 µs of CPU; once a transaction had run,
//! 36 µs; with one write in four a two-tree transaction, 55–79 µs.
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

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use std::task::{Context, Poll, Waker};

use super::audit::{self, ChainVerifier, Head};
use super::{
    AuditEntry, AuditError, AuditRecord, AuditSummary, Durability, Durable, KeyValue, Store,
    StoreError, Tree, Write,
};

/// The sled tree that holds the audit log.
const AUDIT_TREE: &str = "audit";

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
    /// The end of the audit chain. Held across "read head, write entry" so
    /// that concurrent appends never fork the chain.
    head: Mutex<Head>,
    /// `true` once closed. Writers hold it for reading while they apply
    /// their writes and take their ticket; `close` takes it for writing, so
    /// every write either happens before the final flush or not at all.
    closed: RwLock<bool>,
    flush: Arc<Flush>,
    /// The flusher thread, until it is joined.
    flusher: Mutex<Option<JoinHandle<()>>>,
}

/// One sled tree per [`Tree`].
struct Trees {
    flows: ::sled::Tree,
    enrollments: ::sled::Tree,
    lockout: ::sled::Tree,
    outbox: ::sled::Tree,
    timers: ::sled::Tree,
    meta: ::sled::Tree,
    kv: ::sled::Tree,
}

impl Trees {
    fn open(db: &::sled::Db) -> Result<Trees, ::sled::Error> {
        Ok(Trees {
            flows: db.open_tree(Tree::Flows.name())?,
            enrollments: db.open_tree(Tree::Enrollments.name())?,
            lockout: db.open_tree(Tree::Lockout.name())?,
            outbox: db.open_tree(Tree::Outbox.name())?,
            timers: db.open_tree(Tree::Timers.name())?,
            meta: db.open_tree(Tree::Meta.name())?,
            kv: db.open_tree(Tree::Kv.name())?,
        })
    }

    fn get(&self, tree: Tree) -> &::sled::Tree {
        match tree {
            Tree::Flows => &self.flows,
            Tree::Enrollments => &self.enrollments,
            Tree::Lockout => &self.lockout,
            Tree::Outbox => &self.outbox,
            Tree::Timers => &self.timers,
            Tree::Meta => &self.meta,
            Tree::Kv => &self.kv,
        }
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
                tree: "*",
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

impl Durability for Flush {
    fn wait(&self, needed: u64) -> Result<(), StoreError> {
        {
            let mut state = lock(&self.state);
            if let Some(outcome) = state.outcome(needed) {
                return outcome;
            }
            state
                .waiters
                .push((needed, Waiter::Thread(std::thread::current())));
        }
        // Parked until the flusher unparks this thread; unpark before park
        // makes park return at once, and spurious wake-ups loop.
        while !self.ended(needed) {
            std::thread::park();
        }
        lock(&self.state)
            .outcome(needed)
            .unwrap_or(Err(StoreError::Closed))
    }

    fn poll(&self, needed: u64, cx: &mut Context<'_>) -> Poll<Result<(), StoreError>> {
        let mut state = lock(&self.state);
        if let Some(outcome) = state.outcome(needed) {
            return Poll::Ready(outcome);
        }
        // A task polled again before its flush is registered twice and
        // woken twice: harmless.
        state
            .waiters
            .push((needed, Waiter::Task(cx.waker().clone())));
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
fn io(op: &'static str, tree: &'static str) -> impl FnOnce(::sled::Error) -> StoreError {
    move |e| StoreError::Io {
        op,
        tree,
        reason: describe(&e),
    }
}

/// The tree a write goes to.
/// At most `limit` entries of a sled iterator over `tree`, copied out.
fn entries(tree: Tree, iter: ::sled::Iter, limit: usize) -> Result<Vec<KeyValue>, StoreError> {
    iter.take(limit)
        .map(|item| {
            let (key, value) = item.map_err(io("scan", tree.name()))?;
            Ok((key.to_vec(), value.to_vec()))
        })
        .collect()
}

fn target(write: &Write) -> Tree {
    match write {
        Write::Put { tree, .. } | Write::Delete { tree, .. } => *tree,
    }
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
    /// Opens (creating if needed) the store in `<dir>/db` and starts its
    /// flusher thread. Waits up to two seconds if the database is locked
    /// (for example, closed a moment ago in this process).
    ///
    /// Refuses to open when the last audit entry cannot be read, since the
    /// chain could not be continued.
    pub fn open(dir: &Path) -> Result<SledStore, StoreError> {
        let path = dir.join("db");
        let open_error = |reason: String| StoreError::Open {
            path: path.clone(),
            reason,
        };
        create_private_dir(&path)
            .map_err(|e| open_error(format!("cannot create the folder: {e}")))?;
        let db = open_db(&path).map_err(|e| {
            if is_lock_error(&e) {
                StoreError::Locked { path: path.clone() }
            } else {
                open_error(describe(&e))
            }
        })?;
        let trees = Trees::open(&db).map_err(|e| open_error(describe(&e)))?;
        let audit = db
            .open_tree(AUDIT_TREE)
            .map_err(|e| open_error(describe(&e)))?;
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

        Ok(SledStore {
            inner: Arc::new(Inner {
                path,
                trees,
                audit,
                head: Mutex::new(head),
                closed: RwLock::new(false),
                flush,
                flusher: Mutex::new(Some(flusher)),
            }),
        })
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
}

impl Inner {
    /// Appends audit records to the chain (not yet flushed) as one group
    /// under one key; returns the last one's sequence number. One sled
    /// insert per call, whatever the number of records (a sled batch would
    /// take sled's global write lock, see [`Flush::exclusive`], and measured
    /// 40% slower here).
    ///
    /// The group is laid out (records serialised, buffer allocated) before
    /// the chain-head lock is taken; under it, only each entry's hash is
    /// computed and written into place, and the group inserted. Inserting
    /// under the lock, in sequence order, is what keeps the log free of
    /// holes on disk: sled recovers a prefix of its log, and groups reach
    /// the log in the order they are inserted, so whatever prefix survives
    /// a crash holds entry `n - 1` whenever it holds entry `n`. (Inserting
    /// outside the lock would let any flush, or sled writing out a full
    /// buffer, persist `n` before `n - 1` was even inserted.)
    fn append(&self, records: &[AuditRecord]) -> Result<Option<u64>, StoreError> {
        let encode_error = |reason: String| StoreError::Io {
            op: "append",
            tree: AUDIT_TREE,
            reason,
        };
        let Some((bytes, layout)) = audit::prepare(records)
            .map_err(|e| encode_error(format!("cannot encode the entry: {e}")))?
        else {
            return Ok(None);
        };
        // Converted before the lock: this copies the bytes once more.
        let mut value = ::sled::IVec::from(bytes);
        let mut head = lock(&self.head);
        // Link a copy, so that a failed insert leaves the head where the
        // stored chain ends.
        let mut next = *head;
        let first = layout
            .link(&mut next, &mut value)
            .ok_or_else(|| encode_error("internal error: the group lost its layout".to_owned()))?;
        self.audit
            .insert(audit::seq_key(first), value)
            .map_err(io("append", AUDIT_TREE))?;
        *head = next;
        drop(head);
        Ok(next.next_seq.checked_sub(1))
    }

    fn close(&self) {
        // Held throughout, so that a second caller returns only once the
        // flusher is gone.
        let mut flusher = lock(&self.flusher);
        *self.closed.write().unwrap_or_else(PoisonError::into_inner) = true;
        lock(&self.flush.state).shutdown = true;
        self.flush.work.notify_all();
        if let Some(handle) = flusher.take()
            && handle.join().is_err()
        {
            tracing::error!("the store's flusher thread panicked");
        }
    }

    /// Applies `writes` one by one, in order (not yet durably).
    fn apply(&self, writes: &[Write]) -> Result<(), StoreError> {
        for write in writes {
            let tree = target(write);
            let sled = self.trees.get(tree);
            match write {
                Write::Put { key, value, .. } => sled
                    .insert(key.as_slice(), value.as_slice())
                    .map(|_| ())
                    .map_err(io("commit", tree.name()))?,
                Write::Delete { key, .. } => sled
                    .remove(key.as_slice())
                    .map(|_| ())
                    .map_err(io("commit", tree.name()))?,
            }
        }
        Ok(())
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
    /// Appends `records` to the audit log, then applies `writes`; returns
    /// the last record's sequence number and the [`Durable`] that resolves
    /// once both are on disk. The audit records come first: a crash before
    /// the flush loses both, a crash after it keeps both.
    fn stage(
        &self,
        writes: &[Write],
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
            if writes.is_empty() && records.is_empty() {
                return Ok((None, Durable::ready()));
            }
            let seq = self.inner.append(records)?;
            if !writes.is_empty() {
                self.inner.apply(writes)?;
            }
            (seq, self.inner.flush.register()?)
        };
        let source: Arc<dyn Durability> = self.inner.flush.clone();
        Ok((seq, Durable::after(source, needed)))
    }
}

impl Store for SledStore {
    fn get(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.check_open()?;
        let value = self
            .inner
            .trees
            .get(tree)
            .get(key)
            .map_err(io("get", tree.name()))?;
        Ok(value.map(|v| v.to_vec()))
    }

    fn scan(&self, tree: Tree, prefix: &[u8], limit: usize) -> Result<Vec<KeyValue>, StoreError> {
        self.check_open()?;
        entries(tree, self.inner.trees.get(tree).scan_prefix(prefix), limit)
    }

    fn scan_after(
        &self,
        tree: Tree,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<KeyValue>, StoreError> {
        use std::ops::Bound;
        self.check_open()?;
        let sled = self.inner.trees.get(tree);
        let range = match after {
            Some(after) => sled.range::<&[u8], _>((Bound::Excluded(after), Bound::Unbounded)),
            None => sled.iter(),
        };
        entries(tree, range, limit)
    }

    fn scan_keys(
        &self,
        tree: Tree,
        prefix: &[u8],
        limit: usize,
    ) -> Result<Vec<Vec<u8>>, StoreError> {
        self.check_open()?;
        let mut out = Vec::new();
        for item in self
            .inner
            .trees
            .get(tree)
            .scan_prefix(prefix)
            .keys()
            .take(limit)
        {
            out.push(item.map_err(io("scan", tree.name()))?.to_vec());
        }
        Ok(out)
    }

    fn commit(&self, writes: Vec<Write>) -> Result<(), StoreError> {
        self.commit_audited(writes, Vec::new())
    }

    fn commit_audited(
        &self,
        writes: Vec<Write>,
        records: Vec<AuditRecord>,
    ) -> Result<(), StoreError> {
        self.stage(&writes, &records)?.1.wait()
    }

    fn stage_audited(
        &self,
        writes: Vec<Write>,
        records: Vec<AuditRecord>,
    ) -> Result<Durable, StoreError> {
        Ok(self.stage(&writes, &records)?.1)
    }

    fn append_audit(&self, record: AuditRecord) -> Result<u64, StoreError> {
        let (seq, durable) = self.stage(&[], std::slice::from_ref(&record))?;
        durable.wait()?;
        Ok(seq.unwrap_or_default())
    }

    fn audit_entries(&self, from: u64, limit: usize) -> Result<Vec<AuditEntry>, StoreError> {
        self.check_open()?;
        let mut out = Vec::new();
        if limit == 0 {
            return Ok(out);
        }
        let unreadable = |why: audit::Unreadable, seq: Option<u64>| StoreError::Io {
            op: "read",
            tree: AUDIT_TREE,
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
                    .entry()
                    .ok_or_else(|| unreadable(audit::Unreadable::Undecodable, Some(stored.seq)))?;
                out.push(entry);
                if out.len() >= limit {
                    return Ok(out);
                }
            }
        }
        Ok(out)
    }

    fn flush_latency(&self) -> Option<&crate::metrics::Histogram> {
        Some(&self.inner.flush.latency)
    }

    fn verify_audit(&self) -> Result<AuditSummary, AuditError> {
        self.check_open()?;
        // Groups that start before the head are written whole (the head
        // moves past a group after its insert), so the walk up to it sees a
        // settled chain.
        let head = *lock(&self.inner.head);
        let mut verifier = ChainVerifier::new();
        for item in self.inner.audit.range(..audit::seq_key(head.next_seq)) {
            let (key, value) = item.map_err(io("verify", AUDIT_TREE))?;
            verifier.feed(&key, &value)?;
        }
        verifier.finish(Some(&head))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;
    use crate::store::ChainBreak;

    fn put(tree: Tree, key: &[u8], value: &[u8]) -> Write {
        Write::Put {
            tree,
            key: key.to_vec(),
            value: value.to_vec(),
        }
    }

    fn delete(tree: Tree, key: &[u8]) -> Write {
        Write::Delete {
            tree,
            key: key.to_vec(),
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
            Err(AuditError::Broken { seq, why }) => (seq, why),
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

    #[test]
    fn put_get_delete_and_scan_per_tree() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        for tree in Tree::ALL {
            let name = tree.name().as_bytes();
            let mut writes = vec![put(tree, b"other", name)];
            for i in 0..5u8 {
                writes.push(put(tree, &[b'k', b'/', i], &[i]));
            }
            store.commit(writes).unwrap();
            assert_eq!(store.get(tree, b"other").unwrap().as_deref(), Some(name));
            assert_eq!(store.get(tree, b"k/\x03").unwrap(), Some(vec![3]));
            assert_eq!(store.get(tree, b"missing").unwrap(), None);

            let scanned = store.scan(tree, b"k/", 3).unwrap();
            assert_eq!(
                scanned,
                (0..3u8)
                    .map(|i| (vec![b'k', b'/', i], vec![i]))
                    .collect::<Vec<_>>()
            );
            assert_eq!(store.scan(tree, b"k/", 100).unwrap().len(), 5);
            assert_eq!(store.scan(tree, b"k/", 0).unwrap(), vec![]);
            assert_eq!(store.scan(tree, b"", 100).unwrap().len(), 6);

            store.commit(vec![delete(tree, b"k/\x01")]).unwrap();
            assert_eq!(store.get(tree, b"k/\x01").unwrap(), None);
            assert_eq!(store.scan(tree, b"k/", 100).unwrap().len(), 4);
        }
        // Each tree sees only its own value under the same key.
        for tree in Tree::ALL {
            assert_eq!(
                store.get(tree, b"other").unwrap().as_deref(),
                Some(tree.name().as_bytes())
            );
        }
        store
            .commit(vec![put(Tree::Flows, b"flows-only", b"x")])
            .unwrap();
        for tree in Tree::ALL.into_iter().filter(|t| *t != Tree::Flows) {
            assert_eq!(store.get(tree, b"flows-only").unwrap(), None);
            assert_eq!(store.scan(tree, b"flows-only", 10).unwrap(), vec![]);
        }
    }

    #[test]
    fn scan_after_walks_a_tree_in_batches() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        let writes = (0..7u8)
            .map(|i| put(Tree::Flows, &[b'k', i], &[i]))
            .collect();
        store.commit(writes).unwrap();
        let mut seen = Vec::new();
        let mut after: Option<Vec<u8>> = None;
        loop {
            let batch = store.scan_after(Tree::Flows, after.as_deref(), 3).unwrap();
            seen.extend(batch.iter().map(|(_, v)| v[0]));
            if batch.len() < 3 {
                break;
            }
            after = batch.last().map(|(k, _)| k.clone());
        }
        assert_eq!(seen, [0, 1, 2, 3, 4, 5, 6]);
        assert!(
            store
                .scan_after(Tree::Enrollments, None, 3)
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn writes_across_trees_are_applied_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        store
            .commit(vec![put(Tree::Lockout, b"alice", b"3 failures")])
            .unwrap();
        store
            .commit(vec![
                put(Tree::Flows, b"f1", b"first"),
                put(Tree::Timers, b"t1", b"f1"),
                delete(Tree::Lockout, b"alice"),
                put(Tree::Flows, b"f1", b"second"),
            ])
            .unwrap();
        assert_eq!(
            store.get(Tree::Flows, b"f1").unwrap(),
            Some(b"second".to_vec())
        );
        assert_eq!(
            store.get(Tree::Timers, b"t1").unwrap(),
            Some(b"f1".to_vec())
        );
        assert_eq!(store.get(Tree::Lockout, b"alice").unwrap(), None);
        // A put then a delete of the same key in one tree.
        store
            .commit(vec![put(Tree::Meta, b"m", b"1"), delete(Tree::Meta, b"m")])
            .unwrap();
        assert_eq!(store.get(Tree::Meta, b"m").unwrap(), None);
        assert_eq!(store.commit(vec![]).map_err(|e| e.to_string()), Ok(()));
    }

    #[test]
    fn readers_see_a_commit_in_order() {
        // Each commit sets counter `n` in Timers, then pads Flows, then sets
        // `n` in Flows. A reader that reads Flows first and Timers second
        // must never find Timers behind Flows: a later write of a commit is
        // never visible without the earlier ones. (A crash keeps a prefix in
        // the same way; the runtime orders its writes so that every prefix
        // is safe.)
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let reader = {
            let (store, stop) = (store.clone(), Arc::clone(&stop));
            std::thread::spawn(move || {
                let read = |tree| {
                    store
                        .get(tree, b"n")
                        .unwrap()
                        .map_or(0, |v| u64::from_be_bytes(v.try_into().unwrap()))
                };
                let mut checks = 0u64;
                while !stop.load(Ordering::Relaxed) || checks == 0 {
                    let flows = read(Tree::Flows);
                    let timers = read(Tree::Timers);
                    assert!(
                        timers >= flows,
                        "saw flows at {flows} but timers at {timers}"
                    );
                    checks += 1;
                }
                checks
            })
        };
        for n in 1..=200u64 {
            let mut writes = vec![put(Tree::Timers, b"n", &n.to_be_bytes())];
            writes.extend((0..64u8).map(|i| put(Tree::Flows, &[b'p', i], &n.to_be_bytes())));
            writes.push(put(Tree::Flows, b"n", &n.to_be_bytes()));
            store.commit(writes).unwrap();
        }
        stop.store(true, Ordering::Relaxed);
        assert!(reader.join().unwrap() > 0);
    }

    #[test]
    fn committed_data_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        store
            .commit(vec![
                put(Tree::Flows, b"f", b"flow"),
                put(Tree::Enrollments, b"e", b"enrolled"),
            ])
            .unwrap();
        store
            .commit(vec![put(Tree::Outbox, b"o", b"queued")])
            .unwrap();
        let seq = store.append_audit(record(0)).unwrap();
        drop(store);

        let store = SledStore::open(dir.path()).unwrap();
        assert_eq!(
            store.get(Tree::Flows, b"f").unwrap(),
            Some(b"flow".to_vec())
        );
        assert_eq!(
            store.get(Tree::Enrollments, b"e").unwrap(),
            Some(b"enrolled".to_vec())
        );
        assert_eq!(
            store.get(Tree::Outbox, b"o").unwrap(),
            Some(b"queued".to_vec())
        );
        assert_eq!(
            store
                .audit_entries(0, 10)
                .unwrap()
                .into_iter()
                .map(|e| e.seq)
                .collect::<Vec<_>>(),
            vec![seq]
        );
    }

    #[test]
    fn commit_waits_for_a_flush() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        let before = store.flushes();
        for i in 0..20u32 {
            store
                .commit(vec![put(Tree::Flows, &i.to_be_bytes(), b"v")])
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
                            .commit(vec![put(Tree::Flows, key.as_bytes(), &i.to_be_bytes())])
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
            .scan(Tree::Flows, b"", 10_000)
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
                    store.get(Tree::Flows, key.as_bytes()).unwrap().unwrap(),
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
        assert_eq!(store.scan(Tree::Flows, b"", 100).unwrap().len(), 65);
        assert_eq!(store.verify_audit().unwrap().entries, u64::from(TASKS));
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
                        match store.commit(vec![put(Tree::Flows, key.as_bytes(), b"v")]) {
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
            store.commit(vec![put(Tree::Flows, b"late", b"v")]),
            Err(StoreError::Closed)
        ));
        assert!(matches!(
            store.append_audit(record(0)),
            Err(StoreError::Closed)
        ));
        assert!(matches!(
            store.get(Tree::Flows, b"late"),
            Err(StoreError::Closed)
        ));
        drop(store);

        // Everything acknowledged is there.
        let store = SledStore::open(dir.path()).unwrap();
        for key in &acknowledged {
            assert!(
                store.get(Tree::Flows, key.as_bytes()).unwrap().is_some(),
                "{key} was acknowledged but is gone"
            );
        }
        assert_eq!(store.get(Tree::Flows, b"late").unwrap(), None);
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

        let entries = store.audit_entries(0, 1_000).unwrap();
        assert_eq!(
            entries.iter().map(|e| e.seq).collect::<Vec<_>>(),
            (0..100).collect::<Vec<_>>()
        );
        assert_eq!(entries[0].prev_hash, audit::GENESIS_HASH);
        for pair in entries.windows(2) {
            assert_eq!(pair[1].prev_hash, pair[0].hash);
        }
        let summary = store.verify_audit().unwrap();
        assert_eq!(
            summary,
            AuditSummary {
                entries: 100,
                head: entries[99].hash.clone()
            }
        );
        assert_eq!(store.audit_entries(98, 10).unwrap().len(), 2);
        assert_eq!(
            store
                .audit_entries(10, 3)
                .unwrap()
                .iter()
                .map(|e| e.seq)
                .collect::<Vec<_>>(),
            vec![10, 11, 12]
        );
        drop(store);

        let store = SledStore::open(dir.path()).unwrap();
        assert_eq!(store.verify_audit().unwrap(), summary);
        assert_eq!(store.append_audit(record(1_000)).unwrap(), 100);
        assert_eq!(store.append_audit(record(1_001)).unwrap(), 101);
        let tail = store.audit_entries(100, 10).unwrap();
        assert_eq!(tail[0].prev_hash, summary.head);
        assert_eq!(tail[0].record, record(1_000));
        assert_eq!(
            store.verify_audit().unwrap(),
            AuditSummary {
                entries: 102,
                head: tail[1].hash.clone()
            }
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
        store.verify_audit().unwrap();

        // Change one byte of entry 37's record, keeping it valid JSON.
        let key = audit::seq_key(37);
        let original = raw.get(key).unwrap().unwrap().to_vec();
        raw.insert(key, replaced(&original, "flow.started", "flow.stopped"))
            .unwrap();
        assert_eq!(
            broken_at(store.verify_audit()),
            (37, ChainBreak::HashMismatch)
        );
        // Garbage instead.
        raw.insert(key, b"\x00\x01garbage".to_vec()).unwrap();
        assert_eq!(
            broken_at(store.verify_audit()),
            (37, ChainBreak::Undecodable)
        );
        raw.insert(key, original).unwrap();
        store.verify_audit().unwrap();

        // Swap two entries.
        let (a, b) = (
            raw.get(audit::seq_key(20)).unwrap().unwrap(),
            raw.get(audit::seq_key(21)).unwrap().unwrap(),
        );
        raw.insert(audit::seq_key(20), b.clone()).unwrap();
        raw.insert(audit::seq_key(21), a.clone()).unwrap();
        assert_eq!(
            broken_at(store.verify_audit()),
            (20, ChainBreak::SeqMismatch { found: 21 })
        );
        raw.insert(audit::seq_key(20), a).unwrap();
        raw.insert(audit::seq_key(21), b).unwrap();
        store.verify_audit().unwrap();

        // Delete the last entry: only the recorded head can tell.
        let last = raw.remove(audit::seq_key(59)).unwrap().unwrap();
        assert_eq!(broken_at(store.verify_audit()), (59, ChainBreak::Missing));
        raw.insert(audit::seq_key(59), last).unwrap();

        // Delete one in the middle, and check it is still reported after reopening.
        raw.remove(audit::seq_key(50)).unwrap();
        assert_eq!(broken_at(store.verify_audit()), (50, ChainBreak::Missing));
        drop(raw);
        drop(store);
        let store = SledStore::open(dir.path()).unwrap();
        assert_eq!(broken_at(store.verify_audit()), (50, ChainBreak::Missing));
    }

    #[test]
    fn a_request_s_records_are_one_group_of_individually_chained_entries() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        store.append_audit(record(0)).unwrap();
        store
            .commit_audited(
                vec![put(Tree::Flows, b"f", b"v")],
                vec![record(1), record(2), record(3), record(4)],
            )
            .unwrap();
        store
            .commit_audited(vec![], vec![record(5), record(6)])
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
        let entries = store.audit_entries(0, 100).unwrap();
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
                .audit_entries(from, limit)
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
        let summary = store.verify_audit().unwrap();
        assert_eq!(summary.entries, 8);
        assert_eq!(summary.head, entries[7].hash);

        // A tampered middle record of a group is found, also after reopening.
        let original = raw.get(audit::seq_key(1)).unwrap().unwrap();
        let text = serde_json::to_vec(&serde_json::json!({ "i": 2 })).unwrap();
        let text = String::from_utf8(text).unwrap();
        raw.insert(
            audit::seq_key(1),
            replaced(&original, &text, &text.replace('2', "9")),
        )
        .unwrap();
        assert_eq!(
            broken_at(store.verify_audit()),
            (2, ChainBreak::HashMismatch)
        );
        drop(raw);
        drop(store);
        let store = SledStore::open(dir.path()).unwrap();
        assert_eq!(
            broken_at(store.verify_audit()),
            (2, ChainBreak::HashMismatch)
        );
        // The chain goes on after the last group.
        assert_eq!(store.append_audit(record(8)).unwrap(), 8);
        assert_eq!(
            store.audit_entries(8, 1).unwrap()[0].prev_hash,
            summary.head
        );
        store
            .raw_audit()
            .insert(audit::seq_key(1), original)
            .unwrap();
        assert_eq!(store.verify_audit().unwrap().entries, 9);
    }

    #[test]
    fn an_audit_log_of_the_format_before_groups_is_refused_clearly() {
        // One JSON object per key, as resetgate stored entries before.
        let entry = AuditEntry {
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
        let err = store.audit_entries(0, 10).unwrap_err().to_string();
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
        assert_eq!(broken_at(store.verify_audit()), (1, ChainBreak::OldFormat));
    }

    #[test]
    fn errors_never_carry_stored_values() {
        const CANARY: &str = "CANARY-3f9a";
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        store
            .commit(vec![put(
                Tree::Outbox,
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
        let err = store.audit_entries(0, 10).unwrap_err();
        keep(format!("{err:?}"), err.to_string());
        let err = store.verify_audit().unwrap_err();
        keep(format!("{err:?}"), err.to_string());
        // A modified entry that holds the canary.
        raw.insert(
            audit::seq_key(0),
            replaced(&stored, "flow.started", "flow.stopped"),
        )
        .unwrap();
        let err = store.verify_audit().unwrap_err();
        keep(format!("{err:?}"), err.to_string());

        // After closing.
        store.close();
        let err = store
            .commit(vec![put(Tree::Outbox, b"job", CANARY.as_bytes())])
            .unwrap_err();
        keep(format!("{err:?}"), err.to_string());
        let err = store.append_audit(canary_record).unwrap_err();
        keep(format!("{err:?}"), err.to_string());
        let err = store.get(Tree::Outbox, b"job").unwrap_err();
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
                                .commit(vec![put(Tree::Flows, key.as_bytes(), &[0u8; 64])])
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
