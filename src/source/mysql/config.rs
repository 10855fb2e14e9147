//! The settings only a MySQL/MariaDB source has (`server_id`), their default and their checks.
//!
//! Invariant: a [`MysqlSettings`] holds a server id the binlog dump connection may use (1 to
//! 4294967295), configured or derived from the source id; config loading (`crate::config`)
//! builds it and reports a bad value with the file, line and key.

/// `[[sources]]` settings of `kind = "mysql"` (MySQL or MariaDB).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MysqlSettings {
    /// Replica server id used on the binlog dump connection: the configured `server_id`, or
    /// [`derived_server_id`] of the source id.
    pub server_id: u32,
}

impl MysqlSettings {
    /// The config keys these settings are read from: keys only a MySQL source accepts.
    pub const KEYS: &'static [&'static str] = &["server_id"];

    /// The settings of source `source_id`: `server_id` as configured (checked with
    /// [`checked_server_id`] first), else derived from the id.
    pub fn new(source_id: &str, server_id: Option<u32>) -> MysqlSettings {
        MysqlSettings {
            server_id: server_id.unwrap_or_else(|| derived_server_id(source_id)),
        }
    }
}

/// A configured `server_id` as the replica id, or why it cannot be one (the dump protocol
/// carries 32 bits, and 0 means "not a replica").
pub fn checked_server_id(value: i64) -> Result<u32, &'static str> {
    u32::try_from(value).ok().filter(|&n| n > 0).ok_or(
        "must be between 1 and 4294967295 and differ from every server and replica in the MySQL topology",
    )
}

/// The MySQL replica server id used when `server_id` is not configured: the 32-bit FNV-1a hash
/// of the source id mapped into 1073741824..=4294967294, far above the small ids operators
/// usually give their servers. Stable across releases and hosts: changing it is a breaking change.
pub fn derived_server_id(source_id: &str) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    for byte in source_id.bytes() {
        hash ^= u32::from(byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    0x4000_0000 + hash % 0xBFFF_FFFF
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_server_ids_are_stable_and_high() {
        assert_eq!(
            derived_server_id("acme-in-txn"),
            derived_server_id("acme-in-txn")
        );
        assert_ne!(derived_server_id("a"), derived_server_id("b"));
        for id in ["", "a", "acme-in-txn", "zzzzzzzzzzzzzzzzzzzz"] {
            assert!(derived_server_id(id) >= 0x4000_0000);
        }
    }

    #[test]
    fn server_ids_are_32_bit_and_not_zero() {
        assert_eq!(checked_server_id(1), Ok(1));
        assert_eq!(checked_server_id(4_294_967_295), Ok(u32::MAX));
        assert!(checked_server_id(0).is_err());
        assert!(checked_server_id(-1).is_err());
        assert!(checked_server_id(4_294_967_296).is_err());
        assert_eq!(MysqlSettings::new("a", Some(7)).server_id, 7);
        assert_eq!(
            MysqlSettings::new("a", None).server_id,
            derived_server_id("a")
        );
    }
}
