//! The runtime: carries out the engine's effects — plugin calls, store
//! writes, audit records — for one request at a time per user.
//!
//! Each request: load the flow, take its user's lock (the store's
//! [`Store::lock_user`], which holds off the same user's requests in every
//! gateway on the store, until the request's commit is applied), feed the
//! event to the engine, carry out
//! the effects it returns in order (feeding plugin results back as events),
//! append the audit records, and commit every change of the request at once
//! (one [`Commit`]: all or nothing).
//! Only then is the caller answered. Because a user's requests are
//! serialised, any number of parallel wrong answers count exactly once each.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use sha2::{Digest, Sha256};

use crate::contract::{CallContext, Decision, FieldValue, User};
use crate::engine::{self, Effect, Event, Flow, Notice, Refusal, Shape, State};
use crate::history::Ledger;
use crate::plugin::CallError;
use crate::seal::{DataKey, SealError};
use crate::secret::Secret;
use crate::store::{AuditRecord, Change, Commit, FlowRecord, Locked, Store, StoreError, UserLock};
use crate::workflow::{Enrollment, Step, Workflow};

/// Flows examined per batch of a sweep.
const SWEEP_BATCH: usize = 10_000;
/// How long an ended flow is kept so the portal can still read its outcome.
const KEEP_ENDED_MS: u64 = 10 * 60 * 1000;

/// Why a request could not be carried out.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// No workflow of that name is loaded.
    #[error("no workflow named {0:?}")]
    UnknownWorkflow(String),
    /// No flow with that id (never existed, or swept).
    #[error("no such flow")]
    UnknownFlow,
    /// The flow's workflow version is no longer loaded (changed and the
    /// gateway restarted).
    #[error("the flow's workflow has changed; start again")]
    WorkflowChanged,
    /// The answers name a gate or round the flow is not at (a replayed or
    /// duplicated request); nothing changed.
    #[error("the flow is not at that step")]
    Stale,
    /// The answers do not fit the prompt (a field missing, unknown, too
    /// long, or not one of its choices); nothing changed. The text names
    /// fields, never values.
    #[error("{0}")]
    BadAnswers(String),
    /// The engine refused the event.
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// The store failed; nothing was acknowledged.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A sealed record did not open: sealed with another data key, altered
    /// or moved in the store, or stored before sealing. The text names the
    /// record and the data key, never its content.
    #[error("the stored {what} cannot be read: {error}")]
    Sealed {
        /// What record, and what to do about it.
        what: String,
        /// Why it did not open.
        error: SealError,
    },
    /// A stored record could not be read.
    #[error("stored {what} is unreadable: {reason}")]
    Corrupt {
        /// What record.
        what: &'static str,
        /// Why.
        reason: String,
    },
}

/// A loaded workflow and the engine's view of it.
struct Loaded {
    workflow: Arc<Workflow>,
    shape: Shape,
}

/// What a request tells the caller.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// The flow after the request.
    pub flow: Flow,
    /// What to tell the user beyond the state.
    pub notice: Option<Notice>,
    /// The flow's bearer token: only in the outcome of
    /// [`Runtime::start`], never stored or shown again.
    pub token: Option<Secret>,
}

/// A request's outcome, applied to the store but perhaps not yet on disk:
/// report it only through [`Staged::wait`] or [`Staged::durable`], which
/// return once it is durable. The user's lock is already released, so a
/// request waiting for the flush holds up no other request of the user (a
/// later request's flush covers this one's writes, so nothing it reports
/// can outlive this request's writes).
#[must_use = "an outcome is not durable until waited for"]
#[derive(Debug)]
pub struct Staged {
    outcome: Outcome,
    durable: crate::store::Durable,
    counters: Arc<Counters>,
    started: Instant,
    staged: Instant,
}

impl Staged {
    /// Blocks until the outcome is durable; the outcome.
    pub fn wait(self) -> Result<Outcome, RuntimeError> {
        self.durable.wait()?;
        self.counters.add(STORE, self.staged);
        self.counters.add(REQUEST, self.started);
        Ok(self.outcome)
    }

    /// Resolves once the outcome is durable, without holding a thread.
    pub async fn durable(self) -> Result<Outcome, RuntimeError> {
        self.durable.await?;
        self.counters.add(STORE, self.staged);
        self.counters.add(REQUEST, self.started);
        Ok(self.outcome)
    }
}

/// Where requests spent their time, summed over all request threads
/// (for benchmarks and metrics).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Timings {
    /// Requests carried out.
    pub requests: u64,
    /// Total time inside requests.
    pub request_ns: u64,
    /// Plugin calls made.
    pub plugin_calls: u64,
    /// Time in plugin calls.
    pub plugin_ns: u64,
    /// Durable commits (and audit appends) made.
    pub store_commits: u64,
    /// Time in commits, including waiting for the flush.
    pub store_ns: u64,
    /// Engine transitions (`engine::step` calls), several per request.
    pub transitions: u64,
}

impl Timings {
    /// The difference from an earlier reading.
    pub fn since(&self, before: &Timings) -> Timings {
        Timings {
            requests: self.requests - before.requests,
            request_ns: self.request_ns - before.request_ns,
            plugin_calls: self.plugin_calls - before.plugin_calls,
            plugin_ns: self.plugin_ns - before.plugin_ns,
            store_commits: self.store_commits - before.store_commits,
            store_ns: self.store_ns - before.store_ns,
            transitions: self.transitions - before.transitions,
        }
    }
}

#[derive(Debug, Default)]
struct Counters([AtomicU64; 7]);

impl Counters {
    fn add(&self, which: usize, started: Instant) {
        self.0[which * 2].fetch_add(1, Ordering::Relaxed);
        self.0[which * 2 + 1].fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
    }
}

/// What a request did that `/metrics` counts and the log tells.
enum Counted {
    /// A gate's verdict (`passed`, `failed`) and the gate.
    Gate(&'static str, String),
    /// A lockout, until when (ms, or `permanent`).
    Locked(String),
}

const REQUEST: usize = 0;
const PLUGIN: usize = 1;
const STORE: usize = 2;

/// What `/metrics` reports about flows.
#[derive(Debug)]
pub struct FlowMetrics {
    /// Flows started, by workflow.
    pub started: crate::metrics::Family,
    /// Flows ended, by workflow and outcome (`completed`, `failed`,
    /// `locked`, `expired`, `interrupted`).
    pub ended: crate::metrics::Family,
    /// Gate results by workflow, gate and result (`passed`, `failed`).
    pub gates: crate::metrics::Family,
    /// Lockouts by workflow.
    pub lockouts: crate::metrics::Family,
    /// Timers this gateway ran, by kind and result (`ok`, `failed`).
    pub timers: crate::metrics::Family,
}

impl Default for FlowMetrics {
    fn default() -> Self {
        use crate::metrics::Family;
        FlowMetrics {
            started: Family::new(&["workflow"]),
            ended: Family::new(&["workflow", "outcome"]),
            gates: Family::new(&["workflow", "gate", "result"]),
            lockouts: Family::new(&["workflow"]),
            timers: Family::new(&["kind", "result"]),
        }
    }
}

/// Carries out flows against a store and the loaded workflows.
pub struct Runtime {
    counters: Arc<Counters>,
    /// Flow, gate and lockout counts for `/metrics`.
    pub metrics: FlowMetrics,
    store: Arc<dyn Store>,
    /// Seals enrollment data and enrollment rounds at rest.
    key: Arc<DataKey>,
    /// Current workflows by name.
    current: RwLock<HashMap<String, Arc<Loaded>>>,
    /// Every version a flow may still run on, by version.
    versions: RwLock<HashMap<String, Arc<Loaded>>>,
}

impl Runtime {
    /// A runtime over `store` serving `workflows`, sealing what it keeps of
    /// enrollments with `key` (the data folder's: see [`DataKey`]).
    pub fn new(store: Arc<dyn Store>, key: Arc<DataKey>, workflows: Vec<Arc<Workflow>>) -> Runtime {
        let rt = Runtime {
            counters: Arc::default(),
            metrics: FlowMetrics::default(),
            store,
            key,
            current: RwLock::default(),
            versions: RwLock::default(),
        };
        rt.reload(workflows);
        rt
    }

