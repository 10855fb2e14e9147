//! The live binlog reader: a replica connection (COM_BINLOG_DUMP / COM_BINLOG_DUMP_GTID) whose
//! events go through the [`Assembler`].
//!
//! Guarantees:
//! - It starts exactly after the given position: file/pos, MySQL GTID set or MariaDB GTID list.
//! - A lost connection is an error of kind `Retry`, after the messages decoded before it;
//!   [`crate::source::Reconnecting`] (see [`super::follow`]) reconnects at the last transaction
//!   handed out as committed, so a transaction cut off midway is rolled back and then delivered
//!   again whole. Nothing skipped, nothing doubled.
//! - Heartbeats keep an idle connection provably alive; silence for three heartbeat periods is
//!   treated as a dead connection.
//! - It never registers as a semi-sync replica.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use std::panic::AssertUnwindSafe;

use futures_util::{FutureExt, StreamExt};
use mysql_async::prelude::Queryable;
use mysql_async::{BinlogStream, BinlogStreamRequest, Conn};
use tracing::info;

use super::assemble::{Assembler, AssemblerOptions, GtidTracker};
use super::error::{BinlogError, ER_MASTER_FATAL_ERROR_READING_BINLOG};
use super::gtid::{MariadbGtidList, MysqlGtidSet};
use crate::config::SecretUrl;
use crate::error::ErrorKind;
use crate::event::{GtidState, ResumePoint, SourceMessage};
use crate::source::{Source, SourceFuture};

/// Where a reader starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartPosition {
    /// The current end of the server's binlog: only changes committed from now on.
    End,
    /// Just after a recorded resume point (GTID state preferred when it has one).
    Resume(ResumePoint),
}

/// How to reach the server and behave on the connection.
#[derive(Debug, Clone)]
pub struct ReaderOptions {
    /// Configured source id, used in messages and events.
    pub source_id: Arc<str>,
    /// `mysql://user:password@host:port`; secret, never logged.
    pub url: String,
    /// Replica server id; must be unique among the server's replicas.
    pub server_id: u32,
    /// Heartbeat period the server uses on an idle connection.
    pub heartbeat: Duration,
    /// First reconnect delay (used by [`super::follow`]).
    pub backoff_initial: Duration,
    /// Longest reconnect delay (used by [`super::follow`]).
    pub backoff_max: Duration,
}

impl ReaderOptions {
    /// Options with the defaults: 5 s heartbeat, backoff from 100 ms to 30 s.
    pub fn new(source_id: impl Into<Arc<str>>, url: impl Into<String>, server_id: u32) -> Self {
        Self {
            source_id: source_id.into(),
            url: url.into(),
            server_id,
            heartbeat: Duration::from_secs(5),
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(30),
        }
    }
}

/// Messages handed over per `next_batch` at most (one rows event may add a few more).
pub const MAX_BATCH: usize = 1024;

/// Which server family we talk to; they differ in GTIDs and status statements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flavor {
    Mysql,
    Mariadb,
}

/// A live binlog reader; call [`BinlogReader::next_batch`] in a loop.
pub struct BinlogReader {
    options: ReaderOptions,
    flavor: Flavor,
    assembler: Assembler,
    stream: Option<BinlogStream>,
}

impl BinlogReader {
    /// Connects and starts the dump at `start`. Errors here are not retried: the caller decides.
    pub async fn connect(
        options: ReaderOptions,
        start: StartPosition,
    ) -> Result<BinlogReader, BinlogError> {
        let mut conn = open(&options, "connecting").await?;
        let flavor = flavor_of(&mut conn, &options).await?;
        let (file, pos, gtids) = match start {
            StartPosition::End => end_position(&mut conn, flavor, &options).await?,
            StartPosition::Resume(ResumePoint::Binlog { file, pos, gtid }) => {
                let tracker = match gtid {
                    Some(state) => tracker_from_state(&state)?,
                    None if flavor == Flavor::Mariadb => {
                        mariadb_gtid_at(&mut conn, &file, pos, &options).await?
                    }
                    None => GtidTracker::Unknown,
                };
                (file, pos, tracker)
            }
            StartPosition::Resume(other) => {
                return Err(BinlogError::BadStart(format!(
                    "{other} is not a binlog position"
                )));
            }
        };
        let assembler = Assembler::new(
            options.source_id.clone(),
            AssemblerOptions::default(),
            &file,
            pos,
            gtids,
        );
        let mut reader = BinlogReader {
            options,
            flavor,
            assembler,
            stream: None,
        };
        reader.stream = Some(reader.start_dump(conn).await?);
        info!(
            source = %reader.options.source_id,
            position = %reader.assembler.resume_point(),
            "binlog reader started"
        );
        Ok(reader)
    }

