//! Which staged row is each key's last change, so a batch stages only those rows.
//!
//! A batch may change one key many times (a backlog read after an outage often does: insert,
//! several updates, delete). The warehouse only needs the last change of each key, so a batch's
//! changes (`sink/changes.rs`) keep every row as written (rows are appended, never moved) and
//! this index marks the earlier ones dead; the loader skips dead rows when it streams the buffer
//! to the warehouse.
//!
//! Unchanged values (a Postgres update that left a TOASTed column out) cannot replace an earlier
//! change of their key: the column's value must come from that earlier change, or from the
//! target. Such a row keeps the previous live row of its key alive and goes one *generation*
//! later; the loader applies generation by generation, each holding a key at most once. A later
//! complete change supersedes the whole chain again.
//!
//! A key change whose new row leaves values unchanged (a *move*: the delete of the old key and the
//! partial row of the new one) takes those values from the old key's row as the warehouse holds
//! it when the move's generation is applied. Both halves therefore go one generation after
//! everything staged before for either key, and the old key's chain up to the move is *pinned*:
//! a later complete change of the old key supersedes only what came after the move, and goes a
//! generation after it, so the moved values are read before they are overwritten.
//!
//! Keys compare exactly: one integer column by value, anything else by an unambiguous byte
//! encoding of its values. When exactness cannot be kept cheaply (an unusual key value, a rolled
//! back transaction whose rows were indexed, more rows than the index can number), the index
//! turns itself off for the rest of the batch: every row stays live and the loader keeps the last
//! change per key in the warehouse instead, as it always could.

use std::mem::size_of;

// A fast seeded hasher: the index takes every staged row, and its keys come from the source.
use foldhash::HashMap;
use foldhash::HashMapExt;

use crate::event::Value;

/// The last change per key of one table's staged rows.
#[derive(Debug, Default)]
pub struct LastChange {
    keys: Keys,
    /// One bit per staged row: set when a later row has the same key.
    dead: Vec<u64>,
    dead_rows: u64,
    /// Bytes of encoded keys held on the heap (the `Encoded` map's boxes).
    key_heap_bytes: usize,
    /// True when some key was written twice (dead rows exist, or would, had the index been on).
    repeated: bool,
    /// Rows of generation 1 and later, and the old-key halves of moves: how they chain.
    chained: HashMap<u32, Link>,
    /// The highest generation handed out.
    max_generation: u32,
}

#[derive(Debug, Default)]
enum Keys {
    /// Nothing indexed yet; the first key chooses the representation.
    #[default]
    Empty,
    /// A single signed integer column.
    Int(HashMap<i64, u32>),
    /// A single unsigned integer column.
    UInt(HashMap<u64, u32>),
    /// Any other key, as the exact encoding of [`encode_key`].
    Encoded(HashMap<Box<[u8]>, u32>),
    /// Exactness could not be kept: no further row is marked dead.
    Off,
}

/// Where a chained row stands in its key's chain.
#[derive(Debug, Clone, Copy)]
struct Link {
    generation: u32,
    /// The key's live row before this one, if any.
    before: Option<u32>,
    /// The old-key half of a move: a later row of the key must not supersede it or the rows
    /// before it, since the move reads the key's row as they leave it.
    pinned: bool,
}

impl LastChange {
    /// Records that staged row `row` (numbered from 0 in write order) changes the key made of
    /// `key` columns of `values`: any earlier row of that key is dead, unless this row is
    /// `partial` (it leaves columns unchanged), which chains it one generation after the key's
    /// previous live row. Returns the row's generation (0 when the index is off: the caller
    /// orders such rows itself).
    pub fn record(&mut self, values: &[Value], key: &[usize], row: u64, partial: bool) -> u32 {
        let Some(row) = self.row_number(row) else {
            return 0;
        };
        let Some(earlier) = self.replace_last(values, key, row) else {
            return 0;
        };
        let Some(earlier) = earlier else {
            return 0;
        };
        self.repeated = true;
        if partial {
            let generation = self.generation(earlier) + 1;
            self.chain(row, generation, Some(earlier), false);
            return generation;
        }
        // A complete change: the chain before it is superseded, back to the latest move that
        // reads it.
        let mut dead = Some(earlier);
        while let Some(earlier) = dead {
            let link = self.chained.get(&earlier).copied();
            if let Some(move_out) = link.filter(|link| link.pinned) {
                let generation = move_out.generation + 1;
                self.chain(row, generation, Some(earlier), false);
                return generation;
            }
            self.mark_dead(u64::from(earlier));
            self.chained.remove(&earlier);
            dead = link.and_then(|link| link.before);
        }
        0
    }

