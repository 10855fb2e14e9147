//! The Redshift path of end-to-end tests: the Data API test server running the SQL in the
//! test's warehouse database, a fresh bucket on the S3 server, and the `[warehouse]` settings
//! that point `tidemark run` at both. The target tables are then read straight from that
//! Postgres database, as the other pipeline tests read theirs.

use std::sync::atomic::{AtomicUsize, Ordering};

use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};

use super::config::RedshiftWarehouse;
use super::redshift::{Outcome, RedshiftTestServer};
use super::warehouse::Warehouse;

/// A running test server and the bucket staged files go to.
pub struct RedshiftPath {
    /// The Data API test server.
    pub server: RedshiftTestServer,
    /// The bucket.
    pub bucket: String,
    /// The settings to put in the group config (`GroupConfig::redshift`).
    pub warehouse: RedshiftWarehouse,
}

impl RedshiftPath {
    /// A test server over `wh`'s database and a new bucket named after `hint`.
    pub async fn start(hint: &str, wh: &Warehouse) -> RedshiftPath {
        let server = super::redshift::start_for_tests().await;
        let bucket = fresh_bucket(hint).await;
        let warehouse = RedshiftWarehouse {
            data_api_endpoint: server.endpoint.clone(),
            s3_endpoint: super::s3_url(),
            bucket: bucket.clone(),
            database: wh.db.clone(),
            extra: String::new(),
        };
        RedshiftPath {
            server,
            bucket,
            warehouse,
        }
    }

    /// The keys in the bucket now.
    pub async fn objects(&self) -> Vec<String> {
        let listed = s3_client()
            .list_objects_v2()
            .bucket(&self.bucket)
            .send()
            .await
            .expect("listing the test bucket");
        listed
            .contents()
            .iter()
            .filter_map(|o| o.key().map(str::to_owned))
            .collect()
    }

    /// The statements the server failed (SQL and error), in order.
    pub fn failed_statements(&self) -> Vec<(String, String)> {
        self.server
            .statements()
            .into_iter()
            .filter_map(|(sql, outcome)| match outcome {
                Outcome::Failed(e) | Outcome::Rejected(e) => Some((sql, e)),
                _ => None,
            })
            .collect()
    }
}

/// An S3 client for the test S3 server.
pub fn s3_client() -> aws_sdk_s3::Client {
    let config = aws_sdk_s3::config::Builder::new()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(super::S3_REGION))
        .credentials_provider(Credentials::new(
            super::S3_ACCESS_KEY_ID,
            super::S3_SECRET_ACCESS_KEY,
            None,
            None,
            "tests",
        ))
        .endpoint_url(super::s3_url())
        .force_path_style(true)
        .build();
    aws_sdk_s3::Client::from_conf(config)
}

/// A new, empty bucket named `t<pid>-<n>-<hint>` (lowercase, S3's rules).
pub async fn fresh_bucket(hint: &str) -> String {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let hint: String = hint
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let mut name = format!(
        "t{}-{}-{hint}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    );
    name.truncate(63);
    let name = name.trim_end_matches('-').to_owned();
    s3_client()
        .create_bucket()
        .bucket(&name)
        .send()
        .await
        .unwrap_or_else(|e| panic!("creating bucket {name}: {e:?}"));
    name
}
