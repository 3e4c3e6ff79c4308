//! What the engine needs to know of a workflow: its steps' ids and modes,
//! the password policy and the time limits — no plugins, so engine tests
//! build one by hand.

use crate::workflow::{FlowLimits, PasswordPolicy, Purpose, SyncMode, VpnMode, Workflow};

/// A gate as the engine sees it.
#[derive(Clone, Debug)]
pub struct GateShape {
    /// The step id.
    pub id: String,
    /// The most rounds per pass.
    pub max_rounds: u32,
}

/// A sync target as the engine sees it.
#[derive(Clone, Debug)]
pub struct SyncShape {
    /// The step id.
    pub id: String,
    /// How it is delivered to.
    pub mode: SyncMode,
}

/// A workflow as the engine sees it.
#[derive(Clone, Debug)]
pub struct Shape {
    /// The workflow's name.
    pub name: String,
    /// Its version.
    pub version: String,
    /// Reset or enrollment.
    pub purpose: Purpose,
    /// Gates in order.
    pub gates: Vec<GateShape>,
    /// The password policy.
    pub password: PasswordPolicy,
    /// Sync targets in file order.
    pub sync: Vec<SyncShape>,
    /// The VPN hook's mode.
    pub vpn: Option<VpnMode>,
    /// Flow time limits.
    pub limits: FlowLimits,
}

impl From<&Workflow> for Shape {
    fn from(wf: &Workflow) -> Shape {
        Shape {
            name: wf.name.clone(),
            version: wf.version.clone(),
            purpose: wf.purpose,
            gates: wf
                .gates
                .iter()
                .map(|g| GateShape {
                    id: g.step.id.clone(),
                    max_rounds: g.max_rounds,
                })
                .collect(),
            password: wf.password.clone(),
            sync: wf
                .sync
                .iter()
                .map(|s| SyncShape {
                    id: s.step.id.clone(),
                    mode: s.mode.clone(),
                })
                .collect(),
            vpn: wf.vpn.as_ref().map(|v| v.mode),
            limits: wf.limits,
        }
    }
}
