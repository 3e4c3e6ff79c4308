//! One-time-code gate: sends a 6- to 8-digit code through an HTTP endpoint
//! the admin configures (an SMS gateway or a mail relay) to a destination
//! the directory holds for the user (`mail`, `mobile`, ...), and asks for it
//! back. The prompt shows the destination masked (`a•••@example.com`,
//! `•••• ••12`).
//!
//! Rules, all decided with the flow's clock (`ctx.now_ms`):
//! - a code is valid for `ttl` (at most 10 minutes), for at most
//!   `max_tries` tries (at most 5), and once;
//! - submitting an empty code sends a new one (an `another-round` with a
//!   new state) and voids the previous one;
//! - at most `max_sends_per_hour` codes are sent per user in any hour
//!   (sliding): beyond it `begin` fails the flow and a re-send is `failed`.
//!
//! What is kept where. The round state holds only an HMAC-SHA256 of the
//! code, keyed with a random 256-bit key made for that code, plus the
//! code's serial and issue time. The key, the tries and the send times are
//! kept in `kv` under a sha256 of the user (directory id, or the typed name
//! for a decoy), one record per user. A new code replaces the key (voiding
//! the old code); a passed code deletes it (single use). Whoever reads a
//! flow record alone (the round state) learns nothing about the code: 20
//! bits are brute-forced in microseconds only with the key, which lives
//! elsewhere and dies with the code. argon2id (`slow-hash`) would instead
//! cost ~20 ms per code sent and per try and still fall to anyone holding
//! the whole database for ~2^20 × 20 ms.
//!
//! Decoys (unknown, disabled or locked-out names: empty `id`, no
//! attributes) and users without the destination attribute get the same
//! prompt shape and the same `kv` work; no message is sent. A decoy's
//! masked destination is derived from its name (e-mail: first letter and
//! `decoy_domain`; phone: two digits from an HMAC of the name under a key
//! kept in `kv`), so it is the same every time the name is tried.

use std::collections::BTreeMap;

use hmac::{Hmac, Mac};
use resetgate_plugin_sdk::gate::{Field, FieldKind, FieldValue, Prompt, Round, Verdict};
use resetgate_plugin_sdk::http::{self, HeaderValue, Request};
use resetgate_plugin_sdk::prelude::*;
use resetgate_plugin_sdk::{kv, log, random};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

struct OneTimeCode;

