//! What a plugin's store holds, and the host side of the always-granted
//! capabilities: log, clock, locale, random, slow-hash and credential, plus the
//! stand-ins for `commands` and `probe`, which the host does not provide
//! yet. The granted capabilities have modules of their own (`secrets`,
//! `ldap`, `http`, `kv`), built from the gateway config
//! ([`Capabilities`]).

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use wasmtime::component::{Resource, ResourceTable};
use wasmtime::{ResourceLimiter, Result as WasmResult};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use std::sync::Arc;

use super::bindings::base::resetgate::plugin as wit;
use super::capabilities::Capabilities;
use super::grants::{Capability, Grants};
use crate::secret::Secret;
use crate::store::kv::Kv;

/// The largest input `slow-hash` accepts, in bytes.
pub const SLOW_HASH_MAX_INPUT: usize = 1024;
/// The most log lines one call may write; later lines are dropped and counted.
pub const LOG_LINES_PER_CALL: usize = 64;
/// The longest log line kept, in bytes; longer lines are cut.
pub const LOG_LINE_MAX: usize = 1024;
/// The most host-side objects (WASI pollables, secret handles, ...) one call
/// may hold at once.
const MAX_HOST_OBJECTS: usize = 1024;
/// The most bytes one `random.bytes` call returns.
const RANDOM_MAX: u32 = 4096;

/// A secret the host holds for a plugin (the `credential.secret` resource).
pub struct SecretHandle(pub Secret);

/// One line a plugin logged.
#[derive(Debug, Clone)]
pub struct LogLine {
    /// Its severity.
    pub level: wit::log::Level,
    /// Its text, at most [`LOG_LINE_MAX`] bytes.
    pub message: String,
}

