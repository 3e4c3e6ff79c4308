//! The store on PostgreSQL, which several gateways may share.
//!
//! - **Connections.** Three r2d2 pools of synchronous `postgres` clients:
//!   the *work* pool (`pool` connections) for reads and for commits made
//!   without a user's lock, the *lock* pool (twice as many) whose sessions
//!   hold users' advisory locks and carry their holders' commits, so that
//!   requests holding a user's lock can never take the connections readers
//!   need, and the *health* pool (one session) for readiness probes. TLS is rustls (ring): `disable`,
//!   `require` (encrypted, certificate not checked) or `verify-full` (the
//!   certificate checked against `ca_file`, or the system's roots, and the
//!   host name). The password comes from the spec's secret, never from the
//!   URL, and never appears in an error or a log line.
//! - **Outages.** A connection that fails for want of the server (closed,
//!   refused, timed out, shutting down) makes the operation fail with
//!   [`StoreError::Unavailable`] (the API's 503) and is discarded; the
//!   failure also makes every pooled connection that was idle before it
//!   be checked once (`SELECT ''`) before its next use, so that after the
//!   server restarts one request, not one per pooled connection, finds out.
//!   Connections are made again by the pool when the server is back.
//!   Nothing panics; nothing retries a commit (whether a commit whose
//!   answer was lost took effect is unknown, and it was not acknowledged).
//! - **Schema.** Embedded migrations (`postgres/NNNN_*.sql`) applied at
//!   open in one transaction under an advisory lock, recorded in
//!   `resetgate_schema`; a database whose version is newer than this
//!   binary's is refused ([`StoreError::Newer`]).
//! - **Commits.** One call of the stored function `resetgate_commit` (see
//!   the migration) with the changes as parallel arrays and the audit
//!   groups: one statement, so one transaction and one round trip (its
//!   statement is prepared once per connection). `synchronous_commit` is
//!   the server's, so a commit is durable when it returns
//!   ([`Durable::ready`]).
//! - **Users' locks.** A stripe of in-process mutexes (so a gateway's own
//!   requests for one user queue here, holding no connection), then
//!   `pg_advisory_lock` on the first 8 bytes of sha256 of the user key, on
//!   a lock-pool connection, with the session's `lock_timeout` bounding
//!   the wait; `pg_advisory_unlock` when dropped, and if that fails the
//!   connection is discarded (its session ends, which frees the lock).
//!   The holder's commits ([`UserLock::commit`]) are made *on the lock's
//!   session*: a session-level advisory lock lasts exactly as long as its
//!   session, so a commit that reaches the server through it is made under
//!   the lock, and one whose session was lost (the server restarted, the
//!   session was terminated: the lock is free, and another gateway may
//!   hold it now) fails on the dead connection with
//!   [`StoreError::Unavailable`] before anything is written. It is never
//!   tried again on another connection. Two gateways therefore never both
//!   commit for one user. (A connection lost *after* the server committed
//!   but before its answer arrived also gives `Unavailable`: that commit
//!   did take effect, and was not acknowledged; it is the one case where a
//!   503 may hide a step that happened.)
//! - **Round trips of a request step** (schema 3). The lock and the reads
//!   a request makes first under it are one statement
//!   ([`Store::lock_user_and_read`]: `resetgate_lock` takes the advisory
//!   lock, then reads the flow and the user's lockout history; a VOLATILE
//!   function's statements take a new snapshot each, so the reads see the
//!   previous holder's last commit). The last commit of a request
//!   ([`UserLock::commit_and_release`]) is one statement too:
//!   `resetgate_commit_unlock` commits, takes the lock again at
//!   transaction level (at once: the session holds it) and releases the
//!   session's hold, so the lock is held until the commit's transaction
//!   ends, after its changes are visible, and no separate unlock is sent;
//!   a session that does not hold the lock refuses the commit (`RG002`,
//!   rolled back). A step is then: the flow read before the lock (to know
//!   its user and check its token), the lock with its reads, reads of
//!   enrollments as needed, the commit with the unlock — and the password
//!   step's checkpoint before the directory is touched.
//! - **Readiness.** [`Store::ready`] (`/readyz`): `SELECT 1` on the health
//!   session, waiting at most [`PROBE_WAIT`] for it (and failing at once
//!   while connecting is known to fail), its answer reused for
//!   [`READY_CACHE`] so that load balancers' probes do not reach the
//!   server more than once a second; one probe at a time.
//! - **Audit.** One hash chain per *lane* of a gateway, named
//!   `{node}/{lane}`, with as many lanes as work connections. A commit with
//!   audit records takes a free lane, links its records after the lane's
//!   head (cached; read once) with `store::audit`'s group format, and moves
//!   the head row in its transaction by compare-and-swap; if another
//!   writer moved it (two gateways given one node name), the commit re-reads
//!   the head and tries again. No commit waits for another gateway's.

use std::collections::{BTreeSet, HashMap};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::{Duration, Instant};

use postgres::config::{Host, SslMode};
use postgres::types::ToSql;
use postgres::{Client, NoTls, Statement};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use sha2::{Digest, Sha256};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::audit::{self, ChainVerifier, Head};
use super::{
    AuditEntry, AuditError, AuditLog, AuditQuery, AuditRecord, AuditSummary, ChainBreak, Change,
    Claim, Commit, Durable, FlowRecord, Held, Item, Locked, PgTlsMode, PostgresSpec, Queue, Store,
    StoreError, UserLock, WorkItem,
};
use crate::secret::Secret;

/// The embedded migrations: version, name, SQL. Versions count from 1
/// without gaps; the last is [`SCHEMA_VERSION`].
const MIGRATIONS: &[(u32, &str, &str)] = &[
    (1, "schema", include_str!("postgres/0001_schema.sql")),
    (
        2,
        "audit_users",
        include_str!("postgres/0002_audit_users.sql"),
    ),
    (
        3,
        "lock_round_trips",
        include_str!("postgres/0003_lock_round_trips.sql"),
    ),
];

/// The schema version this binary writes.
pub const SCHEMA_VERSION: u32 = 3;

/// The advisory lock (transaction-scoped) that serialises migrations.
const MIGRATION_LOCK: i64 = 0x7267_6d69_6772_6174; // "rgmigrat"

/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long an operation waits for a pooled connection.
const CHECKOUT_TIMEOUT: Duration = Duration::from_secs(5);
/// How often, at most, the pools try to connect again while the server
/// cannot be reached (r2d2 backs off to half its connection timeout).
const RECONNECT: Duration = Duration::from_millis(500);
/// For how long after a failed attempt to connect operations that find no
/// idle connection fail at once (the pools retry more often than this).
const FAIL_FAST: Duration = Duration::from_secs(1);
/// How often a pool that keeps failing to connect says so.
const LOG_EVERY: Duration = Duration::from_secs(30);
/// The lock sessions' `lock_timeout`: how long a user's lock is waited for.
const LOCK_WAIT_MS: u32 = 10_000;
/// Work sessions: a statement's limit, and that of a transaction left idle.
const WORK_OPTIONS: &str =
    "-c statement_timeout=30000 -c lock_timeout=10000 -c idle_in_transaction_session_timeout=60000";
/// Entries per audit group at most: a group's entries take the positions
/// `position * GROUP_STRIDE + i`.
const GROUP_STRIDE: u64 = 1024;
/// In-process stripes of users' locks.
const STRIPES: usize = 1024;
/// How often a commit re-reads a moved chain head before giving up.
const CAS_ATTEMPTS: usize = 8;
/// Rows per page when walking a table.
const PAGE: i64 = 1000;
/// Rows per page of a portal.
const PAGE_ROWS: i32 = 1000;
/// For how long a readiness probe's answer is reused.
const READY_CACHE: Duration = Duration::from_secs(1);
/// How long a readiness probe waits for its connection.
const PROBE_WAIT: Duration = Duration::from_secs(2);
/// The health session's statement limit (a probe's answer).
const HEALTH_OPTIONS: &str = "-c statement_timeout=2000";
/// A readiness probe.
const PROBE_SQL: &str = "SELECT 1";
/// The most bytes of a `ca_file`.
const MAX_CA_BYTES: u64 = 1 << 20;

/// A commit (see the migration's `resetgate_commit`).
const COMMIT_SQL: &str = "SELECT resetgate_commit($1, $2, $3, $4, $5, $6, $7, \
                          $8, $9, $10, $11, $12, $13, $14, $15, $16)";
/// A commit that releases the user's lock (see the migration's
/// `resetgate_commit_unlock`).
const COMMIT_UNLOCK_SQL: &str = "SELECT resetgate_commit_unlock($1, $2, $3, $4, $5, $6, $7, \
                                 $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)";
/// Takes a user's advisory lock.
const LOCK_SQL: &str = "SELECT pg_advisory_lock($1)";
/// Takes a user's advisory lock, then reads the flow and the user's lockout
/// history (see the migration's `resetgate_lock`).
const LOCK_READ_SQL: &str = "SELECT flow_body, lockout_history FROM resetgate_lock($1, $2, $3)";
/// Releases it: `true` if it was held.
const UNLOCK_SQL: &str = "SELECT pg_advisory_unlock($1)";

/// SQLSTATE the commit function raises when the chain head moved.
const CAS_CONFLICT: &str = "RG001";

/// The store on PostgreSQL.
pub struct PostgresStore {
    location: String,
    password: Option<Secret>,
    pools: RwLock<Option<Pools>>,
    /// Bumped when a connection is found lost: pooled connections made or
    /// checked before are checked again before their next use.
    epoch: Arc<AtomicU64>,
    /// When the pools last failed to connect, if they have not since.
    failed_at: Arc<Mutex<Option<Instant>>>,
    lanes: Lanes,
    stripes: Vec<Mutex<()>>,
    latency: crate::metrics::Histogram,
    readiness: Mutex<Readiness>,
}

