//! Pure decoders of MySQL/MariaDB row-image values: bytes in, exact [`Value`]s out.
//!
//! Guarantees: no I/O, no allocation beyond the value itself, and no panic on any input. Every
//! short or malformed buffer is an error (a `String` reason; the caller adds the column), and
//! every value that decodes is exactly what the server stored: DECIMAL digits are copied, never
//! rounded; temporal parts are range-checked instead of being normalized into another date.

use std::sync::Arc;

use crate::event::{Date, DateTime, Value};

use super::charset::Charset;
use super::jsonb;

/// The reason a value cannot be decoded; the layout adds the column name.
pub type Reason = String;

/// Bytes used by `n` leftover decimal digits (MySQL `dig2bytes`).
const DIG2BYTES: [usize; 10] = [0, 1, 1, 2, 2, 3, 3, 4, 4, 4];

/// Digits per 4-byte decimal group.
const DIGITS_PER_GROUP: u8 = 9;

/// Powers of ten up to 10^9, for range checks of decimal groups.
const POW10: [u32; 10] = [
    1,
    10,
    100,
    1_000,
    10_000,
    100_000,
    1_000_000,
    10_000_000,
    100_000_000,
    1_000_000_000,
];

/// Takes `n` bytes from the front of `buf`, or explains how short it is.
#[inline]
pub(crate) fn take<'a>(buf: &mut &'a [u8], n: usize) -> Result<&'a [u8], Reason> {
    match buf.split_at_checked(n) {
        Some((head, tail)) => {
            *buf = tail;
            Ok(head)
        }
        None => Err(truncated(n, buf.len())),
    }
}

/// The error for a buffer shorter than a value needs.
#[cold]
fn truncated(need: usize, have: usize) -> Reason {
    format!("row image truncated: value needs {need} bytes, {have} left")
}

/// Reads a little-endian unsigned integer of 1..=8 bytes.
#[inline]
fn le_uint(bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .rev()
        .fold(0u64, |acc, &b| (acc << 8) | u64::from(b))
}

/// Reads a big-endian unsigned integer of 1..=8 bytes.
#[inline]
fn be_uint(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b))
}

/// Sign-extends the low `bits` of `v`.
#[inline]
fn sign_extend(v: u64, bits: u32) -> i64 {
    let shift = 64 - bits;
    ((v << shift) as i64) >> shift
}

/// Reads a length prefix of `len_bytes` (1..=4) little-endian bytes.
#[inline]
fn read_len(buf: &mut &[u8], len_bytes: u8) -> Result<usize, Reason> {
    let raw = take(buf, usize::from(len_bytes))?;
    usize::try_from(le_uint(raw)).map_err(|_| "length does not fit in memory".to_owned())
}

/// Takes a value of `len_bytes` length prefix (1..=4) and that many bytes.
#[inline]
pub(crate) fn take_prefixed<'a>(buf: &mut &'a [u8], len_bytes: u8) -> Result<&'a [u8], Reason> {
    let len = read_len(buf, len_bytes)?;
    take(buf, len)
}

/// Reads MySQL's packed integer (`net_field_length`): one byte below 251, else 252/253/254
/// followed by 2, 3 or 8 little-endian bytes. 251 (SQL NULL) and 255 are not integers.
pub(crate) fn read_packed_int(buf: &mut &[u8]) -> Result<u64, Reason> {
    let first = take(buf, 1)?[0];
    let n = match first {
        0..=250 => return Ok(u64::from(first)),
        252 => 2,
        253 => 3,
        254 => 8,
        other => return Err(format!("{other:#x} does not start a packed integer")),
    };
    Ok(le_uint(take(buf, n)?))
}

/// A MySQL binary JSON document as a [`Value::Json`].
pub(crate) fn json_value(doc: &[u8]) -> Result<Value, Reason> {
    Ok(Value::Json(
        jsonb::to_json_text(doc).map_err(|e| e.to_string())?,
    ))
}

/// Precomputed shape of a `DECIMAL(precision, scale)` in MySQL's binary format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecimalPlan {
    /// Declared total digits.
    pub precision: u8,
    /// Declared fraction digits.
    pub scale: u8,
    int_groups: u8,
    int_rest: u8,
    frac_groups: u8,
    frac_rest: u8,
    size: u8,
}

impl DecimalPlan {
    /// The plan for `DECIMAL(precision, scale)`; MySQL allows precision 1..=65, scale 0..=30.
    pub fn new(precision: u8, scale: u8) -> Result<DecimalPlan, Reason> {
        if precision == 0 || precision > 65 || scale > 30 || scale > precision {
            return Err(format!("invalid DECIMAL({precision},{scale}) metadata"));
        }
        let intg = precision - scale;
        let (int_groups, int_rest) = (intg / DIGITS_PER_GROUP, intg % DIGITS_PER_GROUP);
        let (frac_groups, frac_rest) = (scale / DIGITS_PER_GROUP, scale % DIGITS_PER_GROUP);
        let size = usize::from(int_groups) * 4
            + DIG2BYTES[usize::from(int_rest)]
            + usize::from(frac_groups) * 4
            + DIG2BYTES[usize::from(frac_rest)];
        Ok(DecimalPlan {
            precision,
            scale,
            int_groups,
            int_rest,
            frac_groups,
            frac_rest,
            size: size as u8,
        })
    }

    /// Stored size in bytes.
    pub fn size(&self) -> usize {
        usize::from(self.size)
    }

