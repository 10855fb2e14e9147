//! Reading a table's existing rows over a normal SQL connection: the MySQL/MariaDB half of a
//! snapshot (the orchestration, `snapshot/`, builds on it and is still to come).
//!
//! Guarantee: for the same table and rows, [`table_schema`] returns a [`TableSchema`] equal
//! (`==`) to the one the binlog reader emits with `binlog_row_metadata=FULL`, and
//! [`read_chunk`] returns the same [`Value`]s the binlog decoder produces for the rows'
//! images, so the warehouse cannot tell a copied row from a streamed one. Both mirror
//! [`super::layout`] field by field:
//! - the schema is read from `information_schema` (COLUMNS, STATISTICS); charset names are
//!   spelled as collation ids name them ([`super::charset::charset_named`]), `max_bytes` is the
//!   declared size in bytes (`CHARACTER_OCTET_LENGTH`, or the TEXT/BLOB family's fixed size),
//!   ENUM/SET labels come from `COLUMN_TYPE`, and a table without a primary key uses its first
//!   UNIQUE index on NOT NULL whole columns, as the server itself does for the table map;
//! - rows are read with the binary protocol in UTC with `character_set_results = NULL`, so text
//!   arrives as the stored bytes and is converted by the same
//!   [`Charset`](super::charset::Charset) code as the binlog; ENUM and SET are read as their
//!   index and bitmask (`CAST(col + 0 AS UNSIGNED)`) and labelled from the schema, as the
//!   binlog decoder does; binary columns (MariaDB's INET6, UUID and INET4 among them) are
//!   read as their bytes (`CAST(col AS BINARY)`); FLOAT and DOUBLE arrive as IEEE values,
//!   DECIMAL as its digits, zero dates as zero parts.
//!
//! Not covered by a live test (no MySQL 8 server here): MySQL's JSON, whose text SELECT prints
//! is compacted to the binary JSON decoder's form (`compact_json`: equal as long as MySQL
//! prints numbers and escapes as that decoder does), and VECTOR.
//!
//! Chunks ([`key_ranges`]) are half-open primary-key ranges: the first is unbounded below and
//! the last unbounded above, so rows inserted later at either end still fall in a chunk, and
//! together they cover the key space exactly once. A single integer key whose values are dense
//! (MAX - MIN under 4 × the row count: InnoDB's estimate, or `COUNT(*)` when the estimate
//! calls it sparse) is split arithmetically between its MIN and MAX; any other key is split at every `chunk_rows`-th key (a keyset
//! scan: one pass over the table in key order, `chunk_rows` keys per boundary query); a table
//! without a key, or whose key does not compare as bound parameters (ENUM, SET, BIT, floats,
//! JSON, spatial), is one chunk.
//!
//! These functions set session variables on the connection they are given (`time_zone`,
//! `character_set_results`): give them a connection of their own.

use std::fmt;
use std::ops::ControlFlow;
use std::sync::Arc;

use mysql_async::Value as MyValue;
use mysql_async::prelude::Queryable;
use serde::{Deserialize, Serialize};

use super::charset::{Charset, charset_named};
use super::decode::{bit_value, enum_value, geometry_value, set_value, vector_value};
use super::error::server_error_kind;
use super::layout::{blob_max_bytes, character_column_type};
use crate::error::ErrorKind;
use crate::event::{
    Column, ColumnType, Date, DateTime, Row, TableId, TableSchema, Value, civil_from_days,
};

/// A half-open range of primary-key tuples: `lower <= key < upper`, each side unbounded when
/// `None`.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyRange {
    /// Inclusive lower bound, one value per key column; `None` is unbounded below.
    pub lower: Option<Vec<Value>>,
    /// Exclusive upper bound, one value per key column; `None` is unbounded above.
    pub upper: Option<Vec<Value>>,
}

impl KeyRange {
    /// The range holding every row of a table (also of a table without a key).
    pub fn all() -> KeyRange {
        KeyRange {
            lower: None,
            upper: None,
        }
    }
}

/// One key value of a stored range bound: the value kinds [`key_ranges`] splits on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "value", rename_all = "snake_case")]
enum StoredKey {
    Int(i64),
    UInt(u64),
    Decimal(String),
    Text(String),
    /// Hex digits.
    Bytes(String),
    /// Year, month, day.
    Date(i32, u8, u8),
    /// Year, month, day, hour, minute, second, microseconds.
    DateTime(i32, u8, u8, u8, u8, u8, u32),
    Timestamp(i64),
    Time(i64),
    Year(u16),
}

impl StoredKey {
    fn of(value: &Value) -> Option<StoredKey> {
        Some(match value {
            Value::Int(v) => StoredKey::Int(*v),
            Value::UInt(v) => StoredKey::UInt(*v),
            Value::Decimal(v) => StoredKey::Decimal(v.clone()),
            Value::Text(v) => StoredKey::Text(v.clone()),
            Value::Bytes(v) => StoredKey::Bytes(crate::event::to_hex(v)),
            Value::Date(d) => StoredKey::Date(d.year, d.month, d.day),
            Value::DateTime(t) => {
                let d = t.date;
                StoredKey::DateTime(d.year, d.month, d.day, t.hour, t.minute, t.second, t.micros)
            }
            Value::Timestamp(v) => StoredKey::Timestamp(*v),
            Value::Time(v) => StoredKey::Time(*v),
            Value::Year(v) => StoredKey::Year(*v),
            _ => return None,
        })
    }

    fn value(self) -> Option<Value> {
        Some(match self {
            StoredKey::Int(v) => Value::Int(v),
            StoredKey::UInt(v) => Value::UInt(v),
            StoredKey::Decimal(v) => Value::Decimal(v),
            StoredKey::Text(v) => Value::Text(v),
            StoredKey::Bytes(hex) => Value::Bytes(from_hex(&hex)?),
            StoredKey::Date(year, month, day) => Value::Date(Date { year, month, day }),
            StoredKey::DateTime(year, month, day, hour, minute, second, micros) => {
                Value::DateTime(DateTime {
                    date: Date { year, month, day },
                    hour,
                    minute,
                    second,
                    micros,
                })
            }
            StoredKey::Timestamp(v) => Value::Timestamp(v),
            StoredKey::Time(v) => Value::Time(v),
            StoredKey::Year(v) => Value::Year(v),
        })
    }
}

/// The bytes of lowercase or uppercase hex digits, `None` when `hex` is not that.
fn from_hex(hex: &str) -> Option<Vec<u8>> {
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect()
}

/// A range as stored in a snapshot's progress: each bound a list of typed key values.
#[derive(Debug, Serialize, Deserialize)]
struct StoredRange {
    lower: Option<Vec<StoredKey>>,
    upper: Option<Vec<StoredKey>>,
}

impl KeyRange {
    /// The range as JSON, to be stored in a snapshot's progress and read back by
    /// [`KeyRange::from_json`]; `None` when a bound holds a value no range is split on.
    pub fn to_json(&self) -> Option<serde_json::Value> {
        let side = |bound: &Option<Vec<Value>>| match bound {
            None => Some(None),
            Some(values) => values
                .iter()
                .map(StoredKey::of)
                .collect::<Option<Vec<_>>>()
                .map(Some),
        };
        let stored = StoredRange {
            lower: side(&self.lower)?,
            upper: side(&self.upper)?,
        };
        serde_json::to_value(stored).ok()
    }

