//! What an operator meets when a source is misconfigured or stuck, or the warehouse is slow:
//! `run` refuses a source `check` fails (the others flow), a source stuck on an event it
//! cannot replicate says how to move on and `skip-to-end` moves it, a blocked load is logged
//! while it waits, and log values read as people write them (numbers in JSON).

mod support;

use std::process::Command;
use std::time::Duration;

use mysql_async::prelude::Queryable;
use support::pipeline::{
    GroupConfig, MysqlSetup, SourceConfig, Tidemark, Warehouse, fresh_warehouse,
    fresh_warehouse_on, pg_client, target_ids, wait_checkpoint, wait_until,
};

/// Waits until the current run's log contains every one of `needles`; panics with the logs.
async fn wait_for_log(tm: &mut Tidemark, needles: &[&str], timeout: Duration) {
    let found = wait_until(timeout, async || {
        let log = tm.stderr();
        needles.iter().all(|n| log.contains(n))
    })
    .await;
    assert!(found, "log lacks {needles:?}:\n{}", tm.logs());
}

/// Waits until the warehouse's `schema.t` holds exactly the rows `ids`; panics with the logs.
async fn wait_for_rows(wh: &Warehouse, schema: &str, ids: &[&str], tm: &Tidemark) {
    let landed = wait_until(Duration::from_secs(30), async || {
        target_ids(wh, schema).await == ids
    })
    .await;
    assert!(
        landed,
        "the warehouse holds {:?}, not {ids:?}:\n{}",
        target_ids(wh, schema).await,
        tm.logs()
    );
}

/// A fresh database with one table `t (id INT PRIMARY KEY)` on the shared MariaDB, replicated
/// by source `id` into a fresh warehouse (the group adjusted by `configure`); returns once the
/// start position is recorded, with the target schema.
async fn one_table_pipeline(
    id: &str,
    configure: impl FnOnce(&mut GroupConfig),
) -> (mysql_async::Conn, Warehouse, Tidemark, String) {
    let s =
        MysqlSetup::start_with(id, id, &["CREATE TABLE t (id INT PRIMARY KEY)"], configure).await;
    (s.conn, s.wh, s.tm, s.schema)
}

