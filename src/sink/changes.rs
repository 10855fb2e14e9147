//! Changes encoded once, as the rows a warehouse `COPY` reads, with room to spill to disk.
//!
//! Row format: Postgres `COPY ... FROM STDIN` text format (tab-separated, `\N` for NULL,
//! backslash escapes). Each row is
//!
//! ```text
//! seq  op  position  commit_ts  col1 ... colN
//! ```
//!
//! `seq` orders the rows of one batch (arrival order, which is source commit order); `op` is
//! `insert`, `update` or `delete`; `position` packs the change's [`Position`] into one sortable
//! number (`txn * 2^32 + seq`). A delete carries the before image (only its key columns when the
//! table has a key; the others are `\N`); an update the after image;
//! an update that changes a keyed table's primary key is written as a delete of the old key
//! followed by an update of the new one, so "last change per key" stays a simple rule.
//!
//! Invariants: a row is written whole or not at all (an encoding error leaves the buffer as it
//! was); [`SpillBuffer::truncate`] restores any earlier length exactly (used to discard a rolled
//! back transaction).

use std::fmt::Write as _;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;

use super::TargetTable;
use super::last_change::LastChange;
use crate::event::{
    ChangeEvent, ColumnType, Op, Position, TableId, TableSchema, Value, format_time_micros,
    write_timestamp_micros,
};

/// Bytes a spilled buffer keeps in memory before writing them to its file.
const SPILL_CHUNK: usize = 1 << 20;

/// A value the warehouse cannot hold, or a change that cannot be encoded.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    /// The value cannot be represented in the target column.
    #[error(
        "source table {table}, column `{column}`, at position {position}: {problem}. Fix the value at the source (or exclude the table); tidemark never alters or drops a value silently"
    )]
    Value {
        /// Source table.
        table: TableId,
        /// Column name.
        column: String,
        /// Position of the change.
        position: Position,
        /// What is wrong.
        problem: String,
    },
    /// A change without the row image its operation needs.
    #[error("source table {table}, at position {position}: {op:?} change without its row image")]
    MissingImage {
        /// Source table.
        table: TableId,
        /// Position of the change.
        position: Position,
        /// The operation.
        op: Op,
    },
    /// Writing or reading a spill file failed.
    #[error("spill file: {0}")]
    Spill(#[from] io::Error),
}

/// Bytes held in memory as a list of ~1 MiB chunks (so growth never copies what is already
/// written), or, once spilled, in an anonymous temporary file followed by a memory tail.
#[derive(Debug, Default)]
pub struct SpillBuffer {
    /// Completed chunks, in order, after the file's bytes.
    full: Vec<Bytes>,
    full_len: u64,
    /// The chunk being written.
    mem: Vec<u8>,
    file: Option<File>,
    file_len: u64,
}

impl SpillBuffer {
    /// Total bytes written and kept.
    pub fn len(&self) -> u64 {
        self.file_len + self.full_len + self.mem.len() as u64
    }

    /// True when nothing is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes held in memory.
    pub fn memory_bytes(&self) -> usize {
        self.full_len as usize + self.mem.capacity()
    }

    /// True once the buffer writes to a file.
    pub fn is_spilled(&self) -> bool {
        self.file.is_some()
    }

    /// From now on, keep the bytes in a temporary file under `dir` (memory holds at most one
    /// chunk).
    pub fn spill(&mut self, dir: &Path) -> io::Result<()> {
        if self.file.is_some() {
            // Already spilled: full chunks go to the file as they fill (`after_write`); writing
            // the partial one now would cost a system call per row.
            return Ok(());
        }
        std::fs::create_dir_all(dir)?;
        self.file = Some(tempfile::tempfile_in(dir)?);
        self.seal();
        self.flush_to_file()
    }

    /// Moves the chunk being written to the completed ones.
    fn seal(&mut self) {
        if !self.mem.is_empty() {
            let mut chunk = std::mem::take(&mut self.mem);
            // A chunk lives until its batch commits: do not keep a doubling's spare half.
            if chunk.capacity() > chunk.len() + chunk.len() / 4 {
                chunk.shrink_to_fit();
            }
            self.full_len += chunk.len() as u64;
            self.full.push(Bytes::from(chunk));
        }
    }

    fn flush_to_file(&mut self) -> io::Result<()> {
        if let Some(file) = self.file.as_mut() {
            file.seek(SeekFrom::Start(self.file_len))?;
            for chunk in self.full.drain(..) {
                file.write_all(&chunk)?;
                self.file_len += chunk.len() as u64;
            }
            self.full_len = 0;
        }
        Ok(())
    }

    /// Cuts the buffer back to `len` bytes (a length it had before).
    pub fn truncate(&mut self, len: u64) -> io::Result<()> {
        let mut keep_in_memory = len.saturating_sub(self.file_len);
        if len < self.file_len
            && let Some(file) = self.file.as_mut()
        {
            file.set_len(len)?;
            self.file_len = len;
            keep_in_memory = 0;
        }
        if keep_in_memory >= self.full_len {
            self.mem.truncate((keep_in_memory - self.full_len) as usize);
            return Ok(());
        }
        // The cut falls inside a completed chunk: reopen it (rare: a rollback of a big
        // transaction) as the chunk being written.
        let mut kept = 0u64;
        let mut reopened = Vec::new();
        let mut chunks = std::mem::take(&mut self.full).into_iter();
        for chunk in chunks.by_ref() {
            let chunk_len = chunk.len() as u64;
            if kept + chunk_len >= keep_in_memory {
                reopened = chunk[..(keep_in_memory - kept) as usize].to_vec();
                break;
            }
            kept += chunk_len;
            self.full.push(chunk);
        }
        self.full_len = kept;
        self.mem = reopened;
        Ok(())
    }

