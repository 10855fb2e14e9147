//! Table layouts: what one TABLE_MAP event says about a table, computed once per table map and
//! reused for every row that follows it.
//!
//! A layout holds the decoded [`TableSchema`] (names, types, nullability, key from the
//! `binlog_row_metadata=FULL` optional metadata) and a per-column decoding plan, so the per-row
//! hot path never re-parses metadata.
//!
//! Guarantees:
//! - Every column type either gets an exact decoder or the table map is refused with a
//!   [`LayoutError`] naming the column and type code (typed arrays, pre-5.0 DECIMAL...).
//!   Nothing is guessed: missing signedness, charsets or ENUM/SET labels are errors too.
//! - [`TableLayout::decode_row`] never panics: a short or malformed row image is a
//!   [`DecodeError`] naming the column.
//! - Text is converted from the column's charset exactly or refused (see [`super::charset`]).
//! - Rows of PARTIAL_UPDATE_ROWS events ([`TableLayout::decode_partial_update`]) come out as
//!   full rows: JSON diffs are applied to the before image's document, or refused.
//!
//! Type mapping (source type → [`ColumnType`] → [`Value`]):
//!
//! | MySQL / MariaDB | `ColumnType` | `Value` |
//! |---|---|---|
//! | TINYINT, SMALLINT, MEDIUMINT, INT, BIGINT | `Int { bits: 8/16/24/32/64, unsigned }` | `Int`, or `UInt` when UNSIGNED |
//! | FLOAT / DOUBLE | `Float` / `Double` | `Float` / `Double` |
//! | DECIMAL(p,s) | `Decimal { precision, scale }` | `Decimal` text with exactly `s` fraction digits |
//! | BIT(n) | `Bit { width: n }` | `Bit { bits, width }` |
//! | DATE | `Date` | `Date` (zero parts kept) |
//! | DATETIME(fsp) | `DateTime { fsp }` | `DateTime` (zero parts kept) |
//! | TIMESTAMP(fsp) | `Timestamp { fsp }` | `Timestamp(µs since epoch, UTC)`; 0 is the zero timestamp |
//! | TIME(fsp) | `Time { fsp }` | `Time(signed µs)`, negative and over 24 h kept |
//! | YEAR | `Year` | `Year` (0, or 1901..=2155) |
//! | CHAR/VARCHAR/TEXT with a text charset | `Text { max_bytes, charset }` | `Text` (UTF-8) |
//! | BINARY/VARBINARY/BLOB (charset `binary`) | `Binary { max_bytes }` | `Bytes` (BINARY(n) zero-padded to n) |
//! | ENUM / SET | `Enum { labels }` / `Set { labels }` | `Enum(label)` / `Set(labels)` |
//! | JSON (MySQL binary JSON) | `Json` | `Json` (compact JSON text) |
//! | JSON (MariaDB, an alias of LONGTEXT) | `Text` | `Text`: MariaDB's binlog cannot tell it from LONGTEXT |
//! | GEOMETRY and subtypes | `Geometry` | `Geometry { srid, wkb }` |
//! | VECTOR(n) (MySQL 9) | `Vector { dimensions: Some(n) }` | `Vector` (little-endian 32-bit floats) |
//!
//! `max_bytes` is the declared size in bytes: VARCHAR's byte length, CHAR's byte length, and
//! 255 / 65535 / 16777215 / 4294967295 for TINY/-/MEDIUM/LONG TEXT and BLOB. MariaDB's INET6,
//! UUID and INET4 travel as BINARY(n) and decode as their stored bytes.

use std::sync::Arc;

use mysql_async::binlog::events::{OptionalMetadataField, TableMapEvent};

use super::charset::{Charset, charset_name_of_collation};
use super::decode::{self, DecimalPlan, Decoder};
use super::jsondiff::{self, Before};
use crate::event::{Column, ColumnType, Row, TableId, TableSchema, Value};

/// How to name columns when the table map carries no names (`binlog_row_metadata=MINIMAL`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ColumnNames {
    /// Refuse: an error names the setting to change. The only safe choice for replication.
    #[default]
    Required,
    /// Name columns `@1`, `@2`, ... by position; without signedness metadata read numbers as
    /// signed (as mysqlbinlog does), without charset metadata show text as bytes. For offline
    /// inspection only.
    Positional,
}

/// Which server wrote the binlog. It matters for two details of the optional metadata:
/// MariaDB gives YEAR columns a SIGNEDNESS bit and counts GEOMETRY columns among the character
/// columns of the charset fields; MySQL does neither. Pass the flavor when it is known (the
/// FORMAT_DESCRIPTION event's server version tells): `Unknown` infers it, and refuses a table
/// map whose reading would depend on it and that carries no clue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ServerFlavor {
    /// MySQL (or Percona, Aurora MySQL...).
    MySql,
    /// MariaDB.
    MariaDb,
    /// Not known: inferred from the metadata when it matters, refused when ambiguous.
    #[default]
    Unknown,
}

impl ServerFlavor {
    /// The flavor of a server version string (`10.11.6-MariaDB-log` is MariaDB).
    pub fn from_server_version(version: &str) -> ServerFlavor {
        if version.to_ascii_lowercase().contains("mariadb") {
            ServerFlavor::MariaDb
        } else {
            ServerFlavor::MySql
        }
    }
}

/// Why a table map cannot be turned into a layout.
#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    /// Column names are missing from the table map.
    #[error(
        "table {table}: the binlog carries no column names; set binlog_row_metadata=FULL on the source (SET GLOBAL binlog_row_metadata='FULL' and in my.cnf)"
    )]
    MissingColumnNames {
        /// `database.table`.
        table: String,
    },
    /// The table map is malformed or uses a column type we cannot decode.
    #[error("table {table}: {reason}")]
    Invalid {
        /// `database.table`.
        table: String,
        /// What is wrong.
        reason: String,
    },
}

/// Why a row image cannot be decoded.
#[derive(Debug, thiserror::Error)]
#[error("column {column}: {reason}")]
pub struct DecodeError {
    /// Name of the column being decoded.
    pub column: Arc<str>,
    /// What is wrong.
    pub reason: String,
}