    /// Decodes the binary value at the front of `buf` to canonical text with exactly `scale`
    /// fraction digits (`-0.50`); negative zero prints as zero.
    pub fn decode(&self, buf: &mut &[u8]) -> Result<String, Reason> {
        let raw = take(buf, self.size())?;
        let mut bytes = [0u8; 32];
        let bytes = &mut bytes[..raw.len()];
        // The sign is the top bit of the first byte (set = positive); negative values are
        // stored bitwise inverted so that the bytes sort like the numbers.
        let negative = raw.first().is_some_and(|b| b & 0x80 == 0);
        let mask = if negative { 0xFF } else { 0 };
        for (dst, src) in bytes.iter_mut().zip(raw) {
            *dst = src ^ mask;
        }
        if let Some(first) = bytes.first_mut() {
            *first ^= 0x80;
        }

        let mut out = String::with_capacity(usize::from(self.precision) + 3);
        if negative {
            out.push('-');
        }
        let mut pos = 0;
        let group = |digits: u8, pos: &mut usize| -> Result<u32, Reason> {
            let n = if digits == DIGITS_PER_GROUP {
                4
            } else {
                DIG2BYTES[usize::from(digits)]
            };
            let v = be_uint(&bytes[*pos..*pos + n]) as u32;
            *pos += n;
            if v >= POW10[usize::from(digits)] {
                return Err(format!(
                    "corrupt DECIMAL: group {v} exceeds {digits} digits"
                ));
            }
            Ok(v)
        };
        let mut all_zero = true;
        let mut started = false;
        if self.int_rest > 0 {
            let v = group(self.int_rest, &mut pos)?;
            if v != 0 {
                push_u32(&mut out, v);
                started = true;
                all_zero = false;
            }
        }
        for _ in 0..self.int_groups {
            let v = group(DIGITS_PER_GROUP, &mut pos)?;
            if started {
                push_padded(&mut out, v, 9);
            } else if v != 0 {
                push_u32(&mut out, v);
                started = true;
            }
            all_zero &= v == 0;
        }
        if !started {
            out.push('0');
        }
        if self.scale > 0 {
            out.push('.');
            for _ in 0..self.frac_groups {
                let v = group(DIGITS_PER_GROUP, &mut pos)?;
                push_padded(&mut out, v, 9);
                all_zero &= v == 0;
            }
            if self.frac_rest > 0 {
                let v = group(self.frac_rest, &mut pos)?;
                push_padded(&mut out, v, usize::from(self.frac_rest));
                all_zero &= v == 0;
            }
        }
        if negative && all_zero {
            out.remove(0);
        }
        Ok(out)
    }
}

