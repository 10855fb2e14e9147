//! `tidemark run` with a Postgres source, nothing lost or doubled across crashes: a continuous
//! writer runs random transactions (inserts, updates also of the key, deletes, multi-table,
//! rolled back, with a rolled-back savepoint, some values stored out of line as TOAST) on three
//! tables of the source database while tidemark is killed with SIGKILL at 20 random moments and
//! restarted each time; once the writer stops, every target table must equal its source table
//! row by row and have no key twice (the shared comparison checks both). Key changes and swaps
//! leave the TOASTed values unchanged, so they move with their rows inside a batch.
//!
//! After a kill -9 the old walsender may hold the slot for a moment, so a restart can be refused
//! ("replication slot ... is active") and retried by tidemark's supervisor; the test does not
//! wait for the slot itself, it reports how often that happened.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use support::background::Background;
use support::pg_source::SlotGuard;
use support::pipeline::{
    GroupConfig, Rng, Source, SourceConfig, TablePair, Tidemark, Warehouse, fresh_warehouse,
    pg_client, random_text, seed, sql_literal, wait_checkpoint, wait_tables_equal,
};

const TABLES: [&str; 3] = ["orders", "items", "customers"];
/// Keys are drawn from 1..=KEYS (negative keys only appear inside a key swap).
const KEYS: u64 = 400;
/// The source's user columns, in order.
const COLUMNS: &str = "id, qty, note, amount, placed, doc";
const SCHEMA: &str = "acme_in_txn";

// ------------------------------------------------------------------------------------------
// The writer
// ------------------------------------------------------------------------------------------

/// What the writer did.
#[derive(Clone, Debug, Default)]
struct WriterStats {
    commits: u64,
    multi_table_commits: u64,
    rollbacks: u64,
    savepoint_rollbacks: u64,
    statements: u64,
    errors: u64,
    last_error: Option<String>,
}

/// A background writer on the source database: random transactions of 1-20 statements until
/// stopped.
fn start_pg_writer(url: String, seed: u64) -> Background<WriterStats> {
    Background::spawn(move |stop, commits| write_loop(url, Rng::new(seed), stop, commits))
}

async fn write_loop(
    url: String,
    mut rng: Rng,
    stop: Arc<AtomicBool>,
    commits: Arc<AtomicU64>,
) -> WriterStats {
    let client = pg_client(&url).await;
    let mut stats = WriterStats::default();
    while !stop.load(Ordering::Relaxed) {
        let statements = if rng.chance(70) {
            rng.between(1, 5)
        } else {
            rng.between(6, 20)
        };
        let multi_table = rng.chance(20);
        let mut table = TABLES[rng.below(TABLES.len() as u64) as usize];
        // A savepoint opened before statement `at` and rolled back after statement `undo`.
        let savepoint = rng
            .chance(5)
            .then(|| rng.below(statements))
            .map(|at| (at, rng.between(at, statements - 1)));
        client.batch_execute("BEGIN").await.unwrap();
        let mut tables_used = std::collections::BTreeSet::new();
        let mut failed = false;
        for i in 0..statements {
            if savepoint.is_some_and(|(at, _)| at == i) {
                client.batch_execute("SAVEPOINT sp").await.unwrap();
            }
            if multi_table {
                table = TABLES[rng.below(TABLES.len() as u64) as usize];
            }
            tables_used.insert(table);
            let sql = random_statement(&mut rng, table);
            stats.statements += 1;
            if let Err(e) = client.batch_execute(&sql).await {
                stats.errors += 1;
                let why = e
                    .as_db_error()
                    .map_or(e.to_string(), |d| d.message().to_string());
                stats.last_error = Some(format!("{sql}: {why}"));
                failed = true;
                break;
            }
            if savepoint.is_some_and(|(_, undo)| undo == i) {
                client
                    .batch_execute("ROLLBACK TO SAVEPOINT sp")
                    .await
                    .unwrap();
                stats.savepoint_rollbacks += 1;
            }
        }
        if failed || rng.chance(5) {
            client.batch_execute("ROLLBACK").await.unwrap();
            stats.rollbacks += 1;
        } else {
            client.batch_execute("COMMIT").await.unwrap();
            stats.commits += 1;
            stats.multi_table_commits += u64::from(tables_used.len() > 1);
            commits.fetch_add(1, Ordering::Relaxed);
        }
        tokio::time::sleep(rng.millis(0, 3)).await;
    }
    stats
}

