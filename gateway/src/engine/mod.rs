//! The flow engine: a pure state machine.
//!
//! [`step`] takes a flow, an event and `now`, and returns the effects the
//! runtime must carry out: plugin calls (whose results come back as events),
//! store writes and audit records. It does no I/O and never reads a clock,
//! so every transition is tested with a fixed clock in microseconds.
//!
//! A flow of a reset workflow goes
//! `Resolving → Gate(0) … Gate(n-1) → AwaitingPassword → Committing →
//! Completed | Failed | Locked | Expired` (and `Committing → Interrupted`
//! when a crash cut a commit short: [`interrupt`], at start-up); an enrollment flow goes
//! `Resolving → Authenticating → Enrolling(0) … → Completed`. The lockout
//! rule is consulted when a flow starts, before every answer is judged, after
//! every failure, and again right before the password is set.

mod flow;
mod shape;

#[cfg(test)]
pub(crate) mod tests;

pub use flow::*;
pub use shape::*;

use crate::contract::{
    Decision, FieldValue, PluginFailure, Round, SetPasswordFailure, User, Verdict,
};
use crate::policy;
use crate::secret::Secret;
use crate::workflow::{OnFailure, Purpose, SyncMode, VpnMode};

/// What happened to a flow: a request from the portal, or the result of an
/// effect the runtime carried out.
#[derive(Debug)]
pub enum Event {
    /// The flow was just created: resolve the user.
    Start,
    /// The portal sent answers to the current round (or enrollment input).
    Answers(Vec<FieldValue>),
    /// The portal sent a password: the new one (reset) or the current one (enrollment).
    Password(Secret),
    /// Result of [`Effect::FindUser`].
    UserFound(Option<User>),
    /// Result of [`Effect::Decide`].
    Decided(Decision),
    /// Result of [`Effect::BeginGate`] / [`Effect::EnrollPrompt`].
    RoundBegun(Round),
    /// Result of [`Effect::Judge`].
    Judged(Verdict),
    /// Result of [`Effect::VerifyPassword`].
    Verified(bool),
    /// Result of [`Effect::Enroll`]: the data to store, or the plugin's refusal.
    Enrolled(Result<Vec<u8>, PluginFailure>),
    /// Result of [`Effect::SetPassword`].
    PasswordSet(Result<(), SetPasswordFailure>),
    /// Result of [`Effect::Push`].
    Pushed {
        /// Which sync target.
        index: usize,
        /// Its answer (`Err` text is for the audit log).
        result: Result<(), String>,
    },
    /// Result of [`Effect::VpnConnect`].
    VpnConnected(Result<(), String>),
    /// Result of [`Effect::EnsureDirectory`]: whether the VPN had to be
    /// brought up, or why the directory stays unreachable.
    DirectoryReady(Result<bool, String>),
    /// A plugin call failed (trap, timeout, plugin error): the flow fails
    /// closed. The text is for the audit log only.
    PluginFailed(String),
}

