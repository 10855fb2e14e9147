//! Bodies of the MariaDB-only events (160-163), which `mysql_common` hands over raw.
//!
//! Every parser is bounds-checked: short or garbage input is an error, never a panic.

use super::gtid::{MariadbGtid, MariadbGtidList};

/// MariaDB event type codes.
pub const ANNOTATE_ROWS: u8 = 160;
/// Names the oldest binlog file still needed for crash recovery.
pub const BINLOG_CHECKPOINT: u8 = 161;
/// Starts a transaction (or a standalone DDL) with its GTID.
pub const GTID: u8 = 162;
/// The GTID state at the start of a binlog file.
pub const GTID_LIST: u8 = 163;
/// Binlog encryption starts here.
pub const START_ENCRYPTION: u8 = 164;
/// First and last of the compressed event types (`log_bin_compress=ON`).
pub const COMPRESSED_FIRST: u8 = 165;
/// Last compressed event type.
pub const COMPRESSED_LAST: u8 = 171;

/// GTID flag: the group is a single statement without BEGIN/COMMIT (DDL, non-transactional).
const FL_STANDALONE: u8 = 1;
/// GTID flag: a commit id for group commit follows.
const FL_GROUP_COMMIT_ID: u8 = 2;
/// GTID flags: the group is part of an XA transaction.
const FL_XA: u8 = 64 | 128;

/// A decoded MariaDB GTID event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GtidEvent {
    /// The transaction's GTID.
    pub gtid: MariadbGtid,
    /// True when no BEGIN follows: the next statement is the whole transaction.
    pub standalone: bool,
    /// True for XA PREPARE / XA COMMIT groups.
    pub xa: bool,
}

fn take<'a>(buf: &mut &'a [u8], n: usize, what: &str) -> Result<&'a [u8], String> {
    if buf.len() < n {
        return Err(format!("{what}: need {n} bytes, {} left", buf.len()));
    }
    let (head, tail) = buf.split_at(n);
    *buf = tail;
    Ok(head)
}

fn u32_le(buf: &mut &[u8], what: &str) -> Result<u32, String> {
    let b = take(buf, 4, what)?;
    Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

fn u64_le(buf: &mut &[u8], what: &str) -> Result<u64, String> {
    let b = take(buf, 8, what)?;
    let mut a = [0u8; 8];
    a.copy_from_slice(b);
    Ok(u64::from_le_bytes(a))
}

/// Parses a GTID event body; the server id comes from the event header.
pub fn parse_gtid(mut body: &[u8], server_id: u32) -> Result<GtidEvent, String> {
    let seq = u64_le(&mut body, "GTID sequence number")?;
    let domain = u32_le(&mut body, "GTID domain id")?;
    let flags = take(&mut body, 1, "GTID flags")?[0];
    if flags & FL_GROUP_COMMIT_ID != 0 {
        u64_le(&mut body, "GTID commit id")?;
    }
    Ok(GtidEvent {
        gtid: MariadbGtid {
            domain,
            server: server_id,
            seq,
        },
        standalone: flags & FL_STANDALONE != 0,
        xa: flags & FL_XA != 0,
    })
}

/// Parses a GTID_LIST event body into a GTID position.
pub fn parse_gtid_list(mut body: &[u8]) -> Result<MariadbGtidList, String> {
    let count = u32_le(&mut body, "GTID list count")? & 0x0fff_ffff;
    if body.len() / 16 < count as usize {
        return Err(format!(
            "GTID list claims {count} entries, {} bytes left",
            body.len()
        ));
    }
    let mut list = MariadbGtidList::default();
    for _ in 0..count {
        let domain = u32_le(&mut body, "GTID list domain")?;
        let server = u32_le(&mut body, "GTID list server")?;
        let seq = u64_le(&mut body, "GTID list sequence")?;
        list.apply(MariadbGtid {
            domain,
            server,
            seq,
        });
    }
    Ok(list)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gtid_event_decodes_flags_and_rejects_short_input() {
        let mut body = 42u64.to_le_bytes().to_vec();
        body.extend(7u32.to_le_bytes());
        body.push(FL_STANDALONE);
        let ev = parse_gtid(&body, 3).unwrap();
        assert_eq!(ev.gtid.to_string(), "7-3-42");
        assert!(ev.standalone && !ev.xa);
        for n in 0..body.len() {
            assert!(parse_gtid(&body[..n], 3).is_err());
        }
    }

    #[test]
    fn gtid_list_decodes_entries_and_rejects_lies() {
        let mut body = 2u32.to_le_bytes().to_vec();
        for (d, s, q) in [(0u32, 1u32, 5u64), (1, 2, 9)] {
            body.extend(d.to_le_bytes());
            body.extend(s.to_le_bytes());
            body.extend(q.to_le_bytes());
        }
        assert_eq!(parse_gtid_list(&body).unwrap().to_string(), "0-1-5,1-2-9");
        assert!(parse_gtid_list(&body[..body.len() - 1]).is_err());
        assert!(parse_gtid_list(&u32::MAX.to_le_bytes()).is_err());
    }
}
