//! Workload W1 and the helpers the benchmarks share (`binlog_decode`, `pgoutput_decode`,
//! `pipeline_e2e`, `snapshot_read`, `snapshot_load`), among them the snapshot benchmarks' MariaDB
//! table `bench.snap` ([`ensure_snap`]).
//!
//! W1 is one table, `bench.orders`, with the column types a CDC source meets most (BIGINT key,
//! INT, VARCHAR, SMALLINT, DECIMAL, ENUM, TEXT, DATETIME(6), TIMESTAMP(3), BIT, JSON), loaded
//! as 1,000,000 inserts, then 500,000 updates (several columns each), then 100,000 deletes,
//! all in 1000-row transactions: 1.6M row events, 900,000 rows left. It lives on a dedicated
//! private MariaDB (`scripts/mariadb-instance.sh bench`), so nothing else writes to that part
//! of the binlog. The binlog range W1 occupies is recorded in `bench.w1_loaded`; a rerun that
//! finds it (and the binlog files still present) reuses it instead of loading again.
//!
//! `TIDEMARK_BENCH_SCALE` (default 1) scales the three counts, for short runs while iterating
//! (0.1: 100k inserts, 50k updates, 10k deletes). A scaled W1 is recorded under its own version
//! key, so switching scale reloads.
//!
//! W2 (`workload_pg.rs`) loads the Postgres form of W1's statements ([`W1::load_statements`]),
//! so its rows are W1's.
//!
//! Included with `mod workload;` by each benchmark, which uses part of it.

use std::fmt::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts};

/// Bump when the workload changes, so a loaded instance of the old workload is reloaded.
const W1_VERSION: &str = "w1-v2";
/// Rows per transaction in every phase of W1.
pub const TXN_ROWS: u64 = 1000;

/// The columns of W1's table (`bench.orders`), as MariaDB DDL: also the shape of the snapshot
/// benchmark's table.
pub const W1_COLUMNS: &str = "id BIGINT PRIMARY KEY, qty INT, sku VARCHAR(32), \
    status_code SMALLINT, amount DECIMAL(12,2), state ENUM('new','paid','shipped','cancelled'), \
    note TEXT, created_at DATETIME(6), updated_at TIMESTAMP(3) NULL, flags BIT(8), attrs JSON";

/// The sizes of W1's three phases.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct W1 {
    /// Inserted rows, ids `1..=rows`.
    pub rows: u64,
    /// Updated rows: every even id.
    pub updates: u64,
    /// Deleted rows: the last `deletes` ids.
    pub deletes: u64,
}

impl W1 {
    /// The full workload scaled by `TIDEMARK_BENCH_SCALE` (default 1), in steps of 10,000 rows.
    pub fn from_env() -> W1 {
        let scale: f64 = std::env::var("TIDEMARK_BENCH_SCALE")
            .ok()
            .map(|v| {
                v.parse()
                    .ok()
                    .filter(|s: &f64| *s > 0.0 && *s <= 10.0)
                    .expect("TIDEMARK_BENCH_SCALE must be a number in (0, 10]")
            })
            .unwrap_or(1.0);
        let rows = (((1_000_000.0 * scale) / 10_000.0).round() as u64).max(1) * 10_000;
        W1 {
            rows,
            updates: rows / 2,
            deletes: rows / 10,
        }
    }

    /// Row events in the binlog: inserts + updates + deletes.
    pub fn changes(&self) -> u64 {
        self.rows + self.updates + self.deletes
    }

    /// Rows left in `bench.orders` at the end.
    pub fn final_rows(&self) -> u64 {
        self.rows - self.deletes
    }

