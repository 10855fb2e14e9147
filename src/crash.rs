//! Named crash points on the commit path, for tests that prove nothing is lost or doubled when
//! the process dies at exactly that moment.
//!
//! Compiled in only with the `failpoints` feature (which only the test build turns on): then
//! `FAILPOINTS="<name>=return"` in the environment makes the process abort at `<name>`, as
//! `kill -9` would, and other `fail` actions (`sleep(ms)`, `pause`, `panic`) work too. Without
//! the feature a crash point is nothing at all.

/// After a table's changes are staged in the warehouse (COPY done), before they are applied.
pub const AFTER_STAGING_COPY: &str = "after_staging_copy";
/// After every table's changes are applied, before the checkpoint is written.
pub const AFTER_APPLY: &str = "after_apply";
/// After the checkpoint is written, before COMMIT.
pub const BEFORE_COMMIT: &str = "before_commit";
/// After a part of a batch split over several transactions committed, before the next part
/// (Redshift sink).
pub const AFTER_SPLIT_PART: &str = "after_split_part";
/// After COMMIT, before the source is told the position is committed.
pub const AFTER_COMMIT_BEFORE_ACK: &str = "after_commit_before_ack";

/// Fault (not a crash): the Redshift sink writes a staged part corrupted (cut short), as a
/// broken upload would leave it; with `1*return` only the first part.
pub const CORRUPT_STAGED_PART: &str = "corrupt_staged_part";

/// Whether the test that runs the process asked for the fault `name` now (`return` action).
#[inline]
pub fn fault(name: &str) -> bool {
    #[cfg(feature = "failpoints")]
    {
        fail::eval(name, |_| ()).is_some()
    }
    #[cfg(not(feature = "failpoints"))]
    {
        let _ = name;
        false
    }
}

/// The process dies here when the test that runs it asked for `name`.
#[inline]
pub fn crash_point(name: &str) {
    #[cfg(feature = "failpoints")]
    if fail::eval(name, |_| ()).is_some() {
        eprintln!("tidemark: crash point {name}: aborting");
        std::process::abort();
    }
    #[cfg(not(feature = "failpoints"))]
    let _ = name;
}

/// Reads `FAILPOINTS` once at start; hold the guard for the life of the process.
pub fn setup() -> impl Drop {
    #[cfg(feature = "failpoints")]
    {
        fail::FailScenario::setup()
    }
    #[cfg(not(feature = "failpoints"))]
    {
        NoCrashPoints
    }
}

/// The guard when crash points are not compiled in.
#[cfg(not(feature = "failpoints"))]
struct NoCrashPoints;

#[cfg(not(feature = "failpoints"))]
impl Drop for NoCrashPoints {
    fn drop(&mut self) {}
}
