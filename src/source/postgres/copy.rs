//! Reading a Postgres table's existing rows, the source half of a snapshot: the table's schema,
//! key ranges several readers can copy in parallel, and the rows of one range.
//!
//! Guarantees:
//! - Copied rows are streamed rows: [`describe`] builds the Relation message pgoutput would send
//!   for the table from the catalog and feeds it to the same [`Assembler`] the replication stream
//!   uses, so [`table_schema`] equals (`==`) the `TableSchema` the reader emits, primary key and
//!   replica identity included; [`read_chunk`] reads `COPY ... TO STDOUT` text, which is the text
//!   of the same output functions pgoutput sends, under the same [`SESSION_SETTINGS`], and reads
//!   it with the same [`types::read_value`], so every value equals the streamed one.
//! - [`key_ranges`] covers the table with no overlap: each row is in exactly one range, rows
//!   inserted after the ranges were made included (the first range is unbounded below, the last
//!   unbounded above).
//! - Memory is bounded: [`ChunkRows`] holds the COPY data of one network message (one row) not
//!   yet parsed and at most one batch of parsed rows; nothing else grows with the chunk.
//! - Nothing here begins or ends transactions except [`begin_at_snapshot`]: the caller passes
//!   the connection, so several readers can copy inside transactions that imported one exported
//!   snapshot and see the same consistent point.
//! - Every problem is a [`CopyError`] naming `schema.table` and the range; no server data
//!   panics.
//!
//! Limits: values carried as text that embed a zone offset (arrays and ranges of `timestamptz`)
//! equal the streamed text when both sessions print in the same zone: the copy resets its
//! session to the default zone, which is the replication session's.
//! A publication with a column list (Postgres 15) streams only its columns, while the
//! copy describes every column; tables of such publications are not supported yet.

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio_postgres::{Client, CopyOutStream};

use super::assemble::{AssembleError, Assembler, reader_name};
use super::catalog::{self, CatalogError};
use super::pgoutput::{Lsn, PgOutputMessage, Relation, RelationColumn, ReplicaIdentity};
use super::slot::quote;
use super::types::{self, SESSION_SETTINGS, TextReader, ValueError};
use crate::error::ErrorKind;
use crate::event::{ColumnType, Row, TableId, TableSchema, Value};

/// Longest excerpt of a bad value quoted in an error.
const MAX_QUOTED_CHARS: usize = 64;

/// Why a table cannot be copied.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    /// A statement failed (connection lost, missing grant, snapshot no longer importable...).
    #[error("copying source table {table}: {doing}: {error}")]
    Sql {
        /// The table, `schema.table`.
        table: String,
        /// What was being done, naming the range when there is one.
        doing: String,
        /// The driver's error.
        #[source]
        error: tokio_postgres::Error,
    },
    /// The catalog facts behind the table's column types could not be read.
    #[error("copying source table {table}: {error}")]
    Catalog {
        /// The table, `schema.table`.
        table: String,
        /// What failed.
        #[source]
        error: CatalogError,
    },
    /// The catalog describes a table the assembler refuses (a bug: the catalog was read).
    #[error("copying source table {table}: {error}")]
    Describe {
        /// The table, `schema.table`.
        table: String,
        /// What the assembler said.
        #[source]
        error: AssembleError,
    },
    /// A column value that cannot be read (boxed: the error travels in every row's `Result`).
    #[error("{0}")]
    Value(Box<BadCopyValue>),
    /// COPY output that is not COPY text of the table's columns.
    #[error("copying source table {table}, {range}: {problem}")]
    Malformed {
        /// The table, `schema.table`.
        table: String,
        /// The range being copied.
        range: String,
        /// What is wrong.
        problem: String,
    },
    /// The exported snapshot could not be imported (the exporting transaction ended, or the
    /// connection failed).
    #[error("importing snapshot {snapshot} for a copy: {error}")]
    Snapshot {
        /// The snapshot's name.
        snapshot: String,
        /// The driver's error.
        #[source]
        error: tokio_postgres::Error,
    },
    /// A snapshot name Postgres never exports (it prints them as hex digits and dashes).
    #[error("snapshot name {0:?} is not one pg_export_snapshot or a new slot returns")]
    SnapshotName(String),
}

/// A copied column value that cannot be read, and where it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "copying source table {table}, {range}: row {row} of the chunk, column `{column}` ({type_name}): {problem} (value `{excerpt}`)"
)]
pub struct BadCopyValue {
    /// The table, `schema.table`.
    pub table: String,
    /// The range being copied.
    pub range: String,
    /// Row number within the chunk, from 1.
    pub row: u64,
    /// The column.
    pub column: String,
    /// What the column's type is read as.
    pub type_name: &'static str,
    /// The start of the value's text.
    pub excerpt: String,
    /// What is wrong.
    pub problem: ValueError,
}

