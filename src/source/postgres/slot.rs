//! The replication slot and publication of a Postgres source: created on first start, reused
//! afterwards, and checked against the source's checkpoint before anything is read.
//!
//! The slot is the source's position of record on the server side: Postgres keeps the WAL from
//! the slot's `restart_lsn` on and never sends a change at or before its `confirmed_flush_lsn`
//! again. tidemark confirms a position only after the warehouse committed it, so the slot is
//! never ahead of the checkpoint. When it is (a restored warehouse, someone else advancing the
//! slot), or when the slot is gone or invalidated, changes between the two positions are
//! missing: that is reported with the ways to recover, never skipped silently.

use std::fmt;

use tokio_postgres::Client;

use super::config::PostgresSettings;
use crate::config::SourceConfig;
use crate::error::ErrorKind;

/// A WAL position, as Postgres prints it (`16/B374D848`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WalPosition(pub u64);

impl fmt::Display for WalPosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

impl WalPosition {
    /// Parses Postgres' `X/Y` text form.
    pub fn parse(text: &str) -> Option<WalPosition> {
        let (high, low) = text.split_once('/')?;
        let high = u64::from_str_radix(high, 16).ok()?;
        let low = u64::from_str_radix(low, 16).ok()?;
        (high <= u64::from(u32::MAX) && low <= u64::from(u32::MAX))
            .then_some(WalPosition((high << 32) | low))
    }
}

/// What the server says about the source's slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotState {
    /// Output plugin (`pgoutput` for ours).
    pub plugin: String,
    /// The database it decodes.
    pub database: Option<String>,
    /// Oldest WAL the slot still holds.
    pub restart_lsn: Option<WalPosition>,
    /// Everything up to here was confirmed by the reader; the server never sends it again.
    pub confirmed_flush: Option<WalPosition>,
    /// `reserved`, `extended`, `unreserved` or `lost`.
    pub wal_status: Option<String>,
}

/// Where reading starts, decided from the checkpoint and the slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartDecision {
    /// No checkpoint and no slot: create the slot and start where it begins.
    CreateSlot,
    /// Read from this position (the checkpoint, or a new slot's start before any checkpoint).
    Resume(WalPosition),
}

/// Why a Postgres source cannot start, with what the operator can do about it.
#[derive(Debug, thiserror::Error)]
pub enum SlotError {
    /// The slot is gone while the checkpoint says we were reading from it.
    #[error(
        "source {source_id}: replication slot `{slot}` does not exist, but the checkpoint is at {checkpoint}: the changes after it cannot be read. To recover: set snapshot = \"when_needed\" on the source to copy its tables again by itself at the next start, or run `tidemark snapshot --config FILE --source {source_id}` once and start tidemark again (either copies from the current end of the WAL, with a new slot, deleting in the warehouse the rows deleted meanwhile)"
    )]
    Missing {
        /// The source.
        source_id: String,
        /// The slot name.
        slot: String,
        /// The checkpoint.
        checkpoint: WalPosition,
    },
    /// The server invalidated the slot (it ran past `max_slot_wal_keep_size`).
    #[error(
        "source {source_id}: replication slot `{slot}` was invalidated (wal_status = lost): the WAL after the checkpoint {checkpoint} was removed, so those changes are gone. To recover: set snapshot = \"when_needed\" on the source to copy its tables again by itself at the next start, or run `tidemark snapshot --config FILE --source {source_id}` once and start tidemark again (either copies from the current end of the WAL, with a new slot, deleting in the warehouse the rows deleted meanwhile); raise max_slot_wal_keep_size so a future outage of this length is survived"
    )]
    Lost {
        /// The source.
        source_id: String,
        /// The slot name.
        slot: String,
        /// The checkpoint.
        checkpoint: WalPosition,
    },
    /// The slot confirmed more than the warehouse holds.
    #[error(
        "source {source_id}: replication slot `{slot}` has confirmed up to {confirmed}, past the checkpoint {checkpoint} (was the warehouse restored from a backup, or the slot advanced by someone else?): the changes between them cannot be read again. To recover: set snapshot = \"when_needed\" on the source to copy its tables again by itself at the next start, or run `tidemark snapshot --config FILE --source {source_id}` once and start tidemark again (either copies from the current end of the WAL, with a new slot, deleting in the warehouse the rows deleted meanwhile)"
    )]
    Ahead {
        /// The source.
        source_id: String,
        /// The slot name.
        slot: String,
        /// The checkpoint.
        checkpoint: WalPosition,
        /// The slot's confirmed position.
        confirmed: WalPosition,
    },
    /// The name is taken by a slot that is not ours to read.
    #[error(
        "source {source_id}: replication slot `{slot}` exists for plugin `{plugin}` on database {database}; tidemark needs a pgoutput slot on {wanted}. Choose another `slot` for this source, or drop that slot if nothing uses it"
    )]
    Foreign {
        /// The source.
        source_id: String,
        /// The slot name.
        slot: String,
        /// Its plugin.
        plugin: String,
        /// Its database.
        database: String,
        /// The source's database.
        wanted: String,
    },
    /// A statement on the source failed.
    #[error("source {source_id}: {doing}: {message}")]
    Sql {
        /// The source.
        source_id: String,
        /// What was being done.
        doing: String,
        /// The server's or driver's message.
        message: String,
        /// Whether retrying can help.
        kind: ErrorKind,
    },
}

