//! MySQL binary JSON (the JSON column's storage and binlog format) to compact JSON text.
//!
//! Guarantees: the output is valid JSON equal to what MySQL prints for the document, except
//! that separators are compact (`,` and `:` without spaces). Keys keep their stored order,
//! integers print exactly, strings are validated UTF-8, and opaque values print as MySQL prints
//! them: DATE/TIME/DATETIME/TIMESTAMP as quoted strings (`"2015-01-15 23:24:25.000000"`),
//! DECIMAL as a number with exactly its stored digits and scale (`9.00`), anything else as `"base64:type<N>:<base64>"`. Malformed input
//! (bad offsets, truncation, unknown types, nesting deeper than [`MAX_DEPTH`], or documents
//! whose entries alias each other to blow up the output) is an error, never a panic.
//!
//! Why not `mysql_common`'s `binlog::jsonb` (0.37.3, which `mysql_async::binlog` re-exports):
//! it prints DATE/TIME/DATETIME/TIMESTAMP, `base64:type<N>:` opaques, escapes and 40-digit
//! decimal digits exactly as this module does, but, tried on the same inputs:
//! - Its text comes from `Value::parse` -> `JsonDom` -> `serde_json::Value` (the direct
//!   `TryFrom<Value> for serde_json::Value` refuses any opaque value), and on that path:
//!   - DECIMALs become JSON strings: `{"e":9.00}` prints `{"e":"9.00"}`, and the fixture
//!     `json-opaque.binlog`'s `{"d":123.456}` prints `{"d":"123.456"}`.
//!   - Object keys come out sorted bytewise (a `BTreeMap`, and serde_json without
//!     `preserve_order`), not in MySQL's stored order ([`key_order`]): stored `b, z, aa, ab`
//!     prints `{"aa":3,"ab":4,"b":1,"z":2}`. [`JsonNode`] and the diffs of
//!     [`super::jsondiff`] need MySQL's order.
//!   - Doubles print `1e+300` and `1e+16` where this module prints `1e300` and `1e16`; NaN
//!     and infinity (corrupt documents) print `0` instead of failing.
//!   - A key that is not UTF-8 becomes U+FFFD instead of an error.
//! - Corrupt documents can kill the process: an opaque DECIMAL whose scale exceeds its
//!   precision underflows in `decimal_bin_size` (a panic in debug builds; in release an
//!   allocation of 8.2e18 bytes that aborts). 253 of the 19,533 one-byte corruptions and
//!   truncations of a 60-byte test document hit it. Nesting has no limit and the decoder
//!   recurses once per level: 10,000 nested arrays (130 KB) overflow a 2 MiB stack (a tokio
//!   worker's) and 50,000 an 8 MiB one, which aborts. Entries aliasing one child are
//!   expanded without bound: 225 bytes printed as 21 MB, doubling with each level.
//! - `mysql_async` does not re-export `mysql_common::io::ParseBuf`, so a `jsonb::Value` can
//!   only come out of `mysql_common`'s row decoder, which [`super::layout`] replaces.

use std::fmt::Write;

use super::decode::{DecimalPlan, datetime_from_packed, time_micros_from_packed};
use crate::event::format_time_micros;

/// Deepest container nesting accepted (MySQL itself refuses documents deeper than 100).
pub const MAX_DEPTH: usize = 100;

/// Why a binary JSON document cannot be converted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid binary JSON: {0}")]
pub struct JsonbError(String);

type Result<T> = std::result::Result<T, JsonbError>;

fn err<T>(msg: impl Into<String>) -> Result<T> {
    Err(JsonbError(msg.into()))
}

const SMALL_OBJECT: u8 = 0x0;
const LARGE_OBJECT: u8 = 0x1;
const SMALL_ARRAY: u8 = 0x2;
const LARGE_ARRAY: u8 = 0x3;
const LITERAL: u8 = 0x4;
const INT16: u8 = 0x5;
const UINT16: u8 = 0x6;
const INT32: u8 = 0x7;
const UINT32: u8 = 0x8;
const INT64: u8 = 0x9;
const UINT64: u8 = 0xA;
const DOUBLE: u8 = 0xB;
const STRING: u8 = 0xC;
const OPAQUE: u8 = 0xF;

