//! The `http` capability: outgoing HTTP(S) requests from plugins to the
//! origins the gateway config lists (`http_origins`) and the step grants.
//!
//! - One `ureq` agent per origin, built from the config at start and on
//!   `SIGHUP`: no proxy from the environment, no redirects followed (a 3xx
//!   to the request's origin is returned as it is; one to another origin is
//!   a `protocol` error), HTTPS verified against the operating system's
//!   roots (`rustls-native-certs`) or the origin's `ca_file`, plain `http://`
//!   only for an origin the config marks `plain_http: true`.
//! - Bounds: a request body of at most [`MAX_REQUEST_BODY`], a response body
//!   cut at [`MAX_RESPONSE_BODY`], at most [`MAX_RESPONSE_HEADERS`] response
//!   headers kept. A request waits at most the time its plugin call has left
//!   (`timeout-ms` can only shorten it), inside [`crate::workers::waiting`].
//! - At most `max_concurrent` requests per origin at once (default 4); a
//!   request waits for a slot within the same deadline, so one slow server
//!   takes at most that many request workers.
//! - Secrets: a `secret-ref` header value is the named secret (granted to
//!   the step, defined in the config); `send-with-secret` writes the
//!   password where the body says `{{password}}`. Neither ever appears in
//!   an error or a log line: errors name the secret, never its value.

use std::collections::HashMap;
use std::io::Read;
use std::path::PathBuf;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use ureq::http::{HeaderName, HeaderValue, Method, Uri};
use ureq::tls::{Certificate, RootCerts, TlsConfig};
use wasmtime::Result as WasmResult;
use wasmtime::component::Resource;
use zeroize::Zeroizing;

use super::bindings::base::resetgate::plugin as wit;
use super::capabilities::CapabilitiesError;
use super::grants::Capability;
use super::state::{HostState, SecretHandle};
use crate::config::{GatewayConfig, HttpOrigin, normalise_origin};

/// The largest request body a plugin may send (after `{{password}}` is
/// replaced).
pub const MAX_REQUEST_BODY: usize = 64 * 1024;
/// Response bodies are cut at this many bytes.
pub const MAX_RESPONSE_BODY: usize = 64 * 1024;
/// The most response headers handed to the plugin (the first ones).
pub const MAX_RESPONSE_HEADERS: usize = 32;
/// The largest CA file read for an origin.
const MAX_CA_FILE: u64 = 1024 * 1024;
/// The placeholder `send-with-secret` replaces.
const PASSWORD_PLACEHOLDER: &[u8] = b"{{password}}";

/// Why the capability could not be built from the config.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// An origin's `ca_file` could not be read.
    #[error("cannot read the CA file of HTTP origin `{origin}`: {source}")]
    CaFile {
        /// The origin.
        origin: String,
        /// Why.
        source: crate::readfile::ReadError,
    },
    /// A plain `http://` origin the config does not mark `plain_http`.
    #[error("HTTP origin `{0}` is plain `http://` without `plain_http: true`")]
    PlainHttp(String),
    /// An origin's `ca_file` holds no usable certificate.
    #[error("the CA file {path} of HTTP origin `{origin}` holds no PEM certificate")]
    NoCertificate {
        /// The origin.
        origin: String,
        /// The file.
        path: PathBuf,
    },
    /// The operating system's root certificates could not be loaded, and an
    /// `https://` origin without `ca_file` needs them.
    #[error(
        "HTTP origin `{origin}` is verified against the operating system's root certificates, but none could be loaded{reason}; install them (e.g. the ca-certificates package) or give the origin a `ca_file`"
    )]
    NoRoots {
        /// The first origin that needs them.
        origin: String,
        /// What the loader said, if anything (`: ...`).
        reason: String,
    },
}

/// The `http` capability's state: one agent and one set of slots per
/// configured origin.
#[derive(Default)]
pub struct Http {
    origins: HashMap<String, Origin>,
}

struct Origin {
    agent: ureq::Agent,
    slots: Slots,
}

/// A counting semaphore whose waits end at a deadline.
struct Slots {
    max: usize,
    busy: Mutex<usize>,
    freed: Condvar,
}

