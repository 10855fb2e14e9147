//! Redshift's `COPY ... FROM 's3://...manifest' MANIFEST GZIP FORMAT AS CSV NULL AS '\0'`,
//! emulated: read the manifest and its files from the S3 server, gunzip them, parse them
//! strictly as the staged row format says (RFC 4180 CSV, an unquoted NUL byte for NULL, hex
//! for VARBYTE), and load every row with one Postgres `COPY ... FROM STDIN`, so the load is
//! all or nothing like Redshift's.

use std::io::Read;

use aws_sdk_s3::error::DisplayErrorContext;
use bytes::Bytes;
use futures_util::SinkExt;
use serde::Deserialize;
use tokio_postgres::Client;

use super::checks::CopyFromS3;

/// A Redshift manifest: the files to load.
#[derive(Deserialize)]
struct Manifest {
    entries: Vec<ManifestEntry>,
}

/// One file of a manifest.
#[derive(Deserialize)]
struct ManifestEntry {
    url: String,
    #[serde(default)]
    mandatory: bool,
}

/// A target column of the load.
struct Column {
    name: String,
    /// Of the `varbyte` domain: the file holds hex, Postgres' bytea input wants `\x` first.
    varbyte: bool,
}

/// Runs `copy` on `client` (inside the statement's transaction, if any) and returns the number
/// of rows loaded, or the statement's error text.
pub async fn run(
    client: &Client,
    s3: &aws_sdk_s3::Client,
    copy: &CopyFromS3,
) -> Result<u64, String> {
    let columns = target_columns(client, copy).await?;
    let manifest_bytes = get_object(s3, &copy.manifest_url)
        .await
        .map_err(|e| {
            format!(
                "ERROR: Problem reading manifest file {}: {e}",
                copy.manifest_url
            )
        })?
        .ok_or_else(|| {
            format!(
                "ERROR: Problem reading manifest file {}: the object does not exist",
                copy.manifest_url
            )
        })?;
    let manifest: Manifest = serde_json::from_slice(&manifest_bytes).map_err(|e| {
        format!(
            "ERROR: Manifest file is not in correct json format: {}: {e}",
            copy.manifest_url
        )
    })?;
    let failed = |url: &str, line: Option<usize>, reason: &str| match line {
        Some(line) => format!(
            "ERROR: Load into table '{}' failed. {url} line {line}: {reason}",
            copy.table_label
        ),
        None => format!(
            "ERROR: Load into table '{}' failed. {url}: {reason}",
            copy.table_label
        ),
    };
    // Every row for Postgres in its text format, and where each came from, to name the file and line
    // of a row Postgres refuses.
    let mut data = Vec::new();
    let mut origins: Vec<(usize, usize)> = Vec::new();
    for (file, entry) in manifest.entries.iter().enumerate() {
        let compressed = match get_object(s3, &entry.url).await {
            Ok(Some(bytes)) => bytes,
            Ok(None) if entry.mandatory => {
                return Err(failed(
                    &entry.url,
                    None,
                    "the manifest marks the file mandatory but it does not exist",
                ));
            }
            Ok(None) => continue,
            Err(e) => return Err(failed(&entry.url, None, &e)),
        };
        let mut text = Vec::new();
        flate2::read::MultiGzDecoder::new(&compressed[..])
            .read_to_end(&mut text)
            .map_err(|e| failed(&entry.url, None, &format!("gzip: {e}")))?;
        let records =
            parse_csv(&text).map_err(|(line, reason)| failed(&entry.url, Some(line), &reason))?;
        for record in records {
            if record.fields.len() != columns.len() {
                let reason = format!(
                    "{} (expected {} fields, found {})",
                    if record.fields.len() < columns.len() {
                        "Delimiter not found"
                    } else {
                        "Extra column(s) found"
                    },
                    columns.len(),
                    record.fields.len()
                );
                return Err(failed(&entry.url, Some(record.line), &reason));
            }
            write_postgres_text(&mut data, &record.fields, &columns);
            origins.push((file, record.line));
        }
    }
    let column_list: Vec<&str> = copy.columns.iter().map(|c| c.sql.as_str()).collect();
    let statement = if column_list.is_empty() {
        format!("COPY {} FROM STDIN", copy.table)
    } else {
        format!(
            "COPY {} ({}) FROM STDIN",
            copy.table,
            column_list.join(", ")
        )
    };
    let loaded = async {
        let sink = client.copy_in::<_, Bytes>(&statement).await?;
        let mut sink = Box::pin(sink);
        sink.send(Bytes::from(data)).await?;
        sink.as_mut().finish().await
    }
    .await;
    loaded.map_err(|e| {
        let Some(db) = e.as_db_error() else {
            return format!("ERROR: {e}");
        };
        // "COPY stage, line 3, column v: ...": the third record (one line each).
        let record = db.where_().and_then(record_number);
        match record.and_then(|n| origins.get(n.checked_sub(1)?)) {
            Some(&(file, line)) => failed(&manifest.entries[file].url, Some(line), db.message()),
            None => format!(
                "ERROR: Load into table '{}' failed: {} ({})",
                copy.table_label,
                db.message(),
                db.where_().unwrap_or_default()
            ),
        }
    })
}

