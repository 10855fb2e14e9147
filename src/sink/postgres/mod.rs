//! The Postgres warehouse sink: COPY into a staging table, apply the last change per key
//! (DELETE + INSERT ... ON CONFLICT) and record the source's progress, in one transaction per batch
//! (docs/warehouse-postgres.md). With soft deletes, deleted rows stay, marked `_tidemark_deleted`.
//!
//! The sink keeps a cache of target table shapes (columns and key) so that evolving a table
//! costs no catalog query per batch; the cache is dropped whenever a transaction fails, because
//! Postgres rolled the DDL back with it.

pub mod check;
pub mod config;
pub mod encode;
pub mod pool;
mod secret_connect;
mod sql;
mod types;

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::Arc;

use deadpool_postgres::Object;
use futures_util::SinkExt;
use tokio_postgres::types::Json;
use tokio_postgres::{Client, Transaction};
use tracing::{debug, info, warn};

use super::{
    Batch, ChunkDone, Lease, LoadStep, Progress, ProgressRecord, RowEncoder, Sink, SinkError,
    SinkFuture, SnapshotProgress, Step, TableChanges, TableVersion, TargetTable,
};
use crate::config::SecretUrl;
use crate::crash::{self, crash_point};
use crate::error::ErrorKind;
use crate::event::TableId;
use crate::event::{Column, TableSchema};
use crate::sink::SnapshotRequest;
use crate::sink::columns::target_column_names;
pub use encode::CopyText;
pub use pool::{DEFAULT_MAX_CONNECTIONS, WarehousePool};
use sql::{KeyedApply, Pass};
pub use types::postgres_type;
use types::{extension_type, postgres_type_where};

/// How long connecting may take before it counts as failed (unless the URL sets
/// `connect_timeout`).
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Longest identifier Postgres keeps (longer ones are silently truncated, so they are refused).
const MAX_IDENTIFIER_BYTES: usize = 63;

/// Everything that can stop a load into Postgres.
#[derive(Debug, thiserror::Error)]
pub enum PostgresSinkError {
    /// Could not reach or log in to the warehouse.
    #[error("cannot connect to the Postgres warehouse at {target}: {reason}")]
    Connect {
        /// Host, port and database (no credentials).
        target: String,
        /// The driver's reason.
        reason: String,
        /// The driver error, for its kind.
        #[source]
        error: tokio_postgres::Error,
    },
    /// The source's lease is no longer this process's: the batch did not commit.
    #[error("source {0}: the lease is gone")]
    LeaseLost(String),
    /// A secret of the warehouse `url` could not be fetched.
    #[error("Postgres warehouse: {0}")]
    Secret(Box<crate::secrets::SecretError>),
    /// The warehouse URL's TLS settings cannot be used, or the server failed TLS verification:
    /// an operator must fix the URL, the CA file or the server's certificate.
    #[error("cannot connect to the Postgres warehouse at {target}: {reason}")]
    Tls {
        /// Host, port and database (no credentials).
        target: String,
        /// What failed, with the host, the setting and the fix.
        reason: String,
    },
    /// The pool of warehouse connections could not hand one out.
    #[error("cannot get a connection to the Postgres warehouse at {target}: {reason}")]
    Pool {
        /// Host, port and database (no credentials).
        target: String,
        /// What went wrong.
        reason: String,
    },
    /// A statement failed.
    #[error("Postgres warehouse: {context}: {reason}{}", operator_fix(.error))]
    Sql {
        /// What we were doing (names the table).
        context: String,
        /// The server's message with its SQLSTATE, detail and hint.
        reason: String,
        /// The driver error, for its kind.
        #[source]
        error: tokio_postgres::Error,
    },
    /// A target table cannot follow the source as asked.
    #[error("target table {table}: {problem}")]
    Table {
        /// The target table.
        table: String,
        /// What is wrong and how to fix it.
        problem: String,
    },
    /// A stored progress record cannot be read.
    #[error(
        "the progress of source {source_id} in tidemark.progress does not hold a resume point: {reason}. Fix: restore the row, or delete it to start the source at the end of its log (changes in between are skipped)"
    )]
    Progress {
        /// The source.
        source_id: String,
        /// Why it does not parse.
        reason: String,
    },
    /// Reading spilled batch data failed.
    #[error("reading spilled batch data: {0}")]
    Spill(#[from] std::io::Error),
    /// One table's changes cannot apply, for a reason of that table alone (its shape, its
    /// values): the rest of the batch could.
    #[error("{error}")]
    InTable {
        /// The target table.
        table: TargetTable,
        /// What failed.
        error: Box<PostgresSinkError>,
    },
}

impl PostgresSinkError {
    /// Marks the error as `table`'s alone when it is: a shape the table cannot take, or a value
    /// or constraint the warehouse refuses (SQLSTATE classes 22 and 23). Lost connections,
    /// missing grants and the like are everyone's.
    fn in_table(self, table: &TargetTable) -> PostgresSinkError {
        let alone = match &self {
            PostgresSinkError::Table { .. } => true,
            PostgresSinkError::Sql { error, .. } => error
                .code()
                .is_some_and(|code| matches!(&code.code()[..2], "22" | "23")),
            _ => false,
        };
        if alone {
            PostgresSinkError::InTable {
                table: table.clone(),
                error: Box::new(self),
            }
        } else {
            self
        }
    }

    /// Retry (connection trouble, conflicts), operator (schema problems) or fatal (bad data).
    pub fn kind(&self) -> ErrorKind {
        match self {
            PostgresSinkError::Connect { .. }
            | PostgresSinkError::Pool { .. }
            | PostgresSinkError::LeaseLost(_) => ErrorKind::Retry,
            PostgresSinkError::Secret(error) => error.kind(),
            PostgresSinkError::Sql { error, .. } => sql_error_kind(error),
            PostgresSinkError::Table { .. }
            | PostgresSinkError::Progress { .. }
            | PostgresSinkError::Tls { .. } => ErrorKind::Operator,
            PostgresSinkError::Spill(_) => ErrorKind::Fatal,
            PostgresSinkError::InTable { error, .. } => error.kind(),
        }
    }
}

/// SQLSTATE class 42 (syntax error or access rule violation): in a warehouse that took
/// tidemark's statements before, a revoked grant or a dropped or altered object, which an
/// operator fixes while the source waits.
const NEEDS_OPERATOR_CLASS: &str = "42";

