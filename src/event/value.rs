//! Typed column values: what a source decoded, exactly, before any target mapping.
//!
//! Invariant: a `Value` never loses information relative to what the source stored. Exact
//! numbers stay exact (`Decimal` is text), unsigned integers keep their full range, temporal
//! values keep microseconds and MySQL's out-of-range forms (zero dates, TIME beyond 24 h).
//! Mapping to what a warehouse can hold is the sink's job, and it must fail loudly or follow an
//! explicit policy when a value does not fit.

use std::fmt;
use std::fmt::Write as _;

use serde::{Serialize, Serializer};
use serde_json::value::RawValue;

/// One decoded column value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// SQL NULL.
    Null,
    /// Not carried by this row image: the log omitted the column (MySQL partial row images,
    /// Postgres unchanged TOAST values). In an after image it means "not changed by this
    /// change": a sink keeps the target's current value and never writes NULL for it.
    Unchanged,
    /// Boolean (Postgres `bool`).
    Bool(bool),
    /// Signed integer of any width up to 64 bits.
    Int(i64),
    /// Unsigned integer of any width up to 64 bits (MySQL `UNSIGNED`).
    UInt(u64),
    /// Single-precision float.
    Float(f32),
    /// Double-precision float.
    Double(f64),
    /// Exact decimal number as canonical text (`-12.340`, scale kept as declared). A Postgres
    /// `numeric` may also be `NaN`, `Infinity` or `-Infinity`, carried as those words: a sink
    /// whose target cannot hold them fails or applies a documented policy, as for zero dates.
    Decimal(String),
    /// Character data, already converted from the column's charset to UTF-8.
    Text(String),
    /// Binary data, byte for byte.
    Bytes(Vec<u8>),
    /// Calendar date; may be MySQL's zero or partial-zero date (see [`Date::is_zero`]).
    Date(Date),
    /// Wall-clock date and time without a time zone (MySQL `DATETIME`).
    DateTime(DateTime),
    /// An instant, in microseconds since the Unix epoch, UTC (MySQL `TIMESTAMP`, Postgres
    /// `timestamptz`).
    Timestamp(i64),
    /// Signed duration in microseconds (MySQL `TIME`, which may be negative or over 24 h; Postgres
    /// `time`: microseconds since midnight, up to 24 h).
    Time(i64),
    /// MySQL `YEAR` (0 for the zero year, else 1901..=2155).
    Year(u16),
    /// An `ENUM` value, as its label (empty string for MySQL's invalid-value index 0).
    Enum(String),
    /// A `SET` value, as its labels in definition order.
    Set(Vec<String>),
    /// A `BIT(width)` value, right-aligned in a u64.
    Bit {
        /// The bits, least significant bit last.
        bits: u64,
        /// Declared width, 1..=64.
        width: u8,
    },
    /// JSON document as compact JSON text (Postgres `json` and `jsonb`: the server's text as sent).
    Json(String),
    /// Spatial value: SRID plus the geometry in WKB.
    Geometry {
        /// Spatial reference system id (0 when unspecified).
        srid: u32,
        /// Well-known binary of the geometry.
        wkb: Vec<u8>,
    },
    /// A Postgres `interval`: months, days and microseconds, kept apart as Postgres keeps them
    /// (a month is not a fixed number of days, nor a day a fixed number of hours across DST).
    Interval {
        /// Months (years are 12 months).
        months: i32,
        /// Days.
        days: i32,
        /// Microseconds.
        micros: i64,
    },
    /// Postgres `infinity`, or `-infinity` when `negative`, of a `date`, `timestamp` or
    /// `timestamptz` column: later (earlier) than every other value of the column.
    Infinity {
        /// True for `-infinity`.
        negative: bool,
    },
    /// A vector of single-precision floats (MySQL 9 `VECTOR`), in order.
    Vector(Vec<f32>),
}

impl Value {
    /// True for SQL NULL.
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }
}

