//! Typed calls into each kind of plugin, and the conversions between the
//! generated bindings and the gateway's contract types.

use wasmtime::Store;
use wasmtime::component::{InstancePre, Resource};

use super::bindings::base::resetgate::plugin::types as wt;
use super::bindings::{directory, gate, lockout, sync_target, vpn_hook};
use super::state::{HostState, SecretHandle};
use super::{CallError, Plugin, Site};
use crate::contract::{
    CallContext, Change, Decision, Display, Field, FieldKind, FieldValue, History, PluginFailure,
    PluginInfo, PluginKind, Prompt, PushFailure, Round, SetPasswordFailure, User, Verdict,
};
use crate::secret::Secret;

use directory::exports::resetgate::plugin::directory_api as wd;
use gate::exports::resetgate::plugin::gate_api as wg;
use lockout::exports::resetgate::plugin::lockout_api as wl;
use sync_target::exports::resetgate::plugin::sync_target_api as ws;

/// A component linked and ready to instantiate, typed by its world.
pub(super) enum Pre {
    Gate(gate::GatePre<HostState>),
    Lockout(lockout::LockoutPre<HostState>),
    Directory(directory::DirectoryPre<HostState>),
    VpnHook(vpn_hook::VpnHookPre<HostState>),
    SyncTarget(sync_target::SyncTargetPre<HostState>),
}

/// The exports of one instance.
pub(super) enum Bound {
    Gate(gate::Gate),
    Lockout(lockout::Lockout),
    Directory(directory::Directory),
    VpnHook(vpn_hook::VpnHook),
    SyncTarget(sync_target::SyncTarget),
}

/// A fresh instance in its own store, for exactly one call.
pub(super) struct Fresh {
    pub store: Store<HostState>,
    pub bound: Bound,
}

impl Pre {
    pub fn new(kind: PluginKind, pre: InstancePre<HostState>) -> wasmtime::Result<Pre> {
        Ok(match kind {
            PluginKind::Gate => Pre::Gate(gate::GatePre::new(pre)?),
            PluginKind::Lockout => Pre::Lockout(lockout::LockoutPre::new(pre)?),
            PluginKind::Directory => Pre::Directory(directory::DirectoryPre::new(pre)?),
            PluginKind::VpnHook => Pre::VpnHook(vpn_hook::VpnHookPre::new(pre)?),
            PluginKind::SyncTarget => Pre::SyncTarget(sync_target::SyncTargetPre::new(pre)?),
        })
    }

    pub fn instantiate(&self, store: &mut Store<HostState>) -> wasmtime::Result<Bound> {
        Ok(match self {
            Pre::Gate(p) => Bound::Gate(p.instantiate(store)?),
            Pre::Lockout(p) => Bound::Lockout(p.instantiate(store)?),
            Pre::Directory(p) => Bound::Directory(p.instantiate(store)?),
            Pre::VpnHook(p) => Bound::VpnHook(p.instantiate(store)?),
            Pre::SyncTarget(p) => Bound::SyncTarget(p.instantiate(store)?),
        })
    }
}

// ----- conversions ---------------------------------------------------------

fn ctx_in(c: &CallContext) -> wt::CallContext {
    wt::CallContext {
        flow_id: c.flow_id.clone(),
        workflow: c.workflow.clone(),
        step: c.step.clone(),
        config: c.config.clone(),
        now_ms: c.now_ms,
    }
}

fn user_in(u: &User) -> wt::User {
    wt::User {
        id: u.id.clone(),
        name: u.name.clone(),
        attributes: u.attributes.clone(),
    }
}

fn user_out(u: wt::User) -> User {
    User {
        id: u.id,
        name: u.name,
        attributes: u.attributes,
    }
}

/// What one element of a list (or one record in it) counts toward the
/// output limit on top of its strings' bytes: an empty string or field is
/// not free, so a million of them cannot hide under the limit.
pub const ELEMENT_COST: usize = 16;
/// The most fields one prompt may have.
pub const MAX_FIELDS: usize = 32;
/// The most choices one `choice` field may have.
pub const MAX_CHOICES: usize = 256;
/// The most display items one prompt may have.
pub const MAX_DISPLAY: usize = 8;
/// The longest text a QR code display item may carry, in bytes (a QR code
/// holds at most 2,953 bytes; 1 KiB keeps it scannable from a screen).
pub const MAX_QR_TEXT: usize = 1024;
/// The most a round (its prompt and state, counted as for the output
/// limit) may weigh: it is kept with the flow, whatever the step's output
/// limit.
pub const MAX_ROUND: usize = 256 << 10;

