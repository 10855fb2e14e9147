//! The SQL text the Postgres sink runs: one function per statement, identifiers always quoted.

use crate::sink::TargetTable;

pub use crate::sink::columns::{COMMIT_TS, DELETED, LOADED_AT, OP, POSITION, SEQ};

/// Staging-only column: the columns a row leaves unchanged (`text[]`, NULL for none).
pub const UNCHANGED: &str = "_tidemark_unchanged";
/// Staging-only column: the pass a row is applied in (NULL for 0).
pub const GENERATION: &str = "_tidemark_generation";

/// The metadata columns every target table ends with, and their types.
pub const METADATA_COLUMNS: [(&str, &str); 4] = [
    (OP, "text"),
    (POSITION, "numeric(30,0)"),
    (COMMIT_TS, "timestamp with time zone"),
    (LOADED_AT, "timestamp with time zone"),
];

/// Creates the control schema and tables (idempotent), under a lock so that groups starting
/// together do not race (one simple query runs as one transaction, which holds the lock). A `tidemark.checkpoints` table of an earlier release becomes
/// `tidemark.progress`, keeping every source's position.
pub const CONTROL_TABLES: &str =
    "SELECT pg_advisory_xact_lock(hashtext('tidemark control tables'));
CREATE SCHEMA IF NOT EXISTS tidemark;
DO $$ BEGIN
    IF to_regclass('tidemark.checkpoints') IS NOT NULL
       AND to_regclass('tidemark.progress') IS NULL THEN
        ALTER TABLE tidemark.checkpoints RENAME TO progress;
    END IF;
END $$;
CREATE TABLE IF NOT EXISTS tidemark.progress (
    source_id text PRIMARY KEY,
    resume_point jsonb NOT NULL,
    position text NOT NULL,
    source_commit_ts timestamptz,
    committed_at timestamptz NOT NULL DEFAULT now()
);
DO $$ BEGIN
    -- Checked first: ALTER TABLE needs ownership even when the column exists.
    IF NOT EXISTS (SELECT 1 FROM pg_attribute
                   WHERE attrelid = 'tidemark.progress'::regclass AND attname = 'snapshot'
                     AND NOT attisdropped) THEN
        ALTER TABLE tidemark.progress ADD COLUMN snapshot jsonb;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_attribute
                   WHERE attrelid = 'tidemark.progress'::regclass AND attname = 'last_error'
                     AND NOT attisdropped) THEN
        ALTER TABLE tidemark.progress ADD COLUMN last_error text;
    END IF;
END $$;
CREATE TABLE IF NOT EXISTS tidemark.table_versions (
    source_id text NOT NULL,
    target_schema text NOT NULL,
    target_table text NOT NULL,
    version integer NOT NULL,
    columns jsonb NOT NULL,
    position text NOT NULL,
    changed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source_id, target_schema, target_table)
);
CREATE TABLE IF NOT EXISTS tidemark.snapshot_requests (
    id bigserial PRIMARY KEY,
    source_id text NOT NULL,
    tables jsonb,
    requested_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS tidemark.snapshot_chunks (
    source_id text NOT NULL,
    namespace text NOT NULL,
    name text NOT NULL,
    started_at_micros bigint NOT NULL,
    chunk integer NOT NULL,
    rows bigint NOT NULL,
    loaded_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source_id, namespace, name, started_at_micros, chunk)
);
CREATE TABLE IF NOT EXISTS tidemark.leases (
    source_id text PRIMARY KEY,
    holder text NOT NULL,
    expires_at timestamptz NOT NULL,
    acquired_at timestamptz NOT NULL DEFAULT clock_timestamp()
)";

/// Takes or renews the leases of sources `$1` (text[]) for holder `$2`, for `$3` µs from now:
/// a lease is taken when it is free, expired or already the holder's. Returns the sources the
/// holder now leases. The row lock makes it wait for a holder's batch that renews the same row
/// in its transaction, then decide on what that batch committed.
pub const CLAIM_LEASES: &str = "INSERT INTO tidemark.leases AS l (source_id, holder, expires_at)
SELECT id, $2, clock_timestamp() + $3::bigint * interval '1 microsecond' FROM unnest($1::text[]) AS id
ON CONFLICT (source_id) DO UPDATE
SET holder = EXCLUDED.holder, expires_at = EXCLUDED.expires_at,
    acquired_at = CASE WHEN l.holder = EXCLUDED.holder THEN l.acquired_at ELSE clock_timestamp() END
WHERE l.holder = EXCLUDED.holder OR l.expires_at < clock_timestamp()
RETURNING source_id";

