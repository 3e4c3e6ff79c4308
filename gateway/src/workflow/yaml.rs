//! YAML with positions: parses a YAML document into a `serde_json::Value`
//! and remembers where every node (and every mapping key) starts, by JSON
//! pointer, so that errors found later (by the schema, by serde, by the
//! semantic checks) point at `file:line:column`.
//!
//! The parser is yaml-rust2's event parser, pulled one event at a time, so
//! that nesting depth and alias expansion are bounded here rather than by
//! the stack: a hostile file gets an error, not a crash.

use std::collections::HashMap;

use serde_json::{Map, Number, Value};
use yaml_rust2::Yaml;
use yaml_rust2::parser::{Event, Parser, Tag};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// The deepest nesting of mappings and sequences accepted.
const MAX_DEPTH: usize = 64;
/// The most nodes a document may expand to (aliases included), so that an
/// alias bomb is refused instead of exhausting memory.
const MAX_NODES: usize = 200_000;

/// A position in a file, both 1-based.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Pos {
    /// Line, from 1.
    pub line: usize,
    /// Column in characters, from 1.
    pub column: usize,
}

impl Pos {
    /// The start of the file.
    pub const START: Pos = Pos { line: 1, column: 1 };

    fn from_marker(m: Marker) -> Pos {
        Pos {
            line: m.line().max(1),
            column: m.col() + 1,
        }
    }
}

/// Where one node is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodePos {
    /// Where the value starts.
    pub value: Pos,
    /// Where its key is, if it is the value of a mapping entry.
    pub key: Option<Pos>,
}

/// A parsed document: its value and the position of each node by JSON pointer.
#[derive(Clone, Debug)]
pub struct Document {
    /// The document as JSON.
    pub value: Value,
    positions: HashMap<String, NodePos>,
}

/// Why a file is not a YAML document we accept.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct SyntaxError {
    /// Where.
    pub pos: Pos,
    /// What is wrong.
    pub message: String,
    /// How to fix it, when we know.
    pub help: Option<String>,
}

impl SyntaxError {
    fn new(pos: Pos, message: impl Into<String>) -> SyntaxError {
        SyntaxError {
            pos,
            message: message.into(),
            help: None,
        }
    }

    fn help(mut self, help: impl Into<String>) -> SyntaxError {
        self.help = Some(help.into());
        self
    }
}

/// Escapes one JSON pointer segment (RFC 6901).
pub fn escape(segment: &str) -> String {
    segment.replace('~', "~0").replace('/', "~1")
}

/// Unescapes one JSON pointer segment (RFC 6901).
pub fn unescape(segment: &str) -> String {
    segment.replace("~1", "/").replace("~0", "~")
}

/// The segments of a JSON pointer, unescaped.
pub fn segments(pointer: &str) -> Vec<String> {
    pointer.split('/').skip(1).map(unescape).collect::<Vec<_>>()
}

