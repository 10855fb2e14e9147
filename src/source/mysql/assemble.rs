//! Turns framed binlog events into the [`SourceMessage`] stream: transaction boundaries, typed
//! row changes, schema announcements, DDL, GTID tracking and resume points.
//!
//! Pure (no I/O): the network reader and the offline file reader both feed it, so both decode
//! the same way. Guarantees, on top of the stream grammar in [`crate::event`]:
//! - every event's CRC32 is verified when the log has checksums (mysql_common does not check);
//! - a transaction's changes stream out as decoded; nothing is buffered per transaction;
//! - statement-format DML, partial row images, XA, compressed and encrypted binlogs are
//!   errors with a fix, never skipped; partial JSON updates (PARTIAL_UPDATE_ROWS) are applied
//!   to the before image, so changes always carry full JSON documents;
//! - `Commit` carries the offset after the commit event and the GTID state including it.

use std::collections::HashMap;
use std::sync::Arc;

use mysql_async::binlog::BinlogChecksumAlg;
use mysql_async::binlog::EventType;
use mysql_async::binlog::events::{Event, EventData, RowsEventData, TableMapEvent};

use super::ddl::renamed_tables;
use super::error::{BinlogError, EventAt};
use super::gtid::{MariadbGtidList, MysqlGtidSet, format_uuid};
use super::layout::{ColumnNames, ServerFlavor, TableLayout};
use super::mariadb;
use crate::event::{
    ChangeEvent, DdlEvent, GtidState, Op, Position, ResumePoint, SourceMessage, TableId,
    TableSchema, Transaction, binlog_coordinate,
};

/// Event flag: a reader that does not know this event type may skip it.
const LOG_EVENT_IGNORABLE_F: u16 = 0x80;
/// MySQL 8.0.26+ heartbeat.
const HEARTBEAT_LOG_EVENT_V2: u8 = 41;

/// GTID state as far as the log has shown it.
#[derive(Debug, Clone, Default)]
pub enum GtidTracker {
    /// No GTID state known yet (file/pos start without GTIDs).
    #[default]
    Unknown,
    /// MySQL executed set.
    Mysql(MysqlGtidSet),
    /// MariaDB per-domain position.
    Mariadb(MariadbGtidList),
}

impl GtidTracker {
    pub(super) fn state(&self) -> Option<GtidState> {
        match self {
            GtidTracker::Unknown => None,
            GtidTracker::Mysql(s) => Some(GtidState::Mysql(s.to_string())),
            GtidTracker::Mariadb(l) => Some(GtidState::Mariadb(l.to_string())),
        }
    }
}

/// The GTID of the open transaction, applied to the tracker at commit.
#[derive(Debug, Clone)]
enum TxnGtid {
    Mysql { uuid: String, tag: String, gno: u64 },
    Mariadb(super::gtid::MariadbGtid),
}

/// How a transaction is identified: by GTID, or by the offset of its first event.
enum TxnId {
    Gtid(String),
    Offset,
}

#[derive(Debug)]
struct OpenTxn {
    info: Arc<Transaction>,
    seq: u32,
    /// BEGIN seen (or implied): the transaction ends at XID/COMMIT, not after one statement.
    explicit: bool,
    gtid: Option<TxnGtid>,
}

#[derive(Debug)]
struct KnownTable {
    raw: Vec<u8>,
    layout: Arc<TableLayout>,
}

/// Options that change how events are interpreted.
#[derive(Debug, Clone, Default)]
pub struct AssemblerOptions {
    /// Column naming when the log lacks names.
    pub names: ColumnNames,
    /// Take the GTID state from the PREVIOUS_GTIDS / GTID_LIST event at the start of a file
    /// when none is known. Only right when reading a file from its beginning (offline); a live
    /// dump gets its state from the server instead.
    pub seed_gtids_from_log: bool,
    /// Decode partial row images (`binlog_row_image` MINIMAL/NOBLOB), absent columns as
    /// [`Value::Unchanged`](crate::event::Value::Unchanged). Offline inspection only: replication
    /// refuses them, because a partial before image cannot identify a row without a key.
    pub allow_partial_images: bool,
}