/// A calendar date as the source stored it. MySQL allows zero parts (`0000-00-00`,
/// `2024-00-10`) when `NO_ZERO_DATE`/`NO_ZERO_IN_DATE` are off; they are kept as is. Postgres
/// dates reach from 4713 BC to 5874897 AD; a year before 1 AD is negative, as Postgres names it
/// (`-44` is 44 BC: there is no year 0 BC or AD, so a 0 year is only ever a MySQL zero date).
///
/// Zero-date policy: sources pass zero dates through unchanged; a sink that cannot store them
/// writes NULL and counts it (documented in docs/types.md), never an invented date.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Date {
    /// Year: 1..=9999 from MySQL (0 in zero dates); from Postgres -4713..=-1 (BC) and
    /// 1..=5874897.
    pub year: i32,
    /// Month, 0..=12 (0 only in zero dates).
    pub month: u8,
    /// Day, 0..=31 (0 only in zero dates).
    pub day: u8,
}

impl Date {
    /// True when any part is zero, i.e. not a real calendar date.
    pub fn is_zero(&self) -> bool {
        self.year == 0 || self.month == 0 || self.day == 0
    }

    /// True for a date before 1 AD.
    pub fn is_bc(&self) -> bool {
        self.year < 0
    }

    /// Appends `YYYY-MM-DD` (more year digits past 9999; the year counted back for BC dates,
    /// whose ` BC` the caller appends where Postgres writes it: after any time of day).
    fn write_ymd(&self, out: &mut Vec<u8>) {
        push_year(out, self.year.unsigned_abs());
        out.push(b'-');
        push_digits(out, u32::from(self.month), 2);
        out.push(b'-');
        push_digits(out, u32::from(self.day), 2);
    }

    /// Appends the [`fmt::Display`] text, as Postgres prints a date with DateStyle ISO:
    /// `2024-01-02`, `21016-11-04`, `0044-03-15 BC`.
    pub fn write_text(&self, out: &mut Vec<u8>) {
        self.write_ymd(out);
        if self.is_bc() {
            out.extend_from_slice(BC);
        }
    }
}

/// Postgres' suffix of a date or time before 1 AD.
const BC: &[u8] = b" BC";

impl fmt::Display for Date {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = Vec::with_capacity(16);
        self.write_text(&mut out);
        f.write_str(&String::from_utf8_lossy(&out))
    }
}

/// A date and time of day with microseconds, without a time zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DateTime {
    /// The date part (may be a zero date).
    pub date: Date,
    /// Hour, 0..=23.
    pub hour: u8,
    /// Minute, 0..=59.
    pub minute: u8,
    /// Second, 0..=59.
    pub second: u8,
    /// Microseconds, 0..=999_999.
    pub micros: u32,
}

impl DateTime {
    /// Appends the [`fmt::Display`] text (`2024-01-02 03:04:05.000006`, `0044-03-15 12:00:00
    /// BC`) without the formatting machinery (the staging hot path writes one per datetime).
    pub fn write_text(&self, out: &mut Vec<u8>) {
        self.date.write_ymd(out);
        out.push(b' ');
        push_time(
            out,
            u32::from(self.hour),
            u32::from(self.minute),
            u32::from(self.second),
            self.micros,
        );
        if self.date.is_bc() {
            out.extend_from_slice(BC);
        }
    }
}

impl fmt::Display for DateTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = Vec::with_capacity(32);
        self.write_text(&mut out);
        f.write_str(&String::from_utf8_lossy(&out))
    }
}

/// Formats a signed microsecond duration the way MySQL prints TIME: `-838:59:59.000000`.
pub fn format_time_micros(micros: i64) -> String {
    let sign = if micros < 0 { "-" } else { "" };
    let abs = micros.unsigned_abs();
    let (secs, frac) = (abs / 1_000_000, abs % 1_000_000);
    let (h, m, s) = (secs / 3600, (secs / 60) % 60, secs % 60);
    if frac == 0 {
        format!("{sign}{h:02}:{m:02}:{s:02}")
    } else {
        format!("{sign}{h:02}:{m:02}:{s:02}.{frac:06}")
    }
}

