//! `tidemark status`: where each source of a group stands, read from the warehouse's progress
//! records, so it answers whether or not the process runs (and from any machine that reaches
//! the warehouse).
//!
//! The warehouse knows what was committed, not what the process is doing right now: a source
//! that fails is seen as a progress record that stops moving (its last commit grows old). The
//! running process's own view (errors, reconnects) comes with the status page.

use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::config::Config;
use crate::sink::{self, ProgressRecord, SinkError};

/// What a source is doing, as far as its progress record tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceState {
    /// No progress record: the source never started (or its record was deleted).
    NotStarted,
    /// A snapshot of its tables is in progress.
    Snapshotting,
    /// Changes are streaming from its log.
    Streaming,
}

impl SourceState {
    /// The word the table prints.
    fn as_str(self) -> &'static str {
        match self {
            SourceState::NotStarted => "not started",
            SourceState::Snapshotting => "snapshotting",
            SourceState::Streaming => "streaming",
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
}

impl SourceStatus {
    /// The status a source's progress record (if any) gives, `now_micros` being the present.
    pub fn from_record(source: &str, record: Option<&ProgressRecord>, now_micros: i64) -> Self {
        let Some(record) = record else {
            return SourceStatus {
                source: source.to_owned(),
                state: SourceState::NotStarted,
                position: None,
                lag_s: None,
                last_commit_age_s: None,
                tables: 0,
            };
        };
        let progress = &record.progress;
        let seconds = |micros: i64| (micros as f64 / 1e4).round() / 100.0;
        SourceStatus {
            source: source.to_owned(),
            state: if progress.snapshot.is_some() {
                SourceState::Snapshotting
            } else {
                SourceState::Streaming
            },
            position: Some(progress.resume_point.to_string()),
            lag_s: progress
                .source_commit_ts_micros
                .zip(record.committed_at_micros)
                .map(|(source, warehouse)| seconds((warehouse - source).max(0))),
            last_commit_age_s: record
                .committed_at_micros
                .map(|at| seconds((now_micros - at).max(0))),
            tables: record.tables.len(),
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
        lines.push(SourceStatus::from_record(&source.id, record.as_ref(), now));
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
    ];
    let rows: Vec<[String; 6]> = lines
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
        };
        let line = SourceStatus::from_record("pg", Some(&record), 13_500_000);
        assert_eq!(line.state, SourceState::Streaming);
        assert_eq!(line.position.as_deref(), Some("16/B374D848"));
        assert_eq!(line.lag_s, Some(2.5));
        assert_eq!(line.last_commit_age_s, Some(10.0));
        let none = SourceStatus::from_record("new", None, 13_500_000);
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
}