/// The state machine; feed it every event in log order.
#[derive(Debug)]
pub struct Assembler {
    source: Arc<str>,
    options: AssemblerOptions,
    file: String,
    file_number: u32,
    /// Offset after the last commit (or rotate) in `file`: where a resume would start.
    resume_pos: u64,
    /// Offset after the last event fed (its header's log_pos), for errors between events.
    last_event_end: u64,
    gtids: GtidTracker,
    /// From the FORMAT_DESCRIPTION event: MySQL and MariaDB lay out table-map metadata
    /// differently.
    flavor: ServerFlavor,
    tables: HashMap<u64, KnownTable>,
    announced: HashMap<TableId, Arc<TableSchema>>,
    txn: Option<OpenTxn>,
    /// Start and end offsets of the TRANSACTION_PAYLOAD whose inner events are being fed.
    payload: Option<(u64, u64)>,
}

impl Assembler {
    /// A fresh assembler for `source`, positioned at `file:pos` with the given GTID state.
    pub fn new(
        source: Arc<str>,
        options: AssemblerOptions,
        file: &str,
        pos: u64,
        gtids: GtidTracker,
    ) -> Self {
        Self {
            source,
            options,
            file: file.to_owned(),
            file_number: file_number(file),
            resume_pos: pos,
            last_event_end: pos,
            gtids,
            flavor: ServerFlavor::Unknown,
            tables: HashMap::new(),
            announced: HashMap::new(),
            txn: None,
            payload: None,
        }
    }

    /// Where to resume after the last committed transaction handed out.
    pub fn resume_point(&self) -> ResumePoint {
        ResumePoint::Binlog {
            file: self.file.clone(),
            pos: self.resume_pos,
            gtid: self.gtids.state(),
        }
    }

    /// True while a transaction is open (its changes are not yet committed).
    pub fn in_transaction(&self) -> bool {
        self.txn.is_some()
    }

    /// Abandons the open transaction (reconnect): emits `Rollback` if one was open.
    pub fn abort_transaction(&mut self, out: &mut Vec<SourceMessage>) {
        if self.txn.take().is_some() {
            out.push(SourceMessage::Rollback);
        }
        self.payload = None;
    }

    /// Offset just after the last event fed: where the next event should start.
    pub fn last_event_end(&self) -> u64 {
        self.last_event_end
    }

    /// GTID state including the last committed transaction.
    pub fn gtid_tracker(&self) -> &GtidTracker {
        &self.gtids
    }

    /// Binlog file currently being read.
    pub fn file(&self) -> &str {
        &self.file
    }