fn str_size(s: &str) -> usize {
    s.len() + ELEMENT_COST
}

fn user_size(u: &wt::User) -> usize {
    ELEMENT_COST
        + str_size(&u.id)
        + str_size(&u.name)
        + u.attributes
            .iter()
            .map(|(k, v)| ELEMENT_COST + str_size(k) + str_size(v))
            .sum::<usize>()
}

fn failure_out(e: wt::PluginError) -> PluginFailure {
    match e {
        wt::PluginError::BadConfig(m) => PluginFailure::BadConfig(m),
        wt::PluginError::Unavailable(m) => PluginFailure::Unavailable(m),
        wt::PluginError::Refused(m) => PluginFailure::Refused(m),
        wt::PluginError::Internal(m) => PluginFailure::Internal(m),
    }
}

fn failure_size(e: &wt::PluginError) -> usize {
    match e {
        wt::PluginError::BadConfig(m)
        | wt::PluginError::Unavailable(m)
        | wt::PluginError::Refused(m)
        | wt::PluginError::Internal(m) => str_size(m),
    }
}

fn kind_out(k: wt::PluginKind) -> PluginKind {
    match k {
        wt::PluginKind::Gate => PluginKind::Gate,
        wt::PluginKind::Lockout => PluginKind::Lockout,
        wt::PluginKind::Directory => PluginKind::Directory,
        wt::PluginKind::VpnHook => PluginKind::VpnHook,
        wt::PluginKind::SyncTarget => PluginKind::SyncTarget,
    }
}

fn prompt_out(p: wg::Prompt) -> Prompt {
    Prompt {
        title: p.title,
        help: p.help,
        display: p
            .display
            .into_iter()
            .map(|d| match d {
                wg::Display::Text(t) => Display::Text(t),
                wg::Display::Code(t) => Display::Code(t),
                wg::Display::QrCode(t) => Display::QrCode(t),
            })
            .collect(),
        fields: p
            .fields
            .into_iter()
            .map(|f| Field {
                name: f.name,
                label: f.label,
                kind: match f.kind {
                    wg::FieldKind::Text => FieldKind::Text,
                    wg::FieldKind::Secret => FieldKind::Secret,
                    wg::FieldKind::Code => FieldKind::Code,
                    wg::FieldKind::Choice(c) => FieldKind::Choice(c),
                },
                max_length: f.max_length,
            })
            .collect(),
    }
}

fn prompt_size(p: &wg::Prompt) -> usize {
    ELEMENT_COST
        + str_size(&p.title)
        + p.help.as_deref().map_or(0, str_size)
        + p.display
            .iter()
            .map(|d| match d {
                wg::Display::Text(t) | wg::Display::Code(t) | wg::Display::QrCode(t) => str_size(t),
            })
            .sum::<usize>()
        + p.fields
            .iter()
            .map(|f| {
                ELEMENT_COST
                    + str_size(&f.name)
                    + str_size(&f.label)
                    + match &f.kind {
                        wg::FieldKind::Choice(c) => c.iter().map(|c| str_size(c)).sum(),
                        _ => 0,
                    }
            })
            .sum::<usize>()
}

fn round_size(r: &wg::Round) -> usize {
    prompt_size(&r.prompt) + r.state.len() + ELEMENT_COST
}

/// A prompt's shape: at most [`MAX_FIELDS`] fields with distinct names, at
/// most [`MAX_CHOICES`] choices per field.
fn check_prompt(plugin: &Plugin, p: &wg::Prompt) -> Result<(), CallError> {
    let bad = |reason: String| {
        Err(CallError::BadOutput {
            plugin: plugin.inner.label.to_string(),
            reason,
        })
    };
    if p.fields.len() > MAX_FIELDS {
        return bad(format!(
            "a prompt has {} fields; at most {MAX_FIELDS} are allowed",
            p.fields.len()
        ));
    }
    if p.display.len() > MAX_DISPLAY {
        return bad(format!(
            "a prompt has {} display items; at most {MAX_DISPLAY} are allowed",
            p.display.len()
        ));
    }
    for d in &p.display {
        if let wg::Display::QrCode(t) = d
            && t.len() > MAX_QR_TEXT
        {
            return bad(format!(
                "a QR code's text is {} bytes; at most {MAX_QR_TEXT} are allowed",
                t.len()
            ));
        }
    }
    for (i, f) in p.fields.iter().enumerate() {
        if p.fields[..i].iter().any(|g| g.name == f.name) {
            return bad(format!(
                "a prompt has two fields named {:?}; field names must be unique",
                f.name
            ));
        }
        if let wg::FieldKind::Choice(c) = &f.kind
            && c.len() > MAX_CHOICES
        {
            return bad(format!(
                "field {:?} has {} choices; at most {MAX_CHOICES} are allowed",
                f.name,
                c.len()
            ));
        }
    }
    Ok(())
}

