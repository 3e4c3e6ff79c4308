//! Who is calling: every request that passes client identification carries
//! a [`Principal`] in its extensions — the anonymous client (the
//! self-service page), a portal (an API key of `api.keys`, or a client
//! certificate no operator is mapped to), or an operator (an API key or a
//! client certificate of `api.operators`, with its [`Role`]). Handlers and
//! logs read it from there; [`super::roles`] decides every route by it.

use std::fmt;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// What an operator may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Looks up a user's flows and lockout state, and unlocks.
    Helpdesk,
    /// Everything an operator route offers.
    Admin,
    /// Reads only: the audit log and the metrics.
    Auditor,
}

impl Role {
    /// Every role.
    pub const ALL: [Role; 3] = [Role::Helpdesk, Role::Admin, Role::Auditor];

    /// The role's name as the config writes it (`helpdesk`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Helpdesk => "helpdesk",
            Role::Admin => "admin",
            Role::Auditor => "auditor",
        }
    }

    /// The role named `name`, if any.
    pub fn parse(name: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == name)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The kind of client.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PrincipalKind {
    /// No key and no certificate: the self-service page, or anyone.
    Anonymous,
    /// A portal, by API key or client certificate.
    Portal,
    /// An operator with a role.
    Operator(Role),
}

impl PrincipalKind {
    /// `anonymous`, `portal` or `operator` (for logs).
    pub fn as_str(self) -> &'static str {
        match self {
            PrincipalKind::Anonymous => "anonymous",
            PrincipalKind::Portal => "portal",
            PrincipalKind::Operator(_) => "operator",
        }
    }

    /// The operator's role, if this is an operator.
    pub fn role(self) -> Option<Role> {
        match self {
            PrincipalKind::Operator(role) => Some(role),
            _ => None,
        }
    }
}

/// The identified client of a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    kind: PrincipalKind,
    name: String,
}

impl Principal {
    /// The anonymous client.
    pub fn anonymous() -> Principal {
        Principal {
            kind: PrincipalKind::Anonymous,
            name: "anonymous".to_owned(),
        }
    }

    /// A portal named `name` (its key's name, or `cert:` and its
    /// certificate's common name or sha256).
    pub fn portal(name: impl Into<String>) -> Principal {
        Principal {
            kind: PrincipalKind::Portal,
            name: name.into(),
        }
    }

    /// The operator `name` with `role`.
    pub fn operator(name: impl Into<String>, role: Role) -> Principal {
        Principal {
            kind: PrincipalKind::Operator(role),
            name: name.into(),
        }
    }

    /// What kind of client it is.
    pub fn kind(&self) -> PrincipalKind {
        self.kind
    }

    /// Its name (never a key): the portal's or operator's name from the
    /// config, or `anonymous`.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl fmt::Display for Principal {
    /// `anonymous`, `portal:NAME`, `operator:NAME` — what logs show.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            PrincipalKind::Anonymous => f.write_str("anonymous"),
            kind => write!(f, "{}:{}", kind.as_str(), self.name),
        }
    }
}

/// How an operator proves who they are (the `api.operators` section of the
/// gateway config); keys only as digests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Operator {
    /// The operator's name (in logs and the audit log).
    pub name: String,
    /// What the operator may do.
    pub role: Role,
    /// sha256 of the operator's API key, if they use one.
    pub key_sha256: Option<[u8; 32]>,
    /// A client certificate that identifies the operator, if any.
    pub certificate: Option<CertificateMatch>,
}

/// Which client certificate identifies an operator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CertificateMatch {
    /// The certificate's sha256 (of its DER encoding, lowercase hex).
    Sha256(String),
    /// The certificate's subject as RFC 4514 (`CN=ann,O=Example`).
    Subject(String),
}

impl CertificateMatch {
    /// Whether `cert` is the one meant.
    pub fn matches(&self, cert: &crate::listen::ClientCertificate) -> bool {
        match self {
            CertificateMatch::Sha256(sha256) => cert.sha256.eq_ignore_ascii_case(sha256),
            CertificateMatch::Subject(subject) => cert.subject == *subject,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn principals_show_their_kind_and_name_never_a_key() {
        assert_eq!(Principal::anonymous().to_string(), "anonymous");
        assert_eq!(Principal::portal("web").to_string(), "portal:web");
        let ann = Principal::operator("ann", Role::Helpdesk);
        assert_eq!(ann.to_string(), "operator:ann");
        assert_eq!(ann.kind().role(), Some(Role::Helpdesk));
        assert_eq!(ann.name(), "ann");
        for role in Role::ALL {
            assert_eq!(Role::parse(role.as_str()), Some(role));
        }
        assert_eq!(Role::parse("root"), None);
    }
}
