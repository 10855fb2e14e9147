//! Typed `[warehouse]`: a Postgres connection, or Redshift reached through the Data API and S3.
//!
//! Invariant: each variant holds exactly the keys its kind needs; keys of the other kind are
//! rejected at load time rather than ignored.

use super::secret::SecretUrl;

/// Where changes are loaded.
#[derive(Debug, Clone)]
pub enum WarehouseConfig {
    /// Postgres (local, RDS, Aurora): COPY into staging tables, then MERGE.
    Postgres {
        /// Connection URL (`postgres://user:password@host:5432/db`); its password never prints.
        url: SecretUrl,
    },
    /// Amazon Redshift: gzip files in S3, COPY with a manifest, MERGE via the Data API.
    Redshift(RedshiftConfig),
}

impl WarehouseConfig {
    /// The config name of the warehouse kind (`postgres` or `redshift`).
    pub fn kind(&self) -> &'static str {
        match self {
            WarehouseConfig::Postgres { .. } => "postgres",
            WarehouseConfig::Redshift(_) => "redshift",
        }
    }

    /// Where the warehouse is, for messages: never a password.
    pub fn describe(&self) -> String {
        match self {
            WarehouseConfig::Postgres { url } => url.redacted(),
            WarehouseConfig::Redshift(redshift) => {
                format!("redshift database {}", redshift.database)
            }
        }
    }
}

/// Which Redshift deployment the Data API addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedshiftTarget {
    /// A provisioned cluster, by `cluster_id`.
    Cluster(String),
    /// A Redshift Serverless workgroup, by `workgroup`.
    Workgroup(String),
}

/// How the Data API authenticates to the database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedshiftAuth {
    /// An AWS Secrets Manager secret holding the database credentials (`secret_arn`).
    SecretArn(String),
    /// Temporary credentials for this database user (`db_user`; provisioned clusters only).
    DbUser(String),
    /// The caller's IAM identity (Serverless workgroups without `secret_arn`).
    Iam,
}

/// `[warehouse]` with `kind = "redshift"`.
#[derive(Debug, Clone)]
pub struct RedshiftConfig {
    /// Cluster or Serverless workgroup.
    pub target: RedshiftTarget,
    /// Database name.
    pub database: String,
    /// Data API authentication.
    pub auth: RedshiftAuth,
    /// Bucket for staged batch files (name only, no `s3://`).
    pub s3_bucket: String,
    /// Key prefix for staged files (default `tidemark/`), always ending in `/`.
    pub s3_prefix: String,
    /// ARN of the IAM role Redshift assumes to read the staged files in COPY.
    pub iam_role: String,
    /// AWS region of the cluster/workgroup and the bucket.
    pub region: String,
}