/// What the readiness probes found.
#[derive(Default)]
struct Readiness {
    /// When the last probe ended, and its answer (the reason if not ready).
    last: Option<(Instant, Result<(), String>)>,
    /// When the probe under way began.
    probing: Option<Instant>,
}

impl Drop for PostgresStore {
    fn drop(&mut self) {
        self.close();
    }
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("location", &self.location)
            .finish_non_exhaustive()
    }
}

#[derive(Clone)]
struct Pools {
    work: r2d2::Pool<Manager>,
    locks: r2d2::Pool<Manager>,
    /// One session for readiness probes, so that they answer whether the
    /// server can be reached, not whether the work pool is busy.
    health: r2d2::Pool<Manager>,
}

/// How connections are made.
#[derive(Clone)]
enum Tls {
    Plain,
    Rustls(MakeRustlsConnect),
}

/// Makes and checks connections for r2d2.
struct Manager {
    config: postgres::Config,
    tls: Tls,
    epoch: Arc<AtomicU64>,
    /// When making a connection last failed, if it has not succeeded since.
    failed_at: Arc<Mutex<Option<Instant>>>,
    /// Statements prepared as soon as a connection is made.
    prepare: &'static [&'static str],
}

/// A pooled connection: the client, the epoch it was last known good in,
/// whether it must be discarded, and its prepared statements.
struct Conn {
    client: Client,
    epoch: u64,
    broken: bool,
    statements: HashMap<&'static str, Statement>,
}

impl Conn {
    /// The prepared statement for `sql`, prepared on first use.
    fn statement(&mut self, sql: &'static str) -> Result<Statement, postgres::Error> {
        if let Some(s) = self.statements.get(sql) {
            return Ok(s.clone());
        }
        let s = self.client.prepare(sql)?;
        self.statements.insert(sql, s.clone());
        Ok(s)
    }

    fn query(
        &mut self,
        sql: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<postgres::Row>, postgres::Error> {
        let statement = self.statement(sql)?;
        self.client.query(&statement, params)
    }

    fn query_opt(
        &mut self,
        sql: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<postgres::Row>, postgres::Error> {
        let statement = self.statement(sql)?;
        self.client.query_opt(&statement, params)
    }
}

fn connect(config: &postgres::Config, tls: &Tls) -> Result<Client, postgres::Error> {
    match tls {
        Tls::Plain => config.connect(NoTls),
        Tls::Rustls(make) => config.connect(make.clone()),
    }
}

impl r2d2::ManageConnection for Manager {
    type Connection = Conn;
    type Error = postgres::Error;

    fn connect(&self) -> Result<Conn, postgres::Error> {
        let epoch = self.epoch.load(Ordering::Acquire);
        let client = connect(&self.config, &self.tls);
        *lock(&self.failed_at) = client.is_err().then(Instant::now);
        let mut conn = Conn {
            client: client?,
            epoch,
            broken: false,
            statements: HashMap::new(),
        };
        for sql in self.prepare {
            conn.statement(sql)?;
        }
        Ok(conn)
    }

    fn is_valid(&self, conn: &mut Conn) -> Result<(), postgres::Error> {
        let now = self.epoch.load(Ordering::Acquire);
        // A client whose connection is known closed fails at once, without
        // a round trip.
        if conn.epoch < now || conn.client.is_closed() {
            conn.client.simple_query("")?;
            conn.epoch = now;
        }
        Ok(())
    }

    fn has_broken(&self, conn: &mut Conn) -> bool {
        conn.broken || conn.client.is_closed()
    }
}

/// Logs the pools' failures to connect (without the password), at most
/// once per [`LOG_EVERY`].
#[derive(Debug)]
struct LogErrors {
    location: String,
    password: Option<Secret>,
    logged_at: Mutex<Option<Instant>>,
}

impl r2d2::HandleError<postgres::Error> for LogErrors {
    fn handle_error(&self, error: postgres::Error) {
        {
            let mut logged_at = lock(&self.logged_at);
            if logged_at.is_some_and(|t| t.elapsed() < LOG_EVERY) {
                return;
            }
            *logged_at = Some(Instant::now());
        }
        tracing::warn!(
            target: "resetgate::store",
            location = %self.location,
            "cannot connect to postgres: {}",
            scrub(&describe(&error), self.password.as_ref())
        );
    }
}

/// Why an operation failed, inside a connection's use.
enum Failure {
    Pg(postgres::Error),
    Store(StoreError),
}

impl From<postgres::Error> for Failure {
    fn from(e: postgres::Error) -> Failure {
        Failure::Pg(e)
    }
}

/// What the driver said, without values: the server's message and SQLSTATE
/// (not its DETAIL, which may quote a row), or the client's error and its
/// causes.
fn describe(e: &postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return format!("{} (SQLSTATE {})", db.message(), db.code().code());
    }
    let mut out = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        source = cause.source();
    }
    out
}

/// `text` with the password (if any) replaced: belt and braces, as no
/// message is known to quote it.
fn scrub(text: &str, password: Option<&Secret>) -> String {
    match password.map(Secret::expose) {
        Some(p) if !p.is_empty() => text.replace(p, "[redacted]"),
        _ => text.to_owned(),
    }
}

/// Whether `e` means the server is not there (or not now): the operation
/// may succeed later, and the connection is lost.
fn connection_lost(e: &postgres::Error) -> bool {
    match e.as_db_error() {
        Some(db) => {
            let code = db.code().code();
            // 08: connection exception; 57P01–57P03: shutting down,
            // crashed, starting up.
            code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03")
        }
        None => {
            e.is_closed()
                || matches!(
                    e.to_string().as_str(),
                    "error communicating with the server"
                        | "error connecting to server"
                        | "timeout waiting for server"
                        | "error performing TLS handshake"
                        | "unexpected message from server"
                        | "error parsing response from server"
                )
        }
    }
}

/// Whether `e` says "try again later" without the connection being lost:
/// lock or resource limits, conflicts, a read-only standby.
fn retry_later(e: &postgres::Error) -> bool {
    e.as_db_error().is_some_and(|db| {
        let code = db.code().code();
        code.starts_with("53")
            || matches!(
                code,
                "55P03" | "57014" | "40001" | "40P01" | "25006" | "25P03"
            )
    })
}

/// Runs `f` where the synchronous client may block: on this thread, or —
/// inside an async runtime, whose thread must not block on another runtime
/// — on a scoped thread of its own.
fn blocking<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    if tokio::runtime::Handle::try_current().is_err() {
        return f();
    }
    std::thread::scope(|s| match s.spawn(f).join() {
        Ok(out) => out,
        Err(panic) => std::panic::resume_unwind(panic),
    })
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Milliseconds as PostgreSQL's `bigint`: saturating at `i64::MAX`, which
/// reads back as `u64::MAX` (never).
fn ms_to_db(ms: u64) -> i64 {
    i64::try_from(ms).unwrap_or(i64::MAX)
}

fn ms_from_db(ms: i64) -> u64 {
    if ms == i64::MAX {
        u64::MAX
    } else {
        u64::try_from(ms).unwrap_or(0)
    }
}

fn limit_to_db(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

/// The advisory lock key of a user: the first 8 bytes of sha256.
fn user_key(user: &str) -> i64 {
    let h = Sha256::digest(format!("resetgate user\0{user}").as_bytes());
    i64::from_be_bytes([h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7]])
}

/// The smallest string after every string that starts with `prefix` (in
/// code point order, which is the "C" collation's byte order), if any.
fn prefix_end(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        let mut next = u32::from(last) + 1;
        if (0xD800..0xE000).contains(&next) {
            next = 0xE000;
        }
        if let Some(c) = char::from_u32(next) {
            chars.push(c);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

/// `postgres://user@host:port/db` of a parsed URL.
fn location_of(config: &postgres::Config) -> String {
    let user = config.get_user().unwrap_or("");
    let host = match config.get_hosts().first() {
        Some(Host::Tcp(h)) if h.contains(':') => format!("[{h}]"),
        Some(Host::Tcp(h)) => h.clone(),
        Some(Host::Unix(p)) => p.display().to_string(),
        None => "localhost".to_owned(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let db = config.get_dbname().unwrap_or(user);
    format!("postgres://{user}@{host}:{port}/{db}")
}

/// Accepts any certificate (`require`: encrypted, not authenticated), but
/// checks the handshake's signatures.
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The TLS connector for `spec`'s settings.
fn tls_of(spec: &PostgresSpec) -> Result<Tls, String> {
    let provider = Arc::new(crate::listen::provider());
    let builder = || {
        ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| format!("tls: {e}"))
    };
    Ok(match spec.tls.mode {
        PgTlsMode::Disable => Tls::Plain,
        PgTlsMode::Require => Tls::Rustls(MakeRustlsConnect::new(
            builder()?
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider.clone())))
                .with_no_client_auth(),
        )),
        PgTlsMode::VerifyFull => {
            let roots = match &spec.tls.ca_file {
                Some(path) => ca_roots(path)?,
                None => {
                    let mut roots = RootCertStore::empty();
                    let found = rustls_native_certs::load_native_certs();
                    roots.add_parsable_certificates(found.certs);
                    if roots.is_empty() {
                        return Err("tls verify-full without a ca_file needs the system's CA \
                                    certificates, and none were found: set store.tls.ca_file"
                            .to_owned());
                    }
                    roots
                }
            };
            Tls::Rustls(MakeRustlsConnect::new(
                builder()?
                    .with_root_certificates(roots)
                    .with_no_client_auth(),
            ))
        }
    })
}

