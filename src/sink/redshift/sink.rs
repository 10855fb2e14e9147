//! [`RedshiftSink`]: a batch's rows staged as gzip CSV files in S3, then loaded and applied in
//! one Data API transaction together with the source's progress.
//!
//! Per table: the rows of each segment go to their own files and manifest; the transaction
//! creates a temporary stage, COPYs every manifest into it, keeps each key's last change,
//! deletes by key, MERGEs the rest (or appends, for a table without a key), and records the
//! table's version; then the progress, all or nothing. A VARCHAR widening runs before, on its
//! own, as Redshift allows it only outside a transaction (a wider column is harmless if the
//! batch then fails). When a batch needs more than [`MAX_STATEMENTS`] statements it is split
//! per table: every transaction but the last records, per table, the position its changes
//! reach (`tidemark.table_progress`), so a batch offered again after a crash skips what
//! already committed; the last one records the progress and removes those rows.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use aws_config::BehaviorVersion;
use tracing::{debug, info, warn};

use super::config::RedshiftConfig;
use super::data_api::{DataApi, DataApiError, MAX_STATEMENTS, Rows};
use super::encode::{CsvRows, Oversize};
use super::files::{DEFAULT_LEVEL, GzipParts};
use super::sql;
use super::staging::{S3Error, Staging};
use super::types::{MAX_VARCHAR_BYTES, redshift_type};
use crate::crash::{self, crash_point};
use crate::error::ErrorKind;
use crate::event::{TableId, TableSchema};
use crate::sink::columns::target_column_names;
use crate::sink::{
    Batch, ChunkDone, LoadStep, Progress, ProgressRecord, RowEncoder, Sink, SinkError, SinkFuture,
    SnapshotProgress, SnapshotRequest, Step, TableChanges, TableVersion, TargetTable,
};

/// Redshift's longest identifier, in bytes.
pub const MAX_IDENTIFIER_BYTES: usize = 127;
/// Compressed bytes per staged part: big enough that COPY is not dominated by per-file
/// overhead, small enough that a large batch spreads over several parts (slices load them in
/// parallel).
const PART_BYTES: usize = 64 * 1024 * 1024;

/// What can go wrong loading into Redshift.
#[derive(Debug, thiserror::Error)]
pub enum RedshiftSinkError {
    /// The Data API or a statement failed.
    #[error("{context}: {error}")]
    DataApi {
        /// What the sink was doing.
        context: String,
        /// The failure.
        #[source]
        error: DataApiError,
    },
    /// Staging files in S3 failed.
    #[error("staging files for {table}: {error}")]
    S3 {
        /// The table whose files failed.
        table: String,
        /// The failure.
        #[source]
        error: S3Error,
    },
    /// A table cannot be loaded as it is.
    #[error("table {table}: {problem}")]
    Table {
        /// The target table.
        table: String,
        /// Why, and what to do.
        problem: String,
    },
    /// A stored progress record cannot be read.
    #[error("the progress record of source {source_id} cannot be read: {reason}")]
    Progress {
        /// The source.
        source_id: String,
        /// Why.
        reason: String,
    },
    /// Reading a batch's buffered rows failed.
    #[error("reading the batch's rows of {table}: {error}")]
    Rows {
        /// The target table.
        table: String,
        /// The failure.
        #[source]
        error: std::io::Error,
    },
}

impl RedshiftSinkError {
    /// Whether waiting can fix it.
    pub fn kind(&self) -> ErrorKind {
        match self {
            RedshiftSinkError::DataApi { error, .. } => error.kind(),
            RedshiftSinkError::S3 { error, .. } => error.kind(),
            RedshiftSinkError::Table { .. } => ErrorKind::Operator,
            RedshiftSinkError::Progress { .. } => ErrorKind::Fatal,
            RedshiftSinkError::Rows { .. } => ErrorKind::Retry,
        }
    }
}

impl From<RedshiftSinkError> for SinkError {
    fn from(error: RedshiftSinkError) -> Self {
        let table = match &error {
            RedshiftSinkError::Table { table, .. } | RedshiftSinkError::S3 { table, .. } => {
                table.split_once('.').map(|(schema, table)| TargetTable {
                    schema: schema.to_owned(),
                    table: table.to_owned(),
                })
            }
            _ => None,
        };
        let kind = error.kind();
        let sink_error = SinkError::new(kind, error);
        match (table, kind) {
            (Some(table), ErrorKind::Operator) => sink_error.in_table(table),
            _ => sink_error,
        }
    }
}

fn api_error(context: impl std::fmt::Display) -> impl FnOnce(DataApiError) -> RedshiftSinkError {
    let context = context.to_string();
    move |error| RedshiftSinkError::DataApi { context, error }
}

/// A target table's columns (name, type as the catalog prints it) and key.
#[derive(Debug, Clone, PartialEq)]
struct Shape {
    columns: Vec<(String, String)>,
    key: Vec<String>,
}

impl Shape {
    /// The source columns (every column but the metadata ones), in table order.
    fn user_columns(&self) -> Vec<(String, String)> {
        self.columns
            .iter()
            .filter(|(n, _)| !n.starts_with("_tidemark_"))
            .cloned()
            .collect()
    }
}

/// A Redshift warehouse connection: a Data API client and the S3 staging area of the source
/// it loads.
#[derive(Debug)]
pub struct RedshiftSink {
    config: Arc<RedshiftConfig>,
    api: DataApi,
    staging: Staging,
    encoder: Arc<CsvRows>,
    shapes: HashMap<TargetTable, Shape>,
    schemas: HashSet<String>,
    warned_append: HashSet<TargetTable>,
    step: LoadStep,
    /// Sources whose statements left running by an earlier process were waited for.
    leftovers_done: HashSet<String>,
    /// Sources with a split batch of which only some parts committed: their next batches
    /// skip the rows those parts applied.
    split_pending: HashSet<String>,
}

