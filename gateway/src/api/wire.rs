//! The API's request and response bodies, and how a flow becomes a
//! [`FlowView`]. The OpenAPI document is derived from these types.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};
use utoipa::ToSchema;

use crate::contract::{Display, FieldKind, Prompt};
use crate::engine::{self, Flow, Notice, State};
use crate::i18n;
use crate::policy::Violation;
use crate::secret::Secret;
use crate::workflow::Workflow;

/// Longest user name accepted, in characters.
pub const MAX_USER_NAME: usize = 256;

/// `POST /v1/flows`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartRequest {
    /// The workflow's name (see `GET /v1/workflows`): 1 to 64 lowercase
    /// letters, digits, `-` and `_`, starting with a letter or digit.
    #[schema(
        example = "self-service-reset",
        min_length = 1,
        max_length = 64,
        pattern = "^[a-z0-9][a-z0-9_-]{0,63}$"
    )]
    pub workflow: String,
    /// The user name as the person typed it: 1 to 256 characters (Unicode
    /// code points), no control characters.
    #[schema(
        example = "alice",
        min_length = 1,
        max_length = 256,
        pattern = r"^[^\x00-\x1F\x7F-\x9F]*$"
    )]
    pub user: String,
}

impl StartRequest {
    /// Checks what the document says of the fields beyond their types; the
    /// text names the field and the rule, never the value.
    pub fn check(&self) -> Result<(), String> {
        let chars = self.user.chars().count();
        if chars == 0 || chars > MAX_USER_NAME || self.user.chars().any(char::is_control) {
            return Err(format!(
                "`user` must be 1 to {MAX_USER_NAME} characters with no control characters"
            ));
        }
        if !step_name(&self.workflow, |c| c.is_ascii_alphanumeric()) {
            return Err(
                "`workflow` must be a workflow name: 1 to 64 lowercase letters, \
                        digits, `-` and `_`, starting with a letter or digit"
                    .to_owned(),
            );
        }
        Ok(())
    }
}

/// Whether `s` is 1 to 64 of `[a-z0-9_-]`, its first character one that
/// `first` accepts (both lowercase ASCII).
fn step_name(s: &str, first: impl Fn(char) -> bool) -> bool {
    let mut chars = s.chars();
    let ok_first = chars
        .next()
        .is_some_and(|c| first(c) && !c.is_ascii_uppercase());
    ok_first
        && s.len() <= 64
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

/// `POST /v1/flows/{id}/answers`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AnswersRequest {
    /// The gate being answered: `prompt.gate` of the flow view (a step id:
    /// 1 to 64 lowercase letters, digits, `-` and `_`, starting with a
    /// letter).
    #[schema(
        example = "q1",
        min_length = 1,
        max_length = 64,
        pattern = "^[a-z][a-z0-9_-]{0,63}$"
    )]
    pub gate: String,
    /// The round being answered: `prompt.round` of the flow view. An
    /// integer; `3.0` is the same as `3`.
    #[schema(value_type = u32, format = "uint32", example = 1, minimum = 1, maximum = 4294967295_u64)]
    #[serde(deserialize_with = "whole_u32")]
    pub round: u32,
    /// One value per field of the prompt, by the field's `name`; each at
    /// most the field's `max_length` characters, a `choice` one of its
    /// `choices` (else `400 invalid-request` naming the field).
    #[schema(value_type = BTreeMap<String, String>, example = json!({"answer": "blue"}))]
    pub answers: BTreeMap<String, SecretString>,
}

impl AnswersRequest {
    /// Checks what the document says of the fields beyond their types.
    pub fn check(&self) -> Result<(), String> {
        if !step_name(&self.gate, |c| c.is_ascii_lowercase()) {
            return Err(
                "`gate` must be a gate id: 1 to 64 lowercase letters, digits, `-` \
                        and `_`, starting with a letter"
                    .to_owned(),
            );
        }
        Ok(())
    }
}