/// A taken slot, given back when dropped.
struct Slot<'a>(&'a Slots);

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let mut busy = lock(&self.0.busy);
        *busy = busy.saturating_sub(1);
        drop(busy);
        self.0.freed.notify_one();
    }
}

fn lock(m: &Mutex<usize>) -> MutexGuard<'_, usize> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Slots {
    /// Takes a slot, waiting until `deadline` at most; `None` if none came free.
    fn take(&self, deadline: Instant) -> Option<Slot<'_>> {
        crate::workers::waiting(|| {
            let mut busy = lock(&self.busy);
            while *busy >= self.max {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return None;
                }
                busy = self
                    .freed
                    .wait_timeout(busy, left)
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .0;
            }
            *busy += 1;
            Some(Slot(self))
        })
    }
}

impl Http {
    /// No origins.
    pub fn none() -> Http {
        Http::default()
    }

    /// The capability for `config`'s `http_origins`: reads each origin's
    /// `ca_file`, and the operating system's roots if an `https://` origin
    /// without one needs them.
    pub fn from_config(config: &GatewayConfig) -> Result<Http, CapabilitiesError> {
        Http::build(config).map_err(|e| CapabilitiesError::Http(e.to_string()))
    }

    fn build(config: &GatewayConfig) -> Result<Http, HttpError> {
        let mut native: Option<Vec<Certificate<'static>>> = None;
        let mut origins = HashMap::new();
        for o in &config.http_origins {
            // The config refuses it; a config built in code must not slip it in.
            if o.origin.starts_with("http://") && !o.plain_http {
                return Err(HttpError::PlainHttp(o.origin.clone()));
            }
            let roots = if o.plain_http {
                None
            } else if let Some(path) = &o.ca_file {
                Some(ca_file(o, path)?)
            } else {
                if native.is_none() {
                    native = Some(native_roots(&o.origin)?);
                }
                native.clone()
            };
            origins.insert(
                o.origin.clone(),
                Origin {
                    agent: agent(roots),
                    slots: Slots {
                        max: o.max_concurrent.max(1),
                        busy: Mutex::new(0),
                        freed: Condvar::new(),
                    },
                },
            );
        }
        Ok(Http { origins })
    }
}

fn ca_file(o: &HttpOrigin, path: &std::path::Path) -> Result<Vec<Certificate<'static>>, HttpError> {
    let pem =
        crate::readfile::read_limited(path, MAX_CA_FILE).map_err(|source| HttpError::CaFile {
            origin: o.origin.clone(),
            source,
        })?;
    let certs: Vec<Certificate<'static>> = ureq::tls::parse_pem(&pem)
        .filter_map(|item| match item {
            Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
            _ => None,
        })
        .collect();
    if certs.is_empty() {
        return Err(HttpError::NoCertificate {
            origin: o.origin.clone(),
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

fn native_roots(origin: &str) -> Result<Vec<Certificate<'static>>, HttpError> {
    let found = rustls_native_certs::load_native_certs();
    let certs: Vec<Certificate<'static>> = found
        .certs
        .iter()
        .map(|c| Certificate::from_der(c.as_ref()).to_owned())
        .collect();
    if certs.is_empty() {
        return Err(HttpError::NoRoots {
            origin: origin.to_owned(),
            reason: found
                .errors
                .first()
                .map(|e| format!(": {e}"))
                .unwrap_or_default(),
        });
    }
    Ok(certs)
}

/// An agent that trusts `roots` (`None`: a plain-HTTP origin, which never
/// uses TLS), follows no redirect and ignores proxy settings.
fn agent(roots: Option<Vec<Certificate<'static>>>) -> ureq::Agent {
    let tls = TlsConfig::builder()
        .root_certs(RootCerts::new_with_certs(&roots.unwrap_or_default()))
        .build();
    ureq::Agent::config_builder()
        .proxy(None)
        .max_redirects(0)
        .http_status_as_error(false)
        .https_only(false)
        .tls_config(tls)
        .user_agent(concat!("resetgate/", env!("CARGO_PKG_VERSION")))
        .build()
        .new_agent()
}

/// A parsed request URL: its origin as `normalise_origin` writes it.
struct Target {
    uri: Uri,
    origin: String,
}

fn target(url: &str) -> Result<Target, wit::http::HttpError> {
    let not_granted = || {
        wit::http::HttpError::OriginNotGranted(format!(
            "`{}` is not an absolute http(s) URL",
            shorten(url)
        ))
    };
    let uri: Uri = url.parse().map_err(|_| not_granted())?;
    let scheme = uri
        .scheme_str()
        .ok_or_else(not_granted)?
        .to_ascii_lowercase();
    if scheme != "http" && scheme != "https" {
        return Err(not_granted());
    }
    let authority = uri.authority().ok_or_else(not_granted)?;
    if authority.as_str().contains('@') {
        return Err(wit::http::HttpError::Protocol(
            "credentials in the URL are refused: send them in a header".into(),
        ));
    }
    let origin = match authority.port_u16() {
        Some(port) => format!("{scheme}://{}:{port}", authority.host()),
        None => format!("{scheme}://{}", authority.host()),
    };
    Ok(Target {
        origin: normalise_origin(&origin),
        uri,
    })
}

/// At most 200 characters of `text`, for messages.
fn shorten(text: &str) -> String {
    match text.char_indices().nth(200) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_owned(),
    }
}

/// Where `{{password}}` goes, by the request's `Content-Type`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Encoding {
    /// JSON: escaped as the inside of a JSON string.
    Json,
    /// `application/x-www-form-urlencoded`: percent-encoded.
    Form,
    /// Anything else: as it is.
    Raw,
}