/// A round's shape and weight (see [`MAX_ROUND`]).
fn check_round(plugin: &Plugin, r: &wg::Round) -> Result<(), CallError> {
    check_prompt(plugin, &r.prompt)?;
    check_weight(plugin, round_size(r))
}

/// What is kept with a flow weighs at most [`MAX_ROUND`].
fn check_weight(plugin: &Plugin, size: usize) -> Result<(), CallError> {
    if size > MAX_ROUND {
        return Err(CallError::BadOutput {
            plugin: plugin.inner.label.to_string(),
            reason: format!(
                "a round (prompt and state) weighs {size} bytes; at most {MAX_ROUND} are kept with a flow"
            ),
        });
    }
    Ok(())
}

fn round_out(r: wg::Round) -> Round {
    Round {
        prompt: prompt_out(r.prompt),
        state: r.state,
    }
}

fn answers_in(values: &[FieldValue]) -> Vec<wg::FieldValue> {
    values
        .iter()
        .map(|v| wg::FieldValue {
            name: v.name.clone(),
            value: v.value.expose().to_owned(),
        })
        .collect()
}

fn info_out(plugin: &Plugin, i: wt::PluginInfo) -> Result<PluginInfo, CallError> {
    plugin.check_output(
        ELEMENT_COST
            + str_size(&i.name)
            + str_size(&i.version)
            + str_size(&i.config_schema)
            + str_size(&i.summary),
    )?;
    let bad = |reason: String| CallError::BadOutput {
        plugin: plugin.inner.label.to_string(),
        reason,
    };
    let config_schema: serde_json::Value = serde_json::from_str(&i.config_schema)
        .map_err(|e| bad(format!("config schema is not JSON: {e}")))?;
    if !config_schema.is_object() && !config_schema.is_boolean() {
        return Err(bad("config schema must be a JSON object".into()));
    }
    if i.name.is_empty()
        || !i
            .name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        return Err(bad(format!(
            "name {:?} must be lowercase letters, digits and '-'",
            i.name
        )));
    }
    Ok(PluginInfo {
        name: i.name,
        version: i.version,
        kind: kind_out(i.kind),
        config_schema,
        summary: i.summary,
    })
}

/// Passes a secret to a call as a host-owned handle.
fn secret_in(
    store: &mut Store<HostState>,
    secret: &Secret,
) -> wasmtime::Result<Resource<SecretHandle>> {
    Ok(store.data_mut().table.push(SecretHandle(secret.clone()))?)
}

fn borrow(r: &Resource<SecretHandle>) -> Resource<SecretHandle> {
    Resource::new_borrow(r.rep())
}

// ----- calls ---------------------------------------------------------------

impl Plugin {
    pub(super) fn call_describe(&self) -> Result<PluginInfo, CallError> {
        let site = Site {
            flow: "",
            step: "describe",
            now_ms: None,
            language: "",
        };
        self.call(
            site,
            |store, bound| match bound {
                Bound::Gate(b) => b.resetgate_plugin_gate_api().call_describe(store),
                Bound::Lockout(b) => b.resetgate_plugin_lockout_api().call_describe(store),
                Bound::Directory(b) => b.resetgate_plugin_directory_api().call_describe(store),
                Bound::VpnHook(b) => b.resetgate_plugin_vpn_hook_api().call_describe(store),
                Bound::SyncTarget(b) => b.resetgate_plugin_sync_target_api().call_describe(store),
            },
            |info| info_out(self, info),
        )
    }

