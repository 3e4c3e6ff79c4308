//! Example gate: one security question. The answer is normalised (trimmed,
//! lowercased, inner whitespace collapsed) and stored only as an argon2id
//! hash made by the host.

use resetgate_plugin_sdk::gate::{Field, FieldKind, FieldValue, Prompt, Round, Verdict};
use resetgate_plugin_sdk::prelude::*;
use resetgate_plugin_sdk::locale::pick;
use resetgate_plugin_sdk::slow_hash;
use serde::Deserialize;

struct Question;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    question: String,
    #[serde(default = "default_max")]
    max_length: u32,
}

fn default_max() -> u32 {
    128
}

const SCHEMA: &str = r#"{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "type": "object",
  "additionalProperties": false,
  "required": ["question"],
  "properties": {
    "question": { "type": "string", "minLength": 1, "description": "The question the user answers" },
    "max_length": { "type": "integer", "minimum": 1, "maximum": 1024, "default": 128 }
  }
}"#;

fn config(ctx: &CallContext) -> Result<Config, PluginError> {
    ctx.config_with(|s| serde_json::from_str(s))
}

fn normalise(answer: &str) -> String {
    answer.split_whitespace().collect::<Vec<_>>().join(" ").to_lowercase()
}

fn prompt(c: &Config, title: &str) -> Prompt {
    Prompt {
        title: title.to_owned(),
        help: Some(c.question.clone()),
        display: vec![],
        fields: vec![Field {
            name: "answer".into(),
            label: c.question.clone(),
            kind: FieldKind::Secret,
            max_length: c.max_length,
        }],
    }
}

impl Plugin for Question {
    fn describe() -> PluginInfo {
        PluginInfo::new("example-question", env!("CARGO_PKG_VERSION"), PluginKind::Gate, "one security question")
            .with_config_schema(SCHEMA)
    }
}

impl Gate for Question {
    fn enroll_prompt(ctx: CallContext, _user: User) -> Result<Round, PluginError> {
        // Titles in the person's language (the question is the admin's text).
        let title = pick(&ctx.language(), &[("en", "Choose your answer"), ("de", "Wählen Sie Ihre Antwort")]);
        Ok(Round { prompt: prompt(&config(&ctx)?, title), state: vec![] })
    }

    fn enroll(ctx: CallContext, _user: User, _state: Vec<u8>, input: Vec<FieldValue>) -> Result<Vec<u8>, PluginError> {
        let c = config(&ctx)?;
        let answer = FieldValue::find(&input, "answer").map(normalise).unwrap_or_default();
        if answer.chars().count() < 3 {
            return Err(PluginError::Refused("answer shorter than 3 characters".into()));
        }
        if answer.chars().count() > c.max_length as usize {
            return Err(PluginError::Refused("answer too long".into()));
        }
        Ok(slow_hash::hash(&answer).into_bytes())
    }

    fn begin(ctx: CallContext, _user: User, _enrollment: Option<Vec<u8>>) -> Result<Round, PluginError> {
        // The same prompt whether or not the user enrolled: nothing to tell apart.
        let title = pick(
            &ctx.language(),
            &[("en", "Answer your security question"), ("de", "Beantworten Sie Ihre Sicherheitsfrage")],
        );
        Ok(Round { prompt: prompt(&config(&ctx)?, title), state: b"q1".to_vec() })
    }

    fn answer(
        ctx: CallContext,
        _user: User,
        enrollment: Option<Vec<u8>>,
        state: Vec<u8>,
        answers: Vec<FieldValue>,
    ) -> Result<Verdict, PluginError> {
        let c = config(&ctx)?;
        if state != b"q1" {
            return Err(PluginError::Internal("unknown round state".into()));
        }
        let given = FieldValue::find(&answers, "answer").map(normalise).unwrap_or_default();
        if given.chars().count() > c.max_length as usize {
            return Ok(Verdict::Failed("answer too long".into()));
        }
        let stored = enrollment.and_then(|e| String::from_utf8(e).ok());
        // Verify even without an enrollment, so both paths cost the same.
        let phc = stored.as_deref().unwrap_or(DECOY_PHC);
        let matches = slow_hash::verify(&given, phc);
        Ok(match (stored.is_some(), matches) {
            (true, true) => Verdict::Passed,
            (false, _) => Verdict::Failed("user has not enrolled".into()),
            (true, false) => Verdict::Failed("wrong answer".into()),
        })
    }
}

/// An argon2id hash of a random value nobody knows, verified against when
/// the user has no enrollment so that the timing matches.
const DECOY_PHC: &str = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0c2FsdA$J6ht7kWRbGxXv7c8yQ9d3iH9Rr0mD3C8dZqV5LzNf0M";

resetgate_plugin_sdk::export_gate!(Question);
