//! Engine transitions with a fixed clock: every state, every forbidden
//! transition. Plugin results are scripted; nothing here does I/O.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::contract::{Field, FieldKind, Prompt};
use crate::workflow::{FlowLimits, PasswordPolicy};

const T0: u64 = 1_763_856_000_000;

pub(crate) fn shape() -> Shape {
    Shape {
        name: "reset".into(),
        version: "v1".into(),
        purpose: Purpose::Reset,
        gates: vec![
            GateShape {
                id: "pet".into(),
                max_rounds: 2,
            },
            GateShape {
                id: "code".into(),
                max_rounds: 2,
            },
        ],
        password: PasswordPolicy {
            min_length: 12,
            max_length: 64,
            blocklist: Arc::new(HashSet::from(["password1234".to_owned()])),
            blocklist_source: None,
            reject_user_name: true,
            must_change: false,
        },
        sync: vec![],
        vpn: None,
        limits: FlowLimits {
            idle: Duration::from_secs(300),
            absolute: Duration::from_secs(900),
        },
    }
}

fn alice() -> User {
    User {
        id: "uid=alice".into(),
        name: "alice".into(),
        attributes: vec![],
    }
}

fn round(title: &str) -> Round {
    Round {
        prompt: Prompt {
            title: title.into(),
            help: None,
            display: vec![],
            fields: vec![Field {
                name: "answer".into(),
                label: "Answer".into(),
                kind: FieldKind::Secret,
                max_length: 64,
            }],
        },
        state: title.as_bytes().to_vec(),
    }
}

fn answer(v: &str) -> Vec<FieldValue> {
    vec![FieldValue {
        name: "answer".into(),
        value: Secret::from(v),
    }]
}

/// Scripted plugin results; records every effect.
struct World {
    user: Option<User>,
    decision: Decision,
    correct: &'static str,
    directory: Result<(), SetPasswordFailure>,
    push_fails: HashSet<usize>,
    effects: Vec<String>,
    failures: Vec<u64>,
}

impl World {
    fn new() -> World {
        World {
            user: Some(alice()),
            decision: Decision::Allowed,
            correct: "rex",
            directory: Ok(()),
            push_fails: HashSet::new(),
            effects: vec![],
            failures: vec![],
        }
    }

    fn result(&mut self, effect: &Effect) -> Option<Event> {
        self.effects.push(match effect {
            Effect::Audit(a) => format!("audit:{}", a.kind),
            other => format!("{other:?}")
                .split([' ', '{', '('])
                .next()
                .unwrap_or("")
                .to_owned(),
        });
        match effect {
            Effect::FindUser { .. } => Some(Event::UserFound(self.user.clone())),
            Effect::Decide => Some(Event::Decided(self.decision)),
            Effect::BeginGate { index } => Some(Event::RoundBegun(round(&format!("gate {index}")))),
            Effect::Judge { answers, .. } => Some(Event::Judged(
                if answers[0].value.expose() == self.correct {
                    Verdict::Passed
                } else {
                    Verdict::Failed("wrong".into())
                },
            )),
            Effect::VerifyPassword { password } => {
                Some(Event::Verified(password.expose() == "current-pw"))
            }
            Effect::EnrollPrompt { index } => {
                Some(Event::RoundBegun(round(&format!("enroll {index}"))))
            }
            Effect::Enroll { input, .. } => Some(Event::Enrolled(if input.is_empty() {
                Err(PluginFailure::Refused("empty".into()))
            } else {
                Ok(b"hash".to_vec())
            })),
            Effect::SetPassword { .. } => Some(Event::PasswordSet(self.directory.clone())),
            Effect::Push { index, .. } => Some(Event::Pushed {
                index: *index,
                result: if self.push_fails.contains(index) {
                    Err("down".into())
                } else {
                    Ok(())
                },
            }),
            Effect::VpnConnect => Some(Event::VpnConnected(Ok(()))),
            Effect::EnsureDirectory => Some(Event::DirectoryReady(Ok(true))),
            Effect::RecordFailure { at_ms } => {
                self.failures.push(*at_ms);
                None
            }
            Effect::RecordSuccess { .. } => {
                self.failures.clear();
                None
            }
            Effect::StoreEnrollment { .. }
            | Effect::Checkpoint
            | Effect::VpnDisconnect
            | Effect::Audit(_) => None,
        }
    }

