//! Turns decoded pgoutput messages into the [`SourceMessage`] stream: transaction boundaries,
//! table schemas from Relation messages, and typed row changes.
//!
//! Pure (no I/O): the replication stream feeds it message by message ([`Assembler::feed`]), and
//! before a Relation message it asks the source's catalog for what pgoutput does not say
//! ([`Assembler::catalog_needs`], [`super::catalog::fetch`], [`Assembler::learn`]).
//!
//! Guarantees, on top of the stream grammar in [`crate::event`]:
//! - `Begin` carries the commit LSN (`Transaction::log_coordinate`, every change's
//!   `Position::txn`) and the commit time; changes are numbered from 0 in stream order;
//!   `Commit` carries `ResumePoint::Lsn { lsn: end LSN }`, where streaming resumes after the transaction.
//! - A `Schema` is sent when a Relation message gives a table a shape it did not have (the first
//!   time, and after every change), before the next change of the table.
//! - The primary key is the replica identity (the primary key, or the index of REPLICA IDENTITY
//!   USING INDEX). With REPLICA IDENTITY FULL every column is flagged, which is not a key: the
//!   real primary key comes from the catalog, and a table without one has no key (append mode).
//! - Row images follow what a batch's changes expect (`sink/changes.rs`): an update's `before`
//!   always holds the key (the old key when pgoutput sent one, so a changed key is seen;
//!   otherwise the key of the new row); columns an image does not carry are [`Value::Unchanged`]
//!   (the non-key columns of a key-only old image, unchanged TOAST values). With FULL identity
//!   an unchanged TOAST value is taken from the old row, which holds it whole.
//! - Every problem is an [`AssembleError`] naming the WAL position (and table, column and
//!   change position where there is one); no input panics. A change of a relation never
//!   described, a Begin inside a transaction or a Commit that does not match its Begin is an
//!   error, never skipped.
//! - Columns of types tidemark does not support are carried as text, with one warning per
//!   column ([`Assembler::unsupported_columns`]).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use tracing::warn;

use super::catalog::{Catalog, CatalogNeeds};
use super::pgoutput::{
    Begin, ColumnData, Commit, Lsn, OldTuple, PgOutputMessage, Relation, ReplicaIdentity, Truncate,
    TupleData,
};
use super::types::{self, TextReader, ValueError};
use crate::error::ErrorKind;
use crate::event::{
    ChangeEvent, Column, Op, Position, ResumePoint, Row, SourceMessage, TableId, TableSchema,
    Transaction, Value,
};

/// Longest excerpt of a bad value quoted in an error.
const MAX_QUOTED_CHARS: usize = 64;

/// Why the stream cannot be assembled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AssembleError {
    /// A change or truncate names a relation no Relation message described.
    #[error(
        "pgoutput at WAL {at}: change {position} refers to relation oid {relation_oid}, which no Relation message described; the stream is corrupt or incomplete"
    )]
    UnknownRelation {
        /// The relation OID.
        relation_oid: u32,
        /// WAL position of the message.
        at: Lsn,
        /// Position the change would have had.
        position: Position,
    },
    /// A column value cannot be read (boxed: the error travels in every `Result` of the hot
    /// path).
    #[error("{0}")]
    Value(Box<BadValue>),
    /// A table whose replica identity is FULL or NOTHING was described before its primary key
    /// was learned from the catalog (a bug in the caller: see [`Assembler::catalog_needs`]).
    #[error(
        "pgoutput at WAL {at}: table {table} (relation oid {relation_oid}) has REPLICA IDENTITY {identity}, so its primary key must come from the catalog, and it was not fetched"
    )]
    MissingPrimaryKey {
        /// The table.
        table: TableId,
        /// Its OID.
        relation_oid: u32,
        /// `FULL` or `NOTHING`.
        identity: &'static str,
        /// WAL position of the Relation message.
        at: Lsn,
    },
    /// The messages break pgoutput's framing (a change outside a transaction, nested Begin,
    /// a Commit that does not match, a row with the wrong number of columns...).
    #[error("pgoutput at WAL {at}: {problem}")]
    Protocol {
        /// WAL position of the message.
        at: Lsn,
        /// What is wrong.
        problem: String,
    },
}

impl AssembleError {
    /// How the caller should react: a value outside the event model's range needs the source
    /// fixed (or the table excluded); everything else is corrupt input or a bug, never skipped.
    pub fn kind(&self) -> ErrorKind {
        match self {
            AssembleError::Value(bad) if matches!(bad.problem, ValueError::OutOfRange(_)) => {
                ErrorKind::Operator
            }
            _ => ErrorKind::Fatal,
        }
    }
}

/// A column value that cannot be read, and where it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "pgoutput at WAL {at}: source table {table}, column `{column}` ({type_name}), change {position}: {problem} (value `{excerpt}`)"
)]
pub struct BadValue {
    /// The table.
    pub table: TableId,
    /// The column.
    pub column: String,
    /// What the column's type is read as.
    pub type_name: &'static str,
    /// The change's position.
    pub position: Position,
    /// WAL position of the message.
    pub at: Lsn,
    /// The start of the value's text.
    pub excerpt: String,
    /// What is wrong.
    pub problem: ValueError,
}

/// A column carried as text because tidemark does not support its type.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UnsupportedColumn {
    /// The table.
    pub table: TableId,
    /// The column.
    pub column: String,
    /// The type's name (`schema.name`, or `type oid N` when the catalog does not know it).
    pub type_name: String,
}

/// A relation as the last Relation message described it.
#[derive(Debug)]
struct KnownRelation {
    schema: Arc<TableSchema>,
    readers: Vec<TextReader>,
    /// Columns pgoutput sends in a key-only ('K') old tuple: the replica identity's.
    identity_columns: Vec<bool>,
}

#[derive(Debug)]
struct OpenTxn {
    info: Arc<Transaction>,
    final_lsn: Lsn,
    seq: u32,
}