/// A table's schema and per-column decoding plan from one TABLE_MAP event.
#[derive(Debug, Clone)]
pub struct TableLayout {
    /// The table's shape at this position.
    pub schema: Arc<TableSchema>,
    /// One decoder per column, in column order.
    decoders: Box<[Decoder]>,
    /// Number of MySQL binary JSON columns.
    json_columns: usize,
}

impl TableLayout {
    /// Builds the layout of a table map, inferring the server flavor where it matters.
    pub fn from_table_map(
        tme: &TableMapEvent<'_>,
        names: ColumnNames,
    ) -> Result<TableLayout, LayoutError> {
        Self::from_table_map_with_flavor(tme, names, ServerFlavor::Unknown)
    }

    /// Builds the layout of a table map written by a server of the given flavor.
    pub fn from_table_map_with_flavor(
        tme: &TableMapEvent<'_>,
        names: ColumnNames,
        flavor: ServerFlavor,
    ) -> Result<TableLayout, LayoutError> {
        let table = format!(
            "{}.{}",
            String::from_utf8_lossy(tme.database_name_raw()),
            String::from_utf8_lossy(tme.table_name_raw())
        );
        build(tme, names, flavor).map_err(|e| match e {
            BuildError::MissingNames => LayoutError::MissingColumnNames { table },
            BuildError::Invalid(reason) => LayoutError::Invalid { table, reason },
        })
    }

    /// Decodes one full row image (null bitmap then values) from the front of `buf`, advancing
    /// it past the row. Every column must be present in the image (`binlog_row_image=FULL`).
    pub fn decode_row(&self, buf: &mut &[u8]) -> Result<Row, DecodeError> {
        let n = self.decoders.len();
        let mut cur = *buf;
        let nulls = decode::take(&mut cur, n.div_ceil(8)).map_err(|reason| DecodeError {
            column: "(null bitmap)".into(),
            reason,
        })?;
        let mut row = Vec::with_capacity(n);
        for (i, decoder) in self.decoders.iter().enumerate() {
            if nulls[i >> 3] >> (i & 7) & 1 != 0 {
                row.push(Value::Null);
                continue;
            }
            match decoder.decode(&mut cur) {
                Ok(v) => row.push(v),
                Err(reason) => {
                    return Err(DecodeError {
                        column: self.schema.columns[i].name.clone(),
                        reason,
                    });
                }
            }
        }
        *buf = cur;
        Ok(row)
    }

    /// Decodes a row image that holds only the columns marked in `present` (the rows event's
    /// column bitmap, `binlog_row_image` MINIMAL or NOBLOB); absent columns are
    /// [`Value::Unchanged`]. For inspection and diagnostics: replication needs full images
    /// ([`Self::decode_row`]).
    pub fn decode_partial_row(
        &self,
        buf: &mut &[u8],
        present: &[bool],
    ) -> Result<Row, DecodeError> {
        let mut cur = *buf;
        let row = self.decode_image(&mut cur, present, |_, decoder, cur| decoder.decode(cur))?;
        *buf = cur;
        Ok(row)
    }

    /// Decodes one row of a PARTIAL_UPDATE_ROWS event (MySQL with
    /// `binlog_row_value_options=PARTIAL_JSON`) from the front of `buf`, advancing it past the
    /// row: the before image, then the after image, which starts with a shared-image header
    /// (packed `value_options`; when its PARTIAL_JSON bit is set, one bit per JSON column of
    /// the table saying whether that column carries diffs instead of a value).
    ///
    /// Returns full rows: each JSON column that carries diffs holds the document after the
    /// update, computed by applying the diffs to the before image's document (see
    /// [`super::jsondiff`]). Columns absent from an image (`before_present` /
    /// `after_present`, the event's column bitmaps) are [`Value::Unchanged`]. A diff that
    /// cannot apply (before value NULL or not logged, path not found, malformed) is a
    /// [`DecodeError`] naming the column and the path.
    pub fn decode_partial_update(
        &self,
        buf: &mut &[u8],
        before_present: &[bool],
        after_present: &[bool],
    ) -> Result<(Row, Row), DecodeError> {
        let mut cur = *buf;
        // The raw documents of the before image's non-NULL JSON columns.
        let mut before_docs: Vec<(usize, &[u8])> = Vec::new();
        let before =
            self.decode_image(&mut cur, before_present, |i, decoder, cur| match decoder {
                Decoder::Json { len_bytes } => {
                    let doc = decode::take_prefixed(cur, *len_bytes)?;
                    before_docs.push((i, doc));
                    decode::json_value(doc)
                }
                other => other.decode(cur),
            })?;
        let partial = self.partial_json_columns(&mut cur)?;
        let after = self.decode_image(&mut cur, after_present, |i, decoder, cur| {
            if !partial.get(i).is_some_and(|&p| p) {
                return decoder.decode(cur);
            }
            // Json_diff_vector: a 4-byte length, then the diffs.
            let diffs = decode::take_prefixed(cur, 4)?;
            let doc = match before_docs.iter().find(|(c, _)| *c == i) {
                Some((_, doc)) => Before::Document(doc),
                None if before_present.get(i).is_some_and(|&p| p) => Before::Null,
                None => Before::NotLogged,
            };
            jsondiff::apply_diffs(doc, diffs)
                .map(Value::Json)
                .map_err(|e| e.to_string())
        })?;
        *buf = cur;
        Ok((before, after))
    }

    /// Reads the shared-image header of a PARTIAL_UPDATE_ROWS after image: which columns
    /// carry JSON diffs (indexed by column; empty when none does).
    fn partial_json_columns(&self, cur: &mut &[u8]) -> Result<Vec<bool>, DecodeError> {
        let header = |reason: String| DecodeError {
            column: "(partial update header)".into(),
            reason,
        };
        let value_options = decode::read_packed_int(cur).map_err(header)?;
        // MySQL's replica refuses any option but PARTIAL_JSON (bit 0).
        if value_options > 1 {
            return Err(header(format!("unknown value_options {value_options:#x}")));
        }
        if value_options == 0 {
            return Ok(Vec::new());
        }
        let bits = decode::take(cur, self.json_columns.div_ceil(8)).map_err(header)?;
        let mut json_i = 0usize;
        Ok(self
            .decoders
            .iter()
            .map(|d| {
                let is_json = matches!(d, Decoder::Json { .. });
                let partial = is_json && bits[json_i >> 3] >> (json_i & 7) & 1 != 0;
                json_i += usize::from(is_json);
                partial
            })
            .collect())
    }

