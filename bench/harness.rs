//! The parent and child halves the decode benchmarks share (`binlog_decode`, `pgoutput_decode`).
//!
//! The parent times the other reader and this binary re-executed as a child (`--child ...`)
//! alternately, prints every run, then the best of each side, the throughput ratio and the
//! child's peak RSS against the targets. The child reads its range with tidemark's reader into
//! a [`Tally`] and prints one `key=value` report line, which the parent parses. Each
//! benchmark keeps only how to start each side and what its range is.
//!
//! Included with `mod harness;` (beside `mod workload;`) by each decode benchmark.

use std::ffi::OsStr;
use std::fmt::Display;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tidemark::config::Config;
use tidemark::event::{Op, ResumePoint, SourceMessage};
use tidemark::fleet::run_group;
use tidemark::sink::null::NullSink;
use tidemark::sink::{Batch, Sink};
use tidemark::source::Source;

/// Runs `child` with the arguments after `--child` when the binary was re-executed as the
/// child, else `parent`.
pub fn dispatch(child: fn(&[String]), parent: fn()) {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--child") {
        child(&args[1..]);
    } else {
        // `cargo bench` passes `--bench` (and maybe a filter); there is nothing to select.
        parent();
    }
}

/// What one timed run measured.
#[derive(Debug, Clone, Copy)]
pub struct Run {
    /// Row changes the side delivered.
    pub changes: u64,
    /// Seconds from spawn to exit.
    pub secs: f64,
    /// The child's peak RSS (0 for the other reader, which is not measured).
    pub rss_mb: f64,
}

impl Run {
    /// Row changes per second.
    fn rate(&self) -> f64 {
        self.changes as f64 / self.secs
    }
}

/// `TIDEMARK_BENCH_REPS`: timed runs per side (default 5, at least 1).
pub fn reps_from_env() -> usize {
    std::env::var("TIDEMARK_BENCH_REPS")
        .ok()
        .map(|v| {
            v.parse()
                .expect("TIDEMARK_BENCH_REPS must be a positive integer")
        })
        .unwrap_or(5)
        .max(1)
}

/// How a benchmark's output names its sides and units, and the targets it is held to.
pub struct Report {
    /// The other reader, as the output lines name it (`mariadb-binlog`).
    pub theirs: &'static str,
    /// What a run counts (`events`).
    pub unit: &'static str,
    /// The rate's unit in the per-run lines (`ev/s`).
    pub run_rate: &'static str,
    /// The rate's unit in the result lines (`events/s`).
    pub result_rate: &'static str,
    /// tidemark's rate must be at least this multiple of the other reader's.
    pub ratio_target: f64,
    /// Decimals the ratio target is printed with (the benchmarks' documented output differs).
    pub ratio_decimals: usize,
    /// The child's peak RSS must stay at or below this, when there is a target.
    pub rss_target_mb: Option<f64>,
}

impl Report {
    /// Times both sides alternately `reps` times (the other reader first), printing each run,
    /// then prints the result block; returns the best (shortest) run of each side, theirs
    /// first, for the benchmark's own checks.
    pub fn compare(
        &self,
        reps: usize,
        mut theirs: impl FnMut() -> Run,
        mut ours: impl FnMut() -> Run,
    ) -> (Run, Run) {
        let mut their_runs = Vec::new();
        let mut our_runs = Vec::new();
        for rep in 1..=reps {
            let m = theirs();
            println!(
                "  run {rep}/{reps}: {:<14} {:>9} {} {:>7.2} s {:>10.0} {}",
                self.theirs,
                m.changes,
                self.unit,
                m.secs,
                m.rate(),
                self.run_rate
            );
            their_runs.push(m);
            let t = ours();
            println!(
                "  run {rep}/{reps}: {:<14} {:>9} {} {:>7.2} s {:>10.0} {}  peak RSS {:.1} MB",
                "tidemark",
                t.changes,
                self.unit,
                t.secs,
                t.rate(),
                self.run_rate,
                t.rss_mb
            );
            our_runs.push(t);
        }

        // A shared machine only ever adds time, so each side's shortest run counts.
        let best = |runs: &[Run]| {
            *runs
                .iter()
                .min_by(|a, b| a.secs.total_cmp(&b.secs))
                .expect("at least one run")
        };
        let (m, t) = (best(&their_runs), best(&our_runs));
        let peak_rss = our_runs.iter().map(|r| r.rss_mb).fold(0.0, f64::max);
        let ratio = t.rate() / m.rate();
        println!();
        println!("result (best of {reps} per side; peak RSS is the max over tidemark runs):");
        for (name, run) in [(self.theirs, m), ("tidemark", t)] {
            println!(
                "  {:<15} {:>9} {} {:>7.2} s {:>10.0} {}",
                format!("{name}:"),
                run.changes,
                self.unit,
                run.secs,
                run.rate(),
                self.result_rate
            );
        }
        println!(
            "  ratio tidemark/{}: {ratio:.2}x  (target >= {:.*}x) {}",
            self.theirs,
            self.ratio_decimals,
            self.ratio_target,
            verdict(ratio >= self.ratio_target)
        );
        match self.rss_target_mb {
            Some(target) => println!(
                "  tidemark peak RSS: {peak_rss:.1} MB  (target <= {target:.0} MB) {}",
                verdict(peak_rss <= target)
            ),
            None => println!("  tidemark peak RSS: {peak_rss:.1} MB"),
        }
        (m, t)
    }
}

