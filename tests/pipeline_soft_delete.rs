//! `tidemark run` into a Postgres warehouse with `[warehouse] soft_delete = true`, end to end:
//! a row deleted at the source stays in the target marked `_tidemark_deleted` with the delete's
//! op, position and commit time; a key inserted again is live again; key changes (complete rows
//! from MySQL, rows leaving TOASTed values unchanged from Postgres) leave the old key marked and
//! the new one live; a TRUNCATE and the end of a copy mark rows instead of removing them; small
//! batches (key probes) and large ones (MERGE) alike; and a table created before soft deletes
//! were switched on gets the column. The target's live rows (`NOT _tidemark_deleted`, read
//! through a view) must equal the source.

mod support;

use std::time::Duration;

use support::pg_source::{SlotGuard, TOASTED_DOCS_KEYS, toasted_docs_changes};
use support::pipeline::{
    CONVERGE, GroupConfig, MysqlSetup, Rng, Source, SourceConfig, TablePair, Tidemark, Warehouse,
    fresh_warehouse, seed, wait_checkpoint, wait_tables_equal, wait_until, workload_tables,
};
use support::snapshot::tidemark_command;

/// The source id of the MySQL tests.
const SOURCE: &str = "soft";

/// The `[warehouse]` line that switches soft deletes on.
const SOFT_DELETE: &str = "soft_delete = true\n";

/// Switches soft deletes on in a test's group config.
fn soft(group: &mut GroupConfig) {
    group.warehouse_extra = SOFT_DELETE.into();
}

/// A target row's metadata.
#[derive(Debug, Clone, PartialEq)]
struct Meta {
    op: String,
    /// The packed source position: transaction coordinate << 32 | change number in it.
    position: u128,
    commit_ts: Option<String>,
    deleted: bool,
}

impl Meta {
    /// The transaction part of the position.
    fn txn(&self) -> u128 {
        self.position >> 32
    }
}

/// `"schema"."table"`.
fn qualified(schema: &str, table: &str) -> String {
    format!("\"{schema}\".\"{table}\"")
}

/// The metadata of the target row with key `id`, if there is one.
async fn meta(wh: &Warehouse, schema: &str, table: &str, id: i64) -> Option<Meta> {
    let rows = wh
        .rows(&format!(
            "SELECT _tidemark_op, _tidemark_position::text, _tidemark_commit_ts::text, \
             _tidemark_deleted::text FROM {} WHERE id = {id}",
            qualified(schema, table)
        ))
        .await;
    let row = rows.into_iter().next()?;
    Some(Meta {
        op: row[0].clone().unwrap_or_default(),
        position: row[1].as_deref().unwrap().parse().unwrap(),
        commit_ts: row[2].clone(),
        deleted: row[3].as_deref() == Some("true"),
    })
}

/// The metadata of the target row `id`, which must exist.
async fn meta_of(wh: &Warehouse, schema: &str, table: &str, id: i64) -> Meta {
    meta(wh, schema, table, id)
        .await
        .unwrap_or_else(|| panic!("no target row {id} in {schema}.{table}"))
}

/// The keys of the target rows marked deleted, in order.
async fn marked(wh: &Warehouse, schema: &str, table: &str) -> Vec<i64> {
    wh.rows(&format!(
        "SELECT id FROM {} WHERE _tidemark_deleted ORDER BY id",
        qualified(schema, table)
    ))
    .await
    .into_iter()
    .map(|r| r[0].as_deref().unwrap().parse().unwrap())
    .collect()
}

/// The single value of `sql` as text (panics on no row).
async fn value(wh: &Warehouse, sql: &str) -> String {
    wh.value(sql)
        .await
        .unwrap_or_else(|| panic!("no value from {sql}"))
}