/// What the runtime must do.
#[derive(Debug)]
pub enum Effect {
    /// Look the user up in the directory → [`Event::UserFound`].
    FindUser {
        /// The name the user typed.
        name: String,
    },
    /// Ask the lockout rule about the user's history → [`Event::Decided`].
    /// Without a lockout rule the runtime answers `Allowed`.
    Decide,
    /// Start gate `index` → [`Event::RoundBegun`].
    BeginGate {
        /// The gate.
        index: usize,
    },
    /// Judge answers to gate `index`'s current round → [`Event::Judged`].
    Judge {
        /// The gate.
        index: usize,
        /// The round's state, as the plugin returned it.
        state: Vec<u8>,
        /// The answers.
        answers: Vec<FieldValue>,
    },
    /// Check the current password (enrollment) → [`Event::Verified`].
    VerifyPassword {
        /// What the user typed.
        password: Secret,
    },
    /// Get gate `index`'s enrollment prompt → [`Event::RoundBegun`].
    EnrollPrompt {
        /// The gate.
        index: usize,
    },
    /// Turn enrollment input into stored data → [`Event::Enrolled`].
    Enroll {
        /// The gate.
        index: usize,
        /// The enrollment round's state.
        state: Vec<u8>,
        /// The input.
        input: Vec<FieldValue>,
    },
    /// Store gate `index`'s enrollment data for the user.
    StoreEnrollment {
        /// The gate.
        index: usize,
        /// What `enroll` returned.
        data: Vec<u8>,
    },
    /// Append a failure at `at_ms` to the user's history.
    RecordFailure {
        /// When.
        at_ms: u64,
    },
    /// The user succeeded: clear the failure history.
    RecordSuccess {
        /// When.
        at_ms: u64,
    },
    /// Persist the flow durably now, before the next effect.
    Checkpoint,
    /// Set the password in the directory → [`Event::PasswordSet`].
    SetPassword {
        /// The normalised new password.
        password: Secret,
    },
    /// Deliver to sync target `index` → [`Event::Pushed`].
    Push {
        /// The target.
        index: usize,
        /// The normalised new password.
        password: Secret,
        /// Same for every delivery of this change.
        idempotency_key: String,
    },
    /// Bring the VPN up (partial mode, after a reset) → [`Event::VpnConnected`].
    VpnConnect,
    /// Full VPN mode, before the flow: probe the directory and bring the VPN
    /// up if it cannot be reached → [`Event::DirectoryReady`].
    EnsureDirectory,
    /// Full VPN mode, when the flow ends: take the VPN down again.
    VpnDisconnect,
    /// Record an audit event.
    Audit(AuditEvent),
}

/// An audit event the engine asks for; the runtime adds time, flow, user
/// and workflow. Never carries a secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditEvent {
    /// e.g. `flow.started`, `gate.failed`, `lockout.locked`.
    pub kind: &'static str,
    /// Details (step ids, reasons, outcomes).
    pub detail: Vec<(&'static str, String)>,
}

fn audit(kind: &'static str, detail: Vec<(&'static str, String)>) -> Effect {
    Effect::Audit(AuditEvent { kind, detail })
}

/// Why the engine refused an event from the portal. The flow is unchanged.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The event does not fit the flow's state (a step skipped or repeated).
    #[error("this step is not expected now")]
    OutOfOrder,
    /// The flow has ended.
    #[error("this flow has ended")]
    Finished,
    /// The flow has ended in a crash mid-commit: whether the password was
    /// changed is not known.
    #[error("this flow was interrupted while the password was being set; its outcome is unknown")]
    Interrupted,
}

impl Refusal {
    /// Why an ended flow refuses everything: [`Refusal::Interrupted`] for a
    /// flow a crash interrupted mid-commit, else [`Refusal::Finished`].
    pub fn ended(state: &State) -> Refusal {
        match state {
            State::Interrupted { .. } => Refusal::Interrupted,
            _ => Refusal::Finished,
        }
    }
}

