//! End-to-end benchmark: `tidemark run` from MariaDB and from Postgres into Postgres, against a
//! hand-written load of the same rows, plus commit-to-visible latency under a steady writer.
//!
//! - (a) W1 (see `workload.rs`: 1M inserts, 500k updates, 100k deletes on `bench.orders`, 1000-row
//!   transactions; 900k rows left) streamed by the release `tidemark` binary into a fresh
//!   Postgres database. The checkpoint row is first created by tidemark itself (a short run that
//!   records the end of the binlog), then moved to W1's start, so the timed run replays exactly
//!   W1. Timed from spawning `tidemark run` until the checkpoint in `tidemark.progress`
//!   reaches W1's end (polled every 50 ms); the target must then hold exactly the source's rows
//!   (count and a content checksum, checked untimed). Peak RSS is tidemark's `VmHWM`, read just
//!   before SIGTERM.
//! - (b) The reference: the same final rows selected from the source (`mariadb --batch --quick`)
//!   piped into `psql`, which in one transaction COPYs them into a temporary staging table and
//!   MERGEs that into an empty target table of the same shape (source columns plus tidemark's
//!   four metadata columns). Timed from spawning `mariadb` until `psql` exits.
//!
//!   The target compares rates, each side's rows per second: tidemark's source row changes
//!   (W1's 1.6M, all read, collapsed to the last change per key and applied) per second against
//!   the reference's rows (900k) per second; target ratio >= 0.70. The stricter ratio for the
//!   same final table (reference time / tidemark time) is printed beside it. Best of N
//!   repetitions per side, alternating.
//! - (c) Latency: with `max_delay = "500ms"`, a writer commits small transactions (6 inserts and
//!   4 updates of earlier rows each) at 5000 changes/s for 30 s. For every transaction it
//!   records the largest id it inserted and the instant COMMIT returned; a poller reads
//!   `max(id)` of the target table every 20 ms. A transaction's latency is the time from its
//!   COMMIT returning until the first poll that saw its id. Targets: p99 <= 2 s, tidemark
//!   RSS <= 150 MB.
//! - (d) and (e): as (a) and (b), on W2 (see `workload_pg.rs`: W1 in Postgres types, in database
//!   `tidemark_w2_source` of its own private Postgres). tidemark reads a copy of W2's template
//!   slot, which starts at W2's start, with its checkpoint moved there, and is timed until the
//!   checkpoint reaches the end of W2's last commit. The reference reads the final rows with
//!   `psql -c "\copy (SELECT ...) TO STDOUT"` instead of `mariadb`. Same figures and target.
//! - (r) The Redshift path, only when asked for (`TIDEMARK_BENCH_PARTS=redshift`: it needs the
//!   `redshift-test-server` example, which `cargo bench` does not build): W1 as in (a), through
//!   the Redshift sink (gzip CSV parts and a manifest in the private S3 server, loaded with
//!   `COPY ... MANIFEST GZIP CSV`, DELETE and MERGE in one Data API transaction) into the Redshift
//!   Data API test server, which runs the SQL on the bench Postgres and emulates the COPY by
//!   reading the files from S3. Timed the same way; `keep_files = "1h"` keeps the staged files,
//!   which are then listed to count the `part-*.gz` files and sum their sizes. Figures: source
//!   row changes/s, staged files/s, compressed MB/s, tidemark's peak RSS (target <= 256 MB), and
//!   each load transaction's statements as the test server timed them. Each repetition also runs
//!   (a)'s tidemark side on the same W1, for the ratio between the two paths.
//!
//! Servers: the private `scripts/mariadb-instance.sh bench`, `scripts/postgres-instance.sh bench`
//! (the warehouse) and, for W2, `scripts/postgres-instance.sh bench-source` (started when
//! needed); for (r) also `scripts/s3-instance.sh bench` (moto). Environment:
//! `TIDEMARK_BENCH_REPS` (default 3), `TIDEMARK_BENCH_SCALE` (W1 and W2 size, default 1),
//! `TIDEMARK_BENCH_PARTS` (`all`, the default, or a comma-separated list of `throughput` (a, b),
//! `latency` (c), `postgres` (d, e) and `redshift` (r, not in `all`)),
//! `TIDEMARK_BENCH_REDSHIFT_SERVER` (the test server binary; default: the release build, else
//! the debug build of the example, under the target directory), `TIDEMARK_BENCH_LATENCY_SECS`
//! (30), `TIDEMARK_BENCH_LATENCY_RATE` (changes/s, 5000), `TIDEMARK_BENCH_BIN` (the tidemark
//! binary; default: the one cargo built for this benchmark, `target/release/tidemark`),
//! `TIDEMARK_BENCH_URL` / `TIDEMARK_BENCH_PG_URL` / `TIDEMARK_BENCH_PG_SOURCE_URL` (other
//! servers), `TIDEMARK_BENCH_RELOAD=1`.
//! See `bench/README.md`.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;
use tidemark::event::ResumePoint;
use tidemark::source::postgres::slot::WalPosition;
use tokio_postgres::Client;

#[allow(dead_code)] // shared by two benchmarks; each uses part of it
mod tidemark_run;
#[allow(dead_code)] // shared by several benchmarks; each uses part of it
mod workload;
#[allow(dead_code)] // shared by several benchmarks; each uses part of it
mod workload_pg;

use tidemark_run::{Bin, Tidemark, table_shape, verdict};
use workload::{
    BinlogPos, W1, W1Range, connect, ensure_w1, env_number, host_port, source_revision,
};
use workload_pg::{RunSlots, W2, W2Range, ensure_w2, pg_connect, pg_error, psql};

const RATIO_TARGET: f64 = 0.70;
const P99_TARGET_SECS: f64 = 2.0;
const RSS_TARGET_MB: f64 = 150.0;
/// Changes per latency-writer transaction: this many inserts, the rest updates.
const LAT_TXN_CHANGES: u64 = 10;
const LAT_TXN_INSERTS: u64 = 6;

fn main() {
    // `cargo bench` passes `--bench` (and maybe a filter); there is nothing to select.
    let env = Env::from_env();
    let runtime = tokio::runtime::Runtime::new().expect("starting the tokio runtime");
    println!(
        "pipeline_e2e: tidemark {} ({}), sources {} and {}, warehouse {}",
        source_revision(),
        env.tidemark.path.display(),
        env.mysql_url.as_deref().unwrap_or("(MariaDB not used)"),
        env.pg_source_url
            .as_deref()
            .unwrap_or("(Postgres source not used)"),
        env.pg_url
    );
    if env.parts.throughput {
        runtime.block_on(throughput(&env));
    }
    if env.parts.latency {
        runtime.block_on(latency(&env));
    }
    if env.parts.postgres {
        runtime.block_on(postgres_throughput(&env));
    }
    if env.parts.redshift {
        runtime.block_on(redshift_throughput(&env));
    }
}

/// Which parts run.
struct Parts {
    /// (a) and (b): W1 from MariaDB.
    throughput: bool,
    /// (c): commit-to-visible latency from MariaDB.
    latency: bool,
    /// (d) and (e): W2 from Postgres.
    postgres: bool,
    /// (r): W1 through the Redshift path (not in `all`).
    redshift: bool,
}

impl Parts {
    /// Parses `TIDEMARK_BENCH_PARTS`: `all` (the default: the first three) or a comma-separated
    /// list of `throughput`, `latency`, `postgres` and `redshift`.
    fn from_env() -> Parts {
        let text = std::env::var("TIDEMARK_BENCH_PARTS").unwrap_or_else(|_| "all".into());
        let mut parts = Parts {
            throughput: false,
            latency: false,
            postgres: false,
            redshift: false,
        };
        for part in text.split(',').map(str::trim) {
            match part {
                "all" => {
                    parts.throughput = true;
                    parts.latency = true;
                    parts.postgres = true;
                }
                "throughput" => parts.throughput = true,
                "latency" => parts.latency = true,
                "postgres" => parts.postgres = true,
                "redshift" => parts.redshift = true,
                other => panic!(
                    "TIDEMARK_BENCH_PARTS must be all or a comma-separated list of throughput, \
                     latency, postgres and redshift, not {other:?}"
                ),
            }
        }
        parts
    }
}

/// Settings and servers.
struct Env {
    /// The `tidemark` binary and the work directory of its runs (configs, logs, state).
    tidemark: Bin,
    /// The MariaDB server, when a part that reads it runs.
    mysql_url: Option<String>,
    /// The warehouse's Postgres server.
    pg_url: String,
    /// The Postgres server W2 lives on, when the part that reads it runs.
    pg_source_url: Option<String>,
    /// The S3 server the Redshift path stages its files in and the Data API test server's
    /// binary, when that part runs.
    s3_url: Option<String>,
    test_server: Option<PathBuf>,
    reps: usize,
    parts: Parts,
    latency_secs: u64,
    latency_rate: u64,
}

