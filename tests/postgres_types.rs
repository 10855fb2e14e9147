//! Postgres source types against a real PostgreSQL 15: a table with a column of every supported
//! type (and two carried as text) is written, read back from a logical slot, decoded, assembled
//! into change events, encoded by the Postgres sink's encoder (`CopyText`) and copied into a
//! warehouse table of the types `sink::postgres::postgres_type` chooses; then source and target
//! are compared as Postgres prints them (the shared table comparison; a difference is reported column by column). Also: key changes, REPLICA IDENTITY FULL (the primary key read
//! from the catalog, in key order) and unchanged TOAST values on a real stream.

mod support;

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::pin::pin;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::{FutureExt, SinkExt};
use support::pg_source::{fresh_slot_name, parse_lsn, peek_slot, release_slot, type_matrix_source};
use support::pipeline::{
    Source, TablePair, Warehouse, assert_tables_equal, fresh_warehouse, pg_client, pg_rows,
};
use tidemark::event::{ChangeEvent, Op, SourceMessage, TableSchema, Value};
use tidemark::sink::postgres::{CopyText, postgres_type};
use tidemark::sink::{TableChanges, TargetTable};
use tidemark::source::postgres::assemble::Assembler;
use tidemark::source::postgres::catalog;
use tidemark::source::postgres::pgoutput::{Lsn, PgOutputMessage, decode};
use tidemark::source::postgres::types::SESSION_SETTINGS;
use tokio_postgres::Client;

/// Prefix of the slot this test makes; the suffix is the test process id.
const SLOT_PREFIX: &str = "tidemark_pg_types_";

/// The publication, in the source database.
const PUBLICATION: &str = "tidemark_types_pub";

