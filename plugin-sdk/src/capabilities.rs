//! Host capabilities a plugin can call, and the records every kind shares.
//!
//! `log`, `clock`, `locale`, `random` and `slow_hash` are always available. The others
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

    /// The language the person uses in this call's flow (`en`, `de`, ...):
    /// see [`locale::language`]. Needs a gateway speaking 0.2.1 or later.
    pub fn language(&self) -> String {
        locale::language()
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

/// The person's language, so that what they read can be localised
/// (contract 0.2.1). Always available.
pub mod locale {
    /// The language of the call's flow, a lowercase ISO 639-1 code (`en`,
    /// `de`, ...); `en` outside a flow.
    pub use crate::bindings::base::resetgate::plugin::locale::language;

    /// The text for `language` among `texts` (pairs of a language code and
    /// its text), else the English one, else the first; `""` when `texts`
    /// is empty.
    ///
    /// ```
    /// use resetgate_plugin_sdk::locale::pick;
    /// let texts = [("en", "Enter the code"), ("de", "Geben Sie den Code ein")];
    /// assert_eq!(pick("de", &texts), "Geben Sie den Code ein");
    /// assert_eq!(pick("fr", &texts), "Enter the code");
    /// ```
    pub fn pick<'a>(language: &str, texts: &[(&str, &'a str)]) -> &'a str {
        texts
            .iter()
            .find(|(l, _)| *l == language)
            .or_else(|| texts.iter().find(|(l, _)| *l == "en"))
            .or_else(|| texts.first())
            .map_or("", |(_, t)| t)
    }
}

/// Randomness from the host's CSPRNG.
pub mod random {
    pub use crate::bindings::base::resetgate::plugin::random::{below, bytes};
}

/// Salted slow hashing (argon2id, 19 MiB, t=2, p=1) done by the host;
/// store only its output. Always available.
///
/// For a secret the host hands you as a [`Secret`] handle (a directory's
/// new password or the password a user typed), use
/// [`hash_secret`](slow_hash::hash_secret) and
/// [`verify_secret`](slow_hash::verify_secret): the secret is hashed
/// without ever being revealed to the plugin.
pub mod slow_hash {
    use crate::Secret;
    use crate::bindings::base::resetgate::plugin::slow_hash as wit;

    /// Hashes `secret` with a fresh random salt; returns a PHC string to
    /// store. An input over 1024 bytes stops the call.
    pub fn hash(secret: &str) -> String {
        wit::hash(secret)
    }

    /// Whether `secret` matches `phc` (made by [`hash`] or
    /// [`hash_secret`]). Constant time; `false` for an unreadable `phc`.
    pub fn verify(secret: &str, phc: &str) -> bool {
        wit::verify(secret, phc)
    }

    /// Hashes the secret the host holds behind `secret` (e.g. the new
    /// password in `Directory::set_password`) with a fresh random salt;
    /// returns a PHC string to store. The plugin never sees the secret.
    ///
    /// ```no_run
    /// # fn store(_: &str) {}
    /// # fn f(password: &resetgate_plugin_sdk::Secret) {
    /// use resetgate_plugin_sdk::slow_hash;
    /// let phc = slow_hash::hash_secret(password);
    /// store(&phc);
    /// # }
    /// ```
    pub fn hash_secret(secret: &Secret) -> String {
        wit::hash_secret(secret)
    }

    /// Whether the secret the host holds behind `secret` (e.g. the password
    /// in `Directory::verify_password`) matches `phc` (made by [`hash`] or
    /// [`hash_secret`]). Constant time; `false` for an unreadable `phc`.
    pub fn verify_secret(secret: &Secret, phc: &str) -> bool {
        wit::verify_secret(secret, phc)
    }
}

/// Outgoing HTTP to granted origins (grant `http`).
pub mod http {
    pub use crate::bindings::base::resetgate::plugin::http::*;
}

