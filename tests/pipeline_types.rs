//! `tidemark run` end to end, the type matrix: every MySQL/MariaDB column type with edge values
//! (NULL vs empty, extremes, zero dates, microseconds, negative and >24 h TIME, emoji, zero
//! bytes) is inserted, updated and deleted at the source; the warehouse table must hold the same
//! values, column by column, in the Postgres types docs/warehouse-postgres.md documents. The
//! matrix (columns and rows) is `tests/support/type_matrix.rs`, shared with tests/mysql_types.rs.

mod support;

use std::time::Duration;

use mysql_async::prelude::Queryable;
use support::pipeline::{CONVERGE, MysqlSetup, wait_until};
use support::type_matrix::{
    COLUMNS, MAXIMUM, MINIMUM, TYPICAL, UPDATE_ROWS_2_AND_4, ZEROS, create_table_statements, insert,
};

/// The source id of every test here.
const SOURCE: &str = "types";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_type_lands_equal_through_insert_update_delete() {
    let mut s = MysqlSetup::start("pl_types", SOURCE, &create_table_statements()).await;

    s.conn.query_drop("BEGIN").await.unwrap();
    for (id, values) in [(1, MINIMUM), (2, MAXIMUM), (4, TYPICAL), (5, ZEROS)] {
        s.conn.query_drop(insert(id, values)).await.unwrap();
    }
    s.conn
        .query_drop("INSERT INTO matrix (id) VALUES (3)")
        .await
        .unwrap();
    s.conn.query_drop("COMMIT").await.unwrap();
    s.converge(&["matrix"]).await;

    // NULL <-> empty, new extremes, and the edits of tests/mysql_types.rs.
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
    s.conn
        .query_drop(
            "UPDATE matrix SET dt = '1999-12-31', ts3 = '1999-12-31 23:59:59.001' WHERE id = 5",
        )
        .await
        .unwrap();
    s.converge(&["matrix"]).await;

    s.conn
        .query_drop("DELETE FROM matrix WHERE id IN (1, 3)")
        .await
        .unwrap();
    s.converge(&["matrix"]).await;
    s.conn.query_drop("DELETE FROM matrix").await.unwrap();
    s.converge(&["matrix"]).await;
    s.tm.assert_running("after the type matrix");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn target_columns_have_the_documented_types_and_key() {
    let mut s = MysqlSetup::start("pl_coltypes", SOURCE, &create_table_statements()).await;
    let schema = s.schema.clone();
    s.conn.query_drop(insert(4, TYPICAL)).await.unwrap();
    let exists = wait_until(CONVERGE, async || {
        s.wh.table_exists(&schema, "matrix").await
    })
    .await;
    assert!(exists, "target table {schema}.matrix never appeared");
    s.tm.assert_running("after the first row");

    let actual = s.wh.column_types(&schema, "matrix").await;
    let mut expected: Vec<(String, String)> = vec![("id".into(), "integer".into())];
    expected.extend(
        COLUMNS
            .iter()
            .map(|c| (c.name.to_string(), c.pg_type.to_string())),
    );
    expected.extend(
        [
            ("_tidemark_op", "text"),
            ("_tidemark_position", "numeric(30,0)"),
            ("_tidemark_commit_ts", "timestamp with time zone"),
            ("_tidemark_loaded_at", "timestamp with time zone"),
        ]
        .map(|(n, t)| (n.to_string(), t.to_string())),
    );
    let mismatches: Vec<String> = expected
        .iter()
        .zip(actual.iter().map(Some).chain(std::iter::repeat(None)))
        .filter(|((n, t), a)| match a {
            // TIME may carry its fractional precision (interval(2)).
            Some((an, at)) => {
                an != n || !(at == t || (t == "interval" && at.starts_with("interval")))
            }
            None => true,
        })
        .map(|((n, t), a)| format!("{n}: expected {t}, got {a:?}"))
        .collect();
    assert!(
        mismatches.is_empty() && actual.len() == expected.len(),
        "target columns differ from docs/warehouse-postgres.md:\n  {}\nall: {actual:?}",
        mismatches.join("\n  ")
    );
    assert_eq!(
        s.wh.primary_key(&schema, "matrix").await,
        vec!["id".to_string()],
        "target primary key"
    );
    let nullable = s.wh
        .value(&format!(
            "SELECT string_agg(column_name, ',' ORDER BY ordinal_position) FROM information_schema.columns \
             WHERE table_schema = '{schema}' AND table_name = 'matrix' AND is_nullable = 'NO'"
        ))
        .await;
    assert_eq!(
        nullable.as_deref(),
        Some("id"),
        "only key columns are NOT NULL in the target (non-key columns must be nullable)"
    );

    // The comparison itself notices a one-microsecond or one-byte difference.
    s.converge(&["matrix"]).await;
    s.wh.rows(&format!(
        "UPDATE \"{schema}\".matrix SET dtm6 = dtm6 + interval '1 microsecond', \
         bn = '\\x00'::bytea || bn"
    ))
    .await;
    let diff = s.diff(&["matrix"]).await;
    let diff = diff.expect_err("a changed target must differ");
    assert!(diff.contains("dtm6") && diff.contains("bn"), "{diff}");
}

/// A NUL character cannot be stored in Postgres text: the documented behaviour is an error
/// naming the table, column and position, never a silently altered value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nul_in_text_fails_loudly_instead_of_altering_the_value() {
    let mut s = MysqlSetup::start("pl_nul", SOURCE, &create_table_statements()).await;
    let schema = s.schema.clone();
    s.conn
        .query_drop("INSERT INTO matrix (id, vc) VALUES (10, 'ok')")
        .await
        .unwrap();
    s.converge(&["matrix"]).await;
    s.conn
        .query_drop("INSERT INTO matrix (id, vc) VALUES (11, CONCAT('a', CHAR(0), 'b'))")
        .await
        .unwrap();
    let failing_gtid: String = s
        .conn
        .query_first("SELECT @@last_gtid")
        .await
        .unwrap()
        .unwrap();
    let reported = wait_until(Duration::from_secs(30), async || {
        let log = s.tm.stderr().to_lowercase();
        log.contains("matrix") && log.contains("vc") && (log.contains("nul") || log.contains("\\0"))
    })
    .await;
    let landed =
        s.wh.rows(&format!(
            "SELECT coalesce(vc, 'NULL') FROM \"{schema}\".matrix WHERE id = 11"
        ))
        .await;
    assert!(
        landed.is_empty(),
        "row with a NUL in vc landed altered: {landed:?} (source value is 'a\\0b')"
    );
    assert!(
        reported,
        "no error naming table matrix, column vc and the NUL within 30 s"
    );
    // The failing transaction is not skipped: the checkpoint stays before it.
    let resume = s.wh.resume_point("types").await.unwrap_or_default();
    let failing_seq = gtid_seq(&failing_gtid);
    let checkpoint_seq = resume
        .split('"')
        .find(|part| part.starts_with("0-"))
        .map(gtid_seq);
    assert!(
        checkpoint_seq.is_some_and(|seq| seq < failing_seq),
        "checkpoint {resume} moved past the failing transaction {failing_gtid}"
    );
}

