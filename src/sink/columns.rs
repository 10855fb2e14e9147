//! What every warehouse's target tables have in common: the names of tidemark's metadata
//! columns, and the rule that turns source column names into target column names.
//!
//! Each sink gives the metadata columns its own types; the names are one contract, which
//! queries, docs and `tidemark status` rely on, whatever the warehouse.

use std::collections::HashSet;

use crate::event::TableSchema;

/// Metadata column: the last operation applied to the row.
pub const OP: &str = "_tidemark_op";
/// Metadata column: the source position of that operation.
pub const POSITION: &str = "_tidemark_position";
/// Metadata column: the source commit time of that operation.
pub const COMMIT_TS: &str = "_tidemark_commit_ts";
/// Metadata column: when tidemark loaded it.
pub const LOADED_AT: &str = "_tidemark_loaded_at";
/// Metadata column of soft deletes (`soft_delete = true`): the source deleted the row, which
/// the target keeps. Only tables of a warehouse with soft deletes have it.
pub const DELETED: &str = "_tidemark_deleted";
/// Staging-only column: arrival order within the batch.
pub const SEQ: &str = "_tidemark_seq";
/// The prefix every metadata column starts with, which source columns may not use.
pub const METADATA_PREFIX: &str = "_tidemark_";

/// The target column names of `schema`'s columns, in order: lowercased, and checked against a
/// warehouse whose identifiers take at most `max_identifier_bytes` (`warehouse` names it in
/// the problem). A problem says which column and how to fix it.
pub fn target_column_names(
    schema: &TableSchema,
    max_identifier_bytes: usize,
    warehouse: &str,
) -> Result<Vec<String>, String> {
    let mut seen = HashSet::new();
    let mut names = Vec::with_capacity(schema.columns.len());
    for column in &schema.columns {
        let name = column.name.to_lowercase();
        if name.len() > max_identifier_bytes {
            return Err(format!(
                "column `{}` of source table {} is longer than {warehouse}'s {max_identifier_bytes}-byte identifiers",
                column.name, schema.id
            ));
        }
        if name.starts_with(METADATA_PREFIX) {
            return Err(format!(
                "source column `{}` uses the prefix {METADATA_PREFIX}, reserved for metadata columns; rename it at the source or exclude the table",
                column.name
            ));
        }
        if !seen.insert(name.clone()) {
            return Err(format!(
                "source table {} has two columns named `{name}` once lowercased",
                schema.id
            ));
        }
        names.push(name);
    }
    Ok(names)
}
