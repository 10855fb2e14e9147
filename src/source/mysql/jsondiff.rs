//! MySQL partial JSON updates (`binlog_row_value_options=PARTIAL_JSON`): the diffs a
//! PARTIAL_UPDATE_ROWS event carries instead of a JSON column's new value, and their
//! application to the document before the update.
//!
//! Format of one column's diff list (MySQL `Json_diff_vector::write_binary`, after the 4-byte
//! length): a sequence of diffs, each an operation byte (0 REPLACE, 1 INSERT, 2 REMOVE), a
//! path (packed-integer length + text such as `$.a[2]."b c"`), and for REPLACE and INSERT a
//! value (packed-integer length + binary JSON).
//!
//! Semantics follow MySQL's `apply_json_diffs` (sql/json_diff.cc), which a MySQL replica
//! runs: REPLACE needs the path to exist; INSERT needs the parent to exist and adds an object
//! member that must not exist yet, or an array element at the index (shifting later elements;
//! an index past the end appends); REMOVE needs the member or element to exist. Paths never
//! auto-wrap scalars into arrays. One deliberate difference: MySQL's replica refuses a diff on
//! the root path `$` (its source never writes one: it logs the full value instead); here a
//! REPLACE of `$` replaces the whole document, which is what it means, and INSERT/REMOVE of
//! `$` are refused.
//!
//! Guarantees: no panic on any input; a diff that MySQL would reject, a malformed path or
//! value, or a result nested deeper than [`MAX_DEPTH`] is a [`JsonDiffError`] naming the
//! operation and the path, never a document that differs from what MySQL stored.
//!
//! Why not `mysql_common`'s `binlog::jsondiff` (0.37.3, re-exported by `mysql_async::binlog`):
//! its `JsonDiff` only reads one diff's operation, path and value, which [`Diffs`] does in a
//! few lines. It does not parse the path (it hands back the bytes: `$[*` and a non-UTF-8 path
//! read without complaint), and nothing in the crate applies diffs to a document: its row
//! decoder returns `BinlogValue::JsonDiff(Vec<JsonDiff>)` and leaves the rest, which is this
//! module's work, to the caller. Its values are `binlog::jsonb` values, whose printing does
//! not keep MySQL's key order or DECIMALs as numbers (see [`super::jsonb`]). And like that
//! module it is reachable only through `mysql_common`'s row decoder, since `mysql_async`
//! does not re-export `ParseBuf`.

use std::fmt;

use super::decode::{self, read_packed_int};
use super::jsonb::{JsonNode, JsonbError, MAX_DEPTH, key_order};

/// What a diff does at its path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiffOp {
    /// Replace the existing value at the path.
    Replace,
    /// Add an object member or array element at the path.
    Insert,
    /// Delete the value at the path.
    Remove,
}

impl fmt::Display for DiffOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DiffOp::Replace => "REPLACE",
            DiffOp::Insert => "INSERT",
            DiffOp::Remove => "REMOVE",
        })
    }
}

/// Why a diff list cannot be read or applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JsonDiffError {
    /// The diff bytes are truncated or malformed.
    #[error("malformed JSON diff: {0}")]
    Malformed(String),
    /// A diff's path is not a path MySQL writes.
    #[error("invalid JSON path {path}: {reason}")]
    BadPath {
        /// The path as logged.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A diff's value is not valid binary JSON.
    #[error("JSON diff {op} {path}: invalid value: {error}")]
    BadValue {
        /// The operation.
        op: DiffOp,
        /// The path as logged.
        path: String,
        /// What is wrong with the value.
        error: JsonbError,
    },
    /// The document before the update is not valid binary JSON.
    #[error("JSON diff {op} {path}: the document before the update is invalid: {error}")]
    BadDocument {
        /// The first diff's operation.
        op: DiffOp,
        /// The first diff's path.
        path: String,
        /// What is wrong with the document.
        error: JsonbError,
    },
    /// The diff cannot apply to the document (MySQL's replica would reject it too).
    #[error("JSON diff {op} {path} cannot be applied: {reason}")]
    CannotApply {
        /// The operation.
        op: DiffOp,
        /// The path as logged.
        path: String,
        /// Why.
        reason: String,
    },
}

/// One step of a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathLeg {
    /// `.name` or `."quoted name"`: an object member.
    Member(String),
    /// `[n]`, `[last]` or `[last-n]`: an array element.
    Cell(ArrayIndex),
}

