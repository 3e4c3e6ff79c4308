//! The listener: accepts TCP connections, does the TLS handshake when TLS is
//! configured, and serves the router over HTTP/1.1 or HTTP/2 (hyper-util's
//! auto builder), with every request carrying a [`Peer`].
//!
//! Slow and idle clients are cut off:
//! - the TLS handshake must finish within `connections.handshake_timeout`;
//! - an HTTP/1 request line and headers must arrive within
//!   `connections.header_timeout` (hyper closes without an answer); the same
//!   timer bounds how long a keep-alive connection waits for its next
//!   request;
//! - a connection with no request running and no bytes moving for
//!   `connections.idle_timeout` is closed gracefully (HTTP/2 gets a GOAWAY).
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

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
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
        let check = tokio::time::sleep(idle);
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
                    let quiet = activity.quiet_for();
                    if activity.running() == 0 && quiet >= idle {
                        tracing::debug!(peer = %self.addr, "closing an idle connection");
                        closing = true;
                        conn.as_mut().graceful_shutdown();
                        check.as_mut().reset(Instant::now() + self.limits.shutdown_timeout);
                    } else {
                        let wait = idle.saturating_sub(quiet).max(Duration::from_millis(100));
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

/// When a connection last moved bytes, and how many of its requests are
/// running: what decides that it is idle.
struct Activity {
    start: Instant,
    /// Milliseconds from `start` to the last read or write.
    last: AtomicU64,
    running: AtomicUsize,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            start: Instant::now(),
            last: AtomicU64::new(0),
            running: AtomicUsize::new(0),
        }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.store(ms, Ordering::Relaxed);
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
        Running(self.clone())
    }
}

/// A running request (see [`Activity::begin`]).
struct Running(Arc<Activity>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::Relaxed);
        self.0.touch();
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

    #[test]
    fn urls() {
        let addr: SocketAddr = "127.0.0.1:8443".parse().unwrap();
        assert_eq!(url(addr, true), "https://127.0.0.1:8443");
        assert_eq!(url(addr, false), "http://127.0.0.1:8443");
    }
}