/// What an operator does about a class-42 error, appended to its message.
fn operator_fix(error: &tokio_postgres::Error) -> &'static str {
    const INSUFFICIENT_PRIVILEGE: &str = "42501";
    match error.as_db_error().map(|db| db.code().code()) {
        Some(INSUFFICIENT_PRIVILEGE) => {
            ". Fix: grant tidemark's warehouse role what the message names (`tidemark check` lists every right it needs); the source retries meanwhile"
        }
        Some(code) if code.starts_with(NEEDS_OPERATOR_CLASS) => {
            ". Fix: the warehouse no longer accepts the statement (a dropped or altered table, schema or type?): restore what the message names; the source retries meanwhile"
        }
        _ => "",
    }
}

fn sql_error_kind(error: &tokio_postgres::Error) -> ErrorKind {
    let Some(db) = error.as_db_error() else {
        // No server error: the connection broke or timed out.
        return ErrorKind::Retry;
    };
    let code = db.code().code();
    // 08: connection exception; 40001/40P01: serialization failure, deadlock; 53: resources;
    // 57P01-57P03: admin shutdown, crash shutdown, cannot connect now.
    if code.starts_with("08")
        || code == "40001"
        || code == "40P01"
        || code.starts_with("53")
        || code.starts_with("57P")
    {
        ErrorKind::Retry
    } else if code.starts_with(NEEDS_OPERATOR_CLASS) {
        ErrorKind::Operator
    } else {
        ErrorKind::Fatal
    }
}

/// The server's message for `error`, with SQLSTATE, detail and hint when it has them.
fn describe(error: &tokio_postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => {
            let mut text = format!("{} ({})", db.message(), db.code().code());
            if let Some(detail) = db.detail() {
                text.push_str(&format!("; {detail}"));
            }
            if let Some(hint) = db.hint() {
                text.push_str(&format!("; hint: {hint}"));
            }
            if let Some(place) = db.where_() {
                text.push_str(&format!("; at {place}"));
            }
            text
        }
        None => {
            let mut text = error.to_string();
            let mut source = std::error::Error::source(error);
            while let Some(cause) = source {
                text.push_str(&format!(": {cause}"));
                source = cause.source();
            }
            text
        }
    }
}

impl From<PostgresSinkError> for SinkError {
    fn from(error: PostgresSinkError) -> Self {
        if let PostgresSinkError::LeaseLost(source_id) = &error {
            return SinkError::lease_lost(source_id);
        }
        let table = match &error {
            PostgresSinkError::InTable { table, .. } => Some(table.clone()),
            _ => None,
        };
        let sink_error = SinkError::new(error.kind(), error);
        match table {
            Some(table) => sink_error.in_table(table),
            None => sink_error,
        }
    }
}

impl Sink for PostgresSink {
    fn prepare(&mut self) -> SinkFuture<'_, ()> {
        Box::pin(async move {
            let result = self.ensure_control_tables().await;
            Ok(self.release(result)?)
        })
    }

    fn read_progress<'a>(
        &'a mut self,
        source_id: &'a str,
    ) -> SinkFuture<'a, Option<ProgressRecord>> {
        Box::pin(async move {
            let result = PostgresSink::read_progress(self, source_id).await;
            Ok(self.release(result)?)
        })
    }

    fn apply<'a>(&'a mut self, batch: &'a mut Batch) -> SinkFuture<'a, ()> {
        Box::pin(async move {
            let result = PostgresSink::apply(self, batch).await;
            Ok(self.release(result)?)
        })
    }

    fn committed<'a>(&'a mut self, batch: &'a Batch) -> SinkFuture<'a, bool> {
        Box::pin(async move {
            let result = PostgresSink::committed(self, batch).await;
            Ok(self.release(result)?)
        })
    }

    fn load_step(&self) -> LoadStep {
        PostgresSink::load_step(self)
    }

    fn encoder(&self) -> Arc<dyn RowEncoder> {
        Arc::new(CopyText)
    }

    fn request_snapshot<'a>(
        &'a mut self,
        source_id: &'a str,
        tables: Option<Vec<TableId>>,
    ) -> SinkFuture<'a, i64> {
        Box::pin(async move {
            let result = self.insert_snapshot_request(source_id, tables).await;
            Ok(self.release(result)?)
        })
    }

    fn snapshot_requests<'a>(
        &'a mut self,
        source_id: &'a str,
    ) -> SinkFuture<'a, Vec<SnapshotRequest>> {
        Box::pin(async move {
            let result = self.read_snapshot_requests(source_id).await;
            Ok(self.release(result)?)
        })
    }

    fn record_error<'a>(&'a mut self, source_id: &'a str, error: &'a str) -> SinkFuture<'a, ()> {
        Box::pin(async move {
            let result = self.write_error(source_id, error).await;
            Ok(self.release(result)?)
        })
    }

    fn claim_leases<'a>(
        &'a mut self,
        lease: &'a Lease,
        source_ids: &'a [String],
    ) -> SinkFuture<'a, Vec<String>> {
        Box::pin(async move {
            let result = self.claim(lease, source_ids).await;
            Ok(self.release(result)?)
        })
    }

    fn release_leases<'a>(
        &'a mut self,
        lease: &'a Lease,
        source_ids: &'a [String],
    ) -> SinkFuture<'a, ()> {
        Box::pin(async move {
            let result = self.release_claims(lease, source_ids).await;
            Ok(self.release(result)?)
        })
    }

    fn clock_micros(&mut self) -> SinkFuture<'_, i64> {
        Box::pin(async move {
            let result = self.read_clock_micros().await;
            Ok(self.release(result)?)
        })
    }

    fn holds_rows<'a>(&'a mut self, table: &'a TargetTable) -> SinkFuture<'a, bool> {
        Box::pin(async move {
            let result = self.read_holds_rows(table).await;
            Ok(self.release(result)?)
        })
    }
}

/// `duration` in whole microseconds, as the lease statements take it.
fn micros(duration: std::time::Duration) -> i64 {
    i64::try_from(duration.as_micros()).unwrap_or(i64::MAX)
}

/// The connection in `held`, taken from `pool` when there is none or it broke.
async fn hold<'a>(
    pool: &WarehousePool,
    held: &'a mut Option<Object>,
) -> Result<&'a mut Client, PostgresSinkError> {
    if held
        .as_ref()
        .is_some_and(|connection| connection.is_closed())
    {
        *held = None;
    }
    let connection = match held {
        Some(connection) => connection,
        None => held.insert(pool.get().await?),
    };
    Ok(&mut **connection)
}

