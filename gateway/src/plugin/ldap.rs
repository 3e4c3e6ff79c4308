//! The `ldap` capability: LDAP operations over the connections the gateway
//! config names. (Stand-in until the capability lands: granting `ldap` is
//! refused at load, see `Capability::available`.)

use std::sync::Arc;

use wasmtime::Result as WasmResult;
use wasmtime::component::Resource;

use super::bindings::base::resetgate::plugin as wit;
use super::capabilities::CapabilitiesError;
use super::grants::Capability;
use super::secrets::Secrets;
use super::state::{HostState, SecretHandle};
use crate::config::GatewayConfig;

/// The LDAP connections by name.
#[derive(Default)]
pub struct Ldap {}

impl Ldap {
    /// No connections.
    pub fn none() -> Ldap {
        Ldap::default()
    }

    /// The connections `config` defines.
    pub fn from_config(
        _config: &GatewayConfig,
        _secrets: &Arc<Secrets>,
    ) -> Result<Ldap, CapabilitiesError> {
        Ok(Ldap::default())
    }
}

impl wit::ldap::Host for HostState {
    fn search(
        &mut self,
        _connection: String,
        _base: String,
        _scope: wit::ldap::Scope,
        _filter: String,
        _attributes: Vec<String>,
        _size_limit: u32,
    ) -> WasmResult<Result<Vec<wit::ldap::Entry>, wit::ldap::LdapError>> {
        self.capability(Capability::Ldap, "search")
    }

    fn modify(
        &mut self,
        _connection: String,
        _dn: String,
        _changes: Vec<wit::ldap::Modification>,
    ) -> WasmResult<Result<(), wit::ldap::LdapError>> {
        self.capability(Capability::Ldap, "modify")
    }

    fn set_password(
        &mut self,
        _connection: String,
        _dn: String,
        _password: Resource<SecretHandle>,
    ) -> WasmResult<Result<(), wit::ldap::LdapError>> {
        self.capability(Capability::Ldap, "set-password")
    }

    fn check_bind(
        &mut self,
        _connection: String,
        _dn: String,
        _password: Resource<SecretHandle>,
    ) -> WasmResult<Result<bool, wit::ldap::LdapError>> {
        self.capability(Capability::Ldap, "check-bind")
    }
}
