//! Typed `[[sources]]` entries: what to read, where its tables land, how to start.
//!
//! Invariants of a loaded [`SourceConfig`]: its `id` is unique in the group, its
//! [`SourceConfig::staging_schema`] (the rendered `target_schema`) is a valid warehouse identifier
//! unique in the group, its `target_table` template uses only known placeholders and contains
//! `{table}`, and its `snapshot` mode is one tidemark implements.
//!
//! The keys every source has live here; the settings of one kind live beside that kind's code
//! (`source::<kind>::config`) and a source holds only its own kind's, in [`SourceSettings`]:
//! a key of another kind was refused when the file was loaded.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use super::columns::ColumnRules;
use super::kind::KindTable;
use super::secret::SecretUrl;
use super::template;
use crate::source::mysql::config::MysqlSettings;
use crate::source::postgres::config::PostgresSettings;

/// Default `target_schema` template.
pub(crate) const DEFAULT_TARGET_SCHEMA: &str = "{tenant}_{region}_{function}";
/// Placeholders a `target_schema` template may use.
pub(crate) const TARGET_SCHEMA_PLACEHOLDERS: &[&str] = &["tenant", "region", "function", "id"];
/// Placeholders a `target_table` template may use (`{schema}` is an alias of `{database}`).
pub(crate) const TARGET_TABLE_PLACEHOLDERS: &[&str] = &["database", "schema", "table"];
/// Default `target_table` when the include patterns name exactly one database.
const TARGET_TABLE_ONE_DATABASE: &str = "{table}";
/// Default `target_table` otherwise.
const TARGET_TABLE_MANY_DATABASES: &str = "{database}__{table}";

/// Which database a source reads from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SourceKind {
    /// MySQL or MariaDB, through the row-based binlog.
    Mysql,
    /// Postgres, through logical replication (pgoutput).
    Postgres,
}

impl SourceKind {
    /// Every source kind, in the order messages list them: the one table of source kinds that
    /// parsing and error messages read.
    pub const ALL: [SourceKind; 2] = [SourceKind::Mysql, SourceKind::Postgres];

    /// The name used in the config file.
    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::Mysql => "mysql",
            SourceKind::Postgres => "postgres",
        }
    }

    /// The databases this kind reads, in words, for messages.
    pub fn product(self) -> &'static str {
        match self {
            SourceKind::Mysql => "MySQL or MariaDB",
            SourceKind::Postgres => "Postgres",
        }
    }

    /// The config keys only sources of this kind accept.
    pub fn keys(self) -> &'static [&'static str] {
        match self {
            SourceKind::Mysql => MysqlSettings::KEYS,
            SourceKind::Postgres => PostgresSettings::KEYS,
        }
    }

    /// Schemas never replicated from this kind of source, whatever `include` says.
    pub(crate) fn is_system_schema(self, schema: &str) -> bool {
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

impl KindTable for SourceKind {
    const ALL: &'static [SourceKind] = &SourceKind::ALL;
    const TABLES: &'static str = "sources";

    fn product(self) -> &'static str {
        SourceKind::product(self)
    }

    fn keys(self) -> &'static [&'static str] {
        SourceKind::keys(self)
    }
}

