//! A Postgres source as the pipeline sees it: opened at the source's checkpoint (creating the
//! publication and slot on first start), read as `SourceMessage`s, and told which positions the
//! warehouse holds so the slot can release WAL.
//!
//! Positions: a committed transaction resumes after its commit's end LSN; a keepalive outside a
//! transaction becomes a [`SourceMessage::Heartbeat`] at the server's WAL end, so a source whose
//! tables are idle still records (and then confirms) progress while the server writes WAL for
//! other tables.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use tokio::sync::watch;
use tokio_postgres::Client;
use tracing::{info, warn};

use super::assemble::{AssembleError, Assembler};
use super::catalog::{self, CatalogError};
use super::config::PostgresSettings;
use super::pgoutput::{Lsn, PgOutputMessage};
use super::slot::{self, PublicationChange, SlotError, StartDecision, WalPosition};
use super::stream::{PgStream, StreamError, StreamItem, StreamOptions};
use crate::config::SourceConfig;
use crate::error::ErrorKind;
use crate::event::{ResumePoint, SourceMessage};
use crate::source::{Source, SourceFuture};

/// Why a Postgres source stopped.
#[derive(Debug, thiserror::Error)]
pub enum PgReadError {
    /// The slot or publication cannot be used (or made).
    #[error(transparent)]
    Slot(#[from] SlotError),
    /// The replication connection failed.
    #[error(transparent)]
    Stream(#[from] StreamError),
    /// The source catalog could not be read.
    #[error("source {source_id}: {error}")]
    Catalog {
        /// The source.
        source_id: String,
        /// What failed.
        error: CatalogError,
    },
    /// A message that does not fit the stream (a bug, or a protocol change).
    #[error(transparent)]
    Assemble(#[from] AssembleError),
    /// The source's normal (SQL) connection failed.
    #[error("source {source_id}: connecting to {server}: {message}")]
    Connect {
        /// The source.
        source_id: String,
        /// The server, password masked.
        server: String,
        /// The scrubbed message.
        message: String,
    },
    /// The checkpoint is not a Postgres position.
    #[error(
        "source {source_id}: the checkpoint {checkpoint} is not a Postgres WAL position (was the source's kind changed?)"
    )]
    NotAnLsn {
        /// The source.
        source_id: String,
        /// The checkpoint as stored.
        checkpoint: String,
    },
}

impl PgReadError {
    /// How the supervisor should react.
    pub fn kind(&self) -> ErrorKind {
        match self {
            PgReadError::Slot(e) => e.kind(),
            PgReadError::Stream(e) => e.kind(),
            PgReadError::Catalog { error, .. } => error.kind(),
            PgReadError::Assemble(e) => e.kind(),
            PgReadError::Connect { .. } => ErrorKind::Retry,
            PgReadError::NotAnLsn { .. } => ErrorKind::Operator,
        }
    }
}

impl PgReadError {
    /// True when the slot no longer holds the changes after the checkpoint (missing,
    /// invalidated, or confirmed past it).
    pub fn position_lost(&self) -> bool {
        self.stuck_in_log()
    }

    /// True when the slot cannot continue from the checkpoint (missing, lost, or ahead of it):
    /// retrying meets the same gap until the source is moved past it.
    pub fn stuck_in_log(&self) -> bool {
        matches!(
            self,
            PgReadError::Slot(
                SlotError::Missing { .. } | SlotError::Lost { .. } | SlotError::Ahead { .. }
            )
        )
    }
}

/// An open Postgres source.
pub struct PgReader {
    source_id: Arc<str>,
    stream: PgStream,
    sql: Client,
    assembler: Assembler,
    confirmations: watch::Receiver<Option<ResumePoint>>,
    items: Vec<StreamItem>,
    start: WalPosition,
}

impl std::fmt::Debug for PgReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgReader")
            .field("source_id", &self.source_id)
            .field("start", &self.start)
            .finish_non_exhaustive()
    }
}

/// A source just opened, and the checkpoint to record before reading when it had none.
#[derive(Debug)]
pub struct Opened {
    /// The reader.
    pub reader: PgReader,
    /// First start: the position the new slot starts at, to be committed as the checkpoint
    /// before anything is read (a crash before the first batch then resumes there).
    pub first_checkpoint: Option<ResumePoint>,
}