/// The state machine; feed it every message of the stream in order.
#[derive(Debug)]
pub struct Assembler {
    source: Arc<str>,
    catalog: Catalog,
    /// Names from Type messages, for types the catalog does not know.
    type_names: HashMap<u32, String>,
    relations: HashMap<u32, Arc<KnownRelation>>,
    announced: HashMap<TableId, Arc<TableSchema>>,
    unsupported: Vec<UnsupportedColumn>,
    warned: HashSet<UnsupportedColumn>,
    txn: Option<OpenTxn>,
    /// End LSN of the last transaction handed out, or the last heartbeat's position.
    resume_lsn: Option<Lsn>,
}

impl Assembler {
    /// A fresh assembler for source `source`. It knows no catalog facts yet: it is taught them
    /// ([`Assembler::learn`]) before each Relation message that needs some.
    pub fn new(source: Arc<str>) -> Self {
        Self {
            source,
            catalog: Catalog::new(),
            type_names: HashMap::new(),
            relations: HashMap::new(),
            announced: HashMap::new(),
            unsupported: Vec::new(),
            warned: HashSet::new(),
            txn: None,
            resume_lsn: None,
        }
    }

    /// What must be read from the source's catalog before `relation` is fed: the types that
    /// are not built in (read again each time, so enum labels stay current), and, with REPLICA
    /// IDENTITY FULL or NOTHING, the table's primary key (it may have changed). Fetch it with
    /// [`super::catalog::fetch`] and hand it to [`Assembler::learn`].
    pub fn catalog_needs(&self, relation: &Relation) -> CatalogNeeds {
        let mut type_oids: Vec<u32> = relation
            .columns
            .iter()
            .map(|c| c.type_oid)
            .filter(|oid| !types::is_builtin(*oid))
            .collect();
        type_oids.sort_unstable();
        type_oids.dedup();
        let primary_key_of = matches!(
            relation.replica_identity,
            ReplicaIdentity::Full | ReplicaIdentity::Nothing
        )
        .then_some(relation.oid);
        CatalogNeeds {
            type_oids,
            primary_key_of,
        }
    }

    /// Takes catalog facts, replacing older facts about the same types and relations.
    pub fn learn(&mut self, facts: Catalog) {
        self.catalog.merge(facts);
    }

    /// True while a transaction is open (its changes are not committed yet).
    pub fn in_transaction(&self) -> bool {
        self.txn.is_some()
    }

    /// Abandons the open transaction (the connection was lost): emits `Rollback` if one was
    /// open. The server sends the transaction again, whole, after a reconnect.
    pub fn abort_transaction(&mut self, out: &mut Vec<SourceMessage>) {
        if self.txn.take().is_some() {
            out.push(SourceMessage::Rollback);
        }
    }

    /// Where streaming resumes: after the last transaction handed out (or the last heartbeat).
    pub fn resume_lsn(&self) -> Option<Lsn> {
        self.resume_lsn
    }

    /// The server has sent everything before `wal_end` (a keepalive): when no transaction is
    /// open, emits a `Heartbeat` there, so an idle source's position advances. Transactions that
    /// commit later have a commit LSN beyond it and are still streamed. Never moves backwards.
    pub fn heartbeat(&mut self, wal_end: Lsn, out: &mut Vec<SourceMessage>) {
        if self.txn.is_some() {
            return;
        }
        let lsn = self.resume_lsn.map_or(wal_end, |last| last.max(wal_end));
        self.resume_lsn = Some(lsn);
        out.push(SourceMessage::Heartbeat(ResumePoint::Lsn { lsn: lsn.0 }));
    }

    /// Columns carried as text because their type is not supported, in the order found.
    pub fn unsupported_columns(&self) -> &[UnsupportedColumn] {
        &self.unsupported
    }

    /// The current shape of relation `relation_oid`, if a Relation message described it.
    pub fn schema_of(&self, relation_oid: u32) -> Option<&Arc<TableSchema>> {
        self.relations.get(&relation_oid).map(|r| &r.schema)
    }

    /// How the values of relation `relation_oid`'s columns are read, in column order, if a
    /// Relation message described it: what a snapshot's copy reads its text with, so copied
    /// values are the streamed ones.
    pub fn readers_of(&self, relation_oid: u32) -> Option<&[TextReader]> {
        self.relations
            .get(&relation_oid)
            .map(|r| r.readers.as_slice())
    }

    /// Processes one message, `at` being the WAL position it arrived at (the XLogData's
    /// `wal_start`; used in errors), appending the messages it produces to `out`. On error,
    /// `out` may hold messages of the failing transaction: the caller stops the source and
    /// discards them (they were never committed).
    pub fn feed(
        &mut self,
        message: &PgOutputMessage,
        at: Lsn,
        out: &mut Vec<SourceMessage>,
    ) -> Result<(), AssembleError> {
        match message {
            PgOutputMessage::Begin(begin) => self.on_begin(begin, at, out),
            PgOutputMessage::Commit(commit) => self.on_commit(commit, at, out),
            PgOutputMessage::Relation(relation) => self.on_relation(relation, at, out),
            PgOutputMessage::Type(ty) => {
                let name = match ty.namespace.as_str() {
                    "" => format!("pg_catalog.{}", ty.name),
                    namespace => format!("{namespace}.{}", ty.name),
                };
                self.type_names.insert(ty.oid, name);
                Ok(())
            }
            PgOutputMessage::Insert(insert) => {
                let (relation, position) = self.change_target(insert.relation_oid, at)?;
                let after = self.row(&relation, &insert.new, position, at)?;
                self.emit(relation, Op::Insert, None, Some(after), position, out);
                Ok(())
            }
            PgOutputMessage::Update(update) => {
                let (relation, position) = self.change_target(update.relation_oid, at)?;
                let mut after = self.row(&relation, &update.new, position, at)?;
                let before = match &update.old {
                    Some(old) => self.old_row(&relation, old, position, at)?,
                    // The key did not change: the new row's key is the old one.
                    None => key_image(&relation.schema, &after),
                };
                for (value, old) in after.iter_mut().zip(&before) {
                    if matches!(value, Value::Unchanged) && !matches!(old, Value::Unchanged) {
                        *value = old.clone();
                    }
                }
                self.emit(
                    relation,
                    Op::Update,
                    Some(before),
                    Some(after),
                    position,
                    out,
                );
                Ok(())
            }
            PgOutputMessage::Delete(delete) => {
                let (relation, position) = self.change_target(delete.relation_oid, at)?;
                let before = self.old_row(&relation, &delete.old, position, at)?;
                self.emit(relation, Op::Delete, Some(before), None, position, out);
                Ok(())
            }
            PgOutputMessage::Truncate(truncate) => self.on_truncate(truncate, at, out),
            // Replication origins and logical messages carry nothing to replicate.
            PgOutputMessage::Origin(_) | PgOutputMessage::Message(_) => Ok(()),
        }
    }

