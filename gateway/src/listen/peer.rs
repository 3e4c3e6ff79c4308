//! Who is on the other end of a connection: its address and, over TLS, the
//! protocol and the client certificate it presented. The listener puts a
//! [`Peer`] into every request's extensions.
//!
//! A certificate's subject (which becomes a portal's identity) and expiry
//! are read with `x509-parser`; only the RFC 4514 rendering is ours.

use std::net::SocketAddr;
use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use sha2::{Digest, Sha256};
use x509_parser::asn1_rs::ToDer;
use x509_parser::prelude::{FromDer, X509Certificate, X509Name};

/// The client of a request, as the listener saw it. Every request the
/// listener serves carries one as an extension: handlers take
/// `axum::Extension<Peer>` (requests built by hand in tests carry one only if
/// the test inserts it, e.g. `Peer::plain(addr)`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    /// The client's IP address and port (the TCP peer: behind a proxy, the
    /// proxy).
    pub addr: SocketAddr,
    /// The TLS session, `None` over plain HTTP.
    pub tls: Option<Arc<TlsInfo>>,
}

impl Peer {
    /// A plain-HTTP client at `addr`.
    pub fn plain(addr: SocketAddr) -> Peer {
        Peer { addr, tls: None }
    }

    /// The client certificate, if the client presented one. A presented
    /// certificate has always been verified against the configured client
    /// CA: the handshake fails otherwise.
    pub fn client_certificate(&self) -> Option<&ClientCertificate> {
        self.tls.as_ref()?.client_certificate.as_ref()
    }
}

/// What a TLS connection negotiated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsInfo {
    /// `TLSv1.3` or `TLSv1.2`.
    pub version: String,
    /// The IANA name of the cipher suite, e.g. `TLS13_AES_256_GCM_SHA384`.
    pub cipher_suite: String,
    /// The ALPN protocol, `h2` or `http/1.1`; `None` if the client offered none.
    pub alpn: Option<String>,
    /// The client certificate; `None` if the client presented none (only
    /// possible with `client_auth: optional` or without `client_ca`).
    pub client_certificate: Option<ClientCertificate>,
}

/// A client certificate that was presented and verified against the
/// configured client CA during the handshake.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientCertificate {
    /// The subject as an RFC 4514 string, most specific part first, e.g.
    /// `CN=helpdesk-portal,O=Example Corp`.
    pub subject: String,
    /// The subject's (last) common name, e.g. `helpdesk-portal`.
    pub common_name: Option<String>,
    /// sha256 of the certificate's DER encoding, lowercase hex: the most
    /// precise way to pin one certificate.
    pub sha256: String,
}

impl ClientCertificate {
    /// Describes the end-entity certificate `der`.
    pub fn from_der(der: &CertificateDer<'_>) -> ClientCertificate {
        let fields = CertFields::parse(der);
        ClientCertificate {
            subject: fields.subject,
            common_name: fields.common_name,
            sha256: sha256_hex(der),
        }
    }
}

/// sha256 of `bytes`, lowercase hex.
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The parts of a certificate we show: subject and end of validity.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct CertFields {
    /// RFC 4514; `?` if the certificate could not be read.
    pub subject: String,
    pub common_name: Option<String>,
    /// `YYYY-MM-DDTHH:MM:SSZ`.
    pub not_after: Option<String>,
}

impl CertFields {
    /// Reads `der` (an X.509 certificate); `?` as the subject if it is not
    /// one (a certificate the handshake verified always is).
    pub fn parse(der: &[u8]) -> CertFields {
        match X509Certificate::from_der(der) {
            Ok((_, cert)) => {
                let (subject, common_name) = render_name(cert.subject());
                let t = cert.validity().not_after.to_datetime();
                let not_after = format!(
                    "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
                    t.year(),
                    u8::from(t.month()),
                    t.day(),
                    t.hour(),
                    t.minute(),
                    t.second()
                );
                CertFields {
                    subject,
                    common_name,
                    not_after: Some(not_after),
                }
            }
            Err(_) => CertFields {
                subject: "?".to_owned(),
                ..CertFields::default()
            },
        }
    }
}

/// The common name's OID, 2.5.4.3.
const OID_CN: &str = "2.5.4.3";

