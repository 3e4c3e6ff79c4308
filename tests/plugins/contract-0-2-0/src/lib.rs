//! `plain-gate` built against the contract as `resetgate:plugin@0.2.0`
//! released it (`wit/plugin.wit`, a copy kept as it was): the gateway
//! speaks 0.2.1, which only adds, so a plugin a vendor built before keeps
//! loading and working (`tests/integration/languages.rs`).

wit_bindgen::generate!({
    path: "wit",
    world: "resetgate:plugin/gate",
});

include!("../../plain-gate/src/gate.rs");