    /// W1's load as SQL statements, one per transaction and in load order, each with what it
    /// does (`inserting`, `updating`, `deleting`), written in `dialect`'s literals. W2 loads the
    /// Postgres form of the same statements, so its rows equal W1's.
    pub fn load_statements(
        &self,
        dialect: Dialect,
    ) -> impl Iterator<Item = (&'static str, String)> {
        let w1 = *self;
        let mut rows = Gen::new(W1_SEED);
        let (inserts, updates) = (w1.rows / TXN_ROWS, w1.updates / TXN_ROWS);
        (0..w1.changes() / TXN_ROWS).map(move |txn| {
            if txn < inserts {
                // Inserts: ids 1..=rows, 1000 per statement (each statement is one transaction).
                let first = txn * TXN_ROWS + 1;
                ("inserting", rows.insert(first..first + TXN_ROWS, dialect))
            } else if txn < inserts + updates {
                // Updates: every even id, 1000 per transaction, changing seven columns through an
                // upsert (logged and decoded as updates, with new varied values).
                let txn = txn - inserts;
                let ids = (0..TXN_ROWS).map(|i| 2 * (txn * TXN_ROWS + i + 1));
                let mut sql = rows.insert(ids, dialect);
                sql.push_str(dialect.upsert_tail());
                ("updating", sql)
            } else {
                // Deletes: the last ids, 1000 per statement.
                let first = w1.rows - w1.deletes + 1 + (txn - inserts - updates) * TXN_ROWS;
                let last = first + TXN_ROWS - 1;
                (
                    "deleting",
                    format!("DELETE FROM bench.orders WHERE id BETWEEN {first} AND {last}"),
                )
            }
        })
    }

    /// Key of this workload's row in `bench.w1_loaded`.
    fn version(&self) -> String {
        if self.rows == 1_000_000 {
            W1_VERSION.to_owned()
        } else {
            format!("{W1_VERSION}-{}", self.rows)
        }
    }
}

impl std::fmt::Display for W1 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "W1 ({} inserts, {} updates, {} deletes in {TXN_ROWS}-row transactions)",
            self.rows, self.updates, self.deletes
        )
    }
}

/// A binlog coordinate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BinlogPos {
    pub file: String,
    pub pos: u64,
}

impl BinlogPos {
    /// Parses `file:pos`.
    pub fn parse(text: &str) -> Option<BinlogPos> {
        let (file, pos) = text.rsplit_once(':')?;
        Some(BinlogPos {
            file: file.to_owned(),
            pos: pos.parse().ok()?,
        })
    }

    /// Sort key: the file's numeric suffix, then the offset.
    pub fn key(file: &str, pos: u64) -> (u64, u64) {
        let number = file.rsplit('.').next().and_then(|n| n.parse().ok());
        (number.unwrap_or(0), pos)
    }
}

impl std::fmt::Display for BinlogPos {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.file, self.pos)
    }
}

/// The binlog range W1 occupies on the bench server.
#[derive(Debug, Clone)]
pub struct W1Range {
    pub start: BinlogPos,
    pub end: BinlogPos,
    /// Every binlog file from `start.file` to `end.file`, in order.
    pub files: Vec<String>,
    /// Bytes of binlog in the range.
    pub bytes: u64,
    /// Seconds the load took (when it was loaded, possibly by an earlier run).
    pub load_secs: f64,
    pub reused: bool,
}

impl W1Range {
    /// One line for a benchmark's header.
    pub fn describe(&self) -> String {
        format!(
            "range {} .. {} ({} file(s), {:.0} MB); {} (load {:.1} s)",
            self.start,
            self.end,
            self.files.len(),
            self.bytes as f64 / 1e6,
            if self.reused {
                "reused from an earlier load"
            } else {
                "loaded now"
            },
            self.load_secs,
        )
    }
}

