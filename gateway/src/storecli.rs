//! The store's admin commands: `resetgate store migrate|check|copy` and
//! `resetgate audit verify`, against whichever backend the gateway config
//! (or a `--from`/`--to` argument) names. They speak only the store port
//! ([`crate::store::open`], [`Store::export`]/[`Store::import`],
//! [`AuditLog::verify`](crate::store::AuditLog::verify)), so every backend
//! works the same.
//!
//! Output is for people and scripts alike: results on stdout, one
//! `error: ...` line (and perhaps one `help: ...` line) on stderr, and an
//! exit status that says what kind of failure it was ([`CliError::status`]):
//! 0 done (and intact), 1 the data does not verify, 2 a usage or config
//! mistake (nothing was changed), 3 the store could not be opened or used
//! (in use by a running gateway, unreachable, newer than this binary).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use crate::config::{
    ConfigError, GatewayConfig, SecretSource, check_postgres_url, node_for, tls_mode_name,
};
use crate::store::backup::BackupError;
use crate::store::{
    AuditError, AuditSummary, ChainSummary, Item, PgTls, PgTlsMode, PostgresSpec, Store,
    StoreError, StoreSpec,
};

/// How many records one [`Store::import`] call takes (audit entries go in
/// one call: a store imports a chain whole).
const IMPORT_BATCH: usize = 1000;

/// The repositories in the order they are printed.
const REPOSITORIES: [&str; 7] = [
    "flows",
    "lockout",
    "enrollments",
    "kv",
    "outbox",
    "timers",
    "audit",
];

/// `resetgate store ...`.
#[derive(clap::Subcommand, Debug)]
pub enum StoreCommand {
    /// Applies the store's schema migrations (creating the store if it is
    /// new); prints the schema version before and after.
    Migrate(Target),
    /// Opens the store and reports its backend, location, schema version and
    /// records per repository, and verifies the audit log (status 1 if it
    /// does not verify).
    Check(Target),
    /// Copies every record of one store into another, empty one, and
    /// verifies the copy's audit log.
    Copy(CopyArgs),
}

/// Which store a command works on: the gateway config's.
#[derive(clap::Args, Debug)]
pub struct Target {
    /// The gateway config file: its `store:` section (default: the built-in
    /// defaults, sled in the data folder).
    #[arg(long, env = "RESETGATE_CONFIG")]
    pub config: Option<PathBuf>,
    /// The gateway's data folder (overrides the config's `data_dir`; with
    /// the sled store, the store is in its `db/` unless `store.dir` says
    /// otherwise; default .resetgate).
    #[arg(long, env = "RESETGATE_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
}

/// `resetgate store copy`.
#[derive(clap::Args, Debug)]
pub struct CopyArgs {
    /// The store to copy: `sled:DIR` (a data folder, the store in its
    /// `db/`), `postgres:URL` (`postgres://USER@HOST:PORT/DB`, TLS with
    /// `?sslmode=disable|require|verify-full&sslrootcert=FILE`, default
    /// verify-full) or `config:FILE` (the `store:` of a gateway config).
    #[arg(long, value_name = "STORE")]
    pub from: String,
    /// The store to copy into, in the same forms; it must be empty (a new
    /// folder, or a database without resetgate's tables).
    #[arg(long, value_name = "STORE")]
    pub to: String,
    /// File holding the password of a `postgres:` source (mode 600; default:
    /// the environment variable RESETGATE_FROM_PASSWORD, if set).
    #[arg(long, value_name = "FILE")]
    pub from_password_file: Option<PathBuf>,
    /// File holding the password of a `postgres:` destination (mode 600;
    /// default: the environment variable RESETGATE_TO_PASSWORD, if set).
    #[arg(long, value_name = "FILE")]
    pub to_password_file: Option<PathBuf>,
}

/// `resetgate backup`.
#[derive(clap::Args, Debug)]
pub struct BackupArgs {
    /// The file to write (JSON lines; it must not exist yet). Written
    /// under a temporary name and renamed when complete, readable by its
    /// owner only.
    #[arg(long, value_name = "FILE")]
    pub to: PathBuf,
    /// Which store.
    #[command(flatten)]
    pub target: Target,
}

