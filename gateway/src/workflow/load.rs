//! Loading a workflow file into a validated [`Workflow`], and checking
//! files and folders of them (`resetgate check`, start-up, hot reload).
//!
//! A file goes through stages; every problem of a stage is reported, and a
//! stage with errors stops the ones after it (their findings would be noise):
//!
//! 1. read: size limit, UTF-8, YAML syntax (with positions);
//! 2. `version` probe: an unknown version gets one clear message;
//! 3. the JSON Schema (`schemas/workflow.schema.json`): every error, each at
//!    its `line:column` with what is wrong and how to fix it;
//! 4. the rest, all reported together: serde types (`raw`), step ids, flow
//!    limits, the password policy and its blocklist, grants against the
//!    gateway config, each plugin loaded (kind, grants, limits) and its
//!    config validated against the schema the plugin describes, and
//!    asynchronous sync targets refused (their outbox is not built yet);
//! 5. lints (warnings), once the workflow is known to be valid.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use serde_json::Value;
use sha2::{Digest, Sha256};
use unicode_normalization::UnicodeNormalization;

use super::diagnostic::{Diagnostic, SchemaTarget, did_you_mean, list, schema_diagnostics, sort};
use super::file::{self, Kind};
use super::lint;
use super::model::{
    Enrollment, FlowLimits, Gate, OnFailure, PasswordPolicy, Purpose, Step, SyncMode, SyncTarget,
    Title, Vpn, VpnMode, Workflow,
};
use super::raw::{
    RawEnrollment, RawOnFailure, RawPluginLimits, RawPurpose, RawSyncMode, RawTitle, RawVpnMode,
    RawWorkflow,
};
use super::units::format_duration;
use super::yaml::{Document, Pos, display_path, escape as escape_pointer};
use crate::config::GatewayConfig;
use crate::contract::PluginKind;
use crate::plugin::{
    Capability, Grants, Limits, LoadError, LoadSpec, LoadWarning, Plugin, PluginHost,
};

/// The workflow language's JSON Schema, as shipped in `schemas/`.
pub const SCHEMA: &str = include_str!("../../../schemas/workflow.schema.json");

/// The longest a flow may live.
const MAX_FLOW: Duration = Duration::from_secs(24 * 3600);
/// Bounds of a plugin call's wall time (the host counts in 10 ms ticks).
const MIN_WALL: Duration = Duration::from_millis(10);
const MAX_WALL: Duration = Duration::from_secs(60);
/// The longest a synchronous sync target may hold up a reset.
const MAX_SYNC_TIMEOUT: Duration = Duration::from_secs(300);
/// The smallest memory limit a component can start with.
const MIN_MEMORY: usize = 1 << 20;
/// The largest blocklist file read.
const MAX_BLOCKLIST_BYTES: u64 = 64 << 20;
/// Step ids taken by the steps that have none.
const RESERVED_IDS: [&str; 3] = ["directory", "lockout", "vpn"];

/// What `resetgate check` found.
#[derive(Clone, Debug, Default)]
pub struct CheckReport {
    /// Workflow files checked.
    pub workflows: usize,
    /// Every diagnostic, in file and position order.
    pub diagnostics: Vec<Diagnostic>,
}

impl CheckReport {
    /// Errors found.
    pub fn errors(&self) -> usize {
        self.diagnostics.iter().filter(|d| d.is_error()).count()
    }

    /// Warnings found.
    pub fn warnings(&self) -> usize {
        self.diagnostics.len() - self.errors()
    }
}

/// The embedded schema and its compiled validator, built once.
fn schema() -> Result<&'static (Value, jsonschema::Validator), &'static str> {
    static CELL: OnceLock<Result<(Value, jsonschema::Validator), String>> = OnceLock::new();
    CELL.get_or_init(|| {
        let value: Value = serde_json::from_str(SCHEMA).map_err(|e| e.to_string())?;
        let validator = file::compile(&value)?;
        Ok((value, validator))
    })
    .as_ref()
    .map_err(String::as_str)
}

/// A loaded workflow with what `load_dir` needs to spot duplicate names.
struct Loaded {
    workflow: Workflow,
    warnings: Vec<Diagnostic>,
    name_pos: Pos,
}

/// Loads and checks the workflow file at `path`. `Ok` carries the workflow
/// and its warnings; `Err` every diagnostic (errors and warnings).
pub fn load_file(
    host: &PluginHost,
    config: &GatewayConfig,
    path: &Path,
) -> Result<(Workflow, Vec<Diagnostic>), Vec<Diagnostic>> {
    load(host, config, path).map(|l| (l.workflow, l.warnings))
}

