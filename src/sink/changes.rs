//! A batch's changes for one target table, each encoded once, as it arrives, by the sink's
//! [`RowEncoder`], with room to spill to disk.
//!
//! Each change becomes rows: `seq` (the row's place in the batch: arrival order, which is source
//! commit order), the operation (`insert`, `update` or `delete`), the change's position and
//! commit time, and a row image. A delete carries the before image; an update the after image;
//! an update that changes a keyed table's primary key is written as a delete of the old key
//! followed by an update of the new one, so "last change per key" stays a simple rule. How a row
//! is written is the encoder's business alone: this module holds its bytes, opaque, knowing only
//! that each row ends with the encoder's terminator.
//!
//! Invariants: a row is written whole or not at all (an encoding error leaves the buffer as it
//! was); [`SpillBuffer::truncate`] restores any earlier length exactly (used to discard a rolled
//! back transaction); [`TableChanges::row_chunks`] hands out whole rows only, each key's last
//! change (see [`super::last_change`]).

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;

use super::TargetTable;
use super::encode::{EncodeError, Partial, Row, RowEncoder, RowOp};
use super::last_change::LastChange;
use crate::event::{ChangeEvent, Op, Position, TableId, TableSchema, Value};

/// Bytes a spilled buffer keeps in memory before writing them to its file.
const SPILL_CHUNK: usize = 1 << 20;

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
    /// Rows carry two more fields: the names of the columns they leave unchanged and their
    /// generation (see [`TableChanges`] and [`Partial`]).
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
    /// Values cut to fit under the sink's documented oversize policy.
    pub truncated_values: u64,
    /// First and last position of the changes.
    pub positions: Option<(Position, Position)>,
    /// True when a delete was written (a key-changing update writes one too).
    pub has_deletes: bool,
    /// True when some row leaves columns unchanged (a source update without its unchanged
    /// TOASTed values, [`Value::Unchanged`]): the loader applies the rows generation by
    /// generation and keeps the target's value for each unchanged column.
    pub has_unchanged: bool,
    /// The end of a table's copy (µs since the epoch, the warehouse's clock): after the rows
    /// apply, the target's rows last loaded before this instant are deleted. They are rows the
    /// source no longer has: every row it has was rewritten by the copy or the stream since.
    pub replaces_rows_loaded_before: Option<i64>,
    /// The rows are copies of a table's existing rows (a snapshot chunk): one per key, each
    /// an insert of a whole row. A sink may load them straight into the target when none of
    /// their keys is there yet.
    pub copied_rows: bool,
    /// Ordering of partial rows once the key index is off: each starts a new generation.
    epoch: Option<u32>,
    /// Rows written, all segments together (a row's number is its place in write order).
    rows: u64,
    /// Which rows are their key's last change (the others are never staged).
    last_change: LastChange,
    /// The sink's format: writes every row.
    encoder: Arc<dyn RowEncoder>,
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
    truncated_values: u64,
    positions: Option<(Position, Position)>,
}

impl TableChanges {
    /// An empty set of changes for `source_table`, landing in `target`, its rows written by
    /// `encoder` (the sink's: [`super::Sink::encoder`]).
    pub fn with_encoder(
        source_table: TableId,
        target: TargetTable,
        encoder: Arc<dyn RowEncoder>,
    ) -> Self {
        TableChanges {
            source_table,
            target,
            segments: Vec::new(),
            truncate_at: None,
            changes: 0,
            zero_dates_nulled: 0,
            truncated_values: 0,
            positions: None,
            has_deletes: false,
            has_unchanged: false,
            replaces_rows_loaded_before: None,
            copied_rows: false,
            epoch: None,
            rows: 0,
            last_change: LastChange::default(),
            encoder,
        }
    }