    /// Runs one portal event to quiescence, as the runtime does.
    fn run(&mut self, flow: &mut Flow, wf: &Shape, event: Event, now: u64) -> Result<(), Refusal> {
        let mut queue = std::collections::VecDeque::from(step(flow, wf, event, now)?);
        while let Some(effect) = queue.pop_front() {
            if let Some(next) = self.result(&effect) {
                let more = step(flow, wf, next, now).expect("engine refused its own result");
                // Results are handled before the rest of the queue.
                for e in more.into_iter().rev() {
                    queue.push_front(e);
                }
            }
        }
        assert_eq!(flow.phase, Phase::Idle, "request ended mid-phase");
        Ok(())
    }

    /// Answers both gates of [`shape`] correctly.
    fn pass_gates(&mut self, flow: &mut Flow, wf: &Shape) {
        for _ in 0..2 {
            self.run(flow, wf, Event::Answers(answer("rex")), T0)
                .unwrap();
        }
        assert_eq!(flow.state, State::AwaitingPassword);
    }

    fn has(&self, name: &str) -> bool {
        self.effects.iter().any(|e| e == name)
    }
}

fn started(world: &mut World, wf: &Shape) -> Flow {
    let mut flow = Flow::new("f1".into(), wf, "alice".into(), T0);
    world.run(&mut flow, wf, Event::Start, T0).unwrap();
    flow
}

#[test]
fn a_reset_passes_both_gates_then_sets_the_password() {
    let wf = shape();
    let mut w = World::new();
    let mut flow = started(&mut w, &wf);
    assert!(matches!(
        flow.state,
        State::Gate {
            index: 0,
            round: 1,
            ..
        }
    ));
    w.run(&mut flow, &wf, Event::Answers(answer("rex")), T0 + 1)
        .unwrap();
    assert!(matches!(flow.state, State::Gate { index: 1, .. }));
    w.run(&mut flow, &wf, Event::Answers(answer("rex")), T0 + 2)
        .unwrap();
    assert_eq!(flow.state, State::AwaitingPassword);
    assert_eq!(flow.passed, vec!["pet", "code"]);
    w.run(
        &mut flow,
        &wf,
        Event::Password(Secret::from("purple monkey dishwasher")),
        T0 + 3,
    )
    .unwrap();
    assert_eq!(
        flow.state,
        State::Completed {
            receipt: Receipt {
                directory: Outcome::Ok,
                sync: vec![],
                vpn: None
            }
        }
    );
    // Lockout is consulted at start, before each answer, and before the commit.
    assert_eq!(w.effects.iter().filter(|e| *e == "Decide").count(), 4);
    // The flow is persisted as committing before the directory is touched.
    let i = w.effects.iter().position(|e| e == "SetPassword").unwrap();
    assert_eq!(w.effects[i - 1], "Checkpoint");
}

#[test]
fn a_wrong_answer_is_recorded_and_the_same_round_is_asked_again() {
    let wf = shape();
    let mut w = World::new();
    let mut flow = started(&mut w, &wf);
    let before = flow.state.clone();
    w.run(&mut flow, &wf, Event::Answers(answer("fluffy")), T0 + 5)
        .unwrap();
    assert_eq!(flow.state, before, "the same question until answered");
    assert_eq!(flow.notice, Some(Notice::WrongAnswer));
    assert_eq!(w.failures, vec![T0 + 5]);
    assert!(w.has("audit:gate.failed"));
}