impl RedshiftSink {
    /// Sets up the clients (the default AWS credential chain, `config`'s region and
    /// endpoints); nothing is sent before the first statement.
    pub async fn connect(config: &RedshiftConfig) -> Result<RedshiftSink, RedshiftSinkError> {
        let aws = aws_config::defaults(BehaviorVersion::latest())
            .region(aws_config::Region::new(config.region.clone()))
            .load()
            .await;
        let api = DataApi::new(&aws, config, &config.group);
        let staging = Staging::new(&aws, config);
        Ok(RedshiftSink {
            config: Arc::new(config.clone()),
            api,
            staging,
            encoder: Arc::new(CsvRows::new(config.oversize, config.wide_decimal)),
            shapes: HashMap::new(),
            schemas: HashSet::new(),
            warned_append: HashSet::new(),
            step: LoadStep::default(),
            leftovers_done: HashSet::new(),
            split_pending: HashSet::new(),
        })
    }

    /// Names statements after `source_id`, and the first time, waits for the statements an
    /// earlier process left running for it: until they end, the progress may still move.
    async fn for_source(&mut self, source_id: &str) -> Result<(), RedshiftSinkError> {
        self.api
            .set_name(&format!("tidemark:{}:{source_id}", self.config.group));
        if self.leftovers_done.contains(source_id) {
            return Ok(());
        }
        let waited = self
            .api
            .wait_for_leftovers()
            .await
            .map_err(api_error("waiting for statements left running"))?;
        if waited > 0 {
            info!(
                source = source_id,
                statements = waited,
                "waited for statements an earlier run left running"
            );
        }
        let split = self
            .query(
                &sql::has_table_progress(source_id),
                "reading the per-table progress",
            )
            .await?;
        if !split.is_empty() {
            self.split_pending.insert(source_id.to_owned());
        }
        self.leftovers_done.insert(source_id.to_owned());
        Ok(())
    }

    async fn ensure_control_tables(&self) -> Result<(), RedshiftSinkError> {
        for statement in sql::control_tables() {
            self.api
                .execute(&statement)
                .await
                .map_err(api_error("creating the control tables in schema tidemark"))?;
        }
        Ok(())
    }

    async fn query(&self, statement: &str, context: &str) -> Result<Rows, RedshiftSinkError> {
        self.api.query(statement).await.map_err(api_error(context))
    }

    /// The committed progress record of `source_id`, if it has one.
    pub async fn read_progress(
        &mut self,
        source_id: &str,
    ) -> Result<Option<ProgressRecord>, RedshiftSinkError> {
        self.for_source(source_id).await?;
        let context = format!("reading the progress of source {source_id}");
        let rows = self.query(&sql::read_progress(source_id), &context).await?;
        let Some(row) = rows.into_iter().next() else {
            return Ok(None);
        };
        let bad = |reason: String| RedshiftSinkError::Progress {
            source_id: source_id.to_owned(),
            reason,
        };
        let text = |i: usize| row.get(i).cloned().flatten();
        let resume_text = text(0).ok_or_else(|| bad("no resume point".into()))?;
        let resume_point =
            serde_json::from_str(&resume_text).map_err(|e| bad(format!("{e} in {resume_text}")))?;
        let source_commit_ts_micros = text(1).map(|t| parse_micros(&t)).transpose().map_err(bad)?;
        let committed_at_micros = text(2).map(|t| parse_micros(&t)).transpose().map_err(bad)?;
        let last_error = text(3);
        let state: String = self
            .query(&sql::read_snapshot_state(source_id), &context)
            .await?
            .into_iter()
            .filter_map(|row| row.into_iter().next().flatten())
            .collect();
        let snapshot = if state.is_empty() {
            None
        } else {
            Some(SnapshotProgress(
                serde_json::from_str(&state).map_err(|e| bad(format!("snapshot state: {e}")))?,
            ))
        };
        let mut tables = Vec::new();
        for row in self
            .query(&sql::read_table_versions(source_id), &context)
            .await?
        {
            let field = |i: usize| row.get(i).cloned().flatten().unwrap_or_default();
            let columns: Vec<(String, String)> = serde_json::from_str(&field(3))
                .map_err(|e| bad(format!("table version columns: {e}")))?;
            tables.push(TableVersion {
                table: TargetTable {
                    schema: field(0),
                    table: field(1),
                },
                version: field(2).parse().map_err(|e| bad(format!("version: {e}")))?,
                columns,
                position: field(4),
            });
        }
        let mut chunks_done = Vec::new();
        for row in self.query(&sql::read_chunks(source_id), &context).await? {
            let field = |i: usize| row.get(i).cloned().flatten().unwrap_or_default();
            chunks_done.push(ChunkDone {
                namespace: field(0),
                name: field(1),
                started_at_micros: field(2).parse().map_err(|e| bad(format!("chunk: {e}")))?,
                chunk: field(3).parse().map_err(|e| bad(format!("chunk: {e}")))?,
                rows: field(4).parse().map_err(|e| bad(format!("chunk: {e}")))?,
            });
        }
        Ok(Some(ProgressRecord {
            progress: Progress {
                resume_point,
                source_commit_ts_micros,
                snapshot,
            },
            committed_at_micros,
            tables,
            last_error,
            chunks_done,
        }))
    }

