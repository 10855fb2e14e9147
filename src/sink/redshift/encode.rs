//! The Redshift sink's row format: CSV, as `COPY ... FORMAT AS CSV NULL AS '\0'` reads it from
//! the staged gzip files (the contract the Redshift test server parses too).
//!
//! Each row is
//!
//! ```text
//! seq,"op",position,commit_ts,truncated[,unchanged,generation],col1,...,colN
//! ```
//!
//! `seq` orders the rows of one batch; `op` is `insert`, `update` or `delete`; `position` packs
//! the change's [`Position`] into one sortable number (`txn * 2^32 + seq`, numeric(30,0));
//! `commit_ts` is the source commit time (NULL for copied rows, which were read, not
//! committed); `truncated` is `t` when the oversize policy `truncate` cut a value of the row.
//! `unchanged` (a JSON array of the lowercased names of the columns the row leaves unchanged,
//! NULL for none) and `generation` are there only in segments that carry partial rows. A delete
//! of a keyed table writes only its key columns (the others are NULL).
//!
//! Values:
//! - NULL is a field holding exactly one unquoted NUL byte; nothing else is. That marker is
//!   unambiguous because no value written holds a NUL: text with a NUL character is refused
//!   (Redshift's COPY takes a NUL as the end of a record anyway), and binary is hex.
//! - Every text-like value (text, enum, set, JSON, the text of MySQL times, intervals, bits,
//!   wide decimals, ...) is double-quoted with `"` doubled, so `""` is the empty string, never
//!   NULL, and a value may hold commas and newlines.
//! - Numbers, booleans (`t`/`f`), dates and times are unquoted; binary (VARBYTE) is unquoted
//!   lowercase hex (`""` when empty); JSON, Postgres arrays and vectors go to SUPER columns as
//!   quoted JSON text (arrays converted from their Postgres literal).
//! - Timestamps with a time zone are UTC, `YYYY-MM-DD HH:MM:SS[.ffffff]+00`; before 1 AD with
//!   Postgres' ` BC` suffix.
//!
//! Why CSV: Redshift's COPY loads VARBYTE only from CSV, Parquet and ORC, not from JSON; CSV is
//! the only one of those a row at a time can be written in, and it is what Redshift parses
//! fastest after the columnar formats.
//!
//! Rows end with [`ROW_END`] (0xFF) in tidemark's buffers, not with a newline: a quoted value
//! may hold newlines, and the batch cuts its buffers at row terminators. 0xFF never occurs in
//! UTF-8 nor in anything else written here (ASCII outside quoted text); the file writer
//! ([`super::files`]) turns every 0xFF into `\n`.
//!
//! Values past their Redshift column's size (see [`super::types::value_limit`]) follow the
//! [`Oversize`] policy; values Redshift cannot hold at all (infinite timestamps, dates past
//! 294276 AD, a NaN in a DECIMAL column) are refused. Zero dates are written as NULL and
//! counted, as for every sink.
//!
//! [`Position`]: crate::event::Position

use std::fmt::{self, Write as _};

use super::types::{Limit, MAX_SUPER_BYTES, MAX_VARBYTE_BYTES, WideDecimal, value_limit};
use crate::event::format_time_micros;
use crate::event::{Column, ColumnType, Date, DateTime, Op, Value, civil_from_days};
use crate::sink::encode::{EncodeError, Encoded, Row, RowEncoder, RowOp};

/// The byte that ends every row in tidemark's buffers (the file writer makes it `\n`).
pub const ROW_END: u8 = 0xFF;

/// The NULL marker: a field of this one byte, unquoted (`NULL AS '\0'`).
const NULL: u8 = 0;

/// The name errors give the commit time field.
const COMMIT_TS_FIELD: &str = "_tidemark_commit_ts";

/// The first day Redshift's dates and timestamps hold, 4714-11-24 BC (Julian day 0), in days
/// since 1970-01-01.
const FIRST_DAY: i64 = -2_440_588;
/// The last year Redshift's dates and timestamps hold.
const LAST_YEAR: i32 = 294_276;
/// The first instant past Redshift's timestamps (294277-01-01 00:00:00 UTC), in µs since the
/// epoch.
const END_MICROS: i64 = 9_223_371_331_200_000_000;
/// A day in microseconds: Redshift's TIME goes up to 24:00:00 inclusive.
const DAY_MICROS: i64 = 86_400_000_000;

/// What a value longer than its Redshift column holds does (`oversize` in `[warehouse]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Oversize {
    /// The row cannot be written: the batch fails, naming the table, column, size and limit.
    #[default]
    Fail,
    /// The value is cut to the column's size (text at a character boundary, binary at the byte
    /// limit, decimals by dropping fraction digits), the row's `_tidemark_truncated` is true
    /// and the cut is counted. SUPER values cannot be cut: they always fail.
    Truncate,
}

/// Encodes rows as the CSV Redshift's COPY reads, each ending with [`ROW_END`].
#[derive(Debug, Clone, Copy, Default)]
pub struct CsvRows {
    oversize: Oversize,
    wide_decimal: WideDecimal,
}

impl CsvRows {
    /// An encoder applying `oversize` to values past their column's size, for columns typed
    /// with `wide_decimal` (the sink's settings: the same as its table types).
    pub fn new(oversize: Oversize, wide_decimal: WideDecimal) -> CsvRows {
        CsvRows {
            oversize,
            wide_decimal,
        }
    }
}

impl RowEncoder for CsvRows {
    fn encode(&self, row: &Row<'_>, out: &mut Vec<u8>) -> Result<Encoded, EncodeError> {
        let mut writer = CsvRow {
            settings: *self,
            row,
            encoded: Encoded::default(),
        };
        writer.encode(out)?;
        Ok(writer.encoded)
    }

    fn row_terminator(&self) -> u8 {
        ROW_END
    }
}

/// One row being written, with what writing it counted.
struct CsvRow<'a> {
    settings: CsvRows,
    row: &'a Row<'a>,
    encoded: Encoded,
}