#[test]
fn the_lockout_rule_locks_at_start_and_after_a_failure() {
    let wf = shape();
    let mut w = World::new();
    w.decision = Decision::LockedUntil(T0 + 60_000);
    let mut flow = started(&mut w, &wf);
    // Locked at start looks like any flow (no enumeration) but is a decoy...
    assert!(matches!(
        flow.state,
        State::Gate {
            index: 0,
            round: 1,
            ..
        }
    ));
    assert!(flow.decoy);
    // ...and the lockout answers the first attempt, without judging it.
    w.run(&mut flow, &wf, Event::Answers(answer("rex")), T0 + 1)
        .unwrap();
    assert_eq!(
        flow.state,
        State::Locked {
            until: Some(T0 + 60_000)
        }
    );
    assert!(!w.has("Judge"), "a locked user's answers are not judged");

    let mut w = World::new();
    let mut flow = started(&mut w, &wf);
    w.decision = Decision::LockedPermanently;
    w.run(&mut flow, &wf, Event::Answers(answer("rex")), T0 + 1)
        .unwrap();
    assert_eq!(flow.state, State::Locked { until: None });
    assert!(!w.has("Judge"), "a locked user's answers are not judged");
}

#[test]
fn a_flow_locked_at_start_never_passes_even_once_unlocked() {
    let wf = shape();
    let mut w = World::new();
    w.decision = Decision::LockedUntil(T0 + 60_000);
    let mut flow = started(&mut w, &wf);
    // The lock expires while the flow waits; the right answer still fails.
    w.decision = Decision::Allowed;
    w.run(&mut flow, &wf, Event::Answers(answer("rex")), T0 + 60_001)
        .unwrap();
    assert!(matches!(flow.state, State::Gate { index: 0, .. }));
    assert_eq!(flow.notice, Some(Notice::WrongAnswer));
}

#[test]
fn the_lockout_is_checked_again_right_before_the_password_is_set() {
    let wf = shape();
    let mut w = World::new();
    let mut flow = started(&mut w, &wf);
    w.pass_gates(&mut flow, &wf);
    w.decision = Decision::LockedUntil(T0 + 1);
    w.run(
        &mut flow,
        &wf,
        Event::Password(Secret::from("purple monkey dishwasher")),
        T0,
    )
    .unwrap();
    assert!(matches!(flow.state, State::Locked { .. }));
    assert!(!w.has("SetPassword"));
}

#[test]
fn steps_cannot_be_skipped_or_repeated() {
    let wf = shape();
    let mut w = World::new();
    let mut flow = started(&mut w, &wf);
    let before = flow.state.clone();
    assert_eq!(
        step(
            &mut flow,
            &wf,
            Event::Password(Secret::from("purple monkey dishwasher")),
            T0
        )
        .unwrap_err(),
        Refusal::OutOfOrder
    );
    assert_eq!(flow.state, before);
    // Plugin results that nobody asked for change nothing either.
    assert_eq!(
        step(&mut flow, &wf, Event::Judged(Verdict::Passed), T0).unwrap_err(),
        Refusal::OutOfOrder
    );
    assert_eq!(
        step(&mut flow, &wf, Event::PasswordSet(Ok(())), T0).unwrap_err(),
        Refusal::OutOfOrder
    );
    assert_eq!(flow.state, before);
    assert!(flow.passed.is_empty());

    w.pass_gates(&mut flow, &wf);
    assert_eq!(
        step(&mut flow, &wf, Event::Answers(answer("rex")), T0).unwrap_err(),
        Refusal::OutOfOrder
    );
    w.run(
        &mut flow,
        &wf,
        Event::Password(Secret::from("purple monkey dishwasher")),
        T0,
    )
    .unwrap();
    assert_eq!(
        step(
            &mut flow,
            &wf,
            Event::Password(Secret::from("another long password")),
            T0
        )
        .unwrap_err(),
        Refusal::Finished
    );
}

