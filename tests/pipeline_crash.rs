//! `tidemark run` end to end, nothing lost or doubled across crashes: a continuous multi-table
//! writer runs against the source while tidemark is killed with SIGKILL at 20 random moments and
//! restarted each time; once the writer stops, every target table must equal its source table
//! with no key twice.

mod support;

use std::time::Duration;

use support::pipeline::{
    GroupConfig, Rng, SourceConfig, Tidemark, Writer, create_workload_tables, fresh_warehouse,
    seed, wait_checkpoint, wait_tables_equal,
};

const TABLES: [&str; 4] = ["orders", "items", "Customers", "events"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_random_moments_loses_and_doubles_nothing() {
    let seed = seed("kill_9_at_random_moments_loses_and_doubles_nothing");
    let mut rng = Rng::new(seed);
    let (mut conn, db) = support::fresh_mysql_database("pl_crash").await;
    create_workload_tables(&mut conn, &TABLES).await;
    let wh = fresh_warehouse("pl_crash").await;
    let source = SourceConfig::mysql("crash", &support::mysql_url(), &db);
    let schema = source.schema();
    let mut group = GroupConfig::new(&wh.url, vec![source]);
    group.max_delay = "100ms".into();
    group.max_rows = 500;
    let mut tm = Tidemark::start(&group);
    wait_checkpoint(&mut tm, &wh, "crash", Duration::from_secs(30)).await;

    let writer = Writer::start(
        support::mysql_url_for(&db),
        TABLES.iter().map(|t| t.to_string()).collect(),
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
    }
    let stats = writer.stop().await;
    assert!(stats.commits > 100, "writer too slow: {stats:?}");
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
    tm.assert_running("after convergence");
    assert!(
        distinct.len() > 5,
        "checkpoints barely advanced between kills: {positions:?}"
    );
}