fn encoding(content_type: Option<&str>) -> Encoding {
    let media = content_type
        .and_then(|c| c.split(';').next())
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if media == "application/json" || media.ends_with("+json") {
        Encoding::Json
    } else if media == "application/x-www-form-urlencoded" {
        Encoding::Form
    } else {
        Encoding::Raw
    }
}

/// `body` with every `{{password}}` replaced by `password`, encoded for
/// the body's content type. The result is wiped when dropped.
fn substitute(body: &[u8], encoding: Encoding, password: &str) -> Zeroizing<Vec<u8>> {
    let encoded: Zeroizing<String> = Zeroizing::new(match encoding {
        Encoding::Json => {
            let mut out = String::with_capacity(password.len());
            for c in password.chars() {
                match c {
                    '"' => out.push_str("\\\""),
                    '\\' => out.push_str("\\\\"),
                    '\n' => out.push_str("\\n"),
                    '\r' => out.push_str("\\r"),
                    '\t' => out.push_str("\\t"),
                    c if (c as u32) < 0x20 || c == '\u{2028}' || c == '\u{2029}' => {
                        out.push_str(&format!("\\u{:04x}", c as u32))
                    }
                    c => out.push(c),
                }
            }
            out
        }
        Encoding::Form => {
            let mut out = String::with_capacity(password.len() * 3);
            for b in password.bytes() {
                if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
                    out.push(char::from(b));
                } else {
                    out.push_str(&format!("%{b:02X}"));
                }
            }
            out
        }
        Encoding::Raw => password.to_owned(),
    });
    let mut out = Zeroizing::new(Vec::with_capacity(body.len() + encoded.len()));
    let mut rest = body;
    while let Some(at) = rest
        .windows(PASSWORD_PLACEHOLDER.len())
        .position(|w| w == PASSWORD_PLACEHOLDER)
    {
        out.extend_from_slice(&rest[..at]);
        out.extend_from_slice(encoded.as_bytes());
        rest = &rest[at + PASSWORD_PLACEHOLDER.len()..];
    }
    out.extend_from_slice(rest);
    out
}

/// Headers that are the host's to write.
const RESERVED_HEADERS: [&str; 6] = [
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "upgrade",
    "te",
];