    /// The position after the last transaction handed out as committed.
    pub fn resume_point(&self) -> ResumePoint {
        self.assembler.resume_point()
    }

    /// Appends at least one message to `out` (up to about [`MAX_BATCH`], as many as the server
    /// has already sent). A lost connection is an error of kind `Retry`; the messages appended
    /// before it stand.
    pub async fn next_batch(&mut self, out: &mut Vec<SourceMessage>) -> Result<(), BinlogError> {
        let dead_after = self.options.heartbeat * 3;
        let start_len = out.len();
        loop {
            let Some(stream) = self.stream.as_mut() else {
                return Err(self.lost("the connection was closed after an earlier failure".into()));
            };
            // mysql_common's event parser panics on a packet shorter than its header claims;
            // such a packet is corrupt input, reported as an error at the current position.
            // An event already buffered is taken without arming a timer (the hot path); only
            // when the stream would wait do we hand over what we have, or wait with a deadline.
            let ready = AssertUnwindSafe(stream.next())
                .catch_unwind()
                .now_or_never();
            let polled = match ready {
                Some(polled) => Ok(polled),
                None if out.len() > start_len => return Ok(()),
                None => {
                    let next = AssertUnwindSafe(stream.next()).catch_unwind();
                    tokio::time::timeout(dead_after, next).await
                }
            };
            let failure = match polled {
                Ok(Err(_panic)) => {
                    self.stream = None;
                    return Err(BinlogError::Corrupt {
                        at: super::error::EventAt {
                            file: self.assembler.file().to_owned(),
                            pos: self.assembler.last_event_end(),
                        },
                        reason: "the server sent an event shorter than its header says".into(),
                    });
                }
                Ok(Ok(Some(Ok(event)))) => {
                    self.assembler.feed(&event, out)?;
                    // Hand over in batches of bounded size: memory stays flat.
                    if out.len() - start_len >= MAX_BATCH {
                        return Ok(());
                    }
                    continue;
                }
                Ok(Ok(Some(Err(error)))) => self.classify(error)?,
                Ok(Ok(None)) => "the server closed the binlog stream".to_owned(),
                Err(_) => format!("no event or heartbeat for {dead_after:?}"),
            };
            self.stream = None;
            return Err(self.lost(failure));
        }
    }

    /// The error for a connection lost for `reason`: worth reconnecting for.
    fn lost(&self, reason: String) -> BinlogError {
        BinlogError::ConnectionLost {
            source_id: self.options.source_id.to_string(),
            position: self.assembler.resume_point().to_string(),
            reason,
        }
    }

    /// Stops reading and closes the connection.
    pub async fn close(mut self) {
        if let Some(stream) = self.stream.take() {
            let _ = stream.close().await;
        }
    }

    /// Turns a stream error into the reason for reconnecting, or a final error.
    fn classify(&self, error: mysql_async::Error) -> Result<String, BinlogError> {
        if let mysql_async::Error::Server(e) = &error
            && e.code == ER_MASTER_FATAL_ERROR_READING_BINLOG
        {
            return Err(BinlogError::PositionLost {
                source_id: self.options.source_id.to_string(),
                position: self.assembler.resume_point().to_string(),
                message: e.message.clone(),
            });
        }
        let wrapped = BinlogError::Server {
            source_id: self.options.source_id.to_string(),
            context: "reading the binlog",
            error,
        };
        match wrapped.kind() {
            ErrorKind::Retry => Ok(wrapped.to_string()),
            _ => Err(wrapped),
        }
    }

