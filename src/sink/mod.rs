//! Warehouse loaders: a [`Batch`] of encoded changes plus the source progress it completes,
//! applied in one warehouse transaction, behind the [`Sink`] trait.
//!
//! The pipeline fills batches ([`changes`] encodes each change once, as it arrives, with the
//! sink's own [`RowEncoder`]) and hands them to a sink; the sink creates and evolves target
//! tables, stages the rows, applies the last change per key, and records the source's progress
//! ([`progress`]), all or nothing. Sinks see only `event/` types and the batch; they know
//! nothing about sources. The
//! pipeline knows sinks only through [`Sink`] and [`connect`], the one factory: a new sink is a
//! folder here plus one line in [`connect`].

pub mod changes;
pub mod columns;
pub mod encode;
pub mod last_change;
pub mod null;
pub mod postgres;
pub mod progress;
pub mod redshift;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::config::WarehouseConfig;
use crate::error::ErrorKind;

use crate::event::{ResumePoint, TableId};
pub use changes::{Segment, SpillBuffer, TableChanges};
pub use encode::{EncodeError, RowEncoder};
pub use progress::{ChunkDone, Progress, ProgressRecord, SnapshotProgress, TableVersion};

/// A sink's failure as the pipeline sees it: the sink's own error, and whether waiting can fix
/// it (the pipeline's retry loops decide from the kind alone).
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
pub struct SinkError {
    kind: ErrorKind,
    table: Option<TargetTable>,
    lease_lost: bool,
    #[source]
    error: Box<dyn std::error::Error + Send + Sync>,
}

impl SinkError {
    /// Wraps a sink's error with its kind.
    pub fn new(
        kind: ErrorKind,
        error: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        SinkError {
            kind,
            table: None,
            lease_lost: false,
            error: error.into(),
        }
    }

    /// The same error, as one that `table` alone causes: the batch would apply without it.
    pub fn in_table(mut self, table: TargetTable) -> Self {
        self.table = Some(table);
        self
    }

    /// The batch did not commit because this process no longer holds its source's lease:
    /// another process runs the source now.
    pub fn lease_lost(source_id: &str) -> Self {
        SinkError {
            lease_lost: true,
            ..SinkError::new(ErrorKind::Retry, LeaseLost(source_id.to_owned()))
        }
    }

    /// True when the error is [`SinkError::lease_lost`].
    pub fn is_lease_lost(&self) -> bool {
        self.lease_lost
    }

    /// The table that alone causes the error, if one does.
    pub fn table(&self) -> Option<&TargetTable> {
        self.table.as_ref()
    }

    /// Whether waiting can fix it.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }
}

/// Why a batch was refused: its source's lease is no longer this process's.
#[derive(Debug, thiserror::Error)]
#[error(
    "source {0}: this process no longer holds the source's lease (it expired, and another process may run the source now): the batch was not committed"
)]
pub struct LeaseLost(String);

/// A process's claim to run sources alone (active/standby): every batch it commits renews its
/// source's lease in the same transaction, and commits only if the lease is still its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// Who holds it: unique per process run.
    pub holder: Arc<str>,
    /// How long a claim or renewal lasts.
    pub period: std::time::Duration,
}

/// What a [`Sink`] method returns: boxed, so that sinks can be chosen at run time.
pub type SinkFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, SinkError>> + Send + 'a>>;

