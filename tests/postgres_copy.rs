//! Reading a Postgres table's existing rows (`source::postgres::copy`, a snapshot's reads)
//! against a real PostgreSQL 15: the copy's schema and values equal what the pgoutput reader
//! streams for the same table and rows (the whole type matrix), key and CTID ranges hold every
//! row exactly once, and readers sharing an exported snapshot see one consistent point while a
//! writer changes the table.

mod support;

use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::time::Duration;

use futures_util::FutureExt;
use support::pg_source::{fresh_slot_name, parse_lsn, peek_slot, release_slot, type_matrix_source};
use support::pipeline::{Warehouse, fresh_warehouse, pg_client};
use tidemark::config::SecretUrl;
use tidemark::error::ErrorKind;
use tidemark::event::{Op, Row, SourceMessage, TableSchema, Value};
use tidemark::source::postgres::assemble::Assembler;
use tidemark::source::postgres::catalog;
use tidemark::source::postgres::copy::{
    self, Bounds, CopyTable, KeyRange, begin_at_snapshot, describe, key_ranges, read_chunk,
    table_schema,
};
use tidemark::source::postgres::pgoutput::{Lsn, PgOutputMessage, decode};
use tidemark::source::postgres::slot::WalPosition;
use tidemark::source::postgres::stream::{StreamOptions, create_slot_exporting_snapshot};
use tidemark::source::postgres::types::SESSION_SETTINGS;
use tokio_postgres::Client;

/// Prefix of the slot this test makes; the suffix is the test process id.
const SLOT_PREFIX: &str = "tidemark_pg_copy_";

/// The publication, in the source database.
const PUBLICATION: &str = "tidemark_copy_pub";

/// The stream is read in a zone with a half-hour offset and daylight saving, the database's
/// default zone.
const STREAM_TIME_ZONE: &str = "America/St_Johns";
/// The zone the copy's caller sets on its session: the copy must not print in it.
const COPY_TIME_ZONE: &str = "Asia/Kolkata";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copied_schema_and_rows_equal_the_streamed_ones_for_every_type() {
    let admin = pg_client(&support::pg_url()).await;
    let slot = fresh_slot_name(&admin, SLOT_PREFIX).await;
    let source = fresh_warehouse("pg_copy_types").await;

    let outcome = AssertUnwindSafe(type_matrix_scenario(&source, &slot))
        .catch_unwind()
        .await;

    release_slot(&admin, &slot, vec![source]).await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

async fn type_matrix_scenario(source: &Warehouse, slot: &str) {
    let client = &source.client;
    // The other two replica identities: a unique index's columns, and nothing (the primary key
    // then comes from the catalog).
    let identities =
        "CREATE TABLE by_index (a int NOT NULL, c text, b text NOT NULL, UNIQUE (b, a));
         ALTER TABLE by_index REPLICA IDENTITY USING INDEX by_index_b_a_key;
         CREATE TABLE identity_nothing (v text, id int PRIMARY KEY);
         ALTER TABLE identity_nothing REPLICA IDENTITY NOTHING;";
    type_matrix_source(
        client,
        slot,
        PUBLICATION,
        (identities, &["by_index", "identity_nothing"]),
        0xC0B1,
    )
    .await;
    client
        .batch_execute(
            "INSERT INTO full_identity VALUES (2, 'o', 7, 'small');
             UPDATE full_identity SET n = 2 WHERE k = 1;
             INSERT INTO full_no_key VALUES (1, 'x'), (2, NULL);
             INSERT INTO by_index VALUES (1, 'c', 'b'), (2, NULL, 'a');
             INSERT INTO identity_nothing VALUES ('v', 1), (NULL, 2);",
        )
        .await
        .expect("changes");

    let streamed = stream(client, slot).await;
    // A walsender prints in the zone its database defaults to; a new copy session starts there
    // too, and the copy goes back to it whatever zone its caller set.
    client
        .batch_execute(&format!(
            "ALTER DATABASE \"{}\" SET TimeZone = '{STREAM_TIME_ZONE}'",
            source.db
        ))
        .await
        .expect("database time zone");
    let copier = pg_client(&source.url).await;
    copier
        .batch_execute(&format!("SET TimeZone = '{COPY_TIME_ZONE}'"))
        .await
        .expect("the caller's own time zone");
    let tables = [
        "every_type",
        "full_identity",
        "full_no_key",
        "by_index",
        "identity_nothing",
    ];
    for table in tables {
        let (schema, after_images) = streamed
            .get(table)
            .unwrap_or_else(|| panic!("nothing streamed for {table}"));
        let copied = table_schema(&copier, "public", table)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|| panic!("table_schema found no {table}"));
        assert_eq!(&copied, schema, "schema of {table}: copy vs stream");
        let described = describe(&copier, "public", table)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|| panic!("describe found no {table}"));
        // One-row chunks: several ranges even for a few rows, of every kind of key.
        let ranges = key_ranges(&copier, &described.schema, 1)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let mut rows = Vec::new();
        for range in &ranges {
            rows.extend(read_all(&copier, &described, range).await);
        }
        assert_rows_equal(table, schema, after_images, &rows);
        if schema.has_key() {
            assert_eq!(ranges.len(), rows.len(), "{table}: one range per row");
        }
        println!(
            "{table}: {} columns, {} rows in {} ranges equal",
            schema.columns.len(),
            rows.len(),
            ranges.len()
        );
    }
    assert!(
        table_schema(&copier, "public", "no_such_table")
            .await
            .expect("table_schema")
            .is_none()
    );
}

