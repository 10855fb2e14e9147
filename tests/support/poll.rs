//! Waiting in end-to-end tests: one retry loop (`poll`) that every wait is built on, so each
//! wait has a timeout and reports the last reason it was still waiting.

use std::time::{Duration, Instant};

use super::process::Tidemark;
use super::warehouse::Warehouse;

/// Calls `probe` every 100 ms until it returns Ok (returned) or `timeout` passes (the last
/// error is returned).
pub async fn poll<T>(
    timeout: Duration,
    mut probe: impl AsyncFnMut() -> Result<T, String>,
) -> Result<T, String> {
    let deadline = Instant::now() + timeout;
    loop {
        match probe().await {
            Ok(v) => return Ok(v),
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Calls `cond` every 100 ms until it is true (returns true) or `timeout` passes (false).
pub async fn wait_until(timeout: Duration, mut cond: impl AsyncFnMut() -> bool) -> bool {
    poll(timeout, async || {
        if cond().await {
            Ok(())
        } else {
            Err(String::new())
        }
    })
    .await
    .is_ok()
}

/// Waits until `source_id` has a checkpoint row (tidemark has fixed its start position).
/// Panics if tidemark exits or `timeout` passes first.
pub async fn wait_checkpoint(
    tm: &mut Tidemark,
    wh: &Warehouse,
    source_id: &str,
    timeout: Duration,
) -> String {
    let result = poll(timeout, async || {
        if let Some(position) = wh.checkpoint(source_id).await {
            return Ok(position);
        }
        if let Some(status) = tm.try_exit() {
            return Err(format!("tidemark exited ({status}) before checkpointing"));
        }
        Err("no row yet".into())
    })
    .await;
    match result {
        Ok(position) => position,
        Err(e) => panic!(
            "no tidemark.progress row for source {source_id} in {} after {timeout:?}: {e}",
            wh.db
        ),
    }
}