#[test]
fn idle_and_absolute_time_limits_expire_a_flow() {
    let wf = shape();
    let mut w = World::new();
    let mut flow = started(&mut w, &wf);
    // One millisecond short of the idle limit still works and resets it.
    w.run(&mut flow, &wf, Event::Answers(answer("rex")), T0 + 299_999)
        .unwrap();
    assert!(matches!(flow.state, State::Gate { index: 1, .. }));
    w.run(
        &mut flow,
        &wf,
        Event::Answers(answer("rex")),
        T0 + 299_999 + 300_000,
    )
    .unwrap();
    assert_eq!(flow.state, State::Expired);
    assert!(w.has("audit:flow.expired"));

    // Absolute: active all along, still ends at 15 minutes.
    let mut w = World::new();
    let mut flow = started(&mut w, &wf);
    w.run(&mut flow, &wf, Event::Answers(answer("x")), T0 + 290_000)
        .unwrap();
    w.run(&mut flow, &wf, Event::Answers(answer("x")), T0 + 580_000)
        .unwrap();
    w.run(&mut flow, &wf, Event::Answers(answer("x")), T0 + 870_000)
        .unwrap();
    assert!(matches!(flow.state, State::Gate { .. }));
    w.run(&mut flow, &wf, Event::Answers(answer("rex")), T0 + 900_000)
        .unwrap();
    assert_eq!(flow.state, State::Expired);
    assert_eq!(
        step(&mut flow, &wf, Event::Answers(answer("rex")), T0 + 900_001).unwrap_err(),
        Refusal::Finished
    );
}

#[test]
fn an_unknown_user_gets_gates_but_never_passes() {
    let wf = shape();
    let mut w = World::new();
    w.user = None;
    let mut flow = started(&mut w, &wf);
    assert!(
        matches!(
            flow.state,
            State::Gate {
                index: 0,
                round: 1,
                ..
            }
        ),
        "looks like a real flow"
    );
    // Even a plugin that says "passed" cannot let a decoy through.
    w.run(&mut flow, &wf, Event::Answers(answer("rex")), T0)
        .unwrap();
    assert!(matches!(flow.state, State::Gate { index: 0, .. }));
    assert_eq!(flow.notice, Some(Notice::WrongAnswer));
    assert_eq!(
        w.failures.len(),
        1,
        "unknown names are rate-limited like known ones"
    );
}

#[test]
fn the_password_policy_explains_every_rule_broken() {
    let wf = shape();
    let mut w = World::new();
    let mut flow = started(&mut w, &wf);
    w.pass_gates(&mut flow, &wf);
    w.run(&mut flow, &wf, Event::Password(Secret::from("alice")), T0)
        .unwrap();
    assert_eq!(flow.state, State::AwaitingPassword);
    assert_eq!(
        flow.notice,
        Some(Notice::Policy(vec![
            crate::policy::Violation::TooShort { min: 12 },
            crate::policy::Violation::ContainsUserName
        ]))
    );
    assert!(!w.has("SetPassword"));
}

#[test]
fn a_directory_refusal_lets_the_user_choose_again() {
    let wf = shape();
    let mut w = World::new();
    w.directory = Err(SetPasswordFailure::RejectedByPolicy("complexity".into()));
    let mut flow = started(&mut w, &wf);
    w.pass_gates(&mut flow, &wf);
    w.run(
        &mut flow,
        &wf,
        Event::Password(Secret::from("purple monkey dishwasher")),
        T0,
    )
    .unwrap();
    assert_eq!(flow.state, State::AwaitingPassword);
    assert_eq!(flow.notice, Some(Notice::DirectoryRefused));
    w.directory = Ok(());
    w.run(
        &mut flow,
        &wf,
        Event::Password(Secret::from("purple monkey dishwasher 2")),
        T0,
    )
    .unwrap();
    assert!(matches!(flow.state, State::Completed { .. }));
}

