//! Running a group: one supervised task per source, each reading, batching and loading.
//!
//! Per source: a reader task fills a bounded channel; the batching loop drains it, cuts batches
//! at transaction boundaries and loads one at a time while the next one fills. A full batch
//! while the previous one still loads stops the draining, the channel fills, and the reader
//! waits: memory stays bounded by the limits, whatever the warehouse's speed.
//!
//! State of record is the warehouse checkpoint, so recovery is simple: whatever goes wrong in
//! a source (its server gone, the warehouse gone, a connection cut mid-commit), the source's
//! supervisor waits with backoff and starts that source again from its committed checkpoint.
//! Other sources are not touched.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio::task::JoinSet;
use tracing::{error, info, warn};

use super::batch::{BatchError, Batcher, lag_of};
use super::route::Router;
use crate::check::{CheckStatus, check_source};
use crate::config::{BatchConfig, Config, SnapshotMode, SourceConfig};
use crate::crash::{self, crash_point};
use crate::error::ErrorKind;
use crate::event::{ResumePoint, SourceMessage, TableId};
use crate::observe::seconds;
use crate::retry::Backoff;
use crate::secrets::{Freshness, SecretError};
use crate::sink::{
    Batch, EncodeError, LoadStep, Sink, SinkError, SnapshotProgress, Step, Warehouse,
};
use crate::snapshot::{
    ChunkId, CopiedChunk, Copier, Reason, SetAside, SnapshotError, SnapshotState,
};
use crate::source::copy::included_tables;
use crate::source::{self, Acknowledger, ReadError, Source};

/// Messages (each a reader batch of up to ~1024) the reader may run ahead of the batching loop.
const READ_AHEAD: usize = 16;
/// How often a running source looks for `tidemark snapshot` requests.
const REQUEST_POLL: Duration = Duration::from_secs(5);
/// Streamed batches that may wait in the load order behind a chunk being read.
const MAX_QUEUED: usize = 4;
/// First and longest wait before a failed source starts again.
const RETRY_INITIAL: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(30);
/// Shortest wait before retrying a source that needs an operator (bad setting, lost position);
/// with jitter the wait is up to twice this: within a minute.
const OPERATOR_RETRY: Duration = Duration::from_secs(30);
/// Longest a stop request waits for the last batches to load.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(20);
/// Sources that run their prerequisite checks and first reads at once.
const CONCURRENT_STARTS: usize = 32;
/// How often each source logs its progress.
const PROGRESS_EVERY: Duration = Duration::from_secs(10);

/// How the error a source records begins when the source retries by itself (the connection
/// to its server or the warehouse broke) rather than waiting for an operator.
pub const RETRYING: &str = "retrying: ";

/// Why one source stopped (its supervisor decides whether to start it again).
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// Reading the source failed.
    #[error(transparent)]
    Read(#[from] ReadError),
    /// Loading into the warehouse failed.
    #[error(transparent)]
    Load(#[from] SinkError),
    /// Batching failed (a value the warehouse cannot hold, a name conflict).
    #[error(transparent)]
    Batch(#[from] BatchError),
    /// The reader task ended without saying why (it panicked): start the source again.
    #[error("the source reader stopped unexpectedly")]
    ReaderGone,
    /// The task loading a batch panicked: a bug in tidemark. The batch did not commit.
    #[error(
        "source {source_id}: loading a batch panicked: {message}. This is a bug in tidemark; please report it with this log. Nothing of the batch was committed"
    )]
    LoadPanicked {
        /// The source.
        source_id: String,
        /// The panic's message.
        message: String,
    },
    /// Copying the source's tables failed.
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    /// A secret of the source's `url` could not be fetched.
    #[error("source {source_id}: {error}")]
    Secret {
        /// The source.
        source_id: String,
        /// Which reference and why (never the value).
        error: Box<SecretError>,
    },
    /// `tidemark snapshot` asked for the whole source to be copied again: the source restarts
    /// from the current end of its log (not an error: the supervisor acts on it at once).
    #[error("the whole source is to be copied again")]
    RecopyRequested,
    /// The progress record holds a snapshot state this release cannot read.
    #[error(
        "source {source_id}: the snapshot state in the warehouse's progress record cannot be read (written by another release, or edited); copy the source again with `tidemark snapshot {cli_args}`"
    )]
    SnapshotUnreadable {
        /// The source.
        source_id: String,
        /// `--config F --source ID`.
        cli_args: String,
    },
    /// The source's prerequisites are not met (what `tidemark check` reports as FAIL).
    #[error(
        "source {source_id} is not ready, so nothing is read and no position recorded: {failures}. `tidemark check {cli_args}` shows every prerequisite; the source is checked again within a minute and starts once they are met (the other sources keep running)"
    )]
    NotReady {
        /// The source.
        source_id: String,
        /// The failed checks with their fixes.
        failures: String,
        /// `--config F --source ID`.
        cli_args: String,
    },
}

impl SourceError {
    /// Whether waiting can fix it.
    pub fn kind(&self) -> ErrorKind {
        match self {
            SourceError::Read(e) => e.kind(),
            SourceError::Load(e) => e.kind(),
            SourceError::Batch(BatchError::Route(_) | BatchError::Columns(_)) => {
                ErrorKind::Operator
            }
            SourceError::Batch(BatchError::Spill { .. }) => ErrorKind::Retry,
            SourceError::Batch(_) => ErrorKind::Fatal,
            SourceError::ReaderGone => ErrorKind::Retry,
            SourceError::NotReady { .. } => ErrorKind::Operator,
            SourceError::Snapshot(e) => e.kind(),
            SourceError::Secret { error, .. } => error.kind(),
            SourceError::SnapshotUnreadable { .. } => ErrorKind::Operator,
            SourceError::RecopyRequested => ErrorKind::Retry,
            SourceError::LoadPanicked { .. } => ErrorKind::Fatal,
        }
    }

