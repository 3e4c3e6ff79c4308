//! LDAP directory: users in an LDAP directory such as OpenLDAP with the
//! ppolicy overlay, over a connection the admin defines in the gateway
//! config and the step grants (`grants: { ldap: [NAME] }`). The host binds
//! as the connection's account; the plugin never sees its password, and
//! hands a user's password to the host as a handle.
//!
//! - find a user: one search under `base` for an entry of `object_class`
//!   whose `user_attributes` (e.g. `uid`, `mail`) equal what the person
//!   typed, escaped as RFC 4515 says; one match is the user (id = its DN,
//!   name = the value of the first of `user_attributes`, attributes = the
//!   `return_attributes` it has), none is unknown, several is an error for
//!   the admin's log and unknown for the person;
//! - verify a password: a bind as the user on a connection of its own;
//! - set a password: the Password Modify extended operation as the
//!   connection's account, then `pwdReset: TRUE` when the user must change
//!   it at next logon (and no `pwdReset` otherwise); a refusal by the
//!   directory's password policy (19, 53) is `rejected-by-policy`;
//! - expire: `pwdReset: TRUE`; unlock: delete `pwdAccountLockedTime`;
//! - reachable: a read of the root DSE.

use resetgate_plugin_sdk::directory::SetPasswordError;
use resetgate_plugin_sdk::ldap::{self, Attribute, LdapError, Modification, Scope};
use resetgate_plugin_sdk::prelude::*;
use resetgate_plugin_sdk::{Secret, log};
use serde::Deserialize;

struct LdapDirectory;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    connection: String,
    base: String,
    #[serde(default)]
    scope: ConfigScope,
    #[serde(default = "default_user_attributes")]
    user_attributes: Vec<String>,
    #[serde(default = "default_object_class")]
    object_class: String,
    #[serde(default = "default_return_attributes")]
    return_attributes: Vec<String>,
}

#[derive(Deserialize, Default, Clone, Copy)]
#[serde(rename_all = "kebab-case")]
enum ConfigScope {
    OneLevel,
    #[default]
    Subtree,
}

fn default_user_attributes() -> Vec<String> {
    vec!["uid".to_owned()]
}

fn default_object_class() -> String {
    "inetOrgPerson".to_owned()
}

fn default_return_attributes() -> Vec<String> {
    ["mail", "mobile", "displayName"]
        .map(str::to_owned)
        .to_vec()
}

const SCHEMA: &str = r#"{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "type": "object",
  "additionalProperties": false,
  "required": ["connection", "base"],
  "properties": {
    "connection": { "type": "string", "pattern": "^[a-z0-9][a-z0-9_-]{0,63}$",
                    "description": "The LDAP connection (from the gateway config's `ldap:`), which the step must grant: `grants: { ldap: [NAME] }`" },
    "base": { "type": "string", "minLength": 1, "maxLength": 1024,
              "description": "Where users are searched, e.g. `ou=people,dc=example,dc=com`" },
    "scope": { "enum": ["one-level", "subtree"], "default": "subtree",
               "description": "`one-level`: the entries right under `base`; `subtree`: everything below it" },
    "user_attributes": { "type": "array", "minItems": 1, "maxItems": 8, "uniqueItems": true,
                         "items": { "type": "string", "pattern": "^[A-Za-z][A-Za-z0-9-]{0,63}$" },
                         "default": ["uid"],
                         "description": "Attributes compared with what the person typed (any may match), e.g. `[uid, mail]`" },
    "object_class": { "type": "string", "pattern": "^[A-Za-z][A-Za-z0-9-]{0,63}$", "default": "inetOrgPerson",
                      "description": "The object class of user entries" },
    "return_attributes": { "type": "array", "maxItems": 32, "uniqueItems": true,
                           "items": { "type": "string", "pattern": "^[A-Za-z][A-Za-z0-9-]{0,63}$" },
                           "default": ["mail", "mobile", "displayName"],
                           "description": "Attributes handed to gates as the user's attributes (a one-time code's destination, a display name)" }
  }
}"#;

