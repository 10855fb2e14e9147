//! Postgres types to tidemark's: a column's type OID and modifier to a [`ColumnType`]
//! ([`resolve`]), and a value's pgoutput text to a [`Value`] ([`read_value`]).
//!
//! Pure: no I/O. What pgoutput does not say (a domain's base type, an enum's labels, the element
//! of an array of a user type) comes from a [`Catalog`] the caller filled beforehand.
//!
//! Guarantees:
//! - Every column gets a type: a type tidemark does not know is carried as text, never dropped,
//!   and [`ResolvedType::unsupported`] names it so the caller can warn.
//! - Values are exact or refused: nothing is rounded, truncated or replaced. Malformed text and
//!   values the event model cannot hold are a [`ValueError`], never a panic.
//! - The text read here is what the output functions print under [`SESSION_SETTINGS`]; the
//!   replication session must use them (the parsers refuse other date and interval styles rather
//!   than misread them).
//!
//! Type mapping (Postgres 15 type → [`ColumnType`] → [`Value`]):
//!
//! | Postgres | `ColumnType` | `Value` |
//! |---|---|---|
//! | bool | `Bool` | `Bool` |
//! | int2, int4, int8 | `Int { bits: 16/32/64, unsigned: false }` | `Int` |
//! | oid | `Int { bits: 32, unsigned: true }` | `UInt` |
//! | numeric(p,s), numeric | `Decimal { precision, scale }`; `precision: 0` when unconstrained (or beyond `u8`, or a negative scale) | `Decimal` text as printed; `NaN`, `Infinity`, `-Infinity` kept as those words |
//! | float4, float8 | `Float`, `Double` | `Float`, `Double`; NaN and ±infinity kept |
//! | text, name, "char" | `Text { max_bytes: None, charset: "UTF8" }` | `Text` |
//! | varchar(n), char(n) | `Character { length, varying }` | `Text`; char(n) keeps its padding |
//! | bytea | `Binary { max_bytes: None }` | `Bytes` (hex or escape output) |
//! | date | `Date` | `Date`; `Infinity` for ±infinity |
//! | timestamp(p) | `DateTime { fsp: p }` | `DateTime`; `Infinity` for ±infinity |
//! | timestamptz(p) | `TimestampTz { fsp: p }` | `Timestamp` (µs since the epoch, UTC); `Infinity` for ±infinity |
//! | time(p) | `TimeOfDay { fsp: p }` | `Time` (µs since midnight, up to 24:00:00) |
//! | timetz(p) | `TimeTz { fsp: p }` | `Text` as printed (`12:00:00.5+05:30`) |
//! | interval | `Interval` | `Interval { months, days, micros }` |
//! | uuid | `Uuid` | `Text` |
//! | json / jsonb | `JsonText` / `Json` | `Json` (the text as sent) |
//! | inet, cidr, macaddr, macaddr8 | `Inet`, `Cidr`, `MacAddr`, `MacAddr8` | `Text` as printed |
//! | money | `Money` | `Text` as printed (see below) |
//! | bit(n), varbit(n) | `BitString { length, varying }` | `Text` of `0`/`1` |
//! | enum | `Enum { labels }` (labels from the catalog) | `Enum(label)` |
//! | domain | its base type's, with the domain's modifier | as the base type |
//! | ranges, multiranges, point, lseg, path, box, polygon, line, circle, xml, tsvector, tsquery | `PgNative { name }` | `Text` as printed |
//! | citext, hstore, ltree (extensions, in any schema) | `PgNative { name, extension: true }` | `Text` as printed |
//! | arrays of the above (but `box[]`) | `Array { element }` | `Text`: the array literal, checked to be well formed |
//! | anything else (composites, other extensions' types, `box[]`, int2vector...) | `Text`, warned once per column | `Text` as printed |
//!
//! Policies:
//! - numeric `NaN` and `±Infinity` are carried as they are: a Postgres warehouse holds them
//!   exactly (a constrained numeric cannot hold infinity at the source either). A sink whose
//!   target cannot hold them must fail or null-and-count them, as sinks do with MySQL zero dates;
//!   the source never alters a value.
//! - `infinity` and `-infinity` of date, timestamp and timestamptz are [`Value::Infinity`]; a
//!   Postgres warehouse holds them.
//! - Dates and timestamps keep Postgres' whole range, BC (negative years) and past 9999 alike.
//!   The one exception: a timestamptz after 294247-01-10 04:00:54 UTC (Postgres goes on to
//!   294276 AD) does not fit 64-bit microseconds since 1970 and is refused with
//!   [`ValueError::OutOfRange`], never moved into range.
//! - money is carried as the text the source prints: that text, and even the number of fraction
//!   digits it stands for, follow the source's `lc_monetary`, so no parser reads it safely for
//!   every locale, and a warehouse `money` column would read it with the warehouse's locale.
//!   It lands in a `text` column; cast it in the warehouse knowing the locale.
//! - Arrays keep their literal text; the warehouse column has the same element type (arrays of
//!   unsupported types, whose delimiter may not be a comma, are carried as text whole).

use std::collections::HashMap;
use std::sync::Arc;

use super::catalog::{Catalog, TypeFact};
use crate::event::{ColumnType, Date, DateTime, Value};

/// Settings the replication session must run with: the output functions that produce pgoutput's
/// text follow them, and this module reads exactly these forms. The built-in subscriber sets the
/// same (`datestyle`, `intervalstyle`, `extra_float_digits`) on its replication connections.
/// `extra_float_digits = 3` makes floats print their exact shortest form (Postgres 12+ default is
/// 1, which is also exact; 0 or less would round them). TimeZone may be anything: offsets are
/// read.
pub const SESSION_SETTINGS: &[(&str, &str)] = &[
    ("client_encoding", "UTF8"),
    ("DateStyle", "ISO"),
    ("IntervalStyle", "postgres"),
    ("extra_float_digits", "3"),
    ("bytea_output", "hex"),
];

