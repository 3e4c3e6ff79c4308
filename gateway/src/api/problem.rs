//! RFC 9457 problem details: every error the API returns, each with a
//! stable machine-readable code. Only fixed texts reach the client; the
//! cause (plugin text, store error) goes to the gateway's log.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::engine::Refusal;
use crate::runtime::RuntimeError;

/// The kinds of error, one stable code each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Code {
    /// The body is not JSON.
    BadJson,
    /// JSON of the wrong shape.
    InvalidRequest,
    /// `X-Api-Key` matches no configured key.
    InvalidApiKey,
    /// No key and anonymous access is off.
    AnonymousNotAllowed,
    /// No such route.
    NotFound,
    /// Unknown flow or wrong token.
    FlowNotFound,
    /// No workflow of that name.
    WorkflowNotFound,
    /// The route does not take this method.
    MethodNotAllowed,
    /// The client was too slow sending the request.
    RequestTimeout,
    /// The answers name a step the flow is not at.
    StaleStep,
    /// The call does not fit the flow's state.
    WrongState,
    /// The flow has ended.
    FlowEnded,
    /// The flow ended in a crash mid-commit: the outcome is unknown.
    OutcomeUnknown,
    /// The flow's workflow version is gone.
    WorkflowChanged,
    /// Body over the limit.
    BodyTooLarge,
    /// Body is not `application/json`.
    UnsupportedMediaType,
    /// Too many requests.
    RateLimited,
    /// A bug or a store failure.
    Internal,
    /// Starting or stopping.
    Unavailable,
    /// The store (a database) cannot be reached right now.
    StoreUnavailable,
    /// The client is identified but its role does not allow the route.
    Forbidden,
    /// No `local-users` user of that name.
    LocalUserNotFound,
    /// A `local-users` user of that name exists already.
    LocalUserExists,
}

impl Code {
    /// Every code, for the docs test.
    pub const ALL: [Code; 23] = [
        Code::BadJson,
        Code::InvalidRequest,
        Code::InvalidApiKey,
        Code::AnonymousNotAllowed,
        Code::NotFound,
        Code::FlowNotFound,
        Code::WorkflowNotFound,
        Code::MethodNotAllowed,
        Code::RequestTimeout,
        Code::StaleStep,
        Code::WrongState,
        Code::FlowEnded,
        Code::OutcomeUnknown,
        Code::WorkflowChanged,
        Code::BodyTooLarge,
        Code::UnsupportedMediaType,
        Code::RateLimited,
        Code::Internal,
        Code::Unavailable,
        Code::StoreUnavailable,
        Code::Forbidden,
        Code::LocalUserNotFound,
        Code::LocalUserExists,
    ];

    /// The stable code, e.g. `bad-json`.
    pub fn as_str(self) -> &'static str {
        self.describe().0
    }

    /// The HTTP status.
    pub fn status(self) -> StatusCode {
        self.describe().1
    }

    fn describe(self) -> (&'static str, StatusCode, &'static str) {
        use StatusCode as S;
        match self {
            Code::BadJson => ("bad-json", S::BAD_REQUEST, "The body is not valid JSON."),
            Code::InvalidRequest => (
                "invalid-request",
                S::BAD_REQUEST,
                "The request does not have the expected fields.",
            ),
            Code::InvalidApiKey => (
                "invalid-api-key",
                S::UNAUTHORIZED,
                "The API key is not valid.",
            ),
            Code::AnonymousNotAllowed => (
                "anonymous-not-allowed",
                S::UNAUTHORIZED,
                "This gateway requires an API key.",
            ),
            Code::NotFound => (
                "not-found",
                S::NOT_FOUND,
                "There is nothing at this address.",
            ),
            Code::FlowNotFound => (
                "flow-not-found",
                S::NOT_FOUND,
                "No such flow, or the token does not match it.",
            ),
            Code::WorkflowNotFound => (
                "workflow-not-found",
                S::NOT_FOUND,
                "No workflow of that name is served.",
            ),
            Code::MethodNotAllowed => (
                "method-not-allowed",
                S::METHOD_NOT_ALLOWED,
                "This address does not accept this method.",
            ),
            Code::RequestTimeout => (
                "request-timeout",
                S::REQUEST_TIMEOUT,
                "The request took too long to arrive.",
            ),
            Code::StaleStep => (
                "stale-step",
                S::CONFLICT,
                "The flow is no longer at that step; read the flow and answer its current prompt.",
            ),
            Code::WrongState => (
                "wrong-state",
                S::CONFLICT,
                "The flow is not waiting for this; read the flow to see what it expects.",
            ),
            Code::FlowEnded => (
                "flow-ended",
                S::CONFLICT,
                "The flow has ended; start a new one.",
            ),
            Code::OutcomeUnknown => (
                "outcome-unknown",
                S::CONFLICT,
                "The gateway stopped while this flow's new password was being set, so whether it was changed is not known. Try signing in with the new password; if it does not work, start a new reset.",
            ),
            Code::WorkflowChanged => (
                "workflow-changed",
                S::CONFLICT,
                "The workflow of this flow has changed; start a new one.",
            ),
            Code::BodyTooLarge => (
                "body-too-large",
                S::PAYLOAD_TOO_LARGE,
                "The request body is too large.",
            ),
            Code::UnsupportedMediaType => (
                "unsupported-media-type",
                S::UNSUPPORTED_MEDIA_TYPE,
                "Send the body as application/json.",
            ),
            Code::RateLimited => (
                "rate-limited",
                S::TOO_MANY_REQUESTS,
                "Too many requests; retry after the time in Retry-After.",
            ),
            Code::Internal => (
                "internal",
                S::INTERNAL_SERVER_ERROR,
                "Something went wrong on our side; nothing was changed. Try again.",
            ),
            Code::Unavailable => (
                "unavailable",
                S::SERVICE_UNAVAILABLE,
                "The gateway is not ready; try again shortly.",
            ),
            Code::StoreUnavailable => (
                "store-unavailable",
                S::SERVICE_UNAVAILABLE,
                "The gateway cannot reach its database right now; try again shortly.",
            ),
            Code::Forbidden => (
                "forbidden",
                S::FORBIDDEN,
                "This client may not use this route: operator routes need an operator's key or certificate with a role that allows them.",
            ),
            Code::LocalUserNotFound => (
                "local-user-not-found",
                S::NOT_FOUND,
                "The local-users directory has no user of that name.",
            ),
            Code::LocalUserExists => (
                "local-user-exists",
                S::CONFLICT,
                "A local user of that name exists; set `replace` to replace it.",
            ),
        }
    }
}

