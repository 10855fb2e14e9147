//! Support for end-to-end tests of `tidemark run`: a fresh Postgres warehouse database per test,
//! a config file in a temp dir, the `tidemark` process (logs captured to files, killed when the
//! guard drops, SIGTERM / kill -9 on demand), polling with timeouts, a random multi-table writer,
//! and the source-vs-target table comparison every test ends with.
//!
//! The comparison canonicalises each column by its MySQL type, in SQL on both sides (plus a
//! little Rust for floats, zero dates and JSON), following the mapping in
//! `docs/warehouse-postgres.md`: rows are matched by primary key, and a readable diff (the first
//! differing rows, column by column) is returned when they differ. A key present twice in the
//! target is always a difference.

use std::collections::BTreeMap;
use std::collections::HashSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mysql_async::prelude::Queryable;
use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

// ------------------------------------------------------------------------------------------
// Ids and randomness
// ------------------------------------------------------------------------------------------

/// A replica server id unique per call and test process (the range is far from the ids other
/// test files use), so concurrently running readers never kick each other off one MariaDB.
pub fn server_id() -> u32 {
    static N: AtomicU32 = AtomicU32::new(0);
    3_000_000_000 + (std::process::id() % 1_000_000) * 64 + N.fetch_add(1, Ordering::Relaxed) % 64
}

/// A small seeded PRNG (SplitMix64): reproducible workloads without extra dependencies.
pub struct Rng(u64);

impl Rng {
    /// A generator starting from `seed`.
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// Uniform in `lo..=hi`.
    pub fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    /// True with probability `percent`/100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    /// A duration uniform in `lo_ms..=hi_ms` milliseconds.
    pub fn millis(&mut self, lo_ms: u64, hi_ms: u64) -> Duration {
        Duration::from_millis(self.between(lo_ms, hi_ms))
    }
}

/// The seed of a randomised test: `$TIDEMARK_TEST_SEED` or the clock, printed so that a failure
/// can be replayed.
pub fn seed(test: &str) -> u64 {
    let seed = std::env::var("TIDEMARK_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        });
    eprintln!("{test}: seed {seed} (replay with TIDEMARK_TEST_SEED={seed})");
    seed
}

/// A loopback port nothing listens on (bound, then released).
pub fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().unwrap().port()
}

// ------------------------------------------------------------------------------------------
// Warehouse side
// ------------------------------------------------------------------------------------------

/// A Postgres database of its own for one test, on the shared server or a private instance.
pub struct Warehouse {
    /// URL of the warehouse database (what the tidemark config gets).
    pub url: String,
    /// Its name.
    pub db: String,
    /// A connection to it.
    pub client: Client,
}

/// Connects to Postgres at `url`, or returns the error.
pub async fn try_pg_client(url: &str) -> Result<Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// Connects to Postgres at `url`, panicking with the URL on failure.
pub async fn pg_client(url: &str) -> Client {
    try_pg_client(url)
        .await
        .unwrap_or_else(|e| panic!("connecting to {url}: {e}"))
}

/// `url` (`postgres://user@host:port/anything`) with `db` as its database.
pub fn with_database(url: &str, db: &str) -> String {
    let authority_start = url.find("://").map_or(0, |i| i + 3);
    let base = match url[authority_start..].find(['/', '?']) {
        Some(i) => &url[..authority_start + i],
        None => url,
    };
    format!("{base}/{db}")
}

/// A new, empty warehouse database on the shared Postgres.
pub async fn fresh_warehouse(hint: &str) -> Warehouse {
    fresh_warehouse_on(&super::pg_url(), hint).await
}

/// A new, empty database named `w<pid>_<n>_<hint>` on the Postgres server at `server_url`.
pub async fn fresh_warehouse_on(server_url: &str, hint: &str) -> Warehouse {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let prefix = format!(
        "w{}_{}_",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    );
    let db = super::name_with_hint(&prefix, hint, 63);
    let admin = pg_client(server_url).await;
    drop_warehouses_of_dead_processes(server_url, &admin).await;
    admin
        .batch_execute(&format!("CREATE DATABASE \"{db}\""))
        .await
        .unwrap_or_else(|e| panic!("CREATE DATABASE {db} on {server_url}: {e}"));
    let url = with_database(server_url, &db);
    Warehouse {
        client: pg_client(&url).await,
        url,
        db,
    }
}

/// Once per process and server, drops warehouse databases of test processes that have exited.
async fn drop_warehouses_of_dead_processes(server_url: &str, admin: &Client) {
    static DONE: Mutex<Option<HashSet<String>>> = Mutex::new(None);
    if !DONE
        .lock()
        .unwrap()
        .get_or_insert_with(HashSet::new)
        .insert(server_url.to_string())
    {
        return;
    }
    let Ok(rows) = admin
        .simple_query("SELECT datname FROM pg_database WHERE datname ~ '^w[0-9]+_[0-9]+_'")
        .await
    else {
        return;
    };
    for message in rows {
        let SimpleQueryMessage::Row(row) = message else {
            continue;
        };
        let Some(name) = row.get(0) else { continue };
        let Some(pid) = name[1..]
            .split('_')
            .next()
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = admin
                .batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                .await;
        }
    }
}

/// `s` as a SQL string literal.
pub fn sql_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// Rows of `sql` (simple protocol: every value as text, NULL as None).
pub async fn pg_rows(client: &Client, sql: &str) -> Result<Vec<Vec<Option<String>>>, String> {
    let messages = client
        .simple_query(sql)
        .await
        .map_err(|e| match e.as_db_error() {
            Some(db) => format!("{sql}: {}: {}", db.code().code(), db.message()),
            None => format!("{sql}: {e}"),
        })?;
    Ok(messages
        .into_iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(row) => Some(
                (0..row.len())
                    .map(|i| row.get(i).map(str::to_string))
                    .collect(),
            ),
            _ => None,
        })
        .collect())
}

impl Warehouse {
    /// Rows of `sql`, panicking with the statement on error.
    pub async fn rows(&self, sql: &str) -> Vec<Vec<Option<String>>> {
        pg_rows(&self.client, sql)
            .await
            .unwrap_or_else(|e| panic!("warehouse query failed: {e}"))
    }

    /// The single text value of `sql` (first column of the first row), None for no row / NULL.
    pub async fn value(&self, sql: &str) -> Option<String> {
        self.rows(sql)
            .await
            .into_iter()
            .next()
            .and_then(|r| r.into_iter().next().flatten())
    }

