//! Amazon Redshift as a warehouse: batches staged as gzip files in S3, loaded with COPY and a
//! manifest, and applied with MERGE through the Data API.
//!
//! Only the settings ([`config`]) and the type mapping ([`types`]) exist so far: a
//! `kind = "redshift"` warehouse is parsed and checked when the config is loaded, and refused
//! by `run` and `check` until the sink arrives in a later release (it will be a `Sink` here,
//! plus its line in `sink::connect`).

pub mod config;
pub mod types;
