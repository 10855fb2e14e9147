//! Typed `[[sources]]` entries: what to read, where its tables land, how to start.
//!
//! Invariants of a loaded [`SourceConfig`]: its `id` is unique in the group, its
//! [`SourceConfig::staging_schema`] is a valid warehouse identifier unique in the group, and its
//! `snapshot` mode is one tidemark implements.

use std::fmt;
use std::time::Duration;

use super::secret::SecretUrl;

/// Which database a source reads from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SourceKind {
    /// MySQL or MariaDB, through the row-based binlog.
    Mysql,
    /// Postgres, through logical replication (pgoutput).
    Postgres,
}

impl SourceKind {
    /// The name used in the config file.
    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::Mysql => "mysql",
            SourceKind::Postgres => "postgres",
        }
    }

    /// Schemas never replicated from this kind of source, whatever `include` says.
    fn is_system_schema(self, schema: &str) -> bool {
        match self {
            SourceKind::Mysql => matches!(
                schema,
                "mysql" | "sys" | "information_schema" | "performance_schema"
            ),
            SourceKind::Postgres => schema == "information_schema" || schema.starts_with("pg_"),
        }
    }
}

impl fmt::Display for SourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// When a source's existing rows are copied (see DESIGN "Snapshots and catch-up").
///
/// All four modes are parsed; only [`SnapshotMode::Never`] is accepted by config loading until
/// snapshots are implemented.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SnapshotMode {
    /// Copy every table once, then stream.
    Initial,
    /// Copy every table once, then stop.
    InitialOnly,
    /// Never copy: only changes from the start position on are replicated.
    Never,
    /// Copy when needed: at first start and after lost log positions.
    WhenNeeded,
}

impl SnapshotMode {
    /// The name used in the config file.
    pub fn as_str(self) -> &'static str {
        match self {
            SnapshotMode::Initial => "initial",
            SnapshotMode::InitialOnly => "initial_only",
            SnapshotMode::Never => "never",
            SnapshotMode::WhenNeeded => "when_needed",
        }
    }

    /// Parses a config value.
    pub fn parse(text: &str) -> Option<Self> {
        [
            SnapshotMode::Initial,
            SnapshotMode::InitialOnly,
            SnapshotMode::Never,
            SnapshotMode::WhenNeeded,
        ]
        .into_iter()
        .find(|mode| mode.as_str() == text)
    }

    /// True when tidemark can run this mode today.
    pub fn is_implemented(self) -> bool {
        self == SnapshotMode::Never
    }
}

/// Where a source that has no checkpoint yet starts reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum StartPosition {
    /// The end of the log when the source is first seen: MySQL/MariaDB the current binlog
    /// position / GTID state, Postgres the point where the slot is created.
    #[default]
    End,
}

/// A `schema.table` glob from `include` / `exclude` (`*` any run of characters, `?` one).
///
/// For MySQL the first part is the database. Matching is case-sensitive, like MySQL on Linux.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TablePattern {
    schema: String,
    table: String,
}

impl TablePattern {
    /// Parses `schema.table`; both parts must be non-empty.
    pub fn parse(text: &str) -> Result<Self, String> {
        match text.split_once('.') {
            Some((schema, table)) if !schema.is_empty() && !table.is_empty() => Ok(TablePattern {
                schema: schema.to_string(),
                table: table.to_string(),
            }),
            _ => Err(format!(
                "`{text}` is not a table pattern: write database.table (Postgres: schema.table), with * and ? as wildcards, e.g. \"shop.*\""
            )),
        }
    }

    /// The schema (MySQL: database) part of the pattern.
    pub fn schema(&self) -> &str {
        &self.schema
    }

    /// The table part of the pattern.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// True when the schema part has no wildcard, so it names exactly one schema.
    pub fn has_literal_schema(&self) -> bool {
        !self.schema.contains(['*', '?'])
    }

    /// True when `schema` can match this pattern for some table.
    pub fn matches_schema(&self, schema: &str) -> bool {
        glob_match(&self.schema, schema)
    }

    /// True when `schema.table` matches this pattern.
    pub fn matches(&self, schema: &str, table: &str) -> bool {
        glob_match(&self.schema, schema) && glob_match(&self.table, table)
    }
}

impl fmt::Display for TablePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.schema, self.table)
    }
}

