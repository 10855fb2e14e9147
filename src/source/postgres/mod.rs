//! PostgreSQL logical-replication source.
//!
//! Changes are read from a logical replication slot through the `pgoutput` plugin, the one every
//! Postgres ships, so nothing needs installing on the source server:
//! - [`slot`]: the publication and slot, created on first start, checked against the checkpoint;
//! - [`stream`]: the replication connection, decoded messages and position confirmations;
//! - [`pgoutput`]: the protocol decoder (bytes of one message in, a typed message out, no I/O);
//! - [`catalog`] and [`types`]: what pgoutput's text values mean, per column type;
//! - [`assemble`]: pgoutput messages to tidemark's `SourceMessage` grammar;
//! - [`reader`]: all of the above as the pipeline sees it;
//! - [`check`]: the prerequisites `tidemark check` reports.

pub mod assemble;
pub mod catalog;
pub mod check;
pub mod pgoutput;
pub mod reader;
pub mod slot;
pub mod stream;
pub mod types;
