//! The group runtime: every source of the config runs on its own supervisor, all of them
//! sharing the warehouse's connections; a new config (SIGHUP) starts, stops and restarts only
//! the sources it changes.
//!
//! Invariants: a source is never run twice at once (a changed source starts again only after
//! its old run has stopped and loaded what it read); stopping a source (removed, paused with
//! `enabled = false`) keeps its position in the warehouse, so it resumes where it was when it
//! comes back; a config that fails to load changes nothing.

use std::collections::HashMap;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tracing::{error, info, warn};

use crate::config::{Config, SourceConfig};
use crate::pipeline::{SourceError, supervise_source};
use crate::sink::{SinkError, Warehouse};

/// Why a group cannot run, or why it stopped.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The warehouse cannot be used at start.
    #[error(transparent)]
    Warehouse(#[from] SinkError),
    /// Every source stopped on errors that retrying cannot fix.
    #[error("sources stopped on errors: {0}")]
    SourcesFailed(String),
}

/// A source being run: the config it runs with and how to ask it to stop.
struct Running {
    source: SourceConfig,
    stop: watch::Sender<bool>,
}

/// The group's sources and what is to happen to them.
struct Fleet {
    config: Config,
    warehouse: Warehouse,
    tasks: JoinSet<(String, Result<(), SourceError>)>,
    running: HashMap<String, Running>,
    /// Sources to start once their previous run has stopped (their config changed).
    restart: HashMap<String, SourceConfig>,
    /// Sources that stopped on an error retrying cannot fix, with it; a reload starts them again.
    failed: HashMap<String, (SourceConfig, String)>,
}

/// Runs every enabled source of `config` until `shutdown` turns true; then each source loads
/// what it read and stops. Each config received on `reloads` replaces the running one: sources
/// it adds start, sources it removes or pauses stop, changed ones restart. Without an
/// inventory, the group also ends when its last source has stopped.
pub async fn run_group(
    config: Config,
    mut shutdown: watch::Receiver<bool>,
    mut reloads: mpsc::UnboundedReceiver<Config>,
) -> Result<(), RunError> {
    let warehouse = Warehouse::open(&config.warehouse)?;
    let mut sink = warehouse.sink().await?;
    sink.prepare().await?;
    drop(sink);
    report_inventory(&config);
    let enabled = config.sources.iter().filter(|s| s.enabled).count();
    info!(group = %config.group.name, sources = enabled, paused = config.sources.len() - enabled, warehouse = %config.warehouse.describe(), "group starting");
    let mut fleet = Fleet {
        warehouse,
        tasks: JoinSet::new(),
        running: HashMap::new(),
        restart: HashMap::new(),
        failed: HashMap::new(),
        config,
    };
    for source in fleet.config.sources.clone() {
        if source.enabled {
            fleet.start(source);
        }
    }
    let mut reloads_open = true;
    let mut stopping = false;
    loop {
        if fleet.tasks.is_empty() && (fleet.config.fleet.is_none() || stopping) {
            break;
        }
        tokio::select! {
            joined = fleet.tasks.join_next(), if !fleet.tasks.is_empty() => match joined {
                Some(Ok((id, result))) => fleet.stopped(id, result),
                Some(Err(e)) => error!(error = %e, "a source task ended abnormally"),
                None => {}
            },
            config = reloads.recv(), if reloads_open => match config {
                Some(config) if !stopping => fleet.reload(config),
                Some(_) => {}
                None => reloads_open = false,
            },
            _ = shutdown.wait_for(|stop| *stop), if !stopping => {
                stopping = true;
                fleet.restart.clear();
                for running in fleet.running.values() {
                    let _ = running.stop.send(true);
                }
            }
        }
    }
    if fleet.failed.is_empty() {
        info!(group = %fleet.config.group.name, "group stopped");
        Ok(())
    } else {
        let mut failed: Vec<String> = fleet
            .failed
            .iter()
            .map(|(id, (_, error))| format!("{id}: {error}"))
            .collect();
        failed.sort();
        Err(RunError::SourcesFailed(failed.join("; ")))
    }
}

/// Logs every inventory line that did not become a source.
fn report_inventory(config: &Config) {
    for problem in &config.inventory_problems {
        error!(line = problem.line, "inventory: {problem}");
    }
}

impl Fleet {
    fn start(&mut self, source: SourceConfig) {
        let (stop, stopped) = watch::channel(false);
        let id = source.id.clone();
        let run = supervise_source(
            source.clone(),
            &self.config,
            self.warehouse.clone(),
            stopped,
        );
        let task_id = id.clone();
        self.tasks.spawn(async move { (task_id, run.await) });
        self.failed.remove(&id);
        self.running.insert(id, Running { source, stop });
    }

    /// A source's supervisor ended: after a stop request, or on an error it cannot get past.
    fn stopped(&mut self, id: String, result: Result<(), SourceError>) {
        self.running.remove(&id);
        if let Err(error) = result {
            // The supervisor logged it with its fix; keep it for the exit status and reloads.
            if let Some(source) = self.config.source(&id).cloned() {
                self.failed.insert(id.clone(), (source, error.to_string()));
            }
        }
        if let Some(source) = self.restart.remove(&id) {
            info!(source = %id, "starting the source with its new settings");
            self.start(source);
        }
    }

    /// Moves the group to `config`: starts what it adds or resumes, stops what it removes or
    /// pauses, restarts what it changes, and starts again the sources that had failed.
    fn reload(&mut self, config: Config) {
        report_inventory(&config);
        if config.group != self.config.group
            || format!("{:?}", config.warehouse) != format!("{:?}", self.config.warehouse)
            || config.batch != self.config.batch
        {
            warn!(
                "the reloaded config changes [group], [warehouse] or [batch]: those take effect when tidemark restarts; source changes apply now"
            );
        }
        let wanted: HashMap<&str, &SourceConfig> = config
            .sources
            .iter()
            .filter(|s| s.enabled)
            .map(|s| (s.id.as_str(), s))
            .collect();
        let (mut started, mut stopped, mut restarted) = (0, 0, 0);
        for (id, running) in &self.running {
            match wanted.get(id.as_str()) {
                None => {
                    let why = if config.source(id).is_some() {
                        "paused (enabled = false)"
                    } else {
                        "removed from the config"
                    };
                    info!(source = %id, "source {why}: stopping it; its position is kept");
                    self.restart.remove(id);
                    let _ = running.stop.send(true);
                    stopped += 1;
                }
                Some(source) if **source != running.source => {
                    info!(source = %id, "source settings changed: restarting it");
                    self.restart.insert(id.clone(), (*source).clone());
                    let _ = running.stop.send(true);
                    restarted += 1;
                }
                Some(_) => {}
            }
        }
        let to_start: Vec<SourceConfig> = wanted
            .values()
            .filter(|s| !self.running.contains_key(&s.id))
            .map(|s| (*s).clone())
            .collect();
        self.failed.retain(|id, _| wanted.contains_key(id.as_str()));
        self.config = config;
        for source in to_start {
            info!(source = %source.id, "starting source");
            self.start(source);
            started += 1;
        }
        info!(
            started,
            stopped,
            restarted,
            running = self.running.len(),
            "config reloaded"
        );
    }
}
