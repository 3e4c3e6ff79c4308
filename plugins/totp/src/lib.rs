//! Time-based one-time passwords (RFC 6238: HMAC-SHA1, 6 digits, 30 s
//! steps) from an authenticator app, with `totp-rs`.
//!
//! - Enrollment: 20 random bytes from the host are the key. The prompt
//!   shows it as text (base32) and as a QR code of its `otpauth://` URI;
//!   the key travels in the round's state, which the host seals at rest,
//!   and one valid code confirms it. The enrollment data is the key
//!   (sealed at rest by the host).
//! - Reset: a code is right for the flow's time step (`ctx.now-ms`, never
//!   the wall clock) or one step either side (drift), and is accepted once:
//!   the last accepted step of each user is kept with `kv` (by a sha256 of
//!   the user id) and a code for that step or an earlier one is refused.
//!   The code that confirmed an enrollment counts as accepted too.
//! - A decoy or a user who has not enrolled gets the same prompt and the
//!   same work (the `kv` read, three HMACs over a dummy key) and fails.
//!
//! Grants: `kv: true`, in reset and enrollment workflows.

use resetgate_plugin_sdk::gate::{Display, Field, FieldKind, FieldValue, Prompt, Round, Verdict};
use resetgate_plugin_sdk::locale::pick;
use resetgate_plugin_sdk::prelude::*;
use resetgate_plugin_sdk::{kv, random};
use serde::Deserialize;
use totp_rs::{Algorithm, TOTP};

struct Totp;

/// Key length in bytes (RFC 4226 recommends 160 bits).
const KEY_LEN: usize = 20;
/// Digits of a code.
const DIGITS: usize = 6;
/// Seconds per time step.
const PERIOD: u64 = 30;
/// Steps of drift accepted either side of the current one.
const DRIFT: u64 = 1;
/// Format byte of the enrollment data and of the enrollment round's state.
const FORMAT: u8 = 1;
/// The reset round's state.
const RESET_STATE: &[u8] = b"totp/1";
/// The name of the code field, in both prompts.
const CODE_FIELD: &str = "code";
/// Longest user name put into the `otpauth://` label (the QR text has a
/// limit of 1024 bytes).
const LABEL_USER_MAX: usize = 128;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default = "default_issuer")]
    issuer: String,
}

fn default_issuer() -> String {
    "resetgate".into()
}

const SCHEMA: &str = r#"{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "type": "object",
  "additionalProperties": false,
  "properties": {
    "issuer": {
      "type": "string",
      "minLength": 1,
      "maxLength": 64,
      "pattern": "^[^:]+$",
      "default": "resetgate",
      "description": "The name authenticator apps show next to the account (no `:`). Default resetgate."
    }
  }
}"#;

fn config(ctx: &CallContext) -> Result<Config, PluginError> {
    ctx.config_with(|s| serde_json::from_str(s))
}

fn totp(key: &[u8]) -> Result<TOTP, PluginError> {
    TOTP::new(Algorithm::SHA1, DIGITS, 1, PERIOD, key.to_vec())
        .map_err(|e| PluginError::Internal(format!("unusable key: {e}")))
}