    /// Records a key change whose new row leaves values unchanged: `delete_row` deletes the old
    /// key (`before`), `partial_row` writes the new one (`after`). Returns the generation both go
    /// in (0 when the index is off).
    pub fn record_move(
        &mut self,
        key: &[usize],
        before: &[Value],
        delete_row: u64,
        after: &[Value],
        partial_row: u64,
    ) -> u32 {
        let (Some(delete_row), Some(partial_row)) =
            (self.row_number(delete_row), self.row_number(partial_row))
        else {
            return 0;
        };
        let Some(old) = self.replace_last(before, key, delete_row) else {
            return 0;
        };
        let Some(new) = self.replace_last(after, key, partial_row) else {
            return 0;
        };
        self.repeated |= old.is_some() || new.is_some();
        let after_chain =
            |index: &Self, earlier: Option<u32>| earlier.map_or(0, |row| index.generation(row) + 1);
        let generation = after_chain(self, old).max(after_chain(self, new));
        self.chain(delete_row, generation, old, true);
        self.chain(partial_row, generation, new, false);
        generation
    }

    /// `row` as the index numbers rows; turns the index off past `u32::MAX` rows.
    fn row_number(&mut self, row: u64) -> Option<u32> {
        if matches!(self.keys, Keys::Off) {
            return None;
        }
        let number = u32::try_from(row).ok();
        if number.is_none() {
            self.turn_off();
        }
        number
    }

    /// Makes `row` the last row of its key; returns the key's previous last row, or `None` when
    /// the key could not be indexed (the index is then off).
    fn replace_last(&mut self, values: &[Value], key: &[usize], row: u32) -> Option<Option<u32>> {
        if matches!(self.keys, Keys::Empty) {
            self.keys = match key {
                [k] if matches!(values.get(*k), Some(Value::Int(_))) => Keys::Int(HashMap::new()),
                [k] if matches!(values.get(*k), Some(Value::UInt(_))) => Keys::UInt(HashMap::new()),
                _ => Keys::Encoded(HashMap::new()),
            };
        }
        let earlier = match (&mut self.keys, key) {
            (Keys::Int(map), [k]) => match values.get(*k) {
                Some(Value::Int(v)) => Some(map.insert(*v, row)),
                _ => None,
            },
            (Keys::UInt(map), [k]) => match values.get(*k) {
                Some(Value::UInt(v)) => Some(map.insert(*v, row)),
                _ => None,
            },
            (Keys::Encoded(map), _) => encode_key(values, key).map(|encoded| {
                let len = encoded.len();
                let earlier = map.insert(encoded, row);
                if earlier.is_none() {
                    self.key_heap_bytes += len;
                }
                earlier
            }),
            _ => None,
        };
        if earlier.is_none() {
            self.stop_marking();
        }
        earlier
    }

    fn chain(&mut self, row: u32, generation: u32, before: Option<u32>, pinned: bool) {
        self.max_generation = self.max_generation.max(generation);
        self.chained.insert(
            row,
            Link {
                generation,
                before,
                pinned,
            },
        );
    }

    fn generation(&self, row: u32) -> u32 {
        self.chained.get(&row).map_or(0, |link| link.generation)
    }

    /// The highest generation of a live row (0: one pass applies everything).
    pub fn max_generation(&self) -> u32 {
        self.max_generation
    }

    /// Forgets the index for the rest of the batch: every row is live from now on, and
    /// [`LastChange::live_rows_unique`] is false.
    pub fn turn_off(&mut self) {
        self.stop_marking();
        self.dead = Vec::new();
        self.dead_rows = 0;
    }

    /// Marks no further row dead (the rows marked so far stay dead: the rows that superseded
    /// them are still staged); [`LastChange::live_rows_unique`] is false from now on.
    fn stop_marking(&mut self) {
        self.keys = Keys::Off;
        self.key_heap_bytes = 0;
        self.chained = HashMap::new();
    }

