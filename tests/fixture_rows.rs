//! Row decoding against real binlog files written by MySQL 8 and MariaDB
//! (`../shared/fixtures/mysql8-binlogs/`, see SOURCES.md there): every table map becomes a
//! layout, every row image decodes to the values the servers stored, and no truncation of a
//! rows buffer can make the decoder panic.

mod support;

use std::collections::HashMap;
use std::path::PathBuf;

use mysql_async::binlog::BinlogVersion;
use mysql_async::binlog::EventType;
use mysql_async::binlog::events::{
    Event, EventData, FormatDescriptionEvent, RowsEventData, TableMapEvent, TransactionPayloadEvent,
};
use tidemark::event::{ColumnType, Row, Value};
use tidemark::source::mysql::layout::{ColumnNames, LayoutError, TableLayout};

fn fixture(name: &str) -> PathBuf {
    support::mysql8_fixture(name)
}

/// Every event of a binlog file, with the events of TRANSACTION_PAYLOAD events inlined
/// (decompressed, read without checksums as the server writes them).
fn events(name: &str) -> Vec<Event> {
    let bytes = std::fs::read(fixture(name)).expect("fixture exists");
    assert_eq!(&bytes[..4], b"\xfebin", "{name}: binlog magic");
    let mut input = &bytes[4..];
    let mut fde = FormatDescriptionEvent::new(BinlogVersion::Version4);
    let mut out = Vec::new();
    while !input.is_empty() {
        let event = Event::read(&fde, &mut input).expect("event");
        let ty = event.header().event_type_raw();
        if ty == EventType::FORMAT_DESCRIPTION_EVENT as u8 {
            let new = event
                .read_event::<FormatDescriptionEvent<'_>>()
                .expect("fde");
            fde = new.into_owned().with_footer(event.footer());
        } else if ty == EventType::TRANSACTION_PAYLOAD_EVENT as u8 {
            let tpe = event
                .read_event::<TransactionPayloadEvent<'_>>()
                .expect("payload");
            let mut footer = fde.footer();
            footer.set_checksum_enabled(false);
            let inner_fde = fde.clone().with_footer(footer);
            let mut inner = tpe.decompressed().expect("decompress");
            while inner.has_data_left().expect("payload") {
                out.push(Event::read(&inner_fde, &mut inner).expect("inner event"));
            }
        }
        out.push(event);
    }
    out
}

/// One decoded rows event: its kind and its row images in order (updates alternate
/// before, after). Columns absent from a partial image are `None`.
#[derive(Debug)]
struct Rows {
    kind: &'static str,
    images: Vec<Vec<Option<Value>>>,
}

impl Rows {
    /// Image `i`, which must hold every column.
    fn full(&self, i: usize) -> Row {
        self.images[i]
            .iter()
            .map(|v| v.clone().expect("full image"))
            .collect()
    }
}

/// The bits of a rows event's column bitmap.
fn bits(b: &mysql_async::binlog::events::RowsEventData<'_>, after: bool) -> Option<Vec<bool>> {
    let slice = if after {
        b.columns_after_image()?
    } else {
        b.columns_before_image()?
    };
    Some((0..slice.len()).map(|i| slice[i]).collect())
}