/// Refuses linear memory beyond the plugin's limit and remembers that it did,
/// so the host can report "memory limit" rather than a generic trap.
pub struct Limiter {
    pub memory_limit: usize,
    pub refused: Option<usize>,
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> WasmResult<bool> {
        if desired > self.memory_limit {
            self.refused = Some(desired);
            return Err(wasmtime::Error::msg("memory limit reached"));
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> WasmResult<bool> {
        Ok(desired <= 100_000)
    }
}

/// The data of one plugin instance's store. A store serves exactly one call
/// and is then dropped, so nothing here outlives a call.
pub struct HostState {
    /// When the call must end: the store's creation plus the plugin's wall
    /// time. The epoch stops wasm code at it; host calls that wait (WASI
    /// polls, later the network capabilities) wait at most until it.
    pub deadline: Instant,
    /// Set when a host call was cut short at the deadline: which one.
    pub stopped_in: Option<&'static str>,
    /// The capabilities the plugin's step grants.
    pub granted: Granted,
    /// What the step grants, in full: which LDAP connections, origins and
    /// secret names.
    pub grants: Arc<Grants>,
    /// The capabilities' state when the call started.
    pub caps: Arc<Capabilities>,
    /// The flow's clock (its `now-ms`) in a call that belongs to a flow:
    /// what `clock.now-ms` returns, so that a flow replays.
    pub now_ms: Option<u64>,
    /// The person's language in the call's flow: what `locale.language`
    /// returns (`en` when empty, e.g. outside a flow).
    pub language: String,
    /// Made on the plugin's first WASI call: most calls make none, and an
    /// empty context still costs allocations to build and drop.
    wasi: Option<WasiCtx>,
    pub table: ResourceTable,
    pub limiter: Limiter,
    pub logs: Vec<LogLine>,
    pub logs_dropped: usize,
    /// Set when a host function refused the plugin's input (reason for the admin).
    pub refused: Option<String>,
    /// The plugin's key-value namespace: set for each call of a plugin
    /// whose step grants `kv` when the host has a store.
    pub kv: Option<Kv>,
}

impl HostState {
    /// A store's data with WASI configured with nothing: no files, no
    /// environment, no arguments, no sockets, no stdio.
    pub fn new(
        memory_limit: usize,
        deadline: Instant,
        grants: Arc<Grants>,
        caps: Arc<Capabilities>,
    ) -> Self {
        let mut table = ResourceTable::new();
        // Host-side objects (pollables, handles) live outside the plugin's
        // linear memory: bound how many one call may make.
        table.set_max_capacity(MAX_HOST_OBJECTS);
        HostState {
            deadline,
            stopped_in: None,
            granted: Granted::of(&grants),
            grants,
            caps,
            now_ms: None,
            language: String::new(),
            wasi: None,
            table,
            limiter: Limiter {
                memory_limit,
                refused: None,
            },
            logs: Vec::new(),
            logs_dropped: 0,
            refused: None,
            kv: None,
        }
    }

    /// Stops the call: the plugin's input was refused (the reason is for
    /// the admin).
    pub(super) fn refuse<T>(&mut self, reason: String) -> WasmResult<T> {
        let err = wasmtime::Error::msg(reason.clone());
        self.refused = Some(reason);
        Err(err)
    }

    /// The time the call has left.
    pub fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    /// Stops the call because a host-side wait in `what` reached the call's
    /// deadline (reported as a timeout that names `what`).
    pub fn stop_at_deadline<T>(&mut self, what: &'static str) -> WasmResult<T> {
        self.stopped_in = Some(what);
        Err(wasmtime::Error::msg(format!(
            "stopped at the call's deadline while waiting in {what}"
        )))
    }

    /// Stops the call: the step does not grant `cap`. The message names the
    /// grant to add.
    ///
    /// Only reached for a capability the step does not grant: one it grants
    /// and the host lacks is refused when the plugin is loaded.
    pub(super) fn capability<T>(&mut self, cap: Capability, function: &str) -> WasmResult<T> {
        self.refuse(format!(
            "it called {}.{function}, which this step does not grant; add `{}` to the step if the plugin should have it",
            cap.interface(),
            cap.grant_example()
        ))
    }
}

/// Waits for `future` for at most `limit`, handing the request worker's turn
/// on while it waits; `None` if the time ran out first. Every host call that
/// waits goes through here with the time its plugin call has left.
pub fn bounded<F: std::future::Future>(limit: Duration, future: F) -> Option<F::Output> {
    crate::workers::waiting(|| {
        // The timer is made inside the runtime `in_tokio` enters.
        wasmtime_wasi::runtime::in_tokio(async move { tokio::time::timeout(limit, future).await })
            .ok()
    })
}

/// Which capabilities a call's step grants, as a small set.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Granted(u8);

impl Granted {
    /// The set of what `grants` grants.
    pub fn of(grants: &Grants) -> Granted {
        let mut bits = 0;
        for (i, cap) in Capability::ALL.into_iter().enumerate() {
            if grants.grants(cap) {
                bits |= 1 << i;
            }
        }
        Granted(bits)
    }

    /// Whether `cap` is in the set.
    pub fn has(self, cap: Capability) -> bool {
        Capability::ALL
            .into_iter()
            .position(|c| c == cap)
            .is_some_and(|i| self.0 & (1 << i) != 0)
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        let ctx = self.wasi.get_or_insert_with(|| {
            WasiCtx::builder()
                .allow_tcp(false)
                .allow_udp(false)
                .allow_ip_name_lookup(false)
                .build()
        });
        WasiCtxView {
            ctx,
            table: &mut self.table,
        }
    }
}

impl wit::types::Host for HostState {}

impl wit::log::Host for HostState {
    fn write(&mut self, level: wit::log::Level, message: String) -> WasmResult<()> {
        if self.logs.len() >= LOG_LINES_PER_CALL {
            self.logs_dropped += 1;
            return Ok(());
        }
        let mut message = message;
        if message.len() > LOG_LINE_MAX {
            let mut cut = LOG_LINE_MAX;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
            message.push('…');
        }
        self.logs.push(LogLine { level, message });
        Ok(())
    }
}

impl wit::clock::Host for HostState {
    fn now_ms(&mut self) -> WasmResult<u64> {
        if let Some(now) = self.now_ms {
            return Ok(now);
        }
        Ok(SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0))
    }

    fn monotonic_ns(&mut self) -> WasmResult<u64> {
        static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
        Ok(START.get_or_init(Instant::now).elapsed().as_nanos() as u64)
    }
}

impl wit::locale::Host for HostState {
    fn language(&mut self) -> WasmResult<String> {
        Ok(if self.language.is_empty() {
            "en".to_owned()
        } else {
            self.language.clone()
        })
    }
}

impl wit::random::Host for HostState {
    fn bytes(&mut self, len: u32) -> WasmResult<Vec<u8>> {
        if len > RANDOM_MAX {
            return self.refuse(format!(
                "random.bytes asked for {len} bytes; at most {RANDOM_MAX} per call"
            ));
        }
        let mut buf = vec![0u8; len as usize];
        getrandom::fill(&mut buf)
            .map_err(|e| wasmtime::Error::msg(format!("os random source failed: {e}")))?;
        Ok(buf)
    }

