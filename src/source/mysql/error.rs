//! Errors of the binlog reader. Each names where it happened (file and offset) and, when an
//! operator can fix it, how.

use std::fmt;

use super::layout::{DecodeError, LayoutError};
use crate::error::ErrorKind;

/// A place in a binlog: file name and byte offset of the event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventAt {
    /// Binlog file name (or the path of an offline file).
    pub file: String,
    /// Byte offset of the event's first byte.
    pub pos: u64,
}

impl fmt::Display for EventAt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file, self.pos)
    }
}

/// Everything that can stop the binlog reader.
#[derive(Debug, thiserror::Error)]
pub enum BinlogError {
    /// Talking to the server failed (network, server restart, protocol).
    #[error("source {source_id}: {context}: {error}")]
    Server {
        /// Configured source id.
        source_id: String,
        /// What we were doing.
        context: &'static str,
        /// The driver's error (never contains the password).
        #[source]
        error: mysql_async::Error,
    },
    /// Connecting cannot work until an operator acts: the URL or its TLS settings cannot be
    /// used, or the server failed TLS verification.
    #[error("source {source_id}: {message}")]
    Setup {
        /// Configured source id.
        source_id: String,
        /// What failed, with the host, the setting and the fix (no password).
        message: String,
    },
    /// The binlog connection broke or went silent: reconnecting at `position` continues.
    #[error("source {source_id}: binlog connection lost at {position}: {reason}")]
    ConnectionLost {
        /// Configured source id.
        source_id: String,
        /// Where reading resumes.
        position: String,
        /// What happened (the driver's message, or the silence).
        reason: String,
    },
    /// The requested start position is gone from the server (purged logs, unknown GTIDs).
    #[error(
        "source {source_id}: cannot read the binlog from {position}: {message}. The position is no longer on the server (binlogs purged or GTIDs unknown); the changes since then are lost to the log. To recover: set snapshot = \"when_needed\" on the source to copy its tables again by itself at the next start, or run `tidemark snapshot --config FILE --source {source_id}` once and start tidemark again (either copies from the current end of the log, deleting in the warehouse the rows deleted meanwhile)"
    )]
    PositionLost {
        /// Configured source id.
        source_id: String,
        /// The position we asked for.
        position: String,
        /// The server's message.
        message: String,
    },
    /// A stored checksum does not match the event bytes.
    #[error(
        "binlog {at}: event checksum mismatch (stored {stored:#010x}, computed {computed:#010x}); the binlog is corrupt or was damaged in transit"
    )]
    Checksum {
        /// Where.
        at: EventAt,
        /// CRC32 stored in the event.
        stored: u32,
        /// CRC32 of the bytes we received.
        computed: u32,
    },
    /// The log holds something tidemark does not replicate; the fix says how to avoid it.
    #[error("binlog {at}: {what}. Fix: {fix}")]
    Unsupported {
        /// Where.
        at: EventAt,
        /// What was found.
        what: String,
        /// How to fix the source.
        fix: String,
    },
    /// The event bytes are malformed.
    #[error("binlog {at}: corrupt or truncated event: {reason}")]
    Corrupt {
        /// Where.
        at: EventAt,
        /// What is wrong.
        reason: String,
    },
    /// A table map cannot be used (missing names, unknown type).
    #[error("binlog {at}: {error}")]
    Layout {
        /// Where.
        at: EventAt,
        /// Why.
        #[source]
        error: LayoutError,
    },
    /// A row image cannot be decoded.
    #[error("binlog {at}: table {table}, row {row}: {error}")]
    Row {
        /// Where.
        at: EventAt,
        /// `database.table`.
        table: String,
        /// Index of the row within its rows event.
        row: usize,
        /// Why.
        #[source]
        error: DecodeError,
    },
    /// A GTID or position given by the user or a checkpoint is malformed.
    #[error("invalid start position: {0}")]
    BadStart(String),
}

impl BinlogError {
    /// How the caller should react.
    pub fn kind(&self) -> ErrorKind {
        match self {
            BinlogError::Server { error, .. } => server_error_kind(error),
            BinlogError::ConnectionLost { .. } => ErrorKind::Retry,
            // Waiting never brings a purged log back: the source stops until copied again.
            BinlogError::PositionLost { .. } => ErrorKind::Fatal,
            BinlogError::Unsupported { .. }
            | BinlogError::BadStart(_)
            | BinlogError::Setup { .. } => ErrorKind::Operator,
            BinlogError::Layout {
                error: LayoutError::MissingColumnNames { .. },
                ..
            } => ErrorKind::Operator,
            BinlogError::Checksum { .. }
            | BinlogError::Corrupt { .. }
            | BinlogError::Layout { .. }
            | BinlogError::Row { .. } => ErrorKind::Fatal,
        }
    }
}

impl BinlogError {
    /// True when the error is about a place in the binlog (an event that cannot be replicated or
    /// decoded, a purged position): retrying meets it again even after the server is fixed.
    pub fn stuck_in_log(&self) -> bool {
        match self {
            // Found at no event: the server's setting, fixed by fixing the server.
            BinlogError::Unsupported { at, .. } => !at.file.is_empty(),
            BinlogError::PositionLost { .. }
            | BinlogError::Checksum { .. }
            | BinlogError::Corrupt { .. }
            | BinlogError::Layout { .. }
            | BinlogError::Row { .. } => true,
            BinlogError::Server { .. }
            | BinlogError::Setup { .. }
            | BinlogError::ConnectionLost { .. }
            | BinlogError::BadStart(_) => false,
        }
    }
}

/// MySQL error codes that an operator has to fix (grants, passwords, unknown database).
const OPERATOR_CODES: &[u16] = &[1044, 1045, 1049, 1142, 1143, 1227, 1698, 1226, 3118];

/// Whether a driver error needs an operator (grants, passwords, a bad URL) or a retry (all else:
/// network, restarts, lock timeouts). Shared by the binlog reader and [`super::copy`].
pub(crate) fn server_error_kind(error: &mysql_async::Error) -> ErrorKind {
    match error {
        mysql_async::Error::Server(e) if OPERATOR_CODES.contains(&e.code) => ErrorKind::Operator,
        mysql_async::Error::Url(_) => ErrorKind::Operator,
        _ => ErrorKind::Retry,
    }
}

/// Server error raised when the dump cannot start at the requested position
/// (`ER_MASTER_FATAL_ERROR_READING_BINLOG`).
pub const ER_MASTER_FATAL_ERROR_READING_BINLOG: u16 = 1236;