/// An RFC 9457 problem document.
#[derive(Debug, Serialize, ToSchema)]
pub struct Problem {
    /// `urn:resetgate:problem:<code>`.
    #[serde(rename = "type")]
    pub kind: String,
    /// A fixed sentence for the code.
    pub title: &'static str,
    /// The HTTP status.
    pub status: u16,
    /// The stable code.
    pub code: &'static str,
    /// More about this occurrence (never internal detail).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Seconds to wait, with `rate-limited`.
    #[serde(skip)]
    pub retry_after: Option<u64>,
}

impl Problem {
    /// The problem for `code`.
    pub fn new(code: Code) -> Problem {
        let (name, status, title) = code.describe();
        Problem {
            kind: format!("urn:resetgate:problem:{name}"),
            title,
            status: status.as_u16(),
            code: name,
            detail: None,
            retry_after: None,
        }
    }

    /// With a detail line (must never carry a secret or internal detail).
    pub fn detail(mut self, detail: impl Into<String>) -> Problem {
        self.detail = Some(detail.into());
        self
    }

    /// A `429` asking to retry after `secs`.
    pub fn rate_limited(secs: u64) -> Problem {
        let mut p = Problem::new(Code::RateLimited);
        p.retry_after = Some(secs.max(1));
        p
    }
}

impl From<Code> for Problem {
    fn from(code: Code) -> Problem {
        Problem::new(code)
    }
}

impl From<RuntimeError> for Problem {
    fn from(e: RuntimeError) -> Problem {
        match e {
            RuntimeError::UnknownWorkflow(_) => Code::WorkflowNotFound.into(),
            RuntimeError::UnknownFlow => Code::FlowNotFound.into(),
            RuntimeError::WorkflowChanged => Code::WorkflowChanged.into(),
            RuntimeError::Stale => Code::StaleStep.into(),
            RuntimeError::BadAnswers(detail) => Problem::new(Code::InvalidRequest).detail(detail),
            RuntimeError::Refused(Refusal::OutOfOrder) => Code::WrongState.into(),
            RuntimeError::Refused(Refusal::Finished) => Code::FlowEnded.into(),
            RuntimeError::Refused(Refusal::Interrupted) => Code::OutcomeUnknown.into(),
            RuntimeError::Store(
                e @ (crate::store::StoreError::Unavailable { .. }
                | crate::store::StoreError::Closed),
            ) => {
                sampled_store_warning(&e);
                let mut p = Problem::new(Code::StoreUnavailable);
                p.retry_after = Some(STORE_RETRY_AFTER_SECS);
                p
            }
            e @ (RuntimeError::Store(_)
            | RuntimeError::Corrupt { .. }
            | RuntimeError::Sealed { .. }) => {
                tracing::error!(error = %e, "request failed");
                Code::Internal.into()
            }
        }
    }
}

