//! Snapshot load benchmark (issue 13's second performance target, "into the Postgres
//! warehouse"): `tidemark run` copying one table of W1's shape into an empty Postgres warehouse
//! with `snapshot = "initial_only"`, against the hand-written pipeline that does the same with
//! the servers' own clients.
//!
//! For each source kind (`TIDEMARK_BENCH_KINDS`: `mysql`, `postgres` or both, the default), on
//! the table `bench.snap` of `snapshot_read` (`TIDEMARK_BENCH_SNAPSHOT_ROWS` rows, default
//! 5,000,000; made once and reused):
//!
//! - tidemark: a fresh warehouse database `tidemark_snapload`, a config with one source (the
//!   MariaDB table, or the Postgres one) including only `bench.snap`, `snapshot =
//!   "initial_only"`; `tidemark run --config F` (the release binary) as a child process, timed
//!   **from spawning it until its row in `tidemark.progress` exists with `snapshot IS NULL`**
//!   (the copy is done; polled every 50 ms). Then its peak RSS (`VmHWM`) and SIGTERM (it must
//!   exit 0); untimed, the target must hold every row.
//! - reference, right after: a fresh database `tidemark_snapload_ref` with an empty table of
//!   the source columns as tidemark created them and the same primary key, then, timed **from
//!   spawning the reader until the loading psql exits**: MariaDB `mariadb --quick --batch
//!   --skip-column-names -e "SELECT ... FROM bench.snap"` (Postgres: `psql -c "\copy (SELECT *
//!   FROM bench.snap) TO STDOUT"`) piped into `psql -c "\copy bench_ref.snap FROM pstdin"`.
//!   Untimed, the target must hold every row.
//!
//! Targets: tidemark's rows/s at least 0.8 of the reference's, peak RSS at most 256 MB. Beside
//! them, tidemark's rows/s against the 8-node EMR full load it replaces (200M rows in 30
//! minutes: 111k rows/s). `TIDEMARK_BENCH_REPS` (default 1) repeats the pair, alternating.
//! `TIDEMARK_BENCH_PARALLELISM` and `TIDEMARK_BENCH_CHUNK_ROWS` set the source's
//! `snapshot_parallelism` and `snapshot_chunk_rows` (default: tidemark's). See `bench/README.md`.

use std::ffi::OsStr;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use tokio_postgres::Client;

#[allow(dead_code)] // shared by several benchmarks; this one uses part of it
mod tidemark_run;
#[allow(dead_code)] // shared by several benchmarks; this one uses part of it
mod workload;
#[allow(dead_code)] // shared by several benchmarks; this one uses part of it
mod workload_pg;

use tidemark_run::{Bin, Tidemark, fresh_database, table_shape, verdict};
use workload::{env_number, host_port, source_revision};
use workload_pg::{db_url, pg_connect, pg_error};

/// tidemark's rows/s must be at least this multiple of the reference's.
const RATIO_TARGET: f64 = 0.8;
/// tidemark's peak RSS must stay at or below this.
const RSS_TARGET_MB: f64 = 256.0;
/// The 8-node EMR full load tidemark replaces: 200M rows in 30 minutes.
const EMR_ROWS_PER_SEC: f64 = 200_000_000.0 / 1800.0;
/// The warehouse database tidemark loads into.
const TIDEMARK_DB: &str = "tidemark_snapload";
/// The warehouse database the reference loads into.
const REFERENCE_DB: &str = "tidemark_snapload_ref";
/// The reference's target table, in [`REFERENCE_DB`].
const REFERENCE_TABLE: &str = "bench_ref.snap";
/// Stop waiting when the copy's progress has not moved for this long.
const STALL: Duration = Duration::from_secs(300);

fn main() {
    // `cargo bench` passes `--bench` (and maybe a filter); there is nothing to select.
    let settings = Settings::from_env();
    let runtime = tokio::runtime::Runtime::new().expect("starting the tokio runtime");
    let kinds = std::env::var("TIDEMARK_BENCH_KINDS").unwrap_or_else(|_| "mysql,postgres".into());
    for (i, kind) in kinds.split(',').map(str::trim).enumerate() {
        if i > 0 {
            println!();
        }
        let source = match kind {
            "mysql" => Source::mysql(),
            "postgres" => Source::postgres(),
            other => panic!("TIDEMARK_BENCH_KINDS: unknown kind {other:?} (mysql, postgres)"),
        };
        runtime.block_on(compare(&settings, &source));
    }
}

