//! Prerequisite checks for a Postgres source, used by `tidemark check`.
//!
//! [`check_postgres_source`] connects once with the source's own URL and reports every unmet
//! prerequisite at once, each with the statement that fixes it: `wal_level`, free replication
//! slots and WAL senders, the REPLICATION attribute (or `rds_replication` on RDS), the REPLICA
//! IDENTITY of every included table, the publication and its membership, the slot's health, and
//! SELECT on the included tables. It never returns an error: a failure to connect or to query is
//! itself a failed item, and it only reads (no `CREATE`, `ALTER` or `GRANT`).
//!
//! Gathering ([`gather`]) and judging ([`evaluate`]) are separate so the judgement can be tested
//! on any set of facts. What is checked and why is documented in `docs/check.md`.

use std::time::Duration;

use tokio_postgres::Client;

use crate::check::report::CONNECTION_ITEM;
use crate::check::{CheckItem, CheckReport, CheckStatus};
use crate::config::{SecretUrl, SourceConfig};
use crate::source::postgres::config::PostgresSettings;
use crate::source::postgres::slot::{USER_TABLES, UnpublishedTable, unpublished_tables};

/// Longest wait for the connection, and then for all the queries.
const TIMEOUT: Duration = Duration::from_secs(10);

/// Retained WAL above this on an existing slot is a warning: the slot is far behind or abandoned.
const RETAINED_WAL_WARN_BYTES: i64 = 10 << 30;

/// What the server told us, before any judgement.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PostgresFacts {
    /// `server_version`.
    pub version: String,
    /// The role tidemark connects as.
    pub user: String,
    /// The connected database.
    pub database: String,
    /// `wal_level`.
    pub wal_level: String,
    /// `max_replication_slots` and the slots that exist.
    pub max_replication_slots: i64,
    /// Replication slots that exist on the server.
    pub slots_in_use: i64,
    /// `max_wal_senders`.
    pub max_wal_senders: i64,
    /// WAL senders running now.
    pub wal_senders_in_use: i64,
    /// `max_slot_wal_keep_size` in MB (-1 = unlimited).
    pub max_slot_wal_keep_mb: i64,
    /// The role is a superuser.
    pub superuser: bool,
    /// The role has the REPLICATION attribute.
    pub replication: bool,
    /// The server is Amazon RDS/Aurora (has the `rds_replication` role).
    pub rds: bool,
    /// The role is a member of `rds_replication`.
    pub rds_replication: bool,
    /// The role may create objects in the database (needed to create the publication).
    pub can_create_in_database: bool,
    /// The included tables, in schema and name order.
    pub tables: Vec<TableFacts>,
    /// The source's publication, if it exists.
    pub publication: Option<PublicationFacts>,
    /// The source's slot, if it exists.
    pub slot: Option<SlotFacts>,
}

/// One included table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableFacts {
    /// Schema.
    pub schema: String,
    /// Name.
    pub name: String,
    /// `pg_class.relreplident`: `d` default (the primary key), `n` nothing, `f` full, `i` index.
    pub replica_identity: char,
    /// The table has a primary key.
    pub has_primary_key: bool,
    /// The role owns the table (or is a superuser): it may add it to a publication.
    pub owned: bool,
    /// The role may SELECT from it (snapshots and `verify`).
    pub selectable: bool,
}

impl TableFacts {
    fn qualified(&self) -> String {
        format!("{}.{}", quote_ident(&self.schema), quote_ident(&self.name))
    }

    /// True when updates and deletes of this table carry an old key tidemark can apply.
    pub fn identifies_rows(&self) -> bool {
        match self.replica_identity {
            'f' | 'i' => true,
            'd' => self.has_primary_key,
            _ => false,
        }
    }
}

/// The source's publication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicationFacts {
    /// `FOR ALL TABLES`.
    pub all_tables: bool,
    /// Operations it publishes that tidemark needs but that are switched off.
    pub missing_operations: Vec<&'static str>,
    /// The check's user owns it (or is a superuser), so it may add tables it owns.
    pub owned: bool,
    /// The included tables whose changes it does not publish.
    pub unpublished: Vec<UnpublishedTable>,
}

