//! The `ldap` capability: LDAP over the connections the admin defines by
//! name in the gateway config (`ldap:`), with `ldap3` on rustls.
//!
//! Per connection: a small pool of connections bound as the configured
//! account (made when first needed, so the gateway starts with its
//! directory down; made again when broken), TLS from the start
//! (`ldaps://`) or by StartTLS (`ldap://`), verified against `ca_file` or
//! the operating system's roots (plain LDAP only with `insecure: true`),
//! and a limit on the operations running at once (`max_concurrent`), taken
//! within the call's time, so a slow server holds at most that many
//! request workers' calls and never past their deadlines. `check-bind` uses
//! a connection of its own.
//!
//! Every operation runs inside [`super::state::bounded`] with the time the
//! plugin call has left; the `ldap3` connection drivers run on the tokio
//! runtime it enters. Errors keep the server's result code and diagnostic
//! text (Active Directory's `0000052D: ...`, `data 52e`); failures on this
//! side use 81 (the connection was lost), 85 (no answer in time) and 91
//! (no connection: TCP, TLS, StartTLS, a missing bind secret), with a
//! message for the admin that names the connection and its URL. No
//! password (the bind secret, a user's) is ever part of an error or a log
//! line.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use ldap3::exop::PasswordModify;
use ldap3::{LdapConnAsync, LdapConnSettings, Mod, Scope, SearchEntry, SearchOptions, StdStream};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use rustls::{ClientConfig, RootCertStore};
use tokio::sync::{Mutex, Semaphore};
use tokio::time::Instant;
use zeroize::Zeroizing;

use wasmtime::Result as WasmResult;
use wasmtime::component::Resource;

use super::bindings::base::resetgate::plugin as wit;
use super::capabilities::CapabilitiesError;
use super::grants::Capability;
use super::secrets::Secrets;
use super::state::{HostState, SecretHandle, bounded};
use crate::config::{GatewayConfig, LdapConnection, LdapFlavor};
use crate::secret::Secret;

/// The most entries a search may ask for.
pub const MAX_SIZE_LIMIT: u32 = 1000;

/// How much sooner than the call's deadline an operation gives up on its
/// own, so that the plugin gets code 85 (and the connection is dropped)
/// rather than being stopped mid-wait.
const MARGIN: Duration = Duration::from_millis(20);

/// The largest CA file read.
const MAX_CA_BYTES: u64 = 1 << 20;

/// LDAP result codes this side uses (RFC 4511 and the C API's client codes).
pub mod code {
    /// More entries than the size limit.
    pub const SIZE_LIMIT_EXCEEDED: u32 = 4;
    /// Invalid credentials.
    pub const INVALID_CREDENTIALS: u32 = 49;
    /// The server is down or the connection was lost.
    pub const SERVER_DOWN: u32 = 81;
    /// No answer in time.
    pub const TIMEOUT: u32 = 85;
    /// The filter is not an RFC 4515 filter.
    pub const FILTER_ERROR: u32 = 87;
    /// The connection could not be made.
    pub const CONNECT_ERROR: u32 = 91;
}

