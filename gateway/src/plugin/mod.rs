//! The plugin host: loads WebAssembly components, checks them against the
//! contract and their grants, and calls them in fresh, limited instances.
//!
//! This is the only module that names `wasmtime`.
//!
//! A call never reuses an instance: the calling thread instantiates the
//! component (linked ahead of time, in a slot of the pooling allocator),
//! calls it under its limits, and drops the store, all on its own thread.
//! (Warm instances made ahead by one thread and spent stores dropped by
//! another made a lone call's wait a few microseconds shorter but cost a
//! third of the CPU under load: every allocation crossed threads and cores.
//! See `BENCHMARKS.md`.)

mod bindings;
mod cache;
mod calls;
mod error;
mod grants;
mod state;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, HasSelf, Linker, Resource, ResourceType};
use wasmtime::{
    Config, Enabled, Engine, InstanceAllocationStrategy, PoolConcurrencyLimitError,
    PoolingAllocationConfig, Store, Trap,
};

pub use calls::{DirectoryCalls, GateCalls, LockoutCalls, SyncTargetCalls, VpnHookCalls};
pub use error::{CallError, LoadError};
pub use grants::{Capability, Grants};
pub use state::{SlowHashError, hash_secret, verify_secret};

use crate::contract::{CONTRACT_VERSION, PluginInfo, PluginKind};
use crate::store::Store as DataStore;
use crate::store::kv::{self, Kv};
use bindings::base::resetgate::plugin as wit;
use state::HostState;

/// One epoch tick; wall-time limits are counted in ticks.
const TICK: Duration = Duration::from_millis(10);
/// How long a call waits for a free instance slot before it fails.
const POOL_WAIT: Duration = Duration::from_millis(500);
/// The largest `.wasm` file the host reads.
const MAX_COMPONENT_BYTES: u64 = 64 * 1024 * 1024;

/// How the host is set up. One host serves every plugin of a gateway.
#[derive(Clone, Debug)]
pub struct HostConfig {
    /// Where precompiled components are cached.
    pub cache_dir: PathBuf,
    /// Instance slots in the pooling allocator: calls in progress at once.
    pub max_instances: u32,
    /// The most linear memory any plugin may be given.
    pub max_memory: usize,
    /// Linear memory kept resident between uses of a slot (memset instead
    /// of madvise: much faster reuse, and no madvise contention between threads).
    pub keep_resident: usize,
    /// The wasm stack of every call.
    pub max_stack: usize,
}

impl HostConfig {
    /// Defaults with the cache in `cache_dir`.
    pub fn new(cache_dir: impl Into<PathBuf>) -> Self {
        HostConfig {
            cache_dir: cache_dir.into(),
            max_instances: 1000,
            max_memory: 64 << 20,
            keep_resident: 2 << 20,
            max_stack: 512 << 10,
        }
    }
}

/// Limits of one plugin's calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Wall time of one call (counted in 10 ms ticks, rounded up).
    pub wall_time: Duration,
    /// Linear memory.
    pub memory: usize,
    /// Size of what one call returns (strings and byte lists, summed).
    pub output: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            wall_time: Duration::from_secs(1),
            memory: 64 << 20,
            output: 1 << 20,
        }
    }
}

/// What a step needs of a plugin when loading it.
#[derive(Clone, Debug, Default)]
pub struct LoadSpec {
    /// The kind the step needs; `None` accepts any.
    pub kind: Option<PluginKind>,
    /// What the step grants.
    pub grants: Grants,
    /// Limits of each call.
    pub limits: Limits,
}

/// What `resetgate plugin inspect` shows.
#[derive(Clone, Debug)]
pub struct Inspection {
    /// What the plugin says about itself.
    pub info: PluginInfo,
    /// sha256 of the `.wasm` file, hex.
    pub sha256: String,
    /// Every interface the component imports.
    pub imports: Vec<String>,
    /// The grants those imports need.
    pub needs: Vec<Capability>,
}

