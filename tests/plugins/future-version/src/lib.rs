//! A gate built against `resetgate:plugin@0.3.0`, which this gateway does not speak.

wit_bindgen::generate!({ world: "gate", path: "wit" });

struct Future;

impl exports::resetgate::plugin::gate_api::Guest for Future {
    fn describe() -> String {
        "from the future".into()
    }
}

export!(Future);
