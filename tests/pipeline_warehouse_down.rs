//! `tidemark run` end to end, warehouse outage: with a writer running, the (private) Postgres
//! warehouse is stopped for 30 s and started again on the same port; tidemark must keep running
//! through the outage, retrying, and converge afterwards with nothing lost or doubled. Also:
//! its warehouse connections terminated at random moments (mid-load, mid-COMMIT).

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use support::pipeline::{
    CommitDropProxy, JOURNAL_TABLE, JournalWriter, MysqlSetup, Rng, fresh_warehouse,
    fresh_warehouse_on, seed, start_writer, wait_journal_equal, wait_until, workload_tables,
};

const TABLES: [&str; 3] = ["accounts", "payments", "audit"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warehouse_outage_of_30s_is_survived_and_caught_up() {
    let mut rng = Rng::new(seed("warehouse_outage_of_30s_is_survived_and_caught_up"));
    let server = support::postgres_instance("pipeline-warehouse-down", &[]);
    let wh = fresh_warehouse_on(server.url(), "pl_whdown").await;
    let ddl = workload_tables(&TABLES);
    let mut s = MysqlSetup::prepare(wh, "pl_whdown", "whdown", &ddl, |_| {}).await;
    let schema = s.schema.clone();
    s.run().await;

    let writer = start_writer(
        s.source_url(),
        &TABLES,
        rng.next_u64(),
        200,
        Duration::from_millis(5),
    );
    writer.wait_commits(50).await;
    let loading = wait_until(Duration::from_secs(30), async || {
        s.wh.table_exists(&schema, "accounts").await
    })
    .await;
    assert!(loading, "nothing loaded before the outage");

    server.stop();
    let down_at = Instant::now();
    let log_before = s.tm.stderr().len();
    while down_at.elapsed() < Duration::from_secs(30) {
        s.tm.assert_running(&format!(
            "{:.0}s into the warehouse outage",
            down_at.elapsed().as_secs_f64()
        ));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let restarted = server.start_again();
    assert_eq!(restarted, server.url(), "the instance keeps its port");
    s.wh.reconnect().await;
    let outage_log = s.tm.stderr()[log_before..].to_lowercase();
    writer.wait_commits(50).await;
    let stats = writer.stop().await;
    assert!(stats.commits > 100, "writer too slow: {stats:?}");

    // Backoff is capped at 30 s: allow one full wait plus the catch-up.
    s.converge_within(&TABLES, Duration::from_secs(75)).await;
    s.tm.assert_running("after catching up");
    assert!(
        outage_log.contains("retr") || outage_log.contains("attempt"),
        "the outage's load attempts are logged (docs/warehouse-postgres.md, Failures); \
         log during the outage:\n{outage_log}"
    );
}

/// The warehouse server stays up but tidemark's connections are terminated at 30 random
/// moments (some land inside a load, some inside COMMIT): nothing may be lost, no key doubled,
/// and the append-mode journal must not get a batch twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warehouse_connections_killed_mid_load_lose_and_double_nothing() {
    let mut rng = Rng::new(seed("warehouse_connections_killed_mid_load"));
    let mut ddl = workload_tables(&TABLES);
    ddl.push(JOURNAL_TABLE.into());
    let mut s =
        MysqlSetup::start_with("pl_whkill", "whkill", &ddl, |g| g.max_delay = "50ms".into()).await;
    let journal = JournalWriter::start(s.source_url(), rng.next_u64());
    let writer = start_writer(
        s.source_url(),
        &TABLES,
        rng.next_u64(),
        200,
        Duration::from_millis(2),
    );
    writer.wait_commits(50).await;
    // For 12 s, look at tidemark's warehouse sessions every few ms and terminate a third of
    // those caught inside a transaction (loading, merging, committing).
    let own = s.wh.value("SELECT pg_backend_pid()::text").await.unwrap();
    let busy = format!(
        "SELECT pid::text, state, left(query, 20) FROM pg_stat_activity \
         WHERE datname = current_database() AND pid <> {own} \
         AND state IN ('active', 'idle in transaction')"
    );
    let mut terminated: BTreeMap<String, u32> = BTreeMap::new();
    let until = Instant::now() + Duration::from_secs(12);
    while Instant::now() < until {
        for row in s.wh.rows(&busy).await {
            if rng.chance(33) {
                let pid = row[0].clone().unwrap();
                s.wh.rows(&format!("SELECT pg_terminate_backend({pid})"))
                    .await;
                let what = format!(
                    "{} / {}",
                    row[1].clone().unwrap_or_default(),
                    row[2].clone().unwrap_or_default()
                );
                *terminated.entry(what).or_default() += 1;
            }
        }
        s.tm.assert_running("while its warehouse sessions are terminated");
        tokio::time::sleep(rng.millis(2, 20)).await;
    }
    eprintln!("terminated warehouse sessions (state / query: count): {terminated:?}");
    let stats = writer.stop().await;
    assert!(stats.commits > 100, "writer too slow: {stats:?}");
    journal.stop().await;
    s.converge_within(&TABLES, Duration::from_secs(75)).await;
    wait_journal_equal(&mut s.tm, &mut s.conn, &s.wh, &s.schema).await;
    s.tm.assert_running("after catching up");
}

/// docs/warehouse-postgres.md: "If the connection broke during COMMIT, tidemark reads the
/// checkpoint to learn whether the batch landed before it retries." A proxy closes the
/// connection right after 6 COMMITs succeeded on the server; the batches that did land must
/// not be applied again (the append-mode journal would show them twice).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_lost_after_a_successful_commit_applies_nothing_twice() {
    let mut rng = Rng::new(seed("connection_lost_after_a_successful_commit"));
    let wh = fresh_warehouse("pl_whcommit").await;
    let authority = wh.url.split('@').nth(1).unwrap().split('/').next().unwrap();
    let proxy = CommitDropProxy::start(authority.to_string(), 3, 6).await;
    let proxied = wh
        .url
        .replace(authority, &format!("127.0.0.1:{}", proxy.port));
    let mut ddl = workload_tables(&TABLES);
    ddl.push(JOURNAL_TABLE.into());
    // tidemark loads through the proxy; the test reads the warehouse directly.
    let mut s = MysqlSetup::prepare(wh, "pl_whcommit", "whcommit", &ddl, |g| {
        g.warehouse_url = proxied;
        g.max_delay = "50ms".into();
    })
    .await;
    s.run().await;
    let journal = JournalWriter::start(s.source_url(), rng.next_u64());
    let writer = start_writer(
        s.source_url(),
        &TABLES,
        rng.next_u64(),
        200,
        Duration::from_millis(3),
    );
    let all_dropped = wait_until(Duration::from_secs(60), async || {
        s.tm.assert_running("while COMMIT replies are lost");
        proxy.dropped() >= 6
    })
    .await;
    writer.wait_commits(50).await;
    writer.stop().await;
    journal.stop().await;
    eprintln!(
        "{} COMMITs through the proxy, {} replies lost",
        proxy.commits(),
        proxy.dropped()
    );
    assert!(
        all_dropped,
        "only {} of 6 COMMIT replies dropped in 60 s ({} COMMITs seen)",
        proxy.dropped(),
        proxy.commits()
    );
    s.converge_within(&TABLES, Duration::from_secs(75)).await;
    wait_journal_equal(&mut s.tm, &mut s.conn, &s.wh, &s.schema).await;
    s.tm.assert_running("after catching up");
}
