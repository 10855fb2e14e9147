//! The `tidemark run` config file of an end-to-end test: one group, a Postgres warehouse (or
//! the Redshift path into it, through the Data API test server),
//! `[batch]`, and MySQL or Postgres sources, rendered as TOML.

use std::fmt::Write as _;
use std::path::Path;

use super::ids::server_id;

/// One `[[sources]]` entry.
#[derive(Clone, Debug)]
pub struct SourceConfig {
    /// `id`.
    pub id: String,
    /// `kind`: `mysql` or `postgres`.
    pub kind: &'static str,
    /// `url` (MySQL: the server, no database; Postgres: the source database).
    pub url: String,
    /// `tenant`.
    pub tenant: String,
    /// `region`.
    pub region: String,
    /// `function`.
    pub function: String,
    /// `include` patterns.
    pub include: Vec<String>,
    /// `server_id`.
    pub server_id: u32,
    /// `snapshot` mode.
    pub snapshot: &'static str,
    /// Extra TOML lines appended to the entry.
    pub extra: String,
}

impl SourceConfig {
    /// A MySQL source `id` reading database `db` (`include = ["db.*"]`) of the server at `url`,
    /// landing in schema `acme_in_txn`, with a fresh server id and 1 s heartbeats.
    pub fn mysql(id: &str, url: &str, db: &str) -> Self {
        SourceConfig {
            id: id.to_string(),
            kind: "mysql",
            url: url.to_string(),
            tenant: "acme".into(),
            region: "in".into(),
            function: "txn".into(),
            include: vec![format!("{db}.*")],
            server_id: server_id(),
            snapshot: "never",
            extra: "heartbeat = \"1s\"\n".into(),
        }
    }

    /// A Postgres source `id` reading the database at `url`, tables `include`, with its own
    /// slot and publication named after `id`, and 1 s status updates.
    pub fn postgres(id: &str, url: &str, include: &[&str]) -> Self {
        SourceConfig {
            kind: "postgres",
            include: include.iter().map(|p| p.to_string()).collect(),
            ..SourceConfig::mysql(id, url, "unused")
        }
    }

    /// The warehouse schema its tables land in.
    pub fn schema(&self) -> String {
        format!("{}_{}_{}", self.tenant, self.region, self.function).to_lowercase()
    }
}

/// A whole config file: one group, a Postgres warehouse, `[batch]`, sources.
#[derive(Clone, Debug)]
pub struct GroupConfig {
    /// `[group] name`.
    pub name: String,
    /// Extra `[group]` lines (`mask_salt = "${TIDEMARK_MASK_SALT}"`).
    pub group_extra: String,
    /// `[warehouse] url`.
    pub warehouse_url: String,
    /// `[batch] max_rows`.
    pub max_rows: u64,
    /// `[batch] max_bytes`.
    pub max_bytes: String,
    /// `[batch] max_delay`.
    pub max_delay: String,
    /// `[batch] catch_up_lag`, when not the default.
    pub catch_up_lag: Option<String>,
    /// `[batch] slow_load_warning`, when not the default.
    pub slow_load_warning: Option<String>,
    /// The sources.
    pub sources: Vec<SourceConfig>,
    /// Extra `[warehouse]` lines for a Postgres warehouse (`soft_delete = true`).
    pub warehouse_extra: String,
    /// Load through the Redshift path (the Data API test server) instead of into
    /// `warehouse_url` directly.
    pub redshift: Option<RedshiftWarehouse>,
    /// Extra top-level tables (`[secrets]`), written after `[batch]`.
    pub extra_tables: String,
}

/// `[warehouse] kind = "redshift"` against the Data API test server and the S3 test server.
#[derive(Clone, Debug)]
pub struct RedshiftWarehouse {
    /// The test server's endpoint (`data_api_endpoint`).
    pub data_api_endpoint: String,
    /// The S3 server (`s3_endpoint`).
    pub s3_endpoint: String,
    /// `s3_bucket`.
    pub bucket: String,
    /// `database`: the warehouse database the test server runs the SQL in.
    pub database: String,
    /// Extra `[warehouse]` lines (`oversize = "truncate"`, `keep_files = "1h"`, ...).
    pub extra: String,
}

impl RedshiftWarehouse {
    /// The `[warehouse]` table's lines.
    fn render(&self) -> String {
        format!(
            "kind = \"redshift\"\ncluster_id = \"test\"\ndatabase = {}\ndb_user = \"tidemark\"\n\
             s3_bucket = {}\niam_role = \"arn:aws:iam::000000000000:role/tidemark-copy\"\n\
             region = {}\ns3_endpoint = {}\ns3_path_style = true\ndata_api_endpoint = {}\n{}",
            toml_str(&self.database),
            toml_str(&self.bucket),
            toml_str(super::S3_REGION),
            toml_str(&self.s3_endpoint),
            toml_str(&self.data_api_endpoint),
            self.extra
        )
    }
}

impl GroupConfig {
    /// A group loading `sources` into `warehouse_url`, batches of up to 10000 rows / 200 ms.
    pub fn new(warehouse_url: &str, sources: Vec<SourceConfig>) -> Self {
        GroupConfig {
            name: "pipeline-test".into(),
            group_extra: String::new(),
            warehouse_url: warehouse_url.to_string(),
            max_rows: 10_000,
            max_bytes: "16MiB".into(),
            max_delay: "200ms".into(),
            catch_up_lag: None,
            slow_load_warning: None,
            sources,
            redshift: None,
            warehouse_extra: String::new(),
            extra_tables: String::new(),
        }
    }

    /// The TOML text, with `state_dir` as the group's state dir.
    pub fn render(&self, state_dir: &Path) -> String {
        let warehouse = match &self.redshift {
            Some(redshift) => redshift.render(),
            None => format!(
                "kind = \"postgres\"\nurl = {}\n{}",
                toml_str(&self.warehouse_url),
                self.warehouse_extra
            ),
        };
        let mut text = format!(
            "[group]\nname = {}\nstate_dir = {}\n{}\n[warehouse]\n{warehouse}\n\
             [batch]\nmax_rows = {}\nmax_bytes = {}\nmax_delay = {}\n",
            toml_str(&self.name),
            toml_str(&state_dir.display().to_string()),
            self.group_extra,
            self.max_rows,
            toml_str(&self.max_bytes),
            toml_str(&self.max_delay),
        );
        if let Some(lag) = &self.catch_up_lag {
            writeln!(text, "catch_up_lag = {}", toml_str(lag)).unwrap();
        }
        if let Some(after) = &self.slow_load_warning {
            writeln!(text, "slow_load_warning = {}", toml_str(after)).unwrap();
        }
        text.push_str(&self.extra_tables);
        for s in &self.sources {
            let include: Vec<String> = s.include.iter().map(|p| toml_str(p)).collect();
            write!(
                text,
                "\n[[sources]]\nid = {}\nkind = \"{}\"\nurl = {}\ntenant = {}\nregion = {}\n\
                 function = {}\ninclude = [{}]\nsnapshot = \"{}\"\n{}{}",
                toml_str(&s.id),
                s.kind,
                toml_str(&s.url),
                toml_str(&s.tenant),
                toml_str(&s.region),
                toml_str(&s.function),
                include.join(", "),
                s.snapshot,
                if s.kind == "mysql" {
                    format!("server_id = {}\n", s.server_id)
                } else {
                    String::new()
                },
                s.extra,
            )
            .unwrap();
        }
        text
    }
}

/// `s` as a TOML basic string.
pub fn toml_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