impl Env {
    fn from_env() -> Env {
        let tidemark = Bin::from_env("pipeline_e2e");
        let parts = Parts::from_env();
        Env {
            tidemark,
            mysql_url: (parts.throughput || parts.latency || parts.redshift)
                .then(workload::server_url),
            pg_url: tidemark_run::warehouse_server_url(),
            pg_source_url: parts.postgres.then(workload_pg::pg_source_server_url),
            s3_url: parts.redshift.then(s3_server_url),
            test_server: parts.redshift.then(test_server_bin),
            reps: env_number("TIDEMARK_BENCH_REPS", 3) as usize,
            parts,
            latency_secs: env_number("TIDEMARK_BENCH_LATENCY_SECS", 30),
            latency_rate: env_number("TIDEMARK_BENCH_LATENCY_RATE", 5000),
        }
    }

    /// The MariaDB server's URL (only called by the parts that read it).
    fn mysql_url(&self) -> &str {
        self.mysql_url
            .as_deref()
            .expect("the MariaDB server of the MariaDB parts")
    }

    /// The URL of W2's database (only called by the part that reads it).
    fn w2_source_url(&self) -> String {
        let server = self
            .pg_source_url
            .as_deref()
            .expect("the Postgres source server of the postgres part");
        workload_pg::db_url(server, workload_pg::SOURCE_DB)
    }

    /// The URL of database `db` on the warehouse server.
    fn db_url(&self, db: &str) -> String {
        workload_pg::db_url(&self.pg_url, db)
    }

    /// Drops and creates database `db` on the warehouse server; returns a client connected to it.
    async fn fresh_database(&self, db: &str) -> Client {
        tidemark_run::fresh_database(&self.pg_url, db).await
    }
}

/// One source of one tidemark config.
struct SourceSpec<'a> {
    /// Name of the config file and of the tidemark log, under the work directory.
    name: &'a str,
    id: &'a str,
    /// The `function` part of the staging schema `bench_e2e_{function}`.
    function: &'a str,
    include: &'a str,
    /// Extra `[batch]` lines.
    batch: &'a str,
    /// Added to tidemark's environment.
    envs: &'a [(&'a str, &'a str)],
}

impl SourceSpec<'_> {
    /// The staging schema tidemark loads this source into.
    fn schema(&self) -> String {
        format!("bench_e2e_{}", self.function)
    }

    /// Writes the config file `{name}.toml` for a MySQL source on the bench MariaDB.
    fn write_config(&self, env: &Env, wh_db: &str) -> PathBuf {
        self.write(env, wh_db, self.name, &mysql_source(env))
    }

    /// Writes the config file `{file}.toml` for a Postgres source reading W2's database
    /// through `slot` and W2's publication.
    fn write_pg_config(&self, env: &Env, wh_db: &str, file: &str, slot: &str) -> PathBuf {
        let source = format!(
            "kind = \"postgres\"\nurl = {:?}\nslot = {slot:?}\npublication = {:?}\n",
            env.w2_source_url(),
            workload_pg::PUBLICATION
        );
        self.write(env, wh_db, file, &source)
    }

    /// Writes `{file}.toml` with `source` as the source's kind, URL and kind-specific lines
    /// (URLs inline: the bench servers have no passwords), loading into database `wh_db` of
    /// the warehouse Postgres.
    fn write(&self, env: &Env, wh_db: &str, file: &str, source: &str) -> PathBuf {
        let warehouse = format!("kind = \"postgres\"\nurl = {:?}\n", env.db_url(wh_db));
        self.write_with(env, &warehouse, file, source)
    }

    /// Writes `{file}.toml` with `warehouse` as the `[warehouse]` table's lines.
    fn write_with(&self, env: &Env, warehouse: &str, file: &str, source: &str) -> PathBuf {
        let path = env.tidemark.work.join(format!("{file}.toml"));
        let text = format!(
            "[group]\nname = \"bench-{name}\"\nstate_dir = {state:?}\n\n\
             [warehouse]\n{warehouse}\n\
             [batch]\n{batch}\n\n\
             [[sources]]\nid = {id:?}\n{source}\
             tenant = \"bench\"\nregion = \"e2e\"\nfunction = {function:?}\n\
             include = [{include:?}]\nsnapshot = \"never\"\n",
            name = self.name,
            state = env.tidemark.work.join("state").join(self.name),
            batch = self.batch,
            id = self.id,
            function = self.function,
            include = self.include,
        );
        std::fs::write(&path, text).expect("writing a tidemark config");
        path
    }
}

/// The source lines of a MySQL source on the bench MariaDB.
fn mysql_source(env: &Env) -> String {
    format!("kind = \"mysql\"\nurl = {:?}\n", env.mysql_url())
}

/// The source's binlog checkpoint, or `None` before tidemark wrote it. `resume_point` is
/// `jsonb` in a Postgres warehouse and JSON text (`character varying`) in the Redshift sink's.
async fn checkpoint(client: &Client, source_id: &str) -> Option<BinlogPos> {
    let row = client
        .query_opt(
            "SELECT resume_point::jsonb->>'file', (resume_point::jsonb->>'pos')::bigint
             FROM tidemark.progress WHERE source_id = $1",
            &[&source_id],
        )
        .await
        .ok()??;
    let file: Option<String> = row.get(0);
    let pos: Option<i64> = row.get(1);
    Some(BinlogPos {
        file: file?,
        pos: pos? as u64,
    })
}

/// A Postgres source's checkpoint LSN, or `None` before tidemark wrote it.
async fn lsn_checkpoint(client: &Client, source_id: &str) -> Option<WalPosition> {
    let row = client
        .query_opt(
            "SELECT (resume_point->>'lsn')::bigint FROM tidemark.progress
             WHERE source_id = $1 AND resume_point->>'kind' = 'lsn'",
            &[&source_id],
        )
        .await
        .ok()??;
    row.get::<_, Option<i64>>(0)
        .map(|lsn| WalPosition(lsn as u64))
}

/// Whether tidemark has written the source's checkpoint row (false also before the control
/// tables exist).
async fn has_checkpoint_row(client: &Client, source_id: &str) -> bool {
    client
        .query_opt(
            "SELECT 1 FROM tidemark.progress WHERE source_id = $1",
            &[&source_id],
        )
        .await
        .is_ok_and(|row| row.is_some())
}

