//! `tidemark status`: where each source of a group stands, read from the warehouse's progress
//! records, so it answers whether or not the process runs (and from any machine that reaches
//! the warehouse).
//!
//! The warehouse knows what was committed, not what the process is doing right now: a source
//! that fails is seen as a progress record that stops moving (its last commit grows old). The
//! running process's own view (errors, reconnects) comes with the status page.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::config::Config;
use crate::pipeline::run::RETRYING;
use crate::sink::{self, ProgressRecord, SinkError};
use crate::snapshot::{Reason, SetAside, SnapshotState, Totals};

/// What a source is doing, as far as its progress record tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceState {
    /// No progress record: the source never started (or its record was deleted).
    NotStarted,
    /// A snapshot of its tables is in progress.
    Snapshotting,
    /// Changes are streaming from its log, far behind (more than `catch_up_lag`): large batches.
    CatchingUp,
    /// Changes are streaming from its log.
    Streaming,
    /// Its connection to the source or the warehouse broke; it reconnects by itself (see
    /// `error`).
    Retrying,
    /// It stopped on an error that needs an operator (see `error`).
    Failed,
}

impl SourceState {
    /// The word the table prints.
    fn as_str(self) -> &'static str {
        match self {
            SourceState::NotStarted => "not started",
            SourceState::Snapshotting => "snapshotting",
            SourceState::CatchingUp => "catching up",
            SourceState::Streaming => "streaming",
            SourceState::Retrying => "retrying",
            SourceState::Failed => "failed",
        }
    }
}

/// One source's line of `tidemark status`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SourceStatus {
    /// The source's id.
    pub source: String,
    /// What it is doing.
    pub state: SourceState,
    /// Where it resumes, readable (`binlog.000042:330 (gtid 0-1-7)`, `16/B374D848`).
    pub position: Option<String>,
    /// Seconds from the source's commit of the last applied change to its warehouse commit:
    /// the lag when the source last made progress.
    pub lag_s: Option<f64>,
    /// Seconds since the warehouse last committed progress for the source (an idle source
    /// still commits its position every few seconds; a stuck one does not).
    pub last_commit_age_s: Option<f64>,
    /// Target tables the source has loaded.
    pub tables: usize,
    /// How far the snapshot in progress is, while one runs.
    pub snapshot: Option<SnapshotStatus>,
    /// Tables whose changes are not applied, with where and why.
    pub set_aside: Vec<SetAside>,
    /// Why it stopped, when it failed.
    pub error: Option<String>,
}

/// How far a source's snapshot is.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SnapshotStatus {
    /// Why it runs.
    pub reason: Reason,
    /// Tables, chunks and rows done.
    #[serde(flatten)]
    pub totals: Totals,
    /// Seconds left at the rate so far, once a chunk is done.
    pub eta_s: Option<f64>,
}

impl SnapshotStatus {
    /// The status of `state`, `now_micros` being the present (the rate counts from the first
    /// table's start).
    fn of(state: &SnapshotState, now_micros: i64) -> SnapshotStatus {
        let totals = state.totals();
        let started = state
            .tables
            .iter()
            .filter_map(|t| t.started_at_micros)
            .min();
        let eta_s = started.and_then(|started| {
            let elapsed = (now_micros - started) as f64 / 1e6;
            let planned_left = totals.chunks.saturating_sub(totals.chunks_done) as f64;
            let unplanned = state.tables.iter().filter(|t| t.chunks.is_none()).count() as f64;
            (totals.chunks_done > 0 && elapsed > 0.0).then(|| {
                let per_chunk = elapsed / totals.chunks_done as f64;
                // An unplanned table counts as one chunk: its size is not known yet.
                ((planned_left + unplanned) * per_chunk).round()
            })
        });
        SnapshotStatus {
            reason: state.reason,
            totals,
            eta_s,
        }
    }

    /// One cell of the table: `2/5 tables, 40/90 chunks, 1200000 rows, eta 35s`.
    fn describe(&self) -> String {
        let t = &self.totals;
        let mut text = format!(
            "{}/{} tables, {}/{} chunks, {} rows",
            t.tables_done, t.tables, t.chunks_done, t.chunks, t.rows
        );
        if let Some(eta) = self.eta_s {
            let _ = write!(text, ", eta {eta:.0}s");
        }
        text
    }
}