/// [`SESSION_SETTINGS`] as a startup `options` parameter (`-c DateStyle=ISO -c ...`), what
/// `pgwire_replication::ReplicationConfig::with_options` takes.
pub fn session_options() -> String {
    SESSION_SETTINGS
        .iter()
        .map(|(name, value)| format!("-c {name}={value}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Character set named in [`ColumnType::Text`] for Postgres columns: values arrive in the
/// session's `client_encoding`, UTF-8.
pub const TEXT_CHARSET: &str = "UTF8";

/// OIDs of the built-in types read natively (`pg_type.dat` of Postgres 15; stable across
/// releases).
mod oid {
    pub const BOOL: u32 = 16;
    pub const BYTEA: u32 = 17;
    pub const CHAR: u32 = 18;
    pub const NAME: u32 = 19;
    pub const INT8: u32 = 20;
    pub const INT2: u32 = 21;
    pub const INT4: u32 = 23;
    pub const TEXT: u32 = 25;
    pub const OID: u32 = 26;
    pub const JSON: u32 = 114;
    pub const CIDR: u32 = 650;
    pub const FLOAT4: u32 = 700;
    pub const FLOAT8: u32 = 701;
    pub const MACADDR8: u32 = 774;
    pub const MONEY: u32 = 790;
    pub const MACADDR: u32 = 829;
    pub const INET: u32 = 869;
    pub const BPCHAR: u32 = 1042;
    pub const VARCHAR: u32 = 1043;
    pub const DATE: u32 = 1082;
    pub const TIME: u32 = 1083;
    pub const TIMESTAMP: u32 = 1114;
    pub const TIMESTAMPTZ: u32 = 1184;
    pub const INTERVAL: u32 = 1186;
    pub const TIMETZ: u32 = 1266;
    pub const BIT: u32 = 1560;
    pub const VARBIT: u32 = 1562;
    pub const NUMERIC: u32 = 1700;
    pub const UUID: u32 = 2950;
    pub const JSONB: u32 = 3802;
}

/// Built-in types no other source has, carried as their text and kept as the same type in a
/// Postgres warehouse: OID, name (as `format_type` prints it) and array type OID (0: the array
/// is carried as text, because its literal separates elements with `;`, not `,`).
const PG_NATIVE: &[(u32, &str, u32)] = &[
    (142, "xml", 143),
    (600, "point", 1017),
    (601, "lseg", 1018),
    (602, "path", 1019),
    (603, "box", 0),
    (604, "polygon", 1027),
    (628, "line", 629),
    (718, "circle", 719),
    (3614, "tsvector", 3643),
    (3615, "tsquery", 3645),
    (3904, "int4range", 3905),
    (3906, "numrange", 3907),
    (3908, "tsrange", 3909),
    (3910, "tstzrange", 3911),
    (3912, "daterange", 3913),
    (3926, "int8range", 3927),
    (4451, "int4multirange", 6150),
    (4532, "nummultirange", 6151),
    (4533, "tsmultirange", 6152),
    (4534, "tstzmultirange", 6153),
    (4535, "datemultirange", 6155),
    (4536, "int8multirange", 6157),
];

/// Extension types kept as the same type in a Postgres warehouse that has the extension.
const PG_EXTENSION_TYPES: &[&str] = &["citext", "hstore", "ltree"];

/// Built-in array types read natively, and their element types.
const BUILTIN_ARRAYS: &[(u32, u32)] = &[
    (1000, oid::BOOL),
    (1001, oid::BYTEA),
    (1002, oid::CHAR),
    (1003, oid::NAME),
    (1016, oid::INT8),
    (1005, oid::INT2),
    (1007, oid::INT4),
    (1009, oid::TEXT),
    (1028, oid::OID),
    (199, oid::JSON),
    (651, oid::CIDR),
    (1021, oid::FLOAT4),
    (1022, oid::FLOAT8),
    (775, oid::MACADDR8),
    (791, oid::MONEY),
    (1040, oid::MACADDR),
    (1041, oid::INET),
    (1014, oid::BPCHAR),
    (1015, oid::VARCHAR),
    (1182, oid::DATE),
    (1183, oid::TIME),
    (1115, oid::TIMESTAMP),
    (1185, oid::TIMESTAMPTZ),
    (1187, oid::INTERVAL),
    (1270, oid::TIMETZ),
    (1561, oid::BIT),
    (1563, oid::VARBIT),
    (1231, oid::NUMERIC),
    (2951, oid::UUID),
    (3807, oid::JSONB),
];

/// Domains over domains and arrays of domains nest; deeper than this is not a real schema.
const MAX_TYPE_DEPTH: usize = 16;

/// Microseconds in a day.
const DAY_MICROS: i64 = 86_400_000_000;

/// True when `oid` is a built-in type this module reads without asking the catalog; every
/// other type needs a [`TypeFact`] (or is carried as text).
pub fn is_builtin(oid: u32) -> bool {
    scalar(oid, -1).is_some() || builtin_array_element(oid).is_some()
}

fn builtin_array_element(array_oid: u32) -> Option<u32> {
    BUILTIN_ARRAYS
        .iter()
        .find(|(array, _)| *array == array_oid)
        .map(|(_, element)| *element)
        .or_else(|| {
            PG_NATIVE
                .iter()
                .find(|(_, _, array)| *array != 0 && *array == array_oid)
                .map(|(element, _, _)| *element)
        })
}

/// A [`ColumnType::PgNative`] of `name`, read as text.
fn pg_native(name: &str, extension: bool) -> ResolvedType {
    ResolvedType::native(
        ColumnType::PgNative {
            name: Arc::from(name),
            extension,
        },
        TextReader::Text,
    )
}

/// How a column's text becomes a [`Value`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextReader {
    /// `t` / `f`.
    Bool,
    /// A signed integer.
    Int,
    /// An unsigned 32-bit integer (`oid`).
    Oid,
    /// `float4`.
    Float4,
    /// `float8`.
    Float8,
    /// `numeric`.
    Numeric,
    /// Any text, kept as is.
    Text,
    /// `bytea`.
    Bytea,
    /// `date`.
    Date,
    /// `time`.
    Time,
    /// `timetz` (checked, kept as text).
    TimeTz,
    /// `timestamp`.
    Timestamp,
    /// `timestamptz`.
    TimestampTz,
    /// `interval`.
    Interval,
    /// `uuid` (checked, kept as text).
    Uuid,
    /// `json`, `jsonb`.
    Json,
    /// `inet`, `cidr` (checked, kept as text).
    Inet,
    /// `macaddr`, `macaddr8` (checked, kept as text).
    MacAddr,
    /// `bit`, `varbit` (checked, kept as text).
    Bits,
    /// An enum label.
    Enum,
    /// An array literal (checked, kept as text).
    Array,
}

/// A column type resolved: what it becomes and how its values are read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedType {
    /// The type sinks see.
    pub column_type: ColumnType,
    /// How values are read.
    pub reader: TextReader,
    /// The type's name when tidemark does not support it and carries its values as text.
    pub unsupported: Option<String>,
}

impl ResolvedType {
    fn native(column_type: ColumnType, reader: TextReader) -> Self {
        Self {
            column_type,
            reader,
            unsupported: None,
        }
    }

    fn as_text(name: String) -> Self {
        Self {
            column_type: text_type(None),
            reader: TextReader::Text,
            unsupported: Some(name),
        }
    }
}

fn text_type(max_bytes: Option<u64>) -> ColumnType {
    ColumnType::Text {
        max_bytes,
        charset: Arc::from(TEXT_CHARSET),
    }
}

/// Resolves column type `oid` with modifier `typmod` (`atttypmod`, -1 for none). `type_names`
/// are the names pgoutput's Type messages gave, used to name a type the catalog does not know.
pub fn resolve(
    oid: u32,
    typmod: i32,
    catalog: &Catalog,
    type_names: &HashMap<u32, String>,
) -> ResolvedType {
    resolve_at(oid, typmod, catalog, type_names, 0)
}

fn resolve_at(
    oid: u32,
    typmod: i32,
    catalog: &Catalog,
    type_names: &HashMap<u32, String>,
    depth: usize,
) -> ResolvedType {
    if let Some(resolved) = scalar(oid, typmod) {
        return resolved;
    }
    let name = || {
        catalog
            .type_fact(oid)
            .map(|fact| fact.name().to_owned())
            .or_else(|| type_names.get(&oid).cloned())
            .unwrap_or_else(|| format!("type oid {oid}"))
    };
    if depth >= MAX_TYPE_DEPTH {
        return ResolvedType::as_text(name());
    }
    let array_of = |element_oid: u32| {
        // `box[]` separates its elements with `;`: its literal is carried whole, as text.
        if PG_NATIVE
            .iter()
            .any(|(native, _, array)| *native == element_oid && *array == 0)
        {
            return ResolvedType::as_text(name());
        }
        // An array column's modifier is its element's.
        let element = resolve_at(element_oid, typmod, catalog, type_names, depth + 1);
        match element.unsupported {
            // Its literal may use another delimiter than a comma: the whole text, as text.
            Some(_) => ResolvedType::as_text(name()),
            None => ResolvedType::native(
                ColumnType::Array {
                    element: Box::new(element.column_type),
                },
                TextReader::Array,
            ),
        }
    };
    if let Some(element_oid) = builtin_array_element(oid) {
        return array_of(element_oid);
    }
    match catalog.type_fact(oid) {
        Some(TypeFact::Enum { labels, .. }) => ResolvedType::native(
            ColumnType::Enum {
                labels: Arc::from(labels.as_slice()),
            },
            TextReader::Enum,
        ),
        Some(TypeFact::Domain {
            base_oid,
            base_typmod,
            ..
        }) => {
            let base = resolve_at(*base_oid, *base_typmod, catalog, type_names, depth + 1);
            match base.unsupported {
                Some(_) => ResolvedType::as_text(name()),
                None => base,
            }
        }
        Some(TypeFact::Array { element_oid, .. }) => array_of(*element_oid),
        Some(TypeFact::Other { name: qualified }) => {
            // `schema.name`: an extension's types live in whichever schema it was created in.
            let unqualified = qualified.rsplit('.').next().unwrap_or(qualified);
            match PG_EXTENSION_TYPES.iter().find(|t| **t == unqualified) {
                Some(extension_type) => pg_native(extension_type, true),
                None => ResolvedType::as_text(name()),
            }
        }
        None => ResolvedType::as_text(name()),
    }
}

/// Built-in scalar types.
fn scalar(oid: u32, typmod: i32) -> Option<ResolvedType> {
    let int = |bits| ColumnType::Int {
        bits,
        unsigned: false,
    };
    let native = ResolvedType::native;
    Some(match oid {
        oid::BOOL => native(ColumnType::Bool, TextReader::Bool),
        oid::INT2 => native(int(16), TextReader::Int),
        oid::INT4 => native(int(32), TextReader::Int),
        oid::INT8 => native(int(64), TextReader::Int),
        oid::OID => native(
            ColumnType::Int {
                bits: 32,
                unsigned: true,
            },
            TextReader::Oid,
        ),
        oid::FLOAT4 => native(ColumnType::Float, TextReader::Float4),
        oid::FLOAT8 => native(ColumnType::Double, TextReader::Float8),
        oid::NUMERIC => native(numeric_type(typmod), TextReader::Numeric),
        oid::TEXT | oid::NAME | oid::CHAR => native(text_type(None), TextReader::Text),
        oid::VARCHAR | oid::BPCHAR => native(
            ColumnType::Character {
                // The modifier counts the 4-byte header too.
                length: u32::try_from(typmod - 4).ok(),
                varying: oid == oid::VARCHAR,
            },
            TextReader::Text,
        ),
        oid::BYTEA => native(ColumnType::Binary { max_bytes: None }, TextReader::Bytea),
        oid::DATE => native(ColumnType::Date, TextReader::Date),
        oid::TIME => native(
            ColumnType::TimeOfDay {
                fsp: fraction_digits(typmod),
            },
            TextReader::Time,
        ),
        oid::TIMETZ => native(
            ColumnType::TimeTz {
                fsp: fraction_digits(typmod),
            },
            TextReader::TimeTz,
        ),
        oid::TIMESTAMP => native(
            ColumnType::DateTime {
                fsp: fraction_digits(typmod),
            },
            TextReader::Timestamp,
        ),
        oid::TIMESTAMPTZ => native(
            ColumnType::TimestampTz {
                fsp: fraction_digits(typmod),
            },
            TextReader::TimestampTz,
        ),
        oid::INTERVAL => native(ColumnType::Interval, TextReader::Interval),
        oid::UUID => native(ColumnType::Uuid, TextReader::Uuid),
        oid::JSON => native(ColumnType::JsonText, TextReader::Json),
        oid::JSONB => native(ColumnType::Json, TextReader::Json),
        oid::INET => native(ColumnType::Inet, TextReader::Inet),
        oid::CIDR => native(ColumnType::Cidr, TextReader::Inet),
        oid::MACADDR => native(ColumnType::MacAddr, TextReader::MacAddr),
        oid::MACADDR8 => native(ColumnType::MacAddr8, TextReader::MacAddr),
        oid::MONEY => native(ColumnType::Money, TextReader::Text),
        oid::BIT | oid::VARBIT => native(
            ColumnType::BitString {
                // Bit types' modifier is the length itself.
                length: u32::try_from(typmod).ok(),
                varying: oid == oid::VARBIT,
            },
            TextReader::Bits,
        ),
        _ => {
            let (_, name, _) = PG_NATIVE.iter().find(|(native, _, _)| *native == oid)?;
            return Some(pg_native(name, false));
        }
    })
}

/// `numeric(p,s)` from its modifier: `Decimal { precision: 0 }` (unconstrained) when there is
/// none, or when it does not fit `Decimal` (precision over 255, a negative scale or a scale
/// beyond the precision, all legal in Postgres 15): an unconstrained column holds those values
/// exactly.
fn numeric_type(typmod: i32) -> ColumnType {
    let unconstrained = ColumnType::Decimal {
        precision: 0,
        scale: 0,
    };
    if typmod < 4 {
        return unconstrained;
    }
    let bits = typmod - 4;
    let precision = (bits >> 16) & 0xffff;
    // Postgres 15 stores the scale as an 11-bit signed number.
    let scale = ((bits & 0x7ff) ^ 1024) - 1024;
    match (u8::try_from(precision), u8::try_from(scale)) {
        (Ok(precision), Ok(scale)) if precision > 0 && scale <= precision => {
            ColumnType::Decimal { precision, scale }
        }
        _ => unconstrained,
    }
}

/// Fractional-second digits of a time or timestamp modifier (-1, none, is 6).
fn fraction_digits(typmod: i32) -> u8 {
    u8::try_from(typmod).map_or(6, |digits| digits.min(6))
}

/// Why a value's text cannot become a [`Value`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    /// The text is not what the type's output function prints under [`SESSION_SETTINGS`]
    /// (corrupt input, or a session with other settings).
    #[error("{0}")]
    Malformed(String),
    /// A well-formed value the event model cannot hold (a timestamptz in Postgres' last 30
    /// years).
    #[error("{0}")]
    OutOfRange(String),
}