/// The source's replication slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotFacts {
    /// Output plugin.
    pub plugin: String,
    /// The database it decodes.
    pub database: Option<String>,
    /// A process streams from it now.
    pub active: bool,
    /// `wal_status`: `reserved`, `extended`, `unreserved` or `lost`.
    pub wal_status: Option<String>,
    /// WAL the slot holds back, in bytes.
    pub retained_bytes: Option<i64>,
}

/// Checks every prerequisite of a Postgres source.
pub async fn check_postgres_source(source: &SourceConfig) -> CheckReport {
    let mut report = CheckReport::for_source(&source.id, source.url.to_string());
    let Some(settings) = source.postgres() else {
        report.items.push(CheckItem::new(
            CONNECTION_ITEM,
            CheckStatus::Fail,
            format!(
                "source is kind = \"{}\"; this check is for kind = \"postgres\"",
                source.kind()
            ),
        ));
        return report;
    };
    let facts = match tokio::time::timeout(TIMEOUT * 2, gather(source, settings)).await {
        Ok(Ok(facts)) => facts,
        Ok(Err(problem)) => {
            report.items.push(connection_failed(&source.url, &problem));
            return report;
        }
        Err(_) => {
            report.items.push(connection_failed(
                &source.url,
                &format!("no answer within {:?}", TIMEOUT * 2),
            ));
            return report;
        }
    };
    report.items = evaluate(settings, &facts);
    report
}

fn connection_failed(url: &SecretUrl, problem: &str) -> CheckItem {
    CheckItem::new(CONNECTION_ITEM, CheckStatus::Fail, url.scrub(problem)).with_fix(
        "check host, port, database, user and password in the source `url`, pg_hba.conf (a \
         `host` line for this client), listen_addresses and firewalls",
    )
}

async fn connect(url: &SecretUrl) -> Result<Client, String> {
    let (mut config, tls) = crate::tls::postgres_config(url).map_err(|e| e.to_string())?;
    let connector = tls.postgres_connector().map_err(|e| e.to_string())?;
    config
        .connect_timeout(TIMEOUT)
        .application_name("tidemark check");
    let (client, connection) = config.connect(connector).await.map_err(|e| {
        let message = crate::tls::with_causes(&e);
        let host = crate::tls::postgres_host(&config);
        tls.explain(&host, &message).unwrap_or(message)
    })?;
    tokio::spawn(connection);
    Ok(client)
}