/// LDAP over connections the admin defined (grant `ldap`), and the escaping
/// every name a user typed needs before it goes into a filter or a DN.
pub mod ldap {
    pub use crate::bindings::base::resetgate::plugin::ldap::*;

    /// `value` escaped for use as an assertion value in a search filter
    /// (RFC 4515 section 3): `*`, `(`, `)`, `\` and NUL become `\2a`,
    /// `\28`, `\29`, `\5c` and `\00`, so that nothing a user types can
    /// widen or end the filter. Other characters (UTF-8 included) pass.
    ///
    /// ```
    /// use resetgate_plugin_sdk::ldap::escape_filter_value;
    /// assert_eq!(escape_filter_value("a*)(uid=*"), r"a\2a\29\28uid=\2a");
    /// ```
    pub fn escape_filter_value(value: &str) -> String {
        let mut out = String::with_capacity(value.len());
        for c in value.chars() {
            match c {
                '*' => out.push_str("\\2a"),
                '(' => out.push_str("\\28"),
                ')' => out.push_str("\\29"),
                '\\' => out.push_str("\\5c"),
                '\0' => out.push_str("\\00"),
                c => out.push(c),
            }
        }
        out
    }

    /// `value` escaped for use as an attribute value in a distinguished name
    /// (RFC 4514 section 2.4): `"`, `+`, `,`, `;`, `<`, `=`, `>` and `\`
    /// get a backslash, a leading `#` or space and a trailing space too, and
    /// NUL becomes `\00`.
    ///
    /// ```
    /// use resetgate_plugin_sdk::ldap::escape_dn_value;
    /// assert_eq!(escape_dn_value("#Doe, John+"), r"\#Doe\, John\+");
    /// ```
    pub fn escape_dn_value(value: &str) -> String {
        let mut out = String::with_capacity(value.len());
        let last = value.chars().count().saturating_sub(1);
        for (i, c) in value.chars().enumerate() {
            match c {
                '"' | '+' | ',' | ';' | '<' | '=' | '>' | '\\' => {
                    out.push('\\');
                    out.push(c);
                }
                '#' | ' ' if i == 0 => {
                    out.push('\\');
                    out.push(c);
                }
                ' ' if i == last => out.push_str("\\ "),
                '\0' => out.push_str("\\00"),
                c => out.push(c),
            }
        }
        out
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn filter_values_cannot_widen_a_filter() {
            assert_eq!(escape_filter_value("*"), "\\2a");
            assert_eq!(escape_filter_value("a\\b"), "a\\5cb");
            assert_eq!(escape_filter_value("x\0y"), "x\\00y");
            assert_eq!(
                escape_filter_value("(|(uid=*))"),
                "\\28|\\28uid=\\2a\\29\\29"
            );
            assert_eq!(escape_filter_value("Zoë"), "Zoë");
        }

        #[test]
        fn dn_values_are_escaped_as_rfc_4514_says() {
            assert_eq!(escape_dn_value("a,b=c+d"), "a\\,b\\=c\\+d");
            assert_eq!(escape_dn_value(" x "), "\\ x\\ ");
            assert_eq!(escape_dn_value("#x#"), "\\#x#");
            assert_eq!(escape_dn_value("a\0b"), "a\\00b");
            assert_eq!(escape_dn_value("<\"\\;>"), "\\<\\\"\\\\\\;\\>");
            assert_eq!(escape_dn_value(""), "");
        }
    }
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

/// A durable key-value store of the plugin's own (grant `kv: true`).
///
/// The namespace is the plugin's name as workflows reference it (`NAME` of
/// `NAME.wasm`): every workflow that uses the plugin sees the same keys, and
/// no other plugin does. `set` and `delete` are durable when they return.
/// Keys are at most 256 bytes, values at most 64 KiB, and `keys` returns at
/// most 1000 keys per call; asking for more stops the call.
pub mod kv {
    pub use crate::bindings::base::resetgate::plugin::kv::{delete, get, keys, set};
}