/// Settings from the environment, and the warehouse server.
struct Settings {
    tidemark: Bin,
    /// The warehouse's Postgres server (`postgres://.../postgres`).
    warehouse: String,
    rows: u64,
    reps: usize,
    /// `snapshot_parallelism`, when set (else tidemark's default).
    parallelism: Option<u64>,
    /// `snapshot_chunk_rows`, when set (else tidemark's default).
    chunk_rows: Option<u64>,
}

impl Settings {
    fn from_env() -> Settings {
        let optional = |name: &str| std::env::var_os(name).map(|_| env_number(name, 1));
        Settings {
            tidemark: Bin::from_env("snapshot_load"),
            warehouse: tidemark_run::warehouse_server_url(),
            rows: workload::snap_rows_from_env(),
            reps: env_number("TIDEMARK_BENCH_REPS", 1) as usize,
            parallelism: optional("TIDEMARK_BENCH_PARALLELISM"),
            chunk_rows: optional("TIDEMARK_BENCH_CHUNK_ROWS"),
        }
    }

    /// The `[[sources]]` lines the settings add, and how the header describes them.
    fn snapshot_keys(&self) -> (String, String) {
        let (mut lines, mut described) = (String::new(), Vec::new());
        match self.parallelism {
            Some(n) => {
                lines.push_str(&format!("snapshot_parallelism = {n}\n"));
                described.push(format!("snapshot_parallelism = {n}"));
            }
            None => described.push(format!(
                "snapshot_parallelism default ({} on {} cores)",
                default_parallelism(),
                cores()
            )),
        }
        match self.chunk_rows {
            Some(n) => {
                lines.push_str(&format!("snapshot_chunk_rows = {n}\n"));
                described.push(format!("snapshot_chunk_rows = {n}"));
            }
            None => described.push("snapshot_chunk_rows default (50000)".into()),
        }
        (lines, described.join(", "))
    }
}

/// Cores tidemark sees.
fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// tidemark's default `snapshot_parallelism`: one reader per core, at most 4.
fn default_parallelism() -> usize {
    cores().clamp(1, 4)
}

/// One source kind: its server, tidemark's source lines and the reference's reader.
struct Source {
    /// `mysql` or `postgres`: the source's `kind` and `function` (so the target schema is
    /// `bench_snapload_{kind}`).
    kind: &'static str,
    /// How the output names the server.
    server_name: &'static str,
    /// The URL tidemark reads (Postgres: of the table's database).
    url: String,
    /// How the output names the reference.
    reference: &'static str,
}

impl Source {
    /// The MariaDB table on the private `bench` instance (made if needed).
    fn mysql() -> Source {
        Source {
            kind: "mysql",
            server_name: "MariaDB",
            url: workload::server_url(),
            reference: "mariadb --quick --batch | psql \\copy FROM STDIN",
        }
    }

    /// The Postgres table on the private `bench-source` instance (made if needed).
    fn postgres() -> Source {
        let server = workload_pg::pg_source_server_url();
        Source {
            kind: "postgres",
            server_name: "Postgres",
            url: db_url(&server, workload_pg::SNAP_DB),
            reference: "psql \\copy TO STDOUT | psql \\copy FROM STDIN",
        }
    }

    /// Makes or finds `bench.snap` with `rows` rows (which also reads it into the page cache);
    /// says which.
    async fn ensure_table(&self, rows: u64) -> String {
        match self.kind {
            "mysql" => workload::ensure_snap(&self.url, rows).await,
            _ => {
                let server = db_url(&self.url, "postgres");
                workload_pg::ensure_pg_snap(&server, rows).await
            }
        }
    }

    /// The source's id in tidemark's config and progress.
    fn source_id(&self) -> String {
        format!("bench-snapload-{}", self.kind)
    }

    /// The warehouse table tidemark loads `bench.snap` into.
    fn target(&self) -> (String, &'static str) {
        (format!("bench_snapload_{}", self.kind), "snap")
    }