impl CopyError {
    /// How the caller should react: a lost connection, a conflict or a restarting server is
    /// retried; a missing grant or object, or a refused snapshot, needs an operator; values
    /// that cannot be read are corrupt input (or beyond the event model, [`ErrorKind::Operator`]
    /// as for streamed values), never skipped.
    pub fn kind(&self) -> ErrorKind {
        match self {
            CopyError::Sql { error, .. } | CopyError::Snapshot { error, .. } => {
                sql_error_kind(error)
            }
            CopyError::Catalog { error, .. } => error.kind(),
            CopyError::Describe { error, .. } => error.kind(),
            CopyError::Value(bad) if matches!(bad.problem, ValueError::OutOfRange(_)) => {
                ErrorKind::Operator
            }
            CopyError::Value(_) | CopyError::Malformed { .. } => ErrorKind::Fatal,
            CopyError::SnapshotName(_) => ErrorKind::Fatal,
        }
    }
}

/// Connection loss (no server error), connection exceptions (08), serialization conflicts (40),
/// exhausted resources (53), a server shutting down (57) and system errors (58) are transient;
/// any other refusal by the server (a grant, a missing object, an unknown snapshot) is not.
fn sql_error_kind(error: &tokio_postgres::Error) -> ErrorKind {
    match error.as_db_error() {
        None => ErrorKind::Retry,
        Some(db) => match db.code().code().get(..2) {
            Some("08" | "40" | "53" | "57" | "58") => ErrorKind::Retry,
            _ => ErrorKind::Operator,
        },
    }
}

fn sql_error(
    table: &TableId,
    doing: impl Into<String>,
) -> impl FnOnce(tokio_postgres::Error) -> CopyError {
    let (table, doing) = (table.to_string(), doing.into());
    move |error| CopyError::Sql {
        table,
        doing,
        error,
    }
}

/// A table as a snapshot copies it: the schema the replication stream gives it, and how each
/// column's text is read.
#[derive(Debug, Clone)]
pub struct CopyTable {
    /// The table's shape, equal to the stream's.
    pub schema: Arc<TableSchema>,
    readers: Vec<TextReader>,
}

impl CopyTable {
    /// How each column's text is read, in column order.
    pub fn readers(&self) -> &[TextReader] {
        &self.readers
    }
}

/// The table `schema.table` (a plain or partitioned table), and how it is published.
const RELATION_SQL: &str = "SELECT c.oid, n.nspname::text, c.relname::text, c.relreplident::text \
     FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
     WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p')";

/// The columns pgoutput sends for relation `$1` with replica identity `$2`, as its Relation
/// message lists them: in attribute order, without dropped and generated columns; flagged as key
/// are every column (FULL), none (NOTHING), the primary key's (DEFAULT) or the replica identity
/// index's (USING INDEX).
const COLUMNS_SQL: &str = "SELECT a.attname::text, a.atttypid, a.atttypmod, \
     CASE $2::text WHEN 'f' THEN true WHEN 'n' THEN false ELSE EXISTS ( \
         SELECT 1 FROM pg_catalog.pg_index i WHERE i.indrelid = a.attrelid \
           AND a.attnum = ANY (i.indkey::int2[]) \
           AND CASE $2::text WHEN 'd' THEN i.indisprimary ELSE i.indisreplident END) END \
     FROM pg_catalog.pg_attribute a \
     WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = '' \
     ORDER BY a.attnum";

/// The schema of `schema.table`, equal to the `TableSchema` the pgoutput reader emits for it;
/// `None` when there is no such table.
pub async fn table_schema(
    client: &Client,
    schema: &str,
    table: &str,
) -> Result<Option<TableSchema>, CopyError> {
    Ok(describe(client, schema, table)
        .await?
        .map(|copy| (*copy.schema).clone()))
}

