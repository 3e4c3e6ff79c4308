//! The gateway config: where the plugins, workflows and state are, where
//! the gateway listens, and the named capabilities (LDAP connections,
//! secrets, commands, HTTP origins) that workflows may grant. A workflow can
//! only grant what this file defines: it cannot invent a secret.
//!
//! Every setting is optional and `GatewayConfig::default()` is what
//! `resetgate serve` runs with when there is no config file. The file is
//! read the way workflows are (`schemas/config.schema.json`, every error at
//! `file:line:column`). Relative paths written in the file are relative to
//! the file's folder; the built-in defaults are relative to the working folder.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use crate::store::{PgTls, PgTlsMode, PostgresSpec, StoreSpec};
use crate::workflow::diagnostic::{Diagnostic, list};
use crate::workflow::file::{self, Kind};
use crate::workflow::units::HumanDuration;
use crate::workflow::yaml::{Document, Pos, escape};

/// The gateway config's JSON Schema, as shipped in `schemas/`.
pub const SCHEMA: &str = include_str!("../../schemas/config.schema.json");

/// The longest an allow-listed command may be given.
const MAX_COMMAND_TIMEOUT: Duration = Duration::from_secs(3600);

/// An LDAP connection workflows may grant by name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LdapConnection {
    /// `ldaps://host[:port]`, or `ldap://host[:port]`: upgraded with
    /// StartTLS unless [`LdapConnection::insecure`].
    pub url: String,
    /// The DN to bind as; `None` for an anonymous connection.
    pub bind_dn: Option<String>,
    /// The name of the secret (in [`GatewayConfig::secrets`]) holding the bind password.
    pub bind_secret: Option<String>,
    /// Which server it is: decides how a password is set.
    pub flavor: LdapFlavor,
    /// PEM file of the CA certificate(s) the server's certificate must
    /// chain to; `None`: the operating system's roots. Read when the
    /// gateway starts and on `SIGHUP`.
    pub ca_file: Option<PathBuf>,
    /// Plain LDAP, no TLS at all (`ldap://` only; for tests and a server
    /// on the same host).
    pub insecure: bool,
    /// How many connections bound as the bind account the gateway keeps.
    pub pool: usize,
    /// How many operations may run on this connection at once; further
    /// ones wait (within their call's time) so that one slow server cannot
    /// hold every request worker.
    pub max_concurrent: usize,
}

/// Which LDAP server a connection talks to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LdapFlavor {
    /// OpenLDAP (and other RFC 3062 servers): passwords are set with the
    /// Password Modify extended operation.
    #[default]
    Openldap,
    /// Active Directory: passwords are set with a `unicodePwd` replace.
    ActiveDirectory,
}

/// The default of [`LdapConnection::pool`].
pub const LDAP_POOL_DEFAULT: usize = 2;
/// The default of [`LdapConnection::max_concurrent`].
pub const LDAP_MAX_CONCURRENT_DEFAULT: usize = 8;

/// Where the gateway keeps its state (`store:`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreConfig {
    /// sled, embedded in a folder: one gateway at a time.
    Sled {
        /// The folder (sled's files are in its `db/`); `None`: the data
        /// folder, [`GatewayConfig::data_dir`] (also when `--data-dir`
        /// overrides it).
        dir: Option<PathBuf>,
    },
    /// A PostgreSQL database, which several gateways may share.
    Postgres(PostgresConfig),
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig::Sled { dir: None }
    }
}

/// `store: { backend: postgres, ... }`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PostgresConfig {
    /// `postgres://USER@HOST:PORT/DATABASE`, never with a password
    /// ([`check_postgres_url`] passed it).
    pub url: String,
    /// The secret (in [`GatewayConfig::secrets`]) holding the password.
    pub password_secret: Option<String>,
    /// How the connection is protected.
    pub tls_mode: PgTlsMode,
    /// PEM file of the CA(s) the server's certificate must chain to
    /// (`verify-full` only); `None`: the operating system's roots.
    pub ca_file: Option<PathBuf>,
    /// Connections kept.
    pub pool: u32,
    /// The gateway's name in the database (its audit chains); `None`: the
    /// host name and the listen port ([`default_node`]).
    pub node: Option<String>,
    /// Whether `disable` may be used towards a host other than loopback.
    pub insecure: bool,
}

/// `store.tls.mode` as written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum RawTlsMode {
    Disable,
    Require,
    #[default]
    VerifyFull,
}

impl From<RawTlsMode> for PgTlsMode {
    fn from(mode: RawTlsMode) -> PgTlsMode {
        match mode {
            RawTlsMode::Disable => PgTlsMode::Disable,
            RawTlsMode::Require => PgTlsMode::Require,
            RawTlsMode::VerifyFull => PgTlsMode::VerifyFull,
        }
    }
}

/// The name of a TLS mode as written in the config (and libpq's `sslmode`).
pub fn tls_mode_name(mode: PgTlsMode) -> &'static str {
    match mode {
        PgTlsMode::Disable => "disable",
        PgTlsMode::Require => "require",
        PgTlsMode::VerifyFull => "verify-full",
    }
}

/// The default of [`PostgresConfig::pool`].
pub const PG_POOL_DEFAULT: u32 = 8;

/// Why a store setting cannot be used. Never holds a URL as written (it
/// may hold a password) nor a secret's value.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Not a `postgres://` or `postgresql://` URL.
    #[error("is not a `postgres://` URL")]
    NotPostgresUrl,
    /// The URL holds a password (in its user part or as `password=`).
    #[error("holds a password")]
    PasswordInUrl,
    /// The URL does not parse.
    #[error("cannot be read: {reason}")]
    UnreadableUrl {
        /// What the parser said (it never quotes the URL).
        reason: String,
    },
    /// The URL names no user.
    #[error("names no user")]
    NoUser,
    /// The URL names no host.
    #[error("names no host")]
    NoHost,
    /// The URL sets TLS itself.
    #[error("sets `{param}`")]
    TlsInUrl {
        /// `sslmode`, `sslrootcert`, ...
        param: String,
    },
    /// The database password could not be read.
    #[error("the database password: {0}")]
    Password(#[from] crate::plugin::secrets::SecretsError),
    /// `password_secret` names a secret the config does not define.
    #[error("`store.password_secret` names secret `{0}`, which `secrets` does not define")]
    UndefinedSecret(String),
    /// The host name, needed for the default node name, is unknown.
    #[error("cannot tell this host's name for the store's node name ({reason}); set `store.node`")]
    HostName {
        /// Why.
        reason: String,
    },
}

impl ConfigError {
    /// How to fix a URL problem.
    pub fn help(&self) -> String {
        match self {
            ConfigError::NotPostgresUrl | ConfigError::UnreadableUrl { .. } => {
                "write `postgres://USER@HOST:PORT/DATABASE`".to_owned()
            }
            ConfigError::PasswordInUrl => "remove the password from the URL \
                 (`postgres://USER@HOST:PORT/DATABASE`) and name a secret holding it: \
                 `password_secret: NAME`, with `secrets: { NAME: { file: FILE } }` (mode 600)"
                .to_owned(),
            ConfigError::NoUser => {
                "name the database user: `postgres://USER@HOST:PORT/DATABASE`".to_owned()
            }
            ConfigError::NoHost => {
                "name the database server: `postgres://USER@HOST:PORT/DATABASE` \
                 (a Unix socket folder percent-encoded, e.g. `%2Frun%2Fpostgresql`)"
                    .to_owned()
            }
            ConfigError::TlsInUrl { .. } => {
                "remove it from the URL and set `tls: { mode: ..., ca_file: ... }`".to_owned()
            }
            ConfigError::Password(_)
            | ConfigError::UndefinedSecret(_)
            | ConfigError::HostName { .. } => String::new(),
        }
    }
}

/// A PostgreSQL URL, checked: no password, a user and a host, no TLS
/// settings of its own.
#[derive(Clone, Debug)]
pub struct PostgresUrl {
    /// Whether every host it names is on this machine (loopback or a Unix
    /// socket): plain TCP to it never crosses a network.
    pub local: bool,
}

/// Checks a `postgres://` URL as the `store:` section and `resetgate store
/// copy` take it. `tls_params`: whether `sslmode` and `sslrootcert` may be in
/// it (the command line's form); the config sets TLS with `store.tls`.
pub fn check_postgres_url(url: &str, tls_params: bool) -> Result<PostgresUrl, ConfigError> {
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Err(ConfigError::NotPostgresUrl);
    }
    let query = url.split_once('?').map_or("", |(_, q)| q);
    for param in query.split('&') {
        let key = param.split_once('=').map_or(param, |(k, _)| k);
        if key == "password" {
            return Err(ConfigError::PasswordInUrl);
        }
        if !tls_params && key.starts_with("ssl") {
            return Err(ConfigError::TlsInUrl {
                param: key.to_owned(),
            });
        }
    }
    // `sslrootcert` is libpq's, not the driver's: take it out before parsing.
    let kept: Vec<&str> = query
        .split('&')
        .filter(|p| !p.is_empty() && !p.starts_with("sslrootcert="))
        .collect();
    let base = url.split_once('?').map_or(url, |(b, _)| b);
    let parsable = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    let parsed: postgres::Config =
        parsable
            .parse()
            .map_err(|e: postgres::Error| ConfigError::UnreadableUrl {
                reason: e.to_string(),
            })?;
    if parsed.get_password().is_some() {
        return Err(ConfigError::PasswordInUrl);
    }
    if parsed.get_user().is_none_or(str::is_empty) {
        return Err(ConfigError::NoUser);
    }
    let hosts = parsed.get_hosts();
    if hosts.is_empty() {
        return Err(ConfigError::NoHost);
    }
    let loopback_name = |h: &str| {
        let h = h.trim_start_matches('[').trim_end_matches(']');
        h.eq_ignore_ascii_case("localhost")
            || h.parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.to_canonical().is_loopback())
    };
    let addrs = parsed.get_hostaddrs();
    let local = if addrs.is_empty() {
        hosts.iter().all(|h| match h {
            postgres::config::Host::Tcp(name) => loopback_name(name),
            postgres::config::Host::Unix(_) => true,
        })
    } else {
        addrs.iter().all(|ip| ip.to_canonical().is_loopback())
    };
    Ok(PostgresUrl { local })
}

