//! One source's reader, whatever its kind: opened at the checkpoint, read as `SourceMessage`s,
//! and told which positions the warehouse committed (Postgres confirms them to its slot; a MySQL
//! binlog needs no confirmation).

use std::sync::Arc;

use tokio::sync::{mpsc, watch};

use crate::config::{SourceConfig, SourceKind};
use crate::error::ErrorKind;
use crate::event::{ResumePoint, SourceMessage};
use crate::source::mysql::error::BinlogError;
use crate::source::mysql::stream::{BinlogReader, ReaderOptions, StartPosition, current_end};
use crate::source::postgres::reader::{PgReadError, PgReader, restart_slot_at_end};

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
    /// How the supervisor should react.
    pub fn kind(&self) -> ErrorKind {
        match self {
            ReadError::Mysql(e) => e.kind(),
            ReadError::Postgres(e) => e.kind(),
        }
    }

    /// True when the source stops at a place in its log (an event it cannot replicate, a lost
    /// position) where it stops again after every retry, even once the cause is fixed, until it
    /// is moved past it (`tidemark skip-to-end`).
    pub fn stuck_in_log(&self) -> bool {
        match self {
            ReadError::Mysql(e) => e.stuck_in_log(),
            ReadError::Postgres(e) => e.stuck_in_log(),
        }
    }
}

/// An open source of either kind.
pub enum SourceReader {
    /// MySQL/MariaDB binlog.
    Mysql(BinlogReader),
    /// Postgres logical replication.
    Postgres(PgReader),
}

/// A source just opened, and the checkpoint to record before reading when it had none.
pub struct OpenedSource {
    /// The reader.
    pub reader: SourceReader,
    /// First start: where reading starts, to be committed before anything is read.
    pub first_checkpoint: Option<ResumePoint>,
    /// Where the pipeline sends positions once the warehouse committed them.
    pub confirm: watch::Sender<Option<ResumePoint>>,
}

impl SourceReader {
    /// Opens `source` at `checkpoint` (its end of log, or a new slot, when there is none).
    pub async fn open(
        source: &SourceConfig,
        checkpoint: Option<&ResumePoint>,
    ) -> Result<OpenedSource, ReadError> {
        let (confirm, confirmations) = watch::channel(None);
        match source.kind {
            SourceKind::Mysql => {
                let options = mysql_options(source);
                let start = match checkpoint {
                    Some(point) => StartPosition::Resume(point.clone()),
                    None => StartPosition::End,
                };
                let reader = BinlogReader::connect(options, start).await?;
                Ok(OpenedSource {
                    first_checkpoint: checkpoint.is_none().then(|| reader.resume_point()),
                    reader: SourceReader::Mysql(reader),
                    confirm,
                })
            }
            SourceKind::Postgres => {
                let opened = PgReader::open(source, checkpoint, confirmations).await?;
                Ok(OpenedSource {
                    first_checkpoint: opened.first_checkpoint,
                    reader: SourceReader::Postgres(opened.reader),
                    confirm,
                })
            }
        }
    }

    /// The position after the last transaction handed out.
    pub fn resume_point(&self) -> ResumePoint {
        match self {
            SourceReader::Mysql(r) => r.resume_point(),
            SourceReader::Postgres(r) => r.resume_point(),
        }
    }

    /// Appends at least one message to `out`.
    pub async fn next_batch(&mut self, out: &mut Vec<SourceMessage>) -> Result<(), ReadError> {
        match self {
            SourceReader::Mysql(r) => Ok(r.next_batch(out).await?),
            SourceReader::Postgres(r) => Ok(r.next_batch(out).await?),
        }
    }

    /// Ends the connection cleanly.
    pub async fn close(self) {
        match self {
            SourceReader::Mysql(r) => r.close().await,
            SourceReader::Postgres(r) => r.close().await,
        }
    }
}

/// The source's current end of log as a resume point, made ready to resume from: MySQL/MariaDB
/// the binlog end and its GTID state; Postgres a new slot at the end of the WAL (the old slot is
/// dropped, and must not be in use).
pub async fn restart_at_end(source: &SourceConfig) -> Result<ResumePoint, ReadError> {
    match source.kind {
        SourceKind::Mysql => Ok(current_end(&mysql_options(source)).await?),
        SourceKind::Postgres => Ok(restart_slot_at_end(source).await?),
    }
}

fn mysql_options(source: &SourceConfig) -> ReaderOptions {
    let mut options = ReaderOptions::new(
        Arc::from(source.id.as_str()),
        source.url.expose().to_owned(),
        source.server_id,
    );
    options.heartbeat = source.heartbeat;
    options
}

/// Reads until the channel closes or the reader fails; the failure is the last item sent.
pub async fn read_source(
    mut reader: SourceReader,
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
    reader.close().await;
}
