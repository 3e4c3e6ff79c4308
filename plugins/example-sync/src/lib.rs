//! Example sync target: accepts every change except for listed users, and
//! answers a redelivered change (same idempotency key) the same way.

use resetgate_plugin_sdk::prelude::*;
use resetgate_plugin_sdk::sync_target::{Change, PushError};
use resetgate_plugin_sdk::{Secret, log};
use serde::Deserialize;

struct Accept;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default)]
    refuse: Vec<String>,
}

const SCHEMA: &str = r#"{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "type": "object",
  "additionalProperties": false,
  "properties": { "refuse": { "type": "array", "items": { "type": "string" },
                              "description": "User names whose changes are refused permanently" } }
}"#;

impl Plugin for Accept {
    fn describe() -> PluginInfo {
        PluginInfo::new("example-sync", env!("CARGO_PKG_VERSION"), PluginKind::SyncTarget, "accepts every change")
            .with_config_schema(SCHEMA)
    }
}

impl SyncTarget for Accept {
    fn push(ctx: CallContext, change: Change, password: &Secret) -> Result<(), PushError> {
        let c: Config = ctx.config_with(|s| serde_json::from_str(s)).map_err(|e| PushError::Permanent(format!("{e:?}")))?;
        if c.refuse.iter().any(|u| *u == change.user.name) {
            return Err(PushError::Permanent(format!("{} is not synchronised", change.user.name)));
        }
        if password.length() == 0 {
            return Err(PushError::Permanent("empty password".into()));
        }
        log::info(&format!("change {} for {} accepted", change.idempotency_key, change.user.id));
        Ok(())
    }
}

resetgate_plugin_sdk::export_sync_target!(Accept);