/// A zone with a half-hour offset and daylight saving, so offsets are really read.
const TIME_ZONE: &str = "America/St_Johns";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_postgres_type_lands_equal_in_the_warehouse() {
    let admin = pg_client(&support::pg_url()).await;
    let slot = fresh_slot_name(&admin, SLOT_PREFIX).await;
    let source = fresh_warehouse("pg_types_source").await;
    let target = fresh_warehouse("pg_types_target").await;

    let outcome = AssertUnwindSafe(scenario(&source, &target, &slot))
        .catch_unwind()
        .await;

    release_slot(&admin, &slot, vec![source, target]).await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

async fn scenario(source: &Warehouse, target: &Warehouse, slot: &str) {
    let client = &source.client;
    let big = type_matrix_source(client, slot, PUBLICATION, ("", &[]), 0x7E57).await;
    for sql in [
        // The TOASTed `big` is not touched: pgoutput sends it as unchanged ('u').
        "UPDATE full_identity SET n = 2",
        "INSERT INTO full_no_key VALUES (1, 'x')",
        "DELETE FROM full_no_key",
        // A key change on a REPLICA IDENTITY DEFAULT table: the old key comes as 'K'.
        "UPDATE every_type SET id = 10 WHERE id = 3",
    ] {
        client
            .batch_execute(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    let messages = read_slot(client, slot).await;
    let out = assemble(client, &messages).await;
    let schemas: HashMap<String, &TableSchema> = out
        .iter()
        .filter_map(|m| match m {
            SourceMessage::Schema(s) => Some((s.id.name.to_string(), &**s)),
            _ => None,
        })
        .collect();
    let changes: Vec<&ChangeEvent> = out
        .iter()
        .filter_map(|m| match m {
            SourceMessage::Change(c) => Some(c),
            _ => None,
        })
        .collect();

    check_full_identity(&schemas, &changes, &big);
    check_key_change(&changes);

    // Every row of every_type as first inserted, through the COPY text encoder into the warehouse.
    let inserts: Vec<&ChangeEvent> = changes
        .iter()
        .copied()
        .filter(|c| c.op == Op::Insert && &*c.table.id.name == "every_type")
        .collect();
    assert_eq!(inserts.len(), 5, "inserts into every_type");
    let schema = schemas["every_type"];
    assert_eq!(schema.primary_key, vec![0]);
    load_into_warehouse(target, schema, &inserts).await;

    // The key change moved row 3 to 10 at the source; compare the rows as inserted.
    client
        .batch_execute("UPDATE every_type SET id = 3 WHERE id = 10")
        .await
        .expect("undo the key change");
    println!(
        "{} messages, {} changes, {} columns compared",
        out.len(),
        changes.len(),
        schema.columns.len()
    );
    // A difference is reported row by row, naming each differing column with both values.
    assert_tables_equal(
        &mut Source::Postgres(client),
        &target.client,
        &[TablePair::new(
            ("public", "every_type"),
            ("public", "every_type_staged"),
        )],
    )
    .await;
}

/// The slot's messages as the test session's settings print them, decoded.
async fn read_slot(client: &Client, slot: &str) -> Vec<(Lsn, PgOutputMessage)> {
    let mut settings = format!("SET TimeZone = '{TIME_ZONE}';");
    for (name, value) in SESSION_SETTINGS {
        settings.push_str(&format!(" SET {name} = '{value}';"));
    }
    client
        .batch_execute(&settings)
        .await
        .expect("session settings");
    peek_slot(client, slot, &[("publication_names", PUBLICATION)])
        .await
        .into_iter()
        .map(|(lsn, data)| {
            let message = decode(&data).unwrap_or_else(|e| panic!("at {lsn}: {e}"));
            (Lsn(parse_lsn(&lsn)), message)
        })
        .collect()
}

/// Feeds every message to an assembler, reading the catalog before each Relation as the stream
/// does.
async fn assemble(client: &Client, messages: &[(Lsn, PgOutputMessage)]) -> Vec<SourceMessage> {
    let mut assembler = Assembler::new("pg".into());
    let mut out = Vec::new();
    for (at, message) in messages {
        if let PgOutputMessage::Relation(relation) = message {
            let needs = assembler.catalog_needs(relation);
            if !needs.is_empty() {
                let facts = catalog::fetch(client, &needs)
                    .await
                    .unwrap_or_else(|e| panic!("catalog for {}: {e}", relation.name));
                assembler.learn(facts);
            }
        }
        assembler
            .feed(message, *at, &mut out)
            .unwrap_or_else(|e| panic!("{e}"));
    }
    assert!(
        !assembler.in_transaction(),
        "the stream ends inside a transaction"
    );
    let unsupported: Vec<(&str, &str)> = assembler
        .unsupported_columns()
        .iter()
        .map(|u| (u.column.as_str(), u.type_name.as_str()))
        .collect();
    assert_eq!(
        unsupported,
        [
            ("c_int2vector", "pg_catalog.int2vector"),
            ("c_box_array", "pg_catalog._box"),
        ]
    );
    out
}

/// FULL identity: the catalog's key in key order, whole old rows, and the unchanged TOAST value
/// taken from the old row; no key at all without a primary key.
fn check_full_identity(
    schemas: &HashMap<String, &TableSchema>,
    changes: &[&ChangeEvent],
    big: &str,
) {
    let full = schemas["full_identity"];
    assert_eq!(full.primary_key, vec![1, 0], "primary key (part, k)");
    assert!(!schemas["full_no_key"].has_key());
    let update = changes
        .iter()
        .find(|c| c.op == Op::Update && &*c.table.id.name == "full_identity")
        .expect("full_identity update");
    let row = |n| {
        vec![
            Value::Int(1),
            Value::Text("p".into()),
            Value::Int(n),
            Value::Text(big.into()),
        ]
    };
    assert_eq!(update.before, Some(row(1)));
    assert_eq!(update.after, Some(row(2)));
    let delete = changes
        .iter()
        .find(|c| c.op == Op::Delete && &*c.table.id.name == "full_no_key")
        .expect("full_no_key delete");
    assert_eq!(
        delete.before,
        Some(vec![Value::Int(1), Value::Text("x".into())])
    );
}

/// The key change comes with the old key, which a batch's changes turn into a delete of the
/// old key and an update of the new one.
fn check_key_change(changes: &[&ChangeEvent]) {
    let update = changes
        .iter()
        .find(|c| c.op == Op::Update && &*c.table.id.name == "every_type")
        .expect("every_type update");
    let before = update.before.as_ref().expect("before image");
    let after = update.after.as_ref().expect("after image");
    assert_eq!((&before[0], &after[0]), (&Value::Int(3), &Value::Int(10)));
    assert!(before[1..].iter().all(|v| *v == Value::Unchanged));
    assert!(after[1..].iter().all(|v| *v == Value::Null));
    let mut staged =
        TableChanges::with_encoder(update.table.id.clone(), target_table(), Arc::new(CopyText));
    let mut seq = 0;
    staged.push(update, &mut seq).expect("stage the key change");
    assert_eq!(
        seq, 2,
        "a delete of the old key and an update of the new one"
    );
    assert!(staged.has_deletes);
}

fn target_table() -> TargetTable {
    TargetTable {
        schema: "public".into(),
        table: "every_type_staged".into(),
    }
}

/// Encodes the changes as the sink stages them and copies them into a table of the warehouse
/// types (after the staging columns: seq, op, position, commit time).
async fn load_into_warehouse(target: &Warehouse, schema: &TableSchema, inserts: &[&ChangeEvent]) {
    let mut staged =
        TableChanges::with_encoder(schema.id.clone(), target_table(), Arc::new(CopyText));
    let mut seq = 0;
    for change in inserts {
        staged
            .push(change, &mut seq)
            .unwrap_or_else(|e| panic!("staging: {e}"));
    }
    assert_eq!(staged.zero_dates_nulled, 0, "no value was nulled");
    let columns: Vec<String> = schema
        .columns
        .iter()
        .map(|c| format!("{} {}", c.name, postgres_type(&c.ty)))
        .collect();
    target
        .client
        .batch_execute(&format!(
            "CREATE EXTENSION citext; CREATE EXTENSION hstore; CREATE EXTENSION ltree;
             CREATE TABLE every_type_staged (_seq bigint, _op text, _position numeric, \
             _commit_ts timestamptz, {})",
            columns.join(", ")
        ))
        .await
        .expect("create the warehouse table");
    // The sink compares a target's types with the wanted ones as text: they must be spelled as
    // format_type() prints them, or every batch would alter the table.
    let printed = rows(
        &target.client,
        "SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a \
         WHERE a.attrelid = 'every_type_staged'::regclass AND a.attnum > 4 ORDER BY a.attnum",
    )
    .await;
    let wanted: Vec<Vec<Option<String>>> = schema
        .columns
        .iter()
        .map(|c| vec![Some(c.name.to_string()), Some(postgres_type(&c.ty))])
        .collect();
    assert_eq!(
        printed, wanted,
        "warehouse types as format_type prints them"
    );

    let sink = target
        .client
        .copy_in::<_, Bytes>("COPY every_type_staged FROM STDIN")
        .await
        .expect("COPY");
    let mut sink = pin!(sink);
    let mut chunks = staged.row_chunks(0);
    while let Some(chunk) = chunks.next_chunk().expect("staged chunk") {
        sink.send(chunk).await.expect("COPY data");
    }
    let copied = sink.finish().await.expect("COPY end");
    assert_eq!(copied, inserts.len() as u64);
}

/// Rows of `sql` as Postgres prints every value (the simple protocol), in the test's time zone.
async fn rows(client: &Client, sql: &str) -> Vec<Vec<Option<String>>> {
    client
        .batch_execute(&format!("SET TimeZone = '{TIME_ZONE}'"))
        .await
        .expect("time zone");
    pg_rows(client, sql).await.unwrap_or_else(|e| panic!("{e}"))
}
