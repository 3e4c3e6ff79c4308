//! Durable state, behind a port any transactional backend can honour:
//! flows, lockout history, enrollments, plugins' key-value namespaces, due
//! work (outbox and timers) and the audit log, each a typed repository. The
//! runtime, the CLI and the API name no backend; [`open`] picks one from a
//! [`StoreSpec`]. Only `store::sled` names `sled`, only `store::postgres`
//! names `postgres`.
//!
//! What every backend promises (the conformance suite in
//! `tests/integration/store_conformance.rs` holds each to it):
//! - **A commit is all or nothing.** [`Store::commit`] applies one
//!   request's changes and audit records together; after a crash either all
//!   of them are there or none is. Readers of *other* users' data never
//!   wait for it.
//! - **Visible, then durable.** `commit` returns once the changes are
//!   visible, with a [`Durable`] that resolves once they are on disk
//!   (blocking or as a future). Nothing may be reported to anyone as done
//!   before it resolves. A backend that commits synchronously returns
//!   [`Durable::ready`]; sled shares one flush among concurrent writers
//!   (group commit) and resolves it when that flush ends.
//! - **A user's requests are serialised.** [`Store::lock_user`] holds off
//!   every other holder of the same user's lock, in this process and in
//!   every other gateway on the same store, until the [`UserLock`] drops.
//!   The runtime takes it before it reads what a request depends on (the
//!   flow, the lockout history) and keeps it until the commit is applied,
//!   so concurrent requests of one user never interleave (the lockout
//!   count of a 50-way race stops exactly at the threshold). The holder
//!   commits through the lock ([`UserLock::commit`]), and a commit is
//!   applied only if the lock is still held: a lock lost under its holder
//!   (PostgreSQL restarted, which ends the session holding it) makes its
//!   commit fail with [`StoreError::Unavailable`], so two gateways never
//!   both act for one user.
//! - **Due work is claimed, not raced for.** [`Store::claim_due`] leases an
//!   item to one caller until the lease ends; no other caller gets it
//!   meanwhile.
//! - **Errors never carry values** (values may hold secrets), and a
//!   backend that cannot be reached says [`StoreError::Unavailable`] (the
//!   API's 503), never panics.

use std::collections::BTreeSet;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

mod audit;
pub mod backup;
pub mod kv;
pub mod postgres;
mod sled;

pub use self::sled::SledStore;
pub use audit::{
    AuditEntry, AuditError, AuditRecord, AuditSummary, ChainBreak, ChainSummary, GENESIS_HASH,
};

/// A flow as the store keeps it: the runtime's record, opaque to the store,
/// and the few facts the store indexes.
#[derive(Clone, PartialEq, Eq)]
pub struct FlowRecord {
    /// The flow's id.
    pub id: String,
    /// The (hashed) user key whose lock guards the flow.
    pub user: String,
    /// The workflow version the flow runs on.
    pub version: String,
    /// Whether the flow has not ended yet.
    pub in_progress: bool,
    /// When the sweep should next look at it (ms since the Unix epoch).
    pub due_ms: u64,
    /// The record (may hold hashes and sealed data: never printed).
    pub body: Vec<u8>,
}

impl std::fmt::Debug for FlowRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlowRecord")
            .field("id", &self.id)
            .field("version", &self.version)
            .field("in_progress", &self.in_progress)
            .field("due_ms", &self.due_ms)
            .field("body_len", &self.body.len())
            .finish_non_exhaustive()
    }
}

/// The queues of due work.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Queue {
    /// Deliveries to asynchronous password sync targets.
    Outbox,
    /// Timers (for example a temporary password's expiry).
    Timers,
}

impl Queue {
    /// Every queue.
    pub const ALL: [Queue; 2] = [Queue::Outbox, Queue::Timers];

    /// Its name in storage and output.
    pub fn name(self) -> &'static str {
        match self {
            Queue::Outbox => "outbox",
            Queue::Timers => "timers",
        }
    }
}