/// `resetgate restore`.
#[derive(clap::Args, Debug)]
pub struct RestoreArgs {
    /// The backup file to restore.
    #[arg(long, value_name = "FILE")]
    pub from: PathBuf,
    /// Which store to restore into: it must be empty (a new data folder or
    /// database) and no gateway may be using it.
    #[command(flatten)]
    pub target: Target,
}

/// Why a store command failed. Never holds a password.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// A command-line argument is wrong.
    #[error("{0}")]
    Usage(String),
    /// The gateway config has errors (printed before this, one diagnostic
    /// each).
    #[error("the gateway config {} has errors (listed above)", .0.display())]
    Config(PathBuf),
    /// The config's store settings cannot be used (e.g. an unreadable
    /// password secret).
    #[error(transparent)]
    Spec(#[from] ConfigError),
    /// There is no store where one was expected.
    #[error("there is no store at {0} (nothing has been stored there yet)")]
    NoStore(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The audit log does not verify.
    #[error(transparent)]
    Audit(AuditError),
    /// The copy's destination holds records already.
    #[error("the destination {0} is not empty")]
    NotEmpty(String),
    /// A backup file cannot be written or read.
    #[error("backup {}: {error}", path.display())]
    Backup {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        error: crate::store::backup::BackupError,
    },
    /// The copy does not hold what the source held.
    #[error("the copy at {location} does not match the source: {what}")]
    Mismatch {
        /// The destination.
        location: String,
        /// What differs.
        what: String,
    },
}

impl From<AuditError> for CliError {
    fn from(e: AuditError) -> CliError {
        match e {
            AuditError::Store(e) => CliError::Store(e),
            broken => CliError::Audit(broken),
        }
    }
}

impl CliError {
    /// The process's exit status: 1 the data does not verify, 2 a usage or
    /// config mistake, 3 the store could not be opened or used.
    pub fn status(&self) -> u8 {
        match self {
            CliError::Audit(_) | CliError::Mismatch { .. } => 1,
            CliError::Backup { error, .. } => match error {
                BackupError::Malformed { .. } => 1,
                BackupError::Io(_) => 2,
                BackupError::Store(_) => 3,
            },
            CliError::Usage(_)
            | CliError::Config(_)
            | CliError::Spec(_)
            | CliError::NotEmpty(_) => 2,
            CliError::NoStore(_) | CliError::Store(_) => 3,
        }
    }

    /// What to do about it, when there is something to say.
    pub fn help(&self) -> Option<String> {
        match self {
            CliError::Store(StoreError::InUse { .. }) => Some(
                "a running gateway holds it (a sled store is opened by one process at a time): \
                 `resetgate admin audit verify|query|export` work through the running gateway \
                 (its URL and an operator's key from RESETGATE_URL and RESETGATE_ADMIN_KEY); \
                 stop the gateway for `store` commands"
                    .to_owned(),
            ),
            CliError::Backup {
                error: BackupError::Malformed { .. },
                ..
            } => Some(
                "nothing was restored: use a complete backup (`resetgate backup` writes the \
                 file under a temporary name and renames it only when it is whole)"
                    .to_owned(),
            ),
            CliError::NotEmpty(_) => Some(
                "copy into a new folder (`sled:NEW-DIR`) or a new database (`createdb`); \
                 a store copy never merges two stores"
                    .to_owned(),
            ),
            CliError::NoStore(_) => Some(
                "check the path or URL; `resetgate store migrate` creates an empty store"
                    .to_owned(),
            ),
            CliError::Audit(_) => Some(
                "the log was changed or damaged outside resetgate: restore the store from a \
                 backup, and keep this copy for investigation"
                    .to_owned(),
            ),
            _ => None,
        }
    }
}

/// Runs `resetgate store COMMAND`, printing results to stdout and any
/// error to stderr (once); returns the exit status.
pub fn run_store(command: StoreCommand) -> ExitCode {
    let mut out = std::io::stdout().lock();
    let result = match command {
        StoreCommand::Migrate(target) => migrate(&target, &mut out),
        StoreCommand::Check(target) => check(&target, &mut out),
        StoreCommand::Copy(args) => copy(&args, &mut out),
    };
    finish(result)
}

/// Runs `resetgate backup`; see [`run_store`].
pub fn run_backup(args: BackupArgs) -> ExitCode {
    let mut out = std::io::stdout().lock();
    finish(backup(&args, &mut out))
}

/// Runs `resetgate restore`; see [`run_store`].
pub fn run_restore(args: RestoreArgs) -> ExitCode {
    let mut out = std::io::stdout().lock();
    finish(restore(&args, &mut out))
}

/// Runs `resetgate audit verify`; see [`run_store`].
pub fn run_audit_verify(target: Target) -> ExitCode {
    let mut out = std::io::stdout().lock();
    finish(audit_verify(&target, &mut out))
}

fn finish(result: Result<(), CliError>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            if let Some(help) = e.help() {
                eprintln!("help: {help}");
            }
            ExitCode::from(e.status())
        }
    }
}

