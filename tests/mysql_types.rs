//! Type matrix: every MySQL/MariaDB column type, with edge values and NULLs, inserted, updated
//! and deleted on the real MariaDB; the values the live reader decodes must equal what `SELECT`
//! returns for the same rows.

mod support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;
use tidemark::event::{ChangeEvent, Op, SourceMessage, Value, format_time_micros, to_hex};
use tidemark::source::mysql::stream::{BinlogReader, ReaderOptions, StartPosition};

/// How a column is compared: the SQL expression that prints it exactly, and how our decoded
/// value prints in the same form.
#[derive(Clone, Copy)]
enum Form {
    /// `col` as MySQL prints integers, decimals, enum labels, set labels, year, date.
    Plain,
    /// `HEX(col)` against the bytes (binary) or the UTF-8 text.
    Hex,
    /// `HEX(CONVERT(col USING utf8mb4))`: text in another charset, compared as UTF-8.
    HexUtf8,
    /// `col + 0`: BIT as an integer.
    BitInt,
    /// `UNIX_TIMESTAMP(col)` with fsp digits: TIMESTAMP as an instant.
    Unix(u8),
    /// `col` printed with fsp digits: DATETIME / TIME.
    Fsp(u8),
    /// FLOAT: `col` printed with 6 significant digits, compared numerically.
    Float,
    /// DOUBLE: shortest round-trip text, compared numerically exactly.
    Double,
    /// `CONCAT(ST_SRID(col), ':', HEX(ST_AsWKB(col)))`.
    Geometry,
}

const COLUMNS: &[(&str, &str, Form)] = &[
    ("ti", "TINYINT", Form::Plain),
    ("tiu", "TINYINT UNSIGNED", Form::Plain),
    ("si", "SMALLINT", Form::Plain),
    ("siu", "SMALLINT UNSIGNED", Form::Plain),
    ("mi", "MEDIUMINT", Form::Plain),
    ("miu", "MEDIUMINT UNSIGNED", Form::Plain),
    ("i", "INT", Form::Plain),
    ("iu", "INT UNSIGNED", Form::Plain),
    ("bi", "BIGINT", Form::Plain),
    ("biu", "BIGINT UNSIGNED", Form::Plain),
    ("d65", "DECIMAL(65,30)", Form::Plain),
    ("d10", "DECIMAL(10,0)", Form::Plain),
    ("d52", "DECIMAL(5,2)", Form::Plain),
    ("f", "FLOAT", Form::Float),
    ("dbl", "DOUBLE", Form::Double),
    ("b1", "BIT(1)", Form::BitInt),
    ("b8", "BIT(8)", Form::BitInt),
    ("b64", "BIT(64)", Form::BitInt),
    ("dt", "DATE", Form::Plain),
    ("dtm0", "DATETIME", Form::Fsp(0)),
    ("dtm3", "DATETIME(3)", Form::Fsp(3)),
    ("dtm6", "DATETIME(6)", Form::Fsp(6)),
    ("ts0", "TIMESTAMP NULL", Form::Unix(0)),
    ("ts3", "TIMESTAMP(3) NULL", Form::Unix(3)),
    ("ts6", "TIMESTAMP(6) NULL", Form::Unix(6)),
    ("tm0", "TIME", Form::Fsp(0)),
    ("tm2", "TIME(2)", Form::Fsp(2)),
    ("tm6", "TIME(6)", Form::Fsp(6)),
    ("y", "YEAR", Form::Plain),
    ("c", "CHAR(10) CHARACTER SET utf8mb4", Form::Hex),
    ("vc", "VARCHAR(300) CHARACTER SET utf8mb4", Form::Hex),
    ("tx", "TEXT CHARACTER SET utf8mb4", Form::Hex),
    ("mtx", "MEDIUMTEXT CHARACTER SET utf8mb4", Form::Hex),
    ("l1", "VARCHAR(20) CHARACTER SET latin1", Form::HexUtf8),
    ("bn", "BINARY(8)", Form::Hex),
    ("vb", "VARBINARY(50)", Form::Hex),
    ("bl", "BLOB", Form::Hex),
    ("lb", "LONGBLOB", Form::Hex),
    ("e", "ENUM('a','b','c')", Form::Plain),
    ("st", "SET('x','y','z')", Form::Plain),
    ("j", "JSON", Form::Hex),
    ("g", "GEOMETRY", Form::Geometry),
    ("pt", "POINT", Form::Geometry),
    ("gen", "INT AS (i * 2) VIRTUAL", Form::Plain),
    ("gens", "INT AS (i + 1) STORED", Form::Plain),
    ("inv", "INT INVISIBLE", Form::Plain),
];