/// The measured source tree: `git describe --always --dirty`, or "unknown revision".
pub fn source_revision() -> String {
    Command::new("git")
        .args(["describe", "--always", "--dirty"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stderr(Stdio::null())
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned())
        .unwrap_or_else(|| "unknown revision".to_owned())
}

/// `TIDEMARK_BENCH_URL`, else the private `bench` MariaDB (started if needed).
pub fn server_url() -> String {
    std::env::var("TIDEMARK_BENCH_URL")
        .unwrap_or_else(|_| instance_url("mariadb-instance.sh", "bench", "mysql://"))
}

/// Starts (or finds) the private dev instance `name` with `scripts/SCRIPT` and returns the URL
/// it prints, checking that it starts with `scheme`.
pub fn instance_url(script: &str, name: &str, scheme: &str) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("scripts")
        .join(script);
    let out = Command::new(&script)
        .arg(name)
        .stderr(Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", script.display()));
    assert!(
        out.status.success(),
        "{} {name} failed ({})",
        script.display(),
        out.status
    );
    let url = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(
        url.starts_with(scheme),
        "unexpected output from {}: {url:?}",
        script.display()
    );
    url
}

/// Host and port of a `mysql://user@host:port` URL, for the command-line client.
pub fn host_port(url: &str) -> (String, u16) {
    let opts = Opts::from_url(url).unwrap_or_else(|e| panic!("bad server URL {url:?}: {e}"));
    (opts.ip_or_hostname().to_string(), opts.tcp_port())
}

pub async fn connect(url: &str) -> Conn {
    let opts = Opts::from_url(url).unwrap_or_else(|e| panic!("bad server URL {url:?}: {e}"));
    Conn::new(opts)
        .await
        .unwrap_or_else(|e| panic!("connecting to {url}: {e}"))
}

/// Peak resident set size (`VmHWM`, kB) of process `pid`, or of this process for `None`.
/// `None` when the process is gone.
pub fn vm_hwm_kb(pid: Option<u32>) -> Option<u64> {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/status"),
        None => "/proc/self/status".to_owned(),
    };
    let status = std::fs::read_to_string(path).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Finds W1 on the server, or loads it, and returns its binlog range.
pub async fn ensure_w1(url: &str, w1: &W1) -> W1Range {
    let mut conn = connect(url).await;
    let reload = std::env::var("TIDEMARK_BENCH_RELOAD").is_ok_and(|v| v == "1");
    if !reload && let Some(range) = loaded_w1(&mut conn, w1).await {
        return range;
    }
    load_w1(&mut conn, w1).await
}

/// The recorded W1 range, if it was loaded by this workload version and its files still exist.
async fn loaded_w1(conn: &mut Conn, w1: &W1) -> Option<W1Range> {
    let marker: Option<(String, u64, String, u64, f64)> = conn
        .exec_first(
            "SELECT start_file, start_pos, end_file, end_pos, load_secs
             FROM bench.w1_loaded WHERE version = ?",
            (w1.version(),),
        )
        .await
        .ok()
        .flatten();
    let (start_file, start_pos, end_file, end_pos, load_secs) = marker?;
    let listed = files_between(conn, &start_file, &end_file).await;
    if listed.first().map(|f| &f.0) != Some(&start_file)
        || listed.last().map(|f| &f.0) != Some(&end_file)
    {
        eprintln!(
            "bench: W1 was loaded at {start_file}:{start_pos}..{end_file}:{end_pos} \
             but those binlog files are gone; reloading"
        );
        return None;
    }
    let start = BinlogPos {
        file: start_file,
        pos: start_pos,
    };
    let end = BinlogPos {
        file: end_file,
        pos: end_pos,
    };
    let (files, bytes) = range_files(listed, &start, &end);
    Some(W1Range {
        start,
        end,
        files,
        bytes,
        load_secs,
        reused: true,
    })
}

/// Every binlog file from `first` to `last` inclusive, in order, with its size in bytes.
async fn files_between(conn: &mut Conn, first: &str, last: &str) -> Vec<(String, u64)> {
    let logs: Vec<(String, u64)> = conn
        .query("SHOW BINARY LOGS")
        .await
        .expect("SHOW BINARY LOGS");
    let (lo, hi) = (BinlogPos::key(first, 0), BinlogPos::key(last, 0));
    logs.into_iter()
        .filter(|(name, _)| (lo..=hi).contains(&BinlogPos::key(name, 0)))
        .collect()
}

/// The range's file names and its size in bytes.
fn range_files(
    files: Vec<(String, u64)>,
    start: &BinlogPos,
    end: &BinlogPos,
) -> (Vec<String>, u64) {
    let last = files.len().saturating_sub(1);
    let bytes = files
        .iter()
        .enumerate()
        .map(|(i, (_, size))| {
            let to = if i == last { end.pos } else { *size };
            let from = if i == 0 { start.pos } else { 4 };
            to.saturating_sub(from)
        })
        .sum();
    (files.into_iter().map(|(name, _)| name).collect(), bytes)
}

/// The server's current binlog position (`SHOW MASTER STATUS`).
pub async fn master_status(conn: &mut Conn) -> BinlogPos {
    let row: Option<mysql_async::Row> = conn
        .query_first("SHOW MASTER STATUS")
        .await
        .expect("SHOW MASTER STATUS");
    let row = row.expect("binary logging is off on the bench server");
    BinlogPos {
        file: row.get(0).expect("SHOW MASTER STATUS: File"),
        pos: row.get(1).expect("SHOW MASTER STATUS: Position"),
    }
}

/// Creates `bench.orders`, loads W1 into a fresh binlog file and records its range.
///
/// The load session turns off ANNOTATE_ROWS events (MariaDB logs each statement's SQL text
/// before its row events by default). tidemark's dump does not ask for them, so the server
/// would skip them for tidemark but send and have `mariadb-binlog` print them (about half of
/// W1's bytes); without them both readers receive the same event stream. (Skipping them on the
/// client instead, `--skip-annotate-row-events`, breaks `mariadb-binlog`'s position accounting
/// and with it `--stop-position`.)
async fn load_w1(conn: &mut Conn, w1: &W1) -> W1Range {
    eprintln!("bench: loading {w1}...");
    let setup = format!(
        "
        DROP DATABASE IF EXISTS bench;
        CREATE DATABASE bench;
        CREATE TABLE bench.orders ({W1_COLUMNS});
        CREATE TABLE bench.w1_loaded (
            version VARCHAR(32) PRIMARY KEY,
            start_file VARCHAR(255), start_pos BIGINT UNSIGNED,
            end_file VARCHAR(255), end_pos BIGINT UNSIGNED,
            load_secs DOUBLE
        );
        FLUSH BINARY LOGS;
        SET SESSION binlog_annotate_row_events = OFF;"
    );
    conn.query_drop(setup).await.expect("creating bench.orders");
    let start = master_status(conn).await;
    let started = Instant::now();

    for (doing, sql) in w1.load_statements(Dialect::MariaDb) {
        conn.query_drop(sql)
            .await
            .unwrap_or_else(|e| panic!("{doing} W1 rows: {e}"));
    }
    let end = master_status(conn).await;
    let load_secs = started.elapsed().as_secs_f64();
    // Close the file so W1 ends where it does, and keep the marker itself out of the binlog.
    conn.query_drop("FLUSH BINARY LOGS; SET SESSION sql_log_bin = 0")
        .await
        .expect("closing the W1 binlog file");
    conn.exec_drop(
        "REPLACE INTO bench.w1_loaded VALUES (?, ?, ?, ?, ?, ?)",
        (
            w1.version(),
            &start.file,
            start.pos,
            &end.file,
            end.pos,
            load_secs,
        ),
    )
    .await
    .expect("recording the W1 range");
    conn.query_drop("SET SESSION sql_log_bin = 1")
        .await
        .expect("turning sql_log_bin back on");
    let listed = files_between(conn, &start.file, &end.file).await;
    let (files, bytes) = range_files(listed, &start, &end);
    W1Range {
        start,
        end,
        files,
        bytes,
        load_secs,
        reused: false,
    }
}

/// Which server a generated statement is for: W1 (MariaDB) and W2 (Postgres) write the same
/// values with different literals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// W1's MariaDB.
    MariaDb,
    /// W2's Postgres.
    Postgres,
}

