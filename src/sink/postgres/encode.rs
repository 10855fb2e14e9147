//! The Postgres sink's row format: `COPY ... FROM STDIN` text (tab-separated, `\N` for NULL,
//! backslash escapes), what the sink's stage tables read.
//!
//! Each row is
//!
//! ```text
//! seq  op  position  commit_ts  [unchanged  generation]  col1 ... colN
//! ```
//!
//! `seq` orders the rows of one batch (arrival order, which is source commit order); `op` is
//! `insert`, `update` or `delete`; `position` packs the change's [`Position`] into one sortable
//! number (`txn * 2^32 + seq`). `unchanged` (a `text[]` of the column names the row leaves
//! unchanged, `\N` for none) and `generation` are there only in segments that carry partial
//! rows. A delete of a keyed table writes only its key columns (the others are `\N`).
//!
//! Every newline inside a value is escaped, so each row is one line: `\n` is the row
//! terminator. Zero dates are written as NULL (Postgres has no zero date) and counted; a text
//! value holding a NUL character is refused.
//!
//! [`Position`]: crate::event::Position

use std::fmt::Write as _;

use crate::event::{ColumnType, Op, Value, format_time_micros, write_timestamp_micros};
use crate::sink::encode::{EncodeError, Encoded, Row, RowEncoder, RowOp};

/// Encodes rows as Postgres `COPY` text, one line per row.
#[derive(Debug, Clone, Copy, Default)]
pub struct CopyText;

impl RowEncoder for CopyText {
    fn encode(&self, row: &Row<'_>, out: &mut Vec<u8>) -> Result<Encoded, EncodeError> {
        let mut writer = TextRow {
            row,
            encoded: Encoded::default(),
        };
        writer.encode(out)?;
        Ok(writer.encoded)
    }

    fn row_terminator(&self) -> u8 {
        b'\n'
    }
}

/// One row being written, with what writing it counted.
struct TextRow<'a> {
    row: &'a Row<'a>,
    encoded: Encoded,
}