    /// Reconnects (after the warehouse server restarted).
    pub async fn reconnect(&mut self) {
        self.client = pg_client(&self.url).await;
    }

    /// The `position` of `source_id`'s checkpoint row, if the row exists.
    pub async fn checkpoint(&self, source_id: &str) -> Option<String> {
        self.checkpoint_field(source_id, "coalesce(position, '')")
            .await
    }

    /// The `resume_point` of `source_id`'s checkpoint (jsonb as text), if the row exists.
    pub async fn resume_point(&self, source_id: &str) -> Option<String> {
        self.checkpoint_field(source_id, "resume_point::text").await
    }

    /// `expr` over `source_id`'s checkpoint row; None if there is no row (or no
    /// `tidemark.checkpoints` table yet).
    async fn checkpoint_field(&self, source_id: &str, expr: &str) -> Option<String> {
        let sql = format!(
            "SELECT {expr} FROM tidemark.checkpoints WHERE source_id = {}",
            sql_literal(source_id)
        );
        pg_rows(&self.client, &sql)
            .await
            .ok()
            .and_then(|rows| rows.into_iter().next())
            .and_then(|r| r.into_iter().next().flatten())
    }

    /// True if `schema.table` exists.
    pub async fn table_exists(&self, schema: &str, table: &str) -> bool {
        let sql = format!(
            "SELECT 1 FROM information_schema.tables WHERE table_schema = {} AND table_name = {}",
            sql_literal(schema),
            sql_literal(table)
        );
        !self.rows(&sql).await.is_empty()
    }

    /// `(column, format_type)` of `schema.table`, in column order.
    pub async fn column_types(&self, schema: &str, table: &str) -> Vec<(String, String)> {
        let sql = format!(
            "SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a \
             WHERE a.attrelid = '\"{schema}\".\"{table}\"'::regclass AND a.attnum > 0 \
             AND NOT a.attisdropped ORDER BY a.attnum"
        );
        self.rows(&sql)
            .await
            .into_iter()
            .map(|r| (r[0].clone().unwrap(), r[1].clone().unwrap()))
            .collect()
    }

    /// The primary key columns of `schema.table`, in key order.
    pub async fn primary_key(&self, schema: &str, table: &str) -> Vec<String> {
        let sql = format!(
            "SELECT a.attname FROM pg_index i \
             JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, n) ON true \
             JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum \
             WHERE i.indrelid = '\"{schema}\".\"{table}\"'::regclass AND i.indisprimary \
             ORDER BY k.n"
        );
        self.rows(&sql)
            .await
            .into_iter()
            .map(|r| r[0].clone().unwrap())
            .collect()
    }
}

// ------------------------------------------------------------------------------------------
// Config
// ------------------------------------------------------------------------------------------

/// One `[[sources]]` entry.
#[derive(Clone, Debug)]
pub struct SourceConfig {
    /// `id`.
    pub id: String,
    /// `kind`: `mysql` or `postgres`.
    pub kind: &'static str,
    /// `url` (MySQL: the server, no database; Postgres: the source database).
    pub url: String,
    /// `tenant`.
    pub tenant: String,
    /// `region`.
    pub region: String,
    /// `function`.
    pub function: String,
    /// `include` patterns.
    pub include: Vec<String>,
    /// `server_id`.
    pub server_id: u32,
    /// Extra TOML lines appended to the entry.
    pub extra: String,
}

impl SourceConfig {
    /// A MySQL source `id` reading database `db` (`include = ["db.*"]`) of the server at `url`,
    /// landing in schema `acme_in_txn`, with a fresh server id and 1 s heartbeats.
    pub fn mysql(id: &str, url: &str, db: &str) -> Self {
        SourceConfig {
            id: id.to_string(),
            kind: "mysql",
            url: url.to_string(),
            tenant: "acme".into(),
            region: "in".into(),
            function: "txn".into(),
            include: vec![format!("{db}.*")],
            server_id: server_id(),
            extra: "heartbeat = \"1s\"\n".into(),
        }
    }

    /// A Postgres source `id` reading the database at `url`, tables `include`, with its own
    /// slot and publication named after `id`, and 1 s status updates.
    pub fn postgres(id: &str, url: &str, include: &[&str]) -> Self {
        SourceConfig {
            kind: "postgres",
            include: include.iter().map(|p| p.to_string()).collect(),
            ..SourceConfig::mysql(id, url, "unused")
        }
    }

    /// The warehouse schema its tables land in.
    pub fn schema(&self) -> String {
        format!("{}_{}_{}", self.tenant, self.region, self.function).to_lowercase()
    }
}

/// A whole config file: one group, a Postgres warehouse, `[batch]`, sources.
#[derive(Clone, Debug)]
pub struct GroupConfig {
    /// `[group] name`.
    pub name: String,
    /// `[warehouse] url`.
    pub warehouse_url: String,
    /// `[batch] max_rows`.
    pub max_rows: u64,
    /// `[batch] max_bytes`.
    pub max_bytes: String,
    /// `[batch] max_delay`.
    pub max_delay: String,
    /// `[batch] catch_up_lag`, when not the default.
    pub catch_up_lag: Option<String>,
    /// `[batch] slow_load_warning`, when not the default.
    pub slow_load_warning: Option<String>,
    /// The sources.
    pub sources: Vec<SourceConfig>,
}

impl GroupConfig {
    /// A group loading `sources` into `warehouse_url`, batches of up to 10000 rows / 200 ms.
    pub fn new(warehouse_url: &str, sources: Vec<SourceConfig>) -> Self {
        GroupConfig {
            name: "pipeline-test".into(),
            warehouse_url: warehouse_url.to_string(),
            max_rows: 10_000,
            max_bytes: "16MiB".into(),
            max_delay: "200ms".into(),
            catch_up_lag: None,
            slow_load_warning: None,
            sources,
        }
    }