impl CsvRow<'_> {
    /// Writes the row: its fields, its partial-row fields when the segment carries them, its
    /// values, then the terminator.
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
        out.extend_from_slice(b",\"");
        out.extend_from_slice(op.as_str().as_bytes());
        out.extend_from_slice(b"\",");
        out.extend_from_slice(num.format(packed).as_bytes());
        out.push(b',');
        if event.op == Op::Read {
            // A copied row was read, not committed: it has no source commit time.
            out.push(NULL);
        } else {
            self.timestamptz(out, event.transaction.commit_ts_micros, COMMIT_TS_FIELD)?;
        }
        out.push(b',');
        // Whether a value gets cut is known only once the values are written: `f` for now.
        let truncated_at = out.len();
        out.push(b'f');
        if let Some(partial) = partial {
            out.push(b',');
            write_unchanged(out, partial.unchanged);
            out.push(b',');
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
            out.push(b',');
            if key_only && !key.contains(&i) {
                out.push(NULL);
            } else {
                self.value(out, value, column)?;
            }
        }
        if self.encoded.truncated_values > 0 {
            out[truncated_at] = b't';
        }
        out.push(ROW_END);
        Ok(())
    }

    fn problem(&self, column: &str, problem: String) -> EncodeError {
        EncodeError::Value {
            table: self.row.change.table.id.clone(),
            column: column.to_owned(),
            position: self.row.change.position,
            problem: format!("{}{problem}", self.key_text()),
        }
    }

    /// `row with key (id = 42): `, naming the row a problem is in (empty for a keyless table):
    /// the operator finds the value by it.
    fn key_text(&self) -> String {
        let table = &self.row.change.table;
        let parts: Vec<String> = table
            .primary_key
            .iter()
            .filter_map(|&k| {
                let name = &table.columns.get(k)?.name;
                let value = self.row.values.get(k)?;
                let text = match value {
                    Value::Int(i) => i.to_string(),
                    Value::UInt(u) => u.to_string(),
                    Value::Decimal(d) => d.to_string(),
                    Value::Text(t) | Value::Enum(t) => {
                        let short: String = t.chars().take(64).collect();
                        format!("{short:?}")
                    }
                    other => {
                        let debug = format!("{other:?}");
                        debug.chars().take(64).collect()
                    }
                };
                Some(format!("{name} = {text}"))
            })
            .collect();
        if parts.is_empty() {
            String::new()
        } else {
            format!("row with key ({}): ", parts.join(", "))
        }
    }

    /// Applies the oversize policy to a value `problem` describes: an error under `fail`;
    /// under `truncate` the cut is counted and the caller writes the value cut.
    fn oversize(
        &mut self,
        column: &str,
        problem: impl FnOnce() -> String,
    ) -> Result<(), EncodeError> {
        match self.settings.oversize {
            Oversize::Fail => Err(self.problem(
                column,
                format!(
                    "{}; to load such values cut to fit instead (the row's _tidemark_truncated \
                     then says so), set oversize = \"truncate\" in [warehouse]",
                    problem()
                ),
            )),
            Oversize::Truncate => {
                self.encoded.truncated_values += 1;
                Ok(())
            }
        }
    }

    fn value(
        &mut self,
        out: &mut Vec<u8>,
        value: &Value,
        column: &Column,
    ) -> Result<(), EncodeError> {
        let ty = &column.ty;
        let mut num = itoa::Buffer::new();
        match value {
            Value::Null => out.push(NULL),
            // The row's unchanged-columns field names it; the loader keeps the target's value.
            Value::Unchanged => out.push(NULL),
            Value::Bool(b) => out.push(if *b { b't' } else { b'f' }),
            Value::Int(i) => out.extend_from_slice(num.format(*i).as_bytes()),
            Value::UInt(u) => out.extend_from_slice(num.format(*u).as_bytes()),
            Value::Year(y) => out.extend_from_slice(num.format(*y).as_bytes()),
            Value::Float(f) => write_sql_float(out, *f, f64::from(*f)),
            Value::Double(d) => write_sql_float(out, *d, *d),
            Value::Decimal(text) => self.decimal(out, text, column)?,
            Value::Text(text) => match ty {
                ColumnType::Array { element } => {
                    let json = array_json(text, element).map_err(|why| {
                        self.problem(&column.name, format!("not a Postgres array literal: {why}"))
                    })?;
                    self.text(out, &json, column)?;
                }
                // Redshift's TIMETZ reads the ISO text (`12:34:56+05:30`) unquoted.
                ColumnType::TimeTz { .. } => self.bare(out, text, column)?,
                _ => self.text(out, text, column)?,
            },
            Value::Json(text) => self.text(out, text, column)?,
            // A label, or the labels: sized from the labels, so always within the column.
            Value::Enum(label) => {
                out.push(b'"');
                self.quoted_body(out, label, column)?;
                out.push(b'"');
            }
            Value::Set(labels) => {
                out.push(b'"');
                for (i, label) in labels.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    self.quoted_body(out, label, column)?;
                }
                out.push(b'"');
            }
            Value::Bytes(bytes) => self.binary(out, &[bytes], column)?,
            // SRID then WKB, as the Postgres warehouse keeps them.
            Value::Geometry { srid, wkb } => {
                self.binary(out, &[&srid.to_le_bytes(), wkb], column)?
            }
            Value::Date(date) if date.is_zero() => self.zero_date(out),
            Value::Date(date) => {
                self.check_date(date, column)?;
                date.write_text(out);
            }
            Value::DateTime(dt) if dt.date.is_zero() => self.zero_date(out),
            Value::DateTime(dt) => {
                self.check_date(&dt.date, column)?;
                dt.write_text(out);
            }
            Value::Timestamp(0) if matches!(ty, ColumnType::Timestamp { .. }) => {
                self.zero_date(out)
            }
            Value::Timestamp(micros) => self.timestamptz(out, *micros, &column.name)?,
            Value::Time(micros) => match ty {
                ColumnType::TimeOfDay { .. } => {
                    if !(0..=DAY_MICROS).contains(micros) {
                        return Err(self.problem(
                            &column.name,
                            format!(
                                "the time of day {} is outside 00:00:00 to 24:00:00, what \
                                 Redshift's TIME holds",
                                format_time_micros(*micros)
                            ),
                        ));
                    }
                    out.extend_from_slice(format_time_micros(*micros).as_bytes());
                }
                // A MySQL TIME is a duration: its text, in a VARCHAR.
                _ => self.text(out, &format_time_micros(*micros), column)?,
            },
            Value::Bit { bits, width } => {
                out.push(b'"');
                for i in (0..*width).rev() {
                    out.push(if bits >> i & 1 == 1 { b'1' } else { b'0' });
                }
                out.push(b'"');
            }
            Value::Interval { .. } => self.text(out, &interval_text(value), column)?,
            Value::Infinity { negative } => {
                return Err(self.problem(
                    &column.name,
                    format!(
                        "{}infinity: Redshift dates and timestamps have no infinite values",
                        if *negative { "-" } else { "" }
                    ),
                ));
            }
            Value::Vector(items) => {
                let mut json = Vec::with_capacity(items.len() * 12 + 2);
                json.push(b'[');
                for (i, f) in items.iter().enumerate() {
                    if i > 0 {
                        json.push(b',');
                    }
                    write_json_float(&mut json, *f);
                }
                json.push(b']');
                // Only ASCII was written.
                let json = String::from_utf8_lossy(&json);
                self.text(out, &json, column)?;
            }
        }
        Ok(())
    }

    fn zero_date(&mut self, out: &mut Vec<u8>) {
        self.encoded.zero_dates_nulled += 1;
        out.push(NULL);
    }

    /// Text for a VARCHAR or SUPER column, quoted, within the column's size (or cut to it, or
    /// refused, by the oversize policy).
    fn text(&mut self, out: &mut Vec<u8>, text: &str, column: &Column) -> Result<(), EncodeError> {
        let text = match value_limit(&column.ty, self.settings.wide_decimal) {
            Some(Limit::Varchar(max)) if text.len() as u64 > max => {
                self.oversize(&column.name, || {
                    format!(
                        "the value is {} bytes, more than the {max} bytes its Redshift column \
                         {} holds",
                        text.len(),
                        Limit::Varchar(max).type_name()
                    )
                })?;
                // `max` is at most 65535.
                &text[..text.floor_char_boundary(max as usize)]
            }
            Some(Limit::Super) if text.len() as u64 > MAX_SUPER_BYTES => {
                return Err(self.problem(
                    &column.name,
                    format!(
                        "the JSON value is {} bytes, more than the {MAX_SUPER_BYTES} bytes a \
                         Redshift SUPER value holds (a JSON document cannot be cut, so \
                         oversize = \"truncate\" does not apply)",
                        text.len()
                    ),
                ));
            }
            _ => text,
        };
        out.reserve(text.len() + 2);
        out.push(b'"');
        self.quoted_body(out, text, column)?;
        out.push(b'"');
        Ok(())
    }

    /// `text` inside double quotes: every `"` doubled; a NUL refused.
    fn quoted_body(
        &self,
        out: &mut Vec<u8>,
        text: &str,
        column: &Column,
    ) -> Result<(), EncodeError> {
        let bytes = text.as_bytes();
        let mut from = 0;
        // Most values hold neither: one vectorised scan, then one copy.
        for at in memchr::memchr2_iter(b'"', NULL, bytes) {
            if bytes[at] == NULL {
                return Err(self.problem(
                    &column.name,
                    "the text contains a NUL character, which Redshift's COPY reads as the end \
                     of a record"
                        .into(),
                ));
            }
            // Up to and with the quote, then the quote again.
            out.extend_from_slice(&bytes[from..=at]);
            out.push(b'"');
            from = at + 1;
        }
        out.extend_from_slice(&bytes[from..]);
        Ok(())
    }

    /// Text Redshift reads unquoted (a TIMETZ): it must hold nothing CSV gives a meaning to.
    fn bare(&self, out: &mut Vec<u8>, text: &str, column: &Column) -> Result<(), EncodeError> {
        if text.is_empty()
            || text
                .bytes()
                .any(|b| matches!(b, b',' | b'"' | b'\n' | b'\r' | NULL))
        {
            return Err(self.problem(
                &column.name,
                format!("{text:?} is not a time with a time zone"),
            ));
        }
        out.extend_from_slice(text.as_bytes());
        Ok(())
    }

    /// A decimal: unquoted for a NUMERIC column, whose digits it must fit (fraction digits
    /// past the scale follow the oversize policy), or quoted text for a wide decimal kept as
    /// text.
    fn decimal(
        &mut self,
        out: &mut Vec<u8>,
        text: &str,
        column: &Column,
    ) -> Result<(), EncodeError> {
        match value_limit(&column.ty, self.settings.wide_decimal) {
            Some(Limit::Numeric { precision, scale }) => {
                let Some(number) = DecimalText::parse(text) else {
                    return Err(self.problem(
                        &column.name,
                        format!("{text} cannot be held by a Redshift DECIMAL (it has no NaN or infinity)"),
                    ));
                };
                let type_name = Limit::Numeric { precision, scale }.type_name();
                let integer_room = usize::from(precision.saturating_sub(scale));
                if number.integer_digits() > integer_room {
                    return Err(self.problem(
                        &column.name,
                        format!(
                            "the value {text} has {} integer digits, more than the {integer_room} \
                             its Redshift column {type_name} holds",
                            number.integer_digits()
                        ),
                    ));
                }
                let scale = usize::from(scale);
                if number.fraction.len() > scale {
                    self.oversize(&column.name, || {
                        format!(
                            "the value {text} has {} fraction digits, more than the {scale} its \
                             Redshift column {type_name} keeps",
                            number.fraction.len()
                        )
                    })?;
                    number.write(out, scale);
                } else {
                    out.extend_from_slice(text.as_bytes());
                }
                Ok(())
            }
            Some(Limit::Varchar(max)) if text.len() as u64 > max => {
                // Only fraction digits may go: cutting integer digits would change the number.
                let number = DecimalText::parse(text)
                    .filter(|n| n.integer_len() as u64 <= max)
                    .ok_or_else(|| {
                        self.problem(
                            &column.name,
                            format!(
                                "the value is {} characters, more than the {max} its Redshift \
                                 column {} holds, and it cannot be cut without changing it",
                                text.len(),
                                Limit::Varchar(max).type_name()
                            ),
                        )
                    })?;
                self.oversize(&column.name, || {
                    format!(
                        "the value is {} characters, more than the {max} its Redshift column {} \
                         holds",
                        text.len(),
                        Limit::Varchar(max).type_name()
                    )
                })?;
                // Room for the point and at least one digit, else neither.
                let room = (max as usize).saturating_sub(number.integer_len() + 1);
                out.push(b'"');
                number.write(out, room);
                out.push(b'"');
                Ok(())
            }
            Some(Limit::Varchar(_)) => self.text(out, text, column),
            _ => {
                out.extend_from_slice(text.as_bytes());
                Ok(())
            }
        }
    }

    /// Binary as lowercase hex (`""` when empty), within the VARBYTE's size or cut to it.
    fn binary(
        &mut self,
        out: &mut Vec<u8>,
        parts: &[&[u8]],
        column: &Column,
    ) -> Result<(), EncodeError> {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        if len == 0 {
            // An empty unquoted field would be read as no value at all.
            out.extend_from_slice(b"\"\"");
            return Ok(());
        }
        let max = match value_limit(&column.ty, self.settings.wide_decimal) {
            Some(Limit::Varbyte(max)) => max,
            _ => MAX_VARBYTE_BYTES,
        };
        let mut keep = len;
        if len as u64 > max {
            self.oversize(&column.name, || {
                format!(
                    "the value is {len} bytes, more than the {max} bytes its Redshift column {} \
                     holds",
                    Limit::Varbyte(max).type_name()
                )
            })?;
            // `max` is at most 1,024,000.
            keep = max as usize;
        }
        out.reserve(2 * keep);
        for part in parts {
            let take = part.len().min(keep);
            write_hex(out, &part[..take]);
            keep -= take;
        }
        Ok(())
    }

    /// Refuses a date past what Redshift's DATE and TIMESTAMP hold (4714-11-24 BC to
    /// 294276-12-31 AD).
    fn check_date(&self, date: &Date, column: &Column) -> Result<(), EncodeError> {
        let before_first = (date.year, date.month, date.day) < (-4714, 11, 24);
        if date.year > LAST_YEAR || before_first {
            return Err(self.problem(
                &column.name,
                format!(
                    "the date {date} is outside 4714-11-24 BC to {LAST_YEAR}-12-31, what Redshift's \
                     dates and timestamps hold"
                ),
            ));
        }
        Ok(())
    }

    /// An instant as Redshift's TIMESTAMPTZ reads it: `YYYY-MM-DD HH:MM:SS[.ffffff]+00`, with
    /// ` BC` before 1 AD.
    fn timestamptz(&self, out: &mut Vec<u8>, micros: i64, column: &str) -> Result<(), EncodeError> {
        let secs = micros.div_euclid(1_000_000);
        let days = secs.div_euclid(86_400);
        if days < FIRST_DAY || micros >= END_MICROS {
            return Err(self.problem(
                column,
                format!(
                    "the instant {} is outside 4714-11-24 BC to {LAST_YEAR}-12-31, what Redshift's \
                     timestamps hold",
                    crate::event::format_timestamp_micros(micros)
                ),
            ));
        }
        let tod = secs.rem_euclid(86_400) as u32;
        let (year, month, day) = civil_from_days(days);
        // The proleptic calendar's year 0 is 1 BC, -1 is 2 BC, ...
        let bc = year <= 0;
        let year = if bc { 1 - year } else { year };
        let utc = DateTime {
            date: Date {
                // Within Redshift's range: at most 294276.
                year: year as i32,
                month: month as u8,
                day: day as u8,
            },
            hour: (tod / 3600) as u8,
            minute: (tod / 60 % 60) as u8,
            second: (tod % 60) as u8,
            micros: micros.rem_euclid(1_000_000) as u32,
        };
        utc.write_text(out);
        out.extend_from_slice(b"+00");
        if bc {
            out.extend_from_slice(b" BC");
        }
        Ok(())
    }
}