    /// Processes one event, appending the messages it produces to `out`.
    pub fn feed(&mut self, event: &Event, out: &mut Vec<SourceMessage>) -> Result<(), BinlogError> {
        let header = event.header();
        let at = self.event_at(event);
        if header.log_pos() != 0 {
            self.last_event_end = u64::from(header.log_pos());
        }
        verify_checksum(event, &at)?;
        if let Some((start, _)) = self.payload {
            // Outer events carry checksums, inner payload events do not: an outer event while
            // a payload is open means its inner events never arrived.
            if event.footer().get_checksum_enabled() {
                return Err(BinlogError::Corrupt {
                    at,
                    reason: format!(
                        "the transaction payload at offset {start} ended without its commit; it could not be decompressed"
                    ),
                });
            }
        }
        let type_code = header.event_type_raw();
        match type_code {
            mariadb::GTID => return self.on_mariadb_gtid(event, at, out),
            mariadb::GTID_LIST => {
                let list = mariadb::parse_gtid_list(event.data())
                    .map_err(|reason| BinlogError::Corrupt { at, reason })?;
                if self.options.seed_gtids_from_log && matches!(self.gtids, GtidTracker::Unknown) {
                    self.gtids = GtidTracker::Mariadb(list);
                }
                return Ok(());
            }
            mariadb::ANNOTATE_ROWS | mariadb::BINLOG_CHECKPOINT => return Ok(()),
            mariadb::START_ENCRYPTION => {
                return Err(unsupported(
                    at,
                    "the binlog is encrypted",
                    "tidemark reads unencrypted binlogs: set encrypt_binlog=OFF",
                ));
            }
            mariadb::COMPRESSED_FIRST..=mariadb::COMPRESSED_LAST => {
                return Err(unsupported(
                    at,
                    "compressed binlog event (log_bin_compress=ON)",
                    "SET GLOBAL log_bin_compress=OFF (and in my.cnf); events already written compressed cannot be read",
                ));
            }
            HEARTBEAT_LOG_EVENT_V2 => {
                self.on_heartbeat(out);
                return Ok(());
            }
            _ => {}
        }
        let data = match event.read_data() {
            Ok(Some(data)) => data,
            Ok(None) if header.flags_raw() & LOG_EVENT_IGNORABLE_F != 0 => return Ok(()),
            Ok(None) => {
                return Err(unsupported(
                    at,
                    &format!("unknown event type {type_code}"),
                    "upgrade tidemark or report the server version",
                ));
            }
            Err(e) => return Err(corrupt(at, e)),
        };
        match data {
            EventData::FormatDescriptionEvent(fde) => {
                self.flavor = ServerFlavor::from_server_version(&fde.server_version());
                // A real FDE (not the artificial one a dump sends) starts a new file after a
                // server restart: an open transaction there never committed.
                if header.log_pos() != 0 {
                    self.abort_transaction(out);
                }
            }
            EventData::RotateEvent(rotate) => {
                self.file = rotate_file_name(event, rotate.name_raw());
                self.file_number = file_number(&self.file);
                self.resume_pos = rotate.position();
                self.last_event_end = rotate.position();
            }
            EventData::StopEvent => self.abort_transaction(out),
            EventData::HeartbeatEvent => self.on_heartbeat(out),
            EventData::GtidEvent(gtid) => {
                let uuid = format_uuid(&gtid.sid());
                let tag = gtid.tag().map(|t| t.to_string()).unwrap_or_default();
                let id = if tag.is_empty() {
                    TxnId::Gtid(format!("{uuid}:{}", gtid.gno()))
                } else {
                    TxnId::Gtid(format!("{uuid}:{tag}:{}", gtid.gno()))
                };
                let ts = match gtid.immediate_commit_timestamp() {
                    0 => i64::from(header.timestamp()) * 1_000_000,
                    us => i64::try_from(us).unwrap_or(i64::MAX),
                };
                let txn_gtid = TxnGtid::Mysql {
                    uuid,
                    tag,
                    gno: gtid.gno(),
                };
                self.begin(id, ts, at.pos, false, Some(txn_gtid), out);
            }
            EventData::AnonymousGtidEvent(_) => {
                let ts = i64::from(header.timestamp()) * 1_000_000;
                self.begin(TxnId::Offset, ts, at.pos, false, None, out);
            }
            EventData::PreviousGtidsEvent(prev) => {
                if self.options.seed_gtids_from_log && matches!(self.gtids, GtidTracker::Unknown) {
                    let mut set = MysqlGtidSet::default();
                    for sid in prev.sids() {
                        let uuid = format_uuid(&sid.uuid());
                        let tag = sid.tag().map(|t| t.to_string()).unwrap_or_default();
                        for iv in sid.intervals() {
                            // GnoInterval ends are exclusive.
                            set.add_range(&uuid, &tag, iv.start(), iv.end().saturating_sub(1));
                        }
                    }
                    self.gtids = GtidTracker::Mysql(set);
                }
            }
            EventData::QueryEvent(query) => {
                let text = query.query();
                let namespace = query.schema().into_owned();
                let end = header.log_pos();
                self.on_query(
                    &text,
                    namespace,
                    at,
                    end,
                    i64::from(header.timestamp()),
                    out,
                )?;
            }
            EventData::XidEvent(_) => self.commit(u64::from(header.log_pos()), at, out)?,
            EventData::TableMapEvent(tme) => self.on_table_map(event, &tme, at, out)?,
            EventData::RowsEvent(rows) => self.on_rows(&rows, at, out)?,
            EventData::TransactionPayloadEvent(_) => {
                let end = u64::from(header.log_pos());
                self.payload = Some((at.pos, end));
            }
            EventData::IncidentEvent(_) => {
                return Err(unsupported(
                    at,
                    "the source logged an incident: changes may be missing from the binlog here",
                    "re-copy the affected tables (snapshot); then resume after this position",
                ));
            }
            EventData::XaPrepareLogEvent(_) => {
                return Err(xa_unsupported(at));
            }
            EventData::PreGaWriteRowsEvent(_)
            | EventData::PreGaUpdateRowsEvent(_)
            | EventData::PreGaDeleteRowsEvent(_)
            | EventData::LoadEvent(_)
            | EventData::CreateFileEvent(_)
            | EventData::AppendBlockEvent(_)
            | EventData::ExecLoadEvent(_)
            | EventData::DeleteFileEvent(_)
            | EventData::NewLoadEvent(_)
            | EventData::BeginLoadQueryEvent(_)
            | EventData::ExecuteLoadQueryEvent(_) => {
                return Err(unsupported(
                    at,
                    "statement-based LOAD DATA or pre-GA rows event",
                    "set binlog_format=ROW on the source",
                ));
            }
            // Context of statement-based events (rejected at their QUERY), annotations, group
            // replication bookkeeping: nothing to replicate.
            EventData::IntvarEvent(_)
            | EventData::RandEvent(_)
            | EventData::UserVarEvent(_)
            | EventData::RowsQueryEvent(_)
            | EventData::IgnorableEvent(_)
            | EventData::TransactionContextEvent(_)
            | EventData::ViewChangeEvent(_)
            | EventData::StartEventV3(_)
            | EventData::SlaveEvent
            | EventData::UnknownEvent => {}
        }
        Ok(())
    }

