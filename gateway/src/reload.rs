//! Reloading what the gateway serves while it runs — on `SIGHUP` and from
//! the admin API (`POST /v1/admin/workflows/reload`), the same way: the
//! capabilities (secrets read again, LDAP connections and HTTP origins set
//! up again) and every workflow file. A file with errors is refused with
//! `resetgate check`'s messages and the version already loaded keeps
//! serving; running flows finish on the version they started with.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::config::GatewayConfig;
use crate::plugin::{Capabilities, PluginHost};
use crate::runtime::Runtime;
use crate::workflow::{Diagnostic, Workflow};

/// What a reload did.
#[derive(Clone, Debug, Default)]
pub struct ReloadReport {
    /// The workflows now current: loaded from their files, or kept.
    pub workflows: Vec<Arc<Workflow>>,
    /// Names of the workflows whose running version was kept because their
    /// file has errors.
    pub kept: Vec<String>,
    /// Every diagnostic of the workflow files (errors and warnings).
    pub diagnostics: Vec<Diagnostic>,
    /// Files refused for their errors.
    pub refused: Vec<PathBuf>,
    /// Why the capabilities were not reloaded, if they were not.
    pub capabilities_error: Option<String>,
}

/// Reloads the workflows and capabilities of one gateway; reloads are
/// serialised.
pub struct Reloader {
    host: PluginHost,
    config: GatewayConfig,
    runtime: Arc<Runtime>,
    running: Mutex<()>,
}

/// Loads every workflow in the config's folder, logging each diagnostic the
/// way `resetgate check` prints it. Returns the good workflows, the files
/// that had errors, and every diagnostic.
pub fn load_workflows(
    host: &PluginHost,
    config: &GatewayConfig,
) -> (Vec<Arc<Workflow>>, Vec<PathBuf>, Vec<Diagnostic>) {
    let (workflows, diagnostics) = crate::workflow::load_dir(host, config, &config.workflows);
    let mut broken = Vec::new();
    for d in &diagnostics {
        log_diagnostic(d);
        if d.is_error() {
            broken.push(d.file.clone());
        }
    }
    broken.sort();
    broken.dedup();
    (workflows, broken, diagnostics)
}

/// Logs a diagnostic as one event: `file:line:column: severity[code]:
/// message` as `resetgate check` prints its first line, the help as a field.
pub fn log_diagnostic(d: &Diagnostic) {
    let at = format!(
        "{}:{}:{}: {}[{}]: {}",
        d.file.display(),
        d.line,
        d.column,
        d.severity,
        d.code,
        d.message
    );
    let help = d.help.as_deref();
    if d.is_error() {
        tracing::error!(help, "{at}");
    } else {
        tracing::warn!(help, "{at}");
    }
}

impl Reloader {
    /// A reloader for the gateway that serves `runtime` with `host`, as
    /// `config` says.
    pub fn new(host: PluginHost, config: GatewayConfig, runtime: Arc<Runtime>) -> Reloader {
        Reloader {
            host,
            config,
            runtime,
            running: Mutex::new(()),
        }
    }

    /// The plugin host.
    pub fn host(&self) -> &PluginHost {
        &self.host
    }

    /// The gateway config.
    pub fn config(&self) -> &GatewayConfig {
        &self.config
    }

    /// Reloads the capabilities, then the workflows (blocking: it loads
    /// plugins), and records the reload in the metrics.
    pub fn reload(&self) -> ReloadReport {
        self.reload_after(true)
    }

    /// [`reload`](Self::reload), after a part of the reload done elsewhere
    /// (the TLS certificate, on `SIGHUP`) that succeeded if `ok_before`.
    pub fn reload_after(&self, ok_before: bool) -> ReloadReport {
        let _one_at_a_time = self.running.lock().unwrap_or_else(|e| e.into_inner());
        let mut report = ReloadReport::default();
        // A secret that cannot be read keeps the old set.
        match Capabilities::from_config(&self.config, self.host.capabilities().kv.clone()) {
            Ok(caps) => {
                self.host.set_capabilities(Arc::new(caps));
                tracing::info!("reloaded secrets, LDAP connections and HTTP origins");
            }
            Err(e) => {
                tracing::error!("capabilities reload refused, the ones loaded before stay: {e}");
                report.capabilities_error = Some(e.to_string());
            }
        }
        let (mut workflows, broken, diagnostics) = load_workflows(&self.host, &self.config);
        let kept: Vec<Arc<Workflow>> = self
            .runtime
            .current()
            .into_iter()
            .filter(|old| broken.iter().any(|b| Path::new(&old.source) == b.as_path()))
            .filter(|old| !workflows.iter().any(|w| w.name == old.name))
            .collect();
        for file in &broken {
            let old = kept
                .iter()
                .find(|old| Path::new(&old.source) == file.as_path());
            tracing::warn!(
                file = %file.display(),
                workflow = old.map(|w| w.name.as_str()),
                kept = old.map(|w| short(&w.version)),
                "workflow reload refused"
            );
        }
        report.kept = kept.iter().map(|w| w.name.clone()).collect();
        workflows.extend(kept);
        let names: Vec<String> = workflows
            .iter()
            .map(|w| format!("{}@{}", w.name, short(&w.version)))
            .collect();
        self.runtime.reload(workflows.clone());
        tracing::info!(workflows = %names.join(", "), refused = broken.len(), "reloaded workflows");
        let ok = ok_before && report.capabilities_error.is_none() && broken.is_empty();
        crate::metrics::RELOADS.record(ok, now_ms());
        report.workflows = workflows;
        report.refused = broken;
        report.diagnostics = diagnostics;
        report
    }

    /// Loads `text` as if it were the workflow file `name` in the
    /// workflows folder, without serving it: the workflow and its warnings,
    /// or every diagnostic.
    pub fn validate(
        &self,
        name: &str,
        text: &[u8],
    ) -> Result<(Workflow, Vec<Diagnostic>), Vec<Diagnostic>> {
        let path = self.config.workflows.join(name);
        crate::workflow::load_bytes(&self.host, &self.config, &path, text)
    }
}

/// The first 12 digits of a version, as logs show it.
pub fn short(version: &str) -> &str {
    version.get(..12).unwrap_or(version)
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
