//! The listener: HTTPS with rustls (protocol versions, cipher suites, ALPN,
//! client certificates), certificate reload on SIGHUP, the plain-HTTP guard,
//! slow clients, the connection limit and graceful shutdown.
//!
//! Most tests run the real binary on 127.0.0.1 with a config from
//! `write_config` and no workflows (it starts at once). The ones about what
//! a request carries (`Peer`), the connection limit and shutdown run
//! `resetgate::listen::serve` in-process with a small router.
//! Refusals of old protocols and weak suites use `openssl s_client` (rustls
//! cannot speak TLS 1.1); `.ci/run` installs it.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use resetgate::listen::{ConnectionLimits, Options, Peer, Tls};
use resetgate_tests::pki::{Pki, get_healthz};
use resetgate_tests::{Gateway, write_config};

/// A gateway serving HTTPS with `pki`'s server certificate; `body` adds
/// config lines.
fn https_gateway(pki: &Pki, client_auth: Option<&str>, body: &str) -> (Gateway, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &format!("{}{body}", pki.tls_yaml(client_auth)));
    let gw = Gateway::start_config(&config, &[]);
    assert!(gw.is_tls());
    assert_eq!(gw.base_url(), format!("https://{}", gw.addr));
    (gw, dir)
}

/// `openssl s_client` to `addr` with `args`, stdin closed: (exit ok, output).
fn s_client(addr: SocketAddr, args: &[&str]) -> (bool, String) {
    let out = Command::new("openssl")
        .args(["s_client", "-connect", &addr.to_string()])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("openssl is missing: .ci/run installs it");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Reads until the server closes; Ok(what it sent) or Err if it did not
/// close within `limit`.
fn read_until_closed(s: &mut TcpStream, limit: Duration) -> Result<String, String> {
    s.set_read_timeout(Some(limit)).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return Ok(String::from_utf8_lossy(&got).into_owned()),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => {
                return Ok(String::from_utf8_lossy(&got).into_owned());
            }
            Err(e) => {
                return Err(format!(
                    "still open ({e}); read {:?}",
                    String::from_utf8_lossy(&got)
                ));
            }
        }
    }
}

#[test]
fn https_serves_over_tls_1_3_and_1_2() {
    let pki = Pki::new();
    let (gw, _dir) = https_gateway(&pki, None, "");
    let p = pki
        .probe(gw.addr, Some(&rustls::version::TLS13), None)
        .unwrap();
    assert_eq!((p.version.as_str(), p.status), ("TLSv1_3", 200), "{p:?}");
    assert_eq!(p.server_cert_sha256, pki.server_cert_sha256());
    let p = pki
        .probe(gw.addr, Some(&rustls::version::TLS12), None)
        .unwrap();
    assert_eq!((p.version.as_str(), p.status), ("TLSv1_2", 200), "{p:?}");
    assert!(
        p.cipher_suite.starts_with("TLS_ECDHE_") && !p.cipher_suite.contains("CBC"),
        "{p:?}"
    );
    // The ureq helper the API tests use.
    let response = pki
        .client(false)
        .get(format!("{}/healthz", gw.base_url()))
        .call()
        .unwrap();
    assert_eq!(response.status(), 200);
    // ALPN offers h2 (and http/1.1).
    let (ok, out) = s_client(gw.addr, &["-alpn", "h2,http/1.1"]);
    assert!(ok, "{out}");
    assert!(out.contains("ALPN protocol: h2"), "{out}");
    assert!(gw.stop(), "gateway did not exit cleanly");
}

#[test]
fn tls_1_1_and_weak_suites_are_refused() {
    let pki = Pki::new();
    let (gw, _dir) = https_gateway(&pki, None, "");
    // The tool works: a TLS 1.2 AEAD handshake succeeds.
    let (ok, out) = s_client(gw.addr, &["-tls1_2"]);
    assert!(ok, "{out}");
    assert!(out.contains("Cipher is ECDHE-ECDSA-"), "{out}");
    // TLS 1.1 (OpenSSL 3 needs security level 0 to offer it at all): the
    // client hello goes out and the server answers with an alert.
    let (ok, out) = s_client(gw.addr, &["-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0"]);
    assert!(!ok, "{out}");
    assert!(out.contains("SSL alert number"), "{out}");
    assert!(
        !out.contains("Protocol  : TLSv1.1\n    Cipher    : E"),
        "{out}"
    );
    // TLS 1.2 with CBC (non-AEAD) suites the server's ECDSA key could use.
    let (ok, out) = s_client(
        gw.addr,
        &[
            "-tls1_2",
            "-cipher",
            "ECDHE-ECDSA-AES128-SHA256:ECDHE-ECDSA-AES256-SHA384:ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA",
        ],
    );
    assert!(!ok, "{out}");
    assert!(out.contains("SSL alert number"), "{out}");
    // TLS 1.2 without forward secrecy (static RSA key exchange).
    let (ok, out) = s_client(gw.addr, &["-tls1_2", "-cipher", "AES128-GCM-SHA256"]);
    assert!(!ok, "{out}");
}