/// A decimal's text split up: `-`, integer digits, fraction digits.
struct DecimalText<'a> {
    negative: bool,
    integer: &'a str,
    fraction: &'a str,
}

impl<'a> DecimalText<'a> {
    /// `text` as `[-]digits[.digits]`, or `None` (`NaN`, `Infinity`, anything else).
    fn parse(text: &'a str) -> Option<DecimalText<'a>> {
        let (negative, body) = match text.strip_prefix('-') {
            Some(body) => (true, body),
            None => (false, text.strip_prefix('+').unwrap_or(text)),
        };
        let (integer, fraction) = body.split_once('.').unwrap_or((body, ""));
        let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        (!(integer.is_empty() && fraction.is_empty()) && digits(integer) && digits(fraction))
            .then_some(DecimalText {
                negative,
                integer,
                fraction,
            })
    }

    /// Significant integer digits (leading zeros do not count against a precision).
    fn integer_digits(&self) -> usize {
        self.integer.trim_start_matches('0').len()
    }

    /// Characters before the point, the sign included.
    fn integer_len(&self) -> usize {
        usize::from(self.negative) + self.integer.len().max(1)
    }

    /// Writes the number with at most `scale` fraction digits, the rest dropped (toward zero).
    fn write(&self, out: &mut Vec<u8>, scale: usize) {
        if self.negative {
            out.push(b'-');
        }
        if self.integer.is_empty() {
            out.push(b'0');
        }
        out.extend_from_slice(self.integer.as_bytes());
        let keep = &self.fraction[..self.fraction.len().min(scale)];
        if !keep.is_empty() {
            out.push(b'.');
            out.extend_from_slice(keep.as_bytes());
        }
    }
}

/// The `_tidemark_unchanged` field: the lowercased names as a JSON array, quoted (NULL when
/// there are none).
fn write_unchanged(out: &mut Vec<u8>, names: &[&str]) {
    if names.is_empty() {
        out.push(NULL);
        return;
    }
    let mut json = Vec::with_capacity(names.iter().map(|n| n.len() + 3).sum::<usize>() + 2);
    json.push(b'[');
    for (i, name) in names.iter().enumerate() {
        if i > 0 {
            json.push(b',');
        }
        write_json_string(&mut json, &name.to_lowercase());
    }
    json.push(b']');
    out.push(b'"');
    // Column names hold no NUL (no source allows one), only quotes to double.
    for &b in &json {
        out.push(b);
        if b == b'"' {
            out.push(b'"');
        }
    }
    out.push(b'"');
}

/// Appends lowercase hex digits of `bytes`.
fn write_hex(out: &mut Vec<u8>, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let start = out.len();
    out.resize(start + 2 * bytes.len(), 0);
    for (pair, &b) in out[start..].chunks_exact_mut(2).zip(bytes) {
        pair[0] = DIGITS[usize::from(b >> 4)];
        pair[1] = DIGITS[usize::from(b & 15)];
    }
}

/// `write!` into a byte vector.
struct Utf8Out<'a>(&'a mut Vec<u8>);