/// The node name a gateway uses unless `store.node` says otherwise: the host
/// name (lowercase, characters other than letters, digits, `.` and `-` as
/// `-`) and the listen port, e.g. `host1-8443`.
pub fn default_node(listen: SocketAddr) -> Result<String, ConfigError> {
    node_for(&listen.port().to_string())
}

/// This host's name as [`default_node`] writes it, then `-` and `suffix`.
pub fn node_for(suffix: &str) -> Result<String, ConfigError> {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname").map_err(|e| {
        ConfigError::HostName {
            reason: e.to_string(),
        }
    })?;
    node_name(raw.trim(), suffix)
}

fn node_name(host: &str, suffix: &str) -> Result<String, ConfigError> {
    let mut name: String = host
        .chars()
        .map(|c| c.to_ascii_lowercase())
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .take(56)
        .collect();
    let trimmed = name.trim_start_matches(['.', '-']).len();
    name.drain(..name.len() - trimmed);
    if name.is_empty() {
        return Err(ConfigError::HostName {
            reason: "it is empty".to_owned(),
        });
    }
    Ok(format!("{name}-{suffix}"))
}

/// Where the host reads a secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecretSource {
    /// An environment variable.
    Env(String),
    /// A file (resolved against the config file's folder).
    File(PathBuf),
}

/// An allow-listed command workflows may grant by name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommandSpec {
    /// The program (an absolute path) and its arguments; run without a shell.
    pub argv: Vec<String>,
    /// How long it may run.
    pub timeout: Duration,
}

/// How many requests to one HTTP origin may run at once unless the config
/// says otherwise.
pub const DEFAULT_HTTP_CONCURRENCY: usize = 4;

/// An origin plugins may be granted outgoing HTTP to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpOrigin {
    /// `scheme://host[:port]` as [`normalise_origin`] writes it: lowercase,
    /// no trailing slash, the scheme's default port left out.
    pub origin: String,
    /// Whether the origin is plain `http://` (only allowed with
    /// `plain_http: true` in the file).
    pub plain_http: bool,
    /// PEM file with the CA certificate(s) the server's certificate must
    /// chain to, instead of the operating system's roots (resolved against
    /// the config file's folder; read when the capability is built).
    pub ca_file: Option<PathBuf>,
    /// How many requests to this origin may run at once.
    pub max_concurrent: usize,
}

impl AsRef<str> for HttpOrigin {
    fn as_ref(&self) -> &str {
        &self.origin
    }
}

/// HTTPS: the server's certificate and key, and optionally the CA that signs
/// client certificates. The files are read when the gateway starts and again
/// on `SIGHUP` (`crate::listen::Tls`), not when the config is read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsSettings {
    /// PEM file with the server certificate, then any intermediates.
    pub cert: PathBuf,
    /// PEM file with the server's private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// Client certificates: asked for only when this is set.
    pub client_auth: Option<ClientAuth>,
}

/// Client certificates (mutual TLS).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientAuth {
    /// PEM file with the CA certificate(s) client certificates must chain to.
    pub ca: PathBuf,
    /// Whether a client without a certificate is refused the handshake
    /// (`client_auth: required`); otherwise it is let in as anonymous.
    pub required: bool,
}

/// How the listener treats connections: how many, and how long a slow or
/// idle client may hold one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Connections served at once; further clients wait in the kernel's
    /// accept queue until one closes.
    pub max: usize,
    /// Connections one client address (IPv4 address, IPv6 /64) may hold at
    /// once; one more is closed as soon as it is accepted.
    pub max_per_ip: usize,
    /// How long a connection may take to present a complete request: an
    /// HTTP/1 request line and headers, the HTTP/2 preface and a whole
    /// header block (and, on an open HTTP/2 connection, the rest of a frame
    /// or header block once begun); also how long an HTTP/1 keep-alive
    /// connection may sit between requests.
    pub header_timeout: Duration,
    /// How long a connection may sit with no request running and no bytes
    /// moving before it is closed (HTTP/1 and HTTP/2).
    pub idle_timeout: Duration,
    /// How long a client may take to complete the TLS handshake.
    pub handshake_timeout: Duration,
    /// On shutdown, how long requests under way may take to finish.
    pub shutdown_timeout: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            max: 4096,
            max_per_ip: 256,
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            handshake_timeout: Duration::from_secs(10),
            shutdown_timeout: Duration::from_secs(10),
        }
    }
}

/// The longest any of the connection timeouts may be set to.
const MAX_CONNECTION_TIMEOUT: Duration = Duration::from_secs(3600);

/// Durable timers (`timers:`): how often the cluster's periodic work runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimerSettings {
    /// How often the flow sweep (expiry, recovery of interrupted flows)
    /// runs, once for all the gateways sharing the store.
    pub sweep_every: Duration,
}

impl Default for TimerSettings {
    fn default() -> Self {
        TimerSettings {
            sweep_every: Duration::from_secs(30),
        }
    }
}

/// The shortest and longest `timers.sweep_every` (gateways look for due
/// work once a second).
const SWEEP_EVERY_RANGE: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(3600));

/// The gateway's config.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GatewayConfig {
    /// The file it was read from; `None` for the built-in defaults.
    pub source: Option<PathBuf>,
    /// Folder of plugin components: plugin `NAME` is `<plugins>/NAME.wasm`.
    pub plugins: PathBuf,
    /// Folder of workflow files.
    pub workflows: PathBuf,
    /// Folder for the data key, the plugin cache and (with the sled store
    /// unless [`StoreConfig::Sled::dir`] says otherwise) the state.
    pub data_dir: PathBuf,
    /// Where the state is kept.
    pub store: StoreConfig,
    /// Where to listen.
    pub listen: SocketAddr,
    /// HTTPS settings; `None` serves plain HTTP (see [`GatewayConfig::allow_plain_http`]).
    pub tls: Option<TlsSettings>,
    /// Whether plain HTTP may be served on an address other than loopback
    /// (behind a proxy that terminates TLS). Without it, `serve` refuses.
    pub allow_plain_http: bool,
    /// Connection limits and timeouts.
    pub connections: ConnectionLimits,
    /// Durable timers.
    pub timers: TimerSettings,
    /// The portal API: keys, anonymous access, body and rate limits.
    pub api: crate::api::ApiConfig,
    /// LDAP connections by name.
    pub ldap: BTreeMap<String, LdapConnection>,
    /// Secrets by name.
    pub secrets: BTreeMap<String, SecretSource>,
    /// The secret holding the data key (`crate::seal`); `None`: the data
    /// folder's `data.key`.
    pub data_key_secret: Option<String>,
    /// Allow-listed commands by name.
    pub commands: BTreeMap<String, CommandSpec>,
    /// Origins plugins may be granted HTTP to, each once (normalised by
    /// [`normalise_origin`]).
    pub http_origins: Vec<HttpOrigin>,
    /// The self-service page's branding (`page:`).
    pub page: crate::api::page::PageSettings,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            source: None,
            plugins: PathBuf::from("target/plugins"),
            workflows: PathBuf::from("workflows"),
            data_dir: PathBuf::from(".resetgate"),
            store: StoreConfig::default(),
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            tls: None,
            allow_plain_http: false,
            connections: ConnectionLimits::default(),
            timers: TimerSettings::default(),
            api: crate::api::ApiConfig::default(),
            ldap: BTreeMap::new(),
            secrets: BTreeMap::new(),
            data_key_secret: None,
            commands: BTreeMap::new(),
            http_origins: Vec::new(),
            page: crate::api::page::PageSettings::default(),
        }
    }
}

/// What `resetgate serve`'s flags set over the config file; applied again
/// to the file each time it is reloaded.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Overrides {
    /// `--listen`.
    pub listen: Option<SocketAddr>,
    /// `--data-dir`.
    pub data_dir: Option<PathBuf>,
    /// `--plugins`.
    pub plugins: Option<PathBuf>,
    /// `--workflows`.
    pub workflows: Option<PathBuf>,
}

impl Overrides {
    /// Sets what the flags set in `config`.
    pub fn apply(&self, config: &mut GatewayConfig) {
        if let Some(v) = self.listen {
            config.listen = v;
        }
        if let Some(v) = &self.data_dir {
            config.data_dir = v.clone();
        }
        if let Some(v) = &self.plugins {
            config.plugins = v.clone();
        }
        if let Some(v) = &self.workflows {
            config.workflows = v.clone();
        }
    }
}