/// Formats an interval the way Postgres prints it with `IntervalStyle = postgres` (its default):
/// `-1 years -2 mons +3 days -04:05:06.000007`, `1 mon -1 days`, `00:00:00`.
pub(crate) fn format_interval(months: i32, days: i32, micros: i64) -> String {
    /// Appends one `N unit(s)` part the way Postgres' `AddPostgresIntPart` does: a `+` marks a
    /// positive part after a negative one.
    fn part(out: &mut String, before_negative: &mut bool, value: i64, unit: &str) {
        if value == 0 {
            return;
        }
        if !out.is_empty() {
            out.push(' ');
        }
        if *before_negative && value > 0 {
            out.push('+');
        }
        let plural = if value == 1 { "" } else { "s" };
        let _ = write!(out, "{value} {unit}{plural}");
        *before_negative = value < 0;
    }
    let mut out = String::new();
    let mut before_negative = false;
    part(
        &mut out,
        &mut before_negative,
        i64::from(months / 12),
        "year",
    );
    part(
        &mut out,
        &mut before_negative,
        i64::from(months % 12),
        "mon",
    );
    part(&mut out, &mut before_negative, i64::from(days), "day");
    if out.is_empty() || micros != 0 {
        let sign = match (micros < 0, before_negative) {
            (true, _) => "-",
            (false, true) => "+",
            (false, false) => "",
        };
        let separator = if out.is_empty() { "" } else { " " };
        let abs = micros.unsigned_abs();
        let (secs, frac) = (abs / 1_000_000, abs % 1_000_000);
        let (h, m, s) = (secs / 3600, (secs / 60) % 60, secs % 60);
        let _ = write!(out, "{separator}{sign}{h:02}:{m:02}:{s:02}");
        if frac != 0 {
            let digits = format!("{frac:06}");
            out.push('.');
            out.push_str(digits.trim_end_matches('0'));
        }
    }
    out
}

/// Formats microseconds since the epoch as an ISO-8601 UTC instant (`2024-01-02T03:04:05.123456Z`;
/// past 9999 with more year digits, before 1 AD as Postgres writes it: `0044-03-15T12:00:00Z BC`,
/// which Postgres also reads).
pub fn format_timestamp_micros(micros: i64) -> String {
    let mut out = Vec::with_capacity(27);
    write_timestamp_micros(&mut out, micros);
    // Only ASCII digits and separators were written.
    String::from_utf8_lossy(&out).into_owned()
}

/// Appends [`format_timestamp_micros`]'s text to `out` without allocating (the staging hot path
/// writes two per row).
pub fn write_timestamp_micros(out: &mut Vec<u8>, micros: i64) {
    let secs = micros.div_euclid(1_000_000);
    let frac = micros.rem_euclid(1_000_000) as u32;
    let days = secs.div_euclid(86_400);
    let tod = secs.rem_euclid(86_400) as u32;
    let (y, mo, d) = civil_from_days(days);
    // The proleptic calendar's year 0 is 1 BC, -1 is 2 BC, ...
    let bc = y <= 0;
    let year = if bc { 1 - y } else { y };
    push_year(out, u32::try_from(year).unwrap_or(u32::MAX));
    out.push(b'-');
    push_digits(out, mo, 2);
    out.push(b'-');
    push_digits(out, d, 2);
    out.push(b'T');
    push_time(out, tod / 3600, (tod / 60) % 60, tod % 60, frac);
    out.push(b'Z');
    if bc {
        out.extend_from_slice(BC);
    }
}

/// Appends a year as at least four digits, more past 9999 (`0044`, `2024`, `21016`).
fn push_year(out: &mut Vec<u8>, year: u32) {
    if year <= 9999 {
        push_digits(out, year, 4);
    } else {
        out.extend_from_slice(year.to_string().as_bytes());
    }
}

/// Appends `hh:mm:ss` and, when not zero, `.micros` (six digits).
fn push_time(out: &mut Vec<u8>, h: u32, m: u32, s: u32, micros: u32) {
    push_digits(out, h, 2);
    out.push(b':');
    push_digits(out, m, 2);
    out.push(b':');
    push_digits(out, s, 2);
    if micros != 0 {
        out.push(b'.');
        push_digits(out, micros, 6);
    }
}

/// Appends the last `width` decimal digits of `value`, zero-padded.
fn push_digits(out: &mut Vec<u8>, mut value: u32, width: usize) {
    let start = out.len();
    out.resize(start + width, b'0');
    for slot in out[start..].iter_mut().rev() {
        *slot = b'0' + (value % 10) as u8;
        value /= 10;
    }
}

