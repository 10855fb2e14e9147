//! A snapshot's state as the warehouse stores it in the source's progress record: which tables
//! it copies, each table's chunks and which of them are done.
//!
//! Chunks loaded beside others are recorded done apart from the state (a
//! [`crate::sink::ChunkDone`] each, merged back by [`SnapshotState::from_progress`]).
//!
//! Invariant: a chunk is marked done only in the warehouse transaction that loaded its rows, so
//! after a crash the committed state names exactly the chunks still to copy. Tables are planned
//! (split into chunks) one at a time, when the copy reaches them; a planned table keeps its
//! chunks, so a resumed copy reads the very ranges it planned.

use serde::{Deserialize, Serialize};

use crate::event::TableId;
use crate::sink::{ChunkDone, SnapshotProgress};

/// Why the snapshot runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// The source's first start (`snapshot = "initial"`, `"initial_only"`, `"when_needed"`).
    Initial,
    /// The source's log position was lost (`snapshot = "when_needed"`).
    LostPosition,
    /// `tidemark snapshot` asked for it.
    Requested,
}

/// One snapshot of a source: its tables, in the order they are copied.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotState {
    /// Why it runs.
    pub reason: Reason,
    /// The source position streaming resumed from when it started (the low watermark).
    pub low_watermark: String,
    /// The tables to copy.
    pub tables: Vec<TableCopy>,
    /// Tables whose changes are no longer applied (kept here, with the state, so a restart
    /// keeps them aside); empty in a record of an earlier release.
    #[serde(default)]
    pub set_aside: Vec<SetAside>,
}

/// A table set aside: its changes could not be applied, so they no longer are, while the
/// source's other tables stream on. Copying the table again brings it back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetAside {
    /// Database (MySQL) or schema (Postgres).
    pub namespace: String,
    /// Table name.
    pub name: String,
    /// The source position of the first change not applied.
    pub position: String,
    /// Why.
    pub cause: String,
}

impl SetAside {
    /// The table's id.
    pub fn id(&self) -> TableId {
        TableId::new(self.namespace.clone(), self.name.clone())
    }
}

/// One table of a snapshot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TableCopy {
    /// Database (MySQL) or schema (Postgres).
    pub namespace: String,
    /// Table name.
    pub name: String,
    /// The chunks, once the table is planned.
    pub chunks: Option<Vec<Chunk>>,
    /// The warehouse clock when the table was planned, before any of its chunks was read: rows
    /// of the target last loaded before it, and not loaded again by the copy or the stream, are
    /// rows the source no longer has.
    pub started_at_micros: Option<i64>,
    /// The target held rows when the table was planned: its last chunk deletes those the copy
    /// and the stream did not load again. (Always, in a state of an earlier release.)
    #[serde(default = "yes")]
    pub target_had_rows: bool,
}

fn yes() -> bool {
    true
}

/// One chunk of a table: a range of its rows, as the source kind stores it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Chunk {
    /// The range (see `source::copy`).
    pub range: serde_json::Value,
    /// Loaded into the warehouse.
    pub done: bool,
    /// Rows loaded, once done.
    pub rows: u64,
}

/// Where one chunk is in the state: table index, chunk index.
pub type ChunkId = (usize, usize);

/// Counts for `tidemark status` and progress lines.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Totals {
    /// Tables in the snapshot.
    pub tables: usize,
    /// Tables whose every chunk is done.
    pub tables_done: usize,
    /// Chunks of the planned tables.
    pub chunks: usize,
    /// Chunks done.
    pub chunks_done: usize,
    /// Rows loaded by done chunks.
    pub rows: u64,
}

