//! Due work: durable timers (and, with password sync, the outbox), run by
//! whichever gateway claims them. Every gateway on a store runs a
//! [`DueWork`] loop; each item is leased to one of them by
//! [`Store::claim_due`] (`FOR UPDATE SKIP LOCKED` on PostgreSQL, a mutex on
//! sled), so however many gateways share the store, an item runs on one
//! gateway at a time, and an item whose gateway died mid-run runs again
//! elsewhere once its lease ends.
//!
//! Timers are periodic or one-shot. The one every gateway ensures exists
//! today is `sweep`: the pass over the flows the due index says are due
//! ([`Runtime::sweep_flows`]), once per [`DueSettings::sweep_every`] for the
//! whole cluster instead of once per gateway. A gateway that starts runs
//! one pass at once (recovery, [`Runtime::recover`]) whatever the timer
//! says.

use std::sync::Arc;
use std::time::Duration;

use crate::runtime::Runtime;
use crate::store::{Change, Claim, Commit, Queue, Store, StoreError, WorkItem};

/// The id of the cluster's flow sweep timer.
pub const SWEEP: &str = "sweep";

/// How often due work is looked for and how long a lease lasts.
#[derive(Clone, Copy, Debug)]
pub struct DueSettings {
    /// How often the flow sweep runs (cluster-wide).
    pub sweep_every: Duration,
    /// How often this gateway asks for due items.
    pub poll_every: Duration,
    /// How long a claimed item is this gateway's before another may take
    /// it (it must finish within it).
    pub lease: Duration,
}

impl Default for DueSettings {
    fn default() -> Self {
        DueSettings {
            sweep_every: Duration::from_secs(30),
            poll_every: Duration::from_secs(1),
            // Short: a gateway that dies holding the sweep holds it up this
            // long. A sweep that outlives its lease may meet another
            // gateway's sweep, which is safe (each flow is decided under
            // its user's lock), only wasteful.
            lease: Duration::from_secs(30),
        }
    }
}

/// What a timer's payload says to do.
#[derive(Debug, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Timer {
    /// Sweep the flows that are due, then come back in `every_ms`.
    Sweep {
        /// The period.
        every_ms: u64,
    },
}

/// Why due work could not be run.
#[derive(Debug, thiserror::Error)]
pub enum DueError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The runtime failed while running an item.
    #[error(transparent)]
    Runtime(#[from] crate::runtime::RuntimeError),
}

/// The due-work loop of one gateway.
pub struct DueWork {
    store: Arc<dyn Store>,
    runtime: Arc<Runtime>,
    settings: DueSettings,
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl DueWork {
    /// The loop over `store`, running timers against `runtime`.
    pub fn new(store: Arc<dyn Store>, runtime: Arc<Runtime>, settings: DueSettings) -> DueWork {
        DueWork {
            store,
            runtime,
            settings,
        }
    }

    /// Makes sure the cluster's periodic timers exist (without resetting
    /// one another gateway holds).
    pub fn ensure_timers(&self, now_ms: u64) -> Result<(), DueError> {
        let every_ms = ms(self.settings.sweep_every);
        let payload = serde_json::to_vec(&Timer::Sweep { every_ms }).unwrap_or_default();
        self.store
            .commit(Commit {
                changes: vec![Change::Schedule(WorkItem {
                    queue: Queue::Timers,
                    id: SWEEP.to_owned(),
                    due_ms: now_ms.saturating_add(every_ms),
                    payload,
                })],
                audit: vec![],
            })?
            .wait()?;
        Ok(())
    }

    /// Claims the timers due at `now_ms` and runs them; how many ran.
    pub fn run_due(&self, now_ms: u64) -> Result<usize, DueError> {
        let claims = self
            .store
            .claim_due(Queue::Timers, now_ms, ms(self.settings.lease), 16)?;
        let ran = claims.len();
        for claim in claims {
            self.run(claim, now_ms)?;
        }
        Ok(ran)
    }

    fn run(&self, claim: Claim, now_ms: u64) -> Result<(), DueError> {
        let metrics = &self.runtime.metrics.timers;
        if claim.attempt > 1 {
            tracing::warn!(timer = %claim.item.id, attempt = claim.attempt, "running a timer again: its last run did not finish (a gateway stopped or failed)");
        }
        let timer: Result<Timer, _> = serde_json::from_slice(&claim.item.payload);
        let (kind, result, next) = match timer {
            Ok(Timer::Sweep { every_ms }) => {
                let result = self.runtime.sweep_flows(now_ms);
                match &result {
                    Ok(n) if *n > 0 => tracing::info!(flows = n, "swept expired flows"),
                    Ok(_) => {}
                    Err(e) => tracing::error!(error = %e, "sweeping flows failed"),
                }
                (
                    "sweep",
                    result.is_ok(),
                    Some(now_ms.saturating_add(every_ms)),
                )
            }
            Err(e) => {
                tracing::error!(timer = %claim.item.id, error = %e, "a timer's payload cannot be read; it is dropped");
                ("unknown", false, None)
            }
        };
        metrics.inc(&[kind, if result { "ok" } else { "failed" }]);
        let change = match next {
            Some(due_ms) => Change::Retry {
                queue: Queue::Timers,
                id: claim.item.id,
                due_ms,
            },
            None => Change::Finish {
                queue: Queue::Timers,
                id: claim.item.id,
            },
        };
        self.store
            .commit(Commit {
                changes: vec![change],
                audit: vec![],
            })?
            .wait()?;
        Ok(())
    }

    /// Runs the loop on a thread of its own, forever: ensures the timers,
    /// then polls every `poll_every`. Store failures are logged and retried
    /// at the next poll.
    pub fn spawn(self, now: fn() -> u64) -> std::io::Result<std::thread::JoinHandle<()>> {
        std::thread::Builder::new()
            .name("due-work".into())
            .spawn(move || {
                let mut ensured = false;
                loop {
                    if !ensured {
                        match self.ensure_timers(now()) {
                            Ok(()) => ensured = true,
                            Err(e) => tracing::warn!(error = %e, "cannot schedule the timers yet"),
                        }
                    }
                    if let Err(e) = self.run_due(now()) {
                        tracing::warn!(error = %e, "running due work failed; retrying");
                    }
                    std::thread::sleep(self.settings.poll_every);
                }
            })
    }
}