/// A view `<table>_live` beside target table `table`: its rows not marked deleted, which the
/// comparison reads as the target. Waits for the table to exist with the soft-delete column
/// (its first batch).
async fn live_view(wh: &Warehouse, schema: &str, table: &str) -> String {
    let has_column = format!(
        "SELECT 1 FROM information_schema.columns WHERE table_schema = '{schema}' \
         AND table_name = '{table}' AND column_name = '_tidemark_deleted'"
    );
    let ready = wait_until(CONVERGE, async || !wh.rows(&has_column).await.is_empty()).await;
    assert!(
        ready,
        "target table {schema}.{table} has no column _tidemark_deleted"
    );
    let view = format!("{table}_live");
    wh.rows(&format!(
        "CREATE OR REPLACE VIEW {} AS SELECT * FROM {} WHERE NOT _tidemark_deleted",
        qualified(schema, &view),
        qualified(schema, table)
    ))
    .await;
    view
}

/// Waits until each MySQL source table of `tables` equals the live rows of its target.
async fn converge_live(s: &mut MysqlSetup, tables: &[&str]) {
    let mut pairs = Vec::new();
    for table in tables {
        let view = live_view(&s.wh, &s.schema, table).await;
        pairs.push(TablePair::new((&s.db, table), (&s.schema, &view)));
    }
    let mut source = Source::Mysql(&mut s.conn);
    wait_tables_equal(&mut s.tm, &mut source, &s.wh.client, &pairs, CONVERGE).await;
}

/// Waits until the warehouse's estimate of `table`'s rows (what the sink's choice of statements
/// reads) reaches `rows`: statistics reach other sessions a little after a commit.
async fn wait_estimated_rows(wh: &Warehouse, schema: &str, table: &str, rows: i64) {
    let sql = format!(
        "SELECT greatest(coalesce(s.n_live_tup, 0), c.reltuples::bigint, 0) FROM pg_class c \
         LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid WHERE c.oid = '{}'::regclass",
        qualified(schema, table)
    );
    let reached = wait_until(CONVERGE, async || {
        wh.value(&sql)
            .await
            .and_then(|v| v.parse::<i64>().ok())
            .is_some_and(|n| n >= rows)
    })
    .await;
    assert!(
        reached,
        "the statistics of {schema}.{table} never showed {rows} rows"
    );
}