/// A text value: short mixed text, NULL, or (sometimes) about 4 kB of incompressible text,
/// which Postgres stores out of line, so later updates that leave it alone send it as an
/// unchanged TOAST value.
fn random_note(rng: &mut Rng) -> String {
    match rng.below(20) {
        0 => "NULL".into(),
        1 => format!(
            "(SELECT string_agg(md5('{}' || g), '') FROM generate_series(1, 128) g)",
            rng.next_u64()
        ),
        _ => sql_literal(&random_text(rng)),
    }
}

fn random_amount(rng: &mut Rng) -> String {
    if rng.chance(5) {
        return "NULL".into();
    }
    let magnitude = if rng.chance(50) { 1000 } else { 10_000_000_000 };
    format!(
        "{}{}.{:02}",
        if rng.chance(30) { "-" } else { "" },
        rng.below(magnitude),
        rng.below(100)
    )
}

fn random_timestamptz(rng: &mut Rng) -> String {
    if rng.chance(5) {
        return "NULL::timestamptz".into();
    }
    const ZONES: &[&str] = &["+00", "+05:30", "-08", "+14"];
    format!(
        "'{}-{:02}-{:02} {:02}:{:02}:{:02}.{:06}{}'::timestamptz",
        rng.between(1950, 2049),
        rng.between(1, 12),
        rng.between(1, 28),
        rng.below(24),
        rng.below(60),
        rng.below(60),
        rng.below(1_000_000),
        ZONES[rng.below(ZONES.len() as u64) as usize]
    )
}

/// A jsonb value; `id` is the SQL expression of the row's key.
fn random_doc(rng: &mut Rng, id: &str) -> String {
    match rng.below(12) {
        0 => "NULL".into(),
        1 => "'null'::jsonb".into(),
        2 => "'[]'::jsonb".into(),
        3 => format!("to_jsonb({}::text)", sql_literal(&random_text(rng))),
        4 => format!("'{}.50'::jsonb", rng.below(1000)),
        _ => format!(
            "jsonb_build_object('id', {id}, 'k', jsonb_build_array({}, {}, {}.25, NULL, true), \
             'nested', jsonb_build_object('t', {}, 'n', {}))",
            rng.below(100),
            sql_literal(&random_text(rng)),
            rng.below(1_000_000),
            sql_literal(&random_text(rng)),
            rng.next_u64() >> 20,
        ),
    }
}

fn random_qty(rng: &mut Rng) -> String {
    if rng.chance(5) {
        "NULL".into()
    } else {
        (rng.next_u64() as i32).to_string()
    }
}

