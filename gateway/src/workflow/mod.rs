//! Workflows: the YAML language admins write, its loading and checking, and
//! the validated model the engine runs.

pub mod model;

pub use model::*;