fn sql_error(
    context: impl fmt::Display,
) -> impl FnOnce(tokio_postgres::Error) -> PostgresSinkError {
    let context = context.to_string();
    move |error| PostgresSinkError::Sql {
        context,
        reason: describe(&error),
        error,
    }
}

/// A target table's columns (name, type) and key as they stand in the warehouse.
#[derive(Debug, Clone, PartialEq)]
struct Shape {
    columns: Vec<(String, String)>,
    key: Vec<String>,
}

impl Shape {
    /// The source columns (name, type), without tidemark's metadata columns.
    fn user_columns_typed(&self) -> Vec<&(String, String)> {
        self.columns
            .iter()
            .filter(|(name, _)| {
                // The soft-delete column too, whether or not this process marks deletes: a table
                // keeps it when soft deletes are switched off again.
                name != sql::DELETED && !sql::METADATA_COLUMNS.iter().any(|(m, _)| m == name)
            })
            .collect()
    }

    /// True when the table has the soft-delete column.
    fn has_deleted_column(&self) -> bool {
        self.columns.iter().any(|(name, _)| name == sql::DELETED)
    }

    /// The source columns' names.
    fn user_columns(&self) -> Vec<String> {
        self.user_columns_typed()
            .into_iter()
            .map(|(name, _)| name.clone())
            .collect()
    }
}

/// A connection to the Postgres warehouse that applies batches.
pub struct PostgresSink {
    pool: WarehousePool,
    /// The pool's connection this sink works on; held only while a call runs.
    held: Option<Object>,
    shapes: HashMap<TargetTable, Shape>,
    schemas: HashSet<String>,
    warned_append: HashSet<TargetTable>,
    step: LoadStep,
    extension_types: ExtensionTypes,
    /// Rows deleted at the source are kept, marked `_tidemark_deleted`, instead of removed.
    soft_delete: bool,
    /// When set, a batch commits only while its source's lease is this holder's.
    lease: Option<Lease>,
}

/// Which extension types (citext, hstore, ltree) the warehouse has, asked once per type, and
/// the columns already warned about loading as text for want of one.
#[derive(Debug, Default)]
struct ExtensionTypes {
    present: HashMap<String, bool>,
    warned: HashSet<(TargetTable, String)>,
}

impl ExtensionTypes {
    /// Asks the warehouse about every extension type `changes` needs that is not known yet.
    async fn learn(
        &mut self,
        tx: &Transaction<'_>,
        changes: &TableChanges,
    ) -> Result<(), PostgresSinkError> {
        for segment in &changes.segments {
            for column in &segment.schema.columns {
                let Some(name) = extension_type(&column.ty) else {
                    continue;
                };
                if self.present.contains_key(name) {
                    continue;
                }
                let present: bool = tx
                    .query_one("SELECT to_regtype($1) IS NOT NULL", &[&name])
                    .await
                    .and_then(|row| row.try_get(0))
                    .map_err(sql_error(format_args!("looking for type {name}")))?;
                self.present.insert(name.to_owned(), present);
            }
        }
        Ok(())
    }

    /// The warehouse type of `column`, `text` for an extension type the warehouse lacks (said
    /// once per column: the values keep their text, the column loses the type's operators).
    fn column_type(&mut self, target: &TargetTable, column: &Column) -> String {
        let wanted = postgres_type_where(&column.ty, &|name| {
            self.present.get(name).copied().unwrap_or(true)
        });
        if let Some(name) = extension_type(&column.ty)
            && self.present.get(name) == Some(&false)
            && self
                .warned
                .insert((target.clone(), column.name.to_string()))
        {
            warn!(
                table = %target,
                column = %column.name,
                r#type = name,
                "the warehouse has no type {name}: the column loads as text; CREATE EXTENSION {name} in the warehouse to keep the type (the column follows at the next batch)"
            );
        }
        wanted
    }
}

impl PostgresSink {
    /// Connects to the warehouse on a connection of its own; errors name host, port and
    /// database, never the password.
    pub async fn connect(url: &SecretUrl) -> Result<PostgresSink, PostgresSinkError> {
        let mut sink = PostgresSink::on_pool(WarehousePool::new(url, 1)?);
        // Connect now, so that a wrong URL or password shows here and not at the first batch.
        sink.client().await?;
        Ok(sink)
    }

    /// A sink that takes a connection of `pool` for each call and gives it back afterwards: the
    /// group's sinks share the pool.
    pub fn on_pool(pool: WarehousePool) -> PostgresSink {
        PostgresSink {
            pool,
            held: None,
            shapes: HashMap::new(),
            schemas: HashSet::new(),
            warned_append: HashSet::new(),
            step: LoadStep::default(),
            extension_types: ExtensionTypes::default(),
            soft_delete: false,
            lease: None,
        }
    }

    /// Commits batches only while `lease` (when set) holds their source, renewing it in each
    /// batch's transaction.
    pub fn with_lease(mut self, lease: Option<Lease>) -> PostgresSink {
        self.lease = lease;
        self
    }

    /// Takes or renews `lease` on `source_ids` (those free, expired or already its holder's);
    /// returns the ones held now.
    async fn claim(
        &mut self,
        lease: &Lease,
        source_ids: &[String],
    ) -> Result<Vec<String>, PostgresSinkError> {
        let rows = self
            .client()
            .await?
            .query(
                sql::CLAIM_LEASES,
                &[&source_ids, &&*lease.holder, &micros(lease.period)],
            )
            .await
            .map_err(sql_error("claiming the leases of the group's sources"))?;
        rows.iter()
            .map(|row| row.try_get(0))
            .collect::<Result<_, _>>()
            .map_err(sql_error("claiming the leases of the group's sources"))
    }

    /// Gives up `lease` on `source_ids`.
    async fn release_claims(
        &mut self,
        lease: &Lease,
        source_ids: &[String],
    ) -> Result<(), PostgresSinkError> {
        self.client()
            .await?
            .execute(sql::RELEASE_LEASES, &[&source_ids, &&*lease.holder])
            .await
            .map_err(sql_error("giving up the leases of the group's sources"))?;
        Ok(())
    }