/// The table `schema.table` as [`read_chunk`] copies it (`None` when there is no such table):
/// the Relation message pgoutput would send for it, built from the catalog, fed to the stream's
/// own [`Assembler`] after the same catalog lookups, so the schema and the value readers are the
/// stream's, by construction.
pub async fn describe(
    client: &Client,
    schema: &str,
    table: &str,
) -> Result<Option<CopyTable>, CopyError> {
    let id = TableId::new(schema, table);
    let Some(row) = client
        .query_opt(RELATION_SQL, &[&schema, &table])
        .await
        .map_err(sql_error(&id, "reading pg_class"))?
    else {
        return Ok(None);
    };
    let read = |error| sql_error(&id, "reading pg_class")(error);
    let oid: u32 = row.try_get(0).map_err(read)?;
    let namespace: String = row.try_get(1).map_err(read)?;
    let name: String = row.try_get(2).map_err(read)?;
    let identity: String = row.try_get(3).map_err(read)?;
    let replica_identity = match identity.as_str() {
        "d" => ReplicaIdentity::Default,
        "n" => ReplicaIdentity::Nothing,
        "f" => ReplicaIdentity::Full,
        "i" => ReplicaIdentity::Index,
        other => {
            return Err(CopyError::Malformed {
                table: id.to_string(),
                range: "describing the table".into(),
                problem: format!("pg_class.relreplident is {other:?}, none Postgres defines"),
            });
        }
    };
    let columns = client
        .query(COLUMNS_SQL, &[&oid, &identity])
        .await
        .map_err(sql_error(&id, "reading pg_attribute"))?
        .iter()
        .map(|row| {
            Ok(RelationColumn {
                name: row.try_get(0)?,
                type_oid: row.try_get(1)?,
                type_modifier: row.try_get(2)?,
                is_key: row.try_get(3)?,
            })
        })
        .collect::<Result<Vec<_>, tokio_postgres::Error>>()
        .map_err(sql_error(&id, "reading pg_attribute"))?;
    let relation = Relation {
        oid,
        namespace,
        name,
        replica_identity,
        columns,
    };
    let mut assembler = Assembler::new(Arc::from("snapshot"));
    let needs = assembler.catalog_needs(&relation);
    if !needs.is_empty() {
        let facts = catalog::fetch(client, &needs)
            .await
            .map_err(|error| CopyError::Catalog {
                table: id.to_string(),
                error,
            })?;
        assembler.learn(facts);
    }
    // A Relation message outside a transaction is legal (it describes, it does not change).
    let mut out = Vec::new();
    assembler
        .feed(&PgOutputMessage::Relation(relation), Lsn(0), &mut out)
        .map_err(|error| CopyError::Describe {
            table: id.to_string(),
            error,
        })?;
    match (assembler.schema_of(oid), assembler.readers_of(oid)) {
        (Some(schema), Some(readers)) => Ok(Some(CopyTable {
            schema: schema.clone(),
            readers: readers.to_vec(),
        })),
        _ => Err(CopyError::Malformed {
            table: id.to_string(),
            range: "describing the table".into(),
            problem: "the assembler kept no schema for its Relation message".into(),
        }),
    }
}

/// Which rows of a table one chunk holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Bounds {
    /// Rows whose key (`columns`, in key order, compared as a row) is at least `from` and below
    /// `to`; `None` is unbounded. Key values are the text Postgres prints for them, read back
    /// as the columns' types.
    Key {
        /// The key columns, in key order.
        columns: Vec<Arc<str>>,
        /// Inclusive lower bound, one value per key column.
        from: Option<Vec<String>>,
        /// Exclusive upper bound, one value per key column.
        to: Option<Vec<String>>,
    },
    /// Rows stored in heap pages `from` up to (not including) `to`; `None` is unbounded.
    Pages {
        /// First page.
        from: u32,
        /// First page after the range.
        to: Option<u32>,
    },
}

/// One chunk of a table: a range of rows one reader copies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRange {
    /// The table.
    pub table: TableId,
    /// Its rows in this chunk.
    pub bounds: Bounds,
}

impl fmt::Display for KeyRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.bounds {
            Bounds::Key { columns, from, to } => {
                let values = |v: &Option<Vec<String>>, unbounded: &str| {
                    v.as_ref()
                        .map_or_else(|| unbounded.to_owned(), |v| format!("({})", v.join(", ")))
                };
                write!(
                    f,
                    "rows with key ({}) in [{}, {})",
                    columns.join(", "),
                    values(from, "-inf"),
                    values(to, "+inf")
                )
            }
            Bounds::Pages { from, to } => match to {
                Some(to) => write!(f, "rows in pages [{from}, {to})"),
                None => write!(f, "rows in pages [{from}, +inf)"),
            },
        }
    }
}

impl KeyRange {
    /// Every row of `table`: how a table without a key is copied, in one chunk.
    pub fn whole(table: TableId) -> KeyRange {
        KeyRange {
            table,
            bounds: Bounds::Key {
                columns: Vec::new(),
                from: None,
                to: None,
            },
        }
    }

    /// The range's bounds as JSON, to be stored in a snapshot's progress and read back by
    /// [`KeyRange::from_json`].
    pub fn to_json(&self) -> Option<serde_json::Value> {
        serde_json::to_value(&self.bounds).ok()
    }

    /// The range of `table` whose bounds [`KeyRange::to_json`] stored; `None` when `json` is
    /// not such bounds.
    pub fn from_json(table: TableId, json: &serde_json::Value) -> Option<KeyRange> {
        let bounds = serde_json::from_value(json.clone()).ok()?;
        Some(KeyRange { table, bounds })
    }

