//! The `resetgate` command: the gateway server and its admin tools.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use clap::{Parser, Subcommand};
use std::sync::Arc;

use resetgate::config::GatewayConfig;
use resetgate::plugin::{HostConfig, PluginHost};

/// The end of `--help` and the manual page's last section.
const AFTER_HELP: &str = "\
Files: /etc/resetgate/gateway.yaml is the config the systemd unit (dist/systemd/resetgate.service) \
names; /var/lib/resetgate is its data folder (store, data.key, plugin cache). Relative paths \
in a config are relative to its file; without one, the defaults are relative to the working folder.

Environment: RESETGATE_CONFIG, RESETGATE_LISTEN, RESETGATE_DATA_DIR, RESETGATE_PLUGINS, \
RESETGATE_WORKFLOWS and RESETGATE_LOG_FORMAT stand for the flags of the same names; \
RESETGATE_LOG takes log filter directives (e.g. info,resetgate::plugin=warn) and, when set, \
decides over -v and -q; RESETGATE_URL and RESETGATE_ADMIN_KEY are for `resetgate admin`; \
NOTIFY_SOCKET (set by systemd) makes `serve` report readiness, reloads and stopping.

Installing, configuring, rotating keys and certificates, logs, metrics and the meaning of every \
error code: docs/operations.md.";

