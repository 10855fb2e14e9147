//! The `tidemark` command line: parses arguments, loads config, calls the library.
//!
//! Exit codes: 0 success, 1 the command ran and found a problem (failed check, undecodable
//! input), 2 the command could not run as asked (usage or config error).

use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tidemark::observe::{LogFormat, init_logging};
use tidemark::source::mysql::file::FileError;
use tidemark::source::mysql::inspect::{InspectOptions, inspect_binlog_files};

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
    /// Decode change logs offline, for debugging.
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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match cli.command {
        Command::Inspect(InspectCommand::Binlog {
            files,
            positional_names,
        }) => inspect_binlog(&files, positional_names),
    }
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
