//! Moving a stuck source past what it cannot replicate: `tidemark skip-to-end`.
//!
//! A source that meets an event it cannot replicate (statement-format DML written before the
//! server was fixed, a lost slot, purged binlogs) stops on it at every retry. Skipping moves
//! its checkpoint to the source's current end of log, so it resumes with the next change.
//! Every change before that end that was not loaded yet never reaches the warehouse: the
//! source's tables must be copied again afterwards, which is why the CLI asks for `--yes` and
//! warns loudly.

use std::sync::Arc;

use tracing::warn;

use crate::config::Config;
use crate::event::ResumePoint;
use crate::sink::{self, Batch, SinkError};
use crate::source::{ReadError, restart_at_end};

/// Why a skip did not happen (the checkpoint is unchanged).
#[derive(Debug, thiserror::Error)]
pub enum SkipError {
    /// No source has the id.
    #[error("no source has id `{id}`; the config has: {known}")]
    UnknownSource {
        /// The id asked for.
        id: String,
        /// The ids the config has.
        known: String,
    },
    /// Reading or writing the checkpoint failed (or the warehouse kind cannot be loaded yet).
    #[error(transparent)]
    Warehouse(#[from] SinkError),
    /// The source's end of log could not be read (or its new slot made).
    #[error(transparent)]
    Source(#[from] ReadError),
}

/// Where a skipped source was, and where it resumes now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// The checkpoint before the skip (none: the source never started).
    pub from: Option<ResumePoint>,
    /// The source's end of log, now its checkpoint.
    pub to: ResumePoint,
}

/// Sets the checkpoint of source `source_id` to its source's current end of log.
pub async fn skip_to_end(config: &Config, source_id: &str) -> Result<Skipped, SkipError> {
    let Some(source) = config.sources.iter().find(|s| s.id == source_id) else {
        return Err(SkipError::UnknownSource {
            id: source_id.to_owned(),
            known: config.source_ids(),
        });
    };
    let mut sink = sink::connect(&config.warehouse).await?;
    sink.prepare().await?;
    let from = sink
        .read_progress(source_id)
        .await?
        .map(|record| record.progress.resume_point);
    let to = restart_at_end(source).await?;
    let mut record = Batch::position_only(Arc::from(source_id), to.clone());
    sink.apply(&mut record).await?;
    warn!(source = %source_id, from = %from.as_ref().map_or("(none)".to_owned(), ToString::to_string), to = %to, "checkpoint moved to the source's current end: the changes in between are skipped");
    Ok(Skipped { from, to })
}
