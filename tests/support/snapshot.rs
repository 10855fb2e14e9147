//! Snapshot tests of either source kind: the snapshot state in the warehouse, tidemark killed
//! during a copy, and the proof that chunks done before a kill were not copied again.

use std::time::Duration;

use super::ids::Rng;
use super::poll::poll;
use super::process::Tidemark;
use super::warehouse::{Warehouse, pg_rows};

/// A chunk's id range: (lower bound, upper bound), unbounded sides `None`.
pub type IdRange = (Option<i64>, Option<i64>);

/// The chunks done before one kill, and the warehouse's time of the kill.
pub type BeforeKill = (Vec<IdRange>, String);

/// The snapshot state in `source_id`'s progress record, if a snapshot runs.
pub async fn snapshot_state(wh: &Warehouse, source_id: &str) -> Option<serde_json::Value> {
    // Before tidemark's first start there is no progress table yet.
    let rows = pg_rows(
        &wh.client,
        &format!("SELECT snapshot::text FROM tidemark.progress WHERE source_id = '{source_id}'"),
    )
    .await
    .ok()?;
    let text = rows.into_iter().next()?.into_iter().next()??;
    let mut state: serde_json::Value = serde_json::from_str(&text).ok()?;
    // Chunks loaded beside others record themselves apart from the state: mark them done.
    let chunks = pg_rows(
        &wh.client,
        &format!(
            "SELECT namespace, name, started_at_micros::text, chunk::text FROM tidemark.snapshot_chunks WHERE source_id = '{source_id}'"
        ),
    )
    .await
    .unwrap_or_default();
    for row in chunks {
        let [Some(namespace), Some(name), Some(started_at), Some(chunk)] = &row[..] else {
            continue;
        };
        let (Ok(started_at), Ok(chunk)) = (started_at.parse::<i64>(), chunk.parse::<usize>())
        else {
            continue;
        };
        let Some(tables) = state["tables"].as_array_mut() else {
            continue;
        };
        let table = tables.iter_mut().find(|t| {
            t["namespace"] == namespace.as_str()
                && t["name"] == name.as_str()
                && t["started_at_micros"] == started_at
        });
        if let Some(done) = table.and_then(|t| t["chunks"].get_mut(chunk)) {
            done["done"] = serde_json::json!(true);
        }
    }
    Some(state)
}

/// How many chunks of `source_id` are recorded loaded apart from its progress record: chunks
/// that loaded beside others.
pub async fn chunks_recorded_apart(wh: &Warehouse, source_id: &str) -> i64 {
    wh.value(&format!(
        "SELECT count(*) FROM tidemark.snapshot_chunks WHERE source_id = '{source_id}'"
    ))
    .await
    .and_then(|n| n.parse().ok())
    .unwrap_or(0)
}

/// Asserts that `source_id`'s snapshot is over: no state in its progress record, no chunk
/// records left.
pub async fn assert_snapshot_cleared(wh: &Warehouse, source_id: &str) {
    let state = snapshot_state(wh, source_id).await;
    assert_eq!(
        state, None,
        "the finished snapshot is cleared from the progress record"
    );
    assert_eq!(
        chunks_recorded_apart(wh, source_id).await,
        0,
        "the finished snapshot's chunk records are removed"
    );
}

/// The chunks marked done of the first table of a snapshot state, each chunk's stored range
/// read by `range_of` (the source kind stores its ranges its own way).
pub fn done_chunks_of(
    state: &serde_json::Value,
    range_of: impl Fn(&serde_json::Value) -> IdRange,
) -> Vec<IdRange> {
    state["tables"][0]["chunks"]
        .as_array()
        .map(|chunks| {
            chunks
                .iter()
                .filter(|c| c["done"] == serde_json::json!(true))
                .map(|c| range_of(&c["range"]))
                .collect()
        })
        .unwrap_or_default()
}

