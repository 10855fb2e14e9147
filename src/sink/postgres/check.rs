//! Prerequisite checks for a Postgres warehouse, used by `tidemark check`: can tidemark connect,
//! write, create the control tables and each source's staging schema and tables, and load
//! through temporary staging tables.
//!
//! Like the source checks it never returns an error: a failure to connect or to query is itself
//! a failed item, and the report never contains the URL's password. The checks only read.
//! [`evaluate`] is pure, so every verdict is testable without a server.

use std::time::Duration;

use tokio_postgres::Client;

use super::describe;
use super::sql::ident;
use crate::check::report::{CONNECTION_ITEM, QUERIES_ITEM};
use crate::check::{CheckItem, CheckReport, CheckStatus};
use crate::config::SecretUrl;

/// Longest wait for connecting, and again for all queries.
const TIMEOUT: Duration = Duration::from_secs(10);

/// The control schema (progress records, table versions) every group writes.
const CONTROL_SCHEMA: &str = "tidemark";

/// The control tables every batch writes, in the control schema, with the rights tidemark
/// needs on each (`snapshot_requests`: also its id sequence).
const CONTROL_TABLES: [(&str, &str); 4] = [
    ("progress", "SELECT, INSERT, UPDATE"),
    ("table_versions", "SELECT, INSERT, UPDATE"),
    ("snapshot_requests", "SELECT, INSERT, DELETE"),
    ("snapshot_chunks", "SELECT, INSERT, DELETE"),
];

/// What the checks learned about the warehouse and the connecting role.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WarehouseFacts {
    /// `server_version`.
    pub version: String,
    /// The connecting role.
    pub user: String,
    /// The connected database.
    pub database: String,
    /// A standby in recovery, or `default_transaction_read_only = on`.
    pub read_only: bool,
    /// CREATE on the database (new schemas).
    pub can_create_schema: bool,
    /// TEMPORARY on the database (each batch is staged in temporary tables).
    pub can_create_temp: bool,
    /// The control schema, then each staging schema, as found.
    pub schemas: Vec<SchemaFacts>,
    /// Each control table (named in the control schema), with its facts when it exists.
    pub control_tables: Vec<(&'static str, Option<TableFacts>)>,
}

/// One schema tidemark writes into.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SchemaFacts {
    /// Its name.
    pub name: String,
    /// It exists.
    pub exists: bool,
    /// USAGE and CREATE on it (tables can be read, written and created there).
    pub usable: bool,
    /// Existing tables the role cannot write into (needs SELECT, INSERT, UPDATE, DELETE).
    pub unwritable: Vec<String>,
    /// Existing tables the role does not own (ALTER TABLE, to follow schema changes, needs it).
    pub not_owned: Vec<String>,
}

/// A table tidemark writes into.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableFacts {
    /// SELECT, INSERT and UPDATE on it.
    pub writable: bool,
}

/// Checks the Postgres warehouse at `url` for the control tables and the staging `schemas`.
pub async fn check_postgres_warehouse(url: &SecretUrl, schemas: &[String]) -> CheckReport {
    let mut report = CheckReport::for_warehouse(url.to_string());
    let client = match connect(url).await {
        Ok(client) => client,
        Err(problem) => {
            report.items.push(
                CheckItem::new(CONNECTION_ITEM, CheckStatus::Fail, url.scrub(&problem)).with_fix(
                    "check host, port, database, user and password in the warehouse `url`, \
                     that the server listens there (listen_addresses, a pg_hba.conf `host` line \
                     for this client) and that no firewall blocks this host",
                ),
            );
            return report;
        }
    };
    match tokio::time::timeout(TIMEOUT, gather(&client, schemas)).await {
        Ok(Ok(facts)) => report.items = evaluate(&facts),
        Ok(Err(e)) => report.items.push(CheckItem::new(
            QUERIES_ITEM,
            CheckStatus::Fail,
            format!("checking stopped: {}", url.scrub(&describe(&e))),
        )),
        Err(_) => report.items.push(CheckItem::new(
            QUERIES_ITEM,
            CheckStatus::Fail,
            format!("the warehouse did not answer within {TIMEOUT:?}"),
        )),
    }
    report
}

