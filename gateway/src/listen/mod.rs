//! The listener: accepts TCP connections, does the TLS handshake when TLS is
//! configured, and serves the router over HTTP/1.1 or HTTP/2 (hyper-util's
//! auto builder), with every request carrying a [`Peer`].
//!
//! Slow and idle clients are cut off:
//! - the TLS handshake must finish within `connections.handshake_timeout`;
//! - a connection must present a complete request (HTTP/1 request line and
//!   headers, or the HTTP/2 preface, SETTINGS and a whole header block)
//!   within `connections.header_timeout` of the handshake, or it is closed
//!   without an answer. HTTP/1 keeps that timer between requests too (how
//!   long a keep-alive connection waits for its next request; hyper's own).
//!   An open HTTP/2 connection is followed frame by frame ([`Frames`]): once
//!   a client has begun a frame or a header block while no request of its
//!   is running, the rest must arrive within the same timeout. Without this
//!   an HTTP/2 client dribbling the preface or a HEADERS frame a byte at a
//!   time held its connection forever, since bytes kept moving;
//! - a connection with no request running and no bytes moving for
//!   `connections.idle_timeout` is closed gracefully (HTTP/2 gets a GOAWAY).
//!
//! One client address (an IPv4 address, or an IPv6 /64) may hold at most
//! `connections.max_per_ip` connections; one more is closed as soon as it
//! is accepted, counted in `/metrics`
//! (`resetgate_connections_refused_total{reason="per-ip"}`), and logged at
//! warn (the first refusal of an address, then at most once a minute per
//! address with the number refused since). So one address cannot take the
//! slots every other client needs.
//!
//! At most `connections.max` connections are served at once. At the limit
//! the listener stops accepting until one closes, so new clients wait in the
//! kernel's accept queue (and are refused by the kernel once it is full)
//! rather than being accepted and dropped: their requests are served late,
//! not lost, and a flood cannot make the gateway spend work on connections
//! it will not serve. Every slot is freed within the timeouts above unless
//! a request is running.
//!
//! Shutdown: stop accepting, ask every connection to close once its
//! requests are answered (HTTP/1 closes idle connections at once, HTTP/2
//! sends GOAWAY), wait up to `connections.shutdown_timeout`, then drop what
//! is left.

mod peer;
mod tls;

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tower_service::Service as _;

pub use self::peer::{ClientCertificate, Peer, TlsInfo};
pub use self::tls::{CertSummary, Tls, TlsError, provider};
pub use crate::config::ConnectionLimits;

/// How the listener serves.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// TLS; `None` serves plain HTTP.
    pub tls: Option<Arc<Tls>>,
    /// Connection limits and timeouts.
    pub limits: ConnectionLimits,
}

/// Plain HTTP was asked for on an address other than loopback.
#[derive(Debug, thiserror::Error)]
#[error(
    "refusing to serve plain HTTP on {addr}: passwords would cross the network unencrypted. \
     Set `tls: {{ cert: FILE, key: FILE }}` in the gateway config to serve HTTPS, or, if a reverse \
     proxy in front of the gateway terminates TLS, set `allow_plain_http: true` (or listen on a \
     loopback address such as 127.0.0.1)"
)]
pub struct PlainHttpRefused {
    /// The address asked for.
    pub addr: SocketAddr,
}

/// Checks that plain HTTP may be served on `addr`: only on loopback, unless
/// `allow_plain_http`.
pub fn check_plain_http(addr: SocketAddr, allow_plain_http: bool) -> Result<(), PlainHttpRefused> {
    if allow_plain_http || addr.ip().to_canonical().is_loopback() {
        Ok(())
    } else {
        Err(PlainHttpRefused { addr })
    }
}

/// The base URL of a listener bound to `addr`, e.g. `https://127.0.0.1:8443`.
pub fn url(addr: SocketAddr, tls: bool) -> String {
    format!("{}://{addr}", if tls { "https" } else { "http" })
}

