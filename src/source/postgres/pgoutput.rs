//! Decoder of the `pgoutput` logical-replication protocol, version 1: the bytes of one message in,
//! one typed [`PgOutputMessage`] out.
//!
//! Pure: no I/O, no slot state and no knowledge of tidemark's events, so it can be tested and
//! fuzzed alone; the caller pairs Insert/Update/Delete with the latest [`Relation`] of their
//! relation OID. Guarantees: no panic on any input; a message decodes only if every byte is
//! accounted for (trailing bytes are an error); every count is checked against the bytes left
//! before anything is allocated for it, so a hostile count costs nothing; column values and
//! logical-message contents are zero-copy [`Bytes`] slices of the input. Every error names the
//! message, the byte offset and the field that was being read.
//!
//! Reference: PostgreSQL 15 documentation, "Logical Replication Message Formats". Version 1 has no
//! streaming or two-phase messages; their tags are rejected as unknown.

use std::fmt;

use bytes::Bytes;

use crate::error::ErrorKind;

/// Seconds from the Unix epoch (1970-01-01) to the Postgres epoch (2000-01-01), from which
/// pgoutput counts its timestamps.
pub const POSTGRES_EPOCH_UNIX_SECONDS: i64 = 946_684_800;

/// [`POSTGRES_EPOCH_UNIX_SECONDS`] in microseconds, the unit of pgoutput timestamps.
const POSTGRES_EPOCH_UNIX_MICROS: i64 = POSTGRES_EPOCH_UNIX_SECONDS * 1_000_000;

/// Relation column flag: the column is part of the replica identity (the key).
const COLUMN_FLAG_KEY: u8 = 1;

/// Truncate option bit: `TRUNCATE ... CASCADE`.
const TRUNCATE_CASCADE: u8 = 1;

/// Truncate option bit: `TRUNCATE ... RESTART IDENTITY`.
const TRUNCATE_RESTART_IDENTITY: u8 = 2;

/// Logical-message flag bit: the message was emitted inside the transaction.
const MESSAGE_TRANSACTIONAL: u8 = 1;

/// Smallest encoding of a Relation column: flags, an empty name's NUL, type OID, type modifier.
const MIN_RELATION_COLUMN_BYTES: usize = 1 + 1 + 4 + 4;

/// Smallest encoding of a tuple column: its kind byte alone (`n` or `u`).
const MIN_TUPLE_COLUMN_BYTES: usize = 1;

/// A write-ahead-log position; ordered as the server orders them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Lsn(pub u64);

impl fmt::Display for Lsn {
    /// `high/low` in upper-case hex without zero padding, as Postgres 15 prints a `pg_lsn`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

/// One decoded pgoutput message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PgOutputMessage {
    /// A transaction starts; its changes follow until the matching [`Commit`].
    Begin(Begin),
    /// The transaction opened by the last [`Begin`] committed.
    Commit(Commit),
    /// The transaction was replicated into this server from another origin.
    Origin(Origin),
    /// A table's current shape; sent before its first change and again after it changes.
    Relation(Relation),
    /// The name of a non-built-in data type used by a following [`Relation`].
    Type(DataType),
    /// A row was inserted.
    Insert(Insert),
    /// A row was updated.
    Update(Update),
    /// A row was deleted.
    Delete(Delete),
    /// One or more tables were truncated together.
    Truncate(Truncate),
    /// A message written with `pg_logical_emit_message`.
    Message(LogicalMessage),
}

/// Begin 'B': the start of a committed transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Begin {
    /// LSN of the transaction's commit record.
    pub final_lsn: Lsn,
    /// Commit time in microseconds since the Unix epoch.
    pub commit_timestamp_unix_us: i64,
    /// Transaction id.
    pub xid: u32,
}

/// Commit 'C': the end of the transaction opened by the last [`Begin`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Commit {
    /// Flags byte, unused by the protocol so far (always 0); kept rather than judged.
    pub flags: u8,
    /// LSN of the commit record (equals the Begin's `final_lsn`).
    pub commit_lsn: Lsn,
    /// LSN just past the commit record: where streaming resumes after this transaction.
    pub end_lsn: Lsn,
    /// Commit time in microseconds since the Unix epoch.
    pub commit_timestamp_unix_us: i64,
}

/// Origin 'O': the transaction came from another server through replication origin `name`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// LSN of the commit on the origin server.
    pub commit_lsn: Lsn,
    /// Name of the replication origin.
    pub name: String,
}

/// Relation 'R': a table's identity and columns, valid for its changes until the next one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relation {
    /// Relation OID, the id later messages refer to.
    pub oid: u32,
    /// Schema name; empty means `pg_catalog`.
    pub namespace: String,
    /// Table name.
    pub name: String,
    /// Which old values updates and deletes carry.
    pub replica_identity: ReplicaIdentity,
    /// Published columns in tuple order (dropped and generated columns are not sent).
    pub columns: Vec<RelationColumn>,
}

/// How much of the old row a table logs on update and delete (`ALTER TABLE ... REPLICA IDENTITY`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplicaIdentity {
    /// 'd': the primary key columns.
    Default,
    /// 'n': nothing; updates and deletes carry no old values.
    Nothing,
    /// 'f': the whole old row.
    Full,
    /// 'i': the columns of a chosen unique index.
    Index,
}

/// One column of a [`Relation`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelationColumn {
    /// Whether the column is part of the replica identity (with FULL identity, every column is).
    pub is_key: bool,
    /// Column name.
    pub name: String,
    /// OID of the column's data type.
    pub type_oid: u32,
    /// Type modifier (`atttypmod`), -1 when the type has none.
    pub type_modifier: i32,
}

/// Type 'Y': names a data type that is not built in, so its OID alone says nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataType {
    /// Type OID, as used in [`RelationColumn::type_oid`].
    pub oid: u32,
    /// Schema name; empty means `pg_catalog`.
    pub namespace: String,
    /// Type name.
    pub name: String,
}

/// Insert 'I': a new row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Insert {
    /// OID of the table, described by an earlier [`Relation`].
    pub relation_oid: u32,
    /// The inserted row.
    pub new: TupleData,
}

/// Update 'U': a row's new values, and its old ones when the replica identity provides them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Update {
    /// OID of the table, described by an earlier [`Relation`].
    pub relation_oid: u32,
    /// Old key (the key changed) or old row (FULL identity); `None` when neither was logged.
    pub old: Option<OldTuple>,
    /// The row after the update; unchanged TOASTed values are [`ColumnData::UnchangedToast`].
    pub new: TupleData,
}

/// Delete 'D': the identity of a deleted row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delete {
    /// OID of the table, described by an earlier [`Relation`].
    pub relation_oid: u32,
    /// The deleted row's key or, with FULL identity, the whole row.
    pub old: OldTuple,
}

/// The old values an update or delete carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OldTuple {
    /// 'K': replica identity columns only; the others are [`ColumnData::Null`].
    Key(TupleData),
    /// 'O': the whole old row (REPLICA IDENTITY FULL).
    Full(TupleData),
}

/// Truncate 'T': tables emptied by one TRUNCATE statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Truncate {
    /// The statement had CASCADE.
    pub cascade: bool,
    /// The statement had RESTART IDENTITY.
    pub restart_identity: bool,
    /// OIDs of the truncated tables.
    pub relation_oids: Vec<u32>,
}

