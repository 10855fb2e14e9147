//! Turns the raw, spanned file into typed [`Config`]: interpolation, units, cross-field rules.
//!
//! Every check here reports through [`Builder::error`], so each message carries the file, the
//! line of the offending value and its key path. The first problem found is returned.

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use toml::Spanned;

use super::columns::{ColumnAction, ColumnRule, ColumnRules, MaskSalt};
use super::env::{EnvError, Piece, interpolate, interpolate_pieces};
use super::error::{ConfigError, ConfigErrorKind};
use super::inventory::{self, InventoryProblem};
use super::kind::KindTable;
use super::locate::{Locator, join_key};
use super::raw::{
    RawBatch, RawColumnRule, RawConfig, RawFleet, RawGroup, RawSecrets, RawSource, RawWarehouse,
    Str,
};
use super::secret::SecretUrl;
use super::source::{
    DEFAULT_TARGET_SCHEMA, SnapshotMode, SourceConfig, SourceKind, SourceSettings, StartPosition,
    TARGET_SCHEMA_PLACEHOLDERS, TARGET_TABLE_PLACEHOLDERS, TablePattern, default_target_table,
    render_target_schema, schema_name_problem,
};
use super::template;
use super::units::{ByteSize, parse_duration, parse_size};
use super::warehouse::{WarehouseConfig, WarehouseKind};
use super::{BatchConfig, Config, FleetConfig, GroupConfig};
use crate::secrets::{SecretStore, SecretsSettings};
use crate::sink::postgres::DEFAULT_MAX_CONNECTIONS;
use crate::sink::postgres::config::PostgresWarehouseConfig;
use crate::sink::redshift::config::{
    DEFAULT_S3_PREFIX, RedshiftAuth, RedshiftConfig, RedshiftTarget, bucket_problem,
    iam_role_problem, normalized_s3_prefix, parse_oversize, parse_wide_decimal,
};
use crate::sink::redshift::encode::Oversize;
use crate::sink::redshift::types::WideDecimal;
use crate::source::mysql::config::{MysqlSettings, checked_server_id};
use crate::source::postgres::config::{PostgresSettings, slot_name_problem};

type Result<T> = std::result::Result<T, ConfigError>;

/// `[warehouse] soft_delete`, default false.
fn soft_delete(raw: &RawWarehouse) -> bool {
    raw.soft_delete.as_ref().is_some_and(|v| *v.get_ref())
}

/// Default `[group] state_dir`.
const DEFAULT_STATE_DIR: &str = "/var/lib/tidemark";
/// Default `[[sources]] snapshot_chunk_rows`: large enough that a chunk's transaction costs
/// little beside its rows, small enough that a crash re-copies little.
const DEFAULT_SNAPSHOT_CHUNK_ROWS: u64 = 50_000;

/// Default `[[sources]] snapshot_parallelism`: one reader per core, at most 4 (more readers
/// load the source more than they speed the copy: the warehouse loads one chunk at a time).
fn default_snapshot_parallelism() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get().clamp(1, 4))
}

/// Shortest and longest `[group] lease`: renewals come every third of it, so a shorter one
/// expires on a slow warehouse round trip; a longer one leaves sources unread for long.
const MIN_LEASE: Duration = Duration::from_secs(3);
const MAX_LEASE: Duration = Duration::from_secs(600);

/// Default `[group] concurrent_snapshots`: as many sources as AWS DMS loads tables at once by
/// default (`MaxFullLoadSubTasks`), each reading `snapshot_parallelism` chunks.
const DEFAULT_CONCURRENT_SNAPSHOTS: usize = 8;

/// Default `[[sources]] heartbeat`.
const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(5);
/// Longest accepted `heartbeat`.
const MAX_HEARTBEAT: Duration = Duration::from_secs(3600);

/// Parses and validates `text` (see [`Config::from_str_with_env`]).
pub(crate) fn build(
    text: &str,
    path: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config> {
    let builder = Builder {
        path,
        locator: Locator::new(text),
        env,
        store: SecretStore::new(SecretsSettings::default()),
    };
    let raw: RawConfig = toml::from_str(text).map_err(|e| builder.toml_error(&e))?;
    // URLs share one store, which fetches with the `[secrets]` settings.
    let secrets = match &raw.secrets {
        Some(secrets) => builder.secrets(secrets.get_ref())?,
        None => SecretsSettings::default(),
    };
    let builder = Builder {
        store: SecretStore::new(secrets),
        ..builder
    };
    builder.config(raw)
}

/// Validation context: where messages point and where `${VAR}`s come from.
struct Builder<'a> {
    path: &'a Path,
    locator: Locator<'a>,
    env: &'a dyn Fn(&str) -> Option<String>,
    /// Resolves the secret references of every URL of this config.
    store: Arc<SecretStore>,
}

