//! Durable state: flows, enrollments, lockout history, the outbox, timers and
//! the audit log, behind a small interface so that another engine can serve
//! where one machine is outgrown. Only `store::sled` names `sled`.
//!
//! Durability: `commit` and `append_audit` return only once their writes are
//! on disk. Concurrent callers share flushes (group commit), so durability
//! costs one fsync per batch of callers, not per caller. `stage_audited`
//! applies a request's writes and hands back a [`Durable`] to wait on —
//! blocking or as a future — so that an async caller waits for the flush
//! without holding a thread, and a caller can release its locks before the
//! flush (a later writer's flush always covers an earlier writer's writes).
//!
//! Order, not isolation: a commit's writes are applied in order and a crash
//! keeps a prefix of them; a reader may see some of a commit's writes before
//! the rest. Callers order their writes so that every prefix is safe (the
//! runtime writes a flow's record last, after the lockout history and
//! enrollments it depends on) and serialise conflicting writers themselves
//! (the runtime's user locks). This is what sled 0.34 does cheaply; its
//! transactions cost far more (see `store::sled`).

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

mod audit;
pub mod kv;
mod sled;

pub use self::sled::SledStore;
pub use audit::{AuditEntry, AuditError, AuditRecord, AuditSummary, ChainBreak, GENESIS_HASH};

/// The trees (tables) of the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Tree {
    /// Flow records by flow id.
    Flows,
    /// Enrollment data by user key and gate.
    Enrollments,
    /// Failure history by user key.
    Lockout,
    /// Queued deliveries to async sync targets (encrypted; a later issue).
    Outbox,
    /// Durable timers by due time.
    Timers,
    /// Small settings (schema version, keys' ids).
    Meta,
    /// Plugins' key-value namespaces (the `kv` capability): key =
    /// namespace, 0x00, the plugin's key. See [`kv`].
    Kv,
}

impl Tree {
    /// Every tree.
    pub const ALL: [Tree; 7] = [
        Tree::Flows,
        Tree::Enrollments,
        Tree::Lockout,
        Tree::Outbox,
        Tree::Timers,
        Tree::Meta,
        Tree::Kv,
    ];

    /// The tree's name on disk.
    pub fn name(self) -> &'static str {
        match self {
            Tree::Flows => "flows",
            Tree::Enrollments => "enrollments",
            Tree::Lockout => "lockout",
            Tree::Outbox => "outbox",
            Tree::Timers => "timers",
            Tree::Meta => "meta",
            Tree::Kv => "kv",
        }
    }
}

/// One write of a commit.
#[derive(Clone, PartialEq, Eq)]
pub enum Write {
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
impl std::fmt::Debug for Write {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
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

/// Why the store failed. Never carries a value (values may hold secrets).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be opened.
    #[error("cannot open the store in {path}: {reason}")]
    Open {
        /// The data folder.
        path: PathBuf,
        /// What the engine said.
        reason: String,
    },
    /// A read or write failed.
    #[error("store {op} on {tree} failed: {reason}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The tree.
        tree: &'static str,
        /// What the engine said.
        reason: String,
    },
    /// The store has been closed (shutting down).
    #[error("the store is closed")]
    Closed,
    /// Another process holds the database (sled allows one process at a
    /// time): usually a running gateway.
    #[error("the store in {path} is in use by another process (a running gateway?)")]
    Locked {
        /// The data folder.
        path: PathBuf,
    },
}

/// A key and its value, as [`Store::scan`] returns them.
pub type KeyValue = (Vec<u8>, Vec<u8>);