/// The certificates of a `ca_file`: at least one, every one usable.
fn ca_roots(path: &std::path::Path) -> Result<RootCertStore, String> {
    let bad = |reason: String| format!("the ca_file {}: {reason}", path.display());
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

/// Applies the migrations this database lacks, in one transaction, under
/// an advisory lock; the version it is at afterwards.
fn migrate(client: &mut Client) -> Result<u32, postgres::Error> {
    let mut tx = client.transaction()?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS resetgate_schema (
             version    integer PRIMARY KEY,
             name       text NOT NULL,
             applied_at timestamptz NOT NULL DEFAULT now()
         )",
    )?;
    let found: Option<i32> = tx
        .query_one("SELECT max(version) FROM resetgate_schema", &[])?
        .get(0);
    let found = found.and_then(|v| u32::try_from(v).ok()).unwrap_or(0);
    if found >= SCHEMA_VERSION {
        return Ok(found);
    }
    for &(version, name, sql) in MIGRATIONS.iter().filter(|m| m.0 > found) {
        tx.batch_execute(sql)?;
        if version == 2 {
            fill_audit_users(&mut tx)?;
        }
        let v = i32::try_from(version).unwrap_or(i32::MAX);
        tx.execute(
            "INSERT INTO resetgate_schema (version, name) VALUES ($1, $2)",
            &[&v, &name],
        )?;
        tracing::info!(target: "resetgate::store", version, name, "applied a schema migration");
    }
    tx.commit()?;
    Ok(SCHEMA_VERSION)
}

/// Lists the users of every stored audit group (schema 2). An unreadable
/// group is left without users (`audit verify` reports it).
fn fill_audit_users(tx: &mut postgres::Transaction<'_>) -> Result<(), postgres::Error> {
    let mut after = -1i64;
    loop {
        let rows = tx.query(
            "SELECT position, bytes FROM audit_groups WHERE position > $1 ORDER BY position \
             LIMIT 1000",
            &[&after],
        )?;
        let Some(last) = rows.last() else {
            return Ok(());
        };
        after = last.get(0);
        for row in &rows {
            let position: i64 = row.get(0);
            let Ok(entries) = group_entries("", position, &row.get::<_, Vec<u8>>(1)) else {
                continue;
            };
            let users: Vec<String> = users_of(entries.iter().map(|e| &e.record))
                .split('\n')
                .filter(|u| !u.is_empty())
                .map(str::to_owned)
                .collect();
            if !users.is_empty() {
                tx.execute(
                    "UPDATE audit_groups SET users = $2 WHERE position = $1",
                    &[&position, &users],
                )?;
            }
        }
    }
}

/// The users `records` concern, each once, separated by newlines (the
/// form `resetgate_commit` takes).
fn users_of<'a>(records: impl Iterator<Item = &'a AuditRecord>) -> String {
    let users: BTreeSet<&str> = records.filter_map(|r| r.user.as_deref()).collect();
    users.into_iter().collect::<Vec<_>>().join("\n")
}

impl PostgresStore {
    /// Connects to the database `spec` names, applies the migrations it
    /// lacks (refusing a newer schema) and starts the pools.
    pub fn open(spec: &PostgresSpec) -> Result<PostgresStore, StoreError> {
        blocking(|| PostgresStore::open_here(spec))
    }

    /// The schema version the database holds, read without migrating;
    /// `None` before the first migration.
    pub fn stored_schema(spec: &PostgresSpec) -> Result<Option<u32>, StoreError> {
        blocking(|| {
            let (config, location, tls, password) = PostgresStore::settings(spec)?;
            let failed = |e: postgres::Error| StoreError::Open {
                location: location.clone(),
                reason: scrub(
                    &format!("reading the schema version: {}", describe(&e)),
                    password.as_ref(),
                ),
            };
            let mut client = connect(&config, &tls).map_err(|e| StoreError::Open {
                location: location.clone(),
                reason: scrub(
                    &format!("cannot connect to postgres: {}", describe(&e)),
                    password.as_ref(),
                ),
            })?;
            let exists: bool = client
                .query_one("SELECT to_regclass('resetgate_schema') IS NOT NULL", &[])
                .map_err(failed)?
                .get(0);
            if !exists {
                return Ok(None);
            }
            let row = client
                .query_one("SELECT max(version) FROM resetgate_schema", &[])
                .map_err(failed)?;
            let version: Option<i32> = row.get(0);
            Ok(version.and_then(|v| u32::try_from(v).ok()))
        })
    }

    /// What `spec` says, checked: the driver's settings (password and TLS
    /// mode included), the location, the TLS connector and the password.
    fn settings(
        spec: &PostgresSpec,
    ) -> Result<(postgres::Config, String, Tls, Option<Secret>), StoreError> {
        let password = spec.password.clone();
        let open_error = |location: &str, reason: String| StoreError::Open {
            location: location.to_owned(),
            reason: scrub(&reason, password.as_ref()),
        };
        let mut config = postgres::Config::from_str(&spec.url).map_err(|e| {
            open_error(
                &spec.location(),
                format!(
                    "the URL is not a PostgreSQL URL (postgres://USER@HOST:PORT/DATABASE): {}",
                    describe(&e)
                ),
            )
        })?;
        let location = location_of(&config);
        if config.get_password().is_some() {
            return Err(open_error(
                &location,
                "the URL carries a password: remove it, and give the password as a secret \
                 (store.password)"
                    .to_owned(),
            ));
        }
        let node = spec.node.as_str();
        if node.is_empty()
            || node.len() > 64
            || !node
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        {
            return Err(open_error(
                &location,
                format!(
                    "the node name `{}` must be 1 to 64 letters, digits, `.`, `-` or `_` \
                     (it names this gateway's audit chains)",
                    node.escape_debug()
                ),
            ));
        }
        if let Some(p) = &password {
            config.password(p.expose());
        }
        config
            .ssl_mode(match spec.tls.mode {
                PgTlsMode::Disable => SslMode::Disable,
                PgTlsMode::Require | PgTlsMode::VerifyFull => SslMode::Require,
            })
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_user_timeout(Duration::from_secs(20))
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(30))
            .application_name(&format!("resetgate {node}"));
        let tls = tls_of(spec).map_err(|e| open_error(&location, e))?;