    /// Keeps rows deleted at the source, marked `_tidemark_deleted`, when `soft_delete`
    /// (`[warehouse] soft_delete`, docs/warehouse-postgres.md).
    pub fn with_soft_delete(mut self, soft_delete: bool) -> PostgresSink {
        self.soft_delete = soft_delete;
        self
    }

    /// The connection this sink works on: the one it holds, or one from the pool (a held one
    /// that broke is dropped first).
    async fn client(&mut self) -> Result<&mut Client, PostgresSinkError> {
        hold(&self.pool, &mut self.held).await
    }

    /// Ends a call: gives the connection back to the pool, or, after an error, closes it (a
    /// statement may have been cut off midway, so its state is unknown).
    fn release<T>(&mut self, result: Result<T, PostgresSinkError>) -> Result<T, PostgresSinkError> {
        if let Some(connection) = self.held.take()
            && result.is_err()
        {
            drop(Object::take(connection));
        }
        result
    }

    /// Records a snapshot request for `source_id` (`None`: the whole source); returns its id.
    async fn insert_snapshot_request(
        &mut self,
        source_id: &str,
        tables: Option<Vec<TableId>>,
    ) -> Result<i64, PostgresSinkError> {
        let tables: Option<Vec<(&str, &str)>> = tables
            .as_ref()
            .map(|tables| tables.iter().map(|t| (&*t.namespace, &*t.name)).collect());
        let row = self
            .client()
            .await?
            .query_one(sql::REQUEST_SNAPSHOT, &[&source_id, &tables.map(Json)])
            .await
            .map_err(sql_error("recording the snapshot request"))?;
        Ok(row.get(0))
    }

    /// The snapshot requests of `source_id` not yet handled, oldest first.
    async fn read_snapshot_requests(
        &mut self,
        source_id: &str,
    ) -> Result<Vec<SnapshotRequest>, PostgresSinkError> {
        let rows = self
            .client()
            .await?
            .query(sql::READ_SNAPSHOT_REQUESTS, &[&source_id])
            .await
            .map_err(sql_error("reading the snapshot requests"))?;
        rows.iter()
            .map(|row| {
                let tables: Option<Json<Vec<(String, String)>>> = row
                    .try_get(1)
                    .map_err(sql_error("reading the snapshot requests"))?;
                Ok(SnapshotRequest {
                    id: row.get(0),
                    tables: tables.map(|Json(tables)| {
                        tables
                            .into_iter()
                            .map(|(namespace, name)| TableId::new(namespace, name))
                            .collect()
                    }),
                })
            })
            .collect()
    }

    /// Records why `source_id` stopped.
    async fn write_error(&mut self, source_id: &str, error: &str) -> Result<(), PostgresSinkError> {
        self.client()
            .await?
            .execute(sql::RECORD_ERROR, &[&source_id, &error])
            .await
            .map_err(sql_error("recording why the source stopped"))?;
        Ok(())
    }

    /// The warehouse's clock, in µs since the epoch.
    async fn read_clock_micros(&mut self) -> Result<i64, PostgresSinkError> {
        let row = self
            .client()
            .await?
            .query_one(sql::CLOCK_MICROS, &[])
            .await
            .map_err(sql_error("reading the warehouse clock"))?;
        Ok(row.get(0))
    }

    /// Whether `table` exists and holds rows.
    async fn read_holds_rows(&mut self, table: &TargetTable) -> Result<bool, PostgresSinkError> {
        let context = || format!("reading whether {table} holds rows");
        let client = self.client().await?;
        let exists: bool = client
            .query_one(sql::TABLE_EXISTS, &[&table.schema, &table.table])
            .await
            .and_then(|row| row.try_get(0))
            .map_err(sql_error(context()))?;
        if !exists {
            return Ok(false);
        }
        client
            .query_one(&sql::holds_rows(table), &[])
            .await
            .and_then(|row| row.try_get(0))
            .map_err(sql_error(context()))
    }

    /// Creates the `tidemark` control schema and tables if they are missing.
    pub async fn ensure_control_tables(&mut self) -> Result<(), PostgresSinkError> {
        self.client()
            .await?
            .batch_execute(sql::CONTROL_TABLES)
            .await
            .map_err(sql_error("creating the control tables in schema tidemark"))
    }

    /// The committed progress record of `source_id`, if it has one.
    pub async fn read_progress(
        &mut self,
        source_id: &str,
    ) -> Result<Option<ProgressRecord>, PostgresSinkError> {
        let context = || format!("reading the progress of source {source_id}");
        let client = self.client().await?;
        let Some(row) = client
            .query_opt(sql::READ_PROGRESS, &[&source_id])
            .await
            .map_err(sql_error(context()))?
        else {
            return Ok(None);
        };
        let resume_point: serde_json::Value = row.try_get(0).map_err(sql_error(context()))?;
        let source_commit_ts_micros: Option<i64> = row.try_get(1).map_err(sql_error(context()))?;
        let snapshot: Option<serde_json::Value> = row.try_get(2).map_err(sql_error(context()))?;
        let committed_at_micros: Option<i64> = row.try_get(3).map_err(sql_error(context()))?;
        let last_error: Option<String> = row.try_get(4).map_err(sql_error(context()))?;
        let resume_point = serde_json::from_value(resume_point.clone()).map_err(|e| {
            PostgresSinkError::Progress {
                source_id: source_id.to_owned(),
                reason: format!("{e} in {resume_point}"),
            }
        })?;
        let mut tables = Vec::new();
        for row in client
            .query(sql::READ_TABLE_VERSIONS, &[&source_id])
            .await
            .map_err(sql_error(context()))?
        {
            let Json(columns): Json<Vec<(String, String)>> =
                row.try_get(3).map_err(sql_error(context()))?;
            tables.push(TableVersion {
                table: TargetTable {
                    schema: row.try_get(0).map_err(sql_error(context()))?,
                    table: row.try_get(1).map_err(sql_error(context()))?,
                },
                version: row.try_get(2).map_err(sql_error(context()))?,
                columns,
                position: row.try_get(4).map_err(sql_error(context()))?,
            });
        }
        let mut chunks_done = Vec::new();
        for row in client
            .query(sql::READ_CHUNKS, &[&source_id])
            .await
            .map_err(sql_error(context()))?
        {
            let chunk: i32 = row.try_get(3).map_err(sql_error(context()))?;
            let rows: i64 = row.try_get(4).map_err(sql_error(context()))?;
            chunks_done.push(ChunkDone {
                namespace: row.try_get(0).map_err(sql_error(context()))?,
                name: row.try_get(1).map_err(sql_error(context()))?,
                started_at_micros: row.try_get(2).map_err(sql_error(context()))?,
                chunk: chunk.max(0) as u32,
                rows: rows.max(0) as u64,
            });
        }
        Ok(Some(ProgressRecord {
            progress: Progress {
                resume_point,
                source_commit_ts_micros,
                snapshot: snapshot.map(SnapshotProgress),
            },
            committed_at_micros,
            tables,
            last_error,
            chunks_done,
        }))
    }

