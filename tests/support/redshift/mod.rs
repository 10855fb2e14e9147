//! A Redshift Data API test server: the Data API's JSON protocol over HTTP, running the SQL on
//! a local Postgres, because Redshift cannot run here (contract: the sink's test-server notes).
//!
//! What it adds to Postgres, so tests exercise what Redshift does:
//! - statements run asynchronously, each on a connection of its own; clients poll
//!   DescribeStatement; a batch is one transaction;
//! - SQL Redshift would reject fails before it reaches Postgres ([`checks`]), and the few
//!   Redshift-only spellings the sink uses are rewritten for Postgres;
//! - `COPY ... FROM 's3://...' MANIFEST GZIP FORMAT AS CSV` loads the staged files from the S3
//!   server ([`copy`]);
//! - each database gets the SUPER and VARBYTE types and JSON_PARSE.
//!
//! The same modules build the `redshift-test-server` example (`main.rs`), a process for the
//! demo; only [`start_for_tests`] depends on the rest of the test support.

mod checks;
mod copy;
mod protocol;
mod run;
mod server;

use std::time::Duration;

pub use server::{Outcome, RedshiftTestServer, ServerSettings};

/// Starts a server on the dev services (the shared Postgres and S3 server), with no delay.
pub async fn start_for_tests() -> RedshiftTestServer {
    RedshiftTestServer::start(ServerSettings {
        postgres_url: super::pg_url(),
        s3_endpoint: super::s3_url(),
        s3_region: super::S3_REGION.to_string(),
        s3_access_key_id: super::S3_ACCESS_KEY_ID.to_string(),
        s3_secret_access_key: super::S3_SECRET_ACCESS_KEY.to_string(),
        statement_delay: Duration::ZERO,
    })
    .await
}