    /// Reads a range [`KeyRange::to_json`] stored; `None` when `json` is not one.
    pub fn from_json(json: &serde_json::Value) -> Option<KeyRange> {
        let stored: StoredRange = serde_json::from_value(json.clone()).ok()?;
        let side = |bound: Option<Vec<StoredKey>>| match bound {
            None => Some(None),
            Some(keys) => keys
                .into_iter()
                .map(StoredKey::value)
                .collect::<Option<Vec<_>>>()
                .map(Some),
        };
        Some(KeyRange {
            lower: side(stored.lower)?,
            upper: side(stored.upper)?,
        })
    }
}

impl fmt::Display for KeyRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let side = |f: &mut fmt::Formatter<'_>, bound: &Option<Vec<Value>>| match bound {
            None => f.write_str("unbounded"),
            Some(values) => write!(f, "{values:?}"),
        };
        f.write_str("keys [")?;
        side(f, &self.lower)?;
        f.write_str(", ")?;
        side(f, &self.upper)?;
        f.write_str(")")
    }
}

/// Why a table's schema or rows could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    /// The server refused or the connection failed.
    #[error("copy of {table} ({range}): {context}: {error}")]
    Server {
        /// `database.table`.
        table: String,
        /// The key range being read, or what was being read.
        range: String,
        /// What we were doing.
        context: &'static str,
        /// The driver's error (boxed: it is large and errors are rare).
        #[source]
        error: Box<mysql_async::Error>,
    },
    /// The table has a column the copy cannot read exactly.
    #[error("copy of {table}: column {column}: {what}")]
    Unsupported {
        /// `database.table`.
        table: String,
        /// The column.
        column: String,
        /// What is not supported, and the way out.
        what: String,
    },
    /// The server sent a value or catalog row that cannot be what the schema says.
    #[error("copy of {table} ({range}): column {column}: {reason}")]
    Value {
        /// `database.table`.
        table: String,
        /// The key range being read, or what was being read.
        range: String,
        /// The column.
        column: String,
        /// What is wrong.
        reason: String,
    },
}

/// Server errors that mean the table changed under the copy (ER_NO_SUCH_TABLE,
/// ER_BAD_FIELD_ERROR): a retry meets them again; the schema must be read anew.
const TABLE_CHANGED: [u16; 2] = [1146, 1054];

impl CopyError {
    /// Whether retrying can help (connection trouble), an operator must act (grants,
    /// unsupported columns), or the input is impossible.
    pub fn kind(&self) -> ErrorKind {
        match self {
            CopyError::Server { error, .. } => match &**error {
                mysql_async::Error::Server(e) if TABLE_CHANGED.contains(&e.code) => {
                    ErrorKind::Operator
                }
                other => server_error_kind(other),
            },
            CopyError::Unsupported { .. } => ErrorKind::Operator,
            CopyError::Value { .. } => ErrorKind::Fatal,
        }
    }
}

/// Wraps a driver error met while `context` on `table` (`range` says which rows).
fn server_error(
    table: &str,
    range: &str,
    context: &'static str,
) -> impl FnOnce(mysql_async::Error) -> CopyError {
    let (table, range) = (table.to_owned(), range.to_owned());
    move |error| CopyError::Server {
        table,
        range,
        context,
        error: Box::new(error),
    }
}

/// Sets the session so values arrive as the binlog holds them: TIMESTAMPs in UTC and text as
/// stored bytes (no conversion to a client charset).
async fn prepare_session(conn: &mut mysql_async::Conn, table: &str) -> Result<(), CopyError> {
    conn.query_drop("SET SESSION time_zone = '+00:00', character_set_results = NULL")
        .await
        .map_err(server_error(
            table,
            "session",
            "setting time_zone and character_set_results",
        ))
}

/// A backquoted identifier.
fn quote(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// `db`.`table` quoted for SQL.
fn quoted_table(id: &TableId) -> String {
    format!("{}.{}", quote(&id.namespace), quote(&id.name))
}

/// One row of information_schema.COLUMNS.
struct CatalogColumn {
    name: String,
    data_type: String,
    column_type: String,
    nullable: bool,
    octet_length: Option<u64>,
    precision: Option<u64>,
    scale: Option<u64>,
    fsp: Option<u64>,
    charset: Option<String>,
}

/// The schema of `db`.`table` as the binlog reader would emit it for the same table, or `None`
/// when the table does not exist.
pub async fn table_schema(
    conn: &mut mysql_async::Conn,
    db: &str,
    table: &str,
) -> Result<Option<TableSchema>, CopyError> {
    let name = format!("{db}.{table}");
    prepare_session(conn, &name).await?;
    let server = |context| server_error(&name, "catalog", context);
    let catalog = catalog_columns(conn, db, table, &name).await?;
    if catalog.is_empty() {
        return absent_or_denied(conn, db, table, &name).await;
    }
    let kind: Option<String> = conn
        .exec_first(
            "SELECT TABLE_TYPE FROM information_schema.TABLES \
             WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?",
            (db, table),
        )
        .await
        .map_err(server("reading information_schema.TABLES"))?;
    if kind.as_deref() == Some("VIEW") {
        return Err(CopyError::Unsupported {
            table: name,
            column: "(all)".to_owned(),
            what: "a view has no binlog rows of its own; copy its base tables".to_owned(),
        });
    }
    let mut columns = Vec::with_capacity(catalog.len());
    for c in &catalog {
        let ty = column_type(c).map_err(|what| CopyError::Unsupported {
            table: name.clone(),
            column: c.name.clone(),
            what,
        })?;
        columns.push(Column {
            name: Arc::from(c.name.as_str()),
            ty,
            nullable: c.nullable,
        });
    }
    let key_rows: Vec<UniquePart> = conn
        .exec(
            "SELECT INDEX_NAME, SEQ_IN_INDEX, COLUMN_NAME, SUB_PART \
             FROM information_schema.STATISTICS \
             WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? AND NON_UNIQUE = 0",
            (db, table),
        )
        .await
        .map_err(server("reading information_schema.STATISTICS"))?;
    let primary_key = primary_key(&catalog, &key_rows);
    Ok(Some(TableSchema {
        id: TableId::new(db, table),
        columns,
        primary_key,
    }))
}

/// `None` for a table that information_schema does not show because it does not exist; an
/// error when it is hidden because the user may not read it (information_schema hides tables
/// without privileges, so the table itself is asked).
async fn absent_or_denied(
    conn: &mut mysql_async::Conn,
    db: &str,
    table: &str,
    name: &str,
) -> Result<Option<TableSchema>, CopyError> {
    let probe = format!(
        "SELECT 1 FROM {} LIMIT 0",
        quoted_table(&TableId::new(db, table))
    );
    match conn.query_drop(probe).await {
        // ER_NO_SUCH_TABLE, ER_BAD_DB_ERROR.
        Err(mysql_async::Error::Server(e)) if e.code == 1146 || e.code == 1049 => Ok(None),
        Err(error) => Err(server_error(name, "catalog", "reading the table")(error)),
        Ok(()) => Ok(None),
    }
}

/// The rows of information_schema.COLUMNS for `db`.`table`, in column order.
async fn catalog_columns(
    conn: &mut mysql_async::Conn,
    db: &str,
    table: &str,
    name: &str,
) -> Result<Vec<CatalogColumn>, CopyError> {
    let rows: Vec<mysql_async::Row> = conn
        .exec(
            "SELECT COLUMN_NAME, DATA_TYPE, COLUMN_TYPE, IS_NULLABLE, CHARACTER_OCTET_LENGTH, \
             NUMERIC_PRECISION, NUMERIC_SCALE, DATETIME_PRECISION, CHARACTER_SET_NAME \
             FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? \
             ORDER BY ORDINAL_POSITION",
            (db, table),
        )
        .await
        .map_err(server_error(
            name,
            "catalog",
            "reading information_schema.COLUMNS",
        ))?;
    rows.iter()
        .map(|row| {
            catalog_column(row).map_err(|reason| CopyError::Value {
                table: name.to_owned(),
                range: "catalog".to_owned(),
                column: "(information_schema.COLUMNS)".to_owned(),
                reason,
            })
        })
        .collect()
}

/// One row of information_schema.COLUMNS, read as [`catalog_columns`] selects it.
fn catalog_column(row: &mysql_async::Row) -> Result<CatalogColumn, String> {
    let text = |i: usize| -> Result<Option<String>, String> {
        match row.as_ref(i) {
            None | Some(MyValue::NULL) => Ok(None),
            Some(MyValue::Bytes(b)) => String::from_utf8(b.clone())
                .map(Some)
                .map_err(|_| format!("field {i} is not UTF-8")),
            Some(other) => Err(format!("field {i}: {other:?}")),
        }
    };
    let number = |i: usize| -> Result<Option<u64>, String> {
        match row.as_ref(i) {
            None | Some(MyValue::NULL) => Ok(None),
            Some(v) => unsigned(v).map(Some).map_err(|e| format!("field {i}: {e}")),
        }
    };
    let required = |i: usize| text(i)?.ok_or_else(|| format!("field {i} is NULL"));
    Ok(CatalogColumn {
        name: required(0)?,
        data_type: required(1)?.to_ascii_lowercase(),
        column_type: required(2)?,
        nullable: required(3)? == "YES",
        octet_length: number(4)?,
        precision: number(5)?,
        scale: number(6)?,
        fsp: number(7)?,
        charset: text(8)?,
    })
}

/// One part of a unique index as STATISTICS lists it: index name, position in the index,
/// column, prefix length.
type UniquePart = (String, u64, String, Option<u64>);

/// The (position, column, prefix length) parts of one index.
type IndexParts<'a> = Vec<(u64, &'a str, Option<u64>)>;

