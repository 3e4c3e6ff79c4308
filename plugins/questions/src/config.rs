//! The step's config and its JSON Schema. The schema refuses every
//! impossible combination of the counts when the workflow loads, each with
//! a message naming the setting that limits it: JSON Schema cannot compare
//! two values, so the schema spells the comparisons out as `if`/`then`
//! pairs over the (small) range of each count.

use serde::Deserialize;
use serde_json::{Value, json};

/// The most fields a prompt may have (the contract's limit).
const FIELDS_MAX: usize = 32;
/// The longest question, in characters.
pub const QUESTION_MAX: u32 = 256;

/// The step's config.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The admin's questions.
    pub questions: Vec<String>,
    /// How many questions of their own a user may write at registration.
    #[serde(default)]
    pub user_questions: usize,
    /// How many of the admin's questions a user sees at registration.
    pub shown_at_registration: usize,
    /// How many answers registering needs.
    pub required_at_registration: usize,
    /// How many questions a reset asks.
    pub asked_at_reset: usize,
    /// How many of them must be right.
    pub required_at_reset: usize,
    /// Shortest answer, in characters after normalisation.
    #[serde(default = "default_min")]
    pub min_answer_length: u32,
    /// Longest answer, in characters.
    #[serde(default = "default_max")]
    pub max_answer_length: u32,
}

fn default_min() -> u32 {
    3
}

fn default_max() -> u32 {
    128
}

const SHOWN_LE_QUESTIONS: &str = "Cannot be more than the questions listed in `questions`.";
const ASKED_LE_QUESTIONS: &str = "Cannot be more than the questions listed in `questions`: \
     decoys and users who have not registered are asked the admin's questions.";
const SHOWN_FIELDS: &str = "A registration prompt has at most 32 fields; each of \
     `user_questions` takes two (the question and its answer).";
const REQUIRED_LE_SHOWN: &str = "Cannot be more than the questions a user sees at \
     registration: `shown_at_registration` plus `user_questions`.";
const ASKED_LE_REQUIRED: &str = "Cannot be more than `required_at_registration`: a user \
     who registered the fewest answers allowed must still have this many to be asked.";
const CORRECT_LE_ASKED: &str = "Cannot be more than `asked_at_reset`.";

/// `if` `when` holds, `then` `field` is at most `max` (explained by `why`).
fn at_most(when: Value, field: &str, max: usize, why: &str) -> Value {
    json!({
        "if": when,
        "then": { "properties": { field: { "maximum": max, "description": why } } }
    })
}

/// An `if` that holds when `field` is present and equal to `n`.
fn is(field: &str, n: usize) -> Value {
    json!({ "properties": { field: { "const": n } }, "required": [field] })
}

/// The config's JSON Schema (2020-12), as JSON text.
pub fn schema() -> String {
    let mut rules = Vec::new();
    for q in 1..=FIELDS_MAX {
        let exactly = json!({
            "properties": { "questions": { "type": "array", "minItems": q, "maxItems": q } },
            "required": ["questions"]
        });
        rules.push(at_most(
            exactly.clone(),
            "shown_at_registration",
            q,
            SHOWN_LE_QUESTIONS,
        ));
        rules.push(at_most(exactly, "asked_at_reset", q, ASKED_LE_QUESTIONS));
    }
    for u in 1..=FIELDS_MAX / 2 {
        rules.push(at_most(
            is("user_questions", u),
            "shown_at_registration",
            FIELDS_MAX - 2 * u,
            SHOWN_FIELDS,
        ));
    }
    for s in 1..=FIELDS_MAX {
        // `user_questions` absent is 0: the `u = 0` rule must hold then too.
        rules.push(at_most(
            json!({ "properties": {
                "shown_at_registration": { "const": s },
                "user_questions": { "const": 0 } },
                "required": ["shown_at_registration"] }),
            "required_at_registration",
            s,
            REQUIRED_LE_SHOWN,
        ));
        for u in 1..=(FIELDS_MAX - s) / 2 {
            rules.push(at_most(
                json!({ "properties": {
                    "shown_at_registration": { "const": s },
                    "user_questions": { "const": u } },
                    "required": ["shown_at_registration", "user_questions"] }),
                "required_at_registration",
                s + u,
                REQUIRED_LE_SHOWN,
            ));
        }
    }
    for r in 1..=FIELDS_MAX {
        rules.push(at_most(
            is("required_at_registration", r),
            "asked_at_reset",
            r,
            ASKED_LE_REQUIRED,
        ));
    }
    for a in 1..=FIELDS_MAX {
        rules.push(at_most(
            is("asked_at_reset", a),
            "required_at_reset",
            a,
            CORRECT_LE_ASKED,
        ));
    }
    let count = |description: &str| json!({ "type": "integer", "minimum": 1, "maximum": FIELDS_MAX, "description": description });
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "additionalProperties": false,
        "required": ["questions", "shown_at_registration", "required_at_registration",
                     "asked_at_reset", "required_at_reset"],
        "properties": {
            "questions": {
                "type": "array",
                "minItems": 1,
                "maxItems": FIELDS_MAX,
                "uniqueItems": true,
                "items": { "type": "string", "minLength": 1, "maxLength": QUESTION_MAX },
                "description": "The questions the admin defines (FIM: how many questions are created)."
            },
            "user_questions": {
                "type": "integer", "minimum": 0, "maximum": FIELDS_MAX / 2, "default": 0,
                "description": "How many questions of their own a user may write at registration; \
                    their answers count towards `required_at_registration`. Default 0."
            },
            "shown_at_registration": count(
                "How many of the admin's questions a user sees at registration, chosen at random."),
            "required_at_registration": count(
                "How many questions must be answered to register (admin's and own together)."),
            "asked_at_reset": count(
                "How many of the registered questions a reset asks, chosen at random and asked \
                 again until answered right."),
            "required_at_reset": count("How many of the questions asked must be answered right."),
            "min_answer_length": {
                "type": "integer", "minimum": 1, "maximum": 16, "default": 3,
                "description": "Shortest answer accepted at registration, in characters after \
                    normalisation. Default 3."
            },
            "max_answer_length": {
                "type": "integer", "minimum": 16, "maximum": 256, "default": 128,
                "description": "Longest answer, in characters. Default 128."
            }
        },
        "allOf": rules
    })
    .to_string()
}

impl Config {
    /// The rules of the schema, again: a host that validated the config
    /// (the gateway always does) never gets this error.
    pub fn check(&self) -> Result<(), String> {
        let shown_total = self.shown_at_registration + self.user_questions;
        let ok = !self.questions.is_empty()
            && self.shown_at_registration >= 1
            && self.shown_at_registration <= self.questions.len()
            && self.shown_at_registration + 2 * self.user_questions <= FIELDS_MAX
            && self.required_at_registration >= 1
            && self.required_at_registration <= shown_total
            && self.asked_at_reset >= 1
            && self.asked_at_reset <= self.required_at_registration
            && self.asked_at_reset <= self.questions.len()
            && self.required_at_reset >= 1
            && self.required_at_reset <= self.asked_at_reset
            && self.min_answer_length >= 1
            && self.min_answer_length <= self.max_answer_length;
        if ok {
            Ok(())
        } else {
            Err("the counts do not fit together; `resetgate check` explains which".into())
        }
    }
}