/// Applies `event` to `flow` at `now`. Returns the effects to carry out, in
/// order; results of plugin-call effects are fed back with another `step`.
pub fn step(flow: &mut Flow, wf: &Shape, event: Event, now: u64) -> Result<Vec<Effect>, Refusal> {
    let mut fx = Vec::new();
    // Time limits apply to every event from the portal.
    if matches!(event, Event::Answers(_) | Event::Password(_)) {
        if flow.state.is_terminal() {
            return Err(Refusal::ended(&flow.state));
        }
        if flow.expired(now) {
            flow.state = State::Expired;
            flow.notice = Some(Notice::Expired);
            fx.push(audit("flow.expired", vec![]));
            fx.push(Effect::Checkpoint);
            return Ok(fx);
        }
        flow.touched_ms = now;
    }
    flow.notice = None;
    match (std::mem::replace(&mut flow.phase, Phase::Idle), event) {
        (Phase::Idle, Event::Start) if flow.state == State::Resolving => {
            fx.push(audit(
                "flow.started",
                vec![("purpose", format!("{:?}", wf.purpose).to_lowercase())],
            ));
            if wf.vpn == Some(VpnMode::Full) {
                flow.phase = Phase::Preparing;
                fx.push(Effect::EnsureDirectory);
            } else {
                fx.push(Effect::FindUser {
                    name: flow.user_name.clone(),
                });
                flow.phase = Phase::Finding;
            }
        }
        (Phase::Preparing, Event::DirectoryReady(ready)) => {
            match ready {
                Ok(used_vpn) => {
                    fx.push(audit("vpn.full", vec![("connected", used_vpn.to_string())]))
                }
                Err(reason) => fx.push(audit("vpn.full", vec![("error", reason)])),
            }
            fx.push(Effect::FindUser {
                name: flow.user_name.clone(),
            });
            flow.phase = Phase::Finding;
        }
        (Phase::Finding, Event::UserFound(user)) => {
            if user.is_none() {
                // A decoy flow: indistinguishable until it fails at a gate.
                fx.push(audit("flow.unknown-user", vec![]));
                flow.decoy = true;
            } else {
                // The same number of records either way: a decoy's start
                // writes what a real one's does.
                fx.push(audit("flow.user-found", vec![]));
            }
            flow.user = user;
            flow.phase = Phase::Deciding(Then::Begin);
            fx.push(Effect::Decide);
        }
        (Phase::Deciding(then), Event::Decided(decision)) => match decision {
            Decision::Allowed => match then {
                Then::Begin => match wf.purpose {
                    Purpose::Reset => begin_gate(flow, wf, 0, &mut fx),
                    Purpose::Enrollment => flow.state = State::Authenticating,
                },
                Then::Judge {
                    index,
                    state,
                    answers,
                } => {
                    flow.phase = Phase::Judging { index };
                    fx.push(Effect::Judge {
                        index,
                        state,
                        answers,
                    });
                }
                Then::AfterFailure => {
                    flow.notice = Some(Notice::WrongAnswer);
                }
                Then::Commit(password) => commit(flow, wf, password, now, &mut fx),
                Then::Verify(password) => {
                    flow.phase = Phase::Verifying;
                    fx.push(Effect::VerifyPassword { password });
                }
            },
            Decision::LockedUntil(_) | Decision::LockedPermanently if then == Then::Begin => {
                // Locked when the flow starts: saying so would tell a caller
                // the name exists (and a gate could message a locked user).
                // The flow runs as a decoy; the lockout answers the first
                // attempt, as it does for an unknown name locked the same way.
                fx.push(audit("lockout.refused-at-start", vec![]));
                flow.decoy = true;
                match wf.purpose {
                    Purpose::Reset => begin_gate(flow, wf, 0, &mut fx),
                    Purpose::Enrollment => flow.state = State::Authenticating,
                }
            }
            Decision::LockedUntil(until) => lock(flow, Some(until), &mut fx),
            Decision::LockedPermanently => lock(flow, None, &mut fx),
        },
        (Phase::Beginning { index }, Event::RoundBegun(round)) => {
            flow.state = State::Gate {
                index,
                round: 1,
                state: round.state,
                prompt: round.prompt,
            };
            flow.phase = Phase::Idle;
        }
        (Phase::Idle, Event::Answers(answers)) => match &flow.state {
            State::Gate { index, state, .. } => {
                let (index, state) = (*index, state.clone());
                flow.phase = Phase::Deciding(Then::Judge {
                    index,
                    state,
                    answers,
                });
                fx.push(Effect::Decide);
            }
            State::Enrolling { index, state, .. } => {
                let (index, state) = (*index, state.clone());
                flow.phase = Phase::Enrolling { index };
                fx.push(Effect::Enroll {
                    index,
                    state,
                    input: answers,
                });
            }
            _ => {
                flow.phase = Phase::Idle;
                return Err(Refusal::OutOfOrder);
            }
        },
        (Phase::Judging { index }, Event::Judged(verdict)) => {
            let gate_id = wf.gates[index].id.clone();
            // A decoy can never pass a gate.
            let verdict = match (flow.decoy || flow.user.is_none(), verdict) {
                (true, Verdict::Passed) => Verdict::Failed("decoy flow".into()),
                (_, v) => v,
            };
            match verdict {
                Verdict::Passed => {
                    fx.push(audit("gate.passed", vec![("gate", gate_id.clone())]));
                    flow.passed.push(gate_id);
                    if index + 1 < wf.gates.len() {
                        begin_gate(flow, wf, index + 1, &mut fx);
                    } else {
                        flow.state = State::AwaitingPassword;
                    }
                }
                Verdict::Failed(reason) => {
                    fx.push(audit(
                        "gate.failed",
                        vec![("gate", gate_id), ("reason", reason)],
                    ));
                    fx.push(Effect::RecordFailure { at_ms: now });
                    flow.phase = Phase::Deciding(Then::AfterFailure);
                    fx.push(Effect::Decide);
                }
                Verdict::AnotherRound(next) => {
                    let rounds = match flow.state {
                        State::Gate { round, .. } => round + 1,
                        _ => 1,
                    };
                    if rounds > wf.gates[index].max_rounds {
                        fx.push(audit(
                            "gate.failed",
                            vec![("gate", gate_id), ("reason", "too many rounds".into())],
                        ));
                        fx.push(Effect::RecordFailure { at_ms: now });
                        flow.phase = Phase::Deciding(Then::AfterFailure);
                        fx.push(Effect::Decide);
                    } else {
                        flow.state = State::Gate {
                            index,
                            round: rounds,
                            state: next.state,
                            prompt: next.prompt,
                        };
                    }
                }
            }
        }
        (Phase::Idle, Event::Password(password)) => match flow.state {
            State::AwaitingPassword => {
                debug_assert!(flow.passed.len() == wf.gates.len());
                let password = policy::normalise(&password);
                let name = flow
                    .user
                    .as_ref()
                    .map_or(flow.user_name.as_str(), |u| u.name.as_str());
                let violations = policy::check(&wf.password, &password, name);
                if violations.is_empty() {
                    // Lockout is checked again right before the password is set.
                    flow.phase = Phase::Deciding(Then::Commit(password));
                    fx.push(Effect::Decide);
                } else {
                    fx.push(audit(
                        "password.refused",
                        vec![(
                            "rules",
                            violations
                                .iter()
                                .map(|v| format!("{v:?}"))
                                .collect::<Vec<_>>()
                                .join(","),
                        )],
                    ));
                    flow.notice = Some(Notice::Policy(violations));
                }
            }
            State::Authenticating => {
                flow.phase = Phase::Deciding(Then::Verify(password));
                fx.push(Effect::Decide);
            }
            _ => return Err(Refusal::OutOfOrder),
        },
        (Phase::Verifying, Event::Verified(ok)) => {
            if ok && !flow.decoy && flow.user.is_some() {
                fx.push(audit("enrollment.authenticated", vec![]));
                fx.push(Effect::RecordSuccess { at_ms: now });
                enroll_prompt(flow, 0, &mut fx);
            } else {
                fx.push(audit("enrollment.wrong-password", vec![]));
                fx.push(Effect::RecordFailure { at_ms: now });
                flow.phase = Phase::Deciding(Then::AfterFailure);
                fx.push(Effect::Decide);
            }
        }
        (Phase::Prompting { index }, Event::RoundBegun(round)) => {
            flow.state = State::Enrolling {
                index,
                prompt: round.prompt,
                state: round.state,
            };
        }
        (Phase::Enrolling { index }, Event::Enrolled(result)) => match result {
            Ok(data) => {
                fx.push(Effect::StoreEnrollment { index, data });
                fx.push(audit(
                    "enrollment.stored",
                    vec![("gate", wf.gates[index].id.clone())],
                ));
                if index + 1 < wf.gates.len() {
                    enroll_prompt(flow, index + 1, &mut fx);
                } else {
                    flow.state = State::Completed {
                        receipt: Receipt::default(),
                    };
                    fx.push(audit("flow.completed", vec![]));
                }
            }
            Err(PluginFailure::Refused(reason)) => {
                // Incomplete or invalid input: the user may try again.
                fx.push(audit(
                    "enrollment.refused",
                    vec![("gate", wf.gates[index].id.clone()), ("reason", reason)],
                ));
                flow.notice = Some(Notice::InvalidInput);
            }
            Err(other) => fail(flow, format!("enrollment plugin failed: {other}"), &mut fx),
        },
        (Phase::Committing, Event::PasswordSet(result)) => match result {
            Ok(()) => {
                fx.push(audit("password.changed", vec![]));
                fx.push(Effect::RecordSuccess { at_ms: now });
                if let State::Committing { receipt, .. } = &mut flow.state {
                    receipt.directory = Outcome::Ok;
                }
                next_sync(flow, wf, 0, &mut fx);
            }
            Err(SetPasswordFailure::RejectedByPolicy(reason)) => {
                fx.push(audit(
                    "password.rejected-by-directory",
                    vec![("reason", reason)],
                ));
                // The directory's own rule: the user may choose another password.
                flow.state = State::AwaitingPassword;
                flow.pending_password = None;
                flow.notice = Some(Notice::DirectoryRefused);
            }
            Err(SetPasswordFailure::Other(e)) => {
                fail(flow, format!("directory failed: {e}"), &mut fx)
            }
        },
        (
            Phase::Pushing { index },
            Event::Pushed {
                index: pushed,
                result,
            },
        ) if pushed == index => {
            let target = &wf.sync[index];
            let outcome = match &result {
                Ok(()) => Outcome::Ok,
                Err(_) => Outcome::Failed,
            };
            fx.push(audit(
                "sync.result",
                vec![
                    ("target", target.id.clone()),
                    ("outcome", format!("{outcome:?}").to_lowercase()),
                ]
                .into_iter()
                .chain(result.err().map(|e| ("reason", e)))
                .collect(),
            ));
            let deny = matches!(
                target.mode,
                SyncMode::Sync {
                    on_failure: OnFailure::Deny,
                    ..
                }
            );
            if let State::Committing { receipt, .. } = &mut flow.state {
                receipt.sync.push((target.id.clone(), outcome));
            }
            if outcome == Outcome::Failed && deny {
                finish(flow, wf, false, &mut fx);
            } else {
                next_sync(flow, wf, index + 1, &mut fx);
            }
        }
        (Phase::Connecting, Event::VpnConnected(result)) => {
            let outcome = if result.is_ok() {
                Outcome::Ok
            } else {
                Outcome::Failed
            };
            fx.push(audit(
                "vpn.result",
                vec![("outcome", format!("{outcome:?}").to_lowercase())],
            ));
            if let State::Committing { receipt, .. } = &mut flow.state {
                receipt.vpn = Some(outcome);
            }
            finish(flow, wf, true, &mut fx);
        }
        (_, Event::PluginFailed(reason)) => fail(flow, reason, &mut fx),
        (phase, _) => {
            // An event that does not fit: nothing changes.
            flow.phase = phase;
            return Err(Refusal::OutOfOrder);
        }
    }
    if flow.phase == Phase::Idle {
        fx.push(Effect::Checkpoint);
    }
    Ok(fx)
}

