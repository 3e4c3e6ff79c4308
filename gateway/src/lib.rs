//! resetgate: a self-hosted gateway for enterprise self-service password reset.
//!
//! The library behind the `resetgate` binary. See `ARCHITECTURE.md` at the
//! repository root for the bird's-eye view and the code map.

pub mod admincli;
pub mod api;
pub mod config;
pub mod contract;
pub mod due;
pub mod engine;
pub mod history;
pub mod i18n;
pub mod listen;
pub mod logging;
pub mod metrics;
pub mod notify;
pub mod operator;
pub mod plugin;
pub mod policy;
pub mod readfile;
pub mod reload;
pub mod runtime;
pub mod seal;
pub mod secret;
pub mod server;
pub mod store;
pub mod storecli;
pub mod users;
pub mod workers;
pub mod workflow;