    /// Applies `batch` and its progress: all of it, or none of it.
    pub async fn apply(&mut self, batch: &mut Batch) -> Result<(), RedshiftSinkError> {
        self.for_source(&batch.source_id).await?;
        let result = self.apply_once(batch).await;
        self.step.set(Step::Idle);
        if result.is_err() {
            // The transaction rolled back, and with it any DDL in it: forget what we learned.
            self.shapes.clear();
            self.schemas.clear();
        }
        result
    }

    /// Whether `batch` committed (its progress, or its chunk's record, is the stored one).
    pub async fn committed(&mut self, batch: &Batch) -> Result<bool, RedshiftSinkError> {
        // Statements of the failed attempt may still run: their outcome decides.
        self.leftovers_done.remove(&*batch.source_id);
        self.for_source(&batch.source_id).await?;
        if let Some(chunk) = &batch.chunk {
            let rows = self
                .query(
                    &sql::chunk_recorded(
                        &batch.source_id,
                        &chunk.namespace,
                        &chunk.name,
                        chunk.started_at_micros,
                        chunk.chunk,
                    ),
                    "reading whether a snapshot chunk is loaded",
                )
                .await?;
            return Ok(!rows.is_empty());
        }
        let committed = self.read_progress(&batch.source_id).await?;
        Ok(committed.is_some_and(|record| {
            record.progress.resume_point == batch.progress.resume_point
                && record.progress.snapshot == batch.progress.snapshot
        }))
    }

    async fn apply_once(&mut self, batch: &mut Batch) -> Result<(), RedshiftSinkError> {
        let attempt = self.staging.next_attempt();
        let position = batch.progress.resume_point.to_string();
        let source_id = batch.source_id.clone();
        // Statements before any table's (renames), then one group per table.
        let mut head: Vec<String> = Vec::new();
        let mut groups: Vec<TableGroup> = Vec::new();
        for (from, to) in &batch.renames {
            head.extend(self.rename(&source_id, from, to, &position).await?);
        }
        let mut append_tables = Vec::new();
        for (i, changes) in batch.tables.iter_mut().enumerate() {
            self.step.set(Step::Table(changes.target.clone()));
            let mut statements = Vec::new();
            if !self.schemas.contains(&changes.target.schema) {
                statements.push(sql::create_schema(&changes.target.schema));
            }
            let Some(shape) = self
                .prepare_table(&source_id, changes, &position, &mut statements)
                .await?
            else {
                continue;
            };
            let load = Load {
                source_id: &source_id,
                attempt: &attempt,
                stage: format!("tidemark_stage_{i}"),
                skip_applied: self.split_pending.contains(&*source_id),
            };
            self.load_table(changes, &shape, &load, &mut statements)
                .await?;
            if let Some(before) = changes.replaces_rows_loaded_before {
                statements.push(if self.config.soft_delete {
                    sql::mark_deleted_loaded_before(&changes.target, before)
                } else {
                    sql::delete_loaded_before(&changes.target, before)
                });
            }
            if shape.key.is_empty() {
                append_tables.push(i);
            }
            let reaches = changes.positions.map(|(_, last)| last.packed());
            groups.push(TableGroup {
                target: changes.target.clone(),
                statements,
                reaches,
            });
        }
        crash_point(crash::AFTER_APPLY);
        self.step.set(Step::Progress);
        let mut tail = Vec::new();
        if batch.records_progress {
            let resume = serde_json::to_string(&batch.progress.resume_point).map_err(|e| {
                RedshiftSinkError::Progress {
                    source_id: source_id.to_string(),
                    reason: e.to_string(),
                }
            })?;
            let snapshot = batch.progress.snapshot.as_ref().map(|s| s.0.to_string());
            tail.extend(sql::write_progress(
                &source_id,
                &resume,
                &position,
                batch.progress.source_commit_ts_micros,
                snapshot.as_deref(),
            ));
        }
        if batch.forget_chunks {
            tail.push(sql::forget_chunks(&source_id));
        }
        if let Some(chunk) = &batch.chunk {
            tail.push(sql::record_chunk(
                &source_id,
                &chunk.namespace,
                &chunk.name,
                chunk.started_at_micros,
                chunk.chunk,
                chunk.rows,
            ));
        }
        if let Some(last) = batch.requests_handled {
            tail.push(sql::requests_handled(&source_id, last));
        }
        crash_point(crash::BEFORE_COMMIT);
        self.step.set(Step::Transaction);
        self.run_transactions(&source_id, head, groups, tail)
            .await?;
        self.split_pending.remove(&*source_id);
        for changes in &batch.tables {
            self.schemas.insert(changes.target.schema.clone());
        }
        self.staging.committed().await;
        for &i in &append_tables {
            let changes = &batch.tables[i];
            if self.warned_append.insert(changes.target.clone()) {
                warn!(
                    table = %changes.target,
                    source_table = %changes.source_table,
                    "table has no primary key: loading in append mode (every change is a new row)"
                );
            }
        }
        for changes in batch.tables.iter().filter(|t| t.truncated_values > 0) {
            warn!(
                table = %changes.target,
                values = changes.truncated_values,
                "values longer than their Redshift column cut to fit (oversize = \"truncate\"); their rows have _tidemark_truncated = true"
            );
        }
        for changes in batch.tables.iter().filter(|t| t.zero_dates_nulled > 0) {
            warn!(
                table = %changes.target,
                rows = changes.zero_dates_nulled,
                "zero dates written as NULL (Redshift has no zero date)"
            );
        }
        Ok(())
    }