/// Kills tidemark (-9) three times during the copy of `source_id`'s first table, each once 6
/// more chunks are done (`done_chunks` reads them from the state, as the source kind stores
/// them), restarting it each time; returns what was done before each kill.
pub async fn kill_three_times_during_copy(
    tm: &mut Tidemark,
    wh: &Warehouse,
    source_id: &str,
    rng: &mut Rng,
    done_chunks: fn(&serde_json::Value) -> Vec<IdRange>,
) -> Vec<BeforeKill> {
    let mut before_kills = Vec::new();
    let mut recorded_apart = 0;
    for kill in 1..=3usize {
        let wanted = kill * 6;
        let done = poll(Duration::from_secs(120), async || {
            tm.assert_running(&format!("before kill {kill}"));
            let state = snapshot_state(wh, source_id)
                .await
                .ok_or_else(|| "no snapshot yet".to_string())?;
            let done = done_chunks(&state);
            if done.len() >= wanted {
                Ok(done)
            } else {
                Err(format!("{} chunks done", done.len()))
            }
        })
        .await
        .unwrap_or_else(|e| panic!("kill {kill}: the copy did not progress: {e}"));
        tokio::time::sleep(rng.millis(0, 400)).await;
        tm.kill9();
        let killed_at = wh.value("SELECT now()::text").await.unwrap();
        let state = snapshot_state(wh, source_id).await.expect("snapshot state");
        let total = state["tables"][0]["chunks"].as_array().map_or(0, Vec::len);
        let done_at_kill = done_chunks(&state);
        assert!(
            done_at_kill.len() < total,
            "kill {kill} came after the copy finished ({total} chunks): make the table bigger"
        );
        eprintln!(
            "kill {kill}: {} of {total} chunks done ({} when polled)",
            done_at_kill.len(),
            done.len()
        );
        recorded_apart = recorded_apart.max(chunks_recorded_apart(wh, source_id).await);
        before_kills.push((done_at_kill, killed_at));
        tm.spawn();
    }
    assert!(
        recorded_apart > 0,
        "no chunk loaded beside another (none recorded itself in tidemark.snapshot_chunks)"
    );
    before_kills
}

/// Asserts that no chunk done before a kill was copied again after it: most of its rows in
/// `table` (`schema.table`, keyed by `id`) keep a load time from before the kill (a copy again
/// would have reloaded them all; the writer touches only some).
pub async fn assert_not_copied_again(wh: &Warehouse, table: &str, before_kills: &[BeforeKill]) {
    for (kill, (chunks, killed_at)) in before_kills.iter().enumerate() {
        for (lower, upper) in chunks {
            let condition = format!(
                "id >= {} AND id < {}",
                lower.unwrap_or(i64::MIN),
                upper.unwrap_or(i64::MAX)
            );
            let counts = wh
                .rows(&format!(
                    "SELECT count(*) FILTER (WHERE _tidemark_loaded_at < '{killed_at}'), count(*) \
                     FROM {table} WHERE {condition}"
                ))
                .await;
            let old: u64 = counts[0][0].as_deref().unwrap().parse().unwrap();
            let all: u64 = counts[0][1].as_deref().unwrap().parse().unwrap();
            assert!(
                old * 2 > all,
                "kill {}: chunk {condition} was done before the kill, yet only {old} of its {all} rows were loaded before it: it was copied again",
                kill + 1
            );
        }
    }
}

/// Asserts that `table` (`schema.table`) holds no `id` twice.
pub async fn assert_no_key_twice(wh: &Warehouse, table: &str) {
    let dupes = wh
        .value(&format!(
            "SELECT count(*) - count(DISTINCT id) FROM {table}"
        ))
        .await;
    assert_eq!(dupes.as_deref(), Some("0"), "{table} holds a key twice");
}

/// Runs `tidemark ARGS --config CONFIG` to its end.
pub fn tidemark_command(args: &[&str], config: &std::path::Path) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_tidemark"))
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .expect("running tidemark")
}