/// An array index as written in a path: from the start (`[n]`) or from the end (`[last-n]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArrayIndex {
    /// The number in the path (0 for `last`).
    pub index: u32,
    /// Counted from the last element.
    pub from_end: bool,
}

impl ArrayIndex {
    /// The position in an array of `len` elements, and whether an element is there
    /// (MySQL's `Json_array_index`): positions before the start clamp to 0, after the end
    /// to `len`.
    pub fn resolve(self, len: usize) -> (usize, bool) {
        let index = self.index as usize;
        let within = index < len;
        let position = match (self.from_end, within) {
            (false, _) => index.min(len),
            (true, true) => len - index - 1,
            (true, false) => 0,
        };
        (position, within)
    }
}

/// A parsed MySQL JSON path without wildcards, ranges or `**` (the only kind a diff carries).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonPath {
    /// The steps from the document root (`$` has none).
    pub legs: Vec<PathLeg>,
}

impl JsonPath {
    /// Parses a path as MySQL's `Json_path::parse_path` does (whitespace between legs is
    /// allowed; unquoted member names must be identifiers), refusing wildcards, ranges and
    /// `**`, which cannot address a single value.
    pub fn parse(text: &[u8]) -> Result<JsonPath, JsonDiffError> {
        let bad = |reason: &str| JsonDiffError::BadPath {
            path: String::from_utf8_lossy(text).into_owned(),
            reason: reason.to_owned(),
        };
        let text = std::str::from_utf8(text).map_err(|_| bad("not UTF-8"))?;
        parse_legs(text)
            .map(|legs| JsonPath { legs })
            .map_err(|reason| bad(&reason))
    }
}

/// MySQL's path whitespace (`my_isspace` in utf8mb4: space, \t, \n, \v, \f, \r).
fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0B | 0x0C | b'\r')
}

fn skip_space(s: &str) -> &str {
    s.trim_start_matches(|c: char| c.is_ascii() && is_space(c as u8))
}

fn parse_legs(text: &str) -> Result<Vec<PathLeg>, String> {
    let mut rest = skip_space(text)
        .strip_prefix('$')
        .ok_or("a path starts with $")?;
    let mut legs = Vec::new();
    loop {
        rest = skip_space(rest);
        let Some(first) = rest.bytes().next() else {
            return Ok(legs);
        };
        rest = &rest[1..];
        match first {
            b'.' => {
                let (name, after) = parse_member(skip_space(rest))?;
                legs.push(PathLeg::Member(name));
                rest = after;
            }
            b'[' => {
                let (index, after) = parse_cell(skip_space(rest))?;
                legs.push(PathLeg::Cell(index));
                rest = after;
            }
            b'*' => return Err("`**` matches many values; a diff path addresses one".into()),
            other => {
                return Err(format!(
                    "unexpected {:?} where a leg (`.member` or `[index]`) starts",
                    char::from(other)
                ));
            }
        }
    }
}

/// A member name after the `.`: quoted (a JSON string) or an unquoted identifier.
fn parse_member(s: &str) -> Result<(String, &str), String> {
    let bytes = s.as_bytes();
    match bytes.first() {
        None => Err("the path ends after `.`".into()),
        Some(b'*') => Err("`.*` matches many values; a diff path addresses one".into()),
        Some(b'"') => {
            // The name ends at the next quote that no backslash escapes.
            let mut i = 1;
            let end = loop {
                match bytes.get(i) {
                    None => return Err("unterminated quoted member name".into()),
                    Some(b'\\') => i += 2,
                    Some(b'"') => break i + 1,
                    Some(_) => i += 1,
                }
            };
            let (quoted, rest) = s.split_at(end);
            let name = serde_json::from_str::<String>(quoted)
                .map_err(|e| format!("quoted member name {quoted}: {e}"))?;
            Ok((name, rest))
        }
        Some(_) => {
            let end = bytes
                .iter()
                .position(|&b| is_space(b) || matches!(b, b'[' | b'.' | b'*'))
                .unwrap_or(bytes.len());
            let (raw, rest) = s.split_at(end);
            // MySQL unescapes an unquoted name as the body of a JSON string.
            let name = serde_json::from_str::<String>(&format!("\"{raw}\""))
                .map_err(|_| format!("member name {raw:?} is not a valid name"))?;
            if !is_identifier(&name) {
                return Err(format!(
                    "member name {raw:?} must be quoted (it is not an identifier)"
                ));
            }
            Ok((name, rest))
        }
    }
}