/// The key the table map carries: the PRIMARY KEY, or else (as the server promotes it) the
/// first UNIQUE index whose parts are whole NOT NULL columns. `unique` lists the parts of every
/// unique index, indexes in the server's key order (the order STATISTICS lists them in).
fn primary_key(columns: &[CatalogColumn], unique: &[UniquePart]) -> Vec<usize> {
    let index_of = |name: &str| columns.iter().position(|c| c.name == name);
    let mut indexes: Vec<(&str, IndexParts<'_>)> = Vec::new();
    for (index, seq, column, sub_part) in unique {
        match indexes.iter_mut().find(|(i, _)| i == index) {
            Some((_, parts)) => parts.push((*seq, column, *sub_part)),
            None => indexes.push((index, vec![(*seq, column, *sub_part)])),
        }
    }
    // Parts in key order, whatever order the catalog returned them in.
    for (_, parts) in &mut indexes {
        parts.sort_by_key(|(seq, _, _)| *seq);
    }
    let usable = |parts: &[(u64, &str, Option<u64>)]| {
        parts
            .iter()
            .all(|(_, c, sub)| sub.is_none() && index_of(c).is_some_and(|i| !columns[i].nullable))
    };
    let chosen = indexes
        .iter()
        .find(|(i, _)| *i == "PRIMARY")
        .or_else(|| indexes.iter().find(|(_, parts)| usable(parts)));
    match chosen {
        Some((_, parts)) => parts.iter().filter_map(|(_, c, _)| index_of(c)).collect(),
        None => Vec::new(),
    }
}

/// The length-prefix width the binlog gives TINY/-/MEDIUM/LONG TEXT and BLOB.
fn blob_pack(data_type: &str) -> Option<u8> {
    match data_type {
        "tinytext" | "tinyblob" => Some(1),
        "text" | "blob" => Some(2),
        "mediumtext" | "mediumblob" => Some(3),
        "longtext" | "longblob" => Some(4),
        _ => None,
    }
}

/// The labels of `enum('a','b''c')` / `set(...)` as `COLUMN_TYPE` spells them: quotes doubled,
/// and backslash, NUL, newline and carriage return escaped with a backslash (the server's
/// `append_unescaped`).
fn parse_labels(column_type: &str) -> Result<Arc<[String]>, String> {
    let open = column_type
        .find('(')
        .ok_or_else(|| format!("no labels in {column_type}"))?;
    let body = column_type[open + 1..]
        .strip_suffix(')')
        .ok_or_else(|| format!("unterminated labels in {column_type}"))?;
    let mut labels = Vec::new();
    let mut chars = body.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                let mut label = String::new();
                loop {
                    match chars.next() {
                        Some('\'') if chars.peek() == Some(&'\'') => {
                            chars.next();
                            label.push('\'');
                        }
                        Some('\'') => break,
                        Some('\\') => match chars.next() {
                            Some('0') => label.push('\0'),
                            Some('n') => label.push('\n'),
                            Some('r') => label.push('\r'),
                            Some(ch) => label.push(ch),
                            None => return Err(format!("unterminated label in {column_type}")),
                        },
                        Some(ch) => label.push(ch),
                        None => return Err(format!("unterminated label in {column_type}")),
                    }
                }
                labels.push(label);
            }
            ',' => {}
            other => return Err(format!("unexpected {other:?} in {column_type}")),
        }
    }
    Ok(labels.into())
}

