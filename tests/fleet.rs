//! A fleet from an inventory, end to end against the dev servers: every good line becomes a
//! source that copies and streams, a bad line is reported with its line number and skipped,
//! all sources share a bounded set of warehouse connections, one source cut off from its
//! server does not slow the others and shows in `tidemark status`, and SIGHUP adds, removes,
//! pauses and resumes tenants without touching the rest.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use mysql_async::prelude::Queryable;
use support::fleet::{
    MYSQL_CREDENTIALS, PG_CREDENTIALS, Tenant, config, insert_mysql, inventory, wait_counts,
};
use support::pg_source::release_slot;
use support::poll::wait_until;
use support::process::Tidemark;
use support::tcp_proxy::CutProxy;
use support::warehouse::{Warehouse, fresh_warehouse, pg_client};

const LOADED: Duration = Duration::from_secs(90);

/// The port of a `scheme://user@127.0.0.1:PORT[/db]` URL.
fn port_of(url: &str) -> u16 {
    let authority = url.split('@').nth(1).unwrap_or(url);
    let host_port = authority.split('/').next().unwrap_or(authority);
    host_port.rsplit(':').next().unwrap().parse().unwrap()
}

/// A MariaDB tenant `name` whose table `t` holds `rows` rows.
async fn mysql_tenant(name: &str, rows: i64) -> Tenant {
    let (mut conn, db) = support::fresh_mysql_database(name).await;
    conn.query_drop("CREATE TABLE t (id BIGINT PRIMARY KEY, v VARCHAR(20))")
        .await
        .unwrap();
    conn.disconnect().await.ok();
    if rows > 0 {
        insert_mysql(&db, 1, rows).await;
    }
    Tenant {
        name: name.into(),
        kind: "mysql",
        db,
        port: port_of(&support::mysql_url()),
        enabled: true,
        slot: String::new(),
    }
}

/// A Postgres tenant `name` (its own database and slot) whose table `t` holds `rows` rows.
async fn postgres_tenant(name: &str, rows: i64) -> (Tenant, Warehouse) {
    let source = fresh_warehouse(&format!("fleet_src_{name}")).await;
    source
        .client
        .batch_execute(&format!(
            "CREATE TABLE t (id bigint PRIMARY KEY, v text); \
             INSERT INTO t SELECT i, 'v' || i FROM generate_series(1, {rows}) AS i"
        ))
        .await
        .unwrap();
    let tenant = Tenant {
        name: name.into(),
        kind: "postgres",
        db: source.db.clone(),
        port: port_of(&support::pg_url()),
        enabled: true,
        slot: format!("{}_slot", source.db),
    };
    (tenant, source)
}