/// The slot's changes as the pgoutput reader assembles them: per table, the schema it emitted
/// and the latest after-image of every row.
async fn stream(client: &Client, slot: &str) -> BTreeMap<String, (TableSchema, Vec<Row>)> {
    let mut settings = format!("SET TimeZone = '{STREAM_TIME_ZONE}';");
    for (name, value) in SESSION_SETTINGS {
        settings.push_str(&format!(" SET {name} = '{value}';"));
    }
    client
        .batch_execute(&settings)
        .await
        .expect("session settings");
    let messages = peek_slot(client, slot, &[("publication_names", PUBLICATION)]).await;
    let mut assembler = Assembler::new("pg".into());
    let mut out = Vec::new();
    for (lsn, data) in messages {
        let message = decode(&data).unwrap_or_else(|e| panic!("at {lsn}: {e}"));
        if let PgOutputMessage::Relation(relation) = &message {
            let needs = assembler.catalog_needs(relation);
            if !needs.is_empty() {
                let facts = catalog::fetch(client, &needs)
                    .await
                    .unwrap_or_else(|e| panic!("catalog for {}: {e}", relation.name));
                assembler.learn(facts);
            }
        }
        assembler
            .feed(&message, Lsn(parse_lsn(&lsn)), &mut out)
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let mut tables: BTreeMap<String, (TableSchema, Vec<Row>)> = BTreeMap::new();
    for message in out {
        match message {
            SourceMessage::Schema(schema) => {
                tables.insert(schema.id.name.to_string(), ((*schema).clone(), Vec::new()));
            }
            SourceMessage::Change(change) => {
                let Some((schema, rows)) = tables.get_mut(&*change.table.id.name) else {
                    panic!("a change before the schema of {}", change.table.id);
                };
                let after = change.after.clone().expect("after image");
                assert!(matches!(change.op, Op::Insert | Op::Update));
                // An update replaces the row of the same key (only keyed tables are updated).
                let key = key_of(schema, &after);
                match rows
                    .iter_mut()
                    .find(|r| schema.has_key() && key_of(schema, r) == key)
                {
                    Some(row) => *row = after,
                    None => rows.push(after),
                }
            }
            _ => {}
        }
    }
    tables
}

/// Every row of `range`, in batches of 3 (so batches end inside and at the chunk's end).
async fn read_all(client: &Client, table: &CopyTable, range: &KeyRange) -> Vec<Row> {
    let mut chunk = read_chunk(client, table, range, 3)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let mut rows = Vec::new();
    let mut batch = Vec::new();
    while chunk
        .next_batch(&mut batch)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
    {
        assert!(batch.len() <= 3, "a batch larger than asked for");
        rows.append(&mut batch);
    }
    assert_eq!(chunk.rows_read(), rows.len() as u64);
    rows
}

/// Every row of `ranges`, one after the other.
async fn read_ranges(
    client: &Client,
    table: &CopyTable,
    ranges: impl Iterator<Item = &KeyRange>,
) -> Vec<Row> {
    let mut rows = Vec::new();
    for range in ranges {
        rows.extend(read_all(client, table, range).await);
    }
    rows
}

/// A row's key, printed exactly (`Debug` tells `-0` from `0` and prints NaN).
fn key_of(schema: &TableSchema, row: &[Value]) -> String {
    if schema.has_key() {
        format!(
            "{:?}",
            schema
                .primary_key
                .iter()
                .map(|&k| &row[k])
                .collect::<Vec<_>>()
        )
    } else {
        format!("{row:?}")
    }
}

/// Rows equal by key, value by value, each difference named by column. Values are compared as
/// `Debug` prints them: exact, and NaN equals NaN.
fn assert_rows_equal(table: &str, schema: &TableSchema, streamed: &[Row], copied: &[Row]) {
    let by_key = |rows: &[Row]| -> BTreeMap<String, Row> {
        rows.iter()
            .map(|r| (key_of(schema, r), r.clone()))
            .collect()
    };
    let (streamed_rows, copied_rows) = (by_key(streamed), by_key(copied));
    assert_eq!(
        copied.len(),
        copied_rows.len(),
        "{table}: duplicate keys copied"
    );
    assert_eq!(
        streamed_rows.keys().collect::<Vec<_>>(),
        copied_rows.keys().collect::<Vec<_>>(),
        "{table}: keys streamed vs copied"
    );
    let mut differences = Vec::new();
    for (key, streamed_row) in &streamed_rows {
        let copied_row = &copied_rows[key];
        for ((column, s), c) in schema.columns.iter().zip(streamed_row).zip(copied_row) {
            if format!("{s:?}") != format!("{c:?}") {
                differences.push(format!(
                    "  key {key}, column {}: streamed {s:?}, copied {c:?}",
                    column.name
                ));
            }
        }
    }
    assert!(
        differences.is_empty(),
        "{table}: copied values differ from streamed ones:\n{}",
        differences.join("\n")
    );
}

/// Rows per table in the chunking test.
const ROWS: i64 = 20_000;
/// Rows per chunk asked for.
const CHUNK_ROWS: u64 = 1_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_and_ctid_ranges_hold_every_row_exactly_once() {
    let db = fresh_warehouse("pg_copy_ranges").await;
    let client = &db.client;
    client
        .batch_execute(&format!(
            "CREATE TABLE int_key (id bigint PRIMARY KEY, v text);
             INSERT INTO int_key SELECT i * 3 - 7000, md5(i::text) FROM generate_series(1, {ROWS}) i;
             CREATE TABLE composite_key (region text, n int, v text, PRIMARY KEY (region, n));
             INSERT INTO composite_key SELECT 'it''s \\ r' || (i % 7), i, md5(i::text)
                 FROM generate_series(1, {ROWS}) i;
             CREATE TABLE no_key (n int, v text);
             INSERT INTO no_key SELECT i, repeat('x', i % 100) FROM generate_series(1, {ROWS}) i;"
        ))
        .await
        .expect("tables");

    let int_ranges = check_ranges(client, "int_key", "id").await;
    assert!(
        int_ranges
            .iter()
            .all(|r| matches!(r.bounds, Bounds::Key { .. }))
    );
    let composite_ranges = check_ranges(client, "composite_key", "n").await;
    assert!(
        composite_ranges
            .iter()
            .all(|r| matches!(&r.bounds, Bounds::Key { columns, .. } if columns.len() == 2))
    );
    let page_ranges = check_ranges(client, "no_key", "n").await;
    assert!(
        page_ranges
            .iter()
            .all(|r| matches!(r.bounds, Bounds::Pages { .. }))
    );

    // Rows written after the ranges were made, beyond every bound seen: the open ends hold them.
    client
        .batch_execute(
            "INSERT INTO int_key VALUES (-9223372036854775808, 'low'), (9223372036854775807, 'high');
             INSERT INTO no_key SELECT i, repeat('y', 500) FROM generate_series(1, 2000) i;",
        )
        .await
        .expect("later rows");
    let table = describe(client, "public", "int_key")
        .await
        .expect("describe")
        .expect("int_key");
    let mut ids = Vec::new();
    for range in &int_ranges {
        ids.extend(
            read_all(client, &table, range)
                .await
                .into_iter()
                .map(|r| r[0].clone()),
        );
    }
    assert_eq!(ids.len(), ROWS as usize + 2);
    assert!(ids.contains(&Value::Int(i64::MIN)) && ids.contains(&Value::Int(i64::MAX)));
    let table = describe(client, "public", "no_key")
        .await
        .expect("describe")
        .expect("no_key");
    let mut count = 0;
    for range in &page_ranges {
        count += read_all(client, &table, range).await.len();
    }
    assert_eq!(count, ROWS as usize + 2000);

    // A user without SELECT on the table: an error for an operator, naming the table and range.
    let role = format!("tidemark_copy_{}", std::process::id());
    client
        .batch_execute(&format!(
            "DROP ROLE IF EXISTS \"{role}\"; CREATE ROLE \"{role}\" LOGIN;"
        ))
        .await
        .expect("role");
    let other = pg_client(&db.url.replacen("postgres@", &format!("{role}@"), 1)).await;
    let int_key = describe(&other, "public", "int_key")
        .await
        .expect("the catalog is readable by every user")
        .expect("int_key");
    // The key's minimum and maximum need SELECT (a page split may not: it can use estimates).
    let refused = key_ranges(&other, &int_key.schema, CHUNK_ROWS)
        .await
        .expect_err("ranges without SELECT");
    assert_eq!(refused.kind(), ErrorKind::Operator, "{refused}");
    assert!(refused.to_string().contains("public.int_key"), "{refused}");
    let refused = read_chunk(&other, &table, &page_ranges[1], 10)
        .await
        .expect_err("COPY without SELECT");
    assert_eq!(refused.kind(), ErrorKind::Operator, "{refused}");
    let message = refused.to_string();
    assert!(
        message.contains("public.no_key") && message.contains(&page_ranges[1].to_string()),
        "{message}"
    );
    drop(other);
    client
        .batch_execute(&format!("DROP ROLE \"{role}\""))
        .await
        .expect("drop role");
}

/// Reads `table` chunk by chunk and checks that column `unique` (1..=ROWS, or the int key)
/// holds every value of the table exactly once; returns the ranges.
async fn check_ranges(client: &Client, table: &str, unique: &str) -> Vec<KeyRange> {
    let described = describe(client, "public", table)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|| panic!("no {table}"));
    let ranges = key_ranges(client, &described.schema, CHUNK_ROWS)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let expected_chunks = (ROWS as u64 / CHUNK_ROWS) as usize;
    assert!(
        (expected_chunks / 2..=expected_chunks * 2).contains(&ranges.len()),
        "{table}: {} ranges for {ROWS} rows of {CHUNK_ROWS}",
        ranges.len()
    );
    let open_below = |r: &KeyRange| match &r.bounds {
        Bounds::Key { from, .. } => from.is_none(),
        Bounds::Pages { from, .. } => *from == 0,
    };
    let open_above = |r: &KeyRange| match &r.bounds {
        Bounds::Key { to, .. } => to.is_none(),
        Bounds::Pages { to, .. } => to.is_none(),
    };
    assert!(
        ranges.first().is_some_and(open_below),
        "{table}: first range {:?}",
        ranges.first()
    );
    assert!(
        ranges.last().is_some_and(open_above),
        "{table}: last range {:?}",
        ranges.last()
    );
    let column = described
        .schema
        .column_index(unique)
        .unwrap_or_else(|| panic!("{table}.{unique}"));
    let mut seen = Vec::new();
    let mut sizes = Vec::new();
    for range in &ranges {
        let rows = read_all(client, &described, range).await;
        sizes.push(rows.len());
        seen.extend(rows.into_iter().map(|r| match r[column] {
            Value::Int(v) => v,
            ref other => panic!("{table}.{unique}: {other:?}"),
        }));
    }
    seen.sort_unstable();
    let expected: Vec<i64> = client
        .query(
            &format!("SELECT {unique}::int8 FROM {table} ORDER BY 1"),
            &[],
        )
        .await
        .expect("all values")
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(
        seen.len(),
        expected.len(),
        "{table}: rows copied vs rows in the table"
    );
    assert!(
        seen == expected,
        "{table}: some row copied twice or not at all"
    );
    println!("{table}: {} ranges, sizes {sizes:?}", ranges.len());
    ranges
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_sharing_an_exported_snapshot_see_one_point_while_a_writer_goes_on() {
    let db = fresh_warehouse("pg_copy_snapshot").await;
    let client = &db.client;
    client
        .batch_execute(
            "CREATE TABLE shared (id int PRIMARY KEY, v int);
             INSERT INTO shared SELECT i, 0 FROM generate_series(1, 5000) i;",
        )
        .await
        .expect("table");
    // The exporting transaction stays open until every reader imported its snapshot.
    let exporter = pg_client(&db.url).await;
    exporter
        .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        .await
        .expect("begin");
    let snapshot: String = exporter
        .query_one("SELECT pg_export_snapshot()", &[])
        .await
        .expect("export")
        .get(0);

    client
        .batch_execute(
            "UPDATE shared SET v = 1;
             DELETE FROM shared WHERE id <= 100;
             INSERT INTO shared SELECT i, 1 FROM generate_series(5001, 5100) i;",
        )
        .await
        .expect("writer");

    let (first, second) = (pg_client(&db.url).await, pg_client(&db.url).await);
    begin_at_snapshot(&first, &snapshot).await.expect("import");
    begin_at_snapshot(&second, &snapshot).await.expect("import");
    let table = describe(&first, "public", "shared")
        .await
        .expect("describe")
        .expect("shared");
    let ranges = key_ranges(&first, &table.schema, 500)
        .await
        .expect("ranges");
    assert!(ranges.len() > 2, "{} ranges", ranges.len());
    // Each reader takes every other range, both at once.
    let (a, b) = tokio::join!(
        read_ranges(&first, &table, ranges.iter().step_by(2)),
        read_ranges(&second, &table, ranges.iter().skip(1).step_by(2)),
    );
    let mut rows: Vec<(Value, Value)> = a
        .into_iter()
        .chain(b)
        .map(|r| (r[0].clone(), r[1].clone()))
        .collect();
    rows.sort_by_key(|(id, _)| match id {
        Value::Int(id) => *id,
        _ => i64::MAX,
    });
    let before: Vec<(Value, Value)> = (1..=5000).map(|i| (Value::Int(i), Value::Int(0))).collect();
    assert!(rows == before, "the readers saw rows of after the snapshot");
    for client in [&first, &second, &exporter] {
        client.batch_execute("COMMIT").await.expect("commit");
    }
    // A snapshot whose exporting transaction ended cannot be imported: named, for an operator.
    let gone = begin_at_snapshot(&first, &snapshot)
        .await
        .expect_err("a snapshot of an ended transaction");
    assert!(matches!(gone, copy::CopyError::Snapshot { .. }), "{gone}");
    assert_eq!(gone.kind(), ErrorKind::Operator, "{gone}");
    assert!(gone.to_string().contains(&snapshot), "{gone}");
    // The failed import left the connection usable.
    first.batch_execute("SELECT 1").await.expect("usable");
    // A name Postgres never exports is refused before reaching the server.
    assert!(matches!(
        begin_at_snapshot(&exporter, "x'; DROP TABLE shared; --").await,
        Err(copy::CopyError::SnapshotName(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_exporting_its_snapshot_plus_its_changes_hold_every_row_once() {
    let admin = pg_client(&support::pg_url()).await;
    let slot = fresh_slot_name(&admin, "tidemark_pg_copy_export_").await;
    let db = fresh_warehouse("pg_copy_export").await;

    let outcome = AssertUnwindSafe(exported_slot_scenario(&db, &slot))
        .catch_unwind()
        .await;

    release_slot(&admin, &slot, vec![db]).await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

async fn exported_slot_scenario(db: &Warehouse, slot: &str) {
    let client = &db.client;
    client
        .batch_execute(
            "SET synchronous_commit = on;
             CREATE TABLE t (id int PRIMARY KEY, v int);
             INSERT INTO t SELECT i, 0 FROM generate_series(1, 1000) i;
             CREATE PUBLICATION copy_export_pub FOR TABLE t;",
        )
        .await
        .expect("table");
    let options = StreamOptions {
        source_id: "copy-export".into(),
        url: SecretUrl::new(db.url.clone()),
        slot: slot.to_owned(),
        publication: "copy_export_pub".into(),
        start: WalPosition(0),
        status_interval: Duration::from_secs(10),
    };
    let exported = create_slot_exporting_snapshot(&options)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    // Changes after the slot's start: the stream has them, the snapshot must not.
    client
        .batch_execute("UPDATE t SET v = 1 WHERE id <= 10; INSERT INTO t VALUES (1001, 1);")
        .await
        .expect("writer");
    let reader = pg_client(&db.url).await;
    begin_at_snapshot(&reader, &exported.snapshot)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let consistent_point = exported.consistent_point;
    exported.release();
    let table = describe(&reader, "public", "t")
        .await
        .expect("describe")
        .expect("t");
    let ranges = key_ranges(&reader, &table.schema, 300)
        .await
        .expect("ranges");
    let rows = read_ranges(&reader, &table, ranges.iter()).await;
    reader.batch_execute("COMMIT").await.expect("commit");
    assert_eq!(rows.len(), 1000, "the rows at the slot's start");
    assert!(
        rows.iter().all(|r| r[1] == Value::Int(0)),
        "no change after it"
    );

    // The slot streams exactly the writer's changes from its consistent point. Its session may
    // take a moment to end after the release.
    let mut peeked = None;
    for _ in 0..50 {
        match client
            .query(
                "SELECT data FROM pg_logical_slot_peek_binary_changes($1, NULL, NULL, \
                 'proto_version', '1', 'publication_names', 'copy_export_pub')",
                &[&slot],
            )
            .await
        {
            Ok(rows) => {
                peeked = Some(rows);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    let (mut updates, mut inserts) = (0, 0);
    for row in peeked.expect("the slot became free to peek") {
        match decode(&bytes::Bytes::from(row.get::<_, Vec<u8>>(0))).expect("pgoutput") {
            PgOutputMessage::Update(_) => updates += 1,
            PgOutputMessage::Insert(_) => inserts += 1,
            _ => {}
        }
    }
    assert_eq!(
        (updates, inserts),
        (10, 1),
        "the slot streams the changes after its start, and only those"
    );
    assert!(consistent_point.0 > 0);
}
