//! Copying existing rows (`source::mysql::copy`) gives what streaming gives: for the same table
//! and rows, the schema equals the binlog's Schema and every copied value equals the binlog's
//! after image; key ranges cover every row exactly once.

mod support;

use std::collections::HashSet;
use std::ops::ControlFlow;
use std::time::Duration;

use mysql_async::prelude::Queryable;
use tidemark::error::ErrorKind;
use tidemark::event::{ChangeEvent, Row, TableSchema, Value};
use tidemark::source::mysql::copy::{KeyRange, key_ranges, read_chunk, table_schema};
use tidemark::source::mysql::reader::{BinlogReader, ReaderOptions, StartPosition};

use support::type_matrix::{UPDATE_ROWS_2_AND_4, collect_changes, insert_matrix_rows};

/// A binlog reader at the current end of the log.
async fn reader_at_end(hint: &str) -> BinlogReader {
    let server_id = 3000 + std::process::id() % 100_000;
    let mut options = ReaderOptions::new(hint, support::mysql_url(), server_id);
    options.heartbeat = Duration::from_secs(1);
    BinlogReader::connect(options, StartPosition::End)
        .await
        .unwrap()
}

/// Every row of `range`, in the order read.
async fn read_all(
    conn: &mut mysql_async::Conn,
    schema: &TableSchema,
    range: &KeyRange,
) -> Vec<Row> {
    let mut rows = Vec::new();
    let count = read_chunk(conn, schema, range, 7, |batch: Vec<Row>| {
        assert!(batch.len() <= 7, "batches hold at most batch_rows rows");
        rows.extend(batch);
        ControlFlow::Continue(())
    })
    .await
    .unwrap();
    assert_eq!(count as usize, rows.len());
    rows
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copied_matrix_equals_streamed_matrix() {
    let (mut conn, db) = support::fresh_mysql_database("copy_types").await;
    support::type_matrix::create_table(&mut conn).await;
    let mut reader = reader_at_end("copy_types").await;
    insert_matrix_rows(&mut conn).await;
    let streamed = collect_changes(&mut reader, &db, 5).await;

    let mut copy_conn = support::mysql_conn(&support::mysql_url()).await;
    let schema = table_schema(&mut copy_conn, &db, "matrix")
        .await
        .unwrap()
        .expect("matrix exists");
    let binlog_schema = &streamed[0].table;
    for (ours, theirs) in schema.columns.iter().zip(&binlog_schema.columns) {
        assert_eq!(ours, theirs, "column {}", theirs.name);
    }
    assert_eq!(schema, **binlog_schema);

    let ranges = key_ranges(&mut copy_conn, &schema, 1_000).await.unwrap();
    assert_eq!(ranges.len(), 1, "5 rows are one chunk");
    let copied = read_all(&mut copy_conn, &schema, &ranges[0]).await;
    assert_eq!(copied.len(), 5);
    assert_rows_equal(&schema, &copied, &streamed);

    // Updated values (new extremes, negative TIME, fractional TIMESTAMP...) too.
    conn.query_drop(UPDATE_ROWS_2_AND_4).await.unwrap();
    let updated = collect_changes(&mut reader, &db, 2).await;
    reader.close().await;
    let copied = read_all(&mut copy_conn, &schema, &ranges[0]).await;
    let rows_2_and_4 = [copied[1].clone(), copied[3].clone()];
    assert_rows_equal(&schema, &rows_2_and_4, &updated);
}

/// Each copied row equals the after image of the change at the same place, column by column.
fn assert_rows_equal(schema: &TableSchema, copied: &[Row], streamed: &[ChangeEvent]) {
    assert_eq!(copied.len(), streamed.len());
    for (change, row) in streamed.iter().zip(copied) {
        let after = change.after.as_ref().unwrap();
        assert_eq!(after.len(), row.len());
        for (i, column) in schema.columns.iter().enumerate() {
            assert_eq!(
                row[i], after[i],
                "row {:?} column {} ({:?})",
                after[0], column.name, column.ty
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemas_equal_the_binlog_for_every_kind_of_key() {
    let (mut conn, db) = support::fresh_mysql_database("copy_keys").await;
    let tables = [
        (
            "pk_reversed",
            "k VARCHAR(10), n INT, v INT, PRIMARY KEY (n, k)",
            "('a', 1, 2)",
        ),
        (
            "promoted",
            "v INT, u INT NOT NULL, UNIQUE KEY (u)",
            "(1, 2)",
        ),
        (
            "nullable_unique",
            "u INT NULL, v INT, UNIQUE KEY (u)",
            "(1, 2)",
        ),
        (
            "keyless",
            "a INT, b VARCHAR(5) CHARACTER SET latin1",
            "(1, 'x')",
        ),
    ];
    for (name, defs, _) in tables {
        conn.query_drop(format!("CREATE TABLE {name} ({defs})"))
            .await
            .unwrap();
    }
    let mut reader = reader_at_end("copy_keys").await;
    for (name, _, row) in tables {
        conn.query_drop(format!("INSERT INTO {name} VALUES {row}"))
            .await
            .unwrap();
    }
    let streamed = collect_changes(&mut reader, &db, tables.len()).await;
    reader.close().await;
    let mut copy_conn = support::mysql_conn(&support::mysql_url()).await;
    for change in &streamed {
        let name = change.table.id.name.to_string();
        let schema = table_schema(&mut copy_conn, &db, &name)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(schema, *change.table, "table {name}");
    }
    assert_eq!(streamed[0].table.primary_key, [1, 0]);
    assert_eq!(streamed[1].table.primary_key, [1]);
    assert!(streamed[3].table.primary_key.is_empty());
}

/// Copies `table` in chunks of `chunk_rows` and checks that every row comes exactly once and
/// that no chunk holds more than twice `chunk_rows`; returns the number of chunks.
async fn assert_chunks_cover(
    conn: &mut mysql_async::Conn,
    db: &str,
    table: &str,
    rows: usize,
    chunk_rows: u64,
) -> usize {
    let schema = table_schema(conn, db, table).await.unwrap().unwrap();
    let ranges = key_ranges(conn, &schema, chunk_rows).await.unwrap();
    assert!(ranges[0].lower.is_none() && ranges[ranges.len() - 1].upper.is_none());
    let mut seen = HashSet::new();
    for range in &ranges {
        let chunk = read_all(conn, &schema, range).await;
        assert!(
            chunk.len() as u64 <= 2 * chunk_rows,
            "{table}: {} rows in {range}",
            chunk.len()
        );
        for row in chunk {
            assert!(
                seen.insert(format!("{row:?}")),
                "{table}: row {row:?} copied twice"
            );
        }
    }
    assert_eq!(seen.len(), rows, "{table}: every row once");
    ranges.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_ranges_cover_every_row_exactly_once() {
    let (mut conn, db) = support::fresh_mysql_database("copy_chunks").await;
    let fill = |table: &str, select: &str, n: usize| {
        format!(
            "INSERT INTO {table} WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s \
             WHERE n < {n}) SELECT {select} FROM s"
        )
    };
    let statements = [
        "SET SESSION max_recursive_iterations = 100000".to_owned(),
        "CREATE TABLE ints (id BIGINT PRIMARY KEY, v VARCHAR(20))".to_owned(),
        // Sparse keys, negative ones included.
        fill("ints", "n * 3 - 1000, CONCAT('v', n)", 20_000),
        "CREATE TABLE pairs (k VARCHAR(20), n INT, v INT, PRIMARY KEY (k, n))".to_owned(),
        fill("pairs", "CONCAT('k', n % 37), n, n", 20_000),
        "CREATE TABLE heap (a INT, b VARCHAR(10))".to_owned(),
        fill("heap", "n % 10, 'x'", 3_000),
    ];
    for sql in &statements {
        conn.query_drop(sql).await.unwrap();
    }
    let ints = assert_chunks_cover(&mut conn, &db, "ints", 20_000, 1_000).await;
    assert!(
        (18..=22).contains(&ints),
        "{ints} chunks for 20k rows of 1k"
    );
    let pairs = assert_chunks_cover(&mut conn, &db, "pairs", 20_000, 1_000).await;
    assert!(
        (19..=21).contains(&pairs),
        "{pairs} chunks for 20k rows of 1k"
    );
    // Duplicate rows of a keyless table are distinct rows: count them by debug text per value.
    let schema = table_schema(&mut conn, &db, "heap").await.unwrap().unwrap();
    let ranges = key_ranges(&mut conn, &schema, 100).await.unwrap();
    assert_eq!(ranges, [KeyRange::all()]);
    assert_eq!(read_all(&mut conn, &schema, &ranges[0]).await.len(), 3_000);

    // Rows added beyond both ends after the split still fall in the first and last chunks.
    let schema = table_schema(&mut conn, &db, "ints").await.unwrap().unwrap();
    let ranges = key_ranges(&mut conn, &schema, 5_000).await.unwrap();
    conn.query_drop("INSERT INTO ints VALUES (-5000, 'low'), (900000, 'high')")
        .await
        .unwrap();
    let first = read_all(&mut conn, &schema, &ranges[0]).await;
    let last = read_all(&mut conn, &schema, &ranges[ranges.len() - 1]).await;
    assert_eq!(first[0][0], Value::Int(-5000));
    assert_eq!(last[last.len() - 1][0], Value::Int(900_000));

    // A consumer may stop after a batch; the connection stays usable.
    let mut batches = 0;
    let count = read_chunk(&mut conn, &schema, &KeyRange::all(), 100, |_| {
        batches += 1;
        ControlFlow::Break(())
    })
    .await
    .unwrap();
    assert_eq!((batches, count), (1, 100));
    assert_eq!(read_all(&mut conn, &schema, &ranges[0]).await, first);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_tables_and_grants_are_told_apart() {
    let (mut conn, db) = support::fresh_mysql_database("copy_errors").await;
    conn.query_drop("CREATE TABLE secret (id INT PRIMARY KEY)")
        .await
        .unwrap();
    assert!(
        table_schema(&mut conn, &db, "nope")
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        table_schema(&mut conn, "no_such_db", "t")
            .await
            .unwrap()
            .is_none()
    );
    conn.query_drop("CREATE VIEW peek AS SELECT id FROM secret")
        .await
        .unwrap();
    let view = table_schema(&mut conn, &db, "peek").await.unwrap_err();
    assert_eq!(view.kind(), ErrorKind::Operator, "{view}");
    let schema = table_schema(&mut conn, &db, "secret")
        .await
        .unwrap()
        .unwrap();

    let user = format!("copy{}", std::process::id());
    conn.query_drop(format!("CREATE USER '{user}'@'%' IDENTIFIED BY 'pw'"))
        .await
        .unwrap();
    let url = support::mysql_url().replacen("root@", &format!("{user}:pw@"), 1);
    let mut denied = support::mysql_conn(&url).await;
    let schema_error = table_schema(&mut denied, &db, "secret").await.unwrap_err();
    let read_error = read_chunk(&mut denied, &schema, &KeyRange::all(), 10, |_| {
        ControlFlow::Continue(())
    })
    .await
    .unwrap_err();
    denied.disconnect().await.ok();
    conn.query_drop(format!("DROP USER '{user}'@'%'"))
        .await
        .unwrap();
    for error in [schema_error, read_error] {
        assert_eq!(error.kind(), ErrorKind::Operator, "{error}");
        assert!(
            error.to_string().contains(&format!("{db}.secret")),
            "{error}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_address_and_uuid_types_copy_as_they_stream() {
    let (mut conn, db) = support::fresh_mysql_database("copy_inet").await;
    conn.query_drop("CREATE TABLE addr (id INT PRIMARY KEY, a INET6, u UUID, b INET4)")
        .await
        .unwrap();
    let mut reader = reader_at_end("copy_inet").await;
    conn.query_drop(
        "INSERT INTO addr VALUES (1, '::1', '123e4567-e89b-12d3-a456-426655440000', '1.2.3.4'), \
         (2, '2001:db8::ff00:42:8329', 'f47ac10b-58cc-4372-a567-0e02b2c3d479', '255.0.0.1'), \
         (3, NULL, NULL, NULL)",
    )
    .await
    .unwrap();
    let streamed = collect_changes(&mut reader, &db, 3).await;
    reader.close().await;
    let mut copy_conn = support::mysql_conn(&support::mysql_url()).await;
    let schema = table_schema(&mut copy_conn, &db, "addr")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(schema, *streamed[0].table);
    let copied = read_all(&mut copy_conn, &schema, &KeyRange::all()).await;
    let after: Vec<Row> = streamed.iter().map(|c| c.after.clone().unwrap()).collect();
    assert_eq!(copied, after);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_of_every_splittable_type_chunk_without_gaps_or_overlaps() {
    let (mut conn, db) = support::fresh_mysql_database("copy_typed_keys").await;
    let rows = 3_000;
    // (table, columns, the SELECT over n = 1..=rows that fills it)
    let tables = [
        // Sparse: split by keyset scan, not arithmetic; the largest unsigned key too.
        (
            "sparse",
            "id BIGINT UNSIGNED PRIMARY KEY",
            "n * n * n * 1000",
        ),
        ("bins", "k VARBINARY(16) PRIMARY KEY", "UNHEX(MD5(n))"),
        (
            "times",
            "d DATETIME(6), n INT, PRIMARY KEY (d, n)",
            "'2024-01-01' + INTERVAL (n % 100) SECOND + INTERVAL n MICROSECOND, n",
        ),
        (
            "stamps",
            "t TIMESTAMP(3) PRIMARY KEY",
            "FROM_UNIXTIME(1000000000 + n * 7.001)",
        ),
        ("decs", "k DECIMAL(12,3) PRIMARY KEY", "n * 1.5 - 2000"),
        (
            "latin",
            "k VARCHAR(10) CHARACTER SET latin1, n INT, PRIMARY KEY (k, n)",
            "CONCAT(SUBSTRING('àéîõüÀÉÎÕÜ', n % 10 + 1, 1), n % 13), n",
        ),
        (
            "years",
            "y YEAR, n INT, PRIMARY KEY (y, n)",
            "1901 + n % 200, n",
        ),
        (
            "clock",
            "t TIME(2) PRIMARY KEY",
            "SEC_TO_TIME(n * 97 - 150000) + INTERVAL 0.25 SECOND",
        ),
    ];
    conn.query_drop("SET SESSION max_recursive_iterations = 100000")
        .await
        .unwrap();
    for (name, defs, select) in tables {
        conn.query_drop(format!("CREATE TABLE {name} ({defs})"))
            .await
            .unwrap();
        conn.query_drop(format!(
            "INSERT INTO {name} WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s \
             WHERE n < {rows}) SELECT {select} FROM s"
        ))
        .await
        .unwrap_or_else(|e| panic!("filling {name}: {e}"));
    }
    conn.query_drop("INSERT INTO sparse VALUES (18446744073709551615)")
        .await
        .unwrap();
    for (name, _, _) in tables {
        let expected = if name == "sparse" { rows + 1 } else { rows };
        let chunks = assert_chunks_cover(&mut conn, &db, name, expected, 250).await;
        assert!(
            (11..=14).contains(&chunks),
            "{name}: {chunks} chunks of 250 for {expected} rows"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unusual_declarations_copy_as_they_stream() {
    let (mut conn, db) = support::fresh_mysql_database("copy_decls").await;
    let columns = [
        "`odd name ``q``` INT NOT NULL PRIMARY KEY",
        "tt TINYTEXT CHARACTER SET latin1",
        "tb TINYBLOB",
        "mb MEDIUMBLOB",
        "lt LONGTEXT CHARACTER SET utf8mb4",
        "c255 CHAR(255) CHARACTER SET utf8mb4",
        "c3 CHAR(5) CHARACTER SET utf8mb3 NOT NULL DEFAULT 'x'",
        "u2c CHAR(4) CHARACTER SET ucs2",
        "el ENUM('it''s', 'a,b', 'back\\\\slash', 'é') CHARACTER SET latin1",
        "s64 SET_OF_64_LABELS",
        "b1 BIT(1) NOT NULL DEFAULT b'1'",
        "b33 BIT(33)",
        "dz DECIMAL(65,0)",
        "ds DECIMAL(4,4)",
        "f53 FLOAT(53)",
        "fmd FLOAT(7,3)",
        "flag BOOL",
        "ts TIMESTAMP(2) NOT NULL DEFAULT '2001-02-03 04:05:06.07'",
        "dt0 DATETIME",
        "ls LINESTRING",
        "mp MULTIPOLYGON",
        "gc GEOMETRYCOLLECTION",
        "y YEAR NOT NULL DEFAULT 1999",
        "zf DECIMAL(6,2) ZEROFILL NOT NULL DEFAULT 1.5",
        "zi INT(8) ZEROFILL NOT NULL DEFAULT 42",
    ];
    let labels: Vec<String> = (0..64).map(|i| format!("'l{i}'")).collect();
    let set_of_64 = format!("SET({})", labels.join(","));
    conn.query_drop(format!(
        "CREATE TABLE decls ({}) CHARACTER SET utf8mb4",
        columns.join(", ").replace("SET_OF_64_LABELS", &set_of_64)
    ))
    .await
    .unwrap();
    let mut reader = reader_at_end("copy_decls").await;
    conn.query_drop(
        "INSERT INTO decls (`odd name ``q```, tt, tb, mb, lt, c255, u2c, el, s64, b33, dz, ds, \
         f53, fmd, flag, dt0, ls, mp, gc) VALUES (1, 'ÿé', x'00', x'0102', '{}', \
         REPEAT('€', 255), 'ab€', 'back\\\\slash', 'l0,l25,l63', \
         b'100000000000000000000000000000001', \
         -12345678901234567890123456789012345678901234567890123456789012345, -0.9999, 1e-300, \
         -1234.567, TRUE, '2024-12-31 23:59:59', ST_GeomFromText('LINESTRING(0 0,1 1)'), \
         ST_GeomFromText('MULTIPOLYGON(((0 0,1 0,1 1,0 0)))'), \
         ST_GeomFromText('GEOMETRYCOLLECTION(POINT(1 1))')), (2, NULL, NULL, NULL, NULL, NULL, \
         NULL, 'it''s', '', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)",
    )
    .await
    .unwrap();
    // An invalid ENUM value (index 0) and CHAR trailing blanks, which neither side keeps.
    conn.query_drop("SET SESSION sql_mode = ''").await.unwrap();
    conn.query_drop(
        "INSERT INTO decls (`odd name ``q```, el, c3, u2c) VALUES (3, 'bogus', 'ab  ', 'x  ')",
    )
    .await
    .unwrap();
    let streamed = collect_changes(&mut reader, &db, 3).await;
    reader.close().await;
    let mut copy_conn = support::mysql_conn(&support::mysql_url()).await;
    let schema = table_schema(&mut copy_conn, &db, "decls")
        .await
        .unwrap()
        .unwrap();
    for (ours, theirs) in schema.columns.iter().zip(&streamed[0].table.columns) {
        assert_eq!(ours, theirs, "column {}", theirs.name);
    }
    assert_eq!(schema, *streamed[0].table);
    let copied = read_all(&mut copy_conn, &schema, &KeyRange::all()).await;
    assert_rows_equal(&schema, &copied, &streamed);
}