/// Renders an X.501 name the RFC 4514 way: the last RDN first, `,` between
/// RDNs, `+` between the attributes of a multi-valued RDN (in their encoded
/// order). Also returns the last common name that is a string.
fn render_name(name: &X509Name<'_>) -> (String, Option<String>) {
    let mut rdns = Vec::new();
    let mut common_name = None;
    for rdn in name.iter_rdn() {
        let parts: Vec<String> = rdn
            .iter()
            .map(|atv| {
                let oid = atv.attr_type().to_id_string();
                let value = atv.attr_value();
                let text = string_value(value.tag().0, value.data);
                if oid == OID_CN && text.is_some() {
                    common_name.clone_from(&text);
                }
                let value = match text {
                    Some(t) => escape_value(&t),
                    // RFC 4514: `#` and the hex of the value's whole encoding.
                    None => match value.to_der_vec() {
                        Ok(der) => format!("#{}", hex::encode(der)),
                        Err(_) => "#".to_owned(),
                    },
                };
                format!("{}={value}", attribute_name(&oid))
            })
            .collect();
        rdns.push(parts.join("+"));
    }
    rdns.reverse();
    (rdns.join(","), common_name)
}

/// The short name RFC 4514 (and OpenSSL, for `emailAddress`) gives an
/// attribute, or its dotted OID.
fn attribute_name(oid: &str) -> &str {
    match oid {
        "2.5.4.3" => "CN",
        "2.5.4.6" => "C",
        "2.5.4.7" => "L",
        "2.5.4.8" => "ST",
        "2.5.4.9" => "STREET",
        "2.5.4.10" => "O",
        "2.5.4.11" => "OU",
        "0.9.2342.19200300.100.1.1" => "UID",
        "0.9.2342.19200300.100.1.25" => "DC",
        "1.2.840.113549.1.9.1" => "emailAddress",
        other => other,
    }
}

/// The text of a directory string by its universal tag number; `None` for
/// other types (and for bytes that are not valid in their type).
fn string_value(tag: u32, value: &[u8]) -> Option<String> {
    match tag {
        // UTF8String, PrintableString, IA5String, NumericString
        12 | 19 | 22 | 18 => String::from_utf8(value.to_vec()).ok(),
        // TeletexString: in practice Latin-1
        20 => Some(value.iter().map(|&b| char::from(b)).collect()),
        // BMPString: UTF-16BE
        30 if value.len().is_multiple_of(2) => {
            let units: Vec<u16> = value
                .chunks_exact(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]]))
                .collect();
            String::from_utf16(&units).ok()
        }
        // UniversalString: UTF-32BE
        28 if value.len().is_multiple_of(4) => value
            .chunks_exact(4)
            .map(|c| char::from_u32(u32::from_be_bytes([c[0], c[1], c[2], c[3]])))
            .collect(),
        _ => None,
    }
}