/// Small batches against a 3000-row target, so each is applied by key probes (DELETE becomes
/// UPDATE ... FROM, INSERT ... ON CONFLICT revives): deletes, a delete and re-insert within one
/// transaction and across batches, key changes (also onto a deleted key), and a keyless table
/// beside, which appends deletes as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_batches_keep_deleted_rows_marked_and_revive_keys_inserted_again() {
    let mut s = MysqlSetup::start_with(
        "sd_probe",
        SOURCE,
        &[
            "CREATE TABLE item (id INT PRIMARY KEY, v VARCHAR(20), n INT)",
            "CREATE TABLE ev (a INT, b VARCHAR(10))",
        ],
        soft,
    )
    .await;
    let schema = s.schema.clone();
    s.exec(&["INSERT INTO item SELECT seq, CONCAT('v', seq), seq FROM seq_1_to_3000"])
        .await;
    converge_live(&mut s, &["item"]).await;
    // From now on a batch of a few rows is far below a third of the target: key probes.
    wait_estimated_rows(&s.wh, &schema, "item", 3000).await;

    // A delete, and an update of another row in the same transaction: the delete's position is
    // the one just before the update's, its commit time the same.
    s.exec(&[
        "BEGIN",
        "DELETE FROM item WHERE id = 3",
        "UPDATE item SET v = 'marker' WHERE id = 6",
        "COMMIT",
    ])
    .await;
    converge_live(&mut s, &["item"]).await;
    assert_eq!(marked(&s.wh, &schema, "item").await, [3]);
    let deleted = meta_of(&s.wh, &schema, "item", 3).await;
    let updated = meta_of(&s.wh, &schema, "item", 6).await;
    assert!(deleted.deleted && deleted.op == "delete", "{deleted:?}");
    assert!(!updated.deleted && updated.op == "update", "{updated:?}");
    assert_eq!(
        deleted.position + 1,
        updated.position,
        "{deleted:?} {updated:?}"
    );
    assert!(deleted.commit_ts.is_some());
    assert_eq!(deleted.commit_ts, updated.commit_ts);
    assert_eq!(
        value(&s.wh, &format!("SELECT v FROM {schema}.item WHERE id = 3")).await,
        "v3",
        "a marked row keeps its last values"
    );

    // Key changes: one to a new key, one onto a key deleted just before.
    s.exec(&[
        "DELETE FROM item WHERE id = 4",
        "UPDATE item SET id = 50000 WHERE id = 5",
        "UPDATE item SET id = 4, v = 'moved' WHERE id = 7",
    ])
    .await;
    converge_live(&mut s, &["item"]).await;
    assert_eq!(marked(&s.wh, &schema, "item").await, [3, 5, 7]);
    for old in [5, 7] {
        let m = meta_of(&s.wh, &schema, "item", old).await;
        assert_eq!(m.op, "delete", "old key {old}: {m:?}");
    }
    let moved = meta_of(&s.wh, &schema, "item", 4).await;
    assert!(!moved.deleted && moved.op == "update", "{moved:?}");

    // Inserted again in a later batch: live again, with the insert's values and metadata.
    s.exec(&["INSERT INTO item VALUES (3, 'again', 0)"]).await;
    converge_live(&mut s, &["item"]).await;
    assert_eq!(marked(&s.wh, &schema, "item").await, [5, 7]);
    let again = meta_of(&s.wh, &schema, "item", 3).await;
    assert!(!again.deleted && again.op == "insert", "{again:?}");
    assert!(again.position > deleted.position);

    // Deleted and inserted again in one transaction; a key inserted and deleted in one batch
    // never reaches the warehouse, so it leaves no marked row.
    s.exec(&[
        "BEGIN",
        "DELETE FROM item WHERE id = 8",
        "INSERT INTO item VALUES (8, 'back', 8)",
        "INSERT INTO item VALUES (9001, 'gone', 0)",
        "DELETE FROM item WHERE id = 9001",
        "COMMIT",
    ])
    .await;
    converge_live(&mut s, &["item"]).await;
    assert_eq!(marked(&s.wh, &schema, "item").await, [5, 7]);
    let back = meta_of(&s.wh, &schema, "item", 8).await;
    assert!(!back.deleted && back.op == "insert", "{back:?}");
    assert_eq!(meta(&s.wh, &schema, "item", 9001).await, None);

    // A keyless table appends its deletes as rows, none of them marked.
    s.exec(&[
        "INSERT INTO ev VALUES (1, 'x')",
        "DELETE FROM ev WHERE a = 1",
    ])
    .await;
    let events = format!(
        "SELECT a::text, b, _tidemark_op, _tidemark_deleted::text FROM {schema}.ev \
         WHERE to_regclass('{schema}.ev') IS NOT NULL ORDER BY _tidemark_position"
    );
    let expected = [["1", "x", "insert", "false"], ["1", "x", "delete", "false"]]
        .map(|row| row.map(|v| Some(v.to_string())).to_vec())
        .to_vec();
    let mut last = Vec::new();
    let appended = wait_until(CONVERGE, async || {
        last = if s.wh.table_exists(&schema, "ev").await {
            s.wh.rows(&events).await
        } else {
            Vec::new()
        };
        last == expected
    })
    .await;
    assert!(appended, "keyless table rows: {last:?}");
}