    /// Runs the batch's statements: in one transaction when they fit, else one transaction per
    /// group of tables, each but the last recording how far its tables got.
    async fn run_transactions(
        &mut self,
        source_id: &str,
        head: Vec<String>,
        groups: Vec<TableGroup>,
        tail: Vec<String>,
    ) -> Result<(), RedshiftSinkError> {
        let total =
            head.len() + tail.len() + groups.iter().map(|g| g.statements.len()).sum::<usize>();
        if total <= MAX_STATEMENTS {
            let mut all = head;
            for group in groups {
                all.extend(group.statements);
            }
            all.extend(tail);
            if self.split_pending.contains(source_id) {
                all.push(sql::forget_table_progress(source_id));
            }
            return self
                .api
                .transaction(&all)
                .await
                .map_err(api_error(format!("loading a batch of source {source_id}")));
        }
        // The renames go first, alone: the tables' statements name tables by their new names.
        if !head.is_empty() {
            self.api
                .transaction(&head)
                .await
                .map_err(api_error(format!("renaming tables of source {source_id}")))?;
        }
        let mut pending: Vec<String> = Vec::new();
        let mut pending_tables = Vec::new();
        let mut groups = groups.into_iter().peekable();
        while let Some(group) = groups.next() {
            let record: Vec<String> = group
                .reaches
                .map(|reaches| sql::record_table_progress(source_id, &group.target, reaches))
                .into_iter()
                .flatten()
                .collect();
            let needs = group.statements.len() + record.len();
            if needs > MAX_STATEMENTS {
                return Err(RedshiftSinkError::Table {
                    table: group.target.to_string(),
                    problem: format!(
                        "loading it needs {needs} statements, more than the {MAX_STATEMENTS} of one Data API transaction (a batch with many schema changes to one table?); lower [batch] max_rows"
                    ),
                });
            }
            if pending.len() + needs > MAX_STATEMENTS {
                self.commit_part(source_id, &mut pending, &mut pending_tables)
                    .await?;
            }
            pending.extend(group.statements);
            pending.extend(record);
            pending_tables.push(group.target);
            if groups.peek().is_none() && pending.len() + tail.len() + 1 > MAX_STATEMENTS {
                self.commit_part(source_id, &mut pending, &mut pending_tables)
                    .await?;
            }
        }
        pending.extend(tail);
        pending.push(sql::forget_table_progress(source_id));
        self.api
            .transaction(&pending)
            .await
            .map_err(api_error(format!("loading a batch of source {source_id}")))
    }

    async fn commit_part(
        &mut self,
        source_id: &str,
        pending: &mut Vec<String>,
        tables: &mut Vec<TargetTable>,
    ) -> Result<(), RedshiftSinkError> {
        debug!(
            source = source_id,
            tables = tables.len(),
            "committing part of a batch too large for one transaction"
        );
        self.api
            .transaction(pending)
            .await
            .map_err(api_error(format!(
                "loading part of a batch of source {source_id}"
            )))?;
        self.split_pending.insert(source_id.to_owned());
        crash_point(crash::AFTER_SPLIT_PART);
        pending.clear();
        tables.clear();
        Ok(())
    }

    /// Renames `from` to `to` (statements for the transaction), when `from` exists.
    async fn rename(
        &mut self,
        source_id: &str,
        from: &TargetTable,
        to: &TargetTable,
        position: &str,
    ) -> Result<Vec<String>, RedshiftSinkError> {
        if self.read_shape(from).await?.is_none() {
            debug!(from = %from, to = %to, "renamed table has no target table yet; nothing to rename");
            return Ok(Vec::new());
        }
        if from.schema != to.schema {
            return Err(RedshiftSinkError::Table {
                table: from.to_string(),
                problem: format!("cannot follow a rename to another schema ({to})"),
            });
        }
        if self.read_shape(to).await?.is_some() {
            return Err(RedshiftSinkError::Table {
                table: to.to_string(),
                problem: format!(
                    "the source renamed {from} to this name, but the warehouse already has a table {to}. Rename or drop the warehouse table {to}, then restart"
                ),
            });
        }
        info!(from = %from, to = %to, "renaming target table");
        self.shapes.remove(from);
        self.shapes.remove(to);
        Ok(vec![
            sql::rename_table(from, &to.table),
            sql::rename_table_version(source_id, from, to, position),
        ])
    }

    /// Reads a table's columns and key from the catalog; `None` when it does not exist.
    async fn read_shape(&self, target: &TargetTable) -> Result<Option<Shape>, RedshiftSinkError> {
        if target.table.len() > MAX_IDENTIFIER_BYTES || target.schema.len() > MAX_IDENTIFIER_BYTES {
            return Err(RedshiftSinkError::Table {
                table: target.to_string(),
                problem: format!(
                    "the name is longer than Redshift's {MAX_IDENTIFIER_BYTES}-byte identifiers; set target_table for the source to a shorter template"
                ),
            });
        }
        let context = format!("reading the columns of {target}");
        let rows = self.query(&sql::table_columns(target), &context).await?;
        if rows.is_empty() {
            return Ok(None);
        }
        let columns = rows
            .into_iter()
            .map(|row| {
                let mut fields = row.into_iter();
                let name = fields.next().flatten().unwrap_or_default();
                let ty = fields.next().flatten().unwrap_or_default();
                (name, ty)
            })
            .collect();
        let key = self
            .query(&sql::table_key(target), &context)
            .await?
            .into_iter()
            .filter_map(|row| row.into_iter().next().flatten())
            .collect();
        Ok(Some(Shape { columns, key }))
    }