    /// Decodes one row image holding the columns marked in `present` (absent ones become
    /// [`Value::Unchanged`]), each non-NULL value by `value(column index, decoder, buffer)`.
    fn decode_image<'a>(
        &self,
        cur: &mut &'a [u8],
        present: &[bool],
        mut value: impl FnMut(usize, &Decoder, &mut &'a [u8]) -> Result<Value, decode::Reason>,
    ) -> Result<Row, DecodeError> {
        let n = self.decoders.len();
        if present.len() != n {
            return Err(DecodeError {
                column: "(column bitmap)".into(),
                reason: format!("{} bits for {n} columns", present.len()),
            });
        }
        let count = present.iter().filter(|&&p| p).count();
        let nulls = decode::take(cur, count.div_ceil(8)).map_err(|reason| DecodeError {
            column: "(null bitmap)".into(),
            reason,
        })?;
        let mut row = Vec::with_capacity(n);
        let mut image_i = 0;
        for (i, decoder) in self.decoders.iter().enumerate() {
            if !present[i] {
                row.push(Value::Unchanged);
                continue;
            }
            let is_null = nulls[image_i >> 3] >> (image_i & 7) & 1 != 0;
            image_i += 1;
            if is_null {
                row.push(Value::Null);
                continue;
            }
            match value(i, decoder, cur) {
                Ok(v) => row.push(v),
                Err(reason) => {
                    return Err(DecodeError {
                        column: self.schema.columns[i].name.clone(),
                        reason,
                    });
                }
            }
        }
        Ok(row)
    }

    /// Number of columns in a row image.
    pub fn column_count(&self) -> usize {
        self.decoders.len()
    }

    /// Number of MySQL binary JSON columns (sizes the partial-JSON bitmap of
    /// PARTIAL_UPDATE_ROWS events).
    pub fn json_column_count(&self) -> usize {
        self.json_columns
    }
}

/// Internal form of [`LayoutError`] before the table name is attached.
enum BuildError {
    MissingNames,
    Invalid(String),
}

impl From<String> for BuildError {
    fn from(reason: String) -> Self {
        BuildError::Invalid(reason)
    }
}

/// A column's storage kind, from its type code and metadata bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Int { bytes: u8 },
    Float,
    Double,
    Decimal { precision: u8, scale: u8 },
    Bit { width: u8 },
    Date,
    OldTime,
    OldDateTime,
    OldTimestamp,
    Time2 { fsp: u8 },
    DateTime2 { fsp: u8 },
    Timestamp2 { fsp: u8 },
    Year,
    Varchar { max_len: u16 },
    Char { max_len: u16 },
    Blob { pack: u8 },
    Enum { pack: u8 },
    Set { pack: u8 },
    Json { pack: u8 },
    Geometry { pack: u8 },
    Vector { pack: u8 },
}

impl Kind {
    /// Carries a SIGNEDNESS bit: MySQL's `is_numeric_type` (integers, FLOAT, DOUBLE, DECIMAL),
    /// plus YEAR on MariaDB, whose YEAR is an unsigned TINYINT internally.
    fn is_numeric(self, flavor: ServerFlavor) -> bool {
        match self {
            Kind::Int { .. } | Kind::Float | Kind::Double | Kind::Decimal { .. } => true,
            Kind::Year => flavor == ServerFlavor::MariaDb,
            _ => false,
        }
    }

    /// Takes an entry of the column charset metadata. MySQL's VECTOR is a BLOB underneath and
    /// takes one (the binary charset).
    fn is_character(self, flavor: ServerFlavor) -> bool {
        match self {
            Kind::Varchar { .. } | Kind::Char { .. } | Kind::Blob { .. } | Kind::Vector { .. } => {
                true
            }
            Kind::Geometry { .. } => flavor == ServerFlavor::MariaDb,
            _ => false,
        }
    }
}

/// Type code names for error messages.
fn type_name(code: u8) -> &'static str {
    match code {
        0 => "DECIMAL (pre-5.0)",
        6 => "NULL",
        15 => "VARCHAR",
        20 => "TYPED_ARRAY",
        243 => "UNKNOWN",
        253 => "VAR_STRING",
        _ => "unsupported",
    }
}

/// The storage kind of column `i` from its type code and metadata.
fn column_kind(code: u8, meta: &[u8]) -> Result<Kind, String> {
    let m = |k: usize| {
        meta.get(k)
            .copied()
            .ok_or_else(|| format!("type code {code} has {} metadata bytes", meta.len()))
    };
    let pack = |p: u8, what: &str| {
        if (1..=4).contains(&p) {
            Ok(p)
        } else {
            Err(format!("{what} with length-prefix size {p}"))
        }
    };
    let fsp = |f: u8| {
        if f <= 6 {
            Ok(f)
        } else {
            Err(format!("fractional precision {f} > 6"))
        }
    };
    Ok(match code {
        1 => Kind::Int { bytes: 1 },
        2 => Kind::Int { bytes: 2 },
        9 => Kind::Int { bytes: 3 },
        3 => Kind::Int { bytes: 4 },
        8 => Kind::Int { bytes: 8 },
        4 => Kind::Float,
        5 => Kind::Double,
        246 => Kind::Decimal {
            precision: m(0)?,
            scale: m(1)?,
        },
        16 => {
            let width = u16::from(m(1)?) * 8 + u16::from(m(0)?);
            match u8::try_from(width) {
                Ok(width @ 1..=64) => Kind::Bit { width },
                _ => return Err(format!("BIT({width}) is out of range")),
            }
        }
        10 | 14 => Kind::Date,
        11 => Kind::OldTime,
        12 => Kind::OldDateTime,
        7 => Kind::OldTimestamp,
        19 => Kind::Time2 { fsp: fsp(m(0)?)? },
        18 => Kind::DateTime2 { fsp: fsp(m(0)?)? },
        17 => Kind::Timestamp2 { fsp: fsp(m(0)?)? },
        13 => Kind::Year,
        15 => Kind::Varchar {
            max_len: u16::from_le_bytes([m(0)?, m(1)?]),
        },
        249..=252 => Kind::Blob {
            pack: pack(m(0)?, "BLOB")?,
        },
        245 => Kind::Json {
            pack: pack(m(0)?, "JSON")?,
        },
        255 => Kind::Geometry {
            pack: pack(m(0)?, "GEOMETRY")?,
        },
        242 => Kind::Vector {
            pack: pack(m(0)?, "VECTOR")?,
        },
        247 => Kind::Enum { pack: m(1)? },
        248 => Kind::Set { pack: m(1)? },
        254 => {
            let (b0, b1) = (m(0)?, m(1)?);
            // The real type is in byte 0; CHAR lengths above 255 keep two extra bits in it.
            let (real, len) = if b0 == 0 {
                (254, u16::from_le_bytes([b0, b1]))
            } else if b0 & 0x30 != 0x30 {
                (
                    b0 | 0x30,
                    u16::from(b1) | (u16::from((b0 & 0x30) ^ 0x30) << 4),
                )
            } else {
                (b0, u16::from(b1))
            };
            match real {
                247 => Kind::Enum { pack: b1 },
                248 => Kind::Set { pack: b1 },
                254 => Kind::Char { max_len: len },
                other => return Err(format!("STRING column with real type code {other}")),
            }
        }
        other => {
            return Err(format!(
                "type code {other} ({}) cannot be decoded",
                type_name(other)
            ));
        }
    })
}

