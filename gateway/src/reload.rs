//! Reloading what the gateway serves while it runs — on `SIGHUP` and from
//! the admin API (`POST /v1/admin/workflows/reload`), the same way: the
//! gateway config file (when the gateway was started with one), the TLS
//! certificate, key and client CA, the capabilities (secrets read again,
//! LDAP connections and HTTP origins set up again) and every workflow file.
//!
//! The config file is taken whole or not at all: with an error (the
//! diagnostics of `resetgate check --config`), or with capabilities or
//! TLS files that cannot be set up (both are read and checked before any
//! part is applied), the config loaded before stays in force. Taken, its
//! API keys, operators and roles, body and rate limits, page branding,
//! capabilities, TLS files and folders apply at once (a request sees the
//! old key set or the new one, never a mix); the settings only a restart
//! can change ([`crate::config::restart_only_changes`]) keep their running
//! values and are reported as waiting for a restart. A workflow file with
//! errors is refused with `resetgate check`'s messages and the version
//! already loaded keeps serving; running flows finish on the version they
//! started with.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock, Weak};

use crate::api::Api;
use crate::config::{GatewayConfig, Overrides};
use crate::listen::Tls;
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
    /// The gateway config file read again; `None` when the gateway runs
    /// without one.
    pub config: Option<ConfigReload>,
    /// Why the TLS certificate was not reloaded, if it was not.
    pub tls_error: Option<String>,
}

impl ReloadReport {
    /// Whether everything was taken: the config file, the TLS files, the
    /// capabilities and every workflow file. Settings waiting for a restart
    /// do not make a reload fail.
    pub fn accepted(&self) -> bool {
        self.refused.is_empty()
            && self.capabilities_error.is_none()
            && self.tls_error.is_none()
            && self.config.as_ref().is_none_or(|c| c.applied)
    }
}

/// What became of the gateway config file in a reload.
#[derive(Clone, Debug, Default)]
pub struct ConfigReload {
    /// The file.
    pub file: PathBuf,
    /// Whether it is in force now; if not, the config loaded before is.
    pub applied: bool,
    /// Why it was refused: its errors at `file:line:column`.
    pub diagnostics: Vec<Diagnostic>,
    /// Settings the file changes that only a restart applies (by their
    /// name in the file); they keep their running values.
    pub needs_restart: Vec<&'static str>,
}

