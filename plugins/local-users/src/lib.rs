//! Local users: a directory whose users live in the gateway's own store,
//! through the `kv` capability (grant `kv: true`). Admins manage them with
//! `resetgate users add|list|remove`; the record format is in `record.rs`,
//! which the gateway compiles too.
//!
//! Passwords are stored only as argon2id PHC strings made by the host from
//! the password handle (`slow_hash::hash_secret`), so the plugin never sees
//! a password in clear. A disabled user is reported as unknown.
//!
//! Meant for trying resetgate and for small setups without a directory
//! server, not as a replacement for one.

// Shared with the gateway (`resetgate users`): not every item is used here.
#[allow(dead_code)]
mod record;

use record::LocalUser;
use resetgate_plugin_sdk::directory::SetPasswordError;
use resetgate_plugin_sdk::prelude::*;
use resetgate_plugin_sdk::{Secret, kv, log, slow_hash};

struct LocalUsers;

const SCHEMA: &str = r#"{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "type": "object",
  "additionalProperties": false,
  "description": "local-users takes no settings: its users are managed with `resetgate users`"
}"#;

/// An argon2id hash (the host's parameters) of a value nobody knows,
/// verified against when a user has no password, so that both paths cost
/// the same.
const DECOY_PHC: &str = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0c2FsdA$J6ht7kWRbGxXv7c8yQ9d3iH9Rr0mD3C8dZqV5LzNf0M";

/// The stored record of `name`, if any (disabled ones included).
fn load(name: &str) -> Result<Option<LocalUser>, PluginError> {
    let Some(key) = record::key(name) else {
        return Ok(None);
    };
    match kv::get(&key) {
        None => Ok(None),
        Some(bytes) => LocalUser::decode(&bytes)
            .map(Some)
            .map_err(|e| PluginError::Internal(format!("{key}: {e}"))),
    }
}

/// The record of the user the gateway hands back, if it is still the same
/// user (same id) and enabled.
fn current(user: &User) -> Result<Option<LocalUser>, PluginError> {
    Ok(load(&user.name)?.filter(|r| r.id == user.id && !r.disabled))
}

fn save(record: &LocalUser) -> Result<(), PluginError> {
    let value = record
        .encode()
        .map_err(|e| PluginError::Internal(e.to_string()))?;
    kv::set(&record.key(), &value);
    Ok(())
}

fn gone(user: &User) -> PluginError {
    PluginError::Refused(format!("user {} no longer exists or is disabled", user.id))
}

impl Plugin for LocalUsers {
    fn describe() -> PluginInfo {
        PluginInfo::new(
            "local-users",
            env!("CARGO_PKG_VERSION"),
            PluginKind::Directory,
            "local users kept in the gateway's store (grant kv); managed with `resetgate users`",
        )
        .with_config_schema(SCHEMA)
    }
}

impl Directory for LocalUsers {
    fn find_user(_ctx: CallContext, name: String) -> Result<Option<User>, PluginError> {
        Ok(load(&name)?.filter(|r| !r.disabled).map(|r| User {
            attributes: r.reported_attributes(),
            id: r.id,
            name: r.name,
        }))
    }

    fn verify_password(
        _ctx: CallContext,
        user: User,
        password: &Secret,
    ) -> Result<bool, PluginError> {
        let phc = current(&user)?.and_then(|r| r.password);
        let matches = slow_hash::verify_secret(password, phc.as_deref().unwrap_or(DECOY_PHC));
        Ok(phc.is_some() && matches)
    }

    fn set_password(
        _ctx: CallContext,
        user: User,
        password: &Secret,
        must_change: bool,
    ) -> Result<(), SetPasswordError> {
        let mut record = current(&user)
            .map_err(SetPasswordError::Other)?
            .ok_or_else(|| SetPasswordError::Other(gone(&user)))?;
        record.password = Some(slow_hash::hash_secret(password));
        record.must_change = must_change;
        save(&record).map_err(SetPasswordError::Other)?;
        log::info(&format!(
            "password set for {} (must change: {must_change})",
            record.id
        ));
        Ok(())
    }

    fn expire_password(_ctx: CallContext, user: User) -> Result<(), PluginError> {
        let mut record = current(&user)?.ok_or_else(|| gone(&user))?;
        record.must_change = true;
        save(&record)?;
        log::info(&format!("password of {} expired", record.id));
        Ok(())
    }

    fn unlock(_ctx: CallContext, user: User) -> Result<(), PluginError> {
        // Local users have no lockout of their own (the gateway's lockout
        // rule is the only one); a disabled user stays disabled.
        current(&user)?.ok_or_else(|| gone(&user))?;
        Ok(())
    }

    fn reachable(_ctx: CallContext) -> bool {
        true
    }
}

resetgate_plugin_sdk::export_directory!(LocalUsers);