/// Converts one binary JSON document to compact JSON text (an empty document is `null`,
/// as MySQL reads it).
pub fn to_json_text(doc: &[u8]) -> Result<String> {
    let Some((&ty, body)) = doc.split_first() else {
        return Ok("null".to_owned());
    };
    let mut w = Writer {
        out: String::with_capacity(doc.len() + doc.len() / 2),
        nodes_left: doc.len(),
        max_out: doc.len().saturating_mul(16).saturating_add(1024),
    };
    w.value(ty, body, 0)?;
    Ok(w.out)
}

/// Output plus the budgets that stop aliasing entries from expanding without bound.
struct Writer {
    out: String,
    nodes_left: usize,
    max_out: usize,
}

impl Writer {
    /// Writes the value of type `ty` stored at the start of `data`.
    fn value(&mut self, ty: u8, data: &[u8], depth: usize) -> Result<()> {
        match ty {
            SMALL_OBJECT | LARGE_OBJECT | SMALL_ARRAY | LARGE_ARRAY => {
                if depth >= MAX_DEPTH {
                    return err(format!("nesting deeper than {MAX_DEPTH}"));
                }
                let large = ty == LARGE_OBJECT || ty == LARGE_ARRAY;
                let object = ty == SMALL_OBJECT || ty == LARGE_OBJECT;
                self.container(data, large, object, depth + 1)
            }
            LITERAL => self.literal(*data.first().ok_or_else(short)?),
            INT16 => self.int(i64::from(i16::from_le_bytes(fixed(data)?))),
            UINT16 => self.uint(u64::from(u16::from_le_bytes(fixed(data)?))),
            INT32 => self.int(i64::from(i32::from_le_bytes(fixed(data)?))),
            UINT32 => self.uint(u64::from(u32::from_le_bytes(fixed(data)?))),
            INT64 => self.int(i64::from_le_bytes(fixed(data)?)),
            UINT64 => self.uint(u64::from_le_bytes(fixed(data)?)),
            DOUBLE => self.double(f64::from_le_bytes(fixed(data)?)),
            STRING => {
                let (len, rest) = varlen(data)?;
                let s = rest.get(..len).ok_or_else(short)?;
                self.string(s)
            }
            OPAQUE => {
                let (&field_type, rest) = data.split_first().ok_or_else(short)?;
                let (len, rest) = varlen(rest)?;
                self.opaque(field_type, rest.get(..len).ok_or_else(short)?)
            }
            other => err(format!("unknown value type {other:#x}")),
        }
    }

    /// Writes an object or array whose header starts at `data[0]`.
    fn container(&mut self, data: &[u8], large: bool, object: bool, depth: usize) -> Result<()> {
        let container = Container::parse(data, large, object)?;
        self.out.push(if object { '{' } else { '[' });
        for i in 0..container.count {
            if self.nodes_left == 0 || self.out.len() > self.max_out {
                return err("entries alias each other (output would not be bounded)");
            }
            self.nodes_left -= 1;
            if i > 0 {
                self.out.push(',');
            }
            let entry = container.entry(i)?;
            if let Some(key) = entry.key {
                self.string(key)?;
                self.out.push(':');
            }
            self.value(entry.ty, entry.data, depth)?;
        }
        self.out.push(if object { '}' } else { ']' });
        Ok(())
    }

    fn literal(&mut self, b: u8) -> Result<()> {
        self.out.push_str(match b {
            0 => "null",
            1 => "true",
            2 => "false",
            other => return err(format!("unknown literal {other:#x}")),
        });
        Ok(())
    }

    fn int(&mut self, v: i64) -> Result<()> {
        let _ = write!(self.out, "{v}");
        Ok(())
    }

    fn uint(&mut self, v: u64) -> Result<()> {
        let _ = write!(self.out, "{v}");
        Ok(())
    }

    fn double(&mut self, v: f64) -> Result<()> {
        if !v.is_finite() {
            return err("non-finite double");
        }
        // `{:?}` is the shortest exact form and keeps a `.0` on integral values, as MySQL does.
        let _ = write!(self.out, "{v:?}");
        Ok(())
    }

