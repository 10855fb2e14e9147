//! `tidemark run` end to end, warehouse outage: with a writer running, the (private) Postgres
//! warehouse is stopped for 30 s and started again on the same port; tidemark must keep running
//! through the outage, retrying, and converge afterwards with nothing lost or doubled.

mod support;

use std::time::{Duration, Instant};

use support::pipeline::{
    GroupConfig, Rng, SourceConfig, Tidemark, Writer, create_workload_tables, fresh_warehouse_on,
    seed, stop_instance, wait_checkpoint, wait_tables_equal, wait_until,
};

const INSTANCE: &str = "pipeline-warehouse-down";
const TABLES: [&str; 3] = ["accounts", "payments", "audit"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warehouse_outage_of_30s_is_survived_and_caught_up() {
    let mut rng = Rng::new(seed("warehouse_outage_of_30s_is_survived_and_caught_up"));
    let server = support::postgres_instance(INSTANCE, &[]);
    let mut wh = fresh_warehouse_on(&server, "pl_whdown").await;
    let (mut conn, db) = support::fresh_mysql_database("pl_whdown").await;
    create_workload_tables(&mut conn, &TABLES).await;
    let source = SourceConfig::mysql("whdown", &support::mysql_url(), &db);
    let schema = source.schema();
    let mut tm = Tidemark::start(&GroupConfig::new(&wh.url, vec![source]));
    wait_checkpoint(&mut tm, &wh, "whdown", Duration::from_secs(30)).await;

    let writer = Writer::start(
        support::mysql_url_for(&db),
        TABLES.iter().map(|t| t.to_string()).collect(),
        rng.next_u64(),
        200,
        Duration::from_millis(5),
    );
    writer.wait_commits(50).await;
    let loading = wait_until(Duration::from_secs(30), async || {
        wh.table_exists(&schema, "accounts").await
    })
    .await;
    assert!(loading, "nothing loaded before the outage");

    stop_instance("postgres-instance.sh", INSTANCE);
    let down_at = Instant::now();
    let log_before = tm.stderr().len();
    while down_at.elapsed() < Duration::from_secs(30) {
        tm.assert_running(&format!(
            "{:.0}s into the warehouse outage",
            down_at.elapsed().as_secs_f64()
        ));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let restarted = support::postgres_instance(INSTANCE, &[]);
    assert_eq!(restarted, server, "the instance keeps its port");
    wh.reconnect().await;
    let outage_log = tm.stderr()[log_before..].to_lowercase();
    writer.wait_commits(50).await;
    let stats = writer.stop().await;
    assert!(stats.commits > 100, "writer too slow: {stats:?}");

    // Backoff is capped at 30 s: allow one full wait plus the catch-up.
    wait_tables_equal(
        &mut tm,
        &mut conn,
        &wh,
        &db,
        &TABLES,
        &schema,
        Duration::from_secs(75),
    )
    .await;
    tm.assert_running("after catching up");
    assert!(
        outage_log.contains("retr") || outage_log.contains("attempt"),
        "the outage's load attempts are logged (docs/warehouse-postgres.md, Failures); \
         log during the outage:\n{outage_log}"
    );
}
