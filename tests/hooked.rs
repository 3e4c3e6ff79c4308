//! A store in front of another that tells hooks what passes through it:
//! how the tests count a request's reads and writes, or stop a commit, with
//! nothing of it in the gateway (the runtime knows only the port).

use std::collections::BTreeSet;
use std::sync::Arc;

use resetgate::store::{
    AuditLog, Claim, Commit, Durable, Held, Item, Queue, Store, StoreError, UserLock,
};

/// What a [`Hooked`] store tells.
pub trait Hooks: Send + Sync + 'static {
    /// A read of `repository` (`flows`, `lockout`, `enrollments`, `kv`)
    /// with a key of `key_len` bytes.
    fn read(&self, _repository: &'static str, _key_len: usize) {}
    /// A commit, before it reaches the store.
    fn commit(&self, _commit: &Commit) {}
}

/// `inner`, telling `hooks` what passes.
pub struct Hooked<H> {
    /// The store behind.
    pub inner: Arc<dyn Store>,
    /// Who is told.
    pub hooks: H,
}

impl<H: Hooks> Store for Hooked<H> {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }
    fn location(&self) -> String {
        self.inner.location()
    }
    fn schema_version(&self) -> Result<u32, StoreError> {
        self.inner.schema_version()
    }
    fn ready(&self) -> Result<(), StoreError> {
        self.inner.ready()
    }
    fn lock_user(&self, user: &str) -> Result<UserLock<'_>, StoreError> {
        Ok(UserLock::new(HookedLock {
            hooks: &self.hooks,
            inner: self.inner.lock_user(user)?,
        }))
    }
    fn flow(&self, id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.hooks.read("flows", id.len());
        self.inner.flow(id)
    }
    fn flows_due(
        &self,
        now_ms: u64,
        after: Option<(u64, String)>,
        limit: usize,
    ) -> Result<Vec<(u64, String)>, StoreError> {
        self.inner.flows_due(now_ms, after, limit)
    }
    fn versions_in_progress(&self) -> Result<BTreeSet<String>, StoreError> {
        self.inner.versions_in_progress()
    }
    fn lockout(&self, user: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.hooks.read("lockout", user.len());
        self.inner.lockout(user)
    }
    fn enrollment(&self, user: &str, gate: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.hooks.read("enrollments", user.len() + 1 + gate.len());
        self.inner.enrollment(user, gate)
    }
    fn kv_get(&self, namespace: &str, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.hooks.read("kv", namespace.len() + 1 + key.len());
        self.inner.kv_get(namespace, key)
    }
    fn kv_scan(
        &self,
        namespace: &str,
        prefix: &str,
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        self.inner.kv_scan(namespace, prefix, limit)
    }
    fn kv_keys(
        &self,
        namespace: &str,
        prefix: &str,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        self.inner.kv_keys(namespace, prefix, limit)
    }
    fn commit(&self, commit: Commit) -> Result<Durable, StoreError> {
        self.hooks.commit(&commit);
        self.inner.commit(commit)
    }
    fn claim_due(
        &self,
        queue: Queue,
        now_ms: u64,
        lease_ms: u64,
        limit: usize,
    ) -> Result<Vec<Claim>, StoreError> {
        self.inner.claim_due(queue, now_ms, lease_ms, limit)
    }
    fn export(
        &self,
        visit: &mut (dyn FnMut(Item) -> Result<(), StoreError> + Send),
    ) -> Result<(), StoreError> {
        self.inner.export(visit)
    }
    fn import(&self, items: Vec<Item>) -> Result<(), StoreError> {
        self.inner.import(items)
    }
    fn audit(&self) -> &dyn AuditLog {
        self.inner.audit()
    }
    fn close(&self) {
        self.inner.close()
    }
}

/// A user's lock of the store behind, telling the hooks of the commits
/// made through it.
struct HookedLock<'a, H> {
    hooks: &'a H,
    inner: UserLock<'a>,
}

impl<H: Hooks> Held for HookedLock<'_, H> {
    fn commit(&mut self, commit: Commit) -> Result<Durable, StoreError> {
        self.hooks.commit(&commit);
        self.inner.commit(commit)
    }

    fn commit_and_release(self: Box<Self>, commit: Commit) -> Result<Durable, StoreError> {
        self.hooks.commit(&commit);
        self.inner.commit_and_release(commit)
    }
}

/// Every flow record's body in `store`, in the order the store exports
/// them.
pub fn flow_bodies(store: &dyn Store) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    store
        .export(&mut |item| {
            if let Item::Flow(r) = item {
                out.push(r.body);
            }
            Ok(())
        })
        .expect("the store exports");
    out
}

/// Every audit entry of `store`, in global order.
pub fn audit_entries(store: &dyn Store) -> Vec<resetgate::store::AuditEntry> {
    store
        .audit()
        .entries(0, usize::MAX)
        .expect("the audit log reads")
}
