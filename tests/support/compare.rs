//! The source-vs-target table comparison every pipeline test ends with.
//!
//! The comparison canonicalises each column by its MySQL type, in SQL on both sides (plus a
//! little Rust for floats, zero dates and JSON), following the mapping in
//! `docs/warehouse-postgres.md`: rows are matched by primary key, and a readable diff (the first
//! differing rows, column by column) is returned when they differ. A key present twice in the
//! target is always a difference.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;
use tokio_postgres::Client;

use super::poll::poll;
use super::tidemark::Tidemark;
use super::warehouse::{Warehouse, pg_rows, sql_literal};

/// How a column is canonicalised on both sides.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Kind {
    /// Integers and YEAR: decimal digits.
    Int,
    /// DECIMAL(p,s): digits with s decimals.
    Decimal,
    /// FLOAT: the single value widened to double, compared as f64.
    Float,
    /// DOUBLE: compared as f64.
    Double,
    /// DATE: `YYYY-MM-DD`; zero dates are NULL.
    Date,
    /// DATETIME: `YYYY-MM-DD HH:MM:SS.ffffff`; zero dates are NULL.
    DateTime,
    /// TIMESTAMP: as DATETIME, in UTC.
    Timestamp,
    /// TIME: signed microseconds.
    Time,
    /// Character types (MariaDB JSON included): the UTF-8 text.
    Text,
    /// Binary types and geometry: upper-case hex of the bytes.
    Bytes,
    /// ENUM / SET: the labels.
    Label,
    /// BIT(n): n binary digits.
    Bit(u32),
    /// MySQL JSON: the parsed document.
    Json,
}

impl Kind {
    /// The kind of a MySQL column from information_schema `DATA_TYPE` and `COLUMN_TYPE`.
    pub fn of(data_type: &str, column_type: &str) -> Kind {
        match data_type.to_ascii_lowercase().as_str() {
            "tinyint" | "smallint" | "mediumint" | "int" | "integer" | "bigint" | "year" => {
                Kind::Int
            }
            "decimal" | "numeric" => Kind::Decimal,
            "float" => Kind::Float,
            "double" | "real" => Kind::Double,
            "date" => Kind::Date,
            "datetime" => Kind::DateTime,
            "timestamp" => Kind::Timestamp,
            "time" => Kind::Time,
            "char" | "varchar" | "tinytext" | "text" | "mediumtext" | "longtext" => Kind::Text,
            "binary" | "varbinary" | "tinyblob" | "blob" | "mediumblob" | "longblob"
            | "geometry" | "point" | "linestring" | "polygon" | "multipoint"
            | "multilinestring" | "multipolygon" | "geometrycollection" => Kind::Bytes,
            "enum" | "set" => Kind::Label,
            "bit" => Kind::Bit(
                column_type
                    .trim_start_matches("bit(")
                    .trim_end_matches(')')
                    .parse()
                    .unwrap_or(1),
            ),
            "json" => Kind::Json,
            other => panic!("no comparison form for MySQL type {other} ({column_type})"),
        }
    }

    /// The MySQL expression printing column `name` canonically.
    pub fn mysql_expr(self, name: &str) -> String {
        let c = format!("`{}`", name.replace('`', "``"));
        match self {
            Kind::Int => format!("CAST({c} + 0 AS CHAR)"),
            Kind::Decimal | Kind::Label | Kind::Json => format!("CAST({c} AS CHAR)"),
            Kind::Float => format!("CAST({c} AS DOUBLE)"),
            Kind::Double => c,
            Kind::Date => format!("DATE_FORMAT({c}, '%Y-%m-%d')"),
            Kind::DateTime | Kind::Timestamp => {
                format!("DATE_FORMAT({c}, '%Y-%m-%d %H:%i:%s.%f')")
            }
            Kind::Time => format!("CAST(TIME_TO_SEC({c}) * 1000000 AS SIGNED)"),
            Kind::Text => format!("CONVERT({c} USING utf8mb4)"),
            Kind::Bytes => format!("HEX({c})"),
            Kind::Bit(n) => format!("LPAD(BIN({c} + 0), {n}, '0')"),
        }
    }

