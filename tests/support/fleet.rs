//! A fleet of tenant sources for end-to-end tests: one MariaDB database (or Postgres database)
//! per tenant with a table `t`, listed in an inventory CSV beside a `[fleet]` config, and the
//! checks that each tenant's rows reached its staging schema.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use mysql_async::prelude::Queryable;

use super::config::toml_str;
use super::poll::poll;
use super::warehouse::Warehouse;

/// The inventory's header.
pub const HEADER: &str = "tenant,region,function,kind,host,port,databases,credentials,enabled,slot";
/// Credentials of the MariaDB lines: the dev servers' superusers have no password.
pub const MYSQL_CREDENTIALS: (&str, &str) = ("FLEET_TEST_MYSQL_CREDENTIALS", "root:");
/// Credentials of the Postgres lines.
pub const PG_CREDENTIALS: (&str, &str) = ("FLEET_TEST_PG_CREDENTIALS", "postgres:");

/// One tenant: its database and where its rows land.
pub struct Tenant {
    /// The inventory's `tenant` column.
    pub name: String,
    /// `mysql` or `postgres`.
    pub kind: &'static str,
    /// Its database.
    pub db: String,
    /// Host and port its line names (a proxy's, to cut it).
    pub port: u16,
    /// The `enabled` column.
    pub enabled: bool,
    /// The `slot` column (Postgres).
    pub slot: String,
}

impl Tenant {
    /// The source id tidemark derives from the line.
    pub fn id(&self) -> String {
        format!("{}-in-txn", self.name)
    }

    /// The warehouse table its `t` lands in: `schema.table`, quoted (a Postgres source's tables
    /// are named `{schema}__{table}` by default, as every schema of it is included).
    pub fn schema(&self) -> String {
        match self.kind {
            "mysql" => format!("\"{}_in_txn\".t", self.name),
            _ => format!("\"{}_in_txn\".public__t", self.name),
        }
    }

    /// Its inventory line.
    pub fn line(&self) -> String {
        format!(
            "{},in,txn,{},127.0.0.1,{},{},env:{},{},{}",
            self.name,
            self.kind,
            self.port,
            self.db,
            if self.kind == "mysql" {
                MYSQL_CREDENTIALS.0
            } else {
                PG_CREDENTIALS.0
            },
            self.enabled,
            self.slot
        )
    }
}

/// The inventory text of `tenants`, with `extra` lines appended.
pub fn inventory(tenants: &[Tenant], extra: &[&str]) -> String {
    let mut text = format!("{HEADER}\n");
    for tenant in tenants {
        writeln!(text, "{}", tenant.line()).unwrap();
    }
    for line in extra {
        writeln!(text, "{line}").unwrap();
    }
    text
}

/// A `[fleet]` config loading into `wh` with at most `max_connections` warehouse connections;
/// each tenant copies its rows first and then streams, with server heartbeats every
/// `heartbeat`.
pub fn config(
    wh_url: &str,
    state_dir: &Path,
    max_connections: u32,
    heartbeat: &str,
    group_extra: &str,
) -> String {
    format!(
        "[group]\nname = \"fleet-test\"\nstate_dir = {}\n{group_extra}\n\
         [warehouse]\nkind = \"postgres\"\nurl = {}\nmax_connections = {max_connections}\n\n\
         [batch]\nmax_delay = \"200ms\"\n\n\
         [fleet]\ninventory = \"tenants.csv\"\n\
         mysql_url = \"mysql://{{user}}:{{password}}@{{host}}:{{port}}?prefer_socket=false\"\n\n\
         [fleet.template]\nsnapshot = \"initial\"\nheartbeat = \"{heartbeat}\"\n",
        toml_str(&state_dir.display().to_string()),
        toml_str(wh_url),
    )
}

/// Rows of warehouse table `table` (`"schema".name`; None while it does not exist).
pub async fn target_count(wh: &Warehouse, table: &str) -> Option<i64> {
    let exists = wh
        .value(&format!(
            "SELECT CASE WHEN to_regclass('{}') IS NULL THEN 'no' ELSE 'yes' END",
            table.replace('\'', "''")
        ))
        .await;
    if exists.as_deref() != Some("yes") {
        return None;
    }
    wh.value(&format!("SELECT count(*) FROM {table}"))
        .await
        .and_then(|v| v.parse().ok())
}

/// Waits until each `(table, rows)` has exactly that many rows; panics naming the tables that do
/// not after `timeout`.
pub async fn wait_counts(wh: &Warehouse, expected: &[(String, i64)], timeout: Duration) {
    let result = poll(timeout, async || {
        let mut behind = Vec::new();
        for (schema, rows) in expected {
            // A thousand tables: stop at the first few behind, the next poll looks again.
            if behind.len() >= 5 {
                behind.push("...".to_owned());
                break;
            }
            let have = target_count(wh, schema).await;
            if have != Some(*rows) {
                behind.push(format!("{schema}: {have:?} of {rows}"));
            }
        }
        if behind.is_empty() {
            Ok(())
        } else {
            Err(behind.join(", "))
        }
    })
    .await;
    if let Err(behind) = result {
        panic!("tenants not loaded after {timeout:?}: {behind}");
    }
}

/// Inserts `rows` rows numbered from `first` into `t` of MariaDB database `db`.
pub async fn insert_mysql(db: &str, first: i64, rows: i64) {
    let mut conn = super::mysql_conn(&super::mysql_url_for(db)).await;
    let values: Vec<String> = (first..first + rows)
        .map(|i| format!("({i}, 'v{i}')"))
        .collect();
    conn.query_drop(format!("INSERT INTO t VALUES {}", values.join(", ")))
        .await
        .unwrap();
    conn.disconnect().await.ok();
}