/// Waits (at most 60 s) until tidemark has recorded its start position.
async fn wait_for_checkpoint_row(client: &Client, tidemark: &mut Tidemark, source_id: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !has_checkpoint_row(client, source_id).await {
        tidemark.assert_alive();
        assert!(
            Instant::now() < deadline,
            "tidemark wrote no checkpoint row within 60 s; log:\n{}",
            tidemark.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// --- throughput, shared by (a)/(b) on W1 and (d)/(e) on W2 ------------------------------------

/// The reference load, a psql script reading the rows on stdin: COPY (with `copy_options`) into a
/// temporary staging table, one MERGE into `target`, one transaction. `columns` are the target's
/// source columns (name, type); the target also has tidemark's four metadata columns.
fn reference_sql(target: &str, copy_options: &str, columns: &[(String, String)]) -> String {
    let names: Vec<&str> = columns.iter().map(|c| c.0.as_str()).collect();
    let stage: Vec<String> = columns.iter().map(|(n, t)| format!("{n} {t}")).collect();
    let set: Vec<String> = names
        .iter()
        .filter(|n| **n != "id")
        .map(|n| format!("{n} = s.{n}"))
        .collect();
    let values: Vec<String> = names.iter().map(|n| format!("s.{n}")).collect();
    format!(
        r"\set ON_ERROR_STOP 1
SET timezone = 'UTC';
BEGIN;
CREATE TEMP TABLE stage ({stage}) ON COMMIT DROP;
\copy stage FROM pstdin WITH ({copy_options})
MERGE INTO {target} t USING stage s ON t.id = s.id
WHEN MATCHED THEN UPDATE SET {set}, _tidemark_op = 'update', _tidemark_position = 0,
    _tidemark_commit_ts = now(), _tidemark_loaded_at = now()
WHEN NOT MATCHED THEN INSERT ({names}, _tidemark_op, _tidemark_position, _tidemark_commit_ts,
    _tidemark_loaded_at)
    VALUES ({values}, 'insert', 0, now(), now());
COMMIT;
",
        stage = stage.join(", "),
        set = set.join(", "),
        names = names.join(", "),
        values = values.join(", "),
    )
}

/// Rows and checksum of a table.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Contents {
    rows: u64,
    sum1: String,
    sum2: String,
}

/// One timed run of either side.
#[derive(Debug, Clone, Copy)]
struct Run {
    secs: f64,
    rss_mb: f64,
}

/// What a throughput comparison is about.
struct Workload<'a> {
    /// `W1` or `W2`.
    name: &'a str,
    /// The source row changes tidemark reads.
    changes: u64,
    /// What the source calls them.
    change_kind: &'a str,
    /// Rows of the final table.
    final_rows: u64,
    /// The reference's reading command.
    reference: &'a str,
    /// The warehouse database tidemark loads into, where the target's shape is read.
    tidemark_db: &'a str,
    /// The schema of the target table `orders`.
    schema: &'a str,
}

/// Prints the source's rows and checksum (taken since `started`, untimed) and checks that they
/// are the workload's final rows; `table` names the source table in the line.
fn check_source(workload: &Workload<'_>, table: &str, source: &Contents, started: Instant) {
    println!(
        "  source: {table} has {} rows, checksum {}/{} ({:.1} s, untimed)",
        source.rows,
        source.sum1,
        source.sum2,
        started.elapsed().as_secs_f64()
    );
    assert_eq!(
        source.rows, workload.final_rows,
        "bench.orders does not hold {}'s final rows; rerun with TIDEMARK_BENCH_RELOAD=1",
        workload.name
    );
}

/// Times tidemark and the reference alternately `env.reps` times on one workload, printing each
/// run (and, after tidemark's first, the target table it created, which the reference copies),
/// then the result.
async fn compare_throughput(
    env: &Env,
    workload: &Workload<'_>,
    mut tidemark: impl AsyncFnMut() -> Run,
    mut reference: impl AsyncFnMut(&[(String, String)]) -> Run,
) {
    let mut ours = Vec::new();
    let mut theirs = Vec::new();
    let mut shape = Vec::new();
    for rep in 1..=env.reps {
        let t = tidemark().await;
        println!(
            "  run {rep}/{}: tidemark  {:>8} changes -> {:>7} rows {:>7.2} s {:>9.0} changes/s {:>8.0} rows/s  peak RSS {:.1} MB",
            env.reps,
            workload.changes,
            workload.final_rows,
            t.secs,
            workload.changes as f64 / t.secs,
            workload.final_rows as f64 / t.secs,
            t.rss_mb
        );
        ours.push(t);
        if rep == 1 {
            let client = pg_connect(&env.db_url(workload.tidemark_db)).await;
            shape = table_shape(&client, workload.schema, "orders").await;
            let listed: Vec<String> = shape.iter().map(|(n, t)| format!("{n} {t}")).collect();
            println!(
                "  target table, as tidemark created it (the reference creates the same): {}",
                listed.join(", ")
            );
        }
        let r = reference(&shape).await;
        println!(
            "  run {rep}/{}: reference {:>7} rows selected, COPY + MERGE {:>7.2} s {:>27.0} rows/s",
            env.reps,
            workload.final_rows,
            r.secs,
            workload.final_rows as f64 / r.secs,
        );
        theirs.push(r);
    }
    print_result(env, workload, &ours, &theirs);
}

/// Prints the best of each side's runs, the ratios and their definitions.
fn print_result(env: &Env, workload: &Workload, ours: &[Run], theirs: &[Run]) {
    let best = |runs: &[Run]| {
        *runs
            .iter()
            .min_by(|a, b| a.secs.total_cmp(&b.secs))
            .expect("at least one run")
    };
    let (t, r) = (best(ours), best(theirs));
    let Workload {
        name,
        changes,
        change_kind,
        final_rows,
        reference,
        ..
    } = *workload;
    let peak_rss = ours.iter().map(|r| r.rss_mb).fold(0.0, f64::max);
    let ratio = r.secs / t.secs;
    println!();
    println!(
        "result (best of {} per side; peak RSS is the max over tidemark runs):",
        env.reps
    );
    println!(
        "  tidemark:  {:>7.2} s  {:>9.0} source row changes applied/s  {:>8.0} final rows/s  peak RSS {:.1} MB",
        t.secs,
        changes as f64 / t.secs,
        final_rows as f64 / t.secs,
        peak_rss
    );
    println!(
        "  reference: {:>7.2} s  {:>41.0} final rows/s",
        r.secs,
        final_rows as f64 / r.secs
    );
    // The target compares rates: each side's rows per second. tidemark's rows are the workload's
    // row changes (it reads, collapses and applies all of them); the reference's are the final
    // rows it copies. The time ratio for the same final table is printed too, as a stricter
    // figure.
    let per_row = (changes as f64 / t.secs) / (final_rows as f64 / r.secs);
    println!(
        "  ratio of rates (tidemark source row changes/s / reference rows/s): {per_row:.2}  \
         (target >= {RATIO_TARGET:.2}) {}",
        verdict(per_row >= RATIO_TARGET)
    );
    println!(
        "  ratio per final row (reference time / tidemark time, same final table): {ratio:.2}  \
         (stricter; informational)"
    );
    println!(
        "  definitions: final rows = {final_rows} rows in bench.orders after {name}; source row \
         changes = {changes} {change_kind} of {name};"
    );
    println!(
        "    tidemark time = spawn of `tidemark run` (checkpoint at {name}'s start) until its \
         checkpoint reaches {name}'s end;"
    );
    println!(
        "    reference time = spawn of {reference} piped to `psql` (COPY to a temp table + one \
         MERGE, one transaction) until psql exits;"
    );
}

/// A first, short run of `spec` with `config`: tidemark creates its control tables and records
/// its checkpoint row, which the timed run's start then replaces.
async fn setup_run(env: &Env, client: &Client, config: &Path, spec: &SourceSpec<'_>) {
    let mut first = Tidemark::start_with_env(
        &env.tidemark,
        config,
        &format!("{}-setup", spec.name),
        spec.envs,
    );
    wait_for_checkpoint_row(client, &mut first, spec.id).await;
    first.stop();
}

/// Moves `spec`'s checkpoint to `start`, the workload's start (in `ResumePoint`'s own serde
/// form, as tidemark writes it: a `jsonb` value in a Postgres warehouse, its JSON text in the
/// Redshift sink's `character varying` column).
async fn move_checkpoint(client: &Client, spec: &SourceSpec<'_>, start: &ResumePoint) {
    let column_type: String = client
        .query_one(
            "SELECT format_type(atttypid, atttypmod) FROM pg_attribute
             WHERE attrelid = 'tidemark.progress'::regclass AND attname = 'resume_point'",
            &[],
        )
        .await
        .unwrap_or_else(|e| panic!("reading the type of resume_point: {}", pg_error(&e)))
        .get(0);
    let sql = "UPDATE tidemark.progress SET resume_point = $1, position = $2 WHERE source_id = $3";
    let value = serde_json::to_value(start).expect("serialising a resume point");
    let text = value.to_string();
    let resume_point: &(dyn tokio_postgres::types::ToSql + Sync) = if column_type == "jsonb" {
        &value
    } else {
        &text
    };
    let moved = client
        .execute(sql, &[resume_point, &start.to_string(), &spec.id])
        .await
        .unwrap_or_else(|e| panic!("moving the checkpoint to {start}: {}", pg_error(&e)));
    assert_eq!(moved, 1, "no checkpoint row to move");
}

/// The timed run of `spec` with `config`: from spawning `tidemark run` until `checkpoint` (polled
/// every 50 ms) is `at_end`, the workload's `end`; then its peak RSS, and it is stopped. Panics
/// if the checkpoint does not move for 120 s.
async fn timed_replay<P: PartialEq + std::fmt::Display>(
    env: &Env,
    spec: &SourceSpec<'_>,
    config: &Path,
    end: impl std::fmt::Display,
    mut checkpoint: impl AsyncFnMut() -> Option<P>,
    at_end: impl Fn(&P) -> bool,
) -> Run {
    let mut tidemark = Tidemark::start_with_env(&env.tidemark, config, spec.name, spec.envs);
    let mut last_progress: (Instant, Option<P>) = (Instant::now(), None);
    let secs = loop {
        if let Some(at) = checkpoint().await {
            if at_end(&at) {
                break tidemark.started.elapsed().as_secs_f64();
            }
            if last_progress.1.as_ref() != Some(&at) {
                last_progress = (Instant::now(), Some(at));
            }
        }
        tidemark.assert_alive();
        assert!(
            last_progress.0.elapsed() < Duration::from_secs(120),
            "tidemark's checkpoint has not moved for 120 s (at {}, the workload ends at {end}); \
             log:\n{}",
            last_progress
                .1
                .as_ref()
                .map_or("none yet".to_owned(), ToString::to_string),
            tidemark.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let rss_mb = tidemark.peak_rss_mb();
    tidemark.stop();
    Run { secs, rss_mb }
}

/// The reference's empty target table `{schema}.orders`, of the `shape` tidemark created, in a
/// fresh warehouse database `db`, and its load script `script` (COPY with `copy_options`, then
/// MERGE); returns a client of `db`, the script's path and the source columns.
async fn prepare_reference(
    env: &Env,
    db: &str,
    schema: &str,
    shape: &[(String, String)],
    script: &str,
    copy_options: &str,
) -> (Client, PathBuf, Vec<(String, String)>) {
    let client = env.fresh_database(db).await;
    let columns: Vec<String> = shape.iter().map(|(n, t)| format!("{n} {t}")).collect();
    client
        .batch_execute(&format!(
            "CREATE SCHEMA {schema};
             CREATE TABLE {schema}.orders ({}, PRIMARY KEY (id))",
            columns.join(", ")
        ))
        .await
        .unwrap_or_else(|e| panic!("creating the reference target table: {}", pg_error(&e)));
    let source_columns: Vec<(String, String)> = shape
        .iter()
        .filter(|(n, _)| !n.starts_with("_tidemark_"))
        .cloned()
        .collect();
    let path = env.tidemark.work.join(script);
    std::fs::write(
        &path,
        reference_sql(&format!("{schema}.orders"), copy_options, &source_columns),
    )
    .unwrap_or_else(|e| panic!("writing {script}: {e}"));
    (client, path, source_columns)
}

/// The reference's timed part: `select` (`what`), which writes the final rows to its stdout,
/// piped into `psql -f script` on `db`; seconds from spawning `select` until psql exits.
fn timed_reference(env: &Env, select: Command, what: &str, db: &str, script: &Path) -> f64 {
    let url = env.db_url(db);
    tidemark_run::timed_pipe(
        select,
        what,
        &[
            OsStr::new("-d"),
            OsStr::new(&url),
            OsStr::new("-f"),
            script.as_os_str(),
        ],
        &[],
    )
}

// --- (a) and (b): W1 throughput -------------------------------------------------------------

/// The source rows the reference loads, in the text form `COPY` reads.
const REFERENCE_SELECT: &str = "SET time_zone = '+00:00';
    SELECT id, qty, sku, status_code, amount, state, note, created_at, updated_at,
        LPAD(BIN(flags), 8, '0'), attrs
    FROM bench.orders";

/// Row count and content checksum of `bench.orders` at the source: per row, the md5 of a text
/// rendering both servers produce identically; summed over rows as two 32-bit halves.
const SOURCE_CHECKSUM: &str = "SELECT COUNT(*), CAST(COALESCE(SUM(h1), 0) AS CHAR),
        CAST(COALESCE(SUM(h2), 0) AS CHAR)
    FROM (SELECT CAST(CONV(SUBSTR(m, 1, 8), 16, 10) AS UNSIGNED) AS h1,
                 CAST(CONV(SUBSTR(m, 9, 8), 16, 10) AS UNSIGNED) AS h2
          FROM (SELECT MD5(CONCAT_WS('|', id, qty, sku, status_code, amount, state, note,
                    DATE_FORMAT(created_at, '%Y-%m-%d %H:%i:%s.%f'),
                    LEFT(DATE_FORMAT(updated_at, '%Y-%m-%d %H:%i:%s.%f'), 23),
                    LPAD(BIN(flags), 8, '0'), JSON_VALUE(attrs, '$.k'),
                    JSON_VALUE(attrs, '$.src'))) AS m
                FROM bench.orders) AS r) AS s";

/// The same checksum of the target table.
const TARGET_CHECKSUM: &str =
    "SELECT count(*), coalesce(sum(h1), 0)::text, coalesce(sum(h2), 0)::text
    FROM (SELECT ('x' || substr(m, 1, 8))::bit(32)::bigint AS h1,
                 ('x' || substr(m, 9, 8))::bit(32)::bigint AS h2
          FROM (SELECT md5(concat_ws('|', id, qty, sku, status_code, amount, state, note,
                    to_char(created_at, 'YYYY-MM-DD HH24:MI:SS.US'),
                    to_char(updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.MS'),
                    flags::text, attrs::jsonb->>'k', attrs::jsonb->>'src')) AS m
                FROM bench_e2e_w1.orders) AS r) AS s";

async fn source_contents(url: &str) -> Contents {
    let mut conn = connect(url).await;
    let (rows, sum1, sum2): (u64, String, String) = conn
        .query_first(SOURCE_CHECKSUM)
        .await
        .expect("checksumming bench.orders")
        .expect("one row");
    Contents { rows, sum1, sum2 }
}

async fn target_contents(client: &Client) -> Contents {
    let row = client
        .query_one(TARGET_CHECKSUM, &[])
        .await
        .unwrap_or_else(|e| panic!("checksumming bench_e2e_w1.orders: {}", pg_error(&e)));
    Contents {
        rows: row.get::<_, i64>(0) as u64,
        sum1: row.get(1),
        sum2: row.get(2),
    }
}

const W1_SPEC: SourceSpec<'static> = SourceSpec {
    name: "w1",
    id: "bench-w1",
    function: "w1",
    include: "bench.orders",
    batch: "# defaults: max_rows = 100000, max_bytes = \"64MiB\", max_delay = \"500ms\"",
    envs: &[],
};
/// The warehouse database tidemark loads W1 into.
const TIDEMARK_DB: &str = "tidemark_e2e";
/// The warehouse database the reference loads W1 into.
const REFERENCE_DB: &str = "tidemark_e2e_ref";

/// (a) and (b): W1 replayed by tidemark from MariaDB, against COPY + MERGE by hand.
async fn throughput(env: &Env) {
    let w1 = W1::from_env();
    let range = ensure_w1(env.mysql_url(), &w1).await;
    println!("(a) tidemark run vs (b) COPY + MERGE by hand, on {w1}");
    println!("  {}", range.describe());
    let workload = Workload {
        name: "W1",
        changes: w1.changes(),
        change_kind: "row events",
        final_rows: w1.final_rows(),
        reference: "`mariadb --batch --quick -e SELECT`",
        tidemark_db: TIDEMARK_DB,
        schema: "bench_e2e_w1",
    };
    let started = Instant::now();
    let source = source_contents(env.mysql_url()).await;
    check_source(&workload, "bench.orders", &source, started);
    compare_throughput(
        env,
        &workload,
        async || tidemark_w1(env, &range, &source).await,
        async |shape| reference_w1(env, &source, shape).await,
    )
    .await;
}

/// Side (a): tidemark replays W1 into a fresh warehouse database.
async fn tidemark_w1(env: &Env, range: &W1Range, source: &Contents) -> Run {
    let client = env.fresh_database(TIDEMARK_DB).await;
    let config = W1_SPEC.write_config(env, TIDEMARK_DB);
    setup_run(env, &client, &config, &W1_SPEC).await;
    let start = ResumePoint::Binlog {
        file: range.start.file.clone(),
        pos: range.start.pos,
        gtid: None,
    };
    move_checkpoint(&client, &W1_SPEC, &start).await;

    let end = BinlogPos::key(&range.end.file, range.end.pos);
    let run = timed_replay(
        env,
        &W1_SPEC,
        &config,
        &range.end,
        async || checkpoint(&client, W1_SPEC.id).await,
        |at: &BinlogPos| BinlogPos::key(&at.file, at.pos) >= end,
    )
    .await;
    let target = target_contents(&client).await;
    assert_eq!(
        &target, source,
        "after W1, bench_e2e_w1.orders differs from bench.orders (rows, checksum)"
    );
    run
}

/// Side (b): the final rows, selected from the source and loaded by psql (COPY + MERGE).
async fn reference_w1(env: &Env, source: &Contents, shape: &[(String, String)]) -> Run {
    let (client, script, _) = prepare_reference(
        env,
        REFERENCE_DB,
        "bench_e2e_w1",
        shape,
        "reference.sql",
        "FORMAT text, NULL 'NULL'",
    )
    .await;
    let (host, port) = host_port(env.mysql_url());
    let mut select = Command::new("mariadb");
    select
        .args(["--no-defaults", "--batch", "--skip-column-names", "--quick"])
        .arg(format!("--host={host}"))
        .arg(format!("--port={port}"))
        .args(["--user=root", "--default-character-set=utf8mb4", "-e"])
        .arg(REFERENCE_SELECT);
    let secs = timed_reference(env, select, "mariadb SELECT", REFERENCE_DB, &script);

    let target = target_contents(&client).await;
    assert_eq!(
        &target, source,
        "the reference load differs from bench.orders (rows, checksum)"
    );
    Run { secs, rss_mb: 0.0 }
}

// --- (d) and (e): W2 throughput, from Postgres -----------------------------------------------

/// W2's tidemark source (its slot is set per config file).
const W2_SPEC: SourceSpec<'static> = SourceSpec {
    name: "w2",
    id: "bench-w2",
    function: "w2",
    include: "bench.orders",
    batch: "# defaults: max_rows = 100000, max_bytes = \"64MiB\", max_delay = \"500ms\"",
    envs: &[],
};
/// The warehouse database tidemark loads W2 into.
const W2_TIDEMARK_DB: &str = "tidemark_e2e_w2";
/// The warehouse database the reference loads W2 into.
const W2_REFERENCE_DB: &str = "tidemark_e2e_w2_ref";

/// Row count and content checksum of W2's table `{table}` (source or target; both on Postgres,
/// so one rendering serves both): per row, the md5 of every column as text, summed over rows as
/// two 32-bit halves.
const W2_CHECKSUM: &str = "SELECT count(*), coalesce(sum(h1), 0)::text, coalesce(sum(h2), 0)::text
    FROM (SELECT ('x' || substr(m, 1, 8))::bit(32)::bigint AS h1,
                 ('x' || substr(m, 9, 8))::bit(32)::bigint AS h2
          FROM (SELECT md5(concat_ws('|', id, qty, sku, status_code, amount::text, state::text,
                    note, to_char(created_at, 'YYYY-MM-DD HH24:MI:SS.US'),
                    to_char(updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.MS'),
                    flags::text, attrs::jsonb::text)) AS m
                FROM {table}) AS r) AS s";

/// Rows and checksum of W2's table `table` (`schema.table`) on `client`'s database.
async fn w2_contents(client: &Client, table: &str) -> Contents {
    let row = client
        .query_one(&W2_CHECKSUM.replace("{table}", table), &[])
        .await
        .unwrap_or_else(|e| panic!("checksumming {table}: {}", pg_error(&e)));
    Contents {
        rows: row.get::<_, i64>(0) as u64,
        sum1: row.get(1),
        sum2: row.get(2),
    }
}

/// (d) and (e): W2 replayed by tidemark from its Postgres source, against COPY + MERGE by hand.
async fn postgres_throughput(env: &Env) {
    let w2 = W2::from_env();
    let range = ensure_w2(
        env.pg_source_url
            .as_deref()
            .expect("the Postgres source server of the postgres part"),
        &w2,
    )
    .await;
    println!();
    println!("(d) tidemark run vs (e) COPY + MERGE by hand, on {w2}, from Postgres");
    println!("  {}", range.describe());
    let workload = Workload {
        name: "W2",
        changes: w2.changes(),
        change_kind: "row changes",
        final_rows: w2.final_rows(),
        reference: "`psql -c \"\\copy (SELECT ...) TO STDOUT\"`",
        tidemark_db: W2_TIDEMARK_DB,
        schema: "bench_e2e_w2",
    };
    let source_client = pg_connect(&env.w2_source_url()).await;
    let slots = RunSlots::new(&source_client).await;
    let started = Instant::now();
    let source = w2_contents(&source_client, "bench.orders").await;
    let table = format!("{}.bench.orders", workload_pg::SOURCE_DB);
    check_source(&workload, &table, &source, started);
    compare_throughput(
        env,
        &workload,
        async || tidemark_w2(env, &range, &source, &slots).await,
        async |shape| reference_w2(env, &source, shape).await,
    )
    .await;
}

/// Side (d): tidemark replays W2 from its own copy of the template slot into a fresh warehouse
/// database.
async fn tidemark_w2(env: &Env, range: &W2Range, source: &Contents, slots: &RunSlots<'_>) -> Run {
    let client = env.fresh_database(W2_TIDEMARK_DB).await;

    // The setup run reads a slot of its own, which tidemark creates at the end of the WAL (so
    // nothing is read) and which is dropped afterwards.
    let setup_slot = slots.name("setup");
    let setup = W2_SPEC.write_pg_config(env, W2_TIDEMARK_DB, "w2-setup", &setup_slot);
    setup_run(env, &client, &setup, &W2_SPEC).await;
    slots.drop_slot(&setup_slot).await;

    // The timed run reads a copy of the template slot, which starts at W2's start, with the
    // checkpoint moved there: `decide_start` resumes at a checkpoint equal to the slot's
    // confirmed position.
    let slot = slots.name("e2e");
    slots.copy_as(&slot).await;
    move_checkpoint(&client, &W2_SPEC, &ResumePoint::Lsn { lsn: range.start.0 }).await;

    let config = W2_SPEC.write_pg_config(env, W2_TIDEMARK_DB, "w2", &slot);
    let run = timed_replay(
        env,
        &W2_SPEC,
        &config,
        range.end,
        async || lsn_checkpoint(&client, W2_SPEC.id).await,
        |at: &WalPosition| *at >= range.end,
    )
    .await;
    slots.drop_slot(&slot).await;
    let target = w2_contents(&client, "bench_e2e_w2.orders").await;
    assert_eq!(
        &target, source,
        "after W2, bench_e2e_w2.orders differs from the source's bench.orders (rows, checksum)"
    );
    run
}

/// Side (e): the final rows, copied out of the source by one psql and loaded by another (COPY +
/// MERGE).
async fn reference_w2(env: &Env, source: &Contents, shape: &[(String, String)]) -> Run {
    let (client, script, source_columns) = prepare_reference(
        env,
        W2_REFERENCE_DB,
        "bench_e2e_w2",
        shape,
        "reference-w2.sql",
        "FORMAT text",
    )
    .await;
    let names: Vec<&str> = source_columns.iter().map(|(n, _)| n.as_str()).collect();
    let copy_out = format!(
        "\\copy (SELECT {} FROM bench.orders) TO STDOUT",
        names.join(", ")
    );
    let mut select = Command::new(psql());
    select
        .args(["-X", "-q", "-d"])
        .arg(env.w2_source_url())
        .arg("-c")
        .arg(&copy_out)
        // timestamptz values in UTC, as the loading session reads them.
        .env("PGTZ", "UTC");
    let secs = timed_reference(
        env,
        select,
        "psql (COPY TO STDOUT)",
        W2_REFERENCE_DB,
        &script,
    );

    let target = w2_contents(&client, "bench_e2e_w2.orders").await;
    assert_eq!(
        &target, source,
        "the reference load differs from the source's bench.orders (rows, checksum)"
    );
    Run { secs, rss_mb: 0.0 }
}

// --- (c): commit-to-visible latency ---------------------------------------------------------

const LAT_SPEC: SourceSpec<'static> = SourceSpec {
    name: "latency",
    id: "bench-latency",
    function: "lat",
    include: "lat.events",
    batch: "max_delay = \"500ms\"",
    envs: &[],
};
const LATENCY_DB: &str = "tidemark_e2e_lat";

/// A transaction the writer committed: the largest id it inserted and when COMMIT returned.
type Committed = (u64, Instant);

async fn latency(env: &Env) {
    let rate = env.latency_rate;
    println!();
    println!(
        "(c) commit-to-visible latency: {rate} changes/s for {} s, transactions of {LAT_TXN_INSERTS} inserts + {} updates, max_delay = 500ms",
        env.latency_secs,
        LAT_TXN_CHANGES - LAT_TXN_INSERTS
    );
    let mut conn = connect(env.mysql_url()).await;
    conn.query_drop(
        "DROP DATABASE IF EXISTS lat; CREATE DATABASE lat;
         CREATE TABLE lat.events (id BIGINT PRIMARY KEY, k INT NOT NULL, v VARCHAR(64) NOT NULL,
             amount DECIMAL(12,2) NOT NULL, updated_at DATETIME(6) NOT NULL)",
    )
    .await
    .expect("creating lat.events");
    let client = env.fresh_database(LATENCY_DB).await;
    let config = LAT_SPEC.write_config(env, LATENCY_DB);
    let mut tidemark = Tidemark::start(&env.tidemark, &config, "latency");
    wait_for_checkpoint_row(&client, &mut tidemark, LAT_SPEC.id).await;

    // The poller: max(id) of the target every 20 ms, with the instant each answer arrived,
    // until it has seen the writer's last id (`u64::MAX` while the writer runs).
    let last = Arc::new(AtomicU64::new(u64::MAX));
    let poller = tokio::spawn(poll_max_id(
        pg_connect(&env.db_url(LATENCY_DB)).await,
        format!("{}.events", LAT_SPEC.schema()),
        last.clone(),
    ));

    let writing = Instant::now();
    let committed = write_steadily(&mut conn, rate, Duration::from_secs(env.latency_secs)).await;
    let wrote_secs = writing.elapsed().as_secs_f64();
    last.store(committed.last().map_or(0, |c| c.0), Ordering::Relaxed);
    let polls = match tokio::time::timeout(Duration::from_secs(60), poller).await {
        Ok(polls) => polls.expect("the poller task"),
        Err(_) => {
            tidemark.assert_alive();
            panic!(
                "the last write was not visible 60 s after the writer stopped; log:\n{}",
                tidemark.log_tail()
            );
        }
    };
    let (peak_mb, now_mb) = (tidemark.peak_rss_mb(), tidemark.rss_mb());
    tidemark.stop();

    let rows: u64 = conn
        .query_first("SELECT COUNT(*) FROM lat.events")
        .await
        .expect("counting lat.events")
        .expect("one row");
    let target_rows: i64 = client
        .query_one(
            &format!("SELECT count(*) FROM {}.events", LAT_SPEC.schema()),
            &[],
        )
        .await
        .unwrap_or_else(|e| panic!("counting the target: {}", pg_error(&e)))
        .get(0);

    let mut latencies: Vec<f64> = committed
        .iter()
        .filter_map(|&(id, at)| {
            let i = polls.partition_point(|p| p.1 < id);
            polls
                .get(i)
                .map(|p| p.0.saturating_duration_since(at).as_secs_f64())
        })
        .collect();
    latencies.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        latencies[((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len()) - 1]
    };
    let changes = committed.len() as u64 * LAT_TXN_CHANGES;
    println!(
        "  writer: {changes} changes in {} transactions over {wrote_secs:.1} s ({:.0} changes/s achieved); {} polls of the target",
        committed.len(),
        changes as f64 / wrote_secs,
        polls.len()
    );
    println!(
        "  rows: source {rows}, warehouse {target_rows} {}",
        if rows == target_rows as u64 {
            "(equal)"
        } else {
            "(DIFFERENT)"
        }
    );
    assert!(!latencies.is_empty(), "no transaction was sampled");
    let p99 = pct(0.99);
    println!(
        "  commit-to-visible over {} transactions: p50 {:.3} s  p90 {:.3} s  p99 {p99:.3} s  max {:.3} s  (target p99 <= {P99_TARGET_SECS:.1} s) {}",
        latencies.len(),
        pct(0.50),
        pct(0.90),
        latencies[latencies.len() - 1],
        verdict(p99 <= P99_TARGET_SECS)
    );
    println!(
        "  tidemark RSS: peak {peak_mb:.1} MB, at the end {now_mb:.1} MB  (target <= {RSS_TARGET_MB:.0} MB) {}",
        verdict(peak_mb <= RSS_TARGET_MB)
    );
    println!(
        "  definitions: latency = from COMMIT returning to the writer until the first 20 ms poll \
         of max(id) in the warehouse that includes the transaction's last insert (so it includes \
         up to one poll interval plus the poll's own query time)."
    );
}

/// Commits `LAT_TXN_CHANGES`-change transactions at `rate` changes/s for `length`, one multi-
/// statement round trip each; returns what each committed.
async fn write_steadily(
    conn: &mut mysql_async::Conn,
    rate: u64,
    length: Duration,
) -> Vec<Committed> {
    let interval = Duration::from_secs_f64(LAT_TXN_CHANGES as f64 / rate as f64);
    let mut rng = workload::Gen::new(0x006c_6174_656e_6379);
    let mut committed = Vec::new();
    let mut next_id = 1u64;
    let started = Instant::now();
    let mut due = started;
    while started.elapsed() < length {
        let mut sql = String::from("START TRANSACTION; INSERT INTO lat.events VALUES ");
        for i in 0..LAT_TXN_INSERTS {
            if i > 0 {
                sql.push(',');
            }
            let id = next_id + i;
            sql.push_str(&format!("({id},{},'", rng.range(1, 1_000_000)));
            rng.text(&mut sql, 10, 40);
            sql.push_str(&format!(
                "',{}.{:02},NOW(6))",
                rng.range(1, 99_999),
                rng.range(0, 99)
            ));
        }
        if next_id > 1 {
            let ids: Vec<String> = (0..LAT_TXN_CHANGES - LAT_TXN_INSERTS)
                .map(|_| rng.range(1, next_id - 1).to_string())
                .collect();
            sql.push_str(&format!(
                "; UPDATE lat.events SET k = k + 1, amount = amount + 1, updated_at = NOW(6) WHERE id IN ({})",
                ids.join(",")
            ));
        }
        sql.push_str("; COMMIT");
        conn.query_drop(sql)
            .await
            .expect("a latency-writer transaction");
        next_id += LAT_TXN_INSERTS;
        committed.push((next_id - 1, Instant::now()));
        due += interval;
        match due.checked_duration_since(Instant::now()) {
            Some(wait) => tokio::time::sleep(wait).await,
            // More than 100 ms behind: stop catching up in a burst (the achieved rate shows it).
            None if Instant::now() - due > Duration::from_millis(100) => due = Instant::now(),
            None => {}
        }
    }
    committed
}

/// Polls `max(id)` of `table` every 20 ms until it reaches `last`; returns
/// `(answer arrived, max id)` per poll.
async fn poll_max_id(client: Client, table: String, last: Arc<AtomicU64>) -> Vec<(Instant, u64)> {
    let query = format!("SELECT coalesce(max(id), 0) FROM {table}");
    let mut polls = Vec::new();
    let mut due = Instant::now();
    loop {
        // The table appears with tidemark's first batch; until then the query fails.
        if let Ok(row) = client.query_one(&query, &[]).await {
            let max = row.get::<_, i64>(0) as u64;
            polls.push((Instant::now(), max));
            if max >= last.load(Ordering::Relaxed) {
                return polls;
            }
        }
        due += Duration::from_millis(20);
        match due.checked_duration_since(Instant::now()) {
            Some(wait) => tokio::time::sleep(wait).await,
            None => due = Instant::now(),
        }
    }
}

// --- (r): W1 through the Redshift path ------------------------------------------------------

/// What `tidemark run` needs in its environment for the Redshift path: credentials for the AWS
/// SDK's default chain (the S3 server and the test server check no signature) and no EC2
/// metadata lookups.
const AWS_ENV: &[(&str, &str)] = &[
    ("AWS_ACCESS_KEY_ID", "testing"),
    ("AWS_SECRET_ACCESS_KEY", "testing"),
    ("AWS_EC2_METADATA_DISABLED", "true"),
];
const AWS_REGION: &str = "us-east-1";
/// The bucket the Redshift path stages its files in, on the private `bench` S3 server.
const RS_BUCKET: &str = "tidemark-bench";
/// The warehouse database the test server runs the Redshift path's SQL in.
const RS_DB: &str = "tidemark_e2e_rs";
/// tidemark's peak RSS target on the Redshift path.
const RS_RSS_TARGET_MB: f64 = 256.0;

/// W1's source on the Redshift path: the target table is `bench_e2e_w1.orders`, as in (a), but
/// in database `RS_DB`, so (a)'s target checksum applies as it is.
const RS_SPEC: SourceSpec<'static> = SourceSpec {
    name: "w1-redshift",
    id: "bench-w1-redshift",
    function: "w1",
    include: "bench.orders",
    batch: "# defaults: max_rows = 100000, max_bytes = \"64MiB\", max_delay = \"500ms\"",
    envs: AWS_ENV,
};

/// The private `bench` S3 server (moto), started if needed.
fn s3_server_url() -> String {
    workload::instance_url("s3-instance.sh", "bench", "http://")
}

/// The test server's binary: `TIDEMARK_BENCH_REDSHIFT_SERVER`, else the example's release build,
/// else its debug build, under the target directory. Exits 1 with how to build it when there is
/// none; warns when it is older than its sources.
fn test_server_bin() -> PathBuf {
    let path = std::env::var_os("TIDEMARK_BENCH_REDSHIFT_SERVER")
        .map(PathBuf::from)
        .or_else(|| {
            let target = Path::new(env!("CARGO_TARGET_TMPDIR")).parent()?;
            ["release", "debug"]
                .iter()
                .map(|profile| target.join(profile).join("examples/redshift-test-server"))
                .find(|path| path.is_file())
        });
    let Some(path) = path.filter(|path| path.is_file()) else {
        eprintln!(
            "pipeline_e2e: the redshift part needs the Redshift Data API test server; build it \
             first with `cargo build --release --example redshift-test-server` (or set \
             TIDEMARK_BENCH_REDSHIFT_SERVER)"
        );
        std::process::exit(1);
    };
    let built = std::fs::metadata(&path).and_then(|m| m.modified()).ok();
    let sources = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/redshift");
    let newest_source = std::fs::read_dir(&sources)
        .into_iter()
        .flatten()
        .filter_map(|entry| entry.ok()?.metadata().ok()?.modified().ok())
        .max();
    if let (Some(built), Some(newest)) = (built, newest_source)
        && newest > built
    {
        println!(
            "pipeline_e2e: WARNING: {} is older than its sources in {}; rebuild it with `cargo build \
             --release --example redshift-test-server`",
            path.display(),
            sources.display()
        );
    }
    path
}

/// The Redshift Data API test server as a child process; stopped (SIGTERM, then SIGKILL after
/// 10 s) when dropped, also when the benchmark panics.
struct TestServer {
    child: std::process::Child,
    /// `http://127.0.0.1:PORT`, as it printed.
    endpoint: String,
    log: PathBuf,
}

impl TestServer {
    /// Starts `bin` on the warehouse server `pg_url` and the S3 server `s3_url`, its output
    /// into `log`; waits (at most 30 s) for its `endpoint=` line.
    fn start(bin: &Path, pg_url: &str, s3_url: &str, log: PathBuf) -> TestServer {
        let file = std::fs::File::create(&log).expect("creating the test server's log");
        let child = Command::new(bin)
            .arg("--postgres-url")
            .arg(pg_url)
            .arg("--s3-endpoint")
            .arg(s3_url)
            .args(["--port", "0"])
            .stdin(std::process::Stdio::null())
            .stdout(file.try_clone().expect("cloning the log file"))
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", bin.display()));
        let mut server = TestServer {
            child,
            endpoint: String::new(),
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let text = std::fs::read_to_string(&server.log).unwrap_or_default();
            if let Some(endpoint) = text.lines().find_map(|l| l.strip_prefix("endpoint=")) {
                server.endpoint = endpoint.trim().to_owned();
                return server;
            }
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!("the test server exited ({status}); its log:\n{text}");
            }
            assert!(
                Instant::now() < deadline,
                "the test server printed no endpoint within 30 s; its log:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Its peak RSS (`VmHWM`) in MB.
    fn peak_rss_mb(&self) -> f64 {
        workload::vm_hwm_kb(Some(self.child.id())).unwrap_or(0) as f64 / 1024.0
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if !matches!(self.child.try_wait(), Ok(None)) {
            return;
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An S3 client of the private S3 server (path-style, its test credentials).
fn s3_client(endpoint: &str) -> aws_sdk_s3::Client {
    use aws_sdk_s3::config::{BehaviorVersion, Builder, Credentials, Region};
    let config = Builder::new()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(AWS_REGION))
        .credentials_provider(Credentials::new("testing", "testing", None, None, "bench"))
        .endpoint_url(endpoint)
        .force_path_style(true)
        .build();
    aws_sdk_s3::Client::from_conf(config)
}

/// A Data API client of the test server, to read how long its statements took.
fn data_api_client(endpoint: &str) -> aws_sdk_redshiftdata::Client {
    use aws_sdk_redshiftdata::config::{BehaviorVersion, Builder, Credentials, Region};
    let config = Builder::new()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(AWS_REGION))
        .credentials_provider(Credentials::new("testing", "testing", None, None, "bench"))
        .endpoint_url(endpoint)
        .build();
    aws_sdk_redshiftdata::Client::from_conf(config)
}

/// Creates the staging bucket unless it is there.
async fn ensure_bucket(s3: &aws_sdk_s3::Client) {
    if let Err(e) = s3.create_bucket().bucket(RS_BUCKET).send().await {
        let exists = e
            .as_service_error()
            .is_some_and(|s| s.is_bucket_already_owned_by_you() || s.is_bucket_already_exists());
        assert!(
            exists,
            "creating bucket {RS_BUCKET}: {}",
            aws_sdk_s3::error::DisplayErrorContext(&e)
        );
    }
}

/// Every object under `prefix` in the staging bucket: key and size.
async fn list_objects(s3: &aws_sdk_s3::Client, prefix: &str) -> Vec<(String, u64)> {
    let mut objects = Vec::new();
    let mut token = None;
    loop {
        let page = s3
            .list_objects_v2()
            .bucket(RS_BUCKET)
            .prefix(prefix)
            .set_continuation_token(token)
            .send()
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "listing s3://{RS_BUCKET}/{prefix}: {}",
                    aws_sdk_s3::error::DisplayErrorContext(&e)
                )
            });
        for object in page.contents() {
            if let Some(key) = object.key() {
                objects.push((key.to_owned(), object.size().unwrap_or(0).max(0) as u64));
            }
        }
        token = page.next_continuation_token().map(str::to_owned);
        if token.is_none() {
            return objects;
        }
    }
}

/// Deletes every object under `prefix` (the S3 server keeps them in memory).
async fn delete_objects(s3: &aws_sdk_s3::Client, prefix: &str) {
    for (key, _) in list_objects(s3, prefix).await {
        s3.delete_object()
            .bucket(RS_BUCKET)
            .key(&key)
            .send()
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "deleting s3://{RS_BUCKET}/{key}: {}",
                    aws_sdk_s3::error::DisplayErrorContext(&e)
                )
            });
    }
}

