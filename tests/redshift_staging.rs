//! The Redshift sink's staged files on a real S3-compatible server: a part larger than one
//! upload goes up in pieces (multipart) and reads back whole, the manifest lists every part as
//! mandatory, and the files go once their batch committed.

mod support;

use aws_config::{BehaviorVersion, Region};
use aws_sdk_s3::config::{Credentials, SharedCredentialsProvider};
use bytes::Bytes;
use support::redshift_path::{fresh_bucket, s3_client};
use tidemark::sink::redshift::config::{RedshiftAuth, RedshiftConfig, RedshiftTarget};
use tidemark::sink::redshift::staging::Staging;

fn config(bucket: &str) -> RedshiftConfig {
    RedshiftConfig {
        group: "staging-test".into(),
        target: RedshiftTarget::Cluster("test".into()),
        database: "dev".into(),
        auth: RedshiftAuth::DbUser("tidemark".into()),
        s3_bucket: bucket.into(),
        s3_prefix: "cdc/".into(),
        iam_role: "arn:aws:iam::000000000000:role/copy".into(),
        region: support::S3_REGION.into(),
        s3_endpoint: Some(support::s3_url()),
        s3_path_style: true,
        data_api_endpoint: None,
        oversize: Default::default(),
        wide_decimal: Default::default(),
        keep_files: std::time::Duration::ZERO,
        soft_delete: false,
        drop_dropped_columns: false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_parts_go_up_in_pieces_and_files_go_after_the_commit() {
    let bucket = fresh_bucket("staging").await;
    let aws = aws_config::SdkConfig::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(support::S3_REGION))
        .credentials_provider(SharedCredentialsProvider::new(Credentials::new(
            support::S3_ACCESS_KEY_ID,
            support::S3_SECRET_ACCESS_KEY,
            None,
            None,
            "tests",
        )))
        .build();
    let mut staging = Staging::new(&aws, &config(&bucket));
    let attempt = staging.next_attempt();
    let mut files = staging.table_files("src", "acme_in_txn.orders/0", &attempt);
    // 20 MiB: past the single-upload limit, so three 8 MiB pieces.
    let big: Vec<u8> = (0..20u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let big = Bytes::from(big);
    staging.put_part(&mut files, big.clone()).await.unwrap();
    staging
        .put_part(&mut files, Bytes::from_static(b"small"))
        .await
        .unwrap();
    let manifest = staging.put_manifest(&files).await.unwrap();

    let s3 = s3_client();
    let prefix = format!("cdc/staging-test/src/acme_in_txn.orders/0/{attempt}/");
    assert_eq!(manifest, format!("s3://{bucket}/{prefix}manifest"));
    let read = |key: String| {
        let s3 = s3.clone();
        let bucket = bucket.clone();
        async move {
            let object = s3
                .get_object()
                .bucket(bucket)
                .key(key)
                .send()
                .await
                .unwrap();
            object.body.collect().await.unwrap().into_bytes()
        }
    };
    assert!(
        read(format!("{prefix}part-1.gz")).await == big,
        "the big part reads back whole"
    );
    let manifest: serde_json::Value =
        serde_json::from_slice(&read(format!("{prefix}manifest")).await).unwrap();
    assert_eq!(
        manifest,
        serde_json::json!({"entries": [
            {"url": format!("s3://{bucket}/{prefix}part-1.gz"), "mandatory": true},
            {"url": format!("s3://{bucket}/{prefix}part-2.gz"), "mandatory": true},
        ]})
    );

    staging.committed().await;
    let left = s3.list_objects_v2().bucket(&bucket).send().await.unwrap();
    assert!(left.contents().is_empty(), "{:?}", left.contents());
}
