//! The server's public face (settings, start, stop, the statement log) and the registry of
//! statements that the HTTP operations read and the statement tasks update.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use tokio::sync::oneshot;
use tokio::task::{AbortHandle, JoinHandle};

/// Where the server runs statements and finds COPY files.
#[derive(Clone, Debug)]
pub struct ServerSettings {
    /// A Postgres URL; a request's `Database` replaces its database name.
    pub postgres_url: String,
    /// Endpoint of the S3 server holding manifests and staged files (path-style).
    pub s3_endpoint: String,
    /// Region to sign S3 requests for.
    pub s3_region: String,
    /// S3 access key id.
    pub s3_access_key_id: String,
    /// S3 secret access key.
    pub s3_secret_access_key: String,
    /// Artificial wait before each statement (or batch) starts, to test polling and crash
    /// windows; zero in most tests.
    pub statement_delay: Duration,
}

/// How one SQL statement ended, as the statement log records it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Ran to the end (in a batch: before the batch's end decided whether it committed).
    Finished {
        /// Result rows, rows affected, or rows loaded by a COPY.
        rows: i64,
    },
    /// Postgres or the COPY emulation failed it; the statement's `Error` text.
    Failed(String),
    /// The Redshift checks refused it before it reached Postgres; the statement's `Error` text.
    Rejected(String),
    /// Cancelled, or never run because an earlier statement of its batch failed.
    Aborted,
}

/// A running Redshift Data API test server; dropping it (or [`Self::stop`]) shuts it down.
pub struct RedshiftTestServer {
    /// Its endpoint, `http://127.0.0.1:PORT`, for the client's `endpoint_url`.
    pub endpoint: String,
    state: Arc<State>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl RedshiftTestServer {
    /// Starts a server on a free loopback port, panicking if it cannot (test support).
    pub async fn start(settings: ServerSettings) -> RedshiftTestServer {
        let addr = SocketAddr::from(([127, 0, 0, 1], 0));
        Self::start_on(addr, settings)
            .await
            .unwrap_or_else(|e| panic!("starting the Redshift test server: {e}"))
    }

    /// Starts a server listening on `addr` (port 0: any free port), serving on a tokio task.
    pub async fn start_on(
        addr: SocketAddr,
        settings: ServerSettings,
    ) -> std::io::Result<RedshiftTestServer> {
        let postgres: tokio_postgres::Config = settings
            .postgres_url
            .parse()
            .map_err(|e| std::io::Error::other(format!("postgres_url: {e}")))?;
        let state = Arc::new(State::new(settings, postgres));
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let endpoint = format!("http://{}", listener.local_addr()?);
        let (shutdown, shutdown_signal) = oneshot::channel::<()>();
        let app = super::protocol::router(Arc::clone(&state));
        let task = tokio::spawn(async move {
            let serve = axum::serve(listener, app).with_graceful_shutdown(async move {
                let _ = shutdown_signal.await;
            });
            if let Err(e) = serve.await {
                eprintln!("Redshift test server: {e}");
            }
        });
        Ok(RedshiftTestServer {
            endpoint,
            state,
            shutdown: Some(shutdown),
            task: Some(task),
        })
    }

    /// Every SQL statement that ended so far, in the order they ended, with how.
    pub fn statements(&self) -> Vec<(String, Outcome)> {
        self.state.lock().log.clone()
    }

    /// Stops accepting requests, aborts running statements and waits (a few seconds at most)
    /// for open connections to close.
    pub async fn stop(mut self) {
        self.shut_down();
        if let Some(task) = self.task.take() {
            let abort = task.abort_handle();
            if tokio::time::timeout(Duration::from_secs(5), task)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
    }

    /// Signals the HTTP server to stop and aborts the statement tasks.
    fn shut_down(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        for record in self.state.lock().records.values_mut() {
            if let Some(task) = record.task.take() {
                task.abort();
            }
        }
    }
}

impl Drop for RedshiftTestServer {
    fn drop(&mut self) {
        self.shut_down();
    }
}

/// The lifecycle of a statement, as DescribeStatement reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// Accepted, not yet picked up.
    Submitted,
    /// Picked up, waiting for its connection (or the configured delay).
    Picked,
    /// Running on Postgres.
    Started,
    /// Done; for a batch, committed.
    Finished,
    /// Failed; for a batch, rolled back.
    Failed,
    /// Cancelled, or not run because an earlier statement of its batch failed.
    Aborted,
}

impl Status {
    /// The Data API's name of the status.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Submitted => "SUBMITTED",
            Status::Picked => "PICKED",
            Status::Started => "STARTED",
            Status::Finished => "FINISHED",
            Status::Failed => "FAILED",
            Status::Aborted => "ABORTED",
        }
    }

    /// True once the status can no longer change.
    pub fn is_terminal(self) -> bool {
        matches!(self, Status::Finished | Status::Failed | Status::Aborted)
    }
}

/// The result set of a statement, in GetStatementResult's JSON shapes.
#[derive(Clone, Debug, Default)]
pub struct ResultSet {
    /// ColumnMetadata entries.
    pub columns: Vec<Value>,
    /// Records: one Field object per column.
    pub records: Vec<Vec<Value>>,
}

/// One SQL statement of a request (the only one of an ExecuteStatement).
#[derive(Debug)]
pub struct Sub {
    /// The SQL as the client sent it.
    pub sql: String,
    /// Its status.
    pub status: Status,
    /// Its error text, once failed.
    pub error: Option<String>,
    /// When it started running.
    pub started: Option<SystemTime>,
    /// When its status last changed.
    pub updated: SystemTime,
    /// Result rows, rows affected, or rows loaded.
    pub rows: i64,
    /// Its result set, if it returns rows.
    pub result: Option<ResultSet>,
}