/// A warehouse connection that applies one source's batches, each with its progress.
///
/// What a caller relies on, and an implementer must keep:
/// - **All or nothing.** [`Sink::apply`] commits a batch's rows and its [`Progress`] together,
///   or neither: progress is durable only with the data it covers. Schema changes the batch
///   makes to target tables commit with it too, and so do their [`TableVersion`]s.
/// - **In order.** The caller offers one source's batches in source order, one at a time, and
///   never a batch before the one it follows has committed. The exception: batches that load
///   snapshot chunks and do not record progress ([`Batch::records_progress`] false) may load at
///   the same time as one another, on several sinks; their rows never share a key.
/// - **Chunks record themselves.** A batch with a [`Batch::chunk`] records it in its
///   transaction; [`Sink::read_progress`] returns every chunk recorded since the last batch
///   with [`Batch::forget_chunks`], which removes them.
/// - **Idempotent under replay.** After a crash the caller may offer changes again that already
///   committed (it resumes from the committed progress, and a batch whose commit was in flight
///   may come again): applying them again must change nothing, since the target keeps the last
///   change per key (or, for a table without a key, the progress says what is in).
/// - **One record per source.** [`Sink::read_progress`] returns what the last committed batch
///   recorded, whole: a batch's [`Progress`] replaces the one before, it is not merged with it.
/// - **Honest about commits.** After `apply` failed, [`Sink::committed`] says whether that batch
///   committed anyway (the connection broke after COMMIT reached the server), reconnecting first
///   if it must.
/// - **Requests end with the batch that takes them.** A batch whose
///   [`Batch::requests_handled`] is set removes its source's snapshot requests up to that id in
///   its transaction: a request is handled exactly once, crash or not.
/// - **Stale rows go only when asked.** A table whose [`TableChanges::replaces_rows_loaded_before`]
///   is set loses, after its rows apply and in the same transaction, the rows last loaded
///   before that instant of [`Sink::clock_micros`]'s clock.
/// - Errors carry their [`ErrorKind`]; the caller retries, waits for an operator or stops on
///   that alone.
pub trait Sink: Send {
    /// Creates the warehouse's control tables if they are missing.
    fn prepare(&mut self) -> SinkFuture<'_, ()>;

    /// The committed progress record of `source_id`, if it has one.
    fn read_progress<'a>(
        &'a mut self,
        source_id: &'a str,
    ) -> SinkFuture<'a, Option<ProgressRecord>>;

    /// Applies `batch` and its progress in one transaction.
    fn apply<'a>(&'a mut self, batch: &'a mut Batch) -> SinkFuture<'a, ()>;

    /// After a failed [`Sink::apply`]: whether `batch`'s progress is committed, reconnecting
    /// first when the connection is gone.
    fn committed<'a>(&'a mut self, batch: &'a Batch) -> SinkFuture<'a, bool>;

    /// What the load in progress is doing, for reports of slow loads; valid while `apply` runs.
    fn load_step(&self) -> LoadStep;

    /// The format this sink's batches are encoded in: the batcher writes every row with it.
    fn encoder(&self) -> Arc<dyn RowEncoder>;

    /// Records why `source_id` stopped, for `tidemark status`; its next committed batch clears
    /// it. A source without a progress record keeps none.
    fn record_error<'a>(&'a mut self, source_id: &'a str, error: &'a str) -> SinkFuture<'a, ()>;

    /// The warehouse's current time (µs since the epoch), on the clock that stamps loaded
    /// rows: where a table's copy starts, for [`TableChanges::replaces_rows_loaded_before`].
    fn clock_micros(&mut self) -> SinkFuture<'_, i64>;

    /// Whether `table` exists and holds rows: a copy into an empty table has no rows the
    /// source no longer has to delete afterwards.
    fn holds_rows<'a>(&'a mut self, table: &'a TargetTable) -> SinkFuture<'a, bool>;

    /// Records that `source_id`'s `tables` (all of them: `None`) are to be copied again
    /// (`tidemark snapshot`); returns the request's id.
    fn request_snapshot<'a>(
        &'a mut self,
        source_id: &'a str,
        tables: Option<Vec<TableId>>,
    ) -> SinkFuture<'a, i64>;

    /// The snapshot requests of `source_id` not yet handled, oldest first.
    fn snapshot_requests<'a>(
        &'a mut self,
        source_id: &'a str,
    ) -> SinkFuture<'a, Vec<SnapshotRequest>>;

    /// Takes or renews `lease` on each of `source_ids` that is free, expired or already the
    /// holder's; returns those the holder now has. After this, every batch this sink commits
    /// renews its source's lease in its transaction and fails with [`SinkError::lease_lost`]
    /// when the lease is gone.
    fn claim_leases<'a>(
        &'a mut self,
        lease: &'a Lease,
        source_ids: &'a [String],
    ) -> SinkFuture<'a, Vec<String>> {
        let _ = (lease, source_ids);
        Box::pin(async {
            Err(SinkError::new(
                ErrorKind::Operator,
                "this warehouse kind keeps no leases: remove [group] lease (active/standby needs a Postgres warehouse)",
            ))
        })
    }

    /// Gives up `lease` on `source_ids`, so that a standby takes them over at once.
    fn release_leases<'a>(
        &'a mut self,
        lease: &'a Lease,
        source_ids: &'a [String],
    ) -> SinkFuture<'a, ()> {
        let _ = (lease, source_ids);
        Box::pin(async { Ok(()) })
    }
}