    fn on_begin(
        &mut self,
        begin: &Begin,
        at: Lsn,
        out: &mut Vec<SourceMessage>,
    ) -> Result<(), AssembleError> {
        if let Some(open) = &self.txn {
            return Err(AssembleError::Protocol {
                at,
                problem: format!(
                    "Begin of transaction {} (commit {}) inside transaction {} (commit {}), which never committed",
                    begin.xid, begin.final_lsn, open.info.id, open.final_lsn
                ),
            });
        }
        let info = Arc::new(Transaction {
            id: begin.xid.to_string(),
            gtid: None,
            commit_ts_micros: begin.commit_timestamp_unix_us,
            log_coordinate: begin.final_lsn.0,
        });
        out.push(SourceMessage::Begin(info.clone()));
        self.txn = Some(OpenTxn {
            info,
            final_lsn: begin.final_lsn,
            seq: 0,
        });
        Ok(())
    }

    fn on_commit(
        &mut self,
        commit: &Commit,
        at: Lsn,
        out: &mut Vec<SourceMessage>,
    ) -> Result<(), AssembleError> {
        let Some(open) = self.txn.take() else {
            return Err(AssembleError::Protocol {
                at,
                problem: format!("Commit {} without a Begin", commit.commit_lsn),
            });
        };
        if open.final_lsn != commit.commit_lsn {
            return Err(AssembleError::Protocol {
                at,
                problem: format!(
                    "Commit at {} closes the transaction that Begin announced to commit at {}",
                    commit.commit_lsn, open.final_lsn
                ),
            });
        }
        self.resume_lsn = Some(commit.end_lsn);
        out.push(SourceMessage::Commit(ResumePoint::Lsn {
            lsn: commit.end_lsn.0,
        }));
        Ok(())
    }

    fn on_relation(
        &mut self,
        relation: &Relation,
        at: Lsn,
        out: &mut Vec<SourceMessage>,
    ) -> Result<(), AssembleError> {
        let namespace = match relation.namespace.as_str() {
            "" => "pg_catalog",
            namespace => namespace,
        };
        let id = TableId::new(namespace, relation.name.as_str());
        let mut columns = Vec::with_capacity(relation.columns.len());
        let mut readers = Vec::with_capacity(relation.columns.len());
        for column in &relation.columns {
            let resolved = types::resolve(
                column.type_oid,
                column.type_modifier,
                &self.catalog,
                &self.type_names,
            );
            if let Some(type_name) = resolved.unsupported {
                self.note_unsupported(UnsupportedColumn {
                    table: id.clone(),
                    column: column.name.clone(),
                    type_name,
                });
            }
            columns.push(Column {
                name: Arc::from(column.name.as_str()),
                ty: resolved.column_type,
                nullable: true,
            });
            readers.push(resolved.reader);
        }
        let identity_columns: Vec<bool> = relation.columns.iter().map(|c| c.is_key).collect();
        let primary_key = match relation.replica_identity {
            ReplicaIdentity::Default | ReplicaIdentity::Index => identity_columns
                .iter()
                .enumerate()
                .filter_map(|(i, &key)| key.then_some(i))
                .collect(),
            ReplicaIdentity::Full | ReplicaIdentity::Nothing => {
                self.catalog_primary_key(relation, &id, &columns, at)?
            }
        };
        for &k in &primary_key {
            if let Some(column) = columns.get_mut(k) {
                column.nullable = false;
            }
        }
        let schema = TableSchema {
            id: id.clone(),
            columns,
            primary_key,
        };
        let schema = match self.announced.get(&id) {
            Some(known) if **known == schema => known.clone(),
            _ => {
                let schema = Arc::new(schema);
                self.announced.insert(id, schema.clone());
                out.push(SourceMessage::Schema(schema.clone()));
                schema
            }
        };
        self.relations.insert(
            relation.oid,
            Arc::new(KnownRelation {
                schema,
                readers,
                identity_columns,
            }),
        );
        Ok(())
    }

    /// Indexes of the catalog's primary key columns; empty (append mode, with a warning) when a
    /// key column is not published.
    fn catalog_primary_key(
        &self,
        relation: &Relation,
        id: &TableId,
        columns: &[Column],
        at: Lsn,
    ) -> Result<Vec<usize>, AssembleError> {
        let Some(names) = self.catalog.primary_key(relation.oid) else {
            return Err(AssembleError::MissingPrimaryKey {
                table: id.clone(),
                relation_oid: relation.oid,
                identity: match relation.replica_identity {
                    ReplicaIdentity::Nothing => "NOTHING",
                    _ => "FULL",
                },
                at,
            });
        };
        let found: Option<Vec<usize>> = names
            .iter()
            .map(|name| columns.iter().position(|c| *c.name == **name))
            .collect();
        match found {
            Some(key) => Ok(key),
            None => {
                warn!(
                    source = %self.source,
                    table = %id,
                    primary_key = %names.join(", "),
                    "a primary key column is not in the publication's column list: the table has no key (append mode)"
                );
                Ok(Vec::new())
            }
        }
    }