/// Why an LDAP operation, or reading a connection's settings, failed. The
/// messages name the connection and its URL and never carry a password.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LdapError {
    /// The server answered with an error result.
    #[error("{operation} on {url} (connection `{connection}`) failed with LDAP result {code} ({}): {text}", result_name(*.code))]
    Result {
        /// The connection's name.
        connection: String,
        /// Its URL.
        url: String,
        /// What was done, e.g. `search` or `bind as the connection's account`.
        operation: String,
        /// The result code.
        code: u32,
        /// The server's diagnostic message as sent.
        text: String,
    },
    /// The server refused the bind of the connection's own account.
    #[error("the bind as `{dn}` on {url} (connection `{connection}`) was refused with LDAP result {code} ({}): {text}; check `bind_dn` and the secret `bind_secret` names", result_name(*.code))]
    BindRefused {
        /// The connection's name.
        connection: String,
        /// Its URL.
        url: String,
        /// The bind DN.
        dn: String,
        /// The result code.
        code: u32,
        /// The server's diagnostic message as sent.
        text: String,
    },
    /// No TCP connection to the server.
    #[error("cannot connect to {url} (connection `{connection}`): {reason}")]
    Connect {
        /// The connection's name.
        connection: String,
        /// Its URL.
        url: String,
        /// Why (the operating system's words).
        reason: String,
    },
    /// The TLS handshake failed (an unknown CA, a wrong name, ...).
    #[error(
        "TLS handshake with {url} (connection `{connection}`) failed: {reason}; check `ca_file`"
    )]
    Tls {
        /// The connection's name.
        connection: String,
        /// Its URL.
        url: String,
        /// Why (rustls's words).
        reason: String,
    },
    /// The server refused StartTLS.
    #[error(
        "StartTLS on {url} (connection `{connection}`) was refused: {reason}; use an `ldaps://` URL if the server offers LDAPS"
    )]
    StartTls {
        /// The connection's name.
        connection: String,
        /// Its URL.
        url: String,
        /// The server's result.
        reason: String,
    },
    /// The bind account's secret is not set.
    #[error("LDAP connection `{connection}` binds with the secret `{secret}`, which is not set")]
    MissingSecret {
        /// The connection's name.
        connection: String,
        /// The secret's name.
        secret: String,
    },
    /// The connection broke (closed by the server, reset, ...).
    #[error("the connection to {url} (connection `{connection}`) was lost: {reason}")]
    Lost {
        /// The connection's name.
        connection: String,
        /// Its URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// No answer within the time the call had.
    #[error("no answer from {url} (connection `{connection}`) within {} ms while {waiting}", limit.as_millis())]
    Timeout {
        /// The connection's name.
        connection: String,
        /// Its URL.
        url: String,
        /// What it was waiting for.
        waiting: &'static str,
        /// The time it had.
        limit: Duration,
    },
    /// The plugin's filter is not an RFC 4515 filter.
    #[error("the search filter `{filter}` is not a valid LDAP filter (RFC 4515)")]
    Filter {
        /// The filter (cut to 200 characters).
        filter: String,
    },
    /// The `ca_file` cannot be used.
    #[error("LDAP connection `{connection}`: cannot use `ca_file` {}: {reason}", path.display())]
    CaFile {
        /// The connection's name.
        connection: String,
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// Anything else `ldap3` reports.
    #[error("{operation} on {url} (connection `{connection}`) failed: {reason}")]
    Other {
        /// The connection's name.
        connection: String,
        /// Its URL.
        url: String,
        /// What was done.
        operation: String,
        /// Why.
        reason: String,
    },
}

impl LdapError {
    /// The LDAP result code a plugin gets: the server's, or 81, 85, 87, 91.
    pub fn code(&self) -> u32 {
        match self {
            LdapError::Result { code, .. } | LdapError::BindRefused { code, .. } => *code,
            LdapError::Connect { .. }
            | LdapError::Tls { .. }
            | LdapError::StartTls { .. }
            | LdapError::MissingSecret { .. }
            | LdapError::CaFile { .. } => code::CONNECT_ERROR,
            LdapError::Lost { .. } | LdapError::Other { .. } => code::SERVER_DOWN,
            LdapError::Timeout { .. } => code::TIMEOUT,
            LdapError::Filter { .. } => code::FILTER_ERROR,
        }
    }

    /// The message a plugin gets: the server's diagnostic text as sent for
    /// a server's result (its result name if it sent none), the whole
    /// explanation otherwise.
    pub fn message(&self) -> String {
        match self {
            LdapError::Result { text, code, .. } if text.is_empty() => {
                result_name(*code).to_owned()
            }
            LdapError::Result { text, .. } => text.clone(),
            other => other.to_string(),
        }
    }

    /// Whether the failure is the gateway's side of things (the way to the
    /// server, or its own account), not a result about what the plugin
    /// asked: worth a line in the gateway's log of its own.
    pub fn is_client_side(&self) -> bool {
        !matches!(self, LdapError::Result { .. } | LdapError::Filter { .. })
    }
}

/// The RFC 4511 name of a result code.
fn result_name(code: u32) -> &'static str {
    match code {
        0 => "success",
        1 => "operationsError",
        2 => "protocolError",
        3 => "timeLimitExceeded",
        4 => "sizeLimitExceeded",
        7 => "authMethodNotSupported",
        8 => "strongerAuthRequired",
        10 => "referral",
        11 => "adminLimitExceeded",
        12 => "unavailableCriticalExtension",
        13 => "confidentialityRequired",
        16 => "noSuchAttribute",
        17 => "undefinedAttributeType",
        18 => "inappropriateMatching",
        19 => "constraintViolation",
        20 => "attributeOrValueExists",
        21 => "invalidAttributeSyntax",
        32 => "noSuchObject",
        34 => "invalidDNSyntax",
        48 => "inappropriateAuthentication",
        49 => "invalidCredentials",
        50 => "insufficientAccessRights",
        51 => "busy",
        52 => "unavailable",
        53 => "unwillingToPerform",
        64 => "namingViolation",
        65 => "objectClassViolation",
        68 => "entryAlreadyExists",
        80 => "other",
        _ => "unknown",
    }
}

/// How deep a search goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SearchScope {
    /// The base entry only.
    Base,
    /// The base's children.
    OneLevel,
    /// The base and everything below.
    Subtree,
}

/// One change to an entry's attribute.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// Adds values.
    Add(String, Vec<Vec<u8>>),
    /// Replaces every value (none: removes the attribute).
    Replace(String, Vec<Vec<u8>>),
    /// Deletes the listed values (none: the whole attribute).
    Delete(String, Vec<Vec<u8>>),
}

/// One entry a search found: its DN and attributes (sorted by name).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found {
    /// The entry's DN.
    pub dn: String,
    /// Its attributes and their values.
    pub attributes: Vec<(String, Vec<Vec<u8>>)>,
}

/// The LDAP connections of a gateway config, by name.
#[derive(Default)]
pub struct Ldap {
    connections: BTreeMap<String, Arc<Connection>>,
}