const SCHEMA: &str = r#"{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "type": "object",
  "additionalProperties": false,
  "required": ["url", "body", "destination_attribute"],
  "properties": {
    "url": { "type": "string", "pattern": "^https?://[^\\s]+$", "maxLength": 2048,
             "description": "Where the code is sent, e.g. `https://sms.example.com/v1/messages`; its origin must be granted to the step (`grants: { http: [ORIGIN] }`)" },
    "method": { "enum": ["POST", "PUT"], "default": "POST",
                "description": "The request's method" },
    "content_type": { "type": "string", "minLength": 1, "maxLength": 200, "default": "application/json",
                      "description": "The body's content type. The values put into `body` are JSON-string-escaped for a JSON type, percent-encoded for `application/x-www-form-urlencoded`, and written as they are otherwise" },
    "body": { "type": "string", "maxLength": 16384, "pattern": "\\{\\{code\\}\\}",
              "description": "The request body, with `{{destination}}`, `{{code}}`, `{{minutes}}` and `{{language}}` (the person's language, `en` or `de`, so the relay can send the message in it) replaced, e.g. `{\"to\": \"{{destination}}\", \"text\": \"Your code: {{code}} (valid {{minutes}} minutes)\"}`" },
    "headers": { "type": "object", "maxProperties": 16,
                 "propertyNames": { "pattern": "^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,64}$" },
                 "additionalProperties": {
                   "anyOf": [
                     { "type": "string", "maxLength": 1024 },
                     { "type": "object", "additionalProperties": false, "required": ["secret"],
                       "properties": { "secret": { "type": "string", "minLength": 1, "maxLength": 64 } } }
                   ] },
                 "description": "Extra request headers: a value, or `{secret: NAME}` for a secret the host writes (the step must grant it: `grants: { secrets: [NAME] }`)" },
    "api_key_secret": { "type": "string", "minLength": 1, "maxLength": 64,
                        "description": "Shorthand for `headers: { API_KEY_HEADER: {secret: NAME} }`" },
    "api_key_header": { "type": "string", "pattern": "^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,64}$", "default": "X-Api-Key",
                        "description": "The header `api_key_secret` is sent in" },
    "destination_attribute": { "type": "string", "minLength": 1, "maxLength": 128,
                               "description": "The directory attribute holding where to send the code, e.g. `mail` or `mobile`" },
    "destination_kind": { "enum": ["email", "phone"], "default": "email",
                          "description": "How the destination is masked in the prompt: `email` (`a•••@example.com`) or `phone` (`•••• ••12`)" },
    "decoy_domain": { "type": "string", "pattern": "^[A-Za-z0-9.-]{1,253}$",
                      "description": "For `email`: the domain shown to names the directory does not know (use your users' usual mail domain), so the prompt does not tell them apart" },
    "digits": { "type": "integer", "minimum": 6, "maximum": 8, "default": 6,
                "description": "How many digits a code has" },
    "ttl": { "type": "string", "pattern": "^([1-9]|10)m$", "default": "10m",
             "description": "How long a code is valid, in whole minutes: `1m` to `10m`" },
    "max_tries": { "type": "integer", "minimum": 1, "maximum": 5, "default": 5,
                   "description": "How many tries one code allows" },
    "max_sends_per_hour": { "type": "integer", "minimum": 1, "maximum": 100, "default": 5,
                            "description": "How many codes one user may be sent in any hour" },
    "title": { "type": "string", "minLength": 1, "maxLength": 200,
               "description": "The prompt's title, for every language (default `Enter the code we sent you`, in the person's language)" }
  },
  "if": { "properties": { "destination_kind": { "const": "email" } } },
  "then": { "required": ["decoy_domain"] }
}"#;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    url: String,
    #[serde(default = "default_method")]
    method: String,
    #[serde(default = "default_content_type")]
    content_type: String,
    body: String,
    #[serde(default)]
    headers: BTreeMap<String, ConfigHeader>,
    #[serde(default)]
    api_key_secret: Option<String>,
    #[serde(default = "default_api_key_header")]
    api_key_header: String,
    destination_attribute: String,
    #[serde(default)]
    destination_kind: DestinationKind,
    #[serde(default)]
    decoy_domain: Option<String>,
    #[serde(default = "default_digits")]
    digits: u32,
    #[serde(default = "default_ttl")]
    ttl: String,
    #[serde(default = "default_max_tries")]
    max_tries: u32,
    #[serde(default = "default_max_sends")]
    max_sends_per_hour: u32,
    #[serde(default)]
    title: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum ConfigHeader {
    Plain(String),
    Secret(SecretHeader),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SecretHeader {
    secret: String,
}

#[derive(Deserialize, Default, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum DestinationKind {
    #[default]
    Email,
    Phone,
}

fn default_method() -> String {
    "POST".into()
}
fn default_content_type() -> String {
    "application/json".into()
}
fn default_api_key_header() -> String {
    "X-Api-Key".into()
}
fn default_digits() -> u32 {
    6
}
fn default_ttl() -> String {
    "10m".into()
}
fn default_max_tries() -> u32 {
    5
}
fn default_max_sends() -> u32 {
    5
}

