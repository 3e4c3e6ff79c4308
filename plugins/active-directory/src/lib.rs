//! Active Directory: a directory connector over an LDAP connection the
//! admin defines in the gateway config (`ldap:` with `flavor:
//! active-directory`), granted to the step (`grants: { ldap: [NAME] }`).
//!
//! - `find-user`: one search under `base` for a person whose
//!   `sAMAccountName` or `userPrincipalName` is the typed name (RFC 4515
//!   escaped), at most two entries asked for: several matches are an error
//!   for the admin's log and an unknown user for the person. A disabled
//!   account (`userAccountControl` bit 2) is unknown too, so its flow is a
//!   decoy. The user's id is the account's `objectGUID` (it survives a
//!   rename or a move to another OU); every later call finds the account
//!   again by it, so an account disabled or deleted during a flow is
//!   refused.
//! - `verify-password`: a bind as the account (`ldap.check-bind`).
//! - `set-password`: `ldap.set-password` (the host writes `unicodePwd`),
//!   then `pwdLastSet=0` when the person must change it at next logon, and
//!   `lockoutTime=0` if AD has locked the account (unless `unlock_on_reset:
//!   false`). AD's password policy refusing it (`0000052D`, result 19)
//!   is `rejected-by-policy` with AD's reason: the person is told the
//!   directory refused the password and may choose another.
//! - `expire-password`: `pwdLastSet=0`; `unlock`: `lockoutTime=0`;
//!   `reachable`: a search of the root DSE.

use resetgate_plugin_sdk::directory::SetPasswordError;
use resetgate_plugin_sdk::ldap::{self, Attribute, Entry, LdapError, Modification, Scope};
use resetgate_plugin_sdk::prelude::*;
use resetgate_plugin_sdk::{Secret, log};
use serde::Deserialize;

struct ActiveDirectory;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    connection: String,
    base: String,
    #[serde(default = "default_return_attributes")]
    return_attributes: Vec<String>,
    #[serde(default)]
    filter: Option<String>,
    #[serde(default = "default_true")]
    unlock_on_reset: bool,
}

fn default_return_attributes() -> Vec<String> {
    ["mail", "mobile", "displayName"].map(String::from).to_vec()
}

fn default_true() -> bool {
    true
}

const SCHEMA: &str = r#"{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "type": "object",
  "additionalProperties": false,
  "required": ["connection", "base"],
  "properties": {
    "connection": { "type": "string", "minLength": 1, "maxLength": 128,
                    "description": "The LDAP connection (the gateway config's `ldap:`, `flavor: active-directory`) to use; the step must grant it: `grants: { ldap: [NAME] }`" },
    "base": { "type": "string", "minLength": 1, "maxLength": 1024,
              "description": "Where users are searched (subtree), e.g. `DC=example,DC=com` or `OU=Staff,DC=example,DC=com`" },
    "return_attributes": { "type": "array", "maxItems": 32, "uniqueItems": true,
                           "default": ["mail", "mobile", "displayName"],
                           "items": { "type": "string", "pattern": "^[A-Za-z][A-Za-z0-9-]{0,63}$" },
                           "description": "Attributes handed to the gates (first value, if it is text), e.g. `mail` for a one-time-code gate" },
    "filter": { "type": "string", "minLength": 3, "maxLength": 2048, "pattern": "^\\(.*\\)$",
                "description": "An LDAP filter every account must also match, e.g. `(memberOf=CN=Self-Service,OU=Groups,DC=example,DC=com)`; others are unknown users" },
    "unlock_on_reset": { "type": "boolean", "default": true,
                         "description": "Also clear AD's own lockout (`lockoutTime=0`) when the password of a locked account is set, so a locked-out person can log on with the new password at once (the bind account needs the right to write `lockoutTime`; if it fails, the reset stands and the admin log says so)" }
  }
}"#;

/// `userAccountControl`: ACCOUNTDISABLE.
const UAC_DISABLED: u64 = 0x2;
/// Every search for accounts also requires this.
const PERSON: &str = "(objectCategory=person)(objectClass=user)";
/// What `find-user` and `account` read besides the returned attributes.
const BASE_ATTRIBUTES: [&str; 4] = [
    "objectGUID",
    "sAMAccountName",
    "userPrincipalName",
    "userAccountControl",
];