    /// The SQL condition selecting this range's rows.
    fn condition(&self) -> String {
        match &self.bounds {
            Bounds::Key { columns, from, to } => {
                let key = row_expression(columns.iter().map(|c| quote(c)));
                let mut parts = Vec::new();
                if let Some(from) = from {
                    parts.push(format!(
                        "{key} >= {}",
                        row_expression(from.iter().map(|v| literal(v)))
                    ));
                }
                if let Some(to) = to {
                    parts.push(format!(
                        "{key} < {}",
                        row_expression(to.iter().map(|v| literal(v)))
                    ));
                }
                if parts.is_empty() {
                    "true".to_owned()
                } else {
                    parts.join(" AND ")
                }
            }
            // Postgres 14+ reads a ctid range with a TID range scan: only those pages.
            Bounds::Pages { from, to } => match to {
                Some(to) => format!("ctid >= '({from},0)'::tid AND ctid < '({to},0)'::tid"),
                None => format!("ctid >= '({from},0)'::tid"),
            },
        }
    }
}

/// `a` for one item, `ROW(a, b)` for several: a multi-column key compares as a row, which is
/// the key's own (btree) order.
fn row_expression(items: impl Iterator<Item = String>) -> String {
    let items: Vec<String> = items.collect();
    match items.as_slice() {
        [one] => one.clone(),
        _ => format!("ROW({})", items.join(", ")),
    }
}

/// A string literal of `text`, untyped so it is read as the column's type. Chunk reads run with
/// `standard_conforming_strings = on`, where a backslash is an ordinary character.
fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// `schema.table`, quoted.
fn qualified(table: &TableId) -> String {
    format!("{}.{}", quote(&table.namespace), quote(&table.name))
}

/// Splits `schema`'s table into chunks of about `chunk_rows` rows that together hold every row
/// exactly once:
/// - a single integer key: equal slices of the key space between its minimum and maximum, as
///   many as the row count calls for (two cheap index lookups; skewed keys make uneven chunks);
/// - any other key: a boundary at every `chunk_rows`-th key in key order (one ordered scan of
///   the key, exact chunk sizes whatever the distribution);
/// - no key: ranges of heap pages (CTID), sized by the table's rows per page; the last range is
///   unbounded, so rows in pages added later are still read.
///
/// The first range is unbounded below and the last unbounded above, so keys inserted outside
/// the bounds seen now are copied too. An empty table is one unbounded range.
pub async fn key_ranges(
    client: &Client,
    schema: &TableSchema,
    chunk_rows: u64,
) -> Result<Vec<KeyRange>, CopyError> {
    let chunk_rows = chunk_rows.max(1);
    let key: Vec<Arc<str>> = schema
        .primary_key
        .iter()
        .filter_map(|&k| schema.columns.get(k).map(|c| c.name.clone()))
        .collect();
    let ranges = |cuts: Vec<Vec<String>>, columns: Vec<Arc<str>>| {
        bounded_by(cuts.into_iter().map(Some))
            .map(|(from, to)| KeyRange {
                table: schema.id.clone(),
                bounds: Bounds::Key {
                    columns: columns.clone(),
                    from,
                    to,
                },
            })
            .collect()
    };
    match key.as_slice() {
        [] => page_ranges(client, schema, chunk_rows).await,
        [column] if is_signed_int(schema, 0) => {
            let cuts = integer_cuts(client, schema, column, chunk_rows).await?;
            Ok(ranges(
                cuts.into_iter().map(|c| vec![c.to_string()]).collect(),
                key,
            ))
        }
        _ => {
            let cuts = sampled_cuts(client, schema, &key, chunk_rows).await?;
            Ok(ranges(cuts, key))
        }
    }
}

/// True when the `n`th key column is a signed integer (the key-space split needs arithmetic).
fn is_signed_int(schema: &TableSchema, n: usize) -> bool {
    schema
        .primary_key
        .get(n)
        .and_then(|&k| schema.columns.get(k))
        .is_some_and(|c| {
            matches!(
                c.ty,
                ColumnType::Int {
                    unsigned: false,
                    ..
                }
            )
        })
}

/// `(from, to)` pairs between consecutive cuts, unbounded at both ends.
fn bounded_by<T: Clone>(
    cuts: impl Iterator<Item = Option<T>>,
) -> impl Iterator<Item = (Option<T>, Option<T>)> {
    let mut edges: Vec<Option<T>> = vec![None];
    edges.extend(cuts);
    edges.push(None);
    let pairs: Vec<(Option<T>, Option<T>)> = edges
        .windows(2)
        .map(|w| (w[0].clone(), w[1].clone()))
        .collect();
    pairs.into_iter()
}

/// How many chunks `rows` rows make.
fn chunk_count(rows: u64, chunk_rows: u64) -> u64 {
    rows.div_ceil(chunk_rows).max(1)
}

/// The table's row count: the planner's estimate once the table was analyzed or vacuumed,
/// otherwise counted (a new table, where counting is what the estimate would cost anyway).
async fn row_estimate(client: &Client, table: &TableId) -> Result<u64, CopyError> {
    let name = qualified(table);
    let row = client
        .query_one(
            "SELECT c.reltuples::float8 FROM pg_catalog.pg_class c WHERE c.oid = $1::text::regclass",
            &[&name],
        )
        .await
        .map_err(sql_error(table, "reading pg_class.reltuples"))?;
    let estimate: f64 = row
        .try_get(0)
        .map_err(sql_error(table, "reading pg_class.reltuples"))?;
    if estimate > 0.0 {
        // Saturating: an estimate is a float, and any size is fine for a chunk count.
        return Ok(estimate as u64);
    }
    let row = client
        .query_one(&format!("SELECT count(*) FROM {name}"), &[])
        .await
        .map_err(sql_error(table, "counting rows"))?;
    let count: i64 = row.try_get(0).map_err(sql_error(table, "counting rows"))?;
    Ok(u64::try_from(count).unwrap_or(0))
}

