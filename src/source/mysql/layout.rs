//! Table layouts: what one TABLE_MAP event says about a table, computed once per table map and
//! reused for every row that follows it.
//!
//! A layout holds the decoded [`TableSchema`] (names, types, nullability, key from the
//! `binlog_row_metadata=FULL` optional metadata) and a per-column decoding plan, so the per-row
//! hot path never re-parses metadata.

use std::sync::Arc;

use mysql_async::binlog::events::TableMapEvent;

use crate::event::{Row, TableSchema};

/// How to name columns when the table map carries no names (`binlog_row_metadata=MINIMAL`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ColumnNames {
    /// Refuse: an error names the setting to change. The only safe choice for replication.
    #[default]
    Required,
    /// Name columns `@1`, `@2`, ... by position. For offline inspection only.
    Positional,
}

/// Why a table map cannot be turned into a layout.
#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    /// Column names are missing from the table map.
    #[error(
        "table {table}: the binlog carries no column names; set binlog_row_metadata=FULL on the source (SET GLOBAL binlog_row_metadata='FULL' and in my.cnf)"
    )]
    MissingColumnNames {
        /// `database.table`.
        table: String,
    },
    /// The table map is malformed or uses a column type we cannot decode.
    #[error("table {table}: {reason}")]
    Invalid {
        /// `database.table`.
        table: String,
        /// What is wrong.
        reason: String,
    },
}

/// Why a row image cannot be decoded.
#[derive(Debug, thiserror::Error)]
#[error("column {column}: {reason}")]
pub struct DecodeError {
    /// Name of the column being decoded.
    pub column: Arc<str>,
    /// What is wrong.
    pub reason: String,
}

/// A table's schema and per-column decoding plan from one TABLE_MAP event.
#[derive(Debug, Clone)]
pub struct TableLayout {
    /// The table's shape at this position.
    pub schema: Arc<TableSchema>,
}

impl TableLayout {
    /// Builds the layout of a table map.
    pub fn from_table_map(
        _tme: &TableMapEvent<'_>,
        _names: ColumnNames,
    ) -> Result<TableLayout, LayoutError> {
        Err(LayoutError::Invalid {
            table: String::new(),
            reason: "not implemented yet".into(),
        })
    }

    /// Decodes one full row image (null bitmap then values) from the front of `buf`, advancing
    /// it past the row. Every column must be present in the image (`binlog_row_image=FULL`).
    pub fn decode_row(&self, _buf: &mut &[u8]) -> Result<Row, DecodeError> {
        Err(DecodeError {
            column: "".into(),
            reason: "not implemented yet".into(),
        })
    }
}
