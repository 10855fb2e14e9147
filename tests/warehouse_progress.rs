//! The per-source progress record in a Postgres warehouse: it commits with the data, it carries
//! snapshot state and table schema versions, and a warehouse that an earlier release wrote
//! (`tidemark.checkpoints`) keeps every source's position.

mod support;

use std::time::Duration;

use mysql_async::prelude::Queryable;
use serde_json::json;
use support::pipeline::{MysqlSetup, Warehouse, fresh_warehouse};
use tidemark::config::SecretUrl;
use tidemark::event::ResumePoint;
use tidemark::sink::postgres::PostgresSink;
use tidemark::sink::{Batch, Sink, SnapshotProgress, TableVersion};

async fn sink(wh: &Warehouse) -> PostgresSink {
    let mut sink = PostgresSink::connect(&SecretUrl::new(wh.url.clone()))
        .await
        .expect("connect the sink");
    Sink::prepare(&mut sink).await.expect("control tables");
    sink
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_of_an_earlier_release_become_progress_records() {
    let wh = fresh_warehouse("progress_upgrade").await;
    wh.client
        .batch_execute(
            "CREATE SCHEMA tidemark;
             CREATE TABLE tidemark.checkpoints (
                 source_id text PRIMARY KEY,
                 resume_point jsonb NOT NULL,
                 position text NOT NULL,
                 source_commit_ts timestamptz,
                 committed_at timestamptz NOT NULL DEFAULT now());
             INSERT INTO tidemark.checkpoints VALUES
                 ('shop', '{\"kind\":\"binlog\",\"file\":\"binlog.000042\",\"pos\":330,\"gtid\":null}',
                  'binlog.000042:330', '2026-12-01 10:00:00+00', now())",
        )
        .await
        .unwrap();
    let mut sink = sink(&wh).await;
    // A second start finds everything in place.
    Sink::prepare(&mut sink)
        .await
        .expect("control tables again");
    let record = Sink::read_progress(&mut sink, "shop")
        .await
        .unwrap()
        .expect("the earlier checkpoint is kept");
    assert_eq!(
        record.progress.resume_point,
        ResumePoint::Binlog {
            file: "binlog.000042".into(),
            pos: 330,
            gtid: None
        }
    );
    assert_eq!(
        record.progress.source_commit_ts_micros,
        Some(1_796_119_200_000_000)
    );
    assert_eq!(record.progress.snapshot, None);
    let old = wh
        .client
        .query_one("SELECT to_regclass('tidemark.checkpoints') IS NULL", &[])
        .await
        .unwrap();
    assert!(old.get::<_, bool>(0), "tidemark.checkpoints is left behind");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_state_commits_with_its_batch_and_is_replaced_whole() {
    let wh = fresh_warehouse("progress_snapshot").await;
    let mut sink = sink(&wh).await;
    assert_eq!(Sink::read_progress(&mut sink, "pg").await.unwrap(), None);

    let state = SnapshotProgress(json!({"tables": {"public.orders": {"chunks_done": [0, 1, 2]}}}));
    let mut batch = Batch::position_only("pg".into(), ResumePoint::Lsn { lsn: 4096 });
    batch.progress.snapshot = Some(state.clone());
    Sink::apply(&mut sink, &mut batch).await.unwrap();
    assert!(Sink::committed(&mut sink, &batch).await.unwrap());
    let record = Sink::read_progress(&mut sink, "pg").await.unwrap().unwrap();
    assert_eq!(record.progress, batch.progress);

    // The next batch's progress replaces the record: a batch without snapshot state ends it.
    let mut next = Batch::position_only("pg".into(), ResumePoint::Lsn { lsn: 8192 });
    assert!(
        !Sink::committed(&mut sink, &next).await.unwrap(),
        "a batch not yet applied counts as committed"
    );
    Sink::apply(&mut sink, &mut next).await.unwrap();
    let record = Sink::read_progress(&mut sink, "pg").await.unwrap().unwrap();
    assert_eq!(record.progress.resume_point, ResumePoint::Lsn { lsn: 8192 });
    assert_eq!(record.progress.snapshot, None);
}

/// The recorded version of `table` in the progress record of the setup's source.
async fn version_of(s: &MysqlSetup, table: &str) -> TableVersion {
    let mut sink = sink(&s.wh).await;
    let record = Sink::read_progress(&mut sink, &s.source_id)
        .await
        .unwrap()
        .expect("a progress record");
    record
        .tables
        .into_iter()
        .find(|t| t.table.table == table && t.table.schema == s.schema)
        .unwrap_or_else(|| panic!("no version of {table}"))
}

fn column_names(version: &TableVersion) -> Vec<&str> {
    version.columns.iter().map(|(n, _)| n.as_str()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn table_versions_count_each_schema_change_once_across_restarts() {
    let mut s = MysqlSetup::start(
        "progress_versions",
        "versions",
        &["CREATE TABLE t (id INT PRIMARY KEY, a INT)"],
    )
    .await;
    s.exec(&["INSERT INTO t VALUES (1, 10)"]).await;
    s.converge(&["t"]).await;
    let first = version_of(&s, "t").await;
    assert_eq!(first.version, 1);
    assert_eq!(column_names(&first), ["id", "a"]);
    assert_eq!(first.columns[1].1, "integer");

    s.exec(&[
        "ALTER TABLE t ADD COLUMN note VARCHAR(20)",
        "INSERT INTO t VALUES (2, 20, 'two')",
    ])
    .await;
    s.converge(&["t"]).await;
    let second = version_of(&s, "t").await;
    assert_eq!(second.version, 2);
    assert_eq!(column_names(&second), ["id", "a", "note"]);

    // A restart looks at every table afresh; unchanged tables keep their version.
    s.tm.terminate(Duration::from_secs(30)).await;
    s.tm.spawn();
    s.conn
        .query_drop("INSERT INTO t VALUES (3, 30, 'three')")
        .await
        .unwrap();
    s.converge(&["t"]).await;
    assert_eq!(version_of(&s, "t").await.version, 2);

    s.exec(&[
        "RENAME TABLE t TO t2",
        "INSERT INTO t2 VALUES (4, 40, 'four')",
    ])
    .await;
    s.converge(&["t2"]).await;
    let renamed = version_of(&s, "t2").await;
    assert_eq!(renamed.version, 3, "the rename is a version of its own");
    assert_eq!(column_names(&renamed), ["id", "a", "note"]);
}