impl PgReader {
    /// Opens `source` (with its Postgres `settings`) at `checkpoint`, creating the publication
    /// and the slot when this is the first start. Positions the warehouse has committed arrive on
    /// `confirmations`.
    pub async fn open(
        source: &SourceConfig,
        settings: &PostgresSettings,
        checkpoint: Option<&ResumePoint>,
        confirmations: watch::Receiver<Option<ResumePoint>>,
    ) -> Result<Opened, PgReadError> {
        let source_id: Arc<str> = Arc::from(source.id.as_str());
        let checkpoint = match checkpoint {
            None => None,
            Some(ResumePoint::Lsn { lsn }) => Some(WalPosition(*lsn)),
            Some(other) => {
                return Err(PgReadError::NotAnLsn {
                    source_id: source.id.clone(),
                    checkpoint: other.to_string(),
                });
            }
        };
        let sql = connect_sql(source).await?;
        let database: String = sql
            .query_one("SELECT current_database()::text", &[])
            .await
            .map_err(|e| PgReadError::Connect {
                source_id: source.id.clone(),
                server: source.url.to_string(),
                message: source.url.scrub(&e.to_string()),
            })?
            .get(0);
        log_publication_change(
            &source.id,
            settings,
            &slot::ensure_publication(&sql, source, settings).await?,
        );
        let existing = slot::read_slot(&sql, &source.id, settings).await?;
        let decision = slot::decide_start(
            &source.id,
            &settings.slot,
            &database,
            checkpoint,
            existing.as_ref(),
        )?;
        let start = match decision {
            StartDecision::CreateSlot => {
                let at = slot::create_slot(&sql, &source.id, settings).await?;
                info!(source = %source.id, slot = %settings.slot, position = %at, "created the replication slot");
                at
            }
            StartDecision::Resume(at) => at,
        };
        let options = StreamOptions {
            source_id: source_id.clone(),
            url: source.url.clone(),
            slot: settings.slot.clone(),
            publication: settings.publication.clone(),
            start,
            status_interval: source.heartbeat,
        };
        let stream = PgStream::connect(&options).await?;
        info!(source = %source.id, position = %start, "replication stream started");
        let reader = PgReader {
            source_id: source_id.clone(),
            stream,
            sql,
            assembler: Assembler::new(source_id),
            confirmations,
            items: Vec::new(),
            start,
        };
        Ok(Opened {
            first_checkpoint: checkpoint
                .is_none()
                .then_some(ResumePoint::Lsn { lsn: start.0 }),
            reader,
        })
    }

    /// The position after the last transaction handed out as committed (or the last keepalive
    /// between transactions).
    pub fn resume_point(&self) -> ResumePoint {
        let at = self
            .assembler
            .resume_lsn()
            .map_or(self.start.0, |lsn| lsn.0);
        ResumePoint::Lsn { lsn: at }
    }

    /// Appends at least one message to `out` (as many as have arrived), confirming committed
    /// positions to the server while it waits.
    pub async fn next_batch(&mut self, out: &mut Vec<SourceMessage>) -> Result<(), PgReadError> {
        let start_len = out.len();
        while out.len() == start_len {
            self.items.clear();
            // Only the stream's first receive waits; everything after it runs to completion, so
            // a confirmation arriving first loses nothing.
            tokio::select! {
                biased;
                changed = self.confirmations.changed() => {
                    if changed.is_ok()
                        && let Some(ResumePoint::Lsn { lsn }) = self.confirmations.borrow_and_update().clone()
                    {
                        self.stream.confirm(WalPosition(lsn));
                    }
                    continue;
                }
                read = self.stream.next_items(&mut self.items) => read?,
            }
            let items = std::mem::take(&mut self.items);
            for item in items {
                self.take(item, out).await?;
            }
        }
        Ok(())
    }

    async fn take(
        &mut self,
        item: StreamItem,
        out: &mut Vec<SourceMessage>,
    ) -> Result<(), PgReadError> {
        let (message, at) = match item {
            StreamItem::KeepAlive { wal_end } => {
                // Only past what was already handed out: the start position is the floor.
                if wal_end > self.start {
                    self.assembler.heartbeat(Lsn(wal_end.0), out);
                }
                return Ok(());
            }
            StreamItem::Message { message, at } => (message, at),
        };
        if let PgOutputMessage::Relation(relation) = &message {
            let needs = self.assembler.catalog_needs(relation);
            if !needs.is_empty() {
                let learned = catalog::fetch(&self.sql, &needs).await.map_err(|error| {
                    PgReadError::Catalog {
                        source_id: self.source_id.to_string(),
                        error,
                    }
                })?;
                self.assembler.learn(learned);
            }
        }
        self.assembler.feed(&message, Lsn(at.0), out)?;
        Ok(())
    }

    /// Ends the replication stream cleanly.
    pub async fn close(self) {
        self.stream.close().await;
    }
}