impl std::fmt::Debug for Ldap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ldap")
            .field("connections", &self.connections.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Ldap {
    /// No connections.
    pub fn none() -> Ldap {
        Ldap::default()
    }

    /// The connections `config` defines, with their TLS settings read (CA
    /// files, the operating system's roots) and their bind passwords taken
    /// from `secrets`. Nothing connects yet.
    pub fn from_config(
        config: &GatewayConfig,
        secrets: &Arc<Secrets>,
    ) -> Result<Ldap, CapabilitiesError> {
        Ldap::with_secrets(config, |name| secrets.get(name).cloned())
            .map_err(|e| CapabilitiesError::Ldap(e.to_string()))
    }

    /// [`Ldap::from_config`] with the bind passwords from `secret`.
    pub fn with_secrets(
        config: &GatewayConfig,
        secret: impl Fn(&str) -> Option<Secret>,
    ) -> Result<Ldap, LdapError> {
        let mut os_roots: Option<Arc<ClientConfig>> = None;
        let mut connections = BTreeMap::new();
        for (name, settings) in &config.ldap {
            let tls = if settings.insecure {
                None
            } else if let Some(path) = &settings.ca_file {
                Some(client_config(ca_roots(name, path)?))
            } else {
                Some(
                    os_roots
                        .get_or_insert_with(|| client_config(native_roots()))
                        .clone(),
                )
            };
            let password = settings.bind_secret.as_deref().and_then(&secret);
            connections.insert(
                name.clone(),
                Arc::new(Connection::new(
                    name.clone(),
                    settings.clone(),
                    tls,
                    password,
                )),
            );
        }
        Ok(Ldap { connections })
    }

    /// The connection called `name`, if the config defines it.
    pub fn connection(&self, name: &str) -> Option<Arc<Connection>> {
        self.connections.get(name).cloned()
    }
}

/// The roots of the operating system's trust store (those it can parse).
fn native_roots() -> RootCertStore {
    let mut roots = RootCertStore::empty();
    let found = rustls_native_certs::load_native_certs();
    for e in &found.errors {
        tracing::warn!(target: "resetgate::ldap", "reading the system's CA certificates: {e}");
    }
    let (_, ignored) = roots.add_parsable_certificates(found.certs);
    if ignored > 0 {
        tracing::debug!(target: "resetgate::ldap", ignored, "system CA certificates rustls cannot use");
    }
    roots
}

/// The certificates of a `ca_file`: at least one, every one usable.
fn ca_roots(connection: &str, path: &Path) -> Result<RootCertStore, LdapError> {
    let bad = |reason: String| LdapError::CaFile {
        connection: connection.to_owned(),
        path: path.to_owned(),
        reason,
    };
    let bytes =
        crate::readfile::read_limited(path, MAX_CA_BYTES).map_err(|e| bad(e.to_string()))?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(format!("it is not PEM: {e}")))?;
    if certs.is_empty() {
        return Err(bad(
            "it holds no certificate (expected PEM `CERTIFICATE` blocks)".to_owned(),
        ));
    }
    let mut roots = RootCertStore::empty();
    for cert in certs {
        roots.add(cert).map_err(|e| bad(e.to_string()))?;
    }
    Ok(roots)
}

fn client_config(roots: RootCertStore) -> Arc<ClientConfig> {
    let builder = ClientConfig::builder_with_provider(Arc::new(crate::listen::provider()))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12]);
    match builder {
        Ok(b) => Arc::new(b.with_root_certificates(roots).with_no_client_auth()),
        // The provider lists suites of both versions: not reached.
        Err(_) => Arc::new(
            ClientConfig::builder_with_provider(Arc::new(crate::listen::provider()))
                .with_safe_default_protocol_versions()
                .map(|b| b.with_root_certificates(RootCertStore::empty()))
                .map(|b| b.with_no_client_auth())
                .unwrap_or_else(|_| {
                    ClientConfig::builder()
                        .with_root_certificates(RootCertStore::empty())
                        .with_no_client_auth()
                }),
        ),
    }
}

/// One named connection: its settings, its pool, its limit.
pub struct Connection {
    name: String,
    settings: LdapConnection,
    /// `None` for `insecure: true`.
    tls: Option<Arc<ClientConfig>>,
    /// The bind account's password (`None` without `bind_dn`, or when its
    /// secret is not set).
    bind_password: Option<Secret>,
    /// Handles of the pooled connections (each multiplexes operations),
    /// with the number of the connection made in that slot.
    slots: Vec<Mutex<Option<(u64, ldap3::Ldap)>>>,
    next: AtomicUsize,
    made: AtomicU64,
    permits: Semaphore,
}

/// A pooled handle and the slot it came from.
struct Pooled {
    slot: usize,
    number: u64,
    ldap: ldap3::Ldap,
}

impl Connection {
    fn new(
        name: String,
        settings: LdapConnection,
        tls: Option<Arc<ClientConfig>>,
        bind_password: Option<Secret>,
    ) -> Connection {
        let slots = (0..settings.pool.max(1))
            .map(|_| Mutex::new(None))
            .collect();
        let permits = Semaphore::new(settings.max_concurrent.max(1));
        Connection {
            name,
            settings,
            tls,
            bind_password,
            slots,
            next: AtomicUsize::new(0),
            made: AtomicU64::new(0),
            permits,
        }
    }

    /// The connection's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its URL.
    pub fn url(&self) -> &str {
        &self.settings.url
    }

    /// Its flavor.
    pub fn flavor(&self) -> LdapFlavor {
        self.settings.flavor
    }

    /// The name of the secret its account binds with, if it binds.
    pub fn bind_secret(&self) -> Option<&str> {
        self.settings.bind_secret.as_deref()
    }