/// Counters of the host's work, for tests and metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HostStats {
    /// Components compiled (cache misses).
    pub compiles: u64,
    /// Components loaded from the precompiled cache.
    pub cache_hits: u64,
    /// Calls made.
    pub calls: u64,
    /// Calls that failed with a [`CallError`].
    pub failures: u64,
}

/// The plugin host; cheap to clone.
#[derive(Clone)]
pub struct PluginHost {
    inner: Arc<HostInner>,
}

struct HostInner {
    shared: Arc<Shared>,
    linker: Linker<HostState>,
    cache: cache::Cache,
    config: HostConfig,
}

/// What the host and every plugin it loaded share. The epoch ticker holds
/// it only weakly, so it never keeps the host alive.
struct Shared {
    engine: Engine,
    calls: AtomicU64,
    failures: AtomicU64,
    /// The store behind the `kv` capability, once the host is given one.
    kv_store: std::sync::OnceLock<Arc<dyn DataStore>>,
}

impl PluginHost {
    /// Starts a host: the engine and the epoch ticker.
    pub fn new(config: HostConfig) -> Result<PluginHost, LoadError> {
        let mut pool = PoolingAllocationConfig::new();
        pool.total_component_instances(config.max_instances)
            .total_core_instances(config.max_instances * 4)
            .total_memories(config.max_instances * 2)
            .total_tables(config.max_instances * 4)
            .total_stacks(0)
            .max_memory_size(config.max_memory)
            .max_memories_per_component(2)
            .max_tables_per_component(4)
            .linear_memory_keep_resident(config.keep_resident)
            .table_keep_resident(64 << 10)
            // Reset only the pages a call dirtied (Linux 6.7+), not the whole
            // resident prefix: most of a drop's cost otherwise.
            .pagemap_scan(Enabled::Auto);
        let mut wasm = Config::new();
        wasm.wasm_component_model(true)
            .epoch_interruption(true)
            .max_wasm_stack(config.max_stack)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&wasm).map_err(|e| LoadError::Cache {
            path: config.cache_dir.clone(),
            reason: format!("cannot create the wasm engine: {e:#}"),
        })?;
        let linker = Self::linker(&engine).map_err(|e| LoadError::Link {
            plugin: "(host)".into(),
            reason: format!("{e:#}"),
        })?;
        let cache = cache::Cache::new(config.cache_dir.clone(), &engine)?;

