//! YAML with positions: parses a YAML document into a `serde_json::Value`
//! and remembers where every node (and every mapping key) starts, so that
//! errors found later (by the schema, by serde, by the semantic checks) are
//! looked up by JSON pointer and point at `file:line:column`.
//!
//! The positions are a tree shaped like the value (each key stored once),
//! not a map from full pointers: a pointer is as long as the path to its
//! node, so storing one per node costs memory that grows with depth times
//! size (an 81 KB file of long keys nested 60 deep over a list of 10,000
//! items took 1.26 GB). The tree costs memory in proportion to the file.
//!
//! The parser is yaml-rust2's event parser, pulled one event at a time, so
//! that nesting depth, node count and alias expansion are bounded here
//! rather than by the stack or the allocator: a hostile file gets an error
//! at `file:line:column`, not a crash.

use std::borrow::Cow;
use std::collections::HashMap;

use serde_json::{Map, Number, Value};
use yaml_rust2::Yaml;
use yaml_rust2::parser::{Event, Parser, Tag};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// The deepest nesting of mappings and sequences accepted.
const MAX_DEPTH: usize = 64;
/// The most nodes a document may expand to (aliases and the copies kept for
/// anchors included), so that an alias bomb is refused instead of
/// exhausting memory.
pub const MAX_NODES: usize = 200_000;
/// The most bytes of keys and scalars a document may expand to (aliases and
/// anchors included): a node count alone lets an alias repeat a long string.
pub const MAX_TEXT_BYTES: usize = 4 << 20;

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

/// A parsed document: its value and the position of each node, looked up by
/// JSON pointer.
#[derive(Clone, Debug)]
pub struct Document {
    /// The document as JSON.
    pub value: Value,
    positions: PosTree,
}

/// Where a node and its children are written, shaped like the value.
/// Values that came from an alias have no children here: their parts are
/// written at the anchor, and point at the alias.
#[derive(Clone, Debug)]
struct PosTree {
    at: NodePos,
    children: Children,
}

#[derive(Clone, Debug, Default)]
enum Children {
    #[default]
    None,
    Seq(Vec<PosTree>),
    Map(HashMap<String, PosTree>),
}

impl PosTree {
    fn leaf(value: Pos) -> PosTree {
        PosTree {
            at: NodePos { value, key: None },
            children: Children::None,
        }
    }

    fn child(&self, segment: &str) -> Option<&PosTree> {
        match &self.children {
            Children::None => None,
            Children::Seq(items) => items.get(segment.parse::<usize>().ok()?),
            Children::Map(entries) => entries.get(unescape_cow(segment).as_ref()),
        }
    }

    /// The node at `pointer`, and whether it is written in the file (or,
    /// if not, the nearest ancestor that is).
    fn find(&self, pointer: &str) -> (&PosTree, bool) {
        let mut node = self;
        for segment in pointer.split('/').skip(1) {
            match node.child(segment) {
                Some(child) => node = child,
                None => return (node, false),
            }
        }
        (node, true)
    }
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
    unescape_cow(segment).into_owned()
}

