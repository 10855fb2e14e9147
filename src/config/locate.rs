//! Maps byte offsets of a TOML text to line numbers and to key paths (`sources[1].kind`).
//!
//! serde errors from `toml` carry a byte span but not the key path; this module rebuilds the path
//! from toml's own spanned document tree, so every error can name its key.

use std::ops::Range;

use toml::de::{DeTable, DeValue};

/// Line numbers and key paths for one TOML text.
pub(crate) struct Locator<'a> {
    text: &'a str,
    /// Every key, value and array element of the document with the path it stands for.
    spans: Vec<(Range<usize>, String)>,
    /// Start offset and path of every table (header or inline), in document order.
    sections: Vec<(usize, String)>,
}

impl<'a> Locator<'a> {
    /// Indexes `text`; parse errors are ignored (the part that parsed is indexed).
    pub(crate) fn new(text: &'a str) -> Self {
        let (table, _errors) = DeTable::parse_recoverable(text);
        let mut index = Index::default();
        index.table(table.get_ref(), "");
        Locator {
            text,
            spans: index.spans,
            sections: index.sections,
        }
    }

    /// The 1-based line that byte `offset` is on.
    pub(crate) fn line_of(&self, offset: usize) -> usize {
        let end = offset.min(self.text.len());
        self.text.as_bytes()[..end]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1
    }

    /// The path of the innermost key, value or table header whose span contains `span`.
    pub(crate) fn path_at(&self, span: &Range<usize>) -> Option<&str> {
        self.spans
            .iter()
            .filter(|(s, _)| s.start <= span.start && span.end <= s.end && s.start < s.end)
            .min_by_key(|(s, path)| (s.end - s.start, std::cmp::Reverse(path.len())))
            .map(|(_, path)| path.as_str())
    }

    /// The path of the last table that starts at or before `offset`: the section a key at
    /// `offset` belongs to when the key itself is not in the document tree (a duplicate key).
    pub(crate) fn section_at(&self, offset: usize) -> Option<&str> {
        self.sections
            .iter()
            .filter(|(start, _)| *start <= offset)
            .max_by_key(|(start, _)| *start)
            .map(|(_, path)| path.as_str())
    }

    /// The text covered by `span` (empty when out of range).
    pub(crate) fn text_at(&self, span: &Range<usize>) -> &'a str {
        self.text.get(span.clone()).unwrap_or("")
    }
}

/// Joins a parent path and a key, quoting keys that are not bare TOML keys.
pub(crate) fn join_key(parent: &str, key: &str) -> String {
    let bare = !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    let key = if bare {
        key.to_string()
    } else {
        format!("{key:?}")
    };
    if parent.is_empty() {
        key
    } else {
        format!("{parent}.{key}")
    }
}

/// Collects the spans of a document tree.
#[derive(Default)]
struct Index {
    spans: Vec<(Range<usize>, String)>,
    sections: Vec<(usize, String)>,
}

impl Index {
    fn table(&mut self, table: &DeTable<'_>, parent: &str) {
        for (key, value) in table {
            let path = join_key(parent, key.get_ref());
            self.spans.push((key.span(), path.clone()));
            self.spans.push((value.span(), path.clone()));
            if value.get_ref().is_table() {
                self.sections.push((value.span().start, path.clone()));
            }
            self.value(value.get_ref(), &path);
        }
    }

    fn value(&mut self, value: &DeValue<'_>, path: &str) {
        match value {
            DeValue::Table(table) => self.table(table, path),
            DeValue::Array(array) => {
                for (i, element) in array.iter().enumerate() {
                    let element_path = format!("{path}[{i}]");
                    self.spans.push((element.span(), element_path.clone()));
                    if element.get_ref().is_table() {
                        self.sections
                            .push((element.span().start, element_path.clone()));
                    }
                    self.value(element.get_ref(), &element_path);
                }
            }
            _ => {}
        }
    }
}