/// RFC 4514 §2.4 escaping of an attribute value.
fn escape_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let last = value.chars().count().saturating_sub(1);
    for (i, c) in value.chars().enumerate() {
        match c {
            '"' | '+' | ',' | ';' | '<' | '>' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            '#' if i == 0 => out.push_str("\\#"),
            ' ' if i == 0 || i == last => out.push_str("\\ "),
            '\0' => out.push_str("\\00"),
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const SEQUENCE: u8 = 0x30;
    const SET: u8 = 0x31;
    const OID: u8 = 0x06;

    fn tlv(tag: u8, value: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        if value.len() < 0x80 {
            out.push(value.len() as u8);
        } else {
            out.push(0x82);
            out.extend_from_slice(&(value.len() as u16).to_be_bytes());
        }
        out.extend_from_slice(value);
        out
    }

    fn atv(oid: &[u8], tag: u8, value: &[u8]) -> Vec<u8> {
        tlv(SEQUENCE, &[tlv(OID, oid), tlv(tag, value)].concat())
    }

    /// `rdns` (each the contents of one RDN's SET) as a parsed name.
    fn render(rdns: &[Vec<u8>]) -> (String, Option<String>) {
        let der = tlv(
            SEQUENCE,
            &rdns
                .iter()
                .map(|r| tlv(SET, r))
                .collect::<Vec<_>>()
                .concat(),
        );
        let (rest, name) = X509Name::from_der(&der).unwrap();
        assert!(rest.is_empty());
        render_name(&name)
    }

    const CN: &[u8] = &[0x55, 0x04, 0x03];

    #[test]
    fn names_render_as_rfc_4514() {
        let (subject, cn) = render(&[
            atv(&[0x55, 0x04, 0x06], 0x13, b"DE"),
            atv(&[0x55, 0x04, 0x0a], 0x0c, b"Example, Inc."),
            [
                atv(&[0x55, 0x04, 0x0b], 0x0c, b"IT"),
                atv(&[0x55, 0x04, 0x2a], 0x0c, b"#x "),
            ]
            .concat(),
            atv(CN, 0x0c, "portal-ü".as_bytes()),
            atv(CN, 0x03, &[0x00, 0xff]),
        ]);
        assert_eq!(
            subject,
            "CN=#030200ff,CN=portal-ü,OU=IT+2.5.4.42=\\#x\\ ,O=Example\\, Inc.,C=DE"
        );
        assert_eq!(cn.as_deref(), Some("portal-ü"));
    }

    #[test]
    fn multi_valued_rdns_and_odd_string_types() {
        let bmp: Vec<u8> = "Zoë 🔑"
            .encode_utf16()
            .flat_map(|u| u.to_be_bytes())
            .collect();
        let universal: Vec<u8> = "Ω".chars().flat_map(|c| (c as u32).to_be_bytes()).collect();
        let (subject, cn) = render(&[
            // DC=example,DC=com as IA5Strings.
            atv(
                &[0x09, 0x92, 0x26, 0x89, 0x93, 0xf2, 0x2c, 0x64, 0x01, 0x19],
                0x16,
                b"com",
            ),
            atv(
                &[0x09, 0x92, 0x26, 0x89, 0x93, 0xf2, 0x2c, 0x64, 0x01, 0x19],
                0x16,
                b"example",
            ),
            // Three values in one RDN: a TeletexString (Latin-1), a
            // UniversalString and a UID.
            [
                atv(
                    &[0x55, 0x04, 0x0b],
                    0x14,
                    &[b'R', 0xe9, b's', b'e', b'a', b'u'],
                ),
                atv(&[0x55, 0x04, 0x07], 0x1c, &universal),
                atv(
                    &[0x09, 0x92, 0x26, 0x89, 0x93, 0xf2, 0x2c, 0x64, 0x01, 0x01],
                    0x0c,
                    b"u+1;<2>",
                ),
            ]
            .concat(),
            // A BMPString common name, then an e-mail address.
            atv(CN, 0x1e, &bmp),
            atv(
                &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x01],
                0x16,
                b"ops@example.com",
            ),
        ]);
        assert_eq!(
            subject,
            "emailAddress=ops@example.com,CN=Zoë 🔑,OU=Réseau+L=Ω+UID=u\\+1\\;\\<2\\>,\
             DC=example,DC=com"
        );
        assert_eq!(cn.as_deref(), Some("Zoë 🔑"));
    }

    #[test]
    fn values_that_are_not_text_render_as_hex() {
        // A BMPString of an odd length and a UTF8String that is not UTF-8
        // are shown as their encoding, never guessed at.
        let (subject, cn) = render(&[
            atv(CN, 0x0c, &[0xff, 0xfe]),
            atv(&[0x55, 0x04, 0x0a], 0x1e, &[0x00, 0x41, 0x00]),
            atv(&[0x55, 0x04, 0x0b], 0x0c, b"a\0b"),
        ]);
        assert_eq!(subject, "OU=a\\00b,O=#1e03004100,CN=#0c02fffe");
        assert_eq!(cn, None);
    }

    #[test]
    fn certificate_fields() {
        let mut params = rcgen::CertificateParams::new(vec!["gw.example".to_owned()]).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "Example Corp");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "helpdesk-portal");
        params.not_after = rcgen::date_time_ymd(2051, 2, 3);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let f = CertFields::parse(cert.der());
        assert_eq!(f.subject, "CN=helpdesk-portal,O=Example Corp");
        assert_eq!(f.common_name.as_deref(), Some("helpdesk-portal"));
        assert_eq!(f.not_after.as_deref(), Some("2051-02-03T00:00:00Z"));
        let c = ClientCertificate::from_der(cert.der());
        assert_eq!(c.subject, f.subject);
        assert_eq!(c.sha256, sha256_hex(cert.der()));
        assert_eq!(CertFields::parse(&cert.der()[..40]).subject, "?");
        assert_eq!(CertFields::parse(b"").subject, "?");
        assert_eq!(
            CertFields::parse(&[0x30, 0x03, 0x02, 0x01, 0x00]).subject,
            "?"
        );
    }
}