impl Dialect {
    /// What turns a multi-row INSERT of existing ids into W1's update of seven columns.
    fn upsert_tail(self) -> &'static str {
        match self {
            Dialect::MariaDb => {
                " ON DUPLICATE KEY UPDATE qty = VALUES(qty), status_code = VALUES(status_code), \
                 amount = VALUES(amount), state = VALUES(state), note = VALUES(note), \
                 updated_at = VALUES(updated_at), attrs = VALUES(attrs)"
            }
            Dialect::Postgres => {
                " ON CONFLICT (id) DO UPDATE SET qty = EXCLUDED.qty, \
                 status_code = EXCLUDED.status_code, amount = EXCLUDED.amount, \
                 state = EXCLUDED.state, note = EXCLUDED.note, updated_at = EXCLUDED.updated_at, \
                 attrs = EXCLUDED.attrs"
            }
        }
    }
}

/// Deterministic generator of realistic-looking W1 rows (splitmix64; no dependency needed).
pub struct Gen(u64);

const WORDS: &[&str] = &[
    "alpha", "blue", "crate", "delivery", "express", "fragile", "gift", "handle", "invoice",
    "jacket", "kettle", "leave", "morning", "north", "office", "parcel", "quick", "return",
    "signed", "tracking", "urgent", "van", "window", "yard", "zone", "door", "call", "first",
];
const TAGS: &[&str] = &[
    "red", "green", "vip", "promo", "bulk", "eu", "apac", "retail",
];
/// The values of `state`, in the order of the ENUM (W1) and of the enum type (W2).
pub const STATES: &[&str] = &["new", "paid", "shipped", "cancelled"];
const SKU_CHARS: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZ0123456789";
/// The `src` values of the JSON document.
const SOURCES: &[&str] = &["web", "app", "pos"];
/// The seed of W1's (and so W2's) rows.
const W1_SEED: u64 = 0x7469_6465_6d61_726b;
/// The columns every generated row fills, in order.
const INSERT: &str = "INSERT INTO bench.orders \
    (id, qty, sku, status_code, amount, state, note, created_at, updated_at, flags, attrs) VALUES ";