impl SlotError {
    /// How the supervisor should react. A missing, lost or ahead slot means changes are gone:
    /// waiting cannot bring them back, so the source stops until an operator recovers it.
    pub fn kind(&self) -> ErrorKind {
        match self {
            SlotError::Sql { kind, .. } => *kind,
            SlotError::Foreign { .. } => ErrorKind::Operator,
            SlotError::Missing { .. } | SlotError::Lost { .. } | SlotError::Ahead { .. } => {
                ErrorKind::Fatal
            }
        }
    }
}

/// Decides where to start from the checkpoint and the slot (pure, so every case is testable).
pub fn decide_start(
    source_id: &str,
    slot_name: &str,
    database: &str,
    checkpoint: Option<WalPosition>,
    slot: Option<&SlotState>,
) -> Result<StartDecision, SlotError> {
    if let Some(slot) = slot
        && (slot.plugin != "pgoutput" || slot.database.as_deref() != Some(database))
    {
        return Err(SlotError::Foreign {
            source_id: source_id.to_owned(),
            slot: slot_name.to_owned(),
            plugin: slot.plugin.clone(),
            database: slot.database.clone().unwrap_or_else(|| "(none)".into()),
            wanted: database.to_owned(),
        });
    }
    match (checkpoint, slot) {
        (None, None) => Ok(StartDecision::CreateSlot),
        // A crash between creating the slot and recording the first checkpoint: nothing was
        // confirmed, so the slot still starts where it was created.
        (None, Some(slot)) => match slot.confirmed_flush {
            Some(at) => Ok(StartDecision::Resume(at)),
            None => Ok(StartDecision::CreateSlot),
        },
        (Some(checkpoint), None) => Err(SlotError::Missing {
            source_id: source_id.to_owned(),
            slot: slot_name.to_owned(),
            checkpoint,
        }),
        (Some(checkpoint), Some(slot)) => {
            if slot.wal_status.as_deref() == Some("lost") {
                return Err(SlotError::Lost {
                    source_id: source_id.to_owned(),
                    slot: slot_name.to_owned(),
                    checkpoint,
                });
            }
            match slot.confirmed_flush {
                Some(confirmed) if confirmed > checkpoint => Err(SlotError::Ahead {
                    source_id: source_id.to_owned(),
                    slot: slot_name.to_owned(),
                    checkpoint,
                    confirmed,
                }),
                _ => Ok(StartDecision::Resume(checkpoint)),
            }
        }
    }
}