impl Config {
    fn read(ctx: &CallContext) -> Result<Config, PluginError> {
        let c: Config = ctx.config_with(|s| serde_json::from_str(s))?;
        // The schema already holds these; a config that slipped past it
        // must not weaken the gate.
        if !(6..=8).contains(&c.digits) || !(1..=5).contains(&c.max_tries) {
            return Err(PluginError::BadConfig(
                "`digits` must be 6 to 8 and `max_tries` 1 to 5".into(),
            ));
        }
        c.minutes()?;
        Ok(c)
    }

    fn minutes(&self) -> Result<u64, PluginError> {
        self.ttl
            .strip_suffix('m')
            .and_then(|m| m.parse::<u64>().ok())
            .filter(|m| (1..=10).contains(m))
            .ok_or_else(|| PluginError::BadConfig("`ttl` must be `1m` to `10m`".into()))
    }

    fn ttl_ms(&self) -> Result<u64, PluginError> {
        Ok(self.minutes()? * 60_000)
    }
}

/// The name of the code's field in the prompt and the answers.
const FIELD: &str = "code";
/// One hour, the window of `max_sends_per_hour`.
const HOUR_MS: u64 = 3_600_000;
/// The `kv` key of the key decoys' phone digits are derived with.
const DECOY_KEY: &str = "decoy-key";
/// The masking character.
const DOT: char = '•';

/// What `kv` keeps per user (under `user/<sha256>`).
#[derive(Serialize, Deserialize, Default)]
struct UserRecord {
    /// When codes were sent (ms), within the last hour.
    sends: Vec<u64>,
    /// The current code, if one is outstanding.
    code: Option<CodeRecord>,
}

/// The current code's secret side: never in the round state.
#[derive(Serialize, Deserialize)]
struct CodeRecord {
    /// 16 hex digits (fixed width: a decoy's record is the same size).
    serial: String,
    /// The HMAC key of this code (hex).
    key: String,
    issued_ms: u64,
    tries: u32,
}

/// The round state: no code, only its HMAC under the key in `kv`.
#[derive(Serialize, Deserialize)]
struct State {
    v: u32,
    serial: String,
    issued_ms: u64,
    /// HMAC-SHA256(key, flow id, serial, code), hex.
    mac: String,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// The `kv` key of a user's record: a sha256 of the directory's id, or of
/// the typed name (trimmed, lowercased) for a decoy.
fn user_key(user: &User) -> String {
    let mut h = Sha256::new();
    if user.id.is_empty() {
        h.update(b"name\0");
        h.update(user.name.trim().to_lowercase().as_bytes());
    } else {
        h.update(b"id\0");
        h.update(user.id.as_bytes());
    }
    format!("user/{}", hex(&h.finalize()))
}

fn load_record(key: &str) -> Result<UserRecord, PluginError> {
    match kv::get(key) {
        None => Ok(UserRecord::default()),
        Some(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| PluginError::Internal(format!("unreadable user record: {e}"))),
    }
}

fn store_record(key: &str, record: &UserRecord) -> Result<(), PluginError> {
    let bytes = serde_json::to_vec(record)
        .map_err(|e| PluginError::Internal(format!("cannot encode the user record: {e}")))?;
    kv::set(key, &bytes);
    Ok(())
}

fn mac(key: &[u8], flow_id: &str, serial: &str, code: &str) -> Result<Hmac<Sha256>, PluginError> {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key)
        .map_err(|_| PluginError::Internal("bad code key".into()))?;
    m.update(&(flow_id.len() as u64).to_be_bytes());
    m.update(flow_id.as_bytes());
    m.update(&(serial.len() as u64).to_be_bytes());
    m.update(serial.as_bytes());
    m.update(code.as_bytes());
    Ok(m)
}

/// The key decoys' masked phone digits come from, made on first use.
fn decoy_key() -> Vec<u8> {
    match kv::get(DECOY_KEY) {
        Some(k) if k.len() == 32 => k,
        _ => {
            let k = random::bytes(32);
            kv::set(DECOY_KEY, &k);
            k
        }
    }
}