/// The store interface the rest of the gateway uses.
pub trait Store: Send + Sync + 'static {
    /// The value under `key`.
    fn get(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;
    /// Every entry whose key starts with `prefix`, in key order, at most `limit`.
    fn scan(&self, tree: Tree, prefix: &[u8], limit: usize) -> Result<Vec<KeyValue>, StoreError>;
    /// Entries whose key comes after `after` (from the first with `None`),
    /// in key order, at most `limit`: for walking a whole tree in batches.
    fn scan_after(
        &self,
        tree: Tree,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<KeyValue>, StoreError>;
    /// Every key that starts with `prefix`, in key order, at most `limit`,
    /// without reading the values.
    fn scan_keys(
        &self,
        tree: Tree,
        prefix: &[u8],
        limit: usize,
    ) -> Result<Vec<Vec<u8>>, StoreError> {
        Ok(self
            .scan(tree, prefix, limit)?
            .into_iter()
            .map(|(k, _)| k)
            .collect())
    }
    /// Applies `writes` in order and returns once they are durable. A crash
    /// before then keeps a prefix of them, as does an error part-way;
    /// readers may see a prefix.
    fn commit(&self, writes: Vec<Write>) -> Result<(), StoreError>;
    /// Appends `records` to the audit log, then applies `writes` in order,
    /// returning once both are durable: one flush for a whole request. The
    /// records come first, so no prefix that survives a crash holds a write
    /// without the records that tell of it.
    fn commit_audited(
        &self,
        writes: Vec<Write>,
        records: Vec<AuditRecord>,
    ) -> Result<(), StoreError> {
        for record in records {
            self.append_audit(record)?;
        }
        self.commit(writes)
    }
    /// Like [`commit_audited`](Store::commit_audited), but returns as soon
    /// as the records and writes are applied (visible to readers), with a
    /// [`Durable`] that resolves once they are on disk. Nothing may be
    /// reported to anyone as done before it resolves.
    fn stage_audited(
        &self,
        writes: Vec<Write>,
        records: Vec<AuditRecord>,
    ) -> Result<Durable, StoreError> {
        self.commit_audited(writes, records)?;
        Ok(Durable::ready())
    }
    /// Appends an audit record, hash-chained to the previous one; returns
    /// once it is durable, with its sequence number.
    fn append_audit(&self, record: AuditRecord) -> Result<u64, StoreError>;
    /// Audit entries from sequence `from`, at most `limit`.
    fn audit_entries(&self, from: u64, limit: usize) -> Result<Vec<AuditEntry>, StoreError>;
    /// Checks the whole audit chain.
    fn verify_audit(&self) -> Result<AuditSummary, AuditError>;
    /// How long flushes to disk take, if the engine measures it.
    fn flush_latency(&self) -> Option<&crate::metrics::Histogram> {
        None
    }
}

/// What an engine that flushes in groups offers a [`Durable`]: waiting for
/// ticket `needed`, the number of a flush that began after the writes.
pub trait Durability: Send + Sync {
    /// Blocks until flush `needed` has ended; its result.
    fn wait(&self, needed: u64) -> Result<(), StoreError>;
    /// The same, as a poll: registers `cx`'s waker when not yet done.
    fn poll(&self, needed: u64, cx: &mut Context<'_>) -> Poll<Result<(), StoreError>>;
}

/// Writes that are applied but perhaps not yet on disk. Wait for it —
/// [`Durable::wait`] on a thread, or `.await` — before reporting them.
#[must_use = "writes are not durable until this resolves"]
pub struct Durable(DurableState);

enum DurableState {
    Done(Option<Result<(), StoreError>>),
    Flush {
        source: Arc<dyn Durability>,
        needed: u64,
    },
}

impl Durable {
    /// Already durable (or nothing was written).
    pub fn ready() -> Durable {
        Durable(DurableState::Done(Some(Ok(()))))
    }

    /// Durable once flush `needed` of `source` has succeeded.
    pub fn after(source: Arc<dyn Durability>, needed: u64) -> Durable {
        Durable(DurableState::Flush { source, needed })
    }

    /// Blocks the thread until the writes are durable.
    pub fn wait(self) -> Result<(), StoreError> {
        match self.0 {
            DurableState::Done(result) => result.unwrap_or(Ok(())),
            DurableState::Flush { source, needed } => {
                crate::workers::waiting(|| source.wait(needed))
            }
        }
    }
}

impl Future for Durable {
    type Output = Result<(), StoreError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        match &mut this.0 {
            DurableState::Done(result) => Poll::Ready(result.take().unwrap_or(Ok(()))),
            DurableState::Flush { source, needed } => {
                let polled = source.poll(*needed, cx);
                if polled.is_ready() {
                    this.0 = DurableState::Done(None);
                }
                polled
            }
        }
    }
}

impl std::fmt::Debug for Durable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            DurableState::Done(_) => f.write_str("Durable(done)"),
            DurableState::Flush { needed, .. } => write!(f, "Durable(after flush {needed})"),
        }
    }
}
