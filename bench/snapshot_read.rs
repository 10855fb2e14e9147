//! Snapshot read benchmark (the read side of issue 13's `snapshot` benchmark): tidemark's table
//! copy readers (`source::mysql::copy`, `source::postgres::copy`) against the servers' own
//! clients, each reading every row of one table of W1's shape.
//!
//! - MySQL/MariaDB: (a) `mariadb --no-defaults --quick --batch -e "SELECT * FROM bench.snap"`
//!   into /dev/null; Postgres: (a) `psql -c "\copy (SELECT * FROM bench.snap) TO '/dev/null'"`;
//! - (b) this benchmark re-executed as a child (`--child KIND URL PARALLELISM`): `table_schema`,
//!   `key_ranges` (100k-row chunks), then `PARALLELISM` readers, each a thread with its own
//!   connection, taking chunks from a shared queue and decoding every row into typed values
//!   with `read_chunk` (1000-row batches), counted and dropped.
//!
//! Target: tidemark's rows/s at least 0.8 of the client's, peak RSS at most 256 MB. The tables
//! (`bench.snap`, `TIDEMARK_BENCH_SNAPSHOT_ROWS` rows, default 5,000,000) are made once (MariaDB:
//! the sequence engine, outside the binlog; Postgres: `generate_series` into an UNLOGGED table,
//! in database `tidemark_snap` of the `bench-source` instance) and reused.
//! `TIDEMARK_BENCH_PARALLELISM` (default 2) sets the readers, `TIDEMARK_BENCH_KINDS` (`mysql`,
//! `postgres` or both, the default) the halves. See `bench/README.md`.

use std::collections::VecDeque;
use std::ops::ControlFlow;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// The `tidemark` binary's allocator, so the child measures what ships.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use tidemark::source::mysql::copy::{key_ranges, read_chunk, table_schema};
use tidemark::source::postgres::copy as pg_copy;

#[allow(dead_code)] // shared by the decode benchmarks; this one uses part of it
mod harness;
#[allow(dead_code)] // shared by several benchmarks; this one uses part of it
mod workload;
#[allow(dead_code)] // shared by several benchmarks; this one uses part of it
mod workload_pg;

use harness::Report;
use workload::{connect, host_port, server_url, source_revision};

/// How the output names the sides, and the targets: MySQL/MariaDB.
const MYSQL_REPORT: Report = Report {
    theirs: "mariadb --quick",
    unit: "rows",
    run_rate: "rows/s",
    result_rate: "rows/s",
    ratio_target: 0.8,
    ratio_decimals: 1,
    rss_target_mb: Some(256.0),
};

/// The same for Postgres.
const POSTGRES_REPORT: Report = Report {
    theirs: "psql \\copy",
    ..MYSQL_REPORT
};

/// Rows per chunk, as a snapshot would cut the table.
const CHUNK_ROWS: u64 = 100_000;

/// Rows per batch handed over by `read_chunk`.
const BATCH_ROWS: usize = 1000;

fn main() {
    harness::dispatch(child, parent);
}

/// Runs the halves `TIDEMARK_BENCH_KINDS` names (both by default).
fn parent() {
    let kinds = std::env::var("TIDEMARK_BENCH_KINDS").unwrap_or_else(|_| "mysql,postgres".into());
    let rows = workload::snap_rows_from_env();
    let parallelism = workload::env_number("TIDEMARK_BENCH_PARALLELISM", 2);
    for kind in kinds.split(',').map(str::trim) {
        match kind {
            "mysql" => mysql_half(rows, parallelism),
            "postgres" => postgres_half(rows, parallelism),
            other => panic!("TIDEMARK_BENCH_KINDS: unknown kind {other:?} (mysql, postgres)"),
        }
    }
}

/// MySQL/MariaDB: makes or finds the table, then times both sides alternately and reports.
fn mysql_half(rows: u64, parallelism: u64) {
    let reps = harness::reps_from_env();
    let url = server_url();
    let (host, port) = host_port(&url);
    let runtime = tokio::runtime::Runtime::new().expect("starting the tokio runtime");
    let made = runtime.block_on(workload::ensure_snap(&url, rows));
    drop(runtime);
    println!(
        "snapshot_read: bench.snap ({rows} rows of W1's shape) on {url}, {parallelism} readers, tidemark {}",
        source_revision()
    );
    println!("  {made}");
    let reference = || {
        let mut cmd = Command::new("mariadb");
        cmd.args(["--no-defaults", "--quick", "--batch", "--user=root"])
            .arg(format!("--host={host}"))
            .arg(format!("--port={port}"))
            .args(["-e", "SELECT * FROM bench.snap"])
            .stdin(Stdio::null());
        harness::timed_command(cmd, rows)
    };
    let (_, t) = MYSQL_REPORT.compare(reps, reference, || {
        harness::timed_child(["mysql", url.as_str(), &parallelism.to_string()])
    });
    if t.changes != rows {
        println!(
            "  WARNING: tidemark read {} rows, the table has {rows}",
            t.changes
        );
    }
}

