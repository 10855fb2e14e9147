//! Snapshots of a MySQL/MariaDB source, end to end: existing rows copied while a writer changes
//! them and tidemark is killed, then streamed on; a purged binlog recovered by copying again
//! (`when_needed`) or refused with the lost position named (`never`).

mod support;

use std::time::Duration;

use mysql_async::prelude::Queryable;
use support::compare::{Source, TablePair};
use support::pipeline::{
    GroupConfig, MysqlSetup, Rng, SourceConfig, Tidemark, converge_pairs, create_database_on, exec,
    fresh_warehouse, seed, start_writer, workload_tables,
};
use support::snapshot::{
    IdRange, assert_no_key_twice, assert_not_copied_again, assert_snapshot_cleared, done_chunks_of,
    kill_three_times_during_copy, snapshot_state, tidemark_command,
};

/// Rows the big table starts with.
const ROWS: u64 = 1_000_000;

/// Fills `table` (of [`workload_tables`]'s shape) with ids 1..=`rows` (MariaDB's sequence
/// engine makes them server-side).
fn fill(table: &str, rows: u64) -> String {
    format!(
        "INSERT INTO `{table}` (id, v, s, d, ts, b, j) SELECT seq, seq * 7, CONCAT('row ', seq), \
         seq / 1000, TIMESTAMP('2024-01-01') + INTERVAL seq SECOND, UNHEX(HEX(seq)), \
         JSON_OBJECT('n', seq) FROM seq_1_to_{rows}"
    )
}

