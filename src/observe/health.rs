//! What each source of this process is going through now that its own log does not show in
//! the warehouse: a connection to its server that keeps failing while the reader retries by
//! itself. Readers report here; the group runtime records it in the source's progress record
//! for `tidemark status`.
//!
//! Process-wide, because the reader that sees the trouble knows nothing of the warehouse.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, OnceLock};

/// Each source's trouble now (source id → message), and whether it changed since it was last
/// taken.
#[derive(Default)]
struct Troubles {
    now: HashMap<String, String>,
    changed: bool,
}

fn troubles() -> MutexGuard<'static, Troubles> {
    static TROUBLES: OnceLock<Mutex<Troubles>> = OnceLock::new();
    TROUBLES
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// `source_id` cannot reach its server: `message` says why (no secret in it).
pub fn trouble(source_id: &str, message: String) {
    let mut troubles = troubles();
    if troubles.now.get(source_id) != Some(&message) {
        troubles.now.insert(source_id.to_owned(), message);
        troubles.changed = true;
    }
}

/// `source_id` reaches its server again.
pub fn recovered(source_id: &str) {
    let mut troubles = troubles();
    if troubles.now.remove(source_id).is_some() {
        troubles.changed = true;
    }
}

/// Every source's trouble now, when something changed since the last call; `None` otherwise.
pub fn take_changed() -> Option<Vec<(String, String)>> {
    let mut troubles = troubles();
    if !troubles.changed {
        return None;
    }
    troubles.changed = false;
    Some(
        troubles
            .now
            .iter()
            .map(|(id, message)| (id.clone(), message.clone()))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn troubles_are_taken_once_per_change() {
        trouble("health-a", "refused".into());
        let taken = take_changed().unwrap();
        assert!(taken.contains(&("health-a".into(), "refused".into())));
        trouble("health-a", "refused".into());
        assert!(
            take_changed().is_none_or(|t| t.iter().all(|(id, _)| id != "health-a")),
            "the same trouble again is no change"
        );
        recovered("health-a");
        let taken = take_changed().unwrap();
        assert!(!taken.iter().any(|(id, _)| id == "health-a"));
    }
}