/// Cut points splitting the integer key's range `[min, max]` into equal slices.
async fn integer_cuts(
    client: &Client,
    schema: &TableSchema,
    column: &str,
    chunk_rows: u64,
) -> Result<Vec<i64>, CopyError> {
    let sql = format!(
        "SELECT min({c})::int8, max({c})::int8 FROM {t}",
        c = quote(column),
        t = qualified(&schema.id)
    );
    let doing = "reading the key's minimum and maximum";
    let row = client
        .query_one(&sql, &[])
        .await
        .map_err(sql_error(&schema.id, doing))?;
    let min: Option<i64> = row.try_get(0).map_err(sql_error(&schema.id, doing))?;
    let max: Option<i64> = row.try_get(1).map_err(sql_error(&schema.id, doing))?;
    let (Some(min), Some(max)) = (min, max) else {
        return Ok(Vec::new());
    };
    let rows = row_estimate(client, &schema.id).await?;
    Ok(split_integers(min, max, chunk_count(rows, chunk_rows)))
}

/// `chunks - 1` cut points dividing `[min, max]` into slices of equal width (fewer when the
/// range holds fewer values). i128: `max - min` of an int8 key may not fit i64.
fn split_integers(min: i64, max: i64, chunks: u64) -> Vec<i64> {
    let span = i128::from(max) - i128::from(min) + 1;
    let chunks = i128::from(chunks).clamp(1, span.max(1));
    let step = (span + chunks - 1) / chunks;
    (1..chunks)
        .filter_map(|i| i64::try_from(i128::from(min) + i * step).ok())
        .filter(|&cut| cut <= max)
        .collect()
}

/// Every `chunk_rows`-th key (the 1st of each chunk but the first), in key order.
async fn sampled_cuts(
    client: &Client,
    schema: &TableSchema,
    key: &[Arc<str>],
    chunk_rows: u64,
) -> Result<Vec<Vec<String>>, CopyError> {
    let columns: Vec<String> = key.iter().map(|c| quote(c)).collect();
    let texts: Vec<String> = columns.iter().map(|c| format!("{c}::text")).collect();
    let sql = format!(
        "SELECT {texts} FROM (SELECT {cols}, row_number() OVER (ORDER BY {cols}) AS tidemark_rn \
         FROM {table}) s WHERE (tidemark_rn - 1) % $1 = 0 AND tidemark_rn > 1 ORDER BY tidemark_rn",
        texts = texts.join(", "),
        cols = columns.join(", "),
        table = qualified(&schema.id)
    );
    let doing = "reading the key boundaries of the chunks";
    let every = i64::try_from(chunk_rows).unwrap_or(i64::MAX);
    // The key's text must read back as the same key: the copy session's settings.
    set_session(client, &schema.id).await?;
    let rows = client
        .query(&sql, &[&every])
        .await
        .map_err(sql_error(&schema.id, doing))?;
    rows.iter()
        .map(|row| {
            (0..key.len())
                .map(|i| {
                    let value: Option<String> =
                        row.try_get(i).map_err(sql_error(&schema.id, doing))?;
                    value.ok_or_else(|| CopyError::Malformed {
                        table: schema.id.to_string(),
                        range: "choosing chunks".into(),
                        problem: format!("key column `{}` holds NULL", key[i]),
                    })
                })
                .collect()
        })
        .collect()
}

/// Page ranges of about `chunk_rows` rows each, the last unbounded.
async fn page_ranges(
    client: &Client,
    schema: &TableSchema,
    chunk_rows: u64,
) -> Result<Vec<KeyRange>, CopyError> {
    let doing = "reading the table's size";
    // The file's size now, not pg_class.relpages: that is only as recent as the last VACUUM or
    // ANALYZE (0 for a table never analyzed).
    let row = client
        .query_one(
            "SELECT pg_catalog.pg_relation_size($1::text::regclass) \
             / current_setting('block_size')::int8",
            &[&qualified(&schema.id)],
        )
        .await
        .map_err(sql_error(&schema.id, doing))?;
    let pages: i64 = row.try_get(0).map_err(sql_error(&schema.id, doing))?;
    let pages = u32::try_from(pages).unwrap_or(u32::MAX);
    let rows = if pages == 0 {
        0
    } else {
        row_estimate(client, &schema.id).await?
    };
    let cuts = split_pages(pages, chunk_count(rows, chunk_rows));
    Ok(bounded_by(cuts.into_iter().map(Some))
        .map(|(from, to)| KeyRange {
            table: schema.id.clone(),
            bounds: Bounds::Pages {
                from: from.unwrap_or(0),
                to,
            },
        })
        .collect())
}