    /// Offset of this event's first byte; inner events of a payload sit at the payload.
    fn event_at(&self, event: &Event) -> EventAt {
        let header = event.header();
        let end = u64::from(header.log_pos());
        let size = u64::from(header.event_size());
        let pos = match self.payload {
            Some((start, _)) if !event.footer().get_checksum_enabled() => start,
            _ if end >= size && end != 0 => end - size,
            _ => self.resume_pos,
        };
        EventAt {
            file: self.file.clone(),
            pos,
        }
    }

    fn begin(
        &mut self,
        id: TxnId,
        commit_ts_micros: i64,
        pos: u64,
        explicit: bool,
        gtid: Option<TxnGtid>,
        out: &mut Vec<SourceMessage>,
    ) {
        // A new transaction while one is open means the open one never committed (crash).
        self.abort_transaction_keep_payload(out);
        let (id, gtid_text) = match id {
            TxnId::Gtid(g) => (g.clone(), Some(g)),
            TxnId::Offset => (format!("{}:{pos}", self.file), None),
        };
        let info = Arc::new(Transaction {
            id,
            gtid: gtid_text,
            commit_ts_micros,
            log_coordinate: binlog_coordinate(self.file_number, pos),
        });
        out.push(SourceMessage::Begin(info.clone()));
        self.txn = Some(OpenTxn {
            info,
            seq: 0,
            explicit,
            gtid,
        });
    }

    fn abort_transaction_keep_payload(&mut self, out: &mut Vec<SourceMessage>) {
        if self.txn.take().is_some() {
            out.push(SourceMessage::Rollback);
        }
    }

    fn begin_implicit(&mut self, at: &EventAt, ts_secs: i64, out: &mut Vec<SourceMessage>) {
        if self.txn.is_none() {
            self.begin(TxnId::Offset, ts_secs * 1_000_000, at.pos, false, None, out);
        }
    }

    fn commit(
        &mut self,
        end: u64,
        at: EventAt,
        out: &mut Vec<SourceMessage>,
    ) -> Result<(), BinlogError> {
        let Some(txn) = self.txn.take() else {
            return Err(BinlogError::Corrupt {
                at,
                reason: "commit without an open transaction".into(),
            });
        };
        match (txn.gtid, &mut self.gtids) {
            (Some(TxnGtid::Mysql { uuid, tag, gno }), GtidTracker::Mysql(set)) => {
                set.add(&uuid, &tag, gno)
            }
            (Some(TxnGtid::Mariadb(g)), GtidTracker::Mariadb(list)) => list.apply(g),
            (Some(TxnGtid::Mariadb(g)), tracker @ GtidTracker::Unknown) => {
                // MariaDB's GTID position is per domain: the last GTID alone is a valid position
                // for a single-domain server; multi-domain servers are seeded by GTID_LIST.
                let mut list = MariadbGtidList::default();
                list.apply(g);
                *tracker = GtidTracker::Mariadb(list);
            }
            _ => {}
        }
        self.resume_pos = match self.payload.take() {
            Some((_, payload_end)) => payload_end,
            None if end != 0 => end,
            None => self.resume_pos,
        };
        out.push(SourceMessage::Commit(self.resume_point()));
        Ok(())
    }

