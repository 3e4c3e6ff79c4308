//! Diagnostics: what `resetgate check`, the loader and hot reload report
//! about a file, each at `file:line:column` with what is wrong and how to
//! fix it; and the rendering of JSON Schema errors into diagnostics.

use std::fmt;
use std::path::{Path, PathBuf};

use jsonschema::error::{TypeKind, ValidationErrorKind};
use jsonschema::{ValidationError, Validator};
use serde_json::Value;

use super::yaml::{Document, Pos, display_path, escape, segments};

/// How bad a diagnostic is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    /// The file cannot be used.
    Error,
    /// The file works but probably does not do what the admin wants.
    Warning,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        })
    }
}

/// One problem in one file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    /// Error or warning.
    pub severity: Severity,
    /// The file, as it was named to the loader.
    pub file: PathBuf,
    /// Line, from 1.
    pub line: usize,
    /// Column in characters, from 1.
    pub column: usize,
    /// A stable code naming the kind of problem, e.g. `unknown-field`.
    pub code: &'static str,
    /// What is wrong (lowercase, no trailing period).
    pub message: String,
    /// How to fix it.
    pub help: Option<String>,
}

impl Diagnostic {
    /// An error at `pos` in `file`.
    pub fn error(file: &Path, pos: Pos, code: &'static str, message: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Error,
            file: file.to_owned(),
            line: pos.line,
            column: pos.column,
            code,
            message: message.into(),
            help: None,
        }
    }

    /// A warning at `pos` in `file`.
    pub fn warning(file: &Path, pos: Pos, code: &'static str, message: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Warning,
            ..Diagnostic::error(file, pos, code, message)
        }
    }

    /// The same diagnostic with a hint on how to fix it.
    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    /// Whether it is an error.
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for Diagnostic {
    /// `file:line:column: error[code]: message`, then `  help: ...` if any.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}[{}]: {}",
            self.file.display(),
            self.line,
            self.column,
            self.severity,
            self.code,
            self.message
        )?;
        if let Some(help) = &self.help {
            write!(f, "\n  help: {help}")?;
        }
        Ok(())
    }
}

/// Sorts diagnostics by file, then position (stable: the order of
/// diagnostics at one position is kept).
pub fn sort(diagnostics: &mut [Diagnostic]) {
    diagnostics.sort_by(|a, b| (&a.file, a.line, a.column).cmp(&(&b.file, b.line, b.column)));
}