    fn timeout(&self, waiting: &'static str, limit: Duration) -> LdapError {
        LdapError::Timeout {
            connection: self.name.clone(),
            url: self.settings.url.clone(),
            waiting,
            limit,
        }
    }

    fn result(&self, operation: &str, result: ldap3::LdapResult) -> LdapError {
        LdapError::Result {
            connection: self.name.clone(),
            url: self.settings.url.clone(),
            operation: operation.to_owned(),
            code: result.rc,
            text: result.text,
        }
    }

    /// What an `ldap3` error during `operation` on an open connection means.
    fn failed(&self, operation: &str, e: ldap3::LdapError) -> LdapError {
        let (connection, url) = (self.name.clone(), self.settings.url.clone());
        match e {
            ldap3::LdapError::LdapResult { result } => self.result(operation, result),
            ldap3::LdapError::FilterParsing => LdapError::Filter {
                filter: String::new(),
            },
            e @ (ldap3::LdapError::Io { .. }
            | ldap3::LdapError::OpSend { .. }
            | ldap3::LdapError::ResultRecv { .. }
            | ldap3::LdapError::IdScrubSend { .. }
            | ldap3::LdapError::MiscSend { .. }
            | ldap3::LdapError::EndOfStream) => LdapError::Lost {
                connection,
                url,
                reason: e.to_string(),
            },
            e => LdapError::Other {
                connection,
                url,
                operation: operation.to_owned(),
                reason: e.to_string(),
            },
        }
    }

    /// What an `ldap3` error while connecting means.
    fn connect_failed(&self, e: ldap3::LdapError) -> LdapError {
        let (connection, url) = (self.name.clone(), self.settings.url.clone());
        match e {
            ldap3::LdapError::Io { source } => {
                let tls = source
                    .get_ref()
                    .and_then(|inner| inner.downcast_ref::<rustls::Error>())
                    .map(ToString::to_string);
                match tls {
                    Some(reason) => LdapError::Tls {
                        connection,
                        url,
                        reason,
                    },
                    None => LdapError::Connect {
                        connection,
                        url,
                        reason: source.to_string(),
                    },
                }
            }
            ldap3::LdapError::Rustls { source } => LdapError::Tls {
                connection,
                url,
                reason: source.to_string(),
            },
            ldap3::LdapError::DNSName { source } => LdapError::Tls {
                connection,
                url,
                reason: source.to_string(),
            },
            ldap3::LdapError::LdapResult { result } => LdapError::StartTls {
                connection,
                url,
                reason: format!(
                    "LDAP result {} ({}): {}",
                    result.rc,
                    result_name(result.rc),
                    result.text
                ),
            },
            e => LdapError::Connect {
                connection,
                url,
                reason: e.to_string(),
            },
        }
    }

    /// A new connection (TCP, then TLS or StartTLS unless insecure), its
    /// driver spawned on the current tokio runtime. Not bound.
    async fn open(&self) -> Result<ldap3::Ldap, LdapError> {
        let mut settings = LdapConnSettings::new();
        if let Some(address) = host_port(&self.settings.url) {
            let tcp = nodelay_stream(&address)
                .await
                .map_err(|source| self.connect_failed(ldap3::LdapError::Io { source }))?;
            settings = settings.set_std_stream(StdStream::Tcp(tcp));
        }
        if let Some(tls) = &self.tls {
            settings = settings
                .set_config(tls.clone())
                .set_starttls(self.settings.url.starts_with("ldap://"));
        }
        let (conn, ldap) = LdapConnAsync::with_settings(settings, &self.settings.url)
            .await
            .map_err(|e| self.connect_failed(e))?;
        let (name, url) = (self.name.clone(), self.settings.url.clone());
        tokio::spawn(async move {
            if let Err(e) = conn.drive().await {
                tracing::debug!(target: "resetgate::ldap", connection = %name, %url, "connection ended: {e}");
            }
        });
        Ok(ldap)
    }

    /// A handle from the pool, connecting and binding as the account if
    /// the slot has none or a closed one.
    async fn pooled(&self) -> Result<Pooled, LdapError> {
        let slot = self.next.fetch_add(1, Ordering::Relaxed) % self.slots.len();
        let mut held = self.slots[slot].lock().await;
        if let Some((number, ldap)) = held.as_mut()
            && !ldap.is_closed()
        {
            return Ok(Pooled {
                slot,
                number: *number,
                ldap: ldap.clone(),
            });
        }
        *held = None;
        let mut ldap = self.open().await?;
        if let Some(dn) = &self.settings.bind_dn {
            let password = self
                .bind_password
                .as_ref()
                .ok_or_else(|| LdapError::MissingSecret {
                    connection: self.name.clone(),
                    secret: self.settings.bind_secret.clone().unwrap_or_default(),
                })?;
            let bound = ldap
                .simple_bind(dn, password.expose())
                .await
                .map_err(|e| self.failed("the bind as the connection's account", e))?;
            if bound.rc != 0 {
                let _ = ldap.unbind().await;
                return Err(LdapError::BindRefused {
                    connection: self.name.clone(),
                    url: self.settings.url.clone(),
                    dn: dn.clone(),
                    code: bound.rc,
                    text: bound.text,
                });
            }
        }
        let number = self.made.fetch_add(1, Ordering::Relaxed);
        *held = Some((number, ldap.clone()));
        Ok(Pooled { slot, number, ldap })
    }