/// The sequence number of a MariaDB GTID `domain-server-seq` (domain 0).
fn gtid_seq(gtid: &str) -> u64 {
    gtid.rsplit('-')
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// Values bigger than `max_bytes` (a 3 MB LONGBLOB and LONGTEXT with `max_bytes = "64KiB"`)
/// still land whole, and the small rows around them too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_larger_than_max_bytes_land_whole() {
    let mut s = MysqlSetup::start_with("pl_bigval", SOURCE, &create_table_statements(), |g| {
        g.max_bytes = "64KiB".into()
    })
    .await;
    let schema = s.schema.clone();
    s.conn
        .query_drop("INSERT INTO matrix (id, vc) VALUES (20, 'before')")
        .await
        .unwrap();
    s.conn.query_drop(
        "INSERT INTO matrix (id, lb, mtx) VALUES (21, REPEAT(x'00ff10', 1000000), REPEAT('ü', 1000000))",
    )
    .await
    .unwrap();
    s.conn
        .query_drop("INSERT INTO matrix (id, vc) VALUES (22, 'after')")
        .await
        .unwrap();
    s.conn
        .query_drop("UPDATE matrix SET lb = CONCAT(lb, x'00') WHERE id = 21")
        .await
        .unwrap();
    s.converge(&["matrix"]).await;
    let len =
        s.wh.value(&format!(
            "SELECT octet_length(lb)::text FROM \"{schema}\".matrix WHERE id = 21"
        ))
        .await;
    assert_eq!(
        len.as_deref(),
        Some("3000001"),
        "LONGBLOB length in the target"
    );
}