    /// Calls into a gate plugin, if this is one.
    pub fn gate(&self) -> Option<GateCalls<'_>> {
        matches!(self.inner.pre, Pre::Gate(_)).then_some(GateCalls(self))
    }

    /// Calls into a lockout plugin, if this is one.
    pub fn lockout(&self) -> Option<LockoutCalls<'_>> {
        matches!(self.inner.pre, Pre::Lockout(_)).then_some(LockoutCalls(self))
    }

    /// Calls into a directory plugin, if this is one.
    pub fn directory(&self) -> Option<DirectoryCalls<'_>> {
        matches!(self.inner.pre, Pre::Directory(_)).then_some(DirectoryCalls(self))
    }

    /// Calls into a VPN hook plugin, if this is one.
    pub fn vpn_hook(&self) -> Option<VpnHookCalls<'_>> {
        matches!(self.inner.pre, Pre::VpnHook(_)).then_some(VpnHookCalls(self))
    }

    /// Calls into a sync-target plugin, if this is one.
    pub fn sync_target(&self) -> Option<SyncTargetCalls<'_>> {
        matches!(self.inner.pre, Pre::SyncTarget(_)).then_some(SyncTargetCalls(self))
    }

    fn wrong_world(&self) -> wasmtime::Error {
        wasmtime::Error::msg(format!(
            "instance of {} is not of the expected world",
            self.inner.label
        ))
    }
}

macro_rules! bound {
    ($plugin:expr, $bound:expr, $variant:ident) => {
        match $bound {
            Bound::$variant(b) => b,
            _ => return Err($plugin.wrong_world()),
        }
    };
}

/// The result of a call that reached the plugin: the plugin's own answer,
/// which may itself be a failure the plugin reports.
pub type Reply<T, E = PluginFailure> = Result<Result<T, E>, CallError>;

fn site(ctx: &CallContext) -> Site<'_> {
    Site {
        flow: &ctx.flow_id,
        step: &ctx.step,
        // In a flow, `clock.now-ms` is the flow's clock.
        now_ms: (!ctx.flow_id.is_empty()).then_some(ctx.now_ms),
        language: &ctx.language,
    }
}

/// Calls into a gate plugin.
pub struct GateCalls<'a>(&'a Plugin);

impl GateCalls<'_> {
    /// The first round of registering the gate's data.
    pub fn enroll_prompt(&self, ctx: &CallContext, user: &User) -> Reply<Round> {
        let p = self.0;
        p.call(
            site(ctx),
            |store, bound| {
                let b = bound!(p, bound, Gate);
                b.resetgate_plugin_gate_api().call_enroll_prompt(
                    store,
                    &ctx_in(ctx),
                    &user_in(user),
                )
            },
            |out| {
                p.check_output(out.as_ref().map_or_else(failure_size, round_size))?;
                if let Ok(round) = &out {
                    // Kept with the flow as a round.
                    check_round(p, round)?;
                }
                Ok(out.map(round_out).map_err(failure_out))
            },
        )
    }

    /// Turns registration input (and the enrollment round's state) into the
    /// data the host stores.
    pub fn enroll(
        &self,
        ctx: &CallContext,
        user: &User,
        state: &[u8],
        input: &[FieldValue],
    ) -> Reply<Vec<u8>> {
        let p = self.0;
        p.call(
            site(ctx),
            |store, bound| {
                let b = bound!(p, bound, Gate);
                b.resetgate_plugin_gate_api().call_enroll(
                    store,
                    &ctx_in(ctx),
                    &user_in(user),
                    state,
                    &answers_in(input),
                )
            },
            |out| {
                p.check_output(out.as_ref().map_or_else(failure_size, Vec::len))?;
                Ok(out.map_err(failure_out))
            },
        )
    }

    /// Starts the gate.
    pub fn begin(&self, ctx: &CallContext, user: &User, enrollment: Option<&[u8]>) -> Reply<Round> {
        let p = self.0;
        p.call(
            site(ctx),
            |store, bound| {
                let b = bound!(p, bound, Gate);
                b.resetgate_plugin_gate_api().call_begin(
                    store,
                    &ctx_in(ctx),
                    &user_in(user),
                    enrollment,
                )
            },
            |out| {
                p.check_output(out.as_ref().map_or_else(failure_size, round_size))?;
                if let Ok(round) = &out {
                    check_round(p, round)?;
                }
                Ok(out.map(round_out).map_err(failure_out))
            },
        )
    }

    /// Checks answers to the round whose `state` is given.
    pub fn answer(
        &self,
        ctx: &CallContext,
        user: &User,
        enrollment: Option<&[u8]>,
        state: &[u8],
        answers: &[FieldValue],
    ) -> Reply<Verdict> {
        let p = self.0;
        p.call(
            site(ctx),
            |store, bound| {
                let b = bound!(p, bound, Gate);
                b.resetgate_plugin_gate_api().call_answer(
                    store,
                    &ctx_in(ctx),
                    &user_in(user),
                    enrollment,
                    state,
                    &answers_in(answers),
                )
            },
            |out| {
                p.check_output(out.as_ref().map_or_else(failure_size, |v| match v {
                    wg::Verdict::Passed => 0,
                    wg::Verdict::Failed(r) => str_size(r),
                    wg::Verdict::AnotherRound(r) => round_size(r),
                }))?;
                if let Ok(wg::Verdict::AnotherRound(round)) = &out {
                    check_round(p, round)?;
                }
                Ok(out
                    .map(|v| match v {
                        wg::Verdict::Passed => Verdict::Passed,
                        wg::Verdict::Failed(r) => Verdict::Failed(r),
                        wg::Verdict::AnotherRound(r) => Verdict::AnotherRound(round_out(r)),
                    })
                    .map_err(failure_out))
            },
        )
    }
}