#[test]
fn plain_http_needs_loopback_or_allow_plain_http() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "listen: \"0.0.0.0:0\"\n");
    let err = Gateway::try_start_config(&config, &[])
        .map(|_| ())
        .unwrap_err();
    assert!(
        err.contains("refusing to serve plain HTTP on 0.0.0.0:0"),
        "{err}"
    );
    assert!(err.contains("`tls: { cert: FILE, key: FILE }`"), "{err}");
    assert!(err.contains("`allow_plain_http: true`"), "{err}");
    // `--listen` overrides the config, and is checked the same way.
    let config = write_config(dir.path(), "");
    let err = Gateway::try_start_config(&config, &["--listen", "[::]:0"])
        .map(|_| ())
        .unwrap_err();
    assert!(err.contains("refusing to serve plain HTTP"), "{err}");
    // Loopback is fine, and so is any address with allow_plain_http.
    let gw = Gateway::start_config(&config, &[]);
    assert!(!gw.is_tls());
    assert_eq!(gw.base_url(), format!("http://{}", gw.addr));
    assert_eq!(gw.get("/healthz").0, 200);
    drop(gw);
    let config = write_config(
        dir.path(),
        "listen: \"0.0.0.0:0\"\nallow_plain_http: true\n",
    );
    let gw = Gateway::start_config(&config, &[]);
    assert!(gw.addr.ip().is_unspecified(), "{}", gw.addr);
}

#[test]
fn unreadable_tls_files_stop_the_start_with_their_path() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.pem");
    let config = write_config(
        dir.path(),
        &format!("tls: {{ cert: {missing:?}, key: {:?} }}\n", pki.key_file()),
    );
    let err = Gateway::try_start_config(&config, &[])
        .map(|_| ())
        .unwrap_err();
    assert!(
        err.contains(&format!(
            "cannot read the TLS certificate {}",
            missing.display()
        )),
        "{err}"
    );
    // A key that is not the certificate's.
    let other = Pki::new();
    let config = write_config(
        dir.path(),
        &format!(
            "tls: {{ cert: {:?}, key: {:?} }}\n",
            pki.cert_file(),
            other.key_file()
        ),
    );
    let err = Gateway::try_start_config(&config, &[])
        .map(|_| ())
        .unwrap_err();
    assert!(
        err.contains(&format!(
            "the TLS private key {} does not belong to the certificate {}",
            other.key_file().display(),
            pki.cert_file().display()
        )),
        "{err}"
    );
    // A key file that holds no key.
    let config = write_config(
        dir.path(),
        &format!(
            "tls: {{ cert: {:?}, key: {:?} }}\n",
            pki.cert_file(),
            pki.cert_file()
        ),
    );
    let err = Gateway::try_start_config(&config, &[])
        .map(|_| ())
        .unwrap_err();
    assert!(
        err.contains(&format!(
            "the TLS private key {} holds no unencrypted private key",
            pki.cert_file().display()
        )),
        "{err}"
    );
}