/// A piece of due work.
#[derive(Clone, PartialEq, Eq)]
pub struct WorkItem {
    /// Its queue.
    pub queue: Queue,
    /// Its id, unique in the queue.
    pub id: String,
    /// When it is due (ms since the Unix epoch).
    pub due_ms: u64,
    /// What to do (sealed by the caller if it holds secrets).
    pub payload: Vec<u8>,
}

impl std::fmt::Debug for WorkItem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkItem")
            .field("queue", &self.queue)
            .field("id", &self.id)
            .field("due_ms", &self.due_ms)
            .field("payload_len", &self.payload.len())
            .finish()
    }
}

/// A work item leased to one caller by [`Store::claim_due`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claim {
    /// The item.
    pub item: WorkItem,
    /// How many times it has been claimed, this time included.
    pub attempt: u32,
    /// Until when no other caller gets it (ms since the Unix epoch).
    pub lease_until_ms: u64,
}

/// One change of a [`Commit`].
#[derive(Clone, PartialEq, Eq)]
pub enum Change {
    /// Stores a flow (replacing the one with its id).
    PutFlow(FlowRecord),
    /// Removes a flow.
    DeleteFlow {
        /// Its id.
        id: String,
    },
    /// Stores a user's lockout history.
    PutLockout {
        /// The (hashed) user key.
        user: String,
        /// The history, as the runtime encodes it.
        history: Vec<u8>,
    },
    /// Stores a user's enrollment for a gate (sealed by the runtime).
    PutEnrollment {
        /// The (hashed) user key.
        user: String,
        /// The gate's id.
        gate: String,
        /// The sealed data.
        data: Vec<u8>,
    },
    /// Removes a user's enrollment for a gate.
    DeleteEnrollment {
        /// The (hashed) user key.
        user: String,
        /// The gate's id.
        gate: String,
    },
    /// Sets a key of a plugin's namespace (see [`kv`]).
    PutKv {
        /// The namespace.
        namespace: String,
        /// The key.
        key: String,
        /// The value.
        value: Vec<u8>,
    },
    /// Removes a key of a plugin's namespace.
    DeleteKv {
        /// The namespace.
        namespace: String,
        /// The key.
        key: String,
    },
    /// Adds (or replaces) a work item, unleased.
    Enqueue(WorkItem),
    /// Adds a work item unless one with its id is in its queue already
    /// (leased or not): how every gateway can make sure a periodic timer
    /// exists without resetting another gateway's lease on it.
    Schedule(WorkItem),
    /// Removes a work item: it is done.
    Finish {
        /// Its queue.
        queue: Queue,
        /// Its id.
        id: String,
    },
    /// Ends a work item's lease and makes it due again at `due_ms`.
    Retry {
        /// Its queue.
        queue: Queue,
        /// Its id.
        id: String,
        /// When it is due again.
        due_ms: u64,
    },
}

/// Values may hold secrets: never print them.
impl std::fmt::Debug for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Change::PutFlow(r) => f.debug_tuple("PutFlow").field(r).finish(),
            Change::DeleteFlow { id } => f.debug_struct("DeleteFlow").field("id", id).finish(),
            Change::PutLockout { history, .. } => f
                .debug_struct("PutLockout")
                .field("len", &history.len())
                .finish_non_exhaustive(),
            Change::PutEnrollment { gate, data, .. } => f
                .debug_struct("PutEnrollment")
                .field("gate", gate)
                .field("len", &data.len())
                .finish_non_exhaustive(),
            Change::DeleteEnrollment { gate, .. } => f
                .debug_struct("DeleteEnrollment")
                .field("gate", gate)
                .finish_non_exhaustive(),
            Change::PutKv {
                namespace, value, ..
            } => f
                .debug_struct("PutKv")
                .field("namespace", namespace)
                .field("len", &value.len())
                .finish_non_exhaustive(),
            Change::DeleteKv { namespace, .. } => f
                .debug_struct("DeleteKv")
                .field("namespace", namespace)
                .finish_non_exhaustive(),
            Change::Enqueue(item) => f.debug_tuple("Enqueue").field(item).finish(),
            Change::Schedule(item) => f.debug_tuple("Schedule").field(item).finish(),
            Change::Finish { queue, id } => f
                .debug_struct("Finish")
                .field("queue", queue)
                .field("id", id)
                .finish(),
            Change::Retry { queue, id, due_ms } => f
                .debug_struct("Retry")
                .field("queue", queue)
                .field("id", id)
                .field("due_ms", due_ms)
                .finish(),
        }
    }
}

