//! MySQL 8/9-only values in the Postgres warehouse. The test source server is MariaDB, which
//! stores JSON as text and has no VECTOR, so these values come from the real binlog files in
//! `../shared/fixtures/mysql8-binlogs/` (see SOURCES.md there): decoded as replication decodes
//! them, loaded by the real Postgres sink (target tables from the decoded schemas, COPY,
//! apply, checkpoint) into a fresh warehouse, and read back as Postgres prints them. A DECIMAL
//! inside a JSON document must keep its digits and scale in `jsonb`; a VECTOR must land in
//! `real[]` as the same 32-bit floats.

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;

use support::pipeline::{Warehouse, fresh_warehouse};
use tidemark::config::SecretUrl;
use tidemark::event::{
    ChangeEvent, Column, ColumnType, Op, Position, ResumePoint, SourceMessage, TableId,
    TableSchema, Transaction, Value,
};
use tidemark::sink::postgres::{CopyText, PostgresSink};
use tidemark::sink::{Batch, Progress, TableChanges, TargetTable};

/// The warehouse schema the fixture tables land in.
const SCHEMA: &str = "mysql8";

/// Floats whose text forms are easy to get wrong: the smallest subnormal and normal, the
/// largest, negative zero, one that is not a short decimal, and 2^24.
const EDGE_FLOATS: [f32; 6] = [1e-45, f32::MIN_POSITIVE, f32::MAX, -0.0, 0.1, 16_777_216.0];

/// Every row change of a fixture file, as replication would decode it.
fn fixture_changes(name: &str) -> Vec<ChangeEvent> {
    support::mysql8_fixture_messages(name)
        .into_iter()
        .filter_map(|message| match message {
            SourceMessage::Change(change) => Some(change),
            _ => None,
        })
        .collect()
}

/// A change no fixture holds: a JSON document with a 40-digit decimal, more digits than a
/// double keeps (its binary form is tested in src/source/mysql/jsonb.rs), and a vector of
/// edge floats, in a keyed table `synthetic.edge`.
fn synthetic_change() -> ChangeEvent {
    let column = |name: &str, ty| Column {
        name: name.into(),
        ty,
        nullable: true,
    };
    let table = TableSchema {
        id: TableId::new("synthetic", "edge"),
        columns: vec![
            column(
                "id",
                ColumnType::Int {
                    bits: 32,
                    unsigned: false,
                },
            ),
            column("doc", ColumnType::Json),
            column(
                "v",
                ColumnType::Vector {
                    dimensions: Some(6),
                },
            ),
        ],
        primary_key: vec![0],
    };
    let doc = r#"{"e":[123456789012345678901234567890.1234567890,-0.000000000000000000000000000000000001,9.00]}"#;
    let floats = EDGE_FLOATS.to_vec();
    ChangeEvent {
        source: "mysql8".into(),
        table: Arc::new(table),
        op: Op::Insert,
        before: None,
        after: Some(vec![
            Value::Int(1),
            Value::Json(doc.to_owned()),
            Value::Vector(floats),
        ]),
        position: Position { txn: 1, seq: 0 },
        transaction: Arc::new(Transaction {
            id: "synthetic".into(),
            gtid: None,
            commit_ts_micros: 1_700_000_000_000_000,
            log_coordinate: 4,
        }),
    }
}

/// Loads `changes` with the real sink, one batch, each source table into `mysql8.<table>`.
async fn load(wh: &Warehouse, changes: &[ChangeEvent]) {
    let mut tables: BTreeMap<TableId, TableChanges> = BTreeMap::new();
    let mut seq = 0;
    for change in changes {
        let id = change.table.id.clone();
        let target = TargetTable {
            schema: SCHEMA.into(),
            table: id.name.to_string(),
        };
        tables
            .entry(id.clone())
            .or_insert_with(|| TableChanges::with_encoder(id, target, Arc::new(CopyText)))
            .push(change, &mut seq)
            .unwrap_or_else(|e| panic!("staging: {e}"));
    }
    let mut batch = Batch {
        source_id: "mysql8".into(),
        renames: Vec::new(),
        tables: tables.into_values().collect(),
        progress: Progress::at(
            ResumePoint::Binlog {
                file: "vector.binlog".into(),
                pos: 4,
                gtid: None,
            },
            None,
        ),
        requests_handled: None,
        chunk: None,
        records_progress: true,
        forget_chunks: false,
    };
    let mut sink = PostgresSink::connect(&SecretUrl::new(wh.url.clone()))
        .await
        .expect("connect the sink");
    sink.ensure_control_tables().await.expect("control tables");
    sink.apply(&mut batch)
        .await
        .unwrap_or_else(|e| panic!("loading: {e}"));
}