#[test]
fn sighup_reloads_the_certificate_and_keeps_it_when_the_new_one_is_broken() {
    let pki = Pki::new();
    let (gw, _dir) = https_gateway(&pki, None, "");
    let first = pki.server_cert_sha256();
    let mut open = pki.connect(gw.addr, None, None).unwrap();
    assert_eq!(
        pki.probe(gw.addr, None, None).unwrap().server_cert_sha256,
        first
    );

    // A new certificate: new connections get it, open ones keep theirs.
    let second = pki.renew_server_cert();
    assert_ne!(first, second);
    gw.signal("HUP");
    gw.wait_for_log(&format!("sha256={second}"));
    assert_eq!(
        pki.probe(gw.addr, None, None).unwrap().server_cert_sha256,
        second
    );
    assert_eq!(
        resetgate_tests::pki::Probe::of(&open.conn).server_cert_sha256,
        first
    );
    assert_eq!(get_healthz(&mut open, gw.addr), Ok(200));

    // A broken certificate file: refused, logged, the second one serves.
    std::fs::write(pki.cert_file(), "-----BEGIN CERTIFICATE-----\nbroken\n").unwrap();
    gw.signal("HUP");
    let logs = gw.wait_for_log("TLS reload refused");
    assert!(
        logs.contains(&format!(
            "TLS reload refused: the TLS certificate {} is not valid PEM",
            pki.cert_file().display()
        )),
        "{logs}"
    );
    assert!(
        logs.contains("the certificate loaded before keeps serving"),
        "{logs}"
    );
    // The config file goes in whole or not at all: with its TLS files
    // broken, none of it is applied.
    let logs = gw.wait_for_log("gateway config reload refused: its TLS files cannot be loaded");
    assert!(
        logs.contains("the config loaded before stays in force"),
        "{logs}"
    );
    assert_eq!(
        pki.probe(gw.addr, None, None).unwrap().server_cert_sha256,
        second
    );

    // A certificate whose key was not replaced with it: refused too.
    let key = std::fs::read(pki.key_file()).unwrap();
    pki.renew_server_cert();
    std::fs::write(pki.key_file(), &key).unwrap();
    gw.signal("HUP");
    let logs = gw.wait_for_log("does not belong to the certificate");
    assert_eq!(
        pki.probe(gw.addr, None, None).unwrap().server_cert_sha256,
        second
    );

    // Keys never reach the log.
    let key = String::from_utf8(key).unwrap();
    for line in key.lines().filter(|l| !l.starts_with("-----")) {
        assert!(!logs.contains(line), "key material in the log:\n{logs}");
    }
    assert!(!logs.contains("PRIVATE KEY-----"), "{logs}");
}

#[test]
fn required_client_certificates() {
    let pki = Pki::new();
    let (gw, _dir) = https_gateway(&pki, Some("required"), "");
    // No certificate: refused (TLS 1.3 shows it on the first read).
    assert!(
        pki.probe(gw.addr, Some(&rustls::version::TLS13), None)
            .is_err()
    );
    assert!(
        pki.probe(gw.addr, Some(&rustls::version::TLS12), None)
            .is_err()
    );
    assert!(
        pki.client(false)
            .get(format!("{}/healthz", gw.base_url()))
            .call()
            .is_err()
    );
    // A certificate from another CA: refused.
    let stranger = Pki::new();
    assert!(pki.probe(gw.addr, None, Some(&stranger)).is_err());
    // The CA's client certificate: served, over both versions.
    for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
        let p = pki.probe(gw.addr, Some(version), Some(&pki)).unwrap();
        assert_eq!(p.status, 200, "{p:?}");
    }
    let response = pki
        .client(true)
        .get(format!("{}/healthz", gw.base_url()))
        .call()
        .unwrap();
    assert_eq!(response.status(), 200);
}

#[test]
fn optional_client_certificates() {
    let pki = Pki::new();
    let (gw, _dir) = https_gateway(&pki, Some("optional"), "");
    assert_eq!(pki.probe(gw.addr, None, None).unwrap().status, 200);
    assert_eq!(pki.probe(gw.addr, None, Some(&pki)).unwrap().status, 200);
    // A presented certificate must still chain to the CA.
    let stranger = Pki::new();
    assert!(pki.probe(gw.addr, None, Some(&stranger)).is_err());
}