fn config(ctx: &CallContext) -> Result<Config, PluginError> {
    ctx.config_with(|s| serde_json::from_str(s))
}

/// The text of an LDAP error for the admin's log: code and AD's message.
fn describe_error(e: &LdapError) -> String {
    format!("LDAP result {}: {}", e.code, e.message.trim())
}

/// An LDAP failure as a plugin error: the server unreachable, busy or too
/// slow is `unavailable`, anything else `refused`.
fn plugin_error(what: &str, e: &LdapError) -> PluginError {
    let text = format!("{what}: {}", describe_error(e));
    match e.code {
        51 | 52 | 81 | 85 | 91 => PluginError::Unavailable(text),
        _ => PluginError::Refused(text),
    }
}

/// The text of a plugin error.
fn reason(e: &PluginError) -> &str {
    match e {
        PluginError::BadConfig(t)
        | PluginError::Unavailable(t)
        | PluginError::Refused(t)
        | PluginError::Internal(t) => t,
    }
}

/// Whether AD refused a password for its own rules (length, complexity,
/// history, minimum age): extended error `0000052D` (Samba answers result
/// 19, constraint violation; Windows 19 or 53, unwilling to perform, with
/// `0000052D`). A bare 53 without it is something else (e.g. a connection
/// without encryption, on which AD never accepts `unicodePwd`).
fn is_policy_refusal(e: &LdapError) -> bool {
    e.code == 19 || e.message.to_ascii_uppercase().contains("0000052D")
}

/// The canonical text form of an `objectGUID` (the first three fields are
/// little-endian), as AD's tools show it.
fn guid_text(bytes: &[u8]) -> Option<String> {
    let b: &[u8; 16] = bytes.try_into().ok()?;
    Some(format!(
        "{:02x}{:02x}{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
        b[3],
        b[2],
        b[1],
        b[0],
        b[5],
        b[4],
        b[7],
        b[6],
        b[8],
        b[9],
        b[10],
        b[11],
        b[12],
        b[13],
        b[14],
        b[15]
    ))
}

/// The filter assertion value (`\xx` per byte) of the `objectGUID` whose
/// text form is `text`; `None` if `text` is not one.
fn guid_filter_value(text: &str) -> Option<String> {
    let hex: Vec<u8> = text.bytes().filter(|&c| c != b'-').collect();
    if text.len() != 36 || hex.len() != 32 || !hex.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    let byte = |i: usize| -> Option<u8> {
        let pair = std::str::from_utf8(hex.get(2 * i..2 * i + 2)?).ok()?;
        u8::from_str_radix(pair, 16).ok()
    };
    let order = [3, 2, 1, 0, 5, 4, 7, 6, 8, 9, 10, 11, 12, 13, 14, 15];
    let mut out = String::with_capacity(48);
    for i in order {
        out.push_str(&format!("\\{:02x}", byte(i)?));
    }
    Some(out)
}

/// The values of `name` in `entry` (attribute names are case-insensitive).
fn values<'a>(entry: &'a Entry, name: &str) -> &'a [Vec<u8>] {
    entry
        .attributes
        .iter()
        .find(|a| a.name.eq_ignore_ascii_case(name))
        .map(|a| a.values.as_slice())
        .unwrap_or(&[])
}

/// The first value of `name` as text, if it has one that is UTF-8.
fn text(entry: &Entry, name: &str) -> Option<String> {
    values(entry, name)
        .first()
        .and_then(|v| String::from_utf8(v.clone()).ok())
}

fn disabled(entry: &Entry) -> bool {
    text(entry, "userAccountControl")
        .and_then(|v| v.trim().parse::<i64>().ok())
        // AD sends it as a signed 32-bit integer.
        .is_some_and(|uac| (uac as u64) & UAC_DISABLED != 0)
}

/// `(&(objectCategory=person)(objectClass=user)[filter]condition)`.
fn account_filter(cfg: &Config, condition: &str) -> String {
    format!(
        "(&{PERSON}{}{condition})",
        cfg.filter.as_deref().unwrap_or("")
    )
}