/// Renews source `$1`'s lease for holder `$2` by `$3` µs inside a batch's transaction: no row
/// means the lease is gone (expired and maybe taken), so the batch must not commit.
pub const FENCE_LEASE: &str = "UPDATE tidemark.leases
SET expires_at = clock_timestamp() + $3::bigint * interval '1 microsecond'
WHERE source_id = $1 AND holder = $2 AND expires_at > clock_timestamp()";

/// Gives up holder `$2`'s leases of sources `$1` (text[]), so that a standby takes them at once.
pub const RELEASE_LEASES: &str =
    "DELETE FROM tidemark.leases WHERE source_id = ANY($1::text[]) AND holder = $2";

/// Records a snapshot chunk loaded: `$1` source id, `$2` namespace, `$3` table name, `$4` the
/// table copy's start (µs), `$5` chunk, `$6` rows. A chunk loaded again (its first commit was
/// not seen) keeps its record.
pub const RECORD_CHUNK: &str = "INSERT INTO tidemark.snapshot_chunks
    (source_id, namespace, name, started_at_micros, chunk, rows)
VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING";

/// The chunks recorded loaded for source `$1`.
pub const READ_CHUNKS: &str = "SELECT namespace, name, started_at_micros, chunk, rows
FROM tidemark.snapshot_chunks WHERE source_id = $1";

/// Whether chunk (`$2`, `$3`, `$4`, `$5`) of source `$1` is recorded loaded.
pub const CHUNK_RECORDED: &str = "SELECT EXISTS (SELECT 1 FROM tidemark.snapshot_chunks
WHERE source_id = $1 AND namespace = $2 AND name = $3 AND started_at_micros = $4 AND chunk = $5)";

/// Whether table `$2` of schema `$1` exists.
pub const TABLE_EXISTS: &str = "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p'))";

/// Whether table `t` holds a row.
pub fn holds_rows(t: &TargetTable) -> String {
    format!("SELECT EXISTS (SELECT 1 FROM {})", table(t))
}

/// Removes the chunk records of source `$1`: its snapshot ended or is replaced.
pub const FORGET_CHUNKS: &str = "DELETE FROM tidemark.snapshot_chunks WHERE source_id = $1";

/// Records a snapshot request: `$1` source id, `$2` tables (jsonb `[[namespace, name], ...]`, or
/// NULL for the whole source); returns its id.
pub const REQUEST_SNAPSHOT: &str =
    "INSERT INTO tidemark.snapshot_requests (source_id, tables) VALUES ($1, $2) RETURNING id";

/// The snapshot requests of source `$1` not yet handled, oldest first.
pub const READ_SNAPSHOT_REQUESTS: &str =
    "SELECT id, tables FROM tidemark.snapshot_requests WHERE source_id = $1 ORDER BY id";

/// Removes the requests of source `$1` up to id `$2`: handled by the batch that removes them.
pub const REQUESTS_HANDLED: &str =
    "DELETE FROM tidemark.snapshot_requests WHERE source_id = $1 AND id <= $2";

/// Planner settings for one load transaction. A batch is usually small next to its target
/// table, whose key index is hot in cache: probing the index per staged row is far cheaper than
/// the hash join over the whole target that the default `random_page_cost = 4` picks (measured
/// on a 900k-row target with a 100k-row batch: 0.5 s against 1.3 s). Local to the transaction.
pub const LOAD_SETTINGS: &str = "SET LOCAL random_page_cost = 1.1";

/// Reads one source's progress (`$1` = source id): resume point, source commit time and
/// warehouse commit time in µs since the epoch, snapshot state.
pub const READ_PROGRESS: &str = "SELECT resume_point,
    (extract(epoch FROM source_commit_ts) * 1000000)::bigint,
    snapshot,
    (extract(epoch FROM committed_at) * 1000000)::bigint,
    last_error
FROM tidemark.progress WHERE source_id = $1";

/// Records why source `$1` stopped (`$2`), until its next committed batch clears it.
pub const RECORD_ERROR: &str = "UPDATE tidemark.progress SET last_error = $2 WHERE source_id = $1";

/// Records one source's progress: `$1` source id, `$2` resume point (jsonb), `$3` its text
/// form, `$4` source commit time in µs since the epoch (or NULL), `$5` snapshot state (jsonb or
/// NULL). A batch without a commit time keeps the one before (a heartbeat moves the position,
/// not the time of the last change).
pub const WRITE_PROGRESS: &str = "INSERT INTO tidemark.progress AS c
    (source_id, resume_point, position, source_commit_ts, committed_at, snapshot)
VALUES ($1, $2, $3, 'epoch'::timestamptz + $4::bigint * interval '1 microsecond', now(), $5)
ON CONFLICT (source_id) DO UPDATE SET
    resume_point = EXCLUDED.resume_point,
    position = EXCLUDED.position,
    source_commit_ts = COALESCE(EXCLUDED.source_commit_ts, c.source_commit_ts),
    committed_at = EXCLUDED.committed_at,
    snapshot = EXCLUDED.snapshot,
    last_error = NULL";