/// Message 'M': a message written with `pg_logical_emit_message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogicalMessage {
    /// Emitted inside a transaction (it sits between Begin and Commit) rather than immediately.
    pub transactional: bool,
    /// LSN of the message.
    pub lsn: Lsn,
    /// The prefix the writer chose, identifying who the message is for.
    pub prefix: String,
    /// The content, as written.
    pub content: Bytes,
}

/// A row's column values, in the order of its [`Relation`]'s columns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TupleData {
    /// One value per published column.
    pub columns: Vec<ColumnData>,
}

/// One column value of a [`TupleData`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ColumnData {
    /// 'n': SQL NULL (also every non-key column of an [`OldTuple::Key`]).
    Null,
    /// 'u': a TOASTed value the change did not touch; its value is not sent and must be kept.
    UnchangedToast,
    /// 't': the type's text output, in the database's encoding (not checked to be UTF-8).
    Text(Bytes),
    /// 'b': the type's binary send format (only with the `binary` option).
    Binary(Bytes),
}

/// Decodes exactly one pgoutput protocol-version-1 message; bytes left after it are an error.
///
/// Takes [`Bytes`] so that column values and message contents come back as zero-copy slices of
/// it: a row can hold values of up to 1 GB, and copying each once more per change would be the
/// decoder's main cost. Names (relations, columns, types, prefixes) are copied into `String`s,
/// because they must be checked to be UTF-8 anyway and are small.
pub fn decode(message: &Bytes) -> Result<PgOutputMessage, PgOutputError> {
    let mut cursor = Cursor::new(message);
    let [tag] = cursor.array(Field::Tag)?;
    cursor.tag = Some(tag);
    let decoded = match tag {
        b'B' => PgOutputMessage::Begin(begin(&mut cursor)?),
        b'C' => PgOutputMessage::Commit(commit(&mut cursor)?),
        b'O' => PgOutputMessage::Origin(origin(&mut cursor)?),
        b'R' => PgOutputMessage::Relation(relation(&mut cursor)?),
        b'Y' => PgOutputMessage::Type(data_type(&mut cursor)?),
        b'I' => PgOutputMessage::Insert(insert(&mut cursor)?),
        b'U' => PgOutputMessage::Update(update(&mut cursor)?),
        b'D' => PgOutputMessage::Delete(delete(&mut cursor)?),
        b'T' => PgOutputMessage::Truncate(truncate(&mut cursor)?),
        b'M' => PgOutputMessage::Message(logical_message(&mut cursor)?),
        other => return Err(cursor.fail(0, Field::Tag, Problem::UnknownTag(other))),
    };
    cursor.finish()?;
    Ok(decoded)
}

fn begin(cursor: &mut Cursor<'_>) -> Result<Begin, PgOutputError> {
    Ok(Begin {
        final_lsn: cursor.lsn(Field::FinalLsn)?,
        commit_timestamp_unix_us: cursor.timestamp(Field::CommitTimestamp)?,
        xid: cursor.u32(Field::Xid)?,
    })
}

fn commit(cursor: &mut Cursor<'_>) -> Result<Commit, PgOutputError> {
    let [flags] = cursor.array(Field::CommitFlags)?;
    Ok(Commit {
        flags,
        commit_lsn: cursor.lsn(Field::CommitLsn)?,
        end_lsn: cursor.lsn(Field::EndLsn)?,
        commit_timestamp_unix_us: cursor.timestamp(Field::CommitTimestamp)?,
    })
}

fn origin(cursor: &mut Cursor<'_>) -> Result<Origin, PgOutputError> {
    Ok(Origin {
        commit_lsn: cursor.lsn(Field::OriginCommitLsn)?,
        name: cursor.string(Field::OriginName)?,
    })
}

fn relation(cursor: &mut Cursor<'_>) -> Result<Relation, PgOutputError> {
    let oid = cursor.u32(Field::RelationOid)?;
    let namespace = cursor.string(Field::RelationNamespace)?;
    let name = cursor.string(Field::RelationName)?;
    let identity_at = cursor.pos;
    let [identity] = cursor.array(Field::ReplicaIdentity)?;
    let replica_identity = match identity {
        b'd' => ReplicaIdentity::Default,
        b'n' => ReplicaIdentity::Nothing,
        b'f' => ReplicaIdentity::Full,
        b'i' => ReplicaIdentity::Index,
        other => {
            return Err(cursor.fail(
                identity_at,
                Field::ReplicaIdentity,
                Problem::UnknownReplicaIdentity(other),
            ));
        }
    };
    let count = cursor.count_u16(Field::RelationColumnCount, MIN_RELATION_COLUMN_BYTES)?;
    let mut columns = Vec::with_capacity(count);
    for number in 1..=count {
        let field = |part| Field::RelationColumn { number, part };
        let flags = cursor.flags(
            field(RelationColumnPart::Flags),
            COLUMN_FLAG_KEY,
            "1 (part of the key)",
        )?;
        columns.push(RelationColumn {
            is_key: flags & COLUMN_FLAG_KEY != 0,
            name: cursor.string(field(RelationColumnPart::Name))?,
            type_oid: cursor.u32(field(RelationColumnPart::TypeOid))?,
            type_modifier: cursor.i32(field(RelationColumnPart::TypeModifier))?,
        });
    }
    Ok(Relation {
        oid,
        namespace,
        name,
        replica_identity,
        columns,
    })
}

fn data_type(cursor: &mut Cursor<'_>) -> Result<DataType, PgOutputError> {
    Ok(DataType {
        oid: cursor.u32(Field::TypeOid)?,
        namespace: cursor.string(Field::TypeNamespace)?,
        name: cursor.string(Field::TypeName)?,
    })
}

fn insert(cursor: &mut Cursor<'_>) -> Result<Insert, PgOutputError> {
    let relation_oid = cursor.u32(Field::RelationOid)?;
    cursor.marker(b'N', "'N' (new row)")?;
    Ok(Insert {
        relation_oid,
        new: tuple(cursor, TupleRole::New)?,
    })
}

fn update(cursor: &mut Cursor<'_>) -> Result<Update, PgOutputError> {
    let relation_oid = cursor.u32(Field::RelationOid)?;
    let marker_at = cursor.pos;
    let [marker] = cursor.array(Field::TupleMarker)?;
    let old = match marker {
        b'N' => None,
        b'K' | b'O' => {
            let old = old_tuple(cursor, marker)?;
            cursor.marker(b'N', "'N' (new row)")?;
            Some(old)
        }
        found => {
            return Err(cursor.fail(
                marker_at,
                Field::TupleMarker,
                Problem::UnexpectedByte {
                    found,
                    expected: "'K' (old key), 'O' (old row) or 'N' (new row)",
                },
            ));
        }
    };
    Ok(Update {
        relation_oid,
        old,
        new: tuple(cursor, TupleRole::New)?,
    })
}

fn delete(cursor: &mut Cursor<'_>) -> Result<Delete, PgOutputError> {
    let relation_oid = cursor.u32(Field::RelationOid)?;
    let marker_at = cursor.pos;
    let [marker] = cursor.array(Field::TupleMarker)?;
    if !matches!(marker, b'K' | b'O') {
        return Err(cursor.fail(
            marker_at,
            Field::TupleMarker,
            Problem::UnexpectedByte {
                found: marker,
                expected: "'K' (old key) or 'O' (old row)",
            },
        ));
    }
    Ok(Delete {
        relation_oid,
        old: old_tuple(cursor, marker)?,
    })
}