/// What a run left in S3.
#[derive(Debug, Clone, Copy, Default)]
struct Staged {
    /// `part-*.gz` files and the sum of their sizes.
    parts: u64,
    part_bytes: u64,
    /// Manifests (one per table load attempt).
    manifests: u64,
    /// Anything else.
    other: u64,
}

impl Staged {
    fn of(objects: &[(String, u64)]) -> Staged {
        let mut staged = Staged::default();
        for (key, size) in objects {
            let name = key.rsplit('/').next().unwrap_or(key);
            if name.starts_with("part-") && name.ends_with(".gz") {
                staged.parts += 1;
                staged.part_bytes += size;
            } else if name.contains("manifest") {
                staged.manifests += 1;
            } else {
                staged.other += 1;
            }
        }
        staged
    }

    fn mb(&self) -> f64 {
        self.part_bytes as f64 / 1e6
    }
}

/// One load transaction (BatchExecuteStatement) as the test server timed it.
#[derive(Debug, Clone, Default)]
struct Transaction {
    /// When tidemark submitted it and when it ended, in seconds after tidemark was spawned.
    submitted: f64,
    ended: f64,
    /// From its first statement's start to the end of COMMIT.
    secs: f64,
    /// Its statements by kind: the emulated COPY (S3 reads, gunzip, CSV parsing, Postgres
    /// `COPY FROM STDIN`) and the rows it loaded, DELETE, MERGE, the rest (CREATE, the
    /// progress) and how many; COMMIT is the transaction's time past its statements.
    copy_secs: f64,
    copy_rows: i64,
    delete_secs: f64,
    merge_secs: f64,
    other_secs: f64,
    others: usize,
    commit_secs: f64,
}