/// One source's table versions (`$1` = source id), in table order.
pub const READ_TABLE_VERSIONS: &str =
    "SELECT target_schema, target_table, version, columns, position
FROM tidemark.table_versions WHERE source_id = $1
ORDER BY target_schema, target_table";

/// Records a table's schema as its next version: `$1` source id, `$2` schema, `$3` table,
/// `$4` columns (jsonb `[[name, type], ...]`), `$5` source position text. The first record of a
/// table is version 1.
pub const RECORD_TABLE_VERSION: &str = "INSERT INTO tidemark.table_versions AS v
    (source_id, target_schema, target_table, version, columns, position, changed_at)
VALUES ($1, $2, $3, 1, $4, $5, now())
ON CONFLICT (source_id, target_schema, target_table) DO UPDATE SET
    version = v.version + 1,
    columns = EXCLUDED.columns,
    position = EXCLUDED.position,
    changed_at = EXCLUDED.changed_at
WHERE v.columns IS DISTINCT FROM EXCLUDED.columns";

/// Moves a table's version record with a rename, counting the rename as a version: `$1`
/// source id, `$2`/`$3` old schema and table, `$4`/`$5` new, `$6` source position text.
pub const RENAME_TABLE_VERSION: &str = "UPDATE tidemark.table_versions
SET target_schema = $4, target_table = $5, version = version + 1, position = $6, changed_at = now()
WHERE source_id = $1 AND target_schema = $2 AND target_table = $3";

/// Columns (name, `format_type`) of a table in attribute order: `$1` schema, `$2` table.
pub const TABLE_COLUMNS: &str = "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod)
FROM pg_attribute a
JOIN pg_class c ON c.oid = a.attrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p')
  AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum";

/// Primary-key column names of a table in key order: `$1` schema, `$2` table.
pub const TABLE_KEY: &str = "SELECT a.attname::text
FROM pg_index i
JOIN pg_class c ON c.oid = i.indrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)
WHERE n.nspname = $1 AND c.relname = $2 AND i.indisprimary
ORDER BY array_position(i.indkey::int2[], a.attnum)";

/// `"name"` with embedded quotes doubled.
pub fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `"schema"."table"`.
pub fn table(t: &TargetTable) -> String {
    format!("{}.{}", ident(&t.schema), ident(&t.table))
}

/// Creates a schema if missing.
pub fn create_schema(schema: &str) -> String {
    format!("CREATE SCHEMA IF NOT EXISTS {}", ident(schema))
}

/// Creates a target table: `columns` (name, type) then the metadata columns (with
/// [`DELETED`] when `soft_delete`), keyed by `key`.
pub fn create_table(
    t: &TargetTable,
    columns: &[(String, String)],
    key: &[String],
    soft_delete: bool,
) -> String {
    let mut parts: Vec<String> = columns
        .iter()
        .map(|(name, ty)| format!("{} {ty}", ident(name)))
        .collect();
    parts.extend(
        METADATA_COLUMNS
            .iter()
            .map(|(name, ty)| format!("{} {ty}", ident(name))),
    );
    if soft_delete {
        parts.push(format!("{DELETED} {DELETED_DEFINITION}"));
    }
    if !key.is_empty() {
        parts.push(format!("PRIMARY KEY ({})", list(key)));
    }
    format!("CREATE TABLE {} ({})", table(t), parts.join(", "))
}

/// How [`DELETED`] is declared. The default fills the rows a table already holds when the
/// column is added (without rewriting the table) and every row written without naming the column:
/// a copy's direct COPY, an append.
const DELETED_DEFINITION: &str = "boolean NOT NULL DEFAULT false";

/// The type [`DELETED`] reads back as from the catalog (`format_type`).
pub const DELETED_TYPE: &str = "boolean";

/// Adds [`DELETED`] to a table created without it (soft deletes switched on later); every row
/// it holds is live. `IF NOT EXISTS`: a connection loading beside this one may add it first.
pub fn add_deleted_column(t: &TargetTable) -> String {
    format!(
        "ALTER TABLE {} ADD COLUMN IF NOT EXISTS {DELETED} {DELETED_DEFINITION}",
        table(t)
    )
}

/// Adds one nullable column.
pub fn add_column(t: &TargetTable, name: &str, ty: &str) -> String {
    format!("ALTER TABLE {} ADD COLUMN {} {ty}", table(t), ident(name))
}

/// Changes a column's type, converting existing values with a cast.
pub fn alter_type(t: &TargetTable, name: &str, ty: &str) -> String {
    let column = ident(name);
    format!(
        "ALTER TABLE {} ALTER COLUMN {column} TYPE {ty} USING {column}::{ty}",
        table(t)
    )
}