/// The [`ColumnType`] the binlog's table map gives a column of this catalog row (see the type
/// table in [`super::layout`]).
fn column_type(c: &CatalogColumn) -> Result<ColumnType, String> {
    let unsigned = c.column_type.to_ascii_lowercase().contains("unsigned");
    let narrow = |v: Option<u64>, what: &str| -> Result<u8, String> {
        v.and_then(|v| u8::try_from(v).ok())
            .ok_or_else(|| format!("{what} of {} is {v:?}", c.column_type))
    };
    let int = |bits| ColumnType::Int { bits, unsigned };
    let text_or_binary = |max_bytes: Option<u64>| -> Result<ColumnType, String> {
        let charset = c.charset.as_deref().unwrap_or("binary");
        let cs = charset_named(charset).ok_or_else(|| format!("unknown charset {charset}"))?;
        Ok(character_column_type(cs, max_bytes))
    };
    Ok(match c.data_type.as_str() {
        "tinyint" => int(8),
        "smallint" => int(16),
        "mediumint" => int(24),
        "int" | "integer" => int(32),
        "bigint" => int(64),
        "float" => ColumnType::Float,
        "double" | "real" => ColumnType::Double,
        "decimal" | "numeric" => ColumnType::Decimal {
            precision: narrow(c.precision, "precision")?,
            scale: narrow(c.scale, "scale")?,
        },
        "bit" => ColumnType::Bit {
            width: narrow(c.precision, "width")?,
        },
        "date" => ColumnType::Date,
        "datetime" => ColumnType::DateTime {
            fsp: narrow(c.fsp.or(Some(0)), "fsp")?,
        },
        "timestamp" => ColumnType::Timestamp {
            fsp: narrow(c.fsp.or(Some(0)), "fsp")?,
        },
        "time" => ColumnType::Time {
            fsp: narrow(c.fsp.or(Some(0)), "fsp")?,
        },
        "year" => ColumnType::Year,
        "char" | "varchar" | "binary" | "varbinary" => text_or_binary(c.octet_length)?,
        t if blob_pack(t).is_some() => text_or_binary(blob_pack(t).map(blob_max_bytes))?,
        "enum" => ColumnType::Enum {
            labels: parse_labels(&c.column_type)?,
        },
        "set" => ColumnType::Set {
            labels: parse_labels(&c.column_type)?,
        },
        // MariaDB's INET6, UUID and INET4 travel in the binlog as BINARY(16/16/4).
        "inet6" | "uuid" => ColumnType::Binary {
            max_bytes: Some(16),
        },
        "inet4" => ColumnType::Binary { max_bytes: Some(4) },
        "json" => ColumnType::Json,
        "geometry" | "point" | "linestring" | "polygon" | "multipoint" | "multilinestring"
        | "multipolygon" | "geometrycollection" | "geomcollection" => ColumnType::Geometry,
        "vector" => {
            let dimensions = c
                .column_type
                .split(['(', ')'])
                .nth(1)
                .and_then(|n| n.trim().parse().ok());
            ColumnType::Vector { dimensions }
        }
        other => {
            return Err(format!(
                "type {} ({other}) cannot be copied exactly yet; the binlog still streams it, \
                 but the table must be left out of snapshots",
                c.column_type
            ));
        }
    })
}

/// Whether a key column's values can be bound as parameters that compare in index order.
/// ENUM and SET sort by index, not label; BIT, floats, JSON and spatial keys are not split.
fn splittable(ty: &ColumnType) -> bool {
    matches!(
        ty,
        ColumnType::Int { .. }
            | ColumnType::Decimal { .. }
            | ColumnType::Text { .. }
            | ColumnType::Binary { .. }
            | ColumnType::Date
            | ColumnType::DateTime { .. }
            | ColumnType::Timestamp { .. }
            | ColumnType::Time { .. }
            | ColumnType::Year
    )
}

/// Splits `schema`'s table into half-open key ranges of about `chunk_rows` rows each that
/// together cover every possible key exactly once (see the module docs for how).
pub async fn key_ranges(
    conn: &mut mysql_async::Conn,
    schema: &TableSchema,
    chunk_rows: u64,
) -> Result<Vec<KeyRange>, CopyError> {
    let table = schema.id.to_string();
    let chunk_rows = chunk_rows.max(1);
    let key_types: Vec<&ColumnType> = key_columns_of(schema).iter().map(|c| &c.ty).collect();
    if key_types.is_empty() || !key_types.iter().all(|t| splittable(t)) {
        if schema.has_key() {
            tracing::warn!(
                table,
                "key type cannot be split into ranges; copied as one chunk"
            );
        }
        return Ok(vec![KeyRange::all()]);
    }
    prepare_session(conn, &table).await?;
    if let [ColumnType::Int { unsigned, .. }] = key_types.as_slice()
        && let Some(ranges) = dense_int_ranges(conn, schema, *unsigned, chunk_rows).await?
    {
        return Ok(ranges);
    }
    let boundaries = keyset_boundaries(conn, schema, chunk_rows).await?;
    Ok(ranges_between(boundaries))
}

/// The key columns of `schema`, in key order.
fn key_columns_of(schema: &TableSchema) -> Vec<&Column> {
    schema
        .primary_key
        .iter()
        .filter_map(|&i| schema.columns.get(i))
        .collect()
}

/// Equal-width ranges between MIN and MAX of a single integer key, or `None` when its keys are
/// too sparse for equal widths to give even chunks.
async fn dense_int_ranges(
    conn: &mut mysql_async::Conn,
    schema: &TableSchema,
    unsigned: bool,
    chunk_rows: u64,
) -> Result<Option<Vec<KeyRange>>, CopyError> {
    let table = schema.id.to_string();
    let key = &key_columns(schema)[0];
    let sql = format!(
        "SELECT CAST(MIN({key}) AS CHAR), CAST(MAX({key}) AS CHAR) FROM {}",
        quoted_table(&schema.id)
    );
    let row: Option<(Option<String>, Option<String>)> = conn
        .query_first(sql)
        .await
        .map_err(server_error(&table, "key ranges", "reading MIN and MAX"))?;
    let bad = |reason: String| CopyError::Value {
        table: table.clone(),
        range: "key ranges".to_owned(),
        column: key.clone(),
        reason,
    };
    let Some((Some(min), Some(max))) = row else {
        return Ok(Some(vec![KeyRange::all()]));
    };
    let (min, max): (i128, i128) = match (min.parse(), max.parse()) {
        (Ok(min), Ok(max)) => (min, max),
        _ => return Err(bad(format!("MIN {min} / MAX {max} are not integers"))),
    };
    // Keys spread thinly (a few far outliers, hashed ids) would leave most rows in a few
    // equal-width chunks: those tables are split by a keyset scan instead. InnoDB's row
    // estimate decides at once for a dense table (chunk sizes are then as good as the
    // estimate); only a table it calls sparse pays for an exact COUNT(*), a scan.
    let sparse = |rows: u64| max - min >= SPARSE_FACTOR * i128::from(rows.max(1));
    let count = match estimated_rows(conn, &schema.id).await? {
        Some(estimate) if !sparse(estimate) => estimate,
        _ => {
            let sql = format!("SELECT COUNT(*) FROM {}", quoted_table(&schema.id));
            let count: Option<u64> = conn.query_first(sql).await.map_err(server_error(
                &table,
                "key ranges",
                "reading COUNT(*)",
            ))?;
            let count = count.unwrap_or(0);
            if sparse(count) {
                return Ok(None);
            }
            count
        }
    };
    let values: Vec<Vec<Value>> = int_boundaries(min, max, count, chunk_rows)
        .into_iter()
        .map(|b| {
            let value = if unsigned {
                u64::try_from(b).map(Value::UInt).ok()
            } else {
                i64::try_from(b).map(Value::Int).ok()
            };
            value
                .map(|v| vec![v])
                .ok_or_else(|| bad(format!("boundary {b} out of range")))
        })
        .collect::<Result<_, _>>()?;
    Ok(Some(ranges_between(values)))
}

