//! Turns one source's message stream into batches that end on transaction boundaries.
//!
//! Invariants:
//! - A batch holds only whole committed transactions, and its checkpoint is the resume point of
//!   the last one: loading it and recording that progress together never splits a transaction.
//! - A rolled back transaction leaves no trace: every table buffer returns to where it stood at
//!   `Begin`.
//! - A table rename is applied after every change that came before it and before any that came
//!   after: the batch is cut in front of the renaming statement.
//! - Memory: once the batch's encoded rows and its last-change-per-key index exceed `max_bytes`
//!   while the batch cannot be cut (a transaction is still open, or the source is catching up),
//!   the buffers move to files under the spill directory.
//!
//! Catching up: when the last commit is more than `catch_up_lag` old, the source is behind and
//! throughput matters more than latency. The batch then grows past `max_rows`/`max_bytes`
//! (spilled to disk) up to `catch_up_max_bytes`, or until its last-change-per-key index holds half
//! of `max_bytes`, so the many changes of one key load as one row. It is cut early when the reader
//! goes quiet for 100 ms (or `max_delay`, if shorter: the source has nothing more for now), when
//! its first change was read `catch_up_lag` ago, or when a commit's lag falls back under
//! `catch_up_lag`, after which the normal limits apply again. Heartbeats do not end catching up
//! (a source may send heartbeats in the middle of a backlog too); a source that goes idle right after
//! its backlog is back to the normal limits at its next commit.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::info;

use super::columns::ColumnRuleError;
use super::route::{RouteConflict, Router};
use crate::config::BatchConfig;
use crate::event::{ResumePoint, SourceMessage, TableId};
use crate::observe::seconds;
use crate::sink::changes::TableMark;
use crate::sink::{Batch, EncodeError, Progress, RowEncoder, TableChanges, TargetTable};

/// How long a position-only change (transactions that touched no replicated table, heartbeats)
/// waits before it is recorded: often enough that a restart does not re-read much.
const CHECKPOINT_ONLY_DELAY: Duration = Duration::from_secs(10);

/// A pause of the reader this long, while catching up, means it has read all there is.
const READER_QUIET: Duration = Duration::from_millis(100);