fn malformed(what: &str) -> ValueError {
    ValueError::Malformed(what.to_owned())
}

/// Reads one column value from pgoutput's text form.
pub fn read_value(reader: TextReader, bytes: &[u8]) -> Result<Value, ValueError> {
    let text = std::str::from_utf8(bytes).map_err(|e| {
        ValueError::Malformed(format!(
            "the value is not UTF-8 (byte {}); the replication session needs client_encoding=UTF8",
            e.valid_up_to()
        ))
    })?;
    read_text(reader, text)
}

/// Reads one column value from its text (see [`read_value`]).
pub fn read_text(reader: TextReader, text: &str) -> Result<Value, ValueError> {
    Ok(match reader {
        TextReader::Bool => match text {
            "t" => Value::Bool(true),
            "f" => Value::Bool(false),
            _ => return Err(malformed("not a boolean (t or f)")),
        },
        TextReader::Int => Value::Int(
            text.parse()
                .map_err(|_| malformed("not a 64-bit signed integer"))?,
        ),
        TextReader::Oid => Value::UInt(
            text.parse::<u32>()
                .map_err(|_| malformed("not an unsigned 32-bit integer"))?
                .into(),
        ),
        TextReader::Float4 => Value::Float(read_float(text)?),
        TextReader::Float8 => Value::Double(read_float(text)?),
        TextReader::Numeric => read_numeric(text)?,
        TextReader::Text => Value::Text(text.to_owned()),
        TextReader::Bytea => Value::Bytes(read_bytea(text)?),
        TextReader::Date => match infinity(text) {
            Some(value) => value,
            None => {
                let (body, bc) = split_bc(text);
                Value::Date(read_date(body, bc)?)
            }
        },
        TextReader::Time => Value::Time(read_time_of_day(text)?),
        TextReader::TimeTz => {
            let (time, offset) = split_offset(text)?;
            read_time_of_day(time)?;
            read_offset(offset)?;
            Value::Text(text.to_owned())
        }
        TextReader::Timestamp => match infinity(text) {
            Some(value) => value,
            None => Value::DateTime(read_timestamp(text)?),
        },
        TextReader::TimestampTz => match infinity(text) {
            Some(value) => value,
            None => Value::Timestamp(read_timestamptz(text)?),
        },
        TextReader::Interval => read_interval(text)?,
        TextReader::Uuid => {
            check_uuid(text)?;
            Value::Text(text.to_owned())
        }
        TextReader::Json => Value::Json(text.to_owned()),
        TextReader::Inet => {
            check_chars(text, "an inet or cidr address", |c| {
                c.is_ascii_hexdigit() || matches!(c, '.' | ':' | '/')
            })?;
            Value::Text(text.to_owned())
        }
        TextReader::MacAddr => {
            check_chars(text, "a MAC address", |c| c.is_ascii_hexdigit() || c == ':')?;
            Value::Text(text.to_owned())
        }
        TextReader::Bits => {
            if !text.bytes().all(|b| b == b'0' || b == b'1') {
                return Err(malformed("not a bit string (0 and 1 only)"));
            }
            Value::Text(text.to_owned())
        }
        TextReader::Enum => Value::Enum(text.to_owned()),
        TextReader::Array => {
            array_elements(text)?;
            Value::Text(text.to_owned())
        }
    })
}