/// The old tuple after its marker, `K` or `O` (the caller has checked which).
fn old_tuple(cursor: &mut Cursor<'_>, marker: u8) -> Result<OldTuple, PgOutputError> {
    if marker == b'K' {
        Ok(OldTuple::Key(tuple(cursor, TupleRole::OldKey)?))
    } else {
        Ok(OldTuple::Full(tuple(cursor, TupleRole::OldRow)?))
    }
}

fn tuple(cursor: &mut Cursor<'_>, role: TupleRole) -> Result<TupleData, PgOutputError> {
    let count = cursor.count_u16(Field::TupleColumnCount(role), MIN_TUPLE_COLUMN_BYTES)?;
    let mut columns = Vec::with_capacity(count);
    for number in 1..=count {
        let field = |part| Field::TupleColumn { role, number, part };
        let kind_at = cursor.pos;
        let [kind] = cursor.array(field(TupleColumnPart::Kind))?;
        columns.push(match kind {
            b'n' => ColumnData::Null,
            b'u' => ColumnData::UnchangedToast,
            b't' => ColumnData::Text(cursor.sized_bytes(
                field(TupleColumnPart::Length),
                field(TupleColumnPart::Value),
            )?),
            b'b' => ColumnData::Binary(cursor.sized_bytes(
                field(TupleColumnPart::Length),
                field(TupleColumnPart::Value),
            )?),
            other => {
                return Err(cursor.fail(
                    kind_at,
                    field(TupleColumnPart::Kind),
                    Problem::UnknownTupleKind(other),
                ));
            }
        });
    }
    Ok(TupleData { columns })
}

fn truncate(cursor: &mut Cursor<'_>) -> Result<Truncate, PgOutputError> {
    let count_at = cursor.pos;
    let count = cursor.i32(Field::TruncateRelationCount)?;
    let options = cursor.flags(
        Field::TruncateOptions,
        TRUNCATE_CASCADE | TRUNCATE_RESTART_IDENTITY,
        "1 (CASCADE) and 2 (RESTART IDENTITY)",
    )?;
    // Checked after the options byte so that only the OIDs have to fit in what is left.
    let count = cursor.count_fits(count_at, Field::TruncateRelationCount, count, 4)?;
    let mut relation_oids = Vec::with_capacity(count);
    for number in 1..=count {
        relation_oids.push(cursor.u32(Field::TruncatedRelationOid(number))?);
    }
    Ok(Truncate {
        cascade: options & TRUNCATE_CASCADE != 0,
        restart_identity: options & TRUNCATE_RESTART_IDENTITY != 0,
        relation_oids,
    })
}

fn logical_message(cursor: &mut Cursor<'_>) -> Result<LogicalMessage, PgOutputError> {
    let flags = cursor.flags(
        Field::MessageFlags,
        MESSAGE_TRANSACTIONAL,
        "1 (transactional)",
    )?;
    Ok(LogicalMessage {
        transactional: flags & MESSAGE_TRANSACTIONAL != 0,
        lsn: cursor.lsn(Field::MessageLsn)?,
        prefix: cursor.string(Field::MessagePrefix)?,
        content: cursor.sized_bytes(Field::MessageContentLength, Field::MessageContent)?,
    })
}

/// Checked big-endian reads over one message; every failure becomes a [`PgOutputError`] that
/// knows the message tag, the offset and the field.
struct Cursor<'a> {
    /// The whole message, for zero-copy slices.
    message: &'a Bytes,
    /// Offset of the next unread byte; never past the end.
    pos: usize,
    /// The message tag once read.
    tag: Option<u8>,
}

impl<'a> Cursor<'a> {
    fn new(message: &'a Bytes) -> Self {
        Cursor {
            message,
            pos: 0,
            tag: None,
        }
    }

    /// The unread bytes.
    fn rest(&self) -> &'a [u8] {
        let all: &'a [u8] = self.message.as_ref();
        all.get(self.pos..).unwrap_or_default()
    }

    #[cold]
    fn fail(&self, offset: usize, field: Field, problem: Problem) -> PgOutputError {
        PgOutputError {
            tag: self.tag,
            offset,
            field,
            problem,
        }
    }

    #[cold]
    fn truncated(&self, needed: usize, field: Field) -> PgOutputError {
        self.fail(
            self.pos,
            field,
            Problem::Truncated {
                needed,
                remaining: self.rest().len(),
            },
        )
    }

    fn array<const N: usize>(&mut self, field: Field) -> Result<[u8; N], PgOutputError> {
        match self.rest().first_chunk::<N>() {
            Some(chunk) => {
                self.pos += N;
                Ok(*chunk)
            }
            None => Err(self.truncated(N, field)),
        }
    }

    fn i32(&mut self, field: Field) -> Result<i32, PgOutputError> {
        self.array(field).map(i32::from_be_bytes)
    }

    fn u32(&mut self, field: Field) -> Result<u32, PgOutputError> {
        self.array(field).map(u32::from_be_bytes)
    }

    fn lsn(&mut self, field: Field) -> Result<Lsn, PgOutputError> {
        self.array(field).map(|b| Lsn(u64::from_be_bytes(b)))
    }

    /// A timestamp in µs since 2000-01-01, returned in µs since the Unix epoch.
    fn timestamp(&mut self, field: Field) -> Result<i64, PgOutputError> {
        let at = self.pos;
        let since_2000 = self.array(field).map(i64::from_be_bytes)?;
        since_2000
            .checked_add(POSTGRES_EPOCH_UNIX_MICROS)
            .ok_or_else(|| self.fail(at, field, Problem::TimestampOutOfRange(since_2000)))
    }

    /// A flags byte whose bits outside `known` are an error: a bit we do not know could change
    /// what the message means, and guessing would replicate the wrong thing.
    fn flags(
        &mut self,
        field: Field,
        known: u8,
        meaning: &'static str,
    ) -> Result<u8, PgOutputError> {
        let at = self.pos;
        let [flags] = self.array(field)?;
        if flags & !known != 0 {
            return Err(self.fail(at, field, Problem::UnknownFlags { flags, meaning }));
        }
        Ok(flags)
    }

    /// Consumes the byte `expected`, or fails naming `description`.
    fn marker(&mut self, expected: u8, description: &'static str) -> Result<(), PgOutputError> {
        let at = self.pos;
        let [found] = self.array(Field::TupleMarker)?;
        if found != expected {
            return Err(self.fail(
                at,
                Field::TupleMarker,
                Problem::UnexpectedByte {
                    found,
                    expected: description,
                },
            ));
        }
        Ok(())
    }

    /// A NUL-terminated UTF-8 string.
    fn string(&mut self, field: Field) -> Result<String, PgOutputError> {
        let at = self.pos;
        let rest = self.rest();
        let Some((raw, _)) = memchr::memchr(0, rest).and_then(|nul| rest.split_at_checked(nul))
        else {
            return Err(self.fail(at, field, Problem::UnterminatedString));
        };
        let text = std::str::from_utf8(raw).map_err(|e| {
            self.fail(
                at,
                field,
                Problem::InvalidUtf8 {
                    valid_up_to: e.valid_up_to(),
                },
            )
        })?;
        self.pos += raw.len() + 1;
        Ok(text.to_owned())
    }

    /// An Int16 element count the protocol means as unsigned (Postgres reads it with
    /// `pq_getmsgint(.., 2)`), rejected if `min_bytes_each` per element cannot fit in the rest.
    fn count_u16(&mut self, field: Field, min_bytes_each: usize) -> Result<usize, PgOutputError> {
        let at = self.pos;
        let count = self.array(field).map(u16::from_be_bytes)?;
        self.fits(at, field, usize::from(count), min_bytes_each)
    }

    /// An Int32 element count read at `at`, rejected if negative or if `min_bytes_each` per
    /// element cannot fit in the unread bytes.
    fn count_fits(
        &self,
        at: usize,
        field: Field,
        count: i32,
        min_bytes_each: usize,
    ) -> Result<usize, PgOutputError> {
        let count =
            usize::try_from(count).map_err(|_| self.fail(at, field, Problem::Negative(count)))?;
        self.fits(at, field, count, min_bytes_each)
    }

    /// `count`, if `count` elements of at least `min_bytes_each` bytes fit in the unread bytes:
    /// checked before the caller allocates room for them.
    fn fits(
        &self,
        at: usize,
        field: Field,
        count: usize,
        min_bytes_each: usize,
    ) -> Result<usize, PgOutputError> {
        let remaining = self.rest().len();
        match count.checked_mul(min_bytes_each) {
            Some(needed) if needed <= remaining => Ok(count),
            _ => Err(self.fail(
                at,
                field,
                Problem::CountTooLarge {
                    count,
                    min_bytes_each,
                    remaining,
                },
            )),
        }
    }

    /// An Int32 length followed by that many bytes, as a zero-copy slice.
    fn sized_bytes(&mut self, length: Field, value: Field) -> Result<Bytes, PgOutputError> {
        let at = self.pos;
        let len = self.i32(length)?;
        let len =
            usize::try_from(len).map_err(|_| self.fail(at, length, Problem::Negative(len)))?;
        if len > self.rest().len() {
            return Err(self.truncated(len, value));
        }
        let start = self.pos;
        self.pos += len;
        Ok(self.message.slice(start..self.pos))
    }

    /// Succeeds only if the whole message was read.
    fn finish(&self) -> Result<(), PgOutputError> {
        match self.rest().len() {
            0 => Ok(()),
            extra => Err(self.fail(self.pos, Field::End, Problem::TrailingBytes(extra))),
        }
    }
}