/// At start-up, for a flow found `Committing`: a crash interrupted the
/// commit after the flow was checkpointed, so the directory may or may not
/// have the new password (it may have set it an instant before the crash),
/// and so may every target after it. Nothing can find out without the
/// password, which is never stored: the flow ends `Interrupted`, every
/// outcome not recorded is `Unknown` (the sync targets and the partial-mode
/// VPN hook the workflow would have run, when `wf` is the flow's workflow),
/// and the person is told to try the new password and reset again if it
/// does not work. Returns the audit event; `None` (and nothing changes) if
/// the flow is not committing.
pub fn interrupt(flow: &mut Flow, wf: Option<&Shape>, now: u64) -> Option<AuditEvent> {
    let State::Committing { receipt } = &flow.state else {
        return None;
    };
    let mut receipt = receipt.clone();
    if receipt.directory == Outcome::Pending {
        receipt.directory = Outcome::Unknown;
    }
    if let Some(wf) = wf {
        for index in sync_order(wf) {
            let id = &wf.sync[index].id;
            if !receipt.sync.iter().any(|(done, _)| done == id) {
                receipt.sync.push((id.clone(), Outcome::Unknown));
            }
        }
        if wf.vpn == Some(VpnMode::Partial) && receipt.vpn.is_none() {
            receipt.vpn = Some(Outcome::Unknown);
        }
    }
    let name = |o: Outcome| format!("{o:?}").to_lowercase();
    let detail = vec![
        ("outcome", "unknown".to_owned()),
        ("directory", name(receipt.directory)),
    ];
    flow.state = State::Interrupted { receipt };
    flow.phase = Phase::Idle;
    flow.pending_password = None;
    // Ended now: the outcome stays readable for as long as any other.
    flow.touched_ms = now;
    Some(AuditEvent {
        kind: "flow.interrupted",
        detail,
    })
}

