//! Deterministic crashes at each named point of the commit path (src/crash.rs): the process
//! aborts exactly there (as kill -9 would) while loading a batch of inserts, updates and
//! deletes of a keyed table and appends to a keyless one; after a restart the target equals the
//! source, with no change lost and no appended row twice. For a MySQL and a Postgres source.

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;
use support::pg_source::SlotGuard;
use support::pipeline::{
    GroupConfig, JOURNAL_TABLE, MysqlSetup, Source, SourceConfig, TablePair, Tidemark, Warehouse,
    fresh_warehouse, pg_rows, wait_checkpoint, wait_tables_equal,
};
use tidemark::crash;

const CONVERGE: Duration = Duration::from_secs(60);

/// Runs `tidemark run` on `tm`'s config with the crash point `point` armed, lets `write` make
/// the changes it must crash while loading, and waits for the abort.
async fn crash_at(tm: &Tidemark, point: &str, write: impl AsyncFnOnce()) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tidemark"))
        .args(["run", "--config"])
        .arg(&tm.config_path)
        .env("FAILPOINTS", format!("{point}=return"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning tidemark");
    write().await;
    let deadline = Instant::now() + CONVERGE;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("tidemark never reached crash point {point}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let stderr = child.wait_with_output().expect("stderr").stderr;
    let stderr = String::from_utf8_lossy(&stderr);
    assert!(!status.success(), "{status:?}: {stderr}");
    assert!(
        stderr.contains(&format!("crash point {point}")),
        "it must die at {point}: {stderr}"
    );
}

/// Every row of the keyless `journal` target exactly once: `(rows, distinct seqs)` in `schema`.
async fn journal_counts(wh: &Warehouse, schema: &str) -> (String, String) {
    let rows = pg_rows(
        &wh.client,
        &format!("SELECT count(*)::text, count(DISTINCT seq)::text FROM {schema}.journal"),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let row = &rows[0];
    (
        row[0].clone().unwrap_or_default(),
        row[1].clone().unwrap_or_default(),
    )
}

/// MySQL: batch 1 lands normally; batch 2 (updates, a delete, inserts, appends) crashes at
/// `point`; after a restart everything is equal and the journal holds each row once.
async fn mysql_crash_at(point: &str) {
    let mut s = MysqlSetup::start(
        &format!("crash_{point}"),
        "crash",
        &["CREATE TABLE t (id INT PRIMARY KEY, v INT)", JOURNAL_TABLE],
    )
    .await;
    s.exec(&[
        "START TRANSACTION; INSERT INTO t VALUES (1, 1), (2, 2), (3, 3);
         INSERT INTO journal VALUES (1, 'a'), (2, 'b'); COMMIT",
    ])
    .await;
    s.converge(&["t"]).await;
    s.tm.terminate(Duration::from_secs(20)).await;

    crash_at(&s.tm, point, async || {
        s.conn
            .query_drop(
                "START TRANSACTION; UPDATE t SET v = v * 10; DELETE FROM t WHERE id = 2;
                 INSERT INTO t VALUES (4, 4); INSERT INTO journal VALUES (3, 'c'), (4, 'd'); COMMIT",
            )
            .await
            .unwrap();
    })
    .await;

    s.tm.spawn();
    s.converge(&["t"]).await;
    assert_eq!(
        journal_counts(&s.wh, &s.schema).await,
        ("4".to_string(), "4".to_string()),
        "every journal row exactly once after a crash at {point}"
    );
    s.tm.terminate(Duration::from_secs(20)).await;
}

/// The same with a Postgres source (the keyless journal published with REPLICA IDENTITY FULL).
async fn postgres_crash_at(point: &str) {
    let source = fresh_warehouse(&format!("crash_{point}_src")).await;
    source
        .client
        .batch_execute(
            "CREATE TABLE t (id int PRIMARY KEY, v int);
             CREATE TABLE journal (seq bigint NOT NULL, note text);
             ALTER TABLE journal REPLICA IDENTITY FULL;",
        )
        .await
        .unwrap();
    let wh = fresh_warehouse(&format!("crash_{point}_wh")).await;
    let slot = format!("{}_slot", source.db.to_lowercase());
    let mut config = SourceConfig::postgres("crash", &source.url, &["public.*"]);
    config.extra.push_str(&format!("slot = \"{slot}\"\n"));
    let schema = config.schema();
    let mut tm = Tidemark::start(&GroupConfig::new(&wh.url, vec![config]));
    let _slot = SlotGuard {
        url: source.url.clone(),
        slot,
    };
    wait_checkpoint(&mut tm, &wh, "crash", Duration::from_secs(30)).await;
    source
        .client
        .batch_execute(
            "BEGIN; INSERT INTO t VALUES (1, 1), (2, 2), (3, 3);
             INSERT INTO journal VALUES (1, 'a'), (2, 'b'); COMMIT",
        )
        .await
        .unwrap();
    let pairs = [TablePair::new(("public", "t"), (&schema, "t"))];
    let mut from = Source::Postgres(&source.client);
    wait_tables_equal(&mut tm, &mut from, &wh.client, &pairs, CONVERGE).await;
    tm.terminate(Duration::from_secs(20)).await;

    crash_at(&tm, point, async || {
        source
            .client
            .batch_execute(
                "BEGIN; UPDATE t SET v = v * 10; DELETE FROM t WHERE id = 2;
                 INSERT INTO t VALUES (4, 4); INSERT INTO journal VALUES (3, 'c'), (4, 'd'); COMMIT",
            )
            .await
            .unwrap();
    })
    .await;

    tm.spawn();
    wait_tables_equal(&mut tm, &mut from, &wh.client, &pairs, CONVERGE).await;
    assert_eq!(
        journal_counts(&wh, &schema).await,
        ("4".to_string(), "4".to_string()),
        "every journal row exactly once after a crash at {point}"
    );
    tm.terminate(Duration::from_secs(20)).await;
}

/// One test per source kind and crash point, so they run side by side.
macro_rules! crash_tests {
    ($($name:ident: $scenario:ident at $point:ident;)*) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            $scenario(crash::$point).await;
        }
    )*};
}

crash_tests! {
    mysql_crash_after_staging_copy_loses_and_doubles_nothing: mysql_crash_at at AFTER_STAGING_COPY;
    mysql_crash_after_apply_loses_and_doubles_nothing: mysql_crash_at at AFTER_APPLY;
    mysql_crash_before_commit_loses_and_doubles_nothing: mysql_crash_at at BEFORE_COMMIT;
    mysql_crash_after_commit_before_ack_loses_and_doubles_nothing: mysql_crash_at at AFTER_COMMIT_BEFORE_ACK;
    postgres_crash_after_staging_copy_loses_and_doubles_nothing: postgres_crash_at at AFTER_STAGING_COPY;
    postgres_crash_after_apply_loses_and_doubles_nothing: postgres_crash_at at AFTER_APPLY;
    postgres_crash_before_commit_loses_and_doubles_nothing: postgres_crash_at at BEFORE_COMMIT;
    postgres_crash_after_commit_before_ack_loses_and_doubles_nothing: postgres_crash_at at AFTER_COMMIT_BEFORE_ACK;
}