/// Table and column names that need quoting (reserved words, spaces, dashes, a double quote,
/// upper case, non-ASCII) land lowercased and intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn awkward_identifiers_land_quoted_and_lowercased() {
    let mut s = MysqlSetup::start("pl_idents", SOURCE, &create_table_statements()).await;
    for sql in [
        "CREATE TABLE `order` (`select` INT PRIMARY KEY, `my col` VARCHAR(10), `a\"b` INT, \
         `Group` TEXT, `Üml` INT, `from` DATE)",
        "CREATE TABLE `My-Table` (`ID` INT PRIMARY KEY, `Value` VARCHAR(10))",
        "INSERT INTO `order` VALUES (1, 'x', 2, 'g', 3, '2024-01-01'), (2, NULL, NULL, NULL, NULL, NULL)",
        "INSERT INTO `My-Table` VALUES (1, 'v1'), (2, 'v2')",
        "UPDATE `order` SET `my col` = 'y', `a\"b` = 5 WHERE `select` = 1",
        "DELETE FROM `My-Table` WHERE `ID` = 2",
    ] {
        s.conn
            .query_drop(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
    s.converge(&["order", "My-Table"]).await;
}

/// docs/warehouse-postgres.md: two source tables that land on the same target name (`Dup` and
/// `dup`: distinct tables on a case-sensitive MariaDB) are an error naming both - never one
/// table's rows merged into the other's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_source_tables_on_one_target_name_is_an_error_naming_both() {
    let mut s = MysqlSetup::start("pl_dupname", SOURCE, &create_table_statements()).await;
    let schema = s.schema.clone();
    for sql in [
        "CREATE TABLE `Dup` (id INT PRIMARY KEY, v VARCHAR(10))",
        "CREATE TABLE `dup` (id INT PRIMARY KEY, v VARCHAR(10))",
        "INSERT INTO `Dup` VALUES (1, 'upper')",
        "INSERT INTO `dup` VALUES (1, 'lower')",
    ] {
        s.conn.query_drop(sql).await.unwrap();
    }
    let reported = wait_until(Duration::from_secs(30), async || {
        s.tm.stderr().lines().any(|l| {
            (l.contains(" ERROR ") || l.contains(" WARN "))
                && l.contains("Dup")
                && l.contains("dup")
        })
    })
    .await;
    let rows = if s.wh.table_exists(&schema, "dup").await {
        s.wh.rows(&format!("SELECT id::text, v FROM \"{schema}\".dup"))
            .await
    } else {
        Vec::new()
    };
    assert!(
        rows.len() <= 1 && !(rows.len() == 1 && reported),
        "rows of both source tables in target dup, or loaded despite the error: {rows:?}"
    );
    assert!(
        reported,
        "no ERROR/WARN line naming both `Dup` and `dup` within 30 s:\n{}",
        s.tm.stderr()
    );
}