/// Why the stream cannot be batched.
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    /// A change that cannot be encoded for the warehouse.
    #[error(transparent)]
    Encode(#[from] EncodeError),
    /// Two source tables map to one target table.
    #[error(transparent)]
    Route(#[from] Box<RouteConflict>),
    /// A table's column rules cannot apply to its shape (a key column excluded, a name clash).
    #[error(transparent)]
    Columns(#[from] Box<ColumnRuleError>),
    /// The source broke the stream grammar (a bug in the source).
    #[error("source {source_id}: {problem}")]
    Stream {
        /// The source.
        source_id: String,
        /// What arrived out of place.
        problem: String,
    },
    /// Spilling to disk failed.
    #[error("spilling batch data to {dir}: {error}")]
    Spill {
        /// The spill directory.
        dir: PathBuf,
        /// The I/O error.
        error: std::io::Error,
    },
}

#[derive(Debug)]
struct OpenTransaction {
    commit_ts_micros: i64,
    marks: Vec<(usize, TableMark)>,
    tables_before: usize,
}

impl OpenTransaction {
    fn untouched(&self, tables: usize) -> bool {
        self.marks.is_empty() && self.tables_before == tables
    }
}

/// Accumulates one source's changes into [`Batch`]es.
#[derive(Debug)]
pub struct Batcher {
    source_id: Arc<str>,
    router: Router,
    limits: BatchConfig,
    spill_dir: PathBuf,
    /// The sink's format, in which every change is encoded as it arrives.
    encoder: Arc<dyn RowEncoder>,
    tables: Vec<TableChanges>,
    by_source: HashMap<TableId, usize>,
    renames: Vec<(TargetTable, TargetTable)>,
    next_seq: u64,
    open: Option<OpenTransaction>,
    committed: Option<Progress>,
    last_commit_ts: Option<i64>,
    data_since: Option<Instant>,
    position_since: Option<Instant>,
    spilled: bool,
    catching_up: bool,
    last_message: Option<Instant>,
}

impl Batcher {
    /// A batcher for one source, routing with `router`, spilling under `spill_dir`, encoding
    /// rows with `encoder` (the sink's).
    pub fn new(
        source_id: Arc<str>,
        router: Router,
        limits: BatchConfig,
        spill_dir: PathBuf,
        encoder: Arc<dyn RowEncoder>,
    ) -> Batcher {
        Batcher {
            source_id,
            router,
            limits,
            spill_dir,
            encoder,
            tables: Vec::new(),
            by_source: HashMap::new(),
            renames: Vec::new(),
            next_seq: 0,
            open: None,
            committed: None,
            last_commit_ts: None,
            data_since: None,
            position_since: None,
            spilled: false,
            catching_up: false,
            last_message: None,
        }
    }

    /// Takes one message; a batch completed by it (a limit reached at a commit, or a rename
    /// that must apply between two batches) goes to `cut`.
    pub fn push(&mut self, message: SourceMessage, cut: &mut Vec<Batch>) -> Result<(), BatchError> {
        self.last_message = Some(Instant::now());
        match message {
            SourceMessage::Begin(txn) => {
                if self.open.is_some() {
                    return Err(self.grammar("Begin inside an open transaction"));
                }
                self.open = Some(OpenTransaction {
                    commit_ts_micros: txn.commit_ts_micros,
                    marks: Vec::new(),
                    tables_before: self.tables.len(),
                });
            }
            SourceMessage::Schema(_) => {}
            SourceMessage::Change(event) => {
                let Some(open) = self.open.as_mut() else {
                    if self.router.route(&event.table.id)?.is_none() {
                        return Ok(());
                    }
                    return Err(self.grammar("a change outside a transaction"));
                };
                // A table already in the batch was routed when it joined.
                let index = match self.by_source.get(&event.table.id) {
                    Some(&index) => {
                        if index < open.tables_before
                            && !open.marks.iter().any(|(i, _)| *i == index)
                        {
                            open.marks.push((index, self.tables[index].mark()));
                        }
                        index
                    }
                    None => {
                        let Some(target) = self.router.route(&event.table.id)?.cloned() else {
                            return Ok(());
                        };
                        self.tables.push(TableChanges::with_encoder(
                            event.table.id.clone(),
                            target,
                            self.encoder.clone(),
                        ));
                        self.by_source
                            .insert(event.table.id.clone(), self.tables.len() - 1);
                        self.tables.len() - 1
                    }
                };
                // Column rules apply here, once the table is routed: a table left out never
                // fails on its rules.
                let event = self.router.shape(&event)?;
                self.tables[index].push(&event, &mut self.next_seq)?;
                if self.spilled {
                    self.spill_table(index)?;
                } else if self.should_spill() {
                    self.spilled = true;
                    for index in 0..self.tables.len() {
                        self.spill_table(index)?;
                    }
                }
            }
            SourceMessage::Ddl(ddl) => {
                for (from, to) in &ddl.renamed {
                    let Some(rename) = self.router.rename(from, to)? else {
                        continue;
                    };
                    if self
                        .open
                        .as_ref()
                        .is_some_and(|o| !o.untouched(self.tables.len()))
                    {
                        return Err(self.grammar(
                            "a table rename inside a transaction that also changed rows",
                        ));
                    }
                    if let Some(batch) = self.take() {
                        cut.push(batch);
                    }
                    // Later changes of the new name must not join a buffer of the old one.
                    self.by_source.remove(from);
                    self.renames.push(rename);
                }
            }
            SourceMessage::Commit(resume_point) => {
                let Some(open) = self.open.take() else {
                    return Err(self.grammar("Commit outside a transaction"));
                };
                self.last_commit_ts = Some(open.commit_ts_micros);
                self.set_catching_up(lag_of(open.commit_ts_micros) >= self.limits.catch_up_lag);
                self.record_position(resume_point, !open.untouched(self.tables.len()));
                // A full batch is cut right here, at the first boundary past the limit: the
                // rest of this read chunk starts the next batch, so limits hold however the
                // reader's chunks fall across transactions.
                if self.is_full()
                    && let Some(batch) = self.take()
                {
                    cut.push(batch);
                }
            }
            SourceMessage::Rollback => {
                if let Some(open) = self.open.take() {
                    self.roll_back(open)?;
                }
            }
            SourceMessage::Heartbeat(resume_point) => {
                // A heartbeat only moves the position. Whether the source is behind is judged by
                // commit times alone: a source may send heartbeats in the middle of a backlog too
                // (a logical slot does whenever its decoding reaches the flush position it last
                // looked up).
                if self.open.is_none() {
                    self.record_position(resume_point, false);
                }
            }
        }
        Ok(())
    }

    fn record_position(&mut self, resume_point: ResumePoint, with_data: bool) {
        let now = Instant::now();
        if with_data || !self.renames.is_empty() {
            self.data_since.get_or_insert(now);
        }
        self.position_since.get_or_insert(now);
        self.committed = Some(Progress::at(resume_point, self.last_commit_ts));
    }

    fn roll_back(&mut self, open: OpenTransaction) -> Result<(), BatchError> {
        for (index, mark) in open.marks {
            self.tables[index]
                .reset_to(mark)
                .map_err(|error| self.spill_error(error))?;
        }
        for added in self.tables.drain(open.tables_before..) {
            self.by_source.remove(&added.source_table);
        }
        Ok(())
    }

    /// Ends any open transaction as if it rolled back (for shutdown: only whole transactions
    /// are loaded; the source resumes before the abandoned one).
    pub fn abandon_open_transaction(&mut self) -> Result<(), BatchError> {
        match self.open.take() {
            Some(open) => self.roll_back(open),
            None => Ok(()),
        }
    }

    /// True when a limit is reached and the batch can be cut (no transaction half-way).
    pub fn is_full(&self) -> bool {
        if !self.can_cut() {
            return false;
        }
        if self.catching_up {
            self.bytes() >= self.limits.catch_up_max_bytes.0
                || self.key_index_bytes() as u64 >= self.limits.max_bytes.0 / 2
        } else {
            self.changes() >= self.limits.max_rows || self.bytes() >= self.limits.max_bytes.0
        }
    }

    /// True while the source is behind by more than `catch_up_lag` (large batches).
    pub fn is_catching_up(&self) -> bool {
        self.catching_up
    }

    fn set_catching_up(&mut self, behind: bool) {
        if behind != self.catching_up {
            self.catching_up = behind;
            let lag = self.last_commit_ts.map(lag_of);
            if behind {
                info!(source = %self.source_id, lag_s = lag.map(seconds), "behind the source: loading large batches until caught up");
            } else {
                info!(source = %self.source_id, lag_s = lag.map(seconds), "caught up: back to the configured batch limits");
            }
        }
    }

    /// When the pending batch must be loaded by, if anything is pending.
    pub fn deadline(&self) -> Option<Instant> {
        self.committed.as_ref()?;
        if self.catching_up && self.data_since.is_some() {
            // Behind: wait for as much as the reader has, not for the clock. During a backlog
            // the reader delivers every few milliseconds; a pause means it has reached the end.
            // Never longer than `catch_up_lag` from its first change, so a source clock far
            // behind this host's (a lag that never shrinks) costs latency, not an unbounded wait.
            let quiet = self.limits.max_delay.min(READER_QUIET);
            let drained = self.last_message.map(|at| at + quiet);
            let oldest = self.data_since.map(|at| at + self.limits.catch_up_lag);
            return match (drained, oldest) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        match self.data_since {
            Some(since) => Some(since + self.limits.max_delay),
            None => self
                .position_since
                .map(|since| since + CHECKPOINT_ONLY_DELAY),
        }
    }

    /// True when the pending batch should be loaded now.
    pub fn is_due(&self, now: Instant) -> bool {
        self.is_full() || (self.can_cut() && self.deadline().is_some_and(|d| d <= now))
    }

    /// Drops `table`'s changes from now on (see [`Router::set_aside`]), and those of the
    /// batch being filled: the table is set aside from the last committed position.
    pub fn set_aside(&mut self, table: &TableId) {
        self.router.set_aside(table);
        if let Some(&index) = self.by_source.get(table) {
            // Emptied in place, not removed: the open transaction's marks hold indexes.
            let old = &self.tables[index];
            self.tables[index] = TableChanges::with_encoder(
                old.source_table.clone(),
                old.target.clone(),
                self.encoder.clone(),
            );
        }
    }

    /// Takes `table`'s changes again.
    pub fn bring_back(&mut self, table: &TableId) {
        self.router.bring_back(table);
    }

    /// True when no transaction has changes half-way: everything received is in whole
    /// transactions, which [`Batcher::take`] hands out together.
    pub fn between_transactions(&self) -> bool {
        self.open
            .as_ref()
            .is_none_or(|o| o.untouched(self.tables.len()))
    }

    fn can_cut(&self) -> bool {
        self.committed.is_some()
            && self
                .open
                .as_ref()
                .is_none_or(|o| o.untouched(self.tables.len()))
    }

    /// Row changes pending, committed or not.
    pub fn changes(&self) -> u64 {
        self.tables.iter().map(|t| t.changes).sum()
    }

    fn bytes(&self) -> u64 {
        self.tables.iter().map(TableChanges::bytes).sum()
    }

    fn memory_bytes(&self) -> usize {
        self.tables.iter().map(TableChanges::memory_bytes).sum()
    }

    /// True when the batch must move its buffers to disk: its memory (buffers and key index)
    /// passed `max_bytes`, or it is a catch-up batch past the normal limits, which will grow far
    /// beyond memory anyway (spilling it early keeps room for the reader's read-ahead).
    fn should_spill(&self) -> bool {
        (self.memory_bytes() + self.key_index_bytes()) as u64 > self.limits.max_bytes.0
            || (self.catching_up && self.changes() >= self.limits.max_rows)
    }

    fn key_index_bytes(&self) -> usize {
        self.tables.iter().map(TableChanges::key_index_bytes).sum()
    }

    /// Cuts the batch of everything committed so far, if anything is pending and no
    /// transaction has changes half-way.
    pub fn take(&mut self) -> Option<Batch> {
        if !self.can_cut() {
            return None;
        }
        let progress = self.committed.take()?;
        if let Some(open) = self.open.as_mut() {
            open.tables_before = 0;
        }
        self.by_source.clear();
        self.next_seq = 0;
        self.data_since = None;
        self.position_since = None;
        self.spilled = false;
        Some(Batch {
            source_id: self.source_id.clone(),
            renames: std::mem::take(&mut self.renames),
            tables: std::mem::take(&mut self.tables),
            progress,
            requests_handled: None,
            chunk: None,
            records_progress: true,
            forget_chunks: false,
        })
    }

    fn spill_table(&mut self, index: usize) -> Result<(), BatchError> {
        let dir = self.spill_dir.clone();
        self.tables[index]
            .spill(&dir)
            .map_err(|error| self.spill_error(error))
    }

    fn spill_error(&self, error: std::io::Error) -> BatchError {
        BatchError::Spill {
            dir: self.spill_dir.clone(),
            error,
        }
    }

    fn grammar(&self, problem: &str) -> BatchError {
        BatchError::Stream {
            source_id: self.source_id.to_string(),
            problem: problem.to_owned(),
        }
    }
}

/// Time since a source commit timestamp (µs since the epoch), as seen by this host's clock.
pub(super) fn lag_of(commit_ts_micros: i64) -> Duration {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64);
    Duration::from_micros(now.saturating_sub(commit_ts_micros).max(0) as u64)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::{ByteSize, Config};
    use crate::event::{
        ChangeEvent, Column, ColumnType, DdlEvent, Op, Position, TableSchema, Transaction, Value,
    };
    use crate::sink::null::NullEncoder;

    fn batcher(max_rows: u64) -> Batcher {
        let text = r#"
[group]
name = "g"
[warehouse]
kind = "null"
[[sources]]
id = "s"
kind = "mysql"
url = "mysql://src"
tenant = "t"
region = "r"
function = "f"
include = ["shop.*"]
snapshot = "never"
"#;
        let config = Config::from_str_with_env(text, Path::new("t.toml"), &|_| None).unwrap();
        let limits = BatchConfig {
            max_rows,
            max_bytes: ByteSize(1 << 30),
            max_delay: Duration::from_millis(500),
            catch_up_lag: Duration::MAX,
            catch_up_max_bytes: ByteSize(1 << 30),
            slow_load_warning: Duration::from_secs(10),
        };
        Batcher::new(
            "s".into(),
            Router::new(&config.sources[0]),
            limits,
            std::env::temp_dir(),
            Arc::new(NullEncoder),
        )
    }

    fn table(name: &str) -> Arc<TableSchema> {
        Arc::new(TableSchema {
            id: TableId::new("shop", name),
            columns: vec![Column {
                name: "id".into(),
                ty: ColumnType::Int {
                    bits: 32,
                    unsigned: false,
                },
                nullable: false,
            }],
            primary_key: vec![0],
        })
    }

    fn txn(n: u64) -> Arc<Transaction> {
        Arc::new(Transaction {
            id: n.to_string(),
            gtid: None,
            commit_ts_micros: n as i64,
            log_coordinate: n,
        })
    }

    fn insert(t: &Arc<TableSchema>, n: u64, id: i64) -> SourceMessage {
        SourceMessage::Change(ChangeEvent {
            source: "s".into(),
            table: t.clone(),
            op: Op::Insert,
            before: None,
            after: Some(vec![Value::Int(id)]),
            position: Position { txn: n, seq: 0 },
            transaction: txn(n),
        })
    }

    fn commit(pos: u64) -> SourceMessage {
        SourceMessage::Commit(ResumePoint::Binlog {
            file: "b.000001".into(),
            pos,
            gtid: None,
        })
    }

    fn feed(b: &mut Batcher, messages: Vec<SourceMessage>) -> Vec<Batch> {
        let mut cut = Vec::new();
        for m in messages {
            b.push(m, &mut cut).unwrap();
        }
        cut
    }

    fn summary(batch: &Batch) -> Vec<(String, u64)> {
        batch
            .tables
            .iter()
            .map(|t| (t.target.table.clone(), t.changes))
            .collect()
    }

    #[test]
    fn a_rolled_back_transaction_leaves_no_trace() {
        let (a, b) = (table("a"), table("b"));
        let mut batcher = batcher(1000);
        feed(
            &mut batcher,
            vec![SourceMessage::Begin(txn(1)), insert(&a, 1, 1), commit(100)],
        );
        feed(
            &mut batcher,
            vec![
                SourceMessage::Begin(txn(2)),
                insert(&a, 2, 2),
                insert(&b, 2, 3),
                SourceMessage::Rollback,
            ],
        );
        let batch = batcher.take().unwrap();
        assert_eq!(summary(&batch), vec![("a".to_string(), 1)]);
        assert_eq!(
            batch.progress.resume_point,
            ResumePoint::Binlog {
                file: "b.000001".into(),
                pos: 100,
                gtid: None
            }
        );
    }

    #[test]
    fn batches_are_cut_only_between_transactions() {
        let a = table("a");
        let mut batcher = batcher(2);
        feed(
            &mut batcher,
            vec![
                SourceMessage::Begin(txn(1)),
                insert(&a, 1, 1),
                insert(&a, 1, 2),
            ],
        );
        assert!(!batcher.is_full(), "full mid-transaction");
        assert!(batcher.take().is_none());
        let cut = feed(
            &mut batcher,
            vec![insert(&a, 1, 3), commit(100), SourceMessage::Begin(txn(2))],
        );
        assert_eq!(cut.len(), 1, "cut at the commit that reached the limit");
        assert_eq!(summary(&cut[0]), vec![("a".to_string(), 3)]);
        assert!(batcher.take().is_none(), "nothing left after a cut");
    }

    #[test]
    fn a_rename_cuts_the_batch_in_front_of_it_and_excluded_tables_are_skipped() {
        let (a, other) = (
            table("a"),
            Arc::new(TableSchema {
                id: TableId::new("elsewhere", "x"),
                ..(*table("x")).clone()
            }),
        );
        let mut batcher = batcher(1000);
        feed(
            &mut batcher,
            vec![
                SourceMessage::Begin(txn(1)),
                insert(&a, 1, 1),
                insert(&other, 1, 1),
                commit(100),
            ],
        );
        let cut = feed(
            &mut batcher,
            vec![
                SourceMessage::Begin(txn(2)),
                SourceMessage::Ddl(DdlEvent {
                    namespace: "shop".into(),
                    statement: "RENAME TABLE a TO b".into(),
                    position: Position { txn: 2, seq: 0 },
                    renamed: vec![(TableId::new("shop", "a"), TableId::new("shop", "b"))],
                }),
                commit(200),
            ],
        );
        assert_eq!(cut.len(), 1);
        assert_eq!(summary(&cut[0]), vec![("a".to_string(), 1)]);
        feed(
            &mut batcher,
            vec![
                SourceMessage::Begin(txn(3)),
                insert(&table("b"), 3, 2),
                commit(300),
            ],
        );
        let batch = batcher.take().unwrap();
        assert_eq!(batch.renames.len(), 1);
        assert_eq!(
            (
                batch.renames[0].0.table.as_str(),
                batch.renames[0].1.table.as_str()
            ),
            ("a", "b")
        );
        assert_eq!(summary(&batch), vec![("b".to_string(), 1)]);
    }

    #[test]
    fn a_source_far_behind_grows_its_batch_until_caught_up() {
        let a = table("a");
        let mut batcher = batcher(2);
        // Commit timestamps near the epoch: decades behind.
        batcher.limits.catch_up_lag = Duration::from_secs(10);
        batcher.limits.catch_up_max_bytes = ByteSize(1 << 20);
        for n in 1..=5 {
            let cut = feed(
                &mut batcher,
                vec![
                    SourceMessage::Begin(txn(n)),
                    insert(&a, n, 2 * n as i64),
                    insert(&a, n, 2 * n as i64 + 1),
                    commit(100 * n),
                ],
            );
            assert!(cut.is_empty(), "cut while catching up");
        }
        assert!(batcher.is_catching_up() && !batcher.is_full());
        assert!(
            !batcher.is_due(Instant::now()),
            "due while the reader is busy"
        );
        assert!(
            batcher.is_due(Instant::now() + Duration::from_secs(1)),
            "not due once the reader went quiet"
        );
        // A heartbeat (sources send them in the middle of a backlog too) moves the position
        // but does not end the catch-up batch.
        feed(
            &mut batcher,
            vec![SourceMessage::Heartbeat(ResumePoint::Binlog {
                file: "b.000001".into(),
                pos: 600,
                gtid: None,
            })],
        );
        assert!(batcher.is_catching_up() && !batcher.is_full());
        assert!(!batcher.is_due(Instant::now()), "due on a heartbeat");
        // A recent commit: caught up, the normal limits apply again.
        let recent = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_micros() as i64;
        let cut = feed(
            &mut batcher,
            vec![
                SourceMessage::Begin(Arc::new(Transaction {
                    commit_ts_micros: recent,
                    ..(*txn(6)).clone()
                })),
                insert(&a, 6, 12),
                commit(650),
            ],
        );
        assert!(!batcher.is_catching_up());
        assert_eq!(cut.len(), 1, "the grown batch is cut at the first boundary");
        assert_eq!(summary(&cut[0]), vec![("a".to_string(), 11)]);
        // Caught up and idle: a heartbeat alone is recorded after the checkpoint-only delay.
        feed(
            &mut batcher,
            vec![SourceMessage::Heartbeat(ResumePoint::Binlog {
                file: "b.000001".into(),
                pos: 660,
                gtid: None,
            })],
        );
        assert!(!batcher.is_due(Instant::now() + Duration::from_secs(1)));
        assert!(batcher.is_due(Instant::now() + CHECKPOINT_ONLY_DELAY));
        batcher.take().unwrap();

        // The byte limit still bounds a catch-up batch.
        batcher.limits.catch_up_max_bytes = ByteSize(1);
        let cut = feed(
            &mut batcher,
            vec![SourceMessage::Begin(txn(7)), insert(&a, 7, 1), commit(700)],
        );
        assert!(batcher.is_catching_up());
        assert_eq!(cut.len(), 1);
    }
}
