//! tidemark: change-data-capture from MySQL/MariaDB binlogs and Postgres logical replication
//! into Postgres and Redshift warehouses.
//!
//! Sources and sinks meet only in [`event`]: a source turns its log into [`event::SourceMessage`]s,
//! a sink applies them together with the source's resume point.

#![warn(missing_docs)]

pub mod config;
pub mod error;
pub mod event;
pub mod observe;
pub mod pipeline;
pub mod sink;
pub mod source;