impl SnapshotState {
    /// A snapshot of `tables`, none planned yet.
    pub fn new(reason: Reason, low_watermark: String, tables: Vec<TableId>) -> SnapshotState {
        SnapshotState {
            reason,
            low_watermark,
            tables: tables
                .into_iter()
                .map(|t| TableCopy {
                    namespace: t.namespace.to_string(),
                    name: t.name.to_string(),
                    chunks: None,
                    started_at_micros: None,
                    target_had_rows: true,
                })
                .collect(),
            set_aside: Vec::new(),
        }
    }

    /// No copy, only tables set aside: what the progress record holds for a streaming source
    /// with tables set aside.
    pub fn set_aside_only(set_aside: Vec<SetAside>) -> SnapshotState {
        SnapshotState {
            reason: Reason::Requested,
            low_watermark: String::new(),
            tables: Vec::new(),
            set_aside,
        }
    }

    /// True while some table is still to copy (a state can hold only tables set aside).
    pub fn is_copying(&self) -> bool {
        !self.is_complete()
    }

    /// Removes `table` from the copy (it was set aside).
    pub fn remove_table(&mut self, table: &TableId) {
        self.tables.retain(|t| t.id() != *table);
    }

    /// The state stored in a progress record, if it is one this release wrote, with the chunks
    /// recorded loaded apart from it (`chunks_done`) marked done.
    pub fn from_progress(
        progress: &SnapshotProgress,
        chunks_done: &[ChunkDone],
    ) -> Option<SnapshotState> {
        let mut state: SnapshotState = serde_json::from_value(progress.0.clone()).ok()?;
        for done in chunks_done {
            // A record of another copy of the table (planned again since) is not this one's.
            let chunk = state
                .tables
                .iter_mut()
                .find(|t| {
                    t.namespace == done.namespace
                        && t.name == done.name
                        && t.started_at_micros == Some(done.started_at_micros)
                })
                .and_then(|t| t.chunks.as_mut())
                .and_then(|chunks| chunks.get_mut(done.chunk as usize));
            if let Some(chunk) = chunk {
                chunk.done = true;
                chunk.rows = done.rows;
            }
        }
        Some(state)
    }

    /// The record that chunk `id` is loaded, with `rows` rows: `None` for a chunk of a table
    /// not planned.
    pub fn chunk_done(&self, (table, chunk): ChunkId, rows: u64) -> Option<ChunkDone> {
        let copy = self.tables.get(table)?;
        Some(ChunkDone {
            namespace: copy.namespace.clone(),
            name: copy.name.clone(),
            started_at_micros: copy.started_at_micros?,
            chunk: u32::try_from(chunk).ok()?,
            rows,
        })
    }

    /// The state as a progress record stores it.
    pub fn to_progress(&self) -> SnapshotProgress {
        SnapshotProgress(serde_json::to_value(self).unwrap_or(serde_json::Value::Null))
    }

    /// True when every table's every chunk is done.
    pub fn is_complete(&self) -> bool {
        self.tables.iter().all(TableCopy::is_done)
    }

    /// Marks chunk `id` done with `rows` rows.
    pub fn mark_done(&mut self, (table, chunk): ChunkId, rows: u64) {
        if let Some(chunk) = self
            .tables
            .get_mut(table)
            .and_then(|t| t.chunks.as_mut())
            .and_then(|c| c.get_mut(chunk))
        {
            chunk.done = true;
            chunk.rows = rows;
        }
    }

    /// Adds `tables` not already in the snapshot, or copies them again from the start when they
    /// are (a table asked for again is planned anew).
    pub fn add_tables(&mut self, tables: Vec<TableId>) {
        for table in tables {
            let fresh = TableCopy {
                namespace: table.namespace.to_string(),
                name: table.name.to_string(),
                chunks: None,
                started_at_micros: None,
                target_had_rows: true,
            };
            match self.tables.iter_mut().find(|t| t.id() == table) {
                Some(existing) => *existing = fresh,
                None => self.tables.push(fresh),
            }
        }
    }