fn sql_error(source_id: &str, doing: &str) -> impl Fn(tokio_postgres::Error) -> SlotError {
    let source_id = source_id.to_owned();
    let doing = doing.to_owned();
    move |e| {
        let (message, kind) = match e.as_db_error() {
            // Permission and object errors need an operator; the rest (connection) may pass.
            Some(db) => (db.message().to_owned(), ErrorKind::Operator),
            None => (e.to_string(), ErrorKind::Retry),
        };
        SlotError::Sql {
            source_id: source_id.clone(),
            doing: doing.clone(),
            message,
            kind,
        }
    }
}

/// The slot of source `source_id`, if it exists.
pub async fn read_slot(
    client: &Client,
    source_id: &str,
    settings: &PostgresSettings,
) -> Result<Option<SlotState>, SlotError> {
    let row = client
        .query_opt(
            "SELECT plugin::text, database::text, restart_lsn::text, confirmed_flush_lsn::text,
                wal_status
             FROM pg_replication_slots WHERE slot_name = $1",
            &[&settings.slot],
        )
        .await
        .map_err(sql_error(source_id, "reading pg_replication_slots"))?;
    Ok(row.map(|row| SlotState {
        plugin: row.get::<_, Option<String>>(0).unwrap_or_default(),
        database: row.get(1),
        restart_lsn: row
            .get::<_, Option<String>>(2)
            .and_then(|t| WalPosition::parse(&t)),
        confirmed_flush: row
            .get::<_, Option<String>>(3)
            .and_then(|t| WalPosition::parse(&t)),
        wal_status: row.get(4),
    }))
}

/// Drops the slot of source `source_id` if it exists; refuses while a process streams from it
/// (a running tidemark), whose position would otherwise be lost under it.
pub async fn drop_idle_slot(
    client: &Client,
    source_id: &str,
    settings: &PostgresSettings,
) -> Result<(), SlotError> {
    let doing = format!("dropping replication slot `{}`", settings.slot);
    let active: Option<bool> = client
        .query_opt(
            "SELECT active FROM pg_replication_slots WHERE slot_name = $1",
            &[&settings.slot],
        )
        .await
        .map_err(sql_error(source_id, &doing))?
        .map(|row| row.get(0));
    match active {
        None => Ok(()),
        Some(true) => Err(SlotError::Sql {
            source_id: source_id.to_owned(),
            doing,
            message:
                "a process is streaming from it (is tidemark running this source?); stop it first"
                    .into(),
            kind: ErrorKind::Operator,
        }),
        Some(false) => client
            .execute("SELECT pg_drop_replication_slot($1)", &[&settings.slot])
            .await
            .map(drop)
            .map_err(sql_error(source_id, &doing)),
    }
}

/// Creates the pgoutput slot of source `source_id`; returns the position it starts at.
pub async fn create_slot(
    client: &Client,
    source_id: &str,
    settings: &PostgresSettings,
) -> Result<WalPosition, SlotError> {
    let doing = format!("creating replication slot `{}`", settings.slot);
    let row = client
        .query_one(
            "SELECT lsn::text FROM pg_create_logical_replication_slot($1, 'pgoutput')",
            &[&settings.slot],
        )
        .await
        .map_err(sql_error(source_id, &doing))?;
    let text: String = row.get(0);
    WalPosition::parse(&text).ok_or_else(|| SlotError::Sql {
        source_id: source_id.to_owned(),
        doing,
        message: format!("the server returned an unreadable position {text:?}"),
        kind: ErrorKind::Fatal,
    })
}

/// The tables a publication may hold, as `c` (`pg_class`) and `n` (`pg_namespace`), by schema
/// and name: tables and partitioned tables outside the system schemas, not their partitions.
/// Ends in a WHERE clause, so a caller may add conditions before its ORDER BY.
pub(super) const USER_TABLES: &str = "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition
       AND n.nspname NOT LIKE 'pg\\_%' AND n.nspname <> 'information_schema'";

