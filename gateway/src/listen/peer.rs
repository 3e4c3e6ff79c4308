//! Who is on the other end of a connection: its address and, over TLS, the
//! protocol and the client certificate it presented. The listener puts a
//! [`Peer`] into every request's extensions.
//!
//! Also a small DER reader for the one thing we need from a certificate —
//! its subject and expiry — so the gateway does not carry an X.509 parser.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use sha2::{Digest, Sha256};

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
    /// Reads `der` (an X.509 certificate); fields it cannot read stay empty.
    pub fn parse(der: &[u8]) -> CertFields {
        Self::try_parse(der).unwrap_or_else(|| CertFields {
            subject: "?".to_owned(),
            ..CertFields::default()
        })
    }

    fn try_parse(der: &[u8]) -> Option<CertFields> {
        // Certificate ::= SEQUENCE { tbsCertificate SEQUENCE { [0] version
        // OPTIONAL, serialNumber, signature, issuer, validity, subject, .. } }
        let cert = Der::new(der).expect(SEQUENCE)?;
        let tbs = Der::new(cert).expect(SEQUENCE)?;
        let mut r = Der::new(tbs);
        if r.peek() == Some(0xa0) {
            r.next()?;
        }
        r.expect(INTEGER)?; // serial number
        r.expect(SEQUENCE)?; // signature algorithm
        r.expect(SEQUENCE)?; // issuer
        let validity = r.expect(SEQUENCE)?;
        let subject = r.expect(SEQUENCE)?;
        let mut v = Der::new(validity);
        v.next()?; // notBefore
        let not_after = v.next().and_then(|(tag, value)| time(tag, value));
        let (subject, common_name) = render_name(subject)?;
        Some(CertFields {
            subject,
            common_name,
            not_after,
        })
    }
}

const INTEGER: u8 = 0x02;
const OID: u8 = 0x06;
const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;

/// A reader of DER TLVs (single-byte tags, definite lengths).
struct Der<'a> {
    rest: &'a [u8],
}

impl<'a> Der<'a> {
    fn new(bytes: &'a [u8]) -> Der<'a> {
        Der { rest: bytes }
    }

    fn peek(&self) -> Option<u8> {
        self.rest.first().copied()
    }

    /// The next element's tag and contents.
    fn next(&mut self) -> Option<(u8, &'a [u8])> {
        let (&tag, rest) = self.rest.split_first()?;
        if tag & 0x1f == 0x1f {
            return None; // multi-byte tags never occur where we look
        }
        let (&first, mut rest) = rest.split_first()?;
        let len = if first < 0x80 {
            usize::from(first)
        } else {
            let n = usize::from(first & 0x7f);
            if n == 0 || n > 4 || rest.len() < n {
                return None;
            }
            let (bytes, after) = rest.split_at(n);
            rest = after;
            bytes
                .iter()
                .fold(0usize, |acc, b| (acc << 8) | usize::from(*b))
        };
        if rest.len() < len {
            return None;
        }
        let (value, after) = rest.split_at(len);
        self.rest = after;
        Some((tag, value))
    }

    /// The contents of the next element, which must have tag `tag`.
    fn expect(&mut self, tag: u8) -> Option<&'a [u8]> {
        match self.next()? {
            (t, value) if t == tag => Some(value),
            _ => None,
        }
    }

    fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }
}

/// Renders an X.501 `Name` (the contents of its SEQUENCE) the RFC 4514 way:
/// the last RDN first, `,` between RDNs, `+` inside one. Also returns the
/// last common name.
fn render_name(name: &[u8]) -> Option<(String, Option<String>)> {
    let mut rdns = Vec::new();
    let mut common_name = None;
    let mut r = Der::new(name);
    while !r.is_empty() {
        let set = r.expect(SET)?;
        let mut parts = Vec::new();
        let mut s = Der::new(set);
        while !s.is_empty() {
            let atv = s.expect(SEQUENCE)?;
            let mut a = Der::new(atv);
            let oid = a.expect(OID)?;
            let (tag, value) = a.next()?;
            let text = string_value(tag, value);
            if oid == OID_CN && text.is_some() {
                common_name.clone_from(&text);
            }
            let value = match text {
                Some(t) => escape_value(&t),
                // RFC 4514: `#` and the hex of the whole DER element.
                None => format!(
                    "#{:02x}{}{}",
                    tag,
                    der_length(value.len()),
                    hex::encode(value)
                ),
            };
            parts.push(format!("{}={value}", attribute_name(oid)));
        }
        rdns.push(parts.join("+"));
    }
    rdns.reverse();
    Some((rdns.join(","), common_name))
}

const OID_CN: &[u8] = &[0x55, 0x04, 0x03];

/// A DER length, hex.
fn der_length(len: usize) -> String {
    if len < 0x80 {
        return format!("{len:02x}");
    }
    let bytes: Vec<u8> = len
        .to_be_bytes()
        .into_iter()
        .skip_while(|b| *b == 0)
        .collect();
    format!("{:02x}{}", 0x80 | bytes.len(), hex::encode(bytes))
}

