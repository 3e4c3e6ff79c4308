//! A throwaway PKI for TLS tests: a CA, a server certificate for
//! `127.0.0.1` and `localhost`, a client certificate, and clients that trust
//! the CA.
//!
//! ```ignore
//! let pki = Pki::new();
//! let dir = tempfile::tempdir().unwrap();
//! let config = write_config(dir.path(), &pki.tls_yaml(None));
//! let gw = Gateway::start_config(&config, &[]);
//! let agent = pki.client(false);
//! let body = agent.get(format!("{}/healthz", gw.base_url())).call().unwrap()
//!     .into_body().read_to_string().unwrap();
//! ```

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

/// A CA with a server and a client certificate, in a temporary folder.
pub struct Pki {
    dir: tempfile::TempDir,
    ca: CertifiedIssuer<'static, KeyPair>,
    client_cert_pem: String,
    client_key_pem: String,
}

impl Default for Pki {
    fn default() -> Self {
        Pki::new()
    }
}

impl Pki {
    /// A new CA (`CN=resetgate test CA`), a server certificate for
    /// `127.0.0.1` and `localhost` (files [`Pki::cert_file`] and
    /// [`Pki::key_file`]), and a client certificate
    /// (`CN=test-portal,O=resetgate tests`).
    pub fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "resetgate test CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
        let (client_cert_pem, client_key_pem) =
            issue(&ca, &[], "test-portal", ExtendedKeyUsagePurpose::ClientAuth);
        std::fs::write(dir.path().join("client.pem"), &client_cert_pem).unwrap();
        std::fs::write(dir.path().join("client.key"), &client_key_pem).unwrap();
        let pki = Pki {
            dir,
            ca,
            client_cert_pem,
            client_key_pem,
        };
        pki.renew_server_cert();
        pki
    }

    /// The folder holding the files.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The CA certificate (PEM file): the gateway's `tls.client_ca`.
    pub fn ca_file(&self) -> PathBuf {
        self.dir().join("ca.pem")
    }

    /// The server certificate (PEM file): the gateway's `tls.cert`.
    pub fn cert_file(&self) -> PathBuf {
        self.dir().join("server.pem")
    }

    /// The server key (PEM file): the gateway's `tls.key`.
    pub fn key_file(&self) -> PathBuf {
        self.dir().join("server.key")
    }

    /// The client certificate (PEM file, `CN=test-portal,O=resetgate tests`),
    /// e.g. for `openssl s_client -cert`.
    pub fn client_cert_file(&self) -> PathBuf {
        self.dir().join("client.pem")
    }

    /// The client certificate's key (PEM file).
    pub fn client_key_file(&self) -> PathBuf {
        self.dir().join("client.key")
    }

    /// Issues a new server certificate and key (same names, same CA) over
    /// the old files; returns the new certificate's sha256 (lowercase hex).
    pub fn renew_server_cert(&self) -> String {
        let (cert, key) = issue(
            &self.ca,
            &["127.0.0.1", "localhost"],
            "localhost",
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        std::fs::write(self.key_file(), key).unwrap();
        std::fs::write(self.cert_file(), cert).unwrap();
        self.server_cert_sha256()
    }

    /// sha256 of the server certificate now in [`Pki::cert_file`].
    pub fn server_cert_sha256(&self) -> String {
        let der = CertificateDer::from_pem_file(self.cert_file()).unwrap();
        sha256(&der)
    }

    /// The gateway config's `tls:` block for these files (a line of YAML
    /// for [`crate::write_config`]). `client_auth`: `None` asks for no
    /// client certificate; `Some("optional")` / `Some("required")` sets
    /// `client_ca` to this CA and `client_auth` to that value.
    pub fn tls_yaml(&self, client_auth: Option<&str>) -> String {
        let mut tls = format!(
            "tls: {{ cert: {:?}, key: {:?}",
            self.cert_file(),
            self.key_file()
        );
        if let Some(mode) = client_auth {
            tls.push_str(&format!(
                ", client_ca: {:?}, client_auth: {mode}",
                self.ca_file()
            ));
        }
        tls.push_str(" }\n");
        tls
    }

    /// An HTTPS client (ureq, rustls with ring) that trusts only this CA and,
    /// with `with_client_cert`, presents the client certificate. HTTP error
    /// statuses are answers, not errors (`http_status_as_error(false)`);
    /// every call times out after 10 s.
    pub fn client(&self, with_client_cert: bool) -> ureq::Agent {
        use ureq::tls::{Certificate, ClientCert, PrivateKey, RootCerts, TlsConfig};
        let ca = Certificate::from_pem(self.ca.pem().as_bytes()).unwrap();
        let mut tls = TlsConfig::builder().root_certs(RootCerts::new_with_certs(&[ca]));
        if with_client_cert {
            let cert = Certificate::from_pem(self.client_cert_pem.as_bytes()).unwrap();
            let key = PrivateKey::from_pem(self.client_key_pem.as_bytes()).unwrap();
            tls = tls.client_cert(Some(ClientCert::new_with_certs(&[cert], key)));
        }
        ureq::Agent::config_builder()
            .tls_config(tls.build())
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(10)))
            .build()
            .new_agent()
    }

    /// sha256 of the client certificate [`Pki::client`] presents.
    pub fn client_cert_sha256(&self) -> String {
        sha256(&CertificateDer::from_pem_slice(self.client_cert_pem.as_bytes()).unwrap())
    }

    /// A TLS connection to `addr` (handshake done) with a rustls client that
    /// trusts this CA, speaks only `version` (`None`: TLS 1.2 and 1.3) and
    /// ALPN `http/1.1`, presenting the client certificate of
    /// `client_cert_from` if given (this PKI or another). Err: why the
    /// handshake failed. With TLS 1.3 a server refuses a client certificate
    /// only after the client's handshake is done: the refusal shows on the
    /// first read.
    pub fn connect(
        &self,
        addr: SocketAddr,
        version: Option<&'static rustls::SupportedProtocolVersion>,
        client_cert_from: Option<&Pki>,
    ) -> Result<rustls::StreamOwned<rustls::ClientConnection, TcpStream>, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let versions = match version {
            Some(v) => vec![v],
            None => vec![&rustls::version::TLS13, &rustls::version::TLS12],
        };
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca.der().clone()).unwrap();
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&versions)
            .unwrap()
            .with_root_certificates(roots);
        let mut config = match client_cert_from {
            None => builder.with_no_client_auth(),
            Some(p) => builder
                .with_client_auth_cert(
                    vec![CertificateDer::from_pem_slice(p.client_cert_pem.as_bytes()).unwrap()],
                    PrivateKeyDer::from_pem_slice(p.client_key_pem.as_bytes()).unwrap(),
                )
                .unwrap(),
        };
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let name = ServerName::try_from(addr.ip().to_string()).unwrap();
        let mut conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
        let mut sock = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        while conn.is_handshaking() {
            conn.complete_io(&mut sock)
                .map_err(|e| format!("handshake: {e}"))?;
        }
        Ok(rustls::StreamOwned::new(conn, sock))
    }

    /// [`Pki::connect`], then `GET /healthz` over HTTP/1.1: what the client
    /// saw. Err: what failed.
    pub fn probe(
        &self,
        addr: SocketAddr,
        version: Option<&'static rustls::SupportedProtocolVersion>,
        client_cert_from: Option<&Pki>,
    ) -> Result<Probe, String> {
        let mut tls = self.connect(addr, version, client_cert_from)?;
        let mut probe = Probe::of(&tls.conn);
        probe.status = get_healthz(&mut tls, addr)?;
        Ok(probe)
    }
}