/// The settings a running gateway cannot change, by the name the config
/// file gives them: `running` is what it runs with, `file` what a reloaded
/// file says. Only a restart applies them.
pub fn restart_only_changes(running: &GatewayConfig, file: &GatewayConfig) -> Vec<&'static str> {
    let mut changed = Vec::new();
    let mut differs = |name: &'static str, yes: bool| {
        if yes {
            changed.push(name);
        }
    };
    differs("listen", running.listen != file.listen);
    differs("data_dir", running.data_dir != file.data_dir);
    differs("store", running.store != file.store);
    differs("tls", running.tls.is_some() != file.tls.is_some());
    differs(
        "allow_plain_http",
        running.allow_plain_http != file.allow_plain_http,
    );
    differs("connections", running.connections != file.connections);
    differs("timers", running.timers != file.timers);
    differs(
        "data_key_secret",
        running.data_key_secret != file.data_key_secret,
    );
    changed
}

/// `file` with the settings of [`restart_only_changes`] as `running` has
/// them: what a reload can put in force.
pub fn keep_restart_only(running: &GatewayConfig, mut file: GatewayConfig) -> GatewayConfig {
    file.listen = running.listen;
    file.data_dir = running.data_dir.clone();
    file.store = running.store.clone();
    if running.tls.is_none() != file.tls.is_none() {
        file.tls = running.tls.clone();
    }
    file.allow_plain_http = running.allow_plain_http;
    file.connections = running.connections;
    file.timers = running.timers;
    file.data_key_secret = running.data_key_secret.clone();
    file
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[allow(dead_code)] // probed before the rest is read
    version: u32,
    #[serde(default)]
    plugins: Option<PathBuf>,
    #[serde(default)]
    workflows: Option<PathBuf>,
    #[serde(default)]
    data_dir: Option<PathBuf>,
    #[serde(default)]
    store: Option<RawStore>,
    #[serde(default)]
    listen: Option<String>,
    #[serde(default)]
    tls: Option<RawTls>,
    #[serde(default)]
    allow_plain_http: bool,
    #[serde(default)]
    connections: RawConnections,
    #[serde(default)]
    timers: RawTimers,
    #[serde(default)]
    api: RawApi,
    #[serde(default)]
    ldap: BTreeMap<String, RawLdap>,
    #[serde(default)]
    secrets: BTreeMap<String, RawSecret>,
    #[serde(default)]
    data_key_secret: Option<String>,
    #[serde(default)]
    commands: BTreeMap<String, RawCommand>,
    #[serde(default)]
    http_origins: Vec<RawOrigin>,
    #[serde(default)]
    page: Option<crate::api::page::RawPage>,
}