/// A JSON Schema integer into a `u32`: JSON Schema counts `3.0` as the
/// integer 3, so an integer-valued number is taken as that integer.
fn whole_u32<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    struct Whole;
    impl serde::de::Visitor<'_> for Whole {
        type Value = u32;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("an integer from 0 to 4294967295")
        }
        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<u32, E> {
            u32::try_from(v).map_err(|_| E::custom("integer out of range"))
        }
        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<u32, E> {
            u32::try_from(v).map_err(|_| E::custom("integer out of range"))
        }
        fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<u32, E> {
            if v.is_finite() && v.fract() == 0.0 && (0.0..=f64::from(u32::MAX)).contains(&v) {
                Ok(v as u32)
            } else {
                Err(E::custom("not an integer in range"))
            }
        }
    }
    d.deserialize_any(Whole)
}

/// `POST /v1/flows/{id}/password` and `/authenticate`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswordRequest {
    /// The new password (reset) or the current one (enrollment). Any
    /// string: a new password is checked against the workflow's password
    /// policy (`password_policy` of the flow view), and a refusal is a
    /// `200` with `notice.code` `password-rejected` and the `violations`.
    #[schema(value_type = String, example = "correct horse battery staple")]
    pub password: SecretString,
}

/// A string from a request body that is a secret: zeroised when dropped and
/// redacted in `Debug`.
pub struct SecretString(pub Secret);

impl std::fmt::Debug for SecretString {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl<'de> Deserialize<'de> for SecretString {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(|s| SecretString(Secret::new(s)))
    }
}

/// A flow as a portal sees it.
#[derive(Debug, Serialize, ToSchema)]
pub struct FlowView {
    /// The flow's id (128 random bits, hex).
    pub id: String,
    /// The flow's bearer token: only in the answer to `POST /v1/flows`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// The workflow's name.
    pub workflow: String,
    /// Where the flow is.
    pub state: StateName,
    /// What to ask, in `gate` and `enrolling`.
    pub prompt: Option<PromptView>,
    /// The password rules, in `awaiting-password`.
    pub password_policy: Option<PolicyView>,
    /// What the last call should tell the person.
    pub notice: Option<NoticeView>,
    /// Each rule the refused password broke (with `password-rejected`).
    pub violations: Vec<ViolationView>,
    /// What the reset did, once it began committing.
    pub receipt: Option<ReceiptView>,
    /// When the flow expires if nothing happens (RFC 3339, UTC).
    #[schema(example = "2026-11-23T10:15:00Z")]
    pub expires_at: String,
}

/// Where a flow is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum StateName {
    /// Answering a gate's prompt.
    Gate,
    /// Enrollment: registering a gate's data.
    Enrolling,
    /// Enrollment: proving the current password.
    Authenticating,
    /// Every gate passed: choose the new password.
    AwaitingPassword,
    /// The password is being set (seen only after a crash mid-commit).
    Committing,
    /// Done (final).
    Completed,
    /// Failed (final).
    Failed,
    /// The gateway stopped while the password was being set, so whether it
    /// changed is not known (final): the person should try the new password
    /// and start a new reset if it does not work. The receipt says
    /// `unknown` for every target that may or may not have it.
    Interrupted,
    /// Locked out (final).
    Locked,
    /// Past its time limit (final).
    Expired,
}

/// One round of a gate, as a portal renders it.
#[derive(Debug, Serialize, ToSchema)]
pub struct PromptView {
    /// The gate's id: send it back with the answers.
    pub gate: String,
    /// The round: send it back with the answers.
    pub round: u32,
    /// Heading.
    pub title: String,
    /// Help line.
    pub help: Option<String>,
    /// What to show between the help line and the fields, in order (at
    /// most 8): paragraphs, text to copy (a key), QR codes.
    pub display: Vec<DisplayView>,
    /// The inputs, in order.
    pub fields: Vec<FieldView>,
}

/// Something to show without asking for input. It may hold a secret the
/// person registers (a TOTP key): show it, never log or store it.
#[derive(Debug, Serialize, ToSchema)]
pub struct DisplayView {
    /// How to show it.
    #[serde(rename = "type")]
    pub kind: DisplayKind,
    /// The text: the paragraph, the text to copy, or what the QR code
    /// encodes (e.g. an `otpauth://` URI).
    pub text: String,
    /// For `qr-code`: the QR code's modules, drawn by the gateway so that a
    /// portal needs no library: one string per row, top to bottom, one
    /// character per module, left to right, `1` dark and `0` light; as many
    /// rows as columns (21 to 177). The quiet zone (4 light modules on
    /// every side) is not included: leave it around the code.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = json!(["1111111010...", "1000001001..."]))]
    pub modules: Option<Vec<String>>,
}

