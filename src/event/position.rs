//! Where a change sits in its source's log, and where to resume after a commit.
//!
//! Invariants:
//! - `Position` is totally ordered per source and follows commit order: a change that committed
//!   later has a greater position. Two changes never share a position.
//! - `ResumePoint` is recorded only after a whole transaction; resuming from it yields exactly the
//!   transactions that committed after it, none skipped and none repeated.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Sortable coordinate of one change within a source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Position {
    /// Log coordinate of the transaction, increasing in commit order.
    /// MySQL: `(binlog file number << 32) | offset of the transaction's first event`.
    /// Postgres: the commit LSN.
    pub txn: u64,
    /// Order of the change within its transaction, from 0.
    pub seq: u32,
}

impl Position {
    /// The position as one number that sorts the same (`txn * 2^32 + seq`): what warehouses
    /// store in `_tidemark_position`.
    pub fn packed(&self) -> u128 {
        (u128::from(self.txn) << 32) | u128::from(self.seq)
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.txn, self.seq)
    }
}

/// Packs a MySQL binlog file number and byte offset into `Position::txn`.
pub fn binlog_coordinate(file_number: u32, offset: u64) -> u64 {
    (u64::from(file_number) << 32) | (offset & 0xffff_ffff)
}

/// Global transaction id state, in the server's own textual syntax.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "flavor", content = "set", rename_all = "snake_case")]
pub enum GtidState {
    /// MySQL executed GTID set: `uuid:1-5:7,uuid2[:tag]:1-3`.
    Mysql(String),
    /// MariaDB GTID list, one `domain-server-seq` per domain: `0-1-42,1-2-7`.
    Mariadb(String),
}

/// Where a source resumes: just after the last transaction handed out and committed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ResumePoint {
    /// MySQL/MariaDB binlog: the offset after the commit event, plus GTID state when the
    /// server has GTIDs (preferred for resuming: it survives failover and file purges).
    Binlog {
        /// Binlog file name.
        file: String,
        /// Byte offset of the next event to read.
        pos: u64,
        /// GTID state including the last committed transaction.
        gtid: Option<GtidState>,
    },
    /// Postgres: LSN up to which everything is applied. (A struct variant: the serde form is
    /// internally tagged, `{"kind":"lsn","lsn":N}`, which a bare integer cannot be.)
    Lsn {
        /// The WAL position.
        lsn: u64,
    },
}

impl fmt::Display for ResumePoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ResumePoint::Binlog { file, pos, gtid } => {
                write!(f, "{file}:{pos}")?;
                match gtid {
                    Some(GtidState::Mysql(s)) | Some(GtidState::Mariadb(s)) => {
                        write!(f, " (gtid {s})")
                    }
                    None => Ok(()),
                }
            }
            ResumePoint::Lsn { lsn } => write!(f, "{:X}/{:X}", lsn >> 32, lsn & 0xffff_ffff),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn later_files_sort_after_earlier_offsets() {
        let a = Position {
            txn: binlog_coordinate(1, 4_000_000_000),
            seq: 9,
        };
        let b = Position {
            txn: binlog_coordinate(2, 4),
            seq: 0,
        };
        assert!(a < b);
        assert!(Position { txn: 5, seq: 1 } > Position { txn: 5, seq: 0 });
    }

    #[test]
    fn resume_points_round_trip_through_their_stored_json() {
        let lsn = ResumePoint::Lsn {
            lsn: 0x16_B374_D848,
        };
        let json = serde_json::to_string(&lsn).unwrap();
        assert_eq!(json, r#"{"kind":"lsn","lsn":97500059720}"#);
        assert_eq!(serde_json::from_str::<ResumePoint>(&json).unwrap(), lsn);
        assert_eq!(lsn.to_string(), "16/B374D848");
        let binlog = ResumePoint::Binlog {
            file: "b.000004".into(),
            pos: 379,
            gtid: None,
        };
        let json = serde_json::to_string(&binlog).unwrap();
        assert_eq!(
            json,
            r#"{"kind":"binlog","file":"b.000004","pos":379,"gtid":null}"#
        );
        assert_eq!(serde_json::from_str::<ResumePoint>(&json).unwrap(), binlog);
    }
}