async fn connect(url: &SecretUrl) -> Result<Client, String> {
    let url = url
        .resolve(crate::secrets::Freshness::Cached)
        .await
        .map_err(|e| e.to_string())?;
    let (mut config, tls) = crate::tls::postgres_config(&url).map_err(|e| e.to_string())?;
    let connector = tls.postgres_connector().map_err(|e| e.to_string())?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(TIMEOUT);
    }
    config.application_name("tidemark check");
    let (client, connection) = config.connect(connector).await.map_err(|e| {
        let host = crate::tls::postgres_host(&config);
        let reason = url.scrub(&describe(&e));
        tls.explain(&host, &reason).unwrap_or(reason)
    })?;
    tokio::spawn(connection);
    Ok(client)
}

/// Reads every fact the check needs, as the warehouse role itself.
pub async fn gather(
    client: &Client,
    staging_schemas: &[String],
) -> Result<WarehouseFacts, tokio_postgres::Error> {
    let row = client
        .query_one(
            "SELECT current_setting('server_version'), current_user::text,
                current_database()::text,
                pg_is_in_recovery() OR current_setting('default_transaction_read_only') = 'on',
                has_database_privilege(current_database(), 'CREATE'),
                has_database_privilege(current_database(), 'TEMPORARY')",
            &[],
        )
        .await?;
    let mut facts = WarehouseFacts {
        version: row.get(0),
        user: row.get(1),
        database: row.get(2),
        read_only: row.get(3),
        can_create_schema: row.get(4),
        can_create_temp: row.get(5),
        ..WarehouseFacts::default()
    };
    let mut names = vec![CONTROL_SCHEMA.to_owned()];
    for schema in staging_schemas {
        if !names.contains(schema) {
            names.push(schema.clone());
        }
    }
    for name in names {
        facts.schemas.push(schema_facts(client, &name).await?);
    }
    for (table, rights) in CONTROL_TABLES {
        // Every right is needed: has_table_privilege with a list is true when any one is held.
        let all_of = rights
            .split(", ")
            .map(|right| format!("has_table_privilege(c.oid, '{right}')"))
            .collect::<Vec<_>>()
            .join(" AND ");
        let found = client
            .query_opt(
                &format!(
                    "SELECT {all_of} FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                     WHERE n.nspname = $1 AND c.relname = $2"
                ),
                &[&CONTROL_SCHEMA, &table],
            )
            .await?;
        let found = found.map(|row| TableFacts {
            writable: row.get(0),
        });
        facts.control_tables.push((table, found));
    }
    Ok(facts)
}

async fn schema_facts(client: &Client, name: &str) -> Result<SchemaFacts, tokio_postgres::Error> {
    let usable: Option<bool> = client
        .query_opt(
            "SELECT has_schema_privilege(oid, 'USAGE') AND has_schema_privilege(oid, 'CREATE')
             FROM pg_namespace WHERE nspname = $1",
            &[&name],
        )
        .await?
        .map(|row| row.get(0));
    let Some(usable) = usable else {
        return Ok(SchemaFacts {
            name: name.to_owned(),
            ..SchemaFacts::default()
        });
    };
    let mut facts = SchemaFacts {
        name: name.to_owned(),
        exists: true,
        usable,
        ..SchemaFacts::default()
    };
    let tables = client
        .query(
            "SELECT c.relname::text,
                has_table_privilege(c.oid, 'SELECT, INSERT, UPDATE, DELETE'),
                pg_has_role(current_user, c.relowner, 'USAGE')
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = $1 AND c.relkind IN ('r', 'p') ORDER BY 1",
            &[&name],
        )
        .await?;
    for row in tables {
        let table: String = row.get(0);
        if !row.get::<_, bool>(1) {
            facts.unwritable.push(table.clone());
        }
        if !row.get::<_, bool>(2) {
            facts.not_owned.push(table);
        }
    }
    Ok(facts)
}