/// `chunks - 1` page numbers dividing pages `[0, pages)` evenly (none for an empty table).
fn split_pages(pages: u32, chunks: u64) -> Vec<u32> {
    let chunks = chunks.clamp(1, u64::from(pages.max(1)));
    let step = u64::from(pages).div_ceil(chunks).max(1);
    (1..chunks)
        .filter_map(|i| u32::try_from(i * step).ok())
        .filter(|&cut| cut < pages)
        .collect()
}

/// Sets [`SESSION_SETTINGS`] (and `standard_conforming_strings`, which range literals rely on)
/// on the caller's session: COPY prints values with the output functions pgoutput uses, and
/// these settings make them print what [`types`] reads.
///
/// `TimeZone` is reset to the session's default: the replication session sets none, so its
/// walsender prints with the server's, database's or role's default zone, and so does this
/// session after the reset (neither driver sends a zone at startup). That matters for values
/// carried as text that embed an offset: arrays and ranges of `timestamptz` print each instant
/// in the session's zone.
async fn set_session(client: &Client, table: &TableId) -> Result<(), CopyError> {
    let mut sql = String::from("RESET TimeZone; SET standard_conforming_strings = on;");
    for (name, value) in SESSION_SETTINGS {
        sql.push_str(&format!(" SET {name} = {};", literal(value)));
    }
    client
        .batch_execute(&sql)
        .await
        .map_err(sql_error(table, "setting the copy session's settings"))
}

/// Opens a transaction that sees exactly what the exported snapshot `snapshot` saw
/// (`REPEATABLE READ`, read only), for [`read_chunk`] to copy in. The caller ends it with
/// `COMMIT`. Every reader importing the same snapshot sees the same rows, while writers go on.
/// The snapshot of a new slot's start comes from
/// [`super::stream::create_slot_exporting_snapshot`].
pub async fn begin_at_snapshot(client: &Client, snapshot: &str) -> Result<(), CopyError> {
    if snapshot.is_empty() || !snapshot.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
        return Err(CopyError::SnapshotName(snapshot.to_owned()));
    }
    let sql = format!(
        "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY; SET TRANSACTION SNAPSHOT {}",
        literal(snapshot)
    );
    if let Err(error) = client.batch_execute(&sql).await {
        // Leave the connection usable: a failed SET leaves the transaction aborted.
        let _ = client.batch_execute("ROLLBACK").await;
        return Err(CopyError::Snapshot {
            snapshot: snapshot.to_owned(),
            error,
        });
    }
    Ok(())
}

/// Starts copying `range` of `table` through `client` (inside whatever transaction the caller
/// opened, such as [`begin_at_snapshot`]'s); the rows come from [`ChunkRows::next_batch`], at
/// most `batch_rows` at a time. Sets the copy's session settings on `client` first (plain
/// `SET`: they outlive the transaction).
pub async fn read_chunk(
    client: &Client,
    table: &CopyTable,
    range: &KeyRange,
    batch_rows: usize,
) -> Result<ChunkRows, CopyError> {
    let schema = &table.schema;
    set_session(client, &schema.id).await?;
    let columns: Vec<String> = schema.columns.iter().map(|c| quote(&c.name)).collect();
    let sql = format!(
        "COPY (SELECT {} FROM {} WHERE {}) TO STDOUT",
        columns.join(", "),
        qualified(&schema.id),
        range.condition()
    );
    let stream = client
        .copy_out(&sql)
        .await
        .map_err(sql_error(&schema.id, format!("starting COPY of {range}")))?;
    Ok(ChunkRows {
        stream: Box::pin(stream),
        table: table.clone(),
        range: range.to_string(),
        pending: Vec::new(),
        fields: Vec::new(),
        rows_read: 0,
        batch_rows: batch_rows.max(1),
        done: false,
    })
}

/// The rows of one chunk as COPY streams them.
pub struct ChunkRows {
    stream: Pin<Box<CopyOutStream>>,
    table: CopyTable,
    range: String,
    /// COPY data not yet parsed: the start of a row whose end has not arrived.
    pending: Vec<u8>,
    /// Reused field buffer: each field's bytes, unescaped, or `None` for NULL.
    fields: Vec<Option<Vec<u8>>>,
    rows_read: u64,
    batch_rows: usize,
    done: bool,
}

impl fmt::Debug for ChunkRows {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChunkRows")
            .field("table", &self.table.schema.id)
            .field("range", &self.range)
            .field("rows_read", &self.rows_read)
            .finish_non_exhaustive()
    }
}