impl Builder<'_> {
    /// An error about `key`, located at `span`.
    fn error(
        &self,
        kind: ConfigErrorKind,
        span: Range<usize>,
        key: &str,
        message: impl Into<String>,
    ) -> ConfigError {
        ConfigError::new(
            kind,
            self.path,
            Some(self.locator.line_of(span.start)),
            Some(key.to_string()),
            message,
        )
    }

    fn invalid(&self, span: Range<usize>, key: &str, message: impl Into<String>) -> ConfigError {
        self.error(ConfigErrorKind::Invalid, span, key, message)
    }

    /// Translates a serde/TOML error, recovering the key path from its span.
    fn toml_error(&self, error: &toml::de::Error) -> ConfigError {
        let message = error.message();
        let span = error.span();
        let line = span.as_ref().map(|s| self.locator.line_of(s.start));
        let path_at = |s: &Range<usize>| self.locator.path_at(s).map(str::to_string);
        let make = |kind, line, key: Option<String>, message: String| {
            ConfigError::new(kind, self.path, line, key, message)
        };

        if let Some(field) = message
            .strip_prefix("missing field `")
            .and_then(|rest| rest.strip_suffix('`'))
        {
            let parent = span.as_ref().and_then(path_at).unwrap_or_default();
            let key = join_key(&parent, field);
            // A top-level key has no table to point at.
            let line = if parent.is_empty() { None } else { line };
            let hint = if parent.is_empty() {
                format!(" (add a [{field}] section)")
            } else {
                String::new()
            };
            return make(
                ConfigErrorKind::MissingKey,
                line,
                Some(key),
                format!("required key is missing{hint}"),
            );
        }
        if let Some(rest) = message.strip_prefix("unknown field `") {
            let (field, expected) = rest.split_once('`').unwrap_or((rest, ""));
            let key = span
                .as_ref()
                .and_then(path_at)
                .unwrap_or_else(|| field.to_string());
            let expected = expected.trim_start_matches(',').trim();
            return make(
                ConfigErrorKind::UnknownKey,
                line,
                Some(key),
                format!("unknown key; {expected}"),
            );
        }
        if message.starts_with("invalid type") || message.starts_with("invalid value") {
            let key = span.as_ref().and_then(path_at);
            let hint = if key.as_deref() == Some("sources") {
                "; write each source as a [[sources]] table (double brackets)"
            } else {
                ""
            };
            let message = message
                .replace("expected i64", "expected an integer")
                .replace("a sequence", "an array")
                .replace("type: map", "type: table");
            return make(
                ConfigErrorKind::WrongType,
                line,
                key,
                format!("{message}{hint}"),
            );
        }
        let key = span.as_ref().and_then(|s| {
            path_at(s).or_else(|| {
                let text = self.locator.text_at(s).trim();
                (!text.is_empty() && message == "duplicate key")
                    .then(|| join_key(self.locator.section_at(s.start).unwrap_or(""), text))
            })
        });
        make(
            ConfigErrorKind::Syntax,
            line,
            key,
            format!("invalid TOML: {message}"),
        )
    }

    /// The interpolated value of a string key.
    fn string(&self, value: &Str, key: &str) -> Result<String> {
        interpolate(value.get_ref(), self.env).map_err(|e| self.env_error(&e, value, key))
    }

    fn env_error(&self, error: &EnvError, value: &Str, key: &str) -> ConfigError {
        let message = error.to_string();
        match error {
            EnvError::Missing(_)
            | EnvError::Malformed(_)
            | EnvError::UnknownKind(_)
            | EnvError::SecretNotAllowed => {
                self.error(ConfigErrorKind::Env, value.span(), key, message)
            }
        }
    }

    /// A URL key: interpolated, its secret references (`${file:...}`, `${aws-sm:...}`) kept to
    /// be fetched at each connect.
    fn url(&self, value: &Str, key: &str) -> Result<SecretUrl> {
        let base = self.path.parent().unwrap_or(Path::new(""));
        let pieces = interpolate_pieces(value.get_ref(), self.env, base)
            .map_err(|e| self.env_error(&e, value, key))?;
        if pieces.iter().all(|p| matches!(p, Piece::Text(_))) {
            return Ok(SecretUrl::new(self.non_empty(value, key)?));
        }
        let origin = format!(
            "{}:{}: key `{key}`",
            self.path.display(),
            self.locator.line_of(value.span().start)
        );
        Ok(SecretUrl::with_references(
            pieces,
            origin,
            self.store.clone(),
        ))
    }

    /// `[secrets]`.
    fn secrets(&self, raw: &RawSecrets) -> Result<SecretsSettings> {
        let endpoint = self.optional(raw.endpoint.as_ref(), "secrets.endpoint")?;
        if let (Some(value), Some(endpoint)) = (&raw.endpoint, &endpoint)
            && !(endpoint.starts_with("https://") || endpoint.starts_with("http://"))
        {
            return Err(self.invalid(
                value.span(),
                "secrets.endpoint",
                "must be an http:// or https:// URL",
            ));
        }
        Ok(SecretsSettings {
            region: self.optional(raw.region.as_ref(), "secrets.region")?,
            endpoint,
        })
    }

    /// The interpolated value of a string key that must not be empty.
    fn non_empty(&self, value: &Str, key: &str) -> Result<String> {
        let text = self.string(value, key)?;
        if text.trim().is_empty() {
            return Err(self.invalid(value.span(), key, "must not be empty"));
        }
        Ok(text)
    }

    fn optional(&self, value: Option<&Str>, key: &str) -> Result<Option<String>> {
        value.map(|v| self.non_empty(v, key)).transpose()
    }

    fn duration(&self, value: &Str, key: &str) -> Result<Duration> {
        let text = self.string(value, key)?;
        let duration = parse_duration(&text).map_err(|m| self.invalid(value.span(), key, m))?;
        if duration.is_zero() {
            return Err(self.invalid(value.span(), key, "must be greater than zero"));
        }
        Ok(duration)
    }

    fn size(&self, value: &Str, key: &str) -> Result<ByteSize> {
        let text = self.string(value, key)?;
        let size = parse_size(&text).map_err(|m| self.invalid(value.span(), key, m))?;
        if size.bytes() == 0 {
            return Err(self.invalid(value.span(), key, "must be greater than zero"));
        }
        Ok(size)
    }

    fn config(&self, raw: RawConfig) -> Result<Config> {
        let group = self.group(raw.group.get_ref())?;
        let warehouse = self.warehouse(&raw.warehouse, &group.name)?;
        if let (Some(lease), WarehouseKind::Redshift) =
            (&raw.group.get_ref().lease, warehouse.kind())
        {
            return Err(self.error(
                ConfigErrorKind::Unsupported,
                lease.span(),
                "group.lease",
                "active/standby leases need a Postgres warehouse for now; with Redshift run one process per group (remove lease)",
            ));
        }
        let batch = match &raw.batch {
            Some(batch) => self.batch(batch.get_ref())?,
            None => BatchConfig::default(),
        };
        if raw.sources.is_empty() && raw.fleet.is_none() {
            return Err(ConfigError::new(
                ConfigErrorKind::MissingKey,
                self.path,
                None,
                Some("sources".into()),
                "no sources: add at least one [[sources]] table, or a [fleet] inventory",
            ));
        }
        let mut sources = Vec::with_capacity(raw.sources.len());
        for (i, source) in raw.sources.iter().enumerate() {
            sources.push(self.source(
                source.get_ref(),
                source.span(),
                &format!("sources[{i}]"),
                group.mask_salt.as_ref(),
            )?);
        }
        self.check_unique(&raw.sources, &sources)?;
        let (fleet, inventory_problems) = match &raw.fleet {
            Some(fleet) => {
                let (config, problems) =
                    self.fleet(fleet, &mut sources, group.mask_salt.as_ref())?;
                (Some(config), problems)
            }
            None => (None, Vec::new()),
        };
        Ok(Config {
            path: self.path.to_path_buf(),
            secrets: self.store.settings().clone(),
            group,
            warehouse,
            batch,
            sources,
            fleet,
            inventory_problems,
        })
    }

    /// Adds a source for every good line of the `[fleet]` inventory to `sources`; returns the
    /// fleet's settings and the lines left out, each with why.
    fn fleet(
        &self,
        raw: &Spanned<RawFleet>,
        sources: &mut Vec<SourceConfig>,
        mask_salt: Option<&MaskSalt>,
    ) -> Result<(FleetConfig, Vec<InventoryProblem>)> {
        let header = raw.span();
        let raw = raw.get_ref();
        let path = self.relative_path(PathBuf::from(
            self.non_empty(&raw.inventory, "fleet.inventory")?,
        ));
        let url_template = |value: &Option<Str>, key: &str, default: &str| -> Result<String> {
            let Some(value) = value else {
                return Ok(default.to_string());
            };
            let text = self.non_empty(value, key)?;
            template::check(&text, inventory::URL_PLACEHOLDERS)
                .map_err(|m| self.invalid(value.span(), key, m))?;
            Ok(text)
        };
        let urls = inventory::UrlTemplates {
            mysql: url_template(
                &raw.mysql_url,
                "fleet.mysql_url",
                inventory::DEFAULT_MYSQL_URL,
            )?,
            postgres: url_template(
                &raw.postgres_url,
                "fleet.postgres_url",
                inventory::DEFAULT_POSTGRES_URL,
            )?,
        };
        let template = raw.template.as_ref().map(Spanned::get_ref);
        if let Some(template) = template {
            for (name, value) in [
                ("id", &template.id),
                ("url", &template.url),
                ("tenant", &template.tenant),
                ("region", &template.region),
                ("function", &template.function),
            ] {
                if let Some(value) = value {
                    return Err(self.invalid(
                        value.span(),
                        &format!("fleet.template.{name}"),
                        "is set per tenant by the inventory's columns, not in the template; remove it",
                    ));
                }
            }
        }
        let text = std::fs::read_to_string(&path).map_err(|e| {
            self.invalid(
                raw.inventory.span(),
                "fleet.inventory",
                format!("cannot read the inventory {}: {e}", path.display()),
            )
        })?;
        let lines = inventory::parse(&text).map_err(|(line, message)| {
            ConfigError::new(
                ConfigErrorKind::Invalid,
                &path,
                Some(line),
                None,
                format!("{message} (the inventory of {})", self.path.display()),
            )
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        let mut problems = Vec::new();
        let mut ids: HashMap<String, String> = sources
            .iter()
            .map(|s| (s.id.clone(), "a [[sources]] table".to_string()))
            .collect();
        let mut schemas: HashMap<String, String> = sources
            .iter()
            .map(|s| (s.staging_schema(), s.id.clone()))
            .collect();
        for line in &lines {
            let problem = |message: String| InventoryProblem {
                path: path.clone(),
                line: line.line,
                message,
            };
            let raw_source = match inventory::raw_source(
                line,
                template,
                &urls,
                base,
                header.clone(),
                self.env,
            ) {
                Ok(raw_source) => raw_source,
                Err(message) => {
                    problems.push(problem(message));
                    continue;
                }
            };
            let at = "inventory";
            let source = match self.source(&raw_source, header.clone(), at, mask_salt) {
                Ok(mut source) => {
                    // Secrets fetched at connect come from the line's credentials column.
                    source.url = source.url.with_origin(format!(
                        "{}:{}: column `credentials`",
                        path.display(),
                        line.line
                    ));
                    source
                }
                Err(e) => {
                    // Keys that a line sets read as its columns; others come from the template.
                    let key = e.key().unwrap_or_default().trim_start_matches("inventory.");
                    problems.push(problem(format!("`{key}`: {}", e.message())));
                    continue;
                }
            };
            if let Some(first) = ids.get(&source.id) {
                problems.push(problem(format!(
                    "source id `{}` is already used by {first}; set the `id` column",
                    source.id
                )));
                continue;
            }
            let schema = source.staging_schema();
            if let Some(first) = schemas.get(&schema) {
                problems.push(problem(format!(
                    "staging schema `{schema}` is already used by source `{first}`; give each line its own tenant/region/function or a target_schema column"
                )));
                continue;
            }
            ids.insert(source.id.clone(), format!("line {}", line.line));
            schemas.insert(schema, source.id.clone());
            sources.push(source);
        }
        Ok((FleetConfig { inventory: path }, problems))
    }

    /// `path` as given, or, when relative, resolved against the config file's directory.
    fn relative_path(&self, path: PathBuf) -> PathBuf {
        if path.is_relative()
            && let Some(base) = self.path.parent()
        {
            return base.join(path);
        }
        path
    }

    fn group(&self, raw: &RawGroup) -> Result<GroupConfig> {
        let name = self.non_empty(&raw.name, "group.name")?;
        if let Some(problem) = name_problem(&name) {
            return Err(self.invalid(raw.name.span(), "group.name", problem));
        }
        let state_dir = match &raw.state_dir {
            Some(dir) => PathBuf::from(self.non_empty(dir, "group.state_dir")?),
            None => PathBuf::from(DEFAULT_STATE_DIR),
        };
        let state_dir = self.relative_path(state_dir);
        let mask_salt = raw
            .mask_salt
            .as_ref()
            .map(|salt| self.non_empty(salt, "group.mask_salt"))
            .transpose()?
            .map(|salt| MaskSalt::new(&salt));
        let lease = match &raw.lease {
            Some(value) => {
                let period = self.duration(value, "group.lease")?;
                if !(MIN_LEASE..=MAX_LEASE).contains(&period) {
                    return Err(self.invalid(
                        value.span(),
                        "group.lease",
                        "must be from 3s to 10m (a standby takes a source over within one lease)",
                    ));
                }
                Some(period)
            }
            None => None,
        };
        let concurrent_snapshots = match &raw.concurrent_snapshots {
            Some(value) => self.bounded(value, "group.concurrent_snapshots", 1, 1000)? as usize,
            None => DEFAULT_CONCURRENT_SNAPSHOTS,
        };
        Ok(GroupConfig {
            name,
            state_dir,
            mask_salt,
            lease,
            concurrent_snapshots,
        })
    }

    fn warehouse(&self, raw: &Spanned<RawWarehouse>, group: &str) -> Result<WarehouseConfig> {
        let header = raw.span();
        let raw = raw.get_ref();
        let kind: WarehouseKind = self.kind(&raw.kind, "warehouse.kind", "warehouse")?;
        self.reject_other_kinds_keys(raw.kind_keys(), kind, "warehouse", "warehouse")?;
        match kind {
            WarehouseKind::Postgres => {
                let Some(url) = &raw.url else {
                    return Err(self.error(
                        ConfigErrorKind::MissingKey,
                        header,
                        "warehouse.url",
                        "required when kind = \"postgres\"",
                    ));
                };
                let url = self.postgres_url(url, "warehouse.url")?;
                let max_connections = match &raw.max_connections {
                    Some(value) => {
                        self.bounded(value, "warehouse.max_connections", 1, 1000)? as usize
                    }
                    None => DEFAULT_MAX_CONNECTIONS,
                };
                Ok(WarehouseConfig::Postgres(PostgresWarehouseConfig {
                    url,
                    soft_delete: soft_delete(raw),
                    max_connections,
                }))
            }
            WarehouseKind::Redshift => self
                .redshift(raw, header, group)
                .map(|config| WarehouseConfig::Redshift(Box::new(config))),
            WarehouseKind::Null => Ok(WarehouseConfig::Null),
        }
    }

    fn redshift(
        &self,
        raw: &RawWarehouse,
        header: Range<usize>,
        group: &str,
    ) -> Result<RedshiftConfig> {
        let required = |value: Option<&Str>, name: &str| -> Result<String> {
            let key = format!("warehouse.{name}");
            match value {
                Some(v) => self.non_empty(v, &key),
                None => Err(self.error(
                    ConfigErrorKind::MissingKey,
                    header.clone(),
                    &key,
                    "required when kind = \"redshift\"",
                )),
            }
        };
        let cluster_id = self.optional(raw.cluster_id.as_ref(), "warehouse.cluster_id")?;
        let workgroup = self.optional(raw.workgroup.as_ref(), "warehouse.workgroup")?;
        let secret_arn = self.optional(raw.secret_arn.as_ref(), "warehouse.secret_arn")?;
        let db_user = self.optional(raw.db_user.as_ref(), "warehouse.db_user")?;
        let (target, auth) = match (cluster_id, workgroup) {
            (Some(_), Some(_)) => {
                let span = raw.workgroup.as_ref().map_or(header.clone(), Spanned::span);
                return Err(self.invalid(
                    span,
                    "warehouse.workgroup",
                    "set either cluster_id (provisioned cluster) or workgroup (Serverless), not both",
                ));
            }
            (None, None) => {
                return Err(self.error(
                    ConfigErrorKind::MissingKey,
                    header,
                    "warehouse.cluster_id",
                    "kind = \"redshift\" needs cluster_id (provisioned cluster) or workgroup (Serverless)",
                ));
            }
            (Some(cluster), None) => {
                let auth = match (secret_arn, db_user) {
                    (Some(_), Some(_)) => {
                        let span = raw.db_user.as_ref().map_or(header.clone(), Spanned::span);
                        return Err(self.invalid(
                            span,
                            "warehouse.db_user",
                            "set either secret_arn or db_user, not both",
                        ));
                    }
                    (Some(arn), None) => RedshiftAuth::SecretArn(arn),
                    (None, Some(user)) => RedshiftAuth::DbUser(user),
                    (None, None) => {
                        return Err(self.error(
                            ConfigErrorKind::MissingKey,
                            header,
                            "warehouse.secret_arn",
                            "a provisioned cluster needs secret_arn (Secrets Manager) or db_user (temporary credentials)",
                        ));
                    }
                };
                (RedshiftTarget::Cluster(cluster), auth)
            }
            (None, Some(workgroup)) => {
                if let Some(user) = &raw.db_user {
                    return Err(self.invalid(
                        user.span(),
                        "warehouse.db_user",
                        "Redshift Serverless takes no db_user (the IAM identity is used); use secret_arn or remove db_user",
                    ));
                }
                let auth = secret_arn.map_or(RedshiftAuth::Iam, RedshiftAuth::SecretArn);
                (RedshiftTarget::Workgroup(workgroup), auth)
            }
        };
        let database = required(raw.database.as_ref(), "database")?;
        let s3_bucket = required(raw.s3_bucket.as_ref(), "s3_bucket")?;
        if let Some(problem) = bucket_problem(&s3_bucket) {
            let span = raw.s3_bucket.as_ref().map_or(header.clone(), Spanned::span);
            return Err(self.invalid(span, "warehouse.s3_bucket", problem));
        }
        let s3_prefix = normalized_s3_prefix(
            &self
                .optional(raw.s3_prefix.as_ref(), "warehouse.s3_prefix")?
                .unwrap_or_else(|| DEFAULT_S3_PREFIX.to_string()),
        );
        let iam_role = required(raw.iam_role.as_ref(), "iam_role")?;
        if let Some(problem) = iam_role_problem(&iam_role) {
            let span = raw.iam_role.as_ref().map_or(header.clone(), Spanned::span);
            return Err(self.invalid(span, "warehouse.iam_role", problem));
        }
        let region = required(raw.region.as_ref(), "region")?;
        let s3_endpoint = self.optional(raw.s3_endpoint.as_ref(), "warehouse.s3_endpoint")?;
        let data_api_endpoint = self.optional(
            raw.data_api_endpoint.as_ref(),
            "warehouse.data_api_endpoint",
        )?;
        for (resolved, raw_value, key) in [
            (&s3_endpoint, &raw.s3_endpoint, "warehouse.s3_endpoint"),
            (
                &data_api_endpoint,
                &raw.data_api_endpoint,
                "warehouse.data_api_endpoint",
            ),
        ] {
            if let (Some(url), Some(raw_value)) = (resolved, raw_value)
                && !(url.starts_with("http://") || url.starts_with("https://"))
            {
                return Err(self.invalid(
                    raw_value.span(),
                    key,
                    "must be an http:// or https:// URL",
                ));
            }
        }
        let oversize = match &raw.oversize {
            Some(value) => parse_oversize(&self.string(value, "warehouse.oversize")?)
                .ok_or_else(|| {
                    self.invalid(
                        value.span(),
                        "warehouse.oversize",
                        "must be \"fail\" (stop the table with an error) or \"truncate\" (cut the value and flag the row)",
                    )
                })?,
            None => Oversize::default(),
        };
        let wide_decimal = match &raw.wide_decimal {
            Some(value) => parse_wide_decimal(&self.string(value, "warehouse.wide_decimal")?)
                .ok_or_else(|| {
                    self.invalid(
                        value.span(),
                        "warehouse.wide_decimal",
                        "must be \"text\" (exact digits as text) or \"decimal38\" (numeric(38,s))",
                    )
                })?,
            None => WideDecimal::default(),
        };
        let drop_dropped_columns = match &raw.dropped_columns {
            Some(value) => match self.string(value, "warehouse.dropped_columns")?.as_str() {
                "keep" => false,
                "drop" => true,
                _ => {
                    return Err(self.invalid(
                        value.span(),
                        "warehouse.dropped_columns",
                        "must be \"keep\" (the column stays, NULL in rows changed afterwards) or \"drop\" (ALTER TABLE DROP COLUMN)",
                    ));
                }
            },
            None => false,
        };
        let keep_files = match &raw.keep_files {
            Some(value) => {
                let text = self.string(value, "warehouse.keep_files")?;
                parse_duration(&text)
                    .map_err(|m| self.invalid(value.span(), "warehouse.keep_files", m))?
            }
            None => Duration::ZERO,
        };
        Ok(RedshiftConfig {
            group: group.to_owned(),
            target,
            database,
            auth,
            s3_bucket,
            s3_prefix,
            iam_role,
            region,
            s3_endpoint,
            s3_path_style: raw.s3_path_style.as_ref().is_some_and(|v| *v.get_ref()),
            data_api_endpoint,
            oversize,
            wide_decimal,
            keep_files,
            soft_delete: soft_delete(raw),
            drop_dropped_columns,
        })
    }

    fn batch(&self, raw: &RawBatch) -> Result<BatchConfig> {
        let mut batch = BatchConfig::default();
        if let Some(rows) = &raw.max_rows {
            batch.max_rows = u64::try_from(*rows.get_ref())
                .ok()
                .filter(|&n| n > 0)
                .ok_or_else(|| {
                    self.invalid(rows.span(), "batch.max_rows", "must be a positive integer")
                })?;
        }
        if let Some(bytes) = &raw.max_bytes {
            batch.max_bytes = self.size(bytes, "batch.max_bytes")?;
        }
        if let Some(delay) = &raw.max_delay {
            batch.max_delay = self.duration(delay, "batch.max_delay")?;
        }
        if let Some(lag) = &raw.catch_up_lag {
            batch.catch_up_lag = self.duration(lag, "batch.catch_up_lag")?;
        }
        if let Some(bytes) = &raw.catch_up_max_bytes {
            batch.catch_up_max_bytes = self.size(bytes, "batch.catch_up_max_bytes")?;
        }
        if let Some(after) = &raw.slow_load_warning {
            batch.slow_load_warning = self.duration(after, "batch.slow_load_warning")?;
        }
        Ok(batch)
    }

    fn postgres_url(&self, value: &Str, key: &str) -> Result<SecretUrl> {
        let url = self.url(value, key)?;
        let Some(probe) = url.probe() else {
            // The whole URL is a secret: checked when it is fetched.
            return Ok(url);
        };
        match url.scheme() {
            Some("postgres" | "postgresql") => {
                // TLS settings are checked here so a typo points at its line; the CA file is
                // read only when connecting (it may be mounted later).
                match crate::tls::split_postgres_url(&probe) {
                    Ok(_) => Ok(url),
                    Err(e) => Err(self.invalid(value.span(), key, e.to_string())),
                }
            }
            _ => Err(self.invalid(
                value.span(),
                key,
                "must be a postgres:// URL (postgres://user:password@host:5432/database)",
            )),
        }
    }

    fn mysql_url(&self, value: &Str, key: &str) -> Result<SecretUrl> {
        let url = self.url(value, key)?;
        let Some(probe) = url.probe() else {
            // The whole URL is a secret: checked when it is fetched.
            return Ok(url);
        };
        if url.scheme() != Some("mysql") {
            return Err(self.invalid(
                value.span(),
                key,
                "must be a mysql:// URL (mysql://user:password@host:3306), also for MariaDB",
            ));
        }
        let checked = crate::tls::split_mysql_url(&probe)
            .map_err(|e| e.to_string())
            .and_then(|(driver_url, _)| {
                mysql_async::Opts::from_url(&driver_url)
                    .map_err(|e| format!("not a valid MySQL URL: {}", url.scrub(&e.to_string())))
            });
        if let Err(problem) = checked {
            return Err(self.invalid(value.span(), key, problem));
        }
        Ok(url)
    }

    /// A key every source needs, or an error at the source's table (`header`).
    fn required<'r>(
        &self,
        value: &'r Option<Str>,
        header: &Range<usize>,
        key: &str,
    ) -> Result<&'r Str> {
        value.as_ref().ok_or_else(|| {
            self.error(
                ConfigErrorKind::MissingKey,
                header.clone(),
                key,
                "required key is missing",
            )
        })
    }

    /// One source from its raw table; `header` is the table's span, `at` its key path.
    fn source(
        &self,
        raw: &RawSource,
        header: Range<usize>,
        at: &str,
        mask_salt: Option<&MaskSalt>,
    ) -> Result<SourceConfig> {
        let key = |name: &str| format!("{at}.{name}");
        let raw_id = self.required(&raw.id, &header, &key("id"))?;
        let id = self.non_empty(raw_id, &key("id"))?;
        if let Some(problem) = name_problem(&id) {
            return Err(self.invalid(raw_id.span(), &key("id"), problem));
        }
        let raw_kind = self.required(&raw.kind, &header, &key("kind"))?;
        let kind: SourceKind = self.kind(raw_kind, &key("kind"), "source")?;
        self.reject_other_kinds_keys(raw.kind_keys(), kind, at, "source")?;
        let raw_url = self.required(&raw.url, &header, &key("url"))?;
        let url = match kind {
            SourceKind::Mysql => self.mysql_url(raw_url, &key("url"))?,
            SourceKind::Postgres => self.postgres_url(raw_url, &key("url"))?,
        };
        let tenant = self.non_empty(
            self.required(&raw.tenant, &header, &key("tenant"))?,
            &key("tenant"),
        )?;
        let region = self.non_empty(
            self.required(&raw.region, &header, &key("region"))?,
            &key("region"),
        )?;
        let function = self.non_empty(
            self.required(&raw.function, &header, &key("function"))?,
            &key("function"),
        )?;
        let raw_snapshot = self.required(&raw.snapshot, &header, &key("snapshot"))?;
        let target_schema = self.target_schema(raw, at, &id, &tenant, &region, &function)?;
        let include = match &raw.include {
            Some(list) if list.get_ref().is_empty() => {
                return Err(self.invalid(
                    list.span(),
                    &key("include"),
                    "is empty, so nothing would be replicated; list database.table patterns, or remove the key to include every table",
                ));
            }
            Some(list) => self.patterns(list.get_ref(), &key("include"))?,
            None => vec![
                TablePattern::parse("*.*")
                    .map_err(|m| self.invalid(raw_id.span(), &key("include"), m))?,
            ],
        };
        let exclude = match &raw.exclude {
            Some(list) => self.patterns(list.get_ref(), &key("exclude"))?,
            None => Vec::new(),
        };
        let target_table = match &raw.target_table {
            Some(value) => self.target_table(value, &key("target_table"))?,
            None => default_target_table(&include).to_string(),
        };
        let replicated = |schema: &str, table: &str| {
            !kind.is_system_schema(schema)
                && include.iter().any(|p| p.matches(schema, table))
                && !exclude.iter().any(|p| p.matches(schema, table))
        };
        let table_names = match &raw.table_names {
            Some(names) => self.table_names(names.get_ref(), &key("table_names"), replicated)?,
            None => BTreeMap::new(),
        };
        let columns = self.column_rules(raw.columns.as_deref(), at, mask_salt)?;
        let snapshot = self.snapshot(raw_snapshot, &key("snapshot"))?;
        let snapshot_parallelism = match &raw.snapshot_parallelism {
            Some(value) => self.bounded(value, &key("snapshot_parallelism"), 1, 64)? as usize,
            None => default_snapshot_parallelism(),
        };
        let snapshot_chunk_rows = match &raw.snapshot_chunk_rows {
            Some(value) => self.bounded(value, &key("snapshot_chunk_rows"), 100, 10_000_000)?,
            None => DEFAULT_SNAPSHOT_CHUNK_ROWS,
        };
        let heartbeat = match &raw.heartbeat {
            Some(value) => {
                let heartbeat = self.duration(value, &key("heartbeat"))?;
                if heartbeat > MAX_HEARTBEAT {
                    return Err(self.invalid(
                        value.span(),
                        &key("heartbeat"),
                        "must be at most 1h",
                    ));
                }
                heartbeat
            }
            None => DEFAULT_HEARTBEAT,
        };
        let start = match &raw.start {
            Some(value) => match self.string(value, &key("start"))?.as_str() {
                "end" => StartPosition::End,
                other => {
                    return Err(self.error(
                        ConfigErrorKind::Unsupported,
                        value.span(),
                        &key("start"),
                        format!(
                            "start = \"{other}\" is not supported; only \"end\" (the current end of the log) is implemented for now"
                        ),
                    ));
                }
            },
            None => StartPosition::End,
        };
        let settings = match kind {
            SourceKind::Mysql => SourceSettings::Mysql(self.mysql_settings(raw, &id, at)?),
            SourceKind::Postgres => SourceSettings::Postgres(self.postgres_settings(raw, &id, at)?),
        };
        Ok(SourceConfig {
            id,
            settings,
            url,
            tenant,
            region,
            function,
            target_schema,
            target_table,
            include,
            exclude,
            table_names,
            columns,
            snapshot,
            snapshot_parallelism,
            snapshot_chunk_rows,
            heartbeat,
            start,
            enabled: raw.enabled.as_ref().is_none_or(|v| *v.get_ref()),
        })
    }

    /// The `kind` of a table of family `K` (a source, the warehouse): one of `K::ALL`.
    fn kind<K: KindTable>(&self, value: &Str, key: &str, family: &str) -> Result<K> {
        let name = self.string(value, key)?;
        K::parse(&name).ok_or_else(|| {
            let expected: Vec<String> = K::ALL
                .iter()
                .map(|kind| format!("\"{kind}\" ({})", kind.product()))
                .collect();
            self.invalid(
                value.span(),
                key,
                format!(
                    "unknown {family} kind `{name}`; expected {}",
                    one_of(&expected)
                ),
            )
        })
    }

    /// A key that only tables of another kind accept is an error naming the key, its line and
    /// the kind it belongs to: silently ignoring it would hide a wrong `kind` or a misplaced key.
    /// `present` lists the kind-specific keys the table has, with their spans; `at` is the
    /// table's key path and `this` what it is called in the message (`source`, `warehouse`).
    fn reject_other_kinds_keys<K: KindTable>(
        &self,
        present: impl Iterator<Item = (&'static str, Range<usize>)>,
        kind: K,
        at: &str,
        this: &str,
    ) -> Result<()> {
        for (name, span) in present {
            if kind.keys().contains(&name) {
                continue;
            }
            let message = match K::owner_of(name) {
                Some(owner) => format!(
                    "belongs to kind = \"{owner}\" {tables}; this {this} is kind = \"{kind}\" ({}): remove the key, or set kind = \"{owner}\" if the {this} is {}",
                    kind.product(),
                    owner.product(),
                    tables = K::TABLES,
                ),
                // Only if the raw table lists a key no kind claims (a unit test keeps them in step).
                None => format!(
                    "does not apply to kind = \"{kind}\" {}; remove it",
                    K::TABLES
                ),
            };
            return Err(self.invalid(span, &join_key(at, name), message));
        }
        Ok(())
    }

    /// The settings of a MySQL source: `server_id` checked, or derived from the id.
    fn mysql_settings(&self, raw: &RawSource, id: &str, at: &str) -> Result<MysqlSettings> {
        let server_id = raw
            .server_id
            .as_ref()
            .map(|value| {
                checked_server_id(*value.get_ref())
                    .map_err(|m| self.invalid(value.span(), &format!("{at}.server_id"), m))
            })
            .transpose()?;
        Ok(MysqlSettings::new(id, server_id))
    }

    /// The settings of a Postgres source: slot and publication names checked, defaults filled.
    fn postgres_settings(&self, raw: &RawSource, id: &str, at: &str) -> Result<PostgresSettings> {
        let slot = self.postgres_name(raw.slot.as_ref(), &format!("{at}.slot"))?;
        let publication =
            self.postgres_name(raw.publication.as_ref(), &format!("{at}.publication"))?;
        let publish_all_tables = raw.publish_all_tables.as_ref().map(|v| *v.get_ref());
        Ok(PostgresSettings::new(
            id,
            slot,
            publication,
            publish_all_tables,
        ))
    }

    /// A Postgres slot or publication name at `key`, if given, in the characters Postgres
    /// accepts.
    fn postgres_name(&self, value: Option<&Str>, key: &str) -> Result<Option<String>> {
        let Some(value) = value else {
            return Ok(None);
        };
        let name = self.string(value, key)?;
        match slot_name_problem(&name) {
            Some(problem) => Err(self.invalid(value.span(), key, problem)),
            None => Ok(Some(name)),
        }
    }

    /// The source's staging schema: `target_schema` (default `{tenant}_{region}_{function}`)
    /// rendered, lowercased and checked to be a valid schema name.
    fn target_schema(
        &self,
        raw: &RawSource,
        at: &str,
        id: &str,
        tenant: &str,
        region: &str,
        function: &str,
    ) -> Result<String> {
        let Some(value) = &raw.target_schema else {
            let schema = render_target_schema(DEFAULT_TARGET_SCHEMA, id, tenant, region, function);
            let Some(problem) = schema_name_problem(&schema) else {
                return Ok(schema);
            };
            // Point at the part that carries the bad character, else at tenant.
            let span_of = |value: &Option<Str>| value.as_ref().map_or(0..0, Spanned::span);
            let parts = [
                (span_of(&raw.tenant), tenant, "tenant"),
                (span_of(&raw.region), region, "region"),
                (span_of(&raw.function), function, "function"),
            ];
            let (span, name) = parts
                .iter()
                .find(|(_, value, _)| {
                    schema_name_problem(&value.to_lowercase())
                        .is_some_and(|p| p.starts_with("contains"))
                })
                .map_or((span_of(&raw.tenant), "tenant"), |(span, _, name)| {
                    (span.clone(), *name)
                });
            return Err(self.invalid(
                span,
                &format!("{at}.{name}"),
                format!(
                    "staging schema `{schema}` ({DEFAULT_TARGET_SCHEMA}, lowercased) {problem}; fix it or set target_schema"
                ),
            ));
        };
        let key = format!("{at}.target_schema");
        let text = self.non_empty(value, &key)?;
        template::check(&text, TARGET_SCHEMA_PLACEHOLDERS)
            .map_err(|m| self.invalid(value.span(), &key, m))?;
        let schema = render_target_schema(&text, id, tenant, region, function);
        match schema_name_problem(&schema) {
            Some(problem) => Err(self.invalid(
                value.span(),
                &key,
                format!("staging schema `{schema}` (rendered, lowercased) {problem}"),
            )),
            None => Ok(schema),
        }
    }

    /// A checked `target_table` template: known placeholders only, and `{table}` among them.
    fn target_table(&self, value: &Str, key: &str) -> Result<String> {
        let text = self.non_empty(value, key)?;
        let used = template::check(&text, TARGET_TABLE_PLACEHOLDERS)
            .map_err(|m| self.invalid(value.span(), key, m))?;
        if !used.contains(&"table") {
            return Err(self.invalid(
                value.span(),
                key,
                "must contain {table}, or every source table would land on one target table",
            ));
        }
        Ok(text)
    }

    /// `table_names`: exact `database.table` keys of replicated tables, each to a target table
    /// name (lowercased) no other key uses.
    fn table_names(
        &self,
        raw: &BTreeMap<String, Str>,
        key: &str,
        replicated: impl Fn(&str, &str) -> bool,
    ) -> Result<BTreeMap<String, String>> {
        let mut names = BTreeMap::new();
        let mut targets: HashMap<String, &str> = HashMap::new();
        for (table, value) in raw {
            let entry_key = join_key(key, table);
            let Some((schema, name)) = table
                .split_once('.')
                .filter(|(s, t)| !s.is_empty() && !t.is_empty() && !t.contains('.'))
            else {
                return Err(self.invalid(
                    value.span(),
                    &entry_key,
                    format!(
                        "`{table}` is not a table name: write \"database.table\" (Postgres: \"schema.table\"), quoted, with the exact names"
                    ),
                ));
            };
            if table.contains(['*', '?']) {
                return Err(self.invalid(
                    value.span(),
                    &entry_key,
                    format!(
                        "`{table}` has a wildcard; table_names takes exact names (one target table each), or use target_table for a pattern"
                    ),
                ));
            }
            if !replicated(schema, name) {
                return Err(self.invalid(
                    value.span(),
                    &entry_key,
                    format!(
                        "`{table}` is not replicated by this source (include/exclude leave it out, or it is a system table); fix the name or the include patterns"
                    ),
                ));
            }
            let target = self.non_empty(value, &entry_key)?.to_lowercase();
            if target.len() > 127 {
                return Err(self.invalid(
                    value.span(),
                    &entry_key,
                    "is longer than 127 bytes, the longest warehouse identifier",
                ));
            }
            if let Some(first) = targets.get(&target) {
                return Err(self.invalid(
                    value.span(),
                    &entry_key,
                    format!(
                        "target table `{target}` is already the target of `{first}`: two source tables cannot land in one target table"
                    ),
                ));
            }
            targets.insert(target.clone(), table);
            names.insert(table.clone(), target);
        }
        Ok(names)
    }

    /// `[[sources.columns]]`, in file order.
    fn column_rules(
        &self,
        raw: Option<&[Spanned<RawColumnRule>]>,
        at: &str,
        mask_salt: Option<&MaskSalt>,
    ) -> Result<ColumnRules> {
        let mut rules: Vec<ColumnRule> = Vec::new();
        let mut needs_salt = false;
        for (j, entry) in raw.unwrap_or_default().iter().enumerate() {
            let rule_at = format!("{at}.columns[{j}]");
            let key = |name: &str| format!("{rule_at}.{name}");
            let raw = entry.get_ref();
            let table_text = self.non_empty(&raw.table, &key("table"))?;
            let table = TablePattern::parse(&table_text)
                .map_err(|m| self.invalid(raw.table.span(), &key("table"), m))?;
            let column = self.non_empty(&raw.column, &key("column"))?;
            let action = self.string(&raw.action, &key("action"))?;
            let action = match (action.as_str(), &raw.to) {
                ("exclude" | "mask", Some(to)) => {
                    return Err(self.invalid(
                        to.span(),
                        &key("to"),
                        format!(
                            "only action = \"rename\" takes `to`; this rule's action is \"{action}\": remove `to`, or set action = \"rename\""
                        ),
                    ));
                }
                ("exclude", None) => ColumnAction::Exclude,
                ("mask", None) => {
                    if mask_salt.is_none() {
                        return Err(self.error(
                            ConfigErrorKind::MissingKey,
                            raw.action.span(),
                            &key("action"),
                            "action = \"mask\" needs the salt of its hash: set mask_salt in [group], e.g. mask_salt = \"${TIDEMARK_MASK_SALT}\"",
                        ));
                    }
                    needs_salt = true;
                    ColumnAction::Mask
                }
                ("rename", None) => {
                    return Err(self.error(
                        ConfigErrorKind::MissingKey,
                        raw.action.span(),
                        &key("to"),
                        "action = \"rename\" needs `to`, the column's name in the warehouse",
                    ));
                }
                ("rename", Some(to_value)) => {
                    let to = self.non_empty(to_value, &key("to"))?;
                    if column.contains(['*', '?']) {
                        return Err(self.invalid(
                            raw.column.span(),
                            &key("column"),
                            format!(
                                "`{column}` has a wildcard; a rename names one column exactly (several columns cannot share the name `{to}`)"
                            ),
                        ));
                    }
                    if to.to_lowercase().starts_with("_tidemark_") {
                        return Err(self.invalid(
                            to_value.span(),
                            &key("to"),
                            "names starting with _tidemark_ are tidemark's metadata columns; choose another name",
                        ));
                    }
                    if let Some(other) = rules.iter().position(|r| {
                        r.table == table
                            && matches!(&r.action, ColumnAction::Rename(t) if t.eq_ignore_ascii_case(&to))
                    }) {
                        return Err(self.invalid(
                            to_value.span(),
                            &key("to"),
                            format!(
                                "`{to}` is already the new name of column `{}` ({at}.columns[{other}]) in tables `{table}`: two columns cannot share one name",
                                rules[other].column
                            ),
                        ));
                    }
                    ColumnAction::Rename(to)
                }
                (other, _) => {
                    return Err(self.invalid(
                        raw.action.span(),
                        &key("action"),
                        format!(
                            "unknown column action `{other}`; expected \"exclude\", \"mask\" or \"rename\""
                        ),
                    ));
                }
            };
            rules.push(ColumnRule {
                table,
                column,
                action,
            });
        }
        Ok(ColumnRules {
            rules,
            salt: needs_salt.then(|| mask_salt.cloned()).flatten(),
        })
    }

    fn patterns(&self, values: &[Str], key: &str) -> Result<Vec<TablePattern>> {
        values
            .iter()
            .enumerate()
            .map(|(i, value)| {
                let key = format!("{key}[{i}]");
                let text = self.non_empty(value, &key)?;
                TablePattern::parse(&text).map_err(|m| self.invalid(value.span(), &key, m))
            })
            .collect()
    }

    /// An integer from `min` to `max`.
    fn bounded(&self, value: &Spanned<i64>, key: &str, min: u64, max: u64) -> Result<u64> {
        u64::try_from(*value.get_ref())
            .ok()
            .filter(|n| (min..=max).contains(n))
            .ok_or_else(|| {
                self.invalid(
                    value.span(),
                    key,
                    format!("must be an integer from {min} to {max}"),
                )
            })
    }

    fn snapshot(&self, value: &Str, key: &str) -> Result<SnapshotMode> {
        let text = self.string(value, key)?;
        let Some(mode) = SnapshotMode::parse(&text) else {
            return Err(self.invalid(
                value.span(),
                key,
                format!(
                    "unknown snapshot mode `{text}`; expected \"initial\", \"initial_only\", \"never\" or \"when_needed\""
                ),
            ));
        };
        Ok(mode)
    }

    /// Source ids and staging schemas must be unique in the group.
    fn check_unique(&self, all_raw: &[Spanned<RawSource>], sources: &[SourceConfig]) -> Result<()> {
        let mut ids: HashMap<&str, usize> = HashMap::new();
        let mut schemas: HashMap<String, usize> = HashMap::new();
        let span_of = |value: &Option<Str>| value.as_ref().map_or(0..0, Spanned::span);
        for (i, source) in sources.iter().enumerate() {
            let raw = all_raw[i].get_ref();
            if let Some(&first) = ids.get(source.id.as_str()) {
                let first_line = self
                    .locator
                    .line_of(span_of(&all_raw[first].get_ref().id).start);
                return Err(self.invalid(
                    span_of(&raw.id),
                    &format!("sources[{i}].id"),
                    format!(
                        "duplicate source id `{}`; sources[{first}] (line {first_line}) already uses it",
                        source.id
                    ),
                ));
            }
            ids.insert(&source.id, i);
            let schema = source.staging_schema();
            if let Some(&first) = schemas.get(&schema) {
                // Point at target_schema when the source sets it, else at tenant.
                let (span, name) = raw
                    .target_schema
                    .as_ref()
                    .map_or((span_of(&raw.tenant), "tenant"), |t| {
                        (t.span(), "target_schema")
                    });
                return Err(self.invalid(
                    span,
                    &format!("sources[{i}].{name}"),
                    format!(
                        "staging schema `{schema}` is already used by source `{}` (sources[{first}]); give each source its own tenant/region/function or target_schema",
                        sources[first].id
                    ),
                ));
            }
            schemas.insert(schema, i);
        }
        Ok(())
    }
}

