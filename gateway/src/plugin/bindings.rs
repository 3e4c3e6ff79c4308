//! Host bindings generated from the SDK's WIT: one `bindgen!` for the shared
//! capability imports and one per world, all pointing at `plugin-sdk/wit`.

#![allow(missing_docs, clippy::all)]

/// The capability interfaces every world imports, generated once and shared.
pub mod base {
    wasmtime::component::bindgen!({
        world: "capabilities",
        path: "../plugin-sdk/wit",
        imports: { default: trappable },
        with: {
            "resetgate:plugin/credential.secret": crate::plugin::state::SecretHandle,
        },
    });
}

macro_rules! world {
    ($module:ident, $world:literal) => {
        pub mod $module {
            wasmtime::component::bindgen!({
                world: $world,
                path: "../plugin-sdk/wit",
                imports: { default: trappable },
                with: {
                    "resetgate:plugin/types": super::base::resetgate::plugin::types,
                    "resetgate:plugin/log": super::base::resetgate::plugin::log,
                    "resetgate:plugin/clock": super::base::resetgate::plugin::clock,
                    "resetgate:plugin/locale": super::base::resetgate::plugin::locale,
                    "resetgate:plugin/random": super::base::resetgate::plugin::random,
                    "resetgate:plugin/slow-hash": super::base::resetgate::plugin::slow_hash,
                    "resetgate:plugin/credential": super::base::resetgate::plugin::credential,
                    "resetgate:plugin/http": super::base::resetgate::plugin::http,
                    "resetgate:plugin/ldap": super::base::resetgate::plugin::ldap,
                    "resetgate:plugin/secrets": super::base::resetgate::plugin::secrets,
                    "resetgate:plugin/commands": super::base::resetgate::plugin::commands,
                    "resetgate:plugin/probe": super::base::resetgate::plugin::probe,
                    "resetgate:plugin/kv": super::base::resetgate::plugin::kv,
                },
            });
        }
    };
}

world!(gate, "gate");
world!(lockout, "lockout");
world!(directory, "directory");
world!(vpn_hook, "vpn-hook");
world!(sync_target, "sync-target");
