//! Reads a snapshot's chunks in parallel and turns each into a batch of copied rows.
//!
//! The [`Copier`] owns the snapshot's committed state. It plans tables when the copy reaches
//! them, starts up to `snapshot_parallelism` chunk reads (each a task with its own source
//! connection, encoding rows with the sink's encoder as they arrive, spilling to disk past the
//! batch's byte limit), and builds the batch that loads a chunk together with the state that
//! marks it done. Where a chunk's batch goes in the load order is the pipeline's business
//! (`pipeline::run`): it must load after every change received before the chunk's read started,
//! and before every change received after.

use std::collections::{HashMap, HashSet};
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinSet;
use tracing::info;

use super::state::{Chunk, ChunkId, SetAside, SnapshotState};
use crate::config::SourceConfig;
use crate::error::ErrorKind;
use crate::event::{ChangeEvent, Op, Position, ResumePoint, TableId, Transaction};
use crate::observe::progress::TableBar;
use crate::pipeline::columns::{ColumnRuleError, TableColumns};
use crate::pipeline::route::{RouteConflict, Router};
use crate::sink::{
    Batch, EncodeError, Progress, RowEncoder, Sink, SinkError, SnapshotProgress, TableChanges,
};
use crate::source::copy::{TableCopyError, copy_chunk, plan_table};

/// Rows handed over by a chunk's reader at a time.
const READ_BATCH_ROWS: usize = 1024;
/// How often the copy's progress is logged.
const PROGRESS_EVERY: Duration = Duration::from_secs(10);