/// Loads every workflow file (`*.yaml`, `*.yml`) in `dir`. A file with
/// errors is skipped; every diagnostic of every file is returned. Two files
/// with the same workflow name: the second is refused.
pub fn load_dir(
    host: &PluginHost,
    config: &GatewayConfig,
    dir: &Path,
) -> (Vec<Arc<Workflow>>, Vec<Diagnostic>) {
    let (files, mut diagnostics) = match workflow_files(dir) {
        Ok(files) => (files, Vec::new()),
        Err(d) => (Vec::new(), vec![d]),
    };
    let mut workflows = Vec::new();
    let mut names = BTreeMap::new();
    for file in files {
        match load(host, config, &file) {
            Ok(l) => {
                let duplicate = duplicate_name(&mut names, &l, &file);
                diagnostics.extend(l.warnings);
                match duplicate {
                    Some(d) => diagnostics.push(d),
                    None => workflows.push(Arc::new(l.workflow)),
                }
            }
            Err(ds) => diagnostics.extend(ds),
        }
    }
    (workflows, diagnostics)
}

/// Checks workflow files and folders (a folder: its `*.yaml` and `*.yml`
/// files); returns every diagnostic.
pub fn check_paths(
    host: &PluginHost,
    config: &GatewayConfig,
    paths: &[PathBuf],
) -> Vec<Diagnostic> {
    check_report(host, config, paths).diagnostics
}

/// Like [`check_paths`], also counting the workflow files checked.
pub fn check_report(host: &PluginHost, config: &GatewayConfig, paths: &[PathBuf]) -> CheckReport {
    let mut report = CheckReport::default();
    let mut files = Vec::new();
    for path in paths {
        if path.is_dir() {
            match workflow_files(path) {
                Ok(found) => files.extend(found),
                Err(d) => report.diagnostics.push(d),
            }
        } else {
            files.push(path.clone());
        }
    }
    let mut names = BTreeMap::new();
    for file in files {
        report.workflows += 1;
        match load(host, config, &file) {
            Ok(l) => {
                report.diagnostics.extend(l.warnings.iter().cloned());
                report
                    .diagnostics
                    .extend(duplicate_name(&mut names, &l, &file));
            }
            Err(ds) => report.diagnostics.extend(ds),
        }
    }
    report
}

/// The workflow files of a folder (`*.yaml`, `*.yml`, not hidden), sorted.
pub fn workflow_files(dir: &Path) -> Result<Vec<PathBuf>, Diagnostic> {
    let entries = std::fs::read_dir(dir).map_err(|e| {
        Diagnostic::error(
            dir,
            Pos::START,
            "io",
            format!("cannot read the workflows folder {}: {e}", dir.display()),
        )
        .with_help("check the path, or set `workflows:` in the gateway config")
    })?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let hidden = p
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'));
            let yaml = p.extension().is_some_and(|x| x == "yaml" || x == "yml");
            yaml && !hidden && p.is_file()
        })
        .collect();
    files.sort();
    Ok(files)
}

fn duplicate_name(
    names: &mut BTreeMap<String, PathBuf>,
    loaded: &Loaded,
    file: &Path,
) -> Option<Diagnostic> {
    let name = &loaded.workflow.name;
    match names.get(name) {
        Some(first) => Some(
            Diagnostic::error(
                file,
                loaded.name_pos,
                "duplicate-name",
                format!(
                    "workflow name `{name}` is already used by {}",
                    first.display()
                ),
            )
            .with_help("give each workflow its own `name`"),
        ),
        None => {
            names.insert(name.clone(), file.to_owned());
            None
        }
    }
}

/// Loads and checks `bytes` as if they were the workflow file `path` (a
/// candidate the admin API validates); like [`load_file`].
pub fn load_bytes(
    host: &PluginHost,
    config: &GatewayConfig,
    path: &Path,
    bytes: &[u8],
) -> Result<(Workflow, Vec<Diagnostic>), Vec<Diagnostic>> {
    load_from(host, config, path, bytes).map(|l| (l.workflow, l.warnings))
}

fn load(host: &PluginHost, config: &GatewayConfig, path: &Path) -> Result<Loaded, Vec<Diagnostic>> {
    let bytes = file::read(path)?;
    load_from(host, config, path, &bytes)
}

