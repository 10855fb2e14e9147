//! `tidemark inspect binlog`: binlog files to normalized change events, one JSON object per line.
//!
//! An operator's debugging tool, so it shows exactly what replication would apply: a
//! transaction's lines are printed only when it commits (rolled-back work never appears), and
//! they are held in a temp file past a small memory budget so huge transactions stay flat.

use std::fs::File;
use std::io::{self, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::ser::{SerializeMap, Serializer};

use super::assemble::{AssemblerOptions, GtidTracker};
use super::file::{FileError, read_binlog_file};
use super::layout::ColumnNames;
use crate::event::ResumePoint;
use crate::event::{
    ChangeEvent, DdlEvent, Row, SourceMessage, TableSchema, format_timestamp_micros,
};
use crate::source::{ReadError, Source};

/// Bytes of a transaction's output kept in memory before spilling to a temp file.
const MEMORY_BUDGET: usize = 8 << 20;

/// Counts of what `inspect` printed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct InspectSummary {
    /// Committed transactions.
    pub transactions: u64,
    /// Row-change lines printed.
    pub changes: u64,
    /// Rolled-back transactions whose changes were not printed.
    pub rolled_back: u64,
}

/// Options of `inspect binlog`.
#[derive(Debug, Clone, Copy, Default)]
pub struct InspectOptions {
    /// Name columns `@1`, `@2`, ... when the binlog lacks names (MINIMAL row metadata).
    pub positional_names: bool,
}

/// Decodes each file in order and writes its committed changes to `out` as JSON lines.
pub fn inspect_binlog_files(
    paths: &[PathBuf],
    options: InspectOptions,
    out: &mut dyn Write,
) -> Result<InspectSummary, FileError> {
    let names = if options.positional_names {
        ColumnNames::Positional
    } else {
        ColumnNames::Required
    };
    let mut summary = InspectSummary::default();
    let mut gtids = GtidTracker::Unknown;
    for path in paths {
        let file_name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut txn = TxnLines::default();
        gtids = read_binlog_file(
            path,
            AssemblerOptions {
                names,
                seed_gtids_from_log: true,
                allow_partial_images: true,
            },
            gtids,
            |message| txn.handle(&message, &file_name, &mut summary, out),
        )?;
        // A transaction still open at the end of the last file has not committed: drop it.
        txn.discard();
        out.flush().map_err(FileError::Stopped)?;
    }
    Ok(summary)
}

/// Why a live inspection stopped.
#[derive(Debug, thiserror::Error)]
pub enum StreamInspectError {
    /// The reader failed in a way reconnecting cannot fix.
    #[error(transparent)]
    Reader(#[from] ReadError),
    /// Writing the output failed (e.g. the pipe closed).
    #[error("writing output: {0}")]
    Output(#[from] io::Error),
}

/// Prints the committed changes a live reader delivers until `stop` completes.
pub async fn inspect_stream(
    reader: &mut dyn Source,
    out: &mut dyn Write,
    stop: impl std::future::Future<Output = ()>,
) -> Result<InspectSummary, StreamInspectError> {
    let mut summary = InspectSummary::default();
    let mut txn = TxnLines::default();
    let mut batch = Vec::new();
    tokio::pin!(stop);
    loop {
        batch.clear();
        tokio::select! {
            () = &mut stop => return Ok(summary),
            read = reader.next_batch(&mut batch) => read?,
        }
        let file = match reader.resume_point() {
            ResumePoint::Binlog { file, .. } => file,
            ResumePoint::Lsn { .. } => String::new(),
        };
        for message in batch.drain(..) {
            txn.handle(&message, &file, &mut summary, out)?;
        }
        out.flush()?;
    }
}

/// One committed change, as printed.
#[derive(Serialize)]
struct ChangeLine<'a> {
    op: &'a str,
    database: &'a str,
    table: &'a str,
    gtid: Option<&'a str>,
    position: String,
    seq: u32,
    commit_ts: String,
    before: Option<KeyedRow<'a>>,
    after: Option<KeyedRow<'a>>,
}

/// One DDL statement, as printed.
#[derive(Serialize)]
struct DdlLine<'a> {
    op: &'static str,
    database: &'a str,
    gtid: Option<&'a str>,
    position: String,
    statement: &'a str,
}

/// The open transaction's identity and its not-yet-committed lines.
#[derive(Default)]
struct TxnLines {
    lines: SpillBuffer,
    changes: u64,
    gtid: Option<String>,
    position: String,
}