/// Appends the decimal digits of `v`.
#[inline]
fn push_u32(out: &mut String, v: u32) {
    let mut digits = [0u8; 10];
    let mut i = digits.len();
    let mut v = v;
    loop {
        i -= 1;
        digits[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    out.extend(digits[i..].iter().map(|&d| char::from(d)));
}

/// Appends `v` left-padded with zeros to `width` digits (`width` <= 10).
#[inline]
fn push_padded(out: &mut String, v: u32, width: usize) {
    let mut digits = [b'0'; 10];
    let mut v = v;
    for d in digits[..width].iter_mut().rev() {
        *d = b'0' + (v % 10) as u8;
        v /= 10;
    }
    out.extend(digits[..width].iter().map(|&d| char::from(d)));
}

/// Bytes of the fractional part of TIME2/DATETIME2/TIMESTAMP2 for `fsp` digits.
pub fn frac_bytes(fsp: u8) -> usize {
    usize::from(fsp).div_ceil(2)
}

/// Reads the signed fraction of DATETIME2/TIMESTAMP2 and returns microseconds.
fn read_frac_micros(buf: &mut &[u8], fsp: u8) -> Result<i64, Reason> {
    let n = frac_bytes(fsp);
    if n == 0 {
        return Ok(0);
    }
    let raw = be_uint(take(buf, n)?);
    let v = sign_extend(raw, 8 * n as u32);
    // 1 byte holds hundredths, 2 bytes ten-thousandths, 3 bytes microseconds.
    Ok(v * [10_000, 100, 1][n - 1])
}

/// Splits MySQL's packed `YYYY*13+MM, DD, hh, mm, ss` datetime integer part into a DateTime.
fn datetime_from_ymdhms(ymdhms: u64, micros: i64) -> Result<DateTime, Reason> {
    let ymd = ymdhms >> 17;
    let ym = ymd >> 5;
    let hms = ymdhms & 0x1_FFFF;
    let dt = DateTime {
        date: Date {
            year: i32::try_from(ym / 13).unwrap_or(i32::MAX),
            month: (ym % 13) as u8,
            day: (ymd & 31) as u8,
        },
        hour: (hms >> 12) as u8,
        minute: ((hms >> 6) & 63) as u8,
        second: (hms & 63) as u8,
        micros: u32::try_from(micros).unwrap_or(u32::MAX),
    };
    check_datetime(dt)
}

/// Rejects parts no server can store (year > 9999, hour > 23, ...); zero parts are kept.
fn check_datetime(dt: DateTime) -> Result<DateTime, Reason> {
    let d = dt.date;
    if d.year > 9999
        || d.month > 12
        || d.day > 31
        || dt.hour > 23
        || dt.minute > 59
        || dt.second > 59
        || dt.micros > 999_999
    {
        return Err(format!(
            "corrupt DATETIME: {:04}-{:02}-{:02} {:02}:{:02}:{:02}.{:06} is out of range",
            d.year, d.month, d.day, dt.hour, dt.minute, dt.second, dt.micros
        ));
    }
    Ok(dt)
}

/// DATETIME2(fsp): 5 bytes big-endian (offset 0x80_0000_0000) then the fraction.
pub fn decode_datetime2(buf: &mut &[u8], fsp: u8) -> Result<DateTime, Reason> {
    let int = be_uint(take(buf, 5)?) as i64 - 0x80_0000_0000;
    let micros = read_frac_micros(buf, fsp)?;
    if int < 0 || micros < 0 {
        return Err("corrupt DATETIME2: negative value".to_owned());
    }
    datetime_from_ymdhms(int as u64, micros)
}

/// TIMESTAMP2(fsp): 4 bytes big-endian seconds then the fraction; microseconds since the
/// epoch (0 is MySQL's zero timestamp).
pub fn decode_timestamp2(buf: &mut &[u8], fsp: u8) -> Result<i64, Reason> {
    let secs = be_uint(take(buf, 4)?) as i64;
    let micros = read_frac_micros(buf, fsp)?;
    if !(0..1_000_000).contains(&micros) {
        return Err(format!("corrupt TIMESTAMP2: fraction {micros}"));
    }
    Ok(secs * 1_000_000 + micros)
}

/// TIME2(fsp): signed microseconds, following MySQL's `my_time_packed_from_binary`
/// (including its borrow rule for negative values with a 1- or 2-byte fraction).
pub fn decode_time2(buf: &mut &[u8], fsp: u8) -> Result<i64, Reason> {
    const INT_OFS: i64 = 0x80_0000;
    let packed = match frac_bytes(fsp) {
        0 => (be_uint(take(buf, 3)?) as i64 - INT_OFS) << 24,
        1 => {
            let mut int = be_uint(take(buf, 3)?) as i64 - INT_OFS;
            let mut frac = i64::from(take(buf, 1)?[0]);
            if int < 0 && frac > 0 {
                int += 1;
                frac -= 0x100;
            }
            (int << 24) + frac * 10_000
        }
        2 => {
            let mut int = be_uint(take(buf, 3)?) as i64 - INT_OFS;
            let mut frac = be_uint(take(buf, 2)?) as i64;
            if int < 0 && frac > 0 {
                int += 1;
                frac -= 0x1_0000;
            }
            (int << 24) + frac * 100
        }
        _ => be_uint(take(buf, 6)?) as i64 - 0x8000_0000_0000,
    };
    time_micros_from_packed(packed)
}

/// Signed microseconds of MySQL's packed TIME (`hh<<12 | mm<<6 | ss` << 24, plus micros).
pub fn time_micros_from_packed(packed: i64) -> Result<i64, Reason> {
    let abs = packed.unsigned_abs();
    let hms = abs >> 24;
    let frac = abs & 0xFF_FFFF;
    let (hour, minute, second) = ((hms >> 12) & 0x3FF, (hms >> 6) & 63, hms & 63);
    if minute > 59 || second > 59 || frac > 999_999 {
        return Err(format!(
            "corrupt TIME: {hour}:{minute:02}:{second:02}.{frac:06} is out of range"
        ));
    }
    let micros = ((hour * 3600 + minute * 60 + second) * 1_000_000 + frac) as i64;
    Ok(if packed < 0 { -micros } else { micros })
}

/// DateTime of MySQL's packed DATETIME integer (as in JSON opaque values).
pub fn datetime_from_packed(packed: i64) -> Result<DateTime, Reason> {
    let abs = packed.unsigned_abs();
    datetime_from_ymdhms(abs >> 24, (abs & 0xFF_FFFF) as i64)
}

/// DATE: 3 bytes little-endian, `day | month << 5 | year << 9`.
pub fn decode_date(buf: &mut &[u8]) -> Result<Date, Reason> {
    let v = le_uint(take(buf, 3)?);
    let date = Date {
        year: (v >> 9) as i32,
        month: ((v >> 5) & 15) as u8,
        day: (v & 31) as u8,
    };
    if date.year > 9999 || date.month > 12 {
        return Err(format!("corrupt DATE: {date} is out of range"));
    }
    Ok(date)
}

/// Old (pre-5.6) DATETIME: 8 bytes little-endian, the decimal number YYYYMMDDhhmmss.
pub fn decode_old_datetime(buf: &mut &[u8]) -> Result<DateTime, Reason> {
    let v = le_uint(take(buf, 8)?);
    let (d, t) = (v / 1_000_000, v % 1_000_000);
    check_datetime(DateTime {
        date: Date {
            year: i32::try_from(d / 10_000).unwrap_or(i32::MAX),
            month: ((d / 100) % 100) as u8,
            day: (d % 100) as u8,
        },
        hour: (t / 10_000) as u8,
        minute: ((t / 100) % 100) as u8,
        second: (t % 100) as u8,
        micros: 0,
    })
}

/// Old (pre-5.6) TIME: 3 bytes little-endian signed, the decimal number ±hhmmss.
pub fn decode_old_time(buf: &mut &[u8]) -> Result<i64, Reason> {
    let v = sign_extend(le_uint(take(buf, 3)?), 24);
    let abs = v.unsigned_abs();
    let (h, m, s) = (abs / 10_000, (abs / 100) % 100, abs % 100);
    if m > 59 || s > 59 {
        return Err(format!("corrupt TIME: {v} is out of range"));
    }
    let micros = ((h * 3600 + m * 60 + s) * 1_000_000) as i64;
    Ok(if v < 0 { -micros } else { micros })
}

/// How to decode one column's value, chosen once per table map.
#[derive(Debug, Clone)]
pub(crate) enum Decoder {
    /// Little-endian integer of `bytes` (1, 2, 3, 4, 8).
    Int {
        /// Stored width.
        bytes: u8,
        /// UNSIGNED column.
        unsigned: bool,
    },
    /// IEEE single.
    Float,
    /// IEEE double.
    Double,
    /// NEWDECIMAL.
    Decimal(DecimalPlan),
    /// BIT(width) in `(width + 7) / 8` big-endian bytes.
    Bit {
        /// Declared width.
        width: u8,
    },
    /// DATE / NEWDATE.
    Date,
    /// Pre-5.6 TIME.
    OldTime,
    /// Pre-5.6 DATETIME.
    OldDateTime,
    /// Pre-5.6 TIMESTAMP: 4 bytes little-endian seconds.
    OldTimestamp,
    /// TIME2(fsp).
    Time2 {
        /// Fraction digits.
        fsp: u8,
    },
    /// DATETIME2(fsp).
    DateTime2 {
        /// Fraction digits.
        fsp: u8,
    },
    /// TIMESTAMP2(fsp).
    Timestamp2 {
        /// Fraction digits.
        fsp: u8,
    },
    /// YEAR: one byte, 0 or years since 1900.
    Year,
    /// Length-prefixed character data in `charset`.
    Text {
        /// Width of the length prefix.
        len_bytes: u8,
        /// Stored charset.
        charset: Charset,
    },
    /// Length-prefixed binary data; BINARY(n) is right-padded with zero bytes to `pad_to`.
    Bytes {
        /// Width of the length prefix.
        len_bytes: u8,
        /// Declared BINARY length, 0 for VARBINARY/BLOB.
        pad_to: u32,
    },
    /// ENUM index of `bytes` (1 or 2).
    Enum {
        /// Stored width.
        bytes: u8,
        /// Labels in definition order.
        labels: Arc<[String]>,
    },
    /// SET bitmask of `bytes` (1..=8).
    Set {
        /// Stored width.
        bytes: u8,
        /// Labels in definition order.
        labels: Arc<[String]>,
    },
    /// MySQL binary JSON with a length prefix.
    Json {
        /// Width of the length prefix.
        len_bytes: u8,
    },
    /// GEOMETRY: length prefix, 4-byte little-endian SRID, WKB.
    Geometry {
        /// Width of the length prefix.
        len_bytes: u8,
    },
    /// VECTOR: length prefix, then little-endian 32-bit floats.
    Vector {
        /// Width of the length prefix.
        len_bytes: u8,
    },
}

impl Decoder {
    /// Decodes one non-NULL value from the front of `buf`, advancing it.
    #[inline]
    pub(crate) fn decode(&self, buf: &mut &[u8]) -> Result<Value, Reason> {
        Ok(match self {
            Decoder::Int { bytes, unsigned } => {
                let raw = le_uint(take(buf, usize::from(*bytes))?);
                if *unsigned {
                    Value::UInt(raw)
                } else {
                    Value::Int(sign_extend(raw, u32::from(*bytes) * 8))
                }
            }
            Decoder::Float => {
                let raw = take(buf, 4)?;
                Value::Float(f32::from_le_bytes([raw[0], raw[1], raw[2], raw[3]]))
            }
            Decoder::Double => {
                let raw = take(buf, 8)?;
                let mut b = [0u8; 8];
                b.copy_from_slice(raw);
                Value::Double(f64::from_le_bytes(b))
            }
            Decoder::Decimal(plan) => Value::Decimal(plan.decode(buf)?),
            Decoder::Bit { width } => {
                bit_value(be_uint(take(buf, usize::from(*width).div_ceil(8))?), *width)?
            }
            Decoder::Date => Value::Date(decode_date(buf)?),
            Decoder::OldTime => Value::Time(decode_old_time(buf)?),
            Decoder::OldDateTime => Value::DateTime(decode_old_datetime(buf)?),
            Decoder::OldTimestamp => Value::Timestamp(le_uint(take(buf, 4)?) as i64 * 1_000_000),
            Decoder::Time2 { fsp } => Value::Time(decode_time2(buf, *fsp)?),
            Decoder::DateTime2 { fsp } => Value::DateTime(decode_datetime2(buf, *fsp)?),
            Decoder::Timestamp2 { fsp } => Value::Timestamp(decode_timestamp2(buf, *fsp)?),
            Decoder::Year => match take(buf, 1)?[0] {
                0 => Value::Year(0),
                y => Value::Year(1900 + u16::from(y)),
            },
            Decoder::Text { len_bytes, charset } => {
                let len = read_len(buf, *len_bytes)?;
                let raw = take(buf, len)?;
                Value::Text(charset.decode(raw).map_err(|e| e.to_string())?)
            }
            Decoder::Bytes { len_bytes, pad_to } => {
                let len = read_len(buf, *len_bytes)?;
                let raw = take(buf, len)?;
                let mut bytes = Vec::with_capacity(raw.len().max(*pad_to as usize));
                bytes.extend_from_slice(raw);
                // The server strips trailing zero bytes of BINARY(n) from the row image.
                bytes.resize(raw.len().max(*pad_to as usize), 0);
                Value::Bytes(bytes)
            }
            Decoder::Enum { bytes, labels } => {
                enum_value(labels, le_uint(take(buf, usize::from(*bytes))?))?
            }
            Decoder::Set { bytes, labels } => {
                set_value(labels, le_uint(take(buf, usize::from(*bytes))?))?
            }
            Decoder::Json { len_bytes } => json_value(take_prefixed(buf, *len_bytes)?)?,
            Decoder::Geometry { len_bytes } => geometry_value(take_prefixed(buf, *len_bytes)?)?,
            Decoder::Vector { len_bytes } => vector_value(take_prefixed(buf, *len_bytes)?)?,
        })
    }
}

// The value rules below are shared with `super::copy`, which reads the same stored forms over
// SQL: one rule per type keeps a copied value equal to a streamed one.

/// A `BIT(width)` value of its stored bits; bits beyond the width are corrupt.
#[inline]
pub(crate) fn bit_value(bits: u64, width: u8) -> Result<Value, Reason> {
    if width < 64 && bits >> width != 0 {
        return Err(format!("corrupt BIT({width}): value {bits:#x} is too wide"));
    }
    Ok(Value::Bit { bits, width })
}

/// The ENUM value of a stored index: its label, or the empty string for MySQL's invalid-value
/// index 0.
#[inline]
pub(crate) fn enum_value(labels: &[String], index: u64) -> Result<Value, Reason> {
    if index == 0 {
        return Ok(Value::Enum(String::new()));
    }
    usize::try_from(index - 1)
        .ok()
        .and_then(|i| labels.get(i))
        .map(|label| Value::Enum(label.clone()))
        .ok_or_else(|| {
            format!(
                "ENUM index {index} is out of range ({} labels)",
                labels.len()
            )
        })
}

/// The SET value of a stored bitmask: the labels of its bits, in definition order.
#[inline]
pub(crate) fn set_value(labels: &[String], mask: u64) -> Result<Value, Reason> {
    if labels.len() < 64 && mask >> labels.len() != 0 {
        return Err(format!(
            "SET bitmask {mask:#x} has bits beyond its {} labels",
            labels.len()
        ));
    }
    let mut set = Vec::with_capacity(mask.count_ones() as usize);
    for (i, label) in labels.iter().enumerate() {
        if mask >> i & 1 == 1 {
            set.push(label.clone());
        }
    }
    Ok(Value::Set(set))
}

/// A GEOMETRY value from its stored form: 4-byte little-endian SRID, then WKB.
#[inline]
pub(crate) fn geometry_value(raw: &[u8]) -> Result<Value, Reason> {
    let Some((srid, wkb)) = raw.split_at_checked(4) else {
        return Err(format!("GEOMETRY value of {} bytes has no SRID", raw.len()));
    };
    Ok(Value::Geometry {
        srid: le_uint(srid) as u32,
        wkb: wkb.to_vec(),
    })
}

/// A VECTOR value from its stored form: little-endian 32-bit floats.
#[inline]
pub(crate) fn vector_value(raw: &[u8]) -> Result<Value, Reason> {
    let (floats, rest) = raw.as_chunks::<4>();
    if !rest.is_empty() {
        return Err(format!(
            "VECTOR value of {} bytes is not a whole number of 4-byte floats",
            raw.len()
        ));
    }
    Ok(Value::Vector(
        floats.iter().map(|b| f32::from_le_bytes(*b)).collect(),
    ))
}

/// MySQL's `decimal2bin` for test vectors (here and in the binary JSON tests): digits as text,
/// with the declared shape.
#[cfg(test)]
pub(crate) fn encode_decimal(text: &str, precision: u8, scale: u8) -> Vec<u8> {
    let negative = text.starts_with('-');
    let text = text.trim_start_matches('-');
    let (int, frac) = text.split_once('.').unwrap_or((text, ""));
    let intg = usize::from(precision - scale);
    let int = int.trim_start_matches('0');
    let int = format!("{int:0>intg$}");
    let frac = format!("{frac:0<width$}", width = usize::from(scale));
    let mut out = Vec::new();
    let mut push = |digits: &str| {
        let n = if digits.len() == 9 {
            4
        } else {
            DIG2BYTES[digits.len()]
        };
        let v: u32 = digits.parse().unwrap();
        out.extend_from_slice(&v.to_be_bytes()[4 - n..]);
    };
    let lead = int.len() % 9;
    if lead > 0 {
        push(&int[..lead]);
    }
    for g in int.as_bytes()[lead..].chunks(9) {
        push(std::str::from_utf8(g).unwrap());
    }
    for g in frac.as_bytes().chunks(9) {
        push(std::str::from_utf8(g).unwrap());
    }
    out[0] ^= 0x80;
    if negative {
        for b in &mut out {
            *b = !*b;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dec(text: &str, precision: u8, scale: u8) -> String {
        let plan = DecimalPlan::new(precision, scale).unwrap();
        let bytes = encode_decimal(text, precision, scale);
        assert_eq!(bytes.len(), plan.size(), "size of ({precision},{scale})");
        let mut buf = &bytes[..];
        let out = plan.decode(&mut buf).unwrap();
        assert!(buf.is_empty());
        out
    }

    #[test]
    fn decimals_decode_exactly_with_declared_scale() {
        assert_eq!(dec("-0.50", 10, 2), "-0.50");
        assert_eq!(dec("0.5", 10, 2), "0.50");
        assert_eq!(dec("1234567890.12", 12, 2), "1234567890.12");
        assert_eq!(dec("-1234567890.12", 12, 2), "-1234567890.12");
        assert_eq!(dec("7", 1, 0), "7");
        assert_eq!(dec("0", 5, 0), "0");
        assert_eq!(dec("0.000000001", 10, 9), "0.000000001");
        assert_eq!(dec("-999999999999999999", 18, 0), "-999999999999999999");
        let big = "12345678901234567890123456789012345.123456789012345678901234567890";
        assert_eq!(dec(big, 65, 30), big);
        assert_eq!(dec(&format!("-{big}"), 65, 30), format!("-{big}"));
        let nines = "9".repeat(65);
        assert_eq!(dec(&nines, 65, 0), nines);
        assert_eq!(
            dec("0.123456789012345678901234567890", 30, 30),
            "0.123456789012345678901234567890"
        );
    }

    #[test]
    fn decimal_sizes_follow_dig2bytes() {
        assert_eq!(DecimalPlan::new(10, 2).unwrap().size(), 5);
        assert_eq!(DecimalPlan::new(65, 30).unwrap().size(), 30);
        assert_eq!(DecimalPlan::new(65, 0).unwrap().size(), 29);
        assert_eq!(DecimalPlan::new(1, 0).unwrap().size(), 1);
        assert!(DecimalPlan::new(0, 0).is_err());
        assert!(DecimalPlan::new(66, 0).is_err());
        assert!(DecimalPlan::new(10, 31).is_err());
        assert!(DecimalPlan::new(5, 6).is_err());
    }

    #[test]
    fn negative_zero_decimal_prints_as_zero() {
        let plan = DecimalPlan::new(5, 2).unwrap();
        // -0.00 as a server could store it: the positive zero image inverted.
        let mut bytes = encode_decimal("0.00", 5, 2);
        for b in &mut bytes {
            *b = !*b;
        }
        assert_eq!(plan.decode(&mut &bytes[..]).unwrap(), "0.00");
    }

    #[test]
    fn corrupt_or_short_decimals_are_errors() {
        let plan = DecimalPlan::new(10, 2).unwrap();
        assert!(plan.decode(&mut &[0x80, 0, 0][..]).is_err());
        // A 9-digit group of 0xFFFFFFFF is not a valid group.
        let plan = DecimalPlan::new(9, 0).unwrap();
        assert!(plan.decode(&mut &[0xFF, 0xFF, 0xFF, 0xFF][..]).is_err());
    }

    /// MySQL's `my_time_packed_to_binary`, for test vectors.
    fn encode_time2(micros: i64, fsp: u8) -> Vec<u8> {
        let neg = micros < 0;
        let abs = micros.unsigned_abs() as i64;
        let secs = abs / 1_000_000;
        let hms = ((secs / 3600) << 12) | (((secs / 60) % 60) << 6) | (secs % 60);
        let mut packed = (hms << 24) + abs % 1_000_000;
        if neg {
            packed = -packed;
        }
        let int = packed >> 24; // floor, like MY_PACKED_TIME_GET_INT_PART
        let frac = packed % (1 << 24); // truncating, like MY_PACKED_TIME_GET_FRAC_PART
        let mut out = ((int + 0x80_0000) as u32).to_be_bytes()[1..].to_vec();
        match frac_bytes(fsp) {
            0 => {}
            1 => out.push((frac / 10_000) as i8 as u8),
            2 => out.extend_from_slice(&((frac / 100) as i16).to_be_bytes()),
            _ => {
                out = ((packed + 0x8000_0000_0000) as u64).to_be_bytes()[2..].to_vec();
            }
        }
        out
    }

    fn time2(micros: i64, fsp: u8) -> i64 {
        let bytes = encode_time2(micros, fsp);
        let mut buf = &bytes[..];
        let v = decode_time2(&mut buf, fsp).unwrap();
        assert!(buf.is_empty());
        v
    }

    #[test]
    fn time2_round_trips_negative_and_over_a_day() {
        let max = (838 * 3600 + 59 * 60 + 59) * 1_000_000;
        for fsp in 0..=6 {
            assert_eq!(time2(max, fsp), max);
            assert_eq!(time2(-max, fsp), -max);
            assert_eq!(time2(0, fsp), 0);
            assert_eq!(time2(25 * 3_600_000_000, fsp), 25 * 3_600_000_000);
        }
        assert_eq!(time2(-1_500_000, 1), -1_500_000);
        assert_eq!(time2(-1_500_000, 2), -1_500_000);
        assert_eq!(time2(-1_010_000, 2), -1_010_000);
        assert_eq!(time2(-1_000_100, 4), -1_000_100);
        assert_eq!(time2(-500_000, 1), -500_000);
        assert_eq!(time2(-1, 6), -1);
        assert_eq!(
            time2(-(3600 * 1_000_000 + 999_999), 6),
            -(3600 * 1_000_000 + 999_999)
        );
        assert_eq!(
            time2(12 * 3_600_000_000 + 340_000, 3),
            12 * 3_600_000_000 + 340_000
        );
    }

    #[test]
    fn time2_known_bytes() {
        // '-838:59:59' TIME(0) as MySQL stores it.
        assert_eq!(
            encode_time2(-(838 * 3600 + 59 * 60 + 59) * 1_000_000, 0),
            [0x4B, 0x91, 0x05]
        );
        assert_eq!(decode_time2(&mut &[0x80u8, 0x00, 0x00][..], 0).unwrap(), 0);
        assert!(decode_time2(&mut &[0x80u8, 0x00][..], 0).is_err());
        // Minute 63 cannot be stored by a server.
        assert!(decode_time2(&mut &[0x80u8, 0x0F, 0xC0][..], 0).is_err());
    }

    fn encode_datetime2(dt: DateTime, fsp: u8) -> Vec<u8> {
        let ym = dt.date.year as u64 * 13 + u64::from(dt.date.month);
        let ymd = (ym << 5) | u64::from(dt.date.day);
        let hms = (u64::from(dt.hour) << 12) | (u64::from(dt.minute) << 6) | u64::from(dt.second);
        let int = ((ymd << 17) | hms) + 0x80_0000_0000;
        let mut out = int.to_be_bytes()[3..].to_vec();
        let n = frac_bytes(fsp);
        if n > 0 {
            let v = dt.micros / [10_000, 100, 1][n - 1];
            out.extend_from_slice(&v.to_be_bytes()[4 - n..]);
        }
        out
    }

    fn dt(y: i32, mo: u8, d: u8, h: u8, mi: u8, s: u8, us: u32) -> DateTime {
        DateTime {
            date: Date {
                year: y,
                month: mo,
                day: d,
            },
            hour: h,
            minute: mi,
            second: s,
            micros: us,
        }
    }

    #[test]
    fn datetime2_decodes_all_precisions_and_zero_dates() {
        let cases = [
            (dt(2015, 1, 15, 23, 24, 25, 0), 0),
            (dt(9999, 12, 31, 23, 59, 59, 999_999), 6),
            (dt(1000, 1, 1, 0, 0, 0, 120_000), 2),
            (dt(2024, 2, 29, 12, 0, 0, 123_400), 4),
            (dt(0, 0, 0, 0, 0, 0, 0), 0),
            (dt(2024, 0, 10, 0, 0, 0, 0), 3),
        ];
        for (value, fsp) in cases {
            let bytes = encode_datetime2(value, fsp);
            assert_eq!(bytes.len(), 5 + frac_bytes(fsp));
            let mut buf = &bytes[..];
            assert_eq!(decode_datetime2(&mut buf, fsp).unwrap(), value);
            assert!(buf.is_empty());
        }
        assert!(decode_datetime2(&mut &[0x99u8, 0, 0, 0][..], 0).is_err());
        // Hour 25 fits the 5-bit field but no server stores it.
        let bad = encode_datetime2(dt(2015, 1, 1, 25, 0, 0, 0), 0);
        assert!(decode_datetime2(&mut &bad[..], 0).is_err());
    }

    #[test]
    fn timestamp2_is_micros_since_epoch() {
        let mut bytes = 1_650_493_084u32.to_be_bytes().to_vec();
        bytes.extend_from_slice(&[0x01, 0xE2, 0x40]); // 123456 us
        assert_eq!(
            decode_timestamp2(&mut &bytes[..], 6).unwrap(),
            1_650_493_084_123_456
        );
        assert_eq!(decode_timestamp2(&mut &[0u8, 0, 0, 0][..], 0).unwrap(), 0);
        assert_eq!(
            decode_timestamp2(&mut &[0x7F, 0xFF, 0xFF, 0xFF, 0x63][..], 2).unwrap(),
            2_147_483_647_990_000
        );
        assert!(decode_timestamp2(&mut &[0u8, 0, 0, 1, 0xFF][..], 1).is_err());
        assert!(decode_timestamp2(&mut &[0u8, 0, 0][..], 0).is_err());
    }

    #[test]
    fn dates_and_old_temporal_formats() {
        let v: u32 = (2024 << 9) | (2 << 5) | 29;
        assert_eq!(
            decode_date(&mut &v.to_le_bytes()[..3]).unwrap(),
            Date {
                year: 2024,
                month: 2,
                day: 29
            }
        );
        assert_eq!(
            decode_date(&mut &[0u8, 0, 0][..]).unwrap(),
            Date {
                year: 0,
                month: 0,
                day: 0
            }
        );
        let old = 20_150_115_232_425u64.to_le_bytes();
        assert_eq!(
            decode_old_datetime(&mut &old[..]).unwrap(),
            dt(2015, 1, 15, 23, 24, 25, 0)
        );
        let t = (-8_385_959i32).to_le_bytes();
        assert_eq!(
            decode_old_time(&mut &t[..3]).unwrap(),
            -(838 * 3600 + 59 * 60 + 59) * 1_000_000
        );
    }

    #[test]
    fn packed_json_temporals() {
        let hms: i64 = (23 << 12) | (24 << 6) | 25;
        assert_eq!(
            time_micros_from_packed(-(hms << 24)).unwrap(),
            -((23 * 3600 + 24 * 60 + 25) * 1_000_000)
        );
        let ymd: i64 = ((2015 * 13 + 1) << 5) | 15;
        let packed = ((ymd << 17) | hms) << 24;
        assert_eq!(
            datetime_from_packed(packed).unwrap(),
            dt(2015, 1, 15, 23, 24, 25, 0)
        );
    }

    fn one(decoder: Decoder, bytes: &[u8]) -> Result<Value, Reason> {
        let mut buf = bytes;
        let v = decoder.decode(&mut buf)?;
        assert!(buf.is_empty(), "{decoder:?} left {} bytes", buf.len());
        Ok(v)
    }

    #[test]
    fn integers_signed_and_unsigned_at_their_edges() {
        let int = |bytes, unsigned| Decoder::Int { bytes, unsigned };
        assert_eq!(one(int(1, false), &[0x80]).unwrap(), Value::Int(-128));
        assert_eq!(one(int(1, true), &[0xFF]).unwrap(), Value::UInt(255));
        assert_eq!(
            one(int(2, false), &[0x00, 0x80]).unwrap(),
            Value::Int(-32768)
        );
        assert_eq!(
            one(int(2, true), &[0xFF, 0xFF]).unwrap(),
            Value::UInt(65535)
        );
        assert_eq!(
            one(int(3, false), &[0x00, 0x00, 0x80]).unwrap(),
            Value::Int(-8_388_608)
        );
        assert_eq!(
            one(int(3, false), &[0xFF, 0xFF, 0x7F]).unwrap(),
            Value::Int(8_388_607)
        );
        assert_eq!(
            one(int(3, true), &[0xFF, 0xFF, 0xFF]).unwrap(),
            Value::UInt(16_777_215)
        );
        assert_eq!(
            one(int(4, false), &[0, 0, 0, 0x80]).unwrap(),
            Value::Int(-2_147_483_648)
        );
        assert_eq!(
            one(int(4, true), &3_230_202_323u32.to_le_bytes()).unwrap(),
            Value::UInt(3_230_202_323)
        );
        assert_eq!(
            one(int(8, false), &i64::MIN.to_le_bytes()).unwrap(),
            Value::Int(i64::MIN)
        );
        assert_eq!(
            one(int(8, true), &[0xFF; 8]).unwrap(),
            Value::UInt(u64::MAX)
        );
        assert!(one(int(8, true), &[0xFF; 7]).is_err());
    }

    #[test]
    fn floats_bits_years() {
        assert_eq!(
            one(Decoder::Float, &1.5f32.to_le_bytes()).unwrap(),
            Value::Float(1.5)
        );
        assert_eq!(
            one(Decoder::Double, &(-2.25f64).to_le_bytes()).unwrap(),
            Value::Double(-2.25)
        );
        assert_eq!(
            one(Decoder::Bit { width: 3 }, &[0b100]).unwrap(),
            Value::Bit { bits: 4, width: 3 }
        );
        assert_eq!(
            one(Decoder::Bit { width: 64 }, &[0xFF; 8]).unwrap(),
            Value::Bit {
                bits: u64::MAX,
                width: 64
            }
        );
        assert_eq!(
            one(Decoder::Bit { width: 10 }, &[0x02, 0x01]).unwrap(),
            Value::Bit {
                bits: 0x201,
                width: 10
            }
        );
        assert!(one(Decoder::Bit { width: 3 }, &[0b1000]).is_err());
        assert_eq!(one(Decoder::Year, &[0]).unwrap(), Value::Year(0));
        assert_eq!(one(Decoder::Year, &[1]).unwrap(), Value::Year(1901));
        assert_eq!(one(Decoder::Year, &[255]).unwrap(), Value::Year(2155));
    }

    #[test]
    fn strings_binary_padding_and_charsets() {
        let text = Decoder::Text {
            len_bytes: 1,
            charset: Charset::Utf8mb4,
        };
        assert_eq!(
            one(text.clone(), b"\x03abc").unwrap(),
            Value::Text("abc".into())
        );
        let err = one(text.clone(), b"\x02\xc3\x28").unwrap_err();
        assert!(err.contains("utf8mb4"), "{err}");
        assert!(one(text, b"\x05abc").is_err());
        let latin1 = Decoder::Text {
            len_bytes: 2,
            charset: Charset::Latin1,
        };
        assert_eq!(
            one(latin1, b"\x01\x00\xe9").unwrap(),
            Value::Text("é".into())
        );
        let binary = Decoder::Bytes {
            len_bytes: 1,
            pad_to: 4,
        };
        assert_eq!(
            one(binary, b"\x02\x00a").unwrap(),
            Value::Bytes(vec![0, b'a', 0, 0])
        );
        let blob = Decoder::Bytes {
            len_bytes: 4,
            pad_to: 0,
        };
        assert_eq!(
            one(blob, b"\x02\x00\x00\x00\x00\x05").unwrap(),
            Value::Bytes(vec![0, 5])
        );
    }

    #[test]
    fn enums_and_sets_use_labels() {
        let labels: Arc<[String]> = ["a", "b", "c", "d"].map(String::from).into();
        let e = Decoder::Enum {
            bytes: 1,
            labels: labels.clone(),
        };
        assert_eq!(one(e.clone(), &[0]).unwrap(), Value::Enum(String::new()));
        assert_eq!(one(e.clone(), &[2]).unwrap(), Value::Enum("b".into()));
        assert!(one(e, &[5]).is_err());
        let s = Decoder::Set { bytes: 1, labels };
        assert_eq!(
            one(s.clone(), &[0b1010]).unwrap(),
            Value::Set(vec!["b".into(), "d".into()])
        );
        assert_eq!(one(s.clone(), &[0]).unwrap(), Value::Set(vec![]));
        assert!(one(s, &[0b10000]).is_err());
    }

    #[test]
    fn geometry_splits_srid_and_wkb() {
        let g = Decoder::Geometry { len_bytes: 4 };
        let mut bytes = vec![9, 0, 0, 0, 0xE6, 0x10, 0, 0];
        bytes.extend_from_slice(&[1, 2, 3, 4, 5]);
        assert_eq!(
            one(g.clone(), &bytes).unwrap(),
            Value::Geometry {
                srid: 4326,
                wkb: vec![1, 2, 3, 4, 5]
            }
        );
        assert!(one(g, &[2, 0, 0, 0, 1, 2]).is_err());
    }

    #[test]
    fn vectors_are_little_endian_floats() {
        let v = Decoder::Vector { len_bytes: 4 };
        let floats = [1.1f32, -0.0, f32::MIN_POSITIVE, f32::MAX];
        let mut bytes = 16u32.to_le_bytes().to_vec();
        bytes.extend(floats.iter().flat_map(|f| f.to_le_bytes()));
        assert_eq!(
            one(v.clone(), &bytes).unwrap(),
            Value::Vector(floats.to_vec())
        );
        assert_eq!(
            one(v.clone(), &[0, 0, 0, 0]).unwrap(),
            Value::Vector(vec![])
        );
        let e = one(v.clone(), &[3, 0, 0, 0, 1, 2, 3]).unwrap_err();
        assert!(e.contains("4-byte floats"), "{e}");
        assert!(one(v, &[8, 0, 0, 0, 1, 2, 3, 4]).is_err(), "truncated");
    }

    #[test]
    fn packed_integers_follow_net_field_length() {
        let read = |bytes: &[u8]| {
            let mut buf = bytes;
            read_packed_int(&mut buf).map(|v| (v, buf.len()))
        };
        assert_eq!(read(&[0]).unwrap(), (0, 0));
        assert_eq!(read(&[250, 9]).unwrap(), (250, 1));
        assert_eq!(read(&[252, 0x2c, 0x01]).unwrap(), (300, 0));
        assert_eq!(read(&[253, 1, 0, 1]).unwrap(), (0x01_0001, 0));
        assert_eq!(
            read(&[254, 1, 0, 0, 0, 0, 0, 0, 0x80]).unwrap(),
            (1 | 1 << 63, 0)
        );
        for bad in [
            &[][..],
            &[251],
            &[255],
            &[252, 1],
            &[254, 0, 0, 0, 0, 0, 0, 0],
        ] {
            assert!(read(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let decoders = [
            Decoder::Int {
                bytes: 8,
                unsigned: false,
            },
            Decoder::Decimal(DecimalPlan::new(65, 30).unwrap()),
            Decoder::Time2 { fsp: 6 },
            Decoder::Time2 { fsp: 2 },
            Decoder::DateTime2 { fsp: 6 },
            Decoder::Timestamp2 { fsp: 4 },
            Decoder::Json { len_bytes: 4 },
            Decoder::Geometry { len_bytes: 4 },
            Decoder::Vector { len_bytes: 4 },
            Decoder::Bit { width: 64 },
            Decoder::OldDateTime,
        ];
        let bytes = [0x85u8; 40];
        for d in &decoders {
            for n in 0..3 {
                let mut buf = &bytes[..n];
                assert!(d.decode(&mut buf).is_err(), "{d:?} on {n} bytes");
            }
        }
    }
}