/// Calls into a lockout plugin.
pub struct LockoutCalls<'a>(&'a Plugin);

impl LockoutCalls<'_> {
    /// Whether the user with this history may try at `ctx.now_ms`.
    pub fn decide(&self, ctx: &CallContext, history: &History) -> Reply<Decision> {
        let p = self.0;
        let h = wl::History {
            failures_ms: history.failures_ms.clone(),
            last_success_ms: history.last_success_ms,
        };
        p.call(
            site(ctx),
            |store, bound| {
                let b = bound!(p, bound, Lockout);
                b.resetgate_plugin_lockout_api()
                    .call_decide(store, &ctx_in(ctx), &h)
            },
            |out| {
                p.check_output(out.as_ref().map_or_else(failure_size, |_| 0))?;
                Ok(out
                    .map(|d| match d {
                        wl::Decision::Allowed => Decision::Allowed,
                        wl::Decision::LockedUntil(t) => Decision::LockedUntil(t),
                        wl::Decision::LockedPermanently => Decision::LockedPermanently,
                    })
                    .map_err(failure_out))
            },
        )
    }
}

/// A reply whose success carries nothing worth measuring.
fn unit_reply<T>(p: &Plugin, out: Result<T, wt::PluginError>) -> Reply<T> {
    p.check_output(out.as_ref().map_or_else(failure_size, |_| 0))?;
    Ok(out.map_err(failure_out))
}

/// Calls into a directory plugin.
pub struct DirectoryCalls<'a>(&'a Plugin);

impl DirectoryCalls<'_> {
    /// Looks a user up by the name they typed.
    pub fn find_user(&self, ctx: &CallContext, name: &str) -> Reply<Option<User>> {
        let p = self.0;
        p.call(
            site(ctx),
            |store, bound| {
                let b = bound!(p, bound, Directory);
                b.resetgate_plugin_directory_api()
                    .call_find_user(store, &ctx_in(ctx), name)
            },
            |out| {
                p.check_output(
                    out.as_ref()
                        .map_or_else(failure_size, |u| u.as_ref().map_or(0, user_size)),
                )?;
                Ok(out.map(|u| u.map(user_out)).map_err(failure_out))
            },
        )
    }

    /// Whether `password` is the user's current password.
    pub fn verify_password(
        &self,
        ctx: &CallContext,
        user: &User,
        password: &Secret,
    ) -> Reply<bool> {
        let p = self.0;
        p.call(
            site(ctx),
            |store, bound| {
                let b = bound!(p, bound, Directory);
                let handle = secret_in(store, password)?;
                b.resetgate_plugin_directory_api().call_verify_password(
                    store,
                    &ctx_in(ctx),
                    &user_in(user),
                    borrow(&handle),
                )
            },
            |out| unit_reply(p, out),
        )
    }

    /// Sets the password; `must_change` forces a change at next logon.
    pub fn set_password(
        &self,
        ctx: &CallContext,
        user: &User,
        password: &Secret,
        must_change: bool,
    ) -> Reply<(), SetPasswordFailure> {
        let p = self.0;
        p.call(
            site(ctx),
            |store, bound| {
                let b = bound!(p, bound, Directory);
                let handle = secret_in(store, password)?;
                b.resetgate_plugin_directory_api().call_set_password(
                    store,
                    &ctx_in(ctx),
                    &user_in(user),
                    borrow(&handle),
                    must_change,
                )
            },
            |out| {
                p.check_output(match &out {
                    Err(wd::SetPasswordError::RejectedByPolicy(m)) => str_size(m),
                    Err(wd::SetPasswordError::Other(e)) => failure_size(e),
                    Ok(()) => 0,
                })?;
                Ok(out.map_err(|e| match e {
                    wd::SetPasswordError::RejectedByPolicy(m) => {
                        SetPasswordFailure::RejectedByPolicy(m)
                    }
                    wd::SetPasswordError::Other(e) => SetPasswordFailure::Other(failure_out(e)),
                }))
            },
        )
    }

    /// Marks the current password expired.
    pub fn expire_password(&self, ctx: &CallContext, user: &User) -> Reply<()> {
        let p = self.0;
        p.call(
            site(ctx),
            |store, bound| {
                let b = bound!(p, bound, Directory);
                b.resetgate_plugin_directory_api().call_expire_password(
                    store,
                    &ctx_in(ctx),
                    &user_in(user),
                )
            },
            |out| unit_reply(p, out),
        )
    }

    /// Clears the directory's own lockout.
    pub fn unlock(&self, ctx: &CallContext, user: &User) -> Reply<()> {
        let p = self.0;
        p.call(
            site(ctx),
            |store, bound| {
                let b = bound!(p, bound, Directory);
                b.resetgate_plugin_directory_api()
                    .call_unlock(store, &ctx_in(ctx), &user_in(user))
            },
            |out| unit_reply(p, out),
        )
    }

    /// Whether the directory can be reached now.
    pub fn reachable(&self, ctx: &CallContext) -> Result<bool, CallError> {
        let p = self.0;
        p.call(
            site(ctx),
            |store, bound| {
                let b = bound!(p, bound, Directory);
                b.resetgate_plugin_directory_api()
                    .call_reachable(store, &ctx_in(ctx))
            },
            Ok,
        )
    }
}