    fn note_unsupported(&mut self, column: UnsupportedColumn) {
        if self.warned.insert(column.clone()) {
            warn!(
                source = %self.source,
                table = %column.table,
                column = %column.column,
                r#type = %column.type_name,
                "column type not supported: values are carried as the text Postgres prints"
            );
            self.unsupported.push(column);
        }
    }

    fn on_truncate(
        &mut self,
        truncate: &Truncate,
        at: Lsn,
        out: &mut Vec<SourceMessage>,
    ) -> Result<(), AssembleError> {
        for &oid in &truncate.relation_oids {
            let (relation, position) = self.change_target(oid, at)?;
            self.emit(relation, Op::Truncate, None, None, position, out);
        }
        Ok(())
    }

    /// The relation a change refers to and the change's position (the next in its transaction).
    fn change_target(
        &mut self,
        relation_oid: u32,
        at: Lsn,
    ) -> Result<(Arc<KnownRelation>, Position), AssembleError> {
        let Some(txn) = self.txn.as_mut() else {
            return Err(AssembleError::Protocol {
                at,
                problem: format!("a change of relation oid {relation_oid} outside a transaction"),
            });
        };
        let position = Position {
            txn: txn.info.log_coordinate,
            seq: txn.seq,
        };
        let Some(relation) = self.relations.get(&relation_oid) else {
            return Err(AssembleError::UnknownRelation {
                relation_oid,
                at,
                position,
            });
        };
        txn.seq = txn.seq.saturating_add(1);
        Ok((relation.clone(), position))
    }

    fn emit(
        &self,
        relation: Arc<KnownRelation>,
        op: Op,
        before: Option<Row>,
        after: Option<Row>,
        position: Position,
        out: &mut Vec<SourceMessage>,
    ) {
        let Some(txn) = &self.txn else { return };
        out.push(SourceMessage::Change(ChangeEvent {
            source: self.source.clone(),
            table: relation.schema.clone(),
            op,
            before,
            after,
            position,
            transaction: txn.info.clone(),
        }));
    }

    /// A tuple as a row of values: NULL, [`Value::Unchanged`] for unchanged TOAST values.
    fn row(
        &self,
        relation: &KnownRelation,
        tuple: &TupleData,
        position: Position,
        at: Lsn,
    ) -> Result<Row, AssembleError> {
        let schema = &relation.schema;
        if tuple.columns.len() != schema.columns.len() {
            return Err(AssembleError::Protocol {
                at,
                problem: format!(
                    "change {position} of {} has {} columns, its Relation message {}",
                    schema.id,
                    tuple.columns.len(),
                    schema.columns.len()
                ),
            });
        }
        tuple
            .columns
            .iter()
            .zip(&schema.columns)
            .zip(&relation.readers)
            .map(|((data, column), &reader)| {
                let problem = |problem, excerpt: String| {
                    AssembleError::Value(Box::new(BadValue {
                        table: schema.id.clone(),
                        column: column.name.to_string(),
                        type_name: reader_name(reader),
                        position,
                        at,
                        excerpt,
                        problem,
                    }))
                };
                match data {
                    ColumnData::Null => Ok(Value::Null),
                    ColumnData::UnchangedToast => Ok(Value::Unchanged),
                    ColumnData::Text(bytes) => {
                        types::read_value(reader, bytes).map_err(|e| problem(e, excerpt(bytes)))
                    }
                    ColumnData::Binary(bytes) => Err(problem(
                        ValueError::Malformed(
                            "a binary-format value: stream without the `binary` option".into(),
                        ),
                        excerpt(bytes),
                    )),
                }
            })
            .collect()
    }

    /// An old tuple as a `before` image: a key-only tuple carries the replica identity columns
    /// only, so the others are [`Value::Unchanged`] (pgoutput sends them as NULL).
    fn old_row(
        &self,
        relation: &KnownRelation,
        old: &OldTuple,
        position: Position,
        at: Lsn,
    ) -> Result<Row, AssembleError> {
        match old {
            OldTuple::Full(tuple) => self.row(relation, tuple, position, at),
            OldTuple::Key(tuple) => {
                let mut row = self.row(relation, tuple, position, at)?;
                for (value, &identity) in row.iter_mut().zip(&relation.identity_columns) {
                    if !identity {
                        *value = Value::Unchanged;
                    }
                }
                Ok(row)
            }
        }
    }
}

/// A `before` image holding only `row`'s primary key columns.
fn key_image(schema: &TableSchema, row: &[Value]) -> Row {
    let mut image = vec![Value::Unchanged; row.len()];
    for &k in &schema.primary_key {
        if let (Some(slot), Some(value)) = (image.get_mut(k), row.get(k)) {
            *slot = value.clone();
        }
    }
    image
}

/// The start of a value's text, for an error message.
fn excerpt(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    match text.char_indices().nth(MAX_QUOTED_CHARS) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text.into_owned(),
    }
}