/// Renames a table within its schema.
pub fn rename_table(from: &TargetTable, to: &str) -> String {
    format!("ALTER TABLE {} RENAME TO {}", table(from), ident(to))
}

/// A temporary staging table shaped like `t` plus the staging-only columns, dropped at commit.
pub fn create_stage(stage: &str, t: &TargetTable) -> String {
    format!(
        "CREATE TEMP TABLE {} ON COMMIT DROP AS SELECT NULL::bigint AS {SEQ}, \
         NULL::text[] AS {UNCHANGED}, NULL::integer AS {GENERATION}, * FROM {} WITH NO DATA",
        ident(stage),
        table(t)
    )
}

/// `COPY` of one segment's rows into the staging table; `with_unchanged` when its rows carry
/// the unchanged columns and generation.
pub fn copy_stage(stage: &str, columns: &[String], with_unchanged: bool) -> String {
    let mut all = vec![
        SEQ.to_owned(),
        OP.to_owned(),
        POSITION.to_owned(),
        COMMIT_TS.to_owned(),
    ];
    if with_unchanged {
        all.extend([UNCHANGED.to_owned(), GENERATION.to_owned()]);
    }
    all.extend(columns.iter().cloned());
    format!("COPY {} ({}) FROM STDIN", ident(stage), list(&all))
}

/// `COPY` of rows straight into the target table `t`, in `columns`.
pub fn copy_into(t: &TargetTable, columns: &[String]) -> String {
    format!("COPY {} ({}) FROM STDIN", table(t), list(columns))
}

/// Empties the target table (a source TRUNCATE).
pub fn truncate(t: &TargetTable) -> String {
    format!("TRUNCATE {}", table(t))
}

/// Marks every live row of the target deleted (a source TRUNCATE, soft deletes). The TRUNCATE
/// is no row of its own: each row keeps the op, position and commit time of its last change.
pub fn mark_all_deleted(t: &TargetTable) -> String {
    format!(
        "UPDATE {} SET {DELETED} = true, {LOADED_AT} = now() WHERE {DELETED} IS NOT true",
        table(t)
    )
}

/// Drops staged rows that a later TRUNCATE in the same batch wiped out.
pub fn discard_before(stage: &str, seq: u64) -> String {
    format!("DELETE FROM {} WHERE {SEQ} < {seq}", ident(stage))
}

/// How a batch's last changes per key reach a keyed target table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyedApply {
    /// A DELETE of the keys whose last change is a delete (only when the batch has deletes),
    /// then one `INSERT ... ON CONFLICT DO UPDATE` of the others: one index probe per row, the
    /// fastest when the batch is small beside the target.
    Probe,
    /// One MERGE (delete, update or insert by key): a join of the whole batch with the whole
    /// target, and plain inserts, the fastest when the batch is large beside the target.
    Join,
}

impl KeyedApply {
    /// The faster way for `batch_rows` staged rows against a target of about `target_rows`.
    ///
    /// Measured on Postgres 15 (random_page_cost 1.1): 100k rows into a 900k-row target took
    /// 0.50-0.54 s by probe against 0.75-0.87 s by join (MERGE scans and hashes the target);
    /// 900k rows into an empty target 3.5-3.7 s by probe against 2.1-2.2 s by join (speculative
    /// insertion costs about 1.4 µs a row). The join pays about 0.5 µs per target row, the probe
    /// about 1.4 µs per batch row, so the join wins once the batch is about a third of the target.
    pub fn choose(batch_rows: u64, target_rows: u64) -> KeyedApply {
        if batch_rows.saturating_mul(3) >= target_rows {
            KeyedApply::Join
        } else {
            KeyedApply::Probe
        }
    }
}

/// Which staged rows one application takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pass {
    /// Every row: no row leaves a column unchanged.
    All,
    /// The rows of one generation, some of which leave columns unchanged: those update the
    /// existing row and keep its value in each unchanged column.
    Generation(u32),
}

