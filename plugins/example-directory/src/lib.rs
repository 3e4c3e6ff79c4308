//! Example directory: the users are listed in the config. It sets no real
//! password; it enforces a minimum length of its own, so a workflow can show
//! how a directory's own rule is reported.

use resetgate_plugin_sdk::directory::SetPasswordError;
use resetgate_plugin_sdk::prelude::*;
use resetgate_plugin_sdk::{Secret, log};
use serde::Deserialize;

struct Listed;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    users: Vec<Entry>,
    #[serde(default = "default_min")]
    min_length: u32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    name: String,
    #[serde(default)]
    mail: Option<String>,
}

fn default_min() -> u32 {
    8
}

const SCHEMA: &str = r#"{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "type": "object",
  "additionalProperties": false,
  "required": ["users"],
  "properties": {
    "users": { "type": "array", "items": {
      "type": "object", "additionalProperties": false, "required": ["name"],
      "properties": { "name": { "type": "string", "minLength": 1 }, "mail": { "type": "string" } } } },
    "min_length": { "type": "integer", "minimum": 1, "default": 8,
                    "description": "The directory's own minimum password length" }
  }
}"#;

fn config(ctx: &CallContext) -> Result<Config, PluginError> {
    ctx.config_with(|s| serde_json::from_str(s))
}

impl Plugin for Listed {
    fn describe() -> PluginInfo {
        PluginInfo::new("example-directory", env!("CARGO_PKG_VERSION"), PluginKind::Directory, "users listed in the config")
            .with_config_schema(SCHEMA)
    }
}

impl Directory for Listed {
    fn find_user(ctx: CallContext, name: String) -> Result<Option<User>, PluginError> {
        let wanted = name.trim().to_lowercase();
        Ok(config(&ctx)?.users.into_iter().find(|u| u.name.to_lowercase() == wanted).map(|u| User {
            id: format!("uid={},ou=example", u.name),
            attributes: u.mail.map(|m| vec![("mail".to_owned(), m)]).unwrap_or_default(),
            name: u.name,
        }))
    }

    fn verify_password(_ctx: CallContext, _user: User, _password: &Secret) -> Result<bool, PluginError> {
        // Holds no passwords, so no current password can be proven.
        Ok(false)
    }

    fn set_password(ctx: CallContext, user: User, password: &Secret, must_change: bool) -> Result<(), SetPasswordError> {
        let c = config(&ctx).map_err(SetPasswordError::Other)?;
        if password.length() < c.min_length {
            return Err(SetPasswordError::RejectedByPolicy(format!(
                "the directory requires at least {} characters",
                c.min_length
            )));
        }
        log::info(&format!("password set for {} (must change: {must_change})", user.id));
        Ok(())
    }

    fn expire_password(_ctx: CallContext, user: User) -> Result<(), PluginError> {
        log::info(&format!("password of {} expired", user.id));
        Ok(())
    }

    fn unlock(_ctx: CallContext, user: User) -> Result<(), PluginError> {
        log::info(&format!("{} unlocked", user.id));
        Ok(())
    }

    fn reachable(_ctx: CallContext) -> bool {
        true
    }
}

resetgate_plugin_sdk::export_directory!(Listed);
