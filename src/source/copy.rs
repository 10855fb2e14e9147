//! Copying a source's existing rows, whatever its kind: which tables it has, how one table is
//! split into chunks, and the rows of one chunk. The one place that maps a source kind to its
//! table reader (`mysql::copy`, `postgres::copy`), as [`super::open`] is for change logs.
//!
//! A chunk is described by JSON its kind writes and reads back ([`TablePlan::chunks`]), so a
//! snapshot can store its plan in the warehouse and resume it after a crash with the very same
//! ranges. Each call opens its own connection: chunks are read in parallel, one per task.

use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Duration;

use mysql_async::prelude::Queryable;

use super::mysql::copy as mysql_copy;
use super::postgres::copy as pg_copy;
use crate::config::{SourceConfig, SourceSettings};
use crate::error::ErrorKind;
use crate::event::{Row, TableId, TableSchema};

/// How long connecting to the source for a copy may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a table could not be listed, planned or copied.
#[derive(Debug, thiserror::Error)]
pub enum TableCopyError {
    /// A MySQL/MariaDB table.
    #[error(transparent)]
    Mysql(#[from] mysql_copy::CopyError),
    /// A Postgres table.
    #[error(transparent)]
    Postgres(#[from] pg_copy::CopyError),
    /// The source could not be reached or queried for its tables.
    #[error("source {source_id}: {doing}: {message}")]
    Source {
        /// The source.
        source_id: String,
        /// What was being done.
        doing: &'static str,
        /// What failed (credentials scrubbed).
        message: String,
    },
    /// A stored chunk that is not one its kind wrote (the progress record was edited, or
    /// written by another release).
    #[error(
        "source {source_id}: the stored snapshot chunk {chunk} of table {table} cannot be read back; copy the table again with `tidemark snapshot --source {source_id} --table {table}`"
    )]
    BadChunk {
        /// The source.
        source_id: String,
        /// The table.
        table: TableId,
        /// The chunk's JSON.
        chunk: String,
    },
}

impl TableCopyError {
    /// Whether retrying can help.
    pub fn kind(&self) -> ErrorKind {
        match self {
            TableCopyError::Mysql(e) => e.kind(),
            TableCopyError::Postgres(e) => e.kind(),
            TableCopyError::Source { .. } => ErrorKind::Retry,
            TableCopyError::BadChunk { .. } => ErrorKind::Operator,
        }
    }
}

/// How a table is copied: its shape when planned and its chunks, in key order.
#[derive(Debug, Clone)]
pub struct TablePlan {
    /// The table's shape (equal to the one its change log gives).
    pub schema: Arc<TableSchema>,
    /// The chunks, each as its kind stores it; together they cover every row once.
    pub chunks: Vec<serde_json::Value>,
}

/// The source's tables that its `include`/`exclude` select, in name order: the tables a
/// snapshot of the whole source copies.
pub async fn included_tables(source: &SourceConfig) -> Result<Vec<TableId>, TableCopyError> {
    let all = match &source.settings {
        SourceSettings::Mysql(_) => {
            let mut conn = mysql_connect(source).await?;
            let rows: Vec<(String, String)> = conn
                .query(
                    "SELECT TABLE_SCHEMA, TABLE_NAME FROM information_schema.TABLES \
                     WHERE TABLE_TYPE = 'BASE TABLE' AND TABLE_SCHEMA NOT IN \
                     ('mysql', 'information_schema', 'performance_schema', 'sys') \
                     ORDER BY TABLE_SCHEMA, TABLE_NAME",
                )
                .await
                .map_err(source_error(source, "listing tables"))?;
            let _ = conn.disconnect().await;
            rows
        }
        SourceSettings::Postgres(_) => {
            let client = pg_connect(source).await?;
            client
                .query(
                    "SELECT n.nspname::text, c.relname::text FROM pg_catalog.pg_class c \
                     JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
                     WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition \
                     AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
                     AND n.nspname NOT LIKE 'pg\\_toast%' ORDER BY 1, 2",
                    &[],
                )
                .await
                .map_err(source_error(source, "listing tables"))?
                .iter()
                .map(|row| (row.get(0), row.get(1)))
                .collect()
        }
    };
    Ok(all
        .into_iter()
        .filter(|(namespace, name)| source.includes_table(namespace, name))
        .map(|(namespace, name)| TableId::new(namespace, name))
        .collect())
}

