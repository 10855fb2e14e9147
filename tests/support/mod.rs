//! Shared support for integration tests: where the test servers are and how
//! to get a private corner of them.
//!
//! Every `tests/*.rs` file starts with `mod support;`. The servers are real
//! (MariaDB, PostgreSQL, an S3-compatible moto server) and private: started on
//! free loopback ports by `scripts/dev-services.sh` under the state dir
//! (`$TIDEMARK_DEV_DIR`, default `<repo>/.dev`), never the machine's system
//! instances. `scripts/test.sh` starts them and exports their URLs; a test run
//! by hand (`cargo nextest run`) finds them through `<state>/env`, or starts
//! them itself (the scripts' locks make concurrent test processes safe).
//!
//! Guarantees: URLs returned here point at servers that were accepting
//! connections when first resolved; database names handed out are unique
//! across concurrently running test processes.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use mysql_async::prelude::Queryable;

pub mod background;
pub mod commit_proxy;
pub mod compare;
pub mod config;
pub mod fleet;
pub mod ids;
pub mod journal;
pub mod mysql_pipeline;
pub mod pg_source;
pub mod pipeline;
pub mod poll;
pub mod process;
pub mod redshift;
pub mod redshift_path;
pub mod snapshot;
pub mod tcp_proxy;
pub mod type_matrix;
pub mod warehouse;
pub mod writer;

/// Access key id the test S3 server accepts (moto accepts any).
pub const S3_ACCESS_KEY_ID: &str = "testing";
/// Secret access key the test S3 server accepts (moto accepts any).
pub const S3_SECRET_ACCESS_KEY: &str = "testing";
/// Region to sign test S3 requests for.
pub const S3_REGION: &str = "us-east-1";

/// The repository root (where `scripts/` lives).
pub fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A real MySQL 8 / MariaDB binlog file from the shared fixtures (`shared/fixtures/
/// mysql8-binlogs`, read-only, never copied into the repo). Looked up in
/// `$TIDEMARK_FIXTURES_DIR`, then in a `shared/` beside this checkout or any of its ancestors,
/// then in `/work/shared`; a missing fixture fails the test, it never skips it.
pub fn mysql8_fixture(name: &str) -> PathBuf {
    const SUBDIR: &str = "shared/fixtures/mysql8-binlogs";
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(dir) = std::env::var_os("TIDEMARK_FIXTURES_DIR") {
        candidates.push(PathBuf::from(dir));
    }
    candidates.extend(repo_root().ancestors().skip(1).map(|a| a.join(SUBDIR)));
    candidates.push(Path::new("/work").join(SUBDIR));
    match candidates.iter().find(|dir| dir.join(name).is_file()) {
        Some(dir) => dir.join(name),
        None => panic!(
            "fixture {name} not found in any of {candidates:?}; set TIDEMARK_FIXTURES_DIR to the mysql8-binlogs folder"
        ),
    }
}

/// Every message of the binlog fixture `name`, decoded as replication decodes a live stream
/// (column names required, full row images, GTIDs seeded from the file).
pub fn mysql8_fixture_messages(name: &str) -> Vec<tidemark::event::SourceMessage> {
    use tidemark::source::mysql::assemble::{AssemblerOptions, GtidTracker};
    use tidemark::source::mysql::file::read_binlog_file;
    use tidemark::source::mysql::layout::ColumnNames;
    let options = AssemblerOptions {
        names: ColumnNames::Required,
        seed_gtids_from_log: true,
        allow_partial_images: false,
    };
    let mut messages = Vec::new();
    read_binlog_file(
        &mysql8_fixture(name),
        options,
        GtidTracker::Unknown,
        |message| {
            messages.push(message);
            Ok(())
        },
    )
    .unwrap_or_else(|e| panic!("{name}: {e}"));
    messages
}