/// A condition on `c` of [`USER_TABLES`]: publication `$1` publishes the table's changes, itself
/// or (a partitioned table) through its partitions, however it came to (`FOR TABLE`, `FOR ALL
/// TABLES`, `FOR TABLES IN SCHEMA`).
const PUBLISHED: &str = "EXISTS (SELECT 1 FROM pg_publication_tables pt
         JOIN pg_namespace pn ON pn.nspname = pt.schemaname
         JOIN pg_class pc ON pc.relnamespace = pn.oid AND pc.relname = pt.tablename
         WHERE pt.pubname = $1
           AND (pc.oid = c.oid OR pc.oid IN (SELECT relid FROM pg_partition_tree(c.oid))))";

/// What [`ensure_publication`] did. Tables are quoted `schema.table`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PublicationChange {
    /// The publication did not exist and was created.
    pub created: bool,
    /// Included tables it lacked that are now in it (with a new publication: its tables).
    pub added: Vec<String>,
    /// Included tables it lacks that could not be added, and the server's reason (typically:
    /// tidemark's user does not own the publication or the tables).
    pub refused: Option<(Vec<String>, String)>,
    /// Included tables left out because they cannot identify their rows (no primary key and
    /// REPLICA IDENTITY DEFAULT, or NOTHING): once published, the source would refuse every
    /// UPDATE and DELETE of them.
    pub without_identity: Vec<String>,
}

/// An included table the source's publication does not publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnpublishedTable {
    /// Its schema.
    pub schema: String,
    /// Its name.
    pub name: String,
    /// Updates and deletes carry an old row tidemark can apply, and the source accepts them once
    /// the table is published (a primary key, or REPLICA IDENTITY FULL or USING INDEX).
    pub identifies_rows: bool,
}

impl UnpublishedTable {
    fn quoted(&self) -> String {
        format!("{}.{}", quote(&self.schema), quote(&self.name))
    }
}

/// The tables `source` includes that exist and that its publication (named in `settings`) does
/// not publish, in name order (all of them when the publication does not exist).
pub async fn unpublished_tables(
    client: &Client,
    source: &SourceConfig,
    settings: &PostgresSettings,
) -> Result<Vec<UnpublishedTable>, SlotError> {
    let rows = client
        .query(
            &format!(
                "SELECT n.nspname::text, c.relname::text,
                    c.relreplident IN ('f', 'i') OR (c.relreplident = 'd' AND EXISTS (
                        SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary))
                 {USER_TABLES} AND NOT {PUBLISHED}
                 ORDER BY 1, 2"
            ),
            &[&settings.publication],
        )
        .await
        .map_err(sql_error(
            &source.id,
            "listing the tables the publication lacks",
        ))?;
    Ok(rows
        .iter()
        .map(|r| UnpublishedTable {
            schema: r.get(0),
            name: r.get(1),
            identifies_rows: r.get(2),
        })
        .filter(|t| source.includes_table(&t.schema, &t.name))
        .collect())
}

