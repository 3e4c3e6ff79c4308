//! The `secrets` capability: named secrets the gateway config defines, read
//! from a file only the gateway's user can read or from an environment
//! variable, at start and on `SIGHUP`.
//!
//! A plugin never reads a secret. It names one where a capability accepts
//! it (an HTTP header's `secret-ref`), and the host writes the value on the
//! wire; the gateway itself uses them for LDAP bind passwords and the data
//! key. `secrets.available` only says whether a granted secret is set.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use wasmtime::Result as WasmResult;

use super::bindings::base::resetgate::plugin as wit;
use super::grants::Capability;
use super::state::HostState;
use crate::config::SecretSource;
use crate::secret::Secret;

/// The largest secret file read, in bytes.
pub const MAX_SECRET_FILE: u64 = 64 << 10;

/// Why a secret could not be read. Never carries the secret's value.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SecretsError {
    /// The file could not be read.
    #[error("secret `{name}`: cannot read {}: {reason}", path.display())]
    Read {
        /// The secret's name.
        name: String,
        /// Its file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The file may be read or written by someone other than the gateway's user.
    #[error(
        "secret `{name}`: {} has mode {mode:04o}; a secret file must be readable by its owner only \
         (fix: `chmod 600 {}`)",
        path.display(),
        path.display()
    )]
    Permissions {
        /// The secret's name.
        name: String,
        /// Its file.
        path: PathBuf,
        /// The file's permission bits.
        mode: u32,
    },
    /// The file belongs to another user.
    #[error(
        "secret `{name}`: {} belongs to uid {owner}, not to the gateway's user (uid {euid}) \
         (fix: `chown {euid} {}`)",
        path.display(),
        path.display()
    )]
    Owner {
        /// The secret's name.
        name: String,
        /// Its file.
        path: PathBuf,
        /// The file's owner.
        owner: u32,
        /// The gateway's effective user.
        euid: u32,
    },
    /// The environment variable is not set or not UTF-8.
    #[error("secret `{name}`: the environment variable `{var}` is not set (or not UTF-8)")]
    Env {
        /// The secret's name.
        name: String,
        /// The variable.
        var: String,
    },
    /// The value is not UTF-8 text.
    #[error("secret `{name}`: {} is not UTF-8 text", path.display())]
    NotText {
        /// The secret's name.
        name: String,
        /// Its file.
        path: PathBuf,
    },
}

/// The named secrets, read. Cheap to share (`Arc`); replaced whole on
/// reload, so a call in flight keeps the values it started with.
#[derive(Default)]
pub struct Secrets {
    values: BTreeMap<String, Secret>,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secrets")
            .field("names", &self.values.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Secrets {
    /// No secrets (`resetgate check`, `plugin inspect`, tests).
    pub fn empty() -> Secrets {
        Secrets::default()
    }

    /// Reads every secret the config defines; every problem is reported.
    pub fn load(sources: &BTreeMap<String, SecretSource>) -> Result<Secrets, Vec<SecretsError>> {
        let mut values = BTreeMap::new();
        let mut errors = Vec::new();
        for (name, source) in sources {
            match read(name, source) {
                Ok(secret) => {
                    values.insert(name.clone(), secret);
                }
                Err(e) => errors.push(e),
            }
        }
        if errors.is_empty() {
            Ok(Secrets { values })
        } else {
            Err(errors)
        }
    }

    /// The value of the named secret, if the config defines it.
    pub fn get(&self, name: &str) -> Option<&Secret> {
        self.values.get(name)
    }

    /// The names of the secrets read.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.values.keys().map(String::as_str)
    }
}

/// Reads one secret: a file's content or a variable's value, without one
/// trailing newline (`\n` or `\r\n`), as editors and `echo` leave one.
pub fn read(name: &str, source: &SecretSource) -> Result<Secret, SecretsError> {
    let text = match source {
        SecretSource::Env(var) => std::env::var(var).map_err(|_| SecretsError::Env {
            name: name.to_owned(),
            var: var.clone(),
        })?,
        SecretSource::File(path) => read_file(name, path)?,
    };
    let mut text = zeroize::Zeroizing::new(text);
    if text.ends_with('\n') {
        text.pop();
        if text.ends_with('\r') {
            text.pop();
        }
    }
    Ok(Secret::new(std::mem::take(&mut *text)))
}

fn read_file(name: &str, path: &Path) -> Result<String, SecretsError> {
    use std::os::unix::fs::MetadataExt;
    let read_error = |reason: String| SecretsError::Read {
        name: name.to_owned(),
        path: path.to_owned(),
        reason,
    };
    let meta = std::fs::metadata(path).map_err(|e| read_error(e.to_string()))?;
    let mode = meta.mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(SecretsError::Permissions {
            name: name.to_owned(),
            path: path.to_owned(),
            mode,
        });
    }
    let euid = rustix::process::geteuid().as_raw();
    if meta.uid() != euid {
        return Err(SecretsError::Owner {
            name: name.to_owned(),
            path: path.to_owned(),
            owner: meta.uid(),
            euid,
        });
    }
    let bytes = crate::readfile::read_limited(path, MAX_SECRET_FILE)
        .map_err(|e| read_error(e.to_string()))?;
    String::from_utf8(bytes).map_err(|e| {
        // Wipe the bytes that were not text before dropping them.
        let mut bytes = e.into_bytes();
        zeroize::Zeroize::zeroize(&mut bytes);
        SecretsError::NotText {
            name: name.to_owned(),
            path: path.to_owned(),
        }
    })
}