#[test]
fn sync_targets_deny_first_and_the_receipt_lists_each() {
    let mut wf = shape();
    let sync = |on_failure| SyncMode::Sync {
        timeout: Duration::from_secs(5),
        on_failure,
    };
    wf.sync = vec![
        SyncShape {
            id: "mail".into(),
            mode: sync(OnFailure::Allow),
        },
        SyncShape {
            id: "hr".into(),
            mode: sync(OnFailure::Deny),
        },
    ];
    wf.vpn = Some(VpnMode::Partial);
    let finish = |w: &mut World| {
        let mut flow = started(w, &wf);
        w.pass_gates(&mut flow, &wf);
        w.run(
            &mut flow,
            &wf,
            Event::Password(Secret::from("purple monkey dishwasher")),
            T0,
        )
        .unwrap();
        flow
    };
    let mut w = World::new();
    let flow = finish(&mut w);
    let receipt = Receipt {
        directory: Outcome::Ok,
        sync: vec![("hr".into(), Outcome::Ok), ("mail".into(), Outcome::Ok)],
        vpn: Some(Outcome::Ok),
    };
    assert_eq!(flow.state, State::Completed { receipt });

    let mut w = World::new();
    w.push_fails.insert(0);
    let flow = finish(&mut w);
    assert!(
        matches!(&flow.state, State::Completed { receipt } if receipt.sync[1] == ("mail".into(), Outcome::Failed))
    );

    let mut w = World::new();
    w.push_fails.insert(1);
    let flow = finish(&mut w);
    let State::Failed {
        receipt: Some(receipt),
    } = &flow.state
    else {
        panic!("{:?}", flow.state)
    };
    assert_eq!(
        receipt.sync,
        vec![("hr".into(), Outcome::Failed)],
        "mail never got the password"
    );
    assert!(!w.has("VpnConnect"));
}

#[test]
fn a_failing_plugin_fails_the_flow_closed() {
    let wf = shape();
    let mut w = World::new();
    let mut flow = started(&mut w, &wf);
    let fx = step(&mut flow, &wf, Event::Answers(answer("rex")), T0).unwrap();
    assert!(matches!(fx[..], [Effect::Decide]));
    step(&mut flow, &wf, Event::Decided(Decision::Allowed), T0).unwrap();
    step(&mut flow, &wf, Event::PluginFailed("trap".into()), T0).unwrap();
    assert_eq!(flow.state, State::Failed { receipt: None });
}

#[test]
fn a_gate_may_take_rounds_up_to_its_limit() {
    let wf = shape();
    let mut w = World::new();
    let mut flow = started(&mut w, &wf);
    step(&mut flow, &wf, Event::Answers(answer("x")), T0).unwrap();
    step(&mut flow, &wf, Event::Decided(Decision::Allowed), T0).unwrap();
    step(
        &mut flow,
        &wf,
        Event::Judged(Verdict::AnotherRound(round("second"))),
        T0,
    )
    .unwrap();
    assert!(
        matches!(&flow.state, State::Gate { index: 0, round: 2, prompt, .. } if prompt.title == "second")
    );
    step(&mut flow, &wf, Event::Answers(answer("x")), T0).unwrap();
    step(&mut flow, &wf, Event::Decided(Decision::Allowed), T0).unwrap();
    let fx = step(
        &mut flow,
        &wf,
        Event::Judged(Verdict::AnotherRound(round("third"))),
        T0,
    )
    .unwrap();
    assert!(
        fx.iter().any(|e| matches!(e, Effect::RecordFailure { .. })),
        "a third round exceeds max_rounds"
    );
}

#[test]
fn enrollment_authenticates_then_registers_each_gate() {
    let mut wf = shape();
    wf.purpose = Purpose::Enrollment;
    let mut w = World::new();
    let mut flow = started(&mut w, &wf);
    assert_eq!(flow.state, State::Authenticating);
    w.run(&mut flow, &wf, Event::Password(Secret::from("wrong")), T0)
        .unwrap();
    assert_eq!(flow.state, State::Authenticating);
    assert_eq!(w.failures.len(), 1);
    w.run(
        &mut flow,
        &wf,
        Event::Password(Secret::from("current-pw")),
        T0,
    )
    .unwrap();
    assert!(matches!(flow.state, State::Enrolling { index: 0, .. }));
    w.run(&mut flow, &wf, Event::Answers(vec![]), T0).unwrap();
    assert_eq!(flow.notice, Some(Notice::InvalidInput));
    assert!(matches!(flow.state, State::Enrolling { index: 0, .. }));
    w.run(&mut flow, &wf, Event::Answers(answer("rex")), T0)
        .unwrap();
    w.run(&mut flow, &wf, Event::Answers(answer("blue")), T0)
        .unwrap();
    assert!(matches!(flow.state, State::Completed { .. }));
    assert_eq!(
        w.effects.iter().filter(|e| *e == "StoreEnrollment").count(),
        2
    );
}