/// Batches of hundreds of rows against a target of about a thousand, so each is applied by
/// MERGE (its deletes become `WHEN MATCHED ... THEN UPDATE`): deletes, key changes and updates in
/// one transaction, keys inserted again, then a TRUNCATE, which marks every live row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_batches_mark_deletes_by_merge_and_truncate_marks_every_row() {
    let mut s = MysqlSetup::start_with(
        "sd_merge",
        SOURCE,
        &["CREATE TABLE item (id INT PRIMARY KEY, v VARCHAR(20), n INT)"],
        soft,
    )
    .await;
    let schema = s.schema.clone();
    s.exec(&["INSERT INTO item SELECT seq, CONCAT('v', seq), seq FROM seq_1_to_1000"])
        .await;
    converge_live(&mut s, &["item"]).await;

    // 800 staged rows (300 deletes, 100 moves of two rows each, 300 updates) against 1000.
    s.exec(&[
        "BEGIN",
        "DELETE FROM item WHERE id <= 300",
        "UPDATE item SET id = id + 10000 WHERE id BETWEEN 301 AND 400",
        "UPDATE item SET n = -n WHERE id > 700",
        "COMMIT",
    ])
    .await;
    converge_live(&mut s, &["item"]).await;
    assert_eq!(
        marked(&s.wh, &schema, "item").await,
        (1..=400).collect::<Vec<_>>()
    );
    let updated = meta_of(&s.wh, &schema, "item", 1000).await;
    let txns =
        s.wh.rows(&format!(
            "SELECT DISTINCT div(_tidemark_position, 4294967296)::text, _tidemark_op, \
             _tidemark_commit_ts::text FROM {schema}.item WHERE _tidemark_deleted"
        ))
        .await;
    assert_eq!(
        txns,
        [vec![
            Some(updated.txn().to_string()),
            Some("delete".to_string()),
            updated.commit_ts.clone(),
        ]],
        "every marked row carries its delete, of the one transaction"
    );

    // The deleted and moved-away keys inserted again, beside 300 updates: all live.
    s.exec(&[
        "BEGIN",
        "INSERT INTO item SELECT seq, CONCAT('w', seq), 0 FROM seq_1_to_400",
        "UPDATE item SET v = 'u' WHERE id BETWEEN 401 AND 700",
        "COMMIT",
    ])
    .await;
    converge_live(&mut s, &["item"]).await;
    assert_eq!(marked(&s.wh, &schema, "item").await, Vec::<i64>::new());
    let again = meta_of(&s.wh, &schema, "item", 1).await;
    assert!(!again.deleted && again.op == "insert", "{again:?}");

    // TRUNCATE: every row is marked, keeping the op and position of its last change; rows
    // inserted after it are live.
    let before = meta_of(&s.wh, &schema, "item", 1000).await;
    s.exec(&[
        "TRUNCATE TABLE item",
        "INSERT INTO item VALUES (1, 'after', 1), (2000, 'new', 0)",
    ])
    .await;
    converge_live(&mut s, &["item"]).await;
    let rows =
        s.wh.rows(&format!(
            "SELECT count(*) FILTER (WHERE _tidemark_deleted)::text, \
             count(*) FILTER (WHERE NOT _tidemark_deleted)::text FROM {schema}.item"
        ))
        .await;
    // 1000 keys and the 100 moved ones, less key 1 inserted again.
    assert_eq!(
        rows,
        [vec![Some("1099".to_string()), Some("2".to_string())]]
    );
    let after = meta_of(&s.wh, &schema, "item", 1000).await;
    assert_eq!(
        after,
        Meta {
            deleted: true,
            ..before
        }
    );
}