/// Column lists in the order of COLUMNS, for INSERTs.
fn insert(id: i64, values: &[&str]) -> String {
    let names: Vec<&str> = COLUMNS
        .iter()
        .filter(|c| !c.0.starts_with("gen"))
        .map(|c| c.0)
        .collect();
    assert_eq!(names.len(), values.len(), "row {id}: one value per column");
    format!(
        "INSERT INTO matrix (id, {}) VALUES ({id}, {})",
        names.join(", "),
        values.join(", ")
    )
}

fn select_expr(name: &str, form: Form) -> String {
    match form {
        Form::Plain | Form::Float | Form::Double => format!("`{name}`"),
        Form::Hex => format!("HEX(`{name}`)"),
        Form::HexUtf8 => format!("HEX(CONVERT(`{name}` USING utf8mb4))"),
        Form::BitInt => format!("`{name}` + 0"),
        Form::Unix(fsp) => format!("CAST(UNIX_TIMESTAMP(`{name}`) AS DECIMAL(20,{fsp}))"),
        Form::Fsp(_) => format!("`{name}`"),
        Form::Geometry => format!("CONCAT(ST_SRID(`{name}`), ':', HEX(ST_AsWKB(`{name}`)))"),
    }
}

/// Our decoded value in the form `select_expr` prints.
fn render(value: &Value, form: Form) -> Option<String> {
    let fsp_fraction = |micros: u64, fsp: u8| -> String {
        if fsp == 0 {
            String::new()
        } else {
            let digits = format!("{micros:06}");
            format!(".{}", &digits[..usize::from(fsp)])
        }
    };
    Some(match (value, form) {
        (Value::Null, _) => return None,
        (Value::Int(i), _) => i.to_string(),
        (Value::UInt(u), _) => u.to_string(),
        (Value::Decimal(d), _) => d.clone(),
        (Value::Float(f), _) => format!("{f:e}"),
        (Value::Double(f), _) => format!("{f:e}"),
        (Value::Text(t), Form::Hex | Form::HexUtf8) => to_hex(t.as_bytes()).to_uppercase(),
        (Value::Text(t), _) => t.clone(),
        (Value::Bytes(b), _) => to_hex(b).to_uppercase(),
        (Value::Enum(e), _) => e.clone(),
        (Value::Set(s), _) => s.join(","),
        (Value::Year(y), _) => format!("{y:04}"),
        (Value::Bit { bits, .. }, _) => bits.to_string(),
        (Value::Date(d), _) => d.to_string(),
        (Value::DateTime(dt), Form::Fsp(fsp)) => format!(
            "{} {:02}:{:02}:{:02}{}",
            dt.date,
            dt.hour,
            dt.minute,
            dt.second,
            fsp_fraction(u64::from(dt.micros), fsp)
        ),
        (Value::Timestamp(us), Form::Unix(fsp)) => {
            let secs = us.div_euclid(1_000_000);
            let frac = us.rem_euclid(1_000_000) as u64;
            format!("{secs}{}", fsp_fraction(frac, fsp))
        }
        (Value::Time(us), Form::Fsp(fsp)) => {
            let sign = if *us < 0 { "-" } else { "" };
            let abs = us.unsigned_abs();
            let whole = format_time_micros((abs - abs % 1_000_000) as i64);
            format!("{sign}{whole}{}", fsp_fraction(abs % 1_000_000, fsp))
        }
        (Value::Json(j), _) => to_hex(j.as_bytes()).to_uppercase(),
        (Value::Geometry { srid, wkb }, _) => format!("{srid}:{}", to_hex(wkb).to_uppercase()),
        (other, _) => panic!("unexpected value {other:?} for this form"),
    })
}