        Ok((config, location, tls, password))
    }

    fn open_here(spec: &PostgresSpec) -> Result<PostgresStore, StoreError> {
        let (config, location, tls, password) = PostgresStore::settings(spec)?;
        let node = spec.node.as_str();
        let open_error = |location: &str, reason: String| StoreError::Open {
            location: location.to_owned(),
            reason: scrub(&reason, password.as_ref()),
        };
        // Migrations first, on a connection of their own: the first thing
        // that fails (refused, wrong password, bad certificate) says so.
        let mut client = connect(&config, &tls).map_err(|e| {
            open_error(
                &location,
                format!("cannot connect to postgres: {}", describe(&e)),
            )
        })?;
        let version = migrate(&mut client).map_err(|e| {
            open_error(&location, format!("migrating the schema: {}", describe(&e)))
        })?;
        if version > SCHEMA_VERSION {
            return Err(StoreError::Newer {
                found: version,
                supported: SCHEMA_VERSION,
            });
        }
        drop(client);

        let size = spec.pool.max(1);
        let epoch = Arc::new(AtomicU64::new(0));
        let failed_at = Arc::new(Mutex::new(None));
        let pool = |options: String, max: u32, prepare: &'static [&'static str]| {
            let mut config = config.clone();
            config.options(&options);
            r2d2::Pool::builder()
                .max_size(max)
                .min_idle(Some(1))
                .connection_timeout(RECONNECT * 2)
                .test_on_check_out(true)
                .error_handler(Box::new(LogErrors {
                    location: location.clone(),
                    password: password.clone(),
                    logged_at: Mutex::new(None),
                }))
                .build_unchecked(Manager {
                    config,
                    tls: tls.clone(),
                    epoch: epoch.clone(),
                    failed_at: failed_at.clone(),
                    prepare,
                })
        };
        let pools = Pools {
            work: pool(WORK_OPTIONS.to_owned(), size, &[COMMIT_SQL]),
            locks: pool(
                format!(
                    "-c lock_timeout={LOCK_WAIT_MS} -c statement_timeout=30000 \
                     -c idle_in_transaction_session_timeout=60000"
                ),
                size.saturating_mul(2),
                &[
                    LOCK_SQL,
                    LOCK_READ_SQL,
                    UNLOCK_SQL,
                    COMMIT_SQL,
                    COMMIT_UNLOCK_SQL,
                ],
            ),
            health: pool(HEALTH_OPTIONS.to_owned(), 1, &[PROBE_SQL]),
        };
        // One lane per connection that may commit (work and lock sessions),
        // taken from the end: lane 0 first, so a quiet gateway uses one chain.
        let lanes = (0..size.saturating_mul(3))
            .rev()
            .map(|i| Lane {
                chain: format!("{node}/{i}"),
                head: None,
            })
            .collect();
        Ok(PostgresStore {
            location,
            password,
            pools: RwLock::new(Some(pools)),
            epoch,
            failed_at,
            lanes: Lanes {
                free: Mutex::new(lanes),
                available: Condvar::new(),
            },
            stripes: (0..STRIPES).map(|_| Mutex::new(())).collect(),
            latency: crate::metrics::Histogram::default(),
            readiness: Mutex::new(Readiness::default()),
        })
    }

    fn pools(&self) -> Result<Pools, StoreError> {
        self.pools
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .ok_or(StoreError::Closed)
    }

    /// The error for `e`, met doing `op` on `what`.
    fn error(&self, op: &'static str, what: &'static str, e: &postgres::Error) -> StoreError {
        let reason = scrub(&describe(e), self.password.as_ref());
        if connection_lost(e) || retry_later(e) {
            StoreError::Unavailable {
                reason: format!("postgres {op} on {what}: {reason}"),
            }
        } else {
            StoreError::Io { op, what, reason }
        }
    }

    /// A connection of `pool`, waited for as a worker's wait. While the
    /// server is known to be unreachable (connecting failed less than
    /// [`FAIL_FAST`] ago, and the pool retries in the background), an
    /// operation that finds no idle connection fails at once instead of
    /// waiting [`CHECKOUT_TIMEOUT`] for one.
    fn checkout(
        &self,
        pool: &r2d2::Pool<Manager>,
    ) -> Result<r2d2::PooledConnection<Manager>, StoreError> {
        let failed_at = *lock(&self.failed_at);
        if failed_at.is_some_and(|t| t.elapsed() < FAIL_FAST) {
            return pool.try_get().ok_or_else(|| StoreError::Unavailable {
                reason: format!(
                    "postgres at {} cannot be reached (the last attempt to connect failed)",
                    self.location
                ),
            });
        }
        // Wait in slices: a failed attempt to connect meanwhile ends the wait.
        let began = Instant::now();
        crate::workers::waiting(|| {
            loop {
                let left = CHECKOUT_TIMEOUT.saturating_sub(began.elapsed());
                match pool.get_timeout(left.min(Duration::from_millis(100))) {
                    Ok(conn) => return Ok(conn),
                    Err(e) => {
                        let failed = lock(&self.failed_at).is_some_and(|t| t >= began);
                        if failed || left.is_zero() {
                            return Err(StoreError::Unavailable {
                                reason: scrub(
                                    &format!("no connection to postgres at {}: {e}", self.location),
                                    self.password.as_ref(),
                                ),
                            });
                        }
                    }
                }
            }
        })
    }

    /// Runs `f` on a work connection. A lost connection is discarded (and
    /// the others checked before their next use); `idempotent` operations
    /// are tried once more on another connection.
    fn with_work<T: Send>(
        &self,
        op: &'static str,
        what: &'static str,
        idempotent: bool,
        f: impl FnMut(&mut Conn) -> Result<T, Failure> + Send,
    ) -> Result<T, StoreError> {
        let pools = self.pools()?;
        let mut f = f;
        blocking(move || {
            let mut tries = if idempotent { 2 } else { 1 };
            loop {
                tries -= 1;
                let mut conn = self.checkout(&pools.work)?;
                match crate::workers::waiting(|| f(&mut conn)) {
                    Ok(out) => return Ok(out),
                    Err(Failure::Store(e)) => return Err(e),
                    Err(Failure::Pg(e)) => {
                        if connection_lost(&e) {
                            conn.broken = true;
                            self.epoch.fetch_add(1, Ordering::AcqRel);
                            if tries > 0 {
                                continue;
                            }
                        }
                        return Err(self.error(op, what, &e));
                    }
                }
            }
        })
    }

    /// One readiness probe: `SELECT 1` on the health session (made again
    /// once if it was lost, so a restart the probes did not see is not
    /// reported); the reason if it failed.
    fn probe(&self, pools: &Pools) -> Result<(), String> {
        let mut tries = 2;
        loop {
            tries -= 1;
            let failed_at = *lock(&self.failed_at);
            let conn = if failed_at.is_some_and(|t| t.elapsed() < FAIL_FAST) {
                pools
                    .health
                    .try_get()
                    .ok_or_else(|| "the last attempt to connect failed".to_owned())
            } else {
                pools
                    .health
                    .get_timeout(PROBE_WAIT)
                    .map_err(|e| format!("no connection: {e}"))
            };
            let mut conn = conn.map_err(|reason| {
                scrub(
                    &format!("postgres at {} cannot be reached: {reason}", self.location),
                    self.password.as_ref(),
                )
            })?;
            match conn.query_opt(PROBE_SQL, &[]) {
                Ok(_) => return Ok(()),
                Err(e) => {
                    let lost = connection_lost(&e);
                    if lost {
                        conn.broken = true;
                        self.epoch.fetch_add(1, Ordering::AcqRel);
                    }
                    if !lost || tries == 0 {
                        return Err(scrub(
                            &format!(
                                "postgres at {} does not answer: {}",
                                self.location,
                                describe(&e)
                            ),
                            self.password.as_ref(),
                        ));
                    }
                }
            }
        }
    }

    /// Takes `user`'s lock: the in-process stripe, then the advisory lock
    /// on a lock session, with `read` (a flow, if any, and the user's
    /// lockout history) read in the same statement after it is granted.
    fn take_lock(&self, user: &str, read: Option<Option<&str>>) -> Result<Locked<'_>, StoreError> {
        let pools = self.pools()?;
        let key = user_key(user);
        let i = usize::try_from(key.unsigned_abs() % STRIPES as u64).unwrap_or(0);
        let Some(stripe) = self.stripes.get(i) else {
            return Err(StoreError::Closed);
        };
        let guard = match stripe.try_lock() {
            Ok(guard) => guard,
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => {
                crate::workers::waiting(|| stripe.lock().unwrap_or_else(PoisonError::into_inner))
            }
        };
        let (conn, flow, lockout) = blocking(|| {
            let mut conn = self.checkout(&pools.locks)?;
            let locked = crate::workers::waiting(|| match read {
                None => conn.query_opt(LOCK_SQL, &[&key]).map(|_| (None, None)),
                Some(flow) => conn
                    .query_opt(LOCK_READ_SQL, &[&key, &flow, &user])
                    .map(|row| row.map_or((None, None), |r| (r.get(0), r.get(1)))),
            });
            match locked {
                Ok((flow, lockout)) => Ok((conn, flow, lockout)),
                Err(e) => {
                    let not_granted = e.code().is_some_and(|c| c.code() == "55P03");
                    if connection_lost(&e) {
                        conn.broken = true;
                        self.epoch.fetch_add(1, Ordering::AcqRel);
                    } else if read.is_some() && !not_granted {
                        // The lock may be held and the reads failed: ending
                        // the session frees it.
                        conn.broken = true;
                    }
                    if not_granted {
                        return Err(StoreError::Unavailable {
                            reason: format!(
                                "a user's lock was not granted within {} s (another \
                                 gateway's request holds it)",
                                LOCK_WAIT_MS / 1000
                            ),
                        });
                    }
                    Err(self.error("lock", "users", &e))
                }
            }
        })?;
        Ok(Locked {
            lock: UserLock::new(HeldLock {
                store: self,
                conn: Some(conn),
                key,
                releasing: false,
                _stripe: guard,
            }),
            flow,
            lockout,
        })
    }

    /// Applies `commit` on `conn`, the session that holds a user's lock:
    /// never tried again elsewhere (a lost session means a lost lock).
    fn commit_held(
        &self,
        conn: &mut r2d2::PooledConnection<Manager>,
        commit: Commit,
        release: Option<i64>,
    ) -> Result<Durable, StoreError> {
        self.pools()?;
        if commit.is_empty() {
            return Ok(Durable::ready());
        }
        let started = Instant::now();
        let mut groups = prepare_groups(&commit.audit)?;
        let ops = Ops::of(commit.changes);
        let done = blocking(|| {
            crate::workers::waiting(|| self.commit_on(&mut *conn, &ops, &mut groups, release))
        });
        match done {
            Ok(()) => {
                self.latency.observe(started.elapsed());
                Ok(Durable::ready())
            }
            Err(Failure::Store(e)) => Err(e),
            Err(Failure::Pg(e)) => {
                if connection_lost(&e) {
                    // The session, and with it the user's lock, is gone.
                    conn.broken = true;
                    self.epoch.fetch_add(1, Ordering::AcqRel);
                }
                Err(self.error("commit", "store", &e))
            }
        }
    }

    /// One row's first column, read with `sql`.
    fn read_bytes(
        &self,
        what: &'static str,
        sql: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Vec<u8>>, StoreError> {
        self.with_work("read", what, true, |conn| {
            Ok(conn.query_opt(sql, params)?.map(|row| row.get(0)))
        })
    }

    /// Appends `groups` (already prepared) to a lane's chain along with
    /// `changes`: the one statement of a commit. With `release`, the
    /// statement also releases that user's lock, held by `conn`'s session.
    fn commit_on(
        &self,
        conn: &mut Conn,
        ops: &Ops,
        groups: &mut [Group],
        release: Option<i64>,
    ) -> Result<(), Failure> {
        let sql = if release.is_some() {
            COMMIT_UNLOCK_SQL
        } else {
            COMMIT_SQL
        };
        let release = release.as_ref();
        if groups.is_empty() {
            let mut params = ops.without_audit().to_vec();
            if let Some(key) = release {
                params.push(key);
            }
            conn.query(sql, &params)?;
            return Ok(());
        }
        let mut lane = self.lanes.take();
        let chain = lane.chain();
        let statement = conn.statement(sql)?;
        // The fast path: one statement after the head this lane last wrote.
        if let Some(old) = lane.head() {
            let (head, seqs) = link_groups(groups, old)?;
            let result = call_commit!(
                |s, p| conn.client.query(s, p),
                &statement,
                ops,
                &chain,
                old,
                head,
                &seqs,
                groups,
                release
            );
            lane.set_head(None);
            match result {
                Ok(_) => {
                    lane.set_head(Some(head));
                    return Ok(());
                }
                Err(e) if e.code().is_some_and(|c| c.code() == CAS_CONFLICT) => {
                    tracing::debug!(target: "resetgate::store", chain, "audit chain head moved");
                }
                // Whether it took effect is unknown: the head is read again.
                Err(e) => return Err(e.into()),
            }
        }
        // The head is unknown or moved (another writer on this chain): read
        // it under the row's lock, so the next writer waits for this one.
        for _ in 0..CAS_ATTEMPTS {
            let mut tx = conn.client.transaction()?;
            let old = read_head(&mut tx, &chain)?;
            let (head, seqs) = link_groups(groups, old)?;
            let result = call_commit!(
                |s, p| tx.query(s, p),
                &statement,
                ops,
                &chain,
                old,
                head,
                &seqs,
                groups,
                release
            );
            match result {
                Ok(_) => {
                    tx.commit()?;
                    lane.set_head(Some(head));
                    return Ok(());
                }
                // A chain row another writer inserted meanwhile: again.
                Err(e) if e.code().is_some_and(|c| c.code() == CAS_CONFLICT) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Err(Failure::Store(StoreError::Unavailable {
            reason: format!("the head of audit chain `{chain}` kept moving"),
        }))
    }
}

/// Links `groups` after `old`: the new head and each group's first
/// sequence number.
fn link_groups(groups: &mut [Group], old: Head) -> Result<(Head, Vec<i64>), Failure> {
    let mut head = old;
    let mut seqs = Vec::with_capacity(groups.len());
    for Group { bytes, layout, .. } in groups.iter_mut() {
        let first = layout.link(&mut head, bytes).ok_or_else(|| {
            Failure::Store(StoreError::Io {
                op: "commit",
                what: "audit",
                reason: "an audit group does not fit its layout".to_owned(),
            })
        })?;
        seqs.push(i64::try_from(first).unwrap_or(i64::MAX));
    }
    Ok((head, seqs))
}

/// Calls the commit function with `$call`, appending `$groups` (linked by
/// [`link_groups`] from `$old` to `$head`) to `$chain`, and releasing the
/// user's lock `$release` if given.
macro_rules! call_commit {
    ($call:expr, $statement:expr, $ops:expr, $chain:expr, $old:expr, $head:expr, $seqs:expr, $groups:expr, $release:expr) => {{
        let counts: Vec<i32> = $groups.iter().map(|g| g.count).collect();
        let bytes: Vec<&[u8]> = $groups.iter().map(|g| g.bytes.as_slice()).collect();
        let users: Vec<&str> = $groups.iter().map(|g| g.users.as_str()).collect();
        let expect_seq = i64::try_from($old.next_seq).unwrap_or(i64::MAX);
        let new_seq = i64::try_from($head.next_seq).unwrap_or(i64::MAX);
        let chain: &str = $chain;
        let seqs: &[i64] = $seqs;
        let release: Option<&i64> = $release;
        let (old_hash, new_hash) = ($old.hash_bytes(), $head.hash_bytes());
        let mut params: Vec<&(dyn ToSql + Sync)> = vec![
            &$ops.kinds,
            &$ops.a,
            &$ops.b,
            &$ops.c,
            &$ops.n,
            &$ops.f,
            &$ops.d,
            &chain,
            &expect_seq,
            &old_hash,
            &new_seq,
            &new_hash,
            &seqs,
            &counts,
            &bytes,
            &users,
        ];
        if let Some(key) = release {
            params.push(key);
        }
        $call($statement, &params)
    }};
}
use call_commit;

/// Reads a chain's head (the empty head if the chain has no entries yet),
/// locking its row.
fn read_head(tx: &mut postgres::Transaction<'_>, chain: &str) -> Result<Head, Failure> {
    let row = tx.query_opt(
        "SELECT next_seq, head FROM audit_chains WHERE chain = $1 FOR UPDATE",
        &[&chain],
    )?;
    let Some(row) = row else {
        return Ok(Head::empty());
    };
    let next_seq: i64 = row.get(0);
    let hash: Vec<u8> = row.get(1);
    Head::from_parts(u64::try_from(next_seq).unwrap_or(0), &hash).ok_or_else(|| {
        Failure::Store(StoreError::Io {
            op: "read",
            what: "audit",
            reason: format!("the head of audit chain `{chain}` is not a sha256 digest"),
        })
    })
}

/// A commit's changes as the commit function's parallel arrays.
#[derive(Default)]
struct Ops {
    kinds: Vec<i16>,
    a: Vec<Option<String>>,
    b: Vec<Option<String>>,
    c: Vec<Option<String>>,
    n: Vec<Option<i64>>,
    f: Vec<Option<bool>>,
    d: Vec<Option<Vec<u8>>>,
}

/// The audit arguments of `resetgate_commit` for a commit without records.
static NO_TEXT: Option<&str> = None;
static NO_I64: Option<i64> = None;
static NO_BYTES: Option<&[u8]> = None;
static NO_I64S: Option<Vec<i64>> = None;
static NO_I32S: Option<Vec<i32>> = None;
static NO_BYTESS: Option<Vec<Vec<u8>>> = None;
static NO_TEXTS: Option<Vec<String>> = None;

impl Ops {
    /// The arguments of `resetgate_commit` for these changes and no audit
    /// records.
    fn without_audit(&self) -> [&(dyn ToSql + Sync); 16] {
        [
            &self.kinds,
            &self.a,
            &self.b,
            &self.c,
            &self.n,
            &self.f,
            &self.d,
            &NO_TEXT,
            &NO_I64,
            &NO_BYTES,
            &NO_I64,
            &NO_BYTES,
            &NO_I64S,
            &NO_I32S,
            &NO_BYTESS,
            &NO_TEXTS,
        ]
    }

    fn push(&mut self, kind: i16, a: String, op: Op) {
        self.kinds.push(kind);
        self.a.push(Some(a));
        self.b.push(op.b);
        self.c.push(op.c);
        self.n.push(op.n);
        self.f.push(op.f);
        self.d.push(op.d);
    }

    fn of(changes: Vec<Change>) -> Ops {
        let mut ops = Ops::default();
        for change in changes {
            match change {
                Change::PutFlow(r) => ops.push(
                    1,
                    r.id,
                    Op {
                        b: Some(r.user),
                        c: Some(r.version),
                        n: Some(ms_to_db(r.due_ms)),
                        f: Some(r.in_progress),
                        d: Some(r.body),
                    },
                ),
                Change::DeleteFlow { id } => ops.push(2, id, Op::default()),
                Change::PutLockout { user, history } => ops.push(
                    3,
                    user,
                    Op {
                        d: Some(history),
                        ..Op::default()
                    },
                ),
                Change::PutEnrollment { user, gate, data } => ops.push(
                    4,
                    user,
                    Op {
                        b: Some(gate),
                        d: Some(data),
                        ..Op::default()
                    },
                ),
                Change::DeleteEnrollment { user, gate } => ops.push(
                    5,
                    user,
                    Op {
                        b: Some(gate),
                        ..Op::default()
                    },
                ),
                Change::PutKv {
                    namespace,
                    key,
                    value,
                } => ops.push(
                    6,
                    namespace,
                    Op {
                        b: Some(key),
                        d: Some(value),
                        ..Op::default()
                    },
                ),
                Change::DeleteKv { namespace, key } => ops.push(
                    7,
                    namespace,
                    Op {
                        b: Some(key),
                        ..Op::default()
                    },
                ),
                Change::Enqueue(item) => ops.push(
                    8,
                    item.queue.name().to_owned(),
                    Op {
                        b: Some(item.id),
                        n: Some(ms_to_db(item.due_ms)),
                        d: Some(item.payload),
                        ..Op::default()
                    },
                ),
                Change::Schedule(item) => ops.push(
                    11,
                    item.queue.name().to_owned(),
                    Op {
                        b: Some(item.id),
                        n: Some(ms_to_db(item.due_ms)),
                        d: Some(item.payload),
                        ..Op::default()
                    },
                ),
                Change::Finish { queue, id } => ops.push(
                    9,
                    queue.name().to_owned(),
                    Op {
                        b: Some(id),
                        ..Op::default()
                    },
                ),
                Change::Retry { queue, id, due_ms } => ops.push(
                    10,
                    queue.name().to_owned(),
                    Op {
                        b: Some(id),
                        n: Some(ms_to_db(due_ms)),
                        ..Op::default()
                    },
                ),
            }
        }
        ops
    }
}

/// One change's arguments after the first (see the commit function).
#[derive(Default)]
struct Op {
    b: Option<String>,
    c: Option<String>,
    n: Option<i64>,
    f: Option<bool>,
    d: Option<Vec<u8>>,
}

/// The lanes of this gateway's audit chains, free for a commit to take.
struct Lanes {
    free: Mutex<Vec<Lane>>,
    available: Condvar,
}

struct Lane {
    chain: String,
    /// The chain's head as this gateway last wrote or read it; `None` when
    /// unknown (not read yet, or a commit's outcome is unknown).
    head: Option<Head>,
}

impl Lanes {
    /// A free lane. There are as many lanes as connections (work and
    /// lock sessions), and a commit takes its lane after its connection,
    /// so one is free.
    fn take(&self) -> LaneGuard<'_> {
        let mut free = lock(&self.free);
        loop {
            if let Some(lane) = free.pop() {
                return LaneGuard {
                    lanes: self,
                    lane: Some(lane),
                };
            }
            free = self
                .available
                .wait(free)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }
}

struct LaneGuard<'a> {
    lanes: &'a Lanes,
    lane: Option<Lane>,
}

impl LaneGuard<'_> {
    fn head(&self) -> Option<Head> {
        self.lane.as_ref().and_then(|l| l.head)
    }

    fn set_head(&mut self, head: Option<Head>) {
        if let Some(lane) = &mut self.lane {
            lane.head = head;
        }
    }

    fn chain(&self) -> String {
        self.lane
            .as_ref()
            .map(|l| l.chain.clone())
            .unwrap_or_default()
    }
}