impl SourceStatus {
    /// The status a source's progress record (if any) gives, `now_micros` being the present.
    /// A lag of `catch_up_lag` or more at the last commit counts as catching up.
    pub fn from_record(
        source: &str,
        record: Option<&ProgressRecord>,
        now_micros: i64,
        catch_up_lag: Duration,
    ) -> Self {
        let Some(record) = record else {
            return SourceStatus {
                source: source.to_owned(),
                state: SourceState::NotStarted,
                position: None,
                lag_s: None,
                last_commit_age_s: None,
                tables: 0,
                snapshot: None,
                set_aside: Vec::new(),
                error: None,
            };
        };
        let progress = &record.progress;
        let state = progress
            .snapshot
            .as_ref()
            .and_then(|stored| SnapshotState::from_progress(stored, &record.chunks_done));
        let seconds = |micros: i64| (micros as f64 / 1e4).round() / 100.0;
        let lag_s = progress
            .source_commit_ts_micros
            .zip(record.committed_at_micros)
            .map(|(source, warehouse)| seconds((warehouse - source).max(0)));
        SourceStatus {
            source: source.to_owned(),
            state: if record
                .last_error
                .as_deref()
                .is_some_and(|e| e.starts_with(RETRYING))
            {
                SourceState::Retrying
            } else if record.last_error.is_some() {
                SourceState::Failed
            } else if state.as_ref().is_some_and(SnapshotState::is_copying) {
                SourceState::Snapshotting
            } else if lag_s.is_some_and(|lag| lag >= catch_up_lag.as_secs_f64()) {
                SourceState::CatchingUp
            } else {
                SourceState::Streaming
            },
            position: Some(progress.resume_point.to_string()),
            lag_s,
            last_commit_age_s: record
                .committed_at_micros
                .map(|at| seconds((now_micros - at).max(0))),
            tables: record.tables.len(),
            snapshot: state
                .as_ref()
                .filter(|state| state.is_copying())
                .map(|state| SnapshotStatus::of(state, now_micros)),
            set_aside: state.map(|state| state.set_aside).unwrap_or_default(),
            error: record.last_error.clone(),
        }
    }
}

/// Reads the status of every source of `config`, in config order, from the warehouse.
pub async fn read_status(config: &Config) -> Result<Vec<SourceStatus>, SinkError> {
    let mut sink = sink::connect(&config.warehouse).await?;
    let now = now_micros();
    let mut lines = Vec::with_capacity(config.sources.len());
    for source in &config.sources {
        let record = sink.read_progress(&source.id).await?;
        lines.push(SourceStatus::from_record(
            &source.id,
            record.as_ref(),
            now,
            config.batch.catch_up_lag,
        ));
    }
    Ok(lines)
}

/// The present in µs since the epoch (0 if the clock is before 1970).
fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

