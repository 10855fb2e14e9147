//! Append mode under replay: a writer of unique rows into a key-less MySQL table, and the
//! check that its append-mode target holds each committed row exactly once.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use mysql_async::prelude::Queryable;

use super::ids::Rng;
use super::poll::poll;
use super::process::Tidemark;
use super::warehouse::{Warehouse, pg_rows};

/// The key-less journal table: append mode in the target.
pub const JOURNAL_TABLE: &str = "CREATE TABLE journal (seq BIGINT NOT NULL, note VARCHAR(40))";

/// Inserts into the key-less (append-mode) table `journal`: 1-5 rows per transaction with
/// unique `seq` values, 10% rolled back. Create it first with [`JOURNAL_TABLE`].
pub struct JournalWriter {
    stop: Arc<AtomicBool>,
    handle: tokio::task::JoinHandle<()>,
}

impl JournalWriter {
    /// Starts writing to `journal` of the database at `url`.
    pub fn start(url: String, seed: u64) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = tokio::spawn(async move {
            let mut rng = Rng::new(seed);
            let mut conn = super::mysql_conn(&url).await;
            let mut seq = 0u64;
            while !flag.load(Ordering::Relaxed) {
                let rows: Vec<String> = (0..rng.between(1, 5))
                    .map(|_| {
                        seq += 1;
                        format!("({seq}, 'note {seq}')")
                    })
                    .collect();
                conn.query_drop("BEGIN").await.unwrap();
                conn.query_drop(format!("INSERT INTO journal VALUES {}", rows.join(", ")))
                    .await
                    .unwrap();
                let end = if rng.chance(10) { "ROLLBACK" } else { "COMMIT" };
                conn.query_drop(end).await.unwrap();
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
        });
        JournalWriter { stop, handle }
    }

    /// Stops after the current transaction.
    pub async fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.await.expect("journal writer panicked");
    }
}

/// Waits until the append-mode target `journal` holds each committed source row exactly once
/// (as an insert) and nothing else.
pub async fn wait_journal_equal(
    tm: &mut Tidemark,
    conn: &mut mysql_async::Conn,
    wh: &Warehouse,
    schema: &str,
) {
    let source: Vec<(u64, String)> = conn.query("SELECT seq, note FROM journal").await.unwrap();
    let result = poll(Duration::from_secs(60), async || {
        let rows = pg_rows(
            &wh.client,
            &format!("SELECT seq::text, note, _tidemark_op FROM \"{schema}\".journal"),
        )
        .await?;
        let mut counts: BTreeMap<(u64, String), Vec<String>> = BTreeMap::new();
        for r in rows {
            let seq = r[0].as_deref().unwrap_or("0").parse().unwrap_or(0);
            counts
                .entry((seq, r[1].clone().unwrap_or_default()))
                .or_default()
                .push(r[2].clone().unwrap_or_default());
        }
        let mut problems = Vec::new();
        for key in &source {
            match counts.get(key) {
                None => problems.push(format!("missing seq {}", key.0)),
                Some(ops) if ops != &["insert"] => {
                    problems.push(format!("seq {} appears as {ops:?}", key.0))
                }
                Some(_) => {}
            }
        }
        let source_keys: std::collections::HashSet<&(u64, String)> = source.iter().collect();
        for key in counts.keys().filter(|k| !source_keys.contains(k)) {
            problems.push(format!("seq {} in target only (rolled back?)", key.0));
        }
        if problems.is_empty() {
            Ok(())
        } else if let Some(status) = tm.try_exit() {
            Err(format!("tidemark exited ({status})"))
        } else {
            Err(format!(
                "{} problems in append-mode journal ({} source rows): {:?}",
                problems.len(),
                source.len(),
                &problems[..problems.len().min(12)]
            ))
        }
    })
    .await;
    if let Err(e) = result {
        panic!("journal (no primary key) after kill -9 restarts: {e}");
    }
}
