//! Lints: warnings about workflows that load but probably do not do what
//! the admin wants. `resetgate check --deny-warnings` makes them fail.
//!
//! | code | rule |
//! |---|---|
//! | `questions-only` | a reset workflow whose every gate is a security question: a gate is one when its plugin's name (as written, or as the plugin describes itself) contains `question` |
//! | `no-lockout` | a workflow without `lockout:` (reset: answers can be guessed without limit; enrollment: the current password can) |
//! | `sync-allow-without-fallback` | a `mode: sync` target with `on_failure: allow` and no `mode: async` target in the workflow to deliver the change later |
//! | `unused-grant` | a step grants a capability its plugin's component does not import (`secrets` counts as used by a plugin that imports `http`: a header names a granted secret) |

use std::path::Path;

use super::diagnostic::Diagnostic;
use super::model::{OnFailure, Purpose, SyncMode, Workflow};
use super::yaml::{Document, display_path};
use crate::plugin::Capability;

/// Whether a gate's plugin is a security question (see the module docs).
pub fn is_question_gate(plugin_name: &str, described_name: &str) -> bool {
    plugin_name.contains("question") || described_name.contains("question")
}

/// The lints of a valid workflow (all but `unused-grant`, which needs the
/// plugins' imports and is reported while loading).
pub fn workflow(w: &Workflow, doc: &Document, file: &Path) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    if w.purpose == Purpose::Reset
        && !w.gates.is_empty()
        && w.gates
            .iter()
            .all(|g| is_question_gate(&g.step.plugin_name, &g.step.plugin.info().name))
    {
        out.push(
            Diagnostic::warning(
                file,
                doc.key_or_value("/gates"),
                "questions-only",
                "every gate of this reset workflow is a security question",
            )
            .with_help(
                "security questions are weak evidence and must not be the only proof of identity \
                 (OWASP ASVS 5.0 V6.4.2, NIST SP 800-63B-4); add a stronger gate, such as a \
                 one-time code sent to a registered phone or e-mail address",
            ),
        );
    }
    if w.lockout.is_none() {
        let (message, why) = match w.purpose {
            Purpose::Reset => (
                "this reset workflow has no lockout rule",
                "without one, gate answers can be guessed without limit",
            ),
            Purpose::Enrollment => (
                "this enrollment workflow has no lockout rule",
                "without one, the current password can be guessed without limit",
            ),
        };
        out.push(
            Diagnostic::warning(file, doc.value_pos(""), "no-lockout", message).with_help(format!(
                "{why}; add a `lockout:` step (e.g. `plugin: example-lockout`) so that repeated \
                 failures lock the user out (OWASP ASVS 5.0 V6.3.1)"
            )),
        );
    }
    let has_async = w
        .sync
        .iter()
        .any(|s| matches!(s.mode, SyncMode::Async { .. }));
    for (i, s) in w.sync.iter().enumerate() {
        if let SyncMode::Sync {
            on_failure: OnFailure::Allow,
            ..
        } = s.mode
            && !has_async
        {
            out.push(
                Diagnostic::warning(
                    file,
                    doc.value_pos(&format!("/sync/{i}/on_failure")),
                    "sync-allow-without-fallback",
                    format!(
                        "sync target `{}` may fail unnoticed: `on_failure: allow` and no asynchronous target delivers the change later",
                        s.step.id
                    ),
                )
                .with_help(
                    "use `on_failure: deny` so that a failed push fails the reset, or add a \
                     `mode: async` target that retries the change",
                ),
            );
        }
    }
    out
}

/// `unused-grant` warnings for the step at `pointer`: capabilities it grants
/// that its plugin does not import.
pub fn unused_grants(
    doc: &Document,
    file: &Path,
    pointer: &str,
    plugin: &str,
    granted: &[Capability],
    needs: &[Capability],
) -> Vec<Diagnostic> {
    // A granted secret is used through `http` too (a header's `secret-ref`),
    // without the `secrets` interface.
    let uses = |c: &Capability| {
        needs.contains(c) || (*c == Capability::Secrets && needs.contains(&Capability::Http))
    };
    granted
        .iter()
        .filter(|c| !uses(c))
        .map(|c| {
            let cap = c.interface();
            Diagnostic::warning(
                file,
                doc.key_or_value(&format!("{pointer}/grants/{cap}")),
                "unused-grant",
                format!(
                    "`{}` grants `{cap}`, but plugin `{plugin}` does not use it",
                    display_path(pointer)
                ),
            )
            .with_help(format!(
                "remove `{cap}` from the step's grants: a plugin should get only what it uses"
            ))
        })
        .collect()
}
