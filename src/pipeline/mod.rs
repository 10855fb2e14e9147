//! From source messages to warehouse batches: routing, batching, backpressure and checkpoint
//! coordination for a group of sources.
//!
//! The pipeline is the only place that knows both sides: it reads [`crate::event`] messages
//! from a [`crate::source::Source`], routes each table to its target ([`route`]),
//! gathers whole transactions into batches ([`batch`]) and hands them to a sink, which commits
//! rows and checkpoint together ([`run`]); committed positions go back to the reader.

pub mod batch;
pub mod columns;
pub mod route;
pub mod run;
pub mod skip;

pub use run::{RETRYING, SourceError, Turns, supervise_source};
pub use skip::{SkipError, Skipped, skip_to_end};
