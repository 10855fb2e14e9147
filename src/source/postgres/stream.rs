//! The replication connection of a Postgres source: pgoutput messages from the source's slot,
//! decoded, in WAL order, and the confirmations that let the server release WAL.
//!
//! The connection itself is `pgwire-replication`'s; it answers the server's keepalives and sends
//! standby status updates carrying the position tidemark confirmed. tidemark confirms a position
//! only after the warehouse committed it ([`PgStream::confirm`]), so a crash re-reads from the
//! checkpoint. Keepalives surface as [`StreamItem::KeepAlive`] with the server's WAL end: when
//! nothing tidemark replicates is in flight, that position can be recorded and confirmed, which
//! keeps the slot advancing on a database whose replicated tables are idle while others are busy.
//!
//! A new slot can also be created on a replication session that exports its snapshot
//! ([`create_slot_exporting_snapshot`]): what a snapshot copies in, so that the copy and the
//! slot's changes meet at one point.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::FutureExt;
use pgwire_replication::{Lsn, ReplicationClient, ReplicationConfig, ReplicationEvent};

use super::pgoutput::{self, Begin, Commit, PgOutputError, PgOutputMessage};
use super::slot::WalPosition;
use super::types;
use crate::config::SecretUrl;
use crate::error::ErrorKind;

/// Events gathered per call of [`PgStream::next_items`] at most: enough to amortise the handoff,
/// small enough to bound memory.
const MAX_ITEMS: usize = 512;

/// Where and how to stream.
#[derive(Debug, Clone)]
pub struct StreamOptions {
    /// The source (for messages).
    pub source_id: Arc<str>,
    /// `postgres://user:password@host:port/database`.
    pub url: SecretUrl,
    /// The slot to read.
    pub slot: String,
    /// The publication the slot streams.
    pub publication: String,
    /// Read changes committed after this position; also the position reported as applied
    /// until [`PgStream::confirm`] raises it.
    pub start: WalPosition,
    /// How often the server hears the confirmed position, and how long an idle connection
    /// waits before saying so.
    pub status_interval: Duration,
}

/// One thing read from the stream.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamItem {
    /// A pgoutput message, with the WAL position it was sent at.
    Message {
        /// The decoded message.
        message: PgOutputMessage,
        /// The WAL position of the message's record (`wal_start`; for Begin the final LSN, for
        /// Commit the end LSN).
        at: WalPosition,
    },
    /// The server has sent everything up to `wal_end` (nothing for us, or nothing at all).
    KeepAlive {
        /// The server's WAL end when it sent the keepalive.
        wal_end: WalPosition,
    },
}

/// Why the stream stopped.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// The source URL cannot be used for a replication connection.
    #[error("source {source_id}: the url cannot be used for replication: {problem}")]
    Url {
        /// The source.
        source_id: String,
        /// What is wrong with it.
        problem: String,
    },
    /// The replication connection failed or the server ended it.
    #[error("source {source_id}: replication connection: {message}")]
    Connection {
        /// The source.
        source_id: String,
        /// The (scrubbed) message.
        message: String,
        /// Whether retrying can help.
        kind: ErrorKind,
    },
    /// A message that is not valid pgoutput.
    #[error("source {source_id}: at WAL position {at}: {error}")]
    Decode {
        /// The source.
        source_id: String,
        /// Where it was received.
        at: WalPosition,
        /// What the decoder found.
        error: PgOutputError,
    },
    /// The server ended the stream without an error.
    #[error("source {source_id}: the server ended the replication stream")]
    Ended {
        /// The source.
        source_id: String,
    },
}

impl StreamError {
    /// How the supervisor should react.
    pub fn kind(&self) -> ErrorKind {
        match self {
            StreamError::Url { .. } => ErrorKind::Operator,
            StreamError::Connection { kind, .. } => *kind,
            StreamError::Decode { .. } => ErrorKind::Fatal,
            StreamError::Ended { .. } => ErrorKind::Retry,
        }
    }
}

/// An open replication stream.
pub struct PgStream {
    client: ReplicationClient,
    source_id: Arc<str>,
    url: SecretUrl,
}

impl std::fmt::Debug for PgStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStream")
            .field("source_id", &self.source_id)
            .finish_non_exhaustive()
    }
}

impl PgStream {
    /// Opens the replication connection and starts streaming from `options.start`.
    pub async fn connect(options: &StreamOptions) -> Result<PgStream, StreamError> {
        let config = replication_config(options)?;
        let mut client = ReplicationClient::connect(config)
            .await
            .map_err(|e| connection_error(&options.source_id, &options.url, &e))?;
        client
            .wait_started()
            .await
            .map_err(|e| connection_error(&options.source_id, &options.url, &e))?;
        Ok(PgStream {
            client,
            source_id: options.source_id.clone(),
            url: options.url.clone(),
        })
    }
    /// Waits for at least one item, then appends every item already received (up to a bound).
    pub async fn next_items(&mut self, out: &mut Vec<StreamItem>) -> Result<(), StreamError> {
        let first = self.client.recv().await;
        self.take(first, out)?;
        // Only while the worker runs: polling a closed stream without waiting could drop the
        // worker's final error (the client awaits it inside `recv`).
        while out.len() < MAX_ITEMS && self.client.is_running() {
            match self.client.recv().now_or_never() {
                Some(next) => self.take(next, out)?,
                None => break,
            }
        }
        Ok(())
    }