    /// Writes tidemark's config: the one source, `snapshot = "initial_only"`, into `wh_url`.
    fn write_config(&self, settings: &Settings, wh_url: &str) -> PathBuf {
        let work = &settings.tidemark.work;
        let path = work.join(format!("{}.toml", self.kind));
        let (snapshot_keys, _) = settings.snapshot_keys();
        let text = format!(
            "[group]\nname = \"bench-snapload-{kind}\"\nstate_dir = {state:?}\n\n\
             [warehouse]\nkind = \"postgres\"\nurl = {wh_url:?}\n\n\
             [[sources]]\nid = {id:?}\nkind = {kind:?}\nurl = {url:?}\n\
             tenant = \"bench\"\nregion = \"snapload\"\nfunction = {kind:?}\n\
             include = [\"bench.snap\"]\nsnapshot = \"initial_only\"\n{snapshot_keys}",
            kind = self.kind,
            state = work.join("state").join(self.kind),
            id = self.source_id(),
            url = self.url,
        );
        std::fs::write(&path, text).expect("writing a tidemark config");
        path
    }

    /// The reference's reader: writes every row of `bench.snap` to its stdout in COPY's text
    /// format (MariaDB: NULL as `NULL`, the load says so), and what the load's COPY options
    /// are.
    fn reference_reader(&self, columns: &[(String, String)]) -> (Command, &'static str) {
        match self.kind {
            "mysql" => {
                // Batch mode escapes tab, newline, backslash and NUL as `\t`, `\n`, `\\`, `\0`,
                // which COPY's text format reads back (but `\0`: Postgres text holds no NUL
                // anyway); `--raw` would not escape them. NULL is printed as `NULL`, hence
                // COPY's NULL 'NULL' (the table has no NULLs, nor the text 'NULL'). Two columns
                // need more than `SELECT *`: BIT arrives as raw bytes, so it is written as
                // binary digits; TIMESTAMP is printed in the session's time zone, so the
                // session is UTC, as is the loading psql's (PGTZ).
                let select: Vec<String> = columns
                    .iter()
                    .map(|(name, ty)| {
                        if ty.starts_with("bit") {
                            format!("LPAD(BIN({name}), 8, '0')")
                        } else {
                            name.clone()
                        }
                    })
                    .collect();
                let (host, port) = host_port(&self.url);
                let mut cmd = Command::new("mariadb");
                cmd.args(["--no-defaults", "--quick", "--batch", "--skip-column-names"])
                    .arg(format!("--host={host}"))
                    .arg(format!("--port={port}"))
                    .args(["--user=root", "--default-character-set=utf8mb4", "-e"])
                    .arg(format!(
                        "SET time_zone = '+00:00'; SELECT {} FROM bench.snap",
                        select.join(", ")
                    ));
                (cmd, "FORMAT text, NULL 'NULL'")
            }
            _ => {
                let mut cmd = Command::new(workload_pg::psql());
                cmd.args(["-X", "-q", "-d", &self.url, "-c"])
                    .arg("\\copy (SELECT * FROM bench.snap) TO STDOUT")
                    .env("PGTZ", "UTC");
                (cmd, "FORMAT text")
            }
        }
    }
}

/// One timed side.
#[derive(Debug, Clone, Copy)]
struct Run {
    secs: f64,
    rows: u64,
    /// tidemark's peak RSS (0 for the reference).
    rss_mb: f64,
}

impl Run {
    fn rate(&self) -> f64 {
        self.rows as f64 / self.secs
    }
}

/// Times tidemark and the reference alternately on one source kind and prints the figures.
async fn compare(settings: &Settings, source: &Source) {
    let rows = settings.rows;
    let made = source.ensure_table(rows).await;
    let (_, keys) = settings.snapshot_keys();
    println!(
        "snapshot_load: bench.snap ({rows} rows of W1's shape) from {} {} into the Postgres warehouse {}, tidemark {} ({})",
        source.server_name,
        source.url,
        settings.warehouse,
        source_revision(),
        settings.tidemark.path.display()
    );
    println!("  {keys}; bench.snap {made}");
    let reps = settings.reps;
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    let mut columns = Vec::new();
    for rep in 1..=reps {
        let t = tidemark_side(settings, source).await;
        println!(
            "  run {rep}/{reps}: tidemark  {:>9} rows {:>7.2} s {:>9.0} rows/s  peak RSS {:.1} MB",
            t.rows,
            t.secs,
            t.rate(),
            t.rss_mb
        );
        if rep == 1 {
            let (schema, table) = source.target();
            let client = pg_connect(&db_url(&settings.warehouse, TIDEMARK_DB)).await;
            let shape = table_shape(&client, &schema, table).await;
            let listed: Vec<String> = shape.iter().map(|(n, t)| format!("{n} {t}")).collect();
            println!(
                "  {schema}.{table}, as tidemark created it: {}",
                listed.join(", ")
            );
            columns = shape
                .into_iter()
                .filter(|(n, _)| !n.starts_with("_tidemark_"))
                .collect();
        }
        let r = reference_side(settings, source, &columns).await;
        println!(
            "  run {rep}/{reps}: reference {:>9} rows {:>7.2} s {:>9.0} rows/s  ({})",
            r.rows,
            r.secs,
            r.rate(),
            source.reference
        );
        if rep == 1 {
            same_contents(settings, source, &columns).await;
        }
        if reps > 1 {
            println!(
                "  run {rep}/{reps}: ratio tidemark/reference {:.2}x",
                t.rate() / r.rate()
            );
        }
        ours.push(t);
        theirs.push(r);
    }
    for db in [TIDEMARK_DB, REFERENCE_DB] {
        tidemark_run::drop_database(&settings.warehouse, db).await;
    }
    print_result(settings, &ours, &theirs, source);
}