    /// True when the source stops at a place in its log (an event it cannot replicate, a lost
    /// position or slot) where it will stop again after every retry, even once the cause is
    /// fixed, until it is moved past it.
    fn stuck_in_log(&self) -> bool {
        matches!(self, SourceError::Read(e) if e.stuck_in_log())
    }

    /// True when the source's log no longer holds its position.
    fn position_lost(&self) -> bool {
        matches!(self, SourceError::Read(e) if e.position_lost())
    }
}

/// Keeps `source` of `config`'s group running on `warehouse` until `shutdown` turns true (then
/// it loads what it read and stops), restarting it from its checkpoint after errors. Returns
/// the error that stopped it for good, if one did; the group's other sources never notice.
pub fn supervise_source(
    source: SourceConfig,
    config: &Config,
    warehouse: Warehouse,
    turns: Turns,
    shutdown: watch::Receiver<bool>,
) -> impl Future<Output = Result<(), SourceError>> + Send + 'static {
    let context = SourceContext {
        turns,
        spill_dir: config.group.state_dir.join("spill").join(&source.id),
        source,
        warehouse,
        limits: config.batch,
        config_path: config.path.clone(),
    };
    supervise(context, shutdown)
}

struct SourceContext {
    source: SourceConfig,
    turns: Turns,
    warehouse: Warehouse,
    limits: BatchConfig,
    spill_dir: PathBuf,
    /// The config file, for the commands messages tell the operator to run.
    config_path: PathBuf,
}

impl SourceContext {
    /// The `tidemark` arguments that name this source's config file and id.
    fn cli_args(&self) -> String {
        format!(
            "--config {} --source {}",
            self.config_path.display(),
            self.source.id
        )
    }
}

/// Keeps one source running: restarts it from its checkpoint after errors, with backoff.
/// Every start fetches the URL's secrets again, so a rotated password is picked up.
async fn supervise(
    mut context: SourceContext,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), SourceError> {
    let id = context.source.id.clone();
    let written = context.source.url.clone();
    let mut interrupted = Backoff::new(RETRY_INITIAL, RETRY_MAX);
    let mut needs_operator = Backoff::new(OPERATOR_RETRY, OPERATOR_RETRY);
    let mut recopy = false;
    // The first start may use values cached for the group; a restart after an error re-reads
    // them (the error may be a rotated password).
    let mut freshness = Freshness::Cached;
    loop {
        let resolved = tokio::select! {
            resolved = written.resolve(freshness) => resolved,
            _ = shutdown.wait_for(|stop| *stop) => return Ok(()),
        };
        freshness = Freshness::Recheck;
        let error = match resolved {
            Ok(url) => {
                context.source.url = url;
                let run = run_source(&context, shutdown.clone(), &mut interrupted, recopy);
                match run.await {
                    Ok(()) => return Ok(()),
                    Err(error) => error,
                }
            }
            Err(error) => SourceError::Secret {
                source_id: id.clone(),
                error: Box::new(error),
            },
        };
        if matches!(&error, SourceError::Load(e) if e.is_lease_lost()) {
            warn!(source = %id, "the source's lease expired and may be another process's now: stopping the source here (it starts again if the lease comes back)");
            return Ok(());
        }
        if matches!(error, SourceError::RecopyRequested) {
            info!(source = %id, "`tidemark snapshot` asked to copy the whole source again: restarting it from the current end of its log");
            recopy = true;
            continue;
        }
        // A lost position shows when the log is opened or at its first read; `when_needed`
        // copies the source again from the current end, once.
        if error.position_lost() && context.source.snapshot == SnapshotMode::WhenNeeded && !recopy {
            warn!(source = %id, error = %error, "the source's log position is lost: copying its tables again (snapshot = \"when_needed\"), from the current end of its log");
            recopy = true;
            continue;
        }
        recopy = false;
        // Fixing the server does not remove what is already in its log: say how to move past it.
        let get_past = error.stuck_in_log().then(|| {
            format!(
                "once the cause is fixed, if the source still stops here, copy it again from the current end of its log with `tidemark snapshot {}` (restart tidemark afterwards if the source stopped for good)",
                context.cli_args()
            )
        });
        record_failure(&context, &error).await;
        let wait = match error.kind() {
            ErrorKind::Fatal => {
                error!(source = %id, error = %error, get_past, "source stopped; fix the cause, then send tidemark SIGHUP (systemctl reload) or restart it (other sources keep running)");
                return Err(error);
            }
            ErrorKind::Operator => {
                let wait = needs_operator.next_wait();
                error!(source = %id, error = %error, get_past, retry_in_s = seconds(wait), "source needs attention; retrying");
                wait
            }
            ErrorKind::Retry => {
                let wait = interrupted.next_wait();
                warn!(source = %id, error = %error, retry_in_s = seconds(wait), "source interrupted; resuming from its checkpoint");
                wait
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.wait_for(|stop| *stop) => return Ok(()),
        }
    }
}

/// Records in the warehouse why the source stopped, for `tidemark status` (best effort: the log
/// says it too, and a warehouse that is down cannot take it).
async fn record_failure(context: &SourceContext, error: &SourceError) {
    // A source that retries by itself is marked so, for `tidemark status` to tell it from one
    // that waits for an operator.
    let text = match error.kind() {
        ErrorKind::Retry => format!("{RETRYING}{error}"),
        ErrorKind::Operator | ErrorKind::Fatal => error.to_string(),
    };
    let record = async {
        let mut sink = context.warehouse.sink().await?;
        sink.record_error(&context.source.id, &text).await
    };
    match tokio::time::timeout(Duration::from_secs(10), record).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            warn!(source = %context.source.id, error = %e, "could not record the failure in the warehouse")
        }
        Err(_) => {
            warn!(source = %context.source.id, "could not record the failure in the warehouse in time")
        }
    }
}

