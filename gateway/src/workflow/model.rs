//! A validated workflow: what the engine runs. Built from a YAML file by
//! `workflow::load` once everything in it is known to be right (schema,
//! plugins, their configs, grants); nothing here is re-checked at run time.

use std::sync::Arc;
use std::time::Duration;

use crate::contract::PluginKind;
use crate::plugin::{Grants, Limits, Plugin};

/// What a workflow is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purpose {
    /// Self-service reset: pass the gates, then set a new password.
    Reset,
    /// Registration of gate data, after proving the current password.
    Enrollment,
}

/// A workflow step that runs a plugin.
#[derive(Clone)]
pub struct Step {
    /// The step's id, unique in the workflow (e.g. `question`), used in
    /// audit records and as the key of enrollment data.
    pub id: String,
    /// Where the step is in the file, e.g. `gates[0]`.
    pub path: String,
    /// The plugin's name as the workflow wrote it (its file is `<name>.wasm`).
    pub plugin_name: String,
    /// The loaded plugin, of the kind the step needs.
    pub plugin: Plugin,
    /// The step's config as JSON text, valid against the plugin's schema.
    pub config: String,
    /// What the step grants.
    pub grants: Grants,
    /// Limits of each call.
    pub limits: Limits,
}

impl std::fmt::Debug for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Step")
            .field("id", &self.id)
            .field("path", &self.path)
            .field("plugin", &self.plugin_name)
            .field("kind", &self.plugin.kind())
            .finish()
    }
}

/// Whether a gate needs the user's registered data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Enrollment {
    /// The gate works from directory data alone (e.g. a code to `mail`).
    None,
    /// The gate needs registered data; an unregistered user fails it
    /// (with the same prompt and timing as a registered one).
    Required,
}

/// One identity gate of a reset workflow.
#[derive(Clone, Debug)]
pub struct Gate {
    /// The plugin step.
    pub step: Step,
    /// Whether it needs registered data.
    pub enrollment: Enrollment,
    /// The most rounds one pass through the gate may take.
    pub max_rounds: u32,
}

/// The built-in password policy (NIST SP 800-63B-4 / OWASP ASVS 5.0 V6.2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PasswordPolicy {
    /// Minimum length in Unicode code points (after NFC normalisation).
    pub min_length: u32,
    /// Maximum length in code points; longer is refused, never truncated.
    pub max_length: u32,
    /// Refused passwords, compared after NFC normalisation and lowercasing.
    pub blocklist: Arc<std::collections::HashSet<String>>,
    /// Where the blocklist came from, for messages.
    pub blocklist_source: Option<String>,
    /// Refuse passwords that contain the user name (case-insensitive).
    pub reject_user_name: bool,
    /// Ask the directory to force a change at the next logon (OpenLDAP
    /// `pwdReset`, Active Directory `pwdLastSet=0`): the new password is a
    /// temporary one.
    pub must_change: bool,
}

/// When a synchronous sync target fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnFailure {
    /// The reset still succeeds; the receipt shows the failure.
    Allow,
    /// The reset is reported as failed and the receipt names the target.
    /// Sync targets run after the directory accepted the password, so the
    /// directory keeps it; `deny` targets run before any `allow` target.
    Deny,
}

/// How a sync target is delivered to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SyncMode {
    /// In the request, within `timeout`.
    Sync {
        /// How long the push may take.
        timeout: Duration,
        /// What a failure means for the reset.
        on_failure: OnFailure,
    },
    /// Through the durable, encrypted outbox with retries (a later issue:
    /// until then a workflow with an async target is refused at load).
    Async {
        /// Attempts before giving up.
        max_attempts: u32,
        /// First retry delay; doubles up to `max_backoff`.
        initial_backoff: Duration,
        /// Longest retry delay.
        max_backoff: Duration,
    },
}

/// A password sync target.
#[derive(Clone, Debug)]
pub struct SyncTarget {
    /// The plugin step.
    pub step: Step,
    /// How it is delivered to.
    pub mode: SyncMode,
}

/// When the VPN hook runs (the seed's partial and full modes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VpnMode {
    /// After a successful reset, so the workstation refreshes its cached password.
    Partial,
    /// Before the flow, when the directory is unreachable.
    Full,
}

/// The VPN hook.
#[derive(Clone, Debug)]
pub struct Vpn {
    /// The plugin step.
    pub step: Step,
    /// When it runs.
    pub mode: VpnMode,
}

/// Time limits of a flow (ASVS 7.3.1–2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowLimits {
    /// Since the last accepted request.
    pub idle: Duration,
    /// Since the flow started.
    pub absolute: Duration,
}

/// A workflow's title for end users: one text for every language, or texts
/// by language code (one of [`crate::i18n::LANGUAGES`], English among them).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Title {
    /// The same text in every language.
    One(String),
    /// Texts by language code; always has `en`.
    ByLanguage(std::collections::BTreeMap<String, String>),
}

impl Title {
    /// The text for `language`, else the English one.
    pub fn pick(&self, language: &str) -> &str {
        match self {
            Title::One(text) => text,
            Title::ByLanguage(texts) => texts
                .get(language)
                .or_else(|| texts.get(crate::i18n::FALLBACK))
                .map_or("", String::as_str),
        }
    }
}

/// A validated workflow.
#[derive(Clone, Debug)]
pub struct Workflow {
    /// Its name (unique among loaded workflows).
    pub name: String,
    /// One or two sentences for admins.
    pub description: Option<String>,
    /// What the people who use it read in a portal's list of workflows.
    pub title: Option<Title>,
    /// sha256 of the file, hex: a running flow finishes on the version it started with.
    pub version: String,
    /// The file it came from.
    pub source: String,
    /// What it is for.
    pub purpose: Purpose,
    /// The directory connector.
    pub directory: Step,
    /// The lockout rule, if any.
    pub lockout: Option<Step>,
    /// The gates, in order (for `Enrollment`: the gates whose data is registered).
    pub gates: Vec<Gate>,
    /// The password policy (reset workflows).
    pub password: PasswordPolicy,
    /// Sync targets, in order.
    pub sync: Vec<SyncTarget>,
    /// The VPN hook, if any.
    pub vpn: Option<Vpn>,
    /// Flow time limits.
    pub limits: FlowLimits,
}

impl Workflow {
    /// Every plugin step of the workflow, with the kind it must be.
    pub fn steps(&self) -> impl Iterator<Item = (&Step, PluginKind)> {
        std::iter::once((&self.directory, PluginKind::Directory))
            .chain(self.lockout.iter().map(|s| (s, PluginKind::Lockout)))
            .chain(self.gates.iter().map(|g| (&g.step, PluginKind::Gate)))
            .chain(self.sync.iter().map(|s| (&s.step, PluginKind::SyncTarget)))
            .chain(self.vpn.iter().map(|v| (&v.step, PluginKind::VpnHook)))
    }
}
