//! Slow and greedy clients against the real binary on a loopback port:
//! HTTP/2 clients that dribble the preface or a header block a byte at a
//! time are closed by `connections.header_timeout` (at the start of a
//! connection and on one that has served a request), while a normal client
//! is served; and one client address cannot hold more than
//! `connections.max_per_ip` connections.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use resetgate_tests::{Gateway, write_config};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// An empty SETTINGS frame, and the acknowledgement of the server's.
const SETTINGS: [u8; 9] = [0, 0, 0, 0x4, 0, 0, 0, 0, 0];
const SETTINGS_ACK: [u8; 9] = [0, 0, 0, 0x4, 0x1, 0, 0, 0, 0];

/// A frame header: length, type, flags, stream.
fn frame_header(length: usize, kind: u8, flags: u8, stream: u32) -> Vec<u8> {
    let mut h = vec![
        (length >> 16) as u8,
        (length >> 8) as u8,
        length as u8,
        kind,
        flags,
    ];
    h.extend_from_slice(&stream.to_be_bytes());
    h
}

/// A HEADERS frame (END_HEADERS | END_STREAM) header announcing a 16 KiB
/// header block, then its payload: never finished at a byte per tick.
fn big_headers(stream: u32) -> Vec<u8> {
    let mut bytes = frame_header(16_384, 0x1, 0x5, stream);
    bytes.extend(std::iter::repeat_n(0x82u8, 16_384));
    bytes
}

/// `GET /healthz` on `stream` as one HEADERS frame, HPACK without Huffman
/// coding: `:method GET`, `:scheme http`, `:path /healthz`, `:authority`.
fn get_healthz(stream: u32, authority: &str) -> Vec<u8> {
    let mut block = vec![0x82, 0x86, 0x44, 8];
    block.extend_from_slice(b"/healthz");
    block.push(0x41);
    block.push(authority.len() as u8);
    block.extend_from_slice(authority.as_bytes());
    let mut frame = frame_header(block.len(), 0x1, 0x5, stream);
    frame.extend(block);
    frame
}

/// Reads frames until a HEADERS frame on `stream` arrives; returns its
/// header block.
fn read_response_headers(s: &mut TcpStream, stream: u32) -> Vec<u8> {
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    loop {
        let mut header = [0u8; 9];
        s.read_exact(&mut header).unwrap();
        let length =
            usize::from(header[0]) << 16 | usize::from(header[1]) << 8 | usize::from(header[2]);
        let mut payload = vec![0u8; length];
        s.read_exact(&mut payload).unwrap();
        let id = u32::from_be_bytes([header[5], header[6], header[7], header[8]]) & 0x7fff_ffff;
        if header[3] == 0x1 && id == stream {
            return payload;
        }
    }
}

/// A client that writes `bytes` one per tick and notices when the server
/// closes its connection.
struct Dribbler {
    stream: TcpStream,
    bytes: Vec<u8>,
    sent: usize,
    /// When it connected, or (on a connection that was served a request)
    /// began to dribble.
    born: Instant,
    /// How long after `born` the server closed the connection.
    closed: Option<Duration>,
}

impl Dribbler {
    fn new(stream: TcpStream, bytes: Vec<u8>) -> Dribbler {
        stream.set_nonblocking(true).unwrap();
        Dribbler {
            stream,
            bytes,
            sent: 0,
            born: Instant::now(),
            closed: None,
        }
    }

    /// Sends the next byte, then checks whether the server closed.
    fn tick(&mut self) {
        if self.closed.is_some() {
            return;
        }
        let mut gone = false;
        if self.sent < self.bytes.len() {
            match self.stream.write(&self.bytes[self.sent..=self.sent]) {
                Ok(n) => self.sent += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(_) => gone = true,
            }
        }
        let mut buf = [0u8; 4096];
        loop {
            match self.stream.read(&mut buf) {
                Ok(0) => {
                    gone = true;
                    break;
                }
                Ok(_) => {} // the server's SETTINGS and the like
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(_) => {
                    gone = true;
                    break;
                }
            }
        }
        if gone {
            self.closed = Some(self.born.elapsed());
        }
    }
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    s.set_nodelay(true).unwrap();
    s
}

