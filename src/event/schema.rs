//! Table schemas as a source describes them: names, types, nullability and key.
//!
//! A `TableSchema` is what the source log says the table looked like *at that position*, never
//! what the live catalog says today. Sinks create and evolve target tables from it.

use std::fmt;
use std::sync::Arc;

use serde::Serialize;

/// Fully qualified source table name: MySQL `database.table`, Postgres `schema.table`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct TableId {
    /// MySQL database or Postgres schema.
    pub namespace: Arc<str>,
    /// Table name.
    pub name: Arc<str>,
}

impl TableId {
    /// Builds a table id from its two parts.
    pub fn new(namespace: impl Into<Arc<str>>, name: impl Into<Arc<str>>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for TableId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.namespace, self.name)
    }
}

/// Source column type with the parameters a target needs to hold every value exactly.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ColumnType {
    /// Boolean.
    Bool,
    /// Integer of `bits` width (8, 16, 24, 32, 64), signed or unsigned.
    Int {
        /// Storage width in bits.
        bits: u8,
        /// True for MySQL UNSIGNED.
        unsigned: bool,
    },
    /// Single-precision float.
    Float,
    /// Double-precision float.
    Double,
    /// Exact decimal.
    Decimal {
        /// Total digits, up to 65 in MySQL.
        precision: u8,
        /// Digits after the point, up to 30 in MySQL.
        scale: u8,
    },
    /// Character data. `max_bytes` is the declared maximum size in bytes when the log says it.
    Text {
        /// Maximum stored size in bytes (not characters), when known.
        max_bytes: Option<u64>,
        /// Source character set name (`utf8mb4`, `latin1`, ...).
        charset: Arc<str>,
    },
    /// Binary string or BLOB.
    Binary {
        /// Maximum stored size in bytes, when known.
        max_bytes: Option<u64>,
    },
    /// Calendar date.
    Date,
    /// Date and time without time zone, `fsp` fractional digits.
    DateTime {
        /// Fractional-second digits, 0..=6.
        fsp: u8,
    },
    /// UTC instant, `fsp` fractional digits.
    Timestamp {
        /// Fractional-second digits, 0..=6.
        fsp: u8,
    },
    /// Signed duration (MySQL TIME), `fsp` fractional digits.
    Time {
        /// Fractional-second digits, 0..=6.
        fsp: u8,
    },
    /// MySQL YEAR.
    Year,
    /// Enumeration with its labels in definition order (index 1 is the first label).
    Enum {
        /// Labels as declared.
        labels: Arc<[String]>,
    },
    /// Set with its labels in definition order (bit 0 is the first label).
    Set {
        /// Labels as declared.
        labels: Arc<[String]>,
    },
    /// Fixed-width bit string.
    Bit {
        /// Width in bits, 1..=64.
        width: u8,
    },
    /// JSON document.
    Json,
    /// Spatial value (SRID + WKB).
    Geometry,
    /// An instant (Postgres `timestamptz`), `fsp` fractional digits. Values are
    /// [`Value::Timestamp`](crate::event::Value::Timestamp) (µs since the epoch, UTC) or
    /// [`Value::Infinity`](crate::event::Value::Infinity). Unlike [`ColumnType::Timestamp`],
    /// every value is a real instant: 0 is 1970-01-01 00:00:00 UTC, never a zero date.
    TimestampTz {
        /// Fractional-second digits, 0..=6.
        fsp: u8,
    },
    /// A time of day from 00:00:00 to 24:00:00 (Postgres `time`), `fsp` fractional digits.
    /// Values are [`Value::Time`](crate::event::Value::Time): µs since midnight.
    TimeOfDay {
        /// Fractional-second digits, 0..=6.
        fsp: u8,
    },
    /// A time of day with a UTC offset (Postgres `timetz`), `fsp` fractional digits. Values are
    /// [`Value::Text`](crate::event::Value::Text) in ISO form: `HH:MM:SS[.ffffff]±HH[:MM[:SS]]`.
    TimeTz {
        /// Fractional-second digits, 0..=6.
        fsp: u8,
    },
    /// A calendar interval (Postgres `interval`): months, days and microseconds kept apart.
    /// Values are [`Value::Interval`](crate::event::Value::Interval).
    Interval,
    /// A UUID. Values are [`Value::Text`](crate::event::Value::Text): 36 lower-case characters,
    /// `8-4-4-4-12` hex digits.
    Uuid,
    /// JSON kept exactly as written (Postgres `json`: whitespace, key order and duplicate keys
    /// are part of the value). Values are [`Value::Json`](crate::event::Value::Json).
    JsonText,
    /// An IPv4 or IPv6 host address with an optional netmask (Postgres `inet`). Values are
    /// [`Value::Text`](crate::event::Value::Text) as Postgres prints them (`192.168.1.5/24`).
    Inet,
    /// An IPv4 or IPv6 network (Postgres `cidr`). Values are
    /// [`Value::Text`](crate::event::Value::Text) as Postgres prints them (`10.0.0.0/8`).
    Cidr,
    /// A 6-byte MAC address (Postgres `macaddr`). Values are
    /// [`Value::Text`](crate::event::Value::Text): `08:00:2b:01:02:03`.
    MacAddr,
    /// An 8-byte (EUI-64) MAC address (Postgres `macaddr8`). Values are
    /// [`Value::Text`](crate::event::Value::Text): `08:00:2b:01:02:03:04:05`.
    MacAddr8,
    /// A currency amount (Postgres `money`). Values are
    /// [`Value::Text`](crate::event::Value::Text) exactly as the source prints them
    /// (`-$1,234.56`): the text, and even the number of fraction digits, follow the source's
    /// `lc_monetary`, so no reading of it as a number is safe for every locale.
    Money,
    /// A bit string of any length (Postgres `bit(n)`, `bit varying(n)`, `bit varying`). Values
    /// are [`Value::Text`](crate::event::Value::Text) of `0` and `1` characters.
    BitString {
        /// Declared length in bits (exact for `bit`, the maximum for `bit varying`); `None`
        /// when unlimited.
        length: Option<u32>,
        /// True for `bit varying`.
        varying: bool,
    },
    /// A character string with a declared length in characters (Postgres `char(n)`,
    /// `varchar(n)`). Values are [`Value::Text`](crate::event::Value::Text); a fixed-length
    /// (`varying: false`) value arrives padded with spaces to its length, as Postgres keeps it.
    Character {
        /// Declared length in characters; `None` when unlimited (`varchar`) or not declared.
        length: Option<u32>,
        /// True for `varchar`, false for the blank-padded `char`.
        varying: bool,
    },
    /// A Postgres type no other source has, carried as the text of its own literal syntax
    /// ([`Value::Text`](crate::event::Value::Text)): ranges and multiranges, geometric types,
    /// `xml`, `tsvector`, `tsquery`, and (`extension`) the extension types `citext`, `hstore`
    /// and `ltree`. A Postgres warehouse column of the same type reads the text back exactly.
    PgNative {
        /// The type's name as Postgres' `format_type` prints it (`int4range`, `citext`).
        name: Arc<str>,
        /// True when an extension defines the type: a warehouse without the extension holds the
        /// text instead.
        extension: bool,
    },
    /// An array of `element` values, of any number of dimensions (Postgres `elem[]`). Values are
    /// [`Value::Text`](crate::event::Value::Text) holding the Postgres array literal
    /// (`{1,NULL,"a b"}`, `[0:1]={1,2}`), which a target column of the same element type reads
    /// back exactly.
    Array {
        /// The type of every element.
        element: Box<ColumnType>,
    },
    /// A vector of single-precision floats (MySQL 9 `VECTOR(n)`). Values are
    /// [`Value::Vector`](crate::event::Value::Vector).
    Vector {
        /// Declared number of dimensions (the most a value holds), when the log says it.
        dimensions: Option<u32>,
    },
}

/// One column of a source table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Column {
    /// Column name as the source spells it.
    pub name: Arc<str>,
    /// Decoded type.
    #[serde(rename = "type")]
    pub ty: ColumnType,
    /// Whether the column accepts NULL.
    pub nullable: bool,
}

/// A source table's shape at one log position.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TableSchema {
    /// Which table.
    pub id: TableId,
    /// Columns in source order; row values use the same order.
    pub columns: Vec<Column>,
    /// Indexes into `columns` of the primary key, in key order; empty when the table has none.
    pub primary_key: Vec<usize>,
}

impl TableSchema {
    /// True when the table has a primary key (MERGE by key); false means append mode.
    pub fn has_key(&self) -> bool {
        !self.primary_key.is_empty()
    }

    /// Index of the column named `name`, if any.
    pub fn column_index(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| &*c.name == name)
    }
}
