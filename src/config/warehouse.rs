//! Typed `[warehouse]`: which kind of warehouse changes load into, and that kind's settings.
//!
//! Invariant: each variant holds exactly the keys its kind needs, and its settings live beside
//! the kind's sink (`sink::<kind>::config`); keys of another kind are rejected at load time
//! (naming the kind they belong to) rather than ignored. [`WarehouseKind::ALL`] is the one
//! table of kinds that parsing and messages read.

use std::fmt;

use super::kind::KindTable;
use crate::sink::postgres::config::PostgresWarehouseConfig;
use crate::sink::redshift::config::RedshiftConfig;

/// Where changes are loaded.
#[derive(Debug, Clone)]
pub enum WarehouseConfig {
    /// Postgres (local, RDS, Aurora): COPY into staging tables, then MERGE.
    Postgres(PostgresWarehouseConfig),
    /// Amazon Redshift: gzip files in S3, COPY with a manifest, MERGE via the Data API.
    Redshift(Box<RedshiftConfig>),
    /// No warehouse: every batch is discarded and progress is kept in memory only, for
    /// benchmarks and dry runs (`kind = "null"`, no other keys).
    Null,
}

impl WarehouseConfig {
    /// The kind of warehouse.
    pub fn kind(&self) -> WarehouseKind {
        match self {
            WarehouseConfig::Postgres(_) => WarehouseKind::Postgres,
            WarehouseConfig::Redshift(_) => WarehouseKind::Redshift,
            WarehouseConfig::Null => WarehouseKind::Null,
        }
    }

    /// Where the warehouse is, for messages: never a password.
    pub fn describe(&self) -> String {
        match self {
            WarehouseConfig::Postgres(postgres) => postgres.url.redacted(),
            WarehouseConfig::Redshift(redshift) => {
                format!("redshift database {}", redshift.database)
            }
            WarehouseConfig::Null => "null warehouse (nothing is stored)".to_owned(),
        }
    }
}

/// Which kind of warehouse `[warehouse] kind` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WarehouseKind {
    /// `kind = "postgres"`.
    Postgres,
    /// `kind = "redshift"`.
    Redshift,
    /// `kind = "null"`.
    Null,
}

impl WarehouseKind {
    /// Every warehouse kind, in the order messages list them: the one table of warehouse kinds
    /// that parsing and error messages read.
    pub const ALL: [WarehouseKind; 3] = [
        WarehouseKind::Postgres,
        WarehouseKind::Redshift,
        WarehouseKind::Null,
    ];

    /// The name used in the config file.
    pub fn as_str(self) -> &'static str {
        match self {
            WarehouseKind::Postgres => "postgres",
            WarehouseKind::Redshift => "redshift",
            WarehouseKind::Null => "null",
        }
    }

    /// What this kind is, in words, for messages.
    pub fn product(self) -> &'static str {
        match self {
            WarehouseKind::Postgres => "Postgres",
            WarehouseKind::Redshift => "Amazon Redshift",
            WarehouseKind::Null => "no warehouse: batches are discarded",
        }
    }

    /// The config keys this kind accepts besides `kind`.
    pub fn keys(self) -> &'static [&'static str] {
        match self {
            WarehouseKind::Postgres => PostgresWarehouseConfig::KEYS,
            WarehouseKind::Redshift => RedshiftConfig::KEYS,
            // Nothing to reach and nothing to store.
            WarehouseKind::Null => &[],
        }
    }
}

impl fmt::Display for WarehouseKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl KindTable for WarehouseKind {
    const ALL: &'static [WarehouseKind] = &WarehouseKind::ALL;
    const TABLES: &'static str = "warehouses";

    fn product(self) -> &'static str {
        WarehouseKind::product(self)
    }

    fn keys(self) -> &'static [&'static str] {
        WarehouseKind::keys(self)
    }
}