/// Runs `tidemark ARGS` to completion.
fn tidemark(args: &[&str], config: &std::path::Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_tidemark"))
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .expect("running tidemark")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_refuses_sources_that_check_fails_and_starts_the_others() {
    let statement_server =
        support::mariadb_instance("refused-statement", &["--binlog-format=STATEMENT"]);
    let replica_server =
        support::postgres_instance("refused-replica", &["-c", "wal_level=replica"]);
    let pg_source = fresh_warehouse_on(replica_server.url(), "refused_src").await;
    pg_source
        .client
        .batch_execute("CREATE TABLE public.t (id int PRIMARY KEY)")
        .await
        .unwrap();
    let (mut good_db, good_name) = support::fresh_mysql_database("refused_good").await;
    good_db
        .query_drop("CREATE TABLE t (id INT PRIMARY KEY)")
        .await
        .unwrap();

    let wh = fresh_warehouse("refused").await;
    let good = SourceConfig::mysql("good", &support::mysql_url(), &good_name);
    let mut statement = SourceConfig::mysql("statement", statement_server.url(), "shop");
    statement.tenant = "beta".into();
    let mut replica = SourceConfig::postgres("replica", &pg_source.url, &["public.*"]);
    replica.tenant = "gamma".into();
    let group = GroupConfig::new(&wh.url, vec![good.clone(), statement, replica]);
    let mut tm = Tidemark::start(&group);

    wait_checkpoint(&mut tm, &wh, "good", Duration::from_secs(30)).await;
    good_db
        .query_drop("INSERT INTO t VALUES (1), (2)")
        .await
        .unwrap();
    let schema = good.schema();
    wait_for_rows(&wh, &schema, &["1", "2"], &tm).await;
    wait_for_log(
        &mut tm,
        &[
            "source statement is not ready",
            "binlog_format",
            "SET GLOBAL binlog_format",
            "source replica is not ready",
            "wal_level",
            "ALTER SYSTEM SET wal_level = logical",
            "tidemark check --config",
        ],
        Duration::from_secs(30),
    )
    .await;
    tm.assert_running("refused sources must not stop the group");
    for refused in ["statement", "replica"] {
        assert_eq!(
            wh.checkpoint(refused).await,
            None,
            "no position may be recorded for a refused source"
        );
    }
    let left_behind = pg_source
        .rows("SELECT (SELECT count(*) FROM pg_publication)::text, (SELECT count(*) FROM pg_replication_slots)::text")
        .await;
    assert_eq!(
        left_behind,
        vec![vec![Some("0".to_string()), Some("0".to_string())]],
        "a refused Postgres source must leave no publication or slot behind"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_stuck_on_a_statement_format_event_moves_on_with_skip_to_end_or_snapshot() {
    let private = support::mariadb_instance("stuck", &[]);
    let server = private.url();
    let mut admin = support::mysql_conn(server).await;
    admin
        .query_drop("DROP DATABASE IF EXISTS shop; CREATE DATABASE shop; CREATE TABLE shop.t (id INT PRIMARY KEY)")
        .await
        .unwrap();
    let wh = fresh_warehouse("stuck").await;
    let source = SourceConfig::mysql("stuck", server, "shop");
    let schema = source.schema();
    let mut tm = Tidemark::start(&GroupConfig::new(&wh.url, vec![source]));
    wait_checkpoint(&mut tm, &wh, "stuck", Duration::from_secs(30)).await;
    admin
        .query_drop("INSERT INTO shop.t VALUES (1)")
        .await
        .unwrap();
    wait_for_rows(&wh, &schema, &["1"], &tm).await;

    // A session still writing statement format (the global setting fixed, its session not).
    let mut old_session = support::mysql_conn(server).await;
    old_session
        .query_drop("SET SESSION binlog_format = 'STATEMENT'; INSERT INTO shop.t VALUES (2)")
        .await
        .unwrap();
    old_session.disconnect().await.unwrap();
    let config = tm.config_path.display().to_string();
    let skip_command = format!("tidemark snapshot --config {config} --source stuck");
    wait_for_log(
        &mut tm,
        &[
            "statement-format DML",
            "SET GLOBAL binlog_format",
            &skip_command,
        ],
        Duration::from_secs(30),
    )
    .await;

    // Fixed on the server, the source still stops on the event already in the log.
    tm.terminate(Duration::from_secs(30)).await;
    let stuck_at = wh.checkpoint("stuck").await;
    tm.spawn();
    admin
        .query_drop("INSERT INTO shop.t VALUES (3)")
        .await
        .unwrap();
    wait_for_log(
        &mut tm,
        &["statement-format DML", &skip_command],
        Duration::from_secs(30),
    )
    .await;
    tm.terminate(Duration::from_secs(30)).await;
    assert_eq!(wh.checkpoint("stuck").await, stuck_at);

    // Without --yes nothing moves.
    let refused = tidemark(&["skip-to-end", "--source", "stuck"], &tm.config_path);
    let said = String::from_utf8_lossy(&refused.stderr).to_string();
    assert_eq!(refused.status.code(), Some(2), "{said}");
    assert!(said.contains("WARNING") && said.contains("--yes"), "{said}");
    assert_eq!(wh.checkpoint("stuck").await, stuck_at);

    let moved = tidemark(
        &["skip-to-end", "--source", "stuck", "--yes"],
        &tm.config_path,
    );
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&moved.stdout),
        String::from_utf8_lossy(&moved.stderr)
    );
    assert_eq!(moved.status.code(), Some(0), "{said}");
    assert!(
        said.contains("WARNING") && said.contains("copy") && said.contains("checkpoint moved"),
        "{said}"
    );
    assert_ne!(wh.checkpoint("stuck").await, stuck_at);

    tm.spawn();
    admin
        .query_drop("INSERT INTO shop.t VALUES (4)")
        .await
        .unwrap();
    wait_for_rows(&wh, &schema, &["1", "4"], &tm).await;

    // Stuck again: `tidemark snapshot` moves it on AND copies what was skipped (rows 2, 3, 5).
    let mut old_session = support::mysql_conn(server).await;
    old_session
        .query_drop("SET SESSION binlog_format = 'STATEMENT'; INSERT INTO shop.t VALUES (5)")
        .await
        .unwrap();
    old_session.disconnect().await.unwrap();
    wait_for_log(&mut tm, &[&skip_command], Duration::from_secs(30)).await;
    tm.terminate(Duration::from_secs(30)).await;
    let asked = tidemark(&["snapshot", "--source", "stuck"], &tm.config_path);
    let said = String::from_utf8_lossy(&asked.stdout).to_string();
    assert_eq!(asked.status.code(), Some(0), "{said}");
    assert!(said.contains("copy requested"), "{said}");
    tm.spawn();
    wait_for_rows(&wh, &schema, &["1", "2", "3", "4", "5"], &tm).await;
    admin
        .query_drop("INSERT INTO shop.t VALUES (6)")
        .await
        .unwrap();
    wait_for_rows(&wh, &schema, &["1", "2", "3", "4", "5", "6"], &tm).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_blocked_by_a_lock_is_logged_while_it_waits() {
    let (mut db, wh, tm, schema) = one_table_pipeline("slow", |group| {
        group.slow_load_warning = Some("1s".into());
    })
    .await;
    db.query_drop("INSERT INTO t VALUES (1)").await.unwrap();
    wait_for_rows(&wh, &schema, &["1"], &tm).await;

    // Another session holds the target table for a while.
    let mut locker = pg_client(&wh.url).await;
    let lock = locker.transaction().await.unwrap();
    lock.batch_execute(&format!("LOCK TABLE {schema}.t IN ACCESS EXCLUSIVE MODE"))
        .await
        .unwrap();
    db.query_drop("INSERT INTO t VALUES (2)").await.unwrap();
    let table = format!("table={schema}.t");
    let repeated = wait_until(Duration::from_secs(20), async || {
        let log = tm.stderr();
        log.lines()
            .filter(|l| {
                l.contains("loading into the warehouse is slow")
                    && l.contains("source=slow")
                    && l.contains(&table)
                    && l.contains("waited=")
            })
            .count()
            >= 2
    })
    .await;
    assert!(
        repeated,
        "a blocked load must be reported, again while it lasts:\n{}",
        tm.logs()
    );
    lock.rollback().await.unwrap();
    wait_for_rows(&wh, &schema, &["1", "2"], &tm).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_values_are_written_for_people_and_as_numbers_in_json() {
    let (mut db, wh, mut tm, schema) = one_table_pipeline("logs", |_| {}).await;
    db.query_drop("INSERT INTO t VALUES (1)").await.unwrap();
    wait_for_log(&mut tm, &[" loaded "], Duration::from_secs(30)).await;
    let text = tm.stderr();
    let loaded = text
        .lines()
        .find(|l| l.contains(" loaded "))
        .unwrap_or_default()
        .to_string();
    let lag = loaded
        .split_whitespace()
        .find_map(|field| field.strip_prefix("lag="))
        .unwrap_or_else(|| panic!("no lag in: {loaded}"));
    let seconds = lag
        .strip_suffix('s')
        .and_then(|n| n.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("lag is not seconds: {loaded}"));
    assert!(seconds >= 0.0);
    assert!(!text.contains("Some("), "{text}");
    tm.terminate(Duration::from_secs(30)).await;

    tm.extra_args = vec!["--log-format".into(), "json".into()];
    tm.spawn();
    db.query_drop("INSERT INTO t VALUES (2)").await.unwrap();
    wait_for_log(&mut tm, &["\"loaded\""], Duration::from_secs(30)).await;
    let line = tm
        .stderr()
        .lines()
        .find(|l| l.contains("\"loaded\""))
        .unwrap_or_default()
        .to_string();
    let event: serde_json::Value = serde_json::from_str(&line).expect("a JSON log line");
    assert!(
        event["fields"]["lag_s"].is_f64(),
        "lag must be a number of seconds: {line}"
    );
    assert!(
        event["fields"]["changes"].is_u64(),
        "counts are numbers: {line}"
    );
    wait_for_rows(&wh, &schema, &["1", "2"], &tm).await;
}