    /// What the load in progress is doing: a handle that stays valid while `apply` runs.
    pub fn load_step(&self) -> LoadStep {
        self.step.clone()
    }

    /// Applies `batch` and its progress in one transaction: all of it, or none of it.
    pub async fn apply(&mut self, batch: &mut Batch) -> Result<(), PostgresSinkError> {
        let result = self.apply_once(batch).await;
        self.step.set(Step::Idle);
        if result.is_err() {
            // The transaction rolled back, and with it any DDL: forget what we learned.
            self.shapes.clear();
            self.schemas.clear();
        }
        result
    }

    /// Whether `batch`'s progress is the committed one, on a new connection if this one broke.
    pub async fn committed(&mut self, batch: &Batch) -> Result<bool, PostgresSinkError> {
        if let Some(chunk) = &batch.chunk {
            // The chunk's record commits with its rows, and with the progress if it has any.
            return self
                .client()
                .await?
                .query_one(
                    sql::CHUNK_RECORDED,
                    &[
                        &&*batch.source_id,
                        &chunk.namespace,
                        &chunk.name,
                        &chunk.started_at_micros,
                        &(chunk.chunk as i32),
                    ],
                )
                .await
                .and_then(|row| row.try_get(0))
                .map_err(sql_error("reading whether a snapshot chunk is loaded"));
        }
        let committed = PostgresSink::read_progress(self, &batch.source_id).await?;
        Ok(committed.is_some_and(|record| {
            record.progress.resume_point == batch.progress.resume_point
                && record.progress.snapshot == batch.progress.snapshot
        }))
    }

    async fn apply_once(&mut self, batch: &mut Batch) -> Result<(), PostgresSinkError> {
        let PostgresSink {
            pool,
            held,
            shapes,
            schemas,
            warned_append,
            step,
            extension_types,
            soft_delete,
            lease,
        } = self;
        let soft_delete = *soft_delete;
        let mut client_tx = hold(pool, held)
            .await?
            .transaction()
            .await
            .map_err(sql_error("starting a transaction"))?;
        let tx = &mut client_tx;
        tx.batch_execute(sql::LOAD_SETTINGS)
            .await
            .map_err(sql_error("setting up the load transaction"))?;
        let position = batch.progress.resume_point.to_string();
        let versions = Versions {
            source_id: &batch.source_id,
            position: &position,
        };
        for (from, to) in &batch.renames {
            rename(tx, shapes, &versions, from, to).await?;
        }
        let mut append_tables = Vec::new();
        let mut partial_skipped = Vec::new();
        for (i, changes) in batch.tables.iter_mut().enumerate() {
            step.set(Step::Table(changes.target.clone()));
            if !schemas.contains(&changes.target.schema) {
                tx.batch_execute(&sql::create_schema(&changes.target.schema))
                    .await
                    .map_err(sql_error(format_args!(
                        "creating schema {}",
                        changes.target.schema
                    )))?;
                schemas.insert(changes.target.schema.clone());
            }
            extension_types.learn(tx, changes).await?;
            let shape = prepare_table(tx, shapes, extension_types, &versions, changes, soft_delete)
                .await
                .map_err(|e| e.in_table(&changes.target))?;
            let Some(shape) = shape else {
                continue;
            };
            let skipped = load_table(tx, changes, &shape, i, soft_delete)
                .await
                .map_err(|e| e.in_table(&changes.target))?;
            if let Some(before) = changes.replaces_rows_loaded_before {
                let (statement, doing) = if soft_delete {
                    (sql::mark_deleted_loaded_before(&changes.target), "marking")
                } else {
                    (sql::delete_loaded_before(&changes.target), "deleting")
                };
                tx.execute(&statement, &[&before])
                    .await
                    .map_err(sql_error(format_args!(
                        "{doing} the rows of {} the source no longer has",
                        changes.target
                    )))?;
            }
            if skipped > 0 {
                partial_skipped.push((i, skipped));
            }
            if shape.key.is_empty() {
                append_tables.push(i);
            }
        }
        crash_point(crash::AFTER_APPLY);
        step.set(Step::Progress);
        if batch.records_progress {
            write_progress(tx, &batch.source_id, &batch.progress).await?;
        }
        if batch.forget_chunks {
            tx.execute(sql::FORGET_CHUNKS, &[&&*batch.source_id])
                .await
                .map_err(sql_error("removing the records of snapshot chunks"))?;
        }
        if let Some(chunk) = &batch.chunk {
            tx.execute(
                sql::RECORD_CHUNK,
                &[
                    &&*batch.source_id,
                    &chunk.namespace,
                    &chunk.name,
                    &chunk.started_at_micros,
                    &(chunk.chunk as i32),
                    &(chunk.rows as i64),
                ],
            )
            .await
            .map_err(sql_error("recording a snapshot chunk loaded"))?;
        }
        if let Some(last) = batch.requests_handled {
            tx.execute(sql::REQUESTS_HANDLED, &[&&*batch.source_id, &last])
                .await
                .map_err(sql_error(
                    "removing the snapshot requests the batch takes in",
                ))?;
        }
        if let Some(lease) = lease {
            // Last before COMMIT, so the lease row stays locked for the shortest time: a standby
            // claiming it waits for this commit and then sees the renewal.
            let renewed = tx
                .execute(
                    sql::FENCE_LEASE,
                    &[&&*batch.source_id, &&*lease.holder, &micros(lease.period)],
                )
                .await
                .map_err(sql_error("renewing the source's lease"))?;
            if renewed == 0 {
                return Err(PostgresSinkError::LeaseLost(batch.source_id.to_string()));
            }
        }
        crash_point(crash::BEFORE_COMMIT);
        step.set(Step::Commit);
        client_tx
            .commit()
            .await
            .map_err(sql_error("committing the batch"))?;
        // Warn once what landed, not per attempt.
        for &i in &append_tables {
            let changes = &batch.tables[i];
            if warned_append.insert(changes.target.clone()) {
                warn!(
                    table = %changes.target,
                    source_table = %changes.source_table,
                    "table has no primary key: loading in append mode (every change is a new row)"
                );
            }
        }
        for (i, rows) in partial_skipped {
            warn!(
                table = %batch.tables[i].target,
                rows,
                "updates that left TOASTed values unchanged were skipped: the warehouse does not have their rows (copy the table to get them)"
            );
        }
        for changes in batch.tables.iter().filter(|t| t.zero_dates_nulled > 0) {
            warn!(
                table = %changes.target,
                rows = changes.zero_dates_nulled,
                "zero dates written as NULL (Postgres has no zero date)"
            );
        }
        Ok(())
    }
}

