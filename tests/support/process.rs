//! The `tidemark run` process of an end-to-end test: started from a config in a temp dir, logs
//! captured to files per run, restartable, SIGTERM / kill -9 on demand; dropping it kills the
//! process, and a panicking test prints its logs and keeps the dir.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::config::GroupConfig;

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
    /// Extra environment variables (`FAILPOINTS`, ...).
    pub extra_env: Vec<(String, String)>,
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
            extra_env: Vec::new(),
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
            // The Redshift path's AWS clients (test servers accept any credentials); never the
            // instance metadata service, which would stall them when nothing answers it.
            .env("AWS_ACCESS_KEY_ID", super::S3_ACCESS_KEY_ID)
            .env("AWS_SECRET_ACCESS_KEY", super::S3_SECRET_ACCESS_KEY)
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .envs(self.extra_env.iter().map(|(k, v)| (k, v)))
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