/// A target table created without soft deletes gets the column at its first batch after a
/// restart with them; its rows are live, and deletes from then on are marked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_created_without_soft_deletes_gets_the_column_when_they_are_switched_on() {
    let mut s = MysqlSetup::start(
        "sd_switch",
        SOURCE,
        &["CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(10))"],
    )
    .await;
    let schema = s.schema.clone();
    s.exec(&[
        "INSERT INTO t VALUES (1, 'a'), (2, 'b'), (3, 'c'), (5, 'e')",
        "DELETE FROM t WHERE id = 5",
    ])
    .await;
    s.converge(&["t"]).await;
    let columns = s.wh.column_types(&schema, "t").await;
    assert!(
        columns.iter().all(|(name, _)| name != "_tidemark_deleted"),
        "without soft deletes there is no column: {columns:?}"
    );
    let versions = format!(
        "SELECT version::text FROM tidemark.table_versions WHERE target_table = 't' \
         AND source_id = '{SOURCE}'"
    );
    let version = value(&s.wh, &versions).await;

    let status = s.tm.terminate(Duration::from_secs(20)).await;
    assert!(status.success(), "{status:?}");
    soft(&mut s.group);
    let state = s.tm.dir().join("state");
    std::fs::write(&s.tm.config_path, s.group.render(&state)).unwrap();
    s.run().await;
    s.exec(&[
        "DELETE FROM t WHERE id = 1",
        "INSERT INTO t VALUES (6, 'f')",
    ])
    .await;
    converge_live(&mut s, &["t"]).await;
    assert!(
        s.wh.column_types(&schema, "t")
            .await
            .contains(&("_tidemark_deleted".to_string(), "boolean".to_string()))
    );
    assert_eq!(marked(&s.wh, &schema, "t").await, [1]);
    assert_eq!(
        value(
            &s.wh,
            &format!("SELECT string_agg(id::text, ',' ORDER BY id) FROM {schema}.t WHERE NOT _tidemark_deleted")
        )
        .await,
        "2,3,6"
    );
    assert_eq!(
        value(&s.wh, &versions).await,
        version,
        "the metadata column is no new version of the table"
    );
    assert!(
        s.tm.stderr()
            .contains("added the soft-delete column to the target table"),
        "{}",
        s.tm.logs()
    );
}

/// Copied rows load straight into the target live; a copy requested again marks the rows the
/// source no longer has instead of deleting them, keeping their last change's metadata.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_end_of_a_copy_marks_the_rows_the_source_no_longer_has() {
    let mut ddl = workload_tables(&["a"]);
    ddl.push(
        "INSERT INTO a (id, v, s) SELECT seq, seq * 7, CONCAT('row ', seq) FROM seq_1_to_3000"
            .to_string(),
    );
    let wh = fresh_warehouse("sd_copy").await;
    let mut s = MysqlSetup::prepare(wh, "sd_copy", "sdcopy", &ddl, |g| {
        soft(g);
        g.sources[0].snapshot = "initial_only";
        g.sources[0].extra.push_str("snapshot_chunk_rows = 1000\n");
    })
    .await;
    s.tm.spawn();
    converge_live(&mut s, &["a"]).await;
    let schema = s.schema.clone();
    assert_eq!(
        value(
            &s.wh,
            &format!("SELECT count(*) FILTER (WHERE NOT _tidemark_deleted) FROM {schema}.a")
        )
        .await,
        "3000",
        "copied rows are live"
    );

    // Changes are not streamed (initial_only); the copy asked for next brings them.
    s.exec(&[
        "DELETE FROM a WHERE id <= 10",
        "INSERT INTO a (id, v) VALUES (9000, 1)",
    ])
    .await;
    let asked = tidemark_command(&["snapshot", "--source", "sdcopy"], &s.tm.config_path);
    assert_eq!(asked.status.code(), Some(0), "{asked:?}");
    converge_live(&mut s, &["a"]).await;
    assert_eq!(
        marked(&s.wh, &schema, "a").await,
        (1..=10).collect::<Vec<_>>()
    );
    let gone = meta_of(&s.wh, &schema, "a", 1).await;
    assert_eq!(
        gone.op, "insert",
        "a row gone by the copy keeps its last change: {gone:?}"
    );
    assert_eq!(gone.commit_ts, None, "{gone:?}");
}

/// `shop.docs`, whose text columns `a` and `b` are stored out of line uncompressed once long
/// (STORAGE EXTERNAL), so an update that does not touch them sends them as unchanged; replica
/// identity DEFAULT, so a delete sends the key alone.
const TOASTED_DOCS: &str = "CREATE SCHEMA shop;
     CREATE TABLE shop.docs (id int PRIMARY KEY, a text, b text, n int);
     ALTER TABLE shop.docs ALTER COLUMN a SET STORAGE EXTERNAL;
     ALTER TABLE shop.docs ALTER COLUMN b SET STORAGE EXTERNAL;";