/// Layouts and decoded rows of a binlog file.
fn decode(name: &str, names: ColumnNames) -> (Vec<TableLayout>, Vec<Rows>) {
    let mut layouts: HashMap<u64, TableLayout> = HashMap::new();
    let mut seen = Vec::new();
    let mut rows = Vec::new();
    for event in events(name) {
        match event.read_data().expect("event data") {
            Some(EventData::TableMapEvent(tme)) => {
                let layout = TableLayout::from_table_map(&tme, names).expect("layout");
                seen.push(layout.clone());
                layouts.insert(tme.table_id(), layout);
            }
            // PARTIAL_UPDATE_ROWS (JSON diffs) have their own tests below.
            Some(EventData::RowsEvent(RowsEventData::PartialUpdateRowsEvent(_))) => {}
            Some(EventData::RowsEvent(ev)) => {
                let kind = match &ev {
                    RowsEventData::WriteRowsEvent(_) | RowsEventData::WriteRowsEventV1(_) => {
                        "insert"
                    }
                    RowsEventData::DeleteRowsEvent(_) | RowsEventData::DeleteRowsEventV1(_) => {
                        "delete"
                    }
                    _ => "update",
                };
                let layout = &layouts[&ev.table_id()];
                // Image bitmaps in the order images appear: before then after for updates.
                let order: Vec<Vec<bool>> = [bits(&ev, false), bits(&ev, true)]
                    .into_iter()
                    .flatten()
                    .collect();
                let mut buf = ev.rows_data();
                let mut images = Vec::new();
                while !buf.is_empty() {
                    let present = &order[images.len() % order.len()];
                    let image = if present.iter().all(|&p| p) {
                        let row = layout.decode_row(&mut buf).expect("row decodes");
                        row.into_iter().map(Some).collect()
                    } else {
                        let row = layout
                            .decode_partial_row(&mut buf, present)
                            .expect("partial row decodes");
                        row.into_iter()
                            .map(|v| (v != Value::Unchanged).then_some(v))
                            .collect()
                    };
                    images.push(image);
                }
                rows.push(Rows { kind, images });
            }
            _ => {}
        }
    }
    (seen, rows)
}

fn text(s: &str) -> Value {
    Value::Text(s.to_owned())
}

fn names(layout: &TableLayout) -> Vec<&str> {
    layout.schema.columns.iter().map(|c| &*c.name).collect()
}

/// MySQL prints JSON with `", "` and `": "` separators; the contract is compact JSON text.
fn compact(mysql_printed: &str) -> String {
    mysql_printed.replace(", ", ",").replace(": ", ":")
}

#[test]
fn mysql_binary_json_decodes_to_json_text_with_generated_columns() {
    let (layouts, rows) = decode("json.binlog.000001", ColumnNames::Positional);
    let schema = &layouts[0].schema;
    assert_eq!(schema.id.to_string(), "mysql.t");
    assert_eq!(schema.columns[1].ty, ColumnType::Json);
    assert_eq!(layouts[0].json_column_count(), 1);
    assert_eq!(
        rows[0].full(0),
        vec![
            Value::Int(1),
            Value::Json(compact(
                r#"{"age": 24, "data": "xxxxxxxxxx", "name": "Joe"}"#
            )),
            text("Joe"),
            Value::Int(24),
        ]
    );
    assert_eq!(
        rows[2].full(0)[1],
        Value::Json(compact(
            r#"{"age": 40, "data": "zzzzzzzzzz", "name": "Pete"}"#
        ))
    );
    // The UPDATE's after-image: generated columns follow the new document.
    let update = rows.iter().find(|r| r.kind == "update").expect("an update");
    assert_eq!(
        update.full(1),
        vec![
            Value::Int(1),
            Value::Json(compact(
                r#"{"age": 25, "data": "xxxxxxxxxx", "name": "Joe"}"#
            )),
            text("Joe"),
            Value::Int(25),
        ]
    );
    for r in &rows {
        for image in &r.images {
            if let Some(Some(Value::Json(j))) = image.get(1) {
                serde_json::from_str::<serde_json::Value>(j).expect("valid JSON");
            }
        }
    }
}

