//! Host capabilities a plugin can call, and the records every kind shares.
//!
//! `log`, `clock`, `random` and `slow_hash` are always available. The others
//! (`http`, `ldap`, `secrets`, `commands`, `probe`, `kv`) need a grant in the
//! workflow step that uses the plugin; the gateway refuses to load a plugin
//! whose component imports a capability its step does not grant, so import
//! only what you use.

use crate::bindings::base::resetgate::plugin as wit;

pub use wit::types::{CallContext, PluginError, PluginInfo, PluginKind, User};

/// The new password (or another secret) as a handle the host owns.
pub use wit::credential::Secret;

impl PluginInfo {
    /// Describes a plugin whose config is any JSON object.
    pub fn new(name: &str, version: &str, kind: PluginKind, summary: &str) -> Self {
        PluginInfo {
            name: name.to_owned(),
            version: version.to_owned(),
            kind,
            config_schema: r#"{"type":"object"}"#.to_owned(),
            summary: summary.to_owned(),
        }
    }

    /// Sets the JSON Schema (2020-12, as JSON text) of the plugin's config.
    pub fn with_config_schema(mut self, schema: &str) -> Self {
        self.config_schema = schema.to_owned();
        self
    }
}

impl CallContext {
    /// The step's config parsed by `parse`, e.g. `ctx.config_with(|s| serde_json::from_str(s))`.
    pub fn config_with<T, E>(
        &self,
        parse: impl FnOnce(&str) -> Result<T, E>,
    ) -> Result<T, PluginError>
    where
        E: core::fmt::Display,
    {
        parse(&self.config).map_err(|e| PluginError::BadConfig(e.to_string()))
    }
}

impl User {
    /// The value of the first attribute called `name`, if any.
    pub fn attribute(&self, name: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Writing to the gateway's log. Lines are tagged with the plugin and flow.
/// Never log a secret: the gateway cannot tell one apart.
pub mod log {
    use crate::bindings::base::resetgate::plugin::log::{Level, write};

    /// Logs at debug level.
    pub fn debug(message: &str) {
        write(Level::Debug, message)
    }
    /// Logs at info level.
    pub fn info(message: &str) {
        write(Level::Info, message)
    }
    /// Logs at warn level.
    pub fn warn(message: &str) {
        write(Level::Warn, message)
    }
    /// Logs at error level.
    pub fn error(message: &str) {
        write(Level::Error, message)
    }
}

/// Clocks. Decide with [`CallContext::now_ms`] instead where you can, so a
/// flow replays the same way.
pub mod clock {
    pub use crate::bindings::base::resetgate::plugin::clock::{monotonic_ns, now_ms};
}

/// Randomness from the host's CSPRNG.
pub mod random {
    pub use crate::bindings::base::resetgate::plugin::random::{below, bytes};
}

/// Salted slow hashing (argon2id) done by the host; store only its output.
pub mod slow_hash {
    pub use crate::bindings::base::resetgate::plugin::slow_hash::{hash, verify};
}

/// Outgoing HTTP to granted origins (grant `http`).
pub mod http {
    pub use crate::bindings::base::resetgate::plugin::http::*;
}

/// LDAP over connections the admin defined (grant `ldap`).
pub mod ldap {
    pub use crate::bindings::base::resetgate::plugin::ldap::*;
}

/// Named secrets the host injects (grant `secrets`).
pub mod secrets {
    pub use crate::bindings::base::resetgate::plugin::secrets::available;
}

/// Allow-listed commands (grant `commands`).
pub mod commands {
    pub use crate::bindings::base::resetgate::plugin::commands::*;
}

/// TCP reachability probes (grant `probe`).
pub mod probe {
    pub use crate::bindings::base::resetgate::plugin::probe::tcp_reachable;
}

/// A key-value store scoped to the plugin (grant `kv`).
pub mod kv {
    pub use crate::bindings::base::resetgate::plugin::kv::{delete, get, keys, set};
}