/// One statement on `shop.table` that cannot fail (upserts, key changes only onto free keys).
fn random_statement(rng: &mut Rng, table: &str) -> String {
    let t = format!("shop.{table}");
    let id = rng.between(1, KEYS);
    match rng.below(24) {
        0..=5 => format!(
            "INSERT INTO {t} ({COLUMNS}) VALUES ({id}, {}, {}, {}, {}, {}) \
             ON CONFLICT (id) DO UPDATE SET qty = EXCLUDED.qty, amount = EXCLUDED.amount, \
             doc = EXCLUDED.doc",
            random_qty(rng),
            random_note(rng),
            random_amount(rng),
            random_timestamptz(rng),
            random_doc(rng, &id.to_string()),
        ),
        // Many rows at once, so batches fill (and crashes land inside them).
        6..=7 => format!(
            "INSERT INTO {t} ({COLUMNS}) \
             SELECT g, g * {}, {} || g, (g * 1.37)::numeric(12,2), {} + g * interval '1 second', \
                    {} \
             FROM generate_series({id}, {}) g ON CONFLICT (id) DO NOTHING",
            rng.below(1000),
            sql_literal(&random_text(rng)),
            random_timestamptz(rng),
            random_doc(rng, "g"),
            id + rng.below(40),
        ),
        8..=11 => format!(
            "UPDATE {t} SET qty = coalesce(qty, 0) / 2 + {}, placed = placed + interval '1.5 seconds', \
             amount = round(amount / 3, 2) WHERE id BETWEEN {id} AND {}",
            rng.below(100),
            id + rng.below(8),
        ),
        12..=13 => format!(
            "UPDATE {t} SET note = {}, doc = {} WHERE id = {id}",
            random_note(rng),
            random_doc(rng, "id"),
        ),
        14 => {
            let x = sql_literal(&random_text(rng));
            format!(
                "UPDATE {t} SET doc = CASE jsonb_typeof(doc) WHEN 'object' \
                 THEN jsonb_set(doc, '{{x}}', to_jsonb({x}::text)) \
                 ELSE jsonb_build_object('x', {x}::text, 'was', doc) END, \
                 amount = -amount WHERE id BETWEEN {id} AND {}",
                id + rng.below(3),
            )
        }
        15 => format!(
            "UPDATE {t} SET qty = NULL, note = NULL, amount = NULL, placed = NULL, doc = NULL WHERE id = {id}"
        ),
        16..=18 => format!(
            "DELETE FROM {t} WHERE id BETWEEN {id} AND {}",
            id + rng.below(3)
        ),
        // A key change onto a free key.
        19..=21 => {
            let to = rng.between(1, KEYS);
            format!(
                "UPDATE {t} SET id = {to}, qty = coalesce(qty, 0) / 2 + 1 WHERE id = {id} \
                 AND NOT EXISTS (SELECT 1 FROM {t} WHERE id = {to})"
            )
        }
        // A key change that leaves every other column alone (a TOASTed note is sent unchanged).
        22 => {
            let to = rng.between(1, KEYS);
            format!(
                "UPDATE {t} SET id = {to} WHERE id = {id} \
                 AND NOT EXISTS (SELECT 1 FROM {t} WHERE id = {to})"
            )
        }
        // Two keys swap rows (through a negative key nothing else uses).
        _ => {
            let other = rng.between(1, KEYS);
            format!(
                "UPDATE {t} SET id = -{id} WHERE id = {id}; \
                 UPDATE {t} SET id = {id} WHERE id = {other}; \
                 UPDATE {t} SET id = {other} WHERE id = -{id}"
            )
        }
    }
}

// ------------------------------------------------------------------------------------------
// Checks
// ------------------------------------------------------------------------------------------

/// Per run of tidemark that logged a refused or failed source start: the run, how many such
/// lines, and the first.
fn attention_lines(tm: &Tidemark) -> Vec<(usize, usize, String)> {
    let mut found = Vec::new();
    for run in 1..=tm.runs() {
        let mut count = 0;
        let mut first = None;
        for ext in ["out", "err"] {
            let log = std::fs::read_to_string(tm.dir().join(format!("run{run}.{ext}")))
                .unwrap_or_default();
            for line in log.lines() {
                if line.contains("needs attention")
                    || line.contains("is active for PID")
                    || line.contains("source interrupted")
                {
                    count += 1;
                    first.get_or_insert_with(|| line.to_string());
                }
            }
        }
        if let Some(first) = first {
            found.push((run, count, first));
        }
    }
    found
}