/// Plugin instances are made, called and dropped on different threads;
/// mimalloc frees across threads without the arena-lock contention of
/// glibc's malloc (measured in BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Self-hosted gateway for enterprise self-service password reset.
#[derive(Parser)]
#[command(name = "resetgate", version, about, after_long_help = AFTER_HELP)]
struct Cli {
    /// More log lines: `-v` debug, `-vv` trace (RESETGATE_LOG, when set, decides instead).
    #[arg(short, long, action = clap::ArgAction::Count, global = true, conflicts_with = "quiet")]
    verbose: u8,
    /// Fewer log lines: `-q` warnings and errors, `-qq` errors only (RESETGATE_LOG, when set, decides instead).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    quiet: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs the gateway.
    Serve(ServeArgs),
    /// Checks workflow files and the gateway config; every problem at file:line:column.
    Check(CheckArgs),
    /// Works with plugin components.
    Plugin {
        #[command(subcommand)]
        command: PluginCommand,
    },
    /// Works with the store: migrate, check, copy to another backend.
    Store {
        #[command(subcommand)]
        command: resetgate::storecli::StoreCommand,
    },
    /// Writes a backup of the store (every record, as of one moment) to a file.
    Backup(resetgate::storecli::BackupArgs),
    /// Restores a backup into an empty store (the gateway stopped).
    Restore(resetgate::storecli::RestoreArgs),
    /// Works with the audit log.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Manages the users of the `local-users` directory plugin (with the gateway stopped; `admin users` while it runs).
    Users(resetgate::users::UsersArgs),
    /// Operates a running gateway through its admin API: workflows, plugins, local users, lockouts, flows, the audit log.
    ///
    /// Exit status: 0 done; 1 done and the answer is no (a workflow has errors, a reload refused a file, the audit log does not verify); 2 usage mistake; 3 the gateway cannot be reached or failed; 4 not allowed (key, certificate or role); 5 no such user, or it exists.
    Admin(resetgate::admincli::AdminArgs),
    /// Works with portal API keys.
    ApiKey {
        #[command(subcommand)]
        command: ApiKeyCommand,
    },
    /// Prints a shell completion script (e.g. `resetgate completions bash > /etc/bash_completion.d/resetgate`).
    Completions {
        /// The shell.
        #[arg(value_parser = ["bash", "zsh", "fish"])]
        shell: String,
    },
    /// Prints the manual page resetgate(1) in roff (`resetgate man | man -l -`), or writes one page per command into a folder.
    Man {
        /// Write resetgate.1 and a page per subcommand (resetgate-serve.1, ...) into this folder instead.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum ApiKeyCommand {
    /// Makes a new random key for a portal (or an operator): prints the key
    /// (give it to the portal or operator) and the config lines holding only
    /// its digest.
    New {
        /// The portal's or operator's name (lowercase letters, digits, `-`).
        name: String,
        /// Make an operator's key with this role (`helpdesk`, `admin`, `auditor`).
        #[arg(long, value_name = "ROLE", value_parser = ["helpdesk", "admin", "auditor"])]
        operator: Option<String>,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Checks every hash chain of the audit log from its first entry to its
    /// last; prints each chain and the total (status 1 if it does not verify).
    Verify(resetgate::storecli::Target),
}

#[derive(clap::Args)]
struct ServeArgs {
    /// The gateway config file (default: built-in defaults).
    #[arg(long, env = "RESETGATE_CONFIG")]
    config: Option<PathBuf>,
    /// Address to listen on (overrides the config; default 127.0.0.1:8080).
    #[arg(long, env = "RESETGATE_LISTEN")]
    listen: Option<SocketAddr>,
    /// Folder for the gateway's state and its plugin cache (overrides the config; default .resetgate).
    #[arg(long, env = "RESETGATE_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Folder of plugin components (overrides the config; default target/plugins).
    #[arg(long, env = "RESETGATE_PLUGINS")]
    plugins: Option<PathBuf>,
    /// Folder of workflow files (overrides the config; default workflows).
    #[arg(long, env = "RESETGATE_WORKFLOWS")]
    workflows: Option<PathBuf>,
    /// How log lines on stderr are written: text, or one JSON object per line.
    #[arg(long, env = "RESETGATE_LOG_FORMAT", value_enum, default_value_t)]
    log_format: resetgate::logging::LogFormat,
}

#[derive(clap::Args)]
struct CheckArgs {
    /// Workflow files or folders to check (default: the config's workflows folder).
    paths: Vec<PathBuf>,
    /// The gateway config file (default: the built-in defaults).
    #[arg(long, env = "RESETGATE_CONFIG")]
    config: Option<PathBuf>,
    /// Fail on warnings too.
    #[arg(long)]
    deny_warnings: bool,
}

#[derive(Subcommand)]
enum PluginCommand {
    /// Lists the plugins the configured workflows use (offline, from the
    /// files): name, file, sha256, kind, version, and each step's grants.
    List(PluginListArgs),
    /// Prints a plugin's name, version, kind, sha256, imports and config schema.
    Inspect {
        /// The component to inspect.
        file: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

/// `resetgate plugin list`.
#[derive(clap::Args)]
struct PluginListArgs {
    /// The gateway config file: its plugins and workflows folders (default: the built-in defaults).
    #[arg(long, env = "RESETGATE_CONFIG")]
    config: Option<PathBuf>,
    /// Folder of plugin components (overrides the config, as for `serve`).
    #[arg(long, env = "RESETGATE_PLUGINS")]
    plugins: Option<PathBuf>,
    /// Folder of workflow files (overrides the config, as for `serve`).
    #[arg(long, env = "RESETGATE_WORKFLOWS")]
    workflows: Option<PathBuf>,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    use resetgate::logging::LogFormat;
    let cli = Cli::parse();
    let format = match &cli.command {
        Command::Serve(args) => args.log_format,
        _ => LogFormat::Text,
    };
    let serving = matches!(cli.command, Command::Serve(_));
    let log = resetgate::logging::init(format, log_level(cli.verbose, cli.quiet), serving);
    let result = match cli.command {
        Command::Serve(args) => match serve(args) {
            // A JSON log stays JSON to its last line.
            Err(e) if format == LogFormat::Json => {
                tracing::error!(error = %render_error(&e), "the gateway stopped");
                return ExitCode::FAILURE;
            }
            other => other,
        },
        Command::Store { command } => return resetgate::storecli::run_store(command),
        Command::Backup(args) => return resetgate::storecli::run_backup(args),
        Command::Restore(args) => return resetgate::storecli::run_restore(args),
        Command::Audit {
            command: AuditCommand::Verify(target),
        } => return resetgate::storecli::run_audit_verify(target),
        Command::Check(args) => return check(args),
        Command::Admin(args) => return resetgate::admincli::main(args),
        Command::Users(args) => resetgate::users::run(
            args,
            &mut std::io::stdout().lock(),
            &mut std::io::stdin().lock(),
        )
        .map_err(anyhow::Error::from),
        Command::Plugin {
            command: PluginCommand::Inspect { file, json },
        } => inspect(&file, json),
        Command::Plugin {
            command: PluginCommand::List(args),
        } => return plugin_list(args),
        Command::ApiKey {
            command: ApiKeyCommand::New { name, operator },
        } => api_key_new(&name, operator.as_deref()),
        Command::Completions { shell } => completions(&shell),
        Command::Man { dir } => man(dir.as_deref()),
    };
    // Every log line is out before the last word.
    drop(log);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", render_error(&e));
            ExitCode::FAILURE
        }
    }
}

/// The default log filter for `-v`/`-q` (`RESETGATE_LOG`, when set,
/// replaces it: see [`resetgate::logging::init`]).
fn log_level(verbose: u8, quiet: u8) -> &'static str {
    match (verbose, quiet) {
        (0, 0) => "info",
        (1, _) => "debug",
        (v, _) if v > 1 => "trace",
        (_, 1) => "warn",
        _ => "error",
    }
}

/// An error and its causes on one line, `outer: cause: cause`, each text
/// once: many errors here already say their cause in their own text
/// (`cannot read FILE: No such file or directory`), and anyhow's `{:#}`
/// would repeat it.
fn render_error(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if text.is_empty() || out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

/// `resetgate completions SHELL`.
fn completions(shell: &str) -> anyhow::Result<()> {
    use clap::CommandFactory;
    use clap_complete::Shell;
    let shell = match shell {
        "bash" => Shell::Bash,
        "zsh" => Shell::Zsh,
        "fish" => Shell::Fish,
        other => anyhow::bail!("no completions for the shell `{other}`"),
    };
    clap_complete::generate(
        shell,
        &mut Cli::command(),
        "resetgate",
        &mut std::io::stdout().lock(),
    );
    Ok(())
}

/// `resetgate man [--dir DIR]`: the manual page from the same definitions
/// as `--help`, so it always matches this binary.
fn man(dir: Option<&Path>) -> anyhow::Result<()> {
    use clap::CommandFactory;
    let command = Cli::command();
    match dir {
        None => clap_mangen::Man::new(command)
            .render(&mut std::io::stdout().lock())
            .context("cannot write the manual page"),
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            clap_mangen::generate_to(command, dir)
                .with_context(|| format!("cannot write the manual pages into {}", dir.display()))
        }
    }
}

/// `resetgate plugin list`: loads the workflows as `serve` would (without
/// serving them) and prints the plugins they use. Status 0; 1 if a
/// workflow file has errors (the plugins of the others are listed); 2 if
/// the config has errors.
fn plugin_list(args: PluginListArgs) -> ExitCode {
    let mut config = match &args.config {
        Some(path) => match GatewayConfig::load(path) {
            Ok(c) => c,
            Err(ds) => {
                for d in &ds {
                    eprintln!("{d}");
                }
                eprintln!(
                    "error: the gateway config {} has errors (listed above)",
                    path.display()
                );
                return ExitCode::from(2);
            }
        },
        None => GatewayConfig::default(),
    };
    if let Some(v) = args.plugins {
        config.plugins = v;
    }
    if let Some(v) = args.workflows {
        config.workflows = v;
    }
    let host = match PluginHost::new(HostConfig::uncached()) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("error: cannot start the plugin host: {e}");
            return ExitCode::FAILURE;
        }
    };
    let (workflows, diagnostics) = resetgate::workflow::load_dir(&host, &config, &config.workflows);
    let mut broken: Vec<&Path> = diagnostics
        .iter()
        .filter(|d| d.is_error())
        .map(|d| d.file.as_path())
        .collect();
    broken.sort();
    broken.dedup();
    let views = resetgate::api::admin::plugin_views(workflows);
    let file = |name: &str| config.plugins.join(format!("{name}.wasm"));
    if args.json {
        let plugins: Vec<serde_json::Value> = views
            .iter()
            .map(|p| {
                serde_json::json!({
                    "name": p.name,
                    "file": file(&p.name),
                    "sha256": p.sha256,
                    "kind": p.kind,
                    "version": p.version,
                    "imports": p.imports,
                    "steps": p.steps,
                })
            })
            .collect();
        let out = serde_json::json!({ "plugins": plugins });
        println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
    } else {
        if views.is_empty() {
            println!(
                "no plugins: no workflow loaded from {}",
                config.workflows.display()
            );
        }
        for p in &views {
            println!("{} ({} {})", p.name, p.kind, p.version);
            println!("  file:    {}", file(&p.name).display());
            println!("  sha256:  {}", p.sha256);
            let imports = if p.imports.is_empty() {
                "none".to_owned()
            } else {
                p.imports.join(", ")
            };
            println!("  imports: {imports}");
            for step in &p.steps {
                println!(
                    "  used by: {} {} (grants: {})",
                    step.workflow,
                    step.step,
                    describe_grants(&step.grants)
                );
            }
        }
    }
    if broken.is_empty() {
        return ExitCode::SUCCESS;
    }
    for file in &broken {
        eprintln!(
            "error: {} has errors; its plugins are not listed",
            file.display()
        );
    }
    eprintln!("help: `resetgate check` prints every problem at file:line:column");
    ExitCode::FAILURE
}

