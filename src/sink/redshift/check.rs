//! `tidemark check` for a Redshift warehouse: what loading needs, each tried for real, each
//! failure with its fix: writing and deleting a file in the bucket, running a statement, and
//! the IAM role reading the bucket in a COPY.

use std::time::Duration;

use aws_config::BehaviorVersion;

use super::config::RedshiftConfig;
use super::data_api::DataApi;
use super::files::{DEFAULT_LEVEL, GzipParts};
use super::sql;
use super::staging::Staging;
use crate::check::{CheckItem, CheckReport, CheckStatus};

/// How long each check may take.
const TIMEOUT: Duration = Duration::from_secs(60);

/// Checks that tidemark can stage files in the bucket, run statements, and COPY from the
/// bucket with the configured IAM role.
pub async fn check_redshift_warehouse(config: &RedshiftConfig) -> CheckReport {
    let mut report = CheckReport::for_warehouse(format!(
        "redshift database {} (s3://{}/{})",
        config.database, config.s3_bucket, config.s3_prefix
    ));
    let aws = aws_config::defaults(BehaviorVersion::latest())
        .region(aws_config::Region::new(config.region.clone()))
        .load()
        .await;
    let mut staging = Staging::new(&aws, config);
    let api = DataApi::new(&aws, config, &format!("{}:check", config.group));

    // 1. A file in the bucket (what every batch writes), with a manifest.
    let attempt = staging.next_attempt();
    let mut files = staging.table_files("tidemark-check", "probe", &attempt);
    let mut parts = GzipParts::new(1 << 20, DEFAULT_LEVEL);
    let probe_row = b"1,\"insert\",1,\x00,f,42\xff";
    let part = parts
        .write(probe_row)
        .ok()
        .flatten()
        .or_else(|| parts.finish().ok().flatten());
    let manifest = match part {
        Some(part) => {
            let put = async {
                staging.put_part(&mut files, part.bytes).await?;
                staging.put_manifest(&files).await
            };
            match tokio::time::timeout(TIMEOUT, put).await {
                Ok(Ok(manifest)) => {
                    report.items.push(CheckItem::new(
                        "s3 write",
                        CheckStatus::Pass,
                        format!(
                            "wrote a probe file and its manifest under s3://{}/",
                            config.s3_bucket
                        ),
                    ));
                    Some(manifest)
                }
                Ok(Err(error)) => {
                    report.items.push(
                        CheckItem::new("s3 write", CheckStatus::Fail, error.to_string()).with_fix(
                            "give tidemark's AWS identity s3:PutObject, s3:GetObject, s3:DeleteObject and s3:ListBucket on the bucket and prefix; check s3_bucket, region (and s3_endpoint, s3_path_style if set)",
                        ),
                    );
                    None
                }
                Err(_) => {
                    report.items.push(timed_out("s3 write"));
                    None
                }
            }
        }
        None => None,
    };

    // 2. A statement through the Data API.
    let statement_ok = match tokio::time::timeout(TIMEOUT, api.query("SELECT 1")).await {
        Ok(Ok(_)) => {
            report.items.push(CheckItem::new(
                "statement",
                CheckStatus::Pass,
                format!("ran a statement in database {}", config.database),
            ));
            true
        }
        Ok(Err(error)) => {
            report.items.push(
                CheckItem::new("statement", CheckStatus::Fail, error.to_string()).with_fix(
                    "check cluster_id or workgroup, database and region; give tidemark's AWS identity redshift-data:ExecuteStatement, BatchExecuteStatement, DescribeStatement, GetStatementResult, ListStatements and CancelStatement, plus redshift:GetClusterCredentials (db_user) or secretsmanager:GetSecretValue (secret_arn)",
                ),
            );
            false
        }
        Err(_) => {
            report.items.push(timed_out("statement"));
            false
        }
    };

    // 3. The IAM role reading the bucket: a COPY of the probe file into a temporary table.
    if let (Some(manifest), true) = (manifest, statement_ok) {
        let statements = vec![
            "CREATE TEMP TABLE \"tidemark_check\" (\"_tidemark_seq\" bigint, \"_tidemark_op\" character varying(6), \"_tidemark_position\" numeric(30,0), \"_tidemark_commit_ts\" timestamp with time zone, \"_tidemark_truncated\" boolean, \"probe\" integer)".to_owned(),
            sql::copy_stage(
                "tidemark_check",
                &["probe".to_owned()],
                &manifest,
                &config.iam_role,
                &config.region,
            ),
        ];
        match tokio::time::timeout(TIMEOUT, api.transaction(&statements)).await {
            Ok(Ok(())) => report.items.push(CheckItem::new(
                "copy",
                CheckStatus::Pass,
                format!("the IAM role {} read a staged file in a COPY", config.iam_role),
            )),
            Ok(Err(error)) => report.items.push(
                CheckItem::new("copy", CheckStatus::Fail, error.to_string()).with_fix(
                    "associate iam_role with the cluster or workgroup, let Redshift assume it (trust policy), and allow it s3:GetObject and s3:ListBucket on the bucket and prefix",
                ),
            ),
            Err(_) => report.items.push(timed_out("copy")),
        }
    }
    staging.committed().await;
    report
}

fn timed_out(item: &str) -> CheckItem {
    CheckItem::new(
        item,
        CheckStatus::Fail,
        format!("no answer within {TIMEOUT:?}"),
    )
    .with_fix("check the network path to AWS (region, endpoints, proxies, VPC endpoints)")
}