impl Gen {
    pub fn new(seed: u64) -> Self {
        Gen(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }

    pub fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.next() as usize % items.len()]
    }

    /// Words joined by spaces, between `min` and `max` characters long.
    pub fn text(&mut self, out: &mut String, min: u64, max: u64) {
        let target = self.range(min, max) as usize;
        let start = out.len();
        while out.len() - start < target {
            if out.len() > start {
                out.push(' ');
            }
            out.push_str(self.pick(WORDS));
        }
        out.truncate(start + target);
    }

    /// One multi-row INSERT into `bench.orders` of a generated row for each of `ids`.
    fn insert(&mut self, ids: impl Iterator<Item = u64>, dialect: Dialect) -> String {
        let mut sql = String::with_capacity(400 * TXN_ROWS as usize);
        sql.push_str(INSERT);
        for (i, id) in ids.enumerate() {
            if i != 0 {
                sql.push(',');
            }
            self.row(&mut sql, id, dialect);
        }
        sql
    }

    /// Appends one `(...)` VALUES tuple for row `id` of `bench.orders`. Both dialects make the
    /// same draws in the same order, so W2's rows equal W1's.
    fn row(&mut self, sql: &mut String, id: u64, dialect: Dialect) {
        let qty = self.range(1, 500);
        let sku_len = self.range(10, 32) as usize;
        let sku: String = (0..sku_len)
            .map(|_| SKU_CHARS[self.next() as usize % SKU_CHARS.len()] as char)
            .collect();
        let status = self.range(1, 9) * 100;
        let cents = self.range(100, 9_999_999);
        let state = self.pick(STATES);
        let flags = self.range(0, 255);
        let (month, day) = (self.range(1, 12), self.range(1, 28));
        let (h, m, s) = (self.range(0, 23), self.range(0, 59), self.range(0, 59));
        let micros = self.range(0, 999_999);
        let millis = self.range(0, 999);
        let _ = write!(
            sql,
            "({id},{qty},'{sku}',{status},{}.{:02},'{state}','",
            cents / 100,
            cents % 100
        );
        self.text(sql, 10, 60);
        // MariaDB's TIMESTAMP(3) literal carries no zone and its BIT(8) takes a number;
        // Postgres's timestamptz(3) is given UTC and its bit(8) a bit string.
        let (zone, flags) = match dialect {
            Dialect::MariaDb => ("", flags.to_string()),
            Dialect::Postgres => ("+00", format!("B'{flags:08b}'")),
        };
        let _ = write!(
            sql,
            "','2024-{month:02}-{day:02} {h:02}:{m:02}:{s:02}.{micros:06}',\
             '2025-{month:02}-{day:02} {h:02}:{m:02}:{s:02}.{millis:03}{zone}',{flags},\
             '{{\"k\":{},\"tags\":[",
            self.range(1, 100_000)
        );
        for t in 0..self.range(0, 4) {
            if t > 0 {
                sql.push(',');
            }
            let _ = write!(sql, "\"{}\"", self.pick(TAGS));
        }
        let _ = write!(sql, "],\"src\":\"{}\"}}')", self.pick(SOURCES));
    }
}