fn wanted_attributes(cfg: &Config) -> Vec<String> {
    let mut names: Vec<String> = BASE_ATTRIBUTES.map(String::from).to_vec();
    for name in &cfg.return_attributes {
        if !names.iter().any(|n| n.eq_ignore_ascii_case(name)) {
            names.push(name.clone());
        }
    }
    names
}

/// The user record of an account entry; `None` without a usable
/// `objectGUID` (never the case in AD).
fn user_of(cfg: &Config, entry: &Entry) -> Option<User> {
    let id = guid_text(values(entry, "objectGUID").first()?)?;
    let name = text(entry, "sAMAccountName")?;
    let attributes = cfg
        .return_attributes
        .iter()
        .filter_map(|attr| text(entry, attr).map(|v| (attr.clone(), v)))
        .collect();
    Some(User {
        id,
        name,
        attributes,
    })
}

/// An enabled account found again by its `objectGUID`.
struct Account {
    dn: String,
    /// AD's own lockout is on (`lockoutTime` set and not 0).
    locked: bool,
}

/// The enabled account `user` (found again by its `objectGUID`), or
/// `refused` if it is gone or disabled.
fn account(cfg: &Config, user: &User) -> Result<Account, PluginError> {
    let guid = guid_filter_value(&user.id)
        .ok_or_else(|| PluginError::Refused(format!("{:?} is not an objectGUID", user.id)))?;
    let filter = account_filter(cfg, &format!("(objectGUID={guid})"));
    let attrs = ["userAccountControl".to_owned(), "lockoutTime".to_owned()];
    let entries = ldap::search(
        &cfg.connection,
        &cfg.base,
        Scope::Subtree,
        &filter,
        &attrs,
        2,
    )
    .map_err(|e| plugin_error(&format!("looking up account {}", user.id), &e))?;
    match entries.as_slice() {
        [entry] if !disabled(entry) => Ok(Account {
            dn: entry.dn.clone(),
            locked: text(entry, "lockoutTime").is_some_and(|t| t.trim() != "0"),
        }),
        [_] => Err(PluginError::Refused(format!(
            "account {} ({}) is disabled",
            user.id, user.name
        ))),
        _ => Err(PluginError::Refused(format!(
            "account {} ({}) no longer exists under {}",
            user.id, user.name, cfg.base
        ))),
    }
}

fn replace(name: &str, value: &str) -> Modification {
    Modification::Replace(Attribute {
        name: name.to_owned(),
        values: vec![value.as_bytes().to_vec()],
    })
}

fn modify(cfg: &Config, dn: &str, name: &str, value: &str) -> Result<(), PluginError> {
    ldap::modify(&cfg.connection, dn, &[replace(name, value)])
        .map_err(|e| plugin_error(&format!("setting {name}={value} on {dn}"), &e))
}

impl Plugin for ActiveDirectory {
    fn describe() -> PluginInfo {
        PluginInfo::new(
            "active-directory",
            env!("CARGO_PKG_VERSION"),
            PluginKind::Directory,
            "Active Directory over a granted LDAP connection: find by sAMAccountName or UPN, unicodePwd, pwdLastSet, lockoutTime",
        )
        .with_config_schema(SCHEMA)
    }
}

impl Directory for ActiveDirectory {
    fn find_user(ctx: CallContext, name: String) -> Result<Option<User>, PluginError> {
        let cfg = config(&ctx)?;
        let value = ldap::escape_filter_value(name.trim());
        let filter = account_filter(
            &cfg,
            &format!("(|(sAMAccountName={value})(userPrincipalName={value}))"),
        );
        let entries = match ldap::search(
            &cfg.connection,
            &cfg.base,
            Scope::Subtree,
            &filter,
            &wanted_attributes(&cfg),
            2,
        ) {
            Ok(entries) => entries,
            // More than the size limit: several accounts.
            Err(e) if e.code == 4 => {
                log::error(&format!(
                    "more than two accounts under {} match a typed name; the person is treated as unknown",
                    cfg.base
                ));
                return Ok(None);
            }
            Err(e) => return Err(plugin_error("searching for the account", &e)),
        };
        match entries.as_slice() {
            [] => Ok(None),
            [entry] if disabled(entry) => {
                log::info(&format!(
                    "account {} is disabled; the flow goes on as for an unknown user",
                    entry.dn
                ));
                Ok(None)
            }
            [entry] => match user_of(&cfg, entry) {
                Some(user) => Ok(Some(user)),
                None => Err(PluginError::Internal(format!(
                    "account {} has no objectGUID or sAMAccountName",
                    entry.dn
                ))),
            },
            several => {
                let dns: Vec<&str> = several.iter().map(|e| e.dn.as_str()).collect();
                log::error(&format!(
                    "several accounts match one typed name ({}); the person is treated as unknown: \
                     make sAMAccountName and userPrincipalName unique across them",
                    dns.join("; ")
                ));
                Ok(None)
            }
        }
    }

