//! resetgate's one integration-test binary. Every module here drives the real
//! plugin host or the real `resetgate` binary; the wasm plugins they load are
//! built by `tests/build.rs`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod active_directory;
mod admin;
mod api;
mod cache;
mod capabilities;
mod cli;
mod connections;
mod conventions;
mod decoy;
mod due;
mod flows;
mod gates;
mod host;
mod hostile;
mod http;
mod languages;
mod ldap;
mod loading;
mod local_users;
mod locale;
mod observability;
mod one_time_code;
mod page;
mod postgres;
mod reload;
mod sandbox;
mod sealing;
mod service;
mod several_gateways;
mod store_cli;
mod store_conformance;
mod tls;
mod workflows;
