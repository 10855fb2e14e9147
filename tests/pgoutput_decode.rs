//! The pgoutput decoder against a real PostgreSQL 15: every message a logical slot hands out for
//! a scripted workload decodes, and decodes to what was written.

mod support;

use std::panic::AssertUnwindSafe;

use bytes::Bytes;
use futures_util::FutureExt;
use support::pg_source::{fresh_slot_name, incompressible_text, peek_slot, release_slot};
use support::pipeline::{Warehouse, fresh_warehouse, pg_client};
use tidemark::source::postgres::pgoutput::{
    Begin, ColumnData, Commit, DataType, Lsn, OldTuple, Origin, PgOutputMessage, Relation,
    ReplicaIdentity, Truncate, TupleData, decode,
};
use tokio_postgres::Client;

/// Prefix of the slot and origin names this test makes; the suffix is the test process id.
const NAME_PREFIX: &str = "tidemark_pgoutput_decode_";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_server_stream_decodes_to_what_was_written() {
    let admin = pg_client(&support::pg_url()).await;
    let name = fresh_slot_name(&admin, NAME_PREFIX).await;
    let db = fresh_warehouse("pgoutput_decode").await;

    let outcome = AssertUnwindSafe(scenario(&db, &name)).catch_unwind().await;

    release_slot(&admin, &name, vec![db]).await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

/// Writes the workload, then checks what the slot holds, in text and in binary mode.
async fn scenario(db: &Warehouse, slot: &str) {
    let client = &db.client;
    // The dev server commits asynchronously, and a slot only hands out flushed WAL.
    client
        .batch_execute("SET synchronous_commit = on")
        .await
        .expect("synchronous_commit");
    client
        .batch_execute(
            "CREATE TYPE mood AS ENUM ('happy', 'sad');
             CREATE TABLE items (
                 id int PRIMARY KEY,
                 big bigint,
                 amount numeric(12, 3),
                 label text,
                 payload bytea,
                 flag bool,
                 at timestamptz,
                 doc jsonb,
                 feeling mood,
                 blob text
             );
             CREATE PUBLICATION tidemark_pub FOR TABLE items;",
        )
        .await
        .expect("schema");
    let items_oid: u32 = client
        .query_one("SELECT 'items'::regclass::oid", &[])
        .await
        .expect("items oid")
        .get(0);
    let mood_oid: u32 = client
        .query_one("SELECT 'mood'::regtype::oid", &[])
        .await
        .expect("mood oid")
        .get(0);
    support::pg_source::create_pgoutput_slot(client, slot).await;

    let blob = incompressible_text(10_000, 0x5EED);
    write_workload(client, slot, &blob).await;

    let text_rows = peek(client, slot, false).await;
    assert_every_cut_is_an_error(&text_rows);
    let entries = group(&text_rows);
    let summary: Vec<String> = entries.iter().map(Entry::summary).collect();
    println!("stream: {summary:#?}");
    let expected_shape = [
        "B Y R I C",
        "B U C",
        "B U C",
        "B D C",
        "B I C",
        // TRUNCATE invalidates the relation, so pgoutput describes it again before the Truncate.
        "B Y R T C",
        // REPLICA IDENTITY FULL changed the relation: described again.
        "B Y R I C",
        "B U C",
        "B M C",
        "M",
        "B O I C",
    ];
    assert_eq!(summary, expected_shape, "message sequence");
    let txns: Vec<&Transaction> = entries
        .iter()
        .filter_map(|e| match e {
            Entry::Transaction(t) => Some(t),
            Entry::Outside(_) => None,
        })
        .collect();
    check_transaction_framing(&txns);

    let render = |tuple: &TupleData| render_tuple(tuple, &blob);
    let null = "<null>";
    let unchanged = "<unchanged>";
    let row1 = [
        "1",
        "9007199254740993",
        "12345.678",
        "first",
        "\\x00ff10",
        "t",
        "2024-02-29 12:34:56.789+00",
        "{\"a\": [1, 2]}",
        "happy",
        "<blob>",
    ];
    let mut row1_second = row1;
    row1_second[3] = "second";
    row1_second[9] = unchanged;
    let mut row2 = row1_second;
    row2[0] = "2";
    let key_only = |id| {
        let mut key = [null; 10];
        key[0] = id;
        key
    };
    let mut row3 = key_only("3");
    row3[3] = "doomed";
    let mut row4 = key_only("4");
    row4[3] = "full";
    row4[5] = "t";
    let mut row4_updated = row4;
    row4_updated[5] = "f";

    // 1: the insert, preceded by the enum type and the table's description.
    let (types, relations, changes) = txns[0].split();
    assert_eq!(
        types,
        [DataType {
            oid: mood_oid,
            namespace: "public".into(),
            name: "mood".into(),
        }]
    );
    assert_eq!(relations.len(), 1);
    let relation = relations[0];
    assert_eq!(
        (
            relation.oid,
            relation.namespace.as_str(),
            relation.name.as_str()
        ),
        (items_oid, "public", "items")
    );
    assert_eq!(relation.replica_identity, ReplicaIdentity::Default);
    let columns: Vec<(&str, bool, u32, i32)> = relation
        .columns
        .iter()
        .map(|c| (c.name.as_str(), c.is_key, c.type_oid, c.type_modifier))
        .collect();
    assert_eq!(
        columns,
        [
            ("id", true, 23, -1),
            ("big", false, 20, -1),
            // numeric(12, 3): (precision << 16 | scale) + VARHDRSZ.
            ("amount", false, 1700, (12 << 16 | 3) + 4),
            ("label", false, 25, -1),
            ("payload", false, 17, -1),
            ("flag", false, 16, -1),
            ("at", false, 1184, -1),
            ("doc", false, 3802, -1),
            ("feeling", false, mood_oid, -1),
            ("blob", false, 25, -1),
        ]
    );
    let [PgOutputMessage::Insert(insert)] = changes.as_slice() else {
        panic!("transaction 1: {changes:?}");
    };
    assert_eq!(insert.relation_oid, items_oid);
    assert_eq!(render(&insert.new), row1);

    // 2: only the label changed; the TOASTed blob comes back as unchanged, not as a value.
    let (_, _, changes) = txns[1].split();
    let [PgOutputMessage::Update(update)] = changes.as_slice() else {
        panic!("transaction 2: {changes:?}");
    };
    assert_eq!(
        update.old, None,
        "REPLICA IDENTITY DEFAULT sends no old row"
    );
    assert_eq!(render(&update.new), row1_second);

    // 3: the key changed, so the old key comes along.
    let (_, _, changes) = txns[2].split();
    let [PgOutputMessage::Update(update)] = changes.as_slice() else {
        panic!("transaction 3: {changes:?}");
    };
    let Some(OldTuple::Key(old_key)) = &update.old else {
        panic!("key change without old key: {update:?}");
    };
    assert_eq!(render(old_key), key_only("1"));
    assert_eq!(render(&update.new), row2);

    // 4: the delete carries the key.
    let (_, _, changes) = txns[3].split();
    let [PgOutputMessage::Delete(delete)] = changes.as_slice() else {
        panic!("transaction 4: {changes:?}");
    };
    let OldTuple::Key(old_key) = &delete.old else {
        panic!("delete without key: {delete:?}");
    };
    assert_eq!(render(old_key), key_only("2"));

    // 5, 6: an insert, then the truncate naming the table.
    let (_, _, changes) = txns[4].split();
    let [PgOutputMessage::Insert(insert)] = changes.as_slice() else {
        panic!("transaction 5: {changes:?}");
    };
    assert_eq!(render(&insert.new), row3);
    let (_, _, changes) = txns[5].split();
    assert_eq!(
        changes,
        [&PgOutputMessage::Truncate(Truncate {
            cascade: false,
            restart_identity: false,
            relation_oids: vec![items_oid],
        })]
    );

    // 7, 8: with REPLICA IDENTITY FULL every column is key, and updates carry the old row.
    let (_, relations, changes) = txns[6].split();
    assert_eq!(relations.len(), 1);
    assert_eq!(relations[0].replica_identity, ReplicaIdentity::Full);
    assert!(
        relations[0].columns.iter().all(|c| c.is_key),
        "{relations:?}"
    );
    let [PgOutputMessage::Insert(insert)] = changes.as_slice() else {
        panic!("transaction 7: {changes:?}");
    };
    assert_eq!(render(&insert.new), row4);
    let (_, _, changes) = txns[7].split();
    let [PgOutputMessage::Update(update)] = changes.as_slice() else {
        panic!("transaction 8: {changes:?}");
    };
    let Some(OldTuple::Full(old_row)) = &update.old else {
        panic!("FULL identity update without old row: {update:?}");
    };
    assert_eq!(render(old_row), row4);
    assert_eq!(render(&update.new), row4_updated);

    // 9, 10: the transactional message inside its transaction, the other one outside any.
    let (_, _, changes) = txns[8].split();
    let [PgOutputMessage::Message(message)] = changes.as_slice() else {
        panic!("transaction 9: {changes:?}");
    };
    assert!(message.transactional);
    assert_eq!(
        (message.prefix.as_str(), message.content.as_ref()),
        ("tidemark", b"hello".as_slice())
    );
    // The message's LSN is where its WAL record ends: at most where the commit record starts.
    assert!(
        message.lsn > txns[7].commit.end_lsn && message.lsn <= txns[8].commit.commit_lsn,
        "{message:?} outside its transaction {:?}",
        txns[8].commit
    );
    let Some(Entry::Outside(PgOutputMessage::Message(message))) = entries.get(9) else {
        panic!("entry 10: {:?}", entries.get(9).map(Entry::summary));
    };
    assert!(!message.transactional);
    assert_eq!(
        (message.prefix.as_str(), message.content.as_ref()),
        ("tidemark", b"now".as_slice())
    );
    assert!(message.lsn > txns[8].commit.end_lsn);

    // 11: a transaction replayed from another origin names it first.
    let (_, _, changes) = txns[9].split();
    let [
        PgOutputMessage::Origin(origin),
        PgOutputMessage::Insert(insert),
    ] = changes.as_slice()
    else {
        panic!("transaction 11: {changes:?}");
    };
    assert_eq!(
        origin,
        &Origin {
            commit_lsn: Lsn(0xAB_CDEF),
            name: slot.to_string(),
        }
    );
    assert_eq!(render(&insert.new), key_only("5"));

    // Binary mode: the same stream with the types' send formats.
    let binary_rows = peek(client, slot, true).await;
    assert_every_cut_is_an_error(&binary_rows);
    let binary = group(&binary_rows);
    let Entry::Transaction(first) = &binary[0] else {
        panic!("binary stream starts outside a transaction");
    };
    let (_, _, changes) = first.split();
    let [PgOutputMessage::Insert(insert)] = changes.as_slice() else {
        panic!("binary transaction 1: {changes:?}");
    };
    let values = &insert.new.columns;
    assert_eq!(values[0], binary_value(&1i32.to_be_bytes()));
    assert_eq!(
        values[1],
        binary_value(&9_007_199_254_740_993i64.to_be_bytes())
    );
    assert_eq!(values[3], binary_value(b"first"));
    assert_eq!(values[4], binary_value(&[0x00, 0xFF, 0x10]));
    assert_eq!(values[5], binary_value(&[1]));
    assert_eq!(values[9], binary_value(blob.as_bytes()));
    let Entry::Transaction(second) = &binary[1] else {
        panic!("binary stream: second entry outside a transaction");
    };
    let (_, _, changes) = second.split();
    let [PgOutputMessage::Update(update)] = changes.as_slice() else {
        panic!("binary transaction 2: {changes:?}");
    };
    assert_eq!(update.new.columns[9], ColumnData::UnchangedToast);
}

/// The changes the test decodes, each statement its own transaction, the last one replayed
/// through a replication origin named like the slot.
async fn write_workload(client: &Client, origin: &str, blob: &str) {
    client
        .execute(
            "INSERT INTO items VALUES (1, 9007199254740993, 12345.678, 'first', '\\x00ff10', \
             true, '2024-02-29 12:34:56.789+00', '{\"a\": [1, 2]}', 'happy', $1)",
            &[&blob],
        )
        .await
        .expect("insert");
    for sql in [
        "UPDATE items SET label = 'second' WHERE id = 1",
        "UPDATE items SET id = 2 WHERE id = 1",
        "DELETE FROM items WHERE id = 2",
        "INSERT INTO items (id, label) VALUES (3, 'doomed')",
        "TRUNCATE items",
        "ALTER TABLE items REPLICA IDENTITY FULL",
        "INSERT INTO items (id, label, flag) VALUES (4, 'full', true)",
        "UPDATE items SET flag = false WHERE id = 4",
        "SELECT pg_logical_emit_message(true, 'tidemark', 'hello')",
        "SELECT pg_logical_emit_message(false, 'tidemark', 'now')",
    ] {
        client
            .batch_execute(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
    client
        .execute("SELECT pg_replication_origin_create($1)", &[&origin])
        .await
        .expect("create origin");
    client
        .execute("SELECT pg_replication_origin_session_setup($1)", &[&origin])
        .await
        .expect("origin session");
    client
        .batch_execute(
            "BEGIN;
             SELECT pg_replication_origin_xact_setup('0/ABCDEF', now());
             INSERT INTO items (id) VALUES (5);
             COMMIT;
             SELECT pg_replication_origin_session_reset();",
        )
        .await
        .expect("origin transaction");
}

/// A committed transaction as the slot hands it out.
struct Transaction {
    begin: Begin,
    body: Vec<PgOutputMessage>,
    commit: Commit,
    /// The `lsn` column the server printed on the Commit row.
    commit_row_lsn: String,
}

impl Transaction {
    /// The body split into Type messages, Relation messages and everything else.
    fn split(&self) -> (Vec<DataType>, Vec<&Relation>, Vec<&PgOutputMessage>) {
        let mut types = Vec::new();
        let mut relations = Vec::new();
        let mut rest = Vec::new();
        for message in &self.body {
            match message {
                PgOutputMessage::Type(t) => types.push(t.clone()),
                PgOutputMessage::Relation(r) => relations.push(r),
                other => rest.push(other),
            }
        }
        (types, relations, rest)
    }
}

/// A transaction, or a message outside any (a non-transactional logical message).
enum Entry {
    Transaction(Transaction),
    Outside(PgOutputMessage),
}

impl Entry {
    /// The message tags in order, e.g. "B R I C".
    fn summary(&self) -> String {
        match self {
            Entry::Transaction(t) => {
                let body: Vec<&str> = t.body.iter().map(tag).collect();
                format!("B {} C", body.join(" "))
            }
            Entry::Outside(m) => tag(m).to_string(),
        }
    }
}

fn tag(message: &PgOutputMessage) -> &'static str {
    match message {
        PgOutputMessage::Begin(_) => "B",
        PgOutputMessage::Commit(_) => "C",
        PgOutputMessage::Origin(_) => "O",
        PgOutputMessage::Relation(_) => "R",
        PgOutputMessage::Type(_) => "Y",
        PgOutputMessage::Insert(_) => "I",
        PgOutputMessage::Update(_) => "U",
        PgOutputMessage::Delete(_) => "D",
        PgOutputMessage::Truncate(_) => "T",
        PgOutputMessage::Message(_) => "M",
    }
}

/// Decodes every row and groups the messages into transactions; any decode error, nesting or
/// unpaired Begin/Commit fails the test.
fn group(rows: &[(String, Bytes)]) -> Vec<Entry> {
    let mut entries = Vec::new();
    let mut open: Option<(Begin, Vec<PgOutputMessage>)> = None;
    for (i, (lsn, data)) in rows.iter().enumerate() {
        let message =
            decode(data).unwrap_or_else(|e| panic!("row {i} (lsn {lsn}, bytes {data:02X?}): {e}"));
        open = match (open, message) {
            (None, PgOutputMessage::Begin(begin)) => Some((begin, Vec::new())),
            (Some((begin, _)), PgOutputMessage::Begin(again)) => {
                panic!("row {i}: Begin {again:?} inside the transaction of {begin:?}")
            }
            (Some((begin, body)), PgOutputMessage::Commit(commit)) => {
                entries.push(Entry::Transaction(Transaction {
                    begin,
                    body,
                    commit,
                    commit_row_lsn: lsn.clone(),
                }));
                None
            }
            (None, PgOutputMessage::Commit(commit)) => {
                panic!("row {i}: Commit {commit:?} without Begin")
            }
            (Some((begin, mut body)), other) => {
                body.push(other);
                Some((begin, body))
            }
            (None, other) => {
                entries.push(Entry::Outside(other));
                None
            }
        };
    }
    assert!(open.is_none(), "stream ends inside a transaction");
    entries
}

/// Real messages cut short anywhere are errors, never a shorter message or a panic.
fn assert_every_cut_is_an_error(rows: &[(String, Bytes)]) {
    for (lsn, data) in rows {
        for len in 0..data.len() {
            if let Ok(message) = decode(&data.slice(..len)) {
                panic!("message at {lsn} cut to {len} bytes decoded as {message:?}");
            }
        }
    }
}

/// Begin and Commit agree, LSNs and xids grow from one transaction to the next, commit times
/// are now (so the 2000-01-01 epoch was converted), and `Lsn` prints as the server does.
fn check_transaction_framing(txns: &[&Transaction]) {
    let now_us = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_micros() as i64;
    let ten_minutes_us = 600_000_000;
    for (i, t) in txns.iter().enumerate() {
        assert_eq!(t.begin.final_lsn, t.commit.commit_lsn, "transaction {i}");
        assert!(t.commit.end_lsn > t.commit.commit_lsn, "transaction {i}");
        assert_eq!(
            t.begin.commit_timestamp_unix_us, t.commit.commit_timestamp_unix_us,
            "transaction {i}"
        );
        assert!(
            (t.commit.commit_timestamp_unix_us - now_us).abs() < ten_minutes_us,
            "transaction {i} committed at {} µs, now is {now_us} µs",
            t.commit.commit_timestamp_unix_us
        );
        assert_eq!(t.commit.flags, 0, "transaction {i}");
        assert_eq!(
            t.commit.end_lsn.to_string(),
            t.commit_row_lsn,
            "transaction {i}"
        );
    }
    for pair in txns.windows(2) {
        let [earlier, later] = pair else { continue };
        assert!(later.begin.final_lsn > earlier.commit.end_lsn);
        assert!(later.begin.xid > earlier.begin.xid);
    }
}

/// A tuple as strings: text values as they are (the blob as `<blob>`), `<null>`, `<unchanged>`.
fn render_tuple(tuple: &TupleData, blob: &str) -> Vec<String> {
    tuple
        .columns
        .iter()
        .map(|column| match column {
            ColumnData::Null => "<null>".to_string(),
            ColumnData::UnchangedToast => "<unchanged>".to_string(),
            ColumnData::Text(text) if text.as_ref() == blob.as_bytes() => "<blob>".to_string(),
            ColumnData::Text(text) => String::from_utf8_lossy(text).into_owned(),
            ColumnData::Binary(bytes) => format!("<binary {bytes:02X?}>"),
        })
        .collect()
}

fn binary_value(bytes: &[u8]) -> ColumnData {
    ColumnData::Binary(Bytes::copy_from_slice(bytes))
}

/// Every message in the slot, without consuming them: (lsn as text, message bytes).
async fn peek(client: &Client, slot: &str, binary: bool) -> Vec<(String, Bytes)> {
    client
        .batch_execute("SET TimeZone = 'UTC'; SET DateStyle = 'ISO, MDY'")
        .await
        .expect("session settings");
    let binary = if binary { "true" } else { "false" };
    let options = [
        ("publication_names", "tidemark_pub"),
        ("messages", "true"),
        ("binary", binary),
    ];
    peek_slot(client, slot, &options).await
}