    /// The Postgres expression printing target column `name` in the same form.
    pub fn pg_expr(self, name: &str) -> String {
        let p = pg_ident(name);
        match self {
            Kind::Int | Kind::Decimal | Kind::Label | Kind::Text | Kind::Bit(_) | Kind::Json => {
                format!("{p}::text")
            }
            Kind::Float | Kind::Double => format!("{p}::float8::text"),
            Kind::Date => format!("to_char({p}, 'YYYY-MM-DD')"),
            Kind::DateTime => format!("to_char({p}, 'YYYY-MM-DD HH24:MI:SS.US')"),
            Kind::Timestamp => {
                format!("to_char({p} AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US')")
            }
            Kind::Time => format!("round(extract(epoch from {p}) * 1000000)::bigint::text"),
            Kind::Bytes => format!("upper(encode({p}, 'hex'))"),
        }
    }

    /// Final canonical form of a printed value.
    pub fn normalize(self, value: Option<String>) -> Option<String> {
        let v = value?;
        match self {
            Kind::Float | Kind::Double => Some(match v.parse::<f64>() {
                Ok(f) => format!("{f:?}"),
                Err(_) => format!("unparsable float {v:?}"),
            }),
            // Zero dates and dates with zero parts (`2024-00-10`) cannot be stored: NULL.
            Kind::Date | Kind::DateTime | Kind::Timestamp
                if v.get(5..7) == Some("00") || v.get(8..10) == Some("00") =>
            {
                None
            }
            Kind::Json => Some(match serde_json::from_str::<serde_json::Value>(&v) {
                Ok(j) => j.to_string(),
                Err(_) => format!("invalid JSON {v:?}"),
            }),
            _ => Some(v),
        }
    }
}

/// `name` as a quoted Postgres identifier.
pub fn pg_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A source column as the comparison sees it.
#[derive(Clone, Debug)]
pub struct SourceColumn {
    /// Name (as in the source).
    pub name: String,
    /// Comparison kind.
    pub kind: Kind,
    /// information_schema COLUMN_TYPE.
    pub column_type: String,
}

/// The columns (in order) and primary key columns of `db.table` at the source.
pub async fn source_columns(
    my: &mut mysql_async::Conn,
    db: &str,
    table: &str,
) -> (Vec<SourceColumn>, Vec<String>) {
    let cols: Vec<(String, String, String)> = my
        .exec(
            "SELECT COLUMN_NAME, DATA_TYPE, COLUMN_TYPE FROM information_schema.COLUMNS \
             WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION",
            (db, table),
        )
        .await
        .unwrap_or_else(|e| panic!("columns of {db}.{table}: {e}"));
    assert!(!cols.is_empty(), "source table {db}.{table} not found");
    let key: Vec<String> = my
        .exec(
            "SELECT COLUMN_NAME FROM information_schema.KEY_COLUMN_USAGE \
             WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? AND CONSTRAINT_NAME = 'PRIMARY' \
             ORDER BY ORDINAL_POSITION",
            (db, table),
        )
        .await
        .unwrap();
    let cols = cols
        .into_iter()
        .map(|(name, data_type, column_type)| SourceColumn {
            kind: Kind::of(&data_type, &column_type),
            name,
            column_type,
        })
        .collect();
    (cols, key)
}

type Row = Vec<Option<String>>;

/// Every row of the source table, canonical, in `columns` order.
pub async fn source_rows(
    my: &mut mysql_async::Conn,
    db: &str,
    table: &str,
    columns: &[SourceColumn],
) -> Vec<Row> {
    my.query_drop("SET SESSION time_zone = '+00:00'")
        .await
        .unwrap();
    let exprs: Vec<String> = columns.iter().map(|c| c.kind.mysql_expr(&c.name)).collect();
    let sql = format!(
        "SELECT {} FROM `{db}`.`{}`",
        exprs.join(", "),
        table.replace('`', "``")
    );
    let rows: Vec<mysql_async::Row> = my
        .query(&sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    rows.into_iter()
        .map(|row| {
            columns
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    let v: Option<String> = row
                        .get_opt(i)
                        .expect("column")
                        .unwrap_or_else(|e| panic!("{db}.{table}.{}: {e}", c.name));
                    c.kind.normalize(v)
                })
                .collect()
        })
        .collect()
}