/// A request to copy a source's tables again, made by `tidemark snapshot`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotRequest {
    /// Increasing with every request.
    pub id: i64,
    /// The tables to copy; `None` for the whole source from a new start position.
    pub tables: Option<Vec<TableId>>,
}

/// Opens a sink on the configured warehouse, on a connection of its own (for commands that
/// need one sink; a running group shares connections through [`Warehouse`]).
pub async fn connect(warehouse: &WarehouseConfig) -> Result<Box<dyn Sink>, SinkError> {
    match warehouse {
        WarehouseConfig::Postgres(postgres) => Ok(Box::new(
            postgres::PostgresSink::connect(&postgres.url)
                .await?
                .with_soft_delete(postgres.soft_delete),
        )),
        _ => Warehouse::open(warehouse)?.sink().await,
    }
}

/// A group's way into its warehouse: every sink it opens shares one bounded set of
/// connections (Postgres: `[warehouse] max_connections`). The one place that maps a warehouse
/// kind to its sink. Cloning shares the connections.
#[derive(Debug, Clone)]
pub struct Warehouse {
    config: WarehouseConfig,
    pool: Option<postgres::WarehousePool>,
    lease: Option<Lease>,
}

impl Warehouse {
    /// Sets up the shared connections of `config`'s warehouse; none opens before a sink needs
    /// it.
    pub fn open(config: &WarehouseConfig) -> Result<Warehouse, SinkError> {
        let pool = match config {
            WarehouseConfig::Postgres(postgres) => Some(postgres::WarehousePool::new(
                &postgres.url,
                postgres.max_connections,
            )?),
            WarehouseConfig::Redshift(_) | WarehouseConfig::Null => None,
        };
        Ok(Warehouse {
            config: config.clone(),
            pool,
            lease: None,
        })
    }

    /// The same warehouse, whose sinks commit a batch only while `lease` holds its source.
    pub fn with_lease(mut self, lease: Lease) -> Warehouse {
        self.lease = Some(lease);
        self
    }

    /// A sink for one source (or one copy worker) on the shared connections.
    pub async fn sink(&self) -> Result<Box<dyn Sink>, SinkError> {
        match (&self.config, &self.pool) {
            (WarehouseConfig::Postgres(postgres), Some(pool)) => Ok(Box::new(
                postgres::PostgresSink::on_pool(pool.clone())
                    .with_soft_delete(postgres.soft_delete)
                    .with_lease(self.lease.clone()),
            )),
            (WarehouseConfig::Postgres(postgres), None) => Ok(Box::new(
                postgres::PostgresSink::connect(&postgres.url)
                    .await?
                    .with_soft_delete(postgres.soft_delete),
            )),
            (WarehouseConfig::Redshift(redshift), _) => {
                Ok(Box::new(redshift::RedshiftSink::connect(redshift).await?))
            }
            (WarehouseConfig::Null, _) => Ok(Box::new(null::NullSink::process_wide())),
        }
    }