    fn on_heartbeat(&mut self, out: &mut Vec<SourceMessage>) {
        if self.txn.is_none() {
            out.push(SourceMessage::Heartbeat(self.resume_point()));
        }
    }

    fn on_mariadb_gtid(
        &mut self,
        event: &Event,
        at: EventAt,
        out: &mut Vec<SourceMessage>,
    ) -> Result<(), BinlogError> {
        let header = event.header();
        let gtid = mariadb::parse_gtid(event.data(), header.server_id()).map_err(|reason| {
            BinlogError::Corrupt {
                at: at.clone(),
                reason,
            }
        })?;
        if gtid.xa {
            return Err(xa_unsupported(at));
        }
        let ts = i64::from(header.timestamp()) * 1_000_000;
        self.begin(
            TxnId::Gtid(gtid.gtid.to_string()),
            ts,
            at.pos,
            !gtid.standalone,
            Some(TxnGtid::Mariadb(gtid.gtid)),
            out,
        );
        Ok(())
    }

    fn on_query(
        &mut self,
        text: &str,
        namespace: String,
        at: EventAt,
        end: u32,
        ts_secs: i64,
        out: &mut Vec<SourceMessage>,
    ) -> Result<(), BinlogError> {
        let end = u64::from(end);
        match classify_statement(text) {
            Statement::Begin => {
                self.begin_implicit(&at, ts_secs, out);
                if let Some(txn) = self.txn.as_mut() {
                    txn.explicit = true;
                }
            }
            Statement::Commit => self.commit(end, at, out)?,
            Statement::Rollback => {
                self.abort_transaction(out);
                self.resume_pos = end;
            }
            Statement::Savepoint => {}
            Statement::RollbackToSavepoint => {
                return Err(unsupported(
                    at,
                    "ROLLBACK TO SAVEPOINT in the binlog (a transaction mixing non-transactional tables)",
                    "use transactional (InnoDB) tables for replicated data",
                ));
            }
            Statement::Xa => {
                return Err(xa_unsupported(at));
            }
            Statement::Dml => {
                return Err(unsupported(
                    at,
                    &format!(
                        "statement-format DML `{}` cannot be replicated (row images required)",
                        truncate_for_message(text)
                    ),
                    "SET GLOBAL binlog_format='ROW' (and in my.cnf); sessions already open keep their format until they reconnect",
                ));
            }
            Statement::Account => {
                self.begin_implicit(&at, ts_secs, out);
                self.end_statement(end, at, out)?;
            }
            Statement::Truncate(table) => {
                self.begin_implicit(&at, ts_secs, out);
                let id = match table.split_once('.') {
                    Some((db, t)) => TableId::new(db, t),
                    None => TableId::new(namespace.as_str(), table.as_str()),
                };
                self.emit_truncate(id, out);
                self.end_statement(end, at, out)?;
            }
            Statement::Ddl => {
                self.begin_implicit(&at, ts_secs, out);
                let position = self.next_position();
                let renamed = renamed_tables(text, &namespace);
                out.push(SourceMessage::Ddl(DdlEvent {
                    namespace,
                    statement: text.to_owned(),
                    position,
                    renamed,
                }));
                self.end_statement(end, at, out)?;
            }
        }
        Ok(())
    }

    /// After a DDL/TRUNCATE: outside BEGIN the statement is the whole transaction.
    fn end_statement(
        &mut self,
        end: u64,
        at: EventAt,
        out: &mut Vec<SourceMessage>,
    ) -> Result<(), BinlogError> {
        if self.txn.as_ref().is_some_and(|t| !t.explicit) {
            self.commit(end, at, out)?;
        }
        Ok(())
    }

    fn emit_truncate(&mut self, id: TableId, out: &mut Vec<SourceMessage>) {
        let table = self.announced.get(&id).cloned().unwrap_or_else(|| {
            Arc::new(TableSchema {
                id,
                columns: Vec::new(),
                primary_key: Vec::new(),
            })
        });
        let position = self.next_position();
        if let Some(txn) = &self.txn {
            out.push(SourceMessage::Change(ChangeEvent {
                source: self.source.clone(),
                table,
                op: Op::Truncate,
                before: None,
                after: None,
                position,
                transaction: txn.info.clone(),
            }));
        }
    }