/// Every row of the target table, canonical, in `columns` order (names lowercased).
pub async fn target_rows(
    pg: &Client,
    schema: &str,
    target: &str,
    columns: &[SourceColumn],
) -> Result<Vec<Row>, String> {
    let present: HashSet<String> = pg_rows(
        pg,
        &format!(
            "SELECT column_name FROM information_schema.columns \
             WHERE table_schema = {} AND table_name = {}",
            sql_literal(schema),
            sql_literal(target)
        ),
    )
    .await?
    .into_iter()
    .filter_map(|r| r.into_iter().next().flatten())
    .collect();
    if present.is_empty() {
        return Err(format!("target table {schema}.{target} does not exist"));
    }
    let missing: Vec<&str> = columns
        .iter()
        .map(|c| c.name.as_str())
        .filter(|n| !present.contains(&n.to_lowercase()))
        .collect();
    if !missing.is_empty() {
        return Err(format!(
            "target table {schema}.{target} lacks source columns {missing:?} (has {present:?})"
        ));
    }
    let exprs: Vec<String> = columns
        .iter()
        .map(|c| c.kind.pg_expr(&c.name.to_lowercase()))
        .collect();
    let sql = format!(
        "SELECT {} FROM {}.{}",
        exprs.join(", "),
        pg_ident(schema),
        pg_ident(target)
    );
    let rows = pg_rows(pg, &sql).await?;
    Ok(rows
        .into_iter()
        .map(|row| {
            row.into_iter()
                .zip(columns)
                .map(|(v, c)| c.kind.normalize(v))
                .collect()
        })
        .collect())
}

/// A value for a diff line: NULL, or the quoted text (long values shortened).
pub fn show(v: &Option<String>) -> String {
    match v {
        None => "NULL".into(),
        Some(s) if s.chars().count() > 60 => {
            let head: String = s.chars().take(40).collect();
            format!("{head:?}…({} chars)", s.chars().count())
        }
        Some(s) => format!("{s:?}"),
    }
}

/// Compares source table `db.table` with target `schema.target` by primary key. Ok(row count)
/// when equal and no key is doubled; else a diff naming the first differing rows.
pub async fn table_diff(
    my: &mut mysql_async::Conn,
    pg: &Client,
    db: &str,
    table: &str,
    schema: &str,
    target: &str,
) -> Result<usize, String> {
    table_diff_except(my, pg, db, table, schema, target, &[]).await
}

/// As `table_diff`, leaving the source columns `skip` out of the comparison.
pub async fn table_diff_except(
    my: &mut mysql_async::Conn,
    pg: &Client,
    db: &str,
    table: &str,
    schema: &str,
    target: &str,
    skip: &[&str],
) -> Result<usize, String> {
    let (mut columns, key) = source_columns(my, db, table).await;
    columns.retain(|c| !skip.contains(&c.name.as_str()));
    assert!(
        !key.is_empty(),
        "{db}.{table} has no primary key: compare append-mode tables explicitly"
    );
    let key_idx: Vec<usize> = key
        .iter()
        .map(|k| columns.iter().position(|c| &c.name == k).unwrap())
        .collect();
    let source_data = source_rows(my, db, table, &columns).await;
    let target_data = target_rows(pg, schema, target, &columns).await?;
    diff_rows(&columns, &key_idx, source_data, target_data)
        .map_err(|d| format!("{db}.{table} -> {schema}.{target}:\n{d}"))
}

