//! A gate that imports the HTTP capability, to check that the host refuses
//! it at load unless the step grants it.

use resetgate_plugin_sdk::gate::{FieldValue, Prompt, Round, Verdict};
use resetgate_plugin_sdk::http::{Request, send};
use resetgate_plugin_sdk::prelude::*;

struct WantsHttp;

impl Plugin for WantsHttp {
    fn describe() -> PluginInfo {
        PluginInfo::new("wants-http", "0.1.0", PluginKind::Gate, "calls out over HTTP")
    }
}

impl Gate for WantsHttp {
    fn begin(_ctx: CallContext, _user: User, _enrollment: Option<Vec<u8>>) -> Result<Round, PluginError> {
        let req = Request { method: "GET".into(), url: "https://example.com/".into(), headers: vec![], body: vec![], timeout_ms: 100 };
        let title = match send(&req) {
            Ok(r) => format!("status {}", r.status),
            Err(_) => "failed".into(),
        };
        Ok(Round { prompt: Prompt { title, help: None, display: vec![], fields: vec![] }, state: vec![] })
    }

    fn answer(_: CallContext, _: User, _: Option<Vec<u8>>, _: Vec<u8>, _: Vec<FieldValue>) -> Result<Verdict, PluginError> {
        Ok(Verdict::Passed)
    }
}

resetgate_plugin_sdk::export_gate!(WantsHttp);