impl wit::secrets::Host for HostState {
    fn available(&mut self, name: String) -> WasmResult<bool> {
        if !self.granted.has(Capability::Secrets) {
            return self.capability(Capability::Secrets, "available");
        }
        Ok(self.grants.secrets.contains(&name)
            && self
                .caps
                .secrets
                .get(&name)
                .is_some_and(|s| !s.expose().is_empty()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn file(dir: &Path, name: &str, text: &str, mode: u32) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    #[test]
    fn a_private_file_is_read_without_its_trailing_newline() {
        let dir = tempfile::tempdir().unwrap();
        let a = file(dir.path(), "a", "s3cret\n", 0o600);
        let b = file(dir.path(), "b", "crlf\r\n", 0o400);
        let sources = BTreeMap::from([
            ("a".to_owned(), SecretSource::File(a)),
            ("b".to_owned(), SecretSource::File(b)),
        ]);
        let secrets = Secrets::load(&sources).unwrap();
        assert_eq!(secrets.get("a").unwrap().expose(), "s3cret");
        assert_eq!(secrets.get("b").unwrap().expose(), "crlf");
        assert!(secrets.get("c").is_none());
        assert!(!format!("{secrets:?}").contains("s3cret"));
    }

    #[test]
    fn a_file_others_can_read_is_refused_with_the_fix_and_without_the_value() {
        let dir = tempfile::tempdir().unwrap();
        let a = file(dir.path(), "a", "canary-4417", 0o640);
        let sources = BTreeMap::from([("api".to_owned(), SecretSource::File(a.clone()))]);
        let errors = Secrets::load(&sources).unwrap_err();
        let text = errors[0].to_string();
        assert!(text.contains("mode 0640"), "{text}");
        assert!(
            text.contains(&format!("chmod 600 {}", a.display())),
            "{text}"
        );
        assert!(!text.contains("canary-4417"));
    }

    #[test]
    fn every_unreadable_secret_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let sources = BTreeMap::from([
            (
                "missing".to_owned(),
                SecretSource::File(dir.path().join("nope")),
            ),
            (
                "unset".to_owned(),
                SecretSource::Env("RESETGATE_TEST_SURELY_UNSET_VAR".to_owned()),
            ),
        ]);
        let errors = Secrets::load(&sources).unwrap_err();
        assert_eq!(errors.len(), 2);
        assert!(
            errors[0]
                .to_string()
                .starts_with("secret `missing`: cannot read")
        );
        assert!(
            errors[1]
                .to_string()
                .contains("RESETGATE_TEST_SURELY_UNSET_VAR")
        );
    }
}