impl Probe {
    /// The session `conn` negotiated (`status` 0).
    pub fn of(conn: &rustls::ClientConnection) -> Probe {
        Probe {
            version: format!("{:?}", conn.protocol_version().unwrap()),
            cipher_suite: format!("{:?}", conn.negotiated_cipher_suite().unwrap().suite()),
            server_cert_sha256: conn
                .peer_certificates()
                .and_then(|c| c.first())
                .map(|c| sha256(c))
                .unwrap_or_default(),
            status: 0,
        }
    }
}

/// `GET /healthz` (with `Connection: close`) over `stream`; the status.
pub fn get_healthz(stream: &mut (impl Read + Write), addr: SocketAddr) -> Result<u16, String> {
    write!(
        stream,
        "GET /healthz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| format!("write: {e}"))?;
    let mut raw = Vec::new();
    match stream.read_to_end(&mut raw) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !raw.is_empty() => {}
        Err(e) => return Err(format!("read: {e}")),
    }
    let response = String::from_utf8_lossy(&raw);
    Ok(response
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0))
}

/// What [`Pki::probe`] saw.
#[derive(Debug)]
pub struct Probe {
    /// `TLSv1_3` or `TLSv1_2`.
    pub version: String,
    /// e.g. `TLS13_AES_256_GCM_SHA384`.
    pub cipher_suite: String,
    /// sha256 of the certificate the server presented.
    pub server_cert_sha256: String,
    /// The status of `GET /healthz`.
    pub status: u16,
}

/// sha256 of `bytes`, lowercase hex.
pub fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// A certificate for `sans` with `CN=cn`, signed by `ca`: (cert PEM, key PEM).
fn issue(
    ca: &CertifiedIssuer<'static, KeyPair>,
    sans: &[&str],
    cn: &str,
    usage: ExtendedKeyUsagePurpose,
) -> (String, String) {
    let sans: Vec<String> = sans.iter().map(|s| (*s).to_owned()).collect();
    let mut params = CertificateParams::new(sans).unwrap();
    // Most general first, as CAs write them: RFC 4514 shows it reversed.
    // (The default name holds a placeholder CN that would come first.)
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::OrganizationName, "resetgate tests");
    params.distinguished_name.push(DnType::CommonName, cn);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![usage];
    params.use_authority_key_identifier_extension = true;
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, ca).unwrap();
    (cert.pem(), key.serialize_pem())
}