    /// True when the live rows hold each key at most once (false once the index is off: keys
    /// may then repeat unseen).
    pub fn live_rows_unique(&self) -> bool {
        !matches!(self.keys, Keys::Off)
    }

    /// True when some key was written more than once.
    pub fn repeated(&self) -> bool {
        self.repeated
    }

    /// True when row `row` is superseded by a later row of its key.
    pub fn is_dead(&self, row: u64) -> bool {
        let word = (row / 64) as usize;
        self.dead
            .get(word)
            .is_some_and(|bits| bits & (1 << (row % 64)) != 0)
    }

    /// True when any row in `rows` is dead.
    pub fn any_dead(&self, rows: std::ops::Range<u64>) -> bool {
        self.dead_rows > 0 && rows.clone().any(|row| self.is_dead(row))
    }

    /// Rows marked dead.
    pub fn dead_rows(&self) -> u64 {
        self.dead_rows
    }

    /// Memory the index holds, approximately.
    pub fn memory_bytes(&self) -> usize {
        // hashbrown: one control byte per bucket plus the entry.
        fn table<K>(capacity: usize) -> usize {
            capacity * (size_of::<K>() + size_of::<u32>() + 1)
        }
        let keys = match &self.keys {
            Keys::Empty | Keys::Off => 0,
            Keys::Int(map) => table::<i64>(map.capacity()),
            Keys::UInt(map) => table::<u64>(map.capacity()),
            // A boxed key: its pointer and length in the table, its bytes plus allocator
            // rounding on the heap.
            Keys::Encoded(map) => table::<Box<[u8]>>(map.capacity()) + map.len() * 8,
        };
        keys + self.key_heap_bytes + self.dead.capacity() * size_of::<u64>()
    }

    fn mark_dead(&mut self, row: u64) {
        let word = (row / 64) as usize;
        if self.dead.len() <= word {
            self.dead.resize(word + 1, 0);
        }
        let bit = 1 << (row % 64);
        if self.dead[word] & bit == 0 {
            self.dead[word] |= bit;
            self.dead_rows += 1;
        }
    }
}

