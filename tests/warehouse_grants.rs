//! A warehouse that refuses tidemark's statements for a reason an operator fixes (SQLSTATE class
//! 42: a revoked grant) makes the source wait and retry, saying what to fix, instead of stopping
//! it until tidemark is restarted; once the grant is back, the changes land.

mod support;

use std::time::Duration;

use mysql_async::prelude::Queryable;
use support::pipeline::{MysqlSetup, fresh_warehouse, target_ids, wait_until};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_warehouse_grant_makes_the_source_wait_and_resume_once_granted_again() {
    let wh = fresh_warehouse("revoked_grant").await;
    // tidemark loads as a role of its own, which owns the warehouse database.
    let role = format!("loader_{}", std::process::id());
    wh.client
        .batch_execute(&format!(
            "DROP ROLE IF EXISTS {role}; CREATE ROLE {role} LOGIN;
             ALTER DATABASE \"{db}\" OWNER TO {role};",
            db = wh.db
        ))
        .await
        .unwrap();
    let as_role = wh.url.replacen("postgres@", &format!("{role}@"), 1);
    let mut s = MysqlSetup::prepare(
        wh,
        "revoked_grant",
        "revoked",
        &["CREATE TABLE t (id INT PRIMARY KEY)"],
        |group| group.warehouse_url = as_role,
    )
    .await;
    s.run().await;
    let MysqlSetup {
        mut tm,
        conn: mut db,
        wh,
        schema,
        ..
    } = s;
    db.query_drop("INSERT INTO t VALUES (1)").await.unwrap();
    let landed = wait_until(Duration::from_secs(30), async || {
        target_ids(&wh, &schema).await == ["1"]
    })
    .await;
    assert!(landed, "{}", tm.logs());

    wh.client
        .batch_execute(&format!("REVOKE INSERT ON {schema}.t FROM {role}"))
        .await
        .unwrap();
    db.query_drop("INSERT INTO t VALUES (2)").await.unwrap();
    let told = wait_until(Duration::from_secs(30), async || {
        let log = tm.stderr();
        log.contains("source needs attention")
            && log.contains("permission denied")
            && log.contains("Fix: grant tidemark's warehouse role")
    })
    .await;
    assert!(
        told,
        "the operator must be told what to fix:\n{}",
        tm.logs()
    );
    tm.assert_running("a revoked grant must not stop the source for good");

    wh.client
        .batch_execute(&format!("GRANT INSERT ON {schema}.t TO {role}"))
        .await
        .unwrap();
    // The source is retried within a minute of the failure.
    let resumed = wait_until(Duration::from_secs(90), async || {
        target_ids(&wh, &schema).await == ["1", "2"]
    })
    .await;
    assert!(resumed, "{}", tm.logs());
    tm.terminate(Duration::from_secs(20)).await;
    wh.client
        .batch_execute(&format!(
            "ALTER DATABASE \"{db}\" OWNER TO postgres; REASSIGN OWNED BY {role} TO postgres; DROP OWNED BY {role}; DROP ROLE {role};",
            db = wh.db
        ))
        .await
        .unwrap();
}