/// One request's changes and audit records: applied all or nothing.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Commit {
    /// The changes, applied in order (a later change to the same record
    /// wins).
    pub changes: Vec<Change>,
    /// The audit records that tell of them, appended in order.
    pub audit: Vec<AuditRecord>,
}

impl Commit {
    /// Whether there is nothing to commit.
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty() && self.audit.is_empty()
    }
}

/// Everything a store holds, one record at a time: what [`Store::export`]
/// hands out and [`Store::import`] takes (`resetgate store copy`).
#[derive(Clone, PartialEq)]
pub enum Item {
    /// A flow.
    Flow(FlowRecord),
    /// A user's lockout history.
    Lockout {
        /// The (hashed) user key.
        user: String,
        /// The history.
        history: Vec<u8>,
    },
    /// An enrollment.
    Enrollment {
        /// The (hashed) user key.
        user: String,
        /// The gate.
        gate: String,
        /// The sealed data.
        data: Vec<u8>,
    },
    /// A key of a plugin's namespace.
    Kv {
        /// The namespace.
        namespace: String,
        /// The key.
        key: String,
        /// The value.
        value: Vec<u8>,
    },
    /// A work item, with its claim if leased.
    Work {
        /// The item.
        item: WorkItem,
        /// Claims so far.
        attempts: u32,
        /// The lease's end, if leased.
        lease_until_ms: Option<u64>,
    },
    /// An audit entry, with its chain, sequence number and hashes as
    /// stored (so the copy verifies exactly as the original).
    Audit(AuditEntry),
}

/// Values may hold secrets (hashes, sealed data): never printed.
impl std::fmt::Debug for Item {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Item::Flow(r) => f.debug_tuple("Flow").field(r).finish(),
            Item::Work {
                item,
                attempts,
                lease_until_ms,
            } => f
                .debug_struct("Work")
                .field("item", item)
                .field("attempts", attempts)
                .field("lease_until_ms", lease_until_ms)
                .finish(),
            Item::Audit(e) => f
                .debug_struct("Audit")
                .field("chain", &e.chain)
                .field("seq", &e.seq)
                .finish_non_exhaustive(),
            Item::Lockout { history, .. } => f
                .debug_struct("Lockout")
                .field("len", &history.len())
                .finish_non_exhaustive(),
            Item::Enrollment { gate, data, .. } => f
                .debug_struct("Enrollment")
                .field("gate", gate)
                .field("len", &data.len())
                .finish_non_exhaustive(),
            Item::Kv {
                namespace, value, ..
            } => f
                .debug_struct("Kv")
                .field("namespace", namespace)
                .field("len", &value.len())
                .finish_non_exhaustive(),
        }
    }
}

/// Items to import, sorted out: the changes that store the records, the
/// work items with their claims, and the audit entries (each backend
/// stores those its own way).
pub(crate) struct Sorted {
    pub(crate) changes: Vec<Change>,
    pub(crate) work: Vec<(WorkItem, u32, Option<u64>)>,
    pub(crate) audit: Vec<AuditEntry>,
}

impl Sorted {
    /// `items`, sorted out, in their order.
    pub(crate) fn of(items: Vec<Item>) -> Sorted {
        let mut sorted = Sorted {
            changes: Vec::new(),
            work: Vec::new(),
            audit: Vec::new(),
        };
        for item in items {
            match item {
                Item::Flow(r) => sorted.changes.push(Change::PutFlow(r)),
                Item::Lockout { user, history } => {
                    sorted.changes.push(Change::PutLockout { user, history })
                }
                Item::Enrollment { user, gate, data } => sorted
                    .changes
                    .push(Change::PutEnrollment { user, gate, data }),
                Item::Kv {
                    namespace,
                    key,
                    value,
                } => sorted.changes.push(Change::PutKv {
                    namespace,
                    key,
                    value,
                }),
                Item::Work {
                    item,
                    attempts,
                    lease_until_ms,
                } => sorted.work.push((item, attempts, lease_until_ms)),
                Item::Audit(entry) => sorted.audit.push(entry),
            }
        }
        sorted
    }
}