    /// Replaces the current workflows. Running flows finish on the version
    /// they started with; older versions that no flow in progress runs on
    /// are dropped, and their plugins with them.
    pub fn reload(&self, workflows: Vec<Arc<Workflow>>) {
        let loaded: Vec<Arc<Loaded>> = workflows
            .into_iter()
            .map(|wf| {
                Arc::new(Loaded {
                    shape: Shape::from(wf.as_ref()),
                    workflow: wf,
                })
            })
            .collect();
        if let Ok(mut versions) = self.versions.write() {
            for l in &loaded {
                versions.insert(l.workflow.version.clone(), l.clone());
            }
        }
        if let Ok(mut current) = self.current.write() {
            *current = loaded
                .into_iter()
                .map(|l| (l.workflow.name.clone(), l))
                .collect();
        }
        match self.prune_versions() {
            Ok(0) => {}
            Ok(n) => tracing::info!(versions = n, "dropped workflow versions no flow runs on"),
            Err(e) => tracing::error!(error = %e, "dropping old workflow versions failed"),
        }
    }

    /// How many workflow versions are loaded: the current ones, and older
    /// ones that flows in progress still run on.
    pub fn versions_loaded(&self) -> usize {
        self.versions.read().map(|v| v.len()).unwrap_or(0)
    }

    /// Drops the versions that are not current and that no stored flow in
    /// progress runs on; returns how many. Ended flows need no version (their
    /// view shows no prompt or policy; see [`Runtime::workflow_of`]).
    ///
    /// Race-free without holding a lock over the walk: a candidate is an old
    /// version that no request holds at the moment it is chosen, and an old
    /// version can be taken up again only for a flow already stored on it,
    /// which the walk that follows sees.
    pub fn prune_versions(&self) -> Result<usize, RuntimeError> {
        let candidates: Vec<(String, Arc<Loaded>)> = {
            let (Ok(current), Ok(versions)) = (self.current.read(), self.versions.read()) else {
                return Ok(0);
            };
            versions
                .iter()
                .filter(|(_, l)| {
                    Arc::strong_count(l) == 1 && !current.values().any(|c| Arc::ptr_eq(c, l))
                })
                .map(|(v, l)| (v.clone(), l.clone()))
                .collect()
        };
        if candidates.is_empty() {
            return Ok(0);
        }
        let used = self.store.versions_in_progress()?;
        let mut dropped = Vec::new();
        if let Ok(mut versions) = self.versions.write() {
            for (version, candidate) in candidates {
                let unchanged = versions
                    .get(&version)
                    .is_some_and(|l| Arc::ptr_eq(l, &candidate));
                // Two holders: the map and `candidate`; no request took it.
                if unchanged && !used.contains(&version) && Arc::strong_count(&candidate) == 2 {
                    versions.remove(&version);
                    dropped.push(candidate);
                }
            }
        }
        // Plugins are released here, outside the lock.
        Ok(dropped.len())
    }

    /// Where requests spent their time so far.
    pub fn timings(&self) -> Timings {
        let c = |i: usize| self.counters.0[i].load(Ordering::Relaxed);
        Timings {
            requests: c(0),
            request_ns: c(1),
            plugin_calls: c(2),
            plugin_ns: c(3),
            store_commits: c(4),
            store_ns: c(5),
            transitions: c(6),
        }
    }

    /// How long the store's commits take to become durable, if it measures
    /// them.
    pub fn flush_latency(&self) -> Option<&crate::metrics::Histogram> {
        self.store.commit_latency()
    }

    /// The store the runtime keeps its state in (for the admin API's
    /// reads and operator changes).
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The current workflows.
    pub fn current(&self) -> Vec<Arc<Workflow>> {
        self.current
            .read()
            .map(|c| c.values().map(|l| l.workflow.clone()).collect())
            .unwrap_or_default()
    }

    /// Names of the current workflows.
    pub fn workflows(&self) -> Vec<String> {
        self.current
            .read()
            .map(|c| c.keys().cloned().collect())
            .unwrap_or_default()
    }

    fn by_name(&self, name: &str) -> Result<Arc<Loaded>, RuntimeError> {
        self.current
            .read()
            .ok()
            .and_then(|c| c.get(name).cloned())
            .ok_or_else(|| RuntimeError::UnknownWorkflow(name.to_owned()))
    }

    fn by_version(&self, version: &str) -> Result<Arc<Loaded>, RuntimeError> {
        self.versions
            .read()
            .ok()
            .and_then(|v| v.get(version).cloned())
            .ok_or(RuntimeError::WorkflowChanged)
    }

    /// Starts a flow of `workflow` for the name the user typed.
    pub fn start(
        &self,
        workflow: &str,
        user_name: &str,
        now: u64,
    ) -> Result<Outcome, RuntimeError> {
        self.start_staged(workflow, user_name, "", now)?.wait()
    }

    /// [`Runtime::start`], returning before the flush (see [`Staged`]), for
    /// a person using `language` (`en`, `de`; empty: `en`), which every
    /// plugin call of the flow is given.
    pub fn start_staged(
        &self,
        workflow: &str,
        user_name: &str,
        language: &str,
        now: u64,
    ) -> Result<Staged, RuntimeError> {
        let loaded = self.by_name(workflow)?;
        let mut id = [0u8; 16];
        getrandom::fill(&mut id).map_err(|e| RuntimeError::Corrupt {
            what: "randomness",
            reason: e.to_string(),
        })?;
        let mut token = [0u8; 16];
        getrandom::fill(&mut token).map_err(|e| RuntimeError::Corrupt {
            what: "randomness",
            reason: e.to_string(),
        })?;
        let token = Secret::new(hex::encode(token));
        let mut flow = Flow::new(hex::encode(id), &loaded.shape, user_name.to_owned(), now);
        flow.token_hash = hashed(token.expose());
        language.clone_into(&mut flow.language);
        let mut staged = self.run_locked(&loaded, flow, Event::Start, now, None)?;
        staged.outcome.token = Some(token);
        Ok(staged)
    }

    /// The flow `flow_id` if `token` is its token. A wrong token and an
    /// unknown flow are the same error, so flow ids cannot be probed.
    pub fn authorize(&self, flow_id: &str, token: &str) -> Result<Flow, RuntimeError> {
        let flow = self.flow(flow_id)?;
        token_matches(&flow, token)?;
        Ok(flow)
    }

