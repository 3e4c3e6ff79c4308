//! The five kinds of plugin: one trait each, and the macro that exports a
//! type implementing it as a component.

use crate::{CallContext, PluginError, PluginInfo, Secret, User};

/// What every plugin implements: what it is.
pub trait Plugin {
    /// Name, version, kind, config schema and summary. Must not fail and
    /// must not depend on the time or randomness.
    fn describe() -> PluginInfo;
}

/// Records of the gate contract.
pub mod gate {
    pub use crate::bindings::gate::exports::resetgate::plugin::gate_api::{
        Display, Field, FieldKind, FieldValue, Prompt, Round, Verdict,
    };

    impl FieldValue {
        /// The answer named `name`, if the portal sent one.
        pub fn find<'a>(answers: &'a [FieldValue], name: &str) -> Option<&'a str> {
            answers
                .iter()
                .find(|a| a.name == name)
                .map(|a| a.value.as_str())
        }
    }
}

/// Records of the lockout contract.
pub mod lockout {
    pub use crate::bindings::lockout::exports::resetgate::plugin::lockout_api::{
        Decision, History,
    };
}

/// Records of the directory contract.
pub mod directory {
    pub use crate::bindings::directory::exports::resetgate::plugin::directory_api::SetPasswordError;
}

/// Records of the sync-target contract.
pub mod sync_target {
    pub use crate::bindings::sync_target::exports::resetgate::plugin::sync_target_api::{
        Change, PushError,
    };
}

/// An identity gate (security questions, one-time codes, ...). Export with
/// [`export_gate!`](crate::export_gate).
pub trait Gate: Plugin {
    /// The first round of registering this gate's data: the prompt, and
    /// state the host keeps (sealed at rest) and hands to
    /// [`enroll`](Gate::enroll). The default says the gate needs no
    /// registration.
    fn enroll_prompt(_ctx: CallContext, _user: User) -> Result<gate::Round, PluginError> {
        Err(PluginError::Refused("this gate needs no enrollment".into()))
    }
    /// Turns registration input (and the enrollment round's `state`) into
    /// the data the host stores for the user, sealed at rest. Hash what only
    /// needs comparing (answers) with [`slow_hash`](crate::slow_hash) first.
    fn enroll(
        _ctx: CallContext,
        _user: User,
        _state: Vec<u8>,
        _input: Vec<gate::FieldValue>,
    ) -> Result<Vec<u8>, PluginError> {
        Err(PluginError::Refused("this gate needs no enrollment".into()))
    }
    /// Starts the gate: the first round's prompt and state.
    fn begin(
        ctx: CallContext,
        user: User,
        enrollment: Option<Vec<u8>>,
    ) -> Result<gate::Round, PluginError>;
    /// Checks answers to the round whose `state` the host hands back.
    fn answer(
        ctx: CallContext,
        user: User,
        enrollment: Option<Vec<u8>>,
        state: Vec<u8>,
        answers: Vec<gate::FieldValue>,
    ) -> Result<gate::Verdict, PluginError>;
}

/// A lockout rule: a pure function of the failure history. Export with
/// [`export_lockout!`](crate::export_lockout).
pub trait Lockout: Plugin {
    /// Whether the user may try at `ctx.now_ms`.
    fn decide(
        ctx: CallContext,
        history: lockout::History,
    ) -> Result<lockout::Decision, PluginError>;
}

/// A directory connector. Export with [`export_directory!`](crate::export_directory).
pub trait Directory: Plugin {
    /// Looks a user up by the name they typed.
    fn find_user(ctx: CallContext, name: String) -> Result<Option<User>, PluginError>;
    /// Whether `password` is the user's current password.
    fn verify_password(
        ctx: CallContext,
        user: User,
        password: &Secret,
    ) -> Result<bool, PluginError>;
    /// Sets the password; `must_change` forces a change at next logon.
    fn set_password(
        ctx: CallContext,
        user: User,
        password: &Secret,
        must_change: bool,
    ) -> Result<(), directory::SetPasswordError>;
    /// Marks the current password expired.
    fn expire_password(ctx: CallContext, user: User) -> Result<(), PluginError>;
    /// Clears the directory's own lockout.
    fn unlock(ctx: CallContext, user: User) -> Result<(), PluginError>;
    /// Whether the directory can be reached now.
    fn reachable(ctx: CallContext) -> bool;
}