/// `NaN`, `Infinity`, `-Infinity` (as Postgres prints them) or a decimal number.
fn read_float<F: std::str::FromStr>(text: &str) -> Result<F, ValueError> {
    let plain = text
        .bytes()
        .all(|b| b.is_ascii_digit() || b"+-.eE".contains(&b));
    let special = matches!(text, "NaN" | "Infinity" | "-Infinity");
    if !(plain || special) {
        return Err(malformed("not a floating-point number"));
    }
    text.parse()
        .map_err(|_| malformed("not a floating-point number"))
}

fn read_numeric(text: &str) -> Result<Value, ValueError> {
    if matches!(text, "NaN" | "Infinity" | "-Infinity") {
        return Ok(Value::Decimal(text.to_owned()));
    }
    let digits = text.strip_prefix('-').unwrap_or(text);
    let (whole, fraction) = match digits.split_once('.') {
        Some((whole, fraction)) => (whole, Some(fraction)),
        None => (digits, None),
    };
    let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !all_digits(whole) || fraction.is_some_and(|f| !all_digits(f)) {
        return Err(malformed("not a decimal number"));
    }
    Ok(Value::Decimal(text.to_owned()))
}

/// `\x` followed by hex digit pairs, or the `escape` output format.
fn read_bytea(text: &str) -> Result<Vec<u8>, ValueError> {
    if let Some(hex) = text.strip_prefix("\\x") {
        let bytes = hex.as_bytes();
        if bytes.len() % 2 != 0 {
            return Err(malformed("bytea hex with an odd number of digits"));
        }
        return bytes
            .chunks_exact(2)
            .map(|pair| Some(hex_digit(pair[0])? << 4 | hex_digit(pair[1])?))
            .collect::<Option<Vec<u8>>>()
            .ok_or_else(|| malformed("bytea hex with a character that is not a hex digit"));
    }
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' if bytes.get(i + 1) == Some(&b'\\') => {
                out.push(b'\\');
                i += 2;
            }
            b'\\' => {
                let octal = bytes
                    .get(i + 1..i + 4)
                    .filter(|d| d.iter().all(|b| (b'0'..=b'7').contains(b)) && d[0] <= b'3')
                    .ok_or_else(|| malformed("bytea escape that is not \\\\ or \\ooo"))?;
                out.push((octal[0] - b'0') << 6 | (octal[1] - b'0') << 3 | (octal[2] - b'0'));
                i += 4;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    Ok(out)
}