fn config(ctx: &CallContext) -> Result<Config, PluginError> {
    ctx.config_with(|s| serde_json::from_str::<Config>(s))
}

/// LDAP result codes: the server's and the host's client-side ones.
const SIZE_LIMIT_EXCEEDED: u32 = 4;
const NO_SUCH_ATTRIBUTE: u32 = 16;
const CONSTRAINT_VIOLATION: u32 = 19;
const NO_SUCH_OBJECT: u32 = 32;
const BUSY: u32 = 51;
const UNAVAILABLE: u32 = 52;
const UNWILLING_TO_PERFORM: u32 = 53;
const SERVER_DOWN: u32 = 81;
const TIMEOUT: u32 = 85;
const CONNECT_ERROR: u32 = 91;

/// A failed operation as the gateway sees it: the directory cannot be
/// reached (retrying may help), or it refused.
fn plugin_error(what: &str, e: LdapError) -> PluginError {
    let text = format!("{what}: LDAP result {}: {}", e.code, e.message);
    match e.code {
        SERVER_DOWN | TIMEOUT | CONNECT_ERROR | BUSY | UNAVAILABLE => PluginError::Unavailable(text),
        _ => PluginError::Refused(text),
    }
}

/// Several entries match one name: the admin must make the attributes
/// unique; the person is treated as unknown.
fn several(cfg: &Config, dns: &[&str]) {
    let which = if dns.is_empty() {
        "more than two entries".to_owned()
    } else {
        dns.join(" and ")
    };
    log::error(&format!(
        "several entries under `{}` match the name a user typed in one of {:?} ({which}); \
         the user is treated as unknown: make these attributes unique, or narrow `base`, \
         `object_class` or `user_attributes`",
        cfg.base, cfg.user_attributes
    ));
}

/// `pwdReset: TRUE` (must change at next logon), or no `pwdReset`.
fn set_pwd_reset(cfg: &Config, dn: &str, reset: bool) -> Result<(), PluginError> {
    let name = "pwdReset".to_owned();
    let change = if reset {
        Modification::Replace(Attribute {
            name,
            values: vec![b"TRUE".to_vec()],
        })
    } else {
        Modification::Delete(Attribute {
            name,
            values: Vec::new(),
        })
    };
    match ldap::modify(&cfg.connection, dn, &[change]) {
        Ok(()) => Ok(()),
        Err(e) if !reset && e.code == NO_SUCH_ATTRIBUTE => Ok(()),
        Err(e) => Err(plugin_error(&format!("setting pwdReset of {dn}"), e)),
    }
}

impl Plugin for LdapDirectory {
    fn describe() -> PluginInfo {
        PluginInfo::new(
            "ldap-directory",
            env!("CARGO_PKG_VERSION"),
            PluginKind::Directory,
            "users in an LDAP directory (OpenLDAP with ppolicy) over a connection the gateway config defines (grant ldap)",
        )
        .with_config_schema(SCHEMA)
    }
}