/// The statements of one run as the test server timed them (from DescribeStatement).
#[derive(Debug, Clone, Default)]
struct ServerTimes {
    /// Load transactions, in the order they were submitted.
    transactions: Vec<Transaction>,
    /// Single statements (ExecuteStatement: control tables, reads) and their seconds.
    singles: usize,
    single_secs: f64,
    /// Errors of failed statements.
    errors: Vec<String>,
}

impl ServerTimes {
    /// The transactions submitted within the first `secs` after the spawn (the timed run), and
    /// their total time, COPY time and MERGE time.
    fn timed(&self, secs: f64) -> (usize, f64, f64, f64) {
        self.transactions
            .iter()
            .filter(|t| t.submitted < secs)
            .fold((0, 0.0, 0.0, 0.0), |(n, total, copy, merge), t| {
                (
                    n + 1,
                    total + t.secs,
                    copy + t.copy_secs,
                    merge + t.merge_secs,
                )
            })
    }
}

/// The ids of the statements the test server knows (the newest 100; a run issues fewer).
async fn statement_ids(api: &aws_sdk_redshiftdata::Client) -> Vec<String> {
    api.list_statements()
        .max_results(100)
        .send()
        .await
        .unwrap_or_else(|e| {
            panic!(
                "ListStatements: {}",
                aws_sdk_redshiftdata::error::DisplayErrorContext(&e)
            )
        })
        .statements()
        .iter()
        .map(|s| s.id().to_owned())
        .collect()
}

