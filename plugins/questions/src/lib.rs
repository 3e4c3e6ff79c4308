//! Security questions with the five counts of FIM's Question and Answer
//! gate: the questions the admin defines (and, optionally, questions users
//! write themselves), how many a user sees at registration, how many must
//! be answered to register, how many are asked at a reset, and how many
//! must be right.
//!
//! - Answers are normalised ([`normalise`]: Unicode NFKC, full case
//!   folding, whitespace collapsed and trimmed) and kept only as argon2id
//!   hashes made by the host (`slow_hash`). Registering needs answers of at
//!   least `min_answer_length` characters, and two questions may not have
//!   the same answer.
//! - A reset asks a random subset of the registered questions and keeps
//!   asking that same subset (kept with `kv`, by a sha256 of the user id,
//!   or of the typed name for a decoy) until it has been answered right, so
//!   restarting a flow cannot fish for easier questions. Registering again
//!   replaces the answers and with them the subset.
//! - A decoy or a user who has not registered is asked the admin's
//!   questions with the same prompt, the same `kv` work and the same number
//!   of hash verifications, and fails.
//!
//! Grants: `kv: true` (reset workflows). Enrollment calls no `kv`.

mod config;
mod normalise;

use config::Config;
pub use normalise::normalise;
use resetgate_plugin_sdk::gate::{Field, FieldKind, FieldValue, Prompt, Round, Verdict};
use resetgate_plugin_sdk::prelude::*;
use resetgate_plugin_sdk::{kv, log, random, slow_hash};
use serde::{Deserialize, Serialize};

struct Questions;

/// An argon2id hash (the host's parameters) of a random value nobody knows:
/// what a decoy's or an unregistered user's answers are verified against,
/// so that every path does the same number of verifications.
const DECOY_PHC: &str = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0c2FsdA$J6ht7kWRbGxXv7c8yQ9d3iH9Rr0mD3C8dZqV5LzNf0M";

/// The host's limit on what `slow_hash` takes, in bytes.
const HASH_INPUT_MAX: usize = 1024;

/// What the host stores for a registered user (sealed at rest).
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Enrollment {
    /// Format version.
    v: u32,
    /// Random id of this registration: a new registration asks a new subset.
    id: String,
    answers: Vec<Answer>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Answer {
    /// The question as shown when the user registered.
    question: String,
    /// Whether the user wrote the question.
    own: bool,
    /// argon2id PHC string of the normalised answer, made by the host.
    hash: String,
}

/// The subset a user is asked until they answer it right (in `kv`), and
/// the reset round's state.
#[derive(Serialize, Deserialize, PartialEq, Eq, Clone, Debug)]
#[serde(deny_unknown_fields)]
struct Asked {
    /// The registration the indices point into (`""`: the admin's questions,
    /// for decoys and users who have not registered).
    enrollment: String,
    /// Indices into the registration's answers, or into the admin's questions.
    asked: Vec<usize>,
}

/// The enrollment round's state: which admin questions were shown.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Shown {
    shown: Vec<usize>,
}

fn config(ctx: &CallContext) -> Result<Config, PluginError> {
    let c: Config = ctx.config_with(|s| serde_json::from_str(s))?;
    c.check().map_err(PluginError::BadConfig)?;
    Ok(c)
}

fn internal(what: &str, e: impl core::fmt::Display) -> PluginError {
    PluginError::Internal(format!("{what}: {e}"))
}