/// An entry of `http_origins`: a bare origin, or one with settings.
#[derive(Deserialize)]
#[serde(untagged)]
enum RawOrigin {
    Bare(String),
    Full(RawOriginSettings),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOriginSettings {
    origin: String,
    #[serde(default)]
    plain_http: bool,
    #[serde(default)]
    ca_file: Option<PathBuf>,
    #[serde(default)]
    max_concurrent: Option<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert: PathBuf,
    key: PathBuf,
    #[serde(default)]
    client_ca: Option<PathBuf>,
    #[serde(default)]
    client_auth: Option<RawClientAuth>,
}

#[derive(Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum RawClientAuth {
    Optional,
    Required,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawConnections {
    #[serde(default)]
    max: Option<usize>,
    #[serde(default)]
    max_per_ip: Option<usize>,
    #[serde(default)]
    header_timeout: Option<HumanDuration>,
    #[serde(default)]
    idle_timeout: Option<HumanDuration>,
    #[serde(default)]
    handshake_timeout: Option<HumanDuration>,
    #[serde(default)]
    shutdown_timeout: Option<HumanDuration>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawTimers {
    #[serde(default)]
    sweep_every: Option<HumanDuration>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawApi {
    #[serde(default)]
    anonymous: Option<bool>,
    #[serde(default)]
    body_limit: Option<usize>,
    #[serde(default)]
    body_timeout: Option<HumanDuration>,
    #[serde(default)]
    keys: BTreeMap<String, RawApiKey>,
    #[serde(default)]
    operators: BTreeMap<String, RawOperator>,
    #[serde(default)]
    rate_limits: RawRates,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOperator {
    role: String,
    #[serde(default)]
    sha256: Option<String>,
    #[serde(default)]
    client_certificate: Option<RawCertificateMatch>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCertificateMatch {
    #[serde(default)]
    sha256: Option<String>,
    #[serde(default)]
    subject: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApiKey {
    sha256: String,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawRates {
    #[serde(default)]
    anonymous: Option<RawRate>,
    #[serde(default)]
    portal: Option<RawRate>,
    #[serde(default)]
    user: Option<RawRate>,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(deny_unknown_fields)]
struct RawRate {
    per_minute: u32,
    burst: u32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLdap {
    url: String,
    #[serde(default)]
    bind_dn: Option<String>,
    #[serde(default)]
    bind_secret: Option<String>,
    #[serde(default)]
    flavor: LdapFlavor,
    #[serde(default)]
    ca_file: Option<PathBuf>,
    #[serde(default)]
    insecure: bool,
    #[serde(default)]
    pool: Option<usize>,
    #[serde(default)]
    max_concurrent: Option<usize>,
}

#[derive(Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum RawBackend {
    Sled,
    Postgres,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStore {
    backend: RawBackend,
    #[serde(default)]
    dir: Option<PathBuf>,
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    password_secret: Option<String>,
    #[serde(default)]
    tls: Option<RawPgTls>,
    #[serde(default)]
    pool: Option<u32>,
    #[serde(default)]
    node: Option<String>,
    #[serde(default)]
    insecure: bool,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawPgTls {
    #[serde(default)]
    mode: RawTlsMode,
    #[serde(default)]
    ca_file: Option<PathBuf>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSecret {
    #[serde(default)]
    env: Option<String>,
    #[serde(default)]
    file: Option<PathBuf>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCommand {
    argv: Vec<String>,
    #[serde(default)]
    timeout: Option<HumanDuration>,
}

/// The embedded schema and its compiled validator, built once.
fn schema() -> Result<&'static (Value, jsonschema::Validator), &'static str> {
    static SCHEMA_CELL: OnceLock<Result<(Value, jsonschema::Validator), String>> = OnceLock::new();
    SCHEMA_CELL
        .get_or_init(|| {
            let value: Value = serde_json::from_str(SCHEMA).map_err(|e| e.to_string())?;
            let validator = file::compile(&value)?;
            Ok((value, validator))
        })
        .as_ref()
        .map_err(String::as_str)
}

/// The origin form used for comparisons: lowercase, no trailing slash, and
/// the scheme's default port (443 for `https`, 80 for `http`) left out, so
/// `https://SMS.example.com:443/` and `https://sms.example.com` are one
/// origin.
pub fn normalise_origin(origin: &str) -> String {
    let lower = origin.trim_end_matches('/').to_ascii_lowercase();
    for (scheme, port) in [("https://", ":443"), ("http://", ":80")] {
        if let Some(rest) = lower.strip_prefix(scheme)
            && let Some(host) = rest.strip_suffix(port)
            && !host.contains(':')
        {
            return format!("{scheme}{host}");
        }
    }
    lower
}

impl GatewayConfig {
    /// Reads and checks the config file at `path`: every problem is reported,
    /// each at `file:line:column`.
    pub fn load(path: &Path) -> Result<GatewayConfig, Vec<Diagnostic>> {
        let bytes = file::read(path)?;
        Self::from_bytes(path, &bytes)
    }

    /// Reads a config from `bytes`, as if from the file `path` (which names
    /// the file in diagnostics and anchors relative paths).
    pub fn from_bytes(path: &Path, bytes: &[u8]) -> Result<GatewayConfig, Vec<Diagnostic>> {
        let (schema, validator) = schema().map_err(|e| {
            vec![Diagnostic::error(
                path,
                Pos::START,
                "internal",
                format!("the built-in config schema is broken: {e}"),
            )]
        })?;
        let kind = Kind {
            noun: "gateway config",
            version: 1,
        };
        let doc = file::document(path, bytes, kind, schema, validator)?;
        let raw: RawConfig = serde_json::from_value(doc.value.clone()).map_err(|e| {
            vec![Diagnostic::error(
                path,
                Pos::START,
                "internal",
                format!("the config passed its schema but cannot be read: {e}"),
            )]
        })?;
        build(path, &doc, raw)
    }

    /// Whether `origin` is one of [`GatewayConfig::http_origins`].
    pub fn allows_origin(&self, origin: &str) -> bool {
        self.http_origin(origin).is_some()
    }

    /// The entry of [`GatewayConfig::http_origins`] for `origin` (any
    /// spelling [`normalise_origin`] maps to it).
    pub fn http_origin(&self, origin: &str) -> Option<&HttpOrigin> {
        let wanted = normalise_origin(origin);
        self.http_origins.iter().find(|o| o.origin == wanted)
    }

    /// The store this config names, ready for [`crate::store::open`]: the
    /// sled folder (the data folder unless `store.dir` says otherwise), or
    /// the PostgreSQL settings with the password read from its secret and
    /// the node name decided.
    pub fn store_spec(&self) -> Result<StoreSpec, ConfigError> {
        match &self.store {
            StoreConfig::Sled { dir } => Ok(StoreSpec::Sled {
                dir: dir.clone().unwrap_or_else(|| self.data_dir.clone()),
            }),
            StoreConfig::Postgres(p) => {
                let password = match &p.password_secret {
                    None => None,
                    Some(name) => {
                        let source = self
                            .secrets
                            .get(name)
                            .ok_or_else(|| ConfigError::UndefinedSecret(name.clone()))?;
                        Some(crate::plugin::secrets::read(name, source)?)
                    }
                };
                let node = match &p.node {
                    Some(node) => node.clone(),
                    None => default_node(self.listen)?,
                };
                Ok(StoreSpec::Postgres(PostgresSpec {
                    url: p.url.clone(),
                    password,
                    tls: PgTls {
                        mode: p.tls_mode,
                        ca_file: p.ca_file.clone(),
                    },
                    pool: p.pool,
                    node,
                }))
            }
        }
    }

    /// Where this config is described in messages: its file, or the defaults.
    pub fn describe(&self) -> String {
        match &self.source {
            Some(p) => format!("the gateway config ({})", p.display()),
            None => "the gateway config (none given: built-in defaults)".to_owned(),
        }
    }
}

fn build(path: &Path, doc: &Document, raw: RawConfig) -> Result<GatewayConfig, Vec<Diagnostic>> {
    let base = path.parent().unwrap_or(Path::new(""));
    let resolve = |p: PathBuf| if p.is_absolute() { p } else { base.join(p) };
    let defaults = GatewayConfig::default();
    let mut errors = Vec::new();

    let listen = match raw.listen {
        None => defaults.listen,
        Some(text) => match text.parse::<SocketAddr>() {
            Ok(addr) => addr,
            Err(_) => {
                errors.push(
                    Diagnostic::error(
                        path,
                        doc.value_pos("/listen"),
                        "value",
                        format!("`listen` is not an address and port: `{text}`"),
                    )
                    .with_help(
                        "write an IP address and a port, e.g. `127.0.0.1:8080` or `[::1]:8080`",
                    ),
                );
                defaults.listen
            }
        },
    };

    let mut secrets = BTreeMap::new();
    for (name, s) in raw.secrets {
        let source = match (s.env, s.file) {
            (Some(var), None) => SecretSource::Env(var),
            (None, Some(f)) => SecretSource::File(resolve(f)),
            // The schema allows exactly one of the two.
            _ => continue,
        };
        secrets.insert(name, source);
    }

    if let Some(secret) = &raw.data_key_secret
        && !secrets.contains_key(secret)
    {
        errors.push(
            Diagnostic::error(
                path,
                doc.value_pos("/data_key_secret"),
                "undefined",
                format!("`data_key_secret` names secret `{secret}`, which `secrets` does not define"),
            )
            .with_help(if secrets.is_empty() {
                format!("define it: `secrets: {{ {secret}: {{ file: data-key.txt }} }}` (64 hexadecimal characters, mode 600)")
            } else {
                format!("define it under `secrets`, or use one of {}", list(secrets.keys()))
            }),
        );
    }

    let mut ldap = BTreeMap::new();
    for (name, l) in raw.ldap {
        if let Some(secret) = &l.bind_secret
            && !secrets.contains_key(secret)
        {
            let at = format!("/ldap/{}/bind_secret", escape(&name));
            errors.push(
                Diagnostic::error(
                    path,
                    doc.value_pos(&at),
                    "undefined",
                    format!("LDAP connection `{name}` binds with secret `{secret}`, which `secrets` does not define"),
                )
                .with_help(if secrets.is_empty() {
                    format!("define it: `secrets: {{ {secret}: {{ env: VARIABLE }} }}`")
                } else {
                    format!(
                        "define it under `secrets`, or use one of {}",
                        list(secrets.keys())
                    )
                }),
            );
        }
        let plain = l.url.starts_with("ldap://");
        if l.insecure && !plain {
            errors.push(
                Diagnostic::error(
                    path,
                    doc.value_pos(&format!("/ldap/{}/insecure", escape(&name))),
                    "value",
                    format!(
                        "LDAP connection `{name}` is `insecure` but its URL `{}` is `ldaps://`",
                        l.url
                    ),
                )
                .with_help(
                    "remove `insecure: true` (an `ldaps://` connection is always verified), \
                     or write an `ldap://` URL to talk plain LDAP",
                ),
            );
        }
        if l.insecure && l.ca_file.is_some() {
            errors.push(
                Diagnostic::error(
                    path,
                    doc.value_pos(&format!("/ldap/{}/ca_file", escape(&name))),
                    "value",
                    format!("LDAP connection `{name}` is `insecure` (no TLS) but sets `ca_file`"),
                )
                .with_help(
                    "remove `insecure: true` to use TLS (StartTLS on `ldap://`) verified \
                     against `ca_file`, or remove `ca_file`",
                ),
            );
        }
        ldap.insert(
            name,
            LdapConnection {
                url: l.url,
                bind_dn: l.bind_dn,
                bind_secret: l.bind_secret,
                flavor: l.flavor,
                ca_file: l.ca_file.map(resolve),
                insecure: l.insecure,
                pool: l.pool.unwrap_or(LDAP_POOL_DEFAULT),
                max_concurrent: l.max_concurrent.unwrap_or(LDAP_MAX_CONCURRENT_DEFAULT),
            },
        );
    }

    let store = match raw.store {
        None => StoreConfig::default(),
        Some(st) => match st.backend {
            // The schema allows none of the PostgreSQL settings here.
            RawBackend::Sled => StoreConfig::Sled {
                dir: st.dir.map(resolve),
            },
            RawBackend::Postgres => {
                let postgres = store_postgres(path, doc, st, &secrets, &resolve, &mut errors);
                StoreConfig::Postgres(postgres)
            }
        },
    };

    let mut commands = BTreeMap::new();
    for (name, c) in raw.commands {
        let timeout = c.timeout.map_or(Duration::from_secs(30), |t| t.0);
        if timeout.is_zero() || timeout > MAX_COMMAND_TIMEOUT {
            let at = format!("/commands/{}/timeout", escape(&name));
            errors.push(
                Diagnostic::error(
                    path,
                    doc.value_pos(&at),
                    "value",
                    format!(
                        "command `{name}` has a timeout of `{}`",
                        crate::workflow::units::format_duration(timeout)
                    ),
                )
                .with_help("a command's timeout must be more than 0 and at most 1h"),
            );
        }
        commands.insert(
            name,
            CommandSpec {
                argv: c.argv,
                timeout,
            },
        );
    }

    let tls = raw.tls.map(|t| TlsSettings {
        cert: resolve(t.cert),
        key: resolve(t.key),
        // The schema allows `client_auth` only with `client_ca`.
        client_auth: t.client_ca.map(|ca| ClientAuth {
            ca: resolve(ca),
            required: t.client_auth == Some(RawClientAuth::Required),
        }),
    });

    let connections = {
        let d = defaults.connections;
        let c = raw.connections;
        let max = c.max.unwrap_or(d.max);
        // Unset, it follows a smaller `max` down.
        let max_per_ip = c.max_per_ip.unwrap_or(d.max_per_ip.min(max));
        if max_per_ip > max {
            errors.push(
                Diagnostic::error(
                    path,
                    doc.value_pos("/connections/max_per_ip"),
                    "value",
                    format!(
                        "`connections.max_per_ip` is {max_per_ip}, more than `connections.max` ({max})"
                    ),
                )
                .with_help(
                    "one client address may hold at most every connection: lower `max_per_ip` \
                     or raise `max`",
                ),
            );
        }
        let mut timeout = |name: &str, value: Option<HumanDuration>, default: Duration| {
            let t = value.map_or(default, |t| t.0);
            if t.is_zero() || t > MAX_CONNECTION_TIMEOUT {
                errors.push(
                    Diagnostic::error(
                        path,
                        doc.value_pos(&format!("/connections/{name}")),
                        "value",
                        format!(
                            "`connections.{name}` is `{}`",
                            crate::workflow::units::format_duration(t)
                        ),
                    )
                    .with_help("a connection timeout must be more than 0 and at most 1h"),
                );
            }
            t
        };
        ConnectionLimits {
            max,
            max_per_ip,
            header_timeout: timeout("header_timeout", c.header_timeout, d.header_timeout),
            idle_timeout: timeout("idle_timeout", c.idle_timeout, d.idle_timeout),
            handshake_timeout: timeout(
                "handshake_timeout",
                c.handshake_timeout,
                d.handshake_timeout,
            ),
            shutdown_timeout: timeout("shutdown_timeout", c.shutdown_timeout, d.shutdown_timeout),
        }
    };

    let timers = {
        let sweep_every = raw
            .timers
            .sweep_every
            .map_or(defaults.timers.sweep_every, |t| t.0);
        let (least, most) = SWEEP_EVERY_RANGE;
        if sweep_every < least || sweep_every > most {
            errors.push(
                Diagnostic::error(
                    path,
                    doc.value_pos("/timers/sweep_every"),
                    "value",
                    format!(
                        "`timers.sweep_every` is `{}`",
                        crate::workflow::units::format_duration(sweep_every)
                    ),
                )
                .with_help("the sweep period must be at least 1s and at most 1h"),
            );
        }
        TimerSettings { sweep_every }
    };

    let api = {
        let d = crate::api::ApiConfig::default();
        let a = raw.api;
        let mut keys = Vec::new();
        for (name, k) in a.keys {
            match digest(&k.sha256) {
                Some(sha256) => keys.push(crate::api::ApiKey { name, sha256 }),
                None => errors.push(
                    Diagnostic::error(
                        path,
                        doc.value_pos(&format!("/api/keys/{}/sha256", escape(&name))),
                        "value",
                        format!("the API key `{name}` is not a sha256 digest"),
                    )
                    .with_help(
                        "give the key's sha256 as 64 hex digits; `resetgate api-key new NAME` makes a key and prints its line",
                    ),
                ),
            }
        }
        let operators = operators(path, doc, a.operators, &keys, tls.as_ref(), &mut errors);
        let rate = |r: Option<RawRate>, d: crate::api::Rate| {
            r.map_or(d, |r| crate::api::Rate::per_minute(r.per_minute, r.burst))
        };
        let body_timeout = a.body_timeout.map_or(d.body_timeout, |t| t.0);
        if body_timeout.is_zero() || body_timeout > MAX_CONNECTION_TIMEOUT {
            errors.push(
                Diagnostic::error(
                    path,
                    doc.value_pos("/api/body_timeout"),
                    "value",
                    format!(
                        "`api.body_timeout` is `{}`",
                        crate::workflow::units::format_duration(body_timeout)
                    ),
                )
                .with_help("the body timeout must be more than 0 and at most 1h"),
            );
        }
        crate::api::ApiConfig {
            body_limit: a.body_limit.unwrap_or(d.body_limit),
            body_timeout,
            anonymous: a.anonymous.unwrap_or(d.anonymous),
            keys,
            operators,
            anonymous_rate: rate(a.rate_limits.anonymous, d.anonymous_rate),
            portal_rate: rate(a.rate_limits.portal, d.portal_rate),
            user_rate: rate(a.rate_limits.user, d.user_rate),
        }
    };

    let mut http_origins: Vec<HttpOrigin> = Vec::new();
    for (i, entry) in raw.http_origins.into_iter().enumerate() {
        let (settings, at) = match entry {
            RawOrigin::Bare(origin) => (
                RawOriginSettings {
                    origin,
                    plain_http: false,
                    ca_file: None,
                    max_concurrent: None,
                },
                format!("/http_origins/{i}"),
            ),
            RawOrigin::Full(s) => (s, format!("/http_origins/{i}/origin")),
        };
        let origin = normalise_origin(&settings.origin);
        let plain = origin.starts_with("http://");
        if plain && !settings.plain_http {
            errors.push(
                Diagnostic::error(
                    path,
                    doc.value_pos(&at),
                    "plain-http",
                    format!("HTTP origin `{origin}` is plain `http://`: requests to it would cross the network unencrypted"),
                )
                .with_help(format!(
                    "use `https://` if the server has it; if it really has no HTTPS (e.g. a relay on this host), write `{{ origin: \"{origin}\", plain_http: true }}`"
                )),
            );
        }
        if !plain && settings.plain_http {
            errors.push(
                Diagnostic::error(
                    path,
                    doc.value_pos(&format!("/http_origins/{i}/plain_http")),
                    "value",
                    format!("HTTP origin `{origin}` is `https://` but says `plain_http: true`"),
                )
                .with_help("remove `plain_http`: it is only for `http://` origins"),
            );
        }
        if plain && settings.ca_file.is_some() {
            errors.push(
                Diagnostic::error(
                    path,
                    doc.value_pos(&format!("/http_origins/{i}/ca_file")),
                    "value",
                    format!("HTTP origin `{origin}` is plain `http://` but has a `ca_file`"),
                )
                .with_help("a CA only matters for `https://`: remove `ca_file`, or use `https://`"),
            );
        }
        if http_origins.iter().any(|o| o.origin == origin) {
            errors.push(
                Diagnostic::error(
                    path,
                    doc.value_pos(&at),
                    "duplicate",
                    format!("HTTP origin `{origin}` is listed twice"),
                )
                .with_help("keep one entry per origin (`:443` and `:80` are the default ports and make no difference)"),
            );
            continue;
        }
        http_origins.push(HttpOrigin {
            origin,
            plain_http: plain && settings.plain_http,
            ca_file: settings.ca_file.map(resolve),
            max_concurrent: settings.max_concurrent.unwrap_or(DEFAULT_HTTP_CONCURRENCY),
        });
    }

    let page = crate::api::page::settings(path, doc, raw.page, &resolve, &mut errors);

    if !errors.is_empty() {
        crate::workflow::diagnostic::sort(&mut errors);
        return Err(errors);
    }
    Ok(GatewayConfig {
        source: Some(path.to_owned()),
        plugins: raw.plugins.map_or(defaults.plugins, resolve),
        workflows: raw.workflows.map_or(defaults.workflows, resolve),
        data_dir: raw.data_dir.map_or(defaults.data_dir, resolve),
        store,
        listen,
        tls,
        allow_plain_http: raw.allow_plain_http,
        connections,
        timers,
        api,
        ldap,
        secrets,
        data_key_secret: raw.data_key_secret,
        commands,
        http_origins,
        page,
    })
}

/// A sha256 digest written as 64 hex digits.
fn digest(text: &str) -> Option<[u8; 32]> {
    hex::decode(text.trim())
        .ok()
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
}

/// Checks `api.operators` (which passed the schema): each operator has a
/// key digest or a client certificate (or both), no key is also a portal's
/// or another operator's, and certificates are asked for.
fn operators(
    path: &Path,
    doc: &Document,
    raw: BTreeMap<String, RawOperator>,
    portals: &[crate::api::ApiKey],
    tls: Option<&TlsSettings>,
    errors: &mut Vec<Diagnostic>,
) -> Vec<crate::api::principal::Operator> {
    use crate::api::principal::{CertificateMatch, Operator, Role};
    let mut out: Vec<Operator> = Vec::new();
    for (name, op) in raw {
        let at = format!("/api/operators/{}", escape(&name));
        let mut error = |pointer: &str, message: String, help: &str| {
            errors.push(
                Diagnostic::error(path, doc.value_pos(pointer), "value", message).with_help(help),
            );
        };
        // The schema allows only the three roles.
        let role = Role::parse(&op.role).unwrap_or(Role::Auditor);
        let key_sha256 = match &op.sha256 {
            None => None,
            Some(text) => match digest(text) {
                Some(d) => Some(d),
                None => {
                    error(
                        &format!("{at}/sha256"),
                        format!("the API key of operator `{name}` is not a sha256 digest"),
                        "give the key's sha256 as 64 hex digits; `resetgate api-key new NAME --operator ROLE` makes a key and prints its line",
                    );
                    continue;
                }
            },
        };
        let certificate = match op.client_certificate {
            None => None,
            Some(RawCertificateMatch {
                sha256: Some(sha256),
                subject: None,
            }) if digest(&sha256).is_some() => {
                Some(CertificateMatch::Sha256(sha256.trim().to_lowercase()))
            }
            Some(RawCertificateMatch {
                sha256: None,
                subject: Some(subject),
            }) if !subject.trim().is_empty() => Some(CertificateMatch::Subject(subject)),
            Some(_) => {
                error(
                    &format!("{at}/client_certificate"),
                    format!("the client certificate of operator `{name}` is not described"),
                    "give either `sha256` (64 hex digits of the certificate's DER encoding) or `subject` (as RFC 4514, e.g. `CN=ann,O=Example`), not both",
                );
                continue;
            }
        };
        if key_sha256.is_none() && certificate.is_none() {
            error(
                &at,
                format!("operator `{name}` has neither an API key nor a client certificate"),
                "give `sha256` (of the operator's API key) or `client_certificate`",
            );
            continue;
        }
        if certificate.is_some() && tls.is_none_or(|t| t.client_auth.is_none()) {
            error(
                &format!("{at}/client_certificate"),
                format!(
                    "operator `{name}` is identified by a client certificate, but the gateway asks for none"
                ),
                "set `tls.client_ca` to the CA that signs operators' certificates",
            );
        }
        if let Some(d) = key_sha256 {
            let portal = portals
                .iter()
                .find(|k| k.sha256 == d)
                .map(|k| k.name.clone());
            let operator = out
                .iter()
                .find(|o| o.key_sha256 == Some(d))
                .map(|o| o.name.clone());
            if let Some(other) = portal
                .map(|p| format!("portal `{p}`"))
                .or(operator.map(|o| format!("operator `{o}`")))
            {
                error(
                    &format!("{at}/sha256"),
                    format!("the API key of operator `{name}` is also the key of {other}"),
                    "give every operator a key of their own: `resetgate api-key new NAME --operator ROLE`",
                );
                continue;
            }
        }
        out.push(Operator {
            name,
            role,
            key_sha256,
            certificate,
        });
    }
    out
}

/// Checks `store: { backend: postgres, ... }` (which passed the schema),
/// adding a diagnostic to `errors` for each problem.
fn store_postgres(
    path: &Path,
    doc: &Document,
    st: RawStore,
    secrets: &BTreeMap<String, SecretSource>,
    resolve: &dyn Fn(PathBuf) -> PathBuf,
    errors: &mut Vec<Diagnostic>,
) -> PostgresConfig {
    // The schema requires `url` here.
    let url = st.url.unwrap_or_default();
    let tls = st.tls.unwrap_or_default();
    let mode = PgTlsMode::from(tls.mode);
    let mut local = true;
    match check_postgres_url(&url, false) {
        Ok(checked) => local = checked.local,
        Err(e) => errors.push(
            Diagnostic::error(
                path,
                doc.value_pos("/store/url"),
                if matches!(e, ConfigError::PasswordInUrl) {
                    "password-in-url"
                } else {
                    "value"
                },
                format!("`store.url` {e}"),
            )
            .with_help(e.help()),
        ),
    }
    if let Some(secret) = &st.password_secret
        && !secrets.contains_key(secret)
    {
        errors.push(
            Diagnostic::error(
                path,
                doc.value_pos("/store/password_secret"),
                "undefined",
                ConfigError::UndefinedSecret(secret.clone()).to_string(),
            )
            .with_help(if secrets.is_empty() {
                format!(
                    "define it: `secrets: {{ {secret}: {{ file: db-password.txt }} }}` (mode 600)"
                )
            } else {
                format!(
                    "define it under `secrets`, or use one of {}",
                    list(secrets.keys())
                )
            }),
        );
    }
    if let Some(ca) = &tls.ca_file
        && mode != PgTlsMode::VerifyFull
    {
        errors.push(
            Diagnostic::error(
                path,
                doc.value_pos("/store/tls/ca_file"),
                "value",
                format!(
                    "`store.tls.ca_file` is set but `store.tls.mode` is `{}`, which does not check the server's certificate",
                    tls_mode_name(mode)
                ),
            )
            .with_help(format!(
                "write `mode: verify-full` to check the server against `{}`, or remove `ca_file`",
                ca.display()
            )),
        );
    }
    match (mode, st.insecure) {
        (PgTlsMode::Disable, false) if !local => errors.push(
            Diagnostic::error(
                path,
                doc.value_pos("/store/tls/mode"),
                "plain-tcp",
                "`store.tls.mode` is `disable` for a database on another host: the password and \
                 every stored record would cross the network unencrypted",
            )
            .with_help(
                "use `mode: verify-full` (with `ca_file` if the server's CA is private); if the \
                 network is really trusted, add `insecure: true` to `store`",
            ),
        ),
        (PgTlsMode::Require | PgTlsMode::VerifyFull, true) => errors.push(
            Diagnostic::error(
                path,
                doc.value_pos("/store/insecure"),
                "value",
                format!(
                    "`store.insecure` is set but `store.tls.mode` is `{}`",
                    tls_mode_name(mode)
                ),
            )
            .with_help(
                "remove `insecure: true`: it only allows `mode: disable` towards another host",
            ),
        ),
        _ => {}
    }
    PostgresConfig {
        url,
        password_secret: st.password_secret,
        tls_mode: mode,
        ca_file: tls.ca_file.map(resolve),
        pool: st.pool.unwrap_or(PG_POOL_DEFAULT),
        node: st.node,
        insecure: st.insecure,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<GatewayConfig, Vec<String>> {
        GatewayConfig::from_bytes(Path::new("/etc/resetgate/config.yaml"), text.as_bytes())
            .map_err(|ds| ds.iter().map(ToString::to_string).collect())
    }

    #[test]
    fn minimal_config_is_the_defaults() {
        let c = load("version: 1\n").unwrap();
        assert_eq!(
            c,
            GatewayConfig {
                source: Some(PathBuf::from("/etc/resetgate/config.yaml")),
                ..GatewayConfig::default()
            }
        );
    }

    #[test]
    fn full_config() {
        let c = load(
            "version: 1\nplugins: plugins\ndata_dir: /var/lib/resetgate\nlisten: \"[::1]:9000\"\n\
             ldap:\n  corp-ad: {url: \"ldaps://dc1.corp.example\", bind_dn: \"cn=rg\", bind_secret: ad-bind}\n\
             secrets:\n  ad-bind: {env: AD_BIND}\n  sms-token: {file: sms.token}\n\
             commands:\n  vpn-up: {argv: [/usr/local/bin/vpn-up, --quiet], timeout: 10s}\n\
             http_origins: [\"https://SMS.example.com\"]\n",
        )
        .unwrap();
        assert_eq!(c.plugins, PathBuf::from("/etc/resetgate/plugins"));
        assert_eq!(c.data_dir, PathBuf::from("/var/lib/resetgate"));
        assert_eq!(c.workflows, PathBuf::from("workflows"));
        assert_eq!(c.listen.to_string(), "[::1]:9000");
        assert_eq!(
            c.secrets["sms-token"],
            SecretSource::File(PathBuf::from("/etc/resetgate/sms.token"))
        );
        assert_eq!(c.commands["vpn-up"].timeout, Duration::from_secs(10));
        assert!(c.allows_origin("https://sms.example.com/"));
        assert!(!c.allows_origin("https://evil.example.com"));
    }

    #[test]
    fn operators_with_keys_or_certificates_and_roles() {
        use crate::api::principal::{CertificateMatch, Role};
        let key = "ab".repeat(32);
        let c = load(&format!(
            "version: 1\ntls: {{cert: a.pem, key: a.key, client_ca: ca.pem}}\n\
             api:\n  operators:\n    ann: {{ role: helpdesk, sha256: {key} }}\n    \
             ida: {{ role: auditor, client_certificate: {{ subject: \"CN=ida,O=Example\" }} }}\n"
        ))
        .unwrap();
        let ops = &c.api.operators;
        assert_eq!(ops.len(), 2);
        assert_eq!((ops[0].name.as_str(), ops[0].role), ("ann", Role::Helpdesk));
        assert_eq!(ops[0].key_sha256, Some([0xab; 32]));
        assert_eq!(ops[0].certificate, None);
        assert_eq!((ops[1].name.as_str(), ops[1].role), ("ida", Role::Auditor));
        assert_eq!(
            ops[1].certificate,
            Some(CertificateMatch::Subject("CN=ida,O=Example".into()))
        );
        // Without client certificates asked for, a certificate cannot
        // identify anyone.
        let errors = load(
            "version: 1\napi:\n  operators:\n    ida: { role: auditor, client_certificate: { subject: CN=ida } }\n",
        )
        .unwrap_err();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].contains("the gateway asks for none"),
            "{errors:?}"
        );
    }

    #[test]
    fn tls_and_connections() {
        let c = load(
            "version: 1\nlisten: \"0.0.0.0:8443\"\n\
             tls: {cert: tls/server.pem, key: /etc/keys/server.key, client_ca: tls/ca.pem}\n\
             connections: {max: 16, max_per_ip: 4, header_timeout: 2s}\n",
        )
        .unwrap();
        assert_eq!(
            c.tls,
            Some(TlsSettings {
                cert: PathBuf::from("/etc/resetgate/tls/server.pem"),
                key: PathBuf::from("/etc/keys/server.key"),
                client_auth: Some(ClientAuth {
                    ca: PathBuf::from("/etc/resetgate/tls/ca.pem"),
                    required: false,
                }),
            })
        );
        assert!(!c.allow_plain_http);
        assert_eq!(
            c.connections,
            ConnectionLimits {
                max: 16,
                max_per_ip: 4,
                header_timeout: Duration::from_secs(2),
                ..ConnectionLimits::default()
            }
        );
        let c = load(
            "version: 1\nallow_plain_http: true\n\
             tls: {cert: a.pem, key: a.key, client_ca: ca.pem, client_auth: required}\n",
        )
        .unwrap();
        assert!(c.allow_plain_http);
        assert!(c.tls.unwrap().client_auth.unwrap().required);
    }

    #[test]
    fn tls_and_connection_errors() {
        let errs = load(
            "version: 1\ntls: {cert: a.pem, client_auth: required}\n\
             connections: {max: 0, idle_timeout: 0s, header_timeout: 2h}\n",
        )
        .unwrap_err();
        let all = errs.join("\n");
        assert!(
            all.contains("error[missing-field]: missing field `key` in `tls`"),
            "{all}"
        );
        assert!(
            all.contains(
                "error[missing-field]: missing field `client_ca` in `tls`: `client_auth` needs it"
            ),
            "{all}"
        );
        assert!(
            all.contains("`connections.max` must be at least 1, found 0"),
            "{all}"
        );
        assert_eq!(errs.len(), 3, "{all}");
        let errs = load("version: 1\nconnections: {max: 8, max_per_ip: 9}\n").unwrap_err();
        assert_eq!(
            errs,
            [
                "/etc/resetgate/config.yaml:2:35: error[value]: `connections.max_per_ip` is 9, more \
                 than `connections.max` (8)\n  help: one client address may hold at most every \
                 connection: lower `max_per_ip` or raise `max`"
            ]
        );
        // Unset, the limit per address follows a smaller `max`.
        let c = load("version: 1\nconnections: {max: 16}\n").unwrap();
        assert_eq!(c.connections.max_per_ip, 16);
        // Durations the schema lets through but the gateway does not.
        let errs =
            load("version: 1\nconnections: {idle_timeout: 0s, header_timeout: 2h}\n").unwrap_err();
        assert_eq!(
            errs,
            [
                "/etc/resetgate/config.yaml:2:29: error[value]: `connections.idle_timeout` is `0s`\n  \
                 help: a connection timeout must be more than 0 and at most 1h",
                "/etc/resetgate/config.yaml:2:49: error[value]: `connections.header_timeout` is `2h`\n  \
                 help: a connection timeout must be more than 0 and at most 1h",
            ]
        );
    }

    #[test]
    fn the_sweep_period_is_set_under_timers_and_checked() {
        assert_eq!(
            load("version: 1\n").unwrap().timers.sweep_every,
            Duration::from_secs(30)
        );
        let c = load("version: 1\ntimers: {sweep_every: 2s}\n").unwrap();
        assert_eq!(c.timers.sweep_every, Duration::from_secs(2));
        let errs = load("version: 1\ntimers:\n  sweep_every: 500ms\n").unwrap_err();
        assert_eq!(
            errs,
            [
                "/etc/resetgate/config.yaml:3:16: error[value]: `timers.sweep_every` is `500ms`\n  \
                 help: the sweep period must be at least 1s and at most 1h"
            ]
        );
        let errs = load("version: 1\ntimers: {sweep_every: 2h}\n").unwrap_err();
        assert!(errs[0].contains("`timers.sweep_every` is `2h`"), "{errs:?}");
        let errs = load("version: 1\ntimers: {sweep: 2s}\n").unwrap_err();
        assert!(errs[0].contains("unknown field `sweep`"), "{errs:?}");
    }

    #[test]
    fn every_error_is_reported() {
        let errs = load(
            "version: 1\nlisten: 127.0.0.1\nplugin: x\nsecrets:\n  a: {env: A, file: b}\n\
             ldap:\n  corp: {url: \"ldaps://dc\", bind_dn: x, bind_secret: nope}\n\
             commands:\n  up: {argv: [vpn-up]}\n",
        )
        .unwrap_err();
        let all = errs.join("\n");
        assert!(
            all.contains(
                "config.yaml:2:9: error[value]: `listen` is not a valid listen address: `127.0.0.1`"
            ),
            "{all}"
        );
        assert!(
            all.contains("config.yaml:3:1: error[unknown-field]: unknown field `plugin`"),
            "{all}"
        );
        assert!(all.contains("help: did you mean `plugins`?"), "{all}");
        assert!(
            all.contains("`secrets.a` must set exactly one of `env`, `file`"),
            "{all}"
        );
        assert!(
            all.contains("`commands.up.argv[0]` is not a valid absolute path"),
            "{all}"
        );
        assert_eq!(errs.len(), 4, "{all}");
    }

    #[test]
    fn references_are_checked() {
        let errs = load(
            "version: 1\nldap:\n  corp: {url: \"ldaps://dc\", bind_dn: x, bind_secret: nope}\n",
        )
        .unwrap_err();
        assert_eq!(
            errs,
            [
                "/etc/resetgate/config.yaml:3:54: error[undefined]: LDAP connection `corp` binds with \
              secret `nope`, which `secrets` does not define\n  help: define it: `secrets: { nope: { env: VARIABLE } }`"
            ]
        );
    }

    #[test]
    fn http_origins_as_strings_and_with_settings() {
        let c = load(
            "version: 1\nhttp_origins:\n  - \"https://SMS.example.com:443\"\n  \
             - { origin: \"http://127.0.0.1:8025\", plain_http: true, max_concurrent: 2 }\n  \
             - { origin: \"https://mail.example.com:8443\", ca_file: mail-ca.pem }\n",
        )
        .unwrap();
        assert_eq!(
            c.http_origins,
            [
                HttpOrigin {
                    origin: "https://sms.example.com".into(),
                    plain_http: false,
                    ca_file: None,
                    max_concurrent: DEFAULT_HTTP_CONCURRENCY,
                },
                HttpOrigin {
                    origin: "http://127.0.0.1:8025".into(),
                    plain_http: true,
                    ca_file: None,
                    max_concurrent: 2,
                },
                HttpOrigin {
                    origin: "https://mail.example.com:8443".into(),
                    plain_http: false,
                    ca_file: Some(PathBuf::from("/etc/resetgate/mail-ca.pem")),
                    max_concurrent: 4,
                },
            ]
        );
        // Default ports are one origin with the bare host.
        assert!(c.allows_origin("https://sms.example.com"));
        assert!(c.allows_origin("http://127.0.0.1:8025/"));
        assert!(!c.allows_origin("https://127.0.0.1:8025"));
        assert!(!c.allows_origin("https://mail.example.com"));
        assert_eq!(normalise_origin("HTTP://a.example:80"), "http://a.example");
        assert_eq!(
            normalise_origin("https://a.example:4430"),
            "https://a.example:4430"
        );
    }

    #[test]
    fn plain_http_origins_need_saying_so() {
        let errs = load("version: 1\nhttp_origins: [\"http://relay.example\"]\n").unwrap_err();
        assert_eq!(
            errs,
            [
                "/etc/resetgate/config.yaml:2:16: error[plain-http]: HTTP origin `http://relay.example` \
                 is plain `http://`: requests to it would cross the network unencrypted\n  help: use \
                 `https://` if the server has it; if it really has no HTTPS (e.g. a relay on this \
                 host), write `{ origin: \"http://relay.example\", plain_http: true }`"
            ]
        );
        let errs = load(
            "version: 1\nhttp_origins:\n  - { origin: \"http://relay.example\", ca_file: ca.pem }\n  \
             - { origin: \"https://a.example\", plain_http: true }\n  - \"https://A.example:443\"\n",
        )
        .unwrap_err();
        let all = errs.join("\n");
        assert!(
            all.contains(
                "config.yaml:3:15: error[plain-http]: HTTP origin `http://relay.example` is plain"
            ),
            "{all}"
        );
        assert!(
            all.contains("config.yaml:3:48: error[value]: HTTP origin `http://relay.example` is plain `http://` but has a `ca_file`"),
            "{all}"
        );
        assert!(
            all.contains("config.yaml:4:48: error[value]: HTTP origin `https://a.example` is `https://` but says `plain_http: true`"),
            "{all}"
        );
        assert!(
            all.contains(
                "config.yaml:5:5: error[duplicate]: HTTP origin `https://a.example` is listed twice"
            ),
            "{all}"
        );
        assert_eq!(errs.len(), 4, "{all}");
        // Neither a path nor an unknown setting passes the schema.
        let errs = load(
            "version: 1\nhttp_origins: [\"https://a.example/send\", { origin: \"https://b.example\", proxy: x }]\n",
        )
        .unwrap_err();
        assert_eq!(errs.len(), 2, "{}", errs.join("\n"));
    }

    #[test]
    fn ldap_connections() {
        let c = load(
            "version: 1\nsecrets:\n  bind: {env: BIND}\nldap:\n  \
             corp: {url: \"ldaps://dc1.corp.example\", bind_dn: \"cn=rg\", bind_secret: bind, \
             flavor: active-directory, ca_file: tls/corp-ca.pem, pool: 4, max_concurrent: 32}\n  \
             lab: {url: \"ldap://127.0.0.1:3890\", insecure: true}\n  \
             dir: {url: \"ldap://dir.example\"}\n",
        )
        .unwrap();
        assert_eq!(
            c.ldap["corp"],
            LdapConnection {
                url: "ldaps://dc1.corp.example".to_owned(),
                bind_dn: Some("cn=rg".to_owned()),
                bind_secret: Some("bind".to_owned()),
                flavor: LdapFlavor::ActiveDirectory,
                ca_file: Some(PathBuf::from("/etc/resetgate/tls/corp-ca.pem")),
                insecure: false,
                pool: 4,
                max_concurrent: 32,
            }
        );
        let lab = &c.ldap["lab"];
        assert!(lab.insecure);
        assert_eq!(lab.flavor, LdapFlavor::Openldap);
        // Unset: StartTLS on the OS roots, two connections, eight operations.
        let dir = &c.ldap["dir"];
        assert_eq!((dir.insecure, &dir.ca_file), (false, &None));
        assert_eq!((dir.pool, dir.max_concurrent), (2, 8));
    }

    #[test]
    fn ldap_connection_errors() {
        let errs = load(
            "version: 1\nldap:\n  a: {url: \"ldaps://dc\", insecure: true}\n  \
             b: {url: \"ldap://dc\", insecure: true, ca_file: ca.pem}\n",
        )
        .unwrap_err();
        assert_eq!(
            errs,
            [
                "/etc/resetgate/config.yaml:3:36: error[value]: LDAP connection `a` is `insecure` \
                 but its URL `ldaps://dc` is `ldaps://`\n  help: remove `insecure: true` (an \
                 `ldaps://` connection is always verified), or write an `ldap://` URL to talk plain LDAP",
                "/etc/resetgate/config.yaml:4:50: error[value]: LDAP connection `b` is `insecure` \
                 (no TLS) but sets `ca_file`\n  help: remove `insecure: true` to use TLS (StartTLS \
                 on `ldap://`) verified against `ca_file`, or remove `ca_file`",
            ]
        );
        let errs = load(
            "version: 1\nldap:\n  a: {url: \"ldap://dc\", flavor: samba, pool: 0, max_concurrent: 1000}\n",
        )
        .unwrap_err();
        let all = errs.join("\n");
        for part in [
            "config.yaml:3:33: error[value]: `ldap.a.flavor` must be one of `openldap`, \
             `active-directory`; found the string `samba`",
            "config.yaml:3:46: error[value]: `ldap.a.pool` must be at least 1, found 0",
            "config.yaml:3:65: error[value]: `ldap.a.max_concurrent` must be at most 256, found 1000",
        ] {
            assert!(all.contains(part), "{part} missing in {all}");
        }
        assert_eq!(errs.len(), 3, "{all}");
    }

    #[test]
    fn the_data_key_secret_must_be_defined() {
        let c = load("version: 1\nsecrets:\n  dk: {file: dk.hex}\ndata_key_secret: dk\n").unwrap();
        assert_eq!(c.data_key_secret.as_deref(), Some("dk"));
        let errs = load("version: 1\ndata_key_secret: dk\n").unwrap_err();
        assert_eq!(
            errs,
            [
                "/etc/resetgate/config.yaml:2:18: error[undefined]: `data_key_secret` names secret \
                 `dk`, which `secrets` does not define\n  help: define it: `secrets: { dk: { file: \
                 data-key.txt } }` (64 hexadecimal characters, mode 600)"
            ]
        );
    }

    #[test]
    fn the_store_is_sled_in_the_data_folder_unless_set() {
        let c = load("version: 1\ndata_dir: state\n").unwrap();
        assert_eq!(c.store, StoreConfig::Sled { dir: None });
        let c = load("version: 1\nstore: {backend: sled, dir: db}\n").unwrap();
        assert_eq!(
            c.store,
            StoreConfig::Sled {
                dir: Some(PathBuf::from("/etc/resetgate/db"))
            }
        );
    }

    #[test]
    fn a_postgres_store() {
        let c = load(
            "version: 1\nsecrets:\n  db: {env: DB_PASSWORD}\nstore:\n  backend: postgres\n  \
             url: \"postgres://resetgate@db.corp.example:5433/rg\"\n  password_secret: db\n  \
             tls: {ca_file: tls/db-ca.pem}\n  pool: 16\n  node: gw-1\n",
        )
        .unwrap();
        assert_eq!(
            c.store,
            StoreConfig::Postgres(PostgresConfig {
                url: "postgres://resetgate@db.corp.example:5433/rg".to_owned(),
                password_secret: Some("db".to_owned()),
                tls_mode: PgTlsMode::VerifyFull,
                ca_file: Some(PathBuf::from("/etc/resetgate/tls/db-ca.pem")),
                pool: 16,
                node: Some("gw-1".to_owned()),
                insecure: false,
            })
        );
        // Unset: verify-full on the system's roots, 8 connections, the
        // default node name.
        let c =
            load("version: 1\nstore: {backend: postgres, url: \"postgres://rg@db\"}\n").unwrap();
        let StoreConfig::Postgres(p) = c.store else {
            panic!("not postgres")
        };
        assert_eq!(
            (p.tls_mode, &p.ca_file, p.pool, &p.node, p.insecure),
            (PgTlsMode::VerifyFull, &None, 8, &None, false)
        );
        // Plain TCP: on loopback or a Unix socket as is, elsewhere only
        // with `insecure`.
        for url in [
            "postgres://rg@127.0.0.1:5432/rg",
            "postgres://rg@localhost/rg",
            "postgres://rg@[::1]:5432/rg",
            "postgres://rg@%2Frun%2Fpostgresql/rg",
        ] {
            let text = format!(
                "version: 1\nstore: {{backend: postgres, url: \"{url}\", tls: {{mode: disable}}}}\n"
            );
            assert!(load(&text).is_ok(), "{url}: {:?}", load(&text));
        }
        let c = load(
            "version: 1\nstore: {backend: postgres, url: \"postgres://rg@10.0.0.5/rg\", \
             tls: {mode: disable}, insecure: true}\n",
        )
        .unwrap();
        assert!(matches!(
            c.store,
            StoreConfig::Postgres(PostgresConfig { insecure: true, .. })
        ));
    }

    #[test]
    fn a_password_in_the_store_url_is_refused_without_being_shown() {
        for url in [
            "postgres://rg:canary-pw-1@db.example/rg",
            "postgresql://rg@db.example/rg?password=canary-pw-1",
        ] {
            let errs = load(&format!(
                "version: 1\nstore: {{backend: postgres, url: \"{url}\"}}\n"
            ))
            .unwrap_err();
            assert_eq!(
                errs,
                [
                    "/etc/resetgate/config.yaml:2:33: error[password-in-url]: `store.url` holds a \
                     password\n  help: remove the password from the URL \
                     (`postgres://USER@HOST:PORT/DATABASE`) and name a secret holding it: \
                     `password_secret: NAME`, with `secrets: { NAME: { file: FILE } }` (mode 600)"
                ]
            );
        }
        // Not even a URL the schema or the parser refuses is echoed.
        for url in [
            "pg://rg:canary-pw-1@db",
            "postgres://rg:canary-pw-1@db:port/x",
        ] {
            let errs = load(&format!(
                "version: 1\nstore: {{backend: postgres, url: \"{url}\"}}\n"
            ))
            .unwrap_err();
            assert_eq!(errs.len(), 1, "{errs:?}");
            assert!(!errs[0].contains("canary"), "{}", errs[0]);
        }
    }

    #[test]
    fn store_url_errors() {
        let cases = [
            ("mysql://rg@db/rg", "`store.url` is not a `postgres://` URL"),
            ("postgres://db.example/rg", "`store.url` names no user"),
            (
                "postgres://rg@db/rg?sslmode=require",
                "`store.url` sets `sslmode`\n  help: remove it from the URL and set `tls:",
            ),
            (
                "postgres://rg@db/rg?colour=blue",
                "`store.url` cannot be read: ",
            ),
        ];
        for (url, message) in cases {
            let errs = load(&format!(
                "version: 1\nstore: {{backend: postgres, url: \"{url}\"}}\n"
            ))
            .unwrap_err();
            assert_eq!(errs.len(), 1, "{url}: {errs:?}");
            assert!(errs[0].contains(message), "{url}: {}", errs[0]);
        }
    }

    #[test]
    fn the_store_spec_reads_the_password_and_names_the_node() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let pw = dir.path().join("db.pw");
        std::fs::write(&pw, "canary-db-pw\n").unwrap();
        std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).unwrap();
        let text = format!(
            "version: 1\nlisten: \"127.0.0.1:8443\"\nsecrets:\n  db: {{file: {pw:?}}}\n\
             store: {{backend: postgres, url: \"postgres://rg@db.example/rg\", password_secret: db, \
             pool: 4, tls: {{mode: require}}}}\n"
        );
        let c = GatewayConfig::from_bytes(&dir.path().join("c.yaml"), text.as_bytes()).unwrap();
        let spec = c.store_spec().unwrap();
        assert!(!format!("{spec:?}").contains("canary"), "{spec:?}");
        let StoreSpec::Postgres(p) = spec else {
            panic!("not postgres")
        };
        assert_eq!(
            p.password.as_ref().map(|s| s.expose()),
            Some("canary-db-pw")
        );
        assert_eq!(p.url, "postgres://rg@db.example/rg");
        assert_eq!(p.tls.mode, PgTlsMode::Require);
        assert_eq!(p.pool, 4);
        assert!(p.node.ends_with("-8443"), "{}", p.node);
        // An unreadable secret is an error naming it, never a store without
        // its password.
        std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = c.store_spec().unwrap_err().to_string();
        assert!(e.starts_with("the database password: secret `db`:"), "{e}");
        assert!(!e.contains("canary"), "{e}");
        // sled follows the data folder, also when `--data-dir` moves it.
        let mut c = load("version: 1\n").unwrap();
        c.data_dir = PathBuf::from("/srv/rg");
        let StoreSpec::Sled { dir } = c.store_spec().unwrap() else {
            panic!("not sled")
        };
        assert_eq!(dir, PathBuf::from("/srv/rg"));
    }

    #[test]
    fn node_names_from_host_names() {
        assert_eq!(node_name("host1", "8443").unwrap(), "host1-8443");
        assert_eq!(node_name("GW_2.corp", "80").unwrap(), "gw-2.corp-80");
        assert_eq!(node_name("-x", "1").unwrap(), "x-1");
        assert!(node_name("", "1").is_err());
        let long = node_name(&"a".repeat(100), "65535").unwrap();
        assert!(long.len() <= 63, "{long}");
        // The schema's pattern for `store.node` takes every default.
        let node = default_node(SocketAddr::from(([127, 0, 0, 1], 8443))).unwrap();
        let text = format!(
            "version: 1\nstore: {{backend: postgres, url: \"postgres://rg@db\", node: \"{node}\"}}\n"
        );
        assert!(load(&text).is_ok(), "{node}");
    }

    #[test]
    fn unknown_version() {
        let errs = load("version: 2\n").unwrap_err();
        assert_eq!(
            errs,
            [
                "/etc/resetgate/config.yaml:1:10: error[version]: unknown gateway config version `2`: \
              this gateway reads version 1\n  help: write `version: 1`; a file written for a newer \
              resetgate needs a newer gateway"
            ]
        );
    }
}