/// InnoDB's estimate of the rows of `table` (`information_schema.TABLES.TABLE_ROWS`), if it has
/// one.
async fn estimated_rows(
    conn: &mut mysql_async::Conn,
    table: &TableId,
) -> Result<Option<u64>, CopyError> {
    conn.exec_first(
        "SELECT TABLE_ROWS FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?",
        (&*table.namespace, &*table.name),
    )
    .await
    .map(Option::flatten)
    .map_err(server_error(
        &table.to_string(),
        "key ranges",
        "reading the row estimate in information_schema.TABLES",
    ))
}

/// The first key of every chunk but the first: each is the key `chunk_rows` rows after the one
/// before, read in key order.
async fn keyset_boundaries(
    conn: &mut mysql_async::Conn,
    schema: &TableSchema,
    chunk_rows: u64,
) -> Result<Vec<Vec<Value>>, CopyError> {
    let table = schema.id.to_string();
    let keys = key_columns(schema);
    let list = keys.join(", ");
    let from = quoted_table(&schema.id);
    let key_fields = fields(&table, &key_columns_of(schema))?;
    let mut boundaries: Vec<Vec<Value>> = Vec::new();
    loop {
        let range = KeyRange {
            lower: boundaries.last().cloned(),
            upper: None,
        };
        let (predicate, params) = range_predicate(&keys, &range);
        let sql = format!(
            "SELECT {list} FROM {from} WHERE {predicate} \
             ORDER BY {list} LIMIT 1 OFFSET {chunk_rows}"
        );
        let params: Vec<MyValue> = params.into_iter().map(param).collect();
        let row: Option<mysql_async::Row> = conn.exec_first(sql, params).await.map_err(
            server_error(&table, "key ranges", "reading chunk boundaries"),
        )?;
        let Some(row) = row else {
            return Ok(boundaries);
        };
        let key = row_values(&table, "key ranges", &key_fields, row)?;
        boundaries.push(key);
    }
}

/// A result field's column and, for text, its charset: looked up once per read, not per value.
struct Field<'a> {
    column: &'a Column,
    charset: Option<Charset>,
}

/// The fields of a result whose columns are `columns`, in order.
fn fields<'a>(table: &str, columns: &[&'a Column]) -> Result<Vec<Field<'a>>, CopyError> {
    columns
        .iter()
        .map(|&column| {
            let charset = match &column.ty {
                ColumnType::Text { charset, .. } => Some(charset_named(charset).ok_or_else(
                    || CopyError::Unsupported {
                        table: table.to_owned(),
                        column: column.name.to_string(),
                        what: format!("unknown charset {charset}"),
                    },
                )?),
                _ => None,
            };
            Ok(Field { column, charset })
        })
        .collect()
}

/// The [`Value`]s of one result row whose fields are `fields`, in order.
fn row_values(
    table: &str,
    range: &str,
    columns: &[Field<'_>],
    row: mysql_async::Row,
) -> Result<Row, CopyError> {
    let raw = row.unwrap_raw();
    let error = |column: &str, reason: String| CopyError::Value {
        table: table.to_owned(),
        range: range.to_owned(),
        column: column.to_owned(),
        reason,
    };
    if raw.len() != columns.len() {
        let reason = format!("{} values for {} columns", raw.len(), columns.len());
        return Err(error("(row)", reason));
    }
    columns
        .iter()
        .zip(raw)
        .map(|(field, value)| {
            to_value(
                &field.column.ty,
                field.charset,
                value.unwrap_or(MyValue::NULL),
            )
            .map_err(|reason| error(&field.column.name, reason))
        })
        .collect()
}

/// An integer key whose MIN..MAX span exceeds this many times its row count is split by a
/// keyset scan rather than arithmetically: equal-width ranges would be too uneven.
const SPARSE_FACTOR: i128 = 4;

/// Interior boundaries splitting integer keys `min..=max` (holding `rows` rows) into about
/// `rows / chunk_rows` equal-width ranges. Gaps in the keys make some chunks smaller; the
/// count of chunks stays bounded.
fn int_boundaries(min: i128, max: i128, rows: u64, chunk_rows: u64) -> Vec<i128> {
    let chunks = i128::from(rows.div_ceil(chunk_rows.max(1)).max(1));
    let width = max - min + 1;
    if chunks <= 1 || width <= 1 {
        return Vec::new();
    }
    let step = (width + chunks - 1) / chunks;
    (1..chunks)
        .map(|i| min + step * i)
        .take_while(|&b| b <= max)
        .collect()
}

/// Ranges `(-inf, b0), [b0, b1), ..., [bn, +inf)` between sorted boundaries.
fn ranges_between(boundaries: Vec<Vec<Value>>) -> Vec<KeyRange> {
    let mut ranges = Vec::with_capacity(boundaries.len() + 1);
    let mut lower = None;
    for b in boundaries {
        ranges.push(KeyRange {
            lower: lower.take(),
            upper: Some(b.clone()),
        });
        lower = Some(b);
    }
    ranges.push(KeyRange { lower, upper: None });
    ranges
}

/// The key columns of `schema`, quoted, in key order.
fn key_columns(schema: &TableSchema) -> Vec<String> {
    schema
        .primary_key
        .iter()
        .map(|&i| quote(&schema.columns[i].name))
        .collect()
}

/// The SQL condition `lower <= (keys) < upper` comparing key tuples lexicographically, with
/// `?` placeholders and the values to bind in order. Written as OR of ANDs rather than a row
/// comparison because MariaDB's range optimizer does not use an index for `(a, b) >= (?, ?)`.
fn range_predicate<'a>(keys: &[String], range: &'a KeyRange) -> (String, Vec<&'a Value>) {
    let mut parts = Vec::new();
    let mut params = Vec::new();
    let mut side = |bound: &'a [Value], strict: &str, last: &str| {
        let mut alternatives = Vec::new();
        for i in 0..keys.len().min(bound.len()) {
            let mut terms: Vec<String> = keys[..i].iter().map(|k| format!("{k} = ?")).collect();
            params.extend(&bound[..i]);
            let op = if i + 1 == keys.len() { last } else { strict };
            terms.push(format!("{} {op} ?", keys[i]));
            params.push(&bound[i]);
            alternatives.push(format!("({})", terms.join(" AND ")));
        }
        parts.push(format!("({})", alternatives.join(" OR ")));
    };
    if let Some(lower) = &range.lower {
        side(lower, ">", ">=");
    }
    if let Some(upper) = &range.upper {
        side(upper, "<", "<");
    }
    if parts.is_empty() {
        ("TRUE".to_owned(), params)
    } else {
        (parts.join(" AND "), params)
    }
}

