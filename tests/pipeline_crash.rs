//! `tidemark run` end to end, nothing lost or doubled across crashes: a continuous multi-table
//! writer (and a key-less, append-mode journal) runs against the source while tidemark is killed
//! with SIGKILL at 20 random moments and restarted each time, with binlog rotations and schema
//! changes in between; once the writers stop, every target table must equal its source table
//! with no key twice, and the journal must hold each committed row exactly once.

mod support;

use std::time::Duration;

use mysql_async::prelude::Queryable;
use support::pipeline::{
    JOURNAL_TABLE, JournalWriter, MysqlSetup, Rng, fresh_warehouse, seed, start_writer,
    wait_journal_equal, workload_tables,
};

const TABLES: [&str; 4] = ["orders", "items", "Customers", "events"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_random_moments_loses_and_doubles_nothing() {
    let seed = seed("kill_9_at_random_moments_loses_and_doubles_nothing");
    let mut rng = Rng::new(seed);
    let mut ddl = workload_tables(&TABLES);
    ddl.push(JOURNAL_TABLE.into());
    let mut s = MysqlSetup::start_with("pl_crash", "crash", &ddl, |g| {
        g.max_delay = "100ms".into();
        g.max_rows = 500;
    })
    .await;

    let journal = JournalWriter::start(s.source_url(), rng.next_u64());
    let writer = start_writer(
        s.source_url(),
        &TABLES,
        rng.next_u64(),
        300,
        Duration::from_millis(2),
    );
    writer.wait_commits(20).await;
    let mut positions = Vec::new();
    for kill in 1..=20 {
        tokio::time::sleep(rng.millis(100, 1500)).await;
        s.tm.assert_running(&format!("before kill {kill}"));
        s.tm.kill9();
        positions.push(s.wh.checkpoint("crash").await.unwrap_or_default());
        if rng.chance(30) {
            // Stay down a little while the writer goes on.
            tokio::time::sleep(rng.millis(50, 500)).await;
        }
        s.tm.spawn();
        // Schema changes and binlog rotations land between (and inside) crash windows.
        match kill % 5 {
            1 => s.conn.query_drop("FLUSH BINARY LOGS").await.unwrap(),
            3 => s.conn
                .query_drop(format!("ALTER TABLE events ADD COLUMN c{kill} INT"))
                .await
                .unwrap(),
            4 if kill == 4 => s.conn
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
        s.tm.runs() - 1,
        distinct.len()
    );
    s.converge(&TABLES).await;
    wait_journal_equal(&mut s.tm, &mut s.conn, &s.wh, &s.schema).await;
    s.tm.assert_running("after convergence");
    assert!(
        distinct.len() > 5,
        "checkpoints barely advanced between kills: {positions:?}"
    );
}

/// A crash right after the first start (before any batch) loses nothing: the start position
/// was recorded before reading.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_before_the_first_batch_loses_nothing() {
    let mut s = MysqlSetup::prepare(
        fresh_warehouse("pl_crash_first").await,
        "pl_crash_first",
        "first",
        &["CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(20))"],
        |_| {},
    )
    .await;
    let position = s.run().await;
    s.tm.kill9();
    s.conn
        .query_drop("INSERT INTO t VALUES (1, 'while down'), (2, 'while down')")
        .await
        .unwrap();
    s.conn
        .query_drop("UPDATE t SET v = 'updated' WHERE id = 2")
        .await
        .unwrap();
    s.tm.spawn();
    s.converge(&["t"]).await;
    assert_ne!(s.wh.checkpoint("first").await.unwrap(), position);
}