/// Writes a line of output; a closed stdout (`| head`) is not an error
/// worth reporting.
macro_rules! say {
    ($out:expr, $($arg:tt)*) => {{
        let _ = writeln!($out, $($arg)*);
    }};
}

/// The store the config (and `--data-dir`) of `target` names.
fn target_spec(target: &Target) -> Result<StoreSpec, CliError> {
    let mut config = match &target.config {
        Some(path) => load_config(path)?,
        None => GatewayConfig::default(),
    };
    if let Some(dir) = &target.data_dir {
        config.data_dir = dir.clone();
    }
    Ok(config.store_spec()?)
}

/// Loads a gateway config, printing its diagnostics to stderr.
fn load_config(path: &Path) -> Result<GatewayConfig, CliError> {
    GatewayConfig::load(path).map_err(|diagnostics| {
        for d in &diagnostics {
            eprintln!("{d}");
        }
        CliError::Config(path.to_owned())
    })
}

/// Opens an existing store: one that is not there yet is an error, not
/// created.
fn open_existing(spec: &StoreSpec) -> Result<(Arc<dyn Store>, u32), CliError> {
    let before = crate::store::stored_schema(spec)?;
    if before.is_none() {
        return Err(CliError::NoStore(spec.location()));
    }
    let store = crate::store::open(spec)?;
    let version = store.schema_version()?;
    Ok((store, version))
}

fn describe(out: &mut dyn Write, store: &dyn Store) {
    say!(out, "backend: {}", store.backend());
    say!(out, "location: {}", store.location());
}

/// `resetgate store migrate`.
fn migrate(target: &Target, out: &mut dyn Write) -> Result<(), CliError> {
    let spec = target_spec(target)?;
    let before = crate::store::stored_schema(&spec)?;
    let store = crate::store::open(&spec)?;
    let after = store.schema_version();
    store.close();
    let after = after?;
    describe(out, &*store);
    match before {
        Some(v) => say!(out, "schema before: {v}"),
        None => say!(out, "schema before: none (new store)"),
    }
    say!(out, "schema after: {after}");
    Ok(())
}

/// `resetgate store check`.
fn check(target: &Target, out: &mut dyn Write) -> Result<(), CliError> {
    let spec = target_spec(target)?;
    let (store, version) = open_existing(&spec)?;
    let result = (|| {
        describe(out, &*store);
        say!(out, "schema: {version}");
        let counts = count(&*store)?;
        print_counts(out, &counts);
        let summary = store.audit().verify()?;
        print_summary(out, &summary);
        Ok(())
    })();
    store.close();
    result
}

/// `resetgate audit verify`.
fn audit_verify(target: &Target, out: &mut dyn Write) -> Result<(), CliError> {
    let spec = target_spec(target)?;
    let (store, _) = open_existing(&spec)?;
    let summary = store.audit().verify();
    store.close();
    print_summary(out, &summary?);
    Ok(())
}

/// Records per repository, every repository listed.
fn count(store: &dyn Store) -> Result<BTreeMap<&'static str, u64>, CliError> {
    let mut counts: BTreeMap<&'static str, u64> = REPOSITORIES.iter().map(|r| (*r, 0)).collect();
    store.export(&mut |item| {
        *counts.entry(item.repository()).or_default() += 1;
        Ok(())
    })?;
    Ok(counts)
}

fn print_counts(out: &mut dyn Write, counts: &BTreeMap<&'static str, u64>) {
    for repository in REPOSITORIES {
        say!(
            out,
            "{repository}: {}",
            counts.get(repository).copied().unwrap_or(0)
        );
    }
}

fn print_summary(out: &mut dyn Write, summary: &AuditSummary) {
    for chain in &summary.chains {
        say!(
            out,
            "audit chain {}: {} entries, head {}",
            chain.chain,
            chain.entries,
            chain.head
        );
    }
    say!(
        out,
        "audit log intact: {} entries in {} chain(s)",
        summary.entries,
        summary.chains.len()
    );
}