/// One run of a source from its checkpoint; returns `Ok` only after a requested shutdown. Each
/// committed batch is progress: `backoff` starts over.
async fn run_source(
    context: &SourceContext,
    mut shutdown: watch::Receiver<bool>,
    backoff: &mut Backoff,
    recopy: bool,
) -> Result<(), SourceError> {
    let source = &context.source;
    let source_id: Arc<str> = Arc::from(source.id.as_str());
    // The same checks as `tidemark check`, before anything is read or recorded: a source that
    // cannot be replicated must not record a position it would then be stuck behind.
    // A thousand sources starting at once would open a thousand check connections at once.
    let Some(starting) = take_turn(&context.turns.starting, &mut shutdown).await else {
        return Ok(());
    };
    let report = tokio::select! {
        report = check_source(source) => report,
        _ = shutdown.wait_for(|stop| *stop) => return Ok(()),
    };
    if !report.unmet_prerequisites().is_empty() {
        return Err(SourceError::NotReady {
            source_id: source.id.clone(),
            failures: report.failures_text(),
            cli_args: context.cli_args(),
        });
    }
    for item in report.with_status(CheckStatus::Warn) {
        warn!(source = %source.id, check = %item.name, detail = %item.detail, fix = item.fix.as_deref(), "prerequisite warning (see `tidemark check`)");
    }
    let mut sink = context.warehouse.sink().await?;
    let start = tokio::select! {
        start = start_source(context, &mut sink, recopy) => start?,
        _ = shutdown.wait_for(|stop| *stop) => return Ok(()),
    };
    drop(starting);
    let Start {
        opened,
        resume_point,
        snapshot,
    } = start;
    let set_aside = snapshot
        .as_ref()
        .map(|s| s.set_aside.clone())
        .unwrap_or_default();
    // A copy whose last chunk committed just before a stop: record that it is over.
    let copy_ended = snapshot
        .as_ref()
        .is_some_and(|s| !s.tables.is_empty() && !s.is_copying());
    let copier = match snapshot.filter(SnapshotState::is_copying) {
        Some(state) => {
            if context.turns.copying.available_permits() == 0 {
                info!(source = %source.id, "waiting for a turn to copy the source's tables ([group] concurrent_snapshots sources copy at once)");
            }
            let Some(turn) = take_turn(&context.turns.copying, &mut shutdown).await else {
                return Ok(());
            };
            let copier = Copier::new(
                source,
                state,
                context.warehouse.sink().await?,
                sink.encoder(),
                context.spill_dir.clone(),
                context.limits.max_bytes.0,
            );
            Some(copier.with_turn(turn))
        }
        None => None,
    };
    let (stream, confirm) = match opened {
        Some(opened) => {
            let (tx, rx) = mpsc::channel(READ_AHEAD);
            let read_task = tokio::spawn(read_source(opened.source, tx));
            (
                Some((rx, AbortOnDrop(read_task))),
                Some(opened.acknowledger),
            )
        }
        None => {
            if copier.is_none() {
                info!(source = %source.id, "snapshot = \"initial_only\": the tables are copied and no change log is read; waiting for `tidemark snapshot` requests");
            }
            (None, None)
        }
    };
    let mut flow = Flow {
        source_id: source_id.clone(),
        batcher: Batcher::new(
            source_id.clone(),
            Router::new(source),
            context.limits,
            context.spill_dir.clone(),
            sink.encoder(),
        ),
        loader: Loader::new(
            sink,
            context.warehouse.clone(),
            source_id.clone(),
            context.limits.slow_load_warning,
        ),
        jobs: VecDeque::new(),
        copied: HashMap::new(),
        resume_point,
        copier,
        confirm,
        source: source.clone(),
        warehouse: context.warehouse.clone(),
        spill_dir: context.spill_dir.clone(),
        max_bytes: context.limits.max_bytes.0,
        requests_seen: 0,
        requests_handled: None,
        set_aside: Vec::new(),
        config_path: context.config_path.clone(),
    };
    for table in set_aside {
        flow.batcher.set_aside(&table.id());
        flow.set_aside.push(table);
    }
    if copy_ended {
        flow.jobs.push_back(Job::SnapshotDone);
    }
    flow.run(stream, &mut shutdown, backoff).await
}

/// What the sources of a group take turns at, so that a thousand of them starting together do
/// not flood their servers and the warehouse with connections: starting (the prerequisite
/// checks and the first reads) and copying tables (`[group] concurrent_snapshots`).
#[derive(Debug, Clone)]
pub struct Turns {
    starting: Arc<Semaphore>,
    copying: Arc<Semaphore>,
}

impl Turns {
    /// Turns for a group in which `concurrent_snapshots` sources may copy at once.
    pub fn new(concurrent_snapshots: usize) -> Turns {
        Turns {
            starting: Arc::new(Semaphore::new(CONCURRENT_STARTS)),
            copying: Arc::new(Semaphore::new(concurrent_snapshots.max(1))),
        }
    }
}

/// Waits for a turn of `turns`, or for `shutdown` (then `None`).
async fn take_turn(
    turns: &Arc<Semaphore>,
    shutdown: &mut watch::Receiver<bool>,
) -> Option<OwnedSemaphorePermit> {
    tokio::select! {
        turn = turns.clone().acquire_owned() => turn.ok(),
        _ = shutdown.wait_for(|stop| *stop) => None,
    }
}

/// Where a source starts: its open log (none when it only copies), the position committed so
/// far, and the snapshot to run, if any.
struct Start {
    opened: Option<source::Opened>,
    resume_point: ResumePoint,
    snapshot: Option<SnapshotState>,
}