    /// Makes the target table fit every segment of `changes`, adding to `statements` what the
    /// transaction must do (create, add columns, record the version) and widening columns at
    /// once; `None` when there is nothing to load.
    async fn prepare_table(
        &mut self,
        source_id: &str,
        changes: &TableChanges,
        position: &str,
        statements: &mut Vec<String>,
    ) -> Result<Option<Shape>, RedshiftSinkError> {
        let target = &changes.target;
        let cached = match self.shapes.get(target) {
            Some(shape) if self.fits(shape, changes)? => Some(shape.clone()),
            // Another connection may have changed it since: read it again.
            _ => None,
        };
        let mut shape = match &cached {
            Some(shape) => Some(shape.clone()),
            None => self.read_shape(target).await?,
        };
        if shape.is_none() {
            // Created by this batch: with every segment's columns at once, each as wide as
            // the widest segment needs (the table does not exist before the batch commits,
            // so nothing could be widened in between).
            let mut columns: Vec<(String, String)> = Vec::new();
            let mut key = Vec::new();
            for segment in &changes.segments {
                let wanted = self.wanted_columns(target, &segment.schema)?;
                key = segment
                    .schema
                    .primary_key
                    .iter()
                    .map(|&k| wanted[k].0.clone())
                    .collect();
                for (name, ty) in wanted {
                    match columns.iter_mut().find(|(n, _)| *n == name) {
                        Some((_, current)) if type_change(current, &ty) != TypeChange::None => {
                            *current = ty;
                        }
                        Some(_) => {}
                        None => columns.push((name, ty)),
                    }
                }
            }
            if changes.segments.is_empty() {
                return Ok(None);
            }
            columns.extend(self.metadata_columns());
            statements.push(sql::create_table(target, &columns, &key));
            info!(table = %target, source_table = %changes.source_table, "creating target table");
            shape = Some(Shape { columns, key });
        } else if let Some(current) = shape.as_mut() {
            for segment in &changes.segments {
                let wanted = self.wanted_columns(target, &segment.schema)?;
                let key: Vec<String> = segment
                    .schema
                    .primary_key
                    .iter()
                    .map(|&k| wanted[k].0.clone())
                    .collect();
                self.evolve(target, current, &wanted, &key, statements)
                    .await?;
            }
            if self.config.drop_dropped_columns {
                // Only columns no segment of the batch has: earlier segments' rows still
                // carry a column dropped in the middle of the batch.
                let kept: HashSet<String> = changes
                    .segments
                    .iter()
                    .flat_map(|s| s.schema.columns.iter().map(|c| c.name.to_lowercase()))
                    .collect();
                let dropped: Vec<String> = current
                    .user_columns()
                    .into_iter()
                    .map(|(name, _)| name)
                    .filter(|name| !kept.contains(name))
                    .collect();
                for name in dropped {
                    statements.push(sql::drop_column(target, &name));
                    info!(table = %target, column = %name, "dropping target column the source dropped");
                    current.columns.retain(|(n, _)| *n != name);
                }
            }
        }
        // A policy switched on since the table was made needs its column.
        if let Some(current) = shape.as_mut() {
            for (name, ty) in self.metadata_columns() {
                if !current.columns.iter().any(|(n, _)| *n == name) {
                    statements.push(sql::add_column(target, &name, &ty));
                    current.columns.push((name, ty));
                }
            }
        }
        if let Some(shape) = &shape {
            if cached.as_ref() != Some(shape) {
                let columns = serde_json::to_string(&shape.user_columns()).unwrap_or_default();
                statements.extend(sql::record_table_version(
                    source_id, target, &columns, position,
                ));
            }
            self.shapes.insert(target.clone(), shape.clone());
        }
        Ok(shape)
    }

    /// The metadata columns of a new target table.
    fn metadata_columns(&self) -> Vec<(String, String)> {
        let mut columns: Vec<(String, String)> = sql::METADATA_COLUMNS
            .iter()
            .map(|(n, t)| ((*n).to_owned(), (*t).to_owned()))
            .collect();
        if self.config.oversize == Oversize::Truncate {
            columns.push((sql::TRUNCATED.to_owned(), "boolean".to_owned()));
        }
        if self.config.soft_delete {
            columns.push((sql::DELETED.to_owned(), "boolean".to_owned()));
        }
        columns
    }

