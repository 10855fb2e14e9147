//! `tidemark run` end to end, order per key: many updates of one key inside one batch and across
//! batches, primary-key-changing updates (including key shifts where every new key is another
//! row's old key), delete and re-insert of one key, append mode for a table without a key, and
//! transactions spanning several tables (never visible half-applied in the warehouse).

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use mysql_async::prelude::Queryable;
use support::pipeline::{CONVERGE, MysqlSetup, Rng, Warehouse, seed, wait_until};

/// The source id of every test here.
const SOURCE: &str = "ordering";

/// `(id, _tidemark_op)` of every target row, by id.
async fn ops(wh: &Warehouse, schema: &str, table: &str) -> Vec<(String, String)> {
    wh.rows(&format!(
        "SELECT id::text, _tidemark_op FROM \"{schema}\".\"{table}\" ORDER BY id"
    ))
    .await
    .into_iter()
    .map(|r| (r[0].clone().unwrap(), r[1].clone().unwrap_or_default()))
    .collect()
}

/// Reads the single value of `probe` every `every` until `writer` has finished (then awaits it):
/// how many times each value was seen.
async fn sample_until_done(
    wh: &Warehouse,
    probe: &str,
    writer: tokio::task::JoinHandle<()>,
    every: Duration,
) -> BTreeMap<String, u32> {
    let mut observed = BTreeMap::new();
    while !writer.is_finished() {
        let value = wh.value(probe).await.unwrap_or_default();
        *observed.entry(value).or_insert(0) += 1;
        tokio::time::sleep(every).await;
    }
    writer.await.unwrap();
    observed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_updates_to_one_key_apply_in_commit_order() {
    let mut s = MysqlSetup::start(
        "pl_upd",
        SOURCE,
        &["CREATE TABLE counter (id INT PRIMARY KEY, v INT NOT NULL, s VARCHAR(20))"],
    )
    .await;
    let schema = s.schema.clone();
    s.conn
        .query_drop("INSERT INTO counter VALUES (1, 0, 'v0'), (2, 0, 'v0'), (3, 0, 'v0')")
        .await
        .unwrap();
    // Within one batch: 300 autocommit updates of key 1 and one transaction updating key 2
    // 200 times.
    for _ in 0..300 {
        s.conn
            .query_drop("UPDATE counter SET v = v + 1, s = CONCAT('v', v) WHERE id = 1")
            .await
            .unwrap();
    }
    s.conn.query_drop("BEGIN").await.unwrap();
    for _ in 0..200 {
        s.conn
            .query_drop("UPDATE counter SET v = v + 1, s = CONCAT('v', v) WHERE id = 2")
            .await
            .unwrap();
    }
    s.conn.query_drop("COMMIT").await.unwrap();
    s.converge(&["counter"]).await;

    // Across batches: each update of key 3 waits until the previous one landed.
    for _ in 0..6 {
        s.conn
            .query_drop("UPDATE counter SET v = v + 1, s = CONCAT('v', v) WHERE id = 3")
            .await
            .unwrap();
        s.converge(&["counter"]).await;
    }
    // Interleaved updates of all keys, multi-row statements included.
    for i in 0..100 {
        let sql = match i % 3 {
            0 => "UPDATE counter SET v = v * 2 % 1000003, s = CONCAT('m', v)",
            1 => "UPDATE counter SET v = v + 7 WHERE id IN (1, 3)",
            _ => "UPDATE counter SET s = CONCAT(s, 'x') WHERE id = 2 AND LENGTH(s) < 18",
        };
        s.conn.query_drop(sql).await.unwrap();
    }
    s.converge(&["counter"]).await;
    assert_eq!(
        ops(&s.wh, &schema, "counter").await,
        [("1", "update"), ("2", "update"), ("3", "update")]
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .to_vec(),
        "_tidemark_op is the last change applied"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn primary_key_changes_move_rows() {
    let mut s = MysqlSetup::start(
        "pl_pk",
        SOURCE,
        &["CREATE TABLE pk (id INT PRIMARY KEY, v VARCHAR(10))"],
    )
    .await;
    let values: Vec<String> = (1..=10).map(|i| format!("({i}, 'r{i}')")).collect();
    s.conn
        .query_drop(format!("INSERT INTO pk VALUES {}", values.join(", ")))
        .await
        .unwrap();
    s.converge(&["pk"]).await;

    // Each change in its own batch.
    let steps = [
        "UPDATE pk SET id = 100 WHERE id = 1",
        // Every new key is another row's old key.
        "UPDATE pk SET id = id + 1 ORDER BY id DESC",
        "UPDATE pk SET id = id - 1 ORDER BY id ASC",
    ];
    for step in steps {
        s.conn.query_drop(step).await.unwrap();
        s.converge(&["pk"]).await;
    }
    // All in one batch, key reuse inside transactions included.
    s.conn
        .query_drop("UPDATE pk SET id = id + 1 ORDER BY id DESC")
        .await
        .unwrap();
    s.conn.query_drop("BEGIN").await.unwrap();
    s.conn
        .query_drop("UPDATE pk SET id = 50 WHERE id = 3")
        .await
        .unwrap();
    s.conn
        .query_drop("UPDATE pk SET id = 3 WHERE id = 4")
        .await
        .unwrap();
    s.conn.query_drop("COMMIT").await.unwrap();
    // Swap the rows of keys 5 and 6 through a temporary key.
    s.conn.query_drop("BEGIN").await.unwrap();
    for sql in [
        "UPDATE pk SET id = 0 WHERE id = 5",
        "UPDATE pk SET id = 5 WHERE id = 6",
        "UPDATE pk SET id = 6 WHERE id = 0",
    ] {
        s.conn.query_drop(sql).await.unwrap();
    }
    s.conn.query_drop("COMMIT").await.unwrap();
    s.conn
        .query_drop(
            "UPDATE pk SET id = id + 1000, v = CONCAT(v, '+') WHERE id > 6 ORDER BY id DESC",
        )
        .await
        .unwrap();
    s.conn
        .query_drop("UPDATE pk SET id = 7 WHERE id = 1008")
        .await
        .unwrap();
    s.converge(&["pk"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_and_reinsert_of_one_key() {
    let mut s = MysqlSetup::start(
        "pl_reins",
        SOURCE,
        &["CREATE TABLE d (id INT PRIMARY KEY, v VARCHAR(10))"],
    )
    .await;
    let schema = s.schema.clone();
    s.conn
        .query_drop("INSERT INTO d VALUES (1, 'a'), (2, 'b'), (3, 'c'), (6, 'f')")
        .await
        .unwrap();
    s.converge(&["d"]).await;

    // One batch: delete + insert (separate transactions), delete + insert in one transaction,
    // insert + delete, insert/delete/insert/delete, REPLACE of an existing key.
    for sql in [
        "DELETE FROM d WHERE id = 1",
        "INSERT INTO d VALUES (1, 'new')",
        "BEGIN",
        "DELETE FROM d WHERE id = 2",
        "INSERT INTO d VALUES (2, 'again')",
        "COMMIT",
        "INSERT INTO d VALUES (4, 'short')",
        "DELETE FROM d WHERE id = 4",
        "INSERT INTO d VALUES (5, 'x')",
        "DELETE FROM d WHERE id = 5",
        "INSERT INTO d VALUES (5, 'y')",
        "DELETE FROM d WHERE id = 5",
        "REPLACE INTO d VALUES (6, 'replaced')",
    ] {
        s.conn.query_drop(sql).await.unwrap();
    }
    s.converge(&["d"]).await;
    let after = ops(&s.wh, &schema, "d").await;
    assert_eq!(
        after.iter().find(|(id, _)| id == "1").map(|r| r.1.as_str()),
        Some("insert"),
        "re-inserted key 1: _tidemark_op is the last change ({after:?})"
    );
    assert_eq!(
        after.iter().find(|(id, _)| id == "2").map(|r| r.1.as_str()),
        Some("insert"),
        "re-inserted key 2: _tidemark_op is the last change ({after:?})"
    );

    // Across batches.
    s.conn
        .query_drop("DELETE FROM d WHERE id = 3")
        .await
        .unwrap();
    s.converge(&["d"]).await;
    s.conn
        .query_drop("INSERT INTO d VALUES (3, 'back')")
        .await
        .unwrap();
    s.converge(&["d"]).await;
    s.conn.query_drop("DELETE FROM d").await.unwrap();
    s.converge(&["d"]).await;
    s.conn
        .query_drop("INSERT INTO d VALUES (1, 'last')")
        .await
        .unwrap();
    s.converge(&["d"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn table_without_key_is_loaded_in_append_mode() {
    let mut s = MysqlSetup::start(
        "pl_append",
        SOURCE,
        &["CREATE TABLE nokey_events (a INT, b VARCHAR(10))"],
    )
    .await;
    let schema = s.schema.clone();
    // One change per transaction, in two batches.
    for sql in [
        "INSERT INTO nokey_events VALUES (1, 'x')",
        "INSERT INTO nokey_events VALUES (2, 'y')",
        "INSERT INTO nokey_events VALUES (2, 'y')",
    ] {
        s.conn.query_drop(sql).await.unwrap();
    }
    let count = async |wh: &Warehouse| {
        wh.value(&format!(
            "SELECT count(*) FROM \"{schema}\".nokey_events WHERE to_regclass('\"{schema}\".nokey_events') IS NOT NULL"
        ))
        .await
    };
    let _ = wait_until(CONVERGE, async || {
        s.wh.table_exists(&schema, "nokey_events").await
            && count(&s.wh).await.as_deref() == Some("3")
    })
    .await;
    for sql in [
        "UPDATE nokey_events SET b = 'z' WHERE a = 1",
        "DELETE FROM nokey_events WHERE a = 2",
        "INSERT INTO nokey_events VALUES (NULL, NULL)",
    ] {
        s.conn.query_drop(sql).await.unwrap();
    }
    let expected: Vec<Vec<Option<String>>> = [
        (Some("1"), Some("x"), "insert"),
        (Some("2"), Some("y"), "insert"),
        (Some("2"), Some("y"), "insert"),
        (Some("1"), Some("z"), "update"),
        (Some("2"), Some("y"), "delete"),
        (Some("2"), Some("y"), "delete"),
        (None, None, "insert"),
    ]
    .iter()
    .map(|(a, b, op)| {
        vec![
            a.map(String::from),
            b.map(String::from),
            Some(op.to_string()),
        ]
    })
    .collect();
    let sql = format!(
        "SELECT a::text, b, _tidemark_op FROM \"{schema}\".nokey_events \
         ORDER BY _tidemark_position, _tidemark_op"
    );
    let mut last = Vec::new();
    let done = wait_until(CONVERGE, async || {
        last = if s.wh.table_exists(&schema, "nokey_events").await {
            s.wh.rows(&sql).await
        } else {
            Vec::new()
        };
        last == expected
    })
    .await;
    s.tm.assert_running("append mode");
    assert!(
        done,
        "append-mode rows in change order:\n expected {expected:?}\n got      {last:?}"
    );
    let positions = s.wh
        .rows(&format!(
            "SELECT count(*) FILTER (WHERE _tidemark_position IS NULL OR _tidemark_commit_ts IS NULL \
             OR _tidemark_loaded_at IS NULL)::text FROM \"{schema}\".nokey_events"
        ))
        .await;
    assert_eq!(
        positions[0][0].as_deref(),
        Some("0"),
        "metadata columns filled"
    );
    let warnings =
        s.tm.stderr()
            .lines()
            .filter(|l| l.contains("WARN") && l.contains("nokey_events"))
            .count();
    assert_eq!(
        warnings, 1,
        "tidemark warns once per table without a key (found {warnings} warnings naming nokey_events)"
    );
}

/// Transfers between accounts in two tables plus a ledger row, in one transaction each; the
/// warehouse must never show a transfer half-applied (sum of both tables constant), and ends
/// equal to the source.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_table_transactions_land_whole() {
    let mut s = MysqlSetup::start(
        "pl_multi", SOURCE,
        &[
            "CREATE TABLE acct_a (id INT PRIMARY KEY, bal BIGINT NOT NULL)",
            "CREATE TABLE acct_b (id INT PRIMARY KEY, bal BIGINT NOT NULL)",
            "CREATE TABLE ledger (id INT AUTO_INCREMENT PRIMARY KEY, src VARCHAR(8), dst VARCHAR(8), amount BIGINT)",
        ],
    )
    .await;
    let schema = s.schema.clone();
    s.conn.query_drop("BEGIN").await.unwrap();
    for t in ["acct_a", "acct_b"] {
        let rows: Vec<String> = (1..=20).map(|i| format!("({i}, 1000)")).collect();
        s.conn
            .query_drop(format!("INSERT INTO {t} VALUES {}", rows.join(", ")))
            .await
            .unwrap();
    }
    s.conn
        .query_drop("INSERT INTO ledger (src, dst, amount) VALUES ('init', 'init', 40000)")
        .await
        .unwrap();
    s.conn.query_drop("COMMIT").await.unwrap();
    let tables = ["acct_a", "acct_b", "ledger"];
    s.converge(&tables).await;

    let url = s.source_url();
    let mut rng = Rng::new(seed("multi_table_transactions_land_whole"));
    let writer = tokio::spawn(async move {
        let mut c = support::mysql_conn(&url).await;
        for n in 0..400u64 {
            let (from, to) = if rng.chance(50) {
                ("acct_a", "acct_b")
            } else {
                ("acct_b", "acct_a")
            };
            let (i, j) = (rng.between(1, 20), rng.between(1, 20));
            let amount = rng.between(1, 50);
            c.query_drop("BEGIN").await.unwrap();
            if n % 10 == 9 {
                // Move a whole account: delete on one side, insert (or add) on the other.
                let bal: Option<i64> = c
                    .query_first(format!("SELECT bal FROM {from} WHERE id = {i}"))
                    .await
                    .unwrap();
                if let Some(bal) = bal {
                    c.query_drop(format!("DELETE FROM {from} WHERE id = {i}"))
                        .await
                        .unwrap();
                    c.query_drop(format!(
                        "INSERT INTO {to} VALUES ({i}, {bal}) ON DUPLICATE KEY UPDATE bal = bal + {bal}"
                    ))
                    .await
                    .unwrap();
                }
            } else {
                c.query_drop(format!(
                    "INSERT INTO {from} VALUES ({i}, -{amount}) ON DUPLICATE KEY UPDATE bal = bal - {amount}"
                ))
                .await
                .unwrap();
                c.query_drop(format!(
                    "INSERT INTO {to} VALUES ({j}, {amount}) ON DUPLICATE KEY UPDATE bal = bal + {amount}"
                ))
                .await
                .unwrap();
            }
            c.query_drop(format!(
                "INSERT INTO ledger (src, dst, amount) VALUES ('{from}', '{to}', {amount})"
            ))
            .await
            .unwrap();
            c.query_drop("COMMIT").await.unwrap();
            tokio::time::sleep(Duration::from_millis(3)).await;
        }
    });

    // While transfers flow, every warehouse snapshot must show whole transactions only.
    let probe = format!(
        "SELECT ((SELECT coalesce(sum(bal), 0) FROM \"{schema}\".acct_a) + \
         (SELECT coalesce(sum(bal), 0) FROM \"{schema}\".acct_b))::text"
    );
    let observed = sample_until_done(&s.wh, &probe, writer, Duration::from_millis(20)).await;
    s.converge(&tables).await;
    assert_eq!(
        observed.keys().collect::<Vec<_>>(),
        vec!["40000"],
        "sum of acct_a + acct_b in the warehouse while transfers ran (value: times seen): \
         anything but 40000 is a source transaction applied in part: {observed:?}"
    );
}

/// Transactions of 60 row changes over two tables with `max_rows = 20`: a batch limit must not
/// make a warehouse commit show part of a source transaction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_larger_than_max_rows_land_whole() {
    let mut s = MysqlSetup::start_with(
        "pl_bigtx",
        SOURCE,
        &[
            "CREATE TABLE left_side (id INT PRIMARY KEY, bal BIGINT NOT NULL)",
            "CREATE TABLE right_side (id INT PRIMARY KEY, bal BIGINT NOT NULL)",
        ],
        |g| g.max_rows = 20,
    )
    .await;
    let schema = s.schema.clone();
    s.conn.query_drop("BEGIN").await.unwrap();
    for t in ["left_side", "right_side"] {
        let rows: Vec<String> = (1..=30).map(|i| format!("({i}, 100)")).collect();
        s.conn
            .query_drop(format!("INSERT INTO {t} VALUES {}", rows.join(", ")))
            .await
            .unwrap();
    }
    s.conn.query_drop("COMMIT").await.unwrap();
    let tables = ["left_side", "right_side"];
    s.converge(&tables).await;

    let url = s.source_url();
    let writer = tokio::spawn(async move {
        let mut c = support::mysql_conn(&url).await;
        for n in 0..60i64 {
            // Every row of one side gives 1 to the same row of the other side: 60 row changes.
            let (from, to) = if n % 2 == 0 {
                ("left_side", "right_side")
            } else {
                ("right_side", "left_side")
            };
            c.query_drop("BEGIN").await.unwrap();
            c.query_drop(format!("UPDATE {from} SET bal = bal - 1"))
                .await
                .unwrap();
            c.query_drop(format!("UPDATE {to} SET bal = bal + 1"))
                .await
                .unwrap();
            c.query_drop("COMMIT").await.unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    let probe = format!(
        "SELECT ((SELECT sum(bal) FROM \"{schema}\".left_side) + \
         (SELECT sum(bal) FROM \"{schema}\".right_side))::text"
    );
    let observed = sample_until_done(&s.wh, &probe, writer, Duration::from_millis(5)).await;
    s.converge(&tables).await;
    assert_eq!(
        observed.keys().collect::<Vec<_>>(),
        vec!["6000"],
        "sum of both tables in the warehouse while 60-row transactions ran with max_rows = 20 \
         (value: times seen); anything but 6000 is a source transaction applied in part: \
         {observed:?}"
    );
}

/// Composite keys over non-integer types (VARBINARY, DATETIME(6), DECIMAL, utf8mb4 text), with
/// the key not in the first columns: updates, key changes and deletes by each part.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn composite_and_non_integer_keys() {
    let mut s = MysqlSetup::start(
        "pl_ckey", SOURCE,
        &[
            "CREATE TABLE ck (note VARCHAR(20), sku VARBINARY(16) NOT NULL, at DATETIME(6) NOT NULL, \
             amt DECIMAL(10,2) NOT NULL, name VARCHAR(20) CHARACTER SET utf8mb4 NOT NULL, \
             PRIMARY KEY (name, sku, at, amt)) CHARACTER SET utf8mb4",
        ],
    )
    .await;
    let schema = s.schema.clone();
    let mut rows = Vec::new();
    for (i, name) in ["a", "b", "🎉", "é", "a b"].iter().enumerate() {
        for j in 0..4 {
            rows.push(format!(
                "('n{i}{j}', x'00{j:02x}00', '2024-01-0{} 00:00:00.00000{j}', {j}.5{i}, '{name}')",
                j + 1
            ));
        }
    }
    s.conn
        .query_drop(format!("INSERT INTO ck VALUES {}", rows.join(", ")))
        .await
        .unwrap();
    s.converge(&["ck"]).await;
    for sql in [
        "UPDATE ck SET note = 'upd' WHERE sku = x'000100'",
        "UPDATE ck SET at = at + INTERVAL 1 MICROSECOND WHERE name = '🎉'",
        "UPDATE ck SET sku = x'ff', amt = amt + 100 WHERE name = 'é' AND sku = x'000200'",
        "DELETE FROM ck WHERE name = 'a b' AND amt < 2",
        "UPDATE ck SET name = 'moved' WHERE name = 'b' AND sku = x'000000'",
        "INSERT INTO ck VALUES ('re', x'000000', '2024-01-01 00:00:00.000000', 0.51, 'b')",
    ] {
        s.conn.query_drop(sql).await.unwrap();
    }
    s.converge(&["ck"]).await;
    assert_eq!(
        s.wh.primary_key(&schema, "ck").await,
        ["name", "sku", "at", "amt"].map(String::from).to_vec(),
        "target primary key in source key order"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_read_far_behind_lands_as_each_keys_last_change() {
    // Tiny normal batches, so only catch-up batching can load the backlog in one piece.
    let mut s = MysqlSetup::start_with(
        "pl_backlog",
        SOURCE,
        &[
            "CREATE TABLE item (id INT PRIMARY KEY, v INT NOT NULL, s VARCHAR(20))",
            "CREATE TABLE tag (name VARCHAR(20) PRIMARY KEY, n INT)",
        ],
        |g| {
            g.max_rows = 20;
            g.max_delay = "1s".into();
            g.catch_up_lag = Some("2s".into());
        },
    )
    .await;
    let schema = s.schema.clone();
    let status = s.tm.terminate(Duration::from_secs(20)).await;
    assert!(status.success(), "{status:?}");

    // The backlog, written while tidemark is down: every key changes several times, keys move,
    // and some are deleted and inserted again.
    let ids = 300;
    let values: Vec<String> = (1..=ids).map(|i| format!("({i}, 0, 's{i}')")).collect();
    s.conn
        .query_drop(format!("INSERT INTO item VALUES {}", values.join(", ")))
        .await
        .unwrap();
    for round in 1..=4 {
        for first in (1..=ids).step_by(50) {
            s.conn
                .query_drop(format!(
                    "UPDATE item SET v = {round}, s = 'r{round}' WHERE id BETWEEN {first} AND {}",
                    first + 49
                ))
                .await
                .unwrap();
        }
        s.conn
            .query_drop(format!(
                "INSERT INTO tag VALUES ('t{round}', {round}) ON DUPLICATE KEY UPDATE n = n + 1"
            ))
            .await
            .unwrap();
    }
    for stmt in [
        "UPDATE item SET id = id + 1000 WHERE id % 7 = 0",
        "DELETE FROM item WHERE id % 5 = 0",
        "INSERT INTO item VALUES (5, 50, 'back'), (10, 100, 'back')",
        "UPDATE item SET id = 1 WHERE id = 1007",
        "DELETE FROM tag WHERE name = 't2'",
        "INSERT INTO tag VALUES ('t2', 22)",
    ] {
        // Key 1 must be free before 1007 takes it.
        if stmt.contains("id = 1 WHERE") {
            s.conn
                .query_drop("DELETE FROM item WHERE id = 1")
                .await
                .unwrap();
        }
        s.conn.query_drop(stmt).await.unwrap();
    }
    // Old enough to be behind by more than catch_up_lag.
    tokio::time::sleep(Duration::from_secs(3)).await;
    s.tm.spawn();
    s.converge(&["item", "tag"]).await;
    assert!(
        s.tm.logs().contains("behind the source"),
        "no catch-up mode:\n{}",
        s.tm.logs()
    );
    // Each key was written to the target once: its last change, inserted (the table was
    // empty); nothing was updated or deleted on the way.
    let final_rows: i64 = s
        .conn
        .query_first("SELECT COUNT(*) FROM item")
        .await
        .unwrap()
        .unwrap();
    let written = format!("{final_rows}/0/0");
    assert!(
        wait_until(Duration::from_secs(10), async || {
            s.wh.value(&format!(
                "SELECT n_tup_ins || '/' || n_tup_upd || '/' || n_tup_del \
                 FROM pg_stat_user_tables WHERE schemaname = '{schema}' AND relname = 'item'"
            ))
            .await
            .as_deref()
                == Some(written.as_str())
        })
        .await,
        "target writes (ins/upd/del) {:?}, want {written}",
        s.wh.value(&format!(
            "SELECT n_tup_ins || '/' || n_tup_upd || '/' || n_tup_del \
             FROM pg_stat_user_tables WHERE schemaname = '{schema}' AND relname = 'item'"
        ))
        .await
    );

    // Caught up: a new change arrives at the normal pace.
    s.conn
        .query_drop("INSERT INTO item VALUES (5000, 1, 'live')")
        .await
        .unwrap();
    assert!(
        wait_until(Duration::from_secs(10), async || {
            s.wh.value(&format!(
                "SELECT count(*) FROM \"{schema}\".item WHERE id = 5000"
            ))
            .await
            .as_deref()
                == Some("1")
        })
        .await,
        "a live change after the backlog did not arrive within 10 s"
    );
}