    /// Writes UTF-8 `bytes` as a quoted JSON string, escaping like MySQL.
    fn string(&mut self, bytes: &[u8]) -> Result<()> {
        let s = std::str::from_utf8(bytes)
            .map_err(|e| JsonbError(format!("string is not UTF-8 at byte {}", e.valid_up_to())))?;
        self.quoted(s);
        Ok(())
    }

    fn quoted(&mut self, s: &str) {
        push_quoted(&mut self.out, s);
    }

    /// Writes an opaque value of MySQL field type `field_type` the way MySQL prints it.
    fn opaque(&mut self, field_type: u8, data: &[u8]) -> Result<()> {
        const TIMESTAMP: u8 = 7;
        const DATE: u8 = 10;
        const TIME: u8 = 11;
        const DATETIME: u8 = 12;
        const NEWDECIMAL: u8 = 246;
        let bad = |what: &str| JsonbError(format!("opaque {what}"));
        match field_type {
            NEWDECIMAL => {
                let [precision, scale, ref rest @ ..] = *data else {
                    return Err(bad("DECIMAL is truncated"));
                };
                let plan = DecimalPlan::new(precision, scale).map_err(|e| bad(&e))?;
                let text = plan.decode(&mut &rest[..]).map_err(|e| bad(&e))?;
                self.out.push_str(&text);
            }
            TIME => {
                let packed = i64::from_le_bytes(fixed(data)?);
                let micros = time_micros_from_packed(packed).map_err(|e| bad(&e))?;
                let mut text = format_time_micros(micros);
                if micros % 1_000_000 == 0 {
                    text.push_str(".000000");
                }
                self.quoted(&text);
            }
            DATE | DATETIME | TIMESTAMP => {
                let packed = i64::from_le_bytes(fixed(data)?);
                let dt = datetime_from_packed(packed).map_err(|e| bad(&e))?;
                let text = if field_type == DATE {
                    dt.date.to_string()
                } else {
                    format!(
                        "{} {:02}:{:02}:{:02}.{:06}",
                        dt.date, dt.hour, dt.minute, dt.second, dt.micros
                    )
                };
                self.quoted(&text);
            }
            other => {
                let _ = write!(self.out, "\"base64:type{other}:");
                base64_into(&mut self.out, data);
                self.out.push('"');
            }
        }
        Ok(())
    }
}

/// Appends `s` as a quoted JSON string, escaping like MySQL.
fn push_quoted(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// The checked header of a stored object or array: how many entries it has and where they are.
struct Container<'a> {
    /// The container's bytes, cut to its declared size.
    data: &'a [u8],
    large: bool,
    object: bool,
    count: usize,
}

/// One entry of a container: its key (objects only) and its value's type and bytes (the
/// inlined field, or the stored value onwards).
struct Entry<'a> {
    key: Option<&'a [u8]>,
    ty: u8,
    data: &'a [u8],
}

impl<'a> Container<'a> {
    /// Reads the header at `data[0]` and checks that the entry tables fit in the container.
    fn parse(data: &'a [u8], large: bool, object: bool) -> Result<Container<'a>> {
        let off = if large { 4 } else { 2 };
        let count = read_offset(data, 0, large)?;
        let size = read_offset(data, off, large)?;
        let data = data
            .get(..size)
            .ok_or_else(|| JsonbError(format!("container size {size} exceeds the document")))?;
        let keys_len = if object { count * (off + 2) } else { 0 };
        count
            .checked_mul(off + 1)
            .and_then(|v| v.checked_add(keys_len))
            .and_then(|v| v.checked_add(2 * off))
            .filter(|&header| header <= size)
            .ok_or_else(|| JsonbError(format!("{count} entries do not fit in {size} bytes")))?;
        Ok(Container {
            data,
            large,
            object,
            count,
        })
    }

    /// Entry `i` (< `count`).
    fn entry(&self, i: usize) -> Result<Entry<'a>> {
        let (data, large) = (self.data, self.large);
        let off = if large { 4 } else { 2 };
        let key_entry = off + 2;
        let value_entry = off + 1;
        let keys_len = if self.object {
            self.count * key_entry
        } else {
            0
        };
        let key = if self.object {
            let entry = 2 * off + i * key_entry;
            let key_off = read_offset(data, entry, large)?;
            let len_at = data.get(entry + off..).ok_or_else(short)?;
            let key_len = usize::from(u16::from_le_bytes(fixed(len_at)?));
            let key = key_off
                .checked_add(key_len)
                .and_then(|end| data.get(key_off..end))
                .ok_or_else(|| JsonbError("key out of bounds".to_owned()))?;
            Some(key)
        } else {
            None
        };
        let entry = 2 * off + keys_len + i * value_entry;
        let (ty, field) = data
            .get(entry..entry + value_entry)
            .and_then(|e| e.split_first())
            .ok_or_else(short)?;
        let ty = *ty;
        let inlined =
            matches!(ty, LITERAL | INT16 | UINT16) || (large && matches!(ty, INT32 | UINT32));
        let data = if inlined {
            field
        } else {
            let at = read_offset(field, 0, large)?;
            data.get(at..)
                .filter(|v| !v.is_empty())
                .ok_or_else(|| JsonbError(format!("value offset {at} out of bounds")))?
        };
        Ok(Entry { key, ty, data })
    }
}