/// Applies the last staged change per key, `how` says by which statements.
/// `unique_keys` says the stage holds each key once (in `pass`), so no "last change per key"
/// step is needed. Either way the effect is the same: delete, update or insert by key, last
/// change wins. With `soft_delete` a delete marks the row ([`DELETED`], the delete's op,
/// position and commit time) instead of removing it, every write of a row makes it live again,
/// and a partial row applies to live rows only (a marked row's values are not the source's).
#[allow(clippy::too_many_arguments)]
pub fn apply_by_key(
    t: &TargetTable,
    stage: &str,
    columns: &[String],
    key: &[String],
    unique_keys: bool,
    has_deletes: bool,
    soft_delete: bool,
    how: KeyedApply,
    pass: Pass,
) -> Vec<String> {
    let keys = list(key);
    let rows = match pass {
        Pass::All => ident(stage),
        Pass::Generation(g) => format!(
            "(SELECT * FROM {} WHERE coalesce({GENERATION}, 0) = {g})",
            ident(stage)
        ),
    };
    let source = if unique_keys {
        rows
    } else {
        format!("(SELECT DISTINCT ON ({keys}) * FROM {rows} AS r ORDER BY {keys}, {SEQ} DESC)")
    };
    // Partial rows never go through the upsert: they update what exists, column by column.
    let (how, complete_only) = match pass {
        Pass::All => (how, String::new()),
        Pass::Generation(_) => (KeyedApply::Probe, format!(" AND s.{UNCHANGED} IS NULL")),
    };
    let target = table(t);
    let on = key
        .iter()
        .map(|k| format!("t.{c} = s.{c}", c = ident(k)))
        .collect::<Vec<_>>()
        .join(" AND ");
    let data: Vec<&str> = columns
        .iter()
        .map(String::as_str)
        .chain([OP, POSITION, COMMIT_TS])
        .collect();
    let insert_columns = data.iter().map(|c| ident(c)).collect::<Vec<_>>().join(", ");
    // The key columns are what matched: setting them would only cost work.
    let updated = || data.iter().filter(|c| !key.iter().any(|k| k == *c));
    // Soft deletes: what every write of a row adds (its column and value, its assignment), so
    // that a key inserted again after its delete is live again. Empty without them.
    let (live_column, live_value, live_set) = if soft_delete {
        (
            format!(", {DELETED}"),
            ", false",
            format!(", {DELETED} = false"),
        )
    } else {
        (String::new(), "", String::new())
    };
    // Soft deletes: the delete's metadata on the marked row. Only the metadata: a delete stages
    // its key alone, and the row keeps its last values.
    let mark_deleted = format!(
        "{OP} = s.{OP}, {POSITION} = s.{POSITION}, {COMMIT_TS} = s.{COMMIT_TS}, \
         {DELETED} = true, {LOADED_AT} = now()"
    );
    if how == KeyedApply::Join {
        let set = updated()
            .map(|c| format!("{c} = s.{c}", c = ident(c)))
            .collect::<Vec<_>>()
            .join(", ");
        let values = data
            .iter()
            .map(|c| format!("s.{}", ident(c)))
            .collect::<Vec<_>>()
            .join(", ");
        let delete = match (has_deletes, soft_delete) {
            (false, _) => String::new(),
            (true, false) => format!("WHEN MATCHED AND s.{OP} = 'delete' THEN DELETE\n"),
            (true, true) => {
                format!("WHEN MATCHED AND s.{OP} = 'delete' THEN UPDATE SET {mark_deleted}\n")
            }
        };
        return vec![format!(
            "MERGE INTO {target} AS t USING {source} AS s ON {on}
{delete}WHEN MATCHED THEN UPDATE SET {set}{live_set}, {LOADED_AT} = now()
WHEN NOT MATCHED AND s.{OP} <> 'delete' THEN INSERT ({insert_columns}{live_column}, {LOADED_AT}) VALUES ({values}{live_value}, now())"
        )];
    }
    let mut statements = Vec::with_capacity(5);
    // A key change whose new row leaves columns unchanged is staged as the delete of the old
    // key right before the partial row of the new one, both in one generation; the old row's
    // values were kept in `moved_rows` (see [`capture_moved_rows`]) before this pass deletes it.
    let moved = match pass {
        Pass::Generation(g) if has_deletes => Some(moved_rows(stage, g)),
        _ => None,
    };
    if has_deletes && soft_delete {
        statements.push(format!(
            "UPDATE {target} AS t SET {mark_deleted} FROM {source} AS s \
             WHERE {on} AND s.{OP} = 'delete'"
        ));
    } else if has_deletes {
        statements.push(format!(
            "DELETE FROM {target} AS t USING {source} AS s WHERE {on} AND s.{OP} = 'delete'"
        ));
    }
    if let Some(moved) = &moved {
        let values = data
            .iter()
            .map(|c| {
                let name = c.replace('\'', "''");
                let q = ident(c);
                if key.iter().any(|k| k == *c) || [OP, POSITION, COMMIT_TS].contains(c) {
                    format!("s.{q}")
                } else {
                    format!("CASE WHEN '{name}' = ANY(s.{UNCHANGED}) THEN m.{q} ELSE s.{q} END")
                }
            })
            .collect::<Vec<_>>()
            .join(", ");
        // A live row already under the new key is left alone (the partial update below applies
        // to it), as without soft deletes; a marked one is the new key's earlier, deleted row,
        // which the moved row replaces.
        let (into, conflict) = if soft_delete {
            let replace = updated()
                .map(|c| format!("{c} = EXCLUDED.{c}", c = ident(c)))
                .collect::<Vec<_>>()
                .join(", ");
            (
                format!("{target} AS t"),
                format!(
                    "DO UPDATE SET {replace}{live_set}, {LOADED_AT} = EXCLUDED.{LOADED_AT} \
                     WHERE t.{DELETED}"
                ),
            )
        } else {
            (target.clone(), "DO NOTHING".to_owned())
        };
        statements.push(format!(
            "INSERT INTO {into} ({insert_columns}{live_column}, {LOADED_AT}) \
             SELECT {values}{live_value}, now() FROM {source} AS s JOIN {} AS m ON m.{MOVED_SEQ} = s.{SEQ} \
             WHERE s.{UNCHANGED} IS NOT NULL AND s.{OP} <> 'delete' \
             ON CONFLICT ({keys}) {conflict}",
            ident(moved)
        ));
    }
    let set = updated()
        .map(|c| format!("{c} = EXCLUDED.{c}", c = ident(c)))
        .collect::<Vec<_>>()
        .join(", ");
    statements.push(format!(
        "INSERT INTO {target} AS t ({insert_columns}{live_column}, {LOADED_AT})
SELECT {insert_columns}{live_value}, now() FROM {source} AS s WHERE s.{OP} <> 'delete'{complete_only}
ON CONFLICT ({keys}) DO UPDATE SET {set}{live_set}, {LOADED_AT} = EXCLUDED.{LOADED_AT}"
    ));
    if matches!(pass, Pass::Generation(_)) {
        let keep = updated()
            .map(|c| {
                let name = c.replace('\'', "''");
                let c = ident(c);
                format!("{c} = CASE WHEN '{name}' = ANY(s.{UNCHANGED}) THEN t.{c} ELSE s.{c} END")
            })
            .chain([format!("{LOADED_AT} = now()")])
            .collect::<Vec<_>>()
            .join(", ");
        // A marked row's kept values are those of a row the source deleted: a partial row
        // finding only that is one whose row the warehouse lacks (counted, not applied).
        let live = if soft_delete {
            format!(" AND t.{DELETED} IS NOT true")
        } else {
            String::new()
        };
        statements.push(format!(
            "UPDATE {target} AS t SET {keep} FROM {source} AS s \
             WHERE {on} AND s.{OP} <> 'delete' AND s.{UNCHANGED} IS NOT NULL{live}"
        ));
    }
    statements
}