/// The times of the statements not in `before`, relative to `spawned` (tidemark's spawn).
async fn server_times(
    api: &aws_sdk_redshiftdata::Client,
    before: &[String],
    spawned: std::time::SystemTime,
) -> ServerTimes {
    let spawned = spawned
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    let secs = |ns: i64| ns as f64 / 1e9;
    let mut times = ServerTimes::default();
    for id in statement_ids(api).await {
        if before.contains(&id) {
            continue;
        }
        let statement = api
            .describe_statement()
            .id(&id)
            .send()
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "DescribeStatement {id}: {}",
                    aws_sdk_redshiftdata::error::DisplayErrorContext(&e)
                )
            });
        if let Some(error) = statement.error() {
            times.errors.push(error.to_owned());
        }
        let subs = statement.sub_statements();
        if subs.is_empty() {
            times.singles += 1;
            times.single_secs += secs(statement.duration());
            continue;
        }
        let at = |t: Option<&aws_sdk_redshiftdata::primitives::DateTime>| {
            t.map_or(0.0, |t| t.as_secs_f64() - spawned)
        };
        let mut transaction = Transaction {
            submitted: at(statement.created_at()),
            ended: at(statement.updated_at()),
            secs: secs(statement.duration()),
            ..Transaction::default()
        };
        let mut in_statements = 0.0;
        for sub in subs {
            let took = secs(sub.duration());
            in_statements += took;
            let verb = sub
                .query_string()
                .unwrap_or_default()
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_ascii_uppercase();
            match verb.as_str() {
                "COPY" => {
                    transaction.copy_secs += took;
                    transaction.copy_rows += sub.result_rows();
                }
                "DELETE" => transaction.delete_secs += took,
                "MERGE" => transaction.merge_secs += took,
                _ => {
                    transaction.other_secs += took;
                    transaction.others += 1;
                }
            }
        }
        transaction.commit_secs = (transaction.secs - in_statements).max(0.0);
        times.transactions.push(transaction);
    }
    times
        .transactions
        .sort_by(|a, b| a.submitted.total_cmp(&b.submitted));
    times
}

