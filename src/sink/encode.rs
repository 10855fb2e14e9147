//! The seam between a batch's changes and a sink's format: each sink hands the batcher a
//! [`RowEncoder`], and every row is encoded once, by it, as the change arrives.
//!
//! The batch ([`super::changes`]) decides which rows exist (a key-changing update is a delete
//! then an update; a delete keeps its before image), numbers them, tracks each key's last change
//! and spills; the encoder decides only how one row is written. Encoders do no I/O.

use std::fmt::Debug;
use std::io;

use crate::event::{ChangeEvent, Op, Position, TableId, Value};

/// Turns one row of a batch into the bytes its sink loads, appended to a buffer.
///
/// What an implementer must guarantee, and the batch relies on:
/// - **Self-delimited rows.** The bytes of one row end with [`RowEncoder::row_terminator`] and
///   hold that byte nowhere else, so the batch can cut its buffers into chunks and drop the rows
///   a later change of their key supersedes, at row boundaries, without knowing the format.
/// - **Deterministic.** The same row gives the same bytes (a batch offered again after a crash
///   loads the same rows).
/// - **Nothing on the side.** The encoder only appends to `out`, and keeps no state between
///   rows (one encoder serves every table of a source). On error it may leave part of the row
///   in `out`: the caller cuts `out` back to where it was.
/// - **Fail loud.** A value the target cannot hold is an [`EncodeError::Value`], never altered
///   silently; values replaced under a documented policy are counted in [`Encoded`].
pub trait RowEncoder: Send + Sync + Debug {
    /// Appends `row`, terminated, to `out`.
    fn encode(&self, row: &Row<'_>, out: &mut Vec<u8>) -> Result<Encoded, EncodeError>;

    /// The byte that ends every encoded row and occurs nowhere else in one.
    fn row_terminator(&self) -> u8;
}

/// One row to encode: a change's image with the fields the batch adds to it.
#[derive(Debug, Clone, Copy)]
pub struct Row<'a> {
    /// The change the row comes from: its table (columns, key), position and transaction.
    pub change: &'a ChangeEvent,
    /// The row's place in its batch (arrival order, which is source commit order).
    pub seq: u64,
    /// What the row does to its key.
    pub op: RowOp,
    /// The image to write, one value per column of `change.table`.
    pub values: &'a [Value],
    /// Present when the row's segment carries partial rows (see [`Partial`]).
    pub partial: Option<Partial<'a>>,
}

/// What a row does to its key in the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowOp {
    /// A new row (also a snapshot read).
    Insert,
    /// The new image of an existing row.
    Update,
    /// The row is gone; only its key columns matter.
    Delete,
}

impl RowOp {
    /// The operation's name as rows carry it: `insert`, `update` or `delete`.
    pub fn as_str(self) -> &'static str {
        match self {
            RowOp::Insert => "insert",
            RowOp::Update => "update",
            RowOp::Delete => "delete",
        }
    }
}

/// The fields of a row in a segment that carries rows leaving values unchanged.
#[derive(Debug, Clone, Copy)]
pub struct Partial<'a> {
    /// Names of the columns the row leaves unchanged (their values are [`Value::Unchanged`]).
    pub unchanged: &'a [&'a str],
    /// The generation the row applies in (see `sink/last_change.rs`).
    pub generation: u32,
}

/// What encoding one row did besides writing it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Encoded {
    /// Zero dates written as NULL (the documented zero-date policy).
    pub zero_dates_nulled: u64,
    /// Values cut to fit their column (a sink's documented oversize policy, e.g. Redshift's
    /// `oversize = "truncate"`).
    pub truncated_values: u64,
}

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