/// Why a snapshot could not go on.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// Listing, planning or reading a table failed.
    #[error(transparent)]
    Copy(#[from] TableCopyError),
    /// A copied value the warehouse cannot hold.
    #[error("copying {table}: {error}")]
    Encode {
        /// The source table.
        table: TableId,
        /// What could not be encoded.
        #[source]
        error: EncodeError,
    },
    /// Spilling a chunk's rows to disk failed.
    #[error("copying {table}: spilling rows to {dir}: {error}")]
    Spill {
        /// The source table.
        table: TableId,
        /// The spill directory.
        dir: PathBuf,
        /// The I/O error.
        #[source]
        error: std::io::Error,
    },
    /// Two source tables would land in one target table.
    #[error(transparent)]
    Route(#[from] Box<RouteConflict>),
    /// A table's column rules cannot apply to its shape (a key column excluded, a name clash).
    #[error(transparent)]
    Columns(#[from] Box<ColumnRuleError>),
    /// Reading the warehouse clock failed.
    #[error(transparent)]
    Warehouse(#[from] SinkError),
    /// A chunk's reader panicked: a bug in tidemark.
    #[error(
        "reading a snapshot chunk panicked: {0}. This is a bug in tidemark; please report it with this log"
    )]
    ReaderPanicked(String),
}

impl SnapshotError {
    /// Whether retrying can help.
    pub fn kind(&self) -> ErrorKind {
        match self {
            SnapshotError::Copy(e) => e.kind(),
            SnapshotError::Encode { .. } => ErrorKind::Fatal,
            SnapshotError::Spill { .. } => ErrorKind::Retry,
            SnapshotError::Route(_) | SnapshotError::Columns(_) => ErrorKind::Operator,
            SnapshotError::Warehouse(e) => e.kind(),
            SnapshotError::ReaderPanicked(_) => ErrorKind::Fatal,
        }
    }
}

/// A chunk read and encoded, ready to load.
#[derive(Debug)]
pub struct CopiedChunk {
    /// Its rows, as the sink loads them; `None` when the table no longer exists.
    changes: Option<TableChanges>,
    /// Rows read.
    rows: u64,
}

/// What a chunk's reader needs, shared by every reader of the snapshot.
#[derive(Clone)]
struct ReadContext {
    source: Arc<SourceConfig>,
    encoder: Arc<dyn RowEncoder>,
    spill_dir: PathBuf,
    max_bytes: u64,
}

/// Copies one snapshot's chunks: see the module docs.
pub struct Copier {
    context: ReadContext,
    state: SnapshotState,
    parallelism: usize,
    router: Router,
    /// A warehouse connection of its own, for the clock at which each table's copy starts.
    clock: Box<dyn Sink>,
    /// Chunks started and not yet loaded.
    in_flight: HashSet<ChunkId>,
    /// The group's leave to copy (one of `[group] concurrent_snapshots`), given back when the
    /// copier is dropped: at its end, or when its source stops.
    _turn: Option<tokio::sync::OwnedSemaphorePermit>,
    /// Tables (by index) with a chunk loaded since they were planned or this copier began:
    /// their target table exists and their plan is recorded, so their chunks may load beside
    /// one another.
    loaded_tables: HashSet<usize>,
    reading: JoinSet<(ChunkId, Result<CopiedChunk, SnapshotError>)>,
    started: Instant,
    rows_at_start: u64,
    last_report: Instant,
    /// A bar per table being copied (drawn on a terminal only).
    bars: HashMap<usize, TableBar>,
}

impl Copier {
    /// Holds `turn` (the group's leave to copy) until the copier is dropped.
    pub fn with_turn(mut self, turn: tokio::sync::OwnedSemaphorePermit) -> Copier {
        self._turn = Some(turn);
        self
    }

    /// A copier resuming `state` (chunks done stay done), reading up to `parallelism` chunks
    /// at once and encoding with `encoder`, spilling chunks past `max_bytes` to `spill_dir`.
    pub fn new(
        source: &SourceConfig,
        state: SnapshotState,
        clock: Box<dyn Sink>,
        encoder: Arc<dyn RowEncoder>,
        spill_dir: PathBuf,
        max_bytes: u64,
    ) -> Copier {
        let totals = state.totals();
        // Tables planned before a restart get their bars back, where they were.
        let bars = state
            .tables
            .iter()
            .enumerate()
            .filter(|(_, table)| table.chunks.is_some() && !table.is_done())
            .map(|(t, table)| {
                let chunks = table.chunks.as_deref().unwrap_or_default();
                let bar = TableBar::new(&source.id, &table.id().to_string(), chunks.len() as u64);
                bar.resume(chunks.iter().filter(|c| c.done).count() as u64);
                (t, bar)
            })
            .collect();
        Copier {
            context: ReadContext {
                source: Arc::new(source.clone()),
                encoder,
                spill_dir,
                max_bytes,
            },
            parallelism: source.snapshot_parallelism.max(1),
            router: Router::new(source),
            state,
            clock,
            in_flight: HashSet::new(),
            _turn: None,
            loaded_tables: HashSet::new(),
            reading: JoinSet::new(),
            started: Instant::now(),
            rows_at_start: totals.rows,
            last_report: Instant::now(),
            bars,
        }
    }

    /// The committed state with the tables `set_aside`, as the next batch records it.
    pub fn progress(&self, set_aside: &[SetAside]) -> SnapshotProgress {
        let mut state = self.state.clone();
        state.set_aside = set_aside.to_vec();
        state.to_progress()
    }

    /// Stops copying `table` (it was set aside); chunks of it being read are dropped when
    /// they arrive ([`Copier::copies`]). Returns the table's index in the chunk ids, if the
    /// copy has it.
    pub fn forget(&mut self, table: &TableId) -> Option<usize> {
        let t = self.state.tables.iter().position(|t| t.id() == *table)?;
        self.in_flight.retain(|&(i, _)| i != t);
        // Keep the indexes of the other tables' chunks: the entry stays, with nothing left.
        self.state.tables[t].chunks = Some(Vec::new());
        Some(t)
    }

    /// True when chunk `id` is still one the copy wants (its table was not set aside since).
    pub fn copies(&self, id: ChunkId) -> bool {
        self.in_flight.contains(&id)
    }

    /// True when every chunk is loaded.
    pub fn is_complete(&self) -> bool {
        self.state.is_complete()
    }

    /// True while some chunk is being read.
    pub fn is_reading(&self) -> bool {
        !self.reading.is_empty()
    }

    /// True when another chunk read may start now: a reader is free, the chunks read ahead of
    /// the loader are few (each holds its rows until loaded), and some chunk is left.
    pub fn can_start(&self) -> bool {
        self.reading.len() < self.parallelism
            && self.in_flight.len() < self.parallelism * 2
            && self.next_chunk().is_some()
    }

    /// The first chunk neither done nor started, planned or not: (table, chunk index if
    /// planned).
    fn next_chunk(&self) -> Option<(usize, Option<usize>)> {
        self.state
            .tables
            .iter()
            .enumerate()
            .find_map(|(t, table)| match &table.chunks {
                None => Some((t, None)),
                Some(chunks) => chunks
                    .iter()
                    .enumerate()
                    .find(|(c, chunk)| !chunk.done && !self.in_flight.contains(&(t, *c)))
                    .map(|(c, _)| (t, Some(c))),
            })
    }

    /// Starts reading the next chunk, planning its table first if it must; returns the chunk,
    /// or `None` when none is left to start. The caller puts the chunk in the load order now.
    pub async fn start_next(&mut self) -> Result<Option<ChunkId>, SnapshotError> {
        loop {
            let Some((t, chunk)) = self.next_chunk() else {
                return Ok(None);
            };
            let Some(c) = chunk else {
                self.plan(t).await?;
                continue;
            };
            let table = self.state.tables[t].id();
            let Some(target) = self.router.route(&table)?.cloned() else {
                // Left out by include/exclude since it was listed: nothing to copy.
                self.state.tables[t].chunks = Some(Vec::new());
                continue;
            };
            let range = match &self.state.tables[t].chunks {
                Some(chunks) => chunks[c].range.clone(),
                None => continue,
            };
            let id = (t, c);
            self.in_flight.insert(id);
            let context = self.context.clone();
            let columns = self.router.columns(&table).cloned();
            self.reading.spawn(async move {
                let result = read_chunk(context, table, target, columns, range).await;
                (id, result)
            });
            return Ok(Some(id));
        }
    }

    /// Splits table `t` into chunks, noting the warehouse clock first, and then whether the
    /// target holds rows (any loaded before that instant are visible by then).
    async fn plan(&mut self, t: usize) -> Result<(), SnapshotError> {
        let table = self.state.tables[t].id();
        let started_at = self.clock.clock_micros().await?;
        let target_had_rows = match self.router.route(&table)? {
            Some(target) => self.clock.holds_rows(target).await?,
            None => false,
        };
        let chunk_rows = self.context.source.snapshot_chunk_rows;
        let chunks = match plan_table(&self.context.source, &table, chunk_rows).await? {
            Some(plan) => plan.chunks,
            None => {
                info!(source = %self.context.source.id, table = %table, "table no longer exists: nothing to copy");
                Vec::new()
            }
        };
        info!(source = %self.context.source.id, table = %table, chunks = chunks.len(), "copying table");
        self.bars.insert(
            t,
            TableBar::new(
                &self.context.source.id,
                &table.to_string(),
                chunks.len() as u64,
            ),
        );
        self.loaded_tables.remove(&t);
        let entry = &mut self.state.tables[t];
        entry.started_at_micros = Some(started_at);
        entry.target_had_rows = target_had_rows;
        entry.chunks = Some(
            chunks
                .into_iter()
                .map(|range| Chunk {
                    range,
                    done: false,
                    rows: 0,
                })
                .collect(),
        );
        Ok(())
    }

    /// Adds `tables` to the copy, or copies them again from the start when they are in it
    /// already; a table whose chunks are being read goes on as it is.
    pub fn add_tables(&mut self, tables: Vec<TableId>) {
        let busy: HashSet<usize> = self.in_flight.iter().map(|&(t, _)| t).collect();
        let tables: Vec<TableId> = tables
            .into_iter()
            .filter(|table| {
                let copying = self
                    .state
                    .tables
                    .iter()
                    .position(|t| t.id() == *table)
                    .is_some_and(|t| busy.contains(&t));
                if copying {
                    info!(source = %self.context.source.id, table = %table, "table is being copied already");
                }
                !copying
            })
            .collect();
        self.state.add_tables(tables);
    }

    /// Waits for the next chunk read to finish (pending forever when none is being read).
    pub async fn next_read(&mut self) -> Result<(ChunkId, CopiedChunk), SnapshotError> {
        match self.reading.join_next().await {
            Some(Ok((id, result))) => Ok((id, result?)),
            Some(Err(e)) => Err(SnapshotError::ReaderPanicked(e.to_string())),
            None => std::future::pending().await,
        }
    }

    /// True when chunk `id` must load alone, with no other load in flight, and record the
    /// whole state in the progress record: the first chunk of its table to load (it may create
    /// the target table, and records the table's plan), and the table's last chunk (it deletes
    /// the rows the source no longer has, once every other chunk of the table is in). Other
    /// chunks load beside one another, each recording only itself.
    pub fn loads_alone(&self, (t, c): ChunkId) -> bool {
        let chunks = self.state.tables[t].chunks.as_ref().map_or(0, Vec::len);
        !self.loaded_tables.contains(&t) || c + 1 >= chunks
    }

    /// The batch that loads chunk `id` and records it done, on top of the source's committed
    /// `resume_point`; with the whole state when it loads alone ([`Copier::loads_alone`]). The
    /// table's last chunk also deletes the rows the source no longer has.
    pub fn chunk_batch(
        &self,
        id: ChunkId,
        copied: CopiedChunk,
        source_id: Arc<str>,
        resume_point: ResumePoint,
        set_aside: &[SetAside],
    ) -> Batch {
        let alone = self.loads_alone(id);
        let mut state = self.state.clone();
        state.set_aside = set_aside.to_vec();
        state.mark_done(id, copied.rows);
        let chunk = state.chunk_done(id, copied.rows);
        let table = &state.tables[id.0];
        let mut tables = Vec::new();
        if let Some(mut changes) = copied.changes {
            let last = table.chunks.as_ref().map_or(0, Vec::len) == id.1 + 1;
            if last && table.target_had_rows {
                changes.replaces_rows_loaded_before = table.started_at_micros;
            }
            tables.push(changes);
        }
        Batch {
            source_id,
            renames: Vec::new(),
            tables,
            progress: Progress {
                resume_point,
                source_commit_ts_micros: None,
                snapshot: alone.then(|| state.to_progress()),
            },
            requests_handled: None,
            chunk,
            records_progress: alone,
            forget_chunks: false,
        }
    }

    /// Records that chunk `id`'s batch committed with `rows` rows.
    pub fn loaded(&mut self, id: ChunkId, rows: u64) {
        self.state.mark_done(id, rows);
        self.in_flight.remove(&id);
        self.loaded_tables.insert(id.0);
        if let Some(bar) = self.bars.get(&id.0) {
            let table = &self.state.tables[id.0];
            bar.chunk_done(table.chunks.iter().flatten().map(|c| c.rows).sum());
            if table.is_done() {
                bar.finish();
                self.bars.remove(&id.0);
            }
        }
        if self.last_report.elapsed() >= PROGRESS_EVERY || self.is_complete() {
            self.report();
        }
    }

    /// Logs how far the copy is, with an estimate of the time left.
    fn report(&mut self) {
        self.last_report = Instant::now();
        let totals = self.state.totals();
        let copied_now = totals.rows.saturating_sub(self.rows_at_start);
        let elapsed = self.started.elapsed().as_secs_f64();
        let rate = if elapsed > 0.0 {
            copied_now as f64 / elapsed
        } else {
            0.0
        };
        let left = totals.chunks.saturating_sub(totals.chunks_done);
        let eta_s = (totals.chunks_done > 0 && rate > 0.0).then(|| {
            let rows_per_chunk = totals.rows as f64 / totals.chunks_done as f64;
            (left as f64 * rows_per_chunk / rate).round()
        });
        info!(
            source = %self.context.source.id,
            tables_done = totals.tables_done,
            tables = totals.tables,
            chunks_done = totals.chunks_done,
            chunks_planned = totals.chunks,
            rows = totals.rows,
            rows_per_second = rate.round(),
            eta_s,
            "snapshot progress"
        );
    }
}

/// Reads one chunk and encodes its rows as snapshot reads, shaped by the table's column rules
/// (`columns`) as streamed changes are.
async fn read_chunk(
    context: ReadContext,
    table: TableId,
    target: crate::sink::TargetTable,
    mut columns: Option<TableColumns>,
    range: serde_json::Value,
) -> Result<CopiedChunk, SnapshotError> {
    let source_id: Arc<str> = Arc::from(context.source.id.as_str());
    let mut changes = TableChanges::with_encoder(table.clone(), target, context.encoder.clone());
    changes.copied_rows = true;
    let transaction = Arc::new(Transaction {
        id: "snapshot".into(),
        gtid: None,
        commit_ts_micros: now_micros(),
        log_coordinate: 0,
    });
    let mut next_seq = 0u64;
    let mut failed = None;
    let rows = copy_chunk(
        &context.source,
        &table,
        &range,
        READ_BATCH_ROWS,
        |schema, rows| {
            let shaped = match columns.as_mut().map(|c| c.shape_schema(schema)) {
                None => None,
                Some(Ok(shaped)) => Some(shaped),
                Some(Err(error)) => {
                    failed = Some(SnapshotError::Columns(error));
                    return ControlFlow::Break(());
                }
            };
            changes.declare_shape(shaped.unwrap_or_else(|| schema.clone()));
            for row in rows {
                let event = ChangeEvent {
                    source: source_id.clone(),
                    table: schema.clone(),
                    op: Op::Read,
                    before: None,
                    after: Some(row),
                    position: Position {
                        txn: 0,
                        seq: next_seq as u32,
                    },
                    transaction: transaction.clone(),
                };
                let event = match columns.as_mut().map(|c| c.shape(&event)) {
                    None => std::borrow::Cow::Borrowed(&event),
                    Some(Ok(shaped)) => shaped,
                    Some(Err(error)) => {
                        failed = Some(SnapshotError::Columns(error));
                        return ControlFlow::Break(());
                    }
                };
                if let Err(error) = changes.push(&event, &mut next_seq) {
                    failed = Some(SnapshotError::Encode {
                        table: table.clone(),
                        error,
                    });
                    return ControlFlow::Break(());
                }
            }
            if changes.memory_bytes() as u64 > context.max_bytes
                && let Err(error) = changes.spill(&context.spill_dir)
            {
                failed = Some(SnapshotError::Spill {
                    table: table.clone(),
                    dir: context.spill_dir.clone(),
                    error,
                });
                return ControlFlow::Break(());
            }
            ControlFlow::Continue(())
        },
    )
    .await?;
    if let Some(error) = failed {
        return Err(error);
    }
    Ok(match rows {
        Some(rows) => CopiedChunk {
            changes: Some(changes),
            rows,
        },
        None => {
            tracing::warn!(source = %source_id, table = %table, "table no longer exists at the source: the rest of its copy is skipped; if it was renamed, copy it again under its new name with `tidemark snapshot --table`");
            CopiedChunk {
                changes: None,
                rows: 0,
            }
        }
    })
}

/// Now, in µs since the epoch.
fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}