/// The optional metadata fields a layout uses.
#[derive(Default)]
struct OptionalMeta {
    signedness: Option<Vec<bool>>,
    charsets: CharsetMeta,
    enum_set_charsets: CharsetMeta,
    names: Option<Vec<Vec<u8>>>,
    enum_labels: Option<Vec<Vec<Vec<u8>>>>,
    set_labels: Option<Vec<Vec<Vec<u8>>>>,
    primary_key: Vec<u64>,
    has_visibility: bool,
    /// Declared dimensions of each VECTOR column, in column order.
    vector_dimensions: Option<Vec<u64>>,
    error: Option<String>,
}

/// A charset field: a default with exceptions, or one entry per column.
#[derive(Default)]
struct CharsetMeta {
    default: Option<(u16, Vec<(u64, u16)>)>,
    per_column: Option<Vec<u16>>,
}

impl CharsetMeta {
    fn is_present(&self) -> bool {
        self.default.is_some() || self.per_column.is_some()
    }

    /// One collation id per column of the `count` columns this field covers.
    fn resolve(&self, count: usize) -> Result<Vec<u16>, String> {
        if let Some(per_column) = &self.per_column {
            if per_column.len() != count {
                return Err(format!(
                    "{} column charsets for {count} character columns",
                    per_column.len()
                ));
            }
            return Ok(per_column.clone());
        }
        let Some((default, exceptions)) = &self.default else {
            return Err("no charset metadata".to_owned());
        };
        let mut out = vec![*default; count];
        for &(index, id) in exceptions {
            let slot = usize::try_from(index)
                .ok()
                .and_then(|i| out.get_mut(i))
                .ok_or_else(|| {
                    format!("charset exception for character column {index} of {count}")
                })?;
            *slot = id;
        }
        Ok(out)
    }
}

/// Reads every optional metadata field, keeping the first error instead of stopping.
fn read_optional_meta(tme: &TableMapEvent<'_>) -> OptionalMeta {
    let mut meta = OptionalMeta::default();
    let fail = |meta: &mut OptionalMeta, e: std::io::Error| {
        meta.error.get_or_insert_with(|| e.to_string());
    };
    for field in tme.iter_optional_meta() {
        let field = match field {
            Ok(f) => f,
            Err(e) => {
                fail(&mut meta, e);
                continue;
            }
        };
        let result: std::io::Result<()> = (|| {
            match field {
                OptionalMetadataField::Signedness(bits) => {
                    meta.signedness = Some((0..bits.len()).map(|i| bits[i]).collect());
                }
                OptionalMetadataField::DefaultCharset(d) => {
                    let ex = d
                        .iter_non_default()
                        .map(|x| x.map(|x| (x.column_index(), x.charset())))
                        .collect::<std::io::Result<_>>()?;
                    meta.charsets.default = Some((d.default_charset(), ex));
                }
                OptionalMetadataField::ColumnCharset(c) => {
                    meta.charsets.per_column = Some(c.iter_charsets().collect::<Result<_, _>>()?);
                }
                OptionalMetadataField::EnumAndSetDefaultCharset(d) => {
                    let ex = d
                        .iter_non_default()
                        .map(|x| x.map(|x| (x.column_index(), x.charset())))
                        .collect::<std::io::Result<_>>()?;
                    meta.enum_set_charsets.default = Some((d.default_charset(), ex));
                }
                OptionalMetadataField::EnumAndSetColumnCharset(c) => {
                    meta.enum_set_charsets.per_column =
                        Some(c.iter_charsets().collect::<Result<_, _>>()?);
                }
                OptionalMetadataField::ColumnName(names) => {
                    meta.names = Some(
                        names
                            .iter_names()
                            .map(|n| n.map(|n| n.name_raw().to_vec()))
                            .collect::<std::io::Result<_>>()?,
                    );
                }
                OptionalMetadataField::EnumStrValue(v) => {
                    let mut lists = Vec::new();
                    for l in v.iter_values() {
                        let l = l?;
                        lists.push(l.values().iter().map(|x| x.value_raw().to_vec()).collect());
                    }
                    meta.enum_labels = Some(lists);
                }
                OptionalMetadataField::SetStrValue(v) => {
                    let mut lists = Vec::new();
                    for l in v.iter_values() {
                        let l = l?;
                        lists.push(l.values().iter().map(|x| x.value_raw().to_vec()).collect());
                    }
                    meta.set_labels = Some(lists);
                }
                OptionalMetadataField::SimplePrimaryKey(pk) => {
                    meta.primary_key = pk.iter_indexes().collect::<std::io::Result<_>>()?;
                }
                OptionalMetadataField::PrimaryKeyWithPrefix(pk) => {
                    meta.primary_key = pk
                        .iter_keys()
                        .map(|k| k.map(|k| k.column_index()))
                        .collect::<std::io::Result<_>>()?;
                }
                OptionalMetadataField::ColumnVisibility(_) => meta.has_visibility = true,
                OptionalMetadataField::Dimensionality(d) => {
                    meta.vector_dimensions =
                        Some(d.iter_dimensionalities().collect::<std::io::Result<_>>()?);
                }
                OptionalMetadataField::GeometryType(_) => {}
            }
            Ok(())
        })();
        if let Err(e) = result {
            fail(&mut meta, e);
        }
    }
    meta
}

