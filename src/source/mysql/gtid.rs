//! GTID state: MySQL GTID sets (with 8.4 tags) and MariaDB GTID lists.
//!
//! Both are kept in canonical form so that the text stored in a checkpoint round-trips exactly,
//! and so that adding the GTID of each committed transaction yields the set a replica would
//! have executed at that point.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use mysql_async::Sid;

/// Why a GTID text could not be parsed.
#[derive(Debug, thiserror::Error)]
#[error("invalid GTID {kind} `{text}`: {reason}")]
pub struct GtidParseError {
    kind: &'static str,
    text: String,
    reason: String,
}

fn parse_error(kind: &'static str, text: &str, reason: impl Into<String>) -> GtidParseError {
    GtidParseError {
        kind,
        text: text.to_owned(),
        reason: reason.into(),
    }
}

/// A MySQL executed GTID set: per source UUID (and optional tag), disjoint inclusive intervals.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MysqlGtidSet {
    /// Key: (lower-case dashed UUID, tag or ""); value: sorted disjoint inclusive ranges.
    sids: BTreeMap<(String, String), Vec<(u64, u64)>>,
}

impl MysqlGtidSet {
    /// Adds one transaction `uuid[:tag]:gno`, merging adjacent ranges.
    pub fn add(&mut self, uuid: &str, tag: &str, gno: u64) {
        let ranges = self
            .sids
            .entry((uuid.to_ascii_lowercase(), tag.to_owned()))
            .or_default();
        let at = ranges.partition_point(|&(_, end)| end.saturating_add(1) < gno);
        match ranges.get_mut(at) {
            Some(r) if r.0 <= gno && gno <= r.1 => {}
            Some(r) if r.1.saturating_add(1) == gno => {
                r.1 = gno;
                let merges_next = ranges.get(at + 1).is_some_and(|n| n.0 == gno + 1);
                if merges_next {
                    ranges[at].1 = ranges[at + 1].1;
                    ranges.remove(at + 1);
                }
            }
            Some(r) if gno.saturating_add(1) == r.0 => r.0 = gno,
            _ => ranges.insert(at, (gno, gno)),
        }
    }

    /// Adds the inclusive range `start..=end` of `uuid[:tag]` (ignored when empty).
    pub fn add_range(&mut self, uuid: &str, tag: &str, start: u64, end: u64) {
        if start == 0 || start > end {
            return;
        }
        let ranges = self
            .sids
            .entry((uuid.to_ascii_lowercase(), tag.to_owned()))
            .or_default();
        ranges.push((start, end));
        normalize(ranges);
    }

    /// True when the set holds `uuid[:tag]:gno`.
    pub fn contains(&self, uuid: &str, tag: &str, gno: u64) -> bool {
        self.sids
            .get(&(uuid.to_ascii_lowercase(), tag.to_owned()))
            .is_some_and(|r| r.iter().any(|&(a, b)| a <= gno && gno <= b))
    }

    /// True when no GTID is in the set.
    pub fn is_empty(&self) -> bool {
        self.sids.is_empty()
    }

    /// The set in the form COM_BINLOG_DUMP_GTID takes.
    pub fn to_sids(&self) -> Result<Vec<Sid<'static>>, GtidParseError> {
        self.sids
            .iter()
            .map(|(key, ranges)| {
                let text = format_sid(key, ranges);
                Sid::from_str(&text).map_err(|e| parse_error("set", &text, e.to_string()))
            })
            .collect()
    }
}

fn format_sid((uuid, tag): &(String, String), ranges: &[(u64, u64)]) -> String {
    let mut out = uuid.clone();
    if !tag.is_empty() {
        out.push(':');
        out.push_str(tag);
    }
    for &(a, b) in ranges {
        if a == b {
            out.push_str(&format!(":{a}"));
        } else {
            out.push_str(&format!(":{a}-{b}"));
        }
    }
    out
}

impl fmt::Display for MysqlGtidSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.sids.iter().map(|(k, r)| format_sid(k, r)).collect();
        f.write_str(&parts.join(","))
    }
}

impl FromStr for MysqlGtidSet {
    type Err = GtidParseError;

    /// Parses `uuid:1-5:7,uuid2:tag:1-3` (whitespace and newlines as MySQL prints them allowed).
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let mut set = MysqlGtidSet::default();
        let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
        for sid in compact.split(',').filter(|s| !s.is_empty()) {
            let mut parts = sid.split(':');
            let uuid = parts.next().unwrap_or_default();
            if !is_uuid(uuid) {
                return Err(parse_error("set", text, format!("`{uuid}` is not a UUID")));
            }
            let mut tag = String::new();
            for part in parts {
                if part.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') {
                    tag = part.to_ascii_lowercase();
                    continue;
                }
                let (a, b) = match part.split_once('-') {
                    Some((a, b)) => (a, b),
                    None => (part, part),
                };
                let (a, b) = match (a.parse::<u64>(), b.parse::<u64>()) {
                    (Ok(a), Ok(b)) if 1 <= a && a <= b => (a, b),
                    _ => return Err(parse_error("set", text, format!("bad interval `{part}`"))),
                };
                let ranges = set
                    .sids
                    .entry((uuid.to_ascii_lowercase(), tag.clone()))
                    .or_default();
                ranges.push((a, b));
            }
        }
        set.sids.values_mut().for_each(normalize);
        Ok(set)
    }
}