impl ChunkRows {
    /// Replaces `out` with the next rows (at most the batch size), in the table's column order;
    /// false once the chunk is exhausted (and `out` is empty).
    pub async fn next_batch(&mut self, out: &mut Vec<Row>) -> Result<bool, CopyError> {
        out.clear();
        let mut consumed = 0;
        loop {
            while out.len() < self.batch_rows {
                let Some(end) = self.pending[consumed..].iter().position(|&b| b == b'\n') else {
                    break;
                };
                let line_end = consumed + end;
                let row = self.parse_row(consumed, line_end)?;
                out.push(row);
                consumed = line_end + 1;
            }
            if out.len() >= self.batch_rows || self.done {
                break;
            }
            match self.stream.next().await {
                Some(Ok(data)) => {
                    self.pending.drain(..consumed);
                    consumed = 0;
                    self.pending.extend_from_slice(&data);
                }
                Some(Err(error)) => {
                    return Err(CopyError::Sql {
                        table: self.table.schema.id.to_string(),
                        doing: format!("reading COPY of {}", self.range),
                        error,
                    });
                }
                None => self.done = true,
            }
        }
        self.pending.drain(..consumed);
        if self.done && out.len() < self.batch_rows && !self.pending.is_empty() {
            return Err(self.malformed("the COPY data ends inside a row".into()));
        }
        Ok(!out.is_empty())
    }

    /// Rows handed out so far.
    pub fn rows_read(&self) -> u64 {
        self.rows_read
    }

    fn malformed(&self, problem: String) -> CopyError {
        CopyError::Malformed {
            table: self.table.schema.id.to_string(),
            range: self.range.clone(),
            problem,
        }
    }

    /// The row in `pending[start..end]` (one line of COPY text, without its newline).
    fn parse_row(&mut self, start: usize, end: usize) -> Result<Row, CopyError> {
        self.rows_read += 1;
        let line = self.pending.get(start..end).unwrap_or_default();
        split_copy_line(line, &mut self.fields);
        let readers = &self.table.readers;
        if self.fields.len() != readers.len() {
            let problem = format!(
                "row {} has {} columns, the table {}",
                self.rows_read,
                self.fields.len(),
                readers.len()
            );
            return Err(self.malformed(problem));
        }
        let mut row = Vec::with_capacity(readers.len());
        for (i, (field, &reader)) in self.fields.iter_mut().zip(readers).enumerate() {
            let taken = field.as_mut().and_then(|bytes| take_text(reader, bytes));
            let value = match (taken, field) {
                (Some(value), _) => value,
                (None, None) => Value::Null,
                (None, Some(bytes)) => types::read_value(reader, bytes).map_err(|problem| {
                    CopyError::Value(Box::new(BadCopyValue {
                        table: self.table.schema.id.to_string(),
                        range: self.range.clone(),
                        row: self.rows_read,
                        column: self
                            .table
                            .schema
                            .columns
                            .get(i)
                            .map_or_else(String::new, |c| c.name.to_string()),
                        type_name: reader_name(reader),
                        excerpt: excerpt(bytes),
                        problem,
                    }))
                })?,
            };
            row.push(value);
        }
        Ok(row)
    }
}

/// A text or JSON field taken as it is, without a copy; `None` (the field left as it was) for
/// another type or text that is not UTF-8, which [`types::read_value`] then reads or refuses.
fn take_text(reader: TextReader, bytes: &mut Vec<u8>) -> Option<Value> {
    let wrap = match reader {
        TextReader::Text => Value::Text,
        TextReader::Json => Value::Json,
        _ => return None,
    };
    match String::from_utf8(std::mem::take(bytes)) {
        Ok(text) => Some(wrap(text)),
        Err(error) => {
            *bytes = error.into_bytes();
            None
        }
    }
}

/// Splits one line of COPY text into its fields: tab-separated, `\N` alone is NULL, and the
/// backslash escapes COPY TO writes (`\b \f \n \r \t \v \\`, and for input also octal `\NNN`
/// and hex `\xHH`) are undone. The newline and tab delimiters never occur inside a field: COPY
/// escapes them.
pub fn split_copy_line(line: &[u8], fields: &mut Vec<Option<Vec<u8>>>) {
    fields.clear();
    let mut start = 0;
    for end in memchr::memchr_iter(b'\t', line).chain([line.len()]) {
        let raw = &line[start..end];
        start = end + 1;
        if raw == b"\\N" {
            fields.push(None);
            continue;
        }
        // Most fields hold no escape: copy them whole.
        let Some(first) = memchr::memchr(b'\\', raw) else {
            fields.push(Some(raw.to_vec()));
            continue;
        };
        let mut value = Vec::with_capacity(raw.len());
        value.extend_from_slice(&raw[..first]);
        unescape_copy_text(&raw[first..], &mut value);
        fields.push(Some(value));
    }
}