/// A step's grants as `http: a, b; kv` (`none` for none).
fn describe_grants(grants: &serde_json::Value) -> String {
    let mut parts = Vec::new();
    if let Some(map) = grants.as_object() {
        for (name, value) in map {
            match value {
                serde_json::Value::Array(items) if !items.is_empty() => {
                    let items: Vec<&str> = items.iter().filter_map(|v| v.as_str()).collect();
                    parts.push(format!("{name}: {}", items.join(", ")));
                }
                serde_json::Value::Bool(true) => parts.push(name.clone()),
                _ => {}
            }
        }
    }
    if parts.is_empty() {
        "none".to_owned()
    } else {
        parts.join("; ")
    }
}

/// `resetgate api-key new NAME`.
fn api_key_new(name: &str, operator: Option<&str>) -> anyhow::Result<()> {
    let valid = name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !valid {
        anyhow::bail!(
            "`{name}` is not a portal name: use lowercase letters, digits and `-`, starting with a letter"
        );
    }
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    let key = format!("rgk_{}", hex::encode(bytes));
    let digest = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(key.as_bytes()));
    println!("{key}");
    match operator {
        None => eprintln!(
            "Give the key above to the portal `{name}` (it sends it as `X-Api-Key`); it is not stored anywhere.\n\
             Add its digest to the gateway config:\n\napi:\n  keys:\n    {name}: {{ sha256: {digest} }}\n"
        ),
        Some(role) => eprintln!(
            "Give the key above to the operator `{name}` (`resetgate admin` reads it from RESETGATE_ADMIN_KEY); it is not stored anywhere.\n\
             Add its digest to the gateway config:\n\napi:\n  operators:\n    {name}: {{ role: {role}, sha256: {digest} }}\n"
        ),
    }
    Ok(())
}