/// A JSON document as a tree, for applying partial updates (see [`super::jsondiff`]).
///
/// Scalars keep the exact text [`to_json_text`] prints for them, so a tree prints back
/// byte for byte as the document it was read from. Object members keep MySQL's stored order
/// (see [`key_order`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JsonNode {
    /// A string, number, literal or opaque value, as compact JSON text.
    Scalar(String),
    /// An array's elements in order.
    Array(Vec<JsonNode>),
    /// An object's members (key, value) in MySQL's key order.
    Object(Vec<(String, JsonNode)>),
}

impl JsonNode {
    /// Reads a binary JSON document (an empty document is `null`, as MySQL reads it), with
    /// the same checks and bounds as [`to_json_text`].
    pub fn from_binary(doc: &[u8]) -> Result<JsonNode> {
        let Some((&ty, body)) = doc.split_first() else {
            return Ok(JsonNode::Scalar("null".to_owned()));
        };
        let mut builder = TreeBuilder {
            nodes_left: doc.len(),
            bytes_left: doc.len().saturating_mul(16).saturating_add(1024),
        };
        builder.node(ty, body, 0)
    }

    /// Compact JSON text, in the form [`to_json_text`] produces.
    pub fn to_json_text(&self) -> String {
        let mut out = String::new();
        self.write(&mut out);
        out
    }

    fn write(&self, out: &mut String) {
        match self {
            JsonNode::Scalar(text) => out.push_str(text),
            JsonNode::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    item.write(out);
                }
                out.push(']');
            }
            JsonNode::Object(members) => {
                out.push('{');
                for (i, (key, value)) in members.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    push_quoted(out, key);
                    out.push(':');
                    value.write(out);
                }
                out.push('}');
            }
        }
    }

    /// Container nesting: 0 for a scalar, 1 for `[]` or `{"a":1}`, and so on. Trees built
    /// here never exceed [`MAX_DEPTH`].
    pub fn depth(&self) -> usize {
        match self {
            JsonNode::Scalar(_) => 0,
            JsonNode::Array(items) => 1 + items.iter().map(JsonNode::depth).max().unwrap_or(0),
            JsonNode::Object(members) => {
                1 + members.iter().map(|(_, v)| v.depth()).max().unwrap_or(0)
            }
        }
    }
}

/// MySQL's order of object keys (in its binary format and its DOM): shorter keys first, then
/// bytewise.
pub fn key_order(a: &str, b: &str) -> std::cmp::Ordering {
    a.len()
        .cmp(&b.len())
        .then_with(|| a.as_bytes().cmp(b.as_bytes()))
}

/// Builds a [`JsonNode`] within budgets that stop aliasing entries from expanding it.
struct TreeBuilder {
    nodes_left: usize,
    bytes_left: usize,
}

impl TreeBuilder {
    fn spend(&mut self, bytes: usize) -> Result<()> {
        if self.nodes_left == 0 || self.bytes_left < bytes {
            return err("entries alias each other (output would not be bounded)");
        }
        self.nodes_left -= 1;
        self.bytes_left -= bytes;
        Ok(())
    }