impl HostState {
    /// Sends `request`, with `password` in place of `{{password}}` if given.
    fn http_send(
        &mut self,
        request: wit::http::Request,
        password: Option<Resource<SecretHandle>>,
    ) -> WasmResult<Result<wit::http::Response, wit::http::HttpError>> {
        use wit::http::HttpError as E;
        let caps = self.caps.clone();
        let grants = self.grants.clone();
        let target = match target(&request.url) {
            Ok(t) => t,
            Err(e) => return Ok(Err(e)),
        };
        let granted = grants
            .http
            .iter()
            .any(|g| normalise_origin(g) == target.origin);
        let Some(origin) = caps.http.origins.get(&target.origin).filter(|_| granted) else {
            return Ok(Err(E::OriginNotGranted(format!(
                "`{}` is not granted to this step",
                target.origin
            ))));
        };
        let method = match Method::from_bytes(request.method.as_bytes()) {
            Ok(m) => m,
            Err(_) => {
                return Ok(Err(E::Protocol(format!(
                    "`{}` is not an HTTP method",
                    shorten(&request.method)
                ))));
            }
        };
        if request.body.len() > MAX_REQUEST_BODY {
            return Ok(Err(E::Protocol(format!(
                "the request body is {} bytes, more than {MAX_REQUEST_BODY}",
                request.body.len()
            ))));
        }

        let mut builder = ureq::http::Request::builder()
            .method(method)
            .uri(target.uri.clone());
        let mut content_type = None;
        for (name, value) in &request.headers {
            let Ok(header) = HeaderName::from_bytes(name.as_bytes()) else {
                return Ok(Err(E::Protocol(format!(
                    "`{}` is not a header name",
                    shorten(name)
                ))));
            };
            if RESERVED_HEADERS.contains(&header.as_str()) {
                return Ok(Err(E::Protocol(format!(
                    "the header `{header}` is written by the host"
                ))));
            }
            let value = match value {
                wit::http::HeaderValue::Plain(text) => match HeaderValue::from_str(text) {
                    Ok(v) => {
                        if header == ureq::http::header::CONTENT_TYPE {
                            content_type = Some(text.clone());
                        }
                        v
                    }
                    Err(_) => {
                        return Ok(Err(E::Protocol(format!(
                            "the value of header `{header}` is not a valid header value"
                        ))));
                    }
                },
                wit::http::HeaderValue::SecretRef(secret) => {
                    if !grants.secrets.iter().any(|s| s == secret) {
                        return Ok(Err(E::OriginNotGranted(format!(
                            "header `{header}` names secret `{}`, which this step does not grant",
                            shorten(secret)
                        ))));
                    }
                    let Some(value) = caps.secrets.get(secret) else {
                        return Ok(Err(E::OriginNotGranted(format!(
                            "header `{header}` names secret `{secret}`, which has no value"
                        ))));
                    };
                    match HeaderValue::from_str(value.expose()) {
                        Ok(mut v) => {
                            v.set_sensitive(true);
                            v
                        }
                        Err(_) => {
                            // Never say what is wrong with it: that would be about the secret.
                            return Ok(Err(E::Protocol(format!(
                                "secret `{secret}` is not a valid header value"
                            ))));
                        }
                    }
                }
            };
            builder = builder.header(header, value);
        }

        let body: Zeroizing<Vec<u8>> = match &password {
            None => Zeroizing::new(request.body),
            Some(handle) => {
                let secret = &self.table.get(handle)?.0;
                let body = substitute(
                    &request.body,
                    encoding(content_type.as_deref()),
                    secret.expose(),
                );
                if body.len() > MAX_REQUEST_BODY {
                    return Ok(Err(E::Protocol(format!(
                        "the request body with the password is more than {MAX_REQUEST_BODY} bytes"
                    ))));
                }
                body
            }
        };
        let http_request = match builder.body(&body[..]) {
            Ok(r) => r,
            Err(_) => return Ok(Err(E::Protocol("the request is not valid".into()))),
        };

        let left = self.remaining();
        let limit = match request.timeout_ms {
            0 => left,
            ms => left.min(Duration::from_millis(u64::from(ms))),
        };
        let deadline = Instant::now() + limit;
        let Some(_slot) = origin.slots.take(deadline) else {
            return Ok(Err(E::Timeout));
        };
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(Err(E::Timeout));
        }
        let http_request = origin
            .agent
            .configure_request(http_request)
            .timeout_global(Some(left))
            .build();
        let result = crate::workers::waiting(|| {
            let response = origin.agent.run(http_request)?;
            read_response(response)
        });
        drop(body);
        Ok(match result {
            Ok(response) => check_redirect(&target, response),
            Err(e) => Err(classify(e)),
        })
    }
}