/// An exact, unambiguous encoding of the key columns of `values`: a tag per value, and a length
/// before every variable-length part. `None` for values a key should not hold (unchanged
/// markers, missing columns).
fn encode_key(values: &[Value], key: &[usize]) -> Option<Box<[u8]>> {
    let mut out = Vec::with_capacity(16);
    fn bytes(out: &mut Vec<u8>, tag: u8, b: &[u8]) {
        out.push(tag);
        out.extend_from_slice(&(b.len() as u64).to_le_bytes());
        out.extend_from_slice(b);
    }
    for &k in key {
        match values.get(k)? {
            Value::Unchanged => return None,
            Value::Null => out.push(0),
            Value::Int(v) => {
                out.push(1);
                out.extend_from_slice(&v.to_le_bytes());
            }
            Value::UInt(v) => {
                out.push(2);
                out.extend_from_slice(&v.to_le_bytes());
            }
            Value::Text(t) => bytes(&mut out, 3, t.as_bytes()),
            Value::Decimal(t) => bytes(&mut out, 4, t.as_bytes()),
            Value::Enum(t) => bytes(&mut out, 5, t.as_bytes()),
            Value::Bytes(b) => bytes(&mut out, 6, b),
            // Rarer key types: their Debug text is exact (derived, field by field).
            other => bytes(&mut out, 7, format!("{other:?}").as_bytes()),
        }
    }
    Some(out.into_boxed_slice())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn live(index: &LastChange, rows: u64) -> Vec<u64> {
        (0..rows).filter(|&r| !index.is_dead(r)).collect()
    }

    #[test]
    fn only_the_last_row_of_each_key_stays_live() {
        let mut index = LastChange::default();
        for (row, id) in [1, 2, 1, 3, 1, 2].into_iter().enumerate() {
            index.record(
                &[Value::Int(id), Value::Text("x".into())],
                &[0],
                row as u64,
                false,
            );
        }
        assert_eq!(live(&index, 6), vec![3, 4, 5]);
        assert!(index.repeated() && index.live_rows_unique());
        assert!(index.any_dead(0..2) && !index.any_dead(3..6));
    }

    #[test]
    fn composite_and_text_keys_compare_exactly() {
        let mut index = LastChange::default();
        let row = |a: &str, b: &str| [Value::Text(a.into()), Value::Text(b.into())];
        // "ab"+"c" and "a"+"bc" must stay two keys.
        index.record(&row("ab", "c"), &[0, 1], 0, false);
        index.record(&row("a", "bc"), &[0, 1], 1, false);
        index.record(&row("ab", "c"), &[0, 1], 2, false);
        assert_eq!(live(&index, 3), vec![1, 2]);
    }

    #[test]
    fn an_unexpected_key_value_stops_the_index_and_keeps_every_later_row() {
        let mut index = LastChange::default();
        index.record(&[Value::Int(1)], &[0], 0, false);
        index.record(&[Value::Int(1)], &[0], 1, false);
        index.record(&[Value::UInt(1)], &[0], 2, false);
        index.record(&[Value::Int(1)], &[0], 3, false);
        // Row 0 was superseded by row 1, which is still staged; nothing after is judged.
        assert_eq!(live(&index, 4), vec![1, 2, 3]);
        assert!(!index.live_rows_unique(), "the warehouse must dedupe");
    }

    #[test]
    fn a_rollback_turns_the_index_off_and_revives_every_row() {
        let mut index = LastChange::default();
        index.record(&[Value::Int(1)], &[0], 0, false);
        index.record(&[Value::Int(1)], &[0], 1, false);
        index.turn_off();
        assert_eq!(live(&index, 2), vec![0, 1]);
        assert!(!index.live_rows_unique());
    }

    #[test]
    fn a_move_goes_after_both_keys_chains_and_pins_the_old_one() {
        let mut index = LastChange::default();
        let k = |id| [Value::Int(id)];
        // Row 0 changes key 1; rows 1 and 2 move it to key 2, leaving values unchanged.
        assert_eq!(index.record(&k(1), &[0], 0, false), 0);
        assert_eq!(index.record_move(&[0], &k(1), 1, &k(2), 2), 1);
        // A new row under key 1 must not supersede row 0: the move reads what it left.
        assert_eq!(index.record(&k(1), &[0], 3, false), 2);
        assert_eq!(live(&index, 4), vec![0, 1, 2, 3]);
        // A complete change of key 2 supersedes the moved-in row only.
        assert_eq!(index.record(&k(2), &[0], 4, false), 0);
        assert_eq!(live(&index, 5), vec![0, 1, 3, 4]);
        // Another complete change of key 1 supersedes row 3, back to the move.
        assert_eq!(index.record(&k(1), &[0], 5, false), 2);
        assert_eq!(live(&index, 6), vec![0, 1, 4, 5]);
        assert_eq!(index.max_generation(), 2);
    }

    #[test]
    fn a_swap_through_a_temporary_key_applies_one_move_per_generation() {
        let mut index = LastChange::default();
        let k = |id| [Value::Int(id)];
        // 1 -> -1, 2 -> 1, -1 -> 2: each move reads the row the previous one left.
        assert_eq!(index.record_move(&[0], &k(1), 0, &k(-1), 1), 0);
        assert_eq!(index.record_move(&[0], &k(2), 2, &k(1), 3), 1);
        assert_eq!(index.record_move(&[0], &k(-1), 4, &k(2), 5), 2);
        assert_eq!(live(&index, 6), vec![0, 1, 2, 3, 4, 5]);
        // A partial change of a moved-in row chains after its move.
        assert_eq!(index.record(&k(2), &[0], 6, true), 3);
    }

    #[test]
    fn partial_changes_chain_generations_until_a_complete_change() {
        let mut index = LastChange::default();
        let key = [Value::Int(7)];
        assert_eq!(index.record(&key, &[0], 0, false), 0);
        assert_eq!(
            index.record(&key, &[0], 1, true),
            1,
            "needs row 0 applied first"
        );
        assert_eq!(index.record(&key, &[0], 2, true), 2);
        assert_eq!(
            index.record(&[Value::Int(8)], &[0], 3, true),
            0,
            "nothing before it"
        );
        assert_eq!(live(&index, 4), vec![0, 1, 2, 3]);
        assert_eq!(index.max_generation(), 2);
        // A complete change supersedes the whole chain.
        assert_eq!(index.record(&key, &[0], 4, false), 0);
        assert_eq!(live(&index, 5), vec![3, 4]);
        assert_eq!(index.record(&key, &[0], 5, true), 1);
    }
}