/// A VPN hook. Export with [`export_vpn_hook!`](crate::export_vpn_hook).
pub trait VpnHook: Plugin {
    /// Brings the tunnel up.
    fn connect(ctx: CallContext, user: Option<User>) -> Result<(), PluginError>;
    /// Takes the tunnel down.
    fn disconnect(ctx: CallContext) -> Result<(), PluginError>;
    /// Whether the network behind the tunnel is reachable now.
    fn probe(ctx: CallContext) -> bool;
}

/// A password sync target. Export with [`export_sync_target!`](crate::export_sync_target).
pub trait SyncTarget: Plugin {
    /// Delivers one change. Must be idempotent on `change.idempotency_key`.
    fn push(
        ctx: CallContext,
        change: sync_target::Change,
        password: &Secret,
    ) -> Result<(), sync_target::PushError>;
}

/// Exports a type implementing [`Gate`] as the plugin's component.
#[macro_export]
macro_rules! export_gate {
    ($ty:ty) => {
        const _: () = {
            use $crate::bindings::gate::exports::resetgate::plugin as __w;
            struct __ResetgatePlugin;
            impl __w::gate_api::Guest for __ResetgatePlugin {
                fn describe() -> $crate::PluginInfo {
                    <$ty as $crate::Plugin>::describe()
                }
                fn enroll_prompt(ctx: $crate::CallContext, user: $crate::User) -> Result<$crate::gate::Round, $crate::PluginError> {
                    <$ty as $crate::Gate>::enroll_prompt(ctx, user)
                }
                fn enroll(ctx: $crate::CallContext, user: $crate::User, state: Vec<u8>, input: Vec<$crate::gate::FieldValue>) -> Result<Vec<u8>, $crate::PluginError> {
                    <$ty as $crate::Gate>::enroll(ctx, user, state, input)
                }
                fn begin(ctx: $crate::CallContext, user: $crate::User, enrollment: Option<Vec<u8>>) -> Result<$crate::gate::Round, $crate::PluginError> {
                    <$ty as $crate::Gate>::begin(ctx, user, enrollment)
                }
                fn answer(
                    ctx: $crate::CallContext,
                    user: $crate::User,
                    enrollment: Option<Vec<u8>>,
                    state: Vec<u8>,
                    answers: Vec<$crate::gate::FieldValue>,
                ) -> Result<$crate::gate::Verdict, $crate::PluginError> {
                    <$ty as $crate::Gate>::answer(ctx, user, enrollment, state, answers)
                }
            }
            $crate::bindings::gate::__export_gate_world!(__ResetgatePlugin with_types_in $crate::bindings::gate);
        };
    };
}

/// Exports a type implementing [`Lockout`] as the plugin's component.
#[macro_export]
macro_rules! export_lockout {
    ($ty:ty) => {
        const _: () = {
            use $crate::bindings::lockout::exports::resetgate::plugin as __w;
            struct __ResetgatePlugin;
            impl __w::lockout_api::Guest for __ResetgatePlugin {
                fn describe() -> $crate::PluginInfo {
                    <$ty as $crate::Plugin>::describe()
                }
                fn decide(ctx: $crate::CallContext, history: $crate::lockout::History) -> Result<$crate::lockout::Decision, $crate::PluginError> {
                    <$ty as $crate::Lockout>::decide(ctx, history)
                }
            }
            $crate::bindings::lockout::__export_lockout_world!(__ResetgatePlugin with_types_in $crate::bindings::lockout);
        };
    };
}