    /// Prepares the session and sends the dump request for the assembler's resume point.
    async fn start_dump(&self, mut conn: Conn) -> Result<BinlogStream, BinlogError> {
        let server = |context: &'static str| {
            let source_id = self.options.source_id.to_string();
            move |error| BinlogError::Server {
                source_id,
                context,
                error,
            }
        };
        let period_ns = self.options.heartbeat.as_nanos().max(1_000_000);
        conn.query_drop(format!("SET @master_heartbeat_period = {period_ns}"))
            .await
            .map_err(server("setting the heartbeat period"))?;
        let ResumePoint::Binlog { file, pos, .. } = self.assembler.resume_point() else {
            return Err(BinlogError::BadStart("not a binlog position".into()));
        };
        let request = BinlogStreamRequest::new(self.options.server_id);
        let request = match (self.flavor, self.assembler.gtid_tracker()) {
            (Flavor::Mariadb, GtidTracker::Mariadb(list)) => {
                conn.query_drop("SET @mariadb_slave_capability = 4")
                    .await
                    .map_err(server("announcing MariaDB GTID capability"))?;
                conn.exec_drop("SET @slave_connect_state = ?", (list.to_string(),))
                    .await
                    .map_err(server("setting the MariaDB GTID start position"))?;
                request.with_filename(b"").with_pos(4u64)
            }
            (Flavor::Mysql, GtidTracker::Mysql(set)) if !set.is_empty() => {
                let sids = set
                    .to_sids()
                    .map_err(|e| BinlogError::BadStart(e.to_string()))?;
                request.with_gtid().with_gtid_set(sids).with_pos(4u64)
            }
            (Flavor::Mariadb, _) => {
                conn.query_drop("SET @mariadb_slave_capability = 4")
                    .await
                    .map_err(server("announcing MariaDB GTID capability"))?;
                request.with_filename(file.as_bytes()).with_pos(pos)
            }
            _ => request.with_filename(file.as_bytes()).with_pos(pos),
        };
        // The request borrows the file name; the stream is lazy until polled, but sending
        // happens inside get_binlog_stream, so the borrow ends here.
        conn.get_binlog_stream(request)
            .await
            .map_err(|error| match &error {
                mysql_async::Error::Server(e) if e.code == ER_MASTER_FATAL_ERROR_READING_BINLOG => {
                    BinlogError::PositionLost {
                        source_id: self.options.source_id.to_string(),
                        position: self.assembler.resume_point().to_string(),
                        message: e.message.clone(),
                    }
                }
                _ => server("requesting the binlog")(error),
            })
    }
}

impl Source for BinlogReader {
    fn resume_point(&self) -> ResumePoint {
        BinlogReader::resume_point(self)
    }

    fn next_batch<'a>(&'a mut self, out: &'a mut Vec<SourceMessage>) -> SourceFuture<'a, ()> {
        Box::pin(async move { Ok(BinlogReader::next_batch(self, out).await?) })
    }

    fn close(self: Box<Self>) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        Box::pin(BinlogReader::close(*self))
    }
}

async fn open(options: &ReaderOptions, context: &'static str) -> Result<Conn, BinlogError> {
    let server = |error| BinlogError::Server {
        source_id: options.source_id.to_string(),
        context,
        error,
    };
    let tls_error = |message: String| BinlogError::Setup {
        source_id: options.source_id.to_string(),
        message,
    };
    let url = SecretUrl::new(options.url.clone());
    let (opts, tls) = crate::tls::mysql_opts(&url).map_err(|e| tls_error(e.to_string()))?;
    let host = opts.ip_or_hostname().to_string();
    Conn::new(opts)
        .await
        .map_err(|error| match tls.explain(&host, &error.to_string()) {
            Some(explained) => tls_error(explained),
            None => server(error),
        })
}

async fn flavor_of(conn: &mut Conn, options: &ReaderOptions) -> Result<Flavor, BinlogError> {
    let version: Option<String> = conn
        .query_first("SELECT @@version")
        .await
        .map_err(|error| BinlogError::Server {
            source_id: options.source_id.to_string(),
            context: "reading the server version",
            error,
        })?;
    Ok(match version {
        Some(v) if v.contains("MariaDB") => Flavor::Mariadb,
        _ => Flavor::Mysql,
    })
}

