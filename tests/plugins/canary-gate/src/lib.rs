//! A gate whose enrollment is a secret, for the tests that look for it at
//! rest: `enroll-prompt` makes a random canary (`canary-` and 32 hex
//! digits), shows it as a `code` display item and inside a `qr-code` one
//! (an `otpauth://` URI, as a TOTP gate would), and keeps it in the round's
//! state; `enroll` returns that state as the enrollment data (refusing a
//! round whose state did not come back); at a reset, `begin` asks for the
//! canary and `answer` passes when it equals the enrollment. So a canary
//! that reaches the data folder in clear, from the round or from the
//! enrollment, is found by grepping it; and a reset that passes proves the
//! sealed enrollment opened.

use resetgate_plugin_sdk::gate::{Display, Field, FieldKind, FieldValue, Prompt, Round, Verdict};
use resetgate_plugin_sdk::prelude::*;
use resetgate_plugin_sdk::random;

struct CanaryGate;

const PREFIX: &[u8] = b"canary-";

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Plugin for CanaryGate {
    fn describe() -> PluginInfo {
        PluginInfo::new("canary-gate", "0.1.0", PluginKind::Gate, "registers a random canary as a secret")
            .with_config_schema(r#"{"type":"object","additionalProperties":false}"#)
    }
}

impl Gate for CanaryGate {
    fn enroll_prompt(_ctx: CallContext, user: User) -> Result<Round, PluginError> {
        let canary = format!("canary-{}", hex(&random::bytes(16)));
        Ok(Round {
            prompt: Prompt {
                title: "Register your canary".into(),
                help: Some("Keep this key; you will type it to reset your password.".into()),
                display: vec![
                    Display::Text("Scan the code with your app, or copy the key.".into()),
                    Display::Code(canary.clone()),
                    Display::QrCode(format!("otpauth://totp/resetgate:{}?secret={canary}&issuer=resetgate", user.name)),
                ],
                fields: vec![Field { name: "confirm".into(), label: "Type OK to save".into(), kind: FieldKind::Text, max_length: 8 }],
            },
            state: canary.into_bytes(),
        })
    }

    fn enroll(_ctx: CallContext, _user: User, state: Vec<u8>, input: Vec<FieldValue>) -> Result<Vec<u8>, PluginError> {
        if !state.starts_with(PREFIX) || state.len() != PREFIX.len() + 32 {
            return Err(PluginError::Internal("the enrollment round's state did not come back".into()));
        }
        if FieldValue::find(&input, "confirm") != Some("OK") {
            return Err(PluginError::Refused("type OK".into()));
        }
        Ok(state)
    }

    fn begin(_ctx: CallContext, _user: User, _enrollment: Option<Vec<u8>>) -> Result<Round, PluginError> {
        Ok(Round {
            prompt: Prompt {
                title: "Type your canary".into(),
                help: None,
                display: vec![],
                fields: vec![Field { name: "canary".into(), label: "Canary".into(), kind: FieldKind::Secret, max_length: 64 }],
            },
            state: b"asked".to_vec(),
        })
    }

    fn answer(
        _ctx: CallContext,
        _user: User,
        enrollment: Option<Vec<u8>>,
        _state: Vec<u8>,
        answers: Vec<FieldValue>,
    ) -> Result<Verdict, PluginError> {
        let typed = FieldValue::find(&answers, "canary").unwrap_or("");
        Ok(match enrollment {
            Some(e) if e == typed.as_bytes() => Verdict::Passed,
            Some(_) => Verdict::Failed("wrong canary".into()),
            None => Verdict::Failed("not registered".into()),
        })
    }
}

resetgate_plugin_sdk::export_gate!(CanaryGate);