/// Column of [`moved_rows`] naming the partial row a kept row belongs to.
const MOVED_SEQ: &str = "_tidemark_moved_seq";

/// The temporary table of rows kept for generation `g`'s key changes (see
/// [`capture_moved_rows`]).
fn moved_rows(stage: &str, g: u32) -> String {
    format!("{stage}_moved_{g}")
}

/// Before generation `g` applies: for each of its partial rows that changes a key (staged right
/// after the delete of its old key), the target's row under the old key as the earlier
/// generations left it, so the unchanged values can move with it. With `soft_delete` a row
/// marked deleted is not taken: its values are those of a row the source deleted.
pub fn capture_moved_rows(
    t: &TargetTable,
    stage: &str,
    key: &[String],
    soft_delete: bool,
    g: u32,
) -> String {
    let mut old_on = key
        .iter()
        .map(|k| format!("o.{c} = d.{c}", c = ident(k)))
        .collect::<Vec<_>>()
        .join(" AND ");
    if soft_delete {
        old_on.push_str(&format!(" AND o.{DELETED} IS NOT true"));
    }
    format!(
        "CREATE TEMP TABLE {moved} ON COMMIT DROP AS SELECT s.{SEQ} AS {MOVED_SEQ}, o.* \
         FROM {stage} AS s JOIN {stage} AS d ON d.{SEQ} = s.{SEQ} - 1 AND d.{OP} = 'delete' \
         JOIN {target} AS o ON {old_on} \
         WHERE s.{UNCHANGED} IS NOT NULL AND s.{OP} <> 'delete' \
         AND coalesce(s.{GENERATION}, 0) = {g}",
        moved = ident(&moved_rows(stage, g)),
        stage = ident(stage),
        target = table(t),
    )
}

/// Partial rows of generation `g` whose key the target lacks (with `soft_delete`: has no live row
/// for): they cannot be applied (the unchanged values are not known anywhere) and are counted
/// instead.
pub fn partial_rows_without_target(
    t: &TargetTable,
    stage: &str,
    key: &[String],
    soft_delete: bool,
    g: u32,
) -> String {
    let mut on = key
        .iter()
        .map(|k| format!("t.{c} = s.{c}", c = ident(k)))
        .collect::<Vec<_>>()
        .join(" AND ");
    if soft_delete {
        on.push_str(&format!(" AND t.{DELETED} IS NOT true"));
    }
    format!(
        "SELECT count(*) FROM {} AS s WHERE coalesce(s.{GENERATION}, 0) = {g} \
         AND s.{UNCHANGED} IS NOT NULL AND s.{OP} <> 'delete' \
         AND NOT EXISTS (SELECT 1 FROM {} AS t WHERE {on})",
        ident(stage),
        table(t)
    )
}

