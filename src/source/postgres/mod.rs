//! PostgreSQL logical-replication source.
//!
//! Changes are read from a logical replication slot through the `pgoutput` plugin, the one every
//! Postgres ships, so nothing needs installing on the source server:
//! - [`config`]: the settings only a Postgres source has (slot, publication) and their checks;
//! - [`slot`]: the publication and slot, created on first start, checked against the checkpoint;
//! - [`stream`]: the replication connection, decoded messages and position confirmations;
//! - [`pgoutput`]: the protocol decoder (bytes of one message in, a typed message out, no I/O);
//! - [`catalog`] and [`types`]: what pgoutput's text values mean, per column type;
//! - [`assemble`]: pgoutput messages to tidemark's `SourceMessage` grammar;
//! - [`reader`]: all of the above as a [`Source`];
//! - [`copy`]: a table's existing rows (a snapshot's reads), with the stream's schema and values;
//! - [`check`]: the prerequisites `tidemark check` reports.

pub mod assemble;
pub mod catalog;
pub mod check;
pub mod config;
pub mod copy;
pub mod pgoutput;
pub mod reader;
pub mod slot;
pub mod stream;
pub mod types;

use std::sync::Arc;

use tokio::sync::watch;

use crate::config::SourceConfig;
use crate::event::ResumePoint;
use crate::source::{Reconnecting, Reopen, Source};
use config::PostgresSettings;
use reader::{PgReadError, PgReader};

/// Opens `source` after `checkpoint` (creating the publication and a slot at the end of the WAL
/// when there is none), and returns the checkpoint to record first when there was none.
/// Positions the warehouse committed arrive on `acknowledged`.
pub(super) async fn open(
    source: &SourceConfig,
    settings: &PostgresSettings,
    checkpoint: Option<&ResumePoint>,
    acknowledged: watch::Receiver<Option<ResumePoint>>,
) -> Result<(Reconnecting, Option<ResumePoint>), PgReadError> {
    let opened = PgReader::open(source, settings, checkpoint, acknowledged.clone()).await?;
    let config = Arc::new((source.clone(), settings.clone()));
    let reopen: Reopen = Box::new(move |at| {
        let (config, acknowledged) = (config.clone(), acknowledged.clone());
        Box::pin(async move {
            let (source, settings) = &*config;
            let reopened = PgReader::open(source, settings, Some(&at), acknowledged).await?;
            Ok(Box::new(reopened.reader) as Box<dyn Source>)
        })
    });
    let source_id = Arc::from(source.id.as_str());
    let reader = Reconnecting::new(source_id, Box::new(opened.reader), reopen);
    Ok((reader, opened.first_checkpoint))
}