#[test]
fn json_opaque_values_decode_as_mysql_prints_them_with_exact_decimals() {
    let (layouts, rows) = decode("json-opaque.binlog", ColumnNames::Required);
    assert_eq!(layouts[0].schema.id.to_string(), "foo.test");
    assert_eq!(layouts[0].schema.columns[0].ty, ColumnType::Json);
    let documents: Vec<Value> = rows
        .iter()
        .flat_map(|r| {
            assert_eq!(r.kind, "insert");
            (0..r.images.len()).map(|i| r.full(i)[0].clone())
        })
        .collect();
    let json = |s: &str| Value::Json(s.to_owned());
    assert_eq!(
        documents,
        [
            json(r#"{"a":"base64:type15:VQ=="}"#),
            json(r#"{"b":"2012-03-18"}"#),
            json(r#"{"c":"2012-03-18 11:30:45.000000"}"#),
            json(r#"{"c":"87:31:46.654321"}"#),
            // DECIMALs as MySQL stored them: their digits and their scale.
            json(r#"{"d":123.456}"#),
            json(r#"{"e":9.00}"#),
            json(r#"{"e":[0,1,true,false]}"#),
            json(r#"{"e":null}"#),
        ]
    );
}

#[test]
fn mysql9_vectors_decode_as_their_floats_beside_text() {
    let (layouts, rows) = decode("vector.binlog", ColumnNames::Required);
    let vector = |n| ColumnType::Vector {
        dimensions: Some(n),
    };
    let bar = layouts
        .iter()
        .find(|l| &*l.schema.id.name == "bar")
        .expect("a table map of dtb.bar");
    assert_eq!(bar.schema.id.to_string(), "dtb.bar");
    assert_eq!(names(bar), ["id", "vector_column", "foo", "vector_column2"]);
    let types: Vec<&ColumnType> = bar.schema.columns.iter().map(|c| &c.ty).collect();
    assert_eq!(types[1], &vector(2));
    assert!(
        matches!(types[2], ColumnType::Text { .. }),
        "{:?}",
        types[2]
    );
    assert_eq!(types[3], &vector(4));
    let foo = &layouts[0].schema;
    assert_eq!(foo.id.to_string(), "dtb.foo");
    assert_eq!(foo.columns[1].ty, vector(3));

    // The f32 nearest to each literal MySQL was given, bit for bit.
    let v = |floats: &[f32]| Value::Vector(floats.to_vec());
    let id = Value::UInt;
    let inserted = [
        vec![id(1), v(&[1.1, 2.2, 3.3])],
        vec![id(2), v(&[1.0, -1.0, 0.0])],
        vec![id(1), v(&[1.1, 2.2]), Value::Null, v(&[1.1, 2.2, 3.3, 4.4])],
        vec![
            id(2),
            v(&[1.01, -1.01]),
            text("bar"),
            v(&[42.0, 43.0, 44.0, 45.0]),
        ],
    ];
    let kinds: Vec<_> = rows.iter().map(|r| r.kind).collect();
    // The same inserts twice (the database was dropped and made again), then a delete and an
    // insert into dtb.bar.
    assert_eq!(
        kinds,
        ["insert", "insert", "insert", "insert", "delete", "insert"]
    );
    let images: Vec<Row> = rows
        .iter()
        .flat_map(|r| (0..r.images.len()).map(|i| r.full(i)))
        .collect();
    let mut expected: Vec<Row> = inserted.iter().chain(&inserted).cloned().collect();
    expected.push(inserted[3].clone());
    expected.push(vec![
        id(3),
        v(&[2.01, -2.01]),
        Value::Null,
        v(&[42.1, 43.2, 44.3, 45.4]),
    ]);
    assert_eq!(images, expected);
}

#[test]
fn compressed_transaction_rows_decode_like_plain_ones() {
    let (layouts, rows) = decode("transaction_compression.000001", ColumnNames::Positional);
    assert_eq!(layouts[0].schema.id.to_string(), "test.tb1");
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].kind, "insert");
    assert_eq!(rows[0].full(0), vec![Value::Int(1)]);
}

#[test]
fn enum_and_set_decode_to_labels() {
    let (layouts, rows) = decode("mysql-enum-string-set.000001", ColumnNames::Required);
    let schema = &layouts[0].schema;
    assert_eq!(names(&layouts[0]), ["f1", "f2", "f3", "f4", "f5"]);
    let labels =
        |v: &[&str]| -> std::sync::Arc<[String]> { v.iter().map(|s| s.to_string()).collect() };
    assert_eq!(
        schema.columns[2].ty,
        ColumnType::Enum {
            labels: labels(&["var1", "variant2", "foo"])
        }
    );
    assert_eq!(
        schema.columns[3].ty,
        ColumnType::Set {
            labels: labels(&["one", "two", "three", "four"])
        }
    );
    assert_eq!(
        schema.columns[0].ty,
        ColumnType::Text {
            max_bytes: Some(512),
            charset: "utf8mb4".into()
        }
    );
    let kinds: Vec<_> = rows.iter().map(|r| r.kind).collect();
    assert_eq!(kinds, ["insert", "update", "delete"]);
    let insert = rows[0].full(0);
    assert_eq!(insert[2], Value::Enum("var1".into()));
    assert_eq!(insert[3], Value::Set(vec!["one".into(), "three".into()]));
    let after = rows[1].full(1);
    assert_eq!(after[0], text("field1"));
    assert_eq!(after[1], text("field_2"));
    assert_eq!(after[2], Value::Enum("variant2".into()));
    assert_eq!(after[3], Value::Set(vec!["two".into(), "four".into()]));
    assert_eq!(
        rows[1].full(0),
        insert,
        "update before-image is the inserted row"
    );
    assert_eq!(rows[2].full(0), after, "delete image is the updated row");
}

#[test]
fn bit_columns_keep_value_and_width() {
    let (layouts, rows) = decode("mysql_type_bit.000001", ColumnNames::Required);
    assert_eq!(names(&layouts[0]), ["a", "b", "c"]);
    assert_eq!(
        layouts[0].schema.columns[0].ty,
        ColumnType::Bit { width: 3 }
    );
    assert_eq!(
        layouts[0].schema.columns[2].ty,
        ColumnType::Bit { width: 8 }
    );
    assert_eq!(
        rows[0].full(0),
        vec![
            Value::Bit { bits: 4, width: 3 },
            text("foo"),
            Value::Bit { bits: 32, width: 8 }
        ]
    );
}

#[test]
fn invisible_columns_decode_as_regular_columns() {
    let (layouts, rows) = decode("binlog-invisible-columns.000001", ColumnNames::Required);
    let schema = &layouts[0].schema;
    assert_eq!(names(&layouts[0]), ["f1", "f2", "f3", "f4", "f5", "f6"]);
    assert_eq!(
        schema.columns[0].ty,
        ColumnType::Int {
            bits: 32,
            unsigned: true
        }
    );
    assert_eq!(
        schema.columns[4].ty,
        ColumnType::Binary {
            max_bytes: Some(65535)
        }
    );
    assert_eq!(
        rows[0].full(0),
        vec![
            Value::UInt(1),
            Value::UInt(2),
            Value::Int(-3),
            text("4"),
            Value::Bytes(vec![0x05]),
            Value::UInt(6_000_000_000),
        ]
    );
    let update = rows.iter().find(|r| r.kind == "update").expect("an update");
    assert_eq!(
        update.full(1)[..3],
        [Value::UInt(111), Value::UInt(222), Value::Int(-333)]
    );
}

#[test]
fn minimal_metadata_requires_names_or_uses_positions() {
    let event = events("minimal_row_metadata.000001")
        .into_iter()
        .find(|e| e.header().event_type_raw() == EventType::TABLE_MAP_EVENT as u8)
        .expect("a table map");
    let tme = event.read_event::<TableMapEvent<'_>>().expect("table map");
    let err = TableLayout::from_table_map(&tme, ColumnNames::Required).unwrap_err();
    assert!(
        matches!(err, LayoutError::MissingColumnNames { .. }),
        "{err}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("noria.t1") && msg.contains("binlog_row_metadata=FULL"),
        "{msg}"
    );

    let (layouts, rows) = decode("minimal_row_metadata.000001", ColumnNames::Positional);
    assert_eq!(names(&layouts[0]), ["@1", "@2", "@3", "@4", "@5"]);
    // The row image is partial (binlog_row_image=MINIMAL): columns 1, 3 and 5.
    assert_eq!(
        rows[0].images[0],
        vec![
            Some(Value::Int(1)),
            None,
            Some(text("a")),
            None,
            Some(Value::UInt(3_230_202_323))
        ]
    );
}

#[test]
fn mariadb_rows_decode_with_names_key_and_timestamps() {
    let (layouts, rows) = decode("mariadb-bin.000001", ColumnNames::Required);
    let schema = &layouts[0].schema;
    assert_eq!(schema.id.to_string(), "toddy_test.outbox");
    assert_eq!(
        names(&layouts[0]),
        ["id", "topic", "event_type", "event", "created"]
    );
    assert_eq!(schema.primary_key, vec![0]);
    assert!(!schema.columns[0].nullable);
    assert_eq!(schema.columns[4].ty, ColumnType::Timestamp { fsp: 0 });
    let first = rows[0].full(0);
    assert_eq!(first[0], Value::Int(62));
    assert_eq!(first[1], text("foo"));
    // ENUM index 2 of ('BLOB', 'JSON', 'PROTOBUF').
    assert_eq!(first[2], Value::Enum("JSON".into()));
    assert_eq!(first[3], Value::Bytes(br#"{"foo":1}"#.to_vec()));
    assert_eq!(first[4], Value::Timestamp(1_650_493_084_000_000));
    let second = rows[1].full(0);
    assert_eq!(second[0], Value::Int(63));
    assert_eq!(second[4], Value::Timestamp(1_650_493_195_000_000));
}

/// Every fixture with row events (including partial images and partial JSON updates).
const ALL: [&str; 8] = [
    "json.binlog.000001",
    "transaction_compression.000001",
    "mysql-enum-string-set.000001",
    "mysql_type_bit.000001",
    "binlog-invisible-columns.000001",
    "minimal_row_metadata.000001",
    "mariadb-bin.000001",
    "update-partial-row.binlog",
];

/// A rows buffer to decode, with how to decode it.
struct RowsBuffer {
    layout: TableLayout,
    data: Vec<u8>,
    /// For PARTIAL_UPDATE_ROWS: the before and after column bitmaps.
    partial_json: Option<(Vec<bool>, Vec<bool>)>,
}

/// Each rows buffer of every fixture with the layout of its table, plus the JSON fixture's
/// partial JSON update rewritten with full row images (see [`PartialJsonUpdate`]).
fn rows_buffers() -> Vec<RowsBuffer> {
    let mut out = Vec::new();
    for name in ALL {
        let mut layouts: HashMap<u64, TableLayout> = HashMap::new();
        for event in events(name) {
            match event.read_data() {
                Ok(Some(EventData::TableMapEvent(tme))) => {
                    // Old table maps without metadata may be refused; that is not a panic.
                    if let Ok(l) = TableLayout::from_table_map(&tme, ColumnNames::Positional) {
                        layouts.insert(tme.table_id(), l);
                    }
                }
                Ok(Some(EventData::RowsEvent(ev))) => {
                    if let Some(l) = layouts.get(&ev.table_id()) {
                        let partial_json = matches!(ev, RowsEventData::PartialUpdateRowsEvent(_))
                            .then(|| (bits(&ev, false).unwrap(), bits(&ev, true).unwrap()));
                        out.push(RowsBuffer {
                            layout: l.clone(),
                            data: ev.rows_data().to_vec(),
                            partial_json,
                        });
                    }
                }
                _ => {}
            }
        }
    }
    let p = PartialJsonUpdate::read();
    let all = vec![true; p.layout.column_count()];
    out.push(RowsBuffer {
        layout: p.layout.clone(),
        data: p.full_image_rows(),
        partial_json: Some((all.clone(), all)),
    });
    out
}

/// Decodes rows from `buf` until it is empty or a row fails; true when every row decoded.
fn decode_all(rows: &RowsBuffer, mut buf: &[u8]) -> bool {
    while !buf.is_empty() {
        let decoded = match &rows.partial_json {
            Some((before, after)) => rows
                .layout
                .decode_partial_update(&mut buf, before, after)
                .map(drop),
            None => rows.layout.decode_row(&mut buf).map(drop),
        };
        if decoded.is_err() {
            return false;
        }
    }
    true
}

#[test]
fn truncated_rows_buffers_are_errors_never_panics() {
    let buffers = rows_buffers();
    assert!(buffers.len() >= 16, "found {} rows events", buffers.len());
    for rows in &buffers {
        for n in 0..rows.data.len() {
            decode_all(rows, &rows.data[..n]);
        }
    }
}

#[test]
fn corrupted_rows_buffers_are_errors_never_panics() {
    for rows in rows_buffers() {
        for i in 0..rows.data.len() {
            for flip in [0xFF, 0x80, 0x01] {
                let mut bad = rows.data.clone();
                bad[i] ^= flip;
                decode_all(&rows, &bad);
            }
        }
    }
}

/// The JSON fixture's last transaction: UPDATE t SET json_col = JSON_SET(json_col, '$.age',
/// ...) logged with `binlog_row_value_options=PARTIAL_JSON` and `binlog_row_image=MINIMAL`,
/// a PARTIAL_UPDATE_ROWS event whose six rows each carry the key as before image and, as
/// after image, a REPLACE of `$.age` plus the generated columns. It comes right after a full
/// UPDATE of the same six rows, whose after images are the documents the diffs apply to.
struct PartialJsonUpdate {
    layout: TableLayout,
    /// The PARTIAL_UPDATE_ROWS event's rows buffer and column bitmaps, as logged.
    rows: Vec<u8>,
    before_present: Vec<bool>,
    after_present: Vec<bool>,
    /// The full after images (bytes) of the UPDATE before it, in row order.
    prior_after_images: Vec<Vec<u8>>,
}

impl PartialJsonUpdate {
    fn read() -> PartialJsonUpdate {
        let mut layout = None;
        let mut prior = None;
        let mut partial = None;
        for event in events("json.binlog.000001") {
            match event.read_data().expect("event data") {
                Some(EventData::TableMapEvent(tme)) => {
                    layout =
                        Some(TableLayout::from_table_map(&tme, ColumnNames::Positional).unwrap());
                }
                Some(EventData::RowsEvent(ev @ RowsEventData::UpdateRowsEvent(_))) => {
                    prior = Some(ev.rows_data().to_vec());
                }
                Some(EventData::RowsEvent(ev @ RowsEventData::PartialUpdateRowsEvent(_))) => {
                    partial = Some((
                        ev.rows_data().to_vec(),
                        bits(&ev, false).unwrap(),
                        bits(&ev, true).unwrap(),
                    ));
                }
                _ => {}
            }
        }
        let (rows, before_present, after_present) = partial.expect("a PARTIAL_UPDATE_ROWS event");
        let prior = prior.expect("a full UPDATE before it");
        let mut prior_after_images = Vec::new();
        let mut at = 0;
        while at < prior.len() {
            let after = support::json_table_image_end(&prior, at, [true; 4]);
            let end = support::json_table_image_end(&prior, after, [true; 4]);
            prior_after_images.push(prior[after..end].to_vec());
            at = end;
        }
        PartialJsonUpdate {
            layout: layout.expect("a table map"),
            rows,
            before_present,
            after_present,
            prior_after_images,
        }
    }

    /// The same event as it is logged with `binlog_row_image=FULL`: each row's before image is
    /// the full row (the prior UPDATE's after image), and the after image carries the key too.
    fn full_image_rows(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let mut at = 0;
        for prior in &self.prior_after_images {
            // Before image: null bitmap + id.
            let id = &self.rows[at + 1..at + 5];
            at += 5;
            // After image: value_options, partial-JSON bits, null bitmap, json diffs, name, age.
            let header = &self.rows[at..at + 2];
            let end = support::json_table_image_end(&self.rows, at + 2, [false, true, true, true]);
            out.extend_from_slice(prior);
            out.extend_from_slice(header);
            out.push(0); // null bitmap of four columns
            out.extend_from_slice(id);
            out.extend_from_slice(&self.rows[at + 3..end]);
            at = end;
        }
        assert_eq!(at, self.rows.len(), "six rows, nothing left over");
        out
    }
}

#[test]
fn partial_json_update_with_full_images_carries_the_patched_document() {
    let p = PartialJsonUpdate::read();
    assert_eq!(p.prior_after_images.len(), 6);
    let all = vec![true; 4];
    let data = p.full_image_rows();
    let mut buf = &data[..];
    let mut rows = Vec::new();
    while !buf.is_empty() {
        rows.push(
            p.layout
                .decode_partial_update(&mut buf, &all, &all)
                .expect("row decodes"),
        );
    }
    let expected = [
        (1, "Joe", 26, "xxxxxxxxxx"),
        (2, "Sue", 34, "yyyyyyyyyy"),
        (3, "Pete", 42, "zzzzzzzzzz"),
        (4, "Joe", 26, "xxxxxxxxxx"),
        (5, "Sue", 34, "yyyyyyyyyy"),
        (6, "Pete", 42, "zzzzzzzzzz"),
    ];
    assert_eq!(rows.len(), expected.len());
    for ((before, after), (id, name, age, data)) in rows.iter().zip(expected) {
        // The before image is the previous UPDATE's after image: the age one lower.
        assert_eq!(
            before,
            &vec![
                Value::Int(id),
                Value::Json(format!(
                    r#"{{"age":{},"data":"{data}","name":"{name}"}}"#,
                    age - 1
                )),
                text(name),
                Value::Int(age - 1),
            ]
        );
        // The after image is a full row whose JSON is the patched document, in the form
        // MySQL's stored document prints in.
        assert_eq!(
            after,
            &vec![
                Value::Int(id),
                Value::Json(format!(
                    r#"{{"age":{age},"data":"{data}","name":"{name}"}}"#
                )),
                text(name),
                Value::Int(age),
            ]
        );
        // The generated columns the server computed from its document agree with ours.
        let Value::Json(doc) = &after[1] else {
            unreachable!()
        };
        let doc: serde_json::Value = serde_json::from_str(doc).unwrap();
        assert_eq!(after[2], text(doc["name"].as_str().unwrap()));
        assert_eq!(after[3], Value::Int(doc["age"].as_i64().unwrap()));
    }
}

#[test]
fn partial_json_update_without_the_before_document_is_an_error_naming_column_and_path() {
    let p = PartialJsonUpdate::read();
    // As logged (binlog_row_image=MINIMAL): the before image is only the key.
    assert_eq!(p.before_present, [true, false, false, false]);
    assert_eq!(p.after_present, [false, true, true, true]);
    let mut buf = &p.rows[..];
    let err = p
        .layout
        .decode_partial_update(&mut buf, &p.before_present, &p.after_present)
        .unwrap_err();
    assert_eq!(&*err.column, "@2");
    let msg = err.to_string();
    assert!(
        msg.contains("REPLACE $.age") && msg.contains("binlog_row_image=FULL"),
        "{msg}"
    );
}

#[test]
fn partial_json_update_truncations_are_errors_except_at_row_ends() {
    let p = PartialJsonUpdate::read();
    let all = vec![true; 4];
    let data = p.full_image_rows();
    let rows = RowsBuffer {
        layout: p.layout.clone(),
        data: data.clone(),
        partial_json: Some((all.clone(), all.clone())),
    };
    // Where each row ends.
    let mut ends = Vec::new();
    let mut buf = &data[..];
    while !buf.is_empty() {
        p.layout
            .decode_partial_update(&mut buf, &all, &all)
            .unwrap();
        ends.push(data.len() - buf.len());
    }
    for n in 0..data.len() {
        let ok = decode_all(&rows, &data[..n]);
        assert_eq!(ok, n == 0 || ends.contains(&n), "prefix of {n} bytes");
    }
}