/// A statement or batch the server accepted.
pub struct Record {
    /// Its id (sub-statements are `<id>:<n>`).
    pub id: String,
    /// The client's StatementName.
    pub name: Option<String>,
    /// The database it runs in.
    pub database: String,
    /// True for a BatchExecuteStatement.
    pub is_batch: bool,
    /// When it was accepted.
    pub created: SystemTime,
    /// When its status last changed.
    pub updated: SystemTime,
    /// When it started running.
    pub started: Option<SystemTime>,
    /// Its status.
    pub status: Status,
    /// Its error text, once failed.
    pub error: Option<String>,
    /// Its statements, in order.
    pub subs: Vec<Sub>,
    /// Cancels the Postgres query it runs, once connected.
    pub cancel: Option<tokio_postgres::CancelToken>,
    /// The task running it.
    pub task: Option<AbortHandle>,
}

impl Record {
    /// Nanoseconds from start to the last change (0 before it started).
    pub fn duration_ns(started: Option<SystemTime>, updated: SystemTime) -> i64 {
        started
            .and_then(|s| updated.duration_since(s).ok())
            .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
    }

    /// Ends the record as `status` with `error`, marking every statement not yet ended
    /// Aborted and logging it so; false if it had already ended (a cancel came first).
    pub fn end(
        &mut self,
        status: Status,
        error: Option<String>,
        log: &mut Vec<(String, Outcome)>,
    ) -> bool {
        if self.status.is_terminal() {
            return false;
        }
        let now = SystemTime::now();
        for sub in self.subs.iter_mut().filter(|s| !s.status.is_terminal()) {
            sub.status = Status::Aborted;
            sub.updated = now;
            log.push((sub.sql.clone(), Outcome::Aborted));
        }
        self.status = status;
        self.error = error;
        self.updated = now;
        self.cancel = None;
        self.task = None;
        true
    }
}

/// Everything the server keeps, shared by the HTTP handlers and the statement tasks.
pub struct State {
    /// The settings it started with.
    pub settings: ServerSettings,
    /// Connection settings of the Postgres server (the database is set per statement).
    pub postgres: tokio_postgres::Config,
    /// Client of the S3 server, for COPY.
    pub s3: aws_sdk_s3::Client,
    inner: Mutex<Inner>,
    id_seed: u64,
    next_id: AtomicU64,
}

/// The mutable part of [`State`], under one lock that is never held across an await.
#[derive(Default)]
pub struct Inner {
    /// Every statement accepted, by id.
    pub records: HashMap<String, Record>,
    /// Every SQL statement that ended, in order.
    pub log: Vec<(String, Outcome)>,
    /// Databases that have the Redshift types and functions already.
    pub ready_databases: HashSet<String>,
}

impl State {
    fn new(settings: ServerSettings, postgres: tokio_postgres::Config) -> Self {
        let credentials = aws_sdk_s3::config::Credentials::new(
            &settings.s3_access_key_id,
            &settings.s3_secret_access_key,
            None,
            None,
            "redshift-test-server",
        );
        let s3_config = aws_sdk_s3::Config::builder()
            .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
            .region(aws_sdk_s3::config::Region::new(settings.s3_region.clone()))
            .endpoint_url(&settings.s3_endpoint)
            .credentials_provider(credentials)
            .force_path_style(true)
            .build();
        // Ids differ between servers (and runs) through the start time and the process id.
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        State {
            s3: aws_sdk_s3::Client::from_conf(s3_config),
            settings,
            postgres,
            inner: Mutex::new(Inner::default()),
            id_seed: nanos ^ (u64::from(std::process::id()) << 40),
            next_id: AtomicU64::new(1),
        }
    }

    /// The registry, locked (a panic elsewhere while locked leaves it usable).
    pub fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers a statement (one SQL) or batch and starts the task that runs it; returns
    /// its id and creation time.
    pub fn submit(
        self: &Arc<Self>,
        database: String,
        name: Option<String>,
        sqls: Vec<String>,
        is_batch: bool,
    ) -> (String, SystemTime) {
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        let seed = self.id_seed;
        // A version-4-looking UUID, as the Data API's ids are.
        let id = format!(
            "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
            (seed >> 32) as u32,
            (seed >> 16) as u16,
            (seed >> 4) & 0xfff,
            seed & 0xfff,
            n
        );
        let now = SystemTime::now();
        let record = Record {
            id: id.clone(),
            name,
            database,
            is_batch,
            created: now,
            updated: now,
            started: None,
            status: Status::Submitted,
            error: None,
            subs: sqls
                .into_iter()
                .map(|sql| Sub {
                    sql,
                    status: Status::Submitted,
                    error: None,
                    started: None,
                    updated: now,
                    rows: 0,
                    result: None,
                })
                .collect(),
            cancel: None,
            task: None,
        };
        self.lock().records.insert(id.clone(), record);
        let task = tokio::spawn(super::run::run(Arc::clone(self), id.clone()));
        if let Some(record) = self.lock().records.get_mut(&id)
            && !record.status.is_terminal()
        {
            record.task = Some(task.abort_handle());
        }
        (id, now)
    }
}

/// `time` as the Data API's timestamps: fractional seconds since the epoch.
pub fn epoch_seconds(time: SystemTime) -> f64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}
