//! The config file exactly as written: serde structs with a span on every value.
//!
//! Unknown keys are rejected here (`deny_unknown_fields`); everything else (interpolation,
//! units, cross-field rules) happens when [`super::build`] turns these into typed config.

use std::collections::BTreeMap;
use std::ops::Range;

use serde::Deserialize;
use toml::Spanned;

/// A string value with its byte span.
pub(crate) type Str = Spanned<String>;

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConfig {
    pub group: Spanned<RawGroup>,
    pub warehouse: Spanned<RawWarehouse>,
    #[serde(default)]
    pub batch: Option<Spanned<RawBatch>>,
    #[serde(default)]
    pub sources: Vec<Spanned<RawSource>>,
    #[serde(default)]
    pub fleet: Option<Spanned<RawFleet>>,
    #[serde(default)]
    pub secrets: Option<Spanned<RawSecrets>>,
}

/// `[secrets]`: where `${aws-sm:...}` references are fetched from.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSecrets {
    pub region: Option<Str>,
    pub endpoint: Option<Str>,
}

/// `[fleet]`: sources from an inventory file, each filled into `template`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawFleet {
    pub inventory: Str,
    pub mysql_url: Option<Str>,
    pub postgres_url: Option<Str>,
    pub template: Option<Spanned<RawSource>>,
}

/// `[group]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawGroup {
    pub name: Str,
    pub state_dir: Option<Str>,
    pub mask_salt: Option<Str>,
    pub lease: Option<Str>,
    pub concurrent_snapshots: Option<Spanned<i64>>,
}

/// `[warehouse]`: the union of the keys of every warehouse kind.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawWarehouse {
    pub kind: Str,
    pub url: Option<Str>,
    pub cluster_id: Option<Str>,
    pub workgroup: Option<Str>,
    pub database: Option<Str>,
    pub secret_arn: Option<Str>,
    pub db_user: Option<Str>,
    pub s3_bucket: Option<Str>,
    pub s3_prefix: Option<Str>,
    pub iam_role: Option<Str>,
    pub region: Option<Str>,
    pub s3_endpoint: Option<Str>,
    pub s3_path_style: Option<Spanned<bool>>,
    pub data_api_endpoint: Option<Str>,
    pub oversize: Option<Str>,
    pub wide_decimal: Option<Str>,
    pub keep_files: Option<Str>,
    pub dropped_columns: Option<Str>,
    pub soft_delete: Option<Spanned<bool>>,
    pub max_connections: Option<Spanned<i64>>,
}

/// `[batch]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawBatch {
    pub max_rows: Option<Spanned<i64>>,
    pub max_bytes: Option<Str>,
    pub max_delay: Option<Str>,
    pub catch_up_lag: Option<Str>,
    pub catch_up_max_bytes: Option<Str>,
    pub slow_load_warning: Option<Str>,
}

/// One `[[sources]]` entry, or `[fleet.template]`. The keys every source needs are optional
/// here so that a template can leave them to the inventory: `build` reports them missing.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSource {
    pub id: Option<Str>,
    pub kind: Option<Str>,
    pub url: Option<Str>,
    pub tenant: Option<Str>,
    pub region: Option<Str>,
    pub function: Option<Str>,
    pub target_schema: Option<Str>,
    pub target_table: Option<Str>,
    pub include: Option<Spanned<Vec<Str>>>,
    pub exclude: Option<Spanned<Vec<Str>>>,
    pub snapshot: Option<Str>,
    pub enabled: Option<Spanned<bool>>,
    pub snapshot_parallelism: Option<Spanned<i64>>,
    pub snapshot_chunk_rows: Option<Spanned<i64>>,
    pub server_id: Option<Spanned<i64>>,
    pub heartbeat: Option<Str>,
    pub start: Option<Str>,
    pub slot: Option<Str>,
    pub publication: Option<Str>,
    pub publish_all_tables: Option<Spanned<bool>>,
    pub table_names: Option<Spanned<BTreeMap<String, Str>>>,
    pub columns: Option<Vec<Spanned<RawColumnRule>>>,
}

/// One `[[sources.columns]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawColumnRule {
    pub table: Str,
    pub column: Str,
    pub action: Str,
    pub to: Option<Str>,
}

impl RawSource {
    /// The keys that only some source kinds accept, in file-format order.
    pub const KIND_KEYS: [&'static str; 4] =
        ["server_id", "slot", "publication", "publish_all_tables"];

    /// The [`RawSource::KIND_KEYS`] present in this entry, with the span of each value: what
    /// `build` checks against the source's kind.
    pub fn kind_keys(&self) -> impl Iterator<Item = (&'static str, Range<usize>)> {
        let spans = [
            self.server_id.as_ref().map(Spanned::span),
            self.slot.as_ref().map(Spanned::span),
            self.publication.as_ref().map(Spanned::span),
            self.publish_all_tables.as_ref().map(Spanned::span),
        ];
        Self::KIND_KEYS
            .into_iter()
            .zip(spans)
            .filter_map(|(name, span)| span.map(|span| (name, span)))
    }
}

impl RawWarehouse {
    /// The keys that only some warehouse kinds accept (every key but `kind`), in file-format
    /// order.
    pub const KIND_KEYS: [&'static str; 19] = [
        "url",
        "cluster_id",
        "workgroup",
        "database",
        "secret_arn",
        "db_user",
        "s3_bucket",
        "s3_prefix",
        "iam_role",
        "region",
        "s3_endpoint",
        "s3_path_style",
        "data_api_endpoint",
        "oversize",
        "wide_decimal",
        "keep_files",
        "soft_delete",
        "dropped_columns",
        "max_connections",
    ];

    /// The [`RawWarehouse::KIND_KEYS`] present in `[warehouse]`, with the span of each value:
    /// what `build` checks against the warehouse's kind.
    pub fn kind_keys(&self) -> impl Iterator<Item = (&'static str, Range<usize>)> {
        let mut spans = [
            &self.url,
            &self.cluster_id,
            &self.workgroup,
            &self.database,
            &self.secret_arn,
            &self.db_user,
            &self.s3_bucket,
            &self.s3_prefix,
            &self.iam_role,
            &self.region,
            &self.s3_endpoint,
            &None, // s3_path_style is a bool: its span is set below
            &self.data_api_endpoint,
            &self.oversize,
            &self.wide_decimal,
            &self.keep_files,
            &None, // soft_delete is a bool: its span is set below
            &self.dropped_columns,
            &None, // max_connections is an integer: its span is set below
        ]
        .map(|value| value.as_ref().map(Spanned::span));
        spans[18] = self.max_connections.as_ref().map(Spanned::span);
        spans[16] = self.soft_delete.as_ref().map(Spanned::span);
        spans[11] = self.s3_path_style.as_ref().map(Spanned::span);
        Self::KIND_KEYS
            .into_iter()
            .zip(spans)
            .filter_map(|(name, span)| span.map(|span| (name, span)))
    }
}