    fn next_position(&mut self) -> Position {
        match self.txn.as_mut() {
            Some(txn) => {
                let p = Position {
                    txn: txn.info.log_coordinate,
                    seq: txn.seq,
                };
                txn.seq = txn.seq.saturating_add(1);
                p
            }
            None => Position {
                txn: binlog_coordinate(self.file_number, self.resume_pos),
                seq: 0,
            },
        }
    }

    fn on_table_map(
        &mut self,
        event: &Event,
        tme: &TableMapEvent<'_>,
        at: EventAt,
        out: &mut Vec<SourceMessage>,
    ) -> Result<(), BinlogError> {
        let table_id = tme.table_id();
        let layout = match self.tables.get(&table_id) {
            // Servers re-send the same table map with every transaction: reuse its layout.
            Some(known) if known.raw == event.data() => known.layout.clone(),
            _ => {
                let layout =
                    TableLayout::from_table_map_with_flavor(tme, self.options.names, self.flavor)
                        .map_err(|error| BinlogError::Layout { at, error })?;
                let layout = Arc::new(layout);
                self.tables.insert(
                    table_id,
                    KnownTable {
                        raw: event.data().to_vec(),
                        layout: layout.clone(),
                    },
                );
                layout
            }
        };
        let schema = &layout.schema;
        let changed = match self.announced.get(&schema.id) {
            Some(prev) => !Arc::ptr_eq(prev, schema) && **prev != **schema,
            None => true,
        };
        if changed {
            self.announced.insert(schema.id.clone(), schema.clone());
            out.push(SourceMessage::Schema(schema.clone()));
        }
        Ok(())
    }

    fn on_rows(
        &mut self,
        rows: &RowsEventData<'_>,
        at: EventAt,
        out: &mut Vec<SourceMessage>,
    ) -> Result<(), BinlogError> {
        let (op, needs_before, needs_after) = match rows {
            RowsEventData::WriteRowsEventV1(_) | RowsEventData::WriteRowsEvent(_) => {
                (Op::Insert, false, true)
            }
            RowsEventData::UpdateRowsEventV1(_) | RowsEventData::UpdateRowsEvent(_) => {
                (Op::Update, true, true)
            }
            RowsEventData::DeleteRowsEventV1(_) | RowsEventData::DeleteRowsEvent(_) => {
                (Op::Delete, true, false)
            }
            // MySQL PARTIAL_JSON: after images carry JSON diffs, applied to the before image.
            RowsEventData::PartialUpdateRowsEvent(_) => (Op::Update, true, true),
        };
        let partial_json = matches!(rows, RowsEventData::PartialUpdateRowsEvent(_));
        let Some(known) = self.tables.get(&rows.table_id()) else {
            return Err(BinlogError::Corrupt {
                at,
                reason: format!(
                    "rows event for table id {} without its TABLE_MAP",
                    rows.table_id()
                ),
            });
        };
        let layout = known.layout.clone();
        let table = layout.schema.clone();
        let columns = table.columns.len();
        if rows.num_columns() != columns as u64 {
            return Err(BinlogError::Corrupt {
                at,
                reason: format!(
                    "rows event has {} columns, table map of {} has {columns}",
                    rows.num_columns(),
                    table.id
                ),
            });
        }
        let before_present: Vec<bool> = match rows.columns_before_image() {
            Some(bits) => (0..columns)
                .map(|i| bits.get(i).is_some_and(|b| *b))
                .collect(),
            None => vec![false; columns],
        };
        let after_present: Vec<bool> = match rows.columns_after_image() {
            Some(bits) => (0..columns)
                .map(|i| bits.get(i).is_some_and(|b| *b))
                .collect(),
            None => vec![false; columns],
        };
        let before_full = before_present.iter().all(|&p| p);
        let after_full = after_present.iter().all(|&p| p);
        let partial = (needs_before && !before_full) || (needs_after && !after_full);
        if partial && !self.options.allow_partial_images {
            return Err(unsupported(
                at,
                &format!(
                    "partial row image for {} (binlog_row_image is not FULL)",
                    table.id
                ),
                "SET GLOBAL binlog_row_image='FULL' (and in my.cnf)",
            ));
        }
        let Some(txn) = self.txn.as_mut() else {
            return Err(BinlogError::Corrupt {
                at,
                reason: "rows event outside a transaction".into(),
            });
        };
        let mut buf = rows.rows_data();
        let mut row_index = 0usize;
        while !buf.is_empty() {
            let row_error = |error| BinlogError::Row {
                at: at.clone(),
                table: table.id.to_string(),
                row: row_index,
                error,
            };
            let decode = |buf: &mut &[u8], present: &[bool], full: bool| {
                let row = if full {
                    layout.decode_row(buf)
                } else {
                    layout.decode_partial_row(buf, present)
                };
                row.map_err(row_error)
            };
            let (before, after) = if partial_json {
                let (before, after) = layout
                    .decode_partial_update(&mut buf, &before_present, &after_present)
                    .map_err(row_error)?;
                (Some(before), Some(after))
            } else {
                let before = match needs_before {
                    true => Some(decode(&mut buf, &before_present, before_full)?),
                    false => None,
                };
                let after = match needs_after {
                    true => Some(decode(&mut buf, &after_present, after_full)?),
                    false => None,
                };
                (before, after)
            };
            let position = Position {
                txn: txn.info.log_coordinate,
                seq: txn.seq,
            };
            txn.seq = txn.seq.saturating_add(1);
            out.push(SourceMessage::Change(ChangeEvent {
                source: self.source.clone(),
                table: table.clone(),
                op,
                before,
                after,
                position,
                transaction: txn.info.clone(),
            }));
            row_index += 1;
        }
        Ok(())
    }
}