/// Which end of a copy.
#[derive(Clone, Copy)]
enum Side {
    From,
    To,
}

impl Side {
    fn flag(self) -> &'static str {
        match self {
            Side::From => "--from",
            Side::To => "--to",
        }
    }

    fn password_variable(self) -> &'static str {
        match self {
            Side::From => "RESETGATE_FROM_PASSWORD",
            Side::To => "RESETGATE_TO_PASSWORD",
        }
    }
}

/// The store a `--from`/`--to` argument names.
fn endpoint(arg: &str, side: Side, password_file: Option<&Path>) -> Result<StoreSpec, CliError> {
    let flag = side.flag();
    let file_flag = format!("{flag}-password-file");
    if let Some(dir) = arg.strip_prefix("sled:") {
        if password_file.is_some() {
            return Err(CliError::Usage(format!(
                "`{file_flag}` is for a `postgres:` store, and {flag} is `sled:`"
            )));
        }
        if dir.is_empty() {
            return Err(CliError::Usage(format!(
                "{flag} `sled:` names no folder: write `sled:DIR`"
            )));
        }
        return Ok(StoreSpec::Sled {
            dir: PathBuf::from(dir),
        });
    }
    if let Some(file) = arg.strip_prefix("config:") {
        if password_file.is_some() {
            return Err(CliError::Usage(format!(
                "`{file_flag}` is for a `postgres:` store; a config names its password's secret"
            )));
        }
        let config = load_config(Path::new(file))?;
        return Ok(config.store_spec()?);
    }
    let is_url = |s: &str| s.starts_with("postgres://") || s.starts_with("postgresql://");
    let url = arg
        .strip_prefix("postgres:")
        .filter(|u| is_url(u))
        .unwrap_or(arg);
    if is_url(url) {
        return postgres_endpoint(url, side, password_file);
    }
    // Never echo the argument: it may be a URL with a password in it.
    Err(CliError::Usage(format!(
        "{flag} must be `sled:DIR`, `postgres:postgres://USER@HOST:PORT/DB` or `config:FILE`"
    )))
}

/// A `postgres:` endpoint: the URL checked as the config checks it, with
/// libpq's `sslmode` and `sslrootcert` taken out as the TLS settings.
fn postgres_endpoint(
    url: &str,
    side: Side,
    password_file: Option<&Path>,
) -> Result<StoreSpec, CliError> {
    let flag = side.flag();
    let bad = |e: ConfigError| {
        let help = match e {
            ConfigError::PasswordInUrl => format!(
                "remove it, and give it with `{flag}-password-file FILE` (mode 600) or the \
                 environment variable {}",
                side.password_variable()
            ),
            _ => e.help(),
        };
        CliError::Usage(format!("the {flag} URL {e}: {help}"))
    };
    let checked = check_postgres_url(url, true).map_err(bad)?;
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let mut tls = PgTls::default();
    let mut kept = Vec::new();
    for param in query.split('&').filter(|p| !p.is_empty()) {
        match param.split_once('=') {
            Some(("sslmode", value)) => {
                tls.mode = match value {
                    "disable" => PgTlsMode::Disable,
                    "require" => PgTlsMode::Require,
                    "verify-full" => PgTlsMode::VerifyFull,
                    other => {
                        return Err(CliError::Usage(format!(
                            "the {flag} URL's `sslmode={other}` is not one of `disable`, \
                             `require`, `verify-full`"
                        )));
                    }
                }
            }
            Some(("sslrootcert", file)) => tls.ca_file = Some(PathBuf::from(file)),
            _ => kept.push(param),
        }
    }
    if tls.ca_file.is_some() && tls.mode != PgTlsMode::VerifyFull {
        return Err(CliError::Usage(format!(
            "the {flag} URL sets `sslrootcert` but `sslmode={}`, which does not check the \
             server's certificate: use `sslmode=verify-full`",
            tls_mode_name(tls.mode)
        )));
    }
    if tls.mode == PgTlsMode::Disable && !checked.local {
        return Err(CliError::Usage(format!(
            "the {flag} URL says `sslmode=disable` for a database on another host: the password \
             and every record would cross the network unencrypted; use TLS, or a gateway config \
             with `insecure: true` (`{flag} config:FILE`)"
        )));
    }
    let url = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    let password = match password_file {
        Some(file) => Some(read_password(side, &SecretSource::File(file.to_owned()))?),
        None => match std::env::var_os(side.password_variable()) {
            Some(_) => Some(read_password(
                side,
                &SecretSource::Env(side.password_variable().to_owned()),
            )?),
            None => None,
        },
    };
    Ok(StoreSpec::Postgres(PostgresSpec {
        url,
        password,
        tls,
        pool: 2,
        node: node_for("copy")?,
    }))
}