    /// The TOML text, with `state_dir` as the group's state dir.
    pub fn render(&self, state_dir: &Path) -> String {
        let mut text = format!(
            "[group]\nname = {}\nstate_dir = {}\n\n[warehouse]\nkind = \"postgres\"\nurl = {}\n\n\
             [batch]\nmax_rows = {}\nmax_bytes = {}\nmax_delay = {}\n",
            toml_str(&self.name),
            toml_str(&state_dir.display().to_string()),
            toml_str(&self.warehouse_url),
            self.max_rows,
            toml_str(&self.max_bytes),
            toml_str(&self.max_delay),
        );
        if let Some(lag) = &self.catch_up_lag {
            writeln!(text, "catch_up_lag = {}", toml_str(lag)).unwrap();
        }
        if let Some(after) = &self.slow_load_warning {
            writeln!(text, "slow_load_warning = {}", toml_str(after)).unwrap();
        }
        for s in &self.sources {
            let include: Vec<String> = s.include.iter().map(|p| toml_str(p)).collect();
            write!(
                text,
                "\n[[sources]]\nid = {}\nkind = \"{}\"\nurl = {}\ntenant = {}\nregion = {}\n\
                 function = {}\ninclude = [{}]\nsnapshot = \"never\"\n{}{}",
                toml_str(&s.id),
                s.kind,
                toml_str(&s.url),
                toml_str(&s.tenant),
                toml_str(&s.region),
                toml_str(&s.function),
                include.join(", "),
                if s.kind == "mysql" {
                    format!("server_id = {}\n", s.server_id)
                } else {
                    String::new()
                },
                s.extra,
            )
            .unwrap();
        }
        text
    }
}

/// `s` as a TOML basic string.
pub fn toml_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

// ------------------------------------------------------------------------------------------
// The tidemark process
// ------------------------------------------------------------------------------------------

/// A `tidemark run` process (restartable) with its config and logs in a temp dir. Dropping it
/// kills the process; if the test is panicking, the logs are printed and the dir is kept.
pub struct Tidemark {
    dir: Option<tempfile::TempDir>,
    /// The config file.
    pub config_path: PathBuf,
    child: Option<Child>,
    runs: usize,
    /// Extra arguments after `run --config FILE`.
    pub extra_args: Vec<String>,
}

impl Tidemark {
    /// Writes the config `render(state_dir)` returns into a new temp dir; does not start.
    pub fn prepare(render: impl FnOnce(&Path) -> String) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("tidemark-pipeline-")
            .tempdir()
            .expect("temp dir");
        let state = dir.path().join("state");
        std::fs::create_dir_all(&state).unwrap();
        let config_path = dir.path().join("tidemark.toml");
        std::fs::write(&config_path, render(&state)).unwrap();
        Tidemark {
            dir: Some(dir),
            config_path,
            child: None,
            runs: 0,
            extra_args: Vec::new(),
        }
    }

    /// Writes `group`'s config and starts `tidemark run`.
    pub fn start(group: &GroupConfig) -> Self {
        let mut t = Self::prepare(|state| group.render(state));
        t.spawn();
        t
    }

    /// The temp dir holding config, state and logs.
    pub fn dir(&self) -> &Path {
        self.dir.as_ref().unwrap().path()
    }

    /// How many times the process was started.
    pub fn runs(&self) -> usize {
        self.runs
    }

    /// Starts (again) `tidemark run --config FILE`, logs going to `run<N>.out` / `run<N>.err`.
    pub fn spawn(&mut self) {
        assert!(
            self.child.is_none(),
            "tidemark already running; stop it first"
        );
        self.runs += 1;
        let out = std::fs::File::create(self.log_path(self.runs, "out")).unwrap();
        let err = std::fs::File::create(self.log_path(self.runs, "err")).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_tidemark"))
            .arg("run")
            .arg("--config")
            .arg(&self.config_path)
            .args(&self.extra_args)
            .env(
                "RUST_LOG",
                std::env::var("TIDEMARK_TEST_RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn()
            .expect("spawning tidemark");
        self.child = Some(child);
    }

    fn log_path(&self, run: usize, ext: &str) -> PathBuf {
        self.dir().join(format!("run{run}.{ext}"))
    }

    /// The pid of the running process.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("tidemark not running").id()
    }

    /// The exit status if the current process has exited (it is then forgotten), else None.
    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        match child.try_wait().expect("try_wait") {
            Some(status) => {
                self.child = None;
                Some(status)
            }
            None => None,
        }
    }

    /// True while the current process runs.
    pub fn is_running(&mut self) -> bool {
        self.child.is_some() && self.try_exit().is_none()
    }

    /// Panics (with `context`) if the process has exited.
    pub fn assert_running(&mut self, context: &str) {
        if self.child.is_none() {
            panic!("{context}: tidemark is not running");
        }
        if let Some(status) = self.try_exit() {
            panic!("{context}: tidemark exited unexpectedly ({status})");
        }
    }

    /// kill -9 and reap.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends SIGTERM to the running process.
    pub fn sigterm(&self) {
        self.signal("TERM");
    }

    /// Sends signal `name` (`TERM`, `INT`, ...) to the running process.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.pid().to_string()])
            .status()
            .expect("running kill");
        assert!(status.success(), "kill -{name} failed");
    }

    /// Waits up to `timeout` for the process to exit; its status, or None if still running.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_exit() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGTERM, then wait up to `timeout` for the exit; panics if it does not exit in time.
    pub async fn terminate(&mut self, timeout: Duration) -> ExitStatus {
        self.sigterm();
        match self.wait_exit(timeout).await {
            Some(status) => status,
            None => panic!("tidemark did not exit within {timeout:?} of SIGTERM"),
        }
    }

    /// stderr of the current (or last) run.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.log_path(self.runs, "err")).unwrap_or_default()
    }

    /// stdout + stderr of every run, each run's tail only, for failure messages.
    pub fn logs(&self) -> String {
        let mut text = String::new();
        let first = self.runs.saturating_sub(4).max(1);
        if first > 1 {
            writeln!(
                text,
                "(runs 1..{} omitted; see {})",
                first - 1,
                self.dir().display()
            )
            .unwrap();
        }
        for run in first..=self.runs {
            for ext in ["out", "err"] {
                let log = std::fs::read_to_string(self.log_path(run, ext)).unwrap_or_default();
                let lines: Vec<&str> = log.lines().collect();
                let skip = lines.len().saturating_sub(60);
                writeln!(
                    text,
                    "----- run {run} std{ext} ({} lines{}) -----",
                    lines.len(),
                    if skip > 0 { ", last 60" } else { "" }
                )
                .unwrap();
                for line in &lines[skip..] {
                    writeln!(text, "{line}").unwrap();
                }
            }
        }
        text
    }
}

impl Drop for Tidemark {
    fn drop(&mut self) {
        self.kill9();
        if std::thread::panicking() && self.runs > 0 {
            eprintln!("===== tidemark logs =====\n{}", self.logs());
            if let Some(dir) = self.dir.take() {
                eprintln!("(config and full logs kept in {})", dir.keep().display());
            }
        }
    }
}

// ------------------------------------------------------------------------------------------
// Polling
// ------------------------------------------------------------------------------------------

