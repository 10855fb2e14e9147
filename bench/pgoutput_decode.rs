//! pgoutput-decode benchmark: tidemark's Postgres reader against `pg_recvlogical`, on workload W2.
//!
//! W2 (see `workload_pg.rs`, shared with `pipeline_e2e`) is W1 in Postgres: one table,
//! `bench.orders`, loaded as 1M inserts, 500k updates and 100k deletes in 1000-row transactions
//! (1.6M row changes) into its own database on the private Postgres, right after a template
//! logical slot was created; its WAL range is recorded so reruns reuse it.
//!
//! Each repetition copies the template slot once per side, so both read exactly W2's WAL from
//! their own slot:
//! - (a) `pg_recvlogical --start -o proto_version=1 -o publication_names=w2_pub --endpos=END
//!   -f /dev/null`: the server decodes the WAL into pgoutput messages, which the client writes
//!   out as they are;
//! - (b) tidemark's [`PgReader`] (what `tidemark run` reads a Postgres source with) decoding
//!   every message into typed row changes, handed to a null sink that counts and discards them.
//!   It runs in a child process (this binary re-executed with `--child`) so the peak RSS it
//!   reports (`VmHWM`) is the reader's alone.
//!
//! Both sides are timed as whole processes (spawn to exit) by the parent; the best of N
//! repetitions counts, because a shared machine only ever adds time. Target: tidemark at least
//! 90% of `pg_recvlogical`'s rate.
//!
//! Environment: `TIDEMARK_BENCH_PG_SOURCE_URL` (use this server instead of starting the private
//! `bench-source` one),
//! `TIDEMARK_BENCH_REPS` (repetitions, default 5), `TIDEMARK_BENCH_RELOAD=1` (load W2 again),
//! `TIDEMARK_BENCH_SCALE` (a smaller or larger W2). See `bench/README.md`.

/// The same allocator as the `tidemark` binary, so the child measures what ships.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tidemark::config::{Config, SourceConfig};
use tidemark::event::{Op, ResumePoint, SourceMessage};
use tidemark::source::postgres::reader::PgReader;
use tidemark::source::postgres::slot::WalPosition;

#[allow(dead_code)] // shared by three benchmarks; each uses part of it
mod workload;
#[allow(dead_code)] // shared by two benchmarks; each uses part of it
mod workload_pg;

use workload::source_revision;
use workload_pg::{
    PUBLICATION, RunSlots, SOURCE_DB, W2, W2Range, count_recvlogical, db_url, ensure_w2,
    pg_connect, pg_source_server_url, recvlogical,
};

/// tidemark must reach at least this share of `pg_recvlogical`'s rate.
const RATIO_TARGET: f64 = 0.90;

/// The parent (timing both sides), or the child (`--child ...`: tidemark's reader alone).
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
    changes: u64,
    secs: f64,
    rss_mb: f64,
}