    /// The workflow version a flow runs on. An ended flow's version may be
    /// gone (dropped after a reload, or a restart): its view needs nothing
    /// of it (no prompt, no policy), so the current workflow of the same
    /// name stands in.
    pub fn workflow_of(&self, flow: &Flow) -> Result<Arc<Workflow>, RuntimeError> {
        match self.by_version(&flow.version) {
            Ok(l) => Ok(l.workflow.clone()),
            Err(e) if flow.state.is_terminal() => self
                .by_name(&flow.workflow)
                .map(|l| l.workflow.clone())
                .map_err(|_| e),
            Err(e) => Err(e),
        }
    }

    /// Answers from a portal: like [`Runtime::answer`], for the holder of
    /// the flow's `token` (else [`RuntimeError::UnknownFlow`], before any
    /// lock is taken), and only if the flow is still at gate `gate`, round
    /// `round` (or enrolling gate `gate`, round 1): a replayed or duplicated
    /// request changes nothing and gets [`RuntimeError::Stale`]. Returns
    /// before the flush: report the outcome through [`Staged`].
    pub fn answer_as(
        &self,
        flow_id: &str,
        token: &str,
        gate: &str,
        round: u32,
        answers: Vec<FieldValue>,
        now: u64,
    ) -> Result<Staged, RuntimeError> {
        let guard = Guard {
            token: Some(token),
            at: Some((gate, round)),
            password: None,
        };
        self.request_at(flow_id, guard, Event::Answers(answers), now)
    }

    /// A password from a portal: like [`Runtime::password`], for the holder
    /// of the flow's `token`, and only if the flow waits for this kind of
    /// password (else [`Refusal::OutOfOrder`], or [`Refusal::Finished`] for
    /// an ended flow). Returns before the flush: report the outcome through
    /// [`Staged`].
    pub fn password_as(
        &self,
        flow_id: &str,
        token: &str,
        which: PasswordFor,
        password: Secret,
        now: u64,
    ) -> Result<Staged, RuntimeError> {
        let guard = Guard {
            token: Some(token),
            at: None,
            password: Some(which),
        };
        self.request_at(flow_id, guard, Event::Password(password), now)
    }

    /// Submits answers to the flow's current gate (or enrollment input).
    pub fn answer(
        &self,
        flow_id: &str,
        answers: Vec<FieldValue>,
        now: u64,
    ) -> Result<Outcome, RuntimeError> {
        self.request(flow_id, Event::Answers(answers), now)
    }

    /// Submits a password: the new one (reset) or the current one (enrollment).
    pub fn password(
        &self,
        flow_id: &str,
        password: Secret,
        now: u64,
    ) -> Result<Outcome, RuntimeError> {
        self.request(flow_id, Event::Password(password), now)
    }

    /// The flow as stored (an enrollment round opened).
    pub fn flow(&self, flow_id: &str) -> Result<Flow, RuntimeError> {
        let bytes = self.flow_bytes(flow_id)?;
        self.parse_flow(&bytes)
    }

    fn flow_bytes(&self, flow_id: &str) -> Result<Vec<u8>, RuntimeError> {
        self.store.flow(flow_id)?.ok_or(RuntimeError::UnknownFlow)
    }

    /// A stored flow, with an enrolling flow's round opened (see
    /// [`Runtime::encode_flow`]).
    fn parse_flow(&self, bytes: &[u8]) -> Result<Flow, RuntimeError> {
        let mut flow = parse_flow(bytes)?;
        if let State::Enrolling {
            index,
            prompt,
            state,
        } = &mut flow.state
        {
            let round = open_round(&self.key, &flow.id, *index, bytes)?;
            *prompt = round.prompt;
            *state = round.state;
        }
        Ok(flow)
    }

    /// A flow as it is stored. An enrolling flow's round (prompt and state,
    /// which may show or hold a key the person registers) is never
    /// serialised with it (`#[serde(skip)]`): it is sealed with the data key
    /// for this flow and gate, and kept as `state.sealed` (hex). Other
    /// flows pay nothing for it.
    fn encode_flow(&self, flow: &Flow) -> Result<Vec<u8>, RuntimeError> {
        let State::Enrolling {
            index,
            prompt,
            state,
        } = &flow.state
        else {
            return encode_flow(flow);
        };
        let plain = zeroize::Zeroizing::new(
            serde_json::to_vec(&StoredRound {
                prompt: prompt.clone(),
                state: hex::encode(state),
            })
            .map_err(|e| corrupt_flow(&e))?,
        );
        let sealed = self
            .key
            .seal(&round_place(&flow.id, *index), &plain)
            .map_err(|error| RuntimeError::Sealed {
                what: "enrollment round".to_owned(),
                error,
            })?;
        let mut value = serde_json::to_value(flow).map_err(|e| corrupt_flow(&e))?;
        match value.get_mut("state").and_then(|s| s.as_object_mut()) {
            Some(s) => s.insert("sealed".to_owned(), hex::encode(sealed).into()),
            None => {
                return Err(RuntimeError::Corrupt {
                    what: "flow",
                    reason: "an enrolling flow serialised without its state".to_owned(),
                });
            }
        };
        serde_json::to_vec(&value).map_err(|e| corrupt_flow(&e))
    }

    fn request(&self, flow_id: &str, event: Event, now: u64) -> Result<Outcome, RuntimeError> {
        let guard = Guard {
            token: None,
            at: None,
            password: None,
        };
        self.request_at(flow_id, guard, event, now)?.wait()
    }

    fn request_at(
        &self,
        flow_id: &str,
        check: Guard<'_>,
        event: Event,
        now: u64,
    ) -> Result<Staged, RuntimeError> {
        // Before the lock only the token, version and user matter: an
        // enrolling flow's round is opened on the second read.
        let first = self.flow_bytes(flow_id)?;
        let flow = parse_flow(&first)?;
        if let Some(token) = check.token {
            token_matches(&flow, token)?;
        }
        let loaded = match self.by_version(&flow.version) {
            Ok(l) => l,
            // An ended flow's version may be gone; it takes nothing more.
            Err(_) if flow.state.is_terminal() => return Err(Refusal::Finished.into()),
            Err(e) => return Err(e),
        };
        // Serialise with every other request of the same user, then re-read
        // (with the lock, in one round trip where the store can): another
        // request may have moved the flow while we waited.
        let Locked {
            lock: guard,
            flow: bytes,
            lockout,
        } = self.lock(&flow, Some(flow_id))?;
        let bytes = bytes.ok_or(RuntimeError::UnknownFlow)?;
        // Unchanged while we waited (the usual case): parsed already, unless
        // its round is still sealed.
        let mut flow = if bytes == first && !matches!(flow.state, State::Enrolling { .. }) {
            flow
        } else {
            self.parse_flow(&bytes)?
        };
        if matches!(flow.state, State::Committing { .. }) {
            // Committing, and we hold the user's lock: the request that was
            // committing it died (a crash, or a store outage cut its last
            // commit off). Nobody knows whether the password changed.
            if let Some(commit) = self.interrupt(&mut flow, now)? {
                guard.commit_and_release(commit)?.wait()?;
            }
            return Err(Refusal::Interrupted.into());
        }
        if let Some(which) = check.password {
            let expected = match which {
                PasswordFor::New => flow.state == State::AwaitingPassword,
                PasswordFor::Current => flow.state == State::Authenticating,
            };
            if flow.state.is_terminal() {
                return Err(Refusal::ended(&flow.state).into());
            }
            if !expected {
                return Err(Refusal::OutOfOrder.into());
            }
        }
        if let Some((gate, round)) = check.at
            && !flow.state.is_terminal()
            && !flow.expired(now)
        {
            let current = match &flow.state {
                State::Gate { index, round, .. } => Some((*index, *round)),
                State::Enrolling { index, .. } => Some((*index, 1)),
                _ => None,
            };
            let matches = current.is_some_and(|(index, r)| {
                r == round
                    && loaded
                        .workflow
                        .gates
                        .get(index)
                        .is_some_and(|g| g.step.id == gate)
            });
            if !matches {
                return Err(RuntimeError::Stale);
            }
            if let (
                Event::Answers(answers),
                State::Gate { prompt, .. } | State::Enrolling { prompt, .. },
            ) = (&event, &flow.state)
            {
                fit(prompt, answers).map_err(RuntimeError::BadAnswers)?;
            }
        }
        self.run_locked(&loaded, flow, event, now, Some((guard, lockout)))
    }