    /// The content from byte `offset` on, at most about 1 MiB of it; `None` at the end.
    pub fn chunk_at(&mut self, offset: u64) -> io::Result<Option<Bytes>> {
        if offset < self.file_len
            && let Some(file) = self.file.as_mut()
        {
            let n = (self.file_len - offset).min(SPILL_CHUNK as u64) as usize;
            let mut chunk = vec![0u8; n];
            file.seek(SeekFrom::Start(offset))?;
            file.read_exact(&mut chunk)?;
            return Ok(Some(Bytes::from(chunk)));
        }
        self.seal();
        let mut start = self.file_len;
        for chunk in &self.full {
            let end = start + chunk.len() as u64;
            if offset < end {
                return Ok(Some(chunk.slice((offset - start) as usize..)));
            }
            start = end;
        }
        Ok(None)
    }

    /// The chunk rows are written to.
    fn writer(&mut self) -> &mut Vec<u8> {
        &mut self.mem
    }

    fn after_write(&mut self) -> io::Result<()> {
        if self.mem.len() >= SPILL_CHUNK {
            self.seal();
            if self.file.is_some() {
                self.flush_to_file()?;
            }
        }
        Ok(())
    }
}

/// Rows of one table that share one shape (a new segment starts when the source's shape changes,
/// or when rows start to leave values unchanged).
#[derive(Debug)]
pub struct Segment {
    /// The source shape the rows follow; their columns are `schema.columns` in order.
    pub schema: Arc<TableSchema>,
    /// Rows carry two more fields after `commit_ts`: the names of the columns they leave
    /// unchanged (a text array, `\N` for none) and their generation (see [`TableChanges`]).
    pub with_unchanged: bool,
    /// Encoded rows.
    pub data: SpillBuffer,
    /// Rows encoded.
    pub rows: u64,
}

/// A batch's changes for one target table.
#[derive(Debug)]
pub struct TableChanges {
    /// The source table (its current name).
    pub source_table: TableId,
    /// Where it lands.
    pub target: TargetTable,
    /// Rows in arrival order, split where the shape changed.
    pub segments: Vec<Segment>,
    /// `seq` of the last TRUNCATE in the batch: the target is emptied, and staged rows before
    /// it are discarded, before the rest applies.
    pub truncate_at: Option<u64>,
    /// Source changes (a key-changing update counts once; a TRUNCATE counts once).
    pub changes: u64,
    /// Zero dates written as NULL (the documented zero-date policy).
    pub zero_dates_nulled: u64,
    /// First and last position of the changes.
    pub positions: Option<(Position, Position)>,
    /// True when a delete was written (a key-changing update writes one too).
    pub has_deletes: bool,
    /// True when some row leaves columns unchanged (a Postgres update without its TOASTed
    /// values): the loader applies the rows generation by generation and keeps the target's
    /// value for each unchanged column.
    pub has_unchanged: bool,
    /// Ordering of partial rows once the key index is off: each starts a new generation.
    epoch: Option<u32>,
    /// Rows written, all segments together (a row's number is its place in write order).
    rows: u64,
    /// Which rows are their key's last change (the others are never staged).
    last_change: LastChange,
}

/// Where a table's buffers stood, so a rolled back transaction can be cut off exactly.
#[derive(Debug, Clone, Copy)]
pub struct TableMark {
    rows: u64,
    segments: usize,
    last_len: u64,
    last_rows: u64,
    truncate_at: Option<u64>,
    changes: u64,
    zero_dates_nulled: u64,
    positions: Option<(Position, Position)>,
}

impl TableChanges {
    /// An empty set of changes for `source_table`, landing in `target`.
    pub fn new(source_table: TableId, target: TargetTable) -> Self {
        TableChanges {
            source_table,
            target,
            segments: Vec::new(),
            truncate_at: None,
            changes: 0,
            zero_dates_nulled: 0,
            positions: None,
            has_deletes: false,
            has_unchanged: false,
            epoch: None,
            rows: 0,
            last_change: LastChange::default(),
        }
    }

