//! Example lockout rule with the semantics of the FIM 2010 lockout gate:
//! after `threshold` failures the user is locked out for a while (the n-th
//! lockout lasts `lockout_ms[n]`, the last entry repeating); after
//! `max_lockouts` lockouts the lockout is permanent until an operator unlocks.

use resetgate_plugin_sdk::lockout::{Decision, History};
use resetgate_plugin_sdk::prelude::*;
use serde::Deserialize;

struct Ladder;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default = "default_threshold")]
    threshold: u32,
    #[serde(default = "default_lockout")]
    lockout_ms: Vec<u64>,
    /// 0: never permanent.
    #[serde(default)]
    max_lockouts: u32,
}

fn default_threshold() -> u32 {
    5
}

fn default_lockout() -> Vec<u64> {
    vec![15 * 60 * 1000]
}

const SCHEMA: &str = r#"{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "type": "object",
  "additionalProperties": false,
  "properties": {
    "threshold": { "type": "integer", "minimum": 1, "maximum": 100, "default": 5,
                   "description": "Failures that trigger a lockout" },
    "lockout_ms": { "type": "array", "minItems": 1, "items": { "type": "integer", "minimum": 0 },
                    "description": "Length of the 1st, 2nd, ... lockout in ms; the last repeats" },
    "max_lockouts": { "type": "integer", "minimum": 0, "default": 0,
                      "description": "Lockouts before the lockout is permanent (0: never)" }
  }
}"#;

impl Plugin for Ladder {
    fn describe() -> PluginInfo {
        PluginInfo::new(
            "example-lockout",
            env!("CARGO_PKG_VERSION"),
            PluginKind::Lockout,
            "FIM-style lockout: threshold, lockout per threshold, permanent after N",
        )
        .with_config_schema(SCHEMA)
    }
}

impl Lockout for Ladder {
    fn decide(ctx: CallContext, history: History) -> Result<Decision, PluginError> {
        let c: Config = ctx.config_with(|s| serde_json::from_str(s))?;
        if c.threshold == 0 || c.lockout_ms.is_empty() {
            return Err(PluginError::BadConfig("threshold and lockout_ms must be set".into()));
        }
        let failures = history.failures_ms.len() as u64;
        let lockouts = failures / u64::from(c.threshold);
        if c.max_lockouts > 0 && lockouts >= u64::from(c.max_lockouts) {
            return Ok(Decision::LockedPermanently);
        }
        if lockouts == 0 || failures % u64::from(c.threshold) != 0 {
            return Ok(Decision::Allowed);
        }
        let idx = ((lockouts - 1) as usize).min(c.lockout_ms.len() - 1);
        let last = history.failures_ms.last().copied().unwrap_or(0);
        let until = last.saturating_add(c.lockout_ms[idx]);
        Ok(if ctx.now_ms < until { Decision::LockedUntil(until) } else { Decision::Allowed })
    }
}

resetgate_plugin_sdk::export_lockout!(Ladder);
