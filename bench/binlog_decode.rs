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
use std::time::{Duration, Instant};

use tidemark::event::{Op, ResumePoint, SourceMessage};
use tidemark::source::mysql::stream::{BinlogReader, ReaderOptions, StartPosition};

#[allow(dead_code)] // shared by two benchmarks; each uses part of it
mod workload;

use workload::{BinlogPos, W1, W1Range, ensure_w1, host_port, server_url, source_revision};

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
            workload::vm_hwm_kb(None).expect("VmHWM in /proc/self/status")
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
}