    /// Encoded bytes held.
    pub fn bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.data.len()).sum()
    }

    /// Bytes held in memory (spilled bytes excluded).
    pub fn memory_bytes(&self) -> usize {
        self.segments.iter().map(|s| s.data.memory_bytes()).sum()
    }

    /// The shape of the last rows, if any rows or shapes were recorded.
    pub fn last_schema(&self) -> Option<&Arc<TableSchema>> {
        self.segments.last().map(|s| &s.schema)
    }

    /// Records where the buffers stand now.
    pub fn mark(&self) -> TableMark {
        let last = self.segments.last();
        TableMark {
            rows: self.rows,
            segments: self.segments.len(),
            last_len: last.map_or(0, |s| s.data.len()),
            last_rows: last.map_or(0, |s| s.rows),
            truncate_at: self.truncate_at,
            changes: self.changes,
            zero_dates_nulled: self.zero_dates_nulled,
            positions: self.positions,
        }
    }

    /// Returns to `mark`, discarding everything recorded since.
    pub fn reset_to(&mut self, mark: TableMark) -> io::Result<()> {
        if self.rows > mark.rows {
            // The discarded rows may have superseded kept ones; undoing that exactly would cost
            // memory on every transaction for a rare event, so this batch keeps every row and
            // leaves the last change per key to the warehouse. (Revived rows keep their
            // generations, which is only exact without partial rows; no source sends both: the
            // binlog never leaves values unchanged, pgoutput never sends a rolled back change.)
            self.last_change.turn_off();
        }
        self.rows = mark.rows;
        self.segments.truncate(mark.segments);
        if let Some(last) = self.segments.last_mut() {
            last.data.truncate(mark.last_len)?;
            last.rows = mark.last_rows;
        }
        self.truncate_at = mark.truncate_at;
        self.changes = mark.changes;
        self.zero_dates_nulled = mark.zero_dates_nulled;
        self.positions = mark.positions;
        Ok(())
    }

    /// True when the rows to stage may hold a key more than once, so the loader must keep the
    /// last change per key itself. Otherwise each key's only live row is its last change.
    pub fn needs_dedupe(&self) -> bool {
        // Across a shape change a key column may have changed type (the same key, another
        // value variant): the exact index cannot vouch for that, the warehouse can.
        !self.last_change.live_rows_unique()
            || (self.segments.len() > 1 && self.last_change.repeated())
    }

    /// The highest generation of a staged row: the loader applies generations 0 to this one in
    /// turn, each holding a key at most once (or deduplicated, when [`Self::needs_dedupe`]).
    pub fn max_generation(&self) -> u32 {
        self.epoch
            .unwrap_or(0)
            .max(self.last_change.max_generation())
    }

    /// Rows that will be staged: each key's last change (every row when the table has no key).
    pub fn live_rows(&self) -> u64 {
        self.rows - self.last_change.dead_rows()
    }

    /// Memory held by the last-change-per-key index.
    pub fn key_index_bytes(&self) -> usize {
        self.last_change.memory_bytes()
    }

    /// Reads segment `segment`'s live rows as `COPY` input, in chunks of about 1 MiB.
    pub fn copy_chunks(&mut self, segment: usize) -> CopyChunks<'_> {
        let first_row = self.segments[..segment.min(self.segments.len())]
            .iter()
            .map(|s| s.rows)
            .sum();
        let rows = self.segments.get(segment).map_or(0, |s| s.rows);
        let filter = self.last_change.any_dead(first_row..first_row + rows);
        CopyChunks {
            changes: self,
            segment,
            offset: 0,
            row: first_row,
            filter,
            partial: Vec::new(),
        }
    }

    /// Moves every buffer of this table to disk under `dir`.
    pub fn spill(&mut self, dir: &Path) -> io::Result<()> {
        for segment in &mut self.segments {
            segment.data.spill(dir)?;
        }
        Ok(())
    }

    /// Encodes one change; `next_seq` is the batch's arrival counter, advanced per row written.
    pub fn push(&mut self, event: &ChangeEvent, next_seq: &mut u64) -> Result<(), EncodeError> {
        let position = event.position;
        self.positions = Some(match self.positions {
            Some((first, _)) => (first, position),
            None => (position, position),
        });
        self.changes += 1;
        if event.op == Op::Truncate {
            self.truncate_at = Some(*next_seq);
            *next_seq += 1;
            return Ok(());
        }
        // An update may leave non-key columns out (Postgres: unchanged TOASTed values).
        let unchanged: Vec<&str> = match (event.op, event.after.as_deref()) {
            (Op::Update, Some(after)) => after
                .iter()
                .zip(&event.table.columns)
                .enumerate()
                .filter(|(i, (v, _))| {
                    matches!(v, Value::Unchanged) && !event.table.primary_key.contains(i)
                })
                .map(|(_, (_, c))| &*c.name)
                .collect(),
            _ => Vec::new(),
        };
        if !unchanged.is_empty() {
            self.has_unchanged = true;
        }
        let same_shape = self.segments.last().is_some_and(|s| {
            (Arc::ptr_eq(&s.schema, &event.table) || s.schema == event.table)
                && (s.with_unchanged || !self.has_unchanged)
        });
        if !same_shape {
            self.segments.push(Segment {
                schema: event.table.clone(),
                with_unchanged: self.has_unchanged,
                data: SpillBuffer::default(),
                rows: 0,
            });
        }
        let mut encoder = RowEncoder {
            event,
            zero_dates_nulled: &mut self.zero_dates_nulled,
        };
        let Some(segment) = self.segments.last_mut() else {
            return Ok(());
        };
        let key = &event.table.primary_key;
        let rows = &mut self.rows;
        let last_change = &mut self.last_change;
        let epoch = &mut self.epoch;
        // Records the row in the key index and writes it with its generation.
        let mut emit = |encoder: &mut RowEncoder,
                        segment: &mut Segment,
                        op: &str,
                        values: &[Value],
                        unchanged: &[&str]|
         -> Result<(), EncodeError> {
            let partial = !unchanged.is_empty();
            let mut generation = if key.is_empty() {
                0
            } else {
                last_change.record(values, key, *rows, partial)
            };
            if !key.is_empty() && !last_change.live_rows_unique() {
                // Without the index, keep arrival order instead: every partial row starts a
                // generation after everything staged before it.
                let current = epoch.get_or_insert(last_change.max_generation() + 1);
                if partial {
                    *current += 1;
                }
                generation = *current;
            }
            encoder.write_row(segment, next_seq, op, values, unchanged, generation)?;
            *rows += 1;
            Ok(())
        };
        let image = |row| image_of(event, row);
        match event.op {
            Op::Insert | Op::Read => {
                let after = image(&event.after)?;
                emit(&mut encoder, segment, "insert", after, &[])?;
            }
            Op::Delete => {
                let before = image(&event.before)?;
                emit(&mut encoder, segment, "delete", before, &[])?;
                self.has_deletes = true;
            }
            Op::Update => {
                let after = image(&event.after)?;
                let before = if event.table.has_key() {
                    Some(image(&event.before)?)
                } else {
                    None
                };
                let key_changed = before.is_some_and(|before| {
                    key.iter().any(|&k| {
                        matches!(
                            (before.get(k), after.get(k)),
                            (Some(b), Some(a)) if b != a && !matches!(a, Value::Unchanged)
                        )
                    })
                });
                match before {
                    Some(before) if key_changed && !unchanged.is_empty() => {
                        // A move: the new row's unchanged values are the old key's, as the
                        // warehouse holds them when this generation applies. The delete of the
                        // old key is staged right before the new row, in the same generation.
                        let mut generation =
                            last_change.record_move(key, before, *rows, after, *rows + 1);
                        if !last_change.live_rows_unique() {
                            let current = epoch.get_or_insert(last_change.max_generation() + 1);
                            *current += 1;
                            generation = *current;
                        }
                        self.has_deletes = true;
                        encoder.write_row(segment, next_seq, "delete", before, &[], generation)?;
                        *rows += 1;
                        encoder.write_row(
                            segment, next_seq, "update", after, &unchanged, generation,
                        )?;
                        *rows += 1;
                    }
                    Some(before) if key_changed => {
                        emit(&mut encoder, segment, "delete", before, &[])?;
                        emit(&mut encoder, segment, "update", after, &[])?;
                        self.has_deletes = true;
                    }
                    _ => emit(&mut encoder, segment, "update", after, &unchanged)?,
                }
            }
            Op::Truncate => {}
        }
        Ok(())
    }
}