/// A message that cannot be decoded: which message, where, what was being read, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "pgoutput {}: {problem} at byte {offset} while reading {field}",
    MessageName(*.tag)
)]
pub struct PgOutputError {
    /// The message's tag byte, if the message had one.
    pub tag: Option<u8>,
    /// Offset from the start of the message of the first byte of the field that failed.
    pub offset: usize,
    /// What was being read.
    pub field: Field,
    /// What is wrong.
    pub problem: Problem,
}

impl PgOutputError {
    /// How the caller should react: a message we cannot read is corrupt input, never skipped.
    pub fn kind(&self) -> ErrorKind {
        ErrorKind::Fatal
    }
}

/// Names a message by its tag in error texts ("Update message").
struct MessageName(Option<u8>);

impl fmt::Display for MessageName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self.0 {
            Some(b'B') => "Begin",
            Some(b'C') => "Commit",
            Some(b'O') => "Origin",
            Some(b'R') => "Relation",
            Some(b'Y') => "Type",
            Some(b'I') => "Insert",
            Some(b'U') => "Update",
            Some(b'D') => "Delete",
            Some(b'T') => "Truncate",
            Some(b'M') => "Message",
            _ => return f.write_str("message"),
        };
        write!(f, "{name} message")
    }
}

/// Shows a protocol byte as a character when printable, and always in hex.
struct ByteName(u8);

impl fmt::Display for ByteName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_ascii_graphic() {
            write!(f, "'{}' (0x{:02X})", char::from(self.0), self.0)
        } else {
            write!(f, "0x{:02X}", self.0)
        }
    }
}

/// What was wrong with the bytes of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// The message ends before the field does.
    Truncated {
        /// Bytes the field needs.
        needed: usize,
        /// Bytes that were left.
        remaining: usize,
    },
    /// A string has no terminating NUL before the end of the message.
    UnterminatedString,
    /// A string is not UTF-8.
    InvalidUtf8 {
        /// Bytes of the string that are valid UTF-8 before the first bad one.
        valid_up_to: usize,
    },
    /// A length or count is negative.
    Negative(i32),
    /// A count promises more elements than the rest of the message could hold.
    CountTooLarge {
        /// The count read.
        count: usize,
        /// The fewest bytes one element takes.
        min_bytes_each: usize,
        /// Bytes left after the count.
        remaining: usize,
    },
    /// The first byte names no protocol-version-1 message.
    UnknownTag(u8),
    /// A tuple column kind other than 'n', 'u', 't' or 'b'.
    UnknownTupleKind(u8),
    /// A replica identity other than 'd', 'n', 'f' or 'i'.
    UnknownReplicaIdentity(u8),
    /// A fixed marker byte was something else.
    UnexpectedByte {
        /// The byte found.
        found: u8,
        /// What was allowed there.
        expected: &'static str,
    },
    /// A flags byte has bits the protocol does not define.
    UnknownFlags {
        /// The flags byte.
        flags: u8,
        /// The bits that are defined.
        meaning: &'static str,
    },
    /// A timestamp too far from 2000-01-01 to be expressed in µs since 1970 as an i64.
    TimestampOutOfRange(i64),
    /// Bytes are left after a complete message.
    TrailingBytes(usize),
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Truncated { needed, remaining } => {
                write!(f, "truncated (needs {needed} bytes, {remaining} left)")
            }
            Problem::UnterminatedString => f.write_str("string without a terminating NUL"),
            Problem::InvalidUtf8 { valid_up_to } => {
                write!(f, "invalid UTF-8 after {valid_up_to} valid bytes")
            }
            Problem::Negative(n) => write!(f, "negative value {n}"),
            Problem::CountTooLarge {
                count,
                min_bytes_each,
                remaining,
            } => write!(
                f,
                "count {count} cannot fit ({min_bytes_each} bytes or more each, {remaining} bytes left)"
            ),
            Problem::UnknownTag(tag) => write!(
                f,
                "unknown message tag {} (protocol version 1 has B C O R Y I U D T M)",
                ByteName(*tag)
            ),
            Problem::UnknownTupleKind(kind) => write!(
                f,
                "unknown column kind {} (expected 'n', 'u', 't' or 'b')",
                ByteName(*kind)
            ),
            Problem::UnknownReplicaIdentity(identity) => write!(
                f,
                "unknown replica identity {} (expected 'd', 'n', 'f' or 'i')",
                ByteName(*identity)
            ),
            Problem::UnexpectedByte { found, expected } => {
                write!(f, "found {} where {expected} belongs", ByteName(*found))
            }
            Problem::UnknownFlags { flags, meaning } => {
                write!(f, "unknown flag bits in 0x{flags:02X} (defined: {meaning})")
            }
            Problem::TimestampOutOfRange(t) => {
                write!(f, "timestamp {t} µs after 2000-01-01 is out of range")
            }
            Problem::TrailingBytes(n) => write!(f, "{n} bytes after a complete message"),
        }
    }
}