/// The diff of two row sets keyed by the columns `key_idx`.
pub fn diff_rows(
    columns: &[SourceColumn],
    key_idx: &[usize],
    source: Vec<Row>,
    target: Vec<Row>,
) -> Result<usize, String> {
    let key_of =
        |r: &Row| -> Vec<Option<String>> { key_idx.iter().map(|&i| r[i].clone()).collect() };
    let show_key = |k: &Vec<Option<String>>| -> String {
        key_idx
            .iter()
            .zip(k)
            .map(|(&i, v)| format!("{}={}", columns[i].name, show(v)))
            .collect::<Vec<_>>()
            .join(",")
    };
    let (source_len, target_len) = (source.len(), target.len());
    let src: BTreeMap<_, _> = source.into_iter().map(|r| (key_of(&r), r)).collect();
    let mut tgt: BTreeMap<Vec<Option<String>>, Row> = BTreeMap::new();
    let mut problems: Vec<String> = Vec::new();
    for r in target {
        let k = key_of(&r);
        if tgt.contains_key(&k) {
            problems.push(format!(
                "key {} appears more than once in the target",
                show_key(&k)
            ));
        }
        tgt.insert(k, r);
    }
    for (k, s) in &src {
        match tgt.get(k) {
            None => problems.push(format!(
                "missing in target: {} {{{}}}",
                show_key(k),
                columns
                    .iter()
                    .zip(s)
                    .map(|(c, v)| format!("{}={}", c.name, show(v)))
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
            Some(t) if t != s => {
                let cols: Vec<String> = columns
                    .iter()
                    .zip(s.iter().zip(t))
                    .filter(|(_, (a, b))| a != b)
                    .map(|(c, (a, b))| {
                        format!(
                            "{} ({}): source {} target {}",
                            c.name,
                            c.column_type,
                            show(a),
                            show(b)
                        )
                    })
                    .collect();
                problems.push(format!("differs at {}: {}", show_key(k), cols.join("; ")));
            }
            Some(_) => {}
        }
    }
    for k in tgt.keys().filter(|k| !src.contains_key(*k)) {
        problems.push(format!(
            "extra in target (deleted at source?): {}",
            show_key(k)
        ));
    }
    if problems.is_empty() {
        return Ok(source_len);
    }
    let mut text = format!(
        "{} problems (source {source_len} rows, target {target_len} rows); first ones:\n",
        problems.len()
    );
    for p in problems.iter().take(12) {
        writeln!(text, "  {p}").unwrap();
    }
    Err(text)
}

/// Waits until every source table in `tables` (of `db`) equals its target (same name,
/// lowercased, in `schema`). Panics with the diff if `timeout` passes or tidemark exits.
pub async fn wait_tables_equal(
    tm: &mut Tidemark,
    my: &mut mysql_async::Conn,
    wh: &Warehouse,
    db: &str,
    tables: &[&str],
    schema: &str,
    timeout: Duration,
) {
    let pairs: Vec<(&str, String)> = tables.iter().map(|t| (*t, t.to_lowercase())).collect();
    wait_equal(tm, my, wh, db, &pairs, schema, &[], timeout).await;
}

/// Waits until each source table `db.source` of `pairs` equals target `schema.target`, the
/// source columns `skip` left out. Panics with the diff if `timeout` passes or tidemark exits.
#[allow(clippy::too_many_arguments)]
pub async fn wait_equal(
    tm: &mut Tidemark,
    my: &mut mysql_async::Conn,
    wh: &Warehouse,
    db: &str,
    pairs: &[(&str, String)],
    schema: &str,
    skip: &[&str],
    timeout: Duration,
) {
    let started = Instant::now();
    let result = poll(timeout, async || {
        let mut failures = String::new();
        for (table, target) in pairs {
            if let Err(d) = table_diff_except(my, &wh.client, db, table, schema, target, skip).await
            {
                failures.push_str(&d);
            }
        }
        if failures.is_empty() {
            return Ok(());
        }
        if let Some(status) = tm.try_exit() {
            return Err(format!("tidemark exited ({status}); {failures}"));
        }
        Err(failures)
    })
    .await;
    let names: Vec<&str> = pairs.iter().map(|p| p.0).collect();
    match result {
        Ok(()) => eprintln!(
            "{names:?} equal after {:.1}s",
            started.elapsed().as_secs_f64()
        ),
        Err(diff) => panic!("target did not converge within {timeout:?}:\n{diff}"),
    }
}