/// Makes the publication named in `settings` publish every table `source` includes that exists
/// and can identify its rows: creates it (for those tables, or `FOR ALL TABLES` when configured), or adds the
/// tables it lacks. Tables created later join at the next start. Adding is not required to
/// succeed: the publication may belong to someone else, and the tables it has still replicate.
pub async fn ensure_publication(
    client: &Client,
    source: &SourceConfig,
    settings: &PostgresSettings,
) -> Result<PublicationChange, SlotError> {
    let exists = client
        .query_opt(
            "SELECT 1 FROM pg_publication WHERE pubname = $1",
            &[&settings.publication],
        )
        .await
        .map_err(sql_error(&source.id, "reading pg_publication"))?
        .is_some();
    let publication = quote(&settings.publication);
    let creating = format!("creating publication `{}`", settings.publication);
    let mut change = PublicationChange::default();
    if !exists && settings.publish_all_tables {
        client
            .batch_execute(&format!("CREATE PUBLICATION {publication} FOR ALL TABLES"))
            .await
            .map_err(sql_error(&source.id, &creating))?;
        change.created = true;
        return Ok(change);
    }
    let unpublished = unpublished_tables(client, source, settings).await?;
    if !exists && unpublished.is_empty() {
        return Err(SlotError::Sql {
            source_id: source.id.clone(),
            doing: creating,
            message: "no existing table matches the source's include patterns; create the tables first, or create the publication by hand".into(),
            kind: ErrorKind::Operator,
        });
    }
    let (tables, without_identity): (Vec<_>, Vec<_>) =
        unpublished.iter().partition(|t| t.identifies_rows);
    change.without_identity = without_identity.iter().map(|t| t.quoted()).collect();
    let tables: Vec<String> = tables.iter().map(|t| t.quoted()).collect();
    if !exists {
        // Without tables it starts empty; they join once they can identify their rows.
        let scope = if tables.is_empty() {
            String::new()
        } else {
            format!(" FOR TABLE {}", tables.join(", "))
        };
        client
            .batch_execute(&format!("CREATE PUBLICATION {publication}{scope}"))
            .await
            .map_err(sql_error(&source.id, &creating))?;
        change.created = true;
        change.added = tables;
        return Ok(change);
    }
    if tables.is_empty() {
        return Ok(change);
    }
    let added = client
        .batch_execute(&format!(
            "ALTER PUBLICATION {publication} ADD TABLE {}",
            tables.join(", ")
        ))
        .await;
    match added {
        Ok(()) => change.added = tables,
        Err(e) => match e.as_db_error() {
            Some(db) => change.refused = Some((tables, db.message().to_owned())),
            None => return Err(sql_error(&source.id, "adding tables to the publication")(e)),
        },
    }
    Ok(change)
}

/// `name` as a quoted SQL identifier.
pub(super) fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(confirmed: u64, wal_status: &str) -> SlotState {
        SlotState {
            plugin: "pgoutput".into(),
            database: Some("app".into()),
            restart_lsn: Some(WalPosition(confirmed - 10)),
            confirmed_flush: Some(WalPosition(confirmed)),
            wal_status: Some(wal_status.into()),
        }
    }

    fn decide(
        checkpoint: Option<u64>,
        slot: Option<&SlotState>,
    ) -> Result<StartDecision, SlotError> {
        decide_start("s", "tidemark_s", "app", checkpoint.map(WalPosition), slot)
    }

    #[test]
    fn positions_print_and_parse_as_postgres_does() {
        assert_eq!(WalPosition(0x16_B374_D848).to_string(), "16/B374D848");
        assert_eq!(
            WalPosition::parse("16/B374D848"),
            Some(WalPosition(0x16_B374_D848))
        );
        assert_eq!(WalPosition::parse("0/0"), Some(WalPosition(0)));
        assert_eq!(WalPosition::parse("16"), None);
        assert_eq!(WalPosition::parse("1FFFFFFFF/0"), None);
    }

    #[test]
    fn the_start_follows_the_checkpoint_and_refuses_every_gap() {
        assert_eq!(decide(None, None).unwrap(), StartDecision::CreateSlot);
        let fresh = slot(500, "reserved");
        assert_eq!(
            decide(None, Some(&fresh)).unwrap(),
            StartDecision::Resume(WalPosition(500)),
            "a slot created before a crash, nothing recorded yet"
        );
        assert_eq!(
            decide(Some(700), Some(&fresh)).unwrap(),
            StartDecision::Resume(WalPosition(700))
        );
        assert!(matches!(
            decide(Some(700), None),
            Err(SlotError::Missing { .. })
        ));
        assert!(matches!(
            decide(Some(700), Some(&slot(500, "lost"))),
            Err(SlotError::Lost { .. })
        ));
        let ahead = decide(Some(400), Some(&fresh)).unwrap_err();
        assert!(matches!(ahead, SlotError::Ahead { .. }));
        assert!(
            ahead
                .to_string()
                .contains("0/1F4, past the checkpoint 0/190"),
            "{ahead}"
        );
        let mut other = slot(500, "reserved");
        other.plugin = "wal2json".into();
        assert!(matches!(
            decide(None, Some(&other)),
            Err(SlotError::Foreign { .. })
        ));
        assert_eq!(
            decide(Some(700), None).unwrap_err().kind(),
            ErrorKind::Fatal,
            "changes are gone: waiting cannot help"
        );
    }
}
