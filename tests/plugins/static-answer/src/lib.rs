//! A cheap gate for engine tests and benchmarks: passes when the answer
//! equals the step's config string (e.g. `"open sesame"`, or in a workflow
//! file `{answer: open sesame}`), fails otherwise. No slow hashing, so
//! thousands of flows run per second; a stand-in for a one-time-code gate.

use resetgate_plugin_sdk::gate::{Field, FieldKind, FieldValue, Prompt, Round, Verdict};
use resetgate_plugin_sdk::prelude::*;

struct StaticAnswer;

impl Plugin for StaticAnswer {
    fn describe() -> PluginInfo {
        PluginInfo::new("static-answer", "0.1.0", PluginKind::Gate, "the answer is in the config")
            .with_config_schema(
                r#"{"oneOf":[{"type":"string"},{"type":"object","required":["answer"],"additionalProperties":false,"properties":{"answer":{"type":"string"}}}]}"#,
            )
    }
}

impl Gate for StaticAnswer {
    fn begin(_ctx: CallContext, _user: User, _enrollment: Option<Vec<u8>>) -> Result<Round, PluginError> {
        Ok(Round {
            prompt: Prompt {
                title: "Say the word".into(),
                help: None,
                display: vec![],
                fields: vec![Field { name: "answer".into(), label: "Answer".into(), kind: FieldKind::Code, max_length: 64 }],
            },
            state: b"r".to_vec(),
        })
    }

    fn answer(
        ctx: CallContext,
        _user: User,
        _enrollment: Option<Vec<u8>>,
        _state: Vec<u8>,
        answers: Vec<FieldValue>,
    ) -> Result<Verdict, PluginError> {
        // `"x"` or `{"answer":"x"}` (no escapes: this is a test plugin).
        let config = ctx.config.trim();
        let expected = match config.strip_prefix('{') {
            Some(rest) => rest.split_once(':').map(|(_, v)| v).unwrap_or("").trim_end_matches('}').trim(),
            None => config,
        }
        .trim_matches('"');
        Ok(match FieldValue::find(&answers, "answer") {
            Some(a) if a == expected => Verdict::Passed,
            _ => Verdict::Failed("wrong answer".into()),
        })
    }
}

resetgate_plugin_sdk::export_gate!(StaticAnswer);