/// Exports a type implementing [`Directory`] as the plugin's component.
#[macro_export]
macro_rules! export_directory {
    ($ty:ty) => {
        const _: () = {
            use $crate::bindings::directory::exports::resetgate::plugin as __w;
            struct __ResetgatePlugin;
            impl __w::directory_api::Guest for __ResetgatePlugin {
                fn describe() -> $crate::PluginInfo {
                    <$ty as $crate::Plugin>::describe()
                }
                fn find_user(ctx: $crate::CallContext, name: String) -> Result<Option<$crate::User>, $crate::PluginError> {
                    <$ty as $crate::Directory>::find_user(ctx, name)
                }
                fn verify_password(ctx: $crate::CallContext, user: $crate::User, password: &$crate::Secret) -> Result<bool, $crate::PluginError> {
                    <$ty as $crate::Directory>::verify_password(ctx, user, password)
                }
                fn set_password(
                    ctx: $crate::CallContext,
                    user: $crate::User,
                    password: &$crate::Secret,
                    must_change: bool,
                ) -> Result<(), $crate::directory::SetPasswordError> {
                    <$ty as $crate::Directory>::set_password(ctx, user, password, must_change)
                }
                fn expire_password(ctx: $crate::CallContext, user: $crate::User) -> Result<(), $crate::PluginError> {
                    <$ty as $crate::Directory>::expire_password(ctx, user)
                }
                fn unlock(ctx: $crate::CallContext, user: $crate::User) -> Result<(), $crate::PluginError> {
                    <$ty as $crate::Directory>::unlock(ctx, user)
                }
                fn reachable(ctx: $crate::CallContext) -> bool {
                    <$ty as $crate::Directory>::reachable(ctx)
                }
            }
            $crate::bindings::directory::__export_directory_world!(__ResetgatePlugin with_types_in $crate::bindings::directory);
        };
    };
}

/// Exports a type implementing [`VpnHook`] as the plugin's component.
#[macro_export]
macro_rules! export_vpn_hook {
    ($ty:ty) => {
        const _: () = {
            use $crate::bindings::vpn_hook::exports::resetgate::plugin as __w;
            struct __ResetgatePlugin;
            impl __w::vpn_hook_api::Guest for __ResetgatePlugin {
                fn describe() -> $crate::PluginInfo {
                    <$ty as $crate::Plugin>::describe()
                }
                fn connect(ctx: $crate::CallContext, user: Option<$crate::User>) -> Result<(), $crate::PluginError> {
                    <$ty as $crate::VpnHook>::connect(ctx, user)
                }
                fn disconnect(ctx: $crate::CallContext) -> Result<(), $crate::PluginError> {
                    <$ty as $crate::VpnHook>::disconnect(ctx)
                }
                fn probe(ctx: $crate::CallContext) -> bool {
                    <$ty as $crate::VpnHook>::probe(ctx)
                }
            }
            $crate::bindings::vpn_hook::__export_vpn_hook_world!(__ResetgatePlugin with_types_in $crate::bindings::vpn_hook);
        };
    };
}

/// Exports a type implementing [`SyncTarget`] as the plugin's component.
#[macro_export]
macro_rules! export_sync_target {
    ($ty:ty) => {
        const _: () = {
            use $crate::bindings::sync_target::exports::resetgate::plugin as __w;
            struct __ResetgatePlugin;
            impl __w::sync_target_api::Guest for __ResetgatePlugin {
                fn describe() -> $crate::PluginInfo {
                    <$ty as $crate::Plugin>::describe()
                }
                fn push(
                    ctx: $crate::CallContext,
                    change: $crate::sync_target::Change,
                    password: &$crate::Secret,
                ) -> Result<(), $crate::sync_target::PushError> {
                    <$ty as $crate::SyncTarget>::push(ctx, change, password)
                }
            }
            $crate::bindings::sync_target::__export_sync_target_world!(__ResetgatePlugin with_types_in $crate::bindings::sync_target);
        };
    };
}
