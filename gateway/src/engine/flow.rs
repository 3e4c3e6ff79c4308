//! A flow's record (what the store keeps) and its in-request phase (what it
//! never keeps: answers and passwords in flight).

use serde::{Deserialize, Serialize};

use crate::contract::{FieldValue, Prompt, User};
use crate::policy::Violation;
use crate::secret::Secret;

/// A flow: one user going through one workflow.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Flow {
    /// 128 random bits, hex.
    pub id: String,
    /// The workflow's name.
    pub workflow: String,
    /// The workflow's version (sha256 of its file): the flow finishes on it.
    pub version: String,
    /// The name the user typed.
    pub user_name: String,
    /// The directory's user; `None` for an unknown user (a decoy flow).
    pub user: Option<User>,
    /// When the flow started (ms since the Unix epoch).
    pub created_ms: u64,
    /// When the portal last moved it.
    pub touched_ms: u64,
    /// Idle limit in ms.
    pub idle_ms: u64,
    /// Absolute limit in ms.
    pub absolute_ms: u64,
    /// Where the flow is.
    pub state: State,
    /// Ids of the gates passed, in order.
    pub passed: Vec<String>,
    /// sha256 (hex) of the flow's bearer token; the token itself is given
    /// to the portal once and never stored.
    #[serde(default)]
    pub token_hash: String,
    /// The flow can never pass a gate: the user is unknown, or was locked
    /// out when the flow started. Either way it looks like any other flow
    /// until it fails at a gate.
    #[serde(default)]
    pub decoy: bool,
    /// The person's language, chosen when the flow started (`en`, `de`):
    /// plugins read it to localise their prompts. Empty in flows stored
    /// before languages existed, read as `en`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub language: String,
    /// What is going on inside one request; never stored.
    #[serde(skip)]
    pub phase: Phase,
    /// The password while it is being committed; never stored.
    #[serde(skip)]
    pub pending_password: Option<Secret>,
    /// What the last request should tell the user; never stored.
    #[serde(skip)]
    pub notice: Option<Notice>,
}

impl Flow {
    /// A new flow, before [`Event::Start`](super::Event::Start).
    pub fn new(id: String, workflow: &super::Shape, user_name: String, now: u64) -> Flow {
        Flow {
            id,
            workflow: workflow.name.clone(),
            version: workflow.version.clone(),
            user_name,
            user: None,
            created_ms: now,
            touched_ms: now,
            idle_ms: workflow.limits.idle.as_millis() as u64,
            absolute_ms: workflow.limits.absolute.as_millis() as u64,
            state: State::Resolving,
            passed: Vec::new(),
            token_hash: String::new(),
            decoy: false,
            language: String::new(),
            phase: Phase::Idle,
            pending_password: None,
            notice: None,
        }
    }

    /// Whether the flow is past its idle or absolute time limit at `now`.
    pub fn expired(&self, now: u64) -> bool {
        now >= self.touched_ms.saturating_add(self.idle_ms)
            || now >= self.created_ms.saturating_add(self.absolute_ms)
    }

    /// When the flow may be removed by the sweep.
    pub fn expires_at(&self) -> u64 {
        self.touched_ms
            .saturating_add(self.idle_ms)
            .min(self.created_ms.saturating_add(self.absolute_ms))
    }
}

