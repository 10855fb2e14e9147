//! The group runtime: every source of the config runs on its own supervisor, all of them
//! sharing the warehouse's connections; a new config (SIGHUP) starts, stops and restarts only
//! the sources it changes.
//!
//! Invariants: a source is never run twice at once (a changed source starts again only after
//! its old run has stopped and loaded what it read); stopping a source (removed, paused with
//! `enabled = false`) keeps its position in the warehouse, so it resumes where it was when it
//! comes back; a config that fails to load changes nothing.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tracing::{error, info, warn};

use crate::config::{Config, SourceConfig};
use crate::observe::health;
use crate::pipeline::{RETRYING, SourceError, Turns, supervise_source};
use crate::sink::{Lease, Sink, SinkError, Warehouse};

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

/// How often the troubles readers report (a server they cannot reach) are recorded in the
/// warehouse for `tidemark status`.
const TROUBLE_EVERY: Duration = Duration::from_secs(2);

/// A source being run: the config it runs with and how to ask it to stop.
struct Running {
    source: SourceConfig,
    stop: watch::Sender<bool>,
}

/// The group's sources and what is to happen to them.
struct Fleet {
    config: Config,
    warehouse: Warehouse,
    /// What the sources take turns at (checks at start, copies).
    turns: Turns,
    tasks: JoinSet<(String, Result<(), SourceError>)>,
    running: HashMap<String, Running>,
    /// Sources to start once their previous run has stopped (their config changed).
    restart: HashMap<String, SourceConfig>,
    /// Sources that stopped on an error retrying cannot fix, with it; a reload starts them again.
    failed: HashMap<String, (SourceConfig, String)>,
    /// Active/standby: the lease, the sink that claims it, and the sources it holds now. A
    /// source runs only while held.
    leases: Option<Leases>,
}

/// The sources this process holds the lease of, and how it claims them.
struct Leases {
    lease: Lease,
    sink: Box<dyn Sink>,
    held: HashSet<String>,
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
    let mut warehouse = Warehouse::open(&config.warehouse)?;
    let mut sink = warehouse.sink().await?;
    sink.prepare().await?;
    let leases = match config.group.lease {
        Some(period) => {
            let lease = Lease {
                holder: holder_name(),
                period,
            };
            info!(holder = %lease.holder, lease_s = period.as_secs_f64(), "active/standby: running the sources whose lease this process holds");
            warehouse = warehouse.with_lease(lease.clone());
            Some(Leases {
                lease,
                sink,
                held: HashSet::new(),
            })
        }
        None => None,
    };
    report_inventory(&config);
    let enabled = config.sources.iter().filter(|s| s.enabled).count();
    info!(group = %config.group.name, sources = enabled, paused = config.sources.len() - enabled, warehouse = %config.warehouse.describe(), "group starting");
    let mut fleet = Fleet {
        turns: Turns::new(config.group.concurrent_snapshots),
        warehouse,
        tasks: JoinSet::new(),
        running: HashMap::new(),
        restart: HashMap::new(),
        failed: HashMap::new(),
        leases,
        config,
    };
    fleet.claim().await;
    for source in fleet.config.sources.clone() {
        if source.enabled && fleet.may_run(&source.id) {
            fleet.start(source);
        }
    }
    let mut renewals = tokio::time::interval(
        fleet
            .leases
            .as_ref()
            .map_or(Duration::from_secs(3600), |l| l.lease.period / 3),
    );
    renewals.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut troubles = tokio::time::interval(TROUBLE_EVERY);
    troubles.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut reloads_open = true;
    let mut stopping = false;
    loop {
        let standby = fleet.leases.is_some() && !stopping;
        if fleet.tasks.is_empty() && (fleet.config.fleet.is_none() || stopping) && !standby {
            break;
        }
        tokio::select! {
            _ = renewals.tick(), if standby => fleet.renew().await,
            _ = troubles.tick(), if !stopping => fleet.record_troubles().await,
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
            // The guard `wait_for` returns is dropped at once: it must not live across the other
            // arms' awaits (it is not Send).
            _ = async { shutdown.wait_for(|stop| *stop).await.map(|_| ()) }, if !stopping => {
                stopping = true;
                fleet.restart.clear();
                for running in fleet.running.values() {
                    let _ = running.stop.send(true);
                }
            }
        }
    }
    fleet.release_all().await;
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

/// A name for this process run, unique among the group's processes: host, process id and start
/// time (a restarted process is a new holder, and waits for its old lease to expire).
fn holder_name() -> Arc<str> {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown-host".to_owned());
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    Arc::from(format!("{host}:{}:{started}", std::process::id()))
}

impl Fleet {
    /// Whether this process may run source `id` now: always without leases, else while it
    /// holds the source's lease.
    fn may_run(&self, id: &str) -> bool {
        self.leases.as_ref().is_none_or(|l| l.held.contains(id))
    }