impl TextRow<'_> {
    /// Writes the row; its partial-row fields when the segment carries them.
    fn encode(&mut self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let Row {
            change: event,
            seq,
            op,
            values: row,
            partial,
        } = *self.row;
        let position = event.position;
        let packed = position.packed();
        let mut num = itoa::Buffer::new();
        out.extend_from_slice(num.format(seq).as_bytes());
        out.push(b'\t');
        out.extend_from_slice(op.as_str().as_bytes());
        out.push(b'\t');
        out.extend_from_slice(num.format(packed).as_bytes());
        out.push(b'\t');
        if event.op == Op::Read {
            // A copied row was read, not committed: it has no source commit time (and a NULL
            // costs the warehouse nothing to parse, a timestamp a good part of a row's load).
            out.extend_from_slice(b"\\N");
        } else {
            write_timestamp_micros(out, event.transaction.commit_ts_micros);
        }
        if let Some(partial) = partial {
            out.push(b'\t');
            write_name_array(out, partial.unchanged);
            out.push(b'\t');
            out.extend_from_slice(num.format(partial.generation).as_bytes());
        }
        let columns = &event.table.columns;
        if row.len() != columns.len() {
            return Err(self.problem(
                columns.first().map_or("", |c| &c.name),
                format!(
                    "the row has {} values but the table has {} columns",
                    row.len(),
                    columns.len()
                ),
            ));
        }
        // A keyed delete needs only its key: the rest would be parsed by the warehouse for nothing.
        let key = &event.table.primary_key;
        let key_only = op == RowOp::Delete && !key.is_empty();
        for (i, (value, column)) in row.iter().zip(columns).enumerate() {
            out.push(b'\t');
            if key_only && !key.contains(&i) {
                out.extend_from_slice(b"\\N");
            } else {
                self.value(out, value, &column.ty, &column.name)?;
            }
        }
        out.push(b'\n');
        Ok(())
    }

    fn problem(&self, column: &str, problem: String) -> EncodeError {
        EncodeError::Value {
            table: self.row.change.table.id.clone(),
            column: column.to_owned(),
            position: self.row.change.position,
            problem,
        }
    }

    fn value(
        &mut self,
        out: &mut Vec<u8>,
        value: &Value,
        ty: &ColumnType,
        column: &str,
    ) -> Result<(), EncodeError> {
        let mut num = itoa::Buffer::new();
        match value {
            Value::Null => out.extend_from_slice(b"\\N"),
            // The row's unchanged-columns field names it; the loader keeps the target's value.
            Value::Unchanged => out.extend_from_slice(b"\\N"),
            Value::Bool(b) => out.push(if *b { b't' } else { b'f' }),
            Value::Int(i) => out.extend_from_slice(num.format(*i).as_bytes()),
            Value::UInt(u) => out.extend_from_slice(num.format(*u).as_bytes()),
            Value::Year(y) => out.extend_from_slice(num.format(*y).as_bytes()),
            Value::Float(f) => write_float(out, f64::from(*f), f.is_finite(), || f.to_string()),
            Value::Double(d) => write_float(out, *d, d.is_finite(), || d.to_string()),
            Value::Decimal(text) => out.extend_from_slice(text.as_bytes()),
            Value::Text(text) | Value::Enum(text) | Value::Json(text) => {
                self.text(out, text, column)?
            }
            Value::Set(labels) => {
                for (i, label) in labels.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    self.text(out, label, column)?;
                }
            }
            Value::Bytes(bytes) => write_bytea(out, &[bytes]),
            Value::Geometry { srid, wkb } => write_bytea(out, &[&srid.to_le_bytes(), wkb]),
            Value::Date(date) if date.is_zero() => self.zero_date(out),
            Value::Date(date) => {
                let _ = write!(Utf8Out(out), "{date}");
            }
            Value::DateTime(dt) if dt.date.is_zero() => self.zero_date(out),
            Value::DateTime(dt) => dt.write_text(out),
            Value::Timestamp(0) if matches!(ty, ColumnType::Timestamp { .. }) => {
                self.zero_date(out)
            }
            Value::Timestamp(micros) => write_timestamp_micros(out, *micros),
            Value::Time(micros) => out.extend_from_slice(format_time_micros(*micros).as_bytes()),
            Value::Bit { bits, width } => {
                for i in (0..*width).rev() {
                    out.push(if bits >> i & 1 == 1 { b'1' } else { b'0' });
                }
            }
            // Exact for every interval, whatever the warehouse's IntervalStyle.
            Value::Interval {
                months,
                days,
                micros,
            } => {
                let _ = write!(
                    Utf8Out(out),
                    "{months} mons {days} days {micros} microseconds"
                );
            }
            Value::Infinity { negative } => {
                out.extend_from_slice(if *negative { b"-infinity" } else { b"infinity" })
            }
            // A `real[]` literal of the elements as `real` values are written; braces, commas
            // and float text need no COPY escapes.
            Value::Vector(items) => {
                out.push(b'{');
                for (i, f) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    self.value(out, &Value::Float(*f), ty, column)?;
                }
                out.push(b'}');
            }
        }
        Ok(())
    }

    fn zero_date(&mut self, out: &mut Vec<u8>) {
        self.encoded.zero_dates_nulled += 1;
        out.extend_from_slice(b"\\N");
    }

    fn text(&self, out: &mut Vec<u8>, text: &str, column: &str) -> Result<(), EncodeError> {
        let bytes = text.as_bytes();
        // Most values need no escape: find that out with two vectorised scans.
        if memchr::memchr3(b'\\', b'\t', b'\n', bytes).is_none()
            && memchr::memchr2(b'\r', 0, bytes).is_none()
        {
            out.extend_from_slice(bytes);
            return Ok(());
        }
        let mut from = 0;
        for (i, &b) in bytes.iter().enumerate() {
            let escaped: &[u8] = match b {
                b'\\' => b"\\\\",
                b'\t' => b"\\t",
                b'\n' => b"\\n",
                b'\r' => b"\\r",
                0 => {
                    return Err(self.problem(
                        column,
                        "the text contains a NUL character, which Postgres text cannot hold".into(),
                    ));
                }
                _ => continue,
            };
            out.extend_from_slice(&bytes[from..i]);
            out.extend_from_slice(escaped);
            from = i + 1;
        }
        out.extend_from_slice(&bytes[from..]);
        Ok(())
    }
}