/// Makes the target table fit every segment of `changes` (and, with `soft_delete`, have the
/// soft-delete column); `None` when there is nothing to load (a TRUNCATE of a table the
/// warehouse never saw).
async fn prepare_table(
    tx: &Transaction<'_>,
    shapes: &mut HashMap<TargetTable, Shape>,
    extension_types: &mut ExtensionTypes,
    versions: &Versions<'_>,
    changes: &TableChanges,
    soft_delete: bool,
) -> Result<Option<Shape>, PostgresSinkError> {
    let target = &changes.target;
    let mut cached = shapes.get(target).cloned();
    if let Some(known) = &cached
        && !fits(known, target, changes, extension_types)?
    {
        // Another connection (a chunk loading beside this one's batches) may have changed the
        // table since: read it again rather than change it twice.
        cached = None;
    }
    let mut shape = match &cached {
        Some(shape) => Some(shape.clone()),
        None => read_shape(tx, target).await?,
    };
    for segment in &changes.segments {
        let wanted = wanted_columns(target, &segment.schema, extension_types)?;
        let key: Vec<String> = segment
            .schema
            .primary_key
            .iter()
            .map(|&k| wanted[k].0.clone())
            .collect();
        match shape.as_mut() {
            None => {
                tx.batch_execute(&sql::create_table(target, &wanted, &key, soft_delete))
                    .await
                    .map_err(sql_error(format_args!("creating table {target}")))?;
                info!(table = %target, source_table = %changes.source_table, "created target table");
                let mut columns = wanted.clone();
                columns.extend(
                    sql::METADATA_COLUMNS
                        .iter()
                        .map(|(n, t)| ((*n).to_owned(), (*t).to_owned())),
                );
                if soft_delete {
                    columns.push((sql::DELETED.to_owned(), sql::DELETED_TYPE.to_owned()));
                }
                shape = Some(Shape { columns, key });
            }
            Some(current) => evolve(tx, target, current, &wanted, &key).await?,
        }
    }
    if let Some(current) = shape.as_mut()
        && soft_delete
        && !current.has_deleted_column()
    {
        // A table created before soft deletes were switched on: its rows are all live.
        tx.batch_execute(&sql::add_deleted_column(target))
            .await
            .map_err(sql_error(format_args!(
                "adding column {} to {target}",
                sql::DELETED
            )))?;
        info!(table = %target, column = sql::DELETED, "added the soft-delete column to the target table");
        current
            .columns
            .push((sql::DELETED.to_owned(), sql::DELETED_TYPE.to_owned()));
    }
    if let Some(shape) = &shape {
        // First sight of the table in this process (the record may predate it, or be missing
        // for a table an earlier release created) or a change: record it; unchanged columns
        // leave the version as it is.
        if cached.as_ref() != Some(shape) {
            versions.record(tx, target, shape).await?;
        }
        shapes.insert(target.clone(), shape.clone());
    }
    Ok(shape)
}

