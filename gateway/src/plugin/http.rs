//! The `http` capability: outgoing HTTP(S) to the origins the gateway
//! config lists. (Stand-in until the capability lands: granting `http` is
//! refused at load, see `Capability::available`.)

use wasmtime::Result as WasmResult;
use wasmtime::component::Resource;

use super::bindings::base::resetgate::plugin as wit;
use super::capabilities::CapabilitiesError;
use super::grants::Capability;
use super::state::{HostState, SecretHandle};
use crate::config::GatewayConfig;

/// The HTTP client and the configured origins.
#[derive(Default)]
pub struct Http {}

impl Http {
    /// No origins.
    pub fn none() -> Http {
        Http::default()
    }

    /// The origins `config` lists.
    pub fn from_config(_config: &GatewayConfig) -> Result<Http, CapabilitiesError> {
        Ok(Http::default())
    }
}

impl wit::http::Host for HostState {
    fn send(
        &mut self,
        _request: wit::http::Request,
    ) -> WasmResult<Result<wit::http::Response, wit::http::HttpError>> {
        self.capability(Capability::Http, "send")
    }

    fn send_with_secret(
        &mut self,
        _request: wit::http::Request,
        _password: Resource<SecretHandle>,
    ) -> WasmResult<Result<wit::http::Response, wit::http::HttpError>> {
        self.capability(Capability::Http, "send-with-secret")
    }
}
