//! The plugin contract as the rest of the gateway sees it.
//!
//! These are the records of the WIT package `resetgate:plugin@0.2.1`
//! (`plugin-sdk/wit/plugin.wit`) as plain Rust types, free of any wasmtime
//! type, so the engine, the store and the HTTP layer can use them. The plugin
//! host converts between these and its generated bindings.

use serde::{Deserialize, Serialize};

use crate::secret::Secret;

/// The contract version this gateway speaks. Plugins built against any
/// `0.2.x` link; other versions are refused at load.
pub const CONTRACT_VERSION: &str = "0.2.1";

/// The kinds of plugin, one per WIT world.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PluginKind {
    /// An identity gate (`world gate`).
    Gate,
    /// A lockout rule (`world lockout`).
    Lockout,
    /// A directory connector (`world directory`).
    Directory,
    /// A VPN hook (`world vpn-hook`).
    VpnHook,
    /// A password sync target (`world sync-target`).
    SyncTarget,
}

impl PluginKind {
    /// Every kind, in contract order.
    pub const ALL: [PluginKind; 5] = [
        PluginKind::Gate,
        PluginKind::Lockout,
        PluginKind::Directory,
        PluginKind::VpnHook,
        PluginKind::SyncTarget,
    ];

    /// The WIT world's name, e.g. `vpn-hook`.
    pub fn world(self) -> &'static str {
        match self {
            PluginKind::Gate => "gate",
            PluginKind::Lockout => "lockout",
            PluginKind::Directory => "directory",
            PluginKind::VpnHook => "vpn-hook",
            PluginKind::SyncTarget => "sync-target",
        }
    }

    /// The interface the world exports, e.g. `vpn-hook-api`.
    pub fn export_interface(self) -> &'static str {
        match self {
            PluginKind::Gate => "gate-api",
            PluginKind::Lockout => "lockout-api",
            PluginKind::Directory => "directory-api",
            PluginKind::VpnHook => "vpn-hook-api",
            PluginKind::SyncTarget => "sync-target-api",
        }
    }
}

impl std::fmt::Display for PluginKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.world())
    }
}

/// What a plugin says about itself.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PluginInfo {
    /// Stable machine name.
    pub name: String,
    /// The plugin's own version.
    pub version: String,
    /// The world it was built for.
    pub kind: PluginKind,
    /// JSON Schema of its config.
    pub config_schema: serde_json::Value,
    /// One line for admins.
    pub summary: String,
}

/// Where a call comes from. Never carries a secret.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CallContext {
    /// The flow the call belongs to.
    pub flow_id: String,
    /// The workflow's name.
    pub workflow: String,
    /// The step that makes the call, e.g. `gates[0]`.
    pub step: String,
    /// The step's plugin config as JSON text.
    pub config: String,
    /// The flow's clock, ms since the Unix epoch.
    pub now_ms: u64,
    /// The person's language in the flow (`en`, `de`): what the plugin's
    /// `locale.language` returns. Empty outside a flow (read as `en`).
    pub language: String,
}

/// A directory user.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// Stable identifier (DN, GUID, ...).
    pub id: String,
    /// The name as the directory normalised it.
    pub name: String,
    /// Attributes gates may need.
    pub attributes: Vec<(String, String)>,
}

/// A failure a plugin reports. Its text is for the admin's log and audit
/// trail, never for an end user or a portal.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PluginFailure {
    /// The config cannot be used.
    #[error("bad config: {0}")]
    BadConfig(String),
    /// A system the plugin depends on is unreachable.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The request was refused.
    #[error("refused: {0}")]
    Refused(String),
    /// Anything else.
    #[error("internal: {0}")]
    Internal(String),
}

/// How a portal renders a field.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "type", content = "choices")]
pub enum FieldKind {
    /// One line of text.
    Text,
    /// Hidden input.
    Secret,
    /// A short one-time code.
    Code,
    /// One of the listed values.
    Choice(Vec<String>),
}

/// One input a gate asks for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Field {
    /// Key of the answer.
    pub name: String,
    /// What the person reads.
    pub label: String,
    /// How to render it.
    pub kind: FieldKind,
    /// Upper bound on the answer's length in code points.
    pub max_length: u32,
}

/// Something a portal shows without asking for input. It may show a secret
/// the person registers (a TOTP key), so its `Debug` gives the kind and
/// length only: a prompt never reaches a log line by accident.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "type", content = "text")]
pub enum Display {
    /// A paragraph of text.
    Text(String),
    /// Text to copy exactly, in a fixed-width font.
    Code(String),
    /// Text drawn as a QR code.
    QrCode(String),
}

impl std::fmt::Debug for Display {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (kind, text) = match self {
            Display::Text(t) => ("Text", t),
            Display::Code(t) => ("Code", t),
            Display::QrCode(t) => ("QrCode", t),
        };
        write!(f, "{kind}([{} bytes])", text.len())
    }
}

/// What a portal shows for one round of a gate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Prompt {
    /// Heading.
    pub title: String,
    /// Optional help line.
    pub help: Option<String>,
    /// Shown between the help and the fields.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub display: Vec<Display>,
    /// The inputs.
    pub fields: Vec<Field>,
}

/// One round of a gate: the prompt and the state the host keeps with the flow.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Round {
    /// What to show.
    pub prompt: Prompt,
    /// Opaque state handed back to the plugin with the answers.
    pub state: Vec<u8>,
}

/// A value typed into one field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldValue {
    /// The field's name.
    pub name: String,
    /// What was typed: treated as a secret.
    pub value: Secret,
}

/// A gate's judgement of answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Gate passed.
    Passed,
    /// Wrong; the reason is for the audit log only.
    Failed(String),
    /// Right so far; another round follows.
    AnotherRound(Round),
}

/// A user's failure history, as the host keeps it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    /// Failure times since the last success or unlock, oldest first.
    pub failures_ms: Vec<u64>,
    /// The last success, if any.
    pub last_success_ms: Option<u64>,
}

/// A lockout rule's decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Decision {
    /// May try.
    Allowed,
    /// Locked until this time (ms since the Unix epoch).
    LockedUntil(u64),
    /// Locked until an operator unlocks.
    LockedPermanently,
}

/// Why a directory did not set a password.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SetPasswordFailure {
    /// The directory's own password rule refused it.
    #[error("rejected by the directory's password policy: {0}")]
    RejectedByPolicy(String),
    /// Anything else.
    #[error(transparent)]
    Other(#[from] PluginFailure),
}

/// One password change for a sync target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    /// Same on every redelivery of one change.
    pub idempotency_key: String,
    /// Whose password changed.
    pub user: User,
    /// When the directory accepted it.
    pub changed_at_ms: u64,
}

/// Why a sync target did not take a change.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PushFailure {
    /// Worth retrying.
    #[error("retryable: {0}")]
    Retryable(String),
    /// Will never succeed.
    #[error("permanent: {0}")]
    Permanent(String),
}