    /// Forgets the slot's connection if it is still `ldap`'s, so the next
    /// operation makes a new one.
    async fn discard(&self, pooled: &Pooled) {
        let mut held = self.slots[pooled.slot].lock().await;
        // A connection made since by another operation stays.
        if held.as_ref().is_some_and(|(n, _)| *n == pooled.number) {
            *held = None;
        }
    }

    /// Runs `op` on a pooled connection within `limit`: a permit, a handle,
    /// the operation. A connection that broke or did not answer in time
    /// is dropped from the pool.
    /// A slot of the connection's `max_concurrent`, waited for until `deadline`.
    async fn permit(
        &self,
        deadline: Instant,
        limit: Duration,
    ) -> Result<tokio::sync::SemaphorePermit<'_>, LdapError> {
        let waiting = "waiting for a free operation slot (`max_concurrent`)";
        match tokio::time::timeout_at(deadline, self.permits.acquire()).await {
            Ok(Ok(permit)) => Ok(permit),
            // Timed out, or the semaphore was closed (never done).
            Ok(Err(_)) | Err(_) => Err(self.timeout(waiting, limit)),
        }
    }

    async fn run<T, F, Fut>(&self, limit: Duration, op: F) -> Result<T, LdapError>
    where
        F: FnOnce(ldap3::Ldap) -> Fut,
        Fut: std::future::Future<Output = Result<T, LdapError>>,
    {
        let limit = limit.saturating_sub(MARGIN);
        let deadline = Instant::now() + limit;
        let _permit = self.permit(deadline, limit).await?;
        let pooled = tokio::time::timeout_at(deadline, self.pooled())
            .await
            .map_err(|_| self.timeout("connecting and binding", limit))??;
        let outcome = tokio::time::timeout_at(deadline, op(pooled.ldap.clone())).await;
        match outcome {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => {
                if matches!(e, LdapError::Lost { .. }) {
                    self.discard(&pooled).await;
                }
                Err(e)
            }
            Err(_) => {
                self.discard(&pooled).await;
                Err(self.timeout("waiting for the server's answer", limit))
            }
        }
    }

    /// Searches `base` (see the WIT's `ldap.search`). `size_limit` is
    /// 1..=[`MAX_SIZE_LIMIT`]; more entries fail with code 4.
    pub async fn search(
        &self,
        limit: Duration,
        base: &str,
        scope: SearchScope,
        filter: &str,
        attributes: &[String],
        size_limit: u32,
    ) -> Result<Vec<Found>, LdapError> {
        if ldap3::parse_filter(filter).is_err() {
            return Err(LdapError::Filter {
                filter: filter.chars().take(200).collect(),
            });
        }
        let scope = match scope {
            SearchScope::Base => Scope::Base,
            SearchScope::OneLevel => Scope::OneLevel,
            SearchScope::Subtree => Scope::Subtree,
        };
        let size = size_limit.clamp(1, MAX_SIZE_LIMIT);
        self.run(limit, |mut ldap| async move {
            let result = ldap
                .with_search_options(SearchOptions::new().sizelimit(size as i32))
                .search(base, scope, filter, attributes)
                .await
                .map_err(|e| self.failed("search", e))?;
            let ldap3::SearchResult(entries, done) = result;
            if done.rc == code::SIZE_LIMIT_EXCEEDED || entries.len() > size as usize {
                return Err(LdapError::Result {
                    connection: self.name.clone(),
                    url: self.settings.url.clone(),
                    operation: "search".to_owned(),
                    code: code::SIZE_LIMIT_EXCEEDED,
                    text: format!("more than {size} entries match"),
                });
            }
            if done.rc != 0 {
                return Err(self.result("search", done));
            }
            Ok(entries
                .into_iter()
                .map(|e| {
                    let e = SearchEntry::construct(e);
                    let mut attributes: Vec<(String, Vec<Vec<u8>>)> = e
                        .attrs
                        .into_iter()
                        .map(|(k, vs)| (k, vs.into_iter().map(String::into_bytes).collect()))
                        .chain(e.bin_attrs)
                        .collect();
                    attributes.sort_by(|a, b| a.0.cmp(&b.0));
                    Found {
                        dn: e.dn,
                        attributes,
                    }
                })
                .collect())
        })
        .await
    }

    /// Applies `changes` to the entry `dn`.
    pub async fn modify(
        &self,
        limit: Duration,
        dn: &str,
        changes: Vec<Change>,
    ) -> Result<(), LdapError> {
        let mods: Vec<Mod<Vec<u8>>> = changes
            .into_iter()
            .map(|c| match c {
                Change::Add(a, vs) => Mod::Add(a.into_bytes(), vs.into_iter().collect()),
                Change::Replace(a, vs) => Mod::Replace(a.into_bytes(), vs.into_iter().collect()),
                Change::Delete(a, vs) => Mod::Delete(a.into_bytes(), vs.into_iter().collect()),
            })
            .collect();
        self.run(limit, |mut ldap| async move {
            let done = ldap
                .modify(dn, mods)
                .await
                .map_err(|e| self.failed("modify", e))?;
            if done.rc != 0 {
                return Err(self.result("modify", done));
            }
            Ok(())
        })
        .await
    }

    /// Sets the password of `dn` as the connection's account: the Password
    /// Modify extended operation (RFC 3062), or for Active Directory a
    /// `unicodePwd` replace with the quoted password in UTF-16LE.
    pub async fn set_password(
        &self,
        limit: Duration,
        dn: &str,
        password: &Secret,
    ) -> Result<(), LdapError> {
        let flavor = self.settings.flavor;
        self.run(limit, |mut ldap| async move {
            let done = match flavor {
                LdapFlavor::Openldap => {
                    let exop = PasswordModify {
                        user_id: Some(dn),
                        old_pass: None,
                        new_pass: Some(password.expose()),
                    };
                    ldap.extended(exop)
                        .await
                        .map_err(|e| self.failed("the password modify operation", e))?
                        .1
                }
                LdapFlavor::ActiveDirectory => {
                    let value = unicode_pwd(password);
                    let mods = vec![Mod::Replace(
                        b"unicodePwd".to_vec(),
                        HashSet::from([value.to_vec()]),
                    )];
                    ldap.modify(dn, mods)
                        .await
                        .map_err(|e| self.failed("the unicodePwd replace", e))?
                }
            };
            if done.rc != 0 {
                return Err(self.result("setting the password", done));
            }
            Ok(())
        })
        .await
    }

    /// Whether `password` binds as `dn`, over a connection of its own (not
    /// pooled, but within the connection's limit of operations at once).
    /// An empty password is `false` without a bind.
    pub async fn check_bind(
        &self,
        limit: Duration,
        dn: &str,
        password: &Secret,
    ) -> Result<bool, LdapError> {
        if password.expose().is_empty() {
            return Ok(false);
        }
        let limit = limit.saturating_sub(MARGIN);
        let deadline = Instant::now() + limit;
        let _permit = self.permit(deadline, limit).await?;
        let mut ldap = tokio::time::timeout_at(deadline, self.open())
            .await
            .map_err(|_| self.timeout("connecting", limit))??;
        let bound = tokio::time::timeout_at(deadline, ldap.simple_bind(dn, password.expose()))
            .await
            .map_err(|_| self.timeout("waiting for the bind's answer", limit))?
            .map_err(|e| self.failed("the bind", e))?;
        // Best effort: dropping the handle closes the connection anyway.
        let _ = tokio::time::timeout_at(deadline, ldap.unbind()).await;
        match bound.rc {
            0 => Ok(true),
            code::INVALID_CREDENTIALS => Ok(false),
            _ => Err(self.result("the bind", bound)),
        }
    }
}