        let shared = Arc::new(Shared {
            engine,
            calls: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            kv_store: std::sync::OnceLock::new(),
        });
        // Epochs tick for as long as anything (host or plugin) is alive.
        let ticking = Arc::downgrade(&shared);
        spawn("plugin-epoch", move || {
            loop {
                std::thread::sleep(TICK);
                match ticking.upgrade() {
                    Some(shared) => shared.engine.increment_epoch(),
                    None => break,
                }
            }
        });
        Ok(PluginHost {
            inner: Arc::new(HostInner {
                shared,
                linker,
                cache,
                config,
            }),
        })
    }

    /// The linker every plugin is linked with: WASI configured with nothing,
    /// and the capabilities the host implements.
    fn linker(engine: &Engine) -> wasmtime::Result<Linker<HostState>> {
        let mut linker = Linker::new(engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
        wit::log::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)?;
        wit::clock::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)?;
        wit::random::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)?;
        wit::slow_hash::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)?;
        wit::credential::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)?;
        wit::kv::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)?;
        Ok(linker)
    }

    /// Gives the host the store behind the `kv` capability: each plugin
    /// whose step grants `kv` gets the namespace named after its file
    /// (`NAME` of `NAME.wasm`) in [`Tree::Kv`](crate::store::Tree::Kv).
    /// Without a store (`resetgate check`, `plugin inspect`) a plugin that
    /// calls `kv` is stopped with an error. Only the first store given is
    /// kept; returns whether this one was.
    pub fn set_kv_store(&self, store: Arc<dyn DataStore>) -> bool {
        self.inner.shared.kv_store.set(store).is_ok()
    }

    /// Counters: compiles, cache hits, calls, failures.
    pub fn stats(&self) -> HostStats {
        let (compiles, cache_hits) = self.inner.cache.counts();
        HostStats {
            compiles,
            cache_hits,
            calls: self.inner.shared.calls.load(Ordering::Relaxed),
            failures: self.inner.shared.failures.load(Ordering::Relaxed),
        }
    }

    fn read(path: &Path) -> Result<(Vec<u8>, String), LoadError> {
        let read_err = |source| LoadError::Read {
            path: path.to_owned(),
            source,
        };
        let len = std::fs::metadata(path).map_err(read_err)?.len();
        if len > MAX_COMPONENT_BYTES {
            return Err(LoadError::Compile {
                path: path.to_owned(),
                reason: format!("file is {len} bytes; the limit is {MAX_COMPONENT_BYTES}"),
            });
        }
        let bytes = std::fs::read(path).map_err(read_err)?;
        let sha256 = hex::encode(Sha256::digest(&bytes));
        Ok((bytes, sha256))
    }

    fn world(&self, name: &str, component: &Component) -> Result<PluginKind, LoadError> {
        let ty = component.component_type();
        let exports: Vec<String> = ty
            .exports(&self.inner.shared.engine)
            .map(|(n, _)| n.to_owned())
            .collect();
        match grants::world_of(exports.iter().map(String::as_str)) {
            Some(Ok(kind)) => Ok(kind),
            Some(Err(built_for)) => Err(LoadError::ContractVersion {
                plugin: name.to_owned(),
                built_for: format!("resetgate:plugin/{built_for}"),
                speaks: CONTRACT_VERSION,
            }),
            None => Err(LoadError::NoWorld {
                plugin: name.to_owned(),
                exports: if exports.is_empty() {
                    "nothing".to_owned()
                } else {
                    exports.join(", ")
                },
            }),
        }
    }

    /// Loads the component at `path` for a step described by `spec`.
    pub fn load(&self, path: &Path, spec: &LoadSpec) -> Result<Plugin, LoadError> {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let (bytes, sha256) = Self::read(path)?;
        let component = self
            .inner
            .cache
            .load(&self.inner.shared.engine, path, &bytes, &sha256)?;
        let kind = self.world(&name, &component)?;
        if let Some(expected) = spec.kind
            && expected != kind
        {
            return Err(LoadError::WrongKind {
                plugin: name,
                expected,
                actual: kind,
            });
        }
        let ty = component.component_type();
        for (import, _) in ty.imports(&self.inner.shared.engine) {
            grants::audit_import(import, &spec.grants).map_err(|problem| match problem {
                grants::ImportProblem::NotGranted(cap) => LoadError::NotGranted {
                    plugin: name.clone(),
                    interface: cap.interface(),
                    grant: cap.grant_example(),
                },
                grants::ImportProblem::Unavailable(cap) => LoadError::CapabilityUnavailable {
                    plugin: name.clone(),
                    interface: cap.interface(),
                },
                grants::ImportProblem::Unknown(import) => LoadError::UnknownImport {
                    plugin: name.clone(),
                    import,
                },
                grants::ImportProblem::OtherVersion(v) => LoadError::ContractVersion {
                    plugin: name.clone(),
                    built_for: format!("resetgate:plugin@{v} (it imports {import})"),
                    speaks: CONTRACT_VERSION,
                },
            })?;
        }
        let kv_namespace = if spec.grants.kv {
            let stem = path
                .file_stem()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            if !kv::valid_namespace(&stem) {
                return Err(LoadError::Limits {
                    plugin: name,
                    reason: format!(
                        "its file name cannot name a kv namespace (1 to {} bytes)",
                        kv::MAX_NAMESPACE
                    ),
                });
            }
            Some(stem)
        } else {
            None
        };
        if spec.limits.memory > self.inner.config.max_memory {
            return Err(LoadError::Limits {
                plugin: name,
                reason: format!(
                    "memory limit {} exceeds the host's maximum of {}",
                    spec.limits.memory, self.inner.config.max_memory
                ),
            });
        }
        let pre = prepare(&self.inner.linker, &component, kind, &name)?;
        let plugin = self.plugin(
            &name,
            sha256,
            kind,
            pre,
            spec.limits,
            Purpose::Step { kv_namespace },
        );
        let info = plugin
            .call_describe()
            .map_err(|source| LoadError::Describe {
                plugin: name.clone(),
                source,
            })?;
        if info.kind != kind {
            return Err(LoadError::DescribeMismatch {
                plugin: name,
                world: kind,
                described: info.kind,
            });
        }
        let _ = plugin.inner.info.set(info);
        Ok(plugin)
    }

    /// A loaded plugin, for a workflow step or for `inspect`.
    fn plugin(
        &self,
        name: &str,
        sha256: String,
        kind: PluginKind,
        pre: calls::Pre,
        limits: Limits,
        purpose: Purpose,
    ) -> Plugin {
        let kv_namespace = match purpose {
            Purpose::Step { kv_namespace } => kv_namespace,
            Purpose::Inspect => None,
        };
        Plugin {
            inner: Arc::new(PluginInner {
                shared: self.inner.shared.clone(),
                label: Arc::from(name),
                sha256,
                kind,
                pre,
                limits,
                info: std::sync::OnceLock::new(),
                kv_namespace,
                kv: std::sync::OnceLock::new(),
                stats: PluginStats::default(),
            }),
        }
    }

    /// Reads a component and reports what it is and what it needs, without
    /// granting it anything (imports it is not granted trap if called).
    pub fn inspect(&self, path: &Path) -> Result<Inspection, LoadError> {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let (bytes, sha256) = Self::read(path)?;
        let component = self
            .inner
            .cache
            .load(&self.inner.shared.engine, path, &bytes, &sha256)?;
        let kind = self.world(&name, &component)?;
        let ty = component.component_type();
        let imports: Vec<String> = ty
            .imports(&self.inner.shared.engine)
            .map(|(n, _)| n.to_owned())
            .collect();
        let needs = imports
            .iter()
            .filter_map(|i| grants::contract_name(i))
            .filter_map(|c| {
                Capability::ALL
                    .into_iter()
                    .find(|cap| cap.interface() == c.interface)
            })
            .collect();
        let mut linker = Self::linker(&self.inner.shared.engine).map_err(|e| LoadError::Link {
            plugin: name.clone(),
            reason: format!("{e:#}"),
        })?;
        // An interface that uses `credential.{secret}` re-exports the
        // resource type; linking proper finds it through `credential`, but
        // the trap stubs would invent a type of their own for it there.
        for interface in ["slow-hash", "http", "ldap"] {
            linker
                .instance(&format!("resetgate:plugin/{interface}@{CONTRACT_VERSION}"))
                .and_then(|mut i| {
                    i.resource(
                        "secret",
                        ResourceType::host::<state::SecretHandle>(),
                        |mut store, rep| {
                            let handle = Resource::<state::SecretHandle>::new_own(rep);
                            store.data_mut().table.delete(handle)?;
                            Ok(())
                        },
                    )
                })
                .map_err(|e| LoadError::Link {
                    plugin: name.clone(),
                    reason: format!("{e:#}"),
                })?;
        }
        linker
            .define_unknown_imports_as_traps(&component)
            .map_err(|e| LoadError::Link {
                plugin: name.clone(),
                reason: format!("{e:#}"),
            })?;
        let pre = prepare(&linker, &component, kind, &name)?;
        let plugin = self.plugin(
            &name,
            sha256.clone(),
            kind,
            pre,
            Limits::default(),
            Purpose::Inspect,
        );
        let info = plugin
            .call_describe()
            .map_err(|source| LoadError::Describe {
                plugin: name,
                source,
            })?;
        Ok(Inspection {
            info,
            sha256,
            imports,
            needs,
        })
    }
}

