//! Everything that can go wrong loading or calling a plugin, as typed errors.
//! None of these carry a secret; plugin-written text appears only where the
//! admin needs it (log, `resetgate plugin inspect`), never on the wire.

use std::path::PathBuf;
use std::time::Duration;

use crate::contract::PluginKind;

/// Why a plugin could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("cannot read plugin {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Not a valid WebAssembly component.
    #[error("{path} is not a WebAssembly component wasmtime can compile: {reason}")]
    Compile {
        /// The file.
        path: PathBuf,
        /// What the compiler said.
        reason: String,
    },
    /// The precompiled cache could not be written or read.
    #[error("plugin cache {path}: {reason}")]
    Cache {
        /// The cache file or folder.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// Built against another version of the contract.
    #[error(
        "plugin {plugin} was built for {built_for}; this gateway speaks resetgate:plugin@{speaks} \
         (rebuild it against the contract's WIT package resetgate:plugin@{speaks})"
    )]
    ContractVersion {
        /// The file.
        plugin: String,
        /// What the component exports or imports.
        built_for: String,
        /// Our contract version.
        speaks: &'static str,
    },
    /// Exports none of the five worlds' interfaces.
    #[error(
        "plugin {plugin} exports none of the contract's interfaces (it exports: {exports}); \
         build it against one of the worlds of resetgate:plugin (gate, lockout, directory, \
         vpn-hook, sync-target)"
    )]
    NoWorld {
        /// The file.
        plugin: String,
        /// What it does export.
        exports: String,
    },
    /// Built for another kind than the step needs.
    #[error("plugin {plugin} is a {actual} plugin but is used as a {expected}")]
    WrongKind {
        /// The plugin.
        plugin: String,
        /// What the step needs.
        expected: PluginKind,
        /// What the component is.
        actual: PluginKind,
    },
    /// `describe` reported a kind other than the world it was built for.
    #[error("plugin {plugin} was built for world {world} but describes itself as {described}")]
    DescribeMismatch {
        /// The plugin.
        plugin: String,
        /// The world from its exports.
        world: PluginKind,
        /// The kind `describe` returned.
        described: PluginKind,
    },
    /// A granted capability the host does not provide yet.
    #[error(
        "plugin {plugin} needs the `{interface}` capability, which is not available yet in this \
         version of resetgate"
    )]
    CapabilityUnavailable {
        /// The plugin.
        plugin: String,
        /// The capability's interface.
        interface: &'static str,
    },
    /// Imports something that is neither WASI nor the contract.
    #[error("plugin {plugin} imports {import}, which resetgate does not provide")]
    UnknownImport {
        /// The plugin.
        plugin: String,
        /// The import's name.
        import: String,
    },
    /// Linking failed even though the audit passed.
    #[error("plugin {plugin} cannot be linked: {reason}")]
    Link {
        /// The plugin.
        plugin: String,
        /// What the linker said.
        reason: String,
    },
    /// `describe` failed or returned something unusable.
    #[error("plugin {plugin}: describe failed: {source}")]
    Describe {
        /// The plugin.
        plugin: String,
        /// Why.
        source: CallError,
    },
    /// The limits asked for exceed what the host was configured with.
    #[error("plugin {plugin}: {reason}")]
    Limits {
        /// The plugin.
        plugin: String,
        /// What is out of range.
        reason: String,
    },
}

/// Why a call into a plugin failed. After any of these the instance is
/// dropped and the host keeps serving other calls.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// Reached its wall-time limit, in its own code or waiting in a host call.
    #[error(
        "plugin {plugin} was stopped after {} ms at its time limit of {} ms{}",
        elapsed.as_millis(),
        limit.as_millis(),
        waiting_in.as_ref().map(|w| format!(", while waiting in {w}")).unwrap_or_default()
    )]
    Timeout {
        /// The plugin.
        plugin: String,
        /// The limit.
        limit: Duration,
        /// How long the call had run when it was stopped.
        elapsed: Duration,
        /// The host call it was waiting in, if it was stopped there.
        waiting_in: Option<String>,
    },
    /// Tried to grow memory past its limit.
    #[error("plugin {plugin} tried to use {wanted} bytes of memory; its limit is {limit}")]
    MemoryLimit {
        /// The plugin.
        plugin: String,
        /// What it asked for.
        wanted: usize,
        /// The limit.
        limit: usize,
    },
    /// Exhausted its wasm stack (deep recursion).
    #[error("plugin {plugin} overflowed its stack")]
    StackOverflow {
        /// The plugin.
        plugin: String,
    },
    /// Trapped: a panic, an unreachable, an out-of-bounds access...
    #[error("plugin {plugin} crashed: {trap}")]
    Trap {
        /// The plugin.
        plugin: String,
        /// The trap, as wasmtime describes it.
        trap: String,
    },
    /// A host function refused what the plugin asked.
    #[error("plugin {plugin} was stopped: {reason}")]
    Refused {
        /// The plugin.
        plugin: String,
        /// What it asked for.
        reason: String,
    },
    /// Returned more than the output limit.
    #[error("plugin {plugin} returned {size} bytes; the limit is {limit}")]
    OutputTooLarge {
        /// The plugin.
        plugin: String,
        /// What it returned.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// Returned something that breaks the contract.
    #[error("plugin {plugin} returned an invalid result: {reason}")]
    BadOutput {
        /// The plugin.
        plugin: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Could not be instantiated (e.g. the instance pool is exhausted).
    #[error("plugin {plugin} could not be instantiated: {reason}")]
    Instantiate {
        /// The plugin.
        plugin: String,
        /// Why.
        reason: String,
    },
}

impl CallError {
    /// A short stable word for the kind of failure (a metrics label).
    pub fn kind(&self) -> &'static str {
        match self {
            CallError::Timeout { .. } => "timeout",
            CallError::MemoryLimit { .. } => "memory-limit",
            CallError::StackOverflow { .. } => "stack-overflow",
            CallError::Trap { .. } => "trap",
            CallError::Refused { .. } => "refused",
            CallError::OutputTooLarge { .. } => "output-too-large",
            CallError::BadOutput { .. } => "bad-output",
            CallError::Instantiate { .. } => "instantiate",
        }
    }
}