#[test]
fn slow_clients_are_disconnected() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        "connections: { header_timeout: 1s, handshake_timeout: 1s }\n",
    );
    let gw = Gateway::start_config(&config, &[]);
    // The defaults (10s header and handshake timeouts, 60s idle) are well
    // above `LIMIT`: a close within it is the configured timeout's doing.
    const LIMIT: Duration = Duration::from_secs(8);
    // Half a request line, then nothing: closed (hyper sends no answer).
    let mut s = TcpStream::connect(gw.addr).unwrap();
    s.write_all(b"GET /heal").unwrap();
    let got = read_until_closed(&mut s, LIMIT).unwrap();
    assert!(got.is_empty(), "{got}");
    // A keep-alive connection that sends nothing after its first request.
    let mut s = TcpStream::connect(gw.addr).unwrap();
    write!(s, "GET /healthz HTTP/1.1\r\nHost: {}\r\n\r\n", gw.addr).unwrap();
    let got = read_until_closed(&mut s, LIMIT).unwrap();
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");
    drop(gw);

    // The idle timeout closes a keep-alive connection even when the header
    // timeout is long.
    let config = write_config(
        dir.path(),
        "connections: { header_timeout: 1m, idle_timeout: 1s }\n",
    );
    let gw = Gateway::start_config(&config, &[]);
    let mut s = TcpStream::connect(gw.addr).unwrap();
    write!(s, "GET /healthz HTTP/1.1\r\nHost: {}\r\n\r\n", gw.addr).unwrap();
    let got = read_until_closed(&mut s, LIMIT).unwrap();
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");
    drop(gw);

    // TLS: a client that connects and never says hello.
    let (gw, _dir) = https_gateway(&pki, None, "connections: { handshake_timeout: 1s }\n");
    let mut s = TcpStream::connect(gw.addr).unwrap();
    let got = read_until_closed(&mut s, LIMIT).unwrap();
    assert!(got.is_empty(), "{got}");
    // The gateway still serves.
    assert_eq!(pki.probe(gw.addr, None, None).unwrap().status, 200);
}

