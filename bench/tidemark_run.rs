//! The shipped `tidemark` binary run as a child process against the private bench warehouse:
//! what the benchmarks that time `tidemark run` end to end share (`pipeline_e2e`,
//! `snapshot_load`). The binary, its work directory (configs, logs, state), starting and stopping
//! it, its peak RSS, fresh warehouse databases, and the hand-written reference pipelines the
//! runs are held against.
//!
//! Included with `mod tidemark_run;` (beside `mod workload;` and `mod workload_pg;`) by each of
//! those benchmarks, which uses part of it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use tokio_postgres::Client;

use crate::workload;
use crate::workload_pg::{pg_connect, pg_error, psql};

/// The `tidemark` binary a benchmark measures and the directory its runs work in.
pub struct Bin {
    /// `TIDEMARK_BENCH_BIN`, else the one cargo built for the benchmark
    /// (`target/release/tidemark`).
    pub path: PathBuf,
    /// Configs, logs and state of the runs: `CARGO_TARGET_TMPDIR/{bench}`.
    pub work: PathBuf,
}

impl Bin {
    /// The binary to measure, checked to have a working `run` command (else the benchmark says
    /// so and exits 1), and `bench`'s work directory, created.
    pub fn from_env(bench: &str) -> Bin {
        let path = std::env::var_os("TIDEMARK_BENCH_BIN").map_or_else(
            || PathBuf::from(env!("CARGO_BIN_EXE_tidemark")),
            PathBuf::from,
        );
        let help = Command::new(&path)
            .args(["run", "--help"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if !help.is_ok_and(|s| s.success()) {
            eprintln!(
                "{bench}: {} has no working `run` command; nothing to measure",
                path.display()
            );
            std::process::exit(1);
        }
        let work = Path::new(env!("CARGO_TARGET_TMPDIR")).join(bench);
        std::fs::create_dir_all(&work).expect("creating the benchmark's work directory");
        Bin { path, work }
    }
}

/// The warehouse's Postgres server: `TIDEMARK_BENCH_PG_URL`, else the private `bench` instance
/// (started if needed).
pub fn warehouse_server_url() -> String {
    std::env::var("TIDEMARK_BENCH_PG_URL")
        .unwrap_or_else(|_| workload::instance_url("postgres-instance.sh", "bench", "postgres://"))
}

/// Drops and creates database `db` on the server of `server_url` (a `postgres://.../DATABASE`
/// URL); returns a client connected to it.
pub async fn fresh_database(server_url: &str, db: &str) -> Client {
    let admin = pg_connect(server_url).await;
    // Two statements: DROP DATABASE cannot run inside the implicit transaction of a
    // multi-statement query.
    for sql in [
        format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"),
        format!("CREATE DATABASE {db}"),
    ] {
        admin
            .batch_execute(&sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {}", pg_error(&e)));
    }
    pg_connect(&crate::workload_pg::db_url(server_url, db)).await
}

/// Drops database `db` on the server of `server_url`, if it is there.
pub async fn drop_database(server_url: &str, db: &str) {
    let sql = format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)");
    pg_connect(server_url)
        .await
        .batch_execute(&sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {}", pg_error(&e)));
}

/// Column names and types of a table, in order.
pub async fn table_shape(client: &Client, schema: &str, table: &str) -> Vec<(String, String)> {
    client
        .query(
            "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod)
             FROM pg_attribute a
             WHERE a.attrelid = ($1 || '.' || $2)::regclass AND a.attnum > 0 AND NOT a.attisdropped
             ORDER BY a.attnum",
            &[&schema, &table],
        )
        .await
        .unwrap_or_else(|e| panic!("reading a table's columns: {}", pg_error(&e)))
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

/// A running `tidemark run`.
pub struct Tidemark {
    child: Child,
    log: PathBuf,
    /// When the process was spawned.
    pub started: Instant,
}

impl Tidemark {
    /// Spawns `tidemark run --config CONFIG`, its stdout and stderr into `{name}.log` in the
    /// work directory. The environment passes on (`RUST_LOG` included).
    pub fn start(bin: &Bin, config: &Path, name: &str) -> Tidemark {
        Tidemark::start_with_env(bin, config, name, &[])
    }

    /// [`Tidemark::start`] with `envs` added to the environment (the Redshift path's AWS
    /// settings).
    pub fn start_with_env(bin: &Bin, config: &Path, name: &str, envs: &[(&str, &str)]) -> Tidemark {
        let log = bin.work.join(format!("{name}.log"));
        let file = std::fs::File::create(&log).expect("creating the tidemark log");
        let started = Instant::now();
        let child = Command::new(&bin.path)
            .arg("run")
            .arg("--config")
            .arg(config)
            .envs(envs.iter().copied())
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("cloning the log file"))
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", bin.path.display()));
        Tidemark {
            child,
            log,
            started,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The log file.
    pub fn log(&self) -> &Path {
        &self.log
    }

    /// Panics with the log's tail if the process has exited.
    pub fn assert_alive(&mut self) {
        if let Some(status) = self.child.try_wait().expect("polling tidemark") {
            panic!(
                "tidemark exited early ({status}); last lines of {}:\n{}",
                self.log.display(),
                self.log_tail()
            );
        }
    }

    /// The log's last 30 lines.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Peak RSS (`VmHWM`) in MB.
    pub fn peak_rss_mb(&self) -> f64 {
        workload::vm_hwm_kb(Some(self.pid())).unwrap_or(0) as f64 / 1024.0
    }

    /// Current RSS (`VmRSS`) in MB.
    pub fn rss_mb(&self) -> f64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("VmRSS:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            })
            .unwrap_or(0.0)
            / 1024.0
    }

    /// SIGTERM, then waits (at most 60 s, then SIGKILL); panics unless it exited 0.
    pub fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(60);
        let status: ExitStatus = loop {
            if let Some(status) = self.child.try_wait().expect("waiting for tidemark") {
                break status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "tidemark did not exit within 60 s of SIGTERM; log {}:\n{}",
                    self.log.display(),
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(
            status.success(),
            "tidemark exited with {status} after SIGTERM; last lines of {}:\n{}",
            self.log.display(),
            self.log_tail()
        );
    }
}

impl Drop for Tidemark {
    /// A run the benchmark did not stop (it panicked on the way) is killed, so no `tidemark`
    /// outlives the benchmark.
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A reference pipeline's timed part: `select` (`what`), which writes rows to its stdout, piped
/// into `psql` with `load_args` (after `-X -q`), which loads them; seconds from spawning `select`
/// until psql exits. `psql_env` is set for the loading psql. Panics unless both succeed.
pub fn timed_pipe(
    mut select: Command,
    what: &str,
    load_args: &[&std::ffi::OsStr],
    psql_env: &[(&str, &str)],
) -> f64 {
    let started = Instant::now();
    let mut select = select
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {what}: {e}"));
    let rows = select.stdout.take().expect("piped stdout");
    let load = Command::new(psql())
        .args(["-X", "-q"])
        .args(load_args)
        .envs(psql_env.iter().copied())
        .stdin(rows)
        .stdout(Stdio::null())
        .status()
        .expect("starting psql");
    let selected = select
        .wait()
        .unwrap_or_else(|e| panic!("waiting for {what}: {e}"));
    let secs = started.elapsed().as_secs_f64();
    assert!(selected.success(), "{what} failed: {selected}");
    assert!(load.success(), "the loading psql failed: {load}");
    secs
}

/// `PASS` or `MISS`, as the targets' lines end.
pub fn verdict(ok: bool) -> &'static str {
    if ok { "PASS" } else { "MISS" }
}