    /// True when every segment of `changes` fits `shape` as it is.
    fn fits(&self, shape: &Shape, changes: &TableChanges) -> Result<bool, RedshiftSinkError> {
        for segment in &changes.segments {
            let wanted = self.wanted_columns(&changes.target, &segment.schema)?;
            let key_fits = segment.schema.primary_key.len() == shape.key.len()
                && segment
                    .schema
                    .primary_key
                    .iter()
                    .zip(&shape.key)
                    .all(|(&k, name)| wanted[k].0 == *name);
            let columns_fit = wanted.iter().all(|(name, ty)| {
                shape
                    .columns
                    .iter()
                    .any(|(n, t)| n == name && type_change(t, ty) == TypeChange::None)
            });
            if !key_fits || !columns_fit {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Source columns as target (name, type), names lowercased and checked.
    fn wanted_columns(
        &self,
        target: &TargetTable,
        schema: &TableSchema,
    ) -> Result<Vec<(String, String)>, RedshiftSinkError> {
        let names =
            target_column_names(schema, MAX_IDENTIFIER_BYTES, "Redshift").map_err(|problem| {
                RedshiftSinkError::Table {
                    table: target.to_string(),
                    problem,
                }
            })?;
        Ok(names
            .into_iter()
            .zip(&schema.columns)
            .map(|(name, column)| (name, redshift_type(&column.ty, self.config.wide_decimal)))
            .collect())
    }

    /// Adds missing columns (in the transaction) and widens VARCHARs (at once, outside it);
    /// refuses a changed key or a type change Redshift cannot make.
    async fn evolve(
        &mut self,
        target: &TargetTable,
        current: &mut Shape,
        wanted: &[(String, String)],
        key: &[String],
        statements: &mut Vec<String>,
    ) -> Result<(), RedshiftSinkError> {
        if current.key != key {
            return Err(RedshiftSinkError::Table {
                table: target.to_string(),
                problem: format!(
                    "the source's primary key is ({}) but the target's is ({}); a target's key is fixed when it is created. Drop the target table to have it created again with the new key (then copy it again with `tidemark snapshot`)",
                    key.join(", "),
                    current.key.join(", ")
                ),
            });
        }
        for (name, ty) in wanted {
            match current.columns.iter_mut().find(|(n, _)| n == name) {
                None => {
                    statements.push(sql::add_column(target, name, ty));
                    info!(table = %target, column = %name, r#type = %ty, "adding target column");
                    current.columns.push((name.clone(), ty.clone()));
                }
                Some((_, current_ty)) => match type_change(current_ty, ty) {
                    TypeChange::None => {}
                    TypeChange::Widen => {
                        self.api
                            .execute(&sql::widen_column(target, name, ty))
                            .await
                            .map_err(api_error(format!(
                                "widening column {name} of {target} from {current_ty} to {ty}"
                            )))?;
                        info!(table = %target, column = %name, from = %current_ty, to = %ty, "widened target column");
                        *current_ty = ty.clone();
                    }
                    TypeChange::Impossible => {
                        return Err(RedshiftSinkError::Table {
                            table: target.to_string(),
                            problem: format!(
                                "column {name} is {current_ty} in Redshift but the source's type now needs {ty}; Redshift changes a column's type only to widen a VARCHAR. Fix: add a column by hand and copy the data, or drop the target table and copy it again (`tidemark snapshot --table`)"
                            ),
                        });
                    }
                },
            }
        }
        Ok(())
    }

    /// Stages one table's rows (files, manifest, COPY) and applies them by key, or appends
    /// them; the statements go to `statements`.
    async fn load_table(
        &mut self,
        changes: &mut TableChanges,
        shape: &Shape,
        load: &Load<'_>,
        statements: &mut Vec<String>,
    ) -> Result<(), RedshiftSinkError> {
        let Load {
            source_id,
            attempt,
            stage,
            skip_applied,
        } = load;
        let target = changes.target.clone();
        if changes.has_unchanged {
            return Err(RedshiftSinkError::Table {
                table: target.to_string(),
                problem: format!(
                    "source table {} sent updates without some unchanged large (TOASTed) values, which the Redshift sink cannot merge yet. Fix: ALTER TABLE {} REPLICA IDENTITY FULL at the source, then copy the table again (`tidemark snapshot --table`)",
                    changes.source_table, changes.source_table
                ),
            });
        }
        let user_columns = shape.user_columns();
        statements.push(sql::create_stage(stage, &user_columns));
        let table_name = format!("{}.{}", target.schema, target.table);
        for segment_index in 0..changes.segments.len() {
            let segment = &changes.segments[segment_index];
            if segment.rows == 0 {
                continue;
            }
            let columns: Vec<String> = segment
                .schema
                .columns
                .iter()
                .map(|c| c.name.to_lowercase())
                .collect();
            let mut files = self.staging.table_files(
                source_id,
                &format!("{table_name}/{segment_index}"),
                attempt,
            );
            let mut parts = GzipParts::new(PART_BYTES, DEFAULT_LEVEL);
            let mut chunks = changes.row_chunks(segment_index);
            let rows_error = |error| RedshiftSinkError::Rows {
                table: table_name.clone(),
                error,
            };
            while let Some(chunk) = chunks.next_chunk().map_err(rows_error)? {
                if let Some(part) = parts.write(&chunk).map_err(rows_error)? {
                    self.staging
                        .put_part(&mut files, maybe_corrupted(part.bytes))
                        .await
                        .map_err(|error| RedshiftSinkError::S3 {
                            table: table_name.clone(),
                            error,
                        })?;
                }
            }
            if let Some(part) = parts.finish().map_err(rows_error)? {
                self.staging
                    .put_part(&mut files, maybe_corrupted(part.bytes))
                    .await
                    .map_err(|error| RedshiftSinkError::S3 {
                        table: table_name.clone(),
                        error,
                    })?;
            }
            let manifest =
                self.staging
                    .put_manifest(&files)
                    .await
                    .map_err(|error| RedshiftSinkError::S3 {
                        table: table_name.clone(),
                        error,
                    })?;
            statements.push(sql::copy_stage(
                stage,
                &columns,
                &manifest,
                &self.config.iam_role,
                &self.config.region,
            ));
        }
        crash_point(crash::AFTER_STAGING_COPY);
        if *skip_applied {
            statements.push(sql::skip_applied(stage, source_id, &target));
        }
        if let Some(seq) = changes.truncate_at {
            statements.push(if self.config.soft_delete {
                sql::mark_all_deleted(&target)
            } else {
                sql::delete_all(&target)
            });
            statements.push(sql::discard_before(stage, seq));
        }
        let mut data: Vec<String> = user_columns.into_iter().map(|(n, _)| n).collect();
        data.extend([sql::OP, sql::POSITION, sql::COMMIT_TS].map(str::to_owned));
        if self.config.oversize == Oversize::Truncate {
            data.push(sql::TRUNCATED.to_owned());
        }
        if shape.key.is_empty() {
            statements.push(sql::append(&target, stage, &data));
            return Ok(());
        }
        if changes.needs_dedupe() {
            statements.push(sql::keep_last_per_key(stage, &shape.key));
        }
        if changes.has_deletes {
            statements.push(if self.config.soft_delete {
                sql::mark_deleted_by_key(&target, stage, &shape.key)
            } else {
                sql::delete_by_key(&target, stage, &shape.key)
            });
            statements.push(sql::drop_staged_deletes(stage));
        }
        statements.push(sql::merge(
            &target,
            stage,
            &data,
            &shape.key,
            self.config.soft_delete,
        ));
        Ok(())
    }
}

/// `part`, or (under the test fault [`crash::CORRUPT_STAGED_PART`]) its first half only: a
/// gzip stream cut short, which COPY refuses.
fn maybe_corrupted(part: bytes::Bytes) -> bytes::Bytes {
    if crash::fault(crash::CORRUPT_STAGED_PART) {
        warn!(
            "test fault {}: staging a part cut short",
            crash::CORRUPT_STAGED_PART
        );
        return part.slice(..part.len() / 2);
    }
    part
}

/// Where one table's load of a batch attempt stands: its source, the attempt's name (staged
/// files), its staging table, and whether rows a part of a split batch applied are skipped.
struct Load<'a> {
    source_id: &'a str,
    attempt: &'a str,
    stage: String,
    skip_applied: bool,
}

/// One table's statements in a batch, and the position its changes reach.
struct TableGroup {
    target: TargetTable,
    statements: Vec<String>,
    reaches: Option<u128>,
}

/// How a column's Redshift type must change to take a source type.
#[derive(Debug, PartialEq, Eq)]
enum TypeChange {
    /// It holds it as it is.
    None,
    /// A longer VARCHAR (Redshift's one type change).
    Widen,
    /// Redshift cannot change it.
    Impossible,
}

/// What turning a column of type `current` (as the catalog prints it) into `wanted` takes:
/// nothing when `current` holds every value of `wanted` (the same type, a longer VARCHAR, a
/// wider integer or decimal), a widening for a longer VARCHAR, else Redshift cannot. VARBYTE
/// sizes are not compared (Redshift cannot change them, and a value past the size is the
/// oversize policy's business).
fn type_change(current: &str, wanted: &str) -> TypeChange {
    if current == wanted {
        return TypeChange::None;
    }
    let (from, to) = (TypeName::parse(current), TypeName::parse(wanted));
    match (from.base.as_str(), to.base.as_str()) {
        ("varbyte", "varbyte") => TypeChange::None,
        ("character varying", "character varying") => match (from.args.first(), to.args.first()) {
            (Some(have), Some(want)) if have >= want => TypeChange::None,
            (Some(_), Some(want)) if *want <= MAX_VARCHAR_BYTES => TypeChange::Widen,
            _ => TypeChange::Impossible,
        },
        (a, b)
            if integer_rank(a)
                .zip(integer_rank(b))
                .is_some_and(|(a, b)| a >= b) =>
        {
            TypeChange::None
        }
        ("numeric", b) if integer_rank(b).is_some() => {
            // numeric(p,0) holds an integer type of at most p digits.
            let digits = [5, 10, 19][integer_rank(b).unwrap_or(2)];
            match from.args.as_slice() {
                [p, 0] if *p >= digits => TypeChange::None,
                _ => TypeChange::Impossible,
            }
        }
        ("numeric", "numeric") => match (from.args.as_slice(), to.args.as_slice()) {
            ([p, s], [p2, s2]) if s >= s2 && p - s >= p2 - s2 => TypeChange::None,
            _ => TypeChange::Impossible,
        },
        ("double precision", "real") => TypeChange::None,
        _ => TypeChange::Impossible,
    }
}

/// The place of an integer type in smallint < integer < bigint.
fn integer_rank(base: &str) -> Option<usize> {
    ["smallint", "integer", "bigint"]
        .iter()
        .position(|t| *t == base)
}

/// A type as the catalog prints it: its name and its numeric arguments.
struct TypeName {
    base: String,
    args: Vec<u64>,
}

impl TypeName {
    fn parse(ty: &str) -> TypeName {
        let (base, args) = ty.split_once('(').unwrap_or((ty, ""));
        let base = base.trim().to_ascii_lowercase();
        let base = match base.as_str() {
            "binary varying" | "varbinary" => "varbyte".to_owned(),
            "varchar" => "character varying".to_owned(),
            "decimal" => "numeric".to_owned(),
            _ => base,
        };
        let args = args
            .trim_end_matches(')')
            .split(',')
            .filter_map(|a| a.trim().parse().ok())
            .collect();
        TypeName { base, args }
    }
}

/// `YYYY-MM-DD HH:MM:SS[.ffffff]` (UTC) as µs since the epoch.
fn parse_micros(text: &str) -> Result<i64, String> {
    let bad = || format!("unreadable timestamp {text:?}");
    let (date, time) = text.trim().split_once(' ').ok_or_else(bad)?;
    let mut d = date.split('-').map(|p| p.parse::<i64>());
    let (Some(Ok(y)), Some(Ok(m)), Some(Ok(day))) = (d.next(), d.next(), d.next()) else {
        return Err(bad());
    };
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let mut t = hms.split(':').map(|p| p.parse::<i64>());
    let (Some(Ok(h)), Some(Ok(min)), Some(Ok(s))) = (t.next(), t.next(), t.next()) else {
        return Err(bad());
    };
    let frac_digits: String = frac.chars().take(6).collect();
    let micros_frac: i64 = format!("{frac_digits:0<6}").parse().map_err(|_| bad())?;
    let days = days_from_civil(y, m, day);
    Ok(((days * 86_400 + h * 3_600 + min * 60 + s) * 1_000_000) + micros_frac)
}

/// Days from 1970-01-01 to the proleptic Gregorian date `y-m-d`.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

impl Sink for RedshiftSink {
    fn prepare(&mut self) -> SinkFuture<'_, ()> {
        Box::pin(async move { Ok(self.ensure_control_tables().await?) })
    }

    fn read_progress<'a>(
        &'a mut self,
        source_id: &'a str,
    ) -> SinkFuture<'a, Option<ProgressRecord>> {
        Box::pin(async move { Ok(RedshiftSink::read_progress(self, source_id).await?) })
    }