/// A key value bound as a statement parameter that compares like the column's own values.
fn param(value: &Value) -> MyValue {
    match value {
        Value::Int(i) => MyValue::Int(*i),
        Value::UInt(u) => MyValue::UInt(*u),
        Value::Year(y) => MyValue::Int(i64::from(*y)),
        Value::Decimal(s) | Value::Text(s) => MyValue::Bytes(s.clone().into_bytes()),
        Value::Bytes(b) => MyValue::Bytes(b.clone()),
        Value::Date(d) => my_date(*d, 0, 0, 0, 0),
        Value::DateTime(dt) => my_date(dt.date, dt.hour, dt.minute, dt.second, dt.micros),
        Value::Timestamp(0) => MyValue::Date(0, 0, 0, 0, 0, 0, 0),
        Value::Timestamp(us) => {
            let (days, tod) = (us.div_euclid(86_400_000_000), us.rem_euclid(86_400_000_000));
            let (y, m, d) = civil_from_days(days);
            let secs = tod / 1_000_000;
            // A TIMESTAMP lies in 1970..=2038: every part fits its field.
            MyValue::Date(
                u16::try_from(y).unwrap_or(0),
                m as u8,
                d as u8,
                (secs / 3600) as u8,
                (secs / 60 % 60) as u8,
                (secs % 60) as u8,
                (tod % 1_000_000) as u32,
            )
        }
        Value::Time(us) => {
            let abs = us.unsigned_abs();
            let secs = abs / 1_000_000;
            MyValue::Time(
                *us < 0,
                u32::try_from(secs / 86_400).unwrap_or(u32::MAX),
                (secs / 3600 % 24) as u8,
                (secs / 60 % 60) as u8,
                (secs % 60) as u8,
                (abs % 1_000_000) as u32,
            )
        }
        // Key types outside `splittable` never become bounds.
        _ => MyValue::NULL,
    }
}

/// A MySQL DATE/DATETIME parameter.
fn my_date(d: Date, h: u8, mi: u8, s: u8, us: u32) -> MyValue {
    MyValue::Date(
        u16::try_from(d.year).unwrap_or(0),
        d.month,
        d.day,
        h,
        mi,
        s,
        us,
    )
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The SQL expression that reads a column as the binlog would hold it: ENUM and SET as their
/// index and bitmask (unsigned), binary columns as their bytes (MariaDB's INET6, UUID and INET4
/// would otherwise arrive as text; for BINARY, VARBINARY and BLOB the cast changes nothing),
/// everything else as stored.
fn select_expr(column: &Column) -> String {
    let name = quote(&column.name);
    match column.ty {
        // `+ 0` gives a signed BIGINT, negative for a SET with its 64th label: the cast
        // restores the bitmask.
        ColumnType::Enum { .. } | ColumnType::Set { .. } => {
            format!("CAST({name} + 0 AS UNSIGNED)")
        }
        ColumnType::Binary { .. } => format!("CAST({name} AS BINARY)"),
        _ => name,
    }
}

/// The SELECT of `range` of `schema`'s table, in key order, and its parameters.
fn chunk_query<'a>(schema: &TableSchema, range: &'a KeyRange) -> (String, Vec<&'a Value>) {
    let list: Vec<String> = schema.columns.iter().map(select_expr).collect();
    let keys = key_columns(schema);
    let (predicate, params) = range_predicate(&keys, range);
    let order = if keys.is_empty() {
        String::new()
    } else {
        format!(" ORDER BY {}", keys.join(", "))
    };
    (
        format!(
            "SELECT {} FROM {} WHERE {predicate}{order}",
            list.join(", "),
            quoted_table(&schema.id)
        ),
        params,
    )
}

/// Reads the rows of `range` in key order, handing them to `on_batch` in batches of at most
/// `batch_rows` rows; returns the number of rows read. Memory held: one batch of decoded rows
/// plus the driver's buffer of the row being received; the server streams the rest. Stops
/// early, without error, when `on_batch` returns `Break`.
pub async fn read_chunk<F>(
    conn: &mut mysql_async::Conn,
    schema: &TableSchema,
    range: &KeyRange,
    batch_rows: usize,
    mut on_batch: F,
) -> Result<u64, CopyError>
where
    F: FnMut(Vec<Row>) -> ControlFlow<()> + Send,
{
    let table = schema.id.to_string();
    prepare_session(conn, &table).await?;
    let (sql, params) = chunk_query(schema, range);
    let params: Vec<MyValue> = params.into_iter().map(param).collect();
    let range_text = range.to_string();
    let server = |context| server_error(&table, &range_text, context);
    let mut result = conn
        .exec_iter(sql, params)
        .await
        .map_err(server("selecting the chunk"))?;
    let batch_rows = batch_rows.max(1);
    let capacity = batch_rows.min(4096);
    let mut batch = Vec::with_capacity(capacity);
    let columns: Vec<&Column> = schema.columns.iter().collect();
    let columns = fields(&table, &columns)?;
    let mut count = 0u64;
    // The error's context is built only on an error: this runs once per row.
    while let Some(row) = result
        .next()
        .await
        .map_err(|error| server("reading the chunk")(error))?
    {
        let values = row_values(&table, &range_text, &columns, row)?;
        batch.push(values);
        count += 1;
        if batch.len() >= batch_rows {
            let full = std::mem::replace(&mut batch, Vec::with_capacity(capacity));
            if on_batch(full).is_break() {
                // The driver discards the rest of the result before the connection's next query.
                return Ok(count);
            }
        }
    }
    if !batch.is_empty() {
        let _ = on_batch(batch);
    }
    Ok(count)
}