    /// The value of type `ty` stored at the start of `data`.
    fn node(&mut self, ty: u8, data: &[u8], depth: usize) -> Result<JsonNode> {
        let (large, object) = match ty {
            SMALL_OBJECT => (false, true),
            LARGE_OBJECT => (true, true),
            SMALL_ARRAY => (false, false),
            LARGE_ARRAY => (true, false),
            _ => {
                let mut scalar = Writer {
                    out: String::new(),
                    nodes_left: 0,
                    max_out: usize::MAX,
                };
                scalar.value(ty, data, depth)?;
                self.spend(scalar.out.len())?;
                return Ok(JsonNode::Scalar(scalar.out));
            }
        };
        if depth >= MAX_DEPTH {
            return err(format!("nesting deeper than {MAX_DEPTH}"));
        }
        let container = Container::parse(data, large, object)?;
        if object {
            let mut members = Vec::with_capacity(container.count);
            for i in 0..container.count {
                let entry = container.entry(i)?;
                let key = std::str::from_utf8(entry.key.unwrap_or_default()).map_err(|e| {
                    JsonbError(format!("key is not UTF-8 at byte {}", e.valid_up_to()))
                })?;
                self.spend(key.len())?;
                let value = self.node(entry.ty, entry.data, depth + 1)?;
                members.push((key.to_owned(), value));
            }
            Ok(JsonNode::Object(members))
        } else {
            let mut items = Vec::with_capacity(container.count);
            for i in 0..container.count {
                self.spend(0)?;
                let entry = container.entry(i)?;
                items.push(self.node(entry.ty, entry.data, depth + 1)?);
            }
            Ok(JsonNode::Array(items))
        }
    }
}

fn short() -> JsonbError {
    JsonbError("document is truncated".to_owned())
}

/// The first `N` bytes of `data` as an array.
fn fixed<const N: usize>(data: &[u8]) -> Result<[u8; N]> {
    data.first_chunk::<N>().copied().ok_or_else(short)
}

/// A 2-byte (small) or 4-byte (large) little-endian offset or count at `at`.
fn read_offset(data: &[u8], at: usize, large: bool) -> Result<usize> {
    let rest = data.get(at..).ok_or_else(short)?;
    let v = if large {
        u32::from_le_bytes(fixed(rest)?) as usize
    } else {
        usize::from(u16::from_le_bytes(fixed(rest)?))
    };
    Ok(v)
}

/// A variable-length length: 7 bits per byte, least significant first, at most 5 bytes.
fn varlen(data: &[u8]) -> Result<(usize, &[u8])> {
    let mut len: u64 = 0;
    for (i, &b) in data.iter().enumerate().take(5) {
        len |= u64::from(b & 0x7F) << (7 * i);
        if b & 0x80 == 0 {
            let len = usize::try_from(len).map_err(|_| short())?;
            return Ok((len, &data[i + 1..]));
        }
    }
    err("bad variable-length length")
}

