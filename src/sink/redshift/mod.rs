//! Amazon Redshift as a warehouse: batches staged as gzip CSV files in S3, loaded with COPY
//! and a manifest, and applied with MERGE through the Data API, each batch in one transaction
//! with its progress (see [`sink`]).
//!
//! [`config`] holds the settings, [`types`] the column type mapping, [`encode`] the row
//! format, [`files`] the gzip parts, [`staging`] the files in S3, [`data_api`] the statements,
//! [`sql`] their text.

pub mod check;
pub mod config;
pub mod data_api;
pub mod encode;
pub mod files;
pub mod sink;
pub mod sql;
pub mod staging;
pub mod types;

pub use sink::RedshiftSink;
