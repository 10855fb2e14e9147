//! Binlog-decode benchmark: tidemark's network reader against `mariadb-binlog`, on workload W1.
//!
//! W1 (see `workload.rs`, shared with `pipeline_e2e`) is one table, `bench.orders`, loaded
//! as 1M inserts, 500k updates and 100k deletes in 1000-row transactions (1.6M row events) on a
//! dedicated private MariaDB; its binlog range is recorded so reruns reuse it.
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
//! `TIDEMARK_BENCH_REPS` (repetitions, default 5), `TIDEMARK_BENCH_RELOAD=1` (load W1 again),
//! `TIDEMARK_BENCH_SCALE` (a smaller or larger W1).
//! See `bench/README.md`.

/// The same allocator as the `tidemark` binary, so the child measures what ships.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Instant;

use std::path::Path;

use tidemark::config::Config;
use tidemark::event::ResumePoint;
use tidemark::source::mysql::reader::{BinlogReader, ReaderOptions, StartPosition};

mod harness;
#[allow(dead_code)] // shared by three benchmarks; each uses part of it
mod workload;

use harness::Report;
use workload::{BinlogPos, W1, W1Range, ensure_w1, host_port, server_url, source_revision};

/// How the output names the sides and units, and the targets: tidemark at least twice as fast,
/// in at most 100 MB.
const REPORT: Report = Report {
    theirs: "mariadb-binlog",
    unit: "events",
    run_rate: "ev/s",
    result_rate: "events/s",
    ratio_target: 2.0,
    ratio_decimals: 1,
    rss_target_mb: Some(100.0),
};
/// Replica server id of the tidemark reader; unique on the dedicated bench server.
const READER_SERVER_ID: u32 = 4242;

/// The parent (timing both sides), or the child (`--child ...`: tidemark's reader alone).
fn main() {
    harness::dispatch(child::run, parent);
}

/// Loads or finds W1, counts its rows once, then times both sides alternately and reports.
fn parent() {
    let reps = harness::reps_from_env();
    let url = server_url();
    let (host, port) = host_port(&url);
    let runtime = tokio::runtime::Runtime::new().expect("starting the tokio runtime");
    let w1 = W1::from_env();
    let range = runtime.block_on(ensure_w1(&url, &w1));
    drop(runtime);

    println!(
        "binlog_decode: workload {w1} on {url}, tidemark {}",
        source_revision()
    );
    println!("  {}", range.describe());

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

    let (from, to) = (range.start.to_string(), range.end.to_string());
    let (m, t) = REPORT.compare(
        reps,
        || harness::timed_command(mysqlbinlog.command(), counted.total()),
        // Side (b): this binary in child mode reading the range.
        || harness::timed_child([&url, &from, &to]),
    );
    if t.changes != counted.total() {
        println!(
            "  WARNING: tidemark delivered {} changes but mariadb-binlog decoded {} rows",
            t.changes,
            counted.total()
        );
    }
    // Side (c): the same range through `tidemark run`'s pipeline into the null warehouse.
    harness::compare_pipeline(
        reps,
        &["pipeline", &url, &from, &to],
        REPORT.theirs,
        m,
        "events",
    );
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
}

/// Child mode: `--child URL FROM_FILE:POS TO_FILE:POS [MAX_CHANGES]`.
///
/// Reads from `FROM` until a transaction commits at or past `TO` (or `MAX_CHANGES` changes
/// arrived, for profiling a shorter run), then prints
/// `changes=N insert=N update=N delete=N transactions=N secs=S vm_hwm_kb=K`.
mod child {
    use super::*;

    /// Parses the arguments, reads the range and prints the report line.
    pub fn run(args: &[String]) {
        if args.first().map(String::as_str) == Some("pipeline") {
            return pipeline(&args[1..]);
        }
        let usage = "usage: binlog_decode --child URL FROM_FILE:POS TO_FILE:POS [MAX_CHANGES]";
        let ([url, from, to], limit) = harness::child_args(args, usage);
        let from = BinlogPos::parse(from).unwrap_or_else(|| panic!("{usage}"));
        let to = BinlogPos::parse(to).unwrap_or_else(|| panic!("{usage}"));
        harness::report_child(read_range(url, from, to, limit));
    }

    /// Reads from `from` until a transaction commits at or past `to` (or `limit` changes).
    async fn read_range(url: &str, from: BinlogPos, to: BinlogPos, limit: u64) -> harness::Tally {
        let options = ReaderOptions::new("bench", url, READER_SERVER_ID);
        let start = StartPosition::Resume(ResumePoint::Binlog {
            file: from.file,
            pos: from.pos,
            gtid: None,
        });
        let reader = BinlogReader::connect(options, start)
            .await
            .unwrap_or_else(|e| panic!("connecting the binlog reader to {url}: {e}"));
        let end = BinlogPos::key(&to.file, to.pos);
        harness::drain(Box::new(reader), &to, limit, |committed, _| {
            matches!(committed, Some(ResumePoint::Binlog { file, pos, .. })
                if BinlogPos::key(&file, pos) >= end)
        })
        .await
    }

    /// `--child pipeline URL FROM_FILE:POS TO_FILE:POS`: the range through `tidemark run`'s
    /// pipeline into the null warehouse, until the progress reaches `TO`.
    fn pipeline(args: &[String]) {
        let usage = "usage: binlog_decode --child pipeline URL FROM_FILE:POS TO_FILE:POS";
        let ([url, from, to], _) = harness::child_args(args, usage);
        let from = BinlogPos::parse(from).unwrap_or_else(|| panic!("{usage}"));
        let to = BinlogPos::parse(to).unwrap_or_else(|| panic!("{usage}"));
        let state_dir = std::env::temp_dir().join(format!("tidemark-bench-{}", std::process::id()));
        let text = format!(
            "[group]\nname = \"bench-binlog-decode\"\nstate_dir = {state_dir:?}\n\n\
             [warehouse]\nkind = \"null\"\n\n\
             [[sources]]\nid = \"w1\"\nkind = \"mysql\"\nurl = {url:?}\n\
             server_id = {READER_SERVER_ID}\ntenant = \"bench\"\nregion = \"decode\"\n\
             function = \"w1\"\ninclude = [\"bench.orders\"]\nsnapshot = \"never\"\n"
        );
        let config = Config::from_str_with_env(&text, Path::new("binlog_decode.toml"), &|_| None)
            .unwrap_or_else(|e| panic!("the child's config: {e}"));
        let start = ResumePoint::Binlog {
            file: from.file,
            pos: from.pos,
            gtid: None,
        };
        let end = BinlogPos::key(&to.file, to.pos);
        harness::report_pipeline_child(
            config,
            start,
            |at| matches!(at, ResumePoint::Binlog { file, pos, .. } if BinlogPos::key(file, *pos) >= end),
        );
        let _ = std::fs::remove_dir_all(state_dir);
    }
}
