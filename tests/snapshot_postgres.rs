//! Snapshots of a Postgres source, end to end: existing rows copied while a writer changes them
//! and tidemark is killed, then streamed on; a dropped slot recovered by copying again
//! (`when_needed`) or refused with the lost slot named (`never`).

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use support::background::Background;
use support::pg_source::SlotGuard;
use support::pipeline::{
    GroupConfig, Rng, Source, SourceConfig, TablePair, Tidemark, Warehouse, WriterStats,
    converge_pairs, fresh_warehouse, fresh_warehouse_on, pg_client, random_text, seed, sql_literal,
    wait_checkpoint, wait_tables_equal, wait_until,
};
use support::snapshot::{
    IdRange, assert_no_key_twice, assert_not_copied_again, assert_snapshot_cleared, done_chunks_of,
    kill_three_times_during_copy, snapshot_state,
};

/// Rows the big table starts with.
const ROWS: u64 = 1_000_000;

/// The warehouse schema of the tests' sources.
const SCHEMA: &str = "acme_in_txn";

/// The statement creating `shop.{table}`: an integer key and columns of several types.
fn create_table(table: &str) -> String {
    format!(
        "CREATE TABLE shop.{table} (id bigint PRIMARY KEY, v bigint NOT NULL, n int, s text, \
         d numeric(12,3), ts timestamptz, b bytea, j jsonb, flag boolean)"
    )
}

/// Fills `shop.{table}` with ids 1..=`rows`, made server-side by generate_series.
fn fill(table: &str, rows: u64) -> String {
    format!(
        "INSERT INTO shop.{table} SELECT g, g * 7, (g % 1000)::int, 'row ' || g, g / 1000.0, \
         '2024-01-01 00:00:00+00'::timestamptz + g * interval '1 second', int8send(g), \
         jsonb_build_object('n', g), g % 2 = 0 FROM generate_series(1, {rows}) g"
    )
}

/// Runs `statements` on `db`, in order, panicking with the one that fails.
async fn run(db: &Warehouse, statements: &[&str]) {
    for statement in statements {
        db.client
            .batch_execute(statement)
            .await
            .unwrap_or_else(|e| panic!("{statement}: {e}"));
    }
}

/// A background writer on a Postgres source table: random upserts, multi-row updates, deletes
/// and key changes in transactions of 1-4 statements (5% rolled back), until stopped; it
/// writes to `shop.{table}` of the database at `url`, keys drawn from 1..=`keys`.
fn start_pg_writer(
    url: String,
    table: &'static str,
    seed: u64,
    keys: u64,
) -> Background<WriterStats> {
    Background::spawn(move |stop, commits| {
        pg_write_loop(url, table, Rng::new(seed), keys, stop, commits)
    })
}

