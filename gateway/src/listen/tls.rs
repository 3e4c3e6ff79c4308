//! The server's TLS settings: which protocol versions and cipher suites,
//! the certificate and key, the client CA — read from files at start and
//! re-read on demand (`SIGHUP`), swapped in whole for new connections.

use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};

use rustls::crypto::CryptoProvider;
use rustls::crypto::ring::{self, cipher_suite as suite};
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use zeroize::Zeroizing;

use super::peer::{CertFields, sha256_hex};
use crate::config::TlsSettings;

/// Why the TLS settings could not be loaded. Messages name the file; none
/// ever contains key material.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read the TLS {what} {}: {source}", path.display())]
    Read {
        /// `certificate`, `private key` or `client CA`.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A file holds no PEM section of the kind expected.
    #[error("the TLS {what} {} holds no {expected}", path.display())]
    Missing {
        /// `certificate`, `private key` or `client CA`.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What it should hold.
        expected: &'static str,
    },
    /// A file is not valid PEM.
    #[error("the TLS {what} {} is not valid PEM{detail}", path.display())]
    BadPem {
        /// `certificate`, `private key` or `client CA`.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// `: ` and the parser's reason, empty for key files.
        detail: String,
    },
    /// The private key is not the certificate's.
    #[error("the TLS private key {} does not belong to the certificate {}", key.display(), cert.display())]
    KeyMismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// The key or certificate cannot be used (unsupported algorithm, ...).
    #[error("cannot serve TLS with the certificate {} and the private key {}: {reason}", cert.display(), key.display())]
    Unusable {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// rustls's reason.
        reason: String,
    },
    /// A client CA certificate cannot be used as a trust anchor.
    #[error("the TLS client CA {} cannot be used: {reason}", path.display())]
    BadCa {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

/// The certificate being served, for logs: never the key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertSummary {
    /// The subject, RFC 4514.
    pub subject: String,
    /// sha256 of the end-entity certificate (DER), lowercase hex.
    pub sha256: String,
    /// End of validity, `YYYY-MM-DDTHH:MM:SSZ`, if it could be read.
    pub not_after: Option<String>,
}

/// The server's TLS configuration, reloadable. A connection takes the
/// configuration current when it is accepted, so a reload affects new
/// connections only.
pub struct Tls {
    settings: RwLock<TlsSettings>,
    current: RwLock<(Arc<ServerConfig>, CertSummary)>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("settings", &self.settings())
            .field("certificate", &self.certificate())
            .finish_non_exhaustive()
    }
}

/// TLS files read and checked by [`Tls::prepare`], not yet served.
pub struct PreparedTls {
    settings: TlsSettings,
    config: Arc<ServerConfig>,
    summary: CertSummary,
}

impl Tls {
    /// Reads the certificate, key and client CA named by `settings`.
    pub fn load(settings: TlsSettings) -> Result<Tls, TlsError> {
        let current = build(&settings)?;
        Ok(Tls {
            settings: RwLock::new(settings),
            current: RwLock::new(current),
        })
    }

    /// Re-reads the files. On error nothing changes: the configuration
    /// loaded before keeps serving.
    pub fn reload(&self) -> Result<CertSummary, TlsError> {
        self.reload_with(&self.settings())
    }

    /// Reads the files `settings` names (a reloaded gateway config may name
    /// others, or another client CA) and serves them from now on. On error
    /// nothing changes: the settings and configuration loaded before stay.
    pub fn reload_with(&self, settings: &TlsSettings) -> Result<CertSummary, TlsError> {
        let prepared = Tls::prepare(settings)?;
        Ok(self.install(prepared))
    }

    /// Reads the files `settings` names, without serving them yet (a
    /// reload checks every part of a new config before it applies any).
    pub fn prepare(settings: &TlsSettings) -> Result<PreparedTls, TlsError> {
        let (config, summary) = build(settings)?;
        Ok(PreparedTls {
            settings: settings.clone(),
            config,
            summary,
        })
    }

    /// Serves what [`Tls::prepare`] read from now on.
    pub fn install(&self, prepared: PreparedTls) -> CertSummary {
        let PreparedTls {
            settings,
            config,
            summary,
        } = prepared;
        let mut current = self.current.write().unwrap_or_else(PoisonError::into_inner);
        *self
            .settings
            .write()
            .unwrap_or_else(PoisonError::into_inner) = settings;
        *current = (config, summary.clone());
        summary
    }