    fn below(&mut self, bound: u64) -> WasmResult<u64> {
        if bound == 0 {
            return self.refuse("random.below called with bound 0".to_owned());
        }
        // Rejection sampling: uniform, no modulo bias.
        let zone = u64::MAX - (u64::MAX % bound);
        loop {
            let v = getrandom::u64()
                .map_err(|e| wasmtime::Error::msg(format!("os random source failed: {e}")))?;
            if v < zone {
                return Ok(v % bound);
            }
        }
    }
}

/// argon2id with the OWASP parameters: 19 MiB, 2 passes, 1 lane.
pub fn argon2id() -> argon2::Argon2<'static> {
    #[allow(clippy::unwrap_used)] // constant, valid parameters
    let params = argon2::Params::new(19 * 1024, 2, 1, None).unwrap();
    argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
}

/// Why [`hash_secret`] failed. Never carries the secret.
#[derive(Debug, thiserror::Error)]
pub enum SlowHashError {
    /// Longer than [`SLOW_HASH_MAX_INPUT`].
    #[error("slow-hash input is {len} bytes; the limit is {SLOW_HASH_MAX_INPUT}")]
    TooLong {
        /// Its length in bytes.
        len: usize,
    },
    /// The operating system's random source failed.
    #[error("os random source failed: {0}")]
    Random(String),
    /// argon2id itself failed.
    #[error("argon2id failed: {0}")]
    Argon2(String),
    /// `verify` was given a PHC string the host does not hash with.
    #[error("slow-hash verify refused the PHC string: {0}")]
    BadPhc(String),
}

/// Hashes `secret` with argon2id (the parameters of [`argon2id`]) and a
/// fresh random salt; returns a PHC string. What `slow-hash.hash` and
/// `slow-hash.hash-secret` do for plugins, for the gateway's own tools.
pub fn hash_secret(secret: &Secret) -> Result<String, SlowHashError> {
    let bytes = secret.expose().as_bytes();
    if bytes.len() > SLOW_HASH_MAX_INPUT {
        return Err(SlowHashError::TooLong { len: bytes.len() });
    }
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|e| SlowHashError::Random(e.to_string()))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| SlowHashError::Argon2(e.to_string()))?;
    let phc = argon2id()
        .hash_password(bytes, &salt)
        .map_err(|e| SlowHashError::Argon2(e.to_string()))?;
    Ok(phc.to_string())
}

/// The longest hash output a PHC string given to `verify` may carry, in bytes.
const SLOW_HASH_MAX_OUTPUT: usize = 64;

/// Whether `phc` is an argon2id PHC string whose cost is at most the host's
/// own ([`argon2id`]): `Err` says why not. Checked before any hashing, so a
/// PHC string cannot make the host spend more time or memory than `hash`.
fn check_phc(phc: &PasswordHash<'_>) -> Result<(), String> {
    let ours = argon2id();
    let ours = ours.params();
    if phc.algorithm != argon2::Algorithm::Argon2id.ident() {
        return Err(format!("its algorithm is {}, not argon2id", phc.algorithm));
    }
    let params = argon2::Params::try_from(phc).map_err(|e| format!("its parameters: {e}"))?;
    if params.m_cost() > ours.m_cost()
        || params.t_cost() > ours.t_cost()
        || params.p_cost() > ours.p_cost()
    {
        return Err(format!(
            "its parameters m={}, t={}, p={} exceed the host's m={}, t={}, p={}",
            params.m_cost(),
            params.t_cost(),
            params.p_cost(),
            ours.m_cost(),
            ours.t_cost(),
            ours.p_cost()
        ));
    }
    if phc.hash.is_none_or(|h| h.len() > SLOW_HASH_MAX_OUTPUT) {
        return Err(format!(
            "its hash is missing or longer than {SLOW_HASH_MAX_OUTPUT} bytes"
        ));
    }
    Ok(())
}

