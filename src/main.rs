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

use tidemark::check::{check_source, check_warehouse};
use tidemark::config::Config;
use tidemark::fleet::run_group;
use tidemark::import::dms;
use tidemark::observe::status::{read_status, render_table};
use tidemark::observe::{LogFormat, init_logging};
use tidemark::pipeline::{SkipError, skip_to_end};
use tidemark::secrets::Freshness;
use tidemark::snapshot::{RequestError, request_snapshot};
use tidemark::source::Source;
use tidemark::source::mysql::file::FileError;
use tidemark::source::mysql::follow;
use tidemark::source::mysql::inspect::{
    InspectOptions, StreamInspectError, inspect_binlog_files, inspect_stream,
};
use tidemark::source::mysql::reader::{ReaderOptions, StartPosition};

/// Change-data-capture from MySQL/MariaDB and Postgres into a Postgres warehouse.
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
    /// Check every source's prerequisites (settings, grants, retention) and the warehouse's
    /// (connection, rights), and print the fix for each one that is missing. Exit 0 only when
    /// all pass.
    Check {
        /// The group's config file (TOML).
        #[arg(long, short)]
        config: PathBuf,
        /// Check only the source with this id (and the warehouse).
        #[arg(long)]
        source: Option<String>,
    },
    /// Move a stuck source's checkpoint to its server's current end of log, past an event it
    /// cannot replicate or a lost position. The changes in between are SKIPPED: the source's
    /// tables must be copied again afterwards. Stop tidemark first, or run this while the
    /// source is stuck (it resumes from the new position at its next retry).
    SkipToEnd {
        /// The group's config file (TOML).
        #[arg(long, short)]
        config: PathBuf,
        /// The source to move.
        #[arg(long)]
        source: String,
        /// Confirm that the skipped changes are lost to the warehouse.
        #[arg(long)]
        yes: bool,
    },
    /// Copy a source's tables again: the named tables while the source streams on (a table
    /// newly added to `include`, one set aside), or without --table the whole source from the
    /// current end of its log (the way out for a source stuck on an event it cannot replicate,
    /// or whose log position is lost). Recorded in the warehouse: the group's running process
    /// starts it within seconds, or the source's next start does.
    Snapshot {
        /// The group's config file (TOML).
        #[arg(long, short)]
        config: PathBuf,
        /// The source.
        #[arg(long)]
        source: String,
        /// A table to copy again, `database.table` (Postgres: `schema.table`); repeatable.
        #[arg(long = "table")]
        tables: Vec<String>,
    },
    /// Show where each source stands, from the warehouse's progress records: state, position,
    /// lag at its last commit and how long ago that was. Works whether or not `run` is running.
    Status {
        /// The group's config file (TOML).
        #[arg(long, short)]
        config: PathBuf,
        /// Print a JSON array (one object per source) instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Decode change logs (binlog files, or a live server) into JSON lines, for debugging.
    #[command(subcommand)]
    Inspect(InspectCommand),
    /// Convert another tool's settings into tidemark config.
    #[command(subcommand)]
    Import(ImportCommand),
}

#[derive(Debug, Subcommand)]
enum ImportCommand {
    /// Convert an AWS DMS table-mapping JSON file (`{"rules": [...]}`) into one `[[sources]]`
    /// entry (include, exclude, target_schema, target_table, table_names, columns), printed on
    /// standard output. Every rule it cannot express is printed on standard error, with the
    /// reason, and as a comment in the output. Exit 0 when every rule is expressed, 1 when some
    /// are not (the entry is printed all the same), 2 when the file cannot be read or is not a
    /// table mapping.
    DmsRules {
        /// The DMS table-mapping JSON file.
        file: PathBuf,
        /// The `id` of the source entry; default: derived from the target schema.
        #[arg(long)]
        source_id: Option<String>,
    },
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
    let _crash_points = tidemark::crash::setup();
    // One rustls crypto provider for every connection, before any driver asks for the default.
    tidemark::tls::install_provider();
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match cli.command {
        Command::Run { config } => block_on(run(config)),
        Command::Check { config, source } => block_on(check(config, source)),
        Command::SkipToEnd {
            config,
            source,
            yes,
        } => block_on(skip(config, source, yes)),
        Command::Status { config, json } => block_on(status(config, json)),
        Command::Snapshot {
            config,
            source,
            tables,
        } => block_on(snapshot(config, source, tables)),
        Command::Inspect(InspectCommand::Binlog {
            files,
            positional_names,
        }) => inspect_binlog(&files, positional_names),
        Command::Inspect(InspectCommand::Stream { url, server_id }) => {
            block_on(inspect_live(url, server_id))
        }
        Command::Import(ImportCommand::DmsRules { file, source_id }) => {
            import_dms_rules(&file, source_id)
        }
    }
}