/// `"a"`, `"a" or "b"`, `"a", "b" or "c"`: the choices a message lists.
fn one_of(choices: &[String]) -> String {
    match choices.split_last() {
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
        None => String::new(),
    }
}

/// Why a group name or source id is not acceptable, if it is not.
fn name_problem(name: &str) -> Option<String> {
    if name.len() > 63 {
        return Some("must be at most 63 bytes".into());
    }
    name.chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
        .map(|c| format!("contains `{c}`; use letters, digits, - and _"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every key of `raw_keys` (a raw table's kind-specific keys) belongs to exactly one kind of
    /// `K`, and every kind's keys are among them.
    fn keys_in_step<K: KindTable + std::fmt::Debug>(raw_keys: &[&str]) {
        for name in raw_keys {
            let owners: Vec<K> = K::ALL
                .iter()
                .copied()
                .filter(|kind| kind.keys().contains(name))
                .collect();
            // Most keys belong to one kind; a few (`soft_delete`) to several.
            assert!(!owners.is_empty(), "{name}: no kind takes it");
        }
        for kind in K::ALL {
            for name in kind.keys() {
                assert!(raw_keys.contains(name), "{kind}: {name}");
            }
        }
    }

    #[test]
    fn every_kind_specific_key_belongs_to_a_kind() {
        keys_in_step::<SourceKind>(&RawSource::KIND_KEYS);
        keys_in_step::<WarehouseKind>(&RawWarehouse::KIND_KEYS);
    }

    #[test]
    fn choices_read_as_a_list() {
        let list =
            |names: &[&str]| one_of(&names.iter().map(|n| n.to_string()).collect::<Vec<_>>());
        assert_eq!(list(&["\"a\""]), "\"a\"");
        assert_eq!(list(&["\"a\"", "\"b\""]), "\"a\" or \"b\"");
        assert_eq!(list(&["\"a\"", "\"b\"", "\"c\""]), "\"a\", \"b\" or \"c\"");
    }
}
