//! A user's lockout history as the store keeps it: one record per user
//! (known users by directory id, unknown names by the normalised name),
//! shared by every workflow, with each failure tagged by the workflow it
//! happened in.
//!
//! Every workflow's lockout rule sees all of the user's failures, so trying
//! several workflows buys no extra attempts. A success (a completed reset,
//! an enrollment's password proven) clears only the failures of its own
//! workflow: a success in an easy workflow must not launder the failures a
//! stricter one counted.

use serde::{Deserialize, Serialize};

use crate::contract::History;

/// A failure or a success: when, and in which workflow (by name).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mark {
    /// When (ms since the Unix epoch).
    pub at_ms: u64,
    /// The workflow's name.
    pub workflow: String,
}

/// A user's stored lockout history.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ledger {
    /// Failures not yet cleared by a success in their workflow, oldest
    /// first.
    #[serde(default)]
    pub failures: Vec<Mark>,
    /// Failures of records written before failures were tagged; the next
    /// success in any workflow clears them (as it did then).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failures_ms: Vec<u64>,
    /// The last success in each workflow.
    #[serde(default)]
    pub successes: Vec<Mark>,
    /// The last success of records written before successes were tagged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_success_ms: Option<u64>,
}

impl Ledger {
    /// What `workflow`'s lockout rule sees: every failure of the user that
    /// no success in its own workflow cleared, oldest first, and the last
    /// success in `workflow`.
    pub fn view(&self, workflow: &str) -> History {
        let mut failures_ms: Vec<u64> = self
            .failures_ms
            .iter()
            .copied()
            .chain(self.failures.iter().map(|f| f.at_ms))
            .collect();
        failures_ms.sort_unstable();
        let last_success_ms = self
            .successes
            .iter()
            .find(|s| s.workflow == workflow)
            .map(|s| s.at_ms)
            .or(self.last_success_ms);
        History {
            failures_ms,
            last_success_ms,
        }
    }

    /// A failure in `workflow` at `at_ms`.
    pub fn failed(&mut self, at_ms: u64, workflow: &str) {
        self.failures.push(Mark {
            at_ms,
            workflow: workflow.to_owned(),
        });
    }

    /// A success in `workflow` at `at_ms`: clears that workflow's failures
    /// (and untagged ones), never another workflow's.
    pub fn succeeded(&mut self, at_ms: u64, workflow: &str) {
        self.failures.retain(|f| f.workflow != workflow);
        self.failures_ms.clear();
        self.last_success_ms = None;
        self.successes.retain(|s| s.workflow != workflow);
        self.successes.push(Mark {
            at_ms,
            workflow: workflow.to_owned(),
        });
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_success_clears_only_its_own_workflows_failures() {
        let mut l = Ledger::default();
        l.failed(1, "strict");
        l.failed(2, "strict");
        l.failed(3, "easy");
        // Every rule sees every failure.
        assert_eq!(l.view("strict").failures_ms, [1, 2, 3]);
        assert_eq!(l.view("easy").failures_ms, [1, 2, 3]);
        l.succeeded(4, "easy");
        assert_eq!(
            l.view("strict"),
            History {
                failures_ms: vec![1, 2],
                last_success_ms: None
            }
        );
        assert_eq!(l.view("easy").last_success_ms, Some(4));
        l.succeeded(5, "strict");
        assert_eq!(l.view("strict").failures_ms, Vec::<u64>::new());
        assert_eq!(l.view("strict").last_success_ms, Some(5));
        assert_eq!(l.successes.len(), 2, "one last success per workflow");
    }

    #[test]
    fn records_from_before_tagging_read_as_before() {
        // What the store held when history was `contract::History`.
        let old: Ledger =
            serde_json::from_str(r#"{"failures_ms":[7,8],"last_success_ms":3}"#).unwrap();
        assert_eq!(
            old.view("any"),
            History {
                failures_ms: vec![7, 8],
                last_success_ms: Some(3)
            }
        );
        let mut l = old.clone();
        l.failed(9, "a");
        assert_eq!(l.view("b").failures_ms, [7, 8, 9]);
        l.succeeded(10, "b");
        assert_eq!(l.view("a").failures_ms, [9]);
        assert_eq!(l.view("a").last_success_ms, None);
        let text = serde_json::to_string(&l).unwrap();
        assert!(!text.contains("failures_ms"), "{text}");
    }
}