/// Reads every fact the check of `source` (with its Postgres `settings`) needs, with the
/// source's own credentials.
pub async fn gather(
    source: &SourceConfig,
    settings: &PostgresSettings,
) -> Result<PostgresFacts, String> {
    let client = connect(&source.url).await?;
    let sql_error = |e: tokio_postgres::Error| match e.as_db_error() {
        Some(db) => db.message().to_owned(),
        None => e.to_string(),
    };
    let row = client
        .query_one(
            "SELECT current_setting('server_version'), current_user::text, current_database()::text,
                current_setting('wal_level'),
                current_setting('max_replication_slots')::bigint,
                (SELECT count(*) FROM pg_replication_slots),
                current_setting('max_wal_senders')::bigint,
                (SELECT count(*) FROM pg_stat_replication),
                (SELECT setting::bigint FROM pg_settings WHERE name = 'max_slot_wal_keep_size'),
                r.rolsuper, r.rolreplication,
                EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'rds_replication'),
                EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'rds_replication'
                        AND pg_has_role(current_user, oid, 'member')),
                has_database_privilege(current_database(), 'CREATE')
             FROM pg_roles r WHERE r.rolname = current_user",
            &[],
        )
        .await
        .map_err(sql_error)?;
    let mut facts = PostgresFacts {
        version: row.get(0),
        user: row.get(1),
        database: row.get(2),
        wal_level: row.get(3),
        max_replication_slots: row.get(4),
        slots_in_use: row.get(5),
        max_wal_senders: row.get(6),
        wal_senders_in_use: row.get(7),
        max_slot_wal_keep_mb: row.get(8),
        superuser: row.get(9),
        replication: row.get(10),
        rds: row.get(11),
        rds_replication: row.get(12),
        can_create_in_database: row.get(13),
        ..PostgresFacts::default()
    };
    let tables = client
        .query(
            &format!(
                "SELECT n.nspname::text, c.relname::text, c.relreplident::text,
                    EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary),
                    pg_has_role(current_user, c.relowner, 'USAGE'),
                    has_table_privilege(c.oid, 'SELECT')
                 {USER_TABLES} ORDER BY 1, 2"
            ),
            &[],
        )
        .await
        .map_err(sql_error)?;
    for row in tables {
        let (schema, name): (String, String) = (row.get(0), row.get(1));
        if !source.includes_table(&schema, &name) {
            continue;
        }
        let identity: String = row.get(2);
        facts.tables.push(TableFacts {
            schema,
            name,
            replica_identity: identity.chars().next().unwrap_or('d'),
            has_primary_key: row.get(3),
            owned: facts.superuser || row.get::<_, bool>(4),
            selectable: row.get(5),
        });
    }
    let publication = client
        .query_opt(
            "SELECT puballtables, pubinsert, pubupdate, pubdelete, pubtruncate,
                pg_has_role(current_user, pubowner, 'USAGE')
             FROM pg_publication WHERE pubname = $1",
            &[&settings.publication],
        )
        .await
        .map_err(sql_error)?;
    if let Some(row) = publication {
        let missing_operations = ["insert", "update", "delete", "truncate"]
            .into_iter()
            .enumerate()
            .filter(|(i, _)| !row.get::<_, bool>(i + 1))
            .map(|(_, op)| op)
            .collect();
        let unpublished = unpublished_tables(&client, source, settings)
            .await
            .map_err(|e| e.to_string())?;
        facts.publication = Some(PublicationFacts {
            all_tables: row.get(0),
            missing_operations,
            owned: facts.superuser || row.get::<_, bool>(5),
            unpublished,
        });
    }
    let slot = client
        .query_opt(
            "SELECT plugin::text, database::text, active, wal_status,
                CASE WHEN pg_is_in_recovery() THEN NULL
                     ELSE pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint END
             FROM pg_replication_slots WHERE slot_name = $1",
            &[&settings.slot],
        )
        .await
        .map_err(sql_error)?;
    facts.slot = slot.map(|row| SlotFacts {
        plugin: row.get::<_, Option<String>>(0).unwrap_or_default(),
        database: row.get(1),
        active: row.get(2),
        wal_status: row.get(3),
        retained_bytes: row.get(4),
    });
    Ok(facts)
}

