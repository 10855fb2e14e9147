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
//!   every message into typed row changes, handed to a tally that counts and discards them.
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

use std::time::Instant;

use tidemark::config::{Config, SourceConfig};
use tidemark::event::ResumePoint;
use tidemark::source::postgres::reader::PgReader;
use tidemark::source::postgres::slot::WalPosition;

mod harness;
#[allow(dead_code)] // shared by three benchmarks; each uses part of it
mod workload;
#[allow(dead_code)] // shared by two benchmarks; each uses part of it
mod workload_pg;

use harness::{Report, Run};
use workload::source_revision;
use workload_pg::{
    PUBLICATION, RunSlots, SOURCE_DB, W2, count_recvlogical, db_url, ensure_w2, pg_connect,
    pg_source_server_url, recvlogical,
};

/// How the output names the sides and units, and the target: tidemark at least 90% of
/// `pg_recvlogical`'s rate (peak RSS is reported without one).
const REPORT: Report = Report {
    theirs: "pg_recvlogical",
    unit: "changes",
    run_rate: "changes/s",
    result_rate: "changes/s",
    ratio_target: 0.90,
    ratio_decimals: 2,
    rss_target_mb: None,
};

/// The parent (timing both sides), or the child (`--child ...`: tidemark's reader alone).
fn main() {
    harness::dispatch(child::run, parent);
}

/// Loads or finds W2, checks the stream once, then times both sides alternately and reports.
fn parent() {
    let reps = harness::reps_from_env();
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

    // Each side reads its own copy of the template slot, dropped right after (untimed).
    let on_copy = |side: &dyn Fn(&str) -> Run| {
        let slot = runtime.block_on(slots.copy());
        let run = side(&slot);
        runtime.block_on(slots.drop_slot(&slot));
        run
    };
    let (m, t) = REPORT.compare(
        reps,
        || {
            on_copy(&|slot| {
                // Side (a): pg_recvlogical writing what it receives to /dev/null.
                let mut cmd = recvlogical(&url, slot, range.end);
                cmd.args(["-f", "/dev/null"]);
                harness::timed_command(cmd, counted.changes())
            })
        },
        || {
            on_copy(&|slot| {
                // Side (b): this binary in child mode on its own copy.
                let (start, end) = (range.start.to_string(), range.end.to_string());
                harness::timed_child([url.as_str(), slot, &start, &end])
            })
        },
    );
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
    // Side (c): the same range through `tidemark run`'s pipeline into the null warehouse.
    let (start, end) = (range.start.to_string(), range.end.to_string());
    let slot = runtime.block_on(slots.copy());
    harness::compare_pipeline(
        reps,
        &["pipeline", url.as_str(), &slot, &start, &end],
        REPORT.theirs,
        m,
        "changes",
    );
    runtime.block_on(slots.drop_slot(&slot));
}

/// Child mode: `--child URL SLOT START END [MAX_CHANGES]`.
///
/// Reads slot `SLOT` of the database at `URL` from checkpoint `START` (an LSN, `X/Y`) until the
/// reader's resume point reaches `END` (or `MAX_CHANGES` changes arrived, for profiling a
/// shorter run), then prints
/// `changes=N insert=N update=N delete=N transactions=N secs=S vm_hwm_kb=K`.
mod child {
    use super::*;

    /// Parses the arguments, reads the range and prints the report line.
    pub fn run(args: &[String]) {
        if args.first().map(String::as_str) == Some("pipeline") {
            return pipeline(&args[1..]);
        }
        let usage = "usage: pgoutput_decode --child URL SLOT START_LSN END_LSN [MAX_CHANGES]";
        let ([url, slot, from, to], limit) = harness::child_args(args, usage);
        let from = WalPosition::parse(from).unwrap_or_else(|| panic!("{usage}"));
        let to = WalPosition::parse(to).unwrap_or_else(|| panic!("{usage}"));
        let config = config(url, slot);
        harness::report_child(read_range(&config.sources[0], from, to, limit));
    }

    /// `--child pipeline URL SLOT START END`: the range through `tidemark run`'s pipeline into
    /// the null warehouse, until the progress reaches `END`. Each run needs a fresh copy of
    /// the slot: the pipeline confirms what it loads.
    fn pipeline(args: &[String]) {
        let usage = "usage: pgoutput_decode --child pipeline URL SLOT START_LSN END_LSN";
        let ([url, slot, from, to], _) = harness::child_args(args, usage);
        let from = WalPosition::parse(from).unwrap_or_else(|| panic!("{usage}"));
        let to = WalPosition::parse(to).unwrap_or_else(|| panic!("{usage}"));
        let config = config(url, slot);
        let state_dir = config.group.state_dir.clone();
        harness::report_pipeline_child(
            config,
            ResumePoint::Lsn { lsn: from.0 },
            |at| matches!(at, ResumePoint::Lsn { lsn } if *lsn >= to.0),
        );
        let _ = std::fs::remove_dir_all(state_dir);
    }

    /// A config whose one source reads `bench.orders` of the database at `url` through `slot`
    /// and W2's publication, into the null warehouse, validated as `tidemark run` validates it.
    fn config(url: &str, slot: &str) -> Config {
        let state_dir = std::env::temp_dir().join(format!("tidemark-bench-{}", std::process::id()));
        let text = format!(
            r#"[group]
name = "bench-pgoutput"
state_dir = {state_dir:?}
[warehouse]
kind = "null"
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
        assert_eq!(config.sources.len(), 1, "one source in the child's config");
        config
    }

    /// Opens the reader at `from` and counts what it delivers until its resume point reaches
    /// `to` (or `limit` changes).
    async fn read_range(
        source: &SourceConfig,
        from: WalPosition,
        to: WalPosition,
        limit: u64,
    ) -> harness::Tally {
        // Nothing is ever confirmed: the slot is a throwaway copy.
        let (_confirm, confirmations) = tokio::sync::watch::channel(None);
        let checkpoint = ResumePoint::Lsn { lsn: from.0 };
        let settings = source
            .postgres()
            .expect("the child's source is a Postgres source");
        let opened = PgReader::open(source, settings, Some(&checkpoint), confirmations)
            .await
            .unwrap_or_else(|e| panic!("opening the Postgres reader at {from}: {e}"));
        harness::drain(Box::new(opened.reader), to, limit, |_, reader| {
            let ResumePoint::Lsn { lsn } = reader.resume_point() else {
                panic!("a Postgres reader resumes at an LSN");
            };
            lsn >= to.0
        })
        .await
    }
}