/// Serves `app` on `listener` until `shutdown` completes, then lets requests
/// under way finish (up to `limits.shutdown_timeout`).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    options: Options,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let limits = options.limits;
    let http = Arc::new(http_builder(&limits));
    let slots = Arc::new(Semaphore::new(limits.max.max(1)));
    let per_ip = Arc::new(PerIp::new(limits.max_per_ip));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    'accept: loop {
        // Finished connections are reaped in both waits, so the set holds
        // only open ones.
        let slot = tokio::select! {
            biased;
            () = &mut shutdown => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break, // never closed
            },
        };
        let (stream, addr) = loop {
            tokio::select! {
                biased;
                () = &mut shutdown => break 'accept,
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => break accepted,
                    Err(e) if is_connection_error(&e) => {}
                    Err(e) => {
                        // Out of file descriptors and the like: wait for
                        // some to be released rather than spin.
                        tracing::error!(error = %e, "accepting a connection failed");
                        tokio::time::sleep(Duration::from_millis(250)).await;
                    }
                },
            }
        };
        let Some(ip_slot) = per_ip.admit(addr.ip()) else {
            // Closed at once: the slot goes back with it.
            drop(stream);
            continue;
        };
        let conn = Connection {
            addr,
            app: app.clone(),
            http: http.clone(),
            limits,
            stop: stop_rx.clone(),
        };
        let tls = options.tls.as_ref().map(|t| t.server_config());
        connections.spawn(async move {
            conn.run(stream, tls).await;
            drop(ip_slot);
            drop(slot);
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    while connections.try_join_next().is_some() {}
    let open = connections.len();
    if open > 0 {
        tracing::info!(connections = open, "waiting for requests under way");
    }
    let drained = tokio::time::timeout(limits.shutdown_timeout, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            connections = connections.len(),
            "closing connections still open after the shutdown timeout"
        );
        connections.shutdown().await;
    }
    Ok(())
}

/// Errors of one connection that `accept` reports; the listener is fine.
fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset | Interrupted
    )
}

fn http_builder(limits: &ConnectionLimits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(64)
        .max_header_list_size(64 * 1024);
    builder
}

/// One accepted connection.
struct Connection {
    addr: SocketAddr,
    app: Router,
    http: Arc<auto::Builder<TokioExecutor>>,
    limits: ConnectionLimits,
    stop: watch::Receiver<bool>,
}

impl Connection {
    async fn run(mut self, stream: TcpStream, tls: Option<Arc<rustls::ServerConfig>>) {
        let _ = stream.set_nodelay(true);
        let activity = Arc::new(Activity::new());
        let io = Tracked {
            inner: stream,
            activity: activity.clone(),
        };
        let Some(config) = tls else {
            let peer = Peer::plain(self.addr);
            return self.serve(io, peer, activity).await;
        };
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        let handshake = tokio::time::timeout(self.limits.handshake_timeout, acceptor.accept(io));
        let stream = tokio::select! {
            done = handshake => done,
            _ = self.stop.changed() => return,
        };
        let stream = match stream {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => {
                tracing::debug!(peer = %self.addr, error = %e, "TLS handshake failed");
                return;
            }
            Err(_) => {
                tracing::debug!(peer = %self.addr, "TLS handshake timed out");
                return;
            }
        };
        let info = tls_info(stream.get_ref().1);
        let peer = Peer {
            addr: self.addr,
            tls: Some(Arc::new(info)),
        };
        self.serve(stream, peer, activity).await;
    }