/// Samples the warehouse connections tidemark holds (in `db`) every 20 ms; the most seen.
fn watch_connections(db: String) -> (Arc<AtomicI64>, tokio::task::JoinHandle<()>) {
    let most = Arc::new(AtomicI64::new(0));
    let seen = most.clone();
    let task = tokio::spawn(async move {
        let admin = pg_client(&support::pg_url()).await;
        loop {
            let row = admin
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity \
                     WHERE datname = $1 AND application_name = 'tidemark'",
                    &[&db],
                )
                .await
                .unwrap();
            seen.fetch_max(row.get::<_, i64>(0), Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    (most, task)
}

/// A `tidemark run` of a `[fleet]` config over `tenants` (plus `extra` inventory lines), with
/// server heartbeats every `heartbeat`.
fn fleet_process(
    wh: &Warehouse,
    tenants: &[Tenant],
    extra: &[&str],
    max_connections: u32,
    heartbeat: &str,
) -> Tidemark {
    let mut tm = Tidemark::prepare(|state| config(&wh.url, state, max_connections, heartbeat, ""));
    std::fs::write(tm.dir().join("tenants.csv"), inventory(tenants, extra)).unwrap();
    for (name, value) in [MYSQL_CREDENTIALS, PG_CREDENTIALS] {
        tm.extra_env.push((name.into(), value.into()));
    }
    tm
}

/// `tidemark status --json` of `config`: each source's id to its (state, error).
fn status(config: &std::path::Path) -> Vec<(String, String, Option<String>)> {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tidemark"))
        .args(["status", "--json", "--config"])
        .arg(config)
        .envs([MYSQL_CREDENTIALS, PG_CREDENTIALS])
        .output()
        .unwrap();
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "status --json: {e}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    json.as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["source"].as_str().unwrap().to_owned(),
                s["state"].as_str().unwrap().to_owned(),
                s["error"].as_str().map(str::to_owned),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_inventory_line_replicates_on_a_bounded_pool_and_a_cut_source_stays_apart() {
    const MYSQL_TENANTS: usize = 30;
    const MAX_CONNECTIONS: u32 = 3;
    let wh = fresh_warehouse("fleet_pool").await;
    let mut tenants = Vec::new();
    for i in 0..MYSQL_TENANTS {
        tenants.push(mysql_tenant(&format!("f{i}"), 3).await);
    }
    let mut pg_sources = Vec::new();
    for i in 0..2 {
        let (tenant, source) = postgres_tenant(&format!("p{i}"), 4).await;
        tenants.push(tenant);
        pg_sources.push(source);
    }
    // Tenant f0 reaches MariaDB through a proxy that the test cuts later.
    let proxy = CutProxy::start(format!("127.0.0.1:{}", tenants[0].port)).await;
    tenants[0].port = proxy.port;
    let bad = "broken,in,txn,oracle,127.0.0.1,1521,x,env:FLEET_TEST_MYSQL_CREDENTIALS,true,";
    let mut tm = fleet_process(&wh, &tenants, &[bad], MAX_CONNECTIONS, "1s");
    let (most, monitor) = watch_connections(wh.db.clone());
    tm.spawn();

    let bad_line = tenants.len() + 2;
    let expected: Vec<(String, i64)> = tenants
        .iter()
        .map(|t| (t.schema(), if t.kind == "mysql" { 3 } else { 4 }))
        .collect();
    wait_counts(&wh, &expected, LOADED).await;
    let log = tm.stderr();
    assert!(
        log.contains(&format!("tenants.csv:{bad_line}:")) && log.contains("`kind`"),
        "the bad line {bad_line} is not reported with its line and column:\n{log}"
    );

    // Streaming, every tenant at once.
    for t in tenants.iter().filter(|t| t.kind == "mysql") {
        insert_mysql(&t.db, 100, 2).await;
    }
    for source in &pg_sources {
        source
            .client
            .batch_execute("INSERT INTO t VALUES (100, 'a'), (101, 'b')")
            .await
            .unwrap();
    }
    let expected: Vec<(String, i64)> = expected.iter().map(|(s, n)| (s.clone(), n + 2)).collect();
    wait_counts(&wh, &expected, LOADED).await;
    tm.assert_running("after every tenant streamed");

    // Cut f0 off: the others keep loading promptly while f0 retries.
    proxy.cut();
    let cut_at = std::time::Instant::now();
    let others: Vec<&Tenant> = tenants[1..].iter().filter(|t| t.kind == "mysql").collect();
    for t in &others {
        insert_mysql(&t.db, 200, 1).await;
    }
    insert_mysql(&tenants[0].db, 200, 1).await;
    let expected_others: Vec<(String, i64)> = others.iter().map(|t| (t.schema(), 6)).collect();
    wait_counts(&wh, &expected_others, Duration::from_secs(15)).await;
    eprintln!(
        "{} other tenants loaded their change {:?} after the cut",
        others.len(),
        cut_at.elapsed()
    );
    monitor.abort();
    let most = most.load(Ordering::Relaxed);
    eprintln!(
        "at most {most} warehouse connections for {} sources",
        tenants.len()
    );
    assert!(
        most <= i64::from(MAX_CONNECTIONS),
        "tidemark held {most} warehouse connections; max_connections is {MAX_CONNECTIONS}"
    );

    let f0 = tenants[0].id();
    let shown = wait_until(Duration::from_secs(30), async || {
        status(&tm.config_path)
            .iter()
            .any(|(id, state, error)| id == &f0 && state == "retrying" && error.is_some())
    })
    .await;
    let lines = status(&tm.config_path);
    assert!(shown, "status does not show {f0} retrying: {lines:?}");
    let streaming = lines
        .iter()
        .filter(|(_, state, _)| state == "streaming")
        .count();
    assert_eq!(streaming, tenants.len() - 1, "{lines:?}");
    assert!(
        !lines.iter().any(|(id, _, _)| id.starts_with("broken")),
        "the bad line became a source: {lines:?}"
    );

    // Back again: f0 catches up.
    proxy.restore();
    wait_counts(&wh, &[(tenants[0].schema(), 6)], LOADED).await;
    tm.assert_running("at the end");
    drop(tm);
    let admin = pg_client(&support::pg_url()).await;
    for (tenant, source) in tenants
        .iter()
        .filter(|t| t.kind == "postgres")
        .zip(pg_sources)
    {
        release_slot(&admin, &tenant.slot, vec![source]).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_adds_removes_pauses_and_resumes_tenants_and_leaves_the_rest_running() {
    let wh = fresh_warehouse("fleet_reload").await;
    let mut tenants = Vec::new();
    for i in 0..4 {
        tenants.push(mysql_tenant(&format!("r{i}"), 2).await);
    }
    let mut tm = fleet_process(&wh, &tenants, &[], 4, "1s");
    tm.spawn();
    let expected: Vec<(String, i64)> = tenants.iter().map(|t| (t.schema(), 2)).collect();
    wait_counts(&wh, &expected, LOADED).await;

    // r0 is removed, r1 paused, a new tenant r9 (with rows of its own) added; r2 and r3 stay.
    let newcomer = mysql_tenant("r9", 5).await;
    let removed = tenants.remove(0);
    tenants[0].enabled = false;
    tenants.push(newcomer);
    std::fs::write(tm.dir().join("tenants.csv"), inventory(&tenants, &[])).unwrap();
    let r2_before = wh.checkpoint(&tenants[1].id()).await;
    tm.signal("HUP");
    let reloaded = wait_until(Duration::from_secs(20), async || {
        tm.stderr().contains("config reloaded")
    })
    .await;
    assert!(reloaded, "no reload logged:\n{}", tm.stderr());
    let log = tm.stderr();
    assert!(
        log.contains("started=1") && log.contains("stopped=2") && log.contains("restarted=0"),
        "the reload did not start one and stop two sources:\n{log}"
    );

    // The newcomer is copied and streams; the kept tenants go on.
    wait_counts(&wh, &[(tenants[3].schema(), 5)], LOADED).await;
    for t in [&tenants[1], &tenants[2], &tenants[3]] {
        insert_mysql(&t.db, 50, 1).await;
    }
    insert_mysql(&removed.db, 50, 1).await;
    insert_mysql(&tenants[0].db, 50, 1).await;
    wait_counts(
        &wh,
        &[
            (tenants[1].schema(), 3),
            (tenants[2].schema(), 3),
            (tenants[3].schema(), 6),
        ],
        LOADED,
    )
    .await;
    assert_ne!(
        wh.checkpoint(&tenants[1].id()).await,
        r2_before,
        "a kept tenant's progress did not move"
    );
    // The removed and the paused tenants load nothing more.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        support::fleet::target_count(&wh, &removed.schema()).await,
        Some(2)
    );
    assert_eq!(
        support::fleet::target_count(&wh, &tenants[0].schema()).await,
        Some(2)
    );
    let restarts = tm
        .stderr()
        .lines()
        .filter(|l| l.contains(&tenants[1].id()) && l.contains("restarting"))
        .count();
    assert_eq!(restarts, 0, "a kept tenant was restarted:\n{}", tm.stderr());

    // Resuming r1 picks up where it stopped: the row written while it was paused arrives.
    tenants[0].enabled = true;
    std::fs::write(tm.dir().join("tenants.csv"), inventory(&tenants, &[])).unwrap();
    tm.signal("HUP");
    wait_counts(&wh, &[(tenants[0].schema(), 3)], LOADED).await;

    // A config that no longer loads changes nothing.
    std::fs::write(tm.dir().join("tenants.csv"), "tenant,colour\n").unwrap();
    tm.signal("HUP");
    let refused = wait_until(Duration::from_secs(20), async || {
        tm.stderr().contains("config reload failed")
    })
    .await;
    assert!(
        refused,
        "the broken inventory was not refused:\n{}",
        tm.stderr()
    );
    insert_mysql(&tenants[2].db, 60, 1).await;
    wait_counts(&wh, &[(tenants[2].schema(), 4)], LOADED).await;
    tm.assert_running("after a refused reload");
}

/// The scale: a thousand MariaDB tenants (each its own database and source) and twenty
/// Postgres tenants from one inventory, in one process on the default pool of 16 warehouse
/// connections: every tenant's rows are copied, and changes stream to every tenant at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "takes 5-10 minutes of both cores and starves the tests beside it; run with `cargo nextest run --features failpoints --test fleet --run-ignored only`"]
async fn a_thousand_mysql_and_twenty_postgres_tenants_replicate_in_one_process() {
    const MYSQL_TENANTS: usize = 1000;
    const PG_TENANTS: usize = 20;
    let wh = fresh_warehouse("fleet_scale").await;
    let prefix = format!("k{}_", std::process::id());
    let mut admin = support::mysql_conn(&support::mysql_url()).await;
    let mut tenants = Vec::new();
    for i in 0..MYSQL_TENANTS {
        let db = format!("{prefix}{i}");
        admin
            .query_drop(format!(
                "CREATE DATABASE `{db}`; \
                 CREATE TABLE `{db}`.t (id BIGINT PRIMARY KEY, v VARCHAR(20)); \
                 INSERT INTO `{db}`.t VALUES (1, 'v1')"
            ))
            .await
            .unwrap();
        tenants.push(Tenant {
            name: format!("m{i}"),
            kind: "mysql",
            db,
            port: port_of(&support::mysql_url()),
            enabled: true,
            slot: String::new(),
        });
    }
    let mut pg_sources = Vec::new();
    for i in 0..PG_TENANTS {
        let (tenant, source) = postgres_tenant(&format!("q{i}"), 1).await;
        tenants.push(tenant);
        pg_sources.push(source);
    }
    // Heartbeats at the default 5 s: a thousand binlog connections on one small server do not
    // all get theirs within 3 s of each other.
    let mut tm = fleet_process(&wh, &tenants, &[], 16, "5s");
    // 32 tenants copy at once (the default is 8): each copy is small, and the test build slow.
    let text = std::fs::read_to_string(&tm.config_path).unwrap();
    std::fs::write(
        &tm.config_path,
        text.replace("[group]\n", "[group]\nconcurrent_snapshots = 32\n"),
    )
    .unwrap();
    let (most, monitor) = watch_connections(wh.db.clone());
    let started = std::time::Instant::now();
    tm.spawn();
    let all: Vec<(String, i64)> = tenants.iter().map(|t| (t.schema(), 1)).collect();
    wait_counts(&wh, &all, Duration::from_secs(600)).await;
    eprintln!(
        "{} tenants copied in {:?}",
        tenants.len(),
        started.elapsed()
    );

    // One change per tenant, all at once: every one streams through.
    for t in tenants.iter().filter(|t| t.kind == "mysql") {
        admin
            .query_drop(format!("INSERT INTO `{}`.t VALUES (2, 'v2')", t.db))
            .await
            .unwrap();
    }
    for source in &pg_sources {
        source
            .client
            .batch_execute("INSERT INTO t VALUES (2, 'v2')")
            .await
            .unwrap();
    }
    let streamed = std::time::Instant::now();
    let all: Vec<(String, i64)> = tenants.iter().map(|t| (t.schema(), 2)).collect();
    wait_counts(&wh, &all, Duration::from_secs(120)).await;
    eprintln!(
        "a change to each of {} tenants loaded in {:?}",
        tenants.len(),
        streamed.elapsed()
    );
    monitor.abort();
    let most = most.load(Ordering::Relaxed);
    eprintln!("at most {most} warehouse connections");
    assert!(
        most <= 16,
        "{most} warehouse connections; the pool holds 16"
    );
    tm.assert_running("at the end");
    drop(tm);
    for t in tenants.iter().filter(|t| t.kind == "mysql") {
        admin
            .query_drop(format!("DROP DATABASE `{}`", t.db))
            .await
            .unwrap();
    }
    let pg_admin = pg_client(&support::pg_url()).await;
    for (tenant, source) in tenants
        .iter()
        .filter(|t| t.kind == "postgres")
        .zip(pg_sources)
    {
        release_slot(&pg_admin, &tenant.slot, vec![source]).await;
    }
}