/// The [`Value`] the binlog decoder produces for a column of type `ty` (text in `charset`)
/// holding what the binary protocol sent as `v` (read by [`select_expr`]).
fn to_value(ty: &ColumnType, charset: Option<Charset>, v: MyValue) -> Result<Value, String> {
    if v == MyValue::NULL {
        return Ok(Value::Null);
    }
    let unexpected = |v: &MyValue| format!("unexpected {v:?} for {ty:?}");
    Ok(match (ty, v) {
        (ColumnType::Int { unsigned: true, .. }, v) => Value::UInt(unsigned(&v)?),
        (ColumnType::Int { .. }, MyValue::Int(i)) => Value::Int(i),
        (ColumnType::Int { .. }, MyValue::UInt(u)) => {
            Value::Int(i64::try_from(u).map_err(|_| format!("{u} overflows a signed column"))?)
        }
        (ColumnType::Float, MyValue::Float(f)) => Value::Float(f),
        (ColumnType::Double, MyValue::Double(d)) => Value::Double(d),
        (ColumnType::Decimal { .. }, MyValue::Bytes(b)) => Value::Decimal(decimal_text(&b)?),
        (ColumnType::Bit { width }, MyValue::Bytes(b)) => {
            if b.len() > 8 {
                return Err(format!("BIT value of {} bytes", b.len()));
            }
            bit_value(b.iter().fold(0, |acc, &x| acc << 8 | u64::from(x)), *width)?
        }
        (ColumnType::Date, MyValue::Date(y, m, d, ..)) => Value::Date(Date {
            year: i32::from(y),
            month: m,
            day: d,
        }),
        (ColumnType::DateTime { .. }, MyValue::Date(y, mo, d, h, mi, s, us)) => {
            Value::DateTime(DateTime {
                date: Date {
                    year: i32::from(y),
                    month: mo,
                    day: d,
                },
                hour: h,
                minute: mi,
                second: s,
                micros: us,
            })
        }
        (ColumnType::Timestamp { .. }, MyValue::Date(0, 0, 0, 0, 0, 0, 0)) => Value::Timestamp(0),
        (ColumnType::Timestamp { .. }, MyValue::Date(y, mo, d, h, mi, s, us)) => {
            let days = days_from_civil(i64::from(y), i64::from(mo), i64::from(d));
            let secs = days * 86_400 + i64::from(h) * 3600 + i64::from(mi) * 60 + i64::from(s);
            Value::Timestamp(secs * 1_000_000 + i64::from(us))
        }
        (ColumnType::Time { .. }, MyValue::Time(neg, days, h, m, s, us)) => {
            let secs =
                i64::from(days) * 86_400 + i64::from(h) * 3600 + i64::from(m) * 60 + i64::from(s);
            let micros = secs * 1_000_000 + i64::from(us);
            Value::Time(if neg { -micros } else { micros })
        }
        (ColumnType::Year, v) => {
            let y = u16::try_from(unsigned(&v)?).map_err(|_| format!("YEAR {v:?}"))?;
            Value::Year(y)
        }
        (ColumnType::Text { charset: name, .. }, MyValue::Bytes(b)) => {
            let cs = charset.ok_or_else(|| format!("no decoder for charset {name}"))?;
            Value::Text(cs.decode_owned(b).map_err(|e| e.to_string())?)
        }
        (ColumnType::Binary { .. }, MyValue::Bytes(b)) => Value::Bytes(b),
        (ColumnType::Enum { labels }, v) => enum_value(labels, unsigned(&v)?)?,
        (ColumnType::Set { labels }, v) => set_value(labels, unsigned(&v)?)?,
        (ColumnType::Json, MyValue::Bytes(b)) => {
            let text = String::from_utf8(b).map_err(|_| "JSON text is not UTF-8".to_owned())?;
            Value::Json(compact_json(&text))
        }
        (ColumnType::Geometry, MyValue::Bytes(b)) => geometry_value(&b)?,
        (ColumnType::Vector { .. }, MyValue::Bytes(b)) => vector_value(&b)?,
        (_, v) => return Err(unexpected(&v)),
    })
}

/// DECIMAL digits as the server sent them, in the binlog decoder's form: a ZEROFILL column's
/// leading zeros (`001.50`) dropped down to one integer digit (`1.50`, `0.50`).
fn decimal_text(raw: &[u8]) -> Result<String, String> {
    let text = std::str::from_utf8(raw).map_err(|_| format!("DECIMAL text {raw:?}"))?;
    let (sign, digits) = match text.strip_prefix('-') {
        Some(rest) => ("-", rest),
        None => ("", text),
    };
    let (int, frac) = match digits.split_once('.') {
        Some((int, frac)) => (int, Some(frac)),
        None => (digits, None),
    };
    let all_digits = |s: &str| s.bytes().all(|c| c.is_ascii_digit());
    if int.is_empty() || !all_digits(int) || !frac.is_none_or(all_digits) {
        return Err(format!("DECIMAL text {text:?}"));
    }
    let trimmed = int.trim_start_matches('0');
    let int = if trimmed.is_empty() { "0" } else { trimmed };
    Ok(match frac {
        Some(frac) => format!("{sign}{int}.{frac}"),
        None => format!("{sign}{int}"),
    })
}

/// An unsigned integer from whatever integer form the protocol used (`col + 0` may be any).
fn unsigned(v: &MyValue) -> Result<u64, String> {
    match v {
        MyValue::UInt(u) => Ok(*u),
        MyValue::Int(i) => u64::try_from(*i).map_err(|_| format!("{i} is negative")),
        MyValue::Double(d)
            if d.fract() == 0.0 && *d >= 0.0 && *d < 18_446_744_073_709_551_616.0 =>
        {
            Ok(*d as u64)
        }
        MyValue::Bytes(b) => std::str::from_utf8(b)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("integer text {b:?}")),
        other => Err(format!("unexpected {other:?} for an integer")),
    }
}