/// Standard base64 with padding, as MySQL prints opaque values.
fn base64_into(out: &mut String, data: &[u8]) {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small test encoder for containers: entries are (key, type, payload) where payload is
    /// either inlined (`Inline`) or stored after the header (`Stored`).
    enum Entry {
        Inline(u8, u16),
        Stored(u8, Vec<u8>),
    }

    fn small(object: bool, entries: Vec<(&str, Entry)>) -> Vec<u8> {
        let n = entries.len();
        let header = 4 + if object { n * 4 } else { 0 } + n * 3;
        let mut keys = Vec::new();
        let mut key_entries = Vec::new();
        let mut key_pos = header;
        if object {
            for (k, _) in &entries {
                key_entries.extend_from_slice(&(key_pos as u16).to_le_bytes());
                key_entries.extend_from_slice(&(k.len() as u16).to_le_bytes());
                keys.extend_from_slice(k.as_bytes());
                key_pos += k.len();
            }
        }
        let mut values = Vec::new();
        let mut value_entries = Vec::new();
        for (_, e) in entries {
            match e {
                Entry::Inline(ty, v) => {
                    value_entries.push(ty);
                    value_entries.extend_from_slice(&v.to_le_bytes());
                }
                Entry::Stored(ty, bytes) => {
                    value_entries.push(ty);
                    let at = key_pos + values.len();
                    value_entries.extend_from_slice(&(at as u16).to_le_bytes());
                    values.extend_from_slice(&bytes);
                }
            }
        }
        let size = key_pos + values.len();
        let mut out = Vec::new();
        out.extend_from_slice(&(n as u16).to_le_bytes());
        out.extend_from_slice(&(size as u16).to_le_bytes());
        out.extend(key_entries);
        out.extend(value_entries);
        out.extend(keys);
        out.extend(values);
        out
    }

    fn doc(ty: u8, body: Vec<u8>) -> String {
        let mut d = vec![ty];
        d.extend(body);
        to_json_text(&d).unwrap()
    }

    fn string(s: &str) -> Vec<u8> {
        let mut v = vec![s.len() as u8];
        v.extend_from_slice(s.as_bytes());
        v
    }

    #[test]
    fn scalars() {
        assert_eq!(to_json_text(&[]).unwrap(), "null");
        assert_eq!(doc(LITERAL, vec![0]), "null");
        assert_eq!(doc(LITERAL, vec![1]), "true");
        assert_eq!(doc(LITERAL, vec![2]), "false");
        assert_eq!(doc(INT16, (-5i16).to_le_bytes().to_vec()), "-5");
        assert_eq!(doc(UINT16, 65535u16.to_le_bytes().to_vec()), "65535");
        assert_eq!(doc(INT32, i32::MIN.to_le_bytes().to_vec()), "-2147483648");
        assert_eq!(doc(UINT32, u32::MAX.to_le_bytes().to_vec()), "4294967295");
        assert_eq!(
            doc(INT64, i64::MIN.to_le_bytes().to_vec()),
            "-9223372036854775808"
        );
        assert_eq!(
            doc(UINT64, u64::MAX.to_le_bytes().to_vec()),
            "18446744073709551615"
        );
        assert_eq!(doc(DOUBLE, 2.75f64.to_le_bytes().to_vec()), "2.75");
        assert_eq!(doc(DOUBLE, 1.0f64.to_le_bytes().to_vec()), "1.0");
        assert_eq!(doc(DOUBLE, (-1e300f64).to_le_bytes().to_vec()), "-1e300");
        assert_eq!(
            doc(STRING, string("a\"b\\c\n\u{1}é")),
            r#""a\"b\\c\n\u0001é""#
        );
    }

    #[test]
    fn long_strings_use_multi_byte_lengths() {
        let s = "x".repeat(300);
        let mut body = vec![0xAC, 0x02]; // 300 = 0b10_0101100
        body.extend_from_slice(s.as_bytes());
        assert_eq!(doc(STRING, body), format!("\"{s}\""));
        assert!(to_json_text(&[STRING, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01]).is_err());
    }

    #[test]
    fn nested_objects_and_arrays() {
        let inner = small(
            false,
            vec![
                ("", Entry::Inline(INT16, 1)),
                ("", Entry::Stored(STRING, string("two"))),
                ("", Entry::Inline(LITERAL, 0)),
            ],
        );
        let obj = small(
            true,
            vec![
                ("a", Entry::Inline(LITERAL, 1)),
                ("bb", Entry::Stored(SMALL_ARRAY, inner)),
                ("ccc", Entry::Stored(DOUBLE, 2.5f64.to_le_bytes().to_vec())),
                ("dddd", Entry::Stored(SMALL_OBJECT, small(true, vec![]))),
            ],
        );
        assert_eq!(
            doc(SMALL_OBJECT, obj),
            r#"{"a":true,"bb":[1,"two",null],"ccc":2.5,"dddd":{}}"#
        );
        assert_eq!(doc(SMALL_ARRAY, small(false, vec![])), "[]");
    }

    #[test]
    fn large_containers_inline_32_bit_ints() {
        // [-7 as int32 inlined, "s"] in the large format.
        let mut body = Vec::new();
        let header = 8 + 2 * 5;
        body.extend_from_slice(&2u32.to_le_bytes());
        let s = string("s");
        body.extend_from_slice(&((header + s.len()) as u32).to_le_bytes());
        body.push(INT32);
        body.extend_from_slice(&(-7i32).to_le_bytes());
        body.push(STRING);
        body.extend_from_slice(&(header as u32).to_le_bytes());
        body.extend_from_slice(&s);
        assert_eq!(doc(LARGE_ARRAY, body), r#"[-7,"s"]"#);
    }

    fn opaque(field_type: u8, data: &[u8]) -> String {
        let mut body = vec![field_type, data.len() as u8];
        body.extend_from_slice(data);
        doc(OPAQUE, body)
    }

    #[test]
    fn opaque_temporals_print_like_mysql() {
        let hms: i64 = (23 << 12) | (24 << 6) | 25;
        let ymd: i64 = ((2015 * 13 + 1) << 5) | 15;
        let date = (ymd << 17) << 24;
        let datetime = ((ymd << 17) | hms) << 24;
        assert_eq!(opaque(10, &date.to_le_bytes()), r#""2015-01-15""#);
        assert_eq!(
            opaque(12, &datetime.to_le_bytes()),
            r#""2015-01-15 23:24:25.000000""#
        );
        assert_eq!(
            opaque(7, &(datetime + 123_456).to_le_bytes()),
            r#""2015-01-15 23:24:25.123456""#
        );
        assert_eq!(
            opaque(11, &(hms << 24).to_le_bytes()),
            r#""23:24:25.000000""#
        );
        assert_eq!(
            opaque(11, &(-((hms << 24) + 5)).to_le_bytes()),
            r#""-23:24:25.000005""#
        );
    }

    #[test]
    fn opaque_decimal_is_a_number_and_others_base64() {
        // DECIMAL(4,2) 12.34: [precision, scale, binary]
        assert_eq!(opaque(246, &[4, 2, 0x8C, 0x22]), "12.34");
        assert_eq!(opaque(15, b"ab"), r#""base64:type15:YWI=""#);
        assert_eq!(opaque(252, b"abc"), r#""base64:type252:YWJj""#);
        assert_eq!(opaque(16, b"a"), r#""base64:type16:YQ==""#);
        assert_eq!(opaque(15, b""), r#""base64:type15:""#);
    }

    #[test]
    fn opaque_decimals_keep_their_digits_and_scale() {
        let decimal = |text: &str, precision: u8, scale: u8| {
            let mut data = vec![precision, scale];
            data.extend(super::super::decode::encode_decimal(text, precision, scale));
            let mut body = vec![246, data.len() as u8];
            body.extend(data);
            // Inside an object, as MySQL stores `{"e": CAST(9 AS DECIMAL(3,2))}`.
            let obj = small(true, vec![("e", Entry::Stored(OPAQUE, body))]);
            doc(SMALL_OBJECT, obj)
        };
        assert_eq!(decimal("9.00", 3, 2), r#"{"e":9.00}"#);
        assert_eq!(decimal("-0.10", 5, 2), r#"{"e":-0.10}"#);
        // 40 digits: more than a double holds (it would print 1.2345678901234568e29).
        let forty = "123456789012345678901234567890.1234567890";
        assert_eq!(decimal(forty, 40, 10), format!(r#"{{"e":{forty}}}"#));
        assert_eq!(
            decimal(&format!("-{forty}"), 40, 10),
            format!(r#"{{"e":-{forty}}}"#)
        );
    }

    #[test]
    fn malformed_documents_are_errors() {
        assert!(to_json_text(&[0x0D]).is_err());
        assert!(to_json_text(&[LITERAL, 7]).is_err());
        assert!(to_json_text(&[INT64, 1, 2]).is_err());
        assert!(to_json_text(&[STRING, 5, b'a']).is_err());
        assert!(to_json_text(&[STRING, 1, 0xFF]).is_err());
        // Count says 10 entries but the size cannot hold them.
        assert!(to_json_text(&[SMALL_ARRAY, 10, 0, 4, 0]).is_err());
        // Offset past the container.
        assert!(to_json_text(&[SMALL_ARRAY, 1, 0, 7, 0, STRING, 99, 0]).is_err());
        // Every prefix of a valid document fails cleanly or succeeds.
        let obj = small(true, vec![("k", Entry::Stored(STRING, string("value")))]);
        let mut full = vec![SMALL_OBJECT];
        full.extend(obj);
        for n in 0..full.len() {
            let _ = to_json_text(&full[..n]);
        }
    }

    /// `levels` arrays nested one inside the other, innermost empty.
    fn nested_arrays(levels: usize) -> Vec<u8> {
        let mut inner = vec![0, 0, 4, 0];
        for _ in 0..levels - 1 {
            let size = (7 + inner.len()) as u16;
            let mut c = vec![1, 0];
            c.extend_from_slice(&size.to_le_bytes());
            c.extend_from_slice(&[SMALL_ARRAY, 7, 0]);
            c.extend(inner);
            inner = c;
        }
        let mut d = vec![SMALL_ARRAY];
        d.extend(inner);
        d
    }

    #[test]
    fn deep_nesting_is_bounded() {
        let ok = to_json_text(&nested_arrays(MAX_DEPTH)).unwrap();
        assert_eq!(
            ok,
            format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH))
        );
        let e = to_json_text(&nested_arrays(MAX_DEPTH + 1)).unwrap_err();
        assert!(e.to_string().contains("deeper"), "{e}");
        assert!(to_json_text(&nested_arrays(5000)).is_err());
    }

    /// Both readings of a document: the text, and the tree printed back.
    fn both(d: &[u8]) -> (Result<String>, Result<String>) {
        (
            to_json_text(d),
            JsonNode::from_binary(d).map(|t| t.to_json_text()),
        )
    }

    #[test]
    fn trees_print_like_the_text_and_share_its_checks() {
        let inner = small(
            false,
            vec![
                ("", Entry::Inline(INT16, 1)),
                ("", Entry::Stored(STRING, string("t\u{1}o"))),
                ("", Entry::Stored(OPAQUE, vec![246, 4, 4, 2, 0x8C, 0x22])),
            ],
        );
        let obj = small(
            true,
            vec![
                ("a", Entry::Inline(LITERAL, 2)),
                ("bb", Entry::Stored(SMALL_ARRAY, inner)),
                (
                    "k\"y",
                    Entry::Stored(DOUBLE, (-0.5f64).to_le_bytes().to_vec()),
                ),
            ],
        );
        let mut d = vec![SMALL_OBJECT];
        d.extend(obj);
        let (text, tree) = both(&d);
        assert_eq!(
            text.unwrap(),
            r#"{"a":false,"bb":[1,"t\u0001o",12.34],"k\"y":-0.5}"#
        );
        assert_eq!(tree, to_json_text(&d));
        let t = JsonNode::from_binary(&d).unwrap();
        assert_eq!(t.depth(), 2);
        // Every prefix and corruption fails (or succeeds) the same way in both readings.
        for n in 0..d.len() {
            let (text, tree) = both(&d[..n]);
            assert_eq!(text.is_ok(), tree.is_ok(), "prefix {n}");
        }
        for i in 0..d.len() {
            let mut bad = d.clone();
            bad[i] ^= 0x41;
            let (text, tree) = both(&bad);
            assert_eq!(text.ok(), tree.ok(), "flip at {i}");
        }
        assert!(JsonNode::from_binary(&nested_arrays(MAX_DEPTH)).is_ok());
        assert!(JsonNode::from_binary(&nested_arrays(MAX_DEPTH + 1)).is_err());
        assert_eq!(key_order("b", "aa"), std::cmp::Ordering::Less);
        assert_eq!(key_order("ab", "aa"), std::cmp::Ordering::Greater);
    }

    #[test]
    fn aliasing_entries_cannot_explode() {
        // An array whose 1000 entries all point at the same 120-byte string: a real server
        // never writes this, and the output would be 40 times the input.
        let n = 1000usize;
        let header = 4 + n * 3;
        let s = string(&"y".repeat(120));
        let mut d = vec![SMALL_ARRAY];
        d.extend_from_slice(&(n as u16).to_le_bytes());
        d.extend_from_slice(&((header + s.len()) as u16).to_le_bytes());
        for _ in 0..n {
            d.push(STRING);
            d.extend_from_slice(&(header as u16).to_le_bytes());
        }
        d.extend_from_slice(&s);
        assert!(to_json_text(&d).is_err());
        assert!(JsonNode::from_binary(&d).is_err());
    }
}