    /// Serves HTTP on `io` until the client leaves, the connection idles
    /// out, or the listener stops.
    async fn serve<I>(mut self, io: I, peer: Peer, activity: Arc<Activity>)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        activity.serving();
        let io = Frames::new(io, activity.clone());
        let app = self.app.clone();
        let requests = activity.clone();
        let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
            let extensions = req.extensions_mut();
            extensions.insert(ConnectInfo(peer.addr));
            extensions.insert(peer.clone());
            let running = requests.begin();
            let response = app.clone().call(req);
            async move {
                let response = response.await;
                drop(running);
                response
            }
        });
        let conn = self.http.serve_connection(TokioIo::new(io), service);
        tokio::pin!(conn);
        let idle = self.limits.idle_timeout;
        let request_timeout = self.limits.header_timeout;
        let check = tokio::time::sleep(idle.min(request_timeout));
        tokio::pin!(check);
        let mut closing = false;
        loop {
            tokio::select! {
                done = conn.as_mut() => {
                    if let Err(e) = done {
                        tracing::debug!(peer = %self.addr, error = %e, "connection ended");
                    }
                    return;
                }
                _ = self.stop.changed(), if !closing => {
                    closing = true;
                    conn.as_mut().graceful_shutdown();
                    // `serve` gives up on the connection at this point anyway.
                    check.as_mut().reset(Instant::now() + self.limits.shutdown_timeout);
                }
                () = &mut check => {
                    if closing {
                        // Asked to close and the client did not finish in
                        // time: drop it.
                        return;
                    }
                    let waiting = activity.waiting_for();
                    if waiting.is_some_and(|w| w >= request_timeout) {
                        // As hyper does for a slow HTTP/1 head: no answer,
                        // nothing to finish, the connection just closes.
                        tracing::debug!(
                            peer = %self.addr,
                            "closing a connection that did not send a complete request in time"
                        );
                        return;
                    }
                    let quiet = activity.quiet_for();
                    if activity.running() == 0 && quiet >= idle {
                        tracing::debug!(peer = %self.addr, "closing an idle connection");
                        closing = true;
                        conn.as_mut().graceful_shutdown();
                        check.as_mut().reset(Instant::now() + self.limits.shutdown_timeout);
                    } else {
                        let idle_wait = idle.saturating_sub(quiet).max(Duration::from_millis(100));
                        // A client may begin a frame at any time: while no
                        // request runs, look again within a quarter of the
                        // timeout; once it waits, at its deadline.
                        let request_wait = match waiting {
                            Some(w) => request_timeout.saturating_sub(w),
                            None if activity.running() == 0 => request_timeout / 4,
                            None => request_timeout,
                        };
                        let wait = idle_wait.min(request_wait.max(Duration::from_millis(1)));
                        check.as_mut().reset(Instant::now() + wait);
                    }
                }
            }
        }
    }
}

/// What the handshake settled, and the client certificate.
fn tls_info(conn: &rustls::ServerConnection) -> TlsInfo {
    let version = match conn.protocol_version() {
        Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3".to_owned(),
        Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2".to_owned(),
        other => format!("{other:?}"),
    };
    let cipher_suite = conn
        .negotiated_cipher_suite()
        .map(|s| {
            let s = s.suite();
            s.as_str().map_or_else(|| format!("{s:?}"), str::to_owned)
        })
        .unwrap_or_default();
    TlsInfo {
        version,
        cipher_suite,
        alpn: conn
            .alpn_protocol()
            .map(|p| String::from_utf8_lossy(p).into_owned()),
        client_certificate: conn
            .peer_certificates()
            .and_then(|chain| chain.first())
            .map(ClientCertificate::from_der),
    }
}

/// When a connection last moved bytes, how many of its requests are
/// running, and since when it has been waiting for the rest of a request:
/// what decides that it is idle, or too slow.
struct Activity {
    start: Instant,
    /// Milliseconds from `start` to the last read or write.
    last: AtomicU64,
    running: AtomicUsize,
    /// Requests begun so far.
    begun: AtomicU64,
    /// Milliseconds from `start` to when HTTP began to be served (after the
    /// TLS handshake); [`NEVER`] before.
    serving: AtomicU64,
    /// Milliseconds from `start` to when the last request ended.
    ended: AtomicU64,
    /// Milliseconds from `start` to when the HTTP/2 client began the frame
    /// or header block it has not finished; [`NEVER`] if none.
    partial: AtomicU64,
}

/// An unset time in [`Activity`].
const NEVER: u64 = u64::MAX;