/// Prints the best run of each side (the one run with `TIDEMARK_BENCH_REPS=1`) against the
/// targets and the EMR load.
fn print_result(settings: &Settings, ours: &[Run], theirs: &[Run], source: &Source) {
    let best = |runs: &[Run]| {
        *runs
            .iter()
            .min_by(|a, b| a.secs.total_cmp(&b.secs))
            .expect("at least one run")
    };
    let (t, r) = (best(ours), best(theirs));
    let peak_rss = ours.iter().map(|r| r.rss_mb).fold(0.0, f64::max);
    let ratio = t.rate() / r.rate();
    println!();
    if settings.reps == 1 {
        println!("result (one run per side, in the same benchmark run):");
    } else {
        println!(
            "result (best of {} per side; peak RSS is the max over tidemark runs):",
            settings.reps
        );
    }
    println!(
        "  tidemark:  {:>9} rows {:>7.2} s {:>9.0} rows/s",
        t.rows,
        t.secs,
        t.rate()
    );
    println!(
        "  reference: {:>9} rows {:>7.2} s {:>9.0} rows/s  ({})",
        r.rows,
        r.secs,
        r.rate(),
        source.reference
    );
    println!(
        "  ratio tidemark/reference: {ratio:.2}x  (target >= {RATIO_TARGET:.1}x) {}",
        verdict(ratio >= RATIO_TARGET)
    );
    println!(
        "  tidemark peak RSS: {peak_rss:.1} MB  (target <= {RSS_TARGET_MB:.0} MB) {}",
        verdict(peak_rss <= RSS_TARGET_MB)
    );
    println!(
        "  tidemark beside the 8-node EMR full load it replaces (200M rows in 30 min = {EMR_ROWS_PER_SEC:.0} rows/s): {:.0} rows/s, {:.2}x",
        t.rate(),
        t.rate() / EMR_ROWS_PER_SEC
    );
}

/// A CHECKPOINT on the warehouse, so neither side pays for the other's dirty pages.
async fn checkpoint(client: &Client) {
    client
        .batch_execute("CHECKPOINT")
        .await
        .unwrap_or_else(|e| panic!("CHECKPOINT: {}", pg_error(&e)));
}

/// Rows of `table` in the database of `client`.
async fn count(client: &Client, table: &str) -> u64 {
    client
        .query_one(&format!("SELECT count(*) FROM {table}"), &[])
        .await
        .unwrap_or_else(|e| panic!("counting {table}: {}", pg_error(&e)))
        .get::<_, i64>(0) as u64
}

/// Rows and a checksum of `columns` of `table` in the warehouse database `db`: per row the
/// hash of its text form (`ROW(...)::text`), summed.
async fn contents(
    settings: &Settings,
    db: &str,
    table: &str,
    columns: &[(String, String)],
) -> (i64, i64) {
    let names: Vec<&str> = columns.iter().map(|(n, _)| n.as_str()).collect();
    let client = pg_connect(&db_url(&settings.warehouse, db)).await;
    let row = client
        .query_one(
            &format!(
                "SELECT count(*), coalesce(sum(hashtext(ROW({})::text)), 0)::bigint FROM {table}",
                names.join(", ")
            ),
            &[],
        )
        .await
        .unwrap_or_else(|e| panic!("checksumming {table}: {}", pg_error(&e)));
    (row.get(0), row.get(1))
}

