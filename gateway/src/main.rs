//! The `resetgate` command: the gateway server and its admin tools.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use clap::{Parser, Subcommand};
use resetgate::plugin::{HostConfig, LoadSpec, PluginHost};

/// Plugin instances are made, called and dropped on different threads;
/// mimalloc frees across threads without the arena-lock contention of
/// glibc's malloc (measured in BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Self-hosted gateway for enterprise self-service password reset.
#[derive(Parser)]
#[command(name = "resetgate", version, about)]
struct Cli {
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
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Address to listen on. Plain HTTP is for loopback only until TLS arrives.
    #[arg(long, env = "RESETGATE_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Folder for the gateway's state and its plugin cache (created if missing).
    #[arg(long, env = "RESETGATE_DATA_DIR", default_value = ".resetgate")]
    data_dir: PathBuf,
    /// Folder of plugin components (`*.wasm`) to load.
    #[arg(long, env = "RESETGATE_PLUGINS", default_value = "target/plugins")]
    plugins: PathBuf,
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
    /// Prints a plugin's name, version, kind, sha256, imports and config schema.
    Inspect {
        /// The component to inspect.
        file: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("RESETGATE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let result = match cli.command {
        Command::Serve(args) => serve(args),
        Command::Check(args) => return check(args),
        Command::Plugin {
            command: PluginCommand::Inspect { file, json },
        } => inspect(&file, json),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
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
        let host = match PluginHost::new(HostConfig {
            warm_instances: 0,
            ..HostConfig::new(cache)
        }) {
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
    let cache = std::env::temp_dir().join("resetgate-inspect-cache");
    let host = PluginHost::new(HostConfig {
        warm_instances: 0,
        ..HostConfig::new(cache)
    })?;
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
    println!(
        "grants:   {}",
        if needs.is_empty() {
            "none".to_owned()
        } else {
            needs.join(", ")
        }
    );
    println!("imports:");
    for import in &i.imports {
        println!("  {import}");
    }
    println!("config schema:");
    println!("{}", serde_json::to_string_pretty(&i.info.config_schema)?);
    Ok(())
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("cannot create data folder {}", args.data_dir.display()))?;
    let host = PluginHost::new(HostConfig::new(args.data_dir.join("plugin-cache")))?;
    let mut loaded = 0;
    let mut entries: Vec<PathBuf> = std::fs::read_dir(&args.plugins)
        .with_context(|| {
            format!(
                "cannot read the plugins folder {} (build the plugins with `cargo xtask run`, or pass --plugins)",
                args.plugins.display()
            )
        })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "wasm"))
        .collect();
    entries.sort();
    for path in entries {
        let plugin = host.load(&path, &LoadSpec::default())?;
        let info = plugin.info();
        tracing::info!(plugin = %info.name, version = %info.version, kind = %info.kind, sha256 = %plugin.sha256(), "loaded plugin");
        loaded += 1;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("cannot listen on {}", args.listen))?;
        let addr = listener.local_addr()?;
        let stats = host.stats();
        tracing::info!(
            plugins = loaded,
            compiled = stats.compiles,
            from_cache = stats.cache_hits,
            startup_ms = started.elapsed().as_millis() as u64,
            "ready"
        );
        println!(
            "resetgate listening on {}",
            resetgate::server::describe_addr(addr)
        );
        resetgate::server::serve(listener, shutdown_signal()).await?;
        tracing::info!("stopped");
        anyhow::Ok(())
    })
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        if let Ok(mut term) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            tokio::select! {
                _ = ctrl_c => {},
                _ = term.recv() => {},
            }
            return;
        }
    }
    let _ = ctrl_c.await;
}
