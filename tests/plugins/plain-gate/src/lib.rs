//! The attribute gate (`plugins/attribute-gate`) as a vendor writes it
//! without the Rust SDK: plain `wit-bindgen` against the contract's own
//! `gate` world in `plugin-sdk/wit`. The person types the value of one of
//! their directory attributes (an employee id, ...); the gate compares it
//! with what the directory says, trimmed, case-insensitive, in constant time.
//! A user without the attribute (or an unknown user) fails.
//!
//! The config is the attribute gate's: `attribute`, `label`, optional `help`,
//! `kind` (`text` or `code`) and `max_length`. The component imports only
//! what its code calls (here: nothing), so it needs no grant.

wit_bindgen::generate!({
    path: "../../../plugin-sdk/wit",
    world: "resetgate:plugin/gate",
});

include!("gate.rs");