/// `count` distinct indices below `n`, chosen with the host's randomness
/// (a partial Fisher-Yates shuffle), in the order they will be shown.
fn pick(n: usize, count: usize) -> Vec<usize> {
    let mut all: Vec<usize> = (0..n).collect();
    let count = count.min(n);
    for i in 0..count {
        let j = i + random::below((n - i) as u64) as usize;
        all.swap(i, j);
    }
    all.truncate(count);
    all
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The `kv` key of a user's pending subset: a sha256 of the directory's id,
/// or of the typed name (trimmed, lowercased) for a decoy whose id is empty.
fn pending_key(user: &User) -> String {
    use sha2::Digest;
    let who = if user.id.is_empty() {
        format!("name\0{}", user.name.trim().to_lowercase())
    } else {
        format!("id\0{}", user.id)
    };
    format!("asked/{}", hex(&sha2::Sha256::digest(who.as_bytes())))
}

fn parse_enrollment(bytes: &[u8]) -> Result<Enrollment, PluginError> {
    let e: Enrollment =
        serde_json::from_slice(bytes).map_err(|e| internal("unreadable enrollment", e))?;
    if e.v != 1 {
        return Err(PluginError::Internal(format!(
            "enrollment format {} is not known",
            e.v
        )));
    }
    Ok(e)
}

/// The registration to ask from, if the user has one with enough answers
/// for the current config.
fn usable(
    c: &Config,
    user: &User,
    enrollment: Option<&[u8]>,
) -> Result<Option<Enrollment>, PluginError> {
    let Some(bytes) = enrollment else {
        return Ok(None);
    };
    let e = parse_enrollment(bytes)?;
    if e.answers.len() < c.asked_at_reset {
        log::warn(&format!(
            "user {} registered {} answers but asked_at_reset is {}: they must register again",
            user.id,
            e.answers.len(),
            c.asked_at_reset
        ));
        return Ok(None);
    }
    Ok(Some(e))
}

/// Whether a stored subset still fits: same registration, right size,
/// indices in range and distinct.
fn fits(a: &Asked, registration: &str, pool: usize, count: usize) -> bool {
    let mut seen = a.asked.clone();
    seen.sort_unstable();
    seen.dedup();
    a.enrollment == registration
        && a.asked.len() == count
        && seen.len() == count
        && a.asked.iter().all(|&i| i < pool)
}

fn answer_field(n: usize) -> String {
    format!("answer-{}", n + 1)
}

fn question_field(n: usize) -> String {
    format!("question-{}", n + 1)
}

fn own_question_field(n: usize) -> String {
    format!("own-question-{}", n + 1)
}

fn own_answer_field(n: usize) -> String {
    format!("own-answer-{}", n + 1)
}

/// The text of a question a user wrote, for showing: whitespace collapsed,
/// nothing else changed.
fn tidy(question: &str) -> String {
    question.split_whitespace().collect::<Vec<_>>().join(" ")
}

impl Plugin for Questions {
    fn describe() -> PluginInfo {
        PluginInfo::new(
            "questions",
            env!("CARGO_PKG_VERSION"),
            PluginKind::Gate,
            "security questions (FIM's five counts); answers kept as host-made argon2id hashes; grant kv",
        )
        .with_config_schema(&config::schema())
    }
}

impl Gate for Questions {
    fn enroll_prompt(ctx: CallContext, _user: User) -> Result<Round, PluginError> {
        let c = config(&ctx)?;
        let de = ctx.language() == "de";
        let shown = pick(c.questions.len(), c.shown_at_registration);
        let mut fields = Vec::with_capacity(shown.len() + 2 * c.user_questions);
        for (n, &q) in shown.iter().enumerate() {
            fields.push(Field {
                name: question_field(n),
                label: c.questions[q].clone(),
                kind: FieldKind::Secret,
                max_length: c.max_answer_length,
            });
        }
        for n in 0..c.user_questions {
            fields.push(Field {
                name: own_question_field(n),
                label: if de {
                    format!("Ihre eigene Frage {}", n + 1)
                } else {
                    format!("Your own question {}", n + 1)
                },
                kind: FieldKind::Text,
                max_length: config::QUESTION_MAX,
            });
            fields.push(Field {
                name: own_answer_field(n),
                label: if de {
                    format!("Antwort auf Ihre eigene Frage {}", n + 1)
                } else {
                    format!("Answer to your own question {}", n + 1)
                },
                kind: FieldKind::Secret,
                max_length: c.max_answer_length,
            });
        }
        let help = if de {
            format!(
                "Beantworten Sie mindestens {} dieser Fragen, jede mit mindestens {} Zeichen und keine zwei gleich. \
                 Lassen Sie die übrigen leer.",
                c.required_at_registration, c.min_answer_length
            )
        } else {
            format!(
                "Answer at least {} of these questions, each with at least {} characters and no two the same. \
                 Leave the others empty.",
                c.required_at_registration, c.min_answer_length
            )
        };
        let state = serde_json::to_vec(&Shown { shown }).map_err(|e| internal("state", e))?;
        Ok(Round {
            prompt: Prompt {
                title: if de {
                    "Wählen Sie Ihre Sicherheitsfragen".into()
                } else {
                    "Choose your security questions".into()
                },
                help: Some(help),
                display: vec![],
                fields,
            },
            state,
        })
    }

    fn enroll(
        ctx: CallContext,
        _user: User,
        state: Vec<u8>,
        input: Vec<FieldValue>,
    ) -> Result<Vec<u8>, PluginError> {
        let c = config(&ctx)?;
        let Shown { shown } =
            serde_json::from_slice(&state).map_err(|e| internal("unreadable round state", e))?;
        if shown.iter().any(|&q| q >= c.questions.len()) {
            return Err(PluginError::Refused(
                "the questions changed since the prompt was shown; start again".into(),
            ));
        }
        let value = |name: &str| FieldValue::find(&input, name).unwrap_or("");
        // (question as shown, own, normalised answer)
        let mut given: Vec<(String, bool, String)> = Vec::new();
        for (n, &q) in shown.iter().enumerate() {
            let answer = normalise(value(&question_field(n)));
            if !answer.is_empty() {
                given.push((c.questions[q].clone(), false, answer));
            }
        }
        for n in 0..c.user_questions {
            let question = tidy(value(&own_question_field(n)));
            let answer = normalise(value(&own_answer_field(n)));
            match (question.is_empty(), answer.is_empty()) {
                (true, true) => {}
                (false, false) => given.push((question, true, answer)),
                _ => {
                    return Err(PluginError::Refused(format!(
                        "own question {} needs both a question and an answer",
                        n + 1
                    )));
                }
            }
        }
        if given.len() < c.required_at_registration {
            return Err(PluginError::Refused(format!(
                "{} questions answered, {} required",
                given.len(),
                c.required_at_registration
            )));
        }
        for (i, (question, _, answer)) in given.iter().enumerate() {
            let len = answer.chars().count();
            if len < c.min_answer_length as usize {
                return Err(PluginError::Refused(format!(
                    "answer {} is shorter than {} characters",
                    i + 1,
                    c.min_answer_length
                )));
            }
            if len > c.max_answer_length as usize || answer.len() > HASH_INPUT_MAX {
                return Err(PluginError::Refused(format!(
                    "answer {} is too long",
                    i + 1
                )));
            }
            for (other_q, _, other_a) in &given[..i] {
                if other_a == answer {
                    return Err(PluginError::Refused(
                        "two questions have the same answer".into(),
                    ));
                }
                if normalise(other_q) == normalise(question) {
                    return Err(PluginError::Refused(
                        "the same question is there twice".into(),
                    ));
                }
            }
        }
        let answers = given
            .into_iter()
            .map(|(question, own, answer)| Answer {
                question,
                own,
                hash: slow_hash::hash(&answer),
            })
            .collect();
        let enrollment = Enrollment {
            v: 1,
            id: hex(&random::bytes(8)),
            answers,
        };
        serde_json::to_vec(&enrollment).map_err(|e| internal("enrollment", e))
    }

    fn begin(
        ctx: CallContext,
        user: User,
        enrollment: Option<Vec<u8>>,
    ) -> Result<Round, PluginError> {
        let c = config(&ctx)?;
        let registered = usable(&c, &user, enrollment.as_deref())?;
        // A decoy or unregistered user is asked the admin's questions, with
        // the same kv work as a registered user.
        let (registration, pool) = match &registered {
            Some(e) => (e.id.clone(), e.answers.len()),
            None => (String::new(), c.questions.len()),
        };
        let key = pending_key(&user);
        let stored = kv::get(&key).and_then(|v| serde_json::from_slice::<Asked>(&v).ok());
        let asked = match stored {
            Some(a) if fits(&a, &registration, pool, c.asked_at_reset) => a,
            _ => {
                let a = Asked {
                    enrollment: registration,
                    asked: pick(pool, c.asked_at_reset),
                };
                let bytes = serde_json::to_vec(&a).map_err(|e| internal("asked", e))?;
                kv::set(&key, &bytes);
                a
            }
        };
        let label = |i: usize| match &registered {
            Some(e) => e.answers[i].question.clone(),
            None => c.questions[i].clone(),
        };
        let fields = asked
            .asked
            .iter()
            .enumerate()
            .map(|(n, &i)| Field {
                name: answer_field(n),
                label: label(i),
                kind: FieldKind::Secret,
                max_length: c.max_answer_length,
            })
            .collect();
        let de = ctx.language() == "de";
        let help = match (c.required_at_reset == c.asked_at_reset, de) {
            (true, false) => "Answer every question as you did when you registered.".to_owned(),
            (true, true) => "Beantworten Sie jede Frage so wie bei der Registrierung.".to_owned(),
            (false, false) => format!(
                "Answer the questions as you did when you registered; {} of {} must be right.",
                c.required_at_reset, c.asked_at_reset
            ),
            (false, true) => format!(
                "Beantworten Sie die Fragen so wie bei der Registrierung; {} von {} müssen stimmen.",
                c.required_at_reset, c.asked_at_reset
            ),
        };
        let state = serde_json::to_vec(&asked).map_err(|e| internal("state", e))?;
        Ok(Round {
            prompt: Prompt {
                title: if de {
                    "Beantworten Sie Ihre Sicherheitsfragen".into()
                } else {
                    "Answer your security questions".into()
                },
                help: Some(help),
                display: vec![],
                fields,
            },
            state,
        })
    }

    fn answer(
        ctx: CallContext,
        user: User,
        enrollment: Option<Vec<u8>>,
        state: Vec<u8>,
        answers: Vec<FieldValue>,
    ) -> Result<Verdict, PluginError> {
        let c = config(&ctx)?;
        let asked: Asked =
            serde_json::from_slice(&state).map_err(|e| internal("unreadable round state", e))?;
        let registered = usable(&c, &user, enrollment.as_deref())?;
        // The registration the round was asked from, if it is still the
        // user's (registering again in between voids the round).
        let current = registered.filter(|e| {
            e.id == asked.enrollment && asked.asked.iter().all(|&i| i < e.answers.len())
        });
        let mut right = 0;
        // Every asked question costs one verification, whoever asks.
        for (n, &i) in asked.asked.iter().enumerate() {
            let given = normalise(FieldValue::find(&answers, &answer_field(n)).unwrap_or(""));
            let phc = current
                .as_ref()
                .map_or(DECOY_PHC, |e| e.answers[i].hash.as_str());
            let fits = !given.is_empty() && given.len() <= HASH_INPUT_MAX;
            let input = if fits { given.as_str() } else { "" };
            if slow_hash::verify(input, phc) && fits && current.is_some() {
                right += 1;
            }
        }
        if current.is_none() {
            return Ok(Verdict::Failed("not registered for these questions".into()));
        }
        if right < c.required_at_reset {
            return Ok(Verdict::Failed(format!(
                "{right} of {} answers right, {} required",
                asked.asked.len(),
                c.required_at_reset
            )));
        }
        // Answered: the next reset asks a new subset.
        kv::delete(&pending_key(&user));
        Ok(Verdict::Passed)
    }
}

resetgate_plugin_sdk::export_gate!(Questions);