/// The end of the row image starting at `at` in a rows buffer of `json.binlog.000001`'s table
/// `(id INT, json_col JSON, name VARCHAR(100), age INT)` with no NULLs, holding the columns
/// whose `present` bit is set: null bitmap, INT, 4-byte length + JSON, 2-byte length + text
/// (VARCHAR(100) utf8mb4 is up to 400 bytes), INT. Used to rewrite that fixture's events.
pub fn json_table_image_end(buf: &[u8], at: usize, present: [bool; 4]) -> usize {
    assert_eq!(buf[at], 0, "no NULLs in the fixture's images");
    let mut p = at + 1;
    if present[0] {
        p += 4;
    }
    if present[1] {
        p += 4 + u32::from_le_bytes(buf[p..p + 4].try_into().unwrap()) as usize;
    }
    if present[2] {
        p += 2 + usize::from(u16::from_le_bytes([buf[p], buf[p + 1]]));
    }
    if present[3] {
        p += 4;
    }
    p
}

/// The dev-services state dir: `$TIDEMARK_DEV_DIR`, else `<repo>/.dev`.
pub fn state_dir() -> PathBuf {
    match std::env::var_os("TIDEMARK_DEV_DIR") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => repo_root().join(".dev"),
    }
}

/// URL of the shared private MariaDB, without a database: `mysql://root@127.0.0.1:PORT`.
pub fn mysql_url() -> String {
    service_url("TIDEMARK_TEST_MYSQL_URL")
}

/// URL of the shared private PostgreSQL: `postgres://postgres@127.0.0.1:PORT/postgres`.
pub fn pg_url() -> String {
    service_url("TIDEMARK_TEST_PG_URL")
}

/// Endpoint of the shared S3-compatible server (path-style): `http://127.0.0.1:PORT`.
pub fn s3_url() -> String {
    service_url("TIDEMARK_TEST_S3_URL")
}

/// `mysql_url()` with `db` as the default database.
pub fn mysql_url_for(db: &str) -> String {
    format!("{}/{db}", strip_path(&mysql_url()))
}

/// Starts a private MariaDB for this test with extra mariadbd options (e.g.
/// `--binlog-format=STATEMENT`); see [`PrivateServer`] for its name and lifetime.
pub fn mariadb_instance(hint: &str, extra_args: &[&str]) -> PrivateServer {
    PrivateServer::start("mariadb", hint, extra_args)
}

/// Starts a private PostgreSQL for this test with extra server options (e.g.
/// `-c max_replication_slots=2`); see [`PrivateServer`] for its name and lifetime.
pub fn postgres_instance(hint: &str, extra_args: &[&str]) -> PrivateServer {
    PrivateServer::start("postgres", hint, extra_args)
}

/// A private server of one test: dropping it stops the server and deletes its data, also
/// when the test panics.
///
/// Every guard gets an instance of its own, named `t<pid>_<n>_<hint>` like the databases of
/// [`fresh_mysql_database`]. nextest runs each test in its own process, in parallel, and
/// these tests stop, restart or misconfigure their server, so a shared instance would go down
/// or change under another test; a fresh one starts in about a second. A test process killed
/// before its guards drop (a timeout, Ctrl-C) leaves its instances behind: the next guard made
/// on the same state dir removes those of processes that no longer exist, and `scripts/test.sh`
/// removes every instance when it ends.
pub struct PrivateServer {
    /// `mariadb` or `postgres`: the script is `scripts/<kind>-instance.sh`.
    kind: &'static str,
    name: String,
    args: Vec<String>,
    url: String,
}

impl PrivateServer {
    /// Removes the instances dead test processes left, then starts a new one.
    fn start(kind: &'static str, hint: &str, extra_args: &[&str]) -> Self {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        remove_instances_of_dead_processes(kind);
        let name = unique_name(hint, COUNTER.fetch_add(1, Ordering::Relaxed));
        let args: Vec<String> = extra_args.iter().map(|a| a.to_string()).collect();
        let url = run_instance_script(kind, &[&[name.as_str()][..], extra_args].concat())
            .unwrap_or_else(|e| panic!("{e}"));
        PrivateServer {
            kind,
            name,
            args,
            url,
        }
    }

    /// The URL the instance script printed, e.g. `mysql://root@127.0.0.1:PORT`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The instance's directory under the state dir (data, log, port; see docs/testing.md).
    pub fn dir(&self) -> PathBuf {
        state_dir().join(self.kind).join(&self.name)
    }