/// How to show a display item.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum DisplayKind {
    /// A paragraph of text.
    Text,
    /// Text to copy exactly (a key, an address): a fixed-width font,
    /// selectable.
    Code,
    /// A QR code to scan (e.g. with an authenticator app); `modules` has
    /// it drawn.
    QrCode,
}

/// A display item as the API shows it; a QR code with its modules.
fn display(d: &Display) -> DisplayView {
    match d {
        Display::Text(text) => DisplayView {
            kind: DisplayKind::Text,
            text: text.clone(),
            modules: None,
        },
        Display::Code(text) => DisplayView {
            kind: DisplayKind::Code,
            text: text.clone(),
            modules: None,
        },
        Display::QrCode(text) => DisplayView {
            kind: DisplayKind::QrCode,
            text: text.clone(),
            modules: Some(qr_modules(text)),
        },
    }
}

/// The modules of `text` as a QR code (error correction M, the smallest
/// version that holds it), one `0`/`1` string per row. The host checks
/// that a QR item is at most 1024 bytes, which every QR code version 40
/// holds; should one still not fit, the list is empty and the portal shows
/// the text alone.
pub fn qr_modules(text: &str) -> Vec<String> {
    let Ok(code) = qrcode::QrCode::new(text.as_bytes()) else {
        return Vec::new();
    };
    let width = code.width();
    code.to_colors()
        .chunks(width)
        .map(|row| {
            row.iter()
                .map(|c| match c {
                    qrcode::Color::Dark => '1',
                    qrcode::Color::Light => '0',
                })
                .collect()
        })
        .collect()
}

/// One input of a prompt.
#[derive(Debug, Serialize, ToSchema)]
pub struct FieldView {
    /// Key of the value in `answers`.
    pub name: String,
    /// What the person reads.
    pub label: String,
    /// How to render it.
    pub kind: FieldKindName,
    /// The values allowed, for `choice`.
    pub choices: Vec<String>,
    /// Longest accepted value, in characters.
    pub max_length: u32,
}

/// How to render a field.
#[derive(Clone, Copy, Debug, Serialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum FieldKindName {
    /// One line of text.
    Text,
    /// Hidden input.
    Secret,
    /// A short one-time code.
    Code,
    /// One of `choices`.
    Choice,
}

/// The workflow's password rules.
#[derive(Debug, Serialize, ToSchema)]
pub struct PolicyView {
    /// Fewest characters (Unicode code points).
    pub min_length: u32,
    /// Most characters.
    pub max_length: u32,
    /// Every rule, as a sentence for the person.
    pub rules: Vec<String>,
}

/// What the last call should tell the person.
#[derive(Debug, Serialize, ToSchema)]
pub struct NoticeView {
    /// Stable code: `not-verified`, `password-rejected`,
    /// `directory-refused`, `invalid-input`, `locked`, `expired`.
    pub code: String,
    /// A sentence for the person.
    pub message: String,
}

/// A rule the password broke.
#[derive(Debug, Serialize, ToSchema)]
pub struct ViolationView {
    /// Stable code: `too-short`, `too-long`, `blocklisted`,
    /// `contains-user-name`, `control-characters`, `only-invisible`.
    pub code: String,
    /// A sentence for the person.
    pub message: String,
}

/// What a reset did, target by target.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReceiptView {
    /// The directory: `ok`, `failed`, `pending`, or `unknown` (in
    /// `interrupted`: it may or may not have the new password).
    pub directory: &'static str,
    /// Each sync target, in the order they ran.
    pub sync: Vec<SyncView>,
    /// The VPN hook, if it ran (or, `unknown`, may have).
    pub vpn: Option<&'static str>,
}

/// One sync target's outcome.
#[derive(Debug, Serialize, ToSchema)]
pub struct SyncView {
    /// The target's id in the workflow.
    pub id: String,
    /// `ok`, `failed`, `pending` or `unknown`.
    pub status: &'static str,
}