impl Drop for LaneGuard<'_> {
    fn drop(&mut self) {
        if let Some(lane) = self.lane.take() {
            lock(&self.lanes.free).push(lane);
            self.lanes.available.notify_one();
        }
    }
}

/// A user's lock: the advisory lock's session and the in-process stripe.
/// The holder's commits are made on that session, so a commit is applied
/// only while the lock is held: the session is the lock, and a session
/// lost (the server restarted) fails the commit with
/// [`StoreError::Unavailable`] before anything is written.
struct HeldLock<'a> {
    store: &'a PostgresStore,
    conn: Option<r2d2::PooledConnection<Manager>>,
    key: i64,
    /// A commit that releases the lock was tried, so the lock may be
    /// released already.
    releasing: bool,
    _stripe: MutexGuard<'a, ()>,
}

impl Drop for HeldLock<'_> {
    fn drop(&mut self) {
        let Some(mut conn) = self.conn.take() else {
            return;
        };
        if conn.broken {
            // Lost with its session (a failed commit said so): closed.
            blocking(move || drop(conn));
            return;
        }
        let (key, releasing) = (self.key, self.releasing);
        // The connection goes back (or, broken, is closed) off any async
        // runtime: closing a client blocks.
        let unlocked = blocking(move || {
            let done = conn
                .query_opt(UNLOCK_SQL, &[&key])
                .map(|row| row.is_some_and(|r| r.get::<_, bool>(0)));
            match done {
                Ok(true) => true,
                // A failed commit that releases the lock may have released
                // it (its transaction failed after the release).
                Ok(false) if releasing => true,
                _ => {
                    // Ending the session frees the lock.
                    conn.broken = true;
                    false
                }
            }
        });
        if !unlocked {
            self.store.epoch.fetch_add(1, Ordering::AcqRel);
            tracing::warn!(
                target: "resetgate::store",
                "unlocking a user's advisory lock failed; its session is closed instead"
            );
        }
    }
}

