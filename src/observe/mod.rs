//! Logging setup (tracing), shared by every command. Metrics and health endpoints come later.

use tracing_subscriber::EnvFilter;

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
        .with_writer(std::io::stderr);
    // A second init (tests) is harmless: keep the first subscriber.
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}
