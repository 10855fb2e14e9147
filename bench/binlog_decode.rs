//! Binlog-decode benchmark: tidemark's network reader against `mariadb-binlog`, on workload W1.
//!
//! W1 is one table, `bench.orders`, with the column types a CDC source meets most (BIGINT key,
//! INT, VARCHAR, SMALLINT, DECIMAL, ENUM, TEXT, DATETIME(6), TIMESTAMP(3), BIT, JSON), loaded
//! as 1,000,000 inserts, then 500,000 updates (several columns each), then 100,000 deletes,
//! all in 1000-row transactions: 1.6M row events. It lives on a dedicated private MariaDB
//! (`scripts/mariadb-instance.sh bench`), so nothing else writes to that binlog. The binlog
//! range W1 occupies is recorded in `bench.w1_loaded`; a rerun that finds it (and the binlog
//! files still present) reuses it instead of loading again.
//!
//! Each repetition then reads exactly that range over the network:
//! - (a) `mariadb-binlog --read-from-remote-server --base64-output=DECODE-ROWS -v` into
//!   `/dev/null`;
//! - (b) tidemark's [`BinlogReader`] decoding every row into typed values, handed to a null
//!   sink that counts and discards them (the supabase/etl idea: source decode cost apart from
//!   warehouse cost). It runs in a child process (this binary re-executed with `--child`) so
//!   the peak RSS it reports (`VmHWM`) is the reader's alone.
//!
//! Both sides are timed as whole processes (spawn to exit) by the parent; the best of N
//! repetitions counts, because a shared machine only ever adds time. Targets: tidemark at least
//! twice as fast as `mariadb-binlog`, peak RSS at most 100 MB.
//!
//! Environment: `TIDEMARK_BENCH_URL` (use this server instead of starting the private one),
//! `TIDEMARK_BENCH_REPS` (repetitions, default 5), `TIDEMARK_BENCH_RELOAD=1` (load W1 again).
//! See `bench/README.md`.

/// The same allocator as the `tidemark` binary, so the child measures what ships.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts};
use tidemark::event::{Op, ResumePoint, SourceMessage};
use tidemark::source::mysql::stream::{BinlogReader, ReaderOptions, StartPosition};

/// Bump when the workload changes, so a loaded instance of the old workload is reloaded.
const W1_VERSION: &str = "w1-v2";
const ROWS: u64 = 1_000_000;
const UPDATES: u64 = 500_000;
const DELETES: u64 = 100_000;
const TXN_ROWS: u64 = 1000;
const RSS_TARGET_MB: f64 = 100.0;
const RATIO_TARGET: f64 = 2.0;
/// Replica server id of the tidemark reader; unique on the dedicated bench server.
const READER_SERVER_ID: u32 = 4242;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--child") {
        child::run(&args[1..]);
    } else {
        // `cargo bench` passes `--bench` (and maybe a filter); there is nothing to select.
        parent();
    }
}

/// A binlog coordinate.
#[derive(Debug, Clone, PartialEq, Eq)]
struct BinlogPos {
    file: String,
    pos: u64,
}

impl BinlogPos {
    /// Parses `file:pos`.
    fn parse(text: &str) -> Option<BinlogPos> {
        let (file, pos) = text.rsplit_once(':')?;
        Some(BinlogPos {
            file: file.to_owned(),
            pos: pos.parse().ok()?,
        })
    }