/// Sorts ranges and merges overlapping or adjacent ones.
fn normalize(ranges: &mut Vec<(u64, u64)>) {
    ranges.sort_unstable();
    let mut merged: Vec<(u64, u64)> = Vec::with_capacity(ranges.len());
    for &(a, b) in ranges.iter() {
        match merged.last_mut() {
            Some(last) if a <= last.1.saturating_add(1) => last.1 = last.1.max(b),
            _ => merged.push((a, b)),
        }
    }
    *ranges = merged;
}

fn is_uuid(s: &str) -> bool {
    s.len() == 36
        && s.char_indices().all(|(i, c)| {
            if matches!(i, 8 | 13 | 18 | 23) {
                c == '-'
            } else {
                c.is_ascii_hexdigit()
            }
        })
}

/// Formats 16 raw bytes as a dashed lower-case UUID.
pub fn format_uuid(bytes: &[u8; 16]) -> String {
    let hex = crate::event::to_hex(bytes);
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// One MariaDB GTID: `domain-server-sequence`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MariadbGtid {
    /// Replication domain.
    pub domain: u32,
    /// Originating server id.
    pub server: u32,
    /// Sequence number within the domain.
    pub seq: u64,
}

impl fmt::Display for MariadbGtid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}-{}", self.domain, self.server, self.seq)
    }
}

/// A MariaDB GTID position: the last GTID applied in each domain.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MariadbGtidList {
    domains: BTreeMap<u32, MariadbGtid>,
}

impl MariadbGtidList {
    /// Records `gtid` as the last one applied in its domain.
    pub fn apply(&mut self, gtid: MariadbGtid) {
        self.domains.insert(gtid.domain, gtid);
    }

    /// True when no domain has a position.
    pub fn is_empty(&self) -> bool {
        self.domains.is_empty()
    }
}

impl fmt::Display for MariadbGtidList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.domains.values().map(ToString::to_string).collect();
        f.write_str(&parts.join(","))
    }
}

impl FromStr for MariadbGtidList {
    type Err = GtidParseError;

    /// Parses `0-1-42,1-2-7` (empty text is the empty position).
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let mut list = MariadbGtidList::default();
        for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let nums: Vec<&str> = item.split('-').collect();
            let gtid = match nums.as_slice() {
                [d, s, q] => match (d.parse(), s.parse(), q.parse()) {
                    (Ok(domain), Ok(server), Ok(seq)) => MariadbGtid {
                        domain,
                        server,
                        seq,
                    },
                    _ => return Err(parse_error("list", text, format!("bad GTID `{item}`"))),
                },
                _ => return Err(parse_error("list", text, format!("bad GTID `{item}`"))),
            };
            if list.domains.insert(gtid.domain, gtid).is_some() {
                return Err(parse_error(
                    "list",
                    text,
                    format!("domain {} appears twice", gtid.domain),
                ));
            }
        }
        Ok(list)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const U: &str = "3e11fa47-71ca-11e1-9e33-c80aa9429562";

    #[test]
    fn adding_gtids_merges_ranges() {
        let mut set = MysqlGtidSet::default();
        for gno in [1, 2, 3, 5, 7, 6, 4] {
            set.add(U, "", gno);
        }
        assert_eq!(set.to_string(), format!("{U}:1-7"));
        set.add(U, "blue", 9);
        assert_eq!(set.to_string(), format!("{U}:1-7,{U}:blue:9"));
        assert!(set.contains(U, "", 4) && !set.contains(U, "", 8));
    }

    #[test]
    fn gtid_set_text_round_trips() {
        let text = format!("{}:1-5:7,\n{U}:tag_1:1-3", U.to_uppercase());
        let set: MysqlGtidSet = text.parse().unwrap();
        assert_eq!(set.to_string(), format!("{U}:1-5:7,{U}:tag_1:1-3"));
        assert_eq!(set.to_sids().unwrap().len(), 2);
        assert!("nonsense:1".parse::<MysqlGtidSet>().is_err());
        assert!(format!("{U}:5-1").parse::<MysqlGtidSet>().is_err());
    }

    #[test]
    fn mariadb_list_keeps_last_per_domain() {
        let mut list: MariadbGtidList = "0-1-5,2-3-9".parse().unwrap();
        list.apply(MariadbGtid {
            domain: 0,
            server: 2,
            seq: 6,
        });
        assert_eq!(list.to_string(), "0-2-6,2-3-9");
        assert!("0-1".parse::<MariadbGtidList>().is_err());
        assert!("".parse::<MariadbGtidList>().unwrap().is_empty());
    }
}