impl fmt::Write for Utf8Out<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

/// A finite float as the shortest text that reads back as the same value: plain digits for
/// ordinary magnitudes, an exponent past them (`1e300` rather than 301 digits). Both are what
/// Redshift's float input and JSON read.
fn write_finite_float<T: fmt::Display + fmt::LowerExp>(
    out: &mut Vec<u8>,
    value: T,
    magnitude: f64,
) {
    if magnitude == 0.0 || (1e-5..1e16).contains(&magnitude) {
        let _ = write!(Utf8Out(out), "{value}");
    } else {
        let _ = write!(Utf8Out(out), "{value:e}");
    }
}

/// A REAL or DOUBLE PRECISION value; the non-finite ones as Redshift names them.
fn write_sql_float<T: fmt::Display + fmt::LowerExp>(out: &mut Vec<u8>, value: T, wide: f64) {
    if wide.is_finite() {
        write_finite_float(out, value, wide.abs());
    } else if wide.is_nan() {
        out.extend_from_slice(b"NaN");
    } else if wide > 0.0 {
        out.extend_from_slice(b"Infinity");
    } else {
        out.extend_from_slice(b"-Infinity");
    }
}

/// A vector element in JSON: a number, or (JSON has no NaN nor infinity) the SQL word as a
/// string.
fn write_json_float(out: &mut Vec<u8>, value: f32) {
    if value.is_finite() {
        write_finite_float(out, value, f64::from(value).abs());
    } else {
        out.push(b'"');
        write_sql_float(out, value, f64::from(value));
        out.push(b'"');
    }
}

/// Appends `text` as a JSON string.
fn write_json_string(out: &mut Vec<u8>, text: &str) {
    out.push(b'"');
    let bytes = text.as_bytes();
    let mut from = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escaped: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..0x20 => {
                out.extend_from_slice(&bytes[from..i]);
                let _ = write!(Utf8Out(out), "\\u{b:04x}");
                from = i + 1;
                continue;
            }
            _ => continue,
        };
        out.extend_from_slice(&bytes[from..i]);
        out.extend_from_slice(escaped);
        from = i + 1;
    }
    out.extend_from_slice(&bytes[from..]);
    out.push(b'"');
}

/// An interval as Postgres prints it (`1 year 2 mons -3 days +04:05:06.5`), which is also its
/// form in tidemark's JSON (the function writing it belongs to `event`, which exports it
/// through `Value`'s serde form only).
fn interval_text(value: &Value) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(text)) => text,
        _ => match value {
            Value::Interval {
                months,
                days,
                micros,
            } => format!("{months} mons {days} days {micros} microseconds"),
            _ => String::new(),
        },
    }
}

/// A Postgres array literal (`{1,NULL,"a b"}`, `[0:1]={{1,2},{3,4}}`) as the JSON array SUPER
/// holds: nesting kept (dimension bounds dropped), NULL as `null`, numbers (but NaN and
/// infinities) as JSON numbers, booleans as `true`/`false`, JSON elements embedded, everything
/// else as strings.
fn array_json(literal: &str, element: &ColumnType) -> Result<String, &'static str> {
    let mut rest = literal;
    if rest.starts_with('[') {
        // Dimension decoration `[lo:hi][lo:hi]=`: JSON arrays start at 0.
        rest = rest
            .split_once('=')
            .map(|(_, after)| after)
            .ok_or("dimensions without '='")?;
    }
    let bytes = rest.as_bytes();
    if bytes.first() != Some(&b'{') {
        return Err("it does not start with '{'");
    }
    let mut json = Vec::with_capacity(rest.len() + 8);
    let mut depth = 0usize;
    let mut i = 0;
    // Right after '{' or a comma: an element, a nested '{' (or, after '{', a '}') is next.
    let mut expect_element = true;
    let mut just_opened = false;
    while i < bytes.len() {
        match bytes[i] {
            b'{' if expect_element => {
                json.push(b'[');
                depth += 1;
                just_opened = true;
                i += 1;
                continue;
            }
            b'}' if depth > 0 && (!expect_element || just_opened) => {
                json.push(b']');
                depth -= 1;
                expect_element = false;
                i += 1;
                if depth == 0 {
                    if i != bytes.len() {
                        return Err("text after the closing '}'");
                    }
                    return String::from_utf8(json).map_err(|_| "not UTF-8");
                }
            }
            b',' if !expect_element && depth > 0 => {
                json.push(b',');
                expect_element = true;
                i += 1;
            }
            b'"' if expect_element && depth > 0 => {
                let mut value = Vec::new();
                i += 1;
                loop {
                    match bytes.get(i) {
                        None => return Err("unclosed quote"),
                        Some(b'"') => break,
                        Some(b'\\') => {
                            value.push(*bytes.get(i + 1).ok_or("unclosed quote")?);
                            i += 2;
                        }
                        Some(&b) => {
                            value.push(b);
                            i += 1;
                        }
                    }
                }
                i += 1;
                // Whole UTF-8 sequences were copied (escapes take ASCII characters).
                let text = std::str::from_utf8(&value).map_err(|_| "not UTF-8")?;
                write_json_element(&mut json, text, element);
                expect_element = false;
            }
            _ if expect_element && depth > 0 => {
                let end = rest[i..].find([',', '}']).map_or(bytes.len(), |at| i + at);
                let raw = &rest[i..end];
                if raw.is_empty() || raw.contains(['"', '{', '\\']) {
                    return Err("malformed element");
                }
                if raw.eq_ignore_ascii_case("NULL") {
                    json.extend_from_slice(b"null");
                } else {
                    write_json_element(&mut json, raw, element);
                }
                i = end;
                expect_element = false;
            }
            _ => return Err("unexpected character"),
        }
        just_opened = false;
    }
    Err("unbalanced '{'")
}

