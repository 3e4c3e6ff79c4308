//! Example VPN hook: brings nothing up; `probe` reports the configured
//! reachability, so a workflow's partial and full modes can be exercised.

use resetgate_plugin_sdk::log;
use resetgate_plugin_sdk::prelude::*;
use serde::Deserialize;

struct Pretend;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default = "yes")]
    reachable: bool,
}

fn yes() -> bool {
    true
}

const SCHEMA: &str = r#"{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "type": "object",
  "additionalProperties": false,
  "properties": { "reachable": { "type": "boolean", "default": true } }
}"#;

impl Plugin for Pretend {
    fn describe() -> PluginInfo {
        PluginInfo::new("example-vpn", env!("CARGO_PKG_VERSION"), PluginKind::VpnHook, "pretends to bring a tunnel up")
            .with_config_schema(SCHEMA)
    }
}

impl VpnHook for Pretend {
    fn connect(_ctx: CallContext, user: Option<User>) -> Result<(), PluginError> {
        log::info(&format!("tunnel up for {}", user.map(|u| u.id).unwrap_or_else(|| "(no user)".into())));
        Ok(())
    }

    fn disconnect(_ctx: CallContext) -> Result<(), PluginError> {
        log::info("tunnel down");
        Ok(())
    }

    fn probe(ctx: CallContext) -> bool {
        ctx.config_with(|s| serde_json::from_str::<Config>(s)).map(|c| c.reachable).unwrap_or(false)
    }
}

resetgate_plugin_sdk::export_vpn_hook!(Pretend);
