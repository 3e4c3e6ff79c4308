//! Attribute gate: asks the person for the value of one attribute the
//! directory holds for them (an employee id, a personnel number, ...) and
//! compares it with what the directory says: trimmed, case-insensitive, in
//! constant time. A user without the attribute (or an unknown user) fails.
//!
//! It needs no enrollment (`enrollment: none`) and does no slow hashing, so
//! a call costs microseconds: the load benchmark uses it as a stand-in for a
//! one-time-code gate. An attribute is weak evidence on its own (anyone who
//! knows the person may know it); pair it with a stronger gate in
//! production.

use resetgate_plugin_sdk::gate::{Field, FieldKind, FieldValue, Prompt, Round, Verdict};
use resetgate_plugin_sdk::prelude::*;
use serde::Deserialize;

struct AttributeGate;

/// A text the person reads: one for every language, or one per language
/// code (`{ en: ..., de: ... }`; English, else the first, for the others).
#[derive(Deserialize)]
#[serde(untagged)]
enum Text {
    One(String),
    ByLanguage(std::collections::BTreeMap<String, String>),
}

impl Text {
    fn pick(&self, language: &str) -> String {
        match self {
            Text::One(text) => text.clone(),
            Text::ByLanguage(texts) => {
                let pairs: Vec<(&str, &str)> = texts
                    .iter()
                    .map(|(l, t)| (l.as_str(), t.as_str()))
                    .collect();
                resetgate_plugin_sdk::locale::pick(language, &pairs).to_owned()
            }
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    attribute: String,
    label: Text,
    #[serde(default)]
    help: Option<Text>,
    #[serde(default)]
    kind: Kind,
    #[serde(default = "default_max")]
    max_length: u32,
}

#[derive(Deserialize, Default, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum Kind {
    #[default]
    Text,
    Code,
}

fn default_max() -> u32 {
    64
}

const SCHEMA: &str = r#"{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "type": "object",
  "additionalProperties": false,
  "required": ["attribute", "label"],
  "properties": {
    "attribute": { "type": "string", "minLength": 1, "maxLength": 128,
                   "description": "The directory attribute whose value the person types, e.g. `employee_id`" },
    "label": { "description": "What the person reads above the field, e.g. `Employee ID`; or texts by language, e.g. `{ en: Employee ID, de: Personalnummer }` (English, else the first, for other languages)",
               "oneOf": [
                 { "type": "string", "minLength": 1, "maxLength": 200 },
                 { "type": "object", "minProperties": 1,
                   "propertyNames": { "pattern": "^[a-z]{2,3}$" },
                   "additionalProperties": { "type": "string", "minLength": 1, "maxLength": 200 } }
               ] },
    "help": { "description": "An optional line of help under the title; or texts by language, as for `label`",
              "oneOf": [
                { "type": "string", "maxLength": 1000 },
                { "type": "object", "minProperties": 1,
                  "propertyNames": { "pattern": "^[a-z]{2,3}$" },
                  "additionalProperties": { "type": "string", "maxLength": 1000 } }
              ] },
    "kind": { "enum": ["text", "code"], "default": "text",
              "description": "How the portal renders the field: `text` (one line) or `code` (a short code)" },
    "max_length": { "type": "integer", "minimum": 1, "maximum": 1024, "default": 64,
                    "description": "The longest value accepted, in characters" }
  }
}"#;

/// The state of the one round this gate has.
const ROUND: &[u8] = b"attribute/1";
/// The field's name in the prompt and the answers.
const FIELD: &str = "value";

fn config(ctx: &CallContext) -> Result<Config, PluginError> {
    ctx.config_with(|s| serde_json::from_str(s))
}

fn normalise(value: &str) -> String {
    value.trim().to_lowercase()
}

/// Whether `a` and `b` are equal, looking at every byte of the longer one
/// whatever the contents, so the time says nothing about where they differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let n = a.len().max(b.len());
    let mut diff = u8::from(a.len() != b.len());
    for i in 0..n {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= x ^ y;
    }
    std::hint::black_box(diff) == 0
}

impl Plugin for AttributeGate {
    fn describe() -> PluginInfo {
        PluginInfo::new(
            "attribute-gate",
            env!("CARGO_PKG_VERSION"),
            PluginKind::Gate,
            "the person types the value of one of their directory attributes",
        )
        .with_config_schema(SCHEMA)
    }
}

impl Gate for AttributeGate {
    fn begin(
        ctx: CallContext,
        _user: User,
        _enrollment: Option<Vec<u8>>,
    ) -> Result<Round, PluginError> {
        let c = config(&ctx)?;
        let language = ctx.language();
        let label = c.label.pick(&language);
        // The same prompt for every user, known or not, with or without the attribute.
        Ok(Round {
            prompt: Prompt {
                title: label.clone(),
                help: c.help.as_ref().map(|h| h.pick(&language)),
                display: vec![],
                fields: vec![Field {
                    name: FIELD.to_owned(),
                    label,
                    kind: match c.kind {
                        Kind::Text => FieldKind::Text,
                        Kind::Code => FieldKind::Code,
                    },
                    max_length: c.max_length,
                }],
            },
            state: ROUND.to_vec(),
        })
    }

    fn answer(
        ctx: CallContext,
        user: User,
        _enrollment: Option<Vec<u8>>,
        state: Vec<u8>,
        answers: Vec<FieldValue>,
    ) -> Result<Verdict, PluginError> {
        let c = config(&ctx)?;
        if state != ROUND {
            return Err(PluginError::Internal("unknown round state".into()));
        }
        let given = normalise(FieldValue::find(&answers, FIELD).unwrap_or_default());
        if given.chars().count() > c.max_length as usize {
            return Ok(Verdict::Failed("value too long".into()));
        }
        let expected = user
            .attribute(&c.attribute)
            .map(normalise)
            .filter(|v| !v.is_empty());
        // Compare even without an expected value, so both paths cost the same.
        let matches = constant_time_eq(
            given.as_bytes(),
            expected.as_deref().unwrap_or("\u{0}").as_bytes(),
        );
        Ok(match (expected.is_some(), matches) {
            (true, true) => Verdict::Passed,
            (false, _) => Verdict::Failed(format!("the user has no `{}` attribute", c.attribute)),
            (true, false) => Verdict::Failed("wrong value".into()),
        })
    }
}

resetgate_plugin_sdk::export_gate!(AttributeGate);