/// `resetgate check`: prints every diagnostic and a summary to stderr; the
/// status is 0 only without errors (and, with `--deny-warnings`, warnings).
fn check(args: CheckArgs) -> ExitCode {
    use resetgate::config::GatewayConfig;
    let mut diagnostics = Vec::new();
    let config = match &args.config {
        Some(path) => match GatewayConfig::load(path) {
            Ok(c) => Some(c),
            Err(ds) => {
                diagnostics.extend(ds);
                None
            }
        },
        None => Some(GatewayConfig::default()),
    };
    let mut workflows = 0;
    if let Some(config) = &config {
        let cache = config.data_dir.join("plugin-cache");
        // The gateway's cache when this user may use it (a check as the
        // gateway's user is fast); otherwise, e.g. an admin checking as
        // root, compile in memory rather than load the folder's code.
        let host = match PluginHost::new(HostConfig::new(cache)) {
            Ok(h) => Ok(h),
            Err(e) => {
                eprintln!("note: not using the plugin cache ({e}); compiling in memory");
                PluginHost::new(HostConfig::uncached())
            }
        };
        let host = match host {
            Ok(h) => h,
            Err(e) => {
                eprintln!("error: cannot start the plugin host: {e}");
                return ExitCode::FAILURE;
            }
        };
        let paths = if args.paths.is_empty() {
            vec![config.workflows.clone()]
        } else {
            args.paths.clone()
        };
        let report = resetgate::workflow::check_report(&host, config, &paths);
        workflows = report.workflows;
        diagnostics.extend(report.diagnostics);
    }
    for d in &diagnostics {
        eprintln!("{d}");
    }
    if config.is_none() {
        eprintln!("note: workflows not checked: fix the gateway config first");
    }
    let errors = diagnostics.iter().filter(|d| d.is_error()).count();
    let warnings = diagnostics.len() - errors;
    let plural =
        |n: usize, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
    eprintln!(
        "checked {}: {}, {}",
        plural(workflows, "workflow", "workflows"),
        plural(errors, "error", "errors"),
        plural(warnings, "warning", "warnings")
    );
    if errors > 0 || (args.deny_warnings && warnings > 0) {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn inspect(file: &Path, json: bool) -> anyhow::Result<()> {
    // Compiled in memory: a shared temporary folder would let another local
    // user plant native code for it to load.
    let host = PluginHost::new(HostConfig::uncached())?;
    let i = host.inspect(file)?;
    let needs: Vec<&str> = i.needs.iter().map(|c| c.interface()).collect();
    if json {
        let out = serde_json::json!({
            "name": i.info.name,
            "version": i.info.version,
            "kind": i.info.kind,
            "summary": i.info.summary,
            "sha256": i.sha256,
            "imports": i.imports,
            "needs_grants": needs,
            "not_provided": i.missing_wasi,
            "config_schema": i.info.config_schema,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!("name:     {}", i.info.name);
    println!("version:  {}", i.info.version);
    println!("kind:     {}", i.info.kind);
    println!("summary:  {}", i.info.summary);
    println!("sha256:   {}", i.sha256);
    // What it imports, not what it uses: some toolchains import every
    // capability of the world. Each works only where a step grants it.
    println!(
        "grants:   {}",
        if needs.is_empty() {
            "none needed".to_owned()
        } else {
            format!(
                "{} (imported; each works only where the step grants it)",
                needs.join(", ")
            )
        }
    );
    println!("imports:");
    for import in &i.imports {
        let note = if i.missing_wasi.contains(import) {
            "  (not provided by resetgate: traps if called)"
        } else {
            ""
        };
        println!("  {import}{note}");
    }
    println!("config schema:");
    println!("{}", serde_json::to_string_pretty(&i.info.config_schema)?);
    Ok(())
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    use resetgate::runtime::Runtime;
    let started = Instant::now();
    let mut config = match &args.config {
        Some(path) => GatewayConfig::load(path).map_err(|ds| {
            ds.iter().for_each(resetgate::reload::log_diagnostic);
            anyhow::anyhow!(
                "the gateway config {} has {} error(s) (logged above); fix them or run `resetgate check --config {}`",
                path.display(),
                ds.len(),
                path.display()
            )
        })?,
        None => GatewayConfig::default(),
    };
    let overrides = resetgate::config::Overrides {
        listen: args.listen,
        data_dir: args.data_dir,
        plugins: args.plugins,
        workflows: args.workflows,
    };
    overrides.apply(&mut config);
    // HTTPS, or plain HTTP where that is allowed: decided before anything
    // is opened, so a bad certificate stops the start at once.
    let tls = match &config.tls {
        Some(settings) => {
            let tls = resetgate::listen::Tls::load(settings.clone())?;
            let cert = tls.certificate();
            tracing::info!(subject = %cert.subject, sha256 = %cert.sha256, not_after = cert.not_after.as_deref().unwrap_or("?"), client_certificates = tls.asks_client_certificates(), "loaded the TLS certificate");
            Some(Arc::new(tls))
        }
        None => {
            resetgate::listen::check_plain_http(config.listen, config.allow_plain_http)?;
            None
        }
    };
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create data folder {}", config.data_dir.display()))?;
    let store = resetgate::store::open(&config.store_spec()?)?;
    let host = PluginHost::new(HostConfig::new(config.data_dir.join("plugin-cache")))?;
    let caps = resetgate::plugin::Capabilities::from_config(&config, Some(store.clone()))
        .context("cannot set up the capabilities the gateway config defines")?;
    // After the store: a second gateway on the folder stops at its lock.
    let data_key = data_key(&config, &caps.secrets)?;
    host.set_capabilities(Arc::new(caps));
    let (workflows, broken, _) = resetgate::reload::load_workflows(&host, &config);
    if !broken.is_empty() {
        anyhow::bail!(
            "{} workflow file(s) have errors (listed above); fix them or run `resetgate check`",
            broken.len()
        );
    }
    for wf in &workflows {
        tracing::info!(workflow = %wf.name, version = %&wf.version[..12], source = %wf.source, "loaded workflow");
    }
    let runtime = Arc::new(Runtime::new(store.clone(), data_key, workflows));
    let api = resetgate::api::Api::new(runtime.clone(), config.api.clone());
    api.show_plugins(host.clone());
    resetgate::metrics::RELOADS.loaded(now_ms());
    api.set_page(config.page.clone());
    let reloader = Arc::new(
        resetgate::reload::Reloader::new(host.clone(), config.clone(), runtime.clone())
            .overrides(overrides)
            .tls(tls.clone())
            .serving(&api),
    );
    api.set_reloader(reloader.clone());
    let interrupted = runtime.recover(now_ms())?;
    if interrupted > 0 {
        tracing::warn!(
            flows = interrupted,
            "flows a crash interrupted mid-commit end interrupted: whether their password changed is unknown"
        );
    }
    // Due work (the cluster's flow sweep, ...), claimed with a lease so
    // that one gateway of those sharing the store runs each item.
    resetgate::due::DueWork::new(
        store.clone(),
        runtime.clone(),
        resetgate::due::DueSettings {
            sweep_every: config.timers.sweep_every,
            ..Default::default()
        },
    )
    .spawn(now_ms)?;
    // Each gateway drops the workflow versions no flow runs on any more.
    let pruner = runtime.clone();
    std::thread::Builder::new()
        .name("prune-versions".into())
        .spawn(move || {
            loop {
                std::thread::sleep(std::time::Duration::from_secs(30));
                if let Err(e) = pruner.prune_versions() {
                    tracing::error!(error = %e, "dropping old workflow versions failed");
                }
            }
        })?;
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let served = tokio.block_on(async move {
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.listen))?;
        let addr = listener.local_addr()?;
        let stats = host.stats();
        tracing::info!(
            workflows = runtime.workflows().len(),
            compiled = stats.compiles,
            from_cache = stats.cache_hits,
            startup_ms = started.elapsed().as_millis() as u64,
            "ready"
        );
        let options = resetgate::listen::Options {
            tls: tls.clone(),
            limits: config.connections,
        };
        // Listen for SIGHUP and SIGTERM before announcing the address: a
        // signal that arrives before its handler is installed would end the
        // process (SIGTERM right after the announcement killed it uncleanly).
        let hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup());
        let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate());
        let url = resetgate::server::describe_addr(addr, tls.is_some());
        tokio::spawn(reload_on_sighup(hup, reloader, url.clone()));
        tracing::info!(url = %url, "listening");
        // The socket is bound and listening: connections are accepted from
        // here on (they queue until `serve` takes them).
        resetgate::notify::ready(&url);
        // Not ready once stopping: load balancers drain while requests under
        // way finish.
        let draining = api.clone();
        let shutdown = async move {
            shutdown_signal(term.ok()).await;
            resetgate::notify::stopping();
            draining.set_ready(false);
        };
        resetgate::server::serve(listener, api, options, shutdown).await?;
        anyhow::Ok(())
    });
    // Every answered request is durable already; closing lets the store
    // finish what is under way (sled's last flush, the database's pool).
    store.close();
    tracing::info!("stopped");
    served
}

/// The data key that seals enrollments at rest, as the config says; where
/// it came from is logged, the key never.
fn data_key(
    config: &GatewayConfig,
    secrets: &resetgate::plugin::secrets::Secrets,
) -> anyhow::Result<Arc<resetgate::seal::DataKey>> {
    use resetgate::seal::{DataKey, Source};
    let (key, source) = DataKey::from_config(config, secrets)?;
    match source {
        Source::Created => tracing::info!(
            key = %key.origin(),
            "created the data key (mode 600); keep a copy with your backups: sealed enrollment \
             data does not open without it"
        ),
        Source::File | Source::Secret => tracing::info!(key = %key.origin(), "read the data key"),
    }
    Ok(Arc::new(key))
}

/// `SIGHUP` reloads what [`resetgate::reload::Reloader`] reloads: the
/// gateway config file, the TLS certificate, key and client CA, the
/// capabilities and the workflows. A file with errors is refused (with the
/// same messages as `resetgate check`), and what was loaded before keeps
/// serving; running flows finish on the version they started with, and
/// open connections keep the certificate they were accepted with.
async fn reload_on_sighup(
    hup: std::io::Result<tokio::signal::unix::Signal>,
    reloader: Arc<resetgate::reload::Reloader>,
    url: String,
) {
    let Ok(mut hup) = hup else {
        tracing::error!("cannot listen for SIGHUP; hot reload is off");
        return;
    };
    while hup.recv().await.is_some() {
        resetgate::notify::reloading();
        let reloader = reloader.clone();
        let done = tokio::task::spawn_blocking(move || reloader.reload()).await;
        let accepted = match done {
            Ok(report) => report.accepted(),
            Err(e) => {
                tracing::error!(error = %e, "reloading failed");
                resetgate::metrics::RELOADS.record(false, now_ms());
                false
            }
        };
        resetgate::notify::reloaded(&url, accepted);
    }
}

/// Resolves at Ctrl-C or at SIGTERM (`term`, registered by the caller
/// before it announced the address).
async fn shutdown_signal(term: Option<tokio::signal::unix::Signal>) {
    let ctrl_c = tokio::signal::ctrl_c();
    if let Some(mut term) = term {
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
        return;
    }
    let _ = ctrl_c.await;
}