    /// Stops the server and keeps its data and port, for tests of a server going away.
    pub fn stop(&self) {
        run_instance_script(self.kind, &["--stop", &self.name]).unwrap_or_else(|e| panic!("{e}"));
    }

    /// Starts the stopped server again on its data with the same options and returns its URL
    /// (the same as [`Self::url`] while nothing else took the port meanwhile).
    pub fn start_again(&self) -> String {
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        run_instance_script(self.kind, &[&[self.name.as_str()][..], &args].concat())
            .unwrap_or_else(|e| panic!("{e}"))
    }
}

impl Drop for PrivateServer {
    fn drop(&mut self) {
        if let Err(e) = run_instance_script(self.kind, &["--remove", &self.name]) {
            // A second panic while unwinding would abort and hide the test's own failure.
            if std::thread::panicking() {
                eprintln!("{e}");
            } else {
                panic!("{e}");
            }
        }
    }
}

/// Removes the `kind` instances named by [`unique_name`] for test processes that no longer
/// exist: they were killed before their [`PrivateServer`] could drop.
fn remove_instances_of_dead_processes(kind: &str) {
    let Ok(entries) = std::fs::read_dir(state_dir().join(kind)) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if entry.path().is_dir() && made_by_dead_process(&name) {
            // Best effort: a failure here belongs to no test, and test.sh cleans up anyway.
            if let Err(e) = run_instance_script(kind, &["--remove", &name]) {
                eprintln!("removing instance {name} of a dead test process: {e}");
            }
        }
    }
}

/// Creates an empty database with a unique name built from `hint` and returns
/// a connection using it as the default database, plus its name.
pub async fn fresh_mysql_database(hint: &str) -> (mysql_async::Conn, String) {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let db = unique_name(hint, COUNTER.fetch_add(1, Ordering::Relaxed));
    let mut admin = mysql_conn(&mysql_url()).await;
    drop_databases_of_dead_processes(&mut admin).await;
    admin
        .query_drop(format!("CREATE DATABASE `{db}`"))
        .await
        .unwrap_or_else(|e| panic!("CREATE DATABASE {db} on {}: {e}", mysql_url()));
    admin.disconnect().await.ok();
    (mysql_conn(&mysql_url_for(&db)).await, db)
}

/// Opens a MariaDB connection to `url`, panicking with the URL on failure.
pub async fn mysql_conn(url: &str) -> mysql_async::Conn {
    mysql_async::Conn::from_url(url)
        .await
        .unwrap_or_else(|e| panic!("connecting to {url}: {e}"))
}

/// Name `t<pid>_<n>_<hint>` for a database or a private instance: a valid unquoted identifier
/// and instance name of at most 64 characters, unique per process and `n`.
fn unique_name(hint: &str, n: usize) -> String {
    name_with_hint(&format!("t{}_{n}_", std::process::id()), hint, 64)
}

/// `prefix` (kept as is) followed by `hint` lowercased, every character but ASCII letters and
/// digits made `_`, cut to `max_len` characters in all.
pub fn name_with_hint(prefix: &str, hint: &str, max_len: usize) -> String {
    let hint: String = hint
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .take(max_len - prefix.len())
        .collect();
    format!("{prefix}{hint}")
}

/// Once per process, drops databases made by `fresh_mysql_database` in test
/// processes that no longer exist, so the long-lived dev server stays small.
async fn drop_databases_of_dead_processes(conn: &mut mysql_async::Conn) {
    static DONE: OnceLock<()> = OnceLock::new();
    if DONE.set(()).is_err() {
        return;
    }
    let names: Vec<String> = conn.query("SHOW DATABASES").await.unwrap_or_default();
    for name in names.iter().filter(|name| made_by_dead_process(name)) {
        conn.query_drop(format!("DROP DATABASE IF EXISTS `{name}`"))
            .await
            .ok();
    }
}

/// True if `name` comes from [`unique_name`] in a process other than this one that no
/// longer exists.
fn made_by_dead_process(name: &str) -> bool {
    name.strip_prefix('t')
        .and_then(|rest| rest.split('_').next())
        .and_then(|pid| pid.parse::<u32>().ok())
        .is_some_and(|pid| {
            pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists()
        })
}