    /// Sort key: the file's numeric suffix, then the offset.
    fn key(file: &str, pos: u64) -> (u64, u64) {
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
struct W1Range {
    start: BinlogPos,
    end: BinlogPos,
    /// Every binlog file from `start.file` to `end.file`, in order.
    files: Vec<String>,
    /// Bytes of binlog in the range.
    bytes: u64,
    /// Seconds the load took (when it was loaded, possibly by an earlier run).
    load_secs: f64,
    reused: bool,
}

/// What one timed run measured.
#[derive(Debug, Clone, Copy)]
struct Run {
    events: u64,
    secs: f64,
    rss_mb: f64,
}

fn parent() {
    let reps: usize = std::env::var("TIDEMARK_BENCH_REPS")
        .ok()
        .map(|v| {
            v.parse()
                .expect("TIDEMARK_BENCH_REPS must be a positive integer")
        })
        .unwrap_or(5)
        .max(1);
    let url = server_url();
    let (host, port) = host_port(&url);
    let runtime = tokio::runtime::Runtime::new().expect("starting the tokio runtime");
    let range = runtime.block_on(ensure_w1(&url));
    drop(runtime);

    println!(
        "binlog_decode: workload W1 on {url}, tidemark {}",
        source_revision()
    );
    println!(
        "  range {} .. {} ({} file(s), {:.0} MB); {} (load {:.1} s)",
        range.start,
        range.end,
        range.files.len(),
        range.bytes as f64 / 1e6,
        if range.reused {
            "reused from an earlier load"
        } else {
            "loaded now"
        },
        range.load_secs,
    );

    let mysqlbinlog = MysqlBinlog {
        host,
        port,
        range: range.clone(),
    };
    // Untimed: counts mariadb-binlog's decoded rows (so both sides provably cover the same
    // events) and warms the page cache for the binlog files.
    let started = Instant::now();
    let counted = mysqlbinlog.count_rows();
    println!(
        "  check: mariadb-binlog decoded {} row events ({} insert, {} update, {} delete) in {:.1} s (counting, untimed)",
        counted.total(),
        counted.insert,
        counted.update,
        counted.delete,
        started.elapsed().as_secs_f64()
    );

    let mut theirs = Vec::new();
    let mut ours = Vec::new();
    for rep in 1..=reps {
        let m = mysqlbinlog.timed_run(counted.total());
        println!(
            "  run {rep}/{reps}: mariadb-binlog {:>9} events {:>7.2} s {:>10.0} ev/s",
            m.events,
            m.secs,
            m.events as f64 / m.secs
        );
        theirs.push(m);
        let t = tidemark_run(&url, &range);
        println!(
            "  run {rep}/{reps}: tidemark       {:>9} events {:>7.2} s {:>10.0} ev/s  peak RSS {:.1} MB",
            t.events,
            t.secs,
            t.events as f64 / t.secs,
            t.rss_mb
        );
        ours.push(t);
    }

    let best = |runs: &[Run]| {
        *runs
            .iter()
            .min_by(|a, b| a.secs.total_cmp(&b.secs))
            .expect("at least one run")
    };
    let (m, t) = (best(&theirs), best(&ours));
    let peak_rss = ours.iter().map(|r| r.rss_mb).fold(0.0, f64::max);
    let ratio = (t.events as f64 / t.secs) / (m.events as f64 / m.secs);
    let verdict = |ok: bool| if ok { "PASS" } else { "MISS" };
    println!();
    println!("result (best of {reps} per side; peak RSS is the max over tidemark runs):");
    println!(
        "  mariadb-binlog: {:>9} events {:>7.2} s {:>10.0} events/s",
        m.events,
        m.secs,
        m.events as f64 / m.secs
    );
    println!(
        "  tidemark:       {:>9} events {:>7.2} s {:>10.0} events/s",
        t.events,
        t.secs,
        t.events as f64 / t.secs
    );
    println!(
        "  ratio tidemark/mariadb-binlog: {ratio:.2}x  (target >= {RATIO_TARGET:.1}x) {}",
        verdict(ratio >= RATIO_TARGET)
    );
    println!(
        "  tidemark peak RSS: {peak_rss:.1} MB  (target <= {RSS_TARGET_MB:.0} MB) {}",
        verdict(peak_rss <= RSS_TARGET_MB)
    );
    if t.events != counted.total() {
        println!(
            "  WARNING: tidemark delivered {} changes but mariadb-binlog decoded {} rows",
            t.events,
            counted.total()
        );
    }
}

/// The measured source tree: `git describe --always --dirty`, or "unknown revision".
fn source_revision() -> String {
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
fn server_url() -> String {
    if let Ok(url) = std::env::var("TIDEMARK_BENCH_URL") {
        return url;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/mariadb-instance.sh");
    let out = Command::new(&script)
        .arg("bench")
        .stderr(Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", script.display()));
    assert!(
        out.status.success(),
        "{} bench failed ({})",
        script.display(),
        out.status
    );
    let url = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(
        url.starts_with("mysql://"),
        "unexpected output from {}: {url:?}",
        script.display()
    );
    url
}

/// Host and port of a `mysql://user@host:port` URL, for the command-line client.
fn host_port(url: &str) -> (String, u16) {
    let opts = Opts::from_url(url).unwrap_or_else(|e| panic!("bad server URL {url:?}: {e}"));
    (opts.ip_or_hostname().to_string(), opts.tcp_port())
}

async fn connect(url: &str) -> Conn {
    let opts = Opts::from_url(url).unwrap_or_else(|e| panic!("bad server URL {url:?}: {e}"));
    Conn::new(opts)
        .await
        .unwrap_or_else(|e| panic!("connecting to {url}: {e}"))
}

/// Finds W1 on the server, or loads it, and returns its binlog range.
async fn ensure_w1(url: &str) -> W1Range {
    let mut conn = connect(url).await;
    let reload = std::env::var("TIDEMARK_BENCH_RELOAD").is_ok_and(|v| v == "1");
    if !reload && let Some(range) = loaded_w1(&mut conn).await {
        return range;
    }
    load_w1(&mut conn).await
}

/// The recorded W1 range, if it was loaded by this workload version and its files still exist.
async fn loaded_w1(conn: &mut Conn) -> Option<W1Range> {
    let marker: Option<(String, u64, String, u64, f64)> = conn
        .exec_first(
            "SELECT start_file, start_pos, end_file, end_pos, load_secs
             FROM bench.w1_loaded WHERE version = ?",
            (W1_VERSION,),
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
            "binlog_decode: W1 was loaded at {start_file}:{start_pos}..{end_file}:{end_pos} \
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

async fn master_status(conn: &mut Conn) -> BinlogPos {
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
async fn load_w1(conn: &mut Conn) -> W1Range {
    eprintln!("binlog_decode: loading W1 (1M inserts, 500k updates, 100k deletes)...");
    let setup = "
        DROP DATABASE IF EXISTS bench;
        CREATE DATABASE bench;
        CREATE TABLE bench.orders (
            id BIGINT PRIMARY KEY,
            qty INT,
            sku VARCHAR(32),
            status_code SMALLINT,
            amount DECIMAL(12,2),
            state ENUM('new','paid','shipped','cancelled'),
            note TEXT,
            created_at DATETIME(6),
            updated_at TIMESTAMP(3) NULL,
            flags BIT(8),
            attrs JSON
        );
        CREATE TABLE bench.w1_loaded (
            version VARCHAR(32) PRIMARY KEY,
            start_file VARCHAR(255), start_pos BIGINT UNSIGNED,
            end_file VARCHAR(255), end_pos BIGINT UNSIGNED,
            load_secs DOUBLE
        );
        FLUSH BINARY LOGS;
        SET SESSION binlog_annotate_row_events = OFF;";
    conn.query_drop(setup).await.expect("creating bench.orders");
    let start = master_status(conn).await;
    let started = Instant::now();

    let mut rows = Gen::new(0x7469_6465_6d61_726b);
    let columns = "INSERT INTO bench.orders \
        (id, qty, sku, status_code, amount, state, note, created_at, updated_at, flags, attrs) VALUES ";
    // Inserts: ids 1..=1M, 1000 per statement (each autocommit statement is one transaction).
    for first in (1..=ROWS).step_by(TXN_ROWS as usize) {
        let mut sql = String::with_capacity(400 * TXN_ROWS as usize);
        sql.push_str(columns);
        for id in first..first + TXN_ROWS {
            if id != first {
                sql.push(',');
            }
            rows.row(&mut sql, id);
        }
        conn.query_drop(sql).await.expect("inserting W1 rows");
    }
    // Updates: every even id (500k), 1000 per transaction, changing seven columns through
    // INSERT ... ON DUPLICATE KEY UPDATE (row-logged as UPDATE_ROWS with new varied values).
    let update_tail = " ON DUPLICATE KEY UPDATE qty = VALUES(qty), status_code = VALUES(status_code), \
        amount = VALUES(amount), state = VALUES(state), note = VALUES(note), \
        updated_at = VALUES(updated_at), attrs = VALUES(attrs)";
    for txn in 0..UPDATES / TXN_ROWS {
        let mut sql = String::with_capacity(400 * TXN_ROWS as usize);
        sql.push_str(columns);
        for i in 0..TXN_ROWS {
            if i != 0 {
                sql.push(',');
            }
            rows.row(&mut sql, 2 * (txn * TXN_ROWS + i + 1));
        }
        sql.push_str(update_tail);
        conn.query_drop(sql).await.expect("updating W1 rows");
    }
    // Deletes: the last 100k ids, 1000 per statement.
    for first in (ROWS - DELETES + 1..=ROWS).step_by(TXN_ROWS as usize) {
        conn.query_drop(format!(
            "DELETE FROM bench.orders WHERE id BETWEEN {first} AND {}",
            first + TXN_ROWS - 1
        ))
        .await
        .expect("deleting W1 rows");
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
            W1_VERSION,
            &start.file,
            start.pos,
            &end.file,
            end.pos,
            load_secs,
        ),
    )
    .await
    .expect("recording the W1 range");
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

/// Deterministic generator of realistic-looking W1 rows (splitmix64; no dependency needed).
struct Gen(u64);

const WORDS: &[&str] = &[
    "alpha", "blue", "crate", "delivery", "express", "fragile", "gift", "handle", "invoice",
    "jacket", "kettle", "leave", "morning", "north", "office", "parcel", "quick", "return",
    "signed", "tracking", "urgent", "van", "window", "yard", "zone", "door", "call", "first",
];
const TAGS: &[&str] = &[
    "red", "green", "vip", "promo", "bulk", "eu", "apac", "retail",
];
const STATES: &[&str] = &["new", "paid", "shipped", "cancelled"];
const SKU_CHARS: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZ0123456789";

impl Gen {
    fn new(seed: u64) -> Self {
        Gen(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.next() as usize % items.len()]
    }

    /// Words joined by spaces, between `min` and `max` characters long.
    fn text(&mut self, out: &mut String, min: u64, max: u64) {
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

    /// Appends one `(...)` VALUES tuple for row `id`.
    fn row(&mut self, sql: &mut String, id: u64) {
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
        let _ = write!(
            sql,
            "','2024-{month:02}-{day:02} {h:02}:{m:02}:{s:02}.{micros:06}',\
             '2025-{month:02}-{day:02} {h:02}:{m:02}:{s:02}.{millis:03}',{flags},\
             '{{\"k\":{},\"tags\":[",
            self.range(1, 100_000)
        );
        for t in 0..self.range(0, 4) {
            if t > 0 {
                sql.push(',');
            }
            let _ = write!(sql, "\"{}\"", self.pick(TAGS));
        }
        let _ = write!(
            sql,
            "],\"src\":\"{}\"}}')",
            self.pick(&["web", "app", "pos"])
        );
    }
}

/// Row events `mariadb-binlog -v` printed, by kind.
#[derive(Debug, Default, Clone, Copy)]
struct RowCounts {
    insert: u64,
    update: u64,
    delete: u64,
}

impl RowCounts {
    fn total(&self) -> u64 {
        self.insert + self.update + self.delete
    }
}

/// Side (a): MariaDB's own binlog client, reading the W1 range from the server.
struct MysqlBinlog {
    host: String,
    port: u16,
    range: W1Range,
}

impl MysqlBinlog {
    /// The command: the range's files, starting in the first at the start position and
    /// stopping in the last at the end position (which is also that file's end).
    fn command(&self) -> Command {
        let mut cmd = Command::new("mariadb-binlog");
        cmd.arg("--no-defaults")
            .arg("--read-from-remote-server")
            .arg(format!("--host={}", self.host))
            .arg(format!("--port={}", self.port))
            .arg("--user=root")
            .arg("--base64-output=DECODE-ROWS")
            .arg("-v")
            .arg(format!("--start-position={}", self.range.start.pos))
            .arg(format!("--stop-position={}", self.range.end.pos))
            .args(&self.range.files)
            .stdin(Stdio::null())
            .stderr(Stdio::inherit());
        cmd
    }

    /// Runs it once into a pipe, counting the `### INSERT/UPDATE/DELETE` lines of `-v`.
    fn count_rows(&self) -> RowCounts {
        let mut child = self
            .command()
            .stdout(Stdio::piped())
            .spawn()
            .expect("starting mariadb-binlog (is the MariaDB client installed?)");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut reader = BufReader::with_capacity(1 << 20, stdout);
        let mut counts = RowCounts::default();
        let mut line = Vec::new();
        loop {
            line.clear();
            let n = reader
                .read_until(b'\n', &mut line)
                .expect("reading mariadb-binlog output");
            if n == 0 {
                break;
            }
            if line.starts_with(b"### INSERT INTO ") {
                counts.insert += 1;
            } else if line.starts_with(b"### UPDATE ") {
                counts.update += 1;
            } else if line.starts_with(b"### DELETE FROM ") {
                counts.delete += 1;
            }
        }
        let status = child.wait().expect("waiting for mariadb-binlog");
        assert!(status.success(), "mariadb-binlog failed: {status}");
        counts
    }

    /// Runs it once into `/dev/null`, timed from spawn to exit.
    fn timed_run(&self, events: u64) -> Run {
        let started = Instant::now();
        let status = self
            .command()
            .stdout(Stdio::null())
            .status()
            .expect("starting mariadb-binlog (is the MariaDB client installed?)");
        let secs = started.elapsed().as_secs_f64();
        assert!(status.success(), "mariadb-binlog failed: {status}");
        Run {
            events,
            secs,
            rss_mb: 0.0,
        }
    }
}

/// Side (b): this binary in child mode, timed from spawn to exit; it reports its own counts
/// and peak RSS on stdout as `key=value` pairs.
fn tidemark_run(url: &str, range: &W1Range) -> Run {
    let exe = std::env::current_exe().expect("locating the benchmark executable");
    let started = Instant::now();
    let out = Command::new(exe)
        .args(["--child", url])
        .arg(range.start.to_string())
        .arg(range.end.to_string())
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .expect("starting the tidemark child process");
    let secs = started.elapsed().as_secs_f64();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "tidemark child failed ({}); it printed: {report}",
        out.status
    );
    let field = |key: &str| -> f64 {
        report
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("child report lacks {key}: {report}"))
    };
    Run {
        events: field("changes") as u64,
        secs,
        rss_mb: field("vm_hwm_kb") / 1024.0,
    }
}

/// Child mode: `--child URL FROM_FILE:POS TO_FILE:POS [MAX_CHANGES]`.
///
/// Reads from `FROM` until a transaction commits at or past `TO` (or `MAX_CHANGES` changes
/// arrived, for profiling a shorter run), then prints
/// `changes=N insert=N update=N delete=N transactions=N secs=S vm_hwm_kb=K`.
mod child {
    use super::*;

    /// Discards what it is given, counting it. Stands in for a warehouse sink.
    #[derive(Debug, Default)]
    struct NullSink {
        insert: u64,
        update: u64,
        delete: u64,
        transactions: u64,
    }

    impl NullSink {
        fn changes(&self) -> u64 {
            self.insert + self.update + self.delete
        }

        /// Takes a batch; returns the resume point of the last commit in it, if any.
        fn accept(&mut self, batch: &mut Vec<SourceMessage>) -> Option<ResumePoint> {
            let mut committed = None;
            for message in batch.drain(..) {
                match message {
                    SourceMessage::Change(change) => match change.op {
                        Op::Insert => self.insert += 1,
                        Op::Update => self.update += 1,
                        Op::Delete => self.delete += 1,
                        Op::Truncate | Op::Read => {}
                    },
                    SourceMessage::Commit(point) => {
                        self.transactions += 1;
                        committed = Some(point);
                    }
                    _ => {}
                }
            }
            committed
        }
    }

    pub fn run(args: &[String]) {
        let usage = "usage: binlog_decode --child URL FROM_FILE:POS TO_FILE:POS [MAX_CHANGES]";
        let [url, from, to, rest @ ..] = args else {
            panic!("{usage}");
        };
        let from = BinlogPos::parse(from).unwrap_or_else(|| panic!("{usage}"));
        let to = BinlogPos::parse(to).unwrap_or_else(|| panic!("{usage}"));
        let limit: u64 = match rest {
            [] => u64::MAX,
            [n] => n.parse().unwrap_or_else(|_| panic!("{usage}")),
            _ => panic!("{usage}"),
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("starting the tokio runtime");
        let started = Instant::now();
        let sink = runtime.block_on(read_range(url, from, to, limit));
        let secs = started.elapsed().as_secs_f64();
        drop(runtime);
        println!(
            "changes={} insert={} update={} delete={} transactions={} secs={secs:.3} vm_hwm_kb={}",
            sink.changes(),
            sink.insert,
            sink.update,
            sink.delete,
            sink.transactions,
            vm_hwm_kb()
        );
    }

    async fn read_range(url: &str, from: BinlogPos, to: BinlogPos, limit: u64) -> NullSink {
        let options = ReaderOptions::new("bench", url, READER_SERVER_ID);
        let start = StartPosition::Resume(ResumePoint::Binlog {
            file: from.file,
            pos: from.pos,
            gtid: None,
        });
        let mut reader = BinlogReader::connect(options, start)
            .await
            .unwrap_or_else(|e| panic!("connecting the binlog reader to {url}: {e}"));
        let end = BinlogPos::key(&to.file, to.pos);
        let mut sink = NullSink::default();
        let mut batch = Vec::new();
        loop {
            let read = tokio::time::timeout(Duration::from_secs(60), reader.next_batch(&mut batch));
            match read.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => panic!("binlog reader failed at {}: {e}", reader.resume_point()),
                Err(_) => panic!(
                    "no event for 60 s at {} before reaching {to}",
                    reader.resume_point()
                ),
            }
            let committed = sink.accept(&mut batch);
            if let Some(ResumePoint::Binlog { file, pos, .. }) = committed
                && BinlogPos::key(&file, pos) >= end
            {
                break;
            }
            if sink.changes() >= limit {
                break;
            }
        }
        reader.close().await;
        sink
    }

    /// Peak resident set size of this process, from `/proc/self/status`.
    fn vm_hwm_kb() -> u64 {
        let status =
            std::fs::read_to_string("/proc/self/status").expect("reading /proc/self/status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmHWM in /proc/self/status")
    }
}
