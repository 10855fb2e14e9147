//! Workload W2, the Postgres twin of W1, and the Postgres helpers the benchmarks share
//! (`pgoutput_decode`, `pipeline_e2e`, `snapshot_read`, `snapshot_load`), among them the snapshot
//! benchmarks' Postgres table `bench.snap` ([`ensure_pg_snap`]).
//!
//! W2 is W1 (see `workload.rs`) in Postgres types: table `bench.orders` (bigint key, int,
//! varchar(32), smallint, numeric(12,2), an enum, text, timestamp(6), timestamptz(3), bit(8),
//! jsonb) in database `tidemark_w2_source` on a private Postgres of its own
//! (`scripts/postgres-instance.sh bench-source`; see [`pg_source_server_url`]), loaded as
//! 1,000,000 inserts, then 500,000 updates of seven columns, then 100,000 deletes, all in
//! 1000-row transactions, with the values W1's generator draws (the same seed, the same draws,
//! so the rows equal W1's). The table is in publication `w2_pub`.
//!
//! A logical slot, `w2_template` (pgoutput), is created just before the load; its start and the
//! end LSN of W2's last commit are recorded in `bench.w2_loaded`, so a rerun reuses the load. The
//! template is never read: every reader gets its own copy
//! (`pg_copy_logical_replication_slot`), which starts at the template's position, so every run
//! reads exactly W2's WAL. Copies are named `w2_run_<pid>_<n>` and dropped after use; copies
//! left behind by a process that died are dropped by the next run.
//!
//! `TIDEMARK_BENCH_SCALE` scales W2 as it does W1; `TIDEMARK_BENCH_RELOAD=1` loads it again.
//!
//! Included with `mod workload_pg;` (beside `mod workload;`) by each benchmark, which uses part
//! of it.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tidemark::source::postgres::slot::WalPosition;
use tokio_postgres::{Client, NoTls};

use crate::workload::{Dialect, STATES, TXN_ROWS, W1, instance_url};

/// The database W2 lives in, on the bench Postgres.
pub const SOURCE_DB: &str = "tidemark_w2_source";
/// The publication of `bench.orders`.
pub const PUBLICATION: &str = "w2_pub";
/// The slot created just before the load; only ever copied, never read.
pub const TEMPLATE_SLOT: &str = "w2_template";
/// Prefix of the slots copied from the template for one reader each.
const RUN_SLOT_PREFIX: &str = "w2_run_";
/// Bump when the workload changes, so a loaded W2 of the old version is reloaded.
const W2_VERSION: &str = "w2-v1";
/// The columns of W2's table (`bench.orders`, W1 in Postgres types), needing the enum type
/// `bench.order_state`: also the shape of the snapshot benchmark's table.
pub const W2_COLUMNS: &str = "id bigint PRIMARY KEY, qty int, sku varchar(32), \
    status_code smallint, amount numeric(12,2), state bench.order_state, note text, \
    created_at timestamp(6), updated_at timestamptz(3), flags bit(8), attrs jsonb";
/// Where Debian's Postgres 15 client programs are.
pub const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

/// The sizes of W2's three phases (W1's, from `TIDEMARK_BENCH_SCALE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct W2 {
    /// Inserted rows, ids `1..=rows`.
    pub rows: u64,
    /// Updated rows: every even id.
    pub updates: u64,
    /// Deleted rows: the last `deletes` ids.
    pub deletes: u64,
}

impl W2 {
    /// The full workload scaled by `TIDEMARK_BENCH_SCALE`, exactly as W1 is.
    pub fn from_env() -> W2 {
        let W1 {
            rows,
            updates,
            deletes,
        } = W1::from_env();
        W2 {
            rows,
            updates,
            deletes,
        }
    }

    /// Row changes in the WAL: inserts + updates + deletes.
    pub fn changes(&self) -> u64 {
        self.rows + self.updates + self.deletes
    }

    /// Transactions in the WAL: one per 1000 rows of each phase.
    pub fn transactions(&self) -> u64 {
        self.changes() / TXN_ROWS
    }

    /// Rows left in `bench.orders` at the end.
    pub fn final_rows(&self) -> u64 {
        self.rows - self.deletes
    }