/// How the prompt shows a destination.
fn mask(kind: DestinationKind, destination: &str) -> String {
    let dots = |n: usize| DOT.to_string().repeat(n);
    match kind {
        DestinationKind::Email => match destination.trim().rsplit_once('@') {
            Some((local, domain)) => {
                let first = local.chars().next().map(String::from).unwrap_or_default();
                format!("{first}{}@{domain}", dots(3))
            }
            None => dots(3),
        },
        DestinationKind::Phone => {
            let digits: Vec<char> = destination.chars().filter(char::is_ascii_digit).collect();
            let last: String = digits[digits.len().saturating_sub(2)..].iter().collect();
            format!("{} {}{last}", dots(4), dots(4 - last.len()))
        }
    }
}

/// A decoy's masked destination: the same for the same name every time.
fn decoy_mask(c: &Config, user: &User, key: &[u8]) -> Result<String, PluginError> {
    Ok(match c.destination_kind {
        DestinationKind::Email => {
            let first = user
                .name
                .trim()
                .chars()
                .next()
                .map(|ch| ch.to_lowercase().to_string())
                .unwrap_or_default();
            let domain = c.decoy_domain.as_deref().unwrap_or("example.com");
            format!("{first}{}@{domain}", DOT.to_string().repeat(3))
        }
        DestinationKind::Phone => {
            let m = mac(key, "decoy", "", &user.name.trim().to_lowercase())?;
            let bytes = m.finalize().into_bytes();
            let n = u16::from_be_bytes([bytes[0], bytes[1]]) % 100;
            mask(DestinationKind::Phone, &format!("{n:02}"))
        }
    })
}

/// `value` as it goes into a body of `content_type`.
fn escape(content_type: &str, value: &str) -> String {
    let media = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if media == "application/json" || media.ends_with("+json") {
        let quoted = serde_json::Value::String(value.to_owned()).to_string();
        quoted[1..quoted.len() - 1].to_owned()
    } else if media == "application/x-www-form-urlencoded" {
        let mut out = String::new();
        for b in value.bytes() {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
                out.push(char::from(b));
            } else {
                out.push_str(&format!("%{b:02X}"));
            }
        }
        out
    } else {
        value.to_owned()
    }
}

