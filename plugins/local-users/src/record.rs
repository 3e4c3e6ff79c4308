//! The record of one local user: the one definition of the format that the
//! `local-users` plugin keeps in its `kv` namespace and that `resetgate users`
//! reads and writes. This file is compiled into both (the gateway includes
//! it by path), so the two cannot disagree.
//!
//! - Namespace: the plugin's name as workflows reference it, [`NAMESPACE`]
//!   by default (`resetgate users --plugin NAME` for a renamed copy).
//! - Key: `user/` followed by the normalised name ([`normalise`]: trimmed,
//!   lowercased; no Unicode normalisation beyond that).
//! - Value: one JSON object (UTF-8), for example
//!
//!   ```json
//!   {"v":1,"id":"u-3f9a0c1d5e7b2a64","name":"alice","display_name":"Alice Liddell",
//!    "attributes":{"employee_id":"12345"},
//!    "password":"$argon2id$v=19$m=19456,t=2,p=1$...","disabled":false,"must_change":false}
//!   ```
//!
//!   `v` is the format version (1); `id` is the stable id the gateway keys
//!   lockout history and enrollments by; `name` is the normalised name;
//!   `display_name` and `password` may be absent; `password` is an argon2id
//!   PHC string made by the host (`slow-hash`), never a password;
//!   `attributes` are what gates see (a JSON object, sorted by key).
//!   Unknown fields are refused, so a record from a later format is never
//!   half-read and written back without what it did not understand.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// The namespace of the plugin as the first-party build names it.
pub const NAMESPACE: &str = "local-users";
/// What every user's key starts with.
pub const KEY_PREFIX: &str = "user/";
/// The format version this code reads and writes.
pub const VERSION: u32 = 1;
/// The longest normalised name, in bytes (the `kv` key limit is 256).
pub const MAX_NAME: usize = 256 - KEY_PREFIX.len();

/// A user name as it is keyed: trimmed and lowercased.
pub fn normalise(name: &str) -> String {
    name.trim().to_lowercase()
}

/// The key of the user called `name` (normalised here), or `None` if the
/// normalised name is empty or longer than [`MAX_NAME`].
pub fn key(name: &str) -> Option<String> {
    let name = normalise(name);
    (!name.is_empty() && name.len() <= MAX_NAME).then(|| format!("{KEY_PREFIX}{name}"))
}

/// One local user. Not `Debug`: it holds a password hash.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalUser {
    /// The format version, [`VERSION`].
    pub v: u32,
    /// Stable identifier.
    pub id: String,
    /// The normalised name (the key without [`KEY_PREFIX`]).
    pub name: String,
    /// The name shown to people, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// Attributes gates may check (e.g. `employee_id`), by name.
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
    /// argon2id PHC string of the password; `None`: no password works.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// A disabled user is unknown to the directory.
    #[serde(default)]
    pub disabled: bool,
    /// The password must be changed at next logon.
    #[serde(default)]
    pub must_change: bool,
}

/// Why a stored record could not be read or written. Never quotes the
/// record (it may hold a password hash).
#[derive(Debug)]
pub enum RecordError {
    /// Not the JSON this format describes: what kind of problem, and where.
    Json(String),
    /// Written by another version of the format.
    Version(u32),
}

impl fmt::Display for RecordError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecordError::Json(e) => write!(f, "not a local-users record: {e}"),
            RecordError::Version(v) => write!(
                f,
                "local-users record version {v}; this code reads version {VERSION}"
            ),
        }
    }
}

impl std::error::Error for RecordError {}

/// A JSON error without serde's text, which can quote the input.
fn json_error(e: &serde_json::Error) -> RecordError {
    let what = match e.classify() {
        serde_json::error::Category::Io => "i/o error",
        serde_json::error::Category::Syntax => "invalid JSON",
        serde_json::error::Category::Data => "unexpected fields or values",
        serde_json::error::Category::Eof => "truncated JSON",
    };
    RecordError::Json(format!("{what} at line {} column {}", e.line(), e.column()))
}

impl LocalUser {
    /// A record at [`VERSION`] with no password, enabled.
    pub fn new(id: String, name: &str) -> LocalUser {
        LocalUser {
            v: VERSION,
            id,
            name: normalise(name),
            display_name: None,
            attributes: BTreeMap::new(),
            password: None,
            disabled: false,
            must_change: false,
        }
    }

    /// Reads a stored value.
    pub fn decode(bytes: &[u8]) -> Result<LocalUser, RecordError> {
        let user: LocalUser = serde_json::from_slice(bytes).map_err(|e| json_error(&e))?;
        if user.v != VERSION {
            return Err(RecordError::Version(user.v));
        }
        Ok(user)
    }

    /// The value to store.
    pub fn encode(&self) -> Result<Vec<u8>, RecordError> {
        serde_json::to_vec(self).map_err(|e| json_error(&e))
    }

    /// The key the record is stored under.
    pub fn key(&self) -> String {
        format!("{KEY_PREFIX}{}", self.name)
    }

    /// The attributes a directory reports: the record's, plus
    /// `display_name` when set and not an attribute already.
    pub fn reported_attributes(&self) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = self
            .attributes
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if let Some(d) = &self.display_name
            && !self.attributes.contains_key("display_name")
        {
            out.push(("display_name".to_owned(), d.clone()));
        }
        out
    }
}
