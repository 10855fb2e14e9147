//! MySQL and MariaDB row-binlog source.
//!
//! Events are framed by `mysql_common` (through `mysql_async::binlog`); rows are decoded by our
//! own [`layout`] code against each table's TABLE_MAP metadata, so every rows event describes
//! itself and no schema-history store is needed. The one thing only a statement can say, that a
//! table was renamed, is read by the small tokenizer in [`ddl`].
//!
//! - [`reader`]: the replica connection as a [`Source`] (the only file here that talks to the
//!   server while streaming);
//! - [`config`]: the settings only a MySQL source has (`server_id`) and their checks;
//! - [`check`]: the prerequisites `tidemark check` reports;
//! - [`copy`]: a table's schema and existing rows read over SQL, equal to what the binlog gives
//!   for the same rows (the MySQL half of snapshots);
//! - pure decoding, no I/O: [`assemble`] (events to `SourceMessage`s), [`layout`] and [`decode`]
//!   (row images), [`jsonb`] and [`jsondiff`], [`charset`], [`ddl`], [`gtid`], [`mariadb`];
//! - [`file`] and [`inspect`]: binlog files on disk and `tidemark inspect`.

pub mod assemble;
pub mod charset;
pub mod check;
pub mod config;
pub mod copy;
pub mod ddl;
pub mod decode;
pub mod error;
pub mod file;
pub mod gtid;
pub mod inspect;
pub mod jsonb;
pub mod jsondiff;
pub mod layout;
pub mod mariadb;
pub mod reader;

use std::sync::Arc;

use crate::config::SourceConfig;
use crate::event::ResumePoint;
use crate::source::{Reconnecting, Reopen, Source};
use config::MysqlSettings;
use error::BinlogError;
use reader::{BinlogReader, ReaderOptions, StartPosition, current_end};

/// How the reader of `source` (with its MySQL `settings`) connects and behaves.
pub fn reader_options(source: &SourceConfig, settings: &MysqlSettings) -> ReaderOptions {
    let mut options = ReaderOptions::new(
        Arc::from(source.id.as_str()),
        source.url.expose().to_owned(),
        settings.server_id,
    );
    options.heartbeat = source.heartbeat;
    options
}

/// Opens `source` after `checkpoint` (at the binlog's current end when there is none), and
/// returns the checkpoint to record first when there was none.
pub(super) async fn open(
    source: &SourceConfig,
    settings: &MysqlSettings,
    checkpoint: Option<&ResumePoint>,
) -> Result<(Reconnecting, Option<ResumePoint>), BinlogError> {
    let start = match checkpoint {
        Some(point) => StartPosition::Resume(point.clone()),
        None => StartPosition::End,
    };
    let reader = follow(reader_options(source, settings), start).await?;
    let first_checkpoint = checkpoint.is_none().then(|| reader.resume_point());
    Ok((reader, first_checkpoint))
}

/// A binlog reader started at `start` that reconnects by itself (with the waits of
/// `options.backoff_*`) after a lost connection.
pub async fn follow(
    options: ReaderOptions,
    start: StartPosition,
) -> Result<Reconnecting, BinlogError> {
    let first = BinlogReader::connect(options.clone(), start).await?;
    let (source_id, first_wait, longest_wait) = (
        options.source_id.clone(),
        options.backoff_initial,
        options.backoff_max,
    );
    let reopen: Reopen = Box::new(move |at| {
        let options = options.clone();
        Box::pin(async move {
            let reader = BinlogReader::connect(options, StartPosition::Resume(at)).await?;
            Ok(Box::new(reader) as Box<dyn Source>)
        })
    });
    Ok(Reconnecting::with_backoff(
        source_id,
        Box::new(first),
        reopen,
        first_wait,
        longest_wait,
    ))
}

/// The binlog's current end and its GTID state: where `tidemark skip-to-end` moves a source.
pub(super) async fn restart_at_end(
    source: &SourceConfig,
    settings: &MysqlSettings,
) -> Result<ResumePoint, BinlogError> {
    current_end(&reader_options(source, settings)).await
}