/// `columns` of a warehouse table as Postgres prints them, ordered by `order`.
async fn select(
    wh: &Warehouse,
    table: &str,
    columns: &str,
    order: &str,
) -> Vec<Vec<Option<String>>> {
    wh.rows(&format!(
        "SELECT {columns} FROM {SCHEMA}.{table} ORDER BY {order}"
    ))
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_decimals_and_vectors_land_exactly_in_the_warehouse() {
    let mut changes = fixture_changes("json-opaque.binlog");
    changes.extend(fixture_changes("vector.binlog"));
    changes.push(synthetic_change());
    let wh = fresh_warehouse("mysql8_values").await;
    load(&wh, &changes).await;

    let types = wh.column_types(SCHEMA, "bar").await;
    let wanted = [
        ("vector_column", "real[]"),
        ("foo", "text"),
        ("vector_column2", "real[]"),
    ];
    for (name, ty) in wanted {
        assert!(
            types.iter().any(|(n, t)| n == name && t == ty),
            "{name} {ty} in {types:?}"
        );
    }
    let some = |s: &str| Some(s.to_owned());

    // foo.test has no key: every document is a row, as MySQL stored it. jsonb keeps numbers as
    // numeric, so the DECIMALs keep their scale (a double would give 9 or 9.0).
    assert_eq!(
        select(&wh, "test", "a", "_tidemark_position").await,
        [
            [some(r#"{"a": "base64:type15:VQ=="}"#)],
            [some(r#"{"b": "2012-03-18"}"#)],
            [some(r#"{"c": "2012-03-18 11:30:45.000000"}"#)],
            [some(r#"{"c": "87:31:46.654321"}"#)],
            [some(r#"{"d": 123.456}"#)],
            [some(r#"{"e": 9.00}"#)],
            [some(r#"{"e": [0, 1, true, false]}"#)],
            [some(r#"{"e": null}"#)],
        ]
    );

    // real[] printed by Postgres (shortest exact text since Postgres 12): the same f32s that
    // MySQL stored. Both tables are keyed (SERIAL is a NOT NULL UNIQUE key, which MySQL logs as
    // the primary key), so each holds its keys' last rows: bar's row 2 was deleted.
    assert_eq!(wh.primary_key(SCHEMA, "bar").await, ["id"]);
    assert_eq!(
        select(&wh, "foo", "id::text, vector_column::text", "id").await,
        [
            [some("1"), some("{1.1,2.2,3.3}")],
            [some("2"), some("{1,-1,0}")],
        ]
    );
    assert_eq!(
        select(
            &wh,
            "bar",
            "id::text, vector_column::text, foo, vector_column2::text",
            "id"
        )
        .await,
        [
            [
                some("1"),
                some("{1.1,2.2}"),
                None,
                some("{1.1,2.2,3.3,4.4}")
            ],
            [
                some("3"),
                some("{2.01,-2.01}"),
                None,
                some("{42.1,43.2,44.3,45.4}")
            ],
        ]
    );

    // The synthetic row: 40 digits and the scales kept; each float exactly (compared as bits,
    // whatever the text form).
    assert_eq!(
        wh.value(&format!("SELECT doc::text FROM {SCHEMA}.edge"))
            .await,
        some(
            r#"{"e": [123456789012345678901234567890.1234567890, -0.000000000000000000000000000000000001, 9.00]}"#
        )
    );
    let bits = wh
        .rows(&format!(
            "SELECT encode(float4send(x), 'hex') FROM {SCHEMA}.edge, unnest(v) WITH ORDINALITY \
             AS u(x, n) ORDER BY n"
        ))
        .await;
    let wanted: Vec<Vec<Option<String>>> = EDGE_FLOATS
        .iter()
        .map(|f| vec![some(&format!("{:08x}", f.to_bits()))])
        .collect();
    assert_eq!(bits, wanted);
}
