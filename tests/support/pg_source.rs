//! Postgres sources in end-to-end tests: comparing a source table with its warehouse table.

use std::time::{Duration, Instant};

use tokio_postgres::Client;

use super::pipeline::{Tidemark, pg_rows, poll};

/// Every row of `table` (`schema.table` on the source, or `schema.table` in the warehouse) as
/// the text of its `columns`, in a stable order.
async fn rows_of(client: &Client, table: &str, columns: &[String]) -> Result<Vec<String>, String> {
    let list = columns
        .iter()
        .map(|c| format!("\"{c}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let rows = pg_rows(
        client,
        &format!("SELECT ROW({list})::text AS r FROM {table} ORDER BY 1"),
    )
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| r.into_iter().next().flatten().unwrap_or_default())
        .collect())
}

/// The user columns of source table `schema.table`, in order.
pub async fn source_columns(client: &Client, schema: &str, table: &str) -> Vec<String> {
    client
        .query(
            "SELECT attname::text FROM pg_attribute
             WHERE attrelid = format('%I.%I', $1::text, $2::text)::regclass
               AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
            &[&schema, &table],
        )
        .await
        .unwrap_or_else(|e| panic!("columns of {schema}.{table}: {e}"))
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// Why source table `schema.table` and warehouse table `target_schema.target` differ, if they
/// do: the first differing rows of both sides.
pub async fn pg_table_diff(
    source: &Client,
    warehouse: &Client,
    (schema, table): (&str, &str),
    (target_schema, target): (&str, &str),
) -> Result<(), String> {
    let columns = source_columns(source, schema, table).await;
    let want = rows_of(source, &format!("\"{schema}\".\"{table}\""), &columns).await?;
    let got = rows_of(
        warehouse,
        &format!("\"{target_schema}\".\"{target}\""),
        &columns,
    )
    .await?;
    if want == got {
        return Ok(());
    }
    let first = want.iter().zip(&got).position(|(w, g)| w != g);
    // Rows can hold TOASTed values of many kilobytes: show their start.
    let show = |row: Option<&String>| row.map(|r| r.chars().take(300).collect::<String>());
    Err(format!(
        "{schema}.{table} ({} rows) vs {target_schema}.{target} ({} rows); first difference at \
         row {first:?}: source {:?} warehouse {:?}\n",
        want.len(),
        got.len(),
        show(first.and_then(|i| want.get(i))),
        show(first.and_then(|i| got.get(i))),
    ))
}

/// A source table `(schema, table)` and its warehouse table `(schema, table)`.
pub type TablePair<'a> = ((&'a str, &'a str), (&'a str, &'a str));

/// Waits until every `(schema.table, target)` pair is equal, or panics with the differences
/// (also when tidemark exits).
pub async fn wait_pg_tables_equal(
    tm: &mut Tidemark,
    source: &Client,
    warehouse: &Client,
    tables: &[TablePair<'_>],
    timeout: Duration,
) {
    let started = Instant::now();
    let result = poll(timeout, async || {
        let mut failures = String::new();
        for (from, to) in tables {
            if let Err(d) = pg_table_diff(source, warehouse, *from, *to).await {
                failures.push_str(&d);
            }
        }
        if failures.is_empty() {
            return Ok(());
        }
        if let Some(status) = tm.try_exit() {
            return Err(format!(
                "tidemark exited ({status}); {failures}\n{}",
                tm.logs()
            ));
        }
        Err(failures)
    })
    .await;
    match result {
        Ok(()) => eprintln!("equal after {:.1}s", started.elapsed().as_secs_f64()),
        Err(diff) => panic!("target did not converge within {timeout:?}:\n{diff}"),
    }
}

/// Drops a replication slot when dropped itself, even by a panic: a forgotten slot holds WAL
/// forever. Declare it before whatever still uses the slot (a running tidemark), so it drops last.
pub struct SlotGuard {
    /// A URL of the slot's database.
    pub url: String,
    /// The slot.
    pub slot: String,
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        let (url, slot) = (self.url.clone(), self.slot.clone());
        // A fresh runtime on its own thread: this may run inside the test's runtime.
        let _ = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async {
                let Ok(client) = super::pipeline::try_pg_client(&url).await else {
                    return;
                };
                // The walsender of a killed tidemark may take a moment to notice.
                for _ in 0..50 {
                    let dropped = client
                        .execute(
                            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots
                             WHERE slot_name = $1 AND NOT active",
                            &[&slot],
                        )
                        .await;
                    let left = client
                        .query_opt(
                            "SELECT 1 FROM pg_replication_slots WHERE slot_name = $1",
                            &[&slot],
                        )
                        .await;
                    if dropped.is_err() || matches!(left, Ok(None)) {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            });
        })
        .join();
    }
}