/// The part of a message being read when decoding failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// The first byte.
    Tag,
    /// Begin: LSN of the commit record.
    FinalLsn,
    /// Begin and Commit: the commit timestamp.
    CommitTimestamp,
    /// Begin: the transaction id.
    Xid,
    /// Commit: the flags byte.
    CommitFlags,
    /// Commit: the commit LSN.
    CommitLsn,
    /// Commit: the end LSN.
    EndLsn,
    /// Origin: the commit LSN on the origin.
    OriginCommitLsn,
    /// Origin: the origin's name.
    OriginName,
    /// Relation, Insert, Update, Delete: the relation OID.
    RelationOid,
    /// Relation: the schema name.
    RelationNamespace,
    /// Relation: the table name.
    RelationName,
    /// Relation: the replica identity byte.
    ReplicaIdentity,
    /// Relation: the number of columns.
    RelationColumnCount,
    /// Relation: part of one column's description.
    RelationColumn {
        /// 1-based position of the column.
        number: usize,
        /// Which part.
        part: RelationColumnPart,
    },
    /// Type: the type OID.
    TypeOid,
    /// Type: the schema name.
    TypeNamespace,
    /// Type: the type name.
    TypeName,
    /// Insert, Update, Delete: the byte saying which tuple follows ('N', 'K' or 'O').
    TupleMarker,
    /// A tuple's column count.
    TupleColumnCount(TupleRole),
    /// Part of one column of a tuple.
    TupleColumn {
        /// Which tuple.
        role: TupleRole,
        /// 1-based position of the column.
        number: usize,
        /// Which part.
        part: TupleColumnPart,
    },
    /// Truncate: the number of relations.
    TruncateRelationCount,
    /// Truncate: the options byte.
    TruncateOptions,
    /// Truncate: one relation OID, 1-based.
    TruncatedRelationOid(usize),
    /// Message: the flags byte.
    MessageFlags,
    /// Message: its LSN.
    MessageLsn,
    /// Message: its prefix.
    MessagePrefix,
    /// Message: the length of its content.
    MessageContentLength,
    /// Message: its content.
    MessageContent,
    /// After the last field: where the message should have ended.
    End,
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Field::Tag => f.write_str("the message tag"),
            Field::FinalLsn => f.write_str("the transaction's final LSN"),
            Field::CommitTimestamp => f.write_str("the commit timestamp"),
            Field::Xid => f.write_str("the transaction id"),
            Field::CommitFlags => f.write_str("the commit flags"),
            Field::CommitLsn => f.write_str("the commit LSN"),
            Field::EndLsn => f.write_str("the transaction's end LSN"),
            Field::OriginCommitLsn => f.write_str("the origin's commit LSN"),
            Field::OriginName => f.write_str("the origin name"),
            Field::RelationOid => f.write_str("the relation OID"),
            Field::RelationNamespace => f.write_str("the relation's namespace"),
            Field::RelationName => f.write_str("the relation name"),
            Field::ReplicaIdentity => f.write_str("the replica identity"),
            Field::RelationColumnCount => f.write_str("the relation's column count"),
            Field::RelationColumn { number, part } => {
                write!(f, "relation column {number}'s {part}")
            }
            Field::TypeOid => f.write_str("the type OID"),
            Field::TypeNamespace => f.write_str("the type's namespace"),
            Field::TypeName => f.write_str("the type name"),
            Field::TupleMarker => f.write_str("the tuple marker"),
            Field::TupleColumnCount(role) => write!(f, "the {role}'s column count"),
            Field::TupleColumn { role, number, part } => {
                write!(f, "the {role}'s column {number} {part}")
            }
            Field::TruncateRelationCount => f.write_str("the relation count"),
            Field::TruncateOptions => f.write_str("the truncate options"),
            Field::TruncatedRelationOid(number) => write!(f, "truncated relation {number}'s OID"),
            Field::MessageFlags => f.write_str("the message flags"),
            Field::MessageLsn => f.write_str("the message LSN"),
            Field::MessagePrefix => f.write_str("the message prefix"),
            Field::MessageContentLength => f.write_str("the message content length"),
            Field::MessageContent => f.write_str("the message content"),
            Field::End => f.write_str("the end of the message"),
        }
    }
}

/// Which tuple of an Insert, Update or Delete a column belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TupleRole {
    /// The new row ('N').
    New,
    /// The old key ('K').
    OldKey,
    /// The old full row ('O').
    OldRow,
}

impl fmt::Display for TupleRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TupleRole::New => "new row",
            TupleRole::OldKey => "old key",
            TupleRole::OldRow => "old row",
        })
    }
}

/// A part of a Relation message's column description.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelationColumnPart {
    /// The flags byte.
    Flags,
    /// The name.
    Name,
    /// The type OID.
    TypeOid,
    /// The type modifier.
    TypeModifier,
}

impl fmt::Display for RelationColumnPart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RelationColumnPart::Flags => "flags",
            RelationColumnPart::Name => "name",
            RelationColumnPart::TypeOid => "type OID",
            RelationColumnPart::TypeModifier => "type modifier",
        })
    }
}

/// A part of one column of a tuple.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TupleColumnPart {
    /// The kind byte ('n', 'u', 't', 'b').
    Kind,
    /// The value's length.
    Length,
    /// The value's bytes.
    Value,
}

