//! Logging setup (tracing), shared by every command, and `tidemark status` ([`status`]).
//! Metrics and health endpoints come later.
//!
//! Log values are written for people and for machines at once: a duration is a field named
//! `<what>_s` holding seconds as a number ([`seconds`]), which the JSON format carries as a
//! number and the text format prints as `<what>=0.97s`; an absent value is left out, never
//! printed as `None` or `Some(..)`.

pub mod health;
pub mod progress;
pub mod status;

use std::fmt;
use std::time::Duration;

use tracing::field::Field;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::field::MakeExt;
use tracing_subscriber::fmt::format::Writer;

/// Log output format chosen on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// What is logged unless `RUST_LOG` says otherwise. The libraries' own lines repeat what
/// tidemark reports with the source named (pgwire-replication logs a dropped connection as an
/// ERROR, which tidemark retries and warns about) or are chatter (server NOTICEs such as
/// "schema already exists, skipping"), so only their warnings and errors, or nothing, remain.
const DEFAULT_FILTER: &str = "info,tokio_postgres=warn,pgwire_replication=off";

/// Installs the global tracing subscriber writing to stderr; `RUST_LOG` overrides the filter.
pub fn init_logging(format: LogFormat) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    // Colours only on a terminal: log files and journald get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(|| progress::LogWriter);
    if ansi && format == LogFormat::Text {
        progress::enable_bars();
    }
    // A second init (tests) is harmless: keep the first subscriber.
    let _ = match format {
        LogFormat::Text => builder
            .fmt_fields(tracing_subscriber::fmt::format::debug_fn(text_field).delimited(" "))
            .try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// A duration as the number of seconds logged in `*_s` fields, to the hundredth.
pub fn seconds(duration: Duration) -> f64 {
    (duration.as_secs_f64() * 100.0).round() / 100.0
}

/// One field of a text log line: the message bare, `<what>_s` fields as `<what>=1.5s`, the rest
/// as `name=value`.
fn text_field(writer: &mut Writer<'_>, field: &Field, value: &dyn fmt::Debug) -> fmt::Result {
    let name = field.name();
    if name == "message" {
        return write!(writer, "{value:?}");
    }
    match name.strip_suffix("_s") {
        Some(what) => {
            let number = format!("{value:?}");
            write!(
                writer,
                "{what}={}s",
                number.strip_suffix(".0").unwrap_or(&number)
            )
        }
        None => write!(writer, "{name}={value:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_keep_two_decimals() {
        assert_eq!(seconds(Duration::from_micros(971_732)), 0.97);
        assert_eq!(seconds(Duration::from_secs(60)), 60.0);
    }
}
