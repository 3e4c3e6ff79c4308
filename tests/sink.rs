//! A loopback HTTP(S) sink: a server on `127.0.0.1` that records every
//! request (method, path, headers, body) and answers each with a reply the
//! test chooses (a status, headers, a body). The one-time-code tests read
//! the codes a gate sends from it; the `http` capability's tests point
//! plugins at it. It can also hold requests unanswered (a slow server)
//! until released.
//!
//! ```ignore
//! let sink = Sink::http();
//! sink.reply_with(Reply::status(202));
//! // ... a plugin posts to sink.url("/send") ...
//! let sent = sink.wait_for_requests(1);
//! assert_eq!(sent[0].method, "POST");
//! ```
//!
//! Every answer closes its connection (`Connection: close`). Dropping the
//! sink stops its threads (held requests are answered first).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::pki::Pki;

/// How long the sink waits for a client's bytes, and how long the `wait_*`
/// helpers wait before giving up.
const PATIENCE: Duration = Duration::from_secs(10);
/// The largest request head (request line and headers) the sink reads.
const MAX_HEAD: usize = 64 * 1024;
/// The largest request body the sink reads.
const MAX_BODY: usize = 1024 * 1024;

/// One request the sink received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recorded {
    /// `GET`, `POST`, ...
    pub method: String,
    /// The request target as sent, e.g. `/send?x=1`.
    pub path: String,
    /// Every header in the order sent (names as sent).
    pub headers: Vec<(String, String)>,
    /// The body (chunked bodies decoded).
    pub body: Vec<u8>,
}

impl Recorded {
    /// The value of the first header called `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as text (lossy UTF-8).
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// What the sink answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    /// The status code.
    pub status: u16,
    /// Extra headers (`Content-Length` and `Connection` are added).
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Reply {
    /// An empty answer with `status`.
    pub fn status(status: u16) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// The same with one more header.
    pub fn with_header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// The same with `body`.
    pub fn with_body(mut self, body: impl Into<Vec<u8>>) -> Reply {
        self.body = body.into();
        self
    }
}

struct State {
    requests: Vec<Recorded>,
    reply: Reply,
    held: bool,
    in_flight: usize,
}

struct Shared {
    state: Mutex<State>,
    changed: Condvar,
    stop: AtomicBool,
}

/// A running sink; stopped when dropped.
pub struct Sink {
    addr: SocketAddr,
    tls: bool,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl Sink {
    /// A plain HTTP sink on a free loopback port, answering `200` with an
    /// empty body until told otherwise.
    pub fn http() -> Sink {
        Sink::start(None)
    }

    /// An HTTPS sink on a free loopback port with `pki`'s server
    /// certificate (for `127.0.0.1` and `localhost`); clients must trust
    /// `pki.ca_file()`.
    pub fn https(pki: &Pki) -> Sink {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(pki.cert_file())
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let key = PrivateKeyDer::from_pem_file(pki.key_file()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
        Sink::start(Some(Arc::new(config)))
    }

    fn start(tls: Option<Arc<rustls::ServerConfig>>) -> Sink {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                requests: Vec::new(),
                reply: Reply::status(200),
                held: false,
                in_flight: 0,
            }),
            changed: Condvar::new(),
            stop: AtomicBool::new(false),
        });
        let is_tls = tls.is_some();
        let accept = {
            let shared = shared.clone();
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if shared.stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let shared = shared.clone();
                    let tls = tls.clone();
                    std::thread::spawn(move || serve(stream, tls, &shared));
                }
            })
        };
        Sink {
            addr,
            tls: is_tls,
            shared,
            accept: Some(accept),
        }
    }

    /// The sink's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT` or `https://127.0.0.1:PORT`.
    pub fn origin(&self) -> String {
        format!(
            "{}://{}",
            if self.tls { "https" } else { "http" },
            self.addr
        )
    }

    /// The origin followed by `path` (which starts with `/`).
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.origin())
    }

    /// Answers every later request with `reply`.
    pub fn reply_with(&self, reply: Reply) {
        self.shared.state.lock().unwrap().reply = reply;
    }

    /// Holds every request (recorded, but not answered) until
    /// [`Sink::release`]: a server that accepts and never answers.
    pub fn hold(&self) {
        self.shared.state.lock().unwrap().held = true;
    }

    /// Answers the held requests and stops holding.
    pub fn release(&self) {
        self.shared.state.lock().unwrap().held = false;
        self.shared.changed.notify_all();
    }

    /// Every request received so far, oldest first.
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.state.lock().unwrap().requests.clone()
    }

    /// Forgets the requests received so far.
    pub fn clear(&self) {
        self.shared.state.lock().unwrap().requests.clear();
    }

    /// Requests read and not answered yet (held ones).
    pub fn in_flight(&self) -> usize {
        self.shared.state.lock().unwrap().in_flight
    }

    /// Waits (up to 10 s) until at least `n` requests were received;
    /// returns them all. Panics if they do not come.
    pub fn wait_for_requests(&self, n: usize) -> Vec<Recorded> {
        self.wait_until(|s| s.requests.len() >= n, &format!("{n} requests"));
        self.requests()
    }

    /// Waits (up to 10 s) until `n` requests are held at once. Panics if
    /// they do not come.
    pub fn wait_in_flight(&self, n: usize) {
        self.wait_until(|s| s.in_flight >= n, &format!("{n} held requests"));
    }

    fn wait_until(&self, done: impl Fn(&State) -> bool, what: &str) {
        let deadline = Instant::now() + PATIENCE;
        let mut state = self.shared.state.lock().unwrap();
        while !done(&state) {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "the sink did not see {what} within {PATIENCE:?}: {} received, {} held",
                state.requests.len(),
                state.in_flight
            );
            state = self.shared.changed.wait_timeout(state, left).unwrap().0;
        }
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.release();
        // Wake the accept loop so it sees `stop`.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
    }
}