/// The closest candidate to `word`, if one is close enough to be a typo.
pub fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let limit = (word.chars().count() / 3).max(1);
    candidates
        .into_iter()
        .map(|c| (distance(word, c), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Levenshtein distance in characters.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur.push((prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

/// `a`, `b`, `c` for a list of names.
pub fn list(names: impl IntoIterator<Item = impl AsRef<str>>) -> String {
    names
        .into_iter()
        .map(|n| format!("`{}`", n.as_ref()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Where a JSON Schema's errors land and how they are labelled.
pub(crate) struct SchemaTarget<'a> {
    /// The schema the instance was validated against.
    pub schema: &'a Value,
    /// The parsed file, for positions.
    pub doc: &'a Document,
    /// The file, for the diagnostics.
    pub file: &'a Path,
    /// Where the validated instance sits in the document (`""` for the
    /// whole document, `/gates/0/config` for a plugin's config).
    pub prefix: &'a str,
    /// Code to use for every error instead of the per-kind codes.
    pub code: Option<&'static str>,
    /// Added to every help text (e.g. where a plugin's schema comes from).
    pub note: Option<String>,
}

/// Validates `instance` and turns every error into a diagnostic.
pub(crate) fn schema_diagnostics(
    validator: &Validator,
    instance: &Value,
    target: &SchemaTarget<'_>,
) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    for error in validator.iter_errors(instance) {
        render(&error, target, &mut out);
    }
    out
}

/// The schema node at `path`, following local `$ref`s named in it.
fn schema_at<'a>(root: &'a Value, path: &str) -> Option<&'a Value> {
    let mut node = root;
    for seg in segments(path) {
        if seg == "$ref" {
            let r = node.get("$ref")?.as_str()?;
            node = root.pointer(r.strip_prefix('#')?)?;
        } else {
            node = match node {
                Value::Object(m) => m.get(&seg)?,
                Value::Array(a) => a.get(seg.parse::<usize>().ok()?)?,
                _ => return None,
            };
        }
    }
    Some(node)
}

/// A schema node with one `$ref` followed (siblings of `$ref` win).
fn deref<'a>(root: &'a Value, node: &'a Value) -> &'a Value {
    node.get("$ref")
        .and_then(Value::as_str)
        .and_then(|r| r.strip_prefix('#'))
        .and_then(|p| root.pointer(p))
        .unwrap_or(node)
}

/// A schema node's description (own, or its `$ref`'s) as help text: without
/// its `Default ...` sentence, starting lowercase, no trailing period.
fn describe(root: &Value, node: &Value) -> Option<String> {
    let text = node
        .get("description")
        .or_else(|| deref(root, node).get("description"))?
        .as_str()?;
    let kept: Vec<&str> = sentences(text)
        .into_iter()
        .filter(|s| !s.starts_with("Default"))
        .collect();
    let joined = kept.join(" ");
    let trimmed = joined.trim_end_matches('.');
    let mut chars = trimmed.chars();
    let first = chars.next()?;
    Some(first.to_lowercase().chain(chars).collect())
}

/// Splits text after each `. ` that is followed by an uppercase letter (so
/// `e.g. x` stays whole).
fn sentences(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let bytes = text.as_bytes();
    for (i, _) in text.match_indices(". ") {
        if bytes.get(i + 2).is_some_and(u8::is_ascii_uppercase) {
            out.push(&text[start..=i]);
            start = i + 2;
        }
    }
    out.push(&text[start..]);
    out
}

fn parent(path: &str) -> &str {
    path.rfind('/').map_or("", |i| &path[..i])
}

fn last(path: &str) -> String {
    segments(path).pop().unwrap_or_default()
}

/// How an admin reads a JSON type.
fn type_words(t: &str) -> &'static str {
    match t {
        "object" => "a mapping",
        "array" => "a list",
        "string" => "a string",
        "integer" => "a whole number",
        "number" => "a number",
        "boolean" => "`true` or `false`",
        "null" => "empty",
        _ => "something else",
    }
}

/// How an admin reads a value that was found.
fn found(v: &Value) -> String {
    match v {
        Value::Null => "nothing".to_owned(),
        Value::Bool(b) => format!("`{b}`"),
        Value::Number(n) => format!("`{n}`"),
        Value::String(s) => {
            let short: String = s.chars().take(40).collect();
            if short.len() < s.len() {
                format!("the string `{short}...`")
            } else {
                format!("the string `{short}`")
            }
        }
        Value::Array(_) => "a list".to_owned(),
        Value::Object(_) => "a mapping".to_owned(),
    }
}

/// A value as a message quotes it: a string as it is, but with control
/// characters escaped (`\n`), so that a diagnostic stays one line.
fn short(v: &Value) -> String {
    match v {
        Value::String(s) => s
            .chars()
            .map(|c| {
                if c.is_control() {
                    c.escape_default().to_string()
                } else {
                    c.to_string()
                }
            })
            .collect(),
        other => other.to_string(),
    }
}

fn join_help(help: Option<String>, note: &Option<String>) -> Option<String> {
    match (help, note) {
        (Some(h), Some(n)) => Some(format!("{h}; {n}")),
        (Some(h), None) => Some(h),
        (None, Some(n)) => Some(n.clone()),
        (None, None) => None,
    }
}

fn render(error: &ValidationError<'_>, t: &SchemaTarget<'_>, out: &mut Vec<Diagnostic>) {
    let local = error.instance_path().as_str().to_owned();
    let pointer = format!("{}{}", t.prefix, local);
    let schema_path = error.schema_path().as_str().to_owned();
    // The schema object holding the failing keyword.
    let holder = schema_at(t.schema, parent(&schema_path));
    let path = display_path(&pointer);
    let where_ = if pointer.is_empty() {
        "at the top level".to_owned()
    } else {
        format!("in `{path}`")
    };
    let value = error.instance();
    let code = |own: &'static str| t.code.unwrap_or(own);
    let push = |out: &mut Vec<Diagnostic>,
                pos: Pos,
                own: &'static str,
                msg: String,
                help: Option<String>| {
        let mut d = Diagnostic::error(t.file, pos, code(own), msg);
        d.help = join_help(help, &t.note);
        out.push(d);
    };
    let holder_help = || holder.and_then(|h| describe(t.schema, h));
    match error.kind() {
        ValidationErrorKind::AdditionalProperties { unexpected }
        | ValidationErrorKind::UnevaluatedProperties { unexpected } => {
            let allowed: Vec<&str> = holder
                .and_then(|h| h.get("properties"))
                .and_then(Value::as_object)
                .map(|m| m.keys().map(String::as_str).collect())
                .unwrap_or_default();
            for name in unexpected {
                let at = format!("{pointer}/{}", escape(name));
                let pos = t.doc.key_or_value(&at);
                let mut help = match did_you_mean(name, allowed.iter().copied()) {
                    Some(s) => format!("did you mean `{s}`? "),
                    None => String::new(),
                };
                if allowed.is_empty() {
                    help.push_str("remove it: nothing else is allowed here");
                } else {
                    help.push_str(&format!("allowed here: {}", allowed.join(", ")));
                }
                push(
                    out,
                    pos,
                    "unknown-field",
                    format!("unknown field `{name}` {where_}"),
                    Some(help),
                );
            }
        }
        ValidationErrorKind::Required { property } => {
            let name = short(property);
            let known: Vec<&str> = holder
                .and_then(|h| h.get("properties"))
                .and_then(Value::as_object)
                .map(|m| m.keys().map(String::as_str).collect())
                .unwrap_or_default();
            // `plugn: x` is reported as an unknown field with "did you mean
            // `plugin`?"; a second error for the missing `plugin` is noise.
            let typo = value.as_object().is_some_and(|obj| {
                obj.keys()
                    .filter(|k| !known.contains(&k.as_str()))
                    .any(|k| did_you_mean(k, [name.as_str()]).is_some())
            });
            if typo {
                return;
            }
            // `dependentRequired`: which present field needs this one.
            let needed_by = schema_path
                .ends_with("/dependentRequired")
                .then(|| {
                    let deps = holder?.get("dependentRequired")?.as_object()?;
                    deps.iter()
                        .find(|(trigger, needs)| {
                            value.get(trigger.as_str()).is_some()
                                && needs.as_array().is_some_and(|n| n.contains(property))
                        })
                        .map(|(trigger, _)| trigger.clone())
                })
                .flatten();
            let help = holder
                .and_then(|h| h.get("properties"))
                .and_then(|p| p.get(&name))
                .and_then(|p| describe(t.schema, p))
                .map_or_else(|| format!("add `{name}`"), |d| format!("add `{name}`: {d}"));
            push(
                out,
                t.doc.key_or_value(&pointer),
                "missing-field",
                match needed_by {
                    Some(by) => format!("missing field `{name}` {where_}: `{by}` needs it"),
                    None => format!("missing field `{name}` {where_}"),
                },
                Some(help),
            );
        }
        ValidationErrorKind::Type { kind } => {
            let expected: Vec<&str> = match kind {
                TypeKind::Single(t) => vec![type_words(t.as_str())],
                TypeKind::Multiple(set) => set.iter().map(|t| type_words(t.as_str())).collect(),
            };
            // A mapping or list starts on the line after its key, and an empty
            // value has no position of its own: point at the key.
            let pos = if value.is_object() || value.is_array() || value.is_null() {
                t.doc.key_or_value(&pointer)
            } else {
                t.doc.value_pos(&pointer)
            };
            push(
                out,
                pos,
                "type",
                format!(
                    "`{path}` must be {}, found {}",
                    expected.join(" or "),
                    found(value)
                ),
                holder_help(),
            );
        }
        ValidationErrorKind::Enum { options } => {
            let opts: Vec<String> = match options.as_ref() {
                Value::Array(a) => a.iter().map(short).collect(),
                other => vec![short(other)],
            };
            let help = value
                .as_str()
                .and_then(|v| did_you_mean(v, opts.iter().map(String::as_str)))
                .map(|s| format!("did you mean `{s}`?"))
                .or_else(holder_help);
            push(
                out,
                t.doc.value_pos(&pointer),
                "value",
                format!(
                    "`{path}` must be one of {}; found {}",
                    list(&opts),
                    found(value)
                ),
                help,
            );
        }
        ValidationErrorKind::Constant { expected_value } => push(
            out,
            t.doc.value_pos(&pointer),
            "value",
            format!(
                "`{path}` must be `{}`, found {}",
                short(expected_value),
                found(value)
            ),
            holder_help(),
        ),
        ValidationErrorKind::Pattern { .. } => {
            let noun = holder
                .and_then(|h| h.get("title"))
                .and_then(Value::as_str)
                .map_or_else(|| "value".to_owned(), str::to_lowercase);
            push(
                out,
                t.doc.value_pos(&pointer),
                "value",
                format!("`{path}` is not a valid {noun}: `{}`", short(value)),
                holder_help(),
            );
        }
        ValidationErrorKind::Minimum { limit }
        | ValidationErrorKind::ExclusiveMinimum { limit } => {
            let strict = matches!(error.kind(), ValidationErrorKind::ExclusiveMinimum { .. });
            push(
                out,
                t.doc.value_pos(&pointer),
                "value",
                format!(
                    "`{path}` must be {} {limit}, found {}",
                    if strict { "more than" } else { "at least" },
                    short(value)
                ),
                holder_help(),
            );
        }
        ValidationErrorKind::Maximum { limit }
        | ValidationErrorKind::ExclusiveMaximum { limit } => {
            let strict = matches!(error.kind(), ValidationErrorKind::ExclusiveMaximum { .. });
            push(
                out,
                t.doc.value_pos(&pointer),
                "value",
                format!(
                    "`{path}` must be {} {limit}, found {}",
                    if strict { "less than" } else { "at most" },
                    short(value)
                ),
                holder_help(),
            );
        }
        ValidationErrorKind::MinLength { limit } => push(
            out,
            t.doc.value_pos(&pointer),
            "value",
            if *limit <= 1 {
                format!("`{path}` must not be empty")
            } else {
                format!("`{path}` must be at least {limit} characters long")
            },
            holder_help(),
        ),
        ValidationErrorKind::MaxLength { limit } => push(
            out,
            t.doc.value_pos(&pointer),
            "value",
            format!("`{path}` must be at most {limit} characters long"),
            holder_help(),
        ),
        ValidationErrorKind::MinItems { limit } => push(
            out,
            t.doc.key_or_value(&pointer),
            "value",
            format!(
                "`{path}` must have at least {limit} {}",
                if *limit == 1 { "entry" } else { "entries" }
            ),
            holder_help(),
        ),
        ValidationErrorKind::MaxItems { limit } => push(
            out,
            t.doc.key_or_value(&pointer),
            "value",
            format!("`{path}` must have at most {limit} entries"),
            holder_help(),
        ),
        ValidationErrorKind::UniqueItems => push(
            out,
            t.doc.value_pos(&pointer),
            "value",
            format!("`{path}` lists the same entry more than once"),
            Some("remove the repeated entry".to_owned()),
        ),
        ValidationErrorKind::MinProperties { limit }
        | ValidationErrorKind::MaxProperties { limit } => {
            let props: Vec<&str> = holder
                .and_then(|h| h.get("properties"))
                .and_then(Value::as_object)
                .map(|m| m.keys().map(String::as_str).collect())
                .unwrap_or_default();
            let min = holder
                .and_then(|h| h.get("minProperties"))
                .and_then(Value::as_u64);
            let max = holder
                .and_then(|h| h.get("maxProperties"))
                .and_then(Value::as_u64);
            let msg = match (min, max) {
                (Some(1), Some(1)) if !props.is_empty() => {
                    format!("`{path}` must set exactly one of {}", list(&props))
                }
                _ if matches!(error.kind(), ValidationErrorKind::MinProperties { .. }) => {
                    format!("`{path}` must have at least {limit} entries")
                }
                _ => format!("`{path}` must have at most {limit} entries"),
            };
            push(
                out,
                t.doc.key_or_value(&pointer),
                "value",
                msg,
                holder_help(),
            );
        }
        ValidationErrorKind::FalseSchema => {
            let prop = last(&pointer);
            // `.../allOf/N/then/properties/PROP`: the condition is the sibling `if`.
            let cond = schema_path
                .rfind("/then/")
                .and_then(|i| schema_at(t.schema, &format!("{}/if", &schema_path[..i])))
                .and_then(|c| c.get("properties"))
                .and_then(Value::as_object)
                .and_then(|m| {
                    m.iter()
                        .find_map(|(k, v)| v.get("const").map(|c| format!("{k}: {}", short(c))))
                });
            let (msg, help) = match cond {
                Some(c) => (
                    format!("`{prop}` is not allowed with `{c}`"),
                    format!("remove `{prop}`: it does not apply when `{c}`"),
                ),
                None => (
                    format!("`{prop}` is not allowed {where_}"),
                    format!("remove `{prop}`"),
                ),
            };
            let pos = t.doc.key_or_value(&pointer);
            push(out, pos, "not-allowed", msg, Some(help));
        }
        ValidationErrorKind::PropertyNames { error: inner } => {
            let name = short(inner.instance());
            let at = format!("{pointer}/{}", escape(&name));
            // The keyword's path may end at `propertyNames` or inside it.
            let help = holder
                .and_then(|h| h.get("propertyNames").or(Some(h)))
                .and_then(|p| describe(t.schema, p));
            push(
                out,
                t.doc.key_or_value(&at),
                "value",
                format!("`{name}` is not a valid name {where_}"),
                help,
            );
        }
        ValidationErrorKind::AnyOf { context } | ValidationErrorKind::OneOfNotValid { context } => {
            let first = context.iter().flatten().next().map(|e| e.to_string());
            push(
                out,
                t.doc.value_pos(&pointer),
                "value",
                format!("`{path}` does not match any of the allowed forms"),
                first
                    .map(|f| format!("for example: {f}"))
                    .or_else(holder_help),
            );
        }
        ValidationErrorKind::OneOfMultipleValid { .. } => push(
            out,
            t.doc.value_pos(&pointer),
            "value",
            format!("`{path}` matches more than one of the allowed forms"),
            holder_help(),
        ),
        _ => push(
            out,
            t.doc.value_pos(&pointer),
            "value",
            format!("`{path}`: {error}"),
            holder_help(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_has_position_code_and_help() {
        let d = Diagnostic::error(
            Path::new("w.yaml"),
            Pos { line: 3, column: 5 },
            "unknown-field",
            "unknown field `plugn`",
        )
        .with_help("did you mean `plugin`?");
        assert_eq!(
            d.to_string(),
            "w.yaml:3:5: error[unknown-field]: unknown field `plugn`\n  help: did you mean `plugin`?"
        );
    }

    #[test]
    fn help_comes_from_descriptions() {
        let schema = serde_json::json!({"description": "How long, e.g. `5m`. Longer is refused. Default `5m`."});
        assert_eq!(
            describe(&schema, &schema).as_deref(),
            Some("how long, e.g. `5m`. Longer is refused")
        );
    }

    #[test]
    fn suggestions() {
        assert_eq!(did_you_mean("plugn", ["plugin", "config"]), Some("plugin"));
        assert_eq!(did_you_mean("zzz", ["plugin", "config"]), None);
        assert_eq!(did_you_mean("rest", ["reset", "enrollment"]), Some("reset"));
    }
}