/// Appends `raw` to `value` with COPY text's backslash escapes undone.
fn unescape_copy_text(raw: &[u8], value: &mut Vec<u8>) {
    let mut i = 0;
    while i < raw.len() {
        let Some(at) = memchr::memchr(b'\\', &raw[i..]) else {
            value.extend_from_slice(&raw[i..]);
            return;
        };
        value.extend_from_slice(&raw[i..i + at]);
        i += at + 1;
        let Some(&next) = raw.get(i) else {
            // A trailing lone backslash: kept, as COPY FROM does.
            value.push(b'\\');
            return;
        };
        i += 1;
        match next {
            b'b' => value.push(0x08),
            b'f' => value.push(0x0C),
            b'n' => value.push(b'\n'),
            b'r' => value.push(b'\r'),
            b't' => value.push(b'\t'),
            b'v' => value.push(0x0B),
            b'0'..=b'7' => {
                let mut code = u32::from(next - b'0');
                for _ in 0..2 {
                    match raw.get(i) {
                        Some(&d @ b'0'..=b'7') => {
                            code = code * 8 + u32::from(d - b'0');
                            i += 1;
                        }
                        _ => break,
                    }
                }
                value.push((code & 0xFF) as u8);
            }
            b'x' if raw.get(i).is_some_and(u8::is_ascii_hexdigit) => {
                let mut code = 0u8;
                for _ in 0..2 {
                    match raw.get(i).and_then(|d| char::from(*d).to_digit(16)) {
                        Some(d) => {
                            code = code * 16 + d as u8;
                            i += 1;
                        }
                        None => break,
                    }
                }
                value.push(code);
            }
            other => value.push(other),
        }
    }
}

/// The start of a value's text, for an error message.
fn excerpt(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    match text.char_indices().nth(MAX_QUOTED_CHARS) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text.into_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(line: &str) -> Vec<Option<String>> {
        let mut out = Vec::new();
        split_copy_line(line.as_bytes(), &mut out);
        out.into_iter()
            .map(|f| f.map(|b| String::from_utf8_lossy(&b).into_owned()))
            .collect()
    }

    #[test]
    fn copy_text_fields_are_unescaped_and_null_is_only_a_lone_backslash_n() {
        assert_eq!(
            fields("1\t\\N\ta\\tb\\nc\\\\d\t\\\\N\t\t\\x41\\101"),
            vec![
                Some("1".into()),
                None,
                Some("a\tb\nc\\d".into()),
                Some("\\N".into()),
                Some(String::new()),
                Some("AA".into()),
            ]
        );
        assert_eq!(fields(""), vec![Some(String::new())]);
    }

    #[test]
    fn values_beyond_the_event_model_need_an_operator_and_corrupt_ones_are_fatal() {
        let bad = |problem| {
            CopyError::Value(Box::new(BadCopyValue {
                table: "shop.t".into(),
                range: "rows in pages [0, +inf)".into(),
                row: 7,
                column: "at".into(),
                type_name: "timestamptz",
                excerpt: "294276-12-31 23:59:59+00".into(),
                problem,
            }))
        };
        let out_of_range = bad(ValueError::OutOfRange("too late".into()));
        assert_eq!(out_of_range.kind(), ErrorKind::Operator);
        assert!(
            out_of_range
                .to_string()
                .starts_with("copying source table shop.t, rows in pages [0, +inf): row 7")
        );
        assert_eq!(
            bad(ValueError::Malformed("no".into())).kind(),
            ErrorKind::Fatal
        );
    }

    #[test]
    fn integer_keys_split_into_equal_slices_even_across_the_whole_int8_range() {
        assert_eq!(split_integers(1, 100, 4), vec![26, 51, 76]);
        assert_eq!(split_integers(5, 5, 10), Vec::<i64>::new());
        assert_eq!(split_integers(1, 3, 10), vec![2, 3]);
        let cuts = split_integers(i64::MIN, i64::MAX, 4);
        assert_eq!(cuts.len(), 3);
        assert!(cuts.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn pages_split_evenly_and_an_empty_table_is_one_range() {
        assert_eq!(split_pages(100, 4), vec![25, 50, 75]);
        assert_eq!(split_pages(0, 4), Vec::<u32>::new());
        assert_eq!(split_pages(3, 10), vec![1, 2]);
        let ranges: Vec<_> = bounded_by(vec![Some(1), Some(2)].into_iter()).collect();
        assert_eq!(
            ranges,
            vec![(None, Some(1)), (Some(1), Some(2)), (Some(2), None)]
        );
    }

    #[test]
    fn range_conditions_compare_composite_keys_as_rows_and_quote_literals() {
        let range = KeyRange {
            table: TableId::new("shop", "t"),
            bounds: Bounds::Key {
                columns: vec!["a".into(), "b".into()],
                from: Some(vec!["it's".into(), "1".into()]),
                to: None,
            },
        };
        assert_eq!(range.condition(), r#"ROW("a", "b") >= ROW('it''s', '1')"#);
        assert_eq!(
            range.to_string(),
            "rows with key (a, b) in [(it's, 1), +inf)"
        );
    }
}