#[test]
fn full_vpn_mode_prepares_the_directory_first_and_disconnects_at_the_end() {
    let mut wf = shape();
    wf.vpn = Some(VpnMode::Full);
    let mut w = World::new();
    let mut flow = started(&mut w, &wf);
    assert_eq!(
        w.effects
            .iter()
            .find(|e| !e.starts_with("audit"))
            .map(String::as_str),
        Some("EnsureDirectory")
    );
    w.pass_gates(&mut flow, &wf);
    w.run(
        &mut flow,
        &wf,
        Event::Password(Secret::from("purple monkey dishwasher")),
        T0,
    )
    .unwrap();
    assert!(w.has("VpnDisconnect"));
    assert!(
        !w.has("VpnConnect"),
        "full mode does not connect again after the reset"
    );
}

#[test]
fn a_stored_flow_never_holds_the_password_or_answers() {
    let wf = shape();
    let mut w = World::new();
    let mut flow = started(&mut w, &wf);
    w.pass_gates(&mut flow, &wf);
    // Stop right after the checkpoint before the directory call.
    let fx = step(
        &mut flow,
        &wf,
        Event::Password(Secret::from("canary-pw-7f3e91")),
        T0,
    )
    .unwrap();
    assert!(matches!(fx[..], [Effect::Decide]));
    step(&mut flow, &wf, Event::Decided(Decision::Allowed), T0).unwrap();
    assert!(matches!(flow.state, State::Committing { .. }));
    let stored = serde_json::to_string(&flow).unwrap();
    assert!(!stored.contains("canary-pw-7f3e91"), "{stored}");
    assert!(!stored.contains("rex"), "{stored}");
    let back: Flow = serde_json::from_str(&stored).unwrap();
    assert_eq!(back.state, flow.state);
    assert!(back.pending_password.is_none());
}

#[test]
fn a_commit_cut_short_by_a_crash_ends_interrupted_with_unknown_outcomes() {
    let mut wf = shape();
    let sync = |on_failure| SyncMode::Sync {
        timeout: Duration::from_secs(5),
        on_failure,
    };
    wf.sync = vec![
        SyncShape {
            id: "mail".into(),
            mode: sync(OnFailure::Allow),
        },
        SyncShape {
            id: "hr".into(),
            mode: sync(OnFailure::Deny),
        },
    ];
    wf.vpn = Some(VpnMode::Partial);
    let mut w = World::new();
    let mut flow = started(&mut w, &wf);
    w.pass_gates(&mut flow, &wf);
    // As stored by the checkpoint before the directory was called.
    flow.state = State::Committing {
        receipt: Receipt::default(),
    };
    let event = interrupt(&mut flow, Some(&wf), T0 + 60_000).expect("committing");
    assert_eq!(event.kind, "flow.interrupted");
    assert!(event.detail.contains(&("outcome", "unknown".into())));
    assert!(event.detail.contains(&("directory", "unknown".into())));
    assert_eq!(
        flow.state,
        State::Interrupted {
            receipt: Receipt {
                directory: Outcome::Unknown,
                sync: vec![
                    ("hr".into(), Outcome::Unknown),
                    ("mail".into(), Outcome::Unknown)
                ],
                vpn: Some(Outcome::Unknown),
            }
        }
    );
    assert!(flow.state.is_terminal());
    assert_eq!(
        flow.touched_ms,
        T0 + 60_000,
        "readable for a while after restart"
    );
    // Everything the portal sends is refused as interrupted, not as ended.
    assert_eq!(
        step(
            &mut flow,
            &wf,
            Event::Password(Secret::from("x")),
            T0 + 60_001
        )
        .unwrap_err(),
        Refusal::Interrupted
    );
    // Outcomes already known stay; a flow not committing is left alone.
    let mut known = started(&mut World::new(), &shape());
    known.state = State::Committing {
        receipt: Receipt {
            directory: Outcome::Ok,
            sync: vec![],
            vpn: None,
        },
    };
    interrupt(&mut known, None, T0).unwrap();
    assert!(
        matches!(&known.state, State::Interrupted { receipt } if receipt.directory == Outcome::Ok)
    );
    assert!(interrupt(&mut known, None, T0).is_none());
}