/// Opens the source where its progress says, deciding from its `snapshot` mode what to copy: on
/// a first start its tables (unless `never`), after a lost log position its tables again
/// (`when_needed`, or `recopy`: the position was found lost at the first read; any other mode
/// stops with the lost position named). A new start position and snapshot are committed before
/// anything is read.
async fn start_source(
    context: &SourceContext,
    sink: &mut Box<dyn Sink>,
    recopy: bool,
) -> Result<Start, SourceError> {
    let source = &context.source;
    let source_id: Arc<str> = Arc::from(source.id.as_str());
    let mode = source.snapshot;
    let record = sink.read_progress(&source.id).await?;
    let committed = record.as_ref().map(|r| r.progress.resume_point.clone());
    // A request to copy the whole source again takes in every request before it.
    let requests = sink.snapshot_requests(&source.id).await?;
    let whole_request = requests
        .iter()
        .filter(|r| r.tables.is_none())
        .map(|r| r.id)
        .max();
    let recopy = recopy || whole_request.is_some();
    let stored = record
        .as_ref()
        .and_then(|r| Some((r.progress.snapshot.as_ref()?, &r.chunks_done)));
    let mut snapshot = match stored {
        None => None,
        Some((stored, chunks_done)) => Some(
            SnapshotState::from_progress(stored, chunks_done).ok_or_else(|| {
                SourceError::SnapshotUnreadable {
                    source_id: source.id.clone(),
                    cli_args: context.cli_args(),
                }
            })?,
        ),
    };
    let all_tables = || async { included_tables(source).await.map_err(SnapshotError::from) };
    let (opened, resume_point, new_start) = if !mode.streams() {
        match committed {
            Some(point) if !recopy => (None, point, false),
            _ => {
                let end = source::log_end(source).await?;
                let reason = match whole_request {
                    Some(_) => Reason::Requested,
                    None => Reason::Initial,
                };
                snapshot = Some(SnapshotState::new(
                    reason,
                    end.to_string(),
                    all_tables().await?,
                ));
                (None, end, true)
            }
        }
    } else {
        // `None`: the position is lost and the source is copied again from the current end.
        let opened = if recopy && committed.is_some() {
            None
        } else {
            match source::open(source, committed.as_ref()).await {
                Ok(opened) => Some(opened),
                Err(error) if error.position_lost() && mode == SnapshotMode::WhenNeeded => {
                    warn!(source = %source.id, error = %error, "the source's log position is lost: copying its tables again (snapshot = \"when_needed\"), from the current end of its log");
                    None
                }
                Err(error) => return Err(error.into()),
            }
        };
        match opened {
            Some(opened) => match opened.first_checkpoint.clone() {
                Some(first) => {
                    if mode.copies_at_first_start() {
                        snapshot = Some(SnapshotState::new(
                            Reason::Initial,
                            first.to_string(),
                            all_tables().await?,
                        ));
                    }
                    (Some(opened), first, true)
                }
                None => {
                    let at = opened.source.resume_point();
                    (Some(opened), at, false)
                }
            },
            None => {
                let end = source::restart_at_end(source).await?;
                let opened = source::open(source, Some(&end)).await?;
                let reason = match whole_request {
                    Some(_) => Reason::Requested,
                    None => Reason::LostPosition,
                };
                snapshot = Some(SnapshotState::new(
                    reason,
                    end.to_string(),
                    all_tables().await?,
                ));
                (Some(opened), end, true)
            }
        }
    };
    if new_start {
        // Record where reading starts (and what to copy) before reading on: a crash before the
        // first batch must resume here, not at a later end of the log.
        let mut first = Batch::position_only(source_id, resume_point.clone());
        first.progress.snapshot = snapshot.as_ref().map(SnapshotState::to_progress);
        first.requests_handled = whole_request;
        // Chunks of an earlier snapshot, abandoned, are not this one's.
        first.forget_chunks = true;
        sink.apply(&mut first).await?;
        match &snapshot {
            Some(state) if opened.is_none() => {
                info!(source = %source.id, position = %resume_point, tables = state.tables.len(), "copying the source's tables (snapshot = \"initial_only\": no change log is read)")
            }
            Some(state) => {
                info!(source = %source.id, position = %resume_point, tables = state.tables.len(), "copying the source's tables, streaming its changes from this position")
            }
            None => {
                info!(source = %source.id, position = %resume_point, "first start: replicating changes from the current end of the log")
            }
        }
    } else if let Some(state) = &snapshot {
        let totals = state.totals();
        info!(source = %source.id, position = %resume_point, tables_done = totals.tables_done, tables = totals.tables, chunks_done = totals.chunks_done, "resuming the snapshot from its checkpoint");
    } else {
        info!(source = %source.id, position = %resume_point, "resuming from the checkpoint");
    }
    Ok(Start {
        opened,
        resume_point,
        snapshot,
    })
}

/// One load the source waits for, in load order.
enum Job {
    /// Streamed changes.
    Stream(Box<Batch>),
    /// A snapshot chunk, loaded once read.
    Chunk(ChunkId),
    /// The snapshot finished: record that it did.
    SnapshotDone,
}

type StreamReceiver = mpsc::Receiver<Result<Vec<SourceMessage>, ReadError>>;

/// A running source: its batcher, loader, and snapshot copier, and the load order between them.
///
/// Order rule: a chunk's rows must load after every change received before its read began and
/// before every change received after it (`snapshot` module docs). So a chunk's read starts only
/// between transactions, right after the batcher's whole transactions are queued, and takes its
/// place in the queue right behind them; the loader takes the queue in order. Consecutive
/// chunks commute (their rows never share a key), so those that may ([`Copier::loads_alone`])
/// load side by side; anything else loads alone, after everything before it committed.
struct Flow {
    source_id: Arc<str>,
    batcher: Batcher,
    loader: Loader,
    jobs: VecDeque<Job>,
    copied: HashMap<ChunkId, CopiedChunk>,
    /// The last committed position.
    resume_point: ResumePoint,
    copier: Option<Copier>,
    confirm: Option<Acknowledger>,
    source: SourceConfig,
    warehouse: Warehouse,
    spill_dir: PathBuf,
    max_bytes: u64,
    /// The last snapshot request taken in (later polls skip it and those before).
    requests_seen: i64,
    /// The last request taken in, to be removed by the next batch that loads.
    requests_handled: Option<i64>,
    /// Tables whose changes are not applied.
    set_aside: Vec<SetAside>,
    /// The config file, for the commands messages name.
    config_path: PathBuf,
}

