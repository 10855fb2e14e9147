//! Staged files in S3: each table's rows of one load attempt as gzip parts plus the manifest
//! COPY reads them by, and their removal once the batch committed.
//!
//! Keys: `{prefix}{group}/{source}/{schema}.{table}/{attempt}/part-N.gz` and `.../manifest`
//! (a table whose shape changed within the batch has one folder per shape, `.../{schema}.{table}/{n}/`),
//! where the attempt is unique per load attempt, so a retried batch never reads a file of an
//! earlier attempt (the corrupt one, maybe). Files are deleted only after a batch committed:
//! its own and those of its failed attempts, which no statement reads any more by then.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_s3::Client;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart, Delete, ObjectIdentifier};
use bytes::Bytes;

use super::config::RedshiftConfig;
use super::data_api::describe_chain;
use crate::error::ErrorKind;

/// Parts larger than this are uploaded in pieces (multipart upload).
const SINGLE_UPLOAD_BYTES: usize = 16 * 1024 * 1024;
/// The size of one piece of a multipart upload (S3 wants at least 5 MiB but the last).
const PIECE_BYTES: usize = 8 * 1024 * 1024;
/// S3 deletes at most this many keys per request.
const DELETE_BATCH: usize = 1000;
/// How often the sweep for files older than `keep_files` runs at most.
const SWEEP_EVERY: Duration = Duration::from_secs(600);

/// A failed S3 request.
#[derive(Debug, thiserror::Error)]
#[error("S3 {operation} of s3://{bucket}/{key} failed: {message}")]
pub struct S3Error {
    operation: &'static str,
    bucket: String,
    key: String,
    message: String,
    kind: ErrorKind,
}

impl S3Error {
    /// Whether waiting can fix it.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }
}

/// Where one source's files go, and the files written but not yet deleted.
#[derive(Debug)]
pub struct Staging {
    client: Client,
    bucket: String,
    /// `{prefix}{group}/`.
    folder: String,
    keep_files: Duration,
    /// Keys written by attempts not yet followed by a commit.
    written: Vec<String>,
    last_sweep: Option<std::time::Instant>,
    attempts: u64,
}

/// One table's files of one attempt.
#[derive(Debug)]
pub struct TableFiles {
    /// The folder of the attempt's parts and manifest.
    pub folder: String,
    parts: Vec<String>,
}

impl Staging {
    /// Staging for the sources of `config`'s group, with the S3 client built from `aws` and
    /// `config`'s endpoint settings.
    pub fn new(aws: &aws_config::SdkConfig, config: &RedshiftConfig) -> Staging {
        let mut builder = aws_sdk_s3::config::Builder::from(aws);
        if let Some(endpoint) = &config.s3_endpoint {
            builder = builder.endpoint_url(endpoint);
        }
        builder = builder.force_path_style(config.s3_path_style);
        Staging {
            client: Client::from_conf(builder.build()),
            bucket: config.s3_bucket.clone(),
            folder: format!("{}{}/", config.s3_prefix, config.group),
            keep_files: config.keep_files,
            written: Vec::new(),
            last_sweep: None,
            attempts: 0,
        }
    }

