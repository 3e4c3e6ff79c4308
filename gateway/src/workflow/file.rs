//! Reading a YAML file an admin wrote (a workflow or the gateway config) up
//! to a schema-valid document: size limit, UTF-8, YAML with positions, the
//! `version` probe (an unknown version stops here with a clear message, as
//! spin's manifest does), then every JSON Schema error at once.

use std::path::Path;

use jsonschema::Validator;
use serde_json::Value;

use super::diagnostic::{Diagnostic, SchemaTarget, schema_diagnostics};
use super::yaml::{self, Document, Pos};

/// The largest file read; workflows and configs are a few KiB.
pub const MAX_FILE_BYTES: u64 = 1 << 20;

/// What kind of file is read, for messages.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Kind {
    /// `workflow` or `gateway config`.
    pub noun: &'static str,
    /// The versions this gateway reads.
    pub version: u64,
}

pub use crate::readfile::{ReadError, read_limited};

/// Reads the workflow or config file `path` (see [`read_limited`]), up to
/// [`MAX_FILE_BYTES`].
pub(crate) fn read(path: &Path) -> Result<Vec<u8>, Vec<Diagnostic>> {
    read_limited(path, MAX_FILE_BYTES).map_err(|e| {
        vec![Diagnostic::error(path, Pos::START, "io", e.to_string()).with_help(e.help())]
    })
}

/// Parses `bytes` as the YAML file `path`, probes its version, and checks it
/// against `schema`. Returns the document, or every diagnostic found.
pub(crate) fn document(
    path: &Path,
    bytes: &[u8],
    kind: Kind,
    schema: &Value,
    validator: &Validator,
) -> Result<Document, Vec<Diagnostic>> {
    let text = std::str::from_utf8(bytes).map_err(|e| {
        let valid = &bytes[..e.valid_up_to()];
        let line = valid.iter().filter(|b| **b == b'\n').count() + 1;
        let start = valid.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        let column = String::from_utf8_lossy(&valid[start..]).chars().count() + 1;
        vec![
            Diagnostic::error(
                path,
                Pos { line, column },
                "yaml",
                "the file is not valid UTF-8",
            )
            .with_help("save the file as UTF-8"),
        ]
    })?;
    // Editors on Windows may start a UTF-8 file with a byte-order mark.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let doc = yaml::parse(text).map_err(|e| {
        let mut d = Diagnostic::error(path, e.pos, "yaml", e.message);
        d.help = e.help;
        vec![d]
    })?;
    probe_version(path, &doc, kind)?;
    let target = SchemaTarget {
        schema,
        doc: &doc,
        file: path,
        prefix: "",
        code: None,
        note: None,
    };
    let mut errors = schema_diagnostics(validator, &doc.value, &target);
    if errors.is_empty() {
        Ok(doc)
    } else {
        super::diagnostic::sort(&mut errors);
        Err(errors)
    }
}

/// Checks `version:` before anything else, so a file from another version
/// of the language gets one clear message instead of a list of schema errors.
fn probe_version(path: &Path, doc: &Document, kind: Kind) -> Result<(), Vec<Diagnostic>> {
    let noun = kind.noun;
    let want = kind.version;
    let top = match &doc.value {
        Value::Object(map) => map,
        Value::Null => {
            return Err(vec![
                Diagnostic::error(
                    path,
                    Pos::START,
                    "version",
                    format!("the {noun} file is empty"),
                )
                .with_help(format!("a {noun} file starts with `version: {want}`")),
            ]);
        }
        _ => {
            return Err(vec![
                Diagnostic::error(
                    path,
                    doc.value_pos(""),
                    "type",
                    format!("a {noun} file must be a mapping of settings"),
                )
                .with_help(format!("start the file with `version: {want}`")),
            ]);
        }
    };
    match top.get("version") {
        None => Err(vec![
            Diagnostic::error(
                path,
                doc.value_pos(""),
                "version",
                "missing field `version` at the top level",
            )
            .with_help(format!(
                "add `version: {want}` (the version of the {noun} format this file is written in)"
            )),
        ]),
        Some(v) if v.as_u64() == Some(want) => Ok(()),
        Some(Value::String(s)) if s.trim() == want.to_string() => Err(vec![
            Diagnostic::error(
                path,
                doc.value_pos("/version"),
                "version",
                format!("`version` must be a number, found the string `{s}`"),
            )
            .with_help(format!("write `version: {want}`, without quotes")),
        ]),
        Some(v) => {
            let shown = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            Err(vec![
                Diagnostic::error(
                    path,
                    doc.value_pos("/version"),
                    "version",
                    format!("unknown {noun} version `{shown}`: this gateway reads version {want}"),
                )
                .with_help(format!(
                    "write `version: {want}`; a file written for a newer resetgate needs a newer gateway"
                )),
            ])
        }
    }
}

/// Compiles one of the embedded schemas.
pub(crate) fn compile(schema: &Value) -> Result<Validator, String> {
    jsonschema::options()
        .should_validate_formats(false)
        .build(schema)
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(bytes: &[u8]) -> Result<Document, Vec<String>> {
        let schema = serde_json::json!({});
        let validator = compile(&schema).unwrap();
        let kind = Kind {
            noun: "workflow",
            version: 1,
        };
        document(Path::new("w.yaml"), bytes, kind, &schema, &validator)
            .map_err(|ds| ds.iter().map(ToString::to_string).collect())
    }

    #[test]
    fn byte_order_mark_and_crlf_are_accepted() {
        let d = doc(b"\xef\xbb\xbfversion: 1\r\nname: x\r\n").unwrap();
        assert_eq!(d.value, serde_json::json!({"version": 1, "name": "x"}));
        assert_eq!(d.value_pos("/name"), Pos { line: 2, column: 7 });
    }

    #[test]
    fn only_regular_files_within_the_limit_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("w.yaml");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        // Refused without being opened: opening would wait for a writer.
        let e = read_limited(&fifo, 10).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("{} is not a regular file (it is a FIFO)", fifo.display())
        );
        let e = read_limited(Path::new("/dev/zero"), 10).unwrap_err();
        assert!(e.to_string().ends_with("(it is a device)"), "{e}");
        assert!(matches!(
            read_limited(dir.path(), 10),
            Err(ReadError::Folder { .. })
        ));
        let file = dir.path().join("f.yaml");
        std::fs::write(&file, b"0123456789").unwrap();
        assert_eq!(read_limited(&file, 10).unwrap(), b"0123456789");
        assert!(matches!(
            read_limited(&file, 9),
            Err(ReadError::TooLarge { limit: 9 })
        ));
    }

    #[test]
    fn invalid_utf8_is_located() {
        assert_eq!(
            doc(b"version: 1\nname: ab\xff\n").unwrap_err(),
            [
                "w.yaml:2:9: error[yaml]: the file is not valid UTF-8\n  help: save the file as UTF-8"
            ]
        );
    }
}