/// Judges `facts` against what loading needs.
pub fn evaluate(facts: &WarehouseFacts) -> Vec<CheckItem> {
    let role = ident(&facts.user);
    let database = ident(&facts.database);
    let mut items = vec![CheckItem::new(
        CONNECTION_ITEM,
        CheckStatus::Pass,
        format!(
            "PostgreSQL {} as {} on database {}",
            facts.version, facts.user, facts.database
        ),
    )];
    items.push(if facts.read_only {
        CheckItem::new(
            "read-write",
            CheckStatus::Fail,
            "the server is a read-only standby (or default_transaction_read_only is on): nothing can be loaded",
        )
        .with_fix("point the warehouse `url` at the primary server")
    } else {
        CheckItem::new("read-write", CheckStatus::Pass, "accepts writes")
    });
    items.push(if facts.can_create_schema {
        CheckItem::new(
            "privilege CREATE",
            CheckStatus::Pass,
            format!("{} may create schemas in {}", facts.user, facts.database),
        )
    } else {
        // CREATE SCHEMA IF NOT EXISTS checks the privilege before it looks for the schema, so
        // it is needed even when every schema already exists.
        CheckItem::new(
            "privilege CREATE",
            CheckStatus::Fail,
            format!(
                "{} may not create schemas in {}: tidemark creates (if missing) its control schema and each source's staging schema at start",
                facts.user, facts.database
            ),
        )
        .with_fix(format!("GRANT CREATE ON DATABASE {database} TO {role};"))
    });
    items.push(if facts.can_create_temp {
        CheckItem::new(
            "privilege TEMPORARY",
            CheckStatus::Pass,
            "temporary staging tables allowed",
        )
    } else {
        CheckItem::new(
            "privilege TEMPORARY",
            CheckStatus::Fail,
            format!(
                "{} may not create temporary tables: every batch is staged in one",
                facts.user
            ),
        )
        .with_fix(format!("GRANT TEMPORARY ON DATABASE {database} TO {role};"))
    });
    for schema in &facts.schemas {
        items.extend(schema_items(schema, &role));
    }
    for (table, found) in &facts.control_tables {
        let name = format!("control table {CONTROL_SCHEMA}.{table}");
        items.push(match found {
            None => CheckItem::new(
                name,
                CheckStatus::Info,
                "does not exist yet; tidemark creates it at first start",
            ),
            Some(t) if t.writable => {
                CheckItem::new(name, CheckStatus::Pass, "readable and writable")
            }
            Some(_) => CheckItem::new(
                name,
                CheckStatus::Fail,
                format!(
                    "{} cannot read and update it: no progress can be recorded",
                    facts.user
                ),
            )
            .with_fix(control_table_grant(table, &role)),
        });
    }
    items
}

/// The GRANT that gives `role` what tidemark needs on control table `table`.
fn control_table_grant(table: &str, role: &str) -> String {
    let rights = CONTROL_TABLES
        .iter()
        .find(|(name, _)| *name == table)
        .map_or("SELECT, INSERT, UPDATE", |(_, rights)| rights);
    let mut grant = format!("GRANT {rights} ON {CONTROL_SCHEMA}.{table} TO {role};");
    if table == "snapshot_requests" {
        grant.push_str(&format!(
            " GRANT USAGE ON SEQUENCE {CONTROL_SCHEMA}.{table}_id_seq TO {role};"
        ));
    }
    grant
}