/// Judges `facts` against what tidemark needs for a source with these `settings`.
pub fn evaluate(settings: &PostgresSettings, facts: &PostgresFacts) -> Vec<CheckItem> {
    let mut items = vec![CheckItem::new(
        CONNECTION_ITEM,
        CheckStatus::Pass,
        format!(
            "PostgreSQL {} as {} on database {}",
            facts.version, facts.user, facts.database
        ),
    )];
    items.push(if facts.wal_level == "logical" {
        CheckItem::new("wal_level", CheckStatus::Pass, "logical")
    } else if facts.rds {
        CheckItem::new(
            "wal_level",
            CheckStatus::Fail,
            format!("is {}; logical decoding needs logical", facts.wal_level),
        )
        .with_fix("set rds.logical_replication = 1 in the DB parameter group, then reboot")
    } else {
        CheckItem::new(
            "wal_level",
            CheckStatus::Fail,
            format!("is {}; logical decoding needs logical", facts.wal_level),
        )
        .with_fix("ALTER SYSTEM SET wal_level = logical; then restart Postgres")
    });
    let slot_missing = facts.slot.is_none();
    items.push(capacity(
        "max_replication_slots",
        facts.max_replication_slots,
        facts.slots_in_use,
        slot_missing,
        "slots exist",
    ));
    items.push(capacity(
        "max_wal_senders",
        facts.max_wal_senders,
        facts.wal_senders_in_use,
        true,
        "WAL senders run",
    ));
    items.push(replication_privilege(facts));
    items.extend(replica_identity(facts));
    items.push(publication(settings, facts));
    items.extend(slot(settings, facts));
    let unreadable: Vec<String> = facts
        .tables
        .iter()
        .filter(|t| !t.selectable)
        .map(TableFacts::qualified)
        .collect();
    if !unreadable.is_empty() {
        items.push(
            CheckItem::new(
                "privilege SELECT",
                CheckStatus::Warn,
                format!(
                    "{} cannot read {}; snapshots and `verify` need SELECT",
                    facts.user,
                    unreadable.join(", ")
                ),
            )
            .with_fix(format!(
                "GRANT SELECT ON {} TO {};",
                unreadable.join(", "),
                quote_ident(&facts.user)
            )),
        );
    }
    items
}

/// A server limit that tidemark needs one more of (`needs_one`), or only reports.
fn capacity(name: &str, max: i64, used: i64, needs_one: bool, what: &str) -> CheckItem {
    let detail = format!("{max} ({used} {what})");
    if needs_one && used >= max {
        CheckItem::new(
            name,
            CheckStatus::Fail,
            format!("{detail}: none left for tidemark"),
        )
        .with_fix(format!(
            "ALTER SYSTEM SET {name} = {}; then restart Postgres (RDS: the parameter group)",
            max + 1
        ))
    } else {
        CheckItem::new(name, CheckStatus::Pass, detail)
    }
}

fn replication_privilege(facts: &PostgresFacts) -> CheckItem {
    let name = "privilege REPLICATION";
    let role = quote_ident(&facts.user);
    if facts.superuser {
        CheckItem::new(
            name,
            CheckStatus::Pass,
            format!("{} is a superuser", facts.user),
        )
    } else if facts.replication {
        CheckItem::new(
            name,
            CheckStatus::Pass,
            format!("{} has REPLICATION", facts.user),
        )
    } else if facts.rds_replication {
        CheckItem::new(
            name,
            CheckStatus::Pass,
            format!("{} is a member of rds_replication", facts.user),
        )
    } else if facts.rds {
        CheckItem::new(
            name,
            CheckStatus::Fail,
            format!(
                "{} is not a member of rds_replication; the server refuses the replication connection",
                facts.user
            ),
        )
        .with_fix(format!("GRANT rds_replication TO {role};"))
    } else {
        CheckItem::new(
            name,
            CheckStatus::Fail,
            format!(
                "{} lacks the REPLICATION attribute; the server refuses the replication connection",
                facts.user
            ),
        )
        .with_fix(format!("ALTER ROLE {role} WITH REPLICATION;"))
    }
}

fn replica_identity(facts: &PostgresFacts) -> Vec<CheckItem> {
    if facts.tables.is_empty() {
        return vec![CheckItem::new(
            "tables",
            CheckStatus::Warn,
            "no table of this database matches `include`: nothing would be replicated",
        )
        .with_fix("check the source's include/exclude patterns (schema.table) and the database in its url")];
    }
    let mut items = Vec::new();
    let mut fine = 0;
    for table in &facts.tables {
        if table.identifies_rows() {
            fine += 1;
            continue;
        }
        let why = match table.replica_identity {
            'n' => "REPLICA IDENTITY NOTHING",
            _ => "no primary key and REPLICA IDENTITY DEFAULT",
        };
        // A warning, not a failure: `run` leaves such a table out of the publication (and says
        // so at every start) rather than stopping every other table of the source.
        items.push(
            CheckItem::new(
                format!("replica identity {}.{}", table.schema, table.name),
                CheckStatus::Warn,
                format!(
                    "{why}: its updates and deletes carry no old key, so tidemark leaves it out of the publication and none of its changes are replicated until it has one"
                ),
            )
            .with_fix(format!(
                "ALTER TABLE {} REPLICA IDENTITY FULL; (or add a primary key)",
                table.qualified()
            )),
        );
    }
    items.insert(
        0,
        CheckItem::new(
            "replica identity",
            if fine == facts.tables.len() {
                CheckStatus::Pass
            } else {
                CheckStatus::Warn
            },
            format!(
                "{fine} of {} included tables have a primary key, a replica identity index or REPLICA IDENTITY FULL",
                facts.tables.len()
            ),
        ),
    );
    items
}