/// RFC 3986 percent-encoding of everything but unreserved characters.
fn percent(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The key's `otpauth://` URI (the de-facto format authenticator apps read).
fn otpauth(issuer: &str, user: &str, secret_b32: &str) -> String {
    let user: String = user.chars().take(LABEL_USER_MAX).collect();
    let issuer = percent(issuer);
    format!(
        "otpauth://totp/{issuer}:{}?secret={secret_b32}&issuer={issuer}&period={PERIOD}&digits={DIGITS}&algorithm=SHA1",
        percent(&user)
    )
}

fn code_field() -> Field {
    Field {
        name: CODE_FIELD.into(),
        label: "Code".into(),
        kind: FieldKind::Code,
        // Room for a space or dash in the middle, as apps show it.
        max_length: 8,
    }
}

/// The digits of a typed code (spaces and dashes dropped), if it is six
/// ASCII digits.
fn digits(typed: &str) -> Option<String> {
    let code: String = typed.chars().filter(|c| !matches!(c, ' ' | '-')).collect();
    (code.len() == DIGITS && code.bytes().all(|b| b.is_ascii_digit())).then_some(code)
}

/// Constant-time equality of two codes of the same length.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// The steps within the drift window around `now_ms` whose code is `code`,
/// oldest first. Always computes every code of the window.
fn matching_steps(t: &TOTP, code: Option<&str>, now_ms: u64) -> Vec<u64> {
    let now = now_ms / 1000 / PERIOD;
    let mut found = Vec::new();
    for step in now.saturating_sub(DRIFT)..=now.saturating_add(DRIFT) {
        let expected = t.generate(step * PERIOD);
        if code.is_some_and(|c| same(c, &expected)) {
            found.push(step);
        }
    }
    found
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The `kv` key of a user's last accepted step: a sha256 of the directory's
/// id, or of the typed name (trimmed, lowercased) for a decoy.
fn last_step_key(user: &User) -> String {
    use sha2::Digest;
    let who = if user.id.is_empty() {
        format!("name\0{}", user.name.trim().to_lowercase())
    } else {
        format!("id\0{}", user.id)
    };
    format!("last-step/{}", hex(&sha2::Sha256::digest(who.as_bytes())))
}

fn last_step(user: &User) -> Option<u64> {
    kv::get(&last_step_key(user))
        .and_then(|v| String::from_utf8(v).ok())
        .and_then(|s| s.parse().ok())
}

fn key_of(bytes: &[u8], what: &str) -> Result<Vec<u8>, PluginError> {
    match bytes.split_first() {
        Some((&FORMAT, key)) if key.len() == KEY_LEN => Ok(key.to_vec()),
        _ => Err(PluginError::Internal(format!("unreadable {what}"))),
    }
}

impl Plugin for Totp {
    fn describe() -> PluginInfo {
        PluginInfo::new(
            "totp",
            env!("CARGO_PKG_VERSION"),
            PluginKind::Gate,
            "codes from an authenticator app (TOTP, RFC 6238), enrolled with a QR code; grant kv",
        )
        .with_config_schema(SCHEMA)
    }
}

impl Gate for Totp {
    fn enroll_prompt(ctx: CallContext, user: User) -> Result<Round, PluginError> {
        let c = config(&ctx)?;
        let key = random::bytes(KEY_LEN as u32);
        let secret = totp(&key)?.get_secret_base32();
        let uri = otpauth(&c.issuer, &user.name, &secret);
        let mut state = Vec::with_capacity(1 + KEY_LEN);
        state.push(FORMAT);
        state.extend_from_slice(&key);
        Ok(Round {
            prompt: Prompt {
                title: pick(
                    &ctx.language(),
                    &[
                        ("en", "Set up your authenticator app"),
                        ("de", "Richten Sie Ihre Authenticator-App ein"),
                    ],
                )
                .into(),
                help: Some(
                    pick(
                        &ctx.language(),
                        &[
                            (
                                "en",
                                "Scan the QR code with your authenticator app, or type the key into it, \
                                 then enter the 6-digit code it shows.",
                            ),
                            (
                                "de",
                                "Scannen Sie den QR-Code mit Ihrer Authenticator-App oder tippen Sie den \
                                 Schlüssel ein, und geben Sie dann den 6-stelligen Code ein, den sie anzeigt.",
                            ),
                        ],
                    )
                    .into(),
                ),
                display: vec![Display::QrCode(uri), Display::Code(secret)],
                fields: vec![code_field()],
            },
            state,
        })
    }

    fn enroll(
        ctx: CallContext,
        user: User,
        state: Vec<u8>,
        input: Vec<FieldValue>,
    ) -> Result<Vec<u8>, PluginError> {
        let key = key_of(&state, "round state")?;
        let code = FieldValue::find(&input, CODE_FIELD).and_then(digits);
        let steps = matching_steps(&totp(&key)?, code.as_deref(), ctx.now_ms);
        let Some(&step) = steps.last() else {
            return Err(PluginError::Refused(
                "the code does not match the new key".into(),
            ));
        };
        // The confirming code may not be used again for a reset.
        kv::set(&last_step_key(&user), step.to_string().as_bytes());
        Ok(state)
    }

    fn begin(
        ctx: CallContext,
        _user: User,
        _enrollment: Option<Vec<u8>>,
    ) -> Result<Round, PluginError> {
        let c = config(&ctx)?;
        // The same prompt whether or not the user enrolled.
        Ok(Round {
            prompt: Prompt {
                title: pick(
                    &ctx.language(),
                    &[
                        ("en", "Enter the code from your authenticator app"),
                        ("de", "Geben Sie den Code aus Ihrer Authenticator-App ein"),
                    ],
                )
                .into(),
                help: Some(if ctx.language() == "de" {
                    format!(
                        "Der 6-stellige Code, den Ihre Authenticator-App für {} anzeigt.",
                        c.issuer
                    )
                } else {
                    format!(
                        "The 6-digit code your authenticator app shows for {}.",
                        c.issuer
                    )
                }),
                display: vec![],
                fields: vec![code_field()],
            },
            state: RESET_STATE.to_vec(),
        })
    }

    fn answer(
        ctx: CallContext,
        user: User,
        enrollment: Option<Vec<u8>>,
        state: Vec<u8>,
        answers: Vec<FieldValue>,
    ) -> Result<Verdict, PluginError> {
        if state != RESET_STATE {
            return Err(PluginError::Internal("unknown round state".into()));
        }
        let key = enrollment
            .as_deref()
            .map(|e| key_of(e, "enrollment"))
            .transpose()?;
        // Without a key, the same work over a dummy one.
        let t = totp(key.as_deref().unwrap_or(&[0; KEY_LEN]))?;
        let last = last_step(&user);
        let code = FieldValue::find(&answers, CODE_FIELD).and_then(digits);
        let steps = matching_steps(&t, code.as_deref(), ctx.now_ms);
        if key.is_none() {
            return Ok(Verdict::Failed("not enrolled".into()));
        }
        if code.is_none() {
            return Ok(Verdict::Failed("not a 6-digit code".into()));
        }
        let Some(&matched) = steps.last() else {
            return Ok(Verdict::Failed("wrong code".into()));
        };
        if last.is_some_and(|l| matched <= l) {
            return Ok(Verdict::Failed("code of a time step already used".into()));
        }
        kv::set(&last_step_key(&user), matched.to_string().as_bytes());
        Ok(Verdict::Passed)
    }
}

resetgate_plugin_sdk::export_gate!(Totp);
