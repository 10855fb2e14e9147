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

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tracing::{error, info, warn};

use super::batch::{BatchError, Batcher, lag_of};
use super::route::Router;
use crate::check::{CheckStatus, check_source};
use crate::config::{BatchConfig, Config, SourceConfig, WarehouseConfig};
use crate::crash::{self, crash_point};
use crate::error::ErrorKind;
use crate::event::{ResumePoint, SourceMessage};
use crate::observe::seconds;
use crate::retry::Backoff;
use crate::sink::{self, Batch, LoadStep, Sink, SinkError, Step};
use crate::source::{self, Acknowledger, ReadError, Source};

/// Messages (each a reader batch of up to ~1024) the reader may run ahead of the batching loop.
const READ_AHEAD: usize = 16;
/// First and longest wait before a failed source starts again.
const RETRY_INITIAL: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(30);
/// Shortest wait before retrying a source that needs an operator (bad setting, lost position);
/// with jitter the wait is up to twice this: within a minute.
const OPERATOR_RETRY: Duration = Duration::from_secs(30);
/// Longest a stop request waits for the last batches to load.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(20);
/// How often each source logs its progress.
const PROGRESS_EVERY: Duration = Duration::from_secs(10);

/// Why a group cannot run, or why it stopped.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The warehouse cannot be used at start.
    #[error(transparent)]
    Warehouse(#[from] SinkError),
    /// Every source stopped on errors that retrying cannot fix.
    #[error("sources stopped on errors: {0}")]
    SourcesFailed(String),
}

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
            SourceError::Batch(BatchError::Route(_)) => ErrorKind::Operator,
            SourceError::Batch(BatchError::Spill { .. }) => ErrorKind::Retry,
            SourceError::Batch(_) => ErrorKind::Fatal,
            SourceError::ReaderGone => ErrorKind::Retry,
            SourceError::NotReady { .. } => ErrorKind::Operator,
            SourceError::LoadPanicked { .. } => ErrorKind::Fatal,
        }
    }

    /// True when the source stops at a place in its log (an event it cannot replicate, a lost
    /// position or slot) where it will stop again after every retry, even once the cause is
    /// fixed, until it is moved past it.
    fn stuck_in_log(&self) -> bool {
        matches!(self, SourceError::Read(e) if e.stuck_in_log())
    }
}

/// Runs every source of `config` until `shutdown` turns true; then each source loads what it
/// has committed so far and stops.
pub async fn run_group(config: &Config, shutdown: watch::Receiver<bool>) -> Result<(), RunError> {
    let mut sink = sink::connect(&config.warehouse).await?;
    sink.prepare().await?;
    drop(sink);
    info!(group = %config.group.name, sources = config.sources.len(), warehouse = %config.warehouse.describe(), "group starting");

    let mut tasks = JoinSet::new();
    for source in &config.sources {
        let context = SourceContext {
            source: source.clone(),
            warehouse: config.warehouse.clone(),
            limits: config.batch,
            spill_dir: config.group.state_dir.join("spill").join(&source.id),
            config_path: config.path.clone(),
        };
        tasks.spawn(supervise(context, shutdown.clone()));
    }
    let mut failed = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(Ok(())) => {}
            Ok(Err((id, e))) => failed.push(format!("{id}: {e}")),
            Err(e) => failed.push(format!("a source task ended abnormally: {e}")),
        }
    }
    if failed.is_empty() {
        info!(group = %config.group.name, "group stopped");
        Ok(())
    } else {
        Err(RunError::SourcesFailed(failed.join("; ")))
    }
}

