//! The SQL text the Redshift sink sends through the Data API: one function per statement,
//! identifiers always quoted, values always inlined as escaped literals (a
//! `BatchExecuteStatement` takes no parameters).
//!
//! Only what Redshift accepts: no `ON CONFLICT`, no jsonb operators, one `WHEN MATCHED` per
//! MERGE, no TRUNCATE or type change inside a transaction, DELETE without an alias for its
//! target. Redshift reads a backslash in a string literal as an escape, so [`lit`] doubles it.

use crate::sink::TargetTable;

pub use crate::sink::columns::{COMMIT_TS, DELETED, LOADED_AT, OP, POSITION, SEQ};

/// Metadata column (with `oversize = "truncate"` only): a value of the row was cut.
pub const TRUNCATED: &str = "_tidemark_truncated";

/// The metadata columns every target table gets after its source columns, and their types.
pub const METADATA_COLUMNS: [(&str, &str); 4] = [
    (OP, "character varying(6)"),
    (POSITION, "numeric(30,0)"),
    (COMMIT_TS, "timestamp with time zone"),
    (LOADED_AT, "timestamp with time zone"),
];

/// The staged file's leading fields (see `encode.rs`), in order, with their stage types.
pub const STAGED_METADATA: [(&str, &str); 5] = [
    (SEQ, "bigint"),
    (OP, "character varying(6)"),
    (POSITION, "numeric(30,0)"),
    (COMMIT_TS, "timestamp with time zone"),
    (TRUNCATED, "boolean"),
];

/// The longest text a control-table column holds.
pub const CONTROL_TEXT_BYTES: usize = 65_535;
/// The bytes of snapshot state stored per row: its literal, quotes and backslashes doubled,
/// stays within the Data API's 100 KB per statement.
const SNAPSHOT_PART_BYTES: usize = 48 * 1024;

