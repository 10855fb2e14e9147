//! Typed configuration loaded from TOML, with `${ENV}` interpolation and errors that name the
//! key and the line.
//!
//! Loading is all-or-nothing: [`Config::load`] returns a config in which every value has been
//! interpolated, parsed into its type (durations, sizes, modes, name templates) and checked
//! against the others (unique ids, valid and unique staging schemas), or the first
//! [`ConfigError`], whose one-line message reads ``file.toml:LINE: key `sources[1].kind`: message``.
//! Unknown keys are errors, never ignored, and so is a key of another kind (`slot` on a MySQL
//! source): each kind's settings live beside its code (`source::<kind>::config`,
//! `sink::<kind>::config`) and a loaded config holds only those of its kinds. Secrets in URLs
//! are held in [`SecretUrl`] and never appear in `Debug` or `Display` output. URLs may reference
//! secrets kept elsewhere (`${file:PATH}`, `${aws-sm:SECRET_ID}`): loading only parses them,
//! and [`SecretUrl::resolve`] fetches them when a connection opens, so loading stays offline.
//!
//! The file format, every key and its default are documented in `docs/config.md`.

mod build;
mod columns;
mod env;
mod error;
mod inventory;
mod kind;
mod locate;
mod raw;
mod secret;
mod source;
mod template;
mod units;
mod warehouse;

use std::path::{Path, PathBuf};
use std::time::Duration;

pub use columns::{ColumnAction, ColumnRule, ColumnRules, MaskSalt};
pub use error::{ConfigError, ConfigErrorKind};
pub use inventory::InventoryProblem;
pub use secret::SecretUrl;
pub use source::{
    SnapshotMode, SourceConfig, SourceKind, SourceSettings, StartPosition, TablePattern,
};
pub use units::{ByteSize, parse_duration, parse_size};
pub use warehouse::{WarehouseConfig, WarehouseKind};

use crate::secrets::SecretsSettings;

pub(crate) use source::schema_name_problem;

/// One source group's configuration: the group, its warehouse, batching and its sources.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file this config was loaded from (as given), for messages.
    pub path: PathBuf,
    /// `[secrets]`: where `${aws-sm:...}` references are fetched from.
    pub secrets: SecretsSettings,
    /// `[group]`.
    pub group: GroupConfig,
    /// `[warehouse]`.
    pub warehouse: WarehouseConfig,
    /// `[batch]`, defaults filled in.
    pub batch: BatchConfig,
    /// `[[sources]]` in file order, then the sources of the `[fleet]` inventory in its order;
    /// at least one unless there is an inventory.
    pub sources: Vec<SourceConfig>,
    /// `[fleet]`, when the config has an inventory.
    pub fleet: Option<FleetConfig>,
    /// The inventory lines that did not become sources, each with why.
    pub inventory_problems: Vec<InventoryProblem>,
}

/// `[fleet]`: sources listed in an inventory file (docs/fleet.md).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetConfig {
    /// The inventory (CSV), resolved against the config file's directory.
    pub inventory: PathBuf,
}

/// `[group]`: the service that runs all sources of this file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupConfig {
    /// Group name: letters, digits, `-` and `_`.
    pub name: String,
    /// Directory for caches and spill files (default `/var/lib/tidemark`); a relative path is
    /// resolved against the config file's directory. The state of record lives in the warehouse.
    pub state_dir: PathBuf,
    /// `mask_salt`: the salt of the hash that `mask` column rules write; a secret, never
    /// printed.
    pub mask_salt: Option<MaskSalt>,
    /// `lease`: when set, each source runs in one process at a time (active/standby), owning
    /// it through a lease row in the warehouse that lasts this long and is renewed every third
    /// of it.
    pub lease: Option<Duration>,
    /// `concurrent_snapshots`: how many of the group's sources copy tables at once (default
    /// 8); the others wait for a turn before they read their log.
    pub concurrent_snapshots: usize,
}

/// `[batch]`: a source's batch (all its tables together) is loaded when any limit is reached.
///
/// A batch ends only at a source transaction boundary, so one transaction larger than
/// `max_rows` / `max_bytes` makes one larger batch (spilled to files under `state_dir`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchConfig {
    /// Rows per batch, all tables of the source together (default 100000).
    pub max_rows: u64,
    /// Bytes per batch, all tables of the source together (default 64MiB).
    pub max_bytes: ByteSize,
    /// Longest a committed change waits before its batch is loaded (default 500ms).
    pub max_delay: Duration,
    /// Lag behind the source (now minus the last commit's timestamp) past which the source is
    /// catching up: batches then grow past `max_rows`/`max_bytes`, spilled to disk, so each
    /// key's many changes load as one row (default 10s).
    pub catch_up_lag: Duration,
    /// Largest catch-up batch, in encoded bytes on disk (default 1GiB).
    pub catch_up_max_bytes: ByteSize,
    /// A load taking longer than this is logged as a warning naming the table it waits on, and
    /// again each time as long again passes (default 10s).
    pub slow_load_warning: Duration,
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            max_rows: 100_000,
            max_bytes: ByteSize(64 << 20),
            max_delay: Duration::from_millis(500),
            catch_up_lag: Duration::from_secs(10),
            catch_up_max_bytes: ByteSize(1 << 30),
            slow_load_warning: Duration::from_secs(10),
        }
    }
}

impl Config {
    /// The ids of every source, comma-separated, for messages that name the choices.
    pub fn source_ids(&self) -> String {
        let ids: Vec<&str> = self.sources.iter().map(|s| s.id.as_str()).collect();
        ids.join(", ")
    }

    /// Reads and validates the config file at `path`, taking `${VAR}`s from the process
    /// environment.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::read(path, e))?;
        Config::from_str_at(&text, path)
    }

    /// Validates config `text`; `path` is used in messages and to resolve relative paths.
    /// `${VAR}`s come from the process environment.
    pub fn from_str_at(text: &str, path: &Path) -> Result<Config, ConfigError> {
        Config::from_str_with_env(text, path, &|name| std::env::var(name).ok())
    }

    /// Like [`Config::from_str_at`], with `${VAR}`s looked up by `env` instead of the process
    /// environment (for tests and for callers with their own secret store).
    pub fn from_str_with_env(
        text: &str,
        path: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        build::build(text, path, env)
    }

    /// The source with this id.
    pub fn source(&self, id: &str) -> Option<&SourceConfig> {
        self.sources.iter().find(|s| s.id == id)
    }
}