    /// Key of this workload's row in `bench.w2_loaded`.
    fn version(&self) -> String {
        format!("{W2_VERSION}-{}", self.rows)
    }
}

impl std::fmt::Display for W2 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "W2 ({} inserts, {} updates, {} deletes in {TXN_ROWS}-row transactions)",
            self.rows, self.updates, self.deletes
        )
    }
}

/// The WAL range W2 occupies on the bench server.
#[derive(Debug, Clone, Copy)]
pub struct W2Range {
    /// The template slot's start (its `confirmed_flush_lsn`): W2 is everything after it.
    pub start: WalPosition,
    /// The end LSN of W2's last commit.
    pub end: WalPosition,
    /// Seconds the load took (when it was loaded, possibly by an earlier run).
    pub load_secs: f64,
    /// Whether an earlier run's load was found and reused.
    pub reused: bool,
}

impl W2Range {
    /// One line for a benchmark's header.
    pub fn describe(&self) -> String {
        format!(
            "range {} .. {} ({:.0} MB of WAL), slot {TEMPLATE_SLOT} copied per run; {} (load {:.1} s)",
            self.start,
            self.end,
            (self.end.0 - self.start.0) as f64 / 1e6,
            if self.reused {
                "reused from an earlier load"
            } else {
                "loaded now"
            },
            self.load_secs,
        )
    }
}

/// Debian's `psql` of the server's version (in [`PG_BIN`]) when installed, else the one on the
/// `PATH`.
pub fn psql() -> String {
    let debian = format!("{PG_BIN}/psql");
    if std::path::Path::new(&debian).exists() {
        debian
    } else {
        "psql".to_owned()
    }
}

/// The Postgres server W2 lives on: `TIDEMARK_BENCH_PG_SOURCE_URL`, else the private
/// `bench-source` instance (started if needed). It is not the warehouse's server (`bench`): the
/// template slot keeps every WAL record the server writes after W2's start, and the warehouse
/// loads of `pipeline_e2e` write gigabytes of WAL per run.
pub fn pg_source_server_url() -> String {
    std::env::var("TIDEMARK_BENCH_PG_SOURCE_URL")
        .unwrap_or_else(|_| instance_url("postgres-instance.sh", "bench-source", "postgres://"))
}

/// The URL of database `db` on the server of `server_url` (`postgres://.../DATABASE`).
pub fn db_url(server_url: &str, db: &str) -> String {
    let (server, _) = server_url
        .rsplit_once('/')
        .expect("a postgres:// URL ends in /DATABASE");
    format!("{server}/{db}")
}

/// The server's message when there is one (`tokio_postgres::Error` displays only "db error").
pub fn pg_error(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        None => e.to_string(),
    }
}

/// Connects to `url`, driving the connection on a spawned task; panics with the reason.
pub async fn pg_connect(url: &str) -> Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .unwrap_or_else(|e| panic!("connecting to {url}: {}", pg_error(&e)));
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            eprintln!("bench: postgres connection: {e}");
        }
    });
    client
}

/// Runs `sql` (one or more statements); panics naming `doing` and the server's message.
async fn exec(client: &Client, sql: &str, doing: &str) {
    client
        .batch_execute(sql)
        .await
        .unwrap_or_else(|e| panic!("{doing}: {}", pg_error(&e)));
}

/// Finds W2 on the server at `server_url`, or loads it, and returns its WAL range.
pub async fn ensure_w2(server_url: &str, w2: &W2) -> W2Range {
    let reload = std::env::var("TIDEMARK_BENCH_RELOAD").is_ok_and(|v| v == "1");
    let admin = pg_connect(server_url).await;
    let exists = admin
        .query_opt(
            "SELECT 1 FROM pg_database WHERE datname = $1",
            &[&SOURCE_DB],
        )
        .await
        .unwrap_or_else(|e| panic!("reading pg_database: {}", pg_error(&e)))
        .is_some();
    if exists && !reload {
        let source = pg_connect(&db_url(server_url, SOURCE_DB)).await;
        if let Some(range) = loaded_w2(&source, w2).await {
            return range;
        }
    }
    load_w2(&admin, server_url, w2).await
}