/// About how many rows a table holds: the statistics' live tuples, or the planner's count.
/// `$1` is the table's quoted, qualified name ([`table`]).
pub const ESTIMATED_ROWS: &str =
    "SELECT greatest(coalesce(s.n_live_tup, 0), c.reltuples::bigint, 0)::bigint
FROM pg_class c LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid
WHERE c.oid = $1::text::regclass";

/// Appends every staged change in arrival order (tables without a primary key).
pub fn append(t: &TargetTable, stage: &str, columns: &[String]) -> String {
    let data: Vec<String> = columns
        .iter()
        .map(String::as_str)
        .chain([OP, POSITION, COMMIT_TS])
        .map(ident)
        .collect();
    let data = data.join(", ");
    format!(
        "INSERT INTO {} ({data}, {LOADED_AT}) SELECT {data}, now() FROM {} ORDER BY {SEQ}",
        table(t),
        ident(stage)
    )
}

fn list(names: &[String]) -> String {
    names
        .iter()
        .map(|n| ident(n))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The warehouse's current time in µs since the epoch (not the transaction's start time).
pub const CLOCK_MICROS: &str = "SELECT (extract(epoch FROM clock_timestamp()) * 1000000)::bigint";

/// Deletes the rows of `t` last loaded before `$1` (µs since the epoch): the end of a copy.
pub fn delete_loaded_before(t: &TargetTable) -> String {
    format!(
        "DELETE FROM {} WHERE {LOADED_AT} < 'epoch'::timestamptz + $1::bigint * interval '1 microsecond'",
        table(t)
    )
}