/// Calls `probe` every 100 ms until it returns Ok (returned) or `timeout` passes (the last
/// error is returned).
pub async fn poll<T>(
    timeout: Duration,
    mut probe: impl AsyncFnMut() -> Result<T, String>,
) -> Result<T, String> {
    let deadline = Instant::now() + timeout;
    loop {
        match probe().await {
            Ok(v) => return Ok(v),
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Calls `cond` every 100 ms until it is true (returns true) or `timeout` passes (false).
pub async fn wait_until(timeout: Duration, mut cond: impl AsyncFnMut() -> bool) -> bool {
    poll(timeout, async || {
        if cond().await {
            Ok(())
        } else {
            Err(String::new())
        }
    })
    .await
    .is_ok()
}

/// Waits until `source_id` has a checkpoint row (tidemark has fixed its start position).
/// Panics if tidemark exits or `timeout` passes first.
pub async fn wait_checkpoint(
    tm: &mut Tidemark,
    wh: &Warehouse,
    source_id: &str,
    timeout: Duration,
) -> String {
    let result = poll(timeout, async || {
        if let Some(position) = wh.checkpoint(source_id).await {
            return Ok(position);
        }
        if let Some(status) = tm.try_exit() {
            return Err(format!("tidemark exited ({status}) before checkpointing"));
        }
        Err("no row yet".into())
    })
    .await;
    match result {
        Ok(position) => position,
        Err(e) => panic!(
            "no tidemark.checkpoints row for source {source_id} in {} after {timeout:?}: {e}",
            wh.db
        ),
    }
}

/// A fresh warehouse (named after `hint`) and `tidemark run` loading source `source_id`, the
/// database `db` of the shared MariaDB, into it, the group config adjusted by `configure`.
/// Returns once the start position is checkpointed, with the target schema.
pub async fn start_pipeline(
    hint: &str,
    source_id: &str,
    db: &str,
    configure: impl FnOnce(&mut GroupConfig),
) -> (Warehouse, Tidemark, String) {
    let wh = fresh_warehouse(hint).await;
    let source = SourceConfig::mysql(source_id, &super::mysql_url(), db);
    let schema = source.schema();
    let mut group = GroupConfig::new(&wh.url, vec![source]);
    configure(&mut group);
    let mut tm = Tidemark::start(&group);
    wait_checkpoint(&mut tm, &wh, source_id, Duration::from_secs(30)).await;
    (wh, tm, schema)
}

// ------------------------------------------------------------------------------------------
// Source side: a random multi-table writer
// ------------------------------------------------------------------------------------------

/// Column definitions of the writer's tables.
pub const WORKLOAD_COLUMNS: &str = "id INT PRIMARY KEY, v BIGINT NOT NULL, \
     s VARCHAR(64) CHARACTER SET utf8mb4, d DECIMAL(12,3), ts DATETIME(6), b VARBINARY(16), \
     j JSON";

/// Creates the writer's tables `names` in the connection's database.
pub async fn create_workload_tables(conn: &mut mysql_async::Conn, names: &[&str]) {
    for name in names {
        conn.query_drop(format!(
            "CREATE TABLE `{name}` ({WORKLOAD_COLUMNS}) CHARACTER SET utf8mb4"
        ))
        .await
        .unwrap_or_else(|e| panic!("CREATE TABLE {name}: {e}"));
    }
}

/// What a writer did.
#[derive(Clone, Debug, Default)]
pub struct WriterStats {
    /// Committed transactions.
    pub commits: u64,
    /// Rolled-back transactions.
    pub rollbacks: u64,
    /// Statements that failed (each rolls its transaction back).
    pub errors: u64,
    /// The last error seen.
    pub last_error: Option<String>,
}

/// A background writer: random inserts, upserts, multi-row updates, deletes and key changes
/// over several tables, in transactions of 1-4 statements (5% rolled back).
pub struct Writer {
    stop: Arc<AtomicBool>,
    commits: Arc<AtomicU32>,
    handle: tokio::task::JoinHandle<WriterStats>,
}

impl Writer {
    /// Starts writing to `tables` of the database in `url`, pausing `pause` between
    /// transactions. Keys are drawn from 1..=`keys`.
    pub fn start(url: String, tables: &[&str], seed: u64, keys: u64, pause: Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let commits = Arc::new(AtomicU32::new(0));
        let handle = tokio::spawn(write_loop(
            url,
            tables.iter().map(|t| t.to_string()).collect(),
            Rng::new(seed),
            keys,
            pause,
            stop.clone(),
            commits.clone(),
        ));
        Writer {
            stop,
            commits,
            handle,
        }
    }

    /// Transactions committed so far.
    pub fn commits(&self) -> u32 {
        self.commits.load(Ordering::Relaxed)
    }

    /// Waits until at least `n` more transactions committed than when called.
    pub async fn wait_commits(&self, n: u32) {
        let target = self.commits() + n;
        let ok = wait_until(Duration::from_secs(30), async || self.commits() >= target).await;
        assert!(ok, "writer made no progress: {} commits", self.commits());
    }

    /// Stops after the current transaction and returns what it did.
    pub async fn stop(self) -> WriterStats {
        self.stop.store(true, Ordering::Relaxed);
        let stats = self.handle.await.expect("writer task panicked");
        eprintln!("writer: {stats:?}");
        stats
    }
}

async fn write_loop(
    url: String,
    tables: Vec<String>,
    mut rng: Rng,
    keys: u64,
    pause: Duration,
    stop: Arc<AtomicBool>,
    commits: Arc<AtomicU32>,
) -> WriterStats {
    let mut conn = super::mysql_conn(&url).await;
    conn.query_drop("SET SESSION time_zone = '+00:00'")
        .await
        .unwrap();
    let mut stats = WriterStats::default();
    let mut consecutive_errors = 0;
    while !stop.load(Ordering::Relaxed) {
        conn.query_drop("BEGIN").await.unwrap();
        let mut failed = false;
        for _ in 0..rng.between(1, 4) {
            let table = &tables[rng.below(tables.len() as u64) as usize];
            let sql = random_statement(&mut rng, table, keys);
            if let Err(e) = conn.query_drop(&sql).await {
                stats.errors += 1;
                stats.last_error = Some(format!("{sql}: {e}"));
                failed = true;
                break;
            }
        }
        if failed || rng.chance(5) {
            if conn.query_drop("ROLLBACK").await.is_err() {
                conn = super::mysql_conn(&url).await;
            }
            stats.rollbacks += 1;
            consecutive_errors += u32::from(failed);
            assert!(
                consecutive_errors < 50,
                "writer keeps failing: {:?}",
                stats.last_error
            );
        } else {
            conn.query_drop("COMMIT").await.unwrap();
            stats.commits += 1;
            consecutive_errors = 0;
            commits.fetch_add(1, Ordering::Relaxed);
        }
        tokio::time::sleep(pause).await;
    }
    conn.disconnect().await.ok();
    stats
}

/// Some text: ASCII, quotes, multi-byte and emoji, sometimes empty.
pub fn random_text(rng: &mut Rng) -> String {
    const PIECES: &[&str] = &[
        "a", "Zz", " ", "é", "ß", "🎉", "'", "\\", "中", "x9", "-", "\t",
    ];
    let n = rng.below(12);
    (0..n)
        .map(|_| PIECES[rng.below(PIECES.len() as u64) as usize])
        .collect()
}

/// `s` as a MySQL string literal.
pub fn mysql_literal(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "''"))
}

fn random_values(rng: &mut Rng, id: u64) -> String {
    let s = if rng.chance(10) {
        "NULL".to_string()
    } else {
        mysql_literal(&random_text(rng))
    };
    let d = format!(
        "{}{}.{:03}",
        if rng.chance(30) { "-" } else { "" },
        rng.below(1_000_000_000),
        rng.below(1000)
    );
    let ts = format!(
        "'20{:02}-{:02}-{:02} {:02}:{:02}:{:02}.{:06}'",
        rng.below(40),
        rng.between(1, 12),
        rng.between(1, 28),
        rng.below(24),
        rng.below(60),
        rng.below(60),
        rng.below(1_000_000)
    );
    let b = format!("x'{:016x}'", rng.next_u64());
    let j = format!("'{{\"id\": {id}, \"k\": [{}, \"t\"]}}'", rng.below(100));
    format!("{id}, {}, {s}, {d}, {ts}, {b}, {j}", rng.next_u64() >> 12)
}

fn random_statement(rng: &mut Rng, table: &str, keys: u64) -> String {
    let id = rng.between(1, keys);
    match rng.below(20) {
        0..=7 => format!(
            "INSERT INTO `{table}` (id, v, s, d, ts, b, j) VALUES ({}) \
             ON DUPLICATE KEY UPDATE v = v + 1, s = VALUES(s), d = VALUES(d), b = VALUES(b)",
            random_values(rng, id)
        ),
        8..=13 => format!(
            "UPDATE `{table}` SET v = v + 1, s = {}, ts = ts + INTERVAL 1 SECOND \
             WHERE id BETWEEN {id} AND {}",
            mysql_literal(&random_text(rng)),
            id + rng.below(4)
        ),
        14..=17 => format!(
            "DELETE FROM `{table}` WHERE id BETWEEN {id} AND {}",
            id + rng.below(2)
        ),
        _ => format!(
            "UPDATE IGNORE `{table}` SET id = {} WHERE id = {id}",
            rng.between(1, keys)
        ),
    }
}

// ------------------------------------------------------------------------------------------
// Comparison
// ------------------------------------------------------------------------------------------

/// How a column is canonicalised on both sides.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Kind {
    /// Integers and YEAR: decimal digits.
    Int,
    /// DECIMAL(p,s): digits with s decimals.
    Decimal,
    /// FLOAT: the single value widened to double, compared as f64.
    Float,
    /// DOUBLE: compared as f64.
    Double,
    /// DATE: `YYYY-MM-DD`; zero dates are NULL.
    Date,
    /// DATETIME: `YYYY-MM-DD HH:MM:SS.ffffff`; zero dates are NULL.
    DateTime,
    /// TIMESTAMP: as DATETIME, in UTC.
    Timestamp,
    /// TIME: signed microseconds.
    Time,
    /// Character types (MariaDB JSON included): the UTF-8 text.
    Text,
    /// Binary types and geometry: upper-case hex of the bytes.
    Bytes,
    /// ENUM / SET: the labels.
    Label,
    /// BIT(n): n binary digits.
    Bit(u32),
    /// MySQL JSON: the parsed document.
    Json,
}