/// What a plugin is loaded for.
enum Purpose {
    /// A workflow step: the `kv` namespace if granted.
    Step {
        /// The namespace, if the step grants `kv`.
        kv_namespace: Option<String>,
    },
    /// `inspect`: no capabilities beyond the basic ones.
    Inspect,
}

/// Links a component and types it by its world.
fn prepare(
    linker: &Linker<HostState>,
    component: &Component,
    kind: PluginKind,
    name: &str,
) -> Result<calls::Pre, LoadError> {
    let link = |e: wasmtime::Error| LoadError::Link {
        plugin: name.to_owned(),
        reason: format!("{e:#}"),
    };
    let pre = linker.instantiate_pre(component).map_err(link)?;
    calls::Pre::new(kind, pre).map_err(link)
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) {
    #[allow(clippy::expect_used)] // failing to start a thread at start-up is fatal
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(f)
        .expect("spawn plugin host thread");
}

/// A loaded plugin; cheap to clone, safe to call from any thread.
#[derive(Clone)]
pub struct Plugin {
    inner: Arc<PluginInner>,
}

struct PluginInner {
    shared: Arc<Shared>,
    label: Arc<str>,
    sha256: String,
    kind: PluginKind,
    pre: calls::Pre,
    limits: Limits,
    info: std::sync::OnceLock<PluginInfo>,
    /// The `kv` namespace, if the step grants `kv`.
    kv_namespace: Option<String>,
    /// The namespace over the host's store, made at the first call after
    /// the host was given one.
    kv: std::sync::OnceLock<Kv>,
    stats: PluginStats,
}

