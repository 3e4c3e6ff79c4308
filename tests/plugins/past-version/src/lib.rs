//! A gate built against `resetgate:plugin@0.1.0`, the contract before the
//! gateway's: the gateway must refuse it by name.

wit_bindgen::generate!({ world: "gate", path: "wit" });

struct Past;

impl exports::resetgate::plugin::gate_api::Guest for Past {
    fn describe() -> exports::resetgate::plugin::gate_api::PluginInfo {
        unreachable!("never loaded")
    }
    fn enroll_prompt(
        _: exports::resetgate::plugin::gate_api::CallContext,
        _: exports::resetgate::plugin::gate_api::User,
    ) -> Result<exports::resetgate::plugin::gate_api::Prompt, exports::resetgate::plugin::gate_api::PluginError> {
        unreachable!("never loaded")
    }
    fn enroll(
        _: exports::resetgate::plugin::gate_api::CallContext,
        _: exports::resetgate::plugin::gate_api::User,
        _: Vec<exports::resetgate::plugin::gate_api::FieldValue>,
    ) -> Result<Vec<u8>, exports::resetgate::plugin::gate_api::PluginError> {
        unreachable!("never loaded")
    }
    fn begin(
        _: exports::resetgate::plugin::gate_api::CallContext,
        _: exports::resetgate::plugin::gate_api::User,
        _: Option<Vec<u8>>,
    ) -> Result<exports::resetgate::plugin::gate_api::Round, exports::resetgate::plugin::gate_api::PluginError> {
        unreachable!("never loaded")
    }
    fn answer(
        _: exports::resetgate::plugin::gate_api::CallContext,
        _: exports::resetgate::plugin::gate_api::User,
        _: Option<Vec<u8>>,
        _: Vec<u8>,
        _: Vec<exports::resetgate::plugin::gate_api::FieldValue>,
    ) -> Result<exports::resetgate::plugin::gate_api::Verdict, exports::resetgate::plugin::gate_api::PluginError> {
        unreachable!("never loaded")
    }
}

export!(Past);