    fn apply<'a>(&'a mut self, batch: &'a mut Batch) -> SinkFuture<'a, ()> {
        Box::pin(async move { Ok(RedshiftSink::apply(self, batch).await?) })
    }

    fn committed<'a>(&'a mut self, batch: &'a Batch) -> SinkFuture<'a, bool> {
        Box::pin(async move { Ok(RedshiftSink::committed(self, batch).await?) })
    }

    fn load_step(&self) -> LoadStep {
        self.step.clone()
    }

    fn encoder(&self) -> Arc<dyn RowEncoder> {
        self.encoder.clone()
    }

    fn record_error<'a>(&'a mut self, source_id: &'a str, error: &'a str) -> SinkFuture<'a, ()> {
        Box::pin(async move {
            self.api
                .execute(&sql::record_error(source_id, error))
                .await
                .map_err(api_error("recording why the source stopped"))?;
            Ok(())
        })
    }

    fn clock_micros(&mut self) -> SinkFuture<'_, i64> {
        Box::pin(async move {
            let rows = self
                .query(sql::CLOCK, "reading the warehouse clock")
                .await?;
            let text = rows
                .into_iter()
                .next()
                .and_then(|row| row.into_iter().next().flatten())
                .unwrap_or_default();
            parse_micros(&text).map_err(|reason| {
                SinkError::new(
                    ErrorKind::Retry,
                    format!("reading the warehouse clock: {reason}"),
                )
            })
        })
    }

    fn holds_rows<'a>(&'a mut self, table: &'a TargetTable) -> SinkFuture<'a, bool> {
        Box::pin(async move {
            if self.read_shape(table).await?.is_none() {
                return Ok(false);
            }
            let rows = self
                .query(
                    &sql::holds_rows(table),
                    &format!("reading whether {table} holds rows"),
                )
                .await?;
            Ok(!rows.is_empty())
        })
    }

    fn request_snapshot<'a>(
        &'a mut self,
        source_id: &'a str,
        tables: Option<Vec<TableId>>,
    ) -> SinkFuture<'a, i64> {
        Box::pin(async move {
            let tables = tables.map(|tables| {
                let pairs: Vec<(&str, &str)> =
                    tables.iter().map(|t| (&*t.namespace, &*t.name)).collect();
                serde_json::to_string(&pairs).unwrap_or_default()
            });
            // Ids increase with time; Redshift has no sequence the Data API can return.
            let id = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_micros() as i64);
            self.api
                .execute(&sql::request_snapshot(id, source_id, tables.as_deref()))
                .await
                .map_err(api_error("recording the snapshot request"))?;
            Ok(id)
        })
    }

    fn snapshot_requests<'a>(
        &'a mut self,
        source_id: &'a str,
    ) -> SinkFuture<'a, Vec<SnapshotRequest>> {
        Box::pin(async move {
            let context = "reading the snapshot requests";
            let rows = self
                .query(&sql::read_snapshot_requests(source_id), context)
                .await?;
            let mut requests = Vec::with_capacity(rows.len());
            for row in rows {
                let mut fields = row.into_iter();
                let id_text = fields.next().flatten().unwrap_or_default();
                let id: i64 = id_text.parse().map_err(|_| {
                    SinkError::new(
                        ErrorKind::Fatal,
                        format!("{context}: request id {id_text:?} is not a number"),
                    )
                })?;
                let tables = match fields.next().flatten() {
                    Some(text) => {
                        let pairs: Vec<(String, String)> =
                            serde_json::from_str(&text).map_err(|e| {
                                SinkError::new(ErrorKind::Fatal, format!("{context}: {e}"))
                            })?;
                        Some(
                            pairs
                                .into_iter()
                                .map(|(namespace, name)| TableId::new(namespace, name))
                                .collect(),
                        )
                    }
                    None => None,
                };
                requests.push(SnapshotRequest { id, tables });
            }
            Ok(requests)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_varchars_widen() {
        assert_eq!(
            type_change("character varying(40)", "character varying(400)"),
            TypeChange::Widen
        );
        assert_eq!(
            type_change("character varying(400)", "character varying(40)"),
            TypeChange::None
        );
        assert_eq!(type_change("varbyte", "varbyte(16)"), TypeChange::None);
        assert_eq!(type_change("integer", "bigint"), TypeChange::Impossible);
        assert_eq!(type_change("bigint", "integer"), TypeChange::None);
        assert_eq!(type_change("numeric(20,0)", "bigint"), TypeChange::None);
        assert_eq!(
            type_change("numeric(10,2)", "numeric(12,2)"),
            TypeChange::Impossible
        );
        assert_eq!(
            type_change("numeric(12,2)", "numeric(10,2)"),
            TypeChange::None
        );
        assert_eq!(type_change("super", "super"), TypeChange::None);
    }

    #[test]
    fn timestamps_read_back_to_the_microsecond() {
        assert_eq!(parse_micros("1970-01-01 00:00:00.000001"), Ok(1));
        assert_eq!(
            parse_micros("2026-12-07 21:33:13.5"),
            Ok(1_796_679_193_500_000)
        );
        assert!(parse_micros("yesterday").is_err());
    }
}