/// When a source's existing rows are copied (docs/snapshots.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SnapshotMode {
    /// Copy every table once, then stream.
    Initial,
    /// Copy every table once, then stop (no change log is read or kept).
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

    /// True when a source in this mode copies its tables at its first start.
    pub fn copies_at_first_start(self) -> bool {
        self != SnapshotMode::Never
    }

    /// True when a source in this mode reads its change log.
    pub fn streams(self) -> bool {
        self != SnapshotMode::InitialOnly
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
#[derive(Debug, Clone, PartialEq)]
pub struct SourceConfig {
    /// Unique id within the group; keys the source's checkpoint.
    pub id: String,
    /// The settings of the source's kind (MySQL/MariaDB or Postgres); the kind is read from them.
    pub settings: SourceSettings,
    /// Connection URL; its password never prints.
    pub url: SecretUrl,
    /// Tenant, `{tenant}` of the `target_schema` template.
    pub tenant: String,
    /// Region, `{region}` of the `target_schema` template.
    pub region: String,
    /// Function (lookup, txn, ...), `{function}` of the `target_schema` template.
    pub function: String,
    /// The warehouse schema this source loads into: the `target_schema` template (default
    /// `{tenant}_{region}_{function}`) rendered and lowercased; a valid identifier, unique in the
    /// group.
    pub target_schema: String,
    /// The `target_table` template, default filled in: `{table}` when every include pattern names
    /// the same literal database, else `{database}__{table}`. Render it with
    /// [`SourceConfig::target_table_name`].
    pub target_table: String,
    /// Tables to replicate (default `*.*`: every non-system table).
    pub include: Vec<TablePattern>,
    /// Tables to leave out even when included.
    pub exclude: Vec<TablePattern>,
    /// `table_names`: source tables `database.table` (exact names) landing in a target table of
    /// their own name (lowercased) instead of the `target_table` template's.
    pub table_names: BTreeMap<String, String>,
    /// `[[sources.columns]]`: columns excluded, masked or renamed, first matching rule wins.
    pub columns: ColumnRules,
    /// When existing rows are copied (docs/snapshots.md).
    pub snapshot: SnapshotMode,
    /// How many chunks of a snapshot are read at once, each on its own source connection.
    pub snapshot_parallelism: usize,
    /// About how many rows one snapshot chunk holds (and one warehouse transaction loads).
    pub snapshot_chunk_rows: u64,
    /// Interval of server heartbeats on an idle connection (default 5s).
    pub heartbeat: Duration,
    /// Where to start when the source has no checkpoint yet (default: the end of the log).
    pub start: StartPosition,
    /// Whether the source runs (`enabled`, default true); a paused source keeps its position.
    pub enabled: bool,
}

/// The settings of one source kind: each variant holds exactly the keys its kind accepts, so a
/// reader of one kind cannot reach another kind's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceSettings {
    /// `kind = "mysql"`: MySQL or MariaDB.
    Mysql(MysqlSettings),
    /// `kind = "postgres"`.
    Postgres(PostgresSettings),
}

impl SourceSettings {
    /// The kind these settings belong to.
    pub fn kind(&self) -> SourceKind {
        match self {
            SourceSettings::Mysql(_) => SourceKind::Mysql,
            SourceSettings::Postgres(_) => SourceKind::Postgres,
        }
    }
}

impl SourceConfig {
    /// Which database the source reads from, as its settings say.
    pub fn kind(&self) -> SourceKind {
        self.settings.kind()
    }

    /// The MySQL settings, when this is a MySQL/MariaDB source.
    pub fn mysql(&self) -> Option<&MysqlSettings> {
        match &self.settings {
            SourceSettings::Mysql(settings) => Some(settings),
            SourceSettings::Postgres(_) => None,
        }
    }

    /// The Postgres settings, when this is a Postgres source.
    pub fn postgres(&self) -> Option<&PostgresSettings> {
        match &self.settings {
            SourceSettings::Postgres(settings) => Some(settings),
            SourceSettings::Mysql(_) => None,
        }
    }

    /// The warehouse schema this source's tables load into: [`SourceConfig::target_schema`]
    /// (rendered, lowercased and validated at load time).
    pub fn staging_schema(&self) -> String {
        self.target_schema.clone()
    }

    /// The warehouse table that source table `database.table` (Postgres: `schema.table`) loads
    /// into: its `table_names` entry when it has one, else the `target_table` template rendered;
    /// lowercased either way. Not validated here: the sink checks the name against the
    /// warehouse's identifier rules.
    pub fn target_table_name(&self, database: &str, table: &str) -> String {
        if !self.table_names.is_empty()
            && let Some(name) = self.table_names.get(&format!("{database}.{table}"))
        {
            return name.clone();
        }
        render_target_table(&self.target_table, database, table)
    }