impl Flow {
    async fn run(
        &mut self,
        mut stream: Option<(StreamReceiver, AbortOnDrop)>,
        shutdown: &mut watch::Receiver<bool>,
        backoff: &mut Backoff,
    ) -> Result<(), SourceError> {
        let mut cut = Vec::new();
        let mut requests = tokio::time::interval(REQUEST_POLL);
        let mut look_for_requests = false;
        loop {
            self.start_chunks().await?;
            let deadline = self.batcher.deadline();
            let queued = self
                .jobs
                .iter()
                .filter(|j| matches!(j, Job::Stream(_)))
                .count();
            let may_read = stream.is_some() && !self.batcher.is_full() && queued < MAX_QUEUED;
            let reading_chunks = self.copier.as_ref().is_some_and(Copier::is_reading);
            tokio::select! {
                biased;
                _ = shutdown.wait_for(|stop| *stop) => break,
                loaded = self.loader.wait(), if self.loader.is_busy() => match loaded {
                    Ok(loaded) => self.committed(loaded, backoff),
                    Err(SourceError::Load(error)) if error.table().is_some() => {
                        self.load_failed_in_table(error).map_err(SourceError::Load)?;
                    }
                    Err(error) => return Err(error),
                },
                read = next_chunk_read(&mut self.copier), if reading_chunks => match read {
                    Ok((id, chunk)) => {
                        if self.copier.as_ref().is_some_and(|c| c.copies(id)) {
                            self.copied.insert(id, chunk);
                        }
                    }
                    Err(SnapshotError::Encode { table, error }) => {
                        let cause = error.to_string();
                        self.put_aside(table, cause);
                    }
                    Err(SnapshotError::Columns(error)) => {
                        self.put_aside(error.table().clone(), error.to_string());
                    }
                    Err(error) => return Err(error.into()),
                },
                received = receive(&mut stream), if may_read => match received {
                    Some(Ok(messages)) => {
                        for message in messages {
                            match self.batcher.push(message, &mut cut) {
                                Ok(()) => {}
                                Err(BatchError::Encode(error @ EncodeError::Value { .. })) => {
                                    let EncodeError::Value { table, .. } = &error else {
                                        continue;
                                    };
                                    self.put_aside(table.clone(), error.to_string());
                                }
                                Err(BatchError::Columns(error)) => {
                                    self.put_aside(error.table().clone(), error.to_string());
                                }
                                Err(error) => return Err(error.into()),
                            }
                        }
                        self.jobs
                            .extend(cut.drain(..).map(|batch| Job::Stream(Box::new(batch))));
                    }
                    Some(Err(e)) => return Err(e.into()),
                    None => return Err(SourceError::ReaderGone),
                },
                _ = sleep_until(deadline), if deadline.is_some() && !self.loader.is_busy() => {}
                _ = requests.tick() => look_for_requests = true,
            }
            if look_for_requests && self.loader.idle_sink().is_some() {
                look_for_requests = false;
                self.take_requests().await?;
            }
            self.start_loads(Instant::now());
        }
        self.drain(backoff).await
    }

    /// Starts as many chunk reads as the copier allows, each queued behind the whole
    /// transactions received so far (only between transactions: see [`Flow`]).
    async fn start_chunks(&mut self) -> Result<(), SourceError> {
        let Some(copier) = self.copier.as_mut() else {
            return Ok(());
        };
        while copier.can_start() && self.batcher.between_transactions() {
            if let Some(batch) = self.batcher.take() {
                self.jobs.push_back(Job::Stream(Box::new(batch)));
            }
            match copier.start_next().await? {
                Some(id) => self.jobs.push_back(Job::Chunk(id)),
                None => break,
            }
        }
        // A snapshot with nothing to load (no tables, or only tables gone) ends here.
        if copier.is_complete() && !copier.is_reading() {
            info!(source = %self.source_id, "snapshot finished: every table is copied");
            self.copier = None;
            self.jobs.push_back(Job::SnapshotDone);
        }
        Ok(())
    }

    /// Sets `table` aside: its changes are no longer applied (from the last committed position
    /// on), the source's other tables stream on, and the progress record keeps it so, until
    /// `tidemark snapshot --table` copies it again.
    fn put_aside(&mut self, table: TableId, cause: String) {
        if self.set_aside.iter().any(|t| t.id() == table) {
            return;
        }
        error!(
            source = %self.source_id,
            table = %table,
            position = %self.resume_point,
            cause = %cause,
            "table set aside: its changes after this position are not applied, the source's other tables stream on; once the cause is fixed, bring it back with `tidemark snapshot --config {} --source {} --table {table}`",
            self.config_path.display(),
            self.source_id,
        );
        self.batcher.set_aside(&table);
        if let Some(t) = self.copier.as_mut().and_then(|c| c.forget(&table)) {
            // Its chunks waiting in the load order would wait there forever.
            self.jobs
                .retain(|job| !matches!(job, Job::Chunk((i, _)) if *i == t));
            self.copied.retain(|&(i, _), _| i != t);
        }
        for job in &mut self.jobs {
            if let Job::Stream(batch) = job {
                batch.tables.retain(|t| t.source_table != table);
            }
        }
        self.set_aside.push(SetAside {
            namespace: table.namespace.to_string(),
            name: table.name.to_string(),
            position: self.resume_point.to_string(),
            cause,
        });
    }