/// Postgres: makes or finds the table, then times both sides alternately and reports.
fn postgres_half(rows: u64, parallelism: u64) {
    let reps = harness::reps_from_env();
    let server = workload_pg::pg_source_server_url();
    let url = workload_pg::db_url(&server, workload_pg::SNAP_DB);
    let runtime = tokio::runtime::Runtime::new().expect("starting the tokio runtime");
    let made = runtime.block_on(workload_pg::ensure_pg_snap(&server, rows));
    drop(runtime);
    println!();
    println!(
        "snapshot_read: bench.snap ({rows} rows of W1's shape, UNLOGGED) on {url}, {parallelism} readers, tidemark {}",
        source_revision()
    );
    println!("  {made}");
    let reference = || {
        let mut cmd = Command::new(workload_pg::psql());
        cmd.args(["-X", "-q", "-d", &url, "-c"])
            .arg("\\copy (SELECT * FROM bench.snap) TO '/dev/null'")
            .stdin(Stdio::null());
        harness::timed_command(cmd, rows)
    };
    let (_, t) = POSTGRES_REPORT.compare(reps, reference, || {
        harness::timed_child(["postgres", url.as_str(), &parallelism.to_string()])
    });
    if t.changes != rows {
        println!(
            "  WARNING: tidemark read {} rows, the table has {rows}",
            t.changes
        );
    }
}

/// Child mode: `--child KIND URL PARALLELISM`: reads every row of `bench.snap` with tidemark's
/// copy reader of `KIND` (`mysql`, `postgres`) and prints `changes=N secs=S vm_hwm_kb=K`.
fn child(args: &[String]) {
    let usage = "usage: snapshot_read --child mysql|postgres URL PARALLELISM";
    let ([kind, url, parallelism], _) = harness::child_args(args, usage);
    let parallelism: usize = parallelism.parse().unwrap_or_else(|_| panic!("{usage}"));
    let started = Instant::now();
    let rows = match kind {
        "mysql" => read_table(url, parallelism.max(1)),
        "postgres" => read_pg_table(url, parallelism.max(1)),
        _ => panic!("{usage}"),
    };
    let secs = started.elapsed().as_secs_f64();
    println!(
        "changes={rows} secs={secs:.3} vm_hwm_kb={}",
        workload::vm_hwm_kb(None).expect("VmHWM in /proc/self/status")
    );
}

/// A current-thread runtime, one per reader thread.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("starting the tokio runtime")
}

/// Runs `parallelism` reader threads, each with a current-thread runtime, over one shared queue
/// of `chunks`: `read(queue)` opens the reader's own connection and reads chunks until the
/// queue is empty, returning its rows. Returns the rows of all readers.
fn in_parallel<C, F, Fut>(parallelism: usize, chunks: Vec<C>, read: F) -> u64
where
    C: Send + 'static,
    F: Fn(ChunkQueue<C>) -> Fut + Send + Clone + 'static,
    Fut: std::future::Future<Output = u64>,
{
    let queue = Arc::new(Mutex::new(VecDeque::from(chunks)));
    let readers: Vec<_> = (0..parallelism)
        .map(|_| {
            let (queue, read) = (queue.clone(), read.clone());
            std::thread::spawn(move || runtime().block_on(read(queue)))
        })
        .collect();
    readers
        .into_iter()
        .map(|reader| reader.join().expect("a reader thread"))
        .sum()
}

/// The chunks not yet taken by a reader.
type ChunkQueue<C> = Arc<Mutex<VecDeque<C>>>;

/// The next chunk for a reader, if any is left.
fn take<C>(queue: &ChunkQueue<C>) -> Option<C> {
    queue.lock().expect("the chunk queue").pop_front()
}

/// Plans the chunks of the MariaDB table, then reads them in parallel; returns the rows read.
fn read_table(url: &str, parallelism: usize) -> u64 {
    let (schema, ranges) = runtime().block_on(async {
        let mut conn = connect(url).await;
        let schema = table_schema(&mut conn, "bench", "snap")
            .await
            .expect("reading the schema")
            .expect("bench.snap exists");
        let ranges = key_ranges(&mut conn, &schema, CHUNK_ROWS)
            .await
            .expect("planning the chunks");
        (schema, ranges)
    });
    let (schema, url) = (Arc::new(schema), url.to_owned());
    in_parallel(parallelism, ranges, move |queue| {
        let (schema, url) = (schema.clone(), url.clone());
        async move {
            let mut conn = connect(&url).await;
            let mut rows = 0u64;
            while let Some(range) = take(&queue) {
                read_chunk(&mut conn, &schema, &range, BATCH_ROWS, |batch| {
                    rows += batch.len() as u64;
                    ControlFlow::Continue(())
                })
                .await
                .unwrap_or_else(|e| panic!("reading {range}: {e}"));
            }
            rows
        }
    })
}

/// As [`read_table`], for the Postgres table.
fn read_pg_table(url: &str, parallelism: usize) -> u64 {
    let (table, ranges) = runtime().block_on(async {
        let client = workload_pg::pg_connect(url).await;
        let table = pg_copy::describe(&client, "bench", "snap")
            .await
            .expect("reading the schema")
            .expect("bench.snap exists");
        let ranges = pg_copy::key_ranges(&client, &table.schema, CHUNK_ROWS)
            .await
            .expect("planning the chunks");
        (table, ranges)
    });
    let (table, url) = (Arc::new(table), url.to_owned());
    in_parallel(parallelism, ranges, move |queue| {
        let (table, url) = (table.clone(), url.clone());
        async move {
            let client = workload_pg::pg_connect(&url).await;
            let (mut rows, mut batch) = (0u64, Vec::new());
            while let Some(range) = take(&queue) {
                let mut chunk = pg_copy::read_chunk(&client, &table, &range, BATCH_ROWS)
                    .await
                    .unwrap_or_else(|e| panic!("reading {range}: {e}"));
                while chunk
                    .next_batch(&mut batch)
                    .await
                    .unwrap_or_else(|e| panic!("reading {range}: {e}"))
                {
                    rows += batch.len() as u64;
                }
            }
            rows
        }
    })
}