/// The items of one schema: usable, and every existing table writable and ownable.
fn schema_items(schema: &SchemaFacts, role: &str) -> Vec<CheckItem> {
    let name = format!("schema {}", schema.name);
    let quoted = ident(&schema.name);
    if !schema.exists {
        return vec![CheckItem::new(
            name,
            CheckStatus::Info,
            "does not exist yet; tidemark creates it at first start",
        )];
    }
    if !schema.usable {
        return vec![
            CheckItem::new(
                name,
                CheckStatus::Fail,
                "exists, but tidemark's role lacks USAGE or CREATE on it: tables cannot be created or loaded there",
            )
            .with_fix(format!("GRANT USAGE, CREATE ON SCHEMA {quoted} TO {role};")),
        ];
    }
    let mut items = vec![CheckItem::new(
        name.clone(),
        CheckStatus::Pass,
        "tables can be created and loaded",
    )];
    let qualified = |tables: &[String]| -> Vec<String> {
        tables
            .iter()
            .map(|t| format!("{quoted}.{}", ident(t)))
            .collect()
    };
    if !schema.unwritable.is_empty() {
        let tables = qualified(&schema.unwritable);
        items.push(
            CheckItem::new(
                format!("{name} tables"),
                CheckStatus::Fail,
                format!(
                    "cannot be written by tidemark's role: {}",
                    tables.join(", ")
                ),
            )
            .with_fix(format!(
                "GRANT SELECT, INSERT, UPDATE, DELETE ON {} TO {role};",
                tables.join(", ")
            )),
        );
    }
    if !schema.not_owned.is_empty() {
        let tables = qualified(&schema.not_owned);
        items.push(
            CheckItem::new(
                format!("{name} owner"),
                CheckStatus::Warn,
                format!(
                    "owned by another role, so a source's schema change (ALTER TABLE) stops the source: {}",
                    tables.join(", ")
                ),
            )
            .with_fix(
                tables
                    .iter()
                    .map(|t| format!("ALTER TABLE {t} OWNER TO {role};"))
                    .collect::<Vec<_>>()
                    .join(" "),
            ),
        );
    }
    items
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ready() -> WarehouseFacts {
        WarehouseFacts {
            version: "15.0".into(),
            user: "loader".into(),
            database: "wh".into(),
            read_only: false,
            can_create_schema: true,
            can_create_temp: true,
            schemas: vec![SchemaFacts {
                name: "tidemark".into(),
                ..SchemaFacts::default()
            }],
            control_tables: CONTROL_TABLES.iter().map(|(t, _)| (*t, None)).collect(),
        }
    }

    fn find<'a>(items: &'a [CheckItem], name: &str) -> &'a CheckItem {
        items
            .iter()
            .find(|i| i.name == name)
            .unwrap_or_else(|| panic!("no item {name} in {items:?}"))
    }

    #[test]
    fn a_fresh_database_with_create_rights_is_ready() {
        let items = evaluate(&ready());
        assert!(
            items.iter().all(|i| i.status != CheckStatus::Fail),
            "{items:?}"
        );
        assert_eq!(find(&items, "schema tidemark").status, CheckStatus::Info);
    }

    #[test]
    fn each_missing_right_fails_with_its_grant() {
        let mut facts = ready();
        facts.read_only = true;
        facts.can_create_schema = false;
        facts.can_create_temp = false;
        facts.control_tables[0].1 = Some(TableFacts { writable: false });
        facts.schemas.push(SchemaFacts {
            name: "acme_in_txn".into(),
            exists: true,
            usable: true,
            unwritable: vec!["orders".into()],
            not_owned: vec!["orders".into()],
        });
        let items = evaluate(&facts);
        let fix = |name: &str| find(&items, name).fix.clone().unwrap_or_default();
        assert_eq!(find(&items, "read-write").status, CheckStatus::Fail);
        assert_eq!(
            fix("privilege CREATE"),
            "GRANT CREATE ON DATABASE \"wh\" TO \"loader\";"
        );
        assert_eq!(
            fix("privilege TEMPORARY"),
            "GRANT TEMPORARY ON DATABASE \"wh\" TO \"loader\";"
        );
        assert_eq!(
            fix("control table tidemark.progress"),
            "GRANT SELECT, INSERT, UPDATE ON tidemark.progress TO \"loader\";"
        );
        assert_eq!(
            fix("schema acme_in_txn tables"),
            "GRANT SELECT, INSERT, UPDATE, DELETE ON \"acme_in_txn\".\"orders\" TO \"loader\";"
        );
        assert_eq!(
            find(&items, "schema acme_in_txn owner").status,
            CheckStatus::Warn
        );
    }
}