/// Serves one connection: one request, one answer, then close.
fn serve(stream: TcpStream, tls: Option<Arc<rustls::ServerConfig>>, shared: &Shared) {
    let _ = stream.set_read_timeout(Some(PATIENCE));
    let _ = stream.set_write_timeout(Some(PATIENCE));
    let _ = stream.set_nodelay(true);
    match tls {
        None => exchange(stream, shared),
        Some(config) => {
            let Ok(conn) = rustls::ServerConnection::new(config) else {
                return;
            };
            exchange(rustls::StreamOwned::new(conn, stream), shared);
        }
    }
}

fn exchange(mut stream: impl Read + Write, shared: &Shared) {
    let Some(request) = read_request(&mut stream) else {
        return;
    };
    let reply = {
        let mut state = shared.state.lock().unwrap();
        state.requests.push(request);
        state.in_flight += 1;
        shared.changed.notify_all();
        while state.held && !shared.stop.load(Ordering::SeqCst) {
            state = shared.changed.wait(state).unwrap();
        }
        state.in_flight -= 1;
        state.reply.clone()
    };
    let mut head = format!(
        "HTTP/1.1 {} {}\r\nContent-Length: {}\r\nConnection: close\r\n",
        reply.status,
        reason(reply.status),
        reply.body.len()
    );
    for (name, value) in &reply.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(&reply.body);
    let _ = stream.flush();
}

/// Reads one HTTP/1.1 request; `None` if the client went away or sent
/// something that is not one.
fn read_request(stream: &mut impl Read) -> Option<Recorded> {
    let mut reader = BufReader::new(stream);
    let mut head_len = 0;
    let mut line = String::new();
    let mut next_line = |reader: &mut BufReader<_>, line: &mut String| -> Option<()> {
        line.clear();
        let n = reader.read_line(line).ok()?;
        head_len += n;
        (n > 0 && head_len <= MAX_HEAD).then_some(())
    };
    next_line(&mut reader, &mut line)?;
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_owned();
    let path = parts.next()?.to_owned();
    let mut headers = Vec::new();
    loop {
        next_line(&mut reader, &mut line)?;
        let l = line.trim_end_matches(['\r', '\n']);
        if l.is_empty() {
            break;
        }
        let (name, value) = l.split_once(':')?;
        headers.push((name.trim().to_owned(), value.trim().to_owned()));
    }
    let header = |name: &str| {
        headers
            .iter()
            .find(|(k, _): &&(String, String)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    let mut body = Vec::new();
    if header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        loop {
            next_line(&mut reader, &mut line)?;
            let size = usize::from_str_radix(line.trim().split(';').next()?, 16).ok()?;
            if size == 0 {
                // Trailers, then the empty line.
                loop {
                    next_line(&mut reader, &mut line)?;
                    if line.trim().is_empty() {
                        break;
                    }
                }
                break;
            }
            if body.len() + size > MAX_BODY {
                return None;
            }
            let start = body.len();
            body.resize(start + size, 0);
            reader.read_exact(&mut body[start..]).ok()?;
            next_line(&mut reader, &mut line)?;
        }
    } else if let Some(len) = header("content-length") {
        let len: usize = len.parse().ok()?;
        if len > MAX_BODY {
            return None;
        }
        body.resize(len, 0);
        reader.read_exact(&mut body).ok()?;
    }
    Some(Recorded {
        method,
        path,
        headers,
        body,
    })
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Status",
    }
}
