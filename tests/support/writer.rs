//! The source side of randomised MySQL tests: a background writer of random inserts, upserts,
//! multi-row updates, deletes and key changes over several tables, seeded so a run can be
//! replayed.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use mysql_async::prelude::Queryable;

use super::background::Background;
use super::ids::Rng;

/// Column definitions of the writer's tables.
pub const WORKLOAD_COLUMNS: &str = "id INT PRIMARY KEY, v BIGINT NOT NULL, \
     s VARCHAR(64) CHARACTER SET utf8mb4, d DECIMAL(12,3), ts DATETIME(6), b VARBINARY(16), \
     j JSON";

/// The statements creating the writer's tables `names`.
pub fn workload_tables(names: &[&str]) -> Vec<String> {
    names
        .iter()
        .map(|name| format!("CREATE TABLE `{name}` ({WORKLOAD_COLUMNS}) CHARACTER SET utf8mb4"))
        .collect()
}

/// What a writer did.
#[derive(Clone, Debug, Default)]
pub struct WriterStats {
    /// Committed transactions.
    pub commits: u64,
    /// Rolled-back transactions.
    pub rollbacks: u64,
    /// Statements that failed (each rolls its transaction back).
    pub errors: u64,
    /// The last error seen.
    pub last_error: Option<String>,
}

/// A background writer: random inserts, upserts, multi-row updates, deletes and key changes
/// over several tables, in transactions of 1-4 statements (5% rolled back).
pub type Writer = Background<WriterStats>;

/// Starts writing to `tables` of the database in `url`, pausing `pause` between transactions.
/// Keys are drawn from 1..=`keys`.
pub fn start_writer(url: String, tables: &[&str], seed: u64, keys: u64, pause: Duration) -> Writer {
    let tables = tables.iter().map(|t| t.to_string()).collect();
    Background::spawn(move |stop, commits| {
        write_loop(url, tables, Rng::new(seed), keys, pause, stop, commits)
    })
}

async fn write_loop(
    url: String,
    tables: Vec<String>,
    mut rng: Rng,
    keys: u64,
    pause: Duration,
    stop: Arc<AtomicBool>,
    commits: Arc<AtomicU64>,
) -> WriterStats {
    let mut conn = super::mysql_conn(&url).await;
    conn.query_drop("SET SESSION time_zone = '+00:00'")
        .await
        .unwrap();
    let mut stats = WriterStats::default();
    let mut consecutive_errors = 0;
    while !stop.load(Ordering::Relaxed) {
        conn.query_drop("BEGIN").await.unwrap();
        let mut failed = false;
        for _ in 0..rng.between(1, 4) {
            let table = &tables[rng.below(tables.len() as u64) as usize];
            let sql = random_statement(&mut rng, table, keys);
            if let Err(e) = conn.query_drop(&sql).await {
                stats.errors += 1;
                stats.last_error = Some(format!("{sql}: {e}"));
                failed = true;
                break;
            }
        }
        if failed || rng.chance(5) {
            if conn.query_drop("ROLLBACK").await.is_err() {
                conn = super::mysql_conn(&url).await;
            }
            stats.rollbacks += 1;
            consecutive_errors += u32::from(failed);
            assert!(
                consecutive_errors < 50,
                "writer keeps failing: {:?}",
                stats.last_error
            );
        } else {
            conn.query_drop("COMMIT").await.unwrap();
            stats.commits += 1;
            consecutive_errors = 0;
            commits.fetch_add(1, Ordering::Relaxed);
        }
        tokio::time::sleep(pause).await;
    }
    conn.disconnect().await.ok();
    stats
}

/// Some text: ASCII, quotes, multi-byte and emoji, sometimes empty.
pub fn random_text(rng: &mut Rng) -> String {
    const PIECES: &[&str] = &[
        "a", "Zz", " ", "é", "ß", "🎉", "'", "\\", "中", "x9", "-", "\t",
    ];
    let n = rng.below(12);
    (0..n)
        .map(|_| PIECES[rng.below(PIECES.len() as u64) as usize])
        .collect()
}

/// `s` as a MySQL string literal.
pub fn mysql_literal(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "''"))
}

fn random_values(rng: &mut Rng, id: u64) -> String {
    let s = if rng.chance(10) {
        "NULL".to_string()
    } else {
        mysql_literal(&random_text(rng))
    };
    let d = format!(
        "{}{}.{:03}",
        if rng.chance(30) { "-" } else { "" },
        rng.below(1_000_000_000),
        rng.below(1000)
    );
    let ts = format!(
        "'20{:02}-{:02}-{:02} {:02}:{:02}:{:02}.{:06}'",
        rng.below(40),
        rng.between(1, 12),
        rng.between(1, 28),
        rng.below(24),
        rng.below(60),
        rng.below(60),
        rng.below(1_000_000)
    );
    let b = format!("x'{:016x}'", rng.next_u64());
    let j = format!("'{{\"id\": {id}, \"k\": [{}, \"t\"]}}'", rng.below(100));
    format!("{id}, {}, {s}, {d}, {ts}, {b}, {j}", rng.next_u64() >> 12)
}

fn random_statement(rng: &mut Rng, table: &str, keys: u64) -> String {
    let id = rng.between(1, keys);
    match rng.below(20) {
        0..=7 => format!(
            "INSERT INTO `{table}` (id, v, s, d, ts, b, j) VALUES ({}) \
             ON DUPLICATE KEY UPDATE v = v + 1, s = VALUES(s), d = VALUES(d), b = VALUES(b)",
            random_values(rng, id)
        ),
        8..=13 => format!(
            "UPDATE `{table}` SET v = v + 1, s = {}, ts = ts + INTERVAL 1 SECOND \
             WHERE id BETWEEN {id} AND {}",
            mysql_literal(&random_text(rng)),
            id + rng.below(4)
        ),
        14..=17 => format!(
            "DELETE FROM `{table}` WHERE id BETWEEN {id} AND {}",
            id + rng.below(2)
        ),
        _ => format!(
            "UPDATE IGNORE `{table}` SET id = {} WHERE id = {id}",
            rng.between(1, keys)
        ),
    }
}
