//! `tidemark run` end to end, schema changes while rows flow: ADD COLUMN, wider types (INT ->
//! BIGINT, VARCHAR(10) -> VARCHAR(100), DECIMAL(10,2) -> DECIMAL(14,4)), DROP COLUMN, a renamed
//! column, RENAME TABLE / ALTER TABLE ... RENAME, TRUNCATE. After each change the target must
//! follow as docs/warehouse-postgres.md ("Schema changes") documents, while a writer keeps
//! changing another table of the same source.

mod support;

use std::time::Duration;

use mysql_async::prelude::Queryable;
use support::pipeline::{
    CONVERGE, MysqlSetup, Rng, pg_rows, seed, start_writer, wait_until, workload_tables,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn target_follows_schema_changes_while_rows_flow() {
    let mut rng = Rng::new(seed("target_follows_schema_changes_while_rows_flow"));
    let mut ddl = vec![
        "CREATE TABLE t (id INT PRIMARY KEY, a INT, s VARCHAR(10), d DECIMAL(10,2), x INT) \
         CHARACTER SET utf8mb4"
            .to_string(),
    ];
    ddl.extend(workload_tables(&["flow"]));
    let mut s = MysqlSetup::start("pl_ddl", "ddl", &ddl).await;
    let schema = s.schema.clone();
    let writer = start_writer(
        s.source_url(),
        &["flow"],
        rng.next_u64(),
        100,
        Duration::from_millis(5),
    );

    let rows: Vec<String> = (1..=20)
        .map(|i| format!("({i}, {i}, 's{i}', {i}.25, {})", i * 10))
        .collect();
    s.conn
        .query_drop(format!("INSERT INTO t VALUES {}", rows.join(", ")))
        .await
        .unwrap();
    s.converge(&["t"]).await;

    // ADD COLUMN between rows of the same batch.
    s.exec(&[
        "INSERT INTO t (id, a, s, d, x) VALUES (21, 21, 's21', 1.5, 210)",
        "ALTER TABLE t ADD COLUMN n INT",
        "INSERT INTO t (id, a, s, d, x, n) VALUES (22, 22, 's22', 2.5, 220, 5)",
        "UPDATE t SET n = id * 100 WHERE id <= 5",
    ])
    .await;
    s.converge(&["t"]).await;

    // ADD COLUMN with a DEFAULT: the binlog does not log the backfill, so rows that have not
    // changed since may hold NULL in the target; changed rows must hold the value.
    s.exec(&[
        "ALTER TABLE t ADD COLUMN dflt INT NOT NULL DEFAULT 7",
        "UPDATE t SET a = a + 1 WHERE id <= 3",
        "INSERT INTO t (id, a, s, d, x) VALUES (23, 23, 's23', 3.5, 230)",
    ])
    .await;
    let table = ["t"];
    s.converge_skipping(&table, &["dflt"]).await;
    let dflt =
        s.wh.rows(&format!(
            "SELECT id::text, dflt::text FROM \"{schema}\".t ORDER BY id"
        ))
        .await;
    for row in &dflt {
        let id: i64 = row[0].as_deref().unwrap().parse().unwrap();
        let changed = id <= 3 || id == 23;
        let ok = match row[1].as_deref() {
            Some("7") => true,
            None => !changed,
            Some(_) => false,
        };
        assert!(
            ok,
            "dflt of row {id} (changed after ADD COLUMN: {changed}): {row:?}"
        );
    }

    // Wider types, with values only the wider types hold, in the same batch as the ALTER.
    s.exec(&[
            "UPDATE t SET a = a + 1 WHERE id = 6",
            "ALTER TABLE t MODIFY a BIGINT, MODIFY s VARCHAR(100), MODIFY d DECIMAL(14,4)",
            "INSERT INTO t (id, a, s, d, x) VALUES (30, 5000000000000, REPEAT('w', 100), 1234567890.1234, 300)",
            "UPDATE t SET d = d + 0.0001, a = a * 1000000000 WHERE id = 1",
        ],
    )
    .await;
    s.converge_skipping(&table, &["dflt"]).await;
    let types: std::collections::HashMap<String, String> =
        s.wh.column_types(&schema, "t").await.into_iter().collect();
    assert_eq!(
        types.get("a").map(String::as_str),
        Some("bigint"),
        "{types:?}"
    );
    assert_eq!(
        types.get("d").map(String::as_str),
        Some("numeric(14,4)"),
        "{types:?}"
    );

    // DROP COLUMN: kept in the target; rows changed afterwards get NULL; others keep theirs.
    s.exec(&[
        "ALTER TABLE t DROP COLUMN x",
        "UPDATE t SET a = a + 1 WHERE id = 2",
        "INSERT INTO t (id, a, s, d) VALUES (31, 31, 's31', 31)",
    ])
    .await;
    s.converge_skipping(&table, &["dflt"]).await;
    let x =
        s.wh.rows(&format!(
            "SELECT id::text, x::text FROM \"{schema}\".t WHERE id IN (2, 4, 31) ORDER BY t.id"
        ))
        .await;
    let expect = |id: &str, v: Option<&str>| vec![Some(id.to_string()), v.map(String::from)];
    assert_eq!(
        x,
        vec![
            expect("2", None),
            expect("4", Some("40")),
            expect("31", None)
        ],
        "dropped column x: NULL for rows changed after the drop, old value otherwise"
    );

    // A renamed column is a dropped column plus a new one: rows that have not changed since
    // hold NULL in the new column, so it is compared for changed rows only.
    s.exec(&[
        "ALTER TABLE t CHANGE COLUMN s label VARCHAR(100)",
        "UPDATE t SET label = CONCAT(label, '!') WHERE id = 7",
    ])
    .await;
    let skip = ["dflt", "label"];
    s.converge_skipping(&table, &skip).await;
    let expected = vec![vec![Some("s7!".to_string()), None]];
    let mut renamed = Err(String::new());
    wait_until(CONVERGE, async || {
        let sql = format!("SELECT label, s FROM \"{schema}\".t WHERE id = 7");
        renamed = pg_rows(&s.wh.client, &sql).await;
        renamed.as_ref() == Ok(&expected)
    })
    .await;
    assert_eq!(
        renamed,
        Ok(expected),
        "row changed after renaming s to label: (label, s)"
    );

    // RENAME TABLE keeps the target's rows under the new name.
    s.exec(&[
        "RENAME TABLE t TO t_renamed",
        "INSERT INTO t_renamed (id, a, label, d) VALUES (40, 40, 'r40', 40)",
        "UPDATE t_renamed SET a = 0 WHERE id = 5",
    ])
    .await;
    let table = ["t_renamed"];
    s.converge_skipping(&table, &skip).await;
    assert!(
        !s.wh.table_exists(&schema, "t").await,
        "old target table t still exists after the rename"
    );
    s.exec(&[
        "ALTER TABLE t_renamed RENAME TO t2",
        "UPDATE t2 SET a = 1 WHERE id = 8",
    ])
    .await;
    let table = ["t2"];
    s.converge_skipping(&table, &skip).await;

    // TRUNCATE empties the target, in order with the changes around it.
    s.exec(&[
        "UPDATE t2 SET a = 2 WHERE id = 9",
        "TRUNCATE TABLE t2",
        "INSERT INTO t2 (id, a, label, d) VALUES (50, 50, 'after', 5)",
    ])
    .await;
    s.converge_skipping(&table, &skip).await;
    let after =
        s.wh.rows(&format!(
            "SELECT id::text, label, dflt::text FROM \"{schema}\".t2"
        ))
        .await;
    assert_eq!(
        after,
        vec![vec![
            Some("50".to_string()),
            Some("after".to_string()),
            Some("7".to_string())
        ]],
        "t2 after TRUNCATE and one insert"
    );
    s.conn.query_drop("TRUNCATE TABLE t2").await.unwrap();
    s.converge_skipping(&table, &skip).await;

    let stats = writer.stop().await;
    assert!(stats.commits > 10, "writer too slow: {stats:?}");
    s.converge(&["flow"]).await;
    s.tm.assert_running("after the schema changes");
}

/// docs/warehouse-postgres.md: a changed primary key is an error naming the table (the target's
/// key is fixed when it is created) - never rows silently merged by the old key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changed_primary_key_is_an_error_naming_the_table() {
    let mut s = MysqlSetup::start(
        "pl_ddl_pk",
        "ddlpk",
        &["CREATE TABLE keyed (id INT NOT NULL, k INT NOT NULL, v VARCHAR(10), PRIMARY KEY (id))"],
    )
    .await;
    let schema = s.schema.clone();
    s.conn
        .query_drop("INSERT INTO keyed VALUES (1, 1, 'a'), (2, 1, 'b')")
        .await
        .unwrap();
    s.converge(&["keyed"]).await;
    s.exec(&[
        "ALTER TABLE keyed DROP PRIMARY KEY, ADD PRIMARY KEY (id, k)",
        "INSERT INTO keyed VALUES (1, 2, 'c')",
    ])
    .await;
    let reported = wait_until(Duration::from_secs(30), async || {
        s.tm.stderr().lines().any(|l| {
            (l.contains(" ERROR ") || l.contains(" WARN "))
                && l.contains("keyed")
                && l.to_lowercase().contains("key")
        })
    })
    .await;
    if let Some(line) =
        s.tm.stderr()
            .lines()
            .find(|l| l.contains("keyed") && !l.contains(" INFO "))
    {
        eprintln!("reported: {line}");
    }
    let rows =
        s.wh.rows(&format!(
            "SELECT id::text, v FROM \"{schema}\".keyed ORDER BY keyed.id, v"
        ))
        .await;
    let silently_merged = rows.iter().filter(|r| r[0].as_deref() == Some("1")).count() == 1
        && rows.iter().any(|r| r[1].as_deref() == Some("c"));
    assert!(
        !silently_merged,
        "the new row (1, 2, 'c') overwrote (1, 1, 'a') in the target: {rows:?}"
    );
    assert!(
        reported,
        "no ERROR/WARN line naming table `keyed` and its key within 30 s of the key change:\n{}",
        s.tm.stderr()
    );
}