/// The collation id of every character column (`None` for other columns).
fn column_collations(
    kinds: &[Kind],
    meta: &CharsetMeta,
    flavor: ServerFlavor,
    has_visibility: bool,
) -> Result<Vec<Option<u16>>, String> {
    let assign = |flavor: ServerFlavor| -> Result<Vec<Option<u16>>, String> {
        let count = kinds.iter().filter(|k| k.is_character(flavor)).count();
        let mut ids = meta.resolve(count)?.into_iter();
        let ids: Vec<Option<u16>> = kinds
            .iter()
            .map(|k| {
                if k.is_character(flavor) {
                    ids.next()
                } else {
                    None
                }
            })
            .collect();
        // MariaDB gives GEOMETRY columns the binary charset.
        let geometry_binary = kinds
            .iter()
            .zip(&ids)
            .all(|(k, id)| !matches!(k, Kind::Geometry { .. }) || *id == Some(63));
        if flavor == ServerFlavor::MariaDb && !geometry_binary {
            return Err("GEOMETRY column with a text charset".to_owned());
        }
        Ok(ids)
    };
    let has_geometry = kinds.iter().any(|k| matches!(k, Kind::Geometry { .. }));
    match flavor {
        ServerFlavor::MySql | ServerFlavor::MariaDb => return assign(flavor),
        // Only GEOMETRY columns make the flavors differ; COLUMN_VISIBILITY is MySQL-only.
        _ if !has_geometry => return assign(ServerFlavor::MySql),
        _ if has_visibility => return assign(ServerFlavor::MySql),
        _ => {}
    }
    read_either_flavor(
        kinds,
        assign,
        |k| matches!(k, Kind::Geometry { .. }),
        "with GEOMETRY columns the charset metadata",
    )
}

/// The flavor that the metadata itself proves, when only one reading of it is consistent:
/// COLUMN_VISIBILITY is MySQL-only; charsets with GEOMETRY columns and signedness with YEAR
/// columns read consistently under one flavor only, when they differ at all.
fn infer_flavor(kinds: &[Kind], meta: &OptionalMeta) -> ServerFlavor {
    if meta.has_visibility {
        return ServerFlavor::MySql;
    }
    let pick = |my: bool, ma: bool| match (my, ma) {
        (true, false) => Some(ServerFlavor::MySql),
        (false, true) => Some(ServerFlavor::MariaDb),
        _ => None,
    };
    if kinds.iter().any(|k| matches!(k, Kind::Geometry { .. })) && meta.charsets.is_present() {
        let my = column_collations(kinds, &meta.charsets, ServerFlavor::MySql, false).is_ok();
        let ma = column_collations(kinds, &meta.charsets, ServerFlavor::MariaDb, false).is_ok();
        if let Some(f) = pick(my, ma) {
            return f;
        }
    }
    if let Some(bits) = &meta.signedness {
        let my = column_unsigned(kinds, bits, ServerFlavor::MySql, false).is_ok();
        let ma = column_unsigned(kinds, bits, ServerFlavor::MariaDb, false).is_ok();
        if let Some(f) = pick(my, ma) {
            return f;
        }
    }
    ServerFlavor::Unknown
}

/// The UNSIGNED flag of every column from the SIGNEDNESS bits (one per numeric column).
fn column_unsigned(
    kinds: &[Kind],
    bits: &[bool],
    flavor: ServerFlavor,
    has_visibility: bool,
) -> Result<Vec<bool>, String> {
    let assign = |flavor: ServerFlavor| -> Result<Vec<bool>, String> {
        let count = kinds.iter().filter(|k| k.is_numeric(flavor)).count();
        if bits.len() < count {
            return Err(format!(
                "{} signedness flags for {count} numeric columns",
                bits.len()
            ));
        }
        let mut next = bits.iter();
        let mut flags = Vec::with_capacity(kinds.len());
        for k in kinds {
            let unsigned = k.is_numeric(flavor) && next.next().is_some_and(|&b| b);
            // MariaDB's YEAR is always unsigned: a zero bit there rules MariaDB out.
            if *k == Kind::Year && flavor == ServerFlavor::MariaDb && !unsigned {
                return Err("YEAR column flagged signed".to_owned());
            }
            flags.push(unsigned);
        }
        Ok(flags)
    };
    // The flavors differ only when a YEAR column precedes another numeric column.
    let year_matters = kinds
        .iter()
        .skip_while(|k| **k != Kind::Year)
        .any(|k| k.is_numeric(ServerFlavor::MySql));
    match flavor {
        ServerFlavor::MySql | ServerFlavor::MariaDb => return assign(flavor),
        _ if !year_matters || has_visibility => return assign(ServerFlavor::MySql),
        _ => {}
    }
    read_either_flavor(
        kinds,
        assign,
        |k| *k == Kind::Year,
        "with YEAR columns the signedness metadata",
    )
}

/// With the flavor unknown, reads per-column metadata both ways and keeps the reading that is
/// consistent, or the one both agree on outside the columns (`differs`) whose reading depends on
/// the flavor. Refuses when the two readings conflict: nothing is guessed.
fn read_either_flavor<T: PartialEq>(
    kinds: &[Kind],
    assign: impl Fn(ServerFlavor) -> Result<Vec<T>, String>,
    differs: impl Fn(&Kind) -> bool,
    what: &str,
) -> Result<Vec<T>, String> {
    match (assign(ServerFlavor::MySql), assign(ServerFlavor::MariaDb)) {
        (Ok(my), Err(_)) => Ok(my),
        (Err(_), Ok(ma)) => Ok(ma),
        (Err(e), Err(_)) => Err(e),
        (Ok(my), Ok(ma)) => {
            let agree = kinds
                .iter()
                .zip(my.iter().zip(&ma))
                .all(|(k, (a, b))| differs(k) || a == b);
            if agree {
                Ok(my)
            } else {
                Err(format!(
                    "{what} reads differently for MySQL and MariaDB; build the layout with an explicit ServerFlavor"
                ))
            }
        }
    }
}