impl Activity {
    fn new() -> Activity {
        Activity {
            start: Instant::now(),
            last: AtomicU64::new(0),
            running: AtomicUsize::new(0),
            begun: AtomicU64::new(0),
            serving: AtomicU64::new(NEVER),
            ended: AtomicU64::new(0),
            partial: AtomicU64::new(NEVER),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(NEVER - 1)
    }

    fn touch(&self) {
        self.last.store(self.now_ms(), Ordering::Relaxed);
    }

    /// HTTP starts: the first request is due within the request timeout.
    fn serving(&self) {
        self.serving.store(self.now_ms(), Ordering::Relaxed);
    }

    /// Whether an HTTP/2 frame or header block is under way (see [`Frames`]).
    fn set_partial(&self, partial: bool) {
        let now = self.now_ms();
        let since = if partial { now } else { NEVER };
        let current = self.partial.load(Ordering::Relaxed);
        if partial != (current != NEVER) {
            self.partial.store(since, Ordering::Relaxed);
        }
    }

    /// How long the connection has been waiting for a complete request, if
    /// it is: since HTTP started until the first request begins; later,
    /// while no request runs and an HTTP/2 frame or header block is under
    /// way, since that began (or since the last request ended, if later).
    fn waiting_for(&self) -> Option<Duration> {
        if self.running() > 0 {
            return None;
        }
        let since = if self.begun.load(Ordering::Relaxed) == 0 {
            self.serving.load(Ordering::Relaxed)
        } else {
            match self.partial.load(Ordering::Relaxed) {
                NEVER => NEVER,
                partial => partial.max(self.ended.load(Ordering::Relaxed)),
            }
        };
        if since == NEVER {
            return None;
        }
        Some(Duration::from_millis(self.now_ms().saturating_sub(since)))
    }

    fn quiet_for(&self) -> Duration {
        let last = Duration::from_millis(self.last.load(Ordering::Relaxed));
        self.start.elapsed().saturating_sub(last)
    }

    fn running(&self) -> usize {
        self.running.load(Ordering::Relaxed)
    }

    /// Counts a request as running until the guard is dropped.
    fn begin(self: &Arc<Self>) -> Running {
        self.running.fetch_add(1, Ordering::Relaxed);
        self.begun.fetch_add(1, Ordering::Relaxed);
        Running(self.clone())
    }
}

/// A running request (see [`Activity::begin`]).
struct Running(Arc<Activity>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.ended.store(self.0.now_ms(), Ordering::Relaxed);
        self.0.running.fetch_sub(1, Ordering::Relaxed);
        self.0.touch();
    }
}

/// The HTTP/2 client connection preface (RFC 9113, section 3.4).
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Frame types and the flag that ends a header block (RFC 9113, section 6).
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_HEADERS: u8 = 0x4;

/// Follows what an HTTP/2 client sends, frame by frame, without decoding
/// anything: whether it is in the middle of a frame or of a header block
/// (HEADERS and CONTINUATION frames until END_HEADERS), which
/// [`Activity::set_partial`] records. A connection that does not start with
/// the HTTP/2 preface is HTTP/1 and is not followed (hyper's header timer
/// bounds it).
struct Frames<T> {
    inner: T,
    activity: Arc<Activity>,
    state: FrameState,
    /// Inside a header block.
    block: bool,
}

enum FrameState {
    /// Matching the client preface: bytes matched so far.
    Preface(usize),
    /// HTTP/1: not followed.
    Off,
    /// Reading a frame header: its bytes so far.
    Header([u8; 9], usize),
    /// Reading a frame's payload: bytes left.
    Payload(usize),
}

impl<T> Frames<T> {
    fn new(inner: T, activity: Arc<Activity>) -> Frames<T> {
        Frames {
            inner,
            activity,
            state: FrameState::Preface(0),
            block: false,
        }
    }