    /// Counts of tables, chunks and rows.
    pub fn totals(&self) -> Totals {
        let mut totals = Totals {
            tables: self.tables.len(),
            ..Totals::default()
        };
        for table in &self.tables {
            if table.is_done() {
                totals.tables_done += 1;
            }
            for chunk in table.chunks.iter().flatten() {
                totals.chunks += 1;
                if chunk.done {
                    totals.chunks_done += 1;
                    totals.rows += chunk.rows;
                }
            }
        }
        totals
    }
}

impl TableCopy {
    /// The table's id.
    pub fn id(&self) -> TableId {
        TableId::new(self.namespace.clone(), self.name.clone())
    }

    /// True once planned and every chunk is done.
    pub fn is_done(&self) -> bool {
        self.chunks
            .as_ref()
            .is_some_and(|chunks| chunks.iter().all(|c| c.done))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn planned(state: &mut SnapshotState, table: usize, chunks: usize) {
        state.tables[table].chunks = Some(
            (0..chunks)
                .map(|i| Chunk {
                    range: serde_json::json!(i),
                    done: false,
                    rows: 0,
                })
                .collect(),
        );
    }

    #[test]
    fn a_snapshot_is_complete_once_every_chunk_of_every_table_is_done() {
        let mut state = SnapshotState::new(
            Reason::Initial,
            "b.000001:4".into(),
            vec![TableId::new("shop", "a"), TableId::new("shop", "b")],
        );
        assert!(!state.is_complete(), "unplanned tables are not done");
        planned(&mut state, 0, 2);
        planned(&mut state, 1, 1);
        state.mark_done((0, 0), 10);
        state.mark_done((1, 0), 5);
        assert!(!state.is_complete());
        assert_eq!(
            state.totals(),
            Totals {
                tables: 2,
                tables_done: 1,
                chunks: 3,
                chunks_done: 2,
                rows: 15
            }
        );
        state.mark_done((0, 1), 1);
        assert!(state.is_complete());
        let stored = state.to_progress();
        assert_eq!(SnapshotState::from_progress(&stored, &[]), Some(state));
    }

    #[test]
    fn chunks_recorded_apart_are_done_only_in_the_copy_they_belong_to() {
        let mut state = SnapshotState::new(
            Reason::Initial,
            "0/1".into(),
            vec![TableId::new("s", "a"), TableId::new("s", "b")],
        );
        planned(&mut state, 0, 3);
        state.tables[0].started_at_micros = Some(100);
        let record = |name: &str, started_at_micros, chunk| ChunkDone {
            namespace: "s".into(),
            name: name.into(),
            started_at_micros,
            chunk,
            rows: 7,
        };
        let stored = state.to_progress();
        let merged = SnapshotState::from_progress(
            &stored,
            &[
                record("a", 100, 2),
                // An earlier copy of `a`, a chunk past the plan, an unplanned table: ignored.
                record("a", 50, 0),
                record("a", 100, 9),
                record("b", 100, 0),
            ],
        )
        .expect("a state this release wrote");
        let done: Vec<bool> = merged.tables[0]
            .chunks
            .iter()
            .flatten()
            .map(|c| c.done)
            .collect();
        assert_eq!(done, [false, false, true]);
        assert_eq!(merged.totals().rows, 7);
        assert_eq!(merged.chunk_done((0, 2), 7), Some(record("a", 100, 2)));
        assert_eq!(merged.chunk_done((1, 0), 7), None, "b is not planned");
    }

    #[test]
    fn a_table_asked_for_again_is_planned_anew() {
        let mut state = SnapshotState::new(
            Reason::Requested,
            "0/1".into(),
            vec![TableId::new("s", "a")],
        );
        planned(&mut state, 0, 1);
        state.mark_done((0, 0), 3);
        state.add_tables(vec![TableId::new("s", "a"), TableId::new("s", "b")]);
        assert_eq!(state.tables.len(), 2);
        assert!(state.tables.iter().all(|t| t.chunks.is_none()));
    }
}