    fn take(
        &self,
        received: Result<Option<ReplicationEvent>, pgwire_replication::PgWireError>,
        out: &mut Vec<StreamItem>,
    ) -> Result<(), StreamError> {
        let event = received
            .map_err(|e| connection_error(&self.source_id, &self.url, &e))?
            .ok_or_else(|| StreamError::Ended {
                source_id: self.source_id.to_string(),
            })?;
        let item = match event {
            ReplicationEvent::KeepAlive { wal_end, .. } => StreamItem::KeepAlive {
                wal_end: WalPosition(wal_end.as_u64()),
            },
            // The client decodes transaction boundaries itself; hand them on in the decoder's
            // form so everything downstream reads one message type.
            ReplicationEvent::Begin {
                final_lsn,
                xid,
                commit_time_micros,
            } => StreamItem::Message {
                message: PgOutputMessage::Begin(Begin {
                    final_lsn: pgoutput::Lsn(final_lsn.as_u64()),
                    commit_timestamp_unix_us: unix_micros(commit_time_micros),
                    xid,
                }),
                at: WalPosition(final_lsn.as_u64()),
            },
            ReplicationEvent::Commit {
                lsn,
                end_lsn,
                commit_time_micros,
            } => StreamItem::Message {
                message: PgOutputMessage::Commit(Commit {
                    flags: 0,
                    commit_lsn: pgoutput::Lsn(lsn.as_u64()),
                    end_lsn: pgoutput::Lsn(end_lsn.as_u64()),
                    commit_timestamp_unix_us: unix_micros(commit_time_micros),
                }),
                at: WalPosition(end_lsn.as_u64()),
            },
            ReplicationEvent::XLogData {
                wal_start, data, ..
            } => {
                let at = WalPosition(wal_start.as_u64());
                StreamItem::Message {
                    message: self.decode(&data, at)?,
                    at,
                }
            }
            // Logical decoding messages (pg_logical_emit_message) carry nothing to replicate.
            ReplicationEvent::Message { .. } => return Ok(()),
            ReplicationEvent::StoppedAt { .. } => {
                return Err(StreamError::Ended {
                    source_id: self.source_id.to_string(),
                });
            }
        };
        out.push(item);
        Ok(())
    }

    fn decode(&self, data: &Bytes, at: WalPosition) -> Result<PgOutputMessage, StreamError> {
        pgoutput::decode(data).map_err(|error| StreamError::Decode {
            source_id: self.source_id.to_string(),
            at,
            error,
        })
    }

    /// Tells the server that everything up to `position` is safely in the warehouse, so the
    /// slot may release the WAL before it. Call only after the warehouse commit.
    pub fn confirm(&self, position: WalPosition) {
        self.client.update_applied_lsn(Lsn::from_u64(position.0));
    }

    /// Ends the stream cleanly (the server sees a CopyDone, not a dropped connection).
    pub async fn close(mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(5), self.client.shutdown()).await;
    }
}

/// The replication session's configuration for `options`: the server, slot and publication, and
/// the session settings the type readers need.
fn replication_config(options: &StreamOptions) -> Result<ReplicationConfig, StreamError> {
    let url_error = |problem: String| StreamError::Url {
        source_id: options.source_id.to_string(),
        problem,
    };
    let (parsed, tls) =
        crate::tls::postgres_config(&options.url).map_err(|e| url_error(e.to_string()))?;
    let host = crate::tls::postgres_host(&parsed);
    let tls = tls.replication(&host);
    let port = parsed.get_ports().first().copied().unwrap_or(5432);
    let user = parsed
        .get_user()
        .ok_or_else(|| url_error("it names no user".into()))?;
    let password = parsed
        .get_password()
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .unwrap_or_default();
    let database = parsed
        .get_dbname()
        .ok_or_else(|| url_error("it names no database (postgres://user@host/DATABASE)".into()))?;
    Ok(ReplicationConfig::new(
        host,
        user,
        password,
        database,
        options.slot.clone(),
        options.publication.clone(),
    )
    .with_port(port)
    .with_tls(tls)
    .with_start_lsn(Lsn::from_u64(options.start.0))
    .with_ack_lsn(Lsn::from_u64(options.start.0))
    .with_status_interval(options.status_interval)
    .with_wakeup_interval(options.status_interval)
    .with_application_name(format!("tidemark {}", options.source_id))
    // The text formats the type readers parse (ISO dates, exact floats, hex bytea, ...).
    .with_options(types::session_options()))
}

