//! Type matrix: every MySQL/MariaDB column type, with edge values and NULLs, inserted, updated
//! and deleted on the real MariaDB; the values the live reader decodes must equal what `SELECT`
//! returns for the same rows. The matrix (columns and rows) is `tests/support/type_matrix.rs`.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use mysql_async::prelude::Queryable;
use tidemark::event::{Op, Value, format_time_micros, to_hex};
use tidemark::source::mysql::reader::{BinlogReader, ReaderOptions, StartPosition};

use support::type_matrix::{
    COLUMNS, Form, UPDATE_ROWS_2_AND_4, collect_changes, insert_matrix_rows,
};

/// The SQL expression that prints column `name` in `form`.
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
    let exprs: Vec<String> = COLUMNS
        .iter()
        .map(|c| select_expr(c.name, c.form))
        .collect();
    let sql = format!("SELECT {} FROM matrix WHERE id = {id}", exprs.join(", "));
    conn.query_first(sql).await.unwrap().expect("row exists")
}

/// Compares one decoded row with what SELECT prints for the same row now.
async fn assert_row_matches(conn: &mut mysql_async::Conn, id: i64, row: &[Value], ctx: &str) {
    let selected = select_row(conn, id).await;
    // Row values: id first, then COLUMNS in table order.
    assert_eq!(row[0], Value::Int(id), "{ctx}: id");
    for (i, column) in COLUMNS.iter().enumerate() {
        let (name, form) = (column.name, column.form);
        let expected: Option<String> = selected.get(i).unwrap();
        let ours = render(&row[i + 1], form);
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
    support::type_matrix::create_table(&mut conn).await;
    let server_id = 2000 + std::process::id() % 100_000;
    let mut options = ReaderOptions::new("types", support::mysql_url(), server_id);
    options.heartbeat = Duration::from_secs(1);
    let mut reader = BinlogReader::connect(options, StartPosition::End)
        .await
        .unwrap();

    insert_matrix_rows(&mut conn).await;

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
    conn.query_drop(UPDATE_ROWS_2_AND_4).await.unwrap();
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
        for (i, column) in COLUMNS.iter().enumerate() {
            if matches!(column.form, Form::Float | Form::Double) {
                continue;
            }
            let expected: Option<String> = selected.get(i).unwrap();
            assert_eq!(
                expected,
                render(&row[i + 1], column.form),
                "delete: column {}",
                column.name
            );
        }
    }
    reader.close().await;
}