impl Held for HeldLock<'_> {
    fn commit(&mut self, commit: Commit) -> Result<Durable, StoreError> {
        let store = self.store;
        let Some(conn) = self.conn.as_mut() else {
            return Err(StoreError::Unavailable {
                reason: "the user's lock was lost".to_owned(),
            });
        };
        store.commit_held(conn, commit, None)
    }

    /// One statement: the commit, and the lock released by it (held by
    /// the commit's transaction until it ends); an empty commit just
    /// unlocks (when dropped).
    fn commit_and_release(mut self: Box<Self>, commit: Commit) -> Result<Durable, StoreError> {
        if commit.is_empty() {
            self.store.pools()?;
            return Ok(Durable::ready());
        }
        let (store, key) = (self.store, self.key);
        self.releasing = true;
        let Some(conn) = self.conn.as_mut() else {
            return Err(StoreError::Unavailable {
                reason: "the user's lock was lost".to_owned(),
            });
        };
        let durable = store.commit_held(conn, commit, Some(key))?;
        // Released: the session goes back to the pool as it is.
        drop(self.conn.take());
        Ok(durable)
    }
}

impl Store for PostgresStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    fn location(&self) -> String {
        self.location.clone()
    }

    fn schema_version(&self) -> Result<u32, StoreError> {
        self.with_work("read", "schema", true, |conn| {
            let row = conn.query_opt("SELECT max(version) FROM resetgate_schema", &[])?;
            let v: Option<i32> = row.and_then(|r| r.get(0));
            Ok(v.and_then(|v| u32::try_from(v).ok()).unwrap_or(0))
        })
    }

    /// A probe's answer, reused for [`READY_CACHE`]; one probe at a time
    /// (callers meanwhile get the last answer, or none if the probe under
    /// way takes longer than it may).
    fn ready(&self) -> Result<(), StoreError> {
        let pools = self.pools()?;
        let unavailable = |reason: String| StoreError::Unavailable { reason };
        {
            let mut readiness = lock(&self.readiness);
            if let Some((at, answer)) = &readiness.last
                && at.elapsed() < READY_CACHE
            {
                return answer.clone().map_err(unavailable);
            }
            if let Some(began) = readiness.probing {
                if began.elapsed() > PROBE_WAIT * 2 {
                    return Err(unavailable(format!(
                        "postgres at {} has not answered a probe for {} s",
                        self.location,
                        began.elapsed().as_secs()
                    )));
                }
                return match &readiness.last {
                    Some((_, answer)) => answer.clone().map_err(unavailable),
                    None => Err(unavailable("the first probe is under way".to_owned())),
                };
            }
            readiness.probing = Some(Instant::now());
        }
        let answer = blocking(|| self.probe(&pools));
        let mut readiness = lock(&self.readiness);
        readiness.probing = None;
        readiness.last = Some((Instant::now(), answer.clone()));
        answer.map_err(unavailable)
    }

    fn lock_user(&self, user: &str) -> Result<UserLock<'_>, StoreError> {
        Ok(self.take_lock(user, None)?.lock)
    }

    /// One statement: the lock, then the reads (`resetgate_lock`).
    fn lock_user_and_read(&self, user: &str, flow: Option<&str>) -> Result<Locked<'_>, StoreError> {
        self.take_lock(user, Some(flow))
    }

    fn flow(&self, id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.read_bytes("flows", "SELECT body FROM flows WHERE id = $1", &[&id])
    }

    fn flows_due(
        &self,
        now_ms: u64,
        after: Option<(u64, String)>,
        limit: usize,
    ) -> Result<Vec<(u64, String)>, StoreError> {
        let now = ms_to_db(now_ms);
        let limit = limit_to_db(limit);
        let (after_ms, after_id) = match &after {
            Some((ms, id)) => (ms_to_db(*ms), id.as_str()),
            None => (i64::MIN, ""),
        };
        self.with_work("read", "flows", true, |conn| {
            let rows = conn.query(
                "SELECT due_ms, id FROM flows WHERE due_ms <= $1 AND (due_ms, id) > ($2, $3) \
                 ORDER BY due_ms, id LIMIT $4",
                &[&now, &after_ms, &after_id, &limit],
            )?;
            Ok(rows
                .iter()
                .map(|r| (ms_from_db(r.get(0)), r.get(1)))
                .collect())
        })
    }

    fn versions_in_progress(&self) -> Result<BTreeSet<String>, StoreError> {
        self.with_work("read", "flows", true, |conn| {
            let rows = conn.query("SELECT DISTINCT version FROM flows WHERE in_progress", &[])?;
            Ok(rows.iter().map(|r| r.get(0)).collect())
        })
    }

    fn lockout(&self, user: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.read_bytes(
            "lockout",
            "SELECT history FROM lockout WHERE user_key = $1",
            &[&user],
        )
    }

    fn enrollment(&self, user: &str, gate: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.read_bytes(
            "enrollments",
            "SELECT data FROM enrollments WHERE user_key = $1 AND gate = $2",
            &[&user, &gate],
        )
    }

    fn kv_get(&self, namespace: &str, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.read_bytes(
            "kv",
            "SELECT value FROM kv WHERE namespace = $1 AND key = $2",
            &[&namespace, &key],
        )
    }

    fn kv_scan(
        &self,
        namespace: &str,
        prefix: &str,
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let end = prefix_end(prefix);
        let limit = limit_to_db(limit);
        self.with_work("read", "kv", true, |conn| {
            let rows = conn.query(
                "SELECT key, value FROM kv WHERE namespace = $1 AND key >= $2 \
                 AND ($3::text IS NULL OR key < $3) ORDER BY key LIMIT $4",
                &[&namespace, &prefix, &end, &limit],
            )?;
            Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
        })
    }

    fn kv_keys(
        &self,
        namespace: &str,
        prefix: &str,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        let end = prefix_end(prefix);
        let limit = limit_to_db(limit);
        self.with_work("read", "kv", true, |conn| {
            let rows = conn.query(
                "SELECT key FROM kv WHERE namespace = $1 AND key >= $2 \
                 AND ($3::text IS NULL OR key < $3) ORDER BY key LIMIT $4",
                &[&namespace, &prefix, &end, &limit],
            )?;
            Ok(rows.iter().map(|r| r.get(0)).collect())
        })
    }

    fn commit(&self, commit: Commit) -> Result<Durable, StoreError> {
        if commit.is_empty() {
            self.pools()?;
            return Ok(Durable::ready());
        }
        let started = Instant::now();
        let mut groups = prepare_groups(&commit.audit)?;
        let ops = Ops::of(commit.changes);
        self.with_work("commit", "store", false, |conn| {
            self.commit_on(conn, &ops, &mut groups, None)
        })?;
        self.latency.observe(started.elapsed());
        Ok(Durable::ready())
    }

    fn claim_due(
        &self,
        queue: Queue,
        now_ms: u64,
        lease_ms: u64,
        limit: usize,
    ) -> Result<Vec<Claim>, StoreError> {
        let now = ms_to_db(now_ms);
        let until = ms_to_db(now_ms.saturating_add(lease_ms));
        let limit = limit_to_db(limit);
        let name = queue.name();
        let mut claims = self.with_work("claim", "work", false, |conn| {
            let rows = conn.query(
                "UPDATE work w SET attempt = w.attempt + 1, lease_until_ms = $3 \
                 FROM (SELECT queue, id FROM work \
                       WHERE queue = $1 AND due_ms <= $2 AND lease_until_ms <= $2 \
                       ORDER BY due_ms, id LIMIT $4 FOR UPDATE SKIP LOCKED) due \
                 WHERE w.queue = due.queue AND w.id = due.id \
                 RETURNING w.id, w.due_ms, w.payload, w.attempt, w.lease_until_ms",
                &[&name, &now, &until, &limit],
            )?;
            Ok(rows
                .iter()
                .map(|r| Claim {
                    item: WorkItem {
                        queue,
                        id: r.get(0),
                        due_ms: ms_from_db(r.get(1)),
                        payload: r.get(2),
                    },
                    attempt: u32::try_from(r.get::<_, i32>(3)).unwrap_or(0),
                    lease_until_ms: ms_from_db(r.get(4)),
                })
                .collect::<Vec<_>>())
        })?;
        claims.sort_by(|a, b| (a.item.due_ms, &a.item.id).cmp(&(b.item.due_ms, &b.item.id)));
        Ok(claims)
    }

    fn export(
        &self,
        visit: &mut (dyn FnMut(Item) -> Result<(), StoreError> + Send),
    ) -> Result<(), StoreError> {
        // One read-only repeatable-read transaction: every table as of one
        // snapshot, each read through a portal, a page at a time.
        self.with_work("export", "store", false, |conn| {
            let mut tx = conn
                .client
                .build_transaction()
                .isolation_level(postgres::IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()?;
            each_row(
                &mut tx,
                "SELECT id, user_key, version, in_progress, due_ms, body FROM flows ORDER BY id",
                &mut |r| {
                    visit(Item::Flow(FlowRecord {
                        id: r.get(0),
                        user: r.get(1),
                        version: r.get(2),
                        in_progress: r.get(3),
                        due_ms: ms_from_db(r.get(4)),
                        body: r.get(5),
                    }))
                },
            )?;
            each_row(
                &mut tx,
                "SELECT user_key, history FROM lockout ORDER BY user_key",
                &mut |r| {
                    visit(Item::Lockout {
                        user: r.get(0),
                        history: r.get(1),
                    })
                },
            )?;
            each_row(
                &mut tx,
                "SELECT user_key, gate, data FROM enrollments ORDER BY user_key, gate",
                &mut |r| {
                    visit(Item::Enrollment {
                        user: r.get(0),
                        gate: r.get(1),
                        data: r.get(2),
                    })
                },
            )?;
            each_row(
                &mut tx,
                "SELECT namespace, key, value FROM kv ORDER BY namespace, key",
                &mut |r| {
                    visit(Item::Kv {
                        namespace: r.get(0),
                        key: r.get(1),
                        value: r.get(2),
                    })
                },
            )?;
            each_row(
                &mut tx,
                "SELECT queue, id, due_ms, payload, attempt, lease_until_ms FROM work \
                 ORDER BY queue, id",
                &mut |r| {
                    let Some(queue) = Queue::ALL
                        .into_iter()
                        .find(|q| q.name() == r.get::<_, &str>(0))
                    else {
                        return Ok(());
                    };
                    let lease: i64 = r.get(5);
                    visit(Item::Work {
                        item: WorkItem {
                            queue,
                            id: r.get(1),
                            due_ms: ms_from_db(r.get(2)),
                            payload: r.get(3),
                        },
                        attempts: u32::try_from(r.get::<_, i32>(4)).unwrap_or(0),
                        lease_until_ms: (lease > 0).then(|| ms_from_db(lease)),
                    })
                },
            )?;
            // The audit log, chain by chain, in chain order.
            each_row(
                &mut tx,
                "SELECT position, chain, bytes FROM audit_groups ORDER BY chain, first_seq",
                &mut |r| {
                    let chain: &str = r.get(1);
                    for entry in group_entries(chain, r.get(0), r.get::<_, &[u8]>(2))? {
                        visit(Item::Audit(entry))?;
                    }
                    Ok(())
                },
            )?;
            tx.commit()?;
            Ok(())
        })
    }

    fn import(&self, items: Vec<Item>) -> Result<(), StoreError> {
        let mut chains: BTreeMapChains = BTreeMapChains::new();
        let super::Sorted {
            changes,
            work,
            audit,
        } = super::Sorted::of(items);
        for entry in audit {
            chains.entry(entry.chain.clone()).or_default().push(entry);
        }
        let import_error = |reason: String| StoreError::Io {
            op: "import",
            what: "audit",
            reason,
        };
        // Every chain's entries as groups; that they continue the stored
        // chain is checked in the transaction.
        let mut imports = Vec::new();
        for (chain, entries) in chains.iter_mut() {
            entries.sort_by_key(|e| e.seq);
            let (Some(first), Some(last)) = (entries.first(), entries.last()) else {
                continue;
            };
            let digest = |hex_text: &str, seq: u64| {
                let mut out = [0u8; 32];
                hex::decode_to_slice(hex_text, &mut out).map_err(|_| {
                    import_error(format!(
                        "audit entry {seq} of chain `{chain}` has a hash that is not 64 hex digits"
                    ))
                })?;
                Ok::<_, StoreError>(out)
            };
            imports.push(ChainImport {
                first_seq: i64::try_from(first.seq).unwrap_or(i64::MAX),
                first_prev: digest(&first.prev_hash, first.seq)?.to_vec(),
                next_seq: i64::try_from(last.seq.saturating_add(1)).unwrap_or(i64::MAX),
                head: digest(&last.hash, last.seq)?.to_vec(),
                chain: chain.clone(),
            });
        }
        // The entries in the log's global order (their positions), so that
        // the copy's groups interleave the chains as the original's did.
        let mut in_order: Vec<&AuditEntry> = chains.values().flatten().collect();
        in_order.sort_by_key(|e| (e.position, e.chain.as_str(), e.seq));
        // Groups: runs of one chain's consecutive entries in the global
        // order, at most 256 each, inserted in that order.
        let mut groups: Vec<ImportedGroup> = Vec::new();
        let mut run: Vec<AuditEntry> = Vec::new();
        let mut flush = |run: &mut Vec<AuditEntry>| -> Result<(), StoreError> {
            if let Some(first) = run.first() {
                let bytes = audit::encode_entries(run).map_err(import_error)?;
                let users: BTreeSet<String> =
                    run.iter().filter_map(|e| e.record.user.clone()).collect();
                groups.push(ImportedGroup {
                    chain: first.chain.clone(),
                    first_seq: i64::try_from(first.seq).unwrap_or(i64::MAX),
                    count: i32::try_from(run.len()).unwrap_or(i32::MAX),
                    bytes,
                    users: users.into_iter().collect(),
                });
            }
            run.clear();
            Ok(())
        };
        for entry in in_order {
            let continues = run.last().is_some_and(|last| {
                last.chain == entry.chain && last.seq.checked_add(1) == Some(entry.seq)
            });
            if !continues || run.len() >= 256 {
                flush(&mut run)?;
            }
            run.push(entry.clone());
        }
        flush(&mut run)?;
        let ops = Ops::of(changes);
        self.with_work("import", "store", false, |conn| {
            let mut tx = conn.client.transaction()?;
            if !ops.kinds.is_empty() {
                tx.execute(COMMIT_SQL, &ops.without_audit())?;
            }
            for (item, attempts, lease) in &work {
                let attempts = i32::try_from(*attempts).unwrap_or(i32::MAX);
                let lease = lease.map_or(0, ms_to_db);
                tx.execute(
                    "INSERT INTO work (queue, id, due_ms, payload, attempt, lease_until_ms) \
                     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (queue, id) DO UPDATE SET \
                     due_ms = EXCLUDED.due_ms, payload = EXCLUDED.payload, \
                     attempt = EXCLUDED.attempt, lease_until_ms = EXCLUDED.lease_until_ms",
                    &[
                        &item.queue.name(),
                        &item.id,
                        &ms_to_db(item.due_ms),
                        &item.payload,
                        &attempts,
                        &lease,
                    ],
                )?;
            }
            for import in &imports {
                let chain = &import.chain;
                let stored = tx.query_opt(
                    "SELECT next_seq, head FROM audit_chains WHERE chain = $1 FOR UPDATE",
                    &[chain],
                )?;
                let (stored_next, stored_head): (i64, Vec<u8>) =
                    stored.map_or((0, vec![0; 32]), |r| (r.get(0), r.get(1)));
                if import.first_seq != stored_next || import.first_prev != stored_head {
                    return Err(Failure::Store(import_error(format!(
                        "the entries of audit chain `{chain}` start at entry {}, which does not \
                         follow the destination's {stored_next} entries: copy into an empty store",
                        import.first_seq
                    ))));
                }
            }
            for ImportedGroup {
                chain,
                first_seq,
                count,
                bytes,
                users,
            } in &groups
            {
                tx.execute(
                    "INSERT INTO audit_groups (position, chain, first_seq, entries, bytes, \
                     users) VALUES (nextval('audit_positions'), $1, $2, $3, $4, $5)",
                    &[chain, first_seq, count, bytes, users],
                )?;
            }
            for import in &imports {
                let chain = &import.chain;
                tx.execute(
                    "INSERT INTO audit_chains (chain, next_seq, head) VALUES ($1, $2, $3) \
                     ON CONFLICT (chain) DO UPDATE SET next_seq = EXCLUDED.next_seq, \
                     head = EXCLUDED.head",
                    &[chain, &import.next_seq, &import.head],
                )?;
            }
            tx.commit()?;
            Ok(())
        })?;
        // The lanes' cached heads may be stale now.
        for lane in lock(&self.lanes.free).iter_mut() {
            lane.head = None;
        }
        Ok(())
    }

    fn audit(&self) -> &dyn AuditLog {
        self
    }

    fn commit_latency(&self) -> Option<&crate::metrics::Histogram> {
        Some(&self.latency)
    }

    fn close(&self) {
        let pools = self
            .pools
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        // Dropping the pools closes their idle connections (off any async
        // runtime: closing a client blocks); connections in use close when
        // they are returned.
        blocking(move || drop(pools));
    }
}