/// Bytes in memory up to a budget, then in a temp file.
#[derive(Default)]
struct SpillBuffer {
    memory: Vec<u8>,
    spill: Option<File>,
}

impl TxnLines {
    fn handle(
        &mut self,
        message: &SourceMessage,
        file_name: &str,
        summary: &mut InspectSummary,
        out: &mut dyn Write,
    ) -> io::Result<()> {
        match message {
            SourceMessage::Begin(txn) => {
                self.discard();
                self.gtid = txn.gtid.clone();
                self.position = format!("{file_name}:{}", txn.log_coordinate & 0xffff_ffff);
            }
            SourceMessage::Change(change) => {
                let line = change_line(change, self.gtid.as_deref(), &self.position);
                self.lines.push(&line)?;
                self.changes += 1;
            }
            SourceMessage::Ddl(ddl) => {
                let line = ddl_line(ddl, self.gtid.as_deref(), &self.position);
                self.lines.push(&line)?;
            }
            SourceMessage::Commit(_) => {
                summary.transactions += 1;
                summary.changes += self.changes;
                self.lines.write_to(out)?;
                self.discard();
            }
            SourceMessage::Rollback => {
                summary.rolled_back += 1;
                self.discard();
            }
            SourceMessage::Schema(_) | SourceMessage::Heartbeat(_) => {}
        }
        Ok(())
    }

    fn discard(&mut self) {
        self.lines = SpillBuffer::default();
        self.changes = 0;
    }
}

impl SpillBuffer {
    fn push(&mut self, line: &impl Serialize) -> io::Result<()> {
        serde_json::to_writer(&mut self.memory, line)?;
        self.memory.push(b'\n');
        if self.memory.len() > MEMORY_BUDGET {
            let spill = match &mut self.spill {
                Some(file) => file,
                None => self.spill.insert(tempfile::tempfile()?),
            };
            spill.write_all(&self.memory)?;
            self.memory.clear();
        }
        Ok(())
    }

    fn write_to(&mut self, out: &mut dyn Write) -> io::Result<()> {
        if let Some(mut file) = self.spill.take() {
            file.seek(SeekFrom::Start(0))?;
            io::copy(&mut file, out)?;
        }
        out.write_all(&self.memory)
    }
}

fn change_line<'a>(
    change: &'a ChangeEvent,
    gtid: Option<&'a str>,
    position: &str,
) -> ChangeLine<'a> {
    ChangeLine {
        op: op_name(change),
        database: &change.table.id.namespace,
        table: &change.table.id.name,
        gtid,
        position: position.to_owned(),
        seq: change.position.seq,
        commit_ts: format_timestamp_micros(change.transaction.commit_ts_micros),
        before: change.before.as_ref().map(|row| KeyedRow {
            table: &change.table,
            row,
        }),
        after: change.after.as_ref().map(|row| KeyedRow {
            table: &change.table,
            row,
        }),
    }
}

fn ddl_line<'a>(ddl: &'a DdlEvent, gtid: Option<&'a str>, position: &str) -> DdlLine<'a> {
    DdlLine {
        op: "ddl",
        database: &ddl.namespace,
        gtid,
        position: position.to_owned(),
        statement: &ddl.statement,
    }
}

fn op_name(change: &ChangeEvent) -> &'static str {
    match change.op {
        crate::event::Op::Insert => "insert",
        crate::event::Op::Update => "update",
        crate::event::Op::Delete => "delete",
        crate::event::Op::Truncate => "truncate",
        crate::event::Op::Read => "read",
    }
}

/// A row, printed as a JSON object keyed by column name; columns the image did not carry are
/// left out. Values are written straight to the output, never through a `serde_json::Value`,
/// whose f64 numbers would change the decimals inside JSON documents.
struct KeyedRow<'a> {
    table: &'a TableSchema,
    row: &'a Row,
}

impl Serialize for KeyedRow<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(None)?;
        for (column, value) in self.table.columns.iter().zip(self.row) {
            if *value != crate::event::Value::Unchanged {
                map.serialize_entry(&*column.name, value)?;
            }
        }
        map.end()
    }
}

/// Convenience for a single file.
pub fn inspect_binlog_file(
    path: &Path,
    options: InspectOptions,
    out: &mut dyn Write,
) -> Result<InspectSummary, FileError> {
    inspect_binlog_files(&[path.to_owned()], options, out)
}