    /// Encoded bytes held.
    pub fn bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.data.len()).sum()
    }

    /// Records `schema` as the table's shape when no row has: a copied table that is empty
    /// still gets its target table.
    pub fn declare_shape(&mut self, schema: Arc<TableSchema>) {
        if self.segments.is_empty() {
            self.segments.push(Segment {
                schema,
                with_unchanged: false,
                data: SpillBuffer::default(),
                rows: 0,
            });
        }
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
            truncated_values: self.truncated_values,
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
        self.truncated_values = mark.truncated_values;
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

    /// Reads segment `segment`'s live rows, as encoded, in chunks of about 1 MiB.
    pub fn row_chunks(&mut self, segment: usize) -> RowChunks<'_> {
        let first_row = self.segments[..segment.min(self.segments.len())]
            .iter()
            .map(|s| s.rows)
            .sum();
        let rows = self.segments.get(segment).map_or(0, |s| s.rows);
        let filter = self.last_change.any_dead(first_row..first_row + rows);
        let terminator = self.encoder.row_terminator();
        RowChunks {
            changes: self,
            terminator,
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
        // An update may leave non-key columns out (a logical-replication source's unchanged
        // TOASTed values).
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
        let mut writer = RowWriter {
            event,
            encoder: &*self.encoder,
            zero_dates_nulled: &mut self.zero_dates_nulled,
            truncated_values: &mut self.truncated_values,
        };
        let Some(segment) = self.segments.last_mut() else {
            return Ok(());
        };
        let key = &event.table.primary_key;
        let rows = &mut self.rows;
        // Copied rows hold each key once: indexing them would cost a hash insert a row for
        // nothing.
        let indexed = !self.copied_rows;
        let last_change = &mut self.last_change;
        let epoch = &mut self.epoch;
        // Records the row in the key index and writes it with its generation.
        let mut emit = |writer: &mut RowWriter,
                        segment: &mut Segment,
                        op: RowOp,
                        values: &[Value],
                        unchanged: &[&str]|
         -> Result<(), EncodeError> {
            let partial = !unchanged.is_empty();
            let mut generation = if key.is_empty() || !indexed {
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
            writer.write_row(segment, next_seq, op, values, unchanged, generation)?;
            *rows += 1;
            Ok(())
        };
        let image = |row| image_of(event, row);
        match event.op {
            Op::Insert | Op::Read => {
                let after = image(&event.after)?;
                emit(&mut writer, segment, RowOp::Insert, after, &[])?;
            }
            Op::Delete => {
                let before = image(&event.before)?;
                emit(&mut writer, segment, RowOp::Delete, before, &[])?;
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
                        writer.write_row(
                            segment,
                            next_seq,
                            RowOp::Delete,
                            before,
                            &[],
                            generation,
                        )?;
                        *rows += 1;
                        writer.write_row(
                            segment,
                            next_seq,
                            RowOp::Update,
                            after,
                            &unchanged,
                            generation,
                        )?;
                        *rows += 1;
                    }
                    Some(before) if key_changed => {
                        emit(&mut writer, segment, RowOp::Delete, before, &[])?;
                        emit(&mut writer, segment, RowOp::Update, after, &[])?;
                        self.has_deletes = true;
                    }
                    _ => emit(&mut writer, segment, RowOp::Update, after, &unchanged)?,
                }
            }
            Op::Truncate => {}
        }
        Ok(())
    }
}

/// A segment's rows as encoded, without the rows a later change of their key supersedes.
pub struct RowChunks<'a> {
    changes: &'a mut TableChanges,
    /// The byte that ends every row (the encoder's).
    terminator: u8,
    segment: usize,
    offset: u64,
    /// Number of the next row to scan.
    row: u64,
    /// False when no row of the segment is dead: chunks pass through untouched.
    filter: bool,
    /// The start of a row that continues in the next chunk.
    partial: Vec<u8>,
}

impl RowChunks<'_> {
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
            // Every row ends with the terminator, which occurs nowhere else in it.
            let dead = &self.changes.last_change;
            let mut live = Vec::with_capacity(raw.len());
            let mut start = 0;
            for end in memchr::memchr_iter(self.terminator, &raw) {
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

/// Writes rows of one change with the sink's encoder, into a segment's buffer.
struct RowWriter<'a> {
    event: &'a ChangeEvent,
    encoder: &'a dyn RowEncoder,
    zero_dates_nulled: &'a mut u64,
    truncated_values: &'a mut u64,
}