fn publication(settings: &PostgresSettings, facts: &PostgresFacts) -> CheckItem {
    let name = format!("publication {}", settings.publication);
    let quoted = quote_ident(&settings.publication);
    let Some(publication) = &facts.publication else {
        let scope = if settings.publish_all_tables {
            "FOR ALL TABLES".to_owned()
        } else {
            // Tables that cannot identify their rows are left out: published, the source would
            // refuse their updates and deletes.
            let tables: Vec<String> = facts
                .tables
                .iter()
                .filter(|t| t.identifies_rows())
                .map(TableFacts::qualified)
                .collect();
            if tables.is_empty() {
                String::new()
            } else {
                format!("FOR TABLE {}", tables.join(", "))
            }
        };
        let can_create = if settings.publish_all_tables {
            facts.superuser
        } else {
            facts.superuser
                || (facts.can_create_in_database && facts.tables.iter().all(|t| t.owned))
        };
        return if can_create {
            CheckItem::new(
                name,
                CheckStatus::Info,
                format!(
                    "does not exist yet; tidemark creates it at first start ({})",
                    if scope.is_empty() {
                        "empty: no included table identifies its rows yet"
                    } else {
                        &scope
                    }
                ),
            )
        } else {
            CheckItem::new(
                name,
                CheckStatus::Fail,
                format!(
                    "does not exist, and {} may not create it (needs CREATE on the database and ownership of the tables; FOR ALL TABLES needs a superuser)",
                    facts.user
                ),
            )
            .with_fix(format!(
                "as the tables' owner: CREATE PUBLICATION {quoted} {scope};"
            ).replace(" ;", ";"))
        };
    };
    if !publication.missing_operations.is_empty() {
        return CheckItem::new(
            name,
            CheckStatus::Fail,
            format!(
                "does not publish {}",
                publication.missing_operations.join(", ")
            ),
        )
        .with_fix(format!(
            "ALTER PUBLICATION {quoted} SET (publish = 'insert, update, delete, truncate');"
        ));
    }
    if publication.all_tables {
        return CheckItem::new(name, CheckStatus::Pass, "FOR ALL TABLES");
    }
    // Tables that cannot identify their rows stay out on purpose; the replica identity items
    // report them.
    let unpublished: Vec<&UnpublishedTable> = publication
        .unpublished
        .iter()
        .filter(|u| u.identifies_rows)
        .collect();
    if unpublished.is_empty() {
        return CheckItem::new(
            name,
            CheckStatus::Pass,
            format!(
                "publishes all {} included tables that identify their rows",
                facts.tables.iter().filter(|t| t.identifies_rows()).count()
            ),
        );
    }
    let missing: Vec<String> = unpublished
        .iter()
        .map(|t| format!("{}.{}", quote_ident(&t.schema), quote_ident(&t.name)))
        .collect();
    let addable = unpublished.iter().all(|u| {
        facts
            .tables
            .iter()
            .any(|t| t.schema == u.schema && t.name == u.name && t.owned)
    });
    // `tidemark run` adds them itself at start when it may (and only tables that identify their
    // rows: the replica identity items say what the others need).
    let (status, consequence) = if publication.owned && addable {
        (
            CheckStatus::Warn,
            "tidemark adds them at its next start; changes made before that never arrive",
        )
    } else {
        (
            CheckStatus::Fail,
            "their changes never arrive, and tidemark does not add them (it needs ownership of the publication and the tables, and tables that identify their rows)",
        )
    };
    CheckItem::new(
        name,
        status,
        format!(
            "lacks {} included table(s): {}; {consequence}",
            missing.len(),
            missing.join(", ")
        ),
    )
    .with_fix(format!(
        "ALTER PUBLICATION {quoted} ADD TABLE {};",
        missing.join(", ")
    ))
}