/// A Postgres source database made by `ddl`, a fresh warehouse with soft deletes, and tidemark
/// running with the source's slot created and its start checkpointed.
struct PgSetup {
    // Fields drop in this order: tidemark stops before its slot is dropped.
    tm: Tidemark,
    _slot: SlotGuard,
    source: Warehouse,
    warehouse: Warehouse,
}

const PG_SCHEMA: &str = "acme_in_txn";

async fn pg_setup(hint: &str, ddl: &str) -> PgSetup {
    let source = fresh_warehouse(&format!("{hint}_src")).await;
    source.client.batch_execute(ddl).await.unwrap();
    let warehouse = fresh_warehouse(&format!("{hint}_wh")).await;
    let source_id = format!("pg-{hint}");
    // Unique per database: concurrent test processes share the server's slots.
    let slot = format!("{}_slot", source.db.to_lowercase());
    let mut config = SourceConfig::postgres(&source_id, &source.url, &["shop.*"]);
    config.extra.push_str(&format!("slot = \"{slot}\"\n"));
    let mut group = GroupConfig::new(&warehouse.url, vec![config]);
    soft(&mut group);
    let guard = SlotGuard {
        url: source.url.clone(),
        slot,
    };
    let mut tm = Tidemark::start(&group);
    wait_checkpoint(&mut tm, &warehouse, &source_id, Duration::from_secs(30)).await;
    PgSetup {
        tm,
        _slot: guard,
        source,
        warehouse,
    }
}

impl PgSetup {
    /// Runs `statements` at the source, in order.
    async fn run(&self, statements: &[&str]) {
        for statement in statements {
            self.source
                .client
                .batch_execute(statement)
                .await
                .unwrap_or_else(|e| panic!("{statement}: {e}"));
        }
    }

    /// Waits until `shop.docs` equals the live rows of its target.
    async fn converge(&mut self) {
        let view = live_view(&self.warehouse, PG_SCHEMA, "docs").await;
        let pairs = [TablePair::new(("shop", "docs"), (PG_SCHEMA, &view))];
        let mut source = Source::Postgres(&self.source.client);
        wait_tables_equal(
            &mut self.tm,
            &mut source,
            &self.warehouse.client,
            &pairs,
            CONVERGE,
        )
        .await;
    }

    /// Panics if an update leaving values unchanged was skipped for want of its row.
    fn assert_nothing_skipped(&self) {
        let logs = self.tm.logs();
        assert!(
            !logs.contains("were skipped"),
            "no partial update should have been skipped:\n{logs}"
        );
    }
}

