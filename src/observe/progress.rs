//! Progress bars for snapshots, on a terminal only: one bar per table being copied, counting
//! its chunks. Logs and bars share stderr, so log lines are written with the bars lifted
//! ([`LogWriter`]); where stderr is not a terminal (journald, files, `--log-format json`) there
//! are no bars, and the copy's progress is in its `snapshot progress` log lines instead.

use std::io::{self, Write};
use std::sync::OnceLock;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// The bars of the process, when they are drawn at all.
static BARS: OnceLock<MultiProgress> = OnceLock::new();

/// Draws bars from now on (stderr is a terminal showing text logs).
pub fn enable_bars() {
    let _ = BARS.get_or_init(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()));
}

/// One table's bar; does nothing where no bars are drawn.
#[derive(Debug)]
pub struct TableBar(Option<ProgressBar>);

impl TableBar {
    /// A bar for `table` of `source`, `chunks` long.
    pub fn new(source: &str, table: &str, chunks: u64) -> TableBar {
        TableBar(BARS.get().map(|bars| {
            let bar = bars.add(ProgressBar::new(chunks));
            let style = ProgressStyle::with_template(
                "{prefix} [{bar:30}] {pos}/{len} chunks {msg} {elapsed}, eta {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
            bar.set_style(style);
            bar.set_prefix(format!("{source} {table}"));
            bar
        }))
    }

    /// `done` chunks were loaded before (a resumed copy).
    pub fn resume(&self, done: u64) {
        if let Some(bar) = &self.0 {
            bar.set_position(done);
        }
    }

    /// One more chunk is loaded; `rows` loaded so far.
    pub fn chunk_done(&self, rows: u64) {
        if let Some(bar) = &self.0 {
            bar.inc(1);
            bar.set_message(format!("{rows} rows"));
        }
    }

    /// The table is copied: the bar goes.
    pub fn finish(&self) {
        if let Some(bar) = &self.0 {
            bar.finish_and_clear();
        }
    }
}

/// stderr for log lines: written with the bars lifted, so a line never lands inside a bar.
#[derive(Debug, Clone, Copy, Default)]
pub struct LogWriter;

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match BARS.get() {
            Some(bars) => bars.suspend(|| io::stderr().write_all(buf).map(|()| buf.len())),
            None => io::stderr().write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        io::stderr().flush()
    }
}