/// A segment's rows as `COPY` input, without the rows a later change of their key supersedes.
pub struct CopyChunks<'a> {
    changes: &'a mut TableChanges,
    segment: usize,
    offset: u64,
    /// Number of the next row to scan.
    row: u64,
    /// False when no row of the segment is dead: chunks pass through untouched.
    filter: bool,
    /// The start of a row that continues in the next chunk.
    partial: Vec<u8>,
}

impl CopyChunks<'_> {
    /// The next chunk of whole live rows; `None` at the end.
    pub fn next_chunk(&mut self) -> io::Result<Option<Bytes>> {
        loop {
            let Some(segment) = self.changes.segments.get_mut(self.segment) else {
                return Ok(None);
            };
            let Some(raw) = segment.data.chunk_at(self.offset)? else {
                return Ok(None);
            };
            self.offset += raw.len() as u64;
            if !self.filter {
                return Ok(Some(raw));
            }
            // Rows are single lines: COPY text escapes every newline inside a value.
            let dead = &self.changes.last_change;
            let mut live = Vec::with_capacity(raw.len());
            let mut start = 0;
            for end in memchr::memchr_iter(b'\n', &raw) {
                let line = &raw[start..=end];
                if !dead.is_dead(self.row) {
                    live.extend_from_slice(&self.partial);
                    live.extend_from_slice(line);
                }
                self.partial.clear();
                self.row += 1;
                start = end + 1;
            }
            self.partial.extend_from_slice(&raw[start..]);
            if !live.is_empty() {
                return Ok(Some(Bytes::from(live)));
            }
        }
    }
}

/// The row image an operation needs, or the error naming the change that lacks it.
fn image_of<'e>(
    event: &ChangeEvent,
    row: &'e Option<Vec<Value>>,
) -> Result<&'e [Value], EncodeError> {
    row.as_deref().ok_or(EncodeError::MissingImage {
        table: event.table.id.clone(),
        position: event.position,
        op: event.op,
    })
}

struct RowEncoder<'a> {
    event: &'a ChangeEvent,
    zero_dates_nulled: &'a mut u64,
}