/// A workflow as listed by `GET /v1/workflows`.
#[derive(Debug, Serialize, ToSchema)]
pub struct WorkflowView {
    /// Its name.
    pub name: String,
    /// What it is for, for admins.
    pub description: Option<String>,
    /// What end users read when a portal offers it (the workflow's
    /// `title:`), in the request's language (`?lang=`, `Accept-Language`;
    /// English when the title has no text in it); absent when the
    /// workflow has none (show the name).
    pub title: Option<String>,
    /// sha256 of its file.
    pub version: String,
    /// `reset` or `enrollment`.
    pub purpose: String,
}

/// `GET /v1/workflows`.
#[derive(Debug, Serialize, ToSchema)]
pub struct WorkflowList {
    /// Sorted by name.
    pub workflows: Vec<WorkflowView>,
}

fn outcome(o: engine::Outcome) -> &'static str {
    match o {
        engine::Outcome::Pending => "pending",
        engine::Outcome::Ok => "ok",
        engine::Outcome::Failed => "failed",
        engine::Outcome::Unknown => "unknown",
    }
}

fn prompt(gate: &str, round: u32, p: &Prompt) -> PromptView {
    PromptView {
        gate: gate.to_owned(),
        round,
        title: p.title.clone(),
        help: p.help.clone(),
        display: p.display.iter().map(display).collect(),
        fields: p
            .fields
            .iter()
            .map(|f| {
                let (kind, choices) = match &f.kind {
                    FieldKind::Text => (FieldKindName::Text, vec![]),
                    FieldKind::Secret => (FieldKindName::Secret, vec![]),
                    FieldKind::Code => (FieldKindName::Code, vec![]),
                    FieldKind::Choice(c) => (FieldKindName::Choice, c.clone()),
                };
                FieldView {
                    name: f.name.clone(),
                    label: f.label.clone(),
                    kind,
                    choices,
                    max_length: f.max_length,
                }
            })
            .collect(),
    }
}

/// The rules of `wf`'s password policy as sentences in `lang`.
pub fn policy(wf: &Workflow, lang: &str) -> PolicyView {
    let p = &wf.password;
    let mut rules = vec![i18n::format(
        lang,
        "rule.length",
        &[
            ("min", &p.min_length.to_string()),
            ("max", &p.max_length.to_string()),
        ],
    )];
    if !p.blocklist.is_empty() {
        rules.push(i18n::text(lang, "rule.blocklist").to_owned());
    }
    if p.reject_user_name {
        rules.push(i18n::text(lang, "rule.user-name").to_owned());
    }
    rules.push(i18n::text(lang, "rule.control").to_owned());
    PolicyView {
        min_length: p.min_length,
        max_length: p.max_length,
        rules,
    }
}

fn notice(n: &Notice, lang: &str) -> NoticeView {
    let code = match n {
        Notice::WrongAnswer => "not-verified",
        Notice::Policy(_) => "password-rejected",
        Notice::DirectoryRefused => "directory-refused",
        Notice::InvalidInput => "invalid-input",
        Notice::Locked => "locked",
        Notice::Expired => "expired",
    };
    NoticeView {
        code: code.to_owned(),
        message: i18n::text(lang, &format!("notice.{code}")).to_owned(),
    }
}

fn violation(v: &Violation, lang: &str) -> ViolationView {
    let (code, args) = match v {
        Violation::TooShort { min } => ("too-short", vec![("min", min.to_string())]),
        Violation::TooLong { max } => ("too-long", vec![("max", max.to_string())]),
        Violation::Blocklisted => ("blocklisted", vec![]),
        Violation::ContainsUserName => ("contains-user-name", vec![]),
        Violation::ControlCharacters => ("control-characters", vec![]),
        Violation::OnlyInvisible => ("only-invisible", vec![]),
    };
    let args: Vec<(&str, &str)> = args.iter().map(|(k, v)| (*k, v.as_str())).collect();
    ViolationView {
        code: code.to_owned(),
        message: i18n::format(lang, &format!("violation.{code}"), &args),
    }
}