/// The recorded W2 range, if this workload version was loaded and the template slot still holds
/// its start.
async fn loaded_w2(source: &Client, w2: &W2) -> Option<W2Range> {
    let marker = source
        .query_opt(
            "SELECT start_lsn::text, end_lsn::text, load_secs FROM bench.w2_loaded
             WHERE version = $1",
            &[&w2.version()],
        )
        .await
        .ok()
        .flatten()?;
    let start = WalPosition::parse(&marker.get::<_, String>(0))?;
    let end = WalPosition::parse(&marker.get::<_, String>(1))?;
    let slot = source
        .query_opt(
            "SELECT confirmed_flush_lsn::text, wal_status FROM pg_replication_slots
             WHERE slot_name = $1 AND database = current_database()",
            &[&TEMPLATE_SLOT],
        )
        .await
        .unwrap_or_else(|e| panic!("reading pg_replication_slots: {}", pg_error(&e)));
    let usable = slot.is_some_and(|row| {
        let confirmed = row
            .get::<_, Option<String>>(0)
            .and_then(|t| WalPosition::parse(&t));
        confirmed == Some(start) && row.get::<_, Option<String>>(1).as_deref() != Some("lost")
    });
    if !usable {
        eprintln!(
            "bench: W2 was loaded at {start}..{end} but slot {TEMPLATE_SLOT} no longer starts \
             there; reloading"
        );
        return None;
    }
    Some(W2Range {
        start,
        end,
        load_secs: marker.get(2),
        reused: true,
    })
}

