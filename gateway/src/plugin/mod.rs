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
pub mod capabilities;
mod error;
mod grants;
mod http;
mod kv;
mod ldap;
pub mod secrets;
mod state;
mod wasi;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{
    Config, Enabled, Engine, InstanceAllocationStrategy, PoolConcurrencyLimitError,
    PoolingAllocationConfig, Store, Trap,
};

pub use calls::{DirectoryCalls, GateCalls, LockoutCalls, SyncTargetCalls, VpnHookCalls};
pub use capabilities::{Capabilities, CapabilitiesError};
pub use error::{CallError, LoadError};
pub use grants::{Capability, Grants};
pub use state::{SlowHashError, hash_secret, verify_secret};

use crate::contract::{CONTRACT_VERSION, PluginInfo, PluginKind};
use crate::store::kv::{self as kv_store, Kv};
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
    /// Where precompiled components are cached; `None` compiles every
    /// component in memory and writes nothing.
    pub cache_dir: Option<PathBuf>,
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
            cache_dir: Some(cache_dir.into()),
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
    /// Size of what one call returns: every string's and byte list's bytes,
    /// plus 16 for every other list element and every record.
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
    /// WASI interfaces it imports that the host does not provide (linked
    /// to traps).
    pub missing_wasi: Vec<String>,
}

