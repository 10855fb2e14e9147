//! The contract between sources and sinks: typed change events and the stream that carries them.
//!
//! A source produces a stream of [`SourceMessage`]s in log (commit) order:
//!
//! ```text
//! Schema* Begin (Schema | Change | Ddl)* (Commit | Rollback)   ... Heartbeat anywhere between transactions
//! ```
//!
//! Guarantees a consumer may rely on:
//! - Changes arrive between `Begin` and `Commit`, in the order the source applied them; the
//!   changes of one primary key therefore arrive in source commit order.
//! - A `Schema` message for a table precedes the first change that uses that shape.
//! - Changes of a transaction that ends in `Rollback` must be discarded, never applied. A source
//!   sends `Rollback` when the log itself rolls back, and when it reconnects in the middle of a
//!   transaction (the transaction is then delivered again, whole).
//! - `Commit` carries the [`ResumePoint`] after the transaction; a consumer records it in the
//!   same warehouse transaction as the data and only then acknowledges it to the source.
//! - Memory: sources stream changes as they decode them; a transaction is never buffered whole.

mod position;
mod schema;
mod value;

use std::sync::Arc;

use serde::Serialize;

pub use position::{GtidState, Position, ResumePoint, binlog_coordinate};
pub use schema::{Column, ColumnType, TableId, TableSchema};
pub(crate) use value::civil_from_days;
pub use value::{
    Date, DateTime, Value, format_time_micros, format_timestamp_micros, to_hex,
    write_timestamp_micros,
};

/// What happened to a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    /// A new row (`after` set).
    Insert,
    /// A changed row (`before` and `after` set; the key may differ between them).
    Update,
    /// A removed row (`before` set).
    Delete,
    /// All rows of the table removed (no row images).
    Truncate,
    /// A row copied by a snapshot (`after` set), not a log change.
    Read,
}

/// One row's values, in the order of its table's `TableSchema::columns`.
pub type Row = Vec<Value>;

/// Identity and timing of one source transaction, shared by all its changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Transaction {
    /// Source-native id: the GTID when there is one, else `file:offset` of its first event.
    pub id: String,
    /// The GTID (`uuid:42`, `uuid:tag:42`, `0-1-42`) when the source assigns them.
    pub gtid: Option<String>,
    /// Commit time in microseconds since the epoch, as precise as the log records it
    /// (MySQL 8: the commit timestamp in the GTID event; otherwise the event header's seconds).
    pub commit_ts_micros: i64,
    /// `Position::txn` of every change in this transaction.
    pub log_coordinate: u64,
}

/// One row change, typed, with everything needed to apply it idempotently.
#[derive(Debug, Clone, PartialEq)]
pub struct ChangeEvent {
    /// Id of the configured source that produced it.
    pub source: Arc<str>,
    /// The table's shape at this position; row values follow its column order.
    pub table: Arc<TableSchema>,
    /// What happened.
    pub op: Op,
    /// Row image before the change (update, delete).
    pub before: Option<Row>,
    /// Row image after the change (insert, update, snapshot read).
    pub after: Option<Row>,
    /// Totally ordered position; `position.seq` is the order within the transaction.
    pub position: Position,
    /// The transaction this change belongs to.
    pub transaction: Arc<Transaction>,
}

/// A statement that changes schema but carries no row images (CREATE, ALTER, DROP, RENAME...).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DdlEvent {
    /// Default database/schema the statement ran in (may be empty).
    pub namespace: String,
    /// The statement text as logged.
    pub statement: String,
    /// Where it sits in the log.
    pub position: Position,
    /// Tables the statement renamed, as (old, new), when the source can tell; their rows
    /// continue under the new name.
    pub renamed: Vec<(TableId, TableId)>,
}

/// One item of a source's stream; see the module docs for the grammar and guarantees.
#[derive(Debug, Clone)]
pub enum SourceMessage {
    /// A transaction starts.
    Begin(Arc<Transaction>),
    /// A table's shape, sent before the first change that uses it and whenever it changes.
    Schema(Arc<TableSchema>),
    /// A row change.
    Change(ChangeEvent),
    /// A schema-changing statement, at its position.
    Ddl(DdlEvent),
    /// The current transaction committed; resume after it from here.
    Commit(ResumePoint),
    /// The current transaction must be discarded.
    Rollback,
    /// No transaction is open and the source is alive at this point (idle servers).
    Heartbeat(ResumePoint),
}
