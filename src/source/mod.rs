//! Sources: readers that turn a database's change log into [`crate::event::SourceMessage`]s.

pub mod mysql;
pub mod postgres;
