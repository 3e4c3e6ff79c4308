//! What the host's capabilities work with, built from the gateway config:
//! the named secrets, the LDAP connections, the HTTP origins and the store
//! behind `kv`. Built at start and again on `SIGHUP`
//! ([`PluginHost::set_capabilities`](super::PluginHost::set_capabilities));
//! a call keeps the set it started with, so a reload never changes a
//! capability under a running call.
//!
//! Each capability has a module of its own (`secrets`, `ldap`, `http`,
//! `kv`) with its state, its limits and its host functions; what a call may
//! use of them is what its step grants (`HostState::grants`).

use std::sync::Arc;

use super::{http, ldap, secrets};
use crate::config::GatewayConfig;
use crate::store::Store as DataStore;

/// The capabilities' state, shared by every call that starts while it is current.
pub struct Capabilities {
    /// Named secrets (LDAP bind passwords, HTTP headers, the data key).
    pub secrets: Arc<secrets::Secrets>,
    /// LDAP connections by name.
    pub ldap: ldap::Ldap,
    /// Outgoing HTTP to the configured origins.
    pub http: http::Http,
    /// The store behind `kv`; `None` outside `serve` (`check`, `inspect`).
    pub kv: Option<Arc<dyn DataStore>>,
}

/// Why the capabilities could not be built from a config. Never carries a
/// secret's value.
#[derive(Debug, thiserror::Error)]
pub enum CapabilitiesError {
    /// Secrets that could not be read (every one is listed).
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Secrets(Vec<secrets::SecretsError>),
    /// An LDAP connection that cannot be set up (e.g. its CA file).
    #[error("{0}")]
    Ldap(String),
    /// An HTTP origin that cannot be set up (e.g. its CA file).
    #[error("{0}")]
    Http(String),
}

impl Capabilities {
    /// No secrets, connections or origins, and no store: what `check` and
    /// `plugin inspect` run with (and tests that need nothing).
    pub fn none() -> Capabilities {
        Capabilities {
            secrets: Arc::new(secrets::Secrets::empty()),
            ldap: ldap::Ldap::none(),
            http: http::Http::none(),
            kv: None,
        }
    }

    /// Only a store behind `kv`.
    pub fn with_kv(store: Arc<dyn DataStore>) -> Capabilities {
        Capabilities {
            kv: Some(store),
            ..Capabilities::none()
        }
    }

    /// Everything the config defines, with `kv` over `store`. Reads every
    /// secret now: a secret that cannot be read fails the whole set (at
    /// start, `serve` refuses; on `SIGHUP`, the old set stays).
    pub fn from_config(
        config: &GatewayConfig,
        store: Option<Arc<dyn DataStore>>,
    ) -> Result<Capabilities, CapabilitiesError> {
        let secrets =
            Arc::new(secrets::Secrets::load(&config.secrets).map_err(CapabilitiesError::Secrets)?);
        let ldap = ldap::Ldap::from_config(config, &secrets)?;
        let http = http::Http::from_config(config)?;
        Ok(Capabilities {
            secrets,
            ldap,
            http,
            kv: store,
        })
    }
}

impl std::fmt::Debug for Capabilities {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Capabilities")
            .field("secrets", &self.secrets)
            .field("kv", &self.kv.is_some())
            .finish_non_exhaustive()
    }
}