fn read_password(side: Side, source: &SecretSource) -> Result<crate::secret::Secret, CliError> {
    let name = match side {
        Side::From => "source password",
        Side::To => "destination password",
    };
    crate::plugin::secrets::read(name, source).map_err(|e| CliError::Spec(ConfigError::Password(e)))
}

/// Whether `store` holds no record at all.
fn is_empty(store: &dyn Store) -> Result<bool, CliError> {
    let mut found = false;
    let walked = store.export(&mut |_| {
        found = true;
        // Stops the walk at the first record.
        Err(StoreError::Closed)
    });
    match walked {
        _ if found => Ok(false),
        Ok(()) => Ok(true),
        Err(e) => Err(e.into()),
    }
}

/// The chains of exported audit entries: each one's length and last hash.
fn summary_of(audit: &[Item]) -> AuditSummary {
    let mut chains: BTreeMap<&str, (u64, u64, &str)> = BTreeMap::new();
    for item in audit {
        if let Item::Audit(entry) = item {
            let chain = chains.entry(&entry.chain).or_insert((0, 0, ""));
            chain.0 += 1;
            if chain.2.is_empty() || entry.seq >= chain.1 {
                chain.1 = entry.seq;
                chain.2 = &entry.hash;
            }
        }
    }
    AuditSummary::of(
        chains
            .into_iter()
            .map(|(chain, (entries, _, head))| ChainSummary {
                chain: chain.to_owned(),
                entries,
                head: head.to_owned(),
            })
            .collect(),
    )
}

/// The chains of `summary` that hold entries (a store may list an empty
/// chain of its own).
fn nonempty(summary: &AuditSummary) -> Vec<&ChainSummary> {
    summary.chains.iter().filter(|c| c.entries > 0).collect()
}

/// `resetgate backup`: every record of the store, as of one moment, to a
/// new file.
fn backup(args: &BackupArgs, out: &mut dyn Write) -> Result<(), CliError> {
    let path = &args.to;
    if path.exists() {
        return Err(CliError::Usage(format!(
            "{} exists already: a backup never overwrites a file",
            path.display()
        )));
    }
    let spec = target_spec(&args.target)?;
    let (store, _) = open_existing(&spec)?;
    let mut records = 0;
    let saved = crate::store::backup::save(path, &mut |writer| {
        records = crate::store::backup::write(&*store, writer, now_ms())?;
        Ok(())
    });
    store.close();
    saved.map_err(|error| CliError::Backup {
        path: path.clone(),
        error,
    })?;
    say!(
        out,
        "backed up {records} records of {} {} to {}",
        store.backend(),
        store.location(),
        path.display()
    );
    eprintln!("note: {}", crate::store::backup::KEY_NOTE);
    Ok(())
}