    /// Takes the lock of `flow`'s user and reads, under it, the flow `read`
    /// (if named) and the user's lockout history (see
    /// [`Store::lock_user_and_read`]).
    fn lock(&self, flow: &Flow, read: Option<&str>) -> Result<Locked<'_>, RuntimeError> {
        Ok(self.store.lock_user_and_read(&user_hash(flow), read)?)
    }

    fn run_locked<'a>(
        &'a self,
        loaded: &Loaded,
        mut flow: Flow,
        event: Event,
        now: u64,
        locked: Option<(UserLock<'a>, Option<Vec<u8>>)>,
    ) -> Result<Staged, RuntimeError> {
        let started = Instant::now();
        let started_fresh = flow.state == State::Resolving;
        let mut req = Request {
            rt: self,
            loaded,
            now,
            changes: Vec::new(),
            audit: Vec::new(),
            history: None,
            lockout: None,
            guard: None,
        };
        if let Some((guard, lockout)) = locked {
            req.guard = Some(guard);
            req.lockout = Some(lockout);
        }
        let mut queue: VecDeque<Effect> =
            engine::step(&mut flow, &loaded.shape, event, now)?.into();
        let mut transitions = 1;
        while let Some(effect) = queue.pop_front() {
            if matches!(effect, Effect::Decide) && req.guard.is_none() {
                // First lockout decision of a new flow: the user is known now.
                let locked = self.lock(&flow, None)?;
                req.guard = Some(locked.lock);
                if req.history.is_none() {
                    req.lockout = Some(locked.lockout);
                }
            }
            let calls_plugin = !matches!(
                effect,
                Effect::Audit(_)
                    | Effect::Checkpoint
                    | Effect::RecordFailure { .. }
                    | Effect::RecordSuccess { .. }
                    | Effect::StoreEnrollment { .. }
            );
            let t = Instant::now();
            let result = req.carry_out(&mut flow, effect)?;
            if calls_plugin {
                self.counters.add(PLUGIN, t);
            }
            if let Some(result) = result {
                let more = engine::step(&mut flow, &loaded.shape, result, now)?;
                transitions += 1;
                for e in more.into_iter().rev() {
                    queue.push_front(e);
                }
            }
        }
        let events: Vec<Counted> = req
            .audit
            .iter()
            .filter_map(|r| {
                let detail = |key: &str| {
                    r.detail
                        .get(key)
                        .and_then(|g| g.as_str())
                        .map(str::to_owned)
                        .unwrap_or_default()
                };
                match r.kind.as_str() {
                    "gate.passed" => Some(Counted::Gate("passed", detail("gate"))),
                    "gate.failed" => Some(Counted::Gate("failed", detail("gate"))),
                    "lockout.locked" => Some(Counted::Locked(detail("until"))),
                    _ => None,
                }
            })
            .collect();
        let staged = Instant::now();
        let durable = req.finish(&flow)?;
        self.count(&flow, started_fresh, &events);
        self.counters.0[6].fetch_add(transitions, Ordering::Relaxed);
        let notice = flow.notice.clone();
        Ok(Staged {
            outcome: Outcome {
                flow,
                notice,
                token: None,
            },
            durable,
            counters: self.counters.clone(),
            started,
            staged,
        })
    }

    /// Counts a request's flow, gate and lockout events for `/metrics` and
    /// logs the security-relevant ones (never a secret, nor a plugin's
    /// reason, which may echo what the person typed; the user as the audit
    /// log names them, by the sha256 of their lockout key).
    fn count(&self, flow: &Flow, started: bool, events: &[Counted]) {
        let wf = flow.workflow.as_str();
        let m = &self.metrics;
        if started {
            m.started.inc(&[wf]);
            tracing::info!(flow = %flow.id, workflow = wf, user = %user_hash(flow), "flow started");
        }
        for event in events {
            match event {
                Counted::Gate(what, gate) => {
                    m.gates.inc(&[wf, gate, what]);
                    if *what == "failed" {
                        tracing::info!(flow = %flow.id, workflow = wf, gate = %gate, "gate failed");
                    }
                }
                Counted::Locked(until) => {
                    m.lockouts.inc(&[wf]);
                    tracing::warn!(flow = %flow.id, workflow = wf, user = %user_hash(flow), until = %until, "lockout applied");
                }
            }
        }
        if flow.phase == engine::Phase::Idle {
            let outcome = match &flow.state {
                State::Completed { .. } => Some("completed"),
                State::Failed { .. } => Some("failed"),
                State::Locked { .. } => Some("locked"),
                State::Expired => Some("expired"),
                _ => None,
            };
            if let Some(outcome) = outcome {
                self.ended(flow, outcome);
            }
        }
    }

    /// Counts and logs the end of `flow` with `outcome`.
    fn ended(&self, flow: &Flow, outcome: &'static str) {
        self.metrics.ended.inc(&[&flow.workflow, outcome]);
        tracing::info!(flow = %flow.id, workflow = %flow.workflow, outcome, "flow ended");
    }

    /// Removes flows past their time limits, and ended flows once their
    /// grace period is over, and ends flows a crash left committing (see
    /// [`Runtime::recover`]), reading only the flows the store's index says
    /// are due; then drops the old workflow versions no flow in progress
    /// runs on any more. Returns how many flows it removed.
    pub fn sweep(&self, now: u64) -> Result<usize, RuntimeError> {
        let removed = self.sweep_flows(now)?;
        // Versions whose last flow in progress ended can go now.
        self.prune_versions()?;
        Ok(removed)
    }

    /// The flows' part of [`Runtime::sweep`] (what the cluster's `sweep`
    /// timer runs on one gateway at a time; each gateway prunes its own
    /// workflow versions); how many flows it removed.
    pub fn sweep_flows(&self, now: u64) -> Result<usize, RuntimeError> {
        Ok(self.pass(now)?.removed)
    }

    /// At start-up (and at every sweep): a flow found committing whose
    /// user's lock nobody holds was interrupted by a crash — of this
    /// gateway, or of another on the same store — after it may have reached
    /// the directory. Nobody can tell whether the password changed (it is
    /// never stored, so it cannot be checked), and the flow says so: it
    /// ends `Interrupted`, with every outcome not recorded `Unknown` (see
    /// [`engine::interrupt`]); the audit log records `flow.interrupted`. A
    /// flow committing in a live request is never touched: its request
    /// holds the user's lock until the flow has moved on. Returns how many
    /// flows it ended.
    pub fn recover(&self, now: u64) -> Result<usize, RuntimeError> {
        Ok(self.pass(now)?.interrupted)
    }

