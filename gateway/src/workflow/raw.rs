//! The serde mirror of a workflow file, exactly as written (defaults
//! filled in): what the loader checks and turns into a [`super::Workflow`].
//! It is deserialised only after the file passed the JSON Schema, so the
//! two agree; unknown fields are refused here too.

use serde::Deserialize;
use serde_json::Value;

use super::units::{HumanDuration, HumanSize};
use crate::plugin::Grants;

/// A workflow's `title:`: one text for every language, or texts by
/// language code.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawTitle {
    /// Shown whatever the language.
    One(String),
    /// By language code (`en`, `de`).
    ByLanguage(std::collections::BTreeMap<String, String>),
}

/// A workflow file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWorkflow {
    /// Always 1 (probed before the rest is read).
    pub version: u32,
    /// The workflow's name.
    pub name: String,
    /// For admins.
    #[serde(default)]
    pub description: Option<String>,
    /// For the people who use it: one text, or one per language.
    #[serde(default)]
    pub title: Option<RawTitle>,
    /// What it is for.
    #[serde(default)]
    pub purpose: RawPurpose,
    /// Flow time limits.
    #[serde(default)]
    pub limits: RawFlowLimits,
    /// The directory connector.
    pub directory: RawStep,
    /// The lockout rule.
    #[serde(default)]
    pub lockout: Option<RawStep>,
    /// The gates, in order.
    pub gates: Vec<RawGate>,
    /// The password policy.
    #[serde(default)]
    pub password: RawPassword,
    /// Sync targets, in order.
    #[serde(default)]
    pub sync: Vec<RawSync>,
    /// The VPN hook.
    #[serde(default)]
    pub vpn: Option<RawVpn>,
}

/// `purpose:`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RawPurpose {
    /// A self-service reset.
    #[default]
    Reset,
    /// Registration of gate data.
    Enrollment,
}

/// `limits:` of the flow.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFlowLimits {
    /// Since the last accepted request.
    #[serde(default = "default_idle")]
    pub idle: HumanDuration,
    /// Since the flow started.
    #[serde(default = "default_absolute")]
    pub absolute: HumanDuration,
}

impl Default for RawFlowLimits {
    fn default() -> Self {
        RawFlowLimits {
            idle: default_idle(),
            absolute: default_absolute(),
        }
    }
}

fn default_idle() -> HumanDuration {
    HumanDuration(std::time::Duration::from_secs(5 * 60))
}

fn default_absolute() -> HumanDuration {
    HumanDuration(std::time::Duration::from_secs(15 * 60))
}

/// `limits:` of a plugin step.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPluginLimits {
    /// Wall time of one call.
    #[serde(default)]
    pub wall_time: Option<HumanDuration>,
    /// Linear memory.
    #[serde(default)]
    pub memory: Option<HumanSize>,
}

/// A step without an id: `directory:`, `lockout:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStep {
    /// The plugin's name (`<plugins>/<name>.wasm`).
    pub plugin: String,
    /// Its config (checked against the plugin's schema).
    #[serde(default)]
    pub config: Option<Value>,
    /// What it is granted.
    #[serde(default)]
    pub grants: Grants,
    /// Its call limits.
    #[serde(default)]
    pub limits: RawPluginLimits,
}

/// `enrollment:` of a gate.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RawEnrollment {
    /// Needs registered data.
    #[default]
    Required,
    /// Works from directory data alone.
    None,
}

/// One of `gates:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGate {
    /// The step id.
    pub id: String,
    /// The plugin's name.
    pub plugin: String,
    /// Its config.
    #[serde(default)]
    pub config: Option<Value>,
    /// What it is granted.
    #[serde(default)]
    pub grants: Grants,
    /// Its call limits.
    #[serde(default)]
    pub limits: RawPluginLimits,
    /// Whether it needs registered data.
    #[serde(default)]
    pub enrollment: RawEnrollment,
    /// Most rounds per pass.
    #[serde(default = "default_rounds")]
    pub max_rounds: u32,
}

fn default_rounds() -> u32 {
    3
}

/// `password:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPassword {
    /// Minimum length in code points.
    #[serde(default = "default_min")]
    pub min_length: u32,
    /// Maximum length in code points.
    #[serde(default = "default_max")]
    pub max_length: u32,
    /// Blocklist file, relative to the workflow file.
    #[serde(default)]
    pub blocklist: Option<String>,
    /// Refuse passwords containing the user name.
    #[serde(default = "yes")]
    pub reject_user_name: bool,
    /// The directory forces a change at the next logon.
    #[serde(default)]
    pub must_change: bool,
}

impl Default for RawPassword {
    fn default() -> Self {
        RawPassword {
            min_length: default_min(),
            max_length: default_max(),
            blocklist: None,
            reject_user_name: true,
            must_change: false,
        }
    }
}

fn default_min() -> u32 {
    15
}

fn default_max() -> u32 {
    64
}

fn yes() -> bool {
    true
}

/// `mode:` of a sync target.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RawSyncMode {
    /// In the request.
    Sync,
    /// Through the outbox.
    Async,
}

/// `on_failure:` of a sync target.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RawOnFailure {
    /// The reset still succeeds.
    Allow,
    /// The reset is reported as failed.
    #[default]
    Deny,
}

/// `retry:` of an async sync target.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRetry {
    /// Attempts before giving up.
    #[serde(default = "default_attempts")]
    pub max_attempts: u32,
    /// First retry delay.
    #[serde(default = "default_initial")]
    pub initial_backoff: HumanDuration,
    /// Longest retry delay.
    #[serde(default = "default_max_backoff")]
    pub max_backoff: HumanDuration,
}

impl Default for RawRetry {
    fn default() -> Self {
        RawRetry {
            max_attempts: default_attempts(),
            initial_backoff: default_initial(),
            max_backoff: default_max_backoff(),
        }
    }
}

fn default_attempts() -> u32 {
    10
}

fn default_initial() -> HumanDuration {
    HumanDuration(std::time::Duration::from_secs(1))
}

fn default_max_backoff() -> HumanDuration {
    HumanDuration(std::time::Duration::from_secs(5 * 60))
}

/// One of `sync:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSync {
    /// The step id.
    pub id: String,
    /// The plugin's name.
    pub plugin: String,
    /// Its config.
    #[serde(default)]
    pub config: Option<Value>,
    /// What it is granted.
    #[serde(default)]
    pub grants: Grants,
    /// Its call limits.
    #[serde(default)]
    pub limits: RawPluginLimits,
    /// How it is delivered to.
    pub mode: RawSyncMode,
    /// `sync` only: how long the push may take.
    #[serde(default)]
    pub timeout: Option<HumanDuration>,
    /// `sync` only: what a failure means.
    #[serde(default)]
    pub on_failure: Option<RawOnFailure>,
    /// `async` only: retries.
    #[serde(default)]
    pub retry: Option<RawRetry>,
}

/// `vpn:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawVpn {
    /// The plugin's name.
    pub plugin: String,
    /// Its config.
    #[serde(default)]
    pub config: Option<Value>,
    /// What it is granted.
    #[serde(default)]
    pub grants: Grants,
    /// Its call limits.
    #[serde(default)]
    pub limits: RawPluginLimits,
    /// When it runs.
    pub mode: RawVpnMode,
}

/// `mode:` of the VPN hook.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RawVpnMode {
    /// After a successful reset.
    Partial,
    /// Before the flow, when the directory is unreachable.
    Full,
}