/// Whether `secret` matches `phc`, an argon2id PHC string made with at most
/// the host's parameters. Constant time. An unreadable PHC string, one with
/// other or costlier parameters, or an over-long secret is refused without
/// hashing.
pub fn verify_secret(secret: &Secret, phc: &str) -> Result<bool, SlowHashError> {
    let bytes = secret.expose().as_bytes();
    if bytes.len() > SLOW_HASH_MAX_INPUT {
        return Err(SlowHashError::TooLong { len: bytes.len() });
    }
    let parsed = PasswordHash::new(phc)
        .map_err(|e| SlowHashError::BadPhc(format!("it is not a PHC string: {e}")))?;
    check_phc(&parsed).map_err(SlowHashError::BadPhc)?;
    Ok(argon2id().verify_password(bytes, &parsed).is_ok())
}

impl HostState {
    /// `hash` and `hash-secret`: an over-long input is refused (stops the
    /// call), other failures trap.
    fn slow_hash(&mut self, secret: &Secret) -> WasmResult<String> {
        match hash_secret(secret) {
            Ok(phc) => Ok(phc),
            Err(e @ SlowHashError::TooLong { .. }) => self.refuse(e.to_string()),
            Err(e) => Err(wasmtime::Error::msg(e.to_string())),
        }
    }

    /// `verify` and `verify-secret`: a refused input stops the call.
    fn slow_verify(&mut self, verified: Result<bool, SlowHashError>) -> WasmResult<bool> {
        match verified {
            Ok(matches) => Ok(matches),
            Err(e @ (SlowHashError::TooLong { .. } | SlowHashError::BadPhc(_))) => {
                self.refuse(e.to_string())
            }
            Err(e) => Err(wasmtime::Error::msg(e.to_string())),
        }
    }
}

impl wit::slow_hash::Host for HostState {
    fn hash(&mut self, secret: String) -> WasmResult<String> {
        self.slow_hash(&Secret::new(secret))
    }

    fn verify(&mut self, secret: String, phc: String) -> WasmResult<bool> {
        let verified = verify_secret(&Secret::new(secret), &phc);
        self.slow_verify(verified)
    }

    fn hash_secret(&mut self, handle: Resource<SecretHandle>) -> WasmResult<String> {
        let secret = self.table.get(&handle)?.0.clone();
        self.slow_hash(&secret)
    }

    fn verify_secret(&mut self, handle: Resource<SecretHandle>, phc: String) -> WasmResult<bool> {
        let verified = verify_secret(&self.table.get(&handle)?.0, &phc);
        self.slow_verify(verified)
    }
}

impl wit::credential::Host for HostState {}

impl wit::credential::HostSecret for HostState {
    fn reveal(&mut self, handle: Resource<SecretHandle>) -> WasmResult<String> {
        Ok(self.table.get(&handle)?.0.expose().to_owned())
    }

    fn length(&mut self, handle: Resource<SecretHandle>) -> WasmResult<u32> {
        Ok(self.table.get(&handle)?.0.code_points() as u32)
    }

    fn drop(&mut self, handle: Resource<SecretHandle>) -> WasmResult<()> {
        self.table.delete(handle)?;
        Ok(())
    }
}

// ----- capabilities the host does not provide yet -------------------------
//
// Each is linked so that a component built against the whole world loads
// (only what it calls matters): a call stops the plugin's call with a
// message that names the grant to add. Granting one is refused at load
// (`Capability::available`).

impl wit::commands::Host for HostState {
    fn run(
        &mut self,
        _name: String,
        _args: Vec<String>,
    ) -> WasmResult<Result<wit::commands::Outcome, wit::commands::CommandError>> {
        self.capability(Capability::Commands, "run")
    }
}

impl wit::probe::Host for HostState {
    fn tcp_reachable(&mut self, _host: String, _port: u16, _timeout_ms: u32) -> WasmResult<bool> {
        self.capability(Capability::Probe, "tcp-reachable")
    }
}