type BTreeMapChains = std::collections::BTreeMap<String, Vec<AuditEntry>>;

/// One chain's imported entries: where they start (which must be where the
/// stored chain ends) and where the chain ends after them.
struct ChainImport {
    chain: String,
    first_seq: i64,
    first_prev: Vec<u8>,
    next_seq: i64,
    head: Vec<u8>,
}

/// Hands every row `sql` selects to `each`, reading them through a portal
/// a page at a time (in `tx`'s snapshot).
fn each_row(
    tx: &mut postgres::Transaction<'_>,
    sql: &str,
    each: &mut dyn FnMut(&postgres::Row) -> Result<(), StoreError>,
) -> Result<(), Failure> {
    let portal = tx.bind(sql, &[])?;
    loop {
        let rows = tx.query_portal(&portal, PAGE_ROWS)?;
        for row in &rows {
            each(row).map_err(Failure::Store)?;
        }
        if rows.len() < usize::try_from(PAGE_ROWS).unwrap_or(usize::MAX) {
            return Ok(());
        }
    }
}

/// A run of one chain's imported entries, stored as one group.
struct ImportedGroup {
    chain: String,
    first_seq: i64,
    count: i32,
    bytes: Vec<u8>,
    users: Vec<String>,
}

/// An audit group of a commit, laid out before it is linked to a chain.
struct Group {
    bytes: Vec<u8>,
    layout: audit::Layout,
    /// How many entries it holds.
    count: i32,
    /// The users its entries concern ([`users_of`]).
    users: String,
}