fn load_from(
    host: &PluginHost,
    config: &GatewayConfig,
    path: &Path,
    bytes: &[u8],
) -> Result<Loaded, Vec<Diagnostic>> {
    let (schema, validator) = schema().map_err(|e| {
        vec![Diagnostic::error(
            path,
            Pos::START,
            "internal",
            format!("the built-in workflow schema is broken: {e}"),
        )]
    })?;
    let kind = Kind {
        noun: "workflow",
        version: 1,
    };
    let doc = file::document(path, bytes, kind, schema, validator)?;
    let raw: RawWorkflow = serde_json::from_value(doc.value.clone()).map_err(|e| {
        vec![Diagnostic::error(
            path,
            Pos::START,
            "internal",
            format!("the workflow passed its schema but cannot be read: {e}"),
        )]
    })?;
    let mut loader = Loader {
        host,
        config,
        file: path,
        doc: &doc,
        diagnostics: Vec::new(),
    };
    let built = loader.build(raw, hex::encode(Sha256::digest(bytes)));
    let mut diagnostics = loader.diagnostics;
    match built {
        Some(workflow) if !diagnostics.iter().any(Diagnostic::is_error) => {
            diagnostics.extend(lint::workflow(&workflow, &doc, path));
            sort(&mut diagnostics);
            Ok(Loaded {
                workflow,
                warnings: diagnostics,
                name_pos: doc.value_pos("/name"),
            })
        }
        _ => {
            sort(&mut diagnostics);
            Err(diagnostics)
        }
    }
}

/// Stage 4: everything after the schema, collecting every diagnostic.
struct Loader<'a> {
    host: &'a PluginHost,
    config: &'a GatewayConfig,
    file: &'a Path,
    doc: &'a Document,
    diagnostics: Vec<Diagnostic>,
}

/// What a plugin step is made of, whichever section it is in.
struct StepSource<'r> {
    /// JSON pointer of the step, e.g. `/gates/0`.
    pointer: String,
    id: String,
    plugin: &'r str,
    config: Option<&'r Value>,
    grants: &'r Grants,
    limits: &'r RawPluginLimits,
    kind: PluginKind,
    /// Wall time when `limits.wall_time` is not set.
    default_wall: Duration,
}