/// `GET /healthz` over HTTP/1.1 from `s`; the status.
fn healthz_on(mut s: TcpStream, addr: SocketAddr) -> u16 {
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET /healthz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    let _ = s.read_to_string(&mut raw);
    raw.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

#[test]
fn dribbling_http2_clients_are_closed_by_the_header_timeout_while_others_are_served() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "connections: {header_timeout: 1s}\n");
    let gw = Gateway::start_config(&config, &[]);
    let addr = gw.addr;
    let authority = addr.to_string();

    let mut dribblers = Vec::new();
    // The preface a byte at a time (then SETTINGS and a header block).
    for _ in 0..20 {
        let mut bytes = PREFACE.to_vec();
        bytes.extend(SETTINGS);
        bytes.extend(big_headers(1));
        dribblers.push(("preface", Dribbler::new(connect(addr), bytes)));
    }
    // A valid preface and SETTINGS at once, then a HEADERS frame whose
    // payload comes a byte at a time.
    for _ in 0..20 {
        let mut s = connect(addr);
        let mut start = PREFACE.to_vec();
        start.extend(SETTINGS);
        let headers = big_headers(1);
        start.extend(&headers[..9]);
        s.write_all(&start).unwrap();
        dribblers.push(("headers", Dribbler::new(s, headers[9..].to_vec())));
    }
    // An HTTP/2 connection that has been served a request, then dribbles
    // the next request's header block.
    for _ in 0..10 {
        let mut s = connect(addr);
        let mut start = PREFACE.to_vec();
        start.extend(SETTINGS);
        start.extend(get_healthz(1, &authority));
        s.write_all(&start).unwrap();
        let block = read_response_headers(&mut s, 1);
        assert_eq!(block.first(), Some(&0x88), "not `:status 200`: {block:?}");
        s.write_all(&SETTINGS_ACK).unwrap();
        dribblers.push(("open", Dribbler::new(s, big_headers(3))));
    }

    let started = Instant::now();
    let mut served_in = Vec::new();
    while dribblers.iter().any(|(_, d)| d.closed.is_none())
        && started.elapsed() < Duration::from_secs(20)
    {
        for (_, d) in &mut dribblers {
            d.tick();
        }
        // A normal client while they dribble.
        if served_in.len() < 3 && started.elapsed() >= Duration::from_millis(300) {
            let t = Instant::now();
            let status = healthz_on(connect(addr), addr);
            served_in.push((status, t.elapsed()));
        }
        std::thread::sleep(Duration::from_millis(100));
    }

    let open: Vec<&str> = dribblers
        .iter()
        .filter(|(_, d)| d.closed.is_none())
        .map(|(kind, _)| *kind)
        .collect();
    assert!(
        open.is_empty(),
        "{} dribbling connections were still open after 20 s (header timeout 1 s): {open:?}",
        open.len()
    );
    for (kind, d) in &dribblers {
        let closed = d.closed.unwrap();
        // Not before the timeout (at a byte per 100 ms, about 10 bytes).
        assert!(
            closed >= Duration::from_millis(900),
            "a {kind} dribbler was closed after {closed:?}, before the 1 s timeout"
        );
    }
    for (status, took) in &served_in {
        assert_eq!(*status, 200);
        assert!(
            *took < Duration::from_secs(1),
            "a normal client waited {took:?} while others dribbled"
        );
    }
    assert_eq!(served_in.len(), 3);
}

/// A connection from `127.0.0.2`: another client address on loopback.
fn connect_from_second_address(addr: SocketAddr) -> TcpStream {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .unwrap();
    let stream = rt.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
        socket.connect(addr).await.unwrap()
    });
    let stream = stream.into_std().unwrap();
    stream.set_nonblocking(false).unwrap();
    stream
}

/// Whether the server closes `s` within `within` without an answer.
fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    s.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0u8; 64];
    match s.read(&mut buf) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => !matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
    }
}

#[test]
fn one_client_address_cannot_hold_more_than_max_per_ip_connections() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "connections: {max_per_ip: 4}\n");
    let gw = Gateway::start_config(&config, &[]);
    let addr = gw.addr;

    let mut held: Vec<TcpStream> = (0..4).map(|_| connect(addr)).collect();
    // Accepted connections are counted as the gateway accepts them: make
    // sure all four are in before the fifth.
    std::thread::sleep(Duration::from_millis(200));
    let started = Instant::now();
    let mut fifth = connect(addr);
    assert!(
        closed_within(&mut fifth, Duration::from_secs(5)),
        "the fifth connection from 127.0.0.1 was not closed at once"
    );
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(2),
        "the fifth connection was closed only after {took:?} (a timeout, not the limit)"
    );

    // Another address is served, and so are the four held connections.
    assert_eq!(healthz_on(connect_from_second_address(addr), addr), 200);
    let first = held.remove(0);
    assert_eq!(healthz_on(first, addr), 200);
    // With one of the four closed, 127.0.0.1 may connect again (once the
    // gateway has let go of it, which the client may notice first).
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(healthz_on(connect(addr), addr), 200);

    let logs = gw.wait_for_log("max_per_ip");
    assert!(
        logs.contains("WARN") && logs.contains("client=127.0.0.1") && logs.contains("limit=4"),
        "no warning about the refused connection:\n{logs}"
    );
    // From the other address: the held connections do not count there.
    let mut s = connect_from_second_address(addr);
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut metrics = String::new();
    s.read_to_string(&mut metrics).unwrap();
    assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
    assert!(
        metrics.contains("resetgate_connections_refused_total{reason=\"per-ip\"} 1\n"),
        "{metrics}"
    );
    drop(held);
}