/// `records` laid out as groups of at most [`GROUP_STRIDE`] entries.
fn prepare_groups(records: &[AuditRecord]) -> Result<Vec<Group>, StoreError> {
    let mut out = Vec::new();
    let stride = usize::try_from(GROUP_STRIDE).unwrap_or(1024);
    for chunk in records.chunks(stride) {
        let prepared = audit::prepare(chunk).map_err(|e| StoreError::Io {
            op: "commit",
            what: "audit",
            reason: format!("an audit record cannot be serialised: {e}"),
        })?;
        if let Some((bytes, layout)) = prepared {
            out.push(Group {
                bytes,
                layout,
                count: i32::try_from(chunk.len()).unwrap_or(i32::MAX),
                users: users_of(chunk.iter()),
            });
        }
    }
    Ok(out)
}

/// The entries of a stored group of `chain` at group position `position`.
fn group_entries(chain: &str, position: i64, bytes: &[u8]) -> Result<Vec<AuditEntry>, StoreError> {
    let base = u64::try_from(position)
        .unwrap_or(0)
        .saturating_mul(GROUP_STRIDE);
    let unreadable = |why: audit::Unreadable| StoreError::Io {
        op: "read",
        what: "audit",
        reason: format!("audit chain `{chain}`: {}", why.describe(None)),
    };
    let group = audit::decode_group(bytes).map_err(unreadable)?;
    let mut out = Vec::with_capacity(group.len());
    for (i, stored) in (0u64..).zip(group.iter()) {
        let entry = stored
            .entry(chain, base.saturating_add(i))
            .ok_or(unreadable(audit::Unreadable::Undecodable))?;
        out.push(entry);
    }
    Ok(out)
}

impl AuditLog for PostgresStore {
    fn append(&self, records: Vec<AuditRecord>) -> Result<Durable, StoreError> {
        self.commit(Commit {
            changes: Vec::new(),
            audit: records,
        })
    }

    fn entries(&self, from: u64, limit: usize) -> Result<Vec<AuditEntry>, StoreError> {
        let mut out = Vec::new();
        if limit == 0 {
            return Ok(out);
        }
        let mut group = i64::try_from(from / GROUP_STRIDE).unwrap_or(i64::MAX);
        loop {
            let rows = self.with_work("read", "audit", true, |conn| {
                Ok(conn.query(
                    "SELECT position, chain, bytes FROM audit_groups WHERE position >= $1 \
                     ORDER BY position LIMIT $2",
                    &[&group, &limit_to_db(limit.min(1000))],
                )?)
            })?;
            let Some(last) = rows.last() else {
                return Ok(out);
            };
            group = last.get::<_, i64>(0).saturating_add(1);
            for r in &rows {
                let chain: String = r.get(1);
                for entry in group_entries(&chain, r.get(0), &r.get::<_, Vec<u8>>(2))? {
                    if entry.position >= from {
                        out.push(entry);
                        if out.len() >= limit {
                            return Ok(out);
                        }
                    }
                }
            }
        }
    }

    fn query(&self, query: &AuditQuery) -> Result<Vec<AuditEntry>, StoreError> {
        let Some(user) = &query.user else {
            return super::scan_query(self, query);
        };
        // The user's groups, from the index on `users`, page by page.
        let mut out = Vec::new();
        let mut group = query
            .after
            .map_or(0, |a| i64::try_from(a / GROUP_STRIDE).unwrap_or(i64::MAX));
        while out.len() < query.limit {
            let rows = self.with_work("read", "audit", true, |conn| {
                Ok(conn.query(
                    "SELECT position, chain, bytes FROM audit_groups \
                     WHERE users @> ARRAY[$1::text] AND position >= $2 \
                     ORDER BY position LIMIT 100",
                    &[user, &group],
                )?)
            })?;
            let Some(last) = rows.last() else {
                break;
            };
            group = last.get::<_, i64>(0).saturating_add(1);
            for r in &rows {
                let chain: String = r.get(1);
                for entry in group_entries(&chain, r.get(0), &r.get::<_, Vec<u8>>(2))? {
                    if query.after.is_none_or(|a| entry.position > a) && query.selects(&entry) {
                        out.push(entry);
                    }
                }
            }
        }
        out.truncate(query.limit);
        Ok(out)
    }

    fn verify(&self) -> Result<AuditSummary, AuditError> {
        let pools = self.pools()?;
        blocking(|| {
            let mut conn = self.checkout(&pools.work)?;
            let walked = crate::workers::waiting(|| verify_on(&mut conn.client));
            match walked {
                Ok(result) => Ok(result),
                Err(e) => {
                    if connection_lost(&e) {
                        conn.broken = true;
                        self.epoch.fetch_add(1, Ordering::AcqRel);
                    }
                    Err(self.error("verify", "audit", &e))
                }
            }
        })?
    }
}

/// Verifies every chain in one snapshot: the heads recorded in
/// `audit_chains` and the groups stored for each chain (also those of a
/// chain without a head, which then fails).
fn verify_on(client: &mut Client) -> Result<Result<AuditSummary, AuditError>, postgres::Error> {
    let mut tx = client
        .build_transaction()
        .isolation_level(postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()?;
    let mut heads: std::collections::BTreeMap<String, Option<Head>> = Default::default();
    for row in tx.query("SELECT chain, next_seq, head FROM audit_chains", &[])? {
        let next: i64 = row.get(1);
        let hash: Vec<u8> = row.get(2);
        heads.insert(
            row.get(0),
            Head::from_parts(u64::try_from(next).unwrap_or(0), &hash),
        );
    }
    for row in tx.query("SELECT DISTINCT chain FROM audit_groups", &[])? {
        heads.entry(row.get(0)).or_insert(Some(Head::empty()));
    }
    let mut summaries = Vec::with_capacity(heads.len());
    for (chain, head) in heads {
        let mut verifier = ChainVerifier::new(&chain);
        let mut from = 0i64;
        let mut failed = None;
        'walk: loop {
            let rows = tx.query(
                "SELECT first_seq, bytes FROM audit_groups WHERE chain = $1 AND first_seq >= $2 \
                 ORDER BY first_seq LIMIT $3",
                &[&chain, &from, &PAGE],
            )?;
            let Some(last) = rows.last() else { break };
            from = last.get::<_, i64>(0).saturating_add(1);
            for r in &rows {
                let first = u64::try_from(r.get::<_, i64>(0)).unwrap_or(u64::MAX);
                let bytes: Vec<u8> = r.get(1);
                if let Err(e) = verifier.feed(&audit::seq_key(first), &bytes) {
                    failed = Some(e);
                    break 'walk;
                }
            }
        }
        if let Some(e) = failed {
            return Ok(Err(e));
        }
        let Some(head) = head else {
            return Ok(Err(AuditError::Broken {
                chain,
                seq: 0,
                why: ChainBreak::HeadMismatch,
            }));
        };
        match verifier.finish(Some(&head)) {
            Ok(summary) => summaries.push(summary),
            Err(e) => return Ok(Err(e)),
        }
    }
    tx.commit()?;
    Ok(Ok(AuditSummary::of(summaries)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_is_the_first_string_after_the_prefix_range() {
        assert_eq!(prefix_end(""), None);
        assert_eq!(prefix_end("ab").as_deref(), Some("ac"));
        assert_eq!(prefix_end("a\u{D7FF}").as_deref(), Some("a\u{E000}"));
        assert_eq!(prefix_end("a\u{10FFFF}").as_deref(), Some("b"));
        assert_eq!(prefix_end("\u{10FFFF}"), None);
    }

    #[test]
    fn milliseconds_saturate_and_never_reads_back_as_never() {
        assert_eq!(ms_from_db(ms_to_db(u64::MAX)), u64::MAX);
        assert_eq!(ms_from_db(ms_to_db(1_700_000_000_000)), 1_700_000_000_000);
    }

    #[test]
    fn the_password_is_scrubbed_from_messages() {
        let secret = Secret::new("hunter2-canary".to_owned());
        assert_eq!(
            scrub("failed for hunter2-canary here", Some(&secret)),
            "failed for [redacted] here"
        );
    }

    #[test]
    fn the_last_migration_is_the_schema_version() {
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(m.0 as usize, i + 1);
        }
        assert_eq!(MIGRATIONS.last().map(|m| m.0), Some(SCHEMA_VERSION));
    }
}
