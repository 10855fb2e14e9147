//! A fleet in one process: (a) a thousand idle tenant sources from one inventory (start-up
//! time, RSS, CPU, warehouse connections against the pool size), and (b) fifty tenants each
//! written at 200 changes/s (aggregate rate, p99 commit-to-visible per tenant). Figures and
//! targets are in bench/README.md.
//!
//! Every tenant is a database of the private `bench` MariaDB. One server for all tenants makes
//! each source read every tenant's binlog events (in production each tenant has a server of
//! its own): the load is harsher than a real fleet's.

#[allow(dead_code)] // shared by several benchmarks; this one uses part of it
mod tidemark_run;
#[allow(dead_code)] // shared by several benchmarks; this one uses part of it
mod workload;
#[allow(dead_code)] // shared by several benchmarks; this one uses part of it
mod workload_pg;

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;
use tidemark_run::{Bin, Tidemark, fresh_database, warehouse_server_url};
use workload::{connect, env_number, host_port, server_url};
use workload_pg::{db_url, pg_connect};

/// The inventory's credentials: the bench MariaDB's root has no password.
const CREDENTIALS: [(&str, &str); 1] = [("FLEET_BENCH_CREDENTIALS", "root:")];

/// The warehouse pool's size (the default of `[warehouse] max_connections`).
const POOL: i64 = 16;

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("starting the tokio runtime");
    runtime.block_on(run());
}