impl RowEncoder<'_> {
    fn write_row(
        &mut self,
        segment: &mut Segment,
        next_seq: &mut u64,
        op: &str,
        row: &[Value],
        unchanged: &[&str],
        generation: u32,
    ) -> Result<(), EncodeError> {
        let with_unchanged = segment.with_unchanged;
        let out = segment.data.writer();
        let start = out.len();
        let result = self.encode(
            out,
            *next_seq,
            op,
            row,
            with_unchanged.then_some((unchanged, generation)),
        );
        if result.is_err() {
            out.truncate(start);
            return result;
        }
        *next_seq += 1;
        segment.rows += 1;
        segment.data.after_write()?;
        Ok(())
    }

    /// Writes one row; `partial` holds the unchanged columns and the generation when the
    /// segment carries them.
    fn encode(
        &mut self,
        out: &mut Vec<u8>,
        seq: u64,
        op: &str,
        row: &[Value],
        partial: Option<(&[&str], u32)>,
    ) -> Result<(), EncodeError> {
        let event = self.event;
        let position = event.position;
        let packed = (u128::from(position.txn) << 32) | u128::from(position.seq);
        let mut num = itoa::Buffer::new();
        out.extend_from_slice(num.format(seq).as_bytes());
        out.push(b'\t');
        out.extend_from_slice(op.as_bytes());
        out.push(b'\t');
        out.extend_from_slice(num.format(packed).as_bytes());
        out.push(b'\t');
        write_timestamp_micros(out, event.transaction.commit_ts_micros);
        if let Some((unchanged, generation)) = partial {
            out.push(b'\t');
            write_name_array(out, unchanged);
            out.push(b'\t');
            out.extend_from_slice(num.format(generation).as_bytes());
        }
        let columns = &event.table.columns;
        if row.len() != columns.len() {
            return Err(self.problem(
                columns.first().map_or("", |c| &c.name),
                format!(
                    "the row has {} values but the table has {} columns",
                    row.len(),
                    columns.len()
                ),
            ));
        }
        // A keyed delete needs only its key: the rest would be parsed by the warehouse for nothing.
        let key = &event.table.primary_key;
        let key_only = op == "delete" && !key.is_empty();
        for (i, (value, column)) in row.iter().zip(columns).enumerate() {
            out.push(b'\t');
            if key_only && !key.contains(&i) {
                out.extend_from_slice(b"\\N");
            } else {
                self.value(out, value, &column.ty, &column.name)?;
            }
        }
        out.push(b'\n');
        Ok(())
    }

    fn problem(&self, column: &str, problem: String) -> EncodeError {
        EncodeError::Value {
            table: self.event.table.id.clone(),
            column: column.to_owned(),
            position: self.event.position,
            problem,
        }
    }

    fn value(
        &mut self,
        out: &mut Vec<u8>,
        value: &Value,
        ty: &ColumnType,
        column: &str,
    ) -> Result<(), EncodeError> {
        let mut num = itoa::Buffer::new();
        match value {
            Value::Null => out.extend_from_slice(b"\\N"),
            // The row's unchanged-columns field names it; the loader keeps the target's value.
            Value::Unchanged => out.extend_from_slice(b"\\N"),
            Value::Bool(b) => out.push(if *b { b't' } else { b'f' }),
            Value::Int(i) => out.extend_from_slice(num.format(*i).as_bytes()),
            Value::UInt(u) => out.extend_from_slice(num.format(*u).as_bytes()),
            Value::Year(y) => out.extend_from_slice(num.format(*y).as_bytes()),
            Value::Float(f) => write_float(out, f64::from(*f), f.is_finite(), || f.to_string()),
            Value::Double(d) => write_float(out, *d, d.is_finite(), || d.to_string()),
            Value::Decimal(text) => out.extend_from_slice(text.as_bytes()),
            Value::Text(text) | Value::Enum(text) | Value::Json(text) => {
                self.text(out, text, column)?
            }
            Value::Set(labels) => {
                for (i, label) in labels.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    self.text(out, label, column)?;
                }
            }
            Value::Bytes(bytes) => write_bytea(out, &[bytes]),
            Value::Geometry { srid, wkb } => write_bytea(out, &[&srid.to_le_bytes(), wkb]),
            Value::Date(date) if date.is_zero() => self.zero_date(out),
            Value::Date(date) => {
                let _ = write!(Utf8Out(out), "{date}");
            }
            Value::DateTime(dt) if dt.date.is_zero() => self.zero_date(out),
            Value::DateTime(dt) => dt.write_text(out),
            Value::Timestamp(0) if matches!(ty, ColumnType::Timestamp { .. }) => {
                self.zero_date(out)
            }
            Value::Timestamp(micros) => write_timestamp_micros(out, *micros),
            Value::Time(micros) => out.extend_from_slice(format_time_micros(*micros).as_bytes()),
            Value::Bit { bits, width } => {
                for i in (0..*width).rev() {
                    out.push(if bits >> i & 1 == 1 { b'1' } else { b'0' });
                }
            }
            // Exact for every interval, whatever the warehouse's IntervalStyle.
            Value::Interval {
                months,
                days,
                micros,
            } => {
                let _ = write!(
                    Utf8Out(out),
                    "{months} mons {days} days {micros} microseconds"
                );
            }
            Value::Infinity { negative } => {
                out.extend_from_slice(if *negative { b"-infinity" } else { b"infinity" })
            }
            // A `real[]` literal of the elements as `real` values are written; braces, commas
            // and float text need no COPY escapes.
            Value::Vector(items) => {
                out.push(b'{');
                for (i, f) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    self.value(out, &Value::Float(*f), ty, column)?;
                }
                out.push(b'}');
            }
        }
        Ok(())
    }

    fn zero_date(&mut self, out: &mut Vec<u8>) {
        *self.zero_dates_nulled += 1;
        out.extend_from_slice(b"\\N");
    }

    fn text(&self, out: &mut Vec<u8>, text: &str, column: &str) -> Result<(), EncodeError> {
        let bytes = text.as_bytes();
        // Most values need no escape: find that out with two vectorised scans.
        if memchr::memchr3(b'\\', b'\t', b'\n', bytes).is_none()
            && memchr::memchr2(b'\r', 0, bytes).is_none()
        {
            out.extend_from_slice(bytes);
            return Ok(());
        }
        let mut from = 0;
        for (i, &b) in bytes.iter().enumerate() {
            let escaped: &[u8] = match b {
                b'\\' => b"\\\\",
                b'\t' => b"\\t",
                b'\n' => b"\\n",
                b'\r' => b"\\r",
                0 => {
                    return Err(self.problem(
                        column,
                        "the text contains a NUL character, which Postgres text cannot hold".into(),
                    ));
                }
                _ => continue,
            };
            out.extend_from_slice(&bytes[from..i]);
            out.extend_from_slice(escaped);
            from = i + 1;
        }
        out.extend_from_slice(&bytes[from..]);
        Ok(())
    }
}

/// `names` as a Postgres `text[]` literal in COPY text form (`\N` when empty): each element
/// double-quoted with `\` and `"` escaped for the array, then every backslash doubled and tab,
/// newline and carriage return escaped for COPY.
fn write_name_array(out: &mut Vec<u8>, names: &[&str]) {
    if names.is_empty() {
        out.extend_from_slice(b"\\N");
        return;
    }
    let mut literal = String::from("{");
    for (i, name) in names.iter().enumerate() {
        if i > 0 {
            literal.push(',');
        }
        literal.push('"');
        for c in name.to_lowercase().chars() {
            if c == '\\' || c == '"' {
                literal.push('\\');
            }
            literal.push(c);
        }
        literal.push('"');
    }
    literal.push('}');
    for b in literal.bytes() {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\t' => out.extend_from_slice(b"\\t"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            other => out.push(other),
        }
    }
}