fn hex_digit(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn infinity(text: &str) -> Option<Value> {
    match text {
        "infinity" => Some(Value::Infinity { negative: false }),
        "-infinity" => Some(Value::Infinity { negative: true }),
        _ => None,
    }
}

/// Splits off the ` BC` suffix Postgres writes after a date or timestamp before 1 AD.
fn split_bc(text: &str) -> (&str, bool) {
    match text.strip_suffix(" BC") {
        Some(body) => (body, true),
        None => (text, false),
    }
}

/// `YYYY-MM-DD` (at least four year digits) as DateStyle ISO prints it, the year counted back
/// from 1 AD when `bc`.
fn read_date(text: &str, bc: bool) -> Result<Date, ValueError> {
    let bad = || malformed("not an ISO date (the replication session needs DateStyle=ISO)");
    let mut parts = text.splitn(3, '-');
    let (Some(year), Some(month), Some(day)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(bad());
    };
    if year.len() < 4 || month.len() != 2 || day.len() != 2 {
        return Err(bad());
    }
    let year: i32 = digits(year).ok_or_else(bad)?;
    let month: u32 = digits(month).ok_or_else(bad)?;
    let day: u32 = digits(day).ok_or_else(bad)?;
    if year == 0 {
        return Err(malformed("year 0 (Postgres counts 1 BC, then 1 AD)"));
    }
    // The proleptic calendar's leap years: 1 BC is year 0, 5 BC year -4, ...
    let astronomical = if bc {
        1 - i64::from(year)
    } else {
        i64::from(year)
    };
    if !(1..=12).contains(&month) || day == 0 || day > days_in_month(astronomical, month) {
        return Err(malformed("not a calendar date"));
    }
    Ok(Date {
        year: if bc { -year } else { year },
        month: month as u8,
        day: day as u8,
    })
}

/// An unsigned decimal made of ASCII digits only (no sign, no spaces).
fn digits<T: std::str::FromStr>(s: &str) -> Option<T> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn days_in_month(year: i64, month: u32) -> u32 {
    let leap = year.rem_euclid(4) == 0 && (year.rem_euclid(100) != 0 || year.rem_euclid(400) == 0);
    match month {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// `HH:MM:SS[.f{1,6}]` from 00:00:00 to 24:00:00, as microseconds since midnight.
fn read_time_of_day(text: &str) -> Result<i64, ValueError> {
    let bad = || malformed("not a time of day HH:MM:SS[.ffffff]");
    let (clock, fraction) = match text.split_once('.') {
        Some((clock, fraction)) => (clock, Some(fraction)),
        None => (text, None),
    };
    let mut parts = clock.split(':');
    let (Some(h), Some(m), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad());
    };
    if h.len() != 2 || m.len() != 2 || s.len() != 2 {
        return Err(bad());
    }
    let (h, m, s): (i64, i64, i64) = (
        digits(h).ok_or_else(bad)?,
        digits(m).ok_or_else(bad)?,
        digits(s).ok_or_else(bad)?,
    );
    let micros = match fraction {
        Some(f) => fraction_micros(f).ok_or_else(bad)?,
        None => 0,
    };
    if m > 59 || s > 59 {
        return Err(bad());
    }
    let total = ((h * 60 + m) * 60 + s) * 1_000_000 + micros;
    if total > DAY_MICROS {
        return Err(bad());
    }
    Ok(total)
}

/// One to six fraction digits as microseconds.
fn fraction_micros(fraction: &str) -> Option<i64> {
    if fraction.is_empty() || fraction.len() > 6 {
        return None;
    }
    let value: i64 = digits(fraction)?;
    Some(value * 10_i64.pow(6 - fraction.len() as u32))
}

/// Splits `12:00:00.5+05:30` at the sign of its UTC offset.
fn split_offset(text: &str) -> Result<(&str, &str), ValueError> {
    text.find(['+', '-'])
        .map(|at| text.split_at(at))
        .ok_or_else(|| malformed("a time with time zone without its UTC offset"))
}

/// `+HH`, `+HH:MM` or `+HH:MM:SS` (also `-`), as seconds east of UTC.
fn read_offset(text: &str) -> Result<i64, ValueError> {
    let bad = || malformed("not a UTC offset ±HH[:MM[:SS]]");
    let (sign, rest) = match text.as_bytes().first() {
        Some(b'+') => (1, &text[1..]),
        Some(b'-') => (-1, &text[1..]),
        _ => return Err(bad()),
    };
    let mut seconds = 0i64;
    let mut count = 0;
    for (i, part) in rest.split(':').enumerate() {
        if i > 2 || part.len() != 2 {
            return Err(bad());
        }
        let value: i64 = digits(part).ok_or_else(bad)?;
        if i > 0 && value > 59 {
            return Err(bad());
        }
        seconds = seconds * 60 + value;
        count = i + 1;
    }
    // Scale `HH` or `HH:MM` up to seconds.
    for _ in count..3 {
        seconds *= 60;
    }
    Ok(sign * seconds)
}

/// `YYYY-MM-DD HH:MM:SS[.ffffff][ BC]` as DateStyle ISO prints a `timestamp`.
fn read_timestamp(text: &str) -> Result<DateTime, ValueError> {
    let (body, bc) = split_bc(text);
    let (date, time) = body
        .split_once(' ')
        .ok_or_else(|| malformed("not an ISO timestamp (DateStyle=ISO)"))?;
    read_date_time(date, time, bc)
}

fn read_date_time(date: &str, time: &str, bc: bool) -> Result<DateTime, ValueError> {
    let date = read_date(date, bc)?;
    let micros = read_time_of_day(time)?;
    if micros == DAY_MICROS {
        return Err(malformed("a timestamp at 24:00:00"));
    }
    let secs = micros / 1_000_000;
    Ok(DateTime {
        date,
        hour: (secs / 3600) as u8,
        minute: (secs / 60 % 60) as u8,
        second: (secs % 60) as u8,
        micros: (micros % 1_000_000) as u32,
    })
}

/// `YYYY-MM-DD HH:MM:SS[.ffffff]±HH[:MM[:SS]][ BC]` as microseconds since the epoch, UTC.
fn read_timestamptz(text: &str) -> Result<i64, ValueError> {
    let (body, bc) = split_bc(text);
    let (date, rest) = body
        .split_once(' ')
        .ok_or_else(|| malformed("not an ISO timestamp with time zone (DateStyle=ISO)"))?;
    let (time, offset) = split_offset(rest)?;
    let local = read_date_time(date, time, bc)?;
    let offset = read_offset(offset)?;
    let year = i64::from(local.date.year);
    let astronomical = if year < 0 { year + 1 } else { year };
    let days = days_from_civil(
        astronomical,
        i64::from(local.date.month),
        i64::from(local.date.day),
    );
    let local_micros = i128::from(days) * i128::from(DAY_MICROS)
        + i128::from(
            (i64::from(local.hour) * 60 + i64::from(local.minute)) * 60 + i64::from(local.second),
        ) * 1_000_000
        + i128::from(local.micros);
    let utc = local_micros - i128::from(offset) * 1_000_000;
    // Postgres reaches 294276 AD; microseconds since 1970 in 64 bits end 30 years earlier.
    i64::try_from(utc).map_err(|_| {
        ValueError::OutOfRange(format!(
            "`{text}` is after 294247-01-10 04:00:54 UTC, the last instant tidemark carries"
        ))
    })
}

/// Days from 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// An interval as IntervalStyle `postgres` prints it: `[N year[s]] [N mon[s]] [N day[s]]
/// [±H+:MM:SS[.ffffff]]`, each part signed on its own.
fn read_interval(text: &str) -> Result<Value, ValueError> {
    let bad = || {
        malformed(
            "not an interval in IntervalStyle postgres (the replication session needs IntervalStyle=postgres)",
        )
    };
    let overflow = || malformed("an interval part out of range");
    let mut months: i64 = 0;
    let mut days: i64 = 0;
    let mut micros: i128 = 0;
    let mut words = text.split(' ');
    let mut time_seen = false;
    while let Some(word) = words.next() {
        if time_seen {
            return Err(bad());
        }
        if word.contains(':') {
            micros = interval_time(word).ok_or_else(bad)?;
            time_seen = true;
            continue;
        }
        let number: i64 = word.parse().map_err(|_| bad())?;
        let unit = words.next().ok_or_else(bad)?;
        match unit {
            "year" | "years" => {
                months = number
                    .checked_mul(12)
                    .and_then(|m| m.checked_add(months))
                    .ok_or_else(overflow)?
            }
            "mon" | "mons" => months = months.checked_add(number).ok_or_else(overflow)?,
            "day" | "days" => days = days.checked_add(number).ok_or_else(overflow)?,
            _ => return Err(bad()),
        }
    }
    if text.is_empty() {
        return Err(bad());
    }
    Ok(Value::Interval {
        months: i32::try_from(months).map_err(|_| overflow())?,
        days: i32::try_from(days).map_err(|_| overflow())?,
        micros: i64::try_from(micros).map_err(|_| overflow())?,
    })
}

/// `[+-]H+:MM:SS[.f{1,6}]` as signed microseconds.
fn interval_time(word: &str) -> Option<i128> {
    let (negative, rest) = match word.as_bytes().first()? {
        b'-' => (true, &word[1..]),
        b'+' => (false, &word[1..]),
        _ => (false, word),
    };
    let (clock, fraction) = match rest.split_once('.') {
        Some((clock, fraction)) => (clock, Some(fraction)),
        None => (rest, None),
    };
    let mut parts = clock.split(':');
    let (Some(h), Some(m), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    // Postgres prints at most 10 hour digits (2562047788); more cannot be an interval, and
    // bounding them keeps the arithmetic below from overflowing.
    if !(2..=12).contains(&h.len()) || m.len() != 2 || s.len() != 2 {
        return None;
    }
    let (h, m, s): (i128, i128, i128) = (digits(h)?, digits(m)?, digits(s)?);
    if m > 59 || s > 59 {
        return None;
    }
    let fraction = match fraction {
        Some(f) => i128::from(fraction_micros(f)?),
        None => 0,
    };
    let magnitude = ((h * 60 + m) * 60 + s) * 1_000_000 + fraction;
    Some(if negative { -magnitude } else { magnitude })
}

fn check_uuid(text: &str) -> Result<(), ValueError> {
    let ok = text.len() == 36
        && text.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_hexdigit(),
        });
    if ok {
        Ok(())
    } else {
        Err(malformed("not a UUID (8-4-4-4-12 hex digits)"))
    }
}

fn check_chars(text: &str, what: &str, allowed: impl Fn(char) -> bool) -> Result<(), ValueError> {
    if !text.is_empty() && text.chars().all(allowed) {
        Ok(())
    } else {
        Err(ValueError::Malformed(format!("not {what}")))
    }
}

/// The elements of a Postgres array literal (`{1,NULL,"a \"b\""}`, `[0:1]={{1,2},{3,4}}`),
/// flattened in storage order: `None` for an unquoted NULL, quoted elements unescaped. Checks
/// that the literal is well formed (balanced braces, closed quotes, nothing after the last
/// brace); the delimiter is a comma (every type read as an array here uses it).
pub fn array_elements(text: &str) -> Result<Vec<Option<String>>, ValueError> {
    let bad = |why: &str| ValueError::Malformed(format!("not an array literal: {why}"));
    let mut rest = text;
    if rest.starts_with('[') {
        // Dimension decoration: [lo:hi][lo:hi]=
        let (dims, after) = rest
            .split_once('=')
            .ok_or_else(|| bad("dimensions without '='"))?;
        if !dims
            .bytes()
            .all(|b| b.is_ascii_digit() || b"[]:-".contains(&b))
        {
            return Err(bad("malformed dimensions"));
        }
        rest = after;
    }
    let bytes = rest.as_bytes();
    if bytes.first() != Some(&b'{') {
        return Err(bad("it does not start with '{'"));
    }
    let mut elements = Vec::new();
    let mut depth = 0usize;
    let mut i = 0;
    // True right after '{' or a delimiter: an element (or a nested '{' / a closing '}') is next.
    let mut expect_element = false;
    while i < bytes.len() {
        match bytes[i] {
            b'{' => {
                depth += 1;
                expect_element = true;
                i += 1;
            }
            b'}' => {
                depth = depth.checked_sub(1).ok_or_else(|| bad("unbalanced '}'"))?;
                expect_element = false;
                i += 1;
                if depth == 0 {
                    if i != bytes.len() {
                        return Err(bad("text after the closing '}'"));
                    }
                    return Ok(elements);
                }
            }
            b',' if !expect_element => {
                expect_element = true;
                i += 1;
            }
            b'"' if expect_element => {
                let mut value = Vec::new();
                i += 1;
                loop {
                    match bytes.get(i) {
                        None => return Err(bad("unclosed quote")),
                        Some(b'"') => break,
                        Some(b'\\') => {
                            let escaped = bytes.get(i + 1).ok_or_else(|| bad("unclosed quote"))?;
                            value.push(*escaped);
                            i += 2;
                        }
                        Some(b) => {
                            value.push(*b);
                            i += 1;
                        }
                    }
                }
                i += 1;
                // Only whole UTF-8 sequences were copied, so this cannot fail.
                elements.push(Some(String::from_utf8_lossy(&value).into_owned()));
                expect_element = false;
            }
            _ if expect_element => {
                let end = rest[i..].find([',', '}']).map_or(bytes.len(), |at| i + at);
                let raw = &rest[i..end];
                if raw.is_empty() || raw.contains(['"', '{', '\\']) {
                    return Err(bad("malformed element"));
                }
                elements.push(if raw.eq_ignore_ascii_case("NULL") {
                    None
                } else {
                    Some(raw.to_owned())
                });
                i = end;
                expect_element = false;
            }
            _ => return Err(bad("unexpected character")),
        }
    }
    Err(bad("unbalanced '{'"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(reader: TextReader, text: &str) -> Value {
        read_text(reader, text).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    fn date(year: i32, month: u8, day: u8) -> Date {
        Date { year, month, day }
    }

    fn no_names() -> HashMap<u32, String> {
        HashMap::new()
    }

    #[test]
    fn session_options_set_every_setting() {
        assert_eq!(
            session_options(),
            "-c client_encoding=UTF8 -c DateStyle=ISO -c IntervalStyle=postgres -c extra_float_digits=3 -c bytea_output=hex"
        );
    }

    #[test]
    fn booleans_integers_and_oids() {
        assert_eq!(read(TextReader::Bool, "t"), Value::Bool(true));
        assert_eq!(read(TextReader::Bool, "f"), Value::Bool(false));
        assert!(read_text(TextReader::Bool, "true").is_err());
        assert_eq!(
            read(TextReader::Int, "-9223372036854775808"),
            Value::Int(i64::MIN)
        );
        assert_eq!(read(TextReader::Int, "32767"), Value::Int(32767));
        assert!(read_text(TextReader::Int, "1.0").is_err());
        assert!(read_text(TextReader::Int, "").is_err());
        assert_eq!(
            read(TextReader::Oid, "4294967295"),
            Value::UInt(u32::MAX.into())
        );
    }

    #[test]
    fn floats_keep_nan_and_infinities_and_round_trip() {
        assert!(matches!(read(TextReader::Float4, "NaN"), Value::Float(f) if f.is_nan()));
        assert_eq!(
            read(TextReader::Float8, "-Infinity"),
            Value::Double(f64::NEG_INFINITY)
        );
        assert_eq!(
            read(TextReader::Float4, "Infinity"),
            Value::Float(f32::INFINITY)
        );
        assert_eq!(read(TextReader::Float4, "1e+30"), Value::Float(1e30));
        assert_eq!(read(TextReader::Float4, "1e-45"), Value::Float(1e-45));
        assert_eq!(read(TextReader::Float4, "1.1"), Value::Float(1.1));
        assert_eq!(read(TextReader::Float8, "0.1"), Value::Double(0.1));
        assert_eq!(
            read(TextReader::Float8, "1.7976931348623157e+308"),
            Value::Double(f64::MAX)
        );
        for bad in ["inf", "nan", "0x10", "", "1,5"] {
            assert!(read_text(TextReader::Float8, bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn numerics_stay_exact_text_including_specials() {
        for text in [
            "0",
            "-12.340",
            "0.00000000000000000001",
            "150000000000000000000",
            "NaN",
            "Infinity",
            "-Infinity",
        ] {
            assert_eq!(read(TextReader::Numeric, text), Value::Decimal(text.into()));
        }
        for bad in ["", "-", "1.", ".5", "1e5", "nan", "1.2.3", "+1"] {
            assert!(read_text(TextReader::Numeric, bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn text_keeps_padding_and_rejects_invalid_utf8() {
        assert_eq!(read(TextReader::Text, "ab   "), Value::Text("ab   ".into()));
        assert_eq!(read(TextReader::Text, ""), Value::Text(String::new()));
        let err = read_value(TextReader::Text, b"a\xffb").unwrap_err();
        assert!(err.to_string().contains("client_encoding"), "{err}");
    }

    #[test]
    fn bytea_reads_hex_and_escape_output() {
        assert_eq!(
            read(TextReader::Bytea, "\\x00ff10Ab"),
            Value::Bytes(vec![0, 0xff, 0x10, 0xab])
        );
        assert_eq!(read(TextReader::Bytea, "\\x"), Value::Bytes(Vec::new()));
        assert_eq!(
            read(TextReader::Bytea, "a\\\\b\\000\\377"),
            Value::Bytes(vec![b'a', b'\\', b'b', 0, 0xff])
        );
        for bad in ["\\x0", "\\xzz", "\\9", "\\40", "\\400"] {
            assert!(read_text(TextReader::Bytea, bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn dates_infinities_and_the_calendar_range() {
        assert_eq!(
            read(TextReader::Date, "2024-02-29"),
            Value::Date(date(2024, 2, 29))
        );
        assert_eq!(
            read(TextReader::Date, "0001-01-01"),
            Value::Date(date(1, 1, 1))
        );
        assert_eq!(
            read(TextReader::Date, "9999-12-31"),
            Value::Date(date(9999, 12, 31))
        );
        assert_eq!(
            read(TextReader::Date, "infinity"),
            Value::Infinity { negative: false }
        );
        assert_eq!(
            read(TextReader::Date, "-infinity"),
            Value::Infinity { negative: true }
        );
        // Postgres' whole range is carried: BC years negative, years past 9999 as they are.
        for (text, year, month, day) in [
            ("0044-03-15 BC", -44, 3, 15),
            ("4713-01-01 BC", -4713, 1, 1),
            ("0001-02-29 BC", -1, 2, 29),
            ("10000-01-01", 10_000, 1, 1),
            ("5874897-12-31", 5_874_897, 12, 31),
        ] {
            let expected = date(year, month, day);
            assert_eq!(
                read(TextReader::Date, text),
                Value::Date(expected),
                "{text}"
            );
            assert_eq!(expected.to_string(), text);
        }
        // 2 BC is not a leap year (1 BC is), and there is no year 0.
        for bad in ["0002-02-29 BC", "0000-01-01"] {
            assert!(read_text(TextReader::Date, bad).is_err(), "{bad}");
        }
        for bad in [
            "2023-02-29",
            "2024-13-01",
            "24-01-01",
            "01/02/2024",
            "2024-1-01",
        ] {
            assert!(
                matches!(
                    read_text(TextReader::Date, bad),
                    Err(ValueError::Malformed(_))
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn times_of_day_run_to_midnight_inclusive() {
        assert_eq!(read(TextReader::Time, "00:00:00"), Value::Time(0));
        assert_eq!(
            read(TextReader::Time, "13:45:06.000123"),
            Value::Time(((13 * 60 + 45) * 60 + 6) * 1_000_000 + 123)
        );
        assert_eq!(
            read(TextReader::Time, "12:00:00.5"),
            Value::Time(43_200_500_000)
        );
        assert_eq!(read(TextReader::Time, "24:00:00"), Value::Time(DAY_MICROS));
        for bad in [
            "24:00:00.000001",
            "12:60:00",
            "1:00:00",
            "12:00",
            "12:00:00.1234567",
        ] {
            assert!(read_text(TextReader::Time, bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn timetz_offsets_are_checked_and_kept() {
        for text in [
            "12:00:00.5+05:30:15",
            "00:00:00-12",
            "23:59:59.999999+14",
            "24:00:00-15:59",
        ] {
            assert_eq!(read(TextReader::TimeTz, text), Value::Text(text.into()));
        }
        assert_eq!(read_offset("+05:30:15"), Ok(5 * 3600 + 30 * 60 + 15));
        assert_eq!(read_offset("-12"), Ok(-12 * 3600));
        assert_eq!(read_offset("-03:30"), Ok(-(3 * 3600 + 30 * 60)));
        for bad in [
            "12:00:00",
            "12:00:00+5",
            "12:00:00+05:60",
            "12:00:00+05:00:00:00",
        ] {
            assert!(read_text(TextReader::TimeTz, bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn timestamps_without_time_zone() {
        let dt = read(TextReader::Timestamp, "2024-02-29 23:59:58.000007");
        assert_eq!(
            dt,
            Value::DateTime(DateTime {
                date: date(2024, 2, 29),
                hour: 23,
                minute: 59,
                second: 58,
                micros: 7,
            })
        );
        assert_eq!(
            read(TextReader::Timestamp, "-infinity"),
            Value::Infinity { negative: true }
        );
        for text in [
            "0044-03-15 12:00:00 BC",
            "21016-11-04 13:51:30.123456",
            "294276-12-31 23:59:59.999999",
        ] {
            let Value::DateTime(dt) = read(TextReader::Timestamp, text) else {
                panic!("{text}: not a DateTime");
            };
            assert_eq!(dt.to_string(), text);
        }
        for bad in ["2024-02-29T23:59:58", "2024-02-29", "2024-02-29 24:00:00"] {
            assert!(read_text(TextReader::Timestamp, bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn timestamps_with_time_zone_become_utc_micros() {
        assert_eq!(
            read(TextReader::TimestampTz, "1970-01-01 00:00:00+00"),
            Value::Timestamp(0)
        );
        assert_eq!(
            read(TextReader::TimestampTz, "2024-06-01 17:30:00.5+05:30"),
            Value::Timestamp(1_717_243_200_500_000)
        );
        // Local mean time offsets carry seconds.
        assert_eq!(
            read(TextReader::TimestampTz, "1900-01-01 05:21:10+05:21:10"),
            Value::Timestamp(-2_208_988_800_000_000)
        );
        assert_eq!(
            read(TextReader::TimestampTz, "1969-12-31 20:00:00-04"),
            Value::Timestamp(0)
        );
        assert_eq!(
            read(TextReader::TimestampTz, "infinity"),
            Value::Infinity { negative: false }
        );
        // Years 1 and 9999 with offsets that cross them, BC and past 9999 (the micros are
        // Postgres' own `extract(epoch ...)`).
        assert_eq!(
            read(TextReader::TimestampTz, "0001-01-01 00:30:00+01"),
            Value::Timestamp(-62_135_598_600_000_000)
        );
        assert_eq!(
            read(TextReader::TimestampTz, "9999-12-31 23:30:00-01"),
            Value::Timestamp(253_402_302_600_000_000)
        );
        assert_eq!(
            read(TextReader::TimestampTz, "0044-03-15 12:00:00+00 BC"),
            Value::Timestamp(-63_517_780_800_000_000)
        );
        assert_eq!(
            read(TextReader::TimestampTz, "21016-11-04 13:51:30.123456+00"),
            Value::Timestamp(601_060_312_290_123_456)
        );
        // Postgres' last 30 years do not fit 64-bit microseconds since 1970.
        assert!(matches!(
            read_text(TextReader::TimestampTz, "294276-12-31 23:59:59+00"),
            Err(ValueError::OutOfRange(_))
        ));
        assert!(read_text(TextReader::TimestampTz, "2024-06-01 17:30:00").is_err());
    }

    #[test]
    fn intervals_read_every_sign_and_extreme() {
        let interval = |months, days, micros| Value::Interval {
            months,
            days,
            micros,
        };
        assert_eq!(read(TextReader::Interval, "00:00:00"), interval(0, 0, 0));
        assert_eq!(
            read(
                TextReader::Interval,
                "-1 years -2 mons +3 days -04:05:06.000007"
            ),
            interval(-14, 3, -14_706_000_007)
        );
        assert_eq!(
            read(TextReader::Interval, "1 mon -1 days"),
            interval(1, -1, 0)
        );
        assert_eq!(
            read(TextReader::Interval, "1 year 2 mons"),
            interval(14, 0, 0)
        );
        assert_eq!(
            read(TextReader::Interval, "-00:00:00.000001"),
            interval(0, 0, -1)
        );
        assert_eq!(
            read(TextReader::Interval, "-1 days +02:00:00"),
            interval(0, -1, 7_200_000_000)
        );
        assert_eq!(
            read(
                TextReader::Interval,
                "-178956970 years -8 mons -2147483648 days -2562047788:00:54.775808"
            ),
            interval(i32::MIN, i32::MIN, i64::MIN)
        );
        assert_eq!(
            read(
                TextReader::Interval,
                "178956970 years 7 mons 2147483647 days 2562047788:00:54.775807"
            ),
            interval(i32::MAX, i32::MAX, i64::MAX)
        );
        // What Postgres prints, read back, prints the same (the JSON form is Postgres' text).
        for text in [
            "-1 years -2 mons +3 days -04:05:06.000007",
            "1 mon -1 days",
            "-1 days +02:00:00",
            "3 days",
            "00:00:01.5",
        ] {
            let json = serde_json::to_value(read(TextReader::Interval, text)).unwrap();
            assert_eq!(json, serde_json::Value::String(text.into()));
        }
        for bad in [
            "",
            "P1Y2M",
            "@ 1 hour",
            "1-2",
            "1 fortnight",
            "1 day 00:00:00 2 days",
            "178956971 years",
            "2562047789:00:00",
        ] {
            assert!(read_text(TextReader::Interval, bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn uuids_addresses_and_bit_strings_are_checked_text() {
        let uuid = "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11";
        assert_eq!(read(TextReader::Uuid, uuid), Value::Text(uuid.into()));
        assert!(read_text(TextReader::Uuid, "a0eebc999c0b4ef8bb6d6bb9bd380a11").is_err());
        for addr in ["192.168.1.5/24", "::1", "2001:db8::/32", "10.0.0.0/8"] {
            assert_eq!(read(TextReader::Inet, addr), Value::Text(addr.into()));
        }
        assert!(read_text(TextReader::Inet, "localhost").is_err());
        assert_eq!(
            read(TextReader::MacAddr, "08:00:2b:01:02:03:04:05"),
            Value::Text("08:00:2b:01:02:03:04:05".into())
        );
        assert_eq!(read(TextReader::Bits, "0101"), Value::Text("0101".into()));
        assert_eq!(read(TextReader::Bits, ""), Value::Text(String::new()));
        assert!(read_text(TextReader::Bits, "0102").is_err());
        assert_eq!(
            read(TextReader::Json, "{\"a\": [1, 2]}"),
            Value::Json("{\"a\": [1, 2]}".into())
        );
        assert_eq!(read(TextReader::Enum, "happy"), Value::Enum("happy".into()));
    }

    #[test]
    fn array_literals_with_nulls_quotes_and_dimensions() {
        let some = |s: &str| Some(s.to_owned());
        assert_eq!(
            array_elements(r#"{1,NULL,"a b","q\"x","",NULL,"NULL","back\\slash"}"#).unwrap(),
            vec![
                some("1"),
                None,
                some("a b"),
                some("q\"x"),
                some(""),
                None,
                some("NULL"),
                some("back\\slash"),
            ]
        );
        assert_eq!(
            array_elements("[0:1]={1,2}").unwrap(),
            vec![some("1"), some("2")]
        );
        assert_eq!(
            array_elements("{{1,2},{3,NULL}}").unwrap(),
            vec![some("1"), some("2"), some("3"), None]
        );
        assert_eq!(array_elements("{}").unwrap(), Vec::<Option<String>>::new());
        assert_eq!(
            array_elements(r#"{"{\"a\": 1}","é"}"#).unwrap(),
            vec![some("{\"a\": 1}"), some("é")]
        );
        let text = r#"{"2024-01-01 00:00:00+00",infinity}"#;
        assert_eq!(read(TextReader::Array, text), Value::Text(text.into()));
        for bad in [
            "", "1,2", "{1,2", "{1,2}}", "{1,2}x", "{\"a}", "{1,,2}", "{,}", "[0:1]{1}",
        ] {
            assert!(read_text(TextReader::Array, bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn no_text_makes_a_reader_panic() {
        const READERS: [TextReader; 21] = [
            TextReader::Bool,
            TextReader::Int,
            TextReader::Oid,
            TextReader::Float4,
            TextReader::Float8,
            TextReader::Numeric,
            TextReader::Text,
            TextReader::Bytea,
            TextReader::Date,
            TextReader::Time,
            TextReader::TimeTz,
            TextReader::Timestamp,
            TextReader::TimestampTz,
            TextReader::Interval,
            TextReader::Uuid,
            TextReader::Json,
            TextReader::Inet,
            TextReader::MacAddr,
            TextReader::Bits,
            TextReader::Enum,
            TextReader::Array,
        ];
        // Pieces of every format, shuffled together, plus some multi-byte characters.
        const PIECES: &[&str] = &[
            "0",
            "1",
            "9",
            "12",
            "2024",
            "-",
            "+",
            ":",
            ".",
            " ",
            "{",
            "}",
            ",",
            "\"",
            "\\",
            "[",
            "]",
            "=",
            "\\x",
            "ff",
            "BC",
            " BC",
            "NULL",
            "infinity",
            "NaN",
            "e",
            "years",
            "mon",
            "days",
            "é",
            "🚀",
            "99999999999999999999",
            "T",
            "Z",
            "/",
        ];
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        let mut next = |n: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % n as u64) as usize
        };
        for _ in 0..20_000 {
            let text: String = (0..next(12)).map(|_| PIECES[next(PIECES.len())]).collect();
            for reader in READERS {
                let _ = read_text(reader, &text);
            }
        }
    }

    #[test]
    fn builtin_types_resolve_with_their_modifiers() {
        let catalog = Catalog::new();
        let ty = |oid, typmod| resolve(oid, typmod, &catalog, &no_names()).column_type;
        assert_eq!(
            ty(oid::NUMERIC, ((10 << 16) | 2) + 4),
            ColumnType::Decimal {
                precision: 10,
                scale: 2
            }
        );
        let unconstrained = ColumnType::Decimal {
            precision: 0,
            scale: 0,
        };
        assert_eq!(ty(oid::NUMERIC, -1), unconstrained);
        // numeric(1000, 0), numeric(5, -2) (Postgres 15) and numeric(2, 3) do not fit Decimal.
        assert_eq!(ty(oid::NUMERIC, (1000 << 16) + 4), unconstrained);
        assert_eq!(
            ty(oid::NUMERIC, ((5 << 16) | (-2i32 & 0x7ff)) + 4),
            unconstrained
        );
        assert_eq!(ty(oid::NUMERIC, ((2 << 16) | 3) + 4), unconstrained);
        assert_eq!(
            ty(oid::VARCHAR, 10 + 4),
            ColumnType::Character {
                length: Some(10),
                varying: true
            }
        );
        assert_eq!(
            ty(oid::VARCHAR, -1),
            ColumnType::Character {
                length: None,
                varying: true
            }
        );
        assert_eq!(
            ty(oid::BPCHAR, 5 + 4),
            ColumnType::Character {
                length: Some(5),
                varying: false
            }
        );
        let native = |name: &str| ColumnType::PgNative {
            name: name.into(),
            extension: false,
        };
        assert_eq!(ty(3904, -1), native("int4range"));
        assert_eq!(ty(4535, -1), native("datemultirange"));
        assert_eq!(ty(603, -1), native("box"));
        assert_eq!(ty(142, -1), native("xml"));
        assert_eq!(
            ty(1017, -1),
            ColumnType::Array {
                element: Box::new(native("point"))
            }
        );
        assert_eq!(ty(oid::TIMESTAMPTZ, 3), ColumnType::TimestampTz { fsp: 3 });
        assert_eq!(ty(oid::TIMESTAMP, -1), ColumnType::DateTime { fsp: 6 });
        assert_eq!(ty(oid::TIME, 0), ColumnType::TimeOfDay { fsp: 0 });
        assert_eq!(
            ty(oid::BIT, 8),
            ColumnType::BitString {
                length: Some(8),
                varying: false
            }
        );
        assert_eq!(
            ty(oid::VARBIT, -1),
            ColumnType::BitString {
                length: None,
                varying: true
            }
        );
        assert_eq!(
            ty(1231, ((12 << 16) | 3) + 4),
            ColumnType::Array {
                element: Box::new(ColumnType::Decimal {
                    precision: 12,
                    scale: 3
                })
            }
        );
        assert_eq!(ty(oid::MONEY, -1), ColumnType::Money);
        assert!(is_builtin(oid::JSONB) && is_builtin(3807) && is_builtin(600) && !is_builtin(22));
    }

    #[test]
    fn enums_domains_and_their_arrays_resolve_through_the_catalog() {
        let mut catalog = Catalog::new();
        catalog.add_type(
            16_385,
            TypeFact::Enum {
                name: "public.mood".into(),
                labels: vec!["happy".into(), "sad".into()],
            },
        );
        catalog.add_type(
            16_384,
            TypeFact::Array {
                name: "public._mood".into(),
                element_oid: 16_385,
            },
        );
        catalog.add_type(
            16_390,
            TypeFact::Domain {
                name: "public.price".into(),
                base_oid: oid::NUMERIC,
                base_typmod: ((10 << 16) | 2) + 4,
            },
        );
        catalog.add_type(
            16_391,
            TypeFact::Domain {
                name: "public.positive_price".into(),
                base_oid: 16_390,
                base_typmod: -1,
            },
        );
        catalog.add_type(
            16_392,
            TypeFact::Other {
                name: "public.citext".into(),
            },
        );
        // A cycle no real catalog has must not loop.
        catalog.add_type(
            16_393,
            TypeFact::Domain {
                name: "public.loop".into(),
                base_oid: 16_393,
                base_typmod: -1,
            },
        );
        let resolved = |oid| resolve(oid, -1, &catalog, &no_names());
        let mood = ColumnType::Enum {
            labels: Arc::from(vec!["happy".to_string(), "sad".to_string()]),
        };
        assert_eq!(resolved(16_385).column_type, mood);
        assert_eq!(resolved(16_385).reader, TextReader::Enum);
        assert_eq!(
            resolved(16_384).column_type,
            ColumnType::Array {
                element: Box::new(mood)
            }
        );
        let price = ColumnType::Decimal {
            precision: 10,
            scale: 2,
        };
        assert_eq!(resolved(16_390).column_type, price);
        // The innermost domain's modifier wins over an unmodified outer domain.
        assert_eq!(resolved(16_391).column_type, price);
        assert_eq!(resolved(16_391).reader, TextReader::Numeric);
        // An extension's type, in whichever schema the extension lives.
        assert_eq!(
            resolved(16_392).column_type,
            ColumnType::PgNative {
                name: "citext".into(),
                extension: true
            }
        );
        assert_eq!(resolved(16_392).unsupported, None);
        assert_eq!(resolved(16_393).unsupported.as_deref(), Some("public.loop"));
        // Unknown to the catalog: named by the Type message, else by its OID.
        let names = HashMap::from([(20_000, "public.thing".to_string())]);
        assert_eq!(
            resolve(20_000, -1, &catalog, &names).unsupported.as_deref(),
            Some("public.thing")
        );
        let vector = resolve(22, -1, &catalog, &no_names());
        assert_eq!(vector.unsupported.as_deref(), Some("type oid 22"));
        assert_eq!(vector.reader, TextReader::Text);
        // An array of an unsupported type is carried as text whole, and so is `box[]`, whose
        // literal separates elements with `;`.
        for (array_oid, name, element_oid) in [
            (1006, "pg_catalog._int2vector", 22),
            (1020, "pg_catalog._box", 603),
        ] {
            catalog.add_type(
                array_oid,
                TypeFact::Array {
                    name: name.into(),
                    element_oid,
                },
            );
            let array = resolve(array_oid, -1, &catalog, &no_names());
            assert_eq!(array.unsupported.as_deref(), Some(name));
            assert_eq!(array.column_type, text_type(None));
        }
    }
}