fn verify_checksum(event: &Event, at: &EventAt) -> Result<(), BinlogError> {
    let footer = event.footer();
    if !footer.get_checksum_enabled() {
        return Ok(());
    }
    let Ok(Some(alg)) = footer.get_checksum_alg() else {
        return Ok(());
    };
    if alg != BinlogChecksumAlg::BINLOG_CHECKSUM_ALG_CRC32 {
        return Ok(());
    }
    let Some(stored) = event.checksum() else {
        return Ok(());
    };
    let stored = u32::from_le_bytes(stored);
    let computed = event.calc_checksum(alg);
    if stored != computed {
        return Err(BinlogError::Checksum {
            at: at.clone(),
            stored,
            computed,
        });
    }
    Ok(())
}

fn xa_unsupported(at: EventAt) -> BinlogError {
    unsupported(
        at,
        "XA transaction",
        "XA transactions are not supported yet; avoid XA on replicated tables",
    )
}

fn unsupported(at: EventAt, what: &str, fix: &str) -> BinlogError {
    BinlogError::Unsupported {
        at,
        what: what.to_owned(),
        fix: fix.to_owned(),
    }
}

fn corrupt(at: EventAt, e: std::io::Error) -> BinlogError {
    BinlogError::Corrupt {
        at,
        reason: e.to_string(),
    }
}

/// The number at the end of a binlog file name (`mysql-bin.000042` -> 42); 0 if there is none.
pub fn file_number(name: &str) -> u32 {
    let digits = name.rsplit('.').next().unwrap_or_default();
    digits.parse().unwrap_or(0)
}

/// A rotate event's file name. The fake ROTATE that opens a dump arrives before the format
/// description, so nothing has stripped its CRC32 yet: when the last four bytes are the CRC32
/// of the event, they are a checksum, not part of the name.
fn rotate_file_name(event: &Event, name: &[u8]) -> String {
    let name = match name.len().checked_sub(4) {
        Some(cut) if event.checksum().is_none() && trailing_crc_matches(event, cut) => &name[..cut],
        _ => name,
    };
    String::from_utf8_lossy(name).into_owned()
}

/// True when the event's last four body bytes are the CRC32 of everything before them.
fn trailing_crc_matches(event: &Event, body_cut_from_name: usize) -> bool {
    let data = event.data();
    let Some(split) = data.len().checked_sub(4) else {
        return false;
    };
    // The name is the tail of the body: the checksum bytes sit right after `cut` name bytes.
    if body_cut_from_name > split {
        return false;
    }
    let h = event.header();
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&h.timestamp().to_le_bytes());
    hasher.update(&[h.event_type_raw()]);
    hasher.update(&h.server_id().to_le_bytes());
    hasher.update(&h.event_size().to_le_bytes());
    hasher.update(&h.log_pos().to_le_bytes());
    hasher.update(&h.flags_raw().to_le_bytes());
    hasher.update(&data[..split]);
    let stored = u32::from_le_bytes([
        data[split],
        data[split + 1],
        data[split + 2],
        data[split + 3],
    ]);
    hasher.finalize() == stored
}