    /// The bucket files go to.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// A name unique to one load attempt of this process: the time and a counter.
    pub fn next_attempt(&mut self) -> String {
        self.attempts += 1;
        let micros = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros());
        format!("{micros:x}-{}", self.attempts)
    }

    /// Starts the files of `source`'s `table` (its target `schema.table`) for `attempt`.
    pub fn table_files(&self, source: &str, table: &str, attempt: &str) -> TableFiles {
        TableFiles {
            folder: format!("{}{source}/{table}/{attempt}/", self.folder),
            parts: Vec::new(),
        }
    }

    /// Uploads one gzip part of `files`.
    pub async fn put_part(&mut self, files: &mut TableFiles, part: Bytes) -> Result<(), S3Error> {
        let key = format!("{}part-{}.gz", files.folder, files.parts.len() + 1);
        self.written.push(key.clone());
        if part.len() <= SINGLE_UPLOAD_BYTES {
            self.put(&key, part).await?;
        } else {
            self.put_in_pieces(&key, part).await?;
        }
        files.parts.push(key);
        Ok(())
    }

    /// Writes the manifest of `files` (every part mandatory) and returns its `s3://` URL.
    pub async fn put_manifest(&mut self, files: &TableFiles) -> Result<String, S3Error> {
        let entries: Vec<serde_json::Value> = files
            .parts
            .iter()
            .map(|key| {
                serde_json::json!({
                    "url": format!("s3://{}/{key}", self.bucket),
                    "mandatory": true,
                })
            })
            .collect();
        let manifest = serde_json::json!({ "entries": entries }).to_string();
        let key = format!("{}manifest", files.folder);
        self.written.push(key.clone());
        self.put(&key, Bytes::from(manifest)).await?;
        Ok(format!("s3://{}/{key}", self.bucket))
    }

    /// After a commit: deletes the files written so far (when `keep_files` is 0), or those
    /// older than `keep_files` (at most every [`SWEEP_EVERY`]). A failure is only logged: the
    /// files are harmless, and the next sweep or commit tries again.
    pub async fn committed(&mut self) {
        if self.keep_files.is_zero() {
            let keys = std::mem::take(&mut self.written);
            if let Err(error) = self.delete(&keys).await {
                tracing::warn!(error = %error, "could not delete staged files of a committed batch (they stay in S3)");
                self.written = keys;
            }
            return;
        }
        self.written.clear();
        if self.last_sweep.is_some_and(|at| at.elapsed() < SWEEP_EVERY) {
            return;
        }
        self.last_sweep = Some(std::time::Instant::now());
        if let Err(error) = self.sweep().await {
            tracing::warn!(error = %error, "could not delete staged files older than keep_files (they stay in S3)");
        }
    }

    /// Deletes the group's files last modified more than `keep_files` ago.
    async fn sweep(&self) -> Result<(), S3Error> {
        let cutoff = SystemTime::now()
            .checked_sub(self.keep_files)
            .unwrap_or(UNIX_EPOCH);
        let cutoff_secs = cutoff
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let mut old = Vec::new();
        let mut token = None;
        loop {
            let page = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(&self.folder)
                .set_continuation_token(token.take())
                .send()
                .await
                .map_err(self.s3_error("ListObjectsV2", &self.folder))?;
            for object in page.contents() {
                if let (Some(key), Some(modified)) = (object.key(), object.last_modified())
                    && modified.secs() < cutoff_secs
                {
                    old.push(key.to_owned());
                }
            }
            match page.next_continuation_token() {
                Some(next) => token = Some(next.to_owned()),
                None => break,
            }
        }
        self.delete(&old).await
    }

    async fn delete(&self, keys: &[String]) -> Result<(), S3Error> {
        for group in keys.chunks(DELETE_BATCH) {
            let objects = group
                .iter()
                .filter_map(|key| ObjectIdentifier::builder().key(key).build().ok())
                .collect();
            let Ok(delete) = Delete::builder()
                .set_objects(Some(objects))
                .quiet(true)
                .build()
            else {
                continue;
            };
            self.client
                .delete_objects()
                .bucket(&self.bucket)
                .delete(delete)
                .send()
                .await
                .map_err(self.s3_error("DeleteObjects", &group[0]))?;
        }
        Ok(())
    }

    async fn put(&self, key: &str, body: Bytes) -> Result<(), S3Error> {
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(self.s3_error("PutObject", key))?;
        Ok(())
    }

    async fn put_in_pieces(&self, key: &str, body: Bytes) -> Result<(), S3Error> {
        let started = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(self.s3_error("CreateMultipartUpload", key))?;
        let upload_id = started.upload_id().unwrap_or_default().to_owned();
        let mut done = Vec::new();
        let mut offset = 0;
        let mut number = 1;
        while offset < body.len() {
            let end = (offset + PIECE_BYTES).min(body.len());
            let uploaded = self
                .client
                .upload_part()
                .bucket(&self.bucket)
                .key(key)
                .upload_id(&upload_id)
                .part_number(number)
                .body(ByteStream::from(body.slice(offset..end)))
                .send()
                .await
                .map_err(self.s3_error("UploadPart", key));
            let uploaded = match uploaded {
                Ok(uploaded) => uploaded,
                Err(error) => {
                    // Parts of an abandoned upload are billed until aborted.
                    let _ = self
                        .client
                        .abort_multipart_upload()
                        .bucket(&self.bucket)
                        .key(key)
                        .upload_id(&upload_id)
                        .send()
                        .await;
                    return Err(error);
                }
            };
            done.push(
                CompletedPart::builder()
                    .part_number(number)
                    .set_e_tag(uploaded.e_tag().map(str::to_owned))
                    .build(),
            );
            offset = end;
            number += 1;
        }
        self.client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(&upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(done))
                    .build(),
            )
            .send()
            .await
            .map_err(self.s3_error("CompleteMultipartUpload", key))?;
        Ok(())
    }

    fn s3_error<'a, E, R>(
        &'a self,
        operation: &'static str,
        key: &'a str,
    ) -> impl FnOnce(SdkError<E, R>) -> S3Error + 'a
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
        R: std::fmt::Debug,
    {
        move |error| {
            let (kind, message) = match &error {
                SdkError::ServiceError(service) => {
                    let inner = service.err();
                    let code = inner.code().unwrap_or("");
                    let kind = match code {
                        "SlowDown" | "InternalError" | "ServiceUnavailable" | "RequestTimeout" => {
                            ErrorKind::Retry
                        }
                        _ => ErrorKind::Operator,
                    };
                    let fix = match code {
                        "NoSuchBucket" => ". Fix: create the bucket or correct s3_bucket",
                        "AccessDenied" => {
                            ". Fix: allow tidemark's AWS identity s3:PutObject, s3:GetObject, s3:DeleteObject and s3:ListBucket on the bucket and prefix (`tidemark check` tests them)"
                        }
                        _ => "",
                    };
                    (
                        kind,
                        format!("{code}: {}{fix}", inner.message().unwrap_or("no message")),
                    )
                }
                _ => (ErrorKind::Retry, describe_chain(&error)),
            };
            S3Error {
                operation,
                bucket: self.bucket.clone(),
                key: key.to_owned(),
                message,
                kind,
            }
        }
    }
}