    /// The settings in force.
    pub fn settings(&self) -> TlsSettings {
        self.settings
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The certificate being served.
    pub fn certificate(&self) -> CertSummary {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .1
            .clone()
    }

    /// Whether clients are asked for a certificate.
    pub fn asks_client_certificates(&self) -> bool {
        self.settings
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .client_auth
            .is_some()
    }

    /// The configuration for a new connection.
    pub(crate) fn server_config(&self) -> Arc<ServerConfig> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .0
            .clone()
    }
}

/// rustls with `ring`, restricted to forward-secret AEAD suites. TLS 1.3
/// suites all are; the TLS 1.2 ones listed are the ECDHE + AES-GCM /
/// ChaCha20-Poly1305 suites. Key exchange: X25519, P-256, P-384.
pub fn provider() -> CryptoProvider {
    CryptoProvider {
        cipher_suites: vec![
            suite::TLS13_AES_256_GCM_SHA384,
            suite::TLS13_AES_128_GCM_SHA256,
            suite::TLS13_CHACHA20_POLY1305_SHA256,
            suite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
            suite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
            suite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
            suite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
            suite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
            suite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
        ],
        kx_groups: vec![
            ring::kx_group::X25519,
            ring::kx_group::SECP256R1,
            ring::kx_group::SECP384R1,
        ],
        ..ring::default_provider()
    }
}

fn build(settings: &TlsSettings) -> Result<(Arc<ServerConfig>, CertSummary), TlsError> {
    let certs = read_certs("certificate", &settings.cert)?;
    let key = read_key(&settings.key)?;
    let provider = Arc::new(provider());
    let unusable = |e: rustls::Error| TlsError::Unusable {
        cert: settings.cert.clone(),
        key: settings.key.clone(),
        reason: e.to_string(),
    };
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(unusable)?;
    let builder = match &settings.client_auth {
        None => builder.with_no_client_auth(),
        Some(client) => {
            let bad_ca = |reason: String| TlsError::BadCa {
                path: client.ca.clone(),
                reason,
            };
            let mut roots = RootCertStore::empty();
            for cert in read_certs("client CA", &client.ca)? {
                roots.add(cert).map_err(|e| bad_ca(e.to_string()))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = if client.required {
                verifier
            } else {
                verifier.allow_unauthenticated()
            };
            builder.with_client_cert_verifier(verifier.build().map_err(|e| bad_ca(e.to_string()))?)
        }
    };
    let summary = {
        let end_entity = certs.first().map(|c| c.as_ref()).unwrap_or_default();
        let fields = CertFields::parse(end_entity);
        CertSummary {
            subject: fields.subject,
            sha256: sha256_hex(end_entity),
            not_after: fields.not_after,
        }
    };
    let mut config = builder.with_single_cert(certs, key).map_err(|e| match e {
        rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch) => {
            TlsError::KeyMismatch {
                cert: settings.cert.clone(),
                key: settings.key.clone(),
            }
        }
        e => unusable(e),
    })?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok((Arc::new(config), summary))
}

/// The largest certificate, key or CA file read.
const MAX_PEM_BYTES: u64 = 1 << 20;

fn read(what: &'static str, path: &Path) -> Result<Zeroizing<Vec<u8>>, TlsError> {
    use crate::readfile::{ReadError, read_limited};
    read_limited(path, MAX_PEM_BYTES)
        .map(Zeroizing::new)
        .map_err(|e| TlsError::Read {
            what,
            path: path.to_owned(),
            source: match e {
                ReadError::Io { source, .. } => source,
                other => std::io::Error::other(other.to_string()),
            },
        })
}

/// Every certificate in a PEM file, at least one.
fn read_certs(what: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read(what, path)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::BadPem {
            what,
            path: path.to_owned(),
            detail: format!(": {e}"),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Missing {
            what,
            path: path.to_owned(),
            expected: "certificate (PEM `-----BEGIN CERTIFICATE-----`)",
        });
    }
    Ok(certs)
}

/// The first private key in a PEM file. Errors never quote the file.
fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let what = "private key";
    let bytes = read(what, path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| match e {
        pem::Error::NoItemsFound => TlsError::Missing {
            what,
            path: path.to_owned(),
            expected: "unencrypted private key (PEM `-----BEGIN PRIVATE KEY-----`, \
                       `RSA PRIVATE KEY` or `EC PRIVATE KEY`)",
        },
        _ => TlsError::BadPem {
            what,
            path: path.to_owned(),
            detail: String::new(),
        },
    })
}