/// The writer's loop: one connection, a transaction at a time, a millisecond apart.
async fn pg_write_loop(
    url: String,
    table: &'static str,
    mut rng: Rng,
    keys: u64,
    stop: Arc<AtomicBool>,
    commits: Arc<AtomicU64>,
) -> WriterStats {
    let client = pg_client(&url).await;
    let mut stats = WriterStats::default();
    while !stop.load(Ordering::Relaxed) {
        client.batch_execute("BEGIN").await.unwrap();
        let mut failed = false;
        for _ in 0..rng.between(1, 4) {
            let sql = random_statement(&mut rng, table, keys);
            if let Err(e) = client.batch_execute(&sql).await {
                stats.errors += 1;
                stats.last_error = Some(format!("{sql}: {e}"));
                failed = true;
                break;
            }
        }
        if failed || rng.chance(5) {
            client.batch_execute("ROLLBACK").await.unwrap();
            stats.rollbacks += 1;
        } else {
            client.batch_execute("COMMIT").await.unwrap();
            stats.commits += 1;
            commits.fetch_add(1, Ordering::Relaxed);
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    stats
}

/// One statement on `shop.{table}` that cannot fail: an upsert, an update of a few rows, a
/// delete of a few rows, or a key change onto a free key.
fn random_statement(rng: &mut Rng, table: &str, keys: u64) -> String {
    let t = format!("shop.{table}");
    let id = rng.between(1, keys);
    match rng.below(20) {
        0..=7 => format!(
            "INSERT INTO {t} (id, v, n, s, d, ts, b, j, flag) VALUES ({id}, {}, {}, {}, \
             {}{}.{:03}, '20{:02}-{:02}-{:02} {:02}:{:02}:{:02}.{:06}+00', '\\x{:016x}', \
             jsonb_build_object('id', {id}, 'k', jsonb_build_array({}, 't')), {}) \
             ON CONFLICT (id) DO UPDATE SET v = {table}.v + 1, s = EXCLUDED.s, d = EXCLUDED.d, \
             b = EXCLUDED.b",
            rng.next_u64() >> 12,
            if rng.chance(10) {
                "NULL".to_string()
            } else {
                (rng.next_u64() as i32).to_string()
            },
            if rng.chance(10) {
                "NULL".to_string()
            } else {
                sql_literal(&random_text(rng))
            },
            if rng.chance(30) { "-" } else { "" },
            rng.below(1_000_000_000),
            rng.below(1000),
            rng.below(40),
            rng.between(1, 12),
            rng.between(1, 28),
            rng.below(24),
            rng.below(60),
            rng.below(60),
            rng.below(1_000_000),
            rng.next_u64(),
            rng.below(100),
            rng.chance(50),
        ),
        8..=13 => format!(
            "UPDATE {t} SET v = v + 1, s = {}, ts = ts + interval '1 second', flag = NOT flag \
             WHERE id BETWEEN {id} AND {}",
            sql_literal(&random_text(rng)),
            id + rng.below(4)
        ),
        14..=17 => format!(
            "DELETE FROM {t} WHERE id BETWEEN {id} AND {}",
            id + rng.below(2)
        ),
        _ => {
            let to = rng.between(1, keys);
            format!(
                "UPDATE {t} SET id = {to} WHERE id = {id} \
                 AND NOT EXISTS (SELECT 1 FROM {t} WHERE id = {to})"
            )
        }
    }
}

/// The row count and a sum of row hashes of `{schema}.big`, computed by its server: equal on
/// both sides once the target caught up (the row-by-row comparison then proves it).
async fn fingerprint(db: &Warehouse, schema: &str) -> String {
    let sql = format!(
        "SELECT count(*)::text || ' rows, hash sum ' || coalesce(sum(hashtextextended(\
         format('%s|%s|%s|%s|%s|%s|%s|%s|%s', id, v, n, s, d, ts, b, j, flag), 0)::numeric), 0) \
         FROM {schema}.big"
    );
    support::warehouse::pg_rows(&db.client, &sql)
        .await
        .map(|rows| rows[0][0].clone().unwrap_or_default())
        .unwrap_or_else(|e| e)
}

/// The done chunks of the first table of a snapshot state: (lower id bound, upper id bound),
/// unbounded sides as `None`. A Postgres chunk of an integer key is stored as
/// `{"key": {"columns": ["id"], "from": ["123"] | null, "to": ["456"] | null}}`.
fn done_chunks(state: &serde_json::Value) -> Vec<IdRange> {
    let bound = |b: &serde_json::Value| -> Option<i64> {
        if b.is_null() {
            return None;
        }
        let text = b[0]
            .as_str()
            .unwrap_or_else(|| panic!("a key bound that is not [text]: {b}"));
        Some(text.parse().unwrap_or_else(|e| panic!("bound {text}: {e}")))
    };
    done_chunks_of(state, |range| {
        let key = &range["key"];
        assert_eq!(
            key["columns"],
            serde_json::json!(["id"]),
            "not a key range of id: {range}"
        );
        (bound(&key["from"]), bound(&key["to"]))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_million_rows_copied_under_writes_and_three_kills_equal_the_source() {
    let mut rng = Rng::new(seed(
        "a_million_rows_copied_under_writes_and_three_kills_equal_the_source",
    ));
    let source = fresh_warehouse("snap_pg_src").await;
    run(
        &source,
        &[
            "CREATE SCHEMA shop",
            &create_table("big"),
            &fill("big", ROWS),
            "ANALYZE shop.big",
        ],
    )
    .await;
    let wh = fresh_warehouse("snap_pg_wh").await;
    let source_id = "snap";
    // Unique per database: concurrent test processes share the server's slots.
    let slot = format!("{}_slot", source.db.to_lowercase());
    let mut config = SourceConfig::postgres(source_id, &source.url, &["shop.*"]);
    config.snapshot = "initial";
    config.extra.push_str(&format!(
        "slot = \"{slot}\"\nsnapshot_chunk_rows = 25000\nsnapshot_parallelism = 2\n"
    ));
    assert_eq!(config.schema(), SCHEMA);
    let mut group = GroupConfig::new(&wh.url, vec![config]);
    group.max_rows = 20_000;
    // Declared before tidemark, so it drops after it: the slot goes once nothing uses it.
    let _slot = SlotGuard {
        url: source.url.clone(),
        slot: slot.clone(),
    };
    let mut tm = Tidemark::prepare(|state| group.render(state));
    // The writer inserts, updates, deletes and moves keys across the whole key space (and a
    // little past it) while the copy runs.
    let writer = start_pg_writer(source.url.clone(), "big", rng.next_u64(), ROWS + ROWS / 10);
    writer.wait_commits(20).await;
    let started = std::time::Instant::now();
    tm.spawn();
    // Kill -9 three times during the copy; every chunk done before a kill must not be copied
    // again.
    let before_kills =
        kill_three_times_during_copy(&mut tm, &wh, source_id, &mut rng, done_chunks).await;
    // The finished snapshot is cleared from the progress record; waiting for that first spares
    // comparing a million rows again and again while the copy still runs (a comparison takes
    // half a minute).
    let finished = support::poll::poll(Duration::from_secs(180), async || {
        tm.assert_running("copying");
        match snapshot_state(&wh, source_id).await {
            None => Ok(()),
            Some(state) => Err(format!("{} chunks done", done_chunks(&state).len())),
        }
    })
    .await;
    finished.unwrap_or_else(|e| panic!("the snapshot did not finish: {e}"));
    eprintln!(
        "snapshot finished {:.1}s in",
        started.elapsed().as_secs_f64()
    );
    // The writer wrote through the whole copy, its last chunk (which deletes the rows the
    // source no longer has) included.
    let stats = writer.stop().await;
    assert!(stats.commits > 100, "writer too slow: {stats:?}");
    assert_eq!(stats.errors, 0, "the writer's statements failed: {stats:?}");
    // Then until the stream caught up, as the server sums it up; only then row by row.
    let caught_up = support::poll::poll(Duration::from_secs(120), async || {
        tm.assert_running("catching up");
        let at_source = fingerprint(&source, "shop").await;
        let in_target = fingerprint(&wh, SCHEMA).await;
        if at_source == in_target {
            Ok(())
        } else {
            Err(format!("source {at_source}, target {in_target}"))
        }
    })
    .await;
    caught_up.unwrap_or_else(|e| panic!("the target did not catch up: {e}"));
    let pairs = [TablePair::new(("shop", "big"), (SCHEMA, "big"))];
    wait_tables_equal(
        &mut tm,
        &mut Source::Postgres(&source.client),
        &wh.client,
        &pairs,
        Duration::from_secs(120),
    )
    .await;
    assert_snapshot_cleared(&wh, source_id).await;

    let big = format!("{SCHEMA}.big");
    assert_no_key_twice(&wh, &big).await;
    assert_not_copied_again(&wh, &big, &before_kills).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_slot_is_copied_again_when_needed_and_refused_otherwise() {
    // Declared first, so it drops last: the server goes once nothing uses it.
    let server = support::postgres_instance("snap_slot", &[]);
    let source = fresh_warehouse_on(server.url(), "snap_slot_src").await;
    run(
        &source,
        &[
            "CREATE SCHEMA shop",
            &create_table("items"),
            &create_table("other"),
            &fill("items", 5_000),
            &fill("other", 300),
        ],
    )
    .await;
    let wh = fresh_warehouse("snap_slot_wh").await;
    let slot = "snap_slot";
    let mut config = SourceConfig::postgres("lost", &source.url, &["shop.*"]);
    config.snapshot = "when_needed";
    config.extra.push_str(&format!("slot = \"{slot}\"\n"));
    let group = GroupConfig::new(&wh.url, vec![config]);
    let pairs = [
        TablePair::new(("shop", "items"), (SCHEMA, "items")),
        TablePair::new(("shop", "other"), (SCHEMA, "other")),
    ];

    let mut tm = Tidemark::start(&group);
    wait_checkpoint(&mut tm, &wh, "lost", Duration::from_secs(30)).await;
    converge_pairs(
        &mut tm,
        &mut Source::Postgres(&source.client),
        &wh.client,
        &pairs,
    )
    .await;
    assert!(tm.terminate(Duration::from_secs(30)).await.success());

    // While tidemark is down: rows written and deleted, then the slot dropped, so those
    // changes are gone from the log.
    run(
        &source,
        &[
            "DELETE FROM shop.items WHERE id % 3 = 0",
            "UPDATE shop.items SET v = -v WHERE id % 5 = 0",
            "INSERT INTO shop.items (id, v) VALUES (900001, 1), (900002, 2)",
            "DELETE FROM shop.other",
        ],
    )
    .await;
    // The walsender of the stopped tidemark may take a moment to let the slot go.
    let dropped = wait_until(Duration::from_secs(30), async || {
        let _ = source
            .client
            .execute(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots \
                 WHERE slot_name = $1 AND NOT active",
                &[&slot],
            )
            .await;
        let left = source
            .client
            .query(
                "SELECT 1 FROM pg_replication_slots WHERE slot_name = $1",
                &[&slot],
            )
            .await;
        matches!(left, Ok(rows) if rows.is_empty())
    })
    .await;
    assert!(dropped, "slot {slot} could not be dropped within 30 s");

    // `never` (and any mode but `when_needed`): the source stops with the slot named.
    let mut refusing = group.clone();
    refusing.sources[0].snapshot = "never";
    let mut never = Tidemark::prepare(|state| refusing.render(state));
    never.spawn();
    let status = never
        .wait_exit(Duration::from_secs(60))
        .await
        .unwrap_or_else(|| {
            panic!(
                "a source whose slot is lost stops, and with it its group:\n{}",
                never.logs()
            )
        });
    assert!(!status.success(), "a lost slot must exit non-zero");
    let logs = never.logs();
    let problem = format!("replication slot `{slot}` does not exist");
    assert!(
        logs.contains(&problem) && logs.contains("when_needed"),
        "the error names the lost slot and the ways out: {logs}"
    );

    // `when_needed`: copied again, rows deleted meanwhile deleted in the target too.
    tm.spawn();
    converge_pairs(
        &mut tm,
        &mut Source::Postgres(&source.client),
        &wh.client,
        &pairs,
    )
    .await;
    let other = wh
        .value(&format!("SELECT count(*) FROM {SCHEMA}.other"))
        .await;
    assert_eq!(other.as_deref(), Some("0"));
    let deleted = wh
        .value(&format!(
            "SELECT count(*) FROM {SCHEMA}.items WHERE id % 3 = 0"
        ))
        .await;
    assert_eq!(deleted.as_deref(), Some("0"));
    // And it streams on from there, from a new slot.
    run(&source, &["INSERT INTO shop.other (id, v) VALUES (7, 7)"]).await;
    converge_pairs(
        &mut tm,
        &mut Source::Postgres(&source.client),
        &wh.client,
        &pairs,
    )
    .await;
    let other = wh
        .value(&format!("SELECT count(*) FROM {SCHEMA}.other"))
        .await;
    assert_eq!(other.as_deref(), Some("1"));
    assert!(tm.terminate(Duration::from_secs(30)).await.success());
}