    /// A batch failed on one table alone: that table is set aside and the rest of the batch
    /// loads again without it (a chunk's batch is dropped: its table is no longer copied). The
    /// error comes back when there is no batch or table to set aside.
    fn load_failed_in_table(&mut self, error: SinkError) -> Result<(), SinkError> {
        let failed = self.loader.take_failed();
        let aside = failed.and_then(|(batch, chunk)| {
            let target = error.table()?;
            let table = batch
                .tables
                .iter()
                .find(|t| t.target == *target)
                .map(|t| t.source_table.clone())?;
            Some((batch, table, chunk))
        });
        // Without the batch or its table, nothing can be set aside: the source stops on the
        // error and restarts from its progress record, as for any other failed load.
        let Some((mut batch, table, chunk)) = aside else {
            return Err(error);
        };
        self.put_aside(table.clone(), error.to_string());
        if chunk.is_none() {
            batch.tables.retain(|t| t.source_table != table);
            self.jobs.push_front(Job::Stream(Box::new(batch)));
        }
        Ok(())
    }

    /// What the next batch records besides its position: the copy in progress and the tables
    /// set aside.
    fn stamp(&self) -> Option<SnapshotProgress> {
        match &self.copier {
            Some(copier) => Some(copier.progress(&self.set_aside)),
            None if !self.set_aside.is_empty() => {
                Some(SnapshotState::set_aside_only(self.set_aside.clone()).to_progress())
            }
            None => None,
        }
    }