/// Milliseconds since the Unix epoch as RFC 3339 UTC, to the second.
pub fn rfc3339(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil from days (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// The view of `flow` (running on `wf`), with `notice` from the last call;
/// its texts (notice, rules, violations) in the flow's language.
pub fn view(flow: &Flow, wf: &Workflow, notice_of: Option<&Notice>) -> FlowView {
    let lang = flow.language.as_str();
    let gate_id = |i: usize| wf.gates.get(i).map(|g| g.step.id.as_str()).unwrap_or("");
    let (state, prompt_view, receipt) = match &flow.state {
        State::Resolving => (StateName::Gate, None, None),
        State::Gate {
            index,
            round,
            prompt: p,
            ..
        } => (
            StateName::Gate,
            Some(prompt(gate_id(*index), *round, p)),
            None,
        ),
        State::Enrolling {
            index, prompt: p, ..
        } => (
            StateName::Enrolling,
            Some(prompt(gate_id(*index), 1, p)),
            None,
        ),
        State::Authenticating => (StateName::Authenticating, None, None),
        State::AwaitingPassword => (StateName::AwaitingPassword, None, None),
        State::Committing { receipt } => (StateName::Committing, None, Some(receipt)),
        State::Completed { receipt } => (StateName::Completed, None, Some(receipt)),
        State::Failed { receipt } => (StateName::Failed, None, receipt.as_ref()),
        State::Interrupted { receipt } => (StateName::Interrupted, None, Some(receipt)),
        State::Locked { .. } => (StateName::Locked, None, None),
        State::Expired => (StateName::Expired, None, None),
    };
    let violations = match notice_of {
        Some(Notice::Policy(v)) => v.iter().map(|v| violation(v, lang)).collect(),
        _ => vec![],
    };
    FlowView {
        id: flow.id.clone(),
        token: None,
        workflow: flow.workflow.clone(),
        state,
        prompt: prompt_view,
        password_policy: (state == StateName::AwaitingPassword).then(|| policy(wf, lang)),
        notice: notice_of.map(|n| notice(n, lang)),
        violations,
        receipt: receipt.map(|r| ReceiptView {
            directory: outcome(r.directory),
            sync: r
                .sync
                .iter()
                .map(|(id, o)| SyncView {
                    id: id.clone(),
                    status: outcome(*o),
                })
                .collect(),
            vpn: r.vpn.map(outcome),
        }),
        expires_at: rfc3339(flow.expires_at()),
    }
}

#[cfg(test)]
mod tests {
    use super::{Display, DisplayKind, display, rfc3339};

    #[test]
    fn a_qr_code_item_carries_its_modules() {
        let text = "otpauth://totp/resetgate:alice?secret=JBSWY3DPEHPK3PXP&issuer=resetgate";
        let view = display(&Display::QrCode(text.to_owned()));
        assert_eq!(view.kind, DisplayKind::QrCode);
        assert_eq!(view.text, text);
        let rows = view.modules.unwrap();
        // Square, 17 + 4 × version modules a side.
        let n = rows.len();
        assert!(n >= 21 && (n - 17).is_multiple_of(4), "{n}");
        assert!(
            rows.iter()
                .all(|r| r.len() == n && r.bytes().all(|b| b == b'0' || b == b'1'))
        );
        // The finder patterns' outer edges in three corners, light separators.
        assert!(rows[0].starts_with("11111110") && rows[0].ends_with("01111111"));
        assert!(rows[n - 1].starts_with("11111110"));
        assert!(display(&Display::Code("JBSWY3DP".into())).modules.is_none());
        // The most a QR item may carry (1024 bytes, `plugin::calls`) fits.
        let long = "x".repeat(1024);
        let rows = super::qr_modules(&long);
        assert!(rows.len() > 100 && rows.iter().all(|r| r.len() == rows.len()));
    }

    #[test]
    fn display_items_never_show_their_text_in_debug() {
        let d = Display::Code("canary-3f9a".into());
        assert_eq!(format!("{d:?}"), "Code([11 bytes])");
    }

    #[test]
    fn timestamps_are_rfc3339_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_795_430_096_999), "2026-11-23T10:34:56Z");
    }
}
