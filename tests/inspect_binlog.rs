//! `tidemark inspect binlog` on the real MySQL 8 / MariaDB binlog files in
//! `../shared/fixtures/mysql8-binlogs/` (values from its SOURCES.md), and on broken input.

mod support;

use std::path::PathBuf;
use std::process::{Command, Output};

use serde_json::{Value, json};

fn fixture(name: &str) -> PathBuf {
    support::mysql8_fixture(name)
}

fn inspect(args: &[&str], files: &[PathBuf]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tidemark"))
        .args(["inspect", "binlog"])
        .args(args)
        .args(files)
        .output()
        .expect("running tidemark")
}

/// Runs inspect expecting success; returns the printed row changes (DDL lines dropped).
fn changes(args: &[&str], name: &str) -> Vec<Value> {
    let out = inspect(args, &[fixture(name)]);
    assert!(
        out.status.success(),
        "{name}: exit {:?}: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    lines(&out)
        .into_iter()
        .filter(|l| l["op"] != "ddl")
        .collect()
}

fn lines(out: &Output) -> Vec<Value> {
    String::from_utf8(out.stdout.clone())
        .expect("utf-8 output")
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn enum_and_set_columns_print_their_labels() {
    let rows = changes(&[], "mysql-enum-string-set.000001");
    let ops: Vec<&str> = rows.iter().map(|r| r["op"].as_str().unwrap()).collect();
    assert_eq!(ops, ["insert", "update", "delete"]);
    assert_eq!(rows[0]["after"]["f3"], "var1");
    assert_eq!(rows[0]["after"]["f4"], "one,three");
    let after = &rows[1]["after"];
    assert_eq!(
        (&after["f1"], &after["f2"], &after["f3"], &after["f4"]),
        (
            &json!("field1"),
            &json!("field_2"),
            &json!("variant2"),
            &json!("two,four")
        )
    );
    assert_eq!(rows[2]["before"]["f3"], "variant2");
    assert_eq!(rows[0]["gtid"], "93e95066-a2f4-11ec-9b69-9657f0ae95e2:3");
}

#[test]
fn bit_columns_keep_their_width() {
    let rows = changes(&[], "mysql_type_bit.000001");
    assert_eq!(rows.len(), 1);
    assert_eq!(
        rows[0]["after"],
        json!({"a": "100", "b": "foo", "c": "00100000"})
    );
}

#[test]
fn invisible_columns_decode_like_visible_ones() {
    let rows = changes(&[], "binlog-invisible-columns.000001");
    assert_eq!(
        rows[0]["after"],
        json!({"f1": 1, "f2": 2, "f3": -3, "f4": "4", "f5": "05", "f6": 6000000000u64})
    );
    assert!(rows.iter().any(|r| r["op"] == "update"));
}

#[test]
fn mariadb_gtids_and_rows_decode() {
    let rows = changes(&[], "mariadb-bin.000001");
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["gtid"], "0-1-1");
    assert_eq!(rows[1]["gtid"], "0-1-2");
    assert_eq!(rows[0]["database"], "toddy_test");
    assert_eq!(rows[0]["table"], "outbox");
    let after = &rows[0]["after"];
    assert_eq!(after["id"], 62);
    assert_eq!(after["topic"], "foo");
    assert_eq!(after["event_type"], "JSON");
    // `event` is a BLOB holding the bytes of '{"foo":1}'; binary prints as hex.
    assert_eq!(after["event"], "7b22666f6f223a317d");
    assert_eq!(after["created"], "2022-04-20T22:18:04Z"); // TIMESTAMP 1650493084
    assert_eq!(rows[1]["after"]["id"], 63);
    assert_eq!(rows[1]["after"]["created"], "2022-04-20T22:19:55Z"); // 1650493195
}

#[test]
fn mysql_binary_json_prints_as_json_with_generated_columns() {
    // Written with MINIMAL row metadata: refused by default, naming the setting ...
    let out = inspect(&[], &[fixture("json.binlog.000001")]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("binlog_row_metadata=FULL"),
        "{}",
        stderr(&out)
    );
    // ... and readable offline with positional names, up to the PARTIAL_UPDATE_ROWS event at
    // its end. That one was logged with binlog_row_image=MINIMAL: its before image is only
    // the key, so the document its JSON diff applies to is not in the log. It is refused,
    // naming the column, the diff and the setting, never printed with a guessed document.
    let out = inspect(&["--positional-names"], &[fixture("json.binlog.000001")]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("json.binlog.000001:3750")
            && err.contains("column @2")
            && err.contains("REPLACE $.age")
            && err.contains("binlog_row_image=FULL"),
        "{err}"
    );
    let rows: Vec<Value> = lines(&out)
        .into_iter()
        .filter(|l| l["op"] != "ddl")
        .collect();
    assert_eq!(
        rows[0]["after"],
        json!({"@1": 1, "@2": {"age": 24, "data": "xxxxxxxxxx", "name": "Joe"}, "@3": "Joe", "@4": 24})
    );
    assert_eq!(rows.iter().filter(|r| r["op"] == "insert").count(), 6);
    assert_eq!(rows.iter().filter(|r| r["op"] == "update").count(), 6);
    let updated = rows.iter().find(|r| r["op"] == "update").unwrap();
    assert_eq!(updated["before"]["@2"]["age"], 24);
    assert_eq!(updated["after"]["@2"]["age"], 25);
    assert_eq!(updated["after"]["@4"], 25);

    // The same binlog with its PARTIAL_UPDATE_ROWS event as binlog_row_image=FULL logs it:
    // printed whole, each after image a full row holding the patched document.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("json.binlog.000001");
    std::fs::write(&path, json_fixture_with_full_images()).unwrap();
    let out = inspect(&["--positional-names"], &[path]);
    assert!(out.status.success(), "{}", stderr(&out));
    let partial: Vec<Value> = lines(&out)
        .into_iter()
        .filter(|l| l["position"] == "json.binlog.000001:3527")
        .collect();
    assert_eq!(partial.len(), 6);
    for (i, (name, age, data)) in [
        ("Joe", 26, "xxxxxxxxxx"),
        ("Sue", 34, "yyyyyyyyyy"),
        ("Pete", 42, "zzzzzzzzzz"),
    ]
    .into_iter()
    .cycle()
    .take(6)
    .enumerate()
    {
        let row = &partial[i];
        assert_eq!(row["op"], "update");
        assert_eq!(row["seq"], i);
        assert_eq!(
            row["before"],
            json!({"@1": i + 1, "@2": {"age": age - 1, "data": data, "name": name}, "@3": name, "@4": age - 1})
        );
        assert_eq!(
            row["after"],
            json!({"@1": i + 1, "@2": {"age": age, "data": data, "name": name}, "@3": name, "@4": age})
        );
        // The generated columns (name = json->>'$.name', age = json->'$.age') that the server
        // computed from its document agree with the patched one.
        assert_eq!(row["after"]["@3"], row["after"]["@2"]["name"]);
        assert_eq!(row["after"]["@4"], row["after"]["@2"]["age"]);
    }
}

/// Where each event of a binlog file starts, with its type code and size.
fn event_offsets(bytes: &[u8]) -> Vec<(usize, u8, usize)> {
    let mut out = Vec::new();
    let mut at = 4;
    while at + 19 <= bytes.len() {
        let size = u32::from_le_bytes(bytes[at + 9..at + 13].try_into().unwrap()) as usize;
        out.push((at, bytes[at + 4], size));
        at += size;
    }
    out
}

/// CRC32 of an event without its last four bytes, as the server computes its checksum.
fn event_crc(event: &[u8]) -> [u8; 4] {
    crc32fast::hash(&event[..event.len() - 4]).to_le_bytes()
}

/// json.binlog.000001 with its last rows event, a PARTIAL_UPDATE_ROWS logged with
/// binlog_row_image=MINIMAL (before image: the key; after image: a JSON diff and the generated
/// columns), rewritten the way binlog_row_image=FULL logs it: each before image is the full
/// row (the after image of the full UPDATE just before it), each after image carries the key
/// too. Sizes, log positions and CRC32s of it and the events after it are fixed up.
fn json_fixture_with_full_images() -> Vec<u8> {
    const UPDATE_ROWS: u8 = 31;
    const PARTIAL_UPDATE_ROWS: u8 = 39;
    // Rows events v2: 19-byte header, table id (6), flags (2), extra length (2, here 2 = no
    // extra data), column count (1 byte for 4 columns), one bitmap byte per image.
    const ROWS_AT: usize = 19 + 6 + 2 + 2 + 1 + 2;
    let bytes = std::fs::read(fixture("json.binlog.000001")).unwrap();
    let events = event_offsets(&bytes);
    let body = |ty: u8| {
        let &(at, _, size) = events.iter().rev().find(|e| e.1 == ty).unwrap();
        let event = &bytes[at..at + size];
        assert_eq!(
            event_crc(event),
            event[size - 4..],
            "the fixture has CRC32s"
        );
        assert_eq!(
            event[19 + 8..19 + 11],
            [2, 0, 4],
            "no extra data, 4 columns"
        );
        (at, event)
    };
    let (_, prior) = body(UPDATE_ROWS);
    let (partial_at, partial) = body(PARTIAL_UPDATE_ROWS);

    let prior_rows = &prior[ROWS_AT..prior.len() - 4];
    let mut prior_after = Vec::new();
    let mut at = 0;
    while at < prior_rows.len() {
        let after = support::json_table_image_end(prior_rows, at, [true; 4]);
        let end = support::json_table_image_end(prior_rows, after, [true; 4]);
        prior_after.push(&prior_rows[after..end]);
        at = end;
    }
    let rows = &partial[ROWS_AT..partial.len() - 4];
    assert_eq!(
        partial[ROWS_AT - 2..ROWS_AT],
        [0b0001, 0b1110],
        "MINIMAL images"
    );
    let mut full_rows = Vec::new();
    let mut at = 0;
    for prior in prior_after {
        let id = &rows[at + 1..at + 5];
        at += 5;
        // value_options, partial-JSON bits, null bitmap, then the JSON diffs, name, age.
        let end = support::json_table_image_end(rows, at + 2, [false, true, true, true]);
        full_rows.extend_from_slice(prior);
        full_rows.extend_from_slice(&rows[at..at + 2]);
        full_rows.push(0);
        full_rows.extend_from_slice(id);
        full_rows.extend_from_slice(&rows[at + 3..end]);
        at = end;
    }
    assert_eq!(at, rows.len());

    let mut event = partial[..ROWS_AT - 2].to_vec();
    event.extend_from_slice(&[0b1111, 0b1111]);
    event.extend(full_rows);
    event.extend_from_slice(&[0; 4]);
    let grown = event.len() - partial.len();
    let mut out = bytes[..partial_at].to_vec();
    let mut rest = vec![event];
    for &(at, _, size) in events.iter().filter(|e| e.0 > partial_at) {
        rest.push(bytes[at..at + size].to_vec());
    }
    for event in &mut rest {
        let size = event.len() as u32;
        let end = out.len() as u32 + size;
        event[9..13].copy_from_slice(&size.to_le_bytes());
        event[13..17].copy_from_slice(&end.to_le_bytes());
        let crc = event_crc(event);
        let n = event.len();
        event[n - 4..].copy_from_slice(&crc);
        out.extend_from_slice(event);
    }
    assert_eq!(out.len(), bytes.len() + grown);
    out
}

/// The `after` image of each printed row change, as the exact text printed (parsing it with
/// serde_json would read numbers as f64 and hide a lost scale).
fn after_texts(name: &str) -> Vec<String> {
    let out = inspect(&[], &[fixture(name)]);
    assert!(out.status.success(), "{name}: {}", stderr(&out));
    String::from_utf8(out.stdout)
        .expect("utf-8 output")
        .lines()
        .filter(|l| !l.starts_with(r#"{"op":"ddl""#))
        .map(|l| {
            let (_, after) = l.split_once(r#","after":"#).expect("an after image");
            after.strip_suffix('}').expect("the line's end").to_owned()
        })
        .collect()
}

#[test]
fn json_opaque_values_print_as_mysql_stored_them_with_exact_decimals() {
    assert_eq!(
        after_texts("json-opaque.binlog"),
        [
            r#"{"a":{"a":"base64:type15:VQ=="}}"#,
            r#"{"a":{"b":"2012-03-18"}}"#,
            r#"{"a":{"c":"2012-03-18 11:30:45.000000"}}"#,
            r#"{"a":{"c":"87:31:46.654321"}}"#,
            // DECIMALs keep their digits and scale: never read through a double.
            r#"{"a":{"d":123.456}}"#,
            r#"{"a":{"e":9.00}}"#,
            r#"{"a":{"e":[0,1,true,false]}}"#,
            r#"{"a":{"e":null}}"#,
        ]
    );
}

#[test]
fn mysql9_vectors_print_as_arrays_of_their_floats() {
    let foo = [
        r#"{"id":1,"vector_column":[1.1,2.2,3.3]}"#,
        r#"{"id":2,"vector_column":[1.0,-1.0,0.0]}"#,
    ];
    let bar = [
        r#"{"id":1,"vector_column":[1.1,2.2],"foo":null,"vector_column2":[1.1,2.2,3.3,4.4]}"#,
        r#"{"id":2,"vector_column":[1.01,-1.01],"foo":"bar","vector_column2":[42.0,43.0,44.0,45.0]}"#,
    ];
    let mut expected: Vec<&str> = [foo, bar].concat().repeat(2);
    // A delete of bar's row 2 (no after image) and an insert.
    expected.push("null");
    expected.push(r#"{"id":3,"vector_column":[2.01,-2.01],"foo":null,"vector_column2":[42.1,43.2,44.3,45.4]}"#);
    assert_eq!(after_texts("vector.binlog"), expected);
    let rows = changes(&[], "vector.binlog");
    assert_eq!(rows[8]["op"], "delete");
    assert_eq!(
        rows[8]["before"],
        serde_json::from_str::<Value>(bar[1]).unwrap()
    );
}

#[test]
fn compressed_transaction_payload_decodes_like_plain_rows() {
    let rows = changes(&["--positional-names"], "transaction_compression.000001");
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["op"], "insert");
    assert_eq!(rows[0]["database"], "test");
    assert_eq!(rows[0]["table"], "tb1");
}

#[test]
fn minimal_metadata_is_refused_but_inspectable_with_unsigned_values() {
    let out = inspect(&[], &[fixture("minimal_row_metadata.000001")]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("binlog_row_metadata=FULL"));
    let rows = changes(&["--positional-names"], "minimal_row_metadata.000001");
    assert_eq!(rows.len(), 1);
    // A partial (MINIMAL) image: only the columns the statement set are there.
    assert_eq!(
        rows[0]["after"],
        json!({"@1": 1, "@3": "a", "@5": 3230202323u64})
    );
}

#[test]
fn statement_format_dml_is_reported_not_skipped() {
    let out = inspect(&[], &[fixture("binlog_transaction_with_GTID.000001")]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("statement-format DML"), "{err}");
    assert!(err.contains("binlog_format='ROW'"), "{err}");
    // The DDL before it was printed, with its GTID.
    let printed = lines(&out);
    assert_eq!(printed[0]["op"], "ddl");
    assert_eq!(printed[0]["gtid"], "006c2cf2-b1ea-11e4-9057-8c705a3d3e78:1");
}

#[test]
fn pre_metadata_binlog_with_partial_images_is_shown_as_it_is() {
    // No optional metadata at all (MySQL Cluster, 2009): refused for lack of names ...
    let out = inspect(&[], &[fixture("update-partial-row.binlog")]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("binlog_row_metadata=FULL"),
        "{}",
        stderr(&out)
    );
    // ... shown offline with positional names; partial images carry only their columns.
    let rows = changes(&["--positional-names"], "update-partial-row.binlog");
    let update = rows.iter().find(|r| r["op"] == "update").unwrap();
    assert_eq!(update["before"], json!({"@1": 4, "@3": 4}));
    assert_eq!(update["after"], json!({"@1": 4, "@3": 40}));
    let delete = rows.iter().find(|r| r["op"] == "delete").unwrap();
    assert_eq!(delete["before"], json!({"@1": 2}));
}

#[test]
fn checksum_mismatch_names_file_and_offset() {
    // mariadb-bin.000001 has CRC32 checksums; its first Write_rows event spans 612..671.
    let mut bytes = std::fs::read(fixture("mariadb-bin.000001")).unwrap();
    bytes[640] ^= 0x01;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mariadb-bin.000001");
    std::fs::write(&path, bytes).unwrap();
    let out = inspect(&[], &[path]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("checksum mismatch"), "{err}");
    assert!(err.contains("mariadb-bin.000001:612"), "{err}");
    // Nothing of the damaged transaction was printed.
    assert!(lines(&out).iter().all(|l| l["after"]["id"] != 62));
}

#[test]
fn not_a_binlog_names_offset_zero() {
    let out = inspect(&[], &[fixture("SOURCES.md")]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("byte offset 0"), "{}", stderr(&out));
}

#[test]
fn missing_file_is_a_clear_error() {
    let out = inspect(&[], &[PathBuf::from("/nonexistent/binlog.000001")]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("/nonexistent/binlog.000001"));
}

/// Every truncation and a spread of byte corruptions of every fixture: exit 0 or 1 with a
/// message, never a panic (exit 101) and never a crash.
#[test]
fn truncated_or_corrupt_files_never_panic() {
    let dir = tempfile::tempdir().unwrap();
    let names = [
        "mysql-enum-string-set.000001",
        "mariadb-bin.000001",
        "json.binlog.000001",
        "transaction_compression.000001",
        "binlog-invisible-columns.000001",
    ];
    let mut runs = 0;
    for name in names {
        let bytes = std::fs::read(fixture(name)).unwrap();
        let mut cases: Vec<Vec<u8>> = Vec::new();
        for cut in (1..bytes.len()).step_by(37) {
            cases.push(bytes[..cut].to_vec());
        }
        for at in (4..bytes.len()).step_by(53) {
            let mut b = bytes.clone();
            b[at] ^= 0x5a;
            cases.push(b);
        }
        // Many cases per process keep this fast: each file is one argument.
        let paths: Vec<PathBuf> = cases
            .iter()
            .enumerate()
            .map(|(i, case)| {
                let p = dir.path().join(format!("{name}.{i}"));
                std::fs::write(&p, case).unwrap();
                p
            })
            .collect();
        for path in &paths {
            let out = inspect(&["--positional-names"], std::slice::from_ref(path));
            runs += 1;
            let code = out.status.code();
            assert!(
                code == Some(0) || code == Some(1),
                "{}: exit {code:?}: {}",
                path.display(),
                stderr(&out)
            );
            assert!(!stderr(&out).contains("panicked"), "{}", stderr(&out));
            if code == Some(1) {
                assert!(stderr(&out).contains(&*path.to_string_lossy()));
            }
        }
    }
    assert!(runs > 100);
}
