//! The live binlog reader against the real private MariaDB: transactions, rollbacks, DDL,
//! GTIDs, resume without gap or repeat, reconnect, heartbeats and flat memory.

mod support;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;
use tidemark::event::{GtidState, Op, ResumePoint, SourceMessage, Value};
use tidemark::source::Source;
use tidemark::source::mysql::follow;
use tidemark::source::mysql::reader::{BinlogReader, ReaderOptions, StartPosition};

/// Replica server ids must be unique per connected reader; tests run in parallel processes.
fn server_id() -> u32 {
    static N: AtomicU32 = AtomicU32::new(0);
    1000 + (std::process::id() % 100_000) * 16 + N.fetch_add(1, Ordering::Relaxed)
}

fn options(url: &str) -> ReaderOptions {
    let mut o = ReaderOptions::new("test", url, server_id());
    o.heartbeat = Duration::from_secs(1);
    o.backoff_initial = Duration::from_millis(50);
    o.backoff_max = Duration::from_millis(500);
    o
}

/// One change as a test compares it: op, table name, before and after images.
type Change = (Op, String, Option<Vec<Value>>, Option<Vec<Value>>);

/// A committed transaction as the reader delivered it, restricted to one database.
#[derive(Debug, Clone, PartialEq)]
struct Txn {
    id: String,
    changes: Vec<Change>,
    ddl: Vec<String>,
    resume: ResumePoint,
}

/// Reads until a committed transaction touches `db`.`marker` with value `marker`, returning
/// the committed transactions of `db` (markers excluded) in order.
async fn read_until_marker(reader: &mut impl Source, db: &str, marker: i64) -> Vec<Txn> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut done = Vec::new();
    let mut open: Option<Txn> = None;
    let mut saw_marker = false;
    let mut batch = Vec::new();
    loop {
        assert!(Instant::now() < deadline, "marker {marker} never arrived");
        batch.clear();
        tokio::time::timeout(Duration::from_secs(30), reader.next_batch(&mut batch))
            .await
            .expect("reader stalled")
            .expect("reader failed");
        for message in batch.drain(..) {
            match message {
                SourceMessage::Begin(t) => {
                    assert!(open.is_none(), "Begin inside an open transaction");
                    open = Some(Txn {
                        id: t.id.clone(),
                        changes: vec![],
                        ddl: vec![],
                        resume: ResumePoint::Lsn { lsn: 0 },
                    });
                }
                SourceMessage::Change(c) if &*c.table.id.namespace == db => {
                    let txn = open.as_mut().expect("change outside a transaction");
                    if &*c.table.id.name == "marker" {
                        if c.after.as_ref().and_then(|r| r.first()) == Some(&Value::Int(marker)) {
                            saw_marker = true;
                        }
                        continue;
                    }
                    txn.changes
                        .push((c.op, c.table.id.name.to_string(), c.before, c.after));
                }
                SourceMessage::Ddl(d) if d.namespace == db => {
                    open.as_mut()
                        .expect("ddl outside a transaction")
                        .ddl
                        .push(d.statement);
                }
                SourceMessage::Commit(resume) => {
                    let mut txn = open.take().expect("Commit without Begin");
                    txn.resume = resume;
                    if !txn.changes.is_empty() || !txn.ddl.is_empty() {
                        done.push(txn);
                    }
                    if saw_marker {
                        return done;
                    }
                }
                SourceMessage::Rollback => {
                    open = None;
                }
                _ => {}
            }
        }
    }
}

async fn write_marker(conn: &mut mysql_async::Conn, marker: i64) {
    conn.query_drop(format!("INSERT INTO marker VALUES ({marker})"))
        .await
        .unwrap();
}