/// Where a flow is, as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "at", rename_all = "kebab-case")]
pub enum State {
    /// Looking the user up and checking lockout.
    Resolving,
    /// Waiting for answers to gate `index`'s round.
    Gate {
        /// The gate.
        index: usize,
        /// Rounds taken in this gate, from 1.
        round: u32,
        /// The plugin's state for this round (kept by the host).
        #[serde(with = "hex_bytes")]
        state: Vec<u8>,
        /// What the portal shows.
        prompt: Prompt,
    },
    /// Every gate passed; waiting for the new password.
    AwaitingPassword,
    /// The new password is being set; a flow found here after a restart was
    /// interrupted mid-commit.
    Committing {
        /// Outcomes so far.
        receipt: Receipt,
    },
    /// Enrollment: waiting for the current password.
    Authenticating,
    /// Enrollment: waiting for gate `index`'s registration input.
    ///
    /// The round (`prompt` and `state`) may hold a secret the person
    /// registers (a TOTP key), so it is never serialised with the flow: the
    /// runtime seals it with the data key beside the flow's record and opens
    /// it when it reads the flow (`runtime`'s `encode_flow`/`parse_flow`).
    Enrolling {
        /// The gate.
        index: usize,
        /// What the portal shows.
        #[serde(skip, default = "no_prompt")]
        prompt: Prompt,
        /// The plugin's state for the enrollment round (e.g. a TOTP key the
        /// prompt shows), handed to `enroll`.
        #[serde(skip)]
        state: Vec<u8>,
    },
    /// Done.
    Completed {
        /// Every target's outcome.
        receipt: Receipt,
    },
    /// Failed (fail closed); the receipt says how far the commit got.
    Failed {
        /// Outcomes, if the commit had started.
        receipt: Option<Receipt>,
    },
    /// A crash interrupted the commit: the directory (and any target after
    /// it) may or may not have the new password. Set by recovery at start-up
    /// on a flow found `Committing`; the person is told the truth: try the
    /// new password, and reset again if it does not work.
    Interrupted {
        /// Outcomes as far as they are known; the rest are `Unknown`.
        receipt: Receipt,
    },
    /// The lockout rule refused the user.
    Locked {
        /// Until when; `None` is permanent.
        until: Option<u64>,
    },
    /// Past its time limit.
    Expired,
}

/// The empty prompt an enrolling flow is read with before the runtime
/// opens its sealed round.
fn no_prompt() -> Prompt {
    Prompt {
        title: String::new(),
        help: None,
        display: Vec::new(),
        fields: Vec::new(),
    }
}

impl State {
    /// Whether the flow has ended.
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            State::Completed { .. }
                | State::Failed { .. }
                | State::Interrupted { .. }
                | State::Locked { .. }
                | State::Expired
        )
    }
}

/// A target's outcome in a receipt.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// Not attempted.
    #[default]
    Pending,
    /// Done.
    Ok,
    /// Refused or failed.
    Failed,
    /// Not known: a crash interrupted the commit while this target may have
    /// been reached.
    Unknown,
}

/// What a reset did, target by target.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    /// The directory.
    pub directory: Outcome,
    /// Each sync target, by id, in the order they ran.
    pub sync: Vec<(String, Outcome)>,
    /// The VPN hook, if it ran.
    pub vpn: Option<Outcome>,
}

/// What the engine is waiting for inside one request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Phase {
    /// Nothing: the flow waits for the portal.
    #[default]
    Idle,
    /// For [`Event::DirectoryReady`](super::Event::DirectoryReady) (full VPN mode).
    Preparing,
    /// For [`Event::UserFound`](super::Event::UserFound).
    Finding,
    /// For [`Event::Decided`](super::Event::Decided), then `Then`.
    Deciding(Then),
    /// For the first round of gate `index`.
    Beginning {
        /// The gate.
        index: usize,
    },
    /// For the verdict on gate `index`.
    Judging {
        /// The gate.
        index: usize,
    },
    /// For the current password's check.
    Verifying,
    /// For gate `index`'s enrollment prompt.
    Prompting {
        /// The gate.
        index: usize,
    },
    /// For gate `index`'s enrollment data.
    Enrolling {
        /// The gate.
        index: usize,
    },
    /// For the directory.
    Committing,
    /// For sync target `index`.
    Pushing {
        /// The target.
        index: usize,
    },
    /// For the VPN hook.
    Connecting,
}

/// What to do once the lockout rule allows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Then {
    /// Start the first gate (or authentication).
    Begin,
    /// Judge these answers.
    Judge {
        /// The gate.
        index: usize,
        /// Its round state.
        state: Vec<u8>,
        /// The answers.
        answers: Vec<FieldValue>,
    },
    /// Nothing more: a failure was recorded and the user may retry.
    AfterFailure,
    /// Set this password.
    Commit(Secret),
    /// Check this current password (enrollment).
    Verify(Secret),
}

/// What the last request should tell the user (beyond the flow's state).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Notice {
    /// The answers were wrong; the same round is asked again.
    WrongAnswer,
    /// The new password breaks these rules.
    Policy(Vec<Violation>),
    /// The directory refused the password by its own rule.
    DirectoryRefused,
    /// Enrollment input was incomplete or invalid.
    InvalidInput,
    /// The user is locked out.
    Locked,
    /// The flow is past its time limit.
    Expired,
}

mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        hex::decode(s).map_err(serde::de::Error::custom)
    }
}