/// One array element's text as JSON, by the element type.
fn write_json_element(json: &mut Vec<u8>, text: &str, element: &ColumnType) {
    let raw = match element {
        ColumnType::Int { .. }
        | ColumnType::Float
        | ColumnType::Double
        | ColumnType::Decimal { .. } => is_json_number(text),
        ColumnType::Bool => match text {
            "t" | "true" => {
                json.extend_from_slice(b"true");
                return;
            }
            "f" | "false" => {
                json.extend_from_slice(b"false");
                return;
            }
            _ => false,
        },
        ColumnType::Json | ColumnType::JsonText => {
            serde_json::from_str::<&serde_json::value::RawValue>(text).is_ok()
        }
        _ => false,
    };
    if raw {
        json.extend_from_slice(text.as_bytes());
    } else {
        write_json_string(json, text);
    }
}

/// True when `text` is a JSON number: `-?(0|[1-9]d*)(.d+)?([eE][+-]?d+)?`.
fn is_json_number(text: &str) -> bool {
    let b = text.as_bytes();
    let mut i = usize::from(b.first() == Some(&b'-'));
    let digits = |i: &mut usize| {
        let start = *i;
        while b.get(*i).is_some_and(u8::is_ascii_digit) {
            *i += 1;
        }
        *i - start
    };
    let start = i;
    let integer = digits(&mut i);
    if integer == 0 || (integer > 1 && b[start] == b'0') {
        return false;
    }
    if b.get(i) == Some(&b'.') {
        i += 1;
        if digits(&mut i) == 0 {
            return false;
        }
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        if digits(&mut i) == 0 {
            return false;
        }
    }
    i == b.len()
}