struct SourceContext {
    source: SourceConfig,
    warehouse: WarehouseConfig,
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
async fn supervise(
    context: SourceContext,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), (String, SourceError)> {
    let id = context.source.id.clone();
    let mut interrupted = Backoff::new(RETRY_INITIAL, RETRY_MAX);
    let mut needs_operator = Backoff::new(OPERATOR_RETRY, OPERATOR_RETRY);
    loop {
        let error = match run_source(&context, shutdown.clone(), &mut interrupted).await {
            Ok(()) => return Ok(()),
            Err(error) => error,
        };
        // Fixing the server does not remove what is already in its log: say how to move past it.
        let get_past = error.stuck_in_log().then(|| {
            format!(
                "once the cause is fixed, if the source still stops here, move it past this point with `tidemark skip-to-end {} --yes` (the changes not yet loaded are skipped: copy the source's tables again afterwards)",
                context.cli_args()
            )
        });
        let wait = match error.kind() {
            ErrorKind::Fatal => {
                error!(source = %id, error = %error, get_past, "source stopped; fix the cause and restart tidemark (other sources keep running)");
                return Err((id, error));
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

/// One run of a source from its checkpoint; returns `Ok` only after a requested shutdown. Each
/// committed batch is progress: `backoff` starts over.
async fn run_source(
    context: &SourceContext,
    mut shutdown: watch::Receiver<bool>,
    backoff: &mut Backoff,
) -> Result<(), SourceError> {
    let source = &context.source;
    let source_id: Arc<str> = Arc::from(source.id.as_str());
    // The same checks as `tidemark check`, before anything is read or recorded: a source that
    // cannot be replicated must not record a position it would then be stuck behind.
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
    let mut sink = sink::connect(&context.warehouse).await?;
    let committed = sink
        .read_progress(&source.id)
        .await?
        .map(|record| record.progress.resume_point);
    let opened = tokio::select! {
        opened = source::open(source, committed.as_ref()) => opened?,
        _ = shutdown.wait_for(|stop| *stop) => return Ok(()),
    };
    let reader = opened.source;
    let confirm = opened.acknowledger;
    if let Some(resume_point) = opened.first_checkpoint {
        // Record where reading starts before reading on: a crash before the first batch must
        // resume here, not at a later end.
        let mut first = Batch::position_only(source_id.clone(), resume_point);
        sink.apply(&mut first).await?;
        info!(source = %source.id, position = %first.progress.resume_point, "first start: replicating changes from the current end of the log");
    } else {
        info!(source = %source.id, position = %reader.resume_point(), "resuming from the checkpoint");
    }

    let (tx, mut rx) = mpsc::channel(READ_AHEAD);
    let read_task = tokio::spawn(read_source(reader, tx));
    let _abort_reader = AbortOnDrop(read_task);

    let router = Router::new(source);
    let mut batcher = Batcher::new(
        source_id.clone(),
        router,
        context.limits,
        context.spill_dir.clone(),
        sink.encoder(),
    );
    let mut loader = Loader::new(sink, source_id.clone(), context.limits.slow_load_warning);
    let mut cut = Vec::new();
    loop {
        let deadline = batcher.deadline();
        let may_read = !batcher.is_full() && cut.is_empty();
        tokio::select! {
            biased;
            _ = shutdown.wait_for(|stop| *stop) => break,
            loaded = loader.wait(), if loader.is_busy() => confirm_loaded(&confirm, loaded?, backoff),
            received = rx.recv(), if may_read => match received {
                Some(Ok(messages)) => {
                    for message in messages {
                        batcher.push(message, &mut cut)?;
                    }
                }
                Some(Err(e)) => return Err(e.into()),
                None => return Err(SourceError::ReaderGone),
            },
            _ = sleep_until(deadline), if deadline.is_some() && !loader.is_busy() => {}
        }
        if !loader.is_busy() {
            if !cut.is_empty() {
                loader.start(cut.remove(0));
            } else if batcher.is_due(Instant::now())
                && let Some(batch) = batcher.take()
            {
                loader.start(batch);
            }
        }
    }
    // Shutdown: finish the load in flight, then load every whole transaction received so far,
    // within a grace period: a warehouse that stays down must not hold the process hostage.
    // Whatever is not committed is simply read again at the next start.
    let drain = async {
        confirm_loaded(&confirm, loader.wait().await?, backoff);
        batcher.abandon_open_transaction()?;
        for batch in cut.into_iter().chain(batcher.take()) {
            loader.start(batch);
            confirm_loaded(&confirm, loader.wait().await?, backoff);
        }
        Ok::<(), SourceError>(())
    };
    match tokio::time::timeout(SHUTDOWN_GRACE, drain).await {
        Ok(result) => result?,
        Err(_) => {
            loader.abort();
            warn!(source = %source.id, grace_s = seconds(SHUTDOWN_GRACE), "stopping without loading the last batch (the warehouse did not take it in time); it is read again at the next start");
            return Ok(());
        }
    }
    info!(source = %source.id, "source stopped cleanly");
    Ok(())
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

type LoadResult = (Box<dyn Sink>, Batch, Result<Duration, SinkError>);

/// Loads one batch at a time in the background, retrying connection failures in place.
struct Loader {
    source_id: Arc<str>,
    idle: Option<Box<dyn Sink>>,
    busy: Option<tokio::task::JoinHandle<LoadResult>>,
    slow_after: Duration,
    loaded_changes: u64,
    loaded_batches: u64,
    /// None until the first batch, which is reported at once: the operator sees it flow.
    last_report: Option<Instant>,
}

impl Loader {
    fn new(sink: Box<dyn Sink>, source_id: Arc<str>, slow_after: Duration) -> Loader {
        Loader {
            source_id,
            idle: Some(sink),
            busy: None,
            slow_after,
            loaded_changes: 0,
            loaded_batches: 0,
            last_report: None,
        }
    }

    fn is_busy(&self) -> bool {
        self.busy.is_some()
    }

    fn start(&mut self, batch: Batch) {
        let Some(sink) = self.idle.take() else {
            return;
        };
        let source_id = self.source_id.clone();
        self.busy = Some(tokio::spawn(load_with_retry(
            sink,
            batch,
            source_id,
            self.slow_after,
        )));
    }

    /// Gives up the batch in flight (its transaction rolls back with the connection).
    fn abort(&mut self) {
        if let Some(handle) = self.busy.take() {
            handle.abort();
        }
    }

    /// Waits for the batch in flight and returns the position it committed; errors are the
    /// ones retrying did not fix.
    async fn wait(&mut self) -> Result<Option<ResumePoint>, SourceError> {
        let Some(handle) = self.busy.as_mut() else {
            return Ok(None);
        };
        let joined = handle.await;
        self.busy = None;
        let (sink, batch, result) = match joined {
            Ok(done) => done,
            Err(e) => {
                return Err(SourceError::LoadPanicked {
                    source_id: self.source_id.to_string(),
                    message: panic_message(e),
                });
            }
        };
        self.idle = Some(sink);
        let took = result?;
        self.loaded_changes += batch.changes();
        self.loaded_batches += 1;
        tracing::debug!(source = %self.source_id, changes = batch.changes(), tables = batch.tables.len(), took_s = seconds(took), position = %batch.progress.resume_point, "batch loaded");
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
        Ok(Some(batch.progress.resume_point))
    }
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

/// Passes a position the warehouse committed on to the reader (a server that keeps its log for
/// the source, such as a replication slot, may then release what is before it); a committed
/// batch is progress, so the source's backoff starts over.
fn confirm_loaded(confirm: &Acknowledger, loaded: Option<ResumePoint>, backoff: &mut Backoff) {
    if let Some(committed) = loaded {
        crash_point(crash::AFTER_COMMIT_BEFORE_ACK);
        backoff.reset();
        confirm.acknowledge(committed);
    }
}

/// Applies `batch`, riding out connection failures: after each, reconnect and check whether
/// the commit landed before trying again. Gives up only on errors waiting cannot fix.
async fn load_with_retry(
    mut sink: Box<dyn Sink>,
    mut batch: Batch,
    source_id: Arc<str>,
    slow_after: Duration,
) -> LoadResult {
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
        if error.kind() != ErrorKind::Retry {
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
                    "loading into the warehouse is slow: still {current} (blocked by another session's lock? see pg_locks and pg_stat_activity on the warehouse)"
                );
                next += slow_after;
            }
        }
    }
}