/// Creates the control schema and tables, one statement each (idempotent).
pub fn control_tables() -> Vec<String> {
    vec![
        "CREATE SCHEMA IF NOT EXISTS \"tidemark\"".to_owned(),
        "CREATE TABLE IF NOT EXISTS \"tidemark\".\"progress\" (
    \"source_id\" character varying(512) NOT NULL,
    \"resume_point\" character varying(65535) NOT NULL,
    \"position\" character varying(1024) NOT NULL,
    \"source_commit_ts\" timestamp with time zone,
    \"committed_at\" timestamp with time zone NOT NULL,
    \"last_error\" character varying(65535),
    PRIMARY KEY (\"source_id\"))"
            .to_owned(),
        // A snapshot's state can outgrow one VARCHAR: it is kept in ordered parts.
        "CREATE TABLE IF NOT EXISTS \"tidemark\".\"progress_snapshot\" (
    \"source_id\" character varying(512) NOT NULL,
    \"part\" integer NOT NULL,
    \"state\" character varying(65535) NOT NULL,
    PRIMARY KEY (\"source_id\", \"part\"))"
            .to_owned(),
        "CREATE TABLE IF NOT EXISTS \"tidemark\".\"table_versions\" (
    \"source_id\" character varying(512) NOT NULL,
    \"target_schema\" character varying(127) NOT NULL,
    \"target_table\" character varying(127) NOT NULL,
    \"version\" integer NOT NULL,
    \"columns\" character varying(65535) NOT NULL,
    \"position\" character varying(1024) NOT NULL,
    \"changed_at\" timestamp with time zone NOT NULL,
    PRIMARY KEY (\"source_id\", \"target_schema\", \"target_table\"))"
            .to_owned(),
        "CREATE TABLE IF NOT EXISTS \"tidemark\".\"snapshot_requests\" (
    \"id\" bigint NOT NULL,
    \"source_id\" character varying(512) NOT NULL,
    \"tables\" character varying(65535),
    \"requested_at\" timestamp with time zone NOT NULL,
    PRIMARY KEY (\"id\"))"
            .to_owned(),
        // How far each table of a batch split over several transactions got.
        "CREATE TABLE IF NOT EXISTS \"tidemark\".\"table_progress\" (
    \"source_id\" character varying(512) NOT NULL,
    \"target_schema\" character varying(127) NOT NULL,
    \"target_table\" character varying(127) NOT NULL,
    \"reaches\" numeric(30,0) NOT NULL,
    PRIMARY KEY (\"source_id\", \"target_schema\", \"target_table\"))"
            .to_owned(),
        "CREATE TABLE IF NOT EXISTS \"tidemark\".\"snapshot_chunks\" (
    \"source_id\" character varying(512) NOT NULL,
    \"namespace\" character varying(512) NOT NULL,
    \"name\" character varying(512) NOT NULL,
    \"started_at_micros\" bigint NOT NULL,
    \"chunk\" integer NOT NULL,
    \"rows\" bigint NOT NULL,
    \"loaded_at\" timestamp with time zone NOT NULL,
    PRIMARY KEY (\"source_id\", \"namespace\", \"name\", \"started_at_micros\", \"chunk\"))"
            .to_owned(),
    ]
}

/// `"name"` with embedded quotes doubled.
pub fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `schema.table`, quoted.
pub fn table(t: &TargetTable) -> String {
    format!("{}.{}", ident(&t.schema), ident(&t.table))
}

/// `text` as a string literal: quotes doubled, backslashes doubled (Redshift reads `\` as an
/// escape in literals).
pub fn lit(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('\'');
    for c in text.chars() {
        match c {
            '\'' => out.push_str("''"),
            '\\' => out.push_str("\\\\"),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// A timestamp literal `micros` µs after the epoch, or NULL.
pub fn micros_lit(micros: Option<i64>) -> String {
    match micros {
        Some(m) => format!("TIMESTAMP 'epoch' + {m} * INTERVAL '1 microsecond'"),
        None => "NULL".to_owned(),
    }
}

/// The progress row of `source_id`: resume point, source commit time and commit time as text
/// (`YYYY-MM-DD HH24:MI:SS.US`, UTC), last error.
pub fn read_progress(source_id: &str) -> String {
    format!(
        "SELECT \"resume_point\", TO_CHAR(\"source_commit_ts\", 'YYYY-MM-DD HH24:MI:SS.US'), \
         TO_CHAR(\"committed_at\", 'YYYY-MM-DD HH24:MI:SS.US'), \"last_error\" \
         FROM \"tidemark\".\"progress\" WHERE \"source_id\" = {}",
        lit(source_id)
    )
}

/// The snapshot state parts of `source_id`, in order.
pub fn read_snapshot_state(source_id: &str) -> String {
    format!(
        "SELECT \"state\" FROM \"tidemark\".\"progress_snapshot\" WHERE \"source_id\" = {} ORDER BY \"part\"",
        lit(source_id)
    )
}

/// The table versions of `source_id`.
pub fn read_table_versions(source_id: &str) -> String {
    format!(
        "SELECT \"target_schema\", \"target_table\", \"version\", \"columns\", \"position\" \
         FROM \"tidemark\".\"table_versions\" WHERE \"source_id\" = {} \
         ORDER BY \"target_schema\", \"target_table\"",
        lit(source_id)
    )
}

/// The chunks recorded loaded for `source_id`.
pub fn read_chunks(source_id: &str) -> String {
    format!(
        "SELECT \"namespace\", \"name\", \"started_at_micros\", \"chunk\", \"rows\" \
         FROM \"tidemark\".\"snapshot_chunks\" WHERE \"source_id\" = {}",
        lit(source_id)
    )
}

/// Replaces the progress of `source_id`: the row (its `last_error` cleared) and the snapshot
/// state's parts. `source_commit_ts` NULL keeps the one recorded before.
pub fn write_progress(
    source_id: &str,
    resume_point: &str,
    position: &str,
    source_commit_micros: Option<i64>,
    snapshot: Option<&str>,
) -> Vec<String> {
    let id = lit(source_id);
    let commit_ts = micros_lit(source_commit_micros);
    let mut statements = vec![
        format!(
            "UPDATE \"tidemark\".\"progress\" SET \"resume_point\" = {}, \"position\" = {}, \
             \"source_commit_ts\" = COALESCE({commit_ts}, \"source_commit_ts\"), \
             \"committed_at\" = SYSDATE, \"last_error\" = NULL WHERE \"source_id\" = {id}",
            lit(resume_point),
            lit(position)
        ),
        format!(
            "INSERT INTO \"tidemark\".\"progress\" (\"source_id\", \"resume_point\", \"position\", \
             \"source_commit_ts\", \"committed_at\") SELECT {id}, {}, {}, {commit_ts}, SYSDATE \
             WHERE NOT EXISTS (SELECT 1 FROM \"tidemark\".\"progress\" WHERE \"source_id\" = {id})",
            lit(resume_point),
            lit(position)
        ),
        format!("DELETE FROM \"tidemark\".\"progress_snapshot\" WHERE \"source_id\" = {id}"),
    ];
    if let Some(state) = snapshot {
        for (part, piece) in pieces(state, SNAPSHOT_PART_BYTES).enumerate() {
            statements.push(format!(
                "INSERT INTO \"tidemark\".\"progress_snapshot\" (\"source_id\", \"part\", \"state\") \
                 VALUES ({id}, {part}, {})",
                lit(piece)
            ));
        }
    }
    statements
}

/// `text` cut into pieces of at most `max` bytes, at character boundaries.
fn pieces(text: &str, max: usize) -> impl Iterator<Item = &str> {
    let mut rest = text;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut end = rest.len().min(max);
        while !rest.is_char_boundary(end) {
            end -= 1;
        }
        let (piece, tail) = rest.split_at(end);
        rest = tail;
        Some(piece)
    })
}

/// Records why `source_id` stopped.
pub fn record_error(source_id: &str, error: &str) -> String {
    let mut end = error.len().min(CONTROL_TEXT_BYTES / 2);
    while !error.is_char_boundary(end) {
        end -= 1;
    }
    format!(
        "UPDATE \"tidemark\".\"progress\" SET \"last_error\" = {} WHERE \"source_id\" = {}",
        lit(&error[..end]),
        lit(source_id)
    )
}

/// Records a table's schema as its next version (version 1 when it has none), unless its
/// columns are the recorded ones.
pub fn record_table_version(
    source_id: &str,
    t: &TargetTable,
    columns_json: &str,
    position: &str,
) -> Vec<String> {
    let (id, schema, name, columns) = (
        lit(source_id),
        lit(&t.schema),
        lit(&t.table),
        lit(columns_json),
    );
    let this = format!(
        "\"source_id\" = {id} AND \"target_schema\" = {schema} AND \"target_table\" = {name}"
    );
    vec![
        format!(
            "UPDATE \"tidemark\".\"table_versions\" SET \"version\" = \"version\" + 1, \
             \"columns\" = {columns}, \"position\" = {}, \"changed_at\" = SYSDATE \
             WHERE {this} AND \"columns\" <> {columns}",
            lit(position)
        ),
        format!(
            "INSERT INTO \"tidemark\".\"table_versions\" (\"source_id\", \"target_schema\", \
             \"target_table\", \"version\", \"columns\", \"position\", \"changed_at\") \
             SELECT {id}, {schema}, {name}, 1, {columns}, {}, SYSDATE \
             WHERE NOT EXISTS (SELECT 1 FROM \"tidemark\".\"table_versions\" WHERE {this})",
            lit(position)
        ),
    ]
}

/// Moves a table's version record with a rename, counting the rename as a version.
pub fn rename_table_version(
    source_id: &str,
    from: &TargetTable,
    to: &TargetTable,
    position: &str,
) -> String {
    format!(
        "UPDATE \"tidemark\".\"table_versions\" SET \"target_schema\" = {}, \"target_table\" = {}, \
         \"version\" = \"version\" + 1, \"position\" = {}, \"changed_at\" = SYSDATE \
         WHERE \"source_id\" = {} AND \"target_schema\" = {} AND \"target_table\" = {}",
        lit(&to.schema),
        lit(&to.table),
        lit(position),
        lit(source_id),
        lit(&from.schema),
        lit(&from.table)
    )
}

/// Records that `t`'s changes up to position `reaches` (packed) are in: a part of a batch
/// split over several transactions committed. A record of an earlier position is replaced.
pub fn record_table_progress(source_id: &str, t: &TargetTable, reaches: u128) -> [String; 2] {
    let (id, schema, name) = (lit(source_id), lit(&t.schema), lit(&t.table));
    let this = format!(
        "\"source_id\" = {id} AND \"target_schema\" = {schema} AND \"target_table\" = {name}"
    );
    [
        format!(
            "DELETE FROM \"tidemark\".\"table_progress\" WHERE {this} AND \"reaches\" < {reaches}"
        ),
        format!(
            "INSERT INTO \"tidemark\".\"table_progress\" (\"source_id\", \"target_schema\", \"target_table\", \"reaches\") \
             SELECT {id}, {schema}, {name}, {reaches} \
             WHERE NOT EXISTS (SELECT 1 FROM \"tidemark\".\"table_progress\" WHERE {this})"
        ),
    ]
}

/// Removes the per-table records of `source_id`: its split batch committed whole.
pub fn forget_table_progress(source_id: &str) -> String {
    format!(
        "DELETE FROM \"tidemark\".\"table_progress\" WHERE \"source_id\" = {}",
        lit(source_id)
    )
}

/// One row when `source_id` has per-table records: a split batch did not commit whole.
pub fn has_table_progress(source_id: &str) -> String {
    format!(
        "SELECT 1 FROM \"tidemark\".\"table_progress\" WHERE \"source_id\" = {} LIMIT 1",
        lit(source_id)
    )
}

/// Drops the staged rows of `t` that a committed part of a split batch already applied.
pub fn skip_applied(stage: &str, source_id: &str, t: &TargetTable) -> String {
    format!(
        "DELETE FROM {s} USING \"tidemark\".\"table_progress\" AS \"done\" \
         WHERE \"done\".\"source_id\" = {} AND \"done\".\"target_schema\" = {} \
         AND \"done\".\"target_table\" = {} AND {s}.{} <= \"done\".\"reaches\"",
        lit(source_id),
        lit(&t.schema),
        lit(&t.table),
        ident(POSITION),
        s = ident(stage)
    )
}

/// Records a snapshot chunk loaded (a chunk loaded again keeps its one record).
pub fn record_chunk(
    source_id: &str,
    namespace: &str,
    name: &str,
    started_at_micros: i64,
    chunk: u32,
    rows: u64,
) -> String {
    let this = format!(
        "\"source_id\" = {} AND \"namespace\" = {} AND \"name\" = {} AND \"started_at_micros\" = {started_at_micros} AND \"chunk\" = {chunk}",
        lit(source_id),
        lit(namespace),
        lit(name)
    );
    format!(
        "INSERT INTO \"tidemark\".\"snapshot_chunks\" (\"source_id\", \"namespace\", \"name\", \
         \"started_at_micros\", \"chunk\", \"rows\", \"loaded_at\") \
         SELECT {}, {}, {}, {started_at_micros}, {chunk}, {rows}, SYSDATE \
         WHERE NOT EXISTS (SELECT 1 FROM \"tidemark\".\"snapshot_chunks\" WHERE {this})",
        lit(source_id),
        lit(namespace),
        lit(name)
    )
}

/// Whether a chunk of `source_id` is recorded loaded: one row when it is.
pub fn chunk_recorded(
    source_id: &str,
    namespace: &str,
    name: &str,
    started_at_micros: i64,
    chunk: u32,
) -> String {
    format!(
        "SELECT 1 FROM \"tidemark\".\"snapshot_chunks\" WHERE \"source_id\" = {} AND \
         \"namespace\" = {} AND \"name\" = {} AND \"started_at_micros\" = {started_at_micros} AND \"chunk\" = {chunk}",
        lit(source_id),
        lit(namespace),
        lit(name)
    )
}

/// Removes the chunk records of `source_id`.
pub fn forget_chunks(source_id: &str) -> String {
    format!(
        "DELETE FROM \"tidemark\".\"snapshot_chunks\" WHERE \"source_id\" = {}",
        lit(source_id)
    )
}

/// Records a snapshot request with id `id` (`tables` as JSON, or NULL for the whole source).
pub fn request_snapshot(id: i64, source_id: &str, tables: Option<&str>) -> String {
    format!(
        "INSERT INTO \"tidemark\".\"snapshot_requests\" (\"id\", \"source_id\", \"tables\", \"requested_at\") \
         VALUES ({id}, {}, {}, SYSDATE)",
        lit(source_id),
        tables.map_or_else(|| "NULL".to_owned(), lit)
    )
}

/// The snapshot requests of `source_id` not yet handled, oldest first.
pub fn read_snapshot_requests(source_id: &str) -> String {
    format!(
        "SELECT \"id\", \"tables\" FROM \"tidemark\".\"snapshot_requests\" WHERE \"source_id\" = {} ORDER BY \"id\"",
        lit(source_id)
    )
}

/// Removes the requests of `source_id` up to `last`.
pub fn requests_handled(source_id: &str, last: i64) -> String {
    format!(
        "DELETE FROM \"tidemark\".\"snapshot_requests\" WHERE \"source_id\" = {} AND \"id\" <= {last}",
        lit(source_id)
    )
}

/// The warehouse clock (the start of this statement's transaction, as loaded rows are stamped),
/// as `YYYY-MM-DD HH24:MI:SS.US` text in UTC.
pub const CLOCK: &str = "SELECT TO_CHAR(SYSDATE, 'YYYY-MM-DD HH24:MI:SS.US')";

/// Columns (name, `format_type`) of a table in attribute order.
pub fn table_columns(t: &TargetTable) -> String {
    format!(
        "SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_catalog.pg_attribute a \
         JOIN pg_catalog.pg_class c ON c.oid = a.attrelid \
         JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = {} AND c.relname = {} AND c.relkind = 'r' \
         AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
        lit(&t.schema),
        lit(&t.table)
    )
}

/// Primary-key column names of a table, in key order.
pub fn table_key(t: &TargetTable) -> String {
    format!(
        "SELECT kcu.column_name FROM information_schema.table_constraints tc \
         JOIN information_schema.key_column_usage kcu ON kcu.constraint_name = tc.constraint_name \
         AND kcu.table_schema = tc.table_schema AND kcu.table_name = tc.table_name \
         WHERE tc.constraint_type = 'PRIMARY KEY' AND tc.table_schema = {} AND tc.table_name = {} \
         ORDER BY kcu.ordinal_position",
        lit(&t.schema),
        lit(&t.table)
    )
}

/// One row when table `t` holds a row.
pub fn holds_rows(t: &TargetTable) -> String {
    format!("SELECT 1 FROM {} LIMIT 1", table(t))
}

/// Creates a schema if it is missing.
pub fn create_schema(schema: &str) -> String {
    format!("CREATE SCHEMA IF NOT EXISTS {}", ident(schema))
}

/// Creates a target table: `columns` (metadata included) and the key (informational in
/// Redshift, which does not enforce it; the loads keep one row per key themselves).
pub fn create_table(t: &TargetTable, columns: &[(String, String)], key: &[String]) -> String {
    let mut defs: Vec<String> = columns
        .iter()
        .map(|(name, ty)| {
            let not_null = if key.contains(name) { " NOT NULL" } else { "" };
            format!("{} {ty}{not_null}", ident(name))
        })
        .collect();
    if !key.is_empty() {
        defs.push(format!("PRIMARY KEY ({})", list(key)));
    }
    format!("CREATE TABLE {} ({})", table(t), defs.join(", "))
}

/// Adds one column (Redshift adds one per statement).
pub fn add_column(t: &TargetTable, name: &str, ty: &str) -> String {
    format!("ALTER TABLE {} ADD COLUMN {} {ty}", table(t), ident(name))
}

/// Drops a column (`dropped_columns = "drop"`).
pub fn drop_column(t: &TargetTable, name: &str) -> String {
    format!("ALTER TABLE {} DROP COLUMN {}", table(t), ident(name))
}

/// Widens a VARCHAR column: Redshift runs it only outside a transaction.
pub fn widen_column(t: &TargetTable, name: &str, ty: &str) -> String {
    format!(
        "ALTER TABLE {} ALTER COLUMN {} TYPE {ty}",
        table(t),
        ident(name)
    )
}

/// Renames a table within its schema.
pub fn rename_table(from: &TargetTable, to: &str) -> String {
    format!("ALTER TABLE {} RENAME TO {}", table(from), ident(to))
}

/// A temporary staging table with the staged file's columns: the metadata fields, then the
/// source columns typed as the target has them.
pub fn create_stage(stage: &str, columns: &[(String, String)]) -> String {
    let defs: Vec<String> = STAGED_METADATA
        .iter()
        .map(|(n, t)| (n.to_string(), t.to_string()))
        .chain(columns.iter().cloned())
        .map(|(name, ty)| format!("{} {ty}", ident(&name)))
        .collect();
    format!("CREATE TEMP TABLE {} ({})", ident(stage), defs.join(", "))
}

/// `COPY` of the staged files listed in `manifest` into the staging table.
pub fn copy_stage(
    stage: &str,
    columns: &[String],
    manifest: &str,
    iam_role: &str,
    region: &str,
) -> String {
    let all: Vec<String> = STAGED_METADATA
        .iter()
        .map(|(n, _)| n.to_string())
        .chain(columns.iter().cloned())
        .collect();
    format!(
        "COPY {} ({}) FROM {} IAM_ROLE {} MANIFEST GZIP FORMAT AS CSV NULL AS '\\0' \
         TIMEFORMAT 'auto' DATEFORMAT 'auto' REGION {} COMPUPDATE OFF STATUPDATE OFF",
        ident(stage),
        list(&all),
        lit(manifest),
        lit(iam_role),
        lit(region)
    )
}

/// Keeps only each key's last staged change.
pub fn keep_last_per_key(stage: &str, key: &[String]) -> String {
    let s = ident(stage);
    let on = key_match(&s, "\"later\"", key);
    format!(
        "DELETE FROM {s} USING {s} AS \"later\" WHERE {on} AND {s}.{SEQ} < \"later\".{SEQ}",
        SEQ = ident(SEQ)
    )
}

/// Empties a target table inside the transaction (Redshift's TRUNCATE would commit it).
pub fn delete_all(t: &TargetTable) -> String {
    format!("DELETE FROM {}", table(t))
}

/// Drops staged rows that a later TRUNCATE in the same batch wiped out.
pub fn discard_before(stage: &str, seq: u64) -> String {
    format!("DELETE FROM {} WHERE {} < {seq}", ident(stage), ident(SEQ))
}

/// Deletes the target rows whose key's last change is a delete.
pub fn delete_by_key(t: &TargetTable, stage: &str, key: &[String]) -> String {
    let target = table(t);
    let on = key_match(&target, "\"stage\"", key);
    format!(
        "DELETE FROM {target} USING {} AS \"stage\" WHERE {on} AND \"stage\".{} = 'delete'",
        ident(stage),
        ident(OP)
    )
}

/// Marks the target rows whose key's last change is a delete as deleted, with the delete's
/// position (soft deletes).
pub fn mark_deleted_by_key(t: &TargetTable, stage: &str, key: &[String]) -> String {
    let target = table(t);
    let on = key_match(&target, "\"stage\"", key);
    let set = [OP, POSITION, COMMIT_TS]
        .iter()
        .map(|c| format!("{c} = \"stage\".{c}", c = ident(c)))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "UPDATE {target} SET {}, {} = true, {} = SYSDATE FROM {} AS \"stage\" \
         WHERE {on} AND \"stage\".{} = 'delete'",
        set,
        ident(DELETED),
        ident(LOADED_AT),
        ident(stage),
        ident(OP)
    )
}

/// Marks every live row of a target deleted (a source TRUNCATE, soft deletes). The rows keep
/// the operation, position and commit time of their last change: a TRUNCATE has no position
/// per row.
pub fn mark_all_deleted(t: &TargetTable) -> String {
    format!(
        "UPDATE {} SET {d} = true, {} = SYSDATE WHERE {d} IS NOT true",
        table(t),
        ident(LOADED_AT),
        d = ident(DELETED)
    )
}

/// Marks the rows of `t` last loaded before `micros` deleted: the end of a copy, soft deletes
/// (as [`mark_all_deleted`], for the rows the source no longer has).
pub fn mark_deleted_loaded_before(t: &TargetTable, micros: i64) -> String {
    format!(
        "UPDATE {} SET {d} = true, {l} = SYSDATE WHERE {l} < {} AND {d} IS NOT true",
        table(t),
        micros_lit(Some(micros)),
        d = ident(DELETED),
        l = ident(LOADED_AT)
    )
}

/// Removes the staged deletes once applied, so the MERGE sees only rows to write.
pub fn drop_staged_deletes(stage: &str) -> String {
    format!(
        "DELETE FROM {} WHERE {} = 'delete'",
        ident(stage),
        ident(OP)
    )
}

/// Updates or inserts every staged row by key (the stage holds each key once, no deletes).
/// `data` are the columns written from the stage (source and metadata columns but the load
/// time, which is the transaction's start).
pub fn merge(
    t: &TargetTable,
    stage: &str,
    data: &[String],
    key: &[String],
    soft_delete: bool,
) -> String {
    // Redshift's MERGE takes no alias for its target: its columns are qualified by name.
    let target = table(t);
    let on = key_match(&target, "\"stage\"", key);
    let set = data
        .iter()
        .filter(|c| !key.contains(c))
        .map(|c| format!("{c} = \"stage\".{c}", c = ident(c)))
        .chain([format!("{} = SYSDATE", ident(LOADED_AT))])
        .chain(soft_delete.then(|| format!("{} = false", ident(DELETED))))
        .collect::<Vec<_>>()
        .join(", ");
    let values = data
        .iter()
        .map(|c| format!("\"stage\".{}", ident(c)))
        .collect::<Vec<_>>()
        .join(", ");
    let (deleted_column, live) = if soft_delete {
        (format!(", {}", ident(DELETED)), ", false")
    } else {
        (String::new(), "")
    };
    format!(
        "MERGE INTO {target} USING {} AS \"stage\" ON {on} \
         WHEN MATCHED THEN UPDATE SET {set} \
         WHEN NOT MATCHED THEN INSERT ({}, {}{deleted_column}) VALUES ({values}, SYSDATE{live})",
        ident(stage),
        list(data),
        ident(LOADED_AT)
    )
}

/// Appends every staged change in arrival order (tables without a primary key).
pub fn append(t: &TargetTable, stage: &str, data: &[String]) -> String {
    let columns = list(data);
    format!(
        "INSERT INTO {} ({columns}, {}) SELECT {columns}, SYSDATE FROM {} ORDER BY {}",
        table(t),
        ident(LOADED_AT),
        ident(stage),
        ident(SEQ)
    )
}

/// Deletes the rows of `t` last loaded before `micros` µs after the epoch: the end of a copy.
pub fn delete_loaded_before(t: &TargetTable, micros: i64) -> String {
    format!(
        "DELETE FROM {} WHERE {} < {}",
        table(t),
        ident(LOADED_AT),
        micros_lit(Some(micros))
    )
}

/// `left.k = right.k AND ...` over the key columns: rows of two tables with the same key.
fn key_match(left: &str, right: &str, key: &[String]) -> String {
    key.iter()
        .map(|k| format!("{left}.{c} = {right}.{c}", c = ident(k)))
        .collect::<Vec<_>>()
        .join(" AND ")
}

fn list(names: &[String]) -> String {
    names
        .iter()
        .map(|n| ident(n))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn orders() -> TargetTable {
        TargetTable {
            schema: "acme_in_txn".into(),
            table: "orders".into(),
        }
    }

    #[test]
    fn literals_double_quotes_and_backslashes() {
        assert_eq!(lit(r#"it's a \ "x""#), r#"'it''s a \\ "x"'"#);
        assert_eq!(ident("we\"ird"), "\"we\"\"ird\"");
    }

    #[test]
    fn merge_has_one_when_matched_and_sets_no_key_column() {
        let data: Vec<String> = ["id", "v", OP].iter().map(|s| s.to_string()).collect();
        let sql = merge(&orders(), "tidemark_stage_0", &data, &["id".into()], false);
        assert_eq!(sql.matches("WHEN MATCHED").count(), 1);
        assert!(sql.contains("UPDATE SET \"v\" = \"stage\".\"v\""));
        assert!(!sql.contains("\"id\" = \"stage\".\"id\","));
        assert!(sql.contains("ON \"acme_in_txn\".\"orders\".\"id\" = \"stage\".\"id\""));
        assert!(!sql.contains(" AS \"target\""));
    }

    #[test]
    fn deletes_name_the_target_without_an_alias() {
        let sql = delete_by_key(&orders(), "tidemark_stage_0", &["id".into()]);
        assert!(sql.starts_with("DELETE FROM \"acme_in_txn\".\"orders\" USING"));
        assert!(sql.contains("\"acme_in_txn\".\"orders\".\"id\" = \"stage\".\"id\""));
    }

    #[test]
    fn long_snapshot_states_are_stored_in_parts_at_char_boundaries() {
        let state = "é".repeat(CONTROL_TEXT_BYTES);
        let statements = write_progress("s", "{}", "p", None, Some(&state));
        let parts: Vec<&String> = statements
            .iter()
            .filter(|s| s.contains("progress_snapshot\" (\"source_id\""))
            .collect();
        assert_eq!(parts.len(), 3);
        assert!(parts.iter().all(|s| s.len() < 100 * 1024));
        let joined: String = pieces(&state, SNAPSHOT_PART_BYTES).collect();
        assert_eq!(joined, state);
    }
}