/// `host:port` of an `ldap://` or `ldaps://` URL (ports 389 and 636 by
/// default), as `ldap3` would connect to it; `None` if it cannot be read
/// (then `ldap3` connects, and reports the URL).
fn host_port(url: &str) -> Option<String> {
    let uri: ureq::http::Uri = url.parse().ok()?;
    let default = match uri.scheme_str()? {
        "ldaps" => 636,
        "ldap" => 389,
        _ => return None,
    };
    let host = uri.host().filter(|h| !h.is_empty())?;
    Some(format!("{host}:{}", uri.port_u16().unwrap_or(default)))
}

/// A TCP connection to `address` with `TCP_NODELAY`, which `ldap3` does not
/// set. Without it a small write that follows another before the server
/// has acknowledged it (the first request after the TLS handshake, or two
/// operations multiplexed on one pooled connection) waits for the
/// server's delayed ACK: 40 ms on Linux, which made every `check-bind`
/// take 44 ms on loopback (BENCHMARKS.md, issue 12).
async fn nodelay_stream(address: &str) -> std::io::Result<std::net::TcpStream> {
    let tcp = tokio::net::TcpStream::connect(address).await?;
    tcp.set_nodelay(true)?;
    tcp.into_std()
}

/// Active Directory's `unicodePwd` value: the password in double quotes,
/// as UTF-16LE.
fn unicode_pwd(password: &Secret) -> Zeroizing<Vec<u8>> {
    let quoted = Zeroizing::new(format!("\"{}\"", password.expose()));
    let mut out = Zeroizing::new(Vec::with_capacity(quoted.len() * 2));
    for unit in quoted.encode_utf16() {
        out.extend_from_slice(&unit.to_le_bytes());
    }
    out
}

// ----- the host functions ----------------------------------------------------

impl HostState {
    /// The connection `name` for `ldap.<function>`: the step must grant it
    /// and the gateway config define it, otherwise the call stops with a
    /// message for the admin.
    fn ldap_connection(&mut self, function: &str, name: &str) -> WasmResult<Arc<Connection>> {
        if !self.granted.has(Capability::Ldap) {
            return self.capability(Capability::Ldap, function);
        }
        if !self.grants.ldap.iter().any(|g| g == name) {
            let granted = self.grants.ldap.join(", ");
            return self.refuse(format!(
                "it called ldap.{function} on the LDAP connection `{name}`, which this step does \
                 not grant (it grants: {granted}); add it to the step's `grants: {{ ldap: [...] }}` \
                 if the plugin should use it"
            ));
        }
        match self.caps.ldap.connection(name) {
            Some(c) => Ok(c),
            None => self.refuse(format!(
                "it called ldap.{function} on the LDAP connection `{name}`, which the gateway \
                 config does not define; define it under `ldap:` in the gateway config"
            )),
        }
    }

