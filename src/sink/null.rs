//! A sink that discards every batch and keeps each source's progress in memory: for measuring
//! what reading and batching cost without a warehouse, and for proving that the pipeline works
//! with any [`Sink`]. Operators get it with `[warehouse] kind = "null"` (benchmarks, dry runs):
//! every connection then shares the process's one record of progress
//! ([`NullSink::process_wide`]), so a source that restarts after an error resumes where it was,
//! but nothing survives the process.
//!
//! Its encoder, [`NullEncoder`], writes one byte per row, so a batch still counts its rows and
//! bytes, cuts and filters at row boundaries, and spills, at almost no cost: the byte limits
//! then count rows.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use super::encode::{EncodeError, Encoded, Row, RowEncoder};
use super::{
    Batch, ChunkDone, Lease, LoadStep, Progress, ProgressRecord, Sink, SinkFuture, SnapshotRequest,
    TargetTable,
};
use crate::event::TableId;

/// Discards batches; remembers the last progress of each source and what it discarded. Clones
/// share what they remember.
#[derive(Debug, Clone, Default)]
pub struct NullSink {
    state: Arc<Mutex<Discarded>>,
    step: LoadStep,
}

/// What a [`NullSink`] and its clones remember.
#[derive(Debug, Default)]
struct Discarded {
    progress: HashMap<String, Progress>,
    chunks: Vec<(String, ChunkDone)>,
    requests: Vec<(String, SnapshotRequest)>,
    changes: u64,
    batches: u64,
}

impl NullSink {
    /// A sink sharing the one record of this process: what `kind = "null"` connects to.
    pub fn process_wide() -> NullSink {
        static PROCESS: OnceLock<NullSink> = OnceLock::new();
        PROCESS.get_or_init(NullSink::default).clone()
    }

    /// Row changes discarded so far, by this sink and its clones.
    pub fn changes(&self) -> u64 {
        self.state().changes
    }

    /// Batches discarded so far, by this sink and its clones.
    pub fn batches(&self) -> u64 {
        self.state().batches
    }

    fn state(&self) -> MutexGuard<'_, Discarded> {
        // Nothing can be left half-updated under this lock; a panic elsewhere does not matter.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Sink for NullSink {
    fn prepare(&mut self) -> SinkFuture<'_, ()> {
        Box::pin(async { Ok(()) })
    }

    fn read_progress<'a>(
        &'a mut self,
        source_id: &'a str,
    ) -> SinkFuture<'a, Option<ProgressRecord>> {
        Box::pin(async move {
            // No tables are kept, so there are no table versions to report.
            let state = self.state();
            Ok(state
                .progress
                .get(source_id)
                .map(|progress| ProgressRecord {
                    progress: progress.clone(),
                    committed_at_micros: None,
                    tables: Vec::new(),
                    last_error: None,
                    chunks_done: state
                        .chunks
                        .iter()
                        .filter(|(source, _)| source == source_id)
                        .map(|(_, chunk)| chunk.clone())
                        .collect(),
                }))
        })
    }

    fn apply<'a>(&'a mut self, batch: &'a mut Batch) -> SinkFuture<'a, ()> {
        Box::pin(async move {
            let mut state = self.state();
            state.changes += batch.changes();
            state.batches += 1;
            if batch.records_progress {
                state
                    .progress
                    .insert(batch.source_id.to_string(), batch.progress.clone());
            }
            if batch.forget_chunks {
                state
                    .chunks
                    .retain(|(source, _)| *source != *batch.source_id);
            }
            if let Some(chunk) = &batch.chunk {
                state
                    .chunks
                    .push((batch.source_id.to_string(), chunk.clone()));
            }
            if let Some(last) = batch.requests_handled {
                state
                    .requests
                    .retain(|(source, r)| *source != *batch.source_id || r.id > last);
            }
            Ok(())
        })
    }

    fn committed<'a>(&'a mut self, batch: &'a Batch) -> SinkFuture<'a, bool> {
        Box::pin(async move {
            let state = self.state();
            Ok(match &batch.chunk {
                Some(chunk) => state
                    .chunks
                    .iter()
                    .any(|(source, c)| *source == *batch.source_id && c == chunk),
                None => state.progress.get(&*batch.source_id) == Some(&batch.progress),
            })
        })
    }

    fn holds_rows<'a>(&'a mut self, _table: &'a TargetTable) -> SinkFuture<'a, bool> {
        // Nothing is kept: no table ever holds rows.
        Box::pin(async { Ok(false) })
    }

    fn load_step(&self) -> LoadStep {
        self.step.clone()
    }

    fn encoder(&self) -> Arc<dyn RowEncoder> {
        Arc::new(NullEncoder)
    }

    fn request_snapshot<'a>(
        &'a mut self,
        source_id: &'a str,
        tables: Option<Vec<TableId>>,
    ) -> SinkFuture<'a, i64> {
        Box::pin(async move {
            let mut state = self.state();
            let id = state.requests.last().map_or(1, |(_, r)| r.id + 1);
            state
                .requests
                .push((source_id.to_owned(), SnapshotRequest { id, tables }));
            Ok(id)
        })
    }

    fn snapshot_requests<'a>(
        &'a mut self,
        source_id: &'a str,
    ) -> SinkFuture<'a, Vec<SnapshotRequest>> {
        Box::pin(async move {
            Ok(self
                .state()
                .requests
                .iter()
                .filter(|(source, _)| source == source_id)
                .map(|(_, r)| r.clone())
                .collect())
        })
    }

    fn claim_leases<'a>(
        &'a mut self,
        _lease: &'a Lease,
        source_ids: &'a [String],
    ) -> SinkFuture<'a, Vec<String>> {
        // Nothing is written, so nothing needs guarding: every source is this process's.
        Box::pin(async move { Ok(source_ids.to_vec()) })
    }

    fn record_error<'a>(&'a mut self, _: &'a str, _: &'a str) -> SinkFuture<'a, ()> {
        // Nothing outlives the process here: the log says it.
        Box::pin(async { Ok(()) })
    }

    fn clock_micros(&mut self) -> SinkFuture<'_, i64> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as i64);
        Box::pin(async move { Ok(now) })
    }
}

/// Writes each row as its terminator alone: one byte, whatever the row holds.
#[derive(Debug, Clone, Copy, Default)]
pub struct NullEncoder;

impl RowEncoder for NullEncoder {
    fn encode(&self, _row: &Row<'_>, out: &mut Vec<u8>) -> Result<Encoded, EncodeError> {
        out.push(b'\n');
        Ok(Encoded::default())
    }

    fn row_terminator(&self) -> u8 {
        b'\n'
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::ResumePoint;

    #[tokio::test]
    async fn progress_is_what_the_last_batch_committed() {
        let mut sink = NullSink::default();
        assert_eq!(sink.read_progress("s").await.unwrap(), None);
        let at = ResumePoint::Lsn { lsn: 42 };
        let mut batch = Batch::position_only("s".into(), at.clone());
        sink.apply(&mut batch).await.unwrap();
        let record = sink.read_progress("s").await.unwrap().unwrap();
        assert_eq!(record.progress.resume_point, at);
        assert!(sink.committed(&batch).await.unwrap());
        assert_eq!(sink.batches(), 1);
        // A clone (what every connection to `kind = "null"` is) sees the same progress.
        let mut other = sink.clone();
        assert!(other.read_progress("s").await.unwrap().is_some());
    }
}