impl Loader<'_> {
    fn error(&mut self, pos: Pos, code: &'static str, message: String, help: impl Into<String>) {
        self.diagnostics
            .push(Diagnostic::error(self.file, pos, code, message).with_help(help));
    }

    /// `title:`: texts by language name only languages the gateway speaks
    /// and include English, the fallback.
    fn title(&mut self, raw: Option<RawTitle>) -> Option<Title> {
        let texts = match raw? {
            RawTitle::One(text) => return Some(Title::One(text)),
            RawTitle::ByLanguage(texts) => texts,
        };
        let languages = list(crate::i18n::LANGUAGES.iter());
        for lang in texts.keys() {
            if !crate::i18n::LANGUAGES.contains(&lang.as_str()) {
                let pos = self
                    .doc
                    .key_or_value(&format!("/title/{}", escape_pointer(lang)));
                self.error(
                    pos,
                    "value",
                    format!("`title` has a text in `{lang}`, a language the page does not speak"),
                    format!(
                        "the page speaks {languages}; remove `{lang}` or write the title in one of them"
                    ),
                );
            }
        }
        if !texts.contains_key(crate::i18n::FALLBACK) {
            self.error(
                self.doc.value_pos("/title"),
                "value",
                "`title` has no English text (`en`), which is shown for every other language".to_owned(),
                "add `en: ...`, or write the title as one text for every language: `title: Reset your password`",
            );
        }
        Some(Title::ByLanguage(texts))
    }

    fn build(&mut self, raw: RawWorkflow, version: String) -> Option<Workflow> {
        let purpose = match raw.purpose {
            RawPurpose::Reset => Purpose::Reset,
            RawPurpose::Enrollment => Purpose::Enrollment,
        };
        self.check_ids(&raw);
        let limits = self.flow_limits(&raw);
        let password = self.password(&raw);
        let default_wall = Limits::default().wall_time;

        let directory = self.step(StepSource {
            pointer: "/directory".into(),
            id: "directory".into(),
            plugin: &raw.directory.plugin,
            config: raw.directory.config.as_ref(),
            grants: &raw.directory.grants,
            limits: &raw.directory.limits,
            kind: PluginKind::Directory,
            default_wall,
        });
        let lockout = raw.lockout.as_ref().map(|l| {
            self.step(StepSource {
                pointer: "/lockout".into(),
                id: "lockout".into(),
                plugin: &l.plugin,
                config: l.config.as_ref(),
                grants: &l.grants,
                limits: &l.limits,
                kind: PluginKind::Lockout,
                default_wall,
            })
        });
        let mut gates = Vec::new();
        for (i, g) in raw.gates.iter().enumerate() {
            let pointer = format!("/gates/{i}");
            if purpose == Purpose::Enrollment && g.enrollment == RawEnrollment::None {
                self.error(
                    self.doc.value_pos(&format!("{pointer}/enrollment")),
                    "enrollment",
                    format!("gate `{}` has nothing to register (`enrollment: none`) in an enrollment workflow", g.id),
                    "remove the gate from this workflow, or set `enrollment: required` if it needs registered data",
                );
            }
            let step = self.step(StepSource {
                pointer,
                id: g.id.clone(),
                plugin: &g.plugin,
                config: g.config.as_ref(),
                grants: &g.grants,
                limits: &g.limits,
                kind: PluginKind::Gate,
                default_wall,
            });
            gates.push(step.map(|step| Gate {
                step,
                enrollment: match g.enrollment {
                    RawEnrollment::Required => Enrollment::Required,
                    RawEnrollment::None => Enrollment::None,
                },
                max_rounds: g.max_rounds,
            }));
        }
        let mut sync = Vec::new();
        for (i, s) in raw.sync.iter().enumerate() {
            let pointer = format!("/sync/{i}");
            let mode = self.sync_mode(&pointer, s);
            let wall = match &mode {
                Some(SyncMode::Sync { timeout, .. }) => *timeout,
                _ => default_wall,
            };
            if let (Some(SyncMode::Sync { timeout, .. }), Some(w)) = (&mode, s.limits.wall_time)
                && w.0 > *timeout
            {
                self.error(
                    self.doc.value_pos(&format!("{pointer}/limits/wall_time")),
                    "limits",
                    format!(
                        "`limits.wall_time` (`{w}`) is longer than the sync target's `timeout` (`{}`)",
                        format_duration(*timeout)
                    ),
                    "a push is stopped at its `timeout`; leave `limits.wall_time` out (it defaults to the timeout) or shorten it",
                );
            }
            let step = self.step(StepSource {
                pointer,
                id: s.id.clone(),
                plugin: &s.plugin,
                config: s.config.as_ref(),
                grants: &s.grants,
                limits: &s.limits,
                kind: PluginKind::SyncTarget,
                default_wall: wall,
            });
            sync.push(step.zip(mode).map(|(step, mode)| SyncTarget { step, mode }));
        }
        let vpn = raw.vpn.as_ref().map(|v| {
            let step = self.step(StepSource {
                pointer: "/vpn".into(),
                id: "vpn".into(),
                plugin: &v.plugin,
                config: v.config.as_ref(),
                grants: &v.grants,
                limits: &v.limits,
                kind: PluginKind::VpnHook,
                default_wall,
            });
            step.map(|step| Vpn {
                step,
                mode: match v.mode {
                    RawVpnMode::Partial => VpnMode::Partial,
                    RawVpnMode::Full => VpnMode::Full,
                },
            })
        });

        let title = self.title(raw.title);
        Some(Workflow {
            name: raw.name,
            description: raw.description,
            title,
            version,
            source: self.file.display().to_string(),
            purpose,
            directory: directory?,
            lockout: all_or_nothing(lockout)?,
            gates: gates.into_iter().collect::<Option<Vec<_>>>()?,
            password: password?,
            sync: sync.into_iter().collect::<Option<Vec<_>>>()?,
            vpn: all_or_nothing(vpn)?,
            limits: limits?,
        })
    }

    /// Step ids are unique and not one of the reserved ones.
    fn check_ids(&mut self, raw: &RawWorkflow) {
        let ids = raw
            .gates
            .iter()
            .enumerate()
            .map(|(i, g)| (format!("/gates/{i}/id"), &g.id))
            .chain(
                raw.sync
                    .iter()
                    .enumerate()
                    .map(|(i, s)| (format!("/sync/{i}/id"), &s.id)),
            );
        let mut seen: BTreeMap<&str, Pos> = BTreeMap::new();
        for (pointer, id) in ids {
            let pos = self.doc.value_pos(&pointer);
            if RESERVED_IDS.contains(&id.as_str()) {
                self.error(
                    pos,
                    "duplicate-id",
                    format!("step id `{id}` is reserved for the `{id}:` step"),
                    "choose another id",
                );
            } else if let Some(first) = seen.get(id.as_str()) {
                self.error(
                    pos,
                    "duplicate-id",
                    format!("step id `{id}` is used twice"),
                    format!(
                        "`{id}` is first used on line {}; step ids must be unique in a workflow (they name steps in audit records and key enrollment data)",
                        first.line
                    ),
                );
            } else {
                seen.insert(id, pos);
            }
        }
    }

    fn flow_limits(&mut self, raw: &RawWorkflow) -> Option<FlowLimits> {
        let idle = raw.limits.idle.0;
        let absolute = raw.limits.absolute.0;
        let mut ok = true;
        if idle < Duration::from_secs(1) {
            ok = false;
            self.error(
                self.doc.value_pos("/limits/idle"),
                "limits",
                format!(
                    "`limits.idle` is `{}`: a flow would expire before anyone can answer",
                    format_duration(idle)
                ),
                "use at least `1s`; the default is `5m`",
            );
        }
        if absolute > MAX_FLOW {
            ok = false;
            self.error(
                self.doc.value_pos("/limits/absolute"),
                "limits",
                format!(
                    "`limits.absolute` is `{}`; the longest a flow may live is 24h",
                    format_duration(absolute)
                ),
                "a reset takes minutes; the default is `15m`",
            );
        } else if absolute < idle {
            ok = false;
            self.error(
                self.doc.value_pos("/limits/absolute"),
                "limits",
                format!(
                    "`limits.absolute` (`{}`) is shorter than `limits.idle` (`{}`)",
                    format_duration(absolute),
                    format_duration(idle)
                ),
                "make `absolute` at least as long as `idle`",
            );
        }
        ok.then_some(FlowLimits { idle, absolute })
    }

    fn password(&mut self, raw: &RawWorkflow) -> Option<PasswordPolicy> {
        let p = &raw.password;
        let mut ok = true;
        if p.min_length > p.max_length {
            ok = false;
            self.error(
                self.doc.value_pos("/password/min_length"),
                "password-policy",
                format!(
                    "`password.min_length` ({}) is more than `password.max_length` ({})",
                    p.min_length, p.max_length
                ),
                "no password could be set; lower `min_length` or raise `max_length`",
            );
        }
        let mut blocklist = HashSet::new();
        let mut source = None;
        if let Some(rel) = &p.blocklist {
            let base = self.file.parent().unwrap_or(Path::new(""));
            let path = base.join(rel);
            match read_blocklist(&path) {
                Ok(set) => {
                    blocklist = set;
                    source = Some(path.display().to_string());
                }
                Err(reason) => {
                    ok = false;
                    self.error(
                        self.doc.value_pos("/password/blocklist"),
                        "blocklist",
                        format!("cannot read the blocklist {}: {reason}", path.display()),
                        "the path is relative to this workflow file; the file holds one password per line",
                    );
                }
            }
        }
        ok.then(|| PasswordPolicy {
            min_length: p.min_length,
            max_length: p.max_length,
            blocklist: Arc::new(blocklist),
            blocklist_source: source,
            reject_user_name: p.reject_user_name,
            must_change: p.must_change,
        })
    }

    fn sync_mode(&mut self, pointer: &str, s: &super::raw::RawSync) -> Option<SyncMode> {
        match s.mode {
            RawSyncMode::Async => {
                self.error(
                    self.doc.value_pos(&format!("{pointer}/mode")),
                    "async-unavailable",
                    format!(
                        "sync target `{}` uses `mode: async`, but asynchronous delivery (the durable, encrypted outbox) is not available yet in this version of resetgate",
                        s.id
                    ),
                    "use `mode: sync` with a `timeout` and `on_failure` for now",
                );
                None
            }
            RawSyncMode::Sync => {
                let timeout = s.timeout.map_or(Duration::from_secs(10), |t| t.0);
                if timeout < MIN_WALL || timeout > MAX_SYNC_TIMEOUT {
                    self.error(
                        self.doc.value_pos(&format!("{pointer}/timeout")),
                        "limits",
                        format!("sync target `{}` has a timeout of `{}`", s.id, format_duration(timeout)),
                        "a synchronous push holds up the reset: use 10ms to 5m (the default is `10s`)",
                    );
                    return None;
                }
                let on_failure = match s.on_failure.unwrap_or_default() {
                    RawOnFailure::Allow => OnFailure::Allow,
                    RawOnFailure::Deny => OnFailure::Deny,
                };
                Some(SyncMode::Sync {
                    timeout,
                    on_failure,
                })
            }
        }
    }

    /// Checks a step's grants and limits, loads its plugin and validates its
    /// config; `None` if anything is wrong (and reported).
    fn step(&mut self, src: StepSource<'_>) -> Option<Step> {
        let grants_ok = self.check_grants(&src);
        let limits = self.limits(&src);
        let plugin_pos = self.doc.value_pos(&format!("{}/plugin", src.pointer));
        let path = self.config.plugins.join(format!("{}.wasm", src.plugin));
        if !path.is_file() {
            self.missing_plugin(&src, plugin_pos, &path);
            return None;
        }
        let spec = LoadSpec {
            kind: Some(src.kind),
            grants: src.grants.clone(),
            limits: limits?,
        };
        let plugin = match self.host.load(&path, &spec) {
            Ok(p) => p,
            Err(e) => {
                self.load_error(&src, plugin_pos, e);
                return None;
            }
        };
        let config = src
            .config
            .cloned()
            .unwrap_or_else(|| Value::Object(Default::default()));
        let config_ok = self.plugin_config(&src, plugin_pos, &plugin, &config);
        self.unused_grants(&src, &plugin);
        self.plugin_warnings(&src, plugin_pos, &plugin);
        let text = serde_json::to_string(&config).ok()?;
        (grants_ok && config_ok).then(|| Step {
            id: src.id.clone(),
            path: display_path(&src.pointer),
            plugin_name: src.plugin.to_owned(),
            plugin,
            config: text,
            grants: src.grants.clone(),
            limits: spec.limits,
        })
    }

    /// Every named grant exists in the gateway config.
    fn check_grants(&mut self, src: &StepSource<'_>) -> bool {
        let config = self.config;
        let step = display_path(&src.pointer);
        let mut ok = true;
        let sections: [(&str, &str, &Vec<String>, Vec<&str>); 3] = [
            (
                "ldap",
                "LDAP connection",
                &src.grants.ldap,
                config.ldap.keys().map(String::as_str).collect(),
            ),
            (
                "secrets",
                "secret",
                &src.grants.secrets,
                config.secrets.keys().map(String::as_str).collect(),
            ),
            (
                "commands",
                "command",
                &src.grants.commands,
                config.commands.keys().map(String::as_str).collect(),
            ),
        ];
        for (key, noun, names, defined) in sections {
            for (i, name) in names.iter().enumerate() {
                if defined.contains(&name.as_str()) {
                    continue;
                }
                ok = false;
                let pos = self
                    .doc
                    .value_pos(&format!("{}/grants/{key}/{i}", src.pointer));
                let help = match did_you_mean(name, defined.iter().copied()) {
                    Some(s) => format!(
                        "did you mean `{s}`? a workflow can only grant what {} defines under `{key}`",
                        config.describe()
                    ),
                    None if defined.is_empty() => format!(
                        "define `{name}` under `{key}` in {}; a workflow cannot invent a {noun}",
                        config.describe()
                    ),
                    None => format!(
                        "define `{name}` under `{key}` in {}, or grant one it defines: {}",
                        config.describe(),
                        list(&defined)
                    ),
                };
                self.error(
                    pos,
                    "undefined-grant",
                    format!(
                        "`{step}` grants {noun} `{name}`, which the gateway config does not define"
                    ),
                    help,
                );
            }
        }
        for (i, origin) in src.grants.http.iter().enumerate() {
            if config.allows_origin(origin) {
                continue;
            }
            ok = false;
            let pos = self
                .doc
                .value_pos(&format!("{}/grants/http/{i}", src.pointer));
            self.error(
                pos,
                "undefined-grant",
                format!("`{step}` grants HTTP to `{origin}`, which the gateway config's `http_origins` does not list"),
                if config.http_origins.is_empty() {
                    format!("add it to `http_origins` in {}", config.describe())
                } else {
                    format!(
                        "add it to `http_origins` in {}, or grant one it lists: {}",
                        config.describe(),
                        list(&config.http_origins)
                    )
                },
            );
        }
        ok
    }

    fn limits(&mut self, src: &StepSource<'_>) -> Option<Limits> {
        let mut limits = Limits {
            wall_time: src.default_wall,
            ..Limits::default()
        };
        let mut ok = true;
        if let Some(w) = src.limits.wall_time {
            if w.0 < MIN_WALL || w.0 > MAX_WALL {
                ok = false;
                self.error(
                    self.doc
                        .value_pos(&format!("{}/limits/wall_time", src.pointer)),
                    "limits",
                    format!("`limits.wall_time` is `{w}`; a plugin call may take 10ms to 60s"),
                    "most plugins need well under `1s` (the default)",
                );
            }
            limits.wall_time = w.0;
        }
        if let Some(m) = src.limits.memory {
            if m.0 < MIN_MEMORY {
                ok = false;
                self.error(
                    self.doc
                        .value_pos(&format!("{}/limits/memory", src.pointer)),
                    "limits",
                    format!(
                        "`limits.memory` is {}; a plugin needs at least 1MiB",
                        super::units::format_size(m.0)
                    ),
                    "the default, `64MiB`, suits most plugins",
                );
            }
            limits.memory = m.0;
        }
        ok.then_some(limits)
    }

    fn missing_plugin(&mut self, src: &StepSource<'_>, pos: Pos, path: &Path) {
        let dir = &self.config.plugins;
        let help = match std::fs::read_dir(dir) {
            Err(_) => format!(
                "the plugins folder {} does not exist: build the plugins (`cargo xtask plugins`) or set `plugins:` in the gateway config",
                dir.display()
            ),
            Ok(entries) => {
                let mut have: Vec<String> = entries
                    .filter_map(|e| e.ok())
                    .filter_map(|e| {
                        let p = e.path();
                        (p.extension()? == "wasm")
                            .then(|| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
                            .flatten()
                    })
                    .collect();
                have.sort();
                match did_you_mean(src.plugin, have.iter().map(String::as_str)) {
                    Some(s) => format!("did you mean `{s}`?"),
                    None if have.is_empty() => "the plugins folder is empty".to_owned(),
                    None => format!("the plugins folder has {}", list(&have)),
                }
            }
        };
        self.error(
            pos,
            "plugin-missing",
            format!(
                "plugin `{}` not found: there is no {}",
                src.plugin,
                path.display()
            ),
            help,
        );
    }

    fn load_error(&mut self, src: &StepSource<'_>, pos: Pos, error: LoadError) {
        let name = src.plugin;
        let step = display_path(&src.pointer);
        match error {
            LoadError::WrongKind {
                expected, actual, ..
            } => self.error(
                pos,
                "plugin-kind",
                format!("plugin `{name}` is a {actual} plugin, but `{step}` needs a {expected} plugin"),
                format!("use a {expected} plugin here; a {actual} plugin belongs under `{}`", section(actual)),
            ),
            LoadError::CapabilityUnavailable { interface, .. } => self.error(
                pos,
                "plugin-grant",
                format!("plugin `{name}` needs the `{interface}` capability, which is not available yet in this version of resetgate"),
                "use a plugin that does without it",
            ),
            LoadError::Limits { reason, .. } => self.error(
                self.doc
                    .value_pos(&format!("{}/limits/memory", src.pointer)),
                "limits",
                format!("plugin `{name}`: {reason}"),
                "lower `limits.memory`",
            ),
            other => self.error(
                pos,
                "plugin-load",
                format!("plugin `{name}` cannot be loaded: {other}"),
                "rebuild the plugin against the contract's WIT (resetgate:plugin@0.2.x) for wasm32-wasip2, or check it with `resetgate plugin inspect`",
            ),
        }
    }

    /// Validates the step's config against the schema its plugin describes.
    fn plugin_config(
        &mut self,
        src: &StepSource<'_>,
        pos: Pos,
        plugin: &Plugin,
        config: &Value,
    ) -> bool {
        let info = plugin.info();
        let validator = match file::compile(&info.config_schema) {
            Ok(v) => v,
            Err(e) => {
                self.error(
                    pos,
                    "plugin-schema",
                    format!(
                        "plugin `{}` describes a config schema that cannot be used: {e}",
                        src.plugin
                    ),
                    "this is a bug in the plugin; ask its vendor for a fixed version",
                );
                return false;
            }
        };
        let prefix = format!("{}/config", src.pointer);
        let target = SchemaTarget {
            schema: &info.config_schema,
            doc: self.doc,
            file: self.file,
            prefix: &prefix,
            code: Some("plugin-config"),
            note: None,
        };
        let errors = schema_diagnostics(&validator, config, &target);
        let ok = errors.is_empty();
        self.diagnostics.extend(errors);
        ok
    }

    /// Warns about granted capabilities the plugin does not import.
    fn unused_grants(&mut self, src: &StepSource<'_>, plugin: &Plugin) {
        let granted: Vec<Capability> = Capability::ALL
            .into_iter()
            .filter(|c| src.grants.grants(*c))
            .collect();
        let warnings = lint::unused_grants(
            self.doc,
            self.file,
            &src.pointer,
            src.plugin,
            &granted,
            plugin.needs(),
        );
        self.diagnostics.extend(warnings);
    }

    /// Warns about what the plugin imports and will not get: capabilities
    /// the step does not grant (calls to them fail), WASI interfaces the
    /// host does not provide (they trap).
    fn plugin_warnings(&mut self, src: &StepSource<'_>, pos: Pos, plugin: &Plugin) {
        let name = src.plugin;
        let step = display_path(&src.pointer);
        for warning in plugin.warnings() {
            let diagnostic = match warning {
                LoadWarning::Ungranted {
                    interfaces, grants, ..
                } => Diagnostic::warning(
                    self.file,
                    pos,
                    "ungranted-import",
                    format!(
                        "plugin `{name}` imports {}, which `{step}` does not grant: its calls to {} will fail",
                        interfaces
                            .iter()
                            .map(|i| format!("`{i}`"))
                            .collect::<Vec<_>>()
                            .join(", "),
                        if interfaces.len() == 1 { "it" } else { "them" }
                    ),
                )
                .with_help(format!(
                    "if the plugin needs {}, add {} to the step; otherwise nothing to do (some toolchains import every capability of the world)",
                    if interfaces.len() == 1 { "it" } else { "them" },
                    grants
                        .iter()
                        .map(|g| format!("`{g}`"))
                        .collect::<Vec<_>>()
                        .join(" and ")
                )),
                LoadWarning::WasiNotProvided { imports, .. } => Diagnostic::warning(
                    self.file,
                    pos,
                    "wasi-not-provided",
                    format!(
                        "plugin `{name}` imports {}, which resetgate does not provide: a call to it stops the plugin's call",
                        imports.join(", ")
                    ),
                )
                .with_help(
                    "build the plugin without these interfaces (e.g. disable HTTP in the toolchain) if it never calls them",
                ),
            };
            self.diagnostics.push(diagnostic);
        }
    }
}

