//! Everything an end-to-end test of `tidemark run` uses, under one name: the subjects live in
//! their own modules (ids, warehouse, config, the tidemark process, polling, the MySQL setup,
//! the writer, the comparison, the journal, the COMMIT-dropping proxy), and test files import
//! them from here, so a test's `use` line does not change when a helper moves between modules.
// Each test file uses its own subset of these, as with the `dead_code` allowance in `mod.rs`.
#![allow(unused_imports)]

pub use super::commit_proxy::*;
pub use super::compare::*;
pub use super::config::*;
pub use super::ids::*;
pub use super::journal::*;
pub use super::mysql_pipeline::*;
pub use super::poll::*;
pub use super::process::*;
pub use super::warehouse::*;
pub use super::writer::*;