/// Calls into a VPN hook plugin.
pub struct VpnHookCalls<'a>(&'a Plugin);

impl VpnHookCalls<'_> {
    /// Brings the tunnel up.
    pub fn connect(&self, ctx: &CallContext, user: Option<&User>) -> Reply<()> {
        let p = self.0;
        let user = user.map(user_in);
        p.call(
            site(ctx),
            |store, bound| {
                let b = bound!(p, bound, VpnHook);
                b.resetgate_plugin_vpn_hook_api()
                    .call_connect(store, &ctx_in(ctx), user.as_ref())
            },
            |out| unit_reply(p, out),
        )
    }

    /// Takes the tunnel down.
    pub fn disconnect(&self, ctx: &CallContext) -> Reply<()> {
        let p = self.0;
        p.call(
            site(ctx),
            |store, bound| {
                let b = bound!(p, bound, VpnHook);
                b.resetgate_plugin_vpn_hook_api()
                    .call_disconnect(store, &ctx_in(ctx))
            },
            |out| unit_reply(p, out),
        )
    }

    /// Whether the network behind the tunnel is reachable now.
    pub fn probe(&self, ctx: &CallContext) -> Result<bool, CallError> {
        let p = self.0;
        p.call(
            site(ctx),
            |store, bound| {
                let b = bound!(p, bound, VpnHook);
                b.resetgate_plugin_vpn_hook_api()
                    .call_probe(store, &ctx_in(ctx))
            },
            Ok,
        )
    }
}

/// Calls into a sync-target plugin.
pub struct SyncTargetCalls<'a>(&'a Plugin);

impl SyncTargetCalls<'_> {
    /// Delivers one change with its password.
    pub fn push(
        &self,
        ctx: &CallContext,
        change: &Change,
        password: &Secret,
    ) -> Reply<(), PushFailure> {
        let p = self.0;
        let c = ws::Change {
            idempotency_key: change.idempotency_key.clone(),
            user: user_in(&change.user),
            changed_at_ms: change.changed_at_ms,
        };
        p.call(
            site(ctx),
            |store, bound| {
                let b = bound!(p, bound, SyncTarget);
                let handle = secret_in(store, password)?;
                b.resetgate_plugin_sync_target_api().call_push(
                    store,
                    &ctx_in(ctx),
                    &c,
                    borrow(&handle),
                )
            },
            |out| {
                p.check_output(match &out {
                    Err(ws::PushError::Retryable(m) | ws::PushError::Permanent(m)) => str_size(m),
                    Ok(()) => 0,
                })?;
                Ok(out.map_err(|e| match e {
                    ws::PushError::Retryable(m) => PushFailure::Retryable(m),
                    ws::PushError::Permanent(m) => PushFailure::Permanent(m),
                }))
            },
        )
    }
}