/// Loads or finds W2, checks the stream once, then times both sides alternately and reports.
fn parent() {
    let reps: usize = std::env::var("TIDEMARK_BENCH_REPS")
        .ok()
        .map(|v| {
            v.parse()
                .expect("TIDEMARK_BENCH_REPS must be a positive integer")
        })
        .unwrap_or(5)
        .max(1);
    let server = pg_source_server_url();
    let url = db_url(&server, SOURCE_DB);
    let runtime = tokio::runtime::Runtime::new().expect("starting the tokio runtime");
    let w2 = W2::from_env();
    let range = runtime.block_on(ensure_w2(&server, &w2));
    let client = runtime.block_on(pg_connect(&url));
    let slots = runtime.block_on(RunSlots::new(&client));

    println!(
        "pgoutput_decode: workload {w2} on {url}, tidemark {}",
        source_revision()
    );
    println!("  {}", range.describe());

    // Untimed: counts what pg_recvlogical receives (so both sides provably cover the same
    // changes) and warms the page cache for the WAL.
    let started = Instant::now();
    let slot = runtime.block_on(slots.copy());
    let counted = count_recvlogical(&url, &slot, range.end);
    runtime.block_on(slots.drop_slot(&slot));
    println!(
        "  check: pg_recvlogical received {} row changes ({} insert, {} update, {} delete) in {} transactions, {:.0} MB of pgoutput, in {:.1} s (counting, untimed)",
        counted.changes(),
        counted.insert,
        counted.update,
        counted.delete,
        counted.transactions,
        counted.bytes as f64 / 1e6,
        started.elapsed().as_secs_f64()
    );

    let mut theirs = Vec::new();
    let mut ours = Vec::new();
    for rep in 1..=reps {
        let slot = runtime.block_on(slots.copy());
        let m = recvlogical_run(&url, &slot, &range, counted.changes());
        runtime.block_on(slots.drop_slot(&slot));
        println!(
            "  run {rep}/{reps}: pg_recvlogical {:>9} changes {:>7.2} s {:>10.0} changes/s",
            m.changes,
            m.secs,
            m.changes as f64 / m.secs
        );
        theirs.push(m);
        let slot = runtime.block_on(slots.copy());
        let t = tidemark_run(&url, &slot, &range);
        runtime.block_on(slots.drop_slot(&slot));
        println!(
            "  run {rep}/{reps}: tidemark       {:>9} changes {:>7.2} s {:>10.0} changes/s  peak RSS {:.1} MB",
            t.changes,
            t.secs,
            t.changes as f64 / t.secs,
            t.rss_mb
        );
        ours.push(t);
    }
    drop(client);
    drop(runtime);

    let best = |runs: &[Run]| {
        *runs
            .iter()
            .min_by(|a, b| a.secs.total_cmp(&b.secs))
            .expect("at least one run")
    };
    let (m, t) = (best(&theirs), best(&ours));
    let peak_rss = ours.iter().map(|r| r.rss_mb).fold(0.0, f64::max);
    let ratio = (t.changes as f64 / t.secs) / (m.changes as f64 / m.secs);
    let verdict = if ratio >= RATIO_TARGET {
        "PASS"
    } else {
        "MISS"
    };
    println!();
    println!("result (best of {reps} per side; peak RSS is the max over tidemark runs):");
    println!(
        "  pg_recvlogical: {:>9} changes {:>7.2} s {:>10.0} changes/s",
        m.changes,
        m.secs,
        m.changes as f64 / m.secs
    );
    println!(
        "  tidemark:       {:>9} changes {:>7.2} s {:>10.0} changes/s",
        t.changes,
        t.secs,
        t.changes as f64 / t.secs
    );
    println!(
        "  ratio tidemark/pg_recvlogical: {ratio:.2}x  (target >= {RATIO_TARGET:.2}x) {verdict}"
    );
    println!("  tidemark peak RSS: {peak_rss:.1} MB");
    for (who, changes) in [
        ("pg_recvlogical", counted.changes()),
        ("tidemark", t.changes),
    ] {
        if changes != w2.changes() {
            println!(
                "  WARNING: {who} delivered {changes} row changes but W2 has {}",
                w2.changes()
            );
        }
    }
}

/// Side (a): `pg_recvlogical` from its own copy `slot` into `/dev/null`, timed from spawn to
/// exit; `changes` is what the check run counted.
fn recvlogical_run(url: &str, slot: &str, range: &W2Range, changes: u64) -> Run {
    let started = Instant::now();
    let status = recvlogical(url, slot, range.end)
        .args(["-f", "/dev/null"])
        .stdout(Stdio::null())
        .status()
        .expect("starting pg_recvlogical");
    let secs = started.elapsed().as_secs_f64();
    assert!(status.success(), "pg_recvlogical failed: {status}");
    Run {
        changes,
        secs,
        rss_mb: 0.0,
    }
}

/// Side (b): this binary in child mode on its own copy `slot`, timed from spawn to exit; it
/// reports its own counts and peak RSS on stdout as `key=value` pairs.
fn tidemark_run(url: &str, slot: &str, range: &W2Range) -> Run {
    let exe = std::env::current_exe().expect("locating the benchmark executable");
    let started = Instant::now();
    let out = Command::new(exe)
        .args(["--child", url, slot])
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
        changes: field("changes") as u64,
        secs,
        rss_mb: field("vm_hwm_kb") / 1024.0,
    }
}

