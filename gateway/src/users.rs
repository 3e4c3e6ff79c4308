//! `resetgate users add|list|remove`: manages the users of the `local-users`
//! directory plugin directly in the store, in the plugin's `kv` namespace,
//! with the record format the plugin itself uses ([`record`], one source
//! file compiled into both).
//!
//! sled lets one process open a database at a time, so these commands work
//! only while the gateway is stopped; against a running gateway they fail
//! with [`UsersError::GatewayRunning`], which points to `resetgate admin
//! users`, the same operations through the running gateway's admin API. Nothing here prints or returns a
//! password hash; a generated password is printed only when asked for.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::config::GatewayConfig;
use crate::plugin::{SlowHashError, hash_secret};
use crate::secret::Secret;
use crate::store::kv::{Kv, KvError};
use crate::store::{SledStore, Store, StoreError, StoreSpec};

#[path = "../../plugins/local-users/src/record.rs"]
pub mod record;

use record::LocalUser;

/// Characters of generated passwords: letters and digits without the ones
/// people confuse (`0`/`O`, `1`/`l`/`I`).
const PASSWORD_ALPHABET: &[u8] = b"abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
/// Length of generated passwords (about 116 bits).
const PASSWORD_LENGTH: usize = 20;
/// The most users `list` reads.
const LIST_MAX: usize = 1_000_000;

/// `resetgate users`: where the users are, and what to do.
#[derive(clap::Args, Debug)]
pub struct UsersArgs {
    /// The gateway config file; its data folder is used (default: built-in defaults).
    #[arg(long, env = "RESETGATE_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// The gateway's data folder (overrides the config; default .resetgate).
    #[arg(long, env = "RESETGATE_DATA_DIR", global = true)]
    pub data_dir: Option<PathBuf>,
    /// The directory plugin's name as workflows reference it (`NAME` of `NAME.wasm`).
    #[arg(long, default_value = record::NAMESPACE, global = true)]
    pub plugin: String,
    /// What to do.
    #[command(subcommand)]
    pub command: UsersCommand,
}

/// The `users` subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum UsersCommand {
    /// Adds a user (refuses an existing name unless --replace).
    Add(AddArgs),
    /// Lists the users: names, ids, attributes and flags (never password hashes).
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Removes a user.
    Remove {
        /// The user's name (trimmed and lowercased, as the plugin does).
        name: String,
    },
}

/// `resetgate users add`.
#[derive(clap::Args, Debug)]
pub struct AddArgs {
    /// The user's name (stored trimmed and lowercased, as the plugin looks it up).
    pub name: String,
    /// The name shown to people.
    #[arg(long)]
    pub display_name: Option<String>,
    /// An attribute gates may check, e.g. `--attr employee_id=12345` (repeatable).
    #[arg(long = "attr", value_name = "KEY=VALUE")]
    pub attrs: Vec<String>,
    /// Read the password from the first line of standard input.
    #[arg(long, conflicts_with = "random_password")]
    pub password_stdin: bool,
    /// Set a random password nobody knows (the user sets their own through a reset).
    #[arg(long)]
    pub random_password: bool,
    /// With --random-password: print the generated password on standard output.
    #[arg(long, requires = "random_password")]
    pub print_password: bool,
    /// The password must be changed at next logon.
    #[arg(long)]
    pub must_change: bool,
    /// Add the user disabled (the directory reports a disabled user as unknown).
    #[arg(long)]
    pub disabled: bool,
    /// Replace an existing user of that name (with a new id).
    #[arg(long)]
    pub replace: bool,
}