/// Splits `table` into chunks of about `chunk_rows` rows; `None` when the table does not exist.
/// A table without a key is one chunk, with a warning naming it.
pub async fn plan_table(
    source: &SourceConfig,
    table: &TableId,
    chunk_rows: u64,
) -> Result<Option<TablePlan>, TableCopyError> {
    let (schema, chunks) = match &source.settings {
        SourceSettings::Mysql(_) => {
            let mut conn = mysql_connect(source).await?;
            let Some(schema) =
                mysql_copy::table_schema(&mut conn, &table.namespace, &table.name).await?
            else {
                return Ok(None);
            };
            let chunks = if schema.has_key() {
                mysql_copy::key_ranges(&mut conn, &schema, chunk_rows).await?
            } else {
                vec![mysql_copy::KeyRange::all()]
            };
            let _ = conn.disconnect().await;
            let chunks = chunks.iter().map(mysql_copy::KeyRange::to_json).collect();
            (schema, chunks)
        }
        SourceSettings::Postgres(_) => {
            let client = pg_connect(source).await?;
            let Some(schema) =
                pg_copy::table_schema(&client, &table.namespace, &table.name).await?
            else {
                return Ok(None);
            };
            let chunks = if schema.has_key() {
                pg_copy::key_ranges(&client, &schema, chunk_rows).await?
            } else {
                vec![pg_copy::KeyRange::whole(table.clone())]
            };
            (
                schema,
                chunks.iter().map(pg_copy::KeyRange::to_json).collect(),
            )
        }
    };
    if !schema.has_key() {
        tracing::warn!(source = %source.id, table = %table, "table has no primary key: copied whole, in one chunk, and loaded in append mode (rows changed while it is copied may appear twice)");
    }
    let chunks: Option<Vec<serde_json::Value>> = chunks;
    let chunks = chunks.ok_or_else(|| TableCopyError::BadChunk {
        source_id: source.id.clone(),
        table: table.clone(),
        chunk: "(a key bound that cannot be stored)".into(),
    })?;
    Ok(Some(TablePlan {
        schema: Arc::new(schema),
        chunks,
    }))
}

/// Reads the rows of one stored `chunk` of `table`, handing them to `on_rows` with the table's
/// current shape, at most `batch_rows` at a time, until it returns `Break`; the first call has
/// no rows, so that the shape is known even for an empty chunk. Returns the rows
/// read, or `None` when the table no longer exists.
pub async fn copy_chunk<F>(
    source: &SourceConfig,
    table: &TableId,
    chunk: &serde_json::Value,
    batch_rows: usize,
    mut on_rows: F,
) -> Result<Option<u64>, TableCopyError>
where
    F: FnMut(&Arc<TableSchema>, Vec<Row>) -> ControlFlow<()> + Send,
{
    let bad_chunk = || TableCopyError::BadChunk {
        source_id: source.id.clone(),
        table: table.clone(),
        chunk: chunk.to_string(),
    };
    match &source.settings {
        SourceSettings::Mysql(_) => {
            let range = mysql_copy::KeyRange::from_json(chunk).ok_or_else(bad_chunk)?;
            let mut conn = mysql_connect(source).await?;
            let Some(schema) =
                mysql_copy::table_schema(&mut conn, &table.namespace, &table.name).await?
            else {
                return Ok(None);
            };
            let schema = Arc::new(schema);
            if on_rows(&schema, Vec::new()).is_break() {
                return Ok(Some(0));
            }
            let rows = mysql_copy::read_chunk(&mut conn, &schema, &range, batch_rows, |rows| {
                on_rows(&schema, rows)
            })
            .await?;
            let _ = conn.disconnect().await;
            Ok(Some(rows))
        }
        SourceSettings::Postgres(_) => {
            let range = pg_copy::KeyRange::from_json(table.clone(), chunk).ok_or_else(bad_chunk)?;
            let client = pg_connect(source).await?;
            let Some(described) = pg_copy::describe(&client, &table.namespace, &table.name).await?
            else {
                return Ok(None);
            };
            if on_rows(&described.schema, Vec::new()).is_break() {
                return Ok(Some(0));
            }
            let mut reader = pg_copy::read_chunk(&client, &described, &range, batch_rows).await?;
            let mut rows = Vec::new();
            while reader.next_batch(&mut rows).await? {
                if on_rows(&described.schema, std::mem::take(&mut rows)).is_break() {
                    break;
                }
            }
            Ok(Some(reader.rows_read()))
        }
    }
}

/// Wraps a driver error met while `doing`, with the source's credentials scrubbed.
fn source_error<E: std::fmt::Display>(
    source: &SourceConfig,
    doing: &'static str,
) -> impl FnOnce(E) -> TableCopyError {
    move |error| TableCopyError::Source {
        source_id: source.id.clone(),
        doing,
        message: source.url.scrub(&error.to_string()),
    }
}

/// A new connection to a MySQL/MariaDB source.
async fn mysql_connect(source: &SourceConfig) -> Result<mysql_async::Conn, TableCopyError> {
    let (opts, tls) = crate::tls::mysql_opts(&source.url)
        .map_err(source_error(source, "reading the source url"))?;
    let host = opts.ip_or_hostname().to_string();
    match tokio::time::timeout(CONNECT_TIMEOUT, mysql_async::Conn::new(opts)).await {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(error)) => {
            let message = error.to_string();
            let message = tls.explain(&host, &message).unwrap_or(message);
            Err(source_error(source, "connecting for a copy")(message))
        }
        Err(_) => Err(source_error(source, "connecting for a copy")("timed out")),
    }
}

/// A new connection to a Postgres source.
async fn pg_connect(source: &SourceConfig) -> Result<tokio_postgres::Client, TableCopyError> {
    let (mut config, tls) = crate::tls::postgres_config(&source.url)
        .map_err(source_error(source, "reading the source url"))?;
    let connector = tls
        .postgres_connector()
        .map_err(source_error(source, "setting up TLS"))?;
    config
        .connect_timeout(CONNECT_TIMEOUT)
        .application_name(format!("tidemark {} (copy)", source.id));
    let (client, connection) = config.connect(connector).await.map_err(|error| {
        let message = crate::tls::with_causes(&error);
        let host = crate::tls::postgres_host(&config);
        let message = tls.explain(&host, &message).unwrap_or(message);
        source_error(source, "connecting for a copy")(message)
    })?;
    tokio::spawn(connection);
    Ok(client)
}
