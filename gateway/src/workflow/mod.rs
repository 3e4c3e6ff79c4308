//! Workflows: the YAML language admins write, its loading and checking, and
//! the validated model the engine runs.
//!
//! - `yaml` — YAML to `serde_json::Value` with the position of every node;
//! - `file` — reading a file admins wrote up to a schema-valid document;
//! - `diagnostic` — `file:line:column` diagnostics, schema errors rendered;
//! - `raw` — the serde mirror of a workflow file;
//! - `units` — durations (`30s`) and sizes (`16MiB`);
//! - `load` — from a file to a validated [`Workflow`], and `resetgate check`;
//! - `lint` — warnings;
//! - `model` — the validated workflow the engine runs.

pub mod diagnostic;
pub mod file;
pub mod lint;
pub mod load;
pub mod model;
pub mod raw;
pub mod units;
pub mod yaml;

pub use diagnostic::{Diagnostic, Severity};
pub use load::{
    CheckReport, check_paths, check_report, load_bytes, load_dir, load_file, workflow_files,
};
pub use model::*;