    /// Runs `op` on `connection` within the time the call has left; at the
    /// deadline the call stops (naming `what`). A failure on the way to the
    /// server (not a result the server sent) is logged for the admin.
    fn ldap_run<T, F, Fut>(
        &mut self,
        what: &'static str,
        connection: &Connection,
        op: F,
    ) -> WasmResult<Result<T, wit::ldap::LdapError>>
    where
        F: FnOnce(Duration) -> Fut,
        Fut: std::future::Future<Output = Result<T, LdapError>>,
    {
        let limit = self.remaining();
        match bounded(limit, op(limit)) {
            Some(Ok(value)) => Ok(Ok(value)),
            Some(Err(e)) => {
                if e.is_client_side() {
                    tracing::warn!(
                        target: "resetgate::ldap",
                        connection = connection.name(),
                        url = connection.url(),
                        code = e.code(),
                        "{what}: {e}"
                    );
                }
                Ok(Err(wit::ldap::LdapError {
                    code: e.code(),
                    message: e.message(),
                }))
            }
            None => {
                tracing::warn!(
                    target: "resetgate::ldap",
                    connection = connection.name(),
                    url = connection.url(),
                    "{what}: no answer before the call's deadline ({} ms)",
                    limit.as_millis()
                );
                self.stop_at_deadline(what)
            }
        }
    }

    /// The password behind a handle the plugin holds.
    fn ldap_secret(&mut self, handle: &Resource<SecretHandle>) -> WasmResult<Secret> {
        Ok(self.table.get(handle)?.0.clone())
    }
}

fn attribute_values(a: wit::ldap::Attribute) -> (String, Vec<Vec<u8>>) {
    (a.name, a.values)
}

impl wit::ldap::Host for HostState {
    fn search(
        &mut self,
        connection: String,
        base: String,
        scope: wit::ldap::Scope,
        filter: String,
        attributes: Vec<String>,
        size_limit: u32,
    ) -> WasmResult<Result<Vec<wit::ldap::Entry>, wit::ldap::LdapError>> {
        let c = self.ldap_connection("search", &connection)?;
        if !(1..=MAX_SIZE_LIMIT).contains(&size_limit) {
            return self.refuse(format!(
                "ldap.search was given a size limit of {size_limit}; it must be 1 to {MAX_SIZE_LIMIT}"
            ));
        }
        let scope = match scope {
            wit::ldap::Scope::Base => SearchScope::Base,
            wit::ldap::Scope::OneLevel => SearchScope::OneLevel,
            wit::ldap::Scope::Subtree => SearchScope::Subtree,
        };
        let found = self.ldap_run("ldap.search", &c, |limit| {
            c.search(limit, &base, scope, &filter, &attributes, size_limit)
        })?;
        Ok(found.map(|entries| {
            entries
                .into_iter()
                .map(|e| wit::ldap::Entry {
                    dn: e.dn,
                    attributes: e
                        .attributes
                        .into_iter()
                        .map(|(name, values)| wit::ldap::Attribute { name, values })
                        .collect(),
                })
                .collect()
        }))
    }

    fn modify(
        &mut self,
        connection: String,
        dn: String,
        changes: Vec<wit::ldap::Modification>,
    ) -> WasmResult<Result<(), wit::ldap::LdapError>> {
        let c = self.ldap_connection("modify", &connection)?;
        let changes: Vec<Change> = changes
            .into_iter()
            .map(|m| match m {
                wit::ldap::Modification::Add(a) => {
                    let (n, v) = attribute_values(a);
                    Change::Add(n, v)
                }
                wit::ldap::Modification::Replace(a) => {
                    let (n, v) = attribute_values(a);
                    Change::Replace(n, v)
                }
                wit::ldap::Modification::Delete(a) => {
                    let (n, v) = attribute_values(a);
                    Change::Delete(n, v)
                }
            })
            .collect();
        self.ldap_run("ldap.modify", &c, |limit| c.modify(limit, &dn, changes))
    }

    fn set_password(
        &mut self,
        connection: String,
        dn: String,
        password: Resource<SecretHandle>,
    ) -> WasmResult<Result<(), wit::ldap::LdapError>> {
        let c = self.ldap_connection("set-password", &connection)?;
        let password = self.ldap_secret(&password)?;
        self.ldap_run("ldap.set-password", &c, |limit| {
            c.set_password(limit, &dn, &password)
        })
    }