    /// Follows `bytes`, read from the client.
    fn follow(&mut self, mut bytes: &[u8]) {
        if matches!(self.state, FrameState::Off) {
            return;
        }
        while !bytes.is_empty() {
            match &mut self.state {
                FrameState::Off => return,
                FrameState::Preface(matched) => {
                    let n = (H2_PREFACE.len() - *matched).min(bytes.len());
                    if bytes[..n] != H2_PREFACE[*matched..*matched + n] {
                        self.state = FrameState::Off;
                        return;
                    }
                    *matched += n;
                    bytes = &bytes[n..];
                    if *matched == H2_PREFACE.len() {
                        self.state = FrameState::Header([0; 9], 0);
                    }
                }
                FrameState::Header(header, filled) => {
                    let n = (header.len() - *filled).min(bytes.len());
                    header[*filled..*filled + n].copy_from_slice(&bytes[..n]);
                    *filled += n;
                    bytes = &bytes[n..];
                    if *filled == header.len() {
                        let length = usize::from(header[0]) << 16
                            | usize::from(header[1]) << 8
                            | usize::from(header[2]);
                        let (kind, flags) = (header[3], header[4]);
                        if kind == HEADERS || kind == CONTINUATION {
                            self.block = flags & END_HEADERS == 0;
                        }
                        self.state = if length == 0 {
                            FrameState::Header([0; 9], 0)
                        } else {
                            FrameState::Payload(length)
                        };
                    }
                }
                FrameState::Payload(left) => {
                    let n = (*left).min(bytes.len());
                    *left -= n;
                    bytes = &bytes[n..];
                    if *left == 0 {
                        self.state = FrameState::Header([0; 9], 0);
                    }
                }
            }
        }
        let partial = self.block
            || matches!(self.state, FrameState::Payload(_))
            || matches!(self.state, FrameState::Header(_, filled) if filled > 0);
        self.activity.set_partial(partial);
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Frames<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.follow(&buf.filled()[before..]);
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Frames<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// Connections refused because their address held `max_per_ip` already.
static REFUSED_PER_IP: AtomicU64 = AtomicU64::new(0);

/// Connections this process refused because their client address held
/// `connections.max_per_ip` already (for `/metrics`).
pub fn refused_per_ip() -> u64 {
    REFUSED_PER_IP.load(Ordering::Relaxed)
}

/// How often a refused address is logged again, at most.
const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(60);

/// Open connections per client address.
struct PerIp {
    limit: usize,
    open: Mutex<HashMap<IpAddr, Held>>,
}

/// One address's connections, and its refusals since it was last logged.
struct Held {
    open: usize,
    refused: u64,
    logged: Option<Instant>,
}

/// The address a limit counts against: IPv4 addresses (also IPv4-mapped
/// IPv6 ones) one by one, IPv6 by /64, which one client usually owns whole.
fn client_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => {
            let mut octets = v6.octets();
            octets[8..].fill(0);
            IpAddr::V6(Ipv6Addr::from(octets))
        }
    }
}

impl PerIp {
    fn new(limit: usize) -> PerIp {
        PerIp {
            limit: limit.max(1),
            open: Mutex::new(HashMap::new()),
        }
    }

    /// Counts a connection from `ip`, or `None` if that address holds the
    /// limit already.
    fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<IpSlot> {
        let key = client_key(ip);
        let mut log = None;
        {
            let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
            let held = open.entry(key).or_insert(Held {
                open: 0,
                refused: 0,
                logged: None,
            });
            if held.open < self.limit {
                held.open += 1;
                return Some(IpSlot {
                    per_ip: self.clone(),
                    key,
                });
            }
            held.refused += 1;
            let due = held
                .logged
                .is_none_or(|at| at.elapsed() >= REFUSAL_LOG_EVERY);
            if due {
                log = Some(held.refused);
                held.refused = 0;
                held.logged = Some(Instant::now());
            }
        }
        REFUSED_PER_IP.fetch_add(1, Ordering::Relaxed);
        if let Some(refused) = log {
            // `refused`: since the last warning about this address (1 the
            // first time).
            tracing::warn!(
                client = %key,
                limit = self.limit,
                refused,
                "refusing connections from a client address that holds \
                 `connections.max_per_ip` connections already"
            );
        }
        None
    }
}

/// A connection counted against its address (see [`PerIp::admit`]).
struct IpSlot {
    per_ip: Arc<PerIp>,
    key: IpAddr,
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut open = self
            .per_ip
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(held) = open.get_mut(&self.key) {
            held.open = held.open.saturating_sub(1);
            if held.open == 0 {
                open.remove(&self.key);
            }
        }
    }
}

/// A stream that records when bytes move through it.
struct Tracked<T> {
    inner: T,
    activity: Arc<Activity>,
}