impl Item {
    /// The repository it belongs to, for counts.
    pub fn repository(&self) -> &'static str {
        match self {
            Item::Flow(_) => "flows",
            Item::Lockout { .. } => "lockout",
            Item::Enrollment { .. } => "enrollments",
            Item::Kv { .. } => "kv",
            Item::Work { item, .. } => item.queue.name(),
            Item::Audit(_) => "audit",
        }
    }
}

/// Why the store failed. Never carries a value (values may hold secrets),
/// nor a password.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store could not be opened.
    #[error("cannot open the store at {location}: {reason}")]
    Open {
        /// Where (a folder, or a URL without its password).
        location: String,
        /// What went wrong.
        reason: String,
    },
    /// Another process holds the store (sled allows one process at a time):
    /// usually a running gateway.
    #[error("the store at {location} is in use by another process (a running gateway?)")]
    InUse {
        /// Where.
        location: String,
    },
    /// The backend cannot be reached right now (a database restarting, a
    /// full pool, a lock not granted in time): try again later.
    #[error("the store is unavailable: {reason}")]
    Unavailable {
        /// What happened.
        reason: String,
    },
    /// A read or write failed.
    #[error("store {op} on {what} failed: {reason}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The repository.
        what: &'static str,
        /// What the backend said.
        reason: String,
    },
    /// The store has been closed (shutting down).
    #[error("the store is closed")]
    Closed,
    /// The stored data is of a newer format than this binary knows.
    #[error(
        "the store's schema is version {found}, newer than this resetgate's ({supported}): \
         run the newer resetgate, or restore a backup made before the upgrade"
    )]
    Newer {
        /// The stored version.
        found: u32,
        /// The newest version this binary knows.
        supported: u32,
    },
}

/// Holds one user's requests off every other holder until dropped (see
/// [`Store::lock_user`]). The holder's commits go through it
/// ([`UserLock::commit`], [`UserLock::commit_and_release`]), so that a
/// commit is applied only while the lock is still held.
#[must_use = "the user's lock is released when this drops"]
pub struct UserLock<'a>(Box<dyn Held + 'a>);

/// What a backend holds for a [`UserLock`]: it applies the holder's
/// commits, each only while the lock is still held.
pub trait Held {
    /// Applies `commit` as [`Store::commit`] does, if the lock is still
    /// held; if it was lost (a database session ended under it), refuses
    /// it with [`StoreError::Unavailable`] and writes nothing. The lock
    /// stays held.
    fn commit(&mut self, commit: Commit) -> Result<Durable, StoreError>;
    /// The same, then releases the lock, not before the commit is visible
    /// (the last commit of a request). On an error the lock is released
    /// as well.
    fn commit_and_release(self: Box<Self>, commit: Commit) -> Result<Durable, StoreError>;
}

impl<'a> UserLock<'a> {
    /// A lock held by `held` until it drops.
    pub fn new(held: impl Held + 'a) -> UserLock<'a> {
        UserLock(Box::new(held))
    }

    /// Applies `commit` under the lock, which stays held: refused
    /// ([`StoreError::Unavailable`], nothing written) if the lock was lost
    /// meanwhile. See [`Held::commit`].
    pub fn commit(&mut self, commit: Commit) -> Result<Durable, StoreError> {
        self.0.commit(commit)
    }

    /// Applies `commit` under the lock, then releases it (see
    /// [`Held::commit_and_release`]).
    pub fn commit_and_release(self, commit: Commit) -> Result<Durable, StoreError> {
        self.0.commit_and_release(commit)
    }
}

/// A user's lock and what was read under it ([`Store::lock_user_and_read`]).
pub struct Locked<'a> {
    /// The lock.
    pub lock: UserLock<'a>,
    /// The named flow's record body, if it is stored.
    pub flow: Option<Vec<u8>>,
    /// The user's lockout history.
    pub lockout: Option<Vec<u8>>,
}