/// `write!` into a byte vector.
struct Utf8Out<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for Utf8Out<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

fn write_float(out: &mut Vec<u8>, value: f64, finite: bool, text: impl FnOnce() -> String) {
    if finite {
        out.extend_from_slice(text().as_bytes());
    } else if value.is_nan() {
        out.extend_from_slice(b"NaN");
    } else if value > 0.0 {
        out.extend_from_slice(b"Infinity");
    } else {
        out.extend_from_slice(b"-Infinity");
    }
}

/// `bytea` hex input (`\x0a1b`), its backslash escaped for the COPY text format.
fn write_bytea(out: &mut Vec<u8>, parts: &[&[u8]]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.extend_from_slice(b"\\\\x");
    for part in parts {
        out.reserve(part.len() * 2);
        for &b in *part {
            out.push(HEX[usize::from(b >> 4)]);
            out.push(HEX[usize::from(b & 15)]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Column, Date, DateTime, Transaction};

    fn schema(columns: &[(&str, ColumnType)], key: &[usize]) -> Arc<TableSchema> {
        Arc::new(TableSchema {
            id: TableId::new("shop", "t"),
            columns: columns
                .iter()
                .map(|(name, ty)| Column {
                    name: (*name).into(),
                    ty: ty.clone(),
                    nullable: true,
                })
                .collect(),
            primary_key: key.to_vec(),
        })
    }

    fn change(
        table: &Arc<TableSchema>,
        op: Op,
        before: Option<Vec<Value>>,
        after: Option<Vec<Value>>,
    ) -> ChangeEvent {
        ChangeEvent {
            source: "s".into(),
            table: table.clone(),
            op,
            before,
            after,
            position: Position { txn: 7, seq: 2 },
            transaction: Arc::new(Transaction {
                id: "x".into(),
                gtid: None,
                commit_ts_micros: 1_700_000_000_000_000,
                log_coordinate: 7,
            }),
        }
    }

    /// The column types of the tables with unchanged values: INT and TEXT.
    fn int_and_text() -> (ColumnType, ColumnType) {
        let int = ColumnType::Int {
            bits: 32,
            unsigned: false,
        };
        let text = ColumnType::Text {
            max_bytes: None,
            charset: "utf8mb4".into(),
        };
        (int, text)
    }

    /// A table whose only column is its INT key `id`.
    fn id_only_table() -> Arc<TableSchema> {
        schema(
            &[(
                "id",
                ColumnType::Int {
                    bits: 32,
                    unsigned: false,
                },
            )],
            &[0],
        )
    }

    fn target() -> TargetTable {
        TargetTable {
            schema: "s".into(),
            table: "t".into(),
        }
    }

    /// What the loader would stage: the live rows of every segment.
    /// `row` inserted into `t`, staged.
    fn staged_insert(t: &Arc<TableSchema>, row: Vec<Value>) -> TableChanges {
        let mut changes = TableChanges::new(t.id.clone(), target());
        changes
            .push(&change(t, Op::Insert, None, Some(row)), &mut 0)
            .unwrap();
        changes
    }

    fn text_of(changes: &mut TableChanges) -> String {
        let mut all = Vec::new();
        for segment in 0..changes.segments.len() {
            let mut chunks = changes.copy_chunks(segment);
            while let Some(chunk) = chunks.next_chunk().unwrap() {
                all.extend_from_slice(&chunk);
            }
        }
        String::from_utf8(all).unwrap()
    }

    #[test]
    fn values_are_written_as_copy_text() {
        let t = schema(
            &[
                (
                    "id",
                    ColumnType::Int {
                        bits: 64,
                        unsigned: true,
                    },
                ),
                (
                    "s",
                    ColumnType::Text {
                        max_bytes: None,
                        charset: "utf8mb4".into(),
                    },
                ),
                ("b", ColumnType::Binary { max_bytes: None }),
                ("d", ColumnType::Date),
                ("dt", ColumnType::DateTime { fsp: 6 }),
                ("bits", ColumnType::Bit { width: 5 }),
                (
                    "set",
                    ColumnType::Set {
                        labels: Arc::from(vec!["a".to_string(), "b".to_string()]),
                    },
                ),
                ("f", ColumnType::Float),
                ("tm", ColumnType::Time { fsp: 0 }),
            ],
            &[0],
        );
        let row = vec![
            Value::UInt(u64::MAX),
            Value::Text("a\tb\\c\nd🚀".into()),
            Value::Bytes(vec![0, 0xff]),
            Value::Date(Date {
                year: 0,
                month: 0,
                day: 0,
            }),
            Value::DateTime(DateTime {
                date: Date {
                    year: 2024,
                    month: 2,
                    day: 29,
                },
                hour: 23,
                minute: 59,
                second: 58,
                micros: 7,
            }),
            Value::Bit {
                bits: 0b101,
                width: 5,
            },
            Value::Set(vec!["a".into(), "b".into()]),
            Value::Float(f32::NEG_INFINITY),
            Value::Time(-(838 * 3600 + 59 * 60 + 59) * 1_000_000),
        ];
        let mut changes = staged_insert(&t, row);
        assert_eq!(
            text_of(&mut changes),
            "0\tinsert\t30064771074\t2023-11-14T22:13:20Z\t18446744073709551615\ta\\tb\\\\c\\nd🚀\t\\\\x00ff\t\\N\t2024-02-29 23:59:58.000007\t00101\ta,b\t-Infinity\t-838:59:59\n"
        );
        assert_eq!(changes.zero_dates_nulled, 1);
    }

    #[test]
    fn vectors_are_written_as_real_array_literals() {
        let t = schema(
            &[
                (
                    "id",
                    ColumnType::Int {
                        bits: 32,
                        unsigned: false,
                    },
                ),
                (
                    "v",
                    ColumnType::Vector {
                        dimensions: Some(4),
                    },
                ),
                ("empty", ColumnType::Vector { dimensions: None }),
            ],
            &[0],
        );
        let row = vec![
            Value::Int(1),
            Value::Vector(vec![1.1, -1.01, 1e-45, f32::NAN, f32::NEG_INFINITY]),
            Value::Vector(vec![]),
        ];
        let mut changes = staged_insert(&t, row);
        // Shortest round-trip text: `1.1` reads back as the same f32 (as a double it would be
        // 1.100000023841858).
        assert_eq!(
            text_of(&mut changes),
            "0\tinsert\t30064771074\t2023-11-14T22:13:20Z\t1\t{1.1,-1.01,0.000000000000000000000000000000000000000000001,NaN,-Infinity}\t{}\n"
        );
    }

    #[test]
    fn key_changing_updates_become_delete_then_update() {
        let t = id_only_table();
        let mut changes = TableChanges::new(t.id.clone(), target());
        let mut seq = 10;
        let update = change(
            &t,
            Op::Update,
            Some(vec![Value::Int(1)]),
            Some(vec![Value::Int(2)]),
        );
        changes.push(&update, &mut seq).unwrap();
        let text = text_of(&mut changes);
        let ops: Vec<(&str, &str)> = text
            .lines()
            .map(|l| {
                let f: Vec<&str> = l.split('\t').collect();
                (f[1], f[4])
            })
            .collect();
        assert_eq!(ops, vec![("delete", "1"), ("update", "2")]);
        assert_eq!((seq, changes.changes), (12, 1));
    }

    #[test]
    fn a_bad_value_leaves_the_buffer_as_it_was_and_names_the_column() {
        let t = schema(
            &[(
                "s",
                ColumnType::Text {
                    max_bytes: None,
                    charset: "utf8mb4".into(),
                },
            )],
            &[],
        );
        let mut changes = TableChanges::new(t.id.clone(), target());
        let mut seq = 0;
        changes
            .push(
                &change(&t, Op::Insert, None, Some(vec![Value::Text("ok".into())])),
                &mut seq,
            )
            .unwrap();
        let err = changes
            .push(
                &change(&t, Op::Insert, None, Some(vec![Value::Text("a\0b".into())])),
                &mut seq,
            )
            .unwrap_err()
            .to_string();
        assert!(err.contains("column `s`") && err.contains("7.2"), "{err}");
        assert_eq!(text_of(&mut changes).lines().count(), 1);
    }

    #[test]
    fn rollback_marks_restore_memory_and_spilled_buffers() {
        let t = id_only_table();
        let dir = tempfile::tempdir().unwrap();
        for spill in [false, true] {
            let mut changes = TableChanges::new(t.id.clone(), target());
            let mut seq = 0;
            changes
                .push(
                    &change(&t, Op::Insert, None, Some(vec![Value::Int(1)])),
                    &mut seq,
                )
                .unwrap();
            if spill {
                changes.spill(dir.path()).unwrap();
            }
            let mark = changes.mark();
            for i in 0..50_000 {
                changes
                    .push(
                        &change(&t, Op::Insert, None, Some(vec![Value::Int(i)])),
                        &mut seq,
                    )
                    .unwrap();
            }
            changes
                .push(&change(&t, Op::Truncate, None, None), &mut seq)
                .unwrap();
            changes.reset_to(mark).unwrap();
            assert_eq!(changes.truncate_at, None);
            assert_eq!(changes.changes, 1);
            assert_eq!(text_of(&mut changes).lines().count(), 1, "spill={spill}");
        }
    }

    #[test]
    fn only_each_keys_last_change_is_staged_also_across_spilled_chunks() {
        let int = ColumnType::Int {
            bits: 64,
            unsigned: false,
        };
        let t = schema(&[("id", int.clone()), ("v", int)], &[0]);
        let row = |id: i64, v: i64| Some(vec![Value::Int(id), Value::Int(v)]);
        let dir = tempfile::tempdir().unwrap();
        for spill in [false, true] {
            let mut changes = TableChanges::new(t.id.clone(), target());
            if spill {
                changes.spill(dir.path()).unwrap();
            }
            let mut seq = 0;
            // Enough rows that spilled chunks (1 MiB) split rows; every id changes 3 times.
            let ids = 40_000;
            for round in 0..3 {
                for id in 0..ids {
                    let op = if round == 0 { Op::Insert } else { Op::Update };
                    let before = (round > 0).then(|| vec![Value::Int(id), Value::Int(round - 1)]);
                    changes
                        .push(&change(&t, op, before, row(id, round)), &mut seq)
                        .unwrap();
                }
            }
            // Delete the even ids.
            for id in (0..ids).step_by(2) {
                changes
                    .push(&change(&t, Op::Delete, row(id, 2), None), &mut seq)
                    .unwrap();
            }
            assert_eq!(changes.live_rows(), ids as u64, "spill={spill}");
            assert!(!changes.needs_dedupe());
            let text = text_of(&mut changes);
            let staged: Vec<(String, String)> = text
                .lines()
                .map(|line| {
                    let fields: Vec<&str> = line.split('\t').collect();
                    (fields[1].to_owned(), format!("{}={}", fields[4], fields[5]))
                })
                .collect();
            assert_eq!(staged.len(), ids as usize, "spill={spill}");
            for (i, (op, values)) in staged.iter().enumerate() {
                let id = i as i64;
                // Odd ids: their last update, in write order; then the even ids' deletes.
                let (want_op, want) = if i < ids as usize / 2 {
                    ("update", format!("{}=2", 2 * id + 1))
                } else {
                    ("delete", format!("{}=\\N", 2 * (id - ids / 2)))
                };
                assert_eq!((op.as_str(), values.as_str()), (want_op, want.as_str()));
            }
        }
    }

    #[test]
    fn a_rollback_keeps_every_row_and_leaves_the_last_change_to_the_warehouse() {
        let t = id_only_table();
        let mut changes = TableChanges::new(t.id.clone(), target());
        let mut seq = 0;
        let insert = |id| change(&t, Op::Insert, None, Some(vec![Value::Int(id)]));
        changes.push(&insert(1), &mut seq).unwrap();
        changes.push(&insert(1), &mut seq).unwrap();
        let mark = changes.mark();
        changes.push(&insert(1), &mut seq).unwrap();
        changes.reset_to(mark).unwrap();
        assert!(changes.needs_dedupe());
        assert_eq!(text_of(&mut changes).lines().count(), 2);
    }

    #[test]
    fn a_key_change_leaving_values_unchanged_stages_both_halves_in_one_generation() {
        let (int, text) = int_and_text();
        let t = schema(&[("id", int), ("doc", text)], &[0]);
        let row = |id: i64, doc: Value| vec![Value::Int(id), doc];
        let moved = |from, to| {
            change(
                &t,
                Op::Update,
                Some(row(from, Value::Unchanged)),
                Some(row(to, Value::Unchanged)),
            )
        };
        let insert = |id| change(&t, Op::Insert, None, Some(row(id, Value::Text("d".into()))));
        // (op, key, generation) of every staged row: seq, op, position and commit time come
        // first, then (in segments with partial rows) the unchanged columns and the generation.
        let staged = |changes: &mut TableChanges| -> Vec<(String, String, u32)> {
            text_of(changes)
                .lines()
                .map(|line| {
                    let fields: Vec<&str> = line.split('\t').collect();
                    match fields[..] {
                        [_, op, _, _, id, _] => (op.into(), id.into(), 0),
                        [_, op, _, _, _, generation, id, _] => {
                            (op.into(), id.into(), generation.parse().unwrap())
                        }
                        _ => panic!("unexpected row {line:?}"),
                    }
                })
                .collect()
        };
        for rolled_back in [false, true] {
            let mut changes = TableChanges::new(t.id.clone(), target());
            let mut seq = 0;
            changes.push(&insert(1), &mut seq).unwrap();
            if rolled_back {
                // The index is off for the rest of the batch; arrival order decides.
                let mark = changes.mark();
                changes.push(&insert(9), &mut seq).unwrap();
                changes.reset_to(mark).unwrap();
            }
            changes.push(&moved(1, 2), &mut seq).unwrap();
            changes.push(&insert(1), &mut seq).unwrap();
            let rows = staged(&mut changes);
            let generation = |i: usize| rows[i].2;
            assert_eq!(rows.len(), 4, "{rows:?}");
            assert_eq!((&*rows[1].0, &*rows[1].1), ("delete", "1"), "{rows:?}");
            assert_eq!((&*rows[2].0, &*rows[2].1), ("update", "2"), "{rows:?}");
            assert_eq!(generation(1), generation(2), "{rows:?}");
            assert!(generation(0) < generation(1), "{rows:?}");
            // The new row under the old key applies after the move has read the old one: in a
            // later generation, or (without the index) in the same one, after the capture that
            // starts it.
            if rolled_back {
                assert!(generation(1) <= generation(3), "{rows:?}");
            } else {
                assert!(generation(1) < generation(3), "{rows:?}");
            }
        }
    }

    #[test]
    fn rows_leaving_columns_unchanged_name_them_and_chain_their_key() {
        let (int, text) = int_and_text();
        let t = schema(&[("id", int), ("Doc\"x", text.clone()), ("n", text)], &[0]);
        let row = |id: i64, doc: Value, n: &str| vec![Value::Int(id), doc, Value::Text(n.into())];
        let mut changes = TableChanges::new(t.id.clone(), target());
        let mut seq = 0;
        let insert = change(
            &t,
            Op::Insert,
            None,
            Some(row(1, Value::Text("big".into()), "a")),
        );
        changes.push(&insert, &mut seq).unwrap();
        let partial = change(
            &t,
            Op::Update,
            Some(row(1, Value::Unchanged, "a")),
            Some(row(1, Value::Unchanged, "b")),
        );
        changes.push(&partial, &mut seq).unwrap();
        assert!(changes.has_unchanged);
        assert_eq!(changes.max_generation(), 1);
        assert_eq!(
            changes.segments.len(),
            2,
            "partial rows start a segment with the fields"
        );
        let text = text_of(&mut changes);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines.len(),
            2,
            "the insert stays: the update needs its value"
        );
        assert!(
            lines[1].contains("\t{\"doc\\\\\"x\"}\t1\t1\t\\N\tb"),
            "{:?}",
            lines[1]
        );
    }
}