fn slot(settings: &PostgresSettings, facts: &PostgresFacts) -> Vec<CheckItem> {
    let name = format!("slot {}", settings.slot);
    let mut items = Vec::new();
    if facts.max_slot_wal_keep_mb < 0 {
        items.push(
            CheckItem::new(
                "max_slot_wal_keep_size",
                CheckStatus::Warn,
                "-1 (unlimited): a slot nobody reads keeps WAL until the disk is full",
            )
            .with_fix(
                "ALTER SYSTEM SET max_slot_wal_keep_size = '100GB'; SELECT pg_reload_conf(); \
                 (sized for the longest outage to ride out; RDS: the parameter group)",
            ),
        );
    }
    let Some(slot) = &facts.slot else {
        items.push(CheckItem::new(
            name,
            CheckStatus::Info,
            "does not exist yet; tidemark creates it (pgoutput) at first start",
        ));
        return items;
    };
    let drop = format!("SELECT pg_drop_replication_slot('{}');", settings.slot);
    if slot.plugin != "pgoutput" || slot.database.as_deref() != Some(facts.database.as_str()) {
        items.push(
            CheckItem::new(
                name,
                CheckStatus::Fail,
                format!(
                    "exists for plugin {} on database {}; tidemark needs pgoutput on {}",
                    slot.plugin,
                    slot.database.as_deref().unwrap_or("(none)"),
                    facts.database
                ),
            )
            .with_fix(format!(
                "choose another `slot` for this source, or drop this one if nothing uses it: {drop}"
            )),
        );
        return items;
    }
    let retained = slot
        .retained_bytes
        .map_or("unknown".to_owned(), |b| format!("{} MB", b >> 20));
    let status = slot.wal_status.as_deref().unwrap_or("unknown");
    let detail = format!(
        "pgoutput, wal_status {status}, retains {retained} of WAL{}",
        if slot.active {
            ", in use by a running process"
        } else {
            ""
        }
    );
    items.push(match status {
        "lost" => CheckItem::new(
            name,
            CheckStatus::Fail,
            format!("{detail}: the WAL it needed was removed; changes since its position are gone"),
        )
        .with_fix(format!(
            "drop it ({drop}); tidemark then starts from the end of the log, and the tables must be copied again (snapshot)"
        )),
        "unreserved" => CheckItem::new(
            name,
            CheckStatus::Warn,
            format!("{detail}: close to max_slot_wal_keep_size, WAL may be removed soon"),
        )
        .with_fix("start tidemark for this source, or raise max_slot_wal_keep_size"),
        _ if slot
            .retained_bytes
            .is_some_and(|b| b > RETAINED_WAL_WARN_BYTES) =>
        {
            CheckItem::new(
                name,
                CheckStatus::Warn,
                format!("{detail}: far behind; WAL piles up on the server"),
            )
            .with_fix(format!(
                "start tidemark for this source, or drop the slot if the source is retired: {drop}"
            ))
        }
        _ => CheckItem::new(name, CheckStatus::Pass, detail),
    });
    items
}

/// `name` as a Postgres identifier, quoted only when it must be.
fn quote_ident(name: &str) -> String {
    let plain = name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && name.bytes().next().is_some_and(|b| !b.is_ascii_digit());
    if plain {
        name.to_owned()
    } else {
        format!("\"{}\"", name.replace('"', "\"\""))
    }
}