/// Why a `users` command failed. Never carries a password or a hash.
#[derive(Debug, thiserror::Error)]
pub enum UsersError {
    /// Another process (the gateway) holds the data folder's database.
    #[error(
        "the gateway is running on this data directory ({}); use `resetgate admin users ...` to manage the users through it (or stop it first)",
        path.display()
    )]
    GatewayRunning {
        /// The data folder.
        path: PathBuf,
    },
    /// The gateway config could not be read.
    #[error("the gateway config has errors:\n{0}")]
    Config(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The key-value namespace refused the operation.
    #[error(transparent)]
    Kv(#[from] KvError),
    /// `add` without `--replace` for a name that exists.
    #[error("user {0:?} already exists; use --replace to replace it")]
    Exists(String),
    /// `remove` of a name that does not exist.
    #[error("no user {0:?}")]
    NotFound(String),
    /// A name that cannot be a key.
    #[error("user name {name:?} is invalid: {why}")]
    BadName {
        /// The name given.
        name: String,
        /// Why it is refused.
        why: &'static str,
    },
    /// An `--attr` that is not `KEY=VALUE`, or a repeated key.
    #[error("attribute {0:?} is invalid: use KEY=VALUE with a non-empty key, each key once")]
    BadAttribute(String),
    /// The password from standard input is unusable.
    #[error("password from standard input: {0}")]
    Password(&'static str),
    /// Reading standard input or writing standard output failed.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// Hashing the password failed.
    #[error(transparent)]
    Hash(#[from] SlowHashError),
    /// A stored record could not be read or encoded.
    #[error("user {name:?}: {reason}")]
    Record {
        /// The user's key name.
        name: String,
        /// What is wrong (never the record's contents).
        reason: String,
    },
    /// The random source failed.
    #[error("os random source failed: {0}")]
    Random(String),
}

/// The users of one `local-users` namespace in an open store.
#[derive(Debug)]
pub struct Users {
    kv: Kv,
}

/// What [`Users::add`] stores.
#[derive(Debug, Default)]
pub struct NewUser {
    /// The name (normalised when stored).
    pub name: String,
    /// The name shown to people.
    pub display_name: Option<String>,
    /// Attributes by name.
    pub attributes: BTreeMap<String, String>,
    /// The password; `None`: no password works until one is set.
    pub password: Option<Secret>,
    /// The password must be changed at next logon.
    pub must_change: bool,
    /// Reported as unknown by the directory.
    pub disabled: bool,
}

/// Opens the store `spec` names; a sled database held by another process
/// is [`UsersError::GatewayRunning`]. (Several gateways and this command
/// may share a PostgreSQL store.)
pub fn open_spec(spec: &StoreSpec) -> Result<Arc<dyn Store>, UsersError> {
    crate::store::open(spec).map_err(|e| match e {
        StoreError::InUse { location } => UsersError::GatewayRunning {
            path: match spec {
                StoreSpec::Sled { dir } => dir.clone(),
                StoreSpec::Postgres(_) => PathBuf::from(location),
            },
        },
        other => UsersError::Store(other),
    })
}

/// Opens the sled store in `data_dir`; a database held by another process
/// is [`UsersError::GatewayRunning`].
pub fn open_store(data_dir: &Path) -> Result<SledStore, UsersError> {
    SledStore::open(data_dir).map_err(|e| match e {
        StoreError::InUse { .. } => UsersError::GatewayRunning {
            path: data_dir.to_owned(),
        },
        other => UsersError::Store(other),
    })
}

fn random_bytes(n: usize) -> Result<Vec<u8>, UsersError> {
    let mut buf = vec![0u8; n];
    getrandom::fill(&mut buf).map_err(|e| UsersError::Random(e.to_string()))?;
    Ok(buf)
}

/// A new user id: `u-` and 16 random hex digits.
fn new_id() -> Result<String, UsersError> {
    Ok(format!("u-{}", hex::encode(random_bytes(8)?)))
}

/// A random password of [`PASSWORD_LENGTH`] characters of [`PASSWORD_ALPHABET`].
pub fn random_password() -> Result<Secret, UsersError> {
    let n = PASSWORD_ALPHABET.len();
    // Rejection sampling: uniform, no modulo bias.
    let zone = 256 - (256 % n);
    let mut out = String::with_capacity(PASSWORD_LENGTH);
    while out.len() < PASSWORD_LENGTH {
        for b in random_bytes(PASSWORD_LENGTH)? {
            let b = usize::from(b);
            if b < zone && out.len() < PASSWORD_LENGTH {
                out.push(char::from(PASSWORD_ALPHABET[b % n]));
            }
        }
    }
    Ok(Secret::new(out))
}

/// The key name of `name`, or why it cannot be one.
fn checked_name(name: &str) -> Result<String, UsersError> {
    let bad = |why| UsersError::BadName {
        name: name.to_owned(),
        why,
    };
    let normalised = record::normalise(name);
    if normalised.is_empty() {
        return Err(bad("it is empty"));
    }
    if normalised.len() > record::MAX_NAME {
        return Err(bad("it is longer than 251 bytes"));
    }
    if normalised.chars().any(char::is_control) {
        return Err(bad("it contains control characters"));
    }
    Ok(normalised)
}

/// Parses `KEY=VALUE` attributes; a key given twice is refused.
pub fn parse_attributes(attrs: &[String]) -> Result<BTreeMap<String, String>, UsersError> {
    let mut out = BTreeMap::new();
    for a in attrs {
        let Some((k, v)) = a.split_once('=') else {
            return Err(UsersError::BadAttribute(a.clone()));
        };
        let k = k.trim();
        if k.is_empty() || out.insert(k.to_owned(), v.to_owned()).is_some() {
            return Err(UsersError::BadAttribute(a.clone()));
        }
    }
    Ok(out)
}

/// Reads one line of `input` as a password (without its line ending).
pub fn read_password(input: &mut dyn BufRead) -> Result<Secret, UsersError> {
    let mut buf = String::new();
    input.read_line(&mut buf)?;
    // Into a `Secret` at once, so that it is zeroised when dropped.
    let line = Secret::new(buf);
    let trimmed = line.expose().trim_end_matches(['\n', '\r']);
    if trimmed.is_empty() {
        return Err(UsersError::Password("empty"));
    }
    Ok(Secret::from(trimmed))
}

fn record_error(name: &str, e: record::RecordError) -> UsersError {
    UsersError::Record {
        name: name.to_owned(),
        reason: e.to_string(),
    }
}

impl Users {
    /// The users in `store`'s namespace `plugin` (a plugin name as
    /// workflows reference it, e.g. [`record::NAMESPACE`]).
    pub fn new(store: Arc<dyn crate::store::Store>, plugin: &str) -> Result<Users, UsersError> {
        Ok(Users {
            kv: Kv::new(store, plugin)?,
        })
    }

    /// The record of `name`, if any.
    pub fn get(&self, name: &str) -> Result<Option<LocalUser>, UsersError> {
        let name = checked_name(name)?;
        let key = format!("{}{name}", record::KEY_PREFIX);
        self.kv
            .get(&key)?
            .map(|bytes| LocalUser::decode(&bytes).map_err(|e| record_error(&name, e)))
            .transpose()
    }

    /// Adds a user; an existing name is refused unless `replace`. The
    /// password, if any, is stored as an argon2id PHC string. Durable when
    /// it returns.
    pub fn add(&self, new: NewUser, replace: bool) -> Result<LocalUser, UsersError> {
        let name = checked_name(&new.name)?;
        if !replace && self.get(&name)?.is_some() {
            return Err(UsersError::Exists(name));
        }
        let mut user = LocalUser::new(new_id()?, &name);
        user.display_name = new.display_name;
        user.attributes = new.attributes;
        user.password = new.password.as_ref().map(hash_secret).transpose()?;
        user.must_change = new.must_change;
        user.disabled = new.disabled;
        let value = user.encode().map_err(|e| record_error(&name, e))?;
        self.kv.set(&user.key(), value)?;
        Ok(user)
    }

    /// Every user, by name; records that cannot be read are returned as
    /// errors in place.
    pub fn list(&self) -> Result<Vec<Result<LocalUser, UsersError>>, UsersError> {
        Ok(self
            .kv
            .entries(record::KEY_PREFIX, LIST_MAX)?
            .into_iter()
            .map(|(key, value)| {
                let name = key.strip_prefix(record::KEY_PREFIX).unwrap_or(&key);
                LocalUser::decode(&value).map_err(|e| record_error(name, e))
            })
            .collect())
    }

    /// Removes `name`. Durable when it returns.
    pub fn remove(&self, name: &str) -> Result<(), UsersError> {
        let name = checked_name(name)?;
        if self.kv.delete(&format!("{}{name}", record::KEY_PREFIX))? {
            Ok(())
        } else {
            Err(UsersError::NotFound(name))
        }
    }
}

/// The data folder the command works on: `--data-dir`, else the config's,
/// else the default.
/// The store the command works on: sled in `--data-dir`, or the config's
/// store (sled in its data folder by default, or PostgreSQL).
fn store_spec(args: &UsersArgs) -> Result<StoreSpec, UsersError> {
    if let Some(dir) = &args.data_dir {
        return Ok(StoreSpec::Sled { dir: dir.clone() });
    }
    let config = match &args.config {
        Some(path) => GatewayConfig::load(path).map_err(|ds| {
            UsersError::Config(
                ds.iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("\n"),
            )
        })?,
        None => GatewayConfig::default(),
    };
    config
        .store_spec()
        .map_err(|e| UsersError::Config(e.to_string()))
}

/// A user as `list --json` and the admin API show it (never its password
/// hash).
pub fn user_json(u: &LocalUser) -> serde_json::Value {
    serde_json::json!({
        "name": u.name,
        "id": u.id,
        "display_name": u.display_name,
        "attributes": u.attributes,
        "disabled": u.disabled,
        "must_change": u.must_change,
        "has_password": u.password.is_some(),
    })
}

/// Flags of a user for `list`: `disabled`, `must-change`, `no-password`.
fn flags(user: &LocalUser) -> Vec<&'static str> {
    let mut out = Vec::new();
    if user.disabled {
        out.push("disabled");
    }
    if user.must_change {
        out.push("must-change");
    }
    if user.password.is_none() {
        out.push("no-password");
    }
    out
}

fn attributes_text(user: &LocalUser) -> String {
    user.attributes
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs a `users` command, printing to `out` and reading a password (with
/// `--password-stdin`) from `input`.
pub fn run(
    args: UsersArgs,
    out: &mut dyn Write,
    input: &mut dyn BufRead,
) -> Result<(), UsersError> {
    let spec = store_spec(&args)?;
    // `list` and `remove` on a folder without a database: nothing to show,
    // and nothing created.
    let exists = match &spec {
        StoreSpec::Sled { dir } => dir.join("db").exists(),
        StoreSpec::Postgres(_) => true,
    };
    match args.command {
        UsersCommand::Add(add) => {
            let attributes = parse_attributes(&add.attrs)?;
            checked_name(&add.name)?;
            let password = if add.password_stdin {
                Some(read_password(input)?)
            } else if add.random_password {
                Some(random_password()?)
            } else {
                None
            };
            let store = open_spec(&spec)?;
            let users = Users::new(store, &args.plugin)?;
            let user = users.add(
                NewUser {
                    name: add.name,
                    display_name: add.display_name,
                    attributes,
                    password: password.clone(),
                    must_change: add.must_change,
                    disabled: add.disabled,
                },
                add.replace,
            )?;
            writeln!(out, "added user {} ({})", user.name, user.id)?;
            if add.print_password
                && let Some(p) = &password
            {
                writeln!(out, "password: {}", p.expose())?;
            }
            Ok(())
        }
        UsersCommand::List { json } => {
            let listed = if exists {
                let store = open_spec(&spec)?;
                Users::new(store, &args.plugin)?.list()?
            } else {
                Vec::new()
            };
            if json {
                let items: Vec<serde_json::Value> = listed
                    .iter()
                    .map(|u| match u {
                        Ok(u) => user_json(u),
                        Err(e) => serde_json::json!({ "error": e.to_string() }),
                    })
                    .collect();
                let text =
                    serde_json::to_string_pretty(&items).map_err(|e| UsersError::Record {
                        name: String::new(),
                        reason: e.to_string(),
                    })?;
                writeln!(out, "{text}")?;
                return Ok(());
            }
            let rows: Vec<[String; 5]> = listed
                .iter()
                .map(|u| match u {
                    Ok(u) => {
                        let f = flags(u);
                        [
                            u.name.clone(),
                            u.id.clone(),
                            if f.is_empty() {
                                "ok".to_owned()
                            } else {
                                f.join(",")
                            },
                            u.display_name.clone().unwrap_or_else(|| "-".to_owned()),
                            attributes_text(u),
                        ]
                    }
                    Err(e) => [
                        "?".to_owned(),
                        "?".to_owned(),
                        "unreadable".to_owned(),
                        "-".to_owned(),
                        e.to_string(),
                    ],
                })
                .collect();
            let header = ["NAME", "ID", "FLAGS", "DISPLAY NAME", "ATTRIBUTES"].map(str::to_owned);
            let mut widths = [0usize; 5];
            for row in std::iter::once(&header).chain(&rows) {
                for (w, cell) in widths.iter_mut().zip(row) {
                    *w = (*w).max(cell.chars().count());
                }
            }
            for row in std::iter::once(&header).chain(&rows) {
                let mut line = String::new();
                for (i, (cell, w)) in row.iter().zip(widths).enumerate() {
                    if i + 1 == row.len() {
                        line.push_str(cell);
                    } else {
                        line.push_str(&format!("{cell:<w$}  "));
                    }
                }
                writeln!(out, "{}", line.trim_end())?;
            }
            Ok(())
        }
        UsersCommand::Remove { name } => {
            if !exists {
                return Err(UsersError::NotFound(checked_name(&name)?));
            }
            let store = open_spec(&spec)?;
            Users::new(store, &args.plugin)?.remove(&name)?;
            writeln!(out, "removed user {}", record::normalise(&name))?;
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn users(dir: &Path) -> Users {
        Users::new(Arc::new(SledStore::open(dir).unwrap()), record::NAMESPACE).unwrap()
    }

    #[test]
    fn add_list_remove() {
        let dir = tempfile::tempdir().unwrap();
        let u = users(dir.path());
        let added = u
            .add(
                NewUser {
                    name: "  Alice ".into(),
                    attributes: parse_attributes(&["employee_id=12345".into()]).unwrap(),
                    password: Some(Secret::from("hunter2-but-longer")),
                    ..NewUser::default()
                },
                false,
            )
            .unwrap();
        assert_eq!(added.name, "alice");
        assert!(added.id.starts_with("u-") && added.id.len() == 18);
        let phc = added.password.clone().unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
        assert!(crate::plugin::verify_secret(&Secret::from("hunter2-but-longer"), &phc).unwrap());
        assert!(matches!(
            u.add(
                NewUser {
                    name: "ALICE".into(),
                    ..NewUser::default()
                },
                false
            ),
            Err(UsersError::Exists(n)) if n == "alice"
        ));
        let replaced = u
            .add(
                NewUser {
                    name: "alice".into(),
                    ..NewUser::default()
                },
                true,
            )
            .unwrap();
        assert_ne!(replaced.id, added.id);
        let listed: Vec<String> = u
            .list()
            .unwrap()
            .into_iter()
            .map(|r| r.unwrap().name)
            .collect();
        assert_eq!(listed, ["alice"]);
        u.remove("Alice").unwrap();
        assert!(matches!(u.remove("alice"), Err(UsersError::NotFound(_))));
        assert!(u.list().unwrap().is_empty());
    }

    #[test]
    fn attributes_names_and_passwords_are_checked() {
        assert!(parse_attributes(&["a=1".into(), "b=x=y".into()]).is_ok());
        assert_eq!(
            parse_attributes(&["b=x=y".into()]).unwrap()["b"],
            "x=y".to_owned()
        );
        assert!(parse_attributes(&["novalue".into()]).is_err());
        assert!(parse_attributes(&["=1".into()]).is_err());
        assert!(parse_attributes(&["a=1".into(), "a=2".into()]).is_err());
        assert!(checked_name("   ").is_err());
        assert!(checked_name(&"x".repeat(252)).is_err());
        assert!(checked_name("a\tb").is_err());
        let mut input: &[u8] = b"pass word\r\nsecond line\n";
        assert_eq!(read_password(&mut input).unwrap().expose(), "pass word");
        let mut empty: &[u8] = b"\n";
        assert!(read_password(&mut empty).is_err());
        let p = random_password().unwrap();
        assert_eq!(p.code_points(), PASSWORD_LENGTH);
        assert!(p.expose().bytes().all(|b| PASSWORD_ALPHABET.contains(&b)));
    }

    #[test]
    fn the_record_format_is_pinned_and_errors_never_quote_a_record() {
        let mut user = LocalUser::new("u-0123456789abcdef".into(), " Alice ");
        user.attributes.insert("employee_id".into(), "12345".into());
        user.password = Some("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into());
        let text = String::from_utf8(user.encode().unwrap()).unwrap();
        assert_eq!(
            text,
            r#"{"v":1,"id":"u-0123456789abcdef","name":"alice","attributes":{"employee_id":"12345"},"password":"$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA","disabled":false,"must_change":false}"#
        );
        assert!(LocalUser::decode(text.as_bytes()).unwrap() == user);
        assert_eq!(user.key(), "user/alice");
        assert_eq!(record::key("  ALICE ").as_deref(), Some("user/alice"));
        for bad in [
            &br#"{"v":1,"id":"u","name":"x","password":"$argon2id$SECRET","disabled":"SECRET"}"#[..],
            br#"{"v":1,"id":"u","name":"x","extra":"SECRET"}"#,
            br#"{"v":1,"id":"SECRET"#,
        ] {
            let err = LocalUser::decode(bad).err().unwrap().to_string();
            assert!(!err.contains("SECRET"), "{err}");
        }
        assert!(matches!(
            LocalUser::decode(br#"{"v":2,"id":"u","name":"x"}"#),
            Err(record::RecordError::Version(2))
        ));
    }

    #[test]
    fn a_locked_data_dir_names_the_gateway() {
        let dir = tempfile::tempdir().unwrap();
        let _held = SledStore::open(dir.path()).unwrap();
        // sled's file lock is per open file, so a second open in this
        // process is refused (after the store's wait) as from another one.
        let err = open_store(dir.path()).unwrap_err();
        assert!(
            matches!(&err, UsersError::GatewayRunning { path } if path == dir.path()),
            "{err}"
        );
        assert!(
            err.to_string()
                .ends_with("; use `resetgate admin users ...` to manage the users through it (or stop it first)"),
            "{err}"
        );
    }
}
