//! A source's progress record: how far the warehouse holds its changes, committed in the same
//! warehouse transaction as the rows it covers.
//!
//! One record per source. Besides the resume point it carries what a restart or a later load
//! needs to know without asking the source: the version of each target table's schema, and the
//! state of a snapshot in progress, so that a snapshot chunk and its progress can commit
//! together exactly as a streamed batch and its resume point do.

use serde::{Deserialize, Serialize};

use super::TargetTable;
use crate::event::ResumePoint;

/// What one batch brings a source's progress record to; a sink stores it with the batch.
#[derive(Debug, Clone, PartialEq)]
pub struct Progress {
    /// Where the source resumes after this batch.
    pub resume_point: ResumePoint,
    /// Commit time (µs since the epoch) of the last source transaction in the batch, if known.
    pub source_commit_ts_micros: Option<i64>,
    /// The snapshot's state after this batch, while a snapshot runs; `None` otherwise.
    pub snapshot: Option<SnapshotProgress>,
}

impl Progress {
    /// Progress that only moves the resume point: what streamed batches record.
    pub fn at(resume_point: ResumePoint, source_commit_ts_micros: Option<i64>) -> Progress {
        Progress {
            resume_point,
            source_commit_ts_micros,
            snapshot: None,
        }
    }
}

/// A snapshot's state (which chunks of which tables are copied), owned by the code that copies
/// and stored verbatim: sinks keep it, they never look inside.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SnapshotProgress(pub serde_json::Value);

/// A source's committed progress record, as [`super::Sink::read_progress`] returns it.
#[derive(Debug, Clone, PartialEq)]
pub struct ProgressRecord {
    /// The progress the last committed batch recorded.
    pub progress: Progress,
    /// When that batch committed (µs since the epoch), if the sink keeps it.
    pub committed_at_micros: Option<i64>,
    /// The schema version of each target table the source has loaded, by table.
    pub tables: Vec<TableVersion>,
    /// Why the source stopped, when it stopped on an error no retry fixes; cleared by its next
    /// committed batch.
    pub last_error: Option<String>,
    /// The snapshot chunks recorded loaded since the snapshot began ([`super::Batch::chunk`]).
    pub chunks_done: Vec<ChunkDone>,
}

/// A snapshot chunk loaded, recorded in the transaction that loads its rows, apart from the
/// progress record: chunks load side by side on several connections, and each records only
/// itself. Sinks store it verbatim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkDone {
    /// Database (MySQL) or schema (Postgres) of the source table.
    pub namespace: String,
    /// Source table name.
    pub name: String,
    /// When the table's copy was planned (µs since the epoch): tells one copy of the table
    /// from another.
    pub started_at_micros: i64,
    /// The chunk's place in the table's plan.
    pub chunk: u32,
    /// Rows it loaded.
    pub rows: u64,
}

/// The version of one target table's schema: counted up each time tidemark creates, extends,
/// retypes or renames the table, and recorded in the transaction that does it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableVersion {
    /// The target table.
    pub table: TargetTable,
    /// 1 when tidemark first recorded the table, then one more per change.
    pub version: i32,
    /// The table's source columns as the warehouse holds them: (name, warehouse type).
    pub columns: Vec<(String, String)>,
    /// Where the source was when the batch that made this version committed.
    pub position: String,
}
