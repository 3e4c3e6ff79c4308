//! What operators do through the admin API, below HTTP: find a user's
//! accounts through the current workflows' directories, read and clear
//! their lockout, list their recent flows from the audit log, and record
//! every operator action in the audit log with the operator's name.
//!
//! A user is named as people type it; each current workflow's directory
//! resolves the name to the key flows use (its user id, or the typed name
//! for a user it does not know), so an operator sees exactly what the
//! workflows' lockout rules see. Plugin error texts go to the log, never
//! into a result.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;

use crate::api::Principal;
use crate::contract::{CallContext, Decision, User};
use crate::history::{Ledger, Mark};
use crate::runtime::{Runtime, user_key_of};
use crate::store::{AuditEntry, AuditQuery, AuditRecord, Change, Commit, StoreError};
use crate::workflow::{Step, Workflow};

/// The most audit entries read for one user's flows.
const FLOW_ENTRIES_MAX: usize = 10_000;

/// Why an operator request failed.
#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A stored lockout history could not be read or written.
    #[error("lockout history: {0}")]
    Corrupt(String),
}

/// A user as one workflow's directory resolves the name.
#[derive(Clone, Debug)]
pub struct Account {
    /// The workflow.
    pub workflow: Arc<Workflow>,
    /// The directory's user, if it knows the name.
    pub user: Option<User>,
    /// Whether the directory failed to answer (then `user` is `None` and
    /// the key is the typed name's).
    pub directory_failed: bool,
    /// The hashed key of the user's lockout history and audit records.
    pub key: String,
}

/// The context of a call an operator's request makes: no flow.
fn ctx(wf: &Workflow, step: &Step, now_ms: u64) -> CallContext {
    CallContext {
        flow_id: String::new(),
        workflow: wf.name.clone(),
        step: step.path.clone(),
        config: step.config.clone(),
        now_ms,
        language: String::new(),
    }
}

/// `name` as every current workflow's directory resolves it, sorted by
/// workflow. Blocking: calls directory plugins.
pub fn accounts(rt: &Runtime, name: &str, now_ms: u64) -> Vec<Account> {
    let mut workflows = rt.current();
    workflows.sort_by(|a, b| a.name.cmp(&b.name));
    workflows
        .into_iter()
        .map(|wf| {
            let found = wf
                .directory
                .plugin
                .directory()
                .map(|d| d.find_user(&ctx(&wf, &wf.directory, now_ms), name));
            let (user, failed) = match found {
                Some(Ok(Ok(user))) => (user, false),
                Some(Ok(Err(e))) => {
                    tracing::warn!(workflow = %wf.name, error = %e, "an operator's lookup: the directory failed");
                    (None, true)
                }
                Some(Err(e)) => {
                    tracing::warn!(workflow = %wf.name, error = %e, "an operator's lookup: the directory call failed");
                    (None, true)
                }
                None => (None, true),
            };
            Account {
                key: user_key_of(user.as_ref(), name),
                workflow: wf,
                user,
                directory_failed: failed,
            }
        })
        .collect()
}

/// Every key `name` is kept under: its accounts' keys and the typed
/// name's, each once.
pub fn keys(accounts: &[Account], name: &str) -> Vec<String> {
    let mut keys: Vec<String> = accounts.iter().map(|a| a.key.clone()).collect();
    keys.push(user_key_of(None, name));
    keys.sort();
    keys.dedup();
    keys
}

fn ledger(rt: &Runtime, key: &str) -> Result<Option<Ledger>, OperatorError> {
    rt.store()
        .lockout(key)?
        .map(|bytes| {
            serde_json::from_slice(&bytes).map_err(|e| OperatorError::Corrupt(e.to_string()))
        })
        .transpose()
}

/// Where a user stands with one workflow's lockout rule.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct LockoutState {
    /// The workflow.
    pub workflow: String,
    /// Whether its directory knows the user.
    pub known: bool,
    /// Whether its directory failed to answer.
    pub directory_failed: bool,
    /// `allowed`, `locked` (until `until_ms`), `locked-permanently`, or
    /// `unknown` (the lockout rule failed; flows are refused).
    pub state: &'static str,
    /// With `locked`: until when (ms since the Unix epoch).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub until_ms: Option<u64>,
    /// The failures the rule counts (every workflow's not cleared by a
    /// success in their own), oldest first.
    pub failures: Vec<FailureView>,
    /// The last success in this workflow.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_success_ms: Option<u64>,
}

/// One failure of a user's history.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct FailureView {
    /// When (ms since the Unix epoch).
    pub at_ms: u64,
    /// In which workflow (empty for records from before failures were
    /// tagged).
    pub workflow: String,
}