/// `tidemark import dms-rules`: the entry on stdout, what it could not express on stderr.
fn import_dms_rules(file: &std::path::Path, source_id: Option<String>) -> ExitCode {
    let text = match std::fs::read_to_string(file) {
        Ok(text) => text,
        Err(e) => {
            eprintln!("tidemark: cannot read {}: {e}", file.display());
            return ExitCode::from(2);
        }
    };
    let options = dms::Options {
        source_id,
        file_name: file.display().to_string(),
    };
    let conversion = match dms::convert(&text, &options) {
        Ok(conversion) => conversion,
        Err(e) => {
            eprintln!("tidemark: {}: {e}", file.display());
            return ExitCode::from(2);
        }
    };
    Stdout::default().print(&conversion.toml);
    for item in &conversion.unexpressed {
        eprintln!(
            "tidemark: DMS {}: not expressed: {}",
            item.rule, item.reason
        );
    }
    if conversion.unexpressed.is_empty() {
        ExitCode::SUCCESS
    } else {
        eprintln!(
            "tidemark: {} of the DMS rules (or parts of them) not expressed: listed above, and as comments in the output",
            conversion.unexpressed.len()
        );
        ExitCode::from(1)
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
    let mut reader = match follow(options, StartPosition::End).await {
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
    Box::new(reader).close().await;
    match result {
        Ok(summary) => {
            eprintln!(
                "tidemark: {} transactions, {} changes",
                summary.transactions, summary.changes
            );
            ExitCode::SUCCESS
        }
        // The reader of our output went away (`| head`): not an error of ours.
        Err(StreamInspectError::Output(e)) if e.kind() == io::ErrorKind::BrokenPipe => {
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
    let reloads = match reload_on_hangup(path) {
        Ok(reloads) => reloads,
        Err(e) => return fail(&format!("cannot listen for SIGHUP: {e}")),
    };
    match run_group(config, shutdown, reloads).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e.to_string()),
    }
}

/// Loads the config at `path` again at every SIGHUP (`systemctl reload`) and hands it to the
/// group; a config that does not load is logged and changes nothing.
fn reload_on_hangup(
    path: PathBuf,
) -> std::io::Result<tokio::sync::mpsc::UnboundedReceiver<Config>> {
    use tokio::signal::unix::{SignalKind, signal};
    // Listening now, before the group starts: SIGHUP's default action ends the process.
    let mut hangups = signal(SignalKind::hangup())?;
    let (reload, reloads) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            tracing::info!(config = %path.display(), "SIGHUP: reading the config and inventory again");
            let loaded = {
                let path = path.clone();
                tokio::task::spawn_blocking(move || Config::load(&path)).await
            };
            match loaded {
                Ok(Ok(config)) => {
                    if reload.send(config).is_err() {
                        return;
                    }
                }
                Ok(Err(e)) => tracing::error!(
                    "config reload failed, the running config stays: {e}; fix the file and send SIGHUP again"
                ),
                Err(e) => tracing::error!("config reload failed: {e}"),
            }
        }
    });
    Ok(reloads)
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
            config.source_ids()
        );
        return ExitCode::from(2);
    }
    let mut out = Stdout::default();
    let mut all_passed = true;
    for source in &sources {
        let report = check_source(source).await;
        all_passed &= report.passed();
        out.print(&format!("{report}\n"));
    }
    let report = check_warehouse(&config.warehouse, &sources).await;
    all_passed &= report.passed();
    out.print(&format!("{report}\n"));
    if all_passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