    /// The warehouse's settings.
    pub fn config(&self) -> &WarehouseConfig {
        &self.config
    }

    /// Warehouse connections open now, for warehouses reached through connections (Postgres).
    pub fn open_connections(&self) -> Option<usize> {
        self.pool
            .as_ref()
            .map(postgres::WarehousePool::open_connections)
    }
}

/// What a sink's load in progress is doing and since when, shared with whoever waits for it, so
/// a slow load can be reported with the table it is stuck on (a lock, a long statement).
#[derive(Debug, Clone)]
pub struct LoadStep(Arc<Mutex<(Step, Instant)>>);

/// One step of a load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Not loading.
    Idle,
    /// Creating, evolving or loading one target table.
    Table(TargetTable),
    /// Recording the source's progress.
    Progress,
    /// Committing the transaction.
    Commit,
    /// Running the batch's whole transaction at once (load, apply, progress, commit), as a
    /// warehouse that takes a transaction in one request does (Redshift's Data API).
    Transaction,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::Idle => f.write_str("idle"),
            Step::Table(table) => write!(f, "loading table {table}"),
            Step::Progress => f.write_str("recording the progress"),
            Step::Commit => f.write_str("committing"),
            Step::Transaction => {
                f.write_str("running the batch's transaction (COPY, apply, progress)")
            }
        }
    }
}

impl Default for LoadStep {
    fn default() -> Self {
        LoadStep(Arc::new(Mutex::new((Step::Idle, Instant::now()))))
    }
}

impl LoadStep {
    /// Records that the load now does `step`.
    pub fn set(&self, step: Step) {
        // A poisoned lock only means a panic elsewhere mid-update; the value is still usable.
        let mut guard = self.0.lock().unwrap_or_else(|p| p.into_inner());
        *guard = (step, Instant::now());
    }

    /// The current step and when it began.
    pub fn get(&self) -> (Step, Instant) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// Where one source table lands: a schema and a table name, both already lowercased.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TargetTable {
    /// Warehouse schema (the source's staging schema).
    pub schema: String,
    /// Table name within the schema.
    pub table: String,
}

impl fmt::Display for TargetTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.schema, self.table)
    }
}

/// Everything one warehouse transaction applies for one source.
#[derive(Debug)]
pub struct Batch {
    /// The source the changes come from (keys its progress record).
    pub source_id: Arc<str>,
    /// Table renames to apply before any rows, in source order.
    pub renames: Vec<(TargetTable, TargetTable)>,
    /// Changes per target table, each table once.
    pub tables: Vec<TableChanges>,
    /// The progress this batch completes.
    pub progress: Progress,
    /// The last snapshot request ([`SnapshotRequest::id`]) this batch's progress takes in.
    pub requests_handled: Option<i64>,
    /// The snapshot chunk whose rows this batch loads, recorded done in its transaction.
    pub chunk: Option<ChunkDone>,
    /// False for a chunk's batch that loads beside others: it records only its chunk and leaves
    /// the progress record, which they share, as it is.
    pub records_progress: bool,
    /// Removes the source's chunk records: the snapshot they belong to ended or is replaced.
    pub forget_chunks: bool,
}

impl Batch {
    /// A batch with no rows that records `resume_point` as the source's progress: where a
    /// source starts, set before anything is read.
    pub fn position_only(source_id: Arc<str>, resume_point: ResumePoint) -> Batch {
        Batch {
            source_id,
            renames: Vec::new(),
            tables: Vec::new(),
            progress: Progress::at(resume_point, None),
            requests_handled: None,
            chunk: None,
            records_progress: true,
            forget_chunks: false,
        }
    }

    /// Row changes in the batch (a key-changing update counts once).
    pub fn changes(&self) -> u64 {
        self.tables.iter().map(|t| t.changes).sum()
    }

    /// Encoded bytes in the batch.
    pub fn bytes(&self) -> u64 {
        self.tables.iter().map(TableChanges::bytes).sum()
    }
}
