//! The MySQL/MariaDB type matrix shared by `tests/mysql_types.rs` (the live reader must decode
//! each value as `SELECT` prints it) and `tests/pipeline_types.rs` (`tidemark run` must land
//! each value, in the Postgres type docs/warehouse-postgres.md documents): table `matrix`, one
//! column per type, and rows of edge values (extremes, NULL vs empty, zero dates, microseconds,
//! negative and >24 h TIME, emoji, zero bytes, text in other character sets).

/// How `tests/mysql_types.rs` compares a column: the SQL expression that prints it exactly, and
/// how the decoded value prints in the same form.
#[derive(Clone, Copy, Debug)]
pub enum Form {
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

/// One column of the matrix.
#[derive(Clone, Copy, Debug)]
pub struct Column {
    /// Column name (the same at the source and in the target).
    pub name: &'static str,
    /// MySQL column type.
    pub mysql_type: &'static str,
    /// Documented Postgres type of the target column, as `format_type` prints it.
    pub pg_type: &'static str,
    /// How the decoded value is compared with `SELECT`.
    pub form: Form,
}

const fn col(
    name: &'static str,
    mysql_type: &'static str,
    pg_type: &'static str,
    form: Form,
) -> Column {
    Column {
        name,
        mysql_type,
        pg_type,
        form,
    }
}

/// The columns of `matrix` after its `id INT PRIMARY KEY`, in table order.
#[rustfmt::skip]
pub const COLUMNS: &[Column] = &[
    col("ti", "TINYINT", "smallint", Form::Plain),
    col("tiu", "TINYINT UNSIGNED", "smallint", Form::Plain),
    col("si", "SMALLINT", "smallint", Form::Plain),
    col("siu", "SMALLINT UNSIGNED", "integer", Form::Plain),
    col("mi", "MEDIUMINT", "integer", Form::Plain),
    col("miu", "MEDIUMINT UNSIGNED", "integer", Form::Plain),
    col("i", "INT", "integer", Form::Plain),
    col("iu", "INT UNSIGNED", "bigint", Form::Plain),
    col("bi", "BIGINT", "bigint", Form::Plain),
    col("biu", "BIGINT UNSIGNED", "numeric(20,0)", Form::Plain),
    col("d65", "DECIMAL(65,30)", "numeric(65,30)", Form::Plain),
    col("d10", "DECIMAL(10,0)", "numeric(10,0)", Form::Plain),
    col("d52", "DECIMAL(5,2)", "numeric(5,2)", Form::Plain),
    col("f", "FLOAT", "real", Form::Float),
    col("dbl", "DOUBLE", "double precision", Form::Double),
    col("b1", "BIT(1)", "bit varying(64)", Form::BitInt),
    col("b8", "BIT(8)", "bit varying(64)", Form::BitInt),
    col("b64", "BIT(64)", "bit varying(64)", Form::BitInt),
    col("dt", "DATE", "date", Form::Plain),
    col("dtm0", "DATETIME", "timestamp(0) without time zone", Form::Fsp(0)),
    col("dtm3", "DATETIME(3)", "timestamp(3) without time zone", Form::Fsp(3)),
    col("dtm6", "DATETIME(6)", "timestamp(6) without time zone", Form::Fsp(6)),
    col("ts0", "TIMESTAMP NULL", "timestamp(0) with time zone", Form::Unix(0)),
    col("ts3", "TIMESTAMP(3) NULL", "timestamp(3) with time zone", Form::Unix(3)),
    col("ts6", "TIMESTAMP(6) NULL", "timestamp(6) with time zone", Form::Unix(6)),
    col("tm0", "TIME", "interval", Form::Fsp(0)),
    col("tm2", "TIME(2)", "interval", Form::Fsp(2)),
    col("tm6", "TIME(6)", "interval", Form::Fsp(6)),
    col("y", "YEAR", "smallint", Form::Plain),
    col("c", "CHAR(10) CHARACTER SET utf8mb4", "text", Form::Hex),
    col("vc", "VARCHAR(300) CHARACTER SET utf8mb4", "text", Form::Hex),
    col("tx", "TEXT CHARACTER SET utf8mb4", "text", Form::Hex),
    col("mtx", "MEDIUMTEXT CHARACTER SET utf8mb4", "text", Form::Hex),
    col("l1", "VARCHAR(20) CHARACTER SET latin1", "text", Form::HexUtf8),
    col("bn", "BINARY(8)", "bytea", Form::Hex),
    col("vb", "VARBINARY(50)", "bytea", Form::Hex),
    col("bl", "BLOB", "bytea", Form::Hex),
    col("lb", "LONGBLOB", "bytea", Form::Hex),
    col("e", "ENUM('a','b','c')", "text", Form::Plain),
    col("st", "SET('x','y','z')", "text", Form::Plain),
    // MariaDB's JSON is LONGTEXT and its binlog cannot tell them apart (docs/types.md).
    col("j", "JSON", "text", Form::Hex),
    col("g", "GEOMETRY", "bytea", Form::Geometry),
    col("pt", "POINT", "bytea", Form::Geometry),
    col("gen", "INT AS (i * 2) VIRTUAL", "integer", Form::Plain),
    col("gens", "INT AS (i + 1) STORED", "integer", Form::Plain),
    col("inv", "INT INVISIBLE", "integer", Form::Plain),
    col("u2", "VARCHAR(10) CHARACTER SET ucs2", "text", Form::HexUtf8),
    col("u16", "VARCHAR(10) CHARACTER SET utf16", "text", Form::HexUtf8),
    col("u32", "VARCHAR(10) CHARACTER SET utf32", "text", Form::HexUtf8),
    col("asc7", "VARCHAR(10) CHARACTER SET ascii", "text", Form::HexUtf8),
    col("u3", "VARCHAR(10) CHARACTER SET utf8mb3", "text", Form::HexUtf8),
];

/// The smallest value of each type (empty text and bytes).
///
/// Rows, for [`insert`]: one value per non-generated column, in COLUMNS order.
pub const MINIMUM: &[&str] = &[
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
    "''",
    "''",
    "''",
    "''",
    "''",
];

/// The largest value of each type (long and multi-byte text, big blobs).
pub const MAXIMUM: &[&str] = &[
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
    "'é中€ÿ'",
    "'𝄞🎉 ok'",
    "'𝄞🎉 ok'",
    "'~!@ \\t'",
    "'ÿ中€'",
];

/// Everyday values with edges of their own: emoji, escapes, a leap day, negative and >24 h TIME.
pub const TYPICAL: &[&str] = &[
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
    "'café €‰'",
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
    "'abc'",
    "'x'",
    "'y'",
    "'hello'",
    "'z'",
];

/// Zero dates (and the partial zero date `2024-00-10`: NULL in the target, docs/types.md) and
/// zero numbers; NULL text.
pub const ZEROS: &[&str] = &[
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
    "NULL",
    "NULL",
    "NULL",
    "NULL",
    "NULL",
];

/// Edits rows 2 (`MAXIMUM`) and 4 (`TYPICAL`): new extremes, multi-byte text, enum and set labels,
/// BIT, JSON, negative TIME and fractional TIMESTAMP.
pub const UPDATE_ROWS_2_AND_4: &str = "UPDATE matrix SET biu = biu - 1, vc = CONCAT(vc, '✓'), \
     e = 'a', st = 'y', b64 = b'1', j = '{\"a\": 1}', tm6 = '-12:00:00.5', \
     ts6 = '2001-09-09 01:46:40.5' WHERE id IN (2, 4)";

/// The statements that set the session up for the matrix's values (`sql_mode = ''` for zero
/// dates, UTC) and create table `matrix (id INT PRIMARY KEY, <COLUMNS>)`.
pub fn create_table_statements() -> [String; 2] {
    let defs: Vec<String> = COLUMNS
        .iter()
        .map(|c| format!("`{}` {}", c.name, c.mysql_type))
        .collect();
    [
        "SET SESSION sql_mode = '', time_zone = '+00:00'".to_string(),
        format!(
            "CREATE TABLE matrix (id INT PRIMARY KEY, {}) CHARACTER SET utf8mb4",
            defs.join(", ")
        ),
    ]
}

/// Runs [`create_table_statements`] on `conn`, which keeps the session settings.
pub async fn create_table(conn: &mut mysql_async::Conn) {
    super::mysql_pipeline::exec(conn, &create_table_statements()).await;
}

/// `INSERT INTO matrix` of row `id` with `values`, one per non-generated column in COLUMNS order.
pub fn insert(id: i64, values: &[&str]) -> String {
    let names: Vec<&str> = COLUMNS
        .iter()
        .filter(|c| !c.name.starts_with("gen"))
        .map(|c| c.name)
        .collect();
    assert_eq!(names.len(), values.len(), "row {id}: one value per column");
    format!(
        "INSERT INTO matrix (id, {}) VALUES ({id}, {})",
        names.join(", "),
        values.join(", ")
    )
}

/// Reads until `count` changes of tables in database `db` have been committed, and returns
/// them in commit order (changes of rolled-back transactions are dropped).
pub async fn collect_changes(
    reader: &mut tidemark::source::mysql::reader::BinlogReader,
    db: &str,
    count: usize,
) -> Vec<tidemark::event::ChangeEvent> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut pending = Vec::new();
    let mut done = Vec::new();
    let mut batch = Vec::new();
    while done.len() < count {
        assert!(
            std::time::Instant::now() < deadline,
            "only {} of {count} changes arrived",
            done.len()
        );
        batch.clear();
        reader.next_batch(&mut batch).await.unwrap();
        for message in batch.drain(..) {
            match message {
                tidemark::event::SourceMessage::Change(c) if *c.table.id.namespace == *db => {
                    pending.push(c)
                }
                tidemark::event::SourceMessage::Commit(_) => done.append(&mut pending),
                tidemark::event::SourceMessage::Rollback => pending.clear(),
                _ => {}
            }
        }
    }
    assert_eq!(done.len(), count);
    done
}

/// Inserts the matrix's five rows in one transaction: 1 MINIMUM, 2 MAXIMUM, 3 all NULL,
/// 4 TYPICAL, 5 ZEROS.
pub async fn insert_matrix_rows(conn: &mut mysql_async::Conn) {
    use mysql_async::prelude::Queryable;
    let all_null: Vec<&str> = std::iter::repeat_n("NULL", MAXIMUM.len()).collect();
    let rows: [(i64, &[&str]); 5] = [
        (1, MINIMUM),
        (2, MAXIMUM),
        (3, &all_null),
        (4, TYPICAL),
        (5, ZEROS),
    ];
    conn.query_drop("BEGIN").await.unwrap();
    for (id, values) in rows {
        conn.query_drop(insert(id, values)).await.unwrap();
    }
    conn.query_drop("COMMIT").await.unwrap();
}