/// Untimed, after the first run of each side: tidemark's target and the reference's hold the
/// same values (the reference's text formats say what tidemark's do).
async fn same_contents(settings: &Settings, source: &Source, columns: &[(String, String)]) {
    let started = Instant::now();
    let (schema, table) = source.target();
    let ours = contents(settings, TIDEMARK_DB, &format!("{schema}.{table}"), columns).await;
    let theirs = contents(settings, REFERENCE_DB, REFERENCE_TABLE, columns).await;
    println!(
        "  check: both targets hold {} rows, checksum {} and {} ({}; {:.1} s, untimed)",
        ours.0,
        ours.1,
        theirs.1,
        if ours == theirs {
            "equal"
        } else {
            "WARNING: DIFFERENT"
        },
        started.elapsed().as_secs_f64()
    );
}

/// The source's snapshot state in `tidemark.progress`: `None` while there is no row (or no
/// control table yet), `Some(None)` once the copy finished (the column is NULL), else
/// `Some(Some(state as text))`.
async fn snapshot_state(client: &Client, source_id: &str) -> Option<Option<String>> {
    client
        .query_opt(
            "SELECT snapshot::text FROM tidemark.progress WHERE source_id = $1",
            &[&source_id],
        )
        .await
        .ok()?
        .map(|row| row.get(0))
}

/// tidemark's side: `tidemark run` copies `bench.snap` into a fresh warehouse database, timed
/// until its progress says the snapshot finished; then its peak RSS, SIGTERM, and the count.
async fn tidemark_side(settings: &Settings, source: &Source) -> Run {
    let client = fresh_database(&settings.warehouse, TIDEMARK_DB).await;
    let config = source.write_config(settings, &db_url(&settings.warehouse, TIDEMARK_DB));
    let source_id = source.source_id();
    checkpoint(&client).await;
    let mut tidemark = Tidemark::start(&settings.tidemark, &config, source.kind);
    let mut last: (Instant, Option<Option<String>>) = (Instant::now(), None);
    let secs = loop {
        let state = snapshot_state(&client, &source_id).await;
        if let Some(None) = state {
            break tidemark.started.elapsed().as_secs_f64();
        }
        if state != last.1 {
            last = (Instant::now(), state);
        }
        tidemark.assert_alive();
        assert!(
            last.0.elapsed() < STALL,
            "tidemark's snapshot progress has not moved for {} s; log {}:\n{}",
            STALL.as_secs(),
            tidemark.log().display(),
            tidemark.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let rss_mb = tidemark.peak_rss_mb();
    tidemark.stop();
    let (schema, table) = source.target();
    let rows = count(&client, &format!("{schema}.{table}")).await;
    assert_eq!(
        rows, settings.rows,
        "tidemark's target {schema}.{table} has {rows} rows, bench.snap {}",
        settings.rows
    );
    Run { secs, rows, rss_mb }
}

/// The reference: an empty table of `columns` (primary key `id`) in a fresh database, loaded by
/// the kind's reader piped into `psql \copy ... FROM STDIN`; then the count.
async fn reference_side(settings: &Settings, source: &Source, columns: &[(String, String)]) -> Run {
    let client = fresh_database(&settings.warehouse, REFERENCE_DB).await;
    let listed: Vec<String> = columns.iter().map(|(n, t)| format!("{n} {t}")).collect();
    client
        .batch_execute(&format!(
            "CREATE SCHEMA bench_ref; CREATE TABLE {REFERENCE_TABLE} ({}, PRIMARY KEY (id))",
            listed.join(", ")
        ))
        .await
        .unwrap_or_else(|e| panic!("creating the reference table: {}", pg_error(&e)));
    checkpoint(&client).await;
    let (reader, copy_options) = source.reference_reader(columns);
    let url = db_url(&settings.warehouse, REFERENCE_DB);
    let copy = format!("\\copy {REFERENCE_TABLE} FROM pstdin WITH ({copy_options})");
    let secs = tidemark_run::timed_pipe(
        reader,
        source.reference,
        &[
            OsStr::new("-v"),
            OsStr::new("ON_ERROR_STOP=1"),
            OsStr::new("-d"),
            OsStr::new(&url),
            OsStr::new("-c"),
            OsStr::new(&copy),
        ],
        &[("PGTZ", "UTC")],
    );
    let rows = count(&client, REFERENCE_TABLE).await;
    assert_eq!(
        rows, settings.rows,
        "the reference's {REFERENCE_TABLE} has {rows} rows, bench.snap {}",
        settings.rows
    );
    Run {
        secs,
        rows,
        rss_mb: 0.0,
    }
}
