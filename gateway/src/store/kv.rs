//! Plugins' key-value namespaces (the `kv` capability), in the store's kv
//! repository.
//!
//! A namespace is a plugin's name as workflows reference it (`NAME` of
//! `<plugins>/NAME.wasm`), so every workflow that uses the plugin sees the
//! same keys, and so do admin tools such as `resetgate users`. A namespace
//! never contains 0x00 (backends may store a key as namespace, 0x00, key).
//!
//! The bounds of the capability ([`MAX_KEY`], [`MAX_VALUE`], [`MAX_LIST`])
//! are checked here, for the plugin host and the admin tools alike. Values
//! may be secret-adjacent (password hashes): no error here carries one.

use std::fmt;
use std::sync::Arc;

use super::{Change, Commit, Durable, Store, StoreError};

/// The longest key (and `keys` prefix), in bytes.
pub const MAX_KEY: usize = 256;
/// The largest value, in bytes.
pub const MAX_VALUE: usize = 64 * 1024;
/// The most keys one `keys` call returns.
pub const MAX_LIST: u32 = 1000;
/// The longest namespace, in bytes.
pub const MAX_NAMESPACE: usize = 128;

/// Why a key-value operation was refused or failed. Never carries a value.
#[derive(Debug, thiserror::Error)]
pub enum KvError {
    /// The namespace is empty, too long or contains a NUL byte.
    #[error(
        "kv namespace {namespace:?} is invalid: it must be 1 to {MAX_NAMESPACE} bytes without NUL"
    )]
    BadNamespace {
        /// The namespace asked for.
        namespace: String,
    },
    /// A key or prefix longer than [`MAX_KEY`].
    #[error("kv key is {len} bytes; the limit is {MAX_KEY}")]
    KeyTooLong {
        /// Its length in bytes.
        len: usize,
    },
    /// A value larger than [`MAX_VALUE`].
    #[error("kv value is {len} bytes; the limit is {MAX_VALUE}")]
    ValueTooLarge {
        /// Its length in bytes.
        len: usize,
    },
    /// A `keys` call asked for more than [`MAX_LIST`] keys.
    #[error("kv keys asked for up to {limit} keys; the limit is {MAX_LIST} per call")]
    TooManyKeys {
        /// What was asked for.
        limit: u32,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// One namespace of the kv repository over a store; cheap to clone.
#[derive(Clone)]
pub struct Kv {
    store: Arc<dyn Store>,
    namespace: Arc<str>,
}

impl fmt::Debug for Kv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Kv")
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

/// Whether `namespace` may name a key-value namespace.
pub fn valid_namespace(namespace: &str) -> bool {
    !namespace.is_empty() && namespace.len() <= MAX_NAMESPACE && !namespace.contains('\0')
}

fn check_key(key: &str) -> Result<(), KvError> {
    if key.len() > MAX_KEY {
        return Err(KvError::KeyTooLong { len: key.len() });
    }
    Ok(())
}

impl Kv {
    /// The namespace `namespace` of `store`'s kv repository.
    pub fn new(store: Arc<dyn Store>, namespace: &str) -> Result<Kv, KvError> {
        if !valid_namespace(namespace) {
            return Err(KvError::BadNamespace {
                namespace: namespace.chars().take(MAX_NAMESPACE).collect(),
            });
        }
        Ok(Kv {
            store,
            namespace: Arc::from(namespace),
        })
    }

    /// The namespace's name.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The value under `key`, if any.
    pub fn get(&self, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        check_key(key)?;
        Ok(self.store.kv_get(&self.namespace, key)?)
    }

    /// Stores `value` under `key`; durable when it returns.
    pub fn set(&self, key: &str, value: Vec<u8>) -> Result<(), KvError> {
        Ok(self.stage_set(key, value)?.wait()?)
    }

    /// Stores `value` under `key` and returns once it is applied, with the
    /// [`Durable`] to wait on before saying it is stored.
    pub fn stage_set(&self, key: &str, value: Vec<u8>) -> Result<Durable, KvError> {
        check_key(key)?;
        if value.len() > MAX_VALUE {
            return Err(KvError::ValueTooLarge { len: value.len() });
        }
        let change = Change::PutKv {
            namespace: self.namespace.to_string(),
            key: key.to_owned(),
            value,
        };
        Ok(self.store.commit(Commit {
            changes: vec![change],
            audit: Vec::new(),
        })?)
    }

    /// Removes `key`; whether it existed. Durable when it returns.
    ///
    /// The check and the removal are two steps: a concurrent writer of the
    /// same key may make the answer stale (the removal itself is not lost).
    pub fn delete(&self, key: &str) -> Result<bool, KvError> {
        let (existed, durable) = self.stage_delete(key)?;
        durable.wait()?;
        Ok(existed)
    }

    /// Like [`delete`](Kv::delete), returning once applied, with the
    /// [`Durable`] to wait on.
    pub fn stage_delete(&self, key: &str) -> Result<(bool, Durable), KvError> {
        check_key(key)?;
        if self.store.kv_get(&self.namespace, key)?.is_none() {
            return Ok((false, Durable::ready()));
        }
        let change = Change::DeleteKv {
            namespace: self.namespace.to_string(),
            key: key.to_owned(),
        };
        let durable = self.store.commit(Commit {
            changes: vec![change],
            audit: Vec::new(),
        })?;
        Ok((true, durable))
    }

    /// Keys that start with `prefix`, in byte order, at most `limit`
    /// (at most [`MAX_LIST`]).
    pub fn keys(&self, prefix: &str, limit: u32) -> Result<Vec<String>, KvError> {
        check_key(prefix)?;
        if limit > MAX_LIST {
            return Err(KvError::TooManyKeys { limit });
        }
        Ok(self
            .store
            .kv_keys(&self.namespace, prefix, limit as usize)?)
    }

    /// Keys and values that start with `prefix`, in byte order, at most
    /// `limit` (for admin tools; not bounded by [`MAX_LIST`]).
    pub fn entries(&self, prefix: &str, limit: usize) -> Result<Vec<(String, Vec<u8>)>, KvError> {
        check_key(prefix)?;
        Ok(self.store.kv_scan(&self.namespace, prefix, limit)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SledStore;

    fn kv(store: &Arc<SledStore>, ns: &str) -> Kv {
        Kv::new(store.clone(), ns).unwrap()
    }

    #[test]
    fn namespaces_do_not_see_each_other() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(SledStore::open(dir.path()).unwrap());
        let a = kv(&store, "local-users");
        // A namespace that is a prefix of the other, and one that extends it.
        let b = kv(&store, "local");
        let c = kv(&store, "local-users2");
        a.set("user/alice", b"1".to_vec()).unwrap();
        b.set("-users\0user/alice", b"2".to_vec()).unwrap();
        c.set("user/bob", b"3".to_vec()).unwrap();
        assert_eq!(a.keys("", 1000).unwrap(), ["user/alice"]);
        assert_eq!(a.get("user/bob").unwrap(), None);
        assert_eq!(b.keys("", 1000).unwrap(), ["-users\0user/alice"]);
        assert_eq!(c.keys("user/", 1000).unwrap(), ["user/bob"]);
        assert!(a.delete("user/alice").unwrap());
        assert!(!a.delete("user/alice").unwrap());
        assert_eq!(b.get("-users\0user/alice").unwrap(), Some(b"2".to_vec()));
    }

    #[test]
    fn bounds_are_enforced() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(SledStore::open(dir.path()).unwrap());
        let a = kv(&store, "p");
        let long = "k".repeat(MAX_KEY + 1);
        assert!(matches!(a.get(&long), Err(KvError::KeyTooLong { len }) if len == MAX_KEY + 1));
        assert!(matches!(
            a.set("k", vec![0; MAX_VALUE + 1]),
            Err(KvError::ValueTooLarge { .. })
        ));
        a.set(&"k".repeat(MAX_KEY), vec![0; MAX_VALUE]).unwrap();
        assert!(matches!(
            a.keys("", MAX_LIST + 1),
            Err(KvError::TooManyKeys { .. })
        ));
        assert!(a.keys("", 0).unwrap().is_empty());
        assert!(Kv::new(store.clone(), "").is_err());
        assert!(Kv::new(store.clone(), "a\0b").is_err());
        let err = a.set("k", vec![7; MAX_VALUE + 1]).unwrap_err().to_string();
        assert_eq!(err, "kv value is 65537 bytes; the limit is 65536");
    }
}