impl Directory for LdapDirectory {
    fn find_user(ctx: CallContext, name: String) -> Result<Option<User>, PluginError> {
        let cfg = config(&ctx)?;
        if name.is_empty() {
            return Ok(None);
        }
        let value = ldap::escape_filter_value(&name);
        let alternatives: String = cfg
            .user_attributes
            .iter()
            .map(|a| format!("({a}={value})"))
            .collect();
        let filter = format!("(&(objectClass={})(|{alternatives}))", cfg.object_class);
        let scope = match cfg.scope {
            ConfigScope::OneLevel => Scope::OneLevel,
            ConfigScope::Subtree => Scope::Subtree,
        };
        let mut attributes = cfg.return_attributes.clone();
        attributes.extend(cfg.user_attributes.iter().cloned());
        let entries = match ldap::search(&cfg.connection, &cfg.base, scope, &filter, &attributes, 2)
        {
            Ok(entries) => entries,
            Err(e) if e.code == SIZE_LIMIT_EXCEEDED => {
                several(&cfg, &[]);
                return Ok(None);
            }
            Err(e) if e.code == NO_SUCH_OBJECT => {
                return Err(PluginError::BadConfig(format!(
                    "the search base `{}` does not exist on connection `{}`: {}",
                    cfg.base, cfg.connection, e.message
                )));
            }
            Err(e) => return Err(plugin_error("searching for the user", e)),
        };
        let entry = match <[_; 1]>::try_from(entries) {
            Ok([entry]) => entry,
            Err(entries) if entries.is_empty() => return Ok(None),
            Err(entries) => {
                let dns: Vec<&str> = entries.iter().map(|e| e.dn.as_str()).collect();
                several(&cfg, &dns);
                return Ok(None);
            }
        };
        let value_of = |wanted: &str| -> Vec<String> {
            entry
                .attributes
                .iter()
                .filter(|a| a.name.eq_ignore_ascii_case(wanted))
                .flat_map(|a| a.values.iter())
                .filter_map(|v| String::from_utf8(v.clone()).ok())
                .collect()
        };
        // The account's name as the directory spells it: the first user
        // attribute's value (e.g. `uid`), whichever attribute matched.
        let normalised = cfg
            .user_attributes
            .first()
            .and_then(|a| value_of(a).into_iter().next())
            .unwrap_or(name);
        let attributes = cfg
            .return_attributes
            .iter()
            .flat_map(|a| value_of(a).into_iter().map(move |v| (a.clone(), v)))
            .collect();
        Ok(Some(User {
            id: entry.dn,
            name: normalised,
            attributes,
        }))
    }

    fn verify_password(
        ctx: CallContext,
        user: User,
        password: &Secret,
    ) -> Result<bool, PluginError> {
        let cfg = config(&ctx)?;
        ldap::check_bind(&cfg.connection, &user.id, password)
            .map_err(|e| plugin_error(&format!("binding as {}", user.id), e))
    }

    fn set_password(
        ctx: CallContext,
        user: User,
        password: &Secret,
        must_change: bool,
    ) -> Result<(), SetPasswordError> {
        let cfg = config(&ctx).map_err(SetPasswordError::Other)?;
        match ldap::set_password(&cfg.connection, &user.id, password) {
            Ok(()) => {}
            Err(e) if matches!(e.code, CONSTRAINT_VIOLATION | UNWILLING_TO_PERFORM) => {
                return Err(SetPasswordError::RejectedByPolicy(format!(
                    "LDAP result {}: {}",
                    e.code, e.message
                )));
            }
            Err(e) => {
                return Err(SetPasswordError::Other(plugin_error(
                    &format!("setting the password of {}", user.id),
                    e,
                )));
            }
        }
        set_pwd_reset(&cfg, &user.id, must_change).map_err(SetPasswordError::Other)?;
        log::info(&format!(
            "password set for {} (must change: {must_change})",
            user.id
        ));
        Ok(())
    }

    fn expire_password(ctx: CallContext, user: User) -> Result<(), PluginError> {
        let cfg = config(&ctx)?;
        set_pwd_reset(&cfg, &user.id, true)?;
        log::info(&format!("password of {} expired (pwdReset)", user.id));
        Ok(())
    }

    fn unlock(ctx: CallContext, user: User) -> Result<(), PluginError> {
        let cfg = config(&ctx)?;
        let change = Modification::Delete(Attribute {
            name: "pwdAccountLockedTime".to_owned(),
            values: Vec::new(),
        });
        match ldap::modify(&cfg.connection, &user.id, &[change]) {
            Ok(()) => {
                log::info(&format!("{} unlocked", user.id));
                Ok(())
            }
            // Not locked: nothing to do.
            Err(e) if e.code == NO_SUCH_ATTRIBUTE => Ok(()),
            Err(e) => Err(plugin_error(&format!("unlocking {}", user.id), e)),
        }
    }

    fn reachable(ctx: CallContext) -> bool {
        let Ok(cfg) = config(&ctx) else {
            return false;
        };
        ldap::search(
            &cfg.connection,
            "",
            Scope::Base,
            "(objectClass=*)",
            &["1.1".to_owned()],
            1,
        )
        .is_ok()
    }
}

resetgate_plugin_sdk::export_directory!(LdapDirectory);