impl Kind {
    /// The kind of a MySQL column from information_schema `DATA_TYPE` and `COLUMN_TYPE`.
    pub fn of(data_type: &str, column_type: &str) -> Kind {
        match data_type.to_ascii_lowercase().as_str() {
            "tinyint" | "smallint" | "mediumint" | "int" | "integer" | "bigint" | "year" => {
                Kind::Int
            }
            "decimal" | "numeric" => Kind::Decimal,
            "float" => Kind::Float,
            "double" | "real" => Kind::Double,
            "date" => Kind::Date,
            "datetime" => Kind::DateTime,
            "timestamp" => Kind::Timestamp,
            "time" => Kind::Time,
            "char" | "varchar" | "tinytext" | "text" | "mediumtext" | "longtext" => Kind::Text,
            "binary" | "varbinary" | "tinyblob" | "blob" | "mediumblob" | "longblob"
            | "geometry" | "point" | "linestring" | "polygon" | "multipoint"
            | "multilinestring" | "multipolygon" | "geometrycollection" => Kind::Bytes,
            "enum" | "set" => Kind::Label,
            "bit" => Kind::Bit(
                column_type
                    .trim_start_matches("bit(")
                    .trim_end_matches(')')
                    .parse()
                    .unwrap_or(1),
            ),
            "json" => Kind::Json,
            other => panic!("no comparison form for MySQL type {other} ({column_type})"),
        }
    }

    /// The MySQL expression printing column `name` canonically.
    pub fn mysql_expr(self, name: &str) -> String {
        let c = format!("`{}`", name.replace('`', "``"));
        match self {
            Kind::Int => format!("CAST({c} + 0 AS CHAR)"),
            Kind::Decimal | Kind::Label | Kind::Json => format!("CAST({c} AS CHAR)"),
            Kind::Float => format!("CAST({c} AS DOUBLE)"),
            Kind::Double => c,
            Kind::Date => format!("DATE_FORMAT({c}, '%Y-%m-%d')"),
            Kind::DateTime | Kind::Timestamp => {
                format!("DATE_FORMAT({c}, '%Y-%m-%d %H:%i:%s.%f')")
            }
            Kind::Time => format!("CAST(TIME_TO_SEC({c}) * 1000000 AS SIGNED)"),
            Kind::Text => format!("CONVERT({c} USING utf8mb4)"),
            Kind::Bytes => format!("HEX({c})"),
            Kind::Bit(n) => format!("LPAD(BIN({c} + 0), {n}, '0')"),
        }
    }