async fn run() {
    let bin = Bin::from_env("fleet");
    let idle_sources = env_number("TIDEMARK_BENCH_FLEET_SOURCES", 1000) as usize;
    let busy_sources = env_number("TIDEMARK_BENCH_FLEET_BUSY", 50) as usize;
    let rate = env_number("TIDEMARK_BENCH_FLEET_RATE", 200);
    let seconds = env_number("TIDEMARK_BENCH_FLEET_SECONDS", 30);
    let mysql = server_url();
    let warehouse = warehouse_server_url();
    println!(
        "fleet: {} ({}), MariaDB {mysql}, warehouse {warehouse}",
        bin.path.display(),
        workload::source_revision()
    );
    ensure_tenants(&mysql, idle_sources.max(busy_sources)).await;

    // (a) Idle.
    let wh = fresh_database(&warehouse, "fleet_bench").await;
    let config = write_config(&bin, "idle", &mysql, &warehouse, idle_sources);
    let (most, monitor) = watch_connections(&warehouse);
    let mut tm = Tidemark::start_with_env(&bin, &config, "idle", &CREDENTIALS);
    let startup = wait_started(&mut tm, &wh, idle_sources).await;
    // Settle (the start-up's allocations and the first heartbeats), then measure a quiet window.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let cpu_before = cpu_seconds(tm.pid());
    let window = Instant::now();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let cpu_share = (cpu_seconds(tm.pid()) - cpu_before) / window.elapsed().as_secs_f64();
    let rss = tm.rss_mb();
    let peak = tm.peak_rss_mb();
    let connections = most.load(Ordering::Relaxed);
    monitor.abort();
    tm.stop();
    println!(
        "(a) {idle_sources} idle sources: all started in {:.1} s (target <= 60 s: {}); RSS {rss:.0} MB, peak {peak:.0} MB (target <= 300 MB: {}); CPU {:.1}% of one core over {seconds} s idle (target <= 5%: {}); at most {connections} warehouse connections (pool {POOL}: {})",
        startup.as_secs_f64(),
        tidemark_run::verdict(startup <= Duration::from_secs(60)),
        tidemark_run::verdict(peak <= 300.0),
        cpu_share * 100.0,
        tidemark_run::verdict(cpu_share <= 0.05),
        tidemark_run::verdict(connections <= POOL),
    );

    // (b) Busy: the first `busy_sources` tenants, each written at `rate` rows/s.
    let wh = fresh_database(&warehouse, "fleet_bench").await;
    let config = write_config(&bin, "busy", &mysql, &warehouse, busy_sources);
    let mut tm = Tidemark::start_with_env(&bin, &config, "busy", &CREDENTIALS);
    wait_started(&mut tm, &wh, busy_sources).await;
    let writers: Vec<_> = (0..busy_sources)
        .map(|i| tokio::spawn(write_at(mysql.clone(), tenant_db(i), rate, seconds)))
        .collect();
    let mut written = 0;
    for writer in writers {
        written += writer.await.expect("a writer failed");
    }
    // Wait for the last rows, then read every row's commit-to-visible from the warehouse.
    let loaded = Instant::now();
    loop {
        tm.assert_alive();
        let rows = total_rows(&wh, busy_sources).await;
        if rows >= written {
            break;
        }
        assert!(
            loaded.elapsed() < Duration::from_secs(300),
            "{rows} of {written} rows loaded after 5 minutes"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut worst_p99: f64 = 0.0;
    let mut all = Vec::new();
    for i in 0..busy_sources {
        let delays = visible_delays(&wh, i).await;
        worst_p99 = worst_p99.max(percentile(&delays, 0.99));
        all.extend(delays);
    }
    tm.stop();
    println!(
        "(b) {busy_sources} sources x {rate} changes/s for {seconds} s: {written} rows, {:.0} rows/s offered; commit-to-visible p50 {:.2} s, p99 {:.2} s over all rows, worst per-source p99 {worst_p99:.2} s (target <= 2 s: {})",
        written as f64 / seconds as f64,
        percentile(&all, 0.50),
        percentile(&all, 0.99),
        tidemark_run::verdict(worst_p99 <= 2.0),
    );
}

/// Waits until `sources` sources have copied their tables and stream (a progress record
/// without a snapshot in it); returns how long that took since `tm` started.
async fn wait_started(tm: &mut Tidemark, wh: &tokio_postgres::Client, sources: usize) -> Duration {
    loop {
        tm.assert_alive();
        let done: i64 = wh
            .query_one(
                "SELECT count(*) FROM tidemark.progress WHERE snapshot IS NULL",
                &[],
            )
            .await
            .map_or(0, |row| row.get(0));
        if done as usize >= sources {
            return tm.started.elapsed();
        }
        assert!(
            tm.started.elapsed() < Duration::from_secs(600),
            "only {done} of {sources} sources started in 10 minutes:\n{}",
            tm.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The database of tenant `i`.
fn tenant_db(i: usize) -> String {
    format!("fleet_{i}")
}

/// Creates tenant databases up to `count` on the bench MariaDB (each with an empty table `t`),
/// keeping those that exist; empties the tables of earlier runs.
async fn ensure_tenants(url: &str, count: usize) {
    let mut conn = connect(url).await;
    for i in 0..count {
        let db = tenant_db(i);
        conn.query_drop(format!(
            "CREATE DATABASE IF NOT EXISTS {db}; \
             CREATE TABLE IF NOT EXISTS {db}.t (id BIGINT PRIMARY KEY, written DATETIME(6) NOT NULL); \
             TRUNCATE TABLE {db}.t"
        ))
        .await
        .unwrap_or_else(|e| panic!("creating tenant {db}: {e}"));
    }
}

/// Writes the inventory of tenants `0..count` and a config around it; returns the config path.
fn write_config(
    bin: &Bin,
    name: &str,
    mysql: &str,
    warehouse: &str,
    count: usize,
) -> std::path::PathBuf {
    let (host, port) = host_port(mysql);
    let mut inventory =
        String::from("tenant,region,function,kind,host,port,databases,credentials\n");
    for i in 0..count {
        writeln!(
            inventory,
            "t{i},in,txn,mysql,{host},{port},{},env:FLEET_BENCH_CREDENTIALS",
            tenant_db(i)
        )
        .unwrap();
    }
    let dir = bin.work.join(name);
    std::fs::create_dir_all(dir.join("state")).unwrap();
    std::fs::write(dir.join("tenants.csv"), inventory).unwrap();
    let config = format!(
        "[group]\nname = \"fleet-bench\"\nstate_dir = \"state\"\n\n\
         [warehouse]\nkind = \"postgres\"\nurl = \"{}\"\n\n\
         [batch]\nmax_delay = \"200ms\"\n\n\
         [fleet]\ninventory = \"tenants.csv\"\n\
         mysql_url = \"mysql://{{user}}:{{password}}@{{host}}:{{port}}?prefer_socket=false\"\n\n\
         [fleet.template]\nsnapshot = \"initial\"\n",
        db_url(warehouse, "fleet_bench")
    );
    let path = dir.join("tidemark.toml");
    std::fs::write(&path, config).unwrap();
    path
}

/// Samples the connections tidemark holds to the bench warehouse every 20 ms; the most seen.
fn watch_connections(server: &str) -> (Arc<AtomicI64>, tokio::task::JoinHandle<()>) {
    let most = Arc::new(AtomicI64::new(0));
    let seen = most.clone();
    let server = server.to_owned();
    let task = tokio::spawn(async move {
        let admin = pg_connect(&server).await;
        loop {
            if let Ok(row) = admin
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity \
                     WHERE datname = 'fleet_bench' AND application_name = 'tidemark'",
                    &[],
                )
                .await
            {
                seen.fetch_max(row.get::<_, i64>(0), Ordering::Relaxed);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    (most, task)
}

/// User plus system CPU seconds process `pid` has used.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start after its closing ')'.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after the name.
    (ticks(11) + ticks(12)) / 100.0
}

/// Inserts `rate` rows per second for `seconds` into `t` of `db`, each stamped with its write
/// time; returns the rows written.
async fn write_at(url: String, db: String, rate: u64, seconds: u64) -> i64 {
    let mut conn = connect(&format!("{url}/{db}")).await;
    // `written` is compared with the warehouse's clock in UTC.
    conn.query_drop("SET time_zone = '+00:00'")
        .await
        .unwrap_or_else(|e| panic!("setting the time zone: {e}"));
    let start = Instant::now();
    let mut id: i64 = 0;
    let per_tick = (rate / 10).max(1);
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    while start.elapsed() < Duration::from_secs(seconds) {
        tick.tick().await;
        for _ in 0..per_tick {
            id += 1;
            conn.query_drop(format!("INSERT INTO t VALUES ({id}, NOW(6))"))
                .await
                .unwrap_or_else(|e| panic!("writing to {db}: {e}"));
        }
    }
    id
}

/// Rows loaded into the busy tenants' tables so far.
async fn total_rows(wh: &tokio_postgres::Client, count: usize) -> i64 {
    let mut rows = 0;
    for i in 0..count {
        rows += wh
            .query_one(&format!("SELECT count(*) FROM t{i}_in_txn.t"), &[])
            .await
            .map_or(0, |row| row.get::<_, i64>(0));
    }
    rows
}

/// Seconds from each row's write at the source to the warehouse transaction that loaded it
/// (`_tidemark_loaded_at`, the load transaction's start: the commit follows within the load).
async fn visible_delays(wh: &tokio_postgres::Client, i: usize) -> Vec<f64> {
    wh.query(
        &format!(
            "SELECT extract(epoch FROM _tidemark_loaded_at - (written AT TIME ZONE 'UTC'))::float8 \
             FROM t{i}_in_txn.t"
        ),
        &[],
    )
    .await
    .expect("reading the load times")
    .iter()
    .map(|row| row.get::<_, f64>(0))
    .collect()
}

/// The `p` quantile of `values` (0 when empty).
fn percentile(values: &[f64], p: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}