/// Creates `tidemark_w2_source` afresh, loads W2 after a new template slot and records its range.
async fn load_w2(admin: &Client, server_url: &str, w2: &W2) -> W2Range {
    eprintln!("bench: loading {w2} into {SOURCE_DB}...");
    // DROP DATABASE refuses while slots of the database exist.
    admin
        .execute(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots
             WHERE database = $1",
            &[&SOURCE_DB],
        )
        .await
        .unwrap_or_else(|e| panic!("dropping the old W2 slots: {}", pg_error(&e)));
    // Separate statements: DROP DATABASE cannot run inside a multi-statement transaction.
    exec(
        admin,
        &format!("DROP DATABASE IF EXISTS {SOURCE_DB} WITH (FORCE)"),
        "dropping the W2 database",
    )
    .await;
    exec(
        admin,
        &format!("CREATE DATABASE {SOURCE_DB}"),
        "creating the W2 database",
    )
    .await;
    let url = db_url(server_url, SOURCE_DB);
    let source = pg_connect(&url).await;
    // The publication must exist before the slot's start: pgoutput reads it as of each change.
    // Autovacuum stays off on the table while loading (its WAL would only be noise there); one
    // VACUUM ANALYZE follows the load, after W2's end.
    exec(
        &source,
        &format!(
            "CREATE SCHEMA bench;
             CREATE TYPE bench.order_state AS ENUM ({states});
             CREATE TABLE bench.orders ({W2_COLUMNS}) WITH (autovacuum_enabled = false);
             CREATE TABLE bench.w2_loaded (
                 version text PRIMARY KEY,
                 start_lsn pg_lsn NOT NULL,
                 end_lsn pg_lsn NOT NULL,
                 load_secs float8 NOT NULL
             );
             CREATE PUBLICATION {PUBLICATION} FOR TABLE bench.orders;",
            states = STATES
                .iter()
                .map(|s| format!("'{s}'"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        "creating bench.orders",
    )
    .await;
    let start: String = source
        .query_one(
            "SELECT lsn::text FROM pg_create_logical_replication_slot($1, 'pgoutput')",
            &[&TEMPLATE_SLOT],
        )
        .await
        .unwrap_or_else(|e| panic!("creating slot {TEMPLATE_SLOT}: {}", pg_error(&e)))
        .get(0);
    let start = WalPosition::parse(&start).expect("the slot's start position");
    let started = Instant::now();

    let sizes = W1 {
        rows: w2.rows,
        updates: w2.updates,
        deletes: w2.deletes,
    };
    for (doing, sql) in sizes.load_statements(Dialect::Postgres) {
        exec(&source, &sql, &format!("{doing} W2 rows")).await;
    }
    // At or past the last commit's end (other backends may have written WAL meanwhile).
    let load_end: String = source
        .query_one("SELECT pg_current_wal_insert_lsn()::text", &[])
        .await
        .unwrap_or_else(|e| panic!("reading the WAL position: {}", pg_error(&e)))
        .get(0);
    let load_end = WalPosition::parse(&load_end).expect("the WAL position after the load");
    let load_secs = started.elapsed().as_secs_f64();
    exec(
        &source,
        "VACUUM ANALYZE bench.orders",
        "vacuuming bench.orders",
    )
    .await;

    // W2's end is its last commit's end LSN, which only the stream tells exactly: read it once
    // with pg_recvlogical, which also proves the stream holds exactly W2's changes.
    eprintln!("bench: loaded in {load_secs:.1} s; reading W2 once to find its last commit...");
    let slot = RunSlots::new(&source).await;
    let name = slot.copy().await;
    let counts = count_recvlogical(&url, &name, load_end);
    slot.drop_slot(&name).await;
    counts.assert_w2(w2);
    let end = counts
        .last_commit_end
        .expect("W2's stream has a last commit");
    source
        .execute(
            "INSERT INTO bench.w2_loaded VALUES ($1, $2::text::pg_lsn, $3::text::pg_lsn, $4)",
            &[
                &w2.version(),
                &start.to_string(),
                &end.to_string(),
                &load_secs,
            ],
        )
        .await
        .unwrap_or_else(|e| panic!("recording the W2 range: {}", pg_error(&e)));
    W2Range {
        start,
        end,
        load_secs,
        reused: false,
    }
}

// --- slots ----------------------------------------------------------------------------------

/// Copies of the template slot for this process, on a connection to the W2 database.
pub struct RunSlots<'a> {
    client: &'a Client,
    next: std::cell::Cell<u32>,
}

impl<'a> RunSlots<'a> {
    /// Drops the copies left behind by processes that are gone, then hands out new ones.
    pub async fn new(client: &'a Client) -> RunSlots<'a> {
        let rows = client
            .query(
                "SELECT slot_name::text FROM pg_replication_slots
                 WHERE slot_name LIKE $1 AND NOT active",
                &[&format!("{RUN_SLOT_PREFIX}%")],
            )
            .await
            .unwrap_or_else(|e| panic!("reading pg_replication_slots: {}", pg_error(&e)));
        for row in rows {
            let name: String = row.get(0);
            let owner = name
                .strip_prefix(RUN_SLOT_PREFIX)
                .and_then(|rest| rest.split('_').next())
                .and_then(|pid| pid.parse::<u32>().ok());
            let alive =
                owner.is_some_and(|pid| std::path::Path::new(&format!("/proc/{pid}")).exists());
            if !alive {
                eprintln!("bench: dropping slot {name}, left behind by an earlier run");
                drop_slot(client, &name).await;
            }
        }
        RunSlots {
            client,
            next: std::cell::Cell::new(1),
        }
    }

    /// A fresh name for a slot of this process (`w2_run_<pid>_<tag>`), to be created by its
    /// user (tidemark) or by [`RunSlots::copy_as`].
    pub fn name(&self, tag: &str) -> String {
        format!("{RUN_SLOT_PREFIX}{}_{tag}", std::process::id())
    }

    /// A new copy of the template, numbered; returns its name.
    pub async fn copy(&self) -> String {
        let n = self.next.get();
        self.next.set(n + 1);
        let name = self.name(&n.to_string());
        self.copy_as(&name).await;
        name
    }

    /// A new copy of the template named `name` (from [`RunSlots::name`]).
    pub async fn copy_as(&self, name: &str) {
        self.client
            .execute(
                "SELECT pg_copy_logical_replication_slot($1, $2)",
                &[&TEMPLATE_SLOT, &name],
            )
            .await
            .unwrap_or_else(|e| panic!("copying slot {TEMPLATE_SLOT} to {name}: {}", pg_error(&e)));
    }

    /// Drops slot `name` (waiting for its reader's walsender to let go).
    pub async fn drop_slot(&self, name: &str) {
        drop_slot(self.client, name).await;
    }
}

/// Drops slot `name` if it exists, retrying for up to 30 s while a walsender still holds it
/// (one exits shortly after its client).
async fn drop_slot(client: &Client, name: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let dropped = client
            .execute(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots
                 WHERE slot_name = $1",
                &[&name],
            )
            .await;
        match dropped {
            Ok(_) => return,
            Err(e) if Instant::now() < deadline && pg_error(&e).starts_with("55006") => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("dropping slot {name}: {}", pg_error(&e)),
        }
    }
}

// --- pg_recvlogical ------------------------------------------------------------------------

/// `pg_recvlogical` streaming `slot` (pgoutput, protocol 1, W2's publication) from the slot's
/// position until `endpos`, then exiting. Output is set by the caller (`-f`).
pub fn recvlogical(url: &str, slot: &str, endpos: WalPosition) -> Command {
    let mut cmd = Command::new(format!("{PG_BIN}/pg_recvlogical"));
    cmd.arg("--no-loop")
        .arg("-d")
        .arg(url)
        .arg("--slot")
        .arg(slot)
        .arg("--start")
        .arg("-o")
        .arg("proto_version=1")
        .arg("-o")
        .arg(format!("publication_names={PUBLICATION}"))
        .arg(format!("--endpos={endpos}"))
        .stdin(Stdio::null())
        .stderr(Stdio::inherit());
    cmd
}

/// What one pass of `pg_recvlogical` delivered, counted from its pgoutput output.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PgCounts {
    /// Insert messages.
    pub insert: u64,
    /// Update messages.
    pub update: u64,
    /// Delete messages.
    pub delete: u64,
    /// Commit messages.
    pub transactions: u64,
    /// Bytes of pgoutput messages (without pg_recvlogical's newline after each).
    pub bytes: u64,
    /// The end LSN carried by the last Commit message.
    pub last_commit_end: Option<WalPosition>,
}

impl PgCounts {
    /// Row changes: inserts + updates + deletes.
    pub fn changes(&self) -> u64 {
        self.insert + self.update + self.delete
    }

    /// Panics unless these are exactly W2's changes and transactions.
    pub fn assert_w2(&self, w2: &W2) {
        assert!(
            (self.insert, self.update, self.delete, self.transactions)
                == (w2.rows, w2.updates, w2.deletes, w2.transactions()),
            "pg_recvlogical read {self:?}, but {w2} has {} transactions",
            w2.transactions()
        );
    }
}

/// Runs `pg_recvlogical` on `slot` until `endpos` into a pipe, counting the pgoutput messages it
/// writes (each followed by a newline). Panics if it fails, writes something that is not
/// pgoutput, or runs for more than 10 minutes.
pub fn count_recvlogical(url: &str, slot: &str, endpos: WalPosition) -> PgCounts {
    let mut child = recvlogical(url, slot, endpos)
        .args(["-f", "-"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {PG_BIN}/pg_recvlogical: {e}"));
    let stdout = child.stdout.take().expect("piped stdout");
    // A stream that never reaches endpos would block the read forever: stop it after a while.
    let done = Arc::new(AtomicBool::new(false));
    let watchdog = {
        let done = done.clone();
        let pid = child.id().to_string();
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(600);
            while !done.load(Ordering::Relaxed) {
                if Instant::now() > deadline {
                    eprintln!("bench: pg_recvlogical ran for 10 minutes; stopping it");
                    let _ = Command::new("kill").args(["-TERM", &pid]).status();
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    let counts = PgOutputCounter::new(BufReader::with_capacity(1 << 20, stdout))
        .count()
        .unwrap_or_else(|e| panic!("reading pg_recvlogical's output: {e}"));
    let status = child.wait().expect("waiting for pg_recvlogical");
    done.store(true, Ordering::Relaxed);
    let _ = watchdog.join();
    assert!(status.success(), "pg_recvlogical failed: {status}");
    counts
}

/// Walks pgoutput protocol-1 messages as `pg_recvlogical` writes them (each followed by `\n`),
/// counting them; independent of tidemark's decoder.
struct PgOutputCounter<R> {
    input: R,
    counts: PgCounts,
}

impl<R: BufRead> PgOutputCounter<R> {
    /// A counter reading `input`.
    fn new(input: R) -> Self {
        PgOutputCounter {
            input,
            counts: PgCounts::default(),
        }
    }

    /// Reads to the end; returns the counts, or what was malformed and after how many bytes.
    fn count(mut self) -> Result<PgCounts, String> {
        loop {
            let mut tag = [0u8];
            match self.input.read(&mut tag) {
                Ok(0) => return Ok(self.counts),
                Ok(_) => {}
                Err(e) => return Err(e.to_string()),
            }
            let before = self.counts.bytes;
            self.counts.bytes += 1;
            self.message(tag[0])
                .map_err(|e| format!("message {:?} at byte {before}: {e}", tag[0] as char))?;
            if self.byte()? != b'\n' {
                return Err(format!(
                    "message {:?} at byte {before} is not followed by a newline",
                    tag[0] as char
                ));
            }
            // pg_recvlogical's newline is not part of the message.
            self.counts.bytes -= 1;
        }
    }

    /// The body of one message whose type byte was `tag`.
    fn message(&mut self, tag: u8) -> Result<(), String> {
        match tag {
            // Begin: final LSN, commit time, xid.
            b'B' => self.skip(8 + 8 + 4),
            // Commit: flags, commit LSN, end LSN, commit time.
            b'C' => {
                self.skip(1 + 8)?;
                let end = u64::from_be_bytes(self.array()?);
                self.skip(8)?;
                self.counts.transactions += 1;
                self.counts.last_commit_end = Some(WalPosition(end));
                Ok(())
            }
            // Origin: commit LSN, name.
            b'O' => {
                self.skip(8)?;
                self.cstring()
            }
            // Relation: oid, namespace, name, replica identity, columns.
            b'R' => {
                self.skip(4)?;
                self.cstring()?;
                self.cstring()?;
                self.skip(1)?;
                for _ in 0..self.u16()? {
                    self.skip(1)?;
                    self.cstring()?;
                    self.skip(4 + 4)?;
                }
                Ok(())
            }
            // Type: oid, namespace, name.
            b'Y' => {
                self.skip(4)?;
                self.cstring()?;
                self.cstring()
            }
            b'I' => {
                self.counts.insert += 1;
                self.skip(4)?;
                self.expect(b"N")?;
                self.tuple()
            }
            b'U' => {
                self.counts.update += 1;
                self.skip(4)?;
                let mut kind = self.byte()?;
                if kind == b'K' || kind == b'O' {
                    self.tuple()?;
                    kind = self.byte()?;
                }
                if kind != b'N' {
                    return Err(format!("update without a new tuple ({:?})", kind as char));
                }
                self.tuple()
            }
            b'D' => {
                self.counts.delete += 1;
                self.skip(4)?;
                self.expect(b"KO")?;
                self.tuple()
            }
            // Truncate: relation count, options, oids.
            b'T' => {
                let relations = self.u32()?;
                self.skip(1 + 4 * u64::from(relations))
            }
            // Message: flags, LSN, prefix, content.
            b'M' => {
                self.skip(1 + 8)?;
                self.cstring()?;
                let len = self.u32()?;
                self.skip(u64::from(len))
            }
            other => Err(format!("unknown message type {other:#04x}")),
        }
    }

    /// TupleData: a column count, then per column `n`, `u`, or `t`/`b` with a length and bytes.
    fn tuple(&mut self) -> Result<(), String> {
        for _ in 0..self.u16()? {
            match self.byte()? {
                b'n' | b'u' => {}
                b't' | b'b' => {
                    let len = self.u32()?;
                    self.skip(u64::from(len))?;
                }
                other => return Err(format!("unknown column kind {other:#04x}")),
            }
        }
        Ok(())
    }

    /// One byte that must be one of `allowed`.
    fn expect(&mut self, allowed: &[u8]) -> Result<(), String> {
        let got = self.byte()?;
        if allowed.contains(&got) {
            Ok(())
        } else {
            Err(format!("found {:?} where {allowed:?} belongs", got as char))
        }
    }

    /// A big-endian 16-bit count.
    fn u16(&mut self) -> Result<u16, String> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    /// A big-endian 32-bit length or count.
    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    /// One byte.
    fn byte(&mut self) -> Result<u8, String> {
        Ok(self.array::<1>()?[0])
    }

    /// The next `N` bytes.
    fn array<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let mut buf = [0; N];
        self.input
            .read_exact(&mut buf)
            .map_err(|e| format!("truncated ({e})"))?;
        self.counts.bytes += N as u64;
        Ok(buf)
    }

    /// Skips `n` bytes.
    fn skip(&mut self, mut n: u64) -> Result<(), String> {
        self.counts.bytes += n;
        while n > 0 {
            let available = self.input.fill_buf().map_err(|e| e.to_string())?.len();
            if available == 0 {
                return Err("truncated".into());
            }
            let step = available.min(usize::try_from(n).unwrap_or(usize::MAX));
            self.input.consume(step);
            n -= step as u64;
        }
        Ok(())
    }

    /// Skips a NUL-terminated string.
    fn cstring(&mut self) -> Result<(), String> {
        let mut text = Vec::new();
        let n = self
            .input
            .read_until(0, &mut text)
            .map_err(|e| e.to_string())?;
        if text.last() != Some(&0) {
            return Err("unterminated string".into());
        }
        self.counts.bytes += n as u64;
        Ok(())
    }
}

/// The database of the snapshot benchmarks' Postgres table, on the `bench-source` instance.
pub const SNAP_DB: &str = "tidemark_snap";

/// Creates database [`SNAP_DB`] and its `bench.snap` (W1's shape in W2's types, UNLOGGED) with
/// `rows` rows unless they are there, on the server of `server_url`; says which.
pub async fn ensure_pg_snap(server_url: &str, rows: u64) -> String {
    let admin = pg_connect(server_url).await;
    let exists = admin
        .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&SNAP_DB])
        .await
        .expect("looking for the database")
        .is_some();
    if !exists {
        exec(
            &admin,
            &format!("CREATE DATABASE {SNAP_DB}"),
            "creating the database",
        )
        .await;
    }
    let client = pg_connect(&db_url(server_url, SNAP_DB)).await;
    // Also reads the whole heap, so the benchmarks that follow find it in the page cache.
    let existing: Option<i64> = client
        .query_opt("SELECT count(*) FROM bench.snap", &[])
        .await
        .ok()
        .flatten()
        .map(|row| row.get(0));
    if existing == Some(rows as i64) {
        return "reused from an earlier run".into();
    }
    let started = Instant::now();
    // UNLOGGED: no WAL to keep (the instance holds W2's template slot), the same to read.
    let setup = format!(
        "CREATE SCHEMA IF NOT EXISTS bench;
         DROP TABLE IF EXISTS bench.snap;
         DROP TYPE IF EXISTS bench.order_state;
         CREATE TYPE bench.order_state AS ENUM ('new', 'paid', 'shipped', 'cancelled');
         CREATE UNLOGGED TABLE bench.snap ({W2_COLUMNS});
         INSERT INTO bench.snap
         SELECT g, g % 1000, 'SKU-' || g, g % 7, (g % 100000) / 100.0,
                (ARRAY['new', 'paid', 'shipped', 'cancelled'])[1 + g % 4]::bench.order_state,
                repeat(chr(97 + (g % 26)::int), (10 + g % 50)::int),
                timestamp '2024-01-01 00:00:00.123456' + g * interval '1 second',
                timestamptz '2024-06-01 00:00:00.5+00' + g * interval '1 second',
                (g % 256)::int::bit(8),
                jsonb_build_object('k', g % 10, 's', 'v' || g % 97)
         FROM generate_series(1, {rows}) g;
         ANALYZE bench.snap;"
    );
    exec(&client, &setup, "making bench.snap").await;
    format!("made now ({:.1} s)", started.elapsed().as_secs_f64())
}