/// `PASS` or `MISS`, as the targets' lines end.
fn verdict(ok: bool) -> &'static str {
    if ok { "PASS" } else { "MISS" }
}

/// Side (a): runs the other reader's `cmd` once with its output discarded, timed from spawn to
/// exit; `changes` is what its untimed check run counted.
pub fn timed_command(mut cmd: Command, changes: u64) -> Run {
    let started = Instant::now();
    let status = cmd
        .stdout(Stdio::null())
        .status()
        .unwrap_or_else(|e| panic!("starting {cmd:?}: {e}"));
    let secs = started.elapsed().as_secs_f64();
    assert!(status.success(), "{cmd:?} failed: {status}");
    Run {
        changes,
        secs,
        rss_mb: 0.0,
    }
}

/// Side (b): this binary in child mode (`--child ARGS...`), timed from spawn to exit; it
/// reports its own counts and peak RSS on stdout as `key=value` pairs.
pub fn timed_child<I, S>(args: I) -> Run
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let exe = std::env::current_exe().expect("locating the benchmark executable");
    let started = Instant::now();
    let out = Command::new(exe)
        .arg("--child")
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .expect("starting the tidemark child process");
    let secs = started.elapsed().as_secs_f64();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "tidemark child failed ({}); it printed: {report}",
        out.status
    );
    let field = |key: &str| -> f64 {
        report
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("child report lacks {key}: {report}"))
    };
    Run {
        changes: field("changes") as u64,
        secs,
        rss_mb: field("vm_hwm_kb") / 1024.0,
    }
}

/// The child's arguments: the `N` it requires, then an optional `MAX_CHANGES` (to profile a
/// shorter run; unlimited when absent). Panics with `usage` when they do not fit.
pub fn child_args<'a, const N: usize>(args: &'a [String], usage: &str) -> ([&'a str; N], u64) {
    if args.len() < N {
        panic!("{usage}");
    }
    let (required, rest) = args.split_at(N);
    let limit = match rest {
        [] => u64::MAX,
        [n] => n.parse().unwrap_or_else(|_| panic!("{usage}")),
        _ => panic!("{usage}"),
    };
    (std::array::from_fn(|i| required[i].as_str()), limit)
}

/// Counts the messages a reader hands out and drops them: the end of the line for the decode
/// benchmarks, which measure the reader alone (no batching, no sink; `tidemark::sink::null` is
/// the null warehouse the pipeline loads into).
#[derive(Debug, Default)]
pub struct Tally {
    insert: u64,
    update: u64,
    delete: u64,
    transactions: u64,
}

impl Tally {
    /// Row changes counted so far.
    pub fn changes(&self) -> u64 {
        self.insert + self.update + self.delete
    }

    /// Takes a batch; returns the resume point of the last commit in it, if any.
    fn accept(&mut self, batch: &mut Vec<SourceMessage>) -> Option<ResumePoint> {
        let mut committed = None;
        for message in batch.drain(..) {
            match message {
                SourceMessage::Change(change) => match change.op {
                    Op::Insert => self.insert += 1,
                    Op::Update => self.update += 1,
                    Op::Delete => self.delete += 1,
                    Op::Truncate | Op::Read => {}
                },
                SourceMessage::Commit(point) => {
                    self.transactions += 1;
                    committed = Some(point);
                }
                _ => {}
            }
        }
        committed
    }
}

/// Child mode's body: runs `read` on a current-thread runtime, timed, then prints the report
/// line the parent parses:
/// `changes=N insert=N update=N delete=N transactions=N secs=S vm_hwm_kb=K`.
pub fn report_child(read: impl Future<Output = Tally>) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("starting the tokio runtime");
    let started = Instant::now();
    let sink = runtime.block_on(read);
    let secs = started.elapsed().as_secs_f64();
    drop(runtime);
    println!(
        "changes={} insert={} update={} delete={} transactions={} secs={secs:.3} vm_hwm_kb={}",
        sink.changes(),
        sink.insert,
        sink.update,
        sink.delete,
        sink.transactions,
        crate::workload::vm_hwm_kb(None).expect("VmHWM in /proc/self/status")
    );
}

