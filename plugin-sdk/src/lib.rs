//! The SDK for resetgate plugins.
//!
//! A resetgate plugin is a WebAssembly component that implements one kind of
//! workflow step: an identity [`Gate`], a [`Lockout`] rule, a [`Directory`]
//! connector, a [`VpnHook`] or a [`SyncTarget`]. You write a plain Rust type,
//! implement [`Plugin`] and the trait of its kind, and hand the type to the
//! matching export macro:
//!
//! ```no_run
//! use resetgate_plugin_sdk::prelude::*;
//! use resetgate_plugin_sdk::lockout::{Decision, History};
//!
//! struct Never;
//!
//! impl Plugin for Never {
//!     fn describe() -> PluginInfo {
//!         PluginInfo::new("never", "0.1.0", PluginKind::Lockout, "never locks anyone out")
//!     }
//! }
//!
//! impl Lockout for Never {
//!     fn decide(_ctx: CallContext, _history: History) -> Result<Decision, PluginError> {
//!         Ok(Decision::Allowed)
//!     }
//! }
//!
//! resetgate_plugin_sdk::export_lockout!(Never);
//! ```
//!
//! Build it with `cargo build --target wasm32-wasip2 --release`; the `.wasm`
//! file in `target/wasm32-wasip2/release/` is the plugin. The contract is the
//! WIT package `resetgate:plugin@0.2.1` in this crate's `wit/` folder.
//!
//! Plugins keep no state between calls: every call runs in a fresh instance.
//! What must survive a round (which questions were asked, a code's hash) is
//! returned to the host and handed back on the next call.

#![allow(unsafe_code)] // the generated bindings are `unsafe` glue code

extern crate self as resetgate_plugin_sdk;

/// Generated bindings. Use the re-exports in this crate instead; these are
/// public only because the export macros expand in your crate.
#[doc(hidden)]
#[allow(missing_docs, clippy::all)]
pub mod bindings {
    /// Imports shared by every world, generated once.
    pub mod base {
        wit_bindgen::generate!({
            world: "capabilities",
            path: "wit",
            generate_all,
            runtime_path: "resetgate_plugin_sdk::__private::wit_bindgen::rt",
        });
    }

    macro_rules! world {
        ($module:ident, $world:literal, $macro:literal, $path:literal) => {
            pub mod $module {
                wit_bindgen::generate!({
                    world: $world,
                    path: "wit",
                    runtime_path: "resetgate_plugin_sdk::__private::wit_bindgen::rt",
                    pub_export_macro: true,
                    export_macro_name: $macro,
                    default_bindings_module: $path,
                    with: {
                        "resetgate:plugin/types@0.2.1": crate::bindings::base::resetgate::plugin::types,
                        "resetgate:plugin/log@0.2.1": crate::bindings::base::resetgate::plugin::log,
                        "resetgate:plugin/clock@0.2.1": crate::bindings::base::resetgate::plugin::clock,
                        "resetgate:plugin/locale@0.2.1": crate::bindings::base::resetgate::plugin::locale,
                        "resetgate:plugin/random@0.2.1": crate::bindings::base::resetgate::plugin::random,
                        "resetgate:plugin/slow-hash@0.2.1": crate::bindings::base::resetgate::plugin::slow_hash,
                        "resetgate:plugin/credential@0.2.1": crate::bindings::base::resetgate::plugin::credential,
                        "resetgate:plugin/http@0.2.1": crate::bindings::base::resetgate::plugin::http,
                        "resetgate:plugin/ldap@0.2.1": crate::bindings::base::resetgate::plugin::ldap,
                        "resetgate:plugin/secrets@0.2.1": crate::bindings::base::resetgate::plugin::secrets,
                        "resetgate:plugin/commands@0.2.1": crate::bindings::base::resetgate::plugin::commands,
                        "resetgate:plugin/probe@0.2.1": crate::bindings::base::resetgate::plugin::probe,
                        "resetgate:plugin/kv@0.2.1": crate::bindings::base::resetgate::plugin::kv,
                    },
                });
            }
        };
    }

    world!(
        gate,
        "gate",
        "__export_gate_world",
        "resetgate_plugin_sdk::bindings::gate"
    );
    world!(
        lockout,
        "lockout",
        "__export_lockout_world",
        "resetgate_plugin_sdk::bindings::lockout"
    );
    world!(
        directory,
        "directory",
        "__export_directory_world",
        "resetgate_plugin_sdk::bindings::directory"
    );
    world!(
        vpn_hook,
        "vpn-hook",
        "__export_vpn_hook_world",
        "resetgate_plugin_sdk::bindings::vpn_hook"
    );
    world!(
        sync_target,
        "sync-target",
        "__export_sync_target_world",
        "resetgate_plugin_sdk::bindings::sync_target"
    );
}

#[doc(hidden)]
pub mod __private {
    pub use wit_bindgen;
}

mod capabilities;
mod kinds;

pub use capabilities::*;
pub use kinds::*;

/// The contract version this SDK builds against.
pub const CONTRACT_VERSION: &str = "0.2.1";

/// Everything a plugin usually needs, in one `use`.
pub mod prelude {
    pub use crate::{
        CallContext, Directory, Gate, Lockout, Plugin, PluginError, PluginInfo, PluginKind,
        SyncTarget, User, VpnHook,
    };
}