/// Something about a loaded plugin an admin should know, though it loads.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LoadWarning {
    /// Imports capabilities its step does not grant: calls to them fail.
    #[error(
        "plugin {plugin} imports {}, which this step does not grant: its calls to them will fail; \
         add {} to the step if the plugin needs them",
        interfaces.join(", "),
        grants.join(" / ")
    )]
    Ungranted {
        /// The plugin.
        plugin: String,
        /// The capability interfaces.
        interfaces: Vec<&'static str>,
        /// The grants that would allow them.
        grants: Vec<&'static str>,
    },
    /// Imports WASI interfaces the host does not provide: they trap if called.
    #[error(
        "plugin {plugin} imports {}, which resetgate does not provide: calling them stops the call",
        imports.join(", ")
    )]
    WasiNotProvided {
        /// The plugin.
        plugin: String,
        /// The imports.
        imports: Vec<String>,
    },
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
    /// Each plugin's call statistics by name, kept for the host's life so
    /// that a reload (which loads every plugin again) never resets them.
    stats: Mutex<BTreeMap<String, Arc<PluginStats>>>,
    /// The capabilities' current state: what a call starting now gets.
    /// Replaced whole on reload; a call keeps the one it started with.
    caps: std::sync::RwLock<Arc<Capabilities>>,
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
            path: config.cache_dir.clone().unwrap_or_default(),
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
            stats: Mutex::new(BTreeMap::new()),
            caps: std::sync::RwLock::new(Arc::new(Capabilities::none())),
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
    /// Every capability of the contract is linked: a call to one the step
    /// does not grant stops the plugin's call with a message naming the
    /// grant, so a component built against its whole world (as some
    /// toolchains build them) loads and runs with the grants it uses.
    fn linker(engine: &Engine) -> wasmtime::Result<Linker<HostState>> {
        let mut linker = Linker::new(engine);
        wasi::add_to_linker(&mut linker)?;
        wit::log::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)?;
        wit::clock::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)?;
        wit::locale::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)?;
        wit::random::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)?;
        wit::slow_hash::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)?;
        wit::credential::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)?;
        wit::http::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)?;
        wit::ldap::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)?;
        wit::secrets::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)?;
        wit::commands::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)?;
        wit::probe::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)?;
        wit::kv::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)?;
        Ok(linker)
    }

    /// Gives the host the state of its capabilities (secrets, LDAP
    /// connections, HTTP origins, the store behind `kv`), built from the
    /// gateway config at start and again on `SIGHUP`. Calls that start
    /// afterwards use it; calls in flight keep the one they started with.
    /// Each plugin whose step grants `kv` gets the namespace named after its
    /// file (`NAME` of `NAME.wasm`) in [`Tree::Kv`](crate::store::Tree::Kv);
    /// without a store (`resetgate check`, `plugin inspect`: the host starts
    /// with [`Capabilities::none`]) a plugin that calls `kv` is stopped with
    /// an error.
    pub fn set_capabilities(&self, caps: Arc<Capabilities>) {
        let mut current = self
            .inner
            .shared
            .caps
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *current = caps;
    }

    /// The capabilities' current state.
    pub fn capabilities(&self) -> Arc<Capabilities> {
        self.inner.shared.capabilities()
    }

    /// The statistics of every plugin name this host has loaded for a
    /// workflow step (still in use or not), by name.
    pub fn plugin_stats(&self) -> Vec<(String, Arc<PluginStats>)> {
        self.inner
            .shared
            .stats
            .lock()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default()
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
        use crate::readfile::{ReadError, read_limited};
        let bytes = read_limited(path, MAX_COMPONENT_BYTES).map_err(|e| match e {
            ReadError::Io { source, .. } => LoadError::Read {
                path: path.to_owned(),
                source,
            },
            ReadError::TooLarge { limit } => LoadError::Compile {
                path: path.to_owned(),
                reason: format!("the file is larger than the limit of {limit} bytes"),
            },
            other => LoadError::Read {
                path: path.to_owned(),
                source: std::io::Error::other(other.to_string()),
            },
        })?;
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
        self.load_as(path, spec, Purpose::Step)
            .map(|(plugin, _)| plugin)
    }

    /// Reads a component and reports what it is and what it needs, linked
    /// exactly as `serve` links it for a step that grants nothing.
    pub fn inspect(&self, path: &Path) -> Result<Inspection, LoadError> {
        let (plugin, imports) = self.load_as(path, &LoadSpec::default(), Purpose::Inspect)?;
        let missing_wasi = imports
            .iter()
            .filter(|i| i.starts_with("wasi:") && !wasi::provided(i))
            .cloned()
            .collect();
        Ok(Inspection {
            info: plugin.info().clone(),
            sha256: plugin.sha256().to_owned(),
            imports,
            needs: plugin.needs().to_vec(),
            missing_wasi,
        })
    }

    /// Loads a component: audits its imports against the step's grants,
    /// links it, and asks it to describe itself. Also returns every import.
    fn load_as(
        &self,
        path: &Path,
        spec: &LoadSpec,
        purpose: Purpose,
    ) -> Result<(Plugin, Vec<String>), LoadError> {
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
        let imports: Vec<String> = ty
            .imports(&self.inner.shared.engine)
            .map(|(n, _)| n.to_owned())
            .collect();
        let mut ungranted = Vec::new();
        let mut missing_wasi = Vec::new();
        let needs: Vec<Capability> = imports
            .iter()
            .filter_map(|i| grants::contract_name(i))
            .filter_map(|c| {
                Capability::ALL
                    .into_iter()
                    .find(|cap| cap.interface() == c.interface)
            })
            .collect();
        for import in &imports {
            match grants::audit_import(import, &spec.grants) {
                Ok(()) if import.starts_with("wasi:") && !wasi::provided(import) => {
                    missing_wasi.push(import.clone());
                }
                Ok(()) => {}
                Err(grants::ImportProblem::NotGranted(cap)) => ungranted.push(cap),
                Err(grants::ImportProblem::Unavailable(cap)) => {
                    return Err(LoadError::CapabilityUnavailable {
                        plugin: name,
                        interface: cap.interface(),
                    });
                }
                Err(grants::ImportProblem::Unknown(import)) => {
                    return Err(LoadError::UnknownImport {
                        plugin: name,
                        import,
                    });
                }
                Err(grants::ImportProblem::OtherVersion(v)) => {
                    return Err(LoadError::ContractVersion {
                        plugin: name,
                        built_for: format!("resetgate:plugin@{v} (it imports {import})"),
                        speaks: CONTRACT_VERSION,
                    });
                }
            }
        }
        let mut warnings = Vec::new();
        if !ungranted.is_empty() {
            warnings.push(LoadWarning::Ungranted {
                plugin: name.clone(),
                interfaces: ungranted.iter().map(|c| c.interface()).collect(),
                grants: ungranted.iter().map(|c| c.grant_example()).collect(),
            });
        }
        let kv_namespace = match purpose {
            Purpose::Step if spec.grants.kv => {
                let stem = path
                    .file_stem()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                if !kv_store::valid_namespace(&stem) {
                    return Err(LoadError::Limits {
                        plugin: name,
                        reason: format!(
                            "its file name cannot name a kv namespace (1 to {} bytes)",
                            kv_store::MAX_NAMESPACE
                        ),
                    });
                }
                Some(stem)
            }
            _ => None,
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
        let pre = if missing_wasi.is_empty() {
            prepare(&self.inner.linker, &component, kind, &name)?
        } else {
            // WASI the host does not provide (e.g. `wasi:http`, which some
            // toolchains import whatever the code uses): linked to traps.
            let mut linker = self.inner.linker.clone();
            wasi::stub_missing(
                &mut linker,
                &self.inner.shared.engine,
                &component,
                &missing_wasi,
            )
            .map_err(|e| LoadError::Link {
                plugin: name.clone(),
                reason: format!("{e:#}"),
            })?;
            warnings.push(LoadWarning::WasiNotProvided {
                plugin: name.clone(),
                imports: missing_wasi,
            });
            prepare(&linker, &component, kind, &name)?
        };
        let stem = path
            .file_stem()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let stats = match purpose {
            Purpose::Step => self.stats_for(&stem),
            Purpose::Inspect => Arc::default(),
        };
        let plugin = Plugin {
            inner: Arc::new(PluginInner {
                shared: self.inner.shared.clone(),
                label: Arc::from(name.as_str()),
                sha256,
                kind,
                pre,
                limits: spec.limits,
                grants: Arc::new(spec.grants.clone()),
                needs,
                warnings,
                info: std::sync::OnceLock::new(),
                kv_namespace,
                kv: std::sync::OnceLock::new(),
                stats,
            }),
        };
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
        Ok((plugin, imports))
    }

    /// The statistics every load of the plugin named `name` shares.
    fn stats_for(&self, name: &str) -> Arc<PluginStats> {
        match self.inner.shared.stats.lock() {
            Ok(mut map) => map.entry(name.to_owned()).or_default().clone(),
            Err(_) => Arc::default(),
        }
    }
}