/// `names` as a Postgres `text[]` literal in COPY text form (`\N` when empty): each element
/// double-quoted with `\` and `"` escaped for the array, then every backslash doubled and tab,
/// newline and carriage return escaped for COPY.
fn write_name_array(out: &mut Vec<u8>, names: &[&str]) {
    if names.is_empty() {
        out.extend_from_slice(b"\\N");
        return;
    }
    let mut literal = String::from("{");
    for (i, name) in names.iter().enumerate() {
        if i > 0 {
            literal.push(',');
        }
        literal.push('"');
        for c in name.to_lowercase().chars() {
            if c == '\\' || c == '"' {
                literal.push('\\');
            }
            literal.push(c);
        }
        literal.push('"');
    }
    literal.push('}');
    for b in literal.bytes() {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\t' => out.extend_from_slice(b"\\t"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            other => out.push(other),
        }
    }
}

/// `write!` into a byte vector.
struct Utf8Out<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for Utf8Out<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

fn write_float(out: &mut Vec<u8>, value: f64, finite: bool, text: impl FnOnce() -> String) {
    if finite {
        out.extend_from_slice(text().as_bytes());
    } else if value.is_nan() {
        out.extend_from_slice(b"NaN");
    } else if value > 0.0 {
        out.extend_from_slice(b"Infinity");
    } else {
        out.extend_from_slice(b"-Infinity");
    }
}

/// `bytea` hex input (`\x0a1b`), its backslash escaped for the COPY text format.
fn write_bytea(out: &mut Vec<u8>, parts: &[&[u8]]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.extend_from_slice(b"\\\\x");
    for part in parts {
        out.reserve(part.len() * 2);
        for &b in *part {
            out.push(HEX[usize::from(b >> 4)]);
            out.push(HEX[usize::from(b & 15)]);
        }
    }
}