/// The response as the plugin gets it: the first headers, the body cut.
fn read_response(
    response: ureq::http::Response<ureq::Body>,
) -> Result<wit::http::Response, ureq::Error> {
    let (parts, body) = response.into_parts();
    let headers = parts
        .headers
        .iter()
        .take(MAX_RESPONSE_HEADERS)
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let mut bytes = Vec::new();
    body.into_reader()
        .take(MAX_RESPONSE_BODY as u64)
        .read_to_end(&mut bytes)
        .map_err(ureq::Error::Io)?;
    Ok(wit::http::Response {
        status: parts.status.as_u16(),
        headers,
        body: bytes,
    })
}

/// A 3xx whose `Location` leaves the request's origin is refused.
fn check_redirect(
    target: &Target,
    response: wit::http::Response,
) -> Result<wit::http::Response, wit::http::HttpError> {
    if !(300..400).contains(&response.status) {
        return Ok(response);
    }
    let location = response
        .headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("location"))
        .map(|(_, v)| v.trim());
    let Some(location) = location else {
        return Ok(response);
    };
    // A relative reference (`/path`, `path`, `?q`) stays on the origin; a
    // scheme-relative one (`//host`) or an absolute one names its own.
    let leaves = if let Some(rest) = location.strip_prefix("//") {
        let scheme = target.uri.scheme_str().unwrap_or("https");
        target_origin(&format!("{scheme}://{rest}")) != Some(target.origin.clone())
    } else if has_scheme(location) {
        target_origin(location) != Some(target.origin.clone())
    } else {
        false
    };
    if leaves {
        return Err(wit::http::HttpError::Protocol(
            "redirect to another origin refused".into(),
        ));
    }
    Ok(response)
}

/// Whether `reference` starts with a URI scheme (RFC 3986: a letter, then
/// letters, digits, `+`, `-` or `.`, then `:`).
fn has_scheme(reference: &str) -> bool {
    let Some((scheme, _)) = reference.split_once(':') else {
        return false;
    };
    let mut chars = scheme.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
}

fn target_origin(url: &str) -> Option<String> {
    target(url).ok().map(|t| t.origin)
}

/// The contract's error for a failed request. ureq's messages name the
/// host, never header values or the body.
fn classify(e: ureq::Error) -> wit::http::HttpError {
    use wit::http::HttpError as E;
    match e {
        ureq::Error::Timeout(_) => E::Timeout,
        // The handshake failed (the certificate, most often): rustls's
        // error comes wrapped in an I/O error.
        ureq::Error::Io(io)
            if io
                .get_ref()
                .is_some_and(|inner| inner.downcast_ref::<rustls::Error>().is_some()) =>
        {
            E::Connect(format!("TLS: {io}"))
        }
        ureq::Error::Io(io) if io.kind() == std::io::ErrorKind::TimedOut => E::Timeout,
        ureq::Error::Io(io)
            if matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionRefused
                    | std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::ConnectionAborted
                    | std::io::ErrorKind::NotConnected
                    | std::io::ErrorKind::AddrNotAvailable
                    | std::io::ErrorKind::HostUnreachable
                    | std::io::ErrorKind::NetworkUnreachable
            ) =>
        {
            E::Connect(io.to_string())
        }
        ureq::Error::HostNotFound => E::Connect("host not found".into()),
        ureq::Error::ConnectionFailed => E::Connect("connection failed".into()),
        ureq::Error::Tls(m) => E::Connect(format!("TLS: {m}")),
        ureq::Error::Rustls(r) => E::Connect(format!("TLS: {r}")),
        other => E::Protocol(other.to_string()),
    }
}

impl wit::http::Host for HostState {
    fn send(
        &mut self,
        request: wit::http::Request,
    ) -> WasmResult<Result<wit::http::Response, wit::http::HttpError>> {
        if !self.granted.has(Capability::Http) {
            return self.capability(Capability::Http, "send");
        }
        self.http_send(request, None)
    }