    /// True when `schema.table` is replicated: matched by `include`, not by `exclude`, and not a
    /// system schema (`mysql`, `sys`, `information_schema`, `performance_schema`; Postgres
    /// `pg_*` and `information_schema`).
    pub fn includes_table(&self, schema: &str, table: &str) -> bool {
        !self.kind().is_system_schema(schema)
            && self.include.iter().any(|p| p.matches(schema, table))
            && !self.exclude.iter().any(|p| p.matches(schema, table))
    }

    /// True when some table of `schema` may be replicated (include patterns only; used to decide
    /// which databases need grants).
    pub fn includes_schema(&self, schema: &str) -> bool {
        !self.kind().is_system_schema(schema)
            && self.include.iter().any(|p| p.matches_schema(schema))
    }
}

/// A checked `target_schema` template rendered with a source's values and lowercased, not yet
/// validated as an identifier.
pub(crate) fn render_target_schema(
    template: &str,
    id: &str,
    tenant: &str,
    region: &str,
    function: &str,
) -> String {
    template::render(
        template,
        &[
            ("tenant", tenant),
            ("region", region),
            ("function", function),
            ("id", id),
        ],
    )
    .to_lowercase()
}

/// A checked `target_table` template rendered for `database.table` and lowercased.
fn render_target_table(template: &str, database: &str, table: &str) -> String {
    template::render(
        template,
        &[
            ("database", database),
            ("schema", database),
            ("table", table),
        ],
    )
    .to_lowercase()
}

/// The `target_table` template used when the key is absent: `{table}` when every pattern of
/// `include` has the same literal (wildcard-free) schema part, else `{database}__{table}`.
pub(crate) fn default_target_table(include: &[TablePattern]) -> &'static str {
    match include.split_first() {
        Some((first, rest))
            if first.has_literal_schema() && rest.iter().all(|p| p.schema == first.schema) =>
        {
            TARGET_TABLE_ONE_DATABASE
        }
        _ => TARGET_TABLE_MANY_DATABASES,
    }
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