/// An unquoted member name MySQL accepts: a letter, `$` or `_`, then also digits. MySQL's
/// letter test on non-ASCII code points is loose; any non-ASCII character is taken as a
/// letter here, so every name a server writes unquoted is read.
fn is_identifier(name: &str) -> bool {
    let start = |c: char| c.is_ascii_alphabetic() || c == '$' || c == '_' || !c.is_ascii();
    let mut chars = name.chars();
    chars.next().is_some_and(start) && chars.all(|c| start(c) || c.is_ascii_digit())
}

/// An array index after the `[`, through the closing `]`.
fn parse_cell(s: &str) -> Result<(ArrayIndex, &str), String> {
    if s.starts_with('*') {
        return Err("`[*]` matches many values; a diff path addresses one".into());
    }
    let (from_end, s) = match s.strip_prefix("last") {
        Some(after) => match skip_space(after).strip_prefix('-') {
            Some(minus) => (true, skip_space(minus)),
            None => {
                return close_cell(
                    ArrayIndex {
                        index: 0,
                        from_end: true,
                    },
                    after,
                );
            }
        },
        None => (false, s),
    };
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return Err("an array index is a number, `last` or `last-N`".into());
    }
    let (number, rest) = s.split_at(digits);
    let index = number
        .parse::<u32>()
        .map_err(|_| format!("array index {number} is larger than 4294967295"))?;
    close_cell(ArrayIndex { index, from_end }, rest)
}

fn close_cell(index: ArrayIndex, rest: &str) -> Result<(ArrayIndex, &str), String> {
    let rest = skip_space(rest);
    if let Some(after) = rest.strip_prefix("to")
        && after.bytes().next().is_some_and(is_space)
    {
        return Err("an array range matches many values; a diff path addresses one".into());
    }
    rest.strip_prefix(']')
        .map(|after| (index, after))
        .ok_or_else(|| "expected `]` after the array index".into())
}

/// One diff as logged, borrowing the event bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonDiff<'a> {
    /// The operation.
    pub op: DiffOp,
    /// The path text as logged (UTF-8 not yet checked).
    pub path: &'a [u8],
    /// The binary JSON value of REPLACE and INSERT.
    pub value: Option<&'a [u8]>,
}

impl JsonDiff<'_> {
    /// The path for messages.
    fn path_text(&self) -> String {
        String::from_utf8_lossy(self.path).into_owned()
    }

    /// Applies this diff to `doc` with MySQL's semantics (see the module docs).
    pub fn apply(&self, doc: &mut JsonNode) -> Result<(), JsonDiffError> {
        let path = JsonPath::parse(self.path)?;
        let refuse = |reason: &str| JsonDiffError::CannotApply {
            op: self.op,
            path: self.path_text(),
            reason: reason.to_owned(),
        };
        // An empty value is JSON null, as MySQL's `parse_binary` reads it.
        let value = match self.value {
            Some(bytes) => {
                let value =
                    JsonNode::from_binary(bytes).map_err(|error| JsonDiffError::BadValue {
                        op: self.op,
                        path: self.path_text(),
                        error,
                    })?;
                if path.legs.len() + value.depth() > MAX_DEPTH {
                    return Err(refuse(&format!(
                        "the document would nest deeper than {MAX_DEPTH} levels"
                    )));
                }
                Some(value)
            }
            None => None,
        };
        match (self.op, value) {
            (DiffOp::Replace, Some(value)) => {
                let target = seek(doc, &path.legs)
                    .ok_or_else(|| refuse("the path is not in the document before the update"))?;
                *target = value;
                Ok(())
            }
            (DiffOp::Insert, Some(value)) => {
                let (last, parent) = path
                    .legs
                    .split_last()
                    .ok_or_else(|| refuse("cannot insert at the document root"))?;
                let parent = seek(doc, parent).ok_or_else(|| {
                    refuse("the parent of the path is not in the document before the update")
                })?;
                match (parent, last) {
                    (JsonNode::Object(members), PathLeg::Member(name)) => {
                        if members.iter().any(|(k, _)| k == name) {
                            return Err(refuse("the member already exists"));
                        }
                        let at = members
                            .iter()
                            .position(|(k, _)| key_order(k, name).is_gt())
                            .unwrap_or(members.len());
                        members.insert(at, (name.clone(), value));
                        Ok(())
                    }
                    (JsonNode::Array(items), PathLeg::Cell(index)) => {
                        let (at, _) = index.resolve(items.len());
                        items.insert(at, value);
                        Ok(())
                    }
                    _ => Err(refuse(
                        "the parent is not an object (for `.member`) or an array (for `[index]`)",
                    )),
                }
            }
            (DiffOp::Remove, None) => {
                let (last, parent) = path
                    .legs
                    .split_last()
                    .ok_or_else(|| refuse("cannot remove the document root"))?;
                let parent = seek(doc, parent).ok_or_else(|| {
                    refuse("the parent of the path is not in the document before the update")
                })?;
                match (parent, last) {
                    (JsonNode::Object(members), PathLeg::Member(name)) => {
                        let at = members
                            .iter()
                            .position(|(k, _)| k == name)
                            .ok_or_else(|| refuse("the member does not exist"))?;
                        members.remove(at);
                        Ok(())
                    }
                    (JsonNode::Array(items), PathLeg::Cell(index)) => {
                        let (at, within) = index.resolve(items.len());
                        if !within {
                            return Err(refuse("the array has no element at that index"));
                        }
                        items.remove(at);
                        Ok(())
                    }
                    _ => Err(refuse(
                        "the parent is not an object (for `.member`) or an array (for `[index]`)",
                    )),
                }
            }
            // The reader pairs values with operations; this cannot be reached from bytes.
            _ => Err(refuse("operation and value do not match")),
        }
    }
}