/// A Postgres source: a delete keeps its row's TOASTed values marked; updates leaving them
/// unchanged apply to live rows; a key change leaving them unchanged (a move) marks the old key
/// and brings the values to the new one, also onto a marked key and through a temporary key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_deletes_and_moves_of_toasted_rows_leave_marked_rows() {
    let mut s = pg_setup("sd_pg", TOASTED_DOCS).await;
    s.run(&["INSERT INTO shop.docs
             SELECT g, repeat('a', 9000) || g, repeat('b', 9000) || g, 0
             FROM generate_series(1, 6) g"])
        .await;
    s.converge().await;

    // A delete (the key alone) and an update leaving the TOASTed values unchanged, in one
    // transaction.
    s.run(&["BEGIN;
             DELETE FROM shop.docs WHERE id = 1;
             UPDATE shop.docs SET n = 100 WHERE id = 2;
             COMMIT;"])
        .await;
    s.converge().await;
    let wh = &s.warehouse;
    let deleted = meta_of(wh, PG_SCHEMA, "docs", 1).await;
    let updated = meta_of(wh, PG_SCHEMA, "docs", 2).await;
    assert!(deleted.deleted && deleted.op == "delete", "{deleted:?}");
    assert_eq!(
        deleted.position + 1,
        updated.position,
        "{deleted:?} {updated:?}"
    );
    assert_eq!(deleted.commit_ts, updated.commit_ts);
    assert_eq!(
        value(
            wh,
            &format!("SELECT length(a)::text FROM {PG_SCHEMA}.docs WHERE id = 1")
        )
        .await,
        "9001",
        "the marked row keeps its TOASTed value"
    );

    // A move onto the marked key 1: the old key 3 is marked, key 1 live with 3's values.
    s.run(&["UPDATE shop.docs SET id = 1 WHERE id = 3"]).await;
    s.converge().await;
    let wh = &s.warehouse;
    assert_eq!(marked(wh, PG_SCHEMA, "docs").await, [3]);
    let moved = meta_of(wh, PG_SCHEMA, "docs", 1).await;
    assert!(!moved.deleted && moved.op == "update", "{moved:?}");
    assert_eq!(meta_of(wh, PG_SCHEMA, "docs", 3).await.op, "delete");

    // Two rows swap keys through a temporary key, in one transaction (one batch): the
    // temporary key's row is marked; then key 3 inserted again, and updated leaving its
    // values unchanged in the same transaction.
    s.run(&[
        "BEGIN;
         UPDATE shop.docs SET id = -1 WHERE id = 4;
         UPDATE shop.docs SET id = 4 WHERE id = 5;
         UPDATE shop.docs SET id = 5, n = 55 WHERE id = -1;
         COMMIT;",
        "BEGIN;
         INSERT INTO shop.docs VALUES (3, repeat('c', 9000), 'three', 3);
         UPDATE shop.docs SET n = 33 WHERE id = 3;
         COMMIT;",
    ])
    .await;
    s.converge().await;
    let wh = &s.warehouse;
    assert_eq!(marked(wh, PG_SCHEMA, "docs").await, [-1]);
    s.assert_nothing_skipped();

    // A warehouse that missed a row's insert holds at most its marked earlier row, whose
    // values are not the source's: an update leaving values unchanged is skipped, as for a
    // missing row, and the marked row stays as it was.
    let wh = &s.warehouse;
    value(
        wh,
        &format!("UPDATE {PG_SCHEMA}.docs SET _tidemark_deleted = true WHERE id = 2 RETURNING id"),
    )
    .await;
    s.run(&["UPDATE shop.docs SET n = 200 WHERE id = 2"]).await;
    let skipped = wait_until(CONVERGE, async || s.tm.stderr().contains("were skipped")).await;
    assert!(skipped, "{}", s.tm.logs());
    let wh = &s.warehouse;
    assert_eq!(
        value(
            wh,
            &format!("SELECT n::text FROM {PG_SCHEMA}.docs WHERE id = 2 AND _tidemark_deleted")
        )
        .await,
        "100"
    );
}

/// Random updates, key changes (leaving TOASTed values unchanged), swaps, deletes and inserts of
/// a few dozen keys, many per batch: the live rows equal the source, and the marked rows are
/// keys the source had.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_changes_of_toasted_rows_leave_live_rows_equal_to_the_source() {
    let mut s = pg_setup("sd_pg_moves", TOASTED_DOCS).await;
    let mut rng = Rng::new(seed(
        "random_changes_of_toasted_rows_leave_live_rows_equal_to_the_source",
    ));
    let statements = toasted_docs_changes(&mut rng, false);
    let statements: Vec<&str> = statements.iter().map(String::as_str).collect();
    s.run(&statements).await;
    s.converge().await;
    s.assert_nothing_skipped();
    let marked = marked(&s.warehouse, PG_SCHEMA, "docs").await;
    assert!(
        marked
            .iter()
            .all(|k| *k == -1 || (1..=TOASTED_DOCS_KEYS).contains(k)),
        "marked keys the source never had: {marked:?}"
    );
}