impl Source for PgReader {
    fn resume_point(&self) -> ResumePoint {
        PgReader::resume_point(self)
    }

    fn next_batch<'a>(&'a mut self, out: &'a mut Vec<SourceMessage>) -> SourceFuture<'a, ()> {
        Box::pin(async move { Ok(PgReader::next_batch(self, out).await?) })
    }

    fn close(self: Box<Self>) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        Box::pin(PgReader::close(*self))
    }
}

/// Gives the source a new slot at the current end of the WAL (dropping its old slot, which must
/// not be in use) and returns that position: where `tidemark skip-to-end` moves a source. The
/// publication is made first, as at a first start, so the new slot can decode from its start.
pub async fn restart_slot_at_end(
    source: &SourceConfig,
    settings: &PostgresSettings,
) -> Result<ResumePoint, PgReadError> {
    let sql = connect_sql(source).await?;
    log_publication_change(
        &source.id,
        settings,
        &slot::ensure_publication(&sql, source, settings).await?,
    );
    slot::drop_idle_slot(&sql, &source.id, settings).await?;
    let at = slot::create_slot(&sql, &source.id, settings).await?;
    info!(source = %source.id, slot = %settings.slot, position = %at, "created the replication slot at the current end of the WAL");
    Ok(ResumePoint::Lsn { lsn: at.0 })
}

/// The server's current WAL write position, read without a slot.
pub async fn current_wal_end(source: &SourceConfig) -> Result<ResumePoint, PgReadError> {
    let sql = connect_sql(source).await?;
    let row = sql
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .await
        .map_err(|e| PgReadError::Connect {
            source_id: source.id.clone(),
            server: source.url.to_string(),
            message: source.url.scrub(&e.to_string()),
        })?;
    let text: String = row.get(0);
    let lsn = WalPosition::parse(&text).ok_or_else(|| PgReadError::NotAnLsn {
        source_id: source.id.clone(),
        checkpoint: text.clone(),
    })?;
    Ok(ResumePoint::Lsn { lsn: lsn.0 })
}

async fn connect_sql(source: &SourceConfig) -> Result<Client, PgReadError> {
    let error = |message: String| PgReadError::Connect {
        source_id: source.id.clone(),
        server: source.url.to_string(),
        message: source.url.scrub(&message),
    };
    let (mut config, tls) =
        crate::tls::postgres_config(&source.url).map_err(|e| error(e.to_string()))?;
    let connector = tls.postgres_connector().map_err(|e| error(e.to_string()))?;
    config
        .connect_timeout(std::time::Duration::from_secs(10))
        .application_name(format!("tidemark {} (catalog)", source.id));
    let (client, connection) = config.connect(connector).await.map_err(|e| {
        let message = match e.as_db_error() {
            Some(_) => server_message(&e),
            None => crate::tls::with_causes(&e),
        };
        let host = crate::tls::postgres_host(&config);
        error(tls.explain(&host, &message).unwrap_or(message))
    })?;
    tokio::spawn(connection);
    Ok(client)
}

/// The server's own words for `error` (a wrong password, a missing role or database) with its
/// SQLSTATE, rather than the driver's bare "db error".
fn server_message(error: &tokio_postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => error.to_string(),
    }
}

/// Says what [`slot::ensure_publication`] changed, and what it could not.
fn log_publication_change(id: &str, settings: &PostgresSettings, change: &PublicationChange) {
    let publication = &settings.publication;
    if change.created {
        info!(source = %id, publication = %publication, tables = %change.added.join(", "), "created the publication");
    } else if !change.added.is_empty() {
        warn!(source = %id, publication = %publication, tables = %change.added.join(", "),
            "added included tables to the publication: their changes replicate from now on; rows written before are not copied");
    }
    if let Some((tables, message)) = &change.refused {
        let fix = format!(
            "ALTER PUBLICATION {} ADD TABLE {}",
            slot::quote(publication),
            tables.join(", ")
        );
        warn!(source = %id, publication = %publication, tables = %tables.join(", "), error = %message, fix = %fix,
            "the publication lacks included tables and they could not be added: their changes do not replicate until the publication's owner adds them");
    }
    if !change.without_identity.is_empty() {
        let tables = change.without_identity.join(", ");
        warn!(source = %id, publication = %publication, tables = %tables,
            fix = "ALTER TABLE ... REPLICA IDENTITY FULL (or add a primary key) for each, then restart",
            "included tables without a primary key or REPLICA IDENTITY FULL are left out of the publication: once published, the source would refuse every UPDATE and DELETE of them");
    }
}