/// The exact rows this encoder writes, read back as Redshift's COPY reads CSV, and what a
/// batch's [`TableChanges`](crate::sink::TableChanges) stages through it.
#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::event::{Column, Op, TableId, TableSchema};
    use crate::sink::changes::test_change as change;
    use crate::sink::encode::Partial;
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

    fn int() -> ColumnType {
        ColumnType::Int {
            bits: 64,
            unsigned: false,
        }
    }

    fn varchar(max_bytes: Option<u64>) -> ColumnType {
        ColumnType::Text {
            max_bytes,
            charset: "utf8mb4".into(),
        }
    }

    /// A table of an INT key `id` and one column `v` of type `ty`.
    fn id_and(ty: ColumnType) -> Arc<TableSchema> {
        schema(&[("id", int()), ("v", ty)], &[0])
    }

    /// One insert of `row` into `t`, encoded directly: the bytes and what encoding counted.
    fn encode_with(
        encoder: CsvRows,
        t: &Arc<TableSchema>,
        row: Vec<Value>,
    ) -> Result<(Vec<u8>, Encoded), EncodeError> {
        let event = change(t, Op::Insert, None, Some(row));
        let row = Row {
            change: &event,
            seq: 0,
            op: RowOp::Insert,
            values: event.after.as_deref().unwrap_or_default(),
            partial: None,
        };
        let mut out = Vec::new();
        let encoded = encoder.encode(&row, &mut out)?;
        Ok((out, encoded))
    }

    fn encode(t: &Arc<TableSchema>, row: Vec<Value>) -> Result<Vec<u8>, EncodeError> {
        encode_with(CsvRows::default(), t, row).map(|(out, _)| out)
    }

    /// The value fields (after the five row fields) of one encoded row, as the CSV reader
    /// gives them; NULL as `None`.
    fn fields(row: &[u8]) -> Vec<Option<String>> {
        parse(row).remove(0).split_off(5)
    }

    /// Every field of every row in `rows` (rows ending in [`ROW_END`]), read as CSV with
    /// COPY's NULL marker: a field of one NUL byte is `None`.
    fn parse(rows: &[u8]) -> Vec<Vec<Option<String>>> {
        assert_eq!(rows.last(), Some(&ROW_END));
        let csv: Vec<u8> = rows
            .iter()
            .map(|&b| if b == ROW_END { b'\n' } else { b })
            .collect();
        let parsed: Vec<Vec<Option<String>>> = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .from_reader(&csv[..])
            .records()
            .map(|r| {
                r.unwrap()
                    .iter()
                    .map(|f| (f != "\0").then(|| f.to_owned()))
                    .collect()
            })
            .collect();
        let terminators = rows.iter().filter(|&&b| b == ROW_END).count();
        assert_eq!(parsed.len(), terminators, "a row terminator inside a row");
        parsed
    }

    fn target() -> TargetTable {
        TargetTable {
            schema: "s".into(),
            table: "t".into(),
        }
    }

    fn table_changes(t: &Arc<TableSchema>) -> TableChanges {
        TableChanges::with_encoder(t.id.clone(), target(), Arc::new(CsvRows::default()))
    }

    /// What the loader would stage: the live rows of every segment.
    fn staged(changes: &mut TableChanges) -> Vec<u8> {
        let mut all = Vec::new();
        for segment in 0..changes.segments.len() {
            let mut chunks = changes.row_chunks(segment);
            while let Some(chunk) = chunks.next_chunk().unwrap() {
                all.extend_from_slice(&chunk);
            }
        }
        all
    }

    fn value_error(err: EncodeError) -> (String, String) {
        match err {
            EncodeError::Value {
                column, problem, ..
            } => (column, problem),
            other => panic!("not a value error: {other}"),
        }
    }

    #[test]
    fn a_row_is_its_fields_then_its_values_quoted_as_the_contract_says() {
        let t = schema(
            &[
                ("id", int()),
                ("s", varchar(None)),
                ("b", ColumnType::Binary { max_bytes: None }),
                ("n", varchar(None)),
                ("e", varchar(None)),
                ("f", ColumnType::Double),
                ("ok", ColumnType::Bool),
            ],
            &[0],
        );
        let row = vec![
            Value::Int(-5),
            Value::Text("a,\"b\"\nc".into()),
            Value::Bytes(vec![0, 0xab, 0xff]),
            Value::Null,
            Value::Text(String::new()),
            Value::Double(f64::NEG_INFINITY),
            Value::Bool(true),
        ];
        let mut changes = table_changes(&t);
        changes
            .push(&change(&t, Op::Insert, None, Some(row)), &mut 0)
            .unwrap();
        assert_eq!(
            staged(&mut changes),
            b"0,\"insert\",30064771074,2023-11-14 22:13:20+00,f,-5,\"a,\"\"b\"\"\nc\",00abff,\0,\"\",-Infinity,t\xff"
        );
        // A copied row has no commit time.
        let mut changes = table_changes(&t);
        let mut read = change(&t, Op::Read, None, Some(vec![Value::Int(1); 1]));
        read.after = Some(vec![
            Value::Int(1),
            Value::Null,
            Value::Bytes(vec![]),
            Value::Null,
            Value::Null,
            Value::Double(0.1),
            Value::Bool(false),
        ]);
        changes.push(&read, &mut 0).unwrap();
        assert_eq!(
            staged(&mut changes),
            b"0,\"insert\",30064771074,\0,f,1,\0,\"\",\0,\0,0.1,f\xff"
        );
    }

    #[test]
    fn every_value_type_reads_back_as_written() {
        let labels: Arc<[String]> = Arc::from(vec!["a".to_owned(), "b b".to_owned()]);
        let t = schema(
            &[
                ("id", int()),
                (
                    "u",
                    ColumnType::Int {
                        bits: 64,
                        unsigned: true,
                    },
                ),
                ("y", ColumnType::Year),
                ("r", ColumnType::Float),
                ("big", ColumnType::Double),
                (
                    "amount",
                    ColumnType::Decimal {
                        precision: 12,
                        scale: 2,
                    },
                ),
                ("s", varchar(Some(400))),
                (
                    "state",
                    ColumnType::Enum {
                        labels: labels.clone(),
                    },
                ),
                ("tags", ColumnType::Set { labels }),
                ("doc", ColumnType::Json),
                ("g", ColumnType::Geometry),
                ("d", ColumnType::Date),
                ("dt", ColumnType::DateTime { fsp: 6 }),
                ("ts", ColumnType::Timestamp { fsp: 3 }),
                ("tstz", ColumnType::TimestampTz { fsp: 6 }),
                ("dur", ColumnType::Time { fsp: 0 }),
                ("tod", ColumnType::TimeOfDay { fsp: 6 }),
                ("todtz", ColumnType::TimeTz { fsp: 0 }),
                ("bits", ColumnType::Bit { width: 5 }),
                ("iv", ColumnType::Interval),
                ("zero", ColumnType::Date),
                ("uuid", ColumnType::Uuid),
            ],
            &[0],
        );
        let row = vec![
            Value::Int(i64::MIN),
            Value::UInt(u64::MAX),
            Value::Year(2155),
            Value::Float(1.1),
            Value::Double(1e300),
            Value::Decimal("-12.30".into()),
            Value::Text("Grüße, \"World\" 🚀\r\n".into()),
            Value::Enum("b b".into()),
            Value::Set(vec!["a".into(), "b b".into()]),
            Value::Json(r#"{"k":"v, \"w\"","n":[1,2.50]}"#.into()),
            Value::Geometry {
                srid: 4326,
                wkb: vec![1, 2],
            },
            Value::Date(Date {
                year: 2024,
                month: 2,
                day: 29,
            }),
            Value::DateTime(DateTime {
                date: Date {
                    year: 9999,
                    month: 12,
                    day: 31,
                },
                hour: 23,
                minute: 59,
                second: 59,
                micros: 999_999,
            }),
            Value::Timestamp(1_650_493_084_123_000),
            Value::Timestamp(-1),
            Value::Time(-(838 * 3600 + 59 * 60 + 59) * 1_000_000),
            Value::Time(DAY_MICROS),
            Value::Text("12:34:56+05:30".into()),
            Value::Bit {
                bits: 0b101,
                width: 5,
            },
            Value::Interval {
                months: 14,
                days: -3,
                micros: 14_706_000_007,
            },
            Value::Date(Date {
                year: 0,
                month: 0,
                day: 0,
            }),
            Value::Text("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11".into()),
        ];
        let (out, encoded) = encode_with(CsvRows::default(), &t, row).unwrap();
        assert_eq!(encoded.zero_dates_nulled, 1);
        assert_eq!(encoded.truncated_values, 0);
        let want = [
            Some("-9223372036854775808"),
            Some("18446744073709551615"),
            Some("2155"),
            Some("1.1"),
            Some("1e300"),
            Some("-12.30"),
            Some("Grüße, \"World\" 🚀\r\n"),
            Some("b b"),
            Some("a,b b"),
            Some(r#"{"k":"v, \"w\"","n":[1,2.50]}"#),
            Some("e61000000102"),
            Some("2024-02-29"),
            Some("9999-12-31 23:59:59.999999"),
            Some("2022-04-20 22:18:04.123000+00"),
            Some("1969-12-31 23:59:59.999999+00"),
            Some("-838:59:59"),
            Some("24:00:00"),
            Some("12:34:56+05:30"),
            Some("00101"),
            Some("1 year 2 mons -3 days +04:05:06.000007"),
            None,
            Some("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
        ];
        let got = fields(&out);
        assert_eq!(got.len(), want.len());
        for (got, want) in got.iter().zip(want) {
            assert_eq!(got.as_deref(), want);
        }
        // Text-like values are quoted; numbers, dates and times are not.
        let text = String::from_utf8_lossy(&out);
        assert!(text.contains(",1.1,1e300,-12.30,\"Grüße"), "{text}");
        assert!(text.contains(",\"b b\",\"a,b b\",\"{\"\"k\"\""), "{text}");
        assert!(
            text.contains(",\"-838:59:59\",24:00:00,12:34:56+05:30,\"00101\","),
            "{text}"
        );
    }

    #[test]
    fn text_past_its_varchar_fails_naming_column_size_and_limit() {
        let t = id_and(varchar(Some(8)));
        let long = Value::Text("ab😀cdefg".into()); // 11 bytes
        let (column, problem) = value_error(encode(&t, vec![Value::Int(1), long]).unwrap_err());
        assert_eq!(column, "v");
        assert!(
            problem.contains("11 bytes")
                && problem.contains("8 bytes")
                && problem.contains("character varying(8)")
                && problem.contains("oversize = \"truncate\""),
            "{problem}"
        );
        // The whole message names the table, column and position.
        let err = encode(&t, vec![Value::Int(1), Value::Text("x".repeat(9))])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("shop.t") && err.contains("column `v`") && err.contains("7.2"),
            "{err}"
        );
        // At the limit it fits.
        assert!(encode(&t, vec![Value::Int(1), Value::Text("x".repeat(8))]).is_ok());
    }

    #[test]
    fn truncate_cuts_text_at_a_character_boundary_and_flags_the_row() {
        let t = schema(
            &[
                ("id", int()),
                ("v", varchar(Some(8))),
                ("w", varchar(Some(3))),
            ],
            &[0],
        );
        let truncate = CsvRows::new(Oversize::Truncate, WideDecimal::Text);
        // `😀` takes bytes 2..6; cutting at 8 bytes keeps "ab😀cd", at 3 keeps "ab".
        let row = vec![
            Value::Int(1),
            Value::Text("ab😀cdefg".into()),
            Value::Text("ab😀".into()),
        ];
        let (out, encoded) = encode_with(truncate, &t, row).unwrap();
        assert_eq!(encoded.truncated_values, 2);
        let all = parse(&out).remove(0);
        assert_eq!(all[4].as_deref(), Some("t"), "_tidemark_truncated");
        assert_eq!(all[6].as_deref(), Some("ab😀cd"));
        assert_eq!(all[7].as_deref(), Some("ab"));
        // A row whose values fit is not flagged.
        let row = vec![Value::Int(1), Value::Text("ab".into()), Value::Null];
        let (out, encoded) = encode_with(truncate, &t, row).unwrap();
        assert_eq!(encoded, Encoded::default());
        assert_eq!(parse(&out)[0][4].as_deref(), Some("f"));
    }

    #[test]
    fn binary_is_hex_within_its_varbyte_or_cut_at_the_byte_limit() {
        let t = id_and(ColumnType::Binary { max_bytes: Some(3) });
        let value = Value::Bytes(vec![0xde, 0xad, 0xbe, 0xef]);
        let (column, problem) =
            value_error(encode(&t, vec![Value::Int(1), value.clone()]).unwrap_err());
        assert_eq!(column, "v");
        assert!(
            problem.contains("4 bytes") && problem.contains("varbyte(3)"),
            "{problem}"
        );
        let truncate = CsvRows::new(Oversize::Truncate, WideDecimal::Text);
        let (out, encoded) = encode_with(truncate, &t, vec![Value::Int(1), value]).unwrap();
        assert_eq!(encoded.truncated_values, 1);
        let all = parse(&out).remove(0);
        assert_eq!(
            (all[4].as_deref(), all[6].as_deref()),
            (Some("t"), Some("deadbe"))
        );
    }

    #[test]
    fn wide_decimals_keep_their_integer_digits_and_drop_fraction_digits_only_by_policy() {
        let wide = ColumnType::Decimal {
            precision: 65,
            scale: 30,
        };
        // numeric(38,3) under decimal38: 35 integer digits, 3 fraction digits.
        let t = id_and(wide.clone());
        let decimal38 = CsvRows::new(Oversize::Fail, WideDecimal::Decimal38);
        let truncate = CsvRows::new(Oversize::Truncate, WideDecimal::Decimal38);
        let fits = Value::Decimal("-12.345".into());
        let (out, _) = encode_with(decimal38, &t, vec![Value::Int(1), fits]).unwrap();
        assert_eq!(fields(&out)[1].as_deref(), Some("-12.345"));
        let finer = Value::Decimal("-12.34567".into());
        let (column, problem) = value_error(
            encode_with(decimal38, &t, vec![Value::Int(1), finer.clone()]).unwrap_err(),
        );
        assert_eq!(column, "v");
        assert!(
            problem.contains("5 fraction digits")
                && problem.contains("numeric(38,3)")
                && problem.contains("oversize = \"truncate\""),
            "{problem}"
        );
        let (out, encoded) = encode_with(truncate, &t, vec![Value::Int(1), finer]).unwrap();
        assert_eq!(encoded.truncated_values, 1);
        let all = parse(&out).remove(0);
        assert_eq!(
            (all[4].as_deref(), all[6].as_deref()),
            (Some("t"), Some("-12.345"))
        );
        // Integer digits past the column's cannot be cut, whatever the policy; nor can NaN.
        let huge = Value::Decimal(format!("{}.5", "9".repeat(36)));
        for value in [huge, Value::Decimal("NaN".into())] {
            let (_, problem) =
                value_error(encode_with(truncate, &t, vec![Value::Int(1), value]).unwrap_err());
            assert!(
                problem.contains("integer digits") || problem.contains("NaN"),
                "{problem}"
            );
        }
        // Kept as text (the default), the digits are quoted, and NaN is text like any other.
        let (out, _) = encode(&t, vec![Value::Int(1), Value::Decimal("-12.34567".into())])
            .map(|out| (out, ()))
            .unwrap();
        assert!(out.ends_with(b",\"-12.34567\"\xff"));
        let unbounded = id_and(ColumnType::Decimal {
            precision: 0,
            scale: 0,
        });
        let (out, _) = encode(
            &unbounded,
            vec![Value::Int(1), Value::Decimal("NaN".into())],
        )
        .map(|out| (out, ()))
        .unwrap();
        assert!(out.ends_with(b",\"NaN\"\xff"));
        // Past VARCHAR(65535), a decimal as text drops fraction digits to fit, by policy.
        let long = format!("1.{}", "5".repeat(70_000));
        let text_truncate = CsvRows::new(Oversize::Truncate, WideDecimal::Text);
        let (out, encoded) = encode_with(
            text_truncate,
            &unbounded,
            vec![Value::Int(1), Value::Decimal(long)],
        )
        .unwrap();
        assert_eq!(encoded.truncated_values, 1);
        let value = fields(&out).remove(1).unwrap();
        assert_eq!(value.len(), 65_535);
        assert!(value.starts_with("1.555"));
    }

    #[test]
    fn json_past_super_fails_even_when_truncating() {
        let t = id_and(ColumnType::Json);
        let big = format!("\"{}\"", "x".repeat(MAX_SUPER_BYTES as usize));
        let truncate = CsvRows::new(Oversize::Truncate, WideDecimal::Text);
        let (column, problem) = value_error(
            encode_with(truncate, &t, vec![Value::Int(1), Value::Json(big)]).unwrap_err(),
        );
        assert_eq!(column, "v");
        assert!(
            problem.contains(&format!("{} bytes", MAX_SUPER_BYTES + 2))
                && problem.contains("SUPER")
                && problem.contains("does not apply"),
            "{problem}"
        );
    }

    #[test]
    fn a_nul_in_text_is_refused_and_leaves_the_batch_as_it_was() {
        let t = id_and(varchar(None));
        let mut changes = table_changes(&t);
        let mut seq = 0;
        let insert = |id, text: &str| {
            change(
                &t,
                Op::Insert,
                None,
                Some(vec![Value::Int(id), Value::Text(text.into())]),
            )
        };
        changes.push(&insert(1, "ok"), &mut seq).unwrap();
        let err = changes.push(&insert(2, "a\0b"), &mut seq).unwrap_err();
        let (column, problem) = value_error(err);
        assert_eq!(column, "v");
        assert!(problem.contains("NUL"), "{problem}");
        assert_eq!(parse(&staged(&mut changes)).len(), 1);
    }

    #[test]
    fn values_redshift_cannot_hold_are_refused() {
        let date = |year| {
            Value::Date(Date {
                year,
                month: 1,
                day: 1,
            })
        };
        let cases = [
            (
                ColumnType::Date,
                Value::Infinity { negative: false },
                "infinity",
            ),
            (
                ColumnType::TimestampTz { fsp: 6 },
                Value::Infinity { negative: true },
                "-infinity",
            ),
            (ColumnType::Date, date(294_277), "294277-01-01"),
            (ColumnType::Date, date(-4715), "4715-01-01 BC"),
            (
                ColumnType::TimestampTz { fsp: 6 },
                Value::Timestamp(i64::MAX),
                "outside",
            ),
            (
                ColumnType::TimestampTz { fsp: 6 },
                Value::Timestamp(i64::MIN),
                "outside",
            ),
            (
                ColumnType::TimeOfDay { fsp: 6 },
                Value::Time(DAY_MICROS + 1),
                "24:00:00.000001",
            ),
            (
                ColumnType::Decimal {
                    precision: 10,
                    scale: 2,
                },
                Value::Decimal("Infinity".into()),
                "Infinity",
            ),
            (
                ColumnType::TimeTz { fsp: 0 },
                Value::Text("1,2".into()),
                "time with a time zone",
            ),
        ];
        for (ty, value, needle) in cases {
            let t = id_and(ty.clone());
            let (column, problem) =
                value_error(encode(&t, vec![Value::Int(1), value]).unwrap_err());
            assert_eq!(column, "v");
            assert!(problem.contains(needle), "{ty:?}: {problem}");
        }
        // The edges of Redshift's range are written, BC as Postgres writes it.
        let t = id_and(ColumnType::Date);
        let out = encode(&t, vec![Value::Int(1), date(294_276)]).unwrap();
        assert_eq!(fields(&out)[1].as_deref(), Some("294276-01-01"));
        let out = encode(&t, vec![Value::Int(1), date(-44)]).unwrap();
        assert_eq!(fields(&out)[1].as_deref(), Some("0044-01-01 BC"));
        let t = id_and(ColumnType::TimestampTz { fsp: 6 });
        let out = encode(
            &t,
            vec![Value::Int(1), Value::Timestamp(-63_517_780_800_000_000)],
        )
        .unwrap();
        assert_eq!(
            fields(&out)[1].as_deref(),
            Some("0044-03-15 12:00:00+00 BC")
        );
    }

    #[test]
    fn zero_dates_are_nulled_and_counted_through_the_batch() {
        let t = schema(
            &[
                ("id", int()),
                ("d", ColumnType::Date),
                ("ts", ColumnType::Timestamp { fsp: 0 }),
                ("tstz", ColumnType::TimestampTz { fsp: 0 }),
            ],
            &[0],
        );
        let zero = Date {
            year: 2024,
            month: 0,
            day: 1,
        };
        let row = vec![
            Value::Int(1),
            Value::Date(zero),
            Value::Timestamp(0),
            Value::Timestamp(0),
        ];
        let mut changes = table_changes(&t);
        changes
            .push(&change(&t, Op::Insert, None, Some(row)), &mut 0)
            .unwrap();
        assert_eq!(changes.zero_dates_nulled, 2);
        let rows = parse(&staged(&mut changes));
        assert_eq!(
            rows[0][6..],
            [None, None, Some("1970-01-01 00:00:00+00".into())]
        );
    }

    #[test]
    fn keyed_deletes_write_their_key_and_unchanged_values_are_null() {
        let t = schema(&[("id", int()), ("doc", varchar(None)), ("n", int())], &[0]);
        let row = |id, doc: Value| vec![Value::Int(id), doc, Value::Int(7)];
        let mut changes = table_changes(&t);
        let mut seq = 0;
        let delete = change(&t, Op::Delete, Some(row(1, Value::Text("x".into()))), None);
        changes.push(&delete, &mut seq).unwrap();
        let rows = parse(&staged(&mut changes));
        assert_eq!(rows[0][1].as_deref(), Some("delete"));
        assert_eq!(rows[0][5..], [Some("1".into()), None, None]);
        // A table without a key deletes by every value.
        let keyless = schema(&[("id", int()), ("doc", varchar(None))], &[]);
        let mut changes = table_changes(&keyless);
        let delete = change(
            &keyless,
            Op::Delete,
            Some(vec![Value::Int(1), Value::Text("x".into())]),
            None,
        );
        changes.push(&delete, &mut seq).unwrap();
        assert_eq!(
            parse(&staged(&mut changes))[0][5..],
            [Some("1".into()), Some("x".into())]
        );
    }

    #[test]
    fn partial_rows_name_their_unchanged_columns_as_a_json_array() {
        let t = schema(
            &[
                ("id", int()),
                ("Doc\"X", varchar(None)),
                ("n", varchar(None)),
            ],
            &[0],
        );
        let row = |doc: Value, n: &str| vec![Value::Int(1), doc, Value::Text(n.into())];
        let mut changes = table_changes(&t);
        let mut seq = 0;
        let insert = change(
            &t,
            Op::Insert,
            None,
            Some(row(Value::Text("big".into()), "a")),
        );
        changes.push(&insert, &mut seq).unwrap();
        let partial = change(
            &t,
            Op::Update,
            Some(row(Value::Unchanged, "a")),
            Some(row(Value::Unchanged, "b")),
        );
        changes.push(&partial, &mut seq).unwrap();
        assert_eq!(changes.segments.len(), 2);
        let rows = parse(&staged(&mut changes));
        assert_eq!(rows.len(), 2);
        // seq, op, position, commit_ts, truncated, unchanged, generation, id, doc, n.
        assert_eq!(rows[1].len(), 10);
        assert_eq!(rows[1][5].as_deref(), Some(r#"["doc\"x"]"#));
        assert_eq!(rows[1][6].as_deref(), Some("1"));
        assert_eq!(rows[1][7..], [Some("1".into()), None, Some("b".into())]);
        // A row of such a segment that leaves nothing unchanged has a NULL there.
        let event = change(
            &t,
            Op::Insert,
            None,
            Some(row(Value::Text("d".into()), "c")),
        );
        let values = event.after.clone().unwrap_or_default();
        let mut out = Vec::new();
        CsvRows::default()
            .encode(
                &Row {
                    change: &event,
                    seq: 9,
                    op: RowOp::Insert,
                    values: &values,
                    partial: Some(Partial {
                        unchanged: &[],
                        generation: 3,
                    }),
                },
                &mut out,
            )
            .unwrap();
        assert_eq!(parse(&out)[0][5..7], [None, Some("3".into())]);
    }

    #[test]
    fn arrays_and_vectors_become_json_arrays() {
        let array = |element: ColumnType| ColumnType::Array {
            element: Box::new(element),
        };
        let cases = [
            (array(int()), r#"{1,NULL,-3}"#, "[1,null,-3]"),
            (
                array(ColumnType::Double),
                "[0:1]={{1.5,NaN},{-Infinity,1e+30}}",
                r#"[[1.5,"NaN"],["-Infinity",1e+30]]"#,
            ),
            (array(ColumnType::Bool), "{t,f}", "[true,false]"),
            (
                array(varchar(None)),
                r#"{"a \"b\"",NULL,"NULL",c\d,"x\\y",{}}"#,
                "",
            ),
            (
                array(ColumnType::Json),
                r#"{"{\"a\": [1, 2]}",3,"not json"}"#,
                r#"[{"a": [1, 2]},3,"not json"]"#,
            ),
            (array(varchar(None)), "{}", "[]"),
            (array(varchar(None)), "{\"a\nb\",é}", r#"["a\nb","é"]"#),
        ];
        for (ty, literal, want) in cases {
            let t = id_and(ty);
            let result = encode(&t, vec![Value::Int(1), Value::Text(literal.into())]);
            if want.is_empty() {
                // `c\d` unquoted is not how Postgres writes an element.
                assert!(result.is_err(), "{literal}");
                continue;
            }
            let json = fields(&result.unwrap()).remove(1).unwrap();
            assert_eq!(json, want);
            assert!(serde_json::from_str::<serde_json::Value>(&json).is_ok());
        }
        for bad in ["{1,}", "{1", "1}", "{1}}", "{{1},2", r#"{"a}"#] {
            let t = id_and(array(int()));
            let err = encode(&t, vec![Value::Int(1), Value::Text(bad.into())]).unwrap_err();
            assert!(value_error(err).1.contains("array literal"), "{bad}");
        }
        let t = id_and(ColumnType::Vector { dimensions: None });
        let vector = Value::Vector(vec![1.1, -1.01, 1e-45, f32::NAN, f32::NEG_INFINITY]);
        let out = encode(&t, vec![Value::Int(1), vector]).unwrap();
        assert_eq!(
            fields(&out)[1].as_deref(),
            Some(r#"[1.1,-1.01,1e-45,"NaN","-Infinity"]"#)
        );
    }

    #[test]
    fn floats_are_their_shortest_round_trip_text() {
        let t = id_and(ColumnType::Double);
        for (value, want) in [
            (0.0, "0"),
            (-0.0, "-0"),
            (123_456.789, "123456.789"),
            (1e-7, "1e-7"),
            (f64::MAX, "1.7976931348623157e308"),
            (f64::NAN, "NaN"),
            (f64::INFINITY, "Infinity"),
        ] {
            let out = encode(&t, vec![Value::Int(1), Value::Double(value)]).unwrap();
            let text = fields(&out).remove(1).unwrap();
            assert_eq!(text, want);
            if value.is_finite() {
                assert_eq!(text.parse::<f64>().unwrap().to_bits(), value.to_bits());
            }
        }
    }

    #[test]
    fn a_row_of_the_wrong_length_is_refused() {
        let t = id_and(int());
        let (column, problem) = value_error(encode(&t, vec![Value::Int(1)]).unwrap_err());
        assert_eq!(column, "id");
        assert!(
            problem.contains("1 values but the table has 2"),
            "{problem}"
        );
    }
}