/// The value at `legs` from `node`, without auto-wrapping (MySQL's `seek_exact_path`).
fn seek<'d>(mut node: &'d mut JsonNode, legs: &[PathLeg]) -> Option<&'d mut JsonNode> {
    for leg in legs {
        node = match (node, leg) {
            (JsonNode::Array(items), PathLeg::Cell(index)) => {
                let (at, within) = index.resolve(items.len());
                if !within {
                    return None;
                }
                items.get_mut(at)?
            }
            (JsonNode::Object(members), PathLeg::Member(name)) => {
                &mut members.iter_mut().find(|(k, _)| k == name)?.1
            }
            _ => return None,
        };
    }
    Some(node)
}

/// Reads the diffs of one column's diff list (the bytes after its 4-byte length).
pub struct Diffs<'a> {
    rest: &'a [u8],
}

impl<'a> Diffs<'a> {
    /// The diffs in `bytes`, in order.
    pub fn new(bytes: &'a [u8]) -> Diffs<'a> {
        Diffs { rest: bytes }
    }

    fn read(&mut self) -> Result<JsonDiff<'a>, JsonDiffError> {
        let malformed = JsonDiffError::Malformed;
        let op = match decode::take(&mut self.rest, 1).map_err(malformed)?[0] {
            0 => DiffOp::Replace,
            1 => DiffOp::Insert,
            2 => DiffOp::Remove,
            other => return Err(malformed(format!("unknown operation {other}"))),
        };
        let path = take_counted(&mut self.rest, "path")?;
        let value = match op {
            DiffOp::Remove => None,
            _ => Some(take_counted(&mut self.rest, "value")?),
        };
        Ok(JsonDiff { op, path, value })
    }
}

impl<'a> Iterator for Diffs<'a> {
    type Item = Result<JsonDiff<'a>, JsonDiffError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let diff = self.read();
        if diff.is_err() {
            self.rest = &[];
        }
        Some(diff)
    }
}

/// A packed-integer length and that many bytes.
fn take_counted<'a>(buf: &mut &'a [u8], what: &str) -> Result<&'a [u8], JsonDiffError> {
    let malformed = |e: String| JsonDiffError::Malformed(format!("{what}: {e}"));
    let len = read_packed_int(buf).map_err(malformed)?;
    let len = usize::try_from(len).map_err(|_| malformed(format!("length {len}")))?;
    decode::take(buf, len).map_err(malformed)
}

/// The JSON column's value before the update, as the before image carries it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Before<'a> {
    /// The binary JSON document.
    Document(&'a [u8]),
    /// SQL NULL.
    Null,
    /// The before image does not carry the column (`binlog_row_image` is not FULL).
    NotLogged,
}

