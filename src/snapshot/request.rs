//! `tidemark snapshot`: asking a source to copy tables again, through the warehouse.
//!
//! The request is a row in the warehouse's control tables, so it reaches the group's running
//! process wherever that runs (it looks every few seconds), or the source's next start; the
//! batch that takes it in removes it in its own transaction, so it is acted on exactly once.

use std::sync::Arc;

use crate::config::Config;
use crate::event::TableId;
use crate::sink::{self, SinkError};

/// Why a request was not recorded.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// No source has the id.
    #[error("no source has id `{id}`; the config has: {known}")]
    UnknownSource {
        /// The id asked for.
        id: String,
        /// The ids the config has.
        known: String,
    },
    /// A `--table` that is not `database.table` (Postgres: `schema.table`).
    #[error("--table {table}: expected database.table (Postgres: schema.table)")]
    BadTable {
        /// As given.
        table: String,
    },
    /// A table the source does not replicate.
    #[error(
        "--table {table}: source `{source_id}` does not replicate it; add it to the source's include (and out of its exclude), restart the group with that config, then ask again"
    )]
    NotIncluded {
        /// The table.
        table: String,
        /// The source.
        source_id: String,
    },
    /// The warehouse could not record it.
    #[error(transparent)]
    Warehouse(#[from] SinkError),
}

/// Records that source `source_id` copies `tables` again (every table, from the current end of
/// its log, when `tables` is empty); returns the request's id.
pub async fn request_snapshot(
    config: &Config,
    source_id: &str,
    tables: &[String],
) -> Result<i64, RequestError> {
    let Some(source) = config.sources.iter().find(|s| s.id == source_id) else {
        return Err(RequestError::UnknownSource {
            id: source_id.to_owned(),
            known: config.source_ids(),
        });
    };
    let mut ids = Vec::new();
    for table in tables {
        let Some((namespace, name)) = table
            .split_once('.')
            .filter(|(namespace, name)| !namespace.is_empty() && !name.is_empty())
        else {
            return Err(RequestError::BadTable {
                table: table.clone(),
            });
        };
        if !source.includes_table(namespace, name) {
            return Err(RequestError::NotIncluded {
                table: table.clone(),
                source_id: source_id.to_owned(),
            });
        }
        ids.push(TableId::new(namespace, name));
    }
    let mut sink = sink::connect(&config.warehouse).await?;
    sink.prepare().await?;
    let source_id: Arc<str> = Arc::from(source_id);
    let tables = (!ids.is_empty()).then_some(ids);
    Ok(sink.request_snapshot(&source_id, tables).await?)
}
