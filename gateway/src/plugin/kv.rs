//! The `kv` capability: a durable key-value namespace per plugin
//! (`store::kv::Kv` over the gateway's store), granted by `kv: true`.

use wasmtime::Result as WasmResult;

use super::bindings::base::resetgate::plugin as wit;
use super::grants::Capability;
use super::state::{HostState, bounded};
use crate::store::kv::Kv;

impl HostState {
    /// The key-value namespace of this call, or a refusal.
    fn kv(&mut self, function: &str) -> WasmResult<Kv> {
        if !self.granted.has(Capability::Kv) {
            return self.capability(Capability::Kv, function);
        }
        match &self.kv {
            Some(kv) => Ok(kv.clone()),
            None => self.refuse(
                "the kv capability has no store here (only `resetgate serve` provides one)"
                    .to_owned(),
            ),
        }
    }

    /// Waits for a kv write to be durable, at most until the call's
    /// deadline: past it the call stops (the write is applied and becomes
    /// durable with the next flush, but the plugin is not told it is).
    fn kv_durable(&mut self, what: &'static str, durable: crate::store::Durable) -> WasmResult<()> {
        match bounded(self.remaining(), durable) {
            Some(done) => self.kv_result(done.map_err(crate::store::kv::KvError::from)),
            None => self.stop_at_deadline(what),
        }
    }

    /// A key-value result, with a refusal for anything the plugin asked
    /// out of bounds or the store could not do.
    fn kv_result<T>(&mut self, result: Result<T, crate::store::kv::KvError>) -> WasmResult<T> {
        result.or_else(|e| self.refuse(e.to_string()))
    }
}

impl wit::kv::Host for HostState {
    fn get(&mut self, key: String) -> WasmResult<Option<Vec<u8>>> {
        let result = self.kv("get")?.get(&key);
        self.kv_result(result)
    }

    fn set(&mut self, key: String, value: Vec<u8>) -> WasmResult<()> {
        let staged = self.kv("set")?.stage_set(&key, value);
        let durable = self.kv_result(staged)?;
        self.kv_durable("kv.set", durable)
    }

    fn delete(&mut self, key: String) -> WasmResult<bool> {
        let staged = self.kv("delete")?.stage_delete(&key);
        let (existed, durable) = self.kv_result(staged)?;
        self.kv_durable("kv.delete", durable)?;
        Ok(existed)
    }

    fn keys(&mut self, prefix: String, limit: u32) -> WasmResult<Vec<String>> {
        let result = self.kv("keys")?.keys(&prefix, limit);
        self.kv_result(result)
    }
}
