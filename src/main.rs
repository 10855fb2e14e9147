//! The `tidemark` command line: parses arguments, loads config, calls the library.
//!
//! Exit codes: 0 success, 1 the command ran and found a problem (failed check, undecodable
//! input), 2 the command could not run as asked (usage or config error).

use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// mimalloc instead of glibc malloc: decoding allocates many small, short-lived values, and
/// glibc's free-list consolidation cost a third of the decode time in bench/binlog_decode.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use tidemark::config::{Config, SourceKind};
use tidemark::observe::{LogFormat, init_logging};
use tidemark::pipeline::run_group;
use tidemark::source::mysql::check::check_mysql_source;
use tidemark::source::mysql::file::FileError;
use tidemark::source::mysql::inspect::{InspectOptions, inspect_binlog_files, inspect_stream};
use tidemark::source::mysql::stream::{BinlogReader, ReaderOptions, StartPosition};
use tidemark::source::postgres::check::check_postgres_source;

/// Change-data-capture from MySQL/MariaDB and Postgres into Postgres and Redshift.
#[derive(Debug, Parser)]
#[command(name = "tidemark", version, about, propagate_version = true)]
struct Cli {
    /// Log format on stderr.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Replicate every source of the group into the warehouse until SIGTERM or SIGINT, then
    /// load the whole transactions already read and exit 0.
    Run {
        /// The group's config file (TOML).
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Check every source's prerequisites (settings, grants, retention) and print the fix for
    /// each one that is missing. Exit 0 only when all pass.
    Check {
        /// The group's config file (TOML).
        #[arg(long, short)]
        config: PathBuf,
        /// Check only the source with this id.
        #[arg(long)]
        source: Option<String>,
    },
    /// Decode change logs (binlog files, or a live server) into JSON lines, for debugging.
    #[command(subcommand)]
    Inspect(InspectCommand),
}

#[derive(Debug, Subcommand)]
enum InspectCommand {
    /// Print the row changes of MySQL/MariaDB binlog files as JSON lines (one per change).
    ///
    /// Only committed transactions are printed. Corrupt or truncated input stops with an error
    /// naming the byte offset and exit code 1.
    Binlog {
        /// Binlog files, read in the order given.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Name columns @1, @2, ... when the binlog has no column names
        /// (binlog_row_metadata=MINIMAL). Replication itself always requires FULL.
        #[arg(long)]
        positional_names: bool,
    },
    /// Follow a live MySQL/MariaDB server's binlog from its current end and print committed
    /// row changes as JSON lines until Ctrl-C. Connects as a replica (needs REPLICATION SLAVE).
    Stream {
        /// Server URL, `mysql://user:password@host:port`. Read from the environment so the
        /// password stays out of the process list.
        #[arg(long, env = "TIDEMARK_INSPECT_URL", hide_env_values = true)]
        url: String,
        /// Replica server id; must differ from every other replica of this server.
        #[arg(long, default_value_t = 4_000_000_001)]
        server_id: u32,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match cli.command {
        Command::Run { config } => block_on(run(config)),
        Command::Check { config, source } => block_on(check(config, source)),
        Command::Inspect(InspectCommand::Binlog {
            files,
            positional_names,
        }) => inspect_binlog(&files, positional_names),
        Command::Inspect(InspectCommand::Stream { url, server_id }) => {
            block_on(inspect_live(url, server_id))
        }
    }
}

/// Runs an async command on a fresh runtime.
fn block_on(command: impl std::future::Future<Output = ExitCode>) -> ExitCode {
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime.block_on(command),
        Err(e) => fail(&format!("starting the async runtime: {e}")),
    }
}

async fn inspect_live(url: String, server_id: u32) -> ExitCode {
    let options = ReaderOptions::new("inspect", url, server_id);
    let mut reader = match BinlogReader::connect(options, StartPosition::End).await {
        Ok(reader) => reader,
        Err(e) => return fail(&e.to_string()),
    };
    eprintln!(
        "tidemark: following from {} (Ctrl-C to stop)",
        reader.resume_point()
    );
    let stdout = io::stdout();
    let mut out = stdout.lock();
    let stop = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let result = inspect_stream(&mut reader, &mut out, stop).await;
    reader.close().await;
    match result {
        Ok(summary) => {
            eprintln!(
                "tidemark: {} transactions, {} changes",
                summary.transactions, summary.changes
            );
            ExitCode::SUCCESS
        }
        Err(e) => fail(&e.to_string()),
    }
}

/// Loads the config or explains why not (exit code 2).
async fn run(path: PathBuf) -> ExitCode {
    let config = match load_config(&path) {
        Ok(config) => config,
        Err(code) => return code,
    };
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        wait_for_stop_signal().await;
        tracing::info!(
            "stop requested: loading what was read, then exiting (signal again to exit at once)"
        );
        let _ = stop.send(true);
        wait_for_stop_signal().await;
        eprintln!("tidemark: second stop signal: exiting without waiting");
        std::process::exit(130);
    });
    match run_group(&config, shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e.to_string()),
    }
}

/// SIGTERM (systemd, ECS) or SIGINT (Ctrl-C).
async fn wait_for_stop_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

fn load_config(path: &std::path::Path) -> Result<Config, ExitCode> {
    Config::load(path).map_err(|e| {
        eprintln!("tidemark: config error: {e}");
        ExitCode::from(2)
    })
}

async fn check(path: PathBuf, only: Option<String>) -> ExitCode {
    let config = match load_config(&path) {
        Ok(config) => config,
        Err(code) => return code,
    };
    let sources: Vec<_> = config
        .sources
        .iter()
        .filter(|s| only.as_deref().is_none_or(|id| s.id == id))
        .collect();
    if sources.is_empty() {
        eprintln!(
            "tidemark: no source matches; the config has: {}",
            source_ids(&config)
        );
        return ExitCode::from(2);
    }
    let mut all_passed = true;
    for source in sources {
        match source.kind {
            SourceKind::Mysql => {
                let report = check_mysql_source(source).await;
                all_passed &= report.passed();
                println!("{report}");
            }
            SourceKind::Postgres => {
                let report = check_postgres_source(source).await;
                all_passed &= report.passed();
                println!("{report}");
            }
        }
    }
    if all_passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn source_ids(config: &Config) -> String {
    let ids: Vec<&str> = config.sources.iter().map(|s| s.id.as_str()).collect();
    ids.join(", ")
}

fn inspect_binlog(files: &[PathBuf], positional_names: bool) -> ExitCode {
    let stdout = io::stdout();
    let mut out = io::BufWriter::with_capacity(1 << 16, stdout.lock());
    let options = InspectOptions { positional_names };
    let result = inspect_binlog_files(files, options, &mut out);
    let flushed = out.flush();
    match (result, flushed) {
        // The reader of our output went away (`| head`): not an error of ours.
        (Err(FileError::Stopped(e)), _) | (Ok(_), Err(e))
            if e.kind() == io::ErrorKind::BrokenPipe =>
        {
            ExitCode::SUCCESS
        }
        (Ok(_), Ok(())) => ExitCode::SUCCESS,
        (Ok(_), Err(e)) => fail(&format!("writing output: {e}")),
        (Err(e), _) => fail(&e.to_string()),
    }
}

fn fail(message: &str) -> ExitCode {
    eprintln!("tidemark: error: {message}");
    ExitCode::from(1)
}