/// The short name RFC 4514 (and OpenSSL, for `emailAddress`) gives an
/// attribute, or its dotted OID.
fn attribute_name(oid: &[u8]) -> String {
    let known = match oid {
        [0x55, 0x04, 0x03] => "CN",
        [0x55, 0x04, 0x06] => "C",
        [0x55, 0x04, 0x07] => "L",
        [0x55, 0x04, 0x08] => "ST",
        [0x55, 0x04, 0x09] => "STREET",
        [0x55, 0x04, 0x0a] => "O",
        [0x55, 0x04, 0x0b] => "OU",
        [0x09, 0x92, 0x26, 0x89, 0x93, 0xf2, 0x2c, 0x64, 0x01, 0x01] => "UID",
        [0x09, 0x92, 0x26, 0x89, 0x93, 0xf2, 0x2c, 0x64, 0x01, 0x19] => "DC",
        [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x01] => "emailAddress",
        _ => return dotted(oid),
    };
    known.to_owned()
}

/// An OID's dotted form, e.g. `2.5.4.42`.
fn dotted(oid: &[u8]) -> String {
    let mut arcs: Vec<u64> = Vec::new();
    let mut acc: u64 = 0;
    for &b in oid {
        acc = (acc << 7) | u64::from(b & 0x7f);
        if b & 0x80 == 0 {
            if arcs.is_empty() {
                let first = (acc / 40).min(2);
                arcs.push(first);
                arcs.push(acc - first * 40);
            } else {
                arcs.push(acc);
            }
            acc = 0;
        }
    }
    let mut out = String::new();
    for (i, arc) in arcs.iter().enumerate() {
        if i > 0 {
            out.push('.');
        }
        let _ = write!(out, "{arc}");
    }
    out
}

/// The text of a directory string; `None` for types we do not read.
fn string_value(tag: u8, value: &[u8]) -> Option<String> {
    match tag {
        // UTF8String, PrintableString, IA5String, NumericString
        0x0c | 0x13 | 0x16 | 0x12 => String::from_utf8(value.to_vec()).ok(),
        // TeletexString: in practice Latin-1
        0x14 => Some(value.iter().map(|&b| char::from(b)).collect()),
        // BMPString: UTF-16BE
        0x1e if value.len().is_multiple_of(2) => {
            let units: Vec<u16> = value
                .chunks_exact(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]]))
                .collect();
            String::from_utf16(&units).ok()
        }
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

/// A UTCTime or GeneralizedTime (`Z` form, as RFC 5280 requires) as
/// `YYYY-MM-DDTHH:MM:SSZ`.
fn time(tag: u8, value: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(value).ok()?;
    let digits = text.strip_suffix('Z')?;
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let full = match (tag, digits.len()) {
        (0x17, 12) => {
            let yy: u32 = digits[..2].parse().ok()?;
            format!("{}{digits}", if yy < 50 { "20" } else { "19" })
        }
        (0x18, 14) => digits.to_owned(),
        _ => return None,
    };
    Some(format!(
        "{}-{}-{}T{}:{}:{}Z",
        &full[..4],
        &full[4..6],
        &full[6..8],
        &full[8..10],
        &full[10..12],
        &full[12..14]
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn names_render_as_rfc_4514() {
        let name = [
            tlv(SET, &atv(&[0x55, 0x04, 0x06], 0x13, b"DE")),
            tlv(SET, &atv(&[0x55, 0x04, 0x0a], 0x0c, b"Example, Inc.")),
            tlv(
                SET,
                &[
                    atv(&[0x55, 0x04, 0x0b], 0x0c, b"IT"),
                    atv(&[0x55, 0x04, 0x2a], 0x0c, b"#x "),
                ]
                .concat(),
            ),
            tlv(SET, &atv(OID_CN, 0x0c, "portal-ü".as_bytes())),
            tlv(SET, &atv(&[0x55, 0x04, 0x03], 0x03, &[0x00, 0xff])),
        ]
        .concat();
        let (subject, cn) = render_name(&name).unwrap();
        assert_eq!(
            subject,
            "CN=#030200ff,CN=portal-ü,OU=IT+2.5.4.42=\\#x\\ ,O=Example\\, Inc.,C=DE"
        );
        assert_eq!(cn.as_deref(), Some("portal-ü"));
    }

    #[test]
    fn certificate_fields() {
        let name = tlv(SEQUENCE, &tlv(SET, &atv(OID_CN, 0x13, b"gw")));
        let validity = tlv(
            SEQUENCE,
            &[tlv(0x17, b"250101000000Z"), tlv(0x18, b"20510203040506Z")].concat(),
        );
        let tbs = tlv(
            SEQUENCE,
            &[
                tlv(0xa0, &tlv(INTEGER, &[2])),
                tlv(INTEGER, &[7; 20]),
                tlv(SEQUENCE, &[]),
                name.clone(),
                validity,
                name,
                tlv(SEQUENCE, &[0; 200]),
            ]
            .concat(),
        );
        let cert = tlv(
            SEQUENCE,
            &[tbs, tlv(SEQUENCE, &[]), tlv(0x03, &[0])].concat(),
        );
        let f = CertFields::parse(&cert);
        assert_eq!(f.subject, "CN=gw");
        assert_eq!(f.common_name.as_deref(), Some("gw"));
        assert_eq!(f.not_after.as_deref(), Some("2051-02-03T04:05:06Z"));
        assert_eq!(CertFields::parse(&cert[..40]).subject, "?");
        assert_eq!(CertFields::parse(b"").subject, "?");
    }

    #[test]
    fn long_lengths() {
        assert_eq!(der_length(5), "05");
        assert_eq!(der_length(300), "82012c");
    }

    #[test]
    fn dotted_oids() {
        assert_eq!(dotted(&[0x55, 0x04, 0x2a]), "2.5.4.42");
        assert_eq!(
            dotted(&[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x01]),
            "1.2.840.113549.1.9.1"
        );
    }
}