    /// One pass over the flows due at `now`, batch by batch; each batch's
    /// commits are waited for (one flush) before the next is read. Each
    /// flow is decided under its user's lock, on the flow as stored then
    /// (a request, or another gateway's sweep, may have moved it since
    /// the index was read), so a flow expires (and is audited) exactly
    /// once however many gateways sweep.
    fn pass(&self, now: u64) -> Result<Swept, RuntimeError> {
        let mut swept = Swept::default();
        let mut after = None;
        loop {
            let due = self.store.flows_due(now, after.take(), SWEEP_BATCH)?;
            let last_batch = due.len() < SWEEP_BATCH;
            after = due.last().cloned();
            let mut staged = Vec::new();
            for (_, id) in due {
                // Unreadable records are left alone.
                let Some(Ok(flow)) = self.store.flow(&id)?.map(|b| parse_flow(&b)) else {
                    continue;
                };
                let Locked {
                    lock: guard,
                    flow: bytes,
                    ..
                } = self.lock(&flow, Some(&id))?;
                let Some(bytes) = bytes else {
                    continue;
                };
                let Ok(mut flow) = parse_flow(&bytes) else {
                    continue;
                };
                let mut commit = Commit::default();
                if matches!(flow.state, State::Committing { .. }) {
                    let Some(commit) = self.interrupt(&mut flow, now)? else {
                        continue;
                    };
                    staged.push(guard.commit_and_release(commit)?);
                    swept.interrupted += 1;
                    continue;
                } else if now >= due_ms(&flow) {
                    if !flow.state.is_terminal() {
                        commit.audit.push(self.record(
                            &flow,
                            now,
                            "flow.expired",
                            serde_json::json!({}),
                        ));
                        self.ended(&flow, "expired");
                    }
                    commit.changes.push(Change::DeleteFlow { id });
                    swept.removed += 1;
                } else {
                    // Indexed as due too early (a store of an older schema):
                    // indexed again where it belongs.
                    commit
                        .changes
                        .push(Change::PutFlow(self.flow_record(&flow)?));
                }
                staged.push(guard.commit_and_release(commit)?);
            }
            for durable in staged {
                durable.wait()?;
            }
            if last_batch {
                return Ok(swept);
            }
        }
    }

    /// Ends `flow`, found committing under its user's lock (so no live
    /// request is committing it: its request died with a crash or a store
    /// outage), as `Interrupted`; the commit that records it.
    fn interrupt(&self, flow: &mut Flow, now: u64) -> Result<Option<Commit>, RuntimeError> {
        let loaded = self.by_version(&flow.version).ok();
        let Some(event) = engine::interrupt(flow, loaded.as_ref().map(|l| &l.shape), now) else {
            return Ok(None);
        };
        let detail = event
            .detail
            .into_iter()
            .map(|(k, v)| (k.to_owned(), serde_json::Value::String(v)))
            .collect();
        let record = self.record(flow, now, event.kind, serde_json::Value::Object(detail));
        tracing::warn!(flow = %flow.id, workflow = %flow.workflow, "a flow whose request died mid-commit ends interrupted: whether its password changed is unknown");
        self.ended(flow, "interrupted");
        Ok(Some(Commit {
            changes: vec![Change::PutFlow(self.flow_record(flow)?)],
            audit: vec![record],
        }))
    }

    /// A flow as the store keeps it (see [`due_ms`]).
    fn flow_record(&self, flow: &Flow) -> Result<FlowRecord, RuntimeError> {
        Ok(FlowRecord {
            id: flow.id.clone(),
            user: user_hash(flow),
            version: flow.version.clone(),
            in_progress: !flow.state.is_terminal(),
            due_ms: due_ms(flow),
            body: self.encode_flow(flow)?,
        })
    }

    fn record(&self, flow: &Flow, now: u64, kind: &str, detail: serde_json::Value) -> AuditRecord {
        AuditRecord {
            at_ms: now,
            kind: kind.to_owned(),
            flow: Some(flow.id.clone()),
            user: Some(user_hash(flow)),
            workflow: Some(flow.workflow.clone()),
            detail,
        }
    }
}

/// Whether `answers` fit `prompt`: one value per field, no other, each at
/// most the field's length in code points, a choice one of its values.
fn fit(prompt: &crate::contract::Prompt, answers: &[FieldValue]) -> Result<(), String> {
    use crate::contract::FieldKind;
    for a in answers {
        let Some(field) = prompt.fields.iter().find(|f| f.name == a.name) else {
            return Err(format!("the prompt has no field `{}`", a.name));
        };
        if a.value.code_points() > field.max_length as usize {
            return Err(format!(
                "`{}` is longer than {} characters",
                field.name, field.max_length
            ));
        }
        if let FieldKind::Choice(choices) = &field.kind
            && !choices.iter().any(|c| c == a.value.expose())
        {
            return Err(format!("`{}` must be one of its choices", field.name));
        }
    }
    for field in &prompt.fields {
        if !answers.iter().any(|a| a.name == field.name) {
            return Err(format!("a value for `{}` is missing", field.name));
        }
    }
    Ok(())
}

/// Which password a portal submits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PasswordFor {
    /// The new password (state `awaiting-password`).
    New,
    /// The current password, for enrollment (state `authenticating`).
    Current,
}

/// What a portal's request must satisfy before the engine sees it.
struct Guard<'a> {
    /// The flow's bearer token.
    token: Option<&'a str>,
    /// The gate and round being answered.
    at: Option<(&'a str, u32)>,
    /// The password expected.
    password: Option<PasswordFor>,
}

/// Whether `token` is the flow's token: both sides are sha256 hex digests,
/// compared in full.
fn token_matches(flow: &Flow, token: &str) -> Result<(), RuntimeError> {
    let presented = hashed(token);
    let differs = presented
        .bytes()
        .zip(flow.token_hash.bytes())
        .fold(0u8, |acc, (a, b)| acc | (a ^ b));
    if flow.token_hash.len() != presented.len() || differs != 0 {
        return Err(RuntimeError::UnknownFlow);
    }
    Ok(())
}

/// `flow`'s user key, unhashed ([`write_user_key`]).
#[cfg(test)]
fn user_key(flow: &Flow) -> String {
    let mut key = String::new();
    write_user_key(&mut key, flow.user.as_ref(), &flow.user_name);
    key
}

/// Who a flow is about, for lockout and enrollment: the directory's id for a
/// known user, the normalised typed name for an unknown one (so unknown
/// names are rate-limited exactly like known ones). Appended to `out`,
/// unhashed ([`user_key_of`] hashes it).
fn write_user_key(out: &mut String, user: Option<&User>, typed_name: &str) {
    match user {
        Some(u) => {
            out.push_str("id:");
            out.push_str(&u.id);
        }
        None => {
            out.push_str("name:");
            out.push_str(&typed_name.trim().to_lowercase());
        }
    }
}

/// The hashed key a user's lockout history, enrollments and audit records
/// are kept under: the directory's `user` if it knows one, else the typed
/// name (normalised). What flows of that user use.
pub fn user_key_of(user: Option<&User>, typed_name: &str) -> String {
    let mut key = String::new();
    write_user_key(&mut key, user, typed_name);
    hashed(&key)
}

/// Turns a plugin call's reply into the engine's event. The plugin's own
/// failure, a failed call and a plugin of the wrong kind all fail the flow
/// closed; the text is for the audit log only.
fn reply<T, E: std::fmt::Display>(
    what: &str,
    reply: Option<Result<Result<T, E>, CallError>>,
    ok: impl FnOnce(T) -> Event,
) -> Option<Event> {
    Some(match reply {
        Some(Ok(Ok(value))) => ok(value),
        Some(Ok(Err(e))) => Event::PluginFailed(format!("{what}: {e}")),
        Some(Err(e)) => Event::PluginFailed(e.to_string()),
        None => Event::PluginFailed(format!("{what} is not the kind of plugin its step needs")),
    })
}