/// Reloads the config, the TLS files, the capabilities and the workflows of
/// one gateway; reloads are serialised.
pub struct Reloader {
    host: PluginHost,
    config: RwLock<Arc<GatewayConfig>>,
    overrides: Overrides,
    runtime: Arc<Runtime>,
    tls: Option<Arc<Tls>>,
    api: Option<Weak<Api>>,
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
            config: RwLock::new(Arc::new(config)),
            overrides: Overrides::default(),
            runtime,
            tls: None,
            api: None,
            running: Mutex::new(()),
        }
    }

    /// What the command line set over the config file, set again over each
    /// reloaded file.
    pub fn overrides(mut self, overrides: Overrides) -> Reloader {
        self.overrides = overrides;
        self
    }

    /// The TLS settings whose files a reload reads again.
    pub fn tls(mut self, tls: Option<Arc<Tls>>) -> Reloader {
        self.tls = tls;
        self
    }

    /// The API that a reloaded config's keys, operators, limits and page
    /// branding go to.
    pub fn serving(mut self, api: &Arc<Api>) -> Reloader {
        self.api = Some(Arc::downgrade(api));
        self
    }

    /// The plugin host.
    pub fn host(&self) -> &PluginHost {
        &self.host
    }

    /// The gateway config in force.
    pub fn config(&self) -> Arc<GatewayConfig> {
        self.config
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Reloads the config file, the TLS files, the capabilities, then the
    /// workflows (blocking: it loads plugins), and records the reload in
    /// the metrics.
    pub fn reload(&self) -> ReloadReport {
        let _one_at_a_time = self.running.lock().unwrap_or_else(|e| e.into_inner());
        let mut report = ReloadReport::default();
        let running = self.config();
        // The config file, whole or not at all.
        let mut candidate = None;
        if let Some(file) = &running.source {
            let (next, outcome) = self.read_config(&running, file);
            candidate = next;
            report.config = Some(outcome);
        }
        let config = match candidate.and_then(|next| self.put_in_force(next, &mut report)) {
            Some(next) => next,
            None => {
                self.read_running_again(&running, &mut report);
                running
            }
        };
        let (mut workflows, broken, diagnostics) = load_workflows(&self.host, &config);
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
        report.workflows = workflows;
        report.refused = broken;
        report.diagnostics = diagnostics;
        let waiting = report.config.as_ref().map_or(0, |c| c.needs_restart.len());
        crate::metrics::RELOADS.record(report.accepted(), now_ms());
        crate::metrics::RELOADS.restart_needed(waiting);
        report
    }

    /// Puts the new config `next` in force, whole or not at all: its
    /// capabilities (secrets, LDAP connections, HTTP origins) and its TLS
    /// files are read and checked before any part of it is applied.
    /// `None` (and the refusal in `report`) if either cannot be set up.
    fn put_in_force(
        &self,
        next: Arc<GatewayConfig>,
        report: &mut ReloadReport,
    ) -> Option<Arc<GatewayConfig>> {
        let caps = Capabilities::from_config(&next, self.host.capabilities().kv.clone());
        let tls = self
            .tls
            .as_ref()
            .map(|tls| Tls::prepare(&tls_settings(&next, tls)))
            .transpose();
        let why = match (caps, tls) {
            (Ok(caps), Ok(tls)) => {
                self.host.set_capabilities(Arc::new(caps));
                tracing::info!("reloaded secrets, LDAP connections and HTTP origins");
                self.apply_config(&next);
                if let (Some(serving), Some(prepared)) = (&self.tls, tls) {
                    log_certificate(&serving.install(prepared));
                }
                return Some(next);
            }
            (Err(e), _) => {
                report.capabilities_error = Some(e.to_string());
                "its capabilities cannot be set up"
            }
            (_, Err(e)) => {
                report.tls_error = Some(e.to_string());
                "its TLS files cannot be loaded"
            }
        };
        if let Some(outcome) = report.config.as_mut() {
            outcome.applied = false;
            // Nothing of a refused file waits for a restart.
            outcome.needs_restart.clear();
            tracing::error!(
                file = %outcome.file.display(),
                "gateway config reload refused: {why}; the config loaded before stays in force"
            );
        }
        None
    }

    /// Reads the running config's secrets and TLS files again; what cannot
    /// be read keeps what was loaded before.
    fn read_running_again(&self, running: &GatewayConfig, report: &mut ReloadReport) {
        match Capabilities::from_config(running, self.host.capabilities().kv.clone()) {
            Ok(caps) => {
                self.host.set_capabilities(Arc::new(caps));
                tracing::info!("reloaded secrets, LDAP connections and HTTP origins");
            }
            Err(e) => {
                tracing::error!("capabilities reload refused, the ones loaded before stay: {e}");
                report.capabilities_error.get_or_insert(e.to_string());
            }
        }
        if let Some(tls) = &self.tls {
            match tls.reload_with(&tls_settings(running, tls)) {
                Ok(cert) => log_certificate(&cert),
                Err(e) => {
                    tracing::error!(
                        "TLS reload refused: {e}; the certificate loaded before keeps serving"
                    );
                    report.tls_error.get_or_insert(e.to_string());
                }
            }
        }
    }

    /// Reads the config file again: the config to put in force (the
    /// settings only a restart changes as they run), or `None` if the file
    /// has errors; and what became of it.
    fn read_config(
        &self,
        running: &GatewayConfig,
        file: &Path,
    ) -> (Option<Arc<GatewayConfig>>, ConfigReload) {
        let mut outcome = ConfigReload {
            file: file.to_path_buf(),
            ..ConfigReload::default()
        };
        let mut next = match GatewayConfig::load(file) {
            Ok(next) => next,
            Err(diagnostics) => {
                diagnostics.iter().for_each(log_diagnostic);
                tracing::error!(
                    file = %file.display(),
                    errors = diagnostics.iter().filter(|d| d.is_error()).count(),
                    "gateway config reload refused; the config loaded before stays in force"
                );
                outcome.diagnostics = diagnostics;
                return (None, outcome);
            }
        };
        self.overrides.apply(&mut next);
        outcome.needs_restart = crate::config::restart_only_changes(running, &next);
        for setting in &outcome.needs_restart {
            tracing::warn!(
                file = %file.display(),
                setting,
                "gateway config setting changed; it takes effect at the next restart, the running value stays"
            );
        }
        outcome.applied = true;
        let next = crate::config::keep_restart_only(running, next);
        (Some(Arc::new(next)), outcome)
    }

    /// Puts `next` in force: the API's keys, operators and limits, the
    /// page's branding, and the config later reloads start from.
    fn apply_config(&self, next: &Arc<GatewayConfig>) {
        if let Some(api) = self.api.as_ref().and_then(Weak::upgrade) {
            api.set_config(next.api.clone());
            api.set_page(next.page.clone());
        }
        *self.config.write().unwrap_or_else(PoisonError::into_inner) = next.clone();
        tracing::info!(
            file = next.source.as_ref().map(|f| f.display().to_string()),
            portals = next.api.keys.len(),
            operators = next.api.operators.len(),
            "reloaded the gateway config"
        );
    }

    /// Loads `text` as if it were the workflow file `name` in the
    /// workflows folder, without serving it: the workflow and its warnings,
    /// or every diagnostic.
    pub fn validate(
        &self,
        name: &str,
        text: &[u8],
    ) -> Result<(Workflow, Vec<Diagnostic>), Vec<Diagnostic>> {
        let config = self.config();
        let path = config.workflows.join(name);
        crate::workflow::load_bytes(&self.host, &config, &path, text)
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

/// Logs the certificate a reload put in force.
fn log_certificate(cert: &crate::listen::CertSummary) {
    tracing::info!(subject = %cert.subject, sha256 = %cert.sha256, not_after = cert.not_after.as_deref().unwrap_or("?"), "reloaded the TLS certificate");
}

/// The TLS files a reload reads for `config`. A config without `tls:`
/// while serving HTTPS waits for a restart: the files served now are read
/// again.
fn tls_settings(config: &GatewayConfig, tls: &Tls) -> crate::config::TlsSettings {
    config.tls.clone().unwrap_or_else(|| tls.settings())
}