/// Converts days since 1970-01-01 to a proleptic Gregorian (year, month, day).
pub(crate) fn civil_from_days(days: i64) -> (i64, u32, u32) {
    // Howard Hinnant's algorithm: exact for the whole i64 day range we can meet.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// Lower-case hex of bytes, the JSON form of binary values.
pub fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    out
}

/// The normalized JSON form used by `tidemark inspect` and the change-event envelope:
/// numbers that fit JSON exactly stay numbers; exact decimals, 64-bit integers beyond 2^53,
/// binary, and temporal values become strings in a fixed, documented format. JSON documents are
/// embedded verbatim, so their numbers keep every digit: write with serde_json's own writer
/// (`to_writer`, `to_string`), not through `serde_json::to_value`, which reads them as f64.
impl Serialize for Value {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        const MAX_SAFE: u64 = 1 << 53;
        match self {
            Value::Null | Value::Unchanged => s.serialize_none(),
            Value::Bool(b) => s.serialize_bool(*b),
            Value::Int(i) if i.unsigned_abs() <= MAX_SAFE => s.serialize_i64(*i),
            Value::Int(i) => s.collect_str(i),
            Value::UInt(u) if *u <= MAX_SAFE => s.serialize_u64(*u),
            Value::UInt(u) => s.collect_str(u),
            Value::Float(f) if f.is_finite() => s.serialize_f32(*f),
            Value::Double(f) if f.is_finite() => s.serialize_f64(*f),
            Value::Float(f) => s.collect_str(f),
            Value::Double(f) => s.collect_str(f),
            Value::Decimal(d) => s.serialize_str(d),
            Value::Text(t) => s.serialize_str(t),
            Value::Enum(t) => s.serialize_str(t),
            Value::Bytes(b) => s.serialize_str(&to_hex(b)),
            Value::Date(d) => s.collect_str(d),
            Value::DateTime(dt) => s.collect_str(dt),
            Value::Timestamp(us) => s.serialize_str(&format_timestamp_micros(*us)),
            Value::Time(us) => s.serialize_str(&format_time_micros(*us)),
            Value::Year(y) => s.serialize_u16(*y),
            Value::Set(labels) => s.serialize_str(&labels.join(",")),
            Value::Bit { bits, width } => {
                s.serialize_str(&format!("{:0w$b}", bits, w = usize::from(*width)))
            }
            // Embedded as written: reading it into a `serde_json::Value` would turn every
            // number into an f64, losing a decimal's scale (`9.00`) and digits past 17.
            Value::Json(j) => match serde_json::from_str::<&RawValue>(j) {
                Ok(raw) => raw.serialize(s),
                Err(_) => s.serialize_str(j),
            },
            Value::Geometry { srid, wkb } => {
                s.serialize_str(&format!("SRID={srid};{}", to_hex(wkb)))
            }
            Value::Interval {
                months,
                days,
                micros,
            } => s.serialize_str(&format_interval(*months, *days, *micros)),
            Value::Infinity { negative: false } => s.serialize_str("infinity"),
            Value::Infinity { negative: true } => s.serialize_str("-infinity"),
            Value::Vector(items) => s.collect_seq(items.iter().map(|f| Value::Float(*f))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_formats_negative_and_over_a_day() {
        assert_eq!(
            format_time_micros(-(838 * 3600 + 59 * 60 + 59) * 1_000_000),
            "-838:59:59"
        );
        assert_eq!(
            format_time_micros(25 * 3_600_000_000 + 1),
            "25:00:00.000001"
        );
        assert_eq!(format_time_micros(0), "00:00:00");
    }

    #[test]
    fn timestamps_format_as_utc() {
        assert_eq!(format_timestamp_micros(0), "1970-01-01T00:00:00Z");
        assert_eq!(
            format_timestamp_micros(1_650_493_084_000_000),
            "2022-04-20T22:18:04Z"
        );
        assert_eq!(format_timestamp_micros(-1), "1969-12-31T23:59:59.999999Z");
        // 44 BC and 21016 AD, as Postgres prints (and reads) them.
        assert_eq!(
            format_timestamp_micros(-63_517_780_800_000_000),
            "0044-03-15T12:00:00Z BC"
        );
        assert_eq!(
            format_timestamp_micros(601_060_312_290_123_456),
            "21016-11-04T13:51:30.123456Z"
        );
        let bc = Date {
            year: -44,
            month: 3,
            day: 15,
        };
        assert_eq!(bc.to_string(), "0044-03-15 BC");
        let late = DateTime {
            date: Date {
                year: 21016,
                month: 11,
                day: 4,
            },
            hour: 13,
            minute: 51,
            second: 30,
            micros: 123_456,
        };
        assert_eq!(late.to_string(), "21016-11-04 13:51:30.123456");
        let noon_bc = DateTime {
            date: bc,
            hour: 12,
            minute: 0,
            second: 0,
            micros: 0,
        };
        assert_eq!(noon_bc.to_string(), "0044-03-15 12:00:00 BC");
        assert_eq!(
            format_timestamp_micros(2_147_483_647_999_999),
            "2038-01-19T03:14:07.999999Z"
        );
    }

    #[test]
    fn datetime_text_matches_its_display() {
        for (year, micros) in [(1, 0), (2024, 6), (9999, 999_999)] {
            let dt = DateTime {
                date: Date {
                    year,
                    month: 2,
                    day: 29,
                },
                hour: 23,
                minute: 5,
                second: 9,
                micros,
            };
            let mut out = Vec::new();
            dt.write_text(&mut out);
            assert_eq!(String::from_utf8(out).unwrap(), dt.to_string());
        }
    }

    #[test]
    fn large_integers_serialize_as_strings() {
        let v = serde_json::to_string(&Value::UInt(u64::MAX)).unwrap();
        assert_eq!(v, "\"18446744073709551615\"");
        assert_eq!(serde_json::to_string(&Value::Int(-5)).unwrap(), "-5");
    }

    #[test]
    fn intervals_format_as_postgres_prints_them() {
        assert_eq!(format_interval(0, 0, 0), "00:00:00");
        assert_eq!(
            format_interval(-14, 3, -14_706_000_007),
            "-1 years -2 mons +3 days -04:05:06.000007"
        );
        assert_eq!(format_interval(1, -1, 0), "1 mon -1 days");
        assert_eq!(format_interval(14, 0, 0), "1 year 2 mons");
        assert_eq!(format_interval(0, 0, -1), "-00:00:00.000001");
        assert_eq!(format_interval(0, -1, 7_200_000_000), "-1 days +02:00:00");
        assert_eq!(format_interval(0, 0, 1_500_000), "00:00:01.5");
        assert_eq!(
            format_interval(i32::MIN, i32::MIN, i64::MIN),
            "-178956970 years -8 mons -2147483648 days -2562047788:00:54.775808"
        );
        let v = Value::Infinity { negative: true };
        assert_eq!(serde_json::to_string(&v).unwrap(), "\"-infinity\"");
    }

    #[test]
    fn json_documents_are_embedded_with_their_numbers_as_written() {
        let forty = "123456789012345678901234567890.1234567890";
        let doc = format!(r#"{{"e":9.00,"d":[{forty},-0.10,1e400]}}"#);
        let printed = serde_json::to_string(&vec![Value::Json(doc.clone())]).unwrap();
        assert_eq!(printed, format!("[{doc}]"));
        // Not JSON (never from a decoder): kept as a string rather than lost.
        let v = Value::Json("{oops".into());
        assert_eq!(serde_json::to_string(&v).unwrap(), r#""{oops""#);
    }

    #[test]
    fn vectors_serialize_as_arrays_of_shortest_round_trip_floats() {
        let v = Value::Vector(vec![1.1, -1.01, 42.0, f32::MIN_POSITIVE, f32::NAN]);
        assert_eq!(
            serde_json::to_string(&v).unwrap(),
            r#"[1.1,-1.01,42.0,1.1754944e-38,"NaN"]"#
        );
    }

    #[test]
    fn bits_keep_their_width() {
        let v = Value::Bit { bits: 32, width: 8 };
        assert_eq!(serde_json::to_string(&v).unwrap(), "\"00100000\"");
    }
}