/// The server's current end of binlog as a resume point (with its GTID state), without starting
/// a dump: where `tidemark skip-to-end` moves a source.
pub async fn current_end(options: &ReaderOptions) -> Result<ResumePoint, BinlogError> {
    let mut conn = open(options, "connecting").await?;
    let flavor = flavor_of(&mut conn, options).await?;
    let end = end_position(&mut conn, flavor, options).await;
    // Best effort: the position is read whether or not the goodbye succeeds.
    let _ = conn.disconnect().await;
    let (file, pos, gtids) = end?;
    Ok(ResumePoint::Binlog {
        file,
        pos,
        gtid: gtids.state(),
    })
}

/// The current end of the binlog with the GTID state at exactly that point.
async fn end_position(
    conn: &mut Conn,
    flavor: Flavor,
    options: &ReaderOptions,
) -> Result<(String, u64, GtidTracker), BinlogError> {
    let server = |error| BinlogError::Server {
        source_id: options.source_id.to_string(),
        context: "reading the binlog position (SHOW MASTER STATUS)",
        error,
    };
    let row: Option<mysql_async::Row> = match conn.query_first("SHOW MASTER STATUS").await {
        Ok(row) => row,
        // MySQL 8.4 removed SHOW MASTER STATUS.
        Err(_) if flavor == Flavor::Mysql => conn
            .query_first("SHOW BINARY LOG STATUS")
            .await
            .map_err(server)?,
        Err(e) => return Err(server(e)),
    };
    let Some(row) = row else {
        return Err(BinlogError::Unsupported {
            at: super::error::EventAt {
                file: String::new(),
                pos: 0,
            },
            what: "binary logging is off on the source".into(),
            fix: "enable log_bin (log_bin=ON in my.cnf, then restart the server)".into(),
        });
    };
    let file: String = row.get_opt(0).and_then(Result::ok).unwrap_or_default();
    let pos: u64 = row.get_opt(1).and_then(Result::ok).unwrap_or(4);
    let gtids = match flavor {
        Flavor::Mariadb => mariadb_gtid_at(conn, &file, pos, options).await?,
        Flavor::Mysql => {
            let executed: String = row.get_opt(4).and_then(Result::ok).unwrap_or_default();
            if executed.trim().is_empty() {
                GtidTracker::Unknown
            } else {
                GtidTracker::Mysql(
                    executed
                        .parse::<MysqlGtidSet>()
                        .map_err(|e| BinlogError::BadStart(e.to_string()))?,
                )
            }
        }
    };
    Ok((file, pos, gtids))
}

/// MariaDB's GTID position that corresponds to `file:pos` (BINLOG_GTID_POS).
async fn mariadb_gtid_at(
    conn: &mut Conn,
    file: &str,
    pos: u64,
    options: &ReaderOptions,
) -> Result<GtidTracker, BinlogError> {
    let text: Option<Option<String>> = conn
        .exec_first("SELECT BINLOG_GTID_POS(?, ?)", (file, pos))
        .await
        .map_err(|error| BinlogError::Server {
            source_id: options.source_id.to_string(),
            context: "translating the binlog position to a GTID position",
            error,
        })?;
    match text.flatten() {
        Some(text) => Ok(GtidTracker::Mariadb(
            text.parse::<MariadbGtidList>()
                .map_err(|e| BinlogError::BadStart(e.to_string()))?,
        )),
        None => Ok(GtidTracker::Unknown),
    }
}

fn tracker_from_state(state: &GtidState) -> Result<GtidTracker, BinlogError> {
    let bad = |e: super::gtid::GtidParseError| BinlogError::BadStart(e.to_string());
    Ok(match state {
        GtidState::Mysql(text) => GtidTracker::Mysql(text.parse().map_err(bad)?),
        GtidState::Mariadb(text) => GtidTracker::Mariadb(text.parse().map_err(bad)?),
    })
}