/// Marks the live rows of `t` last loaded before `$1` (µs since the epoch) deleted: the end of a
/// copy, soft deletes. When the source deleted them is unknown: each keeps the op, position and
/// commit time of its last change.
pub fn mark_deleted_loaded_before(t: &TargetTable) -> String {
    format!(
        "UPDATE {} SET {DELETED} = true, {LOADED_AT} = now() \
         WHERE {LOADED_AT} < 'epoch'::timestamptz + $1::bigint * interval '1 microsecond' \
         AND {DELETED} IS NOT true",
        table(t)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(ident("a\"b"), "\"a\"\"b\"");
        let t = TargetTable {
            schema: "acme_in_txn".into(),
            table: "order".into(),
        };
        assert_eq!(table(&t), "\"acme_in_txn\".\"order\"");
        let both = apply_by_key(
            &t,
            "stage_0",
            &["id".into(), "v".into()],
            &["id".into()],
            false,
            true,
            false,
            KeyedApply::Probe,
            Pass::All,
        );
        assert_eq!(both.len(), 2);
        assert!(both[0].contains("t.\"id\" = s.\"id\""), "{both:?}");
        assert!(both[1].contains("DISTINCT ON (\"id\")"), "{both:?}");
        assert!(
            both[1].contains("ON CONFLICT (\"id\") DO UPDATE SET \"v\" = EXCLUDED.\"v\","),
            "{both:?}"
        );
        let unique = apply_by_key(
            &t,
            "stage_0",
            &["id".into()],
            &["id".into()],
            true,
            false,
            false,
            KeyedApply::Probe,
            Pass::All,
        );
        assert_eq!(unique.len(), 1, "no deletes, no DELETE");
        assert!(unique[0].contains("FROM \"stage_0\" AS s"), "{unique:?}");
        let merge = apply_by_key(
            &t,
            "stage_0",
            &["id".into(), "v".into()],
            &["id".into()],
            true,
            true,
            false,
            KeyedApply::Join,
            Pass::All,
        );
        assert_eq!(merge.len(), 1, "one MERGE does it all");
        assert!(merge[0].contains("THEN DELETE"), "{merge:?}");
        assert!(
            merge[0].contains("UPDATE SET \"v\" = s.\"v\","),
            "{merge:?}"
        );
        assert_eq!(KeyedApply::choose(100_000, 900_000), KeyedApply::Probe);
        assert_eq!(KeyedApply::choose(900_000, 0), KeyedApply::Join);
    }

    fn target() -> TargetTable {
        TargetTable {
            schema: "s".into(),
            table: "t".into(),
        }
    }

    /// Every statement of every path, for `soft_delete`.
    fn all_statements(soft_delete: bool) -> Vec<String> {
        let (t, columns, key) = (target(), ["id".into(), "v".into()], ["id".into()]);
        let mut all = vec![
            create_table(&t, &[("id".into(), "int".into())], &key, soft_delete),
            capture_moved_rows(&t, "stage_0", &key, soft_delete, 1),
            partial_rows_without_target(&t, "stage_0", &key, soft_delete, 1),
        ];
        for (how, pass) in [
            (KeyedApply::Probe, Pass::All),
            (KeyedApply::Join, Pass::All),
            (KeyedApply::Probe, Pass::Generation(1)),
        ] {
            all.extend(apply_by_key(
                &t,
                "stage_0",
                &columns,
                &key,
                false,
                true,
                soft_delete,
                how,
                pass,
            ));
        }
        all
    }

    #[test]
    fn without_soft_deletes_nothing_names_the_deleted_column() {
        for statement in all_statements(false) {
            assert!(!statement.contains(DELETED), "{statement}");
        }
        let merge = &apply_by_key(
            &target(),
            "stage_0",
            &["id".into(), "v".into()],
            &["id".into()],
            true,
            true,
            false,
            KeyedApply::Join,
            Pass::All,
        )[0];
        assert_eq!(
            merge,
            "MERGE INTO \"s\".\"t\" AS t USING \"stage_0\" AS s ON t.\"id\" = s.\"id\"
WHEN MATCHED AND s._tidemark_op = 'delete' THEN DELETE
WHEN MATCHED THEN UPDATE SET \"v\" = s.\"v\", \"_tidemark_op\" = s.\"_tidemark_op\", \"_tidemark_position\" = s.\"_tidemark_position\", \"_tidemark_commit_ts\" = s.\"_tidemark_commit_ts\", _tidemark_loaded_at = now()
WHEN NOT MATCHED AND s._tidemark_op <> 'delete' THEN INSERT (\"id\", \"v\", \"_tidemark_op\", \"_tidemark_position\", \"_tidemark_commit_ts\", _tidemark_loaded_at) VALUES (s.\"id\", s.\"v\", s.\"_tidemark_op\", s.\"_tidemark_position\", s.\"_tidemark_commit_ts\", now())"
        );
    }

    #[test]
    fn soft_deletes_mark_rows_instead_of_deleting_them() {
        let all = all_statements(true);
        for statement in &all {
            assert!(!statement.contains("DELETE FROM"), "{statement}");
            assert!(!statement.contains("THEN DELETE"), "{statement}");
        }
        assert!(all[0].contains("_tidemark_deleted boolean NOT NULL DEFAULT false"));
        assert!(
            all[1].contains("o._tidemark_deleted IS NOT true"),
            "{}",
            all[1]
        );
        assert!(
            all[2].contains("t._tidemark_deleted IS NOT true"),
            "{}",
            all[2]
        );
        let probe = &all[3..5];
        assert!(
            probe[0].starts_with("UPDATE \"s\".\"t\" AS t SET _tidemark_op = s._tidemark_op")
                && probe[0].contains("_tidemark_deleted = true"),
            "{probe:?}"
        );
        assert!(
            probe[1].contains(", _tidemark_deleted, _tidemark_loaded_at)\nSELECT")
                && probe[1].contains(", false, now() FROM"),
            "{probe:?}"
        );
        assert!(
            probe[1].contains("_tidemark_deleted = false, _tidemark_loaded_at"),
            "{probe:?}"
        );
        let merge = &all[5];
        assert!(
            merge.contains(
                "WHEN MATCHED AND s._tidemark_op = 'delete' THEN UPDATE SET _tidemark_op = s._tidemark_op"
            ) && merge.contains("_tidemark_deleted = false, _tidemark_loaded_at = now()")
                && merge.contains(", _tidemark_deleted, _tidemark_loaded_at) VALUES (")
                && merge.contains(", false, now())"),
            "{merge}"
        );
        let generation = &all[6..];
        assert_eq!(generation.len(), 4, "{generation:?}");
        assert!(generation[0].starts_with("UPDATE"), "{generation:?}");
        assert!(
            generation[1].contains("DO UPDATE SET \"v\" = EXCLUDED.\"v\"")
                && generation[1].ends_with("WHERE t._tidemark_deleted"),
            "a moved row replaces a marked row under its new key: {generation:?}"
        );
        assert!(
            generation[3].ends_with("AND t._tidemark_deleted IS NOT true"),
            "a partial row updates live rows only: {generation:?}"
        );
        assert_eq!(
            mark_all_deleted(&target()),
            "UPDATE \"s\".\"t\" SET _tidemark_deleted = true, _tidemark_loaded_at = now() \
             WHERE _tidemark_deleted IS NOT true"
        );
        assert!(mark_deleted_loaded_before(&target()).starts_with("UPDATE"));
    }
}