/// The type of a character column (CHAR, VARCHAR, TEXT, BLOB...) stored in `charset`: bytes
/// for the `binary` charset, else text in that charset. Shared with [`super::copy`], which
/// builds the same schema from the catalog.
pub(crate) fn character_column_type(charset: Charset, max_bytes: Option<u64>) -> ColumnType {
    if charset.is_binary() {
        ColumnType::Binary { max_bytes }
    } else {
        ColumnType::Text {
            max_bytes,
            charset: Arc::from(charset.name()),
        }
    }
}

/// The declared size in bytes of a TEXT or BLOB whose length prefix is `pack` bytes (TINY 1,
/// plain 2, MEDIUM 3, LONG 4): the largest length the prefix holds.
pub(crate) fn blob_max_bytes(pack: u8) -> u64 {
    (1u64 << (8 * u32::from(pack))) - 1
}

/// The charset of a collation id, or an error naming the column.
fn charset_of(id: u16, column: &str) -> Result<Charset, String> {
    charset_name_of_collation(id)
        .map(Charset::from_name)
        .ok_or_else(|| format!("column {column}: unknown collation id {id}"))
}

/// Labels decoded from their charset.
fn decode_labels(raw: &[Vec<u8>], charset: Charset, column: &str) -> Result<Arc<[String]>, String> {
    raw.iter()
        .map(|l| {
            charset
                .decode(l)
                .map_err(|e| format!("column {column}: label: {e}"))
        })
        .collect()
}