/// The statuses as an aligned text table with a header line.
pub fn render_table(lines: &[SourceStatus]) -> String {
    let header = [
        "SOURCE",
        "STATE",
        "POSITION",
        "LAG",
        "LAST COMMIT",
        "TABLES",
        "SNAPSHOT",
        "SET ASIDE",
    ];
    let rows: Vec<[String; 8]> = lines
        .iter()
        .map(|line| {
            [
                line.source.clone(),
                line.state.as_str().to_owned(),
                line.position.clone().unwrap_or_else(|| "-".into()),
                line.lag_s
                    .map_or_else(|| "-".into(), |s| format!("{s:.2}s")),
                line.last_commit_age_s
                    .map_or_else(|| "-".into(), |s| format!("{s:.0}s ago")),
                line.tables.to_string(),
                line.snapshot
                    .as_ref()
                    .map_or_else(|| "-".into(), SnapshotStatus::describe),
                if line.set_aside.is_empty() {
                    "-".into()
                } else {
                    line.set_aside
                        .iter()
                        .map(|t| format!("{}.{} (since {})", t.namespace, t.name, t.position))
                        .collect::<Vec<_>>()
                        .join(", ")
                },
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &[&str]| {
        let mut text = String::new();
        for (cell, width) in cells.iter().zip(widths) {
            let _ = write!(text, "{cell:<width$}  ");
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(&header);
    for row in &rows {
        line(&row.each_ref().map(String::as_str));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::ResumePoint;
    use crate::sink::Progress;

    const TEN_S: Duration = Duration::from_secs(10);

    #[test]
    fn a_record_gives_position_lag_and_age_and_none_gives_not_started() {
        let record = ProgressRecord {
            progress: Progress::at(
                ResumePoint::Lsn {
                    lsn: 0x16_B374_D848,
                },
                Some(1_000_000),
            ),
            committed_at_micros: Some(3_500_000),
            tables: Vec::new(),
            last_error: None,
            chunks_done: Vec::new(),
        };
        let line = SourceStatus::from_record("pg", Some(&record), 13_500_000, TEN_S);
        assert_eq!(line.state, SourceState::Streaming);
        assert_eq!(line.position.as_deref(), Some("16/B374D848"));
        assert_eq!(line.lag_s, Some(2.5));
        assert_eq!(line.last_commit_age_s, Some(10.0));
        let none = SourceStatus::from_record("new", None, 13_500_000, TEN_S);
        assert_eq!(none.state, SourceState::NotStarted);
        let table = render_table(&[line, none]);
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[0].starts_with("SOURCE  STATE"), "{table}");
        assert!(
            lines[1].contains("streaming") && lines[1].contains("2.50s"),
            "{table}"
        );
        assert!(lines[2].contains("not started"), "{table}");
    }

    #[test]
    fn a_large_lag_is_catching_up_and_a_recorded_error_is_failed() {
        let mut record = ProgressRecord {
            progress: Progress::at(ResumePoint::Lsn { lsn: 1 }, Some(0)),
            committed_at_micros: Some(60_000_000),
            tables: Vec::new(),
            last_error: None,
            chunks_done: Vec::new(),
        };
        let line = SourceStatus::from_record("pg", Some(&record), 61_000_000, TEN_S);
        assert_eq!(line.state, SourceState::CatchingUp);
        record.last_error = Some("slot missing".into());
        let line = SourceStatus::from_record("pg", Some(&record), 61_000_000, TEN_S);
        assert_eq!(line.state, SourceState::Failed);
        assert_eq!(line.error.as_deref(), Some("slot missing"));
    }

    #[test]
    fn a_snapshot_shows_tables_chunks_rows_and_an_eta() {
        let mut state = SnapshotState::new(
            Reason::Initial,
            "0/1".into(),
            vec![
                crate::event::TableId::new("s", "a"),
                crate::event::TableId::new("s", "b"),
            ],
        );
        state.tables[0].started_at_micros = Some(0);
        state.tables[0].chunks = Some(
            (0..4)
                .map(|i| crate::snapshot::state::Chunk {
                    range: serde_json::json!(i),
                    done: i < 2,
                    rows: 10,
                })
                .collect(),
        );
        let mut progress = Progress::at(ResumePoint::Lsn { lsn: 1 }, None);
        progress.snapshot = Some(state.to_progress());
        let record = ProgressRecord {
            progress,
            committed_at_micros: Some(9_000_000),
            tables: Vec::new(),
            last_error: None,
            chunks_done: Vec::new(),
        };
        let line = SourceStatus::from_record("pg", Some(&record), 10_000_000, TEN_S);
        assert_eq!(line.state, SourceState::Snapshotting);
        let snapshot = line.snapshot.clone().unwrap();
        assert_eq!(snapshot.totals.chunks_done, 2);
        assert_eq!(snapshot.totals.rows, 20);
        // 2 chunks in 10 s; 2 planned chunks and 1 unplanned table left: 15 s.
        assert_eq!(snapshot.eta_s, Some(15.0));
        let table = render_table(&[line]);
        assert!(
            table.contains("0/2 tables, 2/4 chunks, 20 rows, eta 15s"),
            "{table}"
        );
    }
}