    fn send_with_secret(
        &mut self,
        request: wit::http::Request,
        password: Resource<SecretHandle>,
    ) -> WasmResult<Result<wit::http::Response, wit::http::HttpError>> {
        if !self.granted.has(Capability::Http) {
            return self.capability(Capability::Http, "send-with-secret");
        }
        self.http_send(request, Some(password))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_is_encoded_for_the_body() {
        let body = br#"{"user":"a","password":"{{password}}"}"#;
        let out = substitute(
            body,
            encoding(Some("application/json; charset=utf-8")),
            "p\"w\\d\n",
        );
        assert_eq!(
            String::from_utf8_lossy(&out),
            r#"{"user":"a","password":"p\"w\\d\n"}"#
        );
        let out = substitute(
            b"user=a&password={{password}}&again={{password}}",
            encoding(Some("application/x-www-form-urlencoded")),
            "a b&c=d+é",
        );
        assert_eq!(
            String::from_utf8_lossy(&out),
            "user=a&password=a%20b%26c%3Dd%2B%C3%A9&again=a%20b%26c%3Dd%2B%C3%A9"
        );
        let out = substitute(b"pw: {{password}}", encoding(Some("text/plain")), "x\"y");
        assert_eq!(String::from_utf8_lossy(&out), "pw: x\"y");
        assert_eq!(encoding(Some("application/problem+json")), Encoding::Json);
        assert_eq!(encoding(None), Encoding::Raw);
    }

    #[test]
    fn origins_that_cannot_be_set_up_are_named() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "no certificate here\n").unwrap_or_else(|e| panic!("{e}"));
        let origin = |origin: &str, plain_http, ca_file| HttpOrigin {
            origin: origin.into(),
            plain_http,
            ca_file,
            max_concurrent: 4,
        };
        let error = |o: HttpOrigin| {
            let config = GatewayConfig {
                http_origins: vec![o],
                ..GatewayConfig::default()
            };
            match Http::from_config(&config) {
                Ok(_) => panic!("built"),
                Err(e) => e.to_string(),
            }
        };
        let missing = dir.path().join("missing.pem");
        let e = error(origin("https://a.example", false, Some(missing.clone())));
        assert!(
            e.starts_with("cannot read the CA file of HTTP origin `https://a.example`: "),
            "{e}"
        );
        assert!(e.contains(&missing.display().to_string()), "{e}");
        assert_eq!(
            error(origin("https://a.example", false, Some(empty.clone()))),
            format!(
                "the CA file {} of HTTP origin `https://a.example` holds no PEM certificate",
                empty.display()
            )
        );
        assert_eq!(
            error(origin("http://a.example", false, None)),
            "HTTP origin `http://a.example` is plain `http://` without `plain_http: true`"
        );
        let config = GatewayConfig {
            http_origins: vec![origin("http://a.example", true, None)],
            ..GatewayConfig::default()
        };
        assert!(Http::from_config(&config).is_ok());
    }

    #[test]
    fn urls_name_their_origin() {
        let t = target("HTTPS://Sms.Example.com:443/send?x=1").unwrap();
        assert_eq!(t.origin, "https://sms.example.com");
        let t = target("http://127.0.0.1:8025/x").unwrap();
        assert_eq!(t.origin, "http://127.0.0.1:8025");
        assert!(matches!(
            target("ftp://a.example/"),
            Err(wit::http::HttpError::OriginNotGranted(_))
        ));
        assert!(matches!(
            target("/relative"),
            Err(wit::http::HttpError::OriginNotGranted(_))
        ));
        assert!(matches!(
            target("https://user:pw@a.example/"),
            Err(wit::http::HttpError::Protocol(_))
        ));
    }

    #[test]
    fn redirects_leaving_the_origin_are_refused() {
        let t = target("https://a.example/send").unwrap();
        let r = |location: &str| wit::http::Response {
            status: 302,
            headers: vec![("location".into(), location.into())],
            body: vec![],
        };
        for same in [
            "/elsewhere",
            "next",
            "?page=2",
            "a/b:c",
            "?x=y:z",
            "https://A.example:443/x",
            "//a.example/y",
        ] {
            assert!(check_redirect(&t, r(same)).is_ok(), "{same}");
        }
        for other in [
            "https://b.example/",
            "http://a.example/",
            "https://a.example:8443/",
            "//b.example/",
            "javascript:alert(1)",
        ] {
            assert!(
                matches!(check_redirect(&t, r(other)), Err(wit::http::HttpError::Protocol(m)) if m == "redirect to another origin refused"),
                "{other}"
            );
        }
    }
}
