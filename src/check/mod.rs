//! Prerequisite checks: whether each source and the warehouse are ready for tidemark, with the
//! statement or setting that fixes each gap.
//!
//! `tidemark check` prints one [`CheckReport`] per source and one for the warehouse;
//! `tidemark run` checks each source the same way before it reads anything or records a
//! position, and refuses a source whose prerequisites are unmet (the others start). This module
//! only dispatches to each kind's own checks (`source::*::check`, `sink::postgres::check`).

pub mod report;

pub use report::{CheckItem, CheckReport, CheckStatus};

use crate::config::{SourceConfig, SourceKind, WarehouseConfig};
use crate::secrets::Freshness;
use crate::sink::postgres::check::check_postgres_warehouse;
use crate::sink::redshift::check::check_redshift_warehouse;
use crate::source::mysql::check::check_mysql_source;
use crate::source::postgres::check::check_postgres_source;

/// Checks one source's prerequisites, whatever its kind. A URL's secret references are
/// fetched first (a fetch that fails is the report's one failure).
pub async fn check_source(source: &SourceConfig) -> CheckReport {
    let resolved;
    let source = if source.url.is_resolved() {
        source
    } else {
        match source.url.resolve(Freshness::Cached).await {
            Ok(url) => {
                resolved = SourceConfig {
                    url,
                    ..source.clone()
                };
                &resolved
            }
            Err(error) => {
                let mut report = CheckReport::for_source(&source.id, source.url.redacted());
                report.items.push(CheckItem::new(
                    "secrets",
                    CheckStatus::Fail,
                    error.to_string(),
                ));
                return report;
            }
        }
    };
    match source.kind() {
        SourceKind::Mysql => check_mysql_source(source).await,
        SourceKind::Postgres => check_postgres_source(source).await,
    }
}

/// Checks that the warehouse can hold the control tables and the staging schema of each of
/// `sources`.
pub async fn check_warehouse(
    warehouse: &WarehouseConfig,
    sources: &[&SourceConfig],
) -> CheckReport {
    match warehouse {
        WarehouseConfig::Postgres(postgres) => {
            let schemas: Vec<String> = sources.iter().map(|s| s.staging_schema()).collect();
            check_postgres_warehouse(&postgres.url, &schemas).await
        }
        WarehouseConfig::Redshift(redshift) => check_redshift_warehouse(redshift).await,
        // Nothing to connect to and nothing that could be missing: ready by construction.
        WarehouseConfig::Null => {
            let mut report = CheckReport::for_warehouse(warehouse.describe());
            report.items.push(CheckItem::new(
                "kind",
                CheckStatus::Pass,
                "kind = \"null\": every batch is discarded and progress is kept in memory only (lost at exit); for benchmarks and dry runs",
            ));
            report
        }
    }
}