/// An optional part that was present but failed is a failure (`None`);
/// one that is absent is fine (`Some(None)`).
fn all_or_nothing<T>(part: Option<Option<T>>) -> Option<Option<T>> {
    match part {
        None => Some(None),
        Some(None) => None,
        Some(Some(t)) => Some(Some(t)),
    }
}

/// Where a plugin of `kind` goes in a workflow.
fn section(kind: PluginKind) -> &'static str {
    match kind {
        PluginKind::Gate => "gates",
        PluginKind::Lockout => "lockout",
        PluginKind::Directory => "directory",
        PluginKind::VpnHook => "vpn",
        PluginKind::SyncTarget => "sync",
    }
}

/// Reads a blocklist: one password per line, `#` comments and blank lines
/// skipped, each NFC-normalised and lowercased.
fn read_blocklist(path: &Path) -> Result<HashSet<String>, String> {
    let bytes = file::read_limited(path, MAX_BLOCKLIST_BYTES).map_err(|e| match e {
        file::ReadError::Io { source, .. } => source.to_string(),
        e => e.to_string(),
    })?;
    let text = String::from_utf8(bytes).map_err(|_| "it is not UTF-8".to_owned())?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.nfc().collect::<String>().to_lowercase())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_schemas_are_valid_and_compile() {
        for text in [SCHEMA, crate::config::SCHEMA] {
            let value: Value = serde_json::from_str(text).unwrap();
            jsonschema::meta::validate(&value).unwrap();
            file::compile(&value).unwrap();
        }
        assert!(schema().is_ok());
    }

    #[test]
    fn blocklists_are_normalised() {
        let dir = std::env::temp_dir().join(format!("resetgate-blocklist-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("list.txt");
        // "Cafe\u{301}" (decomposed) normalises to "café".
        std::fs::write(&path, "# comment\n\n  Password1 \nCafe\u{301}\n").unwrap();
        let set = read_blocklist(&path).unwrap();
        assert_eq!(set.len(), 2);
        assert!(set.contains("password1"));
        assert!(set.contains("caf\u{e9}"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
