//! tidemark: change-data-capture from MySQL/MariaDB binlogs and Postgres logical replication
//! into a Postgres warehouse (Redshift is planned).
//!
//! Sources and sinks meet only in [`event`]: a source turns its log into [`event::SourceMessage`]s,
//! a sink applies them together with the source's resume point.

#![warn(missing_docs)]

pub mod check;
pub mod config;
pub mod crash;
pub mod error;
pub mod event;
pub mod fleet;
pub mod import;
pub mod observe;
pub mod pipeline;
pub mod retry;
pub mod secrets;
pub mod sink;
pub mod snapshot;
pub mod source;
pub mod tls;