/// A slot just created together with a snapshot of the database at the slot's start: a copy
/// made in that snapshot plus the slot's changes from `consistent_point` on hold every row once.
/// The snapshot can be imported (`SET TRANSACTION SNAPSHOT`) only while this session lives and
/// has run no other command; a transaction that imported it keeps it after that.
pub struct ExportedSlot {
    /// Where the slot starts: the first change it streams committed after the snapshot.
    pub consistent_point: WalPosition,
    /// The snapshot's name, for [`super::copy::begin_at_snapshot`].
    pub snapshot: String,
    session: ReplicationClient,
}

impl std::fmt::Debug for ExportedSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExportedSlot")
            .field("consistent_point", &self.consistent_point)
            .field("snapshot", &self.snapshot)
            .finish_non_exhaustive()
    }
}

impl ExportedSlot {
    /// Ends the session that holds the snapshot (the server notices within moments; the slot
    /// stays): call it once every reader has imported the snapshot.
    pub fn release(self) {
        // Dropping a gated client closes its gate, and the worker terminates the session.
        drop(self.session);
    }
}

/// Creates `options.slot` (pgoutput) on a replication session that exports its snapshot
/// (`CREATE_REPLICATION_SLOT ... EXPORT_SNAPSHOT`), the one way to get a snapshot that matches a
/// slot's start exactly.
pub async fn create_slot_exporting_snapshot(
    options: &StreamOptions,
) -> Result<ExportedSlot, StreamError> {
    let error =
        |e: &pgwire_replication::PgWireError| connection_error(&options.source_id, &options.url, e);
    let mut session = ReplicationClient::connect_gated(replication_config(options)?)
        .await
        .map_err(|e| error(&e))?;
    // The pre-15 spelling, which Postgres 15+ still accepts.
    let rows = session
        .simple_query(&format!(
            "CREATE_REPLICATION_SLOT {} LOGICAL pgoutput EXPORT_SNAPSHOT",
            super::slot::quote(&options.slot)
        ))
        .await
        .map_err(|e| error(&e))?;
    // One row: slot_name, consistent_point, snapshot_name, output_plugin.
    let field = |i: usize| {
        rows.first()
            .and_then(|row| row.get(i))
            .and_then(|value| value.as_ref())
            .map(|bytes| String::from_utf8_lossy(bytes).into_owned())
    };
    let unreadable = || StreamError::Connection {
        source_id: options.source_id.to_string(),
        message: format!(
            "CREATE_REPLICATION_SLOT {} answered no readable consistent point and snapshot",
            options.slot
        ),
        kind: ErrorKind::Fatal,
    };
    let consistent_point = field(1)
        .as_deref()
        .and_then(WalPosition::parse)
        .ok_or_else(unreadable)?;
    let snapshot = field(2).ok_or_else(unreadable)?;
    Ok(ExportedSlot {
        consistent_point,
        snapshot,
        session,
    })
}

/// A pgoutput timestamp (µs since 2000-01-01) as µs since the Unix epoch.
fn unix_micros(postgres_micros: i64) -> i64 {
    postgres_micros.saturating_add(pgoutput::POSTGRES_EPOCH_UNIX_SECONDS * 1_000_000)
}

fn connection_error(
    source_id: &str,
    url: &SecretUrl,
    error: &pgwire_replication::PgWireError,
) -> StreamError {
    use pgwire_replication::PgWireError;
    let kind = match error {
        // The previous connection's walsender still holds the slot (a restart right after a
        // crash): it lets go as soon as the server notices the old connection is gone.
        PgWireError::Server(message) if message.contains("is active for PID") => ErrorKind::Retry,
        // Authentication and server-side refusals (missing slot or publication, no
        // REPLICATION attribute) need an operator; transport problems may pass.
        PgWireError::Auth(_) | PgWireError::Server(_) => ErrorKind::Operator,
        _ => ErrorKind::Retry,
    };
    let message = url.scrub(&error.to_string());
    // A failed TLS verification needs an operator (the CA file, the host name or the server's
    // certificate), and says which host, setting and fix.
    let explained = matches!(error, PgWireError::Tls(_))
        .then(|| tls_explanation(url, &message))
        .flatten();
    match explained {
        Some(message) => StreamError::Connection {
            source_id: source_id.to_owned(),
            message,
            kind: ErrorKind::Operator,
        },
        None => StreamError::Connection {
            source_id: source_id.to_owned(),
            message,
            kind,
        },
    }
}

/// The TLS explanation of a replication connection's failure `message`, if it is one.
fn tls_explanation(url: &SecretUrl, message: &str) -> Option<String> {
    let (config, tls) = crate::tls::postgres_config(url).ok()?;
    tls.explain(&crate::tls::postgres_host(&config), message)
}