/// Glob match with `*` (any run, possibly empty) and `?` (exactly one character).
pub(crate) fn glob_match(pattern: &str, text: &str) -> bool {
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
    fn schema_names() {
        assert_eq!(
            render_target_schema(DEFAULT_TARGET_SCHEMA, "x", "Acme", "IN", "txn"),
            "acme_in_txn"
        );
        assert!(schema_name_problem("acme_in_txn").is_none());
        assert!(schema_name_problem("_x").is_none());
        assert!(schema_name_problem("acme-x_in_txn").is_some());
        assert!(schema_name_problem("1acme").is_some());
        assert!(schema_name_problem(&"a".repeat(128)).is_some());
        assert!(schema_name_problem(&"a".repeat(127)).is_none());
        assert!(schema_name_problem("pg_x").is_some());
    }

    /// The first source of a minimal config whose `[[sources]]` table ends with `extra` lines.
    fn load(kind: &str, extra: &str) -> SourceConfig {
        let url = match kind {
            "mysql" => "mysql://repl:pw@h:3306",
            _ => "postgres://repl:pw@h:5432/app",
        };
        let text = format!(
            "[group]\nname = \"g\"\n[warehouse]\nkind = \"postgres\"\nurl = \"postgres://x@h/db\"\n\
             [[sources]]\nid = \"Acme-1\"\nkind = \"{kind}\"\nurl = \"{url}\"\ntenant = \"Acme\"\n\
             region = \"IN\"\nfunction = \"Txn\"\nsnapshot = \"never\"\n{extra}"
        );
        match crate::config::Config::from_str_with_env(
            &text,
            std::path::Path::new("t.toml"),
            &|_| None,
        ) {
            Ok(config) => config.sources.into_iter().next().expect("one source"),
            Err(e) => panic!("{e}\n{text}"),
        }
    }

    #[test]
    fn target_schema_default_and_templates_render_lowercased() {
        let source = load("mysql", "");
        assert_eq!(source.target_schema, "acme_in_txn");
        assert_eq!(source.staging_schema(), "acme_in_txn");

        let source = load("mysql", "target_schema = \"Raw_{function}_{tenant}\"\n");
        assert_eq!(source.staging_schema(), "raw_txn_acme");

        let source = load("mysql", "target_schema = \"cdc_{region}_{function}\"\n");
        assert_eq!(source.staging_schema(), "cdc_in_txn");

        let source = load("mysql", "target_schema = \"WH\"\n");
        assert_eq!(source.staging_schema(), "wh");
    }

    #[test]
    fn target_schema_renders_id() {
        // `-` is fine in an id, not in a schema: {id} works for ids of letters, digits and _.
        assert_eq!(
            render_target_schema("src_{id}", "Shop_2", "t", "r", "f"),
            "src_shop_2"
        );
        assert_eq!(
            render_target_schema(DEFAULT_TARGET_SCHEMA, "x", "{id}", "r", "f"),
            "{id}_r_f",
            "substituted values are not rendered again"
        );
    }

    #[test]
    fn target_table_default_one_literal_database() {
        for include in [
            "include = [\"shop.*\"]",
            "include = [\"shop.orders\", \"shop.items\"]",
            "include = [\"shop.*\", \"shop.tmp_?\"]",
        ] {
            let source = load("mysql", &format!("{include}\n"));
            assert_eq!(source.target_table, "{table}", "{include}");
            assert_eq!(source.target_table_name("shop", "Orders"), "orders");
        }
    }

    #[test]
    fn target_table_default_several_or_wildcard_databases() {
        for include in [
            "",
            "include = [\"*.*\"]",
            "include = [\"shop.*\", \"billing.invoices\"]",
            "include = [\"shop_*.*\"]",
            "include = [\"shop.*\", \"sho?.*\"]",
            "include = [\"Shop.*\", \"shop.*\"]",
        ] {
            let source = load("mysql", &format!("{include}\n"));
            assert_eq!(source.target_table, "{database}__{table}", "{include}");
            assert_eq!(
                source.target_table_name("Billing", "Invoices"),
                "billing__invoices"
            );
        }
    }

    #[test]
    fn target_table_templates_render_lowercased() {
        let source = load("mysql", "target_table = \"{database}_{table}_V1\"\n");
        assert_eq!(source.target_table, "{database}_{table}_V1");
        assert_eq!(source.target_table_name("Shop", "Orders"), "shop_orders_v1");

        // {schema} is the same value as {database}, natural for Postgres sources.
        let source = load(
            "postgres",
            "include = [\"public.*\", \"audit.*\"]\ntarget_table = \"{schema}_{table}\"\n",
        );
        assert_eq!(source.target_table_name("audit", "Log"), "audit_log");
        assert_eq!(source.target_table_name("public", "log"), "public_log");

        // Runtime names are substituted once, never scanned for placeholders.
        let source = load("mysql", "target_table = \"{table}\"\n");
        assert_eq!(
            source.target_table_name("{table}", "A{database}"),
            "a{database}"
        );
    }

    #[test]
    fn default_target_table_of_patterns() {
        let patterns = |list: &[&str]| -> Vec<TablePattern> {
            list.iter()
                .map(|p| TablePattern::parse(p).expect("pattern"))
                .collect()
        };
        assert_eq!(default_target_table(&patterns(&["shop.*"])), "{table}");
        assert_eq!(
            default_target_table(&patterns(&["shop.a", "shop.b*"])),
            "{table}"
        );
        assert_eq!(
            default_target_table(&patterns(&["shop.*", "app.*"])),
            "{database}__{table}"
        );
        assert_eq!(
            default_target_table(&patterns(&["*.*"])),
            "{database}__{table}"
        );
        assert_eq!(default_target_table(&[]), "{database}__{table}");
    }
}