/// Renders a JSON pointer the way an admin reads a path in the file:
/// `/gates/0/config/question` → `gates[0].config.question`.
pub fn display_path(pointer: &str) -> String {
    let mut out = String::new();
    for seg in segments(pointer) {
        if !seg.is_empty() && seg.bytes().all(|b| b.is_ascii_digit()) {
            out.push_str(&format!("[{seg}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(&seg);
        }
    }
    if out.is_empty() {
        "the top level".to_owned()
    } else {
        out
    }
}

impl Document {
    /// Where the node at `pointer` is; a pointer to something not written in
    /// the file (a missing property) falls back to its nearest ancestor.
    pub fn node(&self, pointer: &str) -> NodePos {
        let mut p = pointer;
        loop {
            if let Some(n) = self.positions.get(p) {
                return *n;
            }
            match p.rfind('/') {
                Some(i) => p = &p[..i],
                None => {
                    return NodePos {
                        value: Pos::START,
                        key: None,
                    };
                }
            }
        }
    }

    /// Whether the node at `pointer` is written in the file.
    pub fn has(&self, pointer: &str) -> bool {
        self.positions.contains_key(pointer)
    }

    /// Where to point for the node at `pointer`: its key if it has one
    /// (`directory:`), else its value (a sequence item, the top level).
    pub fn key_or_value(&self, pointer: &str) -> Pos {
        let n = self.node(pointer);
        n.key.unwrap_or(n.value)
    }

    /// Where the value at `pointer` starts.
    pub fn value_pos(&self, pointer: &str) -> Pos {
        self.node(pointer).value
    }
}

/// Parses `text` as exactly one YAML document.
pub fn parse(text: &str) -> Result<Document, SyntaxError> {
    let mut parser = Parser::new_from_str(text);
    let mut b = Builder::default();
    loop {
        let (event, mark) = parser.next_token().map_err(|e| {
            let msg = e.info().to_owned();
            SyntaxError::new(
                Pos::from_marker(*e.marker()),
                format!("invalid YAML: {msg}"),
            )
            .help(syntax_help(&msg))
        })?;
        let pos = Pos::from_marker(mark);
        match event {
            Event::StreamEnd => break,
            Event::Nothing | Event::StreamStart | Event::DocumentEnd => {}
            Event::DocumentStart => {
                b.documents += 1;
                if b.documents > 1 {
                    return Err(SyntaxError::new(
                        pos,
                        "the file holds more than one YAML document",
                    )
                    .help("keep one workflow per file and remove the `---` separator"));
                }
            }
            Event::Alias(id) => {
                let Some((value, nodes)) = b.anchors.get(&id).cloned() else {
                    return Err(SyntaxError::new(pos, "alias to an unknown anchor"));
                };
                b.count(pos, nodes)?;
                b.insert(value, pos, None)?;
            }
            Event::Scalar(text, style, anchor, tag) => {
                b.count(pos, 1)?;
                if b.expects_key() {
                    b.key(text, pos, anchor)?;
                } else {
                    let value = scalar(&text, style, tag.as_ref(), pos)?;
                    // An empty value (`directory:`) is marked where the next
                    // token starts; it belongs where its key is.
                    let pos = match b.pending_key_pos() {
                        Some(key) if text.is_empty() && style == TScalarStyle::Plain => key,
                        _ => pos,
                    };
                    b.insert(value, pos, Some(anchor))?;
                }
            }
            Event::SequenceStart(anchor, _) => {
                b.open(pos, anchor, Frame::Seq(Vec::new()))?;
            }
            Event::MappingStart(anchor, _) => {
                b.open(pos, anchor, Frame::Map(Map::new(), None))?;
            }
            Event::SequenceEnd | Event::MappingEnd => b.close(pos)?,
        }
    }
    Ok(Document {
        value: b.root.unwrap_or(Value::Null),
        positions: b.positions,
    })
}

fn syntax_help(message: &str) -> String {
    if message.contains("tab") {
        "indent with spaces; YAML does not allow tabs for indentation".to_owned()
    } else if message.contains("mapping values are not allowed") {
        "a value that contains `: ` must be quoted, or a line is indented wrongly".to_owned()
    } else if message.contains("flow sequence") {
        "a `[` is not closed with `]`, or an item is missing a `,`".to_owned()
    } else if message.contains("flow mapping") {
        "a `{` is not closed with `}`, or an entry is missing a `,`".to_owned()
    } else if message.contains("did not find expected") {
        "check the indentation and the brackets and quotes on this line and the one before"
            .to_owned()
    } else {
        "check the indentation, quotes and brackets on this line and the lines before it".to_owned()
    }
}

enum Frame {
    Seq(Vec<Value>),
    /// The mapping so far and the key waiting for its value.
    Map(Map<String, Value>, Option<String>),
}

struct Open {
    frame: Frame,
    pointer: String,
    anchor: usize,
    nodes_at_start: usize,
}

#[derive(Default)]
struct Builder {
    stack: Vec<Open>,
    root: Option<Value>,
    positions: HashMap<String, NodePos>,
    /// Anchor id → the anchored value and how many nodes it holds.
    anchors: HashMap<usize, (Value, usize)>,
    nodes: usize,
    documents: usize,
}

impl Builder {
    fn count(&mut self, pos: Pos, n: usize) -> Result<(), SyntaxError> {
        self.nodes = self.nodes.saturating_add(n);
        if self.nodes > MAX_NODES {
            return Err(SyntaxError::new(
                pos,
                format!("the document expands to more than {MAX_NODES} nodes"),
            )
            .help("a workflow is small; check for aliases (`*name`) that repeat large parts"));
        }
        Ok(())
    }

    /// Where the key waiting for its value is, if any.
    fn pending_key_pos(&self) -> Option<Pos> {
        match self.stack.last() {
            Some(Open {
                frame: Frame::Map(_, Some(_)),
                ..
            }) => self
                .positions
                .get(&self.child_pointer())
                .and_then(|n| n.key),
            _ => None,
        }
    }

    fn expects_key(&self) -> bool {
        matches!(
            self.stack.last(),
            Some(Open {
                frame: Frame::Map(_, None),
                ..
            })
        )
    }

    /// The pointer of the next value in the innermost open node.
    fn child_pointer(&self) -> String {
        match self.stack.last() {
            None => String::new(),
            Some(open) => match &open.frame {
                Frame::Seq(items) => format!("{}/{}", open.pointer, items.len()),
                Frame::Map(_, Some(key)) => format!("{}/{}", open.pointer, escape(key)),
                Frame::Map(_, None) => open.pointer.clone(),
            },
        }
    }

    fn key(&mut self, text: String, pos: Pos, anchor: usize) -> Result<(), SyntaxError> {
        let Some(Open {
            frame: Frame::Map(map, pending),
            pointer,
            ..
        }) = self.stack.last_mut()
        else {
            return Ok(());
        };
        if map.contains_key(&text) {
            let first = self
                .positions
                .get(&format!("{pointer}/{}", escape(&text)))
                .and_then(|n| n.key);
            return Err(
                SyntaxError::new(pos, format!("duplicate key `{text}`")).help(match first {
                    Some(p) => format!("`{text}` is already set on line {}; keep one", p.line),
                    None => format!("`{text}` is already set in this mapping; keep one"),
                }),
            );
        }
        let child = format!("{pointer}/{}", escape(&text));
        let first = map.is_empty();
        let mapping = pointer.clone();
        *pending = Some(text.clone());
        // yaml-rust2 marks a block mapping's start at its first key's `:`;
        // the mapping starts at that key.
        if first
            && let Some(n) = self.positions.get_mut(&mapping)
            && pos < n.value
        {
            n.value = pos;
        }
        self.positions.insert(
            child,
            NodePos {
                value: pos,
                key: Some(pos),
            },
        );
        if anchor > 0 {
            self.anchors.insert(anchor, (Value::String(text), 1));
        }
        Ok(())
    }

    fn open(&mut self, pos: Pos, anchor: usize, frame: Frame) -> Result<(), SyntaxError> {
        if self.expects_key() {
            return Err(SyntaxError::new(pos, "a mapping key must be a plain value")
                .help("use a name such as `plugin` as the key, not a list or a mapping"));
        }
        if self.stack.len() >= MAX_DEPTH {
            return Err(SyntaxError::new(
                pos,
                format!("nesting deeper than {MAX_DEPTH} levels"),
            ));
        }
        self.count(pos, 1)?;
        let pointer = self.child_pointer();
        self.record(&pointer, pos);
        self.stack.push(Open {
            frame,
            pointer,
            anchor,
            nodes_at_start: self.nodes,
        });
        Ok(())
    }

    fn close(&mut self, pos: Pos) -> Result<(), SyntaxError> {
        let Some(open) = self.stack.pop() else {
            return Ok(());
        };
        let value = match open.frame {
            Frame::Seq(items) => Value::Array(items),
            Frame::Map(map, _) => Value::Object(map),
        };
        if open.anchor > 0 {
            let nodes = self.nodes - open.nodes_at_start + 1;
            self.anchors.insert(open.anchor, (value.clone(), nodes));
        }
        self.attach(value, pos)
    }

    /// Records where the value at `pointer` starts (keeping its key's position).
    fn record(&mut self, pointer: &str, pos: Pos) {
        let key = self.positions.get(pointer).and_then(|n| n.key);
        self.positions
            .insert(pointer.to_owned(), NodePos { value: pos, key });
    }

    fn insert(&mut self, value: Value, pos: Pos, anchor: Option<usize>) -> Result<(), SyntaxError> {
        let pointer = self.child_pointer();
        self.record(&pointer, pos);
        if let Some(a) = anchor.filter(|a| *a > 0) {
            self.anchors.insert(a, (value.clone(), 1));
        }
        self.attach(value, pos)
    }

    /// Puts a finished value into its parent (or makes it the root).
    fn attach(&mut self, value: Value, pos: Pos) -> Result<(), SyntaxError> {
        match self.stack.last_mut() {
            None => {
                self.root = Some(value);
                Ok(())
            }
            Some(Open {
                frame: Frame::Seq(items),
                ..
            }) => {
                items.push(value);
                Ok(())
            }
            Some(Open {
                frame: Frame::Map(map, pending),
                ..
            }) => match pending.take() {
                Some(key) => {
                    map.insert(key, value);
                    Ok(())
                }
                None => Err(SyntaxError::new(pos, "a mapping key must be a plain value")),
            },
        }
    }
}

/// Resolves a scalar the way yaml-rust2's loader does (YAML 1.2 core schema).
fn scalar(
    text: &str,
    style: TScalarStyle,
    tag: Option<&Tag>,
    pos: Pos,
) -> Result<Value, SyntaxError> {
    if style != TScalarStyle::Plain {
        return Ok(Value::String(text.to_owned()));
    }
    let yaml = match tag {
        Some(Tag { handle, suffix }) if handle == "tag:yaml.org,2002:" => match suffix.as_str() {
            "str" => Yaml::String(text.to_owned()),
            "bool" | "int" | "float" | "null" => {
                let y = Yaml::from_str(text);
                let ok = matches!(
                    (suffix.as_str(), &y),
                    ("bool", Yaml::Boolean(_))
                        | ("int", Yaml::Integer(_))
                        | ("float", Yaml::Real(_) | Yaml::Integer(_))
                        | ("null", Yaml::Null)
                );
                if !ok {
                    return Err(SyntaxError::new(
                        pos,
                        format!("`{text}` is not a valid !!{suffix}"),
                    ));
                }
                y
            }
            _ => Yaml::String(text.to_owned()),
        },
        Some(_) => Yaml::String(text.to_owned()),
        None => Yaml::from_str(text),
    };
    Ok(match yaml {
        Yaml::Null => Value::Null,
        Yaml::Boolean(b) => Value::Bool(b),
        Yaml::Integer(i) => Value::Number(i.into()),
        Yaml::Real(r) => r
            .parse::<f64>()
            .ok()
            .and_then(Number::from_f64)
            .map_or(Value::String(r), Value::Number),
        _ => Value::String(text.to_owned()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(doc: &Document, pointer: &str) -> (usize, usize) {
        let p = doc.value_pos(pointer);
        (p.line, p.column)
    }

    #[test]
    fn values_and_positions() {
        let doc = parse(
            "version: 1\nname: \"x\"\ngates:\n  - id: a\n    plugin: q\n    config: {question: \"why?\", n: 2.5}\nempty:\n",
        )
        .unwrap();
        assert_eq!(
            doc.value,
            serde_json::json!({"version": 1, "name": "x", "gates": [{"id": "a", "plugin": "q",
                "config": {"question": "why?", "n": 2.5}}], "empty": null})
        );
        assert_eq!(at(&doc, "/version"), (1, 10));
        assert_eq!(
            doc.node("/version").key.map(|p| (p.line, p.column)),
            Some((1, 1))
        );
        assert_eq!(at(&doc, "/name"), (2, 7));
        assert_eq!(at(&doc, "/gates/0"), (4, 5));
        assert_eq!(
            doc.node("/gates/0/id").key.map(|p| (p.line, p.column)),
            Some((4, 5))
        );
        assert_eq!(at(&doc, "/gates/0/plugin"), (5, 13));
        assert_eq!(at(&doc, "/gates/0/config"), (6, 13));
        assert_eq!(at(&doc, "/gates/0/config/question"), (6, 24));
        assert_eq!(at(&doc, "/gates/0/config/missing"), (6, 13));
        assert_eq!(at(&doc, ""), (1, 1));
    }

    #[test]
    fn errors_have_positions() {
        let e = parse("a: 1\nb: [1, 2\n").unwrap_err();
        assert!(e.message.starts_with("invalid YAML"), "{e:?}");
        let e = parse("a: 1\na: 2\n").unwrap_err();
        assert_eq!((e.pos.line, e.pos.column), (2, 1));
        assert_eq!(e.message, "duplicate key `a`");
        let e = parse("a: 1\n---\nb: 2\n").unwrap_err();
        assert!(e.message.contains("more than one"), "{e:?}");
    }

    #[test]
    fn alias_bombs_and_deep_nesting_are_refused() {
        let mut bomb = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 0..8 {
            let prev = if i == 0 {
                "a".to_owned()
            } else {
                format!("b{}", i - 1)
            };
            bomb.push_str(&format!(
                "b{i}: &b{i} [*{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}]\n"
            ));
        }
        assert!(parse(&bomb).unwrap_err().message.contains("expands"));
        let deep = "[".repeat(200) + &"]".repeat(200);
        assert!(parse(&deep).is_err());
        let deep_block: String = (0..100).map(|i| format!("{}k:\n", " ".repeat(i))).collect();
        assert!(parse(&deep_block).unwrap_err().message.contains("nesting"));
    }

    #[test]
    fn paths_read_like_the_file() {
        assert_eq!(
            display_path("/gates/0/config/question"),
            "gates[0].config.question"
        );
        assert_eq!(display_path(""), "the top level");
        assert_eq!(display_path("/a~1b"), "a/b");
    }
}