fn build(
    tme: &TableMapEvent<'_>,
    names_policy: ColumnNames,
    flavor: ServerFlavor,
) -> Result<TableLayout, BuildError> {
    let n = usize::try_from(tme.columns_count())
        .ok()
        .filter(|&n| n <= 65_536)
        .ok_or_else(|| format!("{} columns", tme.columns_count()))?;
    let meta = read_optional_meta(tme);
    let unreadable = |what: &str| -> BuildError {
        match &meta.error {
            Some(e) => BuildError::Invalid(format!("optional metadata unreadable ({e}); {what}")),
            None => BuildError::Invalid(what.to_owned()),
        }
    };

    let names: Vec<Arc<str>> = match &meta.names {
        Some(names) if names.len() == n => names
            .iter()
            .map(|raw| {
                std::str::from_utf8(raw)
                    .map(Arc::from)
                    .map_err(|_| format!("column name {raw:?} is not UTF-8"))
            })
            .collect::<Result<_, _>>()?,
        Some(names) => {
            return Err(format!("{} column names for {n} columns", names.len()).into());
        }
        None if meta.error.is_some() => return Err(unreadable("no column names")),
        None if names_policy == ColumnNames::Required => return Err(BuildError::MissingNames),
        None => (1..=n).map(|i| Arc::from(format!("@{i}"))).collect(),
    };

    let mut kinds = Vec::with_capacity(n);
    for (i, name) in names.iter().enumerate() {
        let code = match tme.get_raw_column_type(i) {
            Ok(Some(t)) => t as u8,
            Ok(None) => return Err(format!("column {name}: no type").into()),
            Err(e) => return Err(format!("column {name}: type code {} is unknown", e.0).into()),
        };
        let raw_meta = tme
            .get_column_metadata(i)
            .ok_or_else(|| format!("column {name}: metadata is missing or truncated"))?;
        kinds.push(column_kind(code, raw_meta).map_err(|e| format!("column {name}: {e}"))?);
    }

    let flavor = match flavor {
        ServerFlavor::Unknown => infer_flavor(&kinds, &meta),
        known => known,
    };
    let unsigned_flags = match &meta.signedness {
        Some(bits) => column_unsigned(&kinds, bits, flavor, meta.has_visibility)
            .map_err(BuildError::Invalid)?,
        None if !kinds.iter().any(|k| k.is_numeric(ServerFlavor::MySql)) => vec![false; n],
        None if kinds.contains(&Kind::Year) && meta.error.is_some() => {
            return Err(unreadable(
                "no signedness flags: mysql_common counts YEAR columns as numeric (as MariaDB \
                 does, MySQL does not), so this MySQL table's SIGNEDNESS field cannot be read",
            ));
        }
        // Offline inspection of pre-metadata binlogs: read like mysqlbinlog does, as signed.
        None if names_policy == ColumnNames::Positional => vec![false; n],
        None => return Err(unreadable("no signedness flags for the numeric columns")),
    };
    let needs_charset = kinds.iter().any(|k| k.is_character(ServerFlavor::MySql));
    let collations = if names_policy == ColumnNames::Positional && !meta.charsets.is_present() {
        // Offline inspection of pre-metadata binlogs: text of unknown charset shown as bytes
        // (63 is the binary collation), never guessed.
        kinds
            .iter()
            .map(|k| k.is_character(flavor).then_some(63))
            .collect()
    } else if needs_charset || meta.charsets.is_present() {
        column_collations(&kinds, &meta.charsets, flavor, meta.has_visibility)
            .map_err(|e| unreadable(&e))?
    } else {
        vec![None; n]
    };
    let enum_set_count = kinds
        .iter()
        .filter(|k| matches!(k, Kind::Enum { .. } | Kind::Set { .. }))
        .count();
    let enum_set_collations = if enum_set_count > 0 {
        if !meta.enum_set_charsets.is_present() {
            return Err(unreadable(
                "ENUM/SET columns without charset metadata; set binlog_row_metadata=FULL",
            ));
        }
        meta.enum_set_charsets
            .resolve(enum_set_count)
            .map_err(|e| unreadable(&e))?
    } else {
        Vec::new()
    };

    let mut columns = Vec::with_capacity(n);
    let mut decoders = Vec::with_capacity(n);
    let null_bits = tme.null_bitmask();
    let (mut enum_set_i, mut enum_i, mut set_i, mut vector_i) = (0, 0, 0, 0);
    for (i, (&kind, name)) in kinds.iter().zip(&names).enumerate() {
        let unsigned = unsigned_flags[i];
        let text_charset = |i: usize| -> Result<Charset, BuildError> {
            match collations[i] {
                Some(id) => Ok(charset_of(id, name)?),
                None => Err(unreadable(&format!("column {name}: no charset metadata"))),
            }
        };
        let text_or_binary = |charset: Charset, len_bytes: u8, max: u64, pad_to: u32| {
            let decoder = if charset.is_binary() {
                Decoder::Bytes { len_bytes, pad_to }
            } else {
                Decoder::Text { len_bytes, charset }
            };
            (character_column_type(charset, Some(max)), decoder)
        };
        let (ty, decoder) = match kind {
            Kind::Int { bytes } => (
                ColumnType::Int {
                    bits: bytes * 8,
                    unsigned,
                },
                Decoder::Int { bytes, unsigned },
            ),
            Kind::Float => (ColumnType::Float, Decoder::Float),
            Kind::Double => (ColumnType::Double, Decoder::Double),
            Kind::Decimal { precision, scale } => {
                let plan = DecimalPlan::new(precision, scale)
                    .map_err(|e| format!("column {name}: {e}"))?;
                (
                    ColumnType::Decimal { precision, scale },
                    Decoder::Decimal(plan),
                )
            }
            Kind::Bit { width } => (ColumnType::Bit { width }, Decoder::Bit { width }),
            Kind::Date => (ColumnType::Date, Decoder::Date),
            Kind::OldTime => (ColumnType::Time { fsp: 0 }, Decoder::OldTime),
            Kind::OldDateTime => (ColumnType::DateTime { fsp: 0 }, Decoder::OldDateTime),
            Kind::OldTimestamp => (ColumnType::Timestamp { fsp: 0 }, Decoder::OldTimestamp),
            Kind::Time2 { fsp } => (ColumnType::Time { fsp }, Decoder::Time2 { fsp }),
            Kind::DateTime2 { fsp } => (ColumnType::DateTime { fsp }, Decoder::DateTime2 { fsp }),
            Kind::Timestamp2 { fsp } => {
                (ColumnType::Timestamp { fsp }, Decoder::Timestamp2 { fsp })
            }
            Kind::Year => (ColumnType::Year, Decoder::Year),
            Kind::Varchar { max_len } => {
                let len_bytes = if max_len < 256 { 1 } else { 2 };
                text_or_binary(text_charset(i)?, len_bytes, u64::from(max_len), 0)
            }
            Kind::Char { max_len } => {
                let len_bytes = if max_len < 256 { 1 } else { 2 };
                let charset = text_charset(i)?;
                text_or_binary(charset, len_bytes, u64::from(max_len), u32::from(max_len))
            }
            Kind::Blob { pack } => text_or_binary(text_charset(i)?, pack, blob_max_bytes(pack), 0),
            Kind::Json { pack } => (ColumnType::Json, Decoder::Json { len_bytes: pack }),
            Kind::Geometry { pack } => {
                (ColumnType::Geometry, Decoder::Geometry { len_bytes: pack })
            }
            Kind::Vector { pack } => {
                // Without FULL metadata the log does not say the dimensions; values still do.
                let declared = meta.vector_dimensions.as_ref().map(|d| d.get(vector_i));
                vector_i += 1;
                let dimensions = match declared {
                    None => None,
                    Some(Some(&n)) => Some(
                        u32::try_from(n)
                            .map_err(|_| format!("column {name}: VECTOR of {n} dimensions"))?,
                    ),
                    Some(None) => {
                        return Err(unreadable(&format!(
                            "column {name}: no dimensions for this VECTOR column"
                        )));
                    }
                };
                (
                    ColumnType::Vector { dimensions },
                    Decoder::Vector { len_bytes: pack },
                )
            }
            Kind::Enum { pack } | Kind::Set { pack } => {
                let is_enum = matches!(kind, Kind::Enum { .. });
                let charset = charset_of(enum_set_collations[enum_set_i], name)?;
                enum_set_i += 1;
                let lists = if is_enum {
                    &meta.enum_labels
                } else {
                    &meta.set_labels
                };
                let at = if is_enum { &mut enum_i } else { &mut set_i };
                let raw = lists.as_ref().and_then(|l| l.get(*at)).ok_or_else(|| {
                    unreadable(&format!(
                        "column {name}: ENUM/SET labels are missing; set binlog_row_metadata=FULL"
                    ))
                })?;
                *at += 1;
                let labels = decode_labels(raw, charset, name)?;
                if is_enum {
                    if !matches!(pack, 1 | 2) {
                        return Err(format!("column {name}: ENUM of {pack} bytes").into());
                    }
                    (
                        ColumnType::Enum {
                            labels: labels.clone(),
                        },
                        Decoder::Enum {
                            bytes: pack,
                            labels,
                        },
                    )
                } else {
                    if !(1..=8).contains(&pack) || labels.len() > 64 {
                        return Err(format!(
                            "column {name}: SET of {pack} bytes with {} labels",
                            labels.len()
                        )
                        .into());
                    }
                    (
                        ColumnType::Set {
                            labels: labels.clone(),
                        },
                        Decoder::Set {
                            bytes: pack,
                            labels,
                        },
                    )
                }
            }
        };
        columns.push(Column {
            name: name.clone(),
            ty,
            nullable: null_bits.get(i).is_some_and(|b| *b),
        });
        decoders.push(decoder);
    }

    let primary_key = meta
        .primary_key
        .iter()
        .map(|&k| {
            usize::try_from(k)
                .ok()
                .filter(|&k| k < n)
                .ok_or_else(|| format!("primary key column index {k} of {n} columns"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let json_columns = kinds
        .iter()
        .filter(|k| matches!(k, Kind::Json { .. }))
        .count();
    let schema = TableSchema {
        id: TableId::new(
            String::from_utf8_lossy(tme.database_name_raw()).as_ref(),
            String::from_utf8_lossy(tme.table_name_raw()).as_ref(),
        ),
        columns,
        primary_key,
    };
    Ok(TableLayout {
        schema: Arc::new(schema),
        decoders: decoders.into_boxed_slice(),
        json_columns,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_codes_and_metadata_become_kinds() {
        assert_eq!(column_kind(3, &[]).unwrap(), Kind::Int { bytes: 4 });
        assert_eq!(column_kind(9, &[]).unwrap(), Kind::Int { bytes: 3 });
        assert_eq!(
            column_kind(246, &[65, 30]).unwrap(),
            Kind::Decimal {
                precision: 65,
                scale: 30
            }
        );
        assert_eq!(column_kind(16, &[2, 1]).unwrap(), Kind::Bit { width: 10 });
        assert!(column_kind(16, &[0, 9]).is_err());
        assert_eq!(column_kind(19, &[6]).unwrap(), Kind::Time2 { fsp: 6 });
        assert!(column_kind(18, &[7]).is_err());
        assert_eq!(
            column_kind(15, &[0x2c, 0x01]).unwrap(),
            Kind::Varchar { max_len: 300 }
        );
        assert_eq!(column_kind(252, &[3]).unwrap(), Kind::Blob { pack: 3 });
        assert!(column_kind(252, &[5]).is_err());
        // CHAR(10) and a long CHAR(255) utf8mb4 (1020 bytes keeps two bits in byte 0).
        assert_eq!(
            column_kind(254, &[0xfe, 10]).unwrap(),
            Kind::Char { max_len: 10 }
        );
        assert_eq!(
            column_kind(254, &[0xce, 0xfc]).unwrap(),
            Kind::Char { max_len: 1020 }
        );
        assert_eq!(
            column_kind(254, &[0xf7, 1]).unwrap(),
            Kind::Enum { pack: 1 }
        );
        assert_eq!(column_kind(254, &[0xf8, 8]).unwrap(), Kind::Set { pack: 8 });
        assert!(column_kind(254, &[0xf5, 1]).is_err());
        assert_eq!(column_kind(10, &[]).unwrap(), Kind::Date);
        assert_eq!(column_kind(13, &[]).unwrap(), Kind::Year);
        assert_eq!(column_kind(242, &[4]).unwrap(), Kind::Vector { pack: 4 });
        assert!(column_kind(242, &[0]).is_err());
        assert!(column_kind(3 + 240, &[]).is_err());
    }

    #[test]
    fn unsupported_types_are_named() {
        for (code, name) in [(20, "TYPED_ARRAY"), (0, "DECIMAL"), (253, "VAR_STRING")] {
            let e = column_kind(code, &[1, 1]).unwrap_err();
            assert!(e.contains(&code.to_string()) && e.contains(name), "{e}");
        }
        assert!(
            column_kind(246, &[]).is_err(),
            "missing metadata is an error"
        );
    }

    #[test]
    fn signedness_counts_year_only_on_mariadb() {
        let kinds = [Kind::Year, Kind::Int { bytes: 1 }, Kind::Int { bytes: 4 }];
        // MariaDB wrote [YEAR=1, tinyint signed, int unsigned].
        let bits = [true, false, true];
        let ma = column_unsigned(&kinds, &bits, ServerFlavor::MariaDb, false).unwrap();
        assert_eq!(ma, [true, false, true]);
        let my = column_unsigned(&kinds, &bits, ServerFlavor::MySql, false).unwrap();
        assert_eq!(my, [false, true, false]);
        // Unknown: both readings are consistent and disagree, so it is refused.
        assert!(column_unsigned(&kinds, &bits, ServerFlavor::Unknown, false).is_err());
        // COLUMN_VISIBILITY proves MySQL.
        assert_eq!(
            column_unsigned(&kinds, &bits, ServerFlavor::Unknown, true).unwrap(),
            my
        );
        // A zero bit where MariaDB's always-unsigned YEAR would be rules MariaDB out.
        let bits = [false, true, false];
        assert_eq!(
            column_unsigned(&kinds, &bits, ServerFlavor::Unknown, false).unwrap(),
            [false, false, true]
        );
        // YEAR last: both readings agree.
        let kinds = [Kind::Int { bytes: 8 }, Kind::Year];
        assert_eq!(
            column_unsigned(&kinds, &[true, true], ServerFlavor::Unknown, false).unwrap(),
            [true, false]
        );
    }

    #[test]
    fn charsets_count_geometry_only_on_mariadb() {
        let kinds = [
            Kind::Geometry { pack: 4 },
            Kind::Varchar { max_len: 20 },
            Kind::Int { bytes: 4 },
            Kind::Blob { pack: 2 },
        ];
        let per_column = CharsetMeta {
            default: None,
            per_column: Some(vec![63, 8, 45]),
        };
        let ma = column_collations(&kinds, &per_column, ServerFlavor::Unknown, false).unwrap();
        assert_eq!(ma, [Some(63), Some(8), None, Some(45)]);
        let mysql_meta = CharsetMeta {
            default: None,
            per_column: Some(vec![8, 45]),
        };
        let my = column_collations(&kinds, &mysql_meta, ServerFlavor::Unknown, false).unwrap();
        assert_eq!(my, [None, Some(8), None, Some(45)]);
        // Default utf8mb4 with MariaDB's binary exception for the GEOMETRY column (index 0):
        // under MySQL it would make the VARCHAR binary, so it is ambiguous without a flavor.
        let default = CharsetMeta {
            default: Some((45, vec![(0, 63)])),
            per_column: None,
        };
        assert!(column_collations(&kinds, &default, ServerFlavor::Unknown, false).is_err());
        assert_eq!(
            column_collations(&kinds, &default, ServerFlavor::MariaDb, false).unwrap(),
            [Some(63), Some(45), None, Some(45)]
        );
        assert!(CharsetMeta::default().resolve(1).is_err());
        let bad = CharsetMeta {
            default: Some((45, vec![(7, 63)])),
            per_column: None,
        };
        assert!(bad.resolve(2).is_err());
    }

    #[test]
    fn flavor_from_server_version() {
        assert_eq!(
            ServerFlavor::from_server_version("10.11.6-MariaDB-0+deb12u1-log"),
            ServerFlavor::MariaDb
        );
        assert_eq!(
            ServerFlavor::from_server_version("8.0.36"),
            ServerFlavor::MySql
        );
    }
}