async fn setup(hint: &str) -> (mysql_async::Conn, String) {
    let (mut conn, db) = support::fresh_mysql_database(hint).await;
    conn.query_drop("CREATE TABLE marker (id BIGINT PRIMARY KEY)")
        .await
        .unwrap();
    (conn, db)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_arrive_whole_in_commit_order_and_rollbacks_never() {
    let (mut conn, db) = setup("txn_order").await;
    conn.query_drop("CREATE TABLE a (id INT PRIMARY KEY, v VARCHAR(20))")
        .await
        .unwrap();
    conn.query_drop("CREATE TABLE b (id INT PRIMARY KEY, n BIGINT UNSIGNED)")
        .await
        .unwrap();
    let mut reader = BinlogReader::connect(options(&support::mysql_url()), StartPosition::End)
        .await
        .unwrap();

    conn.query_drop(
        "BEGIN; INSERT INTO a VALUES (1,'x'),(2,'y'); INSERT INTO b VALUES (1, 18446744073709551615); UPDATE a SET v='z' WHERE id=1; COMMIT",
    )
    .await
    .unwrap();
    conn.query_drop("BEGIN; INSERT INTO a VALUES (99,'gone'); DELETE FROM b; ROLLBACK")
        .await
        .unwrap();
    conn.query_drop("DELETE FROM a WHERE id = 2").await.unwrap();
    conn.query_drop("ALTER TABLE a ADD COLUMN w INT")
        .await
        .unwrap();
    conn.query_drop("TRUNCATE TABLE b").await.unwrap();
    write_marker(&mut conn, 1).await;

    let txns = read_until_marker(&mut reader, &db, 1).await;
    let int = |i: i64| Value::Int(i);
    let text = |s: &str| Value::Text(s.to_owned());
    assert_eq!(txns.len(), 4, "{txns:#?}");
    assert_eq!(
        txns[0].changes,
        vec![
            (Op::Insert, "a".into(), None, Some(vec![int(1), text("x")])),
            (Op::Insert, "a".into(), None, Some(vec![int(2), text("y")])),
            (
                Op::Insert,
                "b".into(),
                None,
                Some(vec![int(1), Value::UInt(u64::MAX)])
            ),
            (
                Op::Update,
                "a".into(),
                Some(vec![int(1), text("x")]),
                Some(vec![int(1), text("z")])
            ),
        ]
    );
    assert_eq!(
        txns[1].changes,
        vec![(Op::Delete, "a".into(), Some(vec![int(2), text("y")]), None)]
    );
    assert_eq!(
        txns[2].ddl,
        vec!["ALTER TABLE a ADD COLUMN w INT".to_owned()]
    );
    assert_eq!(
        txns[3].changes,
        vec![(Op::Truncate, "b".into(), None, None)]
    );
    // GTIDs identify every transaction and the resume points carry the GTID position.
    for t in &txns {
        assert!(t.id.starts_with("0-1-"), "{}", t.id);
        match &t.resume {
            ResumePoint::Binlog {
                gtid: Some(GtidState::Mariadb(g)),
                ..
            } => assert!(g.contains(&t.id), "{g} lacks {}", t.id),
            other => panic!("resume point without GTID: {other:?}"),
        }
    }
    reader.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_keeps_non_transactional_changes_that_persisted() {
    let (mut conn, db) = setup("mixed_rollback").await;
    conn.query_drop("CREATE TABLE inno (id INT PRIMARY KEY) ENGINE=InnoDB")
        .await
        .unwrap();
    conn.query_drop("CREATE TABLE my (id INT PRIMARY KEY) ENGINE=MyISAM")
        .await
        .unwrap();
    let mut reader = BinlogReader::connect(options(&support::mysql_url()), StartPosition::End)
        .await
        .unwrap();
    // MyISAM cannot roll back: its row stays on the source, so it must reach the target too.
    conn.query_drop("BEGIN; INSERT INTO inno VALUES (1); INSERT INTO my VALUES (2); ROLLBACK")
        .await
        .unwrap();
    write_marker(&mut conn, 3).await;
    let txns = read_until_marker(&mut reader, &db, 3).await;
    let changes: Vec<&Change> = txns.iter().flat_map(|t| &t.changes).collect();
    assert_eq!(
        changes,
        vec![&(Op::Insert, "my".to_owned(), None, Some(vec![Value::Int(2)]))]
    );
    let on_source: Vec<i64> = conn
        .query("SELECT id FROM my UNION ALL SELECT id FROM inno")
        .await
        .unwrap();
    assert_eq!(on_source, vec![2]);
    reader.close().await;
}

/// Starts a reader at `start`, reads to `marker`, returns what it saw.
async fn read_from(start: StartPosition, db: &str, marker: i64) -> Vec<Txn> {
    let mut reader = BinlogReader::connect(options(&support::mysql_url()), start)
        .await
        .unwrap();
    let txns = read_until_marker(&mut reader, db, marker).await;
    reader.close().await;
    txns
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resuming_from_any_commit_neither_skips_nor_repeats() {
    let (mut conn, db) = setup("resume").await;
    conn.query_drop("CREATE TABLE t (id INT PRIMARY KEY, v INT)")
        .await
        .unwrap();
    let mut reader = BinlogReader::connect(options(&support::mysql_url()), StartPosition::End)
        .await
        .unwrap();
    for i in 0..30 {
        conn.query_drop(format!(
            "BEGIN; INSERT INTO t VALUES ({i}, {i}); UPDATE t SET v = v + 1 WHERE id <= {i}; COMMIT"
        ))
        .await
        .unwrap();
        if i % 7 == 3 {
            // A server-side rotate in the middle: positions must survive file changes.
            conn.query_drop("FLUSH BINARY LOGS").await.unwrap();
        }
    }
    write_marker(&mut conn, 7).await;
    let all = read_until_marker(&mut reader, &db, 7).await;
    reader.close().await;
    assert_eq!(all.len(), 30);
    let ids: BTreeSet<&str> = all.iter().map(|t| t.id.as_str()).collect();
    assert_eq!(ids.len(), 30, "transaction ids repeat");

    for cut in [0usize, 1, 4, 11, 17, 28] {
        let ResumePoint::Binlog { file, pos, gtid } = all[cut].resume.clone() else {
            panic!("not a binlog resume point");
        };
        // By GTID position (the default when the checkpoint has one) ...
        let by_gtid = read_from(
            StartPosition::Resume(ResumePoint::Binlog {
                file: file.clone(),
                pos,
                gtid: gtid.clone(),
            }),
            &db,
            7,
        )
        .await;
        assert_eq!(by_gtid, all[cut + 1..].to_vec(), "GTID resume after #{cut}");
        // ... and by file/offset alone.
        let by_offset = read_from(
            StartPosition::Resume(ResumePoint::Binlog {
                file,
                pos,
                gtid: None,
            }),
            &db,
            7,
        )
        .await;
        let strip = |v: &[Txn]| {
            v.iter()
                .map(|t| (t.id.clone(), t.changes.clone()))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            strip(&by_offset),
            strip(&all[cut + 1..]),
            "file/pos resume after #{cut}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_connection_reconnects_and_loses_nothing() {
    let server = support::mariadb_instance("stream-reconnect", &[]);
    let url = server.url();
    let db = format!("reconnect_{}", std::process::id());
    let mut admin = support::mysql_conn(url).await;
    admin
        .query_drop(format!("CREATE DATABASE `{db}`"))
        .await
        .unwrap();
    let mut conn = support::mysql_conn(&format!("{url}/{db}")).await;
    conn.query_drop("CREATE TABLE marker (id BIGINT PRIMARY KEY)")
        .await
        .unwrap();
    conn.query_drop("CREATE TABLE t (id INT PRIMARY KEY)")
        .await
        .unwrap();
    let mut reader = follow(options(url), StartPosition::End).await.unwrap();
    let writer = tokio::spawn({
        let url = format!("{url}/{db}");
        async move {
            let mut conn = support::mysql_conn(&url).await;
            for i in 0..300 {
                conn.query_drop(format!("INSERT INTO t VALUES ({i})"))
                    .await
                    .unwrap();
                if i % 60 == 30 {
                    // Kill every binlog dump connection: the reader must come back by itself.
                    let ids: Vec<u64> = conn
                        .query("SELECT id FROM information_schema.processlist WHERE command LIKE 'Binlog Dump%'")
                        .await
                        .unwrap();
                    for id in ids {
                        let _ = conn.query_drop(format!("KILL CONNECTION {id}")).await;
                    }
                }
            }
            write_marker(&mut conn, 300).await;
        }
    });
    let txns = read_until_marker(&mut reader, &db, 300).await;
    writer.await.unwrap();
    let ids: Vec<Value> = txns
        .iter()
        .flat_map(|t| t.changes.iter().map(|c| c.3.as_ref().unwrap()[0].clone()))
        .collect();
    assert_eq!(ids, (0..300).map(Value::Int).collect::<Vec<_>>());
    assert!(
        reader.reconnects() >= 1,
        "the dump connection was never killed"
    );
    Box::new(reader).close().await;
    admin
        .query_drop(format!("DROP DATABASE `{db}`"))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_server_sends_heartbeats_with_the_resume_point() {
    let server = support::mariadb_instance("stream-idle", &[]);
    let url = server.url();
    let mut reader = BinlogReader::connect(options(url), StartPosition::End)
        .await
        .unwrap();
    let expected = reader.resume_point();
    let mut batch = Vec::new();
    let started = Instant::now();
    let mut heartbeats = 0;
    while heartbeats < 2 {
        assert!(started.elapsed() < Duration::from_secs(20), "no heartbeats");
        batch.clear();
        reader.next_batch(&mut batch).await.unwrap();
        for m in &batch {
            if let SourceMessage::Heartbeat(point) = m {
                heartbeats += 1;
                let (ResumePoint::Binlog { file: f1, .. }, ResumePoint::Binlog { file: f2, .. }) =
                    (point, &expected)
                else {
                    panic!("not a binlog point");
                };
                assert_eq!(f1, f2);
            }
        }
    }
    reader.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_is_an_operator_error_without_the_password() {
    let url = support::mysql_url().replace("root@", "root:s3cr3t-pw@");
    let err = BinlogReader::connect(options(&url), StartPosition::End)
        .await
        .err()
        .expect("connect with a wrong password succeeded");
    assert_eq!(err.kind(), tidemark::error::ErrorKind::Operator, "{err}");
    let shown = format!("{err} {err:?}");
    assert!(!shown.contains("s3cr3t-pw"), "password leaked: {shown}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_row_images_stop_replication_with_the_fix() {
    let server = support::mariadb_instance("stream-minimal-image", &["--binlog-row-image=MINIMAL"]);
    let url = server.url();
    let db = format!("minimal_{}", std::process::id());
    let mut conn = support::mysql_conn(url).await;
    conn.query_drop(format!(
        "CREATE DATABASE `{db}`; CREATE TABLE `{db}`.t (id INT PRIMARY KEY, a INT, b INT)"
    ))
    .await
    .unwrap();
    let mut reader = BinlogReader::connect(options(url), StartPosition::End)
        .await
        .unwrap();
    conn.query_drop(format!("INSERT INTO `{db}`.t VALUES (1, 2, 3)"))
        .await
        .unwrap();
    conn.query_drop(format!("UPDATE `{db}`.t SET a = 5 WHERE id = 1"))
        .await
        .unwrap();
    let mut batch = Vec::new();
    let err = loop {
        match reader.next_batch(&mut batch).await {
            Ok(()) => batch.clear(),
            Err(e) => break e,
        }
    };
    assert_eq!(err.kind(), tidemark::error::ErrorKind::Operator, "{err}");
    assert!(err.to_string().contains("binlog_row_image='FULL'"), "{err}");
    conn.query_drop(format!("DROP DATABASE `{db}`"))
        .await
        .unwrap();
}

/// Peak resident memory of this process (VmHWM), in bytes.
fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    let kb: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kb * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn million_row_transaction_streams_with_flat_memory() {
    let (mut conn, db) = setup("million").await;
    conn.query_drop("CREATE TABLE big (id BIGINT PRIMARY KEY, pad VARCHAR(64))")
        .await
        .unwrap();
    let mut reader = BinlogReader::connect(options(&support::mysql_url()), StartPosition::End)
        .await
        .unwrap();
    conn.query_drop("INSERT INTO big SELECT seq, REPEAT('x', 60) FROM seq_1_to_1000000")
        .await
        .unwrap();
    write_marker(&mut conn, 1).await;
    let before = peak_rss();
    let deadline = Instant::now() + Duration::from_secs(300);
    let (mut rows, mut last_id, mut committed) = (0u64, 0i64, false);
    let mut batch = Vec::new();
    while !committed {
        assert!(Instant::now() < deadline, "too slow");
        batch.clear();
        reader.next_batch(&mut batch).await.unwrap();
        for m in batch.drain(..) {
            match m {
                SourceMessage::Change(c)
                    if *c.table.id.namespace == *db && &*c.table.id.name == "big" =>
                {
                    let Some(Value::Int(id)) = c.after.as_ref().map(|r| r[0].clone()) else {
                        panic!("bad row");
                    };
                    assert_eq!(id, last_id + 1, "rows out of order");
                    last_id = id;
                    rows += 1;
                }
                SourceMessage::Commit(_) if rows > 0 => committed = true,
                _ => {}
            }
        }
    }
    assert_eq!(rows, 1_000_000);
    let growth = peak_rss().saturating_sub(before);
    assert!(
        growth < 64 << 20,
        "peak RSS grew by {} MiB while streaming",
        growth >> 20
    );
    reader.close().await;
}