/// One source of a group, validated.
#[derive(Debug, Clone)]
pub struct SourceConfig {
    /// Unique id within the group; keys the source's checkpoint.
    pub id: String,
    /// MySQL/MariaDB or Postgres.
    pub kind: SourceKind,
    /// Connection URL; its password never prints.
    pub url: SecretUrl,
    /// Tenant, the first part of the staging schema.
    pub tenant: String,
    /// Region, the second part of the staging schema.
    pub region: String,
    /// Function (lookup, txn, ...), the third part of the staging schema.
    pub function: String,
    /// Tables to replicate (default `*.*`: every non-system table).
    pub include: Vec<TablePattern>,
    /// Tables to leave out even when included.
    pub exclude: Vec<TablePattern>,
    /// When existing rows are copied; always [`SnapshotMode::Never`] for now.
    pub snapshot: SnapshotMode,
    /// MySQL replica server id used on the binlog dump connection: the configured `server_id`,
    /// or [`derived_server_id`] of the source id. Unused for Postgres sources.
    pub server_id: u32,
    /// Interval of server heartbeats on an idle connection (default 5s).
    pub heartbeat: Duration,
    /// Where to start when the source has no checkpoint yet (default: the end of the log).
    pub start: StartPosition,
}

impl SourceConfig {
    /// The warehouse schema this source's tables load into: `{tenant}_{region}_{function}`,
    /// lowercased (validated at load time).
    pub fn staging_schema(&self) -> String {
        staging_schema_of(&self.tenant, &self.region, &self.function)
    }

    /// True when `schema.table` is replicated: matched by `include`, not by `exclude`, and not a
    /// system schema (`mysql`, `sys`, `information_schema`, `performance_schema`; Postgres
    /// `pg_*` and `information_schema`).
    pub fn includes_table(&self, schema: &str, table: &str) -> bool {
        !self.kind.is_system_schema(schema)
            && self.include.iter().any(|p| p.matches(schema, table))
            && !self.exclude.iter().any(|p| p.matches(schema, table))
    }

    /// True when some table of `schema` may be replicated (include patterns only; used to decide
    /// which databases need grants).
    pub fn includes_schema(&self, schema: &str) -> bool {
        !self.kind.is_system_schema(schema) && self.include.iter().any(|p| p.matches_schema(schema))
    }
}

/// `{tenant}_{region}_{function}` lowercased, not yet validated.
pub(crate) fn staging_schema_of(tenant: &str, region: &str, function: &str) -> String {
    format!("{tenant}_{region}_{function}").to_lowercase()
}

/// Why `name` cannot be a staging schema, if it cannot: Redshift identifier rules restricted to
/// ASCII (letters, digits, `_`; starting with a letter or `_`; at most 127 bytes), and not a name
/// the warehouse reserves.
pub(crate) fn schema_name_problem(name: &str) -> Option<String> {
    if name.len() > 127 {
        return Some(format!(
            "is {} bytes long; identifiers are at most 127 bytes",
            name.len()
        ));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '_'))
    {
        return Some(format!("contains `{bad}`; use only letters, digits and _"));
    }
    if name.starts_with(|c: char| c.is_ascii_digit()) {
        return Some("starts with a digit; it must start with a letter or _".into());
    }
    if name == "tidemark"
        || name == "public"
        || name == "information_schema"
        || name.starts_with("pg_")
    {
        return Some("is reserved (tidemark, public, information_schema, pg_*)".into());
    }
    None
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

/// Glob match with `*` (any run, possibly empty) and `?` (exactly one character).
fn glob_match(pattern: &str, text: &str) -> bool {
    let pattern: Vec<char> = pattern.chars().collect();
    let text: Vec<char> = text.chars().collect();
    let (mut p, mut t) = (0, 0);
    let mut backtrack: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some('*') => {
                backtrack = Some((p, t));
                p += 1;
            }
            Some(&c) if c == '?' || c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match backtrack {
                Some((star, matched)) => {
                    p = star + 1;
                    t = matched + 1;
                    backtrack = Some((star, matched + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match("*", ""));
        assert!(glob_match("shop", "shop"));
        assert!(glob_match("tmp_*", "tmp_x"));
        assert!(glob_match("*_log", "audit_log"));
        assert!(glob_match("a*b*c", "axxbyyc"));
        assert!(glob_match("t?", "t1"));
        assert!(!glob_match("t?", "t12"));
        assert!(!glob_match("shop", "Shop"));
        assert!(!glob_match("a*b", "axxc"));
    }

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
    fn schema_names() {
        assert_eq!(staging_schema_of("Acme", "IN", "txn"), "acme_in_txn");
        assert!(schema_name_problem("acme_in_txn").is_none());
        assert!(schema_name_problem("_x").is_none());
        assert!(schema_name_problem("acme-x_in_txn").is_some());
        assert!(schema_name_problem("1acme").is_some());
        assert!(schema_name_problem(&"a".repeat(128)).is_some());
        assert!(schema_name_problem(&"a".repeat(127)).is_none());
        assert!(schema_name_problem("pg_x").is_some());
    }
}
