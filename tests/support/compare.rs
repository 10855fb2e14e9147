//! The source-vs-target table comparison every pipeline test ends with, for both source kinds:
//! [`assert_tables_equal`], and [`wait_tables_equal`] while tidemark catches up.
//!
//! Each column is printed canonically on both sides. A MySQL column is canonicalised by its type,
//! in SQL on both sides (plus a little Rust for floats, zero dates and JSON), following the
//! mapping in `docs/warehouse-postgres.md`; a Postgres column is compared as both servers print
//! it. Rows are matched by primary key, and a readable diff (the first differing rows, column by
//! column) is returned when they differ. A key present twice in the target is always a
//! difference. Postgres tables without a key are compared as multisets of rows.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;
use tokio_postgres::Client;

use super::poll::poll;
use super::process::Tidemark;
use super::warehouse::{pg_column_types, pg_primary_key, pg_rows, sql_literal};

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
    /// A Postgres source column: the text its type's output function prints, on both sides.
    Printed,
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
            Kind::Printed => unreachable!("a Postgres column is never read from MySQL"),
        }
    }

    /// The Postgres expression printing target column `name` in the same form.
    pub fn pg_expr(self, name: &str) -> String {
        let p = pg_ident(name);
        match self {
            Kind::Int | Kind::Decimal | Kind::Label | Kind::Text | Kind::Bit(_) | Kind::Json => {
                format!("{p}::text")
            }
            // The type's output function (`format` calls it), not a cast to text: some casts
            // print otherwise (xml keeps its declaration, inet its netmask).
            Kind::Printed => format!("CASE WHEN {p} IS NULL THEN NULL ELSE format('%s', {p}) END"),
            Kind::Float | Kind::Double => format!("{p}::float8::text"),
            Kind::Date => format!("to_char({p}, 'YYYY-MM-DD')"),
            Kind::DateTime => format!("to_char({p}, 'YYYY-MM-DD HH24:MI:SS.US')"),
            Kind::Timestamp => {
                format!("to_char({p} AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US')")
            }
            // Through text, so an interval (Postgres warehouse) and the TIME text a Redshift
            // target keeps read alike.
            Kind::Time => {
                format!("round(extract(epoch from {p}::text::interval) * 1000000)::bigint::text")
            }
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

/// Where the source tables of a comparison are read.
pub enum Source<'a> {
    /// A MySQL/MariaDB server; a pair's source schema is the database.
    Mysql(&'a mut mysql_async::Conn),
    /// A Postgres source database.
    Postgres(&'a Client),
}

/// A source table, the warehouse table it must equal, and the source columns left out.
#[derive(Clone, Debug)]
pub struct TablePair {
    /// `(schema, table)` at the source (for MySQL the schema is the database).
    pub source: (String, String),
    /// `(schema, table)` in the warehouse.
    pub target: (String, String),
    /// Source columns not compared (e.g. added with a default the binlog does not backfill).
    pub skip: Vec<String>,
}

impl TablePair {
    /// Source `schema.table` against warehouse `target_schema.target`.
    pub fn new((schema, table): (&str, &str), (target_schema, target): (&str, &str)) -> Self {
        TablePair {
            source: (schema.to_string(), table.to_string()),
            target: (target_schema.to_string(), target.to_string()),
            skip: Vec::new(),
        }
    }

    /// Each of `tables` of MySQL database `db` against its target: the same name lowercased,
    /// in warehouse schema `schema`.
    pub fn mysql(db: &str, tables: &[&str], schema: &str) -> Vec<Self> {
        tables
            .iter()
            .map(|t| TablePair::new((db, t), (schema, &t.to_lowercase())))
            .collect()
    }

    /// This pair with the source columns `columns` left out of the comparison.
    pub fn skipping(mut self, columns: &[&str]) -> Self {
        self.skip.extend(columns.iter().map(|c| c.to_string()));
        self
    }
}

impl From<((&str, &str), (&str, &str))> for TablePair {
    fn from((source, target): ((&str, &str), (&str, &str))) -> Self {
        TablePair::new(source, target)
    }
}

/// A source column as the comparison sees it.
#[derive(Clone, Debug)]
pub struct SourceColumn {
    /// Name (as in the source).
    pub name: String,
    /// Its name in the target (MySQL names land lowercased).
    pub target_name: String,
    /// Comparison kind.
    pub kind: Kind,
    /// The source's type, for diff lines (MySQL COLUMN_TYPE, Postgres format_type).
    pub column_type: String,
}

type Row = Vec<Option<String>>;

/// A source table read for a comparison: its columns, its key (positions in `columns`; empty for
/// a Postgres table without one) and its rows, canonical.
struct SourceTable {
    columns: Vec<SourceColumn>,
    key: Vec<usize>,
    rows: Vec<Row>,
}

impl Source<'_> {
    /// The columns (but `skip`), key and rows of source table `schema.table`.
    async fn read(
        &mut self,
        (schema, table): &(String, String),
        skip: &[String],
    ) -> Result<SourceTable, String> {
        let (mut columns, key) = match self {
            Source::Mysql(my) => mysql_columns(my, schema, table).await,
            Source::Postgres(pg) => postgres_columns(pg, schema, table).await?,
        };
        columns.retain(|c| !skip.contains(&c.name));
        let key: Vec<usize> = key
            .iter()
            .map(|k| columns.iter().position(|c| &c.name == k).unwrap())
            .collect();
        let rows = match self {
            Source::Mysql(my) => mysql_rows(my, schema, table, &columns).await,
            // The source's own names: `target_name` is `name` for a Postgres column.
            Source::Postgres(pg) => postgres_rows(pg, schema, table, &columns).await?,
        };
        Ok(SourceTable { columns, key, rows })
    }
}

/// The columns (in order) and primary key columns of MySQL table `db.table`.
async fn mysql_columns(
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
    assert!(
        !key.is_empty(),
        "{db}.{table} has no primary key: compare append-mode tables explicitly"
    );
    let cols = cols
        .into_iter()
        .map(|(name, data_type, column_type)| SourceColumn {
            kind: Kind::of(&data_type, &column_type),
            target_name: name.to_lowercase(),
            name,
            column_type,
        })
        .collect();
    (cols, key)
}

/// Every row of MySQL table `db.table`, canonical, in `columns` order.
async fn mysql_rows(
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

/// The columns (in order) and primary key columns of Postgres table `schema.table`.
async fn postgres_columns(
    pg: &Client,
    schema: &str,
    table: &str,
) -> Result<(Vec<SourceColumn>, Vec<String>), String> {
    let columns = pg_column_types(pg, schema, table)
        .await?
        .into_iter()
        .map(|(name, column_type)| SourceColumn {
            target_name: name.clone(),
            name,
            kind: Kind::Printed,
            column_type,
        })
        .collect();
    Ok((columns, pg_primary_key(pg, schema, table).await?))
}

/// Every row of Postgres table `schema.table` (source or warehouse), canonical, in `columns`
/// order, each column read by its `target_name`.
async fn postgres_rows(
    pg: &Client,
    schema: &str,
    table: &str,
    columns: &[SourceColumn],
) -> Result<Vec<Row>, String> {
    let present: HashSet<String> = pg_rows(
        pg,
        &format!(
            "SELECT column_name FROM information_schema.columns \
             WHERE table_schema = {} AND table_name = {}",
            sql_literal(schema),
            sql_literal(table)
        ),
    )
    .await?
    .into_iter()
    .filter_map(|r| r.into_iter().next().flatten())
    .collect();
    if present.is_empty() {
        return Err(format!("table {schema}.{table} does not exist"));
    }
    let missing: Vec<&str> = columns
        .iter()
        .map(|c| c.target_name.as_str())
        .filter(|n| !present.contains(*n))
        .collect();
    if !missing.is_empty() {
        return Err(format!(
            "table {schema}.{table} lacks source columns {missing:?} (has {present:?})"
        ));
    }
    let exprs: Vec<String> = columns
        .iter()
        .map(|c| c.kind.pg_expr(&c.target_name))
        .collect();
    let sql = format!(
        "SELECT {} FROM {}.{}",
        exprs.join(", "),
        pg_ident(schema),
        pg_ident(table)
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

/// `row` as `{name=value, ...}` for a diff line.
fn show_row(columns: &[SourceColumn], row: &Row) -> String {
    let values: Vec<String> = columns
        .iter()
        .zip(row)
        .map(|(c, v)| format!("{}={}", c.name, show(v)))
        .collect();
    format!("{{{}}}", values.join(", "))
}

/// Compares one source table with its target. Ok(row count) when equal and no key is doubled;
/// else a diff naming the first differing rows.
async fn table_diff(
    source: &mut Source<'_>,
    warehouse: &Client,
    pair: &TablePair,
) -> Result<usize, String> {
    let table = source.read(&pair.source, &pair.skip).await?;
    let (target_schema, target) = &pair.target;
    let target_rows = postgres_rows(warehouse, target_schema, target, &table.columns).await?;
    let name = format!(
        "{}.{} -> {target_schema}.{target}",
        pair.source.0, pair.source.1
    );
    let diff = if table.key.is_empty() {
        diff_multisets(&table.columns, table.rows, target_rows)
    } else {
        diff_rows(&table.columns, &table.key, table.rows, target_rows)
    };
    diff.map_err(|d| format!("{name}:\n{d}"))
}

/// Compares every pair now: Ok(rows per pair) when all are equal, else the diffs of those that
/// are not.
pub async fn tables_diff(
    source: &mut Source<'_>,
    warehouse: &Client,
    pairs: &[TablePair],
) -> Result<Vec<usize>, String> {
    let mut counts = Vec::new();
    let mut failures = String::new();
    for pair in pairs {
        match table_diff(source, warehouse, pair).await {
            Ok(rows) => counts.push(rows),
            Err(d) => failures.push_str(&d),
        }
    }
    if failures.is_empty() {
        Ok(counts)
    } else {
        Err(failures)
    }
}

/// Panics with the diff unless every source table of `pairs` equals its warehouse table now.
pub async fn assert_tables_equal(source: &mut Source<'_>, warehouse: &Client, pairs: &[TablePair]) {
    if let Err(diff) = tables_diff(source, warehouse, pairs).await {
        panic!("target differs from the source:\n{diff}");
    }
}

/// Waits until every source table of `pairs` equals its warehouse table. Panics with the diff
/// if `timeout` passes or tidemark exits first.
pub async fn wait_tables_equal(
    tm: &mut Tidemark,
    source: &mut Source<'_>,
    warehouse: &Client,
    pairs: &[TablePair],
    timeout: Duration,
) {
    let started = Instant::now();
    let result = poll(timeout, async || {
        let failures = match tables_diff(source, warehouse, pairs).await {
            Ok(counts) => return Ok(counts),
            Err(failures) => failures,
        };
        if let Some(status) = tm.try_exit() {
            return Err(format!("tidemark exited ({status}); {failures}"));
        }
        Err(failures)
    })
    .await;
    let names: Vec<&str> = pairs.iter().map(|p| p.source.1.as_str()).collect();
    match result {
        Ok(rows) => eprintln!(
            "{names:?} equal after {:.1}s ({rows:?} rows)",
            started.elapsed().as_secs_f64()
        ),
        Err(diff) => panic!("target did not converge within {timeout:?}:\n{diff}"),
    }
}

/// The diff of two row sets keyed by the columns `key_idx`.
fn diff_rows(
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
                "missing in target: {} {}",
                show_key(k),
                show_row(columns, s)
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
    report(problems, source_len, target_len)
}

/// The diff of two row sets without a key: each distinct row must appear as often in both.
fn diff_multisets(
    columns: &[SourceColumn],
    source: Vec<Row>,
    target: Vec<Row>,
) -> Result<usize, String> {
    let (source_len, target_len) = (source.len(), target.len());
    let mut counts: BTreeMap<Row, (usize, usize)> = BTreeMap::new();
    for r in source {
        counts.entry(r).or_default().0 += 1;
    }
    for r in target {
        counts.entry(r).or_default().1 += 1;
    }
    let problems = counts
        .iter()
        .filter(|(_, (s, t))| s != t)
        .map(|(row, (s, t))| {
            let side = if s > t { "missing in" } else { "extra in" };
            format!(
                "{side} target (source {s}x, target {t}x): {}",
                show_row(columns, row)
            )
        })
        .collect();
    report(problems, source_len, target_len)
}

/// Ok(source row count) when there are no `problems`, else the first of them.
fn report(problems: Vec<String>, source_len: usize, target_len: usize) -> Result<usize, String> {
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

/// Waits up to a minute until each pair of `pairs` is equal (see [`wait_tables_equal`]).
pub async fn converge_pairs(
    tm: &mut Tidemark,
    source: &mut Source<'_>,
    warehouse: &Client,
    pairs: &[TablePair],
) {
    wait_tables_equal(tm, source, warehouse, pairs, Duration::from_secs(60)).await;
}
