//! A sync target that sends the HTTP request its config describes, to test
//! the host's side of the `http` capability. Config:
//! `{method, url, headers: [[NAME, VALUE]], secret_headers: [[NAME, SECRET]],
//! body, timeout_ms, with_password}`; with `with_password` the request goes
//! through `send-with-secret` with the pushed password. `push` always
//! fails `permanent` with what happened, as JSON: `{"status", "headers",
//! "body", "body_len"}` or `{"error"}`.

use resetgate_plugin_sdk::http::{self, HeaderValue, HttpError, Request};
use resetgate_plugin_sdk::prelude::*;
use resetgate_plugin_sdk::sync_target::{Change, PushError};
use resetgate_plugin_sdk::{Secret, log};
use serde::Deserialize;

struct HttpProbe;

#[derive(Deserialize)]
struct Config {
    #[serde(default = "get")]
    method: String,
    url: String,
    #[serde(default)]
    headers: Vec<(String, String)>,
    #[serde(default)]
    secret_headers: Vec<(String, String)>,
    #[serde(default)]
    body: String,
    #[serde(default)]
    timeout_ms: u32,
    #[serde(default)]
    with_password: bool,
}

fn get() -> String {
    "GET".into()
}

impl Plugin for HttpProbe {
    fn describe() -> PluginInfo {
        PluginInfo::new(
            "http-probe",
            "0.1.0",
            PluginKind::SyncTarget,
            "sends what it is told",
        )
    }
}

impl SyncTarget for HttpProbe {
    fn push(ctx: CallContext, _change: Change, password: &Secret) -> Result<(), PushError> {
        let c: Config =
            serde_json::from_str(&ctx.config).map_err(|e| PushError::Permanent(e.to_string()))?;
        let mut headers: Vec<(String, HeaderValue)> = c
            .headers
            .into_iter()
            .map(|(k, v)| (k, HeaderValue::Plain(v)))
            .collect();
        headers.extend(
            c.secret_headers
                .into_iter()
                .map(|(k, s)| (k, HeaderValue::SecretRef(s))),
        );
        let request = Request {
            method: c.method,
            url: c.url,
            headers,
            body: c.body.into_bytes(),
            timeout_ms: c.timeout_ms,
        };
        let result = if c.with_password {
            http::send_with_secret(&request, password)
        } else {
            http::send(&request)
        };
        let out = match result {
            Ok(r) => serde_json::json!({
                "status": r.status,
                "headers": r.headers,
                "body": String::from_utf8_lossy(&r.body),
                "body_len": r.body.len(),
            }),
            Err(e) => {
                let text = match e {
                    HttpError::OriginNotGranted(m) => format!("origin-not-granted: {m}"),
                    HttpError::Timeout => "timeout".into(),
                    HttpError::Connect(m) => format!("connect: {m}"),
                    HttpError::Protocol(m) => format!("protocol: {m}"),
                };
                // Plugins log their errors; the test checks no secret gets there.
                log::warn(&format!("request failed: {text}"));
                serde_json::json!({ "error": text })
            }
        };
        Err(PushError::Permanent(out.to_string()))
    }
}

resetgate_plugin_sdk::export_sync_target!(HttpProbe);