#[test]
fn a_running_request_is_not_idle() {
    // /slow takes 700 ms without a byte moving; the idle timeout is shorter.
    let limits = ConnectionLimits {
        idle_timeout: Duration::from_millis(300),
        ..ConnectionLimits::default()
    };
    let server = InProcess::start(None, limits);
    let mut s = TcpStream::connect(server.addr).unwrap();
    write!(s, "GET /slow HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let got = read_until_closed(&mut s, Duration::from_secs(8)).unwrap();
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");
    assert!(got.ends_with("slow done"), "{got}");
}

/// The listener in-process, with a router that shows the request's `Peer`.
struct InProcess {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    done: std::sync::mpsc::Receiver<()>,
    _runtime: tokio::runtime::Runtime,
}

impl InProcess {
    fn start(tls: Option<Tls>, limits: ConnectionLimits) -> InProcess {
        use axum::routing::get;
        async fn whoami(
            axum::Extension(peer): axum::Extension<Peer>,
            axum::extract::ConnectInfo(addr): axum::extract::ConnectInfo<SocketAddr>,
        ) -> String {
            let tls = peer.tls.as_deref();
            let cert = peer.client_certificate();
            serde_json::json!({
                "addr": peer.addr.to_string(),
                "connect_info": addr.to_string(),
                "version": tls.map(|t| t.version.clone()),
                "cipher_suite": tls.map(|t| t.cipher_suite.clone()),
                "alpn": tls.and_then(|t| t.alpn.clone()),
                "subject": cert.map(|c| c.subject.clone()),
                "common_name": cert.and_then(|c| c.common_name.clone()),
                "sha256": cert.map(|c| c.sha256.clone()),
            })
            .to_string()
        }
        async fn slow() -> &'static str {
            tokio::time::sleep(Duration::from_millis(700)).await;
            "slow done"
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new()
            .route("/whoami", get(whoami))
            .route("/slow", get(slow))
            .route("/healthz", get(|| async { "ok\n" }));
        let options = Options {
            tls: tls.map(Arc::new),
            limits,
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (done_tx, done) = std::sync::mpsc::channel();
        runtime.spawn(async move {
            let shutdown = async move {
                let _ = stopped.await;
            };
            resetgate::listen::serve(listener, app, options, shutdown)
                .await
                .unwrap();
            let _ = done_tx.send(());
        });
        InProcess {
            addr,
            stop: Some(stop),
            done,
            _runtime: runtime,
        }
    }

    fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

fn tls_settings(pki: &Pki, client_auth: Option<bool>) -> Tls {
    Tls::load(resetgate::config::TlsSettings {
        cert: pki.cert_file(),
        key: pki.key_file(),
        client_auth: client_auth.map(|required| resetgate::config::ClientAuth {
            ca: pki.ca_file(),
            required,
        }),
    })
    .unwrap()
}

#[test]
fn requests_carry_the_peer_and_its_client_certificate() {
    let pki = Pki::new();
    let server = InProcess::start(
        Some(tls_settings(&pki, Some(false))),
        ConnectionLimits::default(),
    );
    let url = format!("https://{}/whoami", server.addr);
    let whoami = |with_cert: bool| -> serde_json::Value {
        let body = pki
            .client(with_cert)
            .get(&url)
            .call()
            .unwrap()
            .into_body()
            .read_to_string()
            .unwrap();
        serde_json::from_str(&body).unwrap()
    };
    let v = whoami(true);
    assert_eq!(v["addr"], v["connect_info"], "{v}");
    assert!(v["addr"].as_str().unwrap().starts_with("127.0.0.1:"), "{v}");
    assert_eq!(v["version"], "TLSv1.3", "{v}");
    // ureq offers no ALPN; the rustls probe offers http/1.1, openssl h2.
    assert!(v["alpn"].is_null() || v["alpn"] == "http/1.1", "{v}");
    assert_eq!(v["subject"], "CN=test-portal,O=resetgate tests", "{v}");
    // OpenSSL reads the subject the same way.
    let out = Command::new("openssl")
        .args(["x509", "-noout", "-subject", "-nameopt", "RFC2253", "-in"])
        .arg(pki.client_cert_file())
        .output()
        .unwrap();
    let openssl = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        openssl.trim(),
        format!("subject={}", v["subject"].as_str().unwrap())
    );
    assert_eq!(v["common_name"], "test-portal", "{v}");
    assert_eq!(v["sha256"], pki.client_cert_sha256().as_str(), "{v}");
    let v = whoami(false);
    assert_eq!(v["version"], "TLSv1.3", "{v}");
    assert!(v["subject"].is_null(), "{v}");

    // Plain HTTP: the address, no TLS.
    let plain = InProcess::start(None, ConnectionLimits::default());
    let mut s = TcpStream::connect(plain.addr).unwrap();
    write!(
        s,
        "GET /whoami HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let got = read_until_closed(&mut s, Duration::from_secs(10)).unwrap();
    let body = got.split_once("\r\n\r\n").unwrap().1;
    let v: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(v["addr"], s.local_addr().unwrap().to_string(), "{v}");
    assert!(v["version"].is_null(), "{v}");
}

#[test]
fn connections_beyond_the_limit_wait_for_a_free_slot() {
    let limits = ConnectionLimits {
        max: 1,
        ..ConnectionLimits::default()
    };
    let server = InProcess::start(None, limits);
    // The one slot, held by a client that has sent half a request.
    let mut first = TcpStream::connect(server.addr).unwrap();
    first.write_all(b"GET /healthz HTTP/1.1\r\n").unwrap();
    std::thread::sleep(Duration::from_millis(100));
    // A second client is not served while the slot is taken...
    let mut second = TcpStream::connect(server.addr).unwrap();
    write!(
        second,
        "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    second
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut buf = [0u8; 64];
    let waited = second.read(&mut buf);
    assert!(
        matches!(&waited, Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)),
        "{waited:?}"
    );
    // ...and is served once the first leaves.
    drop(first);
    let got = read_until_closed(&mut second, Duration::from_secs(10)).unwrap();
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");
}

#[test]
fn shutdown_lets_requests_under_way_finish() {
    let mut server = InProcess::start(None, ConnectionLimits::default());
    let addr = server.addr;
    let request = std::thread::spawn(move || {
        let mut s = TcpStream::connect(addr).unwrap();
        write!(s, "GET /slow HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        read_until_closed(&mut s, Duration::from_secs(10))
    });
    // An idle keep-alive connection does not hold the shutdown up.
    let mut idle = TcpStream::connect(addr).unwrap();
    write!(idle, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut buf = [0u8; 256];
    idle.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    assert!(idle.read(&mut buf).unwrap() > 0);
    std::thread::sleep(Duration::from_millis(200));
    let asked = Instant::now();
    server.shutdown();
    let got = request.join().unwrap().unwrap();
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");
    assert!(got.ends_with("slow done"), "{got}");
    server.done.recv_timeout(Duration::from_secs(10)).unwrap();
    assert!(read_until_closed(&mut idle, Duration::from_secs(5)).is_ok());
    // Stopped: nothing listens any more.
    assert!(TcpStream::connect(addr).is_err());
    assert!(asked.elapsed() < Duration::from_secs(10));
}