fn unescape_cow(segment: &str) -> Cow<'_, str> {
    if segment.contains('~') {
        Cow::Owned(segment.replace("~1", "/").replace("~0", "~"))
    } else {
        Cow::Borrowed(segment)
    }
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
        self.positions.find(pointer).0.at
    }

    /// Whether the node at `pointer` is written in the file.
    pub fn has(&self, pointer: &str) -> bool {
        self.positions.find(pointer).1
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
                let Some(anchored) = b.anchors.get(&id) else {
                    return Err(SyntaxError::new(pos, "alias to an unknown anchor"));
                };
                let (nodes, bytes) = (anchored.nodes, anchored.bytes);
                // Counted before the copy is made.
                b.count(pos, nodes, bytes)?;
                let value = b.anchors.get(&id).map_or(Value::Null, |a| a.value.clone());
                b.insert(value, pos, None)?;
            }
            Event::Scalar(text, style, anchor, tag) => {
                b.count(pos, 1, text.len())?;
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
                    b.insert(value, pos, Some((anchor, text.len())))?;
                }
            }
            Event::SequenceStart(anchor, _) => {
                b.open(pos, anchor, Frame::Seq(Vec::new(), Vec::new()))?;
            }
            Event::MappingStart(anchor, _) => {
                b.open(pos, anchor, Frame::Map(Map::new(), HashMap::new(), None))?;
            }
            Event::SequenceEnd | Event::MappingEnd => b.close(pos)?,
        }
    }
    Ok(Document {
        value: b.root.unwrap_or(Value::Null),
        positions: b.root_pos.unwrap_or_else(|| PosTree::leaf(Pos::START)),
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

/// A mapping or sequence being read: its items so far, with their positions.
enum Frame {
    Seq(Vec<Value>, Vec<PosTree>),
    /// The mapping so far, its entries' positions, and the key waiting for
    /// its value (with where the key is).
    Map(
        Map<String, Value>,
        HashMap<String, PosTree>,
        Option<(String, Pos)>,
    ),
}

struct Open {
    frame: Frame,
    /// Where the node starts.
    at: Pos,
    anchor: usize,
    nodes_at_start: usize,
    bytes_at_start: usize,
}

/// An anchored value, and what repeating it costs.
struct Anchored {
    value: Value,
    nodes: usize,
    bytes: usize,
}

#[derive(Default)]
struct Builder {
    stack: Vec<Open>,
    root: Option<Value>,
    root_pos: Option<PosTree>,
    anchors: HashMap<usize, Anchored>,
    /// Nodes and bytes of text so far, aliases and anchor copies included.
    nodes: usize,
    bytes: usize,
    documents: usize,
}

impl Builder {
    fn count(&mut self, pos: Pos, nodes: usize, bytes: usize) -> Result<(), SyntaxError> {
        self.nodes = self.nodes.saturating_add(nodes);
        self.bytes = self.bytes.saturating_add(bytes);
        if self.nodes > MAX_NODES {
            return Err(SyntaxError::new(
                pos,
                format!("the document expands to more than {MAX_NODES} nodes"),
            )
            .help(
                "a workflow or config is a few hundred nodes; check that this is the right \
                 file, and for aliases (`*name`) that repeat large parts",
            ));
        }
        if self.bytes > MAX_TEXT_BYTES {
            return Err(SyntaxError::new(
                pos,
                format!(
                    "the document expands to more than {} MiB of keys and values",
                    MAX_TEXT_BYTES >> 20
                ),
            )
            .help("check for aliases (`*name`) that repeat long values"));
        }
        Ok(())
    }

    /// Where the key waiting for its value is, if any.
    fn pending_key_pos(&self) -> Option<Pos> {
        match self.stack.last() {
            Some(Open {
                frame: Frame::Map(_, _, Some((_, pos))),
                ..
            }) => Some(*pos),
            _ => None,
        }
    }

    fn expects_key(&self) -> bool {
        matches!(
            self.stack.last(),
            Some(Open {
                frame: Frame::Map(_, _, None),
                ..
            })
        )
    }

    fn key(&mut self, text: String, pos: Pos, anchor: usize) -> Result<(), SyntaxError> {
        if anchor > 0 {
            let bytes = text.len();
            self.count(pos, 1, bytes)?;
            self.anchors.insert(
                anchor,
                Anchored {
                    value: Value::String(text.clone()),
                    nodes: 1,
                    bytes,
                },
            );
        }
        let Some(Open {
            frame: Frame::Map(map, entries, pending),
            at,
            ..
        }) = self.stack.last_mut()
        else {
            return Ok(());
        };
        if map.contains_key(&text) {
            let first = entries.get(&text).and_then(|n| n.at.key);
            return Err(
                SyntaxError::new(pos, format!("duplicate key `{text}`")).help(match first {
                    Some(p) => format!("`{text}` is already set on line {}; keep one", p.line),
                    None => format!("`{text}` is already set in this mapping; keep one"),
                }),
            );
        }
        // yaml-rust2 marks a block mapping's start at its first key's `:`;
        // the mapping starts at that key.
        if map.is_empty() && pos < *at {
            *at = pos;
        }
        *pending = Some((text, pos));
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
        self.count(pos, 1, 0)?;
        self.stack.push(Open {
            frame,
            at: pos,
            anchor,
            nodes_at_start: self.nodes,
            bytes_at_start: self.bytes,
        });
        Ok(())
    }

    fn close(&mut self, pos: Pos) -> Result<(), SyntaxError> {
        let Some(open) = self.stack.pop() else {
            return Ok(());
        };
        let (value, children) = match open.frame {
            Frame::Seq(items, positions) => (Value::Array(items), Children::Seq(positions)),
            Frame::Map(map, entries, _) => (Value::Object(map), Children::Map(entries)),
        };
        if open.anchor > 0 {
            // The copy kept for aliases costs what the node does.
            let nodes = self.nodes - open.nodes_at_start + 1;
            let bytes = self.bytes - open.bytes_at_start;
            self.count(pos, nodes, bytes)?;
            self.anchors.insert(
                open.anchor,
                Anchored {
                    value: value.clone(),
                    nodes,
                    bytes,
                },
            );
        }
        let tree = PosTree {
            at: NodePos {
                value: open.at,
                key: None,
            },
            children,
        };
        self.attach(value, tree, pos)
    }

    /// Adds a scalar or an alias's value; `anchor` is the scalar's anchor
    /// and its length.
    fn insert(
        &mut self,
        value: Value,
        pos: Pos,
        anchor: Option<(usize, usize)>,
    ) -> Result<(), SyntaxError> {
        if let Some((a, bytes)) = anchor.filter(|(a, _)| *a > 0) {
            self.count(pos, 1, bytes)?;
            self.anchors.insert(
                a,
                Anchored {
                    value: value.clone(),
                    nodes: 1,
                    bytes,
                },
            );
        }
        self.attach(value, PosTree::leaf(pos), pos)
    }

    /// Puts a finished value and its positions into its parent (or makes it
    /// the root).
    fn attach(&mut self, value: Value, mut tree: PosTree, pos: Pos) -> Result<(), SyntaxError> {
        match self.stack.last_mut() {
            None => {
                self.root = Some(value);
                self.root_pos = Some(tree);
                Ok(())
            }
            Some(Open {
                frame: Frame::Seq(items, positions),
                ..
            }) => {
                items.push(value);
                positions.push(tree);
                Ok(())
            }
            Some(Open {
                frame: Frame::Map(map, entries, pending),
                ..
            }) => match pending.take() {
                Some((key, key_pos)) => {
                    tree.at.key = Some(key_pos);
                    entries.insert(key.clone(), tree);
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
    fn keys_with_slashes_and_tildes_are_found_by_pointer() {
        let doc = parse("a/b:\n  c~d: 1\n  list: [x, {y: 2}]\n").unwrap();
        assert_eq!(at(&doc, "/a~1b/c~0d"), (2, 8));
        assert_eq!(at(&doc, "/a~1b/list/1/y"), (3, 17));
        assert!(doc.has("/a~1b/list/1"));
        assert!(!doc.has("/a~1b/list/2"));
        assert!(!doc.has("/a~1b/missing"));
        // Not written: the nearest ancestor that is.
        assert_eq!(at(&doc, "/a~1b/list/7/z"), (3, 9));
        assert_eq!(
            doc.node("/a~1b/c~0d").key.map(|p| (p.line, p.column)),
            Some((2, 3))
        );
    }

    #[test]
    fn an_alias_is_positioned_at_the_alias() {
        let doc = parse("a: &x {b: 1}\nc: *x\n").unwrap();
        assert_eq!(at(&doc, "/c"), (2, 4));
        assert_eq!(at(&doc, "/c/b"), (2, 4));
        assert_eq!(at(&doc, "/a/b"), (1, 11));
    }

    #[test]
    fn aliases_repeating_long_text_are_refused() {
        // 60 KB of text repeated 100 times: few nodes, 6 MB of values.
        let long = "x".repeat(60_000);
        let aliases = vec!["*a"; 100].join(", ");
        let e = parse(&format!("a: &a {long}\nb: [{aliases}]\n")).unwrap_err();
        assert!(e.message.contains("MiB of keys and values"), "{e:?}");
        assert_eq!(e.pos.line, 2);
    }

    #[test]
    fn copies_kept_for_nested_anchors_count() {
        // Each anchor keeps a copy of everything under it: 60 nested
        // anchors over 5,000 items would be 300,000 nodes.
        let mut text = String::new();
        for depth in 0..60 {
            text.push_str(&format!("{}k{depth}: &a{depth}\n", " ".repeat(depth)));
        }
        text.push_str(&" ".repeat(60));
        text.push_str(&format!("[{}]\n", vec!["1"; 5_000].join(",")));
        let e = parse(&text).unwrap_err();
        assert!(e.message.contains("more than 200000 nodes"), "{e:?}");
    }

    #[test]
    fn long_keys_nested_deep_parse_with_their_positions() {
        // The file that took 1.26 GB with a pointer per node.
        let key = "/".repeat(1000);
        let mut text = String::new();
        for depth in 0..60 {
            text.push_str(&format!("{}{key}:\n", " ".repeat(depth)));
        }
        text.push_str(&format!(
            "{}[{}]\n",
            " ".repeat(60),
            vec!["1"; 10_000].join(",")
        ));
        let doc = parse(&text).unwrap();
        let segment = escape(&key);
        let list = format!("/{}", vec![segment.as_str(); 60].join("/"));
        assert_eq!(at(&doc, &format!("{list}/0")), (61, 62));
        assert_eq!(at(&doc, &format!("{list}/9999")), (61, 20060));
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