impl std::fmt::Debug for Locked<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Locked")
            .field("flow", &self.flow.as_ref().map(Vec::len))
            .field("lockout", &self.lockout.as_ref().map(Vec::len))
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for UserLock<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UserLock")
    }
}

/// The store port the rest of the gateway uses. See the module
/// documentation for what every implementation promises.
pub trait Store: Send + Sync + 'static {
    /// The backend's name (`sled`, `postgres`).
    fn backend(&self) -> &'static str;
    /// Where the data is: a folder, or a URL without its password.
    fn location(&self) -> String;
    /// The version of the stored data's format (schema).
    fn schema_version(&self) -> Result<u32, StoreError>;

    /// Whether the store can serve requests now: what `/readyz` reports.
    /// Cheap enough for a load balancer's probes (a backend behind a
    /// network reuses its last answer for a moment); blocking.
    /// [`StoreError::Unavailable`] while the backend cannot be reached,
    /// [`StoreError::Closed`] once closed.
    fn ready(&self) -> Result<(), StoreError>;

    /// Serialises the requests of `user` (a hashed user key): returns once
    /// no other holder of the same key, in any gateway on this store, holds
    /// it; the lock is released when the result drops. Blocking; inside a
    /// request worker the wait is announced with `workers::waiting`.
    fn lock_user(&self, user: &str) -> Result<UserLock<'_>, StoreError>;

    /// [`Store::lock_user`], then the flow `flow` (if named) and `user`'s
    /// lockout history as they are once the lock is granted: what a
    /// request reads first. A backend behind a network takes the lock and
    /// reads in one round trip.
    fn lock_user_and_read(&self, user: &str, flow: Option<&str>) -> Result<Locked<'_>, StoreError> {
        let lock = self.lock_user(user)?;
        let flow = match flow {
            Some(id) => self.flow(id)?,
            None => None,
        };
        let lockout = self.lockout(user)?;
        Ok(Locked {
            lock,
            flow,
            lockout,
        })
    }

    /// The flow `id`'s record body.
    fn flow(&self, id: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// Flows due at `now_ms` (their `due_ms` ≤ `now_ms`), in (due, id)
    /// order, after `after`, at most `limit`.
    fn flows_due(
        &self,
        now_ms: u64,
        after: Option<(u64, String)>,
        limit: usize,
    ) -> Result<Vec<(u64, String)>, StoreError>;
    /// The workflow versions flows in progress run on.
    fn versions_in_progress(&self) -> Result<BTreeSet<String>, StoreError>;
    /// A user's lockout history.
    fn lockout(&self, user: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// A user's enrollment for `gate`.
    fn enrollment(&self, user: &str, gate: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// The value under `key` in `namespace`.
    fn kv_get(&self, namespace: &str, key: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// Keys and values of `namespace` starting with `prefix`, in byte order
    /// of the key, at most `limit`.
    fn kv_scan(
        &self,
        namespace: &str,
        prefix: &str,
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError>;

    /// The keys of `namespace` starting with `prefix`, in byte order, at
    /// most `limit`, without their values.
    fn kv_keys(
        &self,
        namespace: &str,
        prefix: &str,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        Ok(self
            .kv_scan(namespace, prefix, limit)?
            .into_iter()
            .map(|(k, _)| k)
            .collect())
    }

    /// Applies `commit` all or nothing; returns once it is visible, with the
    /// [`Durable`] to wait on before reporting it.
    fn commit(&self, commit: Commit) -> Result<Durable, StoreError>;

    /// Leases up to `limit` items of `queue` due at `now_ms` and not leased
    /// (or whose lease ended) to the caller until `now_ms + lease_ms`,
    /// earliest due first. Durable when it returns.
    fn claim_due(
        &self,
        queue: Queue,
        now_ms: u64,
        lease_ms: u64,
        limit: usize,
    ) -> Result<Vec<Claim>, StoreError>;

    /// Hands every stored record to `visit`, repository by repository (the
    /// audit log last, in chain order), as of one moment: no commit is
    /// seen in part, and the audit log ends where it ended then (a backup
    /// of a running gateway).
    fn export(
        &self,
        visit: &mut (dyn FnMut(Item) -> Result<(), StoreError> + Send),
    ) -> Result<(), StoreError>;
    /// Stores `items` as they are (audit entries keep their chain, sequence
    /// numbers and hashes); durable when it returns. For copying a store
    /// into an empty one.
    fn import(&self, items: Vec<Item>) -> Result<(), StoreError>;

    /// The audit log.
    fn audit(&self) -> &dyn AuditLog;

    /// How long commits take to become durable, if the backend measures it.
    fn commit_latency(&self) -> Option<&crate::metrics::Histogram> {
        None
    }
    /// Refuses new work, lets applied commits become durable and releases
    /// the backend's resources. Closing again does nothing.
    fn close(&self);
}

/// The audit log: hash-chained records, appended with commits.
pub trait AuditLog: Send + Sync {
    /// Appends records with no other change; durable when the result
    /// resolves.
    fn append(&self, records: Vec<AuditRecord>) -> Result<Durable, StoreError>;
    /// Entries from global position `from` (0 = the first), in the order
    /// they were appended (across every chain), at most `limit`.
    fn entries(&self, from: u64, limit: usize) -> Result<Vec<AuditEntry>, StoreError>;
    /// Verifies every chain.
    fn verify(&self) -> Result<AuditSummary, AuditError>;
    /// The entries `query` selects, in the order they were appended (by
    /// position), after `query.after`, at most `query.limit`.
    ///
    /// This default reads the whole log; backends answer a query by user
    /// from an index.
    fn query(&self, query: &AuditQuery) -> Result<Vec<AuditEntry>, StoreError> {
        scan_query(self, query)
    }
}

/// Answers `query` by reading the log from `query.after` on (what a
/// query without a user costs on every backend).
pub fn scan_query<L: AuditLog + ?Sized>(
    log: &L,
    query: &AuditQuery,
) -> Result<Vec<AuditEntry>, StoreError> {
    let mut found = Vec::new();
    let mut from = query.after.map_or(0, |p| p.saturating_add(1));
    while found.len() < query.limit {
        let page = log.entries(from, 1024)?;
        let Some(last) = page.last() else { break };
        from = last.position.saturating_add(1);
        found.extend(
            page.into_iter()
                .filter(|e| query.after.is_none_or(|a| e.position > a) && query.selects(e)),
        );
    }
    found.truncate(query.limit);
    Ok(found)
}

/// Which audit entries to read ([`AuditLog::query`]); every filter that is
/// set must match.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuditQuery {
    /// Only entries about this user key.
    pub user: Option<String>,
    /// Only entries of one of these kinds (`flow.started`, ...); empty: any.
    pub kinds: Vec<String>,
    /// Only entries at or after this time (ms since the Unix epoch).
    pub from_ms: Option<u64>,
    /// Only entries before this time (ms since the Unix epoch).
    pub to_ms: Option<u64>,
    /// Only entries after this position (the last one of the previous page).
    pub after: Option<u64>,
    /// At most this many entries.
    pub limit: usize,
}

impl AuditQuery {
    /// Whether `entry` passes every filter but `after` and `limit`.
    pub fn selects(&self, entry: &AuditEntry) -> bool {
        let record = &entry.record;
        self.user
            .as_ref()
            .is_none_or(|u| record.user.as_ref() == Some(u))
            && (self.kinds.is_empty() || self.kinds.contains(&record.kind))
            && self.from_ms.is_none_or(|t| record.at_ms >= t)
            && self.to_ms.is_none_or(|t| record.at_ms < t)
    }
}

/// Which backend to open, and where.
#[derive(Clone, Debug)]
pub enum StoreSpec {
    /// sled in `<dir>/db` (the default: nothing to install).
    Sled {
        /// The data folder.
        dir: PathBuf,
    },
    /// PostgreSQL (several gateways may share it).
    Postgres(PostgresSpec),
}

impl StoreSpec {
    /// Where, without a password.
    pub fn location(&self) -> String {
        match self {
            StoreSpec::Sled { dir } => dir.join("db").display().to_string(),
            StoreSpec::Postgres(spec) => spec.location(),
        }
    }
}

/// How to reach a PostgreSQL store.
#[derive(Clone, Debug)]
pub struct PostgresSpec {
    /// `postgres://USER@HOST:PORT/DATABASE` (never with a password).
    pub url: String,
    /// The password, from a named secret.
    pub password: Option<crate::secret::Secret>,
    /// TLS to the server.
    pub tls: PgTls,
    /// Connections for reads and commits (advisory locks use a pool of
    /// their own).
    pub pool: u32,
    /// This gateway's name: it names the gateway's audit chains.
    pub node: String,
}

impl PostgresSpec {
    /// The URL without any password.
    pub fn location(&self) -> String {
        match self.url.split_once("://") {
            Some((scheme, rest)) => match rest.split_once('@') {
                Some((user, host)) => {
                    let user = user.split(':').next().unwrap_or_default();
                    format!("{scheme}://{user}@{host}")
                }
                None => self.url.clone(),
            },
            None => self.url.clone(),
        }
    }
}

/// TLS settings for PostgreSQL.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PgTls {
    /// Whether and how TLS is used.
    pub mode: PgTlsMode,
    /// CA certificates (PEM) to verify the server against; the operating
    /// system's roots without it.
    pub ca_file: Option<PathBuf>,
}

/// Whether and how TLS to PostgreSQL is used.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PgTlsMode {
    /// Plain TCP (loopback, or with `insecure: true`).
    Disable,
    /// TLS without checking the certificate.
    Require,
    /// TLS, the certificate checked against the CA and the host name.
    #[default]
    VerifyFull,
}

/// Opens the store `spec` names (creating it, and applying migrations).
pub fn open(spec: &StoreSpec) -> Result<Arc<dyn Store>, StoreError> {
    Ok(match spec {
        StoreSpec::Sled { dir } => Arc::new(SledStore::open(dir)?),
        StoreSpec::Postgres(spec) => Arc::new(postgres::PostgresStore::open(spec)?),
    })
}

/// The schema version the store `spec` names holds, read without
/// migrating it (`resetgate store migrate` prints it before [`open`]
/// migrates): `None` when the store has not been created yet.
pub fn stored_schema(spec: &StoreSpec) -> Result<Option<u32>, StoreError> {
    match spec {
        StoreSpec::Sled { dir } => SledStore::stored_schema(dir),
        StoreSpec::Postgres(spec) => postgres::PostgresStore::stored_schema(spec),
    }
}

/// Writes that are visible but perhaps not yet on disk. Wait for it —
/// [`Durable::wait`] on a thread, or `.await` — before reporting them.
#[must_use = "writes are not durable until this resolves"]
pub struct Durable(DurableState);

/// What a backend that makes writes durable later (group commit) hands a
/// [`Durable`] to wait on.
pub trait Pending: Send {
    /// Blocks until the writes are durable; the result.
    fn wait(&mut self) -> Result<(), StoreError>;
    /// The same, as a poll: registers `cx`'s waker when not yet done.
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), StoreError>>;
}

enum DurableState {
    Done(Option<Result<(), StoreError>>),
    Pending(Box<dyn Pending>),
}

impl Durable {
    /// Already durable (or nothing was written).
    pub fn ready() -> Durable {
        Durable(DurableState::Done(Some(Ok(()))))
    }

    /// Durable once `pending` resolves.
    pub fn pending(pending: Box<dyn Pending>) -> Durable {
        Durable(DurableState::Pending(pending))
    }

    /// Blocks the thread until the writes are durable.
    pub fn wait(self) -> Result<(), StoreError> {
        match self.0 {
            DurableState::Done(result) => result.unwrap_or(Ok(())),
            DurableState::Pending(mut pending) => crate::workers::waiting(|| pending.wait()),
        }
    }
}

impl Future for Durable {
    type Output = Result<(), StoreError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        match &mut this.0 {
            DurableState::Done(result) => Poll::Ready(result.take().unwrap_or(Ok(()))),
            DurableState::Pending(pending) => {
                let polled = pending.poll(cx);
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
            DurableState::Pending(_) => f.write_str("Durable(pending)"),
        }
    }
}