/// Row `id` as SELECT prints it, one column per COLUMNS entry in its comparable form.
async fn select_row(conn: &mut mysql_async::Conn, id: i64) -> mysql_async::Row {
    let exprs: Vec<String> = COLUMNS.iter().map(|(n, _, f)| select_expr(n, *f)).collect();
    let sql = format!("SELECT {} FROM matrix WHERE id = {id}", exprs.join(", "));
    conn.query_first(sql).await.unwrap().expect("row exists")
}

/// Compares one decoded row with what SELECT prints for the same row now.
async fn assert_row_matches(conn: &mut mysql_async::Conn, id: i64, row: &[Value], ctx: &str) {
    let selected = select_row(conn, id).await;
    // Row values: id first, then COLUMNS in table order.
    assert_eq!(row[0], Value::Int(id), "{ctx}: id");
    for (i, (name, _, form)) in COLUMNS.iter().enumerate() {
        let expected: Option<String> = selected.get(i).unwrap();
        let ours = render(&row[i + 1], *form);
        match (form, &expected, &ours) {
            (Form::Float, Some(e), Some(o)) => {
                let (e, o): (f64, f64) = (e.parse().unwrap(), o.parse().unwrap());
                assert!(
                    (e - o).abs() <= e.abs() * 1e-6,
                    "{ctx}: row {id} column {name}: SELECT {e}, decoded {o}"
                );
            }
            (Form::Double, Some(e), Some(o)) => {
                let (e, o): (f64, f64) = (e.parse().unwrap(), o.parse().unwrap());
                assert_eq!(e, o, "{ctx}: row {id} column {name}");
            }
            _ => assert_eq!(
                expected,
                ours,
                "{ctx}: row {id} column {name} ({:?})",
                row[i + 1]
            ),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_type_decodes_to_what_select_returns() {
    let (mut conn, db) = support::fresh_mysql_database("types").await;
    conn.query_drop("SET SESSION sql_mode = '', time_zone = '+00:00'")
        .await
        .unwrap();
    let defs: Vec<String> = COLUMNS
        .iter()
        .map(|(n, t, _)| format!("`{n}` {t}"))
        .collect();
    conn.query_drop(format!(
        "CREATE TABLE matrix (id INT PRIMARY KEY, {}) CHARACTER SET utf8mb4",
        defs.join(", ")
    ))
    .await
    .unwrap();
    let server_id = 2000 + std::process::id() % 100_000;
    let mut options = ReaderOptions::new("types", support::mysql_url(), server_id);
    options.heartbeat = Duration::from_secs(1);
    let mut reader = BinlogReader::connect(options, StartPosition::End)
        .await
        .unwrap();

    let minimum = [
        "-128",
        "0",
        "-32768",
        "0",
        "-8388608",
        "0",
        "-2147483648",
        "0",
        "-9223372036854775808",
        "0",
        "-99999999999999999999999999999999999.999999999999999999999999999999",
        "-9999999999",
        "-999.99",
        "-3.40282e38",
        "-1.7976931348623157e308",
        "b'0'",
        "b'00000000'",
        "b'0'",
        "'1000-01-01'",
        "'1000-01-01 00:00:00'",
        "'1000-01-01 00:00:00.000'",
        "'1000-01-01 00:00:00.000000'",
        "'1970-01-01 00:00:01'",
        "'1970-01-01 00:00:01.000'",
        "'1970-01-01 00:00:01.000000'",
        "'-838:59:59'",
        "'-838:59:59.99'",
        "'-838:59:59.000000'",
        "1901",
        "''",
        "''",
        "''",
        "''",
        "''",
        "x''",
        "x''",
        "x''",
        "x''",
        "'a'",
        "''",
        "'[]'",
        "ST_GeomFromText('POINT(0 0)')",
        "ST_GeomFromText('POINT(-1.5 2.25)', 4326)",
        "0",
    ];
    let maximum = [
        "127",
        "255",
        "32767",
        "65535",
        "8388607",
        "16777215",
        "2147483647",
        "4294967295",
        "9223372036854775807",
        "18446744073709551615",
        "99999999999999999999999999999999999.999999999999999999999999999999",
        "9999999999",
        "999.99",
        "3.40282e38",
        "1.7976931348623157e308",
        "b'1'",
        "b'11111111'",
        "b'1111111111111111111111111111111111111111111111111111111111111111'",
        "'9999-12-31'",
        "'9999-12-31 23:59:59'",
        "'9999-12-31 23:59:59.999'",
        "'9999-12-31 23:59:59.999999'",
        "'2038-01-19 03:14:07'",
        "'2038-01-19 03:14:07.999'",
        "'2038-01-19 03:14:07.999999'",
        "'838:59:59'",
        "'838:59:59.99'",
        "'838:59:59.000000'",
        "2155",
        "'abcdefghij'",
        "REPEAT('€', 300)",
        "REPEAT('x', 65535)",
        "REPEAT('y', 100000)",
        "'Ünïcödé àçcents'",
        "x'0001020300fffe00'",
        "x'00'",
        "x'00ff00ff'",
        "REPEAT(x'00ff', 50000)",
        "'c'",
        "'x,y,z'",
        "'{\"k\": [1, 2.5, \"s\", null, true], \"nested\": {\"deep\": {}}}'",
        "ST_GeomFromText('POLYGON((0 0,10 0,10 10,0 10,0 0))')",
        "ST_GeomFromText('POINT(179.999 -89.5)')",
        "2147483647",
    ];
    let all_null: Vec<&str> = std::iter::repeat_n("NULL", maximum.len()).collect();
    let typical = [
        "-5",
        "200",
        "-300",
        "60000",
        "-70000",
        "70000",
        "-123456",
        "3000000000",
        "-1234567890123",
        "12345678901234567890",
        "0.000000000000000000000000000001",
        "42",
        "-0.5",
        "1.5",
        "0.1",
        "b'1'",
        "b'00100000'",
        "b'101'",
        "'2024-02-29'",
        "'2024-02-29 13:14:15'",
        "'2024-02-29 13:14:15.120'",
        "'2024-02-29 13:14:15.000001'",
        "'2024-02-29 13:14:15'",
        "'2024-02-29 13:14:15.123'",
        "'2024-02-29 13:14:15.000001'",
        "'100:00:00'",
        "'-00:00:00.01'",
        "'-01:02:03.000004'",
        "2024",
        "'emoji🎉'",
        "'😀 multi 👩‍👩‍👧 byte'",
        "'line\\nbreak\\ttab'",
        "''",
        "'café'",
        "x'ff'",
        "x'000000'",
        "''",
        "x'00'",
        "'b'",
        "'x,z'",
        "'{\"emoji\": \"🚀\", \"n\": -1}'",
        "ST_GeomFromText('LINESTRING(0 0,1 1,2 1)')",
        "ST_GeomFromText('POINT(1 2)')",
        "-7",
    ];
    let zero_dates = [
        "0",
        "0",
        "0",
        "0",
        "0",
        "0",
        "0",
        "0",
        "0",
        "0",
        "0",
        "0",
        "0",
        "0",
        "0",
        "b'0'",
        "b'0'",
        "b'0'",
        "'0000-00-00'",
        "'0000-00-00 00:00:00'",
        "'0000-00-00 00:00:00'",
        "'2024-00-10 00:00:00'",
        "'0000-00-00 00:00:00'",
        "'0000-00-00 00:00:00'",
        "'0000-00-00 00:00:00'",
        "'00:00:00'",
        "'00:00:00'",
        "'00:00:00'",
        "0",
        "NULL",
        "NULL",
        "NULL",
        "NULL",
        "NULL",
        "NULL",
        "NULL",
        "NULL",
        "NULL",
        "NULL",
        "NULL",
        "NULL",
        "NULL",
        "NULL",
        "NULL",
    ];
    let rows: [(i64, &[&str]); 5] = [
        (1, &minimum),
        (2, &maximum),
        (3, &all_null),
        (4, &typical),
        (5, &zero_dates),
    ];
    conn.query_drop("BEGIN").await.unwrap();
    for (id, values) in rows {
        conn.query_drop(insert(id, values)).await.unwrap();
    }
    conn.query_drop("COMMIT").await.unwrap();

    let inserted = collect_changes(&mut reader, &db, 5).await;
    for change in &inserted {
        assert_eq!(change.op, Op::Insert);
        let row = change.after.as_ref().unwrap();
        let Value::Int(id) = row[0] else { panic!("id") };
        assert_row_matches(&mut conn, id, row, "insert").await;
    }
    // Schema: names, key and nullability come from the binlog metadata.
    let schema = &inserted[0].table;
    assert_eq!(schema.primary_key, vec![0]);
    assert_eq!(&*schema.columns[1].name, "ti");
    assert!(!schema.columns[0].nullable && schema.columns[1].nullable);

    // Updates: before images equal the inserted rows, after images what SELECT shows now.
    let before: HashMap<i64, Vec<Value>> = inserted
        .iter()
        .map(|c| {
            let row = c.after.clone().unwrap();
            let Value::Int(id) = row[0] else { panic!("id") };
            (id, row)
        })
        .collect();
    conn.query_drop(
        "UPDATE matrix SET biu = biu - 1, vc = CONCAT(vc, '✓'), e = 'a', st = 'y', b64 = b'1', j = '{\"a\": 1}', tm6 = '-12:00:00.5', ts6 = '2001-09-09 01:46:40.5' WHERE id IN (2, 4)",
    )
    .await
    .unwrap();
    let updated = collect_changes(&mut reader, &db, 2).await;
    for change in &updated {
        assert_eq!(change.op, Op::Update);
        let after = change.after.as_ref().unwrap();
        let Value::Int(id) = after[0] else {
            panic!("id")
        };
        assert_eq!(
            change.before.as_ref(),
            before.get(&id),
            "before image of row {id}"
        );
        assert_row_matches(&mut conn, id, after, "update").await;
    }

    // Deletes: before images are the rows as they were.
    let mut current = Vec::new();
    for id in 1..=5 {
        current.push(select_row(&mut conn, id).await);
    }
    conn.query_drop("DELETE FROM matrix").await.unwrap();
    let deleted = collect_changes(&mut reader, &db, 5).await;
    for (change, selected) in deleted.iter().zip(&current) {
        assert_eq!(change.op, Op::Delete);
        let row = change.before.as_ref().unwrap();
        for (i, (name, _, form)) in COLUMNS.iter().enumerate() {
            if matches!(form, Form::Float | Form::Double) {
                continue;
            }
            let expected: Option<String> = selected.get(i).unwrap();
            assert_eq!(
                expected,
                render(&row[i + 1], *form),
                "delete: column {name}"
            );
        }
    }
    reader.close().await;
}

/// Reads until `count` changes of `db`.matrix have been committed.
async fn collect_changes(reader: &mut BinlogReader, db: &str, count: usize) -> Vec<ChangeEvent> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut pending = Vec::new();
    let mut done = Vec::new();
    let mut batch = Vec::new();
    while done.len() < count {
        assert!(
            Instant::now() < deadline,
            "only {} of {count} changes arrived",
            done.len()
        );
        batch.clear();
        reader.next_batch(&mut batch).await.unwrap();
        for message in batch.drain(..) {
            match message {
                SourceMessage::Change(c) if *c.table.id.namespace == *db => pending.push(c),
                SourceMessage::Commit(_) => done.append(&mut pending),
                SourceMessage::Rollback => pending.clear(),
                _ => {}
            }
        }
    }
    assert_eq!(done.len(), count);
    done
}