impl RowWriter<'_> {
    /// Encodes one row at the end of `segment`, whole or not at all; `generation` is written
    /// when the segment carries partial rows.
    fn write_row(
        &mut self,
        segment: &mut Segment,
        next_seq: &mut u64,
        op: RowOp,
        values: &[Value],
        unchanged: &[&str],
        generation: u32,
    ) -> Result<(), EncodeError> {
        let row = Row {
            change: self.event,
            seq: *next_seq,
            op,
            values,
            partial: segment.with_unchanged.then_some(Partial {
                unchanged,
                generation,
            }),
        };
        let out = segment.data.writer();
        let start = out.len();
        let encoded = match self.encoder.encode(&row, out) {
            Ok(encoded) => encoded,
            Err(error) => {
                out.truncate(start);
                return Err(error);
            }
        };
        *self.zero_dates_nulled += encoded.zero_dates_nulled;
        *self.truncated_values += encoded.truncated_values;
        *next_seq += 1;
        segment.rows += 1;
        segment.data.after_write()?;
        Ok(())
    }
}

/// A change of `table` in a transaction at a fixed position and commit time, for the tests of
/// this module and of every sink's encoder.
#[cfg(test)]
pub(crate) fn test_change(
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
        transaction: Arc::new(crate::event::Transaction {
            id: "x".into(),
            gtid: None,
            commit_ts_micros: 1_700_000_000_000_000,
            log_coordinate: 7,
        }),
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;
    use crate::event::{Column, ColumnType};
    use crate::sink::encode::Encoded;

    /// A format of its own (`op:value;`) with another terminator than a newline: the batch
    /// must not care.
    #[derive(Debug)]
    struct Semicolons;

    impl RowEncoder for Semicolons {
        fn encode(&self, row: &Row<'_>, out: &mut Vec<u8>) -> Result<Encoded, EncodeError> {
            out.extend_from_slice(row.op.as_str().as_bytes());
            for value in row.values {
                let Value::Int(i) = value else {
                    return Err(EncodeError::Value {
                        table: row.change.table.id.clone(),
                        column: "id".into(),
                        position: row.change.position,
                        problem: "not an integer".into(),
                    });
                };
                write!(out, ":{i}")?;
            }
            out.push(b';');
            Ok(Encoded::default())
        }

        fn row_terminator(&self) -> u8 {
            b';'
        }
    }

    fn change(table: &Arc<TableSchema>, op: Op, image: Value) -> ChangeEvent {
        match op {
            Op::Delete => test_change(table, op, Some(vec![image]), None),
            _ => test_change(table, op, None, Some(vec![image])),
        }
    }

    #[test]
    fn rows_are_cut_at_the_encoders_terminator_and_only_last_changes_are_read() {
        let table = Arc::new(TableSchema {
            id: TableId::new("shop", "t"),
            columns: vec![Column {
                name: "id".into(),
                ty: ColumnType::Int {
                    bits: 64,
                    unsigned: false,
                },
                nullable: false,
            }],
            primary_key: vec![0],
        });
        let target = TargetTable {
            schema: "s".into(),
            table: "t".into(),
        };
        let dir = tempfile::tempdir().unwrap();
        for spill in [false, true] {
            let mut changes =
                TableChanges::with_encoder(table.id.clone(), target.clone(), Arc::new(Semicolons));
            if spill {
                changes.spill(dir.path()).unwrap();
            }
            let mut seq = 0;
            for (op, id) in [(Op::Insert, 1), (Op::Insert, 2), (Op::Delete, 1)] {
                changes
                    .push(&change(&table, op, Value::Int(id)), &mut seq)
                    .unwrap();
            }
            let bad = change(&table, Op::Insert, Value::Text("x".into()));
            assert!(changes.push(&bad, &mut seq).is_err());
            assert_eq!((changes.bytes(), changes.live_rows()), (27, 2));
            let mut read = Vec::new();
            let mut chunks = changes.row_chunks(0);
            while let Some(chunk) = chunks.next_chunk().unwrap() {
                read.extend_from_slice(&chunk);
            }
            assert_eq!(read, b"insert:2;delete:1;", "spill={spill}");
        }
    }
}