/// Side (c), in the child: `tidemark run`'s whole pipeline for the config's one source (checks,
/// reader, router, batcher, loader) into the null warehouse (`[warehouse] kind = "null"`),
/// started at `start` by recording it as the source's progress first, and stopped (SIGTERM's
/// path: the batch in flight loads) once the progress satisfies `done`. Prints the report line;
/// its changes are those the null sink discarded. A multi-threaded runtime, as `tidemark run`.
pub fn report_pipeline_child(
    config: Config,
    start: ResumePoint,
    done: impl Fn(&ResumePoint) -> bool,
) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("starting the tokio runtime");
    let source_id = config.sources[0].id.clone();
    let started = Instant::now();
    let sink = runtime.block_on(async move {
        let mut sink = NullSink::process_wide();
        let mut first = Batch::position_only(source_id.as_str().into(), start);
        sink.apply(&mut first).await.expect("recording the start");
        let (stop, shutdown) = tokio::sync::watch::channel(false);
        // No reloads: the sender is dropped at once.
        let (_, reloads) = tokio::sync::mpsc::unbounded_channel();
        let group = tokio::spawn(async move { run_group(config, shutdown, reloads).await });
        loop {
            let record = sink.read_progress(&source_id).await.expect("null progress");
            if record.is_some_and(|r| done(&r.progress.resume_point)) {
                break;
            }
            assert!(
                !group.is_finished(),
                "the pipeline stopped before the end: {:?}",
                group.await
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let _ = stop.send(true);
        group
            .await
            .expect("the pipeline task")
            .unwrap_or_else(|e| panic!("the pipeline failed: {e}"));
        sink
    });
    let secs = started.elapsed().as_secs_f64();
    drop(runtime);
    println!(
        "changes={} batches={} secs={secs:.3} vm_hwm_kb={}",
        sink.changes(),
        sink.batches(),
        crate::workload::vm_hwm_kb(None).expect("VmHWM in /proc/self/status")
    );
}

/// Times side (c) `reps` times (this binary as a child with `args`) and prints its runs and
/// its best against `reference`, the other reader's best run: what the pipeline adds to the
/// reader, without a warehouse. Informational: no target.
pub fn compare_pipeline<S: AsRef<OsStr> + Clone>(
    reps: usize,
    args: &[S],
    theirs: &str,
    reference: Run,
    unit: &str,
) {
    println!();
    println!(
        "pipeline into the null warehouse (tidemark run's read, route, batch and load steps; rows encoded as one byte):"
    );
    let mut runs = Vec::new();
    for rep in 1..=reps {
        let run = timed_child(args.iter().cloned());
        println!(
            "  run {rep}/{reps}: {:<14} {:>9} {unit} {:>7.2} s {:>10.0} /s  peak RSS {:.1} MB",
            "tidemark run",
            run.changes,
            run.secs,
            run.rate(),
            run.rss_mb
        );
        runs.push(run);
    }
    let best = *runs
        .iter()
        .min_by(|a, b| a.secs.total_cmp(&b.secs))
        .expect("at least one run");
    println!(
        "  tidemark run -> null: {:>9} {unit} {:>7.2} s {:>10.0} /s  ratio to {theirs}: {:.2}x  peak RSS {:.1} MB",
        best.changes,
        best.secs,
        best.rate(),
        best.rate() / reference.rate(),
        runs.iter().map(|r| r.rss_mb).fold(0.0, f64::max)
    );
}

/// Hands everything `reader` reads to a [`Tally`] until `at_end` (given the resume point of
/// the batch's last commit, if any, and the reader) says the range is done, or `limit` changes
/// arrived; then closes the reader. Panics on a read error or after 60 s without a batch
/// before reaching `to`.
pub async fn drain(
    mut reader: Box<dyn Source>,
    to: impl Display,
    limit: u64,
    at_end: impl Fn(Option<ResumePoint>, &dyn Source) -> bool,
) -> Tally {
    let mut sink = Tally::default();
    let mut batch = Vec::new();
    loop {
        let read = tokio::time::timeout(Duration::from_secs(60), reader.next_batch(&mut batch));
        match read.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("the reader failed at {}: {e}", reader.resume_point()),
            Err(_) => panic!(
                "nothing read for 60 s at {} before reaching {to}",
                reader.resume_point()
            ),
        }
        let committed = sink.accept(&mut batch);
        if at_end(committed, reader.as_ref()) || sink.changes() >= limit {
            break;
        }
    }
    reader.close().await;
    sink
}