/// `url` without its path, e.g. `mysql://root@127.0.0.1:3306/db` -> `mysql://root@127.0.0.1:3306`.
fn strip_path(url: &str) -> &str {
    let authority_start = url.find("://").map_or(0, |i| i + 3);
    match url[authority_start..].find(['/', '?']) {
        Some(i) => &url[..authority_start + i],
        None => url,
    }
}

/// The value of `var`: from the environment, else from `<state>/env` when its
/// servers answer, else after running `scripts/dev-services.sh start`.
fn service_url(var: &str) -> String {
    if let Ok(url) = std::env::var(var)
        && !url.is_empty()
    {
        return url;
    }
    services()
        .get(var)
        .cloned()
        .unwrap_or_else(|| panic!("{var} missing from {}", env_file().display()))
}

/// The `<state>/env` file written by `scripts/dev-services.sh start`.
fn env_file() -> PathBuf {
    state_dir().join("env")
}

/// The variables of `<state>/env`, (re)starting the services first if the
/// file is missing or names servers that do not answer. Resolved once per process.
fn services() -> &'static HashMap<String, String> {
    static SERVICES: OnceLock<HashMap<String, String>> = OnceLock::new();
    SERVICES.get_or_init(|| {
        if let Some(vars) = read_env_file().filter(all_reachable) {
            return vars;
        }
        let status = Command::new(repo_root().join("scripts/dev-services.sh"))
            .arg("start")
            .stdout(std::process::Stdio::null())
            .status()
            .unwrap_or_else(|e| panic!("running scripts/dev-services.sh start: {e}"));
        assert!(
            status.success(),
            "scripts/dev-services.sh start failed ({status}); see its messages above"
        );
        read_env_file().unwrap_or_else(|| {
            panic!(
                "{} missing after dev-services.sh start",
                env_file().display()
            )
        })
    })
}

/// Parses the `export NAME=value` lines of `<state>/env`, if the file exists.
fn read_env_file() -> Option<HashMap<String, String>> {
    let text = std::fs::read_to_string(env_file()).ok()?;
    Some(
        text.lines()
            .filter_map(|line| line.strip_prefix("export "))
            .filter_map(|line| line.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    )
}

/// True if every `TIDEMARK_TEST_*_URL` in `vars` accepts a TCP connection.
fn all_reachable(vars: &HashMap<String, String>) -> bool {
    [
        "TIDEMARK_TEST_MYSQL_URL",
        "TIDEMARK_TEST_PG_URL",
        "TIDEMARK_TEST_S3_URL",
    ]
    .iter()
    .all(|var| vars.get(*var).is_some_and(|url| accepts_tcp(url)))
}

/// True if the `host:port` of `url` accepts a TCP connection within a second.
pub fn accepts_tcp(url: &str) -> bool {
    let without_path = strip_path(url);
    let authority = without_path.split("://").nth(1).unwrap_or(without_path);
    let host_port = authority.rsplit('@').next().unwrap_or(authority);
    host_port
        .parse::<SocketAddr>()
        .is_ok_and(|addr| TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok())
}

/// Runs `scripts/<kind>-instance.sh args...` on the state dir and returns what it printed (a
/// URL, or nothing for `--stop` and `--remove`), or an error with the script's messages.
fn run_instance_script(kind: &str, args: &[&str]) -> Result<String, String> {
    let script = format!("{kind}-instance.sh");
    let path = repo_root().join("scripts").join(&script);
    let out = Command::new(&path)
        .args(args)
        .env("TIDEMARK_DEV_DIR", state_dir())
        .output()
        .map_err(|e| format!("running {}: {e}", path.display()))?;
    if !out.status.success() {
        return Err(format!(
            "{script} {args:?} failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The test CA that signed every dev server's certificate (`<state>/tls/ca.pem`, made by the
/// dev-services scripts; `TIDEMARK_TEST_CA_FILE` in `.dev/env`).
pub fn test_ca_file() -> PathBuf {
    let _ = pg_url(); // starts the services, and so makes the CA, if needed
    state_dir().join("tls").join("ca.pem")
}