/// The columns the COPY loads, in file order, with their types from the catalog.
async fn target_columns(client: &Client, copy: &CopyFromS3) -> Result<Vec<Column>, String> {
    let rows = client
        .query(
            "SELECT a.attname::text, t.typname = 'varbyte' AND tn.nspname = 'public' \
             FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid \
             JOIN pg_namespace tn ON tn.oid = t.typnamespace \
             WHERE a.attrelid = $1::text::regclass AND a.attnum > 0 AND NOT a.attisdropped \
             ORDER BY a.attnum",
            &[&copy.table],
        )
        .await
        .map_err(|e| super::run::pg_error(&e))?;
    let table: Vec<Column> = rows
        .iter()
        .map(|row| Column {
            name: row.get(0),
            varbyte: row.get(1),
        })
        .collect();
    if copy.columns.is_empty() {
        return Ok(table);
    }
    copy.columns
        .iter()
        .map(|listed| {
            table
                .iter()
                .find(|c| c.name == listed.name)
                .map(|c| Column {
                    name: c.name.clone(),
                    varbyte: c.varbyte,
                })
                .ok_or_else(|| {
                    format!(
                        "ERROR: column \"{}\" of relation \"{}\" does not exist",
                        listed.name, copy.table_label
                    )
                })
        })
        .collect()
}

/// The object at `s3://bucket/key`, None if it does not exist, or the S3 error.
async fn get_object(s3: &aws_sdk_s3::Client, url: &str) -> Result<Option<Vec<u8>>, String> {
    let (bucket, key) = url
        .strip_prefix("s3://")
        .and_then(|rest| rest.split_once('/'))
        .filter(|(bucket, key)| !bucket.is_empty() && !key.is_empty())
        .ok_or_else(|| format!("{url} is not an s3://bucket/key URL"))?;
    let response = match s3.get_object().bucket(bucket).key(key).send().await {
        Ok(response) => response,
        Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => return Ok(None),
        Err(e) => return Err(format!("S3 GetObject: {}", DisplayErrorContext(&e))),
    };
    let body = response
        .body
        .collect()
        .await
        .map_err(|e| format!("reading the object: {e}"))?;
    Ok(Some(body.into_bytes().to_vec()))
}

/// One record of a staged file: its fields (None: NULL) and the line it starts on.
struct CsvRecord {
    line: usize,
    fields: Vec<Option<Vec<u8>>>,
}

/// The records of a staged CSV file, or the line and reason of the first malformed one.
///
/// Strict on purpose, so an encoder bug fails the load instead of loading wrong values:
/// fields end at `,`, records at `\n` (the last one may lack it); a quoted field doubles
/// its `"` and must end at a delimiter; an unquoted field holds no `"`; exactly one
/// unquoted NUL byte is NULL (a quoted NUL is a one-character value).
fn parse_csv(data: &[u8]) -> Result<Vec<CsvRecord>, (usize, String)> {
    let mut records = Vec::new();
    let mut pos = 0;
    let mut line = 1;
    while pos < data.len() {
        let record_line = line;
        let mut fields = Vec::new();
        loop {
            if data.get(pos) == Some(&b'"') {
                let field_line = line;
                let mut value = Vec::new();
                pos += 1;
                loop {
                    match data.get(pos) {
                        None => {
                            return Err((field_line, "unterminated quoted field".to_string()));
                        }
                        Some(b'"') if data.get(pos + 1) == Some(&b'"') => {
                            value.push(b'"');
                            pos += 2;
                        }
                        Some(b'"') => {
                            pos += 1;
                            break;
                        }
                        Some(&byte) => {
                            line += usize::from(byte == b'\n');
                            value.push(byte);
                            pos += 1;
                        }
                    }
                }
                fields.push(Some(value));
            } else {
                let end = data[pos..]
                    .iter()
                    .position(|&b| b == b',' || b == b'\n')
                    .map_or(data.len(), |i| pos + i);
                let raw = &data[pos..end];
                if raw.contains(&b'"') {
                    return Err((line, "quote character inside an unquoted field".to_string()));
                }
                fields.push((raw != b"\0").then(|| raw.to_vec()));
                pos = end;
            }
            match data.get(pos) {
                Some(b',') => pos += 1,
                Some(b'\n') => {
                    pos += 1;
                    line += 1;
                    break;
                }
                None => break,
                Some(&other) => {
                    return Err((
                        line,
                        format!(
                            "unexpected character {:?} after a closing quote",
                            other as char
                        ),
                    ));
                }
            }
        }
        records.push(CsvRecord {
            line: record_line,
            fields,
        });
    }
    Ok(records)
}

/// Appends `fields` as one line of Postgres' text COPY format: NULL as `\N`, backslash,
/// newline, carriage return and tab escaped, varbyte hex prefixed with `\x` for bytea's input.
/// One line per record (unlike CSV with quoted newlines) keeps Postgres' error line number
/// equal to the record number.
fn write_postgres_text(out: &mut Vec<u8>, fields: &[Option<Vec<u8>>], columns: &[Column]) {
    for (i, (field, column)) in fields.iter().zip(columns).enumerate() {
        if i > 0 {
            out.push(b'\t');
        }
        let Some(value) = field else {
            out.extend_from_slice(b"\\N");
            continue;
        };
        if column.varbyte {
            out.extend_from_slice(b"\\\\x");
        }
        for &byte in value {
            match byte {
                b'\\' => out.extend_from_slice(b"\\\\"),
                b'\n' => out.extend_from_slice(b"\\n"),
                b'\r' => out.extend_from_slice(b"\\r"),
                b'\t' => out.extend_from_slice(b"\\t"),
                other => out.push(other),
            }
        }
    }
    out.push(b'\n');
}

/// The record number in a Postgres COPY error context: `COPY stage, line 3, column v: ...`.
fn record_number(context: &str) -> Option<usize> {
    let rest = &context[context.find(", line ")? + ", line ".len()..];
    let digits = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    rest[..digits].parse().ok()
}