/// `name` from the environment as a positive integer, or `default` when it is unset.
pub fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().map_or(default, |v| {
        v.parse()
            .ok()
            .filter(|n| *n > 0)
            .unwrap_or_else(|| panic!("{name} must be a positive integer, not {v:?}"))
    })
}

/// `TIDEMARK_BENCH_SNAPSHOT_ROWS`: rows of the snapshot benchmarks' table `bench.snap`
/// (default 5,000,000).
pub fn snap_rows_from_env() -> u64 {
    env_number("TIDEMARK_BENCH_SNAPSHOT_ROWS", 5_000_000)
}

/// Creates `bench.snap`, the snapshot benchmarks' table of W1's shape, with `rows` rows unless
/// it already holds them; says which. Made with the sequence engine, outside the binlog.
pub async fn ensure_snap(url: &str, rows: u64) -> String {
    let mut conn = connect(url).await;
    conn.query_drop("CREATE DATABASE IF NOT EXISTS bench")
        .await
        .expect("creating database bench");
    // Also reads the whole table (InnoDB counts on the clustered index), so the benchmarks
    // that follow find it in the page cache.
    let existing: Option<u64> = conn
        .query_first("SELECT COUNT(*) FROM bench.snap")
        .await
        .ok()
        .flatten();
    if existing == Some(rows) {
        return "reused from an earlier run".into();
    }
    let started = Instant::now();
    // Written without the binlog: nothing reads it, and it would only fill the disk.
    let setup = format!(
        "SET SESSION sql_log_bin = 0;
         USE bench;
         DROP TABLE IF EXISTS bench.snap;
         CREATE TABLE bench.snap ({W1_COLUMNS});
         INSERT INTO bench.snap
         SELECT seq, seq % 1000, CONCAT('SKU-', seq), seq % 7, (seq % 100000) / 100,
                ELT(1 + seq % 4, 'new', 'paid', 'shipped', 'cancelled'),
                REPEAT(CHAR(97 + seq % 26), 10 + seq % 50),
                TIMESTAMP('2024-01-01 00:00:00.123456') + INTERVAL seq SECOND,
                TIMESTAMP('2024-06-01 00:00:00.5') + INTERVAL seq SECOND,
                seq % 256,
                JSON_OBJECT('k', seq % 10, 's', CONCAT('v', seq % 97))
         FROM seq_1_to_{rows};"
    );
    conn.query_drop(setup)
        .await
        .unwrap_or_else(|e| panic!("making bench.snap: {e}"));
    format!("made now ({:.1} s)", started.elapsed().as_secs_f64())
}