/// What one sweep did.
#[derive(Debug, Default)]
struct Swept {
    removed: usize,
    interrupted: usize,
}

/// When the sweep should next look at `flow`: an ended flow once its
/// receipt has been kept long enough, a committing one at once (it is
/// decided under its user's lock: only a flow whose request died is still
/// committing then), any other once it is past a time limit (as
/// `Flow::expired`).
fn due_ms(flow: &Flow) -> u64 {
    match flow.state {
        State::Committing { .. } => flow.touched_ms,
        _ if flow.state.is_terminal() => flow.touched_ms.saturating_add(KEEP_ENDED_MS),
        _ => flow.expires_at(),
    }
}

/// A stored flow as it is, an enrolling flow's round left sealed (its
/// prompt and state empty): what the sweep, recovery and the check of a
/// request's token need. [`Runtime::parse_flow`] opens the round.
fn parse_flow(bytes: &[u8]) -> Result<Flow, RuntimeError> {
    serde_json::from_slice(bytes).map_err(|e| corrupt_flow(&e))
}

/// An enrolling flow's round as sealed: its prompt, and its state as hex.
#[derive(serde::Serialize, serde::Deserialize)]
struct StoredRound {
    prompt: crate::contract::Prompt,
    state: String,
}

/// Where a sealed enrollment round belongs: its flow and gate.
fn round_place(flow_id: &str, index: usize) -> Vec<u8> {
    format!("flows/{flow_id}/enrolling/{index}").into_bytes()
}

/// Where sealed enrollment data belongs: its user and gate.
fn enrollment_place(key: &[u8]) -> Vec<u8> {
    [b"enrollments/".as_slice(), key].concat()
}

/// Opens the round sealed in the stored enrolling flow `bytes`.
fn open_round(
    key: &DataKey,
    flow_id: &str,
    index: usize,
    bytes: &[u8],
) -> Result<crate::contract::Round, RuntimeError> {
    #[derive(serde::Deserialize)]
    struct Stored {
        state: Sealed,
    }
    #[derive(serde::Deserialize)]
    struct Sealed {
        #[serde(default)]
        sealed: Option<String>,
    }
    let sealed_error = |error: SealError| RuntimeError::Sealed {
        what: "enrollment round of a flow (the person starts again)".to_owned(),
        error,
    };
    let stored: Stored = serde_json::from_slice(bytes).map_err(|e| corrupt_flow(&e))?;
    let sealed = stored.state.sealed.ok_or_else(|| {
        sealed_error(SealError::Format(
            "none: the flow was stored before enrollment rounds were sealed".to_owned(),
        ))
    })?;
    let sealed = hex::decode(sealed).map_err(|e| sealed_error(SealError::Format(e.to_string())))?;
    let plain = key
        .open(&round_place(flow_id, index), &sealed)
        .map_err(sealed_error)?;
    let round: StoredRound = serde_json::from_slice(&plain).map_err(|e| corrupt_flow(&e))?;
    let state = zeroize::Zeroizing::new(round.state);
    Ok(crate::contract::Round {
        prompt: round.prompt,
        state: hex::decode(state.as_bytes()).map_err(|e| RuntimeError::Corrupt {
            what: "flow",
            reason: e.to_string(),
        })?,
    })
}

fn encode_flow(flow: &Flow) -> Result<Vec<u8>, RuntimeError> {
    serde_json::to_vec(flow).map_err(|e| corrupt_flow(&e))
}

fn corrupt_flow(e: &serde_json::Error) -> RuntimeError {
    RuntimeError::Corrupt {
        what: "flow",
        reason: e.to_string(),
    }
}

/// The hashed key of `flow`'s user ([`user_key_of`]), as the store keeps it.
/// A request asks for it several times (its lock, its records, its
/// history): each thread keeps the last one it computed, and builds the
/// key to compare in a buffer it keeps.
fn user_hash(flow: &Flow) -> String {
    thread_local! {
        /// A buffer, the last key and its hash.
        static LAST: std::cell::RefCell<[String; 3]> =
            const { std::cell::RefCell::new([String::new(), String::new(), String::new()]) };
    }
    LAST.with(|last| {
        let [scratch, key, hash] = &mut *last.borrow_mut();
        scratch.clear();
        write_user_key(scratch, flow.user.as_ref(), &flow.user_name);
        if scratch != key {
            *hash = hashed(scratch);
            std::mem::swap(scratch, key);
        }
        hash.clone()
    })
}

/// Store keys never hold a user name in clear.
fn hashed(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// One request's writes and audit records, committed together at the end.
struct Request<'a> {
    rt: &'a Runtime,
    loaded: &'a Loaded,
    now: u64,
    changes: Vec<Change>,
    audit: Vec<AuditRecord>,
    history: Option<Ledger>,
    /// The user's lockout history as read with the lock, until `history`
    /// takes it.
    lockout: Option<Option<Vec<u8>>>,
    /// The user's lock, once taken: the request's commits go through it.
    guard: Option<UserLock<'a>>,
}

