//! Built for the lockout world, but describes itself as a gate.

use resetgate_plugin_sdk::lockout::{Decision, History};
use resetgate_plugin_sdk::prelude::*;

struct Liar;

impl Plugin for Liar {
    fn describe() -> PluginInfo {
        PluginInfo::new("liar", "0.1.0", PluginKind::Gate, "claims to be a gate")
    }
}

impl Lockout for Liar {
    fn decide(_ctx: CallContext, _history: History) -> Result<Decision, PluginError> {
        Ok(Decision::Allowed)
    }
}

resetgate_plugin_sdk::export_lockout!(Liar);
