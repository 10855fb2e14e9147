//! `tidemark run` end to end through the Redshift path: batches staged as gzip CSV in the S3
//! test server, loaded by the Data API test server (which runs the SQL on Postgres after
//! refusing what Redshift would refuse, and emulates COPY from a manifest). The target tables
//! are read from that Postgres database and compared with the source.

mod support;

use std::time::Duration;

use mysql_async::prelude::Queryable;
use support::pipeline::{
    CONVERGE, JOURNAL_TABLE, JournalWriter, MysqlSetup, Rng, fresh_warehouse, pg_rows, seed,
    start_writer, wait_journal_equal, wait_until, workload_tables,
};
use support::redshift_path::RedshiftPath;
use support::type_matrix::{
    MAXIMUM, MINIMUM, TYPICAL, UPDATE_ROWS_2_AND_4, ZEROS, create_table_statements, insert,
};

/// A MySQL source loading into a fresh warehouse database through the Redshift path, with
/// `extra` `[warehouse]` lines; tidemark started.
async fn mysql_through_redshift(
    hint: &str,
    source_id: &str,
    ddl: &[impl AsRef<str>],
    extra: &str,
    configure: impl FnOnce(&mut support::pipeline::GroupConfig),
) -> (MysqlSetup, RedshiftPath) {
    let wh = fresh_warehouse(hint).await;
    let mut path = RedshiftPath::start(hint, &wh).await;
    path.warehouse.extra = extra.to_owned();
    let warehouse = path.warehouse.clone();
    let mut s = MysqlSetup::prepare(wh, hint, source_id, ddl, |g| {
        g.redshift = Some(warehouse);
        configure(g);
    })
    .await;
    s.run().await;
    (s, path)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_type_lands_equal_through_insert_update_delete() {
    // The MAXIMUM row's MEDIUMTEXT holds 100,000 bytes, past Redshift's 65535: cut and
    // flagged under this policy (the oversize test covers both policies), and left out of the
    // comparison.
    let (mut s, path) = mysql_through_redshift(
        "rs_types",
        "types",
        &create_table_statements(),
        "oversize = \"truncate\"\n",
        |_| {},
    )
    .await;

    s.conn.query_drop("BEGIN").await.unwrap();
    for (id, values) in [(1, MINIMUM), (2, MAXIMUM), (4, TYPICAL), (5, ZEROS)] {
        s.conn.query_drop(insert(id, values)).await.unwrap();
    }
    s.conn
        .query_drop("INSERT INTO matrix (id) VALUES (3)")
        .await
        .unwrap();
    s.conn.query_drop("COMMIT").await.unwrap();
    s.converge_skipping(&["matrix"], &["mtx"]).await;
    let schema = s.schema.clone();
    let cut = pg_rows(
        &s.wh.client,
        &format!(
            "SELECT id::text, octet_length(mtx)::text FROM {schema}.matrix \
             WHERE _tidemark_truncated ORDER BY id"
        ),
    )
    .await
    .unwrap();
    assert_eq!(cut, vec![vec![Some("2".into()), Some("65535".into())]]);

    s.conn.query_drop(UPDATE_ROWS_2_AND_4).await.unwrap();
    s.conn
        .query_drop(
            "UPDATE matrix SET c = '', vc = '', tx = '', bl = x'', vb = x'00', e = 'b', st = '', \
         dt = '2000-01-01', f = 0.25, dbl = 5e-324, tm0 = '-00:00:01' WHERE id = 3",
        )
        .await
        .unwrap();
    s.conn
        .query_drop(
            "UPDATE matrix SET c = NULL, vc = NULL, tx = NULL, bn = NULL, bl = NULL, j = NULL, \
         dt = '0000-00-00', dtm6 = '2024-01-01 00:00:00.5' WHERE id = 1",
        )
        .await
        .unwrap();
    // A key change: the old key goes, the new one arrives.
    s.conn
        .query_drop("UPDATE matrix SET id = 50 WHERE id = 5")
        .await
        .unwrap();
    s.converge_skipping(&["matrix"], &["mtx"]).await;

    s.conn
        .query_drop("DELETE FROM matrix WHERE id IN (1, 3)")
        .await
        .unwrap();
    s.converge_skipping(&["matrix"], &["mtx"]).await;
    s.conn.query_drop("DELETE FROM matrix").await.unwrap();
    s.converge(&["matrix"]).await;
    s.tm.assert_running("after the type matrix");

    // Committed batches leave no staged file behind (keep_files defaults to 0).
    let emptied = wait_until(CONVERGE, async || path.objects().await.is_empty()).await;
    assert!(emptied, "staged files left: {:?}", path.objects().await);
    assert!(
        path.failed_statements().is_empty(),
        "statements failed: {:?}",
        path.failed_statements()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordering_schema_changes_and_soft_deletes_follow_the_source() {
    let (mut s, path) = mysql_through_redshift(
        "rs_ddl",
        "ddl",
        &["CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(10), n INT)"],
        "soft_delete = true\nkeep_files = \"1h\"\n",
        |_| {},
    )
    .await;
    // Many changes to few keys in one batch: only the last per key may land.
    s.conn.query_drop("BEGIN").await.unwrap();
    for round in 0..50 {
        s.conn
            .query_drop(format!(
                "INSERT INTO t VALUES (1, 'r{round}', {round}), (2, 'x', {round}) \
                 ON DUPLICATE KEY UPDATE v = VALUES(v), n = VALUES(n)"
            ))
            .await
            .unwrap();
    }
    s.conn.query_drop("COMMIT").await.unwrap();
    s.converge(&["t"]).await;
    s.exec(&[
        "INSERT INTO t VALUES (3, 'three', 3), (4, 'four', 4)",
        "DELETE FROM t WHERE id = 2",
        "ALTER TABLE t ADD COLUMN added DATETIME(6)",
        "UPDATE t SET added = '2024-02-29 12:00:00.123456' WHERE id = 1",
        "ALTER TABLE t MODIFY v VARCHAR(300)",
        "UPDATE t SET v = REPEAT('ü', 300) WHERE id = 3",
        "DELETE FROM t WHERE id = 4",
        "INSERT INTO t (id, v, n) VALUES (4, 'back', 44)",
    ])
    .await;
    let schema = s.schema.clone();
    // Live rows equal the source; deleted ones stay, flagged, with the delete's position.
    let live_equal = wait_until(CONVERGE, async || {
        let rows = pg_rows(
            &s.wh.client,
            &format!(
                "SELECT id::text, v, n::text, to_char(added, 'YYYY-MM-DD HH24:MI:SS.US'), \
                 _tidemark_deleted::text, _tidemark_op FROM {schema}.t ORDER BY id"
            ),
        )
        .await
        .unwrap_or_default();
        let expect = |id: &str, v: &str, n: &str, added: Option<&str>, deleted: &str, op: &str| {
            vec![
                Some(id.to_owned()),
                Some(v.to_owned()),
                Some(n.to_owned()),
                added.map(str::to_owned),
                Some(deleted.to_owned()),
                Some(op.to_owned()),
            ]
        };
        rows == vec![
            expect(
                "1",
                "r49",
                "49",
                Some("2024-02-29 12:00:00.123456"),
                "false",
                "update",
            ),
            expect("2", "x", "49", None, "true", "delete"),
            expect("3", &"ü".repeat(300), "3", None, "false", "update"),
            expect("4", "back", "44", None, "false", "insert"),
        ]
    })
    .await;
    assert!(
        live_equal,
        "target: {:?}",
        pg_rows(
            &s.wh.client,
            &format!("SELECT * FROM {schema}.t ORDER BY id")
        )
        .await
    );
    // The VARCHAR was widened (in bytes: 300 characters of up to 4 bytes).
    let ty = pg_rows(
        &s.wh.client,
        &format!(
            "SELECT format_type(atttypid, atttypmod) FROM pg_attribute \
             WHERE attrelid = '{schema}.t'::regclass AND attname = 'v'"
        ),
    )
    .await
    .unwrap();
    assert_eq!(ty[0][0].as_deref(), Some("character varying(1200)"));
    // keep_files = "1h": the files of committed batches stay.
    assert!(!path.objects().await.is_empty(), "files were deleted");
    s.tm.assert_running("after the schema changes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_staged_file_fails_the_copy_and_the_batch_loads_again() {
    let wh = fresh_warehouse("rs_corrupt").await;
    let path = RedshiftPath::start("rs_corrupt", &wh).await;
    let warehouse = path.warehouse.clone();
    let mut s = MysqlSetup::prepare(
        wh,
        "rs_corrupt",
        "corrupt",
        &["CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(40))"],
        |g| g.redshift = Some(warehouse),
    )
    .await;
    s.tm.extra_env
        .push(("FAILPOINTS".into(), "corrupt_staged_part=1*return".into()));
    s.run().await;
    let values: Vec<String> = (1..=200).map(|i| format!("({i}, 'row {i}')")).collect();
    s.exec(&[format!("INSERT INTO t VALUES {}", values.join(", "))])
        .await;
    s.converge(&["t"]).await;
    let failed = path.failed_statements();
    assert!(
        failed
            .iter()
            .any(|(sql, error)| sql.starts_with("COPY") && error.contains("Load into table")),
        "the corrupt file must fail a COPY: {failed:?}"
    );
    let logs = s.tm.logs();
    assert!(
        logs.contains("Load into table"),
        "the COPY's error must be in the log: {logs}"
    );
    s.tm.assert_running("after the corrupt file");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_values_stop_the_table_or_are_cut_and_flagged_as_configured() {
    let ddl = ["CREATE TABLE big (id INT PRIMARY KEY, doc MEDIUMTEXT)"];
    let long = "x".repeat(70_000);

    // Default policy: the table stops with an error naming column and size; nothing is cut.
    let (mut s, _path) = mysql_through_redshift("rs_over_fail", "over", &ddl, "", |_| {}).await;
    s.exec(&[format!("INSERT INTO big VALUES (1, '{long}')")])
        .await;
    let reported = wait_until(CONVERGE, async || s.tm.logs().contains("`doc`")).await;
    let logs = s.tm.logs();
    assert!(reported, "no error naming the column: {logs}");
    assert!(logs.contains("70000"), "the error names the size: {logs}");
    assert!(logs.contains("65535"), "the error names the limit: {logs}");
    assert!(
        logs.contains("row with key (id = 1)"),
        "the error names the row's key: {logs}"
    );
    let schema = s.schema.clone();
    let rows = pg_rows(
        &s.wh.client,
        &format!("SELECT count(*)::text FROM {schema}.big"),
    )
    .await
    .unwrap_or_default();
    assert!(
        rows.is_empty() || rows[0][0].as_deref() == Some("0"),
        "nothing may land cut: {rows:?}"
    );
    drop(s);

    // oversize = "truncate": the value is cut to the limit and the row flagged.
    let (mut s, _path) = mysql_through_redshift(
        "rs_over_cut",
        "over",
        &ddl,
        "oversize = \"truncate\"\n",
        |_| {},
    )
    .await;
    s.exec(&[
        format!("INSERT INTO big VALUES (1, '{long}')"),
        "INSERT INTO big VALUES (2, 'short')".to_owned(),
    ])
    .await;
    let schema = s.schema.clone();
    let landed = wait_until(CONVERGE, async || {
        pg_rows(
            &s.wh.client,
            &format!(
                "SELECT id::text, octet_length(doc)::text, _tidemark_truncated::text \
                 FROM {schema}.big ORDER BY id"
            ),
        )
        .await
        .unwrap_or_default()
            == vec![
                vec![Some("1".into()), Some("65535".into()), Some("true".into())],
                vec![Some("2".into()), Some("5".into()), Some("false".into())],
            ]
    })
    .await;
    assert!(landed, "logs: {}", s.tm.logs());
    s.tm.assert_running("after the truncated value");
}

const TABLES: [&str; 3] = ["orders", "items", "events"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_ten_times_under_a_writer_loses_and_doubles_nothing() {
    let seed = seed("rs_kill_9");
    let mut rng = Rng::new(seed);
    let mut ddl = workload_tables(&TABLES);
    ddl.push(JOURNAL_TABLE.into());
    let (mut s, path) = mysql_through_redshift("rs_crash", "crash", &ddl, "", |g| {
        g.max_delay = "100ms".into();
        g.max_rows = 500;
    })
    .await;
    let journal = JournalWriter::start(s.source_url(), rng.next_u64());
    let writer = start_writer(
        s.source_url(),
        &TABLES,
        rng.next_u64(),
        300,
        Duration::from_millis(2),
    );
    writer.wait_commits(20).await;
    for kill in 1..=10 {
        tokio::time::sleep(rng.millis(200, 1500)).await;
        s.tm.assert_running(&format!("before kill {kill}"));
        s.tm.kill9();
        if rng.chance(30) {
            tokio::time::sleep(rng.millis(50, 500)).await;
        }
        s.tm.spawn();
        if kill == 5 {
            s.conn
                .query_drop("ALTER TABLE events ADD COLUMN c5 INT")
                .await
                .unwrap();
        }
    }
    let stats = writer.stop().await;
    assert!(stats.commits > 50, "writer too slow: {stats:?}");
    journal.stop().await;
    s.converge_within(&TABLES, Duration::from_secs(120)).await;
    wait_journal_equal(&mut s.tm, &mut s.conn, &s.wh, &s.schema).await;
    s.tm.assert_running("after convergence");
    let rejected: Vec<_> = path
        .failed_statements()
        .into_iter()
        .filter(|(_, e)| e.contains("Redshift would reject"))
        .collect();
    assert!(rejected.is_empty(), "SQL Redshift rejects: {rejected:?}");
}

/// A Postgres source copied (snapshot) and streamed through the Redshift path: the copy's
/// chunks, then inserts, updates, a key change, deletes and a TRUNCATE.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_source_is_copied_then_streamed() {
    let source = fresh_warehouse("rs_pg_src").await;
    source
        .client
        .batch_execute(
            "CREATE SCHEMA shop;
             CREATE TABLE shop.orders (id bigint PRIMARY KEY, qty int NOT NULL, note text,
                 amount numeric(12,2), placed timestamptz, day date, ok boolean, raw bytea,
                 ref uuid, spent interval);
             INSERT INTO shop.orders SELECT g, g % 7, 'note ' || g || E'\n, \"quoted\"',
                 g * 1.25, '2024-01-01 00:00:00+00'::timestamptz + g * interval '1 minute',
                 DATE '2024-01-01' + g, g % 2 = 0, decode(lpad(to_hex(g), 8, '0'), 'hex'),
                 md5(g::text)::uuid, g * interval '1 second' FROM generate_series(1, 3000) g;",
        )
        .await
        .unwrap();
    let wh = fresh_warehouse("rs_pg_wh").await;
    let path = RedshiftPath::start("rs-pg", &wh).await;
    let slot = format!("{}_slot", source.db.to_lowercase());
    let _guard = support::pg_source::SlotGuard {
        url: source.url.clone(),
        slot: slot.clone(),
    };
    let mut config = support::pipeline::SourceConfig::postgres("pg-rs", &source.url, &["shop.*"]);
    config.snapshot = "initial";
    config
        .extra
        .push_str(&format!("slot = \"{slot}\"\nsnapshot_chunk_rows = 500\n"));
    let mut group = support::pipeline::GroupConfig::new(&wh.url, vec![config]);
    group.redshift = Some(path.warehouse.clone());
    let mut tm = support::pipeline::Tidemark::start(&group);
    let pairs: Vec<support::pipeline::TablePair> =
        vec![(("shop", "orders"), ("acme_in_txn", "orders")).into()];
    let mut src = support::pipeline::Source::Postgres(&source.client);
    support::pipeline::wait_tables_equal(&mut tm, &mut src, &wh.client, &pairs, CONVERGE).await;

    source
        .client
        .batch_execute(
            "UPDATE shop.orders SET qty = qty + 100, note = NULL WHERE id % 10 = 0;
             DELETE FROM shop.orders WHERE id % 10 = 1;
             UPDATE shop.orders SET id = id + 100000 WHERE id % 10 = 2;
             INSERT INTO shop.orders (id, qty, note) VALUES (9999999, 1, '');",
        )
        .await
        .unwrap();
    support::pipeline::wait_tables_equal(&mut tm, &mut src, &wh.client, &pairs, CONVERGE).await;
    source
        .client
        .batch_execute("TRUNCATE shop.orders; INSERT INTO shop.orders (id, qty) VALUES (1, 1);")
        .await
        .unwrap();
    support::pipeline::wait_tables_equal(&mut tm, &mut src, &wh.client, &pairs, CONVERGE).await;
    tm.assert_running("after the Postgres source");
    assert!(
        path.failed_statements().is_empty(),
        "{:?}",
        path.failed_statements()
    );
}

/// One source transaction touching more tables than one Data API transaction can load (40
/// statements): the batch is split per table, and a crash between the parts loses and doubles
/// nothing, the keyless table included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_too_large_for_one_transaction_is_split_per_table() {
    let tables: Vec<String> = (0..12).map(|i| format!("t{i}")).collect();
    let mut ddl: Vec<String> = tables
        .iter()
        .map(|t| format!("CREATE TABLE {t} (id INT PRIMARY KEY, v VARCHAR(20))"))
        .collect();
    ddl.push("CREATE TABLE log (seq INT, what VARCHAR(20))".into());
    let (mut s, path) = mysql_through_redshift("rs_split", "split", &ddl, "", |_| {}).await;
    let write_all = |round: u32| {
        let mut statements = vec!["BEGIN".to_owned()];
        for t in &tables {
            statements.push(format!(
                "INSERT INTO {t} VALUES (1, 'r{round}'), ({}, 'new') ON DUPLICATE KEY UPDATE v = VALUES(v)",
                round + 10
            ));
            statements.push(format!("DELETE FROM {t} WHERE id = {}", round + 9));
        }
        statements.push(format!("INSERT INTO log VALUES ({round}, 'round')"));
        statements.push("COMMIT".to_owned());
        statements
    };
    s.exec(&write_all(0)).await;
    let names: Vec<&str> = tables.iter().map(String::as_str).collect();
    s.converge(&names).await;
    // Several transactions per batch: at least one batch committed in parts.
    let parts = path
        .server
        .statements()
        .iter()
        .filter(|(sql, _)| sql.contains("\"table_progress\" (\"source_id\""))
        .count();
    assert!(parts > 0, "no batch was split");

    // A crash between the parts of a split batch: the next run skips what a part applied.
    s.tm.kill9();
    s.tm.extra_env
        .push(("FAILPOINTS".into(), "after_split_part=1*return".into()));
    s.tm.spawn();
    s.exec(&write_all(1)).await;
    let died = wait_until(CONVERGE, async || s.tm.try_exit().is_some()).await;
    assert!(died, "the process never reached the crash point");
    s.tm.extra_env.clear();
    s.tm.spawn();
    s.exec(&write_all(2)).await;
    s.converge(&names).await;
    // The keyless table holds each round's row exactly once.
    let schema = s.schema.clone();
    let once = wait_until(CONVERGE, async || {
        pg_rows(
            &s.wh.client,
            &format!("SELECT seq::text FROM {schema}.log ORDER BY seq"),
        )
        .await
        .unwrap_or_default()
            == vec![
                vec![Some("0".to_owned())],
                vec![Some("1".into())],
                vec![Some("2".into())],
            ]
    })
    .await;
    assert!(
        once,
        "log: {:?}",
        pg_rows(&s.wh.client, &format!("SELECT seq FROM {schema}.log")).await
    );
    s.tm.assert_running("after the split batches");
}

/// `dropped_columns = "drop"`: a column dropped at the source goes from the target too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_column_dropped_at_the_source_is_dropped_when_configured() {
    let (mut s, _path) = mysql_through_redshift(
        "rs_dropcol",
        "dropcol",
        &["CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(10), gone INT)"],
        "dropped_columns = \"drop\"\n",
        |_| {},
    )
    .await;
    s.exec(&["INSERT INTO t VALUES (1, 'a', 1)"]).await;
    s.converge(&["t"]).await;
    s.exec(&[
        "ALTER TABLE t DROP COLUMN gone",
        "INSERT INTO t VALUES (2, 'b')",
    ])
    .await;
    s.converge(&["t"]).await;
    let schema = s.schema.clone();
    let columns = pg_rows(
        &s.wh.client,
        &format!(
            "SELECT column_name::text FROM information_schema.columns \
             WHERE table_schema = '{schema}' AND table_name = 't' AND column_name NOT LIKE '\\_tidemark\\_%' \
             ORDER BY ordinal_position"
        ),
    )
    .await
    .unwrap();
    assert_eq!(
        columns,
        vec![vec![Some("id".to_owned())], vec![Some("v".into())]]
    );
    s.tm.assert_running("after the dropped column");
}