/// What a plugin is loaded for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Purpose {
    /// A workflow step: its `kv` namespace if granted, and its statistics
    /// kept with the host's.
    Step,
    /// `inspect`: nothing granted, statistics of its own.
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
    /// What the step grants: a call to an ungranted capability stops.
    grants: Arc<Grants>,
    /// The capabilities it imports, granted or not.
    needs: Vec<Capability>,
    warnings: Vec<LoadWarning>,
    info: std::sync::OnceLock<PluginInfo>,
    /// The `kv` namespace, if the step grants `kv`.
    kv_namespace: Option<String>,
    /// The namespace over the host's store, made at the first call after
    /// the host was given one.
    kv: std::sync::OnceLock<Kv>,
    stats: Arc<PluginStats>,
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
    /// The namespace is made once, over the first store the host had: the
    /// store never changes while the gateway runs.
    fn kv(&self, caps: &Capabilities) -> Option<Kv> {
        let namespace = self.kv_namespace.as_deref()?;
        if let Some(kv) = self.kv.get() {
            return Some(kv.clone());
        }
        let store = caps.kv.as_ref()?;
        let kv = Kv::new(store.clone(), namespace).ok()?;
        Some(self.kv.get_or_init(|| kv).clone())
    }

    /// A fresh instance in a fresh store, under the plugin's limits.
    /// On failure, the error and the store it happened in (none when the
    /// instance pool stayed full).
    fn instantiate(&self) -> Result<calls::Fresh, (wasmtime::Error, Option<Store<HostState>>)> {
        let mut waited = Duration::ZERO;
        loop {
            let deadline = Instant::now() + self.limits.wall_time;
            let state = HostState::new(
                self.limits.memory,
                deadline,
                self.grants.clone(),
                self.shared.capabilities(),
            );
            let mut store = Store::new(&self.shared.engine, state);
            store.limiter(|s| &mut s.limiter);
            // One tick more than the limit: the current tick ends within a
            // tick from now, so the epoch never stops a call before its limit.
            store.set_epoch_deadline(ticks(self.limits.wall_time) + 1);
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
                Err(e) if e.downcast_ref::<PoolConcurrencyLimitError>().is_some() => {
                    return Err((e, None));
                }
                Err(e) => return Err((e, Some(store))),
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

    /// The capabilities the component imports, granted or not.
    pub fn needs(&self) -> &[Capability] {
        &self.inner.needs
    }

    /// What an admin should know about how the plugin was loaded.
    pub fn warnings(&self) -> &[LoadWarning] {
        &self.inner.warnings
    }

    /// Runs `f` on a fresh instance (instantiates one, calls, classifies
    /// failures, drops the store), then `out` on what it returned (output
    /// limits, conversion). Every failure, of either, is counted by kind and
    /// logged with the plugin, the step and the flow.
    fn call<W, R>(
        &self,
        site: Site<'_>,
        f: impl FnOnce(&mut Store<HostState>, &calls::Bound) -> wasmtime::Result<W>,
        out: impl FnOnce(W) -> Result<R, CallError>,
    ) -> Result<R, CallError> {
        let inner = &self.inner;
        let started = Instant::now();
        let outcome = self.call_inner(&site, f).and_then(out);
        inner.stats.duration.observe(started.elapsed());
        inner.shared.calls.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = &outcome {
            inner.shared.failures.fetch_add(1, Ordering::Relaxed);
            inner.stats.failures.inc(&[e.kind()]);
            tracing::warn!(
                target: "resetgate::plugin",
                plugin = %inner.label,
                step = %site.step,
                flow = %site.flow,
                kind = %e.kind(),
                error = %e,
                "plugin call failed"
            );
        }
        outcome
    }

    fn call_inner<R>(
        &self,
        site: &Site<'_>,
        f: impl FnOnce(&mut Store<HostState>, &calls::Bound) -> wasmtime::Result<R>,
    ) -> Result<R, CallError> {
        let inner = &self.inner;
        let mut fresh = match inner.instantiate() {
            Ok(fresh) => fresh,
            // A start function may trap, loop past the deadline, sleep or
            // ask for too much memory: said as for a call.
            Err((e, Some(mut store))) => {
                let stopped = self.stopped(store.data_mut());
                let what_stopped = stopped.refused.is_some()
                    || stopped.memory.is_some()
                    || stopped.waiting_in.is_some()
                    || e.downcast_ref::<Trap>().is_some();
                return Err(if what_stopped {
                    self.classify(e, stopped)
                } else {
                    CallError::Instantiate {
                        plugin: inner.label.to_string(),
                        reason: format!("{e:#}"),
                    }
                });
            }
            Err((e, None)) => {
                return Err(CallError::Instantiate {
                    plugin: inner.label.to_string(),
                    reason: format!("{e:#}"),
                });
            }
        };
        let data = fresh.store.data_mut();
        data.kv = inner.kv(&data.caps);
        data.now_ms = site.now_ms;
        site.language.clone_into(&mut data.language);
        let result = f(&mut fresh.store, &fresh.bound);
        let data = fresh.store.data_mut();
        for line in data.logs.drain(..) {
            emit_log(&inner.label, site.flow, &line);
        }
        if data.logs_dropped > 0 {
            tracing::warn!(plugin = %inner.label, flow = site.flow, dropped = data.logs_dropped, "plugin log lines dropped");
        }
        // Only a failure needs what the host saw (and a clock read).
        let outcome = result.map_err(|e| {
            let stopped = self.stopped(data);
            self.classify(e, stopped)
        });
        // Torn down here, on the thread that built it: never reused.
        drop(fresh);
        outcome
    }

    /// What the host saw of a call in its store's data.
    fn stopped(&self, data: &mut HostState) -> Stopped {
        // The time limit counts from the store's creation.
        let began = data.deadline.checked_sub(self.inner.limits.wall_time);
        Stopped {
            refused: data.refused.take(),
            memory: data.limiter.refused.take(),
            waiting_in: data.stopped_in.take(),
            elapsed: began.map(|b| b.elapsed()).unwrap_or_default(),
        }
    }

    fn classify(&self, error: wasmtime::Error, stopped: Stopped) -> CallError {
        let plugin = self.inner.label.to_string();
        if let Some(wanted) = stopped.memory {
            return CallError::MemoryLimit {
                plugin,
                wanted,
                limit: self.inner.limits.memory,
            };
        }
        if let Some(reason) = stopped.refused {
            return CallError::Refused { plugin, reason };
        }
        let timeout = |waiting_in: Option<&str>| CallError::Timeout {
            plugin: plugin.clone(),
            limit: self.inner.limits.wall_time,
            elapsed: stopped.elapsed,
            waiting_in: waiting_in.map(str::to_owned),
        };
        if let Some(what) = stopped.waiting_in {
            return timeout(Some(what));
        }
        match error.downcast_ref::<Trap>() {
            Some(Trap::Interrupt) => timeout(None),
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

/// Where a call comes from, for the log: the flow and the workflow step.
#[derive(Clone, Copy, Debug)]
struct Site<'a> {
    flow: &'a str,
    step: &'a str,
    /// The flow's clock, for a call that belongs to a flow.
    now_ms: Option<u64>,
    /// The person's language in the flow (`locale.language`).
    language: &'a str,
}

impl Shared {
    fn capabilities(&self) -> Arc<Capabilities> {
        self.caps
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

/// What the host saw of a failed call, besides wasmtime's error.
struct Stopped {
    /// A host function refused the plugin's input (the reason).
    refused: Option<String>,
    /// The memory the plugin asked for beyond its limit.
    memory: Option<usize>,
    /// A host call cut short at the deadline.
    waiting_in: Option<&'static str>,
    /// From the call's start to its end.
    elapsed: Duration,
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

impl HostConfig {
    /// Defaults without a disk cache: what a one-off command such as
    /// `resetgate plugin inspect` uses, so it never loads native code from a
    /// folder someone else may have prepared.
    pub fn uncached() -> Self {
        HostConfig {
            cache_dir: None,
            ..HostConfig::new(PathBuf::new())
        }
    }
}