impl Request<'_> {
    fn ctx(&self, flow: &Flow, step: &Step) -> CallContext {
        CallContext {
            flow_id: flow.id.clone(),
            workflow: flow.workflow.clone(),
            step: step.path.clone(),
            config: step.config.clone(),
            now_ms: self.now,
            language: flow.language.clone(),
        }
    }

    /// The user a plugin sees: the directory's, or for a decoy flow a user
    /// with the typed name and no id.
    fn user(flow: &Flow) -> User {
        match &flow.user {
            Some(user) if !flow.decoy => user.clone(),
            _ => User {
                id: String::new(),
                name: flow.user_name.clone(),
                attributes: vec![],
            },
        }
    }

    fn history(&mut self, flow: &Flow) -> Result<Ledger, RuntimeError> {
        if let Some(h) = &self.history {
            return Ok(h.clone());
        }
        let stored = match self.lockout.take() {
            Some(read) => read,
            None => self.rt.store.lockout(&user_hash(flow))?,
        };
        let h = match stored {
            Some(bytes) => serde_json::from_slice(&bytes).map_err(|e| RuntimeError::Corrupt {
                what: "lockout history",
                reason: e.to_string(),
            })?,
            None => Ledger::default(),
        };
        self.history = Some(h.clone());
        Ok(h)
    }

    fn set_history(&mut self, flow: &Flow, h: Ledger) -> Result<(), RuntimeError> {
        let value = serde_json::to_vec(&h).map_err(|e| RuntimeError::Corrupt {
            what: "lockout history",
            reason: e.to_string(),
        })?;
        self.changes.push(Change::PutLockout {
            user: user_hash(flow),
            history: value,
        });
        self.history = Some(h);
        Ok(())
    }

    /// Where a user's enrollment for `gate` is sealed for (the data key's
    /// associated data), and the user key it is stored under.
    fn enrollment_key(flow: &Flow, gate: &str) -> (String, Vec<u8>) {
        let user = user_hash(flow);
        let place = format!("{user}/{gate}").into_bytes();
        (user, place)
    }

    /// Persists the flow and everything the request wrote, durably, after
    /// the request's audit records.
    fn checkpoint(&mut self, flow: &Flow) -> Result<(), RuntimeError> {
        let started = Instant::now();
        self.stage(flow)?.wait()?;
        self.rt.counters.add(STORE, started);
        Ok(())
    }

    /// Commits the flow, everything the request changed and its audit
    /// records, all or nothing; durable once the result resolves.
    /// Through the user's lock if taken (a new flow's first steps may come
    /// before its user is known): the lock stays held.
    fn stage(&mut self, flow: &Flow) -> Result<crate::store::Durable, RuntimeError> {
        let commit = self.take_commit(flow)?;
        Ok(match &mut self.guard {
            Some(guard) => guard.commit(commit)?,
            None => self.rt.store.commit(commit)?,
        })
    }

    /// The request's last commit ([`Request::stage`]), releasing the
    /// user's lock once it is visible.
    fn finish(&mut self, flow: &Flow) -> Result<crate::store::Durable, RuntimeError> {
        let commit = self.take_commit(flow)?;
        Ok(match self.guard.take() {
            Some(guard) => guard.commit_and_release(commit)?,
            None => self.rt.store.commit(commit)?,
        })
    }

    /// The flow, everything the request changed and its audit records.
    fn take_commit(&mut self, flow: &Flow) -> Result<Commit, RuntimeError> {
        let mut changes = std::mem::take(&mut self.changes);
        changes.push(Change::PutFlow(self.rt.flow_record(flow)?));
        Ok(Commit {
            changes,
            audit: std::mem::take(&mut self.audit),
        })
    }

    /// Carries out one effect; returns the event it produced, if any.
    fn carry_out(
        &mut self,
        flow: &mut Flow,
        effect: Effect,
    ) -> Result<Option<Event>, RuntimeError> {
        let wf = self.loaded.workflow.clone();
        let failed = |e: CallError| Some(Event::PluginFailed(e.to_string()));
        Ok(match effect {
            Effect::FindUser { name } => {
                let ctx = self.ctx(flow, &wf.directory);
                let r = wf
                    .directory
                    .plugin
                    .directory()
                    .map(|d| d.find_user(&ctx, &name));
                reply("directory", r, Event::UserFound)
            }
            Effect::Decide => {
                let history = self.history(flow)?.view(&flow.workflow);
                match &wf.lockout {
                    None => Some(Event::Decided(Decision::Allowed)),
                    Some(step) => {
                        let ctx = self.ctx(flow, step);
                        // Fail closed: a broken lockout rule lets nobody through.
                        let r = step.plugin.lockout().map(|l| l.decide(&ctx, &history));
                        reply("lockout", r, Event::Decided)
                    }
                }
            }
            Effect::BeginGate { index } => {
                let gate = &wf.gates[index];
                let enrollment = self.enrollment(flow, &gate.step.id, gate.enrollment)?;
                let ctx = self.ctx(flow, &gate.step);
                let user = Self::user(flow);
                let r = gate
                    .step
                    .plugin
                    .gate()
                    .map(|g| g.begin(&ctx, &user, enrollment.as_deref()));
                reply(&format!("gate {}", gate.step.id), r, Event::RoundBegun)
            }
            Effect::Judge {
                index,
                state,
                answers,
            } => {
                let gate = &wf.gates[index];
                let enrollment = self.enrollment(flow, &gate.step.id, gate.enrollment)?;
                let ctx = self.ctx(flow, &gate.step);
                let user = Self::user(flow);
                let r = gate
                    .step
                    .plugin
                    .gate()
                    .map(|g| g.answer(&ctx, &user, enrollment.as_deref(), &state, &answers));
                reply(&format!("gate {}", gate.step.id), r, Event::Judged)
            }
            Effect::VerifyPassword { password } => {
                let ctx = self.ctx(flow, &wf.directory);
                match (&flow.user, wf.directory.plugin.directory()) {
                    (None, _) => Some(Event::Verified(false)),
                    (Some(user), Some(d)) => match d.verify_password(&ctx, user, &password) {
                        Ok(Ok(ok)) => Some(Event::Verified(ok)),
                        Ok(Err(e)) => Some(Event::PluginFailed(format!("directory: {e}"))),
                        Err(e) => failed(e),
                    },
                    (_, None) => Some(Event::PluginFailed(
                        "directory step is not a directory plugin".into(),
                    )),
                }
            }
            Effect::EnrollPrompt { index } => {
                let gate = &wf.gates[index];
                let ctx = self.ctx(flow, &gate.step);
                let r = gate
                    .step
                    .plugin
                    .gate()
                    .map(|g| g.enroll_prompt(&ctx, &Self::user(flow)));
                reply(&format!("gate {}", gate.step.id), r, Event::RoundBegun)
            }
            Effect::Enroll {
                index,
                state,
                input,
            } => {
                let gate = &wf.gates[index];
                let ctx = self.ctx(flow, &gate.step);
                match gate
                    .step
                    .plugin
                    .gate()
                    .map(|g| g.enroll(&ctx, &Self::user(flow), &state, &input))
                {
                    Some(Ok(result)) => Some(Event::Enrolled(result)),
                    Some(Err(e)) => failed(e),
                    None => Some(Event::PluginFailed("gate step is not a gate plugin".into())),
                }
            }
            Effect::StoreEnrollment { index, data } => {
                // Sealed for its place (user and gate): a TOTP key never
                // reaches the store in clear.
                let data = zeroize::Zeroizing::new(data);
                let gate = wf.gates[index].step.id.clone();
                let (user, place) = Self::enrollment_key(flow, &gate);
                let value =
                    self.rt
                        .key
                        .seal(&enrollment_place(&place), &data)
                        .map_err(|error| RuntimeError::Sealed {
                            what: "enrollment".to_owned(),
                            error,
                        })?;
                self.changes.push(Change::PutEnrollment {
                    user,
                    gate,
                    data: value,
                });
                None
            }
            Effect::RecordFailure { at_ms } => {
                let mut h = self.history(flow)?;
                h.failed(at_ms, &flow.workflow);
                self.set_history(flow, h)?;
                None
            }
            Effect::RecordSuccess { at_ms } => {
                // Clears this workflow's failures only (`history`).
                let mut h = self.history(flow)?;
                h.succeeded(at_ms, &flow.workflow);
                self.set_history(flow, h)?;
                None
            }
            Effect::Checkpoint => {
                // Mid-request (before the directory is touched) this must be
                // durable now; at the end of a request the final commit does it.
                if flow.phase != engine::Phase::Idle {
                    self.checkpoint(flow)?;
                }
                None
            }
            Effect::SetPassword { password } => {
                let ctx = self.ctx(flow, &wf.directory);
                let user = Self::user(flow);
                match wf
                    .directory
                    .plugin
                    .directory()
                    .map(|d| d.set_password(&ctx, &user, &password, wf.password.must_change))
                {
                    Some(Ok(result)) => Some(Event::PasswordSet(result)),
                    Some(Err(e)) => failed(e),
                    None => Some(Event::PluginFailed(
                        "directory step is not a directory plugin".into(),
                    )),
                }
            }
            Effect::Push {
                index,
                password,
                idempotency_key,
            } => {
                let target = &wf.sync[index];
                let ctx = self.ctx(flow, &target.step);
                let change = crate::contract::Change {
                    idempotency_key,
                    user: Self::user(flow),
                    changed_at_ms: self.now,
                };
                let result = match target
                    .step
                    .plugin
                    .sync_target()
                    .map(|s| s.push(&ctx, &change, &password))
                {
                    Some(Ok(Ok(()))) => Ok(()),
                    Some(Ok(Err(e))) => Err(e.to_string()),
                    Some(Err(e)) => Err(e.to_string()),
                    None => Err("sync step is not a sync-target plugin".into()),
                };
                Some(Event::Pushed { index, result })
            }
            Effect::VpnConnect => {
                let result = match &wf.vpn {
                    Some(vpn) => {
                        let ctx = self.ctx(flow, &vpn.step);
                        let user = flow.user.clone();
                        match vpn
                            .step
                            .plugin
                            .vpn_hook()
                            .map(|v| v.connect(&ctx, user.as_ref()))
                        {
                            Some(Ok(Ok(()))) => Ok(()),
                            Some(Ok(Err(e))) => Err(e.to_string()),
                            Some(Err(e)) => Err(e.to_string()),
                            None => Err("vpn step is not a vpn-hook plugin".into()),
                        }
                    }
                    None => Err("no vpn hook".into()),
                };
                Some(Event::VpnConnected(result))
            }
            Effect::EnsureDirectory => {
                let ctx = self.ctx(flow, &wf.directory);
                let reachable = wf.directory.plugin.directory().map(|d| d.reachable(&ctx));
                let result = match (reachable, &wf.vpn) {
                    (Some(Ok(true)), _) => Ok(false),
                    (_, Some(vpn)) => {
                        let ctx = self.ctx(flow, &vpn.step);
                        match vpn.step.plugin.vpn_hook().map(|v| v.connect(&ctx, None)) {
                            Some(Ok(Ok(()))) => Ok(true),
                            Some(Ok(Err(e))) => Err(e.to_string()),
                            Some(Err(e)) => Err(e.to_string()),
                            None => Err("vpn step is not a vpn-hook plugin".into()),
                        }
                    }
                    (_, None) => Err("directory unreachable and no vpn hook".into()),
                };
                Some(Event::DirectoryReady(result))
            }
            Effect::VpnDisconnect => {
                if let Some(vpn) = &wf.vpn {
                    let ctx = self.ctx(flow, &vpn.step);
                    if let Some(v) = vpn.step.plugin.vpn_hook()
                        && let Err(e) = v.disconnect(&ctx)
                    {
                        tracing::warn!(flow = %flow.id, error = %e, "vpn disconnect failed");
                    }
                }
                None
            }
            Effect::Audit(event) => {
                let detail: serde_json::Map<String, serde_json::Value> = event
                    .detail
                    .into_iter()
                    .map(|(k, v)| (k.to_owned(), serde_json::Value::String(v)))
                    .collect();
                self.audit.push(AuditRecord {
                    at_ms: self.now,
                    kind: event.kind.to_owned(),
                    flow: Some(flow.id.clone()),
                    user: Some(user_hash(flow)),
                    workflow: Some(flow.workflow.clone()),
                    detail: serde_json::Value::Object(detail),
                });
                None
            }
        })
    }

    /// The user's enrollment data for `gate`, if the gate has any. A decoy
    /// flow reads too (under its own key: the typed name's for an unknown
    /// one), so that it costs what a real flow costs, but gets nothing: a
    /// gate must not message a user locked out at start, and an unknown
    /// name has no enrollment anyway.
    fn enrollment(
        &self,
        flow: &Flow,
        gate: &str,
        mode: Enrollment,
    ) -> Result<Option<Vec<u8>>, RuntimeError> {
        if mode == Enrollment::None {
            return Ok(None);
        }
        let (user, place) = Self::enrollment_key(flow, gate);
        let Some(sealed) = self.rt.store.enrollment(&user, gate)? else {
            return Ok(None);
        };
        // Opened for a decoy too (the same work), then withheld.
        let data = self
            .rt
            .key
            .open(&enrollment_place(&place), &sealed)
            .map_err(|error| RuntimeError::Sealed {
                what: format!(
                    "enrollment of gate `{gate}` (the person can register again to replace it)"
                ),
                error,
            })?;
        Ok(Some(data.to_vec()).filter(|_| flow.user.is_some() && !flow.decoy))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Receipt;

    /// Every state a flow can be stored in, in the shape it is stored. (The
    /// match below stops compiling when a state is added: add it here too.)
    fn every_state() -> Vec<State> {
        let _listed = |state: &State| match state {
            State::Resolving
            | State::Gate { .. }
            | State::AwaitingPassword
            | State::Committing { .. }
            | State::Authenticating
            | State::Enrolling { .. }
            | State::Completed { .. }
            | State::Failed { .. }
            | State::Interrupted { .. }
            | State::Locked { .. }
            | State::Expired => {}
        };
        let prompt = crate::contract::Prompt {
            title: "t".into(),
            help: None,
            display: vec![],
            fields: vec![],
        };
        vec![
            State::Resolving,
            State::Gate {
                index: 0,
                round: 1,
                state: vec![1],
                prompt: prompt.clone(),
            },
            State::AwaitingPassword,
            State::Committing {
                receipt: Receipt::default(),
            },
            State::Authenticating,
            State::Enrolling {
                index: 0,
                prompt,
                state: vec![2],
            },
            State::Completed {
                receipt: Receipt::default(),
            },
            State::Failed { receipt: None },
            State::Interrupted {
                receipt: Receipt::default(),
            },
            State::Locked { until: Some(1) },
            State::Expired,
        ]
    }

    #[test]
    fn a_user_s_hash_follows_the_flow_it_is_asked_for() {
        let shape = crate::engine::tests::shape();
        let alice = Flow::new("a".into(), &shape, " Alice ".into(), 0);
        let mut bob = Flow::new("b".into(), &shape, "bob".into(), 0);
        let expected = |f: &Flow| hashed(&user_key(f));
        // Alternating users, the same user twice, a user found in the
        // directory (the key changes from name to id mid-flow).
        for flow in [&alice, &bob, &bob, &alice] {
            assert_eq!(user_hash(flow), expected(flow));
        }
        assert_eq!(user_hash(&alice), hashed("name:alice"));
        bob.user = Some(User {
            id: "uid=bob".into(),
            name: "bob".into(),
            attributes: vec![],
        });
        assert_eq!(user_hash(&bob), hashed("id:uid=bob"));
        assert_ne!(user_hash(&bob), user_hash(&alice));
    }

    #[test]
    fn a_flow_is_due_exactly_when_the_sweep_has_work_with_it() {
        const T0: u64 = 1_763_856_000_000;
        let shape = crate::engine::tests::shape();
        for state in every_state() {
            let mut flow = Flow::new("f".into(), &shape, "alice".into(), T0);
            flow.touched_ms = T0 + 1_000;
            flow.state = state;
            // Around each limit: idle, absolute, and the ended flows' grace.
            let limits = [
                flow.touched_ms,
                flow.touched_ms + flow.idle_ms,
                flow.created_ms + flow.absolute_ms,
                flow.touched_ms + KEEP_ENDED_MS,
            ];
            for now in limits.into_iter().flat_map(|t| [t - 1, t, t + 1]) {
                let work = if matches!(flow.state, State::Committing { .. }) {
                    // Checked at once: only a dead request leaves it so.
                    now >= flow.touched_ms
                } else if flow.state.is_terminal() {
                    now >= flow.touched_ms + KEEP_ENDED_MS
                } else {
                    flow.expired(now)
                };
                assert_eq!(now >= due_ms(&flow), work, "{:?} at {now}", flow.state);
            }
        }
    }
}
