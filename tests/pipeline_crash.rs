//! `tidemark run` end to end, nothing lost or doubled across crashes: a continuous multi-table
//! writer (and a key-less, append-mode journal) runs against the source while tidemark is killed
//! with SIGKILL at 20 random moments and restarted each time, with binlog rotations and schema
//! changes in between; once the writers stop, every target table must equal its source table
//! with no key twice, and the journal must hold each committed row exactly once.

mod support;

use std::time::Duration;

use mysql_async::prelude::Queryable;
use support::pipeline::{
    GroupConfig, JOURNAL_TABLE, JournalWriter, Rng, SourceConfig, Tidemark, Writer,
    create_workload_tables, fresh_warehouse, seed, start_pipeline, wait_checkpoint,
    wait_journal_equal, wait_tables_equal,
};

const TABLES: [&str; 4] = ["orders", "items", "Customers", "events"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_random_moments_loses_and_doubles_nothing() {
    let seed = seed("kill_9_at_random_moments_loses_and_doubles_nothing");
    let mut rng = Rng::new(seed);
    let (mut conn, db) = support::fresh_mysql_database("pl_crash").await;
    create_workload_tables(&mut conn, &TABLES).await;
    conn.query_drop(JOURNAL_TABLE).await.unwrap();
    let (wh, mut tm, schema) = start_pipeline("pl_crash", "crash", &db, |g| {
        g.max_delay = "100ms".into();
        g.max_rows = 500;
    })
    .await;

    let journal = JournalWriter::start(support::mysql_url_for(&db), rng.next_u64());
    let writer = Writer::start(
        support::mysql_url_for(&db),
        &TABLES,
        rng.next_u64(),
        300,
        Duration::from_millis(2),
    );
    writer.wait_commits(20).await;
    let mut positions = Vec::new();
    for kill in 1..=20 {
        tokio::time::sleep(rng.millis(100, 1500)).await;
        tm.assert_running(&format!("before kill {kill}"));
        tm.kill9();
        positions.push(wh.checkpoint("crash").await.unwrap_or_default());
        if rng.chance(30) {
            // Stay down a little while the writer goes on.
            tokio::time::sleep(rng.millis(50, 500)).await;
        }
        tm.spawn();
        // Schema changes and binlog rotations land between (and inside) crash windows.
        match kill % 5 {
            1 => conn.query_drop("FLUSH BINARY LOGS").await.unwrap(),
            3 => conn
                .query_drop(format!("ALTER TABLE events ADD COLUMN c{kill} INT"))
                .await
                .unwrap(),
            4 if kill == 4 => conn
                .query_drop("ALTER TABLE items MODIFY s VARCHAR(200) CHARACTER SET utf8mb4, MODIFY d DECIMAL(16,4)")
                .await
                .unwrap(),
            _ => {}
        }
    }
    let stats = writer.stop().await;
    assert!(stats.commits > 100, "writer too slow: {stats:?}");
    journal.stop().await;
    let distinct: std::collections::BTreeSet<&String> = positions.iter().collect();
    eprintln!(
        "{} restarts, {} distinct checkpoints at the kills",
        tm.runs() - 1,
        distinct.len()
    );
    wait_tables_equal(
        &mut tm,
        &mut conn,
        &wh,
        &db,
        &TABLES,
        &schema,
        Duration::from_secs(60),
    )
    .await;
    wait_journal_equal(&mut tm, &mut conn, &wh, &schema).await;
    tm.assert_running("after convergence");
    assert!(
        distinct.len() > 5,
        "checkpoints barely advanced between kills: {positions:?}"
    );
}

/// A crash right after the first start (before any batch) loses nothing: the start position
/// was recorded before reading.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_before_the_first_batch_loses_nothing() {
    let (mut conn, db) = support::fresh_mysql_database("pl_crash_first").await;
    conn.query_drop("CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(20))")
        .await
        .unwrap();
    let wh = fresh_warehouse("pl_crash_first").await;
    let source = SourceConfig::mysql("first", &support::mysql_url(), &db);
    let schema = source.schema();
    let mut tm = Tidemark::start(&GroupConfig::new(&wh.url, vec![source]));
    let position = wait_checkpoint(&mut tm, &wh, "first", Duration::from_secs(30)).await;
    tm.kill9();
    conn.query_drop("INSERT INTO t VALUES (1, 'while down'), (2, 'while down')")
        .await
        .unwrap();
    conn.query_drop("UPDATE t SET v = 'updated' WHERE id = 2")
        .await
        .unwrap();
    tm.spawn();
    wait_tables_equal(
        &mut tm,
        &mut conn,
        &wh,
        &db,
        &["t"],
        &schema,
        Duration::from_secs(60),
    )
    .await;
    assert_ne!(wh.checkpoint("first").await.unwrap(), position);
}