/// The type a reader reads, for error messages.
pub(super) fn reader_name(reader: TextReader) -> &'static str {
    match reader {
        TextReader::Bool => "bool",
        TextReader::Int => "integer",
        TextReader::Oid => "oid",
        TextReader::Float4 => "float4",
        TextReader::Float8 => "float8",
        TextReader::Numeric => "numeric",
        TextReader::Text => "text",
        TextReader::Bytea => "bytea",
        TextReader::Date => "date",
        TextReader::Time => "time",
        TextReader::TimeTz => "timetz",
        TextReader::Timestamp => "timestamp",
        TextReader::TimestampTz => "timestamptz",
        TextReader::Interval => "interval",
        TextReader::Uuid => "uuid",
        TextReader::Json => "json",
        TextReader::Inet => "inet",
        TextReader::MacAddr => "macaddr",
        TextReader::Bits => "bit",
        TextReader::Enum => "enum",
        TextReader::Array => "array",
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::event::ColumnType;
    use crate::source::postgres::catalog::TypeFact;
    use crate::source::postgres::pgoutput::{
        DataType, Delete, Insert, LogicalMessage, Origin, RelationColumn, Update,
    };

    const INT4: u32 = 23;
    const TEXT: u32 = 25;
    const NUMERIC: u32 = 1700;
    const INT2VECTOR: u32 = 22;
    const ITEMS: u32 = 16_400;
    const TAGS: u32 = 16_410;
    const COMMIT_LSN: u64 = 0x16_B374_D848;
    const END_LSN: u64 = COMMIT_LSN + 0x38;

    fn relation(
        oid: u32,
        name: &str,
        identity: ReplicaIdentity,
        columns: &[(&str, u32, i32, bool)],
    ) -> PgOutputMessage {
        PgOutputMessage::Relation(Relation {
            oid,
            namespace: "shop".into(),
            name: name.into(),
            replica_identity: identity,
            columns: columns
                .iter()
                .map(|&(name, type_oid, type_modifier, is_key)| RelationColumn {
                    is_key,
                    name: name.into(),
                    type_oid,
                    type_modifier,
                })
                .collect(),
        })
    }

    /// `items (id int4 key, label text, amount numeric(10,2))` with the given identity.
    fn items(identity: ReplicaIdentity) -> PgOutputMessage {
        let full = identity == ReplicaIdentity::Full;
        relation(
            ITEMS,
            "items",
            identity,
            &[
                ("id", INT4, -1, true),
                ("label", TEXT, -1, full),
                ("amount", NUMERIC, ((10 << 16) | 2) + 4, full),
            ],
        )
    }

    fn t(text: &str) -> ColumnData {
        ColumnData::Text(Bytes::copy_from_slice(text.as_bytes()))
    }

    fn tuple(columns: Vec<ColumnData>) -> TupleData {
        TupleData { columns }
    }

    fn begin() -> PgOutputMessage {
        PgOutputMessage::Begin(Begin {
            final_lsn: Lsn(COMMIT_LSN),
            commit_timestamp_unix_us: 1_700_000_000_123_456,
            xid: 747,
        })
    }

    fn commit() -> PgOutputMessage {
        PgOutputMessage::Commit(Commit {
            flags: 0,
            commit_lsn: Lsn(COMMIT_LSN),
            end_lsn: Lsn(END_LSN),
            commit_timestamp_unix_us: 1_700_000_000_123_456,
        })
    }

    fn insert(oid: u32, columns: Vec<ColumnData>) -> PgOutputMessage {
        PgOutputMessage::Insert(Insert {
            relation_oid: oid,
            new: tuple(columns),
        })
    }

    fn update(oid: u32, old: Option<OldTuple>, new: Vec<ColumnData>) -> PgOutputMessage {
        PgOutputMessage::Update(Update {
            relation_oid: oid,
            old,
            new: tuple(new),
        })
    }

    fn delete(oid: u32, old: OldTuple) -> PgOutputMessage {
        PgOutputMessage::Delete(Delete {
            relation_oid: oid,
            old,
        })
    }

    fn assembler(catalog: Catalog) -> Assembler {
        let mut assembler = Assembler::new("pg1".into());
        assembler.learn(catalog);
        assembler
    }

    fn feed_all(
        assembler: &mut Assembler,
        messages: &[PgOutputMessage],
    ) -> Result<Vec<SourceMessage>, AssembleError> {
        let mut out = Vec::new();
        for (i, message) in messages.iter().enumerate() {
            assembler.feed(message, Lsn(0x1000 + i as u64), &mut out)?;
        }
        Ok(out)
    }

    fn run(catalog: Catalog, messages: &[PgOutputMessage]) -> Vec<SourceMessage> {
        feed_all(&mut assembler(catalog), messages).unwrap_or_else(|e| panic!("{e}"))
    }

    fn changes(out: &[SourceMessage]) -> Vec<&ChangeEvent> {
        out.iter()
            .filter_map(|m| match m {
                SourceMessage::Change(c) => Some(c),
                _ => None,
            })
            .collect()
    }

    /// The stream's shape: B, S (schema), I/U/D/T, C, R (rollback), H (heartbeat).
    fn shape(out: &[SourceMessage]) -> String {
        out.iter()
            .map(|m| match m {
                SourceMessage::Begin(_) => "B",
                SourceMessage::Schema(_) => "S",
                SourceMessage::Change(c) => match c.op {
                    Op::Insert => "I",
                    Op::Update => "U",
                    Op::Delete => "D",
                    Op::Truncate => "T",
                    Op::Read => "?",
                },
                SourceMessage::Ddl(_) => "?",
                SourceMessage::Commit(_) => "C",
                SourceMessage::Rollback => "R",
                SourceMessage::Heartbeat(_) => "H",
            })
            .collect::<Vec<_>>()
            .join(" ")
    }

    fn dec(text: &str) -> Value {
        Value::Decimal(text.into())
    }

    fn text(s: &str) -> Value {
        Value::Text(s.into())
    }

    fn full_catalog(primary_key: &[&str]) -> Catalog {
        let mut catalog = Catalog::new();
        catalog.set_primary_key(ITEMS, primary_key.iter().map(|c| c.to_string()).collect());
        catalog
    }

    #[test]
    fn insert_update_delete_follow_the_grammar() {
        let out = run(
            Catalog::new(),
            &[
                begin(),
                items(ReplicaIdentity::Default),
                insert(ITEMS, vec![t("1"), t("first"), t("12.50")]),
                update(ITEMS, None, vec![t("1"), t("second"), ColumnData::Null]),
                delete(
                    ITEMS,
                    OldTuple::Key(tuple(vec![t("1"), ColumnData::Null, ColumnData::Null])),
                ),
                commit(),
            ],
        );
        assert_eq!(shape(&out), "B S I U D C");
        let SourceMessage::Begin(txn) = &out[0] else {
            unreachable!()
        };
        assert_eq!(
            **txn,
            Transaction {
                id: "747".into(),
                gtid: None,
                commit_ts_micros: 1_700_000_000_123_456,
                log_coordinate: COMMIT_LSN,
            }
        );
        let SourceMessage::Schema(schema) = &out[1] else {
            unreachable!()
        };
        assert_eq!(schema.id, TableId::new("shop", "items"));
        assert_eq!(schema.primary_key, vec![0]);
        assert!(!schema.columns[0].nullable && schema.columns[1].nullable);
        assert_eq!(
            schema.columns[2].ty,
            ColumnType::Decimal {
                precision: 10,
                scale: 2
            }
        );
        let c = changes(&out);
        assert_eq!(
            c[0].after,
            Some(vec![Value::Int(1), text("first"), dec("12.50")])
        );
        assert_eq!(c[0].before, None);
        // No old tuple: the key did not change, so the new row's key is the old one.
        assert_eq!(
            c[1].before,
            Some(vec![Value::Int(1), Value::Unchanged, Value::Unchanged])
        );
        assert_eq!(
            c[1].after,
            Some(vec![Value::Int(1), text("second"), Value::Null])
        );
        assert_eq!(
            c[2].before,
            Some(vec![Value::Int(1), Value::Unchanged, Value::Unchanged])
        );
        assert_eq!(c[2].after, None);
        for (seq, change) in c.iter().enumerate() {
            assert_eq!(
                change.position,
                Position {
                    txn: COMMIT_LSN,
                    seq: seq as u32
                }
            );
            assert!(Arc::ptr_eq(&change.table, schema));
            assert_eq!(&*change.source, "pg1");
        }
        let SourceMessage::Commit(resume) = &out[5] else {
            unreachable!()
        };
        assert_eq!(*resume, ResumePoint::Lsn { lsn: END_LSN });
    }

    #[test]
    fn a_key_change_is_staged_as_delete_of_the_old_key_then_update() {
        let out = run(
            Catalog::new(),
            &[
                begin(),
                items(ReplicaIdentity::Default),
                update(
                    ITEMS,
                    Some(OldTuple::Key(tuple(vec![
                        t("1"),
                        ColumnData::Null,
                        ColumnData::Null,
                    ]))),
                    vec![t("2"), t("moved"), t("3.00")],
                ),
                commit(),
            ],
        );
        let c = changes(&out);
        assert_eq!(
            c[0].before,
            Some(vec![Value::Int(1), Value::Unchanged, Value::Unchanged])
        );
        assert_eq!(
            c[0].after,
            Some(vec![Value::Int(2), text("moved"), dec("3.00")])
        );
        // What the sink makes of it.
        let target = crate::sink::TargetTable {
            schema: "s".into(),
            table: "items".into(),
        };
        let mut staged = crate::sink::TableChanges::with_encoder(
            c[0].table.id.clone(),
            target,
            Arc::new(crate::sink::postgres::CopyText),
        );
        let mut seq = 0;
        staged.push(c[0], &mut seq).unwrap();
        let mut text = Vec::new();
        let mut chunks = staged.row_chunks(0);
        while let Some(chunk) = chunks.next_chunk().unwrap() {
            text.extend_from_slice(&chunk);
        }
        let rows: Vec<Vec<String>> = String::from_utf8(text)
            .unwrap()
            .lines()
            .map(|l| l.split('\t').skip(1).map(str::to_owned).collect())
            .collect();
        let ops: Vec<(&str, &[String])> = rows.iter().map(|r| (r[0].as_str(), &r[3..])).collect();
        assert_eq!(
            ops,
            vec![
                ("delete", &["1".to_string(), "\\N".into(), "\\N".into()][..]),
                (
                    "update",
                    &["2".to_string(), "moved".into(), "3.00".into()][..]
                ),
            ]
        );
    }

    #[test]
    fn full_identity_takes_the_primary_key_from_the_catalog_and_the_whole_old_row() {
        let old = |label: &str| OldTuple::Full(tuple(vec![t("1"), t(label), t("12.50")]));
        let out = run(
            full_catalog(&["id"]),
            &[
                begin(),
                items(ReplicaIdentity::Full),
                update(
                    ITEMS,
                    Some(old("big text")),
                    vec![t("1"), ColumnData::UnchangedToast, t("13.00")],
                ),
                delete(ITEMS, old("big text")),
                commit(),
            ],
        );
        let SourceMessage::Schema(schema) = &out[1] else {
            unreachable!()
        };
        assert_eq!(schema.primary_key, vec![0]);
        let c = changes(&out);
        assert_eq!(
            c[0].before,
            Some(vec![Value::Int(1), text("big text"), dec("12.50")])
        );
        // The unchanged TOAST value is in the old row, whole.
        assert_eq!(
            c[0].after,
            Some(vec![Value::Int(1), text("big text"), dec("13.00")])
        );
        assert_eq!(
            c[1].before,
            Some(vec![Value::Int(1), text("big text"), dec("12.50")])
        );
    }

    #[test]
    fn full_identity_without_a_primary_key_has_no_key() {
        let out = run(
            full_catalog(&[]),
            &[begin(), items(ReplicaIdentity::Full), commit()],
        );
        let SourceMessage::Schema(schema) = &out[1] else {
            unreachable!()
        };
        assert!(!schema.has_key());
        // A key column left out of the publication's column list: no usable key either.
        let out = run(
            full_catalog(&["id", "gone"]),
            &[begin(), items(ReplicaIdentity::Full), commit()],
        );
        let SourceMessage::Schema(schema) = &out[1] else {
            unreachable!()
        };
        assert!(!schema.has_key());
    }

    #[test]
    fn full_identity_before_the_catalog_was_read_is_an_error() {
        let err = feed_all(
            &mut assembler(Catalog::new()),
            &[begin(), items(ReplicaIdentity::Full)],
        )
        .unwrap_err();
        assert!(
            matches!(
                err,
                AssembleError::MissingPrimaryKey {
                    relation_oid: ITEMS,
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("shop.items"), "{err}");
    }

    #[test]
    fn unchanged_toast_values_stay_unchanged_in_the_after_image() {
        let out = run(
            Catalog::new(),
            &[
                begin(),
                items(ReplicaIdentity::Default),
                update(
                    ITEMS,
                    None,
                    vec![t("1"), ColumnData::UnchangedToast, t("1.00")],
                ),
                commit(),
            ],
        );
        assert_eq!(
            changes(&out)[0].after,
            Some(vec![Value::Int(1), Value::Unchanged, dec("1.00")])
        );
    }

    #[test]
    fn a_truncate_of_two_tables_is_one_change_each() {
        let tags = relation(
            TAGS,
            "tags",
            ReplicaIdentity::Default,
            &[("tag", TEXT, -1, true)],
        );
        let out = run(
            Catalog::new(),
            &[
                begin(),
                items(ReplicaIdentity::Default),
                tags,
                PgOutputMessage::Truncate(Truncate {
                    cascade: false,
                    restart_identity: true,
                    relation_oids: vec![ITEMS, TAGS],
                }),
                commit(),
            ],
        );
        assert_eq!(shape(&out), "B S S T T C");
        let c = changes(&out);
        let tables: Vec<String> = c.iter().map(|c| c.table.id.to_string()).collect();
        assert_eq!(tables, ["shop.items", "shop.tags"]);
        assert_eq!((c[0].position.seq, c[1].position.seq), (0, 1));
        assert!(c.iter().all(|c| c.before.is_none() && c.after.is_none()));
    }

    #[test]
    fn a_relation_change_mid_stream_sends_the_new_schema_before_the_next_change() {
        let wider = relation(
            ITEMS,
            "items",
            ReplicaIdentity::Default,
            &[
                ("id", INT4, -1, true),
                ("label", TEXT, -1, false),
                ("amount", NUMERIC, ((10 << 16) | 2) + 4, false),
                ("note", TEXT, -1, false),
            ],
        );
        let out = run(
            Catalog::new(),
            &[
                begin(),
                items(ReplicaIdentity::Default),
                insert(ITEMS, vec![t("1"), t("a"), t("1.00")]),
                // The same shape again (a new session, an invalidation): nothing to announce.
                items(ReplicaIdentity::Default),
                insert(ITEMS, vec![t("2"), t("b"), t("2.00")]),
                wider,
                insert(ITEMS, vec![t("3"), t("c"), t("3.00"), t("new")]),
                commit(),
            ],
        );
        assert_eq!(shape(&out), "B S I I S I C");
        let SourceMessage::Schema(second) = &out[4] else {
            unreachable!()
        };
        assert_eq!(second.columns.len(), 4);
        let c = changes(&out);
        assert!(Arc::ptr_eq(&c[0].table, &c[1].table));
        assert!(Arc::ptr_eq(&c[2].table, second));
        assert_eq!(c[2].after.as_ref().map(Vec::len), Some(4));
    }

    #[test]
    fn a_change_of_an_unknown_relation_is_an_error_naming_it() {
        for change in [
            insert(999, vec![t("1")]),
            PgOutputMessage::Truncate(Truncate {
                cascade: false,
                restart_identity: false,
                relation_oids: vec![ITEMS, 999],
            }),
        ] {
            let err = feed_all(
                &mut assembler(Catalog::new()),
                &[begin(), items(ReplicaIdentity::Default), change],
            )
            .unwrap_err();
            let AssembleError::UnknownRelation {
                relation_oid,
                position,
                at,
            } = &err
            else {
                panic!("{err}");
            };
            assert_eq!(*relation_oid, 999);
            assert_eq!(position.txn, COMMIT_LSN);
            assert_eq!(*at, Lsn(0x1002));
            let message = err.to_string();
            assert!(
                message.contains("999") && message.contains("0/1002"),
                "{message}"
            );
            assert_eq!(err.kind(), ErrorKind::Fatal);
        }
    }

    #[test]
    fn framing_errors_are_reported_never_skipped() {
        let cases: Vec<(Vec<PgOutputMessage>, &str)> = vec![
            (
                vec![
                    items(ReplicaIdentity::Default),
                    insert(ITEMS, vec![t("1"), t("a"), t("1")]),
                ],
                "outside a transaction",
            ),
            (vec![begin(), begin()], "never committed"),
            (vec![commit()], "without a Begin"),
            (
                vec![
                    begin(),
                    PgOutputMessage::Commit(Commit {
                        flags: 0,
                        commit_lsn: Lsn(COMMIT_LSN + 1),
                        end_lsn: Lsn(END_LSN),
                        commit_timestamp_unix_us: 0,
                    }),
                ],
                "closes the transaction",
            ),
            (
                vec![
                    begin(),
                    items(ReplicaIdentity::Default),
                    insert(ITEMS, vec![t("1"), t("a")]),
                ],
                "has 2 columns",
            ),
        ];
        for (messages, expected) in cases {
            let err = feed_all(&mut assembler(Catalog::new()), &messages).unwrap_err();
            assert!(matches!(err, AssembleError::Protocol { .. }), "{err}");
            assert!(err.to_string().contains(expected), "{err}");
        }
    }

    #[test]
    fn a_bad_value_names_table_column_and_position() {
        let err = feed_all(
            &mut assembler(Catalog::new()),
            &[
                begin(),
                items(ReplicaIdentity::Default),
                insert(ITEMS, vec![t("1"), t("a"), t("1.00")]),
                insert(ITEMS, vec![t("2"), t("b"), t("twelve")]),
            ],
        )
        .unwrap_err();
        let message = err.to_string();
        assert!(
            message.contains("shop.items")
                && message.contains("`amount`")
                && message.contains(&format!("{COMMIT_LSN}.1"))
                && message.contains("twelve"),
            "{message}"
        );
        let binary = feed_all(
            &mut assembler(Catalog::new()),
            &[
                begin(),
                items(ReplicaIdentity::Default),
                insert(
                    ITEMS,
                    vec![
                        ColumnData::Binary(Bytes::from_static(&[0, 0, 0, 1])),
                        t("a"),
                        t("1.00"),
                    ],
                ),
            ],
        )
        .unwrap_err();
        assert!(binary.to_string().contains("binary"), "{binary}");
        // An instant past what tidemark carries needs the source fixed: an operator's error,
        // not corrupt input.
        let instants = relation(
            TAGS,
            "events",
            ReplicaIdentity::Default,
            &[("id", INT4, -1, true), ("at", 1184, -1, false)],
        );
        let late = feed_all(
            &mut assembler(Catalog::new()),
            &[
                begin(),
                instants,
                insert(TAGS, vec![t("1"), t("294276-12-31 23:59:59+00")]),
            ],
        )
        .unwrap_err();
        assert_eq!(late.kind(), ErrorKind::Operator, "{late}");
        assert!(late.to_string().contains("`at`"), "{late}");
    }

    #[test]
    fn enums_domains_and_unsupported_types_through_the_catalog() {
        let mut catalog = Catalog::new();
        catalog.add_type(
            30_001,
            TypeFact::Enum {
                name: "shop.mood".into(),
                labels: vec!["happy".into(), "sad".into()],
            },
        );
        catalog.add_type(
            30_002,
            TypeFact::Domain {
                name: "shop.price".into(),
                base_oid: NUMERIC,
                base_typmod: ((10 << 16) | 2) + 4,
            },
        );
        let moods = relation(
            TAGS,
            "moods",
            ReplicaIdentity::Default,
            &[
                ("id", INT4, -1, true),
                ("mood", 30_001, -1, false),
                ("price", 30_002, -1, false),
                ("spot", INT2VECTOR, -1, false),
                ("thing", 30_003, -1, false),
            ],
        );
        let mut asm = assembler(Catalog::new());
        let needs = asm.catalog_needs(match &moods {
            PgOutputMessage::Relation(r) => r,
            _ => unreachable!(),
        });
        assert_eq!(needs.type_oids, vec![INT2VECTOR, 30_001, 30_002, 30_003]);
        assert_eq!(needs.primary_key_of, None);
        asm.learn(catalog);
        let row = vec![t("1"), t("sad"), t("9.99"), t("1 2"), t("x")];
        let out = feed_all(
            &mut asm,
            &[
                PgOutputMessage::Type(DataType {
                    oid: 30_003,
                    namespace: "shop".into(),
                    name: "thing".into(),
                }),
                begin(),
                moods.clone(),
                insert(TAGS, row.clone()),
                moods,
                insert(TAGS, row),
                commit(),
            ],
        )
        .unwrap();
        assert_eq!(shape(&out), "B S I I C");
        let SourceMessage::Schema(schema) = &out[1] else {
            unreachable!()
        };
        assert_eq!(
            schema.columns[1].ty,
            ColumnType::Enum {
                labels: Arc::from(vec!["happy".to_string(), "sad".to_string()])
            }
        );
        assert_eq!(
            schema.columns[2].ty,
            ColumnType::Decimal {
                precision: 10,
                scale: 2
            }
        );
        assert!(matches!(schema.columns[3].ty, ColumnType::Text { .. }));
        assert_eq!(
            changes(&out)[0].after,
            Some(vec![
                Value::Int(1),
                Value::Enum("sad".into()),
                dec("9.99"),
                text("1 2"),
                text("x"),
            ])
        );
        // One warning per column, however often the relation is described.
        let unsupported: Vec<(&str, &str)> = asm
            .unsupported_columns()
            .iter()
            .map(|u| (u.column.as_str(), u.type_name.as_str()))
            .collect();
        assert_eq!(
            unsupported,
            [("spot", "type oid 22"), ("thing", "shop.thing")]
        );
    }

    #[test]
    fn full_and_nothing_identities_ask_for_the_primary_key() {
        let asm = assembler(Catalog::new());
        for (identity, wanted) in [
            (ReplicaIdentity::Full, Some(ITEMS)),
            (ReplicaIdentity::Nothing, Some(ITEMS)),
            (ReplicaIdentity::Default, None),
            (ReplicaIdentity::Index, None),
        ] {
            let PgOutputMessage::Relation(r) = items(identity) else {
                unreachable!()
            };
            let needs = asm.catalog_needs(&r);
            assert_eq!(needs.primary_key_of, wanted, "{identity:?}");
            assert!(needs.type_oids.is_empty());
        }
    }

    #[test]
    fn origins_and_logical_messages_are_consumed() {
        let out = run(
            Catalog::new(),
            &[
                PgOutputMessage::Message(LogicalMessage {
                    transactional: false,
                    lsn: Lsn(5),
                    prefix: "x".into(),
                    content: Bytes::from_static(b"hello"),
                }),
                begin(),
                PgOutputMessage::Origin(Origin {
                    commit_lsn: Lsn(9),
                    name: "elsewhere".into(),
                }),
                commit(),
            ],
        );
        assert_eq!(shape(&out), "B C");
    }

    #[test]
    fn heartbeats_come_between_transactions_and_never_go_back() {
        let mut asm = assembler(Catalog::new());
        let mut out = Vec::new();
        asm.heartbeat(Lsn(100), &mut out);
        asm.feed(&begin(), Lsn(COMMIT_LSN), &mut out).unwrap();
        asm.heartbeat(Lsn(COMMIT_LSN + 500), &mut out);
        assert!(asm.in_transaction());
        asm.feed(&commit(), Lsn(END_LSN), &mut out).unwrap();
        asm.heartbeat(Lsn(200), &mut out);
        assert_eq!(shape(&out), "H B C H");
        let SourceMessage::Heartbeat(last) = &out[3] else {
            unreachable!()
        };
        assert_eq!(*last, ResumePoint::Lsn { lsn: END_LSN });
        assert_eq!(asm.resume_lsn(), Some(Lsn(END_LSN)));
    }

    #[test]
    fn an_abandoned_transaction_rolls_back() {
        let mut asm = assembler(Catalog::new());
        let mut out = Vec::new();
        asm.abort_transaction(&mut out);
        asm.feed(&begin(), Lsn(1), &mut out).unwrap();
        asm.abort_transaction(&mut out);
        // The server sends the transaction again, whole.
        asm.feed(&begin(), Lsn(1), &mut out).unwrap();
        asm.feed(&commit(), Lsn(2), &mut out).unwrap();
        assert_eq!(shape(&out), "B R B C");
    }
}