fn begin_gate(flow: &mut Flow, wf: &Shape, index: usize, fx: &mut Vec<Effect>) {
    debug_assert!(index < wf.gates.len());
    flow.phase = Phase::Beginning { index };
    fx.push(Effect::BeginGate { index });
}

fn enroll_prompt(flow: &mut Flow, index: usize, fx: &mut Vec<Effect>) {
    flow.phase = Phase::Prompting { index };
    fx.push(Effect::EnrollPrompt { index });
}

fn lock(flow: &mut Flow, until: Option<u64>, fx: &mut Vec<Effect>) {
    fx.push(audit(
        "lockout.locked",
        vec![(
            "until",
            until.map_or_else(|| "permanent".to_owned(), |t| t.to_string()),
        )],
    ));
    flow.state = State::Locked { until };
    flow.notice = Some(Notice::Locked);
    flow.pending_password = None;
}

fn fail(flow: &mut Flow, reason: String, fx: &mut Vec<Effect>) {
    fx.push(audit("flow.failed", vec![("reason", reason)]));
    let receipt = match std::mem::replace(&mut flow.state, State::Resolving) {
        State::Committing { receipt } => Some(receipt),
        _ => None,
    };
    flow.state = State::Failed { receipt };
    flow.phase = Phase::Idle;
    flow.pending_password = None;
}