/// One run on the Redshift path.
#[derive(Debug, Clone)]
struct RsRun {
    run: Run,
    staged: Staged,
    server: ServerTimes,
}

/// What the Redshift path's runs share: the S3 server, the test server and clients of both.
struct RsPath {
    s3_url: String,
    s3: aws_sdk_s3::Client,
    server: TestServer,
    api: aws_sdk_redshiftdata::Client,
    /// The group's folder in the bucket (`s3_prefix` + group name).
    prefix: String,
}

impl RsPath {
    /// The `[warehouse]` lines of the Redshift path.
    fn warehouse(&self) -> String {
        format!(
            "kind = \"redshift\"\ncluster_id = \"bench\"\ndatabase = {RS_DB:?}\n\
             db_user = \"tidemark\"\ns3_bucket = {RS_BUCKET:?}\n\
             iam_role = \"arn:aws:iam::000000000000:role/bench-copy\"\nregion = {AWS_REGION:?}\n\
             s3_endpoint = {:?}\ns3_path_style = true\ndata_api_endpoint = {:?}\n\
             keep_files = \"1h\"                  # the staged files stay, to be counted\n",
            self.s3_url, self.server.endpoint
        )
    }
}

/// (r): W1 replayed by tidemark through the Redshift path, and by (a)'s tidemark side straight
/// into Postgres, alternately.
async fn redshift_throughput(env: &Env) {
    let w1 = W1::from_env();
    let range = ensure_w1(env.mysql_url(), &w1).await;
    println!();
    println!(
        "(r) tidemark run through the Redshift path (Data API test server on Postgres, staged \
         files in S3) vs (a) tidemark run into Postgres, on {w1}"
    );
    println!("  {}", range.describe());
    let workload = Workload {
        name: "W1",
        changes: w1.changes(),
        change_kind: "row events",
        final_rows: w1.final_rows(),
        reference: "",
        tidemark_db: TIDEMARK_DB,
        schema: "bench_e2e_w1",
    };
    let started = Instant::now();
    let source = source_contents(env.mysql_url()).await;
    check_source(&workload, "bench.orders", &source, started);

    let s3_url = env
        .s3_url
        .clone()
        .expect("the S3 server of the redshift part");
    let bin = env
        .test_server
        .clone()
        .expect("the test server of the redshift part");
    let server = TestServer::start(
        &bin,
        &env.pg_url,
        &s3_url,
        env.tidemark.work.join("redshift-test-server.log"),
    );
    let path = RsPath {
        s3: s3_client(&s3_url),
        api: data_api_client(&server.endpoint),
        prefix: format!("tidemark/bench-{}/", RS_SPEC.name),
        server,
        s3_url,
    };
    ensure_bucket(&path.s3).await;
    // Files an interrupted earlier run left.
    delete_objects(&path.s3, &path.prefix).await;
    println!(
        "  test server {} at {} (log {}), on {}; staging s3://{RS_BUCKET}/{} on {}",
        bin.display(),
        path.server.endpoint,
        path.server.log.display(),
        env.pg_url,
        path.prefix,
        path.s3_url
    );

    let mut redshift = Vec::new();
    let mut direct = Vec::new();
    for rep in 1..=env.reps {
        let r = tidemark_w1_redshift(env, &range, &source, &path).await;
        print_redshift_run(env, &workload, rep, &r);
        redshift.push(r);
        let d = tidemark_w1(env, &range, &source).await;
        println!(
            "  run {rep}/{}: postgres  {:>8} changes -> {:>7} rows {:>7.2} s {:>9.0} changes/s  \
             peak RSS {:.1} MB  (target equal to the source)",
            env.reps,
            workload.changes,
            workload.final_rows,
            d.secs,
            workload.changes as f64 / d.secs,
            d.rss_mb
        );
        direct.push(d);
    }
    let server_rss = path.server.peak_rss_mb();
    drop(path);
    print_redshift_result(env, &workload, &redshift, &direct, server_rss);
}