    /// The Postgres expression printing target column `name` in the same form.
    pub fn pg_expr(self, name: &str) -> String {
        let p = pg_ident(name);
        match self {
            Kind::Int | Kind::Decimal | Kind::Label | Kind::Text | Kind::Bit(_) | Kind::Json => {
                format!("{p}::text")
            }
            Kind::Float | Kind::Double => format!("{p}::float8::text"),
            Kind::Date => format!("to_char({p}, 'YYYY-MM-DD')"),
            Kind::DateTime => format!("to_char({p}, 'YYYY-MM-DD HH24:MI:SS.US')"),
            Kind::Timestamp => {
                format!("to_char({p} AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US')")
            }
            Kind::Time => format!("round(extract(epoch from {p}) * 1000000)::bigint::text"),
            Kind::Bytes => format!("upper(encode({p}, 'hex'))"),
        }
    }

    /// Final canonical form of a printed value.
    pub fn normalize(self, value: Option<String>) -> Option<String> {
        let v = value?;
        match self {
            Kind::Float | Kind::Double => Some(match v.parse::<f64>() {
                Ok(f) => format!("{f:?}"),
                Err(_) => format!("unparsable float {v:?}"),
            }),
            // Zero dates and dates with zero parts (`2024-00-10`) cannot be stored: NULL.
            Kind::Date | Kind::DateTime | Kind::Timestamp
                if v.get(5..7) == Some("00") || v.get(8..10) == Some("00") =>
            {
                None
            }
            Kind::Json => Some(match serde_json::from_str::<serde_json::Value>(&v) {
                Ok(j) => j.to_string(),
                Err(_) => format!("invalid JSON {v:?}"),
            }),
            _ => Some(v),
        }
    }
}

/// `name` as a quoted Postgres identifier.
pub fn pg_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A source column as the comparison sees it.
#[derive(Clone, Debug)]
pub struct SourceColumn {
    /// Name (as in the source).
    pub name: String,
    /// Comparison kind.
    pub kind: Kind,
    /// information_schema COLUMN_TYPE.
    pub column_type: String,
}

/// The columns (in order) and primary key columns of `db.table` at the source.
pub async fn source_columns(
    my: &mut mysql_async::Conn,
    db: &str,
    table: &str,
) -> (Vec<SourceColumn>, Vec<String>) {
    let cols: Vec<(String, String, String)> = my
        .exec(
            "SELECT COLUMN_NAME, DATA_TYPE, COLUMN_TYPE FROM information_schema.COLUMNS \
             WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION",
            (db, table),
        )
        .await
        .unwrap_or_else(|e| panic!("columns of {db}.{table}: {e}"));
    assert!(!cols.is_empty(), "source table {db}.{table} not found");
    let key: Vec<String> = my
        .exec(
            "SELECT COLUMN_NAME FROM information_schema.KEY_COLUMN_USAGE \
             WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? AND CONSTRAINT_NAME = 'PRIMARY' \
             ORDER BY ORDINAL_POSITION",
            (db, table),
        )
        .await
        .unwrap();
    let cols = cols
        .into_iter()
        .map(|(name, data_type, column_type)| SourceColumn {
            kind: Kind::of(&data_type, &column_type),
            name,
            column_type,
        })
        .collect();
    (cols, key)
}

type Row = Vec<Option<String>>;

/// Every row of the source table, canonical, in `columns` order.
pub async fn source_rows(
    my: &mut mysql_async::Conn,
    db: &str,
    table: &str,
    columns: &[SourceColumn],
) -> Vec<Row> {
    my.query_drop("SET SESSION time_zone = '+00:00'")
        .await
        .unwrap();
    let exprs: Vec<String> = columns.iter().map(|c| c.kind.mysql_expr(&c.name)).collect();
    let sql = format!(
        "SELECT {} FROM `{db}`.`{}`",
        exprs.join(", "),
        table.replace('`', "``")
    );
    let rows: Vec<mysql_async::Row> = my
        .query(&sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    rows.into_iter()
        .map(|row| {
            columns
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    let v: Option<String> = row
                        .get_opt(i)
                        .expect("column")
                        .unwrap_or_else(|e| panic!("{db}.{table}.{}: {e}", c.name));
                    c.kind.normalize(v)
                })
                .collect()
        })
        .collect()
}

/// Every row of the target table, canonical, in `columns` order (names lowercased).
pub async fn target_rows(
    pg: &Client,
    schema: &str,
    target: &str,
    columns: &[SourceColumn],
) -> Result<Vec<Row>, String> {
    let present: HashSet<String> = pg_rows(
        pg,
        &format!(
            "SELECT column_name FROM information_schema.columns \
             WHERE table_schema = {} AND table_name = {}",
            sql_literal(schema),
            sql_literal(target)
        ),
    )
    .await?
    .into_iter()
    .filter_map(|r| r.into_iter().next().flatten())
    .collect();
    if present.is_empty() {
        return Err(format!("target table {schema}.{target} does not exist"));
    }
    let missing: Vec<&str> = columns
        .iter()
        .map(|c| c.name.as_str())
        .filter(|n| !present.contains(&n.to_lowercase()))
        .collect();
    if !missing.is_empty() {
        return Err(format!(
            "target table {schema}.{target} lacks source columns {missing:?} (has {present:?})"
        ));
    }
    let exprs: Vec<String> = columns
        .iter()
        .map(|c| c.kind.pg_expr(&c.name.to_lowercase()))
        .collect();
    let sql = format!(
        "SELECT {} FROM {}.{}",
        exprs.join(", "),
        pg_ident(schema),
        pg_ident(target)
    );
    let rows = pg_rows(pg, &sql).await?;
    Ok(rows
        .into_iter()
        .map(|row| {
            row.into_iter()
                .zip(columns)
                .map(|(v, c)| c.kind.normalize(v))
                .collect()
        })
        .collect())
}

/// A value for a diff line: NULL, or the quoted text (long values shortened).
pub fn show(v: &Option<String>) -> String {
    match v {
        None => "NULL".into(),
        Some(s) if s.chars().count() > 60 => {
            let head: String = s.chars().take(40).collect();
            format!("{head:?}…({} chars)", s.chars().count())
        }
        Some(s) => format!("{s:?}"),
    }
}

/// Compares source table `db.table` with target `schema.target` by primary key. Ok(row count)
/// when equal and no key is doubled; else a diff naming the first differing rows.
pub async fn table_diff(
    my: &mut mysql_async::Conn,
    pg: &Client,
    db: &str,
    table: &str,
    schema: &str,
    target: &str,
) -> Result<usize, String> {
    table_diff_except(my, pg, db, table, schema, target, &[]).await
}