/// The exact rows this encoder writes, and what a batch's [`TableChanges`] stages through it
/// (each key's last change, rollback marks, spills, partial rows): those tests read the rows as
/// the Postgres sink loads them.
#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::event::{Column, Date, DateTime, Op, TableId, TableSchema};
    use crate::sink::changes::test_change as change;
    use crate::sink::{TableChanges, TargetTable};

    fn schema(columns: &[(&str, ColumnType)], key: &[usize]) -> Arc<TableSchema> {
        Arc::new(TableSchema {
            id: TableId::new("shop", "t"),
            columns: columns
                .iter()
                .map(|(name, ty)| Column {
                    name: (*name).into(),
                    ty: ty.clone(),
                    nullable: true,
                })
                .collect(),
            primary_key: key.to_vec(),
        })
    }

    /// The column types of the tables with unchanged values: INT and TEXT.
    fn int_and_text() -> (ColumnType, ColumnType) {
        let int = ColumnType::Int {
            bits: 32,
            unsigned: false,
        };
        let text = ColumnType::Text {
            max_bytes: None,
            charset: "utf8mb4".into(),
        };
        (int, text)
    }

    /// A table whose only column is its INT key `id`.
    fn id_only_table() -> Arc<TableSchema> {
        schema(
            &[(
                "id",
                ColumnType::Int {
                    bits: 32,
                    unsigned: false,
                },
            )],
            &[0],
        )
    }

    fn target() -> TargetTable {
        TargetTable {
            schema: "s".into(),
            table: "t".into(),
        }
    }

    /// An empty set of changes to `t`, written as COPY text.
    fn table_changes(t: &Arc<TableSchema>) -> TableChanges {
        TableChanges::with_encoder(t.id.clone(), target(), Arc::new(CopyText))
    }

    /// `row` inserted into `t`, staged.
    fn staged_insert(t: &Arc<TableSchema>, row: Vec<Value>) -> TableChanges {
        let mut changes = table_changes(t);
        changes
            .push(&change(t, Op::Insert, None, Some(row)), &mut 0)
            .unwrap();
        changes
    }

    /// What the loader would stage: the live rows of every segment.
    fn text_of(changes: &mut TableChanges) -> String {
        let mut all = Vec::new();
        for segment in 0..changes.segments.len() {
            let mut chunks = changes.row_chunks(segment);
            while let Some(chunk) = chunks.next_chunk().unwrap() {
                all.extend_from_slice(&chunk);
            }
        }
        String::from_utf8(all).unwrap()
    }

    #[test]
    fn values_are_written_as_copy_text() {
        let t = schema(
            &[
                (
                    "id",
                    ColumnType::Int {
                        bits: 64,
                        unsigned: true,
                    },
                ),
                (
                    "s",
                    ColumnType::Text {
                        max_bytes: None,
                        charset: "utf8mb4".into(),
                    },
                ),
                ("b", ColumnType::Binary { max_bytes: None }),
                ("d", ColumnType::Date),
                ("dt", ColumnType::DateTime { fsp: 6 }),
                ("bits", ColumnType::Bit { width: 5 }),
                (
                    "set",
                    ColumnType::Set {
                        labels: Arc::from(vec!["a".to_string(), "b".to_string()]),
                    },
                ),
                ("f", ColumnType::Float),
                ("tm", ColumnType::Time { fsp: 0 }),
            ],
            &[0],
        );
        let row = vec![
            Value::UInt(u64::MAX),
            Value::Text("a\tb\\c\nd🚀".into()),
            Value::Bytes(vec![0, 0xff]),
            Value::Date(Date {
                year: 0,
                month: 0,
                day: 0,
            }),
            Value::DateTime(DateTime {
                date: Date {
                    year: 2024,
                    month: 2,
                    day: 29,
                },
                hour: 23,
                minute: 59,
                second: 58,
                micros: 7,
            }),
            Value::Bit {
                bits: 0b101,
                width: 5,
            },
            Value::Set(vec!["a".into(), "b".into()]),
            Value::Float(f32::NEG_INFINITY),
            Value::Time(-(838 * 3600 + 59 * 60 + 59) * 1_000_000),
        ];
        let mut changes = staged_insert(&t, row);
        assert_eq!(
            text_of(&mut changes),
            "0\tinsert\t30064771074\t2023-11-14T22:13:20Z\t18446744073709551615\ta\\tb\\\\c\\nd🚀\t\\\\x00ff\t\\N\t2024-02-29 23:59:58.000007\t00101\ta,b\t-Infinity\t-838:59:59\n"
        );
        assert_eq!(changes.zero_dates_nulled, 1);
    }

    #[test]
    fn vectors_are_written_as_real_array_literals() {
        let t = schema(
            &[
                (
                    "id",
                    ColumnType::Int {
                        bits: 32,
                        unsigned: false,
                    },
                ),
                (
                    "v",
                    ColumnType::Vector {
                        dimensions: Some(4),
                    },
                ),
                ("empty", ColumnType::Vector { dimensions: None }),
            ],
            &[0],
        );
        let row = vec![
            Value::Int(1),
            Value::Vector(vec![1.1, -1.01, 1e-45, f32::NAN, f32::NEG_INFINITY]),
            Value::Vector(vec![]),
        ];
        let mut changes = staged_insert(&t, row);
        // Shortest round-trip text: `1.1` reads back as the same f32 (as a double it would be
        // 1.100000023841858).
        assert_eq!(
            text_of(&mut changes),
            "0\tinsert\t30064771074\t2023-11-14T22:13:20Z\t1\t{1.1,-1.01,0.000000000000000000000000000000000000000000001,NaN,-Infinity}\t{}\n"
        );
    }

    #[test]
    fn key_changing_updates_become_delete_then_update() {
        let t = id_only_table();
        let mut changes = table_changes(&t);
        let mut seq = 10;
        let update = change(
            &t,
            Op::Update,
            Some(vec![Value::Int(1)]),
            Some(vec![Value::Int(2)]),
        );
        changes.push(&update, &mut seq).unwrap();
        let text = text_of(&mut changes);
        let ops: Vec<(&str, &str)> = text
            .lines()
            .map(|l| {
                let f: Vec<&str> = l.split('\t').collect();
                (f[1], f[4])
            })
            .collect();
        assert_eq!(ops, vec![("delete", "1"), ("update", "2")]);
        assert_eq!((seq, changes.changes), (12, 1));
    }

    #[test]
    fn a_bad_value_leaves_the_buffer_as_it_was_and_names_the_column() {
        let t = schema(
            &[(
                "s",
                ColumnType::Text {
                    max_bytes: None,
                    charset: "utf8mb4".into(),
                },
            )],
            &[],
        );
        let mut changes = table_changes(&t);
        let mut seq = 0;
        changes
            .push(
                &change(&t, Op::Insert, None, Some(vec![Value::Text("ok".into())])),
                &mut seq,
            )
            .unwrap();
        let err = changes
            .push(
                &change(&t, Op::Insert, None, Some(vec![Value::Text("a\0b".into())])),
                &mut seq,
            )
            .unwrap_err()
            .to_string();
        assert!(err.contains("column `s`") && err.contains("7.2"), "{err}");
        assert_eq!(text_of(&mut changes).lines().count(), 1);
    }

    #[test]
    fn rollback_marks_restore_memory_and_spilled_buffers() {
        let t = id_only_table();
        let dir = tempfile::tempdir().unwrap();
        for spill in [false, true] {
            let mut changes = table_changes(&t);
            let mut seq = 0;
            changes
                .push(
                    &change(&t, Op::Insert, None, Some(vec![Value::Int(1)])),
                    &mut seq,
                )
                .unwrap();
            if spill {
                changes.spill(dir.path()).unwrap();
            }
            let mark = changes.mark();
            for i in 0..50_000 {
                changes
                    .push(
                        &change(&t, Op::Insert, None, Some(vec![Value::Int(i)])),
                        &mut seq,
                    )
                    .unwrap();
            }
            changes
                .push(&change(&t, Op::Truncate, None, None), &mut seq)
                .unwrap();
            changes.reset_to(mark).unwrap();
            assert_eq!(changes.truncate_at, None);
            assert_eq!(changes.changes, 1);
            assert_eq!(text_of(&mut changes).lines().count(), 1, "spill={spill}");
        }
    }

    #[test]
    fn only_each_keys_last_change_is_staged_also_across_spilled_chunks() {
        let int = ColumnType::Int {
            bits: 64,
            unsigned: false,
        };
        let t = schema(&[("id", int.clone()), ("v", int)], &[0]);
        let row = |id: i64, v: i64| Some(vec![Value::Int(id), Value::Int(v)]);
        let dir = tempfile::tempdir().unwrap();
        for spill in [false, true] {
            let mut changes = table_changes(&t);
            if spill {
                changes.spill(dir.path()).unwrap();
            }
            let mut seq = 0;
            // Enough rows that spilled chunks (1 MiB) split rows; every id changes 3 times.
            let ids = 40_000;
            for round in 0..3 {
                for id in 0..ids {
                    let op = if round == 0 { Op::Insert } else { Op::Update };
                    let before = (round > 0).then(|| vec![Value::Int(id), Value::Int(round - 1)]);
                    changes
                        .push(&change(&t, op, before, row(id, round)), &mut seq)
                        .unwrap();
                }
            }
            // Delete the even ids.
            for id in (0..ids).step_by(2) {
                changes
                    .push(&change(&t, Op::Delete, row(id, 2), None), &mut seq)
                    .unwrap();
            }
            assert_eq!(changes.live_rows(), ids as u64, "spill={spill}");
            assert!(!changes.needs_dedupe());
            let text = text_of(&mut changes);
            let staged: Vec<(String, String)> = text
                .lines()
                .map(|line| {
                    let fields: Vec<&str> = line.split('\t').collect();
                    (fields[1].to_owned(), format!("{}={}", fields[4], fields[5]))
                })
                .collect();
            assert_eq!(staged.len(), ids as usize, "spill={spill}");
            for (i, (op, values)) in staged.iter().enumerate() {
                let id = i as i64;
                // Odd ids: their last update, in write order; then the even ids' deletes.
                let (want_op, want) = if i < ids as usize / 2 {
                    ("update", format!("{}=2", 2 * id + 1))
                } else {
                    ("delete", format!("{}=\\N", 2 * (id - ids / 2)))
                };
                assert_eq!((op.as_str(), values.as_str()), (want_op, want.as_str()));
            }
        }
    }

    #[test]
    fn a_rollback_keeps_every_row_and_leaves_the_last_change_to_the_warehouse() {
        let t = id_only_table();
        let mut changes = table_changes(&t);
        let mut seq = 0;
        let insert = |id| change(&t, Op::Insert, None, Some(vec![Value::Int(id)]));
        changes.push(&insert(1), &mut seq).unwrap();
        changes.push(&insert(1), &mut seq).unwrap();
        let mark = changes.mark();
        changes.push(&insert(1), &mut seq).unwrap();
        changes.reset_to(mark).unwrap();
        assert!(changes.needs_dedupe());
        assert_eq!(text_of(&mut changes).lines().count(), 2);
    }

    #[test]
    fn a_key_change_leaving_values_unchanged_stages_both_halves_in_one_generation() {
        let (int, text) = int_and_text();
        let t = schema(&[("id", int), ("doc", text)], &[0]);
        let row = |id: i64, doc: Value| vec![Value::Int(id), doc];
        let moved = |from, to| {
            change(
                &t,
                Op::Update,
                Some(row(from, Value::Unchanged)),
                Some(row(to, Value::Unchanged)),
            )
        };
        let insert = |id| change(&t, Op::Insert, None, Some(row(id, Value::Text("d".into()))));
        // (op, key, generation) of every staged row: seq, op, position and commit time come
        // first, then (in segments with partial rows) the unchanged columns and the generation.
        let staged = |changes: &mut TableChanges| -> Vec<(String, String, u32)> {
            text_of(changes)
                .lines()
                .map(|line| {
                    let fields: Vec<&str> = line.split('\t').collect();
                    match fields[..] {
                        [_, op, _, _, id, _] => (op.into(), id.into(), 0),
                        [_, op, _, _, _, generation, id, _] => {
                            (op.into(), id.into(), generation.parse().unwrap())
                        }
                        _ => panic!("unexpected row {line:?}"),
                    }
                })
                .collect()
        };
        for rolled_back in [false, true] {
            let mut changes = table_changes(&t);
            let mut seq = 0;
            changes.push(&insert(1), &mut seq).unwrap();
            if rolled_back {
                // The index is off for the rest of the batch; arrival order decides.
                let mark = changes.mark();
                changes.push(&insert(9), &mut seq).unwrap();
                changes.reset_to(mark).unwrap();
            }
            changes.push(&moved(1, 2), &mut seq).unwrap();
            changes.push(&insert(1), &mut seq).unwrap();
            let rows = staged(&mut changes);
            let generation = |i: usize| rows[i].2;
            assert_eq!(rows.len(), 4, "{rows:?}");
            assert_eq!((&*rows[1].0, &*rows[1].1), ("delete", "1"), "{rows:?}");
            assert_eq!((&*rows[2].0, &*rows[2].1), ("update", "2"), "{rows:?}");
            assert_eq!(generation(1), generation(2), "{rows:?}");
            assert!(generation(0) < generation(1), "{rows:?}");
            // The new row under the old key applies after the move has read the old one: in a
            // later generation, or (without the index) in the same one, after the capture that
            // starts it.
            if rolled_back {
                assert!(generation(1) <= generation(3), "{rows:?}");
            } else {
                assert!(generation(1) < generation(3), "{rows:?}");
            }
        }
    }

    #[test]
    fn rows_leaving_columns_unchanged_name_them_and_chain_their_key() {
        let (int, text) = int_and_text();
        let t = schema(&[("id", int), ("Doc\"x", text.clone()), ("n", text)], &[0]);
        let row = |id: i64, doc: Value, n: &str| vec![Value::Int(id), doc, Value::Text(n.into())];
        let mut changes = table_changes(&t);
        let mut seq = 0;
        let insert = change(
            &t,
            Op::Insert,
            None,
            Some(row(1, Value::Text("big".into()), "a")),
        );
        changes.push(&insert, &mut seq).unwrap();
        let partial = change(
            &t,
            Op::Update,
            Some(row(1, Value::Unchanged, "a")),
            Some(row(1, Value::Unchanged, "b")),
        );
        changes.push(&partial, &mut seq).unwrap();
        assert!(changes.has_unchanged);
        assert_eq!(changes.max_generation(), 1);
        assert_eq!(
            changes.segments.len(),
            2,
            "partial rows start a segment with the fields"
        );
        let text = text_of(&mut changes);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines.len(),
            2,
            "the insert stays: the update needs its value"
        );
        assert!(
            lines[1].contains("\t{\"doc\\\\\"x\"}\t1\t1\t\\N\tb"),
            "{:?}",
            lines[1]
        );
    }
}
