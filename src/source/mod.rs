//! Sources: readers that turn a database's change log into [`SourceMessage`]s.
//!
//! Each kind lives in its own folder with the same layout: `mod.rs` (how the kind is opened),
//! `config.rs` (its settings), `check.rs` (the prerequisites `tidemark check` reports),
//! `reader.rs` (the [`Source`] the pipeline reads) and pure decode files that do no I/O.
//! [`open`] is the one place that maps a source kind to its reader; [`Reconnecting`] is the one
//! place that rides out a lost connection, for every kind.

pub mod copy;
pub mod mysql;
pub mod postgres;
mod reconnect;

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use tokio::sync::watch;

use crate::config::{SourceConfig, SourceSettings};
use crate::error::ErrorKind;
use crate::event::{ResumePoint, SourceMessage};
use mysql::error::BinlogError;
use postgres::reader::PgReadError;

pub use reconnect::{Reconnecting, Reopen};

/// First wait before reconnecting a source whose connection was lost.
const RECONNECT_FIRST: Duration = Duration::from_millis(100);
/// Longest wait between reconnect attempts.
const RECONNECT_LONGEST: Duration = Duration::from_secs(30);

/// Why reading a source failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// A MySQL/MariaDB source.
    #[error(transparent)]
    Mysql(#[from] BinlogError),
    /// A Postgres source.
    #[error(transparent)]
    Postgres(#[from] PgReadError),
}

impl ReadError {
    /// How the caller should react: only [`ErrorKind::Retry`] is worth reconnecting for.
    pub fn kind(&self) -> ErrorKind {
        match self {
            ReadError::Mysql(e) => e.kind(),
            ReadError::Postgres(e) => e.kind(),
        }
    }

    /// True when the position to resume from is no longer in the source's log (binlogs or
    /// GTIDs purged; the Postgres slot dropped, invalidated or moved past it): the changes since
    /// are lost to the log, and only copying the tables again recovers them.
    pub fn position_lost(&self) -> bool {
        match self {
            ReadError::Mysql(e) => matches!(e, BinlogError::PositionLost { .. }),
            ReadError::Postgres(e) => e.position_lost(),
        }
    }

    /// True when the source stops at a place in its log (an event it cannot replicate, a lost
    /// position) where it stops again after every retry, even once the cause is fixed, until it
    /// is moved past it (`tidemark snapshot`, or `tidemark skip-to-end`).
    pub fn stuck_in_log(&self) -> bool {
        match self {
            ReadError::Mysql(e) => e.stuck_in_log(),
            ReadError::Postgres(e) => e.stuck_in_log(),
        }
    }
}

/// What a [`Source`] method returns: boxed, so that sources can be chosen at run time.
pub type SourceFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, ReadError>> + Send + 'a>>;

/// An open change log, read as [`SourceMessage`]s.
///
/// What a caller relies on, and an implementer must keep:
/// - **Opened at a resume point.** Reading starts exactly after the position it was opened at
///   (a [`ResumePoint`] some earlier `Commit` or `Heartbeat` carried): nothing before it is
///   handed out again, nothing after it is skipped.
/// - **Whole transactions in commit order**, in the grammar of [`crate::event`]: `Begin`,
///   changes, then `Commit` with the position after it, or `Rollback` when the transaction must
///   be discarded (the log rolled it back, or the connection was lost in its middle; it is then
///   handed out again whole).
/// - **Errors leave what was handed out valid.** When [`Source::next_batch`] fails, the
///   messages it appended to `out` before the failure stand; the caller passes them on (and
///   ends an open transaction with `Rollback` before reading the same source again).
/// - **Acknowledged only after the sink committed.** A source that keeps its log for its reader
///   (a Postgres slot) releases only positions sent to it through the [`Acknowledger`] of
///   [`open`], which the caller sends only once the warehouse holds them.
/// - **Memory stays bounded**: a transaction is streamed as it is decoded, never held whole.
/// - Errors carry their [`ErrorKind`]; whether to reconnect is decided on that alone.
pub trait Source: Send {
    /// The position after the last transaction handed out as committed (or the last
    /// heartbeat between transactions): where reading resumes after a lost connection.
    fn resume_point(&self) -> ResumePoint;

    /// Appends at least one message to `out` (as many as have arrived, up to about a thousand),
    /// waiting for the first.
    fn next_batch<'a>(&'a mut self, out: &'a mut Vec<SourceMessage>) -> SourceFuture<'a, ()>;

    /// Ends the connection cleanly.
    fn close(self: Box<Self>) -> Pin<Box<dyn Future<Output = ()> + Send>>;
}

/// Sends the positions the warehouse committed to the source that produced them.
#[derive(Debug)]
pub struct Acknowledger(watch::Sender<Option<ResumePoint>>);

impl Acknowledger {
    /// A new acknowledger and the receiver its source reads.
    fn new() -> (Acknowledger, watch::Receiver<Option<ResumePoint>>) {
        let (sender, receiver) = watch::channel(None);
        (Acknowledger(sender), receiver)
    }

    /// Tells the source that everything up to `committed` is in the warehouse.
    pub fn acknowledge(&self, committed: ResumePoint) {
        // The reader may be gone (shutting down): there is nothing to acknowledge to then.
        let _ = self.0.send(Some(committed));
    }
}

/// A source just opened by [`open`].
pub struct Opened {
    /// The reader, reconnecting by itself after a lost connection.
    pub source: Reconnecting,
    /// First start: where reading starts, to be committed before anything is read (a crash
    /// before the first batch must resume there, not at a later end of the log).
    pub first_checkpoint: Option<ResumePoint>,
    /// Where the caller sends positions once the warehouse committed them.
    pub acknowledger: Acknowledger,
}

/// Opens `source` after `checkpoint`, or at the current end of its log when it has none (a new
/// Postgres slot): the one place that maps a source kind to its reader.
pub async fn open(
    source: &SourceConfig,
    checkpoint: Option<&ResumePoint>,
) -> Result<Opened, ReadError> {
    let (acknowledger, acknowledged) = Acknowledger::new();
    let (source, first_checkpoint) = match &source.settings {
        SourceSettings::Mysql(settings) => mysql::open(source, settings, checkpoint).await?,
        SourceSettings::Postgres(settings) => {
            postgres::open(source, settings, checkpoint, acknowledged).await?
        }
    };
    Ok(Opened {
        source,
        first_checkpoint,
        acknowledger,
    })
}

/// The source's current end of log, without reserving the log from there on (no Postgres slot
/// is created): where a source that only copies (`snapshot = "initial_only"`) records it was.
pub async fn log_end(source: &SourceConfig) -> Result<ResumePoint, ReadError> {
    match &source.settings {
        SourceSettings::Mysql(settings) => Ok(mysql::restart_at_end(source, settings).await?),
        SourceSettings::Postgres(_) => Ok(postgres::reader::current_wal_end(source).await?),
    }
}

/// The source's current end of log as a resume point, made ready to resume from: MySQL/MariaDB
/// the binlog end and its GTID state; Postgres a new slot at the end of the WAL (the old slot is
/// dropped, and must not be in use). Where `tidemark skip-to-end` moves a source.
pub async fn restart_at_end(source: &SourceConfig) -> Result<ResumePoint, ReadError> {
    match &source.settings {
        SourceSettings::Mysql(settings) => Ok(mysql::restart_at_end(source, settings).await?),
        SourceSettings::Postgres(settings) => {
            Ok(postgres::reader::restart_slot_at_end(source, settings).await?)
        }
    }
}