/// What `store-unavailable` asks a client to wait, in seconds.
const STORE_RETRY_AFTER_SECS: u64 = 2;

/// Logs a store outage at most once a second (a flood of requests while a
/// database restarts must not flood the log), with how many were not
/// logged.
fn sampled_store_warning(e: &crate::store::StoreError) {
    use std::sync::atomic::{AtomicU64, Ordering};
    static LAST_SEC: AtomicU64 = AtomicU64::new(0);
    static SUPPRESSED: AtomicU64 = AtomicU64::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let last = LAST_SEC.load(Ordering::Relaxed);
    if now > last
        && LAST_SEC
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    {
        let suppressed = SUPPRESSED.swap(0, Ordering::Relaxed);
        tracing::warn!(error = %e, suppressed, "a request failed: the store is unavailable");
    } else {
        SUPPRESSED.fetch_add(1, Ordering::Relaxed);
    }
}

/// The code of the problem a response carries, in its extensions.
#[derive(Clone, Copy, Debug)]
pub struct ProblemCode(pub &'static str);

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::to_vec(&self).unwrap_or_default();
        let mut response = (status, body).into_response();
        // For the log line of a refused request (see `api::headers`).
        response.extensions_mut().insert(ProblemCode(self.code));
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Some(secs) = self.retry_after
            && let Ok(v) = HeaderValue::from_str(&secs.to_string())
        {
            headers.insert(header::RETRY_AFTER, v);
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::Code;

    /// Portal writers read the codes in `docs/http-api.md`: every code is
    /// in its table with its status, and the table has no other.
    #[test]
    fn the_guide_lists_every_code_with_its_status() {
        let guide = include_str!("../../../docs/http-api.md");
        let rows: Vec<(String, String)> = guide
            .lines()
            .filter_map(|l| {
                let cells: Vec<&str> = l.split('|').map(str::trim).collect();
                let code = cells.get(2)?.strip_prefix('`')?.strip_suffix('`')?;
                Some((cells.get(1)?.to_string(), code.to_owned()))
            })
            .collect();
        for code in Code::ALL {
            let row = (code.status().as_str().to_owned(), code.as_str().to_owned());
            assert!(rows.contains(&row), "docs/http-api.md lacks {row:?}");
        }
        assert_eq!(rows.len(), Code::ALL.len(), "{rows:?}");
    }

    /// Every code written in `Code::describe`, read from this file's
    /// source: a variant added there but not to `Code::ALL` is still found.
    fn codes_in_source() -> std::collections::BTreeSet<String> {
        let source = include_str!("problem.rs");
        let start = source.find("fn describe(self)").expect("describe");
        let end = start + source[start..].find("\n    }\n}").expect("end of describe");
        let body = &source[start..end];
        body.split("=> (")
            .skip(1)
            .map(|arm| {
                let quoted = arm.split('"').nth(1).expect("a code");
                quoted.to_owned()
            })
            .collect()
    }

    #[test]
    fn code_all_holds_every_code_of_describe() {
        let in_source = codes_in_source();
        let all: std::collections::BTreeSet<String> =
            Code::ALL.iter().map(|c| c.as_str().to_owned()).collect();
        assert_eq!(in_source, all);
    }

    /// Operators read `docs/operations.md`'s troubleshooting table: every
    /// code has a row with its status, what it means and what to do, and
    /// the table has no other.
    #[test]
    fn the_troubleshooting_table_has_a_row_for_every_code() {
        let guide = include_str!("../../../docs/operations.md");
        let section = guide
            .split("\n## Troubleshooting\n")
            .nth(1)
            .expect("docs/operations.md has a Troubleshooting section");
        let section = section.split("\n## ").next().unwrap_or(section);
        let mut rows = std::collections::BTreeMap::new();
        for line in section.lines().filter(|l| l.starts_with("| `")) {
            let cells: Vec<&str> = line.split(" | ").map(str::trim).collect();
            assert_eq!(cells.len(), 4, "{line}");
            let code = cells[0].trim_start_matches("| ").trim_matches('`');
            assert!(
                cells[2].len() > 10 && cells[3].trim_end_matches(" |").len() > 10,
                "{line}"
            );
            assert!(
                rows.insert(code.to_owned(), cells[1].to_owned()).is_none(),
                "{line}"
            );
        }
        for code in codes_in_source() {
            let status = rows.remove(&code);
            let c = Code::ALL
                .iter()
                .find(|c| c.as_str() == code)
                .expect("in ALL");
            assert_eq!(
                status.as_deref(),
                Some(c.status().as_str()),
                "docs/operations.md's troubleshooting table lacks `{code}` (or has the wrong status)"
            );
        }
        assert!(
            rows.is_empty(),
            "rows for codes that do not exist: {rows:?}"
        );
    }
}