    /// Claims or renews the leases of every source the config enables; remembers which it
    /// holds. A warehouse that cannot be reached keeps what was held: the batches themselves
    /// check their lease when they commit.
    async fn claim(&mut self) {
        let Some(leases) = &mut self.leases else {
            return;
        };
        let wanted: Vec<String> = self
            .config
            .sources
            .iter()
            .filter(|s| s.enabled)
            .map(|s| s.id.clone())
            .collect();
        // Bounded, so that a warehouse that hangs does not hold up the group's loop (stop
        // requests, reloads): the leases then lapse on their own.
        let claimed = tokio::time::timeout(
            leases.lease.period / 3,
            leases.sink.claim_leases(&leases.lease, &wanted),
        )
        .await
        .unwrap_or_else(|_| {
            Err(SinkError::new(
                crate::error::ErrorKind::Retry,
                "the warehouse did not answer in time",
            ))
        });
        match claimed {
            Ok(held) => {
                let held: HashSet<String> = held.into_iter().collect();
                for id in held.difference(&leases.held) {
                    info!(source = %id, holder = %leases.lease.holder, "lease taken: this process runs the source");
                }
                for id in leases.held.difference(&held) {
                    if wanted.contains(id) {
                        warn!(source = %id, "lease lost to another process: stopping the source here");
                    }
                }
                let standby = wanted.len() - held.len();
                if standby > 0 && leases.held.is_empty() && held.is_empty() {
                    info!(
                        sources = standby,
                        "standby: another process holds the leases; taking over any that expire"
                    );
                }
                leases.held = held;
            }
            Err(e) => {
                warn!(error = %e, "could not renew the sources' leases; retrying (a batch commits only while its lease holds)");
            }
        }
    }

    /// Renews the leases, stops the sources whose lease is gone and starts those whose lease
    /// came to this process.
    async fn renew(&mut self) {
        self.claim().await;
        let lost: Vec<String> = self
            .running
            .keys()
            .filter(|id| !self.may_run(id))
            .cloned()
            .collect();
        for id in lost {
            if let Some(running) = self.running.get(&id) {
                self.restart.remove(&id);
                let _ = running.stop.send(true);
            }
        }
        let gained: Vec<SourceConfig> = self
            .config
            .sources
            .iter()
            .filter(|s| {
                s.enabled
                    && self.may_run(&s.id)
                    && !self.running.contains_key(&s.id)
                    && !self.failed.contains_key(&s.id)
            })
            .cloned()
            .collect();
        for source in gained {
            self.start(source);
        }
    }

    /// Records in each troubled source's progress record why its reader cannot reach its
    /// server (best effort: the log says it too); the source's next commit clears it.
    async fn record_troubles(&mut self) {
        let Some(troubles) = health::take_changed() else {
            return;
        };
        let troubles: Vec<(String, String)> = troubles
            .into_iter()
            .filter(|(id, _)| self.running.contains_key(id))
            .collect();
        if troubles.is_empty() {
            return;
        }
        let record = async {
            let mut sink = self.warehouse.sink().await?;
            for (id, message) in &troubles {
                sink.record_error(id, &format!("{RETRYING}{message}"))
                    .await?;
            }
            Ok::<_, SinkError>(())
        };
        match tokio::time::timeout(Duration::from_secs(10), record).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                warn!(error = %e, "could not record the sources' troubles in the warehouse")
            }
            Err(_) => warn!("could not record the sources' troubles in the warehouse in time"),
        }
    }

    /// Gives up every lease held, once the sources have stopped: a standby takes over at once.
    async fn release_all(&mut self) {
        let Some(leases) = &mut self.leases else {
            return;
        };
        let held: Vec<String> = leases.held.drain().collect();
        if held.is_empty() {
            return;
        }
        match leases.sink.release_leases(&leases.lease, &held).await {
            Ok(()) => info!(sources = held.len(), "leases given up"),
            Err(e) => warn!(error = %e, "could not give up the leases; they expire on their own"),
        }
    }

    fn start(&mut self, source: SourceConfig) {
        let (stop, stopped) = watch::channel(false);
        let id = source.id.clone();
        let run = supervise_source(
            source.clone(),
            &self.config,
            self.warehouse.clone(),
            self.turns.clone(),
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
        if let Some(source) = self.restart.remove(&id)
            && self.may_run(&id)
        {
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
            .filter(|s| !self.running.contains_key(&s.id) && self.may_run(&s.id))
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