    /// Takes in the snapshot requests `tidemark snapshot` recorded since the last look: tables
    /// join the running copy (or start one); a whole-source request restarts the source.
    async fn take_requests(&mut self) -> Result<(), SourceError> {
        let Some(sink) = self.loader.idle_sink() else {
            return Ok(());
        };
        let requests = sink.snapshot_requests(&self.source.id).await?;
        let encoder = sink.encoder();
        let mut tables = Vec::new();
        let seen = self.requests_seen;
        for request in requests.into_iter().filter(|r| r.id > seen) {
            self.requests_seen = request.id;
            match request.tables {
                None => return Err(SourceError::RecopyRequested),
                Some(asked) => tables.extend(asked),
            }
        }
        if self.requests_seen == seen {
            return Ok(());
        }
        self.requests_handled = Some(self.requests_seen);
        for table in &tables {
            if self.set_aside.iter().any(|t| t.id() == *table) {
                info!(source = %self.source.id, table = %table, "table brought back: its changes apply again, and it is copied anew");
                self.set_aside.retain(|t| t.id() != *table);
                self.batcher.bring_back(table);
            }
        }
        tables.retain(|table| {
            let included = self.source.includes_table(&table.namespace, &table.name);
            if !included {
                warn!(source = %self.source.id, table = %table, "`tidemark snapshot` asked for a table the source's include/exclude leave out: not copied");
            }
            included
        });
        if tables.is_empty() {
            return Ok(());
        }
        info!(source = %self.source.id, tables = %tables.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "), "copying tables again, as `tidemark snapshot` asked, while the source streams on");
        match self.copier.as_mut() {
            Some(copier) => copier.add_tables(tables),
            None => {
                // The snapshot-done record of an earlier copy may still wait: it would clear
                // the new state.
                self.jobs.retain(|job| !matches!(job, Job::SnapshotDone));
                let state =
                    SnapshotState::new(Reason::Requested, self.resume_point.to_string(), tables);
                self.copier = Some(Copier::new(
                    &self.source,
                    state,
                    self.warehouse.sink().await?,
                    encoder,
                    self.spill_dir.clone(),
                    self.max_bytes,
                ));
            }
        }
        Ok(())
    }

    /// Starts the next loads in order, as far as they are ready and may start now.
    fn start_loads(&mut self, now: Instant) {
        while let Some(load) = self.next_load(now) {
            let alone = load.alone;
            self.loader.start(load);
            if alone {
                break;
            }
        }
    }

    /// The next load in order, if it is ready and may start now: one that loads alone once
    /// nothing else loads, a chunk that may load beside others while the loader has room.
    fn next_load(&mut self, now: Instant) -> Option<Load> {
        if self.loader.has_alone() {
            return None;
        }
        let may_load_alone = !self.loader.is_busy();
        let mut batch = match self.jobs.front() {
            None => {
                // Nothing queued: the batcher's batch, once due.
                if !may_load_alone || !self.batcher.is_due(now) {
                    return None;
                }
                self.batcher.take()?
            }
            Some(Job::Stream(_)) if may_load_alone => match self.jobs.pop_front() {
                Some(Job::Stream(batch)) => *batch,
                _ => return None,
            },
            Some(Job::SnapshotDone) if may_load_alone => {
                self.jobs.pop_front();
                let mut done =
                    Batch::position_only(self.source_id.clone(), self.resume_point.clone());
                done.forget_chunks = true;
                done
            }
            Some(Job::Stream(_) | Job::SnapshotDone) => return None,
            Some(Job::Chunk(id)) => {
                let id = *id;
                let copier = self.copier.as_ref()?;
                if !self.copied.contains_key(&id) {
                    return None;
                }
                let alone = copier.loads_alone(id);
                let may_start = match alone {
                    true => may_load_alone,
                    false => self.loader.loading() < self.source.snapshot_parallelism.max(1),
                };
                if !may_start {
                    return None;
                }
                let chunk = self.copied.remove(&id)?;
                self.jobs.pop_front();
                let mut batch = copier.chunk_batch(
                    id,
                    chunk,
                    self.source_id.clone(),
                    self.resume_point.clone(),
                    &self.set_aside,
                );
                if alone {
                    batch.requests_handled = self.requests_handled.take();
                }
                return Some(Load {
                    batch,
                    chunk: Some(id),
                    alone,
                });
            }
        };
        batch.progress.snapshot = self.stamp();
        if batch.requests_handled.is_none() {
            batch.requests_handled = self.requests_handled.take();
        }
        Some(Load {
            batch,
            chunk: None,
            alone: true,
        })
    }

    /// A batch committed: passes its position on, and marks its chunk done.
    fn committed(&mut self, loaded: Option<Loaded>, backoff: &mut Backoff) {
        let Some(loaded) = loaded else {
            return;
        };
        crash_point(crash::AFTER_COMMIT_BEFORE_ACK);
        backoff.reset();
        if let Some(confirm) = &self.confirm {
            confirm.acknowledge(loaded.resume_point.clone());
        }
        self.resume_point = loaded.resume_point;
        if let Some(id) = loaded.chunk
            && let Some(copier) = self.copier.as_mut()
        {
            copier.loaded(id, loaded.changes);
            if copier.is_complete() {
                info!(source = %self.source_id, "snapshot finished: every table is copied");
                self.copier = None;
                self.jobs.push_front(Job::SnapshotDone);
            }
        }
    }

    /// Shutdown: finish the load in flight, then load every whole transaction received so far
    /// (and every chunk read before them), within a grace period: a warehouse that stays down
    /// must not hold the process hostage. Whatever is not committed is read again at the next
    /// start.
    async fn drain(&mut self, backoff: &mut Backoff) -> Result<(), SourceError> {
        let drain = async {
            while self.loader.is_busy() {
                let loaded = self.loader.wait().await?;
                self.committed(loaded, backoff);
            }
            self.batcher.abandon_open_transaction()?;
            if let Some(batch) = self.batcher.take() {
                self.jobs.push_back(Job::Stream(Box::new(batch)));
            }
            loop {
                self.start_loads(Instant::now());
                if !self.loader.is_busy() {
                    // Nothing left, or a chunk not read yet: what follows it must wait for it.
                    break;
                }
                let loaded = self.loader.wait().await?;
                self.committed(loaded, backoff);
            }
            Ok::<(), SourceError>(())
        };
        match tokio::time::timeout(SHUTDOWN_GRACE, drain).await {
            Ok(result) => result?,
            Err(_) => {
                self.loader.abort();
                warn!(source = %self.source_id, grace_s = seconds(SHUTDOWN_GRACE), "stopping without loading the last batch (the warehouse did not take it in time); it is read again at the next start");
                return Ok(());
            }
        }
        info!(source = %self.source_id, "source stopped cleanly");
        Ok(())
    }
}

/// The next messages of the stream (pending forever when there is none).
async fn receive(
    stream: &mut Option<(StreamReceiver, AbortOnDrop)>,
) -> Option<Result<Vec<SourceMessage>, ReadError>> {
    match stream {
        Some((rx, _)) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// The next chunk read to finish (pending forever without a copier).
async fn next_chunk_read(
    copier: &mut Option<Copier>,
) -> Result<(ChunkId, CopiedChunk), SnapshotError> {
    match copier {
        Some(copier) => copier.next_read().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    if let Some(deadline) = deadline {
        tokio::time::sleep_until(deadline.into()).await;
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A batch to load, and where it stands in the load order.
struct Load {
    batch: Batch,
    /// The snapshot chunk it loads.
    chunk: Option<ChunkId>,
    /// Loads with nothing else in flight (see [`Flow`]).
    alone: bool,
}

/// What a load task gives back: its sink (none when it could not connect one), the batch, and
/// how long the load took or why it failed.
struct LoadOutcome {
    sink: Option<Box<dyn Sink>>,
    batch: Batch,
    chunk: Option<ChunkId>,
    result: Result<Duration, SinkError>,
}

/// Loads batches in the background, each on a warehouse connection of its own, retrying
/// connection failures in place: one at a time, except snapshot chunks that load side by side
/// (the caller decides which may, see [`Flow`]). Connections beyond the first open when first
/// needed and stay open for the next loads.
struct Loader {
    source_id: Arc<str>,
    warehouse: Warehouse,
    idle: Vec<Box<dyn Sink>>,
    loading: JoinSet<LoadOutcome>,
    /// The load in flight loads alone.
    alone: bool,
    slow_after: Duration,
    loaded_changes: u64,
    loaded_batches: u64,
    /// None until the first batch, which is reported at once: the operator sees it flow.
    last_report: Option<Instant>,
    /// The batch whose load failed last (and its chunk), for the caller to load again without
    /// what failed.
    failed: Option<(Batch, Option<ChunkId>)>,
}

impl Loader {
    fn new(
        sink: Box<dyn Sink>,
        warehouse: Warehouse,
        source_id: Arc<str>,
        slow_after: Duration,
    ) -> Loader {
        Loader {
            source_id,
            warehouse,
            idle: vec![sink],
            loading: JoinSet::new(),
            alone: false,
            slow_after,
            loaded_changes: 0,
            loaded_batches: 0,
            last_report: None,
            failed: None,
        }
    }

    /// The batch whose load failed last and its chunk, if not taken yet.
    fn take_failed(&mut self) -> Option<(Batch, Option<ChunkId>)> {
        self.failed.take()
    }

    fn is_busy(&self) -> bool {
        !self.loading.is_empty()
    }

    /// Loads in flight.
    fn loading(&self) -> usize {
        self.loading.len()
    }

    /// True while a load that must be alone is in flight.
    fn has_alone(&self) -> bool {
        self.alone && self.is_busy()
    }

    /// A sink no batch loads on, if one is open.
    fn idle_sink(&mut self) -> Option<&mut Box<dyn Sink>> {
        self.idle.last_mut()
    }

    fn start(&mut self, load: Load) {
        let sink = self.idle.pop();
        let warehouse = self.warehouse.clone();
        let source_id = self.source_id.clone();
        let slow_after = self.slow_after;
        self.alone = load.alone;
        let Load { batch, chunk, .. } = load;
        self.loading.spawn(async move {
            let sink = match sink {
                Some(sink) => sink,
                None => match warehouse.sink().await {
                    Ok(sink) => sink,
                    Err(error) => {
                        return LoadOutcome {
                            sink: None,
                            batch,
                            chunk,
                            result: Err(error),
                        };
                    }
                },
            };
            let (sink, batch, result) = load_with_retry(sink, batch, source_id, slow_after).await;
            LoadOutcome {
                sink: Some(sink),
                batch,
                chunk,
                result,
            }
        });
    }

    /// Gives up the batches in flight (their transactions roll back with their connections).
    fn abort(&mut self) {
        self.loading.abort_all();
    }

    /// Waits for the next load in flight to end and returns what it committed; errors are the
    /// ones retrying did not fix.
    async fn wait(&mut self) -> Result<Option<Loaded>, SourceError> {
        let Some(joined) = self.loading.join_next().await else {
            return Ok(None);
        };
        let LoadOutcome {
            sink,
            batch,
            chunk,
            result,
        } = match joined {
            Ok(done) => done,
            Err(e) => {
                return Err(SourceError::LoadPanicked {
                    source_id: self.source_id.to_string(),
                    message: panic_message(e),
                });
            }
        };
        self.idle.extend(sink);
        let took = match result {
            Ok(took) => took,
            Err(error) => {
                self.failed = Some((batch, chunk));
                return Err(error.into());
            }
        };
        self.loaded_changes += batch.changes();
        self.loaded_batches += 1;
        tracing::debug!(source = %self.source_id, changes = batch.changes(), tables = batch.tables.len(), took_s = seconds(took), position = %batch.progress.resume_point, beside = self.loading.len(), "batch loaded");
        if self
            .last_report
            .is_none_or(|at| at.elapsed() >= PROGRESS_EVERY)
        {
            let lag = batch.progress.source_commit_ts_micros.map(lag_of);
            info!(
                source = %self.source_id,
                changes = self.loaded_changes,
                batches = self.loaded_batches,
                position = %batch.progress.resume_point,
                lag_s = lag.map(seconds),
                "loaded"
            );
            self.loaded_changes = 0;
            self.loaded_batches = 0;
            self.last_report = Some(Instant::now());
        }
        Ok(Some(Loaded {
            changes: batch.changes(),
            resume_point: batch.progress.resume_point,
            chunk,
        }))
    }
}

/// What a committed batch brought.
struct Loaded {
    /// The position it committed.
    resume_point: ResumePoint,
    /// Its row changes.
    changes: u64,
    /// The snapshot chunk it loaded.
    chunk: Option<ChunkId>,
}

/// What a task that ended abnormally says: its panic message, or that it was cancelled.
fn panic_message(error: tokio::task::JoinError) -> String {
    match error.try_into_panic() {
        Ok(payload) => payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "(no message)".to_owned()),
        Err(error) => error.to_string(),
    }
}

/// Applies `batch`, riding out connection failures: after each, reconnect and check whether
/// the commit landed before trying again. Gives up only on errors waiting cannot fix.
async fn load_with_retry(
    mut sink: Box<dyn Sink>,
    mut batch: Batch,
    source_id: Arc<str>,
    slow_after: Duration,
) -> (Box<dyn Sink>, Batch, Result<Duration, SinkError>) {
    let started = Instant::now();
    let mut backoff = Backoff::new(RETRY_INITIAL, RETRY_MAX);
    loop {
        let step = sink.load_step();
        let applied = warn_while_slow(
            sink.apply(&mut batch),
            &step,
            &source_id,
            started,
            slow_after,
        );
        let error = match applied.await {
            Ok(()) => return (sink, batch, Ok(started.elapsed())),
            Err(error) => error,
        };
        // A lost lease does not come back by retrying: another process runs the source.
        if error.kind() != ErrorKind::Retry || error.is_lease_lost() {
            return (sink, batch, Err(error));
        }
        let wait = backoff.next_wait();
        warn!(source = %source_id, error = %error, retry_in = ?wait, "loading a batch failed; retrying");
        tokio::time::sleep(wait).await;
        match sink.committed(&batch).await {
            Ok(true) => return (sink, batch, Ok(started.elapsed())),
            Ok(false) => {}
            Err(e) if e.kind() == ErrorKind::Retry => {
                warn!(source = %source_id, error = %e, "warehouse still unavailable");
            }
            Err(e) => return (sink, batch, Err(e)),
        }
    }
}

/// Reads until the channel closes or the reader fails; the failure is the last item sent (a
/// lost connection is not a failure: the reader reconnects by itself).
async fn read_source(
    mut reader: impl Source,
    tx: mpsc::Sender<Result<Vec<SourceMessage>, ReadError>>,
) {
    loop {
        let mut messages = Vec::with_capacity(256);
        match reader.next_batch(&mut messages).await {
            Ok(()) => {
                if tx.send(Ok(messages)).await.is_err() {
                    break;
                }
            }
            Err(e) => {
                let _ = tx.send(Err(e)).await;
                break;
            }
        }
    }
    Box::new(reader).close().await;
}

/// Awaits `load`, logging a warning each time `slow_after` more has passed since `started`
/// without it finishing, naming the table (or step) it is on: a lock held by another session
/// must show in the log, not only as lag.
async fn warn_while_slow<T>(
    load: impl Future<Output = T>,
    step: &LoadStep,
    source_id: &str,
    started: Instant,
    slow_after: Duration,
) -> T {
    tokio::pin!(load);
    let mut next = started + slow_after;
    loop {
        tokio::select! {
            done = &mut load => return done,
            _ = tokio::time::sleep_until(next.into()) => {
                let (current, since) = step.get();
                let table = match &current {
                    Step::Table(table) => Some(tracing::field::display(table)),
                    _ => None,
                };
                warn!(
                    source = %source_id,
                    table,
                    waited_s = seconds(started.elapsed()),
                    on_step_s = seconds(since.elapsed()),
                    "loading into the warehouse is slow: still {current} (blocked by another session's lock? see pg_locks and pg_stat_activity on Postgres, stv_locks and svv_transactions on Redshift)"
                );
                next += slow_after;
            }
        }
    }
}