/// True when every segment of `changes` fits `shape` as it is: same key, every column there
/// with its type.
fn fits(
    shape: &Shape,
    target: &TargetTable,
    changes: &TableChanges,
    extension_types: &mut ExtensionTypes,
) -> Result<bool, PostgresSinkError> {
    for segment in &changes.segments {
        let wanted = wanted_columns(target, &segment.schema, extension_types)?;
        let key_fits = segment.schema.primary_key.len() == shape.key.len()
            && segment
                .schema
                .primary_key
                .iter()
                .zip(&shape.key)
                .all(|(&k, name)| wanted[k].0 == *name);
        let columns_fit = wanted
            .iter()
            .all(|column| shape.columns.iter().any(|c| c == column));
        if !key_fits || !columns_fit {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Where a batch records the table versions it makes: its source and its position.
struct Versions<'a> {
    source_id: &'a str,
    position: &'a str,
}

impl Versions<'_> {
    /// Records `shape`'s source columns as `target`'s next version, unless they are the
    /// recorded ones.
    async fn record(
        &self,
        tx: &Transaction<'_>,
        target: &TargetTable,
        shape: &Shape,
    ) -> Result<(), PostgresSinkError> {
        let columns = shape.user_columns_typed();
        tx.execute(
            sql::RECORD_TABLE_VERSION,
            &[
                &self.source_id,
                &target.schema,
                &target.table,
                &Json(&columns),
                &self.position,
            ],
        )
        .await
        .map_err(sql_error(format_args!(
            "recording the schema version of {target}"
        )))?;
        Ok(())
    }

    /// Moves `from`'s version record to `to`, the rename counting as a version.
    async fn rename(
        &self,
        tx: &Transaction<'_>,
        from: &TargetTable,
        to: &TargetTable,
    ) -> Result<(), PostgresSinkError> {
        tx.execute(
            sql::RENAME_TABLE_VERSION,
            &[
                &self.source_id,
                &from.schema,
                &from.table,
                &to.schema,
                &to.table,
                &self.position,
            ],
        )
        .await
        .map_err(sql_error(format_args!(
            "recording the rename of {from} to {to}"
        )))?;
        Ok(())
    }
}

/// Source columns as target (name, type), names lowercased and checked.
fn wanted_columns(
    target: &TargetTable,
    schema: &TableSchema,
    extension_types: &mut ExtensionTypes,
) -> Result<Vec<(String, String)>, PostgresSinkError> {
    let names =
        target_column_names(schema, MAX_IDENTIFIER_BYTES, "Postgres").map_err(|problem| {
            PostgresSinkError::Table {
                table: target.to_string(),
                problem,
            }
        })?;
    Ok(names
        .into_iter()
        .zip(&schema.columns)
        .map(|(name, column)| {
            let ty = extension_types.column_type(target, column);
            (name, ty)
        })
        .collect())
}

async fn read_shape(
    tx: &Transaction<'_>,
    target: &TargetTable,
) -> Result<Option<Shape>, PostgresSinkError> {
    if target.table.len() > MAX_IDENTIFIER_BYTES {
        return Err(PostgresSinkError::Table {
            table: target.to_string(),
            problem: format!(
                "the name is longer than Postgres' {MAX_IDENTIFIER_BYTES}-byte identifiers; set target_table for the source to a shorter template"
            ),
        });
    }
    let context = || format!("reading the columns of {target}");
    let rows = tx
        .query(sql::TABLE_COLUMNS, &[&target.schema, &target.table])
        .await
        .map_err(sql_error(context()))?;
    if rows.is_empty() {
        return Ok(None);
    }
    let mut columns = Vec::with_capacity(rows.len());
    for row in rows {
        let name: String = row.try_get(0).map_err(sql_error(context()))?;
        let ty: String = row.try_get(1).map_err(sql_error(context()))?;
        columns.push((name, ty));
    }
    let key = tx
        .query(sql::TABLE_KEY, &[&target.schema, &target.table])
        .await
        .map_err(sql_error(context()))?
        .iter()
        .map(|row| row.try_get::<_, String>(0))
        .collect::<Result<Vec<_>, _>>()
        .map_err(sql_error(context()))?;
    Ok(Some(Shape { columns, key }))
}

/// Adds missing columns and follows type changes; refuses a changed key.
async fn evolve(
    tx: &Transaction<'_>,
    target: &TargetTable,
    current: &mut Shape,
    wanted: &[(String, String)],
    key: &[String],
) -> Result<(), PostgresSinkError> {
    if current.key != key {
        return Err(PostgresSinkError::Table {
            table: target.to_string(),
            problem: format!(
                "the source's primary key is ({}) but the target's is ({}); a target's key is fixed when it is created. Drop the target table to have it created again with the new key (it then fills with changes from now on)",
                key.join(", "),
                current.key.join(", ")
            ),
        });
    }
    for (name, ty) in wanted {
        match current.columns.iter_mut().find(|(n, _)| n == name) {
            None => {
                tx.batch_execute(&sql::add_column(target, name, ty))
                    .await
                    .map_err(sql_error(format_args!(
                        "adding column {name} {ty} to {target}"
                    )))?;
                info!(table = %target, column = %name, r#type = %ty, "added target column");
                // Metadata columns stay last in the cache only for reading; order is irrelevant.
                current.columns.push((name.clone(), ty.clone()));
            }
            Some((_, current_ty)) if current_ty != ty => {
                tx.batch_execute(&sql::alter_type(target, name, ty))
                    .await
                    .map_err(sql_error(format_args!(
                        "changing column {name} of {target} from {current_ty} to {ty}"
                    )))?;
                info!(table = %target, column = %name, from = %current_ty, to = %ty, "changed target column type");
                *current_ty = ty.clone();
            }
            Some(_) => {}
        }
    }
    Ok(())
}

async fn rename(
    tx: &Transaction<'_>,
    shapes: &mut HashMap<TargetTable, Shape>,
    versions: &Versions<'_>,
    from: &TargetTable,
    to: &TargetTable,
) -> Result<(), PostgresSinkError> {
    if read_shape(tx, from).await?.is_none() {
        debug!(from = %from, to = %to, "renamed table has no target table yet; nothing to rename");
        return Ok(());
    }
    if from.schema != to.schema {
        return Err(PostgresSinkError::Table {
            table: from.to_string(),
            problem: format!("cannot follow a rename to another schema ({to})"),
        });
    }
    if read_shape(tx, to).await?.is_some() {
        return Err(PostgresSinkError::Table {
            table: to.to_string(),
            problem: format!(
                "the source renamed {from} to this name, but the warehouse already has a table {to} (kept from a table dropped at the source?). Rename or drop the warehouse table {to}, then restart"
            ),
        });
    }
    tx.batch_execute(&sql::rename_table(from, &to.table))
        .await
        .map_err(sql_error(format_args!("renaming {from} to {to}")))?;
    info!(from = %from, to = %to, "renamed target table");
    versions.rename(tx, from, to).await?;
    shapes.remove(from);
    shapes.remove(to);
    Ok(())
}

/// Stages one table's rows and applies them by key (or appends them). Returns how many rows
/// that leave columns unchanged were skipped because the target lacks their row.
async fn load_table(
    tx: &Transaction<'_>,
    changes: &mut TableChanges,
    shape: &Shape,
    index: usize,
    soft_delete: bool,
) -> Result<u64, PostgresSinkError> {
    let target = &changes.target.clone();
    if changes.copied_rows && copy_into_target(tx, changes).await? {
        return Ok(0);
    }
    let stage = format!("tidemark_stage_{index}");
    let range = match changes.positions {
        Some((first, last)) => format!(" (source positions {first} to {last})"),
        None => String::new(),
    };
    tx.batch_execute(&sql::create_stage(&stage, target))
        .await
        .map_err(sql_error(format_args!(
            "creating the staging table for {target}"
        )))?;
    let live_rows = changes.live_rows();
    for index in 0..changes.segments.len() {
        let segment = &changes.segments[index];
        if segment.rows == 0 {
            continue;
        }
        let columns: Vec<String> = segment
            .schema
            .columns
            .iter()
            .map(|c| c.name.to_lowercase())
            .collect();
        let with_unchanged = segment.with_unchanged;
        let context = || format!("COPY of {live_rows} rows for {target}{range}");
        let sink = tx
            .copy_in(&sql::copy_stage(&stage, &columns, with_unchanged))
            .await
            .map_err(sql_error(context()))?;
        futures_util::pin_mut!(sink);
        let mut chunks = changes.row_chunks(index);
        while let Some(chunk) = chunks.next_chunk()? {
            sink.send(chunk).await.map_err(sql_error(context()))?;
        }
        sink.finish().await.map_err(sql_error(context()))?;
    }
    crash_point(crash::AFTER_STAGING_COPY);
    if let Some(seq) = changes.truncate_at {
        let truncate = if soft_delete {
            sql::mark_all_deleted(target)
        } else {
            sql::truncate(target)
        };
        tx.batch_execute(&truncate)
            .await
            .map_err(sql_error(format_args!("truncating {target}")))?;
        tx.batch_execute(&sql::discard_before(&stage, seq))
            .await
            .map_err(sql_error(format_args!("truncating {target}")))?;
    }
    let columns = shape.user_columns();
    let mut statements = Vec::new();
    let mut skipped = 0;
    if shape.key.is_empty() {
        statements.push(sql::append(target, &stage, &columns));
    } else {
        let target_rows: i64 = tx
            .query_one(sql::ESTIMATED_ROWS, &[&sql::table(target)])
            .await
            .map_err(sql_error(format_args!("estimating the size of {target}")))?
            .get(0);
        let how = KeyedApply::choose(live_rows, target_rows.max(0) as u64);
        let passes: Vec<Pass> = if changes.has_unchanged {
            (0..=changes.max_generation())
                .map(Pass::Generation)
                .collect()
        } else {
            vec![Pass::All]
        };
        for pass in passes {
            if let (Pass::Generation(g), true) = (pass, changes.has_deletes) {
                statements.push(sql::capture_moved_rows(
                    target,
                    &stage,
                    &shape.key,
                    soft_delete,
                    g,
                ));
            }
            statements.extend(sql::apply_by_key(
                target,
                &stage,
                &columns,
                &shape.key,
                !changes.needs_dedupe(),
                changes.has_deletes,
                soft_delete,
                how,
                pass,
            ));
            if let Pass::Generation(g) = pass {
                // Each generation sees the target as the previous ones left it.
                for statement in statements.drain(..) {
                    apply_statement(tx, &statement, target, &range).await?;
                }
                // Partial rows still without a target row could not be applied.
                let missing: i64 = tx
                    .query_one(
                        &sql::partial_rows_without_target(
                            target,
                            &stage,
                            &shape.key,
                            soft_delete,
                            g,
                        ),
                        &[],
                    )
                    .await
                    .map_err(sql_error(format_args!(
                        "applying changes to {target}{range}"
                    )))?
                    .get(0);
                skipped += missing.max(0) as u64;
            }
        }
    }
    for statement in statements {
        apply_statement(tx, &statement, target, &range).await?;
    }
    Ok(skipped)
}

/// Loads copied rows (a snapshot chunk) straight into the target with one COPY, as a
/// hand-written load would, instead of staging them first; returns false, having changed
/// nothing, when some of their keys are in the target already (rows the stream wrote, or an
/// earlier copy's): the caller then stages and applies them by key.
///
/// The staged row layout is reused: each row's first field (its arrival number, which only
/// staging needs) is cut off, and the load time is appended (the transaction's `now()`, as
/// staged rows get it).
async fn copy_into_target(
    tx: &Transaction<'_>,
    changes: &mut TableChanges,
) -> Result<bool, PostgresSinkError> {
    let [segment] = changes.segments.as_slice() else {
        return Ok(false);
    };
    if segment.with_unchanged || changes.has_deletes || changes.truncate_at.is_some() {
        return Ok(false);
    }
    if segment.rows == 0 {
        return Ok(true);
    }
    let target = changes.target.clone();
    let mut columns = vec![
        sql::OP.to_owned(),
        sql::POSITION.to_owned(),
        sql::COMMIT_TS.to_owned(),
    ];
    columns.extend(segment.schema.columns.iter().map(|c| c.name.to_lowercase()));
    // The soft-delete column, when the table has it, is left to its default: copied rows are
    // live.
    columns.push(sql::LOADED_AT.to_owned());
    let segment_rows = segment.rows;
    let context = || format!("COPY of {segment_rows} copied rows into {target}");
    let now: String = tx
        .query_one("SELECT now()::text", &[])
        .await
        .map_err(sql_error(context()))?
        .get(0);
    let loaded_at = format!("\t{now}\n").into_bytes();
    tx.batch_execute("SAVEPOINT tidemark_copied_rows")
        .await
        .map_err(sql_error(context()))?;
    let copy = tx
        .copy_in(&sql::copy_into(&target, &columns))
        .await
        .map_err(sql_error(context()))?;
    futures_util::pin_mut!(copy);
    let mut chunks = changes.row_chunks(0);
    let mut sent = Ok(());
    while let Some(chunk) = chunks.next_chunk()? {
        let mut rows = Vec::with_capacity(chunk.len() + chunk.len() / 4);
        for row in chunk.split_inclusive(|&b| b == b'\n') {
            let fields = row
                .iter()
                .position(|&b| b == b'\t')
                .map_or(row, |tab| &row[tab + 1..]);
            rows.extend_from_slice(fields.strip_suffix(b"\n").unwrap_or(fields));
            rows.extend_from_slice(&loaded_at);
        }
        sent = copy.send(bytes::Bytes::from(rows)).await;
        if sent.is_err() {
            break;
        }
    }
    let finished = match sent {
        Ok(()) => copy.finish().await.map(|_| ()),
        Err(error) => Err(error),
    };
    match finished {
        Ok(()) => {
            tx.batch_execute("RELEASE SAVEPOINT tidemark_copied_rows")
                .await
                .map_err(sql_error(context()))?;
            Ok(true)
        }
        Err(error) if error.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) => {
            debug!(table = %target, "copied rows meet rows already in the target: applying them by key");
            tx.batch_execute("ROLLBACK TO SAVEPOINT tidemark_copied_rows")
                .await
                .map_err(sql_error(context()))?;
            Ok(false)
        }
        Err(error) => Err(sql_error(context())(error)),
    }
}

async fn apply_statement(
    tx: &Transaction<'_>,
    statement: &str,
    target: &TargetTable,
    range: &str,
) -> Result<(), PostgresSinkError> {
    tx.batch_execute(statement)
        .await
        .map_err(sql_error(format_args!(
            "applying changes to {target}{range}"
        )))
}

async fn write_progress(
    tx: &Transaction<'_>,
    source_id: &str,
    progress: &Progress,
) -> Result<(), PostgresSinkError> {
    let text = progress.resume_point.to_string();
    tx.execute(
        sql::WRITE_PROGRESS,
        &[
            &source_id,
            &Json(&progress.resume_point),
            &text,
            &progress.source_commit_ts_micros,
            &progress.snapshot.as_ref().map(Json),
        ],
    )
    .await
    .map_err(sql_error(format_args!(
        "recording the progress of source {source_id}"
    )))?;
    Ok(())
}