/// The done chunks of the first table of a snapshot state: (lower id bound, upper id bound),
/// unbounded sides as `None`.
fn done_chunks(state: &serde_json::Value) -> Vec<IdRange> {
    let bound = |b: &serde_json::Value| b.as_array().and_then(|v| v[0]["value"].as_i64());
    done_chunks_of(state, |range| {
        (bound(&range["lower"]), bound(&range["upper"]))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_million_rows_copied_under_writes_and_three_kills_equal_the_source() {
    let mut rng = Rng::new(seed(
        "a_million_rows_copied_under_writes_and_three_kills_equal_the_source",
    ));
    let mut ddl = workload_tables(&["big"]);
    ddl.push(fill("big", ROWS));
    let wh = fresh_warehouse("snap_my").await;
    let mut s = MysqlSetup::prepare(wh, "snap_my", "snap", &ddl, |g| {
        g.sources[0].snapshot = "initial";
        // Two chunks read and loaded at once, whatever the machine's cores.
        g.sources[0]
            .extra
            .push_str("snapshot_chunk_rows = 25000\nsnapshot_parallelism = 2\n");
        g.max_rows = 20_000;
    })
    .await;
    // The writer inserts, updates, deletes and moves keys across the whole key space (and a
    // little past it) while the copy runs.
    let writer = start_writer(
        s.source_url(),
        &["big"],
        rng.next_u64(),
        ROWS + ROWS / 10,
        Duration::from_millis(1),
    );
    writer.wait_commits(20).await;
    s.tm.spawn();
    // Kill -9 three times during the copy; every chunk done before a kill must not be copied
    // again.
    let before_kills =
        kill_three_times_during_copy(&mut s.tm, &s.wh, "snap", &mut rng, done_chunks).await;
    let stats = writer.stop().await;
    assert!(stats.commits > 100, "writer too slow: {stats:?}");
    s.converge_within(&["big"], Duration::from_secs(300)).await;
    assert_snapshot_cleared(&s.wh, "snap").await;

    let big = format!("{}.big", s.schema);
    assert_no_key_twice(&s.wh, &big).await;
    assert_not_copied_again(&s.wh, &big, &before_kills).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purged_binlog_is_copied_again_when_needed_and_refused_otherwise() {
    let server = support::mariadb_instance("snap_purge", &[]);
    let db = "shop";
    let mut conn = create_database_on(server.url(), db).await;
    let mut ddl = workload_tables(&["items", "other"]);
    ddl.push(fill("items", 5_000));
    ddl.push(fill("other", 300));
    exec(&mut conn, &ddl).await;
    let wh = fresh_warehouse("snap_purge").await;
    let source_url = format!("{}/{db}", server.url());
    let mut source = SourceConfig::mysql("purge", &source_url, db);
    source.snapshot = "when_needed";
    let group = GroupConfig::new(&wh.url, vec![source.clone()]);
    let schema = source.schema();
    let pairs = TablePair::mysql(db, &["items", "other"], &schema);

    let mut tm = Tidemark::start(&group);
    converge_pairs(&mut tm, &mut Source::Mysql(&mut conn), &wh.client, &pairs).await;
    assert!(tm.terminate(Duration::from_secs(30)).await.success());

    // While tidemark is down: rows written and deleted, then the binlog purged past its
    // checkpoint.
    exec(
        &mut conn,
        &[
            "DELETE FROM items WHERE id % 3 = 0",
            "UPDATE items SET v = -v WHERE id % 5 = 0",
            "INSERT INTO items (id, v) VALUES (900001, 1), (900002, 2)",
            "DELETE FROM other",
            "FLUSH BINARY LOGS",
        ],
    )
    .await;
    let last: String = conn
        .query_first("SHOW MASTER STATUS")
        .await
        .unwrap()
        .map(|row: mysql_async::Row| row.get::<String, _>(0).unwrap())
        .unwrap();
    // A dump thread that has not noticed its replica left keeps its file from being purged.
    let purged = support::poll::poll(Duration::from_secs(30), async || {
        conn.query_drop(format!("PURGE BINARY LOGS TO '{last}'"))
            .await
            .map_err(|e| e.to_string())?;
        let logs: Vec<mysql_async::Row> = conn
            .query("SHOW BINARY LOGS")
            .await
            .map_err(|e| e.to_string())?;
        if logs.len() == 1 {
            Ok(())
        } else {
            Err(format!("{} binlogs left", logs.len()))
        }
    })
    .await;
    purged.expect("purging the binlogs before the current one");

    // `never` (and any mode but `when_needed`): the source stops with the position named.
    let mut refusing = group.clone();
    refusing.sources[0].snapshot = "never";
    let mut never = Tidemark::prepare(|state| refusing.render(state));
    never.spawn();
    let status = never
        .wait_exit(Duration::from_secs(60))
        .await
        .expect("a source whose position is lost stops, and with it its group");
    assert!(!status.success(), "a lost position must exit non-zero");
    let logs = never.logs();
    assert!(
        logs.contains("no longer on the server") && logs.contains("when_needed"),
        "the error names the lost position and the ways out: {logs}"
    );

    let status = tidemark_command(&["status", "--json"], &never.config_path);
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status[0]["state"], "failed", "{status}");
    assert!(
        status[0]["error"]
            .as_str()
            .is_some_and(|e| e.contains("no longer on the server")),
        "{status}"
    );

    // `when_needed`: copied again, rows deleted meanwhile deleted in the target too.
    tm.spawn();
    converge_pairs(&mut tm, &mut Source::Mysql(&mut conn), &wh.client, &pairs).await;
    let other = wh
        .value(&format!("SELECT count(*) FROM {schema}.other"))
        .await;
    assert_eq!(other.as_deref(), Some("0"));
    // And it streams on from there.
    exec(&mut conn, &["INSERT INTO other (id, v) VALUES (7, 7)"]).await;
    converge_pairs(&mut tm, &mut Source::Mysql(&mut conn), &wh.client, &pairs).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_added_to_include_is_copied_by_tidemark_snapshot_while_the_others_stream() {
    let mut rng = Rng::new(seed(
        "a_table_added_to_include_is_copied_by_tidemark_snapshot_while_the_others_stream",
    ));
    let mut ddl = workload_tables(&["a", "b"]);
    ddl.push(fill("a", 1_000));
    ddl.push(fill("b", 200_000));
    let wh = fresh_warehouse("snap_add").await;
    let mut s = MysqlSetup::prepare(wh, "snap_add", "add", &ddl, |g| {
        g.sources[0].snapshot = "initial";
        g.sources[0].extra.push_str("snapshot_chunk_rows = 5000\n");
    })
    .await;
    let only_a = format!("{}.a", s.db);
    s.group.sources[0].include = vec![only_a];
    s.tm = Tidemark::prepare(|state| s.group.render(state));
    s.tm.spawn();
    let writer = start_writer(
        s.source_url(),
        &["a", "b"],
        rng.next_u64(),
        220_000,
        Duration::from_millis(2),
    );
    s.converge(&["a"]).await;
    assert!(
        !s.wh.table_exists(&s.schema, "b").await,
        "b is not included yet"
    );

    // b joins `include`: the group restarts with the new config, then copies it on request.
    s.tm.terminate(Duration::from_secs(30)).await;
    let both = format!("{}.*", s.db);
    s.group.sources[0].include = vec![both];
    std::fs::write(&s.tm.config_path, s.group.render(&s.tm.dir().join("state"))).unwrap();
    s.tm.spawn();
    let table = format!("{}.b", s.db);
    let asked = tidemark_command(
        &["snapshot", "--source", "add", "--table", &table],
        &s.tm.config_path,
    );
    let said = String::from_utf8_lossy(&asked.stdout).to_string()
        + &String::from_utf8_lossy(&asked.stderr);
    assert_eq!(asked.status.code(), Some(0), "{said}");

    // While b is copied, a keeps streaming: a row written to a lands before the copy ends.
    support::poll::poll(Duration::from_secs(30), async || {
        snapshot_state(&s.wh, "add")
            .await
            .map(|_| ())
            .ok_or_else(|| "the copy has not started".to_string())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", s.tm.logs()));
    s.exec(&["INSERT INTO a (id, v) VALUES (5000000, 1)"]).await;
    let streamed_during_copy = support::poll::poll(Duration::from_secs(30), async || {
        let landed =
            s.wh.value(&format!(
                "SELECT count(*) FROM {}.a WHERE id = 5000000",
                s.schema
            ))
            .await;
        if landed.as_deref() == Some("1") {
            Ok(snapshot_state(&s.wh, "add").await.is_some())
        } else {
            Err("not yet".to_string())
        }
    })
    .await
    .unwrap_or_else(|e| panic!("a's row did not stream: {e}\n{}", s.tm.logs()));
    assert!(
        streamed_during_copy,
        "a's row landed only after b's copy ended: a did not keep streaming"
    );
    let stats = writer.stop().await;
    assert!(stats.commits > 20, "writer too slow: {stats:?}");
    s.converge_within(&["a", "b"], Duration::from_secs(120))
        .await;
    let handled =
        s.wh.value("SELECT count(*) FROM tidemark.snapshot_requests")
            .await;
    assert_eq!(handled.as_deref(), Some("0"), "the request is handled once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_that_cannot_be_copied_is_set_aside_mid_copy_and_the_copy_goes_on() {
    let mut ddl = workload_tables(&["a", "b", "c"]);
    ddl.push(fill("a", 1000));
    ddl.push(fill("b", 1000));
    ddl.push(fill("c", 1000));
    // Postgres text cannot hold a NUL: b's third chunk cannot be copied, its later chunks
    // are already waiting in the load order.
    ddl.push("UPDATE b SET s = CONCAT('nul', CHAR(0), 'here') WHERE id = 250".to_owned());
    let wh = fresh_warehouse("snap_aside_copy").await;
    let mut s = MysqlSetup::prepare(wh, "snap_aside_copy", "asidecopy", &ddl, |g| {
        g.sources[0].snapshot = "initial";
        g.sources[0]
            .extra
            .push_str("snapshot_chunk_rows = 100\nsnapshot_parallelism = 2\n");
    })
    .await;
    s.tm.spawn();
    s.exec(&["INSERT INTO c (id, v) VALUES (5000, 1)"]).await;
    s.converge(&["a", "c"]).await;
    let status = support::poll::poll(Duration::from_secs(30), async || {
        let out = tidemark_command(&["status", "--json"], &s.tm.config_path);
        let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        match status[0]["state"] == "streaming" {
            true => Ok(status),
            false => Err(format!("the copy did not finish without b: {status}")),
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", s.tm.logs()));
    assert_eq!(status[0]["set_aside"][0]["name"], "b", "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_that_cannot_be_applied_is_set_aside_and_brought_back_by_tidemark_snapshot() {
    let mut ddl = workload_tables(&["a", "b"]);
    ddl.push(fill("a", 100));
    ddl.push(fill("b", 100));
    let wh = fresh_warehouse("snap_aside").await;
    let mut s = MysqlSetup::prepare(wh, "snap_aside", "aside", &ddl, |g| {
        g.sources[0].snapshot = "initial";
    })
    .await;
    s.tm.spawn();
    s.converge(&["a", "b"]).await;

    // Postgres text cannot hold a NUL: b's change cannot be applied, a's can.
    s.exec(&[
        "INSERT INTO b (id, v, s) VALUES (1000, 1, CONCAT('nul', CHAR(0), 'here'))",
        "INSERT INTO a (id, v) VALUES (1000, 1)",
    ])
    .await;
    let status = |tm: &Tidemark| {
        let out = tidemark_command(&["status", "--json"], &tm.config_path);
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    support::poll::poll(Duration::from_secs(30), async || {
        let aside = status(&s.tm)[0]["set_aside"].clone();
        match aside.as_array().and_then(|a| a.first()) {
            Some(table) => Ok(table.clone()),
            None => Err(format!("nothing set aside yet: {aside}")),
        }
    })
    .await
    .map(|table| {
        assert_eq!(table["name"], "b");
        assert!(table["cause"].as_str().unwrap().contains("NUL"), "{table}");
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", s.tm.logs()));
    assert!(
        s.tm.logs().contains("--table ") && s.tm.logs().contains("table set aside"),
        "the log names the table and the way back"
    );
    s.converge(&["a"]).await;

    // Aside it stays across a crash; a streams on.
    s.tm.kill9();
    s.tm.spawn();
    s.exec(&[
        "UPDATE b SET s = 'fixed' WHERE id = 1000",
        "DELETE FROM b WHERE id = 7",
        "INSERT INTO a (id, v) VALUES (1001, 1)",
    ])
    .await;
    s.converge(&["a"]).await;
    let seven =
        s.wh.value(&format!("SELECT count(*) FROM {}.b WHERE id = 7", s.schema))
            .await;
    assert_eq!(
        seven.as_deref(),
        Some("1"),
        "b's changes are not applied while aside"
    );

    // Fixed at the source: `tidemark snapshot --table` brings it back.
    let table = format!("{}.b", s.db);
    let asked = std::process::Command::new(env!("CARGO_BIN_EXE_tidemark"))
        .args([
            "snapshot", "--source", "aside", "--table", &table, "--config",
        ])
        .arg(&s.tm.config_path)
        .output()
        .unwrap();
    assert_eq!(asked.status.code(), Some(0));
    s.converge(&["a", "b"]).await;
    s.exec(&["INSERT INTO b (id, v) VALUES (1002, 2)"]).await;
    s.converge(&["a", "b"]).await;
    let aside = status(&s.tm)[0]["set_aside"].clone();
    assert_eq!(aside, serde_json::json!([]), "b is back");
}

#[test]
fn tidemark_snapshot_refuses_unknown_sources_and_tables_it_does_not_replicate() {
    // Refused before the warehouse is reached: its address answers nothing.
    let mut source = SourceConfig::mysql("shop", "mysql://repl@127.0.0.1:1", "shop");
    source.snapshot = "initial";
    let group = GroupConfig::new("postgres://tidemark@127.0.0.1:1/warehouse", vec![source]);
    let tm = Tidemark::prepare(|state| group.render(state));
    let said = |args: &[&str]| {
        let out = tidemark_command(args, &tm.config_path);
        let text = String::from_utf8_lossy(&out.stderr).to_string();
        (out.status.code(), text)
    };
    let (code, text) = said(&["snapshot", "--source", "nope"]);
    assert_eq!(code, Some(2), "{text}");
    assert!(
        text.contains("no source has id `nope`") && text.contains("shop"),
        "{text}"
    );
    let (code, text) = said(&["snapshot", "--source", "shop", "--table", "other.t"]);
    assert_eq!(code, Some(2), "{text}");
    assert!(
        text.contains("does not replicate it") && text.contains("include"),
        "{text}"
    );
    let (code, text) = said(&["snapshot", "--source", "shop", "--table", "t"]);
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("expected database.table"), "{text}");
    // A warehouse that cannot be reached: exit 1, and nothing requested.
    let (code, text) = said(&["snapshot", "--source", "shop", "--table", "shop.t"]);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("nothing was requested"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn initial_only_copies_once_streams_nothing_and_copies_again_on_request() {
    let mut ddl = workload_tables(&["a"]);
    ddl.push(fill("a", 3_000));
    let wh = fresh_warehouse("snap_once").await;
    let mut s = MysqlSetup::prepare(wh, "snap_once", "once", &ddl, |g| {
        g.sources[0].snapshot = "initial_only";
        g.sources[0].extra.push_str("snapshot_chunk_rows = 1000\n");
    })
    .await;
    s.tm.spawn();
    s.converge(&["a"]).await;

    // No change log is read: a change stays out of the warehouse.
    s.exec(&[
        "DELETE FROM a WHERE id <= 10",
        "INSERT INTO a (id, v) VALUES (9000, 1)",
    ])
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rows =
        s.wh.value(&format!("SELECT count(*) FROM {}.a", s.schema))
            .await;
    assert_eq!(
        rows.as_deref(),
        Some("3000"),
        "initial_only streams nothing"
    );
    s.tm.assert_running("idle after the copy");

    // Asked to, it copies again (the deleted rows go, the new one comes).
    let asked = tidemark_command(&["snapshot", "--source", "once"], &s.tm.config_path);
    assert_eq!(asked.status.code(), Some(0));
    s.converge(&["a"]).await;
}