/// `name`'s lockout state under every current workflow. Blocking.
pub fn lockout(rt: &Runtime, name: &str, now_ms: u64) -> Result<Vec<LockoutState>, OperatorError> {
    let mut out = Vec::new();
    for a in accounts(rt, name, now_ms) {
        let history = ledger(rt, &a.key)?.unwrap_or_default();
        let view = history.view(&a.workflow.name);
        let decision = match &a.workflow.lockout {
            None => Some(Decision::Allowed),
            Some(step) => match step
                .plugin
                .lockout()
                .map(|l| l.decide(&ctx(&a.workflow, step, now_ms), &view))
            {
                Some(Ok(Ok(d))) => Some(d),
                other => {
                    if let Some(Ok(Err(e))) = &other {
                        tracing::warn!(workflow = %a.workflow.name, error = %e, "an operator's lookup: the lockout rule failed");
                    } else if let Some(Err(e)) = &other {
                        tracing::warn!(workflow = %a.workflow.name, error = %e, "an operator's lookup: the lockout rule's call failed");
                    }
                    None
                }
            },
        };
        let (state, until_ms) = match decision {
            Some(Decision::Allowed) => ("allowed", None),
            Some(Decision::LockedUntil(t)) => ("locked", Some(t)),
            Some(Decision::LockedPermanently) => ("locked-permanently", None),
            None => ("unknown", None),
        };
        let mut failures: Vec<FailureView> = history
            .failures_ms
            .iter()
            .map(|&at_ms| FailureView {
                at_ms,
                workflow: String::new(),
            })
            .chain(
                history
                    .failures
                    .iter()
                    .map(|Mark { at_ms, workflow }| FailureView {
                        at_ms: *at_ms,
                        workflow: workflow.clone(),
                    }),
            )
            .collect();
        failures.sort_by_key(|f| f.at_ms);
        out.push(LockoutState {
            workflow: a.workflow.name.clone(),
            known: a.user.is_some(),
            directory_failed: a.directory_failed,
            state,
            until_ms,
            failures,
            last_success_ms: view.last_success_ms,
        });
    }
    Ok(out)
}

/// What clearing a lockout did.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct Unlocked {
    /// Failures removed from the user's histories.
    pub failures_cleared: usize,
    /// Each directory asked to unlock the account (once per directory and
    /// user).
    pub directories: Vec<DirectoryUnlock>,
}

/// One directory's `unlock`.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct DirectoryUnlock {
    /// The directory plugin's name.
    pub directory: String,
    /// The workflow whose directory step was called.
    pub workflow: String,
    /// `ok` or `failed` (why is in the gateway's log).
    pub result: &'static str,
}

/// An audit record of an operator's action.
pub fn operator_record(
    operator: &Principal,
    now_ms: u64,
    action: &str,
    user: Option<String>,
    mut detail: serde_json::Map<String, serde_json::Value>,
) -> AuditRecord {
    detail.insert("operator".into(), operator.name().into());
    if let Some(role) = operator.kind().role() {
        detail.insert("role".into(), role.as_str().into());
    }
    AuditRecord {
        at_ms: now_ms,
        kind: format!("operator.{action}"),
        flow: None,
        user,
        workflow: None,
        detail: serde_json::Value::Object(detail),
    }
}

/// Appends an operator's action with no other change; durable when it
/// returns. Blocking.
pub fn audit_action(
    rt: &Runtime,
    operator: &Principal,
    now_ms: u64,
    action: &str,
    user: Option<String>,
    detail: serde_json::Map<String, serde_json::Value>,
) -> Result<(), OperatorError> {
    let record = operator_record(operator, now_ms, action, user, detail);
    rt.store().audit().append(vec![record])?.wait()?;
    tracing::info!(operator = %operator, action, "operator action");
    Ok(())
}

