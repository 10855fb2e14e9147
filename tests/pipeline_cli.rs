//! `tidemark run` as an operator runs it: config errors exit 2 naming key and line; an
//! unreachable warehouse fails fast naming the host without the password; SIGTERM exits 0
//! having loaded what it read, and a restart loses nothing; one source's MySQL server being down
//! (at start, or lost mid-run) neither stops the other source nor goes unreported.

mod support;

use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;
use support::pipeline::{
    CONVERGE, GroupConfig, MysqlSetup, Rng, Source, SourceConfig, TablePair, Tidemark, closed_port,
    create_database_on, fresh_warehouse, seed, start_writer, wait_checkpoint, wait_tables_equal,
    wait_until, workload_tables,
};

/// The table the multi-source tests replicate.
const T_TABLE: &str = "CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(20))";

fn output(tm: &Tidemark) -> String {
    let out =
        std::fs::read_to_string(tm.dir().join(format!("run{}.out", tm.runs()))).unwrap_or_default();
    format!("{out}{}", tm.stderr())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_config_key_exits_2_naming_key_and_line() {
    let wh_url = format!("postgres://postgres@127.0.0.1:{}/wh", closed_port());
    let source = SourceConfig::mysql("cli", &support::mysql_url(), "shop");
    let group = GroupConfig::new(&wh_url, vec![source]);
    let mut tm = Tidemark::prepare(|state| {
        group.render(state).replace(
            "max_rows = 10000\n",
            "max_rows = 10000\nmax_colour = \"blue\"\n",
        )
    });
    let text = std::fs::read_to_string(&tm.config_path).unwrap();
    let line = text
        .lines()
        .position(|l| l.starts_with("max_colour"))
        .unwrap()
        + 1;
    tm.spawn();
    let status = tm.wait_exit(Duration::from_secs(15)).await;
    let out = output(&tm);
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(2),
        "exit status for an unknown key; output:\n{out}"
    );
    assert!(
        out.contains("max_colour") && out.contains(&format!(":{line}")),
        "message names the key `max_colour` and line {line}:\n{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_warehouse_fails_fast_naming_host_without_password() {
    let port = closed_port();
    let wh_url = format!("postgres://tidemark:Sup3rSecretPw@127.0.0.1:{port}/warehouse");
    let (_conn, db) = support::fresh_mysql_database("pl_cli_nowh").await;
    let source = SourceConfig::mysql("cli", &support::mysql_url(), &db);
    let mut tm = Tidemark::start(&GroupConfig::new(&wh_url, vec![source]));
    let started = Instant::now();
    let status = tm.wait_exit(Duration::from_secs(15)).await;
    let out = output(&tm);
    let Some(status) = status else {
        panic!("still running 15 s after start with an unreachable warehouse; output:\n{out}");
    };
    eprintln!("exited {status} after {:?}", started.elapsed());
    assert!(!out.contains("Sup3rSecretPw"), "password printed:\n{out}");
    assert!(
        out.contains(&format!("127.0.0.1:{port}")) || out.contains("127.0.0.1"),
        "message names the warehouse host:\n{out}"
    );
    assert_eq!(
        status.code(),
        Some(1),
        "exit status (docs/warehouse-postgres.md: exits 1); output:\n{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_steady_writes_exits_0_and_restart_loses_nothing() {
    let tables = ["a", "b", "c"];
    let mut s = MysqlSetup::start("pl_cli_term", "cli", &workload_tables(&tables)).await;
    let mut rng = Rng::new(seed("sigterm_during_steady_writes"));
    let writer = start_writer(
        s.source_url(),
        &tables,
        rng.next_u64(),
        200,
        Duration::from_millis(2),
    );
    writer.wait_commits(200).await;
    let status = s.tm.terminate(Duration::from_secs(20)).await;
    assert_eq!(
        status.code(),
        Some(0),
        "exit status after SIGTERM; stderr:\n{}",
        s.tm.stderr()
    );
    let at_exit = s.wh.checkpoint("cli").await;
    writer.wait_commits(100).await;
    let stats = writer.stop().await;
    assert!(stats.commits > 300, "writer too slow: {stats:?}");
    s.tm.spawn();
    s.converge(&tables).await;
    assert_ne!(
        s.wh.checkpoint("cli").await,
        at_exit,
        "checkpoint moves on after the restart"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_loads_the_changes_already_read_before_exiting() {
    // A long max_delay: only the SIGTERM drain can load these changes.
    let ddl = workload_tables(&["d"]);
    let mut s = MysqlSetup::start_with("pl_cli_drain", "cli", &ddl, |g| {
        g.max_delay = "60s".into();
        g.max_rows = 1_000_000;
    })
    .await;
    for i in 1..=50 {
        s.conn
            .query_drop(format!(
                "INSERT INTO d (id, v, s) VALUES ({i}, {i}, 'row {i}')"
            ))
            .await
            .unwrap();
    }
    s.conn
        .query_drop("UPDATE d SET v = v + 1 WHERE id <= 10")
        .await
        .unwrap();
    s.conn
        .query_drop("DELETE FROM d WHERE id > 45")
        .await
        .unwrap();
    // Give the reader a moment to receive the committed events (setup, not an assertion).
    tokio::time::sleep(Duration::from_secs(1)).await;
    let status = s.tm.terminate(Duration::from_secs(20)).await;
    assert_eq!(
        status.code(),
        Some(0),
        "exit status after SIGTERM; stderr:\n{}",
        s.tm.stderr()
    );
    // No restart: what tidemark had read must be in the warehouse now.
    if let Err(diff) = s.diff(&["d"]).await {
        panic!(
            "after SIGTERM (exit 0) the target lacks changes committed 1 s before:\n{diff}\nstderr:\n{}",
            s.tm.stderr()
        );
    }
}

/// `[warehouse] kind = "null"`: the group runs with nothing to connect to, reads its source, and
/// SIGTERM still ends it with status 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_null_warehouse_runs_and_sigterm_exits_0() {
    let (mut conn, db) = support::fresh_mysql_database("pl_cli_null").await;
    conn.query_drop(T_TABLE).await.unwrap();
    let source = SourceConfig::mysql("null", &support::mysql_url(), &db);
    // No server behind this URL: a null warehouse must never try to reach one.
    let unused = format!("postgres://postgres@127.0.0.1:{}/wh", closed_port());
    let group = GroupConfig::new(&unused, vec![source]);
    let mut tm = Tidemark::prepare(|state| {
        group.render(state).replace(
            &format!("kind = \"postgres\"\nurl = \"{unused}\""),
            "kind = \"null\"",
        )
    });
    assert!(
        std::fs::read_to_string(&tm.config_path)
            .unwrap()
            .contains("kind = \"null\""),
        "the config names the null warehouse"
    );
    tm.spawn();
    let replicating = wait_until(Duration::from_secs(30), async || {
        output(&tm).contains("first start: replicating changes")
    })
    .await;
    tm.assert_running("after the source started");
    assert!(replicating, "the source never started:\n{}", output(&tm));
    conn.query_drop("INSERT INTO t VALUES (1, 'one'), (2, 'two')")
        .await
        .unwrap();
    let status = tm.terminate(Duration::from_secs(20)).await;
    assert_eq!(
        status.code(),
        Some(0),
        "exit status after SIGTERM; output:\n{}",
        output(&tm)
    );
}

/// Source `ok` flows; source `down` points at a closed port.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_source_at_start_does_not_stop_the_other() {
    let mut down = SourceConfig::mysql(
        "down-src",
        &format!("mysql://root:Sup3rSecretPw@127.0.0.1:{}", closed_port()),
        "shop",
    );
    down.function = "lookup".into();
    let mut s = MysqlSetup::start_with("pl_cli_2src", "ok-src", &[T_TABLE], |g| {
        g.sources.push(down);
    })
    .await;
    for i in 1..=20 {
        s.conn
            .query_drop(format!("INSERT INTO t VALUES ({i}, 'v{i}')"))
            .await
            .unwrap();
    }
    s.conn
        .query_drop("UPDATE t SET v = 'changed' WHERE id < 5")
        .await
        .unwrap();
    s.converge(&["t"]).await;
    let warned = wait_until(Duration::from_secs(20), async || {
        warning_about(&s.tm.stderr(), "down-src").is_some()
    })
    .await;
    s.tm.assert_running("with one source down");
    let log = s.tm.stderr();
    eprintln!("reported: {:?}", warning_about(&log, "down-src"));
    assert!(
        warned,
        "no WARN/ERROR line naming source down-src within 20 s:\n{log}"
    );
    assert!(!log.contains("Sup3rSecretPw"), "password printed:\n{log}");
}

/// The first log line at WARN or ERROR level naming `source`.
fn warning_about(log: &str, source: &str) -> Option<String> {
    log.lines()
        .find(|l| (l.contains(" WARN ") || l.contains(" ERROR ")) && l.contains(source))
        .map(String::from)
}

/// Source `lost` is a private MariaDB that is stopped while tidemark runs, then started again:
/// the other source keeps flowing meanwhile, and `lost` catches up after it returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_lost_mid_run_does_not_stop_the_other_and_catches_up() {
    let server = support::mariadb_instance("pipeline-cli-lost-source", &[]);
    let private = server.url();
    let lost_db = "lost".to_string();
    let mut lost_conn = create_database_on(private, &lost_db).await;
    lost_conn.query_drop(T_TABLE).await.unwrap();
    let mut lost = SourceConfig::mysql("lost-src", private, &lost_db);
    lost.function = "lookup".into();
    let lost_schema = lost.schema();
    let mut s = MysqlSetup::start_with("pl_cli_lost", "ok-src", &[T_TABLE], |g| {
        g.sources.push(lost);
    })
    .await;
    wait_checkpoint(&mut s.tm, &s.wh, "lost-src", Duration::from_secs(30)).await;
    for c in [&mut s.conn, &mut lost_conn] {
        c.query_drop("INSERT INTO t VALUES (1, 'before'), (2, 'before')")
            .await
            .unwrap();
    }
    s.converge(&["t"]).await;
    wait_tables_equal(
        &mut s.tm,
        &mut Source::Mysql(&mut lost_conn),
        &s.wh.client,
        &TablePair::mysql(&lost_db, &["t"], &lost_schema),
        CONVERGE,
    )
    .await;
    drop(lost_conn);

    server.stop();
    for i in 3..=30 {
        s.conn
            .query_drop(format!("INSERT INTO t VALUES ({i}, 'during')"))
            .await
            .unwrap();
    }
    s.converge(&["t"]).await;
    let warned = wait_until(Duration::from_secs(20), async || {
        warning_about(&s.tm.stderr(), "lost-src").is_some()
    })
    .await;
    s.tm.assert_running("with source lost-src down");
    assert!(
        warned,
        "no WARN/ERROR line naming source lost-src within 20 s of its server stopping:\n{}",
        s.tm.stderr()
    );

    let restarted = server.start_again();
    assert_eq!(restarted, private, "the instance keeps its port");
    let mut lost_conn = support::mysql_conn(&format!("{private}/{lost_db}")).await;
    for sql in [
        "INSERT INTO t VALUES (3, 'after')",
        "UPDATE t SET v = 'after' WHERE id = 1",
    ] {
        lost_conn.query_drop(sql).await.unwrap();
    }
    s.conn
        .query_drop("DELETE FROM t WHERE id > 20")
        .await
        .unwrap();
    s.converge(&["t"]).await;
    wait_tables_equal(
        &mut s.tm,
        &mut Source::Mysql(&mut lost_conn),
        &s.wh.client,
        &TablePair::mysql(&lost_db, &["t"], &lost_schema),
        CONVERGE,
    )
    .await;
}

/// `--log-format json`: every stderr line is one JSON object; SIGINT stops like SIGTERM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_are_one_object_per_line_and_sigint_exits_0() {
    let wh = fresh_warehouse("pl_cli_json").await;
    let mut s = MysqlSetup::prepare(wh, "pl_cli_json", "json", &[T_TABLE], |_| {}).await;
    s.tm.extra_args = vec!["--log-format".into(), "json".into()];
    s.run().await;
    s.conn
        .query_drop("INSERT INTO t VALUES (1, 'one'), (2, 'two')")
        .await
        .unwrap();
    s.converge(&["t"]).await;
    s.tm.signal("INT");
    let status = s.tm.wait_exit(Duration::from_secs(20)).await;
    let log = s.tm.stderr();
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "exit status after SIGINT; stderr:\n{log}"
    );
    assert!(!log.trim().is_empty(), "no log lines at all");
    for line in log.lines().filter(|l| !l.trim().is_empty()) {
        let parsed: Result<serde_json::Value, _> = serde_json::from_str(line);
        assert!(
            parsed.as_ref().is_ok_and(|v| v.is_object()),
            "not a JSON object: {line}"
        );
    }
}