/// The body template with its placeholders replaced (each value escaped
/// for the content type), in one pass: a value is never scanned again.
fn render(c: &Config, values: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(c.body.len() + 64);
    let mut rest = c.body.as_str();
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let found = values.iter().find_map(|(name, value)| {
            after
                .strip_prefix(name)
                .and_then(|a| a.strip_prefix("}}"))
                .map(|a| (a, *value))
        });
        match found {
            Some((tail, value)) => {
                out.push_str(&escape(&c.content_type, value));
                rest = tail;
            }
            None => {
                out.push_str("{{");
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Sends `code` to `destination` through the configured endpoint.
fn deliver(c: &Config, destination: &str, code: &str, language: &str) -> Result<(), PluginError> {
    let minutes = c.minutes()?.to_string();
    let body = render(
        c,
        &[
            ("destination", destination),
            ("code", code),
            ("minutes", &minutes),
            ("language", language),
        ],
    );
    let mut headers = vec![(
        "Content-Type".to_owned(),
        HeaderValue::Plain(c.content_type.clone()),
    )];
    for (name, value) in &c.headers {
        headers.push((
            name.clone(),
            match value {
                ConfigHeader::Plain(v) => HeaderValue::Plain(v.clone()),
                ConfigHeader::Secret(s) => HeaderValue::SecretRef(s.secret.clone()),
            },
        ));
    }
    if let Some(secret) = &c.api_key_secret {
        headers.push((
            c.api_key_header.clone(),
            HeaderValue::SecretRef(secret.clone()),
        ));
    }
    let request = Request {
        method: c.method.clone(),
        url: c.url.clone(),
        headers,
        body: body.into_bytes(),
        timeout_ms: 0,
    };
    // Neither the body (the code) nor the relay's answer (which may echo
    // it) is ever logged or put in an error: only the status.
    match http::send(&request) {
        Ok(r) if (200..300).contains(&r.status) => Ok(()),
        Ok(r) => Err(PluginError::Unavailable(format!(
            "the code relay answered HTTP {}",
            r.status
        ))),
        Err(e) => Err(PluginError::Unavailable(format!(
            "the code relay could not be reached: {}",
            describe_error(&e)
        ))),
    }
}

fn describe_error(e: &http::HttpError) -> String {
    match e {
        http::HttpError::OriginNotGranted(m) => format!("origin not granted: {m}"),
        http::HttpError::Timeout => "timeout".into(),
        http::HttpError::Connect(m) => format!("connect: {m}"),
        http::HttpError::Protocol(m) => format!("protocol: {m}"),
    }
}

/// A new code for `user`: recorded in `kv` (replacing and so voiding the
/// previous one), sent when the user has a destination, and the round
/// asking for it. `Ok(None)`: the user reached the send limit.
fn issue(c: &Config, ctx: &CallContext, user: &User) -> Result<Option<Round>, PluginError> {
    let now = ctx.now_ms;
    let key = user_key(user);
    let decoy_key = decoy_key();
    let mut record = load_record(&key)?;
    record.sends.retain(|&t| t <= now && now - t < HOUR_MS);
    if record.sends.len() >= c.max_sends_per_hour as usize {
        return Ok(None);
    }
    let bound = 10u64.pow(c.digits);
    let code = format!(
        "{:0width$}",
        random::below(bound),
        width = c.digits as usize
    );
    let code_key = random::bytes(32);
    let serial = hex(&random::bytes(8));
    let m = mac(&code_key, &ctx.flow_id, &serial, &code)?;
    record.sends.push(now);
    record.code = Some(CodeRecord {
        serial: serial.clone(),
        key: hex(&code_key),
        issued_ms: now,
        tries: 0,
    });
    store_record(&key, &record)?;

    let destination = (!user.id.is_empty())
        .then(|| user.attribute(&c.destination_attribute))
        .flatten()
        .map(str::trim)
        .filter(|d| !d.is_empty());
    let shown = match destination {
        Some(d) => {
            deliver(c, d, &code, &ctx.language())?;
            mask(c.destination_kind, d)
        }
        None => {
            if !user.id.is_empty() {
                log::warn(&format!(
                    "the user has no `{}` attribute: no code was sent",
                    c.destination_attribute
                ));
            }
            decoy_mask(c, user, &decoy_key)?
        }
    };
    let state = State {
        v: 1,
        serial,
        issued_ms: now,
        mac: hex(&m.finalize().into_bytes()),
    };
    Ok(Some(Round {
        prompt: prompt(c, &shown, &ctx.language())?,
        state: serde_json::to_vec(&state)
            .map_err(|e| PluginError::Internal(format!("cannot encode the state: {e}")))?,
    }))
}

/// The prompt in `language` (`de`, else English).
fn prompt(c: &Config, shown: &str, language: &str) -> Result<Prompt, PluginError> {
    let minutes = c.minutes()?;
    let de = language == "de";
    let help = if de {
        format!(
            "Wir haben einen {}-stelligen Code an {shown} gesendet. Er gilt {minutes} Minute{}, für {} Versuch{}, \
             und nur einmal. Kein Code, oder zu oft ein falscher? Lassen Sie das Feld leer und senden Sie \
             es ab, um einen neuen Code zu erhalten; der vorige gilt dann nicht mehr.",
            c.digits,
            if minutes == 1 { "" } else { "n" },
            c.max_tries,
            if c.max_tries == 1 { "" } else { "e" },
        )
    } else {
        format!(
            "We sent a {}-digit code to {shown}. It is valid for {minutes} minute{}, for {} tr{}, \
             and only once. No code, or a wrong one too often? Leave the field empty and submit \
             to get a new code; the previous one then stops working.",
            c.digits,
            if minutes == 1 { "" } else { "s" },
            c.max_tries,
            if c.max_tries == 1 { "y" } else { "ies" },
        )
    };
    let default_title = if de {
        "Geben Sie den Code ein, den wir Ihnen gesendet haben"
    } else {
        "Enter the code we sent you"
    };
    Ok(Prompt {
        title: c.title.clone().unwrap_or_else(|| default_title.into()),
        help: Some(help),
        display: vec![],
        fields: vec![Field {
            name: FIELD.to_owned(),
            label: "Code".to_owned(),
            kind: FieldKind::Code,
            // Room for spaces or dashes people type between digits.
            max_length: 16,
        }],
    })
}

impl Plugin for OneTimeCode {
    fn describe() -> PluginInfo {
        PluginInfo::new(
            "one-time-code",
            env!("CARGO_PKG_VERSION"),
            PluginKind::Gate,
            "a one-time code sent by SMS or mail through an HTTP relay",
        )
        .with_config_schema(SCHEMA)
    }
}

impl Gate for OneTimeCode {
    fn begin(
        ctx: CallContext,
        user: User,
        _enrollment: Option<Vec<u8>>,
    ) -> Result<Round, PluginError> {
        let c = Config::read(&ctx)?;
        issue(&c, &ctx, &user)?.ok_or_else(|| {
            PluginError::Refused(format!(
                "the user was sent {} codes in the last hour (`max_sends_per_hour`)",
                c.max_sends_per_hour
            ))
        })
    }

    fn answer(
        ctx: CallContext,
        user: User,
        _enrollment: Option<Vec<u8>>,
        state: Vec<u8>,
        answers: Vec<FieldValue>,
    ) -> Result<Verdict, PluginError> {
        let c = Config::read(&ctx)?;
        let state: State = serde_json::from_slice(&state)
            .map_err(|e| PluginError::Internal(format!("unknown round state: {e}")))?;
        let given: String = FieldValue::find(&answers, FIELD)
            .unwrap_or_default()
            .chars()
            .filter(|ch| !ch.is_whitespace() && *ch != '-')
            .collect();
        if given.is_empty() {
            // A new code, voiding this one.
            return Ok(match issue(&c, &ctx, &user)? {
                Some(round) => Verdict::AnotherRound(round),
                None => Verdict::Failed(format!(
                    "a new code was asked for, but the user was sent {} codes in the last hour",
                    c.max_sends_per_hour
                )),
            });
        }
        let now = ctx.now_ms;
        let key = user_key(&user);
        let mut record = load_record(&key)?;
        let verdict = match record.code.as_mut() {
            Some(code) if code.serial == state.serial && code.issued_ms == state.issued_ms => {
                if now.saturating_sub(code.issued_ms) >= c.ttl_ms()? || now < code.issued_ms {
                    Verdict::Failed("the code expired".into())
                } else if code.tries >= c.max_tries {
                    Verdict::Failed("too many tries for this code".into())
                } else {
                    code.tries += 1;
                    let code_key = unhex(&code.key)
                        .ok_or_else(|| PluginError::Internal("unreadable code key".into()))?;
                    let expected = unhex(&state.mac).unwrap_or_default();
                    let m = mac(&code_key, &ctx.flow_id, &state.serial, &given)?;
                    if m.verify_slice(&expected).is_ok() {
                        Verdict::Passed
                    } else {
                        Verdict::Failed("wrong code".into())
                    }
                }
            }
            _ => Verdict::Failed(
                "the code is no longer valid (used, or replaced by a newer one)".into(),
            ),
        };
        if matches!(verdict, Verdict::Passed) {
            // Single use: the key goes, and with it every copy of the state.
            record.code = None;
        }
        store_record(&key, &record)?;
        Ok(verdict)
    }
}

resetgate_plugin_sdk::export_gate!(OneTimeCode);