impl fmt::Display for TupleColumnPart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TupleColumnPart::Kind => "kind",
            TupleColumnPart::Length => "length",
            TupleColumnPart::Value => "value",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A column value for the test encoder.
    enum Col<'a> {
        Null,
        Unchanged,
        Text(&'a str),
        Binary(&'a [u8]),
    }

    /// Builds pgoutput messages byte by byte, the way the server writes them.
    struct Enc(Vec<u8>);

    impl Enc {
        fn tag(tag: u8) -> Self {
            Enc(vec![tag])
        }
        fn u8(mut self, v: u8) -> Self {
            self.0.push(v);
            self
        }
        fn u16(mut self, v: u16) -> Self {
            self.0.extend_from_slice(&v.to_be_bytes());
            self
        }
        fn i32(mut self, v: i32) -> Self {
            self.0.extend_from_slice(&v.to_be_bytes());
            self
        }
        fn u32(mut self, v: u32) -> Self {
            self.0.extend_from_slice(&v.to_be_bytes());
            self
        }
        fn i64(mut self, v: i64) -> Self {
            self.0.extend_from_slice(&v.to_be_bytes());
            self
        }
        fn raw(mut self, bytes: &[u8]) -> Self {
            self.0.extend_from_slice(bytes);
            self
        }
        fn str(self, s: &str) -> Self {
            self.raw(s.as_bytes()).u8(0)
        }
        fn tuple(mut self, cols: &[Col<'_>]) -> Self {
            self = self.u16(cols.len() as u16);
            for col in cols {
                self = match col {
                    Col::Null => self.u8(b'n'),
                    Col::Unchanged => self.u8(b'u'),
                    Col::Text(t) => self.u8(b't').i32(t.len() as i32).raw(t.as_bytes()),
                    Col::Binary(b) => self.u8(b'b').i32(b.len() as i32).raw(b),
                };
            }
            self
        }
        fn done(self) -> Bytes {
            Bytes::from(self.0)
        }
    }

    const TS_2024: i64 = 762_375_600_123_456; // µs after 2000-01-01

    fn begin_msg() -> Bytes {
        Enc::tag(b'B')
            .i64(0x0000_0001_0A0B_0C0D)
            .i64(TS_2024)
            .u32(4_000_000_000)
            .done()
    }

    fn commit_msg() -> Bytes {
        Enc::tag(b'C')
            .u8(0)
            .i64(0x0000_0001_0A0B_0C0D)
            .i64(0x0000_0001_0A0B_0D00)
            .i64(TS_2024)
            .done()
    }

    fn origin_msg() -> Bytes {
        Enc::tag(b'O').i64(0x1234).str("upstream").done()
    }

    fn relation_msg(identity: u8) -> Bytes {
        Enc::tag(b'R')
            .u32(16_385)
            .str("public")
            .str("items")
            .u8(identity)
            .u16(3)
            .u8(1)
            .str("id")
            .u32(23)
            .i32(-1)
            .u8(0)
            .str("name")
            .u32(1043)
            .i32(104)
            .u8(0)
            .str("mood")
            .u32(3_000_000_000)
            .i32(-1)
            .done()
    }

    fn type_msg() -> Bytes {
        Enc::tag(b'Y').u32(3_000_000_000).str("").str("mood").done()
    }

    fn insert_msg() -> Bytes {
        Enc::tag(b'I')
            .u32(16_385)
            .u8(b'N')
            .tuple(&[
                Col::Text("42"),
                Col::Null,
                Col::Binary(&[0, 0, 0, 7]),
                Col::Text(""),
            ])
            .done()
    }

    fn update_plain_msg() -> Bytes {
        Enc::tag(b'U')
            .u32(16_385)
            .u8(b'N')
            .tuple(&[Col::Text("1"), Col::Unchanged, Col::Text("x")])
            .done()
    }

    fn update_key_msg() -> Bytes {
        Enc::tag(b'U')
            .u32(16_385)
            .u8(b'K')
            .tuple(&[Col::Text("1"), Col::Null, Col::Null])
            .u8(b'N')
            .tuple(&[Col::Text("2"), Col::Unchanged, Col::Text("x")])
            .done()
    }

    fn update_full_msg() -> Bytes {
        Enc::tag(b'U')
            .u32(16_385)
            .u8(b'O')
            .tuple(&[Col::Text("1"), Col::Text("old"), Col::Null])
            .u8(b'N')
            .tuple(&[Col::Text("1"), Col::Text("new"), Col::Null])
            .done()
    }

    fn delete_key_msg() -> Bytes {
        Enc::tag(b'D')
            .u32(16_385)
            .u8(b'K')
            .tuple(&[Col::Text("2"), Col::Null])
            .done()
    }

    fn delete_full_msg() -> Bytes {
        Enc::tag(b'D')
            .u32(16_385)
            .u8(b'O')
            .tuple(&[Col::Text("2"), Col::Binary(b"\x01\x02")])
            .done()
    }

    fn truncate_msg(options: u8, oids: &[u32]) -> Bytes {
        let mut enc = Enc::tag(b'T').i32(oids.len() as i32).u8(options);
        for oid in oids {
            enc = enc.u32(*oid);
        }
        enc.done()
    }

    fn message_msg(flags: u8) -> Bytes {
        Enc::tag(b'M')
            .u8(flags)
            .i64(0x0000_0002_0000_0010)
            .str("tidemark")
            .i32(5)
            .raw(b"hello")
            .done()
    }

    /// One valid message of every kind and shape, for the robustness tests.
    fn valid_messages() -> Vec<Bytes> {
        vec![
            begin_msg(),
            commit_msg(),
            origin_msg(),
            relation_msg(b'd'),
            relation_msg(b'f'),
            type_msg(),
            insert_msg(),
            update_plain_msg(),
            update_key_msg(),
            update_full_msg(),
            delete_key_msg(),
            delete_full_msg(),
            truncate_msg(0, &[16_385]),
            truncate_msg(3, &[16_385, 16_390]),
            message_msg(0),
            message_msg(1),
        ]
    }

    fn text(s: &str) -> ColumnData {
        ColumnData::Text(Bytes::copy_from_slice(s.as_bytes()))
    }

    fn err(message: &[u8]) -> PgOutputError {
        match decode(&Bytes::copy_from_slice(message)) {
            Ok(m) => panic!("decoded {m:?} from {message:02X?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn begin_converts_the_timestamp_to_the_unix_epoch() {
        let expected = Begin {
            final_lsn: Lsn(0x0000_0001_0A0B_0C0D),
            commit_timestamp_unix_us: TS_2024 + 946_684_800_000_000,
            xid: 4_000_000_000,
        };
        assert_eq!(decode(&begin_msg()), Ok(PgOutputMessage::Begin(expected)));
    }

    #[test]
    fn commit_reads_both_lsns() {
        let expected = Commit {
            flags: 0,
            commit_lsn: Lsn(0x0000_0001_0A0B_0C0D),
            end_lsn: Lsn(0x0000_0001_0A0B_0D00),
            commit_timestamp_unix_us: TS_2024 + POSTGRES_EPOCH_UNIX_SECONDS * 1_000_000,
        };
        assert_eq!(decode(&commit_msg()), Ok(PgOutputMessage::Commit(expected)));
    }

    #[test]
    fn origin_reads_lsn_and_name() {
        let expected = Origin {
            commit_lsn: Lsn(0x1234),
            name: "upstream".into(),
        };
        assert_eq!(decode(&origin_msg()), Ok(PgOutputMessage::Origin(expected)));
    }

    #[test]
    fn relation_reads_columns_with_key_flags() {
        let expected = Relation {
            oid: 16_385,
            namespace: "public".into(),
            name: "items".into(),
            replica_identity: ReplicaIdentity::Default,
            columns: vec![
                RelationColumn {
                    is_key: true,
                    name: "id".into(),
                    type_oid: 23,
                    type_modifier: -1,
                },
                RelationColumn {
                    is_key: false,
                    name: "name".into(),
                    type_oid: 1043,
                    type_modifier: 104,
                },
                RelationColumn {
                    is_key: false,
                    name: "mood".into(),
                    type_oid: 3_000_000_000,
                    type_modifier: -1,
                },
            ],
        };
        assert_eq!(
            decode(&relation_msg(b'd')),
            Ok(PgOutputMessage::Relation(expected))
        );
    }

    #[test]
    fn relation_reads_every_replica_identity() {
        for (byte, identity) in [
            (b'd', ReplicaIdentity::Default),
            (b'n', ReplicaIdentity::Nothing),
            (b'f', ReplicaIdentity::Full),
            (b'i', ReplicaIdentity::Index),
        ] {
            let Ok(PgOutputMessage::Relation(relation)) = decode(&relation_msg(byte)) else {
                panic!("identity {byte} did not decode");
            };
            assert_eq!(relation.replica_identity, identity);
        }
    }

    #[test]
    fn relation_without_columns_decodes() {
        let message = Enc::tag(b'R')
            .u32(7)
            .str("s")
            .str("t")
            .u8(b'n')
            .u16(0)
            .done();
        let Ok(PgOutputMessage::Relation(relation)) = decode(&message) else {
            panic!("did not decode");
        };
        assert!(relation.columns.is_empty());
    }

    #[test]
    fn type_reads_oid_and_names() {
        let expected = DataType {
            oid: 3_000_000_000,
            namespace: String::new(),
            name: "mood".into(),
        };
        assert_eq!(decode(&type_msg()), Ok(PgOutputMessage::Type(expected)));
    }

    #[test]
    fn insert_reads_text_null_binary_and_empty_values() {
        let expected = Insert {
            relation_oid: 16_385,
            new: TupleData {
                columns: vec![
                    text("42"),
                    ColumnData::Null,
                    ColumnData::Binary(Bytes::from_static(&[0, 0, 0, 7])),
                    text(""),
                ],
            },
        };
        assert_eq!(decode(&insert_msg()), Ok(PgOutputMessage::Insert(expected)));
    }

    #[test]
    fn column_values_are_slices_of_the_message() {
        let message = insert_msg();
        let Ok(PgOutputMessage::Insert(insert)) = decode(&message) else {
            panic!("did not decode");
        };
        let Some(ColumnData::Text(value)) = insert.new.columns.first() else {
            panic!("first column is not text");
        };
        let inside = message.as_ptr_range();
        assert!(inside.contains(&value.as_ptr()), "value was copied");
    }

    #[test]
    fn update_without_old_tuple_keeps_unchanged_toast() {
        let expected = Update {
            relation_oid: 16_385,
            old: None,
            new: TupleData {
                columns: vec![text("1"), ColumnData::UnchangedToast, text("x")],
            },
        };
        assert_eq!(
            decode(&update_plain_msg()),
            Ok(PgOutputMessage::Update(expected))
        );
    }

    #[test]
    fn update_with_old_key() {
        let expected = Update {
            relation_oid: 16_385,
            old: Some(OldTuple::Key(TupleData {
                columns: vec![text("1"), ColumnData::Null, ColumnData::Null],
            })),
            new: TupleData {
                columns: vec![text("2"), ColumnData::UnchangedToast, text("x")],
            },
        };
        assert_eq!(
            decode(&update_key_msg()),
            Ok(PgOutputMessage::Update(expected))
        );
    }

    #[test]
    fn update_with_old_full_row() {
        let expected = Update {
            relation_oid: 16_385,
            old: Some(OldTuple::Full(TupleData {
                columns: vec![text("1"), text("old"), ColumnData::Null],
            })),
            new: TupleData {
                columns: vec![text("1"), text("new"), ColumnData::Null],
            },
        };
        assert_eq!(
            decode(&update_full_msg()),
            Ok(PgOutputMessage::Update(expected))
        );
    }

    #[test]
    fn delete_with_old_key_and_old_row() {
        assert_eq!(
            decode(&delete_key_msg()),
            Ok(PgOutputMessage::Delete(Delete {
                relation_oid: 16_385,
                old: OldTuple::Key(TupleData {
                    columns: vec![text("2"), ColumnData::Null],
                }),
            }))
        );
        assert_eq!(
            decode(&delete_full_msg()),
            Ok(PgOutputMessage::Delete(Delete {
                relation_oid: 16_385,
                old: OldTuple::Full(TupleData {
                    columns: vec![
                        text("2"),
                        ColumnData::Binary(Bytes::from_static(b"\x01\x02"))
                    ],
                }),
            }))
        );
    }

    #[test]
    fn truncate_reads_options_and_relations() {
        for (options, cascade, restart_identity) in [
            (0, false, false),
            (1, true, false),
            (2, false, true),
            (3, true, true),
        ] {
            assert_eq!(
                decode(&truncate_msg(options, &[16_385, 16_390])),
                Ok(PgOutputMessage::Truncate(Truncate {
                    cascade,
                    restart_identity,
                    relation_oids: vec![16_385, 16_390],
                })),
                "options {options}"
            );
        }
    }

    #[test]
    fn message_reads_transactional_flag_prefix_and_content() {
        for (flags, transactional) in [(0, false), (1, true)] {
            assert_eq!(
                decode(&message_msg(flags)),
                Ok(PgOutputMessage::Message(LogicalMessage {
                    transactional,
                    lsn: Lsn(0x0000_0002_0000_0010),
                    prefix: "tidemark".into(),
                    content: Bytes::from_static(b"hello"),
                }))
            );
        }
    }

    #[test]
    fn lsn_displays_like_postgres() {
        assert_eq!(Lsn(0).to_string(), "0/0");
        assert_eq!(Lsn(0x016B_3748).to_string(), "0/16B3748");
        assert_eq!(Lsn(0x0000_0001_0000_00FF).to_string(), "1/FF");
        assert_eq!(Lsn(u64::MAX).to_string(), "FFFFFFFF/FFFFFFFF");
        assert!(Lsn(0x0000_0001_0000_0000) > Lsn(0xFFFF_FFFF));
    }

    #[test]
    fn timestamps_count_from_2000() {
        let zero = Enc::tag(b'B').i64(0).i64(0).u32(0).done();
        let Ok(PgOutputMessage::Begin(begin)) = decode(&zero) else {
            panic!("did not decode");
        };
        assert_eq!(begin.commit_timestamp_unix_us, 946_684_800_000_000);

        let overflow = Enc::tag(b'B').i64(0).i64(i64::MAX).u32(0).done();
        let e = err(&overflow);
        assert_eq!((e.offset, e.field), (9, Field::CommitTimestamp));
        assert_eq!(e.problem, Problem::TimestampOutOfRange(i64::MAX));
    }

    #[test]
    fn error_names_message_offset_and_field() {
        // Update, relation 1, old key with 3 columns, the third cut inside its length.
        let mut message = Enc::tag(b'U')
            .u32(1)
            .u8(b'K')
            .u16(3)
            .u8(b'n')
            .u8(b'n')
            .u8(b't')
            .i32(1)
            .done()
            .to_vec();
        message.truncate(message.len() - 2);
        let e = err(&message);
        assert_eq!(
            e.to_string(),
            "pgoutput Update message: truncated (needs 4 bytes, 2 left) at byte 11 while reading \
             the old key's column 3 length"
        );
        assert_eq!(e.tag, Some(b'U'));
        assert_eq!(e.kind(), ErrorKind::Fatal);
    }

    #[test]
    fn empty_input_is_an_error() {
        let e = err(&[]);
        assert_eq!((e.tag, e.offset, e.field), (None, 0, Field::Tag));
        assert_eq!(
            e.to_string(),
            "pgoutput message: truncated (needs 1 bytes, 0 left) at byte 0 while reading the message tag"
        );
    }

    #[test]
    fn unknown_tag_is_an_error() {
        // 'S' is Stream Start, a protocol version 2 message.
        let e = err(b"S\0\0\0\x01\x01");
        assert_eq!(e.problem, Problem::UnknownTag(b'S'));
        assert!(
            e.to_string().contains("unknown message tag 'S' (0x53)"),
            "{e}"
        );
    }

    #[test]
    fn unknown_tuple_kind_is_an_error() {
        let message = Enc::tag(b'I')
            .u32(1)
            .u8(b'N')
            .u16(2)
            .u8(b'n')
            .u8(b'x')
            .done();
        let e = err(&message);
        assert_eq!(e.problem, Problem::UnknownTupleKind(b'x'));
        assert_eq!(e.offset, 9);
        assert_eq!(
            e.field,
            Field::TupleColumn {
                role: TupleRole::New,
                number: 2,
                part: TupleColumnPart::Kind
            }
        );
    }

    #[test]
    fn unknown_replica_identity_is_an_error() {
        let mut message = relation_msg(b'd').to_vec();
        let at = 1 + 4 + "public\0items\0".len();
        message[at] = b'x';
        let e = err(&message);
        assert_eq!((e.offset, e.field), (at, Field::ReplicaIdentity));
        assert_eq!(e.problem, Problem::UnknownReplicaIdentity(b'x'));
    }

    #[test]
    fn wrong_markers_are_errors() {
        let insert = Enc::tag(b'I').u32(1).u8(b'K').u16(0).done();
        assert!(matches!(
            err(&insert).problem,
            Problem::UnexpectedByte { found: b'K', .. }
        ));
        let delete = Enc::tag(b'D').u32(1).u8(b'N').u16(0).done();
        assert!(matches!(
            err(&delete).problem,
            Problem::UnexpectedByte { found: b'N', .. }
        ));
        let update = Enc::tag(b'U').u32(1).u8(b'K').u16(0).u8(b'K').u16(0).done();
        let e = err(&update);
        assert_eq!((e.offset, e.field), (8, Field::TupleMarker));
    }

    #[test]
    fn negative_lengths_and_counts_are_errors() {
        let column = Enc::tag(b'I')
            .u32(1)
            .u8(b'N')
            .u16(1)
            .u8(b't')
            .i32(-1)
            .done();
        let e = err(&column);
        assert_eq!(e.problem, Problem::Negative(-1));
        assert_eq!(e.offset, 9);
        let content = Enc::tag(b'M').u8(1).i64(0).str("p").i32(i32::MIN).done();
        assert_eq!(err(&content).problem, Problem::Negative(i32::MIN));
        let truncate = Enc::tag(b'T').i32(-3).u8(0).done();
        let e = err(&truncate);
        assert_eq!((e.offset, e.problem), (1, Problem::Negative(-3)));
    }

    #[test]
    fn counts_larger_than_the_message_are_rejected_before_allocating() {
        // 10 bytes claiming 65535 columns: must fail on the count, not after 65535 pushes.
        let message = Enc::tag(b'I')
            .u32(1)
            .u8(b'N')
            .u16(65_535)
            .u8(b'n')
            .u8(b'n')
            .done();
        assert_eq!(message.len(), 10);
        let e = err(&message);
        assert_eq!(e.offset, 6);
        assert_eq!(e.field, Field::TupleColumnCount(TupleRole::New));
        assert_eq!(
            e.problem,
            Problem::CountTooLarge {
                count: 65_535,
                min_bytes_each: 1,
                remaining: 2
            }
        );
        let relation = Enc::tag(b'R')
            .u32(1)
            .str("")
            .str("t")
            .u8(b'd')
            .u16(2)
            .u8(0)
            .done();
        assert!(matches!(
            err(&relation).problem,
            Problem::CountTooLarge { count: 2, .. }
        ));
        let truncate = Enc::tag(b'T').i32(i32::MAX).u8(0).u32(1).done();
        assert!(matches!(
            err(&truncate).problem,
            Problem::CountTooLarge { .. }
        ));
    }

    #[test]
    fn value_longer_than_the_message_is_truncated() {
        let message = Enc::tag(b'I')
            .u32(1)
            .u8(b'N')
            .u16(1)
            .u8(b't')
            .i32(100)
            .raw(b"abc")
            .done();
        let e = err(&message);
        assert_eq!(
            e.problem,
            Problem::Truncated {
                needed: 100,
                remaining: 3
            }
        );
        assert_eq!(e.offset, 13);
    }

    #[test]
    fn unknown_flag_bits_are_errors() {
        assert!(matches!(
            err(&message_msg(2)).problem,
            Problem::UnknownFlags { flags: 2, .. }
        ));
        assert!(matches!(
            err(&truncate_msg(4, &[1])).problem,
            Problem::UnknownFlags { flags: 4, .. }
        ));
        let mut relation = relation_msg(b'd').to_vec();
        let first_flags = 1 + 4 + "public\0items\0".len() + 1 + 2;
        relation[first_flags] = 0x81;
        let e = err(&relation);
        assert_eq!(
            e.field,
            Field::RelationColumn {
                number: 1,
                part: RelationColumnPart::Flags
            }
        );
    }

    #[test]
    fn strings_must_be_terminated_utf8() {
        let unterminated = Enc::tag(b'O').i64(1).raw(b"name").done();
        let e = err(&unterminated);
        assert_eq!((e.offset, e.problem), (9, Problem::UnterminatedString));
        let invalid = Enc::tag(b'Y').u32(1).str("ok").raw(b"ab\xFFc\0").done();
        let e = err(&invalid);
        assert_eq!(e.field, Field::TypeName);
        assert_eq!(e.problem, Problem::InvalidUtf8 { valid_up_to: 2 });
        assert!(e.to_string().contains("while reading the type name"), "{e}");
    }

    #[test]
    fn trailing_bytes_are_an_error() {
        for message in valid_messages() {
            let mut longer = message.to_vec();
            longer.push(0);
            let e = err(&longer);
            assert_eq!(
                (e.offset, e.field, e.problem),
                (message.len(), Field::End, Problem::TrailingBytes(1))
            );
        }
    }

    #[test]
    fn every_truncation_of_a_valid_message_is_an_error() {
        for message in valid_messages() {
            assert!(decode(&message).is_ok(), "{message:02X?}");
            for len in 0..message.len() {
                let cut = message.slice(..len);
                assert!(decode(&cut).is_err(), "{cut:02X?} decoded");
            }
        }
    }

    /// xorshift64*: small, seedable and good enough to pick mutations.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
        fn byte(&mut self) -> u8 {
            self.next() as u8
        }
    }

    /// Bytes that make lengths and counts interesting: signs, extremes, small values.
    const EDGE_WORDS: [[u8; 4]; 6] = [
        [0xFF, 0xFF, 0xFF, 0xFF],
        [0x7F, 0xFF, 0xFF, 0xFF],
        [0x80, 0x00, 0x00, 0x00],
        [0x00, 0x00, 0xFF, 0xFF],
        [0x00, 0x00, 0x00, 0x00],
        [0x00, 0x00, 0x00, 0x01],
    ];

    /// One to four random edits of `message`.
    fn mutate(rng: &mut Rng, message: &[u8]) -> Vec<u8> {
        let mut out = message.to_vec();
        for _ in 0..=rng.below(4) {
            let at = rng.below(out.len() + 1);
            match rng.below(6) {
                0 if at < out.len() => out[at] ^= 1 << rng.below(8),
                1 if at < out.len() => out[at] = rng.byte(),
                2 => out.insert(at, rng.byte()),
                3 if at < out.len() => {
                    out.remove(at);
                }
                4 => {
                    let word = EDGE_WORDS[rng.below(EDGE_WORDS.len())];
                    for (i, b) in word.into_iter().enumerate().take(rng.below(4) + 1) {
                        if let Some(slot) = out.get_mut(at + i) {
                            *slot = b;
                        }
                    }
                }
                _ => out.truncate(at),
            }
        }
        out
    }

    #[test]
    fn random_mutations_never_panic() {
        const ITERATIONS: usize = 200_000;
        const TAGS: &[u8] = b"BCORYIUDTM";
        let seed = std::env::var("TIDEMARK_TEST_SEED")
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(0x7469_6465_6D61_726B);
        eprintln!(
            "random_mutations_never_panic: seed {seed} (replay with TIDEMARK_TEST_SEED={seed})"
        );
        // xorshift must not start at 0.
        let mut rng = Rng(seed | 1);
        let valid = valid_messages();
        let (mut decoded, mut rejected) = (0usize, 0usize);
        for _ in 0..ITERATIONS {
            let input = if rng.below(4) == 0 {
                let mut random: Vec<u8> = (0..rng.below(48)).map(|_| rng.byte()).collect();
                if let Some(first) = random.first_mut()
                    && rng.below(2) == 0
                {
                    *first = TAGS[rng.below(TAGS.len())];
                }
                random
            } else {
                let base = rng.below(valid.len());
                mutate(&mut rng, &valid[base])
            };
            let len = input.len();
            match decode(&Bytes::from(input)) {
                Ok(_) => decoded += 1,
                Err(e) => {
                    // Every error must render and point inside the input or just past it.
                    assert!(!e.to_string().is_empty());
                    assert!(e.offset <= len, "{e} in a {len}-byte input");
                    rejected += 1;
                }
            }
        }
        eprintln!("decoded {decoded}, rejected {rejected}");
        assert!(
            decoded > 0 && rejected > 0,
            "mutations too weak or too strong"
        );
    }
}