/// Side (r): tidemark replays W1 through the Redshift path into a fresh warehouse database;
/// the staged files are counted, checked against the target, then deleted.
async fn tidemark_w1_redshift(
    env: &Env,
    range: &W1Range,
    source: &Contents,
    path: &RsPath,
) -> RsRun {
    let client = env.fresh_database(RS_DB).await;
    delete_objects(&path.s3, &path.prefix).await;
    let config = RS_SPEC.write_with(env, &path.warehouse(), RS_SPEC.name, &mysql_source(env));
    setup_run(env, &client, &config, &RS_SPEC).await;
    let start = ResumePoint::Binlog {
        file: range.start.file.clone(),
        pos: range.start.pos,
        gtid: None,
    };
    move_checkpoint(&client, &RS_SPEC, &start).await;

    let before = statement_ids(&path.api).await;
    let spawned = std::time::SystemTime::now();
    let end = BinlogPos::key(&range.end.file, range.end.pos);
    let run = timed_replay(
        env,
        &RS_SPEC,
        &config,
        &range.end,
        async || checkpoint(&client, RS_SPEC.id).await,
        |at: &BinlogPos| BinlogPos::key(&at.file, at.pos) >= end,
    )
    .await;
    let server = server_times(&path.api, &before, spawned).await;
    let staged = Staged::of(&list_objects(&path.s3, &path.prefix).await);
    let target = target_contents(&client).await;
    assert_eq!(
        &target, source,
        "after W1 through the Redshift path, {RS_DB}.bench_e2e_w1.orders differs from \
         bench.orders (rows, checksum)"
    );
    delete_objects(&path.s3, &path.prefix).await;
    RsRun {
        run,
        staged,
        server,
    }
}

/// Prints one Redshift-path run: its figures, then its statements as the test server timed them.
fn print_redshift_run(env: &Env, workload: &Workload<'_>, rep: usize, r: &RsRun) {
    let secs = r.run.secs;
    println!(
        "  run {rep}/{}: redshift  {:>8} changes -> {:>7} rows {:>7.2} s {:>9.0} changes/s  \
         {} part files {:.2} files/s  {:.1} MB gzip {:.2} MB/s  peak RSS {:.1} MB  (target \
         equal to the source)",
        env.reps,
        workload.changes,
        workload.final_rows,
        secs,
        workload.changes as f64 / secs,
        r.staged.parts,
        r.staged.parts as f64 / secs,
        r.staged.mb(),
        r.staged.mb() / secs,
        r.run.rss_mb
    );
    for t in &r.server.transactions {
        println!(
            "      load transaction submitted at {:.2} s, ended at {:.2} s, {:.2} s: COPY \
             (emulated) {:.2} s for {} rows, DELETE {:.2} s, MERGE {:.2} s, {} other statements \
             {:.2} s, COMMIT {:.2} s{}",
            t.submitted,
            t.ended,
            t.secs,
            t.copy_secs,
            t.copy_rows,
            t.delete_secs,
            t.merge_secs,
            t.others,
            t.other_secs,
            t.commit_secs,
            if t.submitted >= secs {
                " (after the checkpoint reached W1's end: at the stop)"
            } else {
                ""
            }
        );
    }
    println!(
        "      also {} single statements {:.2} s; staged {} manifest(s), {} other object(s)",
        r.server.singles, r.server.single_secs, r.staged.manifests, r.staged.other
    );
    for error in &r.server.errors {
        println!("      WARNING: a statement failed: {error}");
    }
}

/// Prints the best run of each path, the ratio, the RSS verdict and what bounds the Redshift
/// path here.
fn print_redshift_result(
    env: &Env,
    workload: &Workload<'_>,
    redshift: &[RsRun],
    direct: &[Run],
    server_rss_mb: f64,
) {
    let r = redshift
        .iter()
        .min_by(|a, b| a.run.secs.total_cmp(&b.run.secs))
        .expect("at least one run");
    let d = direct
        .iter()
        .min_by(|a, b| a.secs.total_cmp(&b.secs))
        .expect("at least one run");
    let rs_peak = redshift.iter().map(|r| r.run.rss_mb).fold(0.0, f64::max);
    let pg_peak = direct.iter().map(|r| r.rss_mb).fold(0.0, f64::max);
    let changes = workload.changes as f64;
    let secs = r.run.secs;
    println!();
    println!(
        "result (best of {} per path; peak RSS is the max over each path's runs):",
        env.reps
    );
    println!(
        "  redshift path: {secs:>7.2} s  {:>9.0} source row changes/s  {:>8.0} final rows/s  \
         {} part files {:.2} files/s  {:.1} MB gzip {:.2} MB/s",
        changes / secs,
        workload.final_rows as f64 / secs,
        r.staged.parts,
        r.staged.parts as f64 / secs,
        r.staged.mb(),
        r.staged.mb() / secs,
    );
    println!(
        "  postgres (a):  {:>7.2} s  {:>9.0} source row changes/s  {:>8.0} final rows/s",
        d.secs,
        changes / d.secs,
        workload.final_rows as f64 / d.secs,
    );
    println!(
        "  ratio redshift path / postgres (source row changes/s): {:.2}  (informational)",
        d.secs / secs
    );
    println!(
        "  tidemark peak RSS: redshift path {rs_peak:.1} MB  (target <= {RS_RSS_TARGET_MB:.0} \
         MB) {}; postgres {pg_peak:.1} MB; the test server's peak RSS {server_rss_mb:.1} MB",
        verdict(rs_peak <= RS_RSS_TARGET_MB)
    );
    let (transactions, in_transactions, copy, merge) = r.server.timed(secs);
    let first = r.server.transactions.first().map_or(0.0, |t| t.submitted);
    println!(
        "  bound: through the test server the load is the emulated COPY on Postgres, not \
         Redshift's: in the best run {transactions} load transaction(s) took {in_transactions:.2} \
         s of {secs:.2} s ({:.0}%), the emulated COPY alone {copy:.2} s ({:.0}%: the test server \
         reads every file from S3, gunzips and parses it, then runs one Postgres COPY FROM \
         STDIN), MERGE {merge:.2} s; before the first one tidemark read W1 and encoded, \
         compressed and staged the batch for {first:.2} s. The figures say what tidemark \
         sustains against this server, not against Redshift.",
        100.0 * in_transactions / secs,
        100.0 * copy / secs,
    );
    println!(
        "  definitions: time = spawn of `tidemark run` (checkpoint at W1's start) until its \
         checkpoint reaches W1's end; source row changes = {} row events of W1; part files = \
         the `part-*.gz` objects the run staged (kept with keep_files = \"1h\", listed after the \
         run), MB = their compressed bytes / 10^6; files/s and MB/s are per wall second;",
        workload.changes
    );
    println!("    the target (rows, checksum) equals the source's after every run of either path.");
}