/// Clears `name`'s lockout: asks each directory that knows the user to
/// unlock the account, then removes the failures from every history the
/// name is kept under (under the user's lock, so no request of the user
/// races it), audited as `operator.unlock` with the operator's name.
/// Blocking.
pub fn unlock(
    rt: &Runtime,
    name: &str,
    operator: &Principal,
    now_ms: u64,
) -> Result<Unlocked, OperatorError> {
    let accounts = accounts(rt, name, now_ms);
    let mut directories = Vec::new();
    let mut asked: Vec<(String, String, String)> = Vec::new();
    for a in &accounts {
        let Some(user) = &a.user else { continue };
        let step = &a.workflow.directory;
        let id = (
            step.plugin_name.clone(),
            step.config.clone(),
            user.id.clone(),
        );
        if asked.contains(&id) {
            continue;
        }
        asked.push(id);
        let result = match step
            .plugin
            .directory()
            .map(|d| d.unlock(&ctx(&a.workflow, step, now_ms), user))
        {
            Some(Ok(Ok(()))) => "ok",
            Some(Ok(Err(e))) => {
                tracing::warn!(workflow = %a.workflow.name, directory = %step.plugin_name, error = %e, "an operator's unlock: the directory failed");
                "failed"
            }
            Some(Err(e)) => {
                tracing::warn!(workflow = %a.workflow.name, directory = %step.plugin_name, error = %e, "an operator's unlock: the directory call failed");
                "failed"
            }
            None => "failed",
        };
        directories.push(DirectoryUnlock {
            directory: step.plugin_name.clone(),
            workflow: a.workflow.name.clone(),
            result,
        });
    }
    let directories_json = serde_json::to_value(&directories).unwrap_or_default();
    let primary: Vec<String> = {
        let mut k: Vec<String> = accounts.iter().map(|a| a.key.clone()).collect();
        k.sort();
        k.dedup();
        k
    };
    let mut failures_cleared = 0;
    for key in keys(&accounts, name) {
        let store = rt.store();
        let lock = store.lock_user(&key)?;
        let history = ledger(rt, &key)?;
        if history.is_none() && !primary.contains(&key) {
            continue;
        }
        let mut history = history.unwrap_or_default();
        let cleared = history.failures.len() + history.failures_ms.len();
        failures_cleared += cleared;
        history.failures.clear();
        history.failures_ms.clear();
        let mut detail = serde_json::Map::new();
        detail.insert("failures_cleared".into(), cleared.into());
        detail.insert("directories".into(), directories_json.clone());
        let record = operator_record(operator, now_ms, "unlock", Some(key.clone()), detail);
        let value =
            serde_json::to_vec(&history).map_err(|e| OperatorError::Corrupt(e.to_string()))?;
        lock.commit_and_release(Commit {
            changes: vec![Change::PutLockout {
                user: key.clone(),
                history: value,
            }],
            audit: vec![record],
        })?
        .wait()?;
    }
    tracing::info!(operator = %operator, action = "unlock", failures_cleared, "operator action");
    Ok(Unlocked {
        failures_cleared,
        directories,
    })
}

/// One of a user's flows, from the audit log.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct FlowSummary {
    /// The flow's id.
    pub flow: String,
    /// Its workflow.
    pub workflow: Option<String>,
    /// When it started (ms since the Unix epoch).
    pub started_ms: Option<u64>,
    /// When it ended, if it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ended_ms: Option<u64>,
    /// `completed`, `failed`, `expired`, `interrupted`, or `in-progress`.
    pub outcome: String,
    /// Why it failed, when the log says (never a plugin's text).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Whether the flow's failures locked the user out.
    pub locked_out: bool,
}

/// The audit kinds a flow summary is made of.
const FLOW_KINDS: [&str; 7] = [
    "flow.started",
    "flow.completed",
    "flow.failed",
    "flow.expired",
    "flow.interrupted",
    "lockout.locked",
    "lockout.refused-at-start",
];

/// The audit entries about any of `keys` that `query` selects (its `user`
/// ignored), in log order, at most `query.limit`.
pub fn audit_of_keys(
    rt: &Runtime,
    keys: &[String],
    query: &AuditQuery,
) -> Result<Vec<AuditEntry>, OperatorError> {
    let mut found = Vec::new();
    for key in keys {
        found.extend(rt.store().audit().query(&AuditQuery {
            user: Some(key.clone()),
            ..query.clone()
        })?);
    }
    found.sort_by_key(|e| e.position);
    found.dedup_by_key(|e| e.position);
    found.truncate(query.limit);
    Ok(found)
}

/// `name`'s most recent flows, newest first, at most `limit`. Blocking.
pub fn flows(
    rt: &Runtime,
    name: &str,
    now_ms: u64,
    limit: usize,
) -> Result<Vec<FlowSummary>, OperatorError> {
    let accounts = accounts(rt, name, now_ms);
    let entries = audit_of_keys(
        rt,
        &keys(&accounts, name),
        &AuditQuery {
            kinds: FLOW_KINDS.iter().map(|k| (*k).to_owned()).collect(),
            limit: FLOW_ENTRIES_MAX,
            ..AuditQuery::default()
        },
    )?;
    let mut flows: BTreeMap<String, (u64, FlowSummary)> = BTreeMap::new();
    for e in entries {
        let r = e.record;
        let Some(id) = r.flow.clone() else { continue };
        let (_, f) = flows.entry(id.clone()).or_insert((
            e.position,
            FlowSummary {
                flow: id,
                workflow: r.workflow.clone(),
                started_ms: None,
                ended_ms: None,
                outcome: "in-progress".into(),
                reason: None,
                locked_out: false,
            },
        ));
        match r.kind.as_str() {
            "flow.started" => f.started_ms = Some(r.at_ms),
            "lockout.locked" | "lockout.refused-at-start" => f.locked_out = true,
            kind => {
                f.outcome = kind.trim_start_matches("flow.").to_owned();
                f.ended_ms = Some(r.at_ms);
                f.reason = r
                    .detail
                    .get("reason")
                    .and_then(|v| v.as_str())
                    .map(str::to_owned);
            }
        }
    }
    let mut out: Vec<(u64, FlowSummary)> = flows.into_values().collect();
    out.sort_by_key(|f| std::cmp::Reverse(f.0));
    Ok(out.into_iter().take(limit).map(|(_, f)| f).collect())
}