/// What `/metrics` reports for one loaded plugin.
#[derive(Debug)]
pub struct PluginStats {
    /// Wall time of every call, failed or not.
    pub duration: crate::metrics::Histogram,
    /// Failed calls by [`CallError::kind`].
    pub failures: crate::metrics::Family,
}

impl Default for PluginStats {
    fn default() -> Self {
        PluginStats {
            duration: crate::metrics::Histogram::default(),
            failures: crate::metrics::Family::new(&["kind"]),
        }
    }
}

impl PluginInner {
    /// The `kv` namespace for a call, if granted and the host has a store.
    fn kv(&self) -> Option<Kv> {
        let namespace = self.kv_namespace.as_deref()?;
        if let Some(kv) = self.kv.get() {
            return Some(kv.clone());
        }
        let store = self.shared.kv_store.get()?;
        let kv = Kv::new(store.clone(), namespace).ok()?;
        Some(self.kv.get_or_init(|| kv).clone())
    }

    /// A fresh instance in a fresh store, under the plugin's limits.
    fn instantiate(&self) -> Result<calls::Fresh, CallError> {
        let mut waited = Duration::ZERO;
        loop {
            let mut store = Store::new(&self.shared.engine, HostState::new(self.limits.memory));
            store.limiter(|s| &mut s.limiter);
            store.set_epoch_deadline(ticks(self.limits.wall_time));
            store.epoch_deadline_trap();
            match self.pre.instantiate(&mut store) {
                Ok(bound) => return Ok(calls::Fresh { store, bound }),
                // Every slot of the instance pool is taken by calls in
                // progress: wait for one to end rather than fail the call.
                Err(e)
                    if e.downcast_ref::<PoolConcurrencyLimitError>().is_some()
                        && waited < POOL_WAIT =>
                {
                    drop(store);
                    crate::workers::waiting(|| std::thread::sleep(Duration::from_millis(1)));
                    waited += Duration::from_millis(1);
                }
                Err(e) => {
                    return Err(CallError::Instantiate {
                        plugin: self.label.to_string(),
                        reason: format!("{e:#}"),
                    });
                }
            }
        }
    }
}

fn ticks(limit: Duration) -> u64 {
    (limit.as_millis().div_ceil(TICK.as_millis())).max(1) as u64
}

impl Plugin {
    /// What the plugin says about itself.
    pub fn info(&self) -> &PluginInfo {
        static EMPTY: std::sync::OnceLock<PluginInfo> = std::sync::OnceLock::new();
        self.inner.info.get().unwrap_or_else(|| {
            EMPTY.get_or_init(|| PluginInfo {
                name: String::new(),
                version: String::new(),
                kind: PluginKind::Gate,
                config_schema: serde_json::Value::Null,
                summary: String::new(),
            })
        })
    }

    /// The world the component was built for.
    pub fn kind(&self) -> PluginKind {
        self.inner.kind
    }

    /// The name the plugin was loaded under (`NAME` of `NAME.wasm`).
    pub fn name(&self) -> &str {
        &self.inner.label
    }