    fn verify_password(
        ctx: CallContext,
        user: User,
        password: &Secret,
    ) -> Result<bool, PluginError> {
        let cfg = config(&ctx)?;
        let dn = account(&cfg, &user)?.dn;
        ldap::check_bind(&cfg.connection, &dn, password)
            .map_err(|e| plugin_error(&format!("checking the password of {dn}"), &e))
    }

    fn set_password(
        ctx: CallContext,
        user: User,
        password: &Secret,
        must_change: bool,
    ) -> Result<(), SetPasswordError> {
        let cfg = config(&ctx).map_err(SetPasswordError::Other)?;
        let Account { dn, locked } = account(&cfg, &user).map_err(SetPasswordError::Other)?;
        match ldap::set_password(&cfg.connection, &dn, password) {
            Ok(()) => {}
            Err(e) if is_policy_refusal(&e) => {
                log::info(&format!(
                    "Active Directory refused the new password of {dn}: {}",
                    describe_error(&e)
                ));
                return Err(SetPasswordError::RejectedByPolicy(
                    e.message.trim().to_owned(),
                ));
            }
            Err(e) => {
                return Err(SetPasswordError::Other(plugin_error(
                    &format!("setting the password of {dn}"),
                    &e,
                )));
            }
        }
        // The password is set from here on: a failure below is reported as
        // such, so the admin knows the state the account is in.
        let after = |what: &str, e: PluginError| {
            log::error(&format!("the password of {dn} was set, but {what} failed"));
            SetPasswordError::Other(e)
        };
        if must_change {
            modify(&cfg, &dn, "pwdLastSet", "0").map_err(|e| after("pwdLastSet=0", e))?;
        }
        // Only a locked account is unlocked (an account delegated the
        // right to reset passwords may lack the right to write
        // `lockoutTime`), and a failure there does not undo the reset: the
        // password is set, and AD's lockout ends after its own duration.
        if cfg.unlock_on_reset
            && locked
            && let Err(e) = modify(&cfg, &dn, "lockoutTime", "0")
        {
            log::error(&format!(
                "the password of {dn} was set, but unlocking the account failed: {}",
                reason(&e)
            ));
        }
        log::info(&format!(
            "password set for {dn} (must change: {must_change})"
        ));
        Ok(())
    }

    fn expire_password(ctx: CallContext, user: User) -> Result<(), PluginError> {
        let cfg = config(&ctx)?;
        let dn = account(&cfg, &user)?.dn;
        modify(&cfg, &dn, "pwdLastSet", "0")?;
        log::info(&format!("password of {dn} expired"));
        Ok(())
    }

    fn unlock(ctx: CallContext, user: User) -> Result<(), PluginError> {
        let cfg = config(&ctx)?;
        let dn = account(&cfg, &user)?.dn;
        modify(&cfg, &dn, "lockoutTime", "0")?;
        log::info(&format!("{dn} unlocked"));
        Ok(())
    }

    fn reachable(ctx: CallContext) -> bool {
        let Ok(cfg) = config(&ctx) else {
            return false;
        };
        let attrs = ["defaultNamingContext".to_owned()];
        match ldap::search(
            &cfg.connection,
            "",
            Scope::Base,
            "(objectClass=*)",
            &attrs,
            1,
        ) {
            Ok(_) => true,
            Err(e) => {
                log::warn(&format!(
                    "Active Directory is not reachable: {}",
                    describe_error(&e)
                ));
                false
            }
        }
    }
}

resetgate_plugin_sdk::export_directory!(ActiveDirectory);
