//! The settings of a Redshift warehouse (`[warehouse] kind = "redshift"`), their default and
//! their checks.
//!
//! Invariant: a [`RedshiftConfig`] names exactly one deployment (a provisioned cluster or a
//! Serverless workgroup) with an authentication that deployment accepts, a bare bucket name, a
//! key prefix ending in `/` (or empty) and a role ARN; config loading builds it and reports a
//! problem with the file, line and key.

use std::time::Duration;

use super::encode::Oversize;
use super::types::WideDecimal;

/// Default `s3_prefix`.
pub const DEFAULT_S3_PREFIX: &str = "tidemark/";

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
    /// The group (`[group] name`): staged files and statement names carry it.
    pub group: String,
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
    /// Where S3 requests go instead of AWS's endpoint (`s3_endpoint`: a VPC endpoint, or an
    /// S3-compatible server in tests).
    pub s3_endpoint: Option<String>,
    /// Path-style S3 addressing (`s3_path_style`, default false: virtual-hosted style).
    pub s3_path_style: bool,
    /// Where Data API requests go instead of AWS's endpoint (`data_api_endpoint`).
    pub data_api_endpoint: Option<String>,
    /// What a value past its Redshift column's limit does (`oversize`).
    pub oversize: Oversize,
    /// What a DECIMAL wider than 38 digits becomes (`wide_decimal`).
    pub wide_decimal: WideDecimal,
    /// How long staged files stay in S3 after their batch committed (`keep_files`, default 0:
    /// deleted at once).
    pub keep_files: Duration,
    /// Keep deleted rows, flagged `_tidemark_deleted`, instead of removing them (`soft_delete`).
    pub soft_delete: bool,
    /// Drop a target column once the source dropped it (`dropped_columns = "drop"`), instead
    /// of keeping it (the default: rows changed afterwards have NULL in it).
    pub drop_dropped_columns: bool,
}

impl RedshiftConfig {
    /// The config keys this kind accepts besides `kind`.
    pub const KEYS: &'static [&'static str] = &[
        "cluster_id",
        "workgroup",
        "database",
        "secret_arn",
        "db_user",
        "s3_bucket",
        "s3_prefix",
        "iam_role",
        "region",
        "s3_endpoint",
        "s3_path_style",
        "data_api_endpoint",
        "oversize",
        "wide_decimal",
        "keep_files",
        "soft_delete",
        "dropped_columns",
    ];
}

/// The `oversize` value named `text`, if it names one.
pub fn parse_oversize(text: &str) -> Option<Oversize> {
    match text {
        "fail" => Some(Oversize::Fail),
        "truncate" => Some(Oversize::Truncate),
        _ => None,
    }
}

/// The `wide_decimal` value named `text`, if it names one.
pub fn parse_wide_decimal(text: &str) -> Option<WideDecimal> {
    match text {
        "text" => Some(WideDecimal::Text),
        "decimal38" => Some(WideDecimal::Decimal38),
        _ => None,
    }
}

/// Why `bucket` cannot be an `s3_bucket` value, if it cannot: the bucket name alone is wanted.
pub fn bucket_problem(bucket: &str) -> Option<&'static str> {
    (bucket.starts_with("s3://") || bucket.contains('/'))
        .then_some("give the bucket name only (no s3://, no /); put the key prefix in s3_prefix")
}

/// Why `role` cannot be an `iam_role` value, if it cannot.
pub fn iam_role_problem(role: &str) -> Option<&'static str> {
    (!role.starts_with("arn:"))
        .then_some("must be an IAM role ARN (arn:aws:iam::ACCOUNT:role/NAME)")
}

/// The key prefix staged files get from `s3_prefix` as written: no leading `/` (S3 keys have
/// none), and a trailing `/` added when missing so the prefix is a folder.
pub fn normalized_s3_prefix(prefix: &str) -> String {
    let mut prefix = prefix.trim_start_matches('/').to_string();
    if !prefix.is_empty() && !prefix.ends_with('/') {
        prefix.push('/');
    }
    prefix
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_become_folders() {
        assert_eq!(normalized_s3_prefix(DEFAULT_S3_PREFIX), "tidemark/");
        assert_eq!(normalized_s3_prefix("/cdc/raw"), "cdc/raw/");
        assert_eq!(normalized_s3_prefix(""), "");
        assert_eq!(normalized_s3_prefix("/"), "");
    }

    #[test]
    fn buckets_and_roles_are_checked() {
        assert!(bucket_problem("bucket").is_none());
        assert!(bucket_problem("s3://bucket").is_some());
        assert!(bucket_problem("bucket/prefix").is_some());
        assert!(iam_role_problem("arn:aws:iam::123456789012:role/copy").is_none());
        assert!(iam_role_problem("copy").is_some());
    }
}