    /// Call durations and failures so far.
    pub fn stats(&self) -> &PluginStats {
        &self.inner.stats
    }

    /// sha256 of the `.wasm` file, hex.
    pub fn sha256(&self) -> &str {
        &self.inner.sha256
    }

    /// The limits each call runs under.
    pub fn limits(&self) -> Limits {
        self.inner.limits
    }

    /// Runs `f` on a fresh instance: instantiates one, calls, classifies
    /// failures, and drops the store.
    fn call<R>(
        &self,
        flow_id: &str,
        f: impl FnOnce(&mut Store<HostState>, &calls::Bound) -> wasmtime::Result<R>,
    ) -> Result<R, CallError> {
        let inner = &self.inner;
        let started = std::time::Instant::now();
        let outcome = self.call_inner(flow_id, f);
        inner.stats.duration.observe(started.elapsed());
        if let Err(e) = &outcome {
            inner.stats.failures.inc(&[e.kind()]);
        }
        outcome
    }

    fn call_inner<R>(
        &self,
        flow_id: &str,
        f: impl FnOnce(&mut Store<HostState>, &calls::Bound) -> wasmtime::Result<R>,
    ) -> Result<R, CallError> {
        let inner = &self.inner;
        let mut fresh = inner.instantiate()?;
        fresh.store.data_mut().kv = inner.kv();
        let result = f(&mut fresh.store, &fresh.bound);
        let data = fresh.store.data_mut();
        for line in data.logs.drain(..) {
            emit_log(&inner.label, flow_id, &line);
        }
        if data.logs_dropped > 0 {
            tracing::warn!(plugin = %inner.label, flow = flow_id, dropped = data.logs_dropped, "plugin log lines dropped");
        }
        let refused = data.refused.take();
        let memory = data.limiter.refused.take();
        let outcome = result.map_err(|e| self.classify(e, refused, memory));
        inner.shared.calls.fetch_add(1, Ordering::Relaxed);
        if outcome.is_err() {
            inner.shared.failures.fetch_add(1, Ordering::Relaxed);
        }
        // Torn down here, on the thread that built it: never reused.
        drop(fresh);
        outcome
    }

    fn classify(
        &self,
        error: wasmtime::Error,
        refused: Option<String>,
        memory: Option<usize>,
    ) -> CallError {
        let plugin = self.inner.label.to_string();
        if let Some(wanted) = memory {
            return CallError::MemoryLimit {
                plugin,
                wanted,
                limit: self.inner.limits.memory,
            };
        }
        if let Some(reason) = refused {
            return CallError::Refused { plugin, reason };
        }
        match error.downcast_ref::<Trap>() {
            Some(Trap::Interrupt) => CallError::Timeout {
                plugin,
                limit: self.inner.limits.wall_time,
            },
            Some(Trap::StackOverflow) => CallError::StackOverflow { plugin },
            Some(trap) => CallError::Trap {
                plugin,
                trap: trap.to_string(),
            },
            None => CallError::Trap {
                plugin,
                trap: format!("{error:#}"),
            },
        }
    }

    fn check_output(&self, size: usize) -> Result<(), CallError> {
        if size > self.inner.limits.output {
            return Err(CallError::OutputTooLarge {
                plugin: self.inner.label.to_string(),
                size,
                limit: self.inner.limits.output,
            });
        }
        Ok(())
    }
}

fn emit_log(plugin: &str, flow: &str, line: &state::LogLine) {
    use wit::log::Level;
    let message = line.message.as_str();
    match line.level {
        Level::Trace => tracing::trace!(target: "resetgate::plugin", plugin, flow, "{message}"),
        Level::Debug => tracing::debug!(target: "resetgate::plugin", plugin, flow, "{message}"),
        Level::Info => tracing::info!(target: "resetgate::plugin", plugin, flow, "{message}"),
        Level::Warn => tracing::warn!(target: "resetgate::plugin", plugin, flow, "{message}"),
        Level::Error => tracing::error!(target: "resetgate::plugin", plugin, flow, "{message}"),
    }
}