fn commit(flow: &mut Flow, wf: &Shape, password: Secret, _now: u64, fx: &mut Vec<Effect>) {
    if flow.decoy || flow.user.is_none() || flow.passed.len() != wf.gates.len() {
        // Unreachable through `step`; refuse rather than trust it.
        fail(flow, "password set without every gate passed".into(), fx);
        return;
    }
    flow.state = State::Committing {
        receipt: Receipt::default(),
    };
    flow.phase = Phase::Committing;
    // Persist "committing" before the directory is touched: after a crash
    // the flow is known to have been interrupted mid-commit.
    fx.push(Effect::Checkpoint);
    flow.pending_password = Some(password.clone());
    fx.push(Effect::SetPassword { password });
}

/// Sync targets run in order: `on_failure: deny` targets first, so that a
/// refusal is known before any `allow` target has the new password.
fn sync_order(wf: &Shape) -> Vec<usize> {
    let deny = |i: &usize| {
        matches!(
            wf.sync[*i].mode,
            SyncMode::Sync {
                on_failure: OnFailure::Deny,
                ..
            }
        )
    };
    let (mut first, rest): (Vec<usize>, Vec<usize>) = (0..wf.sync.len()).partition(deny);
    first.extend(rest);
    first
}

fn next_sync(flow: &mut Flow, wf: &Shape, position: usize, fx: &mut Vec<Effect>) {
    let order = sync_order(wf);
    // `position` counts targets done so far.
    let done = match &flow.state {
        State::Committing { receipt } => receipt.sync.len(),
        _ => position,
    };
    if let Some(&index) = order.get(done) {
        let Some(password) = flow.pending_password.clone() else {
            fail(flow, "password no longer held for sync".into(), fx);
            return;
        };
        flow.phase = Phase::Pushing { index };
        fx.push(Effect::Push {
            index,
            password,
            idempotency_key: format!("{}:{}", flow.id, wf.sync[index].id),
        });
        return;
    }
    flow.pending_password = None;
    match wf.vpn {
        Some(VpnMode::Partial) => {
            flow.phase = Phase::Connecting;
            fx.push(Effect::VpnConnect);
        }
        _ => finish(flow, wf, true, fx),
    }
}

fn finish(flow: &mut Flow, wf: &Shape, ok: bool, fx: &mut Vec<Effect>) {
    flow.pending_password = None;
    if wf.vpn == Some(VpnMode::Full) {
        fx.push(Effect::VpnDisconnect);
    }
    let receipt = match std::mem::replace(&mut flow.state, State::Resolving) {
        State::Committing { receipt } => receipt,
        _ => Receipt::default(),
    };
    flow.phase = Phase::Idle;
    if ok {
        fx.push(audit("flow.completed", vec![]));
        flow.state = State::Completed { receipt };
    } else {
        fx.push(audit(
            "flow.failed",
            vec![(
                "reason",
                "a sync target with on_failure: deny refused".into(),
            )],
        ));
        flow.state = State::Failed {
            receipt: Some(receipt),
        };
    }
}