/// Applies a column's diff list to its document before the update and returns the new
/// document as compact JSON text (the form of [`super::jsonb::to_json_text`]).
pub fn apply_diffs(before: Before<'_>, diffs: &[u8]) -> Result<String, JsonDiffError> {
    let mut diffs = Diffs::new(diffs).peekable();
    let first = match diffs.peek() {
        Some(Ok(d)) => Some((d.op, d.path_text())),
        Some(Err(e)) => return Err(e.clone()),
        None => None,
    };
    let describe = || {
        first
            .clone()
            .unwrap_or((DiffOp::Replace, "(no diffs)".into()))
    };
    let mut doc = match before {
        Before::Document(bytes) => JsonNode::from_binary(bytes).map_err(|error| {
            let (op, path) = describe();
            JsonDiffError::BadDocument { op, path, error }
        })?,
        Before::Null => {
            let (op, path) = describe();
            return Err(JsonDiffError::CannotApply {
                op,
                path,
                reason: "the column was NULL before the update (MySQL applies JSON diffs only \
                         to a document)"
                    .into(),
            });
        }
        Before::NotLogged => {
            let (op, path) = describe();
            return Err(JsonDiffError::CannotApply {
                op,
                path,
                reason: "the before image does not carry this column, so the document the \
                         diff applies to is unknown; set binlog_row_image=FULL on the source \
                         (SET GLOBAL binlog_row_image='FULL' and in my.cnf)"
                    .into(),
            });
        }
    };
    for diff in diffs {
        diff?.apply(&mut doc)?;
    }
    Ok(doc.to_json_text())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(s: &str) -> Vec<PathLeg> {
        JsonPath::parse(s.as_bytes())
            .unwrap_or_else(|e| panic!("{s}: {e}"))
            .legs
    }

    fn member(s: &str) -> PathLeg {
        PathLeg::Member(s.to_owned())
    }

    fn cell(index: u32) -> PathLeg {
        PathLeg::Cell(ArrayIndex {
            index,
            from_end: false,
        })
    }

    fn last(index: u32) -> PathLeg {
        PathLeg::Cell(ArrayIndex {
            index,
            from_end: true,
        })
    }

    #[test]
    fn paths_parse_like_mysql() {
        assert_eq!(path("$"), []);
        assert_eq!(path(" $ "), []);
        assert_eq!(path("$.a"), [member("a")]);
        assert_eq!(path(r#"$."a b""#), [member("a b")]);
        assert_eq!(path(r#"$."a\"b\\c\u00e9""#), [member("a\"b\\cé")]);
        assert_eq!(path(r#"$."""#), [member("")]);
        assert_eq!(path("$[0]"), [cell(0)]);
        assert_eq!(path("$.a[2].b"), [member("a"), cell(2), member("b")]);
        assert_eq!(path("$ . a [ 2 ] . b"), [member("a"), cell(2), member("b")]);
        assert_eq!(path("$[last]"), [last(0)]);
        assert_eq!(path("$[last - 3]"), [last(3)]);
        assert_eq!(path("$[4294967295]"), [cell(u32::MAX)]);
        assert_eq!(path("$.$x_1.é"), [member("$x_1"), member("é")]);
        assert_eq!(path(r"$.\u0061b"), [member("ab")]);
        assert_eq!(
            path(r#"$."a.b"[1]."[c]""#),
            [member("a.b"), cell(1), member("[c]")]
        );
    }

    #[test]
    fn bad_paths_are_refused() {
        for bad in [
            "",
            "a",
            "$.",
            "$a",
            "$.1a",
            "$.a-b",
            "$.a b",
            "$[",
            "$[]",
            "$[x]",
            "$[-1]",
            "$[1",
            "$[lastx]",
            "$[last-]",
            "$[4294967296]",
            "$.*",
            "$[*]",
            "$**.a",
            "$[1 to 3]",
            r#"$."a"#,
            r#"$."a\q""#,
            "$.a]",
        ] {
            let e = JsonPath::parse(bad.as_bytes()).unwrap_err();
            assert!(
                matches!(&e, JsonDiffError::BadPath { path, .. } if path == bad),
                "{bad}: {e}"
            );
        }
        assert!(JsonPath::parse(b"$.\xff").is_err());
    }

    #[test]
    fn array_indexes_resolve_like_mysql() {
        let at = |index, from_end, len| ArrayIndex { index, from_end }.resolve(len);
        assert_eq!(at(1, false, 3), (1, true));
        assert_eq!(at(5, false, 3), (3, false));
        assert_eq!(at(0, true, 3), (2, true));
        assert_eq!(at(2, true, 3), (0, true));
        assert_eq!(at(3, true, 3), (0, false));
        assert_eq!(at(0, true, 0), (0, false));
    }

    // --- a small binary JSON encoder for test values -------------------------------------

    /// Binary JSON of a document given as JSON text (small containers only).
    fn bin(json: &str) -> Vec<u8> {
        let v: serde_json::Value = serde_json::from_str(json).unwrap();
        let (ty, body) = encode(&v);
        let mut out = vec![ty];
        out.extend(body);
        out
    }

    fn encode(v: &serde_json::Value) -> (u8, Vec<u8>) {
        use serde_json::Value as J;
        match v {
            J::Null => (0x04, vec![0]),
            J::Bool(true) => (0x04, vec![1]),
            J::Bool(false) => (0x04, vec![2]),
            J::Number(n) if n.is_i64() => (0x09, n.as_i64().unwrap().to_le_bytes().to_vec()),
            J::Number(n) => (0x0B, n.as_f64().unwrap().to_le_bytes().to_vec()),
            J::String(s) => {
                assert!(s.len() < 128);
                let mut out = vec![s.len() as u8];
                out.extend_from_slice(s.as_bytes());
                (0x0C, out)
            }
            J::Array(items) => (
                0x02,
                container(items.iter().map(|v| ("", v)).collect(), false),
            ),
            J::Object(map) => {
                let mut members: Vec<(&str, &serde_json::Value)> =
                    map.iter().map(|(k, v)| (k.as_str(), v)).collect();
                members.sort_by(|a, b| key_order(a.0, b.0));
                (0x00, container(members, true))
            }
        }
    }

    fn container(entries: Vec<(&str, &serde_json::Value)>, object: bool) -> Vec<u8> {
        let n = entries.len();
        let header = 4 + if object { n * 4 } else { 0 } + n * 3;
        let mut key_entries = Vec::new();
        let mut keys = Vec::new();
        let mut pos = header;
        if object {
            for (k, _) in &entries {
                key_entries.extend_from_slice(&(pos as u16).to_le_bytes());
                key_entries.extend_from_slice(&(k.len() as u16).to_le_bytes());
                keys.extend_from_slice(k.as_bytes());
                pos += k.len();
            }
        }
        let mut value_entries = Vec::new();
        let mut values = Vec::new();
        for (_, v) in entries {
            let (ty, body) = encode(v);
            value_entries.push(ty);
            if ty == 0x04 {
                // Literals are inlined in their entry.
                value_entries.extend_from_slice(&[body[0], 0]);
            } else {
                value_entries.extend_from_slice(&((pos + values.len()) as u16).to_le_bytes());
                values.extend(body);
            }
        }
        let mut out = Vec::new();
        out.extend_from_slice(&(n as u16).to_le_bytes());
        out.extend_from_slice(&((pos + values.len()) as u16).to_le_bytes());
        out.extend(key_entries);
        out.extend(value_entries);
        out.extend(keys);
        out.extend(values);
        out
    }

    /// The bytes of one diff.
    fn diff(op: u8, path: &str, value: Option<&str>) -> Vec<u8> {
        let mut out = vec![op];
        packed(&mut out, path.len());
        out.extend_from_slice(path.as_bytes());
        if let Some(v) = value {
            let v = bin(v);
            packed(&mut out, v.len());
            out.extend(v);
        }
        out
    }

    /// MySQL's `net_store_length` for lengths below 2^16.
    fn packed(out: &mut Vec<u8>, len: usize) {
        if len < 251 {
            out.push(len as u8);
        } else {
            out.push(252);
            out.extend_from_slice(&(len as u16).to_le_bytes());
        }
    }

    fn apply(doc: &str, diffs: &[Vec<u8>]) -> Result<String, JsonDiffError> {
        apply_diffs(Before::Document(&bin(doc)), &diffs.concat())
    }

    fn ok(doc: &str, diffs: &[Vec<u8>]) -> String {
        apply(doc, diffs).unwrap_or_else(|e| panic!("{doc}: {e}"))
    }

    #[test]
    fn replace_changes_existing_values_only() {
        let doc = r#"{"a":{"b":[1,2,3]},"name":"Joe"}"#;
        assert_eq!(
            ok(doc, &[diff(0, "$.name", Some(r#""Sue""#))]),
            r#"{"a":{"b":[1,2,3]},"name":"Sue"}"#
        );
        assert_eq!(
            ok(doc, &[diff(0, "$.a.b[1]", Some(r#"{"x":null}"#))]),
            r#"{"a":{"b":[1,{"x":null},3]},"name":"Joe"}"#
        );
        assert_eq!(
            ok(doc, &[diff(0, "$.a.b[last]", Some("true"))]),
            r#"{"a":{"b":[1,2,true]},"name":"Joe"}"#
        );
        assert_eq!(ok(doc, &[diff(0, "$", Some("[1.5]"))]), "[1.5]");
        for missing in [
            "$.nope",
            "$.a.b[3]",
            "$.a.b[last-3]",
            "$.name[0]",
            "$.a[0]",
            "$[0]",
        ] {
            let e = apply(doc, &[diff(0, missing, Some("1"))]).unwrap_err();
            assert!(
                matches!(&e, JsonDiffError::CannotApply { op: DiffOp::Replace, path, .. } if path == missing),
                "{missing}: {e}"
            );
        }
    }

    #[test]
    fn insert_adds_members_in_mysql_key_order_and_shifts_array_elements() {
        let doc = r#"{"b":[10,20,30],"zz":{}}"#;
        // Keys sort shorter first, then bytewise, as MySQL stores them.
        assert_eq!(
            ok(doc, &[diff(1, "$.a", Some("1"))]),
            r#"{"a":1,"b":[10,20,30],"zz":{}}"#
        );
        assert_eq!(
            ok(doc, &[diff(1, "$.aaa", Some("1"))]),
            r#"{"b":[10,20,30],"zz":{},"aaa":1}"#
        );
        assert_eq!(
            ok(doc, &[diff(1, r#"$.zz."k 1""#, Some("[]"))]),
            r#"{"b":[10,20,30],"zz":{"k 1":[]}}"#
        );
        assert_eq!(
            ok(doc, &[diff(1, "$.b[1]", Some("15"))]),
            r#"{"b":[10,15,20,30],"zz":{}}"#
        );
        assert_eq!(
            ok(doc, &[diff(1, "$.b[0]", Some("5"))]),
            r#"{"b":[5,10,20,30],"zz":{}}"#
        );
        assert_eq!(
            ok(doc, &[diff(1, "$.b[99]", Some("40"))]),
            r#"{"b":[10,20,30,40],"zz":{}}"#
        );
        // `last` is the last element's position: inserting there puts the value before it.
        assert_eq!(
            ok(doc, &[diff(1, "$.b[last]", Some("25"))]),
            r#"{"b":[10,20,25,30],"zz":{}}"#
        );
        for refused in ["$.b", "$.b.x", "$.nope.x", "$.zz[0]", "$"] {
            let e = apply(doc, &[diff(1, refused, Some("1"))]).unwrap_err();
            assert!(
                matches!(&e, JsonDiffError::CannotApply { op: DiffOp::Insert, path, .. } if path == refused),
                "{refused}: {e}"
            );
        }
    }

    #[test]
    fn remove_deletes_members_and_elements() {
        let doc = r#"{"a":[1,[2,3],4],"b":{"c":1,"d":2}}"#;
        assert_eq!(
            ok(doc, &[diff(2, "$.b.c", None)]),
            r#"{"a":[1,[2,3],4],"b":{"d":2}}"#
        );
        assert_eq!(
            ok(doc, &[diff(2, "$.a[0]", None)]),
            r#"{"a":[[2,3],4],"b":{"c":1,"d":2}}"#
        );
        assert_eq!(
            ok(doc, &[diff(2, "$.a[1][last]", None)]),
            r#"{"a":[1,[2],4],"b":{"c":1,"d":2}}"#
        );
        assert_eq!(ok(doc, &[diff(2, "$.a", None)]), r#"{"b":{"c":1,"d":2}}"#);
        for refused in [
            "$.b.x",
            "$.a[3]",
            "$.a[last-3]",
            "$.a.x",
            "$.b[0]",
            "$.x.y",
            "$",
        ] {
            let e = apply(doc, &[diff(2, refused, None)]).unwrap_err();
            assert!(
                matches!(&e, JsonDiffError::CannotApply { op: DiffOp::Remove, path, .. } if path == refused),
                "{refused}: {e}"
            );
        }
    }

    #[test]
    fn diffs_apply_in_order() {
        let diffs = [
            diff(1, "$.list[0]", Some(r#""first""#)),
            diff(0, "$.list[1]", Some("2")),
            diff(2, "$.gone", None),
            diff(1, "$.new", Some(r#"{"deep":[true]}"#)),
        ];
        assert_eq!(
            ok(r#"{"gone":0,"list":[1]}"#, &diffs),
            r#"{"new":{"deep":[true]},"list":["first",2]}"#
        );
        // An empty list leaves the document as it was.
        assert_eq!(ok(r#"{"a":1}"#, &[]), r#"{"a":1}"#);
    }

    #[test]
    fn null_or_missing_documents_are_errors_naming_the_path() {
        let diffs = diff(0, "$.age", Some("26"));
        let e = apply_diffs(Before::Null, &diffs).unwrap_err();
        assert!(
            e.to_string().contains("$.age") && e.to_string().contains("NULL"),
            "{e}"
        );
        let e = apply_diffs(Before::NotLogged, &diffs).unwrap_err();
        assert!(
            e.to_string().contains("$.age") && e.to_string().contains("binlog_row_image=FULL"),
            "{e}"
        );
    }

    #[test]
    fn malformed_diff_lists_are_errors() {
        let doc = bin(r#"{"a":1}"#);
        let before = Before::Document(&doc);
        let good = diff(0, "$.a", Some("2"));
        for n in 1..good.len() {
            assert!(apply_diffs(before, &good[..n]).is_err(), "prefix {n}");
        }
        assert!(matches!(
            apply_diffs(before, &[3, 1, b'$']),
            Err(JsonDiffError::Malformed(_))
        ));
        // A value that is not binary JSON; an empty one is null, as MySQL reads it.
        assert!(matches!(
            apply_diffs(before, &[0, 3, b'$', b'.', b'a', 2, 0x0D, 0]),
            Err(JsonDiffError::BadValue { .. })
        ));
        assert_eq!(
            apply_diffs(before, &[0, 3, b'$', b'.', b'a', 0]).unwrap(),
            r#"{"a":null}"#
        );
        // A bad path, and a corrupt document before the update.
        assert!(matches!(
            apply_diffs(before, &diff(0, "$.a[", Some("2"))),
            Err(JsonDiffError::BadPath { .. })
        ));
        assert!(matches!(
            apply_diffs(Before::Document(&[0x0D]), &good),
            Err(JsonDiffError::BadDocument { .. })
        ));
        // Packed lengths: 252 takes two more bytes; 251 (NULL) and 255 are not lengths.
        let mut long = vec![0, 252, 3, 0];
        long.extend_from_slice(b"$.a");
        long.extend_from_slice(&[2, 0x04, 1]);
        assert_eq!(apply_diffs(before, &long).unwrap(), r#"{"a":true}"#);
        assert!(apply_diffs(before, &[0, 251]).is_err());
        assert!(apply_diffs(before, &[0, 255]).is_err());
    }

    #[test]
    fn results_deeper_than_mysql_allows_are_refused() {
        let deep = format!("{}{}", "[".repeat(MAX_DEPTH - 1), "]".repeat(MAX_DEPTH - 1));
        // Inside one object that is MAX_DEPTH levels: allowed.
        assert!(apply(r#"{"a":1}"#, &[diff(0, "$.a", Some(&deep))]).is_ok());
        let e = apply(r#"{"a":[1]}"#, &[diff(0, "$.a[0]", Some(&deep))]).unwrap_err();
        assert!(e.to_string().contains("deeper"), "{e}");
    }

    #[test]
    fn trees_print_exactly_like_the_text_converter() {
        for doc in [
            r#"{"age":24,"data":"xxxxxxxxxx","name":"Joe"}"#,
            r#"[1,-2.5,"a\"\n",null,true,false,{"":[]},[[]]]"#,
            r#""just a string""#,
            "12",
        ] {
            let b = bin(doc);
            let text = super::super::jsonb::to_json_text(&b).unwrap();
            assert_eq!(JsonNode::from_binary(&b).unwrap().to_json_text(), text);
        }
        assert_eq!(JsonNode::from_binary(&[]).unwrap().to_json_text(), "null");
    }
}
