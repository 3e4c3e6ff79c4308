// The gate itself, shared with `tests/plugins/contract-0-2-0`, which
// builds it against the 0.2.0 contract. Included by `lib.rs` after the
// bindings.

use exports::resetgate::plugin::gate_api::{
    Field, FieldKind, FieldValue, Guest, Prompt, Round, Verdict,
};
use resetgate::plugin::types::{CallContext, PluginError, PluginInfo, PluginKind, User};
use serde::Deserialize;

const SCHEMA: &str = r#"{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "type": "object",
  "additionalProperties": false,
  "required": ["attribute", "label"],
  "properties": {
    "attribute": { "type": "string", "minLength": 1, "maxLength": 128 },
    "label": { "type": "string", "minLength": 1, "maxLength": 200 },
    "help": { "type": "string", "maxLength": 1000 },
    "kind": { "enum": ["text", "code"], "default": "text" },
    "max_length": { "type": "integer", "minimum": 1, "maximum": 1024, "default": 64 }
  }
}"#;

/// The state of the one round this gate has.
const ROUND: &[u8] = b"plain/1";
/// The field's name in the prompt and the answers.
const FIELD: &str = "value";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    attribute: String,
    label: String,
    #[serde(default)]
    help: Option<String>,
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

/// The step's config; the host validated it against [`SCHEMA`] already, so
/// a failure here is the schema and the code disagreeing.
fn config(ctx: &CallContext) -> Result<Config, PluginError> {
    serde_json::from_str(&ctx.config)
        .map_err(|e| PluginError::BadConfig(format!("config does not parse: {e}")))
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

struct PlainGate;

impl Guest for PlainGate {
    fn describe() -> PluginInfo {
        PluginInfo {
            name: "plain-gate".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            kind: PluginKind::Gate,
            config_schema: SCHEMA.into(),
            summary: "the person types the value of one of their directory attributes (plain wit-bindgen)".into(),
        }
    }

    /// Nothing to register (the workflow says `enrollment: none`): the
    /// same refusal the SDK's default gives.
    fn enroll_prompt(_ctx: CallContext, _user: User) -> Result<Round, PluginError> {
        Err(PluginError::Refused("this gate needs no enrollment".into()))
    }

    fn enroll(
        _ctx: CallContext,
        _user: User,
        _state: Vec<u8>,
        _input: Vec<FieldValue>,
    ) -> Result<Vec<u8>, PluginError> {
        Err(PluginError::Refused("this gate needs no enrollment".into()))
    }

    fn begin(
        ctx: CallContext,
        _user: User,
        _enrollment: Option<Vec<u8>>,
    ) -> Result<Round, PluginError> {
        let c = config(&ctx)?;
        // The same prompt for every user, known or not, with or without the attribute.
        Ok(Round {
            prompt: Prompt {
                title: c.label.clone(),
                help: c.help,
                display: vec![],
                fields: vec![Field {
                    name: FIELD.into(),
                    label: c.label,
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
        let given = answers
            .iter()
            .find(|a| a.name == FIELD)
            .map(|a| normalise(&a.value))
            .unwrap_or_default();
        if given.chars().count() > c.max_length as usize {
            return Ok(Verdict::Failed("value too long".into()));
        }
        let expected = user
            .attributes
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(&c.attribute))
            .map(|(_, value)| normalise(value))
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

export!(PlainGate);