/// MySQL's JSON text (`{"a": 1, "b": [1, 2]}`) in the compact form the binary JSON decoder
/// prints: the same tokens without the blanks MySQL puts after `:` and `,`. Exact because
/// [`super::jsonb`] guarantees its text is MySQL's except for those separators.
fn compact_json(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let (mut in_string, mut escaped) = (false, false);
    for c in text.chars() {
        if in_string {
            out.push(c);
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_string = false,
                _ => {}
            }
        } else if c == '"' {
            in_string = true;
            out.push(c);
        } else if !c.is_ascii_whitespace() {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| quote(n)).collect()
    }

    #[test]
    fn single_key_predicates_are_half_open() {
        let range = KeyRange {
            lower: Some(vec![Value::Int(10)]),
            upper: Some(vec![Value::Int(20)]),
        };
        let (sql, params) = range_predicate(&keys(&["id"]), &range);
        assert_eq!(sql, "((`id` >= ?)) AND ((`id` < ?))");
        assert_eq!(params, [&Value::Int(10), &Value::Int(20)]);
        let all = KeyRange::all();
        let (sql, params) = range_predicate(&keys(&["id"]), &all);
        assert_eq!((sql.as_str(), params.len()), ("TRUE", 0));
    }

    #[test]
    fn composite_key_predicates_compare_lexicographically() {
        let lower = vec![Value::Text("a".into()), Value::Int(5)];
        let range = KeyRange {
            lower: Some(lower.clone()),
            upper: None,
        };
        let (sql, params) = range_predicate(&keys(&["k", "n"]), &range);
        assert_eq!(sql, "((`k` > ?) OR (`k` = ? AND `n` >= ?))");
        assert_eq!(params, [&lower[0], &lower[0], &lower[1]]);
        let range = KeyRange {
            lower: None,
            upper: Some(lower.clone()),
        };
        let (sql, _) = range_predicate(&keys(&["k", "n"]), &range);
        assert_eq!(sql, "((`k` < ?) OR (`k` = ? AND `n` < ?))");
    }

    /// Evaluates the lexicographic meaning of a range on integer tuples, as the SQL does.
    fn contains(range: &KeyRange, key: &[i64]) -> bool {
        let tuple = |b: &Vec<Value>| -> Vec<i64> {
            b.iter()
                .map(|v| match v {
                    Value::Int(i) => *i,
                    _ => unreachable!(),
                })
                .collect()
        };
        range
            .lower
            .as_ref()
            .is_none_or(|l| key >= tuple(l).as_slice())
            && range
                .upper
                .as_ref()
                .is_none_or(|u| key < tuple(u).as_slice())
    }

    #[test]
    fn ranges_between_boundaries_cover_every_key_once() {
        let bounds = int_boundaries(-50, 1_000, 900, 100);
        assert_eq!(bounds.len(), 8, "{bounds:?}");
        let ranges = ranges_between(
            bounds
                .iter()
                .map(|&b| vec![Value::Int(i64::try_from(b).unwrap())])
                .collect(),
        );
        assert!(ranges[0].lower.is_none() && ranges.last().unwrap().upper.is_none());
        for key in -100..1_100 {
            let hits = ranges.iter().filter(|r| contains(r, &[key])).count();
            assert_eq!(hits, 1, "key {key}");
        }
        assert!(int_boundaries(5, 5, 1, 10).is_empty());
        assert!(int_boundaries(0, 10, 0, 10).is_empty());
        // The whole u64 range does not overflow.
        let wide = int_boundaries(0, i128::from(u64::MAX), 4, 1);
        assert_eq!(wide.len(), 3);
    }

    fn catalog(name: &str, nullable: bool) -> CatalogColumn {
        CatalogColumn {
            name: name.to_owned(),
            data_type: "int".to_owned(),
            column_type: "int(11)".to_owned(),
            nullable,
            octet_length: None,
            precision: Some(10),
            scale: Some(0),
            fsp: None,
            charset: None,
        }
    }

    fn part(index: &str, seq: u64, column: &str, sub: Option<u64>) -> UniquePart {
        (index.to_owned(), seq, column.to_owned(), sub)
    }

    #[test]
    fn the_key_is_primary_or_the_first_unique_not_null_whole_columns() {
        let columns = [catalog("a", false), catalog("b", true), catalog("c", false)];
        // PRIMARY wins, parts in SEQ_IN_INDEX order even when listed out of order.
        let rows = [
            part("u", 1, "c", None),
            part("PRIMARY", 2, "a", None),
            part("PRIMARY", 1, "c", None),
        ];
        assert_eq!(primary_key(&columns, &rows), [2, 0]);
        // No PRIMARY: a nullable part or a prefix disqualifies an index; the next one is used.
        let rows = [
            part("nullable", 1, "b", None),
            part("prefix", 1, "a", Some(3)),
            part("whole", 1, "c", None),
            part("whole", 2, "a", None),
        ];
        assert_eq!(primary_key(&columns, &rows), [2, 0]);
        assert!(primary_key(&columns, &rows[..2]).is_empty());
    }

    #[test]
    fn errors_know_who_can_fix_them() {
        let server = |code| CopyError::Server {
            table: "db.t".to_owned(),
            range: KeyRange::all().to_string(),
            context: "selecting the chunk",
            error: Box::new(mysql_async::Error::Server(mysql_async::ServerError {
                code,
                message: "m".to_owned(),
                state: "HY000".to_owned(),
            })),
        };
        assert_eq!(server(1142).kind(), ErrorKind::Operator, "no SELECT grant");
        assert_eq!(server(1146).kind(), ErrorKind::Operator, "table dropped");
        assert_eq!(server(1205).kind(), ErrorKind::Retry, "lock wait timeout");
        let message = server(1205).to_string();
        assert!(
            message.contains("db.t") && message.contains("unbounded"),
            "{message}"
        );
        let value = CopyError::Value {
            table: "db.t".to_owned(),
            range: "r".to_owned(),
            column: "c".to_owned(),
            reason: "x".to_owned(),
        };
        assert_eq!(value.kind(), ErrorKind::Fatal);
    }

    #[test]
    fn labels_keep_quotes_and_commas() {
        let labels = parse_labels(r"enum('a','it''s','x,y','','b\\s','n\0\n\r')").unwrap();
        assert_eq!(&*labels, ["a", "it's", "x,y", "", "b\\s", "n\0\n\r"]);
        assert!(parse_labels("enum('a").is_err());
    }

    #[test]
    fn calendar_round_trips() {
        for days in [-719_528, -1, 0, 1, 11_016, 2_932_896] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, i64::from(m), i64::from(d)), days);
        }
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2024, 2, 29), 19_782);
    }

    #[test]
    fn protocol_values_become_binlog_values() {
        let ty = ColumnType::Timestamp { fsp: 6 };
        assert_eq!(
            to_value(&ty, None, MyValue::Date(1970, 1, 1, 0, 0, 1, 5)).unwrap(),
            Value::Timestamp(1_000_005)
        );
        assert_eq!(
            to_value(&ty, None, MyValue::Date(0, 0, 0, 0, 0, 0, 0)).unwrap(),
            Value::Timestamp(0)
        );
        let time = to_value(
            &ColumnType::Time { fsp: 6 },
            None,
            MyValue::Time(true, 34, 22, 59, 59, 0),
        );
        assert_eq!(time.unwrap(), Value::Time(-3_020_399_000_000));
        let labels: Arc<[String]> = vec!["x".to_owned(), "y".to_owned(), "z".to_owned()].into();
        let set = ColumnType::Set {
            labels: labels.clone(),
        };
        assert_eq!(
            to_value(&set, None, MyValue::Int(5)).unwrap(),
            Value::Set(vec!["x".into(), "z".into()])
        );
        assert!(to_value(&set, None, MyValue::Int(8)).is_err());
        let en = ColumnType::Enum { labels };
        assert_eq!(
            to_value(&en, None, MyValue::UInt(0)).unwrap(),
            Value::Enum("".into())
        );
        assert!(to_value(&en, None, MyValue::UInt(4)).is_err());
        let bit = ColumnType::Bit { width: 10 };
        assert_eq!(
            to_value(&bit, None, MyValue::Bytes(vec![3, 255])).unwrap(),
            Value::Bit {
                bits: 1023,
                width: 10
            }
        );
        assert!(to_value(&bit, None, MyValue::Bytes(vec![4, 0])).is_err());
        let decimal = ColumnType::Decimal {
            precision: 5,
            scale: 2,
        };
        assert!(to_value(&decimal, None, MyValue::Bytes(b"1e5".to_vec())).is_err());
        let latin1 = ColumnType::Text {
            max_bytes: Some(10),
            charset: "latin1".into(),
        };
        let text = to_value(
            &latin1,
            Some(Charset::Latin1),
            MyValue::Bytes(vec![0x80, b'a']),
        );
        assert_eq!(text.unwrap(), Value::Text("€a".into()));
        assert!(to_value(&latin1, None, MyValue::Bytes(vec![b'a'])).is_err());
    }

    #[test]
    fn decimal_text_drops_zerofill_padding_only() {
        assert_eq!(decimal_text(b"001.50").unwrap(), "1.50");
        assert_eq!(decimal_text(b"000.05").unwrap(), "0.05");
        assert_eq!(decimal_text(b"0000000000").unwrap(), "0");
        assert_eq!(decimal_text(b"-12.340").unwrap(), "-12.340");
        assert_eq!(decimal_text(b"100").unwrap(), "100");
        for bad in [&b""[..], b"1e5", b"-", b".5", b"1.2.3", b"1.-2"] {
            assert!(decimal_text(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn mysql_json_text_is_compacted_outside_strings() {
        assert_eq!(
            compact_json(r#"{"a b": [1, 2.5, "x, \"y\": z"], "n": null}"#),
            r#"{"a b":[1,2.5,"x, \"y\": z"],"n":null}"#
        );
    }
}
