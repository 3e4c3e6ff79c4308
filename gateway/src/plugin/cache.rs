//! On-disk cache of precompiled components, keyed by the component's sha256
//! and the engine's compatibility hash, so a restart loads plugins by mmap
//! instead of compiling them.
//!
//! A cached artifact is loaded as native code, so the folder must be the
//! gateway's own: it is created with mode 0700, and an existing folder is
//! refused unless it is owned by the gateway's user and writable by nobody
//! else. A host without a folder (`resetgate plugin inspect`) compiles in
//! memory and writes nothing.

use std::fs;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use wasmtime::Engine;
use wasmtime::component::Component;

use super::error::LoadError;

/// The precompiled-artifact cache of one engine.
pub struct Cache {
    /// `None`: compile in memory, cache nothing.
    dir: Option<PathBuf>,
    engine_key: String,
    compiles: AtomicU64,
    hits: AtomicU64,
}

impl Cache {
    /// A cache in `dir` (created if missing, mode 0700) for `engine`, or
    /// none at all.
    pub fn new(dir: Option<PathBuf>, engine: &Engine) -> Result<Cache, LoadError> {
        if let Some(dir) = &dir {
            prepare_dir(dir)?;
        }
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

    fn path_for(&self, dir: &Path, sha256: &str) -> PathBuf {
        dir.join(format!("{sha256}-{}.cwasm", self.engine_key))
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
        let Some(dir) = &self.dir else {
            self.compiles.fetch_add(1, Ordering::Relaxed);
            return Component::new(engine, bytes).map_err(|e| LoadError::Compile {
                path: source.to_owned(),
                reason: format!("{e:#}"),
            });
        };
        let path = self.path_for(dir, sha256);
        if path.exists() {
            // SAFETY: the file is an artifact this cache wrote with
            // `precompile_component` of an engine with the same compatibility
            // hash (part of the name), written to a temporary name and renamed
            // into place, so it is complete. The cache folder is the gateway's
            // own and writable by nobody else (`prepare_dir` checked).
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
        let tmp = dir.join(format!(".{sha256}.{}.tmp", std::process::id()));
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

/// Creates the cache folder (mode 0700) if missing; refuses one that is not
/// a folder, not owned by this process's user, or writable by group or others.
fn prepare_dir(dir: &Path) -> Result<(), LoadError> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
    let refuse = |reason: String| LoadError::Cache {
        path: dir.to_owned(),
        reason,
    };
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| refuse(e.to_string()))?;
    let meta = fs::metadata(dir).map_err(|e| refuse(e.to_string()))?;
    if !meta.is_dir() {
        return Err(refuse("it is not a folder".to_owned()));
    }
    let me = rustix::process::geteuid().as_raw();
    if meta.uid() != me {
        return Err(refuse(format!(
            "it is owned by user {} but the gateway runs as user {me}; precompiled plugins are \
             loaded as native code, so the folder must be the gateway's own: remove it or \
             `chown` it to the gateway's user",
            meta.uid()
        )));
    }
    let mode = meta.permissions().mode();
    if mode & 0o022 != 0 {
        return Err(refuse(format!(
            "it is writable by group or others (mode {:o}); precompiled plugins are loaded as \
             native code: `chmod go-w` it",
            mode & 0o7777
        )));
    }
    Ok(())
}