/// Child mode: `--child URL SLOT START END [MAX_CHANGES]`.
///
/// Reads slot `SLOT` of the database at `URL` from checkpoint `START` (an LSN, `X/Y`) until the
/// reader's resume point reaches `END` (or `MAX_CHANGES` changes arrived, for profiling a
/// shorter run), then prints
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
        /// Row changes counted so far.
        fn changes(&self) -> u64 {
            self.insert + self.update + self.delete
        }

        /// Takes a batch, counting its changes and commits.
        fn accept(&mut self, batch: &mut Vec<SourceMessage>) {
            for message in batch.drain(..) {
                match message {
                    SourceMessage::Change(change) => match change.op {
                        Op::Insert => self.insert += 1,
                        Op::Update => self.update += 1,
                        Op::Delete => self.delete += 1,
                        Op::Truncate | Op::Read => {}
                    },
                    SourceMessage::Commit(_) => self.transactions += 1,
                    _ => {}
                }
            }
        }
    }

    /// Parses the arguments, reads the range and prints the report line.
    pub fn run(args: &[String]) {
        let usage = "usage: pgoutput_decode --child URL SLOT START_LSN END_LSN [MAX_CHANGES]";
        let [url, slot, from, to, rest @ ..] = args else {
            panic!("{usage}");
        };
        let from = WalPosition::parse(from).unwrap_or_else(|| panic!("{usage}"));
        let to = WalPosition::parse(to).unwrap_or_else(|| panic!("{usage}"));
        let limit: u64 = match rest {
            [] => u64::MAX,
            [n] => n.parse().unwrap_or_else(|_| panic!("{usage}")),
            _ => panic!("{usage}"),
        };
        let source = source_config(url, slot);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("starting the tokio runtime");
        let started = Instant::now();
        let sink = runtime.block_on(read_range(&source, from, to, limit));
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

    /// A Postgres source reading `bench.orders` of the database at `url` through `slot` and
    /// W2's publication, validated as `tidemark run` validates its config.
    fn source_config(url: &str, slot: &str) -> SourceConfig {
        let text = format!(
            r#"[group]
name = "bench-pgoutput"
[warehouse]
kind = "postgres"
url = "postgres://unused@127.0.0.1:1/warehouse"
[[sources]]
id = "bench-w2"
kind = "postgres"
url = {url:?}
tenant = "bench"
region = "pg"
function = "w2"
include = ["bench.orders"]
snapshot = "never"
slot = {slot:?}
publication = {PUBLICATION:?}
"#
        );
        let config =
            Config::from_str_with_env(&text, std::path::Path::new("pgoutput_decode.toml"), &|_| {
                None
            })
            .unwrap_or_else(|e| panic!("the child's source config: {e}"));
        config
            .sources
            .into_iter()
            .next()
            .expect("one source in the child's config")
    }

    /// Opens the reader at `from` and counts what it delivers until its resume point reaches
    /// `to` (or `limit` changes).
    async fn read_range(
        source: &SourceConfig,
        from: WalPosition,
        to: WalPosition,
        limit: u64,
    ) -> NullSink {
        // Nothing is ever confirmed: the slot is a throwaway copy.
        let (_confirm, confirmations) = tokio::sync::watch::channel(None);
        let checkpoint = ResumePoint::Lsn { lsn: from.0 };
        let opened = PgReader::open(source, Some(&checkpoint), confirmations)
            .await
            .unwrap_or_else(|e| panic!("opening the Postgres reader at {from}: {e}"));
        let mut reader = opened.reader;
        let mut sink = NullSink::default();
        let mut batch = Vec::new();
        loop {
            let read = tokio::time::timeout(Duration::from_secs(60), reader.next_batch(&mut batch));
            match read.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => panic!("Postgres reader failed at {}: {e}", reader.resume_point()),
                Err(_) => panic!(
                    "nothing read for 60 s at {} before reaching {to}",
                    reader.resume_point()
                ),
            }
            sink.accept(&mut batch);
            let ResumePoint::Lsn { lsn } = reader.resume_point() else {
                panic!("a Postgres reader resumes at an LSN");
            };
            if lsn >= to.0 || sink.changes() >= limit {
                break;
            }
        }
        reader.close().await;
        sink
    }
}
