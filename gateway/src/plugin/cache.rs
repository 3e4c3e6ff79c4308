//! On-disk cache of precompiled components, keyed by the component's sha256
//! and the engine's compatibility hash, so a restart loads plugins by mmap
//! instead of compiling them.

use std::fs;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use wasmtime::Engine;
use wasmtime::component::Component;

use super::error::LoadError;

/// The precompiled-artifact cache of one engine.
pub struct Cache {
    dir: PathBuf,
    engine_key: String,
    compiles: AtomicU64,
    hits: AtomicU64,
}

impl Cache {
    /// A cache in `dir` (created if missing) for `engine`.
    pub fn new(dir: PathBuf, engine: &Engine) -> Result<Cache, LoadError> {
        fs::create_dir_all(&dir).map_err(|e| LoadError::Cache {
            path: dir.clone(),
            reason: e.to_string(),
        })?;
        let mut h = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        let engine_key = format!("{:016x}", h.finish());
        Ok(Cache {
            dir,
            engine_key,
            compiles: AtomicU64::new(0),
            hits: AtomicU64::new(0),
        })
    }

    /// How many components were compiled, and how many came from the cache.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.compiles.load(Ordering::Relaxed),
            self.hits.load(Ordering::Relaxed),
        )
    }

    fn path_for(&self, sha256: &str) -> PathBuf {
        self.dir.join(format!("{sha256}-{}.cwasm", self.engine_key))
    }

    /// The component for `bytes` (whose hash is `sha256`), from the cache or
    /// compiled and then stored.
    pub fn load(
        &self,
        engine: &Engine,
        source: &Path,
        bytes: &[u8],
        sha256: &str,
    ) -> Result<Component, LoadError> {
        let path = self.path_for(sha256);
        if path.exists() {
            // SAFETY: the file is an artifact this cache wrote with
            // `precompile_component` of an engine with the same compatibility
            // hash (part of the name), written to a temporary name and renamed
            // into place, so it is complete. The cache folder is the gateway's
            // own and must not be writable by others (like its data folder).
            #[allow(unsafe_code)]
            let loaded = unsafe { Component::deserialize_file(engine, &path) };
            match loaded {
                Ok(component) => {
                    self.hits.fetch_add(1, Ordering::Relaxed);
                    return Ok(component);
                }
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "discarding unusable cached plugin artifact");
                    let _ = fs::remove_file(&path);
                }
            }
        }
        let compiled = engine
            .precompile_component(bytes)
            .map_err(|e| LoadError::Compile {
                path: source.to_owned(),
                reason: format!("{e:#}"),
            })?;
        self.compiles.fetch_add(1, Ordering::Relaxed);
        let tmp = self
            .dir
            .join(format!(".{sha256}.{}.tmp", std::process::id()));
        fs::write(&tmp, &compiled)
            .and_then(|()| fs::rename(&tmp, &path))
            .map_err(|e| LoadError::Cache {
                path: path.clone(),
                reason: e.to_string(),
            })?;
        // SAFETY: as above; we just wrote this artifact.
        #[allow(unsafe_code)]
        let component = unsafe { Component::deserialize_file(engine, &path) }.map_err(|e| {
            LoadError::Cache {
                path: path.clone(),
                reason: format!("{e:#}"),
            }
        })?;
        Ok(component)
    }
}