/// What a QUERY event's statement means for replication.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Statement {
    Begin,
    Commit,
    Rollback,
    Savepoint,
    RollbackToSavepoint,
    Xa,
    Dml,
    /// Account management (users, roles, grants): nothing to replicate, and the text may hold
    /// password hashes, so it is never passed on.
    Account,
    Truncate(String),
    Ddl,
}

fn classify_statement(text: &str) -> Statement {
    let body = strip_leading_comments(text);
    let mut words = body.split(|c: char| c.is_whitespace() || c == ';' || c == '(');
    let first = words.next().unwrap_or_default().to_ascii_uppercase();
    let mut rest = words.filter(|w| !w.is_empty());
    match first.as_str() {
        "BEGIN" => Statement::Begin,
        "START" => Statement::Begin,
        "COMMIT" => Statement::Commit,
        "ROLLBACK" => match rest.next() {
            Some(w) if w.eq_ignore_ascii_case("TO") => Statement::RollbackToSavepoint,
            _ => Statement::Rollback,
        },
        "SAVEPOINT" | "RELEASE" => Statement::Savepoint,
        "XA" => Statement::Xa,
        "GRANT" | "REVOKE" => Statement::Account,
        "CREATE" | "ALTER" | "DROP" | "RENAME" | "SET"
            if rest.next().is_some_and(|w| {
                ["USER", "ROLE", "PASSWORD", "DEFAULT"]
                    .iter()
                    .any(|k| w.eq_ignore_ascii_case(k))
            }) =>
        {
            Statement::Account
        }
        "INSERT" | "UPDATE" | "DELETE" | "REPLACE" | "LOAD" | "WITH" => Statement::Dml,
        "TRUNCATE" => {
            let mut name = rest.next().unwrap_or_default();
            if name.eq_ignore_ascii_case("TABLE") {
                name = rest.next().unwrap_or_default();
            }
            Statement::Truncate(name.replace('`', ""))
        }
        _ => Statement::Ddl,
    }
}

fn strip_leading_comments(mut s: &str) -> &str {
    loop {
        s = s.trim_start();
        if let Some(rest) = s.strip_prefix("/*") {
            match rest.find("*/") {
                Some(end) => s = &rest[end + 2..],
                None => return "",
            }
        } else if s.starts_with("--") || s.starts_with('#') {
            match s.find('\n') {
                Some(end) => s = &s[end + 1..],
                None => return "",
            }
        } else {
            return s;
        }
    }
}

fn truncate_for_message(text: &str) -> String {
    const MAX: usize = 120;
    let flat: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match flat.char_indices().nth(MAX) {
        Some((i, _)) => format!("{}...", &flat[..i]),
        None => flat,
    }
}

/// Event type of TRANSACTION_PAYLOAD, whose inner events readers must feed after it.
pub const TRANSACTION_PAYLOAD: u8 = EventType::TRANSACTION_PAYLOAD_EVENT as u8;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_are_classified_past_comments() {
        assert_eq!(classify_statement("BEGIN"), Statement::Begin);
        assert_eq!(
            classify_statement("/* app */ insert into t values (1)"),
            Statement::Dml
        );
        assert_eq!(
            classify_statement("TRUNCATE TABLE `shop`.`orders`"),
            Statement::Truncate("shop.orders".into())
        );
        assert_eq!(
            classify_statement("truncate t1"),
            Statement::Truncate("t1".into())
        );
        assert_eq!(
            classify_statement("ROLLBACK TO SAVEPOINT a"),
            Statement::RollbackToSavepoint
        );
        assert_eq!(
            classify_statement("ALTER TABLE t ADD c INT"),
            Statement::Ddl
        );
        assert_eq!(
            classify_statement("ALTER USER 'root'@'localhost' IDENTIFIED WITH x AS 'hash'"),
            Statement::Account
        );
        assert_eq!(
            classify_statement("GRANT SELECT ON *.* TO u"),
            Statement::Account
        );
        assert_eq!(classify_statement("-- x\nDROP TABLE t"), Statement::Ddl);
    }

    #[test]
    fn file_names_are_numbered() {
        assert_eq!(file_number("mysql-bin.000042"), 42);
        assert_eq!(file_number("weird"), 0);
    }
}