/// `resetgate restore`: a backup into an empty store, checked as a copy
/// is.
fn restore(args: &RestoreArgs, out: &mut dyn Write) -> Result<(), CliError> {
    let path = &args.from;
    let failed = |error: BackupError| CliError::Backup {
        path: path.clone(),
        error,
    };
    let file = std::fs::File::open(path)
        .map_err(|e| failed(BackupError::Io(format!("cannot open it: {e}"))))?;
    let mut reader = std::io::BufReader::new(file);
    let spec = target_spec(&args.target)?;
    let fresh = crate::store::stored_schema(&spec)?.is_none();
    let destination = crate::store::open(&spec)?;
    let name = format!("backup {}", path.display());
    let mut header = None;
    let result = copy_into(
        &name,
        &mut |visit| {
            header = Some(crate::store::backup::read(&mut reader, visit).map_err(failed)?);
            Ok(())
        },
        &*destination,
        out,
    );
    destination.close();
    drop(destination);
    if result.is_err() && fresh {
        // A half-restored store is worse than none: a sled folder this
        // command created is removed (a database is the operator's to drop).
        if let StoreSpec::Sled { dir } = &spec {
            let _ = std::fs::remove_dir_all(dir.join("db"));
        }
    }
    result?;
    if let Some(h) = header {
        say!(
            out,
            "restored a backup of {} (schema {}) taken at {} ms since the epoch",
            h.backend,
            h.schema,
            h.created_ms
        );
    }
    Ok(())
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// `resetgate store copy`.
fn copy(args: &CopyArgs, out: &mut dyn Write) -> Result<(), CliError> {
    let from = endpoint(&args.from, Side::From, args.from_password_file.as_deref())?;
    let to = endpoint(&args.to, Side::To, args.to_password_file.as_deref())?;
    if from.location() == to.location() {
        return Err(CliError::Usage(format!(
            "--from and --to are the same store ({})",
            from.location()
        )));
    }
    // The source first: a sled source a gateway holds stops the copy here,
    // before the destination is created; so does a source whose audit log
    // does not verify (the copy would carry the damage, and a verified
    // copy is the point).
    let (source, _) = open_existing(&from)?;
    let result = (|| {
        source.audit().verify()?;
        let destination = crate::store::open(&to)?;
        let name = format!("{} {}", source.backend(), source.location());
        let copied = copy_into(
            &name,
            &mut |visit| Ok(source.export(visit)?),
            &*destination,
            out,
        );
        destination.close();
        copied
    })();
    source.close();
    result
}

/// Hands every record of a source to a visitor (a store's export, or a
/// backup file read).
type Source<'a> =
    dyn FnMut(&mut (dyn FnMut(Item) -> Result<(), StoreError> + Send)) -> Result<(), CliError> + 'a;

/// Copies what `export` hands out (`name` says what it is) into
/// `destination`, which must be empty, and checks the copy.
fn copy_into(
    name: &str,
    export: &mut Source<'_>,
    destination: &dyn Store,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    if !is_empty(destination)? {
        return Err(CliError::NotEmpty(destination.location()));
    }
    say!(
        out,
        "copying {name} to {} {}",
        destination.backend(),
        destination.location()
    );
    let mut counts: BTreeMap<&'static str, u64> = REPOSITORIES.iter().map(|r| (*r, 0)).collect();
    let mut batch = Vec::with_capacity(IMPORT_BATCH);
    let mut audit = Vec::new();
    let mut failed: Option<StoreError> = None;
    let exported = export(&mut |item| {
        *counts.entry(item.repository()).or_default() += 1;
        match item {
            Item::Audit(_) => audit.push(item),
            other => batch.push(other),
        }
        if batch.len() >= IMPORT_BATCH
            && let Err(e) = destination.import(std::mem::take(&mut batch))
        {
            // Stop the export; the import's error is the one to report.
            failed = Some(e);
            return Err(StoreError::Closed);
        }
        Ok(())
    });
    if let Some(e) = failed {
        return Err(e.into());
    }
    exported?;
    if !batch.is_empty() {
        destination.import(batch)?;
    }
    // What the copy's log must verify as: the exported entries' chains (a
    // PostgreSQL source may have grown since it was verified).
    let expected = summary_of(&audit);
    let expected = &expected;
    if !audit.is_empty() {
        destination.import(audit)?;
    }
    print_counts(out, &counts);
    let copied = count(destination)?;
    if copied != counts {
        let differ: Vec<String> = REPOSITORIES
            .iter()
            .filter(|r| copied.get(*r) != counts.get(*r))
            .map(|r| {
                format!(
                    "{r}: {} in the source, {} in the copy",
                    counts.get(r).copied().unwrap_or(0),
                    copied.get(r).copied().unwrap_or(0)
                )
            })
            .collect();
        return Err(CliError::Mismatch {
            location: destination.location(),
            what: differ.join("; "),
        });
    }
    let summary = destination.audit().verify()?;
    if nonempty(&summary) != nonempty(expected) {
        return Err(CliError::Mismatch {
            location: destination.location(),
            what: "its audit chains end elsewhere than the source's".to_owned(),
        });
    }
    print_summary(out, &summary);
    let total: u64 = counts.values().sum();
    say!(out, "copied {total} records");
    eprintln!(
        "note: enrollment data stays sealed under the source gateway's data key: give the \
         gateway on the copy the same key (`data.key` from the data folder, or `data_key_secret`)"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(arg: &str) -> Result<StoreSpec, String> {
        endpoint(arg, Side::To, None).map_err(|e| e.to_string())
    }

    #[test]
    fn the_expected_summary_comes_from_the_exported_entries() {
        use crate::store::{AuditEntry, AuditRecord};
        let entry = |chain: &str, seq: u64| {
            Item::Audit(AuditEntry {
                chain: chain.to_owned(),
                position: 0,
                seq,
                prev_hash: String::new(),
                hash: format!("{chain}-{seq}"),
                record: AuditRecord {
                    at_ms: 0,
                    kind: "k".into(),
                    flow: None,
                    user: None,
                    workflow: None,
                    detail: serde_json::json!({}),
                },
            })
        };
        // Chains interleaved, as a global export orders them.
        let items = [
            entry("b/0", 0),
            entry("a/0", 0),
            entry("b/0", 1),
            entry("a/0", 1),
            entry("b/0", 2),
        ];
        let summary = summary_of(&items);
        assert_eq!(summary.entries, 5);
        let heads: Vec<(&str, u64, &str)> = summary
            .chains
            .iter()
            .map(|c| (c.chain.as_str(), c.entries, c.head.as_str()))
            .collect();
        assert_eq!(heads, [("a/0", 2, "a/0-1"), ("b/0", 3, "b/0-2")]);
        // An empty chain a store lists of its own does not count.
        let mut with_empty = summary.clone();
        with_empty.chains.push(ChainSummary {
            chain: "local".into(),
            entries: 0,
            head: crate::store::GENESIS_HASH.into(),
        });
        assert_eq!(nonempty(&with_empty), nonempty(&summary));
    }

    #[test]
    fn endpoints() {
        let StoreSpec::Sled { dir } = spec("sled:/var/lib/rg").unwrap() else {
            panic!("not sled")
        };
        assert_eq!(dir, PathBuf::from("/var/lib/rg"));
        let StoreSpec::Postgres(p) = spec(
            "postgres:postgres://rg@db.example:5433/rg?sslrootcert=/etc/ca.pem&connect_timeout=5",
        )
        .unwrap() else {
            panic!("not postgres")
        };
        assert_eq!(p.url, "postgres://rg@db.example:5433/rg?connect_timeout=5");
        assert_eq!(
            p.tls,
            PgTls {
                mode: PgTlsMode::VerifyFull,
                ca_file: Some(PathBuf::from("/etc/ca.pem"))
            }
        );
        let StoreSpec::Postgres(p) =
            spec("postgres://rg@127.0.0.1:5432/rg?sslmode=disable").unwrap()
        else {
            panic!("not postgres")
        };
        assert_eq!(
            (p.url.as_str(), p.tls.mode),
            ("postgres://rg@127.0.0.1:5432/rg", PgTlsMode::Disable)
        );
    }

    #[test]
    fn endpoint_mistakes_are_usage_errors_that_never_echo_a_password() {
        for (arg, message) in [
            ("mysql://rg:canary-pw@db/rg", "--to must be `sled:DIR`"),
            (
                "postgres://rg:canary-pw@db/rg",
                "the --to URL holds a password",
            ),
            (
                "postgres:postgresql://rg:canary-pw@db/rg",
                "the --to URL holds a password",
            ),
            ("sled:", "names no folder"),
            (
                "postgres://rg@db.example/rg?sslmode=disable",
                "`sslmode=disable` for a database on another host",
            ),
            (
                "postgres://rg@db.example/rg?sslmode=require&sslrootcert=ca.pem",
                "sets `sslrootcert` but `sslmode=require`",
            ),
            (
                "postgres://rg@db/rg?sslmode=prefer",
                "`sslmode=prefer` is not one of",
            ),
        ] {
            let e = endpoint(arg, Side::To, None).unwrap_err();
            assert_eq!(e.status(), 2, "{arg}");
            let text = e.to_string();
            assert!(text.contains(message), "{arg}: {text}");
            assert!(!text.contains("canary"), "{text}");
        }
        let e = endpoint("sled:/x", Side::From, Some(Path::new("pw"))).unwrap_err();
        assert!(
            e.to_string()
                .contains("`--from-password-file` is for a `postgres:` store"),
            "{e}"
        );
    }
}