// ------------------------------------------------------------------------------------------
// The test
// ------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_random_moments_loses_and_doubles_nothing() {
    let seed = seed("pipeline_postgres_crash::kill_9_at_random_moments_loses_and_doubles_nothing");
    let mut rng = Rng::new(seed);
    let started = Instant::now();

    let source: Warehouse = fresh_warehouse("pgcrash_src").await;
    let mut ddl = String::from("CREATE SCHEMA shop;");
    for table in TABLES {
        ddl.push_str(&format!(
            "CREATE TABLE shop.{table} (id bigint PRIMARY KEY, qty int, note text, \
             amount numeric(12,2), placed timestamptz, doc jsonb);"
        ));
    }
    source.client.batch_execute(&ddl).await.unwrap();
    let warehouse = fresh_warehouse("pgcrash_wh").await;
    let source_id = "pg-crash";
    // Unique per database: concurrent test processes share the server's slots.
    let slot = format!("{}_slot", source.db.to_lowercase());
    let mut config = SourceConfig::postgres(source_id, &source.url, &["shop.*"]);
    config.extra.push_str(&format!("slot = \"{slot}\"\n"));
    assert_eq!(config.schema(), SCHEMA);
    let mut group = GroupConfig::new(&warehouse.url, vec![config]);
    group.max_rows = 200;
    group.max_delay = "100ms".into();
    // Declared before tidemark, so it drops after it: the slot goes once nothing uses it.
    let _slot = SlotGuard {
        url: source.url.clone(),
        slot: slot.clone(),
    };
    let mut tm = Tidemark::start(&group);
    wait_checkpoint(&mut tm, &warehouse, source_id, Duration::from_secs(30)).await;

    let writer = start_pg_writer(source.url.clone(), rng.next_u64());
    writer.wait_commits(20).await;
    let mut positions = Vec::new();
    // Runs during which the checkpoint moved: a restart that is refused and waits shows up here.
    let mut advanced_runs = 0;
    for kill in 1..=20 {
        let window = rng.millis(200, 1500);
        let before = warehouse.checkpoint(source_id).await;
        tokio::time::sleep(window).await;
        tm.assert_running(&format!("before kill {kill}"));
        tm.kill9();
        let position = warehouse.checkpoint(source_id).await.unwrap_or_default();
        advanced_runs += usize::from(before.as_deref() != Some(position.as_str()));
        positions.push(position);
        if rng.chance(50) {
            // Stay down a little while the writer goes on.
            tokio::time::sleep(rng.millis(0, 500)).await;
        }
        tm.spawn();
    }
    let kills_done = started.elapsed();
    // Some load after the last restart, then stop writing.
    writer.wait_commits(20).await;
    let stats = writer.stop().await;
    assert_eq!(stats.errors, 0, "the writer's statements failed: {stats:?}");
    assert!(stats.commits > 200, "writer too slow: {stats:?}");

    // Printed before the comparison, so that a failure comes with it.
    let distinct: std::collections::BTreeSet<&String> = positions.iter().collect();
    eprintln!(
        "{} restarts in {:.1}s, {} distinct checkpoints at the kills, the checkpoint moved in {} \
         of 20 runs",
        tm.runs() - 1,
        kills_done.as_secs_f64(),
        distinct.len(),
        advanced_runs,
    );
    for (run, count, first) in attention_lines(&tm) {
        eprintln!("run {run}: {count} failed start(s), first: {first}");
    }

    let pairs: Vec<TablePair> = TABLES
        .iter()
        .map(|t| TablePair::new(("shop", t), (SCHEMA, t)))
        .collect();
    let converging = Instant::now();
    wait_tables_equal(
        &mut tm,
        &mut Source::Postgres(&source.client),
        &warehouse.client,
        &pairs,
        Duration::from_secs(90),
    )
    .await;
    let converged_in = converging.elapsed();
    tm.assert_running("after convergence");

    eprintln!(
        "equal {:.1}s after the writer stopped, {:.1}s in all",
        converged_in.as_secs_f64(),
        started.elapsed().as_secs_f64(),
    );
    assert!(
        distinct.len() > 5,
        "checkpoints barely advanced between kills: {positions:?}"
    );
}