    fn check_bind(
        &mut self,
        connection: String,
        dn: String,
        password: Resource<SecretHandle>,
    ) -> WasmResult<Result<bool, wit::ldap::LdapError>> {
        let c = self.ldap_connection("check-bind", &connection)?;
        let password = self.ldap_secret(&password)?;
        self.ldap_run("ldap.check-bind", &c, |limit| {
            c.check_bind(limit, &dn, &password)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connection(url: &str, insecure: bool) -> Connection {
        Connection::new(
            "corp".to_owned(),
            LdapConnection {
                url: url.to_owned(),
                bind_dn: None,
                bind_secret: None,
                flavor: LdapFlavor::Openldap,
                ca_file: None,
                insecure,
                pool: 2,
                max_concurrent: 2,
            },
            (!insecure).then(|| client_config(RootCertStore::empty())),
            None,
        )
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn connections_are_made_with_tcp_nodelay() {
        assert_eq!(
            host_port("ldaps://dc1.corp.example").as_deref(),
            Some("dc1.corp.example:636")
        );
        assert_eq!(
            host_port("ldap://127.0.0.1:3890/").as_deref(),
            Some("127.0.0.1:3890")
        );
        assert_eq!(host_port("ldap://[::1]").as_deref(), Some("[::1]:389"));
        assert_eq!(host_port("ldapi:///run/slapd.sock"), None);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let tcp = rt().block_on(nodelay_stream(&address)).unwrap();
        assert!(tcp.nodelay().unwrap(), "Nagle's algorithm is still on");
    }

    #[test]
    fn unicode_pwd_is_quoted_utf16le() {
        // From the notes: 'Reset-Passw0rd2!' as AD wants it, base64.
        let v = unicode_pwd(&Secret::from("Reset-Passw0rd2!"));
        let mut expected = Vec::new();
        for u in "\"Reset-Passw0rd2!\"".encode_utf16() {
            expected.extend_from_slice(&u.to_le_bytes());
        }
        assert_eq!(v.as_slice(), expected.as_slice());
        assert_eq!(&v[..4], &[b'"', 0, b'R', 0]);
        // Outside the BMP: a surrogate pair.
        let v = unicode_pwd(&Secret::from("𝄞"));
        assert_eq!(v.as_slice(), &[b'"', 0, 0x34, 0xd8, 0x1e, 0xdd, b'"', 0]);
    }

    #[test]
    fn a_refused_port_is_a_connect_error_naming_the_connection() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("ldap://127.0.0.1:{port}");
        let c = connection(&url, true);
        let e = rt()
            .block_on(c.search(
                Duration::from_secs(5),
                "",
                SearchScope::Base,
                "(objectClass=*)",
                &[],
                1,
            ))
            .unwrap_err();
        assert_eq!(e.code(), code::CONNECT_ERROR, "{e}");
        let text = e.to_string();
        assert!(
            text.starts_with(&format!("cannot connect to {url} (connection `corp`): ")),
            "{text}"
        );
    }

    #[test]
    fn a_server_that_never_answers_is_a_timeout_within_the_limit() {
        let rt = rt();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        for (url, waiting) in [
            (
                format!("ldap://127.0.0.1:{port}"),
                "waiting for the server's answer",
            ),
            (
                format!("ldaps://127.0.0.1:{port}"),
                "connecting and binding",
            ),
        ] {
            let c = connection(&url, url.starts_with("ldap://"));
            let started = std::time::Instant::now();
            let e = rt
                .block_on(c.search(
                    Duration::from_millis(300),
                    "",
                    SearchScope::Base,
                    "(objectClass=*)",
                    &[],
                    1,
                ))
                .unwrap_err();
            assert!(started.elapsed() < Duration::from_secs(5));
            assert_eq!(e.code(), code::TIMEOUT, "{e}");
            assert_eq!(
                e.to_string(),
                format!("no answer from {url} (connection `corp`) within 280 ms while {waiting}")
            );
        }
        drop(listener);
    }

    #[test]
    fn an_invalid_filter_is_refused_before_connecting() {
        let c = connection("ldap://127.0.0.1:9", true);
        let e = rt()
            .block_on(c.search(
                Duration::from_secs(1),
                "",
                SearchScope::Base,
                "uid=a)(",
                &[],
                1,
            ))
            .unwrap_err();
        assert_eq!(e.code(), code::FILTER_ERROR);
        assert_eq!(
            e.to_string(),
            "the search filter `uid=a)(` is not a valid LDAP filter (RFC 4515)"
        );
    }

    #[test]
    fn an_empty_password_never_binds() {
        // Port 9 (discard) is never contacted: no bind is attempted.
        let c = connection("ldap://127.0.0.1:9", true);
        let bound = rt()
            .block_on(c.check_bind(Duration::from_secs(1), "uid=a", &Secret::from("")))
            .unwrap();
        assert!(!bound);
    }

    #[test]
    fn server_results_keep_their_code_and_text() {
        let e = LdapError::Result {
            connection: "ad".to_owned(),
            url: "ldaps://dc1".to_owned(),
            operation: "setting the password".to_owned(),
            code: 19,
            text: "0000052D: Constraint violation - check_password_restrictions: the password is too short".to_owned(),
        };
        assert_eq!(e.code(), 19);
        assert!(e.message().starts_with("0000052D: "));
        assert_eq!(
            e.to_string(),
            "setting the password on ldaps://dc1 (connection `ad`) failed with LDAP result 19 \
             (constraintViolation): 0000052D: Constraint violation - check_password_restrictions: \
             the password is too short"
        );
        let empty = LdapError::Result {
            connection: "ad".to_owned(),
            url: "ldaps://dc1".to_owned(),
            operation: "search".to_owned(),
            code: 32,
            text: String::new(),
        };
        assert_eq!(empty.message(), "noSuchObject");
    }

    #[test]
    fn ca_file_problems_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        let e = ca_roots("corp", &empty).unwrap_err();
        assert!(
            e.to_string().starts_with(&format!(
                "LDAP connection `corp`: cannot use `ca_file` {}: it holds no certificate",
                empty.display()
            )),
            "{e}"
        );
        let missing = dir.path().join("missing.pem");
        let e = ca_roots("corp", &missing).unwrap_err();
        assert!(e.to_string().contains("missing.pem"), "{e}");
    }
}