/// As `table_diff`, leaving the source columns `skip` out of the comparison.
pub async fn table_diff_except(
    my: &mut mysql_async::Conn,
    pg: &Client,
    db: &str,
    table: &str,
    schema: &str,
    target: &str,
    skip: &[&str],
) -> Result<usize, String> {
    let (mut columns, key) = source_columns(my, db, table).await;
    columns.retain(|c| !skip.contains(&c.name.as_str()));
    assert!(
        !key.is_empty(),
        "{db}.{table} has no primary key: compare append-mode tables explicitly"
    );
    let key_idx: Vec<usize> = key
        .iter()
        .map(|k| columns.iter().position(|c| &c.name == k).unwrap())
        .collect();
    let source_data = source_rows(my, db, table, &columns).await;
    let target_data = target_rows(pg, schema, target, &columns).await?;
    diff_rows(&columns, &key_idx, source_data, target_data)
        .map_err(|d| format!("{db}.{table} -> {schema}.{target}:\n{d}"))
}

/// The diff of two row sets keyed by the columns `key_idx`.
pub fn diff_rows(
    columns: &[SourceColumn],
    key_idx: &[usize],
    source: Vec<Row>,
    target: Vec<Row>,
) -> Result<usize, String> {
    let key_of =
        |r: &Row| -> Vec<Option<String>> { key_idx.iter().map(|&i| r[i].clone()).collect() };
    let show_key = |k: &Vec<Option<String>>| -> String {
        key_idx
            .iter()
            .zip(k)
            .map(|(&i, v)| format!("{}={}", columns[i].name, show(v)))
            .collect::<Vec<_>>()
            .join(",")
    };
    let (source_len, target_len) = (source.len(), target.len());
    let src: BTreeMap<_, _> = source.into_iter().map(|r| (key_of(&r), r)).collect();
    let mut tgt: BTreeMap<Vec<Option<String>>, Row> = BTreeMap::new();
    let mut problems: Vec<String> = Vec::new();
    for r in target {
        let k = key_of(&r);
        if tgt.contains_key(&k) {
            problems.push(format!(
                "key {} appears more than once in the target",
                show_key(&k)
            ));
        }
        tgt.insert(k, r);
    }
    for (k, s) in &src {
        match tgt.get(k) {
            None => problems.push(format!(
                "missing in target: {} {{{}}}",
                show_key(k),
                columns
                    .iter()
                    .zip(s)
                    .map(|(c, v)| format!("{}={}", c.name, show(v)))
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
            Some(t) if t != s => {
                let cols: Vec<String> = columns
                    .iter()
                    .zip(s.iter().zip(t))
                    .filter(|(_, (a, b))| a != b)
                    .map(|(c, (a, b))| {
                        format!(
                            "{} ({}): source {} target {}",
                            c.name,
                            c.column_type,
                            show(a),
                            show(b)
                        )
                    })
                    .collect();
                problems.push(format!("differs at {}: {}", show_key(k), cols.join("; ")));
            }
            Some(_) => {}
        }
    }
    for k in tgt.keys().filter(|k| !src.contains_key(*k)) {
        problems.push(format!(
            "extra in target (deleted at source?): {}",
            show_key(k)
        ));
    }
    if problems.is_empty() {
        return Ok(source_len);
    }
    let mut text = format!(
        "{} problems (source {source_len} rows, target {target_len} rows); first ones:\n",
        problems.len()
    );
    for p in problems.iter().take(12) {
        writeln!(text, "  {p}").unwrap();
    }
    Err(text)
}

/// Waits until every source table in `tables` (of `db`) equals its target (same name,
/// lowercased, in `schema`). Panics with the diff if `timeout` passes or tidemark exits.
pub async fn wait_tables_equal(
    tm: &mut Tidemark,
    my: &mut mysql_async::Conn,
    wh: &Warehouse,
    db: &str,
    tables: &[&str],
    schema: &str,
    timeout: Duration,
) {
    let pairs: Vec<(&str, String)> = tables.iter().map(|t| (*t, t.to_lowercase())).collect();
    wait_equal(tm, my, wh, db, &pairs, schema, &[], timeout).await;
}

/// Waits until each source table `db.source` of `pairs` equals target `schema.target`, the
/// source columns `skip` left out. Panics with the diff if `timeout` passes or tidemark exits.
#[allow(clippy::too_many_arguments)]
pub async fn wait_equal(
    tm: &mut Tidemark,
    my: &mut mysql_async::Conn,
    wh: &Warehouse,
    db: &str,
    pairs: &[(&str, String)],
    schema: &str,
    skip: &[&str],
    timeout: Duration,
) {
    let started = Instant::now();
    let result = poll(timeout, async || {
        let mut failures = String::new();
        for (table, target) in pairs {
            if let Err(d) = table_diff_except(my, &wh.client, db, table, schema, target, skip).await
            {
                failures.push_str(&d);
            }
        }
        if failures.is_empty() {
            return Ok(());
        }
        if let Some(status) = tm.try_exit() {
            return Err(format!("tidemark exited ({status}); {failures}"));
        }
        Err(failures)
    })
    .await;
    let names: Vec<&str> = pairs.iter().map(|p| p.0).collect();
    match result {
        Ok(()) => eprintln!(
            "{names:?} equal after {:.1}s",
            started.elapsed().as_secs_f64()
        ),
        Err(diff) => panic!("target did not converge within {timeout:?}:\n{diff}"),
    }
}

/// (Re)creates database `db`, empty, on the MariaDB at `url` (a private instance) and returns
/// a connection using it.
pub async fn create_database_on(url: &str, db: &str) -> mysql_async::Conn {
    let mut admin = super::mysql_conn(url).await;
    admin
        .query_drop(format!("DROP DATABASE IF EXISTS `{db}`"))
        .await
        .unwrap();
    admin
        .query_drop(format!("CREATE DATABASE `{db}`"))
        .await
        .unwrap();
    admin.disconnect().await.ok();
    super::mysql_conn(&format!("{url}/{db}")).await
}

// ------------------------------------------------------------------------------------------
// Append mode under replay: a journal of unique rows
// ------------------------------------------------------------------------------------------

/// The key-less journal table: append mode in the target.
pub const JOURNAL_TABLE: &str = "CREATE TABLE journal (seq BIGINT NOT NULL, note VARCHAR(40))";

/// Inserts into the key-less (append-mode) table `journal`: 1-5 rows per transaction with
/// unique `seq` values, 10% rolled back. Create it first with [`JOURNAL_TABLE`].
pub struct JournalWriter {
    stop: Arc<AtomicBool>,
    handle: tokio::task::JoinHandle<()>,
}

impl JournalWriter {
    /// Starts writing to `journal` of the database at `url`.
    pub fn start(url: String, seed: u64) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = tokio::spawn(async move {
            let mut rng = Rng::new(seed);
            let mut conn = super::mysql_conn(&url).await;
            let mut seq = 0u64;
            while !flag.load(Ordering::Relaxed) {
                let rows: Vec<String> = (0..rng.between(1, 5))
                    .map(|_| {
                        seq += 1;
                        format!("({seq}, 'note {seq}')")
                    })
                    .collect();
                conn.query_drop("BEGIN").await.unwrap();
                conn.query_drop(format!("INSERT INTO journal VALUES {}", rows.join(", ")))
                    .await
                    .unwrap();
                let end = if rng.chance(10) { "ROLLBACK" } else { "COMMIT" };
                conn.query_drop(end).await.unwrap();
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
        });
        JournalWriter { stop, handle }
    }

    /// Stops after the current transaction.
    pub async fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.await.expect("journal writer panicked");
    }
}

/// Waits until the append-mode target `journal` holds each committed source row exactly once
/// (as an insert) and nothing else.
pub async fn wait_journal_equal(
    tm: &mut Tidemark,
    conn: &mut mysql_async::Conn,
    wh: &Warehouse,
    schema: &str,
) {
    let source: Vec<(u64, String)> = conn.query("SELECT seq, note FROM journal").await.unwrap();
    let result = poll(Duration::from_secs(60), async || {
        let rows = pg_rows(
            &wh.client,
            &format!("SELECT seq::text, note, _tidemark_op FROM \"{schema}\".journal"),
        )
        .await?;
        let mut counts: BTreeMap<(u64, String), Vec<String>> = BTreeMap::new();
        for r in rows {
            let seq = r[0].as_deref().unwrap_or("0").parse().unwrap_or(0);
            counts
                .entry((seq, r[1].clone().unwrap_or_default()))
                .or_default()
                .push(r[2].clone().unwrap_or_default());
        }
        let mut problems = Vec::new();
        for key in &source {
            match counts.get(key) {
                None => problems.push(format!("missing seq {}", key.0)),
                Some(ops) if ops != &["insert"] => {
                    problems.push(format!("seq {} appears as {ops:?}", key.0))
                }
                Some(_) => {}
            }
        }
        let source_keys: std::collections::HashSet<&(u64, String)> = source.iter().collect();
        for key in counts.keys().filter(|k| !source_keys.contains(k)) {
            problems.push(format!("seq {} in target only (rolled back?)", key.0));
        }
        if problems.is_empty() {
            Ok(())
        } else if let Some(status) = tm.try_exit() {
            Err(format!("tidemark exited ({status})"))
        } else {
            Err(format!(
                "{} problems in append-mode journal ({} source rows): {:?}",
                problems.len(),
                source.len(),
                &problems[..problems.len().min(12)]
            ))
        }
    })
    .await;
    if let Err(e) = result {
        panic!("journal (no primary key) after kill -9 restarts: {e}");
    }
}

// ------------------------------------------------------------------------------------------
// A Postgres proxy that loses the connection right after COMMIT succeeded
// ------------------------------------------------------------------------------------------

/// A TCP proxy in front of a Postgres server that, for the first `drops` COMMITs it sees
/// succeed (every `every`-th one), closes the client connection instead of passing on the
/// server's `CommandComplete("COMMIT")`: the transaction has landed but the client only sees a
/// broken connection.
pub struct CommitDropProxy {
    /// Port the proxy listens on (127.0.0.1).
    pub port: u16,
    dropped: Arc<AtomicU32>,
    commits: Arc<AtomicU32>,
    task: tokio::task::JoinHandle<()>,
}

impl CommitDropProxy {
    /// Starts the proxy in front of `upstream` (`host:port`).
    pub async fn start(upstream: String, every: u32, drops: u32) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let dropped = Arc::new(AtomicU32::new(0));
        let commits = Arc::new(AtomicU32::new(0));
        let (d, c) = (dropped.clone(), commits.clone());
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = tokio::net::TcpStream::connect(&upstream).await else {
                    continue;
                };
                tokio::spawn(proxy_connection(
                    client,
                    server,
                    every,
                    drops,
                    d.clone(),
                    c.clone(),
                ));
            }
        });
        CommitDropProxy {
            port,
            dropped,
            commits,
            task,
        }
    }

    /// Connections closed right after a successful COMMIT so far.
    pub fn dropped(&self) -> u32 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// COMMITs seen so far.
    pub fn commits(&self) -> u32 {
        self.commits.load(Ordering::Relaxed)
    }
}