async fn status(path: PathBuf, json: bool) -> ExitCode {
    let config = match load_config(&path) {
        Ok(config) => config,
        Err(code) => return code,
    };
    let lines = match read_status(&config).await {
        Ok(lines) => lines,
        Err(e) => {
            return fail(&format!(
                "reading progress from the warehouse ({}): {e}",
                config.warehouse.describe()
            ));
        }
    };
    let text = if json {
        match serde_json::to_string_pretty(&lines) {
            Ok(text) => text + "\n",
            Err(e) => return fail(&format!("writing the status as JSON: {e}")),
        }
    } else {
        render_table(&lines)
    };
    Stdout::default().print(&text);
    ExitCode::SUCCESS
}

async fn snapshot(path: PathBuf, source_id: String, tables: Vec<String>) -> ExitCode {
    let config = match load_config(&path) {
        Ok(config) => config,
        Err(code) => return code,
    };
    match request_snapshot(&config, &source_id, &tables).await {
        Ok(id) => {
            let what = if tables.is_empty() {
                format!(
                    "every table of source `{source_id}`, from the current end of its log (changes not loaded yet are not replayed: the copy replaces them)"
                )
            } else {
                format!("{} of source `{source_id}`", tables.join(", "))
            };
            Stdout::default().print(&format!(
                "copy requested (request {id}): {what}. The group's running `tidemark run` starts it within seconds, or the source's next start does; follow it with `tidemark status --config {}`\n",
                path.display()
            ));
            ExitCode::SUCCESS
        }
        Err(e @ RequestError::Warehouse(_)) => fail(&format!("{e}; nothing was requested")),
        Err(e) => {
            eprintln!("tidemark: {e}");
            ExitCode::from(2)
        }
    }
}

/// What `skip-to-end` says before it moves anything: what will be lost, and how to go on.
fn skip_warning(config: &Config, source_id: &str) -> String {
    let schema = config
        .sources
        .iter()
        .find(|s| s.id == source_id)
        .map_or_else(String::new, |s| {
            format!(" in warehouse schema {}", s.staging_schema())
        });
    format!(
        "WARNING: this moves source `{source_id}` to its server's current end of log. Every change \
         it has not loaded yet, including the one it stopped on, is skipped and never reaches the \
         warehouse: its tables{schema} stay incomplete until they are copied again from the source \
         (`tidemark snapshot --config FILE --source {source_id}` copies them and moves the source \
         to its end in one step, with nothing lost: prefer it). A Postgres source gets a new replication \
         slot (the old one is dropped)."
    )
}

async fn skip(path: PathBuf, source_id: String, confirmed: bool) -> ExitCode {
    let mut config = match load_config(&path) {
        Ok(config) => config,
        Err(code) => return code,
    };
    // skip-to-end opens the source itself: fetch its URL's secrets first.
    for source in config.sources.iter_mut().filter(|s| s.id == source_id) {
        match source.url.resolve(Freshness::Cached).await {
            Ok(url) => source.url = url,
            Err(e) => return fail(&e.to_string()),
        }
    }
    eprintln!("tidemark: {}", skip_warning(&config, &source_id));
    if !confirmed {
        eprintln!(
            "tidemark: nothing changed; to do it: tidemark skip-to-end --config {} --source {source_id} --yes",
            path.display()
        );
        return ExitCode::from(2);
    }
    match skip_to_end(&config, &source_id).await {
        Ok(skipped) => {
            let from = skipped
                .from
                .map_or_else(|| "(no checkpoint)".to_owned(), |p| p.to_string());
            Stdout::default().print(&format!(
                "source `{source_id}`: checkpoint moved from {from} to {}; copy its tables again\n",
                skipped.to
            ));
            ExitCode::SUCCESS
        }
        Err(e @ SkipError::UnknownSource { .. }) => {
            eprintln!("tidemark: {e}");
            ExitCode::from(2)
        }
        Err(e) => fail(&format!("{e}; the checkpoint is unchanged")),
    }
}

/// Standard output that stops writing, quietly, once its reader has gone (`| head`): the
/// command still finishes and exits with its own status.
#[derive(Default)]
struct Stdout {
    closed: bool,
}

impl Stdout {
    fn print(&mut self, text: &str) {
        if self.closed {
            return;
        }
        let mut out = io::stdout().lock();
        if let Err(e) = out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
            self.closed = true;
            if e.kind() != io::ErrorKind::BrokenPipe {
                eprintln!("tidemark: writing to standard output: {e}");
            }
        }
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