impl<T: AsyncRead + Unpin> AsyncRead for Tracked<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.activity.touch();
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Tracked<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.touch();
        }
        polled
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.touch();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_only_on_loopback_unless_allowed() {
        let at = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert!(check_plain_http(at("127.0.0.1:80"), false).is_ok());
        assert!(check_plain_http(at("127.8.0.1:80"), false).is_ok());
        assert!(check_plain_http(at("[::1]:80"), false).is_ok());
        assert!(check_plain_http(at("[::ffff:127.0.0.1]:80"), false).is_ok());
        assert!(check_plain_http(at("0.0.0.0:80"), true).is_ok());
        let err = check_plain_http(at("0.0.0.0:80"), false)
            .unwrap_err()
            .to_string();
        assert!(err.contains("0.0.0.0:80"), "{err}");
        assert!(err.contains("`tls:"), "{err}");
        assert!(err.contains("`allow_plain_http: true`"), "{err}");
        assert!(check_plain_http(at("[::]:80"), false).is_err());
    }

    fn frames(bytes: &[&[u8]]) -> (Frames<()>, Vec<bool>) {
        let activity = Arc::new(Activity::new());
        let mut f = Frames::new((), activity.clone());
        let mut partial = Vec::new();
        for b in bytes {
            f.follow(b);
            partial.push(activity.partial.load(Ordering::Relaxed) != NEVER);
        }
        (f, partial)
    }

    #[test]
    fn frames_tell_when_a_frame_or_header_block_is_under_way() {
        let settings: &[u8] = &[0, 0, 0, 0x4, 0, 0, 0, 0, 0];
        // HEADERS without END_HEADERS, 2 payload bytes; then CONTINUATION
        // with END_HEADERS, 1 byte.
        let headers: &[u8] = &[0, 0, 2, 0x1, 0x1, 0, 0, 0, 1];
        let continuation: &[u8] = &[0, 0, 1, 0x9, 0x4, 0, 0, 0, 1];
        let (f, partial) = frames(&[
            &H2_PREFACE[..10],
            &H2_PREFACE[10..],
            &settings[..4],
            &settings[4..],
            headers,
            &[0x82, 0x84],
            continuation,
            &[0x86],
        ]);
        assert!(matches!(f.state, FrameState::Header(_, 0)));
        assert_eq!(
            partial,
            [false, false, true, false, true, true, true, false]
        );
    }

    #[test]
    fn frames_leave_http1_alone() {
        let (f, partial) = frames(&[b"PRI", b"GET / HTTP/1.1\r\n\r\n"]);
        assert!(matches!(f.state, FrameState::Off));
        assert_eq!(partial, [false, false]);
        let (f, _) = frames(&[b"POST / HTTP/1.1\r\n"]);
        assert!(matches!(f.state, FrameState::Off));
    }

    #[test]
    fn the_first_request_is_due_from_the_start_later_only_mid_frame() {
        let a = Arc::new(Activity::new());
        assert_eq!(a.waiting_for(), None, "not serving yet (TLS handshake)");
        a.serving();
        assert!(a.waiting_for().is_some());
        let running = a.begin();
        assert_eq!(a.waiting_for(), None);
        drop(running);
        assert_eq!(a.waiting_for(), None, "between requests, idle rules");
        a.set_partial(true);
        assert!(a.waiting_for().is_some());
        let running = a.begin();
        assert_eq!(a.waiting_for(), None, "a body under way");
        drop(running);
        a.set_partial(false);
        assert_eq!(a.waiting_for(), None);
    }

    #[test]
    fn addresses_are_limited_one_by_one_and_ipv6_by_64() {
        let per_ip = Arc::new(PerIp::new(2));
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let a1 = per_ip.admit(ip("192.0.2.1")).unwrap();
        let _a2 = per_ip.admit(ip("::ffff:192.0.2.1")).unwrap();
        assert!(per_ip.admit(ip("192.0.2.1")).is_none());
        assert!(per_ip.admit(ip("192.0.2.2")).is_some());
        drop(a1);
        assert!(per_ip.admit(ip("192.0.2.1")).is_some());
        let _b1 = per_ip.admit(ip("2001:db8::1")).unwrap();
        let _b2 = per_ip.admit(ip("2001:db8::2:1")).unwrap();
        assert!(per_ip.admit(ip("2001:db8::ffff:1")).is_none());
        assert!(per_ip.admit(ip("2001:db8:0:1::1")).is_some());
        // Entries go once their connections do.
        drop((_b1, _b2));
        let open = per_ip.open.lock().unwrap();
        assert!(!open.contains_key(&ip("2001:db8::")));
    }

    #[test]
    fn urls() {
        let addr: SocketAddr = "127.0.0.1:8443".parse().unwrap();
        assert_eq!(url(addr, true), "https://127.0.0.1:8443");
        assert_eq!(url(addr, false), "http://127.0.0.1:8443");
    }
}