impl Drop for CommitDropProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn proxy_connection(
    client: tokio::net::TcpStream,
    server: tokio::net::TcpStream,
    every: u32,
    drops: u32,
    dropped: Arc<AtomicU32>,
    commits: Arc<AtomicU32>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let upstream = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
        let _ = server_write.shutdown().await;
    });
    // Server -> client, message by message: type byte, i32 length (including itself), payload.
    let mut first = true;
    loop {
        let mut kind = [0u8; 1];
        if server_read.read_exact(&mut kind).await.is_err() {
            break;
        }
        if first && (kind[0] == b'N' || kind[0] == b'S') {
            // The one-byte answer to an SSLRequest.
            first = false;
            if client_write.write_all(&kind).await.is_err() {
                break;
            }
            continue;
        }
        first = false;
        let mut len = [0u8; 4];
        if server_read.read_exact(&mut len).await.is_err() {
            break;
        }
        let n = u32::from_be_bytes(len) as usize;
        let mut payload = vec![0u8; n.saturating_sub(4)];
        if server_read.read_exact(&mut payload).await.is_err() {
            break;
        }
        if kind[0] == b'C' && payload.starts_with(b"COMMIT\0") {
            let seen = commits.fetch_add(1, Ordering::Relaxed) + 1;
            if seen.is_multiple_of(every) && dropped.load(Ordering::Relaxed) < drops {
                dropped.fetch_add(1, Ordering::Relaxed);
                break;
            }
        }
        let mut message = Vec::with_capacity(5 + payload.len());
        message.extend_from_slice(&kind);
        message.extend_from_slice(&len);
        message.extend_from_slice(&payload);
        if client_write.write_all(&message).await.is_err() {
            break;
        }
    }
    upstream.abort();
}
